import { createHash } from 'node:crypto';
import type { Resource } from 'fhir/r4';
import { extractIndexRows } from '../search/extract';
import { paramCode } from '../search/param-id';
import { hashFramed, JOURNAL_CONTENT, type Framed } from './audit-frame';
import type { Dialect, Queryable } from './driver';
import { expectedIndexKeys, storedIndexKeys } from './index-rows';
import { patientsColumn } from './records';

/**
 * The tamper-evident chain over stored AuditEvents (a side table, `audit_chain`).
 *
 * Every AuditEvent stored — written by the server or posted by an audit source — gets the next
 * `seq` and `hash = SHA-256(prev_hash "\n" seq "\n" "AuditEvent/" id "\n" content)`, where
 * `content` is the event's stored JSON text, byte for byte, and the first `prev_hash` is 64
 * zeros. Rows are appended in the writing transaction under a lock held until commit (an
 * advisory lock on PostgreSQL; SQLite has one writer), so several server processes extend one
 * single chain. `verifyChain` recomputes it: an edited event, a deleted or reordered row, or an
 * event missing from the chain is reported at the first link that breaks.
 *
 * The chain's end is anchored: `audit_chain_head` holds the last link (seq, hash) and how many
 * links were appended, updated in the same transaction as every append, and the next append
 * attaches to it (not to whatever row is last). Cutting the end of the chain (events and links
 * together) leaves the head pointing past it, and the next append leaves a gap: `verifyChain`
 * reports `truncated`. What the head cannot do: someone with full write access to the database
 * can rewrite events, links and head consistently. Only a head kept outside the database shows
 * that — the server writes it to its log (audit/head-log.ts), `$verify` returns it, and
 * `$verify?anchor=SEQ:HASH` checks the chain still holds a head kept earlier.
 */
export const GENESIS = '0'.repeat(64);

export interface PendingLink {
  readonly rid: number;
  readonly id: string;
  readonly content: string;
}

export function linkHash(prev: string, seq: number, id: string, content: string): string {
  return createHash('sha256').update(`${prev}\n${seq}\n${'AuditEvent/' + id}\n${content}`).digest('hex');
}

/** linkHash of a framed event (store/audit-frame.ts) from its pieces: the same bytes hashed, its text never joined. */
function framedLinkHash(prev: string, seq: number, id: string, framed: Framed): string {
  return hashFramed(createHash('sha256').update(`${prev}\n${seq}\n${'AuditEvent/' + id}\n`), id, framed).digest('hex');
}

/** The last link of the chain: where the next one attaches. */
export interface ChainTail {
  readonly seq: number;
  readonly hash: string;
}

/** The anchored end of the chain (`audit_chain_head`): its last link and how many links were appended. */
export interface ChainHead extends ChainTail {
  readonly links: number;
}

/** The stored head, or undefined when its row is gone. */
export async function readHead(q: Queryable): Promise<ChainHead | undefined> {
  const row = await q.get<{ seq: number | string; hash: string; links: number | string }>('SELECT seq, hash, links FROM audit_chain_head WHERE id = 1');
  return row ? { seq: Number(row.seq), hash: row.hash, links: Number(row.links) } : undefined;
}

/**
 * The chain's last link, read inside the writing transaction: the head, not the last row, so a
 * cut end stays visible (see above). On PostgreSQL it first takes the chain's advisory lock,
 * held until commit, so concurrent writers (other server processes too) extend the chain one
 * after another; SQLite transactions have one writer already. Without a head row nothing is
 * appended (fail closed): the anchor was removed, and appending would hide that.
 */
export async function chainTail(q: Queryable, dialect: Dialect): Promise<ChainTail> {
  if (dialect === 'postgres') await q.run('SELECT pg_advisory_xact_lock(727002)');
  const head = await readHead(q);
  if (!head) throw new Error('the audit chain head (audit_chain_head) is missing: the audit trail is not written until it is restored');
  return head;
}

