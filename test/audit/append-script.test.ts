import assert from 'node:assert/strict';
import type { AuditEvent } from 'fhir/r4';
import { uuidv7 } from '../../server/audit/items';
import { readHead, verifyChain, type ChainHead } from '../../server/store/audit-chain';
import { paramId } from '../../server/search/param-id';
import { moveScript } from '../../server/store/audit-journal';
import { AuditAppendScript, auditAppendScript, serializeAuditEvent, writeTransaction, type SerializedAuditEvent, type Writer } from '../../server/store/write';
import type { ScriptParts } from '../../server/store/driver';
import sqlite3 from 'sqlite3';
import { Store } from '../../server/store/store';
import { ENGINE, freshDatabase } from '../support/db';
import { loadJson, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * SQLite's audit append as one script of literal statements (store/write.ts auditAppendScript,
 * run by Driver.script in one call to the connection), committing the events to the audit
 * journal, and the journal's move into the trail's tables (store/audit-journal.ts). Together
 * they must store exactly what the ordinary append stores; the script must attach to the chain
 * only where the chain really ends, and store nothing at all when it does not; a move stores
 * all of a batch or none of it.
 */
(ENGINE === 'sqlite' ? describe : describe.skip)('Audit: the SQLite append script', () => {
  let h: Harness;
  let patientId: string;
  const writer: Writer = { clientId: 'test-admin', organization: 'https://fhir.nhs.uk/Id/ods-organization-code|TEST1' };
  before(async () => {
    h = await startHarness();
    patientId = (await h.api.post('/Patient', patient({ name: [{ family: 'Script' }] }))).body.id;
  });
  after(() => h.close());

  const driver = () => h.store.driver;
  /** Runs an append script, then has the journal moved into the trail's tables (as any read of the trail does). */
  const script = async (sql: string) => {
    await driver().script!(sql);
    await h.store.auditIndex.materialized();
  };
  const journaled = async (ids: readonly string[]) =>
    Number((await driver().get<{ n: number | string }>(`SELECT COUNT(*) AS n FROM audit_journal WHERE id IN (${ids.map(() => '?').join(', ')})`, [...ids]))!.n);
  const head = async (): Promise<ChainHead> => (await readHead(driver()))!;

  /** A BALP read event of the spec's examples, about `patient`, with a fresh id. */
  function event(patientRef: string | undefined, extra: Partial<AuditEvent> = {}, early = true): SerializedAuditEvent {
    const e = loadJson<AuditEvent>('ihe', 'balp', 'json', 'instances', 'AuditEvent-ex-auditBasicReadServer.json');
    e.entity = (e.entity ?? []).filter((x) => !x.what?.reference?.startsWith('Patient/'));
    if (patientRef) e.entity.push({ what: { reference: patientRef }, type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1' }, role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1' } });
    return serializeAuditEvent({ ...e, ...extra, id: uuidv7() }, Date.now(), h.config.baseUrl, early);
  }

  interface Stored {
    rid: number;
    content: string;
    version_id: number;
    deleted: number;
    last_updated: number;
    created_by: string | null;
    creator_org: string | null;
  }
  /** What the store holds of each event, in the events' order: every row an append writes. */
  async function rowsOf(events: readonly SerializedAuditEvent[]) {
    const q = driver();
    const out = [];
    for (const e of events) {
      const r = await q.get<Stored>("SELECT rid, content, version_id, deleted, last_updated, created_by, creator_org FROM resources WHERE type = 'AuditEvent' AND id = ?", [e.id]);
      const versions = await q.all<{ seq: number; rid: number; version_id: number; deleted: number; method: string; content: string | null; last_updated: number }>(
        "SELECT seq, rid, version_id, deleted, method, content, last_updated FROM resource_versions WHERE type = 'AuditEvent' AND id = ?",
        [e.id],
      );
      const links = await q.all<{ seq: number; rid: number; prev_hash: string; hash: string }>('SELECT seq, rid, prev_hash, hash FROM audit_chain WHERE event_id = ?', [e.id]);
      // Queued for indexing, or (should the indexer have been quick) indexed under its patient.
      const queued = r ? await q.get<{ patient: string | null; early: number }>('SELECT patient, early FROM audit_index_queue WHERE rid = ?', [r.rid]) : undefined;
      const indexed = r ? await q.all<{ ref: string }>('SELECT ref FROM idx_reference WHERE pid = ? AND rid = ? ORDER BY ref', [paramId('AuditEvent', 'patient'), r.rid]) : [];
      // The early rows are there whether or not the indexer has run since.
      const dates = r ? await q.all<{ lo: number; hi: number }>('SELECT lo, hi FROM idx_date WHERE pid = ? AND rid = ?', [paramId('AuditEvent', 'date'), r.rid]) : [];
      const journal = await q.get<{ seq: number }>('SELECT seq FROM audit_journal WHERE id = ?', [e.id]);
      assert.equal(journal, undefined, `${e.id} is not left in the journal`);
      out.push({ resource: r, versions, links, queued, indexed, dates });
    }
    return out;
  }

  it('stores what the ordinary append stores: current rows, history rows in event order, queue entries, early index rows, chain links, the head', async () => {
    // The last of each: an event of a request about many patients, without early rows.
    const ordinary = [event(`Patient/${patientId}`), event(undefined), event(`Patient/${patientId}`), event(`Patient/${patientId}`, {}, false)];
    await writeTransaction(driver(), Date.now, h.config.baseUrl, (tx) => tx.appendSerialized(ordinary, writer));
    const before = await head();
    const scripted = [event(`Patient/${patientId}`), event(undefined), event(`Patient/${patientId}`), event(`Patient/${patientId}`, {}, false)];
    const s = auditAppendScript(scripted, writer, before);
    await script(s.sql);
    const after = await head();
    assert.deepEqual(after, { ...s.tail, links: before.links + 4 }, 'the head moved to the last new link');

    const [a, b] = [await rowsOf(ordinary), await rowsOf(scripted)];
    for (const [rows, events] of [
      [a, ordinary],
      [b, scripted],
    ] as const) {
      for (const [i, row] of rows.entries()) {
        const e = events[i];
        assert.ok(row.resource, `${e.id} stored`);
        assert.equal(row.resource.content, e.content, 'the stored text is the serialised event, byte for byte');
        assert.deepEqual(
          { v: Number(row.resource.version_id), d: Number(row.resource.deleted), t: Number(row.resource.last_updated), by: row.resource.created_by, org: row.resource.creator_org },
          { v: 1, d: 0, t: e.lastUpdated, by: writer.clientId, org: writer.organization },
        );
        assert.equal(row.versions.length, 1);
        assert.deepEqual(
          { rid: Number(row.versions[0].rid), v: Number(row.versions[0].version_id), d: Number(row.versions[0].deleted), m: row.versions[0].method, c: row.versions[0].content, t: Number(row.versions[0].last_updated) },
          { rid: Number(row.resource.rid), v: 1, d: 0, m: 'POST', c: null, t: e.lastUpdated },
        );
        assert.equal(row.links.length, 1);
        assert.equal(Number(row.links[0].rid), Number(row.resource.rid));
        if (row.queued) assert.deepEqual({ ...row.queued, early: Number(row.queued.early) }, { patient: e.patient, early: e.early ? 1 : 0 }, 'queued under its patient, saying whether its early rows are written');
        if (e.early) {
          assert.deepEqual(row.indexed.map((x) => x.ref), e.patient ? [e.patient] : [], 'indexed under its patient at once');
          assert.deepEqual(row.indexed.map((x) => x.ref), e.early.reference.map((x) => x.ref).sort());
          assert.deepEqual(
            row.dates.map((d) => [Number(d.lo), Number(d.hi)]),
            e.early.date.map((d) => [d.lo, d.hi]),
            'its recorded time indexed at once',
          );
          assert.equal(row.dates.length, 1);
        } else if (row.queued) {
          assert.deepEqual([row.indexed, row.dates], [[], []], 'an event of a request about many patients waits whole');
        }
      }
      // History rows, links and rids follow the events' order.
      const seqs = rows.map((r) => Number(r.versions[0].seq));
      assert.deepEqual([...seqs].sort((x, y) => x - y), seqs, 'history rows in event order');
      const links = rows.map((r) => Number(r.links[0].seq));
      assert.deepEqual(
        links,
        links.map((_, i) => links[0] + i),
        'consecutive links',
      );
    }
    assert.equal(Number(b[0].links[0].seq), before.seq + 1);
    assert.equal(b[0].links[0].prev_hash, before.hash, 'the first link attaches to the head');
    const report = await verifyChain(driver(), { localBase: h.config.baseUrl });
    assert.equal(report.ok, true, JSON.stringify(report.firstProblem));
  });

  it('a tail the chain has moved past is refused, and nothing of the script is stored', async () => {
    const stale = await head();
    // Another writer appends first (an audit source's POST, another process).
    const posted = loadJson<Record<string, unknown>>('ihe', 'balp', 'json', 'instances', 'AuditEvent-ex-auditBasicReadServer.json');
    delete posted.id;
    assert.equal((await h.api.post('/AuditEvent', posted)).status, 201);
    const moved = await head();
    assert.ok(moved.seq > stale.seq);
    const events = [event(`Patient/${patientId}`), event(`Patient/${patientId}`)];
    await assert.rejects(script(auditAppendScript(events, writer, stale).sql), /NOT NULL constraint failed: audit_journal\.prev_hash/);
    for (const row of await rowsOf(events)) assert.deepEqual(row, { resource: undefined, versions: [], links: [], queued: undefined, indexed: [], dates: [] });
    assert.deepEqual(await head(), moved, 'the head is where the other writer left it');
    // From the real tail it is stored.
    await script(auditAppendScript(events, writer, moved).sql);
    assert.equal((await rowsOf(events)).filter((r) => r.resource).length, 2);
    assert.equal((await verifyChain(driver(), { localBase: h.config.baseUrl })).ok, true);
  });

  it('a tail with the head seq but another hash is refused (a head rewritten under the worker)', async () => {
    const real = await head();
    const events = [event(`Patient/${patientId}`)];
    await assert.rejects(script(auditAppendScript(events, writer, { seq: real.seq, hash: 'f'.repeat(64) }).sql), /NOT NULL constraint failed/);
    assert.equal((await rowsOf(events))[0].resource, undefined);
    assert.deepEqual(await head(), real);
  });

  it('quotes, backslashes and characters outside ASCII are stored byte for byte; NUL is refused before SQL is built', async () => {
    const odd = "O'Brien ''; DROP TABLE resources; -- \\ \u00e9\u4e2d\ud83d\ude00 '";
    const events = [event(`Patient/${patientId}`, { outcomeDesc: odd })];
    const quoted: Writer = { clientId: "client'); DELETE FROM audit_chain; --", organization: null };
    await script(auditAppendScript(events, quoted, await head()).sql);
    const [row] = await rowsOf(events);
    assert.equal(row.resource!.content, events[0].content);
    assert.equal((JSON.parse(row.resource!.content) as AuditEvent).outcomeDesc, odd);
    assert.equal(row.resource!.created_by, quoted.clientId);
    assert.equal(row.resource!.creator_org, null);
    assert.equal((await verifyChain(driver(), { localBase: h.config.baseUrl })).ok, true);
    assert.throws(() => auditAppendScript([event(undefined)], { clientId: 'a\0b', organization: null }, { seq: 0, hash: '0'.repeat(64) }), /NUL/);
  });

  it('a group larger than one statement holds (1,201 events) is stored in event order and chained', async () => {
    const before = await head();
    const events = Array.from({ length: 1201 }, (_, i) => event(i % 3 ? `Patient/${patientId}` : undefined));
    await script(auditAppendScript(events, writer, before).sql);
    const seqs = await driver().all<{ id: string; seq: number; link: number }>(
      `SELECT v.id, v.seq, c.seq AS link FROM resource_versions v JOIN audit_chain c ON c.event_id = v.id WHERE v.type = 'AuditEvent' AND c.seq > ? ORDER BY v.seq`,
      [before.seq],
    );
    assert.deepEqual(
      seqs.map((r) => r.id),
      events.map((e) => e.id),
      'history rows in event order',
    );
    assert.deepEqual(
      seqs.map((r) => Number(r.link)),
      events.map((_, i) => before.seq + 1 + i),
    );
    // Every event queued for indexing under its patient, or indexed already.
    for (const [i, row] of (await rowsOf(events)).entries()) {
      if (row.queued) assert.equal(row.queued.patient, events[i].patient, `event ${i} queued under its patient`);
      else assert.deepEqual(row.indexed.map((x) => x.ref), events[i].patient ? [events[i].patient] : [], `event ${i} neither queued nor indexed`);
    }
    assert.equal((await verifyChain(driver(), { localBase: h.config.baseUrl })).ok, true);
  });

  /** Parts given ready-made (Driver.script's ScriptParts); `between` runs before each part after the first is handed out. */
  function partsOf(sqls: readonly string[], between?: () => void): ScriptParts {
    let k = 0;
    return {
      next: () => {
        if (k > 0) between?.();
        const sql = sqls[k++];
        return { sql, last: k === sqls.length };
      },
    };
  }
  /** AuditEvents stored: in the trail's tables or in the journal. */
  const stored = async () =>
    Number((await driver().get<{ n: number | string }>("SELECT (SELECT COUNT(*) FROM resources WHERE type = 'AuditEvent') + (SELECT COUNT(*) FROM audit_journal) AS n"))!.n);

  it('in parts (AuditAppendScript): the rows and links one script stores, in one transaction that no reader sees before its COMMIT', async () => {
    const before = await head();
    const events = Array.from({ length: 450 }, (_, i) => event(i % 3 ? `Patient/${patientId}` : undefined, {}, i % 2 === 0));
    const whole = auditAppendScript(events, writer, before);
    const built = new AuditAppendScript(writer, before);
    const chunks = [events.slice(0, 200), events.slice(200, 400), events.slice(400)];
    const sqls = chunks.map((c, i) => built.part(c, i === chunks.length - 1));
    assert.throws(() => built.part([event(undefined)], true), /finished/, 'nothing may follow the part that moves the head');
    assert.deepEqual(built.tail, whole.tail, 'the same links as one script of all the events');
    const count = await stored();
    // The reader connection, between parts: the parts run, uncommitted. A read is only issued
    // there: it runs when SQLite's thread pool gets to it, which (with the audit worker moving
    // and indexing in the same pool) may be after the COMMIT. Either way it sees all of the
    // script or none of it, never the parts before the last.
    const seen: Promise<number>[] = [];
    await driver().script!(partsOf(sqls, () => seen.push(stored())));
    const views = await Promise.all(seen);
    assert.equal(views.length, 2);
    for (const n of views) assert.ok(n === count || n === count + 450, `a reader saw ${n - count} of the 450 events: part of the script before its COMMIT`);
    assert.equal(await stored(), count + 450);
    assert.deepEqual(await head(), { ...whole.tail, links: before.links + 450 });
    await h.store.auditIndex.materialized();
    const rows = await rowsOf(events);
    assert.deepEqual(
      rows.map((r) => r.resource?.content),
      events.map((e) => e.content),
    );
    const seqs = rows.map((r) => Number(r.versions[0].seq));
    assert.deepEqual([...seqs].sort((x, y) => x - y), seqs, 'history rows in event order, across parts');
    assert.deepEqual(
      rows.map((r) => Number(r.links[0].seq)),
      events.map((_, i) => before.seq + 1 + i),
      'consecutive links, across parts',
    );
    assert.equal(rows[200].links[0].prev_hash, rows[199].links[0].hash, 'the second part attaches to the first');
    assert.equal((await verifyChain(driver(), { localBase: h.config.baseUrl })).ok, true);
  });

  it('in parts: a later part that fails, one that holds NUL, or one that cannot be built rolls back the parts before it', async () => {
    const real = await head();
    const count = await stored();
    const events = [event(`Patient/${patientId}`), event(`Patient/${patientId}`), event(`Patient/${patientId}`)];
    const twoParts = () => {
      const s = new AuditAppendScript(writer, real);
      return [s.part(events.slice(0, 2), false), s.part(events.slice(2), true)];
    };
    const [first, second] = twoParts();
    // The second part's event takes the first part's link.
    const broken = second.replace(`(${real.seq + 3}, '${events[2].id}'`, `(${real.seq + 1}, '${events[2].id}'`);
    assert.notEqual(broken, second);
    await assert.rejects(driver().script!(partsOf([first, broken])), /UNIQUE constraint failed: audit_journal\.seq/);
    await assert.rejects(driver().script!(partsOf([first, second.replace(`'${events[2].id}'`, `'${events[2].id}\0'`)])), /NUL/);
    let k = 0;
    const unbuildable: ScriptParts = {
      next: () => {
        if (k++ === 0) return { sql: first, last: false };
        throw new Error('this part cannot be built');
      },
    };
    await assert.rejects(driver().script!(unbuildable), /cannot be built/);
    assert.equal(await stored(), count, 'nothing of the first part stayed');
    assert.deepEqual(await head(), real);
    // The connection was left with no transaction open: the same parts, intact, commit.
    await driver().script!(partsOf(twoParts()));
    assert.equal(await stored(), count + 3);
    await h.store.auditIndex.materialized();
    assert.equal((await verifyChain(driver(), { localBase: h.config.baseUrl })).ok, true);
  });

  it('a search returning 450 patients: the worker commits their 450 events in parts, one per patient, with no fallback, and the chain verifies', async function () {
    this.timeout(60000);
    // Patients of test-admin's own organisation (it is their custodian: it may see them all).
    const ODS = 'https://fhir.nhs.uk/Id/ods-organization-code';
    const patients = Array.from({ length: 450 }, (_, i) => ({ resourceType: 'Patient' as const, id: `parts-${i}`, name: [{ family: 'Partsworth' }], managingOrganization: { identifier: { system: ODS, value: 'TADMIN' } } }));
    await h.store.transaction((tx) => tx.createMany('Patient', patients, { clientId: 'test-admin', organization: `${ODS}|TADMIN` }));
    const health = async () => {
      await new Promise((resolve) => setTimeout(resolve, 1100)); // /healthz answers from its last check for a second
      return JSON.parse((await h.anonymous.get('/healthz')).text) as { auditAppendFallbacks: number };
    };
    // A read first: a write's events are appended by its own transaction, which moves the chain
    // past the tail the worker knows, and the worker's next script falls back once (see above).
    assert.equal((await h.api.get('/Patient/parts-0')).status, 200);
    const before = await health();
    const requestId = `parts-search-${uuidv7()}`;
    const res = await h.api.get('/Patient?family=Partsworth&_count=500', { 'X-Request-Id': requestId });
    assert.equal(res.status, 200);
    assert.equal(res.body.entry?.length, 450, JSON.stringify(res.body).slice(0, 600));
    assert.equal((await health()).auditAppendFallbacks, before.auditAppendFallbacks, 'appended by the script, not the ordinary way');
    const events = (await h.api.get(`/AuditEvent?entity:identifier=${requestId}&_count=1000`)).body.entry.map((e: { resource: AuditEvent }) => e.resource) as AuditEvent[];
    const about = events.map((e) => e.entity!.find((x) => x.role?.code === '1')?.what?.reference).sort();
    assert.deepEqual(about, patients.map((p) => `Patient/${p.id}`).sort(), 'one event per patient');
    assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
  });

  it('a move that cannot store every event of its batch stores none of them: nothing is dropped silently, nothing leaves the journal', async () => {
    await h.store.auditIndex.materialized();
    const real = await head();
    const events = [event(`Patient/${patientId}`), event(`Patient/${patientId}`), event(undefined)];
    const { sql } = auditAppendScript(events, writer, real);
    const lo = real.seq + 1;
    const hi = real.seq + 3;
    // Committed to the journal, and (in the same transaction, so the worker cannot move them
    // first) one of them already stored under its id: its current row cannot be inserted.
    await driver().script!(`${sql};\nINSERT INTO resources (type, id, version_id, last_updated, deleted, content) VALUES ('AuditEvent', '${events[1].id}', 1, 0, 0, '{}')`);
    await assert.rejects(driver().script!(moveScript(lo, hi, 3)), /UNIQUE constraint failed/);
    assert.equal(await journaled(events.map((e) => e.id)), 3, 'the batch is still in the journal');
    assert.equal(Number((await driver().get<{ n: number }>(`SELECT COUNT(*) AS n FROM audit_chain WHERE seq BETWEEN ${lo} AND ${hi}`))!.n), 0, 'no link of it moved');
    // A batch whose rows are not all there (counted 4, holds 3): refused by the count checks.
    // (The collision is removed in the same transaction, so nothing else can move them meanwhile.)
    const collision = `DELETE FROM resources WHERE type = 'AuditEvent' AND id = '${events[1].id}'`;
    await assert.rejects(driver().script!(`${collision};\n${moveScript(lo, hi, 4)}`), /NOT NULL constraint failed: audit_chain_head\.links/);
    assert.equal(await journaled(events.map((e) => e.id)), 3);
    await driver().run(collision);
    await h.store.auditIndex.materialized();
    assert.equal((await rowsOf(events)).filter((r) => r.resource && r.links.length === 1 && r.versions.length === 1).length, 3);
    assert.equal((await verifyChain(driver(), { localBase: h.config.baseUrl })).ok, true);
  });

  it('a script is refused whole when it holds NUL (it would end before its COMMIT)', async () => {
    const real = await head();
    const events = [event(`Patient/${patientId}`)];
    const { sql } = auditAppendScript(events, writer, real);
    await assert.rejects(script(sql.replace(`'${events[0].id}'`, `'${events[0].id}\0'`)), /NUL/);
    assert.equal((await rowsOf(events))[0].resource, undefined);
    await script(sql);
    assert.ok((await rowsOf(events))[0].resource, 'the connection was left with no transaction open');
  });

  it('the worker appends after an audit source moved the chain: every read is on the trail and the chain verifies', async () => {
    const health = async () => {
      await new Promise((resolve) => setTimeout(resolve, 1100)); // /healthz answers from its last check for a second
      return JSON.parse((await h.anonymous.get('/healthz')).text) as { auditCommits: number; auditAppendFallbacks: number };
    };
    const count = async () => {
      await h.store.auditIndex.materialized();
      return Number((await driver().get<{ n: number | string }>("SELECT COUNT(*) AS n FROM resources WHERE type = 'AuditEvent'"))!.n);
    };
    const posted = loadJson<Record<string, unknown>>('ihe', 'balp', 'json', 'instances', 'AuditEvent-ex-auditBasicReadServer.json');
    delete posted.id;
    const start = await count();
    let n = 0;
    const read = async () => {
      const requestId = `script-fallback-${n++}`;
      assert.equal((await h.api.get(`/Patient/${patientId}`, { 'X-Request-Id': requestId })).status, 200);
    };
    // Two reads first: the worker's last commit is then a script, and it knows the chain's end.
    for (let i = 0; i < 2; i++) await read();
    const before = await health();
    assert.equal((await h.api.post('/AuditEvent', posted)).status, 201);
    // The next read's script finds the chain moved: appended the ordinary way; the one after is a script again.
    for (let i = 0; i < 2; i++) await read();
    const after = await health();
    assert.deepEqual(
      { commits: after.auditCommits - before.auditCommits, fallbacks: after.auditAppendFallbacks - before.auditAppendFallbacks },
      { commits: 2, fallbacks: 1 },
    );
    for (let i = 0; i < 4; i++) {
      await read();
      assert.equal((await h.api.post('/AuditEvent', posted)).status, 201);
    }
    // Eight reads, five posted events, and the create's own event for each post.
    assert.ok((await count()) - start >= 18, `${(await count()) - start} events stored`);
    for (let i = 0; i < n; i++) {
      const found = (await h.api.get(`/AuditEvent?entity:identifier=script-fallback-${i}`)).body.entry?.length ?? 0;
      assert.equal(found, 1, `read ${i} is on the trail once`);
    }
    assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
  });
});

