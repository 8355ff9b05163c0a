/**
 * The library face of the mount: option checks (one EINVAL sentence each),
 * several mounts in one process at once, stats, idempotent unmount, a
 * mountpoint that is busy or missing, and Singleflight's coalescing.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { mount } from '../src/mount/mount';
import { Singleflight } from '../src/storage/singleflight';
import { findMount } from '../src/mount/stale';
import { rejectsWith } from './fixtures';
import { demoArchive, sourceMiss, mountpoint, shAsync, warmCache, demoLayout, scratchDir } from './mount-helpers';

describe('mount API', () => {
  let clip: string;
  let cacheDir: string;

  before(async () => {
    clip = await demoArchive();
    cacheDir = path.join(scratchDir('clip-mount-api-'), 'cache');
    warmCache(clip, demoLayout(), cacheDir);
  });

  it('checks its options', async () => {
    const mp = mountpoint();
    await rejectsWith(mount({ archive: clip, mountpoint: mp, thread: 2 } as never), 'EINVAL', /unknown option "thread"/);
    await rejectsWith(mount({ archive: clip, mountpoint: mp, threads: 0 }), 'EINVAL', /threads/);
    await rejectsWith(mount({ archive: clip, mountpoint: mp, deadlineMs: -1 }), 'EINVAL', /deadlineMs/);
    await rejectsWith(mount({ archive: clip, mountpoint: mp, readMiss: 'x' as never }), 'EINVAL', /readMiss/);
    await rejectsWith(mount({ archive: clip, mountpoint: mp, readMiss: null, storage: {} }), 'EINVAL', /not both/);
    await rejectsWith(mount({ archive: clip, mountpoint: mp, storage: { cacheDir: '/x' } as never }), 'EINVAL', /cacheDir/);
    await rejectsWith(mount({ archive: clip, mountpoint: mp, cacheDir, storage: { prefetch: 'sometimes' as never } }), 'EINVAL', /prefetch/);
    await rejectsWith(mount({ archive: '', mountpoint: mp }), 'EINVAL', /archive/);
    await rejectsWith(mount({ archive: '/nonexistent.clip', mountpoint: mp }), 'ENOENT');
    await rejectsWith(mount({ archive: clip, mountpoint: '/nonexistent-mountpoint' }), 'ENOENT', /does not exist/);
    const file = path.join(mp, '..', `${path.basename(mp)}.file`);
    fs.writeFileSync(file, '');
    await rejectsWith(mount({ archive: clip, mountpoint: file }), 'EINVAL', /not a directory/);
    await rejectsWith(mount({ archive: file, mountpoint: mp }), 'ECORRUPT');
    assert.equal(findMount(mp), null, 'nothing left mounted');
  });

  it('a mount maps its archive once (the session serves from the store\'s mapping), until unmount', async () => {
    const mappings = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.endsWith(` ${fs.realpathSync(clip)}`)).length;
    assert.equal(mappings(), 0);
    const m = await mount({ archive: clip, mountpoint: mountpoint(), cacheDir });
    try {
      await shAsync(`ls -lR '${m.mountpoint}/usr/bin' > /dev/null && cat '${m.mountpoint}/etc/passwd' > /dev/null`);
      assert.equal(mappings(), 1);
    } finally {
      await m.unmount();
    }
    assert.equal(mappings(), 0);
  });

  it('several mounts in one process, each with its own stats; unmount is idempotent', async () => {
    const a = await mount({ archive: clip, mountpoint: mountpoint(), cacheDir });
    const b = await mount({ archive: clip, mountpoint: mountpoint(), readMiss: await sourceMiss(clip), threads: 3 });
    try {
      await rejectsWith(mount({ archive: clip, mountpoint: a.mountpoint }), 'EBUSY', /already mounted/);
      const [x, y] = await Promise.all([
        shAsync(`sha256sum '${a.mountpoint}/usr/bin/ls' | cut -d' ' -f1`),
        shAsync(`sha256sum '${b.mountpoint}/usr/bin/ls' | cut -d' ' -f1`),
      ]);
      assert.equal(x, y);
      assert.ok(a.stats().cachedReads > 0 && a.stats().misses === 0);
      assert.ok(b.stats().misses > 0 && b.stats().cachedReads === 0);
      assert.equal(a.stats().running, true);
      assert.equal(findMount(a.mountpoint)?.fstype, 'fuse.clip-native');
    } finally {
      await Promise.all([a.unmount(), b.unmount()]);
    }
    await a.unmount();
    assert.equal(findMount(a.mountpoint), null);
    assert.equal(findMount(b.mountpoint), null);
    assert.equal(a.stats().running, false);
  });

  it('without a miss handler, uncached reads fail with EIO and metadata still works', async () => {
    const mp = mountpoint();
    const m = await mount({ archive: clip, mountpoint: mp, readMiss: null });
    try {
      await assert.rejects(shAsync(`cat '${mp}/etc/os-release'`), /Input\/output error/);
      assert.match(await shAsync(`readlink '${mp}/bin'`), /usr\/bin/);
      assert.ok(fs.statSync(`${mp}/usr/bin/bash`).mode & 0o111);
    } finally {
      await m.unmount();
    }
  });

  it('Singleflight shares calls in flight and forgets settled ones', async () => {
    const flight = new Singleflight<string, number>();
    let runs = 0;
    const slow = () =>
      new Promise<number>((r) => {
        runs++;
        setTimeout(() => r(runs), 20);
      });
    const results = await Promise.all(Array.from({ length: 10 }, () => flight.run('k', slow)));
    assert.deepEqual(new Set(results), new Set([1]));
    assert.equal(flight.calls, 1);
    assert.equal(flight.shared, 9);
    assert.equal(flight.size, 0);
    assert.equal(await flight.run('k', slow), 2);
    await assert.rejects(
      flight.run('bad', () => {
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.equal(flight.size, 0);
  });
});
