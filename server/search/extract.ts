import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import fhirpath from 'fhirpath';
import r4model from 'fhirpath/fhir-context/r4';
import type { Resource, StructureDefinition } from 'fhir/r4';
import { profilesDir } from '../profiles-dir';
import { definitions, parseRelativeReference, type ResourceType } from '../../resources';
import { MAX_DATE, MIN_DATE, parseDateRange } from '../fhir/dates';
import { searchParams, type SearchParamDef } from './parameters';

/**
 * Search-index rows of one resource version, by table. Written in the same transaction as the
 * version (or, for the audit trail's own events, soon after: see store/audit-index.ts).
 *
 * Tokens keep `''` for an absent system or code (index keys are never NULL); the normalised
 * display/text a `:text` search matches is a token row of its own, under `<param>:text`, with
 * the text as its code. References are one
 * key string: `Type/id` for a reference to this server, `url:<absolute URL>` for anything else,
 * `id:<value>|<system>` for a logical reference by identifier.
 */
export interface IndexRows {
  readonly string: { param: string; norm: string; exact: string }[];
  readonly token: { param: string; system: string; code: string }[];
  readonly date: { param: string; lo: number; hi: number }[];
  readonly reference: { param: string; ref: string }[];
  readonly uri: { param: string; uri: string }[];
}

/** The reference index key of a logical (identifier) reference. */
export function identifierRef(value: string, system: string | null | undefined): string {
  return `id:${value}|${system ?? ''}`;
}

/** Lower-case, accents removed: the form string search compares (http://hl7.org/fhir/R4/search.html#string). */
export function normalizeString(value: string): string {
  return value.normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase();
}

/**
 * The form a person's name or address is matched in by default (wordParts): apostrophes dropped,
 * whichever way they are written (`O'Brien`, `O’Brien`, `O‘Brien`, `OʼBrien`, `O´Brien` are all
 * `obrien`; dropped before normalising, which would make an acute accent a space), normalised as
 * every string is (normalizeString), and each run of whitespace, dashes and other punctuation one
 * space (`Smith-Jones`, `Smith  Jones` and `Smith, Jones` are all `smith jones`).
 */
export function wordForm(value: string): string {
  return normalizeString(value.replace(APOSTROPHES, '')).replace(/[\s\p{P}\p{S}]+/gu, ' ');
}

