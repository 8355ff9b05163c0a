/**
 * LayerStore over the demo image's OCI layout (real blobs, no network):
 * reads through the source tier (Range-style pread of the blob + checkpoint
 * inflate) compared with the debootstrap rootfs, the background and eager
 * fills into the disk cache (verified, 0444, atomically renamed), coalesced
 * misses, LRU eviction under a size cap that never removes a pinned layer,
 * partial and damaged files never served, and cache prune/verify.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { log } from '../src/log';
import { indexImage } from '../src/index/build';
import { DiskCache } from '../src/storage/disk-cache';
import { LayerStore } from '../src/storage/store';
import { debianRootfs, rejectsWith, rng, sh } from './fixtures';
import { appendLayer, layerBlobPath } from './images';
import { demoLayout, scratchDir } from './registry-harness';

log.level = process.env.CLIP_LOG_LEVEL ?? 'warn';

let work: string;
const CLI = path.resolve(__dirname, '../src/cli/main.js');
let archivePath: string;

before(async () => {
  work = scratchDir('clip-storage-tiers-');
  archivePath = path.join(work, 'demo.clip');
  await indexImage(`oci:${demoLayout()}:bookworm`, { output: archivePath });
});

const SAMPLE_FILES = ['/etc/os-release', '/usr/bin/bash', '/etc/passwd', '/etc/debian_version', '/bin/ls', '/usr/lib/x86_64-linux-gnu/libc.so.6'];

/** The rootfs file behind `p`, following symlinks the way the store does (inside the rootfs). */
function rootfsBytes(p: string): Buffer {
  const real = sh(`cd '${debianRootfs()}' && chroot . readlink -f '${p}' 2>/dev/null || readlink -f '.${p}'`).toString().trim();
  const file = real.startsWith(debianRootfs()) ? real : path.join(debianRootfs(), real);
  return fs.readFileSync(file);
}

function cacheFiles(dir: string): string[] {
  const layers = path.join(dir, 'layers', 'sha256');
  return fs.existsSync(layers) ? fs.readdirSync(layers).sort() : [];
}

