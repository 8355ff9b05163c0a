/**
 * Filling a whole layer, in two independent jobs, each streaming the
 * layer's uncompressed bytes once and hashing them as they pass:
 *
 * - fillDisk: into a partial file of the disk cache, from Redis when Redis
 *   holds the layer complete, else from the source; renamed into place only
 *   when the bytes have the layer's size and hash to its diff_id. The bytes
 *   go through the addon's LayerFill (inflate, hash and pwrite on a libuv
 *   thread), so the tar stream never becomes Buffers in this process, and a
 *   layout's blob file is read by the addon itself. It runs under the
 *   layer's cross-process fill lock; if another process completed the layer
 *   while we waited for the lock, nothing is fetched.
 * - uploadLayer: into Redis chunks, from the verified disk cache file when
 *   there is one (so a slow or failing Redis never holds up or breaks the
 *   disk fill, and the source is not asked twice), else from the source
 *   through gunzip; the meta key that makes the layer visible is written
 *   only after the stream verified. A Redis failure abandons the upload
 *   with a warning.
 *
 * Memory stays bounded whatever the layer's size: the fill holds one blob
 * chunk (at most 128 KiB) and the addon's inflater; an upload one gunzip
 * output chunk (256 KiB) and one Redis chunk (1 MiB) being cut. Each write
 * is awaited before the next chunk is pulled (so a slow disk or Redis
 * slows the stream instead of buffering it).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import { ClipError } from '../errors';
import { log } from '../log';
import { memoryGovernor } from '../mount/memory';
import { native, RawLayerFillOptions } from '../native';
import type { Descriptor, ImageSource } from '../oci';
import { DiskCache, PartialFile } from './disk-cache';
import { RedisTier, RedisUpload } from './redis-tier';

export interface FillLayer {
  index: number;
  hex: string;
  diffId: string;
  descriptor: Descriptor;
  format: 'gzip' | 'tar';
  uncompressedSize: number;
}

export interface FillStats {
  /** Fills that streamed a layer (from any origin). */
  started: number;
  /** Layers this process wrote into the disk cache. */
  completed: number;
  /** Fills that found the layer already complete on disk (another process filled it). */
  foundCached: number;
  /** Layers uploaded to Redis. */
  uploaded: number;
  failed: number;
  /** Uncompressed bytes streamed by fills. */
  bytes: number;
  /** Compressed bytes fetched from the source by fills. */
  wireBytes: number;
  lastError?: string;
}

export interface FillContext {
  disk: DiskCache | null;
  redis: RedisTier | null;
  source(): Promise<ImageSource>;
  signal: AbortSignal;
  stats: FillStats;
}

const GUNZIP_CHUNK = 256 * 1024;
/** Blob bytes of a local blob file the addon feeds per call (see fillInto). */
const FILE_PIECE = 4 << 20;
/**
 * Compressed bytes per chunk read from a blob file. A 1 MiB chunk (the
 * layout source's default) stays alive while gunzip turns it into eight
 * output chunks, long enough to outlive the scavenges the memory governor
 * runs and be promoted, so its memory waited for a full collection:
 * measured filling the demo image's layers, the external memory peaked at
 * 21-23 MiB with 1 MiB chunks and 11-13 MiB with 128 KiB ones, as fast.
 */
const BLOB_CHUNK = 128 * 1024;

/** The blob's uncompressed bytes, streamed. Errors: the source's (EDIGEST, ETRUNCATED, EIO), ECORRUPT for bad gzip. */
async function* fromSource(source: ImageSource, layer: FillLayer, ctx: FillContext): AsyncIterable<Buffer> {
  const counted = async function* (): AsyncIterable<Buffer> {
    for await (const chunk of source.openBlob(layer.descriptor, { chunkBytes: BLOB_CHUNK })) {
      ctx.stats.wireBytes += chunk.length;
      yield chunk;
    }
  };
  const blob = Readable.from(counted(), { objectMode: false, signal: ctx.signal });
  if (layer.format === 'tar') {
    for await (const chunk of blob) yield chunk as Buffer;
    return;
  }
  const gunzip = zlib.createGunzip({ chunkSize: GUNZIP_CHUNK });
  const done = pipeline(blob, gunzip, { signal: ctx.signal }).catch((e: unknown) => e);
  try {
    for await (const chunk of gunzip) yield chunk as Buffer;
  } catch (e) {
    const err = await done;
    throw err instanceof ClipError ? err : wrapGunzip(e, layer);
  }
  const err = await done;
  if (err) throw err instanceof ClipError ? err : wrapGunzip(err, layer);
}

