/**
 * The mount commands:
 *   mount FILE.clip MOUNTPOINT [--threads N] [--cache-dir DIR] [--foreground]
 *   umount MOUNTPOINT [--lazy]
 * By default `mount` starts a detached child that runs the foreground mount
 * and returns once the child says the mount is ready (one line on a pipe at
 * fd 3). --foreground stays attached and unmounts on SIGINT/SIGTERM/SIGHUP,
 * or exits when the mount is taken away from outside (umount).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { Command, Option } from 'commander';
import { ClipError, ClipErrorCode, EXIT_CODES, isClipError } from '../errors';
import { ClipArchive } from '../archive/reader';
import { log } from '../log';
import { mount, ReadMiss } from '../mount/mount';
import { layoutDirOf, layoutReadMiss } from '../mount/layout-source';
import { mountpointState, unmountPath } from '../mount/stale';

interface MountFlags {
  threads?: string;
  cacheDir?: string;
  foreground?: boolean;
  deadline: string;
  source?: string;
  logFile?: string;
  readyFd?: string;
  debug?: boolean;
}

function positiveInt(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new ClipError('EINVAL', `${what} must be a positive integer, not "${text}"`);
  return n;
}

/** Where misses are fetched from, until the storage tiers are wired in: the layout the archive names, or --source. */
function missHandlerFor(archivePath: string, source?: string): ReadMiss | undefined {
  const archive = ClipArchive.open(archivePath);
  if (source) return layoutReadMiss(archive, path.resolve(source));
  if (layoutDirOf(archive)) return layoutReadMiss(archive);
  log.warn({ archive: archivePath }, 'no source for layers missing from the disk cache: their reads fail with EIO');
  return undefined;
}

async function runForeground(archive: string, mountpoint: string, flags: MountFlags): Promise<void> {
  const readyFd = flags.readyFd !== undefined ? Number(flags.readyFd) : undefined;
  let m;
  try {
    m = await mount({
      archive,
      mountpoint,
      threads: flags.threads !== undefined ? positiveInt(flags.threads, '--threads') : undefined,
      cacheDir: flags.cacheDir,
      deadlineMs: positiveInt(flags.deadline, '--deadline'),
      readMiss: missHandlerFor(archive, flags.source),
      debug: flags.debug,
    });
  } catch (e) {
    if (readyFd !== undefined) {
      const code = isClipError(e) ? e.code : 'EIO';
      fs.writeSync(readyFd, `error ${code} ${(e as Error).message}\n`);
      fs.closeSync(readyFd);
    }
    throw e;
  }
  log.info({ mountpoint: m.mountpoint, archive: m.archivePath, pid: process.pid }, 'mounted');
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
  log.info({ stats: m.stats() }, 'stopped');
}

async function runBackground(archive: string, mountpoint: string, flags: MountFlags): Promise<void> {
  const script = process.argv[1];
  const args = [script, 'mount', archive, mountpoint, '--foreground', '--ready-fd', '3', '--deadline', flags.deadline];
  if (flags.threads) args.push('--threads', flags.threads);
  if (flags.cacheDir) args.push('--cache-dir', path.resolve(flags.cacheDir));
  if (flags.source) args.push('--source', path.resolve(flags.source));
  const logFd = flags.logFile ? fs.openSync(flags.logFile, 'a') : 'ignore';
  // glibc keeps freed buffers of the miss path's worker threads in per-thread
  // arenas (tens of MiB in a long-lived mount) once its mmap threshold has
  // crept up; a fixed threshold returns large buffers to the kernel.
  const env = { MALLOC_MMAP_THRESHOLD_: '131072', ...process.env };
  const child = spawn(process.execPath, [...process.execArgv, ...args], { detached: true, stdio: ['ignore', 'ignore', logFd, 'pipe'], cwd: '/', env });
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

export function registerMountCommands(program: Command): void {
  program
    .command('mount')
    .description('mount a .clip archive read-only (FUSE); file bytes are fetched when read')
    .argument('<archive>', 'the .clip archive')
    .argument('<mountpoint>', 'an existing directory')
    .option('--threads <n>', 'FUSE worker threads (default: the CPU count, 2 to 8)')
    .option('--cache-dir <dir>', 'host disk cache (reads layers at DIR/layers/sha256/<diff_id>)')
    .option('--foreground', 'stay attached; unmount on SIGINT/SIGTERM')
    .option('--deadline <ms>', 'milliseconds a missing read may take before it fails with EIO', '30000')
    .option('--source <dir>', 'OCI layout directory to fetch missing layer bytes from (default: the one the archive was indexed from)')
    .option('--log-file <file>', 'where the background mount process logs (default: nowhere)')
    .option('--debug', "libfuse's request trace on stderr")
    .addOption(new Option('--ready-fd <fd>').hideHelp())
    .action(async (archive: string, mountpoint: string, flags: MountFlags) => {
      if (flags.threads !== undefined) positiveInt(flags.threads, '--threads');
      positiveInt(flags.deadline, '--deadline');
      if (!fs.existsSync(archive)) throw new ClipError('ENOENT', `${archive}: no such file`);
      if (flags.foreground) await runForeground(path.resolve(archive), mountpoint, flags);
      else await runBackground(path.resolve(archive), mountpoint, flags);
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
