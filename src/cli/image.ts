/**
 * The image commands:
 *   index REF -o FILE.clip    index an image (layout or registry) into an archive
 *   inspect FILE.clip         what an archive holds: image, layers, entry counts, sizes
 *   ls FILE.clip [PATH] [-l]  list a directory of the merged tree (ls -l style with -l)
 * Progress goes to stderr: a live line on a terminal, JSON log lines otherwise.
 */
import { Command, Option } from 'commander';
import { ClipError } from '../errors';
import { pathBytes } from '../path-bytes';
import { ArchiveStat, ClipArchive, modeString, ROOT_INO } from '../archive/reader';
import { parseSize } from '../engine/options';
import { indexImage, IndexProgress } from '../index/build';
import { log } from '../log';
import { formatPlatform } from '../oci';

interface IndexFlags {
  output: string;
  platform?: string;
  spacing: string;
  proofSize: string;
  engine: 'isal' | 'zlib';
  insecure?: boolean;
  username?: string;
  password?: string;
  concurrency: string;
  json?: boolean;
}

export function registerImageCommands(program: Command): void {
  program
    .command('index')
    .description('index an image into a .clip archive (reads each layer once; stores no file contents)')
    .argument('<ref>', 'image: oci:DIR[:TAG], docker://NAME or NAME[:TAG|@DIGEST]')
    .requiredOption('-o, --output <file>', 'archive to write (replaced atomically)')
    .option('--platform <os/arch[/variant]>', 'platform to pick from a multi-platform image (default: this host)')
    .option('--spacing <size>', 'uncompressed bytes between checkpoints', '2MiB')
    .option('--proof-size <size>', 'compressed bytes per proof (a registry read fetches whole proofs)', '32KiB')
    .addOption(new Option('--engine <engine>', 'inflate engine').choices(['isal', 'zlib']).default('isal'))
    .option('--insecure', 'talk plain http to the registry')
    .option('--username <user>', 'registry user (or CLIP_REGISTRY_USERNAME)')
    .option('--password <password>', 'registry password (or CLIP_REGISTRY_PASSWORD)')
    .option('--concurrency <n>', 'layers indexed at once', '2')
    .option('--json', 'print the result as JSON')
    .action(async (ref: string, flags: IndexFlags) => {
      if ((flags.username === undefined) !== (flags.password === undefined)) {
        throw new ClipError('EINVAL', 'give both --username and --password, or neither');
      }
      const concurrency = Number(flags.concurrency);
      const progress = new ProgressLine(process.stderr.isTTY === true);
      let result;
      try {
        result = await indexImage(ref, {
          output: flags.output,
          platform: flags.platform,
          spacing: parseSize(flags.spacing),
          proofSize: parseSize(flags.proofSize),
          engine: flags.engine,
          insecure: flags.insecure,
          credentials: flags.username !== undefined ? { username: flags.username, password: flags.password! } : undefined,
          concurrency: Number.isSafeInteger(concurrency) ? concurrency : -1,
          onProgress: (p) => progress.update(p),
        });
      } finally {
        progress.end();
      }
      const summary = {
        output: result.output,
        reference: result.reference,
        manifest: result.image.manifestDescriptor.digest,
        platform: formatPlatform(result.image.platform),
        layers: result.layers,
        archiveSize: result.archiveSize,
        compressedSize: [...new Map(result.image.layers.map((l) => [l.digest, l.size])).values()].reduce((s, n) => s + n, 0),
        nodes: result.layout.nodes,
        names: result.layout.dirents,
        seconds: result.seconds,
      };
      log.info(summary, 'image indexed');
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
        return;
      }
      process.stdout.write(
        `${result.output}: ${summary.reference} (${summary.platform}), ${result.layers.length} layers, ` +
          `${summary.names + 1} entries, ${formatBytes(result.archiveSize)} ` +
          `(${percent(result.archiveSize, summary.compressedSize)} of ${formatBytes(summary.compressedSize)} compressed) ` +
          `in ${result.seconds.toFixed(2)} s\n`,
      );
    });

  program
    .command('inspect')
    .description('show what a .clip archive holds')
    .argument('<archive>', '.clip file')
    .option('--json', 'print as JSON')
    .action((file: string, flags: { json?: boolean }) => {
      const archive = ClipArchive.open(file);
      try {
        const report = inspectArchive(archive);
        if (flags.json) {
          process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
          return;
        }
        process.stdout.write(formatInspect(report));
      } finally {
        archive.close();
      }
    });

  program
    .command('ls')
    .description('list a directory of the merged tree')
    .argument('<archive>', '.clip file')
    .argument('[path]', 'path inside the image', '/')
    .option('-l, --long', 'long listing: mode, links, owner, group, size, mtime (UTC), name -> target')
    .action((file: string, wanted: string, flags: { long?: boolean }) => {
      const archive = ClipArchive.open(file);
      try {
        const ino = archive.lookupPath(wanted);
        if (ino === null) throw new ClipError('ENOENT', `${wanted}: no such file or directory in ${file}`);
        const stat = archive.stat(ino);
        const rows: Array<{ name: string; stat: ArchiveStat }> =
          stat.type === 'dir'
            ? archive.readdir(ino).map((e) => ({ name: e.name, stat: archive.stat(e.ino) }))
            : [{ name: wanted, stat }];
        // Names are written as their bytes, like ls into a pipe (path-bytes.ts).
        process.stdout.write(pathBytes(flags.long ? formatLong(archive, rows) : rows.map((r) => `${r.name}\n`).join('')));
      } finally {
        archive.close();
      }
    });
}

