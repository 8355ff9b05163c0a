/**
 * What each benchmark hands to the report (bench/report.ts): one JSON file
 * per benchmark in bench/out/NAME.json, so every benchmark runs on its own
 * and the report is a separate step that only reads files.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export const OUT_DIR = path.resolve(__dirname, '../../bench/out');

/** One row of the summary table: our samples, optionally a peer's from the same run. */
export interface Figure {
  figure: string;
  /** Unit of the samples: 's', 'B', 'ops/s', '%', 'MiB', … */
  unit: string;
  samples: number[];
  /** Lower is better (times, bytes) unless false (throughput). */
  lowerIsBetter?: boolean;
  peer?: { name: string; samples: number[] };
  goal?: string;
  met?: boolean;
}

/** A plot: CDFs of latency samples, or lines of (x, y) points. */
export type Plot =
  | { kind: 'cdf'; title: string; unit: 's'; series: { name: string; samples: number[] }[] }
  | { kind: 'line'; title: string; x: string; y: string; logX?: boolean; series: { name: string; points: [number, number][] }[] }
  | { kind: 'bars'; title: string; unit: string; bars: { name: string; samples: number[] }[] };

export interface BenchResult {
  name: string;
  title: string;
  quick: boolean;
  runs: number;
  finished: string;
  seconds: number;
  figures: Figure[];
  plots: Plot[];
  /** The benchmark's own detailed section (Markdown). */
  markdown: string;
}

const started = performance.now();

/** Writes bench/out/NAME.json (and NAME.md, the detailed section alone). */
export function writeResult(result: Omit<BenchResult, 'finished' | 'seconds'>): void {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const full: BenchResult = { ...result, finished: new Date().toISOString(), seconds: (performance.now() - started) / 1000 };
  fs.writeFileSync(path.join(OUT_DIR, `${result.name}.json`), `${JSON.stringify(full)}\n`);
  fs.writeFileSync(path.join(OUT_DIR, `${result.name}.md`), `${result.markdown.trimEnd()}\n`);
}
