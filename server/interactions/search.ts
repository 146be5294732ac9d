import type { Bundle, BundleEntry, BundleLink, OperationOutcome, OperationOutcomeIssue, Resource } from 'fhir/r4';
import { isResourceType, RESOURCE_TYPES, type ResourceType } from '../../resources';
import type { AccessContext } from '../access/context';
import { FhirError } from '../errors';
import { storedResource } from '../fhir/stored-json';
import { applySubset, reshapes, subsetOf, type Subset } from '../fhir/subset';
import type { GatedReads, SearchQuery } from '../gate/gate';
import { extractIndexRows } from '../search/extract';
import type { ResourceFilter } from '../search/filter';
import { compileOrder } from '../search/order';
import { searchParams } from '../search/parameters';
import { parseSearch, type IncludeSpec, type ParsedSearch } from '../search/parse';
import { compileFilter } from '../search/sql';
import type { StoredVersion } from '../store/records';
import type { InteractionEnv } from './common';
import type { BundleOptions } from './reads';

/** The gated reads a search bundle is built from (a Gate or a transaction's reads). */
export type SearchReads = Pick<GatedReads, 'search' | 'count' | 'included' | 'revincluded'>;

/**
 * Type-level search (http://hl7.org/fhir/R4/http.html#search) as a searchset Bundle: filtered
 * by the gate before paging and counting, in `_sort` order with `self`/`next`/`previous` links
 * carrying an opaque keyset cursor, `_include`d and `_revinclude`d resources decided and
 * audited like matches, and ignored parameters reported in an OperationOutcome entry.
 */
export async function searchBundle(
  reads: SearchReads,
  ctx: AccessContext,
  env: InteractionEnv,
  type: ResourceType,
  query: readonly [string, string][],
  options: BundleOptions,
): Promise<Bundle> {
  const subset = subsetOf(query);
  refuseTextWithIncludes(subset, query);
  const parsed = parseSearch(type, query, parseOptions(options, env));
  const filter = compileFilter(parsed.criteria, env.now());
  const order = parsed.sort.length ? compileOrder(parsed.sort, [type]) : undefined;
  return buildBundle(reads, ctx, env, { types: [type], filter, order }, parsed, subset, options);
}

/**
 * System-level search (`GET [base]?…`, http://hl7.org/fhir/R4/http.html#search): over the
 * types in `_type` (default all three), with the parameters every one of those types defines.
 * Chained, reverse-chained and include parameters are type-specific and are not offered here.
 */
export async function systemSearchBundle(reads: SearchReads, ctx: AccessContext, env: InteractionEnv, query: readonly [string, string][], options: BundleOptions): Promise<Bundle> {
  refuseTextWithIncludes(subsetOf(query), query);
  const issues: OperationOutcomeIssue[] = [];
  const ignore = (name: string, why: string) => {
    if (options.strict) throw new FhirError('invalid-search', `Unknown or unsupported search parameter '${name}': ${why}`, { expression: [name] });
    issues.push({ severity: 'warning', code: 'not-supported', diagnostics: `Parameter '${name}' was ignored: ${why}`, expression: [name] });
  };
  let types: ResourceType[] = [...RESOURCE_TYPES];
  // `_type` first, wherever it stands in the query: which parameters are shared depends on it.
  for (const [name, value] of query) {
    if (name !== '_type' || value === '') continue;
    const listed = value.split(',').filter(Boolean);
    const unknown = listed.filter((t) => !isResourceType(t));
    if (unknown.length) ignore(`_type=${unknown.join(',')}`, 'not a resource type stored on this server');
    const known = listed.filter(isResourceType);
    types = types.filter((t) => known.includes(t));
    if (known.length === 0) types = [];
  }
  const rest: [string, string][] = [];
  for (const [name, value] of query) {
    if (name === '_type' || value === '') continue; // empty parameters are ignored (see parseSearch)
    if (name === '_sort') {
      // A sort key is a parameter like any other: one that a listed type lacks is ignored here,
      // key by key, so every type's parse sees only keys it defines.
      const kept = value.split(',').filter((raw) => {
        const key = raw.startsWith('-') ? raw.slice(1) : raw;
        const missing = key ? types.filter((t) => !searchParams(t).has(key)) : [];
        if (missing.length) ignore(`_sort=${raw}`, `${key} is not a search parameter of ${missing.join(', ')} (use _type to narrow the search)`);
        return missing.length === 0;
      });
      if (kept.length) rest.push([name, kept.join(',')]);
      continue;
    }
    if (name.startsWith('_include') || name.startsWith('_revinclude') || name.startsWith('_has') || name.includes('.')) {
      ignore(name, 'chained, reverse-chained and include parameters need a resource type: search /{type} instead');
      continue;
    }
    const code = name.split(':')[0];
    if (!code.startsWith('_') || ['_id', '_lastUpdated', '_tag', '_profile', '_security', '_source'].includes(code)) {
      const missing = types.filter((t) => !searchParams(t).has(code));
      if (missing.length) {
        ignore(name, `not a search parameter of ${missing.join(', ')} (use _type to narrow the search)`);
        continue;
      }
    }
    rest.push([name, value]);
  }
  const subset = subsetOf(rest);
  if (types.length === 0) {
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      timestamp: new Date(env.now()).toISOString(),
      total: 0,
      link: [{ relation: 'self', url: `${options.baseUrl}/?_type=` }],
      entry: [outcomeEntry(issues.length ? issues : [{ severity: 'warning', code: 'not-found', diagnostics: '_type names no resource type stored on this server' }])],
    };
  }
  // Each type's criteria use that type's parameter keys; a row matches under its own type's filter.
  const perType = types.map((t) => ({ t, parsed: parseSearch(t, rest, parseOptions(options, env)) }));
  const parsed: ParsedSearch = { ...perType[0].parsed, ignored: [...issues, ...perType[0].parsed.ignored] };
  const parts = perType.map(({ t, parsed: p }) => {
    const f = compileFilter(p.criteria, env.now());
    return { where: `(r.type = '${t}' AND (${f.where}))`, params: f.params };
  });
  const filter: ResourceFilter = { where: parts.map((p) => p.where).join(' OR '), params: parts.flatMap((p) => [...p.params]) };
  const order = parsed.sort.length ? compileOrder(parsed.sort, types) : undefined;
  const typeParam: [string, string][] = query.some(([k, v]) => k === '_type' && v !== '') ? [['_type', types.join(',')]] : [];
  return buildBundle(reads, ctx, env, { types, filter, order }, { ...parsed, applied: [...typeParam, ...parsed.applied] }, subset, { ...options, path: '' });
}

