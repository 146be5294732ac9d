import { randomFillSync } from 'node:crypto';
import type { AuditEvent } from 'fhir/r4';
import type { Store } from '../store/store';

/** Random bytes drawn from the CSPRNG a page at a time (one call per id costs more than the rest of the id). */
const pool = Buffer.alloc(4096);
let poolOffset = pool.length;

/**
 * A time-ordered UUID (version 7, RFC 9562): AuditEvents are appended in time order, so their
 * ids land at the end of the (type, id) indexes instead of at random pages.
 */
export function uuidv7(now = Date.now()): string {
  if (poolOffset + 10 > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const b = Buffer.allocUnsafe(16);
  pool.copy(b, 6, poolOffset, poolOffset + 10);
  poolOffset += 10;
  b.writeUIntBE(now, 0, 6);
  b[6] = 0x70 | (b[6] & 0x0f);
  b[8] = 0x80 | (b[8] & 0x3f);
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

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
  private idle: Promise<void> = Promise.resolve();

  constructor(private readonly store: Store) {}

  /** Resolves once everything handed in so far is committed or failed (for shutdown). */
  drained(): Promise<void> {
    return this.idle;
  }

  /** Resolves when the events are committed; rejects (and nothing was stored) when they cannot be. */
  write(events: AuditEvent[]): Promise<void> {
    if (events.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ events, resolve, reject });
      if (!this.writing) {
        this.writing = true;
        this.idle = new Promise<void>((done) => setImmediate(() => void this.drain().finally(done)));
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
          await this.store.transaction((tx) => tx.appendAuditEvents(events.map((e) => ({ ...e, id: uuidv7() })), SERVER_WRITER));
          this.store.auditIndex.nudge(events.length);
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