/** What `inspect` reports; also its --json shape. */
export interface InspectReport {
  archive: string;
  archiveSize: number;
  formatVersion: number;
  reference: string;
  platform: string;
  manifestDigest: string;
  configDigest: string;
  layers: Array<{ digest: string; diffId: string; mediaType: string; format: string; compressedSize: number; uncompressedSize: number; checkpointsSize: number }>;
  /** Nodes (inodes) by type; hardlinked names share one node. */
  nodesByType: Record<string, number>;
  nodes: number;
  /** Directory entries (names), the root not counted. */
  names: number;
  xattrs: number;
  compressedSize: number;
  /** archiveSize / compressedSize (distinct layer blobs). */
  shareOfImage: number;
  /** (archive − STRINGS − CHECKPOINTS − CONFIG) / (names + 1): the fixed-size records per entry. */
  bytesPerEntry: number;
  sections: { strings: number; checkpoints: number; config: number };
  config: Record<string, unknown>;
}

export function inspectArchive(archive: ClipArchive): InspectReport {
  const info = archive.info();
  const config = archive.imageConfig();
  const layers = archive.layers();
  const nodesByType: Record<string, number> = {};
  for (let ino = ROOT_INO; ino <= info.nodeCount; ino++) {
    const type = archive.stat(ino).type;
    nodesByType[type] = (nodesByType[type] ?? 0) + 1;
  }
  // Distinct blobs: a layer listed twice is pulled once.
  const compressedSize = [...new Map(layers.map((l) => [l.digest, l.compressedSize])).values()].reduce((s, n) => s + n, 0);
  const entries = info.direntCount + 1;
  return {
    archive: archive.path,
    archiveSize: info.fileSize,
    formatVersion: info.version,
    reference: String(config.reference ?? ''),
    platform: config.platform ? formatPlatform(config.platform) : '',
    manifestDigest: String(config.manifestDigest ?? ''),
    configDigest: String(config.configDigest ?? ''),
    layers,
    nodesByType,
    nodes: info.nodeCount,
    names: info.direntCount,
    xattrs: info.xattrCount,
    compressedSize,
    shareOfImage: compressedSize ? info.fileSize / compressedSize : 0,
    bytesPerEntry: (info.fileSize - info.stringsSize - info.checkpointsSize - info.configSize) / entries,
    sections: { strings: info.stringsSize, checkpoints: info.checkpointsSize, config: info.configSize },
    config: (config.config ?? {}) as Record<string, unknown>,
  };
}

