/** JSON and JSONL files (JSONL: one JSON object per non-blank line; a leading byte-order mark and CRLF line ends are fine). */
import fs from 'node:fs';
import { shown } from '../show.ts';

/** A text without the byte-order mark it may begin with (Windows editors and PowerShell write one). */
export const withoutBom = (text: string): string => text.replace(/^\uFEFF/, '');

/**
 * The value a JSON file holds. Errors start with `prefix` (e.g. "adapter: ") and name the file: one that cannot be
 * read (missing, a folder) says so, apart from one that is not valid JSON (often a file cut short).
 */
export function readJsonFile(file: string, prefix = ''): unknown {
  const text = withoutBom(readTextFile(file, 'a JSON file', prefix));
  try { return JSON.parse(text); } catch (e) {
    const message = (e as Error).message;
    throw new Error(`${prefix}${file} is not valid JSON${/end of JSON input/.test(message) ? ' (cut short?)' : ''}: ${message}`);
  }
}

/** The JSON object a file holds (a config file's): readJsonFile's errors, and one naming the file for any other value. */
export function readJsonObject(file: string, prefix = ''): Record<string, unknown> {
  const v = readJsonFile(file, prefix);
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${prefix}${file}: must hold a JSON object, got ${shown(v)}`);
  return v as Record<string, unknown>;
}

/**
 * The non-blank lines of `file` with their 1-based line numbers, parsed (the first `limit` of them, when given: lines
 * past it are not read); each must hold a JSON object. Errors read `file:line: ...`.
 */
export function readJsonlLines(file: string, what = 'dataset', limit = Infinity): { line: number; value: unknown; raw: string }[] {
  let bytes: Buffer;
  // A device (/dev/zero, a terminal) would be read for ever, or wait for a keyboard.
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (st && !st.isFile() && !st.isFIFO() && !st.isDirectory()) throw new Error(`${file}: not a regular file or a pipe (a device or socket): cannot read ${what} from it`);
  try { bytes = fs.readFileSync(file); } catch (e) { throw new Error(`${file}: cannot read ${what} (${(e as Error).message})`); }
  if ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff)) throw new Error(`${file}: the ${what} is UTF-16 text; save it as UTF-8`);
  // Line by line: a file of up to 2 GiB (what one read holds; one string, a line, at most 512 MiB), and errors name their line. The decoder
  // drops a byte-order mark at the start of any line (files joined together).
  const utf8 = new TextDecoder('utf-8', { fatal: true }), out: { line: number; value: unknown; raw: string }[] = [];
  for (let start = 0, i = 0; start < bytes.length && out.length < limit; i++) {
    const nl = bytes.indexOf(0x0a, start), end = nl < 0 ? bytes.length : nl, lineBytes = bytes.subarray(start, end);
    start = end + 1;
    let raw: string;
    try { raw = utf8.decode(lineBytes); } catch (e) {
      const at = firstInvalidUtf8(lineBytes);
      if (at >= 0) throw new Error(`${file}:${i + 1}: the ${what} is not UTF-8 (byte 0x${lineBytes[at].toString(16)} at offset ${end - lineBytes.length + at}); save it as UTF-8`);
      // Valid UTF-8 that does not decode: a line past what one string holds.
      if (lineBytes.length >= 2 ** 28) throw new Error(`${file}:${i + 1}: a line of ${(lineBytes.length / 2 ** 20).toFixed(0)} MiB is more than one string holds (512 MiB): a JSONL ${what} holds one record per line`);
      throw new Error(`${file}:${i + 1}: cannot read this line of the ${what} (${(e as Error).message})`);
    }
    if (!raw.trim()) continue;
    let value: unknown;
    try { value = JSON.parse(raw); } catch (e) {
      // A JSON array or a pretty-printed object fails on its first line: say what the format is.
      const hint = /^\s*[[{]\s*$/.test(raw) || (i === 0 && /^\s*\[/.test(raw)) ? '; a JSONL file holds one JSON object per line (not a JSON array, nor pretty-printed JSON)'
        : /\r(?!$)/.test(raw) ? '; its lines end in a lone carriage return (CR): save the file with LF or CRLF line ends' : '';
      throw new Error(`${file}:${i + 1}: invalid JSON (${(e as Error).message})${hint}`);
    }
    if (!value || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${file}:${i + 1}: expected a JSON object, got ${raw.trim().slice(0, 40)}`);
    out.push({ line: i + 1, value, raw });
  }
  return out;
}

/** Offset of the first byte that does not begin or continue a UTF-8 sequence as the standard allows (-1: none). */
function firstInvalidUtf8(b: Uint8Array): number {
  for (let i = 0; i < b.length;) {
    const c = b[i], n = c < 0x80 ? 0 : c >= 0xc2 && c < 0xe0 ? 1 : c >= 0xe0 && c < 0xf0 ? 2 : c >= 0xf0 && c < 0xf5 ? 3 : -1;
    if (n < 0) return i;
    // The second byte's narrower ranges: no overlong forms (E0, F0), surrogates (ED) or code points past U+10FFFF (F4).
    const [lo, hi] = c === 0xe0 ? [0xa0, 0xbf] : c === 0xed ? [0x80, 0x9f] : c === 0xf0 ? [0x90, 0xbf] : c === 0xf4 ? [0x80, 0x8f] : [0x80, 0xbf];
    if (n > 0 && (i + 1 >= b.length || b[i + 1] < lo || b[i + 1] > hi)) return i;
    for (let k = 2; k <= n; k++) if (i + k >= b.length || (b[i + k] & 0xc0) !== 0x80) return i;
    i += n + 1;
  }
  return -1;
}

/** A text file's contents; a missing file, a folder in its place or a read error is named (`what`: "a JSON file"). */
export function readTextFile(file: string, what: string, prefix = ''): string {
  return readInputFile(file, what, prefix).toString('utf8');
}

/** What is read of a pipe (such as `<(cat router.json)`) at most. */
const MAX_PIPED = 256 * 2 ** 20;

/**
 * The bytes of a file (a model's, an adapter's, a router's ...): a regular file, or a pipe read up to 256 MiB. A
 * device is refused: a link to /dev/zero or /dev/tty among a model's files (which a cloned repository can carry)
 * would be read for ever, or wait for a keyboard.
 */
export function readInputFile(file: string, what: string, prefix = ''): Buffer {
  try {
    const st = fs.statSync(file);
    if (st.isFile() || st.isDirectory()) return fs.readFileSync(file); // a folder: EISDIR, named below
    if (!st.isFIFO()) throw new Error(`${prefix}${file} is not a regular file or a pipe (a device or socket), not ${what}`);
    const fd = fs.openSync(file, 'r'), chunks: Buffer[] = [], chunk = Buffer.alloc(2 ** 16);
    try {
      for (let total = 0, n; (n = fs.readSync(fd, chunk)) > 0;) {
        chunks.push(Buffer.from(chunk.subarray(0, n)));
        if ((total += n) > MAX_PIPED) throw new Error(`${prefix}${file} is a pipe that gives more than ${MAX_PIPED / 2 ** 20} MiB, not ${what}`);
      }
    } finally {
      fs.closeSync(fd);
    }
    return Buffer.concat(chunks);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === undefined) throw e;
    throw new Error(`${prefix}${file} ${code === 'ENOENT' ? 'not found' : code === 'EISDIR' ? `is a folder, not ${what}` : `cannot be read (${(e as Error).message})`}`);
  }
}
