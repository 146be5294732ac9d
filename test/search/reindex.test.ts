import assert from 'node:assert/strict';
import type { Resource } from 'fhir/r4';
import { assertNoParamIdCollisions } from '../../server/search/param-id';
import { Store } from '../../server/store/store';
import { INDEX_TABLES } from '../../server/store/index-rows';
import { freshDatabase, type TestDatabase } from '../support/db';
import { examples } from '../support/fixtures';

/** The search index is derived data: a migration may ask for it to be rebuilt, and the rebuild gives exactly the rows the writes gave. */
describe('Search index: rebuild on request', () => {
  let db: TestDatabase;
  after(() => db?.drop());

  it('parameter keys do not collide', () => {
    assertNoParamIdCollisions();
  });

  it('Store.open rebuilds every index row a migration asked for, once', async () => {
    db = await freshDatabase();
    const writer = { clientId: 'test', organization: null };
    let store = await Store.open(db.config, { now: Date.now });
    const resources = [...examples('r4/examples/Patient'), ...examples('r4/examples/Consent'), ...examples('r4/examples/AuditEvent')].map(([, r]) => r as Resource);
    await store.transaction(async (tx) => {
      for (const r of resources) await tx.create(r.resourceType as 'Patient', { ...r, id: `${r.id}-x` }, writer);
    });
    const snapshot = async () => {
      const out: Record<string, unknown[]> = {};
      for (const t of INDEX_TABLES) out[t] = await store.driver.all(`SELECT * FROM ${t} ORDER BY rid, pid`);
      return out;
    };
    const written = await snapshot();
    assert.ok(written.idx_token.length > 100 && written.idx_reference.length > 20);
    for (const t of INDEX_TABLES) await store.driver.run(`DELETE FROM ${t}`);
    await store.driver.run("INSERT INTO custodian_state (name, value) VALUES ('reindex', 'all')");
    await store.close();

    store = await Store.open(db.config, { now: Date.now });
    try {
      const rebuilt = await snapshot();
      for (const t of INDEX_TABLES) assert.equal(JSON.stringify(rebuilt[t]), JSON.stringify(written[t]), t);
      assert.equal(await store.driver.get("SELECT value FROM custodian_state WHERE name = 'reindex'"), undefined);
    } finally {
      await store.close();
    }
  });
});
