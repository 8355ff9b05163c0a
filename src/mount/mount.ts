/**
 * mount(): serve a `.clip` archive's merged tree read-only over FUSE.
 *
 * The session runs on native threads (native/fuse): metadata and reads of
 * layers the host's disk cache holds never reach JavaScript. A read of a
 * layer that is not cached comes here as a miss (layer, offset, length);
 * `readMiss` fetches the bytes: by default a LayerStore over the same disk
 * cache (Redis, then source Range reads, and per `prefetch` a background
 * fill of the whole layer, after which the native side finds the layer in
 * the cache and splices from it), or a caller's own function. Identical
 * misses in flight share one fetch, and the answer goes back to the
 * kernel. A miss not answered within `deadlineMs` fails with EIO natively,
 * so a dead source never hangs a reader.
 *
 * Several mounts may live in one process; each keeps the process alive
 * until unmount() (or until it is unmounted from outside: 'ended').
 */
import { EventEmitter } from 'node:events';
import * as os from 'node:os';
import * as path from 'node:path';
import { ClipError, isClipError } from '../errors';
import { ClipArchive, ArchiveLayer } from '../archive/reader';
import { native } from '../native';
import { log } from '../log';
import { defaultCacheDir } from '../storage/disk-cache';
import type { ReadBytes } from '../storage/source-tier';
import { LayerStore, LayerStoreOptions } from '../storage/store';
import { memoryGovernor, traceGauge } from './memory';
import { Singleflight } from '../storage/singleflight';
import { prepareMountpoint } from './stale';

/** A layer of the mounted image, as a miss handler sees it. */
export interface MountLayer extends ArchiveLayer {
  /** Position in the image, bottom = 0. */
  index: number;
}

/** Fetches `length` bytes at `offset` of `layer`'s uncompressed tar stream. */
export type ReadMiss = (layer: MountLayer, offset: number, length: number) => Promise<Buffer>;

export interface MountOptions {
  /** The `.clip` archive to serve. */
  archive: string;
  /** An existing directory; a dead FUSE mount left there is cleaned first. */
  mountpoint: string;
  /** Most FUSE worker threads (default: the CPU count, 2 to 8). */
  threads?: number;
  /**
   * The host-wide disk cache: layers at <cacheDir>/layers/sha256/<diff_id hex> are read in place.
   * Default: the storage tiers' default (as `cat`/`extract`) when the mount builds its own store; none
   * with a caller's `readMiss`.
   */
  cacheDir?: string;
  /**
   * Fetches bytes the disk cache does not have (then no store is built; `null`: such reads fail with EIO).
   * Default: a LayerStore over `cacheDir` with the `storage` options.
   */
  readMiss?: ReadMiss | null;
  /** Options of the LayerStore the mount builds when no `readMiss` is given (cache size, Redis, prefetch, source, ...). */
  storage?: Omit<LayerStoreOptions, 'archive' | 'cacheDir'>;
  /** Milliseconds a miss may take before the read fails with EIO (default 30000). */
  deadlineMs?: number;
  /** Let other users see the mount (default true; only as root). */
  allowOther?: boolean;
  /** One /dev/fuse fd per worker thread (default true). */
  cloneFd?: boolean;
  /** KiB the kernel reads ahead per file (default 4096; 0 keeps the kernel's 128). */
  readAheadKb?: number;
  /**
   * Files at least this many bytes are read by the kernel itself from a copy in the disk cache (FUSE
   * passthrough, kernel 6.9+, as root), made once per host on their first open; 0: never (default 16 MiB).
   */
  passthroughMinBytes?: number;
  /** libfuse's request trace on stderr. */
  debug?: boolean;
}

export interface MountStats {
  lookups: number;
  negativeLookups: number;
  getattrs: number;
  readdirs: number;
  opens: number;
  reads: number;
  readBytes: number;
  cachedReads: number;
  cachedBytes: number;
  misses: number;
  missBytes: number;
  missCompleted: number;
  missFailed: number;
  missTimeouts: number;
  lateAnswers: number;
  pending: number;
  layersOpen: number;
  /** Opens the kernel serves from a backing file (FUSE passthrough), no request to us per read. */
  passthroughOpens: number;
  /** Large files copied out of their cached layer so the kernel can pass reads through. */
  backingCopies: number;
  errors: number;
  erofs: number;
  running: boolean;
  /** readMiss calls made (after coalescing). */
  fetches: number;
  /** Misses that joined a fetch already in flight. */
  coalesced: number;
}

