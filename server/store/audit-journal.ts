import { definitions, pairCode } from '../../resources';
import { paramId } from '../search/param-id';
import { JOURNAL_CONTENT } from './audit-frame';
import type { Driver, Queryable } from './driver';

/**
 * The audit journal (SQLite): where the audit worker commits the trail's own events before
 * their responses leave, and from where they are moved into the trail's tables.
 *
 * Why: an audited read must not wait for more than its event's commit. A journal row holds the
 * whole event (its stored JSON, byte for byte; the events of a request about many patients share
 * a frame, store/audit-frame.ts) and its chain link (seq, prev_hash, hash, the
 * head moved past it in the same transaction), so at COMMIT the event is durable and as
 * tamper-evident as it will ever be: $verify recomputes the same links from the same content.
 * What it is read through (its current row in `resources`, its history row, its index queue
 * entry and early index rows, its `audit_chain` link) is derived from that row, and costs as
 * much again to write: measured on the bench (stop 16), storing the events whole in a journal
 * took 445-454 µs of server CPU per audited read, storing them with all of those rows 570-604.
 *
 * So the rows are made later (move()), in one transaction per batch that inserts them from the
 * journal with plain INSERT ... SELECT (no event crosses into JavaScript) and deletes the batch
 * from it: an event is in the journal or in the trail's tables, never both, never neither. A
 * crash loses nothing (the journal is committed; the move is retried). Edits to a journal row
 * before it is moved are caught like edits after: the moved content is hashed against the link
 * the worker computed from what it built, and $verify walks the journal's links where they are
 * (store/audit-chain.ts verifyChain), without moving them.
 *
 * The price is on the other side: every other read of the trail (read, vread, history, search
 * and what it includes, $access-report) first moves what the journal holds
 * (AuditIndex.materialized, and catchUp before searches), and an export's snapshot and a
 * transaction that reads AuditEvents move it in their own transaction (moveJournalIn), or they
 * would miss events already committed. The audit worker moves it in the background as the
 * indexer indexes: when the machine has CPU to spare, and whatever the load past the indexer's
 * lag bound.
 */

/**
 * A move commits without waiting for an fsync (Driver.script): it only derives rows from journal
 * rows committed (and synced) before it, in one transaction that also deletes them, so a power cut
 * that loses it leaves them in the journal, to be moved again. What it saves is the writer's time:
 * appends wait behind every move.
 */
const NOT_DURABLE = { durable: false } as const;

/** Events moved per transaction: the move holds the writer, so audit commits wait behind it. */
export const MOVE_BATCH = 1000;

export class AuditJournal {
  /** The move under way (moves run one at a time). */
  private moving: Promise<number> = Promise.resolve(0);
  /**
   * The seqs of the journaled events of each queue key (`Patient/123`, '' for none, null for
   * several), oldest first: what a search for some patients asks before moving anything, and
   * which events it moves (drainFor). Kept by the one thread that appends to the journal and
   * moves it, from what it appended and moved, and read from the journal when that thread starts
   * (load): it may hold events already gone (moved by a transaction of the main thread: a
   * needless move), never miss one that is there. Its counts are what `changed` is told.
   */
  private readonly seqs = new Map<string | null, number[]>();
  /** The newest seq journaled that this thread knows of. */
  private last = 0;

  constructor(
    private readonly driver: Driver,
    /**
     * Told of every change to the count (`reset`: the whole of it, from load()), before whatever
     * made it is answered: the audit worker mirrors it to the main thread (AuditThread), so that
     * a search there asks the worker only when the journal could hold its patients' events.
     */
    private readonly changed?: (delta: JournalCount, reset: boolean) => void,
  ) {
    if (!driver.script) throw new Error('the audit journal is SQLite\'s (it needs Driver.script)');
  }

  /** Reads which events the journal holds, by queue key (at the start of the thread that appends to it). */
  async load(): Promise<void> {
    this.seqs.clear();
    for (const r of await this.driver.all<{ seq: number | string; patient: string | null }>('SELECT seq, patient FROM audit_journal ORDER BY seq')) this.add(r.patient, Number(r.seq));
    this.changed?.([...this.seqs].map(([key, list]) => [key, list.length]), true);
  }

