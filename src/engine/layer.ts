/**
 * The engine's typed API: index one layer blob in a single streaming pass
 * (from a file, or from any async iterable of chunks such as an HTTP
 * response), and read any byte range of its uncompressed tar stream through
 * the checkpoints, from the blob on disk or from compressed bytes the caller
 * fetched (ask spanFor() which ones).
 */
import { ClipArchive } from '../archive/reader';
import { ClipError } from '../errors';
import { native, RawLayerIndex, RawLayerReader, RawLayerReaderInfo, RawSpan } from '../native';
import { fromNativePath } from '../path-bytes';
import { checkOptions } from './options';

export type InflateEngine = 'isal' | 'zlib';
export type LayerIndex = RawLayerIndex;
export type CompressedSpan = RawSpan;
export type LayerReaderInfo = RawLayerReaderInfo;
export type { RawTarEntry as TarEntry, EntryType } from '../native';

export interface IndexLayerOptions {
  /** Inflate engine: "isal" (default, fastest) or "zlib". */
  engine?: InflateEngine;
  /** Uncompressed bytes between checkpoints (default 2 MiB). */
  spacing?: number;
  /** Files larger than this get a checkpoint of their own (default 512 KiB). */
  largeFileThreshold?: number;
  /**
   * Compressed bytes per proof (default 32 KiB, 512 B to 16 MiB): a read
   * from the source fetches whole proofs, each costing 40 bytes of index.
   */
  proofSize?: number;
  /** How errors name the layer: its digest or path. */
  name?: string;
  /** "sha256:…": the blob must hash to this, or indexing fails with EDIGEST. */
  expectedDigest?: string;
}

const INDEX_SCHEMA = {
  engine: 'engine',
  spacing: 'number',
  largeFileThreshold: 'number',
  proofSize: 'number',
  name: 'string',
  expectedDigest: 'string',
} as const;

function checkIndexOptions(options?: IndexLayerOptions): IndexLayerOptions {
  const checked = checkOptions('indexLayer', options, INDEX_SCHEMA);
  if (checked.spacing !== undefined && checked.spacing < 32 * 1024) {
    throw new ClipError('EINVAL', 'indexLayer: spacing must be at least 32 KiB');
  }
  if (checked.expectedDigest !== undefined && !/^sha256:[0-9a-f]{64}$/.test(checked.expectedDigest)) {
    throw new ClipError('EINVAL', 'indexLayer: expectedDigest must look like sha256:<64 hex digits>');
  }
  return checked;
}

/** Names and link targets that are not UTF-8 come from the addon as Buffers: make them path strings (path-bytes.ts). */
function withPathStrings(index: LayerIndex): LayerIndex {
  for (const e of index.entries as Array<{ path: string | Buffer; linkTarget: string | Buffer }>) {
    if (typeof e.path !== 'string') e.path = fromNativePath(e.path);
    if (typeof e.linkTarget !== 'string') e.linkTarget = fromNativePath(e.linkTarget);
  }
  return index;
}

/** Indexes the layer blob at `path`; the work runs off the JS thread. */
export async function indexLayerFile(path: string, options?: IndexLayerOptions): Promise<LayerIndex> {
  const checked = checkIndexOptions(options);
  return withPathStrings(await native.indexLayerFile(path, { name: path, ...checked }));
}

/**
 * Indexes a layer blob arriving as chunks. Memory stays bounded whatever the
 * layer's size: each chunk is inflated and parsed before the next is taken.
 */
export async function indexLayerStream(
  chunks: AsyncIterable<Uint8Array>,
  options?: IndexLayerOptions,
): Promise<LayerIndex> {
  const indexer = new native.LayerIndexer(checkIndexOptions(options));
  for await (const chunk of chunks) {
    if (chunk.length === 0) continue;
    await indexer.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
  }
  return withPathStrings(await indexer.finish());
}

/** Random access to one layer's uncompressed stream. */
export class LayerReader {
  private readonly raw: RawLayerReader;

  /**
   * @param checkpoints the serialized checkpoints from a LayerIndex, or a
   *   layer of an open archive, whose checkpoints are then read in place in
   *   its mapping (no copy of the stored windows; the mapping stays while
   *   the reader does)
   * @param blobPath the compressed blob on disk, if reads should pread it
   */
  constructor(checkpoints: Buffer | { archive: ClipArchive; layer: number }, blobPath?: string, engine: InflateEngine = 'isal') {
    if (engine !== 'isal' && engine !== 'zlib') throw new ClipError('EINVAL', 'LayerReader: engine must be "isal" or "zlib"');
    if (Buffer.isBuffer(checkpoints)) {
      this.raw = new native.LayerReader(checkpoints, blobPath ?? null, engine);
    } else if (checkpoints && checkpoints.archive instanceof ClipArchive && Number.isSafeInteger(checkpoints.layer)) {
      this.raw = new native.LayerReader({ archive: checkpoints.archive.nativeReader, layer: checkpoints.layer }, blobPath ?? null, engine);
    } else {
      throw new ClipError('EINVAL', 'LayerReader: checkpoints must be a Buffer or {archive, layer}');
    }
  }

  info(): LayerReaderInfo {
    return this.raw.info();
  }

  /** Uncompressed bytes [offset, offset + length), read from the blob file. */
  read(offset: number, length: number): Promise<Buffer> {
    return this.raw.read(offset, length);
  }

  /** Which compressed bytes of the blob are needed for [offset, offset + length). */
  spanFor(offset: number, length: number): CompressedSpan {
    return this.raw.spanFor(offset, length);
  }

  /**
   * Uncompressed bytes [offset, offset + length), inflated from `compressed`,
   * which holds blob bytes [base, base + compressed.length) (e.g. a Range
   * response for spanFor(offset, length)).
   */
  readFrom(compressed: Buffer, base: number, offset: number, length: number): Promise<Buffer> {
    return this.raw.readFrom(compressed, base, offset, length);
  }

  /** Checkpoint i's window, inflated. Errors: ECORRUPT (the stored window does not inflate), EINVAL (no such checkpoint). */
  window(i: number): Buffer {
    return this.raw.window(i);
  }
}
