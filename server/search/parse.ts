import type { OperationOutcomeIssue } from 'fhir/r4';
import { isResourceType, RESOURCE_TYPES, type ResourceType } from '../../resources';
import { FhirError } from '../errors';
import { parseDateRange, type DateRange } from '../fhir/dates';
import { searchParams, UNSUPPORTED_PARAMS, type SearchParamDef } from './parameters';

/**
 * A search request's query string, parsed and checked against the resource type's search
 * parameters (http://hl7.org/fhir/R4/search.html). Unknown parameters are dropped and reported,
 * or rejected with `Prefer: handling=strict`; malformed values are always a 400.
 */
export interface ParsedSearch {
  readonly criteria: Criterion[];
  readonly count: number;
  /** The opaque `_cursor` of a later page; the gate opens it (gate/cursor.ts). */
  readonly cursor?: string;
  readonly sort: SortKey[];
  readonly include: IncludeSpec[];
  readonly revinclude: IncludeSpec[];
  readonly total?: 'none' | 'estimate' | 'accurate';
  /** Parameters that were applied, for the `self` link (result parameters included). */
  readonly applied: [string, string][];
  /** Issues about parameters that were ignored (lenient handling). */
  readonly ignored: OperationOutcomeIssue[];
}

export interface SortKey {
  readonly def: SearchParamDef;
  readonly desc: boolean;
}

/**
 * `_include` / `_revinclude` (http://hl7.org/fhir/R4/search.html#include): the reference
 * parameter `param` of `source` resources, optionally only to `target` resources; `param`
 * undefined means every reference parameter (`*`).
 */
export interface IncludeSpec {
  readonly source: ResourceType;
  readonly param?: SearchParamDef;
  readonly target?: ResourceType;
  readonly iterate: boolean;
}

export type Criterion =
  | { kind: 'missing'; def: SearchParamDef; missing: boolean }
  | { kind: 'token'; def: SearchParamDef; not: boolean; values: TokenValue[]; param: string }
  | { kind: 'token-text'; def: SearchParamDef; values: string[] }
  /**
   * `starts`: the default match (at the start of any word for names and addresses, extract.ts
   * matchesWords); `starts-value`: at the start of the whole value only, as conditional criteria
   * match (wholeValueStrings).
   */
  | { kind: 'string'; def: SearchParamDef; mode: 'starts' | 'starts-value' | 'exact' | 'contains'; values: string[] }
  | { kind: 'date'; def: SearchParamDef; values: DateValue[] }
  | { kind: 'reference'; def: SearchParamDef; values: ReferenceValue[] }
  | { kind: 'uri'; def: SearchParamDef; mode: 'exact' | 'below' | 'above'; values: string[] }
  /** `patient.identifier=…`: resources whose reference `def` points at a `target` that the inner criterion matches. */
  | { kind: 'chain'; def: SearchParamDef; targets: { type: ResourceType; inner: Criterion }[] }
  /** `_has:Consent:patient:status=active`: resources that a `source` matching `inner` points at through `via`. */
  | { kind: 'has'; source: ResourceType; via: SearchParamDef; target: ResourceType; inner: Criterion };

export interface TokenValue {
  /** undefined: any system; null: no system (`|code`). */
  readonly system: string | null | undefined;
  /** undefined: any code (`system|`). */
  readonly code: string | undefined;
}

export type DatePrefix = 'eq' | 'ne' | 'gt' | 'lt' | 'ge' | 'le' | 'sa' | 'eb' | 'ap';
export interface DateValue {
  readonly prefix: DatePrefix;
  readonly range: DateRange;
}

export type ReferenceValue =
  | { readonly local: true; readonly type?: string; readonly id: string }
  | { readonly local: false; readonly url: string }
  | { readonly identifier: true; readonly system: string | null | undefined; readonly value: string | undefined };

/** Parameters that shape results rather than filter them; `_summary`/`_elements` are read by the bundle builder. */
const RESULT_PARAMS = new Set(['_count', '_cursor', '_format', '_pretty', '_summary', '_elements', '_total', '_sort', '_include', '_revinclude', '_contained', '_containedType', '_type']);

