import assert from 'node:assert/strict';
import type { AuditEvent } from 'fhir/r4';
import { buildItems, uuidv7 } from '../../server/audit/items';
import { readHead } from '../../server/store/audit-chain';
import { AuditFramer } from '../../server/store/audit-frame';
import { AuditJournal } from '../../server/store/audit-journal';
import type { Driver } from '../../server/store/driver';
import { takeSnapshot } from '../../server/store/snapshot';
import { auditAppendScript, serializeAuditEvent } from '../../server/store/write';
import { ENGINE } from '../support/db';
import { loadJson, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * What a search for some patients moves out of the audit journal (store/audit-journal.ts): all
 * of it when it could hold an event about one of them, nothing otherwise. The count is kept by
 * the thread that appends to the journal; here over a driver that records what is asked of it.
 */
describe('Audit: the journal moves for the patients searched for', () => {
  /** A driver with a journal of `rows` (seq, queue key) and nothing else: moves delete from it. */
  function fakeDriver(rows: { seq: number; patient: string | null }[]) {
    const asked: string[] = [];
    /** The rows a statement's `seq IN (…)` names, or undefined when it names none. */
    const named = (sql: string) => {
      const m = /seq IN \(([\d, ]+)\)/.exec(sql);
      if (!m) return undefined;
      const seqs = new Set(m[1].split(', ').map(Number));
      return rows.filter((r) => seqs.has(r.seq));
    };
    const driver = {
      script: async (sql: unknown) => {
        asked.push('move');
        const m = /DELETE FROM audit_journal WHERE seq BETWEEN (\d+) AND (\d+)/.exec(String(sql));
        if (m) rows.splice(0, rows.length, ...rows.filter((r) => r.seq < Number(m[1]) || r.seq > Number(m[2])));
        const picked = /DELETE FROM audit_journal WHERE/.test(String(sql)) ? named(String(sql).slice(String(sql).indexOf('DELETE FROM audit_journal WHERE'))) : undefined;
        if (picked) rows.splice(0, rows.length, ...rows.filter((r) => !picked.includes(r)));
      },
      all: async (sql: string) => {
        asked.push(sql.slice(0, 40));
        if (/^SELECT seq, patient FROM audit_journal ORDER BY seq$/.test(sql)) return rows.map((r) => ({ ...r }));
        const byKey = new Map<string | null, { patient: string | null; n: number; lo: number; hi: number }>();
        const limit = /LIMIT (\d+)/.exec(sql);
        for (const r of rows.slice(0, limit ? Number(limit[1]) : undefined)) {
          const g = byKey.get(r.patient) ?? { patient: r.patient, n: 0, lo: r.seq, hi: r.seq };
          g.n++;
          g.lo = Math.min(g.lo, r.seq);
          g.hi = Math.max(g.hi, r.seq);
          byKey.set(r.patient, g);
        }
        return [...byKey.values()];
      },
      get: async (sql: string, params?: unknown[]) => {
        asked.push(sql.slice(0, 40));
        if (/MAX\(seq\)/.test(sql)) return { seq: rows.length ? Math.max(...rows.map((r) => r.seq)) : null };
        const picked = named(sql);
        if (picked && /COUNT\(\*\) AS n/.test(sql)) {
          const seqs = picked.map((r) => r.seq);
          return { n: picked.length, lo: seqs.length ? Math.min(...seqs) : null, hi: seqs.length ? Math.max(...seqs) : null, refs: 0, dates: 0, pair0: 0, framed: 0 };
        }
        if (picked) return picked[0] ? { seq: picked[0].seq } : undefined;
        const first = rows.find((r) => r.seq <= Number(params?.[0]));
        return first ? { seq: first.seq } : undefined;
      },
    };
    return { driver: driver as unknown as Driver, asked, rows };
  }

  it('counts what it holds when it starts, and what is appended; moves only the events of the patients searched for', async () => {
    const { driver, asked, rows } = fakeDriver([
      { seq: 1, patient: 'Patient/a' },
      { seq: 2, patient: '' },
    ]);
    const journal = new AuditJournal(driver);
    await journal.load();
    asked.length = 0;
    await journal.drainFor(['Patient/b']);
    assert.equal(asked.length, 0, 'nothing about b: not even a query');
    rows.push({ seq: 3, patient: 'Patient/b' }, { seq: 4, patient: 'Patient/c' }, { seq: 5, patient: 'Patient/b' });
    journal.journaled(['Patient/b', 'Patient/c', 'Patient/b'], 3);
    await journal.drainFor(['Patient/b', 'Patient/d']);
    assert.ok(asked.includes('move'), 'b is there: moved');
    assert.deepEqual(
      rows.map((r) => r.seq),
      [1, 2, 4],
      'both of b\'s events, and nobody else\'s',
    );
    asked.length = 0;
    await journal.drainFor(['Patient/b']);
    assert.equal(asked.length, 0, 'what was moved is no longer counted');
    await journal.drainFor(['Patient/a', 'Patient/c']);
    assert.deepEqual(
      rows.map((r) => r.seq),
      [2],
      'a\'s from before the start and c\'s',
    );
    await journal.drain();
    assert.deepEqual(rows, []);
    asked.length = 0;
    await journal.drainFor(['Patient/a', 'Patient/b', 'Patient/c']);
    assert.equal(asked.length, 0, 'the journal is empty, and known to be');
  });

  it('an event about several patients (key null) could be about anyone: it is moved for every search', async () => {
    const { driver, asked, rows } = fakeDriver([{ seq: 7, patient: null }]);
    const journal = new AuditJournal(driver);
    await journal.load();
    await journal.drainFor(['Patient/z']);
    assert.ok(asked.includes('move'));
    assert.deepEqual(rows, []);
  });

  it('a batch taken meanwhile by a transaction of the main thread (moveJournalIn): the move stands down, and the count follows', async () => {
    const { driver, rows } = fakeDriver([{ seq: 1, patient: 'Patient/a' }]);
    const script = driver.script!;
    (driver as { script: typeof script }).script = async () => {
      rows.splice(0, rows.length); // the main thread's transaction moved the whole journal first
      throw new Error('NOT NULL constraint failed: audit_chain_head.links');
    };
    const journal = new AuditJournal(driver);
    await journal.load();
    await journal.drainFor(['Patient/a']);
    const asked: string[] = [];
    (driver as { all: unknown }).all = async (sql: string) => {
      asked.push(sql);
      return [];
    };
    await journal.drainFor(['Patient/a']);
    assert.deepEqual(asked, [], 'no longer counted: nothing asked');
  });

  it('what a transaction of the main thread moved stops being counted at the next move that finds the journal empty', async () => {
    const { driver, rows } = fakeDriver([{ seq: 1, patient: null }]);
    const journal = new AuditJournal(driver);
    await journal.load();
    rows.splice(0, rows.length); // moved by moveJournalIn: the worker was not told
    await journal.move();
    const before = rows.length;
    await journal.drainFor(['Patient/q']);
    assert.equal(rows.length, before);
    let asked = 0;
    (driver as { get: unknown }).get = async () => {
      asked++;
      return undefined;
    };
    await journal.drainFor(['Patient/q']);
    assert.equal(asked, 0, 'the several-patients key is gone: a search for q asks nothing');
  });

  it('a move that fails leaves the count as it was: the next search for the patient moves again', async () => {
    const { driver, rows } = fakeDriver([{ seq: 1, patient: 'Patient/a' }]);
    let fail = true;
    const script = driver.script!;
    (driver as { script: typeof script }).script = async (sql) => {
      if (fail) throw new Error('disk full');
      return script(sql);
    };
    // The audit worker fails on any rejection nobody handles (audit-worker.ts): the failed move
    // must reach the search that asked for it, and nothing else.
    const unhandled: unknown[] = [];
    const listener = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', listener);
    try {
      const journal = new AuditJournal(driver);
      await journal.load();
      await assert.rejects(journal.drainFor(['Patient/a']), /disk full/);
      await new Promise((resolve) => setTimeout(resolve, 10));
      assert.deepEqual(unhandled, [], 'no rejection left unhandled');
      fail = false;
      await journal.drainFor(['Patient/a']);
      assert.deepEqual(rows, []);
    } finally {
      process.off('unhandledRejection', listener);
    }
  });
});

/**
 * Through the server, with the audit worker's background moves held (AuditThreadOptions.holdJournal):
 * every read of the trail finds the events still in the journal, and a search for other patients
 * leaves it as it is.
 */
(ENGINE === 'sqlite' ? describe : describe.skip)('Audit: every read of the trail sees the events still in the journal (SQLite)', () => {
  let h: Harness;
  let a: string;
  let b: string;
  before(async () => {
    h = await startHarness({ holdAuditJournal: true });
    a = (await h.api.post('/Patient', patient({ name: [{ family: 'JournalA' }] }))).body.id;
    b = (await h.api.post('/Patient', patient({ name: [{ family: 'JournalB' }] }))).body.id;
    // The writes appended to the chain themselves: the worker's next commit finds the chain moved
    // and appends the ordinary way; from the one after, its events go to the journal.
    await h.api.get(`/Patient/${a}`);
  });
  after(() => h.close());

  const journalSize = async () => Number((await h.store.driver.get<{ n: number }>('SELECT COUNT(*) AS n FROM audit_journal'))!.n);
  /**
   * Reads Patient `id`; resolves with the id of its AuditEvent, which the test checks is still in
   * the journal. (After a write, which appends to the chain itself, the worker's next commit finds
   * the chain moved and appends the ordinary way: then the read is made once more.)
   */
  async function journaledRead(id: string, again = true): Promise<string> {
    const requestId = `journal-${uuidv7()}`;
    assert.equal((await h.api.get(`/Patient/${id}`, { 'X-Request-Id': requestId })).status, 200);
    const row = await h.store.driver.get<{ id: string }>('SELECT id FROM audit_journal WHERE content LIKE ?', [`%${requestId}%`]);
    if (!row && again) return journaledRead(id, false);
    assert.ok(row, 'the read\'s event is still in the journal');
    return row.id;
  }
  const entries = (res: { body: { entry?: { resource: AuditEvent }[] } }) => (res.body.entry ?? []).map((e) => e.resource);

  it('a search for a patient with nothing journaled moves nothing; one for a patient with events there finds them', async () => {
    const event = await journaledRead(a);
    const size = await journalSize();
    assert.equal((await h.api.get(`/AuditEvent?patient=${b}&_count=200`)).status, 200);
    assert.ok((await journalSize()) >= size, 'nothing moved for a search about b');
    const found = entries(await h.api.get(`/AuditEvent?patient=${a}&_sort=-date&_count=200`));
    assert.ok(found.some((e) => e.id === event), 'the search about a moved it and found it');
  });

  it('a search for a patient moves that patient\'s events out of the journal and leaves everyone else\'s; the chain holds across both', async () => {
    const first = await journaledRead(a);
    const other = await journaledRead(b);
    const second = await journaledRead(a);
    const inJournal = async (id: string) => (await h.store.driver.get('SELECT seq FROM audit_journal WHERE id = ?', [id])) !== undefined;
    const found = entries(await h.api.get(`/AuditEvent?patient=${a}&date=ge2020-01-01&_sort=-date&_count=200`));
    assert.ok(found.some((e) => e.id === first) && found.some((e) => e.id === second), 'both of a\'s reads are found');
    assert.equal(await inJournal(first), false);
    assert.equal(await inJournal(second), false);
    assert.equal(await inJournal(other), true, 'b\'s read stays in the journal');
    // The chain's links are now partly in audit_chain past links still journaled: $verify reads them as one sequence.
    const links = await h.store.driver.get<{ moved: number; journaled: number }>(
      'SELECT (SELECT seq FROM audit_chain WHERE event_id = ?) AS moved, (SELECT seq FROM audit_journal WHERE id = ?) AS journaled',
      [second, other],
    );
    assert.ok(Number(links!.moved) > Number(links!.journaled), 'a link moved out past one left in the journal');
    assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
    const onlyB = entries(await h.api.get(`/AuditEvent?patient=${b}&_count=200`));
    assert.ok(onlyB.some((e) => e.id === other), 'the search for b moves and finds b\'s');
    assert.ok(!onlyB.some((e) => e.id === first || e.id === second), 'and none of a\'s');
    assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
    const rid = async (id: string) => Number((await h.store.driver.get<{ rid: number }>("SELECT rid FROM resources WHERE type = 'AuditEvent' AND id = ?", [id]))!.rid);
    assert.ok((await rid(second)) < (await rid(other)), 'moved in the order they were searched for, not journaled');
  });

  it('a search for a patient whose journaled events share frames with others\' moves the whole journal (frames go oldest first)', async () => {
    const family = `Partial${uuidv7().slice(0, 8)}`;
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push((await h.api.post('/Patient', patient({ name: [{ family }] }))).body.id);
    await journaledRead(a); // the writes chained themselves: the next commit goes to the journal
    const requestId = `partial-${uuidv7()}`;
    assert.equal((await h.api.get(`/Patient?family=${family}&_count=50`, { 'X-Request-Id': requestId })).body.entry.length, 12);
    const framed = Number((await h.store.driver.get<{ n: number }>('SELECT COUNT(*) AS n FROM audit_journal WHERE frame IN (SELECT id FROM audit_journal_frame WHERE tail LIKE ?)', [`%${requestId}%`]))!.n);
    assert.equal(framed, 12, 'one framed event per patient, in the journal');
    const unframed = await journaledRead(b);
    const found = entries(await h.api.get(`/AuditEvent?patient=${ids[3]}&_count=200`));
    assert.equal(found.filter((e) => e.entity?.some((x) => x.what?.identifier?.value === requestId)).length, 1, 'that patient\'s event of the search is found');
    // Whatever is journaled now came after the search began (its own event).
    assert.ok(await h.store.driver.get("SELECT rid FROM resources WHERE type = 'AuditEvent' AND id = ?", [unframed]), 'the whole journal moved, b\'s read too');
    assert.equal(Number((await h.store.driver.get<{ n: number }>('SELECT COUNT(*) AS n FROM audit_journal WHERE frame IS NOT NULL'))!.n), 0, 'every framed event');
    assert.equal(Number((await h.store.driver.get<{ n: number }>('SELECT COUNT(*) AS n FROM audit_journal_frame'))!.n), 0, 'and their frames');
    assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
  });

  it('read and vread by id, type and system history, _summary=count', async () => {
    const event = await journaledRead(a);
    assert.equal((await h.api.get(`/AuditEvent/${event}`)).status, 200);
    const again = await journaledRead(a);
    assert.equal((await h.api.get(`/AuditEvent/${again}/_history/1`)).status, 200);
    const third = await journaledRead(b);
    const history = (await h.api.get('/AuditEvent/_history?_count=1000')).body.entry.map((e: { resource: AuditEvent }) => e.resource.id);
    assert.ok(history.includes(third), 'type history');
    const fourth = await journaledRead(b);
    const system = (await h.api.get('/_history?_count=1000')).body.entry.map((e: { resource?: AuditEvent }) => e.resource?.id);
    assert.ok(system.includes(fourth), 'system history');
    await journaledRead(b);
    const stored = async () => Number((await h.store.driver.get<{ n: number }>("SELECT (SELECT COUNT(*) FROM resources WHERE type = 'AuditEvent') + (SELECT COUNT(*) FROM audit_journal) AS n"))!.n);
    const before = await stored();
    const counted = (await h.api.get('/AuditEvent?_summary=count')).body.total;
    assert.equal(counted, before, 'every stored event counted, the journal\'s too');
  });

  it('$access-report, _revinclude and a transaction Bundle\'s read', async () => {
    const event = await journaledRead(a);
    const inJournal = async (id: string) => (await h.store.driver.get('SELECT seq FROM audit_journal WHERE id = ?', [id])) !== undefined;
    const report = (await h.api.get(`/Patient/${a}/$access-report?_count=1000`)).body.parameter.find((p: { name: string }) => p.name === 'count').valueInteger;
    assert.ok(report > 0);
    assert.equal(await inJournal(event), false, 'the report moved the journal before reading the trail');
    assert.ok(await h.store.driver.get("SELECT rid FROM resources WHERE type = 'AuditEvent' AND id = ?", [event]));
    const revinclude = await journaledRead(a);
    const bundle = (await h.api.get(`/Patient?_id=${a}&_revinclude=AuditEvent:patient&_count=1000`)).body.entry.map((e: { resource: { id: string } }) => e.resource.id);
    assert.ok(bundle.includes(revinclude), '_revinclude');
    const inTransaction = await journaledRead(b);
    const tx = await h.api.post('/', { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'GET', url: `AuditEvent/${inTransaction}` } }] });
    assert.equal(tx.status, 200, JSON.stringify(tx.body).slice(0, 400));
    assert.equal(tx.body.entry[0].response.status.slice(0, 3), '200');
  });

  it('$verify walks the journal where it is, without moving it', async () => {
    await journaledRead(b);
    const size = await journalSize();
    assert.ok(size > 0);
    const verify = (await h.api.get('/AuditEvent/$verify')).body.parameter;
    assert.equal(verify[0].valueBoolean, true, JSON.stringify(verify));
    assert.ok((await journalSize()) >= size, 'nothing moved');
  });

  it('a search about many patients is journaled as frames and bodies, and moved out whole', async () => {
    const family = `Framed${uuidv7().slice(0, 8)}`;
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push((await h.api.post('/Patient', patient({ name: [{ family }] }))).body.id);
    await journaledRead(a); // the writes chained themselves: the next commit goes to the journal
    const requestId = `framed-${uuidv7()}`;
    const search = await h.api.get(`/Patient?family=${family}&_count=50`, { 'X-Request-Id': requestId });
    assert.equal(search.body.entry.length, 12);
    const rows = await h.store.driver.all<{ id: string; seq: number; frame: number | null; body: number; head: number }>(
      'SELECT j.id, j.seq, j.frame, length(j.content) AS body, length(f.head) + length(f.tail) AS head FROM audit_journal j LEFT JOIN audit_journal_frame f ON f.id = j.frame WHERE j.frame IN (SELECT id FROM audit_journal_frame WHERE tail LIKE ?) ORDER BY j.seq',
      [`%${requestId}%`],
    );
    assert.equal(rows.length, 12, 'one event per patient, each in the journal');
    assert.equal(new Set(rows.map((r) => r.frame)).size, 1, 'one frame');
    assert.equal(rows[0].frame, rows[0].seq, 'keyed by its first event');
    for (const r of rows) assert.ok(r.body * 4 < r.head, `a row keeps its own ${r.body} bytes, the frame the other ${r.head}`);
    // $verify hashes the journal's rows as their whole JSON, and so do the moves: it holds before and after.
    assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
    // Moved in two parts: the frame stays while events of it are left.
    const journal = new AuditJournal(h.store.driver);
    while (Number((await h.store.driver.get<{ n: number }>('SELECT COUNT(*) AS n FROM audit_journal WHERE seq < ?', [rows[5].seq]))!.n) > 0) await journal.move(1);
    assert.ok(await h.store.driver.get('SELECT id FROM audit_journal_frame WHERE id = ?', [rows[0].frame]), 'the frame is kept for the events still journaled');
    const found = entries(await h.api.get(`/AuditEvent?_id=${rows.map((r) => r.id).join(',')}&_count=50`));
    assert.equal(found.length, 12);
    assert.equal(await h.store.driver.get('SELECT id FROM audit_journal_frame WHERE id = ?', [rows[0].frame]), undefined, 'moved out: its frame is gone');
    for (const e of found) {
      const stored = (await h.store.driver.get<{ content: string }>("SELECT content FROM resources WHERE type = 'AuditEvent' AND id = ?", [e.id]))!.content;
      assert.equal(stored, JSON.stringify(JSON.parse(stored)), 'whole, as JSON.stringify writes it');
      assert.ok(stored.includes(requestId) && stored.includes('"code":"search-type"'));
      const patients = e.entity!.filter((x) => x.type?.code === '1').map((x) => x.what!.reference!.slice('Patient/'.length));
      assert.equal(patients.length, 1);
      assert.ok(ids.includes(patients[0]));
    }
    assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
  });

  it('frames that alternate (refused and permitted patients) are moved one event at a time: no frame goes while an event names it', async () => {
    const refusal = { effect: 'deny' as const, reason: 'national-opt-out' as const, detail: 'opted out', consents: [] };
    const notes = Array.from({ length: 14 }, (_, i) => ({ interaction: 'search-type' as const, reference: `Consent/alt-${i}/_history/1`, patients: [`alt-${i}`], ...(i % 3 === 1 ? { decision: refusal } : {}) }));
    const built = buildItems([{ facts: { requestId: `alt-${uuidv7()}`, recorded: new Date().toISOString(), server: 'https://custodian.test', interaction: 'search-type', query: 'GET /Consent', status: 200 }, notes }]);
    const framer = new AuditFramer(built);
    const now = Date.now();
    const events = built.map((e) => serializeAuditEvent(e, now, undefined, false, framer));
    const frames = events.map((e) => e.framed!.frame);
    assert.ok(frames.filter((f, i) => i > 0 && frames[i - 1] !== f).length >= 8, 'the frames alternate');
    await h.store.auditIndex.materialized();
    const head = (await readHead(h.store.driver))!;
    await h.store.driver.script!(auditAppendScript(events, { clientId: 'test', organization: null }, head).sql);
    const journal = new AuditJournal(h.store.driver);
    for (let left = events.length; left > 0; left--) {
      const dangling = await h.store.driver.get('SELECT j.seq FROM audit_journal j LEFT JOIN audit_journal_frame f ON f.id = j.frame WHERE j.frame IS NOT NULL AND f.id IS NULL');
      assert.equal(dangling, undefined, `with ${left} events left, each names a frame that is there`);
      assert.equal(await journal.move(1), 1);
    }
    assert.equal(Number((await h.store.driver.get<{ n: number }>('SELECT COUNT(*) AS n FROM audit_journal_frame'))!.n), 0, 'every frame gone with its last event');
    for (const e of events) assert.equal((await h.store.driver.get<{ content: string }>("SELECT content FROM resources WHERE type = 'AuditEvent' AND id = ?", [e.id]))!.content, e.content);
    assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
  });

  it('an export snapshot holds every event committed before it (they are moved in its transaction)', async () => {
    await journaledRead(a);
    const snapshot = await takeSnapshot(h.store.driver, Date.now, { auditEvents: true });
    assert.equal(await journalSize(), 0);
    const unsnapshotted = await h.store.driver.get<{ n: number }>("SELECT COUNT(*) AS n FROM resource_versions WHERE type = 'AuditEvent' AND seq > ?", [snapshot.seq]);
    assert.equal(Number(unsnapshotted!.n), 0, 'every event so far is at or below the snapshot');
  });

  it("an export snapshot's instant is before every append the worker has not yet committed (they commit after it, stamped before it)", async () => {
    // The main thread holds the writer, so the worker cannot commit the read's events.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let holding!: () => void;
    const isHolding = new Promise<void>((r) => (holding = r));
    const tx = h.store.driver.transaction(async () => {
      holding();
      await held;
    });
    await isHolding;
    const started = Date.now();
    const read = h.api.get(`/Patient/${a}`);
    const thread = h.store.auditThread!;
    let stamp: number | undefined;
    for (let i = 0; i < 500 && stamp === undefined; i++) {
      await new Promise((r) => setTimeout(r, 2));
      stamp = thread.oldestInFlight();
    }
    // An export of AuditEvents asked for now takes its snapshot once the writer is free: before
    // the worker commits the read's events, or after.
    const kickoff = h.api.get('/$export?_type=AuditEvent', { Prefer: 'respond-async' });
    await new Promise((r) => setTimeout(r, 50));
    release();
    await tx;
    assert.ok(stamp !== undefined && stamp >= started, 'the read\'s append is in flight, stamped when it was handed over');
    assert.equal((await kickoff).status, 202);
    assert.equal((await read).status, 200);
    await h.store.auditIndex.materialized();
    const job = (await h.store.driver.get<{ snapshot_seq: number; transaction_time: number }>('SELECT snapshot_seq, transaction_time FROM export_jobs ORDER BY created_at DESC LIMIT 1'))!;
    const missed = await h.store.driver.get<{ id: string }>(
      "SELECT v.id FROM resource_versions v JOIN resources r ON r.rid = v.rid WHERE v.type = 'AuditEvent' AND v.seq > ? AND r.last_updated <= ? LIMIT 1",
      [job.snapshot_seq, job.transaction_time],
    );
    assert.equal(missed, undefined, 'no event stamped at or before the export\'s transactionTime is above its snapshot');
    // What the snapshot does with it (its own transaction cannot be taken while this test holds the writer).
    const snapshot = await takeSnapshot(h.store.driver, () => stamp! + 5000, { auditEvents: true, appendsSince: () => stamp });
    assert.equal(snapshot.time, stamp - 1);
    assert.equal((await takeSnapshot(h.store.driver, () => stamp! + 5000, { auditEvents: false, appendsSince: () => stamp })).time, stamp + 4999, 'only a snapshot of AuditEvents waits for them');
    assert.equal(thread.oldestInFlight(), undefined, 'answered, so no longer in flight');
  });

  it('exports of AuditEvents asked for while searches across many patients commit their events: none misses an event stamped before its instant', async () => {
    for (let i = 0; i < 150; i++) await h.api.post('/Patient', patient({ name: [{ family: `Many${i}` }] }));
    await h.store.auditIndex.materialized();
    for (let round = 0; round < 15; round++) {
      const [search, kickoff] = await Promise.all([h.api.get('/Patient?_count=200'), h.api.get('/$export?_type=AuditEvent', { Prefer: 'respond-async' })]);
      assert.equal(search.status, 200);
      assert.equal(kickoff.status, 202);
    }
    await h.store.auditIndex.materialized();
    const missed = await h.store.driver.get<{ id: string; job: string }>(
      "SELECT v.id, j.id AS job FROM export_jobs j JOIN resource_versions v ON v.type = 'AuditEvent' AND v.seq > j.snapshot_seq JOIN resources r ON r.rid = v.rid AND r.last_updated <= j.transaction_time LIMIT 1",
    );
    assert.equal(missed, undefined, `export ${missed?.job} misses AuditEvent/${missed?.id}: stamped at or before its transactionTime, above its snapshot`);
  });
});

