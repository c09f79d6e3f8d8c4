/**
 * Safetensors reader/writer (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
 * length, a JSON header `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?}`, then the
 * raw little-endian tensor bytes. Tensors are read lazily by file offset, so opening is cheap.
 * Also home of the fp16/bf16 <-> fp32 conversions shared by the other loaders.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import nodePath from 'node:path';
import { shown } from '../show.ts';
import type { WeightSource } from './weights.ts';

// ---------------------------------------------------------------------------------------------
// Half-precision conversions (round-to-nearest-even, like numpy / ggml / torch).

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);

/** fp32 -> IEEE fp16 bits, round-to-nearest-even, with subnormals, overflow to inf and NaN kept. */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0], sign = (u >>> 16) & 0x8000, exp = (u >>> 23) & 0xff, mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 112; // re-biased exponent (127 -> 15)
  if (e >= 0x1f) return sign | 0x7c00;
  if (e > 0) {
    const h = sign | (e << 10) | (mant >>> 13), rem = mant & 0x1fff;
    // A carry out of the mantissa correctly bumps the exponent (up to inf).
    return rem > 0x1000 || (rem === 0x1000 && (h & 1)) ? h + 1 : h;
  }
  // Subnormal half: value / 2^-24 = (mant | implicit 1) >> (14 - e).
  const shift = 14 - e;
  if (shift > 24) return sign;
  const m = mant | 0x800000, hm = m >>> shift, rem = m & ((1 << shift) - 1), half = 1 << (shift - 1);
  return sign | (rem > half || (rem === half && (hm & 1)) ? hm + 1 : hm);
}

let f16Table: Float32Array | undefined; // all 65536 halves decoded once: decoding is then a lookup
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  f16Table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1, e = (h >>> 10) & 0x1f, m = h & 0x3ff;
    f16Table[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1024 + m) * 2 ** (e - 25);
  }
  return f16Table;
}
export function f16BitsToF32(h: number): number { return halfTable()[h & 0xffff]; }

/** fp32 -> bf16 bits, round-to-nearest-even (NaN stays a quiet NaN), as torch and ggml do. */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40;
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}
export function bf16BitsToF32(h: number): number { u32[0] = (h & 0xffff) << 16; return f32[0]; }

export function f32ToF16Array(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f32ToF16Bits(x[i]);
  return out;
}
export function f16ToF32Array(h: Uint16Array): Float32Array {
  const t = halfTable(), out = new Float32Array(h.length);
  for (let i = 0; i < h.length; i++) out[i] = t[h[i]];
  return out;
}
export function f32ToBf16Array(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f32ToBf16Bits(x[i]);
  return out;
}
export function bf16ToF32Array(h: Uint16Array): Float32Array {
  const out = new Float32Array(h.length), bits = new Uint32Array(out.buffer);
  for (let i = 0; i < h.length; i++) bits[i] = h[i] << 16;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Shared file helpers (also used by the GGUF loader).

/** Read exactly `into.length` bytes at `pos` (readSync may return short counts on large reads). */
export function readFully(fd: number, into: Uint8Array, pos: number, file: string): void {
  for (let done = 0; done < into.length;) {
    const n = fs.readSync(fd, into, done, Math.min(into.length - done, 1 << 30), pos + done);
    if (n === 0) throw new Error(`${file}: unexpected end of file at byte ${pos + done}`);
    done += n;
  }
}

export function readAt(file: string, pos: number, bytes: Uint8Array): void {
  const fd = fs.openSync(file, 'r');
  try { readFully(fd, bytes, pos, file); } finally { fs.closeSync(fd); }
}

/** The bytes of the files under `dir`, its subfolders' too. */
export function dirBytes(dir: string): number {
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).reduce((n, e) => n + (e.isFile() ? fs.statSync(nodePath.join(e.parentPath ?? e.path, e.name)).size : 0), 0);
}

/**
 * A path with its links resolved, spelt as the file system spells it: Node's JS realpath keeps the case it is given,
 * so on a case-insensitive disk (Windows, macOS) C:\Models\Base and c:\models\base would be two folders. The JS one where
 * the native one fails (some Windows RAM disks).
 */
