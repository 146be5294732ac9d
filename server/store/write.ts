import type { AuditEvent, Resource } from 'fhir/r4';
import type { ResourceType } from '../../resources';
import { extractIndexRows, referenceKeys, type IndexRows } from '../search/extract';
import { paramId } from '../search/param-id';
import type { AuditFrame, AuditFramer, Framed } from './audit-frame';
import { appendLinks, chainLinks, chainTail, insertLinks, type ChainTail, type PendingLink } from './audit-chain';
import type { Dialect, Driver, Queryable } from './driver';
import { INDEX_TABLES, indexRowValues } from './index-rows';
import { fromCurrentRow, patientsColumn, type CurrentRow, type StoredVersion } from './records';

/** Who is writing: recorded server-side on create (the custodian rule for Patients without managingOrganization). */
export interface Writer {
  readonly clientId: string | null;
  readonly organization: string | null;
}

interface PendingVersion {
  rid: number;
  type: ResourceType;
  id: string;
  versionId: number;
  lastUpdated: number;
  deleted: boolean;
  method: 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  content: string | null;
}

const CURRENT_COLUMNS = 'rid, type, id, version_id, last_updated, deleted, content, created_by, creator_org, patients';

/** A resource as stored: meta.versionId and meta.lastUpdated set, `resourceType`, `id` and `meta` first. */
function withMeta(resource: Resource, versionId: number, lastUpdated: number): Resource {
  const { resourceType, id, meta, ...rest } = resource;
  return { resourceType, id, meta: { ...meta, versionId: String(versionId), lastUpdated: new Date(lastUpdated).toISOString() }, ...rest } as Resource;
}

/** An AuditEvent ready to be stored as version 1: its id, its meta.lastUpdated and its stored JSON text. */
export interface SerializedAuditEvent {
  readonly id: string;
  readonly lastUpdated: number;
  /** Exactly what is stored in `resources.content`, and so what the chain hashes. */
  readonly content: string;
  /** Its key in the index queue's `patient` column (see queueKey). */
  readonly patient: string | null;
  /**
   * Its `resources.patients` column (store/records.ts patientsColumn), with its early rows only:
   * like them, it is left out of the events of a request about many patients (a page of a walk,
   * an export file), where computing and journaling it cost the Consent walk ~6% (measured side
   * by side, stop 24); searches parse those events instead, as before.
   */
  readonly patients: string | null;
  /** Its early index rows (see EARLY_AUDIT_PARAMS), written with it; absent when all its rows wait (see EARLY_ROWS_MAX_EVENTS). */
  readonly early?: IndexRows;
  /** How the journal keeps it when it is one of many of a request (store/audit-frame.ts): `content` is made of these. */
  readonly framed?: Framed;
}

/**
 * The AuditEvent search parameters whose index rows the audit trail's own events get at once,
 * in the transaction that stores them, ahead of the rest (store/audit-index.ts): who the event
 * is about and when it was recorded, what an auditor or a patient's access report asks first.
 * A search that reads no other index rows need not wait for the deferred indexing of the
 * events queued since (AuditIndex.catchUp). Two rows per event; the other twenty-odd wait.
 */
export const EARLY_AUDIT_PARAMS: ReadonlySet<string> = new Set(['patient', 'date']);

/**
 * Early rows go with the events of a request that produced at most this many (it touched a few
 * patients: a read, a patient's search). A request touching many (a page of a Consent walk or
 * of the feed, an export file, a search across patients) has all of its events' rows built
 * later, as before early rows: each early `patient` row lands at its own page of the large
 * idx_reference, and at a thousand events a commit that cost the bulk walks 15-25% (measured
 * side by side). Its queue entries say so (`early = 0`), and searches for one of its patients
 * index them first (store/audit-index.ts).
 */
export const EARLY_ROWS_MAX_EVENTS = 8;

/** Whether the events of a request that produced `requestEvents` of them get early rows (EARLY_ROWS_MAX_EVENTS). */
export function earlyRowsFor(requestEvents: number): boolean {
  return requestEvents <= EARLY_ROWS_MAX_EVENTS;
}

/** An AuditEvent's early index rows (EARLY_AUDIT_PARAMS) and, from them, its index queue key. */
function earlyRows(event: Resource, localBase: string | undefined): { early: IndexRows; patient: string | null } {
  const early = extractIndexRows('AuditEvent', event, localBase, EARLY_AUDIT_PARAMS);
  return { early, patient: queueKey(early.reference.filter((r) => r.param === 'patient').map((r) => r.ref)) };
}

