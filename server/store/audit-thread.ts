import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { AuditItem } from '../audit/items';
import type { AuditIndex, AuditQueue } from './audit-index';
import { applyCount, type JournalCount } from './audit-journal';
import type { AuditFloor } from './audit-worker';
import type { SqliteWriterSettings } from './driver';
import type { Writer } from './write';
import { WriterLock } from './writer-lock';

/** What the main thread asks of the audit worker. */
export type ToAuditWorker =
  | { readonly kind: 'append'; readonly call: number; readonly items: readonly AuditItem[]; readonly writer: Writer; readonly now: number }
  | { readonly kind: 'catch-up'; readonly call: number; readonly patients?: readonly string[]; readonly params?: readonly string[] }
  | { readonly kind: 'materialize'; readonly call: number }
  | { readonly kind: 'nudge' }
  | { readonly kind: 'stop'; readonly call: number }
  | { readonly kind: 'crash' }
  | { readonly kind: 'halt' };

/** What the audit worker answers: calls done (with how many events each stored, and in how large a commit) or failed. */
export type FromAuditWorker =
  | { readonly kind: 'done'; readonly calls: readonly number[]; readonly events?: readonly number[]; readonly commit?: number; readonly commitNo?: number; readonly fallback?: boolean }
  | { readonly kind: 'failed'; readonly calls: readonly number[]; readonly error: string; readonly code?: string }
  | { readonly kind: 'indexed'; readonly total: number; readonly error?: string }
  | { readonly kind: 'journal'; readonly delta: JournalCount; readonly reset: boolean };

/** What the worker starts from (its `workerData`). */
export interface AuditWorkerSetup {
  readonly settings: SqliteWriterSettings;
  readonly localBase?: string;
  /** Bench-only: commit something else than the trail's AuditEvents (see Config.benchAuditFloor). */
  readonly floor?: AuditFloor;
  /** Test-only: the journal is moved only when the trail is read (AuditThreadOptions.holdJournal). */
  readonly holdJournal?: boolean;
}

/** Settings of the audit worker that are not the service's: for the bench and for tests. */
export interface AuditThreadOptions {
  /** Bench-only (see Config.benchAuditFloor). */
  readonly floor?: AuditFloor;
  /**
   * Test-only (never set by configuration): the worker does not move its journal in the
   * background, only when the trail is read, so tests can read the trail while it holds events.
   */
  readonly holdJournal?: boolean;
}

/** Events one append stored, and the size of the commit they were part of. */
export interface Committed {
  readonly events: number;
  readonly commit: number;
  /** Which commit of this process it was (numbered from 1): appends that share one share its number. */
  readonly commitNo: number;
  /**
   * SQLite: the commit's one-call script found the chain moved (an audit source's POST, another
   * process) and the group was appended the ordinary way (see audit-worker.ts).
   */
  readonly fallback?: boolean;
}

/**
 * The audit worker's young generation, in MB (V8's default is 16 MB a semi-space here). A page of
 * a Consent walk hands the worker one append of 1,000 events, which it builds, frames, hashes and
 * turns into SQL: megabytes of objects and strings, all alive until the commit is done. With the
 * default young generation they outlived it and were promoted, and the worker spent ~6.5 ms of
 * each ~30 ms append collecting them (PerformanceObserver 'gc', 100 pages of the bench's walk);
 * with 128 MB, ~1.5 ms. V8 grows the young generation only as far as the worker's allocations
 * need, so a worker that appends a few events at a time stays small.
 */
const WORKER_YOUNG_GENERATION_MB = 128;

interface Call {
  resolve(committed: Committed): void;
  reject(err: Error): void;
}

