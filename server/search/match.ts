import type { Resource } from 'fhir/r4';
import type { ResourceType } from '../../resources';
import { extractIndexRows, foldsCase, indexKey } from './extract';
import { searchParams } from './parameters';
import { splitOr } from './parse';

/**
 * In-memory check of token criteria against one resource, with the same index rows the
 * database search uses: for granular scopes such as `system/Consent.rs?category=…`, which
 * must hold for reads as well as searches.
 */
export function matchesTokens(type: ResourceType, resource: Resource, criteria: readonly [string, string][]): boolean {
  const rows = extractIndexRows(type, resource).token;
  return criteria.every(([name, value]) => {
    const def = searchParams(type).get(name);
    // An empty value restricts to nothing: search ignores it, a scope must not grant by it.
    if (!def || def.type !== 'token' || value === '') return false;
    return splitOr(value).some((v) => {
      const bar = v.indexOf('|');
      const system = bar < 0 ? undefined : v.slice(0, bar) || null;
      const given = bar < 0 ? v : v.slice(bar + 1) || undefined;
      const code = given !== undefined && foldsCase(def) ? given.toLowerCase() : given;
      return rows.some((r) => r.param === name && (code === undefined || r.code === indexKey(code)) && (system === undefined || r.system === indexKey(system ?? '')));
    });
  });
}

/** True when every criterion names a token search parameter of the type (what granular scopes may use). */
export function isTokenQuery(type: ResourceType, criteria: readonly [string, string][]): boolean {
  return criteria.every(([name]) => searchParams(type).get(name)?.type === 'token');
}