interface RawMountSession {
  start(): Promise<void>;
  stop(): Promise<void>;
  complete(id: number, data: Buffer): boolean;
  fail(id: number, errno: number): boolean;
  stats(): Omit<MountStats, 'fetches' | 'coalesced'>;
}

type RawMountSessionClass = new (
  options: Record<string, unknown>,
  onMiss: (id: number, layer: number, offset: number, length: number) => void,
  onEnded: () => void,
) => RawMountSession;

/** Large enough that only files whose sequential reads dominate get a second copy on disk. */
export const DEFAULT_PASSTHROUGH_MIN_BYTES = 16 << 20;

const KNOWN = new Set(['archive', 'mountpoint', 'threads', 'cacheDir', 'readMiss', 'storage', 'deadlineMs', 'allowOther', 'cloneFd', 'readAheadKb', 'passthroughMinBytes', 'debug']);

function checkMountOptions(options: MountOptions): void {
  if (options === null || typeof options !== 'object') throw new ClipError('EINVAL', 'mount: options must be an object');
  for (const key of Object.keys(options)) {
    if (!KNOWN.has(key)) throw new ClipError('EINVAL', `mount: unknown option "${key}" (known: ${[...KNOWN].join(', ')})`);
  }
  for (const key of ['archive', 'mountpoint'] as const) {
    if (typeof options[key] !== 'string' || options[key].length === 0) throw new ClipError('EINVAL', `mount: option "${key}" must be a non-empty string`);
  }
  if (options.cacheDir !== undefined && typeof options.cacheDir !== 'string') throw new ClipError('EINVAL', 'mount: option "cacheDir" must be a string');
  if (options.threads !== undefined && (!Number.isInteger(options.threads) || options.threads < 1 || options.threads > 256)) {
    throw new ClipError('EINVAL', 'mount: option "threads" must be an integer from 1 to 256');
  }
  if (options.deadlineMs !== undefined && (!Number.isInteger(options.deadlineMs) || options.deadlineMs < 1)) {
    throw new ClipError('EINVAL', 'mount: option "deadlineMs" must be a positive integer');
  }
  if (options.readAheadKb !== undefined && (!Number.isInteger(options.readAheadKb) || options.readAheadKb < 0)) {
    throw new ClipError('EINVAL', 'mount: option "readAheadKb" must be a non-negative integer');
  }
  if (options.passthroughMinBytes !== undefined && (!Number.isSafeInteger(options.passthroughMinBytes) || options.passthroughMinBytes < 0)) {
    throw new ClipError('EINVAL', 'mount: option "passthroughMinBytes" must be a non-negative integer');
  }
  if (options.readMiss !== undefined && options.readMiss !== null && typeof options.readMiss !== 'function') {
    throw new ClipError('EINVAL', 'mount: option "readMiss" must be a function or null');
  }
  if (options.storage !== undefined) {
    if (typeof options.storage !== 'object' || options.storage === null) throw new ClipError('EINVAL', 'mount: option "storage" must be an object');
    if (options.readMiss !== undefined) throw new ClipError('EINVAL', 'mount: give "readMiss" or "storage", not both');
    for (const key of ['archive', 'cacheDir']) {
      if (key in options.storage) throw new ClipError('EINVAL', `mount: give "${key}" to mount itself, not in "storage"`);
    }
  }
}

/**
 * Bytes of fetched and inflated intervals a mount's store keeps in memory
 * (the kernel's page cache already keeps what was read). Enough for the
 * intervals a cold start reads at once: measured on cold walks of the demo
 * image, 4 MiB walks as fast as 8 MiB and peaks 3-4 MiB lower; the source
 * tier keeps only the inflated bytes around each read (INFLATED_AHEAD in
 * source-tier.ts), without which 4 MiB could not hold one 2 MiB interval
 * and a walk took 19 s instead of 2.
 */
const MOUNT_MEMORY_CACHE_BYTES = 4 << 20;

/** A ReadMiss through a LayerStore's tiers. */
export function storeReadMiss(store: LayerStore): ReadMiss {
  return (layer, offset, length) => store.read(layer.index, offset, length);
}

/** The errno a failed fetch is reported to the reader with. */
function errnoOf(e: unknown): number {
  const code = isClipError(e) ? e.code : (e as NodeJS.ErrnoException | undefined)?.code;
  const table = os.constants.errno as Record<string, number>;
  if (code === 'ENOMEM') return table.ENOMEM;
  if (code === 'ENOENT') return table.EIO; // the file exists; its bytes could not be found
  return table.EIO;
}

