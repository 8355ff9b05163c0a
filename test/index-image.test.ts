/**
 * indexImage end to end, with umoci as the oracle. The rich image of
 * test/images.ts (every kind of node, whiteouts, an opaque directory, a
 * crafted layer with what umoci never writes), indexed from the layout and
 * again through a real registry, must match `umoci unpack` of the same image
 * entry by entry: type, mode, owner, size, mtime,
 * rdev, symlink target, xattrs, hardlink groups, and every file's sha256
 * read through LayerReader at the node's (layer, offset, size). The demo
 * Debian image is checked the same way. Then bad input: blobs that do not
 * match their digest, a config whose diff_id lies, a '../' path, a
 * truncated blob; determinism; and the `index` command.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { EXIT_CODES } from '../src/errors';
import { LayerReader } from '../src/engine/layer';
import { ClipArchive } from '../src/archive/reader';
import { indexImage, IndexImageResult } from '../src/index/build';
import { log } from '../src/log';
import { rejectsWith, rng, sh } from './fixtures';
import { appendLayer, buildRichImage, Json, layerBlobPath, PathRecord, python, readJsonBlob, rewriteImage, walkTree } from './images';
import { buildTinyImage, demoInRegistry, demoLayout, FaultProxy, ProxyAction, scratchDir, startRegistry, RegistryHandle } from './registry-harness';

const CLI = path.resolve(__dirname, '../src/cli/main.js');

const EVIL_PY = String.raw`
import io, sys, tarfile
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode='w', format=tarfile.GNU_FORMAT) as t:
    ti = tarfile.TarInfo('../escaped'); ti.size = 3
    t.addfile(ti, io.BytesIO(b'bad'))
sys.stdout.buffer.write(buf.getvalue())
`;

// Per-layer progress lines would drown the test output.
log.level = 'warn';

async function unpackOracle(work: string, layout: string, tag: string): Promise<Record<string, PathRecord>> {
  const bundle = path.join(work, `unpacked-${tag}`);
  sh(`umoci unpack --rootless=false --image '${layout}:${tag}' '${bundle}' >/dev/null`);
  try {
    return await walkTree(path.join(bundle, 'rootfs'));
  } finally {
    fs.rmSync(bundle, { recursive: true, force: true });
  }
}

/**
 * The archive's tree as {path: record}. File contents are hashed from the
 * layer blobs: with LayerReader for every file when `readerForAll`, else by
 * one streaming inflate of each layer (plus LayerReader for a sample).
 */
async function describeArchive(file: string, blobPath: (digest: string) => string, readerForAll: boolean): Promise<Record<string, PathRecord>> {
  const archive = ClipArchive.open(file);
  try {
    const layers = archive.layers();
    const readers = layers.map((l, i) => new LayerReader(archive.checkpoints(i), blobPath(l.digest)));
    const out: Record<string, PathRecord> = {};
    const files: Array<{ rec: PathRecord; layer: number; offset: number; size: number }> = [];
    const seen = new Map<number, PathRecord>();
    for (const { path: p, ino, stat } of archive.walk()) {
      const rec: PathRecord = {
        type: stat.type,
        mode: stat.mode & 0o7777,
        uid: stat.uid,
        gid: stat.gid,
        nlink: stat.nlink,
        mtimeNs: (BigInt(stat.mtimeSec) * 1000000000n + BigInt(stat.mtimeNsec)).toString(),
        ino,
        xattrs: Object.fromEntries(Object.entries(archive.xattrs(ino)).map(([k, v]) => [k, v.toString('hex')])),
      };
      if (stat.type === 'file') {
        rec.size = stat.size;
        const first = seen.get(ino);
        if (first) rec.sha256 = first.sha256;
        else files.push({ rec, layer: stat.layer!, offset: stat.dataOffset, size: stat.size });
      }
      if (stat.type === 'symlink') {
        rec.target = archive.readlink(ino);
        rec.size = stat.size;
      }
      if (stat.type === 'char' || stat.type === 'block') rec.rdev = [stat.devmajor, stat.devminor];
      if (!seen.has(ino)) seen.set(ino, rec);
      out[p] = rec;
    }
    if (readerForAll) {
      for (const f of files) f.rec.sha256 = createHash('sha256').update(await readers[f.layer].read(f.offset, f.size)).digest('hex');
    } else {
      await hashByStreaming(files, layers.map((l) => blobPath(l.digest)));
      // And a sample through the checkpoints, which must agree.
      for (let i = 0; i < files.length; i += Math.max(1, Math.floor(files.length / 150))) {
        const f = files[i];
        const viaReader = createHash('sha256').update(await readers[f.layer].read(f.offset, f.size)).digest('hex');
        assert.equal(viaReader, f.rec.sha256, `LayerReader disagrees with the stream at layer ${f.layer} offset ${f.offset}`);
      }
    }
    // Hashed files share their records with later names of the same node.
    for (const rec of Object.values(out)) if (rec.type === 'file' && rec.sha256 === undefined) rec.sha256 = seen.get(rec.ino)!.sha256;
    return out;
  } finally {
    archive.close();
  }
}

