/**
 * Mount benchmark (issue 5), every figure against a peer measured in the
 * same run, on the same tree:
 *   1. stat of every entry (`find MOUNT -printf '%m %s\n'`), cold (a fresh
 *      mount) and warm (again), vs the unpacked tree on the native
 *      filesystem and vs squashfuse_ll of a squashfs made from that tree.
 *      Goal: warm <= 1.5x native, faster than squashfuse_ll cold and warm.
 *   2. sequential read of a 1.2 GB file from a cached layer (a fresh mount
 *      per run, so the mount's page cache is empty) vs `cat` of the layer
 *      file itself. Goal >= 0.8x. Reported: the first read on the host (no
 *      passthrough copy yet: spliced while the copy is made), then fresh
 *      mounts (FUSE passthrough to the copy), and passthrough off.
 *   3. random 4 KiB preads (POSIX_FADV_RANDOM) with 1, 2, 8, 32 readers:
 *      throughput and p99, the mount vs the plain file.
 *   4. RSS of the mount process after a full walk and read of the image
 *      (warm and cold) and after reading the 1.2 GB file. Goal <= 64 MiB
 *      besides the mapped archive.
 * Mounts run as background `clip-native mount` processes, as users run them.
 * Usage: node dist/bench/mount.js [--quick]   (needs root, squashfuse, squashfs-tools)
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { defaultThreads } from '../src/mount/mount';
import { manyFilesImage } from '../test/images';
import { Figure, writeResult } from './result';
import { median, table } from './stats';

const quick = process.argv.includes('--quick');
const RUNS = quick ? 3 : 5;
const OPS = quick ? 500 : 2000;
const FIX = process.env.CLIP_FIXTURES ?? '/var/cache/clip-native';
const WORK = path.join(FIX, 'mount-bench');
const DEMO = process.env.CLIP_DEMO_OCI ?? path.join(FIX, 'demo-oci');
const BIG_BLOB = process.env.CLIP_BIG_LAYER ?? path.join(FIX, 'big-layer-1g.tar.gz');
const ROOT = path.resolve(__dirname, '../..');
const CLI = path.join(ROOT, 'dist/src/cli/main.js');
const RANDOM_PY = path.join(ROOT, 'bench/peers/random_reads.py');
/** Seconds an idle mount is given before its RSS is read again. */
const QUIET_SECONDS = 3;

function sh(command: string): string {
  const r = spawnSync('/bin/sh', ['-c', command], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${command} failed: ${r.stderr}`);
  return r.stdout;
}

function timeSh(command: string): number {
  const t = process.hrtime.bigint();
  sh(command);
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function sha256Hex(file: string): string {
  return sh(`sha256sum '${file}'`).split(' ')[0];
}

function log(msg: string) {
  process.stderr.write(`bench: ${msg}\n`);
}

/**
 * A background clip-native mount over `cacheDir` (the host default is never
 * used: a cold run needs an empty cache of its own); returns its pid.
 */
function clipMount(archive: string, mp: string, cacheDir: string, extra: string[] = []): number {
  const args = ['mount', archive, mp, '--cache-dir', cacheDir, ...extra];
  const r = spawnSync(process.execPath, [CLI, '--log-level', 'error', ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mount failed: ${r.stderr}`);
  return Number(/\(pid (\d+)\)/.exec(r.stdout)![1]);
}

function clipUmount(mp: string, pid: number) {
  sh(`'${process.execPath}' '${CLI}' umount '${mp}'`);
  for (let i = 0; i < 100; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    spawnSync('sleep', ['0.05']);
  }
}

/** Resident memory of `pid` now, and its peak (VmHWM: the most it has been resident since it started). */
function rss(pid: number): { rss: number; anon: number; file: number; peak: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)![1]) * 1024;
  return { rss: kib('VmRSS'), anon: kib('RssAnon'), file: kib('RssFile'), peak: kib('VmHWM') };
}

interface Prepared {
  demoClip: string;
  rootfs: string;
  squash: string;
  cache: string;
  bigClip: string;
  bigLayerFile: string;
  bigFileName: string;
  /** The disk cache's layer directory. */
  layers: string;
}

/**
 * Where this build's archives are kept: a directory named after the addon
 * and the archive writer, so an archive made by an older build (an older
 * checkpoint index format, which the source tier refuses) is never reused.
 * Older ones are left alone: another checkout's benchmark may be using them.
 */
