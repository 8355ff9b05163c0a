/**
 * Freeing the miss path's Buffers early (native releaseBuffer, the source
 * tier's cache dropping inflated prefixes): what may be freed is, what may
 * not is refused, and reads that race with a cache that keeps dropping what
 * they read still return the image's bytes (checked against the debootstrap
 * rootfs), never other ones.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, test } from 'node:test';
import { log } from '../src/log';
import { native } from '../src/native';
import { ByteLru } from '../src/storage/byte-lru';
import { LayerStore } from '../src/storage/store';
import { debianRootfs, rng } from './fixtures';
import { demoArchive } from './mount-helpers';
import { scratchDir } from './registry-harness';

log.level = process.env.CLIP_LOG_LEVEL ?? 'warn';

describe('releaseBuffer', () => {
  test('frees a Buffer that spans its own ArrayBuffer: it has no bytes after', () => {
    const b = Buffer.alloc(1 << 20, 7);
    assert.equal(native.releaseBuffer(b), true);
    assert.equal(b.length, 0);
    assert.equal(b.buffer.byteLength, 0);
    assert.equal(native.releaseBuffer(b), false, 'twice: nothing left to free');
  });

  test("refuses slices, Node's pooled small Buffers and non-Buffers", () => {
    const big = Buffer.alloc(1 << 16, 1);
    const slice = big.subarray(0, 1024);
    assert.equal(native.releaseBuffer(slice), false);
    assert.equal(big.length, 1 << 16);
    assert.equal(big[100], 1);
    const pooled = Buffer.from('abc');
    const neighbour = Buffer.from('def'); // likely the same pool
    assert.equal(native.releaseBuffer(pooled), false);
    assert.equal(pooled.toString(), 'abc');
    assert.equal(neighbour.toString(), 'def');
    assert.equal(native.releaseBuffer(Buffer.alloc(0)), false);
    assert.equal((native.releaseBuffer as (x: unknown) => boolean)('not a buffer'), false);
    assert.equal((native.releaseBuffer as (x: unknown) => boolean)(new DataView(new ArrayBuffer(8))), false);
  });
});

describe('ByteLru onDrop', () => {
  test('is called for each value that leaves: evicted, replaced, deleted, cleared; not for a value set again', () => {
    const dropped: string[] = [];
    const lru = new ByteLru<string>(10, (v) => dropped.push(v.toString()));
    lru.set('a', Buffer.from('aaaa'));
    lru.set('b', Buffer.from('bbbb'));
    lru.set('c', Buffer.from('cccc')); // over 10: a goes
    assert.deepEqual(dropped, ['aaaa']);
    const b = lru.get('b')!;
    lru.set('b', b); // the same value: kept, not dropped
    assert.deepEqual(dropped, ['aaaa']);
    lru.set('b', Buffer.from('BB'));
    assert.deepEqual(dropped, ['aaaa', 'bbbb']);
    lru.delete('c');
    assert.deepEqual(dropped, ['aaaa', 'bbbb', 'cccc']);
    lru.set('d', Buffer.from('dd'));
    lru.clear();
    assert.deepEqual(dropped.slice(3).sort(), ['BB', 'dd']);
    assert.equal(lru.bytes, 0);
    lru.set('e', Buffer.from('x'.repeat(11))); // larger than the budget: never kept, not dropped
    assert.equal(dropped.length, 5);
  });
});

describe('the source tier with a cache that keeps dropping what it inflated', () => {
  let archivePath: string;
  let work: string;
  before(async () => {
    work = scratchDir('clip-storage-memory-');
    archivePath = await demoArchive();
  });

  test('concurrent overlapping reads of a 50 MB file return its bytes', async () => {
    const file = '/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages';
    const want = fs.readFileSync(path.join(debianRootfs(), file));
    // 6 MiB: the inflated prefixes get 2 MiB, about one interval, so nearly
    // every load drops (and frees) the prefix other reads were given.
    const store = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'cache'), prefetch: 'none', memoryCacheBytes: 6 << 20 });
    try {
      const { stat } = store.resolve(file);
      assert.equal(stat.size, want.length);
      const random = rng(5);
      const reads: Array<Promise<void>> = [];
      // Sequential 128 KiB pieces from several places at once, and random
      // windows across intervals, all in flight together.
      for (const startAt of [0, 7 << 20, 19 << 20, 33 << 20]) {
        reads.push(
          (async () => {
            for (let at = startAt; at < Math.min(startAt + (6 << 20), want.length); at += 128 << 10) {
              const n = Math.min(128 << 10, want.length - at);
              const got = await store.read(stat.layer!, stat.dataOffset + at, n);
              assert.ok(got.equals(want.subarray(at, at + n)), `bytes at ${at}`);
            }
          })(),
        );
      }
      for (let i = 0; i < 48; i++) {
        const at = Math.floor(random() * (want.length - (3 << 20)));
        const n = 1 + Math.floor(random() * (3 << 20));
        reads.push(
          store.read(stat.layer!, stat.dataOffset + at, n).then((got) => {
            assert.ok(got.equals(want.subarray(at, at + n)), `bytes ${at}+${n}`);
          }),
        );
      }
      await Promise.all(reads);
    } finally {
      await store.close();
    }
  });
});
