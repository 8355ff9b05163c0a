/**
 * The rich multi-layer test image, built with real tools, shared by the
 * indexing tests (archive vs `umoci unpack`) and the mount tests (mounted
 * tree vs `umoci unpack`). Two layers by `umoci repack` (hardlinks, a fifo,
 * char and block devices, setuid/setgid/sticky modes, symlinks, long and
 * non-ASCII names, xattrs including security.capability, an empty file,
 * then deletions of files and directories, file<->directory replacements
 * and the removal of a hardlink group's first name), an empty layer, and a
 * layer written with Python's tarfile for what umoci never writes (an opaque
 * whiteout placed after the entries it keeps, a hardlink to a lower layer's
 * file, nanosecond mtimes, whiteouts of missing paths). Also the helpers
 * that edit OCI layouts by hand.
 */
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { sh } from './fixtures';
import { writeBlob } from './registry-harness';

const REF_NAME = 'org.opencontainers.image.ref.name';

/** One path of a root filesystem, as the walker and the archive/mount tests describe it. */
export interface PathRecord {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtimeNs: string;
  ino: number;
  size?: number;
  sha256?: string;
  target?: string;
  rdev?: [number, number];
  xattrs: Record<string, string>;
}

const WALK_PY = String.raw`
import hashlib, json, os, stat, sys
root = sys.argv[1]
hash_files = sys.argv[2] == '1'
out = {}
def record(p, rel):
    st = os.lstat(p)
    m = st.st_mode
    kind = {stat.S_IFREG: 'file', stat.S_IFDIR: 'dir', stat.S_IFLNK: 'symlink', stat.S_IFCHR: 'char',
            stat.S_IFBLK: 'block', stat.S_IFIFO: 'fifo'}[stat.S_IFMT(m)]
    r = {'type': kind, 'mode': m & 0o7777, 'uid': st.st_uid, 'gid': st.st_gid, 'nlink': st.st_nlink,
         'mtimeNs': str(st.st_mtime_ns), 'ino': st.st_ino, 'xattrs': {}}
    if kind == 'file':
        r['size'] = st.st_size
        if hash_files:
            h = hashlib.sha256()
            with open(p, 'rb') as f:
                for chunk in iter(lambda: f.read(1 << 20), b''):
                    h.update(chunk)
            r['sha256'] = h.hexdigest()
    if kind == 'symlink':
        r['target'] = os.readlink(p)
        r['size'] = st.st_size
    if kind in ('char', 'block'):
        r['rdev'] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    if kind != 'symlink':
        for name in sorted(os.listxattr(p, follow_symlinks=False)):
            r['xattrs'][name] = os.getxattr(p, name, follow_symlinks=False).hex()
    out[rel] = r
record(root, '')
for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
        p = os.path.join(dirpath, name)
        record(p, os.path.relpath(p, root))
json.dump(out, sys.stdout)
`;