export function realPath(p: string): string {
  try { return fs.realpathSync.native(p); } catch { return fs.realpathSync(p); }
}

/** Holds the thread for `ms` milliseconds (a synchronous pause, where a caller cannot await). */
const pause = (ms: number): void => { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms); };

/**
 * fs.renameSync, retried on Windows for up to ≈ 2 s while another program holds the file (an antivirus scanner or the
 * search indexer opens a file just written: EPERM, EACCES or EBUSY), as npm's graceful-fs does (for longer: it waits
 * asynchronously, where this holds the thread, and EPERM is also Windows' answer that will not change).
 */
export function rename(from: string, to: string): void {
  for (let i = 0; ; i++) {
    try { return fs.renameSync(from, to); } catch (e) {
      if (process.platform !== 'win32' || i >= 8 || !['EPERM', 'EACCES', 'EBUSY'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
      pause(50 * (i + 1));
    }
  }
}

/** Removes a temporary file or folder, retrying where it is briefly held (Windows); one that stays is left, never an error in place of the result. */
export function removeTemp(p: string): void {
  try { fs.rmSync(p, { recursive: true, force: true, maxRetries: 5 }); } catch { /* left behind: removeDeadTemps / the next load's cleanup finds it */ }
}

/**
 * Why the folder `dir` takes no new files, or undefined when it does: its permissions (which Windows never reports
 * for a folder: W_OK is always granted there), then a folder made and removed in it (/proc and /sys refuse root as well).
 */
export function cannotWriteIn(dir: string): string | undefined {
  try { fs.accessSync(dir, fs.constants.W_OK); } catch { return 'is not writable'; }
  try { fs.rmdirSync(fs.mkdtempSync(nodePath.join(dir, '.edgereason-'))); } catch (e) { return `takes no new files or folders (${(e as NodeJS.ErrnoException).code})`; }
  return undefined;
}

/**
 * `mkdir -p` that always ends: the missing folders are made one by one from the nearest existing one. (Node's
 * recursive mkdirSync loops for ever where mkdir says ENOENT under a parent that exists, as anywhere in /proc.)
 */
export function makeDir(dir: string): void {
  const missing: string[] = [];
  for (let d = nodePath.resolve(dir); !fs.existsSync(d); d = nodePath.dirname(d)) {
    missing.unshift(d);
    if (nodePath.dirname(d) === d) break;
  }
  for (const d of missing) {
    try { fs.mkdirSync(d); } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && fs.statSync(d, { throwIfNoEntry: false })?.isDirectory()) continue; // made meanwhile
      throw new Error(`cannot create the folder ${d}${code === 'ENOENT' ? `: ${nodePath.dirname(d)} takes no new folders` : ''} (${(e as Error).message})`, { cause: e });
    }
  }
  if (!missing.length && !fs.statSync(nodePath.resolve(dir)).isDirectory()) throw new Error(`cannot create the folder ${nodePath.resolve(dir)}: a file of that name exists`);
}

/** JSON (with a final newline) written atomically; creates the folder. */
export function writeJson(file: string, value: unknown, indent = 2): void {
  makeDir(nodePath.dirname(nodePath.resolve(file)));
  atomicWrite(file, (fd) => writeAll(fd, Buffer.from(JSON.stringify(value, null, indent) + '\n')));
}

/**
 * Write via `path.tmp-<pid>` and rename, so readers never see a half-written model file. When the write or the
 * rename fails (disk full, `path` is a folder, ...) the temp file is deleted and `path` is left as it was.
 */
export function atomicWrite(path: string, write: (fd: number) => void): void {
  stagedWrite(path, write).commit();
}

/**
 * The first half of atomicWrite: the bytes written and synced under the temporary name, then `commit` renames them
 * into place (or `abort` drops them), so several large files can be finished before any of them replaces its old one.
 */
