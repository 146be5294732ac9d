import { createHash } from 'node:crypto';
import type { Sequelize } from 'sequelize';
import sqlite3, { type Database, type Statement } from 'sqlite3';
import type { Client as PgClient } from 'pg';
import { StatementCache } from './statement-cache';
import { WriterLock, type LockSide } from './writer-lock';

/**
 * Prepared-statement access to the connections Sequelize already manages, for the hot paths
 * (read by id, index writes, the audit append). SQL is written once with `?` placeholders and
 * runs unchanged on SQLite and PostgreSQL.
 *
 * Why not Sequelize's query API: measured on these machines a primary-key read through
 * `findByPk` runs at ~0.4x of the bare driver (DESIGN.md, "Performance facts").
 */
export interface Queryable {
  all<T = Row>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  /** The rows of a SELECT of few rows, each holding one long text (see Packing): the same rows as `all`. */
  allPacked<T = Row>(sql: string, params: readonly unknown[], packing: Packing): Promise<T[]>;
  get<T = Row>(sql: string, params?: readonly unknown[]): Promise<T | undefined>;
  /** Runs a statement and returns the number of rows it changed. */
  run(sql: string, params?: readonly unknown[]): Promise<number>;
}

export type Row = Record<string, unknown>;

/**
 * How a SELECT's rows may travel back from SQLite packed into one row of two cells: its other
 * columns as one JSON array of arrays, and its long text column (a resource's JSON) as the rows'
 * texts joined by U+001E, which stored JSON never holds raw (JSON escapes every control
 * character). node-sqlite3 turns each cell into a JS value on the main thread, and that was what
 * a search page cost there (measured on the bench's store, 2026-12-07: an AuditEvent page of ten
 * rows of eleven cells, 119 µs of main-thread time a statement; packed, 49 µs; the cells, not the
 * bytes, cost it: without `content` it still took 107). PostgreSQL's rows are parsed in
 * JavaScript anyway and are read as they are.
 *
 * Values come back as `all` gives them, except that a REAL comes as its 17-digit text (SQLite's
 * JSON writes 15 digits): a statement packed must read its numeric columns through Number().
 */
export interface Packing {
  /** The statement's output columns, in order. */
  readonly columns: readonly string[];
  /** The column holding the long text (null allowed). */
  readonly text: string;
  /** The statement's ORDER BY over its output columns, which the packing keeps (empty: no order). */
  readonly orderBy: string;
}

/** U+001E between packed texts; U+001F for a NULL text. Neither is ever raw in stored JSON. */
const PACKED_ROWS = '\x1e';
const PACKED_NULL = '\x1f';

/** The SQLite statement that returns `sql`'s rows packed (see Packing). */
function packedSql(sql: string, packing: Packing): string {
  const order = packing.orderBy ? ` ORDER BY ${packing.orderBy}` : '';
  const cells = packing.columns.filter((c) => c !== packing.text).map((c) => `CASE WHEN typeof(q.${c}) = 'real' THEN printf('%!.17g', q.${c}) ELSE q.${c} END`);
  return `SELECT json_group_array(json_array(${cells.join(', ')})${order}) AS m, group_concat(coalesce(q.${packing.text}, char(31)), char(30)${order}) AS t FROM (${sql}) q`;
}

/** The rows of a packed result (see Packing). */
function unpacked<T>(row: { m: string; t: string | null } | undefined, packing: Packing): T[] {
  const values = JSON.parse(row?.m ?? '[]') as unknown[][];
  if (values.length === 0) return [];
  const texts = (row?.t ?? '').split(PACKED_ROWS);
  if (texts.length !== values.length) throw new Error(`packed rows: ${values.length} rows but ${texts.length} texts (a text held U+001E)`);
  const names = packing.columns.filter((c) => c !== packing.text);
  return values.map((cells, i) => {
    const out: Row = {};
    for (let k = 0; k < names.length; k++) out[names[k]] = cells[k];
    out[packing.text] = texts[i] === PACKED_NULL ? null : texts[i];
    return out as T;
  });
}

/**
 * A LIMIT clause with the count written into the SQL, never bound. SQLite (3.52) plans with the
 * value bound to `LIMIT ?` and marks the statement to be compiled again whenever that variable
 * is bound, which is every run: measured, a search's page query was compiled anew each time.
 * A few distinct counts make a few cached statements instead.
 */
export function limitClause(n: number): string {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`not a row count: ${n}`);
  return ` LIMIT ${n}`;
}

