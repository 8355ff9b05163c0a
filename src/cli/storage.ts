/**
 * The storage commands, reading file bytes through the tiers (disk cache,
 * Redis, source) without mounting:
 *   cat FILE.clip PATH          one file's bytes to stdout
 *   extract FILE.clip DIR       the whole tree with all attributes into an empty DIR
 *   cache ls|prune|verify       the host-wide disk cache
 * One-shot commands default to the prefetch that suits them: `cat` fills
 * nothing (a background fill would be cut short when it exits), `extract`
 * reads everything, so it fills each layer first (eager) and then preads.
 */
import { Command, Option } from 'commander';
import { ClipError } from '../errors';
import { parseSize } from '../engine/options';
import { log } from '../log';
import { defaultCacheDir, DiskCache } from '../storage/disk-cache';
import { extractArchive } from '../storage/extract';
import { LayerStore, LayerStoreOptions, PrefetchMode } from '../storage/store';

export interface TierFlags {
  cacheDir?: string;
  cacheSize?: string;
  redis?: string;
  prefetch?: PrefetchMode;
  insecure?: boolean;
  username?: string;
  password?: string;
  stats?: boolean;
}

export function addTierOptions(cmd: Command, defaultPrefetch: PrefetchMode): Command {
  return cmd
    .option('--cache-dir <dir>', 'disk cache directory (default $CLIP_CACHE_DIR, $XDG_CACHE_HOME/clip-native or ~/.cache/clip-native)')
    .option('--cache-size <size>', 'size cap of the disk cache, least recently used layers evicted (e.g. 20GiB)')
    .option('--redis <url>', 'remote content cache, redis://host:port (a cluster: any node)')
    .addOption(new Option('--prefetch <mode>', 'fill whole layers into the disk cache').choices(['none', 'background', 'eager']).default(defaultPrefetch))
    .option('--insecure', 'talk plain http to the registry')
    .option('--username <user>', 'registry user (or CLIP_REGISTRY_USERNAME)')
    .option('--password <password>', 'registry password (or CLIP_REGISTRY_PASSWORD)')
    .option('--stats', 'print per-tier statistics as JSON on stderr at the end');
}

export function storeOptions(archive: string, flags: TierFlags): LayerStoreOptions {
  if ((flags.username === undefined) !== (flags.password === undefined)) {
    throw new ClipError('EINVAL', 'give both --username and --password, or neither');
  }
  const options: LayerStoreOptions = { archive, prefetch: flags.prefetch };
  if (flags.cacheDir) options.cacheDir = flags.cacheDir;
  if (flags.cacheSize) options.cacheSize = parseSize(flags.cacheSize);
  if (flags.redis) options.redis = flags.redis;
  if (flags.insecure) options.insecure = true;
  if (flags.username !== undefined) options.credentials = { username: flags.username, password: flags.password! };
  return options;
}

async function withStore<T>(archive: string, flags: TierFlags, fn: (store: LayerStore) => Promise<T>): Promise<T> {
  const store = await LayerStore.open(storeOptions(archive, flags));
  try {
    return await fn(store);
  } finally {
    await store.close();
    if (flags.stats) process.stderr.write(`${JSON.stringify(store.stats())}\n`);
  }
}

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

