/**
 * Prompt caching across requests: the KV caches of recent prompts are kept (per model session, up to a byte budget,
 * the least recently used dropped first), and a new prompt that begins with one of them — the conversation so far, a
 * shared system prompt — is prefilled only from where it differs. In a chat, each turn then encodes its new messages
 * instead of the whole conversation again.
 *
 * Only positions computed with the base weights are kept (a prompt before an activated adapter's invocation), so the
 * adapters of one session (Model.withAdapter) share them. A prefill continued on a kept cache computes the same
 * values as one from the start, up to float rounding (its attention and matrix products run in other shapes).
 *
 * The kept prompts can be saved to a file and loaded again after a restart (save / load): a long system prompt is
 * then prefilled once per deployment, not once per process.
 */
import { again } from './errors.ts';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { delegateOf, type Backend, type CacheHandle } from './backend.ts';
import { grownCapacity, kvBytes } from './kv-cache.ts';
import { shown } from '../show.ts';
import { cannotWriteIn, firstNonFinite, makeDir, openSafetensors, readSafetensorsHeader, sha256Of, writeSafetensors, type SafetensorsFile } from '../io/safetensors.ts';
import { ropeScalingWords, type ModelConfig } from '../models/config.ts';

/**
 * Default budget: MiB of kept prompt caches per model session, or room for DEFAULT_PROMPT_TOKENS positions where
 * those take more (a 7B or 8B model's keys and values take 115–262 KB per position: 256 MiB would hold one chat of
 * 1,000–2,300 tokens, and a longer one would be prefilled whole every turn).
 */
export const PROMPT_CACHE_MIB = 256, DEFAULT_PROMPT_TOKENS = 4096;
/** A kept beginning of at most this many tokens is not worth the copy: prefilled from the start (nor kept). */
export const MIN_REUSED = 16;

/**
 * `scope`: '' for prompts every request shares; another (a request's cache salt, as vLLM's cache_salt) for prompts
 * shared only by requests of that salt — a request's cached-token count would otherwise tell another user's prompt
 * apart, token by token.
 */
interface Entry { tokens: readonly number[]; cache: CacheHandle; bytes: number; users: number; dropped: boolean; scope: string }

/** The prompt cache as one scope sees it (PromptCache.within). */
export interface PromptReuse {
  take(ids: readonly number[], limit?: number): Promise<{ cache: CacheHandle; length: number } | undefined>;
  put(ids: readonly number[], cache: CacheHandle, row?: number): Promise<void>;
}

export class PromptCache {
  /** Least recently used first. */
  private entries: Entry[] = [];
  private bytes = 0;
  private cleared = false;
  private changed = 0;
  /** Bumped whenever a prompt of the shared scope is kept or dropped: unchanged, what a file saved or read holds is what is kept. */
  get changes(): number { return this.changed; }
  /** Prompts of the shared scope kept now (what save writes). */
  get sharedPrompts(): number { return this.entries.filter((e) => e.scope === '').length; }

  constructor(private readonly backend: Backend, readonly budget: number) {}

  /** Bytes kept now. */
  get size(): number { return this.bytes; }
  /** Prompts kept now. */
  get prompts(): number { return this.entries.length; }

  /**
   * A new one-row cache holding the longest kept beginning of `ids` (at most all but its last token: the prefill needs
   * one to give the prompt's logits; at most `limit`), and its length; undefined when none longer than MIN_REUSED
   * tokens is kept.
   */
  async take(ids: readonly number[], limit = Infinity, scope = ''): Promise<{ cache: CacheHandle; length: number } | undefined> {
    let best: Entry | undefined, length = 0;
    for (const e of this.entries) {
      if (e.scope !== scope) continue;
      const n = common(e.tokens, ids);
      if (n > length) [best, length] = [e, n];
    }
    length = Math.min(length, ids.length - 1, limit);
    if (!best || length <= MIN_REUSED) return undefined;
    best.users++;
    try {
      const cache = await this.backend.select(best.cache, [0], length);
      if (!best.dropped) this.touch(best);
      return { cache, length };
    } catch {
      this.drop(best); // (a closed model: the prefill's own call says so)
      return undefined;
    } finally {
      best.users--;
      if (best.dropped && !best.users) this.release(best);
    }
  }

