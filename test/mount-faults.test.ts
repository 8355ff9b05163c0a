/**
 * The mount under faults: a source that never answers (EIO after the
 * deadline while other files keep working, late answers dropped), a source
 * that fails, 64 concurrent readers of one cold file (each range fetched
 * once), unmount while files are open and a process sits in the mount, the
 * background CLI mount killed with SIGKILL and mounted again on the same
 * (stale) mountpoint, and `clip-native umount` ending the background mount.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ClipArchive } from '../src/archive/reader';
import { ClipError } from '../src/errors';
import { MountLayer, ReadMiss } from '../src/mount/mount';
import { findMount, mountpointState } from '../src/mount/stale';
import { RegistrySource } from '../src/oci';
import { debianRootfs } from './fixtures';
import { demoArchive, demoLayout, sourceMiss, mountpoint, shAsync, warmCache, withMount } from './mount-helpers';
import { demoInRegistry, FaultProxy, RegistryHandle } from './registry-harness';

const CLI = path.resolve(__dirname, '../src/cli/main.js');
const ROOTFS_BASH_SHA = () => createHash('sha256').update(fs.readFileSync('/var/cache/clip-native/debian-bookworm-rootfs/usr/bin/bash')).digest('hex');

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('mount faults', () => {
  let clip: string;
  let archive: ClipArchive;

  before(async () => {
    clip = await demoArchive();
    archive = ClipArchive.open(clip);
  });

  it('a source that never answers: EIO after the deadline, other files keep working, late answers dropped', async () => {
    const bash = archive.stat(archive.lookupPath('usr/bin/bash')!);
    const real = await sourceMiss(clip);
    const hung: Array<() => void> = [];
    const readMiss: ReadMiss = (layer: MountLayer, offset: number, length: number) => {
      if (layer.index === bash.layer && offset >= bash.dataOffset && offset < bash.dataOffset + bash.size) {
        return new Promise<Buffer>((resolve) => hung.push(() => resolve(Buffer.alloc(length))));
      }
      return real(layer, offset, length);
    };
    await withMount({ archive: clip, mountpoint: mountpoint(), readMiss, deadlineMs: 1500 }, async (m) => {
      const started = Date.now();
      const hungRead = shAsync(`cat '${m.mountpoint}/usr/bin/bash' > /dev/null`).then(
        () => 'ok',
        (e: Error) => e.message,
      );
      await sleep(200);
      // While bash's read waits, other files are served.
      const motd = await shAsync(`cat '${m.mountpoint}/etc/motd'`);
      assert.match(motd, /clip-native demo/);
      assert.equal((await shAsync(`ls '${m.mountpoint}/usr/bin' | wc -l`)).trim(), String(fs.readdirSync(`${m.mountpoint}/usr/bin`).length));
      const result = await hungRead;
      const elapsed = Date.now() - started;
      assert.match(result, /Input\/output error/);
      assert.ok(elapsed >= 1400 && elapsed < 15000, `failed after ${elapsed} ms`);
      assert.ok(m.stats().missTimeouts >= 1);
      // Answering now is too late: dropped, never a second reply.
      const before = m.stats().lateAnswers;
      for (const answer of hung) answer();
      await sleep(50);
      assert.equal(m.stats().lateAnswers - before, hung.length);
      assert.equal(m.stats().pending, 0);
    });
  });

  it('a source that fails: the read fails with EIO at once', async () => {
    const readMiss: ReadMiss = async () => {
      throw new ClipError('EIO', 'registry unreachable');
    };
    await withMount({ archive: clip, mountpoint: mountpoint(), readMiss }, async (m) => {
      const started = Date.now();
      await assert.rejects(shAsync(`cat '${m.mountpoint}/etc/os-release'`), /Input\/output error/);
      assert.ok(Date.now() - started < 5000);
      // Metadata never needs the source.
      assert.ok(fs.statSync(`${m.mountpoint}/etc/os-release`).size > 0);
      assert.ok(m.stats().missFailed >= 1);
    });
  });

  it('64 concurrent readers of the same cold file: every range fetched once', async () => {
    const real = await sourceMiss(clip);
    let calls = 0;
    let bytes = 0;
    const readMiss: ReadMiss = async (layer, offset, length) => {
      calls++;
      bytes += length;
      await sleep(100); // keep fetches in flight while the other readers arrive
      return real(layer, offset, length);
    };
    const size = fs.statSync('/var/cache/clip-native/debian-bookworm-rootfs/usr/bin/bash').size;
    await withMount({ archive: clip, mountpoint: mountpoint(), readMiss }, async (m) => {
      const out = await shAsync(`for i in $(seq 64); do sha256sum '${m.mountpoint}/usr/bin/bash' & done; wait`);
      const sums = out.trim().split('\n').map((l) => l.split(' ')[0]);
      assert.equal(sums.length, 64);
      assert.deepEqual(new Set(sums), new Set([ROOTFS_BASH_SHA()]));
      const s = m.stats();
      assert.ok(bytes <= size, `fetched ${bytes} bytes in ${calls} calls for a ${size}-byte file`);
      assert.equal(s.fetches, calls);
    });
  });

  it('unmount while files are open and a process sits in the mount', async () => {
    await withMount({ archive: clip, mountpoint: mountpoint(), readMiss: await sourceMiss(clip) }, async (m) => {
      const holder = spawn('/bin/sh', ['-c', `exec 3< '${m.mountpoint}/etc/motd'; cd '${m.mountpoint}/usr'; exec sleep 60`], { stdio: 'ignore' });
      try {
        await sleep(300);
        const started = Date.now();
        await m.unmount();
        assert.ok(Date.now() - started < 10000);
        assert.equal(findMount(m.mountpoint), null);
        assert.equal(mountpointState(m.mountpoint), 'free');
        assert.equal(m.stats().running, false);
      } finally {
        holder.kill('SIGKILL');
      }
    });
  });

  it('CLI: background mount, SIGKILL, mount again on the stale mountpoint, umount ends the process', async () => {
    const mp = mountpoint();
    const first = cli(['mount', clip, mp]);
    assert.equal(first.status, 0, first.stderr);
    const pid1 = Number(/\(pid (\d+)\)/.exec(first.stdout)![1]);
    try {
      assert.ok(alive(pid1));
      assert.match(await shAsync(`cat '${mp}/opt/clip-demo/hello.txt'`), /second layer/);
      process.kill(pid1, 'SIGKILL');
      await sleep(300);
      assert.equal(mountpointState(mp), 'stale');
      const second = cli(['mount', clip, mp, '--threads', '2']);
      assert.equal(second.status, 0, second.stderr);
      const pid2 = Number(/\(pid (\d+)\)/.exec(second.stdout)![1]);
      try {
        assert.equal(mountpointState(mp), 'mounted');
        assert.equal(await shAsync(`sha256sum '${mp}/usr/bin/bash' | cut -d' ' -f1`), `${ROOTFS_BASH_SHA()}\n`);
        // A live mount is not mounted over.
        const busy = cli(['mount', clip, mp]);
        assert.notEqual(busy.status, 0);
        assert.match(busy.stderr, /already mounted/);
        const um = cli(['umount', mp]);
        assert.equal(um.status, 0, um.stderr);
        for (let i = 0; i < 50 && alive(pid2); i++) await sleep(100);
        assert.ok(!alive(pid2), 'the background mount process exits after umount');
        assert.equal(mountpointState(mp), 'free');
      } finally {
        if (alive(pid2)) process.kill(pid2, 'SIGKILL');
      }
    } finally {
      if (alive(pid1)) process.kill(pid1, 'SIGKILL');
      if (mountpointState(mp) !== 'free') spawnSync('fusermount3', ['-u', '-z', mp]);
    }
  });

  it('CLI: errors are one sentence and a stable exit code', () => {
    const missing = cli(['mount', '/nonexistent.clip', mountpoint()]);
    assert.equal(missing.status, 3, missing.stderr);
    const noDir = cli(['mount', clip, '/nonexistent-dir']);
    assert.equal(noDir.status, 3, noDir.stderr);
    assert.match(noDir.stderr, /does not exist/);
    const notMounted = cli(['umount', mountpoint()]);
    assert.equal(notMounted.status, 2, notMounted.stderr);
  });
});

/**
 * The same faults end to end: misses through the mount's own LayerStore,
 * whose source is a real registry behind a fault proxy. The demo image's
 * second layer is in the disk cache; its Debian layer is cold.
 */
