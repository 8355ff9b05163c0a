/**
 * The source tier: bytes of a layer nobody has cached, read from the image's
 * source (a registry over HTTP Range, or pread on an OCI layout's blob).
 *
 * A gzip layer is read by checkpoint intervals (see checkpoints.ts), from
 * an interval's start up to the first proof whose output covers the read:
 * exactly those compressed bytes are fetched, proven against the proofs'
 * SHA-256s and inflated from the checkpoint by the engine
 * (LayerReader.readFrom, off the JS thread; a wrong byte is EDIGEST before
 * anything is inflated). A small read near an interval's start fetches a
 * few KiB, not the whole interval. The fetched bytes and what they
 * inflated to are kept in small in-memory LRUs, so a later read further
 * into the interval fetches only the bytes it adds, and a sequential reader
 * (cat, extract) fetches each byte once. A whole interval is also checked
 * against the next checkpoint's recorded window. Concurrent misses that
 * need the same prefix share one fetch and one inflate; one that needs more
 * than a running fetch brings asks for the rest at once instead of waiting
 * for it (a page fault's read and the read-ahead behind it), and an interval
 * read on further fetches at least as much again as it has. A read across
 * several intervals fetches their contiguous bytes in one request, and mount
 * reads of one file after another up a layer fetch on past them
 * (READ_ON_GAP).
 * Plain-tar layers never come here: with no span digests a Range of one
 * can't be proven, so the store reads them from a verified disk-cache fill.
 *
 * A fetch or inflate that fails, or bytes that fail the check, reject the
 * read with a ClipError (EIO, ETRUNCATED, ECORRUPT, EDIGEST): no bytes.
 */
import { ClipError } from '../errors';
import { native } from '../native';
import { LayerReader } from '../engine/layer';
import type { Descriptor, ImageSource } from '../oci';
import { ByteLru } from './byte-lru';
import { CheckpointTable, Interval } from './checkpoints';
import { since, TierMetrics } from './metrics';
import { Singleflight } from './singleflight';

/**
 * Inflated bytes kept per interval: from INFLATED_BEHIND before the read
 * that asked for them to INFLATED_AHEAD after that (or to what the read
 * needs). An interval is up to 2 MiB (the default spacing), and keeping
 * whole prefixes from its checkpoint, as before, made one interval most of
 * a mount's cache; a sequential reader only ever needs the bytes around it.
 */
const INFLATED_BEHIND = 128 << 10;
const INFLATED_AHEAD = 768 << 10;

/**
 * Reading on through a layer, across files (mount reads only). The kernel
 * reads ahead within a file, never into the next one, so a program that
 * reads the files of a directory in the order they were packed (`find |
 * xargs cat`, a package's modules) pays a round trip per file. A mount read
 * whose length is not a whole number of pages ends at its file's end (the
 * kernel asks for whole pages, the mount clips them to the file). From the
 * second such read in a row that starts within READ_ON_GAP after the last
 * one ended, the layer's next bytes are fetched with it: READ_ON_FIRST of
 * them, doubling up to READ_ON_MAX while such reads keep coming, asked for
 * again once a read passes half of what was asked for last. The price is
 * the bytes of the files the program skips. Measured on the cold-start
 * image (bench/coldstart.ts, node_modules read with find | xargs cat): the
 * Range requests for that layer went from 67 to 22 for 0.24 MB more of it
 * (and 0.05 MB more of the python layer, its .pyc files read now and then
 * in packed order); 32 KiB doubling to 256 KiB within 128 KiB: 33 requests
 * for 0.17 MB; 128 KiB to 1 MiB within 512 KiB: 16 for 0.31 MB, and 0.2 MB
 * more of the python layer.
 */
const READ_ON_GAP = 256 << 10;
const READ_ON_FIRST = 64 << 10;
const READ_ON_MAX = 512 << 10;
const PAGE = 4096;

/** Where the file reads of one layer have got to (see READ_ON_GAP). */
interface ReadStream {
  /** Uncompressed end of the last file read to its end. */
  end: number;
  /** Uncompressed offset up to which the layer's bytes were asked for ahead; how many were asked for last. */
  aheadTo: number;
  ahead: number;
}

