/**
 * Keeps a long-lived mount process small during and after bursts of misses.
 *
 * The miss path (and a fill from a registry, or into Redis) holds its
 * bytes in Buffers whose memory lives outside the V8 heap (inflated
 * checkpoint intervals come from the addon as external buffers; blob reads
 * and network chunks are ArrayBuffer backing stores; a fill into the disk
 * cache makes none of the tar stream: native/core/layer_filler.h). V8 frees them only when a garbage
 * collection finds them dead, and with a heap of a few MiB it collects
 * rarely: it lets external memory grow by about 64 MiB before it forces a
 * collection. A cold walk of the demo image streams ~200 MB through such
 * buffers in two seconds (the fill) on top of the misses, so without help
 * the process peaks near 140 MiB and sits at 100+ MiB of dead buffers after
 * the walk (measured: 44 MiB external after a cold walk, 7 MiB after one
 * full collection).
 *
 * So while a mount is live, the paths that stream bytes through Buffers
 * note() them, and a scavenge follows every `budgetBytes`; and a timer
 * watches V8's external memory:
 *   - every 50 ms while it is changing, and when it has grown by
 *     `budgetBytes` since the last collection, a minor collection
 *     (scavenge, ~1 ms): the dead chunks of a stream are young, and a
 *     scavenge frees their backing stores. If the next tick still finds the
 *     growth (the buffers were promoted, or are live), a full collection;
 *     what survives it is live and becomes the new baseline.
 *   - when external memory has not changed for 0.5 s, and again at 2 s:
 *     a full collection (the buffers of the last burst, live when the
 *     baseline was taken, are dead now), then malloc_trim (trimMemory in
 *     native/binding/memory_binding.h) for the pages glibc kept.
 *   - after that, every second until something changes (an idle mount
 *     costs one getHeapStatistics() a second).
 * The timer is unref'd and stops with the last mount.
 *
 * With CLIP_MEMORY_TRACE_MS=N in the environment and the log level at
 * debug, a live mount also logs every N ms where its memory is: RSS,
 * V8's spaces, external and ArrayBuffer bytes, glibc's arenas, and the
 * gauges the storage code registers (its caches, the bytes of misses in
 * flight); this is how the peak of a cold walk was attributed. (Its own
 * allocations keep the governor from seeing a quiet spell: judge the RSS
 * after a burst without it.)
 *
 * Collections are the fallback. The miss path's Buffers live across
 * asynchronous work (fetch, inflate on a worker thread, the cache), so
 * many are promoted and would wait for a full collection; the ones whose
 * end is known are freed at once instead (native.releaseBuffer): a miss's
 * answer once the kernel has it (mount.ts), inflated bytes once the source
 * tier's cache drops them, an interval's fetched span once it is dropped
 * and unused (source-tier.ts).
 */
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { log } from '../log';
import { native } from '../native';

/**
 * Growth of external memory (or bytes noted) that triggers a collection;
 * bounds the dead bytes a burst can pile up. Measured on cold walks of the
 * demo image: peak RSS 94-100 MiB at 4 MiB, 101-110 MiB at 8 MiB, no gain
 * at 2 MiB; walk times alike.
 */
const DEFAULT_BUDGET_BYTES = 4 << 20;
const BUSY_INTERVAL_MS = 50;
const IDLE_INTERVAL_MS = 1000;
/** Full collections of a quiet spell: this long after external memory last changed. */
const QUIET_LOOKS_MS = [500, 2000];

type Collect = (options?: { type: 'minor' | 'major' }) => void;
let collect: Collect | null | undefined;

/** A function that runs a garbage collection, or null when V8 will not give one. */
function collector(): Collect | null {
  if (collect !== undefined) return collect;
  const existing = (globalThis as { gc?: Collect }).gc;
  if (typeof existing === 'function') {
    collect = existing;
    return collect;
  }
  try {
    // --expose-gc only installs `gc` on contexts created after it is set.
    v8.setFlagsFromString('--expose-gc');
    collect = vm.runInNewContext('gc') as Collect;
  } catch (e) {
    log.debug({ err: e }, 'no gc() available; dead buffers wait for V8');
    collect = null;
  }
  return collect;
}

/** Named byte counts the trace logs (caches, bytes in flight), by whoever owns them. */
const gauges = new Map<string, () => number>();

/**
 * Registers a byte count for the memory trace under `name` (a later
 * registration under the same name replaces it); returns its removal.
 */
export function traceGauge(name: string, read: () => number): () => void {
  gauges.set(name, read);
  return () => {
    if (gauges.get(name) === read) gauges.delete(name);
  };
}

function traceIntervalMs(): number {
  const ms = Number(process.env.CLIP_MEMORY_TRACE_MS);
  return Number.isFinite(ms) && ms > 0 && log.isLevelEnabled('debug') ? ms : 0;
}

function traceOnce(stats: MemoryGovernorStats): void {
  const mib = (n: number) => Math.round((n / 1048576) * 10) / 10;
  const usage = process.memoryUsage();
  const spaces: Record<string, number> = {};
  for (const s of v8.getHeapSpaceStatistics()) spaces[s.space_name.replace(/_space$/, '')] = mib(s.space_size);
  const m = native.mallocStats();
  const named: Record<string, number> = {};
  for (const [name, read] of gauges) named[name] = mib(read());
  log.debug(
    {
      memoryMiB: {
        rss: mib(usage.rss),
        heapTotal: mib(usage.heapTotal),
        heapUsed: mib(usage.heapUsed),
        external: mib(usage.external),
        arrayBuffers: mib(usage.arrayBuffers),
        spaces,
        malloc: { arena: mib(m.arenaBytes), mmapped: mib(m.mmappedBytes), inUse: mib(m.inUseBytes), free: mib(m.freeBytes) },
        gauges: named,
      },
      collections: { minor: stats.minorCollections, major: stats.collections },
    },
    'memory trace',
  );
}

