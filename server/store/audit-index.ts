import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import type { Resource } from 'fhir/r4';
import { extractIndexRows } from '../search/extract';
import { paramId } from '../search/param-id';
import { journalBacklog, type AuditJournal } from './audit-journal';
import { limitClause, type Dialect, type Driver, type Queryable } from './driver';
import { EARLY_AUDIT_PARAMS, indexRowsScript, insertIndexRowsMany, literal } from './write';

/** Events per indexing pass: a pass holds the writer, so audit commits wait behind it. */
const PASS_SIZE = 250;
/**
 * Event-loop utilisation above which the indexer waits: past half busy, requests queue behind
 * whatever else the loop does (measured under load: an indexing pass of 250 events holds the loop
 * and the writer for tens of milliseconds).
 */
export const BUSY_UTILIZATION = 0.5;
const BACK_OFF_MS = 100;
/**
 * Queued events past which the indexer works whatever the load. It bounds the lag, and so the
 * wait of an AuditEvent search that has to catch up first (~5 s per 25,000 events on these
 * machines); under sustained saturation indexing then competes with requests as it did inline.
 */
const MAX_LAG = 100000;

/** The deferred search index of the audit trail's own events, wherever it is built (see AuditIndexer). */
export interface AuditIndex {
  /** Starts background indexing (coalesced with a run already under way); `queued`: events just queued. */
  nudge(queued?: number): void;
  /**
   * Resolves when every event queued before the call is indexed; with `patients` (index keys,
   * `Patient/123`), every such event that could be about one of them (see queueScopes). With
   * `params`, the AuditEvent search parameters whose index rows the search reads (it reads no
   * others): when these are all early ones (EARLY_AUDIT_PARAMS), only the queued events written
   * without early rows are waited for.
   */
  catchUp(patients?: readonly string[], params?: readonly string[]): Promise<void>;
  /**
   * Resolves when every AuditEvent committed before the call is in the trail's tables (current
   * row, history, chain link, index queue): SQLite's audit journal moved there first (see
   * store/audit-journal.ts). Every read of the trail that is not a search (searches catchUp) or
   * $verify (which walks the journal as it is) calls it first. Never inside a write transaction:
   * the move needs the writer (a transaction moves it itself, moveJournalIn).
   */
  materialized(): Promise<void>;
  /** Stops background indexing once the pass under way is done (for shutdown). */
  settled(): Promise<void>;
  /** Events waiting to be indexed, those still in the journal included (for /healthz and the benchmark). */
  backlog(): Promise<number>;
}

/**
 * Deferred search indexing of the AuditEvents the server writes.
 *
 * The response path commits each event (content, history row, chain link) before the response
 * leaves; building its ~20 search-index rows there would double the cost of every audited
 * request. So the events' rids go into `audit_index_queue` in the same transaction, and this
 * indexer builds their index rows later, in large batches. Index rows are derived data:
 * nothing is lost if the process dies (the queue is durable), and every AuditEvent search first
 * calls `catchUp()`, so searches always see every committed event.
 *
 * Two of the rows are not deferred: the `patient` and `date` ones (EARLY_AUDIT_PARAMS) are
 * written with the event, and its queue entry says so (`early = 1`). A search that reads no
 * other index rows (a patient's events by date, as auditors and access reports ask) has nothing
 * to wait for but events queued without them: a request's about many patients
 * (EARLY_ROWS_MAX_EVENTS), or an older build's. The indexer writes every row
 * again later; the early ones are already there (ON CONFLICT DO NOTHING).
 *
 * Indexing costs several times what the append does (~25 index rows per event, built from the
 * search parameters' expressions), so the indexer yields to requests: while the event loop is
 * busy it waits, and works through the queue when the load lets up. The lag is bounded: past
 * MAX_LAG queued events it indexes whatever the load, so a search's catch-up stays short.
 */
export class AuditIndexer implements AuditIndex {
  private running: Promise<void> | undefined;
  private again = false;
  /** Events indexed by this process. */
  indexed = 0;
  /** Events this process queued since it last counted the queue (a lower bound of the backlog). */
  private queued = 0;
  /** The pass under way, if any. */
  private passing: Promise<number> | undefined;
  private stopped = false;
  private wake: (() => void) | undefined;
  private elu: EventLoopUtilization = performance.eventLoopUtilization();

  /** The last indexing failure (it is retried on the next nudge; searches catch up themselves). */
  lastError: unknown;

  /** Whether requests keep the serving event loop busy (they come first); by default, this thread's loop. */
  private readonly busy: () => boolean;

  private readonly queue: AuditQueue;