export type Dialect = 'sqlite' | 'postgres';

export interface Driver extends Queryable {
  readonly dialect: Dialect;
  /**
   * How many prepared statements this driver keeps (SQLite: both connections' caches;
   * PostgreSQL: statement names handed out, each prepared at most once per connection).
   * Bounded whatever SQL the callers send; see StatementCache.
   */
  preparedStatements(): number;
  /**
   * Runs `fn` in one database transaction: committed when it resolves, rolled back when it throws.
   * On SQLite transactions are serialised in-process on a dedicated writer connection and
   * group-committed (see SqliteDriver); on PostgreSQL each gets its own pooled connection.
   */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /**
   * SQLite only: runs `sql` (statements of literals, no parameters) as one transaction in a
   * single call to the connection: `BEGIN IMMEDIATE`, the statements, `COMMIT`, all or nothing.
   * Each call to a node-sqlite3 connection is a trip through the thread pool and back, and a
   * transaction of bound statements takes several; this takes one (see the audit append,
   * store/write.ts auditAppendScript). Queued with the transactions, in order.
   *
   * Or in parts (ScriptParts), still one transaction: each part is sent as soon as the one before
   * has run, and the next is built while it runs.
   *
   * `durable: false`: its COMMIT does not wait for an fsync (`synchronous = NORMAL` for it alone),
   * for a transaction whose loss at a power cut loses nothing: one that only derives rows from
   * what is committed already (the audit journal's moves). The WAL is one log: the next durable
   * COMMIT, or a checkpoint, syncs it along with everything before it, and a power cut keeps a
   * prefix of the log, so what came after such a transaction cannot outlive it.
   */
  readonly script?: (sql: string | ScriptParts, options?: { readonly durable?: boolean }) => Promise<void>;
  /**
   * SQLite only: how another thread of this process opens the same database as a writer (the
   * audit worker), taking turns with this driver's writer through `lock`.
   */
  readonly sqlite?: SqliteWriterSettings;
  close(): Promise<void>;
  /**
   * SQLite, on a thread that is failing, after sqliteQuiesce: rolls back, finalizes and closes its
   * connections, whatever state they were left in, so that its locks go with them.
   */
  abandon?(): Promise<void>;
  /**
   * SQLite: ends the statements under way on this driver's connections now (they fail with
   * SQLITE_INTERRUPT), for a thread that must stop before a long one would finish (a
   * verification's full scans, store/verify-worker.ts).
   */
  interrupt?(): void;
}

/**
 * A script transaction built part by part (Driver.script): `next` returns the next part's
 * statements and whether it is the last; it is called while the part before runs in SQLite's
 * thread, so building one part and running the one before take the two cores at once (a large
 * audit group spends as long building its statements as SQLite spends running them). If `next`
 * throws, the transaction is rolled back and the script fails with what it threw. The writer
 * (and the lock the process's writer threads share) is held from the first part to the COMMIT,
 * the building of every part after the first included.
 */
export interface ScriptParts {
  next(): { readonly sql: string; readonly last: boolean };
}

/** What a second writer thread needs to share a SQLite database with the main thread's driver. */
export interface SqliteWriterSettings {
  readonly storage: string;
  readonly synchronous: 'FULL' | 'NORMAL';
  readonly busyTimeoutMs: number;
  /** The WriterLock's shared memory. */
  readonly lock: SharedArrayBuffer;
}

/** Opens the driver over the connections of an already-authenticated Sequelize instance. */
export async function openDriver(sequelize: Sequelize, options: { sqliteStorage?: string; sqliteSynchronous?: 'FULL' | 'NORMAL'; sqliteBusyTimeoutMs?: number } = {}): Promise<Driver> {
  const dialect = sequelize.getDialect();
  if (dialect === 'sqlite') {
    return SqliteDriver.open(sequelize, { storage: options.sqliteStorage ?? '', synchronous: options.sqliteSynchronous ?? 'FULL', busyTimeoutMs: options.sqliteBusyTimeoutMs ?? 10000, lock: WriterLock.buffer() });
  }
  if (dialect === 'postgres') return new PgDriver(sequelize);
  throw new Error(`unsupported dialect ${dialect}`);
}

/**
 * A driver of its own on a SQLite file, for a writer thread other than the main one (the audit
 * worker): its own reader and writer connections, taking turns with the main thread's writer
 * through the shared WriterLock.
 */