describe('mount faults through the storage tiers and a real registry', () => {
  let registry: RegistryHandle;
  let proxy: FaultProxy;
  let clip: string;
  let work: string;
  const rootfsSha = (p: string) => createHash('sha256').update(fs.readFileSync(path.join(debianRootfs(), p))).digest('hex');

  before(async () => {
    ({ work, registry, proxy, archive: clip } = await demoInRegistry('clip-mount-faults-registry-'));
  });
  after(async () => {
    await proxy?.stop();
    await registry?.stop();
  });

  /** A cache holding every layer but the bottom (Debian) one. */
  function cacheWithColdBottom(name: string): string {
    const cacheDir = path.join(work, name);
    warmCache(clip, demoLayout(), cacheDir);
    const bottom = ClipArchive.open(clip).layers()[0].diffId.replace(/^sha256:/, '');
    fs.rmSync(path.join(cacheDir, 'layers/sha256', bottom));
    return cacheDir;
  }

  function proxySource(): RegistrySource {
    return new RegistrySource({ host: proxy.host, repository: 'demo', insecure: true, maxAttempts: 1, retryBaseMs: 1 });
  }

  it('the registry stalls mid-read: EIO after the deadline, cached files and metadata keep working', async () => {
    let ranges = 0;
    // The first Range request is answered; every later one hangs with its connection open.
    proxy.setHandler((req) => (req.headers.range && ++ranges > 1 ? { kind: 'stall', after: 0 } : { kind: 'forward' }));
    const source = proxySource();
    try {
      await withMount(
        { archive: clip, mountpoint: mountpoint(), cacheDir: cacheWithColdBottom('cache-stall'), deadlineMs: 2000, storage: { source, prefetch: 'none' } },
        async (m) => {
          const started = Date.now();
          const reading = shAsync(`cat '${m.mountpoint}/usr/bin/perl' > /dev/null`).then(
            () => 'ok',
            (e: Error) => e.message,
          );
          await sleep(300);
          // While perl's reads wait on the dead source, the cached layer and metadata answer.
          assert.match(await shAsync(`cat '${m.mountpoint}/opt/clip-demo/hello.txt'`), /second layer/);
          assert.ok((await shAsync(`ls '${m.mountpoint}/usr/bin' | wc -l`)).trim() !== '0');
          assert.ok(fs.statSync(`${m.mountpoint}/usr/bin/perl`).size > 1 << 20);
          const result = await reading;
          const elapsed = Date.now() - started;
          assert.match(result, /Input\/output error/);
          assert.ok(elapsed >= 1900 && elapsed < 20000, `failed after ${elapsed} ms`);
          assert.ok(ranges >= 2, 'the read reached the source and then stalled');
          assert.ok(m.stats().missTimeouts >= 1);
        },
      );
    } finally {
      proxy.setHandler(() => ({ kind: 'forward' }));
      await source.close();
    }
  });

  it('64 concurrent readers of one cold file: each span fetched from the registry once', async () => {
    const seen = new Map<string, number>();
    proxy.setHandler((req) => {
      if (req.headers.range) seen.set(String(req.headers.range), (seen.get(String(req.headers.range)) ?? 0) + 1);
      return { kind: 'forward' };
    });
    const source = proxySource();
    try {
      await withMount(
        { archive: clip, mountpoint: mountpoint(), cacheDir: cacheWithColdBottom('cache-64'), storage: { source, prefetch: 'none' } },
        async (m) => {
          const out = await shAsync(`for i in $(seq 64); do sha256sum '${m.mountpoint}/usr/bin/perl' & done; wait`);
          const sums = out.trim().split('\n').map((l) => l.split(' ')[0]);
          assert.equal(sums.length, 64);
          assert.deepEqual(new Set(sums), new Set([rootfsSha('usr/bin/perl')]));
          assert.ok(seen.size >= 1, 'the file came from the registry');
          const repeated = [...seen].filter(([, n]) => n > 1);
          assert.deepEqual(repeated, [], 'no span fetched twice');
          const s = m.stats();
          assert.equal(s.cachedReads, 0);
          assert.ok(s.misses >= s.fetches && s.fetches >= 1);
        },
      );
    } finally {
      proxy.setHandler(() => ({ kind: 'forward' }));
      await source.close();
    }
  });
});
