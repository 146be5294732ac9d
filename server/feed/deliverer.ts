import type { AuditEvent } from 'fhir/r4';
import { backgroundContext } from '../access/background';
import type { ClientRegistry } from '../access/registry';
import { disclosureEvents } from '../audit/balp';
import type { FeedConfig } from '../config';
import type { SubscriptionGate } from '../gate/subscriptions';
import type { Logger } from '../log';
import type { OutboxRow, SubscriptionRecord, Subscriptions } from '../store/subscriptions';
import { checkEndpoint } from './subscription-rules';
import { WorkerLoop } from './worker-loop';

/** Subscriptions worked on at once, and notifications sent per claim. */
const PARALLEL = 8;
const BATCH = 100;

export interface DelivererOptions {
  readonly subscriptions: Subscriptions;
  readonly gate: SubscriptionGate;
  readonly registry: ClientRegistry;
  readonly config: FeedConfig;
  /** Commits AuditEvents; resolves when they are durable. Absent only when the audit trail is off (bench). */
  readonly audit?: (events: AuditEvent[]) => Promise<void>;
  /** The configured public base URL (for the audit trail's record of this server); else the one the Subscription was created at. */
  readonly baseUrl: string | undefined;
  readonly now: () => number;
  readonly logger: Logger;
  readonly owner: string;
  /** The HTTP client (tests may replace it). */
  readonly fetch?: typeof fetch;
}

/** The wait before the next attempt after `failures` consecutive failures: exponential, capped. */
export function backoff(failures: number, config: Pick<FeedConfig, 'retryBaseMs' | 'retryMaxMs'>): number {
  return Math.min(config.retryBaseMs * 2 ** Math.max(0, failures - 1), config.retryMaxMs);
}

/**
 * Works off the Subscription outbox: for each Subscription with notifications due it claims a
 * lease, then sends them one by one in commit order, POSTing to the endpoint with the
 * Subscription's headers and either no body or the Consent (channel.payload). Each notification
 * carries the version it is about (`X-Custodian-Resource: Consent/{id}/_history/{v}`), so a
 * receiver can drop a repeat: delivery is at least once (a crash between sending and recording
 * sends it again), never less.
 *
 * Before anything leaves, the gate decides whether the subscriber may see that version; a
 * notification it may not see is withheld and recorded so. Each one sent is audited first (BALP
 * PrivacyDisclosure). A failure stops the Subscription's queue, which waits out an exponential
 * backoff; after `errorAfter` failures in a row it shows status `error` with the reason, and it
 * goes back to `active` with the first delivery that succeeds.
 */
export class Deliverer {
  private readonly loop: WorkerLoop;
  private readonly fetch: typeof fetch;

  constructor(private readonly o: DelivererOptions) {
    this.loop = new WorkerLoop('notification deliverer', () => this.runOnce(), o.config.pollMs, o.logger);
    this.fetch = o.fetch ?? fetch;
  }

  start(): void {
    this.loop.start();
  }

  nudge(): void {
    this.loop.nudge();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
    await this.o.subscriptions.releaseAll(this.o.owner).catch(() => undefined);
  }

  /** One round: claims the Subscriptions with work due and delivers what they have queued. True if anything was sent or settled. */
  async runOnce(): Promise<boolean> {
    const claimed = await this.o.subscriptions.claimDue(this.o.owner, this.o.now() + this.o.config.leaseMs, PARALLEL);
    const results = await Promise.all(claimed.map((sub) => this.deliver(sub)));
    return results.some(Boolean);
  }

