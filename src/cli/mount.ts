/**
 * The mount commands:
 *   mount FILE.clip|REF MOUNTPOINT [--threads N] [--cache-dir DIR] [--cache-size SIZE]
 *         [--prefetch none|background|eager] [--redis URL] [--source REF|DIR] [--foreground]
 *         [--read-ahead SIZE] [--metrics-addr HOST:PORT] [--metrics-file FILE [--metrics-interval MS]]
 *   umount MOUNTPOINT [--lazy]
 * REF is an image reference as `index` takes it: the image is indexed into
 * the cache directory first (an archive already there for the same manifest
 * digest is reused). Misses go through the storage tiers (LayerStore) over
 * the same host-wide cache that `cat` and `extract` use.
 * By default `mount` starts a detached child that runs the foreground mount
 * and returns once the child says the mount is ready (one line on a pipe at
 * fd 3). --foreground stays attached and unmounts on SIGINT/SIGTERM/SIGHUP,
 * or exits when the mount is taken away from outside (umount).
 * --metrics-addr/--metrics-file export the tiers' and FUSE counters in the
 * Prometheus text format for the mount's life (docs/metrics.md).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { Command, Option } from 'commander';
import { ClipError, ClipErrorCode, EXIT_CODES, isClipError } from '../errors';
import { log } from '../log';
import { native } from '../native';
import { archiveForImage } from '../mount/image';
import { parseSize } from '../engine/options';
import { memoryGovernor } from '../mount/memory';
import { mount, MountOptions } from '../mount/mount';
import { mountpointState, unmountPath } from '../mount/stale';
import { OciLayoutSource, openImageSource, parseImageReference } from '../oci';
import { MetricsExporter, parseListenAddress, renderPrometheus } from '../storage/prometheus';
import type { ImageSource } from '../oci';
import { addTierOptions, storeOptions, TierFlags } from './storage';

interface MountFlags extends TierFlags {
  threads?: string;
  foreground?: boolean;
  deadline: string;
  source?: string;
  platform?: string;
  logFile?: string;
  readyFd?: string;
  debug?: boolean;
  metricsAddr?: string;
  metricsFile?: string;
  metricsInterval?: string;
  passthroughMinSize: string;
  readAhead: string;
}

/**
 * --read-ahead in KiB, as the kernel takes it. 4 MiB (the default) reads
 * large files fast; 256 KiB fetches fewer bytes on a cold start, as a page
 * fault in an mmap'ed binary reads the whole window around it (measured in
 * bench/coldstart.ts: 8.7 MB instead of 9.7 MB of a 181 MB image).
 */
function readAheadKb(text: string): number {
  const bytes = parseSize(text);
  if (bytes % 1024 !== 0 || bytes > 1 << 30) throw new ClipError('EINVAL', `--read-ahead must be whole KiB up to 1GiB, not "${text}"`);
  return bytes / 1024;
}

function positiveInt(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new ClipError('EINVAL', `${what} must be a positive integer, not "${text}"`);
  return n;
}

/** --source: an OCI layout directory, or any image reference (the blobs' digests are what count). */
async function openSourceFlag(text: string, flags: MountFlags): Promise<ImageSource> {
  if (fs.existsSync(text) && fs.statSync(text).isDirectory()) return OciLayoutSource.open(path.resolve(text));
  const credentials = flags.username !== undefined ? { username: flags.username, password: flags.password! } : undefined;
  return openImageSource(parseImageReference(text), { insecure: flags.insecure, credentials });
}

/**
 * malloc's mmap threshold for the mount process (native.tuneMalloc). glibc
 * otherwise raises it to the largest block freed so far, and the buffers
 * of the miss path's and the fills' worker threads (128 KiB to 1 MiB) then
 * stay in per-thread arenas once freed: measured on a cold walk of the demo
 * image, 36 MiB free but resident in the arenas afterwards, 1.3 MiB with
 * the threshold fixed. 64 KiB and 128 KiB measured alike.
 */
const MOUNT_MMAP_THRESHOLD = 128 * 1024;

