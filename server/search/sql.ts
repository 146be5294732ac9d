import { foldsCase, identifierRef, indexKey, matchesWords, normalizeString, prefixKey, soundex, wordForm, wordPartParam } from './extract';
import { definitions, isResourceType, pairCode } from '../../resources';
import type { DrivenFilter, LinkCheck, ResourceFilter } from './filter';
import type { SearchParamDef } from './parameters';
import { paramId } from './param-id';
import type { Criterion, DateValue, ReferenceValue, TokenValue } from './parse';

/**
 * Compiles parsed search criteria into one SQL condition over `resources r` against the
 * search-index tables (never the JSON): AND between parameters, OR between comma-separated
 * values. The same SQL runs on SQLite and PostgreSQL.
 *
 * Shape matters for speed. The most selective criterion *drives*: `r.rid IN (SELECT rid FROM
 * idx_… WHERE pid = ? AND …)`, an index range scan whose result is small. Every other
 * criterion is a correlated `EXISTS (… WHERE x.rid = r.rid …)`, checked per candidate through
 * the tables' rid index. (Two `IN` lists would make SQLite build both in full: `date=ge2026`
 * over a million AuditEvents, only to intersect it with a patient's ten.) `drive: false` is for
 * a restriction added to another filter (a granular scope's): it only checks rows.
 */
export function compileFilter(criteria: readonly Criterion[], now: number, options: { alias?: string; drive?: boolean } = {}): ResourceFilter {
  const alias = options.alias ?? 'r';
  const parts: string[] = [];
  const params: unknown[] = [];
  const links: LinkCheck[] = [];
  const ordered = [...criteria].sort((x, y) => rank(x) - rank(y));
  // A restriction added to other criteria (a granular scope's) checks rows; it never drives.
  let driven = options.drive === false;
  for (const c of ordered) {
    const drives = !driven && rank(c) < NEGATED;
    if (drives) driven = true;
    const [sql, p] = compileOne(c, { now, row: alias, drives });
    parts.push(sql);
    params.push(...p);
    if (c.kind === 'chain') {
      // The link checks run over a handful of known rows (gate/links.ts): their criteria only check.
      links.push({ kind: 'chain', param: c.def, targets: c.targets.map((t) => ({ type: t.type, filter: compileFilter([t.inner], now, { drive: false }) })) });
    } else if (c.kind === 'has') {
      links.push({ kind: 'has', source: c.source, via: c.via, filter: compileFilter([c.inner], now, { drive: false }) });
    }
  }
  const auditPatients = auditPatientsOf(criteria);
  const drivenBy = alias === 'r' && options.drive !== false ? referenceDateDriven(criteria, now) : undefined;
  return {
    where: parts.length ? parts.join(' AND ') : '1 = 1',
    params,
    indexParams: [...new Set(criteria.flatMap(indexParamsOf))],
    ...(links.length ? { links } : {}),
    ...(auditPatients ? { auditPatients } : {}),
    ...(criteria.some(readsAuditIndex) ? { readsAuditIndex: true } : {}),
    ...(drivenBy ? { driven: drivenBy } : {}),
  };
}

/**
 * The filter driven by a reference-date pair's index (`idx_ref_date x`, see
 * ResourceDefinition.referenceDatePairs), when the criteria hold one reference value under the
 * pair's reference parameter and at least one criterion on its date parameter: the rows of that
 * reference whose date matches are one range of the index, and every other criterion is checked
 * per row. A resource has one pair row per reference value (its date having one value), so the
 * join yields each match once. Anything else (several values, which one resource could match
 * twice; a reference given by identifier or by an absolute URL elsewhere) is left to `where`.
 */
function referenceDateDriven(criteria: readonly Criterion[], now: number): DrivenFilter | undefined {
  const type = criteria.find((c) => c.kind !== 'has')?.def?.resourceType;
  if (!type || !isResourceType(type)) return undefined;
  for (const pair of definitions[type].referenceDatePairs ?? []) {
    const refs = criteria.filter((c): c is Extract<Criterion, { kind: 'reference' }> => c.kind === 'reference' && c.def.code === pair.reference);
    const dates = criteria.filter((c): c is Extract<Criterion, { kind: 'date' }> => c.kind === 'date' && c.def.code === pair.date && c.def.storage === 'index');
    if (refs.length !== 1 || dates.length === 0 || refs[0].values.length !== 1) continue;
    const v = refs[0].values[0];
    if (!('local' in v) || !v.local) continue;
    const targets = refs[0].def.targets;
    const ref = v.type ? `${v.type}/${v.id}` : targets.length === 1 ? `${targets[0]}/${v.id}` : undefined;
    if (!ref) continue;
    const join: Sql[] = [['x.pid = ? AND x.ref = ?', [paramId(type, pairCode(pair)), ref]], ...dates.map((c) => any(c.values, (d) => dateCondition(d, 'x.lo', 'x.hi', now)))];
    const rest = criteria.filter((c) => c !== refs[0] && !(dates as readonly Criterion[]).includes(c)).map((c) => compileOne(c, { now, row: 'r', drives: false }));
    return {
      join: join.map(([sql]) => `(${sql})`).join(' AND '),
      joinParams: join.flatMap(([, p]) => p),
      where: rest.length ? rest.map(([sql]) => `(${sql})`).join(' AND ') : '1 = 1',
      params: rest.flatMap(([, p]) => p),
      date: pair.date,
    };
  }
  return undefined;
}

