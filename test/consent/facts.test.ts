import assert from 'node:assert/strict';
import { TransactionView } from '../../server/gate/policy-data';
import { StoreReader } from '../../server/store/read';
import { ENGINE } from '../support/db';
import { consent, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * The consent policy's facts of patients, as the database gives them in one statement
 * (StoreReader.patientFacts): every patient's Patient row, deleted ones too, and the current
 * Consents that point at it, deleted ones left out, each under its own patient only.
 */
describe(`Consent facts: read in one statement (${ENGINE})`, () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  it('Patients (deleted too) and their live Consents, each under its patient, past one chunk of ids', async () => {
    const a = (await h.api.post('/Patient', patient())).body.id as string;
    const b = (await h.api.post('/Patient', patient())).body.id as string;
    const gone = (await h.api.post('/Patient', patient())).body.id as string;
    assert.equal((await h.api.delete(`/Patient/${gone}`)).status, 204);
    const kept = (await h.api.post('/Consent', consent(a))).body.id as string;
    const withdrawn = (await h.api.post('/Consent', consent(a))).body.id as string;
    assert.equal((await h.api.delete(`/Consent/${withdrawn}`)).status, 204);
    const ofB = (await h.api.post('/Consent', consent(b))).body.id as string;

    // 600 ids, the known ones at the start and past the first 500 (statements take 500 at a time).
    const ids = Array.from({ length: 600 }, (_, i) => `unknown-${i}`);
    ids[0] = a;
    ids[510] = b;
    ids[599] = gone;
    const reader = new StoreReader(h.store.driver);
    const facts = await reader.patientFacts(ids);
    assert.deepEqual(facts.patients.map((p) => [p.id, p.deleted]).sort(), [[a, false], [b, false], [gone, true]].sort());
    assert.deepEqual(facts.consents.map((c) => c.id).sort(), [kept, ofB].sort());

    // As the policy sees them.
    const records = await new TransactionView(reader).patients([a, b, gone, 'unknown-1']);
    assert.deepEqual(records.get(a)!.consents.map((c) => c.id), [kept]);
    assert.deepEqual(records.get(b)!.consents.map((c) => c.id), [ofB]);
    assert.equal(records.get(gone)!.resource, undefined, 'a deleted Patient has no facts of its own');
    assert.equal(records.get('unknown-1')!.resource, undefined);
    assert.equal(records.get(a)!.creatorOrg, records.get(b)!.creatorOrg);
    assert.ok(records.get(a)!.creatorOrg, 'the creator organisation comes with the row');
  });
});
