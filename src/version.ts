import fs from 'node:fs';

/** The package's version, from package.json at the package root (one level above src/ and dist/). */
export function version(): string {
  return JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version;
}
