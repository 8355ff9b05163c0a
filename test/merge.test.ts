/**
 * mergeLayers on synthetic entry lists, one test per OCI rule: path
 * normalisation and refusal of escaping paths, whiteouts of files and
 * subtrees (lower layers only), opaque directories whatever the order of the
 * marker in its layer, file/dir replacement both ways, directory merging,
 * hardlink groups that survive the removal of their first name, synthesised
 * parents, symlinked parents, and the 100k-entry performance budget. Also
 * the writer's determinism and name order.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ClipError } from '../src/errors';
import type { TarEntry } from '../src/engine/layer';
import { countLinks, mergeLayers, MergedNode, normalizePath } from '../src/index/merge';
import { sortedNames, writeArchive } from '../src/archive/writer';
import { tarEntry } from './fixtures';

const e = tarEntry;

function merge(...layers: TarEntry[][]) {
  return mergeLayers(layers.map((entries, i) => ({ name: `sha256:layer${i}`, entries })));
}

/** The node at a normalised path, following no symlinks; undefined if absent. */
function at(root: MergedNode, path: string): MergedNode | undefined {
  let node: MergedNode | undefined = root;
  for (const part of path.split('/').filter(Boolean)) {
    node = node?.children?.get(part);
  }
  return node;
}

/** Every path in the tree (sorted), dirs with a trailing '/'. */
function paths(root: MergedNode): string[] {
  const out: string[] = [];
  const walk = (node: MergedNode, prefix: string) => {
    for (const [name, child] of node.children!) {
      const p = prefix ? `${prefix}/${name}` : name;
      out.push(child.type === 'dir' ? `${p}/` : p);
      if (child.type === 'dir') walk(child, p);
    }
  };
  walk(root, '');
  return out.sort();
}

function throwsCode(fn: () => unknown, code: string, pattern?: RegExp) {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ClipError, `expected ClipError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

describe('merge: paths', () => {
  it('normalises ./, /, //, trailing / and . components to one path', () => {
    const { root } = merge([e('./a/', 'dir'), e('/a//b', 'file', { size: 3 }), e('a/./c/', 'dir'), e('./a/c//d')]);
    assert.deepEqual(paths(root), ['a/', 'a/b', 'a/c/', 'a/c/d']);
    assert.equal(normalizePath('./x//y/./z/'), 'x/y/z');
    assert.equal(normalizePath('./'), '');
    assert.equal(normalizePath('/'), '');
  });

  it('refuses any ".." component with ECORRUPT naming the layer and the path', () => {
    for (const bad of ['../x', 'a/../../etc/passwd', '/../x', './..', 'a/..', 'a/b/../c']) {
      throwsCode(() => merge([e('a/', 'dir')], [e(bad)]), 'ECORRUPT', new RegExp(`layer 1 \\(sha256:layer1\\).*${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    }
    // Also in a hardlink target, a whiteout's directory, and a whiteout name.
    throwsCode(() => merge([e('f')], [e('h', 'hardlink', { linkTarget: '../f' })]), 'ECORRUPT');
    throwsCode(() => merge([e('f')], [e('../.wh.f')]), 'ECORRUPT');
    throwsCode(() => merge([e('f')], [e('a/.wh...')]), 'ECORRUPT');
  });

  it('refuses names longer than 255 bytes, accepts long paths of shorter names', () => {
    const long = `${'d'.repeat(200)}/${'e'.repeat(200)}/${'é'.repeat(127)}`; // 401 + 254 bytes
    const { root } = merge([e(long)]);
    assert.equal(at(root, long)?.type, 'file');
    throwsCode(() => merge([e(`a/${'é'.repeat(128)}`)]), 'EUNSUPPORTED', /longer than 255 bytes/);
  });

  it('takes the root attributes from a "." or "./" entry, else synthesises them', () => {
    assert.equal(merge([e('a')]).root.mode, 0o755);
    const { root } = merge([e('./', 'dir', { mode: 0o700, uid: 7, mtimeSec: 99 }), e('a')], [e('.', 'dir', { mode: 0o750, uid: 8 })]);
    assert.deepEqual([root.mode, root.uid], [0o750, 8]);
    throwsCode(() => merge([e('.', 'file')]), 'ECORRUPT', /root entry/);
  });
});

