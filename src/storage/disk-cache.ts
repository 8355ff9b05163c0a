/**
 * The host-wide disk cache: complete, verified, decompressed layers,
 * content-addressed by diff_id and shared by every image and process on the
 * host (the FUSE mount's C++ code reads the same files; this layout is its
 * contract, keep it exactly):
 *
 *   <cacheDir>/layers/sha256/<64 hex>     a whole uncompressed layer (its tar stream), mode 0444
 *   <cacheDir>/layers/sha256/<hex>.partial-<pid>-<random>
 *                                          a fill in progress; never served
 *   <cacheDir>/locks/<hex>.lock            the fill lock
 *   <cacheDir>/files/sha256/<hex>/<offset> a large file of that layer (its bytes at that offset of
 *                                          the tar stream) copied out whole, mode 0444, so the
 *                                          kernel can read it directly (FUSE passthrough; made by
 *                                          the mount's C++ code, native/fuse/passthrough_files.h)
 *   <cacheDir>/files/sha256/<hex>/<offset>.partial-<pid>-<random>
 *                                          a copy in progress; never served
 *
 * - A fill writes to a partial name in the same directory and renames it to
 *   `<hex>` only after the bytes' sha256 equals the diff_id (and after
 *   fsync, so a crash cannot leave a complete-looking empty file). Anything
 *   not named exactly 64 hex digits is never served.
 * - The fill lock is flock(LOCK_EX) on the lock file: two processes never
 *   fill the same layer at once; the second waits, then finds the file. A
 *   crashed filler's lock vanishes with it; whoever takes the lock next
 *   deletes that layer's partial files, which only a dead filler can own.
 * - A reader pins a layer by holding flock(LOCK_SH) on its open file and
 *   marks it used by setting its atime; eviction takes flock(LOCK_EX |
 *   LOCK_NB) on the file, skips it if that fails, and otherwise unlinks it
 *   (oldest atime first). A reader that got its shared lock after an
 *   eviction finds the file unlinked (nlink 0) and treats it as a miss.
 *
 * - A copy is made only by a process pinning its layer, into a partial name,
 *   fsync'd, then renamed. It belongs to its layer: counted in the layer's
 *   size, evicted with it (under the same LOCK_EX), deleted with it when
 *   `verify` finds the layer wrong, and itself checked against the layer's
 *   bytes by `verify`. A copy directory whose layer is gone is an orphan
 *   (a copy is only made while the layer is pinned) and `prune` removes it.
 *
 * All flock calls here are non-blocking and polled, so a wait can be given
 * up (a closing store) and never ties up a libuv thread.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ClipError } from '../errors';
import { log } from '../log';
import { tryFlock } from './native-fs';

export const LAYER_NAME = /^[0-9a-f]{64}$/;
const PARTIAL_NAME = /^([0-9a-f]{64})\.partial-(\d+)-([0-9a-f]+)$/;

/**
 * The cache directory: `option` if given, else $CLIP_CACHE_DIR, else
 * $XDG_CACHE_HOME/clip-native, else ~/.cache/clip-native.
 */
export function defaultCacheDir(option?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (option) return path.resolve(option);
  if (env.CLIP_CACHE_DIR) return path.resolve(env.CLIP_CACHE_DIR);
  if (env.XDG_CACHE_HOME) return path.join(path.resolve(env.XDG_CACHE_HOME), 'clip-native');
  return path.join(os.homedir(), '.cache', 'clip-native');
}

/** The 64 hex digits of a "sha256:<hex>" diff_id, or null for any other algorithm. */
export function diffIdHex(diffId: string): string | null {
  const m = /^sha256:([0-9a-f]{64})$/.exec(diffId);
  return m ? m[1] : null;
}

/** A cached layer held open with a shared lock: it cannot be evicted while this is open. */
export class PinnedLayer {
  private closed = false;

  constructor(
    readonly hex: string,
    readonly path: string,
    readonly handle: fs.promises.FileHandle,
    /** Bytes. */
    readonly size: number,
  ) {}

