/**
 * Filling a whole layer: stream its uncompressed bytes once, from Redis when
 * Redis holds it complete, else from the source (the blob streamed through
 * gunzip), hash them as they pass, and write them to the disk cache (a
 * partial file) and/or Redis (chunks). Only when the bytes hash to the
 * layer's diff_id and have its size is the partial file renamed into place
 * and the Redis meta written; otherwise both are thrown away.
 *
 * Memory stays bounded whatever the layer's size: one gunzip output chunk
 * (256 KiB) is in flight to the disk and one Redis chunk (1 MiB) is being
 * cut, and each write is awaited before the next chunk is pulled (so a slow
 * disk or Redis slows the download, instead of buffering it).
 *
 * A sink that fails is dropped (a full disk: its partial file is removed)
 * and the fill goes on for the other; with no sinks left it stops. The
 * disk part runs under the layer's cross-process fill lock; if another
 * process completed the layer while we waited for the lock, nothing is
 * fetched.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import { ClipError } from '../errors';
import { log } from '../log';
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

export interface FillOutcome {
  /** The layer's disk cache path, when it is there now. */
  path: string | null;
  /** True when this call wrote it to disk (false: found it, or disk not wanted). */
  filledDisk: boolean;
  uploadedRedis: boolean;
}

export interface FillContext {
  disk: DiskCache | null;
  redis: RedisTier | null;
  source(): Promise<ImageSource>;
  signal: AbortSignal;
  stats: FillStats;
}

const GUNZIP_CHUNK = 256 * 1024;

