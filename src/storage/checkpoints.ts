/**
 * The source tier's view of a layer's checkpoints: the serialized index
 * (byte table in native/core/checkpoint_index.h) parsed into the intervals
 * between consecutive checkpoints, and the check that makes a span read
 * trustworthy enough to serve.
 *
 * The source tier inflates intervals from their start: interval i holds the
 * uncompressed bytes from checkpoint i to checkpoint i+1 (or the end of the
 * stream) and needs blob bytes from checkpoint i (including the byte with
 * its leading bits) up to checkpoint i+1's compressed offset: checkpoint i's
 * span. A range request cannot be checked against the blob's digest, but
 * pieces of a span can be checked against their own: the index (version 3)
 * cuts each span into proofs of a few KiB, records the SHA-256 of each and
 * how far inflation from the checkpoint gets with the span's bytes up to
 * its end (its output end), and the engine (LayerReader.readFrom) verifies
 * the fetched proofs before inflating any of them. So the beginning of an
 * interval can be fetched, proven and inflated alone: the tier fetches up to
 * the first proof whose output end covers the read. A wrong byte anywhere
 * in the fetch is EDIGEST; that is the proof. The checks below, on what a
 * whole interval inflated to, are kept as a second line behind it:
 *
 *   - it must inflate at all, and to exactly the interval's length
 *     (the engine throws ECORRUPT/ETRUNCATED otherwise);
 *   - its last bytes must equal checkpoint i+1's stored window wherever the
 *     window holds real bytes. Sparse windows keep real bytes only where
 *     later data copies from; the rest is filler, which the indexer writes
 *     as zero (earlier: as the byte's group number, i / ceil(length / 256)).
 *     A window byte that is neither 0 nor its group number is therefore
 *     real, whichever way the window was made, and is compared; the others
 *     prove nothing and are skipped. (If the indexer's filler changes, this
 *     rule must follow it: docs/format.md.)
 *   - the last interval of a gzip stream must be followed by the member
 *     trailer whose ISIZE matches the member's length.
 *
 * Version-1 (no digests) and version-2 (one per span) indexes are refused
 * (EUNSUPPORTED: re-index).
 */
import { ClipError } from '../errors';

const HEADER_SIZE = 56;
const CHECKPOINT_SIZE = 32; // fixed bytes per checkpoint
const PROOF_SIZE = 40; // per proof: u64 output end, SHA-256
const VERSION = 3;
const MAGIC = 'CLIPCKPT';

export interface Checkpoint {
  /** Bytes from the start of the uncompressed stream. */
  uncompressedOffset: number;
  /** First whole byte of the block in the blob. */
  compressedOffset: number;
  /** 0..7 bits of byte compressedOffset-1 that belong to the block. */
  bits: number;
  kind: 'block' | 'member';
  /** Bytes of the uncompressed window before the checkpoint. */
  windowLength: number;
  /** Where the stored (raw deflate) window sits in the serialized index, and its length. */
  storedOffset: number;
  storedLength: number;
  /** Output end of each proof of its span (uncompressed offsets; the last is the interval's end). */
  proofOutputs: Float64Array;
}

export interface Interval {
  index: number;
  /** Uncompressed [start, end). */
  start: number;
  end: number;
  /** Blob bytes [begin, until) to fetch. */
  begin: number;
  until: number;
}

const NO_PROOFS = new Float64Array(0);

export class CheckpointTable {
  readonly format: 'gzip' | 'tar';
  readonly compressedSize: number;
  readonly uncompressedSize: number;
  /** Compressed bytes per proof. */
  readonly proofSize: number;
  readonly checkpoints: Checkpoint[];