function wrapGunzip(e: unknown, layer: FillLayer): Error {
  const err = e as NodeJS.ErrnoException;
  if (err?.name === 'AbortError') return new ClipError('EBUSY', 'the store is closing');
  if (err instanceof ClipError) return err;
  return new ClipError('ECORRUPT', `layer ${layer.index} (${layer.descriptor.digest}): the blob does not inflate: ${err?.message ?? String(e)}`);
}

/**
 * Streams `origin` through `sink` chunk by chunk, hashing as it goes, and
 * resolves only when the whole stream has the layer's size and hashes to
 * its diff_id. The caller publishes what the sink wrote only after that.
 * Errors: EDIGEST (too long, too short, wrong hash), EBUSY (aborted), the
 * origin's and the sink's.
 */
async function streamVerified(ctx: FillContext, layer: FillLayer, origin: AsyncIterable<Buffer>, sink: (chunk: Buffer) => Promise<void>): Promise<void> {
  ctx.stats.started++;
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of origin) {
    if (ctx.signal.aborted) throw new ClipError('EBUSY', 'the store is closing');
    hash.update(chunk);
    size += chunk.length;
    ctx.stats.bytes += chunk.length;
    if (size > layer.uncompressedSize) {
      throw new ClipError('EDIGEST', `layer ${layer.index} (${layer.diffId}): the stream is longer than the ${layer.uncompressedSize} bytes recorded`);
    }
    await sink(chunk);
    memoryGovernor.note(chunk.length);
  }
  const digest = `sha256:${hash.digest('hex')}`;
  if (size !== layer.uncompressedSize || digest !== layer.diffId) {
    throw new ClipError(
      'EDIGEST',
      `layer ${layer.index}: its uncompressed stream is ${size} bytes hashing to ${digest}; the archive records ${layer.uncompressedSize} bytes, ${layer.diffId}`,
    );
  }
}

function failed(ctx: FillContext, layer: FillLayer, e: unknown): ClipError {
  ctx.stats.failed++;
  const err = e instanceof ClipError ? e : new ClipError('EIO', `filling ${layer.diffId}: ${(e as Error).message}`);
  ctx.stats.lastError = `${layer.diffId}: ${err.message}`;
  return err;
}

/**
 * Streams a layer's blob (or, from Redis, its tar stream) into `partial`
 * through the addon's LayerFill, which inflates, hashes and writes on a
 * libuv thread: the uncompressed bytes never become Buffers (see
 * native/core/layer_filler.h for why), and a layout's blob file is read by
 * the addon itself. Resolves once the stream proved to be the layer.
 */
async function fillInto(ctx: FillContext, layer: FillLayer, partial: PartialFile): Promise<void> {
  ctx.stats.started++;
  const name = `layer ${layer.index} (${layer.diffId})`;
  const aborted = () => new ClipError('EBUSY', 'the store is closing');
  if (ctx.signal.aborted) throw aborted();
  const options: RawLayerFillOptions = { format: layer.format, uncompressedSize: layer.uncompressedSize, diffId: layer.diffId, name };
  let chunks: AsyncIterable<Buffer> | null = null;
  let blobFile: string | null = null;
  let source: ImageSource | null = null;
  if (ctx.redis && ctx.redis.usable) {
    const meta = await ctx.redis.meta(layer.hex).catch(() => null); // a failure is noted by the tier
    if (meta && meta.size === layer.uncompressedSize) {
      chunks = ctx.redis.stream(layer.hex, meta);
      options.format = 'tar'; // Redis holds the uncompressed stream
    }
  }
  if (!chunks) {
    source = await ctx.source();
    if (source.localBlob) {
      blobFile = await source.localBlob(layer.descriptor);
      // Nothing else reads these bytes: the addon checks the blob's digest.
      options.blobDigest = layer.descriptor.digest;
      options.blobSize = layer.descriptor.size;
    } else {
      chunks = source.openBlob(layer.descriptor, { chunkBytes: BLOB_CHUNK });
    }
  }
  const fill = new native.LayerFill(partial.handle.fd, options);
  const cancel = () => fill.cancel();
  ctx.signal.addEventListener('abort', cancel, { once: true });
  try {
    if (blobFile !== null) {
      // In pieces: a piece holds a thread of libuv's pool, which the
      // mount's inflates share, for ~20 ms rather than for the whole layer.
      for (let at = 0, n = 1; n > 0; at += n) {
        n = await fill.pushFile(blobFile, at, FILE_PIECE);
        ctx.stats.wireBytes += n;
      }
    } else {
      for await (const chunk of chunks!) {
        if (ctx.signal.aborted) throw aborted();
        if (source) ctx.stats.wireBytes += chunk.length;
        await fill.push(chunk);
        memoryGovernor.note(chunk.length);
      }
    }
    if (ctx.signal.aborted) throw aborted();
    await fill.finish();
    ctx.stats.bytes += layer.uncompressedSize;
  } catch (e) {
    if (ctx.signal.aborted) throw aborted();
    const err = e as ClipError;
    if (err.code === 'EIO' && /ENOSPC/.test(err.message)) throw new ClipError('EIO', `disk full while filling ${layer.diffId} into ${partial.path}: ${err.message}`);
    throw e;
  } finally {
    ctx.signal.removeEventListener('abort', cancel);
  }
}

