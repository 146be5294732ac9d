import type { AuditEvent, Consent, Resource } from 'fhir/r4';
import { namesUnplacedPatient } from '../../resources/audit-event';
import { definitions, hasContent, patientIdsOf, type ResourceType } from '../../resources';
import { organizationKey, SERVER_CLIENT_ID, type AccessContext } from '../access/context';
import type { Decision } from '../consent/decision';
import { FhirError, outcomeOf } from '../errors';
import { indexReadsOf, type ResourceFilter } from '../search/filter';
import { readHead, type ChainHead, type ChainReport, type ChainTail } from '../store/audit-chain';
import { VerificationStopped } from '../store/verify-thread';
import { StoreReader, type HistoryRequest, type PagedVersion } from '../store/read';
import type { Keyset, OrderSql } from '../search/order';
import type { HistoryVersion, StoredVersion } from '../store/records';
import type { Store } from '../store/store';
import { indexQueuedIn, type AuditIndex } from '../store/audit-index';
import { moveJournalIn } from '../store/audit-journal';
import type { WrittenVersion } from '../store/subscriptions';
import type { Writer, WriteTx } from '../store/write';
import { bearerPatient, confinedToPatient, type Permission } from '../access/scopes';
import type { AccessNote, AuditInteraction } from '../audit/balp';
import { mayNeedRedaction, redactedEvent, seesWhole } from '../audit/redact';
import type { AuditSink } from '../audit/trail';
import { custodiansOf, type PatientRecord, type PolicyData } from '../consent/policy';
import { isCustodian } from '../consent/evaluate';
import { breakGlassHint, publicRefusal } from '../consent/refusal';
import { TransactionView } from './policy-data';
import { CursorSeal, type FeedCursorSeal, type PageCursor } from './cursor';
import { linksHold } from './links';
import type { AccessPolicy, ReadPurpose, SystemInteraction } from './policy';

/**
 * The one chokepoint between storage and responses (DESIGN.md invariant 1): every read of
 * resource content, and every write, passes an access decision here with the request's
 * AccessContext. Handlers and operations get a Gate, never the Store.
 *
 * Searches are filtered before paging and counting, so pages stay full and totals count only
 * what the asker may see (HAPI's consent interceptor does the same, for the same reason:
 * hiding existence).
 */
/** Who asked, as paging cursors are bound to it (search, $access-report). */
function askerOf(ctx: AccessContext): unknown[] {
  return [ctx.issuer ?? null, ctx.clientId, organizationKey(ctx.organization), ctx.purposeOfUse, ctx.patient ?? null, ctx.practitioner ?? null];
}

export class Gate {
  private readonly reads: GatedReads;
  private readonly seal: CursorSeal;

  constructor(
    private readonly store: Store,
    private readonly policy: AccessPolicy,
    /** Patient facts for the review operations ($access-decision, $sharing-summary). */
    private readonly facts?: PolicyData,
    /** Where every decided access is reported, for the audit trail. */
    private readonly audit?: AuditSink,
    /** What else every write transaction does (the subscription outbox). */
    private readonly hooks?: CommitHooks,
  ) {
    this.seal = new CursorSeal(store.cursorKey, store.cutovers.numericFeedCursorsUpTo);
    this.reads = new GatedReads(store.reader, policy, this.seal, undefined, audit, store.auditIndex);
  }

  /**
   * `$verify`: walks the audit chain (and checks each kept `anchor` is in it). For auditors only;
   * it reads the trail to hash it and returns nothing of it but where it breaks and its head.
   */
  async verifyAuditChain(ctx: AccessContext, anchors: readonly ChainTail[] = []): Promise<ChainReport> {
    this.reads.allow(ctx, 'AuditEvent', 'search-type');
    if (!ctx.roles.includes('auditor')) throw new FhirError('forbidden', 'Only auditors may verify the audit trail');
    this.audit?.note(ctx, { interaction: 'operation', reference: 'AuditEvent', patients: [], decision: PERMITTED });
    try {
      return await this.store.verifier.verify({ localBase: this.store.localBase, anchors });
    } catch (err) {
      if (err instanceof VerificationStopped) throw new FhirError('unavailable', `${err.message}; try again later`);
      throw err;
    }
  }

  /** The audit chain's head as stored now, for the log that keeps it outside the database (audit/head-log.ts). */
  auditChainHead(): Promise<ChainHead | undefined> {
    return readHead(this.store.driver);
  }

  /**
   * `$access-report`: the AuditEvents about a patient, for the patient, its custodian and
   * auditors (reading the trail is itself audited). Newest first by when they were recorded (then
   * by row), `limit` a page, below the page edge `cursor` (a sealed cursor from an earlier page's
   * `next`, bound like search cursors to the report and to who asked), with the cursor of the
   * next page when there is one.
   */
  async accessReport(ctx: AccessContext, patientId: string, since: number | undefined, limit: number, cursor?: string): Promise<{ events: StoredVersion[]; next?: string; auditor: boolean }> {
    // Reviewed first, so that the attempt is on the patient's trail whatever the cursor.
    const { auditor } = await this.reviewPatient(ctx, patientId);
    const report = JSON.stringify(['$access-report', patientId, since ?? null, askerOf(ctx)]);
    const from = cursor !== undefined ? this.seal.open(cursor, report, 1) : undefined;
    if (from && (from.dir !== 'after' || typeof from.at.keys[0] !== 'number')) throw new FhirError('invalid-request', 'Invalid _cursor: not a cursor this server issued for this report', { expression: ['_cursor'] });
    // It reads the `patient` index rows only, which are written with the events.
    await trailRead(this.store.auditIndex.catchUp([`Patient/${patientId}`], ['patient']));
    const found = await this.store.reader.byPatient('AuditEvent', 'patient', [patientId]);
    // The index rows find them; each event's content says whom it is about, as it does for every
    // other read of the trail: a row that names the patient where the content does not (an event
    // posted with a reference only the indexer resolves) stays out, and so does an event an audit
    // source posted about this patient and others, except for auditors (it would show the patient
    // the others; a read of it is refused to the patient and to a custodian of this one alone).
    const events = found.filter((v) => {
      const about = v.resource ? definitions.AuditEvent.patientIds(v.resource) : [];
      // The server's own events name one patient as their subject (BALP, one event per patient);
      // another patient in one is the user who looked (a token's fhirUser, a guardian), whom the
      // report is there to show.
      // A patient named by an identifier this server could not place counts as another one.
      const alone = () => about.every((p) => p === patientId) && !namesUnplacedPatient(v.resource as AuditEvent);
      return about.includes(patientId) && (auditor || v.createdBy === SERVER_CLIENT_ID || alone());
    });
    // (an instant Date.parse cannot read, a leap second say, sorts as the oldest)
    const recorded = (v: StoredVersion) => Date.parse((v.resource as unknown as { recorded: string }).recorded) || 0;
    // Newest first by when they were recorded: rids are not in that order (the audit worker's
    // events get theirs when they are moved from its journal, after events appended since).
    // A page starts below the last line of the one before, so events recorded since (newer) or
    // moved in since (older, with larger rids) neither repeat nor shift a line out of reach.
    const edge = from ? { recorded: from.at.keys[0] as number, rid: from.at.rid } : undefined;
    const below = (v: StoredVersion) => !edge || recorded(v) < edge.recorded || (recorded(v) === edge.recorded && v.rid < edge.rid);
    const ordered = events.filter((v) => (since === undefined || recorded(v) >= since) && below(v)).sort((a, b) => recorded(b) - recorded(a) || b.rid - a.rid);
    const page = ordered.slice(0, limit);
    const last = page[page.length - 1];
    return { events: page, auditor, ...(ordered.length > limit && last ? { next: this.seal.seal({ dir: 'after', at: { rid: last.rid, keys: [recorded(last)] } }, report) } : {}) };
  }