/** ' ’ ‘ ʼ ` ´ and the fullwidth apostrophe. */
const APOSTROPHES = /['\u2019\u2018\u02bc`\u00b4\uff07]/g;

/** Words of one name or address value indexed on their own at most: a longer text is found by its first ones. */
export const MAX_WORD_PARTS = 16;

/**
 * The index values of a name or address part for matching by word (its `:part` rows, see
 * wordPartParam): its word form (wordForm) from each word after the first on (`van der Berg`:
 * `der berg`, `berg`), and from its first word too when that differs from the value's ordinary
 * index row (`O'Brien`: `obrien`; `Smith-Jones`: `smith jones`). A value of one plain word, as
 * most names are, needs none: its ordinary row is its word form, and the search reads both.
 */
export function wordParts(value: string): string[] {
  const w = wordForm(value).trim();
  if (!w) return [];
  const parts = w === normalizeString(value) ? [] : [w];
  for (let i = w.indexOf(' '); i >= 0 && parts.length < MAX_WORD_PARTS; i = w.indexOf(' ', i + 1)) parts.push(w.slice(i + 1));
  return parts;
}

/**
 * The index parameter (search/param-id.ts) that holds a word-matched parameter's wordParts: a
 * search reads it with the parameter's own rows (search/sql.ts).
 */
export function wordPartParam(code: string): string {
  return `${code}:part`;
}

/** American Soundex of one word, used for the `phonetic` parameter. */
export function soundex(word: string): string {
  const letters = normalizeString(word).replace(/[^a-z]/g, '');
  if (!letters) return '';
  const codes: Record<string, string> = { b: '1', f: '1', p: '1', v: '1', c: '2', g: '2', j: '2', k: '2', q: '2', s: '2', x: '2', z: '2', d: '3', t: '3', l: '4', m: '5', n: '5', r: '6' };
  let out = letters[0].toUpperCase();
  let last = codes[letters[0]] ?? '';
  for (let i = 1; i < letters.length && out.length < 4; i++) {
    const ch = letters[i];
    const code = codes[ch] ?? '';
    if (code && code !== last) out += code;
    if (ch !== 'h' && ch !== 'w') last = code;
  }
  return out.padEnd(4, '0');
}

interface TypedNode {
  getTypeInfo(): { name: string };
  data: unknown;
}
type Compiled = (resource: unknown) => unknown[];
const compiled = new Map<string, Compiled>();

function compile(def: SearchParamDef): Compiled {
  const key = `${def.resourceType}.${def.code}`;
  let fn = compiled.get(key);
  if (!fn) {
    fn = !def.expression
      ? () => []
      : (fastPath(def.resourceType, def.expression) ?? (fhirpath.compile(def.expression, r4model, { resolveInternalTypes: false }) as unknown as Compiled));
    compiled.set(key, fn);
  }
  return fn;
}

/**
 * Most official expressions are plain paths (`AuditEvent.entity.what`), some with a
 * `where(field='x')` or `where(reference.matches('re'))` filter, joined by `|`. Those are
 * compiled here into direct walks over the JSON, typed from the base StructureDefinitions
 * (fhirpath.js costs ~10 µs per expression per resource; the walks a fraction of that, which
 * matters when every request writes AuditEvents). Anything else — `as`, `exists()`, choice
 * types — is left to fhirpath.js. A test proves both give the same rows.
 */
const DATATYPE_CHILDREN: Record<string, Record<string, string>> = {
  Meta: { profile: 'canonical', security: 'Coding', source: 'uri', tag: 'Coding', versionId: 'id', lastUpdated: 'instant' },
  HumanName: { family: 'string', given: 'string', text: 'string', prefix: 'string', suffix: 'string', use: 'code' },
  Address: { city: 'string', country: 'string', postalCode: 'string', state: 'string', district: 'string', text: 'string', line: 'string', use: 'code' },
  ContactPoint: { system: 'code', value: 'string', use: 'code' },
  Reference: { reference: 'string', display: 'string' },
};

let elementTypes: Map<string, string> | undefined;

/** Element path → its single type code, from the base StructureDefinitions (choices left out). */
function typeOfPath(pathText: string): string | undefined {
  if (!elementTypes) {
    elementTypes = new Map();
    for (const type of ['Patient', 'Consent', 'AuditEvent']) {
      const sd = JSON.parse(fs.readFileSync(path.join(profilesDir(), 'r4', `StructureDefinition-${type}.json`), 'utf8')) as StructureDefinition;
      for (const el of sd.snapshot?.element ?? []) {
        if (el.path.endsWith('[x]') || el.type?.length !== 1) continue;
        const code = el.type[0].code;
        elementTypes.set(el.path, code === 'BackboneElement' || code === 'Element' ? 'BackboneElement' : code);
      }
    }
  }
  return elementTypes.get(pathText);
}

type Step = { prop: string } | { where: (node: Record<string, unknown>) => boolean };

function fastPath(resourceType: string, expression: string): Compiled | undefined {
  const alternatives = expression.split(' | ').map((alt) => alt.trim());
  const walkers: { steps: Step[]; typeName: string }[] = [];
  for (const alt of alternatives) {
    const steps: Step[] = [];
    // `.where(…)` may hold a quoted regex with parentheses of its own (the `resolve() is X` rewrite).
    const tokens = alt.match(/\.where\((?:[^()']|'[^']*'|\((?:[^()']|'[^']*')*\))*\)|\.[A-Za-z]+|^[A-Za-z]+/g);
    if (!tokens || tokens.join('') !== alt || tokens[0] !== resourceType) return undefined;
    let elementPath = resourceType;
    let typeName = resourceType;
    let datatype: string | undefined;
    for (const t of tokens.slice(1)) {
      if (t.startsWith('.where(')) {
        const body = t.slice('.where('.length, -1);
        const eq = /^([A-Za-z]+)\s*=\s*'([^']*)'$/.exec(body);
        const re = /^reference\.matches\('([^']*)'\)$/.exec(body);
        if (eq) steps.push({ where: (n) => n[eq[1]] === eq[2] });
        else if (re) {
          const regex = new RegExp(re[1]);
          steps.push({ where: (n) => typeof n.reference === 'string' && regex.test(n.reference) });
        } else return undefined;
        continue;
      }
      const prop = t.slice(1);
      if (datatype) {
        typeName = DATATYPE_CHILDREN[datatype]?.[prop] ?? '';
        datatype = undefined;
      } else {
        elementPath += `.${prop}`;
        typeName = typeOfPath(elementPath) ?? '';
      }
      if (!typeName) return undefined;
      if (DATATYPE_CHILDREN[typeName]) datatype = typeName;
      steps.push({ prop });
    }
    if (typeName === 'BackboneElement') return undefined;
    walkers.push({ steps, typeName });
  }
  return (resource: unknown) => {
    const out: unknown[] = [];
    for (const w of walkers) {
      let nodes: unknown[] = [resource];
      for (const step of w.steps) {
        const next: unknown[] = [];
        for (const n of nodes) {
          if (!n || typeof n !== 'object') continue;
          if ('prop' in step) {
            const v = (n as Record<string, unknown>)[step.prop];
            if (Array.isArray(v)) next.push(...v);
            else if (v !== undefined && v !== null) next.push(v);
          } else if (step.where(n as Record<string, unknown>)) next.push(n);
        }
        nodes = next;
      }
      for (const data of nodes) out.push({ getTypeInfo: () => ({ name: w.typeName }), data } satisfies TypedNode);
    }
    return out;
  };
}

/** A fact about a search parameter, worked out once per parameter (by type and code). */
function perParameter<T>(compute: (def: SearchParamDef) => T): (def: SearchParamDef) => T {
  const known = new Map<string, T>();
  return (def) => {
    const key = `${def.resourceType}.${def.code}`;
    let value = known.get(key);
    if (value === undefined) known.set(key, (value = compute(def)));
    return value;
  };
}

/**
 * Whether a token parameter matches its values case-insensitively: "If the underlying data type
 * is string then the search is not case sensitive" (http://hl7.org/fhir/R4/search.html#token).
 * True when every path of its expression ends at a string element (AuditEvent `altid`, `site`)
 * or a ContactPoint, whose value is one (`email`, `phone`, `telecom`); not for codes, Codings or
 * Identifiers, whose case their system decides. Such codes are indexed lower-cased, and the
 * values searched for are lower-cased to match.
 */
export const foldsCase = perParameter((def): boolean => {
  const paths = def.type === 'token' && def.expression ? def.expression.split(' | ').map((alt) => alt.trim().replace(/\.where\([^()]*\)/g, '')) : [];
  return paths.length > 0 && paths.every((p) => /^[A-Za-z.]+$/.test(p) && ['string', 'ContactPoint'].includes(typeOfPath(p) ?? ''));
});

/**
 * Whether a string parameter matches by default at the start of any word of the value, not only
 * at its start: those the official definitions describe as matching "a portion of" a name or as
 * "a server defined search" over a name's or an address's parts (Patient `family`, `given`,
 * `name`, `address`); a receptionist who types `jones` looks for Smith-Jones too, and `berg` for
 * van der Berg. Not `phonetic`, which matches each word by its Soundex already, nor a parameter
 * defined as one part of an address (`address-city` is "a city specified in an address").
 * `:exact` and `:contains` compare the whole value, as before, and so do conditional criteria
 * (parse.ts wholeValueStrings).
 */
export const matchesWords = perParameter(
  (def): boolean => def.type === 'string' && def.code !== 'phonetic' && /^(A portion of|A server defined search)/i.test(descriptionFor(def)),
);

/** A parameter's description for its own type: a definition shared by several types describes each in a bullet of its own (`* [Patient](patient.html): A portion of …`). */
function descriptionFor(def: SearchParamDef): string {
  const marker = `[${def.resourceType}](${def.resourceType.toLowerCase()}.html):`;
  const at = def.description.indexOf(marker);
  if (at < 0) return def.description.trim();
  const rest = def.description.slice(at + marker.length);
  const next = rest.indexOf('* [');
  return (next < 0 ? rest : rest.slice(0, next)).trim();
}

/** For the test that proves the fast walks and fhirpath.js agree. */
export function extractWithFhirpathOnly(type: ResourceType, resource: Resource, localBase?: string): IndexRows {
  const saved = new Map(compiled);
  compiled.clear();
  for (const def of searchParams(type).values()) {
    if (def.storage === 'index' && def.expression) compiled.set(`${def.resourceType}.${def.code}`, fhirpath.compile(def.expression, r4model, { resolveInternalTypes: false }) as unknown as Compiled);
  }
  try {
    return extractIndexRows(type, resource, localBase);
  } finally {
    compiled.clear();
    for (const [k, v] of saved) compiled.set(k, v);
  }
}

/**
 * Computes the index rows of a resource from the official search parameter expressions.
 * `localBase` (the configured base URL) lets absolute references to this server index as
 * local `Type/id` references. `only`: the rows of these parameters alone (the early rows of
 * the audit trail's own events, see store/audit-index.ts).
 */
export function extractIndexRows(type: ResourceType, resource: Resource, localBase?: string, only?: ReadonlySet<string>): IndexRows {
  const rows: IndexRows = { string: [], token: [], date: [], reference: [], uri: [] };
  const systems = definitions[type].codeSystems;
  for (const def of searchParams(type).values()) {
    if (def.storage !== 'index' || (only && !only.has(def.code))) continue;
    const values = compile(def)(resource);
    for (const node of values) {
      const [typeName, data] = unwrap(node);
      switch (def.type) {
        case 'string':
          addStrings(rows, def.code, typeName, data, matchesWords(def));
          break;
        case 'token':
          addTokens(rows, def.code, typeName, data, systems[def.code] ?? null, foldsCase(def));
          break;
        case 'date':
          addDate(rows, def.code, typeName, data);
          break;
        case 'reference':
          addReference(rows, def.code, typeName, data, localBase);
          break;
        case 'uri':
          if (typeof data === 'string') rows.uri.push({ param: def.code, uri: data });
          break;
      }
    }
  }
  return dedupe(rows);
}

/**
 * The index keys of one reference parameter of a resource, as extractIndexRows gives them,
 * without computing the rest (the audit trail queues each event with its `patient` key).
 */
export function referenceKeys(type: ResourceType, code: string, resource: Resource, localBase?: string): string[] {
  const def = searchParams(type).get(code);
  if (!def || def.type !== 'reference' || def.storage !== 'index') return [];
  const rows: IndexRows = { string: [], token: [], date: [], reference: [], uri: [] };
  for (const node of compile(def)(resource)) {
    const [typeName, data] = unwrap(node);
    addReference(rows, code, typeName, data, localBase);
  }
  return [...new Set(rows.reference.map((r) => indexKey(r.ref)))];
}

/**
 * Longest indexed value, in characters. Index keys must fit a B-tree entry (PostgreSQL refuses
 * entries over 2704 bytes; a token row holds a code and a system, each up to 4 bytes a
 * character), while FHIR strings may be a megabyte. A longer value is indexed as its first
 * PREFIX_CHARS characters plus a hash of the whole (HAPI caps its index columns the same way),
 * so equality stays exact, prefix searches up to PREFIX_CHARS characters stay exact, and a
 * longer prefix or a `:contains` can only match within the first PREFIX_CHARS characters.
 */
export const PREFIX_CHARS = 240;

/** A value as its index key (see PREFIX_CHARS); search values compared for equality go through it too. */
export function indexKey(value: string): string {
  if (value.length <= PREFIX_CHARS + 18) return value;
  return `${value.slice(0, PREFIX_CHARS)}|#${createHash('sha256').update(value).digest('hex').slice(0, 16)}`;
}

/** A prefix search value as it can be compared with index keys. */
export function prefixKey(value: string): string {
  return value.length > PREFIX_CHARS ? value.slice(0, PREFIX_CHARS) : value;
}

/** The same value indexed twice for one resource (a name part that is also its text, a patient named twice) is one row. */
function dedupe(raw: IndexRows): IndexRows {
  const rows: IndexRows = {
    string: raw.string.map((r) => ({ param: r.param, norm: indexKey(r.norm), exact: indexKey(r.exact) })),
    token: raw.token.map((r) => ({ param: r.param, system: indexKey(r.system), code: indexKey(r.code) })),
    date: raw.date,
    reference: raw.reference.map((r) => ({ param: r.param, ref: indexKey(r.ref) })),
    uri: raw.uri.map((r) => ({ param: r.param, uri: indexKey(r.uri) })),
  };
  const unique = <T>(list: T[], key: (r: T) => string): T[] => {
    if (list.length < 2) return list;
    const seen = new Set<string>();
    return list.filter((r) => {
      const k = key(r);
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
  };
  return {
    string: unique(rows.string, (r) => `${r.param}\u0001${r.norm}\u0001${r.exact}`),
    token: unique(rows.token, (r) => `${r.param}\u0001${r.code}\u0001${r.system}`),
    date: unique(rows.date, (r) => `${r.param}\u0001${r.lo}\u0001${r.hi}`),
    reference: unique(rows.reference, (r) => `${r.param}\u0001${r.ref}`),
    uri: unique(rows.uri, (r) => `${r.param}\u0001${r.uri}`),
  };
}

function unwrap(node: unknown): [string, unknown] {
  if (node && typeof node === 'object' && typeof (node as TypedNode).getTypeInfo === 'function') {
    return [(node as TypedNode).getTypeInfo().name, (node as TypedNode).data];
  }
  return [typeof node, node];
}

function addStrings(rows: IndexRows, param: string, typeName: string, data: unknown, words: boolean): void {
  const push = (value: unknown) => {
    if (typeof value !== 'string' || value === '') return;
    if (param === 'phonetic') {
      for (const word of value.split(/[\s,]+/)) {
        const code = soundex(word);
        if (code) rows.string.push({ param, norm: code.toLowerCase(), exact: word });
      }
      return;
    }
    rows.string.push({ param, norm: normalizeString(value), exact: value });
    // Matched by word (matchesWords): under an index parameter of its own, so that `:exact`,
    // `:contains`, `:missing` and `_sort` still read the whole values.
    if (words) for (const part of wordParts(value)) rows.string.push({ param: wordPartParam(param), norm: part, exact: '' });
  };
  if (typeName === 'HumanName' && data && typeof data === 'object') {
    const n = data as { family?: string; given?: string[]; prefix?: string[]; suffix?: string[]; text?: string };
    [n.family, ...(n.given ?? []), ...(n.prefix ?? []), ...(n.suffix ?? []), n.text].forEach(push);
  } else if (typeName === 'Address' && data && typeof data === 'object') {
    const a = data as Record<string, unknown>;
    [...((a.line as string[]) ?? []), a.city, a.district, a.state, a.postalCode, a.country, a.text].forEach(push);
  } else {
    push(data);
  }
}

function addTokens(rows: IndexRows, param: string, typeName: string, data: unknown, boundSystem: string | null, fold: boolean): void {
  const push = (system: string | null | undefined, code: string | null | undefined, text: string | null | undefined) => {
    if (code || system) rows.token.push({ param, system: system ?? '', code: (fold ? code?.toLowerCase() : code) ?? '' });
    if (text) rows.token.push({ param: `${param}:text`, system: '', code: normalizeString(text) });
  };
  switch (typeName) {
    case 'Coding': {
      const c = data as { system?: string; code?: string; display?: string };
      push(c.system, c.code, c.display);
      return;
    }
    case 'CodeableConcept': {
      const cc = data as { coding?: { system?: string; code?: string; display?: string }[]; text?: string };
      for (const c of cc.coding ?? []) push(c.system, c.code, c.display);
      if (cc.text) push(null, null, cc.text);
      return;
    }
    case 'Identifier': {
      const id = data as { system?: string; value?: string; type?: { text?: string; coding?: { system?: string; code?: string }[] } };
      push(id.system, id.value, id.type?.text);
      // :of-type searches match type system|code|value together (http://hl7.org/fhir/R4/search.html#token).
      for (const c of id.type?.coding ?? []) {
        if (c.code && id.value) rows.token.push({ param: `${param}:of-type`, system: c.system ?? '', code: `${c.code}|${id.value}` });
      }
      return;
    }
    case 'ContactPoint': {
      const cp = data as { system?: string; value?: string };
      push(cp.system, cp.value, null);
      return;
    }
    case 'boolean':
      push(null, String(data), null);
      return;
    default:
      if (typeof data === 'string') push(boundSystem, data, null);
      else if (typeof data === 'boolean') push(null, String(data), null);
  }
}

function addDate(rows: IndexRows, param: string, typeName: string, data: unknown): void {
  if (typeName === 'Period' && data && typeof data === 'object') {
    const p = data as { start?: string; end?: string };
    const lo = p.start ? parseDateRange(p.start)?.lo : MIN_DATE;
    const hi = p.end ? parseDateRange(p.end)?.hi : MAX_DATE;
    if (lo !== undefined && hi !== undefined) rows.date.push({ param, lo, hi });
    return;
  }
  if (typeof data === 'string') {
    const range = parseDateRange(data);
    if (range) rows.date.push({ param, lo: range.lo, hi: range.hi });
  }
}

function addReference(rows: IndexRows, param: string, typeName: string, data: unknown, localBase?: string): void {
  if (typeName !== 'Reference') {
    // canonical / uri targets
    if (typeof data === 'string') rows.reference.push({ param, ref: `url:${data}` });
    return;
  }
  const ref = data as { reference?: string; identifier?: { system?: string; value?: string } };
  let reference = ref.reference;
  if (reference && localBase && reference.startsWith(localBase + '/')) reference = reference.slice(localBase.length + 1);
  if (reference && !reference.startsWith('#')) {
    // contained resources (#id) are not indexed as references
    const local = parseRelativeReference(reference);
    rows.reference.push({ param, ref: local ? `${local.type}/${local.id}` : `url:${reference}` });
  }
  if (ref.identifier?.value) rows.reference.push({ param, ref: identifierRef(ref.identifier.value, ref.identifier.system) });
}
