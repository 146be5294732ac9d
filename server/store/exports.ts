import { SERVER_WRITER } from '../access/context';
import type { AuditEvent } from 'fhir/r4';
import type { ResourceType } from '../../resources';
import type { StoredContext } from '../access/background';
import type { Store } from './store';
import { takeSnapshot, type Snapshot } from './snapshot';

export type ExportStatus = 'accepted' | 'running' | 'completed' | 'failed' | 'cancelled';
export type ExportLevel = 'system' | 'patient';

/** Where a job has got to: the type it is on, and the last commit sequence it has examined. */
export interface ExportCursor {
  readonly typeIndex: number;
  readonly afterSeq: number;
  /** The number of the next file to write. */
  readonly part: number;
}

export interface ExportJob {
  readonly id: string;
  readonly clientId: string;
  readonly context: StoredContext;
  readonly level: ExportLevel;
  readonly types: readonly ResourceType[];
  readonly since?: number;
  /** The kick-off URL, for the manifest's `request`. */
  readonly request: string;
  readonly status: ExportStatus;
  readonly snapshot: Snapshot;
  readonly cursor: ExportCursor;
  /** Versions examined so far, and roughly how many there are: for X-Progress. */
  readonly examined: number;
  readonly estimate: number;
  /** Messages for the manifest's `error` file (parameters ignored under handling=lenient). */
  readonly issues: readonly string[];
  readonly error?: string;
  readonly attempts: number;
  readonly createdAt: number;
  readonly expiresAt?: number;
}

export interface ExportFile {
  readonly part: number;
  readonly kind: 'output' | 'deleted' | 'error';
  readonly type: string;
  readonly count: number;
}

/** What a kick-off records; the rest of the job (snapshot, cursor, progress) the store fills in. */
export type NewExport = Pick<ExportJob, 'id' | 'clientId' | 'context' | 'level' | 'types' | 'since' | 'request' | 'issues'>;

/** One step of a job: the files it wrote (possibly none), the AuditEvents of what they disclose, and the new cursor. */
export interface ExportStep {
  readonly files: readonly (Omit<ExportFile, 'part'> & { content: string })[];
  readonly audit: readonly AuditEvent[];
  readonly cursor: Omit<ExportCursor, 'part'>;
  readonly examined: number;
}

interface JobRow {
  id: string;
  client_id: string;
  context: string;
  level: string;
  types: string;
  since: string | number | null;
  request: string;
  status: string;
  snapshot_seq: string | number;
  transaction_time: string | number;
  cursor: string;
  examined: string | number;
  estimate: string | number;
  issues: string | null;
  error: string | null;
  attempts: string | number;
  created_at: string | number;
  expires_at: string | number | null;
}

const COLUMNS = 'id, client_id, context, level, types, since, request, status, snapshot_seq, transaction_time, cursor, examined, estimate, issues, error, attempts, created_at, expires_at';

function fromRow(r: JobRow): ExportJob {
  return {
    id: r.id,
    clientId: r.client_id,
    context: JSON.parse(r.context) as StoredContext,
    level: r.level as ExportLevel,
    types: JSON.parse(r.types) as ResourceType[],
    since: r.since === null ? undefined : Number(r.since),
    request: r.request,
    status: r.status as ExportStatus,
    snapshot: { seq: Number(r.snapshot_seq), time: Number(r.transaction_time) },
    cursor: JSON.parse(r.cursor) as ExportCursor,
    examined: Number(r.examined),
    estimate: Number(r.estimate),
    issues: r.issues ? (JSON.parse(r.issues) as string[]) : [],
    error: r.error ?? undefined,
    attempts: Number(r.attempts),
    createdAt: Number(r.created_at),
    expiresAt: r.expires_at === null ? undefined : Number(r.expires_at),
  };
}


/**
 * Bulk Data export jobs and their files, in the database so that every server process sharing it
 * can answer the status and file requests, any of them can run (or resume) a job, and a file
 * exists only together with the AuditEvents of what it discloses.
 *
 * Work is claimed with a lease (`lease_owner`, `lease_until`): a process that dies leaves its
 * job to be resumed from the last file it committed once the lease runs out.
 */
export class ExportJobs {
  constructor(
    private readonly store: Store,
    private readonly now: () => number,
  ) {}