  /** Events just committed to the journal: their queue keys, the first of them at seq `first`, the others after it in order. */
  journaled(keys: readonly (string | null)[], first: number): void {
    keys.forEach((key, i) => this.add(key, first + i));
    this.changed?.(keys.map((k) => [k, 1]), false);
  }

  private add(key: string | null, seq: number): void {
    let list = this.seqs.get(key);
    if (!list) this.seqs.set(key, (list = []));
    list.push(seq);
    if (seq > this.last) this.last = seq;
  }

  /** Stops counting the events of `keys` that `gone` says are no longer journaled. */
  private forget(keys: Iterable<string | null>, gone: (seq: number) => boolean): void {
    const delta: [string | null, number][] = [];
    for (const key of new Set(keys)) {
      const list = this.seqs.get(key);
      if (!list) continue;
      const kept = list.filter((seq) => !gone(seq));
      if (kept.length === list.length) continue;
      if (kept.length) this.seqs.set(key, kept);
      else this.seqs.delete(key);
      delta.push([key, kept.length - list.length]);
    }
    if (delta.length) this.changed?.(delta, false);
  }

  /**
   * Resolves when every event journaled before the call that could be about one of `patients`
   * has been moved. Those of the patients alone (movePatients), when the journal holds no event
   * about several patients (one could be about them): a search for one patient does not move
   * what a loaded server has journaled about everyone else, which holds the writer while every
   * audited request waits. All of the journal otherwise, and nothing if it holds none of theirs.
   */
  async drainFor(patients: readonly string[]): Promise<void> {
    if (this.seqs.has(null)) return this.drain();
    const theirs = patients.filter((p) => this.seqs.has(p));
    if (theirs.length === 0) return;
    if ((await this.moveFor(theirs)) === undefined) await this.drain();
  }

  /** Patients whose events searches wait to see moved, for the move not yet begun. */
  private readonly wanted = new Set<string>();
  private nextMove: Promise<number | undefined> | undefined;

  /**
   * The move of these patients' events: the next one to begin, shared by every search that asks
   * before it begins (one transaction for them all, as appends share commits).
   */
  private moveFor(patients: readonly string[]): Promise<number | undefined> {
    for (const p of patients) this.wanted.add(p);
    if (!this.nextMove) {
      const next = this.moving.catch(() => 0).then(() => {
        this.nextMove = undefined;
        const wanted = [...this.wanted];
        this.wanted.clear();
        return this.movePatients(wanted);
      });
      this.nextMove = next;
      // A failure reaches the searches waiting for this move (they await `next`); the chain of
      // moves only orders them, and a rejection left on it would be unhandled (the audit worker
      // fails on one), so the next move starts after it either way.
      this.moving = next.then(
        (n) => n ?? 0,
        () => 0,
      );
    }
    return this.nextMove;
  }

  /**
   * Moves the journaled events of these patients, and no other, in one transaction; resolves with
   * how many it moved, or undefined when it cannot (an event of theirs is framed: frames are
   * moved oldest first, with the events that share them, so the whole journal must move).
   * Out of the journal's order, which nothing needs: a move gives its events their rids and
   * history `seq`s then, in chain order within it, and the chain itself is read by its own `seq`
   * wherever each link is ($verify reads the chain's links and the journal's as one sequence).
   */
  private async movePatients(patients: readonly string[]): Promise<number | undefined> {
    const taken = patients.flatMap((p) => this.seqs.get(p) ?? []);
    if (taken.length === 0) return 0;
    const picked = new Set(taken);
    const batch = await this.driver.get<BatchCounts & { framed: number | string }>(`SELECT ${countColumns('j')}, COUNT(j.frame) AS framed FROM audit_journal j WHERE ${seqIn('j', taken)}`);
    if (Number(batch?.framed ?? 0) > 0) return undefined;
    const n = Number(batch?.n ?? 0);
    if (n > 0) {
      try {
        await this.driver.script!(batchScript({ ...summed([batch!]), seqs: taken }), NOT_DURABLE);
      } catch (err) {
        // Moved meanwhile by a transaction of the main thread (it takes the whole journal): done.
        if (await this.driver.get(`SELECT seq FROM audit_journal j WHERE ${seqIn('j', taken)} LIMIT 1`)) throw err;
      }
    }
    this.forget(patients, (seq) => picked.has(seq));
    return n;
  }

