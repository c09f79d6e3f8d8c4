/** JSONL files: one JSON value per non-blank line (a leading byte-order mark and CRLF line ends are fine). */
import fs from 'node:fs';

/**
 * The non-blank lines of `file` with their 1-based line numbers, parsed (the first `limit` of them, when given: lines
 * past it are not read); errors read `file:line: ...`.
 */
export function readJsonlLines(file: string, what = 'dataset', limit = Infinity): { line: number; value: unknown; raw: string }[] {
  let text: string;
  try { text = fs.readFileSync(file, 'utf8'); } catch (e) { throw new Error(`${file}: cannot read ${what} (${(e as Error).message})`); }
  const out: { line: number; value: unknown; raw: string }[] = [], lines = text.replace(/^\uFEFF/, '').split('\n');
  for (let i = 0; i < lines.length && out.length < limit; i++) {
    const raw = lines[i];
    if (!raw.trim()) continue;
    try { out.push({ line: i + 1, value: JSON.parse(raw), raw }); } catch (e) { throw new Error(`${file}:${i + 1}: invalid JSON (${(e as Error).message})`); }
  }
  return out;
}
