/**
 * LayerStore: every byte a reader of a `.clip` archive needs, from the
 * fastest tier that has it. The FUSE mount's miss handler, `cat` and
 * `extract` all read through it.
 *
 *   1. disk cache   a complete, verified layer file: pread (DiskCache)
 *   2. Redis        verified chunks of a complete layer (RedisTier)
 *   3. source       a Range read of the compressed span, inflated from its
 *                   checkpoint and checked (SourceTier)
 *
 * (Recently inflated intervals and Redis chunks are kept in memory too, and
 * counted as the "memory" tier.)
 *
 * After a source read of a layer, the whole layer is filled in the
 * background per `prefetch`: "background" (default) streams it into the
 * disk cache (and Redis, if configured, when Redis lacks it), after which
 * reads of that layer are preads; "eager" does the same but the first read
 * of each layer waits for it; "none" fills no disk cache (Redis, if
 * configured, is still filled after a source read, as its purpose is to
 * spare the fleet the source). Fills are verified against the diff_id
 * before anyone can read them, coalesced per layer in this process and,
 * through the fill lock, across processes.
 *
 * A read never returns bytes it could not check: a failing tier above the
 * source is skipped with a warning (Redis down, slow or evicting; a cached
 * file gone), the source read fails with a ClipError if its bytes are bad.
 */
import { Readable } from 'node:stream';
import { ClipArchive, ArchiveStat, ROOT_INO } from '../archive/reader';
import { LayerReader } from '../engine/layer';
import { checkOptions } from '../engine/options';
import { ClipError, isClipError } from '../errors';
import { log } from '../log';
import { traceGauge } from '../mount/memory';
import { openImageSource, parseImageReference } from '../oci';
import type { Credentials, Descriptor, ImageSource } from '../oci';
import { defaultCacheDir, diffIdHex, DiskCache, PinnedLayer } from './disk-cache';
import { fillDisk, FillContext, FillLayer, FillStats, uploadLayer } from './fill';
import { since, TierMetrics, TierStats } from './metrics';
import { RedisMiss, RedisTier } from './redis-tier';
import { Singleflight } from './singleflight';
import { ReadBytes, SourceLayer, SourceTier } from './source-tier';

export type PrefetchMode = 'none' | 'background' | 'eager';

export interface LayerStoreOptions {
  /** The archive, or its path (then the store opens and closes it). */
  archive: ClipArchive | string;
  /** Disk cache directory (default $CLIP_CACHE_DIR, $XDG_CACHE_HOME/clip-native, ~/.cache/clip-native). */
  cacheDir?: string;
  /** Size cap of the disk cache in bytes, LRU-evicted (default: no cap). */
  cacheSize?: number;
  /** Remote content cache: `redis://host:port` (a cluster: any node). */
  redis?: string;
  /** Whole-layer fills into the disk cache after a source read (default "background"). */
  prefetch?: PrefetchMode;
  /** Where blobs come from (default: opened from the archive's recorded reference; the caller keeps ownership). */
  source?: ImageSource;
  /** Plain http for the registry (when the store opens the source). */
  insecure?: boolean;
  credentials?: Credentials;
  /** Deadline of one Redis command (ms, default 500). */
  redisTimeoutMs?: number;
  /** Bytes of inflated intervals and Redis chunks kept in memory (default 48 MiB). */
  memoryCacheBytes?: number;
}

export interface StorageStats {
  tiers: { memory: TierStats; disk: TierStats; redis: TierStats | null; source: TierStats };
  /** Compressed bytes fetched from the source by reads (spans) and by fills. */
  sourceWireBytes: { reads: number; fills: number };
  fills: FillStats;
  cacheDir: string;
  redis: { url: string; up: boolean } | null;
}

interface LayerSlot extends SourceLayer, FillLayer {
  /** null when the diff_id is not sha256 (no disk cache or Redis for it). */
  hex: string;
  cacheable: boolean;
  pinned: PinnedLayer | null;
  probedAt: number;
  diskFillStarted: boolean;
  /** When a disk fill of this layer last failed (ms since the epoch; 0: never). */
  diskFillFailedAt: number;
  redisFillEpoch: number;
  redisFillAt: number;
}