/** A link as stored in `audit_chain`. */
export interface ChainLink {
  readonly seq: number;
  readonly id: string;
  readonly prev: string;
  readonly hash: string;
}

/** The links of events (id, stored content) appended after `tail`, in order, and the new tail. */
export function chainLinks(tail: ChainTail, events: readonly { readonly id: string; readonly content: string; readonly framed?: Framed }[]): { links: ChainLink[]; tail: ChainTail } {
  let seq = tail.seq;
  let prev = tail.hash;
  const links: ChainLink[] = [];
  for (const e of events) {
    seq += 1;
    const hash = e.framed ? framedLinkHash(prev, seq, e.id, e.framed) : linkHash(prev, seq, e.id, e.content);
    links.push({ seq, id: e.id, prev, hash });
    prev = hash;
  }
  return { links, tail: { seq, hash: prev } };
}

/** Inserts the links of `links`, in order, after `tail`, and moves the head to the last of them. */
export async function insertLinks(q: Queryable, tail: ChainTail, links: readonly PendingLink[]): Promise<void> {
  const chained = chainLinks(tail, links);
  const rows = chained.links.map((c, i) => [c.seq, links[i].rid, c.id, c.prev, c.hash]);
  const statements: Promise<number>[] = [];
  for (let i = 0; i < rows.length; i += 200) {
    const chunk = rows.slice(i, i + 200);
    statements.push(q.run(`INSERT INTO audit_chain (seq, rid, event_id, prev_hash, hash) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?)').join(', ')}`, chunk.flat()));
  }
  if (rows.length) {
    const moved = q.run('UPDATE audit_chain_head SET seq = ?, hash = ?, links = links + ? WHERE id = 1 AND seq = ?', [chained.tail.seq, chained.tail.hash, rows.length, tail.seq]);
    statements.push(
      moved.then((changed) => {
        if (changed !== 1) throw new Error(`the audit chain head moved away from link ${tail.seq} during an append`);
        return changed;
      }),
    );
  }
  await Promise.all(statements);
}

/** Appends links for AuditEvents written in this transaction (call just before COMMIT). */
export async function appendLinks(q: Queryable, dialect: Dialect, links: readonly PendingLink[]): Promise<void> {
  if (links.length === 0) return;
  await insertLinks(q, await chainTail(q, dialect), links);
}

export type ChainProblem =
  | 'missing-link' // a seq is absent: a chain row was deleted
  | 'broken-link' // prev_hash is not the previous row's hash: rows were edited or reordered
  | 'hash-mismatch' // the event's content (or the row) was changed
  | 'event-missing' // the chain names an AuditEvent that is no longer stored (or stored as deleted, or as another version)
  | 'version-mismatch' // a history row of the event differs from the chained event (vread and _history would serve it)
  | 'index-missing' // a search-index row derived from the event is gone: the event would be hidden from searches on it (under a patient: from that patient's $access-report and AuditEvent?patient=)
  | 'index-extra' // a search-index row names the event that its content does not derive: searches would find it where it does not belong (under another patient: in that patient's report)
  | 'patients-mismatch' // the row's record of the patients the event is about (resources.patients, what reads decide by) is not what its content names
  | 'truncated' // the head records more links than the chain has: its end was cut
  | 'head-missing' // the head row is gone
  | 'head-mismatch' // the head is not the chain's last link (edited, or links appended beside it)
  | 'anchor-mismatch' // a head kept outside the database is not in the chain: it was rewritten or cut below it
  | 'not-chained'; // an AuditEvent is stored without a link

export interface ChainProblemReport {
  readonly problem: ChainProblem;
  readonly seq?: number;
  readonly event?: string;
  readonly detail: string;
}

export interface ChainReport {
  readonly ok: boolean;
  readonly links: number;
  /** The stored head, as read when the walk began (what an operator keeps outside the database). */
  readonly head?: ChainHead;
  readonly firstProblem?: ChainProblemReport;
}

