import { DataTypes, type ModelAttributes, type QueryInterface, type Sequelize, type Transaction } from 'sequelize';
import { pairCode } from '../../resources';
import { paramId } from '../search/param-id';

/**
 * Schema migrations, applied in order at start-up and recorded in `custodian_migrations`.
 * Append new migrations; never edit one that has shipped.
 *
 * Tables:
 * - `resources`: the current version of every resource (one row per type/id, kept after
 *   delete with `deleted = 1`). `rid` is an internal, never-reused row number: search pages
 *   are keyed on it so that concurrent inserts never shift a page.
 * - `resource_versions`: every version ever written. `seq` is the commit sequence: it is
 *   assigned under a lock held until commit, so `seq` order is commit order (the history
 *   feed's cursor relies on this).
 * - `idx_*`: search-index rows of the current version, one table per search-parameter type.
 */
interface Migration {
  readonly id: string;
  up(m: MigrationContext): Promise<void>;
}

interface MigrationContext {
  readonly qi: QueryInterface;
  readonly pg: boolean;
  readonly transaction: Transaction;
  createTable(name: string, attributes: ModelAttributes): Promise<void>;
  addIndex(table: string, fields: string[], name: string, unique?: boolean): Promise<void>;
  sql(statement: string): Promise<void>;
}

