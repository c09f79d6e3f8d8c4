/**
 * Headless SVG line charts (loss / reward curves, accuracy vs. token budget): a Vega-Lite spec compiled to Vega
 * and rendered to an SVG string without a browser or canvas.
 */
import * as path from 'node:path';
import type * as vl from 'vega-lite';
import { atomicWrite, makeDir, writeAll } from '../io/safetensors.ts';

export interface Series { name: string; points: [number, number][] }

export interface LineChart {
  title: string;
  /** Axis titles. */
  x: string;
  y: string;
  series: Series[];
  width?: number; // 480
  height?: number; // 300
  /** Log-scale x axis (e.g. token budgets). */
  logX?: boolean;
  /** Draw a dot on every point as well as the line (default: only when a series has a single point, which no line shows). */
  points?: boolean;
  /** The y axis's range (e.g. [0, 100] for accuracy in %); default: the data's. */
  yDomain?: [number, number];
}

/** Render a multi-series line chart to SVG markup. Non-finite values are left out (a gap-free line through the rest). */
export async function lineChart(c: LineChart): Promise<string> {
  const finite = c.series.map((s) => ({ name: s.name, points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)) }));
  const values = finite.flatMap((s) => s.points.map(([x, y]) => ({ series: s.name, x, y })));
  const names = finite.filter((s) => s.points.length).map((s) => s.name); // a series with nothing to draw has no legend entry
  const spec: vl.TopLevelSpec = {
    title: c.title,
    width: c.width ?? 480,
    height: c.height ?? 300,
    data: { values },
    mark: { type: 'line', point: c.points ?? finite.some((s) => s.points.length === 1) },
    encoding: {
      // The axis spans the data (a "nice" log axis ran on to 10 or 1,000 past the last point).
      x: { field: 'x', type: 'quantitative', title: c.x, scale: { ...(c.logX ? { type: 'log', nice: false } : { zero: false, nice: false }), ...spread(values.map((v) => v.x), !!c.logX) } },
      y: { field: 'y', type: 'quantitative', title: c.y, scale: c.yDomain ? { domain: c.yDomain } : { zero: false, ...spread(values.map((v) => v.y), false) } },
      // One legend: colour and dashes (which tell apart series whose lines coincide) share the series' scale, with full labels.
      color: { field: 'series', type: 'nominal', title: null, scale: { domain: names }, legend: { labelLimit: 400, symbolType: 'stroke' } },
      strokeDash: { field: 'series', type: 'nominal', title: null, scale: { domain: names }, legend: { labelLimit: 400, symbolType: 'stroke' } },
    },
  };
  return render(spec);
}

/** A range around values that are all equal (one point, or a flat series): an axis of one value draws no line of ticks. */
function spread(v: number[], log: boolean): { domain?: [number, number] } {
  if (!v.length || Math.min(...v) !== Math.max(...v)) return {};
  const x = v[0];
  return { domain: log ? [x / 2, x * 2] : x === 0 ? [-1, 1] : [x - Math.abs(x) / 10, x + Math.abs(x) / 10] };
}

/** Grouped bars: one group per category, one bar per series (e.g. accuracy by difficulty, base vs adapter). */
export async function barChart(c: { title: string; subtitle?: string; y: string; bars: { category: string; series: string; value: number }[]; width?: number; height?: number; domain?: [number, number] }): Promise<string> {
  // Each bar is labelled with its value: a bar of 0 has no height, and would look like missing data.
  return render({
    title: c.subtitle ? { text: c.title, subtitle: c.subtitle } : c.title, width: c.width ?? 480, height: c.height ?? 300, data: { values: c.bars },
    encoding: {
      x: { field: 'category', type: 'nominal', title: null, sort: null },
      xOffset: { field: 'series', sort: null },
      y: { field: 'value', type: 'quantitative', title: c.y, ...(c.domain ? { scale: { domain: c.domain } } : {}) },
      color: { field: 'series', type: 'nominal', title: null, sort: null, legend: { labelLimit: 400 } },
    },
    layer: [{ mark: 'bar' }, { mark: { type: 'text', dy: -4, baseline: 'bottom', fontSize: 9 }, encoding: { text: { field: 'value', type: 'quantitative', format: '.3~r' }, color: { value: 'black' } } }],
  });
}

async function render(spec: vl.TopLevelSpec): Promise<string> {
  // Loaded on the first plot: importing edgereason need not load Vega (0.4 s; its top-level await also kept require() from loading the package).
  const [vega, { compile }] = await Promise.all([import('vega'), import('vega-lite')]);
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try { return await view.toSVG(); } finally { view.finalize(); }
}

/** Write an SVG (creating the folder), atomically. */
export function writeSvg(file: string, svg: string): void {
  makeDir(path.dirname(file));
  atomicWrite(file, (fd) => writeAll(fd, Buffer.from(svg)));
}
