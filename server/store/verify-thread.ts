import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { DatabaseConfig } from '../config';
import type { ChainReport, VerifyOptions } from './audit-chain';

/** What a verification thread is given (verify-worker.ts). */
export interface VerifySetup {
  readonly database: DatabaseConfig;
  readonly options: VerifyOptions;
}

/** What it answers, once, before it exits. */
export type FromVerifyWorker = { readonly kind: 'report'; readonly report: ChainReport } | { readonly kind: 'failed'; readonly error: string };

/** What the main thread may tell it. */
export type ToVerifyWorker = { readonly kind: 'halt' };

/**
 * `$verify` off the main thread. Walking the chain recomputes every event's hash and search-index
 * rows: about 80 µs of CPU per event, 25 s for 300,000 events. Run on the thread that serves
 * requests, it cut the audited reads of a store of 300,000 events from 2,750 to 328 req/s for
 * those 25 s (measured 2026-12-06, 10 connections); on a thread of its own, with connections of
 * its own, it takes a core and leaves the server the other.
 *
 * One verification runs at a time (each walks the whole trail); the next waits for it. The
 * thread reads committed state through its own connections, batch by batch, as the main
 * thread's reader did (see verifyChain).
 */
export class ChainVerifier {
  private last: Promise<unknown> = Promise.resolve();
  private readonly running = new Set<Worker>();
  private closed = false;

  constructor(private readonly database: DatabaseConfig) {}

  verify(options: VerifyOptions): Promise<ChainReport> {
    const run = this.last.catch(() => undefined).then(() => this.run(options));
    this.last = run;
    return run;
  }

  private run(options: VerifyOptions): Promise<ChainReport> {
    if (this.closed) return Promise.reject(new Error('the store is closed'));
    return new Promise<ChainReport>((resolve, reject) => {
      const worker = new Worker(path.join(__dirname, 'verify-worker.js'), { workerData: { database: this.database, options } satisfies VerifySetup });
      this.running.add(worker);
      let answer: FromVerifyWorker | undefined;
      worker.on('message', (m: FromVerifyWorker) => (answer ??= m));
      worker.on('error', (err) => (answer ??= { kind: 'failed', error: err.message }));
      worker.once('exit', (code) => {
        this.running.delete(worker);
        if (answer?.kind === 'report') resolve(answer.report);
        else reject(new Error(`the audit chain could not be verified: ${answer?.error ?? `its thread stopped (exit code ${code})`}`));
      });
    });
  }

  /**
   * Stops the verifications under way (the request waiting for one fails) and resolves once their
   * threads have exited: each waits for its SQLite operation under way first (sqliteQuiesce), as
   * a process that exits while a thread has one aborts.
   */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      [...this.running].map(
        (worker) =>
          new Promise((resolve) => {
            worker.once('exit', resolve);
            worker.postMessage({ kind: 'halt' } satisfies ToVerifyWorker);
          }),
      ),
    );
  }
}
