import { createHash } from 'node:crypto';
import type { Sequelize } from 'sequelize';
import type { Database, Statement } from 'sqlite3';
import type { Client as PgClient } from 'pg';

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
  get<T = Row>(sql: string, params?: readonly unknown[]): Promise<T | undefined>;
  /** Runs a statement and returns the number of rows it changed. */
  run(sql: string, params?: readonly unknown[]): Promise<number>;
}

export type Row = Record<string, unknown>;
export type Dialect = 'sqlite' | 'postgres';

export interface Driver extends Queryable {
  readonly dialect: Dialect;
  /**
   * Runs `fn` in one database transaction: committed when it resolves, rolled back when it throws.
   * On SQLite transactions are serialised in-process on a dedicated writer connection and
   * group-committed (see SqliteDriver); on PostgreSQL each gets its own pooled connection.
   */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Opens the driver over the connections of an already-authenticated Sequelize instance. */
export async function openDriver(sequelize: Sequelize, options: { sqliteSynchronous?: 'FULL' | 'NORMAL'; sqliteBusyTimeoutMs?: number } = {}): Promise<Driver> {
  const dialect = sequelize.getDialect();
  if (dialect === 'sqlite') return SqliteDriver.open(sequelize, options.sqliteSynchronous ?? 'FULL', options.sqliteBusyTimeoutMs ?? 10000);
  if (dialect === 'postgres') return new PgDriver(sequelize);
  throw new Error(`unsupported dialect ${dialect}`);
}

// ---------------------------------------------------------------- SQLite

interface SqliteConnectionManager {
  getConnection(options: { uuid: string }): Promise<Database>;
}

class SqliteConnection implements Queryable {
  private readonly statements = new Map<string, Statement>();
  constructor(readonly db: Database) {}

  private statement(sql: string): Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }
  all<T>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    return new Promise((resolve, reject) =>
      this.statement(sql).all(params as unknown[], (err: Error | null, rows: T[]) => (err ? reject(err) : resolve(rows))),
    );
  }
  /** First row. Runs the statement to completion (`all`), so no statement is left active to block COMMIT. */
  async get<T>(sql: string, params: readonly unknown[] = []): Promise<T | undefined> {
    return (await this.all<T>(sql, params))[0];
  }
  run(sql: string, params: readonly unknown[] = []): Promise<number> {
    return new Promise((resolve, reject) =>
      this.statement(sql).run(params as unknown[], function (this: { changes: number }, err: Error | null) {
        if (err) reject(err);
        else resolve(this.changes);
      }),
    );
  }
  /** Runs one or more statements without parameters (transaction control, pragmas). */
  exec(sql: string): Promise<void> {
    return new Promise((resolve, reject) => this.db.exec(sql, (err) => (err ? reject(err) : resolve())));
  }
  async finalize(): Promise<void> {
    await Promise.all([...this.statements.values()].map((st) => new Promise<void>((r) => st.finalize(() => r()))));
    this.statements.clear();
  }
}

interface QueuedTransaction {
  fn: (tx: Queryable) => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/** Most transactions folded into one commit. */
const MAX_GROUP = 256;

class SqliteDriver implements Driver {
  readonly dialect = 'sqlite' as const;
  private readonly queue: QueuedTransaction[] = [];
  private draining = false;
  private idle: Promise<void> = Promise.resolve();

  private constructor(
    private readonly reader: SqliteConnection,
    private readonly writer: SqliteConnection,
  ) {}

  static async open(sequelize: Sequelize, synchronous: 'FULL' | 'NORMAL', busyTimeoutMs: number): Promise<SqliteDriver> {
    const manager = (sequelize as unknown as { connectionManager: SqliteConnectionManager }).connectionManager;
    const reader = new SqliteConnection(await manager.getConnection({ uuid: 'custodian-reader' }));
    const writer = new SqliteConnection(await manager.getConnection({ uuid: 'custodian-writer' }));
    // WAL lets readers see the last committed state while the writer works; FULL makes each
    // commit survive power loss, not just a crash.
    for (const conn of [writer, reader]) {
      await conn.exec(`PRAGMA busy_timeout = ${Math.floor(busyTimeoutMs)}; PRAGMA journal_mode = WAL; PRAGMA synchronous = ${synchronous}; PRAGMA foreign_keys = ON;`);
    }
    return new SqliteDriver(reader, writer);
  }