/** Uncompressed [from, to) of a layer by checkpoint interval: each piece's offsets are in its interval. */
function piecesOf(table: CheckpointTable, from: number, to: number): Array<{ iv: Interval; from: number; to: number }> {
  const pieces: Array<{ iv: Interval; from: number; to: number }> = [];
  for (let at = from; at < to; ) {
    const iv = table.intervalAt(at);
    const end = Math.min(to, iv.end);
    pieces.push({ iv, from: at - iv.start, to: end - iv.start });
    at = end;
  }
  return pieces;
}

/** Bytes of an interval inflated: [at, at + data.length), offsets in the interval. */
interface InflatedRange {
  at: number;
  data: Buffer;
}

/** Bytes read, and whether they are the caller's own (see SourceTier.readView). */
export interface ReadBytes {
  bytes: Buffer;
  owned: boolean;
}

/** What the source tier needs to know about one layer. */
export interface SourceLayer {
  index: number;
  descriptor: Descriptor;
  diffId: string;
  uncompressedSize: number;
  format: 'gzip' | 'tar';
  /** The serialized checkpoint index, fetched on first use. */
  checkpoints(): Buffer;
  /** A reader of its checkpoints; by default one over checkpoints()'s copy. */
  reader?(): LayerReader;
}

interface LayerState {
  table: CheckpointTable;
  reader: LayerReader;
}

export class SourceTier {
  readonly metrics = new TierMetrics();
  /** Compressed bytes fetched from the source for reads (not fills). */
  wireBytes = 0;
  private readonly state = new Map<number, LayerState>();
  /** Inflated bytes of intervals: key -> uncompressed bytes [iv.start + at, iv.start + at + length), `at` in inflatedAt. */
  private readonly intervals: ByteLru<string>;
  private readonly inflatedAt = new Map<string, number>();
  /** Fetched blob bytes by interval key, least recently used first. */
  private readonly spans = new Map<string, FetchedSpan>();
  /** Bytes asked for by the spans in `spans`, and the most they may hold. */
  private spanBytes = 0;
  private readonly spanBudget: number;
  private readonly flight = new Singleflight<string, InflatedRange>();
  /** Inflates in flight, by interval key: settle when it is done (either way). */
  private readonly inflating = new Map<string, Promise<void>>();
  /** Reads of files to their end, per layer (see READ_ON_GAP). */
  private readonly streams = new Map<number, ReadStream>();

  /**
   * @param source opens the image source on first use
   * @param memoryMetrics counts reads served from the in-memory interval cache
   * @param memoryBytes bytes of inflated and fetched interval bytes kept in memory (a third and two thirds)
   */
  constructor(
    private readonly source: () => Promise<ImageSource>,
    private readonly memoryMetrics: TierMetrics,
    memoryBytes: number = 32 << 20,
  ) {
    // Fetched bytes are the ones that cost a round trip to the source if
    // dropped, so they get the larger share; inflated ones only cost CPU to
    // remake from them.
    // An inflated prefix that leaves the cache is freed at once (it is
    // replaced by a longer one as an interval is read on, many MiB a
    // second on a cold walk, and would otherwise wait, promoted, for a full
    // collection: memory.ts). Safe because every reader of one copies out
    // of it without waiting on anything but promise reactions (read()),
    // and a cache change needs an inflate to finish: a later turn.
    this.intervals = new ByteLru(Math.floor(memoryBytes / 3), (dropped) => native.releaseBuffer(dropped));
    this.spanBudget = memoryBytes - Math.floor(memoryBytes / 3);
  }

  /** Bytes held in memory: inflated interval prefixes, and fetched blob bytes. */
  get cachedBytes(): { inflated: number; fetched: number } {
    return { inflated: this.intervals.bytes, fetched: this.spanBytes };
  }

