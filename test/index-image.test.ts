/**
 * indexImage end to end, with umoci as the oracle. A multi-layer image is
 * built with real tools: two layers by `umoci repack` (hardlinks, a fifo,
 * char and block devices, setuid/setgid/sticky modes, symlinks, long and
 * non-ASCII names, xattrs including security.capability, an empty file,
 * then deletions of files and directories, file↔directory replacements and
 * the removal of a hardlink group's first name), an empty layer, and a
 * layer written with Python's tarfile for what umoci never writes (an opaque
 * whiteout placed after the entries it keeps, a hardlink to a lower layer's
 * file, nanosecond mtimes, whiteouts of missing paths). The archive made
 * from the layout, and again through a real registry, must match `umoci
 * unpack` of the same image entry by entry: type, mode, owner, size, mtime,
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
import { ClipError, EXIT_CODES } from '../src/errors';
import { LayerReader } from '../src/engine/layer';
import { ClipArchive } from '../src/archive/reader';
import { indexImage, IndexImageResult } from '../src/index/build';
import { log } from '../src/log';
import { sh } from './fixtures';
import { buildTinyImage, demoLayout, scratchDir, startRegistry, RegistryHandle, writeBlob } from './registry-harness';

const CLI = path.resolve(__dirname, '../src/cli/main.js');
const REF_NAME = 'org.opencontainers.image.ref.name';

/** One path of a root filesystem, as both sides describe it. */
interface PathRecord {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtimeSec: number;
  mtimeNsec: number;
  size?: number;
  sha256?: string;
  target?: string;
  major?: number;
  minor?: number;
  xattrs: Record<string, string>;
  /** Identity for hardlink groups (st_ino / archive ino); not compared directly. */
  id: number;
}

// Walks an unpacked rootfs with lstat; prints {path: record} as JSON.
const DUMP_PY = String.raw`
import hashlib, json, os, stat, sys
root = sys.argv[1]
out = {}
def record(p, rel):
    st = os.lstat(p)
    m = st.st_mode
    kind = {stat.S_IFREG: 'file', stat.S_IFDIR: 'dir', stat.S_IFLNK: 'symlink', stat.S_IFCHR: 'char',
            stat.S_IFBLK: 'block', stat.S_IFIFO: 'fifo'}[stat.S_IFMT(m)]
    r = {'type': kind, 'mode': m & 0o7777, 'uid': st.st_uid, 'gid': st.st_gid, 'nlink': st.st_nlink,
         'mtimeSec': st.st_mtime_ns // 10**9, 'mtimeNsec': st.st_mtime_ns % 10**9, 'id': st.st_ino, 'xattrs': {}}
    if kind == 'file':
        h = hashlib.sha256()
        with open(p, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                h.update(chunk)
        r['size'] = st.st_size
        r['sha256'] = h.hexdigest()
    if kind == 'symlink':
        r['target'] = os.readlink(p)
    if kind in ('char', 'block'):
        r['major'] = os.major(st.st_rdev)
        r['minor'] = os.minor(st.st_rdev)
    if kind != 'symlink':
        for name in os.listxattr(p, follow_symlinks=False):
            r['xattrs'][name] = os.getxattr(p, name, follow_symlinks=False).hex()
    out[rel] = r
record(root, '')
for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
        p = os.path.join(dirpath, name)
        record(p, os.path.relpath(p, root))
json.dump(out, sys.stdout)
`;

// The hand-written layer: what umoci never writes. argv: output tar path.
const CRAFT_PY = String.raw`
import io, sys, tarfile
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as t:
    def add(name, kind=tarfile.REGTYPE, data=b'', mode=0o644, linkname='', pax=None, mtime=1700000000):
        ti = tarfile.TarInfo(name)
        ti.type = kind; ti.mode = mode; ti.mtime = mtime; ti.uid = 0; ti.gid = 0; ti.linkname = linkname
        if pax: ti.pax_headers = pax
        ti.size = len(data) if kind == tarfile.REGTYPE else 0
        t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    add('opq', tarfile.DIRTYPE, mode=0o750)
    add('opq/new-in-layer', data=b'only this layer\n')
    add('opq/.wh..wh..opq')  # after the entry it keeps: order must not matter
    add('ns-file', data=b'nanoseconds\n', pax={'mtime': '1700000000.123456789'})
    add('old-file', data=b'before 1970\n', mtime=-86400)
    add('crafted-xattr', data=b'x', pax={'SCHILY.xattr.user.crafted': 'value'})
    add('hl-to-lower', tarfile.LNKTYPE, linkname='keep/file')
    add('.wh.does-not-exist')
    add('missing-dir/.wh.x')
    add('./sticky/.wh.nothing-here')
sys.stdout.buffer.write(buf.getvalue())
`;

const EVIL_PY = String.raw`
import io, sys, tarfile
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode='w', format=tarfile.GNU_FORMAT) as t:
    ti = tarfile.TarInfo('../escaped'); ti.size = 3
    t.addfile(ti, io.BytesIO(b'bad'))
sys.stdout.buffer.write(buf.getvalue())
`;

