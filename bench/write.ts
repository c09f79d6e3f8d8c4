/** A bench's result files: <dir>/<stem>.json and .md (the folder made as needed; a stem from freshStem); returns <dir>/<stem>. */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { makeDir } from '../src/io/safetensors.ts';

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
  fs.writeFileSync(`${base}.json`, JSON.stringify(result, null, indent) + '\n');
  fs.writeFileSync(`${base}.md`, markdown);
  return base;
}

/**
 * A bench script's own flags (`node --import tsx bench/<name>.ts ...`), parsed strictly: --help prints them, and a
 * flag the script does not know, or a number that is not one, stops it before any work (and before any result
 * file is written) instead of being ignored.
 */
export function scriptArgs(script: string, spec: Record<string, 'string' | 'boolean'>): {
  str(name: string): string | undefined; has(name: string): boolean; num(name: string): number | undefined; nums(name: string): number[] | undefined;
} {
  const options = Object.fromEntries(Object.entries({ ...spec, help: 'boolean' as const }).map(([k, type]) => [k, { type }]));
  const usage = `usage: node --import tsx ${script} ${Object.entries(spec).map(([k, t]) => `[--${k}${t === 'string' ? ' <value>' : ''}]`).join(' ')}`;
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: process.argv.slice(2), options, strict: true, allowPositionals: false }).values as typeof values;
  } catch (e) {
    console.error(`${script}: ${(e as Error).message}\n${usage}`);
    process.exit(2);
  }
  if (values.help) { console.log(usage); process.exit(0); }
  const number = (name: string, v: string) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) { console.error(`${script}: --${name} must be a number, got "${v}"\n${usage}`); process.exit(2); }
    return n;
  };
  const value = (name: string) => {
    if (!Object.hasOwn(spec, name)) throw new Error(`${script}: scriptArgs has no flag --${name}`); // a typo in the script
    return values[name];
  };
  const str = (name: string) => value(name) as string | undefined;
  return {
    str, has: (name) => value(name) === true,
    num: (name) => (str(name) === undefined ? undefined : number(name, str(name)!)),
    nums: (name) => str(name)?.split(',').map((v) => number(name, v)),
  };
}
