import { randomBytes } from 'node:crypto';
import { Sequelize } from 'sequelize';
import type { DatabaseConfig } from '../config';
import { AuditIndexer, AuditQueue, type AuditIndex } from './audit-index';
import { buildItems, type AuditItem } from '../audit/items';
import { AuditThread, type AuditThreadOptions, type Committed } from './audit-thread';
import type { AuditFloor } from './audit-worker';
import { openDriver, type Driver, type Queryable } from './driver';
import { migrate } from './migrations';
import { StoreReader } from './read';
import { ChainVerifier } from './verify-thread';
import { reindexIfAsked } from './reindex';
import { assertNoParamIdCollisions } from '../search/param-id';
import { earlyRowsFor, writeTransaction, type Writer, type WriteTx } from './write';

/** Page size of new SQLite files (see newFilePageSize). */
export const SQLITE_PAGE_SIZE = 8192;

/**
 * A new SQLite file gets 8 KB pages: a stored AuditEvent is ~2.5 KB of JSON, and on 4 KB pages
 * each takes a page of its own. The file must be created with them: the pragma only sets the
 * size the connection that issues it would create the file with, and the migrations run on
 * another connection (Sequelize gives each transaction its own), which created every file with
 * 4 KB pages until VACUUM wrote the empty file here first. A file with pages keeps its size.
 */
async function newFilePageSize(sequelize: Sequelize): Promise<void> {
  const [rows] = (await sequelize.query('PRAGMA page_count')) as [{ page_count: number }[], unknown];
  if (Number(rows[0]?.page_count) !== 0) return;
  await sequelize.query(`PRAGMA page_size = ${SQLITE_PAGE_SIZE}`);
  try {
    await sequelize.query('VACUUM');
  } catch (err) {
    // Another process starting on the same new file got there first: it is created, fine.
    const [again] = (await sequelize.query('PRAGMA page_count')) as [{ page_count: number }[], unknown];
    if (Number(again[0]?.page_count) === 0) throw err;
  }
}

/** A random 32-byte secret kept in custodian_state, created by whichever process asks first. */
async function sharedSecret(driver: Driver, name: string): Promise<Buffer> {
  await driver.run('INSERT INTO custodian_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING', [name, randomBytes(32).toString('base64')]);
  const row = await driver.get<{ value: string }>('SELECT value FROM custodian_state WHERE name = ?', [name]);
  return Buffer.from(row!.value, 'base64');
}

/**
 * Where this database changed format, recorded by the first process of a version that changed it
 * (and kept): what was handed out before still works up to there.
 */
export interface Cutovers {
  /** History feed cursors were bare commit sequences up to this one (gate/cursor.ts). */
  readonly numericFeedCursorsUpTo: number;
  /** Access tokens issued before this time (ms) carry no client_key (access/tokens.ts). */
  readonly unboundTokensBefore: number;
}

/**
 * The cut-overs migration 0022 recorded. A row gone missing is never recomputed (that would
 * widen the window to now): it counts as 0, so nothing from before is accepted (fail closed).
 */
async function cutovers(driver: Driver): Promise<Cutovers> {
  const value = async (name: string) => {
    const n = Number((await driver.get<{ value: string }>('SELECT value FROM custodian_state WHERE name = ?', [name]))?.value ?? 0);
    return Number.isSafeInteger(n) && n > 0 ? n : 0;
  };
  return { numericFeedCursorsUpTo: await value('cutover-sealed-feed-cursors'), unboundTokensBefore: await value('cutover-key-bound-tokens') };
}

/**
 * The versioned resource store: Sequelize owns the connections and the schema, the driver runs
 * the hot-path statements over those same connections. Wired into the gate by app.ts; nothing
 * in `http/` may import it.
 */
export class Store {
  readonly reader: StoreReader;
  /** Builds the search-index rows of the AuditEvents the server writes (deferred; see audit-index.ts). */
  readonly auditIndex: AuditIndex;
  /** SQLite: the thread that commits the audit trail's own events and indexes them (see audit-thread.ts). */
  readonly auditThread: AuditThread | undefined;
  private readonly timer: NodeJS.Timeout;
  private lastStamp = 0;
  /** Audit commits on the path without the worker (PostgreSQL), numbered for Committed.commitNo. */
  private auditCommits = 0;