  all<T>(sql: string, params?: readonly unknown[]): Promise<T[]> {
    return this.reader.all<T>(sql, params);
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
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      if (!this.draining) {
        this.draining = true;
        this.idle = this.drain();
      }
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length) await this.commitGroup(this.queue.splice(0, MAX_GROUP));
    } finally {
      // Cleared in the same turn as the last empty-queue check, so no transaction is stranded.
      this.draining = false;
    }
  }

  private async commitGroup(group: QueuedTransaction[]): Promise<void> {
    const outcomes: ({ ok: true; value: unknown } | { ok: false; error: unknown })[] = [];
    try {
      await this.writer.exec('BEGIN IMMEDIATE');
    } catch (err) {
      for (const t of group) t.reject(err);
      return;
    }
    let broken: unknown;
    for (const t of group) {
      if (broken) {
        outcomes.push({ ok: false, error: broken });
        continue;
      }
      await this.writer.exec('SAVEPOINT w');
      try {
        const value = await t.fn(this.writer);
        await this.writer.exec('RELEASE w');
        outcomes.push({ ok: true, value });
      } catch (error) {
        outcomes.push({ ok: false, error });
        try {
          await this.writer.exec('ROLLBACK TO w; RELEASE w');
        } catch (err) {
          // SQLite rolled the whole transaction back itself (I/O error, disk full): nothing of
          // this group survives.
          broken = err;
        }
      }
    }
    if (!broken) {
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

  async close(): Promise<void> {
    await this.idle;
    await this.reader.finalize();
    await this.writer.finalize();
  }
}

// ---------------------------------------------------------------- PostgreSQL

interface PgConnectionManager {
  getConnection(options?: { type?: 'read' | 'write' }): Promise<PgClient>;
  releaseConnection(connection: PgClient): Promise<void>;
}

const pgTextCache = new Map<string, { name: string; text: string }>();

/** `?` placeholders → `$n`, with a stable statement name so pg prepares each SQL once per connection. */
function pgStatement(sql: string): { name: string; text: string } {
  let st = pgTextCache.get(sql);
  if (!st) {
    let n = 0;
    const text = sql.replace(/\?/g, () => `$${++n}`);
    st = { name: 'c_' + createHash('sha1').update(text).digest('hex').slice(0, 16), text };
    pgTextCache.set(sql, st);
  }
  return st;
}

/**
 * One pooled connection. Statements issued together (Promise.all) are queued here one after
 * another: a pg client runs one query at a time, and pg 9 will refuse to queue them itself.
 */
class PgQueryable implements Queryable {
  private tail: Promise<unknown> = Promise.resolve();
  constructor(private readonly client: PgClient) {}
  private query(sql: string, params: readonly unknown[]) {
    const st = pgStatement(sql);
    const next = this.tail.then(() => this.client.query({ name: st.name, text: st.text, values: params as unknown[] }));
    this.tail = next.catch(() => undefined);
    return next;
  }
  async all<T>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    return (await this.query(sql, params)).rows as T[];
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
  constructor(sequelize: Sequelize) {
    this.manager = (sequelize as unknown as { connectionManager: PgConnectionManager }).connectionManager;
  }
  private async with<T>(fn: (q: PgQueryable, client: PgClient) => Promise<T>): Promise<T> {
    const client = await this.manager.getConnection({ type: 'write' });
    try {
      return await fn(new PgQueryable(client), client);
    } finally {
      await this.manager.releaseConnection(client);
    }
  }
  all<T>(sql: string, params?: readonly unknown[]): Promise<T[]> {
    return this.with((q) => q.all<T>(sql, params));
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