  /** Whether a prompt of `tokens` tokens would be kept (put): longer than MIN_REUSED, and within the budget. */
  keeps(tokens: number): boolean { return tokens > MIN_REUSED && kvBytes(this.backend.config, 1, grownCapacity(64, tokens)) <= this.budget; }

  /**
   * Keeps a copy of `cache`'s row `row`, positions 0..ids.length-1 (`ids`, computed with the base weights). Best
   * effort: a copy that fails (a closed model) keeps nothing.
   */
  async put(ids: readonly number[], cache: CacheHandle, row = 0, scope = ''): Promise<void> {
    if (!this.keeps(ids.length) || this.cleared) return;
    // All of it kept already (in a longer prompt): that one is used again, nothing copied.
    const holder = this.holding(ids, scope);
    if (holder) { this.touch(holder); return; }
    const copy = await this.backend.select(cache, [row], ids.length).catch(() => undefined);
    if (copy !== undefined) this.add(ids, copy, kvBytes(this.backend.config, 1, grownCapacity(64, ids.length)), scope);
  }

  /** The prompts of one scope: take and put within it ('' the shared one). */
  within(scope: string): PromptReuse {
    return { take: (ids, limit) => this.take(ids, limit, scope), put: (ids, cache, row) => this.put(ids, cache, row, scope) };
  }

  /** A kept prompt of `scope` that holds all of `ids` (as long or longer, beginning with them). */
  private holding(ids: readonly number[], scope: string): Entry | undefined {
    return this.entries.find((e) => e.scope === scope && e.tokens.length >= ids.length && common(e.tokens, ids) === ids.length);
  }

  /** Keeps `cache` (one row holding `ids`, this cache's from now on) as the most recently used prompt. */
  private add(ids: readonly number[], cache: CacheHandle, bytes: number, scope = ''): Entry | undefined {
    if (this.cleared) { this.backend.free(cache).catch(() => {}); return undefined; }
    // All of it kept meanwhile (a longer prompt copied while this one was): that one serves, this copy goes.
    const holder = this.holding(ids, scope);
    if (holder) { this.touch(holder); this.backend.free(cache).catch(() => {}); return undefined; }
    // A kept prompt this one repeats or continues is all in this one (one kept while the copy was made too).
    for (const e of [...this.entries]) if (e.scope === scope && e.tokens.length <= ids.length && common(e.tokens, ids) === e.tokens.length) this.drop(e);
    const entry = { tokens: [...ids], cache, bytes, users: 0, dropped: false, scope };
    this.entries.push(entry);
    if (scope === '') this.changed++;
    this.bytes += bytes;
    for (const e of [...this.entries]) { if (this.bytes <= this.budget) break; this.drop(e); }
    return entry;
  }