const OPTION_SCHEMA = {
  archive: 'object',
  cacheDir: 'string',
  cacheSize: 'number',
  redis: 'string',
  prefetch: 'string',
  source: 'object',
  insecure: 'boolean',
  credentials: 'object',
  redisTimeoutMs: 'number',
  memoryCacheBytes: 'number',
} as const;

/** How long "not in the disk cache" is believed before looking again (another process may fill it). */
const DISK_PROBE_MS = 1000;
/** Least time between two Redis uploads of one layer (after Redis lost it). */
const REDIS_REFILL_MS = 10_000;
const MAX_SYMLINK_HOPS = 40;
/** After a failed eager fill, reads of that layer go through the other tiers for this long before trying again. */
const EAGER_RETRY_MS = 60_000;

function checkStoreOptions(options: LayerStoreOptions): void {
  if (options === null || typeof options !== 'object') throw new ClipError('EINVAL', 'LayerStore.open: options must be an object');
  for (const [key, value] of Object.entries(options)) {
    const kind = (OPTION_SCHEMA as Record<string, string>)[key];
    if (!kind) throw new ClipError('EINVAL', `LayerStore.open: unknown option "${key}" (known: ${Object.keys(OPTION_SCHEMA).join(', ')})`);
    if (value === undefined) continue;
    if (key === 'archive') {
      if (typeof value !== 'string' && !(value instanceof ClipArchive)) throw new ClipError('EINVAL', 'LayerStore.open: "archive" must be a path or a ClipArchive');
    } else if (key === 'prefetch') {
      if (value !== 'none' && value !== 'background' && value !== 'eager') throw new ClipError('EINVAL', 'LayerStore.open: "prefetch" must be "none", "background" or "eager"');
    } else if (kind === 'object') {
      if (typeof value !== 'object' || value === null) throw new ClipError('EINVAL', `LayerStore.open: "${key}" must be an object`);
    } else {
      checkOptions('LayerStore.open', { [key]: value }, { [key]: kind as 'string' | 'number' | 'boolean' });
    }
  }
  if (options.archive === undefined) throw new ClipError('EINVAL', 'LayerStore.open: "archive" is required');
}

export class LayerStore {
  readonly archive: ClipArchive;
  readonly disk: DiskCache;
  readonly redis: RedisTier | null;
  readonly prefetchMode: PrefetchMode;
  private readonly layers: LayerSlot[];
  private readonly memory = new TierMetrics();
  private readonly diskMetrics = new TierMetrics();
  private readonly sourceTier: SourceTier;
  private readonly fillStats: FillStats = { started: 0, completed: 0, foundCached: 0, uploaded: 0, failed: 0, bytes: 0, wireBytes: 0 };
  /** Disk fills, by layer hex: resolve with the layer's path. */
  private readonly fills = new Singleflight<string, string>();
  /** Redis uploads, by layer hex: resolve true when this store uploaded it. */
  private readonly uploads = new Singleflight<string, boolean>();
  private readonly probes = new Singleflight<number, PinnedLayer | null>();
  private readonly abort = new AbortController();
  private sourcePromise: Promise<ImageSource> | null = null;
  private closed = false;
  private readonly untrace: Array<() => void>;

