/**
 * Plots as standalone SVG, drawn here (no plotting dependency): CDFs of
 * latency samples on a log time axis, lines of (x, y) points, and bars with
 * their min–max spread.
 */
import type { Plot } from './result';

const W = 720;
const H = 400;
const M = { left: 72, right: 16, top: 36, bottom: 56 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#17becf'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const num = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(2));

/** Human tick label: seconds as ns/µs/ms/s, other values with SI suffixes. */
function label(v: number, unit: string): string {
  if (unit === 's') {
    if (v < 1e-6) return `${num(+(v * 1e9).toPrecision(3))} ns`;
    if (v < 1e-3) return `${num(+(v * 1e6).toPrecision(3))} µs`;
    if (v < 1) return `${num(+(v * 1e3).toPrecision(3))} ms`;
    return `${num(+v.toPrecision(3))} s`;
  }
  if (Math.abs(v) >= 1e6) return `${num(+(v / 1e6).toPrecision(3))}M`;
  if (Math.abs(v) >= 1e4) return `${num(+(v / 1e3).toPrecision(3))}k`;
  return num(+v.toPrecision(3));
}

interface Axis {
  min: number;
  max: number;
  log: boolean;
}

function scale(a: Axis, from: number, to: number): (v: number) => number {
  const f = (v: number) => (a.log ? Math.log10(v) : v);
  const lo = f(a.min);
  const hi = f(a.max);
  return (v) => from + ((f(v) - lo) / (hi - lo || 1)) * (to - from);
}

function ticks(a: Axis): number[] {
  if (a.log) {
    const out: number[] = [];
    for (let e = Math.floor(Math.log10(a.min)); e <= Math.ceil(Math.log10(a.max)); e++) {
      for (const m of [1, 2, 5]) {
        const v = m * 10 ** e;
        if (v >= a.min && v <= a.max) out.push(v);
      }
    }
    return out;
  }
  const span = a.max - a.min || 1;
  const step = 10 ** Math.floor(Math.log10(span / 5));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => span / s <= 8) ?? step * 10;
  const out: number[] = [];
  for (let v = Math.ceil(a.min / nice) * nice; v <= a.max + 1e-12; v += nice) out.push(+v.toPrecision(12));
  return out;
}

function frame(
  title: string,
  x: Axis,
  y: Axis,
  xUnit: string,
  yUnit: string,
  xTitle: string,
  yTitle: string,
  xTicks = ticks(x),
): { parts: string[]; sx: (v: number) => number; sy: (v: number) => number } {
  const sx = scale(x, M.left, W - M.right);
  const sy = scale(y, H - M.bottom, M.top);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`,
  ];
  for (const t of xTicks) {
    parts.push(`<line x1="${sx(t)}" y1="${M.top}" x2="${sx(t)}" y2="${H - M.bottom}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${sx(t)}" y="${H - M.bottom + 16}" text-anchor="middle">${esc(label(t, xUnit))}</text>`);
  }
  for (const t of ticks(y)) {
    parts.push(`<line x1="${M.left}" y1="${sy(t)}" x2="${W - M.right}" y2="${sy(t)}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${M.left - 6}" y="${sy(t) + 4}" text-anchor="end">${esc(label(t, yUnit))}</text>`);
  }
  parts.push(`<rect x="${M.left}" y="${M.top}" width="${W - M.left - M.right}" height="${H - M.top - M.bottom}" fill="none" stroke="#333"/>`);
  parts.push(`<text x="${(M.left + W - M.right) / 2}" y="${H - 14}" text-anchor="middle">${esc(xTitle)}</text>`);
  parts.push(`<text transform="translate(16 ${(M.top + H - M.bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(yTitle)}</text>`);
  return { parts, sx, sy };
}

function legend(parts: string[], names: string[]): void {
  names.forEach((name, i) => {
    const y = M.top + 14 + i * 16;
    parts.push(`<rect x="${M.left + 10}" y="${y - 9}" width="12" height="10" fill="${COLORS[i % COLORS.length]}"/>`);
    parts.push(`<text x="${M.left + 28}" y="${y}">${esc(name)}</text>`);
  });
}

