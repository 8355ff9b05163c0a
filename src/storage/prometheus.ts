/**
 * The Prometheus text exposition (format 0.0.4) of a running store and
 * mount, and an exporter that serves it over HTTP (`GET /metrics`) and/or
 * rewrites a file with it at an interval (atomically: a temporary file
 * renamed over the old one, so a reader such as node_exporter's textfile
 * collector never sees half a file).
 *
 * The numbers come from LayerStore.tierMetrics()/stats() and
 * Mount.stats(); the names are documented in docs/metrics.md. Latency
 * histograms use the fixed bounds of metrics.ts (EXPORT_BOUNDS_S), counted
 * exactly, so `_bucket{le=...}` are true cumulative counts.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { ClipError } from '../errors';
import { log } from '../log';
import type { MountStats } from '../mount/mount';
import { EXPORT_BOUNDS_S, TierMetrics } from './metrics';
import type { LayerStore } from './store';

/** What a scrape reads: either part may be missing (a store without a mount, as in `cat`). */
export interface MetricsSources {
  store?: Pick<LayerStore, 'tierMetrics' | 'stats'> | null;
  mount?: { stats(): MountStats } | null;
}

type Kind = 'counter' | 'gauge' | 'histogram';

/** The FUSE counters of MountStats, by field: metric name, type, help. */
const MOUNT_METRICS: Array<[keyof MountStats, string, Kind, string]> = [
  ['lookups', 'clip_fuse_lookups_total', 'counter', 'FUSE lookup requests.'],
  ['negativeLookups', 'clip_fuse_negative_lookups_total', 'counter', 'Lookups of names that do not exist.'],
  ['getattrs', 'clip_fuse_getattrs_total', 'counter', 'FUSE getattr requests.'],
  ['readdirs', 'clip_fuse_readdirs_total', 'counter', 'FUSE readdir requests.'],
  ['opens', 'clip_fuse_opens_total', 'counter', 'FUSE open requests.'],
  ['reads', 'clip_fuse_reads_total', 'counter', 'FUSE read requests.'],
  ['readBytes', 'clip_fuse_read_bytes_total', 'counter', 'Bytes answered to FUSE reads.'],
  ['cachedReads', 'clip_fuse_cached_reads_total', 'counter', 'Reads answered natively from a layer in the disk cache.'],
  ['cachedBytes', 'clip_fuse_cached_read_bytes_total', 'counter', 'Bytes of reads answered natively from the disk cache.'],
  ['misses', 'clip_fuse_misses_total', 'counter', 'Reads of layers not in the disk cache, handed to the storage tiers.'],
  ['missBytes', 'clip_fuse_miss_bytes_total', 'counter', 'Bytes asked for by misses.'],
  ['missCompleted', 'clip_fuse_misses_completed_total', 'counter', 'Misses answered with data.'],
  ['missFailed', 'clip_fuse_misses_failed_total', 'counter', 'Misses answered with an error.'],
  ['missTimeouts', 'clip_fuse_miss_timeouts_total', 'counter', 'Misses answered EIO at their deadline.'],
  ['lateAnswers', 'clip_fuse_late_answers_total', 'counter', 'Miss answers that came after the deadline had answered the request.'],
  ['passthroughOpens', 'clip_fuse_passthrough_opens_total', 'counter', 'Opens served by the kernel from a backing file (FUSE passthrough).'],
  ['backingCopies', 'clip_fuse_backing_copies_total', 'counter', 'Large files copied out of their cached layer for passthrough.'],
  ['errors', 'clip_fuse_errors_total', 'counter', 'FUSE requests answered with an error.'],
  ['erofs', 'clip_fuse_erofs_total', 'counter', 'Write attempts refused with EROFS.'],
  ['fetches', 'clip_fuse_miss_fetches_total', 'counter', 'Fetches made for misses, after coalescing.'],
  ['coalesced', 'clip_fuse_misses_coalesced_total', 'counter', 'Misses that joined a fetch already in flight.'],
  ['pending', 'clip_fuse_pending_misses', 'gauge', 'Misses waiting for their bytes now.'],
  ['layersOpen', 'clip_fuse_layers_open', 'gauge', 'Cached layer files the mount holds open.'],
  ['running', 'clip_fuse_running', 'gauge', '1 while the FUSE session runs.'],
];

