/**
 * Run a command from an image under crun, the image's root filesystem
 * mounted lazily by clip-native: mount the archive, write an OCI bundle
 * whose root is the mount (read-only), `crun run` it, tear everything down.
 *
 *   node dist/examples/run-with-crun.js IMAGE.clip [--cache-dir DIR] -- CMD [ARGS...]
 *
 * (In your own project, import from 'clip-native' instead of '../src'.)
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { mount } from '../src';

export interface RunOptions {
  /** A `.clip` archive made by `clip-native index` (or indexImage()). */
  archive: string;
  /** The command, resolved inside the image. */
  args: string[];
  /** The host's disk cache (default: the store's default). */
  cacheDir?: string;
  /** `redis://host:port`: a content cache shared by a fleet. */
  redis?: string;
  /** Plain http to the registry the archive was indexed from. */
  insecure?: boolean;
}

export interface RunResult {
  /** crun's exit status: the command's, or 1 when crun itself failed. */
  status: number;
  stdout: string;
  stderr: string;
  /** The bundle directory crun ran (removed by runWithCrun; its rootfs was the mountpoint). */
  bundle: string;
}

/** A minimal OCI runtime config: the mount as a read-only root, a tmpfs /tmp. */
export function bundleConfig(args: string[]): object {
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args,
      env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root'],
      cwd: '/',
      capabilities: { bounding: ['CAP_KILL'], effective: ['CAP_KILL'], permitted: ['CAP_KILL'] },
      noNewPrivileges: true,
    },
    root: { path: 'rootfs', readonly: true },
    hostname: 'clip',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'size=65536k'] },
    ],
    // No "resources": with --cgroup-manager=disabled crun creates no cgroup,
    // so the container stays in the caller's (limit it there if you need to).
    linux: { namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }] },
  };
}

/**
 * True on a "hybrid" cgroup host (v1 controllers, plus a cgroup2 tree at
 * /sys/fs/cgroup/unified that has controllers): crun refuses to run there,
 * even without a cgroup manager.
 */
function hybridCgroups(): boolean {
  try {
    return fs.readFileSync('/sys/fs/cgroup/unified/cgroup.controllers', 'utf8').trim() !== '';
  } catch {
    return false;
  }
}

/** `crun run`, asynchronously: this process must stay free to answer the mount's misses. */
export function crunRun(bundle: string, id: string): Promise<RunResult> {
  const crun = ['crun', '--cgroup-manager=disabled', 'run', '--bundle', bundle, id];
  // On a hybrid host, run crun in a private mount namespace without the
  // cgroup2 tree: crun then sees plain cgroup v1, and the host keeps its mounts.
  const [cmd, ...args] = hybridCgroups()
    ? ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'umount /sys/fs/cgroup/unified && exec "$@"', 'sh', ...crun]
    : crun;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code) => resolve({ status: code ?? 1, stdout, stderr, bundle }));
  });
}

/** Mounts `options.archive`, runs `options.args` in it under crun, tears down. */
export async function runWithCrun(options: RunOptions): Promise<RunResult> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-crun-'));
  const rootfs = path.join(work, 'rootfs');
  fs.mkdirSync(rootfs);
  // 1. The mount, and the storage tiers behind it: layers in the disk cache
  //    are read natively; other reads go through Redis (if given), then
  //    Range reads from the registry the archive was indexed from.
  const root = await mount({ archive: options.archive, mountpoint: rootfs, cacheDir: options.cacheDir, storage: { redis: options.redis, insecure: options.insecure } });
  try {
    // 2. The bundle: config.json next to the mounted rootfs.
    fs.writeFileSync(path.join(work, 'config.json'), JSON.stringify(bundleConfig(options.args), null, 2));
    // 3. Run: the container is gone (crun deletes it) when this resolves.
    return await crunRun(work, `clip-${process.pid}-${path.basename(work)}`);
  } finally {
    // 4. Tear down: unmount (which closes the mount's store), remove the bundle.
    await root.unmount();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/**
 * The examples' command line, `FIRST [--NAME VALUE]... -- CMD [ARGS...]`, of
 * which `required` names must be given and `optional` ones may be: FIRST, the
 * flags by name, and the command. Prints `usage` and exits 2 when it is not so.
 */
export function commandLine(usage: string, required: string[], optional: string[]): { first: string; flags: Map<string, string>; args: string[] } {
  const argv = process.argv.slice(2);
  const dash = argv.indexOf('--');
  const [first, ...rest] = dash < 0 ? [] : argv.slice(0, dash);
  const flags = new Map<string, string>();
  for (let i = 0; i + 1 < rest.length; i += 2) flags.set(rest[i], rest[i + 1]);
  const known = [...required, ...optional];
  if (!first || dash === argv.length - 1 || rest.length % 2 !== 0 || [...flags.keys()].some((n) => !known.includes(n)) || required.some((n) => !flags.has(n))) {
    process.stderr.write(`usage: ${usage}\n`);
    process.exit(2);
  }
  return { first, flags, args: argv.slice(dash + 1) };
}

/** Passes a run's output through and exits with its status (1, with the message, when it failed). */
export function exitWith(name: string, run: Promise<RunResult>): void {
  run.then(
    (r) => {
      process.stdout.write(r.stdout);
      process.stderr.write(r.stderr);
      process.exit(r.status);
    },
    (e: Error) => {
      process.stderr.write(`${name}: ${e.message}\n`);
      process.exit(1);
    },
  );
}

if (require.main === module) {
  const { first, flags, args } = commandLine('run-with-crun IMAGE.clip [--cache-dir DIR] -- CMD [ARGS...]', [], ['--cache-dir']);
  exitWith('run-with-crun', runWithCrun({ archive: first, cacheDir: flags.get('--cache-dir'), args }));
}