  /**
   * Parses a serialized checkpoint index (already validated by the archive
   * reader's CRC; the fields used here are checked again).
   * Errors: ECORRUPT when it is not one, or is inconsistent.
   */
  /**
   * @param windows checkpoint i's window, inflated (the engine's reader has
   *   them; only verifyInterval needs them): the table keeps no copy of the
   *   serialized index, which for a multi-GiB layer is several MiB of windows.
   */
  constructor(serialized: Buffer, what: string, private readonly windows: ((i: number) => Buffer) | null = null) {
    const bad = (why: string) => new ClipError('ECORRUPT', `${what}: checkpoint index ${why}`);
    if (serialized.length < HEADER_SIZE + 4 || serialized.toString('latin1', 0, 8) !== MAGIC) throw bad('has no CLIPCKPT header');
    const version = serialized.readUInt32LE(8);
    if (version !== VERSION) {
      throw new ClipError(
        'EUNSUPPORTED',
        version < VERSION
          ? `${what}: checkpoint index version ${version} has ${version === 1 ? 'no digests' : 'one digest per span (too coarse)'}, so reads from the source could not be proven piece by piece: re-index the image with this build`
          : `${what}: checkpoint index version ${version} is newer than this build reads (${VERSION})`,
      );
    }
    const formatByte = serialized.readUInt8(16);
    if (formatByte > 1) throw bad(`has unknown format ${formatByte}`);
    this.format = formatByte === 1 ? 'gzip' : 'tar';
    this.compressedSize = Number(serialized.readBigUInt64LE(24));
    this.uncompressedSize = Number(serialized.readBigUInt64LE(32));
    const count = serialized.readUInt32LE(48);
    this.proofSize = serialized.readUInt32LE(52);
    if (this.format === 'gzip' && this.proofSize === 0) throw bad('has no proof size');
    this.checkpoints = [];
    const proofAt: number[] = []; // per checkpoint: where its proofs sit, how many
    let at = HEADER_SIZE;
    for (let i = 0; i < count; i++) {
      if (at + CHECKPOINT_SIZE > serialized.length - 4) throw bad('is truncated');
      const proofCount = serialized.readUInt32LE(at + 28);
      const proofsAt = at + CHECKPOINT_SIZE;
      if (proofCount < 1 || proofsAt + proofCount * PROOF_SIZE > serialized.length - 4) throw bad('is truncated');
      // Views of one array for every span's proofs (set below): a
      // multi-GiB layer has tens of thousands, which as arrays of their own
      // took MiBs of heap.
      const proofOutputs = NO_PROOFS;
      proofAt.push(proofsAt, proofCount);
      const c: Checkpoint = {
        uncompressedOffset: Number(serialized.readBigUInt64LE(at)),
        compressedOffset: Number(serialized.readBigUInt64LE(at + 8)),
        bits: serialized.readUInt8(at + 16),
        kind: serialized.readUInt8(at + 17) === 1 ? 'member' : 'block',
        windowLength: serialized.readUInt32LE(at + 20),
        storedOffset: proofsAt + proofCount * PROOF_SIZE,
        storedLength: serialized.readUInt32LE(at + 24),
        proofOutputs,
      };
      at = c.storedOffset + c.storedLength;
      if (at > serialized.length - 4) throw bad('is truncated');
      const prev = this.checkpoints[i - 1];
      if (
        c.uncompressedOffset >= this.uncompressedSize ||
        c.compressedOffset > this.compressedSize ||
        (prev && (c.uncompressedOffset <= prev.uncompressedOffset || c.compressedOffset < prev.compressedOffset)) ||
        c.windowLength > 32768
      ) {
        throw bad(`has an inconsistent checkpoint ${i}`);
      }
      this.checkpoints.push(c);
    }
    let proofs = 0;
    for (let i = 1; i < proofAt.length; i += 2) proofs += proofAt[i];
    const outputs = new Float64Array(proofs);
    for (let i = 0, k = 0; i < this.checkpoints.length; i++) {
      const [from, n] = [proofAt[2 * i], proofAt[2 * i + 1]];
      for (let j = 0; j < n; j++) outputs[k + j] = Number(serialized.readBigUInt64LE(from + j * PROOF_SIZE));
      this.checkpoints[i].proofOutputs = outputs.subarray(k, k + n);
      k += n;
    }
    if (this.format === 'gzip' && this.uncompressedSize > 0 && (count === 0 || this.checkpoints[0].uncompressedOffset !== 0)) {
      throw bad('does not start with a checkpoint at offset 0');
    }
  }