  /** Delivers one Subscription's queue until it is empty, a delivery fails, or the batch is done. */
  private async deliver(start: SubscriptionRecord): Promise<boolean> {
    const { subscriptions, owner } = this.o;
    let sub = start;
    let progressed = false;
    try {
      const ctx = backgroundContext(this.o.registry, sub.context, `notify-${sub.id}-${this.o.now()}`);
      if (!ctx) {
        await subscriptions.failed(undefined, sub, `client ${sub.owner} is no longer registered (or no longer for purpose ${sub.context.purposeOfUse}, or no longer with the key it subscribed with)`, this.retryAt(sub), this.o.config.errorAfter);
        return false;
      }
      // The allow-list as it is now, not as it was when the Subscription was made: an operator who
      // narrows CUSTODIAN_SUBSCRIPTION_ENDPOINTS stops notifications to what it no longer allows
      // (held, not dropped: they leave if the endpoint is allowed again or the client moves it).
      try {
        checkEndpoint(sub.endpoint, this.o.config.subscriptionEndpoints);
      } catch {
        await subscriptions.failed(undefined, sub, `the endpoint ${sub.endpoint} is no longer on this server's allow-list of notification endpoints`, this.retryAt(sub), this.o.config.errorAfter);
        return false;
      }
      for (const row of await subscriptions.pending(sub.id, BATCH)) {
        const note = await this.o.gate.notification(ctx, row, sub.payload !== undefined);
        if (!note.permitted && note.retry) {
          sub = await subscriptions.failed(row, sub, `the subscriber may not receive it now (${note.reason}); it waits`, this.retryAt(sub), this.o.config.errorAfter);
          return progressed;
        }
        if (!note.permitted) {
          await subscriptions.withheld(row, note.reason);
          progressed = true;
          continue;
        }
        if (this.o.audit) await this.o.audit(this.auditOf(sub, ctx, row, note.patients));
        const failure = await this.send(sub, row, note.resource);
        if (failure) {
          sub = await subscriptions.failed(row, sub, failure, this.retryAt(sub), this.o.config.errorAfter);
          this.o.logger.info('notification failed; will retry', { subscription: sub.id, resource: `${row.type}/${row.resourceId}/_history/${row.versionId}`, failures: sub.failures, error: failure });
          return progressed;
        }
        sub = await subscriptions.delivered(row, sub, owner, this.o.now() + this.o.config.leaseMs);
        progressed = true;
      }
      await subscriptions.release(sub.id, owner);
      return progressed;
    } catch (err) {
      // The database or the audit trail failed: nothing more leaves until the next round.
      this.o.logger.error('delivering notifications failed', { subscription: sub.id, error: err instanceof Error ? err.message : String(err) });
      await subscriptions.release(sub.id, owner).catch(() => undefined);
      return false;
    }
  }

  private retryAt(sub: SubscriptionRecord): number {
    return this.o.now() + backoff(sub.failures + 1, this.o.config);
  }

  /** POSTs one notification; the reason it failed, or undefined when the endpoint took it (2xx). */
  private async send(sub: SubscriptionRecord, row: OutboxRow, resource: object | undefined): Promise<string | undefined> {
    const headers: Record<string, string> = {};
    for (const h of sub.headers) {
      const i = h.indexOf(':');
      headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
    }
    headers['X-Custodian-Subscription'] = `Subscription/${sub.id}`;
    headers['X-Custodian-Resource'] = `${row.type}/${row.resourceId}/_history/${row.versionId}`;
    headers['X-Custodian-Event'] = row.event;
    if (resource) headers['Content-Type'] = 'application/fhir+json; charset=utf-8';
    try {
      const res = await this.fetch(sub.endpoint, {
        method: 'POST',
        headers,
        body: resource ? JSON.stringify(resource) : undefined,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.o.config.deliveryTimeoutMs),
      });
      await res.arrayBuffer().catch(() => undefined);
      return res.status >= 200 && res.status < 300 ? undefined : `the endpoint answered HTTP ${res.status}`;
    } catch (err) {
      const e = err as { name?: string; cause?: { code?: string; message?: string }; message?: string };
      if (e.name === 'TimeoutError') return `no answer within ${this.o.config.deliveryTimeoutMs} ms`;
      return `${e.cause?.code ?? e.name ?? 'error'}: ${e.cause?.message ?? e.message ?? 'request failed'}`;
    }
  }

  private auditOf(sub: SubscriptionRecord, ctx: NonNullable<ReturnType<typeof backgroundContext>>, row: OutboxRow, patients: readonly string[]): AuditEvent[] {
    const reference = `${row.type}/${row.resourceId}/_history/${row.versionId}`;
    const byPatient = new Map<string, string[]>((patients.length ? patients : ['']).map((p) => [p, [reference]]));
    return disclosureEvents(
      {
        recorded: new Date(this.o.now()).toISOString(),
        baseUrl: this.o.baseUrl ?? sub.context.baseUrl,
        ctx,
        requestId: sub.context.requestId,
        description: `rest-hook notification of Subscription/${sub.id} (${row.event}, ${sub.payload ? 'full resource' : 'no payload'}) to ${sub.endpoint}`,
        clientAddress: new URL(sub.endpoint).host,
      },
      byPatient,
    );
  }
}
