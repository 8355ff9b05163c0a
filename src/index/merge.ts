/**
 * Merging an image's layers into the one tree a container sees, with the OCI
 * image spec's rules (image-spec layer.md, "Applying Changesets"):
 *
 *   - layers apply bottom-up; a later entry replaces an earlier one at the
 *     same path, except that a directory over a directory merges (the upper
 *     one's attributes win, the children of both stay); replacing a
 *     directory with anything else drops its whole subtree;
 *   - `.wh.NAME` removes NAME (and everything under it) from the LOWER
 *     layers; `.wh..wh..opq` hides every lower-layer child of its directory.
 *     Both only ever see lower layers, so each layer's whiteouts are applied
 *     first, before any of its own entries: the result does not depend on
 *     where in the tar a whiteout sits. Whiteouts never appear in the tree,
 *     and one naming a path that does not exist is a no-op;
 *   - hardlinks share one node with their target (found in the tree as it
 *     stands when the link is met, whichever layer put it there); the node
 *     lives as long as any of its names does, so removing or replacing the
 *     first name leaves the others with the content;
 *   - missing parent directories are synthesised (0755, root, mtime 0);
 *     parent components that are symlinks are followed inside the root, as
 *     containerd and umoci do when they apply a layer (securejoin rules:
 *     `..` stops at the root, at most 40 links per path).
 *
 * Paths are normalised ('./', '/', '//' and trailing '/' dropped); a path
 * with a '..' component is refused with ECORRUPT naming the layer and the
 * path, so nothing can ever land outside the root. Components longer than
 * 255 bytes cannot exist on Linux and are refused with EUNSUPPORTED.
 *
 * The tree is a trie of nodes with a Map of children per directory, so each
 * entry costs O(depth) map lookups and dropping a subtree is O(1); link
 * counts are worked out once at the end (see countLinks), not maintained.
 */
import { pathByteLength } from '../path-bytes';
import { ClipError } from '../errors';
import type { TarEntry } from '../engine/layer';

/** What a merged node is: the tar entry types, minus 'hardlink' (a link is a second name of a node). */
export type NodeType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo';

/** One node of the merged tree (an inode: hardlinked names share the object). */
export interface MergedNode {
  type: NodeType;
  /** Permission bits including setuid/setgid/sticky (07777). */
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** Regular files: content bytes. 0 otherwise. */
  size: number;
  /** Regular files: index of the layer (bottom = 0) holding the content. -1 otherwise. */
  layer: number;
  /** Regular files: uncompressed offset of the content in that layer's tar stream. */
  dataOffset: number;
  devmajor: number;
  devminor: number;
  /** Symlinks: the target, as stored. '' otherwise. */
  linkTarget: string;
  xattrs: Record<string, Buffer>;
  /** Directories: children by name. null for every other type. */
  children: Map<string, MergedNode> | null;
}

/** One layer's entries, and how errors name the layer (its digest). */
export interface MergeLayerInput {
  name: string;
  entries: readonly TarEntry[];
}

export interface MergeStats {
  /** Tar entries seen, whiteouts included. */
  entries: number;
  /** `.wh.NAME` entries, and how many of them removed something. */
  whiteouts: number;
  whiteoutsApplied: number;
  /** `.wh..wh..opq` entries. */
  opaques: number;
  /** Directories created because an entry needed them. */
  synthesized: number;
}

export interface MergedTree {
  root: MergedNode;
  stats: MergeStats;
}

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE = '.wh..wh..opq';
/** Linux's limit on symlinks followed while resolving one path. */
const MAX_SYMLINKS = 40;
const MAX_NAME_BYTES = 255;

/** A fresh directory node with the attributes the spec leaves to us (0755, root, mtime 0). */
export function syntheticDir(): MergedNode {
  return {
    type: 'dir',
    mode: 0o755,
    uid: 0,
    gid: 0,
    mtimeSec: 0,
    mtimeNsec: 0,
    size: 0,
    layer: -1,
    dataOffset: 0,
    devmajor: 0,
    devminor: 0,
    linkTarget: '',
    xattrs: {},
    children: new Map(),
  };
}

