/**
 * One ONNX Runtime session over the inference graph, plus the step that feeds it from a KVCache:
 * B rows, each adding its own number of new tokens (prefill and decode are the same call).
 */
import os from 'node:os';
import ort from './ort.ts';
import { isTokenId, projectionShape, type ModelConfig, type Projection } from '../models/config.ts';
import { KVCache, copyPositions, engineClosed, engineOpened, grownCapacity, kvBytes, type CacheShape } from './kv-cache.ts';
import { defaultThreads } from './threads.ts';
import { shown } from '../show.ts';
import { OnnxRuntimeError } from './errors.ts';

export interface StepInput {
  /** New tokens per cache row (rows may add different counts; 0 = idle this step). */
  tokens: number[][];
  /** Per-token adapter switch (1 = base + LoRA), same shape as tokens; default all 0. */
  adapterMask?: number[][];
  /** Which of the engine's adapters the switched-on tokens use (setAdapter's name; default '', the first). */
  adapterName?: string;
  /**
   * 'last' = logits of each row's last new token; a number k = of each row's last k new tokens (a row with fewer
   * repeats its first); 'all' = every new position (padded to T). Hidden states come at the same positions.
   */
  logits?: 'last' | 'all' | number;
}

export interface StepOutput {
  /** [rows, L, vocab] */
  logits: Float32Array;
  /** [rows, L, hidden] final-norm hidden states at the same positions. */
  hidden: Float32Array;
  /** [rows, L] log Σ exp(logits) per position. */
  lse: Float32Array;
  /** L: positions returned per row. */
  positions: number;
}

/** The most elements a Float32Array holds in Node (V8): a cache buffer's bound. */
const MAX_FLOATS = 2 ** 32;

/** LoRA weights per projection tensor name (e.g. model.layers.0.self_attn.q_proj), B already scaled by alpha/r. */
export type AdapterTensors = Map<string, { a: Float32Array; b: Float32Array; rank: number; in: number; out: number }>;

export interface EngineOptions { threads?: number }

/** One cache's step inside a stepMany call. */
export interface BatchEntry { cache: KVCache; input: StepInput }

/** Row `slot` of the batch mirror holds `owner`'s row `row`, as of the owner's `version`. */
interface MirrorSlot { owner: KVCache; row: number; version: number }

/**
 * stepMany's batch cache: rows gathered from several caches, kept between calls so a steady batch is not copied
 * again each step (only rows whose cache changed, or that joined, are copied in).
 */
interface Mirror {
  cache: KVCache; slots: (MirrorSlot | null)[];
  /** Consecutive runs whose rows needed under a quarter of its capacity (see stepBatched). */
  oversizedRuns: number;
}

/**
 * Positions that copies of one row would repeat (rows - 1 times its length) from which they share it as a prefix.
 * Below, the shared prefix's extra small ops (a product per KV head, transposes) cost more than each row reading
 * its own copy: side by side on 2 EPYC cores, the break-even was at 900–1,500 repeated positions on the 2.5M
 * default model (8 rows over 128 / 256 positions, 4 rows over 256 / 512) and 700–1,400 on the Qwen2.5-0.5B shape
 * (8 rows over 100 / 200); 8 rows forked from 1,000 tokens there attend 1.7× faster and hold 5× less cache
 * (`npm run bench -- attention`).
 */
export const SHARE_FROM = 1024;

/** Runs in a row a batch cache may be far too long before it is rebuilt small: a long row missing a run or two keeps it. */
const SHRINK_AFTER = 16;

export class Engine {
  /** The LoRA weights fed to the graph, by adapter name: several adapters share one session (and its weights). */
  private readonly adapterFeeds = new Map<string, Record<string, ort.Tensor>>();
  /** One batch mirror per adapter name (rows of different adapters run separately). */
  private readonly mirrors = new Map<string, Mirror>();
  private readonly loraInputs: string[];
  /** Whether the graph takes a shared prefix (older converted graphs do not: forks then copy the prompt per row). */
  private readonly sharesPrefix: boolean;