export interface ParseOptions {
  readonly strict: boolean;
  readonly defaultCount: number;
  readonly maxCount: number;
  /** The request's base URL, to recognise absolute references to this server. */
  readonly baseUrl: string;
  readonly now: number;
  /** Conditional interactions and scopes: plain criteria only (no chains, no result parameters). */
  readonly criteriaOnly?: boolean;
}

/** Splits a parameter value on unescaped commas (`\,` is a literal comma). */
export function splitOr(value: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '\\' && i + 1 < value.length && (value[i + 1] === ',' || value[i + 1] === '|' || value[i + 1] === '$' || value[i + 1] === '\\')) {
      cur += c + value[i + 1];
      i++;
    } else if (c === ',') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

/** Splits `system|code` on the first unescaped bar and unescapes both parts. */
function splitBar(value: string): [string, string] | [string] {
  for (let i = 0; i < value.length; i++) {
    if (value[i] === '\\') {
      i++;
      continue;
    }
    if (value[i] === '|') return [unescape(value.slice(0, i)), unescape(value.slice(i + 1))];
  }
  return [unescape(value)];
}

function unescape(value: string): string {
  return value.replace(/\\([,|$\\])/g, '$1');
}

type Bad = (name: string, why: string) => never;
type Ignore = (name: string, why: string) => void;

export function parseSearch(type: ResourceType, query: readonly [string, string][], options: ParseOptions): ParsedSearch {
  const params = searchParams(type);
  const criteria: Criterion[] = [];
  const applied: [string, string][] = [];
  const ignored: OperationOutcomeIssue[] = [];
  const sort: SortKey[] = [];
  const include: IncludeSpec[] = [];
  const revinclude: IncludeSpec[] = [];
  let count = options.defaultCount;
  let cursor: string | undefined;
  let total: ParsedSearch['total'];

  const ignore: Ignore = (name, why) => {
    if (options.strict) throw new FhirError('invalid-search', `Unknown or unsupported search parameter '${name}': ${why}`, { expression: [name] });
    ignored.push({ severity: 'warning', code: 'not-supported', diagnostics: `Parameter '${name}' was ignored: ${why}`, expression: [name] });
  };
  const bad: Bad = (name, why) => {
    throw new FhirError('invalid-search', `Invalid value for search parameter '${name}': ${why}`, { expression: [name] });
  };

  for (const [rawName, rawValue] of query) {
    // "Empty parameters are not an error - they are just ignored by the server" (search.html#errors):
    // under strict handling too, and left out of the self link.
    if (rawValue === '') continue;
    const [code, modifier] = splitModifier(rawName);
    if (RESULT_PARAMS.has(code)) {
      if (options.criteriaOnly) {
        if (code !== '_format' && code !== '_pretty') ignore(rawName, 'result parameters do not apply here');
        continue;
      }
      switch (code) {
        case '_count':
          if (!/^\d+$/.test(rawValue)) bad('_count', `"${rawValue}" is not a whole number`);
          count = Math.min(Number(rawValue), options.maxCount);
          applied.push(['_count', String(count)]);
          break;
        case '_cursor':
          if (!/^[A-Za-z0-9_-]{1,4096}$/.test(rawValue)) bad('_cursor', 'not a cursor this server issued');
          cursor = rawValue;
          break;
        case '_total':
          if (rawValue !== 'none' && rawValue !== 'estimate' && rawValue !== 'accurate') bad('_total', 'must be none, estimate or accurate');
          total = rawValue as ParsedSearch['total'];
          applied.push(['_total', rawValue]);
          break;
        case '_sort': {
          const keys = parseSort(type, rawValue, bad, ignore);
          if (keys.length) {
            sort.push(...keys);
            applied.push(['_sort', keys.map((k) => (k.desc ? '-' : '') + k.def.code).join(',')]);
          }
          break;
        }
        case '_include':
        case '_revinclude': {
          const specs = parseInclude(type, code, modifier, rawValue, bad, ignore);
          if (specs?.length) {
            (code === '_include' ? include : revinclude).push(...specs);
            applied.push([rawName, rawValue]);
          }
          break;
        }
        case '_contained':
        case '_containedType':
          ignore(rawName, 'contained resources are not searched separately by this server');
          break;
        case '_type':
          if (rawValue.split(',').some((t) => t !== type)) ignore(rawName, `_type applies to system-level search; this is a ${type} search`);
          break;
        default:
          break; // _format, _pretty, _summary, _elements: handled by the response
      }
      continue;
    }
    if (code in UNSUPPORTED_PARAMS) {
      ignore(rawName, UNSUPPORTED_PARAMS[code]);
      continue;
    }
    if (code === '_has') {
      if (options.criteriaOnly) {
        ignore(rawName, 'reverse chaining is not supported here');
        continue;
      }
      const criterion = parseHas(type, rawName, rawValue, options, bad, ignore);
      if (criterion) {
        criteria.push(criterion);
        applied.push([rawName, rawValue]);
      }
      continue;
    }
    const dot = rawName.indexOf('.');
    if (dot >= 0) {
      if (options.criteriaOnly) {
        ignore(rawName, 'chained parameters are not supported here');
        continue;
      }
      const criterion = parseChain(type, rawName, dot, rawValue, options, bad, ignore);
      if (criterion) {
        criteria.push(criterion);
        applied.push([rawName, rawValue]);
      }
      continue;
    }
    const def = params.get(code);
    if (!def) {
      ignore(rawName, `not a search parameter of ${type}`);
      continue;
    }
    const criterion = parseCriterion(def, rawName, modifier, rawValue, options, bad);
    if (criterion) {
      criteria.push(criterion);
      applied.push([rawName, rawValue]);
    }
  }
  return { criteria, count, cursor, sort, include, revinclude, total, applied, ignored };
}

