/**
 * Indexing an image end to end: resolve the reference, stream every layer
 * from its source through the native indexer (each blob read exactly once,
 * verified against its digest, and its tar stream against the config's
 * diff_id), merge the layers, and write the `.clip` archive atomically
 * (a temp file in the same directory, then rename), so a reader never sees
 * half an archive.
 *
 * buildArchive() is the pure part (indexes in, bytes out) for callers that
 * have the layer indexes already; indexImage() is the whole pipeline.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ClipError } from '../errors';
import { indexLayerStream, InflateEngine, LayerIndex } from '../engine/layer';
import { log } from '../log';
import { formatImageReference, hostPlatform, openImageSource, parseImageReference, parsePlatform, referenceTarget, resolveImage } from '../oci';
import type { Credentials, Platform, ResolvedImage } from '../oci';
import { ArchiveLayoutStats, writeArchive } from '../archive/writer';
import { mergeLayers, MergeStats } from './merge';

/** The image config fields the archive keeps (what a runtime needs to start the image). */
const KEPT_CONFIG_FIELDS = ['Env', 'Entrypoint', 'Cmd', 'User', 'WorkingDir', 'Labels', 'ExposedPorts'] as const;

export interface BuildArchiveOptions {
  /** How the image was named (recorded in the archive for inspect). */
  reference: string;
}

export interface BuiltArchive {
  bytes: Buffer;
  layout: ArchiveLayoutStats;
  merge: MergeStats;
}

/**
 * Merges `layerIndexes` (one per image layer, bottom first) and writes the
 * archive bytes. Deterministic: the same image and indexes give the same bytes.
 * Errors: EINVAL (index count differs from the image's layers), EDIGEST (an
 * index's digest or diff_id differs from the image's), and mergeLayers' and
 * writeArchive's errors (ECORRUPT, EUNSUPPORTED).
 */
export function buildArchive(image: ResolvedImage, layerIndexes: readonly LayerIndex[], options: BuildArchiveOptions): Buffer {
  return assembleArchive(image, layerIndexes, options).bytes;
}

/** buildArchive, with the merge and layout statistics. Errors: as buildArchive. */
export function assembleArchive(image: ResolvedImage, layerIndexes: readonly LayerIndex[], options: BuildArchiveOptions): BuiltArchive {
  if (layerIndexes.length !== image.layers.length) {
    throw new ClipError('EINVAL', `buildArchive: the image has ${image.layers.length} layers but ${layerIndexes.length} indexes were given`);
  }
  layerIndexes.forEach((index, i) => checkLayerIndex(image, index, i));
  const tree = mergeLayers(layerIndexes.map((index, i) => ({ name: image.layers[i].digest, entries: index.entries })));
  const layers = layerIndexes.map((index, i) => ({
    digest: index.digest,
    diffId: index.diffId,
    mediaType: image.layers[i].mediaType,
    compressedSize: index.compressedSize,
    uncompressedSize: index.uncompressedSize,
    format: index.format,
    checkpoints: index.checkpoints,
  }));
  const { bytes, stats } = writeArchive(tree.root, layers, archiveConfig(image, options.reference));
  return { bytes, layout: stats, merge: tree.stats };
}

function checkLayerIndex(image: ResolvedImage, index: LayerIndex, i: number): void {
  const layer = image.layers[i];
  if (index.digest !== layer.digest) {
    throw new ClipError('EDIGEST', `layer ${i}: the index is of blob ${index.digest}, the image's layer is ${layer.digest}`);
  }
  if (index.diffId !== image.diffIds[i]) {
    throw new ClipError('EDIGEST', `layer ${i} (${layer.digest}): its tar stream hashes to ${index.diffId}, the image config says ${image.diffIds[i]}`);
  }
}

/** The CONFIG section: fixed key order, so the JSON (and the archive) is deterministic. */
function archiveConfig(image: ResolvedImage, reference: string): Record<string, unknown> {
  const runConfig = (image.config.config ?? {}) as Record<string, unknown>;
  const kept: Record<string, unknown> = {};
  for (const field of KEPT_CONFIG_FIELDS) {
    if (runConfig[field] !== undefined && runConfig[field] !== null) kept[field] = runConfig[field];
  }
  const out: Record<string, unknown> = {
    reference,
    manifestDigest: image.manifestDescriptor.digest,
    configDigest: image.configDescriptor.digest,
  };
  if (image.indexDescriptor) out.indexDigest = image.indexDescriptor.digest;
  out.platform = image.platform;
  // Distinct blobs: what a pull transfers.
  out.compressedSize = [...new Map(image.layers.map((l) => [l.digest, l.size])).values()].reduce((sum, n) => sum + n, 0);
  out.config = kept;
  return out;
}