  private constructor(readonly config: ModelConfig, private readonly session: ort.InferenceSession) {
    this.loraInputs = session.inputNames.filter((n) => n.endsWith('.lora_A') || n.endsWith('.lora_B'));
    this.sharesPrefix = session.inputNames.includes('prefix_key.0');
    const missing = ['logits', 'logits_lse', 'hidden_states', 'new_key.0', 'new_value.0'].filter((n) => !session.outputNames.includes(n));
    if (missing.length) throw new Error(`engine: the graph has no ${missing.join(', ')} output: it was built for another inference-graph contract (an older edgereason?); build it again (edgereason convert, or load the source model)`);
    // The config sizes every feed and output buffer: one that disagrees with the graph would misread its outputs.
    const shape = (list: readonly ort.InferenceSession.ValueMetadata[], name: string) => {
      const m = list.find((v) => v.name === name);
      return m && m.isTensor ? m.shape : [];
    };
    const c = config, layers = session.inputNames.filter((n) => n.startsWith('past_key.')).length;
    const key = shape(session.inputMetadata, 'past_key.0');
    const checks: [string, number, unknown][] = [
      ['numLayers', c.numLayers, layers], ['vocabSize', c.vocabSize, shape(session.outputMetadata, 'logits')[2]],
      ['hiddenSize', c.hiddenSize, shape(session.outputMetadata, 'hidden_states')[2]], ['numKvHeads', c.numKvHeads, key[1]], ['headDim', c.headDim, key[3]],
    ];
    for (const [field, want, got] of checks) {
      if (typeof got === 'number' && got !== want) throw new Error(`engine: the model config says ${field} ${want}, but the graph has ${got}`);
    }
  }

  /** `model` is ModelProto bytes or the path of a .onnx file (its external data beside it). */
  static async create(config: ModelConfig, model: Uint8Array | string, opts: EngineOptions = {}): Promise<Engine> {
    const options: ort.InferenceSession.SessionOptions = {
      intraOpNumThreads: opts.threads ?? defaultThreads(), interOpNumThreads: 1,
      graphOptimizationLevel: 'all', executionMode: 'sequential',
      logSeverityLevel: 4, // onnxruntime's own log lines (warnings, and errors the caller gets thrown anyway) kept off the app's stderr
    };
    const session = typeof model === 'string' ? await ort.InferenceSession.create(model, options) : await ort.InferenceSession.create(model, options);
    try {
      const engine = new Engine(config, session);
      if (engine.loraInputs.length) engine.clearAdapter();
      engineOpened();
      return engine;
    } catch (e) {
      await session.release(); // a refused graph leaves no session behind
      throw e;
    }
  }

  get hasLora(): boolean { return this.loraInputs.length > 0; }

