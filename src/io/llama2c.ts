/**
 * Loader for Andrej Karpathy's llama2.c checkpoints (legacy version-0 `.bin` export) and their
 * `tok*.bin` tokenizers, converted to Hugging Face tensor names and a Hugging Face tokenizer.json.
 *
 * Generation matching llama2.c's run.c: start from BOS (id 1), stop early if the model emits BOS again,
 * and `tokenizer.decode(generatedIdsWithoutBos)` (or `decode([1, ...ids], { skipSpecialTokens: true })`)
 * gives run.c's printed text: the Strip decoder drops the first token's leading space as run.c does after BOS.
 * `tokenizer.encode(prompt)` prepends BOS as run.c does; an empty prompt encodes to just [1].
 */
import { closeSync, openSync, readSync, readdirSync, statSync } from 'node:fs';
import { readInputFile } from './jsonl.ts';
import path from 'node:path';
import { checkModelConfig, PROJECTIONS, projectionShape, projectionTensorName, type ModelConfig, type Projection } from '../models/config.ts';
import { MemoryWeights } from './weights.ts';
import { finiteWeights } from './safetensors.ts';
import { permuteQK } from './gguf.ts';
import { besideTemplate, loadTokenizer, type HfTokenizer } from '../tokenizer/hf.ts';

const HEADER_BYTES = 7 * 4;
/** The largest file Node reads whole (2 GiB − 1). */
const MAX_READ = 2 ** 31 - 1;