describe('merge: whiteouts', () => {
  it('.wh.NAME removes a file, and a directory with its whole subtree', () => {
    const lower = [e('a/', 'dir'), e('a/b/', 'dir'), e('a/b/c'), e('a/b/d/', 'dir'), e('a/b/d/e'), e('a/keep'), e('top')];
    const { root, stats } = merge(lower, [e('a/.wh.b'), e('.wh.top')]);
    assert.deepEqual(paths(root), ['a/', 'a/keep']);
    assert.equal(stats.whiteoutsApplied, 2);
  });

  it('hides lower layers only: the same layer may re-add the name, in any order', () => {
    for (const upper of [
      [e('.wh.x'), e('x', 'file', { size: 5, dataOffset: 1024 })],
      [e('x', 'file', { size: 5, dataOffset: 1024 }), e('.wh.x')],
    ]) {
      const { root } = merge([e('x', 'file', { size: 1 }), e('x2')], upper);
      assert.equal(at(root, 'x')?.layer, 1);
      assert.equal(at(root, 'x')?.size, 5);
      assert.ok(at(root, 'x2'));
    }
  });

  it('never shows whiteout entries, and a whiteout of something missing is a no-op', () => {
    const { root, stats } = merge([e('a/', 'dir'), e('f')], [e('.wh.nothing'), e('a/.wh.nothing'), e('missing/.wh.x'), e('.wh..wh.plnk/', 'dir')]);
    assert.deepEqual(paths(root), ['a/', 'f']);
    assert.equal(at(root, 'missing'), undefined, 'a whiteout does not create its directory');
    assert.equal(stats.whiteouts, 3);
    assert.equal(stats.whiteoutsApplied, 0);
  });

  it('a whiteout in the bottom layer removes nothing and never appears', () => {
    assert.deepEqual(paths(merge([e('.wh.a'), e('b')]).root), ['b']);
  });

  it('.wh..wh..opq hides every lower child but keeps this layer\'s entries, wherever the marker sits', () => {
    const lower = [e('d/', 'dir'), e('d/old1'), e('d/sub/', 'dir'), e('d/sub/old2'), e('other')];
    const upperEntries = [e('d/', 'dir', { mode: 0o700 }), e('d/new1'), e('d/sub2/', 'dir'), e('d/sub2/new2'), e('d/.wh..wh..opq')];
    // Every rotation of the upper layer's order gives the same tree.
    for (let r = 0; r < upperEntries.length; r++) {
      const upper = [...upperEntries.slice(r), ...upperEntries.slice(0, r)];
      const { root, stats } = merge(lower, upper);
      assert.deepEqual(paths(root), ['d/', 'd/new1', 'd/sub2/', 'd/sub2/new2', 'other'], `rotation ${r}`);
      assert.equal(at(root, 'd')?.mode, 0o700);
      assert.equal(stats.opaques, 1);
    }
  });

  it('an opaque marker alone leaves an empty directory; a later layer sees it normally', () => {
    const { root } = merge([e('d/', 'dir'), e('d/x')], [e('d/.wh..wh..opq')], [e('d/y')]);
    assert.deepEqual(paths(root), ['d/', 'd/y']);
    // An opaque marker for a directory no lower layer has creates it.
    assert.deepEqual(paths(merge([e('f')], [e('n/.wh..wh..opq')]).root), ['f', 'n/']);
  });
});

