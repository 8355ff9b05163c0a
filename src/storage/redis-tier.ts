/**
 * The remote content cache on Redis: decompressed layers, content-addressed
 * by diff_id, in fixed-size chunks, shared by a fleet of hosts.
 *
 *   clip:{<hex>}:<n>        chunk n: bytes [n * chunkSize, (n + 1) * chunkSize) of the layer
 *   clip:{<hex>}:meta       JSON {v, size, chunkSize, sha256: [hex per chunk]}; written last,
 *                           only after the whole layer hashed to its diff_id
 *   clip:{<hex>}:filling    a soft fill lock (SET NX PX), so hosts don't upload the same layer at once
 *
 * The `{<hex>}` hash tag puts all of a layer's keys in one Redis Cluster
 * slot. A reader needs the meta key (present means the upload completed
 * and was verified) and checks every chunk it fetches against the meta's
 * sha256 and size, so an evicted chunk (GET nil) or a damaged one is a miss,
 * never wrong bytes. A range read fetches only the chunks it overlaps.
 *
 * Redis is an optimisation: any failure (refused, reset, a reply later
 * than the command deadline, an error reply) marks the tier down for a
 * backoff (1 s, doubling to 30 s) with one warning, and the read falls
 * through to the next tier. The first command after the backoff probes it
 * again; success logs the recovery and bumps `epoch`, so the store knows
 * Redis may have lost data meanwhile and may fill again.
 */
import { createHash } from 'node:crypto';
import { ClipError } from '../errors';
import { log } from '../log';
import { ByteLru } from './byte-lru';
import { since, TierMetrics } from './metrics';
import { RedisClient, RedisClientOptions } from './redis-client';
import { Singleflight } from './singleflight';

export const DEFAULT_CHUNK_SIZE = 1 << 20;

export interface RedisLayerMeta {
  v: 1;
  /** Bytes of the layer. */
  size: number;
  /** Bytes per chunk (the last may be shorter). */
  chunkSize: number;
  /** sha256 (hex) of each chunk. */
  sha256: string[];
}

export interface RedisTierOptions extends RedisClientOptions {
  /** Bytes per chunk for layers this process uploads. Default 1 MiB. */
  chunkSize?: number;
  /** Bytes of recently fetched chunks kept in memory. Default 16 MiB. */
  memoryBytes?: number;
}

/** A chunk that Redis no longer has (evicted) or that fails its check. */
export class RedisMiss extends Error {}

const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30_000;
/** How long "not in Redis" is believed before asking again (another host may have uploaded it). */
const ABSENT_TTL_MS = 5000;
const FILL_LOCK_MS = 60_000;

const tagOf = (hex: string) => `{${hex}}`;
const chunkKey = (hex: string, n: number) => `clip:{${hex}}:${n}`;
const metaKey = (hex: string) => `clip:{${hex}}:meta`;
const fillKey = (hex: string) => `clip:{${hex}}:filling`;

function isMeta(value: unknown): value is RedisLayerMeta {
  const m = value as RedisLayerMeta;
  return (
    typeof m === 'object' &&
    m !== null &&
    m.v === 1 &&
    Number.isSafeInteger(m.size) &&
    Number.isSafeInteger(m.chunkSize) &&
    m.chunkSize > 0 &&
    Array.isArray(m.sha256) &&
    m.sha256.length === Math.ceil(m.size / m.chunkSize) &&
    m.sha256.every((h) => typeof h === 'string' && /^[0-9a-f]{64}$/.test(h))
  );
}

export class RedisTier {
  readonly metrics = new TierMetrics();
  readonly memoryMetrics: TierMetrics;
  readonly client: RedisClient;
  readonly chunkSize: number;
  /** Bumped whenever Redis comes back after being down. */
  epoch = 0;
  private downUntil = 0;
  private backoffMs = MIN_BACKOFF_MS;
  private down = false;
  private readonly metas = new Map<string, { meta: RedisLayerMeta | null; at: number }>();
  private readonly chunks: ByteLru<string>;
  private readonly chunkFlight = new Singleflight<string, Buffer>();

  /** Errors: EINVAL for a bad URL. Nothing is sent until the first read. */
  constructor(
    readonly url: string,
    memoryMetrics: TierMetrics,
    options: RedisTierOptions = {},
  ) {
    try {
      this.client = new RedisClient(url, options);
    } catch (e) {
      throw new ClipError('EINVAL', `--redis: ${(e as Error).message}`);
    }
    this.chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.chunks = new ByteLru(options.memoryBytes ?? 16 << 20);
    this.memoryMetrics = memoryMetrics;
  }

  /** False while backing off after a failure. */
  get usable(): boolean {
    return !this.down || Date.now() >= this.downUntil;
  }

