import assert from 'node:assert/strict';
import type { Bundle, BundleEntry, OperationOutcome, Resource } from 'fhir/r4';
import type { Api } from '../support/api';
import { consentFor, managedPatient, NHS, org } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * A transaction Bundle's new content is judged just before COMMIT, against its final state (so a
 * Patient and the Consents that name it may come in any order). Until then, the Consents it wrote
 * must not decide its other entries: a Consent the client may not write (a hospital permitting
 * itself), POSTed first, would otherwise let the later entries' reads match or test a Patient the
 * hospital may not see, and their different answers (found a key, a patch test that held) would
 * tell it the Patient's NHS number, name or birth date one question at a time, before the refusal
 * rolled everything back. Found by a second reading of the gate (stop 22).
 */
describe('Consent: a transaction is decided without the Consents it wrote until they are checked', () => {
  let h: Harness;
  let gp: Api;
  let hospital: Api;
  let hidden: string;

  before(async () => {
    h = await startHarness({
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
        { clientId: 'hospital', ods: 'HOSP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
      ],
    });
    gp = await h.as('gp');
    hospital = await h.as('hospital');
    hidden = (await gp.post('/Patient', managedPatient('Hiddenham', '9434765919', { birthDate: '1971-03-04' }))).body.id as string;
  });
  after(() => h.close());

  /** The hospital permitting itself on the hidden patient: refused at COMMIT (only the custodian writes its Consents). */
  const rogue = (): BundleEntry => ({
    resource: consentFor(hidden, { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: org('HOSP1') }] }),
    request: { method: 'POST', url: 'Consent' },
  });

  async function transaction(entry: BundleEntry[]): Promise<{ status: number; says: string }> {
    const res = await hospital.post('/', { resourceType: 'Bundle', type: 'transaction', entry } satisfies Bundle);
    return { status: res.status, says: ((res.body as OperationOutcome).issue ?? []).map((i) => i.diagnostics ?? '').join(' | ') };
  }

  const patchTesting = (family: string): BundleEntry => ({
    resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: Buffer.from(JSON.stringify([{ op: 'test', path: '/name/0/family', value: family }])).toString('base64') } as Resource,
    request: { method: 'PATCH', url: `Patient/${hidden}` },
  });
  const conditionalPut = (criteria: string): BundleEntry => ({
    resource: { resourceType: 'Patient', name: [{ family: 'Probe' }] } as Resource,
    request: { method: 'PUT', url: `Patient?${criteria}` },
  });

  it('the hospital may not see the patient at all', async () => {
    assert.equal((await hospital.get(`/Patient/${hidden}`)).status, 403);
  });

  it('a PATCH test after the rogue Consent is refused the same whether the guess is right or wrong, as without it', async () => {
    const right = await transaction([rogue(), patchTesting('Hiddenham')]);
    const wrong = await transaction([rogue(), patchTesting('Smith')]);
    const without = await transaction([patchTesting('Hiddenham')]);
    assert.equal(right.status, 403, right.says);
    assert.deepEqual(right, wrong, 'a right and a wrong guess must get the same answer');
    // The same refusal as without it (only the failing entry's number differs).
    const unnumbered = (a: { status: number; says: string }) => ({ ...a, says: a.says.replace(/^Entry \d+ /, '') });
    assert.deepEqual(unnumbered(right), unnumbered(without), 'the rogue Consent must change nothing');
    assert.match(right.says, /access-policy/);
  });

  it('a conditional update after the rogue Consent matches nothing hidden: the same answer whether the criteria fit the patient or not', async () => {
    const answers = [
      await transaction([rogue(), conditionalPut(`identifier=${NHS}|9434765919`)]),
      await transaction([rogue(), conditionalPut(`identifier=${NHS}|9000000009`)]),
      await transaction([rogue(), conditionalPut(`_id=${hidden}&birthdate=1971`)]),
      await transaction([rogue(), conditionalPut(`_id=${hidden}&birthdate=1972`)]),
    ];
    for (const a of answers.slice(1)) assert.deepEqual(a, answers[0]);
    // What decides it is the rogue Consent's own refusal at COMMIT, not the hidden patient.
    assert.equal(answers[0].status, 403, answers[0].says);
    assert.match(answers[0].says, /create of a Consent/);
  });

  it('a GET of the hidden patient after the rogue Consent is refused in the transaction', async () => {
    const res = await transaction([rogue(), { request: { method: 'GET', url: `Patient/${hidden}` } }]);
    assert.equal(res.status, 403, res.says);
    // The GET entry's own refusal, not the rogue Consent's at COMMIT (which would roll back a read it let through).
    assert.match(res.says, /access to this Patient/);
    assert.doesNotMatch(res.says, /create of a Consent/);
  });

  it('nothing of the probes was stored', async () => {
    assert.equal((await gp.get(`/Consent?patient=${hidden}&_summary=count`)).body.total, 0);
    assert.equal((await gp.get('/Patient?family=Probe&_summary=count')).body.total, 0);
    assert.equal((await gp.get(`/Patient/${hidden}`)).body.name[0].family, 'Hiddenham');
  });

  it('the custodian still writes a Consent and, in the same transaction, updates the patient it names', async () => {
    const res = await gp.post('/', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { resource: consentFor(hidden, { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: org('HOSP1') }] }), request: { method: 'POST', url: 'Consent' } },
        { resource: { ...managedPatient('Hiddenham', '9434765919', { birthDate: '1971-03-04', gender: 'female' }), id: hidden }, request: { method: 'PUT', url: `Patient/${hidden}` } },
      ],
    } satisfies Bundle);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    // Committed, the Consent now lets the hospital read the patient.
    assert.equal((await hospital.get(`/Patient/${hidden}`)).status, 200);
  });
});
