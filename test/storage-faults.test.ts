/**
 * Disk cache faults with real processes and a real small filesystem: a
 * cache directory on a 20 MiB tmpfs that fills up (the fill is abandoned,
 * its partial file removed, reads keep working); a fill killed with SIGKILL
 * in a child process (its partial file is never served, and the next fill
 * removes it and completes); two processes filling the same layer at once
 * (the fill lock makes it one fill; the other finds the file).
 */
import assert from 'node:assert/strict';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, test } from 'node:test';
import { indexImage } from '../src/index/build';
import { log } from '../src/log';
import { OciLayoutSource } from '../src/oci';
import { LayerStore } from '../src/storage/store';
import { debianRootfs, rejectsWith } from './fixtures';
import { demoLayout, scratchDir } from './registry-harness';

log.level = process.env.CLIP_LOG_LEVEL ?? 'warn';

let work: string;
let archivePath: string;
const STORE_MODULE = path.resolve(__dirname, '../src/storage/store.js');

before(async () => {
  work = scratchDir('clip-storage-faults-');
  archivePath = path.join(work, 'demo.clip');
  await indexImage(`oci:${demoLayout()}:bookworm`, { output: archivePath });
});

const rootfs = (p: string) => fs.readFileSync(path.join(debianRootfs(), p));
const layerDir = (cacheDir: string) => path.join(cacheDir, 'layers', 'sha256');
const listLayerDir = (cacheDir: string) => (fs.existsSync(layerDir(cacheDir)) ? fs.readdirSync(layerDir(cacheDir)).sort() : []);

