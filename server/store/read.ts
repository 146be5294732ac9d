import type { ResourceType } from '../../resources';
import type { ResourceFilter } from '../search/filter';
import { drivenOrder, keysetCondition, orderColumns, type Keyset, type OrderSql } from '../search/order';
import { paramId } from '../search/param-id';
import { limitClause, type Packing, type Queryable } from './driver';
import { fromCurrentRow, fromPageRow, fromVersionRow, type CurrentRow, type HistoryVersion, type StoredVersion, type VersionRow } from './records';

/**
 * The read side of the store. Only the gate may import this module (a test enforces it):
 * every path that returns resource content must pass a consent decision first.
 */


/** One page of current resources, keyset-paged in the order (`rid` alone when there is none). */
export interface PageRequest {
  readonly types: readonly ResourceType[];
  readonly filter: ResourceFilter;
  readonly order?: OrderSql;
  /** Rows after this position (next page) ... */
  readonly after?: Keyset;
  /** ... or before it, read backwards (previous page); returned in forward order. */
  readonly before?: Keyset;
  readonly limit: number;
}

/** A current version with its position in the page's order. */
export type PagedVersion = StoredVersion & { readonly position: Keyset };

export interface HistoryRequest {
  readonly types: readonly ResourceType[];
  readonly id?: string;
  /** Versions written at or after this instant (ms). */
  readonly since?: number;
  /** Versions that were current at some point in [lo, hi] (ms). */
  readonly at?: { lo: number; hi: number };
  /** Keyset bounds on the commit sequence. */
  readonly beforeSeq?: number;
  readonly afterSeq?: number;
  readonly order: 'desc' | 'asc';
  readonly limit: number;
}

/** Larger than any commit sequence (BIGINT on PostgreSQL, INTEGER on SQLite: both 64-bit). */
const MAX_SEQ = '9223372036854775807';

const CURRENT_COLUMNS = ['rid', 'type', 'id', 'version_id', 'last_updated', 'deleted', 'content', 'created_by', 'creator_org', 'patients'] as const;
const CURRENT = CURRENT_COLUMNS.map((c) => `r.${c}`).join(', ');
/**
 * A history row's columns. An AuditEvent's history row keeps no content of its own (it has one
 * version only, and its content is the current row's, which the audit chain covers; see
 * store/write.ts): a row without content that is not a deletion takes it from `resources`.
 */
const VERSION =
  'v.seq, v.rid, v.type, v.id, v.version_id, v.last_updated, v.deleted, v.method, CASE WHEN v.content IS NULL AND v.deleted = 0 THEN (SELECT c.content FROM resources c WHERE c.rid = v.rid) ELSE v.content END AS content';

/**
 * `FROM … WHERE …` of the current resources of `types` that match a filter, with its parameters:
 * through the filter's reference-date index when it has one (search/filter.ts DrivenFilter).
 */
function matching(types: readonly ResourceType[], filter: ResourceFilter): [string, unknown[]] {
  const inTypes = `r.type IN (${types.map(() => '?').join(', ')}) AND r.deleted = 0`;
  const driven = types.length === 1 ? filter.driven : undefined;
  if (driven) return [`FROM idx_ref_date x JOIN resources r ON r.rid = x.rid WHERE ${driven.join} AND ${inTypes} AND (${driven.where})`, [...driven.joinParams, ...types, ...driven.params]];
  return [`FROM resources r WHERE ${inTypes} AND (${filter.where})`, [...types, ...filter.params]];
}

/** The SQL of one keyset page (see StoreReader.page). */
function pageSql(req: PageRequest): { sql: string; params: unknown[]; backwards: boolean; order: OrderSql; packing: Packing } {
  const backwards = req.before !== undefined;
  const driven = req.types.length === 1 ? req.filter.driven : undefined;
  const ordered = driven ? drivenOrder(req.order, driven.date) : req.order;
  const cols = orderColumns(ordered, backwards);
  const order = ordered ?? { keys: [] };
  const [from, params] = matching(req.types, req.filter);
  params.unshift(...cols.selectParams);
  let sql = `SELECT ${CURRENT}${cols.select} ${from}`;
  const at = req.before ?? req.after;
  if (at) {
    const [cond, p] = keysetCondition(order, at, backwards);
    sql += ` AND (${cond})`;
    params.push(...p);
  }
  sql += ` ORDER BY ${cols.orderBy}${limitClause(req.limit)}`;
  return { sql, params, backwards, order, packing: { columns: [...CURRENT_COLUMNS, ...cols.columns], text: 'content', orderBy: cols.outputOrderBy } };
}