  /**
   * For the operations that explain access to a patient's record ($access-report,
   * $access-decision, $sharing-summary): the patient's facts (Patient, creator, Consents), for its
   * custodian, auditors and the patient only. Anyone else gets a 403 that does not say whether
   * the patient exists. Every review, permitted or refused, is on the patient's own trail.
   */
  async reviewPatient(ctx: AccessContext, patientId: string): Promise<{ record: PatientRecord; auditor: boolean; resource: (type: ResourceType, id: string) => Promise<StoredVersion | undefined> }> {
    const reviewed = (decision: Decision) => this.audit?.note(ctx, { interaction: 'operation', reference: `Patient/${patientId}`, patients: [patientId], decision });
    const reads = ['Patient', 'Consent', 'AuditEvent'] as const;
    if (!reads.some((t) => this.policy.allowsInteraction(ctx, t, 'read').effect === 'permit')) {
      const decision = this.policy.allowsInteraction(ctx, 'Patient', 'read');
      reviewed(decision);
      throw refused('review of this record', decision);
    }
    if (!this.facts) throw new FhirError('internal', 'no patient facts configured');
    const record = (await this.facts.patients([patientId], ctx)).get(patientId);
    // A patient/ token reviews its own patient's record only (confinedToPatient).
    const confined = confinedToPatient(ctx.scopes, reads);
    const auditor = ctx.roles.includes('auditor') && !confined;
    const notPermitted = () => {
      reviewed(REVIEW_REFUSED);
      return new FhirError('forbidden', 'Only the patient\'s custodian, auditors and the patient may review who can see this record');
    };
    if (!record?.resource) {
      if (auditor) {
        reviewed(UNKNOWN_PATIENT);
        throw new FhirError('not-found', `Patient/${patientId} is not known`);
      }
      throw notPermitted();
    }
    const allowed = confined ? bearerPatient(ctx) === patientId : auditor || bearerPatient(ctx) === patientId || isCustodian(ctx.organization, custodiansOf(record.resource, record.creatorOrg));
    if (!allowed) throw notPermitted();
    reviewed(PERMITTED);
    return {
      record,
      auditor,
      // The reviewer may learn decisions about any of the patient's data, never its content.
      resource: async (type, id) => {
        if (type === 'AuditEvent') await trailRead(this.store.auditIndex.materialized());
        const v = await this.store.reader.current(type, id);
        return v && !v.deleted && v.resource && definitions[type].patientIds(v.resource).includes(patientId) ? v : undefined;
      },
    };
  }

  read(ctx: AccessContext, type: ResourceType, id: string): Promise<StoredVersion> {
    return this.reads.read(ctx, type, id);
  }
  vread(ctx: AccessContext, type: ResourceType, id: string, versionId: number): Promise<HistoryVersion> {
    return this.reads.vread(ctx, type, id, versionId);
  }
  search(ctx: AccessContext, q: SearchQuery): Promise<SearchResult> {
    return this.reads.search(ctx, q);
  }
  count(ctx: AccessContext, q: Pick<SearchQuery, 'types' | 'filter'>): Promise<number> {
    return this.reads.count(ctx, q);
  }
  included(ctx: AccessContext, refs: readonly { type: ResourceType; id: string }[]): Promise<StoredVersion[]> {
    return this.reads.included(ctx, refs);
  }
  revincluded(ctx: AccessContext, q: SearchQuery): Promise<SearchResult | undefined> {
    return this.reads.revincluded(ctx, q);
  }
  history(ctx: AccessContext, req: HistoryRequest): Promise<HistoryPage> {
    return this.reads.history(ctx, req);
  }
  get feedCursor(): FeedCursorSeal {
    return this.seal.feed;
  }
  historyCount(ctx: AccessContext, req: Omit<HistoryRequest, 'limit' | 'order'>): Promise<number> {
    return this.reads.historyCount(ctx, req);
  }

  /**
   * Runs writes (and the reads they need) in one database transaction; every write is
   * authorised by the policy, and reads inside the transaction see only what the context may see.
   * `readsAuditIndex`: the transaction searches AuditEvents (a transaction Bundle's GET entries,
   * an AuditEvent's If-None-Exist), so the audit trail's own events are indexed first: the
   * transaction cannot wait for them once it holds the writer.
   */
  async transaction<T>(ctx: AccessContext, fn: (tx: GatedTx) => Promise<T>, options: { readsAuditIndex?: boolean } = {}): Promise<T> {
    if (options.readsAuditIndex) await trailRead(this.store.auditIndex.catchUp());
    let changes: readonly WrittenVersion[] = [];
    let attempted: readonly AccessNote[] = [];
    // What the write did is audited in its own transaction: both commit, or neither does.
    const audit = this.audit?.transaction(ctx);
    let appended = 0;
    return this.store
      .transaction(async (tx) => {
        // Events committed since the catch-up above are moved in (SQLite's journal) and indexed
        // now, in the transaction, which holds the writer: its searches see every AuditEvent
        // committed before it, on every parameter.
        if (options.readsAuditIndex) {
          if (this.store.dialect === 'sqlite') await trailRead(moveJournalIn(tx.q));
          await trailRead(indexQueuedIn(tx.q, this.store.dialect, this.store.localBase));
        }
        const gated = new GatedTx(tx, ctx, this.policy, this.seal, audit);
        changes = gated.changes;
        attempted = gated.attempted;
        const result = await fn(gated);
        await gated.settle();
        if (this.hooks && changes.length) await this.hooks.beforeCommit(tx, changes);
        // Last before COMMIT: a failure to write the audit rolls the write back (fail closed).
        if (audit) appended = await audit.append(tx);
        return result;
      })
      .then(
        (result) => {
          audit?.committed();
          if (appended) this.store.auditIndex.nudge(appended);
          if (changes.length) this.hooks?.afterCommit?.(changes);
          return result;
        },
        (err: unknown) => {
          audit?.rolledBack(changes, err, attempted);
          throw err;
        },
      );
  }
}

