/**
 * Test fixtures: the real Debian layer and OCI image that scripts/fixtures.sh
 * builds (debootstrap + umoci), and small blobs the tests make themselves.
 * A missing fixture fails the test with a clear message; nothing is skipped.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ClipError } from '../src/errors';
import type { TarEntry } from '../src/engine/layer';

export function fixturesDir(): string {
  const dir = process.env.CLIP_FIXTURES ?? '/var/cache/clip-native';
  if (!fs.existsSync(path.join(dir, 'debian-layer.tar.gz'))) {
    throw new Error(`fixtures missing in ${dir}: run "bash scripts/fixtures.sh" (npm test does)`);
  }
  return dir;
}

export function debianLayer(): string {
  return process.env.CLIP_DEBIAN_LAYER ?? path.join(fixturesDir(), 'debian-layer.tar.gz');
}

export function debianRootfs(): string {
  return path.join(fixturesDir(), 'debian-bookworm-rootfs');
}

export function tempDir(prefix = 'clip-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function sh(command: string, options: { input?: Buffer; maxBuffer?: number } = {}): Buffer {
  return execFileSync('/bin/sh', ['-c', command], {
    input: options.input,
    maxBuffer: options.maxBuffer ?? 1 << 30,
  });
}

export function sha256File(file: string): string {
  return `sha256:${sh(`sha256sum '${file}'`).toString().split(' ')[0]}`;
}

/** Deterministic pseudo-random generator for reproducible sampling. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Asserts that `promise` (or the function's result) rejects with a ClipError
 * of `code` whose message matches `pattern`. CLIP_TEST_SHOW_ERRORS=1 prints
 * each message, to read what users would see.
 */
export async function rejectsWith(promise: Promise<unknown> | (() => unknown), code: string, pattern?: RegExp) {
  await assert.rejects(
    async () => (typeof promise === 'function' ? promise() : promise),
    (e: unknown) => {
      assert.ok(e instanceof ClipError, `expected a ClipError, got ${String(e)}`);
      if (process.env.CLIP_TEST_SHOW_ERRORS) console.log(`  [${e.code}] ${e.message}`);
      assert.equal(e.code, code, e.message);
      if (pattern) assert.match(e.message, pattern);
      return true;
    },
  );
}

/** Reads a stream to the end: its sha256 digest and byte count. */
export async function drain(iterable: AsyncIterable<Buffer>): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of iterable) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}

/** A tar entry as the engine reports it, with plausible defaults; `path` as a tar would carry it. */
export function tarEntry(p: string, type: TarEntry['type'] = 'file', extra: Partial<TarEntry> = {}): TarEntry {
  return {
    path: p,
    type,
    mode: type === 'dir' ? 0o755 : type === 'symlink' ? 0o777 : 0o644,
    uid: 0,
    gid: 0,
    uname: '',
    gname: '',
    mtimeSec: 1700000000,
    mtimeNsec: 0,
    size: 0,
    dataOffset: 0,
    headerOffset: 0,
    devmajor: 0,
    devminor: 0,
    linkTarget: '',
    xattrs: {},
    ...extra,
  };
}