  /**
   * Reads exactly `length` bytes at `offset` into a new Buffer.
   * Errors: ETRUNCATED if the file is shorter (it never should be), EIO.
   */
  async read(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(length);
    const { bytesRead } = await this.handle.read(out, 0, length, offset);
    if (bytesRead === length) return out;
    let done = bytesRead;
    while (done < length) {
      const more = (await this.handle.read(out, done, length - done, offset + done)).bytesRead;
      if (more === 0) throw new ClipError('ETRUNCATED', `${this.path}: ends at ${offset + done}, wanted ${offset + length}`);
      done += more;
    }
    return out;
  }

  /** Releases the pin (closing the file drops its lock). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}

/** The fill lock of one layer, held until release(). */
export class FillLock {
  constructor(
    readonly hex: string,
    private readonly handle: fs.promises.FileHandle,
  ) {}

  async release(): Promise<void> {
    await this.handle.close(); // closing drops the flock
  }
}

/** A partial file being written by a fill. */
export interface PartialFile {
  path: string;
  handle: fs.promises.FileHandle;
}

export interface CacheEntry {
  hex: string;
  diffId: string;
  path: string;
  /** Bytes, with the layer's passthrough copies. */
  size: number;
  /** Bytes of the layer's passthrough copies (complete or in progress). */
  copiesBytes: number;
  /** Last use (the atime readers set), ms since the epoch. */
  lastUsedMs: number;
  /** Held open by a reader (a mount, a cat) right now. */
  pinned: boolean;
}

export interface CacheListing {
  layers: CacheEntry[];
  /** Partial files: fills in progress, or left by a crash (removed by prune or the next fill). */
  partials: Array<{ path: string; size: number; hex: string; pid: number }>;
  /** Bytes of complete layers. */
  totalBytes: number;
}

export interface VerifyResult {
  ok: string[];
  /** Layers whose content did not hash to their name: deleted. */
  deleted: string[];
  /** Passthrough copies whose bytes differed from their layer's: deleted. */
  deletedCopies: string[];
}

const COPY_NAME = /^\d+$/;
const COPY_PARTIAL_NAME = /^\d+\.partial-(\d+)-[0-9a-f]+$/;

/** Whether process `pid` exists (it may belong to another user). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Total bytes of the files directly in `dir` (0 when it does not exist). */
function dirBytes(dir: string): number {
  let total = 0;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    try {
      total += fs.lstatSync(path.join(dir, name)).size;
    } catch {
      // removed meanwhile
    }
  }
  return total;
}

/**
 * Opens `file` (read-only, no symlinks; or read-write, created, when
 * `create`) and tries flock(LOCK_EX | LOCK_NB) on it: 'absent' when it
 * cannot be opened, 'held' when another open file holds a lock on it, else
 * 'free', after running `whileLocked` with the lock held. The lock goes
 * with the fd, closed before returning.
 */