  private layerState(layer: SourceLayer): LayerState {
    let s = this.state.get(layer.index);
    if (!s) {
      const buf = layer.checkpoints();
      const reader = layer.reader ? layer.reader() : new LayerReader(buf);
      s = { table: new CheckpointTable(buf, `layer ${layer.index} (${layer.descriptor.digest})`, (i) => reader.window(i)), reader };
      // Both copied what they keep out of it: a layer's index is MiBs for a
      // multi-GiB layer, freed now rather than at a full collection.
      native.releaseBuffer(buf);
      if (s.table.compressedSize !== layer.descriptor.size || s.table.uncompressedSize !== layer.uncompressedSize) {
        throw new ClipError('ECORRUPT', `layer ${layer.index}: its checkpoint index describes a different blob than the archive's layer table`);
      }
      this.state.set(layer.index, s);
    }
    return s;
  }

  /**
   * Uncompressed bytes [offset, offset + length) of `layer`, from the source.
   * Errors: EIO/ETRUNCATED/ENOENT/EAUTH from the source, ECORRUPT/EDIGEST
   * when the fetched bytes do not inflate to what the index recorded.
   */
  async read(layer: SourceLayer, offset: number, length: number): Promise<Buffer> {
    return (await this.readBytes(layer, offset, length, false)).bytes;
  }

  /**
   * read(), for a caller that uses the bytes at once (the mount, replying to
   * the kernel): a read inside one interval is a view of the tier's
   * inflated bytes, no copy (`owned` false), valid until the current turn of
   * the event loop ends: the tier frees inflated bytes only after an
   * inflate or a fill completes, which takes a later turn. Never free a
   * view. Otherwise, as read() (`owned` true).
   */
  readView(layer: SourceLayer, offset: number, length: number): Promise<ReadBytes> {
    return this.readBytes(layer, offset, length, true);
  }

  private async readBytes(layer: SourceLayer, offset: number, length: number, view: boolean): Promise<ReadBytes> {
    const start = performance.now();
    if (layer.format === 'tar') throw new ClipError('EINVAL', `layer ${layer.index} is a plain tar: its ranges can't be proven, read it from a verified copy`);
    const { table } = this.layerState(layer);
    const pieces = piecesOf(table, offset, offset + length);
    if (pieces.length > 1) this.fetchRuns(layer, table, pieces);
    if (view && length % PAGE !== 0) this.readOn(layer, table, offset, offset + length);
    if (view && pieces.length === 1) {
      const [p] = pieces;
      const key = `${layer.index}:${p.iv.index}`;
      const cached = this.inflatedCovering(key, p.from, p.to);
      const got = cached ?? (await this.intervalRange(layer, p.iv, key, p.from, p.to));
      (cached ? this.memoryMetrics : this.metrics).hit(length, since(start));
      return { bytes: got.data.subarray(p.from - got.at, p.to - got.at), owned: false };
    }
    let fromMemory = true;
    // A copy (callers may keep it), each piece copied as soon as it is
    // there: inflated bytes may be freed once the cache drops them, so
    // none are held across a wait for another piece.
    const out = Buffer.allocUnsafe(length);
    const copy = (p: (typeof pieces)[number], at: number, got: InflatedRange) => {
      // Never seen; guards the early free above: a freed Buffer has no bytes.
      if (got.data.copy(out, at, p.from - got.at, p.to - got.at) !== p.to - p.from) {
        throw new ClipError('EIO', `layer ${layer.index}: interval ${p.iv.index}'s inflated bytes went away while being read`);
      }
    };
    let at = 0;
    await Promise.all(
      pieces.map((p) => {
        const key = `${layer.index}:${p.iv.index}`;
        const outAt = at;
        at += p.to - p.from;
        const cached = this.inflatedCovering(key, p.from, p.to);
        if (cached) {
          copy(p, outAt, cached);
          return undefined;
        }
        fromMemory = false;
        return this.intervalRange(layer, p.iv, key, p.from, p.to).then((got) => copy(p, outAt, got));
      }),
    );
    (fromMemory ? this.memoryMetrics : this.metrics).hit(length, since(start));
    return { bytes: out, owned: true };
  }

  private async fetch(source: ImageSource, layer: SourceLayer, begin: number, end: number): Promise<Buffer> {
    try {
      const bytes = await source.readBlobRange(layer.descriptor, begin, end);
      this.wireBytes += bytes.length;
      return bytes;
    } catch (e) {
      throw this.fetchFailed(layer, begin, end, e);
    }
  }

