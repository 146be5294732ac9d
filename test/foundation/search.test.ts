import assert from 'node:assert/strict';
import { consent, NHS_VALID, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

describe('Foundation: minimal search (_id, _lastUpdated, identifier, patient, status, paging)', () => {
  let h: Harness;
  const t0 = Date.UTC(2031, 5, 1);
  let ids: string[] = [];
  before(async () => {
    h = await startHarness({ frozenAt: t0 });
    for (let i = 0; i < 25; i++) {
      h.clock.now = t0 + i * 1000;
      const extra = i === 0 ? { identifier: [{ system: 'https://fhir.nhs.uk/Id/nhs-number', value: NHS_VALID }] } : { identifier: [{ system: 'urn:test:seq', value: String(i) }] };
      ids.push((await h.api.post('/Patient', patient(extra))).body.id);
    }
    await h.api.post('/Consent', consent(ids[0]));
    await h.api.post('/Consent', consent(ids[0], { status: 'inactive' }));
    await h.api.post('/Consent', consent(ids[1]));
  });
  after(() => h.close());

  const get = async (q: string) => (await h.api.get(q)).body;

  it('_id finds by logical id (comma = or)', async () => {
    assert.equal((await get(`/Patient?_id=${ids[3]}`)).total, 1);
    assert.equal((await get(`/Patient?_id=${ids[3]},${ids[4]},nope`)).total, 2);
  });

  it('identifier finds by system|value, by value, by system|', async () => {
    assert.equal((await get(`/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|${NHS_VALID}`)).entry[0].resource.id, ids[0]);
    assert.equal((await get(`/Patient?identifier=${NHS_VALID}`)).total, 1);
    assert.equal((await get('/Patient?identifier=urn:test:seq|')).entry.length, 20, 'first page of 24');
    assert.equal((await get('/Patient?identifier=urn:test:other|1')).total, 0);
  });

  it('_lastUpdated takes prefixes and partial dates', async () => {
    const iso = (s: number) => new Date(t0 + s * 1000).toISOString();
    assert.equal((await get(`/Patient?_lastUpdated=ge${iso(20)}&_count=100`)).entry.length, 5);
    assert.equal((await get(`/Patient?_lastUpdated=lt${iso(2)}`)).total, 2);
    assert.equal((await get(`/Patient?_lastUpdated=gt${iso(5)}&_lastUpdated=le${iso(7)}`)).total, 2);
    assert.equal((await get('/Patient?_lastUpdated=2031-06&_summary=count')).total, 25);
    assert.equal((await get('/Patient?_lastUpdated=2030&_summary=count')).total, 0);
    assert.equal((await h.api.get('/Patient?_lastUpdated=yesterday')).status, 400);
    assert.equal((await h.api.get('/Patient?_lastUpdated=xx2031')).status, 400);
  });

  it('patient and status find Consents', async () => {
    assert.equal((await get(`/Consent?patient=${ids[0]}`)).total, 2);
    assert.equal((await get(`/Consent?patient=Patient/${ids[0]}&status=active`)).total, 1);
    assert.equal((await get(`/Consent?patient=http://custodian.test/fhir/Patient/${ids[0]}`)).total, 2);
    assert.equal((await get('/Consent?status=inactive')).total, 1);
    assert.equal((await get('/Consent?status:not=inactive')).total, 2);
    assert.equal((await get('/Consent?status=http://hl7.org/fhir/consent-state-codes|active')).total, 2);
  });

  it('pages with _count: next and previous links walk every match once', async () => {
    const seen: string[] = [];
    let b = await get('/Patient?_count=7');
    assert.equal(b.total, undefined, 'no total unless asked for, when there is more than a page');
    const pages: string[][] = [];
    for (;;) {
      pages.push(b.entry.map((e: { resource: { id: string } }) => e.resource.id));
      seen.push(...pages.at(-1)!);
      const next = b.link.find((l: { relation: string }) => l.relation === 'next');
      if (!next) break;
      b = await get(next.url.replace('http://custodian.test/fhir', ''));
    }
    assert.deepEqual(seen, ids);
    assert.deepEqual(pages.map((p) => p.length), [7, 7, 7, 4]);
    const prev = b.link.find((l: { relation: string }) => l.relation === 'previous');
    const back = await get(prev.url.replace('http://custodian.test/fhir', ''));
    assert.deepEqual(back.entry.map((e: { resource: { id: string } }) => e.resource.id), pages[2]);
    assert.equal((await get('/Patient?_count=7&_total=accurate')).total, 25);
    assert.equal((await get('/Patient?_count=0&_total=accurate')).entry, undefined);
  });

  it('reports unknown parameters in an outcome entry, or 400 with Prefer: handling=strict', async () => {
    const lenient = await get('/Patient?colour=blue&_count=1');
    const outcome = lenient.entry.find((e: { search: { mode: string } }) => e.search.mode === 'outcome');
    assert.match(outcome.resource.issue[0].diagnostics, /colour/);
    assert.doesNotMatch(lenient.link[0].url, /colour/, 'the self link shows only what was applied');
    const strict = await h.api.get('/Patient?colour=blue', { Prefer: 'handling=strict' });
    assert.equal(strict.status, 400);
    assert.match(strict.body.issue[0].diagnostics, /colour/);
  });

  it('accepts POST _search with a form body', async () => {
    const res = await h.api.request('post', '/Patient/_search', { body: `_id=${ids[2]}`, raw: true, contentType: 'application/x-www-form-urlencoded' });
    assert.equal(res.status, 200);
    assert.equal(res.body.entry[0].resource.id, ids[2]);
  });

  it('rejects malformed cursors and _count values', async () => {
    assert.equal((await h.api.get('/Patient?_cursor=garbage')).status, 400);
    assert.equal((await h.api.get('/Patient?_count=-1')).status, 400);
  });
});
