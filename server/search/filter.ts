import type { ResourceType } from '../../resources';
import type { SearchParamDef } from './parameters';

/** A filter over current resources, compiled by `search/sql.ts` into SQL over `resources r`. */
export interface ResourceFilter {
  /** SQL boolean expression over `r`, with `?` placeholders. */
  readonly where: string;
  readonly params: readonly unknown[];
  /**
   * Chained and `_has` criteria. The SQL above narrows candidates through them over all
   * resources; the gate then keeps a candidate only if the link holds through a resource the
   * asker may see (gate/links.ts), so hidden data cannot be probed through a chain.
   */
  readonly links?: readonly LinkCheck[];
  /**
   * Set when every AuditEvent the filter matches has one of these patients (index keys,
   * `Patient/123`) under its `patient` parameter: such a search waits only for the queued events
   * of these patients to be indexed (store/audit-index.ts), not for the whole backlog.
   */
  readonly auditPatients?: readonly string[];
  /**
   * Whether the filter reads the index rows of AuditEvents other than its candidates
   * (`_has:AuditEvent:…`, a chain into AuditEvent such as `entity:AuditEvent.patient=…`), so needs
   * them all indexed whatever else confines it.
   */
  readonly readsAuditIndex?: boolean;
  /**
   * The search parameters of the candidates' own type whose index rows the filter reads (not
   * `_id` or `_lastUpdated`, which are columns): an AuditEvent search reading only early rows
   * need not wait for the deferred ones (store/audit-index.ts). Unset when not known.
   */
  readonly indexParams?: readonly string[];
  /**
   * The same filter driven by a reference-date pair's index (search/sql.ts referenceDateDriven),
   * for the page and count queries of a one-type search: `where` above stays complete, so a
   * query that does not know this field reads it correctly, only slower.
   */
  readonly driven?: DrivenFilter;
}

/**
 * A filter as a join of `idx_ref_date x` to `resources r` (`r.rid = x.rid`): `join` over `x`
 * selects the rows of one reference value with a matching date, `where` over `r` checks the
 * other criteria. Sort keys on the pair's `date` parameter read `x` (search/order.ts drivenOrder).
 */
export interface DrivenFilter {
  readonly join: string;
  readonly joinParams: readonly unknown[];
  readonly where: string;
  readonly params: readonly unknown[];
  readonly date: string;
}

/**
 * What several filters combined (AND or OR) read of the index: the parameters, known only when
 * each one's are, and whether any reads other AuditEvents' rows. Every combination of filters
 * carries these on (a filter without them is taken to read anything).
 */
export function indexReadsOf(filters: readonly ResourceFilter[]): Pick<ResourceFilter, 'indexParams' | 'readsAuditIndex'> {
  const indexParams = filters.every((f) => f.indexParams) ? [...new Set(filters.flatMap((f) => f.indexParams!))] : undefined;
  const readsAuditIndex = filters.some((f) => f.readsAuditIndex);
  return { ...(indexParams ? { indexParams } : {}), ...(readsAuditIndex ? { readsAuditIndex } : {}) };
}

export type LinkCheck =
  /** The candidate's reference `param` points at a `type` resource matching `filter`. */
  | { readonly kind: 'chain'; readonly param: SearchParamDef; readonly targets: readonly { readonly type: ResourceType; readonly filter: ResourceFilter }[] }
  /** A `source` resource matching `filter` points at the candidate through `via`. */
  | { readonly kind: 'has'; readonly source: ResourceType; readonly via: SearchParamDef; readonly filter: ResourceFilter };