  private constructor(
    archive: ClipArchive,
    private readonly ownsArchive: boolean,
    private readonly givenSource: ImageSource | undefined,
    private readonly options: LayerStoreOptions,
  ) {
    this.archive = archive;
    this.prefetchMode = options.prefetch ?? 'background';
    this.disk = new DiskCache(defaultCacheDir(options.cacheDir), options.cacheSize ?? Infinity);
    const memoryBytes = options.memoryCacheBytes ?? 48 << 20;
    this.redis = options.redis
      ? new RedisTier(options.redis, this.memory, {
          commandTimeoutMs: options.redisTimeoutMs,
          connectTimeoutMs: options.redisTimeoutMs,
          memoryBytes: Math.floor(memoryBytes / 3),
        })
      : null;
    // Without Redis, the source tier has it all.
    this.sourceTier = new SourceTier(() => this.openSource(), this.memory, this.redis ? memoryBytes - Math.floor(memoryBytes / 3) : memoryBytes);
    this.untrace = [
      traceGauge('sourceInflated', () => this.sourceTier.cachedBytes.inflated),
      traceGauge('sourceFetched', () => this.sourceTier.cachedBytes.fetched),
    ];
    this.layers = archive.layers().map((l, index) => {
      const hex = diffIdHex(l.diffId);
      const descriptor: Descriptor = { mediaType: l.mediaType, digest: l.digest, size: l.compressedSize };
      return {
        index,
        hex: hex ?? '',
        cacheable: hex !== null,
        diffId: l.diffId,
        descriptor,
        format: l.format,
        uncompressedSize: l.uncompressedSize,
        checkpoints: () => archive.checkpoints(index),
        // In place in the archive's mapping: a multi-GiB layer's windows are MiBs.
        reader: () => new LayerReader({ archive, layer: index }),
        pinned: null,
        probedAt: 0,
        diskFillStarted: false,
        diskFillFailedAt: 0,
        redisFillEpoch: -1,
        redisFillAt: 0,
      };
    });
  }

  /**
   * Opens a store over an archive. Nothing is fetched yet; the image source
   * is opened on the first read that needs it.
   * Errors: EINVAL (bad options, a bad Redis URL), ENOENT/ECORRUPT (the
   * archive), EIO (the cache directory cannot be created).
   */
  static async open(options: LayerStoreOptions): Promise<LayerStore> {
    checkStoreOptions(options);
    const owns = typeof options.archive === 'string';
    const archive = typeof options.archive === 'string' ? ClipArchive.open(options.archive) : options.archive;
    try {
      return new LayerStore(archive, owns, options.source, options);
    } catch (e) {
      if (owns) archive.close();
      throw e;
    }
  }

  private openSource(): Promise<ImageSource> {
    if (this.givenSource) return Promise.resolve(this.givenSource);
    if (!this.sourcePromise) {
      this.sourcePromise = (async () => {
        const reference = this.archive.imageConfig().reference;
        const ref = parseImageReference(reference);
        return openImageSource(ref, { insecure: this.options.insecure, credentials: this.options.credentials });
      })();
      this.sourcePromise.catch(() => {
        this.sourcePromise = null; // try again on the next read
      });
    }
    return this.sourcePromise;
  }

  private slot(layerIndex: number): LayerSlot {
    if (this.closed) throw new ClipError('EINVAL', 'the layer store is closed');
    const slot = Number.isInteger(layerIndex) ? this.layers[layerIndex] : undefined;
    if (!slot) throw new ClipError('EINVAL', `layer index ${layerIndex} is out of range (the archive has ${this.layers.length} layers)`);
    return slot;
  }

  /** Number of layers in the archive. */
  get layerCount(): number {
    return this.layers.length;
  }

  /**
   * Uncompressed bytes [offset, offset + length) of layer `layerIndex`,
   * through the tiers. Concurrent misses for the same interval, chunk or
   * layer fill coalesce.
   * Errors: EINVAL (bad layer or range, closed store); from the source tier
   * when nothing above it has the bytes: EIO, ETRUNCATED, ENOENT, EAUTH,
   * ECORRUPT, EDIGEST.
   */
  read(layerIndex: number, offset: number, length: number): Promise<Buffer> {
    return this.readBytes(layerIndex, offset, length, false).then((r) => r.bytes);
  }

  /**
   * read() for a caller that uses the bytes before its turn of the event
   * loop ends (the mount replying to the kernel): bytes from the source
   * tier's memory may be a view of it (`owned` false; SourceTier.readView),
   * saving a copy and, on a cold walk, up to a Buffer per miss in flight
   * at the peak. `owned` true: a Buffer that is the caller's alone.
   */
  readForReply(layerIndex: number, offset: number, length: number): Promise<ReadBytes> {
    return this.readBytes(layerIndex, offset, length, true);
  }