/** Every entry under `root` (root itself is ''), asynchronously. */
export function walkTree(root: string, hashFiles = true): Promise<Record<string, PathRecord>> {
  return new Promise((resolve, reject) => {
    execFile('python3', ['-c', WALK_PY, root, hashFiles ? '1' : '0'], { maxBuffer: 1 << 30, timeout: 300000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`walking ${root}: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as Record<string, PathRecord>);
    });
  });
}


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


const EMPTY_PY = String.raw`
import io, sys, tarfile
buf = io.BytesIO()
tarfile.open(fileobj=buf, mode='w').close()
sys.stdout.buffer.write(buf.getvalue())
`;


export function python(script: string, ...args: string[]): Buffer {
  const r = spawnSync('python3', ['-c', script, ...args], { maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`python3 failed: ${r.stderr.toString()}`);
  return r.stdout;
}

export interface Json {
  [key: string]: unknown;
}

export function readJsonBlob(layout: string, digest: string): Json {
  return JSON.parse(fs.readFileSync(path.join(layout, 'blobs', 'sha256', digest.slice(7)), 'utf8')) as Json;
}

/** Rewrites the image `tag` of `layout`: mutate(manifest, config) may change both; new blobs are written. */
export function rewriteImage(layout: string, tag: string, mutate: (manifest: Json, config: Json) => void): void {
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

/** Appends a layer (plain tar bytes, stored gzip'd unless `gzip` is false) to image `tag`; returns its descriptor. */
export function appendLayer(layout: string, tag: string, tar: Buffer, gzip = true): Json {
  const blob = gzip
    ? writeBlob(layout, zlib.gzipSync(tar), 'application/vnd.oci.image.layer.v1.tar+gzip')
    : writeBlob(layout, tar, 'application/vnd.oci.image.layer.v1.tar');
  const diffId = `sha256:${createHash('sha256').update(tar).digest('hex')}`;
  rewriteImage(layout, tag, (manifest, config) => {
    (manifest.layers as Json[]).push(blob);
    ((config.rootfs as Json).diff_ids as string[]).push(diffId);
    (config.history as Json[] | undefined)?.push({ created_by: 'clip-native test: crafted layer' });
  });
  return blob;
}

export function layerBlobPath(layout: string, digest: string): string {
  return path.join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length));
}

/** Builds the rich test image in `work`/layout under tag "t" (see the file comment); returns the layout. */
export function buildRichImage(work: string): string {
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


/** The 100k-entry image: where it lives and what it holds. */
export interface ManyFilesImage {
  /** OCI layout directory; the image is tagged "t". */
  layout: string;
  /** `umoci unpack` of it: the oracle. */
  rootfs: string;
  /** Paths in the tree, the root included. */
  entries: number;
}

const MANY_DIRS = 100;
const MANY_FILES_PER_DIR = 1000;

/**
 * A one-layer image, packed by `umoci repack`, of 100 directories, each with
 * 1,000 small files (distinct contents), a symlink and a hardlink: 100,301
 * entries. Building and unpacking it takes about a minute, so it is built
 * once into the fixtures directory (under a temporary name, then renamed:
 * a present directory is always complete) and reused.
 */
export function manyFilesImage(fixtures: string): ManyFilesImage {
  const dir = path.join(fixtures, 'many-files-v1');
  const entries = 1 + MANY_DIRS * (1 + MANY_FILES_PER_DIR + 2);
  const image = { layout: path.join(dir, 'layout'), rootfs: path.join(dir, 'unpacked', 'rootfs'), entries };
  if (fs.existsSync(dir)) return image;
  const temp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(temp, { recursive: true, force: true });
  const layout = path.join(temp, 'layout');
  const bundle = path.join(temp, 'bundle');
  sh(`umoci init --layout '${layout}' && umoci new --image '${layout}:t'`);
  sh(`umoci unpack --rootless=false --image '${layout}:t' '${bundle}' >/dev/null`);
  python(
    `
import os, sys
root, dirs, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for d in range(dirs):
    dd = os.path.join(root, 'd%03d' % d)
    os.makedirs(dd)
    for i in range(files):
        with open(os.path.join(dd, 'f%04d.txt' % i), 'w') as f:
            f.write('file %d of directory %d\\n' % (i, d))
    os.symlink('f0000.txt', os.path.join(dd, 'link'))
    os.link(os.path.join(dd, 'f0001.txt'), os.path.join(dd, 'hardlink'))
`,
    path.join(bundle, 'rootfs'),
    String(MANY_DIRS),
    String(MANY_FILES_PER_DIR),
  );
  sh(`umoci repack --image '${layout}:t' '${bundle}' >/dev/null`);
  fs.rmSync(bundle, { recursive: true, force: true });
  sh(`umoci unpack --rootless=false --image '${layout}:t' '${path.join(temp, 'unpacked')}' >/dev/null`);
  fs.renameSync(temp, dir);
  return image;
}