/**
 * What the index queue keeps of an AuditEvent waiting to be indexed: the index key of the one
 * patient its `patient` search parameter gives ('Patient/123'), '' when it gives none, null when
 * several. Entries of older builds (without early rows) are found by patient through it; this
 * build's through their early `patient` rows (store/audit-index.ts queueScopes).
 */
function queueKey(keys: readonly string[]): string | null {
  const unique = [...new Set(keys)];
  return unique.length === 0 ? '' : unique.length === 1 ? unique[0] : null;
}

/** The queue key (queueKey) of an event queued without early rows. */
function queuedPatient(event: Resource, localBase: string | undefined): string | null {
  return queueKey(referenceKeys('AuditEvent', 'patient', event, localBase));
}

/**
 * Version 1 of an AuditEvent (whose id is set) as create() would store it, with its early rows
 * unless `early` is false (see EARLY_ROWS_MAX_EVENTS). The audit trail's events are serialised
 * by the thread that built them and stored by another (audit-worker.ts). With the `framer` of
 * its request's events, its frame and body too, when it can be framed (store/audit-frame.ts).
 */
export function serializeAuditEvent(event: AuditEvent, lastUpdated: number, localBase: string | undefined, early = true, framer?: AuditFramer): SerializedAuditEvent {
  let framed: ReturnType<AuditFramer['frame']>;
  try {
    framed = framer?.frame(event, lastUpdated);
  } catch {
    framed = undefined; // stored whole instead: JSON.stringify below says whether it can be
  }
  const content = framed?.content ?? JSON.stringify(withMeta(event, 1, lastUpdated));
  const rows = early ? earlyRows(event, localBase) : { patient: queuedPatient(event, localBase) };
  return { id: event.id!, lastUpdated, content, patients: early ? patientsColumn('AuditEvent', event, 1) : null, ...rows, ...(framed ? { framed: { frame: framed.frame, body: framed.body } } : {}) };
}

/**
 * The content a history row keeps. AuditEvents are append-only, so their one version's content
 * is the current row's (which the chain covers): their history rows keep only the commit
 * sequence, and history reads take the content from `resources` (see store/read.ts).
 */
function historyContent(type: ResourceType, content: string | null): string | null {
  return type === 'AuditEvent' ? null : content;
}

/**
 * The write side of the versioned store: one instance per database transaction.
 *
 * A version, its history row and its index rows commit together or not at all (DESIGN.md
 * invariant 4). A history row's `seq` (the commit sequence) is in commit order on both engines:
 * see record() and flush().
 */
export class WriteTx {
  private readonly pending: PendingVersion[] = [];
  private readonly links: PendingLink[] = [];
  private lastStamp = 0;

  constructor(
    readonly q: Queryable,
    private readonly dialect: Dialect,
    private readonly now: () => number,
    private readonly localBase: string | undefined,
  ) {}

  /**
   * The current row of a resource, locked for the rest of the transaction on PostgreSQL
   * (SQLite transactions are already serialised). Concurrent updates of one resource therefore
   * queue here and each sees the version the previous one wrote.
   */
  async current(type: ResourceType, id: string): Promise<StoredVersion | undefined> {
    const lock = this.dialect === 'postgres' ? ' FOR UPDATE' : '';
    const row = await this.q.get<CurrentRow>(`SELECT ${CURRENT_COLUMNS} FROM resources WHERE type = ? AND id = ?${lock}`, [type, id]);
    return row ? fromCurrentRow(row) : undefined;
  }

  /**
   * Serialises transactions that use the same key until they commit (PostgreSQL advisory lock;
   * a no-op on SQLite, where writers are serialised already). Used where a row to lock may not
   * exist yet: create-on-update with a client id, conditional create and update.
   */
  async lockKey(key: string): Promise<void> {
    if (this.dialect === 'postgres') await this.q.run('SELECT pg_advisory_xact_lock(hashtext(?))', [key]);
  }

  /** A timestamp for a new version: the clock, but never earlier than the last one of this transaction. */
  private stamp(): number {
    this.lastStamp = Math.max(this.now(), this.lastStamp);
    return this.lastStamp;
  }

