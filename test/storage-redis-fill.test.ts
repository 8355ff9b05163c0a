/**
 * Redis filled in the background after a registry fetch, against a real
 * registry (docker-registry, the demo image pushed with skopeo) and a real
 * redis-server: host A (its own disk cache) reads a file from the registry,
 * its background fill caches the layer on disk, verifies it, and uploads it
 * to Redis from the verified file; host B (an empty disk cache, the same
 * Redis, the registry stopped) then reads the same bytes from Redis alone.
 * Redis killed or stalled mid-upload: A's reads and disk fill go on, no
 * meta key (the "complete" marker) is ever written, and B falls back to the
 * registry instead of reading the partial upload.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { indexImage } from '../src/index/build';
import { log } from '../src/log';
import { RedisClient } from '../src/storage/redis-client';
import { LayerStore } from '../src/storage/store';
import { debianRootfs } from './fixtures';
import { RedisHandle, startRedis } from './redis-harness';
import { demoLayout, RegistryHandle, scratchDir, startRegistry } from './registry-harness';

log.level = process.env.CLIP_LOG_LEVEL ?? 'error';

let registry: RegistryHandle;
let work: string;
let archivePath: string;

before(async () => {
  work = scratchDir('clip-storage-redis-fill-');
  registry = await startRegistry();
  await registry.push(`oci:${demoLayout()}:bookworm`, 'demo:bookworm');
  archivePath = path.join(work, 'demo.clip');
  await indexImage(`${registry.host}/demo:bookworm`, { output: archivePath, insecure: true });
});

after(async () => {
  await registry?.stop();
});

const FILES = ['etc/passwd', 'usr/bin/bash', 'etc/debian_version', 'usr/bin/ls', 'usr/lib/os-release'];
const rootfs = (p: string) => fs.readFileSync(path.join(debianRootfs(), p));

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 60_000, everyMs = 25): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

const keyCount = async (redis: RedisHandle, pattern: string) => (await redis.command('KEYS', pattern)).split('\r\n').filter((l) => l.startsWith('clip:')).length;

/** Host A: reads /etc/passwd from the registry with a background fill; resolves with the store and the layer's diff_id hex. */
async function hostA(cacheDir: string, redis: RedisHandle, redisTimeoutMs = 500): Promise<{ store: LayerStore; hex: string; layer: number }> {
  const store = await LayerStore.open({ archive: archivePath, cacheDir, redis: redis.url, insecure: true, redisTimeoutMs });
  const layer = store.resolve('/etc/passwd').stat.layer!;
  assert.ok((await store.readFile('/etc/passwd')).equals(rootfs('etc/passwd')));
  assert.ok(store.stats().tiers.source.hits >= 1, 'the first read came from the registry');
  return { store, hex: store.archive.layers()[layer].diffId.slice(7), layer };
}

/** Host B: an empty disk cache, prefetch none; every file byte-equal to the rootfs. */
async function hostBReads(cacheDir: string, redis: RedisHandle): Promise<ReturnType<LayerStore['stats']>> {
  const b = await LayerStore.open({ archive: archivePath, cacheDir, redis: redis.url, insecure: true, prefetch: 'none' });
  try {
    for (const f of FILES) assert.ok((await b.readFile(`/${f}`)).equals(rootfs(f)), f);
    return b.stats();
  } finally {
    await b.close();
  }
}