export interface IndexProgress {
  layersDone: number;
  layersTotal: number;
  /** Compressed bytes read so far, and in all (distinct layers). */
  bytesDone: number;
  bytesTotal: number;
}

export interface IndexImageOptions {
  /** Where to write the archive. */
  output: string;
  /** `os/arch[/variant]` or a Platform; default this host's. */
  platform?: string | Platform;
  /** Uncompressed bytes between checkpoints (default 2 MiB, at least 32 KiB). */
  spacing?: number;
  /** Compressed bytes per proof (default 32 KiB; 512 B to 16 MiB). */
  proofSize?: number;
  /** Inflate engine (default "isal"). */
  engine?: InflateEngine;
  /** Plain http for registries. */
  insecure?: boolean;
  /** Registry credentials (default: CLIP_REGISTRY_USERNAME/PASSWORD, then the Docker config). */
  credentials?: Credentials;
  /** Layers indexed at once (default 2). */
  concurrency?: number;
  /** Called after each chunk and each finished layer. */
  onProgress?: (progress: IndexProgress) => void;
}

export interface IndexedLayerSummary {
  digest: string;
  mediaType: string;
  compressedSize: number;
  uncompressedSize: number;
  entries: number;
  checkpoints: number;
  checkpointBytes: number;
  /** Wall time of this layer's index (s). */
  seconds: number;
}

export interface IndexImageResult {
  output: string;
  reference: string;
  image: ResolvedImage;
  layers: IndexedLayerSummary[];
  /** Bytes of the archive. */
  archiveSize: number;
  layout: ArchiveLayoutStats;
  merge: MergeStats;
  /** Wall time in all (s). */
  seconds: number;
}

const OPTION_KEYS = new Set(['output', 'platform', 'spacing', 'proofSize', 'engine', 'insecure', 'credentials', 'concurrency', 'onProgress']);

/**
 * Indexes the image `refText` names (`oci:DIR[:TAG]`, `docker://…` or a
 * registry name) into a `.clip` archive at options.output.
 * Errors: EINVAL (bad options or reference), ENOENT (no such image, tag or
 * platform, or the output directory does not exist), EDIGEST (a blob or tar
 * stream that does not hash to its digest), ETRUNCATED (a blob that ends
 * early), ECORRUPT (bad gzip/tar, a path escaping the root),
 * EUNSUPPORTED, EAUTH, EIO. On any error no archive is left behind.
 */