function splitModifier(name: string): [string, string | undefined] {
  const i = name.indexOf(':');
  return i < 0 ? [name, undefined] : [name.slice(0, i), name.slice(i + 1)];
}

/** Types this server stores among a reference parameter's targets. */
function servedTargets(def: SearchParamDef): ResourceType[] {
  return RESOURCE_TYPES.filter((t) => def.targets.includes(t));
}

/** `_sort=a,-b` (http://hl7.org/fhir/R4/search.html#sort). */
function parseSort(type: ResourceType, value: string, bad: Bad, ignore: Ignore): SortKey[] {
  const keys: SortKey[] = [];
  for (const raw of value.split(',')) {
    const desc = raw.startsWith('-');
    const code = desc ? raw.slice(1) : raw;
    if (!code) bad('_sort', 'empty sort key');
    const def = searchParams(type).get(code);
    if (!def) {
      ignore(`_sort=${raw}`, `${code} is not a search parameter of ${type}`);
      continue;
    }
    if (keys.some((k) => k.def.code === code)) bad('_sort', `${code} is named twice`);
    keys.push({ def, desc });
  }
  return keys;
}

/**
 * `_include=Consent:patient[:Patient]`, `_include=*`, `_include:iterate=…`, `_revinclude=Consent:patient`,
 * `_revinclude=*`, `_revinclude=Consent:*`: the wildcard ("any search parameter of type=reference",
 * search.html#include) in a `_revinclude` stands for each reference parameter that can point at
 * what it is applied to, one spec each.
 */
