import type { Resource, Subscription } from 'fhir/r4';
import { definitions, type ResourceType } from '../../resources';
import type { StoredContext } from '../access/background';
import { matchesTokens } from '../search/match';
import { limitClause, type Queryable } from './driver';
import type { StoredVersion } from './records';
import type { Store } from './store';

export type SubscriptionStatus = 'active' | 'error' | 'off';

export interface SubscriptionRecord {
  readonly id: string;
  /** The client that created it: the only one that may see, change or delete it. */
  readonly owner: string;
  readonly context: StoredContext;
  /** The resource with its server-managed meta, status and error. */
  readonly resource: Subscription;
  readonly versionId: number;
  readonly criteria: [string, string][];
  readonly endpoint: string;
  readonly payload?: 'application/fhir+json';
  readonly headers: string[];
  readonly status: SubscriptionStatus;
  readonly error?: string;
  /** Consecutive failed deliveries, and when the next attempt is due. */
  readonly failures: number;
  readonly nextAttemptAt: number;
  readonly endAt?: number;
}

/** A checked Subscription to store (feed/subscription-rules.ts makes one from what a client sent). */
export interface SubscriptionInput {
  /** The resource as it will be stored and shown (server-managed elements left out). */
  readonly resource: Subscription;
  /** The criteria's search parameters (token parameters of Consent only; none: every Consent). */
  readonly criteria: [string, string][];
  readonly endpoint: string;
  /** `application/fhir+json` for the full resource, undefined for an empty notification. */
  readonly payload?: 'application/fhir+json';
  /** Extra request headers, as `Name: value`. */
  readonly headers: string[];
  readonly status: 'active' | 'off';
  readonly endAt?: number;
}

export type DeliveryState = 'pending' | 'delivered' | 'withheld' | 'cancelled';

/** One notification: a version of a resource for one Subscription, and what became of it. */
export interface OutboxRow {
  readonly id: number;
  readonly subscriptionId: string;
  readonly subscriber: string;
  readonly type: ResourceType;
  readonly resourceId: string;
  readonly versionId: number;
  readonly patientId?: string;
  readonly event: 'create' | 'update' | 'delete';
  readonly status: DeliveryState;
  readonly attempts: number;
  readonly queuedAt: number;
  readonly lastAttemptAt?: number;
  readonly deliveredAt?: number;
  readonly lastError?: string;
}

/** A version a write transaction made, and the one it replaced. */
export interface WrittenVersion {
  readonly version: StoredVersion;
  readonly previous?: StoredVersion;
}

interface SubRow {
  id: string;
  owner: string;
  context: string;
  version_id: number | string;
  last_updated: number | string;
  content: string;
  criteria: string;
  endpoint: string;
  payload: string | null;
  headers: string;
  status: string;
  error: string | null;
  failures: number | string;
  next_attempt_at: number | string;
  end_at: number | string | null;
}

interface OutRow {
  id: number | string;
  subscription_id: string;
  subscriber: string;
  resource_type: string;
  resource_id: string;
  version_id: number | string;
  patient_id: string | null;
  event: string;
  status: string;
  attempts: number | string;
  queued_at: number | string;
  last_attempt_at: number | string | null;
  delivered_at: number | string | null;
  last_error: string | null;
}

const SUB_COLUMNS = 'id, owner, context, version_id, last_updated, content, criteria, endpoint, payload, headers, status, error, failures, next_attempt_at, end_at';
const OUT_COLUMNS = 'id, subscription_id, subscriber, resource_type, resource_id, version_id, patient_id, event, status, attempts, queued_at, last_attempt_at, delivered_at, last_error';

function subFrom(r: SubRow): SubscriptionRecord {
  return {
    id: r.id,
    owner: r.owner,
    context: JSON.parse(r.context) as StoredContext,
    resource: JSON.parse(r.content) as Subscription,
    versionId: Number(r.version_id),
    criteria: JSON.parse(r.criteria) as [string, string][],
    endpoint: r.endpoint,
    payload: (r.payload ?? undefined) as SubscriptionRecord['payload'],
    headers: JSON.parse(r.headers) as string[],
    status: r.status as SubscriptionStatus,
    error: r.error ?? undefined,
    failures: Number(r.failures),
    nextAttemptAt: Number(r.next_attempt_at),
    endAt: r.end_at === null ? undefined : Number(r.end_at),
  };
}