  constructor(
    private readonly driver: Driver,
    private readonly localBase: string | undefined,
    options: { busy?: () => boolean; passSize?: number; journal?: AuditJournal; holdJournal?: boolean } = {},
  ) {
    this.queue = new AuditQueue(driver);
    this.journal = options.journal;
    this.holdJournal = options.holdJournal === true;
    this.busy = options.busy ?? (() => this.loopBusy());
    this.passSize = options.passSize ?? PASS_SIZE;
  }

  /** Events per background pass. */
  private readonly passSize: number;

  /**
   * SQLite's audit journal, where the audit worker commits its events: they are moved into the
   * trail's tables (and so queued for indexing) before anything is indexed or caught up on.
   */
  private readonly journal: AuditJournal | undefined;
  /** Test-only: the journal is not moved in the background (see AuditThreadOptions.holdJournal). */
  private readonly holdJournal: boolean;

  async materialized(): Promise<void> {
    await this.journal?.drain();
  }

  /** Starts background indexing (coalesced with a run already under way); `queued`: events just queued. */
  nudge(queued = 0): void {
    this.queued += queued;
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.loop()
      .then(() => {
        this.lastError = undefined;
      })
      .catch((err: unknown) => {
        // Never an unhandled rejection: a background pass that fails is retried later.
        this.lastError = err;
      })
      .finally(() => {
      this.running = undefined;
      if (this.again) {
        this.again = false;
        this.nudge();
      }
    });
  }

  /**
   * Resolves when every event queued before the call is indexed; with `patients`, every such
   * event that could be about one of them (queueScopes), as only those can match a search
   * confined to them. Events queued meanwhile (by the searches that
   * are catching up, say) are not waited for, and concurrent callers share the passes: the
   * oldest events are indexed first, so each stops as soon as its own are done.
   */
  async catchUp(patients?: readonly string[], params?: readonly string[]): Promise<void> {
    // The journal first: only if it could hold events of the patients searched for, when given.
    if (this.journal) await (patients?.length ? this.journal.drainFor(patients) : this.journal.drain());
    const top = await this.driver.get<{ rid: number | string | null }>('SELECT MAX(rid) AS rid FROM audit_index_queue');
    const watermark = Number(top?.rid ?? 0);
    if (!watermark) return;
    const late = readsOnlyEarlyRows(params);
    const scopes = queueScopes(patients, late);
    for (;;) {
      if (!(await anyQueued(this.driver, scopes, watermark))) return;
      // Not the background run: that may be waiting for the load to let up.
      if (this.passing) await this.passing.catch(() => undefined);
      // Another process may hold the events (PostgreSQL skips locked rows): let it finish.
      else if ((await this.pass(PASS_SIZE, patients, late)) === 0) await this.pause(5);
    }
  }

  /**
   * Stops background indexing once the pass under way is done (for shutdown): what is still
   * queued stays queued, for the next start or another process.
   */
  async settled(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    while (this.running) await this.running.catch(() => undefined);
  }

  /** Events waiting to be indexed (for /healthz and the benchmark). */
  backlog(): Promise<number> {
    return this.queue.backlog();
  }

  private async loop(): Promise<void> {
    // A move that fails (a journal row that cannot be moved, e.g. edited in the database) does
    // not stop the indexing of what was moved before it; it is retried on the next nudge.
    let moveFailure: { err: unknown } | undefined;
    while (!this.stopped) {
      if (this.busy() && this.queued < MAX_LAG) {
        await this.pause(BACK_OFF_MS);
        continue;
      }
      // Journaled events first: they are queued when they are moved.
      let moved = 0;
      if (this.journal && !moveFailure && !this.holdJournal) {
        try {
          moved = await this.journal.move(this.passSize);
        } catch (err) {
          moveFailure = { err };
        }
      }
      const done = await this.pass(this.passSize);
      this.queued = Math.max(0, this.queued - done);
      if (done < this.passSize && moved < this.passSize) {
        this.queued = 0;
        if (moveFailure) throw moveFailure.err;
        return;
      }
      // Judge the load by the requests after this pass, not by the pass itself.
      this.elu = performance.eventLoopUtilization();
      await this.pause(10);
    }
  }

  /** Waits (without keeping the process alive); settled() cuts the wait short. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms).unref();
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }

  /** Whether requests kept this thread's event loop busy since the last look. */
  private loopBusy(): boolean {
    const now = performance.eventLoopUtilization();
    const since = performance.eventLoopUtilization(now, this.elu);
    this.elu = now;
    return since.utilization > BUSY_UTILIZATION;
  }

