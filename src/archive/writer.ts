/**
 * Writes the `.clip` archive: the merged tree, the layers (digests, sizes,
 * checkpoints) and the image config, in the byte layout of docs/format.md,
 * ready to be mmap'd and served with no decoding.
 *
 * Deterministic by construction, so the same image and settings give the
 * same bytes (and the same inode numbers on every mount): nodes are numbered
 * breadth-first from the root, each directory's children in name-byte order
 * (so a directory's children mostly sit next to each other, which is what
 * `ls -l` touches); directory entries are written in the same order; strings
 * are deduplicated first-use-first; a layer's checkpoints are stored once
 * even when the image lists the layer twice.
 */
import * as zlib from 'node:zlib';
import { ClipError } from '../errors';
import { countLinks, MergedNode } from '../index/merge';
import { pathBytes } from '../path-bytes';
import {
  ARCHIVE_MAGIC,
  ARCHIVE_VERSION,
  DIRENT_SIZE,
  FileTypeBits,
  HEADER_SIZE,
  LAYER_SIZE,
  LAYERS_PREAMBLE,
  LayerFormatCode,
  makedev,
  MAX_FILE_OFFSET,
  MAX_LAYERS,
  MAX_NAME_BYTES,
  NODE_SIZE,
  Section,
  SECTION_ENTRY_SIZE,
  XATTR_SIZE,
} from './format';

/** One layer as the archive records it. */
export interface ArchiveLayerInput {
  /** `sha256:<hex>` of the blob. */
  digest: string;
  /** `sha256:<hex>` of the uncompressed tar stream. */
  diffId: string;
  mediaType: string;
  compressedSize: number;
  uncompressedSize: number;
  format: 'gzip' | 'tar';
  /** The serialized checkpoint index (LayerIndex.checkpoints). */
  checkpoints: Buffer;
}

/** What writeArchive reports besides the bytes. */
export interface ArchiveLayoutStats {
  nodes: number;
  dirents: number;
  xattrs: number;
  /** Bytes of each section, by name. */
  sections: Record<string, number>;
  /** Bytes of directory entry names in STRINGS (length prefixes included). */
  nameBytes: number;
}

const U32_MAX = 0xffffffff;
const TWO32 = 2 ** 32;

/**
 * Serialises `root` (a tree from mergeLayers), `layers` (bottom first, the
 * indexes file nodes point at) and `config` (any JSON value; written with
 * JSON.stringify, so key order is the caller's) into archive bytes.
 * Errors: EINVAL (a file node pointing outside its layer, a digest that is
 * not sha256), EUNSUPPORTED (a name longer than 255 bytes, more than 2^32-1
 * nodes or 4 GiB of strings, more than 65535 xattrs on one node).
 */