  private fetchFailed(layer: SourceLayer, begin: number, end: number, e: unknown): ClipError {
    this.metrics.errors++;
    if (e instanceof ClipError) return e;
    return new ClipError('EIO', `layer ${layer.index} (${layer.descriptor.digest}): reading bytes ${begin}-${end} failed: ${(e as Error).message}`);
  }

  /** Fetches blob bytes [begin, end) into `span`: read straight into it where the source can (a layout's pread), else copied in. */
  private async fetchInto(source: ImageSource, layer: SourceLayer, begin: number, end: number, span: FetchedSpan): Promise<void> {
    if (!source.readBlobRangeInto) {
      const bytes = await this.fetch(source, layer, begin, end);
      span.land(begin, bytes);
      // The source's Buffer is ours and copied now: freed at once rather
      // than at a full collection (memory.ts).
      native.releaseBuffer(bytes);
      return;
    }
    try {
      await source.readBlobRangeInto(layer.descriptor, begin, end, span.target(begin, end));
      this.wireBytes += end - begin;
    } catch (e) {
      throw this.fetchFailed(layer, begin, end, e);
    }
  }

  /** The cached inflated bytes of interval `key` if they cover [from, to) of it (offsets in the interval). */
  private inflatedCovering(key: string, from: number, to: number): InflatedRange | null {
    const data = this.intervals.get(key);
    if (!data) return null;
    const at = this.inflatedAt.get(key) ?? 0;
    return from >= at && to <= at + data.length ? { at, data } : null;
  }

  /** Inflated bytes of interval `iv` covering [from, to) of it. */
  private async intervalRange(layer: SourceLayer, iv: Interval, key: string, from: number, to: number): Promise<InflatedRange> {
    const cached = this.inflatedCovering(key, from, to);
    if (cached) return cached;
    const until = this.wantUntil(this.layerState(layer).table, iv, key, to);
    // What is kept starts a little before the read: the kernel's read-ahead
    // requests of one file run concurrently and land slightly out of order.
    const keepFrom = Math.max(0, from - INFLATED_BEHIND);
    // Reads that need the same bytes share one load.
    return this.flight.run(`${key}:${until}:${keepFrom}`, () => this.loadInterval(layer, iv, key, keepFrom, from, to, until));
  }

  /** How far into interval `iv` to fetch for its bytes up to `to` (an offset in the interval). */
  private wantUntil(table: CheckpointTable, iv: Interval, key: string, to: number): number {
    const until = table.prefix(iv, iv.start + to).until;
    // An interval read again further in is read on (a file read in pieces,
    // the kernel's read-ahead after a page fault): fetch at least as much
    // again as is there, so walking an interval costs a few round trips, not
    // one per proof, and never more than twice the bytes it reaches.
    const have = this.spans.get(key)?.requested ?? iv.begin;
    if (have > iv.begin && until > have) return Math.max(until, table.proofEndAtOrAfter(iv, iv.begin + 2 * (have - iv.begin)));
    return until;
  }

  /** Notes a file read to its end, [offset, end) of its layer, and fetches on past it when such reads follow each other (READ_ON_GAP). */
  private readOn(layer: SourceLayer, table: CheckpointTable, offset: number, end: number): void {
    const stream = this.streams.get(layer.index);
    if (!stream || offset < stream.end || offset - stream.end > READ_ON_GAP) {
      this.streams.set(layer.index, { end, aheadTo: end, ahead: 0 });
      return;
    }
    stream.end = end;
    // Ask again once a read passes half of what was asked for last time.
    if (stream.end < stream.aheadTo - stream.ahead / 2) return;
    const ahead = stream.ahead === 0 ? READ_ON_FIRST : Math.min(READ_ON_MAX, 2 * stream.ahead);
    const from = Math.max(end, stream.aheadTo);
    const to = Math.min(table.uncompressedSize, end + ahead);
    stream.ahead = ahead;
    stream.aheadTo = Math.max(stream.aheadTo, to);
    if (to > from) this.fetchRuns(layer, table, piecesOf(table, from, to), 1);
  }