export async function openSqliteWriter(settings: SqliteWriterSettings, side: LockSide): Promise<Driver> {
  return SqliteDriver.over(await openSqlite(settings.storage), await openSqlite(settings.storage), undefined, settings, side);
}

/**
 * A driver of its own on a SQLite file whose connections are opened read-only
 * (SQLITE_OPEN_READONLY), for a thread that only reads: the $verify walk (verify-worker.ts). Every
 * write it might run, by mistake or otherwise, fails with SQLITE_READONLY instead of touching the
 * trail it is checking. The file must be in WAL mode already (the server's store put it there):
 * a read-only connection cannot change the journal mode.
 */
export async function openSqliteReadOnly(settings: SqliteWriterSettings): Promise<Driver> {
  return SqliteDriver.over(await openSqlite(settings.storage, true), await openSqlite(settings.storage, true), undefined, settings, 'worker');
}

function openSqlite(storage: string, readOnly = false): Promise<Database> {
  return sqliteOperation<Database>((done) => {
    const db: Database = readOnly ? new sqlite3.Database(storage, sqlite3.OPEN_READONLY, (err) => done(err, db)) : new sqlite3.Database(storage, (err) => done(err, db));
  });
}

// ---------------------------------------------------------------- SQLite

interface SqliteConnectionManager {
  getConnection(options: { uuid: string }): Promise<Database>;
}

/** SQL texts whose prepared statements each SQLite connection keeps. */
export const SQLITE_STATEMENT_CACHE = 256;
/**
 * Prepared statements per SQL text. node-sqlite3 runs one operation at a time per statement
 * object, queueing the rest until the previous one's completion has come back through the event
 * loop; with a single statement for "read by id", every read of a loaded server waited in that
 * queue (measured: the audited read topped out at ~1700 req/s whatever the CPU did, while the
 * writer's fsyncs held threads of the pool). Several statements let several reads be under way.
 * Four were still too few under 50 connections: an AuditEvent search runs three statements in
 * turn, and each waited 2-7 ms in these queues (a statement's completion waits its turn on the
 * busy event loop before the next operation can start), while SQLite had time to spare. With 16,
 * measured side by side on the bench's 100,000-patient store (stop 30): the audited read and the
 * AuditEvent search both ~10% faster (README, Benchmarks).
 */
export const STATEMENTS_PER_SQL = 16;

/**
 * node-sqlite3's operations under way on this thread. A worker thread that stops while one is
 * under way takes the whole process down: the operation's completion calls back into a thread
 * that is gone, and node-sqlite3 aborts ("FATAL ERROR: Error::ThrowAsJavaScriptException
 * napi_throw"; node-sqlite3 issue 1666, and CI saw it on 2026-12-06 when a fault test stopped
 * the audit worker with worker.terminate() during an indexing script). So a worker that has
 * failed refuses new operations and waits for these before it exits (sqliteQuiesce).
 */
const sqliteWork: { underWay: number; refused: Error | undefined } = { underWay: 0, refused: undefined };

/** Starts one node-sqlite3 operation, counted until its callback has run. */
function sqliteOperation<T>(start: (done: (err: Error | null, value?: T) => void) => void): Promise<T> {
  if (sqliteWork.refused) return Promise.reject(sqliteWork.refused);
  sqliteWork.underWay++;
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const done = (err: Error | null, value?: T) => {
      if (settled) return;
      settled = true;
      sqliteWork.underWay--;
      if (err) reject(err);
      else resolve(value as T);
    };
    try {
      start(done);
    } catch (err) {
      done(err instanceof Error ? err : new Error(String(err)));
    }
  });
}

/**
 * Refuses every new node-sqlite3 operation on this thread (they reject with `reason`) and resolves
 * once none is under way, true: from then on the thread can stop without aborting the process.
 * False if some are still under way after `deadlineMs` (one that never completes must not keep a
 * failed thread from stopping).
 */
export async function sqliteQuiesce(reason: Error, deadlineMs = 5000): Promise<boolean> {
  sqliteWork.refused = reason;
  const until = Date.now() + deadlineMs;
  while (sqliteWork.underWay > 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 1));
  return sqliteWork.underWay === 0;
}

/** A completion of an operation handed to a statement. */
type Settle = (err: Error | null, value?: unknown) => void;

interface Prepared {
  readonly statement: Statement;
  /** Operations handed to this statement and not yet completed. */
  busy: number;
  /** Their completions, until each is called (see SqliteConnection.statement). */
  readonly waiting: Set<Settle>;
}

