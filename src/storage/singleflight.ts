/**
 * Singleflight: concurrent calls for the same key share one execution. The
 * storage tiers use it so N readers missing the same span cause one fetch
 * and one inflate, and N callers of a layer fill cause one fill. A key is
 * forgotten as soon as its promise settles, so a failure is not cached: the
 * next caller tries again.
 */
export class Singleflight<K, V> {
  private readonly inflight = new Map<K, Promise<V>>();

  /** Runs `fn` unless a call for `key` is already running; returns that call's result. */
  run(key: K, fn: () => Promise<V>): Promise<V> {
    const running = this.inflight.get(key);
    if (running) return running;
    const p = (async () => {
      try {
        return await fn();
      } finally {
        this.inflight.delete(key);
      }
    })();
    this.inflight.set(key, p);
    return p;
  }

  /** The running call for `key`, if any. */
  get(key: K): Promise<V> | undefined {
    return this.inflight.get(key);
  }

  get size(): number {
    return this.inflight.size;
  }

  /** Promises of every call still running (for a clean shutdown). */
  pending(): Promise<V>[] {
    return [...this.inflight.values()];
  }
}