  private constructor(
    readonly sequelize: Sequelize,
    readonly driver: Driver,
    private readonly now: () => number,
    /** The configured base URL the search index is built with (see extractIndexRows). */
    readonly localBase: string | undefined,
    /** The key search cursors are sealed with, shared by every process on this database (gate/cursor.ts). */
    readonly cursorKey: Buffer,
    /** What was handed out before this database changed format, and still works (see Cutovers). */
    readonly cutovers: Cutovers,
    /** `$verify`'s walk of the audit chain, on a thread of its own (verify-thread.ts). */
    readonly verifier: ChainVerifier,
    /** PostgreSQL: lock and statement timeout of write transactions, ms (0: none). */
    private readonly writeTimeoutMs = 0,
    /** Bench- and test-only settings of the audit worker (see AuditThreadOptions). */
    auditOptions: AuditThreadOptions = {},
  ) {
    this.reader = new StoreReader(driver);
    this.auditThread = driver.sqlite ? new AuditThread(driver.sqlite, localBase, new AuditQueue(driver), auditOptions) : undefined;
    this.auditIndex = this.auditThread ?? new AuditIndexer(driver, localBase);
    // Leftovers from before a restart, and events other processes queued (the worker looks by itself).
    if (!this.auditThread) this.auditIndex.nudge();
    this.timer = setInterval(() => this.auditIndex.nudge(), 2000).unref();
  }

  /** Connects, applies pending migrations and prepares the driver. */
  static async open(config: DatabaseConfig, options: { now: () => number; localBase?: string; benchAuditFloor?: AuditFloor; holdAuditJournal?: boolean }): Promise<Store> {
    assertNoParamIdCollisions();
    const sequelize =
      config.dialect === 'sqlite'
        ? new Sequelize({ dialect: 'sqlite', storage: config.storage, logging: false })
        : new Sequelize(config.url, { dialect: 'postgres', logging: false, pool: { max: config.poolMax, min: 0, idle: 10000, acquire: 30000 } });
    try {
      await sequelize.authenticate();
      if (config.dialect === 'sqlite') await newFilePageSize(sequelize);
      await migrate(sequelize);
      const driver = await openDriver(sequelize, config.dialect === 'sqlite' ? { sqliteStorage: config.storage, sqliteSynchronous: config.synchronous, sqliteBusyTimeoutMs: config.busyTimeoutMs } : {});
      await reindexIfAsked(driver, options.localBase);
      return new Store(sequelize, driver, options.now, options.localBase, await sharedSecret(driver, 'cursor-key'), await cutovers(driver), new ChainVerifier(config), config.dialect === 'postgres' ? (config.writeTimeoutMs ?? 0) : 0, {
        ...(options.benchAuditFloor ? { floor: options.benchAuditFloor } : {}),
        ...(options.holdAuditJournal ? { holdJournal: true } : {}),
      });
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
   * Commits the audit trail's own events in a transaction of their own: built from the items
   * (see AuditItem), stored, chained and queued for indexing when this resolves; nothing stored
   * when it rejects. On SQLite the audit worker builds and commits them (AuditThread); on
   * PostgreSQL they are built here and committed in one transaction.
   */
  async appendAudit(items: readonly AuditItem[], writer: Writer): Promise<Committed> {
    if (this.auditThread) return this.auditThread.append(items, writer, this.stamp());
    // Item by item: a request's events get early index rows if it touched few patients.
    const built = items.map((item) => buildItems([item]));
    const events = built.flat();
    const early = built.flatMap((b) => b.map(() => earlyRowsFor(b.length)));
    if (events.length) {
      await this.transaction((tx) => tx.appendAuditEvents(events, writer, early));
      this.auditIndex.nudge(events.length);
    }
    return { events: events.length, commit: events.length, commitNo: ++this.auditCommits };
  }

  /**
   * How many appendAudit calls are worth having under way at once: the audit worker commits
   * whatever is queued when its last commit is done, without waiting for this thread; PostgreSQL's
   * appends queue on the chain's lock, so one at a time, each as large as the wait made it.
   */
  get auditPipeline(): number {
    return this.auditThread ? 64 : 1;
  }

  /** A timestamp for a new version: the clock, but never earlier than the last one. */
  private stamp(): number {
    this.lastStamp = Math.max(this.now(), this.lastStamp);
    return this.lastStamp;
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

  /**
   * For a process about to exit without close() (see AuditThread.halt), at most `ms`: the audit
   * worker, if any, and verification threads exit first; what they were handed fails, nothing
   * half-written is committed.
   */
  async halt(ms = 11000): Promise<void> {
    clearInterval(this.timer);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all([this.auditThread?.halt(), this.verifier.close()]), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
    clearTimeout(timer);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.verifier.close();
    await this.auditIndex.settled();
    await this.driver.close();
    await this.sequelize.close();
  }
}
