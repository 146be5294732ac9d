import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
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
  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new Error('the cursor key must be 32 bytes');
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