  /**
   * Starts one fetch for each run of consecutive pieces of a read whose
   * bytes nobody has asked for yet, instead of one per interval: a read
   * that crosses several intervals (the kernel's read-ahead asks for up to
   * 1 MiB at once; with checkpoints every 64 KiB that is 16 intervals) is
   * one Range request, as their blob bytes are contiguous: one round trip
   * and one response header, not one each. Each interval's part lands in
   * its own span, so the loads that follow find it asked for (as if each
   * had been fetched alone) and prove and inflate it as before. Runs of
   * fewer than `minRun` pieces are left to the loads (a read's single
   * interval is fetched by its own load; a read-on asks for every run).
   */
  private fetchRuns(layer: SourceLayer, table: CheckpointTable, pieces: Array<{ iv: Interval; from: number; to: number }>, minRun = 2): void {
    let run: Array<{ iv: Interval; key: string; until: number }> = [];
    const flush = () => {
      if (run.length >= minRun) this.fetchRun(layer, run);
      run = [];
    };
    for (const p of pieces) {
      const key = `${layer.index}:${p.iv.index}`;
      if (this.inflatedCovering(key, p.from, p.to)) {
        flush();
        continue;
      }
      const until = this.wantUntil(table, p.iv, key, p.to);
      const from = this.spans.get(key)?.requested ?? p.iv.begin;
      // A piece goes on a run when nothing of its interval is asked for:
      // its bytes then follow on from where the run's last piece ends.
      const goesOn = until > from && run.length > 0 && from === p.iv.begin && run[run.length - 1].until >= p.iv.begin;
      if (!goesOn) flush();
      if (until > from) run.push({ iv: p.iv, key, until });
    }
    flush();
  }

  private fetchRun(layer: SourceLayer, run: Array<{ iv: Interval; key: string; until: number }>): void {
    // Each span is in use until its part has landed: an eviction meanwhile
    // must not free the Buffer the part is copied into (FetchedSpan).
    const parts = run.map(({ iv, key, until }) => {
      const span = this.span(iv, key);
      span.users++;
      const from = span.requested;
      this.spanBytes += until - from;
      span.requested = until;
      return { key, span, from, until };
    });
    const begin = parts[0].from;
    const whole = this.source()
      .then((source) => this.fetch(source, layer, begin, parts[parts.length - 1].until))
      .then((bytes) => {
        for (const part of parts) part.span.land(part.from, bytes.subarray(part.from - begin, part.until - begin));
        // The source's Buffer is ours and copied now (memory.ts).
        native.releaseBuffer(bytes);
      });
    for (const { key, span } of parts) {
      span.landed = Promise.all([span.landed, whole]).then(() => undefined);
      span.landed.catch(() => this.dropSpan(key, span));
    }
    const release = () => {
      for (const { span } of parts) span.release();
      this.evictSpans();
    };
    whole.then(release, release);
    this.evictSpans();
  }

  /** Interval `iv`'s span, made (empty) if there is none, as the most recently used. */
  private span(iv: Interval, key: string): FetchedSpan {
    let span = this.spans.get(key);
    if (span) {
      this.spans.delete(key);
    } else {
      span = new FetchedSpan(iv);
    }
    this.spans.set(key, span);
    return span;
  }

  /** Forgets `key`'s span (its memory goes once no load uses it). */
  private dropSpan(key: string, span: FetchedSpan): void {
    if (this.spans.get(key) !== span) return;
    this.spans.delete(key);
    this.spanBytes -= span.requested - span.begin;
    span.drop();
  }

  /**
   * Blob bytes [iv.begin, until) of `span` (or more): a fetch of what is
   * not asked for yet, started at once (a read that needs more than a
   * running fetch brings does not wait for it to ask for the rest), then
   * everything asked for so far. Not proven here: the engine proves what it
   * inflates. A failed fetch drops the span: nothing half-fetched is kept.
   */
  private async compressedPrefix(source: ImageSource, layer: SourceLayer, key: string, span: FetchedSpan, until: number): Promise<Buffer> {
    if (span.requested < until) {
      const from = span.requested;
      this.spanBytes += until - from;
      span.requested = until;
      const tail = this.fetchInto(source, layer, from, until, span);
      span.landed = Promise.all([span.landed, tail]).then(() => undefined);
      span.landed.catch(() => this.dropSpan(key, span));
      this.evictSpans();
    }
    await span.landed;
    return span.bytes(until);
  }