class SqliteConnection implements Queryable {
  // node-sqlite3 runs a statement's operations in order and finalizes after the last one, so
  // an evicted statement still in use finishes its work first.
  private readonly statements = new StatementCache<Prepared[]>(SQLITE_STATEMENT_CACHE, (list) => {
    this.count -= list.length;
    for (const p of list) p.statement.finalize();
  });
  private count = 0;
  constructor(readonly db: Database) {}

  /** Prepared statements held. */
  get cached(): number {
    return this.count;
  }

  /** The least busy statement for this SQL, preparing another while all are busy. */
  private statement(sql: string): Prepared {
    let list = this.statements.get(sql);
    if (!list) {
      list = [];
      this.statements.set(sql, list);
    }
    let best: Prepared | undefined;
    for (const p of list) if (!best || p.busy < best.busy) best = p;
    if (!best || (best.busy > 0 && list.length < STATEMENTS_PER_SQL)) {
      const p: { statement?: Statement; busy: number; waiting: Set<Settle> } = { busy: 0, waiting: new Set() };
      // A statement that fails to prepare (a busy or unreadable schema, an I/O error): without a
      // callback node-sqlite3 emits 'error' on it, which nothing catches, and it drops the
      // operations queued on it without ever calling them back. So they are failed here, and the
      // statement is forgotten (the next use prepares another).
      p.statement = this.db.prepare(sql, (err: Error | null) => {
        if (err) this.prepareFailed(sql, p as Prepared, err);
      });
      best = p as Prepared;
      list.push(best);
      this.count++;
    }
    return best;
  }

  private prepareFailed(sql: string, p: Prepared, err: Error): void {
    const list = this.statements.get(sql);
    const at = list?.indexOf(p) ?? -1;
    if (at >= 0) {
      list!.splice(at, 1);
      this.count--;
    }
    for (const settle of [...p.waiting]) settle(err);
  }

  /** Hands an operation to a prepared statement, counted (sqliteOperation) until it completes or its statement fails to prepare. */
  private use<T>(p: Prepared, operation: (settle: Settle) => void): Promise<T> {
    return sqliteOperation<T>((done) => {
      const settle: Settle = (err, value) => {
        if (!p.waiting.delete(settle)) return;
        p.busy--;
        done(err, value as T);
      };
      p.busy++;
      p.waiting.add(settle);
      operation(settle);
    });
  }
  all<T>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    // An EXPLAIN statement that has run stays active until it is reset (measured: a cached one
    // kept this connection's read snapshot open, so every read after it saw the database as it
    // was): EXPLAINs run one-off, finalized at once.
    if (/^\s*EXPLAIN\b/i.test(sql)) return sqliteOperation<T[]>((done) => this.db.all(sql, params as unknown[], (err: Error | null, rows: T[]) => done(err, rows)));
    if (sqliteWork.refused) return Promise.reject(sqliteWork.refused);
    const p = this.statement(sql);
    return this.use<T[]>(p, (settle) => p.statement.all(params as unknown[], (err: Error | null, rows: T[]) => settle(err, rows)));
  }
  async allPacked<T>(sql: string, params: readonly unknown[], packing: Packing): Promise<T[]> {
    let packed;
    try {
      packed = await this.all<{ m: string; t: string | null }>(packedSql(sql, packing), params);
    } catch (err) {
      // Past SQLite's longest string (a billion bytes: a page of large resources), row by row.
      if ((err as { code?: string }).code === 'SQLITE_TOOBIG') return this.all<T>(sql, params);
      throw err;
    }
    return unpacked<T>(packed[0], packing);
  }
  /** First row. Runs the statement to completion (`all`), so no statement is left active to block COMMIT. */
  async get<T>(sql: string, params: readonly unknown[] = []): Promise<T | undefined> {
    return (await this.all<T>(sql, params))[0];
  }
  run(sql: string, params: readonly unknown[] = []): Promise<number> {
    if (sqliteWork.refused) return Promise.reject(sqliteWork.refused);
    const p = this.statement(sql);
    return this.use<number>(p, (settle) =>
      p.statement.run(params as unknown[], function (this: { changes: number } | undefined, err: Error | null) {
        settle(err, this?.changes);
      }),
    );
  }
  /** Runs one or more statements without parameters (transaction control, pragmas). */
  exec(sql: string): Promise<void> {
    return sqliteOperation<void>((done) => this.db.exec(sql, (err) => done(err)));
  }
  async finalize(): Promise<void> {
    await Promise.all(this.statements.drain().flatMap((list) => list.map((p) => sqliteOperation<void>((done) => p.statement.finalize(() => done(null))).catch(() => undefined))));
    this.count = 0;
  }
  close(): Promise<void> {
    return sqliteOperation<void>((done) => this.db.close(() => done(null))).catch(() => undefined);
  }
  /**
   * After sqliteQuiesce, on a failing thread: rolls back whatever transaction is open, finalizes the
   * statements and closes the connection (so SQLite's locks go with it: a connection left open
   * with a write transaction would hold the database's write lock). Past the refusal: nothing else
   * runs on this thread now.
   */
  async abandon(): Promise<void> {
    await new Promise<void>((resolve) => this.db.exec('ROLLBACK', () => resolve()));
    for (const list of this.statements.drain()) for (const p of list) await new Promise<void>((resolve) => p.statement.finalize(() => resolve()));
    this.count = 0;
    await new Promise<void>((resolve) => this.db.close(() => resolve()));
  }
}

