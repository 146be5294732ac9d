import type { Resource } from 'fhir/r4';
import { extractIndexRows } from '../search/extract';
import type { Driver, Queryable } from './driver';
import { insertIndexRowsMany } from './write';

/**
 * Deferred search indexing of the AuditEvents the server writes.
 *
 * The response path commits each event (content, history row, chain link) before the response
 * leaves; building its ~20 search-index rows there would double the cost of every audited
 * request. So the events' rids go into `audit_index_queue` in the same transaction, and this
 * indexer builds their index rows shortly after, in large batches. Index rows are derived data:
 * nothing is lost if the process dies (the queue is durable), and every AuditEvent search first
 * calls `catchUp()`, so searches always see every committed event.
 */
export class AuditIndexer {
  private running: Promise<void> | undefined;
  private again = false;
  /** Events indexed by this process. */
  indexed = 0;

  /** The last indexing failure (it is retried on the next nudge; searches catch up themselves). */
  lastError: unknown;

  constructor(
    private readonly driver: Driver,
    private readonly localBase: string | undefined,
  ) {}

  /** Starts a background pass (coalesced with one already running). */
  nudge(): void {
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

  /** Resolves when every event queued before the call is indexed. */
  async catchUp(): Promise<void> {
    for (;;) {
      if (this.running) await this.running.catch(() => undefined);
      const left = await this.driver.get<{ n: number | string }>('SELECT COUNT(*) AS n FROM audit_index_queue');
      if (Number(left?.n ?? 0) === 0) return;
      await this.pass();
    }
  }

  /** Resolves when no pass is running (for shutdown). */
  async settled(): Promise<void> {
    while (this.running) await this.running.catch(() => undefined);
  }

  /** Events waiting to be indexed (for /healthz and the benchmark). */
  async backlog(): Promise<number> {
    return Number((await this.driver.get<{ n: number | string }>('SELECT COUNT(*) AS n FROM audit_index_queue'))?.n ?? 0);
  }

  private async loop(): Promise<void> {
    while ((await this.pass()) > 0) {
      /* keep going while there is work */
    }
  }

  /** Indexes one batch; returns how many events it indexed. */
  private pass(): Promise<number> {
    return this.driver.transaction(async (q: Queryable) => {
      const lock = this.driver.dialect === 'postgres' ? ' FOR UPDATE SKIP LOCKED' : '';
      // Batches of 250 keep each pass (and its JSON work on the event loop) short.
      const queued = await q.all<{ rid: number | string }>(`SELECT rid FROM audit_index_queue ORDER BY rid LIMIT 250${lock}`);
      if (queued.length === 0) return 0;
      const rids = queued.map((r) => Number(r.rid));
      const rows = await q.all<{ rid: number | string; content: string }>(`SELECT rid, content FROM resources WHERE rid IN (${rids.map(() => '?').join(', ')})`, rids);
      await insertIndexRowsMany(
        q,
        rows.map((r) => ({ rid: Number(r.rid), type: 'AuditEvent' as const, rows: extractIndexRows('AuditEvent', JSON.parse(r.content) as Resource, this.localBase) })),
      );
      await q.run(`DELETE FROM audit_index_queue WHERE rid IN (${rids.map(() => '?').join(', ')})`, rids);
      this.indexed += rows.length;
      return rids.length;
    });
  }
}