async function runForeground(archive: string, mountpoint: string, flags: MountFlags): Promise<void> {
  native.tuneMalloc(MOUNT_MMAP_THRESHOLD);
  const readyFd = flags.readyFd !== undefined ? Number(flags.readyFd) : undefined;
  let m;
  let source: ImageSource | undefined;
  let exporter: MetricsExporter | null = null;
  try {
    const { archive: _archive, cacheDir, ...storage } = storeOptions(archive, flags);
    if (flags.source) source = await openSourceFlag(flags.source, flags);
    const options: MountOptions = {
      archive,
      mountpoint,
      threads: flags.threads !== undefined ? positiveInt(flags.threads, '--threads') : undefined,
      cacheDir,
      deadlineMs: positiveInt(flags.deadline, '--deadline'),
      passthroughMinBytes: parseSize(flags.passthroughMinSize),
      readAheadKb: readAheadKb(flags.readAhead),
      storage: { ...storage, source },
      debug: flags.debug,
    };
    m = await mount(options);
    if (flags.metricsAddr !== undefined || flags.metricsFile !== undefined) {
      const mounted = m;
      exporter = await MetricsExporter.start({
        listen: flags.metricsAddr,
        file: flags.metricsFile,
        intervalMs: flags.metricsInterval !== undefined ? positiveInt(flags.metricsInterval, '--metrics-interval') : undefined,
        render: () => renderPrometheus({ store: mounted.store, mount: mounted }),
      }).catch(async (e: unknown) => {
        await mounted.unmount().catch(() => undefined);
        throw e;
      });
      log.info({ address: exporter.address, file: flags.metricsFile }, 'exporting metrics');
    }
  } catch (e) {
    await source?.close().catch(() => undefined);
    if (readyFd !== undefined) {
      const code = isClipError(e) ? e.code : 'EIO';
      fs.writeSync(readyFd, `error ${code} ${(e as Error).message}\n`);
      fs.closeSync(readyFd);
    }
    throw e;
  }
  log.info({ mountpoint: m.mountpoint, archive: m.archivePath, cacheDir: m.cacheDir, pid: process.pid }, 'mounted');
  if (readyFd !== undefined) {
    fs.writeSync(readyFd, `ready ${process.pid}\n`);
    fs.closeSync(readyFd);
  } else {
    process.stderr.write(`clip-native: ${m.archivePath} mounted on ${m.mountpoint} (Ctrl-C to unmount)\n`);
  }
  await new Promise<void>((resolve) => {
    let done = false;
    const finish = (why: string) => {
      if (done) return;
      done = true;
      log.info({ mountpoint: m.mountpoint, why }, 'unmounting');
      m.unmount().then(resolve, (e: unknown) => {
        log.error({ err: e }, 'unmount failed');
        resolve();
      });
    };
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => finish(sig));
    m.once('ended', () => finish('unmounted from outside'));
  });
  await exporter?.close();
  await source?.close().catch(() => undefined);
  const stats = { mount: m.stats(), storage: m.store?.stats(), memory: memoryGovernor.stats };
  log.info({ stats }, 'stopped');
  if (flags.stats) process.stderr.write(`${JSON.stringify(stats)}\n`);
}

/**
 * Node flags of the detached mount process, sized for a small long-lived
 * daemon whose heap holds a few MiB of JS objects while its bytes flow
 * through Buffers outside the heap (measured on cold walks of the demo
 * image, RSS once the mount is quiet):
 * - --max-semi-space-size=1: V8 grows the young generation's semi-spaces up
 *   to 16 MiB each once the allocation rate is high, as it is while misses
 *   and fills stream through the process, and keeps them when the process
 *   goes idle. Capped at 1 MiB, the heap is 10 MiB after the walk instead
 *   of 16.5 MiB; scavenges stay well under a millisecond.
 * - --lite-mode: no optimizing compiler, feedback allocated lazily.
 *   Metadata and cached reads never run JavaScript, and the miss and fill
 *   paths are glue around native inflate, hashing and I/O: the walk and
 *   the 200 MB fill took as long without the compiler (1.1-1.4 s either
 *   way), and the process stays 4 MiB smaller with --no-opt (the compiler's
 *   pages of the node binary are never touched, no optimized code is kept),
 *   2 MiB more with lite mode (57-59 MiB after a cold walk instead of
 *   59-63). Lite mode turns off WebAssembly, which nothing here uses (HTTP
 *   is node:http); --no-expose-wasm says so, and keeps V8 from printing a
 *   warning about it.
 * Flags given to the parent node come after these, so they win.
 */
