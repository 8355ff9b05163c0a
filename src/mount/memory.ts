/**
 * Keeps a long-lived mount process small after bursts of misses.
 *
 * The miss path and the background fills hold their bytes in Buffers whose
 * memory lives outside the V8 heap (inflated checkpoint intervals come from
 * the addon as external buffers; blob reads and fill chunks are
 * ArrayBuffer backing stores). V8 frees them only when a garbage collection
 * finds them dead, and with a heap of a few MiB it collects rarely: it lets
 * external memory grow by about 64 MiB before it forces a collection. A
 * mount that has read a few hundred MiB through its misses then sits at
 * 60+ MiB of dead buffers (measured: 55 MiB external right after a cold
 * walk of the demo image, 6 MiB after a collection).
 *
 * So while a mount is live, a timer looks at V8's external memory twice a
 * second and asks for a collection when it has grown past `budgetBytes`
 * since the last one, and once more when the mount goes quiet. A collection of this small heap takes a few
 * milliseconds; the timer is unref'd and stops with the last mount.
 */
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { log } from '../log';

const DEFAULT_BUDGET_BYTES = 12 << 20;
const INTERVAL_MS = 500;
/** A quiet mount holding this much more than after its last collection is collected once more. */
const QUIET_SLACK_BYTES = 1 << 20;

let collect: (() => void) | null | undefined;

/** A function that runs a full garbage collection, or null when V8 will not give one. */
function collector(): (() => void) | null {
  if (collect !== undefined) return collect;
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === 'function') {
    collect = existing;
    return collect;
  }
  try {
    // --expose-gc only installs `gc` on contexts created after it is set.
    v8.setFlagsFromString('--expose-gc');
    collect = vm.runInNewContext('gc') as () => void;
  } catch (e) {
    log.debug({ err: e }, 'no gc() available; dead buffers wait for V8');
    collect = null;
  }
  return collect;
}

export interface MemoryGovernorStats {
  /** Collections asked for. */
  collections: number;
  /** External bytes freed by them, in all. */
  freedBytes: number;
}

class MemoryGovernor {
  private users = 0;
  private timer: NodeJS.Timeout | null = null;
  private baseline = 0;
  /** External bytes when the last collection ran, until the next check; -1 otherwise. */
  private collectedAt = -1;
  /** External bytes at the last check, and whether the quiet spell since then has had its collection. */
  private lastSeen = -1;
  private quietCollected = false;
  readonly stats: MemoryGovernorStats = { collections: 0, freedBytes: 0 };

  constructor(private readonly budgetBytes: number) {}

  acquire(): void {
    if (this.users++ > 0) return;
    if (!collector()) return;
    this.baseline = v8.getHeapStatistics().external_memory;
    this.timer = setInterval(() => this.check(), INTERVAL_MS);
    this.timer.unref();
  }

  release(): void {
    if (this.users === 0 || --this.users > 0) return;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private check(): void {
    const external = v8.getHeapStatistics().external_memory;
    if (this.collectedAt >= 0) {
      // The finalizers of what the last collection found dead have run by
      // now; what is left is live (the store's in-memory tier, reads in
      // flight) and becomes the new baseline.
      this.stats.freedBytes += Math.max(0, this.collectedAt - external);
      this.baseline = external;
      this.collectedAt = -1;
      return;
    }
    // Collect when external memory grew by the budget, or once when the
    // mount goes quiet (nothing changed for a tick): the buffers of the last
    // burst were live when the baseline was taken, and are dead now.
    const quiet = external === this.lastSeen && !this.quietCollected;
    this.quietCollected = this.quietCollected && external === this.lastSeen;
    this.lastSeen = external;
    if (external - this.baseline < this.budgetBytes && !(quiet && external > this.baseline + QUIET_SLACK_BYTES)) return;
    if (quiet) this.quietCollected = true;
    collector()!();
    this.stats.collections++;
    this.collectedAt = external;
  }
}

/** The process-wide governor every live mount holds. */
export const memoryGovernor = new MemoryGovernor(DEFAULT_BUDGET_BYTES);