  /**
   * Moves the oldest `limit` events of the journal into the trail's tables in one transaction;
   * resolves with how many it moved. Moves are run one after another.
   */
  move(limit = MOVE_BATCH, upTo?: number): Promise<number> {
    const next = this.moving.catch(() => 0).then(() => this.moveBatch(limit, upTo));
    this.moving = next;
    return next;
  }

  /**
   * Resolves when every event journaled before the call has been moved. Concurrent drains share
   * the moves: each moves what is left up to where it began, after the move under way.
   */
  async drain(): Promise<void> {
    const top = await this.driver.get<{ seq: number | string | null }>('SELECT MAX(seq) AS seq FROM audit_journal');
    const last = Number(top?.seq ?? 0);
    // Nothing there: one move finds nothing, and so clears what is still counted (moveBatch).
    if (!last) return void (await this.move());
    while (await this.driver.get('SELECT seq FROM audit_journal WHERE seq <= ? LIMIT 1', [last])) await this.move(MOVE_BATCH, last);
  }

  /**
   * One move. Only this thread adds to the journal (its rows come after `upTo`), and it moves one
   * batch at a time; a write transaction of the main thread may take the whole journal
   * (moveJournalIn), so the batch read here may be gone by the time its script runs.
   */
  private async moveBatch(limit: number, upTo: number | undefined): Promise<number> {
    // Known before the look: committed before it, so in the journal then unless moved since.
    const known = this.last;
    const groups = await this.driver.all<BatchCounts & { patient: string | null }>(
      `SELECT patient, ${countColumns('b')} FROM (SELECT seq, patient, refs, dates FROM audit_journal${upTo === undefined ? '' : ` WHERE seq <= ${Math.floor(upTo)}`} ORDER BY seq LIMIT ${Math.max(1, Math.floor(limit))}) b GROUP BY patient`,
    );
    if (groups.length === 0) {
      // The journal is empty: what was counted before the look is not there (a transaction of the
      // main thread moved it, or another connection removed it); events counted since, committed
      // meanwhile, stay counted. No other move runs meanwhile: moves are one at a time.
      if (upTo === undefined) this.forget([...this.seqs.keys()], (seq) => seq <= known);
      return 0;
    }
    const batch = summed(groups);
    const { n, lo, hi } = batch;
    try {
      await this.driver.script!(batchScript(batch), NOT_DURABLE);
    } catch (err) {
      // Moved meanwhile by a transaction of the main thread (it takes the whole journal): done.
      if (await this.driver.get('SELECT seq FROM audit_journal WHERE seq BETWEEN ? AND ? LIMIT 1', [lo, hi])) throw err;
      this.forget(groups.map((g) => g.patient), (seq) => seq <= hi);
      return 0;
    }
    // The batch is the journal's oldest events: whatever is counted at or before its last is gone.
    this.forget(groups.map((g) => g.patient), (seq) => seq <= hi);
    return n;
  }
}

/** Changes to the journal's count of events by queue key: [key, how many more (or fewer)]. */
export type JournalCount = readonly (readonly [string | null, number])[];

/** Applies changes to a count of events by queue key (a key at zero or below is dropped). */
export function applyCount(keys: Map<string | null, number>, entries: JournalCount): void {
  for (const [key, n] of entries) {
    const left = (keys.get(key) ?? 0) + n;
    if (left > 0) keys.set(key, left);
    else keys.delete(key);
  }
}

/** Events in the journal, over any connection. */
export async function journalBacklog(q: Pick<Queryable, 'get'>): Promise<number> {
  return Number((await q.get<{ n: number | string }>('SELECT COUNT(*) AS n FROM audit_journal'))?.n ?? 0);
}

