/** JSONL files: one JSON value per non-blank line (a leading byte-order mark and CRLF line ends are fine). */
import fs from 'node:fs';

/**
 * The non-blank lines of `file` with their 1-based line numbers, parsed (the first `limit` of them, when given: lines
 * past it are not read); errors read `file:line: ...`.
 */
export function readJsonlLines(file: string, what = 'dataset', limit = Infinity): { line: number; value: unknown; raw: string }[] {
  let bytes: Buffer;
  try { bytes = fs.readFileSync(file); } catch (e) { throw new Error(`${file}: cannot read ${what} (${(e as Error).message})`); }
  if ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff)) throw new Error(`${file}: the ${what} is UTF-16 text; save it as UTF-8`);
  let text: string;
  try { text = new TextDecoder('utf-8', { fatal: true }).decode(bytes); } catch {
    const at = firstInvalidUtf8(bytes), line = bytes.subarray(0, Math.max(0, at)).toString('latin1').split('\n').length;
    throw new Error(`${file}${at < 0 ? '' : `:${line}`}: the ${what} is not UTF-8${at < 0 ? '' : ` (byte 0x${bytes[at].toString(16)} at offset ${at})`}; save it as UTF-8`);
  }
  const out: { line: number; value: unknown; raw: string }[] = [], lines = text.replace(/^\uFEFF/, '').split('\n');
  for (let i = 0; i < lines.length && out.length < limit; i++) {
    const raw = lines[i];
    if (!raw.trim()) continue;
    try { out.push({ line: i + 1, value: JSON.parse(raw), raw }); } catch (e) {
      // A JSON array or a pretty-printed object fails on its first line: say what the format is.
      const hint = /^\s*[[{]\s*$/.test(raw) || (i === 0 && /^\s*\[/.test(raw)) ? '; a JSONL file holds one JSON object per line (not a JSON array, nor pretty-printed JSON)' : '';
      throw new Error(`${file}:${i + 1}: invalid JSON (${(e as Error).message})${hint}`);
    }
  }
  return out;
}

/** Offset of the first byte that does not begin or continue a UTF-8 sequence (-1: none; an overlong form, say). */
function firstInvalidUtf8(b: Uint8Array): number {
  for (let i = 0; i < b.length;) {
    const c = b[i], n = c < 0x80 ? 0 : c >= 0xc2 && c < 0xe0 ? 1 : c >= 0xe0 && c < 0xf0 ? 2 : c >= 0xf0 && c < 0xf5 ? 3 : -1;
    if (n < 0) return i;
    for (let k = 1; k <= n; k++) if (i + k >= b.length || (b[i + k] & 0xc0) !== 0x80) return i;
    i += n + 1;
  }
  return -1;
}