/** The candidate's parameters whose index rows a criterion reads (a chain's target rows are another resource's; `_has` reads the source's). */
function indexParamsOf(c: Criterion): string[] {
  if (c.kind === 'has') return [];
  return c.def.storage === 'index' ? [c.def.code] : [];
}

/** Whether a criterion reads the index rows of AuditEvents other than the candidates (`_has:AuditEvent:…`, a chain into AuditEvent). */
function readsAuditIndex(c: Criterion): boolean {
  return (c.kind === 'has' && c.source === 'AuditEvent') || (c.kind === 'chain' && c.targets.some((t) => t.type === 'AuditEvent'));
}

/**
 * The patients (index keys) an AuditEvent search is confined to by a plain `patient=` criterion
 * (ids or local `Type/id` references, as referenceCondition matches them); undefined otherwise.
 */
function auditPatientsOf(criteria: readonly Criterion[]): string[] | undefined {
  for (const c of criteria) {
    if (c.kind !== 'reference' || c.def.resourceType !== 'AuditEvent' || c.def.code !== 'patient') continue;
    const keys: string[] = [];
    for (const v of c.values) {
      if ('identifier' in v || !v.local) return undefined;
      if (v.type) keys.push(`${v.type}/${v.id}`);
      else if (c.def.targets.length) keys.push(...c.def.targets.map((t) => `${t}/${v.id}`));
      else return undefined;
    }
    return keys.map(indexKey);
  }
  return undefined;
}

export type Sql = [string, unknown[]];

/** How selective a criterion usually is (lower drives the query); negations never drive. */
const NEGATED = 9;
function rank(c: Criterion): number {
  switch (c.kind) {
    case 'token':
      if (c.not) return NEGATED;
      if (c.def.storage === 'id-column') return 0;
      return c.values.every((v) => v.code !== undefined) ? 2 : 5;
    case 'reference':
      return 1;
    case 'string':
      return c.mode === 'contains' ? 5 : c.mode === 'exact' ? 2 : 3;
    case 'token-text':
    case 'chain':
    case 'has':
      return 4;
    case 'uri':
      return c.mode === 'exact' ? 2 : 5;
    case 'date':
      return c.def.storage === 'last-updated-column' ? 7 : 6;
    case 'missing':
      return NEGATED;
  }
}

interface Ctx {
  readonly now: number;
  /** The alias of the resources row being tested (`r`, or `t`/`s` inside a chain). */
  readonly row: string;
  /** Whether this criterion drives the query (an IN list) or is checked per row (EXISTS). */
  readonly drives: boolean;
}

const TABLE: Record<string, string> = { string: 'idx_string', token: 'idx_token', date: 'idx_date', reference: 'idx_reference', uri: 'idx_uri' };

/** `condition` may name the index table's columns unqualified. */
function inIndex(ctx: Ctx, table: string, c: { def: SearchParamDef }, condition: string, params: unknown[], negate = false, param = c.def.code, alsoParam?: string): Sql {
  // With alsoParam, the rows of two index parameters (a word-matched string's own and its `:part`
  // rows): one range of the primary key each.
  const pids = [paramId(c.def.resourceType, param), ...(alsoParam ? [paramId(c.def.resourceType, alsoParam)] : [])];
  const pid = pids.length === 1 ? 'pid = ?' : 'pid IN (?, ?)';
  const where = condition ? ` AND (${condition})` : '';
  if (ctx.drives && !negate) return [`${ctx.row}.rid IN (SELECT rid FROM ${table} WHERE ${pid}${where})`, [...pids, ...params]];
  return [`${negate ? 'NOT ' : ''}EXISTS (SELECT 1 FROM ${table} WHERE rid = ${ctx.row}.rid AND ${pid}${where})`, [...pids, ...params]];
}

function any<T>(values: readonly T[], one: (v: T) => Sql): Sql {
  const parts = values.map(one);
  return [parts.length === 1 ? parts[0][0] : parts.map(([s]) => `(${s})`).join(' OR '), parts.flatMap(([, p]) => p)];
}

