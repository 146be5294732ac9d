import type { AuditEvent } from 'fhir/r4';
import { SERVER_WRITER, type AccessContext } from '../access/context';
import { toFhirError } from '../http/errors';
import type { WrittenVersion } from '../store/subscriptions';
import { buildEvents, tokenRequestEvent, type AccessNote, type AuditInteraction, type RequestFacts, type TokenRequestFacts } from './balp';
import { uuidv7, type AuditWriter } from './writer';

/** What the gate reports about each access it decides. */
export interface AuditSink {
  note(ctx: AccessContext, note: AccessNote): void;
  /** The audit of one write transaction of this request (see TransactionAudit). */
  transaction(ctx: AccessContext): TransactionAudit;
}

/**
 * The audit of one write transaction (Gate.transaction). What the gate notes inside it is held
 * here, not in the request: `append` writes those accesses' AuditEvents through the
 * transaction itself, just before COMMIT, so a write and its audit commit together or not at
 * all. If the transaction rolls back, its notes go back to the request, to be recorded with the
 * response like any refused or failed access.
 */
export interface TransactionAudit {
  note(ctx: AccessContext, note: AccessNote): void;
  /** Appends the events of the accesses noted so far through `tx` (last, before COMMIT). */
  append(tx: AuditAppender): Promise<number>;
  /** The transaction committed: its events are durable, and the response will not repeat them. */
  committed(): void;
  /**
   * The transaction rolled back (`err`): its accesses are recorded with the response instead,
   * as attempts, naming no version the transaction wrote (those never existed); so is each
   * resource its writes were permitted to touch (`attempted`) and no access names, so that a
   * write that failed after its read was permitted (412, 422, 400) is on its patient's trail.
   */
  rolledBack(changes: readonly WrittenVersion[], err: unknown, attempted?: readonly AccessNote[]): void;
}

/** Where a write transaction's events go: the transaction's own WriteTx (store/write.ts). */
export interface AuditAppender {
  appendAuditEvents(events: readonly AuditEvent[], writer: { readonly clientId: string | null; readonly organization: string | null }): Promise<void>;
}


/** The audit state of one request: what it is, and every access the gate decided for it. */
export class RequestAudit {
  readonly notes: AccessNote[] = [];
  /** Set once the events are committed (or the request needs none). */
  settled = false;
  /** Events already committed with the request's write transactions. */
  recorded = 0;
  query?: string;
  operation?: string;
  /** The identity an unauthenticated request presented (from its token, unverified). */
  presented?: { clientId?: string; tokenId?: string };
  /** The error message, for a failed request's outcomeDesc. */
  message?: string;
  /** A request to the token endpoint: recorded as an authentication event, not a RESTful one. */
  tokenEndpoint = false;
  /** What the token endpoint did with it. */
  token?: TokenRequestFacts;
  constructor(
    public interaction: AuditInteraction,
    /** This server's fixed identity (see RequestFacts.server). */
    readonly server: string,
  ) {}
}

/** What the token endpoint did with a request (a refusal when it did not say). */
function tokenFacts(audit: RequestAudit): TokenRequestFacts {
  return audit.token ?? { result: 'rejected', description: audit.message, request: audit.query ?? 'POST /auth/token' };
}

/** The request facts the trail does not know by itself. */
export type ResponseFacts = Pick<RequestFacts, 'requestId' | 'clientAddress' | 'ctx' | 'status'>;

/**
 * The audit trail: collects what the gate saw per request and, when the response is ready,
 * turns it into BALP AuditEvents and waits until they are committed (see AuditWriter). A
 * request's writes record their own events inside their transactions (see TransactionAudit);
 * the response then records what is left: reads, refusals, failures.
 */
export class AuditTrail implements AuditSink {
  private readonly requests = new WeakMap<AccessContext, RequestAudit>();

  constructor(
    private readonly writer: AuditWriter | undefined,
    private readonly now: () => number,
    /** This server's fixed identity: `Audience.issuer` (access/audience.ts). */
    readonly server: string,
  ) {}

  /** False only for the benchmark's "audit off" switch. */
  get enabled(): boolean {
    return this.writer !== undefined;
  }

