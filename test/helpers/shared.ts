import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** A path inside ../shared (beside the repo root); fails with a clear message when it is missing. */
export function sharedPath(rel: string): string {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../shared');
  const p = path.join(root, rel);
  if (!fs.existsSync(p)) throw new Error(`test data missing: ${p} (the shared folder must sit beside the repo at ../shared)`);
  return p;
}
