/**
 * Proofs end to end: bytes read straight from the source (an HTTP Range
 * body from a real registry, or a pread on an OCI layout's blob) are proven
 * against the checkpoint index's SHA-256s of the span's proofs before any
 * of them is inflated. A small read near a checkpoint fetches only the
 * proofs up to the one whose output covers it, not the whole span. One
 * flipped byte anywhere in what it fetches (the partial leading byte, its
 * middle, its last byte) fails the read with EDIGEST naming the layer and
 * the offset, and no bytes come back; a flip in a proof the read does not
 * need leaves it alone; the same read without the flip returns what
 * `gzip -dc` says. Version-1 and version-2 indexes (no digests, one per
 * span) are refused with EUNSUPPORTED, never read unverified.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { ClipError, LayerReader } from '../src';
import { indexImage } from '../src/index/build';
import { log } from '../src/log';
import { RegistrySource } from '../src/oci';
import { CheckpointTable, Interval } from '../src/storage/checkpoints';
import { LayerStore } from '../src/storage/store';
import { sh } from './fixtures';
import { demoInRegistry, demoLayout, FaultProxy, RegistryHandle } from './registry-harness';

log.level = process.env.CLIP_LOG_LEVEL ?? 'warn';

let registry: RegistryHandle;
let proxy: FaultProxy;
let work: string;
let registryArchive: string;

before(async () => {
  ({ work, registry, proxy, archive: registryArchive } = await demoInRegistry('clip-span-digest-'));
});

after(async () => {
  await proxy?.stop();
  await registry?.stop();
});

/** The layer blob of a layout directory (the demo image has one layer). */
function layoutBlob(layout: string, digest: string): string {
  return path.join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length));
}

/** `gzip -dc` of the blob, bytes [start, start + length): the oracle. */
function oracle(blob: string, start: number, length: number): Buffer {
  return sh(`gzip -dc '${blob}' | tail -c +${start + 1} | head -c ${length}`);
}

/** A gzip interval (span) in the middle of the layer whose checkpoint has leading bits. */
function pickInterval(table: CheckpointTable): Interval {
  for (let i = Math.floor(table.checkpoints.length / 3); i < table.checkpoints.length - 1; i++) {
    if (table.checkpoints[i].bits > 0) return table.interval(i);
  }
  throw new Error('no block checkpoint with leading bits');
}

/** The demo image indexed from the registry with checkpoints every 64 KiB: the archive, its layer and checkpoint table. */
async function denseIndex(name: string, proofSize: number) {
  const archive = path.join(work, `${name}.clip`);
  await indexImage(`${registry.host}/demo:bookworm`, { output: archive, insecure: true, spacing: 64 << 10, proofSize });
  const probe = await LayerStore.open({ archive, cacheDir: path.join(work, `cache-${name}-probe`), prefetch: 'none', insecure: true });
  const layer = probe.archive.layers()[0];
  const table = new CheckpointTable(probe.archive.checkpoints(0), 'demo layer');
  await probe.close();
  return { archive, layer, table };
}

/** A store over `archive` whose source is the registry behind the fault proxy; close() closes both. */
async function proxiedStore(archive: string, cacheName: string, maxAttempts: number) {
  const source = new RegistrySource({ host: proxy.host, repository: 'demo', insecure: true, maxAttempts, retryBaseMs: 1 });
  const store = await LayerStore.open({ archive, cacheDir: path.join(work, cacheName), prefetch: 'none', source });
  return { store, close: async () => (await store.close(), await source.close()) };
}

async function rejectsDigest(p: Promise<unknown>, layerDigest: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ClipError, String(e));
    assert.equal(e.code, 'EDIGEST', e.message);
    assert.ok(e.message.includes(layerDigest), `names the layer: ${e.message}`);
    assert.match(e.message, /the span of checkpoint \d+ at compressed offset \d+\) do not match/);
    return true;
  });
}

