import { randomBytes } from 'node:crypto';
import { Sequelize } from 'sequelize';
import type { DatabaseConfig } from '../config';
import { AuditIndexer } from './audit-index';
import { openDriver, type Driver, type Queryable } from './driver';
import { migrate } from './migrations';
import { StoreReader } from './read';
import { reindexIfAsked } from './reindex';
import { assertNoParamIdCollisions } from '../search/param-id';
import { writeTransaction, type WriteTx } from './write';

/** A random 32-byte secret kept in custodian_state, created by whichever process asks first. */
async function sharedSecret(driver: Driver, name: string): Promise<Buffer> {
  await driver.run('INSERT INTO custodian_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING', [name, randomBytes(32).toString('base64')]);
  const row = await driver.get<{ value: string }>('SELECT value FROM custodian_state WHERE name = ?', [name]);
  return Buffer.from(row!.value, 'base64');
}

/**
 * The versioned resource store: Sequelize owns the connections and the schema, the driver runs
 * the hot-path statements over those same connections. Wired into the gate by app.ts; nothing
 * in `http/` may import it.
 */
export class Store {
  readonly reader: StoreReader;
  /** Builds the search-index rows of the AuditEvents the server writes (deferred; see audit-index.ts). */
  readonly auditIndex: AuditIndexer;
  private readonly timer: NodeJS.Timeout;

  private constructor(
    readonly sequelize: Sequelize,
    readonly driver: Driver,
    private readonly now: () => number,
    /** The configured base URL the search index is built with (see extractIndexRows). */
    readonly localBase: string | undefined,
    /** The key search cursors are sealed with, shared by every process on this database (gate/cursor.ts). */
    readonly cursorKey: Buffer,
    /** PostgreSQL: lock and statement timeout of write transactions, ms (0: none). */
    private readonly writeTimeoutMs = 0,
  ) {
    this.reader = new StoreReader(driver);
    this.auditIndex = new AuditIndexer(driver, localBase);
    // Leftovers from before a restart, and events other processes queued.
    this.auditIndex.nudge();
    this.timer = setInterval(() => this.auditIndex.nudge(), 2000).unref();
  }

  /** Connects, applies pending migrations and prepares the driver. */
  static async open(config: DatabaseConfig, options: { now: () => number; localBase?: string }): Promise<Store> {
    assertNoParamIdCollisions();
    const sequelize =
      config.dialect === 'sqlite'
        ? new Sequelize({ dialect: 'sqlite', storage: config.storage, logging: false })
        : new Sequelize(config.url, { dialect: 'postgres', logging: false, pool: { max: config.poolMax, min: 0, idle: 10000, acquire: 30000 } });
    try {
      await sequelize.authenticate();
      await migrate(sequelize);
      const driver = await openDriver(sequelize, config.dialect === 'sqlite' ? { sqliteSynchronous: config.synchronous, sqliteBusyTimeoutMs: config.busyTimeoutMs } : {});
      await reindexIfAsked(driver, options.localBase);
      return new Store(sequelize, driver, options.now, options.localBase, await sharedSecret(driver, 'cursor-key'), config.dialect === 'postgres' ? (config.writeTimeoutMs ?? 0) : 0);
    } catch (err) {
      await sequelize.close().catch(() => undefined);
      throw err;
    }
  }

  get dialect(): Driver['dialect'] {
    return this.driver.dialect;
  }

  /** Runs `fn` in one write transaction (see WriteTx), its waits bounded (see bounded()). */
  transaction<T>(fn: (tx: WriteTx) => Promise<T>): Promise<T> {
    if (!this.writeTimeoutMs) return writeTransaction(this.driver, this.now, this.localBase, fn);
    return writeTransaction(this.driver, this.now, this.localBase, async (tx) => {
      await this.bounded(tx.q);
      return fn(tx);
    });
  }

  /**
   * PostgreSQL: every write transaction writes the audit trail, and without a bound a lock that
   * is never released (another session holding the chain, a stuck DDL) would hang every request
   * waiting for its audit. `lock_timeout` and `statement_timeout` for the rest of the
   * transaction (CUSTODIAN_AUDIT_WRITE_TIMEOUT_MS) make it fail instead, and the request fails
   * closed with a 503. (SQLite's equivalent is its busy timeout.)
   */
  private async bounded(q: Queryable): Promise<void> {
    const ms = String(this.writeTimeoutMs);
    await q.get("SELECT set_config('lock_timeout', ?, true) AS l, set_config('statement_timeout', ?, true) AS s", [ms, ms]);
  }

  /**
   * Records a client-assertion id until it expires; false if it was recorded before (a replay).
   * Expired ids are swept as new ones arrive.
   */
  async rememberAssertion(key: string, expiresAt: number): Promise<boolean> {
    return this.driver.transaction(async (q) => {
      await q.run('DELETE FROM assertion_jtis WHERE expires_at < ?', [this.now() - 60000]);
      const inserted = await q.run('INSERT INTO assertion_jtis (jti_key, expires_at) VALUES (?, ?) ON CONFLICT (jti_key) DO NOTHING', [key, expiresAt]);
      return inserted === 1;
    });
  }

  /**
   * Writes and commits the health row, and takes the lock an audit append takes on the chain:
   * proves the audit trail can be written now.
   */
  async probeWrite(): Promise<void> {
    await this.driver.transaction(async (q) => {
      if (this.writeTimeoutMs) await this.bounded(q);
      if (this.driver.dialect === 'postgres') await q.run('LOCK TABLE audit_chain IN ROW EXCLUSIVE MODE');
      const at = this.now();
      const changed = await q.run('UPDATE custodian_health SET checked_at = ? WHERE id = 1', [at]);
      if (changed === 0) await q.run('INSERT INTO custodian_health (id, checked_at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET checked_at = ?', [at, at]);
    });
  }

  /**
   * Refreshes the planner's statistics. PostgreSQL plans prepared statements from them, and
   * right after a bulk load they still describe empty tables (autovacuum catches up within
   * minutes); seeding scripts call this when they finish.
   */
  async analyze(): Promise<void> {
    await this.driver.run('ANALYZE');
  }

  /** A cheap round trip, for health checks. */
  async ping(): Promise<void> {
    await this.driver.get('SELECT 1 AS ok');
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.auditIndex.settled();
    await this.driver.close();
    await this.sequelize.close();
  }
}