/**
 * The statements that move the journal's events `lo`..`hi` (`n` of them, with `refs` early
 * reference rows, `dates` early date rows and `pairs[i]` rows of the i-th reference-date pair in
 * all) into the trail's tables and delete them from
 * it: the rows store/write.ts appendSerialized writes, in the same order (current rows and
 * history rows in chain order, so within a move rids and history `seq`s are too).
 */
export function moveScript(lo: number, hi: number, n: number, refs = 0, dates = 0, pairs: readonly number[] = PAIRS.map(() => 0)): string {
  return batchScript({ lo, hi, n, refs, dates, pairs });
}

function batchScript(batch: Batch): string {
  return moveStatements(batch).join(';\n');
}

/**
 * Inside a write transaction on SQLite (which holds the writer, so nothing is journaled
 * meanwhile): moves the whole journal, so that what the transaction reads next holds every
 * AuditEvent committed before it (an export's snapshot, a transaction Bundle's reads of
 * AuditEvents). The audit worker's count of the journal is left too high, which costs a needless
 * move, never a missed event, until its next move finds the journal empty (or the batch it read
 * gone).
 */
export async function moveJournalIn(q: Queryable): Promise<number> {
  const batch = await q.get<BatchCounts>(`SELECT ${countColumns('j')} FROM audit_journal j`);
  const n = Number(batch?.n ?? 0);
  if (!n) return 0;
  for (const statement of moveStatements(summed([batch!]))) await q.run(statement);
  return n;
}

/** What a move must insert of some journal rows (countColumns), and the rows' seq range. */
type BatchCounts = Record<string, number | string | null>;

interface Batch {
  readonly lo: number;
  readonly hi: number;
  /** Events. */
  readonly n: number;
  /** Early reference rows, date rows, and rows of each reference-date pair (PAIRS). */
  readonly refs: number;
  readonly dates: number;
  readonly pairs: readonly number[];
  /** The events' seqs, when they are not all of the journal's between `lo` and `hi` (AuditJournal.movePatients; none of them framed). */
  readonly seqs?: readonly number[];
}

/** A condition on journal rows `j`: seq is one of `seqs`. */
function seqIn(j: string, seqs: readonly number[]): string {
  if (!seqs.length || !seqs.every(Number.isSafeInteger)) throw new Error('journal seqs must be integers');
  return `${j}.seq IN (${seqs.join(', ')})`;
}

/** The aggregate columns of BatchCounts over journal rows `j` (which has `seq`, `refs` and `dates`). */
function countColumns(j: string): string {
  return `COUNT(*) AS n, MIN(${j}.seq) AS lo, MAX(${j}.seq) AS hi, SUM(json_array_length(${j}.refs)) AS refs, SUM(json_array_length(${j}.dates)) AS dates${PAIRS.map((p, i) => `, SUM((SELECT COUNT(*) FROM ${pairRows(p, j)})) AS pair${i}`).join('')}`;
}

/** The batch of several groups' counts. */
function summed(groups: readonly BatchCounts[]): Batch {
  const sum = (column: string) => groups.reduce((total, g) => total + Number(g[column] ?? 0), 0);
  return {
    lo: Math.min(...groups.map((g) => Number(g.lo))),
    hi: Math.max(...groups.map((g) => Number(g.hi))),
    n: sum('n'),
    refs: sum('refs'),
    dates: sum('dates'),
    pairs: PAIRS.map((_, i) => sum(`pair${i}`)),
  };
}

/** The AuditEvent's reference-date pairs (idx_ref_date), with their index keys. */
const PAIRS = (definitions.AuditEvent.referenceDatePairs ?? []).map((p) => ({ pid: paramId('AuditEvent', pairCode(p)), ref: paramId('AuditEvent', p.reference), date: paramId('AuditEvent', p.date) }));

/** The early reference and date rows of journal rows `j` that make a pair's rows: `a` the reference, `d` the date (JSON [pid, ref], [pid, lo, hi]). */
function pairRows(p: (typeof PAIRS)[number], j: string): string {
  return `json_each(${j}.refs) a CROSS JOIN json_each(${j}.dates) d WHERE json_extract(a.value, '$[0]') = ${p.ref} AND json_extract(d.value, '$[0]') = ${p.date}`;
}