/** A transaction waiting for the writer: a function of the connection, or a script (Driver.script), which runs alone, in one call. */
type QueuedTransaction = ({ fn: (tx: Queryable) => Promise<unknown>; script?: undefined } | { fn?: undefined; script: string | ScriptParts; durable?: boolean }) & {
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
};

/** Most transactions folded into one commit. */
const MAX_GROUP = 256;

/**
 * WAL size (pages) at which a commit checkpoints by itself. SQLite's default of 1000 pages is
 * reached every fraction of a second under audited load, and the commit that reaches it copies
 * the pages into the database file and fsyncs it while every waiting request waits (p99 of an
 * audited read: 200 ms). The background checkpointer keeps the WAL far below this; it stays
 * as the bound should that fall behind.
 */
const WAL_AUTOCHECKPOINT_PAGES = 10000;
/** How often the background checkpointer copies committed pages into the database file. */
const CHECKPOINT_INTERVAL_MS = 200;

class SqliteDriver implements Driver {
  readonly dialect = 'sqlite' as const;
  private readonly queue: QueuedTransaction[] = [];
  private draining = false;
  private idle: Promise<void> = Promise.resolve();

  private checkpointing: Promise<void> | undefined;
  private readonly checkpointTimer: NodeJS.Timeout | undefined;
  private readonly lock: WriterLock;

  private constructor(
    private readonly reader: SqliteConnection,
    private readonly writer: SqliteConnection,
    private readonly checkpointer: SqliteConnection | undefined,
    readonly sqlite: SqliteWriterSettings,
    private readonly side: LockSide,
  ) {
    this.lock = new WriterLock(sqlite.lock, side);
    if (checkpointer) this.checkpointTimer = setInterval(() => this.checkpoint(checkpointer), CHECKPOINT_INTERVAL_MS).unref();
  }

  static async open(sequelize: Sequelize, settings: SqliteWriterSettings): Promise<SqliteDriver> {
    const manager = (sequelize as unknown as { connectionManager: SqliteConnectionManager }).connectionManager;
    const reader = await manager.getConnection({ uuid: 'custodian-reader' });
    const writer = await manager.getConnection({ uuid: 'custodian-writer' });
    const checkpointer = await manager.getConnection({ uuid: 'custodian-checkpoint' });
    return SqliteDriver.over(reader, writer, checkpointer, settings, 'main');
  }

  static async over(reader: Database, writer: Database, checkpointer: Database | undefined, settings: SqliteWriterSettings, side: LockSide): Promise<SqliteDriver> {
    const connections = [writer, reader, ...(checkpointer ? [checkpointer] : [])].map((db) => new SqliteConnection(db));
    // WAL lets readers see the last committed state while the writer works; FULL makes each
    // commit survive power loss, not just a crash (the WAL is synced at every COMMIT; a
    // checkpoint only moves committed pages into the database file).
    for (const conn of connections) {
      await conn.exec(
        `PRAGMA busy_timeout = ${Math.floor(settings.busyTimeoutMs)}; PRAGMA journal_mode = WAL; PRAGMA synchronous = ${settings.synchronous}; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES};`,
      );
    }
    // The audit worker's writer keeps its temporary storage in memory. A statement inside a
    // transaction that may fail part-way (an INSERT of several rows under a UNIQUE index)
    // journals the pages it changes, and past 64 KB (eight 8 KB pages: any audit group of a few
    // events) SQLite spilled that journal to a temporary file, created, written and unlinked at
    // every commit: measured at 2026-11-25, 40% of the worker's pwrite calls. That connection runs
    // only the audit trail's own statements (scripts of at most 500 rows a statement, indexing
    // passes of a few hundred events), so what it holds is bounded. The main writer keeps the
    // default: it also runs searches inside write transactions (conditional writes, a transaction
    // Bundle's GETs), whose `IN (SELECT rid …)` lists can be as large as the store, and those
    // still spill to disk; so do the readers'.
    if (side === 'worker') await connections[0].exec('PRAGMA temp_store = MEMORY;');
    return new SqliteDriver(connections[1], connections[0], connections[2], settings, side);
  }

