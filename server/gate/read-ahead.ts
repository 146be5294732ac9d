import { RESOURCE_TYPES, type ResourceType } from '../../resources';
import type { PageRequest, PagedVersion, StoreReader } from '../store/read';

/**
 * Read-ahead for bulk cursor walks (a national service pulling every Consent 1,000 at a time).
 * Such a walker asks for the next page as soon as it has parsed the last one, and each page's
 * response waits for its AuditEvents to be committed; meanwhile the reader connection is idle.
 * When a large forward page has a next one, the gate starts reading that page's rows here, so
 * that the next request finds them read (HAPI FHIR prefetches search results for paging in the
 * same spirit).
 *
 * Only rows are read ahead, never decisions or responses: the request that takes them decides
 * and audits each one as if it had just read it. Rows are used only if nothing they could
 * depend on has changed: the newest commit of every type other than AuditEvent is read before
 * the rows (its stamp) and again when they are taken, and any difference throws them away (a
 * commit's `seq` is in commit order on both engines, see store/write.ts, so an equal stamp means
 * no commit in between). Searches that read AuditEvents (their type, or their index rows through
 * a chain or `_has`) are never read ahead: the trail changes with every request, and their
 * index is built late. Inside a write transaction there is no read-ahead (the gate's transaction
 * reads do not use this).
 *
 * Bounded: at most MAX_PENDING pages (the oldest dropped first), each forgotten once taken or
 * after MAX_AGE_MS, and only pages of at least MIN_COUNT entries (interactive clients page in
 * tens and seldom follow every next link; reading ahead for them would double their reads).
 */
export const READ_AHEAD_MIN_COUNT = 200;
const MAX_PENDING = 4;
const MAX_AGE_MS = 30_000;

/** The types whose commits a read-ahead page depends on. */
const STAMPED: readonly ResourceType[] = RESOURCE_TYPES.filter((t) => t !== 'AuditEvent');

interface Pending {
  readonly started: number;
  readonly read: Promise<{ stamp: number[]; rows: PagedVersion[] } | undefined>;
}

export interface ReadAheadStats {
  started: number;
  used: number;
  stale: number;
}

export class PageReadAhead {
  private readonly pending = new Map<string, Pending>();
  readonly stats: ReadAheadStats = { started: 0, used: 0, stale: 0 };

  constructor(
    private readonly reader: StoreReader,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether a page request may be read ahead at all (see above). */
  static eligible(req: PageRequest, pageSize: number): boolean {
    return pageSize >= READ_AHEAD_MIN_COUNT && req.before === undefined && !req.types.includes('AuditEvent') && !req.filter.readsAuditIndex;
  }

  /** Starts reading `req`'s rows in the background (a no-op when it is not eligible or already pending). */
  start(req: PageRequest, pageSize: number): void {
    if (!PageReadAhead.eligible(req, pageSize)) return;
    const key = keyOf(req);
    if (key === undefined || this.pending.has(key)) return;
    this.forgetOld();
    while (this.pending.size >= MAX_PENDING) this.pending.delete(this.pending.keys().next().value!);
    // Failures are not the walker's: the request that would have taken the rows reads them itself.
    const read = (async () => {
      const stamp = await this.reader.latestSeq(STAMPED);
      return { stamp, rows: await this.reader.page(req) };
    })().catch(() => undefined);
    this.pending.set(key, { started: this.now(), read });
    this.stats.started++;
  }

  /**
   * The rows of `req` read ahead, if they were and nothing they depend on has changed since;
   * undefined otherwise (the caller reads them). The entry is forgotten either way.
   */
  async take(req: PageRequest): Promise<PagedVersion[] | undefined> {
    if (this.pending.size === 0) return undefined;
    const key = keyOf(req);
    const entry = key === undefined ? undefined : this.pending.get(key);
    if (!entry) return undefined;
    this.pending.delete(key!);
    const read = await entry.read;
    if (!read || this.now() - entry.started > MAX_AGE_MS) return undefined;
    const latest = await this.reader.latestSeq(STAMPED);
    if (!latest.every((s, i) => s === read.stamp[i])) {
      this.stats.stale++;
      return undefined;
    }
    this.stats.used++;
    return read.rows;
  }

  private forgetOld(): void {
    const now = this.now();
    for (const [key, entry] of this.pending) if (now - entry.started > MAX_AGE_MS) this.pending.delete(key);
  }
}

/** Everything the page's SQL is made of (store/read.ts pageSql); undefined when it cannot be written down. */
function keyOf(req: PageRequest): string | undefined {
  try {
    return JSON.stringify([req.types, req.filter.where, req.filter.params, req.order?.keys ?? null, req.after ?? null, req.before ?? null, req.limit]);
  } catch {
    return undefined;
  }
}
