/**
 * Continuous batching at the Backend boundary. Every request keeps its own generation loop (generateBatch,
 * answer(), ...) over its own KV caches; a CoalescingBackend collects the `step()` calls those loops issue while a
 * session run is in flight (or within the same tick) and executes them together through `stepMany`: the decode
 * steps of all requests become ONE session run over their rows (Engine.stepMany), multi-token prefills run alone,
 * a prompt past PREFILL_CHUNK tokens in parts of that many, prefills in the order they came up to that many a run.
 * A request that arrives while others decode joins the next run; a finished or cancelled one simply stops
 * stepping. Each row keeps its own adapter mask, sampling parameters and seeded draws, so a sequence produces the
 * same tokens alone or batched with others.
 *
 * The coalescing runs on the side of the generation loops (the main thread); the engine side (BatchedLocalBackend,
 * in this thread or in the runtime worker) only has to answer `stepMany`.
 */
import { AbortedError, again, ModelClosedError } from './errors.ts';
import type { Model } from './model.ts';
import { checkSampling, delegate, fromRemote, keepGuessed, LocalBackend, remoteError, RunsByKey, stepResult, type Backend, type CacheHandle, type KVFileRow, type KVRow, type RemoteError, type StepRequest, type StepResult } from './backend.ts';
import { paddedFew, type AdapterTensors } from './engine.ts';
import type { KVCache } from './kv-cache.ts';
import { isTokenId, type ModelConfig } from '../models/config.ts';
import { onAbort } from './abort.ts';
import { shown } from '../show.ts';

/** Per entry of a stepMany call: its result, or why that entry failed (the others are unaffected). */
export type StepManyResult = StepResult | { error: RemoteError };

/** A backend that can step several caches in one call. */
export interface BatchingBackend extends Backend {
  stepMany(caches: CacheHandle[], reqs: StepRequest[]): Promise<StepManyResult[]>;
}

/** LocalBackend plus `stepMany` (Engine.stepMany over the caches it holds). The runtime worker runs this one. */
export class BatchedLocalBackend extends LocalBackend implements BatchingBackend {
  async stepMany(caches: CacheHandle[], reqs: StepRequest[]): Promise<StepManyResult[]> {
    if (caches.length !== reqs.length) throw new Error(`runtime: stepMany got ${caches.length} caches and ${reqs.length} requests`);
    const out: StepManyResult[] = new Array(caches.length), ok: number[] = [], seen = new Set<CacheHandle>();
    const fail = (i: number, e: unknown) => { out[i] = { error: remoteError(e) }; };
    caches.forEach((h, i) => {
      try {
        if (seen.has(h)) throw new Error(`runtime: KV cache ${h} appears twice in one batched step`);
        seen.add(h);
        this.cache(h); // throws for a cache that does not exist
        checkSampling(reqs[i]);
        ok.push(i);
      } catch (e) {
        fail(i, e);
      }
    });
    if (!ok.length) return out;
    // A step of several tokens runs alone (Engine.stepMany): one that brings guesses (StepRequest.draft) goes without
    // them where other decode steps of its adapter would run in one batch with it (paddedFew's, as the engine batches
    // them: a row far longer than the others keeps its guesses, since it would step alone anyway), and joins them.
    const used = reqs.slice(), groups = new Map<string, { i: number; req: StepRequest }[]>();
    for (const i of ok) {
      const req = reqs[i].draft && !reqs[i].want?.logits ? withoutDraft(reqs[i]) : reqs[i];
      if (this.cache(caches[i]).offset || !Array.isArray(req.tokens) || !req.tokens.every((t) => Array.isArray(t) && t.length <= 1)) continue; // (the engine names a malformed one)
      const name = req.adapterName ?? '', group = groups.get(name);
      if (group) group.push({ i, req }); else groups.set(name, [{ i, req }]);
    }
    for (const group of groups.values()) {
      const batched = paddedFew(group.map(({ i }) => this.cache(caches[i]).lengths));
      if (batched.length > 1) for (const k of batched) used[group[k].i] = group[k].req;
    }
    // Engine.stepMany validates each entry and settles each on its own: one bad entry fails alone.
    const entries = ok.map((i) => ({ cache: this.cache(caches[i]), input: used[i] }));
    const res = await this.track(this.engine.stepMany(entries), entries.map((e) => e.cache));
    ok.forEach((i, k) => {
      const r = res[k];
      if (r instanceof Error) return fail(i, r);
      try { out[i] = keepGuessed(entries[k].cache, used[i], stepResult(this.config, r, used[i])); } catch (e) { fail(i, e); }
    });
    return out;
  }

  override async free(handle: CacheHandle): Promise<void> {
    const c = this.caches.get(handle);
    if (c) this.engine.forget(c);
    await super.free(handle);
  }
}