export function stagedWrite(path: string, write: (fd: number) => void): { commit(): void; commitNew(): void; abort(): void } {
  const tmp = `${path}.tmp-${process.pid}`;
  let fd: number;
  try { fd = fs.openSync(tmp, 'w'); } catch (e) { throw writeError(e, path); }
  let open = true;
  const abort = () => fs.rmSync(tmp, { force: true });
  try {
    write(fd);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    open = false;
  } catch (e) {
    if (open) { try { fs.closeSync(fd); } catch { /* already failing: the first error is the one to report */ } }
    abort();
    throw writeError(e, path);
  }
  return {
    commit: () => { try { rename(tmp, path); } catch (e) { abort(); throw writeError(e, path); } syncFolder(path); },
    /**
     * Commits only where no file is at `path`: a hard link, which a file that appeared meanwhile refuses (EEXIST). A disk
     * without hard links (FAT32, exFAT: an SD card; Windows says EISDIR) gets a rename where no file is yet: there a
     * file made in the instant between the look and the rename would be replaced.
     */
    commitNew: () => {
      try {
        fs.linkSync(tmp, path);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EEXIST' || !['EPERM', 'EISDIR', 'ENOTSUP', 'ENOSYS', 'EXDEV', 'EOPNOTSUPP'].includes(code ?? '') || fs.existsSync(path)) throw writeError(e, path);
        try { rename(tmp, path); } catch (r) { throw writeError(r, path); }
      } finally { abort(); }
      syncFolder(path);
    },
    abort,
  };
}

/**
 * Syncs the folder of `file`, whose entry a rename or link changed: after a power cut the file is there under its new
 * name, not the old one back. (Windows cannot open a folder to sync it; a system that refuses it is left as it is.)
 */
function syncFolder(file: string): void {
  if (process.platform === 'win32') return;
  try {
    const fd = fs.openSync(nodePath.dirname(nodePath.resolve(file)), 'r');
    try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
  } catch { /* the file is written and in place either way */ }
}

/** A system error met writing `file`, said with the file's name (Node's says only "ENOSPC: no space left on device, write"); its code kept. */
function writeError(e: unknown, file: string): unknown {
  const err = e as NodeJS.ErrnoException | undefined;
  if (!err?.code || typeof err.message !== 'string') return e;
  return Object.assign(new Error(`cannot write ${file}: ${err.message}`, { cause: e }), { code: err.code });
}

/** Commits staged writes in order; when one fails, it and the rest are dropped, so no temporary file stays behind. */
export function commitAll(staged: readonly { commit(): void; abort(): void }[]): void {
  let committed = 0;
  try {
    for (; committed < staged.length; committed++) staged[committed].commit();
  } catch (e) {
    for (const s of staged.slice(committed)) s.abort();
    throw e;
  }
}

/** Temp files of atomicWrite's (`<file>.tmp-<pid>`) that a process killed mid-write left in `dir`, for the files `ours` names. */
export function removeDeadTemps(dir: string, ours: (file: string) => boolean): void {
  if (!fs.existsSync(dir)) return;
  for (const name of fs.readdirSync(dir)) {
    const m = /^(.*)\.tmp-(\d+)$/.exec(name);
    if (m && ours(m[1]) && !processAlive(Number(m[2]))) fs.rmSync(nodePath.join(dir, name), { force: true });
  }
}

/** Whether a process of that id runs (one we may not signal does). */
export function processAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

/**
 * Holds the file `lock` for this process, so that a second run writing the same output is refused while the first
 * runs (their writes would interleave): the file records this process and `holder` (what it runs), and
 * `refusal(pid, holder)` of the live one holding it is the error's message. A lock whose process has ended
 * (killed) is taken over. Returns its release, which also runs when the process exits (Ctrl-C handlers end it with
 * process.exit) and removes the folders the lock made that nothing else filled.
 */