/** Through the server, with background moves as in service. */
(ENGINE === 'sqlite' ? describe : describe.skip)('Audit: searches see events committed to the journal (SQLite)', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  it('each read is found at once by a search for its patient', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await h.api.post('/Patient', patient({ name: [{ family: `Journal${i}` }] }))).body.id);
    for (let round = 0; round < 5; round++) {
      for (const id of ids) {
        const requestId = `journal-${round}-${id}-${uuidv7()}`;
        assert.equal((await h.api.get(`/Patient/${id}`, { 'X-Request-Id': requestId })).status, 200);
        const found = (await h.api.get(`/AuditEvent?patient=${id}&_sort=-date&_count=200`)).body.entry.map((e: { resource: AuditEvent }) => e.resource) as AuditEvent[];
        assert.ok(
          found.some((e) => e.entity?.some((x) => x.what?.identifier?.value === requestId)),
          `round ${round}: the read of Patient/${id} is found by the search that follows it`,
        );
      }
    }
  });

  it('an audit source\'s event and the server\'s own are both there, the chain intact', async () => {
    const posted = loadJson<Record<string, unknown>>('ihe', 'balp', 'json', 'instances', 'AuditEvent-ex-auditBasicReadServer.json');
    delete posted.id;
    const created = await h.api.post('/AuditEvent', posted);
    assert.equal(created.status, 201);
    assert.equal((await h.api.get(`/AuditEvent/${created.body.id}`)).status, 200);
    assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
  });
});