function parseInclude(type: ResourceType, code: '_include' | '_revinclude', modifier: string | undefined, value: string, bad: Bad, ignore: Ignore): IncludeSpec[] | undefined {
  const name = modifier ? `${code}:${modifier}` : code;
  if (modifier && modifier !== 'iterate' && modifier !== 'recurse') bad(name, `unknown modifier :${modifier} (only :iterate)`);
  const iterate = modifier !== undefined;
  if (value === '*') {
    if (code === '_revinclude') return revincludeAll(type, RESOURCE_TYPES, undefined, iterate, () => ignore(`${name}=${value}`, `no resource type stored on this server can point at ${type}`));
    return [{ source: type, iterate }];
  }
  const [sourceName, paramCode, targetName, ...rest] = value.split(':');
  if (rest.length || !sourceName || !paramCode) bad(name, `"${value}" is not Type:parameter[:targetType]`);
  if (!isResourceType(sourceName)) {
    ignore(`${name}=${value}`, `${sourceName} resources are not stored on this server`);
    return undefined;
  }
  if (code === '_include' && !iterate && sourceName !== type) bad(name, `${value} does not start with the searched type ${type} (use :iterate to include from included resources)`);
  if (paramCode === '*') {
    if (targetName !== undefined && !isResourceType(targetName)) {
      ignore(`${name}=${value}`, `${targetName} resources are not stored on this server`);
      return undefined;
    }
    const target = targetName as ResourceType | undefined;
    if (code === '_revinclude') return revincludeAll(type, [sourceName], target, iterate, () => ignore(`${name}=${value}`, `no reference parameter of ${sourceName} can point at ${target ?? type}`));
    return [{ source: sourceName, target, iterate }];
  }
  const def = searchParams(sourceName).get(paramCode);
  if (!def || def.type !== 'reference') bad(name, `${paramCode} is not a reference parameter of ${sourceName}`);
  if (targetName !== undefined && !def.targets.includes(targetName)) bad(name, `${targetName} is not a target type of ${sourceName}:${paramCode}`);
  if (targetName !== undefined && !isResourceType(targetName)) {
    ignore(`${name}=${value}`, `${targetName} resources are not stored on this server`);
    return undefined;
  }
  if (code === '_revinclude' && !iterate && !def.targets.includes(type)) bad(name, `${sourceName}:${paramCode} cannot point at ${type}`);
  if (!servedTargets(def).length) {
    ignore(`${name}=${value}`, `${sourceName}:${paramCode} points at no resource type stored on this server`);
    return undefined;
  }
  return [{ source: sourceName, param: def, target: targetName as ResourceType | undefined, iterate }];
}

/**
 * A wildcard `_revinclude`: one spec per reference parameter of the `sources` that can point at
 * `target` (given), or at the searched type, or with :iterate at anything stored (what it is
 * applied to is then also what the first round included); `none` reports a wildcard that stands
 * for nothing.
 */
function revincludeAll(type: ResourceType, sources: readonly ResourceType[], target: ResourceType | undefined, iterate: boolean, none: () => void): IncludeSpec[] | undefined {
  const specs: IncludeSpec[] = [];
  for (const source of sources) {
    for (const def of searchParams(source).values()) {
      if (def.type !== 'reference') continue;
      const served = servedTargets(def);
      if (target ? !served.includes(target) : iterate ? served.length === 0 : !served.includes(type)) continue;
      specs.push({ source, param: def, ...(target ? { target } : {}), iterate });
    }
  }
  if (specs.length === 0) none();
  return specs.length ? specs : undefined;
}

/**
 * One level of chaining (http://hl7.org/fhir/R4/search.html#chaining): `patient.identifier=…`,
 * `patient:Patient.name=…`. The target type is the type modifier, or every stored target type
 * that has the inner parameter.
 */
function parseChain(type: ResourceType, rawName: string, dot: number, value: string, options: ParseOptions, bad: Bad, ignore: Ignore): Criterion | undefined {
  const [code, typeModifier] = splitModifier(rawName.slice(0, dot));
  const innerName = rawName.slice(dot + 1);
  if (innerName.includes('.')) {
    ignore(rawName, 'chains of more than one level are not supported');
    return undefined;
  }
  const def = searchParams(type).get(code);
  if (!def || def.type !== 'reference') {
    ignore(rawName, `${code} is not a reference parameter of ${type}`);
    return undefined;
  }
  let candidates = servedTargets(def);
  if (typeModifier) {
    if (!def.targets.includes(typeModifier)) bad(rawName, `${typeModifier} is not a target type of ${code}`);
    candidates = candidates.filter((t) => t === typeModifier);
  }
  const [innerCode, innerModifier] = splitModifier(innerName);
  const targets: { type: ResourceType; inner: Criterion }[] = [];
  for (const target of candidates) {
    const innerDef = searchParams(target).get(innerCode);
    if (!innerDef) continue;
    const inner = parseCriterion(innerDef, rawName, innerModifier, value, options, bad);
    if (!inner) return undefined;
    targets.push({ type: target, inner });
  }
  if (!targets.length) {
    ignore(rawName, `${innerCode} is not a search parameter of ${candidates.join(' or ') || 'any resource type stored here that ' + code + ' can point at'}`);
    return undefined;
  }
  return { kind: 'chain', def, targets };
}