export function holdLock(lock: string, refusal: (pid: number, holder: string) => string, holder = ''): () => void {
  const made: string[] = []; // the folders that do not exist yet, deepest first
  for (let d = nodePath.dirname(nodePath.resolve(lock)); !fs.existsSync(d) && nodePath.dirname(d) !== d; d = nodePath.dirname(d)) made.push(d);
  makeDir(nodePath.dirname(nodePath.resolve(lock)));
  for (let attempt = 0; ; attempt++) {
    try {
      fs.writeFileSync(lock, holder ? `${process.pid} ${holder}` : String(process.pid), { flag: 'wx' });
      const release = () => {
        process.off('exit', release);
        fs.rmSync(lock, { force: true });
        try { for (const d of made) fs.rmdirSync(d); } catch { /* the run wrote into it */ }
      };
      process.once('exit', release);
      return release;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
      const held = lockHolder(lock, true);
      if (held) throw new Error(refusal(held.pid, held.holder) + staleLockHint(lock));
      fs.rmSync(lock, { force: true }); // left by a process that was killed
    }
  }
}

/** What a lock's refusal ends with: a run killed with no exit handler, its process id since given to another program, holds it for ever. */
export const staleLockHint = (lock: string): string => ` (if no such run is going, delete ${lock})`;

/**
 * The live process (other than this one) that holds a holdLock file, and what it said it runs, if any. `settle`: a
 * file still empty (its holder between creating it and writing its id, or killed then) is read again for up to a
 * second first: taken for stale at once, a lock just made would be taken over, and two runs would hold it.
 */
export function lockHolder(lock: string, settle = false): { pid: number; holder: string } | undefined {
  let text: string;
  try { text = fs.readFileSync(lock, 'utf8'); } catch { return undefined; }
  for (let waited = 0; settle && !text.trim() && waited < 1000; waited += 10) {
    pause(10);
    try { text = fs.readFileSync(lock, 'utf8'); } catch { return undefined; }
  }
  const [, id, holder] = /^\s*(\S*)\s*([^]*?)\s*$/.exec(text)!, pid = Number(id);
  return Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid) ? { pid, holder } : undefined;
}

