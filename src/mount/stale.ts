/**
 * Mountpoint housekeeping: is something mounted here, is it a dead FUSE
 * mount left by a killed process ("Transport endpoint is not connected"),
 * and unmounting (fusermount3 -u, falling back to a lazy detach).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ClipError } from '../errors';

export type MountpointState = 'missing' | 'not-a-directory' | 'free' | 'mounted' | 'stale';

/** Decodes the octal escapes of /proc/self/mountinfo (\040 for a space, ...). */
function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The mount table entry mounted at `mountpoint` (the topmost), or null. */
export function findMount(mountpoint: string): { fstype: string; source: string } | null {
  // The mount table holds real paths; resolve the parent only (stat of a
  // dead mount itself fails).
  let target = path.resolve(mountpoint);
  try {
    target = path.join(fs.realpathSync(path.dirname(target)), path.basename(target));
  } catch {
    // keep the resolved path
  }
  let found: { fstype: string; source: string } | null = null;
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (!line) continue;
    const [left, right] = line.split(' - ');
    const fields = left.split(' ');
    if (unescapeMountinfo(fields[4]) !== target) continue;
    const r = right.split(' ');
    found = { fstype: r[0], source: unescapeMountinfo(r[1]) };
  }
  return found;
}

/** What is at `mountpoint` right now. A dead FUSE mount answers stat with ENOTCONN. */
export function mountpointState(mountpoint: string): MountpointState {
  try {
    const st = fs.statSync(mountpoint);
    if (!st.isDirectory()) return 'not-a-directory';
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTCONN' || code === 'ECONNABORTED') return 'stale';
    if (code === 'ENOENT') return findMount(mountpoint) ? 'stale' : 'missing';
    throw new ClipError('EIO', `${mountpoint}: ${(e as Error).message}`);
  }
  return findMount(mountpoint) ? 'mounted' : 'free';
}

function run(cmd: string, args: string[]): { ok: boolean; message: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) return { ok: false, message: r.error.message };
  return { ok: r.status === 0, message: (r.stderr || r.stdout || '').trim() };
}

/**
 * Unmounts `mountpoint`: fusermount3 -u, then (lazy, or when that fails
 * because it is busy) a lazy detach (umount2 MNT_DETACH through
 * fusermount3 -u -z or umount -l). Errors: EIO when nothing worked.
 */
export function unmountPath(mountpoint: string, options: { lazy?: boolean } = {}): void {
  const target = path.resolve(mountpoint);
  const tries: Array<[string, string[]]> = options.lazy
    ? [['fusermount3', ['-u', '-z', target]], ['umount', ['-l', target]]]
    : [['fusermount3', ['-u', target]], ['umount', [target]], ['fusermount3', ['-u', '-z', target]], ['umount', ['-l', target]]];
  const messages: string[] = [];
  for (const [cmd, args] of tries) {
    const r = run(cmd, args);
    if (r.ok) return;
    messages.push(`${cmd} ${args.slice(0, -1).join(' ')}: ${r.message}`);
  }
  throw new ClipError('EIO', `cannot unmount ${target}: ${messages.join('; ')}`);
}

/**
 * Makes `mountpoint` usable for a new mount: a stale FUSE mount is detached
 * (lazily). Returns whether one was cleaned. Errors: ENOENT (missing),
 * EINVAL (not a directory), EBUSY (a live mount is there), EIO.
 */
export function prepareMountpoint(mountpoint: string): boolean {
  const state = mountpointState(mountpoint);
  switch (state) {
    case 'missing':
      throw new ClipError('ENOENT', `mountpoint ${mountpoint} does not exist`);
    case 'not-a-directory':
      throw new ClipError('EINVAL', `mountpoint ${mountpoint} is not a directory`);
    case 'mounted':
      throw new ClipError('EBUSY', `something is already mounted on ${mountpoint} (clip-native umount ${mountpoint})`);
    case 'stale':
      unmountPath(mountpoint, { lazy: true });
      if (mountpointState(mountpoint) === 'stale') throw new ClipError('EIO', `cannot clean the dead mount on ${mountpoint}`);
      return true;
    default:
      return false;
  }
}
