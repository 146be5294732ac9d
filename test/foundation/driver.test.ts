import assert from 'node:assert/strict';
import { limitClause, openSqliteReadOnly, openSqliteWriter, PG_NAMED_STATEMENTS, SQLITE_STATEMENT_CACHE, STATEMENTS_PER_SQL } from '../../server/store/driver';
import { WriterLock } from '../../server/store/writer-lock';
import { StatementCache } from '../../server/store/statement-cache';
import sqlite3 from 'sqlite3';
import { SQLITE_PAGE_SIZE, Store } from '../../server/store/store';
import { ENGINE, freshDatabase, storeForSuite } from '../support/db';

/**
 * The driver's prepared statements stay bounded however many distinct SQL texts a long-running
 * server sends (search builds a new text for every length of IN list), and statements that fall
 * out of the cache are released without breaking queries still using them.
 */
describe(`Store driver: prepared statements are bounded (${ENGINE})`, () => {
  const suiteStore = storeForSuite();

  it('an EXPLAIN leaves no read snapshot open: reads after it see later commits', async () => {
    const count = async () => Number((await suiteStore().driver.get<{ n: number | string }>("SELECT COUNT(*) AS n FROM custodian_state WHERE name LIKE 'explain-test-%'"))!.n);
    const explain = ENGINE === 'sqlite' ? 'EXPLAIN QUERY PLAN' : 'EXPLAIN';
    for (let i = 0; i < 3; i++) {
      const plan = await suiteStore().driver.all(`${explain} SELECT rid FROM audit_index_queue WHERE 1 = 1 AND early = 0 LIMIT 1`);
      assert.ok(plan.length > 0);
      const before = await count();
      await suiteStore().driver.transaction((q) => q.run('INSERT INTO custodian_state (name, value) VALUES (?, ?)', [`explain-test-${i}`, '1']));
      assert.equal(await count(), before + 1, `round ${i}: the commit is seen`);
    }
  });

  it('a statement that fails to prepare fails its callers (it neither hangs them nor throws where nothing catches it), and is prepared again next time', async () => {
    const q = suiteStore().driver;
    for (let i = 0; i < 2; i++) {
      await assert.rejects(q.all('SELECT x FROM no_such_table_here WHERE id = ?', [i]), /no_such_table_here/);
      await assert.rejects(q.transaction((tx) => tx.run('UPDATE no_such_table_here SET x = ?', [i])), /no_such_table_here/);
    }
    // Concurrent callers queued on the same failing statement all fail.
    const all = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => q.all('SELECT x FROM no_such_table_here WHERE id = ?', [i])));
    assert.deepEqual(all.map((r) => r.status), all.map(() => 'rejected'));
    assert.equal(Number((await q.get<{ n: number | string }>('SELECT COUNT(*) AS n FROM resources'))!.n) >= 0, true, 'the connection still serves');
  });

  it('a packed read (allPacked) gives the rows `all` gives, in its order: NULL and empty texts, REAL keys exact, and no rows', async () => {
    const q = suiteStore().driver;
    // A text holding an escaped U+001E (JSON's \u001e, as stored JSON holds one) is not split.
    const rows = `SELECT 3 AS rid, 'c' AS id, '{"a":"\\u001e"}' AS content, 0.1 AS s0 UNION ALL SELECT 1, 'a', NULL, 1e300 UNION ALL SELECT 2, 'b', '', 1.2345678901234567 UNION ALL SELECT 5, 'e', '{"b":2}', 0.1 UNION ALL SELECT 4, 'd', '{"c":3}', 7`;
    const sql = `SELECT * FROM (${rows}) t WHERE rid > ? ORDER BY s0 DESC, rid ASC`;
    const packing = { columns: ['rid', 'id', 'content', 's0'], text: 'content', orderBy: 's0 DESC, rid ASC' };
    const norm = (list: Record<string, unknown>[]) => list.map((r) => ({ rid: Number(r.rid), id: r.id, content: r.content, s0: Number(r.s0) }));
    const plain = norm(await q.all(sql, [0]));
    assert.deepEqual(plain.map((r) => r.id), ['a', 'd', 'b', 'c', 'e']);
    assert.deepEqual(norm(await q.allPacked(sql, [0], packing)), plain);
    assert.equal(plain[2].s0, 1.2345678901234567, 'a REAL comes back exactly (SQLite JSON writes 15 digits)');
    assert.deepEqual(plain.map((r) => r.content), [null, '{"c":3}', '', '{"a":"\\u001e"}', '{"b":2}']);
    assert.deepEqual(await q.allPacked(sql, [99], packing), []);
    if (ENGINE === 'sqlite') {
      // A raw U+001E (never in stored JSON) is refused, not split into rows that do not exist.
      await assert.rejects(q.allPacked(`SELECT 1 AS rid, 'x' || char(30) || 'y' AS content`, [], { columns: ['rid', 'content'], text: 'content', orderBy: '' }), /packed rows/);
    }
  });

  it('LIMIT is written into the SQL as a row count (a bound one recompiles the statement on SQLite), never anything else', () => {
    assert.equal(limitClause(102), ' LIMIT 102');
    assert.equal(limitClause(0), ' LIMIT 0');
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 60, '3; DROP TABLE resources' as unknown as number]) assert.throws(() => limitClause(bad), /not a row count/);
  });

  it('StatementCache keeps the most recently used entries and releases the rest', () => {
    const evicted: string[] = [];
    const cache = new StatementCache<number>(3, (_v, key) => evicted.push(key));
    for (const k of ['a', 'b', 'c']) cache.set(k, k.charCodeAt(0));
    assert.equal(cache.get('a'), 97); // a is now the most recent
    cache.set('d', 100);
    assert.deepEqual(evicted, ['b']);
    assert.equal(cache.size, 3);
    assert.equal(cache.get('b'), undefined);
    assert.deepEqual(cache.drain().sort((x, y) => x - y), [97, 99, 100]);
    assert.equal(cache.size, 0);
  });

  it('thousands of distinct SQL texts leave at most the cap prepared, and every answer is right', async () => {
    const distinct = 3 * Math.max(SQLITE_STATEMENT_CACHE, PG_NAMED_STATEMENTS);
    // Issued together, so evictions happen while earlier statements are still queued.
    const answers = await Promise.all(
      Array.from({ length: distinct }, (_, i) => {
        const list = Array.from({ length: (i % 50) + 1 }, () => '?').join(', ');
        return suiteStore().driver.get<{ n: number | string }>(`SELECT COUNT(*) + ${i} AS n FROM custodian_migrations WHERE id NOT IN (${list})`, Array.from({ length: (i % 50) + 1 }, (_, k) => `none-${k}`));
      }),
    );
    const migrations = Number((await suiteStore().driver.get<{ n: number | string }>('SELECT COUNT(*) AS n FROM custodian_migrations'))!.n);
    answers.forEach((row, i) => assert.equal(Number(row!.n), migrations + i));
    // The same texts again: they still run, the count stays bounded.
    for (let i = 0; i < distinct; i += 7) await suiteStore().driver.get(`SELECT COUNT(*) + ${i} AS n FROM custodian_migrations WHERE id NOT IN (?)`, ['x']);
    const cap = ENGINE === 'sqlite' ? 2 * SQLITE_STATEMENT_CACHE * STATEMENTS_PER_SQL : PG_NAMED_STATEMENTS;
    assert.ok(suiteStore().driver.preparedStatements() <= cap, `${suiteStore().driver.preparedStatements()} prepared statements (cap ${cap})`);
  });

  if (ENGINE === 'postgres') {
    it('a PostgreSQL connection holds at most the named statements, however many texts it ran', async () => {
      const prepared = await suiteStore().driver.transaction(async (q) => {
        for (let i = 0; i < 2 * PG_NAMED_STATEMENTS + 50; i++) {
          // each text twice: a text seen again is the kind that gets a name
          await q.get(`SELECT ${i} + ? AS n`, [1]);
          await q.get(`SELECT ${i} + ? AS n`, [2]);
        }
        return Number((await q.get<{ n: number | string }>('SELECT COUNT(*) AS n FROM pg_prepared_statements'))!.n);
      });
      assert.ok(prepared <= PG_NAMED_STATEMENTS, `${prepared} statements prepared on one connection`);
      assert.ok(prepared > 0, 'hot statements are still prepared');
    });
  }
});

