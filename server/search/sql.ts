import type { LinkCheck, ResourceFilter } from './filter';
import { identifierRef, normalizeString, soundex } from './extract';
import { paramId } from './param-id';
import type { SearchParamDef } from './parameters';
import type { Criterion, DateValue, ReferenceValue, TokenValue } from './parse';

/**
 * Compiles parsed search criteria into one SQL condition over `resources r`: each criterion is
 * `r.rid IN (SELECT rid FROM idx_… WHERE pid = ? AND …)` against the search-index tables (never
 * the JSON), AND between parameters, OR between comma-separated values. Every lookup starts
 * with the parameter's key and a value prefix of the table's primary key, so it is an index
 * range scan. The same SQL runs on SQLite and PostgreSQL.
 */
export function compileFilter(criteria: readonly Criterion[], now: number, alias = 'r'): ResourceFilter {
  const parts: string[] = [];
  const params: unknown[] = [];
  const links: LinkCheck[] = [];
  for (const c of criteria) {
    const [sql, p] = compileOne(c, now, alias);
    parts.push(sql);
    params.push(...p);
    if (c.kind === 'chain') {
      links.push({ kind: 'chain', param: c.def, targets: c.targets.map((t) => ({ type: t.type, filter: compileFilter([t.inner], now) })) });
    } else if (c.kind === 'has') {
      links.push({ kind: 'has', source: c.source, via: c.via, filter: compileFilter([c.inner], now) });
    }
  }
  return { where: parts.length ? parts.join(' AND ') : '1 = 1', params, ...(links.length ? { links } : {}) };
}

export type Sql = [string, unknown[]];

const TABLE: Record<string, string> = { string: 'idx_string', token: 'idx_token', date: 'idx_date', reference: 'idx_reference', uri: 'idx_uri' };

/** The alias of the resources row the criterion being compiled tests (`r`, or `t`/`s` inside a chain). */
let a = 'r';

function inIndex(table: string, c: { def: SearchParamDef }, condition: string, params: unknown[], negate = false, param = c.def.code): Sql {
  return [
    `${a}.rid ${negate ? 'NOT IN' : 'IN'} (SELECT rid FROM ${table} WHERE pid = ?${condition ? ` AND (${condition})` : ''})`,
    [paramId(c.def.resourceType, param), ...params],
  ];
}

function any<T>(values: readonly T[], one: (v: T) => Sql): Sql {
  const parts = values.map(one);
  return [parts.map(([s]) => `(${s})`).join(' OR '), parts.flatMap(([, p]) => p)];
}

/** Upper bound for a prefix range: every string starting with `prefix` sorts below it (byte order). */
export function prefixEnd(prefix: string): string {
  return prefix + '\uffff';
}

function escapeLike(value: string): string {
  return value.replace(/[\\%_]/g, (m) => '\\' + m);
}

function compileOne(c: Criterion, now: number, alias: string): Sql {
  const saved = a;
  a = alias;
  try {
    return compileCriterion(c, now);
  } finally {
    a = saved;
  }
}

