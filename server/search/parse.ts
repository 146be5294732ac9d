import type { OperationOutcomeIssue } from 'fhir/r4';
import type { ResourceType } from '../../resources';
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
  readonly cursor?: Cursor;
  /** Parameters that were applied, for the `self` link. */
  readonly applied: [string, string][];
  /** Issues about parameters that were ignored (lenient handling). */
  readonly ignored: OperationOutcomeIssue[];
}

export type Cursor = { readonly after: number } | { readonly before: number };

export type Criterion =
  | { kind: 'missing'; def: SearchParamDef; missing: boolean }
  | { kind: 'token'; def: SearchParamDef; not: boolean; values: TokenValue[]; param: string }
  | { kind: 'token-text'; def: SearchParamDef; values: string[] }
  | { kind: 'string'; def: SearchParamDef; mode: 'starts' | 'exact' | 'contains'; values: string[] }
  | { kind: 'date'; def: SearchParamDef; values: DateValue[] }
  | { kind: 'reference'; def: SearchParamDef; values: ReferenceValue[] }
  | { kind: 'uri'; def: SearchParamDef; mode: 'exact' | 'below' | 'above'; values: string[] };

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

/** Parameters that shape results rather than filter them. */
const RESULT_PARAMS = new Set(['_count', '_cursor', '_format', '_pretty', '_summary', '_elements', '_total', '_sort', '_include', '_revinclude', '_contained', '_containedType']);

/** Result parameters the server does not implement yet; treated like unknown parameters. */
const NOT_YET = new Set(['_sort', '_include', '_revinclude', '_contained', '_containedType']);

export interface ParseOptions {
  readonly strict: boolean;
  readonly defaultCount: number;
  readonly maxCount: number;
  /** The request's base URL, to recognise absolute references to this server. */
  readonly baseUrl: string;
  readonly now: number;
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

export function parseSearch(type: ResourceType, query: readonly [string, string][], options: ParseOptions): ParsedSearch {
  const params = searchParams(type);
  const criteria: Criterion[] = [];
  const applied: [string, string][] = [];
  const ignored: OperationOutcomeIssue[] = [];
  let count = options.defaultCount;
  let cursor: Cursor | undefined;

  const ignore = (name: string, why: string) => {
    if (options.strict) throw new FhirError('invalid-search', `Unknown or unsupported search parameter '${name}': ${why}`, { expression: [name] });
    ignored.push({ severity: 'warning', code: 'not-supported', diagnostics: `Parameter '${name}' was ignored: ${why}`, expression: [name] });
  };
  const bad = (name: string, why: string): never => {
    throw new FhirError('invalid-search', `Invalid value for search parameter '${name}': ${why}`, { expression: [name] });
  };

  for (const [rawName, rawValue] of query) {
    const [code, modifier] = splitModifier(rawName);
    if (RESULT_PARAMS.has(code)) {
      if (code === '_count') {
        if (!/^\d+$/.test(rawValue)) bad('_count', `"${rawValue}" is not a whole number`);
        count = Math.min(Number(rawValue), options.maxCount);
        applied.push(['_count', String(count)]);
      } else if (code === '_cursor') {
        cursor = decodeCursor(rawValue) ?? bad('_cursor', 'not a cursor this server issued');
      } else if (NOT_YET.has(code)) {
        ignore(rawName, 'not implemented by this server');
      }
      continue;
    }
    if (code in UNSUPPORTED_PARAMS) {
      ignore(rawName, UNSUPPORTED_PARAMS[code]);
      continue;
    }
    if (code.includes('.') || code.startsWith('_has')) {
      ignore(rawName, 'chained and reverse-chained parameters are not supported');
      continue;
    }
    const def = params.get(code);
    if (!def) {
      ignore(rawName, `not a search parameter of ${type}`);
      continue;
    }
    if (rawValue === '') {
      ignore(rawName, 'empty value');
      continue;
    }
    const criterion = parseCriterion(def, rawName, modifier, rawValue, options, bad, ignore);
    if (criterion) {
      criteria.push(criterion);
      applied.push([rawName, rawValue]);
    }
  }
  return { criteria, count, cursor, applied, ignored };
}

function splitModifier(name: string): [string, string | undefined] {
  const i = name.indexOf(':');
  return i < 0 ? [name, undefined] : [name.slice(0, i), name.slice(i + 1)];
}

function parseCriterion(
  def: SearchParamDef,
  name: string,
  modifier: string | undefined,
  raw: string,
  options: ParseOptions,
  bad: (name: string, why: string) => never,
  ignore: (name: string, why: string) => void,
): Criterion | undefined {
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
      if (modifier && modifier !== 'not') {
        ignore(name, `modifier :${modifier} is not supported for token parameters`);
        return undefined;
      }
      return { kind: 'token', def, not: modifier === 'not', values: values.map(parseToken), param: def.code };
    }
    case 'string': {
      if (modifier && modifier !== 'exact' && modifier !== 'contains') {
        ignore(name, `modifier :${modifier} is not supported for string parameters`);
        return undefined;
      }
      return { kind: 'string', def, mode: modifier === 'exact' ? 'exact' : modifier === 'contains' ? 'contains' : 'starts', values: values.map(unescape) };
    }
    case 'date': {
      if (modifier) {
        ignore(name, `modifier :${modifier} is not supported for date parameters`);
        return undefined;
      }
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
      if (modifier && !/^[A-Z][A-Za-z]+$/.test(modifier)) {
        ignore(name, `modifier :${modifier} is not supported for reference parameters`);
        return undefined;
      }
      if (modifier && def.targets.length && !def.targets.includes(modifier)) bad(name, `${modifier} is not a target type of ${def.code}`);
      return { kind: 'reference', def, values: values.map((v) => parseReference(unescape(v), modifier, options.baseUrl) ?? bad(name, `"${v}" is not a reference`)) };
    }
    case 'uri': {
      if (modifier && modifier !== 'below' && modifier !== 'above') {
        ignore(name, `modifier :${modifier} is not supported for uri parameters`);
        return undefined;
      }
      return { kind: 'uri', def, mode: (modifier as 'below' | 'above' | undefined) ?? 'exact', values: values.map(unescape) };
    }
  }
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

export function encodeCursor(cursor: Cursor): string {
  return Buffer.from(JSON.stringify(cursor)).toString('base64url');
}

function decodeCursor(value: string): Cursor | undefined {
  try {
    const c = JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as Record<string, unknown>;
    if (typeof c.after === 'number' && Number.isInteger(c.after)) return { after: c.after };
    if (typeof c.before === 'number' && Number.isInteger(c.before)) return { before: c.before };
  } catch {
    /* fall through */
  }
  return undefined;
}
