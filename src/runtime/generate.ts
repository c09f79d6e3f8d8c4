/**
 * Batched decoding: B sequences (different prompts and lengths, or N samples forked from one prompt)
 * advance together, one engine step per token; a finished sequence leaves the batch.
 */
import type { TextTokenizer } from '../tokenizer/types.ts';
import { StreamDecoder } from '../tokenizer/stream.ts';
import type { Backend, CacheHandle } from './backend.ts';
import { seededRandom, type SamplingParams } from './sampler.ts';

export interface GenerateOptions extends SamplingParams {
  maxTokens?: number;
  seed?: number;
  /** Generation ends when the text contains one of these (the stop string is not returned). */
  stop?: string[];
  /** Token ids that end generation (default: the model's EOS ids). */
  stopTokens?: number[];
  /** Run with the LoRA adapter switched on (per-token adapter mask = 1) ... */
  adapter?: boolean;
  /** ... from this prompt position on (activated LoRA: the invocation tokens' position); default 0. */
  adapterFrom?: number;
}

export type FinishReason = 'stop' | 'length';

export interface Completion {
  text: string;
  tokens: number[];
  logprobs: number[];
  finishReason: FinishReason;
  promptTokens: number;
  /** Milliseconds from start to the first generated token, and to the end. */
  ttftMs: number;
  totalMs: number;
}

/** One sequence in a running batch: its sampling state, stop handling and streamed text. */
export class Sequence {
  readonly tokens: number[] = [];
  readonly logprobs: number[] = [];
  text = '';
  finishReason?: FinishReason;
  ttftMs = 0;
  private emitted = 0;
  private readonly random: () => number;
  private readonly decoder: StreamDecoder;
  private readonly stopTokens: Set<number>;

  constructor(tokenizer: TextTokenizer, readonly opts: GenerateOptions, readonly promptTokens: number, private readonly onText?: (piece: string) => void) {
    this.random = seededRandom(opts.seed ?? 0);
    this.decoder = new StreamDecoder(tokenizer, { skipSpecialTokens: true });
    this.stopTokens = new Set(opts.stopTokens ?? tokenizer.eosTokenIds);
  }

  get done(): boolean { return this.finishReason !== undefined; }

  /** Adapter mask for the next `count` tokens fed, starting at absolute position `from`. */
  adapterMask(from: number, count: number): number[] {
    const on = this.opts.adapter ? this.opts.adapterFrom ?? 0 : Infinity;
    return Array.from({ length: count }, (_, i) => (from + i >= on ? 1 : 0));
  }

  /** Parameters (with this sequence's next random draw) for the engine's sampler. */
  sampling(): SamplingParams & { u: number } {
    const { temperature, topK, topP, minP } = this.opts;
    return { temperature, topK, topP, minP, u: this.random() };
  }

  /** Accepts a sampled token; returns true when the sequence has finished. */
  accept(token: number, logprob: number): boolean {
    if (this.stopTokens.has(token)) return this.finish('stop');
    this.tokens.push(token);
    this.logprobs.push(logprob);
    this.text += this.decoder.push(token);
    const stop = this.opts.stop?.map((s) => [s, this.text.indexOf(s)] as const).filter(([, i]) => i >= 0).sort((a, b) => a[1] - b[1])[0];
    if (stop) { this.text = this.text.slice(0, stop[1]); return this.finish('stop'); }
    if (this.tokens.length >= (this.opts.maxTokens ?? 256)) { this.text += this.decoder.flush(); return this.finish('length'); }
    this.emit(false);
    return false;
  }

  private finish(reason: FinishReason): boolean {
    this.finishReason = reason;
    this.emit(true);
    return true;
  }

  /** Streams text that can no longer turn into a stop string. */
  private emit(final: boolean): void {
    let safe = this.text.length;
    if (!final) {
      for (const s of this.opts.stop ?? []) {
        for (let k = Math.min(s.length - 1, this.text.length); k > 0; k--) {
          if (this.text.endsWith(s.slice(0, k))) { safe = Math.min(safe, this.text.length - k); break; }
        }
      }
    }
    if (safe > this.emitted) { this.onText?.(this.text.slice(this.emitted, safe)); this.emitted = safe; }
  }
}

/**
 * Decodes all sequences to completion. `cache` already holds each row's prompt except its last token,
 * `lastTokens[b]`, which the first step feeds (so prefill can be shared, forked or skipped by the caller).
 * `adapterMask` is the per-row switch for the generated tokens.
 */
export async function decode(backend: Backend, cache: CacheHandle, seqs: Sequence[], pending: number[][], start = performance.now()): Promise<void> {
  let rows = seqs.map((_, i) => i);
  let feed = pending;
  const pos = await backend.lengths(cache); // next absolute position of each row
  while (rows.length) {
    const live = rows.map((r) => seqs[r]);
    const res = await backend.step(cache, {
      tokens: feed,
      adapterMask: live.map((s, i) => s.adapterMask(pos[rows[i]], feed[i].length)),
      sample: live.map((s) => s.sampling()),
    });
    rows.forEach((r, i) => { pos[r] += feed[i].length; });
    const next: number[][] = [], still: number[] = [];
    live.forEach((s, i) => {
      if (!s.tokens.length && !s.done) s.ttftMs = performance.now() - start;
      if (!s.accept(res.tokens![i], res.logprobs![i])) { still.push(i); next.push([res.tokens![i]]); }
    });
    if (still.length < rows.length && still.length) await backend.keep(cache, still);
    rows = still.map((i) => rows[i]);
    feed = next;
  }
}

/** Prefills each prompt in one batched step and decodes them together. */
export async function generateBatch(backend: Backend, tokenizer: TextTokenizer, prompts: number[][], opts: GenerateOptions[], onText?: (row: number, piece: string) => void): Promise<Completion[]> {
  const start = performance.now();
  prompts.forEach((p, i) => { if (!p.length) throw new Error(`generate: prompt ${i} is empty (no tokens)`); });
  const ctx = backend.config.maxPositionEmbeddings;
  prompts.forEach((p, i) => {
    if (p.length >= ctx) throw new Error(`generate: prompt ${i} has ${p.length} tokens, more than the model's context of ${ctx} tokens allows`);
    opts[i] = { ...opts[i], maxTokens: Math.min(opts[i].maxTokens ?? 256, ctx - p.length) };
  });
  const seqs = prompts.map((p, i) => new Sequence(tokenizer, opts[i], p.length, onText && ((piece) => onText(i, piece))));
  const cache = await backend.newCache(prompts.length);
  try {
    await decode(backend, cache, seqs, prompts, start);
  } finally {
    await backend.free(cache);
  }
  const end = performance.now();
  return seqs.map((s) => ({
    text: s.text, tokens: s.tokens, logprobs: s.logprobs, finishReason: s.finishReason!,
    promptTokens: s.promptTokens, ttftMs: s.ttftMs, totalMs: end - start,
  }));
}