  /** Stores version 1 of a new resource; `resource.id` must already be set. */
  async create(type: ResourceType, resource: Resource, writer: Writer): Promise<StoredVersion> {
    const id = resource.id!;
    const lastUpdated = this.stamp();
    const stored = withMeta(resource, 1, lastUpdated);
    const content = JSON.stringify(stored);
    const row = await this.q.get<{ rid: number | string }>(
      'INSERT INTO resources (type, id, version_id, last_updated, deleted, content, created_by, creator_org, patients) VALUES (?, ?, 1, ?, 0, ?, ?, ?, ?) RETURNING rid',
      [type, id, lastUpdated, content, writer.clientId, writer.organization, patientsColumn(type, stored, 1)],
    );
    const rid = Number(row!.rid);
    await Promise.all([this.writeIndex(rid, type, stored, false), this.record({ rid, type, id, versionId: 1, lastUpdated, deleted: false, method: 'POST', content: historyContent(type, content) })]);
    // Every AuditEvent, however it arrives, joins the tamper-evident chain in this transaction.
    if (type === 'AuditEvent') this.links.push({ rid, id, content });
    return { rid, type, id, versionId: 1, lastUpdated, deleted: false, resource: stored, createdBy: writer.clientId, creatorOrg: writer.organization };
  }

  /**
   * Stores version 1 of many new resources of one type with a handful of multi-row statements
   * (bulk seeding, and the audit trail on PostgreSQL): per-row statements cost a round trip each.
   */
  async createMany(type: ResourceType, resources: readonly Resource[], writer: Writer, options: { deferIndex?: boolean } = {}): Promise<StoredVersion[]> {
    if (resources.length === 0) return [];
    const prepared = this.prepareMany(type, resources);
    const rids = await this.insertCurrentMany(type, prepared, writer);
    const versions = prepared.map((p) => ({ rid: rids.get(p.id)!, type, id: p.id, versionId: 1, lastUpdated: p.lastUpdated, deleted: false, method: 'POST' as const, content: historyContent(type, p.content) }));
    if (options.deferIndex && type === 'AuditEvent') {
      // The audit trail's own events: stored and chained now, indexed by the AuditIndexer soon
      // after (and always before an AuditEvent search runs).
      // Disclosures of an export file, about many patients: indexed entirely later (EARLY_ROWS_MAX_EVENTS).
      const queued = versions.map((v, i) => ({ rid: v.rid, patient: queuedPatient(prepared[i].stored, this.localBase), early: false }));
      await Promise.all(this.queueForIndexing(queued));
    } else {
      await insertIndexRowsMany(this.q, versions.map((v, i) => ({ rid: v.rid, type, rows: extractIndexRows(type, prepared[i].stored, this.localBase) })));
    }
    if (this.dialect === 'postgres') this.pending.push(...versions);
    else await Promise.all(this.insertVersionsNow(versions));
    if (type === 'AuditEvent') for (const [i, v] of versions.entries()) this.links.push({ rid: v.rid, id: v.id, content: prepared[i].content });
    return versions.map((v, i) => ({ rid: v.rid, type, id: v.id, versionId: 1, lastUpdated: v.lastUpdated, deleted: false, resource: prepared[i].stored, createdBy: writer.clientId, creatorOrg: writer.organization }));
  }

  /**
   * The audit trail's own events (each already has its id): stored, chained, and queued for
   * deferred indexing (see AuditIndexer).
   */
  async appendAuditEvents(events: readonly AuditEvent[], writer: Writer, early?: readonly boolean[]): Promise<void> {
    await this.appendSerialized(
      events.map((e, i) => serializeAuditEvent(e, this.stamp(), this.localBase, early?.[i] ?? earlyRowsFor(events.length))),
      writer,
    );
  }

