/**
 * Headless SVG line charts (loss / reward curves, accuracy vs. token budget): a Vega-Lite spec compiled to Vega
 * and rendered to an SVG string without a browser or canvas.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import { atomicWrite, writeAll } from '../io/safetensors.ts';

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
  /** Draw a dot on every point as well as the line. */
  points?: boolean;
}

/** Render a multi-series line chart to SVG markup. Non-finite values are left out (a gap-free line through the rest). */
export async function lineChart(c: LineChart): Promise<string> {
  const values = c.series.flatMap((s) => s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)).map(([x, y]) => ({ series: s.name, x, y })));
  const spec: vl.TopLevelSpec = {
    title: c.title,
    width: c.width ?? 480,
    height: c.height ?? 300,
    data: { values },
    mark: { type: 'line', point: c.points ?? false },
    encoding: {
      // The axis spans the data (a "nice" log axis ran on to 10 or 1,000 past the last point).
      x: { field: 'x', type: 'quantitative', title: c.x, scale: c.logX ? { type: 'log', nice: false } : { zero: false, nice: false } },
      y: { field: 'y', type: 'quantitative', title: c.y, scale: { zero: false } },
      // Full legend labels; dashes tell apart series whose lines coincide.
      color: { field: 'series', type: 'nominal', title: null, sort: c.series.map((s) => s.name), legend: { labelLimit: 400 } },
      strokeDash: { field: 'series', type: 'nominal', sort: c.series.map((s) => s.name), title: null },
    },
  };
  return render(spec);
}

/** Grouped bars: one group per category, one bar per series (e.g. accuracy by difficulty, base vs adapter). */
export async function barChart(c: { title: string; y: string; bars: { category: string; series: string; value: number }[]; width?: number; height?: number; domain?: [number, number] }): Promise<string> {
  return render({
    title: c.title, width: c.width ?? 480, height: c.height ?? 300, data: { values: c.bars },
    mark: 'bar',
    encoding: {
      x: { field: 'category', type: 'nominal', title: null, sort: null },
      xOffset: { field: 'series', sort: null },
      y: { field: 'value', type: 'quantitative', title: c.y, ...(c.domain ? { scale: { domain: c.domain } } : {}) },
      color: { field: 'series', type: 'nominal', title: null, sort: null, legend: { labelLimit: 400 } },
    },
  });
}

async function render(spec: vl.TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  try { return await view.toSVG(); } finally { view.finalize(); }
}

/** Write an SVG (creating the folder), atomically. */
export function writeSvg(file: string, svg: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  atomicWrite(file, (fd) => writeAll(fd, Buffer.from(svg)));
}
