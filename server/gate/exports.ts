import { definitions, isResourceType, patientIdsOf, RESOURCE_TYPES, type ResourceType } from '../../resources';
import type { AccessContext } from '../access/context';
import { backgroundContext, backgroundRefusal, storeContext } from '../access/background';
import type { ClientRegistry } from '../access/registry';
import type { AuditSink } from '../audit/trail';
import type { Bundle, Resource } from 'fhir/r4';
import type { Decision } from '../consent/decision';
import { FhirError } from '../errors';
import type { ExportFile, ExportJob, ExportJobs, ExportLevel } from '../store/exports';
import type { StoreReader } from '../store/read';
import type { HistoryVersion, StoredVersion } from '../store/records';
import { GatedReads, shown, trailRead } from './gate';
import type { CursorSeal } from './cursor';
import type { AccessPolicy, ReadPurpose } from './policy';
import { TransactionView } from './policy-data';

/** A Bulk Data export discloses: the consent action is `disclose`, under the search permission. */
const DISCLOSE: ReadPurpose = { permission: 's', action: 'disclose' };

export interface ExportRequest {
  readonly level: ExportLevel;
  readonly types: readonly ResourceType[];
  readonly since?: number;
  readonly request: string;
  /** The base URL the kick-off was made to. */
  readonly baseUrl: string;
  readonly issues: readonly string[];
}

/** One page of a job's snapshot, decided: what goes into the files, and what the client may not see. */
export interface SnapshotPage {
  /** Versions with content the client may receive, with the patients each is about. */
  readonly included: readonly { readonly version: HistoryVersion; readonly patients: readonly string[] }[];
  /** Deletions (only with `_since`) the client may learn of. */
  readonly deleted: readonly { readonly version: HistoryVersion; readonly patients: readonly string[] }[];
  /** The last commit sequence examined, and how many versions were. */
  readonly lastSeq: number;
  readonly examined: number;
  /** True when the snapshot of this type has no more versions. */
  readonly done: boolean;
}

/**
 * The gate's side of Bulk Data export: who may start, watch, fetch and cancel an export (only
 * the client that started it, with scopes that still cover its types), and what each page of the
 * snapshot may disclose to it (consent action `disclose`). Nothing else reads the snapshot.
 */
export class ExportGate {
  private readonly reads: GatedReads;

  constructor(
    private readonly reader: StoreReader,
    private readonly policy: AccessPolicy,
    private readonly jobs: ExportJobs,
    seal: CursorSeal,
    private readonly registry: ClientRegistry,
    /** Where a download's accesses are noted (the request's audit, audit/trail.ts). */
    audit?: Pick<AuditSink, 'note'>,
  ) {
    // Decided on facts read for each page, not through the facts cache interactive requests
    // share: a snapshot visits every patient once per type, and past the cache's bound it
    // would clear it every few pages.
    this.reads = new GatedReads(reader, policy, seal, new TransactionView(reader), audit);
  }

  /** The types this client may search, and so export. */
  searchableTypes(ctx: AccessContext): ResourceType[] {
    return RESOURCE_TYPES.filter((t) => this.policy.allowsInteraction(ctx, t, 'search-type').effect === 'permit');
  }

  /** Records a new export for this client (after checking its scopes cover every type). */
  async start(ctx: AccessContext, id: string, req: ExportRequest): Promise<ExportJob> {
    for (const type of req.types) this.reads.allow(ctx, type, 'search-type');
    // A snapshot with AuditEvents moves the audit journal in: if that fails, the trail cannot be read (503).
    const snapshot = req.types.includes('AuditEvent') ? await trailRead(this.jobs.snapshot(req.types)) : undefined;
    return this.jobs.create({ id, clientId: ctx.clientId!, context: storeContext(ctx, req.baseUrl), level: req.level, types: req.types, since: req.since, request: req.request, issues: req.issues }, snapshot);
  }