/** "the _include and _revinclude parameters cannot be mixed with _summary=text" (search.html#summary). */
function refuseTextWithIncludes(subset: Subset, query: readonly [string, string][]): void {
  if (subset.summary !== 'text') return;
  const include = query.find(([k, v]) => v !== '' && (k.startsWith('_include') || k.startsWith('_revinclude')));
  if (include) throw new FhirError('invalid-search', `${include[0]} cannot be mixed with _summary=text`, { expression: [include[0], '_summary'] });
}

function parseOptions(options: BundleOptions, env: InteractionEnv) {
  return { strict: options.strict, defaultCount: options.defaultCount, maxCount: env.maxCount, baseUrl: options.baseUrl, now: env.now() };
}

async function buildBundle(
  reads: SearchReads,
  ctx: AccessContext,
  env: InteractionEnv,
  q: Pick<SearchQuery, 'types' | 'filter' | 'order'>,
  parsed: ParsedSearch,
  subset: Subset,
  options: BundleOptions,
): Promise<Bundle> {
  const link = (cursor?: string): BundleLink['url'] => {
    const params = new URLSearchParams(parsed.applied);
    if (subset.summary) params.set('_summary', subset.summary);
    if (subset.elements) params.set('_elements', subset.elements.join(','));
    if (cursor) params.set('_cursor', cursor);
    const qs = params.toString();
    return `${options.baseUrl}/${options.path}${qs ? '?' + qs : ''}`;
  };
  const bundle: Bundle = { resourceType: 'Bundle', type: 'searchset', timestamp: new Date(env.now()).toISOString() };
  const warnings: OperationOutcomeIssue[] = [...parsed.ignored];

  // "if _count has the value 0, this shall be treated the same as _summary=count" (search.html#count):
  // the total of what the asker may see, counted through the gate, and no entries.
  if (subset.summary === 'count' || parsed.count === 0) {
    bundle.total = await reads.count(ctx, q);
    bundle.link = [{ relation: 'self', url: link() }];
    if (warnings.length) bundle.entry = [outcomeEntry(warnings)];
    return bundle;
  }
  const cursor = parsed.cursor;
  const page = await reads.search(ctx, { ...q, count: parsed.count, cursor });
  const firstPage = !cursor;
  if (parsed.total === 'accurate' || parsed.total === 'estimate') bundle.total = await reads.count(ctx, q);
  else if (parsed.total !== 'none' && firstPage && !page.next) bundle.total = page.entries.length;
  bundle.link = [{ relation: 'self', url: link(cursor) }];
  if (!firstPage) bundle.link.push({ relation: 'first', url: link() });
  if (page.previous) bundle.link.push({ relation: 'previous', url: link(page.previous) });
  if (page.next) bundle.link.push({ relation: 'next', url: link(page.next) });

  const included = await includes(reads, ctx, env, page.entries, parsed, options, warnings);
  // "The list of elements does not apply to included resources" (search.html#elements); _summary
  // does (which is why it "cannot be mixed" with includes when it is text).
  const shapes = { match: subset, include: subset.summary ? { summary: subset.summary } : {} };
  const entry = (v: StoredVersion, mode: 'match' | 'include'): BundleEntry => {
    // Unshaped, it goes out as the store holds it, unparsed (see fhir/stored-json.ts).
    const resource = !reshapes(shapes[mode]) && v.text !== undefined ? storedResource(v.text) : applySubset(v.type, v.resource!, shapes[mode]);
    return { fullUrl: `${options.baseUrl}/${v.type}/${v.id}`, resource, search: { mode } };
  };
  const entries = [...page.entries.map((v) => entry(v, 'match')), ...included.map((v) => entry(v, 'include'))];
  if (warnings.length) entries.push(outcomeEntry(warnings));
  if (entries.length) bundle.entry = entries; // FHIR JSON has no empty arrays
  return bundle;
}

