import { moveJournalIn } from './audit-journal';
import type { Driver } from './driver';

/** A point in the commit history: everything up to `seq`, and the instant it stands for. */
export interface Snapshot {
  /** The highest commit sequence number included. */
  readonly seq: number;
  /**
   * Every version whose lastUpdated is at or before this instant has `seq` at or below the
   * snapshot's: a later export with `_since` = this instant misses nothing.
   */
  readonly time: number;
}

/**
 * Takes a snapshot for a Bulk Data export (`transactionTime`).
 *
 * A version's lastUpdated is stamped when it is written, its seq when it commits, so a
 * transaction in flight can commit a version stamped earlier than versions already visible. The
 * IG allows for this ("a FHIR server might need to wait for any pending transactions"); here the
 * instant is chosen so that no transaction in flight can still add a version stamped at or before it:
 * - SQLite: the snapshot is read in the writer's queue, after every transaction queued before it
 *   and before every later one, whose stamps are then later than `time` (a millisecond before the
 *   clock as read there); with AuditEvents, `time`
 *   is also before the stamp of every append the audit worker has been handed and not yet
 *   answered (`appendsSince`): such an append may commit after the snapshot, stamped before it;
 * - PostgreSQL: `time` is before the start of the oldest transaction in progress on the
 *   database (`pg_stat_activity`), less a margin for clock skew between the server processes
 *   and the database, and `seq` is read after that.
 */
export async function takeSnapshot(
  driver: Driver,
  now: () => number,
  options: { skewMarginMs?: number; auditEvents?: boolean; appendsSince?: () => number | undefined } = {},
): Promise<Snapshot> {
  const skewMarginMs = options.skewMarginMs ?? 1000;
  if (driver.dialect === 'sqlite') {
    return driver.transaction(async (q) => {
      // For a snapshot of AuditEvents, the audit worker's events still in its journal get their
      // history rows (and `seq`s) now, below the snapshot: moved later, they would be above it but
      // stamped before `time`, and so missed by this export and by the next one `_since` it.
      if (options.auditEvents) await moveJournalIn(q);
      const row = await q.get<{ seq: number | null }>('SELECT MAX(seq) AS seq FROM resource_versions');
      // Read while this transaction holds the writer, so the worker commits none of them meanwhile.
      const pending = options.auditEvents ? options.appendsSince?.() : undefined;
      // A millisecond back: a transaction queued after this one can be stamped in the same
      // millisecond as `now()`, and `_since` takes what is later than the instant, not equal to it.
      return { seq: Number(row?.seq ?? 0), time: Math.min(now(), pending ?? Infinity) - 1 };
    });
  }
  const appNow = now();
  const row = await driver.get<{ db_now: string | number; oldest: string | number | null }>(
    `SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint AS db_now,
            (SELECT (EXTRACT(EPOCH FROM MIN(xact_start)) * 1000)::bigint FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND xact_start IS NOT NULL) AS oldest`,
  );
  const time = Math.min(appNow, Number(row!.db_now), row!.oldest === null ? Infinity : Number(row!.oldest)) - skewMarginMs;
  const seq = await driver.get<{ seq: string | number | null }>('SELECT MAX(seq) AS seq FROM resource_versions');
  return { seq: Number(seq?.seq ?? 0), time };
}
