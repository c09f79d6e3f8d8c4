/** Eval reports: JSON, a Markdown table and SVG plots beside it. */
import fs from 'node:fs';
import path from 'node:path';
import { atomicWrite, holdLock, makeDir, writeAll } from '../io/safetensors.ts';
import { barChart, writeSvg } from './plot.ts';
import { hubRepo } from '../io/hub.ts';
import type { CaseResult, EvalReport, Summary } from './harness.ts';

const TABLE_HEAD = ['| run | category | n | accuracy [95 % CI] | reasoned | cut off | mean tokens | mean thinking | TTFT p50/p90 ms | latency p50/p90 ms | tok/s |', '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|'];
/** The table's heads before the "reasoned" and "cut off" columns (reports written before them, which a rerun may replace). */
const OLD_HEADS = [
  ['| run | category | n | accuracy [95 % CI] | cut off | mean tokens | mean thinking | TTFT p50/p90 ms | latency p50/p90 ms | tok/s |', '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|'],
  ['| run | category | n | accuracy | cut off | mean tokens | mean thinking | TTFT p50/p90 ms | latency p50/p90 ms | tok/s |', '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|'],
  ['| run | category | n | accuracy | mean tokens | mean thinking | TTFT p50/p90 ms | latency p50/p90 ms | tok/s |', '|---|---|---:|---:|---:|---:|---:|---:|---:|'],
];
const PLOT_TITLE = 'Accuracy by category';

/** The 95 % Wilson score interval of an accuracy over n questions, in percent: "[5–70]" for 1 of 4 (a small sample says little). */
export function wilson(accuracy: number, n: number): string {
  if (!n) return '';
  const z = 1.96, d = 1 + (z * z) / n, mid = (accuracy + (z * z) / (2 * n)) / d;
  const half = (z * Math.sqrt((accuracy * (1 - accuracy)) / n + (z * z) / (4 * n * n))) / d;
  return ` [${Math.max(0, 100 * (mid - half)).toFixed(0)}–${Math.min(100, 100 * (mid + half)).toFixed(0)}]`;
}

export function markdownTable(runs: { name: string; report: EvalReport }[]): string {
  const rows = [...TABLE_HEAD];
  for (const { name, report } of runs) {
    for (const [cat, s] of Object.entries(report.summary) as [string, Summary][]) {
      rows.push(`| ${name} | ${cat} | ${s.n} | ${(100 * s.accuracy).toFixed(1)} %${wilson(s.accuracy, s.n)} | ${s.reasoned === undefined ? '–' : `${(100 * s.reasoned).toFixed(0)} %`} | ${s.cut ?? '–'} | ${s.meanTokens.toFixed(1)} | ${s.meanThinkingTokens.toFixed(1)} | ${s.ttftP50.toFixed(1)} / ${s.ttftP90.toFixed(1)} | ${s.latencyP50.toFixed(0)} / ${s.latencyP90.toFixed(0)} | ${s.tokensPerSec.toFixed(0)} |`);
    }
  }
  return rows.join('\n') + '\n';
}

/**
 * The files of a report whose JSON is `out`: `out` itself, and beside it the Markdown table and the accuracy plot,
 * named after `out` without its .json extension (results.json → results.md, results-accuracy.svg), and while the
 * evaluation runs its journal of finished answers (results.partial.jsonl).
 */
export function reportFiles(out: string): { json: string; md: string; svg: string; journal: string } {
  const base = out.replace(/\.json$/i, '');
  return { json: out, md: `${base}.md`, svg: `${base}-accuracy.svg`, journal: `${base}.partial.jsonl` };
}

/** The journal's first line names it, and the evaluation it belongs to. */
const JOURNAL = 'edgereason eval journal';

/** An interrupted evaluation's journal, as readJournal reads it. */
export interface Journal {
  /** What was evaluated (eval compares a rerun with it), the edgereason version that answered, and fingerprints of the weights and probes used. */
  evaluation: Record<string, unknown>; version?: string; weights?: Record<string, string>;
  /** Each run's finished answers, in case order, and how many in all. */
  done: Map<string, CaseResult[]>; answers: number;
}

/**
 * An interrupted evaluation's journal; undefined when `file` is not one (a user's own file). A last line cut short by
 * a kill is dropped; a bad line before it is an error naming it.
 */
export function readJournal(file: string): Journal | undefined {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  let head: { journal?: unknown; version?: unknown; evaluation?: Record<string, unknown>; weights?: Record<string, string> };
  try { head = JSON.parse(lines[0]); } catch { return undefined; }
  if (head?.journal !== JOURNAL || !head.evaluation || typeof head.evaluation !== 'object') return undefined;
  const done = new Map<string, CaseResult[]>();
  let last = lines.length - 1, answers = 0;
  while (last > 0 && !lines[last].trim()) last--;
  for (let i = 1; i <= last; i++) {
    let entry: { run?: unknown; case?: CaseResult };
    try { entry = JSON.parse(lines[i]); } catch { if (i === last) break; entry = {}; }
    if (typeof entry.run !== 'string' || typeof entry.case?.id !== 'string') throw new Error(`${file}:${i + 1}: not an answer of the journal (${lines[i].slice(0, 80)}); delete the file to start the evaluation afresh`);
    const run = done.get(entry.run);
    if (run) run.push(entry.case);
    else done.set(entry.run, [entry.case]);
    answers++;
  }
  return { evaluation: head.evaluation, ...(typeof head.version === 'string' ? { version: head.version } : {}), ...(head.weights ? { weights: head.weights } : {}), done, answers };
}