/**
 * The main thread's handle on the audit worker (audit-worker.ts): SQLite's writer of the audit
 * trail's own events, and their deferred indexer.
 *
 * Why a thread: a request's AuditEvents must be committed before its response leaves. On the main
 * thread, building and serialising each event, binding its parameters (node-sqlite3 binds on the
 * calling thread) and every round trip to the connection took turns of the event loop that serves
 * requests. The worker has an event loop of its own: the main thread hands over the facts the
 * events are built from and is answered once, when the COMMIT is done. It is one of two SQLite
 * writers of the process, taking turns with the main thread's writer through the WriterLock, so
 * commits stay serialised and the commit sequence is commit order.
 *
 * Fail closed: a batch the worker cannot commit is rejected (its requests get 503 and none of the
 * data); if the worker dies, every call under way is rejected, the writer lock it held is freed,
 * and the next call starts a new worker.
 */
export class AuditThread implements AuditIndex {
  private worker: Worker | undefined;
  private exited: Promise<void> = Promise.resolve();
  private nextCall = 1;
  private readonly calls = new Map<number, Call>();
  /** The meta.lastUpdated of each append handed over and not yet answered, by call. */
  private readonly stamps = new Map<number, number>();
  private stopping = false;
  /** Events the worker indexed since it started. */
  indexed = 0;
  /** The worker's last indexing failure (retried on the next nudge; searches catch up themselves). */
  lastError: string | undefined;
  /**
   * The worker's count of journaled events by queue key (AuditJournal), mirrored from its
   * messages: each change arrives before the answer to the append or move that made it.
   * Undefined until a new worker has sent the whole of it (it may have died with changes unsent).
   */
  private journalKeys: Map<string | null, number> | undefined;

  constructor(
    private readonly settings: SqliteWriterSettings,
    private readonly localBase: string | undefined,
    /** The queue as the main thread's connection sees it. */
    private readonly queue: AuditQueue,
    private readonly options: AuditThreadOptions = {},
  ) {
    this.spawn();
  }

  /**
   * Commits the items' events (built, chained and queued for indexing there); rejects, with
   * nothing stored, when they cannot be. `now` is the store's clock: their meta.lastUpdated.
   */
  append(items: readonly AuditItem[], writer: Writer, now: number): Promise<Committed> {
    return this.call((call) => {
      this.stamps.set(call, now);
      return { kind: 'append', call, items, writer, now };
    });
  }

  /**
   * The earliest meta.lastUpdated of the appends handed over and not yet answered: their events
   * may be committed after anything read now, stamped before it (an export snapshot must not
   * claim their instant, store/snapshot.ts). Undefined when none is.
   */
  oldestInFlight(): number | undefined {
    let oldest: number | undefined;
    for (const stamp of this.stamps.values()) if (oldest === undefined || stamp < oldest) oldest = stamp;
    return oldest;
  }

  nudge(): void {
    if (this.worker && !this.stopping) this.worker.postMessage({ kind: 'nudge' } satisfies ToAuditWorker);
  }

  async catchUp(patients?: readonly string[], params?: readonly string[]): Promise<void> {
    // Most searches for a patient find nothing of theirs queued or journaled: no need to ask the
    // worker. Whether the journal holds any of theirs, the worker's count says (the journal is
    // read whole only for a search not confined to patients).
    const keys = this.journalKeys;
    const journalClear = patients?.length && keys && !keys.has(null) && !patients.some((p) => keys.has(p));
    if (!(await this.queue.waiting(patients, params, !journalClear))) return;
    await this.call((call) => ({ kind: 'catch-up', call, ...(patients ? { patients } : {}), ...(params ? { params } : {}) }));
  }

  async materialized(): Promise<void> {
    // Mostly the journal is empty when the trail is read: no need to ask the worker.
    if (!(await this.queue.journaled())) return;
    await this.call((call) => ({ kind: 'materialize', call }));
  }

  backlog(): Promise<number> {
    return this.queue.backlog();
  }

