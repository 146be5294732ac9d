import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { INDEX_TABLES } from '../../server/store/index-rows';
import type { AccessContext } from '../../server/access/context';
import { scopePolicy } from '../../server/access/scope-policy';
import { allOf, openAccessPolicy } from '../../server/gate/policy';
import { paramId } from '../../server/search/param-id';
import { parseSearch } from '../../server/search/parse';
import { AuditQueue } from '../../server/store/audit-index';
import { uuidv7 } from '../../server/audit/items';
import { EARLY_AUDIT_PARAMS, EARLY_ROWS_MAX_EVENTS, serializeAuditEvent, writeTransaction } from '../../server/store/write';
import { compileFilter } from '../../server/search/sql';
import { ENGINE } from '../support/db';
import type { AuditEvent } from 'fhir/r4';
import { consent, loadJson, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';
import { definitions, pairCode } from '../../resources';

/** The index keys of an AuditEvent's early rows: EARLY_AUDIT_PARAMS', and the reference-date pairs made of those (store/index-rows.ts). */
const EARLY_KEYS = [
  ...EARLY_AUDIT_PARAMS,
  ...(definitions.AuditEvent.referenceDatePairs ?? []).filter((p) => EARLY_AUDIT_PARAMS.has(p.reference) && EARLY_AUDIT_PARAMS.has(p.date)).map(pairCode),
].map((c) => paramId('AuditEvent', c));


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

  /**
   * Takes away the events' index rows but their early ones (patient, date) and queues them again
   * as the append queues them: as the audit trail's events are between their commit and the
   * indexer's pass.
   */
  async function unindexLate(rids: readonly number[], patient: string | null): Promise<void> {
    const list = rids.join(', ');
    const early = EARLY_KEYS.join(', ');
    for (const table of INDEX_TABLES) await q().run(`DELETE FROM ${table} WHERE rid IN (${list}) AND pid NOT IN (${early})`);
    await q().run(`DELETE FROM audit_index_queue WHERE rid IN (${list})`);
    for (const rid of rids) await q().run('INSERT INTO audit_index_queue (rid, patient, early) VALUES (?, ?, 1)', [rid, patient]);
  }

  /** Records what the gate asks the index to catch up on while `run` runs. */
  async function catchUps(run: () => Promise<void>): Promise<{ patients?: readonly string[]; params?: readonly string[] }[]> {
    const index = h.store.auditIndex;
    const original = index.catchUp;
    const calls: { patients?: readonly string[]; params?: readonly string[] }[] = [];
    index.catchUp = (patients, params) => {
      calls.push({ patients, params });
      return original.call(index, patients, params);
    };
    try {
      await run();
    } finally {
      index.catchUp = original;
    }
    return calls;
  }

  it('writes each event\'s patient and date index rows with it, and only those, in its transaction', async () => {
    // Looked at inside the transaction that appends (then rolled back): the indexer cannot have been there.
    const rollback = new Error('rollback');
    const writer = { clientId: 'test', organization: null };
    const recorded = '2026-03-04T05:06:07.890Z';
    const event = (id: string): AuditEvent => ({
      resourceType: 'AuditEvent',
      id,
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
      action: 'R',
      recorded,
      outcome: '0',
      agent: [{ who: { reference: `Patient/${b}` }, requestor: true }],
      source: { observer: { display: 'test' } },
      entity: [{ what: { reference: `Patient/${a}` } }, { what: { reference: `Patient/${a}` } }],
    });
    const early = [paramId('AuditEvent', 'patient'), paramId('AuditEvent', 'date')];
    for (const path of ['append', 'appendAuditEvents'] as const) {
      await assert.rejects(
        writeTransaction(h.store.driver, Date.now, h.config.baseUrl, async (tx) => {
          const id = uuidv7();
          if (path === 'append') await tx.appendSerialized([serializeAuditEvent(event(id), Date.now(), h.config.baseUrl)], writer);
          else await tx.appendAuditEvents([event(id)], writer);
          const [row] = await tx.q.all<{ rid: number | string }>("SELECT rid FROM resources WHERE type = 'AuditEvent' AND id = ?", [id]);
          const rid = Number(row.rid);
          const refs = await tx.q.all<{ ref: string }>('SELECT ref FROM idx_reference WHERE pid = ? AND rid = ? ORDER BY ref', [early[0], rid]);
          assert.deepEqual(refs.map((r) => r.ref), [`Patient/${a}`, `Patient/${b}`].sort(), path);
          const dates = await tx.q.all<{ lo: number | string; hi: number | string }>('SELECT lo, hi FROM idx_date WHERE pid = ? AND rid = ?', [early[1], rid]);
          assert.deepEqual(dates.map((d) => [Number(d.lo), Number(d.hi)]), [[Date.parse(recorded), Date.parse(recorded)]], path);
          // With them, their patient-date pairs (store/index-rows.ts), which the same searches read.
          const pairs = await tx.q.all<{ ref: string; hi: number | string }>('SELECT ref, hi FROM idx_ref_date WHERE pid = ? AND rid = ? ORDER BY ref', [paramId('AuditEvent', 'patient+date'), rid]);
          assert.deepEqual(pairs.map((x) => [x.ref, Number(x.hi)]), [`Patient/${a}`, `Patient/${b}`].sort().map((ref) => [ref, Date.parse(recorded)]), path);
          let others = 0;
          for (const table of INDEX_TABLES) others += Number((await tx.q.get<{ n: number | string }>(`SELECT COUNT(*) AS n FROM ${table} WHERE rid = ? AND pid NOT IN (${EARLY_KEYS.join(', ')})`, [rid]))!.n);
          assert.equal(others, 0, `${path}: the other rows wait for the indexer`);
          const queued = await tx.q.get<{ patient: string | null; early: number | string }>('SELECT patient, early FROM audit_index_queue WHERE rid = ?', [rid]);
          assert.deepEqual({ patient: queued?.patient, early: Number(queued?.early) }, { patient: null, early: 1 }, `${path}: queued as about several patients, its early rows written`);
          throw rollback;
        }),
        (err) => err === rollback,
      );
    }
  });

  it('the events of a request about many patients (an export file, a walk page) wait whole, and searches still find them', async () => {
    const rollback = new Error('rollback');
    const writer = { clientId: 'test', organization: null };
    const event = (id: string, who: string): AuditEvent => ({
      resourceType: 'AuditEvent',
      id,
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
      action: 'E',
      recorded: new Date().toISOString(),
      outcome: '0',
      agent: [{ who: { display: 'x' }, requestor: true }],
      source: { observer: { display: 'test' } },
      entity: [{ what: { reference: `Patient/${who}` } }],
    });
    // Inside rolled-back transactions: more events than EARLY_ROWS_MAX_EVENTS in one request, and an export file's.
    for (const path of ['appendAuditEvents', 'createMany'] as const) {
      await assert.rejects(
        writeTransaction(h.store.driver, Date.now, h.config.baseUrl, async (tx) => {
          const ids = Array.from({ length: EARLY_ROWS_MAX_EVENTS + 1 }, () => uuidv7());
          const events = ids.map((id, i) => event(id, i % 2 ? a : b));
          if (path === 'appendAuditEvents') await tx.appendAuditEvents(events, writer);
          else await tx.createMany('AuditEvent', events, writer, { deferIndex: true });
          for (const [i, id] of ids.entries()) {
            const rid = Number((await tx.q.get<{ rid: number | string }>("SELECT rid FROM resources WHERE type = 'AuditEvent' AND id = ?", [id]))!.rid);
            let rows = 0;
            for (const table of INDEX_TABLES) rows += Number((await tx.q.get<{ n: number | string }>(`SELECT COUNT(*) AS n FROM ${table} WHERE rid = ?`, [rid]))!.n);
            assert.equal(rows, 0, `${path}: no index rows yet`);
            const queued = await tx.q.get<{ patient: string | null; early: number | string }>('SELECT patient, early FROM audit_index_queue WHERE rid = ?', [rid]);
            assert.deepEqual({ patient: queued?.patient, early: Number(queued?.early) }, { patient: `Patient/${i % 2 ? a : b}`, early: 0 }, path);
          }
          throw rollback;
        }),
        (err) => err === rollback,
      );
    }
    // Through the server: a search returning more patients than that, then a search for one of them.
    const many: string[] = [];
    for (let i = 0; i < EARLY_ROWS_MAX_EVENTS + 1; i++) many.push((await h.api.post('/Patient', patient({ name: [{ family: 'Many' }] }))).body.id);
    await h.store.auditIndex.catchUp();
    const before = await total(`/AuditEvent?patient=${many[0]}&date=ge2000-01-01`);
    assert.equal((await h.api.get(`/Patient?_id=${many.join(',')}&_count=100`)).body.entry.length, many.length);
    assert.equal(await total(`/AuditEvent?patient=${many[0]}&date=ge2000-01-01`), before + 2, 'the Patient search and the search before it');
  });

  it('a search reading only patient and date rows does not wait for the rest; one reading others does', async () => {
    await h.store.auditIndex.catchUp();
    const reads = await total(`/AuditEvent?patient=${a}&action=R`);
    const all = await total(`/AuditEvent?patient=${a}&date=ge2000-01-01`);
    // Half queued under a, half as about several patients: the early patient rows find both,
    // whatever the queue entry says.
    const events = await eventsAbout(a);
    await unindexLate(events.slice(0, Math.ceil(events.length / 2)), `Patient/${a}`);
    await unindexLate(events.slice(Math.ceil(events.length / 2)), null);
    let found = 0;
    const early = await catchUps(async () => {
      found = await total(`/AuditEvent?patient=${a}&date=ge2000-01-01&_sort=-date`);
    });
    assert.equal(found, all + 1, 'every event, from its early rows (the search before is on the trail too)');
    assert.deepEqual(early.map((c) => [c.patients, [...new Set(c.params)].sort()]), [[[`Patient/${a}`], ['date', 'patient']]]);
    // `action` rows are deferred: this search waits for them, and finds every read.
    const late = await catchUps(async () => {
      found = await total(`/AuditEvent?patient=${a}&action=R`);
    });
    assert.equal(found, reads);
    assert.deepEqual(late.map((c) => [...new Set(c.params)].sort()), [['action', 'patient']]);
    // Filters the index cannot vouch for read everything: unknown parameters, a system search.
    const system = await catchUps(async () => {
      assert.equal((await h.api.get(`/?_type=AuditEvent&patient=${a}`)).status, 200);
    });
    assert.deepEqual(system.map((c) => c.params), [undefined]);
  });

  it('a queue entry written without early rows (by an older build) is waited for by every search', async () => {
    // In a transaction that is rolled back: the indexer cannot take these entries meanwhile.
    const rollback = new Error('rollback');
    await assert.rejects(
      h.store.driver.transaction(async (tx) => {
        const queue = new AuditQueue(tx);
        const waiting = (patients: string[], params?: string[]) => queue.waiting(patients, params);
        await tx.run('DELETE FROM audit_index_queue');
        // (The audit worker's journal is moved into the queue first: see the end.)
        await tx.run('DELETE FROM audit_journal');
        // Queued as the append queues it: with its early patient row.
        await tx.run("INSERT INTO audit_index_queue (rid, patient, early) VALUES (900000000001, 'Patient/zz', 1)");
        await tx.run("INSERT INTO idx_reference (pid, ref, rid) VALUES (?, 'Patient/zz', 900000000001)", [paramId('AuditEvent', 'patient')]);
        assert.equal(await waiting(['Patient/zz'], ['patient', 'date']), false, 'its early rows are all this search reads');
        assert.equal(await waiting(['Patient/zz'], ['patient', 'action']), true);
        assert.equal(await waiting(['Patient/zz']), true, 'what the search reads is not known');
        await tx.run("INSERT INTO audit_index_queue (rid, patient) VALUES (900000000002, 'Patient/zz')");
        assert.equal(await waiting(['Patient/zz'], ['patient', 'date']), true, 'an older build queued it without early rows');
        assert.equal(await waiting(['Patient/yy'], ['patient', 'date']), false);
        assert.equal(await waiting(['Patient/yy'], ['patient', 'action']), false, 'found through its early patient row: not about yy');
        assert.equal(await waiting(['Patient/yy', 'Patient/zz'], ['patient', 'action']), true);
        await tx.run('INSERT INTO audit_index_queue (rid, patient) VALUES (900000000003, NULL)');
        assert.equal(await waiting(['Patient/yy'], ['patient', 'date']), true, 'about several patients, one may be yy');
        await tx.run('DELETE FROM audit_index_queue');
        assert.equal(await waiting(['Patient/yy'], ['patient', 'date']), false);
        // An event still in the journal, about anyone: every search moves the journal first.
        await tx.run(
          "INSERT INTO audit_journal (seq, id, last_updated, content, patient, early, prev_hash, hash) VALUES (900000000004, 'journaled', 0, '{}', 'Patient/zz', 1, 'x', 'y')",
        );
        assert.equal(await waiting(['Patient/yy'], ['patient', 'date']), true, 'a journaled event is waited for by every search');
        assert.equal(await waiting(['Patient/zz']), true);
        throw rollback;
      }),
      (err) => err === rollback,
    );
  });

  it('the queue is searched through its indexes, never read whole (SQLite, no planner statistics)', async function () {
    if (ENGINE !== 'sqlite') this.skip();
    const seen: [string, readonly unknown[]][] = [];
    const spy = new AuditQueue({
      get: async (sql: string, params?: readonly unknown[]) => {
        seen.push([sql, params ?? []]);
        return undefined;
      },
    } as never);
    for (const [patients, params] of [
      [['Patient/zz'], ['patient', 'date']],
      [['Patient/zz', 'Patient/yy'], ['patient', 'action']],
      [undefined, ['date']],
    ] as const) await spy.waiting(patients as readonly string[] | undefined, params);
    assert.equal(seen.length, 3, 'one round trip each');
    for (const [sql, params] of seen) {
      const plan = (await q().all<{ detail: string }>(`EXPLAIN QUERY PLAN ${sql}`, [...params])).map((r) => r.detail);
      const reads = plan.filter((d) => /audit_index_queue/.test(d));
      assert.ok(reads.length > 0, sql);
      for (const d of reads) assert.match(d, /audit_index_queue_late|INTEGER PRIMARY KEY \(rowid=\?\)/, `${sql}\n${plan.join('\n')}`);
    }
  });

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

  /** Matches of `search` run as the GET of a transaction Bundle that also writes (so it holds the writer). */
  async function matchesInTransaction(search: string): Promise<number> {
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ request: { method: 'GET', url: search } }, { fullUrl: `urn:uuid:${randomUUID()}`, resource: patient(), request: { method: 'POST', url: 'Patient' } }],
    };
    const res = await h.api.post('/', bundle);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.entry[0].resource.entry.filter((e: { search?: { mode: string } }) => e.search?.mode === 'match').length;
  }

  it('a transaction Bundle\'s AuditEvent searches catch up before the transaction takes the writer', async () => {
    await h.store.auditIndex.catchUp();
    const before = await total(`/AuditEvent?patient=${a}&action=R`);
    await unindex(await eventsAbout(a), `Patient/${a}`);
    assert.equal(await matchesInTransaction(`AuditEvent?patient=${a}&action=R&_count=1000`), before);
  });

  it("a transaction Bundle's AuditEvent search sees events committed between its catch-up and its BEGIN, on every parameter", async () => {
    await h.store.auditIndex.catchUp();
    const before = await total(`/AuditEvent?patient=${a}&action=R`);
    await h.store.auditIndex.catchUp();
    // As if committed after the catch-up: only their early rows (patient, date) written, queued.
    // The catch-up finds nothing to do, as it would have then.
    const index = h.store.auditIndex;
    const original = index.catchUp;
    index.catchUp = async () => {
      await unindexLate(await eventsAbout(a), `Patient/${a}`);
    };
    let matches: number;
    try {
      matches = await matchesInTransaction(`AuditEvent?patient=${a}&action=R&_count=1000`);
    } finally {
      index.catchUp = original;
    }
    assert.equal(matches, before, 'the action rows were built in the transaction');
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

  it('tells which index rows of the candidates a filter reads', () => {
    const reads = (type: 'AuditEvent' | 'Patient', query: [string, string][]) =>
      compileFilter(parseSearch(type, query, { strict: true, defaultCount: 20, maxCount: 100, baseUrl: 'http://x', now: Date.now() }).criteria, Date.now()).indexParams;
    assert.deepEqual(reads('AuditEvent', [['patient', 'p1'], ['date', 'ge2026'], ['date', 'le2027']]), ['patient', 'date']);
    assert.deepEqual(reads('AuditEvent', [['patient:missing', 'true'], ['patient:identifier', 'https://fhir.nhs.uk/Id/nhs-number|9000000009']]), ['patient']);
    assert.deepEqual(reads('AuditEvent', [['_id', 'x'], ['_lastUpdated', 'ge2026']]), [], 'columns');
    assert.deepEqual(reads('AuditEvent', [['patient.identifier', 'https://fhir.nhs.uk/Id/nhs-number|9000000009']]), ['patient'], "a chain reads the candidate's reference, and the target's rows");
    assert.deepEqual(reads('AuditEvent', [['patient', 'p1'], ['action', 'R']]), ['patient', 'action']);
    assert.deepEqual(reads('Patient', [['_has:AuditEvent:patient:action', 'R']]), []);
    // A patient/ scope's restriction reads the patient rows; a granular one reads what it names.
    // As the app combines the policies (app.ts): the scopes' and the consent engine's, with allOf.
    const restricted = (...scopes: string[]) => allOf(scopePolicy, openAccessPolicy).searchFilter!({ patient: 'p1', scopes } as unknown as AccessContext, 'AuditEvent');
    assert.deepEqual(restricted('patient/AuditEvent.rs')?.indexParams, ['patient']);
    assert.deepEqual(restricted('patient/AuditEvent.rs?action=R')?.indexParams?.slice().sort(), ['action', 'patient']);
  });
});