export function writeArchive(root: MergedNode, layers: readonly ArchiveLayerInput[], config: unknown): { bytes: Buffer; stats: ArchiveLayoutStats } {
  if (root.type !== 'dir') throw new ClipError('EINVAL', 'writeArchive: the root must be a directory');
  const links = countLinks(root);

  // Number the nodes breadth-first and collect each directory's entries.
  const order: MergedNode[] = [root];
  const numberOf = new Map<MergedNode, number>([[root, 0]]);
  const parentOf: number[] = [0];
  const firstDirent = new Map<MergedNode, number>();
  const direntNames: string[] = [];
  const direntNodes: number[] = [];
  for (let i = 0; i < order.length; i++) {
    const dir = order[i];
    if (dir.type !== 'dir') continue;
    firstDirent.set(dir, direntNames.length);
    for (const name of sortedNames(dir.children!)) {
      const child = dir.children!.get(name)!;
      let n = numberOf.get(child);
      if (n === undefined) {
        n = order.length;
        numberOf.set(child, n);
        order.push(child);
        parentOf.push(i);
      }
      direntNames.push(name);
      direntNodes.push(n);
    }
  }
  if (order.length > U32_MAX) throw new ClipError('EUNSUPPORTED', `writeArchive: ${order.length} nodes is more than an archive holds`);

  const strings = new StringTable();
  // Directory entry names first, in entry order: a directory's names end up together.
  const direntNameOffsets = new Array<number>(direntNames.length);
  for (let i = 0; i < direntNames.length; i++) direntNameOffsets[i] = strings.name(direntNames[i]);
  const nameBytes = strings.size;
  const mediaTypes = layers.map((l) => strings.raw(Buffer.from(l.mediaType, 'utf8')));

  // XATTRS: each node's records contiguous and in node order (a node's
  // records end where the next node's begin), sorted by name bytes.
  const xattrRecords: number[] = []; // 4 u32 per record
  const xattrFirst = new Array<number>(order.length).fill(0);
  const symlinkTarget = new Array<number>(order.length).fill(0);
  const symlinkLength = new Array<number>(order.length).fill(0);
  for (let n = 0; n < order.length; n++) {
    const node = order[n];
    if (node.type === 'symlink') {
      const target = pathBytes(node.linkTarget);
      symlinkTarget[n] = strings.raw(target);
      symlinkLength[n] = target.length;
    }
    xattrFirst[n] = xattrRecords.length / 4;
    const names = Object.keys(node.xattrs);
    if (names.length === 0) continue;
    const encoded = names.map((name) => ({ name: Buffer.from(name, 'utf8'), value: node.xattrs[name] }));
    encoded.sort((a, b) => Buffer.compare(a.name, b.name));
    for (const { name, value } of encoded) {
      xattrRecords.push(strings.raw(name), name.length, strings.raw(value), value.length);
    }
  }
  if (xattrRecords.length / 4 > U32_MAX) throw new ClipError('EUNSUPPORTED', 'writeArchive: too many xattrs');
  if (layers.length > MAX_LAYERS) throw new ClipError('EUNSUPPORTED', `writeArchive: ${layers.length} layers (an archive holds ${MAX_LAYERS})`);

  // CHECKPOINTS: each distinct layer's index once, 8-byte aligned.
  const checkpointChunks: Buffer[] = [];
  let checkpointSize = 0;
  const checkpointAt = new Map<string, { offset: number; buffer: Buffer }>();
  const layerCheckpoint = layers.map((layer) => {
    const seen = checkpointAt.get(layer.digest);
    if (seen && seen.buffer.equals(layer.checkpoints)) return seen.offset;
    const offset = checkpointSize;
    checkpointChunks.push(layer.checkpoints, Buffer.alloc(pad8(layer.checkpoints.length) - layer.checkpoints.length));
    checkpointSize += pad8(layer.checkpoints.length);
    checkpointAt.set(layer.digest, { offset, buffer: layer.checkpoints });
    return offset;
  });

  const configBytes = Buffer.from(JSON.stringify(config), 'utf8');
  const stringBytes = strings.finish();

  // NODES.
  const nodes = Buffer.alloc(order.length * NODE_SIZE);
  for (let n = 0; n < order.length; n++) {
    const node = order[n];
    const at = n * NODE_SIZE;
    nodes.writeUInt32LE((FileTypeBits[node.type] | (node.mode & 0o7777)) >>> 0, at);
    nodes.writeUInt32LE(node.uid >>> 0, at + 4);
    nodes.writeUInt32LE(node.gid >>> 0, at + 8);
    nodes.writeUInt32LE(Math.min(links.get(node)!, U32_MAX), at + 12);
    writeI64(nodes, at + 16, node.mtimeSec);
    nodes.writeUInt32LE(node.mtimeNsec >>> 0, at + 24);
    nodes.writeUInt32LE(xattrFirst[n], at + 28);
    switch (node.type) {
      case 'file': {
        const layer = layers[node.layer];
        if (!layer || node.dataOffset + node.size > layer.uncompressedSize) {
          throw new ClipError('EINVAL', `writeArchive: a file points at bytes [${node.dataOffset}, +${node.size}) of layer ${node.layer}, which it does not have`);
        }
        if (node.dataOffset >= MAX_FILE_OFFSET) throw new ClipError('EUNSUPPORTED', 'writeArchive: a file starts past 256 TiB into its layer');
        writeU64(nodes, at + 32, node.size);
        // Offset in the low 48 bits, layer in the high 16.
        nodes.writeUInt32LE(node.dataOffset % TWO32 >>> 0, at + 40);
        nodes.writeUInt16LE(Math.floor(node.dataOffset / TWO32), at + 44);
        nodes.writeUInt16LE(node.layer, at + 46);
        break;
      }
      case 'dir':
        nodes.writeUInt32LE(parentOf[n], at + 32);
        nodes.writeUInt32LE(node.children!.size, at + 36);
        writeU64(nodes, at + 40, firstDirent.get(node)!);
        break;
      case 'symlink':
        writeU64(nodes, at + 32, symlinkLength[n]);
        writeU64(nodes, at + 40, symlinkTarget[n]);
        break;
      case 'char':
      case 'block':
        nodes.writeBigUInt64LE(makedev(node.devmajor, node.devminor), at + 40);
        break;
      case 'fifo':
        break;
    }
  }

  // DIRENTS.
  const dirents = Buffer.alloc(direntNames.length * DIRENT_SIZE);
  for (let i = 0; i < direntNames.length; i++) {
    dirents.writeUInt32LE(direntNameOffsets[i], i * DIRENT_SIZE);
    dirents.writeUInt32LE(direntNodes[i], i * DIRENT_SIZE + 4);
  }

  const xattrs = Buffer.alloc((xattrRecords.length / 4) * XATTR_SIZE);
  for (let i = 0; i < xattrRecords.length; i++) xattrs.writeUInt32LE(xattrRecords[i], i * 4);

  // LAYERS.
  const layerBytes = Buffer.alloc(LAYERS_PREAMBLE + layers.length * LAYER_SIZE);
  layerBytes.writeUInt32LE(layers.length, 0);
  layers.forEach((layer, i) => {
    const at = LAYERS_PREAMBLE + i * LAYER_SIZE;
    rawSha256(layer.digest, 'digest').copy(layerBytes, at);
    rawSha256(layer.diffId, 'diff_id').copy(layerBytes, at + 32);
    writeU64(layerBytes, at + 64, layer.compressedSize);
    writeU64(layerBytes, at + 72, layer.uncompressedSize);
    layerBytes.writeUInt32LE(mediaTypes[i], at + 80);
    layerBytes.writeUInt32LE(Buffer.byteLength(layer.mediaType, 'utf8'), at + 84);
    layerBytes.writeUInt32LE(LayerFormatCode[layer.format], at + 88);
    writeU64(layerBytes, at + 96, layerCheckpoint[i]);
    writeU64(layerBytes, at + 104, layer.checkpoints.length);
  });

  // Hot sections first: what lookup and getattr touch sits at the front of the file.
  const sections: Array<{ id: number; name: string; data: Buffer[] }> = [
    { id: Section.NODES, name: 'nodes', data: [nodes] },
    { id: Section.DIRENTS, name: 'dirents', data: [dirents] },
    { id: Section.STRINGS, name: 'strings', data: [stringBytes] },
    { id: Section.XATTRS, name: 'xattrs', data: [xattrs] },
    { id: Section.LAYERS, name: 'layers', data: [layerBytes] },
    { id: Section.CONFIG, name: 'config', data: [configBytes] },
    { id: Section.CHECKPOINTS, name: 'checkpoints', data: checkpointChunks },
  ];
  const tableEnd = HEADER_SIZE + sections.length * SECTION_ENTRY_SIZE;
  const placed: Array<{ id: number; offset: number; length: number; crc: number }> = [];
  const parts: Buffer[] = [];
  let offset = pad8(tableEnd);
  const sizes: Record<string, number> = {};
  for (const section of sections) {
    const length = section.data.reduce((sum, b) => sum + b.length, 0);
    let crc = 0;
    for (const b of section.data) crc = zlib.crc32(b, crc);
    placed.push({ id: section.id, offset, length, crc });
    parts.push(...section.data, Buffer.alloc(pad8(length) - length));
    sizes[section.name] = length;
    offset += pad8(length);
  }
  const total = offset;

  const head = Buffer.alloc(pad8(tableEnd));
  ARCHIVE_MAGIC.copy(head, 0);
  head.writeUInt32LE(ARCHIVE_VERSION, 8);
  head.writeUInt32LE(sections.length, 12);
  writeU64(head, 16, total);
  placed.sort((a, b) => a.id - b.id);
  placed.forEach((s, i) => {
    const at = HEADER_SIZE + i * SECTION_ENTRY_SIZE;
    head.writeUInt32LE(s.id, at);
    writeU64(head, at + 8, s.offset);
    writeU64(head, at + 16, s.length);
    head.writeUInt32LE(s.crc >>> 0, at + 24);
  });
  const headerCrc = zlib.crc32(head.subarray(HEADER_SIZE, tableEnd), zlib.crc32(head.subarray(0, 24)));
  head.writeUInt32LE(headerCrc >>> 0, 24);

  const bytes = Buffer.concat([head, ...parts], total);
  return {
    bytes,
    stats: { nodes: order.length, dirents: direntNames.length, xattrs: xattrRecords.length / 4, sections: sizes, nameBytes },
  };
}

