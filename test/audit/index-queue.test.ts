import assert from 'node:assert/strict';
import { parseSearch } from '../../server/search/parse';
import { compileFilter } from '../../server/search/sql';
import { ENGINE } from '../support/db';
import type { AuditEvent } from 'fhir/r4';
import { consent, loadJson, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

const INDEX_TABLES = ['idx_string', 'idx_token', 'idx_date', 'idx_reference', 'idx_uri'];

/**
 * The audit trail's own events are indexed after they are committed (store/audit-index.ts). A
 * search confined to some patients waits only for those patients' queued events; these tests
 * put events back in the queue, unindexed, and prove every search still sees them.
 */
describe(`Audit: searches see events still waiting to be indexed (${ENGINE})`, () => {
  let h: Harness;
  let a: string;
  let b: string;
  before(async () => {
    h = await startHarness({ clients: [{ clientId: 'ehr-audit', ods: 'HOSP1', scopes: ['system/AuditEvent.c'], purposes: ['HOPERAT'], roles: ['audit-source'] }] });
    a = (await h.api.post('/Patient', patient())).body.id;
    b = (await h.api.post('/Patient', patient())).body.id;
    for (let i = 0; i < 3; i++) {
      await h.api.get(`/Patient/${a}`);
      await h.api.get(`/Patient/${b}`);
    }
    await h.store.auditIndex.catchUp();
  });
  after(() => h.close());

  const q = () => h.store.driver;
  /** Matches of a search, counted from its one page (so the search is audited against the patients it returned). */
  const total = async (query: string) => {
    const res = await h.api.get(`${query}${query.includes('?') ? '&' : '?'}_count=1000`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.link.some((l: { relation: string }) => l.relation === 'next'), false);
    return (res.body.entry ?? []).filter((e: { search?: { mode: string } }) => e.search?.mode === 'match').length as number;
  };
  /** The rids of the events about `id`, as the search index knows them now. */
  async function eventsAbout(id: string): Promise<number[]> {
    const rows = await q().all<{ rid: number | string }>(
      "SELECT r.rid FROM resources r WHERE r.type = 'AuditEvent' AND r.content LIKE ?",
      [`%"reference":"Patient/${id}"%`],
    );
    return rows.map((r) => Number(r.rid));
  }
  /** Takes the events' index rows away and queues them again, as if just committed (`patient`: their queue key). */
  async function unindex(rids: readonly number[], patient: string | null): Promise<void> {
    const list = rids.join(', ');
    for (const table of INDEX_TABLES) await q().run(`DELETE FROM ${table} WHERE rid IN (${list})`);
    await q().run(`DELETE FROM audit_index_queue WHERE rid IN (${list})`);
    for (const rid of rids) await q().run('INSERT INTO audit_index_queue (rid, patient) VALUES (?, ?)', [rid, patient]);
  }

  it('queues each event with the one patient it is about', async () => {
    await h.api.get(`/Patient/${a}`);
    const rows = await q().all<{ patient: string | null }>(
      `SELECT q.patient FROM audit_index_queue q JOIN resources r ON r.rid = q.rid WHERE r.content LIKE ?`,
      [`%"reference":"Patient/${a}"%`],
    );
    // The background indexer may already have taken it; if not, it names the patient.
    for (const r of rows) assert.equal(r.patient, `Patient/${a}`);
  });

  it('a search for a patient finds its queued events, and those queued as about several patients', async () => {
    await h.store.auditIndex.catchUp();
    const [eventsA, eventsB] = [await eventsAbout(a), await eventsAbout(b)];
    const before = { a: await total(`/AuditEvent?patient=${a}`), b: await total(`/AuditEvent?patient=Patient/${b}`) };
    assert.ok(before.a >= 3 && before.b >= 3, JSON.stringify(before));
    // Half of a's events queued under a, the other half as events about several patients (or queued before the column existed).
    const half = Math.ceil(eventsA.length / 2);
    await unindex(eventsA.slice(0, half), `Patient/${a}`);
    await unindex(eventsA.slice(half), null);
    await unindex(eventsB, `Patient/${b}`);
    assert.equal(await total(`/AuditEvent?patient=${a}&date=ge2000-01-01`), before.a + 1, 'the search before is on the trail too');
    assert.equal(await total(`/AuditEvent?patient=Patient/${b}`), before.b + 1);
  });

  it('the patient access report catches up on the patient\'s queued events', async () => {
    await h.store.auditIndex.catchUp();
    const count = async () => (await h.api.get(`/Patient/${a}/$access-report`)).body.parameter.find((p: { name: string }) => p.name === 'count').valueInteger as number;
    const before = await count();
    await unindex(await eventsAbout(a), `Patient/${a}`);
    assert.equal(await count(), before + 1);
  });

  it('searches not confined to patients, and _has over AuditEvents, catch up on the whole queue', async () => {
    await h.store.auditIndex.catchUp();
    const all = await total('/AuditEvent?action=R');
    const has = await total(`/Patient?_id=${a},${b}&_has:AuditEvent:patient:action=R`);
    assert.equal(has, 2);
    await unindex([...(await eventsAbout(a)), ...(await eventsAbout(b))], null);
    assert.equal(await total(`/Patient?_id=${a},${b}&_has:AuditEvent:patient:action=R`), 2);
    await unindex([...(await eventsAbout(a)), ...(await eventsAbout(b))], `Patient/${a}`);
    // Reads only: the searches since are not counted.
    assert.equal(await total('/AuditEvent?action=R'), all);
  });

  /** A server-written event about `b`, indexed. */
  async function eventAboutB(): Promise<{ rid: number; id: string }> {
    await h.store.auditIndex.catchUp();
    const [x] = await q().all<{ rid: number | string; id: string }>("SELECT rid, id FROM resources WHERE type = 'AuditEvent' AND content LIKE ? ORDER BY rid LIMIT 1", [`%"reference":"Patient/${b}"%`]);
    return { rid: Number(x.rid), id: x.id };
  }

  it('a search confined to a patient that chains into other AuditEvents catches up on all of them', async () => {
    const x = await eventAboutB();
    // An EHR's own event about a, naming the server's event X (about b) as an entity.
    const source = await h.as('ehr-audit', { purpose: 'HOPERAT' });
    const event = loadJson<AuditEvent>('ihe', 'balp', 'json', 'instances', 'AuditEvent-ex-auditBasicReadServer.json') as unknown as Record<string, unknown>;
    delete event.id;
    const entities = event.entity as { what: { reference?: string } }[];
    entities.find((e) => e.what.reference?.startsWith('Patient/'))!.what.reference = `Patient/${a}`;
    entities.push({ what: { reference: `AuditEvent/${x.id}` } });
    assert.equal((await source.post('/AuditEvent', event)).status, 201);
    const query = `/AuditEvent?patient=${a}&entity:AuditEvent.patient=Patient/${b}`;
    assert.equal(await total(query), 1, 'with X indexed');
    await unindex([x.rid], `Patient/${b}`);
    assert.equal(await total(query), 1, 'with X queued');
    await unindex([x.rid], `Patient/${b}`);
    assert.equal(await total(`/AuditEvent?patient=${a}&entity.patient=Patient/${b}`), 1, 'without the type modifier');
  });

  it('a Consent search chained into AuditEvent catches up too', async () => {
    const x = await eventAboutB();
    const created = await h.api.post('/Consent', consent(a, { provision: { type: 'permit', data: [{ meaning: 'related', reference: { reference: `AuditEvent/${x.id}` } }] } }));
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const query = `/Consent?data:AuditEvent.patient=Patient/${b}`;
    assert.equal(await total(query), 1);
    await unindex([x.rid], `Patient/${b}`);
    assert.equal(await total(query), 1, 'with X queued');
  });

  it('a transaction Bundle\'s AuditEvent searches catch up before the transaction takes the writer', async () => {
    await h.store.auditIndex.catchUp();
    const before = await total(`/AuditEvent?patient=${a}&action=R`);
    await unindex(await eventsAbout(a), `Patient/${a}`);
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'GET', url: `AuditEvent?patient=${a}&action=R&_count=1000` } },
        { fullUrl: 'urn:uuid:5a1e0d3c-4b7e-4f0a-9d53-0f3f2c7d9a11', resource: patient(), request: { method: 'POST', url: 'Patient' } },
      ],
    };
    const res = await h.api.post('/', bundle);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const page = res.body.entry[0].resource;
    assert.equal(page.entry.filter((e: { search?: { mode: string } }) => e.search?.mode === 'match').length, before);
  });

  it('compiles the patients a search is confined to only from plain patient references', () => {
    const confined = (type: 'AuditEvent' | 'Patient', query: [string, string][]) =>
      compileFilter(parseSearch(type, query, { strict: true, defaultCount: 20, maxCount: 100, baseUrl: 'http://x', now: Date.now() }).criteria, Date.now());
    assert.deepEqual(confined('AuditEvent', [['patient', 'p1,Patient/p2']]).auditPatients, ['Patient/p1', 'Patient/p2']);
    assert.deepEqual(confined('AuditEvent', [['patient', 'p1'], ['date', 'ge2026']]).auditPatients, ['Patient/p1']);
    assert.equal(confined('AuditEvent', [['patient:identifier', 'https://fhir.nhs.uk/Id/nhs-number|9000000009']]).auditPatients, undefined);
    assert.equal(confined('AuditEvent', [['patient', 'https://elsewhere.example/fhir/Patient/p1']]).auditPatients, undefined);
    assert.equal(confined('AuditEvent', [['patient.identifier', 'https://fhir.nhs.uk/Id/nhs-number|9000000009']]).auditPatients, undefined);
    assert.equal(confined('AuditEvent', [['entity', 'Patient/p1']]).auditPatients, undefined);
    assert.equal(confined('Patient', [['_has:AuditEvent:patient:action', 'R']]).readsAuditIndex, true);
    assert.equal(confined('Patient', [['_id', 'p1']]).readsAuditIndex, undefined);
    assert.equal(confined('AuditEvent', [['patient', 'p1'], ['entity:AuditEvent.patient', 'Patient/p2']]).readsAuditIndex, true);
    assert.equal(confined('AuditEvent', [['patient.identifier', 'https://fhir.nhs.uk/Id/nhs-number|9000000009']]).readsAuditIndex, undefined);
  });
});