  /**
   * The snapshot a new job of these types exports (see takeSnapshot). With AuditEvents it moves
   * the audit journal in first, and fails if it cannot: the caller answers that as the trail
   * being unreadable, not as a fault of its own.
   */
  snapshot(types: readonly ResourceType[]): Promise<Snapshot> {
    return takeSnapshot(this.store.driver, this.now, { auditEvents: types.includes('AuditEvent'), appendsSince: () => this.store.auditThread?.oldestInFlight() });
  }

  /** Records the job (status `accepted`), at `snapshot` or at one taken now. */
  async create(job: NewExport, taken?: Snapshot): Promise<ExportJob> {
    const snapshot = taken ?? (await this.snapshot(job.types));
    const estimate = await this.store.driver.get<{ n: string | number }>(
      `SELECT COUNT(*) AS n FROM resource_versions WHERE type IN (${job.types.map(() => '?').join(', ')}) AND seq <= ?`,
      [...job.types, snapshot.seq],
    );
    const at = this.now();
    await this.store.driver.transaction((q) =>
      q.run(
        `INSERT INTO export_jobs (id, client_id, context, level, types, since, request, status, snapshot_seq, transaction_time, cursor, examined, estimate, issues, attempts, lease_until, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, 'accepted', ?, ?, ?, 0, ?, ?, 0, 0, ?, ?)`,
        [
          job.id,
          job.clientId,
          JSON.stringify(job.context),
          job.level,
          JSON.stringify(job.types),
          job.since ?? null,
          job.request,
          snapshot.seq,
          snapshot.time,
          JSON.stringify({ typeIndex: 0, afterSeq: 0, part: 1 }),
          Number(estimate?.n ?? 0),
          job.issues.length ? JSON.stringify(job.issues) : null,
          at,
          at,
        ],
      ),
    );
    return (await this.get(job.id))!;
  }

  /** The job, unless there is none or it expired (whether or not the sweep has removed it yet). */
  async get(id: string): Promise<ExportJob | undefined> {
    const row = await this.store.driver.get<JobRow>(`SELECT ${COLUMNS} FROM export_jobs WHERE id = ?`, [id]);
    const job = row ? fromRow(row) : undefined;
    return job && (job.expiresAt === undefined || job.expiresAt > this.now()) ? job : undefined;
  }

  /**
   * Claims the oldest job that is waiting, or whose runner's lease ran out (a crash), for `owner`
   * until `leaseUntil`. On PostgreSQL `FOR UPDATE SKIP LOCKED` lets several processes claim at once.
   */
  async claim(owner: string, leaseUntil: number): Promise<ExportJob | undefined> {
    const now = this.now();
    // Most polls find nothing: ask with a read before taking the write lock.
    if (!(await this.store.driver.get(`SELECT 1 AS due FROM export_jobs WHERE status IN ('accepted', 'running') AND lease_until < ? LIMIT 1`, [now]))) return undefined;
    const lock = this.store.dialect === 'postgres' ? ' FOR UPDATE SKIP LOCKED' : '';
    const row = await this.store.driver.transaction((q) =>
      q.get<JobRow>(
        `UPDATE export_jobs SET status = 'running', lease_owner = ?, lease_until = ?, attempts = attempts + 1, updated_at = ?
         WHERE id = (SELECT id FROM export_jobs WHERE status IN ('accepted', 'running') AND lease_until < ? ORDER BY created_at LIMIT 1${lock})
         RETURNING ${COLUMNS}`,
        [owner, leaseUntil, now, now],
      ),
    );
    return row ? fromRow(row) : undefined;
  }

  /**
   * Commits one step: its files, the AuditEvents of what they disclose and the new cursor, in one
   * transaction, and extends the lease. False (and nothing written) when the job is no longer
   * this owner's to run (cancelled, or its lease was taken over).
   */
  async step(job: ExportJob, owner: string, leaseUntil: number, step: ExportStep, nextPart: number): Promise<boolean> {
    const ok = await this.store.transaction(async (tx) => {
      const cursor = { ...step.cursor, part: nextPart + step.files.length };
      const changed = await tx.q.run(
        `UPDATE export_jobs SET cursor = ?, examined = examined + ?, lease_until = ?, updated_at = ? WHERE id = ? AND status = 'running' AND lease_owner = ?`,
        [JSON.stringify(cursor), step.examined, leaseUntil, this.now(), job.id, owner],
      );
      if (changed !== 1) return false;
      let part = nextPart;
      for (const f of step.files) {
        await tx.q.run('INSERT INTO export_files (job_id, part, kind, type, count, content) VALUES (?, ?, ?, ?, ?, ?)', [job.id, part++, f.kind, f.type, f.count, f.content]);
      }
      if (step.audit.length) await tx.createMany('AuditEvent', step.audit, SERVER_WRITER, { deferIndex: true });
      return true;
    });
    if (step.audit.length) this.store.auditIndex.nudge();
    return ok;
  }