describe('LayerStore over an OCI layout', () => {
  test('cold reads come from the source and match the rootfs; then the layer is filled and reads are preads', async () => {
    const cacheDir = path.join(work, 'cache-cold');
    const store = await LayerStore.open({ archive: archivePath, cacheDir, prefetch: 'none' });
    try {
      for (const f of SAMPLE_FILES) assert.ok((await store.readFile(f)).equals(rootfsBytes(f)), f);
      const s1 = store.stats();
      assert.ok(s1.tiers.source.hits > 0);
      assert.equal(s1.tiers.disk.hits, 0);
      assert.equal(s1.fills.started, 0, 'prefetch none fills nothing');
      assert.deepEqual(cacheFiles(cacheDir), []);
      assert.equal(store.cachedLayerPath(0), null);

      const p = await store.whenCached(0);
      assert.equal(store.cachedLayerPath(0), p);
      const st = fs.statSync(p);
      assert.equal(st.mode & 0o777, 0o444);
      assert.equal(path.basename(p), store.archive.layers()[0].diffId.slice(7));
      assert.equal(st.size, store.archive.layers()[0].uncompressedSize);
      assert.deepEqual(cacheFiles(cacheDir), [path.basename(p)], 'no partial files left');
      for (const f of SAMPLE_FILES) assert.ok((await store.readFile(f)).equals(rootfsBytes(f)), f);
      const s2 = store.stats();
      assert.ok(s2.tiers.disk.hits >= SAMPLE_FILES.length - 1, JSON.stringify(s2.tiers.disk));
      assert.equal(s2.fills.completed, 1);
      assert.ok(s2.tiers.disk.p50Ms > 0 && s2.tiers.disk.p99Ms >= s2.tiers.disk.p50Ms);
      JSON.parse(JSON.stringify(s2)); // serializable
    } finally {
      await store.close();
    }
  });

  test('background prefetch fills after the first source read; eager fills before the first read returns', async () => {
    const bgDir = path.join(work, 'cache-bg');
    const bg = await LayerStore.open({ archive: archivePath, cacheDir: bgDir });
    try {
      assert.equal(bg.prefetchMode, 'background');
      await bg.readFile('/etc/os-release');
      assert.equal(bg.stats().tiers.source.hits, 1);
      const deadline = Date.now() + 30_000;
      while (bg.cachedLayerPath(0) === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.ok(bg.cachedLayerPath(0), 'the background fill completed');
      await bg.readFile('/etc/os-release');
      assert.equal(bg.stats().tiers.disk.hits, 1);
    } finally {
      await bg.close();
    }
    const eager = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'cache-eager'), prefetch: 'eager' });
    try {
      assert.ok((await eager.readFile('/etc/passwd')).equals(rootfsBytes('/etc/passwd')));
      const s = eager.stats();
      assert.equal(s.tiers.source.hits, 0, 'eager: nothing read through the source');
      assert.equal(s.tiers.disk.hits, 1);
      assert.equal(s.fills.completed, 1);
    } finally {
      await eager.close();
    }
  });

  test('concurrent misses for the same bytes cause one fetch and one inflate', async () => {
    const store = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'cache-coalesce'), prefetch: 'none' });
    try {
      const results = await Promise.all(Array.from({ length: 16 }, () => store.readFile('/usr/bin/bash')));
      const want = rootfsBytes('/usr/bin/bash');
      for (const r of results) assert.ok(r.equals(want));
      const s = store.stats();
      const bash = store.resolve('/usr/bin/bash').stat;
      // The intervals bash spans, fetched once each: at most its size plus two intervals' slack, compressed.
      assert.ok(s.sourceWireBytes.reads < bash.size + 6 * 1024 * 1024, `${s.sourceWireBytes.reads} bytes fetched`);
      const once = s.sourceWireBytes.reads;
      await store.readFile('/usr/bin/bash');
      assert.equal(store.stats().sourceWireBytes.reads, once, 'a repeat comes from the in-memory intervals');
      assert.ok(store.stats().tiers.memory.hits >= 1);
    } finally {
      await store.close();
    }
  });

  test('partial files, wrong names and wrong sizes are never served', async () => {
    const cacheDir = path.join(work, 'cache-partial');
    const layer = (await LayerStore.open({ archive: archivePath, cacheDir, prefetch: 'none' }).then(async (s) => {
      const l = s.archive.layers()[0];
      await s.close();
      return l;
    }));
    const hex = layer.diffId.slice(7);
    const dir = path.join(cacheDir, 'layers', 'sha256');
    // A partial file with the full size and plausible content, and a wrong-size complete one.
    fs.writeFileSync(path.join(dir, `${hex}.partial-999999-abc`), Buffer.alloc(layer.uncompressedSize, 0x41));
    fs.writeFileSync(path.join(dir, hex.toUpperCase()), Buffer.alloc(layer.uncompressedSize, 0x42));
    fs.writeFileSync(path.join(dir, hex), Buffer.alloc(1000, 0x43));
    const store = await LayerStore.open({ archive: archivePath, cacheDir, prefetch: 'none' });
    try {
      assert.ok((await store.readFile('/etc/os-release')).equals(rootfsBytes('/etc/os-release')));
      assert.equal(store.stats().tiers.disk.hits, 0);
      assert.equal(store.cachedLayerPath(0), null);
    } finally {
      await store.close();
    }
    // verify deletes the damaged file; prune removes the dead fill's partial.
    const cache = new DiskCache(cacheDir);
    const verified = await cache.verify();
    assert.deepEqual(verified.deleted, [hex]);
    const pruned = cache.prune();
    assert.equal(pruned.partials.length, 1);
    assert.deepEqual(cacheFiles(cacheDir), [hex.toUpperCase()]); // not a layer name: ignored, never served
  });

  test('LRU eviction under the size cap, never of a pinned layer', async () => {
    const cacheDir = path.join(work, 'cache-lru');
    const layers = (await LayerStore.open({ archive: archivePath, cacheDir, prefetch: 'none' }).then(async (s) => {
      const l = s.archive.layers();
      await s.close();
      return l;
    }));
    const cap = layers[0].uncompressedSize + 1024; // room for the big layer, not both
    // Fill the small layer, then let it go (unpinned).
    let store = await LayerStore.open({ archive: archivePath, cacheDir, cacheSize: cap, prefetch: 'none' });
    await store.whenCached(1);
    await store.close();
    store = await LayerStore.open({ archive: archivePath, cacheDir, cacheSize: cap, prefetch: 'none' });
    try {
      await store.whenCached(0);
      assert.deepEqual(cacheFiles(cacheDir), [layers[0].diffId.slice(7)], 'the least recently used layer was evicted');
    } finally {
      await store.close();
    }
    // Now pin the big layer in one store and fill the small one in another: the pinned one stays.
    const holder = await LayerStore.open({ archive: archivePath, cacheDir, cacheSize: cap, prefetch: 'none' });
    const other = await LayerStore.open({ archive: archivePath, cacheDir, cacheSize: layers[1].uncompressedSize + 10, prefetch: 'none' });
    try {
      await holder.whenCached(0);
      assert.ok(new DiskCache(cacheDir).list().layers[0].pinned);
      // The small layer does not fit next to a pinned big one under the tiny cap: not cached, reads still work.
      await rejectsWith(other.whenCached(1), 'EIO');
      assert.ok(fs.existsSync(holder.cachedLayerPath(0)!), 'the pinned layer was not evicted');
      assert.equal((await other.read(1, 0, 512)).length, 512);
    } finally {
      await holder.close();
      await other.close();
    }
    const listing = new DiskCache(cacheDir).list();
    assert.ok(listing.layers.every((l) => !l.pinned), 'closing a store releases its pins');
  });

  test('clip-native cache ls, verify and prune', async () => {
    const cacheDir = path.join(work, 'cache-cli');
    const store = await LayerStore.open({ archive: archivePath, cacheDir, prefetch: 'none' });
    const layers = store.archive.layers();
    try {
      await store.whenCached(1);
      const cli = (...args: string[]) => execFileSync(process.execPath, [CLI, 'cache', ...args, '--cache-dir', cacheDir], { stdio: 'pipe' }).toString();
      const listed = JSON.parse(cli('ls', '--json'));
      assert.equal(listed.layers.length, 1);
      assert.equal(listed.layers[0].diffId, layers[1].diffId);
      assert.equal(listed.layers[0].pinned, true, 'held by the open store');
      assert.match(cli('prune'), /removed 0 layers/, 'a pinned layer is not pruned');
    } finally {
      await store.close();
    }
    // A damaged layer: verify deletes it and exits with EDIGEST's code.
    const bad = path.join(cacheDir, 'layers', 'sha256', layers[0].diffId.slice(7));
    fs.writeFileSync(bad, 'not the layer');
    let failure: { status: number; stdout: Buffer } | undefined;
    try {
      execFileSync(process.execPath, [CLI, 'cache', 'verify', '--cache-dir', cacheDir], { stdio: 'pipe' });
    } catch (e) {
      failure = e as { status: number; stdout: Buffer };
    }
    assert.equal(failure?.status, 7);
    assert.match(failure!.stdout.toString(), /MISMATCH, deleted/);
    assert.ok(!fs.existsSync(bad));
    assert.match(execFileSync(process.execPath, [CLI, 'cache', 'prune', '--cache-dir', cacheDir]).toString(), /removed 1 layers/);
    assert.deepEqual(cacheFiles(cacheDir), []);
  });

  test('bad arguments are refused with EINVAL', async () => {
    await rejectsWith(LayerStore.open({ archive: archivePath, prefetch: 'sometimes' as 'none' }), 'EINVAL', /prefetch/);
    await rejectsWith(LayerStore.open({ archive: archivePath, cacheSzie: 1 } as unknown as { archive: string }), 'EINVAL', /unknown option "cacheSzie"/);
    await rejectsWith(LayerStore.open({ archive: archivePath, redis: 'http://127.0.0.1:1' }), 'EINVAL', /redis:\/\//);
    await rejectsWith(LayerStore.open({ archive: path.join(work, 'missing.clip') }), 'ENOENT');
    const store = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'cache-args'), prefetch: 'none' });
    try {
      await rejectsWith(store.read(5, 0, 1), 'EINVAL', /out of range/);
      await rejectsWith(store.read(0, store.archive.layers()[0].uncompressedSize, 1), 'EINVAL');
      await rejectsWith(store.readFile('/no/such/file'), 'ENOENT');
      await rejectsWith(store.readFile('/etc'), 'EINVAL', /not a regular file/);
      assert.equal((await store.read(0, 0, 0)).length, 0);
    } finally {
      await store.close();
    }
    await rejectsWith(store.read(0, 0, 1), 'EINVAL', /closed/);
  });
});

