import type { AuditEvent, Bundle } from 'fhir/r4';
import { backgroundContext } from '../access/background';
import type { AccessContext } from '../access/context';
import type { ClientRegistry } from '../access/registry';
import { disclosureEvents } from '../audit/balp';
import { uuidv7 } from '../audit/writer';
import type { FeedConfig } from '../config';
import type { ExportGate, SnapshotPage } from '../gate/exports';
import type { Logger } from '../log';
import type { ExportCursor, ExportJob, ExportJobs, ExportStep } from '../store/exports';
import { WorkerLoop } from './worker-loop';

/** Claims of one job (each start or resumption) before it is failed, visibly. */
const MAX_ATTEMPTS = 5;
/** How long a job that hit an error waits before it is tried again, ms. */
const RETRY_MS = 5000;

export interface ExportRunnerOptions {
  readonly jobs: ExportJobs;
  readonly gate: ExportGate;
  readonly registry: ClientRegistry;
  readonly config: FeedConfig;
  /** The configured public base URL; else the one each job was started at. */
  readonly baseUrl: string | undefined;
  readonly now: () => number;
  readonly logger: Logger;
  /** This process, as the holder of leases. */
  readonly owner: string;
}

/**
 * Runs Bulk Data exports in the background: claims a job, walks its snapshot type by type one
 * page at a time, and commits each page's file together with the AuditEvents of what it
 * discloses and the new cursor (ExportJobs.step), so a job resumes after a crash from the last
 * page it committed and never presents a file that was cut short. Only when every page is
 * written is the job marked complete.
 */
export class ExportRunner {
  private readonly loop: WorkerLoop;
  private stopping = false;
  private lastSweep = 0;

  constructor(private readonly o: ExportRunnerOptions) {
    this.loop = new WorkerLoop('export runner', () => this.runOnce(), o.config.pollMs, o.logger);
  }

  start(): void {
    this.stopping = false;
    this.loop.start();
  }

  nudge(): void {
    this.loop.nudge();
  }

  /** Stops after the page in hand, handing the job back for another process (or the next start). */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop.stop();
  }

  /** Claims and runs waiting jobs until there are none; true if it ran any. */
  async runOnce(): Promise<boolean> {
    if (this.o.now() - this.lastSweep > 60000) {
      this.lastSweep = this.o.now();
      await this.o.jobs.sweep();
    }
    let ran = false;
    while (!this.stopping) {
      const job = await this.o.jobs.claim(this.o.owner, this.o.now() + this.o.config.leaseMs);
      if (!job) break;
      ran = true;
      await this.run(job);
    }
    return ran;
  }

  private async run(job: ExportJob): Promise<void> {
    const { jobs, owner, logger } = this.o;
    if (job.attempts > MAX_ATTEMPTS) {
      await jobs.fail(job.id, `the export was started or resumed ${MAX_ATTEMPTS} times without finishing; it has been abandoned`);
      return;
    }
    try {
      let cursor = job.cursor;
      while (cursor.typeIndex <= job.types.length) {
        if (this.stopping) {
          await jobs.release(job.id, owner, 0);
          return;
        }
        const ctx = backgroundContext(this.o.registry, job.context, `export-${job.id}-${cursor.part}`);
        if (!ctx) {
          await jobs.fail(job.id, `client ${job.clientId} is no longer registered (or no longer for purpose ${job.context.purposeOfUse}, or no longer with the key it asked with); the export was stopped`);
          return;
        }
        const step = cursor.typeIndex < job.types.length ? await this.page(job, cursor, ctx) : this.issues(job, cursor);
        if (!(await jobs.step(job, owner, this.o.now() + this.o.config.leaseMs, step, cursor.part))) return; // cancelled, or no longer ours
        cursor = { ...step.cursor, part: cursor.part + step.files.length };
      }
      if (await jobs.complete(job, owner, this.o.now() + this.o.config.exportRetentionSeconds * 1000)) {
        logger.info('export completed', { export: job.id, client: job.clientId });
      }
    } catch (err) {
      logger.error('export step failed; it will be retried', { export: job.id, attempt: job.attempts, error: err instanceof Error ? err.message : String(err) });
      await jobs.release(job.id, owner, this.o.now() + RETRY_MS).catch(() => undefined);
    }
  }

  /** The next page of the current type: its output file, its deleted file, their audit. */
  private async page(job: ExportJob, cursor: ExportCursor, ctx: AccessContext): Promise<ExportStep> {
    const type = job.types[cursor.typeIndex];
    const page = await this.o.gate.page(ctx, job, type, cursor.afterSeq, this.o.config.exportFileResources, async () => {
      if (!(await this.o.jobs.renew(job.id, this.o.owner, this.o.now() + this.o.config.leaseMs))) throw new Error(`export ${job.id} is no longer this process's to run`);
    });
    const files: ExportStep['files'][number][] = [];
    if (page.included.length) {
      files.push({ kind: 'output', type, count: page.included.length, content: page.included.map((i) => JSON.stringify(i.version.resource) + '\n').join('') });
    }
    if (page.deleted.length) {
      files.push({ kind: 'deleted', type: 'Bundle', count: page.deleted.length, content: page.deleted.map((d) => JSON.stringify(deletionBundle(d.version)) + '\n').join('') });
    }
    return {
      files,
      audit: this.audit(job, ctx, page, cursor.part),
      cursor: page.done ? { typeIndex: cursor.typeIndex + 1, afterSeq: 0 } : { typeIndex: cursor.typeIndex, afterSeq: page.lastSeq },
      examined: page.examined,
    };
  }

  /** The last step: the manifest's error file, with what was ignored under handling=lenient. */
  private issues(job: ExportJob, cursor: ExportCursor): ExportStep {
    const outcomes = job.issues.map((diagnostics) => JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'warning', code: 'not-supported', diagnostics }] }) + '\n');
    return {
      files: outcomes.length ? [{ kind: 'error', type: 'OperationOutcome', count: outcomes.length, content: outcomes.join('') }] : [],
      audit: [],
      cursor: { typeIndex: cursor.typeIndex + 1, afterSeq: 0 },
      examined: 0,
    };
  }

  /** One BALP PrivacyDisclosure per patient whose data this page discloses. */
  private audit(job: ExportJob, ctx: AccessContext, page: SnapshotPage, part: number): AuditEvent[] {
    const byPatient = new Map<string, string[]>();
    for (const { version, patients } of [...page.included, ...page.deleted]) {
      for (const p of patients.length ? patients : ['']) {
        const list = byPatient.get(p) ?? [];
        list.push(`${version.type}/${version.id}/_history/${version.versionId}`);
        byPatient.set(p, list);
      }
    }
    if (byPatient.size === 0) return [];
    const base = this.o.baseUrl ?? job.context.baseUrl;
    const events = disclosureEvents(
      {
        recorded: new Date(this.o.now()).toISOString(),
        baseUrl: base,
        ctx,
        requestId: job.context.requestId,
        description: `Bulk Data export ${job.id}, file ${part}: ${job.request}`,
        clientAddress: job.context.address,
      },
      byPatient,
    );
    return events.map((e) => ({ ...e, id: uuidv7() }));
  }
}

/** The IG's deleted-file line: a transaction Bundle with one DELETE entry. */
function deletionBundle(v: { type: string; id: string; lastUpdated: number }): Bundle {
  return { resourceType: 'Bundle', meta: { lastUpdated: new Date(v.lastUpdated).toISOString() }, type: 'transaction', entry: [{ request: { method: 'DELETE', url: `${v.type}/${v.id}` } }] };
}