/** Hashes each file's range while inflating each layer once, front to back. */
async function hashByStreaming(files: Array<{ rec: PathRecord; layer: number; offset: number; size: number }>, blobs: string[]): Promise<void> {
  for (let layer = 0; layer < blobs.length; layer++) {
    const ranges = files.filter((f) => f.layer === layer).sort((a, b) => a.offset - b.offset);
    if (!ranges.length) continue;
    const hashes = ranges.map(() => createHash('sha256'));
    let position = 0;
    let first = 0; // ranges before this one are complete
    const stream = fs.createReadStream(blobs[layer]).pipe(zlib.createGunzip());
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const end = position + chunk.length;
      for (let i = first; i < ranges.length && ranges[i].offset < end; i++) {
        const r = ranges[i];
        const from = Math.max(r.offset, position);
        const to = Math.min(r.offset + r.size, end);
        if (to > from) hashes[i].update(chunk.subarray(from - position, to - position));
        if (r.offset + r.size <= end && i === first) first++;
      }
      position = end;
    }
    ranges.forEach((r, i) => (r.rec.sha256 = hashes[i].digest('hex')));
  }
}

/** Compares two trees path by path; hardlink groups by identity. Returns the mismatches. */
function compareTrees(ours: Record<string, PathRecord>, oracle: Record<string, PathRecord>, options: { skipRootTimes?: boolean } = {}): string[] {
  const problems: string[] = [];
  for (const p of Object.keys(oracle)) if (!(p in ours)) problems.push(`missing in the archive: ${p}`);
  for (const p of Object.keys(ours)) if (!(p in oracle)) problems.push(`not in the oracle: ${p}`);
  const groups = (tree: Record<string, PathRecord>) => {
    const byId = new Map<number, string[]>();
    for (const [p, r] of Object.entries(tree)) if (r.type !== 'dir') byId.set(r.ino, [...(byId.get(r.ino) ?? []), p]);
    const of = new Map<string, string>();
    for (const names of byId.values()) {
      const group = [...names].sort().join('|');
      for (const n of names) of.set(n, group);
    }
    return of;
  };
  const ourGroups = groups(ours);
  const oracleGroups = groups(oracle);
  for (const [p, want] of Object.entries(oracle)) {
    const got = ours[p];
    if (!got) continue;
    const fields: Array<keyof PathRecord> = ['type', 'mode', 'uid', 'gid', 'nlink', 'size', 'sha256', 'target', 'rdev'];
    if (!(options.skipRootTimes && p === '')) fields.push('mtimeNs');
    for (const f of fields) {
      if (JSON.stringify(got[f]) !== JSON.stringify(want[f])) problems.push(`${p || '/'}: ${f} is ${String(got[f])}, umoci has ${String(want[f])}`);
    }
    if (JSON.stringify(got.xattrs) !== JSON.stringify(sortKeys(want.xattrs))) {
      problems.push(`${p}: xattrs ${JSON.stringify(got.xattrs)}, umoci has ${JSON.stringify(want.xattrs)}`);
    }
    if (want.type !== 'dir' && ourGroups.get(p) !== oracleGroups.get(p)) {
      problems.push(`${p}: hardlink group ${ourGroups.get(p)}, umoci has ${oracleGroups.get(p)}`);
    }
  }
  return problems;
}

function sortKeys(o: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
}


