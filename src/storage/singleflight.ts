/**
 * Singleflight: concurrent calls for the same key share one execution. The
 * storage tiers use it so N readers missing the same span cause one fetch
 * and one inflate, and N callers of a layer fill cause one fill; the mount
 * keys its misses by (layer, offset, length), so 64 readers of the same
 * cold range cause one fetch. A key is forgotten as soon as its promise
 * settles, so a failure is not cached: the next caller tries again.
 */
export class Singleflight<K, V> {
  private readonly inflight = new Map<K, Promise<V>>();
  /** Calls that ran `fn`. */
  calls = 0;
  /** Calls that joined one already in flight. */
  shared = 0;

  /** Runs `fn` unless a call for `key` is already running; returns that call's result. */
  run(key: K, fn: () => Promise<V>): Promise<V> {
    const running = this.inflight.get(key);
    if (running) {
      this.shared++;
      return running;
    }
    this.calls++;
    let p: Promise<V>;
    try {
      p = fn();
    } catch (e) {
      // A synchronous throw becomes a rejection like any other failure.
      p = Promise.reject(e);
    }
    // Forget the key only if it still maps to this call: the entry is
    // registered after fn() has run, and a settled call must never linger.
    const tracked = p.finally(() => {
      if (this.inflight.get(key) === tracked) this.inflight.delete(key);
    });
    this.inflight.set(key, tracked);
    return tracked;
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