  /** Notes a failure: warns once, backs off. */
  failed(e: unknown, doing: string): void {
    this.metrics.errors++;
    if (!this.down) {
      log.warn({ redis: this.client.address, err: (e as Error).message }, `redis unavailable while ${doing}; falling back to the next tier`);
      this.down = true;
      this.backoffMs = MIN_BACKOFF_MS;
    } else {
      this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
    }
    this.downUntil = Date.now() + this.backoffMs;
  }

  private succeeded(): void {
    if (this.down) {
      this.down = false;
      this.epoch++;
      this.metas.clear(); // it may have restarted empty, or been filled meanwhile
      log.info({ redis: this.client.address }, 'redis is back');
    }
  }

  /** Runs a Redis call, recording failure/success for the backoff. */
  private async guarded<T>(doing: string, fn: () => Promise<T>): Promise<T> {
    try {
      const out = await fn();
      this.succeeded();
      return out;
    } catch (e) {
      this.failed(e, doing);
      throw e;
    }
  }

  /**
   * The meta of layer `hex`, or null when Redis does not hold it complete.
   * Answers from memory for a while. Errors: whatever Redis throws (the
   * tier is then marked down).
   */
  async meta(hex: string): Promise<RedisLayerMeta | null> {
    const known = this.metas.get(hex);
    if (known && (known.meta !== null || Date.now() - known.at < ABSENT_TTL_MS)) return known.meta;
    const raw = await this.guarded('reading layer metadata', () => this.client.get(metaKey(hex), tagOf(hex)));
    let meta: RedisLayerMeta | null = null;
    if (raw) {
      try {
        const parsed: unknown = JSON.parse(raw.toString('utf8'));
        if (isMeta(parsed)) meta = parsed;
      } catch {
        // treated as absent
      }
      if (!meta) log.warn({ layer: `sha256:${hex}` }, 'redis holds unreadable metadata for this layer; ignoring it');
    }
    this.metas.set(hex, { meta, at: Date.now() });
    return meta;
  }

  /** Forgets what is known about `hex` (after an eviction was noticed). */
  forget(hex: string): void {
    this.metas.delete(hex);
    this.chunks.deleteWhere((k) => k.startsWith(hex));
  }

  /** Chunk n of `hex`, checked against the meta. Errors: RedisMiss (evicted, damaged), Redis errors. */
  private chunk(hex: string, meta: RedisLayerMeta, n: number): Promise<Buffer> {
    const key = `${hex}:${n}`;
    const cached = this.chunks.get(key);
    if (cached) return Promise.resolve(cached);
    return this.chunkFlight.run(key, async () => {
      const value = await this.guarded('reading a chunk', () => this.client.get(chunkKey(hex, n), tagOf(hex)));
      const want = Math.min(meta.chunkSize, meta.size - n * meta.chunkSize);
      if (value === null) throw new RedisMiss(`chunk ${n} of sha256:${hex} is gone from redis (evicted?)`);
      if (value.length !== want || createHash('sha256').update(value).digest('hex') !== meta.sha256[n]) {
        throw new RedisMiss(`chunk ${n} of sha256:${hex} in redis does not match its digest`);
      }
      this.chunks.set(key, value);
      return value;
    });
  }

  /**
   * Layer bytes [offset, offset + length) from the chunks that hold them.
   * Errors: RedisMiss, Redis errors; the caller falls through.
   */
  async read(hex: string, meta: RedisLayerMeta, offset: number, length: number): Promise<Buffer> {
    const start = performance.now();
    const first = Math.floor(offset / meta.chunkSize);
    const last = Math.floor((offset + length - 1) / meta.chunkSize);
    const allInMemory = (() => {
      for (let n = first; n <= last; n++) if (!this.chunks.get(`${hex}:${n}`)) return false;
      return true;
    })();
    const parts: Promise<Buffer>[] = [];
    for (let n = first; n <= last; n++) parts.push(this.chunk(hex, meta, n));
    let chunks: Buffer[];
    try {
      chunks = await Promise.all(parts);
    } catch (e) {
      if (e instanceof RedisMiss) {
        this.metrics.misses++;
        this.forget(hex);
        log.warn({ layer: `sha256:${hex}`, why: e.message }, 'redis lost part of a layer; falling back to the next tier');
      }
      throw e;
    }
    const out = Buffer.allocUnsafe(length);
    let written = 0;
    for (let i = 0; i < chunks.length; i++) {
      const chunkStart = (first + i) * meta.chunkSize;
      const from = Math.max(offset, chunkStart) - chunkStart;
      const to = Math.min(offset + length, chunkStart + chunks[i].length) - chunkStart;
      written += chunks[i].copy(out, written, from, to);
    }
    (allInMemory ? this.memoryMetrics : this.metrics).hit(length, since(start));
    return out;
  }

