/**
 * The source tier: bytes of a layer nobody has cached, read from the image's
 * source (a registry over HTTP Range, or pread on an OCI layout's blob).
 *
 * A gzip layer is read in whole checkpoint intervals (see checkpoints.ts):
 * exactly the compressed span between two checkpoints is fetched, proven
 * against the span's SHA-256 and inflated from the first checkpoint by the
 * engine (LayerReader.readFrom, off the JS thread; a wrong byte is EDIGEST
 * before anything is inflated), checked against the second's recorded
 * window, and kept in a small in-memory LRU,
 * so a sequential reader (cat, extract) pays one fetch per interval.
 * Concurrent misses for the same interval share one fetch and one inflate.
 * Plain-tar layers never come here: with no span digests a Range of one
 * can't be proven, so the store reads them from a verified disk-cache fill.
 *
 * A fetch or inflate that fails, or bytes that fail the check, reject the
 * read with a ClipError (EIO, ETRUNCATED, ECORRUPT, EDIGEST): no bytes.
 */
import { ClipError } from '../errors';
import { LayerReader } from '../engine/layer';
import type { Descriptor, ImageSource } from '../oci';
import { ByteLru } from './byte-lru';
import { CheckpointTable, Interval } from './checkpoints';
import { since, TierMetrics } from './metrics';
import { Singleflight } from './singleflight';

/** What the source tier needs to know about one layer. */
export interface SourceLayer {
  index: number;
  descriptor: Descriptor;
  diffId: string;
  uncompressedSize: number;
  format: 'gzip' | 'tar';
  /** The serialized checkpoint index, fetched on first use. */
  checkpoints(): Buffer;
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
  private readonly intervals: ByteLru<string>;
  private readonly flight = new Singleflight<string, Buffer>();

  /**
   * @param source opens the image source on first use
   * @param memoryMetrics counts reads served from the in-memory interval cache
   * @param memoryBytes bytes of inflated intervals kept in memory
   */
  constructor(
    private readonly source: () => Promise<ImageSource>,
    private readonly memoryMetrics: TierMetrics,
    memoryBytes: number = 32 << 20,
  ) {
    this.intervals = new ByteLru(memoryBytes);
  }

  private layerState(layer: SourceLayer): LayerState {
    let s = this.state.get(layer.index);
    if (!s) {
      const buf = layer.checkpoints();
      s = { table: new CheckpointTable(buf, `layer ${layer.index} (${layer.descriptor.digest})`), reader: new LayerReader(buf) };
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
    const start = performance.now();
    if (layer.format === 'tar') throw new ClipError('EINVAL', `layer ${layer.index} is a plain tar: its ranges can't be proven, read it from a verified copy`);
    const { table } = this.layerState(layer);
    const pieces: Array<{ iv: Interval; from: number; to: number }> = [];
    for (let at = offset; at < offset + length; ) {
      const iv = table.intervalAt(at);
      const to = Math.min(offset + length, iv.end);
      pieces.push({ iv, from: at - iv.start, to: to - iv.start });
      at = to;
    }
    let fromMemory = true;
    const datas = await Promise.all(
      pieces.map((p) => {
        const key = `${layer.index}:${p.iv.index}`;
        const cached = this.intervals.get(key);
        if (cached) return cached;
        fromMemory = false;
        return this.flight.run(key, () => this.loadInterval(layer, p.iv, key));
      }),
    );
    let out: Buffer;
    if (pieces.length === 1) {
      out = Buffer.from(datas[0].subarray(pieces[0].from, pieces[0].to)); // a copy: callers may keep it
    } else {
      out = Buffer.allocUnsafe(length);
      let written = 0;
      pieces.forEach((p, i) => {
        written += datas[i].copy(out, written, p.from, p.to);
      });
    }
    (fromMemory ? this.memoryMetrics : this.metrics).hit(length, since(start));
    return out;
  }

  private async fetch(source: ImageSource, layer: SourceLayer, begin: number, end: number): Promise<Buffer> {
    try {
      const bytes = await source.readBlobRange(layer.descriptor, begin, end);
      this.wireBytes += bytes.length;
      return bytes;
    } catch (e) {
      this.metrics.errors++;
      if (e instanceof ClipError) throw e;
      throw new ClipError('EIO', `layer ${layer.index} (${layer.descriptor.digest}): reading bytes ${begin}-${end} failed: ${(e as Error).message}`);
    }
  }

  private async loadInterval(layer: SourceLayer, iv: Interval, key: string): Promise<Buffer> {
    const { table, reader } = this.layerState(layer);
    const source = await this.source();
    const compressed = await this.fetch(source, layer, iv.begin, iv.until);
    const what = `layer ${layer.index} (${layer.descriptor.digest}) from ${source.describe()}`;
    let data: Buffer;
    try {
      data = await reader.readFrom(compressed, iv.begin, iv.start, iv.end - iv.start);
    } catch (e) {
      this.metrics.errors++;
      const err = e as ClipError;
      if (err.code === 'EDIGEST') throw new ClipError('EDIGEST', `${what}: ${err.message}`);
      throw new ClipError(
        err.code === 'ETRUNCATED' ? 'ETRUNCATED' : 'ECORRUPT',
        `${what}: blob bytes ${iv.begin}-${iv.until} do not inflate (${err.message}): the source sent wrong or short bytes`,
      );
    }
    try {
      table.verifyInterval(iv, data, what);
      if (iv.index === table.checkpoints.length - 1 && compressed.length >= 8) {
        const trailer = compressed.subarray(compressed.length - 8);
        if (!trailer.equals(Buffer.alloc(8))) table.verifyTrailer(trailer, what);
      }
    } catch (e) {
      this.metrics.errors++;
      throw e;
    }
    this.intervals.set(key, data);
    return data;
  }

  /**
   * Drops what this tier holds for a layer that is on disk now: its
   * in-memory intervals, and its checkpoint table and reader (the checkpoints
   * with their 32 KiB windows: a few MiB for a layer of a few hundred MB,
   * which a long-lived mount would otherwise keep for nothing). A later
   * read of the layer (the disk copy evicted) loads them again.
   */
  forgetLayer(index: number): void {
    this.intervals.deleteWhere((k) => k.startsWith(`${index}:`));
    this.state.delete(index);
  }
}
