import assert from 'node:assert/strict';
import type { Resource } from 'fhir/r4';
import { extractIndexRows } from '../../server/search/extract';
import { indexRowsScript, insertIndexRowsMany } from '../../server/store/write';
import { ENGINE, storeForSuite } from '../support/db';
import { examples } from '../support/fixtures';

/**
 * The audit worker's indexing passes write their index rows as a script of literals on SQLite
 * (store/audit-index.ts indexBatchScript). They must be the rows the bound statements write:
 * checked over every AuditEvent of the IHE BALP examples and the R4 spec's, written both ways
 * under different rids and compared row for row.
 */
(ENGINE === 'sqlite' ? describe : describe.skip)('Audit: index rows written as a script are the rows bound statements write (SQLite)', () => {
  const store = storeForSuite();

  const events = [...examples('ihe/balp/json/instances', (r) => r.resourceType === 'AuditEvent'), ...examples('r4/examples/AuditEvent', (r) => r.resourceType === 'AuditEvent')];
  const OFFSET = 1_000_000;

  it(`${events.length} AuditEvents, every index table`, async () => {
    assert.ok(events.length >= 40, `${events.length} examples`);
    const entries = events.map(([, e], i) => ({ rid: i + 1, type: 'AuditEvent' as const, rows: extractIndexRows('AuditEvent', e as Resource, 'https://custodian.example.org/fhir') }));
    await store().driver.transaction((q) => insertIndexRowsMany(q, entries));
    await store().driver.script!(indexRowsScript(entries.map((e) => ({ ...e, rid: e.rid + OFFSET }))).join(';\n'));
    let total = 0;
    for (const table of ['idx_string', 'idx_token', 'idx_date', 'idx_reference', 'idx_uri']) {
      const rows = await store().driver.all<Record<string, unknown>>(`SELECT * FROM ${table} WHERE rid <= ? OR rid > ?`, [events.length, OFFSET]);
      const key = (r: Record<string, unknown>) => JSON.stringify(Object.entries(r).map(([k, v]) => [k, k === 'rid' ? Number(v) % OFFSET : v]));
      const bound = rows.filter((r) => Number(r.rid) <= events.length).map(key).sort();
      const scripted = rows.filter((r) => Number(r.rid) > OFFSET).map(key).sort();
      assert.deepEqual(scripted, bound, table);
      total += bound.length;
    }
    assert.ok(total > events.length * 10, `${total} rows`);
  });

  it('a value a literal cannot hold is refused, so the pass binds it instead', () => {
    const rows = extractIndexRows('AuditEvent', events[0][1] as Resource, undefined);
    rows.string.push({ param: 'agent-name', norm: 'a\0b', exact: 'a\0b' } as (typeof rows.string)[number]);
    assert.throws(() => indexRowsScript([{ rid: 1, type: 'AuditEvent', rows }]), /NUL/);
  });
});