  /**
   * A PASSIVE checkpoint on a connection of its own: it copies what it can without waiting for
   * (or blocking) the writer and readers, off the commit path.
   */
  private checkpoint(checkpointer: SqliteConnection): void {
    if (this.checkpointing) return;
    this.checkpointing = checkpointer
      .exec('PRAGMA wal_checkpoint(PASSIVE)')
      .catch(() => undefined)
      .finally(() => {
        this.checkpointing = undefined;
      });
  }

  preparedStatements(): number {
    return this.reader.cached + this.writer.cached;
  }
  all<T>(sql: string, params?: readonly unknown[]): Promise<T[]> {
    return this.reader.all<T>(sql, params);
  }
  allPacked<T>(sql: string, params: readonly unknown[], packing: Packing): Promise<T[]> {
    return this.reader.allPacked<T>(sql, params, packing);
  }
  get<T>(sql: string, params?: readonly unknown[]): Promise<T | undefined> {
    return this.reader.get<T>(sql, params);
  }
  /** A write outside an explicit transaction still goes through the writer's queue. */
  run(sql: string, params?: readonly unknown[]): Promise<number> {
    return this.transaction((tx) => tx.run(sql, params));
  }

  /**
   * Group commit. SQLite has one writer, so transactions queue anyway; those that queue while a
   * commit is in progress run together in the next database transaction, each inside its own
   * SAVEPOINT (so one failing rolls back only itself), and share one COMMIT and one fsync.
   * Every caller's promise settles only after that COMMIT.
   */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => this.enqueue({ fn, resolve: resolve as (v: unknown) => void, reject }));
  }

  readonly script = (sql: string | ScriptParts, options: { readonly durable?: boolean } = {}): Promise<void> =>
    new Promise<void>((resolve, reject) => this.enqueue({ script: sql, ...(options.durable === false ? { durable: false } : {}), resolve: () => resolve(), reject }));

  private enqueue(t: QueuedTransaction): void {
    this.queue.push(t);
    if (!this.draining) {
      this.draining = true;
      this.idle = this.drain();
    }
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length) {
        // A script is a transaction of its own; the others are grouped up to the next script.
        let n = 1;
        if (this.queue[0].script === undefined) while (n < this.queue.length && n < MAX_GROUP && this.queue[n].script === undefined) n++;
        await this.commitGroup(this.queue.splice(0, n));
      }
    } finally {
      // Cleared in the same turn as the last empty-queue check, so no transaction is stranded.
      this.draining = false;
    }
  }

  /**
   * One database transaction for the group, under the writer lock this process's writer
   * threads share (see WriterLock).
   */
  private async commitGroup(group: QueuedTransaction[]): Promise<void> {
    await this.lock.acquire();
    try {
      await this.commitLocked(group);
    } finally {
      this.lock.release();
    }
  }

  /**
   * Transaction control statements are sent together (`RELEASE w; SAVEPOINT w` between two
   * transactions, `RELEASE w; COMMIT` after the last): every round trip to the connection waits
   * for a turn of the event loop, which under load is what a commit's latency is made of. A
   * group of one needs no savepoint at all.
   */
  private async commitLocked(group: QueuedTransaction[]): Promise<void> {
    if (group[0].script !== undefined) return this.runScript(group[0], group[0].script);
    const single = group.length === 1;
    const outcomes: ({ ok: true; value: unknown } | { ok: false; error: unknown })[] = [];
    try {
      await this.writer.exec(single ? 'BEGIN IMMEDIATE' : 'BEGIN IMMEDIATE; SAVEPOINT w');
    } catch (err) {
      // BEGIN failed (busy, I/O error); if only the SAVEPOINT did, the transaction is open.
      await this.writer.exec('ROLLBACK').catch(() => undefined);
      for (const t of group) t.reject(err);
      return;
    }
    let broken: unknown;
    for (const [i, t] of group.entries()) {
      if (broken) {
        outcomes.push({ ok: false, error: broken });
        continue;
      }
      const last = i === group.length - 1;
      let outcome: (typeof outcomes)[number];
      try {
        if (!t.fn) throw new Error('a script runs on its own, never in a group (see drain)');
        outcome = { ok: true, value: await t.fn(this.writer) };
      } catch (error) {
        outcome = { ok: false, error };
      }
      outcomes.push(outcome);
      if (single) {
        if (!outcome.ok) broken = outcome.error;
        continue;
      }
      // On failure SQLite may already have rolled the whole transaction back (I/O error, disk
      // full): then ROLLBACK TO fails and nothing of this group survives.
      const undo = outcome.ok ? 'RELEASE w' : 'ROLLBACK TO w; RELEASE w';
      try {
        await this.writer.exec(`${undo}; ${last ? 'COMMIT' : 'SAVEPOINT w'}`);
      } catch (err) {
        broken = err;
      }
    }
    if (single && !broken) {
      try {
        await this.writer.exec('COMMIT');
      } catch (err) {
        broken = err;
      }
    }
    if (broken) {
      await this.writer.exec('ROLLBACK').catch(() => undefined);
      group.forEach((t, i) => t.reject(outcomes[i] && !outcomes[i].ok ? (outcomes[i] as { error: unknown }).error : broken));
      return;
    }
    group.forEach((t, i) => {
      const o = outcomes[i];
      if (o.ok) t.resolve(o.value);
      else t.reject(o.error);
    });
  }

  /**
   * A script transaction: one call to the connection, or one per part (ScriptParts).
   * sqlite3_exec stops at the first statement that fails; a transaction left open (BEGIN ran) is
   * rolled back, and ROLLBACK failing because none is open is no error.
   */
  private async runScript(t: QueuedTransaction, script: string | ScriptParts): Promise<void> {
    const parts: ScriptParts = typeof script === 'string' ? { next: () => ({ sql: script, last: true }) } : script;
    let begun = false;
    // The safety level cannot change inside a transaction: set before BEGIN, set back after COMMIT (or ROLLBACK).
    const lax = t.script !== undefined && t.durable === false && this.sqlite.synchronous !== 'NORMAL';
    const restore = `PRAGMA synchronous = ${this.sqlite.synchronous}`;
    const text = (part: { sql: string; last: boolean }) => {
      const sql = `${begun ? '' : `${lax ? 'PRAGMA synchronous = NORMAL;\n' : ''}BEGIN IMMEDIATE;\n`}${part.sql};${part.last ? `\nCOMMIT${lax ? `;\n${restore}` : ''}` : ''}`;
      // node-sqlite3 passes the script as a C string: a NUL would end it early, before its COMMIT,
      // leaving the transaction open with the caller told it was committed. The search also
      // flattens the joined text in place, so node-sqlite3 copies one string, not a rope of three
      // that it would walk twice (an 800 KB script, measured alone: 0.8-1.1 ms against 1.5-2.0 ms).
      if (sql.includes('\0')) throw new Error('a script cannot hold NUL');
      return sql;
    };
    try {
      let part = parts.next();
      for (;;) {
        const running = this.writer.exec(text(part));
        begun = true;
        if (part.last) {
          await running;
          break;
        }
        let next: typeof part;
        try {
          next = parts.next();
        } catch (err) {
          await running.catch(() => undefined);
          throw err;
        }
        await running;
        part = next;
      }
    } catch (err) {
      if (begun) await this.writer.exec('ROLLBACK').catch(() => undefined);
      if (lax) await this.writer.exec(restore).catch(() => undefined);
      t.reject(err);
      return;
    }
    t.resolve(undefined);
  }

  interrupt(): void {
    for (const conn of [this.writer, this.reader]) conn.db.interrupt();
  }

  /** A worker's connections only (they are its own; the main thread's belong to Sequelize). */
  async abandon(): Promise<void> {
    if (this.side !== 'worker') throw new Error("only a worker's driver is abandoned");
    clearInterval(this.checkpointTimer);
    for (const conn of [this.writer, this.reader]) await conn.abandon();
  }

  async close(): Promise<void> {
    clearInterval(this.checkpointTimer);
    await this.idle;
    await this.checkpointing;
    await this.reader.finalize();
    await this.writer.finalize();
    await this.checkpointer?.finalize();
    // A worker's connections are its own; Sequelize closes the main thread's.
    if (this.side === 'worker') for (const conn of [this.reader, this.writer]) await conn.close();
  }
}