/** Writes `file` as the journal of `j` holding its answers (atomically: a resumed run drops a line a kill cut short); returns its appender. */
export function startJournal(file: string, j: Pick<Journal, 'evaluation' | 'version' | 'weights'> & { done?: Map<string, CaseResult[]> }): (run: string, results: CaseResult[]) => void {
  const line = (run: string, r: CaseResult) => JSON.stringify({ run, case: r }) + '\n';
  const text = JSON.stringify({ journal: JOURNAL, version: j.version, evaluation: j.evaluation, weights: j.weights }) + '\n' + [...j.done ?? []].flatMap(([run, rs]) => rs.map((r) => line(run, r))).join('');
  makeDir(path.dirname(path.resolve(file))); // --out may name a folder still to be made
  atomicWrite(file, (fd) => writeAll(fd, Buffer.from(text)));
  return (run, results) => {
    const fd = fs.openSync(file, 'a');
    try { writeAll(fd, Buffer.from(results.map((r) => line(run, r)).join(''))); fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
  };
}

/** The runs of the eval report in `file` (one run's alone, as eval wrote it before, as one); undefined when it holds none. */
export function readReport(file: string): EvalReport[] | undefined {
  const one = (r: unknown) => !!r && typeof r === 'object' && 'options' in r && 'summary' in r && Array.isArray((r as { cases?: unknown }).cases);
  try {
    const j: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (one(j)) return [j as EvalReport];
    return !!j && typeof j === 'object' && Object.keys(j).length > 0 && Object.values(j).every(one) ? Object.values(j) as EvalReport[] : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `file` holds an eval report: runs by name, as writeReport writes it (or one run's alone, as it wrote before). */
export const isReport = (file: string): boolean => readReport(file) !== undefined;

/**
 * Whether `file`, beside a report, is one writeReport wrote: a Markdown file holding only the table, or the accuracy
 * plot. A rerun replaces those with the report, never a file of the user's.
 */
export function isReportSibling(file: string): boolean {
  if (file.endsWith('.md')) {
    const lines = fs.readFileSync(file, 'utf8').split(/\r?\n/); // CRLF too: a report checked out on Windows
    return [TABLE_HEAD, ...OLD_HEADS].some((head) => {
      const row = new RegExp(`^\\|( [^|\\n]* \\|){${head[1].split('|').length - 2}}$`);
      return lines.at(-1) === '' && lines[0] === head[0] && lines[1] === head[1] && lines.slice(2, -1).every((l) => row.test(l));
    });
  }
  const text = fs.readFileSync(file, 'utf8');
  return file.endsWith('.svg') && text.startsWith('<svg') && text.includes(`>${PLOT_TITLE}</text>`);
}

/** Writes the JSON report to `out` exactly ({ [run name]: EvalReport }), the .md table and -accuracy.svg plot beside it (reportFiles). */
export async function writeReport(out: string, runs: { name: string; report: EvalReport }[]): Promise<void> {
  makeDir(path.dirname(path.resolve(out)));
  const files = reportFiles(out);
  const write = (f: string, text: string) => atomicWrite(f, (fd) => writeAll(fd, Buffer.from(text)));
  const bars = runs.flatMap(({ name, report }) => Object.entries(report.summary).map(([category, s]) => ({ category, series: name, value: 100 * s.accuracy })));
  // What was evaluated, so the plot reads on its own: the task, the model and how many questions.
  const first = runs[0]?.report, o = first?.options ?? {};
  const subtitle = first ? [`${String(o.task ?? '')}${o.split ? ` (${String(o.split)} split)` : ''}`, o.model && (hubRepo(String(o.model)) ?? String(o.model)), `${first.cases.length} question${first.cases.length === 1 ? '' : 's'}`].filter(Boolean).join(' · ') : undefined;
  const svg = await barChart({ title: PLOT_TITLE, ...(subtitle ? { subtitle } : {}), y: 'accuracy (%)', bars, domain: [0, 100] });
  // The three files in one synchronous step: a Ctrl-C (handled, as eval handles it) waits for all of them, so an
  // interrupted rerun never leaves a new table beside an old plot.
  // One shape whatever was run: each run's report under its name ("base", "base + reasoning adapter", …).
  write(files.json, JSON.stringify(Object.fromEntries(runs.map((r) => [r.name, r.report])), null, 1) + '\n');
  write(files.md, markdownTable(runs));
  writeSvg(files.svg, svg);
}

/**
 * Holds `file` (the journal) for this process: a second eval on the same --out is refused while the first runs (their
 * writes would interleave). A lock whose process has ended (killed) is taken over. Returns its release.
 */
export const lockJournal = (file: string): (() => void) =>
  holdLock(`${file}.lock`, (pid) => `--out: another eval (process ${pid}) is writing ${file}; wait for it to finish, or choose another --out`);