export interface VerifyOptions {
  /** The configured base URL, as the search index was built with it (see extractIndexRows). */
  readonly localBase?: string;
  /** Heads kept outside the database (from the log or an earlier $verify): each must still be in the chain. */
  readonly anchors?: readonly ChainTail[];
}

const BATCH = 1000;

interface LinkRow {
  seq: number | string;
  rid: number | string;
  event_id: string;
  prev_hash: string;
  hash: string;
  content: string | null;
  type: string | null;
  id: string | null;
  deleted: number | string | null;
  version_id: number | string | null;
  /** The row's `patients` column (store/records.ts patientsColumn): NULL in rows written before AuditEvents kept it. */
  patients: string | null;
  /** 1: a link still in the audit journal (store/audit-journal.ts), its event not yet moved into the trail's tables. */
  journaled: number | string;
}

/**
 * Walks the whole chain in seq order, up to the head, and reports the first broken or missing
 * link; then whether the head is the chain's end, whether events are stored outside it, and
 * whether each kept anchor is in it. For every link it also checks what the trail is read
 * through besides the event itself: the event's history rows (content, when a row holds it,
 * must be the chained content) and its search-index rows, exactly those its content derives (an
 * event not yet indexed is queued, and is searched only after it is). Links still in the audit journal are walked where
 * they are, so the walk needs no move first and sees a journal row edited or deleted before it
 * was moved.
 */