/**
 * What else happens in every write transaction: before COMMIT, in the same transaction, with
 * the versions it wrote (the subscription outbox is filled here, so a notification is queued
 * exactly when its change commits); after COMMIT, a nudge for whoever works the queue.
 */
export interface CommitHooks {
  beforeCommit(tx: WriteTx, changes: readonly WrittenVersion[]): Promise<void>;
  afterCommit?(changes: readonly WrittenVersion[]): void;
}

/**
 * A permitted version as its reader gets it: an AuditEvent's parts that are the whole request's
 * (its query, a failure's text) only for those who see events whole (audit/redact.ts). Every
 * read path that hands content to a client passes it through here.
 */
export function shown<V extends StoredVersion>(ctx: AccessContext, v: V, decision: Decision): V {
  if (v.type !== 'AuditEvent' || v.deleted || decision.effect !== 'permit' || seesWhole(decision, ctx.clientId, v.createdBy)) return v;
  if (v.text !== undefined && !mayNeedRedaction(v.text)) return v;
  const event = v.resource as AuditEvent | undefined;
  const redacted = event && redactedEvent(event, patientIdsOf(v));
  if (!redacted) return v;
  return { ...v, resource: redacted, text: JSON.stringify(redacted) };
}

/**
 * Rows to read next for a page of `want` visible versions, `found` of them among the `scanned`
 * read so far. First a page's worth and up to 64 more: a small page fills in one read even when
 * half its matches are hidden, and a large one reads little it does not need (every row read is
 * parsed and decided: reading twice the page cost the Consent walk, pages of 1000 all visible,
 * a thousand rows per page for nothing). Then what is still wanted at the visible share seen so
 * far, a fifth more for that share to vary. At least 50 (a round trip costs more than a few
 * rows), at most 2000.
 */
export function batchSize(want: number, found: number, scanned: number): number {
  const rows = scanned === 0 ? want + Math.min(want, 64) : ((want - found) * scanned * 1.2) / Math.max(found, scanned / 40);
  return Math.min(Math.max(Math.ceil(rows), 50), 2000);
}

/** The read interactions, over the reader connection or inside a write transaction. */
export class GatedReads {
  constructor(
    private readonly reader: StoreReader,
    private readonly policy: AccessPolicy,
    private readonly seal: CursorSeal,
    /** Inside a transaction: the transaction's view of patients and Consents for the policy. */
    private readonly view?: PolicyData,
    private readonly audit?: Pick<AuditSink, 'note'>,
    /**
     * The audit trail's deferred part (store/audit-index.ts): brought up to date before the trail
     * is read (its journal moved, and for searches its index built, for the given patients only
     * if given). Unset inside transactions, which cannot wait for it once they hold the writer.
     */
    private readonly trail?: Pick<AuditIndex, 'catchUp' | 'materialized'>,
  ) {}

  /** Brings the AuditEvent search index up to date (see `trail`). */
  private indexAudit(patients?: readonly string[], params?: readonly string[]): Promise<void> | undefined {
    return this.trail ? trailRead(this.trail.catchUp(patients, params)) : undefined;
  }

  /** Before reading AuditEvents other than by search: every one committed is in the trail's tables (see `trail`). */
  private async trailSettled(types: readonly ResourceType[]): Promise<void> {
    if (this.trail && types.includes('AuditEvent')) await trailRead(this.trail.materialized());
  }

  /** Seals and opens the history feed's cursors (see FeedCursorSeal). */
  get feedCursor(): FeedCursorSeal {
    return this.seal.feed;
  }

  /**
   * Reports one decided access of one version to the audit trail; `patients`, for a deletion
   * (no content), are those of the version it replaced.
   */
  note(ctx: AccessContext, interaction: AuditInteraction, v: StoredVersion, decision: Decision, patients?: readonly string[]): void {
    if (!this.audit) return;
    const whose = patients ?? patientIdsOf(v);
    this.audit.note(ctx, { interaction, reference: `${v.type}/${v.id}/_history/${v.versionId}`, patients: whose, decision });
  }

  /**
   * Notes a version a count counted, once per set of patients (`noted`, kept by the count): a
   * count over a whole type must not hold a note for every resource it counted (a million
   * AuditEvents are about far fewer patients), and one resource names the count on their trail.
   */
  private noteCounted(ctx: AccessContext, interaction: AuditInteraction, v: StoredVersion, decision: Decision, whose: readonly string[], noted: Set<string>): void {
    const key = whose.join('\u0000');
    if (noted.has(key)) return;
    noted.add(key);
    this.note(ctx, interaction, v, decision, whose);
  }

  private async decide(ctx: AccessContext, version: StoredVersion, purpose: ReadPurpose): Promise<Decision> {
    const [decision] = await this.policy.canRead(ctx, [version], purpose, this.view);
    return decision;
  }

  /** 403 unless the context's scopes allow the interaction on the type at all (checked before any data is touched). */
  allow(ctx: AccessContext, type: ResourceType, interaction: SystemInteraction): void {
    const decision = this.policy.allowsInteraction(ctx, type, interaction);
    if (decision.effect === 'deny') throw refused(`${interaction} on ${type}`, decision);
  }

  /** The current version of a resource: 404 if it never existed, 410 if deleted, 403 if hidden. */
  async read(ctx: AccessContext, type: ResourceType, id: string): Promise<StoredVersion> {
    this.allow(ctx, type, 'read');
    await this.trailSettled([type]);
    const purpose: ReadPurpose = { permission: 'r', action: 'access' };
    const version = await this.reader.current(type, id);
    if (!version) throw new FhirError('not-found', `${type}/${id} is not known`);
    if (version.deleted) {
      // A deletion carries no content, but that the resource existed is itself patient data: the
      // 410 is on the trail of the patients of its last version with content.
      const known = await this.assertMayKnowOf(ctx, type, id, purpose);
      if (known) this.note(ctx, 'read', version, known.decision, patientIdsOf(known.last));
      throw new FhirError('gone', `${type}/${id} was deleted`, { headers: { ETag: `W/"${version.versionId}"` } });
    }
    const decision = await this.decide(ctx, version, purpose);
    this.note(ctx, 'read', version, decision);
    if (decision.effect === 'deny') throw forbidden(type, decision, ctx, true);
    return shown(ctx, version, decision);
  }