/** The blob's uncompressed bytes, streamed. Errors: the source's (EDIGEST, ETRUNCATED, EIO), ECORRUPT for bad gzip. */
async function* fromSource(source: ImageSource, layer: FillLayer, ctx: FillContext): AsyncIterable<Buffer> {
  const counted = async function* (): AsyncIterable<Buffer> {
    for await (const chunk of source.openBlob(layer.descriptor)) {
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

async function writeAll(partial: PartialFile, data: Buffer): Promise<void> {
  let at = 0;
  while (at < data.length) {
    const { bytesWritten } = await partial.handle.write(data, at, data.length - at);
    at += bytesWritten;
  }
}

/**
 * Fills `layer` into the disk cache (when `want.disk`) and Redis (when
 * `want.redis`), as far as each is possible. Resolves with what was done;
 * rejects (EDIGEST, ECORRUPT, ETRUNCATED, EIO, EBUSY when aborted) only when
 * the disk fill was wanted and failed, or no sink survived. Partial files
 * are removed on every failure path.
 */
export async function fillLayer(ctx: FillContext, layer: FillLayer, want: { disk: boolean; redis: boolean }): Promise<FillOutcome> {
  const outcome: FillOutcome = { path: null, filledDisk: false, uploadedRedis: false };
  const disk = want.disk ? ctx.disk : null;
  const lock = disk ? await disk.lockFill(layer.hex, ctx.signal) : null;
  let partial: PartialFile | null = null;
  let upload: RedisUpload | null = null;
  try {
    if (disk) {
      if (disk.has(layer.hex)) {
        ctx.stats.foundCached++;
        outcome.path = disk.pathFor(layer.hex);
        if (!want.redis) return outcome;
      } else {
        const stale = disk.removePartials(layer.hex);
        if (stale) log.info({ layer: layer.diffId, removed: stale }, 'removed partial files of an interrupted fill');
        if (disk.makeRoom(layer.uncompressedSize)) {
          partial = await disk.createPartial(layer.hex);
        } else {
          log.warn({ layer: layer.diffId, size: layer.uncompressedSize, cap: disk.capBytes }, 'layer does not fit under the cache size cap; not caching it on disk');
        }
      }
    }
    // Redis: upload unless it has the layer already (or is down).
    let redisMeta = null;
    if (ctx.redis && ctx.redis.usable) {
      try {
        redisMeta = await ctx.redis.meta(layer.hex);
        if (!redisMeta && want.redis) upload = await ctx.redis.beginUpload(layer.hex, layer.uncompressedSize);
      } catch {
        upload = null; // noted by the tier; the disk fill goes on
      }
    }
    if (!partial && !upload) {
      if (disk && !outcome.path) throw new ClipError('EIO', `layer ${layer.diffId} was not cached: no room under the cache size cap`);
      return outcome;
    }

    ctx.stats.started++;
    const hash = createHash('sha256');
    let size = 0;
    // Cheapest origin first: our own disk (uploading a cached layer), Redis, the source.
    let origin: AsyncIterable<Buffer>;
    let originName: string;
    if (outcome.path) {
      origin = fs.createReadStream(outcome.path, { highWaterMark: GUNZIP_CHUNK, signal: ctx.signal });
      originName = 'disk';
    } else if (redisMeta !== null && ctx.redis !== null && !upload) {
      origin = ctx.redis.stream(layer.hex, redisMeta);
      originName = 'redis';
    } else {
      origin = fromSource(await ctx.source(), layer, ctx);
      originName = 'source';
    }
    log.debug({ layer: layer.diffId, origin: originName, disk: !!partial, redis: !!upload }, 'filling layer');
    for await (const chunk of origin) {
      if (ctx.signal.aborted) throw new ClipError('EBUSY', 'the store is closing');
      hash.update(chunk);
      size += chunk.length;
      ctx.stats.bytes += chunk.length;
      if (size > layer.uncompressedSize) {
        throw new ClipError('EDIGEST', `layer ${layer.index} (${layer.diffId}): the stream is longer than the ${layer.uncompressedSize} bytes recorded`);
      }
      if (partial) {
        try {
          await writeAll(partial, chunk);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          log.warn({ layer: layer.diffId, file: partial.path, err: (e as Error).message }, code === 'ENOSPC' ? 'disk full: abandoning the fill of this layer' : 'cannot write the cache: abandoning the fill of this layer');
          await disk!.discardPartial(partial);
          partial = null;
          ctx.stats.lastError = `${layer.diffId}: ${(e as Error).message}`;
          if (!upload) throw new ClipError('EIO', `filling ${layer.diffId}: ${(e as Error).message}`);
        }
      }
      if (upload) {
        try {
          await upload.push(chunk);
        } catch {
          await upload.abort();
          upload = null; // the tier warned; the disk fill goes on
          if (!partial) {
            if (disk && !outcome.path) throw new ClipError('EIO', `filling ${layer.diffId}: redis failed and the disk cache is not being filled`);
            return outcome;
          }
        }
      }
    }
    const digest = `sha256:${hash.digest('hex')}`;
    if (size !== layer.uncompressedSize || digest !== layer.diffId) {
      throw new ClipError(
        'EDIGEST',
        `layer ${layer.index}: its uncompressed stream is ${size} bytes hashing to ${digest}; the archive records ${layer.uncompressedSize} bytes, ${layer.diffId}`,
      );
    }
    if (partial) {
      const p = partial;
      partial = null;
      outcome.path = await disk!.commitPartial(p, layer.hex);
      outcome.filledDisk = true;
      ctx.stats.completed++;
    }
    if (upload) {
      const u = upload;
      upload = null;
      try {
        await u.finish();
        outcome.uploadedRedis = true;
        ctx.stats.uploaded++;
      } catch {
        await u.abort();
      }
    }
    return outcome;
  } catch (e) {
    ctx.stats.failed++;
    const err = e instanceof ClipError ? e : new ClipError('EIO', `filling ${layer.diffId}: ${(e as Error).message}`);
    ctx.stats.lastError = `${layer.diffId}: ${err.message}`;
    throw err;
  } finally {
    if (partial) await disk!.discardPartial(partial);
    if (upload) await upload.abort();
    if (lock) await lock.release();
  }
}
