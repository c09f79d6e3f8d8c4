/**
 * Saving a full-parameter fine-tune as a Hugging Face model folder: config.json (the keys transformers writes
 * for Qwen2 / Qwen3 / Llama) + model.safetensors, and, when given, the tokenizer files (tokenizer.json,
 * tokenizer_config.json, chat_template.jinja) that make the folder loadable on its own and the base model's
 * generation_config.json (its sampling advice, which answer and serve read); all atomically, weights first. loadHfFolder reads it back.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ModelConfig } from '../models/config.ts';
import { checkWeights } from '../io/hf-folder.ts';
import { atomicWrite, checkFinite, makeDir, writeAll, writeJson, writeSafetensors, type SafetensorsDtype } from '../io/safetensors.ts';
import { writeTokenizerFiles } from '../tokenizer/hf.ts';
import type { TokenizerFiles } from '../tokenizer/types.ts';
import { MemoryWeights, type WeightSource } from '../io/weights.ts';

/** ModelConfig -> config.json contents; `torchDtype` names the dtype the weights are stored in. */
export function toHfConfig(c: ModelConfig, torchDtype = 'float32'): Record<string, unknown> {
  const qwen = c.architecture !== 'llama';
  if (c.ropeFreqFactors && !c.ropeScaling && c.ropeFreqFactors.some((f) => f !== 1)) {
    throw new Error('toHfConfig: this model\'s RoPE frequency factors come from a GGUF rope_freqs tensor, which config.json cannot express (start from the Hugging Face checkpoint)');
  }
  return {
    architectures: [{ qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM', llama: 'LlamaForCausalLM' }[c.architecture]],
    model_type: c.architecture,
    bos_token_id: c.bosTokenId ?? null,
    eos_token_id: c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds,
    hidden_act: 'silu',
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    max_position_embeddings: c.maxPositionEmbeddings,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: hfRopeScaling(c),
    tie_word_embeddings: c.tieWordEmbeddings,
    attention_dropout: 0.0,
    initializer_range: 0.02,
    torch_dtype: torchDtype,
    use_cache: true,
    vocab_size: c.vocabSize,
    ...(qwen ? { use_sliding_window: false, sliding_window: null, max_window_layers: c.numLayers } : { mlp_bias: false }),
    ...(c.architecture !== 'qwen2' ? { attention_bias: c.attentionBias } : {}),
  };
}

/** config.json's rope_scaling for a ModelConfig's (transformers' field names). */
function hfRopeScaling(c: ModelConfig): Record<string, unknown> | null {
  const r = c.ropeScaling;
  switch (r?.type) {
    case undefined: return null;
    case 'linear': return { rope_type: 'linear', factor: r.factor };
    case 'llama3': return { rope_type: 'llama3', factor: r.factor, low_freq_factor: r.lowFreqFactor, high_freq_factor: r.highFreqFactor, original_max_position_embeddings: r.originalMaxPositionEmbeddings };
    case 'yarn': return { rope_type: 'yarn', factor: r.factor, original_max_position_embeddings: r.originalMaxPositionEmbeddings, beta_fast: r.betaFast, beta_slow: r.betaSlow, attention_factor: r.attentionFactor };
  }
}

const TORCH_DTYPE: Record<SafetensorsDtype, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/** A dtype by its safetensors name in any case (f32, BF16) or torch's (float32, bfloat16: config.json's torch_dtype); else undefined. */
export function dtypeNamed(name: string): SafetensorsDtype | undefined {
  const n = name.toLowerCase();
  return (Object.keys(TORCH_DTYPE) as SafetensorsDtype[]).find((d) => n === d.toLowerCase() || n === TORCH_DTYPE[d]);
}

/**
 * Write `dir`/config.json + model.safetensors (+ the tokenizer files when `opts.tokenizer` is given); the weights
 * must be complete for the config (checked first).
 */
export function saveHfFolder(dir: string, config: ModelConfig, weights: WeightSource | Map<string, { shape: number[]; data: Float32Array }>,
  opts: { dtype?: SafetensorsDtype; tokenizer?: TokenizerFiles; generationConfig?: string } = {}): void {
  const src = weights instanceof Map ? new MemoryWeights(weights) : weights;
  checkWeights(config, src, `saveHfFolder(${dir})`);
  const tensors = new Map(src.names.map((n) => [n, { shape: src.shape(n), data: src.get(n) }]));
  checkFinite(tensors, `saveHfFolder(${dir})`);
  // A Qwen2 config always means q/k/v biases (transformers' Qwen2 has them unconditionally): zeros keep the math.
  if (config.architecture === 'qwen2' && !config.attentionBias) {
    for (let l = 0; l < config.numLayers; l++) for (const [p, heads] of [['q', config.numHeads], ['k', config.numKvHeads], ['v', config.numKvHeads]] as const) {
      const n = heads * config.headDim;
      tensors.set(`model.layers.${l}.self_attn.${p}_proj.bias`, { shape: [n], data: new Float32Array(n) });
    }
  }
  makeDir(dir);
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { dtype: opts.dtype, metadata: { format: 'pt' } });
  if (opts.tokenizer) writeTokenizerFiles(dir, opts.tokenizer);
  if (opts.generationConfig !== undefined) { const raw = new TextEncoder().encode(opts.generationConfig); atomicWrite(path.join(dir, 'generation_config.json'), (fd) => writeAll(fd, raw)); }
  writeJson(path.join(dir, 'config.json'), toHfConfig(config, TORCH_DTYPE[opts.dtype ?? 'F32']));
}
