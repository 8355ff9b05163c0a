/**
 * docs/runtimes.md: its example is examples/run-with-crun.ts, verbatim, and
 * that example really runs the demo image under crun from a lazy mount:
 * the bytes a container reads equal the Debian rootfs the image was built
 * from, the second layer's file is there, the root is read-only, /tmp is
 * writable, the exit status comes through, and nothing stays mounted.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { bundleConfig, runWithCrun } from '../examples/run-with-crun';
import { demoArchive, scratchDir } from './mount-helpers';
import { debianRootfs, sha256File } from './fixtures';

const ROOT = path.resolve(__dirname, '../..');
const hex = (file: string) => sha256File(file).replace(/^sha256:/, '');

/** This run's own mountpoint is unmounted and its bundle gone (other checkouts may be mounting at the same time). */
function assertTornDown(bundle: string): void {
  const mountpoint = path.join(bundle, 'rootfs');
  assert.equal(fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === mountpoint), false, 'nothing left mounted');
  assert.equal(fs.existsSync(bundle), false, 'bundle removed');
}

describe('docs/runtimes.md', () => {
  it('shows examples/run-with-crun.ts unchanged', () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs/runtimes.md'), 'utf8');
    const blocks = [...doc.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
    assert.equal(blocks.length, 1, 'one TypeScript block: the example');
    assert.equal(blocks[0], fs.readFileSync(path.join(ROOT, 'examples/run-with-crun.ts'), 'utf8'));
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
});
