import type { ResourceType } from '../../resources';
import { MAX_DATE, MIN_DATE } from '../fhir/dates';
import type { SortKey } from './parse';
import { searchParams } from './parameters';
import { paramId } from './param-id';

/**
 * `_sort` as SQL (http://hl7.org/fhir/R4/search.html#sort): one expression per key over
 * `resources r`, always followed by `r.rid` as the tie-break, so the order is total and a page
 * boundary is a keyset position that concurrent inserts cannot shift.
 *
 * The spec leaves repeated and complex elements to the server: a key's value is the smallest
 * indexed value for an ascending sort and the largest for a descending one (for dates, the
 * earliest start and the latest end). Resources without a value sort last either way.
 */
export interface OrderSql {
  readonly keys: readonly OrderKey[];
}

export interface OrderKey {
  readonly expr: string;
  readonly params: readonly unknown[];
  readonly desc: boolean;
  /** Numeric keys are compared as numbers (dates as epoch ms). */
  readonly numeric: boolean;
  /** The search parameter whose index rows the key reads; unset for a column (`_id`, `_lastUpdated`). */
  readonly param?: string;
}

/** A position in an ordered result: the sort-key values and rid of one row. */
export interface Keyset {
  readonly rid: number;
  readonly keys: readonly (string | number)[];
}

const TEXT_HIGH = '\uffff\uffff';
const TEXT_LOW = '';

const COLUMN: Record<string, [table: string, asc: string, desc: string]> = {
  string: ['idx_string', 'norm', 'norm'],
  token: ['idx_token', 'code', 'code'],
  date: ['idx_date', 'lo', 'hi'],
  reference: ['idx_reference', 'ref', 'ref'],
  uri: ['idx_uri', 'uri', 'uri'],
};

/** The ORDER BY keys for a sort over resources of `types` (each key's parameter exists on every type). */
export function compileOrder(sort: readonly SortKey[], types: readonly ResourceType[]): OrderSql {
  return {
    keys: sort.map(({ def, desc }): OrderKey => {
      if (def.storage === 'id-column') return { expr: 'r.id', params: [], desc, numeric: false };
      if (def.storage === 'last-updated-column') return { expr: 'r.last_updated', params: [], desc, numeric: true };
      const [table, ascCol, descCol] = COLUMN[def.type];
      const numeric = def.type === 'date';
      const fallback = numeric ? (desc ? MIN_DATE - 1 : MAX_DATE + 1) : desc ? TEXT_LOW : TEXT_HIGH;
      const sub = (pid: number): [string, unknown[]] => [
        `(SELECT ${desc ? 'MAX' : 'MIN'}(s.${desc ? descCol : ascCol}) FROM ${table} s WHERE s.rid = r.rid AND s.pid = ?)`,
        [pid],
      ];
      if (types.length === 1) {
        const [expr, params] = sub(paramId(types[0], def.code));
        return { expr: `COALESCE(${expr}, ?)`, params: [...params, fallback], desc, numeric, param: def.code };
      }
      const cases = types.map((t) => {
        const d = searchParams(t).get(def.code);
        if (!d) throw new Error(`sort key ${def.code} is not a parameter of ${t}`);
        return sub(paramId(t, d.code));
      });
      return {
        expr: `COALESCE(CASE r.type ${types.map((t, i) => `WHEN '${t}' THEN ${cases[i][0]}`).join(' ')} END, ?)`,
        params: [...cases.flatMap(([, p]) => p), fallback],
        desc,
        numeric,
        param: def.code,
      };
    }),
  };
}

/**
 * The order as run over a filter driven by a reference-date pair's index (search/filter.ts
 * DrivenFilter): a key on the pair's date parameter is the joined row's date (`x.hi` descending,
 * `x.lo` ascending), which is what the key's subquery would find, the date having one value per
 * resource and the join a row only where it has one. The keys' values, and so the positions of
 * cursors made either way, are the same.
 */
export function drivenOrder(order: OrderSql | undefined, date: string): OrderSql | undefined {
  if (!order) return order;
  return { keys: order.keys.map((k) => (k.param === date ? { ...k, expr: k.desc ? 'x.hi' : 'x.lo', params: [] } : k)) };
}

/**
 * The condition "comes after `at`" (or before, walking backwards) in the order: a lexicographic
 * comparison of (keys..., rid), each key in its own direction, rid ascending.
 */
export function keysetCondition(order: OrderSql, at: Keyset, backwards: boolean): [string, unknown[]] {
  const alternatives: string[] = [];
  const params: unknown[] = [];
  const equalSoFar: [string, unknown[]][] = [];
  order.keys.forEach((k, i) => {
    const forward = k.desc ? '<' : '>';
    const op = backwards ? (forward === '>' ? '<' : '>') : forward;
    alternatives.push([...equalSoFar.map(([s]) => s), `${k.expr} ${op} ?`].join(' AND '));
    for (const [, p] of equalSoFar) params.push(...p);
    params.push(...k.params, at.keys[i]);
    equalSoFar.push([`${k.expr} = ?`, [...k.params, at.keys[i]]]);
  });
  alternatives.push([...equalSoFar.map(([s]) => s), `r.rid ${backwards ? '<' : '>'} ?`].join(' AND '));
  for (const [, p] of equalSoFar) params.push(...p);
  params.push(at.rid);
  return [alternatives.map((a) => `(${a})`).join(' OR '), params];
}

/**
 * The sort keys as output columns `s0, s1, …` (to read each row's keyset position back) and the
 * ORDER BY over them (reversed when walking backwards).
 */
export function orderColumns(order: OrderSql | undefined, backwards: boolean): { select: string; selectParams: unknown[]; orderBy: string; columns: string[]; outputOrderBy: string } {
  const keys = order?.keys ?? [];
  const sorted = (rid: string) => [...keys.map((k, i) => `s${i} ${k.desc !== backwards ? 'DESC' : 'ASC'}`), `${rid} ${backwards ? 'DESC' : 'ASC'}`].join(', ');
  return {
    select: keys.map((k, i) => `, ${k.expr} AS s${i}`).join(''),
    selectParams: keys.flatMap((k) => k.params),
    orderBy: sorted('r.rid'),
    /** The key columns' names, and the order over the output columns (a query reading the page's rows). */
    columns: keys.map((_, i) => `s${i}`),
    outputOrderBy: sorted('rid'),
  };
}