  /**
   * appendAuditEvents for events already serialised (the audit worker receives them so).
   *
   * Statements that do not depend on each other go together: the events with the chain's tail,
   * then their history rows, queue entries and links. On PostgreSQL the history rows and links
   * wait for flush(), which takes the chain lock last, just before COMMIT.
   */
  async appendSerialized(events: readonly SerializedAuditEvent[], writer: Writer): Promise<void> {
    if (events.length === 0) return;
    for (const e of events) this.lastStamp = Math.max(this.lastStamp, e.lastUpdated);
    const sqlite = this.dialect === 'sqlite';
    const [rids, tail] = await Promise.all([this.insertCurrentMany('AuditEvent', events, writer), sqlite ? chainTail(this.q, this.dialect) : undefined]);
    const versions = events.map((e) => ({ rid: rids.get(e.id)!, type: 'AuditEvent' as const, id: e.id, versionId: 1, lastUpdated: e.lastUpdated, deleted: false, method: 'POST' as const, content: null }));
    const links = events.map((e, i) => ({ rid: versions[i].rid, id: e.id, content: e.content }));
    const queued = events.map((e, i) => ({ rid: versions[i].rid, patient: e.patient, early: e.early !== undefined }));
    const early = insertIndexRowsMany(this.q, events.flatMap((e, i) => (e.early ? [{ rid: versions[i].rid, type: 'AuditEvent' as const, rows: e.early }] : [])));
    if (!sqlite) {
      this.pending.push(...versions);
      this.links.push(...links);
      await Promise.all([...this.queueForIndexing(queued), early]);
      return;
    }
    await Promise.all([...this.insertVersionsNow(versions), ...this.queueForIndexing(queued), early, insertLinks(this.q, tail!, links)]);
  }

  private prepareMany(type: ResourceType, resources: readonly Resource[]): { id: string; lastUpdated: number; stored: Resource; content: string; patients: string }[] {
    return resources.map((r) => {
      const lastUpdated = this.stamp();
      const stored = withMeta(r, 1, lastUpdated);
      return { id: r.id!, lastUpdated, stored, content: JSON.stringify(stored), patients: patientsColumn(type, stored, 1) };
    });
  }

  /**
   * Current rows of new resources; their rids by id. `patients` is the patientsColumn of each
   * (or NULL, for the audit trail's events of a request about many patients).
   */
  private async insertCurrentMany(
    type: ResourceType,
    prepared: readonly { id: string; lastUpdated: number; content: string; patients: string | null }[],
    writer: Writer,
  ): Promise<Map<string, number>> {
    const rids = new Map<string, number>();
    for (const chunk of chunks(prepared, 500)) {
      const rows = await this.q.all<{ rid: number | string; id: string }>(
        `INSERT INTO resources (type, id, version_id, last_updated, deleted, content, created_by, creator_org, patients) VALUES ${chunk.map(() => '(?, ?, 1, ?, 0, ?, ?, ?, ?)').join(', ')} RETURNING rid, id`,
        chunk.flatMap((p) => [type, p.id, p.lastUpdated, p.content, writer.clientId, writer.organization, p.patients]),
      );
      for (const row of rows) rids.set(row.id, Number(row.rid));
    }
    return rids;
  }

  /**
   * SQLite history rows, inserted at once (see record()): the one writer assigns their rowids
   * (seq) in insert order, so chunks of 500 go one after another.
   */
  private insertVersionsNow(versions: readonly PendingVersion[]): Promise<void>[] {
    return [
      (async () => {
        for (const chunk of chunks(versions, 500)) {
          await this.q.run(`INSERT INTO resource_versions (rid, type, id, version_id, last_updated, deleted, method, content) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`, chunk.flatMap(versionParams));
        }
      })(),
    ];
  }

  /** Index queue entries of AuditEvents, saying whether their early rows are written with them. */
  private queueForIndexing(events: readonly { rid: number; patient: string | null; early: boolean }[]): Promise<number>[] {
    return [...chunks(events, 500)].map((chunk) =>
      this.q.run(`INSERT INTO audit_index_queue (rid, patient, early) VALUES ${chunk.map(() => '(?, ?, ?)').join(', ')}`, chunk.flatMap((e) => [e.rid, e.patient, e.early ? 1 : 0])),
    );
  }

  /** Stores the next version of an existing (possibly deleted) resource. */
  async update(previous: StoredVersion, resource: Resource, method: 'PUT' | 'PATCH'): Promise<StoredVersion> {
    if (previous.type === 'AuditEvent') throw new Error('AuditEvents are append-only');
    const versionId = previous.versionId + 1;
    const lastUpdated = Math.max(this.stamp(), previous.lastUpdated);
    const stored = withMeta(resource, versionId, lastUpdated);
    const content = JSON.stringify(stored);
    const changed = await this.q.run('UPDATE resources SET version_id = ?, last_updated = ?, deleted = 0, content = ?, patients = ? WHERE rid = ? AND version_id = ?', [
      versionId,
      lastUpdated,
      content,
      patientsColumn(previous.type, stored, versionId),
      previous.rid,
      previous.versionId,
    ]);
    if (changed !== 1) throw new Error(`concurrent write to ${previous.type}/${previous.id} slipped past the row lock`);
    await Promise.all([
      this.writeIndex(previous.rid, previous.type, stored, true),
      this.record({ rid: previous.rid, type: previous.type, id: previous.id, versionId, lastUpdated, deleted: false, method, content }),
    ]);
    // Neither the text nor the patients of the version it replaces.
    return { ...previous, versionId, lastUpdated, deleted: false, resource: stored, text: undefined, patients: undefined };
  }