  /** The interval holding uncompressed `offset` (gzip layers; 0 <= offset < uncompressedSize). */
  intervalAt(offset: number): Interval {
    const cps = this.checkpoints;
    let lo = 0;
    let hi = cps.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (cps[mid].uncompressedOffset <= offset) lo = mid;
      else hi = mid - 1;
    }
    return this.interval(lo);
  }

  interval(i: number): Interval {
    const c = this.checkpoints[i];
    const next = this.checkpoints[i + 1];
    return {
      index: i,
      start: c.uncompressedOffset,
      end: next ? next.uncompressedOffset : this.uncompressedSize,
      begin: c.compressedOffset - (c.bits > 0 ? 1 : 0),
      until: next ? next.compressedOffset : this.compressedSize,
    };
  }

  /**
   * How much of interval `iv` to fetch and inflate for its bytes up to
   * uncompressed `end` (iv.start < end <= iv.end): blob bytes
   * [iv.begin, until) give its output up to `reach` >= end, by the first
   * proof whose output end covers `end`. The native reader applies the same
   * rule (SpanFor) and checks every proof before inflating.
   */
  prefix(iv: Interval, end: number): { until: number; reach: number } {
    const outputs = this.checkpoints[iv.index].proofOutputs;
    let j = 0;
    while (j < outputs.length - 1 && outputs[j] < end) j++;
    return { until: Math.min(iv.begin + (j + 1) * this.proofSize, iv.until), reach: outputs[j] };
  }

  /** The end of the proof of interval `iv` that holds blob offset `at` (or the interval's end). */
  proofEndAtOrAfter(iv: Interval, at: number): number {
    if (at <= iv.begin) return iv.begin;
    return Math.min(iv.begin + Math.ceil((at - iv.begin) / this.proofSize) * this.proofSize, iv.until);
  }

  /** The longest prefix of interval `iv` whose proofs lie inside blob bytes [iv.begin, have): as prefix(). */
  prefixWithin(iv: Interval, have: number): { until: number; reach: number } {
    const outputs = this.checkpoints[iv.index].proofOutputs;
    const whole = have >= iv.until ? outputs.length : Math.floor((have - iv.begin) / this.proofSize);
    const j = Math.max(0, Math.min(outputs.length, whole) - 1);
    return { until: Math.min(iv.begin + (j + 1) * this.proofSize, iv.until), reach: outputs[j] };
  }

  /** Checkpoint i's window (windowLength bytes; sparse). Errors: ECORRUPT when the stored window does not inflate. */
  window(i: number): Buffer {
    const c = this.checkpoints[i];
    if (c.windowLength === 0) return Buffer.alloc(0);
    if (!this.windows) throw new ClipError('EINVAL', 'this checkpoint table was made without its windows');
    const out = this.windows(i);
    if (out.length !== c.windowLength) throw new ClipError('ECORRUPT', `checkpoint ${i}'s window is ${out.length} bytes, not ${c.windowLength}`);
    return out;
  }

  /**
   * Checks interval `iv`'s inflated bytes (see the file comment): `data`
   * holds them from offset `at` of the interval to its end, and the part of
   * the next checkpoint's window that falls in it is compared. Returns how
   * many bytes were compared.
   * Errors: EDIGEST naming the interval when anything disagrees.
   */
  verifyInterval(iv: Interval, data: Buffer, at: number, what: string): number {
    if (at + data.length !== iv.end - iv.start) {
      throw new ClipError('EDIGEST', `${what}: interval ${iv.index} inflated to ${at + data.length} bytes, not ${iv.end - iv.start}`);
    }
    const nextIndex = iv.index + 1;
    if (nextIndex >= this.checkpoints.length) return 0;
    const next = this.checkpoints[nextIndex];
    if (next.windowLength === 0) return 0;
    const window = this.window(nextIndex);
    const length = window.length;
    const group = Math.max(1, Math.ceil(length / 256));
    const windowStart = next.uncompressedOffset - length; // uncompressed offset of window[0]
    let compared = 0;
    for (let k = Math.max(0, iv.start - windowStart); k < length; k++) {
      const w = window[k];
      if (w === 0 || w === (Math.floor(k / group) & 0xff)) continue; // possibly filler: proves nothing
      const pos = windowStart + k - iv.start - at;
      if (pos < 0) continue; // before the bytes given
      if (data[pos] !== w) {
        throw new ClipError(
          'EDIGEST',
          `${what}: bytes inflated from blob bytes ${iv.begin}-${iv.until} differ at uncompressed offset ${iv.start + pos} ` +
            `from what indexing recorded: the source sent wrong bytes`,
        );
      }
      compared++;
    }
    return compared;
  }

  /**
   * For the last interval: checks the gzip trailer (the 8 bytes ending the
   * blob) against the last member's length. `trailer` is those 8 bytes.
   * Errors: EDIGEST.
   */
  verifyTrailer(trailer: Buffer, what: string): void {
    let memberStart = 0;
    for (const c of this.checkpoints) if (c.kind === 'member') memberStart = c.uncompressedOffset;
    const isize = trailer.readUInt32LE(4);
    const want = (this.uncompressedSize - memberStart) % 2 ** 32;
    if (isize !== want) {
      throw new ClipError('EDIGEST', `${what}: the gzip trailer says ${isize} bytes, the index says ${want}: the source sent wrong bytes`);
    }
  }
}