/**
 * Splits a tar path into its normalised components: '' and '.' dropped
 * ('./a', '/a', 'a//b', 'a/' and 'a/./b' all name the same thing), '..'
 * refused. [] is the root.
 * Errors: ECORRUPT for a '..' component, EUNSUPPORTED for a component longer
 * than 255 bytes. `where` names the layer in the message.
 */
export function pathComponents(raw: string, where: string): string[] {
  // Fast path for what tars carry ("./usr/bin/ls", "usr/lib/", "/etc"): strip
  // the leading "./" and "/" and trailing "/", split once, check the parts.
  let start = 0;
  let end = raw.length;
  for (;;) {
    if (raw.charCodeAt(start) === 0x2f) start++;
    else if (raw.charCodeAt(start) === 0x2e && raw.charCodeAt(start + 1) === 0x2f) start += 2;
    else break;
  }
  while (end > start && raw.charCodeAt(end - 1) === 0x2f) end--;
  if (start === end || (end - start === 1 && raw.charCodeAt(start) === 0x2e)) return [];
  const parts = (start === 0 && end === raw.length ? raw : raw.slice(start, end)).split('/');
  let clean = true;
  for (const p of parts) {
    if (p === '' || p === '.' || p === '..' || p.length > MAX_NAME_BYTES / 3) {
      clean = false;
      break;
    }
  }
  if (clean) return parts;
  const out: string[] = [];
  for (const p of parts) {
    if (p === '' || p === '.') continue;
    if (p === '..') throw new ClipError('ECORRUPT', `${where}: entry "${raw}" has a ".." component (it would escape the root)`);
    if (p.length > MAX_NAME_BYTES / 3 && pathByteLength(p) > MAX_NAME_BYTES) {
      throw new ClipError('EUNSUPPORTED', `${where}: entry "${raw}" has a name longer than ${MAX_NAME_BYTES} bytes`);
    }
    out.push(p);
  }
  return out;
}

/** The normalised form of a tar path ('' for the root). Errors: as pathComponents. */
export function normalizePath(raw: string, where = 'path'): string {
  return pathComponents(raw, where).join('/');
}

/**
 * Merges `layers` (bottom first) into one tree; see the file comment for the
 * rules. The entries are not modified; file nodes point into them by
 * (layer index, dataOffset, size).
 * Errors: ECORRUPT (a '..' path, a hardlink to a missing path or to a
 * directory, a root entry that is not a directory, a symlink loop in a
 * parent path), EUNSUPPORTED (a name longer than 255 bytes). Messages name
 * the layer and the entry.
 */
export function mergeLayers(layers: readonly MergeLayerInput[]): MergedTree {
  const merger = new Merger();
  layers.forEach((layer, i) => merger.applyLayer(layer, i));
  return { root: merger.root, stats: merger.stats };
}

class Merger {
  readonly root: MergedNode = syntheticDir();
  readonly stats: MergeStats = { entries: 0, whiteouts: 0, whiteoutsApplied: 0, opaques: 0, synthesized: 0 };
  /**
   * The directory the previous entry went into, and its path: tar entries of
   * one directory arrive together, so most entries skip the walk from the
   * root. Dropped whenever a directory or symlink leaves the tree, since the
   * same path could then resolve elsewhere.
   */
  private lastParentParts: string[] | undefined;
  private lastParent: MergedNode | undefined;

