import assert from 'node:assert/strict';
import type { Consent, Patient } from 'fhir/r4';
import { PatientFactsCache } from '../../server/gate/policy-data';
import type { StoreReader } from '../../server/store/read';
import type { StoredVersion } from '../../server/store/records';

/** A reader whose commit sequence, Consents and pending look-ups the test controls. */
function fakeStore() {
  const state = { seq: [1, 1], consent: 'permit' as 'permit' | 'deny' };
  const held: ((seq: number[]) => void)[] = [];
  let holdNext = false;
  const consent = (): Consent => ({ resourceType: 'Consent', id: 'c1', status: 'active', scope: {}, category: [], patient: { reference: 'Patient/p1' }, provision: { type: state.consent } });
  const reader = {
    latestSeq: async () => {
      const now = [...state.seq];
      if (!holdNext) return now;
      holdNext = false;
      // The look-up read the database now, but its answer arrives when the test says so.
      return new Promise<number[]>((resolve) => held.push(() => resolve(now)));
    },
    changesSince: async () => [{ seq: state.seq[1], type: 'Consent', id: 'c1', content: JSON.stringify(consent()), previous: null }],
    patientFacts: async (): Promise<{ patients: StoredVersion[]; consents: StoredVersion[] }> => ({
      patients: [{ rid: 1, type: 'Patient', id: 'p1', versionId: 1, lastUpdated: 0, deleted: false, resource: { resourceType: 'Patient', id: 'p1' } as Patient }],
      consents: [{ rid: 2, type: 'Consent', id: 'c1', versionId: 1, lastUpdated: 0, deleted: false, resource: consent() }],
    }),
  };
  return {
    reader: reader as unknown as StoreReader,
    state,
    holdNextLookup: () => (holdNext = true),
    release: () => held.splice(0).forEach((go) => go(state.seq)),
  };
}

/**
 * A Consent change is enforced on the very next request. Requests share the check of the newest
 * commit, but one that arrives after a change must not ride on a check that read the database
 * before the change.
 */
describe('Consent facts: a request never relies on a check older than itself', () => {
  it('a change committed while another request was checking is seen by the next request', async () => {
    const store = fakeStore();
    const facts = new PatientFactsCache(store.reader);
    assert.equal((await facts.patients(['p1'], { request: 'warm' })).get('p1')!.consents[0].provision!.type, 'permit');

    store.holdNextLookup();
    const first = facts.patients(['p1'], { request: 'a' }); // its check has read seq [1, 1] ...
    store.state.seq = [1, 2]; // ... then the Consent is changed to deny and committed ...
    store.state.consent = 'deny';
    const second = facts.patients(['p1'], { request: 'b' }); // ... and the next request arrives.
    store.release();
    await first;
    assert.equal((await second).get('p1')!.consents[0].provision!.type, 'deny');
  });

  it('checks are shared: many requests during one check cause one more, not one each', async () => {
    const store = fakeStore();
    let lookups = 0;
    const latest = store.reader.latestSeq.bind(store.reader);
    (store.reader as unknown as { latestSeq: typeof latest }).latestSeq = (types) => {
      lookups++;
      return latest(types);
    };
    const facts = new PatientFactsCache(store.reader);
    await facts.patients(['p1'], { request: 'warm' });
    lookups = 0;
    await Promise.all(Array.from({ length: 20 }, (_, i) => facts.patients(['p1'], { request: i })));
    assert.ok(lookups <= 2, `${lookups} look-ups for 20 concurrent requests`);
  });
});
