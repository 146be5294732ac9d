import type { AuditEvent } from 'fhir/r4';
import type { AccessContext } from '../access/context';
import { buildEvents, type AccessNote, type AuditInteraction, type RequestFacts } from './balp';
import type { AuditWriter } from './writer';

/** What the gate reports about each access it decides. */
export interface AuditSink {
  note(ctx: AccessContext, note: AccessNote): void;
}

/** The audit state of one request: what it is, and every access the gate decided for it. */
export class RequestAudit {
  readonly notes: AccessNote[] = [];
  /** Set once the events are committed (or the request needs none). */
  settled = false;
  query?: string;
  operation?: string;
  /** The identity an unauthenticated request presented (from its token, unverified). */
  presented?: { clientId?: string; tokenId?: string };
  /** The error message, for a failed request's outcomeDesc. */
  message?: string;
  constructor(public interaction: AuditInteraction) {}
}

/**
 * The audit trail: collects what the gate saw per request and, when the response is ready,
 * turns it into BALP AuditEvents and waits until they are committed (see AuditWriter).
 */
export class AuditTrail implements AuditSink {
  private readonly requests = new WeakMap<AccessContext, RequestAudit>();

  constructor(
    private readonly writer: AuditWriter | undefined,
    private readonly now: () => number,
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

  events(audit: RequestAudit, facts: Omit<RequestFacts, 'recorded' | 'interaction' | 'query' | 'operation' | 'presented' | 'message'>): AuditEvent[] {
    return buildEvents(
      {
        ...facts,
        recorded: new Date(this.now()).toISOString(),
        interaction: audit.interaction,
        query: audit.query,
        operation: audit.operation,
        presented: audit.presented,
        message: audit.message,
      },
      audit.notes,
    );
  }

  /** Commits the events; resolves when they are durable. */
  async commit(events: AuditEvent[]): Promise<void> {
    if (!this.writer) return;
    await this.writer.write(events);
  }
}