  applyLayer(layer: MergeLayerInput, index: number): void {
    const where = `layer ${index} (${layer.name})`;
    this.dropCaches();
    // Phase 1: whiteouts, against the lower layers only.
    const regular: TarEntry[] = [];
    const regularParts: string[][] = [];
    const opaqueDirs: string[][] = [];
    for (const entry of layer.entries) {
      this.stats.entries++;
      const parts = pathComponents(entry.path, where);
      const name = parts.length ? parts[parts.length - 1] : '';
      if (!name.startsWith(WHITEOUT_PREFIX)) {
        regular.push(entry);
        regularParts.push(parts);
        continue;
      }
      const dirParts = parts.slice(0, -1);
      if (name === OPAQUE) {
        this.stats.opaques++;
        opaqueDirs.push(dirParts);
        const dir = this.resolveDir(dirParts, false, where, entry.path);
        if (dir) {
          if (dir.children!.size) this.dropCaches();
          dir.children = new Map();
        }
        continue;
      }
      if (name.startsWith(`${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`)) continue; // AUFS metadata (.wh..wh.plnk etc.): not content
      this.stats.whiteouts++;
      const target = name.slice(WHITEOUT_PREFIX.length);
      if (target === '' || target === '.' || target === '..') {
        throw new ClipError('ECORRUPT', `${where}: whiteout "${entry.path}" names no file`);
      }
      const dir = this.resolveDir(dirParts, false, where, entry.path);
      const victim = dir?.children!.get(target);
      if (dir && victim) {
        dir.children!.delete(target);
        if (victim.type === 'dir' || victim.type === 'symlink') this.dropCaches();
        this.stats.whiteoutsApplied++;
      }
    }
    // Phase 2: this layer's own entries, in tar order. An opaque marker also
    // says its directory exists in this layer.
    for (const parts of opaqueDirs) this.resolveDir(parts, true, where, parts.join('/'));
    for (let i = 0; i < regular.length; i++) this.addEntry(regular[i], regularParts[i], index, where);
  }

  private dropCaches(): void {
    this.lastParentParts = undefined;
    this.lastParent = undefined;
  }

  /** The directory holding `parts` (all but the last component), made if missing. */
  private parentOf(parts: string[], where: string, raw: string): MergedNode {
    const depth = parts.length - 1;
    const last = this.lastParentParts;
    if (last && last.length === depth) {
      let same = true;
      for (let i = depth - 1; i >= 0; i--) {
        if (last[i] !== parts[i]) {
          same = false;
          break;
        }
      }
      if (same) return this.lastParent!;
    }
    const parent = this.resolveDir(parts.slice(0, depth), true, where, raw)!;
    this.lastParentParts = parts.slice(0, depth);
    this.lastParent = parent;
    return parent;
  }

  private addEntry(entry: TarEntry, parts: string[], layer: number, where: string): void {
    if (parts.length === 0) {
      if (entry.type !== 'dir') throw new ClipError('ECORRUPT', `${where}: the root entry "${entry.path}" is a ${entry.type}, not a directory`);
      setAttributes(this.root, entry);
      return;
    }
    const name = parts[parts.length - 1];
    const parent = this.parentOf(parts, where, entry.path);
    const children = parent.children!;
    const existing = children.get(name);

    if (entry.type === 'hardlink') {
      const target = this.resolveLinkTarget(entry, where);
      if (existing === target) return;
      if (existing && (existing.type === 'dir' || existing.type === 'symlink')) this.dropCaches();
      children.set(name, target);
      return;
    }
    if (entry.type === 'dir' && existing && existing.type === 'dir') {
      setAttributes(existing, entry); // a directory over a directory merges
      return;
    }
    if (existing && (existing.type === 'dir' || existing.type === 'symlink')) this.dropCaches();
    const node: MergedNode = {
      type: entry.type,
      mode: entry.mode & 0o7777,
      uid: entry.uid,
      gid: entry.gid,
      mtimeSec: entry.mtimeSec,
      mtimeNsec: entry.mtimeNsec,
      size: entry.type === 'file' ? entry.size : 0,
      layer: entry.type === 'file' ? layer : -1,
      dataOffset: entry.type === 'file' ? entry.dataOffset : 0,
      devmajor: entry.type === 'char' || entry.type === 'block' ? entry.devmajor : 0,
      devminor: entry.type === 'char' || entry.type === 'block' ? entry.devminor : 0,
      linkTarget: entry.type === 'symlink' ? entry.linkTarget : '',
      xattrs: entry.xattrs,
      children: entry.type === 'dir' ? new Map() : null,
    };
    children.set(name, node);
  }

