import type { AuditEvent } from 'fhir/r4';
import { randomUUID } from 'node:crypto';
import type { Store } from '../store/store';

/** The server's own identity as the writer of the AuditEvents it records. */
const SERVER_WRITER = { clientId: 'custodian-server', organization: null };

interface Waiting {
  readonly events: AuditEvent[];
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * Group commit for the audit trail. Requests hand in their events and wait; events that arrive
 * while a commit is under way are written together in the next one (one transaction, one fsync),
 * then every waiting request is released at once. There is no timer: under load the batches
 * grow by themselves, and a lone request waits for one commit only.
 */
export class AuditWriter {
  private queue: Waiting[] = [];
  private writing = false;
  /** Largest batch seen, for the health report and the benchmark. */
  largestBatch = 0;
  written = 0;

  constructor(private readonly store: Store) {}

  /** Resolves when the events are committed; rejects (and nothing was stored) when they cannot be. */
  write(events: AuditEvent[]): Promise<void> {
    if (events.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ events, resolve, reject });
      if (!this.writing) {
        this.writing = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length) {
        const batch = this.queue;
        this.queue = [];
        const events = batch.flatMap((w) => w.events);
        try {
          await this.store.transaction(async (tx) => {
            for (const e of events) await tx.create('AuditEvent', { ...e, id: randomUUID() }, SERVER_WRITER);
          });
          this.largestBatch = Math.max(this.largestBatch, events.length);
          this.written += events.length;
          for (const w of batch) w.resolve();
        } catch (err) {
          for (const w of batch) w.reject(err);
        }
      }
    } finally {
      this.writing = false;
    }
  }
}
