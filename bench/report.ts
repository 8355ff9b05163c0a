/**
 * The benchmark report: reads every bench/out/NAME.json the benchmarks
 * wrote (bench/result.ts) and writes bench/out/report.md — the machine, one
 * table of medians, spreads and ratios against the peers measured in the
 * same run, the plots (bench/out/*.svg), then each benchmark's own section.
 * Usage: node dist/bench/report.js [NAME...]   (default: every result file, in run order)
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BenchResult, Figure, OUT_DIR } from './result';
import { median, table } from './stats';
import { renderSvg } from './svg';

const ORDER = ['engine', 'image', 'storage', 'mount', 'coldstart'];

function machine(): string {
  const cpus = os.cpus();
  const gib = (os.totalmem() / 2 ** 30).toFixed(1);
  let distro = '';
  try {
    distro = /^PRETTY_NAME="?([^"\n]*)/m.exec(fs.readFileSync('/etc/os-release', 'utf8'))?.[1] ?? '';
  } catch {
    // not Linux-like: leave it out
  }
  let disk = '';
  try {
    disk = execFileSync('df', ['-h', '--output=source,fstype,size', OUT_DIR], { encoding: 'utf8' }).trim().split('\n')[1].replace(/\s+/g, ' ');
  } catch {
    // df missing: leave it out
  }
  return [
    `- CPU: ${cpus[0]?.model ?? 'unknown'}, ${os.availableParallelism()} cores available (${cpus.length} logical CPUs)`,
    `- RAM: ${gib} GiB`,
    `- Kernel: ${os.type()} ${os.release()} (${os.arch()})${distro ? `, ${distro}` : ''}`,
    `- Node.js ${process.version}${disk ? `; bench/out on ${disk}` : ''}`,
  ].join('\n');
}

/** A value with its unit, compactly. */
function fmt(v: number, unit: string): string {
  if (unit === 's') {
    if (v < 1e-3) return `${(v * 1e6).toFixed(v < 1e-5 ? 2 : 1)} µs`;
    if (v < 1) return `${(v * 1e3).toFixed(v < 1e-2 ? 2 : 1)} ms`;
    return `${v.toFixed(2)} s`;
  }
  if (unit === 'B') {
    if (v >= 1e6) return `${(v / 1e6).toFixed(1)} MB`;
    if (v >= 1e3) return `${(v / 1e3).toFixed(1)} kB`;
    return `${v.toFixed(0)} B`;
  }
  return `${+v.toPrecision(4)} ${unit}`;
}

/** "median (min–max)", or the one value. */
function cell(samples: number[], unit: string): string {
  if (samples.length === 0) return '';
  const m = fmt(median(samples), unit);
  if (samples.length === 1) return m;
  return `${m} (${fmt(Math.min(...samples), unit)}–${fmt(Math.max(...samples), unit)}, n=${samples.length})`;
}

/** Our median against the peer's: how many times better. */
function ratio(f: Figure): string {
  if (!f.peer || f.peer.samples.length === 0 || f.samples.length === 0) return '';
  const ours = median(f.samples);
  const theirs = median(f.peer.samples);
  if (ours === 0 || theirs === 0) return '';
  const better = f.lowerIsBetter === false ? ours / theirs : theirs / ours;
  return `${better >= 10 ? better.toFixed(0) : better.toFixed(2)}×`;
}

function main() {
  const wanted = process.argv.slice(2).filter((a) => !a.startsWith('--'));
  const names = fs
    .readdirSync(OUT_DIR)
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -5))
    .filter((n) => wanted.length === 0 || wanted.includes(n))
    .sort((a, b) => (ORDER.indexOf(a) + 1 || 99) - (ORDER.indexOf(b) + 1 || 99));
  if (names.length === 0) throw new Error(`no benchmark results in ${OUT_DIR}: run the benchmarks first (npm run bench)`);
  const results = names.map((n) => JSON.parse(fs.readFileSync(path.join(OUT_DIR, `${n}.json`), 'utf8')) as BenchResult);

  const rows: string[][] = [];
  for (const r of results) {
    for (const f of r.figures) {
      const row = [
        f.figure,
        cell(f.samples, f.unit),
        f.peer ? `${f.peer.name}: ${cell(f.peer.samples, f.unit)}` : '',
        ratio(f),
        f.goal ?? '',
        f.met === undefined ? '' : f.met ? 'met' : 'missed',
      ];
      rows.push([r.title, ...row].map((c) => c.replace(/\|/g, '\\|')));
    }
  }

  for (const old of fs.readdirSync(OUT_DIR).filter((f) => f.endsWith('.svg'))) fs.rmSync(path.join(OUT_DIR, old));
  const plots: string[] = [];
  for (const r of results) {
    r.plots.forEach((p, i) => {
      const file = `${r.name}-${i + 1}.svg`;
      fs.writeFileSync(path.join(OUT_DIR, file), renderSvg(p));
      plots.push(`![${p.title}](${file})`);
    });
  }

  const quick = results.some((r) => r.quick);
  const text = [
    `# clip-native benchmark report${quick ? ' (--quick)' : ''}`,
    '',
    `Generated ${new Date().toISOString()} from ${results.map((r) => `${r.name} (${r.runs} runs, ${r.seconds.toFixed(0)} s, ${r.finished})`).join(', ')}.`,
    '',
    '## Machine',
    '',
    machine(),
    '',
    '## Summary',
    '',
    'Median (min–max, n = runs or samples) of each figure; the peer was measured in the same run on the same data; ratio = how many times better clip-native is (above 1× is better).',
    '',
    table(['benchmark', 'figure', 'clip-native', 'peer', 'ratio', 'goal', ''], rows),
    '',
    '## Plots',
    '',
    ...plots.flatMap((p) => [p, '']),
    ...results.flatMap((r) => [r.markdown.replace(/^# /, '## ').replace(/\n## /g, '\n### ').trimEnd(), '']),
  ].join('\n');
  fs.writeFileSync(path.join(OUT_DIR, 'report.md'), text);
  process.stdout.write(`bench: wrote ${path.join(OUT_DIR, 'report.md')} and ${plots.length} plots\n`);
}

main();