  /**
   * The job, for the client that started it only: anyone else learns nothing, not even that it
   * exists (404). A cancelled or expired job is gone (404, as the IG requires after a DELETE).
   * The client must still stand as it did when it started the job (backgroundContext: still
   * registered, for the job's purpose, with the key it asked with), and ask as the registered
   * client (backgroundRefusal): its files were decided for that standing, and are not served to a
   * client whose purpose or key was withdrawn since, nor to a trusted issuer's token naming it.
   */
  async job(ctx: AccessContext, id: string): Promise<ExportJob> {
    const job = await this.jobs.get(id);
    if (!job || job.clientId !== ctx.clientId || job.status === 'cancelled') throw new FhirError('not-found', `No export ${id} of this client`);
    if (backgroundRefusal(ctx, this.registry, 'Bulk Data exports') || !backgroundContext(this.registry, job.context, ctx.requestId)) throw new FhirError('not-found', `No export ${id} of this client`);
    for (const type of job.types) this.reads.allow(ctx, type, 'search-type');
    return job;
  }

  async files(ctx: AccessContext, id: string): Promise<{ job: ExportJob; files: ExportFile[] }> {
    const job = await this.job(ctx, id);
    return { job, files: job.status === 'completed' ? await this.jobs.files(id) : [] };
  }

  /**
   * One file of a completed export of this client. The resources of an output file are decided
   * again, as the runner decided them when it wrote the file (action disclose, for the job's
   * client as it stands now): one that a Consent or an objection written since refuses is left
   * out (the manifest's count is then more than the file holds). Each resource served, or left
   * out, is on its patient's trail as this download: a file sits on the server for as long as
   * its export lasts, and a patient who opts out meanwhile is not sent by it.
   */
  async file(ctx: AccessContext, id: string, part: number): Promise<{ job: ExportJob; content: string }> {
    const job = await this.job(ctx, id);
    if (job.status !== 'completed') throw new FhirError('not-found', `Export ${id} has no files (it is ${job.status})`);
    const content = await this.jobs.fileContent(id, part);
    if (content === undefined) throw new FhirError('not-found', `Export ${id} has no file ${part}`);
    const file = (await this.jobs.files(id)).find((f) => f.part === part);
    // An error file holds only what the kick-off ignored under handling=lenient.
    if (!file || file.kind === 'error') return { job, content };
    const standing = backgroundContext(this.registry, job.context, ctx.requestId);
    if (!standing) throw new FhirError('not-found', `No export ${id} of this client`);
    if (file.kind === 'deleted') return { job, content: await this.deletionsKept(ctx, standing, job, content) };
    if (!isResourceType(file.type)) return { job, content };
    const type = file.type;
    const lines = content.split('\n').filter((l) => l.length > 0);
    const resources = lines.map((l) => JSON.parse(l) as Resource);
    const rows = new Map((await this.reader.currentMany(type, resources.map((r) => r.id!))).map((v) => [v.id, v]));
    // As written at the snapshot; judged as the record stands now (a version from history).
    const versions: HistoryVersion[] = resources.map((r) => {
      const row = rows.get(r.id!);
      return {
        rid: row?.rid ?? 0,
        type,
        id: r.id!,
        versionId: Number(r.meta?.versionId ?? 0),
        lastUpdated: Date.parse(r.meta?.lastUpdated ?? '') || 0,
        deleted: false,
        resource: r,
        createdBy: row?.createdBy ?? null,
        creatorOrg: row?.creatorOrg ?? null,
        seq: job.snapshot.seq,
        method: 'PUT',
      };
    });
    const decisions = await this.reads.decideVersions(standing, versions, DISCLOSE);
    let kept = '';
    versions.forEach((v, i) => {
      this.reads.note(ctx, 'read', v, decisions[i]);
      if (decisions[i].effect !== 'permit') return;
      const out = shown(ctx, v, decisions[i]);
      kept += `${out === v ? lines[i] : out.text}\n`;
    });
    return { job, content: kept };
  }

