/** Small statistics and table helpers shared by the benchmarks. */
export function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export const median = (values: number[]) => quantile(values, 0.5);

/** "median (min–max)" of seconds, in ms. */
export function spread(values: number[], scale = 1000, unit = 'ms'): string {
  const f = (v: number) => (v * scale).toFixed(v * scale < 10 ? 3 : 1);
  return `${f(median(values))} ${unit} (${f(Math.min(...values))}–${f(Math.max(...values))})`;
}

export function table(header: string[], rows: string[][]): string {
  const lines = [`| ${header.join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`];
  for (const row of rows) lines.push(`| ${row.join(' | ')} |`);
  return lines.join('\n');
}

export async function time<T>(fn: () => Promise<T> | T): Promise<[number, T]> {
  const t = process.hrtime.bigint();
  const result = await fn();
  return [Number(process.hrtime.bigint() - t) / 1e9, result];
}