describe('merge: replacement', () => {
  it('a file replaces a directory (its subtree goes), a directory replaces a file', () => {
    const lower = [e('was-dir/', 'dir'), e('was-dir/a'), e('was-dir/b/', 'dir'), e('was-dir/b/c'), e('was-file', 'file', { size: 9 })];
    const upper = [e('was-dir', 'file', { size: 2 }), e('was-file/', 'dir'), e('was-file/inside')];
    const { root } = merge(lower, upper);
    assert.deepEqual(paths(root), ['was-dir', 'was-file/', 'was-file/inside']);
    assert.equal(at(root, 'was-dir')?.size, 2);
    // And back again in a third layer.
    const third = merge(lower, upper, [e('was-dir/', 'dir'), e('was-dir/z')]);
    assert.deepEqual(paths(third.root), ['was-dir/', 'was-dir/z', 'was-file/', 'was-file/inside']);
  });

  it('a directory over a directory merges children and takes the upper attributes', () => {
    const x = { 'user.a': Buffer.from('lower') };
    const y = { 'user.b': Buffer.from('upper') };
    const { root } = merge([e('d/', 'dir', { mode: 0o755, uid: 1, mtimeSec: 5, xattrs: x }), e('d/a')], [e('d/', 'dir', { mode: 0o1777, uid: 2, gid: 3, mtimeSec: 6, mtimeNsec: 7, xattrs: y }), e('d/b')]);
    const d = at(root, 'd')!;
    assert.deepEqual(paths(root), ['d/', 'd/a', 'd/b']);
    assert.deepEqual([d.mode, d.uid, d.gid, d.mtimeSec, d.mtimeNsec], [0o1777, 2, 3, 6, 7]);
    assert.deepEqual(Object.keys(d.xattrs), ['user.b']);
  });

  it('a later entry replaces an earlier one at the same path, in the same layer too', () => {
    const { root } = merge([e('f', 'file', { size: 1 }), e('f', 'symlink', { linkTarget: 'elsewhere' })], [e('g', 'fifo'), e('g', 'file', { size: 3 })]);
    assert.equal(at(root, 'f')?.type, 'symlink');
    assert.equal(at(root, 'g')?.type, 'file');
  });

  it('a directory entry replaces a symlink of the same name (the last component is never followed)', () => {
    const { root } = merge([e('usr/lib/', 'dir'), e('usr/lib/x'), e('lib', 'symlink', { linkTarget: 'usr/lib' })], [e('lib/', 'dir'), e('lib/y')]);
    assert.equal(at(root, 'lib')?.type, 'dir');
    assert.deepEqual(paths(root), ['lib/', 'lib/y', 'usr/', 'usr/lib/', 'usr/lib/x']);
  });
});

describe('merge: hardlinks', () => {
  it('names of one file share one node; nlink counts the names', () => {
    const { root } = merge([e('a', 'file', { size: 4, dataOffset: 1536, mode: 0o4755 }), e('d/b', 'hardlink', { linkTarget: 'a' }), e('c', 'hardlink', { linkTarget: './d/b' })]);
    const a = at(root, 'a')!;
    assert.equal(at(root, 'd/b'), a);
    assert.equal(at(root, 'c'), a);
    assert.equal(countLinks(root).get(a), 3);
    assert.equal(a.mode, 0o4755);
  });

  it('the content lives on when the first name is whited out or replaced', () => {
    const lower = [e('orig', 'file', { size: 4, dataOffset: 1536 }), e('second', 'hardlink', { linkTarget: 'orig' }), e('third', 'hardlink', { linkTarget: 'orig' })];
    const { root } = merge(lower, [e('.wh.orig'), e('third', 'file', { size: 7, dataOffset: 512 })]);
    const second = at(root, 'second')!;
    assert.deepEqual([second.layer, second.dataOffset, second.size], [0, 1536, 4]);
    assert.equal(at(root, 'orig'), undefined);
    assert.notEqual(at(root, 'third'), second);
    const links = countLinks(root);
    assert.equal(links.get(second), 1);
    assert.equal(links.get(at(root, 'third')!), 1);
  });

  it('a hardlink may name a lower layer\'s file (lenient), or a name removed subtrees used to share', () => {
    const { root } = merge([e('lib/libc.so'), e('dir/x', 'hardlink', { linkTarget: 'lib/libc.so' })], [e('dir/.wh.x'), e('new', 'hardlink', { linkTarget: 'lib/libc.so' })]);
    assert.equal(at(root, 'new'), at(root, 'lib/libc.so'));
    assert.equal(countLinks(root).get(at(root, 'new')!), 2);
    // A hardlinked file inside a removed directory: the outside name keeps it, nlink drops.
    const t = merge([e('d/f'), e('out', 'hardlink', { linkTarget: 'd/f' })], [e('.wh.d')]);
    assert.equal(countLinks(t.root).get(at(t.root, 'out')!), 1);
  });

  it('refuses a hardlink to a missing path or to a directory', () => {
    throwsCode(() => merge([e('a')], [e('h', 'hardlink', { linkTarget: 'nope' })]), 'ECORRUPT', /layer 1.*"h".*does not exist/);
    throwsCode(() => merge([e('d/', 'dir'), e('h', 'hardlink', { linkTarget: 'd' })]), 'ECORRUPT', /directory/);
  });

  it('a hardlink to itself keeps the node', () => {
    const { root } = merge([e('a', 'file', { size: 2 })], [e('a', 'hardlink', { linkTarget: 'a' })]);
    assert.equal(at(root, 'a')?.size, 2);
  });
});

