/**
 * llama.cpp (through node-llama-cpp's prebuilt CPU binaries) as a reference implementation: token ids in,
 * greedy tokens / next-token distributions / timings out. Tokenization is separate: openLlamaCppVocab loads a
 * GGUF's vocabulary alone, to check the tokenizer rebuilt from its metadata.
 *
 * Greedy is node-llama-cpp's `temperature: 0` path, which builds a sampler chain of llama.cpp's greedy
 * sampler alone (no top-k/top-p/min-p, no repeat penalty unless asked for, no token bias, no grammar), so
 * it is the argmax of the raw logits (the first maximum on a tie). Probabilities come from the same
 * sampler: the softmax of the raw logits over the whole vocabulary.
 *
 * By default the oracle is set up for accuracy (KV cache in F32, no flash attention: llama.cpp's defaults
 * store K/V in F16); pass `kvType: 'F16', flashAttention: 'auto'` to time llama.cpp as it ships.
 */
import { openGguf, writeModelGguf, type GgufTyped, type GgufValue } from '../../src/io/gguf.ts';
import { MemoryWeights } from '../../src/io/weights.ts';
import { QWEN25_05B } from '../helpers/random-model.ts';
import { getLlama, LlamaLogLevel, type Llama, type LlamaContext, type LlamaContextSequence, type LlamaModel, type Token } from 'node-llama-cpp';

export interface LlamaCppOptions {
  threads?: number;
  /** Tokens per sequence (default 1024). */
  contextSize?: number;
  /** Parallel sequences in the context (for batched decoding); default 1. */
  sequences?: number;
  /** Tokens per llama_decode call (default: node-llama-cpp's, min(contextSize × sequences, 512)). */
  batchSize?: number;
  /** KV cache element type (default F32, for comparisons). */
  kvType?: 'F32' | 'F16';
  /** Default false (exact attention in F32). */
  flashAttention?: boolean | 'auto';
}

export interface DecodeTiming {
  tokens: number[];
  /** Prompt evaluation up to and including the first generated token. */
  prefillMs: number;
  /** The remaining tokens.length - 1 decode steps. */
  decodeMs: number;
  /** When each token arrived, in ms from the call. */
  times: number[];
}

export interface LlamaCpp {
  readonly vocabSize: number;
  readonly llama: Llama;
  readonly model: LlamaModel;
  readonly context: LlamaContext;
  /** Greedy continuation of `promptIds`: exactly n new tokens (end-of-generation tokens included, not stopping). */
  greedy(promptIds: number[], n: number): Promise<number[]>;
  /** Same, with the time spent on the prompt and on the decode steps. */
  greedyTimed(promptIds: number[], n: number): Promise<DecodeTiming>;
  /** B greedy continuations decoded concurrently, one sequence each (node-llama-cpp batches them into shared llama_decode calls). Needs `sequences` ≥ B. */
  greedyBatchTimed(prompts: number[][], n: number): Promise<{ tokens: number[][]; prefillMs: number; decodeMs: number; times: number[][] }>;
  /** The next-token distribution after `prefixIds`, indexed by token id (length vocabSize). */
  nextTokenProbs(prefixIds: number[]): Promise<Float32Array>;
  /** Teacher-forced: for every i, the argmax next token after ids[0..i] (one pass over ids). */
  argmaxAll(ids: number[]): Promise<number[]>;
  /** Teacher-forced distributions after ids[0..i] for each i in `positions` (default: every position). */
  probsAt(ids: number[], positions?: number[]): Promise<Map<number, Float32Array>>;
  /** Evaluates `ids` as a prompt (no sampling); returns milliseconds. */
  prefill(ids: number[]): Promise<number>;
  dispose(): Promise<void>;
}

let shared: Promise<Llama> | undefined;
/** One Llama instance per process (loading the binding is the slow part); CPU only, never builds from source. */
function llamaInstance(): Promise<Llama> {
  shared ??= getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, progressLogs: false });
  return shared;
}

