import assert from 'node:assert/strict';
import { ChainHeadLog } from '../../server/audit/head-log';
import type { AuditEvent, Resource } from 'fhir/r4';
import { buildItems, uuidv7 } from '../../server/audit/items';
import { AuditFramer } from '../../server/store/audit-frame';
import { chainLinks, GENESIS, linkHash, readHead, verifyChain, type ChainLink } from '../../server/store/audit-chain';
import { auditAppendScript, insertIndexRowsMany, serializeAuditEvent, type SerializedAuditEvent, type Writer } from '../../server/store/write';
import { extractIndexRows } from '../../server/search/extract';
import { INDEX_TABLES } from '../../server/store/index-rows';
import { paramId } from '../../server/search/param-id';
import { PATIENT_IDS_REVISION } from '../../resources';
import { ENGINE } from '../support/db';
import { loadJson, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * Editing, deleting, reordering or slipping in rows directly in the database is caught by
 * $verify, which names the first bad link.
 */
describe(`Audit: tampering with the trail is detected (${ENGINE})`, () => {
  let h: Harness;
  let id: string;
  before(async () => {
    h = await startHarness();
    id = (await h.api.post('/Patient', patient())).body.id;
    for (let i = 0; i < 6; i++) await get(`/Patient/${id}`);
  });
  after(() => h.close());

  /**
   * A request, after which the audit journal is moved into the trail's tables: the events of a
   * request land in the journal first and are moved in the background (store/audit-journal.ts),
   * and a move in the middle of a tampering step would write links the step does not expect.
   */
  async function get(path: string): Promise<Awaited<ReturnType<Harness['api']['get']>>> {
    const res = await h.api.get(path);
    await h.store.auditIndex.materialized();
    return res;
  }
  const q = () => h.store.driver;
  async function verify(anchor?: string): Promise<Record<string, unknown>> {
    const res = await get(`/AuditEvent/$verify${anchor ? `?anchor=${anchor}` : ''}`);
    assert.equal(res.status, 200);
    const out = Object.fromEntries(res.body.parameter.map((p: Record<string, unknown>) => [p.name, p.valueBoolean ?? p.valueInteger ?? p.valueCode ?? p.valueString ?? (p.valueReference as { reference: string })?.reference]));
    const head = res.body.parameter.find((p: { name: string }) => p.name === 'head');
    if (head) out.head = Object.fromEntries(head.part.map((p: Record<string, unknown>) => [p.name, p.valueInteger ?? p.valueString]));
    return out;
  }
  type Row = Record<string, unknown>;
  /** Rows of a table, to put back after a tampering step. */
  async function snapshot(table: string, where: string, params: unknown[] = []): Promise<Row[]> {
    return q().all<Row>(`SELECT * FROM ${table} WHERE ${where}`, params);
  }
  async function putBack(table: string, rows: Row[], skipPresent = false): Promise<void> {
    for (const r of rows) {
      // SQLite hands a deleted history row's seq (its rowid) to the next version written: let it assign another.
      const cols = Object.keys(r).filter((c) => !(table === 'resource_versions' && c === 'seq' && ENGINE === 'sqlite'));
      await q().run(`INSERT INTO ${table} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})${skipPresent ? ' ON CONFLICT DO NOTHING' : ''}`, cols.map((c) => r[c]));
    }
  }
  const lastSeq = async () => Number((await q().get<{ seq: number }>('SELECT seq FROM audit_chain ORDER BY seq DESC LIMIT 1'))!.seq);
  /** The chain row of link `seq`: its event and stored content. */
  async function link(seq: number) {
    return (await q().get<{ rid: number; event_id: string; content: string }>('SELECT c.rid, c.event_id, r.content FROM audit_chain c JOIN resources r ON r.rid = c.rid WHERE c.seq = ?', [seq]))!;
  }
  /** Undo a tampering step so the next one starts from an intact chain. */
  async function restore(fn: () => Promise<void>) {
    await fn();
    await reindexTrail();
    const after = await verify();
    assert.equal(after.intact, true, `restored: ${JSON.stringify(after)}`);
  }
  /**
   * The search index of every AuditEvent indexed already, derived again from its content: an
   * event indexed while its content was tampered with has the tampered rows, which the content
   * put back no longer derives ($verify: index-missing).
   */
  async function reindexTrail() {
    await h.store.auditIndex.materialized();
    await q().transaction(async (tx) => {
      // The events indexed already, and only those: the indexer may index queued ones meanwhile
      // (on PostgreSQL, in this process, while the verification runs on a thread of its own).
      const events = await tx.all<{ rid: number; content: string }>("SELECT rid, content FROM resources WHERE type = 'AuditEvent' AND rid NOT IN (SELECT rid FROM audit_index_queue)");
      for (let i = 0; i < events.length; i += 500) {
        const rids = events.slice(i, i + 500).map((e) => Number(e.rid));
        for (const t of INDEX_TABLES) await tx.run(`DELETE FROM ${t} WHERE rid IN (${rids.map(() => '?').join(', ')})`, rids);
      }
      await insertIndexRowsMany(
        tx,
        events.map((e) => ({ rid: Number(e.rid), type: 'AuditEvent' as const, rows: extractIndexRows('AuditEvent', JSON.parse(e.content) as Resource, h.config.baseUrl) })),
      );
    });
  }

  it('is intact to begin with', async () => {
    const v = await verify();
    assert.equal(v.intact, true);
    assert.ok((v.links as number) >= 7, String(v.links));
  });

  it('several verifications at once (each on a thread of its own, one after another) all report the chain', async () => {
    const reports = await Promise.all([verify(), verify(), verify()]);
    for (const r of reports) {
      assert.equal(r.intact, true, JSON.stringify(r));
      assert.ok((r.links as number) >= 7, JSON.stringify(r));
    }
  });

  it('an edited AuditEvent: hash-mismatch at its link', async () => {
    const l = await link(3);
    const edited = l.content.replace('"outcome":"0"', '"outcome":"4"');
    assert.notEqual(edited, l.content);
    await q().run('UPDATE resources SET content = ? WHERE rid = ?', [edited, l.rid]);
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link, v.event], [false, 'hash-mismatch', 3, `AuditEvent/${l.event_id}`]);
    await restore(async () => void (await q().run('UPDATE resources SET content = ? WHERE rid = ?', [l.content, l.rid])));
  });

  it('a deleted chain row: missing-link', async () => {
    const row = (await q().get<Record<string, unknown>>('SELECT seq, rid, event_id, prev_hash, hash FROM audit_chain WHERE seq = 4'))!;
    await q().run('DELETE FROM audit_chain WHERE seq = 4');
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link], [false, 'missing-link', 4]);
    await restore(async () => void (await q().run('INSERT INTO audit_chain (seq, rid, event_id, prev_hash, hash) VALUES (?, ?, ?, ?, ?)', [row.seq, row.rid, row.event_id, row.prev_hash, row.hash])));
  });

  it('a deleted AuditEvent: event-missing at its link', async () => {
    const l = await link(5);
    const row = (await q().get<Record<string, unknown>>('SELECT rid, type, id, version_id, last_updated, deleted, content, created_by, creator_org, patients FROM resources WHERE rid = ?', [l.rid]))!;
    await q().run('DELETE FROM resources WHERE rid = ?', [l.rid]);
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link], [false, 'event-missing', 5]);
    await restore(async () => {
      await q().run('INSERT INTO resources (rid, type, id, version_id, last_updated, deleted, content, created_by, creator_org, patients) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', [
        row.rid, row.type, row.id, row.version_id, row.last_updated, row.deleted, row.content, row.created_by, row.creator_org, row.patients,
      ]);
    });
  });

  it('two links swapped: broken-link at the first of them', async () => {
    const a = (await q().get<Record<string, unknown>>('SELECT rid, event_id, prev_hash, hash FROM audit_chain WHERE seq = 2'))!;
    const b = (await q().get<Record<string, unknown>>('SELECT rid, event_id, prev_hash, hash FROM audit_chain WHERE seq = 3'))!;
    const put = (seq: number, r: Record<string, unknown>) => q().run('UPDATE audit_chain SET rid = ?, event_id = ?, prev_hash = ?, hash = ? WHERE seq = ?', [r.rid, r.event_id, r.prev_hash, r.hash, seq]);
    await q().run('UPDATE audit_chain SET rid = -1 WHERE seq = 2'); // free the unique rid while swapping
    await put(3, a);
    await put(2, b);
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link], [false, 'broken-link', 2]);
    await restore(async () => {
      await q().run('UPDATE audit_chain SET rid = -1 WHERE seq = 3');
      await put(2, a);
      await put(3, b);
    });
  });

  it('an AuditEvent slipped in without a link: not-chained', async () => {
    const l = await link(1);
    await q().run("INSERT INTO resources (type, id, version_id, last_updated, deleted, content) VALUES ('AuditEvent', 'smuggled', 1, 0, 0, ?)", [l.content.replace(l.event_id, 'smuggled')]);
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.event], [false, 'not-chained', 'AuditEvent/smuggled']);
    await restore(async () => void (await q().run("DELETE FROM resources WHERE type = 'AuditEvent' AND id = 'smuggled'")));
  });

  it('a rewritten chain (content and hash both edited): index-missing at the edited link, and with the index rewritten too, broken-link at the next', async () => {
    await h.store.auditIndex.catchUp();
    const l = await link(6);
    const edited = l.content.replace('"outcome":"0"', '"outcome":"8"');
    const row = (await q().get<{ prev_hash: string; hash: string }>('SELECT prev_hash, hash FROM audit_chain WHERE seq = 6'))!;
    const setContent = async (content: string) => {
      await q().run('UPDATE resources SET content = ? WHERE rid = ?', [content, l.rid]);
      await q().run("UPDATE resource_versions SET content = ? WHERE type = 'AuditEvent' AND id = ? AND content IS NOT NULL", [content, l.event_id]);
    };
    await setContent(edited);
    await q().run('UPDATE audit_chain SET hash = ? WHERE seq = 6', [linkHash(row.prev_hash, 6, l.event_id, edited)]);
    // Its search-index rows still say what it said: outcome 0.
    const edit = await verify();
    assert.deepEqual([edit.intact, edit.problem, edit.link], [false, 'index-missing', 6]);
    assert.match(String(edit.detail), /search-index row for outcome 8/);
    const outcome = paramId('AuditEvent', 'outcome');
    const setOutcome = (code: string) => q().run("UPDATE idx_token SET code = ? WHERE pid = ? AND rid = ? AND system = 'http://hl7.org/fhir/audit-event-outcome'", [code, outcome, l.rid]);
    assert.equal(await setOutcome('8'), 1);
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link], [false, 'broken-link', 7]);
    await restore(async () => {
      await setOutcome('0');
      await setContent(l.content);
      await q().run('UPDATE audit_chain SET hash = ? WHERE seq = 6', [row.hash]);
    });
  });

  it('the last events cut off with their links (the end of the chain): truncated at the first missing link', async () => {
    const end = await lastSeq();
    const cut = `seq > ${end - 3}`;
    const rids = (await q().all<{ rid: number }>(`SELECT rid FROM audit_chain WHERE ${cut}`)).map((r) => Number(r.rid));
    const ridList = rids.join(', ');
    const saved = {
      chain: await snapshot('audit_chain', cut),
      resources: await snapshot('resources', `rid IN (${ridList})`),
      versions: await snapshot('resource_versions', `rid IN (${ridList})`),
      queue: await snapshot('audit_index_queue', `rid IN (${ridList})`),
    };
    // What someone with write access to the tables would do: the events, their history and links.
    await q().run(`DELETE FROM audit_chain WHERE ${cut}`);
    await q().run(`DELETE FROM resources WHERE rid IN (${ridList})`);
    await q().run(`DELETE FROM resource_versions WHERE rid IN (${ridList})`);
    await q().run(`DELETE FROM audit_index_queue WHERE rid IN (${ridList})`);
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link], [false, 'truncated', end - 2]);
    // The next appends attach to the head, so the cut stays visible as the chain grows.
    const again = await verify();
    assert.deepEqual([again.intact, again.problem, again.link], [false, 'missing-link', end - 2]);
    await restore(async () => {
      await putBack('audit_chain', saved.chain);
      await putBack('resources', saved.resources);
      await putBack('resource_versions', saved.versions);
      await putBack('audit_index_queue', saved.queue);
    });
  });

  it('an edited copy of an AuditEvent in its history (what vread and _history serve): version-mismatch at its link', async () => {
    const l = await link(3);
    const [version] = await snapshot('resource_versions', "type = 'AuditEvent' AND id = ?", [l.event_id]);
    assert.ok(version, 'the history row exists');
    if (version.content !== null) {
      const edited = String(version.content).replace('"outcome":"0"', '"outcome":"8"');
      assert.notEqual(edited, version.content);
      await q().run("UPDATE resource_versions SET content = ? WHERE type = 'AuditEvent' AND id = ?", [edited, l.event_id]);
      const vread = await get(`/AuditEvent/${l.event_id}/_history/1`);
      assert.equal(vread.body.outcome, '8', 'vread serves the history row');
      const v = await verify();
      assert.deepEqual([v.intact, v.problem, v.link, v.event], [false, 'version-mismatch', 3, `AuditEvent/${l.event_id}`]);
      await restore(async () => void (await q().run("UPDATE resource_versions SET content = ? WHERE type = 'AuditEvent' AND id = ?", [version.content, l.event_id])));
    }
    // A history row turned into a deletion, or a forged second version, is caught the same way.
    await q().run("UPDATE resource_versions SET deleted = 1 WHERE type = 'AuditEvent' AND id = ?", [l.event_id]);
    const v2 = await verify();
    assert.deepEqual([v2.intact, v2.problem, v2.link], [false, 'version-mismatch', 3]);
    await restore(async () => void (await q().run("UPDATE resource_versions SET deleted = 0 WHERE type = 'AuditEvent' AND id = ?", [l.event_id])));
  });

  it('a patient\'s index rows deleted (hiding accesses from the patient\'s report): index-missing at the first such link', async () => {
    await h.store.auditIndex.catchUp();
    const ref = `Patient/${id}`;
    const first = (await q().all<{ seq: number; content: string }>('SELECT c.seq, r.content FROM audit_chain c JOIN resources r ON r.rid = c.rid ORDER BY c.seq')).find((r) =>
      r.content.includes(`"reference":"${ref}"`),
    )!;
    const pid = paramId('AuditEvent', 'patient');
    const before = (await get(`/Patient/${id}/$access-report`)).body.parameter.find((p: { name: string }) => p.name === 'count').valueInteger;
    assert.ok(before > 0);
    // The report's own event is indexed now, not by the background indexer between the snapshot
    // and the DELETE (its rows would go, unsaved, and never come back).
    await h.store.auditIndex.catchUp();
    const saved = await snapshot('idx_reference', 'pid = ? AND ref = ?', [pid, ref]);
    await q().run('DELETE FROM idx_reference WHERE pid = ? AND ref = ?', [pid, ref]);
    const hidden = (await get(`/Patient/${id}/$access-report`)).body.parameter.find((p: { name: string }) => p.name === 'count').valueInteger;
    assert.ok(hidden < before, 'the report lost the accesses whose index rows went');
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link], [false, 'index-missing', Number(first.seq)]);
    assert.match(String(v.detail), new RegExp(`not indexed under ${ref}`));
    // (Events written since have their rows: the indexer built them.)
    await restore(async () => putBack('idx_reference', saved, true));
  });

  it("an event's date row deleted (hiding it from searches by date): index-missing naming the date", async () => {
    await h.store.auditIndex.catchUp();
    const l = await link(4);
    const recorded = (JSON.parse(l.content) as AuditEvent).recorded;
    // By date alone: a patient's events by date are read through their patient-date rows (next test).
    const search = async () => (await get(`/AuditEvent?date=${recorded.slice(0, 10)}&_count=1000`)).body.entry.map((e: { resource: AuditEvent }) => e.resource.id);
    assert.ok((await search()).includes(l.event_id));
    await h.store.auditIndex.catchUp();
    const pid = paramId('AuditEvent', 'date');
    const saved = await snapshot('idx_date', 'pid = ? AND rid = ?', [pid, l.rid]);
    assert.equal(saved.length, 1);
    await q().run('DELETE FROM idx_date WHERE pid = ? AND rid = ?', [pid, l.rid]);
    assert.ok(!(await search()).includes(l.event_id), 'the search by date no longer finds it');
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link], [false, 'index-missing', 4]);
    assert.match(String(v.detail), /search-index row for date \d+ to \d+/);
    await restore(async () => putBack('idx_date', saved));
  });

  it("an event's patient-date row deleted (hiding it from its patient's searches by date): index-missing naming the pair", async () => {
    await h.store.auditIndex.catchUp();
    const l = await link(4);
    const recorded = (JSON.parse(l.content) as AuditEvent).recorded;
    const search = async () => (await get(`/AuditEvent?patient=${id}&date=${recorded.slice(0, 10)}&_sort=-date&_count=1000`)).body.entry.map((e: { resource: AuditEvent }) => e.resource.id);
    assert.ok((await search()).includes(l.event_id));
    await h.store.auditIndex.catchUp();
    const pid = paramId('AuditEvent', 'patient+date');
    const saved = await snapshot('idx_ref_date', 'pid = ? AND rid = ?', [pid, l.rid]);
    assert.deepEqual(
      saved.map((r) => [r.ref, Number(r.hi), Number(r.lo)]),
      [[`Patient/${id}`, Date.parse(recorded), Date.parse(recorded)]],
    );
    await q().run('DELETE FROM idx_ref_date WHERE pid = ? AND rid = ?', [pid, l.rid]);
    assert.ok(!(await search()).includes(l.event_id), "the patient's search by date no longer finds it");
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link], [false, 'index-missing', 4]);
    assert.match(String(v.detail), new RegExp(`search-index row for patient\\+date Patient/${id} to \\d+ to \\d+`));
    await restore(async () => putBack('idx_ref_date', saved));
  });

  it("an index row added that shows an event to another patient: index-extra naming that patient", async () => {
    await h.store.auditIndex.catchUp();
    const other = (await h.api.post('/Patient', patient({ name: [{ family: 'Other' }] }))).body.id as string;
    await h.store.auditIndex.catchUp();
    const report = async () => (await get(`/Patient/${other}/$access-report`)).body.parameter.find((p: { name: string }) => p.name === 'count').valueInteger as number;
    const before = await report();
    await h.store.auditIndex.catchUp();
    const l = await link(5);
    const pid = paramId('AuditEvent', 'patient');
    await q().run('INSERT INTO idx_reference (pid, ref, rid) VALUES (?, ?, ?)', [pid, `Patient/${other}`, l.rid]);
    // One more for the report read before (reading it is an access to the patient's data), none for
    // the row added: the report keeps the events whose content names the patient (stop 22; until
    // then the added row listed an access to someone else's record there).
    assert.equal(await report(), before + 1, "the other patient's report does not list an access to someone else's record");
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link], [false, 'index-extra', 5]);
    assert.match(String(v.detail), new RegExp(`search-index row for patient Patient/${other} that its content does not derive`));
    await restore(async () => void (await q().run('DELETE FROM idx_reference WHERE pid = ? AND ref = ? AND rid = ?', [pid, `Patient/${other}`, l.rid])));
  });

  it('the patients an event is recorded as about (what reads decide it by), edited: patients-mismatch; a row without them is intact', async () => {
    await h.store.auditIndex.catchUp();
    const l = await link(5);
    const kept = (await q().get<{ patients: string | null }>('SELECT patients FROM resources WHERE rid = ?', [l.rid]))!.patients;
    assert.deepEqual(JSON.parse(kept ?? 'null'), { r: PATIENT_IDS_REVISION, v: 1, ids: [id] }, 'the event keeps the patients its content names');
    await q().run('UPDATE resources SET patients = ? WHERE rid = ?', [JSON.stringify({ r: PATIENT_IDS_REVISION, v: 1, ids: ['someone-else'] }), l.rid]);
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link, v.event], [false, 'patients-mismatch', 5, `AuditEvent/${l.event_id}`]);
    await q().run('UPDATE resources SET patients = ? WHERE rid = ?', [JSON.stringify({ r: PATIENT_IDS_REVISION, v: 1, ids: [] }), l.rid]);
    assert.equal((await verify()).problem, 'patients-mismatch', 'about nobody, which reads would decide it as');
    // A row written before events kept them is read by parsing its content, so it is not a problem.
    await restore(async () => void (await q().run('UPDATE resources SET patients = NULL WHERE rid = ?', [l.rid])));
    await restore(async () => void (await q().run('UPDATE resources SET patients = ? WHERE rid = ?', [kept, l.rid])));
  });

  (ENGINE === 'sqlite' ? describe : describe.skip)('in the audit journal, before its events are moved into the trail (SQLite)', () => {
    const writer: Writer = { clientId: 'test-admin', organization: null };
    /**
     * Three events committed to the journal by an append script, with `tamper` in the same
     * transaction (so nothing can move them first). Without early rows: a journal row is then its
     * columns alone, to put back.
     */
    async function journalWith(tamper: (seqs: number[]) => string): Promise<{ seqs: number[]; events: SerializedAuditEvent[]; links: ChainLink[] }> {
      const head = (await readHead(q()))!;
      const events = Array.from({ length: 3 }, () => {
        const e = loadJson<AuditEvent>('ihe', 'balp', 'json', 'instances', 'AuditEvent-ex-auditBasicReadServer.json');
        return serializeAuditEvent({ ...e, id: uuidv7() }, Date.now(), h.config.baseUrl, false);
      });
      const { sql } = auditAppendScript(events, writer, head);
      const links = chainLinks(head, events).links;
      await q().script!(`${sql};\n${tamper(links.map((l) => l.seq))}`);
      return { seqs: links.map((l) => l.seq), events, links };
    }

    it('an event edited there: hash-mismatch at its link (the worker chained what it built, not what is moved)', async () => {
      const { seqs, events } = await journalWith((seqs) => `UPDATE audit_journal SET content = replace(content, '"outcome":"0"', '"outcome":"8"') WHERE seq = ${seqs[1]}`);
      const v = await verify();
      assert.deepEqual([v.intact, v.problem, v.link, v.event], [false, 'hash-mismatch', seqs[1], `AuditEvent/${events[1].id}`]);
      const read = await get(`/AuditEvent/${events[1].id}`);
      assert.equal(read.body.outcome, '8', 'what was moved is what the edit left');
      await restore(async () => void (await q().run("UPDATE resources SET content = ? WHERE type = 'AuditEvent' AND id = ?", [events[1].content, events[1].id])));
    });

    it('the patients of an event edited there: patients-mismatch at its link, where it is and once moved', async () => {
      const planted = JSON.stringify({ r: PATIENT_IDS_REVISION, v: 1, ids: ['someone-else'] });
      const { seqs, events } = await journalWith((seqs) => `UPDATE audit_journal SET patients = '${planted}' WHERE seq = ${seqs[1]}`);
      const walked = await verifyChain(q(), { localBase: h.config.baseUrl });
      assert.deepEqual([walked.ok, walked.firstProblem?.problem, walked.firstProblem?.seq], [false, 'patients-mismatch', seqs[1]], 'walked in the journal');
      const v = await verify();
      assert.deepEqual([v.intact, v.problem, v.link, v.event], [false, 'patients-mismatch', seqs[1], `AuditEvent/${events[1].id}`]);
      const moved = await q().get<{ patients: string }>("SELECT patients FROM resources WHERE type = 'AuditEvent' AND id = ?", [events[1].id]);
      assert.equal(moved?.patients, planted, 'moved as it was');
      await restore(async () => void (await q().run("UPDATE resources SET patients = ? WHERE type = 'AuditEvent' AND id = ?", [events[1].patients, events[1].id])));
    });

    it('an event deleted there: missing-link where it was', async () => {
      const { seqs, events, links } = await journalWith((seqs) => `DELETE FROM audit_journal WHERE seq = ${seqs[1]}`);
      const v = await verify();
      assert.deepEqual([v.intact, v.problem, v.link], [false, 'missing-link', seqs[1]]);
      assert.equal((await get(`/AuditEvent/${events[1].id}`)).status, 404);
      await restore(async () => {
        const e = events[1];
        await q().run(
          'INSERT INTO audit_journal (seq, id, last_updated, content, created_by, creator_org, patient, early, refs, dates, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, 0, NULL, NULL, ?, ?)',
          [seqs[1], e.id, e.lastUpdated, e.content, writer.clientId, writer.organization, e.patient, links[1].prev, links[1].hash],
        );
        await h.store.auditIndex.materialized();
      });
    });

    it('a link copied into the journal beside the chain: broken-link, stored twice', async () => {
      const l = (await q().get<{ seq: number; event_id: string; prev_hash: string; hash: string }>('SELECT seq, event_id, prev_hash, hash FROM audit_chain WHERE seq = 2'))!;
      const { content } = await link(2);
      // Walked directly: moving it (as the requests here do after each response) would fail, its event being stored already.
      await q().run("INSERT INTO audit_journal (seq, id, last_updated, content, patient, early, prev_hash, hash) VALUES (?, ?, 0, ?, '', 0, ?, ?)", [l.seq, l.event_id, content, l.prev_hash, l.hash]);
      const report = await verifyChain(q(), { localBase: h.config.baseUrl });
      await q().run('DELETE FROM audit_journal WHERE seq = 2');
      assert.deepEqual([report.ok, report.firstProblem?.problem, report.firstProblem?.seq], [false, 'broken-link', 2]);
      assert.equal((await verify()).intact, true, 'restored');
    });

    /**
     * Ten events of one request about ten patients, committed to the journal as frames and bodies
     * (store/audit-frame.ts), with `tamper` in the same transaction.
     */
    async function framedJournalWith(tamper: (seqs: number[]) => string): Promise<{ seqs: number[]; events: SerializedAuditEvent[] }> {
      const head = (await readHead(q()))!;
      const notes = Array.from({ length: 10 }, (_, i) => ({ interaction: 'search-type' as const, reference: `Consent/framed-${i}/_history/1`, patients: [`framed-${i}`] }));
      const built = buildItems([{ facts: { requestId: `framed-${uuidv7()}`, recorded: new Date().toISOString(), server: h.config.baseUrl ?? 'https://custodian.test', interaction: 'search-type', query: 'GET /Consent', status: 200 }, notes }]);
      const framer = new AuditFramer(built);
      const now = Date.now();
      const events = built.map((e) => serializeAuditEvent(e, now, h.config.baseUrl, false, framer));
      assert.equal(new Set(events.map((e) => e.framed?.frame)).size, 1, 'one frame');
      assert.ok(events.every((e) => e.framed));
      const { sql } = auditAppendScript(events, writer, head);
      const seqs = chainLinks(head, events).links.map((l) => l.seq);
      await q().script!(`${sql};\n${tamper(seqs)}`);
      return { seqs, events };
    }

    it('a frame edited there: hash-mismatch at the first of its events, and every one of them reads as edited', async () => {
      const { seqs, events } = await framedJournalWith((seqs) => `UPDATE audit_journal_frame SET head = replace(head, '"outcome":"0"', '"outcome":"8"') WHERE id = ${seqs[0]}`);
      const v = await verify();
      assert.deepEqual([v.intact, v.problem, v.link, v.event], [false, 'hash-mismatch', seqs[0], `AuditEvent/${events[0].id}`]);
      for (const e of [events[0], events[9]]) {
        const r = await get(`/AuditEvent/${e.id}`);
        assert.equal(r.body.outcome, '8');
      }
      await restore(async () => {
        for (const e of events) await q().run("UPDATE resources SET content = ? WHERE type = 'AuditEvent' AND id = ?", [e.content, e.id]);
      });
    });

    it('a body edited there: hash-mismatch at its own link', async () => {
      const { seqs, events } = await framedJournalWith((seqs) => `UPDATE audit_journal SET content = replace(content, '"display":"Person"', '"display":"Nobody"') WHERE seq = ${seqs[4]}`);
      const v = await verify();
      assert.deepEqual([v.intact, v.problem, v.link], [false, 'hash-mismatch', seqs[4]]);
      await get(`/AuditEvent/${events[4].id}`);
      await restore(async () => void (await q().run("UPDATE resources SET content = ? WHERE type = 'AuditEvent' AND id = ?", [events[4].content, events[4].id])));
    });

    it('a frame deleted there: event-missing at its first event, and the trail is not read (fail closed) until it is back', async () => {
      const frame = await framedJournalWith((seqs) => `DELETE FROM audit_journal_frame WHERE id = ${seqs[0]}`);
      // Walked directly: the requests here move the journal after each response, which now fails.
      const report = await verifyChain(q(), { localBase: h.config.baseUrl });
      assert.deepEqual([report.ok, report.firstProblem?.problem, report.firstProblem?.seq], [false, 'event-missing', frame.seqs[0]]);
      const read = await h.api.get(`/AuditEvent/${frame.events[0].id}`);
      assert.equal(read.status, 503, 'an event that cannot be moved whole is not read around');
      // So is an export of AuditEvents, whose snapshot moves the journal in first.
      const exported = await h.api.get('/$export?_type=AuditEvent', { Prefer: 'respond-async' });
      assert.equal(exported.status, 503, exported.text);
      assert.equal(exported.body.issue[0].code, 'transient');
      assert.ok(await q().get('SELECT seq FROM audit_journal WHERE seq = ?', [frame.seqs[0]]), 'nothing of the batch moved');
      await restore(async () => {
        await q().run('INSERT INTO audit_journal_frame (id, head, tail) VALUES (?, ?, ?)', [frame.seqs[0], frame.events[0].framed!.frame.head, frame.events[0].framed!.frame.tail]);
        await h.store.auditIndex.materialized();
      });
      assert.equal((await get(`/AuditEvent/${frame.events[0].id}`)).body.id, frame.events[0].id);
    });

    it('the journal is emptied by every read of the trail: nothing stays behind a read', async () => {
      const { events } = await journalWith(() => 'SELECT 1');
      assert.equal((await get(`/AuditEvent/${events[2].id}`)).status, 200);
      assert.equal(Number((await q().get<{ n: number }>('SELECT COUNT(*) AS n FROM audit_journal'))!.n), 0);
    });
  });

  it('the head deleted: nothing more is written (503, fail closed) and verification names it', async () => {
    const [head] = await snapshot('audit_chain_head', 'id = 1');
    await q().run('DELETE FROM audit_chain_head WHERE id = 1');
    const read = await get(`/Patient/${id}`);
    assert.equal(read.status, 503, 'no audit, no data');
    const report = await verifyChain(q());
    assert.deepEqual([report.ok, report.firstProblem?.problem], [false, 'head-missing']);
    await restore(async () => putBack('audit_chain_head', [head]));
  });

  it('the head edited: head-mismatch', async () => {
    const [head] = await snapshot('audit_chain_head', 'id = 1');
    await q().run('UPDATE audit_chain_head SET links = links + 1 WHERE id = 1');
    const report = await verifyChain(q());
    assert.deepEqual([report.ok, report.firstProblem?.problem, report.firstProblem?.seq], [false, 'head-mismatch', Number(head.seq)]);
    await q().run('UPDATE audit_chain_head SET links = ? WHERE id = 1', [head.links]);
    assert.equal((await verifyChain(q())).ok, true);
  });

  describe('what the database alone cannot show, and the head kept outside it does', () => {
    /** Recomputes every link from `from` on over the stored events, and the head: a consistent rewrite. */
    async function rewriteFrom(from: number): Promise<void> {
      const rows = await q().all<{ seq: number; event_id: string; content: string; prev_hash: string }>(
        'SELECT c.seq, c.event_id, r.content, c.prev_hash FROM audit_chain c JOIN resources r ON r.rid = c.rid WHERE c.seq >= ? ORDER BY c.seq',
        [from],
      );
      let prev = from === 1 ? GENESIS : (await q().get<{ hash: string }>('SELECT hash FROM audit_chain WHERE seq = ?', [from - 1]))!.hash;
      for (const r of rows) {
        const hash = linkHash(prev, Number(r.seq), r.event_id, r.content);
        await q().run('UPDATE audit_chain SET prev_hash = ?, hash = ? WHERE seq = ?', [prev, hash, r.seq]);
        prev = hash;
      }
      const last = rows.length ? Number(rows[rows.length - 1].seq) : from - 1;
      await q().run('UPDATE audit_chain_head SET seq = ?, hash = ?, links = ? WHERE id = 1', [last, prev, last]);
    }

    it('the server logs the head when it moves, at start and at shutdown, for operators to keep', async () => {
      const lines: Record<string, unknown>[] = [];
      const logger = { info: (m: string, f?: Record<string, unknown>) => lines.push({ m, ...f }), error: (m: string) => lines.push({ m }), debug: () => undefined };
      const log = new ChainHeadLog(() => h.app.gate.auditChainHead(), logger, 0);
      log.start();
      await log.publish();
      const v = (await verify()).head as { link: number; hash: string };
      assert.deepEqual(lines, [{ m: 'audit chain head', link: v.link, hash: v.hash, links: v.link }], 'one line while it stands still');
      await get(`/Patient/${id}`);
      await log.publish();
      assert.equal(lines.length, 2);
      assert.ok((lines[1].link as number) > v.link);
      await log.stop();
      assert.equal(lines.length, 3, 'and once more at shutdown');
      assert.equal((await verify(`${lines[1].link}:${lines[1].hash}`)).intact, true, 'a logged head is an anchor');
    });

    it('$verify returns the head, and a head kept from it checks out later', async () => {
      const kept = (await verify()).head as { link: number; hash: string; links: number };
      assert.equal(kept.links, kept.link);
      assert.match(kept.hash, /^[0-9a-f]{64}$/);
      await get(`/Patient/${id}`);
      const v = await verify(`${kept.link}:${kept.hash}`);
      assert.deepEqual([v.intact, v.anchor], [true, `${kept.link}:${kept.hash}`]);
      assert.equal((await get('/AuditEvent/$verify?anchor=12:nothex')).status, 400);
    });

    it('an event edited and the chain, its index and the head rewritten after it: intact to the database, anchor-mismatch against the kept head', async () => {
      await h.store.auditIndex.catchUp();
      const kept = (await verify()).head as { link: number; hash: string };
      const l = await link(2);
      const edited = l.content.replace('"outcome":"0"', '"outcome":"8"');
      await q().run('UPDATE resources SET content = ? WHERE rid = ?', [edited, l.rid]);
      await q().run("UPDATE resource_versions SET content = ? WHERE type = 'AuditEvent' AND id = ? AND content IS NOT NULL", [edited, l.event_id]);
      await rewriteFrom(2);
      // The search index still says what the event said, until it is rewritten too.
      const indexed = await verify();
      assert.deepEqual([indexed.intact, indexed.problem, indexed.link], [false, 'index-missing', 2]);
      const setOutcome = (code: string) => q().run("UPDATE idx_token SET code = ? WHERE pid = ? AND rid = ? AND system = 'http://hl7.org/fhir/audit-event-outcome'", [code, paramId('AuditEvent', 'outcome'), l.rid]);
      assert.equal(await setOutcome('8'), 1);
      assert.equal((await verify()).intact, true, 'a consistent rewrite of the whole database is not visible from inside it');
      const v = await verify(`${kept.link}:${kept.hash}`);
      assert.deepEqual([v.intact, v.problem, v.link], [false, 'anchor-mismatch', kept.link]);
      await setOutcome('0');
      await q().run('UPDATE resources SET content = ? WHERE rid = ?', [l.content, l.rid]);
      await q().run("UPDATE resource_versions SET content = ? WHERE type = 'AuditEvent' AND id = ? AND content IS NOT NULL", [l.content, l.event_id]);
      await rewriteFrom(2);
      assert.equal((await verify(`${kept.link}:${kept.hash}`)).intact, true, 'restored');
    });

    it('the end cut off and the head moved back: intact to the database, anchor-mismatch against the kept head', async () => {
      const kept = (await verify()).head as { link: number; hash: string };
      const end = await lastSeq();
      const cut = `seq > ${end - 2}`;
      const rids = (await q().all<{ rid: number }>(`SELECT rid FROM audit_chain WHERE ${cut}`)).map((r) => Number(r.rid)).join(', ');
      const saved = {
        chain: await snapshot('audit_chain', cut),
        resources: await snapshot('resources', `rid IN (${rids})`),
        versions: await snapshot('resource_versions', `rid IN (${rids})`),
        queue: await snapshot('audit_index_queue', `rid IN (${rids})`),
        head: (await snapshot('audit_chain_head', 'id = 1'))[0],
      };
      await q().run(`DELETE FROM audit_chain WHERE ${cut}`);
      await q().run(`DELETE FROM resources WHERE rid IN (${rids})`);
      await q().run(`DELETE FROM resource_versions WHERE rid IN (${rids})`);
      await q().run(`DELETE FROM audit_index_queue WHERE rid IN (${rids})`);
      const newEnd = (await q().get<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1'))!;
      await q().run('UPDATE audit_chain_head SET seq = ?, hash = ?, links = ? WHERE id = 1', [newEnd.seq, newEnd.hash, newEnd.seq]);
      assert.equal((await verifyChain(q())).ok, true, 'a cut that also moves the head back is not visible from inside the database');
      const report = await verifyChain(q(), { anchors: [{ seq: kept.link, hash: kept.hash }] });
      assert.deepEqual([report.ok, report.firstProblem?.problem, report.firstProblem?.seq], [false, 'anchor-mismatch', kept.link]);
      await putBack('audit_chain', saved.chain);
      await putBack('resources', saved.resources);
      await putBack('resource_versions', saved.versions);
      await putBack('audit_index_queue', saved.queue);
      await q().run('UPDATE audit_chain_head SET seq = ?, hash = ?, links = ? WHERE id = 1', [saved.head.seq, saved.head.hash, saved.head.links]);
      assert.equal((await verify()).intact, true, 'restored');
    });
  });
});