  /** Records a deletion as a new version; the resource leaves every search index. */
  async delete(previous: StoredVersion): Promise<StoredVersion> {
    if (previous.type === 'AuditEvent') throw new Error('AuditEvents are append-only');
    const versionId = previous.versionId + 1;
    const lastUpdated = Math.max(this.stamp(), previous.lastUpdated);
    const changed = await this.q.run('UPDATE resources SET version_id = ?, last_updated = ?, deleted = 1, content = NULL, patients = NULL WHERE rid = ? AND version_id = ?', [
      versionId,
      lastUpdated,
      previous.rid,
      previous.versionId,
    ]);
    if (changed !== 1) throw new Error(`concurrent write to ${previous.type}/${previous.id} slipped past the row lock`);
    await Promise.all([
      this.clearIndex(previous.rid),
      this.record({ rid: previous.rid, type: previous.type, id: previous.id, versionId, lastUpdated, deleted: true, method: 'DELETE', content: null }),
    ]);
    return { ...previous, versionId, lastUpdated, deleted: true, resource: undefined, text: undefined, patients: undefined };
  }

  private async clearIndex(rid: number): Promise<void> {
    // Independent statements are issued together: the driver pipelines them on the connection.
    await Promise.all(INDEX_TABLES.map((table) => this.q.run(`DELETE FROM ${table} WHERE rid = ?`, [rid])));
  }

  private async writeIndex(rid: number, type: ResourceType, resource: Resource, replace: boolean): Promise<void> {
    if (replace) await this.clearIndex(rid);
    const rows = extractIndexRows(type, resource, this.localBase);
    await insertIndexRows(this.q, rid, type, rows);
  }

  /**
   * Records a version in history. On SQLite the row is inserted at once: its rowid (`seq`) is
   * assigned in insert order by the one writer, which is commit order. On PostgreSQL it is
   * buffered until flush(), just before COMMIT.
   */
  private async record(version: PendingVersion): Promise<void> {
    if (this.dialect === 'postgres') {
      this.pending.push(version);
      return;
    }
    await this.q.run('INSERT INTO resource_versions (rid, type, id, version_id, last_updated, deleted, method, content) VALUES (?, ?, ?, ?, ?, ?, ?, ?)', versionParams(version));
  }

  /**
   * PostgreSQL: inserts the buffered history rows under an advisory lock that is held until
   * COMMIT, taking their `seq` from commit_seq, so `seq` order is commit order across processes.
   * Taking the lock last (after every row lock of the transaction) cannot deadlock.
   */
  async flush(): Promise<void> {
    await appendLinks(this.q, this.dialect, this.links.splice(0));
    if (this.pending.length === 0) return;
    await this.q.run('SELECT pg_advisory_xact_lock(727001)');
    for (const chunk of chunks(this.pending, 200)) {
      const values = chunk.map(() => "(nextval('commit_seq'), ?, ?, ?, ?, ?, ?, ?, ?)").join(', ');
      await this.q.run(`INSERT INTO resource_versions (seq, rid, type, id, version_id, last_updated, deleted, method, content) VALUES ${values}`, chunk.flatMap(versionParams));
    }
    this.pending.length = 0;
  }
}

function versionParams(v: PendingVersion): unknown[] {
  return [v.rid, v.type, v.id, v.versionId, v.lastUpdated, v.deleted ? 1 : 0, v.method, v.content];
}

function* chunks<T>(items: readonly T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}

/** Multi-row inserts of a resource's index rows, one statement per table, issued together. */
export function insertIndexRows(q: Queryable, rid: number, type: ResourceType, rows: IndexRows): Promise<void> {
  return insertIndexRowsMany(q, [{ rid, type, rows }]);
}