(ENGINE === 'sqlite' ? describe : describe.skip)('Audit: an append script that cannot begin', () => {
  it('a database locked by another process: refused after the busy timeout, nothing left open, the next script commits', async () => {
    const db = await freshDatabase({ lockTimeoutMs: 200 });
    if (db.config.dialect !== 'sqlite') throw new Error('sqlite only');
    const store = await Store.open(db.config, { now: Date.now });
    const other = new sqlite3.Database(db.config.storage);
    const exec = (sql: string) => new Promise<void>((resolve, reject) => other.exec(sql, (err) => (err ? reject(err) : resolve())));
    try {
      const writer: Writer = { clientId: 'c', organization: null };
      const e = serializeAuditEvent({ resourceType: 'AuditEvent', id: uuidv7(), type: { code: 'rest' }, recorded: new Date().toISOString(), agent: [], source: { observer: { display: 'x' } } } as AuditEvent, Date.now(), undefined);
      await exec('BEGIN IMMEDIATE');
      await assert.rejects(store.driver.script!(auditAppendScript([e], writer, (await readHead(store.driver))!).sql), /SQLITE_BUSY/);
      await exec('ROLLBACK');
      await store.driver.script!(auditAppendScript([e], writer, (await readHead(store.driver))!).sql);
      await store.auditIndex.materialized();
      assert.equal((await store.driver.get<{ n: number }>("SELECT COUNT(*) AS n FROM resources WHERE type = 'AuditEvent'"))!.n, 1);
      assert.equal((await verifyChain(store.driver)).ok, true);
    } finally {
      await new Promise<void>((resolve) => other.close(() => resolve()));
      await store.close();
      await db.drop();
    }
  });
});
