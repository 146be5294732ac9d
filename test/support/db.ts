import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Sequelize } from 'sequelize';
import type { DatabaseConfig } from '../../server/config';
import { Store } from '../../server/store/store';

/**
 * The database the suite runs against: SQLite by default, PostgreSQL with
 * TEST_DATABASE=postgres (TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test).
 * Every test database is fresh: a temporary SQLite file, or a new PostgreSQL schema.
 */
export const ENGINE: 'sqlite' | 'postgres' = process.env.TEST_DATABASE === 'postgres' ? 'postgres' : 'sqlite';
export const PG_URL = process.env.TEST_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';

export interface TestDatabase {
  readonly config: DatabaseConfig;
  /** The DATABASE_URL a server process would use for the same database. */
  readonly url: string;
  drop(): Promise<void>;
}

/**
 * `lockTimeoutMs`: how long the server waits for a lock before failing (fault tests): SQLite's
 * busy timeout, PostgreSQL's write timeout (CUSTODIAN_AUDIT_WRITE_TIMEOUT_MS), as configured in service.
 */
export async function freshDatabase(options: { lockTimeoutMs?: number } = {}): Promise<TestDatabase> {
  if (ENGINE === 'sqlite') {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'custodian-test-'));
    const storage = path.join(dir, 'test.sqlite');
    return {
      config: { dialect: 'sqlite', storage, synchronous: 'NORMAL', busyTimeoutMs: options.lockTimeoutMs ?? 10000 },
      url: `sqlite:${storage}`,
      async drop() {
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const schema = `t_${randomBytes(6).toString('hex')}`;
  const admin = new Sequelize(PG_URL, { logging: false });
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.close();
  const sep = PG_URL.includes('?') ? '&' : '?';
  const url = `${PG_URL}${sep}options=${encodeURIComponent(`-c search_path=${schema}`)}`;
  return {
    config: { dialect: 'postgres', url, poolMax: 10, writeTimeoutMs: options.lockTimeoutMs ?? 5000 },
    url,
    async drop() {
      const a = new Sequelize(PG_URL, { logging: false });
      await a.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await a.close();
    },
  };
}

/**
 * A fresh database with a Store open on it for the whole of a suite (opened in `before`, closed
 * and dropped in `after`): the returned function gives the Store inside the suite's tests.
 */
export function storeForSuite(): () => Store {
  let db: TestDatabase | undefined;
  let store: Store | undefined;
  before(async () => {
    db = await freshDatabase();
    store = await Store.open(db.config, { now: Date.now });
  });
  after(async () => {
    await store?.close();
    await db?.drop();
  });
  return () => {
    if (!store) throw new Error('the suite\'s store is opened in its before hook');
    return store;
  };
}