/** Numbers in the exposition: integers as such, others in JS's shortest round-trip form; +Inf spelled out. */
function num(n: number): string {
  if (n === Infinity) return '+Inf';
  return Number.isFinite(n) ? String(n) : 'NaN';
}

class Exposition {
  private readonly lines: string[] = [];

  family(name: string, kind: Kind, help: string): void {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${kind}`);
  }

  sample(name: string, labels: Record<string, string>, value: number): void {
    const pairs = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}"`);
    this.lines.push(`${name}${pairs.length ? `{${pairs.join(',')}}` : ''} ${num(value)}`);
  }

  text(): string {
    return this.lines.length ? `${this.lines.join('\n')}\n` : '';
  }
}

/**
 * The exposition text of `sources` (format 0.0.4: `# HELP`/`# TYPE` lines,
 * one family each, samples of a family together). Never throws for a
 * closed store: the counters stay readable.
 */
export function renderPrometheus(sources: MetricsSources): string {
  const out = new Exposition();
  const store = sources.store;
  if (store) {
    const stats = store.stats();
    const tiers = Object.entries(store.tierMetrics()).filter((e): e is [string, TierMetrics] => e[1] !== null);
    const perTier: Array<[string, string, (m: TierMetrics) => number]> = [
      ['clip_tier_hits_total', 'Reads (or pieces of reads) the tier served.', (m) => m.hits],
      ['clip_tier_misses_total', 'Reads the tier was asked for and did not have.', (m) => m.misses],
      ['clip_tier_errors_total', 'Reads the tier failed (they fell through to the next tier).', (m) => m.errors],
      ['clip_tier_read_bytes_total', 'Uncompressed bytes the tier served.', (m) => m.bytes],
    ];
    for (const [name, help, value] of perTier) {
      out.family(name, 'counter', help);
      for (const [tier, m] of tiers) out.sample(name, { tier }, value(m));
    }
    const h = 'clip_tier_read_duration_seconds';
    out.family(h, 'histogram', 'Time to serve a read from the tier (hits only).');
    for (const [tier, m] of tiers) {
      const counts = m.latency.cumulativeCounts();
      EXPORT_BOUNDS_S.forEach((le, i) => out.sample(`${h}_bucket`, { tier, le: num(le) }, counts[i]));
      out.sample(`${h}_bucket`, { tier, le: '+Inf' }, m.latency.count);
      out.sample(`${h}_sum`, { tier }, m.latency.sumMs / 1000);
      out.sample(`${h}_count`, { tier }, m.latency.count);
    }
    out.family('clip_source_wire_bytes_total', 'counter', 'Compressed bytes fetched from the source (registry or OCI layout), by purpose.');
    out.sample('clip_source_wire_bytes_total', { purpose: 'read' }, stats.sourceWireBytes.reads);
    out.sample('clip_source_wire_bytes_total', { purpose: 'fill' }, stats.sourceWireBytes.fills);
    const fills: Array<[string, number, string]> = [
      ['clip_fill_streams_total', stats.fills.started, 'Whole-layer streams started by fills and uploads.'],
      ['clip_fill_completed_total', stats.fills.completed, 'Layers this process wrote into the disk cache.'],
      ['clip_fill_found_cached_total', stats.fills.foundCached, 'Fills that found the layer already cached by another process.'],
      ['clip_fill_failures_total', stats.fills.failed, 'Fills and uploads that failed.'],
      ['clip_fill_bytes_total', stats.fills.bytes, 'Uncompressed bytes streamed by fills and uploads.'],
      ['clip_redis_uploads_total', stats.fills.uploaded, 'Layers this process uploaded to Redis.'],
    ];
    for (const [name, value, help] of fills) {
      out.family(name, 'counter', help);
      out.sample(name, {}, value);
    }
    if (stats.redis) {
      out.family('clip_redis_up', 'gauge', '1 when Redis is usable, 0 while backing off after a failure.');
      out.sample('clip_redis_up', {}, stats.redis.up ? 1 : 0);
    }
  }
  if (sources.mount) {
    const stats = sources.mount.stats();
    for (const [field, name, kind, help] of MOUNT_METRICS) {
      const value = stats[field];
      if (value === undefined) continue;
      out.family(name, kind, help);
      out.sample(name, {}, typeof value === 'boolean' ? Number(value) : value);
    }
  }
  return out.text();
}