/**
 * New SQLite files get 8 KB pages (store.ts newFilePageSize): a ~2.5 KB AuditEvent took a 4 KB
 * page of its own. The pragma alone never reached the file (the migrations' connection created
 * it), so this opens files through Store.open and asks the file itself.
 */
(ENGINE === 'sqlite' ? describe : describe.skip)('Store: SQLite page size', () => {
  const pageSize = async (store: Store) => Number((await store.driver.get<{ page_size: number }>('PRAGMA page_size'))!.page_size);

  it('a new file is created with 8 KB pages', async () => {
    const db = await freshDatabase();
    const store = await Store.open(db.config, { now: Date.now });
    try {
      assert.equal(await pageSize(store), SQLITE_PAGE_SIZE);
      assert.equal(SQLITE_PAGE_SIZE, 8192);
    } finally {
      await store.close();
      await db.drop();
    }
  });

  it('an existing file keeps its page size and its rows', async () => {
    const db = await freshDatabase();
    if (db.config.dialect !== 'sqlite') throw new Error('sqlite only');
    // A file made with 4 KB pages, as every file was before the fix.
    const old = new sqlite3.Database(db.config.storage);
    await new Promise<void>((resolve, reject) => old.exec('PRAGMA page_size = 4096; CREATE TABLE kept (x); INSERT INTO kept VALUES (42)', (err) => (err ? reject(err) : resolve())));
    await new Promise<void>((resolve) => old.close(() => resolve()));
    const store = await Store.open(db.config, { now: Date.now });
    try {
      assert.equal(await pageSize(store), 4096);
      assert.deepEqual(await store.driver.all('SELECT x FROM kept'), [{ x: 42 }]);
    } finally {
      await store.close();
      await db.drop();
    }
  });
});

