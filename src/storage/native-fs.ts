/**
 * Typed access to the addon's filesystem calls (native/binding/fs_binding.h):
 * non-blocking flock for the disk cache's pin and fill locks, and mknod,
 * nanosecond lutimens and lsetxattr for `extract`. Failures come back as
 * Node-style errors (`err.code === 'EPERM'`, `err.syscall`), so callers
 * handle them like any fs error.
 */
import * as os from 'node:os';
import { native } from '../native';

interface RawFsBinding {
  fsTryFlock(fd: number, op: 'shared' | 'exclusive' | 'unlock'): number;
  fsMknod(path: string | Buffer, mode: number, major: number, minor: number): number;
  fsLutimens(path: string | Buffer, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): number;
  fsLsetxattr(path: string | Buffer, name: string, value: Buffer): number;
}

const raw = native as unknown as RawFsBinding;

const ERRNO_NAMES = new Map<number, string>(Object.entries(os.constants.errno).map(([name, n]) => [n, name]));

/** The Node-style error for an errno from a system call on `path`. */
function errnoError(errno: number, syscall: string, bytes?: string | Buffer): NodeJS.ErrnoException {
  const path = Buffer.isBuffer(bytes) ? bytes.toString('utf8') : bytes;
  const code = ERRNO_NAMES.get(errno) ?? `E${errno}`;
  const err: NodeJS.ErrnoException = new Error(`${code}: ${syscall} failed${path ? ` on ${path}` : ''} (errno ${errno})`);
  err.code = code;
  err.errno = -errno;
  err.syscall = syscall;
  if (path) err.path = path;
  return err;
}

export type FlockOp = 'shared' | 'exclusive' | 'unlock';

/**
 * flock(fd, op | LOCK_NB): true when taken (or released), false when another
 * open file holds a conflicting lock. Never blocks. Locks belong to the open
 * file description: they go with its last close, or with the process.
 * Errors: a Node-style error for anything but EWOULDBLOCK (EBADF, ENOLCK).
 */
export function tryFlock(fd: number, op: FlockOp): boolean {
  const errno = raw.fsTryFlock(fd, op);
  if (errno === 0) return true;
  if (errno === os.constants.errno.EWOULDBLOCK || errno === os.constants.errno.EAGAIN) return false;
  throw errnoError(errno, 'flock');
}

/** mknod(path, mode, makedev(major, minor)); mode includes S_IFCHR/S_IFBLK/S_IFIFO. Errors: Node-style. */
export function mknod(path: string | Buffer, mode: number, major: number, minor: number): void {
  const errno = raw.fsMknod(path, mode, major, minor);
  if (errno !== 0) throw errnoError(errno, 'mknod', path);
}

/** Sets atime and mtime with nanoseconds, on the link itself for a symlink. Errors: Node-style. */
export function lutimens(path: string | Buffer, atime: { sec: number; nsec: number }, mtime: { sec: number; nsec: number }): void {
  const errno = raw.fsLutimens(path, atime.sec, atime.nsec, mtime.sec, mtime.nsec);
  if (errno !== 0) throw errnoError(errno, 'utimensat', path);
}

/** lsetxattr(path, name, value, 0). Errors: Node-style (ENOTSUP, EPERM, ...). */
export function lsetxattr(path: string | Buffer, name: string, value: Buffer): void {
  const errno = raw.fsLsetxattr(path, name, value);
  if (errno !== 0) throw errnoError(errno, 'lsetxattr', path);
}