  /** Drops the least recently used spans while they hold more than their budget. */
  private evictSpans(): void {
    for (const [key, span] of this.spans) {
      if (this.spanBytes <= this.spanBudget) break;
      // A span a load is reading stays: dropped, the next read of its
      // interval would fetch it all again while the load still holds it.
      if (span.users === 0) this.dropSpan(key, span);
    }
  }

  /**
   * Interval `iv`'s inflated bytes from `keepFrom` on, covering [from, to)
   * (offsets in the interval): fetches blob bytes up to `until` and
   * inflates from the checkpoint.
   */
  private async loadInterval(layer: SourceLayer, iv: Interval, key: string, keepFrom: number, from: number, to: number, until: number): Promise<InflatedRange> {
    const source = await this.source();
    // The span's memory stays while this load reads it (see FetchedSpan).
    const span = this.span(iv, key);
    span.users++;
    try {
      return await this.loadFromSpan(source, layer, iv, key, span, { keepFrom, from, to }, until);
    } finally {
      span.release();
      // Spans over the budget that were in use when it was last enforced
      // go once their loads are done, not at the next fetch: on a long
      // sequential read, they were 2-3 MiB more at the peak.
      this.evictSpans();
    }
  }

  private async loadFromSpan(
    source: ImageSource,
    layer: SourceLayer,
    iv: Interval,
    key: string,
    span: FetchedSpan,
    want: { keepFrom: number; from: number; to: number },
    until: number,
  ): Promise<InflatedRange> {
    const { table, reader } = this.layerState(layer);
    const what = `layer ${layer.index} (${layer.descriptor.digest}) from ${source.describe()}`;
    let compressed: Buffer;
    let data: Buffer;
    for (;;) {
      compressed = await this.compressedPrefix(source, layer, key, span, until);
      // Inflate what the fetched proofs give, not just what this read needs
      // (the reads after it are on their way), but at most INFLATED_AHEAD:
      // each load inflates from the checkpoint again anyway, and what it
      // keeps is memory.
      const { reach } = table.prefixWithin(iv, iv.begin + compressed.length);
      const end = Math.min(reach - iv.start, Math.max(want.to, want.keepFrom + INFLATED_AHEAD));
      // One inflate per interval at a time, and none whose output is there
      // already: concurrent misses of one interval (the kernel's read-ahead
      // of a large file) each used to inflate it from its checkpoint, each
      // into a Buffer of its own, as fast as the fetches landed; measured on
      // a cold walk, those dead Buffers were most of the mount's peak.
      for (let turn = this.inflating.get(key); turn; turn = this.inflating.get(key)) await turn;
      const inflated = this.inflatedCovering(key, want.from, want.to);
      if (inflated) return inflated;
      const inflate = reader.readFrom(compressed, iv.begin, iv.start + want.keepFrom, end - want.keepFrom);
      const done = inflate.then(
        () => undefined,
        () => undefined,
      );
      this.inflating.set(key, done);
      void done.then(() => {
        if (this.inflating.get(key) === done) this.inflating.delete(key);
      });
      try {
        data = await inflate;
        break;
      } catch (e) {
        const err = e as ClipError;
        // An engine that gets less out of the proofs than the indexer
        // measured needs the rest of the span (never seen; not an error).
        if (err.code === 'ETRUNCATED' && iv.begin + compressed.length < iv.until) {
          until = iv.until;
          continue;
        }
        this.metrics.errors++;
        // Bad bytes are not kept: the next read fetches them again.
        this.dropSpan(key, span);
        if (err.code === 'EDIGEST') throw new ClipError('EDIGEST', `${what}: ${err.message}`);
        throw new ClipError(
          err.code === 'ETRUNCATED' ? 'ETRUNCATED' : 'ECORRUPT',
          `${what}: blob bytes ${iv.begin}-${iv.begin + compressed.length} do not inflate (${err.message}): the source sent wrong or short bytes`,
        );
      }
    }
    if (iv.start + want.keepFrom + data.length === iv.end) {
      try {
        table.verifyInterval(iv, data, want.keepFrom, what);
        if (iv.index === table.checkpoints.length - 1 && compressed.length >= 8) {
          const trailer = compressed.subarray(compressed.length - 8);
          if (!trailer.equals(Buffer.alloc(8))) table.verifyTrailer(trailer, what);
        }
      } catch (e) {
        this.metrics.errors++;
        this.dropSpan(key, span);
        throw e;
      }
    }
    // Keep whichever reaches further (reads move on through an interval).
    const cached = this.intervals.get(key);
    const cachedAt = this.inflatedAt.get(key) ?? 0;
    if (cached && cachedAt + cached.length >= want.keepFrom + data.length && cachedAt <= want.from) {
      // A load that finished first kept as much and covers this read: ours
      // is no one else's yet (our waiters get what we return), so it goes now.
      native.releaseBuffer(data);
      return { at: cachedAt, data: cached };
    }
    this.intervals.set(key, data);
    this.inflatedAt.set(key, want.keepFrom);
    return { at: want.keepFrom, data };
  }

