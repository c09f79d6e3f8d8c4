/**
 * The runtime's compute boundary: KV caches live next to the ONNX session and are addressed by handle,
 * so the same generation code drives an in-process engine (tests, training) or one in a worker thread
 * (the default: the event loop stays free). Only token ids, sampled tokens and, on request, logits and
 * hidden states cross the boundary.
 */
import { ModelClosedError, ofCode } from './errors.ts';
import type { ModelConfig } from '../models/config.ts';
import { Engine, type AdapterTensors, type EngineOptions, type StepInput, type StepOutput } from './engine.ts';
import fs from 'node:fs';
import { KVCache } from './kv-cache.ts';
import { readFully } from '../io/safetensors.ts';
import { sampleToken, type RowSampling, type Sampled, type TokenLogprob } from './sampler.ts';

export type CacheHandle = number;

/** One row's first `length` positions of keys and values, in KVCache.exportRow's layout. */
export interface KVRow { length: number; data: Float32Array }
/** The same, stored in a file from byte `offset` on (little-endian float32). */
export interface KVFileRow { length: number; file: string; offset: number }

export interface StepRequest extends StepInput {
  /** Per row: sample the next token with these parameters and this uniform draw; omit a row (null) to skip. */
  sample?: (RowSampling | null)[];
  /** Return raw logits / hidden states (otherwise only sampled tokens come back). */
  want?: { logits?: boolean; hidden?: boolean };
  /**
   * Per sampled row (speculative decoding): its last `tokens.length` fed tokens are guesses of what it will sample.
   * The row is sampled at the position before the first guess (with its sampling's draw), then at each guess's
   * position (with the next of `u`, and the same parameters) while the previous token drawn equals that guess: where
   * decoding token by token would sample with those parameters and draws, it draws these tokens (the caller stops a
   * run where its sampling would change, as a constrained answer's does). StepResult.runs holds them; the positions
   * of the guesses after the last one drawn right leave the cache. The step's logits must cover the guesses and the
   * position before them (StepInput.logits 'all', or a number above the guesses). A backend stepping several requests
   * in one call may step a row without its guesses where that lets it join the others' batched run
   * (BatchedLocalBackend.stepMany): no `runs` then.
   */
  draft?: (Draft | null)[];
}

/** A row's guessed next tokens and the random draws for sampling at their positions (see StepRequest.draft). */
export interface Draft { tokens: number[]; u: number[] }

export interface StepResult {
  tokens?: number[];
  logprobs?: number[];
  /** Per sampled row whose sampling asked for topLogprobs: the most likely tokens, best first. */
  top?: (TokenLogprob[] | undefined)[];
  /**
   * Per row with a draft: the tokens drawn from the position before its guesses on, up to the first that differs from
   * its guess (or one past the last guess). The first is the row's `tokens` entry.
   */
  runs?: (Sampled[] | undefined)[];
  logits?: Float32Array;
  /** With logits: log Σ exp of each position's (the graph's normaliser). */
  lse?: Float32Array;
  hidden?: Float32Array;
  /** Positions per row in logits/hidden. */
  positions: number;
}

export interface Backend {
  readonly config: ModelConfig;
  readonly hasLora: boolean;
  newCache(rows: number): Promise<CacheHandle>;
  /**
   * With `signal`, a backend that queues steps (CoalescingBackend) drops one not yet run once it aborts (AbortedError),
   * and stops a long prefill it splits between its parts, taking back the parts run.
   */
  step(cache: CacheHandle, req: StepRequest, signal?: AbortSignal): Promise<StepResult>;
  /**
   * A new cache made of the given rows (repeats allowed: forking a prefix); with `length`, only each row's first
   * `length` positions, in a cache just large enough for them (a compact copy).
   */
  select(cache: CacheHandle, rows: number[], length?: number): Promise<CacheHandle>;
  /** A new cache whose row r holds row 0 of `caches[r]`, or is empty for null (prompts begun in caches of their own, batched). */
  gather(caches: (CacheHandle | null)[]): Promise<CacheHandle>;
  /** Keeps only the given rows, in place. */
  keep(cache: CacheHandle, rows: number[]): Promise<void>;
  /** Row `row`'s first `length` positions, per layer its keys then its values, each [kvHeads, length, headDim] (a copy). */
  exportRow(cache: CacheHandle, row: number, length: number): Promise<KVRow>;
  /** A new one-row cache holding `length` positions that exportRow gave, read from `file` at byte `offset` (a prompt cache file). */
  importRow(kv: KVFileRow): Promise<CacheHandle>;
  truncate(cache: CacheHandle, row: number, length: number): Promise<void>;
  lengths(cache: CacheHandle): Promise<number[]>;
  free(cache: CacheHandle): Promise<void>;
  /** Sets (or with null clears) the LoRA weights steps use under `name` (StepInput.adapterName; default '', the first). */
  setAdapter(adapter: AdapterTensors | null, name?: string): Promise<void>;
  close(): Promise<void>;
  /** Set when the backend failed by itself (its worker died) and refuses every call; not when closed. */
  readonly failed?: string | undefined;
}