  /** One version of a resource (vread). */
  async vread(ctx: AccessContext, type: ResourceType, id: string, versionId: number): Promise<HistoryVersion> {
    this.allow(ctx, type, 'vread');
    await this.trailSettled([type]);
    const purpose: ReadPurpose = { permission: 'r', action: 'access' };
    const version = await this.reader.version(type, id, versionId);
    if (!version) {
      // "No such version" tells that the resource exists: on the trail of its last version's
      // patients, naming the resource (not a version that never was).
      const known = await this.assertMayKnowOf(ctx, type, id, purpose, true);
      if (known) this.audit?.note(ctx, { interaction: 'vread', reference: `${type}/${id}`, patients: patientIdsOf(known.last), decision: known.decision });
      throw new FhirError('not-found', `${type}/${id} has no version ${versionId}`);
    }
    if (version.deleted) {
      // A deletion is shown to whoever may see the version it deleted, as in history
      // (decideVersions), not the newest version with content, which may have come after it.
      const before = versionId > 1 ? await this.reader.version(type, id, versionId - 1) : undefined;
      if (before && !before.deleted) {
        const decision = await this.decide(ctx, before, purpose);
        if (decision.effect === 'deny') {
          this.note(ctx, 'vread', before, decision);
          throw forbidden(type, decision, ctx, true);
        }
        this.note(ctx, 'vread', version, decision, patientIdsOf(before));
      } else {
        const known = await this.assertMayKnowOf(ctx, type, id, purpose);
        if (known) this.note(ctx, 'vread', version, known.decision, patientIdsOf(known.last));
      }
      throw new FhirError('gone', `${type}/${id} version ${versionId} is a deletion`);
    }
    const decision = await this.decide(ctx, version, purpose);
    this.note(ctx, 'vread', version, decision);
    if (decision.effect === 'deny') throw forbidden(type, decision, ctx, true);
    return shown(ctx, version, decision);
  }

  /**
   * For answers that reveal only that a resource exists (410, unknown version): the asker must
   * be allowed to see its last version with content. `unknown` says what to do when the
   * resource never existed at all. Returns that version and the decision that permitted it
   * (undefined when there is none), for the caller to put the answer on its patients' trail.
   */
  async assertMayKnowOf(
    ctx: AccessContext,
    type: ResourceType,
    id: string,
    purpose: ReadPurpose,
    notFoundIfUnknown = false,
  ): Promise<{ last: HistoryVersion; decision: Decision } | undefined> {
    const versions = await this.reader.history({ types: [type], id, order: 'desc', limit: 100 });
    if (versions.length === 0) {
      if (notFoundIfUnknown) throw new FhirError('not-found', `${type}/${id} is not known`);
      return undefined;
    }
    const last = versions.find((v) => !v.deleted);
    if (!last) return undefined;
    const decision = await this.decide(ctx, last, purpose);
    if (decision.effect === 'deny') {
      this.note(ctx, purpose.permission === 'r' ? 'read' : 'update', last, decision);
      throw forbidden(type, decision, ctx, purpose.permission === 'r' || purpose.permission === 's');
    }
    return { last, decision };
  }

  /**
   * The types of a search this context may use the interaction on (system search leaves the
   * others out; a one-type search is refused with 403), and the filter plus whatever the policy
   * restricts this context's searches to, per type.
   */
  private restricted(ctx: AccessContext, q: SearchQuery, interaction: SystemInteraction): { types: ResourceType[]; filter: ResourceFilter } {
    let types = [...q.types];
    if (types.length === 1) this.allow(ctx, types[0], interaction);
    else {
      types = types.filter((t) => this.policy.allowsInteraction(ctx, t, interaction).effect === 'permit');
      if (types.length === 0) this.allow(ctx, q.types[0], interaction);
    }
    const parts: string[] = [];
    const params: unknown[] = [];
    const filters = [q.filter];
    for (const t of types) {
      const extra = this.policy.searchFilter?.(ctx, t);
      if (!extra) continue;
      if (types.length === 1) parts.push(`(${extra.where})`);
      else parts.push(`(r.type <> '${t}' OR (${extra.where}))`);
      params.push(...extra.params);
      filters.push(extra);
    }
    // The restrictions are checked per row whichever way the query's own filter is run.
    const and = (where: string, whereParams: readonly unknown[]) => ({ where: [`(${where})`, ...parts].join(' AND '), params: [...whereParams, ...params] });
    const driven = q.filter.driven && types.length === 1 ? { ...q.filter.driven, ...and(q.filter.driven.where, q.filter.driven.params) } : undefined;
    return { types, filter: { ...and(q.filter.where, q.filter.params), links: q.filter.links, ...indexReadsOf(filters), ...(driven ? { driven } : {}) } };
  }

  /**
   * Waits until the AuditEvent index rows the search reads are built (most are built after the
   * events are committed, see store/audit-index.ts): for an AuditEvent search confined to some
   * patients, only those patients' queued events; otherwise the whole backlog. `restricted` is
   * the filter as run (the query's and the context's restriction): the index rows it and the
   * sort read tell whether the early rows, written with the events, are all it needs.
   */
  private async auditIndexed(types: readonly ResourceType[], filter: ResourceFilter, restricted: ResourceFilter, order: OrderSql | undefined): Promise<void> {
    if (restricted.readsAuditIndex) return this.indexAudit?.();
    if (!types.includes('AuditEvent')) return;
    if (types.length !== 1) return this.indexAudit?.();
    const keys = order?.keys ?? [];
    const params = restricted.indexParams ? [...restricted.indexParams, ...keys.flatMap((k) => (k.param ? [k.param] : []))] : undefined;
    await this.indexAudit?.(filter.auditPatients, params);
  }

