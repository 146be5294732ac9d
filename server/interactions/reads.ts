import type { Bundle, BundleEntry, OperationOutcome, Resource } from 'fhir/r4';
import { RESOURCE_TYPES, type ResourceType } from '../../resources';
import type { AccessContext } from '../access/context';
import { FhirError } from '../errors';
import { isInstant, parseDateRange } from '../fhir/dates';
import type { SummaryMode } from '../fhir/subset';
import type { GatedReads } from '../gate/gate';
import type { HistoryVersion } from '../store/records';
import type { InteractionEnv } from './common';

/** The gated read operations a search or history bundle is built from (a Gate or a transaction's reads). */
export type Reads = Pick<GatedReads, 'history'>;

export interface Shape {
  readonly summary?: SummaryMode;
  readonly elements?: string[];
}

export interface BundleOptions {
  /** Absolute base URL for fullUrl and links. */
  readonly baseUrl: string;
  /** Path of the request relative to the base (`Patient`, `Patient/123/_history`, `_history`). */
  readonly path: string;
  readonly strict: boolean;
  readonly defaultCount: number;
  /** Applies _summary/_elements to each resource. */
  readonly shape: (type: ResourceType, resource: Resource) => Resource;
}

/** Parameters the history interaction understands (http://hl7.org/fhir/R4/http.html#history). */
const HISTORY_PARAMS = new Set(['_count', '_since', '_at', '_cursor', '_format', '_pretty', '_summary', '_elements']);

/**
 * History (instance, type or system) as a history Bundle, newest version first, paged on the
 * commit sequence so that concurrent writes never shift a page.
 */
export async function historyBundle(
  reads: Reads,
  ctx: AccessContext,
  env: InteractionEnv,
  scope: { type?: ResourceType; id?: string },
  query: readonly [string, string][],
  options: BundleOptions,
): Promise<Bundle> {
  let count = options.defaultCount;
  let since: number | undefined;
  let at: { lo: number; hi: number } | undefined;
  let before: number | undefined;
  const applied: [string, string][] = [];
  const ignored: OperationOutcome['issue'] = [];
  for (const [name, value] of query) {
    if (!HISTORY_PARAMS.has(name)) {
      if (options.strict) throw new FhirError('invalid-search', `Unknown history parameter '${name}'`, { expression: [name] });
      ignored.push({ severity: 'warning', code: 'not-supported', diagnostics: `Parameter '${name}' was ignored: not a history parameter`, expression: [name] });
      continue;
    }
    if (name === '_count') {
      if (!/^\d+$/.test(value)) throw new FhirError('invalid-search', `_count must be a whole number`, { expression: ['_count'] });
      count = Math.min(Number(value), env.maxCount);
      applied.push(['_count', String(count)]);
    } else if (name === '_since') {
      if (!isInstant(value)) throw new FhirError('invalid-search', `_since must be an instant such as 2024-01-31T12:00:00Z`, { expression: ['_since'] });
      since = parseDateRange(value)!.lo;
      applied.push([name, value]);
    } else if (name === '_at') {
      const range = parseDateRange(value);
      if (!range) throw new FhirError('invalid-search', `_at must be a date or dateTime`, { expression: ['_at'] });
      at = range;
      applied.push([name, value]);
    } else if (name === '_cursor') {
      if (!/^\d+$/.test(value)) throw new FhirError('invalid-search', `_cursor is not one this server issued`, { expression: ['_cursor'] });
      before = Number(value);
    }
  }
  const types = scope.type ? [scope.type] : [...RESOURCE_TYPES];
  const page = await reads.history(ctx, { types, id: scope.id, since, at, beforeSeq: before, order: 'desc', limit: count });
  const link = (cursor?: number) => {
    const params = new URLSearchParams(applied);
    if (cursor !== undefined) params.set('_cursor', String(cursor));
    const qs = params.toString();
    return `${options.baseUrl}/${options.path}${qs ? '?' + qs : ''}`;
  };
  const bundle: Bundle = {
    resourceType: 'Bundle',
    type: 'history',
    timestamp: new Date(env.now()).toISOString(),
    link: [{ relation: 'self', url: link(before) }],
  };
  if (before !== undefined) bundle.link!.push({ relation: 'first', url: link() });
  if (page.nextSeq !== undefined) bundle.link!.push({ relation: 'next', url: link(page.nextSeq) });
  const entries = page.entries.map((v) => historyEntry(v, options));
  if (ignored.length) entries.push({ resource: { resourceType: 'OperationOutcome', issue: ignored } as OperationOutcome });
  if (entries.length) bundle.entry = entries; // FHIR JSON has no empty arrays
  return bundle;
}

const STATUS: Record<HistoryVersion['method'], string> = { POST: '201 Created', PUT: '200 OK', PATCH: '200 OK', DELETE: '204 No Content' };

function historyEntry(v: HistoryVersion, options: BundleOptions): BundleEntry {
  const entry: BundleEntry = {
    fullUrl: `${options.baseUrl}/${v.type}/${v.id}`,
    request: { method: v.method, url: v.method === 'POST' ? v.type : `${v.type}/${v.id}` },
    response: {
      status: v.versionId === 1 && v.method === 'PUT' ? '201 Created' : STATUS[v.method],
      etag: `W/"${v.versionId}"`,
      lastModified: new Date(v.lastUpdated).toISOString(),
    },
  };
  if (v.resource) entry.resource = options.shape(v.type, v.resource);
  return entry;
}
