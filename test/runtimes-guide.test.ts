/**
 * docs/runtimes.md: its examples are examples/run-with-crun.ts and
 * examples/run-with-crun-overlay.ts, verbatim, and they really run the demo
 * image under crun from a lazy mount. Read-only: the bytes a container
 * reads equal the Debian rootfs the image was built from, the second
 * layer's file is there, the root is read-only, /tmp is writable, the exit
 * status comes through, and nothing stays mounted. On an overlay: a
 * container's new, modified and deleted files land in the upper directory
 * (the deletion as a whiteout), the mount below still equals `umoci unpack`
 * of the image entry by entry and shows the next container the image as it
 * was, and teardown leaves only the caller's mount, then nothing, mounted.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { mount } from '../src/mount/mount';
import { bundleConfig, runWithCrun } from '../examples/run-with-crun';
import { runOnOverlay } from '../examples/run-with-crun-overlay';
import { assertSameTree, demoArchive, demoLayout, mountpoint, PathRecord, scratchDir, unpack, walkTree } from './mount-helpers';
import { debianRootfs, rejectsWith, sha256File } from './fixtures';

const ROOT = path.resolve(__dirname, '../..');
const hex = (file: string) => sha256File(file).replace(/^sha256:/, '');

/**
 * The mounts that involve `dir`: mounted at or under it, or naming it in their
 * options (an overlay's upperdir). Only this run's: other checkouts may be
 * mounting at the same time.
 */
function mountsOf(dir: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => {
      const at = l.split(' ')[4] ?? '';
      return at === dir || at.startsWith(`${dir}/`) || l.split(' - ')[1]?.includes(`${dir}/`);
    });
}

/** This run's mounts are gone and its bundle removed. */
function assertTornDown(bundle: string): void {
  assert.deepEqual(mountsOf(bundle), [], 'nothing left mounted');
  assert.equal(fs.existsSync(bundle), false, 'bundle removed');
}

