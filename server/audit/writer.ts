import { SERVER_WRITER } from '../access/context';
import type { AuditEvent } from 'fhir/r4';
import type { Store } from '../store/store';
import type { AccessNote, RequestFacts } from './balp';
import type { AuditItem } from './items';

export { uuidv7 } from './items';


interface Waiting {
  readonly item: AuditItem;
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * Group commit for the audit trail. Requests hand in their events (or the facts to build them
 * from) and wait; what is handed in during one turn of the event loop goes to the store together,
 * and what is handed in while appends are under way joins the next (one transaction, one fsync),
 * then every waiting request is released at once. There is no timer here: under load the batches
 * grow by themselves, and a lone request waits for one commit only. How many appends may be under
 * way is the store's to say (`Store.auditPipeline`: the SQLite audit worker takes whatever is
 * queued when its commit is done).
 */
export class AuditWriter {
  private queue: Waiting[] = [];
  private scheduled = false;
  private inFlight = 0;
  private idleWaiters: (() => void)[] = [];
  /** Largest group commit seen (events), for the health report and the benchmark. */
  largestBatch = 0;
  /** Events committed. */
  written = 0;
  /** Database commits those events took (group commit: many requests' events share one). */
  commits = 0;
  /** Of those, commits whose one-call script found the audit chain moved and were appended again (SQLite). */
  appendFallbacks = 0;
  private lastCommitNo = 0;

  constructor(private readonly store: Store) {}

  /** Resolves once everything handed in so far is committed or failed (for shutdown). */
  drained(): Promise<void> {
    if (this.queue.length === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Resolves when the events are committed; rejects (and nothing was stored) when they cannot be. */
  write(events: AuditEvent[]): Promise<void> {
    if (events.length === 0) return Promise.resolve();
    return this.enqueue({ events });
  }

  /**
   * Commits the BALP events of one request's accesses (see buildEvents), built from these facts
   * where they are stored; resolves when they are committed, rejects (nothing stored) when they
   * cannot be.
   */
  record(facts: RequestFacts, notes: readonly AccessNote[]): Promise<void> {
    return this.enqueue({ facts, notes });
  }

  private enqueue(item: AuditItem): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.flush();
        });
      }
    });
  }

  private flush(): void {
    if (this.queue.length === 0 || this.inFlight >= this.store.auditPipeline) return;
    const batch = this.queue;
    this.queue = [];
    this.inFlight++;
    this.store
      .appendAudit(
        batch.map((w) => w.item),
        SERVER_WRITER,
      )
      .then(
        (committed) => {
          this.largestBatch = Math.max(this.largestBatch, committed.commit);
          this.written += committed.events;
          if (committed.commitNo !== this.lastCommitNo) {
            this.lastCommitNo = committed.commitNo;
            this.commits++;
            if (committed.fallback) this.appendFallbacks++;
          }
          for (const w of batch) w.resolve();
        },
        (err: unknown) => {
          for (const w of batch) w.reject(err);
        },
      )
      .finally(() => {
        this.inFlight--;
        // What queued meanwhile goes now (it was held back only if the pipeline was full).
        this.flush();
        if (this.queue.length === 0 && this.inFlight === 0) for (const done of this.idleWaiters.splice(0)) done();
      });
  }
}
