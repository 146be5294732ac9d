import type { Consent, Resource } from 'fhir/r4';
import { definitions } from '../../resources';
import type { AccessContext } from '../access/context';
import { storeContext } from '../access/background';
import { confinedToPatient } from '../access/scopes';
import { isCustodian } from '../consent/evaluate';
import { custodiansOf, type PolicyData } from '../consent/policy';
import type { Decision } from '../consent/decision';
import { FhirError } from '../errors';
import type { StoreReader } from '../store/read';
import type { HistoryVersion } from '../store/records';
import type { OutboxRow, SubscriptionInput, SubscriptionRecord, Subscriptions } from '../store/subscriptions';
import { GatedReads } from './gate';
import type { CursorSeal } from './cursor';
import type { AccessPolicy, ReadPurpose } from './policy';

/**
 * A notification is a search result pushed to the subscriber: the search permission, and a
 * disclosure, as an export is (and as the deliverer records it: a BALP PrivacyDisclosure). Decided
 * as an access, a Subscription for secondary use was pushed the Consents of patients who objected,
 * which an export for the same purpose leaves out (found by a second reading, stop 23).
 */
const NOTIFY: ReadPurpose = { permission: 's', action: 'disclose' };

/** What may go out for one queued notification. */
export type Notification =
  | { readonly permitted: true; readonly version: HistoryVersion; readonly resource?: Resource; readonly patients: readonly string[]; readonly decision: Decision }
  | {
      readonly permitted: false;
      readonly reason: string;
      /**
       * Refused by the subscriber's scopes, not by the data's Consents: its registration (or the
       * token it last renewed the Subscription with) no longer covers Consents. That may be put
       * right (a registry edit undone, the Subscription renewed), so the notification waits,
       * as after a failed delivery, instead of being withheld for good.
       */
      readonly retry?: boolean;
    };

/** One line of a Consent's transmission record. */
export interface DeliveryLine extends OutboxRow {
  /** The state as a reader wants it: a pending notification that has failed is `failing`. */
  readonly state: 'delivered' | 'pending' | 'failing' | 'withheld' | 'cancelled';
  readonly subscriptionStatus?: string;
  readonly endpoint?: string;
}

/**
 * The gate's side of Subscriptions:
 * - a Subscription is its creator's: nobody else may see, change or delete it (404 for them);
 *   managing one needs the scope to search Consents, since that is what it watches;
 * - a notification goes out only when the subscriber, as it stands at delivery time, may see the
 *   Consent version it is about (a deletion: the version before it), whether or not it carries
 *   the resource: even an empty notification says that a Consent changed;
 * - a Consent's transmission record is for its patient's custodian and for auditors.
 */
export class SubscriptionGate {
  private readonly reads: GatedReads;

  constructor(
    private readonly reader: StoreReader,
    private readonly policy: AccessPolicy,
    private readonly facts: PolicyData,
    private readonly subscriptions: Subscriptions,
    seal: CursorSeal,
  ) {
    this.reads = new GatedReads(reader, policy, seal);
  }

  /** 403 unless the client may search Consents (what a Subscription watches). */
  private allow(ctx: AccessContext): void {
    this.reads.allow(ctx, 'Consent', 'search-type');
  }

  async create(ctx: AccessContext, id: string, input: SubscriptionInput, baseUrl: string): Promise<SubscriptionRecord> {
    this.allow(ctx);
    return this.subscriptions.create(id, ctx.clientId!, storeContext(ctx, baseUrl), input);
  }

  async read(ctx: AccessContext, id: string): Promise<SubscriptionRecord> {
    this.allow(ctx);
    const sub = await this.subscriptions.get(id);
    if (!sub || sub.owner !== ctx.clientId) throw new FhirError('not-found', `Subscription/${id} is not known to this client`);
    return sub;
  }

  async search(ctx: AccessContext): Promise<SubscriptionRecord[]> {
    this.allow(ctx);
    return this.subscriptions.byOwner(ctx.clientId!);
  }

  /**
   * Replaces a Subscription of this client; `ifMatch` is the version the client last saw. Its
   * deliveries then run as the updating request's token stands (scopes, purpose, and the key it
   * was obtained with), so a client that rotated its key renews a Subscription by updating it,
   * with what it had queued kept.
   */
  async update(ctx: AccessContext, id: string, input: SubscriptionInput, ifMatch?: number): Promise<SubscriptionRecord> {
    const current = await this.read(ctx, id);
    if (ifMatch !== undefined && ifMatch !== current.versionId) throw new FhirError('precondition-failed', `Subscription/${id} is at version ${current.versionId}, not ${ifMatch}`);
    const updated = await this.subscriptions.update(current, input, storeContext(ctx, current.context.baseUrl));
    if (!updated) throw new FhirError('conflict', `Subscription/${id} changed while it was being updated; read it and try again`);
    return updated;
  }