  /**
   * Drops what this tier holds for a layer that is on disk now: its
   * in-memory interval prefixes (fetched and inflated), and its checkpoint table and reader (the checkpoints
   * with their 32 KiB windows: a few MiB for a layer of a few hundred MB,
   * which a long-lived mount would otherwise keep for nothing). A later
   * read of the layer (the disk copy evicted) loads them again.
   */
  forgetLayer(index: number): void {
    this.intervals.deleteWhere((k) => k.startsWith(`${index}:`));
    for (const k of [...this.inflatedAt.keys()]) if (k.startsWith(`${index}:`)) this.inflatedAt.delete(k);
    for (const [k, span] of [...this.spans]) if (k.startsWith(`${index}:`)) this.dropSpan(k, span);
    this.state.delete(index);
    this.streams.delete(index);
  }
}

/**
 * The fetched blob bytes of one interval: one Buffer the size of the whole
 * span, [iv.begin, iv.until), filled from its start as fetches land (a
 * fetch's own Buffer is copied in and freed at once). Its pages become
 * resident only as they are written. Before, each further fetch of an
 * interval concatenated a new, longer prefix, and the shorter ones were
 * garbage that outlived several collections: on a cold walk of the demo
 * image with every read a source span, most of the mount's ~20 MiB of dead
 * Buffers at its peak.
 *
 * The Buffer is freed (native.releaseBuffer) when the span has been dropped
 * from the tier and no load is reading it (`users`): a load hands views of
 * it to the inflating engine on another thread, which must never see it go.
 */
class FetchedSpan {
  readonly begin: number;
  private readonly buf: Buffer;
  /** Blob offset up to which fetches were started. */
  requested: number;
  /** Settles when everything requested so far has landed (rejects if a fetch failed). */
  landed: Promise<void> = Promise.resolve();
  users = 0;
  private dropped = false;

  constructor(iv: Interval) {
    this.begin = iv.begin;
    this.requested = iv.begin;
    this.buf = Buffer.allocUnsafeSlow(iv.until - iv.begin);
  }

  land(from: number, bytes: Buffer): void {
    bytes.copy(this.buf, from - this.begin);
  }

  /** Where blob bytes [from, until) go: a view, valid while the span is in use. */
  target(from: number, until: number): Buffer {
    return this.buf.subarray(from - this.begin, until - this.begin);
  }

  /** Blob bytes [begin, until), a view: valid while this span is in use. */
  bytes(until: number): Buffer {
    return this.buf.subarray(0, until - this.begin);
  }

  release(): void {
    this.users--;
    if (this.dropped && this.users === 0) native.releaseBuffer(this.buf);
  }

  drop(): void {
    this.dropped = true;
    if (this.users === 0) native.releaseBuffer(this.buf);
  }
}