/**
 * The audit worker's statement journals stay in memory: SQLite spilled one to a temporary file
 * past 64 KB (eight 8 KB pages, any audit group of a few events), created, written and unlinked
 * at every such commit (driver.ts). The main writer and the readers keep the default, so a large
 * temporary B-tree of a search (inside a write transaction or not) still spills to disk.
 */
(ENGINE === 'sqlite' ? describe : describe.skip)('Store: SQLite audit worker journals statements in memory', () => {
  const tempStore = async (q: { get<T>(sql: string): Promise<T | undefined> }) => Number((await q.get<{ temp_store: number }>('PRAGMA temp_store'))!.temp_store);

  it('the audit worker’s writer keeps temp storage in memory; the main writer and the readers do not', async () => {
    const db = await freshDatabase();
    let store: Store | undefined;
    let worker: Awaited<ReturnType<typeof openSqliteWriter>> | undefined;
    try {
      if (db.config.dialect !== 'sqlite') throw new Error('sqlite only');
      store = await Store.open(db.config, { now: Date.now });
      worker = await openSqliteWriter({ storage: db.config.storage, synchronous: 'FULL', busyTimeoutMs: 1000, lock: WriterLock.buffer() }, 'worker');
      assert.equal(await worker.transaction((q) => tempStore(q)), 2, 'audit worker writer: MEMORY');
      assert.equal(await tempStore(worker), 0, 'audit worker reader: the default');
      assert.equal(await store.driver.transaction((q) => tempStore(q)), 0, 'main writer: the default');
      assert.equal(await tempStore(store.driver), 0, 'main reader: the default');
    } finally {
      await worker?.close();
      await store?.close();
      await db.drop();
    }
  });
});

/**
 * The $verify walk's thread opens its connections read-only (verify-worker.ts): it checks the
 * trail and must not be able to change it, whatever statement it runs.
 */