function moveStatements({ lo, hi, n, refs, dates, pairs, seqs }: Batch): string[] {
  if (![lo, hi, n, refs, dates, ...pairs].every(Number.isSafeInteger)) throw new Error('journal bounds must be integers');
  const range = seqs ? seqIn('j', seqs) : `j.seq BETWEEN ${lo} AND ${hi}`;
  // Every statement must insert exactly as many rows as the batch has: the head's NOT NULL
  // `links` refuses any other count, and the whole move is rolled back.
  const inserted = (count: number) => `UPDATE audit_chain_head SET links = CASE WHEN changes() = ${count} THEN links END WHERE id = 1`;
  const moved = inserted(n);
  const events = `audit_journal j CROSS JOIN resources r ON r.type = 'AuditEvent' AND r.id = j.id WHERE ${range}`;
  return [
    // A row whose frame is gone is not moved, which fails the move (fail closed; $verify names it).
    `INSERT INTO resources (type, id, version_id, last_updated, deleted, content, created_by, creator_org, patients) SELECT 'AuditEvent', j.id, 1, j.last_updated, 0, ${JOURNAL_CONTENT}, j.created_by, j.creator_org, j.patients FROM audit_journal j LEFT JOIN audit_journal_frame f ON f.id = j.frame WHERE ${range} AND (j.frame IS NULL OR f.id IS NOT NULL) ORDER BY j.seq`,
    moved,
    `INSERT INTO resource_versions (rid, type, id, version_id, last_updated, deleted, method, content) SELECT r.rid, 'AuditEvent', r.id, 1, r.last_updated, 0, 'POST', NULL FROM ${events} ORDER BY j.seq`,
    moved,
    `INSERT INTO audit_index_queue (rid, patient, early) SELECT r.rid, j.patient, j.early FROM ${events}`,
    moved,
    `INSERT INTO idx_reference (pid, ref, rid) SELECT json_extract(x.value, '$[0]'), json_extract(x.value, '$[1]'), r.rid FROM audit_journal j CROSS JOIN json_each(j.refs) x CROSS JOIN resources r ON r.type = 'AuditEvent' AND r.id = j.id WHERE ${range} AND j.refs IS NOT NULL`,
    inserted(refs),
    `INSERT INTO idx_date (pid, lo, hi, rid) SELECT json_extract(x.value, '$[0]'), json_extract(x.value, '$[1]'), json_extract(x.value, '$[2]'), r.rid FROM audit_journal j CROSS JOIN json_each(j.dates) x CROSS JOIN resources r ON r.type = 'AuditEvent' AND r.id = j.id WHERE ${range} AND j.dates IS NOT NULL`,
    inserted(dates),
    // The reference-date pairs' rows (store/index-rows.ts), from the same early rows.
    ...PAIRS.flatMap((p, i) => [
      `INSERT INTO idx_ref_date (pid, ref, hi, lo, rid) SELECT ${p.pid}, json_extract(a.value, '$[1]'), json_extract(d.value, '$[2]'), json_extract(d.value, '$[1]'), r.rid FROM audit_journal j CROSS JOIN resources r ON r.type = 'AuditEvent' AND r.id = j.id CROSS JOIN ${pairRows(p, 'j')} AND ${range}`,
      inserted(pairs[i]),
    ]),
    `INSERT INTO audit_chain (seq, rid, event_id, prev_hash, hash) SELECT j.seq, r.rid, j.id, j.prev_hash, j.hash FROM ${events}`,
    moved,
    `DELETE FROM audit_journal WHERE ${seqs ? seqIn('audit_journal', seqs) : `seq BETWEEN ${lo} AND ${hi}`}`,
    moved,
    // Some events picked out of the journal: none is framed (movePatients), no frame goes.
    ...(seqs
      ? []
      : [
          // The batch's frames, but the one the first event left behind may still use: a request's
          // events can straddle two batches, and a frame's events are consecutive from the one that
          // keys it (AuditFramer reuses only the previous event's frame), and the journal is moved oldest first.
          `DELETE FROM audit_journal_frame WHERE id <= ${hi} AND id IS NOT (SELECT frame FROM audit_journal ORDER BY seq LIMIT 1)`,
        ]),
  ];
}