  /**
   * Writes the kept prompts to `file` (atomically), least recently used first, for `load` after a restart. A file
   * there that is not a prompt cache, or one of another format version, is never replaced.
   */
  async save(file: string): Promise<{ prompts: number; tokens: number; bytes: number }> {
    file = throughLinks(file);
    const refusal = notOurs(file);
    if (refusal) throw new Error(refusal);
    const kept = this.entries.filter((e) => e.scope === ''); // (a salted request's prompts are its users' own: not written out)
    kept.forEach((e) => e.users++);
    try {
      const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
      try {
        tensors.set('probe', { shape: kvShape(this.backend, PROBE.length), data: await probe(this.backend) });
        for (const [i, e] of kept.entries()) tensors.set(`prompt.${i}`, { shape: kvShape(this.backend, e.tokens.length), data: (await this.backend.exportRow(e.cache, 0, e.tokens.length)).data });
      } catch (e) {
        // (A closed model's code, or a dead worker's, comes along: again() keeps it.)
        throw Object.assign(again(e), { message: `prompt cache: not saved to ${file}: ${(e as Error).message}` });
      }
      // Checked again and written with nothing awaited between: a file made there meanwhile is not replaced (nor one
      // made while it is written: a new file is committed only where none is).
      const taken = notOurs(file);
      if (taken) throw new Error(taken);
      try {
        makeDir(path.dirname(path.resolve(file)));
        // Each tensor's sha256 and the prompts' (the token ids their keys and values belong to), checked when it is
        // read: a file damaged since (a disk, an editor) is refused, not answered from.
        const prompts = JSON.stringify(kept.map((e) => e.tokens));
        const sums = { prompts: sha256(Buffer.from(prompts)), ...Object.fromEntries([...tensors].map(([name, t]) => [name, sha256(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength))])) };
        writeSafetensors(file, tensors, { metadata: { format: FORMAT, version: VERSION, prompts, sha256: JSON.stringify(sums), rope: ropeOf(this.backend.config) }, exclusive: !fs.existsSync(file) });
      } catch (e) {
        throw new Error(`prompt cache: not saved to ${file}: ${(e as Error).message.replace(/\.tmp-\d+/g, '')}`);
      }
      return { prompts: kept.length, tokens: kept.reduce((n, e) => n + e.tokens.length, 0), bytes: fs.statSync(file).size };
    } finally {
      for (const e of kept) if (--e.users === 0 && e.dropped) this.release(e);
    }
  }

  /**
   * Keeps the prompts `save` wrote to `file` (within the budget: the most recently used ones). Refused, with
   * PromptCacheMismatch, when this model computes keys and values otherwise than the one that saved them (other
   * weights, or the same ones quantised otherwise): they would answer as that model.
   */
  async load(file: string): Promise<{ prompts: number; tokens: number; of: number }> {
    // A file another process saves meanwhile (atomically) is read again, whole.
    for (let tries = 1; ; tries++) {
      try {
        return await this.loadOnce(file);
      } catch (e) {
        if (!(e instanceof Replaced) || tries === 3) throw e;
      }
    }
  }

  private async loadOnce(file: string): Promise<{ prompts: number; tokens: number; of: number }> {
    if (isEmpty(file)) return { prompts: 0, tokens: 0, of: 0 };
    const { f, prompts, stamp, sums, rope } = readHeader(file), c = this.backend.config;
    const checkSum = (name: string) => {
      if (sha256Of(file, f.info(name).begin, f.info(name).end) === sums[name]) return;
      if (fileStamp(file) !== stamp) throw new Replaced(`prompt cache: ${file} was replaced while it was read, three times (other processes saving it): nothing read; load it again`);
      throw corrupt(file, `tensor "${name}" holds other bytes than were saved (sha256)`);
    };
    checkSum('probe');
    const dims = (shape: number[]) => `${shape[0]} layers × ${shape[2]} KV heads × ${shape[4]}`;
    if (f.shape('probe').join() !== kvShape(this.backend, PROBE.length).join()) throw new PromptCacheMismatch(`prompt cache: ${file} was saved from a model of ${dims(f.shape('probe'))} keys and values per position; this one has ${dims(kvShape(this.backend, 1))}: a prompt cache serves the model that saved it`);
    // Another RoPE (a YaRN over another original context) can compute the first positions, the probe's, alike.
    if (rope !== undefined && rope !== ropeOf(c)) {
      const words = (key: string) => { try { const r = JSON.parse(key); return `RoPE base ${r.theta}, scaling ${ropeScalingWords(r.scaling ?? undefined)}`; } catch { return shown(key); } };
      throw new PromptCacheMismatch(`prompt cache: ${file} was saved from a model with ${words(rope)}; this one has ${words(ropeOf(c))}: its prompts' keys were rotated otherwise; save the prompt cache again with this model`);
    }
    const saved = f.values('probe'), bad = firstNonFinite(saved);
    if (bad >= 0) throw corrupt(file, `its probe holds ${saved[bad]} at element ${bad}`);
    const diff = relativeDifference(await probe(this.backend), saved);
    if (!(diff <= PROBE_TOLERANCE)) throw new PromptCacheMismatch(`prompt cache: ${file} was saved from another model (other weights, the same ones quantised otherwise, or another RoPE scaling): this one computes the probe's keys and values ${diff.toExponential(1)} apart (relative), so its prompts would answer as that model does; save the prompt cache again with this model`);
    const long = prompts.findIndex((ids) => ids.length > c.maxPositionEmbeddings || ids.some((t) => t >= c.vocabSize));
    if (long >= 0) throw corrupt(file, `prompt ${long} has ${prompts[long].length} tokens or ids past this model's context (${c.maxPositionEmbeddings}) or vocabulary (${c.vocabSize})`);
    // The most recently used are last: read from the last back while they fit the budget (the older would be dropped).
    const bytes = prompts.map((ids) => kvBytes(c, 1, grownCapacity(64, ids.length)));
    let first = prompts.length;
    for (let room = this.budget; first > 0 && bytes[first - 1] <= room; first--) room -= bytes[first - 1];
    const read: CacheHandle[] = []; // all or none: kept once every prompt is read
    try {
      for (let i = first; i < prompts.length; i++) {
        const name = `prompt.${i}`, ids = prompts[i];
        checkSum(name);
        read.push(await this.backend.importRow({ length: ids.length, file, offset: f.info(name).begin }).catch((e: Error) => {
          throw /^kv-cache: .* not finite$/.test(e.message) ? corrupt(file, `tensor "${name}": ${e.message.slice(10)}`) : e;
        }));
      }
      // Each prompt was read at the header's offsets: a file another process saved meanwhile would have given others.
      if (fileStamp(file) !== stamp) throw new Replaced(`prompt cache: ${file} was replaced while it was read, three times (other processes saving it): nothing read; load it again`);
    } catch (e) {
      read.forEach((h) => { this.backend.free(h).catch(() => {}); });
      throw e;
    }
    const added = read.flatMap((h, k) => this.add(prompts[first + k], h, bytes[first + k]) ?? []);
    const kept = added.filter((e) => !e.dropped);
    return { prompts: kept.length, tokens: kept.reduce((n, e) => n + e.tokens.length, 0), of: prompts.length };
  }

  /** Drops every kept prompt, and keeps no more. */
  clear(): void {
    this.cleared = true;
    for (const e of [...this.entries]) this.drop(e);
  }

  /** Marks a kept prompt the most recently used (last). */
  private touch(e: Entry): void { this.entries.push(...this.entries.splice(this.entries.indexOf(e), 1)); }

  private drop(e: Entry): void {
    if (e.dropped) return;
    e.dropped = true;
    if (e.scope === '') this.changed++;
    this.entries.splice(this.entries.indexOf(e), 1);
    this.bytes -= e.bytes;
    if (!e.users) this.release(e);
  }

  private release(e: Entry): void { this.backend.free(e.cache).catch(() => {}); }
}