  /**
   * Indexes one batch (the oldest queued, or the oldest queued that could be about `patients`,
   * of those without early rows only if `late`); returns how many events it indexed.
   */
  private pass(limit = PASS_SIZE, patients?: readonly string[], late = false): Promise<number> {
    // One at a time (the background run's and a catch-up's): a pass reads its batch before it
    // writes (indexBatchScript), so two at once would index the same events twice.
    const before = this.passing?.catch(() => 0) ?? Promise.resolve(0);
    const pass = before.then(() => this.indexBatch(limit, patients, late));
    this.passing = pass;
    return pass.finally(() => {
      if (this.passing === pass) this.passing = undefined;
    });
  }

  private async indexBatch(limit: number, patients: readonly string[] | undefined, late: boolean): Promise<number> {
    if (this.driver.script) {
      const scripted = await this.indexBatchScript(limit, patients, late);
      if (scripted !== undefined) return scripted;
    }
    return this.driver.transaction(async (q: Queryable) => {
      const { rids, entries } = await queuedBatch(q, this.localBase, limit, patients, late, this.driver.dialect === 'postgres' ? ' FOR UPDATE SKIP LOCKED' : '');
      if (rids.length === 0) return 0;
      await insertIndexRowsMany(q, entries);
      await q.run(`DELETE FROM audit_index_queue WHERE rid IN (${rids.map(() => '?').join(', ')})`, rids);
      this.indexed += entries.length;
      return rids.length;
    });
  }

  /**
   * SQLite: the same pass with its writes as one script of literals (Driver.script): one call to
   * the connection instead of a statement per table with every value bound through node-sqlite3.
   * The batch is read before the script, outside it: this thread's passes run one at a time
   * (pass), and an AuditEvent's content never changes. Another writer that indexes the same
   * events meanwhile (a transaction that searches AuditEvents, indexQueuedIn) writes the same
   * rows, which ON CONFLICT keeps once, and deletes the same queue entries.
   * Undefined when a value cannot be a literal: the caller binds them instead.
   */
  private async indexBatchScript(limit: number, patients: readonly string[] | undefined, late: boolean): Promise<number | undefined> {
    const { rids, entries } = await queuedBatch(this.driver, this.localBase, limit, patients, late);
    if (rids.length === 0) return 0;
    let statements: string[];
    try {
      statements = indexRowsScript(entries);
    } catch {
      return undefined;
    }
    statements.push(`DELETE FROM audit_index_queue WHERE rid IN (${rids.map((rid) => literal(rid)).join(', ')})`);
    await this.driver.script!(statements.join(';\n'));
    this.indexed += entries.length;
    return rids.length;
  }
}

/**
 * A batch of queued events: the oldest of each scope (at most `limit` each, one query per index
 * that finds them; `lock` taken on them), and their index rows.
 */
async function queuedBatch(q: Pick<Queryable, 'all'>, localBase: string | undefined, limit: number, patients: readonly string[] | undefined, late: boolean, lock = '') {
  const found = new Set<number>();
  for (const scope of queueScopes(patients, late)) {
    const rows = await q.all<{ rid: number | string }>(`SELECT rid FROM audit_index_queue WHERE 1 = 1${scope.sql} ORDER BY ${scope.rid}${limitClause(limit)}${lock}`, scope.params);
    for (const r of rows) found.add(Number(r.rid));
  }
  const rids = [...found];
  if (rids.length === 0) return { rids, entries: [] };
  const rows = await q.all<{ rid: number | string; content: string }>(`SELECT rid, content FROM resources WHERE rid IN (${rids.map(() => '?').join(', ')})`, rids);
  const entries = rows.map((r) => ({ rid: Number(r.rid), type: 'AuditEvent' as const, rows: extractIndexRows('AuditEvent', JSON.parse(r.content) as Resource, localBase) }));
  return { rids, entries };
}

/**
 * Indexes every queued event inside a transaction that holds the writer (one that searches
 * AuditEvents: a transaction Bundle's GET entries, an AuditEvent's If-None-Exist): the events
 * committed between its catch-up and its BEGIN, which it cannot wait for the indexer to reach.
 * On PostgreSQL it waits for a pass under way elsewhere on the same rows (FOR UPDATE), after which
 * they are indexed already. Returns how many it indexed.
 */
export async function indexQueuedIn(q: Queryable, dialect: Dialect, localBase: string | undefined): Promise<number> {
  let total = 0;
  for (;;) {
    const { rids, entries } = await queuedBatch(q, localBase, PASS_SIZE, undefined, false, dialect === 'postgres' ? ' FOR UPDATE' : '');
    if (rids.length === 0) return total;
    await insertIndexRowsMany(q, entries);
    await q.run(`DELETE FROM audit_index_queue WHERE rid IN (${rids.map(() => '?').join(', ')})`, rids);
    total += rids.length;
  }
}

