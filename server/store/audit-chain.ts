import { createHash } from 'node:crypto';
import type { Dialect, Queryable } from './driver';

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

/** The last link of the chain: where the next one attaches. */
export interface ChainTail {
  readonly seq: number;
  readonly hash: string;
}

/**
 * The chain's last link, read inside the writing transaction. On PostgreSQL it first takes the
 * chain's advisory lock, held until commit, so concurrent writers (other server processes
 * too) extend the chain one after another; SQLite transactions have one writer already.
 */
export async function chainTail(q: Queryable, dialect: Dialect): Promise<ChainTail> {
  if (dialect === 'postgres') await q.run('SELECT pg_advisory_xact_lock(727002)');
  const tail = await q.get<{ seq: number | string; hash: string }>('SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1');
  return { seq: Number(tail?.seq ?? 0), hash: tail?.hash ?? GENESIS };
}

/** Inserts the links of `links`, in order, after `tail`. */
export async function insertLinks(q: Queryable, tail: ChainTail, links: readonly PendingLink[]): Promise<void> {
  let seq = tail.seq;
  let prev = tail.hash;
  const rows: unknown[][] = [];
  for (const l of links) {
    seq += 1;
    const hash = linkHash(prev, seq, l.id, l.content);
    rows.push([seq, l.rid, l.id, prev, hash]);
    prev = hash;
  }
  const statements: Promise<number>[] = [];
  for (let i = 0; i < rows.length; i += 200) {
    const chunk = rows.slice(i, i + 200);
    statements.push(q.run(`INSERT INTO audit_chain (seq, rid, event_id, prev_hash, hash) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?)').join(', ')}`, chunk.flat()));
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
  | 'event-missing' // the chain names an AuditEvent that is no longer stored
  | 'not-chained'; // an AuditEvent is stored without a link

export interface ChainReport {
  readonly ok: boolean;
  readonly links: number;
  readonly firstProblem?: { readonly problem: ChainProblem; readonly seq?: number; readonly event?: string; readonly detail: string };
}

/** Walks the whole chain in seq order and reports the first broken or missing link. */
export async function verifyChain(q: Queryable): Promise<ChainReport> {
  let expected = 1;
  let prev = GENESIS;
  let links = 0;
  for (;;) {
    const rows = await q.all<{ seq: number | string; event_id: string; prev_hash: string; hash: string; content: string | null; type: string | null; id: string | null }>(
      `SELECT c.seq, c.event_id, c.prev_hash, c.hash, r.content, r.type, r.id FROM audit_chain c LEFT JOIN resources r ON r.rid = c.rid WHERE c.seq >= ? ORDER BY c.seq LIMIT 1000`,
      [expected],
    );
    for (const row of rows) {
      const seq = Number(row.seq);
      const event = `AuditEvent/${row.event_id}`;
      if (seq !== expected) return { ok: false, links, firstProblem: { problem: 'missing-link', seq: expected, detail: `link ${expected} is missing (the chain jumps to ${seq})` } };
      if (row.prev_hash !== prev) return { ok: false, links, firstProblem: { problem: 'broken-link', seq, event, detail: `link ${seq} does not follow link ${seq - 1}` } };
      if (row.content === null || row.type !== 'AuditEvent' || row.id !== row.event_id) {
        return { ok: false, links, firstProblem: { problem: 'event-missing', seq, event, detail: `${event} of link ${seq} is no longer stored` } };
      }
      if (linkHash(prev, seq, row.event_id, row.content) !== row.hash) {
        return { ok: false, links, firstProblem: { problem: 'hash-mismatch', seq, event, detail: `${event} (link ${seq}) was changed after it was recorded` } };
      }
      prev = row.hash;
      expected = seq + 1;
      links++;
    }
    if (rows.length < 1000) break;
  }
  const orphan = await q.get<{ id: string }>(
    "SELECT r.id FROM resources r WHERE r.type = 'AuditEvent' AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.rid = r.rid) LIMIT 1",
  );
  if (orphan) return { ok: false, links, firstProblem: { problem: 'not-chained', event: `AuditEvent/${orphan.id}`, detail: `AuditEvent/${orphan.id} is stored but not in the chain` } };
  return { ok: true, links };
}