/** A prompt cache file's safetensors metadata "format" and "version". */
const FORMAT = 'edgereason-prompt-cache', VERSION = '2'; // 2: the sums cover the prompts' token ids, and are required
/** A format version an earlier edgereason wrote ("1"). */
const earlierVersion = (v: unknown): boolean => typeof v === 'string' && /^[1-9]\d*$/.test(v) && Number(v) < Number(VERSION);
/** Token ids whose keys and values (positions 0..7, base weights) tell the model that computed a file's prompts. */
const PROBE = [0, 1, 2, 3, 4, 5, 6, 7];
/**
 * How far apart (relative RMS) a model may compute the probe and still read a file: the same weights give the same
 * values on the machine that saved it, and differ in rounding only on another CPU's kernels; other weights, or the
 * same ones quantised otherwise, differ by percents.
 */
export const PROBE_TOLERANCE = 1e-3;

/** A prompt cache file that another model saved: `code` "prompt_cache_mismatch" (as ModelClosedError's, for apps that test codes). */
export class PromptCacheMismatch extends Error {
  readonly code = 'prompt_cache_mismatch';
}
/** A file replaced while it was read. */
class Replaced extends Error {}

const corrupt = (file: string, why: string) => new Error(`prompt cache: ${file} is corrupt: ${why} (delete it, or name another file)`);
/** An empty file (made by touch or mktemp) holds nothing: read as none, and replaced. */
const isEmpty = (file: string): boolean => { try { const s = fs.statSync(file); return s.isFile() && s.size === 0; } catch { return false; } };

