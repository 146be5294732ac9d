import type { Subscription } from 'fhir/r4';
import { FhirError } from '../errors';
import type { SubscriptionInput } from '../store/subscriptions';
import { isInstant, parseDateRange } from '../fhir/dates';
import { isTokenQuery } from '../search/match';
import { parseSearch } from '../search/parse';
import { checkSafety } from '../validation/safety';
import { schemaValidator } from '../validation/schema';

/** A Subscription a client asked for, checked and reduced to what delivery needs (stored as is). */
export type SubscriptionRequest = SubscriptionInput;

/** Headers a subscriber may not set: they belong to HTTP itself, or to Custodian's notification. */
const RESERVED_HEADERS = /^(host|content-length|content-type|content-encoding|transfer-encoding|connection|keep-alive|upgrade|te|trailer|expect|x-custodian-.*)$/i;
const HEADER = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n\0]*)$/;

const invalid = (message: string, expression: string) => new FhirError('unprocessable', message, { expression: [expression] });

/**
 * Checks a Subscription (http://hl7.org/fhir/R4/subscription.html) against what Custodian
 * offers: the R4 schema; `criteria` a Consent search with token parameters only (`Consent?`,
 * `Consent?category=…`, `status`, `scope`, `action`, `purpose`, `security-label`, …), matched
 * against each Consent version in memory; channel `rest-hook`; an http(s) endpoint on the
 * allow-list (CUSTODIAN_SUBSCRIPTION_ENDPOINTS); no payload or `application/fhir+json`; headers
 * `Name: value` that do not override HTTP's or Custodian's own. Base FHIR problems are a 400,
 * anything else a 422; nothing is stored either way.
 */
export function parseSubscription(body: unknown, allowList: readonly URL[], id?: string): SubscriptionRequest {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new FhirError('invalid-resource', 'The body must be a Subscription resource');
  if ((body as { resourceType?: unknown }).resourceType !== 'Subscription') {
    throw new FhirError('invalid-resource', `The body's resourceType is ${JSON.stringify((body as { resourceType?: unknown }).resourceType)} but the URL is for Subscription`, { expression: ['Subscription.resourceType'] });
  }
  const issues = [...schemaValidator().validate('Subscription', body), ...checkSafety('Subscription', body)];
  if (issues.length) throw new FhirError('invalid-resource', 'The Subscription is not valid FHIR R4', { issues });
  const sub = body as Subscription;
  // Cardinality the JSON schema leaves to the StructureDefinition (Subscription.status, reason, criteria, channel.type are 1..1).
  const missing = [
    ['status', sub.status],
    ['reason', sub.reason],
    ['criteria', sub.criteria],
    ['channel', sub.channel],
    ['channel.type', sub.channel?.type],
  ].filter(([, v]) => v === undefined);
  if (missing.length) {
    throw new FhirError('invalid-resource', 'The Subscription is not valid FHIR R4', {
      issues: missing.map(([path]) => ({ severity: 'error' as const, code: 'required' as const, diagnostics: `Subscription.${path} is required (1..1)`, expression: [`Subscription.${path}`] })),
    });
  }
  if (id !== undefined && sub.id !== id) throw new FhirError('id-mismatch', `The body's id (${sub.id ?? 'none'}) must be the URL's (${id})`, { expression: ['Subscription.id'] });

  const m = /^Consent(?:\?(.*))?$/.exec(sub.criteria);
  if (!m) throw invalid(`criteria must be a Consent search such as Consent?category=… (this server notifies Consent changes only), not ${JSON.stringify(sub.criteria)}`, 'Subscription.criteria');
  const criteria = [...new URLSearchParams(m[1] ?? '').entries()];
  if (criteria.some(([k]) => k.startsWith('_') && k !== '_security' && k !== '_tag')) throw invalid('criteria may not use result parameters (_count, _sort, _include, …) or _id, _lastUpdated', 'Subscription.criteria');
  // A search ignores an empty parameter; a Subscription's criterion with none would match nothing
  // (token matching), so a national service would silently miss every Consent.
  const empty = criteria.find(([, v]) => v === '');
  if (empty) throw invalid(`criteria parameter ${empty[0]} has no value`, 'Subscription.criteria');
  parseSearch('Consent', criteria, { strict: true, defaultCount: 1, maxCount: 1, baseUrl: '', now: 0 }); // a malformed or unknown parameter is a 400
  if (!isTokenQuery('Consent', criteria)) throw invalid('criteria may use token search parameters of Consent only (category, status, scope, action, purpose, security-label, identifier, _tag, _security)', 'Subscription.criteria');

  if (sub.channel.type !== 'rest-hook') throw invalid(`channel.type ${JSON.stringify(sub.channel.type)} is not supported: this server delivers by rest-hook only`, 'Subscription.channel.type');
  const endpoint = checkEndpoint(sub.channel.endpoint, allowList);
  const payload = sub.channel.payload;
  if (payload !== undefined && payload !== 'application/fhir+json') throw invalid(`channel.payload ${JSON.stringify(payload)} is not supported: leave it out (empty notification) or use application/fhir+json (the full resource)`, 'Subscription.channel.payload');
  const headers = (sub.channel.header ?? []).map((h, i) => {
    const hm = HEADER.exec(h);
    if (!hm) throw invalid(`channel.header[${i}] must be "Name: value" on one line`, `Subscription.channel.header[${i}]`);
    if (RESERVED_HEADERS.test(hm[1])) throw invalid(`channel.header[${i}] may not set ${hm[1]}: it belongs to HTTP or to Custodian's notification`, `Subscription.channel.header[${i}]`);
    return `${hm[1]}: ${hm[2]}`;
  });
  if (sub.status === 'error') throw invalid('status error is set by the server; ask for requested, active or off', 'Subscription.status');
  if (sub.end !== undefined && !isInstant(sub.end)) throw invalid('end must be an instant with a time zone', 'Subscription.end');
  const status = sub.status === 'off' ? 'off' : 'active';
  const { meta, error: _error, ...rest } = sub;
  const keptMeta = meta ? (({ versionId: _v, lastUpdated: _l, ...m2 }) => m2)(meta) : undefined;
  const resource: Subscription = { ...rest, ...(keptMeta && Object.keys(keptMeta).length ? { meta: keptMeta } : {}), status };
  return { resource, criteria, endpoint, payload, headers, status, endAt: sub.end ? parseDateRange(sub.end)!.lo : undefined };
}

/**
 * An endpoint notifications may go to: an absolute http(s) URL without credentials, on the
 * allow-list: same origin as an entry, and under its path.
 */
export function checkEndpoint(raw: string | undefined, allowList: readonly URL[]): string {
  if (!raw) throw invalid('channel.endpoint is required for a rest-hook', 'Subscription.channel.endpoint');
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalid(`channel.endpoint ${JSON.stringify(raw)} is not an absolute URL`, 'Subscription.channel.endpoint');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid('channel.endpoint must be an http or https URL', 'Subscription.channel.endpoint');
  if (url.username || url.password) throw invalid('channel.endpoint must not carry credentials; use channel.header', 'Subscription.channel.endpoint');
  const allowed = allowList.some((a) => a.origin === url.origin && (url.pathname === a.pathname || url.pathname.startsWith(a.pathname.endsWith('/') ? a.pathname : `${a.pathname}/`)));
  if (!allowed) throw invalid(`channel.endpoint ${url.origin}${url.pathname} is not on this server's allow-list of notification endpoints (CUSTODIAN_SUBSCRIPTION_ENDPOINTS)`, 'Subscription.channel.endpoint');
  return url.toString();
}