function probeLock(file: string, create: boolean, whileLocked?: () => void): 'absent' | 'held' | 'free' {
  let fd: number;
  try {
    fd = create ? fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o666) : fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch {
    return 'absent';
  }
  try {
    if (!tryFlock(fd, 'exclusive')) return 'held';
    whileLocked?.();
    return 'free';
  } finally {
    fs.closeSync(fd);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function abortError(): ClipError {
  return new ClipError('EBUSY', 'the store is closing');
}

export class DiskCache {
  readonly dir: string;
  readonly layersDir: string;
  readonly locksDir: string;
  readonly copiesDir: string;

  /**
   * @param dir the cache directory (created with its subdirectories if missing)
   * @param capBytes size cap for complete layers (Infinity: none)
   * Errors: EIO when the directories cannot be created.
   */
  constructor(dir: string, readonly capBytes: number = Infinity) {
    this.dir = dir;
    this.layersDir = path.join(dir, 'layers', 'sha256');
    this.locksDir = path.join(dir, 'locks');
    this.copiesDir = path.join(dir, 'files', 'sha256');
    try {
      fs.mkdirSync(this.layersDir, { recursive: true });
      fs.mkdirSync(this.locksDir, { recursive: true });
    } catch (e) {
      throw new ClipError('EIO', `cannot create the cache directory ${dir}: ${(e as Error).message}`);
    }
  }

  pathFor(hex: string): string {
    return path.join(this.layersDir, hex);
  }

  /** Where layer `hex`'s passthrough copies live. */
  copiesFor(hex: string): string {
    return path.join(this.copiesDir, hex);
  }

  /** True when the complete layer file exists (it may still be evicted any moment; pin it to keep it). */
  has(hex: string): boolean {
    return fs.existsSync(this.pathFor(hex));
  }

  /**
   * Opens and pins the complete layer `hex`, marking it used (atime = now).
   * Resolves null when it is not cached (or was evicted meanwhile).
   * `expectedSize`, when given, must match, or the file is ignored (and
   * logged: a file of the wrong size under a content address is damage).
   * Errors: EIO for failures other than a missing file.
   */
  async pin(hex: string, expectedSize?: number): Promise<PinnedLayer | null> {
    if (!LAYER_NAME.test(hex)) throw new ClipError('EINVAL', `not a layer name: ${hex}`);
    const file = this.pathFor(hex);
    let handle: fs.promises.FileHandle;
    try {
      handle = await fs.promises.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return null;
      throw new ClipError('EIO', `cannot open cached layer ${file}: ${(e as Error).message}`);
    }
    try {
      // An evictor holds LOCK_EX only for an unlink; wait it out.
      const deadline = Date.now() + 2000;
      while (!tryFlock(handle.fd, 'shared')) {
        if (Date.now() > deadline) {
          await handle.close();
          return null;
        }
        await sleep(5);
      }
      const st = await handle.stat();
      if (st.nlink === 0 || !st.isFile()) {
        await handle.close(); // evicted between open and lock
        return null;
      }
      if (expectedSize !== undefined && st.size !== expectedSize) {
        log.warn({ file, size: st.size, expectedSize }, 'cached layer has the wrong size; ignoring it (run "clip-native cache verify")');
        await handle.close();
        return null;
      }
      const now = new Date();
      // LRU bookkeeping for eviction; failing to set it (another user's file) only affects eviction order.
      await handle.utimes(now, st.mtime).catch(() => undefined);
      return new PinnedLayer(hex, file, handle, st.size);
    } catch (e) {
      await handle.close().catch(() => undefined);
      throw e instanceof ClipError ? e : new ClipError('EIO', `cannot pin cached layer ${file}: ${(e as Error).message}`);
    }
  }

  /**
   * Takes the fill lock of layer `hex`, waiting (polling) while another
   * process or store holds it. Errors: EBUSY when `signal` aborts the wait; EIO.
   */
  async lockFill(hex: string, signal?: AbortSignal): Promise<FillLock> {
    const file = path.join(this.locksDir, `${hex}.lock`);
    let handle: fs.promises.FileHandle;
    try {
      handle = await fs.promises.open(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o666);
    } catch (e) {
      throw new ClipError('EIO', `cannot open the fill lock ${file}: ${(e as Error).message}`);
    }
    let delay = 10;
    try {
      while (!tryFlock(handle.fd, 'exclusive')) {
        if (signal?.aborted) throw abortError();
        await sleep(delay);
        delay = Math.min(200, delay * 2);
      }
    } catch (e) {
      await handle.close().catch(() => undefined);
      throw e;
    }
    return new FillLock(hex, handle);
  }

  /**
   * Deletes partial files of `hex`. Call it only holding that layer's fill
   * lock: then every partial of it belongs to a filler that died.
   */
  removePartials(hex: string): number {
    let removed = 0;
    for (const name of this.readLayerDir()) {
      const m = PARTIAL_NAME.exec(name);
      if (m && m[1] === hex) {
        fs.rmSync(path.join(this.layersDir, name), { force: true });
        removed++;
      }
    }
    return removed;
  }

  /** Creates a new partial file for `hex` (mode 0644 while written). Errors: EIO. */
  async createPartial(hex: string): Promise<PartialFile> {
    const file = path.join(this.layersDir, `${hex}.partial-${process.pid}-${randomBytes(6).toString('hex')}`);
    try {
      const handle = await fs.promises.open(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
      return { path: file, handle };
    } catch (e) {
      throw new ClipError('EIO', `cannot create ${file}: ${(e as Error).message}`);
    }
  }

  /**
   * Makes a verified partial file the layer `hex`: fsync, mode 0444, rename.
   * Errors: EIO (the partial is removed).
   */
  async commitPartial(partial: PartialFile, hex: string): Promise<string> {
    const dest = this.pathFor(hex);
    try {
      await partial.handle.datasync();
      await partial.handle.chmod(0o444);
      await partial.handle.close();
      await fs.promises.rename(partial.path, dest);
    } catch (e) {
      await this.discardPartial(partial);
      throw new ClipError('EIO', `cannot move the filled layer into place at ${dest}: ${(e as Error).message}`);
    }
    // The rename itself is durable once the directory is synced.
    try {
      const dirHandle = await fs.promises.open(this.layersDir, fs.constants.O_RDONLY);
      await dirHandle.sync().catch(() => undefined);
      await dirHandle.close();
    } catch {
      // Best effort: a lost rename only costs a refill.
    }
    return dest;
  }

  /** Closes and deletes a partial file; never throws. */
  async discardPartial(partial: PartialFile): Promise<void> {
    await partial.handle.close().catch(() => undefined);
    await fs.promises.rm(partial.path, { force: true }).catch(() => undefined);
  }

  private readLayerDir(): string[] {
    try {
      return fs.readdirSync(this.layersDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new ClipError('EIO', `cannot list ${this.layersDir}: ${(e as Error).message}`);
    }
  }

  /** True when some open file holds a lock on `file` (a pinned layer). */
  private isPinned(file: string): boolean {
    return probeLock(file, false) === 'held';
  }

  /** Complete layers, partial files and the total size. */
  list(): CacheListing {
    const layers: CacheEntry[] = [];
    const partials: CacheListing['partials'] = [];
    let totalBytes = 0;
    for (const name of this.readLayerDir()) {
      const file = path.join(this.layersDir, name);
      let st: fs.Stats;
      try {
        st = fs.lstatSync(file);
      } catch {
        continue; // evicted meanwhile
      }
      if (!st.isFile()) continue;
      if (LAYER_NAME.test(name)) {
        const copiesBytes = dirBytes(this.copiesFor(name));
        const size = st.size + copiesBytes;
        layers.push({ hex: name, diffId: `sha256:${name}`, path: file, size, copiesBytes, lastUsedMs: st.atimeMs, pinned: this.isPinned(file) });
        totalBytes += size;
        continue;
      }
      const m = PARTIAL_NAME.exec(name);
      if (m) partials.push({ path: file, size: st.size, hex: m[1], pid: Number(m[2]) });
    }
    layers.sort((a, b) => a.lastUsedMs - b.lastUsedMs);
    return { layers, partials, totalBytes };
  }

  /** Removes layer `hex` and its copies if nobody pins it: true when removed. */
  private removeIfUnpinned(hex: string): boolean {
    // Holding LOCK_EX: no reader has it pinned (so nobody is copying from
    // it), and any reader that opened it meanwhile finds nlink 0 once it
    // gets its shared lock.
    return (
      probeLock(this.pathFor(hex), false, () => {
        fs.rmSync(this.pathFor(hex), { force: true });
        fs.rmSync(this.copiesFor(hex), { recursive: true, force: true });
      }) === 'free'
    );
  }

  /**
   * Evicts least-recently-used unpinned layers until complete layers take
   * at most `targetBytes` (default: the cap). Pinned layers are never
   * removed, so the result may stay above the target. Returns what was removed.
   */
  evict(targetBytes: number = this.capBytes): CacheEntry[] {
    if (!Number.isFinite(targetBytes)) return [];
    const listing = this.list();
    let total = listing.totalBytes;
    const removed: CacheEntry[] = [];
    for (const entry of listing.layers) {
      if (total <= targetBytes) break;
      if (entry.pinned) continue;
      if (this.removeIfUnpinned(entry.hex)) {
        total -= entry.size;
        removed.push(entry);
        log.info({ layer: entry.diffId, size: entry.size, lastUsed: new Date(entry.lastUsedMs).toISOString() }, 'evicted cached layer');
      }
    }
    return removed;
  }

  /**
   * Makes room for a new layer of `size` bytes under the cap: true when it
   * fits (after evicting), false when pinned layers leave no room.
   */
  makeRoom(size: number): boolean {
    if (!Number.isFinite(this.capBytes)) return true;
    if (size > this.capBytes) return false;
    this.evict(this.capBytes - size);
    return this.list().totalBytes + size <= this.capBytes;
  }

  /**
   * Cleans up: deletes partial files whose filler is gone (their layer's
   * fill lock is free), then evicts to `targetBytes` (default the cap; 0
   * removes every unpinned layer). Returns what was removed.
   */
  prune(targetBytes: number = this.capBytes): { partials: string[]; layers: CacheEntry[] } {
    const partials: string[] = [];
    const byHex = new Map<string, string[]>();
    for (const p of this.list().partials) {
      const list = byHex.get(p.hex) ?? [];
      list.push(p.path);
      byHex.set(p.hex, list);
    }
    for (const [hex, files] of byHex) {
      // A free fill lock means the partials' filler is gone.
      probeLock(path.join(this.locksDir, `${hex}.lock`), true, () => {
        for (const f of files) {
          fs.rmSync(f, { force: true });
          partials.push(f);
        }
      });
    }
    partials.push(...this.pruneCopies());
    return { partials, layers: this.evict(targetBytes) };
  }

  /** Removes copies in progress whose writer is gone, and copy directories whose layer is gone. */
  private pruneCopies(): string[] {
    const removed: string[] = [];
    let hexes: string[];
    try {
      hexes = fs.readdirSync(this.copiesDir);
    } catch {
      return removed;
    }
    for (const hex of hexes) {
      const dir = this.copiesFor(hex);
      if (!LAYER_NAME.test(hex) || !this.has(hex)) {
        fs.rmSync(dir, { recursive: true, force: true });
        removed.push(dir);
        continue;
      }
      let names: string[];
      try {
        names = fs.readdirSync(dir);
      } catch {
        continue;
      }
      for (const name of names) {
        const m = COPY_PARTIAL_NAME.exec(name);
        if (m && !processAlive(Number(m[1]))) {
          fs.rmSync(path.join(dir, name), { force: true });
          removed.push(path.join(dir, name));
        }
      }
    }
    return removed;
  }

  /**
   * Re-hashes every complete layer; a layer whose bytes do not hash to its
   * name is deleted (whether pinned or not: wrong bytes must not be served).
   */
  async verify(onLayer?: (hex: string, ok: boolean) => void): Promise<VerifyResult> {
    const result: VerifyResult = { ok: [], deleted: [], deletedCopies: [] };
    for (const entry of this.list().layers) {
      let ok: boolean;
      try {
        ok = (await sha256Stream(fs.createReadStream(entry.path, { highWaterMark: 1 << 20 }))).hex === entry.hex;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // evicted meanwhile
        throw new ClipError('EIO', `cannot read ${entry.path}: ${(e as Error).message}`);
      }
      if (ok) {
        result.ok.push(entry.hex);
        result.deletedCopies.push(...(await this.verifyCopies(entry)));
      } else {
        fs.rmSync(entry.path, { force: true });
        fs.rmSync(this.copiesFor(entry.hex), { recursive: true, force: true });
        result.deleted.push(entry.hex);
        log.warn({ layer: entry.diffId }, 'cached layer does not match its digest; deleted');
      }
      onLayer?.(entry.hex, ok);
    }
    return result;
  }

  /** Compares each complete copy of `entry` with its layer's bytes; deletes and returns the ones that differ. */
  private async verifyCopies(entry: CacheEntry): Promise<string[]> {
    const deleted: string[] = [];
    const dir = this.copiesFor(entry.hex);
    let names: string[];
    try {
      names = fs.readdirSync(dir).filter((n) => COPY_NAME.test(n));
    } catch {
      return deleted;
    }
    for (const name of names) {
      const copy = path.join(dir, name);
      const offset = Number(name);
      let same: boolean;
      try {
        const size = fs.statSync(copy).size;
        const [a, b] = await Promise.all([
          sha256Stream(fs.createReadStream(copy, { highWaterMark: 1 << 20 })),
          sha256Stream(fs.createReadStream(entry.path, { start: offset, end: offset + size - 1, highWaterMark: 1 << 20 })),
        ]);
        same = size > 0 && a.bytes === size && b.bytes === size && a.hex === b.hex;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // evicted meanwhile
        throw new ClipError('EIO', `cannot read ${copy}: ${(e as Error).message}`);
      }
      if (!same) {
        fs.rmSync(copy, { force: true });
        deleted.push(copy);
        log.warn({ layer: entry.diffId, copy }, 'passthrough copy differs from its layer; deleted');
      }
    }
    return deleted;
  }
}

async function sha256Stream(stream: AsyncIterable<Buffer>): Promise<{ hex: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { hex: hash.digest('hex'), bytes };
}