function formatInspect(r: InspectReport): string {
  const lines = [
    `archive   ${r.archive} (${formatBytes(r.archiveSize)}, format v${r.formatVersion})`,
    `image     ${r.reference}`,
    `platform  ${r.platform}`,
    `manifest  ${r.manifestDigest}`,
    `config    ${r.configDigest}`,
    `layers    ${r.layers.length}`,
  ];
  r.layers.forEach((l, i) => {
    lines.push(
      `  ${i}  ${l.digest}  ${l.format}  ${formatBytes(l.compressedSize)} compressed, ${formatBytes(l.uncompressedSize)} uncompressed, ` +
        `${formatBytes(l.checkpointsSize)} checkpoints`,
    );
  });
  const types = Object.entries(r.nodesByType)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([t, n]) => `${n} ${t}`)
    .join(', ');
  lines.push(`entries   ${r.names + 1} names, ${r.nodes} nodes (${types}), ${r.xattrs} xattrs`);
  lines.push(
    `size      ${percent(r.archiveSize, r.compressedSize)} of the image's ${formatBytes(r.compressedSize)} compressed; ` +
      `${r.bytesPerEntry.toFixed(1)} bytes per entry besides strings and checkpoints ` +
      `(strings ${formatBytes(r.sections.strings)}, checkpoints ${formatBytes(r.sections.checkpoints)})`,
  );
  for (const [key, value] of Object.entries(r.config)) lines.push(`${key.padEnd(9)} ${JSON.stringify(value)}`);
  return `${lines.join('\n')}\n`;
}

function formatLong(archive: ClipArchive, rows: Array<{ name: string; stat: ArchiveStat }>): string {
  const cells = rows.map(({ name, stat }) => {
    const sizeCell = stat.type === 'char' || stat.type === 'block' ? `${stat.devmajor}, ${stat.devminor}` : String(stat.size);
    const link = stat.type === 'symlink' ? ` -> ${archive.readlink(stat.ino)}` : '';
    return [modeString(stat.mode), String(stat.nlink), String(stat.uid), String(stat.gid), sizeCell, formatTime(stat.mtimeSec), `${name}${link}`];
  });
  const widths = [0, 1, 2, 3, 4].map((c) => Math.max(0, ...cells.map((row) => row[c].length)));
  return cells
    .map((row) =>
      [row[0], row[1].padStart(widths[1]), row[2].padEnd(widths[2]), row[3].padEnd(widths[3]), row[4].padStart(widths[4]), row[5], row[6]].join(' '),
    )
    .map((line) => `${line}\n`)
    .join('');
}

/** `YYYY-MM-DD HH:MM` in UTC (ls --time-style=long-iso, but the same on every machine). */
function formatTime(sec: number): string {
  const d = new Date(sec * 1000);
  if (Number.isNaN(d.getTime())) return String(sec);
  return d.toISOString().slice(0, 16).replace('T', ' ');
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

function percent(part: number, whole: number): string {
  return whole ? `${((100 * part) / whole).toFixed(2)}%` : 'n/a';
}

/** The progress line on a terminal; JSON log lines (at most one a second) otherwise. */
class ProgressLine {
  private lastLog = 0;
  private shown = false;

  constructor(private readonly tty: boolean) {}

  update(p: IndexProgress): void {
    if (this.tty) {
      process.stderr.write(`\rindexing: ${p.layersDone}/${p.layersTotal} layers, ${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)}\x1b[K`);
      this.shown = true;
      return;
    }
    const now = Date.now();
    if (now - this.lastLog >= 1000 || p.layersDone === p.layersTotal) {
      this.lastLog = now;
      log.info({ ...p }, 'indexing');
    }
  }

  end(): void {
    if (this.shown) process.stderr.write('\n');
    this.shown = false;
  }
}