describe('indexImage matches umoci unpack', () => {
  let work: string;
  let layout: string;
  let oracle: Record<string, PathRecord>;
  let fromLayout: IndexImageResult;
  let registry: RegistryHandle | undefined;

  before(async () => {
    work = scratchDir('clip-oracle-');
    layout = buildRichImage(work);
    oracle = await unpackOracle(work, layout, 't');
    fromLayout = await indexImage(`oci:${layout}:t`, { output: path.join(work, 'layout.clip') });
  });
  after(async () => {
    await registry?.stop();
  });

  it('builds the image it means to (layers, whiteouts, the oracle sees every case)', () => {
    assert.equal(fromLayout.layers.length, 4);
    assert.equal(fromLayout.layers[2].entries, 0, 'the empty layer');
    assert.ok(fromLayout.merge.whiteouts >= 5, JSON.stringify(fromLayout.merge));
    assert.equal(fromLayout.merge.opaques, 1);
    for (const p of ['fifo', 'cdev', 'bdev', 'sym-abs', 'ns-file', 'hl-to-lower', 'opq/new-in-layer', 'becomes-dir/inside']) assert.ok(oracle[p], p);
    for (const p of ['gone', 'd/a', 'opq/a', 'opq/sub', 'missing-dir', 'replace-me/x']) assert.equal(oracle[p], undefined, p);
    assert.equal(BigInt(oracle['ns-file'].mtimeNs) % 1000000000n, 123456789n);
    assert.equal(oracle.suid.xattrs['security.capability'], '0100000200200000000000000000000000000000');
    assert.equal(oracle['hl-to-lower'].ino, oracle['keep/file'].ino);
  });

  it('from an OCI layout: every entry and every file\'s bytes', async () => {
    const ours = await describeArchive(fromLayout.output, (d) => layerBlobPath(layout, d), true);
    assert.deepEqual(compareTrees(ours, oracle), []);
    assert.equal(Object.keys(ours).length, Object.keys(oracle).length);
  });

  it('from a registry: the same tree', async () => {
    registry = await startRegistry();
    await registry.push(`oci:${layout}:t`, 'oracle:v1');
    const result = await indexImage(`${registry.host}/oracle:v1`, { output: path.join(work, 'registry.clip'), insecure: true, concurrency: 3 });
    assert.equal(result.image.manifestDescriptor.digest.length, 71);
    assert.deepEqual(result.layers.map((l) => l.digest), fromLayout.layers.map((l) => l.digest));
    const ours = await describeArchive(result.output, (d) => layerBlobPath(layout, d), true);
    assert.deepEqual(compareTrees(ours, oracle), []);
    const archive = ClipArchive.open(result.output);
    try {
      assert.equal(archive.imageConfig().reference, `${registry.host}/oracle:v1`);
    } finally {
      archive.close();
    }
  });

  it('is deterministic: the same image gives the same bytes, whatever the concurrency', async () => {
    const again = await indexImage(`oci:${layout}:t`, { output: path.join(work, 'again.clip'), concurrency: 1 });
    assert.ok(fs.readFileSync(again.output).equals(fs.readFileSync(fromLayout.output)));
  });
});