  attach(ctx: AccessContext, audit: RequestAudit): void {
    this.requests.set(ctx, audit);
  }

  note(ctx: AccessContext, note: AccessNote): void {
    this.requests.get(ctx)?.notes.push(note);
  }

  transaction(ctx: AccessContext): TransactionAudit {
    const audit = this.requests.get(ctx);
    const notes: AccessNote[] = [];
    let appended = 0;
    return {
      note: (_ctx, note) => {
        if (audit) notes.push(note);
      },
      append: async (tx) => {
        if (!audit || notes.length === 0) return 0;
        const events = this.events(audit, { requestId: ctx.requestId, clientAddress: ctx.address, ctx: ctx.clientId ? ctx : undefined, status: 200 }, notes);
        await tx.appendAuditEvents(
          events.map((e) => ({ ...e, id: uuidv7() })),
          SERVER_WRITER,
        );
        appended = events.length;
        return appended;
      },
      committed: () => {
        if (audit) audit.recorded += appended;
      },
      rolledBack: (changes, err, attempted = []) => {
        if (!audit) return;
        const status = toFhirError(err, ctx.requestId).status;
        const named = new Set(notes.map((n) => n.reference.replace(/\/_history\/[^/]*$/, '')));
        const touched = attempted.filter((a) => !named.has(a.reference));
        audit.notes.push(...unwritten([...notes, ...touched], changes, status));
      },
    };
  }

  /** The events of a request: of the notes given, or else of those the response has left. */
  events(audit: RequestAudit, facts: ResponseFacts, notes: readonly AccessNote[] = audit.notes): AuditEvent[] {
    const full = this.facts(audit, facts);
    if (audit.tokenEndpoint) return [tokenRequestEvent(full, tokenFacts(audit))];
    // Everything was recorded with the request's write transactions already.
    if (notes === audit.notes && notes.length === 0 && audit.recorded > 0) return [];
    return buildEvents(full, notes);
  }

  /** Commits the events; resolves when they are durable. */
  async commit(events: AuditEvent[]): Promise<void> {
    if (!this.writer) return;
    await this.writer.write(events);
  }

  /**
   * Commits the request's events, built from its facts where they are stored (AuditWriter.record),
   * so the request thread does not build them; resolves when they are durable.
   */
  async record(audit: RequestAudit, facts: ResponseFacts): Promise<void> {
    if (!this.writer) return;
    // A token request's event and a request with nothing left to record are decided here.
    if (audit.tokenEndpoint) return this.writer.write(this.events(audit, facts));
    if (audit.notes.length === 0 && audit.recorded > 0) return;
    await this.writer.record(this.facts(audit, facts), audit.notes);
  }

  private facts(audit: RequestAudit, facts: ResponseFacts): RequestFacts {
    return {
      ...facts,
      server: this.server,
      recorded: new Date(this.now()).toISOString(),
      interaction: audit.interaction,
      query: audit.query,
      operation: audit.operation,
      presented: audit.presented,
      message: audit.message,
    };
  }
}

/**
 * The notes of a rolled-back transaction as attempts: a version it wrote never existed, so the
 * note names the resource without it (`Patient/1` for an update), and a resource it created
 * never existed at all, so only its type (`Patient`), and a Patient it created is nobody's
 * patient. Each carries the status it failed with.
 */
export function unwritten(notes: readonly AccessNote[], changes: readonly WrittenVersion[], status: number): AccessNote[] {
  const written = new Set(changes.map((c) => `${c.version.type}/${c.version.id}/_history/${c.version.versionId}`));
  const created = new Set(changes.filter((c) => !c.previous).map((c) => `${c.version.type}/${c.version.id}`));
  return notes.map((n) => {
    const resource = n.reference.replace(/\/_history\/[^/]*$/, '');
    const patients = n.patients.filter((p) => !created.has(`Patient/${p}`));
    const failed = { ...n, patients, status: Math.max(status, n.status ?? 0) };
    if (created.has(resource)) return { ...failed, reference: resource.slice(0, resource.indexOf('/')), unstored: true };
    return written.has(n.reference) ? { ...failed, reference: resource } : failed;
  });
}