/** A llama2.c model and its tokenizer: the tok*.bin read (`tokenizerPath`) and the tokenizer files made of it. */
export function loadLlama2c(modelPath: string, tokenizerPath?: string): {
  config: ModelConfig; weights: MemoryWeights; tokenizer: HfTokenizer; tokenizerPath: string;
  tokenizerFiles: { tokenizerJson: Llama2cTokenizerJson; tokenizerConfig: Record<string, unknown>; chatTemplate?: string; chatTemplateFile?: string };
} {
  const { config, weights } = readLlama2cModel(modelPath);
  tokenizerPath ??= findLlama2cTokenizer(modelPath, config.vocabSize);
  const tokenizerJson = llama2cTokenizerJson(tokenizerPath);
  const n = Object.keys(tokenizerJson.model.vocab).length;
  if (n !== config.vocabSize) throw new Error(`llama2c: ${tokenizerPath} has ${n} tokens but ${modelPath} has vocab_size ${config.vocabSize}`);
  const tokenizerFiles = { tokenizerJson, tokenizerConfig: { bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', clean_up_tokenization_spaces: false }, ...besideTemplate(modelPath) };
  const tokenizer = loadTokenizer({ ...tokenizerFiles, name: tokenizerPath }, { bosTokenId: config.bosTokenId, eosTokenIds: config.eosTokenIds });
  return { config, weights, tokenizer, tokenizerPath, tokenizerFiles };
}

/**
 * The tok*.bin beside a llama2.c model whose token count is the model's vocabulary size (llama2.c folders often
 * hold several: tokenizer.bin, tok512.bin, ...); without `vocabSize` (read from the model's header when absent), the first.
 */
export function findLlama2cTokenizer(modelPath: string, vocabSize = llama2cVocabSize(modelPath)): string {
  const dir = path.dirname(modelPath);
  const found = readdirSync(dir).filter((f) => /^tok.*\.bin$/.test(f)).sort();
  if (!found.length) throw new Error(`llama2c: no tok*.bin tokenizer next to ${modelPath}: put the model's tokenizer file (llama2.c's tokenizer.bin, or the tok<N>.bin it was trained with) in that folder`);
  if (found.length === 1) return path.join(dir, found[0]);
  const counts = found.map((f) => tokenCount(path.join(dir, f)));
  const i = counts.indexOf(vocabSize);
  if (i < 0) throw new Error(`llama2c: none of the tokenizers next to ${modelPath} (${found.map((f, k) => `${f}: ${counts[k] < 0 ? 'unreadable' : `${counts[k]} tokens`}`).join(', ')}) has its vocab_size, ${vocabSize}`);
  return path.join(dir, found[i]);
}

/** Tokens in a llama2.c tokenizer file (-1 when it is not one, or cannot be read: a folder of that name, say). */
function tokenCount(file: string): number {
  let buf: Buffer;
  try { buf = readInputFile(file, 'a llama2.c tokenizer', 'llama2c: '); } catch { return -1; }
  let n = 0, off = 4;
  for (; off + 8 <= buf.length; n++) off += 8 + Math.max(0, buf.readInt32LE(off + 4));
  return off === buf.length ? n : -1;
}

/** The vocabulary size in a llama2.c checkpoint's header (negative there when the classifier is not shared). */
function llama2cVocabSize(file: string): number {
  const fd = openSync(file, 'r'), h = Buffer.alloc(HEADER_BYTES);
  try { readSync(fd, h, 0, HEADER_BYTES, 0); } finally { closeSync(fd); }
  return Math.abs(h.readInt32LE(20));
}

/** Reads a llama2.c checkpoint: 7 int32 header fields, then float32 tensors in run.c's order. */
export function readLlama2cModel(file: string): { config: ModelConfig; weights: MemoryWeights } {
  const size = statSync(file).size;
  if (size > MAX_READ) throw new Error(`llama2c: ${file} is ${(size / 2 ** 30).toFixed(1)} GiB; llama2.c checkpoints over 2 GiB are not supported (load the model's Hugging Face folder or a GGUF instead)`);
  const buf = readInputFile(file, 'a llama2.c checkpoint', 'llama2c: ');
  if (buf.length < HEADER_BYTES) throw new Error(`llama2c: ${file} is too small (${buf.length} bytes) for a llama2.c header`);
  const h = new DataView(buf.buffer, buf.byteOffset, HEADER_BYTES);
  if (h.getUint32(0, true) === 0x616b3432) throw new Error(`llama2c: ${file} is a version-1/2 export (magic "ak42"); only the legacy version-0 format is supported`);
  const [dim, hidden, layers, heads, kvHeads, rawVocab, seqLen] = Array.from({ length: 7 }, (_, i) => h.getInt32(i * 4, true));
  const vocab = Math.abs(rawVocab), shared = rawVocab > 0; // run.c: negative vocab_size => separate classifier
  const headDim = dim / heads, kvDim = kvHeads * headDim;
  const header = `dim=${dim} hidden_dim=${hidden} n_layers=${layers} n_heads=${heads} n_kv_heads=${kvHeads} vocab_size=${rawVocab} seq_len=${seqLen}`;
  const named = { dim, hidden_dim: hidden, n_layers: layers, n_heads: heads, n_kv_heads: kvHeads, vocab_size: vocab, seq_len: seqLen };
  const zero = Object.entries(named).find(([, v]) => v <= 0);
  const why = zero ? `${zero[0]} ${zero[1]} is not positive`
    : !Number.isInteger(headDim) ? `n_heads ${heads} does not divide dim ${dim}`
    : headDim % 2 ? `the head size dim / n_heads = ${headDim} is odd (RoPE rotates pairs)`
    : heads % kvHeads ? `n_kv_heads ${kvHeads} does not divide n_heads ${heads}` : undefined;
  if (why) throw new Error(`llama2c: ${file} has an invalid header: ${why} (${header})`);
  const config: ModelConfig = {
    architecture: 'llama', vocabSize: vocab, hiddenSize: dim, intermediateSize: hidden, numLayers: layers,
    numHeads: heads, numKvHeads: kvHeads, headDim, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: seqLen,
    tieWordEmbeddings: shared, attentionBias: false, bosTokenId: 1, eosTokenIds: [2, 1], // run.c stops where BOS comes back: the next story
  };
  // The header's fields by run.c's names (the others are fixed: its BOS and EOS are checked against vocab_size first).
  const fields: Partial<Record<keyof ModelConfig, string>> = {
    vocabSize: 'vocab_size', hiddenSize: 'dim', intermediateSize: 'hidden_dim', numLayers: 'n_layers', numHeads: 'n_heads', numKvHeads: 'n_kv_heads',
    headDim: 'dim / n_heads', maxPositionEmbeddings: 'seq_len',
  };
  if (vocab < 3) throw new Error(`llama2c: ${file}: header field vocab_size ${rawVocab} leaves no room for run.c's BOS (1) and EOS (2) tokens`);
  checkModelConfig(config, `llama2c: ${file}:`, (k) => `header field ${fields[k] ?? k}`);
  // run.c's order; each per-layer tensor is stored for all layers back to back. freq_cis is skipped (RoPE is recomputed).
  const sizes = {
    embed: vocab * dim, rmsAtt: layers * dim, wq: layers * dim * dim, wk: layers * dim * kvDim, wv: layers * dim * kvDim,
    wo: layers * dim * dim, rmsFfn: layers * dim, w1: layers * hidden * dim, w2: layers * dim * hidden, w3: layers * hidden * dim,
    rmsFinal: dim, freqCis: seqLen * headDim, wcls: shared ? 0 : vocab * dim,
  };
  const expected = HEADER_BYTES + 4 * Object.values(sizes).reduce((a, b) => a + b, 0);
  if (buf.length !== expected) throw new Error(`llama2c: ${file} should be ${expected} bytes for its header (${header}) but is ${buf.length} bytes`);

  // One aligned float32 view over the payload (copied only if Node handed us an unaligned buffer).
  const aligned = (buf.byteOffset + HEADER_BYTES) % 4 === 0 ? buf : Buffer.from(buf);
  const f32 = new Float32Array(aligned.buffer, aligned.byteOffset + HEADER_BYTES, (buf.length - HEADER_BYTES) / 4);
  let off = 0;
  const next = (n: number) => f32.subarray(off, (off += n));
  const t = Object.fromEntries(Object.entries(sizes).map(([k, n]) => [k, next(n)])) as Record<keyof typeof sizes, Float32Array>;
  // Refused as the safetensors and GGUF readers refuse them, under run.c's names (freq_cis is not read).
  const runc: Record<string, string> = { embed: 'token_embedding_table', rmsAtt: 'rms_att_weight', rmsFfn: 'rms_ffn_weight', rmsFinal: 'rms_final_weight' };
  for (const [k, x] of Object.entries(t)) if (k !== 'freqCis') finiteWeights(x, `llama2c: ${file}: ${runc[k] ?? k}`);

  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  tensors.set('model.embed_tokens.weight', { shape: [vocab, dim], data: t.embed });
  const src: Record<Projection, Float32Array> = { q_proj: t.wq, k_proj: t.wk, v_proj: t.wv, o_proj: t.wo, gate_proj: t.w1, up_proj: t.w3, down_proj: t.w2 };
  for (let l = 0; l < layers; l++) {
    tensors.set(`model.layers.${l}.input_layernorm.weight`, { shape: [dim], data: t.rmsAtt.subarray(l * dim, (l + 1) * dim) });
    tensors.set(`model.layers.${l}.post_attention_layernorm.weight`, { shape: [dim], data: t.rmsFfn.subarray(l * dim, (l + 1) * dim) });
    for (const p of PROJECTIONS) {
      const shape = projectionShape(config, p), n = shape[0] * shape[1];
      let data = src[p].subarray(l * n, (l + 1) * n); // run.c matmul(W[d,n]) is already PyTorch's [out, in]
      // run.c rotates interleaved pairs (2i, 2i+1) of each head, Hugging Face's rotate_half pairs (i, i + headDim/2):
      // each head's rows reordered to evens-then-odds (convert_llama_weights_to_hf.py's permute()), as a GGUF's are.
      if (p === 'q_proj' || p === 'k_proj') data = permuteQK(data, shape[0], shape[0] / headDim, false);
      tensors.set(`${projectionTensorName(l, p)}.weight`, { shape, data });
    }
  }
  tensors.set('model.norm.weight', { shape: [dim], data: t.rmsFinal });
  if (!shared) tensors.set('lm_head.weight', { shape: [vocab, dim], data: t.wcls });
  return { config, weights: new MemoryWeights(tensors) };
}

/** A Hugging Face tokenizer.json (Llama/sentencepiece-style BPE) built from a llama2.c tok*.bin. */
export interface Llama2cTokenizerJson { model: { vocab: Record<string, number>; merges: [string, string][]; [k: string]: unknown }; [k: string]: unknown }

/** The longest tokenizer piece read (in bytes), whatever the file's header says. */
const MAX_PIECE_BYTES = 1024;

/**
 * Converts llama2.c's tokenizer (int32 max_token_length; per token: float32 score, int32 length, UTF-8 bytes).
 * llama2.c's export wrote sentencepiece's "▁" as a plain space and BOS/EOS as "\n<s>\n"/"\n</s>\n"; both are undone here.
 */
export function llama2cTokenizerJson(file: string): Llama2cTokenizerJson {
  const buf = readInputFile(file, 'a llama2.c tokenizer', 'llama2c: ');
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const pieces: string[] = [], scores: number[] = [];
  if (buf.length < 4) throw new Error(`llama2c: ${file} is not a llama2.c tokenizer (${buf.length ? `${buf.length} bytes` : 'it is empty'}: too short for its header)`);
  const maxLen = dv.getInt32(0, true);
  if (maxLen < 1) throw new Error(`llama2c: ${file} is not a llama2.c tokenizer (its max_token_length is ${maxLen})`);
  for (let off = 4; off < buf.length;) {
    const len = off + 8 <= buf.length ? dv.getInt32(off + 4, true) : -1;
    if (len < 0 || off + 8 + len > buf.length) throw new Error(`llama2c: ${file} is truncated or not a llama2.c tokenizer (token ${pieces.length} at byte ${off})`);
    // The header's bound (run.c sizes its buffers by it), and ours: a piece costs time quadratic in its length when
    // the merges are derived (20 KB: 8 s). llama2.c's tokenizers hold pieces of a few dozen bytes.
    if (len > Math.min(maxLen, MAX_PIECE_BYTES)) throw new Error(`llama2c: ${file} token ${pieces.length} is ${len} bytes long, more than ${len > maxLen ? `the file's max_token_length ${maxLen}` : `${MAX_PIECE_BYTES}, the longest piece edgereason reads`}: the file is corrupt`);
    scores.push(dv.getFloat32(off, true));
    pieces.push(buf.toString('utf8', off + 8, off + 8 + len).replaceAll(' ', '▁'));
    off += 8 + len;
  }
  if (pieces.length < 3) throw new Error(`llama2c: ${file} holds ${pieces.length} tokens, fewer than <unk>, <s>, </s>`);
  [pieces[0], pieces[1], pieces[2]] = ['<unk>', '<s>', '</s>'];
  const vocab = new Map(pieces.map((p, i) => [p, i]));
  if (vocab.size !== pieces.length) throw new Error(`llama2c: ${file} has duplicate tokens`);

  // Merges as transformers' SentencePieceExtractor derives them: every split of a piece into two vocab
  // pieces, ordered by the merged piece's score (best first), so BPE reproduces sentencepiece's choices.
  const merges: { l: string; r: string; score: number }[] = [];
  pieces.forEach((p, id) => {
    const chars = Array.from(p), local = [];
    for (let k = 1; k < chars.length; k++) {
      const l = chars.slice(0, k).join(''), r = chars.slice(k).join('');
      if (vocab.has(l) && vocab.has(r)) local.push({ l, r, score: scores[id] });
    }
    merges.push(...local.sort((a, b) => vocab.get(a.l)! - vocab.get(b.l)! || vocab.get(a.r)! - vocab.get(b.r)!));
  });
  merges.sort((a, b) => b.score - a.score); // stable, so ties keep the per-piece order

  const special = (id: number) => ({ id, content: pieces[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: '1.0',
    added_tokens: [special(0), special(1), special(2)],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }],
    },
    model: {
      type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false,
      vocab: Object.fromEntries(vocab), merges: merges.map((m) => [m.l, m.r]),
    },
  };
}