/**
 * The STRINGS section under construction: directory entry names (a u8
 * length, then the bytes) and raw byte strings (lengths kept by whoever
 * points at them), each distinct value stored once, in first-use order.
 */
class StringTable {
  private readonly chunks: Buffer[] = [];
  private readonly names = new Map<string, number>();
  private readonly raws = new Map<string, number>();
  size = 0;

  /** Offset of `name` as a length-prefixed entry name. Errors: EUNSUPPORTED above 255 bytes. */
  name(name: string): number {
    const seen = this.names.get(name);
    if (seen !== undefined) return seen;
    const bytes = pathBytes(name);
    if (bytes.length === 0 || bytes.length > MAX_NAME_BYTES) {
      throw new ClipError('EUNSUPPORTED', `writeArchive: the name "${name}" is ${bytes.length} bytes (1 to ${MAX_NAME_BYTES} allowed)`);
    }
    const offset = this.append(Buffer.from([bytes.length]), bytes);
    this.names.set(name, offset);
    return offset;
  }

  /** Offset of `bytes` stored raw. */
  raw(bytes: Buffer): number {
    const key = bytes.toString('latin1');
    const seen = this.raws.get(key);
    if (seen !== undefined) return seen;
    const offset = this.append(bytes);
    this.raws.set(key, offset);
    return offset;
  }