  /** Extends the lease of a job this owner holds (a long page in hand); false when it is no longer this owner's. */
  async renew(id: string, owner: string, leaseUntil: number): Promise<boolean> {
    const changed = await this.store.driver.run(`UPDATE export_jobs SET lease_until = ? WHERE id = ? AND status = 'running' AND lease_owner = ?`, [leaseUntil, id, owner]);
    return changed === 1;
  }

  /** Marks the job complete (its files are all written) until `expiresAt`. */
  async complete(job: ExportJob, owner: string, expiresAt: number): Promise<boolean> {
    const changed = await this.store.driver.run(
      `UPDATE export_jobs SET status = 'completed', lease_owner = NULL, lease_until = 0, expires_at = ?, updated_at = ? WHERE id = ? AND status = 'running' AND lease_owner = ?`,
      [expiresAt, this.now(), job.id, owner],
    );
    return changed === 1;
  }

  /** Marks the job failed, visibly: its status request answers with the reason, and its files are dropped. */
  async fail(id: string, reason: string): Promise<void> {
    await this.store.driver.transaction(async (q) => {
      await q.run(`UPDATE export_jobs SET status = 'failed', error = ?, lease_owner = NULL, lease_until = 0, updated_at = ? WHERE id = ? AND status IN ('accepted', 'running')`, [reason, this.now(), id]);
      await q.run('DELETE FROM export_files WHERE job_id = ?', [id]);
    });
  }

  /** Lets the job go for now (an error it may recover from): it is claimed again after `retryAt`. */
  async release(id: string, owner: string, retryAt: number): Promise<void> {
    await this.store.driver.run(`UPDATE export_jobs SET lease_until = ?, updated_at = ? WHERE id = ? AND lease_owner = ? AND status = 'running'`, [retryAt, this.now(), id, owner]);
  }

  /** Cancels a job (DELETE on its status URL) and removes its files; later requests for it are 404s. */
  async cancel(id: string): Promise<void> {
    await this.store.driver.transaction(async (q) => {
      await q.run(`UPDATE export_jobs SET status = 'cancelled', lease_owner = NULL, lease_until = 0, updated_at = ? WHERE id = ?`, [this.now(), id]);
      await q.run('DELETE FROM export_files WHERE job_id = ?', [id]);
    });
  }

  async files(id: string): Promise<ExportFile[]> {
    const rows = await this.store.driver.all<{ part: number | string; kind: string; type: string; count: number | string }>('SELECT part, kind, type, count FROM export_files WHERE job_id = ? ORDER BY part', [id]);
    return rows.map((r) => ({ part: Number(r.part), kind: r.kind as ExportFile['kind'], type: r.type, count: Number(r.count) }));
  }

  async fileContent(id: string, part: number): Promise<string | undefined> {
    return (await this.store.driver.get<{ content: string }>('SELECT content FROM export_files WHERE job_id = ? AND part = ?', [id, part]))?.content;
  }

  /** Forgets completed exports whose files have expired, and finished jobs older than a week. */
  async sweep(): Promise<void> {
    const now = this.now();
    await this.store.driver.transaction(async (q) => {
      await q.run(`DELETE FROM export_files WHERE job_id IN (SELECT id FROM export_jobs WHERE status = 'completed' AND expires_at < ?)`, [now]);
      await q.run(`UPDATE export_jobs SET status = 'cancelled' WHERE status = 'completed' AND expires_at < ?`, [now]);
      await q.run(`DELETE FROM export_jobs WHERE status IN ('cancelled', 'failed') AND updated_at < ?`, [now - 7 * 86400000]);
    });
  }
}