/** One session run of the coalescer: entries (caches) and rows stepped, and its duration. */
export interface RunStats { entries: number; rows: number; ms: number }

/** A queued step; `fed`: the tokens it prefills (rows fed more than one, guesses aside), which PREFILL_CHUNK bounds per run. */
interface Pending { cache: CacheHandle; req: StepRequest; rows: number; fed: number; resolve: (r: StepResult) => void; reject: (e: Error) => void; signal?: AbortSignal }

export interface CoalescingOptions {
  /** Most rows stepped in one run (further steps wait for the next run). Default 64. */
  maxRows?: number;
  /** Called after every run (batch occupancy for metrics). */
  onRun?: (s: RunStats) => void;
  /** Tokens a step feeds a row at most: a longer prefill goes in steps of this many (prefillChunks). Default PREFILL_CHUNK; Infinity: one step. */
  prefillChunk?: number;
}

/**
 * Backend whose `step()` calls are coalesced: while a run is in flight, new steps queue; when it ends (and on the
 * first step of an idle backend, after the current tick) all queued steps go out as one `stepMany`.
 * The other calls go to the inner backend in the order they were made: a truncate, keep, select, lengths or free after
 * the steps issued on its cache before it, setAdapter after every step issued before it.
 */
export class CoalescingBackend implements BatchingBackend {
  private pending: Pending[] = [];
  private running = false;
  private scheduled = false;
  private readonly maxRows: number;
  private idleWaiters: (() => void)[] = [];
  /** Runs and rows so far (for tests and metrics). */
  readonly stats = { runs: 0, rows: 0, maxRows: 0 };

  constructor(readonly inner: BatchingBackend, private readonly opts: CoalescingOptions = {}) {
    this.maxRows = opts.maxRows ?? 64;
    this.prefillChunk = opts.prefillChunk ?? PREFILL_CHUNK;
    if (!(Number.isInteger(this.prefillChunk) && this.prefillChunk >= 1) && this.prefillChunk !== Infinity) throw new Error(`runtime: prefillChunk must be a whole number of tokens from 1, or Infinity, got ${shown(opts.prefillChunk)}`);
  }
  private readonly prefillChunk: number;

  get config(): ModelConfig { return this.inner.config; }
  get hasLora(): boolean { return this.inner.hasLora; }
  get failed(): string | undefined { return this.inner.failed; }

  async step(cache: CacheHandle, req: StepRequest, signal?: AbortSignal): Promise<StepResult> {
    // A long prefill goes in steps of PREFILL_CHUNK tokens, each queued apart: other requests' decode steps run between them.
    const V = this.config.vocabSize, known = Array.isArray(req.tokens) && req.tokens.every((r) => Array.isArray(r) && r.every((t) => isTokenId(t, V)));
    const parts = (known && prefillChunks(req, this.prefillChunk)) || [req], change = this.adapterChange, earlier = this.steps.of(cache);
    const queue = () => (parts.length === 1 ? this.queue(cache, req, signal) : this.queueParts(cache, req, parts, earlier, signal));
    const run = change ? change.then(queue, queue) : queue();
    this.steps.add(run, [cache]);
    try {
      return await run;
    } catch (e) {
      if (e instanceof AbortedError) throw e;
      // Thrown again here, so that its stack holds the caller's frames (the run failed in a later tick); the original is its cause.
      throw again(e);
    }
  }

  /**
   * A split prefill's parts, one after another; all or nothing, as the step it stands for: one that one step would be
   * refused (past the context) goes whole, to be refused so, and a part refused or cancelled takes back the parts run.
   */
  private async queueParts(cache: CacheHandle, req: StepRequest, parts: StepRequest[], earlier: Promise<unknown>[], signal?: AbortSignal): Promise<StepResult> {
    this.splits++;
    try {
      await Promise.allSettled(earlier);
      const start = await this.inner.lengths(cache);
      if (start.some((n, b) => n + (req.tokens[b]?.length ?? 0) > this.config.maxPositionEmbeddings)) return await this.queue(cache, req, signal);
      try {
        for (const part of parts.slice(0, -1)) await this.queue(cache, part, signal);
        return await this.queue(cache, parts.at(-1)!, signal);
      } catch (e) {
        await Promise.all(start.map((n, row) => this.inner.truncate(cache, row, n))).catch(() => {}); // (a closed model: gone anyway)
        throw e;
      }
    } finally {
      this.splits--;
      this.kick();
    }
  }
  /** Split prefills under way (idle() waits for them: between two parts nothing is queued). */
  private splits = 0;

