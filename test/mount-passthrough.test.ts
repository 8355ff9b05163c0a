/**
 * FUSE passthrough for large files (native/fuse/passthrough_files.h): the
 * first open of a large file of a cached layer is served the usual way and
 * queues a copy of the file into the disk cache; once the copy exists, opens
 * are answered with a backing file and the kernel reads it directly (no READ
 * request reaches the mount). Checked against the image's rootfs bytes, for
 * read(2), mmap and exec, across mounts, and with the kernel's rule that
 * all live opens of one inode are of one kind. The disk cache counts the
 * copies with their layer, verifies them against it, and evicts them with it.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { DiskCache } from '../src/storage/disk-cache';
import { debianRootfs } from './fixtures';
import { demoArchive, demoLayout, mountpoint, scratchDir, shAsync, warmCache, withMount } from './mount-helpers';

// Only perl (3.8 MB, hardlinked) and the apt Packages list (50 MB) of the demo image are this large.
const MIN = 3 << 20;
const PERL = 'usr/bin/perl'; // 3.8 MB, hardlinked as perl5.36.0
const PACKAGES = 'var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages'; // 50 MB
const SMALL = 'etc/hostname';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const oracle = (p: string) => sha(fs.readFileSync(path.join(debianRootfs(), p)));

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until(what: string, check: () => boolean, timeoutMs = 60000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** The complete copies (not partials) under a cache's files directory. */
function copies(cacheDir: string): string[] {
  const root = path.join(cacheDir, 'files', 'sha256');
  if (!fs.existsSync(root)) return [];
  return fs.readdirSync(root).flatMap((hex) => fs.readdirSync(path.join(root, hex)).filter((n) => /^\d+$/.test(n)).map((n) => path.join(root, hex, n)));
}

/** sha256 of a file read by another process (sha256sum), not by this test's own thread. */
async function shaOf(file: string): Promise<string> {
  return (await shAsync(`sha256sum '${file}'`)).split(' ')[0];
}

