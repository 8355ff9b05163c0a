/**
 * The engine through the addon, on a real Debian layer (debootstrap +
 * umoci) and on small blobs made here. Oracles: sha256sum, `gzip -dc`,
 * GNU tar's listing, and the debootstrap rootfs the layer was packed from.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it, before } from 'node:test';
import { ClipError, indexLayerFile, indexLayerStream, LayerIndex, LayerReader } from '../src';
import { debianLayer, debianRootfs, rejectsWith, rng, sh, sha256File, tempDir } from './fixtures';

const norm = (p: string) => p.replace(/^\.?\/+/, '').replace(/\/+$/, '');


describe('indexing a real Debian layer', () => {
  let blob: string;
  let index: LayerIndex;
  let oracle: Buffer; // gzip -dc of the layer

  before(async () => {
    blob = debianLayer();
    index = await indexLayerFile(blob);
    oracle = sh(`gzip -dc '${blob}'`);
  });

  it('hashes the blob and the tar stream like sha256sum does', () => {
    assert.equal(index.format, 'gzip');
    assert.equal(index.digest, sha256File(blob));
    assert.equal(index.diffId, `sha256:${sh(`gzip -dc '${blob}' | sha256sum`).toString().split(' ')[0]}`);
    assert.equal(index.compressedSize, fs.statSync(blob).size);
    assert.equal(index.uncompressedSize, oracle.length);
  });

  it('lists the same entries as GNU tar, in order', () => {
    const listed = sh(`gzip -dc '${blob}' | tar -t --quoting-style=literal`).toString().split('\n').filter(Boolean);
    assert.equal(index.entries.length, listed.length);
    assert.deepEqual(index.entries.map((e) => norm(e.path)), listed.map(norm));
  });

  it('records modes, owners, link targets and devices as the rootfs has them', () => {
    const root = debianRootfs();
    let checked = 0;
    for (const e of index.entries) {
      const p = norm(e.path);
      if (!p) continue;
      const st = fs.lstatSync(path.join(root, p), { bigint: false });
      assert.equal(e.mode, st.mode & 0o7777, `${p} mode`);
      assert.equal(e.uid, st.uid, `${p} uid`);
      assert.equal(e.gid, st.gid, `${p} gid`);
      if (e.type === 'symlink') assert.equal(e.linkTarget, fs.readlinkSync(path.join(root, p)), p);
      if (e.type === 'file') assert.equal(e.size, st.size, `${p} size`);
      if (e.type === 'char' || e.type === 'block') {
        assert.equal(e.devmajor, Number((BigInt(st.rdev) >> 8n) & 0xfffn), `${p} major`);
      }
      checked++;
    }
    assert.ok(checked > 1000, `only ${checked} entries checked`);
    assert.ok(index.entries.some((e) => (e.mode & 0o4000) !== 0), 'a setuid binary (e.g. su) is in the layer');
  });

  it('takes checkpoints at the requested spacing and keeps them small', () => {
    assert.ok(index.checkpointCount >= Math.floor(index.uncompressedSize / (2 << 20)), `${index.checkpointCount} checkpoints`);
    assert.ok(index.checkpoints.length < index.compressedSize * 0.02, `${index.checkpoints.length} checkpoint bytes`);
  });

  it('reads 300 random files byte-exact through the checkpoints, with both engines', async () => {
    const files = index.entries.filter((e) => e.type === 'file');
    const next = rng(42);
    for (const engine of ['isal', 'zlib'] as const) {
      const reader = new LayerReader(index.checkpoints, blob, engine);
      for (let i = 0; i < 150; i++) {
        const e = files[Math.floor(next() * files.length)];
        const got = await reader.read(e.dataOffset, e.size);
        const want = fs.readFileSync(path.join(debianRootfs(), norm(e.path)));
        assert.ok(got.equals(want), `${engine}: ${e.path} differs`);
      }
    }
  });

  it('reads random ranges that match gzip -dc, concurrently', async () => {
    const reader = new LayerReader(index.checkpoints, blob);
    const next = rng(7);
    const ranges = Array.from({ length: 64 }, () => {
      const length = 1 + Math.floor(next() * 300_000);
      const offset = Math.floor(next() * (index.uncompressedSize - length));
      return { offset, length };
    });
    const results = await Promise.all(ranges.map((r) => reader.read(r.offset, r.length)));
    ranges.forEach((r, i) => assert.ok(results[i].equals(oracle.subarray(r.offset, r.offset + r.length)), `range ${i}`));
  });

  it('reads from exactly the compressed span it asks for (the registry Range path)', async () => {
    const reader = new LayerReader(index.checkpoints, blob);
    const fd = fs.openSync(blob, 'r');
    try {
      const next = rng(99);
      for (let i = 0; i < 40; i++) {
        const length = 1 + Math.floor(next() * 65536);
        const offset = Math.floor(next() * (index.uncompressedSize - length));
        const span = reader.spanFor(offset, length);
        assert.ok(span.end - span.begin < index.compressedSize / 4, 'span is a small part of the blob');
        const compressed = Buffer.alloc(span.end - span.begin);
        fs.readSync(fd, compressed, 0, compressed.length, span.begin);
        const got = await reader.readFrom(compressed, span.begin, offset, length);
        assert.ok(got.equals(oracle.subarray(offset, offset + length)), `span read ${i}`);
        // A span cut short is refused, never inflated into wrong bytes.
        if (compressed.length > 64) {
          await rejectsWith(reader.readFrom(compressed.subarray(0, 16), span.begin, offset, length), 'ETRUNCATED');
        }
      }
    } finally {
      fs.closeSync(fd);
    }
  });

  it('indexes the same layer from a stream of small chunks with the same result', async () => {
    const streamed = await indexLayerStream(fs.createReadStream(blob, { highWaterMark: 61_441 }), { engine: 'zlib' });
    assert.equal(streamed.digest, index.digest);
    assert.equal(streamed.diffId, index.diffId);
    assert.deepEqual(
      streamed.entries.map((e) => [e.path, e.dataOffset, e.size, e.mode]),
      index.entries.map((e) => [e.path, e.dataOffset, e.size, e.mode]),
    );
    // zlib's checkpoints restart ISA-L and the reverse.
    const reader = new LayerReader(streamed.checkpoints, blob, 'isal');
    const offset = Math.floor(index.uncompressedSize / 2);
    assert.ok((await reader.read(offset, 100_000)).equals(oracle.subarray(offset, offset + 100_000)));
  });
});

describe('small layers and bad input', () => {
  const dir = tempDir();
  const make = (name: string, command: string) => {
    const file = path.join(dir, name);
    sh(command.replaceAll('$OUT', `'${file}'`));
    return file;
  };
  const tree = make('tree', `mkdir -p $OUT/a/b && echo hello > $OUT/a/b/hello.txt && head -c 3000000 /dev/urandom > $OUT/a/big.bin && ln -s b/hello.txt $OUT/a/link && mkfifo $OUT/a/fifo`);

  it('indexes a plain (uncompressed) tar layer and reads from it', async () => {
    const blob = make('plain.tar', `tar -C '${tree}' -cf $OUT .`);
    const index = await indexLayerFile(blob);
    assert.equal(index.format, 'tar');
    assert.equal(index.digest, index.diffId);
    const big = index.entries.find((e) => norm(e.path) === 'a/big.bin');
    assert.ok(big);
    const reader = new LayerReader(index.checkpoints, blob);
    assert.ok((await reader.read(big.dataOffset, big.size)).equals(fs.readFileSync(path.join(tree, 'a/big.bin'))));
    assert.deepEqual(index.entries.map((e) => e.type).sort(), ['dir', 'dir', 'dir', 'fifo', 'file', 'file', 'symlink']);
  });

  it('indexes a multi-member gzip layer (cat a.gz b.gz)', async () => {
    const tarFile = make('mm.tar', `tar -C '${tree}' -cf $OUT .`);
    const blob = make('mm.tar.gz', `head -c 1000000 '${tarFile}' | gzip -1 > $OUT && tail -c +1000001 '${tarFile}' | gzip -9 >> $OUT`);
    const index = await indexLayerFile(blob, { spacing: 64 * 1024 });
    const reader = new LayerReader(index.checkpoints, blob);
    const whole = fs.readFileSync(tarFile);
    assert.equal(index.uncompressedSize, whole.length);
    assert.ok((await reader.read(900_000, 300_000)).equals(whole.subarray(900_000, 1_200_000)));
  });

  it('refuses zstd, bzip2 and xz layers as EUNSUPPORTED', async () => {
    const tarFile = make('u.tar', `tar -C '${tree}' -cf $OUT a/b`);
    await rejectsWith(indexLayerFile(make('u.tar.zst', `zstd -q -c '${tarFile}' > $OUT`)), 'EUNSUPPORTED', /zstd/);
    await rejectsWith(indexLayerFile(make('u.tar.bz2', `bzip2 -c '${tarFile}' > $OUT`)), 'EUNSUPPORTED', /bzip2/);
    await rejectsWith(indexLayerFile(make('u.tar.xz', `xz -c '${tarFile}' > $OUT`)), 'EUNSUPPORTED', /xz/);
  });

  it('gives one clear error naming the layer for garbage, empty, truncated and corrupt blobs', async () => {
    await rejectsWith(indexLayerFile(make('garbage', `head -c 4096 /dev/urandom | tr '\\037' x > $OUT`)), 'ECORRUPT', /neither gzip nor tar/);
    await rejectsWith(indexLayerFile(make('empty', `: > $OUT`)), 'ETRUNCATED', /empty/);
    const good = make('good.tar.gz', `tar -C '${tree}' -czf $OUT .`);
    const size = fs.statSync(good).size;
    const truncated = make('trunc.tar.gz', `head -c ${Math.floor(size / 2)} '${good}' > $OUT`);
    await rejectsWith(indexLayerFile(truncated), 'ETRUNCATED', new RegExp(truncated.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    const corrupt = path.join(dir, 'corrupt.tar.gz');
    const bytes = fs.readFileSync(good);
    for (let i = 200; i < 260; i++) bytes[i] ^= 0x5a;
    fs.writeFileSync(corrupt, bytes);
    await rejectsWith(indexLayerFile(corrupt), 'ECORRUPT', /offset \d+/);
  });

  it('checks the blob digest when one is expected', async () => {
    const good = make('d.tar.gz', `tar -C '${tree}' -czf $OUT a/b`);
    const index = await indexLayerFile(good, { expectedDigest: sha256File(good) });
    assert.equal(index.digest, sha256File(good));
    await rejectsWith(indexLayerFile(good, { expectedDigest: `sha256:${'0'.repeat(64)}` }), 'EDIGEST');
  });

  it('refuses misspelled options and bad ranges with EINVAL', async () => {
    const good = make('o.tar.gz', `tar -C '${tree}' -czf $OUT a/b`);
    await rejectsWith(() => indexLayerFile(good, { spacng: 1 } as never), 'EINVAL', /unknown option "spacng"/);
    await rejectsWith(() => indexLayerFile(good, { engine: 'zstd' as never }), 'EINVAL', /isal/);
    const index = await indexLayerFile(good);
    const reader = new LayerReader(index.checkpoints, good);
    await rejectsWith(() => reader.read(index.uncompressedSize - 10, 11), 'EINVAL', /passes the end/);
    await rejectsWith(() => new LayerReader(Buffer.from('not an index at all, not at all'), good), 'ECORRUPT');
  });

  it('never lets two pushes overlap on one streaming indexer', async () => {
    const { native } = await import('../src/native');
    const indexer = new native.LayerIndexer({});
    const first = indexer.push(Buffer.alloc(1024));
    assert.throws(() => indexer.push(Buffer.alloc(1024)), (e: unknown) => e instanceof ClipError && e.code === 'EBUSY');
    await first;
  });
});