  /**
   * Matches the context may see, in the query's order, from a keyset position: reads batches
   * from the store until `want` permitted versions are found or the matches run out. Nothing
   * is reported to the audit trail here.
   */
  private async collect(ctx: AccessContext, q: SearchQuery, from: PageCursor | undefined, want: number, interaction: SystemInteraction): Promise<{ found: PagedVersion[]; decided: Map<PagedVersion, Decision> }> {
    const { types, filter } = this.restricted(ctx, q, interaction);
    await this.auditIndexed(types, q.filter, filter, q.order);
    const purpose: ReadPurpose = { permission: interaction === 'search-type' ? 's' : permissionOf(interaction), action: 'access' };
    const backwards = from?.dir === 'before';
    const found: PagedVersion[] = [];
    const decided = new Map<PagedVersion, Decision>();
    let at = from?.at;
    if (want <= 0) return { found, decided };
    let scanned = 0;
    for (;;) {
      const batch = batchSize(want, found.length, scanned);
      const rows = await this.reader.page({ types, filter, order: q.order, ...(at ? (backwards ? { before: at } : { after: at }) : {}), limit: batch });
      scanned += rows.length;
      const ordered = backwards ? [...rows].reverse() : rows;
      const decisions = await this.policy.canRead(ctx, ordered, purpose, this.view);
      const linked = filter.links ? await linksHold(this.reader, this.policy, ctx, this.view, ordered, filter.links) : undefined;
      ordered.forEach((v, i) => {
        if (found.length < want && decisions[i].effect === 'permit' && (!linked || linked[i])) {
          found.push(v);
          decided.set(v, decisions[i]);
        }
      });
      if (found.length >= want || rows.length < batch) break;
      at = ordered[ordered.length - 1].position;
    }
    return { found, decided };
  }

  /**
   * One page of search results, filled with visible resources only (filter before paging, so
   * pages stay full and a hidden match leaves no gap), in the query's order.
   */
  async search(ctx: AccessContext, q: SearchQuery, interaction: SystemInteraction = 'search-type'): Promise<SearchResult> {
    // The cursor is bound to the search and to who asked: replayed by another client (it travels
    // in URLs, and the audit trail records queries), a page edge of a search it could not see
    // whole would tell where resources hidden from it lie in the order.
    const search = JSON.stringify([q.types, q.filter.where, q.filter.params, q.order?.keys.map((k) => [k.expr, k.desc]) ?? [], askerOf(ctx)]);
    const from = q.cursor !== undefined ? this.seal.open(q.cursor, search, q.order?.keys.length ?? 0) : undefined;
    const backwards = from?.dir === 'before';
    // one extra says whether another page exists
    const { found, decided } = await this.collect(ctx, q, from, q.count + 1, interaction);
    const more = found.length > q.count;
    const entries = found.slice(0, q.count);
    if (backwards) entries.reverse();
    for (const v of entries) this.note(ctx, interaction as AuditInteraction, v, decided.get(v)!);
    const hasNext = entries.length > 0 && (backwards || more);
    const hasPrevious = entries.length > 0 && (backwards ? more : from !== undefined);
    return {
      entries: entries.map((v) => shown(ctx, v, decided.get(v)!)),
      next: hasNext ? this.seal.seal({ dir: 'after', at: entries[entries.length - 1].position }, search) : undefined,
      previous: hasPrevious ? this.seal.seal({ dir: 'before', at: entries[0].position }, search) : undefined,
    };
  }

  /**
   * `_revinclude`: a search's page as `search` gives it, or undefined when the context may not
   * search that type at all (a wildcard stands for every type that can point at the matches; like
   * `included`, what the context may not read is left out, not refused).
   */
  async revincluded(ctx: AccessContext, q: SearchQuery): Promise<SearchResult | undefined> {
    if (q.types.every((t) => this.policy.allowsInteraction(ctx, t, 'search-type').effect === 'deny')) return undefined;
    return this.search(ctx, q);
  }

  /**
   * `_include`: the current versions of referenced resources that the context may see (each
   * decided and audited like a search match); hidden, deleted and unknown ones are left out.
   */
  async included(ctx: AccessContext, refs: readonly { type: ResourceType; id: string }[]): Promise<StoredVersion[]> {
    const out: StoredVersion[] = [];
    const purpose: ReadPurpose = { permission: 's', action: 'access' };
    for (const type of new Set(refs.map((r) => r.type))) {
      if (this.policy.allowsInteraction(ctx, type, 'search-type').effect === 'deny') continue;
      await this.trailSettled([type]);
      const ids = [...new Set(refs.filter((r) => r.type === type).map((r) => r.id))];
      const versions = (await this.reader.currentMany(type, ids)).filter((v) => !v.deleted);
      const decisions = await this.policy.canRead(ctx, versions, purpose, this.view);
      versions.forEach((v, i) => {
        if (decisions[i].effect !== 'permit') return;
        this.note(ctx, 'search-type', v, decisions[i]);
        out.push(shown(ctx, v, decisions[i]));
      });
    }
    return out;
  }

  /** How many resources match the filter that this context may see; each one counted is on its patients' trail (audited as a match). */
  async count(ctx: AccessContext, q: Pick<SearchQuery, 'types' | 'filter'>): Promise<number> {
    const { types, filter } = this.restricted(ctx, { ...q, count: 0 }, 'search-type');
    await this.auditIndexed(types, q.filter, filter, undefined);
    const purpose: ReadPurpose = { permission: 's', action: 'access' };
    let total = 0;
    const noted = new Set<string>();
    let after: Keyset | undefined;
    for (;;) {
      const rows = await this.reader.page({ types, filter, after, limit: 1000 });
      const decisions = await this.policy.canRead(ctx, rows, purpose, this.view);
      const linked = filter.links ? await linksHold(this.reader, this.policy, ctx, this.view, rows, filter.links) : undefined;
      rows.forEach((v, i) => {
        if (decisions[i].effect !== 'permit' || (linked && !linked[i])) return;
        total++;
        // Counted is touched: a count is an answer about the data (how many of this patient's
        // match), so it is on the trail of every patient it counted, as a search match is.
        this.noteCounted(ctx, 'search-type', v, decisions[i], patientIdsOf(v), noted);
      });
      if (rows.length < 1000) return total;
      after = rows[rows.length - 1].position;
    }
  }