const EMPTY_PY = String.raw`
import io, sys, tarfile
buf = io.BytesIO()
tarfile.open(fileobj=buf, mode='w').close()
sys.stdout.buffer.write(buf.getvalue())
`;

// Per-layer progress lines would drown the test output.
log.level = 'warn';

function python(script: string, ...args: string[]): Buffer {
  const r = spawnSync('python3', ['-c', script, ...args], { maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`python3 failed: ${r.stderr.toString()}`);
  return r.stdout;
}

interface Json {
  [key: string]: unknown;
}

function readJsonBlob(layout: string, digest: string): Json {
  return JSON.parse(fs.readFileSync(path.join(layout, 'blobs', 'sha256', digest.slice(7)), 'utf8')) as Json;
}

/** Rewrites the image `tag` of `layout`: mutate(manifest, config) may change both; new blobs are written. */
function rewriteImage(layout: string, tag: string, mutate: (manifest: Json, config: Json) => void): void {
  const indexFile = path.join(layout, 'index.json');
  const index = JSON.parse(fs.readFileSync(indexFile, 'utf8')) as { manifests: Array<Json & { annotations?: Record<string, string> }> };
  const entry = index.manifests.find((m) => m.annotations?.[REF_NAME] === tag)!;
  const manifest = readJsonBlob(layout, entry.digest as string);
  const configDesc = manifest.config as Json;
  const config = readJsonBlob(layout, configDesc.digest as string);
  mutate(manifest, config);
  const newConfig = writeBlob(layout, JSON.stringify(config), configDesc.mediaType as string);
  manifest.config = { ...configDesc, digest: newConfig.digest, size: newConfig.size };
  const newManifest = writeBlob(layout, JSON.stringify(manifest), entry.mediaType as string);
  entry.digest = newManifest.digest;
  entry.size = newManifest.size;
  fs.writeFileSync(indexFile, JSON.stringify(index));
}

/** Appends a layer (plain tar bytes, stored gzip'd) to image `tag`. */
function appendLayer(layout: string, tag: string, tar: Buffer): void {
  const blob = writeBlob(layout, zlib.gzipSync(tar), 'application/vnd.oci.image.layer.v1.tar+gzip');
  const diffId = `sha256:${createHash('sha256').update(tar).digest('hex')}`;
  rewriteImage(layout, tag, (manifest, config) => {
    (manifest.layers as Json[]).push(blob);
    ((config.rootfs as Json).diff_ids as string[]).push(diffId);
    (config.history as Json[] | undefined)?.push({ created_by: 'clip-native test: crafted layer' });
  });
}

function layerBlobPath(layout: string, digest: string): string {
  return path.join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length));
}

/** Builds the oracle image in `layout` under tag "t" (see the file comment). */
function buildOracleImage(work: string): string {
  const layout = path.join(work, 'layout');
  const bundle = path.join(work, 'bundle');
  const r = path.join(bundle, 'rootfs');
  sh(`umoci init --layout '${layout}' && umoci new --image '${layout}:t'`);
  sh(`umoci unpack --rootless=false --image '${layout}:t' '${bundle}' >/dev/null`);
  const files: Array<[string, string | Buffer]> = [
    ['etc/hostname', 'oracle\n'],
    ['etc/empty', ''],
    ['d/a', 'shared content\n'],
    ['gone/deep/f', 'to be deleted\n'],
    ['gone/g', 'to be deleted\n'],
    ['keep/file', 'kept\n'],
    ['opq/a', 'hidden by the opaque layer\n'],
    ['opq/sub/c', 'hidden too\n'],
    ['replace-me/x', 'dir becomes a file\n'],
    ['replace-me/y/z', 'deeper\n'],
    ['becomes-dir', 'file becomes a dir\n'],
    ['suid', '#!/bin/sh\n'],
    ['sgid', '#!/bin/sh\n'],
    ['owned', 'uid 1234 gid 5678\n'],
    ['ünïcødé/日本語.txt', 'non-ASCII\n'],
    ['names/\u{1F600}', 'emoji\n'],
    ['names/\uFF21', 'fullwidth A\n'],
    ['names/plain', 'plain\n'],
    [`long/${'x'.repeat(100)}/${'y'.repeat(100)}/${'z'.repeat(255)}`, 'long path\n'],
    ['big.bin', Buffer.concat(Array.from({ length: 48 }, (_, i) => createHash('sha512').update(`block ${i}`).digest()).map((b) => Buffer.concat(Array(1024).fill(b))))], // 3 MiB
  ];
  for (const [name, content] of files) {
    fs.mkdirSync(path.dirname(path.join(r, name)), { recursive: true });
    fs.writeFileSync(path.join(r, name), content);
  }
  sh(
    [
      `cd '${r}'`,
      'ln d/a d/hard && ln d/a d/hard2',
      'mkfifo fifo && mknod cdev c 1 3 && mknod bdev b 8 1',
      'chmod 4755 suid && chmod 2755 sgid && chmod 600 owned && chown 1234:5678 owned',
      'mkdir sticky && chmod 1777 sticky',
      'ln -s d/a sym-rel && ln -s /etc/hostname sym-abs && ln -s /nope sym-dangling',
      `python3 -c "import os; os.setxattr('d/a', 'user.note', b'hello'); os.setxattr('suid', 'security.capability', bytes.fromhex('0100000200200000000000000000000000000000'))"`,
    ].join(' && '),
  );
  sh(`umoci repack --image '${layout}:t' '${bundle}' && rm -rf '${bundle}'`);
  // Layer 2: deletions and replacements, from a fresh unpack.
  sh(`umoci unpack --rootless=false --image '${layout}:t' '${bundle}' >/dev/null`);
  sh(
    [
      `cd '${r}'`,
      'rm -rf gone d/a',
      'printf "changed\\n" > etc/hostname',
      'rm -rf replace-me && printf "now a file\\n" > replace-me',
      'rm becomes-dir && mkdir becomes-dir && printf "inside\\n" > becomes-dir/inside',
      'mkdir -p new && printf "new\\n" > new/file',
    ].join(' && '),
  );
  sh(`umoci repack --image '${layout}:t' '${bundle}' && rm -rf '${bundle}'`);
  // Layer 3: no change at all (an empty tar). Layer 4: the hand-written one.
  appendLayer(layout, 't', python(EMPTY_PY));
  appendLayer(layout, 't', python(CRAFT_PY));
  return layout;
}