  /** Lets the worker finish what it was handed, stop indexing and close its connections; resolves when it has exited. */
  async settled(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      if (this.worker) await this.request((call) => ({ kind: 'stop', call })).catch(() => undefined);
    }
    await this.exited;
  }

  /**
   * For fault tests: the worker throws an error nothing catches, as a bug in it would, and fails
   * (audit-worker.ts, `fail`); resolves once it has exited. Not worker.terminate(): stopping a
   * thread with a node-sqlite3 operation under way aborts the whole process.
   */
  async crash(): Promise<void> {
    if (this.worker) this.worker.postMessage({ kind: 'crash' } satisfies ToAuditWorker);
    await this.exited;
  }

  /**
   * Before the process exits without settling (a start-up that failed after the store opened, a
   * shutdown that timed out): the worker stops what it is doing, waits for the SQLite operation
   * under way if any (sqliteQuiesce: a process that exits while its worker has one aborts, exit
   * code 134, whatever code it exits with), and exits; resolves once it has. Calls under way fail.
   */
  async halt(): Promise<void> {
    this.stopping = true;
    if (this.worker) {
      // Until it has exited, whatever else keeps the process alive or not.
      this.worker.ref();
      this.worker.postMessage({ kind: 'halt' } satisfies ToAuditWorker);
    }
    await this.exited;
  }

  private call(message: (call: number) => ToAuditWorker): Promise<Committed> {
    if (this.stopping) return Promise.reject(new Error('the audit trail is closed'));
    return this.request(message);
  }

  private request(message: (call: number) => ToAuditWorker): Promise<Committed> {
    if (!this.worker) this.spawn();
    const worker = this.worker!;
    const call = this.nextCall++;
    return new Promise<Committed>((resolve, reject) => {
      // A call under way keeps the process alive; the worker's background indexing does not.
      if (this.calls.size === 0) worker.ref();
      this.calls.set(call, { resolve, reject });
      try {
        worker.postMessage(message(call));
      } catch (err) {
        // Not handed over (a value that cannot be cloned): not under way either.
        this.settle(call);
        reject(err);
      }
    });
  }

  private spawn(): void {
    this.journalKeys = undefined;
    const setup: AuditWorkerSetup = { settings: this.settings, localBase: this.localBase, ...this.options };
    const worker = new Worker(path.join(__dirname, 'audit-worker.js'), { workerData: setup, resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB } });
    this.worker = worker;
    // Only this worker's: a message of one that has been replaced could undo the new one's count.
    worker.on('message', (m: FromAuditWorker) => {
      if (this.worker === worker) this.receive(m);
    });
    let failure: Error | undefined;
    worker.on('error', (err) => {
      failure = err;
    });
    this.exited = new Promise<void>((resolve) =>
      worker.once('exit', (code) => {
        this.worker = undefined;
        // It may have committed events whose count it never sent: unknown until the next one counts.
        this.journalKeys = undefined;
        // Its connections closed with it, and SQLite's lock with them; ours too.
        new WriterLock(this.settings.lock, 'main').releaseFor('worker');
        const err = new Error(`the audit worker stopped (exit code ${code}${failure ? `: ${failure.message}` : ''})`);
        for (const c of this.calls.values()) c.reject(err);
        this.calls.clear();
        this.stamps.clear();
        resolve();
      }),
    );
    worker.unref();
  }

  private receive(m: FromAuditWorker): void {
    switch (m.kind) {
      case 'done':
        m.calls.forEach((call, i) => this.settle(call)?.resolve({ events: m.events?.[i] ?? 0, commit: m.commit ?? 0, commitNo: m.commitNo ?? 0, ...(m.fallback ? { fallback: true } : {}) }));
        return;
      case 'failed': {
        const err = Object.assign(new Error(m.error), m.code ? { code: m.code } : {});
        for (const call of m.calls) this.settle(call)?.reject(err);
        return;
      }
      case 'indexed':
        this.indexed = m.total;
        this.lastError = m.error;
        return;
      case 'journal':
        if (m.reset) this.journalKeys = new Map();
        if (this.journalKeys) applyCount(this.journalKeys, m.delta);
        return;
    }
  }

  private settle(call: number): Call | undefined {
    const c = this.calls.get(call);
    this.calls.delete(call);
    this.stamps.delete(call);
    // While stopping, the worker keeps the process alive until it has exited (see settled()).
    if (this.calls.size === 0 && !this.stopping) this.worker?.unref();
    return c;
  }
}