// ---------------------------------------------------------------- PostgreSQL

interface PgConnectionManager {
  getConnection(options?: { type?: 'read' | 'write' }): Promise<PgClient>;
  releaseConnection(connection: PgClient): Promise<void>;
}

/** Statement names handed out per PostgreSQL driver; every SQL text beyond them runs unnamed. */
export const PG_NAMED_STATEMENTS = 200;

interface PgStatement {
  readonly text: string;
  name?: string;
  uses: number;
}

/**
 * `?` placeholders → `$n`, and which SQL texts run as named (prepared once per connection, then
 * only bound and executed) statements. pg keeps a named statement on its connection for the
 * connection's life, and the server backend keeps its plan, so names go only to texts seen
 * more than once and to at most PG_NAMED_STATEMENTS of them: the hot paths get them within a
 * few requests, while search's endless variety of IN lists runs unnamed (parsed each time)
 * instead of filling every connection with statements that never run again.
 */
class PgStatements {
  private readonly texts = new StatementCache<PgStatement>(PG_NAMED_STATEMENTS * 4);
  private named = 0;

  get namedCount(): number {
    return this.named;
  }

  of(sql: string): { name?: string; text: string } {
    let st = this.texts.get(sql);
    if (!st) {
      let n = 0;
      st = { text: sql.replace(/\?/g, () => `$${++n}`), uses: 0 };
      this.texts.set(sql, st);
    }
    st.uses++;
    if (!st.name && st.uses >= 2 && this.named < PG_NAMED_STATEMENTS) {
      st.name = 'c_' + createHash('sha1').update(st.text).digest('hex').slice(0, 16);
      this.named++;
    }
    return st;
  }
}

