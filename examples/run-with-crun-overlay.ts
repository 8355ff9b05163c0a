/**
 * Run a command under crun with a writable root over an image mounted by
 * clip-native: the mount is the read-only lower layer of a kernel overlayfs,
 * the container's writes land in an upper directory of the caller's, and
 * the mount stays as it was, ready for the next container. Many containers
 * can share one mount at once, each with its own upper directory.
 *
 *   clip-native mount IMAGE.clip /run/clip/app      # once per image and host
 *   node dist/examples/run-with-crun-overlay.js /run/clip/app --upper DIR --work DIR -- CMD [ARGS...]
 *   clip-native umount /run/clip/app                # after the last container
 *
 * (In your own project, import from 'clip-native' instead of '../src'.)
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ClipError } from '../src';
import { bundleConfig, commandLine, crunRun, exitWith, RunResult } from './run-with-crun';

export interface OverlayRunOptions {
  /** The image's root filesystem: a clip-native mount. The overlay's lower layer; never written. */
  image: string;
  /** Where the container's writes land, in overlayfs's format; kept after the run. */
  upperdir: string;
  /** overlayfs's scratch directory: empty, on the same filesystem as `upperdir`. */
  workdir: string;
  /** The command, resolved inside the image. */
  args: string[];
}

/** Runs a command without blocking this process, which may be the one answering the mount's misses. */
function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, (err, _stdout, stderr) => {
      if (err) reject(new ClipError('EIO', `${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve();
    });
  });
}

/**
 * Mounts an overlay of `options.image`, runs `options.args` on it under crun,
 * unmounts the overlay. Errors: EINVAL (a directory overlayfs cannot name),
 * EIO (mount or umount failed).
 */
export async function runOnOverlay(options: OverlayRunOptions): Promise<RunResult> {
  const dirs = [options.image, options.upperdir, options.workdir].map((d) => path.resolve(d));
  // overlayfs's options are a comma-separated list, and lowerdir a colon-separated one.
  const bad = dirs.find((d) => /[,:\\]/.test(d));
  if (bad) throw new ClipError('EINVAL', `overlay directory ${bad} has a ",", ":" or "\\" in its path`);
  const [image, upperdir, workdir] = dirs;
  const bundle = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-overlay-'));
  const rootfs = path.join(bundle, 'rootfs');
  fs.mkdirSync(rootfs);
  // 1. The overlay: reads fall through to the mount (and its storage tiers),
  //    a write first copies the file up into upperdir, a deletion leaves a
  //    whiteout there (a 0:0 character device).
  await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${image},upperdir=${upperdir},workdir=${workdir}`, rootfs]).catch((e) => {
    fs.rmSync(bundle, { recursive: true, force: true });
    throw e;
  });
  try {
    // 2. The bundle: the same config as a read-only run, with a writable root.
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ...bundleConfig(options.args), root: { path: 'rootfs', readonly: false } }, null, 2));
    // 3. Run: the container is gone (crun deletes it) when this resolves.
    return await crunRun(bundle, `clip-${process.pid}-${path.basename(bundle)}`);
  } finally {
    // 4. Tear down: the overlay, then the bundle; the image stays mounted.
    //    Should the unmount fail, the bundle stays: removing it would
    //    delete the container's files through the overlay.
    await run('umount', [rootfs]);
    fs.rmSync(bundle, { recursive: true, force: true });
  }
}

if (require.main === module) {
  const { first, flags, args } = commandLine('run-with-crun-overlay IMAGE_DIR --upper DIR --work DIR -- CMD [ARGS...]', ['--upper', '--work'], []);
  exitWith('run-with-crun-overlay', runOnOverlay({ image: first, upperdir: flags.get('--upper')!, workdir: flags.get('--work')!, args }));
}