describe('Redis is filled after a registry fetch', () => {
  test('Redis killed mid-upload: A reads and caches on, no complete marker; B falls back to the registry', async () => {
    const redis = await startRedis();
    try {
      const { store, hex, layer } = await hostA(path.join(work, 'kill-a'), redis);
      try {
        // The disk fill comes first, then the upload from the verified file: kill Redis once chunks arrive.
        await until('chunks in redis', async () => (await keyCount(redis, `clip:{${hex}}:*`)) >= 4, 120_000, 5);
        assert.equal(await keyCount(redis, 'clip:*:meta'), 0, 'no meta before the upload finished');
        await redis.kill();
        // A: no failed read, the disk cache is complete and serves.
        for (const f of FILES) assert.ok((await store.readFile(`/${f}`)).equals(rootfs(f)), f);
        assert.ok(fs.existsSync(await store.whenCached(layer)));
        await until('the upload to give up', () => store.stats().tiers.redis!.errors >= 1);
        assert.equal(store.stats().fills.uploaded, 0);
      } finally {
        await store.close();
      }
      await redis.restart();
      assert.equal(await keyCount(redis, 'clip:*:meta'), 0);
      const s = await hostBReads(path.join(work, 'kill-b'), redis);
      assert.equal(s.tiers.redis!.hits, 0, JSON.stringify(s.tiers));
      assert.ok(s.tiers.source.hits >= 1);
      // Redis is back: the next store over A's warm disk cache uploads the
      // layer from its verified file, and a new host B reads it from Redis.
      const again = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'kill-a'), redis: redis.url, insecure: true });
      try {
        await again.whenCached(layer);
        await until('the upload from the disk cache', () => again.stats().fills.uploaded === 1, 120_000);
        assert.equal(again.stats().tiers.source.hits, 0);
      } finally {
        await again.close();
      }
      const s2 = await hostBReads(path.join(work, 'kill-b2'), redis);
      assert.ok(s2.tiers.redis!.hits >= 1, JSON.stringify(s2.tiers));
    } finally {
      await redis.stop();
    }
  });

  test('Redis stalled mid-upload: the chunks already written stay unpublished and are never served', async () => {
    const redis = await startRedis();
    const blocker = new RedisClient(redis.url, { commandTimeoutMs: 10_000 });
    try {
      const { store, hex } = await hostA(path.join(work, 'stall-a'), redis, 200);
      try {
        await until('chunks in redis', async () => (await keyCount(redis, `clip:{${hex}}:*`)) >= 4, 120_000, 5);
        // Longer than the command deadline: the upload times out and is abandoned (its cleanup times out too).
        await blocker.command(['DEBUG', 'SLEEP', '1.5']);
        await until('the upload to give up', () => store.stats().tiers.redis!.errors >= 1);
        assert.equal(store.stats().fills.uploaded, 0);
      } finally {
        await store.close();
      }
      assert.equal(await keyCount(redis, 'clip:*:meta'), 0, 'a partial upload was marked complete');
      assert.ok((await keyCount(redis, `clip:{${hex}}:*`)) >= 1, 'the partial chunks are still there (so B could be fooled by them)');
      const s = await hostBReads(path.join(work, 'stall-b'), redis);
      assert.equal(s.tiers.redis!.hits, 0, JSON.stringify(s.tiers));
      assert.ok(s.tiers.source.hits >= 1);
    } finally {
      blocker.close();
      await redis.stop();
    }
  });

  // Last: it stops the registry.
  test('host A reads from the registry and uploads in the background; host B reads the same bytes from Redis with the registry stopped', async () => {
    const redis = await startRedis();
    try {
      const { store, hex } = await hostA(path.join(work, 'a'), redis);
      try {
        await until('the upload', () => store.stats().fills.uploaded === 1, 120_000);
        const s = store.stats();
        assert.equal(s.fills.completed, 1, 'the disk fill came first');
        // The upload read the verified disk file: the layer crossed the wire once.
        assert.ok(s.sourceWireBytes.fills <= store.archive.layers().find((l) => l.diffId === `sha256:${hex}`)!.compressedSize);
      } finally {
        await store.close();
      }
      assert.equal(await keyCount(redis, `clip:{${hex}}:meta`), 1);
      await registry.stop();
      const s = await hostBReads(path.join(work, 'b'), redis);
      assert.equal(s.tiers.source.hits, 0, JSON.stringify(s.tiers));
      assert.equal(s.sourceWireBytes.reads, 0);
      assert.ok(s.tiers.redis!.hits >= FILES.length - 1);
    } finally {
      await redis.stop();
    }
  });
});