/**
 * One pooled connection. Statements issued together (Promise.all) are queued here one after
 * another: a pg client runs one query at a time, and pg 9 will refuse to queue them itself.
 */
class PgQueryable implements Queryable {
  private tail: Promise<unknown> = Promise.resolve();
  constructor(
    private readonly client: PgClient,
    private readonly statements: PgStatements,
  ) {}
  private query(sql: string, params: readonly unknown[]) {
    const st = this.statements.of(sql);
    const next = this.tail.then(() => this.client.query(st.name ? { name: st.name, text: st.text, values: params as unknown[] } : { text: st.text, values: params as unknown[] }));
    this.tail = next.catch(() => undefined);
    return next;
  }
  async all<T>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    return (await this.query(sql, params)).rows as T[];
  }
  allPacked<T>(sql: string, params: readonly unknown[]): Promise<T[]> {
    return this.all<T>(sql, params);
  }
  async get<T>(sql: string, params?: readonly unknown[]): Promise<T | undefined> {
    return (await this.all<T>(sql, params))[0];
  }
  async run(sql: string, params: readonly unknown[] = []): Promise<number> {
    return (await this.query(sql, params)).rowCount ?? 0;
  }
}

class PgDriver implements Driver {
  readonly dialect = 'postgres' as const;
  private readonly manager: PgConnectionManager;
  private readonly statements = new PgStatements();
  constructor(sequelize: Sequelize) {
    this.manager = (sequelize as unknown as { connectionManager: PgConnectionManager }).connectionManager;
  }
  preparedStatements(): number {
    return this.statements.namedCount;
  }
  private async with<T>(fn: (q: PgQueryable, client: PgClient) => Promise<T>): Promise<T> {
    const client = await this.manager.getConnection({ type: 'write' });
    try {
      return await fn(new PgQueryable(client, this.statements), client);
    } finally {
      await this.manager.releaseConnection(client);
    }
  }
  all<T>(sql: string, params?: readonly unknown[]): Promise<T[]> {
    return this.with((q) => q.all<T>(sql, params));
  }
  allPacked<T>(sql: string, params: readonly unknown[]): Promise<T[]> {
    return this.all<T>(sql, params);
  }
  get<T>(sql: string, params?: readonly unknown[]): Promise<T | undefined> {
    return this.with((q) => q.get<T>(sql, params));
  }
  run(sql: string, params?: readonly unknown[]): Promise<number> {
    return this.with((q) => q.run(sql, params));
  }
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.with(async (q, client) => {
      await client.query('BEGIN');
      try {
        const value = await fn(q);
        await client.query('COMMIT');
        return value;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    });
  }
  async close(): Promise<void> {
    // The pool belongs to Sequelize; sequelize.close() ends it.
  }
}
