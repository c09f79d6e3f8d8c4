/** A bench's result files: <dir>/<stem>.json and .md (the folder made as needed); returns <dir>/<stem>. */
import fs from 'node:fs';
import path from 'node:path';

export function writeResults(dir: string, stem: string, result: unknown, markdown: string, indent = 1): string {
  fs.mkdirSync(dir, { recursive: true });
  const base = path.join(dir, stem);
  fs.writeFileSync(`${base}.json`, JSON.stringify(result, null, indent) + '\n');
  fs.writeFileSync(`${base}.md`, markdown);
  return base;
}
