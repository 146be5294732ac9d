import type { Request, Response } from 'express';
import type { Parameters, ParametersParameter } from 'fhir/r4';
import { FhirError } from '../errors';
import type { DeliveryLine } from '../gate/subscriptions';
import type { HttpDeps } from '../http/deps';
import { sendJson } from '../http/format';
import { ctxOf } from '../http/request';
import type { OperationDef } from './registry';

export const DELIVERY_STATUS_URL = 'https://custodian.example.org/fhir/OperationDefinition/Consent-delivery-status';

const instant = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());

/** One notification as a `delivery` parameter. */
function line(d: DeliveryLine): ParametersParameter {
  const part: ParametersParameter[] = [
    { name: 'consent', valueReference: { reference: `Consent/${d.resourceId}/_history/${d.versionId}` } },
    { name: 'version', valueInteger: d.versionId },
    { name: 'event', valueCode: d.event },
    { name: 'subscription', valueReference: { reference: `Subscription/${d.subscriptionId}` } },
    { name: 'subscriber', valueString: d.subscriber },
    ...(d.endpoint ? [{ name: 'endpoint', valueUrl: d.endpoint }] : []),
    { name: 'status', valueCode: d.state },
    { name: 'attempts', valueInteger: d.attempts },
    { name: 'queued', valueInstant: instant(d.queuedAt) },
  ];
  if (d.lastAttemptAt !== undefined) part.push({ name: 'lastAttempt', valueInstant: instant(d.lastAttemptAt) });
  if (d.deliveredAt !== undefined) part.push({ name: 'delivered', valueInstant: instant(d.deliveredAt) });
  if (d.lastError) part.push({ name: 'error', valueString: d.lastError });
  return { name: 'delivery', part };
}

/** Counts per state, so "recorded but never sent" stands out. */
function summary(lines: readonly DeliveryLine[]): ParametersParameter[] {
  return (['delivered', 'pending', 'failing', 'withheld', 'cancelled'] as const).map((s) => ({ name: s, valueInteger: lines.filter((l) => l.state === s).length }));
}

/**
 * `GET /Consent/{id}/$delivery-status`: for each version of the Consent and each Subscription it
 * was queued for, whether and when it was delivered, or that it is pending, failing (with the
 * last error) or withheld (the subscriber may not see it). For the custodian of the Consent's
 * patient and auditors. `GET /Consent/$delivery-status` lists every notification not delivered,
 * oldest first, for auditors (`_count`, and `_after` = the last `row` seen, to page).
 */
export const deliveryStatusOperation: OperationDef = {
  name: '$delivery-status',
  definition: DELIVERY_STATUS_URL,
  levels: ['type', 'instance'],
  methods: ['GET'],
  types: ['Consent'],
  async handler(req: Request, res: Response, deps: HttpDeps, target) {
    if (target.type !== 'Consent') throw new FhirError('not-found', '$delivery-status is defined on Consent');
    const ctx = ctxOf(res);
    let lines: DeliveryLine[];
    const out: Parameters = { resourceType: 'Parameters', parameter: [] };
    if (target.id) {
      lines = await deps.feed.subscriptions.deliveryStatus(ctx, target.id);
      out.parameter!.push({ name: 'consent', valueReference: { reference: `Consent/${target.id}` } });
    } else {
      const q = req.query as Record<string, string | undefined>;
      for (const name of ['_count', '_after'] as const) {
        if (q[name] !== undefined && !/^\d{1,15}$/.test(q[name]!)) throw new FhirError('invalid-request', `${name} must be a whole number`, { expression: [name] });
      }
      lines = await deps.feed.subscriptions.undelivered(ctx, Number(q._after ?? 0), Math.min(Number(q._count ?? 100), deps.config.search.maxCount));
    }
    out.parameter!.push(...summary(lines));
    out.parameter!.push(...lines.map((l) => (target.id ? line(l) : { ...line(l), part: [...line(l).part!, { name: 'row', valueString: String(l.id) }] })));
    sendJson(res, 200, out);
  },
};
