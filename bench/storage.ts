/**
 * Storage tiers benchmark (issue: storage tiers), one run, same data:
 *   1. cold read of one small file from the 90 MiB Debian layer via Range
 *      requests to a docker-registry on 127.0.0.1, vs downloading and
 *      inflating the whole layer (time and bytes over the wire; goals
 *      >= 20x less time, >= 50x fewer bytes);
 *   2. warm reads from the disk cache (LayerStore.read) vs pread of the same
 *      bytes from a plain file (goal >= 0.9x);
 *   3. first reads of small files via Redis vs via the registry, both on
 *      loopback (in-memory caches off, so every read goes to its tier);
 *   4. peak RSS while filling a 1 GiB layer into the disk cache (a child
 *      process; goal <= 64 MiB above node's baseline, both reported).
 * Usage: node dist/bench/storage.js [--quick]
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { indexLayerFile } from '../src/engine/layer';
import { indexImage } from '../src/index/build';
import { log } from '../src/log';
import { RegistrySource } from '../src/oci';
import { LayerStore } from '../src/storage/store';
import { startRedis } from '../test/redis-harness';
import { linkBlob, startRegistry, writeBlob, writeLayoutIndex } from '../test/registry-harness';
import { Figure, writeResult } from './result';
import { median, spread, table } from './stats';

log.level = 'warn';
const quick = process.argv.includes('--quick');
const RUNS = quick ? 3 : 7;
const layout = process.env.CLIP_DEMO_OCI ?? '/var/cache/clip-native/demo-oci';
const bigLayer = process.env.CLIP_BIG_LAYER ?? '/var/cache/clip-native/big-layer-1g.tar.gz';
const SMALL_FILE = '/etc/os-release';

const now = () => performance.now() / 1000;
const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

/** Builds a one-layer OCI layout around `blob` (hardlinked), returns its dir. */
async function bigImageLayout(dir: string): Promise<string> {
  const index = await indexLayerFile(bigLayer);
  linkBlob(dir, bigLayer, index.digest);
  const config = { architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [index.diffId] } };
  const configDesc = writeBlob(dir, JSON.stringify(config), 'application/vnd.oci.image.config.v1+json');
  const layerDesc = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: index.digest, size: index.compressedSize };
  const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: configDesc, layers: [layerDesc] };
  const manifestDesc = writeBlob(dir, JSON.stringify(manifest), manifest.mediaType);
  writeLayoutIndex(dir, [{ ...manifestDesc, annotations: { 'org.opencontainers.image.ref.name': 'big' } }]);
  return dir;
}