export function registerStorageCommands(program: Command): void {
  addTierOptions(
    program
      .command('cat')
      .description('write one file of the image to stdout, fetching only its bytes')
      .argument('<archive>', 'a .clip archive')
      .argument('<path>', 'path in the image (symlinks are followed within the image)'),
    'none',
  ).action(async (archive: string, file: string, flags: TierFlags) => {
    await withStore(archive, flags, async (store) => {
      const stream = store.createReadStream(file);
      for await (const chunk of stream) {
        if (!process.stdout.write(chunk as Buffer)) await new Promise((resolve) => process.stdout.once('drain', resolve));
      }
    });
  });

  addTierOptions(
    program
      .command('extract')
      .description('write the whole tree into an empty directory, with modes, owners, times, links, devices and xattrs')
      .argument('<archive>', 'a .clip archive')
      .argument('<dir>', 'target directory (created if missing; must be empty)'),
    'eager',
  )
    .option('--json', 'print the result as JSON')
    .action(async (archive: string, dir: string, flags: TierFlags & { json?: boolean }) => {
      const started = performance.now();
      const result = await withStore(archive, flags, (store) => extractArchive(store, dir));
      const seconds = (performance.now() - started) / 1000;
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ ...result, seconds }, null, 2)}\n`);
        return;
      }
      process.stdout.write(
        `${dir}: ${result.files} files (${formatBytes(result.bytes)}), ${result.dirs} directories, ${result.symlinks} symlinks, ` +
          `${result.hardlinks} hardlinks, ${result.devices} devices, ${result.fifos} fifos in ${seconds.toFixed(2)} s\n`,
      );
    });

  const cache = program.command('cache').description('the host-wide disk cache of decompressed layers');
  const cacheDirOption = (cmd: Command) =>
    cmd.option('--cache-dir <dir>', 'disk cache directory (default $CLIP_CACHE_DIR, $XDG_CACHE_HOME/clip-native or ~/.cache/clip-native)');

  cacheDirOption(cache.command('ls').description('list cached layers, least recently used first'))
    .option('--json', 'print as JSON')
    .action((flags: { cacheDir?: string; json?: boolean }) => {
      const disk = new DiskCache(defaultCacheDir(flags.cacheDir));
      const listing = disk.list();
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ dir: disk.dir, ...listing }, null, 2)}\n`);
        return;
      }
      for (const l of listing.layers) {
        const copies = l.copiesBytes ? `  (${formatBytes(l.copiesBytes)} of it passthrough copies)` : '';
        process.stdout.write(`${l.diffId}  ${formatBytes(l.size).padStart(10)}  ${new Date(l.lastUsedMs).toISOString()}${l.pinned ? '  in use' : ''}${copies}\n`);
      }
      for (const p of listing.partials) process.stdout.write(`${p.path}  ${formatBytes(p.size).padStart(10)}  partial (pid ${p.pid})\n`);
      process.stdout.write(`${listing.layers.length} layers, ${formatBytes(listing.totalBytes)} in ${disk.dir}\n`);
    });

  cacheDirOption(cache.command('prune').description('remove partial files of dead fills, and evict least recently used layers not in use'))
    .option('--max-size <size>', 'evict until the cache holds at most this much (default: remove every layer not in use)')
    .action((flags: { cacheDir?: string; maxSize?: string }) => {
      const disk = new DiskCache(defaultCacheDir(flags.cacheDir));
      const target = flags.maxSize !== undefined ? parseSize(flags.maxSize) : 0;
      const removed = disk.prune(target);
      const freed = removed.layers.reduce((s, l) => s + l.size, 0);
      log.info({ partials: removed.partials.length, layers: removed.layers.length, freed }, 'cache pruned');
      process.stdout.write(`removed ${removed.layers.length} layers (${formatBytes(freed)}) and ${removed.partials.length} partial files\n`);
    });

  cacheDirOption(cache.command('verify').description('re-hash every cached layer and compare its passthrough copies with it; delete what does not match'))
    .action(async (flags: { cacheDir?: string }) => {
      const disk = new DiskCache(defaultCacheDir(flags.cacheDir));
      const result = await disk.verify((hex, ok) => process.stdout.write(`sha256:${hex}  ${ok ? 'ok' : 'MISMATCH, deleted'}\n`));
      for (const copy of result.deletedCopies) process.stdout.write(`${copy}  MISMATCH with its layer, deleted\n`);
      process.stdout.write(`${result.ok.length} ok, ${result.deleted.length} deleted, ${result.deletedCopies.length} passthrough copies deleted\n`);
      const bad = result.deleted.length + result.deletedCopies.length;
      if (bad) throw new ClipError('EDIGEST', `${result.deleted.length} cached layers did not match their digest and ${result.deletedCopies.length} copies did not match their layer; deleted`);
    });
}