function compileCriterion(c: Criterion, now: number): Sql {
  switch (c.kind) {
    case 'missing': {
      if (c.def.storage !== 'index') return [c.missing ? '1 = 0' : '1 = 1', []];
      const [sql, p] = inIndex(TABLE[c.def.type], c, '', [], c.missing);
      if (c.def.type !== 'token') return [sql, p];
      // A concept with only text is present too.
      const [text, tp] = inIndex('idx_token', c, '', [], c.missing, `${c.def.code}:text`);
      return [`(${sql}) ${c.missing ? 'AND' : 'OR'} (${text})`, [...p, ...tp]];
    }
    case 'token': {
      if (c.def.storage === 'id-column') {
        const ids = c.values.map((v) => v.code ?? '');
        return [`${a}.id ${c.not ? 'NOT IN' : 'IN'} (${ids.map(() => '?').join(', ')})`, ids];
      }
      const [cond, p] = any(c.values, tokenCondition);
      return inIndex('idx_token', c, cond, p, c.not, c.param);
    }
    case 'token-text': {
      // Word-prefix match on the normalised display/text (http://hl7.org/fhir/R4/search.html#text).
      const [cond, p] = any(c.values, (v): Sql => {
        const n = normalizeString(v);
        return ["(code >= ? AND code < ?) OR code LIKE ? ESCAPE '\\'", [n, prefixEnd(n), `% ${escapeLike(n)}%`]];
      });
      return inIndex('idx_token', c, cond, p, false, `${c.def.code}:text`);
    }
    case 'string': {
      const [cond, p] = any(c.values, (v): Sql => {
        // phonetic: the Soundex code of the word, as indexed (http://hl7.org/fhir/R4/patient.html#search)
        if (c.def.code === 'phonetic') return ['norm = ?', [soundex(v).toLowerCase()]];
        const n = normalizeString(v);
        if (c.mode === 'exact') return ['norm = ? AND exact = ?', [n, v]];
        if (c.mode === 'contains') return ["norm LIKE ? ESCAPE '\\'", [`%${escapeLike(n)}%`]];
        return ['norm >= ? AND norm < ?', [n, prefixEnd(n)]];
      });
      return inIndex('idx_string', c, cond, p);
    }
    case 'date': {
      if (c.def.storage === 'last-updated-column') return any(c.values, (v) => dateCondition(v, `${a}.last_updated`, `${a}.last_updated`, now));
      const [cond, p] = any(c.values, (v) => dateCondition(v, 'lo', 'hi', now));
      return inIndex('idx_date', c, cond, p);
    }
    case 'reference': {
      const [cond, p] = any(c.values, (v) => referenceCondition(v, c.def.targets));
      return inIndex('idx_reference', c, cond, p);
    }
    case 'chain': {
      // Candidates: a reference under the parameter to a target matching the inner criterion.
      const outer = a;
      const [cond, p] = any(c.targets, (t): Sql => {
        const [inner, ip] = compileOne(t.inner, now, 't');
        return [`ref IN (SELECT ? || t.id FROM resources t WHERE t.type = ? AND t.deleted = 0 AND (${inner}))`, [`${t.type}/`, t.type, ...ip]];
      });
      a = outer;
      return inIndex('idx_reference', c, cond, p);
    }
    case 'has': {
      // Candidates: pointed at through `via` by a source matching the inner criterion.
      const outer = a;
      const [inner, ip] = compileOne(c.inner, now, 's');
      a = outer;
      return [
        `(? || ${a}.id) IN (SELECT x.ref FROM idx_reference x WHERE x.pid = ? AND x.rid IN (SELECT s.rid FROM resources s WHERE s.type = ? AND s.deleted = 0 AND (${inner})))`,
        [`${c.target}/`, paramId(c.source, c.via.code), c.source, ...ip],
      ];
    }
    case 'uri': {
      const [cond, p] = any(c.values, (v): Sql => {
        if (c.mode === 'below') return ['uri >= ? AND uri < ?', [v, prefixEnd(v)]];
        if (c.mode === 'above') return ['substr(?, 1, length(uri)) = uri', [v]];
        return ['uri = ?', [v]];
      });
      return inIndex('idx_uri', c, cond, p);
    }
  }
}

function tokenCondition(v: TokenValue): Sql {
  if (v.code !== undefined) {
    if (v.system === undefined) return ['code = ?', [v.code]];
    return ['code = ? AND system = ?', [v.code, v.system ?? '']];
  }
  if (v.system === undefined) return ['1 = 1', []];
  return ['system = ?', [v.system ?? '']];
}

/** Reference keys (see IndexRows): `Type/id`, `url:<absolute>`, `id:<value>|<system>`. */
function referenceCondition(v: ReferenceValue, targets: readonly string[]): Sql {
  if ('identifier' in v) {
    if (v.value === undefined) {
      if (v.system === undefined) return ['1 = 0', []];
      return ["ref >= 'id:' AND ref < 'id;' AND ref LIKE ? ESCAPE '\\'", [`id:%|${escapeLike(v.system ?? '')}`]];
    }
    if (v.system === undefined) {
      const prefix = identifierRef(v.value, '');
      return ['ref >= ? AND ref < ?', [prefix, prefixEnd(prefix)]];
    }
    return ['ref = ?', [identifierRef(v.value, v.system)]];
  }
  if (v.local) {
    if (v.type) return ['ref = ?', [`${v.type}/${v.id}`]];
    if (targets.length) return [`ref IN (${targets.map(() => '?').join(', ')})`, targets.map((t) => `${t}/${v.id}`)];
    return ["ref LIKE ? ESCAPE '\\'", [`%/${escapeLike(v.id)}`]];
  }
  return ['ref = ?', [`url:${v.url}`]];
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