  /** The node a hardlink entry names. Errors: ECORRUPT for a missing or directory target. */
  private resolveLinkTarget(entry: TarEntry, where: string): MergedNode {
    const parts = pathComponents(entry.linkTarget, where);
    const dir = parts.length ? this.resolveDir(parts.slice(0, -1), false, where, entry.linkTarget) : undefined;
    const target = dir?.children!.get(parts[parts.length - 1]);
    if (!target) {
      throw new ClipError('ECORRUPT', `${where}: hardlink "${entry.path}" points to "${entry.linkTarget}", which does not exist`);
    }
    if (target.type === 'dir') {
      throw new ClipError('ECORRUPT', `${where}: hardlink "${entry.path}" points to the directory "${entry.linkTarget}"`);
    }
    return target;
  }

  /**
   * Walks `parts` from the root to a directory, following symlinks inside
   * the root. With `create`, missing directories are synthesised and a
   * non-directory in the way is replaced by one; without, undefined means
   * the directory does not exist.
   * Errors: ECORRUPT for a symlink loop (more than 40 links).
   */
  private resolveDir(parts: readonly string[], create: boolean, where: string, raw: string): MergedNode | undefined {
    // `stack` holds the directories from the root to the current one, for
    // '..' in symlink targets; `pending` the components still to walk (next
    // one last), used once a symlink is met.
    const stack: MergedNode[] = [this.root];
    let pending: string[] | undefined;
    let links = 0;
    for (let i = 0; pending ? pending.length > 0 : i < parts.length; i++) {
      const name = pending ? pending.pop()! : parts[i];
      const dir = stack[stack.length - 1];
      if (name === '' || name === '.') continue;
      if (name === '..') {
        if (stack.length > 1) stack.pop();
        continue;
      }
      let child = dir.children!.get(name);
      if (child && child.type === 'symlink') {
        if (++links > MAX_SYMLINKS) throw new ClipError('ECORRUPT', `${where}: too many levels of symlinks resolving "${raw}"`);
        pending ??= parts.slice(i + 1).reverse();
        if (child.linkTarget.startsWith('/')) stack.length = 1;
        for (const part of child.linkTarget.split('/').reverse()) pending.push(part);
        continue;
      }
      if (!child || child.type !== 'dir') {
        if (!create) return undefined;
        if (child) this.dropCaches();
        child = syntheticDir();
        this.stats.synthesized++;
        dir.children!.set(name, child);
      }
      stack.push(child);
    }
    return stack[stack.length - 1];
  }
}

function setAttributes(dir: MergedNode, entry: TarEntry): void {
  dir.mode = entry.mode & 0o7777;
  dir.uid = entry.uid;
  dir.gid = entry.gid;
  dir.mtimeSec = entry.mtimeSec;
  dir.mtimeNsec = entry.mtimeNsec;
  dir.xattrs = entry.xattrs;
}

/**
 * Link counts of the final tree: for each node, the number of names it has
 * (hardlinks), or for a directory 2 + its subdirectories. Returned as a Map
 * because nodes are shared between names.
 */
export function countLinks(root: MergedNode): Map<MergedNode, number> {
  const names = new Map<MergedNode, number>();
  const dirs: MergedNode[] = [root];
  names.set(root, 2);
  while (dirs.length) {
    const dir = dirs.pop()!;
    for (const child of dir.children!.values()) {
      if (child.type === 'dir') {
        names.set(child, 2);
        names.set(dir, names.get(dir)! + 1);
        dirs.push(child);
      } else {
        names.set(child, (names.get(child) ?? 0) + 1);
      }
    }
  }
  return names;
}