  /**
   * The whole layer, chunk by chunk, in order (for a disk fill from Redis):
   * one chunk in flight, so memory stays at about one chunk.
   * Errors: RedisMiss, Redis errors.
   */
  async *stream(hex: string, meta: RedisLayerMeta): AsyncIterable<Buffer> {
    for (let n = 0; n < meta.sha256.length; n++) {
      const value = await this.guarded('streaming a layer', () => this.client.get(chunkKey(hex, n), tagOf(hex)));
      const want = Math.min(meta.chunkSize, meta.size - n * meta.chunkSize);
      if (value === null) throw new RedisMiss(`chunk ${n} of sha256:${hex} is gone from redis (evicted?)`);
      if (value.length !== want || createHash('sha256').update(value).digest('hex') !== meta.sha256[n]) {
        throw new RedisMiss(`chunk ${n} of sha256:${hex} in redis does not match its digest`);
      }
      yield value;
    }
  }

  /**
   * Starts an upload of layer `hex` (`size` bytes), or resolves null when
   * another host is uploading it right now. Errors: Redis errors.
   */
  async beginUpload(hex: string, size: number): Promise<RedisUpload | null> {
    const token = `${process.pid}-${Math.random().toString(36).slice(2)}`;
    const got = await this.guarded('starting an upload', () =>
      this.client.set(fillKey(hex), token, tagOf(hex), { pxMs: FILL_LOCK_MS, nx: true }),
    );
    return got ? new RedisUpload(this, hex, size, this.chunkSize) : null;
  }

  /** Used by RedisUpload. */
  async putChunk(hex: string, n: number, value: Buffer): Promise<void> {
    await this.guarded('uploading a chunk', () => this.client.set(chunkKey(hex, n), value, tagOf(hex)));
  }

  /** Used by RedisUpload: the meta goes last, making the layer visible. */
  async putMeta(hex: string, meta: RedisLayerMeta): Promise<void> {
    await this.guarded('finishing an upload', async () => {
      await this.client.set(metaKey(hex), JSON.stringify(meta), tagOf(hex));
      await this.client.del([fillKey(hex)], tagOf(hex));
    });
    this.metas.set(hex, { meta, at: Date.now() });
  }

  /** Used by RedisUpload on failure: drops the chunks written so far (best effort). */
  async dropUpload(hex: string, chunks: number): Promise<void> {
    const keys = [fillKey(hex)];
    for (let n = 0; n < chunks; n++) keys.push(chunkKey(hex, n));
    for (let i = 0; i < keys.length; i += 256) await this.client.del(keys.slice(i, i + 256), tagOf(hex)).catch(() => 0);
  }

  close(): void {
    this.client.close();
  }
}

/**
 * One layer being uploaded: bytes pushed in order are cut into chunks, each
 * SET as soon as it is full (one in flight: memory stays at one chunk);
 * finish() writes the meta only when the caller has verified the layer.
 */
export class RedisUpload {
  private buffer: Buffer;
  private filled = 0;
  private next = 0;
  private pushed = 0;
  private readonly hashes: string[] = [];

  constructor(
    private readonly tier: RedisTier,
    readonly hex: string,
    readonly size: number,
    readonly chunkSize: number,
  ) {
    this.buffer = Buffer.allocUnsafe(Math.min(chunkSize, Math.max(1, size)));
  }

  /** Appends layer bytes. Errors: Redis errors (the caller abandons the upload). */
  async push(data: Buffer): Promise<void> {
    let at = 0;
    while (at < data.length) {
      const n = Math.min(this.buffer.length - this.filled, data.length - at);
      data.copy(this.buffer, this.filled, at, at + n);
      this.filled += n;
      at += n;
      this.pushed += n;
      if (this.filled === this.buffer.length) await this.flush();
    }
  }

  private async flush(): Promise<void> {
    if (this.filled === 0) return;
    const value = this.buffer.subarray(0, this.filled);
    this.hashes.push(createHash('sha256').update(value).digest('hex'));
    await this.tier.putChunk(this.hex, this.next, value);
    this.next++;
    this.filled = 0;
    const remaining = this.size - this.pushed;
    if (remaining > 0 && remaining < this.buffer.length) this.buffer = Buffer.allocUnsafe(remaining);
  }

  /** Call once the layer verified: writes the last chunk and the meta. Errors: Redis errors. */
  async finish(): Promise<void> {
    await this.flush();
    await this.tier.putMeta(this.hex, { v: 1, size: this.size, chunkSize: this.chunkSize, sha256: this.hashes });
  }

  /** Abandons the upload, deleting what was written (best effort, never throws). */
  async abort(): Promise<void> {
    await this.tier.dropUpload(this.hex, this.next);
  }
}
