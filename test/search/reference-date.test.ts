import assert from 'node:assert/strict';
import type { AuditEvent, Bundle } from 'fhir/r4';
import { openAccessPolicy } from '../../server/gate/policy';
import { parseSearch } from '../../server/search/parse';
import { compileFilter } from '../../server/search/sql';
import { migrate } from '../../server/store/migrations';
import { patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * `AuditEvent?patient=…&date=…` is read through the patient-date index (`idx_ref_date`,
 * ResourceDefinition.referenceDatePairs): one range in date order instead of a probe of each of
 * the patient's events. It must return exactly what the plain index tables give: the same
 * matches, in the same order, on the same pages, counted the same, restricted the same.
 */
describe('Search: a patient\'s AuditEvents by date, through the patient-date index', () => {
  let h: Harness;
  const t0 = Date.UTC(2032, 0, 1);
  let A: string;
  let B: string;
  let C: string;
  /** The events posted, by name: who they name and when they were recorded. */
  const e: Record<string, string> = {};
  const ids = (b: Bundle) => (b.entry ?? []).filter((x) => x.search?.mode === 'match').map((x) => x.resource!.id!);
  const path = (url: string | undefined) => url!.replace(/^https?:\/\/[^/]+(\/fhir)?/, '');
  const get = (q: string, api = h.api) => api.bundle(q);
  /** Every page of a search, following next links. */
  const walk = async (q: string, api = h.api) => {
    const pages: string[][] = [];
    let b = await get(q, api);
    for (;;) {
      pages.push(ids(b));
      const next = b.link?.find((l) => l.relation === 'next')?.url;
      if (!next) return { pages, last: b };
      b = await get(path(next), api);
    }
  };
  /**
   * The same search with its patient given twice (`patient=A,A`): the same matches, but two
   * values, which the patient-date index does not take, so it runs on the plain index tables.
   */
  const plain = (q: string) => q.replace(/patient=([^&]+)/, (_, v: string) => `patient=${v},${v}`);

  function event(name: string, recorded: string, action: string, who: string, also?: string): AuditEvent {
    return {
      resourceType: 'AuditEvent',
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
      action: action as AuditEvent['action'],
      recorded,
      agent: [{ requestor: true, who: { reference: `Patient/${who}` } }],
      source: { observer: { display: `bench ${name}` } },
      ...(also ? { entity: [{ what: { reference: `Patient/${also}` } }] } : {}),
    };
  }

  before(async () => {
    h = await startHarness({
      policy: openAccessPolicy,
      frozenAt: t0,
      clients: [{ clientId: 'reads-only', ods: 'TADMIN', scopes: ['system/AuditEvent.rs?action=R', 'system/Patient.rs'], purposes: ['TREAT'] }],
    });
    A = (await h.api.post('/Patient', patient({ name: [{ family: 'Able' }] }))).body.id;
    B = (await h.api.post('/Patient', patient({ name: [{ family: 'Baker' }] }))).body.id;
    C = (await h.api.post('/Patient', patient({ name: [{ family: 'Cole' }] }))).body.id;
    const post = async (name: string, ev: AuditEvent) => {
      const res = await h.api.post('/AuditEvent', ev);
      assert.equal(res.status, 201, JSON.stringify(res.body).slice(0, 300));
      e[name] = res.body.id;
    };
    // Posted out of date order; e0 and e1 recorded at the same instant (the tie goes by insertion).
    await post('e5', event('e5', '2018-01-01T00:00:00Z', 'R', A));
    await post('e0', event('e0', '2019-03-01T10:00:00Z', 'R', A));
    await post('e1', event('e1', '2019-03-01T10:00:00Z', 'C', A));
    await post('e4', event('e4', '2020-12-31T23:59:59Z', 'E', A));
    await post('e2', event('e2', '2019-06-15T00:00:00Z', 'R', A, B));
    await post('e3', event('e3', '2020-01-01T00:00:00Z', 'R', B));
    await h.store.auditIndex.catchUp();
  });
  after(() => h.close());

  // The server's own events (its trail of these requests) are recorded at the frozen clock, 2032:
  // the date ranges below leave them out unless said otherwise.
  const cases: [string, () => string, () => string[]][] = [
    ['newest first', () => `/AuditEvent?patient=${A}&date=ge2019&date=le2021&_sort=-date`, () => [e.e4, e.e2, e.e0, e.e1]],
    ['oldest first', () => `/AuditEvent?patient=${A}&date=ge2019&date=le2021&_sort=date`, () => [e.e0, e.e1, e.e2, e.e4]],
    ['typed reference, a year, no sort (insertion order)', () => `/AuditEvent?patient=Patient/${A}&date=2019`, () => [e.e0, e.e1, e.e2]],
    ['a second patient of an event', () => `/AuditEvent?patient=${B}&date=lt2020-01-01`, () => [e.e2]],
    ['the end of a range is exclusive for lt, inclusive for le', () => `/AuditEvent?patient=${B}&date=le2020-01-01T00:00:00Z&_sort=-date`, () => [e.e3, e.e2]],
    ['ne and an upper bound', () => `/AuditEvent?patient=${A}&date=ne2019&date=le2021&_sort=-date`, () => [e.e4, e.e5]],
    ['OR of two dates', () => `/AuditEvent?patient=${A}&date=2018,2020&_sort=date`, () => [e.e5, e.e4]],
    ['sa and eb', () => `/AuditEvent?patient=${A}&date=sa2018-12-31&date=eb2020-06-01&_sort=-date`, () => [e.e2, e.e0, e.e1]],
    ['another criterion checked per row', () => `/AuditEvent?patient=${A}&date=ge2019&date=le2021&action=R&_sort=-date`, () => [e.e2, e.e0]],
    ['_lastUpdated beside it', () => `/AuditEvent?patient=${A}&date=le2021&_lastUpdated=ge2031&_sort=-date`, () => [e.e4, e.e2, e.e0, e.e1, e.e5]],
    ['a patient with no events', () => `/AuditEvent?patient=${C}&date=le2021`, () => []],
  ];

  for (const [what, query, expected] of cases) {
    it(`${what}: what the plain index gives, and what was recorded`, async () => {
      const driven = ids(await get(query()));
      assert.deepEqual(driven, expected());
      assert.deepEqual(ids(await get(plain(query()))), driven);
    });
  }

  it('is the way such a search is run, and only such a search', () => {
    const driven = (query: string, type: 'AuditEvent' | 'Consent' = 'AuditEvent') =>
      compileFilter(parseSearch(type, [...new URLSearchParams(query).entries()], { strict: true, defaultCount: 20, maxCount: 100, baseUrl: 'http://x', now: t0 }).criteria, t0).driven !== undefined;
    assert.equal(driven('patient=p1&date=ge2019'), true);
    assert.equal(driven('patient=Patient/p1&date=ge2019&date=le2020&action=R'), true);
    assert.equal(driven('patient=p1,p2&date=ge2019'), false, 'two values: one event could match both');
    assert.equal(driven('patient=p1&patient=p2&date=ge2019'), false);
    assert.equal(driven('patient=p1'), false, 'no date criterion: an event without a pair row would be lost');
    assert.equal(driven('date=ge2019'), false);
    assert.equal(driven('patient:identifier=https://fhir.nhs.uk/Id/nhs-number|9000000009&date=ge2019'), false);
    assert.equal(driven('patient=http://elsewhere.example/fhir/Patient/p1&date=ge2019'), false);
    assert.equal(driven('patient=p1&date=ge2019', 'Consent'), false, 'Consent declares no pair');
  });

  it('reads the pair rows: an event whose row is gone drops out of the search, and not out of the plain one', async () => {
    const query = `/AuditEvent?patient=${A}&date=ge2019&date=le2021&_sort=-date`;
    const rid = Number((await h.store.driver.get<{ rid: number | string }>("SELECT rid FROM resources WHERE type = 'AuditEvent' AND id = ?", [e.e2]))!.rid);
    const saved = await h.store.driver.all<Record<string, unknown>>('SELECT * FROM idx_ref_date WHERE rid = ? AND ref = ?', [rid, `Patient/${A}`]);
    assert.equal(saved.length, 1);
    await h.store.driver.run('DELETE FROM idx_ref_date WHERE rid = ? AND ref = ?', [rid, `Patient/${A}`]);
    try {
      assert.deepEqual(ids(await get(query)), [e.e4, e.e0, e.e1]);
      assert.deepEqual(ids(await get(plain(query))), [e.e4, e.e2, e.e0, e.e1]);
      assert.deepEqual(ids(await get(`/AuditEvent?patient=${B}&date=le2021&_sort=-date`)), [e.e3, e.e2], "B's row of the same event is its own");
    } finally {
      const cols = Object.keys(saved[0]);
      await h.store.driver.run(`INSERT INTO idx_ref_date (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`, cols.map((c) => saved[0][c]));
    }
    assert.deepEqual(ids(await get(query)), [e.e4, e.e2, e.e0, e.e1]);
  });

  it('pages forwards and back in date order, the pages those of the plain index', async () => {
    const query = `/AuditEvent?patient=${A}&date=le2021&_sort=-date&_count=2`;
    const { pages, last } = await walk(query);
    assert.deepEqual(pages, [[e.e4, e.e2], [e.e0, e.e1], [e.e5]]);
    assert.deepEqual((await walk(plain(query))).pages, pages);
    const back = await get(path(last.link!.find((l) => l.relation === 'previous')!.url));
    assert.deepEqual(ids(back), [e.e0, e.e1]);
    const asc = await walk(`/AuditEvent?patient=${A}&date=le2021&_sort=date&_count=3`);
    assert.deepEqual(asc.pages, [[e.e5, e.e0, e.e1], [e.e2, e.e4]]);
  });

  it('counts what it finds (_total=accurate, _summary=count)', async () => {
    const query = `/AuditEvent?patient=${A}&date=ge2019&date=le2021`;
    assert.equal((await get(`${query}&_total=accurate&_count=1`)).total, 4);
    assert.equal((await get(`${query}&_summary=count`)).total, 4);
    assert.equal((await get(`${plain(query)}&_summary=count`)).total, 4);
  });

  it("keeps a token's granular scope: only the events it may see", async () => {
    const api = await h.as('reads-only');
    const query = `/AuditEvent?patient=${A}&date=ge2019&date=le2021&_sort=-date`;
    assert.deepEqual(ids(await get(query, api)), [e.e2, e.e0]);
    assert.deepEqual(ids(await get(plain(query), api)), [e.e2, e.e0]);
    assert.equal((await get(`${query}&_summary=count`, api)).total, 2);
  });

  it("includes the server's own trail events, as soon as they are committed", async () => {
    // Every request above is on A's trail, recorded at the frozen clock; these are read from
    // the journal's moves and the early rows written with them, like the posted ones.
    const query = `/AuditEvent?patient=${A}&date=ge2032&_sort=-date&_count=1000`;
    const before = ids(await get(query));
    assert.ok(before.length > 5, `the trail of the requests above: ${before.length}`);
    // All recorded at the same instant: in insertion order, the newest last.
    assert.deepEqual(ids(await get(plain(query))).slice(0, -1), before, 'the same, and the event of the search just made');
    await get(`/Patient/${A}`);
    const after = ids(await get(query));
    assert.equal(after.length, before.length + 3, "the two searches' and the read's events");
  });

  it('is filled from the rows already stored when the migration runs on an existing database', async () => {
    const before = ids(await get(`/AuditEvent?patient=${A}&date=le2021&_sort=-date`));
    const count = async () => Number((await h.store.driver.get<{ n: number | string }>('SELECT COUNT(*) AS n FROM idx_ref_date'))!.n);
    await h.store.auditIndex.catchUp();
    const rows = await count();
    assert.ok(rows > 20, `pair rows: ${rows}`);
    await h.store.driver.run('DROP TABLE idx_ref_date');
    await h.store.driver.run("DELETE FROM custodian_migrations WHERE id = '0029-reference-date-index'");
    assert.deepEqual(await migrate(h.store.sequelize), ['0029-reference-date-index']);
    assert.equal(await count(), rows);
    assert.deepEqual(ids(await get(`/AuditEvent?patient=${A}&date=le2021&_sort=-date`)), before);
    const verified = (await get('/AuditEvent/$verify')) as unknown as { parameter: { name: string; valueBoolean?: boolean }[] };
    assert.equal(verified.parameter.find((p) => p.name === 'intact')?.valueBoolean, true);
  });
});