describe('merge: parents', () => {
  it('synthesises missing parents as 0755 root:root mtime 0', () => {
    const { root, stats } = merge([e('x/y/z', 'file', { uid: 5 })]);
    for (const p of ['x', 'x/y']) {
      const d = at(root, p)!;
      assert.deepEqual([d.type, d.mode, d.uid, d.gid, d.mtimeSec, d.mtimeNsec], ['dir', 0o755, 0, 0, 0, 0]);
    }
    assert.equal(stats.synthesized, 2);
    // A later entry for the directory sets its real attributes.
    const later = merge([e('x/y/z'), e('x/', 'dir', { mode: 0o711, mtimeSec: 42 })]);
    assert.deepEqual([at(later.root, 'x')!.mode, at(later.root, 'x')!.mtimeSec], [0o711, 42]);
  });

  it('follows symlinked parents inside the root, as containerd and umoci do', () => {
    const lower = [e('usr/lib/', 'dir'), e('lib', 'symlink', { linkTarget: 'usr/lib' }), e('abs', 'symlink', { linkTarget: '/usr/lib' }), e('up', 'symlink', { linkTarget: '../../../usr' })];
    const { root } = merge(lower, [e('lib/a'), e('abs/b'), e('up/c'), e('lib/.wh.a2')]);
    assert.deepEqual(paths(root), ['abs', 'lib', 'up', 'usr/', 'usr/c', 'usr/lib/', 'usr/lib/a', 'usr/lib/b']);
    // A dangling link's target is created; a loop is refused.
    assert.deepEqual(paths(merge([e('dl', 'symlink', { linkTarget: 'made/here' })], [e('dl/f')]).root), ['dl', 'made/', 'made/here/', 'made/here/f']);
    throwsCode(() => merge([e('l1', 'symlink', { linkTarget: 'l2' }), e('l2', 'symlink', { linkTarget: 'l1' })], [e('l1/f')]), 'ECORRUPT', /symlinks/);
  });

  it('a non-directory in the way of a path is replaced by a directory', () => {
    const { root } = merge([e('f', 'file')], [e('f/g')]);
    assert.equal(at(root, 'f')?.type, 'dir');
  });
});

describe('merge: attributes', () => {
  it('keeps every attribute of every type', () => {
    const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');
    const entries = [
      e('suid', 'file', { mode: 0o4755, uid: 1000, gid: 1001, size: 10, dataOffset: 2048, mtimeSec: -1, mtimeNsec: 999999999, xattrs: { 'security.capability': cap } }),
      e('sgid', 'file', { mode: 0o2711 }),
      e('tmp/', 'dir', { mode: 0o1777 }),
      e('null', 'char', { devmajor: 1, devminor: 3, mode: 0o666 }),
      e('sda', 'block', { devmajor: 259, devminor: 1048575 }),
      e('fifo', 'fifo', { mode: 0o600 }),
      e('link', 'symlink', { linkTarget: '../somewhere/ünï' }),
    ];
    const { root } = merge(entries);
    const suid = at(root, 'suid')!;
    assert.deepEqual(
      [suid.mode, suid.uid, suid.gid, suid.size, suid.dataOffset, suid.layer, suid.mtimeSec, suid.mtimeNsec],
      [0o4755, 1000, 1001, 10, 2048, 0, -1, 999999999],
    );
    assert.deepEqual(suid.xattrs['security.capability'], cap);
    assert.equal(at(root, 'sgid')!.mode, 0o2711);
    assert.equal(at(root, 'tmp')!.mode, 0o1777);
    assert.deepEqual([at(root, 'null')!.devmajor, at(root, 'null')!.devminor], [1, 3]);
    assert.deepEqual([at(root, 'sda')!.devmajor, at(root, 'sda')!.devminor], [259, 1048575]);
    assert.equal(at(root, 'fifo')!.type, 'fifo');
    assert.equal(at(root, 'link')!.linkTarget, '../somewhere/ünï');
  });
});