describe('mount: FUSE passthrough for large files', () => {
  let clip: string;

  before(async () => {
    clip = await demoArchive();
    const size = (p: string) => fs.statSync(path.join(debianRootfs(), p)).size;
    assert.ok(size(PACKAGES) > 16 << 20 && size(PERL) > MIN && size(SMALL) < MIN, 'the demo image has the files these tests rely on');
  });

  it('copies a large file once, then the kernel reads it from the copy: same bytes by read, mmap and exec', async () => {
    const cacheDir = path.join(scratchDir('clip-pt-'), 'cache');
    warmCache(clip, demoLayout(), cacheDir);
    const mp = mountpoint();
    await withMount({ archive: clip, mountpoint: mp, cacheDir, readMiss: null, passthroughMinBytes: MIN }, async (m) => {
      // First open: served by splice from the layer, and the copy is queued.
      assert.equal(await shaOf(path.join(mp, PACKAGES)), oracle(PACKAGES));
      assert.equal(m.stats().passthroughOpens, 0);
      await until('the copy of the Packages file', () => copies(cacheDir).length === 1);
      assert.equal(m.stats().backingCopies, 1);
      assert.equal(sha(fs.readFileSync(copies(cacheDir)[0])), oracle(PACKAGES));

      // Later opens: passthrough; the kernel reads the copy, no READ reaches us.
      const readsBefore = m.stats().reads;
      assert.equal(await shaOf(path.join(mp, PACKAGES)), oracle(PACKAGES));
      assert.equal(m.stats().passthroughOpens, 1);
      assert.equal(m.stats().reads, readsBefore, 'reads of a passthrough file never reach the mount');
      const mapped = (await shAsync(`python3 -c "import mmap,sys,hashlib; f=open(sys.argv[1],'rb'); m=mmap.mmap(f.fileno(),0,mmap.MAP_SHARED,mmap.PROT_READ); print(hashlib.sha256(m).hexdigest())" '${path.join(mp, PACKAGES)}'`)).trim();
      assert.equal(mapped, oracle(PACKAGES));
      assert.equal(m.stats().passthroughOpens, 2);

      // exec of a large binary: first exec the usual way, then from its copy.
      assert.match(await shAsync(`echo 'print 6*7' | chroot '${mp}' /usr/bin/perl`), /^42$/);
      await until('the copy of perl', () => copies(cacheDir).length === 2);
      assert.match(await shAsync(`echo 'print 6*7' | chroot '${mp}' /usr/bin/perl5.36.0`), /^42$/);
      assert.equal(m.stats().passthroughOpens, 3, 'the hardlink shares the inode, so its copy');
      assert.equal(await shaOf(path.join(mp, PERL)), oracle(PERL));

      // Small files never get a copy (but with passthrough on, every open is an OPEN request).
      const opens = m.stats().opens;
      assert.equal(await shaOf(path.join(mp, SMALL)), oracle(SMALL));
      assert.equal(copies(cacheDir).length, 2);
      assert.equal(m.stats().passthroughOpens, 4);
      assert.equal(m.stats().opens, opens + 1);
    });

    // A fresh mount finds the copies: the first open is already passthrough.
    await withMount({ archive: clip, mountpoint: mp, cacheDir, readMiss: null, passthroughMinBytes: MIN }, async (m) => {
      assert.equal(await shaOf(path.join(mp, PACKAGES)), oracle(PACKAGES));
      assert.equal(m.stats().passthroughOpens, 1);
      assert.equal(m.stats().reads, 0);
    });
  });

  it('an inode keeps the kind of its live opens: an open while a spliced one is live is spliced too', async () => {
    const cacheDir = path.join(scratchDir('clip-pt-'), 'cache');
    warmCache(clip, demoLayout(), cacheDir);
    const mp = mountpoint();
    const file = path.join(mp, PACKAGES);
    await withMount({ archive: clip, mountpoint: mp, cacheDir, readMiss: null, passthroughMinBytes: MIN }, async (m) => {
      const held = fs.openSync(file, 'r'); // spliced; queues the copy
      try {
        await until('the copy', () => copies(cacheDir).length === 1);
        // The kernel would refuse a passthrough open now (ETXTBSY): this one must be spliced.
        assert.equal(await shaOf(file), oracle(PACKAGES));
        assert.equal(m.stats().passthroughOpens, 0);
        const buf = Buffer.alloc(4096);
        assert.equal(fs.readSync(held, buf, 0, buf.length, 1 << 20), buf.length);
      } finally {
        fs.closeSync(held);
      }
      // With no open left, the inode switches (RELEASE may trail close() a moment).
      await until('a passthrough open', () => {
        const fd = fs.openSync(file, 'r');
        fs.closeSync(fd);
        return m.stats().passthroughOpens > 0;
      }, 10000);
      assert.equal(await shaOf(file), oracle(PACKAGES));
    });
  });

  for (const min of [0, 1 << 30]) {
    it(`passthroughMinBytes ${min} (${min ? 'no file that large' : 'off'}) never copies, and the kernel stops sending OPEN`, async () => {
      const cacheDir = path.join(scratchDir('clip-pt-'), 'cache');
      warmCache(clip, demoLayout(), cacheDir);
      const mp = mountpoint();
      await withMount({ archive: clip, mountpoint: mp, cacheDir, readMiss: null, passthroughMinBytes: min }, async (m) => {
        for (let i = 0; i < 2; i++) assert.equal(await shaOf(path.join(mp, PACKAGES)), oracle(PACKAGES));
        assert.equal(await shaOf(path.join(mp, SMALL)), oracle(SMALL));
        await sleep(500);
        assert.equal(m.stats().passthroughOpens, 0);
        assert.equal(m.stats().backingCopies, 0);
        assert.ok(m.stats().opens <= 1, `${m.stats().opens} OPEN requests: only the first, answered ENOSYS (no_open)`);
      });
      assert.deepEqual(copies(cacheDir), []);
    });
  }

  it('the disk cache counts copies with their layer, verifies them against it, and evicts them with it', async () => {
    const cacheDir = path.join(scratchDir('clip-pt-'), 'cache');
    warmCache(clip, demoLayout(), cacheDir);
    const mp = mountpoint();
    await withMount({ archive: clip, mountpoint: mp, cacheDir, readMiss: null, passthroughMinBytes: MIN }, async () => {
      await shaOf(path.join(mp, PACKAGES));
      await shaOf(path.join(mp, PERL));
      await until('two copies', () => copies(cacheDir).length === 2);
    });
    const disk = new DiskCache(cacheDir);
    const layerBytes = (hex: string) => fs.statSync(disk.pathFor(hex)).size;
    const listing = disk.list();
    const withCopies = listing.layers.filter((l) => l.copiesBytes > 0);
    assert.ok(withCopies.length >= 1);
    for (const l of listing.layers) assert.equal(l.size, layerBytes(l.hex) + l.copiesBytes);
    assert.equal(
      withCopies.reduce((s, l) => s + l.copiesBytes, 0),
      fs.statSync(path.join(debianRootfs(), PACKAGES)).size + fs.statSync(path.join(debianRootfs(), PERL)).size,
    );

    // A copy whose bytes drifted from its layer is found and deleted; the layer stays.
    const [bad, good] = copies(cacheDir);
    fs.chmodSync(bad, 0o644);
    const fd = fs.openSync(bad, 'r+');
    fs.writeSync(fd, Buffer.from([0x42]), 0, 1, 1000);
    fs.closeSync(fd);
    const verified = await disk.verify();
    assert.deepEqual(verified.deleted, []);
    assert.deepEqual(verified.deletedCopies, [bad]);
    assert.ok(fs.existsSync(good));

    // A dead writer's partial and an orphan directory are pruned; evicting a layer takes its copies.
    const partial = `${good}.partial-999999999-abcdef01`;
    fs.writeFileSync(partial, 'x');
    const orphan = path.join(cacheDir, 'files', 'sha256', 'f'.repeat(64));
    fs.mkdirSync(orphan);
    fs.writeFileSync(path.join(orphan, '512'), 'x');
    const pruned = disk.prune(0);
    assert.ok(pruned.partials.includes(partial) && pruned.partials.includes(orphan));
    assert.equal(disk.list().layers.length, 0);
    assert.deepEqual(copies(cacheDir), []);
  });
});
