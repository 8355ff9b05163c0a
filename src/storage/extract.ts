/**
 * Materialising an archive's whole tree in a directory, with every
 * attribute the archive keeps: type, mode (setuid/setgid/sticky included),
 * owner, mtime to the nanosecond, symlink targets, hardlinks (one inode,
 * many names), character and block devices, fifos and xattrs. File bytes
 * are read through a LayerStore, so they come from the fastest tier.
 *
 * Safety: the target directory must be empty (or not exist), so every path
 * component below it is one this function created; names come from the
 * archive, which refuses `/`, `.` and `..` in names, and are checked again
 * here. Files are created with O_EXCL | O_NOFOLLOW and every attribute call
 * acts on the link itself (lchown, utimensat NOFOLLOW, lsetxattr), so no
 * symlink in the tree is ever followed and nothing lands outside the target.
 *
 * Order: ownership before mode (chown clears setuid/setgid); directories'
 * modes and mtimes last, deepest first (writing children changes a
 * directory's mtime, and a read-only directory could not take them). Run
 * as non-root, ownership changes, device nodes and trusted.* / security.*
 * xattrs are skipped with a count in the result, as tar does.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pathBytes } from '../path-bytes';
import { ArchiveStat } from '../archive/reader';
import { ClipError } from '../errors';
import { log } from '../log';
import { lsetxattr, lutimens, mknod } from './native-fs';
import type { LayerStore } from './store';

export interface ExtractResult {
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  devices: number;
  fifos: number;
  /** Bytes of file content written. */
  bytes: number;
  /** Attributes that could not be applied (not root): counts by kind. */
  skipped: { owners: number; devices: number; xattrs: number };
}

const S_IFMT = 0o170000;

function checkName(name: string, where: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new ClipError('ECORRUPT', `refusing to extract ${JSON.stringify(name)} in ${where || '/'}: not a plain file name`);
  }
}

function isPermissionError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'EPERM' || code === 'EACCES';
}

/**
 * Extracts the tree of `store.archive` into `dir` (created if missing).
 * Errors: EINVAL (dir exists and is not an empty directory), ECORRUPT (a
 * bad name), EIO (a write failed, e.g. ENOSPC), and read errors of the
 * tiers. On failure, what was written so far stays (like tar).
 */
export async function extractArchive(store: LayerStore, dir: string, options: { onEntry?: (path: string) => void } = {}): Promise<ExtractResult> {
  const root = path.resolve(dir);
  try {
    const st = fs.lstatSync(root);
    if (!st.isDirectory()) throw new ClipError('EINVAL', `${root} exists and is not a directory`);
    if (fs.readdirSync(root).length > 0) throw new ClipError('EINVAL', `${root} is not empty; extract needs an empty or new directory`);
  } catch (e) {
    if (e instanceof ClipError) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new ClipError('EIO', `${root}: ${(e as Error).message}`);
    fs.mkdirSync(root, { recursive: true });
  }
  const isRoot = process.getuid?.() === 0;
  const result: ExtractResult = { files: 0, dirs: 0, symlinks: 0, hardlinks: 0, devices: 0, fifos: 0, bytes: 0, skipped: { owners: 0, devices: 0, xattrs: 0 } };
  const archive = store.archive;
  // Filesystem paths are Buffers: image names need not be UTF-8 (path-bytes.ts).
  const firstPath = new Map<number, Buffer>(); // inode -> where its first name was written
  const dirs: Array<{ full: Buffer; ino: number; stat: ArchiveStat }> = [];

  const applyOwnerModeXattrs = (full: Buffer, ino: number, stat: ArchiveStat, isLink: boolean) => {
    try {
      fs.lchownSync(full, stat.uid, stat.gid);
    } catch (e) {
      if (!isPermissionError(e)) throw e;
      result.skipped.owners++;
    }
    if (!isLink) fs.chmodSync(full, stat.mode & 0o7777);
    if (stat.xattrCount > 0) {
      for (const [name, value] of Object.entries(archive.xattrs(ino))) {
        try {
          lsetxattr(full, name, value);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (!isPermissionError(e) && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw e;
          result.skipped.xattrs++;
        }
      }
    }
  };
  const setTimes = (full: Buffer, stat: ArchiveStat) => {
    const t = { sec: stat.mtimeSec, nsec: stat.mtimeNsec };
    lutimens(full, t, t);
  };

  try {
    for (const { path: rel, ino, stat } of archive.walk()) {
      if (rel === '') {
        dirs.push({ full: pathBytes(root), ino, stat });
        continue;
      }
      const parts = rel.split('/');
      for (const p of parts) checkName(p, rel);
      const joined = path.join(root, ...parts);
      if (!joined.startsWith(root + path.sep)) throw new ClipError('ECORRUPT', `refusing to extract ${rel}: it would land outside ${root}`);
      options.onEntry?.(rel);
      const full = pathBytes(joined);
      const seen = firstPath.get(ino);
      if (seen !== undefined && stat.type !== 'dir') {
        fs.linkSync(seen, full);
        result.hardlinks++;
        continue;
      }
      firstPath.set(ino, full);
      switch (stat.type) {
        case 'dir':
          fs.mkdirSync(full, { mode: 0o700 });
          dirs.push({ full, ino, stat });
          result.dirs++;
          continue; // attributes after the children
        case 'file': {
          const fd = fs.openSync(full, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
          const out = fs.createWriteStream(full, { fd, highWaterMark: 1 << 20 });
          if (stat.size > 0) await pipeline(store.streamContent(stat), out);
          else await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
          result.files++;
          result.bytes += stat.size;
          applyOwnerModeXattrs(full, ino, stat, false);
          break;
        }
        case 'symlink':
          fs.symlinkSync(pathBytes(archive.readlink(ino)), full);
          result.symlinks++;
          applyOwnerModeXattrs(full, ino, stat, true);
          break;
        case 'fifo':
          mknod(full, 0o010000 | 0o600, 0, 0);
          result.fifos++;
          applyOwnerModeXattrs(full, ino, stat, false);
          break;
        case 'char':
        case 'block':
          try {
            mknod(full, (stat.mode & S_IFMT) | 0o600, stat.devmajor, stat.devminor);
          } catch (e) {
            if (!isPermissionError(e) || isRoot) throw e;
            result.skipped.devices++;
            continue;
          }
          result.devices++;
          applyOwnerModeXattrs(full, ino, stat, false);
          break;
        default:
          throw new ClipError('EUNSUPPORTED', `${rel}: cannot extract a node of type ${String(stat.type)}`);
      }
      setTimes(full, stat);
    }
    // Directories last, deepest first.
    for (let i = dirs.length - 1; i >= 0; i--) {
      const { full, ino, stat } = dirs[i];
      applyOwnerModeXattrs(full, ino, stat, false);
      setTimes(full, stat);
    }
  } catch (e) {
    if (e instanceof ClipError) throw e;
    throw new ClipError('EIO', `extracting into ${root}: ${(e as Error).message}`);
  }
  if (result.skipped.owners || result.skipped.devices || result.skipped.xattrs) {
    log.warn({ skipped: result.skipped }, 'not root: some owners, device nodes or xattrs were not applied');
  }
  return result;
}
