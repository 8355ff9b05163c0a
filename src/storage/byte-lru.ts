/**
 * A least-recently-used map of Buffers bounded by their total size in bytes.
 * The tiers keep recently inflated checkpoint intervals and Redis chunks in
 * one, so a sequential reader (cat, extract) costs one fetch per interval or
 * chunk, not one per read call. Map iteration order is insertion order, so
 * re-inserting on access makes the first key the least recently used.
 */
export class ByteLru<K> {
  private readonly map = new Map<K, Buffer>();
  private total = 0;

  /**
   * @param budget most bytes held (0 disables the cache)
   * @param onDrop called with each value that leaves the cache (evicted,
   *   replaced by another value, deleted or cleared), once it is out
   */
  constructor(
    private readonly budget: number,
    private readonly onDrop?: (value: Buffer) => void,
  ) {}

  get(key: K): Buffer | undefined {
    const value = this.map.get(key);
    if (value !== undefined) {
      this.map.delete(key);
      this.map.set(key, value);
    }
    return value;
  }

  /** Adds `value` (a value larger than the whole budget is not kept). */
  set(key: K, value: Buffer): void {
    const old = this.map.get(key);
    if (old !== undefined) {
      this.total -= old.length;
      this.map.delete(key);
      if (old !== value) this.onDrop?.(old);
    }
    if (value.length > this.budget) return;
    this.map.set(key, value);
    this.total += value.length;
    for (const [k, v] of this.map) {
      if (this.total <= this.budget) break;
      this.map.delete(k);
      this.total -= v.length;
      this.onDrop?.(v);
    }
  }

  delete(key: K): void {
    const old = this.map.get(key);
    if (old !== undefined) {
      this.total -= old.length;
      this.map.delete(key);
      this.onDrop?.(old);
    }
  }

  /** Drops every key for which `match` is true. */
  deleteWhere(match: (key: K) => boolean): void {
    for (const [k, v] of this.map) {
      if (match(k)) {
        this.map.delete(k);
        this.total -= v.length;
        this.onDrop?.(v);
      }
    }
  }

  get bytes(): number {
    return this.total;
  }

  clear(): void {
    const values = [...this.map.values()];
    this.map.clear();
    this.total = 0;
    if (this.onDrop) for (const v of values) this.onDrop(v);
  }
}