export async function openLlamaCpp(ggufPath: string, opts: LlamaCppOptions = {}): Promise<LlamaCpp> {
  const threads = opts.threads ?? 2, sequences = opts.sequences ?? 1;
  const llama = await llamaInstance();
  const model = await llama.loadModel({ modelPath: ggufPath, gpuLayers: 0 });
  const kv = opts.kvType ?? 'F32';
  const context = await model.createContext({
    contextSize: opts.contextSize ?? 1024, sequences, threads, batchSize: opts.batchSize,
    flashAttention: opts.flashAttention ?? false, experimentalKvCacheKeyType: kv, experimentalKvCacheValueType: kv,
    ignoreMemorySafetyChecks: true,
  });
  const seqs: LlamaContextSequence[] = Array.from({ length: sequences }, () => context.getSequence());
  const seq = seqs[0];
  const vocabSize = openGguf(ggufPath).shape('token_embd.weight')[0];
  const asTokens = (ids: number[]) => ids as unknown as Token[];
  const toArray = (m: Map<Token, number>) => {
    const p = new Float32Array(vocabSize);
    for (const [t, v] of m) p[t as unknown as number] = v;
    return p;
  };

  /** Greedy on one sequence; pushes the arrival time of each token onto `times`. */
  async function greedyOn(s: LlamaContextSequence, promptIds: number[], n: number, times: number[]): Promise<number[]> {
    await s.clearHistory();
    const out: number[] = [];
    if (n <= 0) return out;
    if (!promptIds.length) throw new Error('llamacpp: greedy needs a non-empty prompt');
    for await (const t of s.evaluate(asTokens(promptIds), { temperature: 0, yieldEogToken: true })) {
      times.push(performance.now());
      out.push(t as unknown as number);
      if (out.length >= n) break;
    }
    return out;
  }

  async function greedyTimed(promptIds: number[], n: number): Promise<DecodeTiming> {
    const t0 = performance.now(), times: number[] = [];
    const tokens = await greedyOn(seq, promptIds, n, times);
    const end = times.at(-1) ?? t0, first = times[0] ?? t0;
    return { tokens, prefillMs: first - t0, decodeMs: end - first, times: times.map((t) => t - t0) };
  }

  async function probsAt(ids: number[], positions?: number[]): Promise<Map<number, Float32Array>> {
    const want = new Set(positions ?? ids.map((_, i) => i));
    await seq.clearHistory();
    const res = await seq.controlledEvaluate(ids.map((t, i) => want.has(i) ? [t as unknown as Token, { generateNext: { probabilities: true } }] : t as unknown as Token));
    const out = new Map<number, Float32Array>();
    for (const i of want) {
      const p = res[i]?.next.probabilities;
      if (!p) throw new Error(`llamacpp: no probabilities at position ${i}`);
      out.set(i, toArray(p));
    }
    return out;
  }

  return {
    vocabSize, llama, model, context,
    async greedy(promptIds, n) { return (await greedyTimed(promptIds, n)).tokens; },
    greedyTimed,
    async greedyBatchTimed(prompts, n) {
      if (prompts.length > seqs.length) throw new Error(`llamacpp: ${prompts.length} prompts but the context has ${seqs.length} sequences`);
      const t0 = performance.now(), times = prompts.map((): number[] => []);
      const tokens = await Promise.all(prompts.map((p, i) => greedyOn(seqs[i], p, n, times[i])));
      const first = Math.max(...times.map((t) => t[0] ?? t0)), end = Math.max(...times.map((t) => t.at(-1) ?? t0));
      return { tokens, prefillMs: first - t0, decodeMs: end - first, times: times.map((ts) => ts.map((t) => t - t0)) };
    },
    async nextTokenProbs(prefixIds) {
      return (await probsAt(prefixIds, [prefixIds.length - 1])).get(prefixIds.length - 1)!;
    },
    async argmaxAll(ids) {
      await seq.clearHistory();
      const res = await seq.controlledEvaluate(ids.map((t) => [t as unknown as Token, { generateNext: { token: true } }]));
      return ids.map((_, i) => {
        const t = res[i]?.next.token;
        if (t == null) throw new Error(`llamacpp: no next token at position ${i}`);
        return t as unknown as number;
      });
    },
    probsAt,
    async prefill(ids) {
      await seq.clearHistory();
      const t0 = performance.now();
      await seq.evaluateWithoutGeneratingNewTokens(asTokens(ids));
      return performance.now() - t0;
    },
    async dispose() {
      await context.dispose();
      await model.dispose();
    },
  };
}

/** llama.cpp's tokenizer alone. `tokenize` parses special tokens written in the text (as Hugging Face tokenizers do) and adds none. */
export interface LlamaCppVocab {
  tokenize(text: string): number[];
  /** The text with its control tokens as characters (llama.cpp's parse_special false; user-defined tokens still matched). */
  tokenizeText(text: string): number[];
  /** Whether llama.cpp starts an encoding with BOS (add_bos_token, or its default for the pre-tokenizer). */
  readonly addsBos: boolean;
  dispose(): Promise<void>;
}

/**
 * Writes `tokenizer` (GGUF tokenizer.* metadata) into a one-layer, hidden-size-8 model of zeros at `file`
 * (llama.cpp asserts a layer and its tensors even for a vocabulary-only load) and loads its vocabulary.
 */
export async function openLlamaCppVocab(file: string, tokenizer: Record<string, GgufValue | GgufTyped>, architecture: 'qwen2' | 'llama' = 'qwen2'): Promise<LlamaCppVocab> {
  const tokens = tokenizer['tokenizer.ggml.tokens'] as string[], h = 8;
  const config = { ...QWEN25_05B, architecture, vocabSize: tokens.length, hiddenSize: h, intermediateSize: h, numLayers: 1, numHeads: 1, numKvHeads: 1, headDim: h, tieWordEmbeddings: true, attentionBias: architecture === 'qwen2' };
  const w = new Map<string, { shape: number[]; data: Float32Array }>();
  const zeros = (name: string, shape: number[]) => w.set(name, { shape, data: new Float32Array(shape.reduce((a, b) => a * b)) });
  zeros('model.embed_tokens.weight', [tokens.length, h]);
  zeros('model.norm.weight', [h]);
  for (const n of ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj']) zeros(`model.layers.0.${n}.weight`, [h, h]);
  for (const n of ['input_layernorm.weight', 'post_attention_layernorm.weight', 'self_attn.q_proj.bias', 'self_attn.k_proj.bias', 'self_attn.v_proj.bias']) zeros(`model.layers.0.${n}`, [h]);
  writeModelGguf(file, config, new MemoryWeights(w), { metadata: tokenizer });
  const model = await (await llamaInstance()).loadModel({ modelPath: file, vocabOnly: true, gpuLayers: 0 });
  return {
    tokenize: (text) => [...model.tokenize(text, true)] as unknown as number[],
    tokenizeText: (text) => [...model.tokenize(text, false)] as unknown as number[],
    addsBos: model.tokens.shouldPrependBosToken,
    dispose: () => model.dispose(),
  };
}
