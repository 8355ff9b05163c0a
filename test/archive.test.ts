/**
 * The `.clip` archive through the addon: a tree written by writeArchive and
 * read back by the native ArchiveView must agree field by field (every node
 * type, hardlinks, xattrs, devices, negative and nanosecond times, byte-order
 * of non-ASCII names, layers and checkpoints, config); damaged, truncated,
 * foreign and newer-version files must be refused with their codes; and the
 * `inspect` / `ls` commands must print what the archive holds and exit with
 * the documented codes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { ClipError } from '../src/errors';
import type { TarEntry } from '../src/engine/layer';
import { mergeLayers } from '../src/index/merge';
import { ArchiveLayerInput, writeArchive } from '../src/archive/writer';
import { ClipArchive, modeString, ROOT_INO } from '../src/archive/reader';
import { EXIT_CODES } from '../src/errors';
import { tarEntry, tempDir } from './fixtures';

const CLI = path.resolve(__dirname, '../src/cli/main.js');

const e = tarEntry;

const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex');
const NAMES = ['zeta', 'Alpha', 'ünïcødé', '日本語', '\u{1F600}-emoji', '\uFF21-fullwidth', 'a b', 'x'.repeat(255)];

function sampleLayers(): ArchiveLayerInput[] {
  return [
    { digest: `sha256:${'1'.repeat(64)}`, diffId: `sha256:${'2'.repeat(64)}`, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', compressedSize: 1000, uncompressedSize: 1 << 20, format: 'gzip', checkpoints: Buffer.from('checkpoints of layer zero') },
    { digest: `sha256:${'3'.repeat(64)}`, diffId: `sha256:${'4'.repeat(64)}`, mediaType: 'application/vnd.oci.image.layer.v1.tar', compressedSize: 4096, uncompressedSize: 4096, format: 'tar', checkpoints: Buffer.from('layer one') },
    // The same blob listed twice: its checkpoints are stored once.
    { digest: `sha256:${'1'.repeat(64)}`, diffId: `sha256:${'2'.repeat(64)}`, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', compressedSize: 1000, uncompressedSize: 1 << 20, format: 'gzip', checkpoints: Buffer.from('checkpoints of layer zero') },
  ];
}

function sampleEntries(): TarEntry[][] {
  return [
    [
      e('./', 'dir', { mode: 0o755, mtimeSec: 1, mtimeNsec: 2 }),
      e('bin/', 'dir'),
      e('bin/sh', 'file', { mode: 0o4755, uid: 1000, gid: 1001, size: 1234, dataOffset: 512, mtimeSec: -86400, mtimeNsec: 999999999, xattrs: { 'security.capability': CAP, 'user.empty': Buffer.alloc(0) } }),
      e('bin/ash', 'hardlink', { linkTarget: 'bin/sh' }),
      e('dev/', 'dir', { mode: 0o755 }),
      e('dev/null', 'char', { devmajor: 1, devminor: 3, mode: 0o666 }),
      e('dev/big', 'block', { devmajor: 4095, devminor: 1048575 }),
      e('dev/fifo', 'fifo', { mode: 0o600 }),
      e('tmp/', 'dir', { mode: 0o1777 }),
      e('link', 'symlink', { linkTarget: 'bin/sh' }),
      e('dangling', 'symlink', { linkTarget: '/nowhere/at/all' }),
      e('empty', 'file', { size: 0, dataOffset: 4096 }),
      ...NAMES.map((n, i) => e(`names/${n}`, 'file', { size: i, dataOffset: 8192 + i })),
    ],
    [e('sgid', 'file', { mode: 0o2750, size: 10, dataOffset: 1024, gid: 50 }), e('bin/.wh.ash')],
    [e('deep/a/b/c/d', 'file', { size: 1, dataOffset: 0 })],
  ];
}

describe('archive round trip through the native reader', () => {
  let dir: string;
  let file: string;
  let archive: ClipArchive;
  before(() => {
    dir = tempDir('clip-archive-');
    file = path.join(dir, 'sample.clip');
    const tree = mergeLayers(sampleEntries().map((entries, i) => ({ name: `l${i}`, entries })));
    fs.writeFileSync(file, writeArchive(tree.root, sampleLayers(), { reference: 'test:ref', platform: { os: 'linux', architecture: 'amd64' }, config: { Cmd: ['/bin/sh'] } }).bytes);
    archive = ClipArchive.open(file);
  });
  after(() => {
    archive.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reads every node type with every attribute', () => {
    const sh = archive.stat(archive.lookupPath('bin/sh')!);
    assert.equal(sh.type, 'file');
    assert.equal(sh.mode, 0o104755);
    assert.deepEqual([sh.uid, sh.gid, sh.size, sh.dataOffset, sh.layer, sh.mtimeSec, sh.mtimeNsec, sh.nlink], [1000, 1001, 1234, 512, 0, -86400, 999999999, 1]);
    const xattrs = archive.xattrs(sh.ino);
    assert.deepEqual(Object.keys(xattrs), ['security.capability', 'user.empty']);
    assert.ok(xattrs['security.capability'].equals(CAP));
    assert.equal(xattrs['user.empty'].length, 0);
    assert.equal(archive.lookupPath('bin/ash'), null, 'whited out in layer 1');

    const nul = archive.stat(archive.lookupPath('/dev/null')!);
    assert.deepEqual([nul.type, nul.mode, nul.devmajor, nul.devminor], ['char', 0o20666, 1, 3]);
    const big = archive.stat(archive.lookupPath('dev/big')!);
    assert.deepEqual([big.type, big.devmajor, big.devminor], ['block', 4095, 1048575]);
    assert.equal(archive.stat(archive.lookupPath('dev/fifo')!).mode, 0o10600);
    assert.equal(archive.stat(archive.lookupPath('tmp')!).mode, 0o41777);
    const link = archive.lookupPath('link')!;
    assert.equal(archive.readlink(link), 'bin/sh');
    assert.equal(archive.stat(link).size, 6);
    assert.equal(archive.readlink(archive.lookupPath('dangling')!), '/nowhere/at/all');
    assert.equal(archive.lookupPath('link/x'), null, 'symlinks are not followed');
    const sgid = archive.stat(archive.lookupPath('sgid')!);
    assert.deepEqual([sgid.mode, sgid.layer, sgid.gid], [0o102750, 1, 50]);
    assert.equal(archive.stat(archive.lookupPath('deep/a/b/c/d')!).layer, 2);
    assert.equal(archive.stat(archive.lookupPath('empty')!).size, 0);

    const root = archive.stat(ROOT_INO);
    assert.deepEqual([root.type, root.mtimeSec, root.mtimeNsec, root.parent], ['dir', 1, 2, ROOT_INO]);
    // nlink of a directory: 2 + subdirectories (bin, deep, dev, names, tmp).
    assert.equal(root.nlink, 7);
    const deep = archive.lookupPath('deep/a')!;
    assert.equal(archive.stat(deep).parent, archive.lookupPath('deep'));
    assert.equal(archive.lookupPath('deep/a/../..'), ROOT_INO);
  });

  it('lists directories in name-byte order and finds every name', () => {
    const names = archive.readdir(archive.lookupPath('names')!).map((d) => d.name);
    assert.deepEqual(names, [...NAMES].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    const dirIno = archive.lookupPath('names')!;
    for (const n of NAMES) {
      const ino = archive.lookup(dirIno, n)!;
      assert.ok(ino, n);
      assert.equal(archive.stat(ino).size, NAMES.indexOf(n));
    }
    assert.equal(archive.lookup(dirIno, 'nope'), null);
    assert.deepEqual(archive.readdir(dirIno, 6).map((d) => d.name), names.slice(6));
    assert.deepEqual(archive.readdir(dirIno, 2, 3).map((d) => d.name), names.slice(2, 5));
    assert.deepEqual(archive.readdir(ROOT_INO).map((d) => d.name), ['bin', 'dangling', 'deep', 'dev', 'empty', 'link', 'names', 'sgid', 'tmp']);
  });

  it('numbers nodes breadth-first from the root (inode 1) and walks every name', () => {
    const walked = [...archive.walk()];
    assert.equal(walked[0].ino, ROOT_INO);
    assert.equal(walked.length, archive.info().direntCount + 1);
    // The root's children get the next inode numbers, in name order.
    assert.deepEqual(archive.readdir(ROOT_INO).map((d) => d.ino), [2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it('keeps layers, checkpoints (stored once) and config', () => {
    const layers = archive.layers();
    assert.equal(layers.length, 3);
    assert.deepEqual(layers[1], {
      digest: `sha256:${'3'.repeat(64)}`,
      diffId: `sha256:${'4'.repeat(64)}`,
      mediaType: 'application/vnd.oci.image.layer.v1.tar',
      compressedSize: 4096,
      uncompressedSize: 4096,
      format: 'tar',
      checkpointsSize: 9,
    });
    assert.equal(archive.checkpoints(0).toString(), 'checkpoints of layer zero');
    assert.equal(archive.checkpoints(2).toString(), 'checkpoints of layer zero');
    assert.equal(archive.checkpoints(1).toString(), 'layer one');
    // 25 bytes padded to 32, then 9 padded to 16: stored once although listed twice.
    assert.equal(archive.info().checkpointsSize, 32 + 16);
    assert.deepEqual(archive.imageConfig().config, { Cmd: ['/bin/sh'] });
  });

  it('refuses bad arguments with EINVAL', () => {
    assert.throws(() => archive.stat(0), (err: ClipError) => err.code === 'EINVAL');
    assert.throws(() => archive.stat(archive.info().nodeCount + 1), (err: ClipError) => err.code === 'EINVAL');
    assert.throws(() => archive.readlink(ROOT_INO), (err: ClipError) => err.code === 'EINVAL');
    assert.throws(() => archive.lookup(archive.lookupPath('bin/sh')!, 'x'), (err: ClipError) => err.code === 'EINVAL');
    assert.throws(() => archive.checkpoints(3), (err: ClipError) => err.code === 'EINVAL');
  });

  it('modeString writes what ls -l writes', () => {
    assert.equal(modeString(0o104755), '-rwsr-xr-x');
    assert.equal(modeString(0o102750), '-rwxr-s---');
    assert.equal(modeString(0o102640), '-rw-r-S---');
    assert.equal(modeString(0o41777), 'drwxrwxrwt');
    assert.equal(modeString(0o41776), 'drwxrwxrwT');
    assert.equal(modeString(0o120777), 'lrwxrwxrwx');
    assert.equal(modeString(0o20666), 'crw-rw-rw-');
    assert.equal(modeString(0o60660), 'brw-rw----');
    assert.equal(modeString(0o10600), 'prw-------');
  });
});

describe('damaged archives', () => {
  let dir: string;
  let good: Buffer;
  before(() => {
    dir = tempDir('clip-archive-bad-');
    const tree = mergeLayers(sampleEntries().map((entries, i) => ({ name: `l${i}`, entries })));
    good = writeArchive(tree.root, sampleLayers(), { reference: 'x' }).bytes;
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  function openBytes(bytes: Buffer, name = 'a.clip'): ClipArchive {
    const file = path.join(dir, name);
    fs.writeFileSync(file, bytes);
    return ClipArchive.open(file);
  }
  function refused(bytes: Buffer, code: string, pattern?: RegExp) {
    assert.throws(
      () => openBytes(bytes),
      (err: unknown) => {
        assert.ok(err instanceof ClipError, String(err));
        assert.equal(err.code, code, err.message);
        if (pattern) assert.match(err.message, pattern);
        return true;
      },
    );
  }
  function reseal(bytes: Buffer): Buffer {
    const count = bytes.readUInt32LE(12);
    for (let i = 0; i < count; i++) {
      const at = 64 + i * 32;
      const offset = Number(bytes.readBigUInt64LE(at + 8));
      const length = Number(bytes.readBigUInt64LE(at + 16));
      bytes.writeUInt32LE(zlib.crc32(bytes.subarray(offset, offset + length)), at + 24);
    }
    bytes.writeUInt32LE(zlib.crc32(bytes.subarray(64, 64 + count * 32), zlib.crc32(bytes.subarray(0, 24))), 24);
    return bytes;
  }

  it('opens the intact archive', () => {
    openBytes(good).close();
  });

  it('refuses foreign files as "not a clip archive"', () => {
    refused(Buffer.alloc(0), 'ECORRUPT', /not a clip archive/);
    refused(zlib.gzipSync(Buffer.from('hello')), 'ECORRUPT', /not a clip archive/);
    refused(Buffer.from('{"not": "an archive"}'), 'ECORRUPT', /not a clip archive/);
    refused(fs.readFileSync(__filename), 'ECORRUPT', /not a clip archive/);
  });

  it('refuses truncated files and flipped bits with ECORRUPT', () => {
    for (const n of [8, 63, 64, 200, good.length / 2, good.length - 1]) refused(good.subarray(0, Math.floor(n)), 'ECORRUPT');
    // Bytes inside the header, the table, NODES, DIRENTS and CHECKPOINTS (padding is outside every CRC by design).
    for (const at of [20, 70, 300, 1000, 1400, good.length - 10]) {
      const bad = Buffer.from(good);
      bad[at] ^= 0x10;
      refused(bad, 'ECORRUPT', /checksum|truncated|bytes after/);
    }
  });

  it('refuses a newer format version with EUNSUPPORTED', () => {
    const newer = Buffer.from(good);
    newer.writeUInt32LE(2, 8);
    refused(reseal(newer), 'EUNSUPPORTED', /version 2/);
  });

  it('fails at the access that meets a lying record, with ECORRUPT', () => {
    const bad = Buffer.from(good);
    const nodes = Number(bad.readBigUInt64LE(64 + 2 * 32 + 8)); // section id 3 is third in the table
    // The root's first directory entry index, pushed far past DIRENTS.
    bad.writeUInt32LE(0x7fffffff, nodes + 40);
    refused(reseal(bad), 'ECORRUPT', /directory entries/);
  });

  it('missing files are ENOENT', () => {
    assert.throws(() => ClipArchive.open(path.join(dir, 'nope.clip')), (err: ClipError) => err.code === 'ENOENT');
  });
});

describe('inspect and ls', () => {
  let dir: string;
  let file: string;
  before(() => {
    dir = tempDir('clip-archive-cli-');
    file = path.join(dir, 'sample.clip');
    const tree = mergeLayers(sampleEntries().map((entries, i) => ({ name: `l${i}`, entries })));
    const config = { reference: 'oci:/x:y', manifestDigest: `sha256:${'9'.repeat(64)}`, configDigest: `sha256:${'8'.repeat(64)}`, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, compressedSize: 6000, config: { Cmd: ['/bin/sh'], Env: ['A=1'] } };
    fs.writeFileSync(file, writeArchive(tree.root, sampleLayers(), config).bytes);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  function cli(...args: string[]) {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, CLIP_LOG_LEVEL: 'silent' } });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  it('inspect prints the image, layers, counts and sizes', () => {
    const r = cli('inspect', file);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /image +oci:\/x:y/);
    assert.match(r.stdout, /platform +linux\/arm64\/v8/);
    assert.match(r.stdout, /layers +3/);
    assert.match(r.stdout, /1 block, 1 char, 9 dir, 1 fifo, 12 file, 2 symlink/);
    assert.match(r.stdout, /Cmd +\["\/bin\/sh"\]/);
    const json = JSON.parse(cli('inspect', file, '--json').stdout);
    assert.equal(json.archiveSize, fs.statSync(file).size);
    assert.equal(json.nodes, 26);
    assert.equal(json.names, 25);
    assert.deepEqual(json.nodesByType, { dir: 9, file: 12, symlink: 2, char: 1, block: 1, fifo: 1 });
    assert.equal(json.layers.length, 3);
    assert.equal(json.compressedSize, 5096, 'distinct blobs: the repeated layer is pulled once');
    assert.ok(json.bytesPerEntry > 48 && json.bytesPerEntry < 100, String(json.bytesPerEntry));
  });

  it('ls lists names; -l writes ls -l lines', () => {
    assert.equal(cli('ls', file).stdout, 'bin\ndangling\ndeep\ndev\nempty\nlink\nnames\nsgid\ntmp\n');
    const long = cli('ls', '-l', file, '/').stdout.split('\n');
    assert.match(long.find((l) => l.endsWith(' link -> bin/sh'))!, /^lrwxrwxrwx 1 0 0 +6 2023-11-14 22:13 link -> bin\/sh$/);
    assert.match(long.find((l) => l.endsWith(' tmp'))!, /^drwxrwxrwt 2 0 0 +0 2023-11-14 22:13 tmp$/);
    const dev = cli('ls', '-l', file, 'dev').stdout;
    assert.match(dev, /^brw-r--r-- 1 0 0 4095, 1048575 2023-11-14 22:13 big$/m);
    assert.match(dev, /^crw-rw-rw- 1 0 0 +1, 3 2023-11-14 22:13 null$/m);
    assert.match(cli('ls', '-l', file, 'bin/sh').stdout, /^-rwsr-xr-x 1 1000 1001 1234 1969-12-31 00:00 bin\/sh\n$/);
  });

  it('exits with the documented codes', () => {
    const missing = cli('ls', file, 'no/such');
    assert.equal(missing.status, EXIT_CODES.ENOENT);
    assert.match(missing.stderr, /no such file or directory/);
    assert.equal(cli('inspect', path.join(dir, 'nope.clip')).status, EXIT_CODES.ENOENT);
    const foreign = path.join(dir, 'foreign.clip');
    fs.writeFileSync(foreign, 'not an archive at all, just text');
    const r = cli('inspect', foreign);
    assert.equal(r.status, EXIT_CODES.ECORRUPT);
    assert.match(r.stderr, /not a clip archive \(ECORRUPT\)/);
    assert.equal(cli('ls').status, EXIT_CODES.EINVAL);
  });
});
