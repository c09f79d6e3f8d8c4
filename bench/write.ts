/** A bench's result files: <dir>/<stem>.json and .md (the folder made as needed; a stem from freshStem), said on stderr; returns <dir>/<stem>. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { atomicWrite, makeDir, writeAll } from '../src/io/safetensors.ts';

/**
 * `stem`, or else `stem-2`, `stem-3`, …: the first with no .json in `dir`, so a second run on the same day keeps the
 * first run's files (a committed result is never overwritten by accident).
 */
export function freshStem(dir: string, stem: string): string {
  let k = 1;
  while (fs.existsSync(path.join(dir, `${k === 1 ? stem : `${stem}-${k}`}.json`))) k++;
  return k === 1 ? stem : `${stem}-${k}`;
}

export function writeResults(dir: string, stem: string, result: unknown, markdown: string, indent = 1): string {
  makeDir(dir);
  const base = path.join(dir, stem);
  // Atomically: a run stopped while writing leaves the earlier files or none, never half a table.
  for (const [file, text] of [[`${base}.json`, JSON.stringify(result, null, indent) + '\n'], [`${base}.md`, markdown]]) atomicWrite(file, (fd) => writeAll(fd, Buffer.from(text)));
  console.error(`wrote ${base}.json and .md`);
  return base;
}

/** bench/results: where a run's files go unless --results-dir says otherwise. */
export const RESULTS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results');

/**
 * A run's results: its Markdown printed with --no-write (`resultsDir` null), else its files written as `stem` (or
 * `stem`-2, …) in `resultsDir` (default bench/results). Returns <dir>/<stem> as written, or undefined.
 */
export function publish(resultsDir: string | null | undefined, stem: string, result: unknown, md: string): string | undefined {
  if (resultsDir === null) { console.log(md); return undefined; }
  const dir = resultsDir ?? RESULTS_DIR;
  return writeResults(dir, freshStem(dir, stem), result, md);
}

/** The median (of an even count, the mean of the two middle values); NaN for none. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return !s.length ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The kinds of number a bench flag takes: counts (integers ≥ 1, or ≥ 0 where 0 skips a part), any integer, a non-negative number, a fraction in [0, 1]. */
const NUMBER_KINDS = {
  count: { ok: (n: number) => Number.isInteger(n) && n >= 1, want: 'an integer ≥ 1' },
  count0: { ok: (n: number) => Number.isInteger(n) && n >= 0, want: 'an integer ≥ 0' },
  int: { ok: (n: number) => Number.isSafeInteger(n), want: 'an integer' },
  number0: { ok: (n: number) => n >= 0, want: 'a number ≥ 0' },
  fraction: { ok: (n: number) => n >= 0 && n <= 1, want: 'a number from 0 to 1' },
} as const;
type FlagKind = 'string' | 'boolean' | keyof typeof NUMBER_KINDS;

/**
 * A bench script's own flags (`node --import tsx bench/<name>.ts ...`), parsed strictly: --help prints them, and a
 * flag the script does not know, or a number that is not of its flag's kind (a count of 0 or 1.5, a negative
 * temperature), stops it before any work (and before any result file is written) instead of being ignored.
 */
export function scriptArgs(script: string, spec: Record<string, FlagKind>): {
  str(name: string): string | undefined; has(name: string): boolean; num(name: string): number | undefined; nums(name: string): number[] | undefined;
  /** --results-dir, or null with --no-write (both given are refused: the folder was ignored unsaid). */
  resultsDir(): string | null | undefined;
} {
  const options = Object.fromEntries(Object.entries({ ...spec, help: 'boolean' as const }).map(([k, kind]) => [k, { type: kind === 'boolean' ? 'boolean' as const : 'string' as const }]));
  const usage = `usage: node --import tsx ${script} ${Object.entries(spec).map(([k, t]) => `[--${k}${t === 'boolean' ? '' : ` <${t === 'string' ? 'value' : NUMBER_KINDS[t].want}>`}]`).join(' ')}`;
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: process.argv.slice(2), options, strict: true, allowPositionals: false }).values as typeof values;
  } catch (e) {
    console.error(`${script}: ${(e as Error).message}\n${usage}`);
    process.exit(2);
  }
  if (values.help) { console.log(usage); process.exit(0); }
  // A refusal of the bench's own ("bench …: …") is one line, as from `npm run bench`; anything else keeps its stack.
  process.on('uncaughtException', (e) => {
    console.error(e instanceof Error && /^bench\b/.test(e.message) ? e.message : e);
    process.exit(1);
  });
  const number = (name: string, v: string) => {
    const kind = spec[name], n = Number(v);
    if (kind === 'string' || kind === 'boolean') throw new Error(`${script}: --${name} is declared ${kind}, not a number`); // a slip in the script
    if (v.trim() === '' || !Number.isFinite(n) || !NUMBER_KINDS[kind].ok(n)) { console.error(`${script}: --${name} must be ${NUMBER_KINDS[kind].want}, got "${v}"\n${usage}`); process.exit(2); }
    return n;
  };
  const value = (name: string) => {
    if (!Object.hasOwn(spec, name)) throw new Error(`${script}: scriptArgs has no flag --${name}`); // a typo in the script
    return values[name];
  };
  const str = (name: string) => value(name) as string | undefined, has = (name: string) => value(name) === true;
  return {
    str, has,
    resultsDir: () => {
      if (has('no-write') && str('results-dir') !== undefined) { console.error(`${script}: --no-write and --results-dir contradict each other: give one\n${usage}`); process.exit(2); }
      return has('no-write') ? null : str('results-dir');
    },
    num: (name) => (str(name) === undefined ? undefined : number(name, str(name)!)),
    nums: (name) => str(name)?.split(',').map((v) => number(name, v)),
  };
}

/** The machine as a result records it: CPU, cores, and the 1-minute load average when the run started (other work on these VMs slows runs). */
export function machineNow(): { cpu: string; cores: number; loadavg_start: number } {
  return { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.availableParallelism(), loadavg_start: Math.round(100 * os.loadavg()[0]) / 100 };
}
/** The machine in a result's Markdown: "CPU, N cores, load average L at the start". */
export const machineText = (m: ReturnType<typeof machineNow>): string => `${m.cpu}, ${m.cores} cores, load average ${m.loadavg_start} at the start`;