export class StoreReader {
  /** Reads through `driver`: the reader connection, or a write transaction's own connection. */
  constructor(private readonly driver: Queryable) {}

  /** The current version (possibly a deletion) of one resource. */
  async current(type: ResourceType, id: string): Promise<StoredVersion | undefined> {
    const row = await this.driver.get<CurrentRow>(`SELECT ${CURRENT} FROM resources r WHERE r.type = ? AND r.id = ?`, [type, id]);
    return row ? fromCurrentRow(row) : undefined;
  }

  /** Current versions of several resources of one type (deleted ones included). */
  async currentMany(type: ResourceType, ids: readonly string[]): Promise<StoredVersion[]> {
    if (ids.length === 0) return [];
    const out: StoredVersion[] = [];
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500);
      const rows = await this.driver.all<CurrentRow>(`SELECT ${CURRENT} FROM resources r WHERE r.type = ? AND r.id IN (${chunk.map(() => '?').join(', ')})`, [type, ...chunk]);
      out.push(...rows.map(fromCurrentRow));
    }
    return out;
  }

  /** Current, non-deleted resources of a type whose reference parameter points at one of these Patients. */
  async byPatient(type: ResourceType, param: string, patientIds: readonly string[]): Promise<StoredVersion[]> {
    if (patientIds.length === 0) return [];
    const out: StoredVersion[] = [];
    for (let i = 0; i < patientIds.length; i += 500) {
      const chunk = patientIds.slice(i, i + 500);
      const rows = await this.driver.all<CurrentRow>(
        `SELECT ${CURRENT} FROM resources r WHERE r.type = ? AND r.deleted = 0 AND r.rid IN (SELECT rid FROM idx_reference WHERE pid = ? AND ref IN (${chunk.map(() => '?').join(', ')}))`,
        [type, paramId(type, param), ...chunk.map((id) => `Patient/${id}`)],
      );
      out.push(...rows.map(fromCurrentRow));
    }
    return out;
  }

  /**
   * The highest commit sequence of each type (0 when none), in one round trip; run before every
   * request that needs Consents (see PatientFactsCache), so it must stay one index probe.
   *
   * Written as "the last (type, seq) at or before (type, max)" rather than `MAX(seq) WHERE type =
   * ?`: PostgreSQL plans the latter as a backward scan of the whole commit sequence filtered by
   * type (measured: 23-100 ms once AuditEvents fill the history, per request), while the row
   * comparison can only be answered from the (type, seq) index. The row found belongs to an
   * earlier type when this one has no versions.
   */
  async latestSeq(types: readonly ResourceType[]): Promise<number[]> {
    const rows = await this.driver.all<{ type: string; seq: number | string }>(
      types.map((_, i) => `SELECT * FROM (SELECT type, seq FROM resource_versions WHERE (type, seq) <= (?, ${MAX_SEQ}) ORDER BY type DESC, seq DESC LIMIT 1) s${i}`).join(' UNION ALL '),
      types,
    );
    return types.map((t) => Number(rows.find((r) => r.type === t)?.seq ?? 0));
  }

  /**
   * Type, id and content of versions of these types committed after `seq` (oldest first, at most
   * `limit`), each with the content of the version it replaced (null for a first version or one
   * that replaced a deletion).
   */
  async changesSince(types: readonly ResourceType[], seq: number, limit: number): Promise<{ seq: number; type: ResourceType; id: string; content: string | null; previous: string | null }[]> {
    const rows = await this.driver.all<{ seq: number | string; type: string; id: string; content: string | null; previous: string | null }>(
      `SELECT v.seq, v.type, v.id, v.content, p.content AS previous FROM resource_versions v LEFT JOIN resource_versions p ON p.type = v.type AND p.id = v.id AND p.version_id = v.version_id - 1 WHERE v.type IN (${types.map(() => '?').join(', ')}) AND v.seq > ? ORDER BY v.seq${limitClause(limit)}`,
      [...types, seq],
    );
    return rows.map((r) => ({ seq: Number(r.seq), type: r.type as ResourceType, id: r.id, content: r.content, previous: r.previous }));
  }

  /** One version of a resource. */
  async version(type: ResourceType, id: string, versionId: number): Promise<HistoryVersion | undefined> {
    const row = await this.driver.get<VersionRow>(`SELECT ${VERSION} FROM resource_versions v WHERE v.type = ? AND v.id = ? AND v.version_id = ?`, [
      type,
      id,
      versionId,
    ]);
    return row ? fromVersionRow(row) : undefined;
  }

  /** Current, non-deleted resources matching a filter, one keyset page in the order. */
  async page(req: PageRequest): Promise<PagedVersion[]> {
    const { sql, params, backwards, order, packing } = pageSql(req);
    // A page is up to a few thousand rows of eleven-odd cells: packed (see Packing).
    const rows = (await this.driver.allPacked<CurrentRow & Record<string, unknown>>(sql, params, packing)).map((row): PagedVersion => {
      const keys = order.keys.map((k, i) => (k.numeric ? Number(row[`s${i}`]) : String(row[`s${i}`])));
      // Not a spread of the version: that would parse its content (see fromCurrentRow).
      return fromPageRow(row, { rid: Number(row.rid), keys });
    });
    return backwards ? rows.reverse() : rows;
  }

  /** The database's plan for a page query (benchmarks and diagnostics report it). */
  async explainPage(req: PageRequest, dialect: 'sqlite' | 'postgres'): Promise<string[]> {
    const { sql, params } = pageSql(req);
    if (dialect === 'sqlite') {
      const rows = await this.driver.all<{ id: number; parent: number; detail: string }>(`EXPLAIN QUERY PLAN ${sql}`, params);
      const depth = new Map<number, number>();
      return rows.map((r) => {
        const d = (depth.get(r.parent) ?? -1) + 1;
        depth.set(r.id, d);
        return `${'  '.repeat(d)}${r.detail}`;
      });
    }
    const rows = await this.driver.all<Record<string, string>>(`EXPLAIN (ANALYZE, BUFFERS) ${sql}`, params);
    return rows.map((r) => Object.values(r)[0]);
  }

  /**
   * The facts the consent policy needs of some patients, in one round trip: their current
   * Patient rows (deleted ones included) and the current, non-deleted Consents whose `patient`
   * points at them. One statement rather than two (currentMany and byPatient): each statement
   * on the reader costs a hand-off to a pool thread and back, and a fresh read snapshot whose
   * page cache SQLite drops after any commit, so the B-tree interior pages both halves share
   * (`resources`) are read once instead of twice. What that measured (within the bench's noise
   * on its own; fewer round trips are part of what the AuditEvent search needs): README,
   * Benchmarks, stop 27.
   */
  async patientFacts(ids: readonly string[]): Promise<{ patients: StoredVersion[]; consents: StoredVersion[] }> {
    const patients: StoredVersion[] = [];
    const consents: StoredVersion[] = [];
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500);
      const marks = chunk.map(() => '?').join(', ');
      const rows = await this.driver.all<CurrentRow>(
        `SELECT ${CURRENT} FROM resources r WHERE r.type = 'Patient' AND r.id IN (${marks})` +
          ` UNION ALL SELECT ${CURRENT} FROM resources r WHERE r.type = 'Consent' AND r.deleted = 0 AND r.rid IN (SELECT rid FROM idx_reference WHERE pid = ? AND ref IN (${marks}))`,
        [...chunk, paramId('Consent', 'patient'), ...chunk.map((id) => `Patient/${id}`)],
      );
      for (const row of rows) (row.type === 'Patient' ? patients : consents).push(fromCurrentRow(row));
    }
    return { patients, consents };
  }

  /** Reference index keys (`Type/id`, …) of these resources under one parameter key. */
  async referencesOf(pid: number, rids: readonly number[]): Promise<{ rid: number; ref: string }[]> {
    const out: { rid: number; ref: string }[] = [];
    for (let i = 0; i < rids.length; i += 500) {
      const chunk = rids.slice(i, i + 500);
      const rows = await this.driver.all<{ rid: number | string; ref: string }>(`SELECT rid, ref FROM idx_reference WHERE pid = ? AND rid IN (${chunk.map(() => '?').join(', ')})`, [pid, ...chunk]);
      for (const r of rows) out.push({ rid: Number(r.rid), ref: r.ref });
    }
    return out;
  }

  /** Current, non-deleted resources of a type among `ids` that match a filter. */
  async currentMatching(type: ResourceType, ids: readonly string[], filter: ResourceFilter): Promise<StoredVersion[]> {
    const out: StoredVersion[] = [];
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500);
      const rows = await this.driver.all<CurrentRow>(
        `SELECT ${CURRENT} FROM resources r WHERE r.type = ? AND r.deleted = 0 AND r.id IN (${chunk.map(() => '?').join(', ')}) AND (${filter.where})`,
        [type, ...chunk, ...filter.params],
      );
      out.push(...rows.map(fromCurrentRow));
    }
    return out;
  }

  /** Current, non-deleted resources of a type that match a filter and have one of `refs` under the parameter key `pid`. */
  async referencingMatching(type: ResourceType, pid: number, refs: readonly string[], filter: ResourceFilter): Promise<StoredVersion[]> {
    const out: StoredVersion[] = [];
    for (let i = 0; i < refs.length; i += 500) {
      const chunk = refs.slice(i, i + 500);
      const rows = await this.driver.all<CurrentRow>(
        `SELECT ${CURRENT} FROM resources r WHERE r.type = ? AND r.deleted = 0 AND r.rid IN (SELECT rid FROM idx_reference WHERE pid = ? AND ref IN (${chunk.map(() => '?').join(', ')})) AND (${filter.where})`,
        [type, pid, ...chunk, ...filter.params],
      );
      out.push(...rows.map(fromCurrentRow));
    }
    return out;
  }

  /** How many current resources match a filter. */
  async count(types: readonly ResourceType[], filter: ResourceFilter): Promise<number> {
    const [from, params] = matching(types, filter);
    const row = await this.driver.get<{ n: number | string }>(`SELECT COUNT(*) AS n ${from}`, params);
    return Number(row?.n ?? 0);
  }

  /**
   * The version of each resource of `type` that was current at commit `snapshotSeq` (a deletion,
   * if that is what it was), one keyset page in commit order after `afterSeq`; with `since`,
   * only those written after that instant. The Bulk Data export reads its snapshot this way.
   */
  async snapshotPage(type: ResourceType, snapshotSeq: number, afterSeq: number, limit: number, since?: number): Promise<HistoryVersion[]> {
    const params: unknown[] = [type, afterSeq, snapshotSeq];
    let sql = `SELECT ${VERSION} FROM resource_versions v WHERE v.type = ? AND v.seq > ? AND v.seq <= ?`;
    if (since !== undefined) {
      sql += ' AND v.last_updated > ?';
      params.push(since);
    }
    sql += ' AND NOT EXISTS (SELECT 1 FROM resource_versions n WHERE n.type = v.type AND n.id = v.id AND n.version_id > v.version_id AND n.seq <= ?) ORDER BY v.seq' + limitClause(limit);
    params.push(snapshotSeq);
    return (await this.driver.all<VersionRow>(sql, params)).map(fromVersionRow);
  }

  /**
   * The last committed commit sequence (0 for none): every version at or below it is committed
   * (a version's seq is given out under a lock held to its commit, see store/write.ts).
   */
  async headSeq(): Promise<number> {
    return Number((await this.driver.get<{ seq: number | string | null }>('SELECT MAX(seq) AS seq FROM resource_versions'))?.seq ?? 0);
  }

  /** Versions in commit order (or its reverse), one keyset page. */
  async history(req: HistoryRequest): Promise<HistoryVersion[]> {
    const params: unknown[] = [...req.types];
    let sql = `SELECT ${VERSION} FROM resource_versions v WHERE v.type IN (${req.types.map(() => '?').join(', ')})`;
    if (req.id !== undefined) {
      sql += ' AND v.id = ?';
      params.push(req.id);
    }
    if (req.since !== undefined) {
      sql += ' AND v.last_updated >= ?';
      params.push(req.since);
    }
    if (req.at) {
      // Current at some point in [lo, hi]: written by hi, and not replaced by a version written by lo.
      sql +=
        ' AND v.last_updated <= ? AND NOT EXISTS (SELECT 1 FROM resource_versions n WHERE n.type = v.type AND n.id = v.id AND n.version_id = v.version_id + 1 AND n.last_updated <= ?)';
      params.push(req.at.hi, req.at.lo);
    }
    if (req.beforeSeq !== undefined) {
      sql += ' AND v.seq < ?';
      params.push(req.beforeSeq);
    }
    if (req.afterSeq !== undefined) {
      sql += ' AND v.seq > ?';
      params.push(req.afterSeq);
    }
    sql += ` ORDER BY v.seq ${req.order === 'asc' ? 'ASC' : 'DESC'}${limitClause(req.limit)}`;
    return (await this.driver.all<VersionRow>(sql, params)).map(fromVersionRow);
  }
}
