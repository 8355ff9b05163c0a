/**
 * The mounted tree equals `umoci unpack` of the same image, entry by entry
 * (type, mode, owner, size, mtime, rdev, symlink target, xattrs, content
 * sha256, hardlink groups), for the demo Debian image and for a small image
 * with every node type, both warm (layers in the disk cache: reads are
 * spliced natively, no miss reaches TypeScript) and cold (every read is a
 * miss answered through TypeScript from the layout's blobs). Then the mount
 * in use: chroot runs the image's own shell, it is the lower layer of a
 * kernel overlayfs, writes fail with EROFS, and inode numbers are stable
 * across mounts.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { ClipArchive } from '../src/archive/reader';
import {
  assertSameTree,
  demoArchive,
  demoLayout,
  indexInto,
  sourceMiss,
  mountpoint,
  PathRecord,
  scratchDir,
  shAsync,
  unpack,
  walkTree,
  warmCache,
  withMount,
} from './mount-helpers';
import { buildRichImage } from './images';

describe('mounted tree equals umoci unpack', () => {
  let demoClip: string;
  let demoOracle: Record<string, PathRecord>;
  let demoRootfs: string;
  let featureLayout: string;
  let featureClip: string;
  let featureOracle: Record<string, PathRecord>;
  let cacheDir: string;

  before(async () => {
    const work = scratchDir('clip-mount-tree-');
    demoClip = await demoArchive();
    demoRootfs = unpack(demoLayout(), 'bookworm', path.join(work, 'demo-bundle'));
    demoOracle = await walkTree(demoRootfs);
    featureLayout = buildRichImage(path.join(work, 'feature'));
    featureClip = await indexInto(featureLayout, 't', path.join(work, 'feature.clip'));
    featureOracle = await walkTree(unpack(featureLayout, 't', path.join(work, 'feature-bundle')));
    cacheDir = path.join(work, 'cache');
    warmCache(demoClip, demoLayout(), cacheDir);
    warmCache(featureClip, featureLayout, cacheDir);
  });

  it('demo image, warm cache: every read spliced from the cached layers', async () => {
    await withMount({ archive: demoClip, mountpoint: mountpoint(), cacheDir, readMiss: await sourceMiss(demoClip) }, async (m) => {
      assertSameTree(await walkTree(m.mountpoint), demoOracle);
      const s = m.stats();
      assert.equal(s.misses, 0, 'no miss reached TypeScript');
      assert.ok(s.cachedReads > 0 && s.cachedBytes > 100e6, `spliced ${s.cachedBytes} bytes`);
      assert.equal(s.layersOpen, 2);
      assert.equal(s.errors, 0);
    });
  });

  it('demo image, cold: every read a miss answered through TypeScript', async () => {
    await withMount({ archive: demoClip, mountpoint: mountpoint(), readMiss: await sourceMiss(demoClip) }, async (m) => {
      assertSameTree(await walkTree(m.mountpoint), demoOracle);
      const s = m.stats();
      assert.equal(s.cachedReads, 0);
      assert.ok(s.misses > 0 && s.missCompleted === s.misses, JSON.stringify(s));
      assert.equal(s.missTimeouts, 0);
    });
  });

  it('feature image (devices, fifo, hardlinks, setuid, xattrs, whiteouts), warm and cold', async () => {
    for (const warm of [true, false]) {
      await withMount(
        { archive: featureClip, mountpoint: mountpoint(), cacheDir: warm ? cacheDir : undefined, readMiss: await sourceMiss(featureClip) },
        async (m) => {
          const tree = await walkTree(m.mountpoint);
          assertSameTree(tree, featureOracle);
          assert.equal(tree.suid.xattrs['security.capability'], '0100000200200000000000000000000000000000');
          assert.equal(tree.suid.mode, 0o4755);
          assert.equal(tree.sticky.mode, 0o1777);
          assert.deepEqual(tree.bdev.rdev, [8, 1]);
          assert.equal(tree.fifo.type, 'fifo');
          assert.ok(!('gone' in tree) && !('opq/a' in tree));
          assert.equal(m.stats().misses === 0, warm);
        },
      );
    }
  });

  it('inode numbers are the archive node index + 1, stable across mounts', async () => {
    const archive = ClipArchive.open(featureClip);
    const expected = archive.lookupPath('d/hard');
    for (let i = 0; i < 2; i++) {
      await withMount({ archive: featureClip, mountpoint: mountpoint(), cacheDir }, async (m) => {
        assert.equal(fs.statSync(path.join(m.mountpoint, 'd/hard')).ino, expected);
        assert.equal(fs.statSync(path.join(m.mountpoint, 'd/hard2')).ino, expected);
        assert.equal(fs.statSync(m.mountpoint).ino, 1);
      });
    }
  });

  it('mmap of the largest file, MAP_PRIVATE and MAP_SHARED read-only, equals umoci unpack', async () => {
    // Programs map files both ways (ld.so private, databases and Python's
    // mmap.ACCESS_READ shared). A mount that opened large files with
    // FOPEN_DIRECT_IO would refuse MAP_SHARED with ENODEV unless
    // FUSE_DIRECT_IO_ALLOW_MMAP was negotiated: this is the guard.
    const files = Object.entries(demoOracle).filter(([, r]) => r.type === 'file');
    const [largest, record] = files.sort(([, a], [, b]) => (b.size ?? 0) - (a.size ?? 0))[0];
    assert.ok((record.size ?? 0) >= 32 << 20, `${largest}: a file of 32 MiB or more`);
    const script = [
      'import hashlib, mmap, sys',
      'for access in (mmap.ACCESS_COPY, mmap.ACCESS_READ):',
      "    with open(sys.argv[1], 'rb') as f, mmap.mmap(f.fileno(), 0, access=access) as m:",
      '        print(hashlib.sha256(m).hexdigest())',
      "print(hashlib.sha256(open(sys.argv[2], 'rb').read()).hexdigest())",
    ].join('\n');
    const scriptFile = path.join(scratchDir('clip-mmap-'), 'map-both-ways.py');
    fs.writeFileSync(scriptFile, script);
    await withMount({ archive: demoClip, mountpoint: mountpoint(), cacheDir }, async (m) => {
      const out = await shAsync(`python3 '${scriptFile}' '${path.join(m.mountpoint, largest)}' '${path.join(demoRootfs, largest)}'`);
      const [privateMap, sharedMap, oracle] = out.trim().split('\n');
      assert.match(oracle, /^[0-9a-f]{64}$/);
      assert.equal(privateMap, oracle, 'MAP_PRIVATE');
      assert.equal(sharedMap, oracle, 'MAP_SHARED');
    });
  });

  it("chroot runs the image's own shell and coreutils", async () => {
    await withMount({ archive: demoClip, mountpoint: mountpoint(), cacheDir }, async (m) => {
      const out = await shAsync(`chroot '${m.mountpoint}' /bin/sh -c 'echo ok; ls /usr/bin | wc -l'`);
      const [first, count] = out.trim().split('\n');
      assert.equal(first, 'ok');
      assert.equal(Number(count), fs.readdirSync(path.join(m.mountpoint, 'usr/bin')).length);
      assert.ok(Number(count) > 100);
      // Cold too: the binaries and libraries come through the miss path.
    });
    await withMount({ archive: demoClip, mountpoint: mountpoint(), readMiss: await sourceMiss(demoClip) }, async (m) => {
      const out = await shAsync(`chroot '${m.mountpoint}' /bin/bash -c 'echo $BASH_VERSION; cat /opt/clip-demo/hello.txt'`);
      assert.match(out, /^5\.\d.*\nhello from the second layer\n$/);
      assert.ok(m.stats().misses > 0);
    });
  });

  it('is the lower layer of a kernel overlayfs; writes land in the upper layer', async () => {
    const work = scratchDir('clip-overlay-');
    const upper = path.join(work, 'upper');
    const wk = path.join(work, 'work');
    const merged = path.join(work, 'merged');
    for (const d of [upper, wk, merged]) fs.mkdirSync(d);
    await withMount({ archive: demoClip, mountpoint: mountpoint(), cacheDir }, async (m) => {
      await shAsync(`mount -t overlay overlay -o lowerdir='${m.mountpoint}',upperdir='${upper}',workdir='${wk}' '${merged}'`);
      try {
        await shAsync(`echo written > '${merged}/etc/new-file' && echo appended >> '${merged}/etc/motd' && rm '${merged}/etc/hostname'`);
        assert.equal(fs.readFileSync(path.join(upper, 'etc/new-file'), 'utf8'), 'written\n');
        assert.match(fs.readFileSync(path.join(upper, 'etc/motd'), 'utf8'), /clip-native demo\nappended\n$/);
        assert.ok(!fs.existsSync(path.join(m.mountpoint, 'etc/new-file')));
        assert.ok(fs.existsSync(path.join(m.mountpoint, 'etc/hostname')));
        assert.ok(!fs.existsSync(path.join(merged, 'etc/hostname')));
        const out = await shAsync(`chroot '${merged}' /bin/sh -c 'cat /etc/new-file'`);
        assert.equal(out, 'written\n');
      } finally {
        await shAsync(`umount '${merged}'`);
      }
    });
  });

  it('refuses every write with EROFS', async () => {
    await withMount({ archive: featureClip, mountpoint: mountpoint(), cacheDir }, async (m) => {
      const p = (s: string) => path.join(m.mountpoint, s);
      const attempts: Array<[string, () => void]> = [
        ['write', () => fs.writeFileSync(p('etc/hostname'), 'x')],
        ['create', () => fs.writeFileSync(p('newfile'), 'x')],
        ['mkdir', () => fs.mkdirSync(p('newdir'))],
        ['unlink', () => fs.unlinkSync(p('etc/hostname'))],
        ['rmdir', () => fs.rmdirSync(p('sticky'))],
        ['rename', () => fs.renameSync(p('etc/hostname'), p('etc/h2'))],
        ['symlink', () => fs.symlinkSync('x', p('sym-new'))],
        ['link', () => fs.linkSync(p('etc/hostname'), p('etc/h3'))],
        ['chmod', () => fs.chmodSync(p('etc/hostname'), 0o777)],
        ['chown', () => fs.chownSync(p('etc/hostname'), 1, 1)],
        ['truncate', () => fs.truncateSync(p('etc/hostname'), 0)],
        ['utimes', () => fs.utimesSync(p('etc/hostname'), 1, 1)],
        ['open rw', () => fs.closeSync(fs.openSync(p('etc/hostname'), 'r+'))],
      ];
      for (const [what, fn] of attempts) {
        assert.throws(fn, (e: NodeJS.ErrnoException) => e.code === 'EROFS', what);
      }
      await assert.rejects(shAsync(`setfattr -n user.x -v 1 '${p('etc/hostname')}'`), /Read-only file system/);
      assert.equal(fs.readFileSync(p('etc/hostname'), 'utf8'), 'changed\n');
    });
  });
});
