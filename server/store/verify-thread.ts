import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Options } from 'sequelize';
import type { DatabaseConfig } from '../config';
import type { ChainReport, VerifyOptions } from './audit-chain';

/** What a verification thread is given (verify-worker.ts). */
export interface VerifySetup {
  readonly database: DatabaseConfig;
  readonly options: VerifyOptions;
  /**
   * PostgreSQL: the longest any one statement may run (the deadline). A halted thread leaves,
   * but its server process would go on with the statement under way (it notices a closed
   * connection only when it next talks to it), holding a snapshot and a core: it cancels itself.
   */
  readonly statementTimeoutMs: number;
}

/** What it answers, once, before it exits: the report, or why there is none (with the database error's code and name). */
export type FromVerifyWorker =
  | { readonly kind: 'report'; readonly report: ChainReport }
  | { readonly kind: 'failed'; readonly error: string; readonly code?: string; readonly name?: string };

/** What the main thread may tell it. */
export type ToVerifyWorker = { readonly kind: 'halt' };

/** A verification that was not run to its end: the store is closing, it ran past its deadline, or too many wait. The client may retry. */
export class VerificationStopped extends Error {}

/** Longest a verification may run (a million events take ~80 s here): one stuck behind a lock would hold up every later one. */
const DEADLINE_MS = 60 * 60 * 1000;
/** Verifications (of different anchors) that may wait for the one under way; one more is refused. */
const MAX_WAITING = 4;

/**
 * `$verify` off the main thread. Walking the chain recomputes every event's hash and search-index
 * rows: about 80 µs of CPU per event, 25 s for 300,000 events. Run on the thread that serves
 * requests, it cut the audited reads of a store of 300,000 events from 2,750 to 328 req/s for
 * those 25 s (measured 2026-12-06, 10 connections); on a thread of its own, with connections of
 * its own, it takes a core and leaves the server the other (2,063 req/s).
 *
 * One verification runs at a time (each walks the whole trail). Requests that arrive meanwhile
 * with the same anchors share the next run (an auditor retrying after a proxy gave up does not
 * queue another walk); at most MAX_WAITING runs wait. The thread reads committed state through
 * its own connections, batch by batch, as the main thread's reader did (see verifyChain).
 */
export class ChainVerifier {
  private last: Promise<unknown> = Promise.resolve();
  /** Runs not started yet, by their anchors. */
  private readonly waiting = new Map<string, Promise<ChainReport>>();
  /** Threads under way, and how to stop each (the reason its run then fails with). */
  private readonly running = new Map<Worker, (why: string) => void>();
  private closed = false;

  constructor(
    private readonly database: DatabaseConfig,
    private readonly deadlineMs = DEADLINE_MS,
  ) {}

  verify(options: VerifyOptions): Promise<ChainReport> {
    const key = JSON.stringify([options.localBase ?? null, options.anchors ?? []]);
    const shared = this.waiting.get(key);
    if (shared) return shared;
    if (this.closed) return Promise.reject(new VerificationStopped('the store is closing'));
    if (this.waiting.size >= MAX_WAITING) return Promise.reject(new VerificationStopped(`${MAX_WAITING} verifications are waiting already`));
    const run = this.last
      .catch(() => undefined)
      .then(() => {
        this.waiting.delete(key);
        return this.run(options);
      });
    this.waiting.set(key, run);
    this.last = run;
    return run;
  }

  private run(options: VerifyOptions): Promise<ChainReport> {
    if (this.closed) return Promise.reject(new VerificationStopped('the store is closing'));
    return new Promise<ChainReport>((resolve, reject) => {
      const worker = new Worker(path.join(__dirname, 'verify-worker.js'), { workerData: { database: this.database, options, statementTimeoutMs: this.deadlineMs } satisfies VerifySetup });
      let answer: FromVerifyWorker | undefined;
      let stopped: string | undefined;
      const stop = (why: string) => {
        stopped ??= why;
        worker.postMessage({ kind: 'halt' } satisfies ToVerifyWorker);
      };
      this.running.set(worker, stop);
      const deadline = setTimeout(() => stop(`it ran longer than ${Math.round(this.deadlineMs / 1000)} s`), this.deadlineMs);
      worker.on('message', (m: FromVerifyWorker) => (answer ??= m));
      worker.on('error', (err) => (answer ??= { kind: 'failed', error: err.message }));
      worker.once('exit', (code) => {
        clearTimeout(deadline);
        this.running.delete(worker);
        if (answer?.kind === 'report') return resolve(answer.report);
        if (stopped) return reject(new VerificationStopped(`the audit chain's verification was stopped: ${stopped}`));
        const err = new Error(`the audit chain could not be verified: ${answer?.error ?? `its thread stopped (exit code ${code})`}`);
        // The database's error code and name, by which a database that is unavailable answers 503 (http/errors.ts).
        reject(Object.assign(err, answer?.code ? { code: answer.code } : {}, answer?.name ? { name: answer.name } : {}));
      });
    });
  }

  /**
   * Stops the verifications under way and refuses new ones (the requests waiting for them fail
   * with VerificationStopped); resolves once their threads have exited: each ends its SQLite
   * statement under way first (Driver.interrupt, sqliteQuiesce), as a process that exits while a
   * thread has one aborts.
   */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      [...this.running].map(
        ([worker, stop]) =>
          new Promise((resolve) => {
            worker.once('exit', resolve);
            stop('the store is closing');
          }),
      ),
    );
  }
}

/**
 * PostgreSQL: the verification thread's one connection. Its statements time out at the walk's
 * deadline (a stopped walk leaves nothing running), and every transaction on it is read-only
 * (`default_transaction_read_only`), so the walk cannot change the trail it checks, as on SQLite.
 */
export function verifyPgOptions(statementTimeoutMs: number): Options {
  return {
    dialect: 'postgres',
    logging: false,
    pool: { max: 1, min: 0, idle: 10000, acquire: 30000 },
    dialectOptions: { statement_timeout: Math.max(1, Math.ceil(statementTimeoutMs)) },
    // Set on the session, not as a startup option: DATABASE_URL's own `options` (a search_path,
    // say) would be replaced by one given here.
    hooks: {
      afterConnect: async (connection: unknown) => {
        await (connection as { query(sql: string): Promise<unknown> }).query('SET default_transaction_read_only = on');
      },
    },
  };
}