export async function indexImage(refText: string, options: IndexImageOptions): Promise<IndexImageResult> {
  const started = process.hrtime.bigint();
  checkIndexImageOptions(options);
  const ref = parseImageReference(refText);
  const platform = typeof options.platform === 'string' ? parsePlatform(options.platform) : (options.platform ?? hostPlatform());
  const output = path.resolve(options.output);
  if (!fs.existsSync(path.dirname(output))) throw new ClipError('ENOENT', `output directory ${path.dirname(output)} does not exist`);

  const source = await openImageSource(ref, { insecure: options.insecure, credentials: options.credentials });
  try {
    const image = await resolveImage(source, referenceTarget(ref), platform);
    const reference = formatImageReference(ref);
    log.debug({ reference, manifest: image.manifestDescriptor.digest, layers: image.layers.length }, 'image resolved');

    // Each distinct blob once, `concurrency` at a time; the first failure stops the rest.
    const distinct = [...new Map(image.layers.map((l) => [l.digest, l])).values()];
    const progress: IndexProgress = {
      layersDone: 0,
      layersTotal: distinct.length,
      bytesDone: 0,
      bytesTotal: distinct.reduce((sum, l) => sum + l.size, 0),
    };
    const report = () => options.onProgress?.({ ...progress });
    const byDigest = new Map<string, { index: LayerIndex; seconds: number }>();
    let failure: unknown;
    let next = 0;
    const worker = async () => {
      while (failure === undefined && next < distinct.length) {
        const layer = distinct[next++];
        const layerStarted = process.hrtime.bigint();
        try {
          const chunks = countChunks(source.openBlob(layer), (n) => {
            if (failure !== undefined) throw new ClipError('EIO', 'indexing stopped: another layer failed');
            progress.bytesDone += n;
            report();
          });
          const index = await indexLayerStream(chunks, { expectedDigest: layer.digest, name: layer.digest, spacing: options.spacing, proofSize: options.proofSize, engine: options.engine });
          const seconds = Number(process.hrtime.bigint() - layerStarted) / 1e9;
          byDigest.set(layer.digest, { index, seconds });
          progress.layersDone++;
          report();
          log.info(
            { layer: layer.digest, entries: index.entries.length, compressedSize: index.compressedSize, checkpoints: index.checkpointCount, seconds },
            'layer indexed',
          );
        } catch (e) {
          failure ??= e;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 2, distinct.length) || 1 }, worker));
    if (failure !== undefined) throw failure;

    const indexes = image.layers.map((l) => byDigest.get(l.digest)!.index);
    const built = assembleArchive(image, indexes, { reference });
    await writeAtomically(output, built.bytes);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    return {
      output,
      reference,
      image,
      layers: image.layers.map((l) => {
        const { index, seconds: s } = byDigest.get(l.digest)!;
        return {
          digest: l.digest,
          mediaType: l.mediaType,
          compressedSize: index.compressedSize,
          uncompressedSize: index.uncompressedSize,
          entries: index.entries.length,
          checkpoints: index.checkpointCount,
          checkpointBytes: index.checkpoints.length,
          seconds: s,
        };
      }),
      archiveSize: built.bytes.length,
      layout: built.layout,
      merge: built.merge,
      seconds,
    };
  } finally {
    await source.close();
  }
}

function checkIndexImageOptions(options: IndexImageOptions): void {
  if (typeof options !== 'object' || options === null) throw new ClipError('EINVAL', 'indexImage: options must be an object');
  for (const key of Object.keys(options)) {
    if (!OPTION_KEYS.has(key)) throw new ClipError('EINVAL', `indexImage: unknown option "${key}" (known: ${[...OPTION_KEYS].join(', ')})`);
  }
  if (typeof options.output !== 'string' || options.output.length === 0) throw new ClipError('EINVAL', 'indexImage: option "output" must name the archive file');
  if (options.concurrency !== undefined && (!Number.isSafeInteger(options.concurrency) || options.concurrency < 1 || options.concurrency > 64)) {
    throw new ClipError('EINVAL', 'indexImage: option "concurrency" must be an integer from 1 to 64');
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw new ClipError('EINVAL', 'indexImage: option "onProgress" must be a function');
  }
  const c = options.credentials;
  if (c !== undefined && (typeof c !== 'object' || c === null || typeof c.username !== 'string' || typeof c.password !== 'string')) {
    throw new ClipError('EINVAL', 'indexImage: option "credentials" must be {username, password}');
  }
  // Checked here too (indexLayerStream checks them again) so a bad value fails before any network traffic.
  if (options.spacing !== undefined && (!Number.isSafeInteger(options.spacing) || options.spacing < 32 * 1024)) {
    throw new ClipError('EINVAL', 'indexImage: option "spacing" must be an integer of at least 32 KiB');
  }
  if (options.proofSize !== undefined && (!Number.isSafeInteger(options.proofSize) || options.proofSize < 512 || options.proofSize > 16 << 20)) {
    throw new ClipError('EINVAL', 'indexImage: option "proofSize" must be an integer from 512 B to 16 MiB');
  }
  if (options.engine !== undefined && options.engine !== 'isal' && options.engine !== 'zlib') {
    throw new ClipError('EINVAL', 'indexImage: option "engine" must be "isal" or "zlib"');
  }
}

async function* countChunks(chunks: AsyncIterable<Buffer>, onChunk: (bytes: number) => void): AsyncIterable<Buffer> {
  for await (const chunk of chunks) {
    onChunk(chunk.length);
    yield chunk;
  }
}

/** Writes `bytes` to a temp file beside `file`, fsyncs, renames over `file`. Errors: EIO. */
async function writeAtomically(file: string, bytes: Buffer): Promise<void> {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const handle = await fs.promises.open(temp, 'wx', 0o644);
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.promises.rename(temp, file);
  } catch (e) {
    await fs.promises.rm(temp, { force: true });
    throw new ClipError('EIO', `cannot write ${file}: ${(e as Error).message}`);
  }
}