  finish(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }

  private append(...parts: Buffer[]): number {
    const offset = this.size;
    for (const p of parts) {
      this.chunks.push(p);
      this.size += p.length;
    }
    if (this.size > U32_MAX) throw new ClipError('EUNSUPPORTED', 'writeArchive: more than 4 GiB of names, link targets and xattrs');
    return offset;
  }
}

/**
 * A directory's names in byte order (what the native reader's binary
 * search expects). JavaScript's string order is UTF-16 code-unit order, which
 * agrees with UTF-8 byte order except when surrogates (characters above
 * U+FFFF, or bytes that are not UTF-8: path-bytes.ts) meet U+E000..U+FFFF;
 * only then are the names compared as bytes.
 */
export function sortedNames(children: Map<string, unknown>): string[] {
  const names = [...children.keys()];
  if (names.some((n) => /[\ud800-\uffff]/.test(n))) {
    const encoded = names.map((n) => ({ n, b: pathBytes(n) }));
    encoded.sort((a, b) => Buffer.compare(a.b, b.b));
    return encoded.map((e) => e.n);
  }
  return names.sort();
}

function pad8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

function writeU64(buffer: Buffer, at: number, value: number): void {
  buffer.writeUInt32LE(value % TWO32 >>> 0, at);
  buffer.writeUInt32LE(Math.floor(value / TWO32) >>> 0, at + 4);
}

function writeI64(buffer: Buffer, at: number, value: number): void {
  const high = Math.floor(value / TWO32);
  buffer.writeUInt32LE((value - high * TWO32) >>> 0, at);
  buffer.writeInt32LE(high | 0, at + 4);
}

function rawSha256(digest: string, what: string): Buffer {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new ClipError('EINVAL', `writeArchive: layer ${what} "${digest}" is not a sha256 digest`);
  return Buffer.from(m[1], 'hex');
}
