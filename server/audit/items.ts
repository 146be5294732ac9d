import { randomFillSync } from 'node:crypto';
import type { AuditEvent } from 'fhir/r4';
import { buildEvents, type AccessNote, type RequestFacts } from './balp';

/**
 * What the audit trail hands the store to commit: AuditEvents built already (a disclosure, a
 * notification), or the facts of one request and the accesses the gate decided for it, which
 * `buildEvents` turns into its BALP events. The second kind is built by the thread that stores it
 * (on SQLite the audit worker, store/audit-worker.ts): the request thread hands over a few
 * hundred bytes of facts instead of building and serialising kilobytes of JSON per event.
 */
export type AuditItem = { readonly events: readonly AuditEvent[] } | { readonly facts: RequestFacts; readonly notes: readonly AccessNote[] };

/** The items' events, in order, each with a new id. */
export function buildItems(items: readonly AuditItem[]): AuditEvent[] {
  const out: AuditEvent[] = [];
  for (const item of items) {
    const events = 'events' in item ? item.events : buildEvents(item.facts, item.notes);
    for (const e of events) out.push({ ...e, id: uuidv7() });
  }
  return out;
}

/** Random bytes drawn from the CSPRNG a page at a time (one call per id costs more than the rest of the id). */
const pool = Buffer.alloc(4096);
let poolOffset = pool.length;

/**
 * A time-ordered UUID (version 7, RFC 9562): AuditEvents are appended in time order, so their
 * ids land at the end of the (type, id) indexes instead of at random pages.
 */
export function uuidv7(now = Date.now()): string {
  if (poolOffset + 10 > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const b = Buffer.allocUnsafe(16);
  pool.copy(b, 6, poolOffset, poolOffset + 10);
  poolOffset += 10;
  b.writeUIntBE(now, 0, 6);
  b[6] = 0x70 | (b[6] & 0x0f);
  b[8] = 0x80 | (b[8] & 0x3f);
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
