/**
 * Names that are not UTF-8 survive end to end, byte for byte. A real image:
 * two tar layers written by Python's tarfile (GNU format; Latin-1 names
 * like "caf\xe9", stray bytes, a truncated UTF-8 sequence, a valid UTF-8
 * twin "caf\xc3\xa9" that must stay a different file, symlink and hardlink
 * targets with such bytes, a whiteout of a Latin-1 name), appended to an
 * image made by umoci. Oracle: `umoci unpack` of the same image. The image
 * is indexed, listed with `clip-native ls` (stdout bytes), extracted and
 * mounted, and every tree is compared with the oracle's by raw names.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, test } from 'node:test';
import { pathBytes } from '../src/path-bytes';
import { ClipArchive, ROOT_INO } from '../src/archive/reader';
import { indexLayerFile } from '../src/engine/layer';
import { indexImage } from '../src/index/build';
import { log } from '../src/log';
import { extractArchive } from '../src/storage/extract';
import { LayerStore } from '../src/storage/store';
import { sh } from './fixtures';
import { appendLayer, python } from './images';
import { mountpoint, scratchDir, withMount } from './mount-helpers';

log.level = process.env.CLIP_LOG_LEVEL ?? 'error';

const CLI = path.resolve(__dirname, '../src/cli/main.js');
const latin1 = (s: string) => Buffer.from(s, 'latin1');

// argv: which layer (1 or 2). Names are bytes, given to tarfile as
// surrogate-escaped str with encoding utf-8 + surrogateescape: exactly those bytes land in the tar.
const LAYER_PY = String.raw`
import io, sys, tarfile
b = lambda raw: raw.decode('utf-8', 'surrogateescape')
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode='w', format=tarfile.GNU_FORMAT, encoding='utf-8', errors='surrogateescape') as t:
    def add(name, kind=tarfile.REGTYPE, data=b'', linkname=b''):
        ti = tarfile.TarInfo(b(name))
        ti.type = kind; ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644; ti.mtime = 1700000000
        ti.linkname = b(linkname); ti.size = len(data) if kind == tarfile.REGTYPE else 0
        t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    if sys.argv[1] == '1':
        add(b'caf\xe9', tarfile.DIRTYPE)                       # Latin-1 "cafe" with an acute e
        add(b'caf\xe9/na\xefve.txt', data=b'latin-1 name\n')
        add(b'caf\xc3\xa9', data=b'the UTF-8 twin\n')          # valid UTF-8: a different name
        add(b'\xff\xfe-bytes', data=b'not text at all\n')
        add(b'euro-\xe2\x82', data=b'a truncated sequence\n')  # the first two bytes of U+20AC
        add(b'mixed-\xe9\xf0\x9f\x98\x80', data=b'a stray byte, then an emoji\n')
        add(b'gone-\xe9', data=b'removed by the next layer\n')
        add(b'link-\xe9', tarfile.SYMTYPE, linkname=b'caf\xe9/na\xefve.txt')
        add(b'hard-\xe9', tarfile.LNKTYPE, linkname=b'\xff\xfe-bytes')
    else:
        add(b'.wh.gone-\xe9')
        add(b'caf\xe9/second-\xa4', data=b'from layer two\n')
sys.stdout.buffer.write(buf.getvalue())
`;

/** One path of a tree, keyed by its raw bytes (hex), as bytes-only facts. */
interface Node {
  name: string; // latin1 of the raw bytes, for messages
  type: string;
  size?: number;
  sha256?: string;
  target?: string; // hex of the link target's bytes
  ino: number;
}

// argv: the root, hex-encoded. Prints {hex of the relative path's bytes: Node}.
const WALK_JS = `
const fs = require('fs'), crypto = require('crypto');
const out = {};
const visit = (dir, rel) => {
  for (const name of fs.readdirSync(dir, { encoding: 'buffer' })) {
    const full = Buffer.concat([dir, Buffer.from('/'), name]);
    const r = rel.length ? Buffer.concat([rel, Buffer.from('/'), name]) : name;
    const st = fs.lstatSync(full);
    const n = { name: r.toString('latin1'), type: st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other', ino: st.ino };
    if (st.isFile()) { const d = fs.readFileSync(full); n.size = d.length; n.sha256 = crypto.createHash('sha256').update(d).digest('hex'); }
    if (st.isSymbolicLink()) n.target = fs.readlinkSync(full, { encoding: 'buffer' }).toString('hex');
    out[r.toString('hex')] = n;
    if (st.isDirectory()) visit(full, r);
  }
};
visit(Buffer.from(process.argv[1], 'hex'), Buffer.alloc(0));
process.stdout.write(JSON.stringify(out));`;

/**
 * The tree under `root`, by raw names, walked in a child process: this
 * thread must stay free to answer a mount's misses.
 */