/** The sha256 (hex) of a file's bytes from `begin` to `end` (default: the whole file), read in 16 MiB pieces. */
export function sha256Of(file: string, begin = 0, end = Infinity): string {
  const h = createHash('sha256'), fd = fs.openSync(file, 'r'), buf = Buffer.allocUnsafe(1 << 24);
  try {
    for (let at = begin, n; at < end && (n = fs.readSync(fd, buf, 0, Math.min(buf.length, end - at), at)) > 0; at += n) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/**
 * The sha256 of `blocks` evenly spaced blocks of a file (its first and last among them; the whole file when it is no
 * larger): a few MiB read whatever the size, which tells a file damaged since it was written (zeroed by a crash before
 * its data reached the disk, overwritten in part) from itself where hashing gigabytes at every load would not pay.
 */
export function sampledSha256(file: string, blocks = 64, blockBytes = 1 << 16): string {
  const size = fs.statSync(file).size;
  if (size <= blocks * blockBytes) return sha256Of(file);
  const h = createHash('sha256'), fd = fs.openSync(file, 'r'), buf = Buffer.allocUnsafe(blockBytes);
  try {
    for (let i = 0; i < blocks; i++) {
      const at = Math.floor((i * (size - blockBytes)) / (blocks - 1));
      h.update(buf.subarray(0, fs.readSync(fd, buf, 0, blockBytes, at)));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

export function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length;) done += fs.writeSync(fd, bytes, done, bytes.length - done);
}

export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

// ---------------------------------------------------------------------------------------------
// Reading.

/** Bytes per element; the float dtypes plus the trivially decodable integer ones. */
const DTYPE_SIZE: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
export type SafetensorsDtype = 'F32' | 'F16' | 'BF16';

export interface SafetensorsTensorInfo {
  dtype: string;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

export class SafetensorsFile implements WeightSource {
  readonly fresh = true;
  constructor(
    readonly path: string,
    readonly tensors: ReadonlyMap<string, SafetensorsTensorInfo>,
    readonly metadata: Record<string, string>,
  ) {}
  get names(): string[] { return [...this.tensors.keys()]; }
  has(name: string): boolean { return this.tensors.has(name); }
  shape(name: string): number[] { return [...this.info(name).shape]; }
  info(name: string): SafetensorsTensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`${this.path}: tensor "${name}" is not in this file`);
    return t;
  }
  /** The tensor as float32, as weights: a float tensor must hold finite values only. */
  get(name: string): Float32Array {
    const x = this.values(name);
    return FLOAT_DTYPES.has(this.info(name).dtype) ? finiteWeights(x, `${this.path}: tensor "${name}"`) : x;
  }
  /** Rows [from, to) of a 2-D float tensor, as get() reads the whole (non-finite values named by their index in it). */
  rows(name: string, from: number, to: number): Float32Array {
    const t = this.info(name), [n, k] = t.shape, size = DTYPE_SIZE[t.dtype];
    if (t.shape.length !== 2 || !FLOAT_DTYPES.has(t.dtype) || !(Number.isInteger(from) && Number.isInteger(to) && from >= 0 && from < to && to <= n)) {
      throw new Error(`${this.path}: tensor "${name}" (${t.dtype} [${t.shape.join(', ')}]) has no rows ${from}..${to} (2-D float tensors only)`);
    }
    return finiteWeights(this.decode(t.dtype, t.begin + from * k * size, (to - from) * k), `${this.path}: tensor "${name}"`, from * k);
  }
  /** The tensor as float32, whatever it holds (a checkpoint's optimizer moments may hold NaN). */
  values(name: string): Float32Array {
    const t = this.info(name);
    return this.decode(t.dtype, t.begin, numel(t.shape));
  }
  /** `n` values of type `dtype` from byte `begin` of the file, as float32. */
  private decode(dtype: string, begin: number, n: number): Float32Array {
    if (dtype === 'F32') { // read straight into the result (little-endian host assumed, as everywhere in ML)
      const out = new Float32Array(n);
      readAt(this.path, begin, new Uint8Array(out.buffer));
      return out;
    }
    const b = new Uint8Array(n * DTYPE_SIZE[dtype]), buf = b.buffer; // fresh allocation: offset 0, so typed views are aligned
    readAt(this.path, begin, b);
    switch (dtype) {
      case 'F16': return f16ToF32Array(new Uint16Array(buf, 0, n));
      case 'BF16': return bf16ToF32Array(new Uint16Array(buf, 0, n));
      case 'F64': return Float32Array.from(new Float64Array(buf, 0, n));
      case 'I64': return Float32Array.from(new BigInt64Array(buf, 0, n), Number);
      case 'I32': return Float32Array.from(new Int32Array(buf, 0, n));
      case 'I16': return Float32Array.from(new Int16Array(buf, 0, n));
      case 'I8': return Float32Array.from(new Int8Array(buf, 0, n));
      default: return Float32Array.from(b); // U8, BOOL
    }
  }
}

/** The dtypes weights may be stored in (integers are quantized or index data, not weights). */
export const FLOAT_DTYPES: ReadonlySet<string> = new Set(['F32', 'F16', 'BF16', 'F64']);

/** The index of the first value of `x` that is NaN or ±Infinity; -1 when all are finite. */
export function firstNonFinite(x: ArrayLike<number>): number {
  for (let i = 0; i < x.length; i++) if (x[i] - x[i] !== 0) return i;
  return -1;
}

/**
 * `x`, refused where it holds a value that is not finite (a corrupt file, or one saved from a diverged run); `offset`:
 * the index of x[0] in the tensor it is part of.
 */
export function finiteWeights(x: Float32Array, what: string, offset = 0): Float32Array {
  const i = firstNonFinite(x);
  if (i >= 0) throw new Error(`${what} holds ${x[i]} at element ${offset + i}: weights must be finite (the file is corrupt, or was saved from a training run that diverged)`);
  return x;
}

/**
 * Refuses to write weights that are not finite (a run that diverged): the file the user has stays as it was.
 * `what` names the write for the message.
 */
export function checkFinite(tensors: Iterable<readonly [string, { data: ArrayLike<number> }]>, what: string): void {
  for (const [name, t] of tensors) {
    const i = firstNonFinite(t.data);
    if (i >= 0) throw new Error(`${what}: "${name}" holds ${t.data[i]} at index ${i}: the run diverged (lower the learning rate); nothing was written`);
  }
}

/** The format's limit on the header (safetensors' MAX_HEADER_SIZE), which the reference reader enforces too. */
const MAX_HEADER = 100_000_000;

/**
 * A .safetensors file's header as JSON (not validated beyond being an object), its size and where its data starts.
 * Its "__metadata__" says what a file is even where its tensors do not check out (a file cut short).
 */
export function readSafetensorsHeader(path: string): { header: Record<string, unknown>; size: number; dataStart: number } {
  const stat = fs.statSync(path), size = stat.size;
  if (!stat.isFile()) throw new Error(`${path} is ${stat.isDirectory() ? 'a folder' : 'not a regular file'}, not a safetensors file`);
  if (size < 8) throw new Error(`${path}: truncated safetensors file (${size} bytes, need at least 8 for the header length)`);
  const lenBytes = new Uint8Array(8);
  readAt(path, 0, lenBytes);
  const exactLen = Buffer.from(lenBytes).readBigUInt64LE(0), headerLen = Number(exactLen); // said exactly (a double rounds past 2^53)
  if (Buffer.from(lenBytes).toString('latin1') === 'version ') { // "version https://git-lfs.github.com/spec/v1"
    throw new Error(`${path}: a Git LFS pointer (${size} bytes), not the weights: fetch them (git lfs pull, or download the file itself)`);
  }
  if (8 + headerLen > size)
    throw new Error(`${path}: header length ${exactLen} goes beyond the end of the file (${size} bytes): file truncated or not safetensors`);
  if (headerLen > MAX_HEADER) throw new Error(`${path}: header length ${headerLen} is over the format's limit of ${MAX_HEADER} bytes: corrupt, or not safetensors`);
  const headerBytes = new Uint8Array(headerLen);
  readAt(path, 8, headerBytes);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(headerBytes));
  } catch (e) {
    throw new Error(`${path}: header is not valid JSON (${(e as Error).message})`);
  }
  if (!header || typeof header !== 'object' || Array.isArray(header)) throw new Error(`${path}: header is not a JSON object`);
  return { header, size, dataStart: 8 + headerLen };
}