/** Reverse chaining, one level (http://hl7.org/fhir/R4/search.html#has): `_has:Consent:patient:status=active`. */
function parseHas(type: ResourceType, rawName: string, value: string, options: ParseOptions, bad: Bad, ignore: Ignore): Criterion | undefined {
  const parts = rawName.split(':');
  if (parts.length < 4) bad(rawName, 'use _has:Type:reference:parameter=value');
  const [, sourceName, viaCode, innerCode, ...modifiers] = parts;
  if (innerCode === '_has') {
    ignore(rawName, 'nested _has is not supported');
    return undefined;
  }
  if (!isResourceType(sourceName)) {
    ignore(rawName, `${sourceName} resources are not stored on this server`);
    return undefined;
  }
  const via = searchParams(sourceName).get(viaCode);
  if (!via || via.type !== 'reference') bad(rawName, `${viaCode} is not a reference parameter of ${sourceName}`);
  if (!via.targets.includes(type)) bad(rawName, `${sourceName}:${viaCode} cannot point at ${type}`);
  const innerDef = searchParams(sourceName).get(innerCode);
  if (!innerDef) {
    ignore(rawName, `${innerCode} is not a search parameter of ${sourceName}`);
    return undefined;
  }
  const inner = parseCriterion(innerDef, rawName, modifiers.length ? modifiers.join(':') : undefined, value, options, bad);
  return inner ? { kind: 'has', source: sourceName, via, target: type, inner } : undefined;
}

function parseCriterion(def: SearchParamDef, name: string, modifier: string | undefined, raw: string, options: ParseOptions, bad: Bad): Criterion {
  // Only \, \$ \| and \\ are escapes; "The parameter value xx\xx is illegal" (search.html#escaping).
  if (raw.replace(/\\[,$|\\]/g, '').includes('\\')) bad(name, `"${raw}" holds a backslash that escapes nothing (only \\, \\$ \\| and \\\\ are escapes)`);
  const values = splitOr(raw);
  if (modifier === 'missing') {
    if (raw !== 'true' && raw !== 'false') bad(name, ':missing takes true or false');
    return { kind: 'missing', def, missing: raw === 'true' };
  }
  switch (def.type) {
    case 'token': {
      if (modifier === 'text') return { kind: 'token-text', def, values: values.map(unescape) };
      if (modifier === 'of-type') {
        if (def.code !== 'identifier') bad(name, ':of-type applies to identifier parameters only');
        const parsed = values.map((v) => {
          const parts = v.split('|');
          if (parts.length !== 3 || !parts[1] || !parts[2]) bad(name, ':of-type takes system|code|value');
          return { system: parts[0] || null, code: `${parts[1]}|${parts[2]}` } satisfies TokenValue;
        });
        return { kind: 'token', def, not: false, values: parsed, param: `${def.code}:of-type` };
      }
      if (modifier && modifier !== 'not') unsupportedModifier(name, modifier, 'token');
      return { kind: 'token', def, not: modifier === 'not', values: values.map(parseToken), param: def.code };
    }
    case 'string': {
      if (modifier && modifier !== 'exact' && modifier !== 'contains') unsupportedModifier(name, modifier, 'string');
      return { kind: 'string', def, mode: modifier === 'exact' ? 'exact' : modifier === 'contains' ? 'contains' : 'starts', values: values.map(unescape) };
    }
    case 'date': {
      if (modifier) unsupportedModifier(name, modifier, 'date');
      return { kind: 'date', def, values: values.map((v) => parseDateValue(v) ?? bad(name, `"${v}" is not a date, optionally prefixed with eq, ne, gt, lt, ge, le, sa, eb or ap`)) };
    }
    case 'reference': {
      if (modifier === 'identifier') {
        return {
          kind: 'reference',
          def,
          values: values.map((v) => {
            const [a, b] = splitBar(v);
            return b === undefined ? { identifier: true, system: undefined, value: a } : { identifier: true, system: a || null, value: b || undefined };
          }),
        };
      }
      if (modifier && !/^[A-Z][A-Za-z]+$/.test(modifier)) unsupportedModifier(name, modifier, 'reference');
      if (modifier && def.targets.length && !def.targets.includes(modifier)) bad(name, `${modifier} is not a target type of ${def.code}`);
      return { kind: 'reference', def, values: values.map((v) => parseReference(unescape(v), modifier, options.baseUrl) ?? bad(name, `"${v}" is not a reference`)) };
    }
    case 'uri': {
      if (modifier && modifier !== 'below' && modifier !== 'above') unsupportedModifier(name, modifier, 'uri');
      return { kind: 'uri', def, mode: (modifier as 'below' | 'above' | undefined) ?? 'exact', values: values.map(unescape) };
    }
  }
}