(ENGINE === 'sqlite' ? describe : describe.skip)('Store: SQLite read-only driver (the $verify thread)', () => {
  it('reads what the store committed, and every kind of write fails with SQLITE_READONLY, changing nothing', async () => {
    const db = await freshDatabase();
    let store: Store | undefined;
    let reader: Awaited<ReturnType<typeof openSqliteReadOnly>> | undefined;
    try {
      if (db.config.dialect !== 'sqlite') throw new Error('sqlite only');
      store = await Store.open(db.config, { now: Date.now });
      await store.transaction((tx) => tx.create('Patient', { resourceType: 'Patient', id: 'ro-1' }, { clientId: 'test', organization: null }));
      reader = await openSqliteReadOnly({ storage: db.config.storage, synchronous: 'FULL', busyTimeoutMs: 1000, lock: WriterLock.buffer() });
      const count = async () => Number((await reader!.get<{ n: number }>("SELECT COUNT(*) AS n FROM resources WHERE type = 'Patient'"))!.n);
      assert.equal(await count(), 1);
      const readOnly = (err: unknown) => /SQLITE_READONLY|readonly database/.test(String(err));
      await assert.rejects(reader.run("DELETE FROM resources WHERE id = 'ro-1'"), readOnly);
      await assert.rejects(reader.transaction((q) => q.run("UPDATE resources SET content = '{}' WHERE id = 'ro-1'")), readOnly);
      await assert.rejects(reader.script!("DELETE FROM resources WHERE id = 'ro-1'"), readOnly);
      assert.equal(await count(), 1, 'nothing was changed');
      const row = await store.driver.get<{ content: string }>("SELECT content FROM resources WHERE id = 'ro-1'");
      assert.notEqual(row!.content, '{}');
    } finally {
      await reader?.close();
      await store?.close();
      await db.drop();
    }
  });
});

/**
 * A script that is not durable (the audit journal's moves, Driver.script) commits at
 * `synchronous = NORMAL`, and the writer is back at its own level after it, whether it committed
 * or failed; every other script and transaction keeps that level.
 */
(ENGINE === 'sqlite' ? describe : describe.skip)('Store: SQLite scripts that need no fsync', () => {
  it('run at NORMAL and leave the writer at FULL, after a COMMIT and after a failure', async () => {
    const db = await freshDatabase();
    let worker: Awaited<ReturnType<typeof openSqliteWriter>> | undefined;
    try {
      if (db.config.dialect !== 'sqlite') throw new Error('sqlite only');
      worker = await openSqliteWriter({ storage: db.config.storage, synchronous: 'FULL', busyTimeoutMs: 1000, lock: WriterLock.buffer() }, 'worker');
      await worker.script!('CREATE TABLE levels (at TEXT, level INTEGER)');
      // What the level was while each script's transaction ran (1 NORMAL, 2 FULL).
      const during = (at: string) => `INSERT INTO levels SELECT '${at}', synchronous FROM pragma_synchronous`;
      const level = async () => Number((await worker!.transaction((q) => q.get<{ synchronous: number }>('PRAGMA synchronous')))!.synchronous);
      await worker.script!(during('durable'));
      await worker.script!(during('lax'), { durable: false });
      assert.equal(await level(), 2, 'back at FULL after the COMMIT');
      await assert.rejects(worker.script!(`${during('failed')}; INSERT INTO no_such_table VALUES (1)`, { durable: false }), /no such table/);
      assert.equal(await level(), 2, 'back at FULL after the ROLLBACK');
      await worker.script!(during('after'));
      const rows = await worker.all<{ at: string; level: number }>('SELECT at, level FROM levels ORDER BY rowid');
      assert.deepEqual(
        rows.map((r) => [r.at, Number(r.level)]),
        [
          ['durable', 2],
          ['lax', 1],
          ['after', 2],
        ],
        'the failed one stored nothing',
      );
    } finally {
      await worker?.close();
      await db.drop();
    }
  });
});