/** Upper bound for a prefix range: every string starting with `prefix` sorts below it (byte order). */
export function prefixEnd(prefix: string): string {
  return prefix + '\uffff';
}

function escapeLike(value: string): string {
  return value.replace(/[\\%_]/g, (m) => '\\' + m);
}

/**
 * `LIKE` against a bound pattern. SQLite plans a `LIKE ?` with the value bound to it (its LIKE
 * optimisation) and so marks the statement expired whenever that variable is bound again: every
 * run compiled it anew (seen with perf: sqlite3RunParser at every execution of a cached
 * statement). A pattern that is an expression rather than a bare variable is not looked at, and
 * the statement stays compiled. None of these patterns could use an index anyway (a leading `%`,
 * or a range already bounds the scan). PostgreSQL reads the same text.
 */
const LIKE_BOUND = "LIKE CAST(? AS TEXT) ESCAPE '\\'";

function compileOne(c: Criterion, ctx: Ctx): Sql {
  const r = ctx.row;
  switch (c.kind) {
    case 'missing': {
      if (c.def.storage !== 'index') return [c.missing ? '1 = 0' : '1 = 1', []];
      const [sql, p] = inIndex(ctx, TABLE[c.def.type], c, '', [], c.missing);
      if (c.def.type !== 'token') return [sql, p];
      // A concept with only text is present too.
      const [text, tp] = inIndex(ctx, 'idx_token', c, '', [], c.missing, `${c.def.code}:text`);
      return [`(${sql}) ${c.missing ? 'AND' : 'OR'} (${text})`, [...p, ...tp]];
    }
    case 'token': {
      if (c.def.storage === 'id-column') {
        const ids = c.values.map((v) => v.code ?? '');
        return [`${r}.id ${c.not ? 'NOT IN' : 'IN'} (${ids.map(() => '?').join(', ')})`, ids];
      }
      const fold = foldsCase(c.def);
      const [cond, p] = any(c.values, (v) => tokenCondition(fold && v.code !== undefined ? { ...v, code: v.code.toLowerCase() } : v));
      return inIndex(ctx, 'idx_token', c, cond, p, c.not, c.param);
    }
    case 'token-text': {
      // Word-prefix match on the normalised display/text (http://hl7.org/fhir/R4/search.html#text).
      const [cond, p] = any(c.values, (v): Sql => {
        const n = normalizeString(v);
        return [`(code >= ? AND code < ?) OR code ${LIKE_BOUND}`, [prefixKey(n), prefixEnd(prefixKey(n)), `% ${escapeLike(n)}%`]];
      });
      return inIndex(ctx, 'idx_token', c, cond, p, false, `${c.def.code}:text`);
    }
    case 'string': {
      if (c.mode === 'starts' && matchesWords(c.def)) {
        // At the start of any word (matchesWords), in the form the words were indexed in: the
        // parameter's own rows hold each value's first word on when that is its word form, its
        // `:part` rows the rest (wordParts). A value with nothing but punctuation and spaces
        // names no word: it matches as it is, at the start of the value (`family=-` finds a
        // name written `-`; `:part` rows never start with punctuation).
        const [cond, p] = any(c.values, (v): Sql => {
          const w = wordForm(v).trimStart();
          const n = w.trim() ? w : normalizeString(v);
          return ['norm >= ? AND norm < ?', [prefixKey(n), prefixEnd(prefixKey(n))]];
        });
        return inIndex(ctx, 'idx_string', c, cond, p, false, c.def.code, wordPartParam(c.def.code));
      }
      const [cond, p] = any(c.values, (v): Sql => {
        // phonetic: the Soundex code of the word, as indexed (http://hl7.org/fhir/R4/patient.html#search)
        if (c.def.code === 'phonetic') return ['norm = ?', [soundex(v).toLowerCase()]];
        const n = normalizeString(v);
        if (c.mode === 'exact') return ['norm = ? AND exact = ?', [indexKey(n), indexKey(v)]];
        if (c.mode === 'contains') return [`norm ${LIKE_BOUND}`, [`%${escapeLike(prefixKey(n))}%`]];
        return ['norm >= ? AND norm < ?', [prefixKey(n), prefixEnd(prefixKey(n))]];
      });
      return inIndex(ctx, 'idx_string', c, cond, p);
    }
    case 'date': {
      if (c.def.storage === 'last-updated-column') return any(c.values, (v) => dateCondition(v, `${r}.last_updated`, `${r}.last_updated`, ctx.now));
      const [cond, p] = any(c.values, (v) => dateCondition(v, 'lo', 'hi', ctx.now));
      return inIndex(ctx, 'idx_date', c, cond, p);
    }
    case 'reference': {
      const [cond, p] = any(c.values, (v) => referenceCondition(v, c.def.targets));
      return inIndex(ctx, 'idx_reference', c, cond, p);
    }
    case 'chain': {
      // Candidates: a reference under the parameter to a target matching the inner criterion.
      const [cond, p] = any(c.targets, (t): Sql => {
        const [inner, ip] = compileOne(t.inner, { now: ctx.now, row: 't', drives: true });
        return [`ref IN (SELECT ? || t.id FROM resources t WHERE t.type = ? AND t.deleted = 0 AND (${inner}))`, [`${t.type}/`, t.type, ...ip]];
      });
      return inIndex(ctx, 'idx_reference', c, cond, p);
    }
    case 'has': {
      // Candidates: pointed at through `via` by a source matching the inner criterion.
      const [inner, ip] = compileOne(c.inner, { now: ctx.now, row: 's', drives: true });
      return [
        `(? || ${r}.id) IN (SELECT x.ref FROM idx_reference x WHERE x.pid = ? AND x.rid IN (SELECT s.rid FROM resources s WHERE s.type = ? AND s.deleted = 0 AND (${inner})))`,
        [`${c.target}/`, paramId(c.source, c.via.code), c.source, ...ip],
      ];
    }
    case 'uri': {
      const [cond, p] = any(c.values, (v): Sql => {
        if (c.mode === 'below') return ['uri >= ? AND uri < ?', [prefixKey(v), prefixEnd(prefixKey(v))]];
        if (c.mode === 'above') return ['substr(?, 1, length(uri)) = uri', [v]];
        return ['uri = ?', [indexKey(v)]];
      });
      return inIndex(ctx, 'idx_uri', c, cond, p);
    }
  }
}