describe('span digests', () => {
  test('a flipped byte in a registry Range body fails the read with EDIGEST; no bytes are returned', async () => {
    const clean = await LayerStore.open({ archive: registryArchive, cacheDir: path.join(work, 'cache-probe'), prefetch: 'none', insecure: true });
    const layer = clean.archive.layers()[0];
    const table = new CheckpointTable(clean.archive.checkpoints(0), 'demo layer');
    await clean.close();
    const iv = pickInterval(table);
    const want = oracle(layoutBlob(demoLayout(), layer.digest), iv.start + 100, 4096);
    // The read fetches from the checkpoint to the first proof whose output
    // covers it: a small part of the span.
    const { until } = table.prefix(iv, iv.start + 100 + 4096);
    const fetched = until - iv.begin;
    assert.ok(fetched > 0 && fetched * 4 < iv.until - iv.begin, `fetches ${fetched} of the span's ${iv.until - iv.begin} bytes`);
    const flips: Array<[string, number]> = [
      ['the partial leading byte', 0],
      ['the middle of the fetched proofs', Math.floor(fetched / 2)],
      ['the last fetched byte', fetched - 1],
    ];
    // Concurrent reads of the same interval, a small one at its start and
    // one at its end (a page fault and the read-ahead behind it): both right,
    // and no byte of the span fetched twice.
    {
      const { store, close } = await proxiedStore(registryArchive, 'cache-concurrent', 2);
      try {
        const before = proxy.bodyBytes();
        const wantEnd = oracle(layoutBlob(demoLayout(), layer.digest), iv.end - 4096, 4096);
        const [head, tail] = await Promise.all([store.read(0, iv.start + 100, 4096), store.read(0, iv.end - 4096, 4096)]);
        assert.ok(head.equals(want) && tail.equals(wantEnd));
        assert.equal(proxy.bodyBytes() - before, iv.until - iv.begin);
      } finally {
        await close();
      }
    }
    // A flip past the fetched proofs (in the span's last byte) is not read.
    {
      const { store, close } = await proxiedStore(registryArchive, 'cache-flip-after', 2);
      try {
        // The span's last byte, wherever the Range body starts.
        const spanLast = (range: string) => iv.until - 1 - Number(/^bytes=(\d+)-/.exec(range)![1]);
        proxy.setHandler((req) => (req.headers.range ? { kind: 'corrupt', at: spanLast(String(req.headers.range)) } : { kind: 'forward' }));
        const before = proxy.bodyBytes();
        assert.ok((await store.read(0, iv.start + 100, 4096)).equals(want), 'a flip outside the fetched proofs');
        assert.equal(proxy.bodyBytes() - before, fetched);
        // A later read further into the interval fetches only what it adds
        // (and now meets the flip).
        await rejectsDigest(store.read(0, iv.end - 4096, 4096), layer.digest);
        assert.equal(proxy.requests.at(-1)?.headers.range, `bytes=${until}-${iv.until - 1}`);
      } finally {
        proxy.setHandler(() => ({ kind: 'forward' }));
        await close();
      }
    }
    for (const [what, at] of flips) {
      const { store, close } = await proxiedStore(registryArchive, `cache-flip-${at}`, 2);
      const ranges: string[] = [];
      try {
        proxy.setHandler((req) => {
          if (!req.headers.range) return { kind: 'forward' };
          ranges.push(String(req.headers.range));
          return { kind: 'corrupt', at };
        });
        const before = proxy.bodyBytes();
        await rejectsDigest(store.read(0, iv.start + 100, 4096), layer.digest);
        // The source tier asked for exactly the proofs: from the byte with
        // the checkpoint's leading bits to the end of the proof that covers
        // the read; that many body bytes came through the proxy per try.
        assert.deepEqual([...new Set(ranges)], [`bytes=${iv.begin}-${until - 1}`], what);
        assert.equal(proxy.bodyBytes() - before, fetched * ranges.length, what);
        proxy.setHandler(() => ({ kind: 'forward' }));
        assert.ok((await store.read(0, iv.start + 100, 4096)).equals(want), `${what}: the failure was not cached`);
      } finally {
        proxy.setHandler(() => ({ kind: 'forward' }));
        await close();
      }
    }
  });

  test('a flipped byte in an OCI layout blob fails the read with EDIGEST; other spans still read right', async () => {
    const layout = path.join(work, 'layout');
    execFileSync('cp', ['-a', demoLayout(), layout]);
    const archive = path.join(work, 'layout.clip');
    await indexImage(`oci:${layout}:bookworm`, { output: archive });
    const probe = await LayerStore.open({ archive, cacheDir: path.join(work, 'cache-layout-probe'), prefetch: 'none' });
    const layer = probe.archive.layers()[0];
    const table = new CheckpointTable(probe.archive.checkpoints(0), 'demo layer');
    await probe.close();
    const blob = layoutBlob(layout, layer.digest);
    const iv = pickInterval(table);
    const other = table.interval(1);
    const want = oracle(blob, iv.start, 4096);
    const wantOther = oracle(blob, other.start, 4096);
    const fd = fs.openSync(blob, 'r+');
    try {
      // Inside the proofs a read at the interval's start needs.
      const at = Math.floor((iv.begin + table.prefix(iv, iv.start + 4096).until) / 2);
      const byte = Buffer.alloc(1);
      fs.readSync(fd, byte, 0, 1, at);
      byte[0] ^= 0x01;
      fs.writeSync(fd, byte, 0, 1, at);
      const store = await LayerStore.open({ archive, cacheDir: path.join(work, 'cache-layout'), prefetch: 'none' });
      try {
        await rejectsDigest(store.read(0, iv.start, 4096), layer.digest);
        assert.ok((await store.read(0, other.start, 4096)).equals(wantOther), 'a span without the flip reads right');
      } finally {
        await store.close();
      }
      // Flipped back, the same read is right: the failure was about the byte.
      byte[0] ^= 0x01;
      fs.writeSync(fd, byte, 0, 1, at);
      const again = await LayerStore.open({ archive, cacheDir: path.join(work, 'cache-layout-2'), prefetch: 'none' });
      try {
        assert.ok((await again.read(0, iv.start, 4096)).equals(want));
      } finally {
        await again.close();
      }
    } finally {
      fs.closeSync(fd);
    }
  });

  test('a read across several intervals is one Range request for their bytes, each interval proven; fetched intervals split it', async () => {
    // Checkpoints every 64 KiB, so a read of a few hundred KiB (the kernel's
    // read-ahead) crosses several intervals.
    const { archive, layer, table } = await denseIndex('dense', 8 << 10);
    const first = Math.floor(table.checkpoints.length / 2);
    const ivs = [0, 1, 2, 3].map((k) => table.interval(first + k));
    const start = ivs[0].start + 100;
    const end = ivs[3].start + 100;
    const want = oracle(layoutBlob(demoLayout(), layer.digest), start, end - start);
    const until = table.prefix(ivs[3], end).until;
    const open = (name: string) => proxiedStore(archive, name, 1);
    const ranges: string[] = [];
    const record = (flipAt?: number) =>
      proxy.setHandler((req) => {
        if (!req.headers.range) return { kind: 'forward' };
        ranges.push(String(req.headers.range));
        return flipAt === undefined ? { kind: 'forward' } : { kind: 'corrupt', at: flipAt };
      });
    try {
      {
        const { store, close } = await open('cache-dense-one');
        try {
          record();
          const before = proxy.bodyBytes();
          assert.ok((await store.read(0, start, end - start)).equals(want), 'the bytes gzip -dc gives');
          assert.deepEqual(ranges, [`bytes=${ivs[0].begin}-${until - 1}`], 'one request, from the first checkpoint to the proof covering the end');
          assert.equal(proxy.bodyBytes() - before, until - ivs[0].begin);
          // Each interval's part was kept as its own: reading them again fetches nothing.
          assert.ok((await store.read(0, ivs[1].start, ivs[2].end - ivs[1].start)).equals(oracle(layoutBlob(demoLayout(), layer.digest), ivs[1].start, ivs[2].end - ivs[1].start)));
          assert.equal(ranges.length, 1);
        } finally {
          await close();
        }
      }
      // An interval fetched before splits the run around it.
      {
        ranges.length = 0;
        const { store, close } = await open('cache-dense-split');
        try {
          record();
          await store.read(0, ivs[1].start, ivs[1].end - ivs[1].start);
          assert.ok((await store.read(0, start, end - start)).equals(want));
          assert.equal(ranges[0], `bytes=${ivs[1].begin}-${ivs[1].until - 1}`);
          assert.deepEqual(ranges.slice(1).sort(), [`bytes=${ivs[0].begin}-${ivs[0].until - 1}`, `bytes=${ivs[2].begin}-${until - 1}`].sort());
        } finally {
          await close();
        }
      }
      // A flipped byte in the third interval's part of the one body: EDIGEST, no bytes.
      {
        ranges.length = 0;
        const { store, close } = await open('cache-dense-flip');
        try {
          record(ivs[2].begin - ivs[0].begin + 10);
          await rejectsDigest(store.read(0, start, end - start), layer.digest);
          assert.equal(ranges.length, 1);
        } finally {
          await close();
        }
      }
    } finally {
      proxy.setHandler(() => ({ kind: 'forward' }));
    }
  });

  test('mount reads of one file after another up a layer fetch on past them; whole-page reads and reads going back do not', async () => {
    const { archive, layer, table } = await denseIndex('read-on', 4 << 10);
    // An interval whose first three proofs each give more than a page, so
    // that a read in each needs that proof: the first read fetches proof 0,
    // the second proof 1 (and no further: a second fetch of an interval
    // asks for at most twice what it has), the third proof 2.
    let iv: Interval | null = null;
    for (let i = Math.floor(table.checkpoints.length / 2); i < table.checkpoints.length - 1 && !iv; i++) {
      const c = table.checkpoints[i];
      const out = Array.from(c.proofOutputs, (o) => o - c.uncompressedOffset);
      if (out.length > 3 && out[0] > 8192 && out[1] - out[0] > 8192 && out[2] - out[1] > 8192 && out[1] < 24 << 10) iv = table.interval(i);
    }
    assert.ok(iv, 'an interval with proofs of more than two pages each');
    const outs = Array.from(table.checkpoints[iv.index].proofOutputs, (o) => o - iv!.start);
    const blob = layoutBlob(demoLayout(), layer.digest);
    const ranges: string[] = [];
    proxy.setHandler((req) => {
      if (req.headers.range) ranges.push(String(req.headers.range));
      return { kind: 'forward' };
    });
    // Reads [offset in the interval, length) as the mount makes them; returns the Range requests each made.
    const walk = async (name: string, reads: Array<[number, number]>): Promise<{ requests: number[]; bytes: number }> => {
      const { store, close } = await proxiedStore(archive, name, 1);
      const requests: number[] = [];
      const before = proxy.bodyBytes();
      try {
        for (const [offset, length] of reads) {
          const want = oracle(blob, iv!.start + offset, length);
          ranges.length = 0;
          const got = await store.readForReply(0, iv!.start + offset, length);
          assert.ok(got.bytes.equals(want), `bytes [${offset}, +${length}) are what gzip -dc gives`);
          // A fetch ahead started by this read has been asked for by now.
          await new Promise((r) => setTimeout(r, 50));
          requests.push(ranges.length);
        }
      } finally {
        await close();
      }
      return { requests, bytes: proxy.bodyBytes() - before };
    };
    try {
      // Three small files read to their end (lengths not whole pages), one after another up the layer.
      const files: Array<[number, number]> = [
        [100, 1000],
        [outs[0] + 100, 1000],
        [outs[1] + 100, 1000],
      ];
      const onward = await walk('cache-read-on', files);
      assert.equal(onward.requests[2], 0, `the third was fetched with the second: ${JSON.stringify(onward.requests)}`);
      // The same places read in whole pages (the middle of a file, page faults): each fetches for itself.
      const pages = await walk(
        'cache-read-on-pages',
        files.map(([offset]) => [offset, 4096]),
      );
      assert.equal(pages.requests[2], 1, `the third whole-page read fetches for itself: ${JSON.stringify(pages.requests)}`);
      // Down the layer: nothing is fetched past the first read's proof.
      const back = await walk('cache-read-on-back', [...files].reverse());
      assert.deepEqual(back.requests, [1, 0, 0]);
      assert.equal(back.bytes, table.prefix(iv, iv.start + files[2][0] + files[2][1]).until - iv.begin, 'from the checkpoint to the proof of the first read, no more');
    } finally {
      proxy.setHandler(() => ({ kind: 'forward' }));
    }
  });

  test('the proof size is an index option: smaller proofs make a small read fetch less', async () => {
    const tables: CheckpointTable[] = [];
    for (const proofSize of [undefined, 4096]) {
      const archive = path.join(work, `proofs-${proofSize ?? 'default'}.clip`);
      await indexImage(`oci:${demoLayout()}:bookworm`, { output: archive, proofSize });
      const probe = await LayerStore.open({ archive, cacheDir: path.join(work, `cache-proofs-${proofSize}`), prefetch: 'none' });
      tables.push(new CheckpointTable(probe.archive.checkpoints(0), 'demo layer'));
      await probe.close();
    }
    const [standard, small] = tables;
    assert.equal(standard.proofSize, 32 << 10);
    assert.equal(small.proofSize, 4096);
    // 4 KiB reads at every interval's start need fewer bytes in all.
    const fetch = (t: CheckpointTable) =>
      t.checkpoints.reduce((sum, _, i) => {
        const iv = t.interval(i);
        return sum + t.prefix(iv, Math.min(iv.end, iv.start + 4096)).until - iv.begin;
      }, 0);
    assert.ok(fetch(small) * 2 < fetch(standard), `${fetch(small)} vs ${fetch(standard)}`);
    await assert.rejects(indexImage(`oci:${demoLayout()}:bookworm`, { output: path.join(work, 'bad.clip'), proofSize: 100 }), (e: unknown) => e instanceof ClipError && e.code === 'EINVAL');
  });

  test('version-1 and version-2 checkpoint indexes are refused (EUNSUPPORTED, re-index), by the engine and the source tier', async () => {
    const probe = await LayerStore.open({ archive: registryArchive, cacheDir: path.join(work, 'cache-v1'), prefetch: 'none', insecure: true });
    const v3 = probe.archive.checkpoints(0);
    await probe.close();
    for (const version of [1, 2]) {
      const old = Buffer.from(v3);
      old.writeUInt32LE(version, 8);
      old.writeUInt32LE(zlib.crc32(old.subarray(0, old.length - 4)), old.length - 4);
      assert.throws(() => new LayerReader(old), (e: unknown) => e instanceof ClipError && e.code === 'EUNSUPPORTED' && /re-index/.test(e.message));
      assert.throws(() => new CheckpointTable(old, `a v${version} layer`), (e: unknown) => e instanceof ClipError && e.code === 'EUNSUPPORTED' && /re-index/.test(e.message));
    }
  });
});