const migrations: readonly Migration[] = [
  {
    id: '0001-resources',
    async up(m) {
      const bigId = m.pg ? DataTypes.BIGINT : DataTypes.INTEGER;
      await m.createTable('resources', {
        rid: { type: bigId, primaryKey: true, autoIncrement: true },
        type: { type: DataTypes.STRING(64), allowNull: false },
        id: { type: DataTypes.STRING(64), allowNull: false },
        version_id: { type: DataTypes.INTEGER, allowNull: false },
        last_updated: { type: DataTypes.BIGINT, allowNull: false },
        deleted: { type: DataTypes.SMALLINT, allowNull: false, defaultValue: 0 },
        content: { type: DataTypes.TEXT, allowNull: true },
        created_by: { type: DataTypes.STRING(256), allowNull: true },
        creator_org: { type: DataTypes.STRING(512), allowNull: true },
      });
      await m.addIndex('resources', ['type', 'id'], 'resources_type_id', true);
      await m.addIndex('resources', ['type', 'deleted', 'rid'], 'resources_type_rid');
      await m.addIndex('resources', ['type', 'last_updated'], 'resources_type_updated');

      await m.createTable('resource_versions', {
        // SQLite: INTEGER PRIMARY KEY is the rowid, assigned in insert order by the single writer.
        // PostgreSQL: assigned from commit_seq under a lock held to commit (see store/write.ts).
        seq: { type: m.pg ? DataTypes.BIGINT : DataTypes.INTEGER, primaryKey: true },
        rid: { type: DataTypes.BIGINT, allowNull: false },
        type: { type: DataTypes.STRING(64), allowNull: false },
        id: { type: DataTypes.STRING(64), allowNull: false },
        version_id: { type: DataTypes.INTEGER, allowNull: false },
        last_updated: { type: DataTypes.BIGINT, allowNull: false },
        deleted: { type: DataTypes.SMALLINT, allowNull: false, defaultValue: 0 },
        method: { type: DataTypes.STRING(8), allowNull: false },
        content: { type: DataTypes.TEXT, allowNull: true },
      });
      await m.addIndex('resource_versions', ['type', 'id', 'version_id'], 'versions_type_id_version', true);
      await m.addIndex('resource_versions', ['type', 'seq'], 'versions_type_seq');
      await m.addIndex('resource_versions', ['last_updated'], 'versions_updated');
      if (m.pg) await m.sql('CREATE SEQUENCE IF NOT EXISTS commit_seq');

      const index = async (table: string, columns: ModelAttributes, lookups: string[][]) => {
        await m.createTable(table, {
          rid: { type: DataTypes.BIGINT, allowNull: false },
          type: { type: DataTypes.STRING(64), allowNull: false },
          param: { type: DataTypes.STRING(64), allowNull: false },
          ...columns,
        });
        await m.addIndex(table, ['rid'], `${table}_rid`);
        for (const cols of lookups) await m.addIndex(table, ['type', 'param', ...cols], `${table}_${cols.join('_')}`);
      };
      await index('idx_string', { norm: { type: DataTypes.TEXT, allowNull: false }, exact: { type: DataTypes.TEXT, allowNull: false } }, [['norm']]);
      await index(
        'idx_token',
        {
          system: { type: DataTypes.TEXT, allowNull: true },
          code: { type: DataTypes.TEXT, allowNull: true },
          text: { type: DataTypes.TEXT, allowNull: true },
        },
        [['code', 'system'], ['system']],
      );
      await index('idx_date', { lo: { type: DataTypes.BIGINT, allowNull: false }, hi: { type: DataTypes.BIGINT, allowNull: false } }, [['lo'], ['hi']]);
      await index(
        'idx_reference',
        {
          target_type: { type: DataTypes.STRING(64), allowNull: true },
          target_id: { type: DataTypes.STRING(64), allowNull: true },
          url: { type: DataTypes.TEXT, allowNull: true },
          ident_system: { type: DataTypes.TEXT, allowNull: true },
          ident_value: { type: DataTypes.TEXT, allowNull: true },
        },
        [['target_id', 'target_type'], ['url'], ['ident_value']],
      );
      await index('idx_uri', { uri: { type: DataTypes.TEXT, allowNull: false } }, [['uri']]);
      if (m.pg) {
        // Prefix searches compare ranges of normalised strings: they need byte order, not the locale's.
        for (const [table, column] of [['idx_string', 'norm'], ['idx_string', 'exact'], ['idx_token', 'code'], ['idx_uri', 'uri']]) {
          await m.sql(`ALTER TABLE ${table} ALTER COLUMN ${column} TYPE TEXT COLLATE "C"`);
        }
      }
    },
  },
  {
    id: '0002-assertion-jtis',
    async up(m) {
      // Client-assertion ids seen by the token endpoint, kept until they expire: a replay is
      // refused by every server process sharing the database.
      await m.createTable('assertion_jtis', {
        jti_key: { type: DataTypes.STRING(512), primaryKey: true },
        expires_at: { type: DataTypes.BIGINT, allowNull: false },
      });
      await m.addIndex('assertion_jtis', ['expires_at'], 'assertion_jtis_expires');
    },
  },
  {
    id: '0003-audit-chain',
    async up(m) {
      // One row per stored AuditEvent, in chain order: hash = SHA-256(previous hash, seq, the
      // event's id and stored content). See store/audit-chain.ts.
      await m.createTable('audit_chain', {
        seq: { type: DataTypes.BIGINT, primaryKey: true },
        rid: { type: DataTypes.BIGINT, allowNull: false },
        event_id: { type: DataTypes.STRING(64), allowNull: false },
        prev_hash: { type: DataTypes.STRING(64), allowNull: false },
        hash: { type: DataTypes.STRING(64), allowNull: false },
      });
      await m.addIndex('audit_chain', ['rid'], 'audit_chain_rid', true);
      // A row the health check writes, proving the database (and so the audit trail) accepts writes.
      await m.createTable('custodian_health', {
        id: { type: DataTypes.INTEGER, primaryKey: true },
        checked_at: { type: DataTypes.BIGINT, allowNull: false },
      });
    },
  },
  {
    id: '0004-audit-index-queue',
    async up(m) {
      // AuditEvents the server wrote whose search-index rows are still to be built (see
      // store/audit-index.ts): committed with the events, so a crash loses no indexing work.
      await m.createTable('audit_index_queue', { rid: { type: DataTypes.BIGINT, primaryKey: true } });
    },
  },
  {
    id: '0005-leaner-token-index',
    async up(m) {
      // Every index is paid for on every write (the audit trail writes ~10 token rows per event).
      // System-only token searches (`system|`) read the (type, param, code, system) index instead.
      await m.sql('DROP INDEX idx_token_system');
    },
  },
  {
    id: '0006-keyed-search-index',
    async up(m) {
      // The search index, rebuilt around its lookups: each table's primary key is the lookup
      // key (parameter id, value, rid), clustered on SQLite (WITHOUT ROWID), plus an index on
      // rid for replacing a resource's rows. Half the B-trees per row of 0001's tables, and
      // integer parameter ids instead of repeated type and code strings.
      const c = m.pg ? ' COLLATE "C"' : '';
      const clustered = m.pg ? '' : ' WITHOUT ROWID';
      for (const t of ['idx_string', 'idx_token', 'idx_date', 'idx_reference', 'idx_uri']) await m.sql(`DROP TABLE ${t}`);
      await m.sql(`CREATE TABLE idx_string (pid INTEGER NOT NULL, norm TEXT${c} NOT NULL, exact TEXT${c} NOT NULL, rid BIGINT NOT NULL, PRIMARY KEY (pid, norm, exact, rid))${clustered}`);
      await m.sql(`CREATE TABLE idx_token (pid INTEGER NOT NULL, code TEXT${c} NOT NULL, system TEXT${c} NOT NULL, rid BIGINT NOT NULL, PRIMARY KEY (pid, code, system, rid))${clustered}`);
      await m.sql(`CREATE TABLE idx_date (pid INTEGER NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL, rid BIGINT NOT NULL, PRIMARY KEY (pid, lo, hi, rid))${clustered}`);
      await m.sql(`CREATE TABLE idx_reference (pid INTEGER NOT NULL, ref TEXT${c} NOT NULL, rid BIGINT NOT NULL, PRIMARY KEY (pid, ref, rid))${clustered}`);
      await m.sql(`CREATE TABLE idx_uri (pid INTEGER NOT NULL, uri TEXT${c} NOT NULL, rid BIGINT NOT NULL, PRIMARY KEY (pid, uri, rid))${clustered}`);
      for (const t of ['idx_string', 'idx_token', 'idx_date', 'idx_reference', 'idx_uri']) await m.sql(`CREATE INDEX ${t}_by_rid ON ${t} (rid)`);
      await m.sql('CREATE INDEX idx_date_hi ON idx_date (pid, hi)');
      // Existing resources are re-indexed by Store.open (store/reindex.ts): the rows are derived
      // from their content, and deriving them needs the search parameter code, not SQL.
      await m.createTable('custodian_state', { name: { type: DataTypes.STRING(64), primaryKey: true }, value: { type: DataTypes.TEXT, allowNull: false } });
      await m.sql("INSERT INTO custodian_state (name, value) VALUES ('reindex', 'all')");
      await m.sql('DELETE FROM audit_index_queue');
    },
  },
  {
    id: '0010-export-jobs',
    async up(m) {
      // Bulk Data exports (see store/exports.ts): one row per kick-off, with the snapshot it reads
      // (a commit sequence and its transactionTime), where it has got to, and who is running it
      // (a lease, so several processes share the work and a crashed one's job is resumed).
      await m.createTable('export_jobs', {
        id: { type: DataTypes.STRING(64), primaryKey: true },
        client_id: { type: DataTypes.STRING(256), allowNull: false },
        context: { type: DataTypes.TEXT, allowNull: false },
        level: { type: DataTypes.STRING(16), allowNull: false },
        types: { type: DataTypes.TEXT, allowNull: false },
        since: { type: DataTypes.BIGINT, allowNull: true },
        request: { type: DataTypes.TEXT, allowNull: false },
        status: { type: DataTypes.STRING(16), allowNull: false },
        snapshot_seq: { type: DataTypes.BIGINT, allowNull: false },
        transaction_time: { type: DataTypes.BIGINT, allowNull: false },
        cursor: { type: DataTypes.TEXT, allowNull: false },
        examined: { type: DataTypes.BIGINT, allowNull: false, defaultValue: 0 },
        estimate: { type: DataTypes.BIGINT, allowNull: false, defaultValue: 0 },
        issues: { type: DataTypes.TEXT, allowNull: true },
        error: { type: DataTypes.TEXT, allowNull: true },
        attempts: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
        lease_owner: { type: DataTypes.STRING(64), allowNull: true },
        lease_until: { type: DataTypes.BIGINT, allowNull: false, defaultValue: 0 },
        created_at: { type: DataTypes.BIGINT, allowNull: false },
        updated_at: { type: DataTypes.BIGINT, allowNull: false },
        expires_at: { type: DataTypes.BIGINT, allowNull: true },
      });
      await m.addIndex('export_jobs', ['status', 'lease_until'], 'export_jobs_status');
      // The output, error and deleted files, one row each, written with the audit of what they disclose.
      await m.createTable('export_files', {
        job_id: { type: DataTypes.STRING(64), primaryKey: true },
        part: { type: DataTypes.INTEGER, primaryKey: true },
        kind: { type: DataTypes.STRING(16), allowNull: false },
        type: { type: DataTypes.STRING(64), allowNull: false },
        count: { type: DataTypes.INTEGER, allowNull: false },
        content: { type: DataTypes.TEXT, allowNull: false },
      });
    },
  },
  {
    id: '0010-subscriptions',
    async up(m) {
      // rest-hook Subscriptions (see store/subscriptions.ts): the resource as the client sees it,
      // the parsed channel, the delivery state (consecutive failures, when to try next) and a lease.
      await m.createTable('subscriptions', {
        id: { type: DataTypes.STRING(64), primaryKey: true },
        owner: { type: DataTypes.STRING(256), allowNull: false },
        context: { type: DataTypes.TEXT, allowNull: false },
        version_id: { type: DataTypes.INTEGER, allowNull: false },
        last_updated: { type: DataTypes.BIGINT, allowNull: false },
        content: { type: DataTypes.TEXT, allowNull: false },
        criteria: { type: DataTypes.TEXT, allowNull: false },
        endpoint: { type: DataTypes.TEXT, allowNull: false },
        payload: { type: DataTypes.STRING(64), allowNull: true },
        headers: { type: DataTypes.TEXT, allowNull: false },
        status: { type: DataTypes.STRING(16), allowNull: false },
        error: { type: DataTypes.TEXT, allowNull: true },
        failures: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
        next_attempt_at: { type: DataTypes.BIGINT, allowNull: false, defaultValue: 0 },
        end_at: { type: DataTypes.BIGINT, allowNull: true },
        lease_owner: { type: DataTypes.STRING(64), allowNull: true },
        lease_until: { type: DataTypes.BIGINT, allowNull: false, defaultValue: 0 },
      });
      await m.addIndex('subscriptions', ['owner'], 'subscriptions_owner');
      // The outbox: one row per (Consent version, matching Subscription), inserted in the
      // transaction that wrote the version, kept after delivery as the transmission record.
      await m.createTable('subscription_outbox', {
        id: { type: m.pg ? DataTypes.BIGINT : DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
        subscription_id: { type: DataTypes.STRING(64), allowNull: false },
        subscriber: { type: DataTypes.STRING(256), allowNull: false },
        resource_type: { type: DataTypes.STRING(64), allowNull: false },
        resource_id: { type: DataTypes.STRING(64), allowNull: false },
        version_id: { type: DataTypes.INTEGER, allowNull: false },
        patient_id: { type: DataTypes.STRING(64), allowNull: true },
        event: { type: DataTypes.STRING(8), allowNull: false },
        status: { type: DataTypes.STRING(16), allowNull: false },
        attempts: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
        queued_at: { type: DataTypes.BIGINT, allowNull: false },
        last_attempt_at: { type: DataTypes.BIGINT, allowNull: true },
        delivered_at: { type: DataTypes.BIGINT, allowNull: true },
        last_error: { type: DataTypes.TEXT, allowNull: true },
      });
      await m.addIndex('subscription_outbox', ['subscription_id', 'status', 'id'], 'outbox_subscription');
      await m.addIndex('subscription_outbox', ['resource_type', 'resource_id', 'version_id'], 'outbox_resource');
      await m.addIndex('subscription_outbox', ['status', 'queued_at'], 'outbox_status');
    },
  },
  {
    id: '0020-audit-chain-head',
    async up(m) {
      // The anchored end of the audit chain (see store/audit-chain.ts): one row, moved in the
      // same transaction as every append, so a cut end of the chain stays visible to $verify.
      await m.sql('CREATE TABLE audit_chain_head (id INTEGER PRIMARY KEY, seq BIGINT NOT NULL, hash VARCHAR(64) NOT NULL, links BIGINT NOT NULL)');
      await m.sql(`INSERT INTO audit_chain_head (id, seq, hash, links) VALUES (1, 0, '${'0'.repeat(64)}', 0)`);
      await m.sql(
        'UPDATE audit_chain_head SET seq = (SELECT seq FROM audit_chain ORDER BY seq DESC LIMIT 1), hash = (SELECT hash FROM audit_chain ORDER BY seq DESC LIMIT 1), links = (SELECT COUNT(*) FROM audit_chain) WHERE id = 1 AND EXISTS (SELECT 1 FROM audit_chain)',
      );
    },
  },
  {
    id: '0021-audit-queue-patient',
    async up(m) {
      // The one patient a queued AuditEvent is about ('' none, NULL several): an AuditEvent search
      // for a patient catches up only on the queued events that could match it (store/audit-index.ts).
      await m.sql('ALTER TABLE audit_index_queue ADD COLUMN patient VARCHAR(300)');
      await m.addIndex('audit_index_queue', ['patient', 'rid'], 'audit_index_queue_patient');
    },
  },
  {
    id: '0022-cutovers',
    async up(m) {
      // Where this database changed format (store.ts Cutovers), recorded once, by the migration
      // that first runs (under the migration lock on PostgreSQL): the bare commit sequences handed
      // out as feed cursors so far, and the time from which access tokens carry client_key.
      // (A value already there, from a build that recorded it at start-up, is kept. SQLite needs
      // the WHERE to tell an upsert's ON CONFLICT from a join's ON.)
      await m.sql("INSERT INTO custodian_state (name, value) SELECT 'cutover-sealed-feed-cursors', CAST(COALESCE(MAX(seq), 0) AS TEXT) FROM resource_versions WHERE 1 = 1 ON CONFLICT (name) DO NOTHING");
      await m.sql(`INSERT INTO custodian_state (name, value) VALUES ('cutover-key-bound-tokens', '${Date.now()}') ON CONFLICT (name) DO NOTHING`);
    },
  },
  {
    id: '0023-audit-queue-early',
    async up(m) {
      // Whether a queued AuditEvent's early index rows (patient, date: store/write.ts
      // EARLY_AUDIT_PARAMS) were written with it. Events queued before (and by processes of an
      // older build, which leave the default) have none: a search reading only early rows waits
      // for those alone, found through the partial index.
      await m.sql('ALTER TABLE audit_index_queue ADD COLUMN early SMALLINT NOT NULL DEFAULT 0');
      await m.sql('CREATE INDEX audit_index_queue_late ON audit_index_queue (patient, rid) WHERE early = 0');
    },
  },
  {
    id: '0024-audit-queue-patient-index-late-only',
    async up(m) {
      // Queued events with early rows are found by patient through idx_reference (their own
      // `patient` rows), entries without through audit_index_queue_late: the full (patient, rid)
      // index only cost every audit commit a page write at a random place, one per event.
      await m.sql('DROP INDEX IF EXISTS audit_index_queue_patient');
    },
  },
  {
    id: '0025-audit-journal',
    async up(m) {
      // The audit worker's journal (SQLite; see store/audit-journal.ts): the trail's own events as
      // committed before their responses, whole and chained (seq, prev_hash, hash are their chain
      // links), moved into resources, history, index queue, early index rows and audit_chain
      // later, in one transaction that deletes them from here. `patient`, `early`: the index queue's
      // columns. `refs`/`dates`: the early index rows, as JSON arrays of [pid, ref] and
      // [pid, lo, hi]; NULL when the event has none.
      // SQLite: INTEGER PRIMARY KEY is the rowid, so a row is one B-tree entry.
      await m.sql(
        `CREATE TABLE audit_journal (seq ${m.pg ? 'BIGINT' : 'INTEGER'} PRIMARY KEY, id VARCHAR(64) NOT NULL, last_updated BIGINT NOT NULL, content TEXT NOT NULL, created_by VARCHAR(256), creator_org VARCHAR(512), patient VARCHAR(300), early SMALLINT NOT NULL, refs TEXT, dates TEXT, prev_hash VARCHAR(64) NOT NULL, hash VARCHAR(64) NOT NULL)`,
      );
    },
  },
  {
    id: '0026-audit-journal-frames',
    async up(m) {
      // The events of a request about many patients are journaled as frames and bodies (see
      // store/audit-frame.ts): a frame, the JSON they all share, is stored once here, keyed by the
      // seq of its first event; their journal rows name it (`frame`) and hold only their bodies in
      // `content`. A row without a frame holds its whole JSON, as before.
      await m.sql(`CREATE TABLE audit_journal_frame (id ${m.pg ? 'BIGINT' : 'INTEGER'} PRIMARY KEY, head TEXT NOT NULL, tail TEXT NOT NULL)`);
      await m.sql(`ALTER TABLE audit_journal ADD COLUMN frame ${m.pg ? 'BIGINT' : 'INTEGER'}`);
    },
  },
  {
    id: '0027-resource-patients',
    async up(m) {
      // The patients a current row's content is about (its type's patientIds when it was
      // written, see store/records.ts patientsColumn), so that a search page can be decided and
      // audited without parsing every resource. NULL means not kept (rows written before this,
      // and AuditEvents): such rows are parsed for it.
      await m.sql('ALTER TABLE resources ADD COLUMN patients TEXT');
    },
  },
  {
    id: '0028-audit-journal-patients',
    async up(m) {
      // The `resources.patients` column of a journaled event (AuditEvents keep it since this
      // migration, see store/records.ts patientsColumn), moved with it. NULL in rows journaled
      // before: those events are parsed for it, as before.
      await m.sql('ALTER TABLE audit_journal ADD COLUMN patients TEXT');
    },
  },
  {
    id: '0029-reference-date-index',
    async up(m) {
      // A resource's reference and date rows of its type's reference-date pairs, together (see
      // ResourceDefinition.referenceDatePairs and store/index-rows.ts): `AuditEvent?patient=…&
      // date=…&_sort=-date` reads one range of this table in date order instead of probing the
      // date row of each of the patient's events. Clustered like the other index tables, with an
      // index on rid for replacing and verifying a resource's rows. Filled here from the rows
      // already stored (AuditEvents' `patient` and `date`); an event still queued for indexing
      // or in the journal gets its rows when they are written. A pair added later needs a
      // migration of its own that fills it.
      const c = m.pg ? ' COLLATE "C"' : '';
      await m.sql(`CREATE TABLE idx_ref_date (pid INTEGER NOT NULL, ref TEXT${c} NOT NULL, hi BIGINT NOT NULL, lo BIGINT NOT NULL, rid BIGINT NOT NULL, PRIMARY KEY (pid, ref, hi, lo, rid))${m.pg ? '' : ' WITHOUT ROWID'}`);
      await m.sql('CREATE INDEX idx_ref_date_by_rid ON idx_ref_date (rid)');
      const pair = { reference: 'patient', date: 'date' };
      await m.sql(
        `INSERT INTO idx_ref_date (pid, ref, hi, lo, rid) SELECT ${paramId('AuditEvent', pairCode(pair))}, x.ref, d.hi, d.lo, x.rid FROM idx_reference x JOIN idx_date d ON d.rid = x.rid AND d.pid = ${paramId('AuditEvent', pair.date)} WHERE x.pid = ${paramId('AuditEvent', pair.reference)}`,
      );
    },
  },
  {
    id: '0030-token-case-folding',
    async up(m) {
      // Token parameters over string elements and ContactPoints (AuditEvent altid and site,
      // Patient email, phone, telecom) now index their codes lower-cased, as the spec makes such
      // searches case-insensitive (search/extract.ts foldsCase). Rows already stored keep their
      // case, so Store.open rebuilds the index from content (store/reindex.ts), as 0006 asked.
      await m.sql("INSERT INTO custodian_state (name, value) VALUES ('reindex', 'all') ON CONFLICT (name) DO NOTHING");
    },
  },
  {
    id: '0031-name-and-address-words',
    async up(m) {
      // A Patient's names and addresses are now also indexed word by word (search/extract.ts
      // matchesWords), so `family=jones` finds Smith-Jones: Store.open rebuilds the Patients'
      // index rows (store/reindex.ts), not the whole trail's. Any other rebuild already asked
      // becomes one of everything, which covers both.
      await m.sql("INSERT INTO custodian_state (name, value) VALUES ('reindex', 'types:Patient') ON CONFLICT (name) DO UPDATE SET value = CASE WHEN custodian_state.value = 'types:Patient' THEN 'types:Patient' ELSE 'all' END");
    },
  },
];

/** Ids of all migrations, in order (for the health report and tests). */
export const migrationIds: readonly string[] = migrations.map((m) => m.id);

/**
 * Applies the migrations that have not run yet, all in one transaction (DDL is
 * transactional on both engines). On PostgreSQL a transaction-scoped advisory lock makes
 * several processes starting at once apply each migration exactly once.
 */
export async function migrate(sequelize: Sequelize): Promise<string[]> {
  const qi = sequelize.getQueryInterface();
  const pg = sequelize.getDialect() === 'postgres';
  const applied: string[] = [];
  await sequelize.transaction(async (transaction) => {
    if (pg) await sequelize.query('SELECT pg_advisory_xact_lock(727000)', { transaction });
    await qi.createTable(
      'custodian_migrations',
      { id: { type: DataTypes.STRING(128), primaryKey: true }, applied_at: { type: DataTypes.BIGINT, allowNull: false } },
      { transaction },
    );
    const [rows] = await sequelize.query('SELECT id FROM custodian_migrations', { transaction });
    const done = new Set((rows as { id: string }[]).map((r) => r.id));
    const context: MigrationContext = {
      qi,
      pg,
      transaction,
      createTable: (name, attributes) => qi.createTable(name, attributes, { transaction }),
      addIndex: (table, fields, name, unique = false) => qi.addIndex(table, fields, { name, unique, transaction }),
      sql: async (statement) => {
        await sequelize.query(statement, { transaction });
      },
    };
    for (const m of migrations) {
      if (done.has(m.id)) continue;
      await m.up(context);
      await sequelize.query('INSERT INTO custodian_migrations (id, applied_at) VALUES (?, ?)', { replacements: [m.id, Date.now()], transaction });
      applied.push(m.id);
    }
  });
  return applied;
}
