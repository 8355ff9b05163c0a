/**
 * Cold start benchmark (issue 6): how long until a program from an image
 * has run, and how many bytes came from the registry, in one run:
 *   full pull        `skopeo copy` + `umoci unpack` + the program under crun
 *   empty cache      clip-native (index built beforehand: index once, read
 *                    many) with an empty disk cache: open the store, mount,
 *                    the program under crun (and, once more, in a chroot),
 *                    unmount
 *   warm disk cache  the same, every layer already in the disk cache
 *   Redis warm       a second host: an empty disk cache, Redis filled by
 *                    the first host
 * The image (scripts/fixtures.sh --bench): Debian, Debian's python3, a
 * node_modules layer and a 48 MiB file, 170+ MB compressed, in a
 * docker-registry on 127.0.0.1. The workload imports Python modules and
 * reads a few hundred files. Registry bytes are counted by a TCP proxy in
 * front of the registry, which every client here goes through. The clip
 * stores read lazily (prefetch "none"), so the bytes are what the program
 * needed; every run's output is checked against the full pull's.
 * Goal: empty cache >= 5x faster than the full pull, >= 20x fewer bytes.
 * Usage: node dist/bench/coldstart.js [--quick]   (needs root, crun)
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { bundleConfig, crunRun } from '../examples/run-with-crun';
import { indexImage } from '../src/index/build';
import { log } from '../src/log';
import { mount } from '../src/mount/mount';
import { LayerStore, LayerStoreOptions } from '../src/storage/store';
import { startRedis } from '../test/redis-harness';
import { freePort, startRegistry } from '../test/registry-harness';
import { Figure, writeResult } from './result';
import { median, spread, table } from './stats';

log.level = 'warn';
const execFileAsync = promisify(execFile);
const quick = process.argv.includes('--quick');
const RUNS = quick ? 2 : 5;
const FIX = process.env.CLIP_FIXTURES ?? '/var/cache/clip-native';
const LAYOUT = process.env.CLIP_BENCH_OCI ?? path.join(FIX, 'bench-oci');
/**
 * Checkpoint spacing and proof size of the index, and the mount's read-ahead.
 * A read from the registry fetches from its interval's checkpoint up to the
 * proof that covers it (several intervals in a row in one Range request).
 * Where the bytes go (traced per read with --quick runs; "needed" = the
 * proofs holding bytes the mount was asked for, "lead" = from each touched
 * interval's checkpoint up to its first needed proof, other files' bytes):
 *   read-ahead KiB        4096  2048  1024   512   256   192   128    64
 *   registry MB (64/4)    9.87  9.86  9.87  9.79  9.01  8.87  8.44  8.25
 * At 4096: needed 8.79 MB, lead 0.83 MB, 147 Range requests; at 256:
 * needed 7.55, lead 1.08, 188 requests; at 128: needed 6.80, lead 1.18.
 * The read-ahead decides "needed": a page fault in mmap'ed python3.11 or a
 * library reads the read-ahead window around it, so at 512 KiB and up
 * libcrypto, libc, libm and most of python3.11 are read whole (20 MB go
 * through the mount at 4096, 17.5 at 256, 9.7 with none). Each request
 * costs a round trip a page fault waits for, ~5 ms here (the registry alone
 * answers a 4 KiB Range in ~3.3 ms on this VM), and the registry ~6 ms of
 * CPU on this 2-core machine whatever its size (4 KiB: 6.3 ms, 1 MiB: 6.9,
 * 4 MiB: 9.0; 100 requests each), so a smaller read-ahead costs time: 256
 * KiB took ~1.15x as long as 4096, 128 KiB ~1.4x. Checkpoints every 48 KiB
 * fall at nearly every deflate block boundary (32 KiB gives the same
 * index): the lead halves (1.08 -> 0.54 MB at 256) for a larger archive
 * (8.3 -> 13.8 MB). Proofs of 2 or 1 KiB instead of 4 save under 0.05 MB.
 * Reading on across files (source-tier.ts, READ_ON_GAP) cut the
 * node_modules layer's requests from 67 to 22 for 0.29 MB in all. Tried and
 * left out: fetching an ELF file's loader segments (the first, and the
 * writable ones) in one request once its first page is read: as many bytes,
 * but slower (1.47 s against 1.32 s, medians of 6 interleaved runs), its
 * larger requests racing the page faults for the registry and the CPU; a
 * read-ahead per file (256 KiB for files of 4 MB and more, 4 MiB for the
 * rest, written to the mount's bdi as each file is opened, which the kernel
 * copies into the open file): 1.41 s against 1.48 s (9 runs each) for
 * 0.04 MB more, too little for a write per open that races other opens. So:
 * 48/4 at 256 KiB, 8.7 MB (21x). CLIP_BENCH_SPACING, CLIP_BENCH_PROOF_SIZE
 * and CLIP_BENCH_READAHEAD_KB override them.
 */