export interface MetricsExporterOptions {
  /** `HOST:PORT` to serve `GET /metrics` on (`[::1]:9100` for IPv6; port 0 picks a free one). */
  listen?: string;
  /** A file to rewrite with the exposition every `intervalMs`, and once more on close(). */
  file?: string;
  /** Milliseconds between file rewrites (default 10000). */
  intervalMs?: number;
  /** Produces the exposition text (e.g. () => renderPrometheus({ store, mount })). */
  render: () => string;
}

/**
 * Parses `HOST:PORT` (an IPv6 host in brackets). Errors: EINVAL.
 */
export function parseListenAddress(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ClipError('EINVAL', `a metrics address must be HOST:PORT (e.g. 127.0.0.1:9100), not "${text}"`);
  return { host: m[1] ?? m[2], port };
}

export class MetricsExporter {
  private server: http.Server | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** Where the HTTP server listens, once started (the real port when 0 was asked). */
  address: { host: string; port: number } | null = null;

  private constructor(private readonly options: MetricsExporterOptions) {}

  /**
   * Starts serving and/or writing. Resolves once the server listens and the
   * file was written a first time.
   * Errors: EINVAL (bad options or address), EIO (cannot listen, e.g. the
   * port is taken; cannot write the file).
   */
  static async start(options: MetricsExporterOptions): Promise<MetricsExporter> {
    if (typeof options?.render !== 'function') throw new ClipError('EINVAL', 'MetricsExporter: "render" must be a function');
    if (options.listen === undefined && options.file === undefined) throw new ClipError('EINVAL', 'MetricsExporter: give "listen", "file" or both');
    const interval = options.intervalMs ?? 10_000;
    if (!Number.isInteger(interval) || interval < 1) throw new ClipError('EINVAL', 'MetricsExporter: "intervalMs" must be a positive integer');
    const listen = options.listen !== undefined ? parseListenAddress(options.listen) : null;
    const exporter = new MetricsExporter(options);
    try {
      if (options.file !== undefined) {
        exporter.writeFile();
        exporter.timer = setInterval(() => {
          try {
            exporter.writeFile();
          } catch (e) {
            log.warn({ file: options.file, err: (e as Error).message }, 'cannot write the metrics file');
          }
        }, interval);
        exporter.timer.unref();
      }
      if (listen) await exporter.listen(listen.host, listen.port);
    } catch (e) {
      await exporter.close(false);
      throw e;
    }
    return exporter;
  }

  private listen(host: string, port: number): Promise<void> {
    const server = http.createServer((req, res) => {
      const url = (req.url ?? '/').split('?')[0];
      if (url !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      let body: string;
      try {
        body = this.options.render();
      } catch (e) {
        log.warn({ err: (e as Error).message }, 'rendering metrics failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('rendering metrics failed\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(new ClipError('EIO', `cannot serve metrics on ${host}:${port}: ${e.message}`)));
      server.listen({ host, port }, () => {
        const a = server.address() as net.AddressInfo;
        this.address = { host: a.address, port: a.port };
        server.unref(); // a scrape endpoint never keeps the process alive
        resolve();
      });
    });
  }

  /** Writes the file: a temporary name in the same directory, renamed over it. Errors: EIO. */
  private writeFile(): void {
    const file = this.options.file!;
    const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
    try {
      fs.writeFileSync(tmp, this.options.render(), { mode: 0o644 });
      fs.renameSync(tmp, file);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw new ClipError('EIO', `cannot write the metrics file ${file}: ${(e as Error).message}`);
    }
  }

  /** Stops serving; writes the file one last time (so it holds the final numbers). Never throws. */
  async close(finalWrite = true): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (finalWrite && this.options.file !== undefined) {
      try {
        this.writeFile();
      } catch (e) {
        log.warn({ err: (e as Error).message }, 'cannot write the metrics file');
      }
    }
    const server = this.server;
    this.server = null;
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }
}