/** Runs a 1 GiB fill in a child process; its VmHWM (peak RSS) before and after the fill. */
function fillPeakRss(archive: string, cacheDir: string): { baselineKiB: number; peakKiB: number; seconds: number } {
  const store = JSON.stringify(path.resolve(__dirname, '../src/storage/store.js'));
  const script = `
    const fs = require('fs');
    const hwm = () => Number(/VmHWM:\\s+(\\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]);
    const { LayerStore } = require(${store});
    (async () => {
      const s = await LayerStore.open({ archive: process.argv[1], cacheDir: process.argv[2], prefetch: 'none' });
      s.archive.checkpoints(0);
      const baselineKiB = hwm();
      const t = performance.now();
      await s.whenCached(0);
      const seconds = (performance.now() - t) / 1000;
      const peakKiB = hwm();
      await s.close();
      process.stdout.write(JSON.stringify({ baselineKiB, peakKiB, seconds }));
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const r = spawnSync(process.execPath, ['-e', script, archive, cacheDir], { encoding: 'utf8', env: { ...process.env, CLIP_LOG_LEVEL: 'warn' } });
  if (r.status !== 0) throw new Error(`fill child failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-bench-storage-'));
  const registry = await startRegistry({ auth: 'none' });
  const redis = await startRedis();
  const rows: string[][] = [];
  try {
    await registry.push(`oci:${layout}:bookworm`, 'demo:bookworm');
    const archive = path.join(work, 'demo.clip');
    await indexImage(`${registry.host}/demo:bookworm`, { output: archive, insecure: true });
    const newSource = () => new RegistrySource({ host: registry.host, repository: 'demo', insecure: true });

    // 1. Cold small-file read by Range vs the whole layer.
    const cold: number[] = [];
    let coldWire = 0;
    for (let i = 0; i < RUNS; i++) {
      const source = newSource();
      const store = await LayerStore.open({ archive, cacheDir: path.join(work, `cold-${i}`), prefetch: 'none', source });
      const t = now();
      await store.readFile(SMALL_FILE);
      cold.push(now() - t);
      coldWire = store.stats().sourceWireBytes.reads;
      await store.close();
      await source.close();
    }
    const whole: number[] = [];
    let wholeWire = 0;
    const layer0 = (await LayerStore.open({ archive, cacheDir: path.join(work, 'probe'), prefetch: 'none' }).then(async (s) => {
      const l = s.archive.layers()[0];
      await s.close();
      return l;
    }));
    for (let i = 0; i < RUNS; i++) {
      const source = newSource();
      const t = now();
      const gunzip = zlib.createGunzip();
      const hash = createHash('sha256');
      wholeWire = 0;
      const done = new Promise<void>((resolve, reject) => {
        gunzip.on('data', (d: Buffer) => hash.update(d));
        gunzip.on('end', () => resolve());
        gunzip.on('error', reject);
      });
      for await (const chunk of source.openBlob({ mediaType: layer0.mediaType, digest: layer0.digest, size: layer0.compressedSize })) {
        wholeWire += chunk.length;
        if (!gunzip.write(chunk)) await new Promise((r) => gunzip.once('drain', r));
      }
      gunzip.end();
      await done;
      whole.push(now() - t);
      await source.close();
    }
    // The fastest whole-layer peer here: curl piped into ISA-L's igzip.
    const wholeIgzip: number[] = [];
    const blobUrl = `${registry.url}/v2/demo/blobs/${layer0.digest}`;
    for (let i = 0; i < RUNS; i++) {
      const t = now();
      const r = spawnSync('/bin/sh', ['-c', `curl -sfL '${blobUrl}' | igzip -dc | sha256sum >/dev/null`], { stdio: 'ignore' });
      if (r.status !== 0) throw new Error('curl | igzip failed');
      wholeIgzip.push(now() - t);
    }
    const timeRatio = median(whole) / median(cold);
    const igzipRatio = median(wholeIgzip) / median(cold);
    const byteRatio = wholeWire / coldWire;
    rows.push([
      `cold read of ${SMALL_FILE} from the ${mib(layer0.compressedSize)} layer: Range + checkpoint inflate vs download + inflate the whole layer (node http + zlib, as the fill does)`,
      spread(cold),
      spread(whole),
      `${timeRatio.toFixed(0)}× less time`,
      '≥ 20×',
      timeRatio >= 20 ? 'met' : 'missed',
    ]);
    rows.push([
      '… the same, peer: curl piped into igzip -dc (ISA-L, the fastest inflater here)',
      spread(cold),
      spread(wholeIgzip),
      `${igzipRatio.toFixed(0)}× less time`,
      '≥ 20×',
      igzipRatio >= 20 ? 'met' : 'missed',
    ]);
    rows.push([
      '… bytes over the wire',
      `${coldWire} B`,
      `${wholeWire} B`,
      `${byteRatio.toFixed(0)}× fewer bytes`,
      '≥ 50×',
      byteRatio >= 50 ? 'met' : 'missed',
    ]);

    // 2. Warm reads: disk cache vs a plain file.
    const warmDir = path.join(work, 'warm');
    const warm = await LayerStore.open({ archive, cacheDir: warmDir, prefetch: 'none', source: newSource() });
    const cached = await warm.whenCached(0);
    const plainPath = path.join(work, 'plain.tar');
    fs.copyFileSync(cached, plainPath);
    const plain = await fs.promises.open(plainPath, 'r');
    const size = layer0.uncompressedSize;
    const warmRows: Array<[number, number[], number[]]> = [];
    const diskLatencies: number[] = [];
    for (const blockSize of [4096, 128 * 1024]) {
      const ops = quick ? 2000 : 10000;
      let seed = 42;
      const offsets = Array.from({ length: ops }, () => {
        seed = (seed * 1103515245 + 12345) % 2147483648;
        return Math.floor((seed / 2147483648) * (size - blockSize));
      });
      const storeTimes: number[] = [];
      const plainTimes: number[] = [];
      const viaStore = async () => {
        const t = now();
        for (const off of offsets) {
          const r = now();
          await warm.read(0, off, blockSize);
          if (blockSize === 4096) diskLatencies.push(now() - r);
        }
        storeTimes.push((now() - t) / ops);
      };
      const viaPlain = async () => {
        const t = now();
        for (const off of offsets) {
          const buf = Buffer.allocUnsafe(blockSize);
          await plain.read(buf, 0, blockSize, off);
        }
        plainTimes.push((now() - t) / ops);
      };
      // Alternate which goes first: the second of a pair tends to pay for the first's garbage.
      for (let r = 0; r < Math.max(RUNS, 6); r++) {
        if (r % 2 === 0) {
          await viaStore();
          await viaPlain();
        } else {
          await viaPlain();
          await viaStore();
        }
      }
      warmRows.push([blockSize, storeTimes, plainTimes]);
    }
    await plain.close();
    await warm.close();
    for (const [blockSize, storeTimes, plainTimes] of warmRows) {
      const ratio = median(plainTimes) / median(storeTimes);
      rows.push([
        `warm random ${blockSize / 1024} KiB reads: disk cache (LayerStore.read) vs pread of a plain file, per read`,
        spread(storeTimes, 1e6, 'µs'),
        spread(plainTimes, 1e6, 'µs'),
        `${ratio.toFixed(2)}× the speed`,
        '≥ 0.9×',
        ratio >= 0.9 ? 'met' : 'missed',
      ]);
    }

    // 3. Redis vs registry, first reads of small files, memory caches off.
    const uploader = await LayerStore.open({ archive, cacheDir: path.join(work, 'upload'), prefetch: 'none', redis: redis.url, source: newSource() });
    await uploader.readFile(SMALL_FILE);
    for (let i = 0; i < 600 && uploader.stats().fills.uploaded === 0; i++) await new Promise((r) => setTimeout(r, 50));
    await uploader.close();
    const files: string[] = [];
    const probe = await LayerStore.open({ archive, cacheDir: path.join(work, 'files'), prefetch: 'none' });
    for (const { path: p, stat } of probe.archive.walk()) {
      if (stat.type === 'file' && stat.layer === 0 && stat.size > 1000 && stat.size < 64 * 1024 && files.length < (quick ? 40 : 100)) files.push(`/${p}`);
    }
    await probe.close();
    const viaRedis: number[] = [];
    const viaRegistry: number[] = [];
    const rs = await LayerStore.open({ archive, cacheDir: path.join(work, 'via-redis'), prefetch: 'none', redis: redis.url, memoryCacheBytes: 0, source: newSource() });
    const gs = await LayerStore.open({ archive, cacheDir: path.join(work, 'via-registry'), prefetch: 'none', memoryCacheBytes: 0, source: newSource() });
    for (const f of files) {
      let t = now();
      await rs.readFile(f);
      viaRedis.push(now() - t);
      t = now();
      await gs.readFile(f);
      viaRegistry.push(now() - t);
    }
    const redisStats = rs.stats();
    await rs.close();
    await gs.close();
    if (redisStats.tiers.source.hits > 0) throw new Error('the Redis run read from the source');
    const rr = median(viaRegistry) / median(viaRedis);
    rows.push([
      `first read of a small file (${files.length} files, 1–64 KiB): via Redis (1 MiB chunks) vs via the registry (Range + inflate), p50`,
      spread(viaRedis),
      spread(viaRegistry),
      `${rr.toFixed(1)}× faster`,
      'report',
      '',
    ]);

    // 4. Peak RSS while filling a 1 GiB layer (not in --quick: most of this benchmark's time).
    let above: number | null = null;
    if (!quick) {
      const bigLayout = await bigImageLayout(path.join(work, 'big-layout'));
      const bigArchive = path.join(work, 'big.clip');
      await indexImage(`oci:${bigLayout}:big`, { output: bigArchive });
      const rss = fillPeakRss(bigArchive, path.join(work, 'big-cache'));
      above = (rss.peakKiB - rss.baselineKiB) * 1024;
      const bigSize = fs.statSync(path.join(work, 'big-cache', 'layers', 'sha256', fs.readdirSync(path.join(work, 'big-cache', 'layers', 'sha256'))[0])).size;
      rows.push([
        `peak RSS while filling a ${mib(bigSize)} layer into the disk cache (${rss.seconds.toFixed(1)} s)`,
        `${mib(rss.peakKiB * 1024)} peak, ${mib(above)} above baseline`,
        `${mib(rss.baselineKiB * 1024)} baseline (node + store open)`,
        '',
        '≤ 64 MiB above baseline',
        above <= 64 << 20 ? 'met' : 'missed',
      ]);
    } else {
      rows.push(['peak RSS while filling a 1 GiB layer into the disk cache', 'not run', 'not in --quick', '', '≤ 64 MiB above baseline', 'not measured']);
    }

    const figures: Figure[] = [
      { figure: `cold read of ${SMALL_FILE} via Range + checkpoint vs the whole layer`, unit: 's', samples: cold, peer: { name: 'download + inflate the layer (node)', samples: whole }, goal: '≥ 20× less time', met: timeRatio >= 20 },
      { figure: `… peer curl | igzip -dc`, unit: 's', samples: cold, peer: { name: 'curl | igzip -dc', samples: wholeIgzip }, goal: '≥ 20× less time', met: igzipRatio >= 20 },
      { figure: '… bytes over the wire', unit: 'B', samples: [coldWire], peer: { name: 'whole layer', samples: [wholeWire] }, goal: '≥ 50× fewer', met: byteRatio >= 50 },
      ...warmRows.map(([blockSize, storeTimes, plainTimes]): Figure => ({
        figure: `warm random ${blockSize / 1024} KiB read, disk cache (LayerStore.read) vs pread`,
        unit: 's',
        samples: storeTimes,
        peer: { name: 'pread of a plain file', samples: plainTimes },
        goal: '≥ 0.9× the speed',
        met: median(plainTimes) / median(storeTimes) >= 0.9,
      })),
      { figure: 'first read of a small file via Redis vs via the registry', unit: 's', samples: viaRedis, peer: { name: 'registry (Range + inflate)', samples: viaRegistry } },
      ...(above === null ? [] : [{ figure: 'peak RSS filling a 1 GiB layer, above baseline', unit: 'MiB', samples: [above / 1048576], goal: '≤ 64 MiB', met: above <= 64 << 20 }]),
    ];
    const text = [
      '# Storage tiers benchmark\n',
      `Machine: ${os.cpus().length} × ${os.cpus()[0].model}, node ${process.version}. Image: the two-layer Debian demo image in a docker-registry on 127.0.0.1; Redis ${spawnSync('redis-server', ['--version'], { encoding: 'utf8' }).stdout.split(' ')[2]} on 127.0.0.1. Runs per timing: ${RUNS} (median, min–max). Page cache warm for local files.\n`,
      table(['figure', 'clip-native', 'peer', 'ratio', 'goal', ''], rows),
    ].join('\n');
    process.stdout.write(`${text}\n`);
    writeResult({
      name: 'storage',
      title: 'Storage tiers',
      quick,
      runs: RUNS,
      figures,
      plots: [
        {
          kind: 'cdf',
          title: 'Read latency per tier (disk: 4 KiB reads; Redis and registry: first read of a small file)',
          unit: 's',
          series: [
            { name: 'disk cache (LayerStore.read)', samples: diskLatencies },
            { name: 'Redis on 127.0.0.1', samples: viaRedis },
            { name: 'registry on 127.0.0.1 (Range + inflate)', samples: viaRegistry },
          ],
        },
      ],
      markdown: text,
    });
  } finally {
    await redis.stop();
    await registry.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