/**
 * Worker threads by default: one per CPU, at least 2 and at most 8. Misses
 * never hold a thread (they are answered asynchronously), so threads only
 * serve metadata and spliced reads, which take microseconds each; more
 * threads than CPUs only add wake-ups.
 */
export function defaultThreads(): number {
  return Math.min(8, Math.max(2, os.availableParallelism()));
}

// Mounted sessions stay reachable (a collected session would unmount).
const live = new Set<Mount>();

/**
 * Bytes the fetches of misses may have in flight at once, over every mount
 * of the process. A sequential read of a large uncached file has the kernel
 * send several requests of up to 1 MiB at once (readahead of 4 MiB and
 * more), each fetched and inflated from its interval's checkpoint into
 * Buffers of its own: measured on a cold walk of the demo image with
 * `--prefetch none`, 11 MiB of misses in flight took the process from 80 to
 * 146 MiB, and 2 MiB instead of 4 MiB peaks 2-3 MiB lower (63-64 MiB) with
 * the walk as fast. 1 MiB: a 2.4 GB file read cold with `--prefetch none`
 * (every byte through the miss path) peaks at 62-63 MiB instead of 64-66,
 * but at 97-130 MB/s instead of 160 (the kernel's read-ahead of a cold
 * file waits more: the price of the bound); the demo image's walks and the
 * cold-start benchmark are as fast. Two CPUs inflate no faster with
 * more in flight, and a queued miss waits well inside its deadline.
 */
const MISS_BYTES_IN_FLIGHT = 1 << 20;

/** Admits fetches while their bytes in flight stay under a budget (one at least). */
class ByteGate {
  private inFlight = 0;
  private readonly waiting: Array<{ bytes: number; go: () => void }> = [];

  constructor(private readonly budget: number) {}

  get bytes(): number {
    return this.inFlight;
  }

  async run<T>(bytes: number, work: () => Promise<T>): Promise<T> {
    if (this.waiting.length > 0 || (this.inFlight > 0 && this.inFlight + bytes > this.budget)) {
      await new Promise<void>((go) => this.waiting.push({ bytes, go }));
    } else {
      this.inFlight += bytes;
    }
    try {
      return await work();
    } finally {
      this.inFlight -= bytes;
      // First come, first served: a large miss is not starved by small ones.
      while (this.waiting.length > 0 && (this.inFlight === 0 || this.inFlight + this.waiting[0].bytes <= this.budget)) {
        const next = this.waiting.shift()!;
        this.inFlight += next.bytes;
        next.go();
      }
    }
  }
}

const missGate = new ByteGate(MISS_BYTES_IN_FLIGHT);
traceGauge('missesInFlight', () => missGate.bytes);

export class Mount extends EventEmitter {
  /** Absolute path of the mountpoint. */
  readonly mountpoint: string;
  readonly archivePath: string;
  /** The disk cache directory the native side reads layers from ('' for none). */
  readonly cacheDir: string;
  private readonly flight = new Singleflight<string, ReadBytes>();
  private stopping: Promise<void> | null = null;

  /** @internal use mount() */
  constructor(
    private readonly raw: RawMountSession,
    mountpoint: string,
    archivePath: string,
    cacheDir: string,
    /** The store the mount built (and closes on unmount), if it built one. */
    readonly store: LayerStore | null,
    private readonly archive: ClipArchive,
  ) {
    super();
    this.mountpoint = mountpoint;
    this.archivePath = archivePath;
    this.cacheDir = cacheDir;
  }

  /** Counters of the session (native) and of the miss path (the store's own: `store.stats()`). */
  stats(): MountStats {
    return { ...this.raw.stats(), fetches: this.flight.calls, coalesced: this.flight.shared };
  }

  /**
   * Unmounts (lazily: open files do not block it; they get errors after),
   * stops the session, then closes the store (stopping its background
   * fills) and the archive. Idempotent.
   */
  unmount(): Promise<void> {
    if (!this.stopping) {
      this.stopping = this.raw
        .stop()
        .finally(async () => {
          await this.store?.close().catch((e: unknown) => log.warn({ err: e }, 'closing the layer store failed'));
          this.archive.close();
        })
        .finally(() => {
          live.delete(this);
          memoryGovernor.release();
        });
    }
    return this.stopping;
  }

