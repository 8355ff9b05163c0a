/**
 * `clip-native extract` and `cat` against the reference: the demo image
 * unpacked by umoci (`umoci unpack`, as root). Every entry is compared:
 * type, mode (with setuid/setgid/sticky), uid, gid, size, mtime to the
 * nanosecond, symlink target, device numbers, xattrs, content sha256, and
 * which names share an inode (hardlinks). Also: extract refuses a non-empty
 * target, and cat follows symlinks inside the image.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { before, describe, test } from 'node:test';
import { indexImage } from '../src/index/build';
import { log } from '../src/log';
import { extractArchive } from '../src/storage/extract';
import { LayerStore } from '../src/storage/store';
import { rejectsWith, sh } from './fixtures';
import { demoLayout, scratchDir, writeBlob, writeLayoutIndex } from './registry-harness';

log.level = process.env.CLIP_LOG_LEVEL ?? 'warn';

let work: string;
let archivePath: string;
let umociRoot: string;
const CLI = path.resolve(__dirname, '../src/cli/main.js');

before(async () => {
  work = scratchDir('clip-storage-extract-');
  archivePath = path.join(work, 'demo.clip');
  await indexImage(`oci:${demoLayout()}:bookworm`, { output: archivePath });
  // umoci may take locks in the layout: give it a (hardlinked) copy.
  const layout = path.join(work, 'layout');
  execFileSync('cp', ['-al', demoLayout(), layout]);
  execFileSync('umoci', ['unpack', '--image', `${layout}:bookworm`, path.join(work, 'bundle')], { stdio: 'pipe' });
  umociRoot = path.join(work, 'bundle', 'rootfs');
});

interface Entry {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeNs: bigint;
  target?: string;
  rdev?: number;
  sha256?: string;
  xattrs: string;
  /** Other names of the same inode, relative (hardlinks), sorted. */
  ino: bigint;
}

/** Every xattr under `root` (one getfattr run), by relative path: "name=value" lines. */
function xattrDump(root: string): Map<string, string> {
  const text = execFileSync('getfattr', ['-R', '-h', '-d', '-m', '-', '--absolute-names', root], { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 1 << 26 }).toString();
  const out = new Map<string, string>();
  for (const block of text.split('\n\n')) {
    const lines = block.trim().split('\n');
    if (!lines[0]?.startsWith('# file: ')) continue;
    out.set(path.relative(root, lines[0].slice(8)) || '/', lines.slice(1).sort().join('\n'));
  }
  return out;
}

function describeTree(root: string): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const xattrs = xattrDump(root);
  const walk = (rel: string) => {
    const full = path.join(root, rel);
    const st = fs.lstatSync(full, { bigint: true });
    const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : st.isFIFO() ? 'fifo' : 'other';
    const e: Entry = {
      type,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: type === 'file' ? Number(st.size) : 0,
      mtimeNs: st.mtimeNs,
      xattrs: xattrs.get(rel || '/') ?? '',
      ino: st.ino,
    };
    if (type === 'symlink') e.target = fs.readlinkSync(full);
    if (type === 'char' || type === 'block') e.rdev = Number(st.rdev);
    if (type === 'file') e.sha256 = createHash('sha256').update(fs.readFileSync(full)).digest('hex');
    out.set(rel || '/', e);
    if (type === 'dir') for (const name of fs.readdirSync(full).sort()) walk(rel ? `${rel}/${name}` : name);
  };
  walk('');
  return out;
}

/** Groups of names sharing an inode (only groups of two or more). */
function linkGroups(tree: Map<string, Entry>): string[] {
  const byIno = new Map<bigint, string[]>();
  for (const [p, e] of tree) if (e.type === 'file') byIno.set(e.ino, [...(byIno.get(e.ino) ?? []), p]);
  return [...byIno.values()].filter((g) => g.length > 1).map((g) => g.sort().join(' = ')).sort();
}