function archivesDir(): string {
  const hash = createHash('sha256');
  for (const f of ['build/Release/clip_native.node', 'dist/src/archive/writer.js', 'dist/src/index/build.js']) hash.update(fs.readFileSync(path.join(ROOT, f)));
  const dir = path.join(WORK, `archives-${hash.digest('hex').slice(0, 12)}`);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** Builds (once, kept under $FIX/mount-bench) the archives, the unpacked tree, the squashfs and the warm cache. */
function prepare(): Prepared {
  fs.mkdirSync(WORK, { recursive: true });
  const archives = archivesDir();
  const cache = path.join(WORK, 'cache');
  const layers = path.join(cache, 'layers', 'sha256');
  fs.mkdirSync(layers, { recursive: true });
  const demoClip = path.join(archives, 'demo.clip');
  if (!fs.existsSync(demoClip)) {
    log('indexing the demo image');
    sh(`'${process.execPath}' '${CLI}' --log-level error index 'oci:${DEMO}:bookworm' -o '${demoClip}'`);
  }
  const bundle = path.join(WORK, 'demo-unpacked');
  const rootfs = path.join(bundle, 'rootfs');
  if (!fs.existsSync(rootfs)) {
    log('umoci unpack of the demo image');
    sh(`umoci unpack --rootless=false --image '${DEMO}:bookworm' '${bundle}.tmp' >/dev/null && mv '${bundle}.tmp' '${bundle}'`);
  }
  const squash = path.join(WORK, 'demo.squashfs');
  if (!fs.existsSync(squash)) {
    log('mksquashfs of the unpacked tree');
    sh(`mksquashfs '${rootfs}' '${squash}.tmp' -noappend -quiet -no-progress >/dev/null && mv '${squash}.tmp' '${squash}'`);
  }
  const manifest = JSON.parse(fs.readFileSync(path.join(DEMO, 'blobs/sha256', JSON.parse(fs.readFileSync(path.join(DEMO, 'index.json'), 'utf8')).manifests[0].digest.slice(7)), 'utf8'));
  const config = JSON.parse(fs.readFileSync(path.join(DEMO, 'blobs/sha256', manifest.config.digest.slice(7)), 'utf8'));
  manifest.layers.forEach((l: { digest: string }, i: number) => {
    const target = path.join(layers, config.rootfs.diff_ids[i].slice(7));
    if (!fs.existsSync(target)) sh(`gzip -dc '${DEMO}/blobs/sha256/${l.digest.slice(7)}' > '${target}.partial-bench' && mv '${target}.partial-bench' '${target}'`);
  });

  // The big image: one layer holding one 1.2 GB file.
  const big = oneLayerImage(BIG_BLOB, 'big', archives, layers);
  return {
    demoClip,
    rootfs,
    squash,
    cache,
    bigClip: big.clip,
    bigLayerFile: path.join(layers, big.diffId.slice(7)),
    bigFileName: big.fileName,
    layers,
  };
}

/**
 * An OCI layout (under WORK) of one layer, `blob`, indexed into
 * `<archives>/<tag>.clip` (once); the layer's tar stream is put in the
 * disk cache `layers` when `warm`.
 */
function oneLayerImage(blob: string, tag: string, archives: string, layers: string, warm = true): { clip: string; diffId: string; fileName: string } {
  const layout = path.join(WORK, `${tag}-oci`);
  const clip = path.join(archives, `${tag}.clip`);
  if (!fs.existsSync(clip)) {
    log(`building a one-layer image around ${path.basename(blob)} (once)`);
    fs.rmSync(layout, { recursive: true, force: true });
    const blobs = path.join(layout, 'blobs', 'sha256');
    fs.mkdirSync(blobs, { recursive: true });
    const digest = sha256Hex(blob);
    try {
      fs.linkSync(blob, path.join(blobs, digest));
    } catch {
      fs.copyFileSync(blob, path.join(blobs, digest));
    }
    const diffId = sh(`igzip -dc '${blob}' | sha256sum`).split(' ')[0];
    const writeBlob = (text: string) => {
      fs.writeFileSync(path.join(blobs, 'tmp'), text);
      const hex = sha256Hex(path.join(blobs, 'tmp'));
      fs.renameSync(path.join(blobs, 'tmp'), path.join(blobs, hex));
      return { digest: `sha256:${hex}`, size: Buffer.byteLength(text) };
    };
    const cfg = writeBlob(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [`sha256:${diffId}`] } }));
    const man = writeBlob(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${digest}`, size: fs.statSync(blob).size }],
      }),
    );
    fs.writeFileSync(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    fs.writeFileSync(
      path.join(layout, 'index.json'),
      JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...man, annotations: { 'org.opencontainers.image.ref.name': tag } }] }),
    );
    sh(`'${process.execPath}' '${CLI}' --log-level error index 'oci:${layout}:${tag}' -o '${clip}'`);
    if (warm) sh(`igzip -dc '${blob}' > '${layers}/${diffId}.partial-bench' && mv '${layers}/${diffId}.partial-bench' '${layers}/${diffId}'`);
  }
  const config = JSON.parse(sh(`'${process.execPath}' -e "const {ClipArchive}=require('${ROOT}/dist/src'); const a=ClipArchive.open('${clip}'); console.log(JSON.stringify({diffId:a.layers()[0].diffId, names:a.readdir(1).map(e=>e.name)}))"`));
  return { clip, diffId: config.diffId, fileName: config.names[0] };
}

/**
 * A layer of one 2.4 GB file (the big layer's file twice), for the memory
 * of a multi-GiB read; built once next to the big layer.
 */
function hugeLayer(): string {
  const huge = path.join(path.dirname(BIG_BLOB), 'big-layer-2g.tar.gz');
  if (!fs.existsSync(huge)) {
    log('building a 2.4 GB layer (once)');
    const tmp = fs.mkdtempSync(path.join(WORK, 'huge-'));
    sh(`{ igzip -dc '${BIG_BLOB}' | tar -xO; igzip -dc '${BIG_BLOB}' | tar -xO; } > '${tmp}/huge.bin' && tar -C '${tmp}' -cf - huge.bin | pigz -6 > '${huge}.tmp' && mv '${huge}.tmp' '${huge}'`);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return huge;
}

/** The 100k-entry image (test/images.ts builds it once into the fixtures dir), indexed once. */
function prepareManyFiles(p: Prepared): { clip: string; entries: number } {
  const image = manyFilesImage(FIX);
  const clip = path.join(path.dirname(p.demoClip), 'many-files.clip');
  if (!fs.existsSync(clip)) {
    log('indexing the 100k-entry image (once)');
    sh(`'${process.execPath}' '${CLI}' --log-level error index 'oci:${image.layout}:t' -o '${clip}'`);
  }
  return { clip, entries: image.entries };
}

function main() {
  const p = prepare();
  // A mountpoint of our own: WORK is shared by every checkout on the machine.
  const mp = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-bench-mnt-'));
  const entries = Number(sh(`find '${p.rootfs}' | wc -l`).trim());
  const find = (dir: string) => timeSh(`find '${dir}' -printf '%m %s\\n' > /dev/null`);
  const out: string[] = [`# Mount benchmark${quick ? ' (quick)' : ''}`, '', `${new Date().toISOString()}, ${os.availableParallelism()} CPUs, ${defaultThreads()} FUSE threads (the default), ${RUNS} runs each, median (min–max).`, ''];
  const fmt = (v: number[]) => `${(median(v) * 1000).toFixed(1)} ms (${(Math.min(...v) * 1000).toFixed(1)}–${(Math.max(...v) * 1000).toFixed(1)})`;

  // 1. stat of every entry
  log('walk: clip-native');
  const clipCold: number[] = [];
  const clipWarm: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const pid = clipMount(p.demoClip, mp, p.cache);
    try {
      clipCold.push(find(mp));
      clipWarm.push(find(mp));
    } finally {
      clipUmount(mp, pid);
    }
  }
  log('walk: squashfuse_ll');
  const sqCold: number[] = [];
  const sqWarm: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    sh(`squashfuse_ll '${p.squash}' '${mp}'`);
    try {
      sqCold.push(find(mp));
      sqWarm.push(find(mp));
    } finally {
      sh(`fusermount3 -u '${mp}'`);
    }
  }
  log('walk: native');
  find(p.rootfs);
  const native: number[] = [];
  for (let i = 0; i < RUNS; i++) native.push(find(p.rootfs));
  out.push(`## stat of every entry (${entries} entries of the demo Debian image)`, '');
  out.push(
    table(
      ['tree', 'cold', 'warm', 'warm vs native', 'vs squashfuse_ll (cold / warm)'],
      [
        ['clip-native (FUSE)', fmt(clipCold), fmt(clipWarm), `${(median(clipWarm) / median(native)).toFixed(2)}x`, `${(median(clipCold) / median(sqCold)).toFixed(2)}x / ${(median(clipWarm) / median(sqWarm)).toFixed(2)}x`],
        ['squashfuse_ll (FUSE)', fmt(sqCold), fmt(sqWarm), `${(median(sqWarm) / median(native)).toFixed(2)}x`, '1x / 1x'],
        ['native filesystem', '(page cache; not dropped)', fmt(native), '1x', ''],
      ],
    ),
    '',
    'Cold = the first walk of a fresh mount (empty kernel dentry/attribute caches); goal: clip warm <= 1.5x native, below 1x of squashfuse_ll.',
    '',
  );

  // 2. sequential read
  log('sequential read');
  const bigSize = fs.statSync(p.bigLayerFile).size;
  sh(`cat '${p.bigLayerFile}' > /dev/null`);
  // The first read on a host finds no passthrough copy of the file: it is
  // spliced from the layer while the mount copies the file out (once per
  // host); every later open on any mount is passed through to the copy.
  const copiesDir = path.join(p.cache, 'files');
  fs.rmSync(copiesDir, { recursive: true, force: true });
  const copyDone = () => fs.existsSync(copiesDir) && sh(`find '${copiesDir}' -type f`).split('\n').some((f) => /\/\d+$/.test(f));
  let bigRss = { rss: 0, anon: 0, file: 0, peak: 0 };
  let firstRead = 0;
  let copySeconds = 0;
  {
    const pid = clipMount(p.bigClip, mp, p.cache);
    try {
      const t0 = process.hrtime.bigint();
      firstRead = timeSh(`cat '${mp}/${p.bigFileName}' > /dev/null`);
      bigRss = rss(pid);
      while (!copyDone()) spawnSync('sleep', ['0.05']);
      copySeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    } finally {
      clipUmount(mp, pid);
    }
  }
  const seqClip: number[] = [];
  const seqAgain: number[] = [];
  const seqSpliced: number[] = [];
  const seqPlain: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    let pid = clipMount(p.bigClip, mp, p.cache);
    try {
      seqClip.push(timeSh(`cat '${mp}/${p.bigFileName}' > /dev/null`));
      seqAgain.push(timeSh(`cat '${mp}/${p.bigFileName}' > /dev/null`));
    } finally {
      clipUmount(mp, pid);
    }
    // The same read with passthrough off: every byte spliced from the layer.
    pid = clipMount(p.bigClip, mp, p.cache, ['--passthrough-min-size', '0']);
    try {
      seqSpliced.push(timeSh(`cat '${mp}/${p.bigFileName}' > /dev/null`));
    } finally {
      clipUmount(mp, pid);
    }
    seqPlain.push(timeSh(`cat '${p.bigLayerFile}' > /dev/null`));
  }
  const fileSize = bigSize - 2048; // near enough: the tar stream is the file plus headers
  const mbps = (s: number[]) => `${(fileSize / median(s) / 1e6).toFixed(0)} MB/s`;
  const vsPlain = (s: number[]) => `${(median(seqPlain) / median(s)).toFixed(2)}x`;
  out.push(`## sequential read of a ${(fileSize / 1e9).toFixed(2)} GB file from a cached layer`, '');
  out.push(
    table(
      ['reader', 'time', 'throughput', 'vs plain file'],
      [
        ['clip-native mount, fresh mount each run (FUSE passthrough to the file\'s copy)', fmt(seqClip), mbps(seqClip), vsPlain(seqClip)],
        ['clip-native mount, the same file again on that mount', fmt(seqAgain), mbps(seqAgain), vsPlain(seqAgain)],
        ['clip-native mount with --passthrough-min-size 0 (spliced from the layer file)', fmt(seqSpliced), mbps(seqSpliced), vsPlain(seqSpliced)],
        ['first read on this host (spliced while the copy is made), once', fmt([firstRead]), mbps([firstRead]), vsPlain([firstRead])],
        ['cat of the plain layer file (page cache)', fmt(seqPlain), mbps(seqPlain), '1x'],
      ],
    ),
    '',
    `Goal: >= 0.8x of the plain file. The first open of a large file (>= 16 MiB) on a host copies it out of its cached layer`,
    `(in the kernel, copy_file_range; here ${copySeconds.toFixed(1)} s from the first open until the copy was complete, fsync included);`,
    'later opens are answered with the copy as a backing file and the kernel reads it directly. Spliced reads copy each byte',
    "twice in the kernel (the layer page into the mount's page cache, then to the reader), a plain file once.",
    '',
  );

  // 3. random 4 KiB reads
  log('random reads');
  const rows: string[][] = [];
  const throughput: [number, number, number][] = [];
  const pid = clipMount(p.bigClip, mp, p.cache);
  try {
    for (const readers of [1, 2, 8, 32]) {
      const ops = Math.max(200, Math.floor((OPS * 4) / Math.max(1, readers / 2)));
      const run = (file: string) => JSON.parse(sh(`python3 '${RANDOM_PY}' '${file}' ${readers} ${ops} ${readers}`)) as { ops: number; wall: number; p50: number; p99: number };
      const c = run(`${mp}/${p.bigFileName}`);
      const f = run(p.bigLayerFile);
      throughput.push([readers, c.ops / c.wall, f.ops / f.wall]);
      rows.push([
        String(readers),
        `${(c.ops / c.wall).toFixed(0)} ops/s (${((c.ops * 4096) / c.wall / 1e6).toFixed(0)} MB/s)`,
        `${c.p50.toFixed(0)} / ${c.p99.toFixed(0)} µs`,
        `${(f.ops / f.wall).toFixed(0)} ops/s`,
        `${f.p50.toFixed(0)} / ${f.p99.toFixed(0)} µs`,
      ]);
    }
  } finally {
    clipUmount(mp, pid);
  }
  out.push('## random 4 KiB reads of the 1.2 GB file (cached layer, POSIX_FADV_RANDOM, one process per reader)', '');
  out.push(table(['readers', 'clip-native mount', 'p50 / p99', 'plain file (page cache)', 'p50 / p99'], rows), '');
  out.push('Each mount read of a new page is one FUSE request answered by splice from the layer file; the plain file is all in the page cache.', '');

  // 4. RSS
  log('memory');
  const rssRows: string[][] = [];
  const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
  /** The most any row's process was resident besides its archive (right after, 3 s later, or at its peak). */
  let worstRss = 0;
  const worst = (...bytes: number[]) => (worstRss = Math.max(worstRss, ...bytes));
  const manyClip = prepareManyFiles(p);
  const coldCache = () => fs.mkdtempSync(path.join(WORK, 'cold-cache-'));
  for (const [label, archive, cacheDir, extra] of [
    ['demo image, warm cache', p.demoClip, p.cache, []],
    ['demo image, cold: empty cache, misses through the tiers, background fill', p.demoClip, coldCache(), []],
    ['demo image, cold: empty cache, --prefetch none (every read a source span)', p.demoClip, coldCache(), ['--prefetch', 'none']],
    [`100k-entry image (${manyClip.entries} entries), cold: empty cache`, manyClip.clip, coldCache(), []],
  ] as const) {
    const mpid = clipMount(archive, mp, cacheDir, [...extra]);
    try {
      sh(`find '${mp}' -printf '%m %s\\n' > /dev/null; find '${mp}' -type f -exec cat {} + > /dev/null`);
      const r = rss(mpid);
      // Again once the mount has been idle for a while: the background fill
      // has finished and the memory governor (src/mount/memory.ts) has
      // collected the burst's garbage. Both figures are reported.
      spawnSync('sleep', [String(QUIET_SECONDS)]);
      const quiet = rss(mpid);
      const archiveSize = fs.statSync(archive).size;
      rssRows.push([label, mib(r.rss), mib(r.anon), mib(r.file), mib(archiveSize), mib(r.rss - archiveSize), mib(quiet.rss - archiveSize), mib(quiet.peak - archiveSize)]);
      worst(r.rss - archiveSize, quiet.rss - archiveSize, quiet.peak - archiveSize);
    } finally {
      clipUmount(mp, mpid);
      if (cacheDir !== p.cache) fs.rmSync(cacheDir, { recursive: true, force: true });
    }
  }
  rssRows.push(['1.2 GB file read sequentially, warm cache', mib(bigRss.rss), mib(bigRss.anon), mib(bigRss.file), mib(fs.statSync(p.bigClip).size), '', '', mib(bigRss.peak - fs.statSync(p.bigClip).size)]);
  worst(bigRss.peak - fs.statSync(p.bigClip).size);
  if (!quick) {
    // The most a read of one file asks of the miss path: 2.4 GB, every read
    // a source span (no fill), so every byte passes through the process.
    const huge = oneLayerImage(hugeLayer(), 'huge', path.dirname(p.demoClip), p.layers, false);
    const cacheDir = coldCache();
    const mpid = clipMount(huge.clip, mp, cacheDir, ['--prefetch', 'none']);
    try {
      const seconds = timeSh(`cat '${mp}/${huge.fileName}' > /dev/null`);
      const r = rss(mpid);
      const archiveSize = fs.statSync(huge.clip).size;
      rssRows.push([`2.4 GB file read sequentially, cold: empty cache, --prefetch none (${seconds.toFixed(1)} s)`, mib(r.rss), mib(r.anon), mib(r.file), mib(archiveSize), mib(r.rss - archiveSize), '', mib(r.peak - archiveSize)]);
      worst(r.peak - archiveSize);
    } finally {
      clipUmount(mp, mpid);
      fs.rmSync(cacheDir, { recursive: true, force: true });
    }
  }
  out.push('## RSS of the mount process (node + addon) after a full walk and read', '');
  out.push(table(['workload', 'VmRSS', 'anonymous', 'file-backed (node binary, addon, mapped archive)', 'archive', 'VmRSS besides the archive', `the same ${QUIET_SECONDS} s later`, 'peak (VmHWM) besides the archive'], rssRows), '');
  out.push(
    `Measured right after the walk (a background fill may still be running), and again after ${QUIET_SECONDS} s idle; the peak is the most the process was`,
    'resident at any time (the cold rows: while the fill streamed the layer). Goal: <= 64 MiB besides the archive.',
    '',
  );

  const text = out.join('\n');
  process.stdout.write(`${text}\n`);
  const figures: Figure[] = [
    {
      figure: `mount RSS besides the archive, the most of any row of the memory table at any time (VmHWM)`,
      unit: 'MiB',
      samples: [worstRss / 1048576],
      goal: '≤ 64 MiB',
      met: worstRss <= 64 * 1048576,
    },
    { figure: `stat of every entry (${entries}), warm, vs the native filesystem`, unit: 's', samples: clipWarm, peer: { name: 'native filesystem', samples: native }, goal: '≤ 1.5× the time', met: median(clipWarm) <= 1.5 * median(native) },
    { figure: 'stat of every entry, cold (fresh mount), vs squashfuse_ll', unit: 's', samples: clipCold, peer: { name: 'squashfuse_ll', samples: sqCold }, goal: 'faster', met: median(clipCold) < median(sqCold) },
    { figure: 'stat of every entry, warm, vs squashfuse_ll', unit: 's', samples: clipWarm, peer: { name: 'squashfuse_ll', samples: sqWarm }, goal: 'faster', met: median(clipWarm) < median(sqWarm) },
    { figure: `sequential read of a ${(fileSize / 1e9).toFixed(2)} GB file from a cached layer (fresh mount, passthrough)`, unit: 's', samples: seqClip, peer: { name: 'cat of the layer file', samples: seqPlain }, goal: '≥ 0.8× the speed', met: median(seqPlain) / median(seqClip) >= 0.8 },
    { figure: 'the same file read again on the same mount', unit: 's', samples: seqAgain, peer: { name: 'cat of the layer file', samples: seqPlain } },
    { figure: 'the same file with passthrough off (spliced from the layer)', unit: 's', samples: seqSpliced, peer: { name: 'cat of the layer file', samples: seqPlain } },
    { figure: 'the first read on a host (spliced while the copy is made)', unit: 's', samples: [firstRead], peer: { name: 'cat of the layer file', samples: seqPlain } },
    ...throughput.map(([readers, clip, plain]): Figure => ({ figure: `random 4 KiB reads, ${readers} readers`, unit: 'ops/s', lowerIsBetter: false, samples: [clip], peer: { name: 'plain file (page cache)', samples: [plain] } })),
  ];
  writeResult({
    name: 'mount',
    title: 'Mount',
    quick,
    runs: RUNS,
    figures,
    plots: [
      {
        kind: 'line',
        title: 'Random 4 KiB reads of a 1.2 GB file (cached layer) vs readers',
        x: 'concurrent readers (processes)',
        y: 'reads per second',
        logX: true,
        series: [
          { name: 'clip-native mount', points: throughput.map(([r, c]) => [r, c]) },
          { name: 'plain file (page cache)', points: throughput.map(([r, , f]) => [r, f]) },
        ],
      },
    ],
    markdown: text,
  });
  fs.rmdirSync(mp);
}

main();