  private readBytes(layerIndex: number, offset: number, length: number, view: boolean): Promise<ReadBytes> {
    let slot: LayerSlot;
    try {
      slot = this.slot(layerIndex);
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > slot.uncompressedSize) {
        throw new ClipError('EINVAL', `range [${offset}, +${length}) is outside layer ${layerIndex} (${slot.uncompressedSize} bytes)`);
      }
    } catch (e) {
      return Promise.reject(e);
    }
    if (length === 0) return Promise.resolve({ bytes: Buffer.alloc(0), owned: true });
    // The warm path, kept free of extra awaits: one pread.
    const pinned = slot.pinned;
    if (pinned) {
      const start = performance.now();
      return pinned.read(offset, length).then(
        (out) => {
          this.diskMetrics.hit(length, since(start));
          return { bytes: out, owned: true };
        },
        async (e: Error) => {
          this.diskMetrics.errors++;
          log.warn({ layer: slot.diffId, err: e.message }, 'reading the cached layer failed; reading through the other tiers');
          await this.unpin(slot);
          return this.readMissed(slot, offset, length, view);
        },
      );
    }
    return this.readMissed(slot, offset, length, view);
  }

  /** read() when the layer is not pinned: look on disk again, then Redis, then the source. */
  private async readMissed(slot: LayerSlot, offset: number, length: number, view: boolean): Promise<ReadBytes> {
    // 1. Disk cache.
    let pinned = await this.probeDisk(slot);
    // Eager: wait for the fill, unless it failed recently (a full disk must not turn every read into a layer download).
    if (!pinned && this.prefetchMode === 'eager' && slot.cacheable && Date.now() - slot.diskFillFailedAt > EAGER_RETRY_MS) {
      try {
        await this.whenCached(slot.index);
        pinned = slot.pinned;
      } catch (e) {
        log.warn({ layer: slot.diffId, err: (e as Error).message }, 'eager fill failed; reading through the other tiers');
      }
    }
    if (pinned) {
      const start = performance.now();
      try {
        const out = await pinned.read(offset, length);
        this.diskMetrics.hit(length, since(start));
        return { bytes: out, owned: true };
      } catch (e) {
        this.diskMetrics.errors++;
        log.warn({ layer: slot.diffId, err: (e as Error).message }, 'reading the cached layer failed; reading through the other tiers');
        await this.unpin(slot);
      }
    } else {
      this.diskMetrics.misses++;
    }

    // 2. Redis.
    const redis = this.redis;
    if (redis && slot.cacheable && redis.usable) {
      try {
        const meta = await redis.meta(slot.hex);
        if (meta && meta.size === slot.uncompressedSize) return { bytes: await redis.read(slot.hex, meta, offset, length), owned: true };
        redis.metrics.misses++;
      } catch (e) {
        if (e instanceof RedisMiss) slot.redisFillEpoch = -1; // it lost the layer: upload it again
      }
    }

    // 3. Source. A plain-tar layer has no checkpoints and so no span digests:
    // a Range of it can't be proven on its own, only the whole blob's digest
    // can. Such a layer is read from its verified disk-cache fill (whatever
    // --prefetch says), never from a bare Range.
    if (slot.format === 'tar') return { bytes: await this.readVerifiedTar(slot, offset, length), owned: true };
    const out = view ? await this.sourceTier.readView(slot, offset, length) : { bytes: await this.sourceTier.read(slot, offset, length), owned: true };
    this.afterSourceRead(slot);
    return out;
  }

  /** A plain-tar layer's bytes, once the whole layer is in the disk cache and matched its digest. */
  private async readVerifiedTar(slot: LayerSlot, offset: number, length: number): Promise<Buffer> {
    const start = performance.now();
    try {
      await this.whenCached(slot.index);
      const pinned = slot.pinned;
      if (!pinned) throw new ClipError('EIO', 'it left the disk cache');
      const out = await pinned.read(offset, length);
      this.sourceTier.metrics.hit(length, since(start));
      return out;
    } catch (e) {
      this.sourceTier.metrics.errors++;
      const err = e as Error;
      throw new ClipError(
        isClipError(err) && err.code !== 'EUNSUPPORTED' ? err.code : 'EIO',
        `layer ${slot.index} (${slot.diffId}) is a plain tar, whose bytes are served only from a verified disk-cache copy, and that failed: ${err.message}`,
      );
    }
  }

  /** Looks for the layer in the disk cache (at most once a second per layer) and pins it. */
  private async probeDisk(slot: LayerSlot): Promise<PinnedLayer | null> {
    if (!slot.cacheable || Date.now() - slot.probedAt < DISK_PROBE_MS) return null;
    return this.probes.run(slot.index, async () => {
      slot.probedAt = Date.now();
      const pinned = await this.disk.pin(slot.hex, slot.uncompressedSize).catch((e: Error) => {
        log.warn({ layer: slot.diffId, err: e.message }, 'cannot open the cached layer');
        return null;
      });
      if (pinned) {
        if (this.closed) {
          await pinned.close();
          return null;
        }
        slot.pinned = pinned;
        this.sourceTier.forgetLayer(slot.index);
        // A verified layer on disk seeds Redis if Redis lacks it (an earlier
        // upload may have died with Redis): reads of it never reach the
        // source again, so this is where the fleet gets it.
        this.upload(slot, pinned.path);
      }
      return pinned;
    });
  }

  private async unpin(slot: LayerSlot): Promise<void> {
    const p = slot.pinned;
    slot.pinned = null;
    slot.probedAt = Date.now();
    await p?.close().catch(() => undefined);
  }

  private afterSourceRead(slot: LayerSlot): void {
    if (!slot.cacheable || this.closed) return;
    if (this.prefetchMode !== 'none' && !slot.diskFillStarted) {
      slot.diskFillStarted = true;
      // The upload follows the disk fill, from the verified file.
      this.fill(slot).catch((e: Error) => {
        if (!this.closed) log.warn({ layer: slot.diffId, err: e.message }, 'background fill failed; reads go on from the other tiers');
      });
      return;
    }
    // No disk fill (prefetch none, or it failed): Redis is still filled, from the source.
    if (!this.fills.get(slot.hex)) this.upload(slot, null);
  }

  /**
   * Starts (or joins) a background upload of `slot`'s layer to Redis, from
   * the disk cache file `path` or else the source, unless this store
   * uploaded it since Redis last came back, or tried within REDIS_REFILL_MS.
   * Never rejects: failures are logged and counted.
   */
  private upload(slot: LayerSlot, path: string | null): void {
    const redis = this.redis;
    if (!redis || !redis.usable || this.closed || slot.redisFillEpoch === redis.epoch || Date.now() - slot.redisFillAt < REDIS_REFILL_MS) return;
    slot.redisFillEpoch = redis.epoch;
    slot.redisFillAt = Date.now();
    const ctx = this.fillContext();
    void this.uploads
      .run(slot.hex, () => uploadLayer(ctx, redis, slot, path))
      .then(
        (uploaded) => {
          if (uploaded) log.info({ layer: slot.diffId, redis: redis.client.address }, 'layer uploaded to redis');
        },
        (e: Error) => {
          if (!this.closed) log.warn({ layer: slot.diffId, err: e.message }, 'uploading the layer to redis failed; reads go on from the other tiers');
        },
      );
  }

  private fillContext(): FillContext {
    return { disk: this.disk, redis: this.redis, source: () => this.openSource(), signal: this.abort.signal, stats: this.fillStats };
  }

  /** Runs (or joins) the disk fill of `slot`'s layer; pins the result, then uploads it to Redis in the background. */
  private fill(slot: LayerSlot): Promise<string> {
    const ctx = this.fillContext();
    return this.fills.run(slot.hex, async () => {
      const started = performance.now();
      let filled: { path: string; filled: boolean };
      try {
        filled = await fillDisk(ctx, this.disk, slot);
      } catch (e) {
        for (const s of this.layers) if (s.hex === slot.hex) s.diskFillFailedAt = Date.now();
        throw e;
      }
      if (filled.filled) log.info({ layer: slot.diffId, bytes: slot.uncompressedSize, ms: Math.round(since(started)) }, 'layer cached on disk');
      for (const s of this.layers) {
        if (s.hex === slot.hex && !s.pinned && !this.closed) {
          s.probedAt = 0;
          await this.probeDisk(s);
        }
      }
      this.disk.evict();
      this.upload(slot, filled.path);
      return filled.path;
    });
  }

  /**
   * The path of layer `layerIndex` in the disk cache, if it is there and
   * pinned by this store right now; null otherwise (nothing is fetched).
   */
  cachedLayerPath(layerIndex: number): string | null {
    return this.slot(layerIndex).pinned?.path ?? null;
  }

  /**
   * Resolves with the disk cache path of layer `layerIndex` once it is
   * there, filling it (or waiting for the process filling it) if needed.
   * The store keeps it pinned until close().
   * Errors: EUNSUPPORTED (a non-sha256 diff_id), the fill's errors (EDIGEST,
   * ECORRUPT, ETRUNCATED, EIO incl. a full disk, EBUSY when closing).
   */
  async whenCached(layerIndex: number): Promise<string> {
    const slot = this.slot(layerIndex);
    if (!slot.cacheable) throw new ClipError('EUNSUPPORTED', `layer ${layerIndex} has diff_id ${slot.diffId}; only sha256 layers are cached`);
    for (let attempt = 0; ; attempt++) {
      if (slot.pinned) return slot.pinned.path;
      slot.probedAt = 0;
      const pinned = await this.probeDisk(slot);
      if (pinned) return pinned.path;
      slot.diskFillStarted = true;
      await this.fill(slot);
      const now = this.cachedLayerPath(layerIndex); // pinned by fill() (TS can't see the await changed it)
      if (now) return now;
      if (attempt < 3) continue; // evicted between fill and pin: try again
      throw new ClipError('EIO', `layer ${slot.diffId} could not be kept in the disk cache`);
    }
  }

  /**
   * Fills layer `layerIndex` (or every layer) into the disk cache now.
   * Resolves when done; never rejects: failures are logged and counted in
   * stats().fills (use whenCached to act on them).
   */
  async prefetch(layerIndex?: number): Promise<void> {
    const indexes = layerIndex === undefined ? this.layers.map((l) => l.index) : [this.slot(layerIndex).index];
    await Promise.all(
      indexes.map((i) =>
        this.whenCached(i).catch((e: Error) => {
          if (!this.closed) log.warn({ layer: this.layers[i].diffId, err: e.message }, 'prefetch failed');
        }),
      ),
    );
  }

  /** Resolves `path` in the archive, following symlinks (within the image) in every component, and the last when `followLast`. */
  resolve(path: string, followLast = true): { ino: number; stat: ArchiveStat } {
    const pending = path.split('/').filter((c) => c !== '' && c !== '.');
    let dir = ROOT_INO;
    let hops = 0;
    let ino = ROOT_INO;
    let stat = this.archive.stat(ROOT_INO);
    while (pending.length) {
      const name = pending.shift()!;
      if (stat.type !== 'dir') throw new ClipError('ENOENT', `${path}: a component is not a directory`);
      if (name === '..') {
        ino = stat.parent ?? ROOT_INO;
        dir = ino;
        stat = this.archive.stat(ino);
        continue;
      }
      const child = this.archive.lookup(dir, name);
      if (child === null) throw new ClipError('ENOENT', `${path}: no such file in the image`);
      const childStat = this.archive.stat(child);
      if (childStat.type === 'symlink' && (pending.length > 0 || followLast)) {
        if (++hops > MAX_SYMLINK_HOPS) throw new ClipError('EINVAL', `${path}: too many levels of symbolic links`);
        const target = this.archive.readlink(child);
        const parts = target.split('/').filter((c) => c !== '' && c !== '.');
        pending.unshift(...parts);
        if (target.startsWith('/')) {
          dir = ROOT_INO;
          ino = ROOT_INO;
          stat = this.archive.stat(ROOT_INO);
        }
        continue; // relative: resolved from `dir`, where the link lives
      }
      ino = child;
      stat = childStat;
      if (stat.type === 'dir') dir = ino;
    }
    return { ino, stat };
  }

  private fileAt(path: string): ArchiveStat {
    const { stat } = this.resolve(path);
    if (stat.type !== 'file') throw new ClipError('EINVAL', `${path} is not a regular file (it is a ${stat.type})`);
    if (stat.size > 0 && stat.layer === null) throw new ClipError('ECORRUPT', `${path}: the archive names no layer for its content`);
    return stat;
  }

  /**
   * The whole content of the regular file at `path` (symlinks followed).
   * Errors: ENOENT, EINVAL (not a regular file), and read()'s.
   */
  async readFile(path: string): Promise<Buffer> {
    const stat = this.fileAt(path);
    if (stat.size === 0) return Buffer.alloc(0);
    return this.read(stat.layer!, stat.dataOffset, stat.size);
  }

  /**
   * A stream of the file at `path`, read through the tiers in pieces of
   * `chunkSize` bytes (default 1 MiB), so memory stays bounded for any size.
   * Errors: as readFile (lookup errors are thrown at once; read errors
   * destroy the stream).
   */
  createReadStream(path: string, options: { chunkSize?: number } = {}): Readable {
    const stat = this.fileAt(path);
    return this.streamContent(stat, options.chunkSize);
  }

  /** A stream of a regular file's content given its stat (used by extract). */
  streamContent(stat: ArchiveStat, chunkSize = 1 << 20): Readable {
    const store = this;
    async function* pieces(): AsyncIterable<Buffer> {
      for (let at = 0; at < stat.size; at += chunkSize) {
        yield await store.read(stat.layer!, stat.dataOffset + at, Math.min(chunkSize, stat.size - at));
      }
    }
    return Readable.from(pieces(), { objectMode: false, highWaterMark: 1 });
  }

  /** The live per-tier counters and histograms (for the Prometheus export); redis is null without Redis. */
  tierMetrics(): { memory: TierMetrics; disk: TierMetrics; redis: TierMetrics | null; source: TierMetrics } {
    return { memory: this.memory, disk: this.diskMetrics, redis: this.redis?.metrics ?? null, source: this.sourceTier.metrics };
  }

  /** Per-tier counters and latencies, fills, and where things live. JSON-serializable. */
  stats(): StorageStats {
    return {
      tiers: {
        memory: this.memory.toJSON(),
        disk: this.diskMetrics.toJSON(),
        redis: this.redis ? this.redis.metrics.toJSON() : null,
        source: this.sourceTier.metrics.toJSON(),
      },
      sourceWireBytes: { reads: this.sourceTier.wireBytes, fills: this.fillStats.wireBytes },
      fills: { ...this.fillStats },
      cacheDir: this.disk.dir,
      redis: this.redis ? { url: this.redis.url, up: this.redis.usable } : null,
    };
  }

  /**
   * Stops background fills (their partial files are removed), releases the
   * pinned layers, closes Redis, the source it opened and the archive it
   * opened, and logs the stats. Safe to call twice.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
    for (const remove of this.untrace) remove();
    await Promise.allSettled(this.fills.pending());
    await Promise.allSettled(this.uploads.pending());
    await Promise.allSettled(this.probes.pending());
    for (const slot of this.layers) await this.unpin(slot);
    this.redis?.close();
    if (!this.givenSource && this.sourcePromise) {
      const source = await this.sourcePromise.catch(() => null);
      await source?.close().catch(() => undefined);
    }
    if (this.ownsArchive) this.archive.close();
    log.info({ stats: this.stats() }, 'layer store closed');
  }
}
