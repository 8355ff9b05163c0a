/**
 * Reading a `.clip` archive from TypeScript: a typed wrapper over the
 * addon's ArchiveReader (an mmap'd, validated archive; see
 * native/core/archive_view.h), plus the conveniences the CLI and tests
 * want: the parsed image config, a depth-first walk of the whole tree, and
 * node types and link counts in the words `ls -l` uses.
 *
 * Everything is synchronous: each call reads a few records of the mapping.
 * Inode numbers are those a mount shows (root = 1), stable for an archive.
 */
import * as fs from 'node:fs';
import { ClipError } from '../errors';
import { native } from '../native';
import { fromNativePath } from '../path-bytes';
import type { NodeType } from '../index/merge';
import type { ArchiveLayerInput } from './writer';

export interface ArchiveInfo {
  version: number;
  /** Bytes of the archive file. */
  fileSize: number;
  nodeCount: number;
  direntCount: number;
  xattrCount: number;
  layerCount: number;
  stringsSize: number;
  checkpointsSize: number;
  configSize: number;
}

export interface ArchiveStat {
  ino: number;
  type: NodeType;
  /** st_mode: file type bits and permission bits (07777). */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  /** Regular files: bytes; symlinks: target length; otherwise 0. */
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  devmajor: number;
  devminor: number;
  /** Regular files: the layer (bottom = 0) holding the content; null otherwise. */
  layer: number | null;
  /** Regular files: uncompressed offset of the content in that layer. */
  dataOffset: number;
  /** Directories: the parent's inode (the root's is itself); null otherwise. */
  parent: number | null;
  /** Directories: number of entries. */
  entries: number;
  xattrCount: number;
}

export interface ArchiveDirEntry {
  name: string;
  ino: number;
}

/** A layer as the archive records it; its checkpoint index is read on demand (checkpoints()). */
export interface ArchiveLayer extends Omit<ArchiveLayerInput, 'checkpoints'> {
  /** Bytes of this layer's serialized checkpoint index. */
  checkpointsSize: number;
}

/** The CONFIG section as build.ts writes it. */
export interface ArchiveImageConfig {
  reference: string;
  manifestDigest: string;
  configDigest: string;
  indexDigest?: string;
  platform: { os: string; architecture: string; variant?: string };
  /** The image config's run settings (OCI names): Env, Entrypoint, Cmd, User, WorkingDir, Labels, ExposedPorts, ... */
  config: Record<string, unknown>;
  /** Sum of the distinct layer blobs' sizes (bytes): what a pull transfers. */
  compressedSize: number;
  [key: string]: unknown;
}

interface RawArchiveReader {
  info(): ArchiveInfo;
  lookupPath(path: string): number | null;
  lookup(dir: number, name: string): number | null;
  stat(ino: number): ArchiveStat;
  readdir(ino: number, offset?: number, limit?: number): Array<{ name: string | Buffer; ino: number }>;
  readlink(ino: number): string | Buffer;
  xattrs(ino: number): Record<string, Buffer>;
  layers(): ArchiveLayer[];
  checkpoints(layer: number): Buffer;
  config(): string;
  close(): void;
}

type RawArchiveReaderClass = new (path: string) => RawArchiveReader;

export const ROOT_INO = 1;

export class ClipArchive {
  private constructor(
    private readonly raw: RawArchiveReader,
    /** The path it was opened from. */
    readonly path: string,
  ) {}

  /**
   * Maps and validates the archive at `path` (header, sections, checksums).
   * Errors: ENOENT (no such file), ECORRUPT ("not a clip archive", or what
   * is damaged), EUNSUPPORTED (a newer format version), EIO.
   */
  /** @internal The addon's reader, for a mount session to serve from the same mapping. */
  get nativeReader(): RawArchiveReader {
    return this.raw;
  }