function outFrom(r: OutRow): OutboxRow {
  const n = (v: number | string | null) => (v === null ? undefined : Number(v));
  return {
    id: Number(r.id),
    subscriptionId: r.subscription_id,
    subscriber: r.subscriber,
    type: r.resource_type as ResourceType,
    resourceId: r.resource_id,
    versionId: Number(r.version_id),
    patientId: r.patient_id ?? undefined,
    event: r.event as OutboxRow['event'],
    status: r.status as DeliveryState,
    attempts: Number(r.attempts),
    queuedAt: Number(r.queued_at),
    lastAttemptAt: n(r.last_attempt_at),
    deliveredAt: n(r.delivered_at),
    lastError: r.last_error ?? undefined,
  };
}

/** The resource as stored and shown: the client's, with the server's meta, status and error. */
function shown(resource: Subscription, id: string, versionId: number, lastUpdated: number, status: SubscriptionStatus, error?: string): Subscription {
  const { meta, error: _e, ...rest } = resource;
  return {
    ...rest,
    resourceType: 'Subscription',
    id,
    meta: { ...meta, versionId: String(versionId), lastUpdated: new Date(lastUpdated).toISOString() },
    status,
    ...(error ? { error } : {}),
  } as Subscription;
}

/**
 * Subscriptions and their outbox. The outbox is written by enqueue(), inside the transaction
 * that writes the Consent versions (so a change is queued if and only if it commits), and is
 * worked off by the deliverer (feed/deliverer.ts) under a per-Subscription lease, so that
 * several server processes share the work and each Subscription's notifications leave in order.
 * Delivered rows are kept: they are the transmission record `$delivery-status` reports.
 */
export class Subscriptions {
  constructor(
    private readonly store: Store,
    private readonly now: () => number,
  ) {}

  // ------------------------------------------------------------ the resources

  async create(id: string, owner: string, context: StoredContext, input: SubscriptionInput): Promise<SubscriptionRecord> {
    const at = this.now();
    const content = shown(input.resource, id, 1, at, input.status);
    await this.store.driver.transaction((q) =>
      q.run(
        `INSERT INTO subscriptions (id, owner, context, version_id, last_updated, content, criteria, endpoint, payload, headers, status, failures, next_attempt_at, end_at, lease_until)
         VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, 0)`,
        [id, owner, JSON.stringify(context), at, JSON.stringify(content), JSON.stringify(input.criteria), input.endpoint, input.payload ?? null, JSON.stringify(input.headers), input.status, input.endAt ?? null],
      ),
    );
    return (await this.get(id))!;
  }

  async get(id: string): Promise<SubscriptionRecord | undefined> {
    const row = await this.store.driver.get<SubRow>(`SELECT ${SUB_COLUMNS} FROM subscriptions WHERE id = ?`, [id]);
    return row ? subFrom(row) : undefined;
  }

  async byOwner(owner: string): Promise<SubscriptionRecord[]> {
    return (await this.store.driver.all<SubRow>(`SELECT ${SUB_COLUMNS} FROM subscriptions WHERE owner = ? ORDER BY id`, [owner])).map(subFrom);
  }

  /** Replaces the client's part of a Subscription; a new version. A change of channel or criteria starts afresh (no failures). */
  async update(current: SubscriptionRecord, input: SubscriptionInput, context: StoredContext): Promise<SubscriptionRecord | undefined> {
    const at = this.now();
    const versionId = current.versionId + 1;
    const content = shown(input.resource, current.id, versionId, at, input.status);
    const changed = await this.store.driver.transaction((q) =>
      q.run(
        `UPDATE subscriptions SET version_id = ?, last_updated = ?, content = ?, criteria = ?, endpoint = ?, payload = ?, headers = ?, status = ?, error = NULL, failures = 0, next_attempt_at = 0, end_at = ?, context = ?
         WHERE id = ? AND version_id = ?`,
        [versionId, at, JSON.stringify(content), JSON.stringify(input.criteria), input.endpoint, input.payload ?? null, JSON.stringify(input.headers), input.status, input.endAt ?? null, JSON.stringify(context), current.id, current.versionId],
      ),
    );
    return changed === 1 ? this.get(current.id) : undefined;
  }

  /** Removes a Subscription; what it still had queued is cancelled (and stays on record as such). */
  async delete(id: string): Promise<void> {
    await this.store.driver.transaction(async (q) => {
      await q.run('DELETE FROM subscriptions WHERE id = ?', [id]);
      await q.run(`UPDATE subscription_outbox SET status = 'cancelled' WHERE subscription_id = ? AND status = 'pending'`, [id]);
    });
  }

