/**
 * Image indexing benchmark (issue: image indexing), one run, same image:
 *   `clip-native index docker://…` of the two-layer Debian demo image from a
 *   registry on 127.0.0.1, vs `skopeo copy` + `umoci unpack` of the same
 *   image (what a pull does): goal <= 0.5x of their time; and the archive's
 *   size: bytes per entry (goal <= 64 besides names) and share of the image
 *   (goal <= 1%).
 * Usage: node dist/bench/image.js [--quick]   (bench/run.sh prepares the data)
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startRegistry } from '../test/registry-harness';
import { writeResult } from './result';
import { median, spread, table } from './stats';

const quick = process.argv.includes('--quick');
const RUNS = quick ? 2 : 5;
const layout = process.env.CLIP_DEMO_OCI ?? '/var/cache/clip-native/demo-oci';
const cli = path.resolve(__dirname, '../src/cli/main.js');

function timed(command: string, args: string[]): number {
  const t = process.hrtime.bigint();
  const r = spawnSync(command, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${r.stderr}`);
  return Number(process.hrtime.bigint() - t) / 1e9;
}

async function main() {
  const registry = await startRegistry({ auth: 'none' });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-bench-image-'));
  try {
    await registry.push(`oci:${layout}:bookworm`, 'demo:bookworm');
    const ref = `${registry.host}/demo:bookworm`;
    const archive = path.join(work, 'demo.clip');
    const ours: number[] = [];
    const pull: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      fs.rmSync(archive, { force: true });
      ours.push(timed(process.execPath, [cli, '--log-level', 'warn', 'index', `docker://${ref}`, '--insecure', '-o', archive]));
      const copy = path.join(work, `copy-${i}`);
      const bundle = path.join(work, `bundle-${i}`);
      pull.push(
        timed('/bin/sh', ['-c', `skopeo copy -q --src-tls-verify=false docker://${ref} oci:${copy}:bookworm && umoci unpack --image ${copy}:bookworm ${bundle} >/dev/null`]),
      );
      fs.rmSync(copy, { recursive: true, force: true });
      fs.rmSync(bundle, { recursive: true, force: true });
    }
    const info = JSON.parse(
      spawnSync(process.execPath, [cli, 'inspect', archive, '--json'], { encoding: 'utf8' }).stdout,
    ) as { archiveSize: number; nodes: number; names: number; shareOfImage: number; bytesPerEntry: number; compressedSize: number };
    const ratio = median(ours) / median(pull);
    const rows = [
      ['`index` from a registry on 127.0.0.1 vs `skopeo copy` + `umoci unpack`', spread(ours, 1, 's'), spread(pull, 1, 's'), `${ratio.toFixed(2)}×`, '≤ 0.5×', ratio <= 0.5 ? 'met' : 'missed'],
      ['archive size / compressed image', `${info.archiveSize} B`, `${info.compressedSize} B image`, `${(info.shareOfImage * 100).toFixed(2)}%`, '≤ 1%', info.shareOfImage <= 0.01 ? 'met' : 'missed'],
      [`archive bytes per entry besides names (${info.names} names, ${info.nodes} nodes)`, info.bytesPerEntry.toFixed(1), '', '', '≤ 64', info.bytesPerEntry <= 64 ? 'met' : 'missed'],
    ];
    const text = [
      '# Image indexing benchmark\n',
      `Machine: ${os.cpus().length} × ${os.cpus()[0].model}, node ${process.version}. Image: the two-layer Debian demo image (${(info.compressedSize / 1048576).toFixed(1)} MiB compressed) in a docker-registry on 127.0.0.1. Runs per figure: ${RUNS}. Both sides run as fresh processes.\n`,
      table(['figure', 'clip-native', 'peer', 'ratio', 'goal', ''], rows),
    ].join('\n');
    process.stdout.write(`${text}\n`);
    writeResult({
      name: 'image',
      title: 'Image indexing',
      quick,
      runs: RUNS,
      figures: [
        { figure: '`index` from a registry vs a pull (`skopeo copy` + `umoci unpack`)', unit: 's', samples: ours, peer: { name: 'skopeo copy + umoci unpack', samples: pull }, goal: '≤ 0.5× the time', met: ratio <= 0.5 },
        { figure: 'archive size / compressed image', unit: '%', samples: [info.shareOfImage * 100], goal: '≤ 1%', met: info.shareOfImage <= 0.01 },
        { figure: 'archive bytes per entry besides names', unit: 'B', samples: [info.bytesPerEntry], goal: '≤ 64', met: info.bytesPerEntry <= 64 },
      ],
      plots: [],
      markdown: text,
    });
  } finally {
    await registry.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
