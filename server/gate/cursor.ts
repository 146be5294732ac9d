import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, randomFillSync } from 'node:crypto';
import { FhirError } from '../errors';
import type { Keyset } from '../search/order';

/**
 * Search paging cursors, sealed (AES-256-GCM) with a key every server process on the database
 * shares. A page's edge is an internal row position and sort values; in the clear it would tell
 * a client how many resources — hidden ones included — were written between two it may see, and
 * invite hand-made positions. Sealed, a cursor is opaque, tamper-evident and bound to the search
 * it came from (the types, criteria and sort), so it cannot be replayed against another.
 */
export interface PageCursor {
  readonly dir: 'after' | 'before';
  readonly at: Keyset;
}

export class CursorSeal {
  /** The history feed's cursors, sealed with keys derived from this one. */
  readonly feed: FeedCursorSeal;

  constructor(
    private readonly key: Buffer,
    /** Bare commit sequences up to this one were feed cursors before they were sealed (Cutovers). */
    numericFeedCursorsUpTo = 0,
  ) {
    if (key.length !== 32) throw new Error('the cursor key must be 32 bytes');
    this.feed = new FeedCursorSeal(key, numericFeedCursorsUpTo);
  }

  /** A random key for a new database (kept in custodian_state). */
  static newKey(): Buffer {
    return randomBytes(32);
  }

  seal(cursor: PageCursor, search: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(fingerprint(search));
    const plain = Buffer.from(JSON.stringify([cursor.dir === 'after' ? 0 : 1, cursor.at.rid, ...cursor.at.keys]));
    const body = Buffer.concat([cipher.update(plain), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
  }

  /** The cursor, or a 400 when it was not issued by this server for this very search. */
  open(value: string, search: string, keys: number): PageCursor {
    const bad = () => new FhirError('invalid-search', 'Invalid value for search parameter \'_cursor\': not a cursor this server issued for this search', { expression: ['_cursor'] });
    try {
      const raw = Buffer.from(value, 'base64url');
      if (raw.length < 29) throw bad();
      const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, 12));
      decipher.setAAD(fingerprint(search));
      decipher.setAuthTag(raw.subarray(12, 28));
      const plain = JSON.parse(Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8')) as unknown[];
      const [dir, rid, ...rest] = plain;
      if ((dir !== 0 && dir !== 1) || !Number.isSafeInteger(rid) || rest.length !== keys) throw bad();
      if (!rest.every((k) => typeof k === 'string' || typeof k === 'number')) throw bad();
      return { dir: dir === 0 ? 'after' : 'before', at: { rid: rid as number, keys: rest as (string | number)[] } };
    } catch (err) {
      if (err instanceof FhirError) throw err;
      throw bad();
    }
  }
}

function fingerprint(search: string): Buffer {
  return createHash('sha256').update(search).digest();
}

/**
 * The history feed's cursors (`_cursor`, `_cursor-end`, and the feed cursor of a Bulk Data
 * manifest): a position in the commit sequence, sealed like search cursors. In the clear, two
 * cursors would tell a client how many versions of every type were committed between them,
 * those it may not see and the AuditEvents of everyone's reads included: the server's activity,
 * patient by patient when the client knows when one was seen.
 *
 * Unlike a search cursor, a feed position stands for itself: the same one is valid with any
 * `_count`, type or window. Sealing is randomised (a salt in the sealed text; the IV is derived
 * from salt and position, so it never repeats for two texts): the same position sealed twice
 * gives two texts, so nothing shows whether a cursor moved past versions the client may not see.
 *
 * `0`, the start of the feed, is accepted as it is; so are the bare sequence numbers this server
 * handed out before its cursors were sealed, up to the recorded cut-over (saved cursors and
 * manifests keep working), and no higher (a made-up number would be a probe).
 */
export class FeedCursorSeal {
  private readonly key: Buffer;
  private readonly ivKey: Buffer;

  constructor(
    cursorKey: Buffer,
    private readonly numericUpTo = 0,
  ) {
    if (cursorKey.length !== 32) throw new Error('the cursor key must be 32 bytes');
    // Keys of their own, derived from the shared one: a feed cursor is never a search cursor.
    this.key = createHmac('sha256', cursorKey).update('custodian history feed cursor: key').digest();
    this.ivKey = createHmac('sha256', cursorKey).update('custodian history feed cursor: iv').digest();
  }

  seal(seq: number): string {
    if (!Number.isSafeInteger(seq) || seq < 0) throw new Error(`not a commit sequence: ${seq}`);
    const plain = Buffer.alloc(16);
    randomFillSync(plain, 0, 8);
    plain.writeBigUInt64BE(BigInt(seq), 8);
    const iv = createHmac('sha256', this.ivKey).update(plain).digest().subarray(0, 12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(FEED_AAD);
    const body = Buffer.concat([cipher.update(plain), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
  }

  /** The position, or a 400 naming `param` when the value is not a feed cursor this server issued. */
  open(value: string, param: string): number {
    const bad = () => new FhirError('invalid-search', `Invalid value for '${param}': not a history cursor this server issued`, { expression: [param] });
    if (/^\d{1,15}$/.test(value)) {
      const seq = Number(value);
      if (seq === 0 || seq <= this.numericUpTo) return seq;
      throw bad();
    }
    if (!/^[A-Za-z0-9_-]{59}$/.test(value)) throw bad();
    const raw = Buffer.from(value, 'base64url');
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, 12));
      decipher.setAAD(FEED_AAD);
      decipher.setAuthTag(raw.subarray(12, 28));
      const plain = Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]);
      if (plain.length !== 16) throw bad();
      const seq = Number(plain.readBigUInt64BE(8));
      if (!Number.isSafeInteger(seq)) throw bad();
      return seq;
    } catch {
      throw bad();
    }
  }
}

const FEED_AAD = Buffer.from('custodian history feed cursor v1');