/** Backend over an Engine in this thread. */
export class LocalBackend implements Backend {
  protected caches = new Map<CacheHandle, KVCache>();
  private next = 1;
  constructor(readonly engine: Engine) {}

  static async create<T extends LocalBackend>(this: new (engine: Engine) => T, config: ModelConfig, model: Uint8Array | string, opts: EngineOptions = {}): Promise<T> {
    return new this(await Engine.create(config, model, opts));
  }

  get config(): ModelConfig { return this.engine.config; }
  get hasLora(): boolean { return this.engine.hasLora; }

  async newCache(rows: number): Promise<CacheHandle> { return this.register(this.engine.newCache(rows)); }

  async step(handle: CacheHandle, req: StepRequest): Promise<StepResult> {
    const c = this.cache(handle);
    checkSampling(req);
    return keepGuessed(c, req, stepResult(this.config, await this.track(this.engine.step(c, req), [c]), req));
  }

  async select(handle: CacheHandle, rows: number[], length?: number): Promise<CacheHandle> { return this.register(this.engine.select(this.cache(handle), rows, length)); }
  async gather(handles: (CacheHandle | null)[]): Promise<CacheHandle> {
    return this.register(KVCache.gather(this.engine.cacheShape, handles.map((h) => (h === null ? null : this.cache(h)))));
  }
  /**
   * keep, truncate and free change a cache's buffers (the old ones are reused: kv-cache.ts's pool), so they wait
   * for the cache's runs in flight, which read them and write their new positions into them at the end.
   */
  async keep(handle: CacheHandle, rows: number[]): Promise<void> {
    const c = this.cache(handle);
    await this.idle(c);
    this.engine.keep(c, rows);
  }
  async truncate(handle: CacheHandle, row: number, length: number): Promise<void> {
    const c = this.cache(handle);
    await this.idle(c);
    c.truncate(row, length);
  }
  async lengths(handle: CacheHandle): Promise<number[]> { return [...this.cache(handle).lengths]; }
  async exportRow(handle: CacheHandle, row: number, length: number): Promise<KVRow> { return { length, data: this.cache(handle).exportRow(row, length) }; }
  async importRow(kv: KVFileRow): Promise<CacheHandle> {
    const fd = fs.openSync(kv.file, 'r');
    try {
      return this.register(KVCache.importRow(this.engine.cacheShape, kv.length,
        (into, from) => readFully(fd, new Uint8Array(into.buffer, into.byteOffset, into.byteLength), kv.offset + 4 * from, kv.file)));
    } finally {
      fs.closeSync(fd);
    }
  }
  async free(handle: CacheHandle): Promise<void> {
    const c = this.caches.get(handle);
    this.caches.delete(handle);
    if (!c) return;
    await this.idle(c);
    if (!this.closed) c.release(); // a closed backend's caches are not pooled
  }
  async setAdapter(adapter: AdapterTensors | null, name?: string): Promise<void> {
    this.open();
    if (adapter) this.engine.setAdapter(adapter, name); else if (this.engine.hasLora) this.engine.clearAdapter(name);
  }
  /** Idempotent; steps already running finish first, and later calls are refused, as the worker backend does. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.allSettled(this.busy.all());
      this.caches.clear();
      await this.engine.close();
    })();
    return this.closing;
  }

  private closing?: Promise<void>;
  private get closed(): boolean { return this.closing !== undefined; }
  /** The runs in flight per cache they step. */
  private busy = new RunsByKey<KVCache>();
  /** A session run over `caches` (at least one), which close() (and keep, truncate, free of those caches) wait for. */
  protected track<T>(run: Promise<T>, caches: KVCache[]): Promise<T> {
    this.busy.add(run, caches);
    return run;
  }
  /** Resolves once no run over `c` is in flight. */
  private async idle(c: KVCache): Promise<void> {
    for (let runs = this.busy.of(c); runs.length; runs = this.busy.of(c)) await Promise.allSettled(runs);
  }
  private open(): void { if (this.closed) throw new ModelClosedError(); }
  private register(c: KVCache): CacheHandle { this.open(); const h = this.next++; this.caches.set(h, c); return h; }
  protected cache(h: CacheHandle): KVCache {
    this.open();
    const c = this.caches.get(h);
    if (!c) throw new Error(`runtime: KV cache ${h} does not exist (freed?)`);
    return c;
  }
}