/**
 * Fills `layer` into the disk cache, from Redis when Redis holds it
 * complete, else from the source, under the layer's cross-process fill
 * lock. Resolves with the layer's path (`filled` false when another process
 * had already filled it). Errors: EDIGEST, ECORRUPT, ETRUNCATED, EIO (incl.
 * a full disk, no room under the cap), EBUSY when aborted. The partial file
 * is removed on every failure path.
 */
export async function fillDisk(ctx: FillContext, disk: DiskCache, layer: FillLayer): Promise<{ path: string; filled: boolean }> {
  const lock = await disk.lockFill(layer.hex, ctx.signal);
  let partial: PartialFile | null = null;
  try {
    if (disk.has(layer.hex)) {
      ctx.stats.foundCached++;
      return { path: disk.pathFor(layer.hex), filled: false };
    }
    const stale = disk.removePartials(layer.hex);
    if (stale) log.info({ layer: layer.diffId, removed: stale }, 'removed partial files of an interrupted fill');
    if (!disk.makeRoom(layer.uncompressedSize)) {
      throw new ClipError('EIO', `layer ${layer.diffId} (${layer.uncompressedSize} bytes) does not fit under the cache size cap of ${disk.capBytes} bytes`);
    }
    partial = await disk.createPartial(layer.hex);
    await fillInto(ctx, layer, partial);
    const file = partial;
    partial = null;
    const dest = await disk.commitPartial(file, layer.hex);
    ctx.stats.completed++;
    return { path: dest, filled: true };
  } catch (e) {
    throw failed(ctx, layer, e);
  } finally {
    if (partial) await disk.discardPartial(partial);
    await lock.release();
  }
}

/**
 * Uploads `layer` to Redis, chunk by chunk (one chunk in memory), from the
 * verified disk cache file `path` when given, else from the source. The
 * meta key, which makes the layer visible to readers, is written only after
 * the whole stream hashed to the diff_id; any failure deletes the chunks
 * written so far (best effort: with Redis gone they are unreachable anyway,
 * having no meta). Resolves true when uploaded, false when Redis already
 * has it, another host is uploading it, or Redis failed (the tier warns:
 * Redis is an optimisation). Errors: only the origin's (EDIGEST, ECORRUPT,
 * ETRUNCATED, EIO, EBUSY when aborted).
 */
export async function uploadLayer(ctx: FillContext, redis: RedisTier, layer: FillLayer, path: string | null): Promise<boolean> {
  if (!redis.usable) return false;
  let upload: RedisUpload | null;
  try {
    if (await redis.meta(layer.hex)) return false;
    upload = await redis.beginUpload(layer.hex, layer.uncompressedSize);
  } catch {
    return false; // noted by the tier
  }
  if (!upload) return false;
  const origin = path ? fs.createReadStream(path, { highWaterMark: GUNZIP_CHUNK, signal: ctx.signal }) : fromSource(await ctx.source(), layer, ctx);
  const pushing = upload;
  let redisFailed = false;
  try {
    await streamVerified(ctx, layer, origin as AsyncIterable<Buffer>, async (chunk) => {
      try {
        await pushing.push(chunk);
      } catch (e) {
        redisFailed = true;
        throw e;
      }
    });
    redisFailed = true;
    await pushing.finish();
    upload = null;
    ctx.stats.uploaded++;
    return true;
  } catch (e) {
    if (redisFailed) return false; // the tier warned; nothing was published
    throw failed(ctx, layer, e);
  } finally {
    if (upload) await upload.abort();
  }
}