/**
 * "Servers SHALL reject any search request that contains a search parameter with an unsupported
 * modifier" (search.html#modifiers): a 400 whatever the handling preference, since ignoring it
 * would answer a different question (`gender:in=…` as every Patient).
 */
function unsupportedModifier(name: string, modifier: string, kind: string): never {
  throw new FhirError('invalid-search', `Unsupported modifier on search parameter '${name}': :${modifier} is not supported for ${kind} parameters`, { expression: [name] });
}

function parseToken(value: string): TokenValue {
  const [a, b] = splitBar(value);
  if (b === undefined) return { system: undefined, code: a };
  return { system: a === '' ? null : a, code: b === '' ? undefined : b };
}

const PREFIXES: readonly DatePrefix[] = ['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap'];

export function parseDateValue(value: string): DateValue | null {
  let prefix: DatePrefix = 'eq';
  let rest = value;
  const p = value.slice(0, 2) as DatePrefix;
  if (PREFIXES.includes(p)) {
    prefix = p;
    rest = value.slice(2);
  }
  const range = parseDateRange(rest);
  return range ? { prefix, range } : null;
}

function parseReference(value: string, typeModifier: string | undefined, baseUrl: string): ReferenceValue | null {
  let v = value.replace(/\/_history\/[^/]+$/, '');
  if (v.startsWith(baseUrl + '/')) v = v.slice(baseUrl.length + 1);
  if (/^[A-Za-z0-9\-.]{1,64}$/.test(v)) return { local: true, type: typeModifier, id: v };
  const m = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(v);
  if (m) {
    if (typeModifier && typeModifier !== m[1]) return null;
    return { local: true, type: m[1], id: m[2] };
  }
  if (/^[a-z][a-z0-9+.-]*:/i.test(v)) return { local: false, url: v };
  return null;
}

/**
 * The criteria with every default string match at the start of the whole value, not of any word
 * (through chains and `_has` too): for conditional creates, updates and deletes, whose criteria
 * pick the one resource to write, so that `PUT Patient?family=Jones&birthdate=…` never takes a
 * Smith-Jones for the Jones the client meant (interactions/common.ts conditionalFilter).
 */
export function wholeValueStrings(criteria: readonly Criterion[]): Criterion[] {
  const one = (c: Criterion): Criterion => {
    switch (c.kind) {
      case 'string':
        return c.mode === 'starts' ? { ...c, mode: 'starts-value' } : c;
      case 'chain':
        return { ...c, targets: c.targets.map((t) => ({ ...t, inner: one(t.inner) })) };
      case 'has':
        return { ...c, inner: one(c.inner) };
      default:
        return c;
    }
  };
  return criteria.map(one);
}