/** Why a prompt cache could not be saved at `file` (its folder, or the nearest that exists, cannot be written); undefined when it can. */
function cannotWrite(file: string): string | undefined {
  let dir = path.dirname(path.resolve(throughLinks(file)));
  while (!fs.existsSync(dir)) dir = path.dirname(dir); // (makeDir makes the rest)
  if (!fs.statSync(dir).isDirectory()) return `${dir} is a file, not a folder`;
  const why = cannotWriteIn(dir);
  return why && `the folder ${dir} ${why}`;
}

/** The file a path names through its symbolic links, so that a save replaces the target, not the link. */
function throughLinks(file: string): string {
  for (let hops = 0; hops < 32; hops++) {
    let target: string;
    try { target = fs.readlinkSync(file); } catch { return file; } // (not a link, or nothing there)
    file = path.resolve(path.dirname(file), target);
  }
  return file;
}

/** The RoPE a model rotates keys with, as a file records it (files saved before it was recorded are checked by their probe alone). */
const ropeOf = (c: ModelConfig): string => JSON.stringify({ theta: c.ropeTheta, scaling: c.ropeScaling ?? null });

/** A file's tensor of `positions` positions (exportRow's layout): [layers, keys and values, KV heads, positions, head size]. */
const kvShape = (b: Backend, positions: number): number[] => [b.config.numLayers, 2, b.config.numKvHeads, positions, b.config.headDim];

/** The keys and values this model computes for PROBE, from position 0 with the base weights. */
export async function probe(backend: Backend): Promise<Float32Array> {
  const cache = await backend.newCache(1);
  try {
    await backend.step(cache, { tokens: [PROBE.map((t) => t % backend.config.vocabSize)] });
    return (await backend.exportRow(cache, 0, PROBE.length)).data;
  } finally {
    await backend.free(cache);
  }
}

/** Relative RMS difference of `a` from `b` (what a file's probe may differ by: PROBE_TOLERANCE). */
export function relativeDifference(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Infinity;
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) { d += (a[i] - b[i]) ** 2; n += b[i] ** 2; }
  return Math.sqrt(d / (n || 1));
}

/** Which file a path names now, and its version: a file saved (renamed) over it gets another. */
const fileStamp = (file: string): string => { const s = fs.statSync(file); return `${s.ino}:${s.size}:${s.mtimeMs}`; };

/** Why `file` may not be replaced by a prompt cache this edgereason saves; undefined when it may (none, or one of ours). */
function notOurs(file: string): string | undefined {
  if (!fs.existsSync(file) || isEmpty(file)) return undefined;
  const m = headerMetadata(file);
  if (m.format !== FORMAT) return `prompt cache: ${file} exists and is not a prompt cache file: not replaced (name another file)`;
  if (m.version !== VERSION && !earlierVersion(m.version)) return `prompt cache: ${file} is a prompt cache of format version ${m.version}, which another edgereason wrote: not replaced (name another file, or delete it)`;
  return undefined; // (an earlier edgereason's: a cache, replaced as one of another model's is)
}

/** A safetensors file's metadata as an object ({} for one that holds none, or not an object). */
const asMetadata = (m: unknown): Record<string, unknown> => (m && typeof m === 'object' ? m as Record<string, unknown> : {});
/** A safetensors file's metadata, read from its header alone (a file cut short still says what it is); {} for any other file. */
function headerMetadata(file: string): Record<string, unknown> {
  try { return asMetadata(readSafetensorsHeader(file).header.__metadata__); } catch { return {}; }
}