const extent = (values: number[]) => ({ min: Math.min(...values), max: Math.max(...values) });

/** One plot as an SVG document. */
export function renderSvg(plot: Plot): string {
  if (plot.kind === 'cdf') {
    const all = plot.series.flatMap((s) => s.samples).filter((v) => v > 0);
    const e = extent(all);
    const x: Axis = { min: e.min * 0.9, max: e.max * 1.1, log: true };
    const { parts, sx, sy } = frame(plot.title, x, { min: 0, max: 1, log: false }, 's', '', 'latency (log scale)', 'share of reads ≤ latency');
    plot.series.forEach((s, i) => {
      const sorted = s.samples.filter((v) => v > 0).sort((a, b) => a - b);
      const pts = sorted.map((v, k) => `${sx(v).toFixed(1)},${sy((k + 1) / sorted.length).toFixed(1)}`);
      parts.push(`<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="2" points="${pts.join(' ')}"/>`);
    });
    legend(
      parts,
      plot.series.map((s) => `${s.name} (n=${s.samples.length})`),
    );
    return `${parts.join('\n')}\n</svg>\n`;
  }
  if (plot.kind === 'line') {
    const xs = extent(plot.series.flatMap((s) => s.points.map((p) => p[0])));
    const ys = extent(plot.series.flatMap((s) => s.points.map((p) => p[1])));
    const x: Axis = plot.logX ? { min: xs.min / 1.3, max: xs.max * 1.3, log: true } : { min: xs.min, max: xs.max, log: false };
    // The x ticks are the measured x values (e.g. 1, 2, 8, 32 readers).
    const xTicks = [...new Set(plot.series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
    const { parts, sx, sy } = frame(plot.title, x, { min: 0, max: ys.max * 1.1, log: false }, '', '', plot.x, plot.y, xTicks);
    plot.series.forEach((s, i) => {
      const c = COLORS[i % COLORS.length];
      parts.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${s.points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(' ')}"/>`);
      for (const p of s.points) parts.push(`<circle cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="3.5" fill="${c}"/>`);
    });
    legend(
      parts,
      plot.series.map((s) => s.name),
    );
    return `${parts.join('\n')}\n</svg>\n`;
  }
  // Bars: the median, with a whisker from min to max; one bar per name, horizontal.
  const rowH = 34;
  const left = 330;
  const h = M.top + plot.bars.length * rowH + 40;
  const max = Math.max(...plot.bars.flatMap((b) => b.samples)) * 1.08 || 1;
  const sx = (v: number) => left + (v / max) * (W - M.right - left - 50);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${h}" viewBox="0 0 ${W} ${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${h}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(plot.title)}</text>`,
  ];
  plot.bars.forEach((b, i) => {
    const sorted = [...b.samples].sort((p, q) => p - q);
    const med = sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
    const y = M.top + i * rowH;
    const c = COLORS[i % COLORS.length];
    parts.push(`<text x="${left - 8}" y="${y + 17}" text-anchor="end">${esc(b.name)}</text>`);
    parts.push(`<rect x="${left}" y="${y + 6}" width="${Math.max(1, sx(med) - left).toFixed(1)}" height="${rowH - 12}" fill="${c}"/>`);
    parts.push(`<line x1="${sx(sorted[0]).toFixed(1)}" y1="${y + rowH / 2}" x2="${sx(sorted[sorted.length - 1]).toFixed(1)}" y2="${y + rowH / 2}" stroke="#222" stroke-width="1.5"/>`);
    parts.push(`<text x="${(sx(sorted[sorted.length - 1]) + 6).toFixed(1)}" y="${y + 21}">${esc(`${label(med, plot.unit === 's' ? 's' : '')}${plot.unit === 's' ? '' : ` ${plot.unit}`}`)}</text>`);
  });
  parts.push(`<line x1="${left}" y1="${M.top - 4}" x2="${left}" y2="${h - 36}" stroke="#333"/>`);
  parts.push(`<text x="${left}" y="${h - 14}">median; whisker: min–max of the runs</text>`);
  return `${parts.join('\n')}\n</svg>\n`;
}