  /**
   * A page of history in commit order (newest first by default). Instance history of a hidden
   * resource is refused outright (403); in type and system history hidden versions are left
   * out before paging. A deletion is shown to whoever may see the version before it.
   */
  async history(ctx: AccessContext, unscoped: HistoryRequest): Promise<HistoryPage> {
    const { req, purpose } = this.historyScope(ctx, unscoped);
    await this.trailSettled(req.types);
    if (req.id !== undefined) await this.assertMayKnowOf(ctx, req.types[0], req.id, purpose, true);
    // `_count=0`: no entries, and a forward walker's cursor keeps its position.
    if (req.limit === 0) return { entries: [], scannedTo: req.order === 'asc' ? req.afterSeq : undefined };
    // Where an open forward walk resumes once it has read everything: the commit head as it was
    // before the scan, never the position of the last version scanned. That one could be a
    // version the client may not see, and a cursor placed by it, replayed with another window or
    // type, would tell where (and so when) such versions lie.
    const head = req.order === 'asc' && req.beforeSeq === undefined ? await this.reader.headSeq() : undefined;
    const want = req.limit + 1;
    const found: HistoryVersion[] = [];
    const decided = new Map<HistoryVersion, Decision>();
    let bounds = { beforeSeq: req.beforeSeq, afterSeq: req.afterSeq };
    let lastVisible: number | undefined;
    const replaced = new Map<HistoryVersion, StoredVersion>();
    let scanned = 0;
    for (;;) {
      const batch = batchSize(want, found.length, scanned);
      const rows = await this.reader.history({ ...req, ...bounds, limit: batch });
      scanned += rows.length;
      const visible = await this.decideVersions(ctx, rows, purpose, replaced);
      rows.forEach((v, i) => {
        if (found.length >= want) return;
        if (visible[i].effect === 'permit') {
          lastVisible = v.seq;
          found.push(v);
          decided.set(v, visible[i]);
        }
      });
      if (found.length >= want || rows.length < batch) break;
      const last = rows[rows.length - 1].seq;
      bounds = req.order === 'asc' ? { ...bounds, afterSeq: last } : { ...bounds, beforeSeq: last };
    }
    const entries = found.slice(0, req.limit);
    const interaction: AuditInteraction = req.id !== undefined ? 'history-instance' : req.types.length === 1 ? 'history-type' : 'history-system';
    for (const v of entries) {
      // A deletion shown is an access too: that the resource existed and was deleted, on the trail
      // of the patients of the version it replaced.
      const before = replaced.get(v);
      if (!v.deleted) this.note(ctx, interaction, v, decided.get(v)!);
      else if (before && hasContent(before)) this.note(ctx, interaction, v, decided.get(v)!, patientIdsOf(before));
    }
    const more = found.length > req.limit;
    const out = entries.map((v) => shown(ctx, v, decided.get(v)!));
    if (more) return { entries: out, nextSeq: entries[entries.length - 1].seq, scannedTo: entries[entries.length - 1].seq };
    // Everything up to the head was read (the versions above it, committed since, were read too
    // if there were any; the last of them the client may see bounds the resume point from below).
    const ends = [req.afterSeq, lastVisible, head].filter((x): x is number => x !== undefined);
    return { entries: out, scannedTo: ends.length ? Math.max(...ends) : undefined };
  }

  /**
   * How many versions of the history window this context may see (`_summary=count` on history):
   * the same filter as history() applies, version by version, so a reconciling client can compare
   * it with what it received. Each version counted is on its patients' trail.
   */
  async historyCount(ctx: AccessContext, req: Omit<HistoryRequest, 'limit' | 'order'>): Promise<number> {
    const { purpose, req: scoped } = this.historyScope(ctx, req);
    await this.trailSettled(scoped.types);
    if (scoped.id !== undefined) await this.assertMayKnowOf(ctx, scoped.types[0], scoped.id, purpose, true);
    const interaction: AuditInteraction = scoped.id !== undefined ? 'history-instance' : scoped.types.length === 1 ? 'history-type' : 'history-system';
    let total = 0;
    const noted = new Set<string>();
    let afterSeq = scoped.afterSeq;
    for (;;) {
      const rows = await this.reader.history({ ...scoped, afterSeq, order: 'asc', limit: 2000 });
      const replaced = new Map<HistoryVersion, StoredVersion>();
      const decisions = await this.decideVersions(ctx, rows, purpose, replaced);
      rows.forEach((v, i) => {
        if (decisions[i].effect !== 'permit') return;
        total++;
        // On the trail of every patient whose versions it counted, as history listing them is
        // (one version per patient names it there, as in count()); a deletion is on that of the
        // patients of the version it replaced.
        const before = replaced.get(v);
        const whose = !v.deleted ? patientIdsOf(v) : before && hasContent(before) ? patientIdsOf(before) : undefined;
        if (whose) this.noteCounted(ctx, interaction, v, decisions[i], whose, noted);
      });
      if (rows.length < 2000) return total;
      afterSeq = rows[rows.length - 1].seq;
    }
  }

  /** The scope check of a history request, and the types a system history covers for this context. */
  private historyScope<R extends Pick<HistoryRequest, 'types' | 'id'>>(ctx: AccessContext, req: R): { req: R; purpose: ReadPurpose } {
    if (req.id !== undefined) {
      this.allow(ctx, req.types[0], 'history-instance');
      return { req, purpose: { permission: 'r', action: 'access' } };
    }
    if (req.types.length === 1) {
      this.allow(ctx, req.types[0], 'history-type');
      return { req, purpose: { permission: 's', action: 'access' } };
    }
    // System history covers the types this context may list; others are left out, not refused.
    const types = req.types.filter((t) => this.policy.allowsInteraction(ctx, t, 'history-system').effect === 'permit');
    if (types.length === 0) this.allow(ctx, req.types[0], 'history-system');
    return { req: { ...req, types }, purpose: { permission: 's', action: 'access' } };
  }

  /**
   * Decisions for versions of a history walk: a deletion is decided as the version before it
   * (put in `replaced`, when given).
   */
  async decideVersions(ctx: AccessContext, rows: readonly HistoryVersion[], purpose: ReadPurpose, replaced?: Map<HistoryVersion, StoredVersion>): Promise<Decision[]> {
    const withContent = rows.filter((v) => !v.deleted);
    const decisions = await this.policy.canRead(ctx, withContent, purpose, this.view);
    const byKey = new Map(withContent.map((v, i) => [`${v.type}/${v.id}/${v.versionId}`, decisions[i]]));
    const out: Decision[] = [];
    for (const v of rows) {
      if (!v.deleted) {
        out.push(byKey.get(`${v.type}/${v.id}/${v.versionId}`)!);
        continue;
      }
      // A deletion is shown to whoever may see the version before it.
      const previous = await this.reader.version(v.type, v.id, v.versionId - 1);
      if (previous && !previous.deleted) replaced?.set(v, previous);
      out.push(previous && !previous.deleted ? await this.decide(ctx, previous, purpose) : NO_CONTENT);
    }
    return out;
  }
}

/** A compiled search over one or more types (several for system search), one page of it. */
export interface SearchQuery {
  readonly types: readonly ResourceType[];
  readonly filter: ResourceFilter;
  readonly order?: OrderSql;
  readonly count: number;
  /** A sealed cursor from an earlier page of this same search (see gate/cursor.ts). */
  readonly cursor?: string;
}