const SPACING = Number(process.env.CLIP_BENCH_SPACING ?? 48 << 10);
const PROOF_SIZE = Number(process.env.CLIP_BENCH_PROOF_SIZE ?? 4 << 10);
const READ_AHEAD_KB = Number(process.env.CLIP_BENCH_READAHEAD_KB ?? 256);

/** Python start-up with a few stdlib packages, then the ~300 small modules of /app/node_modules read (a node app's start, without its big bundles). */
const WORKLOAD = [
  '/bin/sh',
  '-c',
  `python3 -c 'import json, http.client, email; print("python ok")' && ` +
    `find /app/node_modules -name '*.js' -size -64k | xargs cat | wc -c && ` +
    `ls /usr/share/zoneinfo /usr/lib/python3.11 | wc -l`,
];

/** A TCP proxy in front of the registry that counts the bytes it sends back. */
async function countingProxy(target: number): Promise<{ port: number; bytes: () => number; reset: () => void; close: () => void }> {
  let bytes = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    // Forward each piece at once: with Nagle on, a response's last small
    // write waits for the client's delayed ACK (tens of ms on loopback).
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    sockets.add(client).add(upstream);
    upstream.on('data', (d: Buffer) => (bytes += d.length));
    // pipe() ends each side after the other's end, once its buffered bytes
    // are written; only an error tears both down at once.
    client.pipe(upstream).pipe(client);
    const fail = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', fail).on('close', () => sockets.delete(client));
    upstream.on('error', fail).on('close', () => sockets.delete(upstream));
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    port,
    bytes: () => bytes,
    reset: () => (bytes = 0),
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

async function sh(command: string): Promise<string> {
  return (await execFileAsync('/bin/sh', ['-c', command], { maxBuffer: 1 << 26 })).stdout;
}

const now = () => performance.now() / 1000;

type Runtime = 'crun' | 'chroot';

/** Runs the workload in `rootfs` (inside `bundle` for crun); returns its stdout. */
async function runWorkload(runtime: Runtime, bundle: string, rootfs: string): Promise<string> {
  if (runtime === 'chroot') return (await execFileAsync('chroot', [rootfs, ...WORKLOAD], { maxBuffer: 1 << 20 })).stdout;
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(bundleConfig(WORKLOAD)));
  const r = await crunRun(bundle, `clip-bench-${process.pid}-${path.basename(bundle)}`);
  if (r.status !== 0) throw new Error(`crun exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

interface Sample {
  seconds: number;
  bytes: number;
  /** Bytes the program read from the mount (uncompressed; 0 for the full pull). */
  read: number;
  output: string;
  phases: Record<string, number>;
}

async function main() {
  if (!fs.existsSync(path.join(LAYOUT, '.complete'))) throw new Error(`${LAYOUT} is missing: run "bash scripts/fixtures.sh --bench"`);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-bench-coldstart-'));
  const registry = await startRegistry({ auth: 'none' });
  const redis = await startRedis();
  const proxy = await countingProxy(registry.port);
  try {
    await registry.push(`oci:${LAYOUT}:bench`, 'bench:latest');
    const ref = `127.0.0.1:${proxy.port}/bench:latest`;
    const manifest = JSON.parse(await sh(`skopeo inspect --raw --tls-verify=false docker://${ref}`)) as { layers: { size: number }[] };
    const compressed = manifest.layers.reduce((a, l) => a + l.size, 0);

    // Index once (through the proxy, so the archive records the proxy's reference).
    process.stderr.write('bench: coldstart: indexing the image once\n');
    const archive = path.join(work, 'bench.clip');
    proxy.reset();
    const t0 = now();
    await indexImage(`docker://${ref}`, { output: archive, insecure: true, spacing: SPACING, proofSize: PROOF_SIZE });
    const index = { seconds: now() - t0, bytes: proxy.bytes(), archiveBytes: fs.statSync(archive).size };

    // Lazy stores: nothing is fetched that the program does not read.
    const storage = (extra: Partial<LayerStoreOptions> = {}) => ({ insecure: true, prefetch: 'none' as const, ...extra });

    // The warm disk cache, and the first host that fills Redis: prepared once, not timed.
    process.stderr.write('bench: coldstart: filling a disk cache and Redis (the first host)\n');
    const warmCache = path.join(work, 'warm-cache');
    {
      const first = await LayerStore.open({ archive, cacheDir: warmCache, ...storage({ redis: redis.url }) });
      await first.prefetch();
      // The Redis uploads follow the disk fills (from the verified files): wait for them.
      const layers = first.layerCount;
      for (let t = 0; t < 2400 && first.stats().fills.uploaded < layers && !first.stats().fills.failed; t++) await new Promise((r) => setTimeout(r, 50));
      const fills = first.stats().fills;
      if (fills.uploaded < layers) throw new Error(`only ${fills.uploaded} of ${layers} layers reached Redis: ${fills.lastError}`);
      await first.close();
      if (fills.failed) throw new Error(`filling the warm cache failed: ${fills.lastError}`);
    }

    let seq = 0;
    async function clipStart(runtime: Runtime, cacheDir: string, extra: Partial<LayerStoreOptions> = {}): Promise<Sample> {
      const bundle = path.join(work, `clip-${seq++}`);
      const rootfs = path.join(bundle, 'rootfs');
      fs.mkdirSync(rootfs, { recursive: true });
      proxy.reset();
      const start = now();
      let output = '';
      let read = 0;
      const phases: Record<string, number> = {};
      const m = await mount({ archive, mountpoint: rootfs, cacheDir, storage: storage(extra), readAheadKb: READ_AHEAD_KB });
      phases.mount = now() - start;
      try {
        output = await runWorkload(runtime, bundle, rootfs);
        read = m.stats().readBytes;
      } finally {
        await m.unmount(); // closes the mount's store
      }
      phases.run = now() - start - phases.mount;
      const seconds = now() - start;
      fs.rmSync(bundle, { recursive: true, force: true });
      return { seconds, bytes: proxy.bytes(), read, output, phases };
    }

    async function fullPull(): Promise<Sample> {
      const copy = path.join(work, `pull-${seq}`);
      const bundle = path.join(work, `bundle-${seq++}`);
      proxy.reset();
      const start = now();
      await sh(`skopeo copy -q --src-tls-verify=false docker://${ref} oci:${copy}:bench`);
      const copied = now();
      await sh(`umoci unpack --rootless=false --image ${copy}:bench ${bundle} >/dev/null`);
      const unpacked = now();
      const output = await runWorkload('crun', bundle, path.join(bundle, 'rootfs'));
      const seconds = now() - start;
      const bytes = proxy.bytes();
      await sh(`rm -rf '${copy}' '${bundle}'`);
      return { seconds, bytes, read: 0, output, phases: { copy: copied - start, unpack: unpacked - copied, run: now() - unpacked } };
    }

    const scenarios: { name: string; run: (i: number) => Promise<Sample> }[] = [
      { name: 'full pull: skopeo copy + umoci unpack + crun', run: () => fullPull() },
      { name: 'clip-native, empty disk cache, crun', run: (i) => clipStart('crun', path.join(work, `empty-${i}`)) },
      // (--quick leaves this one out: crun's figure is the one the goal is about.)
      ...(quick ? [] : [{ name: 'clip-native, empty disk cache, chroot', run: (i: number) => clipStart('chroot', path.join(work, `empty-chroot-${i}`)) }]),
      { name: 'clip-native, warm disk cache, crun', run: () => clipStart('crun', warmCache) },
      { name: 'clip-native, only Redis warm (second host), crun', run: (i) => clipStart('crun', path.join(work, `second-host-${i}`), { redis: redis.url }) },
    ];
    const samples = new Map<string, Sample[]>(scenarios.map((s) => [s.name, []]));
    // Interleaved, so drifting machine load hits every scenario alike.
    for (let i = 0; i < RUNS; i++) {
      for (const s of scenarios) {
        process.stderr.write(`bench: coldstart: run ${i + 1}/${RUNS}: ${s.name}\n`);
        samples.get(s.name)!.push(await s.run(i));
      }
    }
    const oracle = samples.get(scenarios[0].name)![0].output;
    if (!oracle.includes('python ok')) throw new Error(`the workload did not run: ${oracle}`);
    for (const [name, list] of samples) {
      for (const s of list) if (s.output !== oracle) throw new Error(`${name}: output differs from the full pull's:\n${s.output}\nvs\n${oracle}`);
    }

    const pull = samples.get(scenarios[0].name)!;
    const pullT = median(pull.map((s) => s.seconds));
    const pullB = median(pull.map((s) => s.bytes));
    const mb = (n: number) => `${(n / 1e6).toFixed(n < 1e6 ? 3 : 1)} MB`;
    const rows = scenarios.map((s) => {
      const list = samples.get(s.name)!;
      const t = list.map((x) => x.seconds);
      const b = list.map((x) => x.bytes);
      const phaseNames = Object.keys(list[0].phases);
      const phases = phaseNames.map((p) => `${p} ${(median(list.map((x) => x.phases[p])) * 1000).toFixed(0)}`).join(', ');
      const read = median(list.map((x) => x.read));
      return [s.name, spread(t, 1, 's'), `${(pullT / median(t)).toFixed(1)}×`, mb(median(b)), median(b) > 0 ? `${(pullB / median(b)).toFixed(0)}×` : '∞ (none)', read ? mb(read) : '', `${phases} ms`];
    });
    const emptyT = median(samples.get(scenarios[1].name)!.map((s) => s.seconds));
    const emptyB = median(samples.get(scenarios[1].name)!.map((s) => s.bytes));
    const md = [
      `# Cold start${quick ? ' (quick)' : ''}`,
      '',
      `Image: ${LAYOUT} (5 gzip layers, ${mb(compressed)} compressed: Debian, Debian's python3, node_modules, a 48 MiB file) in a docker-registry on 127.0.0.1, behind a byte-counting proxy. ` +
        `Workload: \`${WORKLOAD[2]}\`. ${RUNS} runs per scenario, interleaved; median (min–max). Every run's output equals the full pull's.`,
      '',
      table(['scenario', 'time to done', 'speed-up vs full pull', 'registry bytes', 'fewer bytes', 'read by the program', 'phases (median)'], rows),
      '',
      `Index once (not in the times above), checkpoints every ${SPACING >> 10} KiB, proofs of ${PROOF_SIZE >> 10} KiB; the mounts read ahead ${READ_AHEAD_KB} KiB: \`indexImage\` from the registry took ${index.seconds.toFixed(2)} s and fetched ${mb(index.bytes)} (it streams every layer once); the archive is ${(index.archiveBytes / 1024).toFixed(0)} KiB.`,
      `Goal: empty cache ≥ 5× faster than the full pull (${(pullT / emptyT).toFixed(1)}×: ${pullT / emptyT >= 5 ? 'met' : 'missed'}) and ≥ 20× fewer bytes (${emptyB > 0 ? (pullB / emptyB).toFixed(0) : '∞'}×: ${pullB >= 20 * emptyB ? 'met' : 'missed'}).`,
      'clip-native times include opening the store, mounting, the program, unmounting and closing. The stores read lazily (prefetch "none"): the registry bytes are, per checkpoint interval the program read from, the compressed bytes from the checkpoint up to the proof covering its last read ' +
        '("read by the program": uncompressed bytes through the mount, mostly python3.11, libcrypto, libc and the .pyc files, with the kernel\'s read-ahead).',
      '',
    ].join('\n');
    process.stdout.write(md);

    const figures: Figure[] = [
      {
        figure: 'cold start, empty disk cache (crun) vs full pull',
        unit: 's',
        samples: samples.get(scenarios[1].name)!.map((s) => s.seconds),
        peer: { name: 'skopeo copy + umoci unpack + crun', samples: pull.map((s) => s.seconds) },
        goal: '≥ 5× faster',
        met: pullT / emptyT >= 5,
      },
      {
        figure: 'registry bytes, empty disk cache vs full pull',
        unit: 'B',
        samples: samples.get(scenarios[1].name)!.map((s) => s.bytes),
        peer: { name: 'full pull', samples: pull.map((s) => s.bytes) },
        goal: '≥ 20× fewer',
        met: pullB >= 20 * emptyB,
      },
      ...scenarios.slice(2).map((s) => ({
        figure: `cold start, ${s.name.replace(/^clip-native, /, '')}`,
        unit: 's',
        samples: samples.get(s.name)!.map((x) => x.seconds),
        peer: { name: 'full pull', samples: pull.map((x) => x.seconds) },
      })),
    ];
    writeResult({
      name: 'coldstart',
      title: 'Cold start',
      quick,
      runs: RUNS,
      figures,
      plots: [
        { kind: 'bars', title: 'Cold start: time to done (s)', unit: 's', bars: scenarios.map((s) => ({ name: s.name, samples: samples.get(s.name)!.map((x) => x.seconds) })) },
        { kind: 'bars', title: 'Cold start: bytes from the registry (MB)', unit: 'MB', bars: scenarios.map((s) => ({ name: s.name, samples: samples.get(s.name)!.map((x) => x.bytes / 1e6) })) },
      ],
      markdown: md,
    });
  } finally {
    proxy.close();
    await redis.stop();
    await registry.stop();
    await sh(`rm -rf '${work}'`).catch(() => undefined);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