  // ------------------------------------------------------------ the outbox, inside write transactions

  /**
   * Queues a notification for every live Subscription whose criteria the new version matches, or
   * the version it replaced did (so a subscriber hears of a Consent leaving its criteria, and of
   * a deletion). Runs inside the write transaction, before COMMIT.
   */
  async enqueue(q: Queryable, changes: readonly WrittenVersion[]): Promise<void> {
    const relevant = changes.filter((c) => c.version.type === 'Consent');
    if (relevant.length === 0) return;
    const now = this.now();
    const subs = await q.all<{ id: string; owner: string; criteria: string; end_at: number | string | null }>(
      `SELECT id, owner, criteria, end_at FROM subscriptions WHERE status IN ('active', 'error')`,
    );
    const live = subs.filter((s) => s.end_at === null || Number(s.end_at) > now).map((s) => ({ ...s, criteria: JSON.parse(s.criteria) as [string, string][] }));
    if (live.length === 0) return;
    const rows: unknown[][] = [];
    for (const { version, previous } of relevant) {
      const contents = [version.resource, previous?.resource].filter((r): r is Resource => r !== undefined);
      const patient = contents.map((r) => definitions.Consent.patientIds(r)[0]).find(Boolean) ?? null;
      const event = version.deleted ? 'delete' : version.versionId === 1 || !previous || previous.deleted ? 'create' : 'update';
      for (const s of live) {
        if (!contents.some((r) => matchesTokens('Consent', r, s.criteria))) continue;
        rows.push([s.id, s.owner, version.type, version.id, version.versionId, patient, event, now]);
      }
    }
    for (let i = 0; i < rows.length; i += 500) {
      const chunk = rows.slice(i, i + 500);
      await q.run(
        `INSERT INTO subscription_outbox (subscription_id, subscriber, resource_type, resource_id, version_id, patient_id, event, status, attempts, queued_at) VALUES ${chunk.map(() => "(?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?)").join(', ')}`,
        chunk.flat(),
      );
    }
  }

  // ------------------------------------------------------------ the deliverer

  /**
   * Claims up to `limit` Subscriptions with notifications due and no live lease, for `owner`
   * until `leaseUntil` (FOR UPDATE SKIP LOCKED on PostgreSQL: processes never claim the same one).
   */
  async claimDue(owner: string, leaseUntil: number, limit: number): Promise<SubscriptionRecord[]> {
    const now = this.now();
    // Most polls find nothing: ask with a read before taking the write lock.
    if (!(await this.store.driver.get(`SELECT 1 AS due FROM subscription_outbox WHERE status = 'pending' LIMIT 1`))) return [];
    const lock = this.store.dialect === 'postgres' ? ' FOR UPDATE SKIP LOCKED' : '';
    const rows = await this.store.driver.transaction((q) =>
      q.all<SubRow>(
        `UPDATE subscriptions SET lease_owner = ?, lease_until = ? WHERE id IN (
           SELECT s.id FROM subscriptions s WHERE s.status IN ('active', 'error') AND s.next_attempt_at <= ? AND s.lease_until < ?
             AND EXISTS (SELECT 1 FROM subscription_outbox o WHERE o.subscription_id = s.id AND o.status = 'pending')
           ORDER BY s.next_attempt_at${limitClause(limit)}${lock})
         RETURNING ${SUB_COLUMNS}`,
        [owner, leaseUntil, now, now],
      ),
    );
    return rows.map(subFrom);
  }

  /** The oldest notifications still to send for a Subscription, in the order their versions were committed. */
  async pending(subscriptionId: string, limit: number): Promise<OutboxRow[]> {
    return (await this.store.driver.all<OutRow>(`SELECT ${OUT_COLUMNS} FROM subscription_outbox WHERE subscription_id = ? AND status = 'pending' ORDER BY id${limitClause(limit)}`, [subscriptionId])).map(outFrom);
  }

  /** Records a delivery (and a recovery from `error`), and keeps the lease. */
  async delivered(row: OutboxRow, sub: SubscriptionRecord, owner: string, leaseUntil: number): Promise<SubscriptionRecord> {
    const at = this.now();
    return this.store.driver.transaction(async (q) => {
      await q.run(`UPDATE subscription_outbox SET status = 'delivered', attempts = attempts + 1, last_attempt_at = ?, delivered_at = ?, last_error = NULL WHERE id = ?`, [at, at, row.id]);
      if (sub.failures === 0 && sub.status === 'active') {
        await q.run('UPDATE subscriptions SET lease_until = ? WHERE id = ? AND lease_owner = ?', [leaseUntil, sub.id, owner]);
        return sub;
      }
      return this.setState(q, sub, { status: sub.status === 'error' ? 'active' : sub.status, failures: 0, nextAttemptAt: 0, leaseUntil, owner });
    });
  }