export interface SearchResult {
  readonly entries: PagedVersion[];
  /** Sealed cursors for the next / previous page, when there is one. */
  readonly next?: string;
  readonly previous?: string;
}

export interface HistoryPage {
  readonly entries: HistoryVersion[];
  /** The seq bound for the next page, when there is one. */
  readonly nextSeq?: number;
  /**
   * The last seq this page accounts for: every version up to it (in the page's order) was either
   * returned or is hidden from this context. A forward walker resumes after it.
   */
  readonly scannedTo?: number;
}

/**
 * A write transaction seen through the gate: the interactions (create, update, patch, delete,
 * their conditional forms, bundles) use only this, so a write can neither reveal nor modify a
 * resource the context may not see.
 */
export class GatedTx {
  /** Reads inside the transaction (they see its own uncommitted writes). */
  readonly reads: GatedReads;
  /** Every version this transaction wrote, with the one it replaced. */
  readonly changes: WrittenVersion[] = [];
  /**
   * The resources this transaction's writes were permitted to touch (current()): if it rolls
   * back (a 412, a patch that cannot apply, content that is not valid), each is recorded as a
   * failed attempt on its patient's trail, as a refused one is (TransactionAudit.rolledBack).
   */
  readonly attempted: AccessNote[] = [];

  /** The transaction's final state, its own writes included: what new content is judged against (settle). */
  private readonly view: PolicyData;
  /**
   * What everything else in the transaction is decided by (its reads, conditional matches and the
   * versions its writes replace): the same, without the Consents it wrote whose checks are still
   * pending (TransactionView says why). Consent id → the version that write replaced.
   */
  private readonly decidedView: PolicyData;
  private readonly unsettled = new Map<string, Consent | undefined>();
  private readonly reader: StoreReader;

  constructor(
    private readonly tx: WriteTx,
    readonly ctx: AccessContext,
    private readonly policy: AccessPolicy,
    seal: CursorSeal,
    /** The transaction's audit: what is noted here is recorded in this transaction (see Gate.transaction). */
    private readonly audit?: Pick<AuditSink, 'note'>,
  ) {
    const reader = new StoreReader(tx.q);
    this.reader = reader;
    this.view = new TransactionView(reader);
    this.decidedView = new TransactionView(reader, this.unsettled);
    this.reads = new GatedReads(reader, policy, seal, this.decidedView, audit);
  }

  /**
   * The current version of a resource about to be changed, locked until commit. A resource the
   * context may not see is reported as forbidden and left untouched.
   */
  async current(type: ResourceType, id: string, interaction: 'update' | 'patch' | 'delete'): Promise<StoredVersion | undefined> {
    this.reads.allow(this.ctx, type, interaction);
    // A patch reads what it changes: its `test` operations compare the stored content, and the
    // patched resource is returned whole. A token that may update but not read gets neither.
    if (interaction === 'patch') this.reads.allow(this.ctx, type, 'read');
    const purpose: ReadPurpose = { permission: permissionOf(interaction), action: 'access' };
    const version = await this.tx.current(type, id);
    if (!version) return undefined;
    if (version.deleted) {
      const known = await this.reads.assertMayKnowOf(this.ctx, type, id, purpose);
      // A delete answered 204 ("already deleted") or a patch answered 410 tells that the resource
      // existed and was deleted: on the trail of whose it was (with the transaction's audit, so a
      // rollback records it as failed). An update brings it back, and is audited as that write;
      // if it fails instead (a 412 on If-Match names the deletion's version), it is recorded as
      // an attempt, as a failed write of a resource with content is.
      if (known && interaction !== 'update') this.reads.note(this.ctx, interaction, version, known.decision, patientIdsOf(known.last));
      else if (known) this.attempted.push({ interaction, reference: `${type}/${id}`, patients: patientIdsOf(known.last), decision: known.decision });
    } else {
      const [decision] = await this.policy.canRead(this.ctx, [version], purpose, this.decidedView);
      if (decision.effect === 'deny') {
        this.reads.note(this.ctx, interaction, version, decision);
        throw forbidden(type, decision, this.ctx, false);
      }
      this.attempted.push({ interaction, reference: `${type}/${id}`, patients: patientIdsOf(version), decision });
    }
    return version;
  }

  /**
   * Resources matching conditional criteria, among those the context may see. Used by
   * If-None-Exist, conditional update and conditional delete: hidden resources neither match
   * nor show up in a 412.
   */
  async match(type: ResourceType, filter: ResourceFilter, interaction: 'create' | 'update' | 'delete', limit = 2): Promise<StoredVersion[]> {
    // A conditional interaction is a search (its answer, and an If-None-Exist match returned
    // whole, tell what matched): a token that may write but not search the type may not make one.
    this.reads.allow(this.ctx, type, 'search-type');
    return (await this.reads.search(this.ctx, { types: [type], filter, count: limit }, interaction)).entries;
  }

  /**
   * The ids of (at most `limit`) current Patients matching `filter`, whatever this context may
   * see, and nothing else of them: for placing an audit source's event on the trail of the patient
   * it names by identifier (interactions/audit-patients.ts), which must not depend on what the
   * source may see; the ids are never returned to the client.
   */
  async patientIdsMatching(filter: ResourceFilter, limit = 2): Promise<string[]> {
    return (await this.reader.page({ types: ['Patient'], filter, limit })).map((v) => v.id);
  }

  /** See WriteTx.lockKey. */
  lockKey(key: string): Promise<void> {
    return this.tx.lockKey(key);
  }

  /** Checks of new content, made against the transaction's final state (see authorize). */
  private readonly pending: (() => Promise<void>)[] = [];

  /**
   * The policy's say on a write. What is being replaced is judged now; the new content is judged
   * when the transaction's work is done, against its final state, so a transaction may create a
   * Patient and the Consents that name it in any order (and cannot slip a change past the check
   * by reordering entries). A refusal then rolls everything back.
   */
  private async authorize(type: ResourceType, interaction: 'create' | 'update' | 'patch' | 'delete', before: StoredVersion | undefined, after: Resource | undefined): Promise<void> {
    this.reads.allow(this.ctx, type, interaction);
    const permission = permissionOf(interaction);
    const what = `${interaction} of ${before ? 'this' : 'a'} ${type}`;
    // A deletion has no content to judge: a write over one (re-creating the resource) is judged
    // against the last version that had some, so only who could change it may bring it back.
    const lastContent = before?.deleted ? (await this.reader.history({ types: [type], id: before.id, order: 'desc', limit: 100 })).find((v) => !v.deleted) : undefined;
    // (history rows do not carry the creator: the current row does)
    const judged = before?.deleted ? lastContent && { ...lastContent, createdBy: before.createdBy, creatorOrg: before.creatorOrg } : before;
    if (judged) {
      const decision = await this.policy.canWrite(this.ctx, type, judged, undefined, permission, this.decidedView);
      if (decision.effect === 'deny') {
        this.reads.note(this.ctx, interaction, judged, decision);
        throw refused(what, decision, true);
      }
    }
    if (after) {
      this.pending.push(async () => {
        const decision = await this.policy.canWrite(this.ctx, type, undefined, after, permission, this.view);
        if (decision.effect === 'deny') {
          const patients = definitions[type].patientIds(after);
          this.audit?.note(this.ctx, { interaction, reference: after.id ? `${type}/${after.id}` : type, patients, decision });
          throw refused(what, decision, true);
        }
      });
    }
  }