const DAEMON_NODE_FLAGS = ['--max-semi-space-size=1', '--lite-mode', '--no-expose-wasm'];

async function runBackground(archive: string, mountpoint: string, flags: MountFlags): Promise<void> {
  const script = process.argv[1];
  const args = [script, 'mount', archive, mountpoint, '--foreground', '--ready-fd', '3', '--deadline', flags.deadline];
  args.push('--passthrough-min-size', flags.passthroughMinSize, '--read-ahead', flags.readAhead);
  if (flags.threads) args.push('--threads', flags.threads);
  if (flags.cacheDir) args.push('--cache-dir', path.resolve(flags.cacheDir));
  if (flags.cacheSize) args.push('--cache-size', flags.cacheSize);
  if (flags.redis) args.push('--redis', flags.redis);
  if (flags.prefetch) args.push('--prefetch', flags.prefetch);
  if (flags.insecure) args.push('--insecure');
  if (flags.source) args.push('--source', fs.existsSync(flags.source) ? path.resolve(flags.source) : flags.source);
  if (flags.metricsAddr) args.push('--metrics-addr', flags.metricsAddr);
  if (flags.metricsFile) args.push('--metrics-file', path.resolve(flags.metricsFile));
  if (flags.metricsInterval) args.push('--metrics-interval', flags.metricsInterval);
  const logFd = flags.logFile ? fs.openSync(flags.logFile, 'a') : 'ignore';
  // Two libuv pool threads, not four: the pool runs the misses' inflates and
  // the fills' pieces, two CPUs' worth of work here, and each thread keeps
  // a malloc arena and a reader's scratch buffers once it has inflated.
  // Measured on cold walks: VmHWM 2 MiB lower (demo image 60 MiB instead of
  // 62; a 2.4 GB file with --prefetch none 64-65 instead of 66-67), walks
  // as fast. A value set by the caller wins.
  const env: NodeJS.ProcessEnv = { UV_THREADPOOL_SIZE: '2', ...process.env };
  // Credentials go by environment, not argv (which every user can read in ps).
  if (flags.username !== undefined) {
    env.CLIP_REGISTRY_USERNAME = flags.username;
    env.CLIP_REGISTRY_PASSWORD = flags.password;
  }
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, ...process.execArgv, ...args], { detached: true, stdio: ['ignore', 'ignore', logFd, 'pipe'], cwd: '/', env });
  if (typeof logFd === 'number') fs.closeSync(logFd);
  const line = await new Promise<string>((resolve) => {
    let text = '';
    const pipe = child.stdio[3] as NodeJS.ReadableStream;
    pipe.setEncoding('utf8');
    pipe.on('data', (chunk: string) => {
      text += chunk;
      const nl = text.indexOf('\n');
      if (nl >= 0) resolve(text.slice(0, nl));
    });
    pipe.on('end', () => resolve(text));
    child.on('exit', (code, signal) => resolve(text || `error EIO the mount process exited (${signal ?? `code ${code}`}) before the mount was ready`));
  });
  (child.stdio[3] as unknown as { destroy(): void }).destroy();
  if (line.startsWith('ready ')) {
    child.unref();
    process.stdout.write(`${path.resolve(mountpoint)} (pid ${line.slice('ready '.length)})\n`);
    return;
  }
  const m = /^error (\S+) (.*)$/s.exec(line);
  const code = (m && m[1] in EXIT_CODES ? m[1] : 'EIO') as ClipErrorCode;
  throw new ClipError(code, m ? m[2] : `the mount process failed: ${line || 'no answer'}`);
}

