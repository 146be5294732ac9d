import type { Resource } from 'fhir/r4';
import { RESOURCE_TYPES, type ResourceType } from '../../resources';
import { extractIndexRows } from '../search/extract';
import type { Driver } from './driver';
import { INDEX_TABLES } from './index-rows';
import { insertIndexRowsMany } from './write';

/**
 * Rebuilds the search index when a migration asked for it (the `reindex` row of
 * `custodian_state`): index rows are derived from content by the search parameters' code, which
 * SQL migrations cannot run. `all` rebuilds every current resource's rows; `types:Patient,…` only
 * those of the resources of these types (a change to how one type is indexed need not rebuild a
 * whole audit trail). A migration that asks while another request is pending leaves it as is if
 * it is the same, and makes it `all` otherwise (0031 shows how), so no rebuild asked is lost.
 * Called by Store.open before the server serves anything; one process does it while others
 * starting at the same time wait (PostgreSQL advisory lock), and it commits in one transaction,
 * so a crash midway leaves the request in place.
 */
export async function reindexIfAsked(driver: Driver, localBase: string | undefined): Promise<number> {
  const asked = await driver.get<{ value: string }>("SELECT value FROM custodian_state WHERE name = 'reindex'");
  if (!asked) return 0;
  return driver.transaction(async (q) => {
    if (driver.dialect === 'postgres') await q.run('SELECT pg_advisory_xact_lock(727002)');
    const still = await q.get<{ value: string }>("SELECT value FROM custodian_state WHERE name = 'reindex'");
    if (!still) return 0;
    const types = reindexTypes(still.value);
    const typeIn = types ? `type IN (${types.map(() => '?').join(', ')})` : undefined;
    const only = typeIn ? ` AND ${typeIn}` : '';
    for (const table of INDEX_TABLES) {
      if (typeIn) await q.run(`DELETE FROM ${table} WHERE rid IN (SELECT rid FROM resources WHERE ${typeIn})`, types);
      else await q.run(`DELETE FROM ${table}`);
    }
    let after = 0;
    let total = 0;
    for (;;) {
      const rows = await q.all<{ rid: number | string; type: string; content: string }>(
        `SELECT rid, type, content FROM resources WHERE rid > ? AND deleted = 0${only} ORDER BY rid LIMIT 1000`,
        [after, ...(types ?? [])],
      );
      if (rows.length === 0) break;
      await insertIndexRowsMany(
        q,
        rows.map((r) => ({ rid: Number(r.rid), type: r.type as ResourceType, rows: extractIndexRows(r.type as ResourceType, JSON.parse(r.content) as Resource, localBase) })),
      );
      total += rows.length;
      after = Number(rows[rows.length - 1].rid);
    }
    await q.run("DELETE FROM custodian_state WHERE name = 'reindex'");
    return total;
  });
}

/** The types a `reindex` request names (`types:Patient,Consent`); undefined for `all` or anything else, which rebuilds everything. */
function reindexTypes(value: string): string[] | undefined {
  if (!value.startsWith('types:')) return undefined;
  const types = value.slice('types:'.length).split(',').filter((t) => (RESOURCE_TYPES as readonly string[]).includes(t));
  return types.length ? types : undefined;
}