export async function verifyChain(q: Queryable, options: VerifyOptions = {}): Promise<ChainReport> {
  const head = await readHead(q);
  const anchors = new Map((options.anchors ?? []).map((a) => [a.seq, a.hash]));
  const seenAnchors = new Set<number>();
  let expected = 1;
  let prev = GENESIS;
  let links = 0;
  const fail = (problem: ChainProblemReport): ChainReport => ({ ok: false, links, ...(head ? { head } : {}), firstProblem: problem });
  for (;;) {
    // The chain's links and the journal's (events committed but not yet moved into the trail's
    // tables), in one statement: one snapshot, in which a move (one transaction) has happened
    // whole or not at all, so each link is read once, wherever it is. Each side is read through
    // its own key, a batch at most.
    const upTo = (t: string) => (head ? ` AND ${t}.seq <= ?` : '');
    const bounds = head ? [expected, head.seq] : [expected];
    const rows = await q.all<LinkRow>(
      `SELECT * FROM (SELECT c.seq, c.rid, c.event_id, c.prev_hash, c.hash, r.content, r.type, r.id, r.deleted, r.version_id, r.patients, 0 AS journaled FROM audit_chain c LEFT JOIN resources r ON r.rid = c.rid WHERE c.seq >= ?${upTo('c')} ORDER BY c.seq LIMIT ${BATCH}) a
       UNION ALL
       SELECT * FROM (SELECT j.seq, CAST(NULL AS BIGINT) AS rid, j.id AS event_id, j.prev_hash, j.hash, ${JOURNAL_CONTENT} AS content, 'AuditEvent' AS type, j.id, 0 AS deleted, 1 AS version_id, j.patients, 1 AS journaled FROM audit_journal j LEFT JOIN audit_journal_frame f ON f.id = j.frame WHERE j.seq >= ?${upTo('j')} ORDER BY j.seq LIMIT ${BATCH}) b
       ORDER BY seq LIMIT ${BATCH}`,
      [...bounds, ...bounds],
    );
    const derived = await derivedRows(
      q,
      rows.filter((r) => Number(r.journaled) === 0),
      options.localBase,
    );
    for (const row of rows) {
      const seq = Number(row.seq);
      const event = `AuditEvent/${row.event_id}`;
      if (seq === expected - 1) return fail({ problem: 'broken-link', seq, event, detail: `link ${seq} is stored twice (in the chain and in the journal)` });
      if (seq !== expected) return fail({ problem: 'missing-link', seq: expected, detail: `link ${expected} is missing (the chain jumps to ${seq})` });
      if (row.prev_hash !== prev) return fail({ problem: 'broken-link', seq, event, detail: `link ${seq} does not follow link ${seq - 1}` });
      if (row.content === null || row.type !== 'AuditEvent' || row.id !== row.event_id || Number(row.deleted) !== 0 || Number(row.version_id) !== 1) {
        return fail({ problem: 'event-missing', seq, event, detail: `${event} of link ${seq} is no longer stored as recorded` });
      }
      if (linkHash(prev, seq, row.event_id, row.content) !== row.hash) {
        return fail({ problem: 'hash-mismatch', seq, event, detail: `${event} (link ${seq}) was changed after it was recorded` });
      }
      // A journaled event has no history or index rows yet: they are made from this content when it is moved.
      const versionProblem = Number(row.journaled) ? undefined : derived.versions(row.event_id, row.content);
      if (versionProblem) return fail({ problem: 'version-mismatch', seq, event, detail: `${event} (link ${seq}): ${versionProblem}` });
      let parsed: Resource | undefined;
      const content = row.content;
      const resource = () => (parsed ??= JSON.parse(content) as Resource);
      const indexProblem = Number(row.journaled) ? undefined : derived.index(Number(row.rid), resource);
      if (indexProblem) return fail({ ...indexProblem, seq, event, detail: `${event} (link ${seq}) ${indexProblem.detail}` });
      // What reads decide the event by (who may see it) must be what the chained content names; a
      // journaled row's column is moved as it is.
      if (row.patients !== null && row.patients !== patientsColumn('AuditEvent', resource(), 1)) {
        return fail({ problem: 'patients-mismatch', seq, event, detail: `${event} (link ${seq}) is recorded as about other patients than its content names: it would be shown or hidden as theirs` });
      }
      if (anchors.has(seq)) {
        if (anchors.get(seq) !== row.hash) return fail({ problem: 'anchor-mismatch', seq, event, detail: `link ${seq} is not the one kept outside the database: the chain was rewritten at or before it` });
        seenAnchors.add(seq);
      }
      prev = row.hash;
      expected = seq + 1;
      links++;
    }
    if (rows.length < BATCH) break;
  }
  if (!head) return fail({ problem: 'head-missing', detail: 'the chain head (audit_chain_head) is missing, so a cut end of the chain could not be seen' });
  if (links < head.seq) {
    return fail({ problem: 'truncated', seq: links + 1, detail: `the chain ends at link ${links} but its head records ${head.seq}: links ${links + 1} to ${head.seq} were removed` });
  }
  if (head.hash !== prev || head.links !== links) {
    return fail({ problem: 'head-mismatch', seq: head.seq, detail: `the head (link ${head.seq}, ${head.links} links) is not the chain's last link` });
  }
  for (const [seq] of anchors) {
    if (!seenAnchors.has(seq)) return fail({ problem: 'anchor-mismatch', seq, detail: `link ${seq}, kept outside the database, is not in the chain (it has ${links} links up to its head)` });
  }
  // A link both in the chain and in the journal (a batch boundary between the two copies hides it from the walk).
  const twice = await q.get<{ seq: number | string }>('SELECT c.seq FROM audit_chain c JOIN audit_journal j ON j.seq = c.seq LIMIT 1');
  if (twice) return fail({ problem: 'broken-link', seq: Number(twice.seq), detail: `link ${twice.seq} is stored twice (in the chain and in the journal)` });
  // Links past the head: appended since it was read, or slipped in beside it.
  const beyond = await q.get<{ seq: number | string }>(
    'SELECT seq FROM (SELECT seq FROM audit_chain WHERE seq > ? UNION ALL SELECT seq FROM audit_journal WHERE seq > ?) b ORDER BY seq LIMIT 1',
    [head.seq, head.seq],
  );
  if (beyond) {
    const now = await readHead(q);
    if (!now || now.seq < Number(beyond.seq)) return fail({ problem: 'head-mismatch', seq: Number(beyond.seq), detail: `link ${beyond.seq} lies beyond the chain's head` });
  }
  const orphan = await q.get<{ id: string }>(
    "SELECT r.id FROM resources r WHERE r.type = 'AuditEvent' AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.rid = r.rid) LIMIT 1",
  );
  if (orphan) return fail({ problem: 'not-chained', event: `AuditEvent/${orphan.id}`, detail: `AuditEvent/${orphan.id} is stored but not in the chain` });
  const stray = await q.get<{ id: string }>(
    "SELECT v.id FROM resource_versions v WHERE v.type = 'AuditEvent' AND NOT EXISTS (SELECT 1 FROM resources r WHERE r.type = 'AuditEvent' AND r.id = v.id) LIMIT 1",
  );
  if (stray) return fail({ problem: 'not-chained', event: `AuditEvent/${stray.id}`, detail: `a history row of AuditEvent/${stray.id} is stored but the event is not` });
  return { ok: true, links, head };
}