function tokenCondition(v: TokenValue): Sql {
  if (v.code !== undefined) {
    if (v.system === undefined) return ['code = ?', [indexKey(v.code)]];
    return ['code = ? AND system = ?', [indexKey(v.code), indexKey(v.system ?? '')]];
  }
  if (v.system === undefined) return ['1 = 1', []];
  return ['system = ?', [indexKey(v.system ?? '')]];
}

/** Reference keys (see IndexRows): `Type/id`, `url:<absolute>`, `id:<value>|<system>`. */
function referenceCondition(v: ReferenceValue, targets: readonly string[]): Sql {
  if ('identifier' in v) {
    if (v.value === undefined) {
      if (v.system === undefined) return ['1 = 0', []];
      return [`ref >= 'id:' AND ref < 'id;' AND ref ${LIKE_BOUND}`, [`id:%|${escapeLike(v.system ?? '')}`]];
    }
    if (v.system === undefined) {
      const prefix = prefixKey(identifierRef(v.value, ''));
      return ['ref >= ? AND ref < ?', [prefix, prefixEnd(prefix)]];
    }
    return ['ref = ?', [indexKey(identifierRef(v.value, v.system))]];
  }
  if (v.local) {
    if (v.type) return ['ref = ?', [`${v.type}/${v.id}`]];
    if (targets.length) return [`ref IN (${targets.map(() => '?').join(', ')})`, targets.map((t) => `${t}/${v.id}`)];
    return [`ref ${LIKE_BOUND}`, [`%/${escapeLike(v.id)}`]];
  }
  return ['ref = ?', [indexKey(`url:${v.url}`)]];
}

/**
 * Date prefixes per http://hl7.org/fhir/R4/search.html#prefix, comparing the search value's
 * implicit range [slo, shi] with the indexed range [lo, hi].
 */
function dateCondition(v: DateValue, lo: string, hi: string, now: number): Sql {
  const { lo: slo, hi: shi } = v.range;
  const contained = `(${lo} >= ? AND ${hi} <= ?)`;
  switch (v.prefix) {
    case 'eq':
      return [contained, [slo, shi]];
    case 'ne':
      return [`NOT ${contained}`, [slo, shi]];
    case 'gt':
      return [`${hi} > ?`, [shi]];
    case 'lt':
      return [`${lo} < ?`, [slo]];
    case 'ge':
      return [`(${hi} > ? OR ${contained})`, [shi, slo, shi]];
    case 'le':
      return [`(${lo} < ? OR ${contained})`, [slo, slo, shi]];
    case 'sa':
      return [`${lo} > ?`, [shi]];
    case 'eb':
      return [`${hi} < ?`, [slo]];
    case 'ap': {
      // "approximately": within 10% of the distance between the value and now (at least a day).
      const margin = Math.round(Math.max(Math.abs(now - slo) * 0.1, 86400000));
      return [`(${lo} <= ? AND ${hi} >= ?)`, [shi + margin, slo - margin]];
    }
  }
}
