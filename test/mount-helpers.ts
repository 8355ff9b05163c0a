/**
 * Shared pieces of the mount tests: the images (the demo Debian image and a
 * small image with every node type, built with umoci), their archives, the
 * `umoci unpack` oracle, a warm disk cache (each layer's tar stream at
 * <cacheDir>/layers/sha256/<diff_id hex>), and a tree walker that describes
 * a directory entry by entry (python3, run asynchronously: a mount's misses
 * are answered on this process's JS thread, which must stay free).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after } from 'node:test';
import { ClipArchive } from '../src/archive/reader';
import { indexImage } from '../src/index/build';
import { log } from '../src/log';
import { Mount, mount, MountOptions, ReadMiss, storeReadMiss } from '../src/mount/mount';
import { LayerStore } from '../src/storage/store';
import { sh } from './fixtures';
import { demoLayout, scratchDir } from './registry-harness';
import { PathRecord, walkTree } from './images';

log.level = 'error';
// Mounts (and the CLI mounts these tests spawn) default to the host-wide
// cache directory; the tests get one of their own instead.
process.env.CLIP_CACHE_DIR ??= scratchDir('clip-host-cache-');

/** Runs a shell command without blocking the JS thread. */
export function shAsync(command: string, options: { timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('/bin/sh', ['-c', command], { maxBuffer: 1 << 28, timeout: options.timeoutMs ?? 120000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Paths that share an inode (hardlink groups), as sorted lists. */
function hardlinkGroups(tree: Record<string, PathRecord>): string[][] {
  const byIno = new Map<number, string[]>();
  for (const [p, r] of Object.entries(tree)) {
    if (r.type === 'dir') continue;
    const list = byIno.get(r.ino) ?? [];
    list.push(p);
    byIno.set(r.ino, list);
  }
  return [...byIno.values()].filter((g) => g.length > 1).map((g) => g.sort()).sort((a, b) => a[0].localeCompare(b[0]));
}

/**
 * Asserts that the mounted tree equals the oracle entry by entry: type,
 * mode, uid, gid, size, mtime (ns), rdev, symlink target, xattrs, content
 * sha256 and link count of non-directories, and the hardlink groups (by
 * st_ino). Directory sizes and link counts are the host filesystem's
 * business and are not compared; the root's mtime is not either (umoci
 * unpack sets it when it creates the bundle).
 */
export function assertSameTree(mounted: Record<string, PathRecord>, oracle: Record<string, PathRecord>): void {
  const mPaths = Object.keys(mounted).sort();
  const oPaths = Object.keys(oracle).sort();
  const missing = oPaths.filter((p) => !(p in mounted));
  const extra = mPaths.filter((p) => !(p in oracle));
  assert.deepEqual({ missing: missing.slice(0, 20), extra: extra.slice(0, 20) }, { missing: [], extra: [] }, 'the same paths');
  let diffs: string[] = [];
  for (const p of oPaths) {
    const o = { ...oracle[p] } as Partial<PathRecord>;
    const m = { ...mounted[p] } as Partial<PathRecord>;
    for (const r of [o, m]) {
      delete r.ino;
      if (r.type === 'dir') {
        delete r.nlink;
        delete r.size;
      }
      if (p === '') delete r.mtimeNs;
    }
    try {
      assert.deepEqual(m, o);
    } catch {
      diffs.push(`${p || '/'}: mounted ${JSON.stringify(m)} vs unpacked ${JSON.stringify(o)}`);
    }
  }
  diffs = diffs.slice(0, 10);
  assert.deepEqual(diffs, [], 'every entry equal');
  assert.deepEqual(hardlinkGroups(mounted), hardlinkGroups(oracle), 'the same hardlink groups');
}

/** `umoci unpack` of `layout:tag` into a fresh directory; returns its rootfs. */
export function unpack(layout: string, tag: string, into: string): string {
  sh(`umoci unpack --rootless=false --image '${layout}:${tag}' '${into}' >/dev/null`);
  return path.join(into, 'rootfs');
}

/** Indexes `layout:tag` into `output`. */
export async function indexInto(layout: string, tag: string, output: string): Promise<string> {
  await indexImage(`oci:${layout}:${tag}`, { output });
  return output;
}

/** Writes every layer's decompressed tar stream where the disk cache keeps it. */
export function warmCache(archiveFile: string, layout: string, cacheDir: string): void {
  const archive = ClipArchive.open(archiveFile);
  const layers = archive.layers();
  archive.close();
  const dir = path.join(cacheDir, 'layers', 'sha256');
  fs.mkdirSync(dir, { recursive: true });
  for (const layer of layers) {
    const hex = layer.diffId.replace(/^sha256:/, '');
    const blob = path.join(layout, 'blobs', 'sha256', layer.digest.replace(/^sha256:/, ''));
    const target = path.join(dir, hex);
    if (fs.existsSync(target)) continue;
    if (layer.format === 'gzip') sh(`gzip -dc '${blob}' > '${target}.partial-test' && mv '${target}.partial-test' '${target}'`);
    else fs.copyFileSync(blob, target);
  }
}

/** The demo image's archive, built once per process into `work`. */
let demoArchivePromise: Promise<string> | null = null;
export function demoArchive(): Promise<string> {
  if (!demoArchivePromise) {
    const work = scratchDir('clip-mount-demo-');
    demoArchivePromise = indexInto(demoLayout(), 'bookworm', path.join(work, 'demo.clip'));
  }
  return demoArchivePromise;
}

/** A fresh empty directory to mount on. */
export function mountpoint(prefix = 'clip-mnt-'): string {
  return scratchDir(prefix);
}

/** Mounts, runs `body`, and always unmounts. */
export async function withMount<T>(options: MountOptions, body: (m: Mount) => Promise<T>): Promise<T> {
  const m = await mount(options);
  try {
    return await body(m);
  } finally {
    await m.unmount();
  }
}

/**
 * A readMiss through the storage tiers with an empty cache of its own and no
 * fills: every miss is a Range read of the image's source (the layout the
 * archive was indexed from), inflated from its checkpoint.
 */
export async function sourceMiss(archiveFile: string): Promise<ReadMiss> {
  const store = await LayerStore.open({ archive: archiveFile, cacheDir: path.join(scratchDir('clip-miss-cache-'), 'cache'), prefetch: 'none' });
  missStores.push(store);
  return storeReadMiss(store);
}
const missStores: LayerStore[] = [];
after(async () => {
  await Promise.all(missStores.splice(0).map((s) => s.close()));
});

export { demoLayout, scratchDir, walkTree };
export type { PathRecord };
