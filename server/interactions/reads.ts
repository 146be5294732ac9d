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
export type Reads = Pick<GatedReads, 'history' | 'historyCount' | 'feedCursor'>;

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

/** Parameters the history interaction understands (http://hl7.org/fhir/R4/http.html#history, plus `_sort` and the cursor window). */
const HISTORY_PARAMS = new Set(['_count', '_since', '_at', '_sort', '_cursor', '_cursor-end', '_format', '_pretty', '_summary', '_elements']);

/**
 * History (instance, type or system) as a history Bundle, paged on the commit sequence so that
 * concurrent writes never shift a page.
 *
 * Newest first by default, as R4 specifies. `_sort=_lastUpdated` (the R5 history parameter)
 * walks forwards in commit order instead: that is the national consent feed. A forward page
 * always carries a `next` link, also when it is the last page for now: following it later
 * returns what was committed since, so a walker that saves the link (or its `_cursor`) never
 * misses or repeats a version. `_cursor-end` closes the window (inclusive), and
 * `_summary=count` counts the versions of the window the client may see, for reconciliation.
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
  let cursor: number | undefined;
  let end: number | undefined;
  let order: 'asc' | 'desc' = 'desc';
  let summaryCount = false;
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
    } else if (name === '_sort') {
      if (value !== '_lastUpdated' && value !== '-_lastUpdated') {
        throw new FhirError('invalid-search', `_sort on history must be _lastUpdated (oldest first, commit order) or -_lastUpdated (newest first)`, { expression: ['_sort'] });
      }
      order = value === '_lastUpdated' ? 'asc' : 'desc';
      applied.push([name, value]);
    } else if (name === '_cursor' || name === '_cursor-end') {
      // Sealed positions in the commit sequence (FeedCursorSeal): opaque to clients.
      const seq = reads.feedCursor.open(value, name);
      if (name === '_cursor') cursor = seq;
      else end = seq;
    } else if (name === '_summary') {
      if (value === 'count') summaryCount = true;
    }
  }
  if (end !== undefined && order !== 'asc') throw new FhirError('invalid-search', `_cursor-end closes a forward window: use it with _sort=_lastUpdated`, { expression: ['_cursor-end'] });
  if (end !== undefined) applied.push(['_cursor-end', reads.feedCursor.seal(end)]);
  const types = scope.type ? [scope.type] : [...RESOURCE_TYPES];
  const bounds = order === 'asc' ? { afterSeq: cursor, beforeSeq: end === undefined ? undefined : end + 1 } : { beforeSeq: cursor };
  const link = (c?: number, extra: [string, string][] = []) => {
    const params = new URLSearchParams([...applied, ...extra]);
    if (c !== undefined) params.set('_cursor', reads.feedCursor.seal(c));
    const qs = params.toString();
    return `${options.baseUrl}/${options.path}${qs ? '?' + qs : ''}`;
  };
  const bundle: Bundle = {
    resourceType: 'Bundle',
    type: 'history',
    timestamp: new Date(env.now()).toISOString(),
  };
  if (summaryCount) {
    bundle.total = await reads.historyCount(ctx, { types, id: scope.id, since, at, ...bounds });
    bundle.link = [{ relation: 'self', url: link(cursor, [['_summary', 'count']]) }];
    return bundle;
  }
  const page = await reads.history(ctx, { types, id: scope.id, since, at, ...bounds, order, limit: count });
  bundle.link = [{ relation: 'self', url: link(cursor) }];
  if (cursor !== undefined) bundle.link.push({ relation: 'first', url: link() });
  if (page.nextSeq !== undefined) bundle.link.push({ relation: 'next', url: link(page.nextSeq) });
  else if (order === 'asc' && end === undefined) {
    // The end of the feed for now: the next link resumes after everything this page accounted for.
    bundle.link.push({ relation: 'next', url: link(page.scannedTo ?? cursor ?? 0) });
  }
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