function unpackOracle(work: string, layout: string, tag: string): Record<string, PathRecord> {
  const bundle = path.join(work, `unpacked-${tag}`);
  sh(`umoci unpack --rootless=false --image '${layout}:${tag}' '${bundle}' >/dev/null`);
  try {
    return JSON.parse(python(DUMP_PY, path.join(bundle, 'rootfs')).toString('utf8')) as Record<string, PathRecord>;
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
        mtimeSec: stat.mtimeSec,
        mtimeNsec: stat.mtimeNsec,
        id: ino,
        xattrs: Object.fromEntries(Object.entries(archive.xattrs(ino)).map(([k, v]) => [k, v.toString('hex')])),
      };
      if (stat.type === 'file') {
        rec.size = stat.size;
        const first = seen.get(ino);
        if (first) rec.sha256 = first.sha256;
        else files.push({ rec, layer: stat.layer!, offset: stat.dataOffset, size: stat.size });
      }
      if (stat.type === 'symlink') rec.target = archive.readlink(ino);
      if (stat.type === 'char' || stat.type === 'block') {
        rec.major = stat.devmajor;
        rec.minor = stat.devminor;
      }
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
    for (const rec of Object.values(out)) if (rec.type === 'file' && rec.sha256 === undefined) rec.sha256 = seen.get(rec.id)!.sha256;
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
    for (const [p, r] of Object.entries(tree)) if (r.type !== 'dir') byId.set(r.id, [...(byId.get(r.id) ?? []), p]);
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
    const fields: Array<keyof PathRecord> = ['type', 'mode', 'uid', 'gid', 'nlink', 'size', 'sha256', 'target', 'major', 'minor'];
    if (!(options.skipRootTimes && p === '')) fields.push('mtimeSec', 'mtimeNsec');
    for (const f of fields) if (got[f] !== want[f]) problems.push(`${p || '/'}: ${f} is ${String(got[f])}, umoci has ${String(want[f])}`);
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

async function rejectsWith(promise: Promise<unknown>, code: string, pattern?: RegExp) {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof ClipError, `expected a ClipError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

describe('indexImage matches umoci unpack', () => {
  let work: string;
  let layout: string;
  let oracle: Record<string, PathRecord>;
  let fromLayout: IndexImageResult;
  let registry: RegistryHandle | undefined;

  before(async () => {
    work = scratchDir('clip-oracle-');
    layout = buildOracleImage(work);
    oracle = unpackOracle(work, layout, 't');
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
    assert.equal(oracle['ns-file'].mtimeNsec, 123456789);
    assert.equal(oracle.suid.xattrs['security.capability'], '0100000200200000000000000000000000000000');
    assert.equal(oracle['hl-to-lower'].id, oracle['keep/file'].id);
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

describe('indexImage on the demo Debian image', () => {
  it('matches umoci unpack and stays small', async () => {
    const work = scratchDir('clip-demo-');
    const layout = demoLayout();
    const started = process.hrtime.bigint();
    const result = await indexImage(`oci:${layout}:bookworm`, { output: path.join(work, 'demo.clip') });
    const indexSeconds = Number(process.hrtime.bigint() - started) / 1e9;
    const oracle = unpackOracle(work, layout, 'bookworm');
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