/** Index rows of many resources: one multi-row statement per table (per chunk), issued together. */
export async function insertIndexRowsMany(q: Queryable, entries: readonly { rid: number; type: ResourceType; rows: IndexRows }[]): Promise<void> {
  const statements: Promise<number>[] = [];
  for (const { table, columns, values } of indexRowValues(entries)) {
    // SQLite allows 32766 parameters per statement. A key already present (the same value
    // reached twice, e.g. an identifier's text) is one row.
    for (const chunk of chunks(values, Math.floor(30000 / columns.length))) {
      const placeholders = chunk.map(() => `(${columns.map(() => '?').join(', ')})`).join(', ');
      statements.push(q.run(`INSERT INTO ${table} (${columns.join(', ')}) VALUES ${placeholders} ON CONFLICT DO NOTHING`, chunk.flat()));
    }
  }
  await Promise.all(statements);
}

/**
 * SQLite: the statements of insertIndexRowsMany as literals, for Driver.script (one call to the
 * connection, no values bound one by one through node-sqlite3: measured on the audit worker's
 * indexing passes, binding them took ~65 µs of JavaScript per AuditEvent). Throws (literal) on a
 * value a literal cannot hold; the caller then binds them instead.
 */
export function indexRowsScript(entries: readonly { rid: number; type: ResourceType; rows: IndexRows }[]): string[] {
  const statements: string[] = [];
  for (const { table, columns, values } of indexRowValues(entries)) {
    for (const chunk of chunks(values, 500)) {
      statements.push(`INSERT INTO ${table} (${columns.join(', ')}) VALUES ${chunk.map((row) => `(${row.map((v) => literal((v ?? null) as string | number | null)).join(', ')})`).join(',\n')} ON CONFLICT DO NOTHING`);
    }
  }
  return statements;
}

/**
 * A SQL literal: strings quoted (SQLite doubles a quote inside one; nothing else is special),
 * integers as digits, null as NULL. Anything else, and a string holding NUL (which would end
 * the script early), is refused: literals are built only from values the server made.
 */
export function literal(value: string | number | null): string {
  if (value === null) return 'NULL';
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new Error(`not an integer literal: ${value}`);
    return String(value);
  }
  if (value.includes('\0')) throw new Error('a SQL literal cannot hold NUL');
  return `'${value.replaceAll("'", "''")}'`;
}

/**
 * SQLite: the audit worker's append, as one script of literal statements for Driver.script,
 * which runs it as one transaction in a single call to the connection (an append of bound
 * statements takes ~8 trips through node-sqlite3's thread pool). It commits each event whole
 * and chained, one `audit_journal` row apiece (its content, its link: seq, prev_hash, hash, and
 * what its queue entry and early index rows will be; the events of a request about many patients
 * as frames and bodies, store/audit-frame.ts), and moves the chain's head past them:
 * the events are durable and tamper-evident at COMMIT. Their current rows, history rows, index
 * queue entries, early index rows and `audit_chain` links, the same rows appendSerialized
 * writes, are made from the journal later, off the response path (store/audit-journal.ts);
 * every read of the trail moves what the journal holds first.
 *
 * The chain's tail is the one the caller last knew (the audit worker keeps it from its own
 * commits), not one read in the transaction, so the script checks it: the first link's
 * `prev_hash` is read from the head row only if the head is still that tail, and is NULL
 * otherwise, which the column's NOT NULL constraint refuses. Whatever else appended to the
 * chain meanwhile (an audit source's POST, another process), the script then fails as a whole
 * and nothing of it is stored; the caller reads the head again.
 */
export function auditAppendScript(events: readonly SerializedAuditEvent[], writer: Writer, tail: ChainTail): { sql: string; tail: ChainTail } {
  const script = new AuditAppendScript(writer, tail);
  const sql = script.part(events, true);
  return { sql, tail: script.tail };
}

/**
 * auditAppendScript in parts (Driver.script's ScriptParts), for a group too large to build
 * before it starts running: each part appends its events after those of the parts before it,
 * and the last one moves the head. Only the first part's first link checks the tail it was
 * built on; the parts run in one transaction, so a chain that moved fails the whole of it.
 */
export class AuditAppendScript {
  /** The chain's last link after the parts built so far. */
  tail: ChainTail;
  private appended = 0;
  private finished = false;
  /** The frames stored by the parts so far, by their id (store/audit-frame.ts). */
  private readonly frames = new Map<AuditFrame, number>();

  constructor(
    private readonly writer: Writer,
    /** The tail the script attaches to. */
    private readonly from: ChainTail,
  ) {
    this.tail = from;
  }

