/**
 * SingleFlight: at most one call in flight per key; callers that arrive
 * while it runs share its promise. The mount keys misses by
 * (layer, offset, length), so 64 readers of the same cold range cause one
 * fetch. Settled calls are forgotten at once (no caching here: the kernel's
 * page cache and the storage tiers cache).
 */
export class SingleFlight<T> {
  private readonly inflight = new Map<string, Promise<T>>();
  /** Calls that ran `fn`. */
  calls = 0;
  /** Calls that joined one already in flight. */
  shared = 0;

  run(key: string, fn: () => Promise<T>): Promise<T> {
    const existing = this.inflight.get(key);
    if (existing) {
      this.shared++;
      return existing;
    }
    this.calls++;
    let p: Promise<T>;
    try {
      p = fn();
    } catch (e) {
      p = Promise.reject(e);
    }
    const tracked = p.finally(() => {
      if (this.inflight.get(key) === tracked) this.inflight.delete(key);
    });
    this.inflight.set(key, tracked);
    return tracked;
  }

  get size(): number {
    return this.inflight.size;
  }
}