// How fast this is belongs to the benchmark (bench/image.ts); here only that a
// merge of this size is complete and the archive writer accepts it.
describe('merge: 300k entries', () => {
  it('merges two layers of 150k entries each and writes the archive', () => {
    const base: TarEntry[] = [];
    for (let d = 0; d < 1000; d++) {
      base.push(e(`./usr/share/d${d}/`, 'dir'));
      for (let f = 0; f < 150; f++) base.push(e(`./usr/share/d${d}/file-${f}.txt`, 'file', { size: f, dataOffset: 512 * f }));
    }
    const upper: TarEntry[] = [];
    for (let d = 0; d < 1000; d++) {
      if (d % 10 === 0) upper.push(e(`./usr/share/.wh.d${d}`));
      else if (d % 10 === 1) upper.push(e(`./usr/share/d${d}/.wh..wh..opq`));
      for (let f = 0; f < 149; f++) upper.push(e(`./usr/share/d${d}/file-${f}.txt`, 'file', { size: 1 }));
    }
    const tree = merge(base, upper);
    assert.ok(base.length > 150000 && upper.length > 149000);
    assert.equal(tree.stats.entries, base.length + upper.length);
    const { stats } = writeArchive(tree.root, [{ digest: `sha256:${'0'.repeat(64)}`, diffId: `sha256:${'1'.repeat(64)}`, mediaType: 'x', compressedSize: 1, uncompressedSize: 1e9, format: 'gzip', checkpoints: Buffer.alloc(0) }, { digest: `sha256:${'2'.repeat(64)}`, diffId: `sha256:${'3'.repeat(64)}`, mediaType: 'x', compressedSize: 1, uncompressedSize: 1e9, format: 'gzip', checkpoints: Buffer.alloc(0) }], {});
    assert.equal(stats.dirents, paths(tree.root).length);
  });
});

describe('writer: order and determinism', () => {
  it('sorts names by UTF-8 bytes, not UTF-16 code units', () => {
    const names = ['b', 'a', '\u{1F600}', '\uFF21', 'é', 'A', 'a.b', 'a-b'];
    const sorted = sortedNames(new Map(names.map((n) => [n, 0])));
    const byBytes = [...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    assert.deepEqual(sorted, byBytes);
    // '\uFF21' (EF BC A1) sorts before U+1F600 (F0 9F 98 80) as bytes, after it as UTF-16.
    assert.ok(sorted.indexOf('\uFF21') < sorted.indexOf('\u{1F600}'));
  });

  it('writes the same bytes for the same tree, whatever the order children were added in', () => {
    const layer = { digest: `sha256:${'a'.repeat(64)}`, diffId: `sha256:${'b'.repeat(64)}`, mediaType: 'm', compressedSize: 10, uncompressedSize: 1 << 20, format: 'gzip' as const, checkpoints: Buffer.from('ckpt') };
    const entries = [e('z/', 'dir'), e('z/1'), e('a', 'file', { xattrs: { 'user.z': Buffer.from('1'), 'user.a': Buffer.from('2') } }), e('m', 'symlink', { linkTarget: 'a' }), e('h', 'hardlink', { linkTarget: 'a' })];
    const one = writeArchive(merge(entries).root, [layer], { k: 1 }).bytes;
    const two = writeArchive(merge([...entries.slice(2), ...entries.slice(0, 2)]).root, [layer], { k: 1 }).bytes;
    assert.ok(one.equals(two));
    assert.ok(writeArchive(merge(entries).root, [layer], { k: 1 }).bytes.equals(one));
  });

  it('refuses a file pointing outside its layer and non-sha256 digests', () => {
    const tree = merge([e('f', 'file', { size: 10, dataOffset: 100 })]);
    const layer = { digest: `sha256:${'a'.repeat(64)}`, diffId: `sha256:${'b'.repeat(64)}`, mediaType: 'm', compressedSize: 10, uncompressedSize: 105, format: 'tar' as const, checkpoints: Buffer.alloc(0) };
    throwsCode(() => writeArchive(tree.root, [layer], {}), 'EINVAL', /does not have/);
    throwsCode(() => writeArchive(tree.root, [{ ...layer, uncompressedSize: 200, digest: `sha512:${'a'.repeat(128)}` }], {}), 'EINVAL', /sha256/);
  });
});