/**
 * The archive to mount: a `.clip` file as given, or, for an image
 * reference, the cached (or new) archive of that image.
 */
async function resolveArchive(image: string, flags: MountFlags): Promise<string> {
  if (fs.existsSync(image) && fs.statSync(image).isFile()) return path.resolve(image);
  if (image.endsWith('.clip')) throw new ClipError('ENOENT', `${image}: no such file`);
  const credentials = flags.username !== undefined ? { username: flags.username, password: flags.password! } : undefined;
  const found = await archiveForImage(image, { cacheDir: flags.cacheDir, platform: flags.platform, insecure: flags.insecure, credentials });
  log.info({ image, archive: found.path, reused: found.reused }, found.reused ? 'using the cached archive' : 'indexed');
  return found.path;
}

export function registerMountCommands(program: Command): void {
  addTierOptions(
    program
      .command('mount')
      .description('mount an image read-only (FUSE); file bytes are fetched when read')
      .argument('<image>', 'a .clip archive, or an image (oci:DIR[:TAG], docker://NAME, NAME[:TAG|@DIGEST]) to index into the cache first')
      .argument('<mountpoint>', 'an existing directory'),
    'background',
  )
    .option('--threads <n>', 'FUSE worker threads (default: the CPU count, 2 to 8)')
    .option('--foreground', 'stay attached; unmount on SIGINT/SIGTERM')
    .option('--deadline <ms>', 'milliseconds a missing read may take before it fails with EIO', '30000')
    .option('--source <ref>', "where layer blobs come from: an OCI layout directory or an image reference (default: the image the archive was indexed from)")
    .option('--platform <os/arch[/variant]>', 'platform to pick when indexing a multi-platform image (default: this host)')
    .option('--log-file <file>', 'where the background mount process logs (default: nowhere)')
    .option('--debug', "libfuse's request trace on stderr")
    .option('--passthrough-min-size <size>', 'files at least this large are read by the kernel from a copy in the disk cache (FUSE passthrough; 0: never)', '16MiB')
    .option('--read-ahead <size>', "how far the kernel reads ahead in a file (0: the kernel's default, 128KiB); 256KiB fetches fewer bytes on a cold start", '4MiB')
    .option('--metrics-addr <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics while mounted')
    .option('--metrics-file <file>', 'keep Prometheus metrics in FILE while mounted (rewritten atomically)')
    .option('--metrics-interval <ms>', 'milliseconds between rewrites of --metrics-file', '10000')
    .addOption(new Option('--ready-fd <fd>').hideHelp())
    .action(async (image: string, mountpoint: string, flags: MountFlags) => {
      if (flags.threads !== undefined) positiveInt(flags.threads, '--threads');
      positiveInt(flags.deadline, '--deadline');
      parseSize(flags.passthroughMinSize);
      readAheadKb(flags.readAhead);
      if (flags.metricsAddr !== undefined) parseListenAddress(flags.metricsAddr);
      if (flags.metricsInterval !== undefined) positiveInt(flags.metricsInterval, '--metrics-interval');
      storeOptions(image, flags); // checks the tier flags before indexing or forking
      const archive = await resolveArchive(image, flags);
      if (flags.foreground) await runForeground(archive, mountpoint, flags);
      else await runBackground(archive, mountpoint, flags);
    });

  program
    .command('umount')
    .alias('unmount')
    .description('unmount a clip-native mount (also a dead one left by a killed process)')
    .argument('<mountpoint>')
    .option('--lazy', 'detach at once even while files are open')
    .action((mountpoint: string, flags: { lazy?: boolean }) => {
      const state = mountpointState(mountpoint);
      if (state === 'missing') throw new ClipError('ENOENT', `${mountpoint}: no such directory`);
      if (state === 'free' || state === 'not-a-directory') throw new ClipError('EINVAL', `nothing is mounted on ${mountpoint}`);
      unmountPath(mountpoint, { lazy: flags.lazy || state === 'stale' });
    });
}