  /** Runs the deferred checks; called by Gate.transaction before COMMIT. */
  async settle(): Promise<void> {
    for (const check of this.pending.splice(0)) await check();
    this.unsettled.clear();
  }

  /** A Consent this transaction wrote, to be left out of its decisions until its check has run (decidedView). */
  private unsettle(v: StoredVersion, previous: StoredVersion | undefined): void {
    if (v.type !== 'Consent' || this.unsettled.has(v.id)) return;
    this.unsettled.set(v.id, previous && !previous.deleted ? (previous.resource as Consent) : undefined);
  }

  private writer(): Writer {
    return { clientId: this.ctx.clientId, organization: organizationKey(this.ctx.organization) };
  }

  async create(type: ResourceType, resource: Resource): Promise<StoredVersion> {
    await this.authorize(type, 'create', undefined, resource);
    const v = await this.tx.create(type, resource, this.writer());
    this.unsettle(v, undefined);
    this.reads.note(this.ctx, 'create', v, PERMITTED);
    this.changes.push({ version: v });
    return v;
  }

  async update(previous: StoredVersion, resource: Resource, method: 'PUT' | 'PATCH'): Promise<StoredVersion> {
    if (!definitions[previous.type].interactions.includes(method === 'PUT' ? 'update' : 'patch')) {
      throw new FhirError('method-not-allowed', `${previous.type} does not support ${method === 'PUT' ? 'update' : 'patch'}`);
    }
    await this.authorize(previous.type, method === 'PUT' ? 'update' : 'patch', previous, resource);
    const v = await this.tx.update(previous, resource, method);
    this.unsettle(v, previous);
    this.reads.note(this.ctx, method === 'PUT' ? 'update' : 'patch', v, PERMITTED);
    this.changes.push({ version: v, previous });
    return v;
  }

  async delete(previous: StoredVersion): Promise<StoredVersion> {
    await this.authorize(previous.type, 'delete', previous, undefined);
    const v = await this.tx.delete(previous);
    this.changes.push({ version: v, previous });
    // a deletion has no content: the trail names the patients of the version it replaced
    this.audit?.note(this.ctx, { interaction: 'delete', reference: `${v.type}/${v.id}/_history/${v.versionId}`, patients: patientIdsOf(previous), decision: PERMITTED });
    return v;
  }
}

/** What a note records for an access the gate allowed after its decision (the decision itself is in the AuthZ events when a Consent made it). */
const PERMITTED: Decision = { effect: 'permit', reason: 'scope', consents: [], detail: 'permitted' };
const NO_CONTENT: Decision = { effect: 'deny', reason: 'no-patient', consents: [], detail: 'no earlier version with content' };
/** A review of a patient's record ($access-report, $access-decision, $sharing-summary) by someone it is not for. */
const REVIEW_REFUSED: Decision = { effect: 'deny', reason: 'not-custodian', consents: [], detail: 'only the patient\'s custodian, auditors and the patient may review this record' };
const UNKNOWN_PATIENT: Decision = { effect: 'deny', reason: 'no-patient', consents: [], detail: 'no such patient' };

/**
 * The 403 for data the context may not see. It names no id (not even the one asked for) and no
 * reason beyond the public category (consent/refusal.ts): the Decision itself goes to the audit
 * trail. A refused read carries the spec's break-the-glass hint when the client could break the
 * glass for it (http://hl7.org/fhir/R4/operationoutcome-example-break-the-glass.json).
 */
function forbidden(type: ResourceType, decision: Decision, ctx: AccessContext, read: boolean): FhirError {
  const err = refused(`access to this ${type}`, decision);
  const hint = read && publicRefusal(decision, false).code === 'access-policy' ? breakGlassHint(type, ctx.purposeOfUse, ctx.registeredPurposes) : undefined;
  if (!hint) return err;
  return new FhirError('forbidden', err.message, {
    issues: [
      ...outcomeOf(err).issue,
      {
        severity: 'information',
        code: 'suppressed',
        details: {
          coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: hint, display: hint === 'BTG' ? 'break the glass' : 'Emergency Treatment' }],
          text: 'Additional information may be available using the Break-The-Glass Protocol',
        },
      },
    ],
  });
}

/**
 * The 403 for a refused interaction, read or write (`write`: a change was refused): the public
 * category and words of the decision, never its detail. A scope refusal also says so in
 * WWW-Authenticate (RFC 6750 §3.1).
 */
function refused(what: string, decision?: Decision, write = false): FhirError {
  const headers = decision?.reason === 'insufficient-scope' ? { 'WWW-Authenticate': `Bearer error="insufficient_scope", error_description="${decision.detail}"` } : undefined;
  const told = decision ? publicRefusal(decision, write) : undefined;
  return new FhirError('forbidden', `Not permitted: ${what}${told ? ` (${told.code}: ${told.text})` : ''}`, { headers });
}

function permissionOf(interaction: SystemInteraction): Permission {
  return interaction === 'create' ? 'c' : interaction === 'update' || interaction === 'patch' ? 'u' : interaction === 'delete' ? 'd' : interaction === 'read' || interaction === 'vread' || interaction === 'history-instance' ? 'r' : 's';
}

/**
 * Waits until the audit trail's tables hold what a read of them needs. When they cannot (an
 * event in the audit journal that cannot be moved whole, the store failing), the read fails
 * closed, 503, rather than answer without the events it would miss; the cause goes to the log.
 */
export async function trailRead<T>(settled: Promise<T>): Promise<T> {
  try {
    return await settled;
  } catch (err) {
    if (err instanceof FhirError) throw err;
    throw new FhirError('unavailable', 'The audit trail cannot be read completely right now, so it is not read at all; try again later', { cause: err });
  }
}