  newCache(rows: number, capacity = 64): KVCache {
    const floats = rows * this.config.numKvHeads * capacity * this.config.headDim, bytes = kvBytes(this.config, rows, capacity);
    if (!Number.isSafeInteger(rows) || rows < 1) throw new Error(`engine: a cache needs a whole number of rows ≥ 1, got ${shown(rows)}`);
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new Error(`engine: a cache needs a whole number of positions ≥ 1, got ${shown(capacity)}`);
    if (floats > MAX_FLOATS || bytes > os.totalmem()) {
      throw new Error(`engine: a cache of ${rows} rows needs ${(bytes / 2 ** 30).toFixed(1)} GiB for its first ${capacity} positions, more than ${floats > MAX_FLOATS ? `a Float32Array holds (${MAX_FLOATS} floats per layer)` : `this machine's ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB of memory`}: ask for fewer rows`);
    }
    return new KVCache(this.cacheShape, rows, capacity);
  }

  /** The shape of this model's KV caches. */
  get cacheShape(): CacheShape { return { layers: this.config.numLayers, kvHeads: this.config.numKvHeads, headDim: this.config.headDim }; }

  /**
   * A cache of the given rows of `cache` (backend.select). Copies of one row share it as a prefix once they would
   * repeat SHARE_FROM positions in all.
   */
  select(cache: KVCache, rows: number[], length?: number): KVCache {
    if (length !== undefined) return cache.head(rows, length);
    return cache.select(rows, this.sharesPrefix && (rows.length - 1) * (cache.lengths[rows[0]] ?? 0) >= SHARE_FROM);
  }

  /** Keeps the given rows of `cache` (backend.keep); a last row leaves its shared prefix, which would only make its prompts run in a copy. */
  keep(cache: KVCache, rows: number[]): void {
    cache.keep(rows);
    if (cache.rows === 1) cache.unshare();
  }

  /**
   * Sets the LoRA weights fed to the graph under `name` (steps choose one by StepInput.adapterName); projections
   * the adapter does not touch get rank-0 tensors. The graph must take LoRA inputs for every projection it has.
   */
  setAdapter(adapter: AdapterTensors, name = ''): void {
    if (!this.hasLora) throw new Error('engine: this model was built without LoRA inputs; load it with an adapter, or with loadModel\'s loraTargets (or convert it with --lora-targets) naming the projections adapters will use');
    const missing = [...adapter.keys()].find((proj) => !this.loraInputs.includes(`${proj}.lora_A`));
    if (missing) {
      const has = [...new Set(this.loraInputs.map((n) => /\.(\w+)_proj\.lora_[AB]$/.exec(n)?.[1]))].join(',');
      throw new Error(`engine: the adapter has LoRA weights for ${missing}, but this graph takes LoRA inputs only for ${has}: load the model with an adapter on the same projections (or convert it with --lora-targets covering them)`);
    }
    for (const [proj, t] of adapter) { // the graph's inputs take these sizes: another would fail every later run
      const [out, inp] = projectionShape(this.config, proj.replace(/^.*\./, '') as Projection);
      if (t.in !== inp || t.out !== out) throw new Error(`engine: the adapter's ${proj} is ${t.out} × ${t.in} (out × in), but this model's is ${out} × ${inp}: an adapter for another model?`);
    }
    const feeds: Record<string, ort.Tensor> = {};
    for (const input of this.loraInputs) {
      const proj = input.slice(0, -'.lora_A'.length), t = adapter.get(proj);
      const isA = input.endsWith('.lora_A');
      feeds[input] = t
        ? new ort.Tensor('float32', isA ? t.a : t.b, isA ? [t.rank, t.in] : [t.out, t.rank])
        : this.zeroRank(input, isA);
    }
    this.adapterFeeds.set(name, feeds);
    this.mirrors.delete(name); // its rows were computed with other weights
  }

  /** The default adapter ('') becomes none (rank 0); another name is removed. */
  clearAdapter(name = ''): void {
    if (name) this.adapterFeeds.delete(name);
    else this.adapterFeeds.set('', Object.fromEntries(this.loraInputs.map((n) => [n, this.zeroRank(n, n.endsWith('.lora_A'))])));
    this.mirrors.delete(name);
  }

  async step(cache: KVCache, input: StepInput): Promise<StepOutput> {
    const rows = cache.rows, counts = this.validate(cache, input);
    const T = Math.max(1, ...counts);
    // run() writes T rows for every row (padding included, beyond the row's length), so make room for all of them.
    cache.ensureCapacity(Math.max(...cache.lengths) + T);
    const L = input.logits === 'all' ? T : typeof input.logits === 'number' ? input.logits : 1;
    const fresh = cache.lengths.every((l) => l === 0);
    let out: StepOutput;
    if (T === 1 || (!cache.offset && (rows === 1 || fresh))) out = await this.run(cache, input, counts, T, L);
    else {
      // GroupQueryAttention takes several new tokens per row over a non-empty cache only at batch 1. Each row runs
      // with its own token count: padded to T, a row near the context would run past the RoPE tables.
      const V = this.config.vocabSize, Hd = this.config.hiddenSize;
      out = { logits: new Float32Array(rows * L * V), hidden: new Float32Array(rows * L * Hd), lse: new Float32Array(rows * L), positions: L };
      for (let b = 0; b < rows; b++) {
        if (!counts[b]) continue;
        const Lb = input.logits === 'all' ? counts[b] : L;
        const r = cache.offset && counts[b] > 1 ? await this.runUnshared(cache, input, b, counts[b], Lb) : await this.run(cache.view(b, 1), rowInput(input, b), [counts[b]], counts[b], Lb);
        out.logits.set(r.logits, b * L * V);
        out.hidden.set(r.hidden, b * L * Hd);
        out.lse.set(r.lse, b * L);
      }
    }
    counts.forEach((n, b) => cache.advance(b, n));
    return out;
  }

  /**
   * Steps several caches. Entries that add at most one token per row (decode steps) run as one session run per
   * adapter over their rows gathered into a batch cache; the new positions land there, and they are copied back into
   * each entry's own cache. Other entries (multi-token prefills, caches whose rows share a prefix, and decode steps
   * paddedFew leaves out: rows far longer than the others) run alone, first. Results are
   * the same as stepping each cache by itself. The batch cache persists between calls: a row is copied in
   * only when it joins or its cache changed since (KVCache.version).
   * An entry that fails gets its Error in place of a result and leaves its cache as it was; the others are
   * unaffected (when the batched run fails, its entries are stepped one by one).
   */
  async stepMany(entries: BatchEntry[]): Promise<(StepOutput | Error)[]> {
    const seen = new Set<KVCache>();
    for (const e of entries) {
      if (seen.has(e.cache)) throw new Error('engine: stepMany got the same cache twice');
      seen.add(e.cache);
    }
    const outs: (StepOutput | Error)[] = new Array(entries.length), alone: number[] = [];
    const settle = async (i: number) => {
      try { outs[i] = await this.step(entries[i].cache, entries[i].input); } catch (e) { outs[i] = asError(e); }
    };
    // Decode steps batch by adapter: rows of one session run share its LoRA weights.
    const batches = new Map<string, number[]>(), counts: number[][] = new Array(entries.length);
    entries.forEach((e, i) => {
      try { counts[i] = this.validate(e.cache, e.input); } catch (err) { outs[i] = asError(err); return; }
      // A cache whose rows share a prefix steps alone too: the batch cache would copy the prefix into every row.
      if (!e.input.tokens.every((t) => t.length <= 1) || e.cache.offset) return void alone.push(i);
      const name = e.input.adapterName ?? '', same = batches.get(name);
      if (same) same.push(i); else batches.set(name, [i]);
    });
    for (const [name, all] of batches) {
      const batch = paddedFew(all.map((i) => entries[i].cache.lengths)).map((k) => all[k]);
      alone.push(...all.filter((i) => !batch.includes(i)));
      batches.set(name, batch);
    }
    for (const i of alone) await settle(i);
    for (const [name, batch] of batches) {
      if (batch.length < 2) { if (batch.length) await settle(batch[0]); continue; }
      try {
        // One batched run at a time: a second stepMany in flight (two coalescers over one backend) would take the
        // rows of the run in progress for free slots and copy its own over them while that run reads them.
        const run = this.batchedRuns.then(() => this.stepBatched(batch.map((i) => entries[i]), batch.map((i) => counts[i]), name));
        this.batchedRuns = run.catch(() => {});
        const r = await run;
        batch.forEach((i, k) => { outs[i] = r[k]; });
      } catch {
        // The batch mirror may hold half-copied rows: drop it. A failed run advanced no cache, so each entry
        // steps alone once more, and only the one that fails again gets an error.
        this.mirrors.delete(name);
        for (const i of batch) await settle(i);
      }
    }
    return outs;
  }

  /** Drops `cache` from the batch mirror (it was freed); the mirror itself goes once no row is left in it. */
  forget(cache: KVCache): void {
    for (const [name, m] of this.mirrors) {
      m.slots = m.slots.map((s) => (s && s.owner !== cache ? s : null));
      if (m.slots.every((s) => !s)) this.mirrors.delete(name);
    }
  }

  /** The batched run in flight, which the next waits for (see stepMany). */
  private batchedRuns: Promise<unknown> = Promise.resolve();

  private async stepBatched(entries: BatchEntry[], counts: number[][], adapterName: string): Promise<StepOutput[]> {
    const want: MirrorSlot[] = entries.flatMap((e) => e.cache.lengths.map((_, row) => ({ owner: e.cache, row, version: e.cache.version })));
    const R = want.length, needed = Math.max(...want.map((w) => w.owner.lengths[w.row])) + 1;
    const shape = entries[0].cache.shape;
    let m = this.mirrors.get(adapterName);
    // A mirror far longer than the rows now need (a long request has left) is rebuilt small, with rows for those
    // now batched, once that has lasted SHRINK_AFTER runs: every step attends over its whole capacity, and it holds
    // the memory. (Row slots left unused cost memory only, not time: a batch that merely shrinks keeps them.)
    if (m) m.oversizedRuns = m.cache.capacity >= 4 * grownCapacity(64, needed) ? m.oversizedRuns + 1 : 0;
    const shrink = !!m && m.oversizedRuns >= SHRINK_AFTER;
    if (!m || shrink || m.cache.rows < R || m.cache.capacity < needed) {
      const rowCap = pow2(Math.max(R, shrink ? 1 : m?.cache.rows ?? 1)), capacity = grownCapacity(shrink ? 64 : m?.cache.capacity ?? 64, needed);
      m?.cache.release(); // no run reads it: batched runs go one at a time (stepMany)
      m = { cache: new KVCache(shape, rowCap, capacity), slots: [], oversizedRuns: 0 };
      this.mirrors.set(adapterName, m);
    }
    // Rows still valid where they sit stay; the others fill the free slots and are copied in.
    const index = new Map<KVCache, number[]>();
    want.forEach((w, i) => { const a = index.get(w.owner) ?? []; a[w.row] = i; index.set(w.owner, a); });
    const slotOf = new Array<number>(R).fill(-1), slots: (MirrorSlot | null)[] = new Array(R).fill(null);
    m.slots.forEach((s, i) => {
      if (!s || i >= R || s.owner.version !== s.version) return;
      const w = index.get(s.owner)?.[s.row];
      if (w !== undefined) { slotOf[w] = i; slots[i] = want[w]; }
    });
    let free = 0;
    want.forEach((w, i) => {
      if (slotOf[i] >= 0) return;
      while (slots[free]) free++;
      slotOf[i] = free; slots[free] = w;
      copyPositions(w.owner, w.row, m!.cache, free, 0, w.owner.lengths[w.row]);
    });
    const view = m.cache.view(0, R);
    view.lengths = slots.map((s) => s!.owner.lengths[s!.row]);
    const tokens: number[][] = new Array(R), mask: number[][] = new Array(R), slotCounts: number[] = new Array(R);
    let i = 0;
    entries.forEach((e, k) => e.input.tokens.forEach((t, row) => {
      const s = slotOf[i++];
      tokens[s] = t; slotCounts[s] = counts[k][row];
      mask[s] = e.input.adapterMask?.[row] ?? [];
    }));
    m.slots = slots;
    const out = await this.run(view, { tokens, adapterMask: mask, adapterName }, slotCounts, 1, 1);
    // Copy each row's new position back into its own cache; split logits / hidden states per entry.
    const V = this.config.vocabSize, Hd = this.config.hiddenSize, results: StepOutput[] = [];
    i = 0;
    entries.forEach((e, k) => {
      const c = e.cache, rows = c.rows;
      c.ensureCapacity(Math.max(...c.lengths) + 1);
      const at = slotOf.slice(i, i + rows);
      for (let row = 0; row < rows; row++) {
        const s = slotOf[i++], n = counts[k][row], len = c.lengths[row];
        copyPositions(view, s, c, row, len, len + n);
        c.advance(row, n);
      }
      // Rows in consecutive slots (always so for a one-row entry) read the run's outputs in place; others are gathered.
      const pick = (a: Float32Array, w: number) => at.every((s, r) => s === at[0] + r) ? a.subarray(at[0] * w, (at[0] + rows) * w) : gather(a, at, w);
      results.push({ logits: pick(out.logits, V), hidden: pick(out.hidden, Hd), lse: pick(out.lse, 1), positions: 1 });
    });
    for (const s of slots) if (s) s.version = s.owner.version;
    return results;
  }

  /** Validates a step's tokens against the cache and the context (throws); returns the new-token count per row. */
  validate(cache: KVCache, input: StepInput): number[] {
    if (!Array.isArray(input?.tokens) || !input.tokens.every(Array.isArray)) throw new Error(`engine: a step's tokens must be one list of token ids per cache row, got ${shown(input?.tokens)}`);
    const rows = cache.rows, counts = input.tokens.map((t) => t.length);
    if (input.tokens.length !== rows) throw new Error(`engine: step has ${input.tokens.length} token rows for a cache of ${rows} rows`);
    if (!rows) throw new Error('engine: the cache has no rows to step (every row was dropped)');
    for (const row of input.tokens) for (const id of row) {
      if (!isTokenId(id, this.config.vocabSize)) throw new Error(`engine: token id ${id} is outside the vocabulary (0..${this.config.vocabSize - 1})`);
    }
    if (typeof input.logits === 'number' && !(Number.isInteger(input.logits) && input.logits >= 1 && input.logits <= Math.max(...counts))) {
      throw new Error(`engine: logits must be 'last', 'all' or a count of last positions in 1..${Math.max(...counts)}, got ${input.logits}`);
    }
    const max = Math.max(...cache.lengths.map((l, b) => l + counts[b]));
    if (max > this.config.maxPositionEmbeddings) throw new Error(`engine: sequence length ${max} exceeds the model's context of ${this.config.maxPositionEmbeddings} tokens`);
    if (this.hasLora && !this.adapterFeeds.has(input.adapterName ?? '')) throw new Error(`engine: no adapter named ${JSON.stringify(input.adapterName)} is set (adapters: ${[...this.adapterFeeds.keys()].map((n) => JSON.stringify(n)).join(', ')})`);
    return counts;
  }

  /**
   * Several new tokens on row `b` of a cache with a shared prefix (the prompt path takes none): the row runs in a
   * copy that holds all its positions, and its new positions are copied back. (Rows with one token decode in place.)
   */
  private async runUnshared(cache: KVCache, input: StepInput, b: number, n: number, L: number): Promise<StepOutput> {
    const len = cache.lengths[b], row = this.newCache(1, grownCapacity(64, len + n));
    copyPositions(cache, b, row, 0, 0, len);
    row.lengths[0] = len;
    try {
      const out = await this.run(row, rowInput(input, b), [n], n, L);
      copyPositions(row, 0, cache, b, len, len + n);
      return out;
    } finally { row.release(); }
  }

  /** One session run over every row of `cache` (a view, KVCache.view, to run some rows of a larger one). */
  private async run(cache: KVCache, input: StepInput, counts: number[], T: number, L: number): Promise<StepOutput> {
    const B = cache.rows;
    const ids = new BigInt64Array(B * T), mask = new Float32Array(B * T), seqlens = new Int32Array(B), index = new BigInt64Array(B * L);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < counts[b]; t++) {
        ids[b * T + t] = BigInt(input.tokens[b][t]);
        mask[b * T + t] = input.adapterMask?.[b]?.[t] ?? 0;
      }
      // An idle row (no new tokens) at the end of the context would put its padding past the RoPE tables.
      seqlens[b] = counts[b] ? cache.lengths[b] + T - 1 : Math.min(cache.lengths[b] + T, this.config.maxPositionEmbeddings) - 1;
      for (let i = 0; i < L; i++) index[b * L + i] = BigInt(input.logits === 'all' ? i : Math.max(0, counts[b] - L + i));
    }
    const { kvHeads, headDim: D } = cache.shape, dims = [B, kvHeads, cache.capacity, D];
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [B, T]),
      seqlens_k: new ort.Tensor('int32', seqlens, [B]),
      total_sequence_length: new ort.Tensor('int32', Int32Array.of(Math.max(...seqlens) + 1), []),
      logits_index: new ort.Tensor('int64', index, [B, L]),
    };
    const fetches: Record<string, ort.Tensor | null> = { logits: null, hidden_states: null, logits_lse: null };
    for (let l = 0; l < this.config.numLayers; l++) {
      feeds[`past_key.${l}`] = new ort.Tensor('float32', cache.keys[l], dims);
      feeds[`past_value.${l}`] = new ort.Tensor('float32', cache.values[l], dims);
      fetches[`new_key.${l}`] = null; fetches[`new_value.${l}`] = null;
    }
    if (this.sharesPrefix) {
      const P = cache.offset, none = new Float32Array(0);
      for (let l = 0; l < this.config.numLayers; l++) {
        feeds[`prefix_key.${l}`] = new ort.Tensor('float32', cache.prefix?.keys[l] ?? none, [kvHeads, P, D]);
        feeds[`prefix_value.${l}`] = new ort.Tensor('float32', cache.prefix?.values[l] ?? none, [kvHeads, P, D]);
      }
    }
    if (this.hasLora) {
      Object.assign(feeds, this.adapterFeeds.get(input.adapterName ?? ''));
      feeds.adapter_mask = new ort.Tensor('float32', mask, [B, T]);
    }
    let out: ort.InferenceSession.ReturnType;
    try { out = await this.session.run(feeds, fetches); } catch (e) { throw new OnnxRuntimeError(`runtime: onnxruntime failed to run the model's graph on ${B} row${B === 1 ? '' : 's'} of ${T} token${T === 1 ? '' : 's'}: ${(e as Error).message}`, { cause: e }); }
    // Write the new rows [B, Hkv, T, D] into the cache at each row's positions lengths .. lengths + T - 1.
    const cap = cache.capacity;
    for (let l = 0; l < this.config.numLayers; l++) {
      for (const [dst, rows] of [[cache.keys[l], out[`new_key.${l}`].data], [cache.values[l], out[`new_value.${l}`].data]] as [Float32Array, Float32Array][]) {
        for (let b = 0; b < B; b++) {
          for (let h = 0; h < kvHeads; h++) {
            const src = (b * kvHeads + h) * T * D;
            dst.set(rows.subarray(src, src + T * D), ((b * kvHeads + h) * cap + cache.lengths[b] - cache.offset) * D);
          }
        }
      }
    }
    return { logits: out.logits.data as Float32Array, hidden: out.hidden_states.data as Float32Array, lse: out.logits_lse.data as Float32Array, positions: L };
  }

  async close(): Promise<void> {
    if (!this.closed) engineClosed();
    this.closed = true;
    this.adapterFeeds.clear(); // a closed model the caller still holds keeps no LoRA weights or batch mirrors
    this.mirrors.clear();
    await this.session.release();
  }
  private closed = false;

  private zeroRank(input: string, isA: boolean): ort.Tensor {
    const meta = this.session.inputMetadata.find((m) => m.name === input);
    const dims = meta && meta.isTensor ? meta.shape : [];
    const other = Number(isA ? dims[1] : dims[0]);
    return new ort.Tensor('float32', new Float32Array(0), isA ? [0, other] : [other, 0]);
  }
}

