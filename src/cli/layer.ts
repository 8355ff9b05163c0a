/**
 * `clip-native layer …`: the engine on one layer blob, without an image.
 *   layer index BLOB    index in one pass; print a summary, save checkpoints
 *   layer cat BLOB PATH print one file of the layer, read through checkpoints
 *   layer read BLOB     print uncompressed bytes [offset, offset + length)
 */
import { promises as fs } from 'node:fs';
import { Command, Option } from 'commander';
import { ClipError } from '../errors';
import { indexLayerFile, InflateEngine, LayerIndex, LayerReader } from '../engine/layer';
import { parseSize } from '../engine/options';
import { log } from '../log';

interface IndexFlags {
  spacing: string;
  engine: InflateEngine;
  checkpoints?: string;
  json?: boolean;
}

function engineOption(): Option {
  return new Option('--engine <engine>', 'inflate engine').choices(['isal', 'zlib']).default('isal');
}

function summarize(blob: string, index: LayerIndex, seconds: number): Record<string, unknown> {
  const byType: Record<string, number> = {};
  for (const e of index.entries) byType[e.type] = (byType[e.type] ?? 0) + 1;
  return {
    blob,
    format: index.format,
    digest: index.digest,
    diffId: index.diffId,
    compressedSize: index.compressedSize,
    uncompressedSize: index.uncompressedSize,
    entries: index.entries.length,
    entriesByType: byType,
    checkpoints: index.checkpointCount,
    checkpointBytes: index.checkpoints.length,
    checkpointShare: index.compressedSize ? index.checkpoints.length / index.compressedSize : 0,
    seconds,
  };
}

async function writeBytes(data: Buffer): Promise<void> {
  await new Promise<void>((resolve, reject) => process.stdout.write(data, (e) => (e ? reject(e) : resolve())));
}

export function registerLayerCommands(program: Command): void {
  const layer = program.command('layer').description('work on one layer blob (gzip or plain tar) directly');

  layer
    .command('index')
    .description('index a layer blob in one streaming pass and print what it holds')
    .argument('<blob>', 'layer blob file (gzip or plain tar)')
    .option('--spacing <size>', 'uncompressed bytes between checkpoints', '2MiB')
    .addOption(engineOption())
    .option('--checkpoints <file>', 'write the serialized checkpoints here')
    .option('--json', 'print the summary as JSON')
    .action(async (blob: string, flags: IndexFlags) => {
      const started = process.hrtime.bigint();
      const index = await indexLayerFile(blob, { spacing: parseSize(flags.spacing), engine: flags.engine });
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (flags.checkpoints) await fs.writeFile(flags.checkpoints, index.checkpoints);
      const summary = summarize(blob, index, seconds);
      log.debug(summary, 'layer indexed');
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
        return;
      }
      const types = Object.entries(summary.entriesByType as Record<string, number>)
        .map(([t, n]) => `${n} ${t}`)
        .join(', ');
      process.stdout.write(
        [
          `${blob}: ${index.format}, ${index.compressedSize} bytes -> ${index.uncompressedSize} bytes uncompressed`,
          `  digest   ${index.digest}`,
          `  diff_id  ${index.diffId}`,
          `  entries  ${index.entries.length} (${types})`,
          `  checkpoints ${index.checkpointCount}, ${index.checkpoints.length} bytes ` +
            `(${((100 * index.checkpoints.length) / Math.max(1, index.compressedSize)).toFixed(3)}% of the blob)`,
          `  indexed in ${seconds.toFixed(3)} s`,
          '',
        ].join('\n'),
      );
    });

  layer
    .command('cat')
    .description("print one regular file's bytes, read through the checkpoints")
    .argument('<blob>', 'layer blob file')
    .argument('<path>', 'path of the file inside the layer (as in the tar, leading ./ optional)')
    .addOption(engineOption())
    .action(async (blob: string, wanted: string, flags: { engine: InflateEngine }) => {
      const index = await indexLayerFile(blob, { engine: flags.engine });
      const norm = (p: string) => p.replace(/^\.?\/+/, '').replace(/\/+$/, '');
      const entry = index.entries.filter((e) => norm(e.path) === norm(wanted)).pop();
      if (!entry) throw new ClipError('ENOENT', `${wanted}: no such entry in ${blob}`);
      if (entry.type !== 'file') throw new ClipError('EINVAL', `${wanted}: is a ${entry.type}, not a regular file`);
      const reader = new LayerReader(index.checkpoints, blob, flags.engine);
      const chunk = 16 * 1024 * 1024;
      for (let done = 0; done < entry.size; done += chunk) {
        await writeBytes(await reader.read(entry.dataOffset + done, Math.min(chunk, entry.size - done)));
      }
    });

  layer
    .command('read')
    .description('print uncompressed bytes [offset, offset + length) of a layer')
    .argument('<blob>', 'layer blob file')
    .requiredOption('--checkpoints <file>', 'checkpoints saved by `layer index --checkpoints`')
    .requiredOption('--offset <n>', 'uncompressed offset')
    .requiredOption('--length <n>', 'bytes to read')
    .addOption(engineOption())
    .action(async (blob: string, flags: { checkpoints: string; offset: string; length: string; engine: InflateEngine }) => {
      const reader = new LayerReader(await fs.readFile(flags.checkpoints), blob, flags.engine);
      await writeBytes(await reader.read(parseSize(flags.offset), parseSize(flags.length)));
    });
}
