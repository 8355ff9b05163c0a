/**
 * Counters and latency histograms for the storage tiers, readable as plain
 * JSON (LayerStore.stats()) and logged when a store closes.
 *
 * A latency histogram has fixed memory whatever the number of samples:
 * log-scaled buckets, 16 per doubling of the latency (each about 4.4% wide),
 * from 1 µs to ~2 minutes; a percentile is reported as the geometric middle
 * of its bucket, so it is within ~2.2% of the true value. It also counts
 * samples exactly against the fixed, round EXPORT_BOUNDS_S and keeps their
 * sum, for the Prometheus export (prometheus.ts), whose buckets must be
 * cumulative counts at stable `le` bounds.
 */

const SUB_BUCKETS = 16; // per doubling
const MAX_LOG2_US = 27; // 2^27 µs ≈ 134 s; slower samples land in the last bucket
const BUCKETS = MAX_LOG2_US * SUB_BUCKETS + 1;

/** Upper bounds (seconds) of the exported latency buckets: 50 µs to 30 s, about three per decade. */
export const EXPORT_BOUNDS_S: readonly number[] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class LatencyHistogram {
  private readonly counts = new Float64Array(BUCKETS);
  /** Samples per EXPORT_BOUNDS_S bucket (not cumulative); samples above the last bound are only in `n`. */
  private readonly exportCounts = new Float64Array(EXPORT_BOUNDS_S.length);
  private n = 0;
  private maxMs = 0;
  private sum = 0;

  /** Records one latency in milliseconds. */
  record(ms: number): void {
    const us = Math.max(1, ms * 1000);
    const index = Math.min(BUCKETS - 1, Math.floor(Math.log2(us) * SUB_BUCKETS));
    this.counts[index]++;
    this.n++;
    this.sum += ms;
    if (ms > this.maxMs) this.maxMs = ms;
    const s = ms / 1000;
    for (let i = 0; i < EXPORT_BOUNDS_S.length; i++) {
      if (s <= EXPORT_BOUNDS_S[i]) {
        this.exportCounts[i]++;
        break;
      }
    }
  }

  /** Sum of all samples, milliseconds. */
  get sumMs(): number {
    return this.sum;
  }

  /** Cumulative sample counts at each of EXPORT_BOUNDS_S (samples <= the bound). */
  cumulativeCounts(): number[] {
    const out: number[] = [];
    let running = 0;
    for (const c of this.exportCounts) out.push((running += c));
    return out;
  }

  get count(): number {
    return this.n;
  }

  /** The latency (ms) below which fraction `q` (0..1) of the samples fall; 0 with no samples. */
  percentile(q: number): number {
    if (this.n === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.n));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) {
        const us = Math.pow(2, (i + 0.5) / SUB_BUCKETS);
        return Math.min(this.maxMs, us / 1000);
      }
    }
    return this.maxMs;
  }

  get max(): number {
    return this.maxMs;
  }
}

/** One tier's numbers, as stats() reports them. Latencies in milliseconds. */
export interface TierStats {
  /** Reads (or pieces of reads) this tier served. */
  hits: number;
  /** Reads this tier was asked for and did not have. */
  misses: number;
  /** Reads this tier failed (the read fell through to the next tier, or failed if it was the last). */
  errors: number;
  /** Uncompressed bytes served. */
  bytes: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export class TierMetrics {
  hits = 0;
  misses = 0;
  errors = 0;
  bytes = 0;
  readonly latency = new LatencyHistogram();

  /** A hit of `bytes` bytes that took `ms` milliseconds. */
  hit(bytes: number, ms: number): void {
    this.hits++;
    this.bytes += bytes;
    this.latency.record(ms);
  }

  toJSON(): TierStats {
    return {
      hits: this.hits,
      misses: this.misses,
      errors: this.errors,
      bytes: this.bytes,
      p50Ms: round(this.latency.percentile(0.5)),
      p99Ms: round(this.latency.percentile(0.99)),
      maxMs: round(this.latency.max),
    };
  }
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/** Milliseconds since `start` (a performance.now() value). */
export function since(start: number): number {
  return performance.now() - start;
}