function walkBytes(root: string): Promise<Map<string, Node>> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ['-e', WALK_JS, latin1(root).toString('hex')], { maxBuffer: 1 << 26 }, (err, stdout) =>
      err ? reject(err) : resolve(new Map(Object.entries(JSON.parse(stdout) as Record<string, Node>))),
    ),
  );
}

/** The trees agree name for name (raw bytes), in type, content and link target; hardlinked names share an inode. */
function assertSameTree(got: Map<string, Node>, want: Map<string, Node>, what: string): void {
  const names = (m: Map<string, Node>) => [...m.values()].map((n) => n.name).sort();
  assert.deepEqual(names(got), names(want), `${what}: the names differ`);
  for (const [key, w] of want) {
    const g = got.get(key)!;
    assert.deepEqual({ ...g, ino: 0 }, { ...w, ino: 0 }, `${what}: ${w.name}`);
  }
  const hex = (s: string) => Buffer.from(s, 'latin1').toString('hex');
  assert.equal(got.get(hex('hard-\xe9'))!.ino, got.get(hex('\xff\xfe-bytes'))!.ino, `${what}: the hardlink`);
}

let work: string;
let layout: string;
let archivePath: string;
let oracle: Map<string, Node>;

before(async () => {
  work = scratchDir('clip-names-');
  layout = path.join(work, 'layout');
  sh(`umoci init --layout '${layout}' && umoci new --image '${layout}:t'`);
  appendLayer(layout, 't', python(LAYER_PY, '1'));
  appendLayer(layout, 't', python(LAYER_PY, '2'));
  const bundle = path.join(work, 'bundle');
  sh(`umoci unpack --rootless=false --image '${layout}:t' '${bundle}' >/dev/null`);
  oracle = await walkBytes(path.join(bundle, 'rootfs'));
  archivePath = path.join(work, 'names.clip');
  await indexImage(`oci:${layout}:t`, { output: archivePath });
});

// argv: seed. 500 random names (1 to 40 random bytes, no '/' or NUL, some
// valid UTF-8 among them) as files of a plain tar; prints the tar, the names are its entries.
const RANDOM_PY = String.raw`
import io, random, sys, tarfile
rnd = random.Random(int(sys.argv[1]))
buf = io.BytesIO()
seen = set()
with tarfile.open(fileobj=buf, mode='w', format=tarfile.GNU_FORMAT, encoding='utf-8', errors='surrogateescape') as t:
    while len(seen) < 500:
        if rnd.random() < 0.2:
            raw = ''.join(chr(rnd.choice([rnd.randrange(0x20, 0x7f), rnd.randrange(0xa0, 0x800), rnd.randrange(0x4e00, 0x9fff), rnd.randrange(0x10000, 0x10ffff)])) for _ in range(rnd.randrange(1, 10))).encode('utf-8')
        else:
            raw = bytes(rnd.choice([b for b in range(1, 256) if b != 0x2f]) for _ in range(rnd.randrange(1, 40)))
        if raw in seen or raw in (b'.', b'..') or len(raw) > 100 or b'/' in raw:
            continue
        seen.add(raw)
        ti = tarfile.TarInfo(raw.decode('utf-8', 'surrogateescape')); ti.size = 0
        t.addfile(ti, io.BytesIO(b''))
sys.stdout.buffer.write(buf.getvalue())
`;