  /** A notification the subscriber may not receive: never sent, recorded with the reason. */
  async withheld(row: OutboxRow, reason: string): Promise<void> {
    await this.store.driver.run(`UPDATE subscription_outbox SET status = 'withheld', last_attempt_at = ?, last_error = ? WHERE id = ?`, [this.now(), reason.slice(0, 1000), row.id]);
  }

  /**
   * Records a failed attempt: the notification stays queued; the Subscription waits until
   * `retryAt` and, from `errorAfter` consecutive failures on, shows status `error` with the reason.
   */
  async failed(row: OutboxRow | undefined, sub: SubscriptionRecord, reason: string, retryAt: number, errorAfter: number): Promise<SubscriptionRecord> {
    const at = this.now();
    return this.store.driver.transaction(async (q) => {
      if (row) await q.run('UPDATE subscription_outbox SET attempts = attempts + 1, last_attempt_at = ?, last_error = ? WHERE id = ?', [at, reason.slice(0, 1000), row.id]);
      const failures = sub.failures + 1;
      const status = failures >= errorAfter ? 'error' : sub.status;
      const error = status === 'error' ? `delivery to ${sub.endpoint} failed ${failures} time${failures === 1 ? '' : 's'} in a row; last: ${reason}`.slice(0, 1000) : sub.error;
      return this.setState(q, sub, { status, error, failures, nextAttemptAt: retryAt, leaseUntil: 0, owner: null });
    });
  }

  /** Gives a Subscription's lease back. */
  async release(id: string, owner: string): Promise<void> {
    await this.store.driver.run('UPDATE subscriptions SET lease_owner = NULL, lease_until = 0 WHERE id = ? AND lease_owner = ?', [id, owner]);
  }

  /** Gives back every lease this process holds (on shutdown). */
  async releaseAll(owner: string): Promise<void> {
    await this.store.driver.run('UPDATE subscriptions SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = ?', [owner]);
  }

  /** Delivery state changes; a change of status or error is a new version of the resource, as the client sees it. */
  private async setState(
    q: Queryable,
    sub: SubscriptionRecord,
    next: { status: SubscriptionStatus; error?: string; failures: number; nextAttemptAt: number; leaseUntil: number; owner: string | null },
  ): Promise<SubscriptionRecord> {
    const visible = next.status !== sub.status || (next.error ?? null) !== (sub.error ?? null);
    const error = next.status === 'error' ? next.error : undefined;
    const at = this.now();
    const versionId = visible ? sub.versionId + 1 : sub.versionId;
    const content = visible ? shown(sub.resource, sub.id, versionId, at, next.status, error) : sub.resource;
    await q.run(
      `UPDATE subscriptions SET status = ?, error = ?, failures = ?, next_attempt_at = ?, lease_until = ?, lease_owner = ?, version_id = ?, last_updated = CASE WHEN ? = 1 THEN ? ELSE last_updated END, content = ? WHERE id = ?`,
      [next.status, error ?? null, next.failures, next.nextAttemptAt, next.leaseUntil, next.owner, versionId, visible ? 1 : 0, at, JSON.stringify(content), sub.id],
    );
    return { ...sub, status: next.status, error, failures: next.failures, nextAttemptAt: next.nextAttemptAt, versionId, resource: content };
  }

  // ------------------------------------------------------------ transmission status

  /** Every notification queued for one resource, newest version first. */
  async forResource(type: ResourceType, id: string): Promise<OutboxRow[]> {
    return (await this.store.driver.all<OutRow>(`SELECT ${OUT_COLUMNS} FROM subscription_outbox WHERE resource_type = ? AND resource_id = ? ORDER BY version_id DESC, id`, [type, id])).map(outFrom);
  }

  /** Notifications not delivered yet (pending or withheld), oldest first, after the row `afterId`. */
  async undelivered(afterId: number, limit: number): Promise<OutboxRow[]> {
    return (await this.store.driver.all<OutRow>(`SELECT ${OUT_COLUMNS} FROM subscription_outbox WHERE status IN ('pending', 'withheld') AND id > ? ORDER BY id${limitClause(limit)}`, [afterId])).map(outFrom);
  }
}