/**
 * `_include` and `_revinclude` (http://hl7.org/fhir/R4/search.html#include): resources the
 * page's matches point at, and resources pointing at them; then, for `:iterate`, one more
 * level from what was included. Each goes through the gate like a match (decided, audited);
 * hidden ones are left out without a trace.
 */
async function includes(
  reads: SearchReads,
  ctx: AccessContext,
  env: InteractionEnv,
  matches: readonly StoredVersion[],
  parsed: ParsedSearch,
  options: BundleOptions,
  warnings: OperationOutcomeIssue[],
): Promise<StoredVersion[]> {
  if (!parsed.include.length && !parsed.revinclude.length) return [];
  const seen = new Set(matches.map((v) => `${v.type}/${v.id}`));
  const out: StoredVersion[] = [];
  const limit = env.maxCount;
  const round = async (from: readonly StoredVersion[], iterate: boolean): Promise<StoredVersion[]> => {
    const added: StoredVersion[] = [];
    const add = (versions: readonly StoredVersion[]) => {
      for (const v of versions) {
        const key = `${v.type}/${v.id}`;
        if (seen.has(key)) continue;
        seen.add(key);
        added.push(v);
      }
    };
    const forward = parsed.include.filter((s) => s.iterate === iterate);
    if (forward.length) {
      const refs: { type: ResourceType; id: string }[] = [];
      for (const v of from) for (const spec of forward) if (spec.source === v.type) refs.push(...referencedBy(v, spec, options.baseUrl));
      if (refs.length) add(await reads.included(ctx, refs));
    }
    for (const spec of parsed.revinclude.filter((s) => s.iterate === iterate)) {
      const targets = from.filter((v) => spec.param!.targets.includes(v.type) && (!spec.target || spec.target === v.type));
      if (!targets.length) continue;
      const criterion = { kind: 'reference' as const, def: spec.param!, values: targets.map((v) => ({ local: true as const, type: v.type, id: v.id })) };
      const filter = compileFilter([criterion], env.now());
      const page = await reads.revincluded(ctx, { types: [spec.source], filter, count: limit });
      if (!page) continue;
      if (page.next) {
        warnings.push({
          severity: 'warning',
          code: 'too-costly',
          diagnostics: `_revinclude=${spec.source}:${spec.param!.code} matched more than ${limit} resources; only the first ${limit} are included`,
          expression: ['_revinclude'],
        });
      }
      add(page.entries);
    }
    return added;
  };
  const first = await round(matches, false);
  out.push(...first);
  if (parsed.include.some((s) => s.iterate) || parsed.revinclude.some((s) => s.iterate)) {
    // :iterate applies to the matches and to what the first round included (one level).
    out.push(...(await round([...matches, ...first], true)));
  }
  return out;
}

/** The stored resources `v` points at through the include's parameter(s). */
function referencedBy(v: StoredVersion, spec: IncludeSpec, baseUrl: string): { type: ResourceType; id: string }[] {
  const params = spec.param ? [spec.param.code] : [...searchParams(v.type).values()].filter((d) => d.type === 'reference').map((d) => d.code);
  const out: { type: ResourceType; id: string }[] = [];
  for (const row of extractIndexRows(v.type, v.resource as Resource, baseUrl).reference) {
    if (!params.includes(row.param)) continue;
    const slash = row.ref.indexOf('/');
    if (slash < 0 || row.ref.startsWith('url:') || row.ref.startsWith('id:')) continue;
    const type = row.ref.slice(0, slash);
    if (!isResourceType(type) || (spec.target && spec.target !== type)) continue;
    out.push({ type, id: row.ref.slice(slash + 1) });
  }
  return out;
}

function outcomeEntry(issues: OperationOutcome['issue']): BundleEntry {
  return { resource: { resourceType: 'OperationOutcome', issue: issues } as OperationOutcome, search: { mode: 'outcome' } };
}
