import assert from 'node:assert/strict';
import type { Bundle, Resource } from 'fhir/r4';
import { openAccessPolicy } from '../../server/gate/policy';
import { consent, loadJson } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * The searches the R4 specification itself writes down, on its search page
 * (http://hl7.org/fhir/R4/search.html) and in the example Bundles of `r4/examples/misc`,
 * wherever they apply to Patient, Consent and AuditEvent, with the answers the spec gives.
 */
describe('Search: the R4 specification\'s own search examples', () => {
  let h: Harness;
  const id: Record<string, string> = {};
  const find = async (q: string): Promise<string[]> => {
    const res = await h.api.get(q, { Prefer: 'handling=strict' });
    assert.equal(res.status, 200, `${q}: ${JSON.stringify(res.body).slice(0, 300)}`);
    return ((res.body as Bundle).entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => Object.entries(id).find(([, v]) => v === e.resource!.id)?.[0] ?? e.resource!.id!);
  };
  const put = async (key: string, r: Record<string, unknown>) => {
    const res = await h.api.put(`/${r.resourceType}/${key}`, { ...r, id: key });
    assert.equal(res.status, 201, JSON.stringify(res.body).slice(0, 300));
    id[key] = key;
  };

  before(async () => {
    h = await startHarness({ policy: openAccessPolicy });
    const p = (given: string, extra: Record<string, unknown> = {}) => ({ resourceType: 'Patient', name: [{ family: 'Test', given: [given] }], ...extra });
    await put('eve', p('Eve', { gender: 'female', birthDate: '2013-01-14', identifier: [{ system: 'http://acme.org/patient', value: '2345' }] }));
    await put('evelyn', p('Evelyn', { gender: 'female', birthDate: '2013-01-15' }));
    await put('severine', p('Severine', { birthDate: '2013-03-14', identifier: [{ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] }, system: 'http://example.org/mrn', value: '446053' }] }));
    await put('lowereve', p('eve', { gender: 'male', birthDate: '2012' }));
    await put('peter', p('Peter', { gender: 'male', identifier: [{ system: 'http://example.com/fhir/identifier/mrn', value: '123456' }] }));
    for (const [key, patient, status, date] of [
      ['c1', 'peter', 'active', '2013-01-14T10:00:00Z'],
      ['c2', 'eve', 'inactive', '2013-01-14T00:00:00Z'],
      ['c3', 'evelyn', 'active', '2013-01-15T00:00:00Z'],
    ] as const) {
      await put(key, consent(patient, { status, dateTime: date }) as unknown as Record<string, unknown>);
    }
  });
  after(() => h.close());

  describe('string (search.html#string)', () => {
    it('given=eve matches Eve and Evelyn (and eve), not Severine', async () => {
      assert.deepEqual((await find('/Patient?given=eve')).sort(), ['eve', 'evelyn', 'lowereve']);
    });
    it('given:contains=eve also matches Severine', async () => {
      assert.deepEqual((await find('/Patient?given:contains=eve')).sort(), ['eve', 'evelyn', 'lowereve', 'severine']);
    });
    it('given:exact=Eve matches Eve, but not Evelyn or eve', async () => {
      assert.deepEqual(await find('/Patient?given:exact=Eve'), ['eve']);
    });
  });

  describe('token (search.html#token)', () => {
    it('identifier=http://acme.org/patient|2345', async () => {
      assert.deepEqual(await find('/Patient?identifier=http://acme.org/patient|2345'), ['eve']);
    });
    it('gender:not=male finds the female ones and those with no gender', async () => {
      assert.deepEqual((await find('/Patient?gender:not=male')).sort(), ['eve', 'evelyn', 'severine']);
    });
    it('identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|446053', async () => {
      assert.deepEqual(await find('/Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|446053'), ['severine']);
    });
  });

  describe('date (search.html#date): the spec\'s range examples', () => {
    it('eq2013-01-14 matches 2013-01-14T00:00 and 2013-01-14T10:00 but not 2013-01-15T00:00', async () => {
      assert.deepEqual((await find('/Consent?date=eq2013-01-14')).sort(), ['c1', 'c2']);
    });
    it('ne2013-01-14 matches 2013-01-15T00:00 but not 2013-01-14T00:00 or 2013-01-14T10:00', async () => {
      assert.deepEqual(await find('/Consent?date=ne2013-01-14'), ['c3']);
    });
    it('lt2013-01-14T10:00 includes the day 2013-01-14, because it starts before 10:00', async () => {
      assert.ok((await find('/Patient?birthdate=lt2013-01-14T10:00:00Z')).includes('eve'));
    });
    it('gt2013-01-14T10:00 includes the day 2013-01-14, because it continues past 10:00', async () => {
      assert.ok((await find('/Patient?birthdate=gt2013-01-14T10:00:00Z')).includes('eve'));
    });
    it('ge2013-03-14 matches from 2013-03-14 on; le2013-01-14 up to it; the year 2012 is before both', async () => {
      assert.deepEqual(await find('/Patient?birthdate=ge2013-03-14'), ['severine']);
      assert.deepEqual((await find('/Patient?birthdate=le2013-01-14')).sort(), ['eve', 'lowereve']);
    });
    it('a time zone shifts the instant: 2013-01-14T10:00:00+10:00 is midnight UTC', async () => {
      assert.deepEqual(await find('/Consent?date=2013-01-14T10:00:00%2B10:00'), ['c2']);
    });
    it('a malformed date is a 400', async () => {
      for (const v of ['2013-13-01', 'xx2013', '2013-01-14T25:00:00Z', '14/01/2013']) assert.equal((await h.api.get(`/Consent?date=${v}`)).status, 400, v);
    });
  });

  describe('reference, chaining, reverse chaining (search.html#reference, #chaining, #has)', () => {
    it('patient=Patient/23, patient:Patient=23 and patient=23 are the same search', async () => {
      for (const q of ['patient=Patient/peter', 'patient:Patient=peter', 'patient=peter']) assert.deepEqual(await find(`/Consent?${q}`), ['c1'], q);
    });
    it('patient.name=peter and patient:Patient.name=peter', async () => {
      assert.deepEqual(await find('/Consent?patient.name=peter'), ['c1']);
      assert.deepEqual(await find('/Consent?patient:Patient.name=peter'), ['c1']);
    });
    it('patient.identifier=http://example.com/fhir/identifier/mrn|123456 (the misc search-warning Bundle\'s query, on Consent)', async () => {
      assert.deepEqual(await find('/Consent?patient.identifier=http://example.com/fhir/identifier/mrn|123456'), ['c1']);
    });
    it('_has:Consent:patient:status=active', async () => {
      assert.deepEqual((await find('/Patient?_has:Consent:patient:status=active')).sort(), ['evelyn', 'peter']);
    });
  });

  describe('result parameters (search.html#return)', () => {
    it('_sort=status,-date', async () => {
      assert.deepEqual(await find('/Consent?_sort=status,-date'), ['c3', 'c1', 'c2']);
    });
    it('_include=Consent:patient and _revinclude=Consent:patient', async () => {
      const inc = (await h.api.get('/Consent?_id=c1&_include=Consent:patient')).body as Bundle;
      assert.deepEqual(inc.entry!.map((e) => `${e.search!.mode}:${e.resource!.id}`), ['match:c1', 'include:peter']);
      const rev = (await h.api.get('/Patient?_id=peter&_revinclude=Consent:patient')).body as Bundle;
      assert.deepEqual(rev.entry!.map((e) => `${e.search!.mode}:${e.resource!.id}`), ['match:peter', 'include:c1']);
    });
    it('_summary=count returns only the total', async () => {
      const b = (await h.api.get('/Patient?given=eve&_summary=count')).body as Bundle;
      assert.equal(b.total, 3);
      assert.equal(b.entry, undefined);
    });
    it('_elements=identifier,active,link returns those and the mandatory elements, marked SUBSETTED', async () => {
      const b = (await h.api.get('/Patient?_id=eve&_elements=identifier,active,link')).body as Bundle;
      const r = b.entry![0].resource as Resource & Record<string, unknown>;
      assert.deepEqual(Object.keys(r).sort(), ['id', 'identifier', 'meta', 'resourceType']);
      assert.ok(r.meta!.tag!.some((t) => t.code === 'SUBSETTED'));
    });
  });

  describe('the example Bundles of r4/examples/misc', () => {
    it('bundle-transaction\'s GET Patient?name=peter, in a batch of our own', async () => {
      const tx = loadJson<Bundle>('r4', 'examples', 'misc', 'Bundle-bundle-transaction.json');
      const get = tx.entry!.find((e) => e.request!.method === 'GET' && e.request!.url.startsWith('Patient?'))!;
      const res = await h.api.post('/', { resourceType: 'Bundle', type: 'batch', entry: [{ request: get.request }] });
      assert.equal(res.status, 200);
      const inner = res.body.entry[0].resource as Bundle;
      assert.equal(inner.type, 'searchset');
      assert.deepEqual(inner.entry!.map((e) => e.resource!.id), ['peter']);
    });
    it('bundle-search-warning: an unsupported part of a search is reported in an OperationOutcome entry with mode outcome', async () => {
      const shape = loadJson<Bundle>('r4', 'examples', 'misc', 'Bundle-bundle-search-warning.json');
      const res = (await h.api.get('/Consent?patient.identifier=http://example.com/fhir/identifier/mrn|123456&unknown-param=1')).body as Bundle;
      const outcome = res.entry!.find((e) => e.search?.mode === 'outcome')!;
      assert.equal(outcome.search!.mode, shape.entry![0].search!.mode);
      assert.equal(outcome.resource!.resourceType, 'OperationOutcome');
      assert.equal(res.entry!.filter((e) => e.search?.mode === 'match').length, 1);
    });
    it('bundle-example: self and next links, match and include modes', async () => {
      const res = (await h.api.get('/Consent?status=active&_include=Consent:patient&_count=1')).body as Bundle;
      assert.deepEqual(res.link!.map((l) => l.relation), ['self', 'next']);
      assert.deepEqual(res.entry!.map((e) => e.search!.mode), ['match', 'include']);
    });
  });
});