  /** @internal */
  handleMiss(readMiss: ReadMiss | null, layers: MountLayer[], id: number, layer: number, offset: number, length: number): void {
    const info = layers[layer];
    if (!readMiss || !info) {
      this.raw.fail(id, os.constants.errno.EIO);
      return;
    }
    const store = this.store;
    // Through the mount's own store, bytes from the source tier's memory
    // come as a view of it (no copy), valid until this turn of the event
    // loop ends: every reply below happens before that.
    const read = (): Promise<ReadBytes> => (store ? store.readForReply(info.index, offset, length) : readMiss(info, offset, length).then((bytes) => ({ bytes, owned: false })));
    this.flight
      .run(`${layer}:${offset}:${length}`, () => missGate.run(length, read))
      .then(
        ({ bytes: data, owned }) => {
          if (!Buffer.isBuffer(data) || data.length !== length) {
            log.warn({ layer: info.digest, offset, length, got: Buffer.isBuffer(data) ? data.length : typeof data }, 'readMiss returned the wrong number of bytes');
            this.raw.fail(id, os.constants.errno.EIO);
          } else {
            this.raw.complete(id, data);
            if (owned) {
              // The answer went to the kernel (complete() copies it), and the
              // store gave this Buffer to us alone; misses that joined this
              // fetch complete in this same turn, before the immediate. Freed
              // now, it does not wait for a collection (memory.ts).
              setImmediate(() => native.releaseBuffer(data));
            } else if (!store) {
              memoryGovernor.note(length);
            }
          }
        },
        (e: unknown) => {
          log.warn({ err: e, layer: info.digest, offset, length }, 'read miss failed');
          this.raw.fail(id, errnoOf(e));
        },
      );
  }

  /** @internal The mount went away from outside: release the session, then tell listeners. */
  handleEnded(): void {
    void this.unmount().finally(() => this.emit('ended'));
  }
}

/**
 * Mounts `options.archive` on `options.mountpoint` and resolves once the
 * mount is ready. Errors: EINVAL (options), ENOENT (archive or mountpoint
 * missing), ECORRUPT/EUNSUPPORTED (archive), EBUSY (a live mount is on the
 * mountpoint), EIO (the kernel refused the mount).
 */
export async function mount(options: MountOptions): Promise<Mount> {
  checkMountOptions(options);
  const mountpoint = path.resolve(options.mountpoint);
  const archivePath = path.resolve(options.archive);
  const archive = ClipArchive.open(archivePath);
  let store: LayerStore | null = null;
  let raw: RawMountSession | null = null;
  try {
    const layers: MountLayer[] = archive.layers().map((l, index) => ({ ...l, index }));
    if (prepareMountpoint(mountpoint)) log.info({ mountpoint }, 'cleaned a dead mount left on the mountpoint');
    let readMiss: ReadMiss | null;
    let cacheDir: string;
    if (options.readMiss !== undefined) {
      readMiss = options.readMiss;
      cacheDir = options.cacheDir ? path.resolve(options.cacheDir) : '';
    } else {
      cacheDir = defaultCacheDir(options.cacheDir);
      store = await LayerStore.open({ memoryCacheBytes: MOUNT_MEMORY_CACHE_BYTES, ...options.storage, archive, cacheDir });
      readMiss = storeReadMiss(store);
    }

    const Raw = (native as unknown as { MountSession: RawMountSessionClass }).MountSession;
    let m: Mount | null = null;
    raw = new Raw(
      {
        archive: archivePath,
        // One mapping of the archive for the session and the store.
        archiveReader: archive.nativeReader,
        mountpoint,
        threads: options.threads ?? defaultThreads(),
        cacheDir,
        deadlineMs: options.deadlineMs ?? 30000,
        allowOther: options.allowOther ?? true,
        cloneFd: options.cloneFd ?? true,
        readAheadKb: options.readAheadKb ?? 4096,
        passthroughMinBytes: options.passthroughMinBytes ?? DEFAULT_PASSTHROUGH_MIN_BYTES,
        debug: options.debug ?? false,
      },
      (id, layer, offset, length) => m!.handleMiss(readMiss, layers, id, layer, offset, length),
      () => m?.handleEnded(),
    );
    m = new Mount(raw, mountpoint, archivePath, cacheDir, store, archive);
    await raw.start();
    live.add(m);
    memoryGovernor.acquire();
    log.debug({ mountpoint, archive: archivePath, cacheDir }, 'mounted');
    return m;
  } catch (e) {
    await raw?.stop().catch(() => undefined);
    await store?.close().catch(() => undefined);
    archive.close();
    throw e;
  }
}