describe('names that are not UTF-8', () => {
  test('500 random byte names cross the addon and back unchanged', async () => {
    const tar = python(RANDOM_PY, '7');
    const file = path.join(work, 'random.tar');
    fs.writeFileSync(file, tar);
    const index = await indexLayerFile(file);
    assert.equal(index.entries.length, 500);
    // The oracle: the names where the tar headers hold them (GNU long names follow an 'L' header).
    const names: Buffer[] = [];
    for (let at = 0, longName: Buffer | null = null; at + 512 <= tar.length; ) {
      const header = tar.subarray(at, at + 512);
      if (header.every((b) => b === 0)) break;
      const size = parseInt(header.subarray(124, 136).toString('latin1').replace(/\0.*$/s, '').trim() || '0', 8);
      const body = tar.subarray(at + 512, at + 512 + size);
      if (header[156] === 0x4c) longName = body.subarray(0, body.indexOf(0) < 0 ? body.length : body.indexOf(0));
      else {
        names.push(longName ?? header.subarray(0, header.indexOf(0) < 0 || header.indexOf(0) > 100 ? 100 : header.indexOf(0)));
        longName = null;
      }
      at += 512 + Math.ceil(size / 512) * 512;
    }
    assert.equal(names.length, 500);
    index.entries.forEach((e, i) => assert.ok(pathBytes(e.path).equals(names[i]), `${names[i].toString('hex')} came back as ${pathBytes(e.path).toString('hex')}`));
    // And through the archive: every name looks up and reads back as its bytes.
    const layout2 = path.join(work, 'random-layout');
    sh(`umoci init --layout '${layout2}' && umoci new --image '${layout2}:t'`);
    appendLayer(layout2, 't', tar);
    const clip = path.join(work, 'random.clip');
    await indexImage(`oci:${layout2}:t`, { output: clip });
    const archive = ClipArchive.open(clip);
    try {
      const got = archive.readdir(ROOT_INO);
      assert.deepEqual(got.map((e) => pathBytes(e.name).toString('hex')).sort(), names.map((n) => n.toString('hex')).sort());
      for (const e of got) assert.equal(archive.lookup(ROOT_INO, e.name), e.ino);
    } finally {
      archive.close();
    }
  });

  test('the oracle holds the raw names (the fixture is what it claims)', () => {
    const hex = (s: string) => latin1(s).toString('hex');
    for (const name of ['caf\xe9', 'caf\xe9/na\xefve.txt', 'caf\xc3\xa9', '\xff\xfe-bytes', 'euro-\xe2\x82', 'mixed-\xe9\xf0\x9f\x98\x80', 'link-\xe9', 'hard-\xe9', 'caf\xe9/second-\xa4']) {
      assert.ok(oracle.has(hex(name)), JSON.stringify(name));
    }
    assert.ok(!oracle.has(hex('gone-\xe9')));
  });

  test('the archive reader: readdir, lookup and readlink keep every byte', () => {
    const archive = ClipArchive.open(archivePath);
    try {
      const names = archive.readdir(ROOT_INO).map((e) => pathBytes(e.name).toString('latin1'));
      assert.deepEqual(names.sort(), [...oracle.values()].filter((n) => !n.name.includes('/')).map((n) => n.name).sort());
      for (const e of archive.readdir(ROOT_INO)) assert.equal(archive.lookup(ROOT_INO, e.name), e.ino, 'a name read back looks up');
      const link = archive.lookupPath(archive.readdir(ROOT_INO).find((e) => pathBytes(e.name).equals(latin1('link-\xe9')))!.name);
      assert.ok(pathBytes(archive.readlink(link!)).equals(latin1('caf\xe9/na\xefve.txt')));
      // The Latin-1 name and its UTF-8 twin are two files.
      const dir = archive.readdir(ROOT_INO).find((e) => pathBytes(e.name).equals(latin1('caf\xe9')))!;
      const twin = archive.readdir(ROOT_INO).find((e) => pathBytes(e.name).equals(latin1('caf\xc3\xa9')))!;
      assert.equal(twin.name, 'café');
      assert.notEqual(dir.ino, twin.ino);
      assert.equal(archive.stat(dir.ino).type, 'dir');
    } finally {
      archive.close();
    }
  });

  test('clip-native ls writes the raw names', () => {
    const out = execFileSync(process.execPath, [CLI, 'ls', archivePath, '/']);
    const want = [...oracle.values()].filter((n) => !n.name.includes('/')).map((n) => latin1(n.name));
    want.sort(Buffer.compare);
    assert.ok(out.equals(Buffer.concat(want.flatMap((n) => [n, Buffer.from('\n')]))), out.toString('latin1'));
    const long = execFileSync(process.execPath, [CLI, 'ls', '-l', archivePath, '/']);
    assert.ok(long.includes(latin1('link-\xe9 -> caf\xe9/na\xefve.txt\n')), long.toString('latin1'));
  });

  test('clip-native cat and ls take names that are not UTF-8 on the command line', () => {
    // The shell's printf puts the raw bytes into argv (Node's own spawn would encode them as UTF-8).
    const run = (args: string) => execFileSync('/bin/sh', ['-c', `'${process.execPath}' '${CLI}' --log-level error ${args}`]);
    const cacheArgs = `--cache-dir '${path.join(work, 'cache-argv')}'`;
    assert.equal(run(`cat ${cacheArgs} '${archivePath}' "$(printf '/caf\\351/na\\357ve.txt')"`).toString(), 'latin-1 name\n');
    assert.equal(run(`cat ${cacheArgs} '${archivePath}' "$(printf '/caf\\303\\251')"`).toString(), 'the UTF-8 twin\n');
    const listed = run(`ls '${archivePath}' "$(printf '/caf\\351')"`);
    assert.ok(listed.equals(latin1('na\xefve.txt\nsecond-\xa4\n')), listed.toString('latin1'));
  });

  test('extract writes the raw names, contents and link targets', async () => {
    const store = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'cache-x') });
    try {
      const target = path.join(work, 'extracted');
      await extractArchive(store, target);
      assertSameTree(await walkBytes(target), oracle, 'extract');
    } finally {
      await store.close();
    }
  });

  test('the mount serves the raw names, contents and link targets', async () => {
    const store = await LayerStore.open({ archive: archivePath, cacheDir: path.join(work, 'cache-m'), prefetch: 'none' });
    try {
      await withMount({ archive: archivePath, mountpoint: mountpoint(), readMiss: (l, off, len) => store.read(l.index, off, len) }, async (m) => {
        assertSameTree(await walkBytes(m.mountpoint), oracle, 'mount');
      });
    } finally {
      await store.close();
    }
  });
});