/** The step result for an engine output: sampling happens next to the logits (log-probabilities from the graph's normaliser). */
export function stepResult(config: ModelConfig, out: StepOutput, req: StepRequest): StepResult {
  const res: StepResult = { positions: out.positions };
  if (req.sample) {
    const V = config.vocabSize, L = out.positions;
    res.tokens = []; res.logprobs = [];
    req.sample.forEach((p, b) => {
      if (!p) { res.tokens!.push(-1); res.logprobs!.push(0); return; }
      const n = req.tokens[b].length, draft = req.draft?.[b], k = draft?.tokens.length ?? 0;
      // The logits of the row's new token `back` from its last: with 'all', rows shorter than the longest are padded after their tokens.
      const sample = (back: number, u: number) => {
        const at = b * L + (req.logits === 'all' ? n : L) - 1 - back;
        return sampleToken(out.logits.subarray(at * V, (at + 1) * V), p, u, out.lse[at], p.seen, p.allow, p.counted, p.deny);
      };
      const s = sample(k, p.u);
      res.tokens!.push(s.token); res.logprobs!.push(s.logprob);
      if (s.top) (res.top ??= [])[b] = s.top;
      if (!draft) return;
      const run = [s];
      for (let j = 0; j < k && run[j].token === draft.tokens[j]; j++) run.push(sample(k - 1 - j, draft.u[j]));
      (res.runs ??= [])[b] = run;
    });
  }
  // What the caller keeps is its own: a batched step's outputs are views of the whole run's (every row's logits).
  const own = (x: Float32Array) => (x.byteLength < x.buffer.byteLength ? x.slice() : x);
  if (req.want?.logits) { res.logits = own(out.logits); res.lse = own(out.lse); }
  if (req.want?.hidden) res.hidden = own(out.hidden);
  return res;
}

/**
 * Refuses, before the step runs (a refused step leaves the cache as it was), a row sampled but fed no token, and a
 * draft its row's fed tokens, draws or logits cannot hold (see StepRequest.draft).
 */
export function checkSampling(req: StepRequest): void {
  if (Array.isArray(req.sample) && Array.isArray(req.tokens)) req.sample.forEach((p, b) => {
    if (p && !req.tokens[b]?.length) throw new Error(`engine: row ${b} is sampled but was fed no token (nothing new to sample from)`);
  });
  const L = req.logits === 'all' ? Infinity : typeof req.logits === 'number' ? req.logits : 1;
  req.draft?.forEach((d, b) => {
    if (!d) return;
    const k = d.tokens.length, n = req.tokens[b]?.length ?? 0;
    if (!req.sample?.[b] || k >= n || d.u.length !== k || k >= L) throw new Error(`engine: row ${b}'s draft of ${k} tokens (${d.u.length} draws) needs a sampled row, more fed tokens than its ${n} and more positions of logits than ${L === Infinity ? n : L}`);
    if (d.tokens.some((t, i) => t !== req.tokens[b][n - k + i])) throw new Error(`engine: row ${b}'s draft [${d.tokens}] is not the end of its fed tokens [${req.tokens[b]}]`);
  });
}

/** Drops from `cache` the positions of each row's guesses after the last one drawn right (StepRequest.draft); returns `res`. */
export function keepGuessed(cache: KVCache, req: StepRequest, res: StepResult): StepResult {
  res.runs?.forEach((run, b) => { if (run) cache.truncate(b, cache.lengths[b] - (req.draft![b]!.tokens.length - (run.length - 1))); });
  return res;
}

