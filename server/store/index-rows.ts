import { definitions, pairCode, type ResourceType } from '../../resources';
import type { IndexRows } from '../search/extract';
import { paramId } from '../search/param-id';

/**
 * The search index's tables, and how a resource's IndexRows (search/extract.ts) become their rows:
 * one home for what the writers store (write.ts) and what $verify expects to find
 * (audit-chain.ts).
 */
const TABLES = [
  { table: 'idx_string', columns: ['norm', 'exact'], of: (r: IndexRows) => r.string.map((x) => ({ param: x.param, values: [x.norm, x.exact] })) },
  { table: 'idx_token', columns: ['code', 'system'], of: (r: IndexRows) => r.token.map((x) => ({ param: x.param, values: [x.code, x.system] })) },
  { table: 'idx_date', columns: ['lo', 'hi'], of: (r: IndexRows) => r.date.map((x) => ({ param: x.param, values: [x.lo, x.hi] })) },
  { table: 'idx_reference', columns: ['ref'], of: (r: IndexRows) => r.reference.map((x) => ({ param: x.param, values: [x.ref] })) },
  { table: 'idx_uri', columns: ['uri'], of: (r: IndexRows) => r.uri.map((x) => ({ param: x.param, values: [x.uri] })) },
  // Derived from the rows above, never extracted on their own: whatever writes a resource's
  // reference and date rows writes these with them, and $verify expects them.
  { table: 'idx_ref_date', columns: ['ref', 'hi', 'lo'], of: referenceDateRows },
] as const;

/** A resource's `idx_ref_date` rows: for each of its type's reference-date pairs, every reference row with every date row (one, see ResourceDefinition.referenceDatePairs). */
function referenceDateRows(r: IndexRows, type: ResourceType): { param: string; values: unknown[] }[] {
  const out: { param: string; values: unknown[] }[] = [];
  for (const pair of definitions[type].referenceDatePairs ?? []) {
    const dates = r.date.filter((d) => d.param === pair.date);
    if (dates.length === 0) continue;
    for (const ref of r.reference) if (ref.param === pair.reference) for (const d of dates) out.push({ param: pairCode(pair), values: [ref.ref, d.hi, d.lo] });
  }
  return out;
}

export type IndexTable = (typeof TABLES)[number]['table'];

export const INDEX_TABLES: readonly IndexTable[] = TABLES.map((t) => t.table);

/** The index rows of many resources, table by table: `pid`, the value columns, `rid`. */
export function indexRowValues(entries: readonly { rid: number; type: ResourceType; rows: IndexRows }[]): { table: IndexTable; columns: string[]; values: unknown[][] }[] {
  return TABLES.map(({ table, columns, of }) => ({
    table,
    columns: ['pid', ...columns, 'rid'],
    values: entries.flatMap((e) => of(e.rows, e.type).map((x) => [paramId(e.type, x.param), ...x.values, e.rid])),
  })).filter((t) => t.values.length > 0);
}

/** One stored index row as a comparable key (values as text: PostgreSQL returns BIGINT columns as strings). */
function keyOf(table: string, pid: unknown, values: readonly unknown[]): string {
  return [table, String(pid), ...values.map((v) => String(v))].join('\u0001');
}

/** A resource's index rows as keys, each with what it says (`param value`), for comparison with what is stored. */
export function expectedIndexKeys(type: ResourceType, rows: IndexRows): Map<string, string> {
  const out = new Map<string, string>();
  for (const { table, of } of TABLES) for (const x of of(rows, type)) out.set(keyOf(table, paramId(type, x.param), x.values), `${x.param} ${x.values.join(' to ')}`);
  return out;
}

/** The index rows stored for these resources, by rid, as keys (see expectedIndexKeys). */
export async function storedIndexKeys(q: { all<T>(sql: string, params?: readonly unknown[]): Promise<T[]> }, rids: readonly number[]): Promise<Map<number, Set<string>>> {
  const out = new Map<number, Set<string>>();
  if (rids.length === 0) return out;
  const marks = rids.map(() => '?').join(', ');
  for (const { table, columns } of TABLES) {
    for (const row of await q.all<Record<string, unknown>>(`SELECT pid, ${columns.join(', ')}, rid FROM ${table} WHERE rid IN (${marks})`, rids)) {
      const rid = Number(row.rid);
      let keys = out.get(rid);
      if (!keys) out.set(rid, (keys = new Set()));
      keys.add(
        keyOf(
          table,
          row.pid,
          columns.map((c) => row[c]),
        ),
      );
    }
  }
  return out;
}