describe('indexImage is a function of the image bytes, however its blobs arrive', () => {
  // docs/format.md: the same image and settings give byte-identical
  // archives. A registry download is chunked however the network does, so
  // the archive from the layout (file reads) must equal the ones from the
  // registry, directly and through a proxy that re-cuts every blob body into
  // odd-sized and random pieces.
  let work: string;
  let registry: RegistryHandle;
  let proxy: FaultProxy;
  before(async () => {
    ({ work, registry, proxy } = await demoInRegistry('clip-chunking-'));
  });
  after(async () => {
    await proxy?.stop();
    await registry?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  for (const engine of ['isal', 'zlib'] as const) {
    it(`gives byte-identical archives however the registry chunks the blobs (${engine})`, async () => {
      const random = rng(20261122); // seeded: the same "network" every run
      const chunkings: Array<[string, ProxyAction]> = [
        ['as the registry sends it', { kind: 'forward' }],
        ['4093-byte pieces', { kind: 'rechunk', pieceSize: () => 4093 }],
        ['65537-byte pieces', { kind: 'rechunk', pieceSize: () => 65537 }],
        ['random pieces', { kind: 'rechunk', pieceSize: () => 1 + Math.floor(random() * 100_000) }],
      ];
      // The archive names its reference, so archives compare whole only
      // through the same host; the layout's (1 MiB file reads) compares layer by layer.
      const archives: Array<[string, Buffer]> = [];
      for (const [name, action] of chunkings) {
        proxy.setHandler((req) => (req.path.includes('/blobs/') ? action : { kind: 'forward' }));
        const result = await indexImage(`${proxy.host}/demo:bookworm`, { output: path.join(work, `${engine}-${archives.length}.clip`), insecure: true, engine });
        archives.push([name, fs.readFileSync(result.output)]);
      }
      proxy.setHandler(() => ({ kind: 'forward' }));
      for (const [name, bytes] of archives.slice(1)) {
        assert.ok(bytes.equals(archives[0][1]), `${engine}: the archive from ${name} differs from the one ${archives[0][0]}`);
      }
      const fromLayout = await indexImage(`oci:${demoLayout()}:bookworm`, { output: path.join(work, `${engine}-layout.clip`), engine });
      const a = ClipArchive.open(fromLayout.output);
      const b = ClipArchive.open(path.join(work, `${engine}-0.clip`));
      try {
        const layers = a.layers().length;
        assert.ok(layers > 0);
        assert.equal(b.layers().length, layers);
        for (let i = 0; i < layers; i++) {
          assert.ok(a.checkpoints(i).equals(b.checkpoints(i)), `${engine}: layer ${i}'s checkpoints from the layout differ from the registry's`);
        }
      } finally {
        a.close();
        b.close();
      }
    });
  }
});

describe('indexImage on the demo Debian image', () => {
  it('matches umoci unpack and stays small', async () => {
    const work = scratchDir('clip-demo-');
    const layout = demoLayout();
    const started = process.hrtime.bigint();
    const result = await indexImage(`oci:${layout}:bookworm`, { output: path.join(work, 'demo.clip') });
    const indexSeconds = Number(process.hrtime.bigint() - started) / 1e9;
    const oracle = await unpackOracle(work, layout, 'bookworm');
    const ours = await describeArchive(result.output, (d) => layerBlobPath(layout, d), false);
    // umoci leaves the rootfs directory's own times to the bundle.
    assert.deepEqual(compareTrees(ours, oracle, { skipRootTimes: true }), []);

    const compressed = result.image.layers.reduce((s, l) => s + l.size, 0);
    const entries = result.layout.dirents + 1;
    const checkpoints = result.layout.sections.checkpoints;
    const fixed = result.archiveSize - result.layout.sections.strings - checkpoints - result.layout.sections.config;
    const report = {
      archiveBytes: result.archiveSize,
      shareOfCompressed: result.archiveSize / compressed,
      shareWithoutCheckpoints: (result.archiveSize - checkpoints) / compressed,
      checkpointBytes: checkpoints,
      entries,
      nodes: result.layout.nodes,
      bytesPerEntryBesidesNames: (result.archiveSize - checkpoints - result.layout.nameBytes - result.layout.sections.config) / entries,
      fixedBytesPerEntry: fixed / entries,
      indexSeconds,
    };
    process.stdout.write(`# demo archive: ${JSON.stringify(report)}\n`);
    assert.ok(report.bytesPerEntryBesidesNames <= 64, JSON.stringify(report));
    // The tree and names (everything but the engine's checkpoints) are well under 1% of the image.
    assert.ok(report.shareWithoutCheckpoints < 0.01, JSON.stringify(report));
  });
});

describe('indexImage refuses bad input', () => {
  const tiny = (tag = 'tiny') => {
    const dir = scratchDir('clip-bad-');
    buildTinyImage(dir, { tag });
    const manifest = readJsonBlob(dir, (JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')) as { manifests: Json[] }).manifests[0].digest as string);
    const layer = (manifest.layers as Array<{ digest: string; size: number }>)[0];
    return { dir, layer, output: path.join(dir, 'out.clip') };
  };
  const noOutputLeft = (dir: string) => assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('.clip')), []);

  it('indexes the intact tiny image', async () => {
    const { dir, output } = tiny();
    const result = await indexImage(`oci:${dir}:tiny`, { output });
    assert.equal(result.layout.nodes, 4);
    const archive = ClipArchive.open(output);
    try {
      assert.deepEqual(archive.imageConfig().config, { Cmd: ['/bin/sh'] });
      assert.ok(archive.lookupPath('etc/hello.txt'));
    } finally {
      archive.close();
    }
  });

  it('a layer whose bytes do not match its digest: EDIGEST, no archive', async () => {
    const { dir, layer, output } = tiny();
    const blob = layerBlobPath(dir, layer.digest);
    const bytes = fs.readFileSync(blob);
    bytes[4] ^= 1; // the gzip header's mtime: still a valid gzip stream, another digest
    fs.writeFileSync(blob, bytes);
    await rejectsWith(indexImage(`oci:${dir}:tiny`, { output }), 'EDIGEST');
    noOutputLeft(dir);
  });

  it('a config whose diff_id is not the layer\'s tar: EDIGEST', async () => {
    const { dir, output } = tiny();
    rewriteImage(dir, 'tiny', (_m, config) => {
      ((config.rootfs as Json).diff_ids as string[])[0] = `sha256:${'0'.repeat(64)}`;
    });
    await rejectsWith(indexImage(`oci:${dir}:tiny`, { output }), 'EDIGEST', /diff_id|config says/);
    noOutputLeft(dir);
  });

  it('a layer with a "../" path: ECORRUPT naming the layer and the path', async () => {
    const { dir, output } = tiny();
    appendLayer(dir, 'tiny', python(EVIL_PY));
    await rejectsWith(indexImage(`oci:${dir}:tiny`, { output }), 'ECORRUPT', /layer 1 \(sha256:[0-9a-f]{64}\).*"\.\.\/escaped"/);
    noOutputLeft(dir);
  });

  it('a truncated layer blob: ETRUNCATED', async () => {
    const { dir, layer, output } = tiny();
    const blob = layerBlobPath(dir, layer.digest);
    fs.truncateSync(blob, Math.floor(layer.size / 2));
    await rejectsWith(indexImage(`oci:${dir}:tiny`, { output }), 'ETRUNCATED');
    noOutputLeft(dir);
  });

  it('bad options and references: EINVAL / ENOENT before any work', async () => {
    const { dir, output } = tiny();
    await rejectsWith(indexImage(`oci:${dir}:tiny`, { output, spacing: 100 }), 'EINVAL', /spacing/);
    await rejectsWith(indexImage(`oci:${dir}:tiny`, { output, concurrency: 0 }), 'EINVAL', /concurrency/);
    await rejectsWith(indexImage(`oci:${dir}:tiny`, { output, bogus: 1 } as never), 'EINVAL', /unknown option "bogus"/);
    await rejectsWith(indexImage(`oci:${dir}:nope`, { output }), 'ENOENT', /tag "nope"/);
    await rejectsWith(indexImage(`oci:${dir}:tiny`, { output: path.join(dir, 'no/such/dir/x.clip') }), 'ENOENT');
    await rejectsWith(indexImage('UPPER CASE', { output }), 'EINVAL');
  });
});

describe('clip-native index', () => {
  function cli(...args: string[]) {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, CLIP_LOG_LEVEL: 'warn' } });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  it('writes the archive, prints a summary and exits 0; refusals have their exit codes', () => {
    const dir = scratchDir('clip-cli-index-');
    buildTinyImage(dir, { tag: 'v1' });
    const out = path.join(dir, 'tiny.clip');
    const ok = cli('index', `oci:${dir}:v1`, '-o', out, '--spacing', '64KiB');
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /tiny\.clip: oci:.*:v1 \(linux\/amd64\), 1 layers, 4 entries/);
    const json = JSON.parse(cli('index', `oci:${dir}:v1`, '-o', out, '--json').stdout);
    assert.equal(json.layers.length, 1);
    assert.equal(json.archiveSize, fs.statSync(out).size);
    assert.equal(cli('ls', out, 'etc').stdout, 'hello.txt\nnumbers.txt\n');
    assert.equal(cli('index', `oci:${dir}:v2`, '-o', out).status, EXIT_CODES.ENOENT);
    assert.equal(cli('index', `oci:${dir}:v1`).status, EXIT_CODES.EINVAL, 'missing -o');
    assert.equal(cli('index', `oci:${dir}:v1`, '-o', out, '--username', 'u').status, EXIT_CODES.EINVAL);
    assert.equal(cli('index', `oci:${dir}:v1`, '-o', out, '--spacing', 'lots').status, EXIT_CODES.EINVAL);
  });

  it('on a full disk: one sentence, EIO, no temp file left, the old archive intact', () => {
    // A real full filesystem: a 600 KiB tmpfs, enough for a small archive but not the Debian one (~650 KiB).
    const small = scratchDir('clip-cli-full-');
    sh(`mount -t tmpfs -o size=600k tmpfs '${small}'`);
    try {
      const tiny = scratchDir('clip-cli-tiny-');
      buildTinyImage(tiny, { tag: 'v1' });
      const out = path.join(small, 'image.clip');
      assert.equal(cli('index', `oci:${tiny}:v1`, '-o', out).status, 0);
      const before = fs.readFileSync(out);
      const full = cli('index', `oci:${demoLayout()}:bookworm`, '-o', out);
      assert.equal(full.status, EXIT_CODES.EIO, full.stderr);
      assert.match(full.stderr, /^clip-native: cannot write .*image\.clip: .*no space left on device.*\(EIO\)\n$/i);
      assert.deepEqual(fs.readdirSync(small), ['image.clip']);
      assert.ok(fs.readFileSync(out).equals(before), 'the archive that was there is untouched');
    } finally {
      sh(`umount '${small}'`);
    }
  });
});