/** The index queue as read over a connection (the main thread's, for the worker's handle, AuditThread). */
export class AuditQueue {
  constructor(private readonly q: Pick<Queryable, 'get'>) {}

  /** Events waiting to be indexed: queued, or still in the journal. */
  async backlog(): Promise<number> {
    const queued = Number((await this.q.get<{ n: number | string }>('SELECT COUNT(*) AS n FROM audit_index_queue'))?.n ?? 0);
    return queued + (await journalBacklog(this.q));
  }

  /**
   * Whether committed events that could be about one of `patients` (any, when none are given)
   * wait to be indexed, or (unless `journal` is false: the caller knows none of theirs is
   * there) to be moved from the journal; with `params`, only those a search reading these
   * parameters waits for (see AuditIndex.catchUp). One round trip.
   */
  async waiting(patients?: readonly string[], params?: readonly string[], journal = true): Promise<boolean> {
    return anyQueued(this.q, queueScopes(patients, readsOnlyEarlyRows(params)), undefined, journal);
  }

  /** Whether the journal holds events not yet moved into the trail's tables (AuditIndex.materialized). */
  async journaled(): Promise<boolean> {
    return (await this.q.get('SELECT seq FROM audit_journal LIMIT 1')) !== undefined;
  }
}

/** Whether any entry of the scopes (at or below `watermark`) is queued: one round trip, each scope through its own index. */
async function anyQueued(q: Pick<Queryable, 'get'>, scopes: readonly QueueScope[], watermark?: number, journal = false): Promise<boolean> {
  const params: (string | number)[] = [];
  const branches = scopes.map((scope) => {
    if (watermark !== undefined) params.push(watermark);
    params.push(...scope.params);
    return `SELECT rid FROM audit_index_queue WHERE ${watermark !== undefined ? `${scope.rid} <= ?` : '1 = 1'}${scope.sql}`;
  });
  // Any journaled event, whoever it is about: the journal has no index but its order (an index
  // by patient would cost every audited request a write at a random place), and while the load
  // defers moves it can hold many thousands, so it is not scanned here. The thread that writes
  // it knows which patients it holds, and moves it only for those (AuditJournal.drainFor).
  if (journal) branches.push('SELECT seq FROM audit_journal');
  return (await q.get(`${branches.join(' UNION ALL ')} LIMIT 1`, params)) !== undefined;
}

/** Whether a search reading the index rows of `params` (unknown when undefined) reads early rows only. */
function readsOnlyEarlyRows(params: readonly string[] | undefined): boolean {
  return params !== undefined && params.every((p) => EARLY_AUDIT_PARAMS.has(p));
}

/**
 * The queue entries that could be about one of `patients` (all of them when none are given);
 * if `late`, only those written without their early rows. Given as conditions to be queried
 * one at a time, each an equality the planner serves from one index, statistics or not:
 * - entries without early rows (a bulk request's, an older build's) that name one of the patients, or several
 *   (NULL): the partial index audit_index_queue_late holds just these (an OR of the two, or a
 *   range on rid, let SQLite scan the whole queue in rid order instead);
 * - unless `late`, entries with early rows: their `patient` rows in idx_reference name them
 *   (those about several patients too), so that index finds them among the patients' events.
 */
function queueScopes(patients: readonly string[] | undefined, late: boolean): QueueScope[] {
  if (!patients?.length) return [late ? { sql: ' AND early = 0', params: [], rid: '+rid' } : { sql: '', params: [], rid: 'rid' }];
  if (!EARLY_AUDIT_PARAMS.has('patient')) throw new Error('queued events are found by patient through their early patient rows');
  const list = patients.map(() => '?').join(', ');
  const scopes: QueueScope[] = [
    { sql: ' AND early = 0 AND patient IS NULL', params: [], rid: '+rid' },
    { sql: ` AND early = 0 AND patient IN (${list})`, params: [...patients], rid: '+rid' },
  ];
  if (!late) {
    scopes.push({ sql: ` AND early = 1 AND rid IN (SELECT rid FROM idx_reference WHERE pid = ? AND ref IN (${list}))`, params: [paramId('AuditEvent', 'patient'), ...patients], rid: 'rid' });
  }
  return scopes;
}

interface QueueScope {
  /** Conditions to add to a query over audit_index_queue. */
  readonly sql: string;
  readonly params: readonly (string | number)[];
  /**
   * How the query names `rid` in a bound or an ORDER BY: `+rid` where the partial index holds
   * the few entries sought, so SQLite does not read the whole queue in rid order instead.
   */
  readonly rid: 'rid' | '+rid';
}