/** `node dist/examples/NAME.js ARGS...`, asynchronously (this process answers the mount's misses). */
function runExample(name: string, args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(__dirname, '../examples', `${name}.js`), ...args], (err, stdout, stderr) => {
      resolve({ status: err ? Number(err.code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('docs/runtimes.md', () => {
  it('shows examples/run-with-crun.ts and examples/run-with-crun-overlay.ts unchanged', () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs/runtimes.md'), 'utf8');
    const blocks = [...doc.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
    assert.equal(blocks.length, 2, 'two TypeScript blocks: the examples');
    assert.equal(blocks[0], fs.readFileSync(path.join(ROOT, 'examples/run-with-crun.ts'), 'utf8'));
    assert.equal(blocks[1], fs.readFileSync(path.join(ROOT, 'examples/run-with-crun-overlay.ts'), 'utf8'));
  });

  it('the config has no cgroup resources (crun runs with --cgroup-manager=disabled)', () => {
    const config = bundleConfig(['true']) as { linux: Record<string, unknown>; root: { readonly: boolean } };
    assert.equal(config.linux.resources, undefined);
    assert.equal(config.root.readonly, true);
  });

  describe('the example under crun', () => {
    let archive: string;
    let cacheDir: string;
    before(async () => {
      archive = await demoArchive();
      cacheDir = path.join(scratchDir('clip-crun-cache-'), 'cache');
    });

    it('runs a command from the demo image, read-only, and tears down', async () => {
      const script = [
        'cat /opt/clip-demo/hello.txt',
        'sha256sum /usr/bin/ls /usr/lib/x86_64-linux-gnu/libc.so.6',
        'if touch /etc/written 2>/dev/null; then echo root-writable; else echo root-read-only; fi',
        'echo scratch > /tmp/x && cat /tmp/x',
        'exit 7',
      ].join('; ');
      const r = await runWithCrun({ archive, cacheDir, args: ['/bin/sh', '-c', script] });
      assert.equal(r.status, 7, r.stderr);
      const rootfs = debianRootfs();
      assert.equal(
        r.stdout,
        [
          'hello from the second layer',
          `${hex(path.join(rootfs, 'usr/bin/ls'))}  /usr/bin/ls`,
          `${hex(path.join(rootfs, 'usr/lib/x86_64-linux-gnu/libc.so.6'))}  /usr/lib/x86_64-linux-gnu/libc.so.6`,
          'root-read-only',
          'scratch',
          '',
        ].join('\n'),
      );
      assertTornDown(r.bundle);
    });

    it('a command that does not exist fails with crun\'s status, and still tears down', async () => {
      const r = await runWithCrun({ archive, cacheDir, args: ['/no/such/program'] });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /no\/such\/program|No such file/);
      assertTornDown(r.bundle);
    });
  });

  describe('the overlay example under crun', () => {
    let archive: string;
    let cacheDir: string;
    let oracle: Record<string, PathRecord>;
    let oracleRootfs: string;
    before(async () => {
      archive = await demoArchive();
      // An empty disk cache: the copy-up of a modified file reads it through the mount's misses.
      cacheDir = path.join(scratchDir('clip-overlay-cache-'), 'cache');
      oracleRootfs = unpack(demoLayout(), 'bookworm', path.join(scratchDir('clip-overlay-oracle-'), 'bundle'));
      oracle = await walkTree(oracleRootfs);
    });

    /** A fresh upper and work directory on one filesystem. */
    function overlayDirs(): { upperdir: string; workdir: string } {
      const dir = scratchDir('clip-overlay-');
      const dirs = { upperdir: path.join(dir, 'upper'), workdir: path.join(dir, 'work') };
      fs.mkdirSync(dirs.upperdir);
      fs.mkdirSync(dirs.workdir);
      return dirs;
    }

    it('a container writes, modifies and deletes on an overlay: upperdir has the changes, the mount is unchanged', async () => {
      const image = await mount({ archive, mountpoint: mountpoint('clip-overlay-lower-'), cacheDir });
      try {
        const dirs = overlayDirs();
        const script = [
          'echo written > /etc/new-file',
          'echo appended >> /etc/motd',
          'rm /etc/hostname',
          'cat /etc/new-file',
          'tail -n 2 /etc/motd',
          'if [ -e /etc/hostname ]; then echo hostname-present; else echo hostname-deleted; fi',
          'exit 3',
        ].join('; ');
        const r = await runOnOverlay({ image: image.mountpoint, ...dirs, args: ['/bin/sh', '-c', script] });
        assert.equal(r.status, 3, r.stderr);
        assert.equal(r.stdout, 'written\nclip-native demo\nappended\nhostname-deleted\n', 'what the container saw');
        assertTornDown(r.bundle);
        assert.deepEqual(mountsOf(dirs.upperdir), [], 'the overlay is unmounted');

        // upperdir: the new file, the modified file copied up whole, a whiteout for the deleted one, and nothing else.
        const upper = await walkTree(dirs.upperdir);
        assert.deepEqual(Object.keys(upper).sort(), ['', 'etc', 'etc/hostname', 'etc/motd', 'etc/new-file']);
        assert.equal(fs.readFileSync(path.join(dirs.upperdir, 'etc/new-file'), 'utf8'), 'written\n');
        const motd = fs.readFileSync(path.join(oracleRootfs, 'etc/motd'), 'utf8');
        assert.match(motd, /clip-native demo\n$/);
        assert.equal(fs.readFileSync(path.join(dirs.upperdir, 'etc/motd'), 'utf8'), `${motd}appended\n`);
        assert.equal(upper['etc/motd'].mode, oracle['etc/motd'].mode);
        assert.equal(upper['etc/hostname'].type, 'char', 'a whiteout');
        assert.deepEqual(upper['etc/hostname'].rdev, [0, 0], 'a whiteout');

        // The mount below: still the image, entry by entry, as umoci unpacks it.
        assertSameTree(await walkTree(image.mountpoint), oracle);

        // The next container on the same mount, with its own upperdir, sees the image as it was.
        const next = await runOnOverlay({
          image: image.mountpoint,
          ...overlayDirs(),
          args: ['/bin/sh', '-c', 'cat /etc/hostname; tail -n 1 /etc/motd; if [ -e /etc/new-file ]; then echo new-file-present; else echo no-new-file; fi'],
        });
        assert.equal(next.status, 0, next.stderr);
        assert.equal(next.stdout, `${fs.readFileSync(path.join(oracleRootfs, 'etc/hostname'), 'utf8')}clip-native demo\nno-new-file\n`);
        assertTornDown(next.bundle);
      } finally {
        await image.unmount();
      }
      assert.deepEqual(mountsOf(image.mountpoint), [], 'the mount is gone too');
    });

    it('the command line: the status comes through, writes land in --upper, and bad usage exits 2', async () => {
      const image = await mount({ archive, mountpoint: mountpoint('clip-overlay-lower-'), cacheDir });
      try {
        const dirs = overlayDirs();
        const r = await runExample('run-with-crun-overlay', [image.mountpoint, '--upper', dirs.upperdir, '--work', dirs.workdir, '--', '/bin/sh', '-c', 'echo hi > /hello; cat /hello; exit 5']);
        assert.equal(r.status, 5, r.stderr);
        assert.equal(r.stdout, 'hi\n');
        assert.equal(fs.readFileSync(path.join(dirs.upperdir, 'hello'), 'utf8'), 'hi\n');
        assert.equal(fs.existsSync(path.join(image.mountpoint, 'hello')), false);
        assert.deepEqual(mountsOf(dirs.upperdir), [], 'the overlay is unmounted');
        const usage = await runExample('run-with-crun-overlay', [image.mountpoint, '--upper', dirs.upperdir, '--', 'true']);
        assert.equal(usage.status, 2);
        assert.match(usage.stderr, /^usage: run-with-crun-overlay IMAGE_DIR --upper DIR --work DIR -- CMD/);
      } finally {
        await image.unmount();
      }
    });

    it('bad directories: EINVAL for a name overlayfs cannot take, EIO when overlayfs refuses; nothing stays mounted', async () => {
      const image = await mount({ archive, mountpoint: mountpoint('clip-overlay-lower-'), cacheDir });
      try {
        const dirs = overlayDirs();
        await rejectsWith(runOnOverlay({ image: image.mountpoint, upperdir: `${dirs.upperdir},index=on`, workdir: dirs.workdir, args: ['true'] }), 'EINVAL', /has a ","/);
        // No such work directory: the mount fails, the bundle is removed.
        await rejectsWith(runOnOverlay({ image: image.mountpoint, upperdir: dirs.upperdir, workdir: `${dirs.workdir}-missing`, args: ['true'] }), 'EIO', /^mount -t overlay/);
        assert.deepEqual(mountsOf(dirs.upperdir), []);
        assert.deepEqual(fs.readdirSync(dirs.upperdir), [], 'nothing written');
      } finally {
        await image.unmount();
      }
    });
  });
});