  static open(path: string): ClipArchive {
    if (typeof path !== 'string' || path.length === 0) throw new ClipError('EINVAL', 'ClipArchive.open: path must be a non-empty string');
    let st: fs.Stats;
    try {
      st = fs.statSync(path);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'ENOENT') throw new ClipError('ENOENT', `${path}: no such file`);
      throw new ClipError('EIO', `${path}: ${err.message}`);
    }
    if (!st.isFile()) throw new ClipError('EINVAL', `${path} is not a regular file`);
    const Reader = (native as unknown as { ArchiveReader: RawArchiveReaderClass }).ArchiveReader;
    return new ClipArchive(new Reader(path), path);
  }

  info(): ArchiveInfo {
    return this.raw.info();
  }

  /** The inode at `path` ('/'-separated from the root, no symlinks followed), or null. */
  lookupPath(path: string): number | null {
    return this.raw.lookupPath(path);
  }

  /** The inode of `name` in directory `dir`, or null. Errors: EINVAL when `dir` is not a directory. */
  lookup(dir: number, name: string): number | null {
    return this.raw.lookup(dir, name);
  }

  /** Errors: EINVAL for an inode not in the archive; ECORRUPT. */
  stat(ino: number): ArchiveStat {
    return this.raw.stat(ino);
  }

  /** Entries of directory `ino` in name-byte order, from `offset`, at most `limit`. Names are path strings (path-bytes.ts). */
  readdir(ino: number, offset?: number, limit?: number): ArchiveDirEntry[] {
    const entries = this.raw.readdir(ino, offset, limit);
    for (const e of entries) if (typeof e.name !== 'string') e.name = fromNativePath(e.name);
    return entries as ArchiveDirEntry[];
  }

  /** The target as a path string (path-bytes.ts). Errors: EINVAL when `ino` is not a symlink. */
  readlink(ino: number): string {
    return fromNativePath(this.raw.readlink(ino));
  }

  xattrs(ino: number): Record<string, Buffer> {
    return this.raw.xattrs(ino);
  }

  layers(): ArchiveLayer[] {
    return this.raw.layers();
  }

  /** Layer `index`'s serialized checkpoints (for a LayerReader). */
  checkpoints(index: number): Buffer {
    return this.raw.checkpoints(index);
  }

  /** The CONFIG section, parsed. Errors: ECORRUPT when it is not a JSON object. */
  imageConfig(): ArchiveImageConfig {
    let parsed: unknown;
    try {
      parsed = JSON.parse(this.raw.config());
    } catch {
      throw new ClipError('ECORRUPT', `${this.path}: the archive's config is not valid JSON`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new ClipError('ECORRUPT', `${this.path}: the archive's config is not a JSON object`);
    }
    return parsed as ArchiveImageConfig;
  }

  /**
   * Every node reachable from the root, depth-first, each directory's
   * entries in name order; the root comes first with path ''. A hardlinked
   * node is visited once per name.
   */
  *walk(): Generator<{ path: string; ino: number; stat: ArchiveStat }> {
    const stack: Array<{ path: string; ino: number }> = [{ path: '', ino: ROOT_INO }];
    while (stack.length) {
      const { path, ino } = stack.pop()!;
      const stat = this.raw.stat(ino);
      yield { path, ino, stat };
      if (stat.type === 'dir') {
        const entries = this.readdir(ino);
        for (let i = entries.length - 1; i >= 0; i--) {
          stack.push({ path: path ? `${path}/${entries[i].name}` : entries[i].name, ino: entries[i].ino });
        }
      }
    }
  }

  /** Unmaps the archive; later calls throw EINVAL. */
  close(): void {
    this.raw.close();
  }
}

/** `ls -l`'s mode string: type letter and rwx triplets with s/S/t/T. */
export function modeString(mode: number): string {
  const types: Record<number, string> = { 0o010000: 'p', 0o020000: 'c', 0o040000: 'd', 0o060000: 'b', 0o100000: '-', 0o120000: 'l' };
  const t = types[mode & 0o170000] ?? '?';
  const rwx = (bits: number, special: boolean, letter: string) =>
    `${bits & 4 ? 'r' : '-'}${bits & 2 ? 'w' : '-'}${special ? (bits & 1 ? letter : letter.toUpperCase()) : bits & 1 ? 'x' : '-'}`;
  return (
    t +
    rwx((mode >> 6) & 7, (mode & 0o4000) !== 0, 's') +
    rwx((mode >> 3) & 7, (mode & 0o2000) !== 0, 's') +
    rwx(mode & 7, (mode & 0o1000) !== 0, 't')
  );
}