  /** The statements of the next events; with `last`, the head's update too (nothing may follow it). */
  part(events: readonly SerializedAuditEvent[], last: boolean): string {
    if (this.finished) throw new Error('the audit append script was finished already');
    if (events.length === 0) throw new Error('an audit append script needs events');
    const first = this.appended === 0;
    const chained = chainLinks(this.tail, events);
    const by = `${literal(this.writer.clientId)}, ${literal(this.writer.organization)}`;
    const from = this.from;
    // The first link's prev_hash is the head's hash only if the head is still the tail the script
    // was built on; NULL otherwise, which the column's NOT NULL refuses (chainMoved).
    const guard = `(SELECT hash FROM audit_chain_head WHERE id = 1 AND seq = ${literal(from.seq)} AND hash = ${literal(from.hash)})`;
    const statements: string[] = [];
    for (let i = 0; i < events.length; i += 500) {
      const frames: string[] = [];
      const rows = events.slice(i, i + 500).map((e, j) => {
        const link = chained.links[i + j];
        const prev = first && i + j === 0 ? guard : literal(link.prev);
        // A framed event's row holds its body; its frame is stored once, keyed by the seq of its first event.
        let frame: number | null = null;
        if (e.framed) {
          frame = this.frames.get(e.framed.frame) ?? null;
          if (frame === null) {
            frame = link.seq;
            this.frames.set(e.framed.frame, frame);
            frames.push(`(${literal(frame)}, ${literal(e.framed.frame.head)}, ${literal(e.framed.frame.tail)})`);
          }
        }
        return `(${literal(link.seq)}, ${literal(e.id)}, ${literal(e.lastUpdated)}, ${literal(e.framed ? e.framed.body : e.content)}, ${literal(frame)}, ${by}, ${literal(e.patient)}, ${e.early ? 1 : 0}, ${literal(journalRefs(e))}, ${literal(journalDates(e))}, ${prev}, ${literal(link.hash)}, ${literal(e.patients)})`;
      });
      if (frames.length) statements.push(`INSERT INTO audit_journal_frame (id, head, tail) VALUES ${frames.join(',\n')}`);
      statements.push(`INSERT INTO audit_journal (seq, id, last_updated, content, frame, created_by, creator_org, patient, early, refs, dates, prev_hash, hash, patients) VALUES ${rows.join(',\n')}`);
    }
    this.tail = chained.tail;
    this.appended += events.length;
    if (last) {
      statements.push(`UPDATE audit_chain_head SET seq = ${literal(this.tail.seq)}, hash = ${literal(this.tail.hash)}, links = links + ${this.appended} WHERE id = 1 AND seq = ${literal(from.seq)}`);
      this.finished = true;
    }
    return statements.join(';\n');
  }
}

/** An event's early `reference` rows as the journal keeps them (JSON [pid, ref] pairs), or null. */
function journalRefs(e: SerializedAuditEvent): string | null {
  const refs = e.early?.reference ?? [];
  return refs.length ? JSON.stringify(refs.map((r) => [paramId('AuditEvent', r.param), r.ref])) : null;
}

/** An event's early `date` rows as the journal keeps them (JSON [pid, lo, hi]), or null; other early rows there are none of. */
function journalDates(e: SerializedAuditEvent): string | null {
  if (e.early && e.early.string.length + e.early.token.length + e.early.uri.length) throw new Error('early AuditEvent index rows are references and dates only');
  const dates = e.early?.date ?? [];
  return dates.length ? JSON.stringify(dates.map((d) => [paramId('AuditEvent', d.param), d.lo, d.hi])) : null;
}

/**
 * Whether an append script failed because the chain had moved past the tail it was built on
 * (its guard, above), and so should be appended again from the tail in the database; any other
 * failure is the store's and fails the group.
 */
export function chainMoved(err: unknown): boolean {
  return /NOT NULL constraint failed: audit_(?:journal|chain)\.prev_hash|UNIQUE constraint failed: audit_(?:journal|chain)\.seq/.test(err instanceof Error ? err.message : String(err));
}

/** Runs `fn` in one transaction with a WriteTx, flushing history rows before commit. */
export async function writeTransaction<T>(
  driver: Driver,
  now: () => number,
  localBase: string | undefined,
  fn: (tx: WriteTx) => Promise<T>,
): Promise<T> {
  return driver.transaction(async (q) => {
    const tx = new WriteTx(q, driver.dialect, now, localBase);
    const result = await fn(tx);
    await tx.flush();
    return result;
  });
}