/** A child process that fills layer 0 into `cacheDir` and prints its fill stats as JSON. */
function fillInChild(cacheDir: string): { child: ChildProcess; result: Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> } {
  const script = `
    const { LayerStore } = require(${JSON.stringify(STORE_MODULE)});
    (async () => {
      const store = await LayerStore.open({ archive: process.argv[1], cacheDir: process.argv[2], prefetch: 'none' });
      await store.whenCached(0);
      process.stdout.write(JSON.stringify(store.stats().fills));
      await store.close();
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const child = spawn(process.execPath, ['-e', script, archivePath, cacheDir], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CLIP_LOG_LEVEL: 'warn' } });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const result = new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return { child, result };
}

describe('disk cache faults', () => {
  test('a cache on a small tmpfs fills up: the fill is abandoned, no partial file stays, reads go on', async () => {
    const mnt = path.join(work, 'tmpfs');
    fs.mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=20m', 'tmpfs', mnt]);
    try {
      const store = await LayerStore.open({ archive: archivePath, cacheDir: mnt, prefetch: 'none' });
      try {
        await rejectsWith(store.whenCached(0), 'EIO', /ENOSPC|no space/i);
        assert.deepEqual(listLayerDir(mnt), [], 'the partial file was removed');
        assert.equal(store.stats().fills.failed, 1);
        for (const f of ['etc/passwd', 'usr/bin/bash']) assert.ok((await store.readFile(`/${f}`)).equals(rootfs(f)), f);
        // A layer that fits still gets cached.
        await store.whenCached(1);
        assert.deepEqual(listLayerDir(mnt), [store.archive.layers()[1].diffId.slice(7)]);
      } finally {
        await store.close();
      }
      // Background fills hit the same wall without disturbing reads.
      const bg = await LayerStore.open({ archive: archivePath, cacheDir: mnt });
      try {
        assert.ok((await bg.readFile('/etc/passwd')).equals(rootfs('etc/passwd')));
        const deadline = Date.now() + 30_000;
        while (bg.stats().fills.failed === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        assert.equal(bg.stats().fills.failed, 1);
        assert.ok((await bg.readFile('/usr/bin/ls')).equals(rootfs('usr/bin/ls')));
        assert.equal(listLayerDir(mnt).filter((n) => n.includes('.partial-')).length, 0);
      } finally {
        await bg.close();
      }
      // Eager: the first read waits for a fill that fails; later reads do not try again and again.
      const eager = await LayerStore.open({ archive: archivePath, cacheDir: mnt, prefetch: 'eager' });
      try {
        for (const f of ['etc/passwd', 'usr/bin/bash', 'usr/bin/ls', 'etc/debian_version']) assert.ok((await eager.readFile(`/${f}`)).equals(rootfs(f)), f);
        assert.equal(eager.stats().fills.failed, 1);
        assert.equal(listLayerDir(mnt).filter((n) => n.includes('.partial-')).length, 0);
      } finally {
        await eager.close();
      }
    } finally {
      execFileSync('umount', [mnt]);
    }
  });

  test('a fill killed with SIGKILL leaves a partial file that is never served; the next fill removes it and completes', async () => {
    const cacheDir = path.join(work, 'killed');
    const { child, result } = fillInChild(cacheDir);
    const deadline = Date.now() + 30_000;
    let partial: string | undefined;
    for (;;) {
      partial = listLayerDir(cacheDir).find((n) => n.includes('.partial-'));
      if (partial && fs.statSync(path.join(layerDir(cacheDir), partial)).size > 20 << 20) break;
      if (Date.now() > deadline) throw new Error('the child never got 20 MiB into its fill');
      await new Promise((r) => setTimeout(r, 10));
    }
    child.kill('SIGKILL');
    const exit = await result;
    assert.equal(exit.signal, 'SIGKILL');
    assert.deepEqual(listLayerDir(cacheDir), [partial], 'only the dead fill\'s partial file');

    const store = await LayerStore.open({ archive: archivePath, cacheDir, prefetch: 'none' });
    try {
      assert.ok((await store.readFile('/usr/bin/bash')).equals(rootfs('usr/bin/bash')));
      assert.equal(store.stats().tiers.disk.hits, 0, 'the partial file was not served');
      const p = await store.whenCached(0);
      assert.deepEqual(listLayerDir(cacheDir), [path.basename(p)], 'the stale partial file is gone');
      assert.ok((await store.readFile('/usr/bin/bash')).equals(rootfs('usr/bin/bash')));
      assert.equal(store.stats().tiers.disk.hits, 1);
    } finally {
      await store.close();
    }
  });

  test('two processes filling the same layer: one fill, the other waits and finds the file', async () => {
    const cacheDir = path.join(work, 'two');
    const a = fillInChild(cacheDir);
    const b = fillInChild(cacheDir);
    const [ra, rb] = await Promise.all([a.result, b.result]);
    assert.equal(ra.code, 0, ra.stderr);
    assert.equal(rb.code, 0, rb.stderr);
    const fa = JSON.parse(ra.stdout);
    const fb = JSON.parse(rb.stdout);
    assert.equal(fa.completed + fb.completed, 1, `${ra.stdout} ${rb.stdout}`);
    assert.equal(fa.foundCached + fb.foundCached, 1);
    assert.equal(fa.wireBytes + fb.wireBytes, fs.statSync(path.join(demoLayout(), 'blobs', 'sha256', JSON.parse(fs.readFileSync(path.join(demoLayout(), 'blobs', 'sha256', JSON.parse(fs.readFileSync(path.join(demoLayout(), 'index.json'), 'utf8')).manifests[0].digest.slice(7)), 'utf8')).layers[0].digest.slice(7))).size, 'the blob was streamed once');
    assert.equal(listLayerDir(cacheDir).length, 1);
  });

  test('a layout blob changed in place (same size, same tar stream) is not cached: EDIGEST, no partial file', async () => {
    // Byte 4 of a gzip member is its MTIME: gunzip gives the same tar stream,
    // so only the blob's digest, checked by the addon as it reads the file
    // (no bytes of a layout's blob pass through JavaScript), can catch it.
    const layout = path.join(work, 'changed-oci');
    execFileSync('cp', ['-r', demoLayout(), layout]);
    const store = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'changed-cache'), prefetch: 'none', source: await OciLayoutSource.open(layout) });
    try {
      const blob = path.join(layout, 'blobs', 'sha256', store.archive.layers()[0].digest.slice(7));
      const fd = fs.openSync(blob, 'r+');
      fs.writeSync(fd, Buffer.from([0x5a]), 0, 1, 4);
      fs.closeSync(fd);
      await rejectsWith(store.whenCached(0), 'EDIGEST', /the blob is \d+ bytes hashing to sha256:/);
      assert.deepEqual(listLayerDir(path.join(work, 'changed-cache')), [], 'nothing cached, no partial file');
    } finally {
      await store.close();
    }
  });

  test('closing the store stops a running fill at once (EBUSY) and removes its partial file', async () => {
    const cacheDir = path.join(work, 'closing');
    const store = await LayerStore.open({ archive: archivePath, cacheDir, prefetch: 'none' });
    const filling = store.whenCached(0);
    // Until the partial file has bytes: the addon is reading the blob file.
    const deadline = Date.now() + 10_000;
    const partialBytes = () => listLayerDir(cacheDir).filter((n) => n.includes('.partial-')).reduce((sum, n) => sum + fs.statSync(path.join(layerDir(cacheDir), n)).size, 0);
    while (partialBytes() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.ok(partialBytes() > 0, 'the fill started');
    const started = Date.now();
    await Promise.all([rejectsWith(filling, 'EBUSY'), store.close()]);
    assert.ok(Date.now() - started < 1000, `stopped in ${Date.now() - started} ms`);
    assert.deepEqual(listLayerDir(cacheDir), []);
  });
});