/** An error as a message carries it (across the worker boundary, or in a stepMany result). */
export interface RemoteError { message: string; name: string; stack?: string; code?: string }
export function remoteError(e: unknown): RemoteError {
  const code = (e as { code?: unknown })?.code;
  return e instanceof Error ? { message: e.message, name: e.name, stack: e.stack, ...(typeof code === 'string' ? { code } : {}) } : { message: String(e), name: 'Error' };
}
/** The error again, with the stack it was thrown with (whose frames are the other side's). */
export function fromRemote(r: RemoteError): Error { return ofCode(Object.assign(new Error(r.message), r)); }


/**
 * `backend` whose steps use the adapter set under `name` (Backend.setAdapter): a model's second adapter in the same
 * session. Closing the view removes that adapter (a no-op once the session is closed); the session stays with its
 * owner. A closed view refuses its calls. A view of a view works on the session itself: either can close first.
 */
export function adapterView(backend: Backend, name: string): Backend {
  const session = sessionOf(backend);
  let closed = false;
  const open = () => { if (closed) throw new ModelClosedError(); };
  const view = delegate(session, {
    step: async (cache, req, signal) => {
      open();
      // A step still queued when the view closes finds its adapter gone: it fails as the closed model's call it is.
      try { return await session.step(cache, { ...req, adapterName: req.adapterName ?? name }, signal); } catch (e) { open(); throw e; }
    },
    newCache: async (rows) => { open(); return session.newCache(rows); },
    setAdapter: async (adapter, other) => { open(); return session.setAdapter(adapter, other ?? name); },
    close: async () => {
      if (closed) return;
      closed = true;
      try { await session.setAdapter(null, name); } catch (e) { if (!(e instanceof ModelClosedError)) throw e; }
    },
  });
  viewSessions.set(view, session);
  return view;
}
const viewSessions = new WeakMap<Backend, Backend>();
/** The backend an adapter view (or a view of one) works on; any other backend itself. */
export const sessionOf = (backend: Backend): Backend => viewSessions.get(backend) ?? backend;

/** Runs in flight per key (a cache, or its handle): each counted under its keys until it settles. */
export class RunsByKey<K> {
  private readonly runs = new Map<K, Set<Promise<unknown>>>();
  add(run: Promise<unknown>, keys: readonly K[]): void {
    for (const k of keys) this.runs.set(k, (this.runs.get(k) ?? new Set()).add(run));
    const settled = () => {
      for (const k of keys) {
        const runs = this.runs.get(k);
        runs?.delete(run);
        if (!runs?.size) this.runs.delete(k);
      }
    };
    run.then(settled, settled);
  }
  /** The runs of `key` in flight now. */
  of(key: K): Promise<unknown>[] { return [...(this.runs.get(key) ?? [])]; }
  /** Every run in flight now. */
  all(): Promise<unknown>[] { return [...new Set([...this.runs.values()].flatMap((runs) => [...runs]))]; }
}

/**
 * A Backend whose calls go to `backend` itself, but for the ones `replace` gives (a prototype-based view would keep
 * its own copy of any state it writes, such as the next cache handle).
 */
export function delegate(backend: Backend, replace: Partial<Pick<Backend, 'newCache' | 'step' | 'setAdapter' | 'close'>>): Backend {
  const view: Backend = {
    get config() { return backend.config; },
    get hasLora() { return backend.hasLora; },
    get failed() { return backend.failed; },
    newCache: (rows) => backend.newCache(rows),
    step: (cache, req, signal) => backend.step(cache, req, signal),
    select: (cache, rows, length) => backend.select(cache, rows, length),
    gather: (caches) => backend.gather(caches),
    keep: (cache, rows) => backend.keep(cache, rows),
    exportRow: (cache, row, length) => backend.exportRow(cache, row, length),
    importRow: (kv) => backend.importRow(kv),
    truncate: (cache, row, length) => backend.truncate(cache, row, length),
    lengths: (cache) => backend.lengths(cache),
    free: (cache) => backend.free(cache),
    setAdapter: (adapter, name) => backend.setAdapter(adapter, name),
    close: () => backend.close(),
    ...replace,
  };
  delegated.set(view, backend);
  return view;
}
const delegated = new WeakMap<Backend, Backend>();
/** The backend a view made by `delegate` calls (an adapter's, a request's); undefined for any other. */
export const delegateOf = (view: Backend): Backend | undefined => delegated.get(view);
