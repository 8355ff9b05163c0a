/**
 * Paths in images are bytes, not necessarily UTF-8 (a tar made on a Latin-1
 * system names "café" 63 61 66 E9). They travel through TypeScript as
 * strings that keep every byte: valid UTF-8 as its text, and each byte that
 * is not part of a valid UTF-8 sequence as the lone surrogate U+DC00 + byte
 * (Python's "surrogateescape"). The addon decodes them so, in
 * native/binding/convert.cc, and hands over a name that is not UTF-8 as the
 * UTF-16LE bytes of that string (N-API would turn the lone surrogates into
 * U+FFFD), which fromNativePath makes a string. Merging, sorting and lookups
 * work on these strings unchanged; wherever a path becomes bytes again (the
 * archive writer, the filesystem, stdout) it goes through pathBytes, never
 * Buffer.from(s, 'utf8'), which would turn escaped bytes into U+FFFD.
 */

import * as fs from 'node:fs';
import { native } from './native';

/** Lone surrogates U+DC80..U+DCFF: escaped bytes (the `u` flag keeps surrogate pairs whole). */
const ESCAPED_BYTE = /[\uDC80-\uDCFF]/u;

/** A path as the addon hands it over: a string, or the UTF-16LE of its escaped form. */
export function fromNativePath(value: string | Buffer): string {
  return typeof value === 'string' ? value : value.toString('utf16le');
}

/** True when `s` holds a byte that is not UTF-8 text. */
export function hasEscapedBytes(s: string): boolean {
  return ESCAPED_BYTE.test(s);
}

/** The bytes of path string `s` (see above). */
export function pathBytes(s: string): Buffer {
  if (!hasEscapedBytes(s)) return Buffer.from(s, 'utf8');
  const parts: Buffer[] = [];
  let text = '';
  for (const ch of s) {
    const c = ch.charCodeAt(0);
    if (ch.length === 1 && c >= 0xdc80 && c <= 0xdcff) {
      parts.push(Buffer.from(text, 'utf8'), Buffer.from([c - 0xdc00]));
      text = '';
    } else {
      text += ch;
    }
  }
  parts.push(Buffer.from(text, 'utf8'));
  return Buffer.concat(parts);
}

/** Byte length of path string `s` (what a 255-byte name limit counts). */
export function pathByteLength(s: string): number {
  return hasEscapedBytes(s) ? pathBytes(s).length : Buffer.byteLength(s, 'utf8');
}

/** The path string of raw bytes (the inverse of pathBytes; decoded by the addon, as names in archives are). */
export function pathFromBytes(bytes: Buffer): string {
  return fromNativePath((native as unknown as { decodePath(b: Buffer): string | Buffer }).decodePath(bytes));
}

/**
 * process.argv with every argument that is not UTF-8 restored from the raw
 * bytes of /proc/self/cmdline, in the escaped form above: Node decodes argv
 * as UTF-8 and turns stray bytes into U+FFFD, so a name like "caf\xe9" typed
 * on the command line would otherwise name nothing in the image. Node's own
 * options sit before the script in cmdline, so the user's arguments are
 * its last entries.
 */
export function losslessArgv(argv: string[] = process.argv): string[] {
  if (!argv.some((a) => a.includes('\uFFFD'))) return argv;
  let raw: Buffer[];
  try {
    const cmdline = fs.readFileSync('/proc/self/cmdline');
    raw = [];
    let start = 0;
    for (let i = 0; i < cmdline.length; i++) {
      if (cmdline[i] === 0) {
        raw.push(cmdline.subarray(start, i));
        start = i + 1;
      }
    }
  } catch {
    return argv;
  }
  const user = argv.length - 2;
  if (user <= 0 || raw.length < user) return argv;
  const rawUser = raw.slice(raw.length - user);
  return argv.map((a, i) => {
    if (i < 2 || !a.includes('\uFFFD')) return a;
    const bytes = rawUser[i - 2];
    // Only where the raw bytes are what Node decoded (a sanity check on the alignment).
    return bytes.toString('utf8') === a ? pathFromBytes(bytes) : a;
  });
}