export interface MemoryGovernorStats {
  /** Minor collections (scavenges) asked for. */
  minorCollections: number;
  /** Full collections asked for. */
  collections: number;
  /** External bytes freed by them, in all (as seen on the next tick). */
  freedBytes: number;
}

function externalBytes(): number {
  return v8.getHeapStatistics().external_memory;
}

class MemoryGovernor {
  private users = 0;
  private timer: NodeJS.Timeout | null = null;
  private tracer: NodeJS.Timeout | null = null;
  /** External bytes that survived the last full collection (or the least seen since). */
  private baseline = 0;
  /** The collection of the last tick, whose effect this tick reads; null when none. */
  private settling: { kind: 'minor' | 'major'; before: number; quiet: boolean } | null = null;
  /** External bytes at the last tick, and when they last changed other than by our own collections. */
  private lastSeen = -1;
  private lastChangeAt = 0;
  /** Full collections run in the current quiet spell (at most QUIET_LOOKS_MS.length). */
  private quietLooks = 0;
  /** Bytes note()d since its last scavenge. */
  private noted = 0;
  readonly stats: MemoryGovernorStats = { minorCollections: 0, collections: 0, freedBytes: 0 };

  constructor(private readonly budgetBytes: number) {}

  acquire(): void {
    if (this.users++ > 0) return;
    const traceMs = traceIntervalMs();
    if (traceMs > 0) {
      this.tracer = setInterval(() => traceOnce(this.stats), traceMs);
      this.tracer.unref();
    }
    if (!collector()) return;
    this.baseline = externalBytes();
    this.lastSeen = this.baseline;
    this.lastChangeAt = Date.now();
    this.quietLooks = 0;
    this.schedule(BUSY_INTERVAL_MS);
  }

  release(): void {
    if (this.users === 0 || --this.users > 0) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.tracer) clearInterval(this.tracer);
    this.tracer = null;
    this.settling = null;
  }

  /**
   * Counts `bytes` that went through short-lived Buffers (a fill's chunks,
   * a miss's answer) and, while a mount is live, runs a scavenge each time
   * `budgetBytes` of them have passed. A fill streams 100+ MB/s through
   * such Buffers, faster than a timer can follow; they die young, and a
   * scavenge (well under a millisecond on this small heap) frees their
   * memory, so the dead bytes between two scavenges stay under the budget
   * at any rate. Synchronous: call it between chunks, holding none.
   */
  note(bytes: number): void {
    if (this.users === 0) return;
    this.noted += bytes;
    if (this.noted < this.budgetBytes) return;
    this.noted = 0;
    const collect = collector();
    if (!collect) return;
    collect({ type: 'minor' });
    this.stats.minorCollections++;
  }

  private schedule(ms: number): void {
    this.timer = setTimeout(() => this.check(), ms);
    this.timer.unref();
  }

  private run(kind: 'minor' | 'major', external: number, quiet = false): void {
    const collect = collector()!;
    // A full collection is gc() with no options: measured on Node 20 after
    // a cold walk, gc({ type: 'major' }) twice left 40 MiB of the burst's
    // dead buffers in place, where one gc() freed them.
    if (kind === 'minor') collect({ type: 'minor' });
    else collect();
    if (kind === 'minor') this.stats.minorCollections++;
    else this.stats.collections++;
    this.settling = { kind, before: external, quiet };
  }

  private check(): void {
    this.timer = null;
    if (this.users === 0) return;
    const now = Date.now();
    let external = externalBytes();
    const settled = this.settling;
    this.settling = null;
    if (settled) {
      // Backing stores are freed by V8's sweeper and by finalizers queued
      // with setImmediate; a tick later both have run, but V8 subtracts
      // what they freed from its external memory count only when the next
      // collection starts. A scavenge (~1 ms) brings the count up to date.
      collector()!({ type: 'minor' });
      external = externalBytes();
      this.stats.freedBytes += Math.max(0, settled.before - external);
      this.lastSeen = external; // our own doing: not a sign of activity
      if (settled.kind === 'major') {
        this.baseline = external;
        // The quiet spell's garbage is gone; the pages glibc kept of what
        // the native threads freed during the burst can go too.
        if (settled.quiet) native.trimMemory();
      } else if (external - this.baseline >= this.budgetBytes) this.run('major', external); // promoted or live: look at everything
    } else {
      if (external !== this.lastSeen) {
        this.lastSeen = external;
        this.lastChangeAt = now;
        this.quietLooks = 0;
      }
      if (external - this.baseline >= this.budgetBytes) {
        this.run('minor', external);
      } else if (this.quietLooks < QUIET_LOOKS_MS.length && now - this.lastChangeAt >= QUIET_LOOKS_MS[this.quietLooks]) {
        // Quiet: the buffers of the last burst are dead now. A buffer that
        // dies after a collection changes no count V8 keeps (only
        // allocations and collections do), so the spell gets a second,
        // later look for what the tail of the burst let go of.
        this.quietLooks++;
        this.run('major', external, true);
      }
    }
    this.baseline = Math.min(this.baseline, external);
    const busy = this.settling !== null || this.quietLooks < QUIET_LOOKS_MS.length;
    this.schedule(busy ? BUSY_INTERVAL_MS : IDLE_INTERVAL_MS);
  }
}

/** The process-wide governor every live mount holds. */
export const memoryGovernor = new MemoryGovernor(DEFAULT_BUDGET_BYTES);
