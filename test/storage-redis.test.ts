/**
 * The Redis tier against a real redis-server (started by the test on a free
 * 127.0.0.1 port, persistence off): a layer read from the source is
 * uploaded in the background in verified chunks, and another host (a store
 * with an empty disk cache) then reads it from Redis without touching the
 * source; Redis killed mid-read falls back to the source with no failed
 * read and recovers after a restart; a slow Redis (DEBUG SLEEP) costs a read
 * one command deadline, not a failure; an evicting Redis (tiny maxmemory)
 * never serves a missing or wrong chunk.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, test } from 'node:test';
import { indexImage } from '../src/index/build';
import { log } from '../src/log';
import { RedisClient } from '../src/storage/redis-client';
import { LayerStore } from '../src/storage/store';
import { debianRootfs } from './fixtures';
import { startRedis, startRedisCluster } from './redis-harness';
import { demoLayout, scratchDir } from './registry-harness';

log.level = process.env.CLIP_LOG_LEVEL ?? 'warn';

let work: string;
let archivePath: string;

before(async () => {
  work = scratchDir('clip-storage-redis-');
  archivePath = path.join(work, 'demo.clip');
  await indexImage(`oci:${demoLayout()}:bookworm`, { output: archivePath });
});

const FILES = ['etc/passwd', 'usr/bin/bash', 'etc/debian_version', 'usr/bin/ls', 'usr/lib/os-release'];
const rootfs = (p: string) => fs.readFileSync(path.join(debianRootfs(), p));

async function until(what: string, cond: () => boolean, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('the Redis tier', () => {
  test('the RESP client round-trips binary values, reports errors and times out', async () => {
    const redis = await startRedis();
    const client = new RedisClient(redis.url, { commandTimeoutMs: 300 });
    try {
      const big = Buffer.alloc(3 << 20);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7919) & 0xff;
      assert.ok(await client.set('k{t}', big, '{t}'));
      assert.ok((await client.get('k{t}', '{t}'))!.equals(big));
      assert.equal(await client.get('missing', undefined), null);
      assert.equal(await client.set('k{t}', 'x', '{t}', { nx: true }), false);
      await assert.rejects(client.command(['NOSUCHCOMMAND']), /unknown command/i);
      // A slow server: the command gives up at its deadline, the next one reconnects.
      const slow = new RedisClient(redis.url, { commandTimeoutMs: 5000 });
      const sleeping = slow.command(['DEBUG', 'SLEEP', '1']);
      await new Promise((r) => setTimeout(r, 50)); // the sleep has begun
      const started = Date.now();
      await assert.rejects(client.get('k{t}', '{t}'), /did not answer/);
      assert.ok(Date.now() - started < 900);
      await sleeping;
      slow.close();
      assert.ok((await client.get('k{t}', '{t}'))!.equals(big));
    } finally {
      client.close();
      await redis.stop();
    }
  });

  test('a layer read from the source is uploaded; another host then reads it from Redis only', async () => {
    const redis = await startRedis();
    try {
      const a = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'a'), prefetch: 'none', redis: redis.url });
      try {
        assert.ok((await a.readFile('/etc/passwd')).equals(rootfs('etc/passwd')));
        await until('the upload', () => a.stats().fills.uploaded === 1);
      } finally {
        await a.close();
      }
      const keys = await redis.command('KEYS', 'clip:{*');
      assert.match(keys, /clip:\{[0-9a-f]{64}\}:meta/);
      // Host B: empty disk cache, a source that must not be used.
      const b = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'b'), prefetch: 'none', redis: redis.url });
      try {
        for (const f of FILES) assert.ok((await b.readFile(`/${f}`)).equals(rootfs(f)), f);
        const s = b.stats();
        assert.equal(s.tiers.source.hits, 0, JSON.stringify(s.tiers));
        assert.ok(s.tiers.redis!.hits >= 1);
        assert.equal(s.sourceWireBytes.reads, 0);
        // A disk fill on B comes from Redis, not the source.
        await b.whenCached(0);
        assert.equal(b.stats().fills.wireBytes, 0);
      } finally {
        await b.close();
      }
    } finally {
      await redis.stop();
    }
  });

  test('Redis killed mid-read: reads fall back to the source, none fails; after a restart Redis is refilled and used again', async () => {
    const redis = await startRedis();
    // No in-memory chunks: every read must ask Redis (or fall back).
    const store = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'kill'), prefetch: 'none', redis: redis.url, redisTimeoutMs: 300, memoryCacheBytes: 0 });
    let stop = false;
    let reader: Promise<void> = Promise.resolve();
    try {
      await store.readFile('/etc/passwd');
      await until('the upload', () => store.stats().fills.uploaded === 1);
      const before = store.stats().tiers.redis!.hits;
      // Read continuously while Redis is killed.
      let reads = 0;
      reader = (async () => {
        while (!stop) {
          const f = FILES[reads % FILES.length];
          assert.ok((await store.readFile(`/${f}`)).equals(rootfs(f)), f);
          reads++;
        }
      })();
      await until('some redis hits', () => store.stats().tiers.redis!.hits > before + 3);
      await redis.kill();
      const readsAtKill = reads;
      await until('reads after the kill', () => reads > readsAtKill + 10);
      assert.ok(store.stats().tiers.redis!.errors >= 1, 'the failure was noticed');
      await redis.restart();
      // Recovery: the tier comes back after its backoff, finds the layer gone, and a source read uploads it again.
      await until('the re-upload', () => store.stats().fills.uploaded === 2, 60_000);
      const hitsAfter = store.stats().tiers.redis!.hits;
      await until('redis hits after recovery', () => store.stats().tiers.redis!.hits > hitsAfter + 3);
      stop = true;
      await reader;
      assert.ok(reads > 20);
    } finally {
      stop = true;
      await reader.catch(() => undefined);
      await store.close();
      await redis.stop();
    }
  });

  test('a slow Redis costs a read one command deadline, not a failure', async () => {
    const redis = await startRedis();
    const store = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'slow'), prefetch: 'none', redis: redis.url, redisTimeoutMs: 200, memoryCacheBytes: 0 });
    const blocker = new RedisClient(redis.url, { commandTimeoutMs: 10_000 });
    try {
      await store.readFile('/etc/passwd');
      await until('the upload', () => store.stats().fills.uploaded === 1);
      const sleeping = blocker.command(['DEBUG', 'SLEEP', '2']);
      await new Promise((r) => setTimeout(r, 50));
      const started = Date.now();
      assert.ok((await store.readFile('/usr/bin/ls')).equals(rootfs('usr/bin/ls')));
      assert.ok(Date.now() - started < 1000, `the read took ${Date.now() - started} ms`);
      assert.ok(store.stats().tiers.redis!.errors >= 1);
      await sleeping;
    } finally {
      blocker.close();
      await store.close();
      await redis.stop();
    }
  });

  test('a Redis Cluster given any one node: keys of a layer share a slot, MOVED is followed', async () => {
    const cluster = await startRedisCluster(3);
    try {
      const probe = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'cluster-probe'), prefetch: 'none' });
      const hex = probe.archive.layers()[0].diffId.slice(7);
      await probe.close();
      const owner = await cluster.ownerOf(`clip:{${hex}}:meta`);
      const other = cluster.nodes[(owner + 1) % 3]; // a node that must redirect us
      const a = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'cluster-a'), prefetch: 'none', redis: other.url });
      try {
        await a.readFile('/etc/passwd');
        await until('the upload', () => a.stats().fills.uploaded === 1);
        assert.equal(a.stats().tiers.redis!.errors, 0);
      } finally {
        await a.close();
      }
      const ownerKeys = await cluster.nodes[owner].command('DBSIZE');
      assert.match(ownerKeys, /^:(\d+)/);
      assert.ok(Number(/^:(\d+)/.exec(ownerKeys)![1]) > 100, 'every chunk on the slot owner');
      const b = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'cluster-b'), prefetch: 'none', redis: other.url });
      try {
        for (const f of FILES) assert.ok((await b.readFile(`/${f}`)).equals(rootfs(f)), f);
        assert.equal(b.stats().tiers.source.hits, 0);
      } finally {
        await b.close();
      }
    } finally {
      await cluster.stop();
    }
  });

  test('an evicting Redis (tiny maxmemory) never serves a missing or wrong chunk', async () => {
    const redis = await startRedis({ maxmemory: '24mb' });
    try {
      const a = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'evict-a'), prefetch: 'none', redis: redis.url });
      try {
        await a.readFile('/etc/passwd');
        await until('the upload', () => a.stats().fills.uploaded === 1 || a.stats().fills.failed > 0 || (a.stats().fills.started === 1 && a.stats().fills.bytes >= 203_000_000), 60_000);
      } finally {
        await a.close();
      }
      const b = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'evict-b'), prefetch: 'none', redis: redis.url });
      try {
        for (const f of FILES) assert.ok((await b.readFile(`/${f}`)).equals(rootfs(f)), f);
        const info = await redis.command('INFO', 'stats');
        assert.match(info, /evicted_keys:[1-9]/);
      } finally {
        await b.close();
      }
    } finally {
      await redis.stop();
    }
  });
});
