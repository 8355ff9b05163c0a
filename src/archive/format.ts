/**
 * The `.clip` archive's constants, shared by the writer and the TypeScript
 * side of the reader. The byte layout they describe is documented in
 * docs/format.md and, for the native reader, in native/core/archive_view.h;
 * the three must change together (and the version with them).
 */

export const ARCHIVE_MAGIC = Buffer.from('CLIPARCH', 'latin1');
export const ARCHIVE_VERSION = 1;

export const HEADER_SIZE = 64;
export const SECTION_ENTRY_SIZE = 32;
export const NODE_SIZE = 48;
/** A file's content offset is stored in the low 48 bits of its node's data word, the layer in the high 16. */
export const MAX_FILE_OFFSET = 2 ** 48;
export const MAX_LAYERS = 2 ** 16;
export const DIRENT_SIZE = 8;
export const XATTR_SIZE = 16;
export const LAYER_SIZE = 112;
/** LAYERS starts with a u32 count and a u32 reserved word. */
export const LAYERS_PREAMBLE = 8;

export const Section = {
  STRINGS: 1,
  LAYERS: 2,
  NODES: 3,
  DIRENTS: 4,
  XATTRS: 5,
  CHECKPOINTS: 6,
  CONFIG: 7,
} as const;
export type SectionId = (typeof Section)[keyof typeof Section];

/** st_mode file type bits (Linux). */
export const S_IFMT = 0o170000;
export const FileTypeBits = {
  fifo: 0o010000,
  char: 0o020000,
  dir: 0o040000,
  block: 0o060000,
  file: 0o100000,
  symlink: 0o120000,
} as const;

/** Layer record `format` values. */
export const LayerFormatCode = { tar: 0, gzip: 1 } as const;

/** Longest directory entry name (bytes): Linux's NAME_MAX, and what a u8 length holds. */
export const MAX_NAME_BYTES = 255;

/** glibc's makedev(): the 64-bit dev_t encoding stored for device nodes. */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

/** The inverse of makedev(). */
export function splitDev(dev: bigint): { major: number; minor: number } {
  const major = Number(((dev >> 32n) & 0xfffff000n) | ((dev >> 8n) & 0xfffn));
  const minor = Number(((dev >> 12n) & 0xffffff00n) | (dev & 0xffn));
  return { major, minor };
}
