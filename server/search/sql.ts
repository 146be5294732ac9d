import type { ResourceFilter } from '../search/filter';
import { normalizeString } from './extract';
import type { Criterion, DateValue, ReferenceValue, TokenValue } from './parse';

/**
 * Compiles parsed search criteria into one SQL condition over `resources r`: each criterion is
 * `r.rid IN (SELECT rid FROM idx_… WHERE …)` against the search-index tables (never the JSON),
 * AND between parameters, OR between comma-separated values. The same SQL runs on SQLite and
 * PostgreSQL.
 */
export function compileFilter(criteria: readonly Criterion[], now: number): ResourceFilter {
  const parts: string[] = [];
  const params: unknown[] = [];
  for (const c of criteria) {
    const [sql, p] = compileOne(c, now);
    parts.push(sql);
    params.push(...p);
  }
  return { where: parts.length ? parts.join(' AND ') : '1 = 1', params };
}

type Sql = [string, unknown[]];

const TABLE: Record<string, string> = { string: 'idx_string', token: 'idx_token', date: 'idx_date', reference: 'idx_reference', uri: 'idx_uri' };

function inIndex(table: string, c: Criterion, condition: string, params: unknown[], negate = false, param = c.def.code): Sql {
  return [
    `r.rid ${negate ? 'NOT IN' : 'IN'} (SELECT rid FROM ${table} WHERE type = ? AND param = ?${condition ? ` AND (${condition})` : ''})`,
    [c.def.resourceType, param, ...params],
  ];
}

function any<T>(values: readonly T[], one: (v: T) => Sql): Sql {
  const parts = values.map(one);
  return [parts.map(([s]) => `(${s})`).join(' OR '), parts.flatMap(([, p]) => p)];
}

/** Upper bound for a prefix range: every string starting with `prefix` sorts below it. */
function prefixEnd(prefix: string): string {
  return prefix + '\uffff';
}

function escapeLike(value: string): string {
  return value.replace(/[\\%_]/g, (m) => '\\' + m);
}

function compileOne(c: Criterion, now: number): Sql {
  switch (c.kind) {
    case 'missing':
      if (c.def.storage !== 'index') return [c.missing ? '1 = 0' : '1 = 1', []];
      return inIndex(TABLE[c.def.type], c, '', [], c.missing);
    case 'token': {
      if (c.def.storage === 'id-column') {
        const ids = c.values.map((v) => v.code ?? '');
        return [`r.id ${c.not ? 'NOT IN' : 'IN'} (${ids.map(() => '?').join(', ')})`, ids];
      }
      const [cond, p] = any(c.values, tokenCondition);
      return inIndex('idx_token', c, cond, p, c.not, c.param);
    }
    case 'token-text': {
      const [cond, p] = any(c.values, (v) => {
        const n = escapeLike(normalizeString(v));
        return ["text LIKE ? ESCAPE '\\' OR text LIKE ? ESCAPE '\\'", [`${n}%`, `% ${n}%`]];
      });
      return inIndex('idx_token', c, cond, p);
    }
    case 'string': {
      const [cond, p] = any(c.values, (v): Sql => {
        if (c.mode === 'exact') return ['exact = ?', [v]];
        const n = c.def.code === 'phonetic' ? v : normalizeString(v);
        if (c.mode === 'contains') return ["norm LIKE ? ESCAPE '\\'", [`%${escapeLike(n)}%`]];
        return ['norm >= ? AND norm < ?', [n, prefixEnd(n)]];
      });
      return inIndex('idx_string', c, cond, p);
    }
    case 'date': {
      if (c.def.storage === 'last-updated-column') {
        const [cond, p] = any(c.values, (v) => dateCondition(v, 'r.last_updated', 'r.last_updated', now));
        return [cond, p];
      }
      const [cond, p] = any(c.values, (v) => dateCondition(v, 'lo', 'hi', now));
      return inIndex('idx_date', c, cond, p);
    }
    case 'reference': {
      const [cond, p] = any(c.values, referenceCondition);
      return inIndex('idx_reference', c, cond, p);
    }
    case 'uri': {
      const [cond, p] = any(c.values, (v): Sql => {
        if (c.mode === 'below') return ["uri LIKE ? ESCAPE '\\'", [`${escapeLike(v)}%`]];
        if (c.mode === 'above') return ['substr(?, 1, length(uri)) = uri', [v]];
        return ['uri = ?', [v]];
      });
      return inIndex('idx_uri', c, cond, p);
    }
  }
}

function tokenCondition(v: TokenValue): Sql {
  const parts: string[] = [];
  const params: unknown[] = [];
  if (v.code !== undefined) {
    parts.push('code = ?');
    params.push(v.code);
  }
  if (v.system === null) parts.push('system IS NULL');
  else if (v.system !== undefined) {
    parts.push('system = ?');
    params.push(v.system);
  }
  return [parts.length ? parts.join(' AND ') : '1 = 1', params];
}

function referenceCondition(v: ReferenceValue): Sql {
  if ('identifier' in v) {
    const parts: string[] = [];
    const params: unknown[] = [];
    if (v.value !== undefined) {
      parts.push('ident_value = ?');
      params.push(v.value);
    }
    if (v.system === null) parts.push('ident_system IS NULL');
    else if (v.system !== undefined) {
      parts.push('ident_system = ?');
      params.push(v.system);
    }
    return [parts.join(' AND ') || '1 = 0', params];
  }
  if (v.local) {
    return v.type ? ['target_id = ? AND target_type = ?', [v.id, v.type]] : ['target_id = ?', [v.id]];
  }
  return ['url = ?', [v.url]];
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
      const margin = Math.max(Math.abs(now - slo) * 0.1, 86400000);
      return [`(${lo} <= ? AND ${hi} >= ?)`, [shi + margin, slo - margin]];
    }
  }
}