/**
 * For one batch of links: the history rows of their events, and their search-index rows (the
 * queue is read first: an event dequeued since has its rows committed).
 */
async function derivedRows(q: Queryable, rows: readonly LinkRow[], localBase: string | undefined) {
  const ids = rows.map((r) => r.event_id);
  const rids = rows.map((r) => Number(r.rid));
  const versions = new Map<string, { version_id: number | string; deleted: number | string; content: string | null }[]>();
  const queued = new Set<number>();
  let indexed = new Map<number, Set<string>>();
  if (rows.length) {
    const marks = (n: number) => Array.from({ length: n }, () => '?').join(', ');
    for (const v of await q.all<{ id: string; version_id: number | string; deleted: number | string; content: string | null }>(
      `SELECT id, version_id, deleted, content FROM resource_versions WHERE type = 'AuditEvent' AND id IN (${marks(ids.length)})`,
      ids,
    )) {
      versions.set(v.id, [...(versions.get(v.id) ?? []), v]);
    }
    for (const r of await q.all<{ rid: number | string }>(`SELECT rid FROM audit_index_queue WHERE rid IN (${marks(rids.length)})`, rids)) queued.add(Number(r.rid));
    indexed = await storedIndexKeys(
      q,
      rids.filter((rid) => !queued.has(rid)),
    );
  }
  return {
    /** Whatever history rows the store keeps of the event: one version, not deleted, with the chained content or none. */
    versions(id: string, content: string): string | undefined {
      for (const v of versions.get(id) ?? []) {
        if (Number(v.version_id) !== 1 || Number(v.deleted) !== 0) return `its history holds version ${v.version_id}${Number(v.deleted) ? ' as a deletion' : ''}, which was never recorded`;
        if (v.content !== null && v.content !== content) return 'its history row (served by vread and _history) differs from the recorded event';
      }
      return undefined;
    },
    /**
     * Whether the event's search-index rows are exactly those its content derives: none lost (it
     * would be hidden from the searches on them), none added (it would be found where it does not
     * belong). An event still queued is searched only after it is indexed.
     */
    index(rid: number, resource: () => Resource): { problem: 'index-missing' | 'index-extra'; detail: string } | undefined {
      if (queued.has(rid)) return undefined;
      const rows = extractIndexRows('AuditEvent', resource(), localBase);
      const expected = expectedIndexKeys('AuditEvent', rows);
      const stored = indexed.get(rid) ?? new Set<string>();
      for (const [key, what] of expected) {
        if (stored.has(key)) continue;
        const patient = rows.reference.find((r) => r.param === 'patient' && what === `patient ${r.ref}`);
        return {
          problem: 'index-missing',
          detail: patient ? `is not indexed under ${patient.ref}: it would be hidden from that patient's access report` : `has lost its search-index row for ${what}: searches on it would not find the event`,
        };
      }
      for (const key of stored) {
        if (expected.has(key)) continue;
        const [, pid, ...values] = key.split('\u0001');
        const param = paramCode('AuditEvent', Number(pid)) ?? `parameter key ${pid}`;
        return { problem: 'index-extra', detail: `has a search-index row for ${param} ${values.join(' to ')} that its content does not derive: searches would find the event where it does not belong` };
      }
      return undefined;
    },
  };
}
