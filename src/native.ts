/**
 * Loads the C++ addon (built by node-gyp into build/Release) and hands it
 * ClipError, so errors thrown by native code are ClipErrors with a code.
 * The raw binding's shape is declared here; callers use the typed wrappers
 * in engine/, which check options before anything crosses the boundary.
 */
import * as path from 'node:path';
import { ClipError } from './errors';

export type EntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface RawTarEntry {
  path: string;
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  mtimeSec: number;
  mtimeNsec: number;
  size: number;
  dataOffset: number;
  headerOffset: number;
  devmajor: number;
  devminor: number;
  linkTarget: string;
  xattrs: Record<string, Buffer>;
}

export interface RawLayerIndex {
  format: 'gzip' | 'tar';
  digest: string;
  diffId: string;
  compressedSize: number;
  uncompressedSize: number;
  checkpoints: Buffer;
  checkpointCount: number;
  entries: RawTarEntry[];
}

export interface RawIndexOptions {
  engine?: 'isal' | 'zlib';
  spacing?: number;
  largeFileThreshold?: number;
  proofSize?: number;
  name?: string;
  expectedDigest?: string;
}

export interface RawSpan {
  begin: number;
  end: number;
  checkpoint: number;
}

export interface RawLayerReaderInfo {
  format: 'gzip' | 'tar';
  compressedSize: number;
  uncompressedSize: number;
  spacing: number;
  checkpointCount: number;
  engine: 'isal' | 'zlib';
}

export interface RawLayerIndexer {
  push(chunk: Buffer): Promise<void>;
  finish(): Promise<RawLayerIndex>;
}

/** Options of a disk-cache fill (native/binding/layer_fill_binding.cc). */
export interface RawLayerFillOptions {
  format: 'gzip' | 'tar';
  uncompressedSize: number;
  diffId: string;
  /** With blobSize: the blob's digest, checked at finish() (for pushFile: nothing else sees the bytes). */
  blobDigest?: string;
  blobSize?: number;
  engine?: 'isal' | 'zlib';
  name?: string;
}

/**
 * Writes a layer's tar stream into a file descriptor while inflating and
 * hashing it on a libuv thread: blob chunks go in, nothing comes back.
 * One call pending at a time. finish() rejects EDIGEST unless the stream
 * had the recorded size and diff_id (and the blob its digest); ECORRUPT,
 * ETRUNCATED for bad gzip; EIO for a failed write (ENOSPC named), a read
 * of pushFile's blob, or cancel().
 */
export interface RawLayerFill {
  push(chunk: Buffer): Promise<void>;
  /** Feeds blob bytes [offset, offset + maxBytes) of a local file; resolves with the bytes fed (0: its end). */
  pushFile(path: string, offset: number, maxBytes: number): Promise<number>;
  finish(): Promise<void>;
  cancel(): void;
}

export interface RawLayerReader {
  read(offset: number, length: number): Promise<Buffer>;
  readFrom(compressed: Buffer, base: number, offset: number, length: number): Promise<Buffer>;
  spanFor(offset: number, length: number): RawSpan;
  info(): RawLayerReaderInfo;
  /** Checkpoint i's window, inflated. ECORRUPT when the stored window does not inflate. */
  window(i: number): Buffer;
}

export interface NativeBinding {
  setErrorClass(ctor: typeof ClipError): void;
  indexLayerFile(path: string, options: RawIndexOptions): Promise<RawLayerIndex>;
  LayerIndexer: new (options: RawIndexOptions) => RawLayerIndexer;
  LayerFill: new (fd: number, options: RawLayerFillOptions) => RawLayerFill;
  LayerReader: new (checkpoints: Buffer | { archive: unknown; layer: number }, blobPath: string | null, engine?: 'isal' | 'zlib') => RawLayerReader;
  /** malloc_trim(0): hands the free pages of every malloc arena back to the kernel; true if any were. */
  trimMemory(): boolean;
  /** Frees a Buffer that spans its whole ArrayBuffer now (detaches it: length 0 after); false when it is not one. */
  releaseBuffer(buffer: Buffer): boolean;
  /**
   * mallopt(M_MMAP_THRESHOLD) and M_TRIM_THRESHOLD: allocations of `bytes`
   * or more get pages of their own that free() returns at once.
   */
  tuneMalloc(bytes: number): boolean;
  /** glibc's mallinfo2() over all arenas (for the memory trace). */
  mallocStats(): { arenaBytes: number; mmappedBytes: number; inUseBytes: number; freeBytes: number };
  engines: string[];
}

function load(): NativeBinding {
  // dist/src/native.js -> <root>/build/Release; src/native.ts (ts-node) -> same root.
  const root = path.resolve(__dirname, __dirname.includes(`${path.sep}dist${path.sep}`) ? '../..' : '..');
  const candidates = [
    process.env.CLIP_NATIVE_ADDON,
    path.join(root, 'build', 'Release', 'clip_native.node'),
    path.join(root, 'build', 'Debug', 'clip_native.node'),
  ].filter((p): p is string => !!p);
  let lastError: unknown;
  for (const candidate of candidates) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const binding = require(candidate) as NativeBinding;
      binding.setErrorClass(ClipError);
      return binding;
    } catch (e) {
      lastError = e;
      if ((e as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') break;
    }
  }
  throw new ClipError('ENOENT', `cannot load the clip-native addon (run "npm ci" to build it): ${String(lastError)}`);
}

export const native: NativeBinding = load();