after(() => undefined);

describe('a plain-tar layer', () => {
  // Its blob has no checkpoints and so no span digests: only the whole blob's
  // digest proves its bytes, so the store serves it from a verified fill.
  test('is read from its verified disk-cache copy even with prefetch none; a flipped blob byte fails the read', async () => {
    const dir = scratchDir('clip-plain-tar-');
    const layout = path.join(dir, 'layout');
    sh(`umoci init --layout '${layout}' && umoci new --image '${layout}:t'`);
    fs.mkdirSync(path.join(dir, 'src'));
    const next = rng(7);
    const content = Buffer.alloc(3 << 20);
    for (let i = 0; i < content.length; i++) content[i] = (next() * 256) | 0;
    fs.writeFileSync(path.join(dir, 'src', 'data.bin'), content);
    const blob = appendLayer(layout, 't', sh(`tar --format=pax -C '${dir}/src' -cf - data.bin`), false);
    const archive = path.join(dir, 't.clip');
    await indexImage(`oci:${layout}:t`, { output: archive });

    const good = await LayerStore.open({ archive, cacheDir: path.join(dir, 'c1'), prefetch: 'none' });
    try {
      assert.ok((await good.readFile('/data.bin')).equals(content));
      assert.ok(good.cachedLayerPath(0), 'served from the verified disk copy');
      assert.equal(good.stats().sourceWireBytes.reads, 0, 'no bare Range read of the tar');
    } finally {
      await good.close();
    }

    const blobFile = layerBlobPath(layout, blob.digest as string);
    const bytes = fs.readFileSync(blobFile);
    bytes[(1 << 20) + 4321] ^= 0x40; // inside data.bin's bytes
    fs.chmodSync(blobFile, 0o644);
    fs.writeFileSync(blobFile, bytes);
    const bad = await LayerStore.open({ archive, cacheDir: path.join(dir, 'c2'), prefetch: 'none' });
    try {
      await rejectsWith(bad.read(0, 1 << 20, 4096), 'EDIGEST', /plain tar/);
      assert.deepEqual(cacheFiles(path.join(dir, 'c2')), [], 'nothing unverified kept');
    } finally {
      await bad.close();
    }
  });
});