describe('extract and cat', () => {
  test('extract gives the same tree as umoci unpack, entry by entry', async () => {
    const target = path.join(work, 'extracted');
    const out = execFileSync(process.execPath, [CLI, 'extract', archivePath, target, '--cache-dir', path.join(work, 'cache'), '--json', '--log-level', 'warn']);
    const result = JSON.parse(out.toString());
    assert.ok(result.files > 1000 && result.devices > 0 && result.symlinks > 0, out.toString());
    const want = describeTree(umociRoot);
    const got = describeTree(target);
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), 'the same names');
    let compared = 0;
    for (const [p, w] of want) {
      const g = got.get(p)!;
      const strip = ({ ino: _ino, ...rest }: Entry) => rest;
      // The root directory's attributes come from the archive's root (umoci's rootfs dir is its own).
      if (p === '/') continue;
      assert.deepEqual(strip(g), strip(w), p);
      compared++;
    }
    assert.ok(compared > 6000);
    assert.deepEqual(linkGroups(got), linkGroups(want), 'the same hardlink groups');
  });

  test('extract keeps xattrs (security.capability too), fifos, devices, setuid and sticky bits, owners, ns mtimes, hardlinks', async () => {
    // A layer made with GNU tar (pax, xattrs) from a tree with every kind of entry.
    const src = path.join(work, 'odd-root');
    fs.mkdirSync(path.join(src, 'd'), { recursive: true });
    sh(
      `cd '${src}' && echo hi > f && setfattr -n user.test -v hello f && cp /bin/true cap && setcap cap_net_raw+ep cap && ` +
        `mkfifo d/fifo && chmod 4755 f && ln f d/hard && mkdir -m 1777 sticky && mknod blk b 7 1 && mknod chr c 1 3 && ` +
        `ln -s ../f d/link && chown 1234:5678 d && chown -h 42:43 d/link && ` +
        `touch -h -d '2020-01-02 03:04:05.123456789' d/link f sticky && touch -d '2001-02-03 04:05:06.987654321' d`,
    );
    const layer = sh(`tar --xattrs --xattrs-include='security.*' --xattrs-include='user.*' --format=pax --sort=name -C '${src}' -cf - . | gzip -n`);
    const diffId = `sha256:${createHash('sha256').update(zlib.gunzipSync(layer)).digest('hex')}`;
    const layout = path.join(work, 'odd-layout');
    const layerDesc = writeBlob(layout, layer, 'application/vnd.oci.image.layer.v1.tar+gzip');
    const configDesc = writeBlob(layout, JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [diffId] } }), 'application/vnd.oci.image.config.v1+json');
    const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: configDesc, layers: [layerDesc] };
    const manifestDesc = writeBlob(layout, JSON.stringify(manifest), manifest.mediaType);
    writeLayoutIndex(layout, [{ ...manifestDesc, annotations: { 'org.opencontainers.image.ref.name': 'odd' } }]);
    const oddArchive = path.join(work, 'odd.clip');
    await indexImage(`oci:${layout}:odd`, { output: oddArchive });
    execFileSync('umoci', ['unpack', '--image', `${layout}:odd`, path.join(work, 'odd-bundle')], { stdio: 'pipe' });

    const store = await LayerStore.open({ archive: oddArchive, cacheDir: path.join(work, 'cache-odd'), prefetch: 'none' });
    const target = path.join(work, 'odd-extracted');
    try {
      const result = await extractArchive(store, target);
      assert.deepEqual(
        { fifos: result.fifos, devices: result.devices, hardlinks: result.hardlinks, skipped: result.skipped },
        { fifos: 1, devices: 2, hardlinks: 1, skipped: { owners: 0, devices: 0, xattrs: 0 } },
      );
    } finally {
      await store.close();
    }
    const want = describeTree(path.join(work, 'odd-bundle', 'rootfs'));
    const got = describeTree(target);
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
    const strip = ({ ino: _ino, ...rest }: Entry) => rest;
    for (const [p, w] of want) if (p !== '/') assert.deepEqual(strip(got.get(p)!), strip(w), p);
    assert.match(got.get('cap')!.xattrs, /security\.capability=0s/);
    assert.match(got.get('f')!.xattrs, /user\.test="hello"/);
    assert.equal(got.get('f')!.mode, 0o4755);
    assert.equal(got.get('sticky')!.mode, 0o1777);
    assert.equal(got.get('f')!.mtimeNs, 1577934245123456789n);
    assert.deepEqual(linkGroups(got), ['d/hard = f']);
  });

  test('extract refuses a non-empty target; the library reports what it wrote', async () => {
    const store = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'cache'), prefetch: 'eager' });
    try {
      const busy = path.join(work, 'busy');
      fs.mkdirSync(busy);
      fs.writeFileSync(path.join(busy, 'x'), 'x');
      await rejectsWith(extractArchive(store, busy), 'EINVAL', /not empty/);
      fs.writeFileSync(path.join(work, 'afile'), 'x');
      await rejectsWith(extractArchive(store, path.join(work, 'afile')), 'EINVAL', /not a directory/);
    } finally {
      await store.close();
    }
  });

  test('cat writes a file (following symlinks within the image) and fails clearly for a missing one', () => {
    const cacheDir = path.join(work, 'cache-cat');
    const out = execFileSync(process.execPath, [CLI, 'cat', archivePath, '/etc/os-release', '--cache-dir', cacheDir, '--log-level', 'warn']);
    assert.ok(out.equals(fs.readFileSync(path.join(umociRoot, 'usr/lib/os-release'))));
    const bash = execFileSync(process.execPath, [CLI, 'cat', archivePath, '/bin/bash', '--cache-dir', cacheDir, '--log-level', 'warn'], { maxBuffer: 1 << 26 });
    assert.ok(bash.equals(fs.readFileSync(path.join(umociRoot, 'usr/bin/bash'))));
    let failure: { status: number; stderr: Buffer } | undefined;
    try {
      execFileSync(process.execPath, [CLI, 'cat', archivePath, '/no/such', '--cache-dir', cacheDir], { stdio: 'pipe' });
    } catch (e) {
      failure = e as { status: number; stderr: Buffer };
    }
    assert.equal(failure?.status, 3);
    assert.match(failure!.stderr.toString(), /no such file/);
  });
});
