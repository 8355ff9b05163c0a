/**
 * The source tier against a real registry (Debian's docker-registry on
 * 127.0.0.1, the demo image pushed with skopeo): a cold read fetches only
 * a span by HTTP Range; a registry that cuts a span short or sends wrong
 * bytes (the fault proxy) makes the read fail with a ClipError, never
 * return wrong bytes, and the failure is not cached; once a layer is in the
 * disk cache, stopping the registry does not disturb reads (library and
 * `clip-native cat`).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ClipError } from '../src/errors';
import { log } from '../src/log';
import { RegistrySource } from '../src/oci';
import { LayerStore } from '../src/storage/store';
import { debianRootfs, rejectsWith } from './fixtures';
import { demoInRegistry, FaultProxy, RegistryHandle } from './registry-harness';

log.level = process.env.CLIP_LOG_LEVEL ?? 'warn';

let registry: RegistryHandle;
let proxy: FaultProxy;
let work: string;
let archivePath: string;
const CLI = path.resolve(__dirname, '../src/cli/main.js');

before(async () => {
  ({ work, registry, proxy, archive: archivePath } = await demoInRegistry('clip-storage-registry-'));
});

after(async () => {
  await proxy?.stop();
  await registry?.stop();
});

const rootfs = (p: string) => fs.readFileSync(path.join(debianRootfs(), p));

function proxySource(): RegistrySource {
  return new RegistrySource({ host: proxy.host, repository: 'demo', insecure: true, maxAttempts: 2, retryBaseMs: 1 });
}

describe('LayerStore over a registry', () => {
  test('a cold read of a small file fetches one span by Range, not the layer', async () => {
    const store = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'cache-cold'), prefetch: 'none', insecure: true });
    try {
      assert.ok((await store.readFile('/etc/os-release')).equals(rootfs('usr/lib/os-release')));
      const s = store.stats();
      const layerSize = store.archive.layers()[0].compressedSize;
      assert.ok(s.sourceWireBytes.reads > 0 && s.sourceWireBytes.reads < 4 << 20, `${s.sourceWireBytes.reads} bytes`);
      assert.ok(s.sourceWireBytes.reads * 20 < layerSize);
      assert.equal(s.sourceWireBytes.fills, 0);
    } finally {
      await store.close();
    }
  });

  test('a span cut short by the registry fails the read (ETRUNCATED); a retry after it recovers succeeds', async () => {
    const source = proxySource();
    const store = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'cache-trunc'), prefetch: 'none', source });
    try {
      proxy.setHandler((req) => (req.headers.range ? { kind: 'truncate', after: 1000 } : { kind: 'forward' }));
      await rejectsWith(store.readFile('/etc/passwd'), 'ETRUNCATED');
      proxy.setHandler(() => ({ kind: 'forward' }));
      assert.ok((await store.readFile('/etc/passwd')).equals(rootfs('etc/passwd')), 'the failure was not cached');
    } finally {
      proxy.setHandler(() => ({ kind: 'forward' }));
      await store.close();
      await source.close();
    }
  });

  test('wrong bytes from the registry fail the read (ECORRUPT/EDIGEST), never reach the caller', async () => {
    // Flip bytes at several places of the span; each read must fail or (if
    // the flip is provably harmless) return the right bytes.
    const want = rootfs('usr/bin/bash');
    let failed = 0;
    for (const at of [40, 1000, 20_000, 100_000]) {
      const source = proxySource();
      const store = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, `cache-corrupt-${at}`), prefetch: 'none', source });
      try {
        proxy.setHandler((req) => (req.headers.range ? { kind: 'corrupt', at } : { kind: 'forward' }));
        try {
          const got = await store.readFile('/usr/bin/bash');
          assert.ok(got.equals(want), `corrupt byte at ${at}: wrong bytes were returned`);
        } catch (e) {
          assert.ok(e instanceof ClipError, String(e));
          assert.ok(['ECORRUPT', 'EDIGEST', 'ETRUNCATED'].includes(e.code), `${e.code}: ${e.message}`);
          failed++;
        }
      } finally {
        proxy.setHandler(() => ({ kind: 'forward' }));
        await store.close();
        await source.close();
      }
    }
    if (process.env.CLIP_TEST_SHOW_ERRORS) console.log(`  corruptions detected: ${failed} of 4`);
    assert.ok(failed >= 1, 'at least one corruption was detected');
  });

  test('a fill that receives wrong bytes is not cached (EDIGEST) and leaves no partial file', async () => {
    const source = proxySource();
    const cacheDir = path.join(work, 'cache-badfill');
    const store = await LayerStore.open({ archive: archivePath, cacheDir, prefetch: 'none', source });
    try {
      // The whole-blob GET is corrupted: the blob digest (and diff_id) cannot match.
      proxy.setHandler((req) => (req.path.includes('/blobs/') && !req.headers.range ? { kind: 'corrupt', at: 5_000_000 } : { kind: 'forward' }));
      await assert.rejects(store.whenCached(0), (e: unknown) => e instanceof ClipError && ['EDIGEST', 'ECORRUPT'].includes(e.code));
      assert.deepEqual(fs.readdirSync(path.join(cacheDir, 'layers', 'sha256')), []);
      assert.ok((await store.readFile('/etc/passwd')).equals(rootfs('etc/passwd')), 'reads go on from the source');
    } finally {
      proxy.setHandler(() => ({ kind: 'forward' }));
      await store.close();
      await source.close();
    }
  });

  test('after the layer is cached, a stopped registry does not disturb reads (library and cat)', async () => {
    const cacheDir = path.join(work, 'cache-stop');
    const first = await LayerStore.open({ archive: archivePath, cacheDir, prefetch: 'eager', insecure: true });
    try {
      await first.prefetch();
      assert.ok(first.cachedLayerPath(0) && first.cachedLayerPath(1));
    } finally {
      await first.close();
    }
    await proxy.stop();
    await registry.stop();
    const store = await LayerStore.open({ archive: archivePath, cacheDir, prefetch: 'none', insecure: true });
    try {
      for (const f of ['etc/passwd', 'usr/bin/bash', 'etc/debian_version']) assert.ok((await store.readFile(`/${f}`)).equals(rootfs(f)), f);
      assert.equal(store.stats().tiers.source.hits, 0);
    } finally {
      await store.close();
    }
    const out = execFileSync(process.execPath, [CLI, 'cat', archivePath, '/etc/passwd', '--cache-dir', cacheDir, '--insecure', '--log-level', 'warn']);
    assert.ok(out.equals(rootfs('etc/passwd')));
  });
});
