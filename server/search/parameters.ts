import fs from 'node:fs';
import path from 'node:path';
import type { Bundle, SearchParameter } from 'fhir/r4';
import { RESOURCE_TYPES, type ResourceType } from '../../resources';
import { profilesDir } from '../profiles-dir';

/** Search parameter types Custodian indexes (our three resource types use no number, quantity or composite). */
export type ParamType = 'string' | 'token' | 'date' | 'reference' | 'uri';

/**
 * One search parameter as the server uses it, built from the official R4 SearchParameter
 * definition in `profiles/r4/search-parameters.json` (not hand-written).
 */
export interface SearchParamDef {
  readonly code: string;
  readonly type: ParamType;
  readonly resourceType: ResourceType;
  /** The official FHIRPath expression, narrowed to this resource type. */
  readonly expression: string;
  /** Target types for reference parameters. */
  readonly targets: readonly string[];
  /** Where the values live: an index table, or a column of `resources`. */
  readonly storage: 'index' | 'id-column' | 'last-updated-column';
  readonly url: string;
  readonly description: string;
}

/** Parameters defined in R4 that Custodian does not support, with the reason (reported in the CapabilityStatement docs). */
export const UNSUPPORTED_PARAMS: Readonly<Record<string, string>> = {
  _text: 'full-text search of the narrative is not offered',
  _content: 'full-text search of the whole resource is not offered',
  _query: 'no named queries are defined',
};

const SUPPORTED_TYPES = new Set<string>(['string', 'token', 'date', 'reference', 'uri']);

/**
 * Keeps the alternatives of a union expression that apply to `type` (the official expressions
 * list many resource types, e.g. `Patient.name.family | Practitioner.name.family`), and
 * rewrites `where(resolve() is X)` into a test on the reference string, as the issue asks
 * ("index the reference's type from the reference string").
 */
export function narrowExpression(expression: string, type: string): string {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const c = expression[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '|' && depth === 0) {
      parts.push(expression.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(expression.slice(start).trim());
  const kept = parts.filter((p) => p.replace(/^\(+/, '').startsWith(type + '.') || p === type);
  return kept
    .map((p) => p.replace(/\.where\(resolve\(\) is ([A-Za-z]+)\)/g, (_m, target: string) => `.where(reference.matches('(^|/)${target}/[A-Za-z0-9.-]{1,64}(/_history/[A-Za-z0-9.-]{1,64})?$'))`))
    .join(' | ');
}

function load(): Map<ResourceType, Map<string, SearchParamDef>> {
  const file = path.join(profilesDir(), 'r4', 'search-parameters.json');
  const bundle = JSON.parse(fs.readFileSync(file, 'utf8')) as Bundle;
  const byType = new Map<ResourceType, Map<string, SearchParamDef>>();
  for (const type of RESOURCE_TYPES) byType.set(type, new Map());
  for (const entry of bundle.entry ?? []) {
    const sp = entry.resource as SearchParameter;
    if (sp.code in UNSUPPORTED_PARAMS || !SUPPORTED_TYPES.has(sp.type)) continue;
    for (const base of sp.base) {
      const types: readonly ResourceType[] = base === 'Resource' || base === 'DomainResource' ? RESOURCE_TYPES : (RESOURCE_TYPES as readonly string[]).includes(base) ? [base as ResourceType] : [];
      for (const type of types) {
        const expression = (sp.expression ?? '').replace(/\bResource\./g, `${type}.`);
        const storage = sp.code === '_id' ? 'id-column' : sp.code === '_lastUpdated' ? 'last-updated-column' : 'index';
        byType.get(type)!.set(sp.code, {
          code: sp.code,
          type: sp.type as ParamType,
          resourceType: type,
          expression: narrowExpression(expression, type),
          targets: sp.target ?? [],
          storage,
          url: sp.url,
          description: sp.description,
        });
      }
    }
  }
  return byType;
}

let registry: Map<ResourceType, Map<string, SearchParamDef>> | undefined;

/** The search parameters of a resource type, by code (loaded once). */
export function searchParams(type: ResourceType): ReadonlyMap<string, SearchParamDef> {
  registry ??= load();
  return registry.get(type)!;
}