  /**
   * A deleted file's lines decided again, as the runner decided them (a deletion is shown to
   * whoever may see the version before it, see GatedReads.decideVersions): one whose earlier
   * version a Consent or an objection written since refuses is left out, and each is on its
   * patient's trail as this download. That a resource existed and was deleted is the patient's
   * data as much as the resource was.
   */
  private async deletionsKept(ctx: AccessContext, standing: AccessContext, job: ExportJob, content: string): Promise<string> {
    const found: { line: string; version: HistoryVersion }[] = [];
    for (const line of content.split('\n').filter((l) => l.length > 0)) {
      // The runner wrote each line; one that cannot be read is left out (nothing it says is decided).
      let bundle: Bundle | undefined;
      try {
        bundle = JSON.parse(line) as Bundle;
      } catch {
        continue;
      }
      const [type, id] = (bundle?.entry?.[0]?.request?.url ?? '').split('/');
      if (!isResourceType(type) || !id) continue;
      // The deletion the line reports: the resource's last version at the snapshot.
      const [version] = await this.reader.history({ types: [type], id, order: 'desc', beforeSeq: job.snapshot.seq + 1, limit: 1 });
      if (version?.deleted) found.push({ line, version });
    }
    const before = new Map<HistoryVersion, StoredVersion>();
    const decisions = await this.reads.decideVersions(standing, found.map((f) => f.version), DISCLOSE, before);
    let kept = '';
    found.forEach(({ line, version }, i) => {
      const previous = before.get(version);
      this.reads.note(ctx, 'read', version, decisions[i], previous ? patientIdsOf(previous) : []);
      if (decisions[i].effect === 'permit') kept += `${line}\n`;
    });
    return kept;
  }

  async cancel(ctx: AccessContext, id: string): Promise<void> {
    await this.job(ctx, id);
    await this.jobs.cancel(id);
  }

  /**
   * The next page of a job's snapshot for one type, decided for `ctx` (the job's client as it
   * stands now): `limit` versions the client may receive (output and deletions together), fewer
   * only when the type's snapshot runs out. A page is counted in what the client receives, never
   * in what was examined: a file of `limit` rows examined would tell, by its count, how many were
   * withheld (opt-outs, say). Versions without a patient are left out of Patient-level exports;
   * deletions are reported only when the export asked for changes `_since` an instant, and only
   * to a client that may see the version before them.
   */
  async page(ctx: AccessContext, job: ExportJob, type: ResourceType, afterSeq: number, limit: number, between: () => Promise<void> = async () => undefined): Promise<SnapshotPage> {
    this.reads.allow(ctx, type, 'search-type');
    const permitted: { version: HistoryVersion; patients: string[] }[] = [];
    let from = afterSeq;
    let examined = 0;
    for (;;) {
      const rows = await this.reader.snapshotPage(type, job.snapshot.seq, from, limit, job.since);
      const candidates: { version: HistoryVersion; patients: string[] }[] = [];
      for (const v of rows) {
        if (v.deleted && job.since === undefined) continue;
        const patients = v.deleted ? await this.patientsBefore(v) : definitions[type].patientIds(v.resource!);
        if (job.level === 'patient' && patients.length === 0) continue;
        candidates.push({ version: v, patients });
      }
      const decisions: Decision[] = await this.reads.decideVersions(ctx, candidates.map((c) => c.version), DISCLOSE);
      for (const [i, c] of candidates.entries()) if (decisions[i].effect === 'permit') permitted.push(c);
      if (permitted.length >= limit) {
        // Full: the page ends at its last version (what follows it in this batch is read again next time).
        const taken = permitted.slice(0, limit);
        const lastSeq = taken[taken.length - 1].version.seq;
        examined += rows.filter((r) => r.seq <= lastSeq).length;
        return { included: taken.filter((c) => !c.version.deleted), deleted: taken.filter((c) => c.version.deleted), lastSeq, examined, done: false };
      }
      examined += rows.length;
      if (rows.length < limit) {
        return { included: permitted.filter((c) => !c.version.deleted), deleted: permitted.filter((c) => c.version.deleted), lastSeq: rows.length ? rows[rows.length - 1].seq : from, examined, done: true };
      }
      from = rows[rows.length - 1].seq;
      // A client that may receive little of a large type scans many batches for one page: the
      // runner keeps its lease meanwhile (and stops if it lost it).
      await between();
    }
  }

  private async patientsBefore(v: HistoryVersion): Promise<string[]> {
    const previous = await this.reader.version(v.type, v.id, v.versionId - 1);
    return previous?.resource ? definitions[v.type].patientIds(previous.resource) : [];
  }
}