  /** Each cache's steps queued or running here. */
  private readonly steps = new RunsByKey<CacheHandle>();
  /**
   * `op` on `cache` once the steps issued on it before have ended: a step waits here for the next batch, and a keep,
   * truncate or free that went straight through would change the cache under it (calls keep their order, as the
   * inner backends keep it: generateBatch relies on it, copying rows out before a keep renumbers them).
   */
  private async afterSteps<T>(cache: CacheHandle, op: () => Promise<T>): Promise<T> {
    await Promise.allSettled(this.steps.of(cache));
    return op();
  }

  private queue(cache: CacheHandle, req: StepRequest, signal?: AbortSignal): Promise<StepResult> {
    if (this.closing) return Promise.reject(new ModelClosedError());
    if (signal?.aborted) return Promise.reject(new AbortedError());
    return new Promise<StepResult>((resolve, reject) => {
      // (A malformed request counts as no prefill: the engine refuses it by name.)
      const rows = Array.isArray(req.tokens) ? req.tokens : [], fed = req.draft ? 0 : rows.reduce((n, t) => n + (Array.isArray(t) && t.length > 1 ? t.length : 0), 0);
      const p: Pending = { cache, req, rows: rows.length, fed, resolve, reject, signal };
      if (signal) {
        const abort = () => {
          const i = this.pending.indexOf(p);
          if (i >= 0) { this.pending.splice(i, 1); reject(new AbortedError()); }
        };
        const stopWaiting = onAbort(signal, abort);
        p.resolve = (r) => { stopWaiting(); resolve(r); };
        p.reject = (e) => { stopWaiting(); reject(e); };
      }
      this.pending.push(p);
      this.kick();
    });
  }

  /** A view of this backend for one request: its steps fail with AbortedError once `signal` aborts. */
  forRequest(signal: AbortSignal): Backend {
    return delegate(this, {
      step: async (cache, req) => {
        const r = await this.step(cache, req, signal);
        if (signal.aborted) throw new AbortedError();
        return r;
      },
      setAdapter: () => Promise.reject(new Error('runtime: a request cannot change the shared adapter')),
      close: () => Promise.resolve(),
    });
  }