/** "__metadata__" maps names to strings, as the format says (the reference reader refuses anything else); null is none. */
function checkMetadata(path: string, v: unknown): Record<string, string> {
  if (v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new Error(`${path}: "__metadata__" is ${shown(v)}; the format makes it an object of strings`);
  for (const [k, x] of Object.entries(v)) if (typeof x !== 'string') throw new Error(`${path}: "__metadata__" gives "${k}" the value ${shown(x)}; the format allows only strings there`);
  return v as Record<string, string>;
}

/** Parse and validate a .safetensors header; tensor data stays on disk until `get`. */
export function openSafetensors(path: string): SafetensorsFile {
  const { header, size, dataStart } = readSafetensorsHeader(path), dataLen = size - dataStart;
  const tensors = new Map<string, SafetensorsTensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') { metadata = checkMetadata(path, v); continue; }
    const t = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const where = `${path}: tensor "${name}"`;
    if (!t || typeof t !== 'object') throw new Error(`${where} is ${JSON.stringify(t)}, not a tensor entry ({ dtype, shape, data_offsets })`);
    if (typeof t.dtype !== 'string' || !Object.hasOwn(DTYPE_SIZE, t.dtype))
      throw new Error(`${where} has unsupported dtype ${JSON.stringify(t.dtype)} (supported: ${Object.keys(DTYPE_SIZE).join(', ')})`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0))
      throw new Error(`${where} has invalid shape ${JSON.stringify(t.shape)}`);
    const off = t.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isInteger(o) && o >= 0) || off[0] > off[1])
      throw new Error(`${where} has invalid data_offsets ${JSON.stringify(off)}`);
    const expected = numel(t.shape) * DTYPE_SIZE[t.dtype];
    if (off[1] - off[0] !== expected)
      throw new Error(`${where}: data_offsets ${JSON.stringify(off)} span ${off[1] - off[0]} bytes but shape ${JSON.stringify(t.shape)} × ${t.dtype} needs ${expected}`);
    if (off[1] > dataLen)
      throw new Error(`${where}: data_offsets ${JSON.stringify(off)} point outside the file (data section has ${dataLen} bytes): file truncated?`);
    tensors.set(name, { dtype: t.dtype, shape: t.shape, begin: dataStart + off[0], end: dataStart + off[1] });
  }
  // As the format requires: no two tensors share bytes (a header that points two tensors at one block is corrupt).
  const spans = [...tensors].filter(([, t]) => t.end > t.begin).sort((a, b) => a[1].begin - b[1].begin);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i][1].begin < spans[i - 1][1].end) throw new Error(`${path}: tensors "${spans[i - 1][0]}" and "${spans[i][0]}" overlap in the data section (corrupt header)`);
  }
  // ... and the tensors fill the data section, with no hole and nothing after: a header length a few bytes off
  // still parses (the header is padded with spaces) but would read every tensor shifted.
  let at = dataStart;
  for (const [name, t] of spans) {
    if (t.begin !== at) throw new Error(`${path}: ${t.begin - at} bytes of the data section before tensor "${name}" belong to no tensor (corrupt header, or a wrong header length)`);
    at = t.end;
  }
  if (at !== size) throw new Error(`${path}: the last ${size - at} bytes of the file belong to no tensor (corrupt header, a wrong header length, or data appended)`);
  return new SafetensorsFile(path, tensors, metadata);
}

