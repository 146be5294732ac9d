/** A filter over current resources, compiled by `search/sql.ts` into SQL over `resources r`. */
export interface ResourceFilter {
  /** SQL boolean expression over `r`, with `?` placeholders. */
  readonly where: string;
  readonly params: readonly unknown[];
}