/** A prompt cache file opened and checked (its tensors read later), its prompts' token ids parsed. */
function readHeader(file: string): { f: SafetensorsFile; prompts: number[][]; stamp: string; sums: Record<string, string>; rope?: string } {
  if (!fs.existsSync(file)) throw new Error(`prompt cache: ${file} does not exist`);
  const stamp = fileStamp(file);
  let f: SafetensorsFile;
  try {
    f = openSafetensors(file);
  } catch (e) {
    const why = (e as Error).message;
    if (headerMetadata(file).format === FORMAT) throw corrupt(file, why.startsWith(`${file}: `) ? why.slice(file.length + 2) : why); // ours, cut short
    throw new Error(`prompt cache: ${file} is not a prompt cache file (${why}): not read, and not replaced (name another file)`);
  }
  const m = f.metadata;
  if (m.format !== FORMAT) throw new Error(`prompt cache: ${file} is not a prompt cache file (its metadata has no "format": "${FORMAT}"): not read, and not replaced (name another file)`);
  // An earlier edgereason's file cannot serve this one (its sums do not cover the token ids): a mismatch, which the
  // CLI and serve note and replace at the end, as another model's; a later one's is neither read nor replaced.
  if (earlierVersion(m.version)) throw new PromptCacheMismatch(`prompt cache: ${file} was saved by an earlier edgereason (format version ${m.version}; this one reads version ${VERSION}, whose sums also cover the prompts' token ids); save the prompt cache again with this model`);
  if (m.version !== VERSION) throw new Error(`prompt cache: ${file} is a prompt cache of format version ${typeof m.version === 'string' ? m.version : shown(m.version)}, which another edgereason wrote; this one reads version ${VERSION} (delete it, or name another file)`);
  let sums: unknown;
  try { sums = JSON.parse(String(m.sha256)); } catch { throw corrupt(file, `its "sha256" metadata is ${m.sha256 === undefined ? 'missing' : 'not JSON'}`); }
  if (!(sums && typeof sums === 'object' && ['prompts', ...f.names].every((n) => typeof (sums as Record<string, unknown>)[n] === 'string'))) throw corrupt(file, 'its "sha256" metadata does not give the prompts\' and every tensor\'s sum');
  // The token ids the keys and values belong to: another id would answer one prompt from another's cache.
  if (sha256(Buffer.from(String(m.prompts))) !== (sums as Record<string, string>).prompts) throw corrupt(file, 'its "prompts" metadata (the token ids of the kept prompts) differs from what was saved (sha256)');
  let prompts: unknown;
  try { prompts = JSON.parse(String(m.prompts)); } catch { throw corrupt(file, 'its "prompts" metadata is not JSON'); }
  if (!Array.isArray(prompts) || !prompts.every((p) => Array.isArray(p) && p.length > 0 && p.every((t) => Number.isInteger(t) && t >= 0))) throw corrupt(file, 'its "prompts" metadata is not a list of token id lists');
  const at = (shape: number[], n: number) => shape.map((d, i) => (i === 3 ? n : d));
  const p = f.has('probe') ? f.shape('probe') : [];
  if (p.length !== 5 || p[1] !== 2 || p[3] !== PROBE.length || f.info('probe').dtype !== 'F32') throw corrupt(file, `it has no probe tensor of shape [layers, 2, KV heads, ${PROBE.length}, head size], float32`);
  prompts.forEach((ids: number[], i) => {
    const name = `prompt.${i}`;
    if (!f.has(name) || f.info(name).dtype !== 'F32' || f.shape(name).join() !== at(p, ids.length).join()) throw corrupt(file, `tensor "${name}" is missing or not [${at(p, ids.length).join(', ')}] float32`);
  });
  if (f.names.length !== prompts.length + 1) throw corrupt(file, `it holds ${f.names.length} tensors for ${prompts.length} prompts and the probe`);
  return { f, prompts: prompts as number[][], stamp, sums: sums as Record<string, string>, ...(typeof m.rope === 'string' ? { rope: m.rope } : {}) };
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** How many first tokens two lists share. */
function common(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

const CACHES = new WeakMap<Backend, PromptCache>();

/** The default budget of a model's prompt cache, in MiB (see PROMPT_CACHE_MIB). */
export const defaultPromptCacheMib = (c: Backend['config']): number => Math.max(PROMPT_CACHE_MIB, Math.ceil(kvBytes(c, 1, DEFAULT_PROMPT_TOKENS) / 2 ** 20));

/** Sets a model session's prompt cache: `mib` MiB at most (0: none; undefined: the default for its model). */
export function setPromptCache(backend: Backend, mib: number | undefined): void {
  mib ??= defaultPromptCacheMib(backend.config);
  CACHES.get(backend)?.clear();
  if (mib > 0) CACHES.set(backend, new PromptCache(backend, mib * 2 ** 20));
  else CACHES.delete(backend);
}

/** Drops the prompts kept for `backend` itself (its model closing; a view's close leaves its owner's alone). */
export function dropPromptCache(backend: Backend): void { CACHES.get(backend)?.clear(); }

/** The prompt cache of `backend`, or of the backend a view of it works through (an adapter's, a request's). */
export function promptCacheOf(backend: Backend): PromptCache | undefined {
  for (let b: Backend | undefined = backend; b; b = delegateOf(b)) {
    const c = CACHES.get(b);
    if (c) return c;
  }
  return undefined;
}

/**
 * A prompt cache kept in `file` across runs (the CLI's --prompt-cache-file): the prompts it holds loaded now when it
 * exists — one another model saved is noted and replaced at the end, anything that is not a prompt cache refused —
 * and `save` writing this run's back. Notes go to `note`.
 */
export async function openPromptCacheFile(cache: PromptCache, file: string, note: (line: string) => void): Promise<{ save(): Promise<void> }> {
  const MB = (n: number) => `${(n / 1e6).toFixed(1)} MB`, prompts = (n: number) => `${n} prompt${n === 1 ? '' : 's'}`;
  // A folder is refused now, not when the run's prompts are saved at its end.
  const folder = (() => { try { return fs.statSync(file).isDirectory(); } catch { return false; } })(); // (under a file: said below)
  if (/[\\/]$/.test(file) || folder) {
    throw new Error(`prompt cache: ${file} names a folder; give the file the prompts are kept in (e.g. ${path.join(file, 'prompts.safetensors')})`);
  }
  if (fs.existsSync(file) && !isEmpty(file)) {
    try {
      const r = await cache.load(file);
      note(`prompt cache: ${r.prompts < r.of ? `${r.prompts} of ${r.of} prompts (the most recent ${cache.budget / 2 ** 20} MiB)` : prompts(r.prompts)} (${r.tokens} tokens) read from ${file}`);
    } catch (e) {
      if (!(e instanceof PromptCacheMismatch)) throw e;
      note(`${e.message.replace(/; save the prompt cache again with this model$/, '')}: not read; it is replaced at the end if this run keeps a prompt`);
    }
  }
  // A place that cannot be written (a cache shipped read-only) is read, not saved: said now, not found at the end.
  const unwritable = cannotWrite(file);
  if (unwritable) note(`prompt cache: ${file} is read but not saved: ${unwritable}`);
  // A folder not there yet (a mistyped path?) is made at the save: said now, not found later in an unexpected place.
  else {
    const folder = path.dirname(path.resolve(throughLinks(file)));
    if (!fs.existsSync(folder)) note(`prompt cache: the folder ${folder} does not exist: it is made when the prompts are saved`);
  }
  // Saved only when what is kept changed (a run that kept nothing new leaves the file as it was).
  let saved = cache.changes;
  return {
    async save() {
      if (unwritable || (cache.changes === saved && cache.sharedPrompts)) return;
      // A run whose prompts were all too short to keep (or too long for the budget, or of a cache salt's scope) writes
      // nothing: said, not left to be found (and a file there is not replaced by none).
      if (!cache.sharedPrompts) return note(`prompt cache: nothing saved to ${file}: no prompt was kept (one is kept when longer than ${MIN_REUSED} tokens and within the prompt cache's ${cache.budget / 2 ** 20} MiB: promptCache (--prompt-cache) raises it)`);
      const r = await cache.save(file);
      saved = cache.changes;
      note(`prompt cache: ${prompts(r.prompts)} (${r.tokens} tokens, ${MB(r.bytes)}) saved to ${file}`);
    },
  };
}