// ---------------------------------------------------------------------------------------------
// Writing.

export type TensorMap = Record<string, { shape: number[]; data: Float32Array }> | Map<string, { shape: number[]; data: Float32Array }>;

/**
 * Write tensors (in the given order) as one safetensors file, atomically; `onBytes` sees every byte written, in order.
 * `exclusive`: only where no file is at `path` by the time it is complete.
 */
/** The smallest magnitude float16 rounds to infinity (65504, its largest, plus half a step). */
const F16_OVERFLOW = 65520;

export function writeSafetensors(
  path: string,
  tensors: TensorMap,
  opts: { dtype?: SafetensorsDtype; metadata?: Record<string, string>; onBytes?: (bytes: Uint8Array) => void; exclusive?: boolean } = {},
): void {
  const dtype = opts.dtype ?? 'F32', size = DTYPE_SIZE[dtype];
  const entries = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (opts.metadata) header.__metadata__ = opts.metadata;
  let offset = 0;
  for (const [name, t] of entries) {
    if (t.data.length !== numel(t.shape))
      throw new Error(`${path}: tensor "${name}" has ${t.data.length} values but shape ${JSON.stringify(t.shape)}`);
    // Past float16's range a value would be written as ±Infinity, and the file refused as corrupt when it is read.
    const big = dtype === 'F16' ? t.data.findIndex((x) => Math.abs(x) >= F16_OVERFLOW) : -1;
    if (big >= 0) throw new Error(`${path}: tensor "${name}" holds ${t.data[big]} at element ${big}, beyond float16's range (±65504): write it as bf16 or f32`);
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length * size] };
    offset += t.data.length * size;
  }
  // Like the reference implementation, pad the JSON with spaces so the data starts 8-byte aligned.
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const head = Buffer.alloc(8 + Buffer.byteLength(json));
  head.writeBigUInt64LE(BigInt(head.length - 8), 0);
  head.write(json, 8);
  const staged = stagedWrite(path, (fd) => {
    const write = (bytes: Uint8Array) => { writeAll(fd, bytes); opts.onBytes?.(bytes); };
    write(head);
    for (const [, t] of entries) {
      const enc = dtype === 'F32' ? t.data : dtype === 'F16' ? f32ToF16Array(t.data) : f32ToBf16Array(t.data);
      write(new Uint8Array(enc.buffer, enc.byteOffset, enc.byteLength));
    }
  });
  if (opts.exclusive) staged.commitNew(); else staged.commit();
}