  /** Resolves once nothing is queued or running. */
  idle(): Promise<void> {
    if (!this.running && !this.pending.length && !this.splits) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  get queued(): number { return this.pending.length; }

  newCache(rows: number): Promise<CacheHandle> { return this.inner.newCache(rows); }
  /** Straight through, not queued (a coalescer over this one batches its own steps). */
  stepMany(caches: CacheHandle[], reqs: StepRequest[]): Promise<StepManyResult[]> { return this.inner.stepMany(caches, reqs); }
  select(cache: CacheHandle, rows: number[], length?: number): Promise<CacheHandle> { return this.afterSteps(cache, () => this.inner.select(cache, rows, length)); }
  async gather(caches: (CacheHandle | null)[]): Promise<CacheHandle> {
    await Promise.allSettled(caches.flatMap((c) => (c === null ? [] : this.steps.of(c))));
    return this.inner.gather(caches);
  }
  keep(cache: CacheHandle, rows: number[]): Promise<void> { return this.afterSteps(cache, () => this.inner.keep(cache, rows)); }
  exportRow(cache: CacheHandle, row: number, length: number): Promise<KVRow> { return this.afterSteps(cache, () => this.inner.exportRow(cache, row, length)); }
  importRow(kv: KVFileRow): Promise<CacheHandle> { return this.inner.importRow(kv); }
  truncate(cache: CacheHandle, row: number, length: number): Promise<void> { return this.afterSteps(cache, () => this.inner.truncate(cache, row, length)); }
  lengths(cache: CacheHandle): Promise<number[]> { return this.afterSteps(cache, () => this.inner.lengths(cache)); }
  free(cache: CacheHandle): Promise<void> { return this.afterSteps(cache, () => this.inner.free(cache)); }
  /**
   * Once every step issued before has ended (on any cache: they may use the adapter replaced), and before any step
   * issued after it joins a batch: a step runs with the adapter it was issued under.
   */
  setAdapter(adapter: AdapterTensors | null, name?: string): Promise<void> {
    const before = this.steps.all(), previous = this.adapterChange;
    const change = (async () => {
      await Promise.allSettled([...before, ...(previous ? [previous] : [])]);
      return this.inner.setAdapter(adapter, name);
    })();
    this.adapterChange = change;
    const done = () => { if (this.adapterChange === change) this.adapterChange = undefined; };
    change.then(done, done);
    return change;
  }
  /** The adapter change in flight: steps issued during it wait for it. */
  private adapterChange?: Promise<void>;
  /**
   * Steps still queued fail as a closed model's calls, and new ones are refused at once; the session closes when the
   * run in flight ends (a batch over maxRows always leaves steps queued: waiting for none would wait for every call).
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const p of this.pending.splice(0)) p.reject(new ModelClosedError());
      await this.idle();
      await this.inner.close();
    })();
    return this.closing;
  }
  private closing?: Promise<void>;

  private kick(): void {
    if (this.running || this.scheduled) return;
    if (!this.pending.length) {
      if (!this.splits) for (const w of this.idleWaiters.splice(0)) w();
      return;
    }
    this.scheduled = true;
    // After the current tick: the loops whose previous step just resolved issue their next one first.
    setImmediate(() => { this.scheduled = false; void this.flush(); });
  }

  private async flush(): Promise<void> {
    if (this.running) return;
    const batch: Pending[] = [], later: Pending[] = [], seen = new Set<CacheHandle>();
    // Prefills in the order they came, up to PREFILL_CHUNK tokens a run (the first whatever its size): the engine steps
    // them one after another and a run's results come back together, so a short prompt's first token waits for one
    // chunk of a long prompt at most, not for every prompt queued with it. A step passed over holds back the later
    // steps of its cache (they keep their order).
    let rows = 0, fed = 0;
    for (const p of this.pending) {
      if (seen.has(p.cache) || (batch.length && (rows + p.rows > this.maxRows || (p.fed && fed && fed + p.fed > this.prefillChunk)))) { seen.add(p.cache); later.push(p); continue; }
      seen.add(p.cache); batch.push(p); rows += p.rows; fed += p.fed;
    }
    this.pending = later;
    if (!batch.length) { this.kick(); return; }
    this.running = true;
    const t0 = performance.now();
    try {
      const res = await this.inner.stepMany(batch.map((p) => p.cache), batch.map((p) => p.req));
      batch.forEach((p, i) => {
        const r = res[i];
        if (r && 'error' in r) p.reject(fromRemote(r.error)); else p.resolve(r);
      });
    } catch (e) {
      for (const p of batch) p.reject(e instanceof Error ? e : new Error(String(e)));
    } finally {
      const ms = performance.now() - t0;
      this.stats.runs++; this.stats.rows += rows; this.stats.maxRows = Math.max(this.stats.maxRows, rows);
      this.opts.onRun?.({ entries: batch.length, rows, ms });
      this.running = false;
      this.kick();
    }
  }
}

/**
 * Tokens a step feeds a row at most: a longer prefill goes in steps of this many (prefillChunks), which take the time
 * of one step and give the same logits (Qwen2.5-0.5B's shape at q4 on 2 cores: 0.99–1.01× at 1–4K tokens; `npm run
 * bench -- prefill`), and other requests go on between them instead of waiting for the whole prompt.
 */
export const PREFILL_CHUNK = 512;

/**
 * `req` as steps of at most `chunk` tokens a row, the last of them `req` itself over each row's last tokens (so
 * its logits, hidden states and sampling are the same); undefined when it needs no splitting, or cannot be split:
 * guesses (StepRequest.draft), or logits of more positions than a chunk holds ('all': prompt log-probabilities).
 */
export function prefillChunks(req: StepRequest, chunk = PREFILL_CHUNK): StepRequest[] | undefined {
  const want = req.logits ?? 'last';
  if (req.draft || want === 'all' || (typeof want === 'number' && want > chunk)) return undefined;
  if (!req.tokens.some((t) => t.length > chunk)) return undefined;
  const head = req.tokens.map((t) => Math.max(0, t.length - chunk)), parts: StepRequest[] = [];
  for (let from = 0; from < Math.max(...head); from += chunk) {
    const cut = (rows: number[][]) => rows.map((r, b) => r.slice(Math.min(from, head[b]), Math.min(from + chunk, head[b])));
    parts.push({ tokens: cut(req.tokens), ...(req.adapterMask ? { adapterMask: cut(req.adapterMask) } : {}), ...(req.adapterName !== undefined ? { adapterName: req.adapterName } : {}) });
  }
  const rest = (rows: number[][]) => rows.map((r, b) => r.slice(head[b]));
  parts.push({ ...req, tokens: rest(req.tokens), ...(req.adapterMask ? { adapterMask: rest(req.adapterMask) } : {}) });
  return parts;
}

/** `req` without its guesses: each row fed up to them, and sampled where decoding one token per step samples. */
function withoutDraft(req: StepRequest): StepRequest {
  const cut = (rows: number[][] | undefined) => rows?.map((r, b) => r.slice(0, r.length - (req.draft![b]?.tokens.length ?? 0)));
  const { draft: _, logits: __, ...rest } = req;
  return { ...rest, tokens: cut(req.tokens)!, ...(req.adapterMask ? { adapterMask: cut(req.adapterMask) } : {}) };
}

/** The same model (tokenizer, config, adapter) driven through another backend, e.g. a request's view. */
export function withBackend(model: Model, backend: Backend): Model {
  return Object.create(model, { backend: { value: backend, enumerable: true } }) as Model;
}