  async delete(ctx: AccessContext, id: string): Promise<void> {
    await this.read(ctx, id);
    await this.subscriptions.delete(id);
  }

  /** What the subscriber (`ctx`, as it stands now) may be sent for one queued notification. */
  async notification(ctx: AccessContext, row: OutboxRow, withResource: boolean): Promise<Notification> {
    const scope = this.policy.allowsInteraction(ctx, row.type, 'search-type');
    if (scope.effect === 'deny') return { permitted: false, reason: `${scope.reason}: ${scope.detail}`, retry: true };
    const version = await this.reader.version(row.type, row.resourceId, row.versionId);
    if (!version) return { permitted: false, reason: `${row.type}/${row.resourceId} has no version ${row.versionId}` };
    const [decision] = await this.reads.decideVersions(ctx, [version], NOTIFY);
    if (decision.effect === 'deny') return { permitted: false, reason: `${decision.reason}: ${decision.detail}` };
    const content = version.resource ?? (await this.reader.version(row.type, row.resourceId, row.versionId - 1))?.resource;
    const patients = content ? definitions[row.type].patientIds(content) : [];
    return { permitted: true, version, resource: withResource ? version.resource : undefined, patients, decision };
  }

  /**
   * `$delivery-status`: whether and when each Subscription received each version of a Consent.
   * For the custodian of the Consent's patient and for auditors; anyone else gets a 403 that does
   * not say whether the Consent exists.
   */
  async deliveryStatus(ctx: AccessContext, consentId: string): Promise<DeliveryLine[]> {
    const refused = () => new FhirError('forbidden', `Only the custodian of the Consent's patient and auditors may see where Consent/${consentId} was sent`);
    // A patient/ token is neither (confinedToPatient): where a Consent was sent is not the patient's to see.
    if (confinedToPatient(ctx.scopes, ['Patient', 'Consent', 'AuditEvent'])) throw refused();
    const auditor = ctx.roles.includes('auditor');
    // Where Consents were sent is about Consents: a custodian's token without a Consent scope gets
    // no answer (auditors answer by their role, as for the rest of the trail's reviews).
    if (!auditor) this.reads.allow(ctx, 'Consent', 'read');
    const versions = await this.reader.history({ types: ['Consent'], id: consentId, order: 'desc', limit: 1000 });
    if (versions.length === 0) {
      if (auditor) throw new FhirError('not-found', `Consent/${consentId} is not known`);
      throw refused();
    }
    if (!auditor) {
      const patients = new Set(versions.flatMap((v) => (v.resource ? definitions.Consent.patientIds(v.resource as Consent) : [])));
      const records = await this.facts.patients([...patients], ctx);
      const custodian = patients.size > 0 && [...patients].every((p) => {
        const r = records.get(p);
        return r?.resource !== undefined && isCustodian(ctx.organization, custodiansOf(r.resource, r.creatorOrg));
      });
      if (!custodian) throw refused();
    }
    // A custodian learns whether and when its patient's Consent reached each subscriber, not where
    // other clients receive their notifications (their endpoints are theirs).
    const lines = await this.lines(await this.subscriptions.forResource('Consent', consentId));
    return auditor ? lines : lines.map((l) => (l.subscriber === ctx.clientId ? l : { ...l, endpoint: undefined }));
  }

  /**
   * `$delivery-status` on the type: every notification not delivered (pending, failing or
   * withheld), oldest first, across all Consents. For auditors: it names patients of every
   * custodian.
   */
  async undelivered(ctx: AccessContext, afterId: number, limit: number): Promise<DeliveryLine[]> {
    if (!ctx.roles.includes('auditor')) throw new FhirError('forbidden', 'Only auditors may list the notifications not delivered across all Consents; a custodian asks per Consent');
    return this.lines(await this.subscriptions.undelivered(afterId, limit));
  }

  private async lines(rows: OutboxRow[]): Promise<DeliveryLine[]> {
    const subs = new Map<string, SubscriptionRecord | undefined>();
    for (const id of new Set(rows.map((r) => r.subscriptionId))) subs.set(id, await this.subscriptions.get(id));
    return rows.map((r) => {
      const sub = subs.get(r.subscriptionId);
      const state = r.status === 'pending' && r.attempts > 0 ? 'failing' : r.status;
      return { ...r, state, subscriptionStatus: sub?.status, endpoint: sub?.endpoint };
    });
  }
}