/** Rows `at` (each `w` floats) of `a`, in a new array. */
const gather = (a: Float32Array, at: number[], w: number): Float32Array => {
  const out = new Float32Array(at.length * w);
  at.forEach((s, r) => out.set(a.subarray(s * w, (s + 1) * w), r * w));
  return out;
};

/** Row `b` of a step's input, as a one-row step's. */
const rowInput = (input: StepInput, b: number): StepInput => ({ ...input, tokens: [input.tokens[b]], adapterMask: input.adapterMask && [input.adapterMask[b]] });

const asError = (e: unknown): Error => (e instanceof Error ? e : new Error(String(e)));

const pow2 = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/**
 * Which of several caches' decode steps (their rows' lengths) to batch: the batch cache holds a power of two of rows,
 * each as long as the longest, and every batched step reads all of it. A row far longer than the others (a long
 * request among short ones) would make that many times the work and memory of the rows themselves, so the caches
 * taken, shortest first, are the most whose padded positions stay within twice their own, plus PAD_FREE a row (short
 * rows cost little to pad: the weights, read once for all rows, dominate). The others step alone. Indices, ascending.
 */
export function paddedFew(lengths: readonly (readonly number[])[]): number[] {
  const order = lengths.map((l, i) => ({ i, rows: l.length, longest: Math.max(0, ...l) + 1, own: l.reduce((a, b) => a + b + 1, 0) })).sort((a, b) => a.longest - b.longest);
  let rows = 0, own = 0, take = 0;
  order.forEach((c, k) => {
    rows += c.rows; own += c.own;
    if (pow2(rows) * c.longest <= 2 * own + pow2(rows) * PAD_FREE) take = k + 1;
  });
  return order.slice(0, take).map((c) => c.i).sort((a, b) => a - b);
}
const PAD_FREE = 1024;
