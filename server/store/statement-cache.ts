/**
 * A least-recently-used map with a fixed capacity, for prepared statements.
 *
 * Why bounded: searches build SQL with variable-length IN lists and multi-row VALUES, so a
 * long-running server sees an endless stream of distinct SQL texts. Caching a prepared
 * statement for each one forever is a memory leak (on SQLite in this process, on PostgreSQL in
 * every server backend). The hot statements (read by id, the consent lookup, the audit append)
 * are used on every request and stay at the recent end; the one-off texts fall out, and
 * `onEvict` releases them (SQLite: finalize).
 */
export class StatementCache<V> {
  private readonly entries = new Map<string, V>();

  constructor(
    readonly capacity: number,
    private readonly onEvict: (value: V, key: string) => void = () => undefined,
  ) {
    if (!(capacity >= 1)) throw new Error('a statement cache needs a capacity of at least 1');
  }

  get size(): number {
    return this.entries.size;
  }

  /** The cached value, marked as most recently used. */
  get(key: string): V | undefined {
    const value = this.entries.get(key);
    if (value !== undefined) {
      // A Map iterates in insertion order: re-inserting moves the key to the recent end.
      this.entries.delete(key);
      this.entries.set(key, value);
    }
    return value;
  }

  /** Adds a value, evicting the least recently used one when full. */
  set(key: string, value: V): void {
    this.entries.delete(key);
    this.entries.set(key, value);
    while (this.entries.size > this.capacity) {
      const [oldest, evicted] = this.entries.entries().next().value as [string, V];
      this.entries.delete(oldest);
      this.onEvict(evicted, oldest);
    }
  }

  /** Removes and returns every value (for closing). */
  drain(): V[] {
    const values = [...this.entries.values()];
    this.entries.clear();
    return values;
  }
}
