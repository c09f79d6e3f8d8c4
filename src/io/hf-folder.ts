/**
 * Hugging Face model folders: config.json -> ModelConfig, and model.safetensors (or shards listed in
 * model.safetensors.index.json) -> a lazy WeightSource under the checkpoint's own names.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkModelConfig, hasQkNorm, PROJECTIONS, projectionShape, projectionTensorName, type ModelConfig, type RopeScaling, yarnAttentionFactor, yarnContext } from '../models/config.ts';
import type { WeightSource } from './weights.ts';
import { FLOAT_DTYPES, openSafetensors, SafetensorsFile } from './safetensors.ts';
import { shown } from '../show.ts';
import { readJsonFile, readJsonObject } from './jsonl.ts';

/** PyTorch's pickled checkpoints (torch.save), which carry code rather than data: never read. */
export const PYTORCH_FILE = /^(pytorch_model.*\.bin|.*\.(pt|pth))$/;
export const PYTORCH_ADVICE = pytorchAdvice('model');
/** What a PyTorch pickle given for a `what` (model, adapter) is told: save_pretrained writes safetensors. */
export function pytorchAdvice(what: string): string {
  return `is a PyTorch checkpoint, which edgereason does not read: save the ${what} as safetensors (${what === 'adapter' ? 'PEFT\'s ' : ''}save_pretrained(dir, safe_serialization=True))`;
}

/** HF `architectures[0]` / `model_type` -> our architecture. Mistral is Llama without biases for our purposes. */
const HF_ARCHITECTURES: Record<string, ModelConfig['architecture']> = {
  Qwen2ForCausalLM: 'qwen2', Qwen3ForCausalLM: 'qwen3', LlamaForCausalLM: 'llama', MistralForCausalLM: 'llama',
};
const MODEL_TYPES: Record<string, ModelConfig['architecture']> = { qwen2: 'qwen2', qwen3: 'qwen3', llama: 'llama', mistral: 'llama' };

/** Parse a config.json object; `file` names it in errors. */
export function parseHfConfig(raw: Record<string, unknown>, file = 'config.json', generation: Record<string, unknown> = {}): ModelConfig {
  return parseHf(raw, file, generation).config;
}

/** parseHfConfig, and the sliding window the model attends within (Mistral's), which cuts its context. */
function parseHf(raw: Record<string, unknown>, file: string, generation: Record<string, unknown>): { config: ModelConfig; window?: number } {
  // architectures[0] decides when present (Qwen2ForSequenceClassification is model_type qwen2 but no LM).
  const archName = Array.isArray(raw.architectures) ? raw.architectures[0] : undefined, table = archName === undefined ? MODEL_TYPES : HF_ARCHITECTURES;
  if (archName !== undefined && typeof archName !== 'string') throw new Error(`${file}: field "architectures" must list class names such as "Qwen2ForCausalLM", got ${shown(raw.architectures)}`);
  const key = archName ?? raw.model_type, arch = typeof key === 'string' && Object.hasOwn(table, key) ? table[key] : undefined;
  const supported = [...Object.keys(HF_ARCHITECTURES), ...Object.keys(MODEL_TYPES)].join(', ');
  if (key === undefined) throw new Error(`${file}: names no architecture (neither "architectures" nor "model_type"); supported: ${supported}`);
  if (!arch) throw new Error(`${file}: unknown architecture ${JSON.stringify(key)} (supported: ${supported})`);
  const int = (key: string, fallback?: number): number => {
    const v = raw[key] ?? fallback;
    if (v === undefined) throw new Error(`${file}: required field "${key}" is missing`);
    if (!Number.isInteger(v) || (v as number) <= 0) throw new Error(`${file}: field "${key}" must be a positive integer, got ${shown(v)}`);
    return v as number;
  };
  const positive = (v: unknown, key: string): number => {
    if (typeof v !== 'number' || !(v > 0)) throw new Error(`${file}: field "${key}" must be a positive number, got ${shown(v)}`);
    return v;
  };
  const num = (key: string, fallback: number): number => positive(raw[key] ?? fallback, key);
  const ids = (v: unknown, key: string, where = file): number[] => {
    if (v === undefined || v === null) return [];
    const list = Array.isArray(v) ? v : [v];
    if (!list.every((x) => Number.isInteger(x) && x >= 0)) throw new Error(`${where}: field "${key}" must be a token id or a list of them, got ${shown(v)}`);
    return list;
  };
  // transformers 5 writes rope_theta and the scaling together as rope_parameters.
  const ropeParams = raw.rope_parameters as Record<string, unknown> | null | undefined;
  if (ropeParams !== undefined && ropeParams !== null && (typeof ropeParams !== 'object' || Array.isArray(ropeParams))) throw new Error(`${file}: field "rope_parameters" must be an object, got ${shown(ropeParams)}`);
  // YaRN's original context: its own field, a top-level one (as transformers 5 reads it), else the declared context.
  const declared = int('max_position_embeddings', arch === 'llama' ? 2048 : 32768), original = raw.original_max_position_embeddings === undefined ? declared : int('original_max_position_embeddings');
  const scalingField = ropeParams ? 'rope_parameters' : 'rope_scaling', scalingRaw = (ropeParams ?? raw.rope_scaling) as Record<string, unknown> | undefined;
  const ropeScaling = parseRopeScaling(scalingRaw, file, scalingField, original);
  // Where YaRN's original context came from, to name it.
  const originalField = scalingRaw?.original_max_position_embeddings != null ? `${scalingField}.original_max_position_embeddings` : raw.original_max_position_embeddings !== undefined ? 'original_max_position_embeddings' : 'max_position_embeddings';
  // A rope_scaling added beside rope_parameters (as model cards tell users to) must not be lost.
  if (ropeParams && raw.rope_scaling !== undefined && raw.rope_scaling !== null && JSON.stringify(parseRopeScaling(raw.rope_scaling, file, 'rope_scaling', original)) !== JSON.stringify(ropeScaling)) {
    throw new Error(`${file}: rope_scaling ${JSON.stringify(raw.rope_scaling)} and rope_parameters ${JSON.stringify(ropeParams)} say different things: keep one of them (transformers 5 reads rope_parameters: a scaling goes there, beside rope_theta)`);
  }
  for (const [where, v] of [['partial_rotary_factor', raw.partial_rotary_factor], ['rope_parameters.partial_rotary_factor', ropeParams?.partial_rotary_factor]] as const) {
    if (v !== undefined && v !== null && v !== 1) throw new Error(`${file}: ${where} ${shown(v)} is not supported (RoPE over the whole head only)`);
  }
  const ropeTheta = ropeParams?.rope_theta === undefined ? num('rope_theta', 10000) : positive(ropeParams.rope_theta, 'rope_parameters.rope_theta');
  if (raw.hidden_act !== undefined && raw.hidden_act !== 'silu') throw new Error(`${file}: hidden_act ${JSON.stringify(raw.hidden_act)} is not supported (only silu)`);
  if (raw.use_sliding_window !== undefined && raw.use_sliding_window !== null && typeof raw.use_sliding_window !== 'boolean') throw new Error(`${file}: field "use_sliding_window" must be true or false, got ${shown(raw.use_sliding_window)}`);
  if (raw.use_sliding_window === true) throw new Error(`${file}: use_sliding_window = true is not supported`);
  if (raw.quantization_config !== undefined && raw.quantization_config !== null) {
    const q = raw.quantization_config as Record<string, unknown>;
    throw new Error(`${file}: quantization_config (quant_method ${JSON.stringify(q?.quant_method)}) is not supported: load the unquantized checkpoint (edgereason quantizes it itself: --quant q4 or q8)`);
  }
  if (raw.quantization !== undefined && raw.quantization !== null) { // MLX's 4/8-bit folders (mlx-community)
    throw new Error(`${file}: "quantization" ${JSON.stringify(raw.quantization)} marks an MLX-quantized checkpoint, which is not supported: load the unquantized one (edgereason quantizes it itself: --quant q4 or q8)`);
  }
  if (raw.mlp_bias === true) throw new Error(`${file}: mlp_bias = true is not supported (MLP projections without bias only)`);
  // transformers' Qwen2 always has q/k/v biases, whatever attention_bias says; Llama and Qwen3 read the field.
  const bias = arch === 'qwen2' ? true : raw.attention_bias ?? false;
  if (typeof bias !== 'boolean') throw new Error(`${file}: field "attention_bias" must be a boolean, got ${shown(bias)}`);
  // Llama's and Qwen3's attention_bias also puts a bias on o_proj, which the graph (Qwen2's q/k/v biases) does not have.
  if (bias && arch !== 'qwen2') throw new Error(`${file}: attention_bias = true is not supported for ${JSON.stringify(key)} (its o_proj bias; q/k/v biases as in Qwen2 only)`);
  // Mistral attends within a sliding window: exact up to the window, so the context stops there. transformers'
  // MistralConfig defaults the window to 4096 (null: none).
  // (transformers' Llama ignores the field, so does this.)
  const mistral = key === 'MistralForCausalLM' || key === 'mistral', slide = !mistral ? null : Object.hasOwn(raw, 'sliding_window') ? raw.sliding_window : 4096;
  if (slide !== null && !(Number.isInteger(slide) && (slide as number) > 0)) throw new Error(`${file}: field "sliding_window" must be a positive integer (the window) or null (none), got ${shown(slide)}`);
  const window = slide === null ? undefined : slide as number;
  const tie = raw.tie_word_embeddings ?? false;
  if (typeof tie !== 'boolean') throw new Error(`${file}: field "tie_word_embeddings" must be a boolean, got ${shown(tie)}`);

  const hiddenSize = int('hidden_size'), numHeads = int('num_attention_heads');
  if (raw.head_dim === undefined && arch !== 'qwen3' && hiddenSize % numHeads) throw new Error(`${file}: hidden_size (${hiddenSize}) is not a multiple of num_attention_heads (${numHeads}), and no head_dim is given`);
  const vocabSize = int('vocab_size'), bos = ids(raw.bos_token_id, 'bos_token_id'), genFile = path.join(path.dirname(file), 'generation_config.json');
  const ownEos = ids(raw.eos_token_id, 'eos_token_id'), generated = ids(generation.eos_token_id, 'eos_token_id', genFile);
  const eos = [...new Set([...ownEos, ...generated])];
  for (const [where, list, fields] of [[file, [...bos, ...ownEos], 'bos_token_id / eos_token_id'], [genFile, generated, 'eos_token_id']] as const) {
    const outside = list.find((t) => t >= vocabSize);
    if (outside !== undefined) throw new Error(`${where}: token id ${outside} (${fields}) is outside the vocabulary (vocab_size ${vocabSize}${where === genFile ? ' in config.json' : ''})`);
  }
  const config: ModelConfig = {
    architecture: arch,
    vocabSize,
    hiddenSize,
    intermediateSize: int('intermediate_size'),
    numLayers: int('num_hidden_layers'),
    numHeads,
    numKvHeads: int('num_key_value_heads', numHeads),
    headDim: int('head_dim', arch === 'qwen3' ? 128 : hiddenSize / numHeads), // transformers' Qwen3Config defaults it to 128
    rmsNormEps: num('rms_norm_eps', 1e-6),
    ropeTheta,
    ...(ropeScaling ? { ropeScaling } : {}),
    // transformers' defaults when the field is absent; YaRN reaches `factor` times its original context (as vLLM
    // serves it: Qwen2.5's cards leave max_position_embeddings at 32768 with factor 4 for 131072 tokens).
    maxPositionEmbeddings: Math.min(ropeScaling?.type === 'yarn' ? Math.max(declared, yarnContext(ropeScaling, `${file}:`, `${scalingField}.factor × ${originalField}`)) : declared, window ?? Infinity),
    tieWordEmbeddings: tie,
    attentionBias: bias,
    ...(bos.length ? { bosTokenId: bos[0] } : {}),
    // generate() stops on generation_config.json's eos ids; keep config.json's too.
    eosTokenIds: eos,
  };
  checkModelConfig(config, `${file}:`, (k) => `field "${HF_FIELDS[k]}"`);
  return { config, ...(window !== undefined ? { window } : {}) };
}

/** config.json's name for each ModelConfig field. */
const HF_FIELDS: Record<keyof ModelConfig, string> = {
  architecture: 'model_type', vocabSize: 'vocab_size', hiddenSize: 'hidden_size', intermediateSize: 'intermediate_size', numLayers: 'num_hidden_layers',
  numHeads: 'num_attention_heads', numKvHeads: 'num_key_value_heads', headDim: 'head_dim', rmsNormEps: 'rms_norm_eps', ropeTheta: 'rope_theta',
  ropeScaling: 'rope_scaling', ropeFreqFactors: 'rope_scaling', maxPositionEmbeddings: 'max_position_embeddings', tieWordEmbeddings: 'tie_word_embeddings',
  attentionBias: 'attention_bias', bosTokenId: 'bos_token_id', eosTokenIds: 'eos_token_id',
};

/**
 * rope_scaling (or transformers 5's rope_parameters, `field`): absent, null or "default" (plain RoPE), Llama 3's
 * "llama3", "linear" or "yarn" (read as transformers 5 reads it; `original` is its original context when the
 * field does not say); anything else is refused by name.
 */
function parseRopeScaling(v: unknown, file: string, field: string, original: unknown): RopeScaling | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw new Error(`${file}: field "${field}" must be an object such as {"rope_type": "yarn", "factor": 4.0, …}, got ${shown(v)}`);
  const r = v as Record<string, unknown>, type = r.rope_type ?? r.type;
  if (type === 'default' || (type === undefined && field === 'rope_parameters')) return undefined;
  if (type !== 'llama3' && type !== 'linear' && type !== 'yarn') throw new Error(`${file}: ${field} type ${JSON.stringify(type)} is not supported (plain RoPE, "llama3", "linear" or "yarn"): ${JSON.stringify(v)}`);
  const num = (k: string, fallback?: unknown) => {
    const x = r[k] ?? fallback;
    if (typeof x !== 'number' || !(x > 0) || !Number.isFinite(x)) throw new Error(`${file}: ${field}.${k} must be a positive finite number, got ${shown(r[k])}`);
    return x;
  };
  if (type === 'linear') return { type, factor: num('factor') };
  if (type === 'yarn') {
    // DeepSeek's pair (mscale, mscale_all_dim) sets the attention factor when attention_factor does not.
    const factor = num('factor'), mscale = (m: number) => (factor <= 1 ? 1 : 0.1 * m * Math.log(factor) + 1);
    const attentionFactor = r.attention_factor !== undefined && r.attention_factor !== null ? num('attention_factor')
      : r.mscale && r.mscale_all_dim ? mscale(num('mscale')) / mscale(num('mscale_all_dim')) : yarnAttentionFactor(factor);
    // transformers reads 0 or null as the paper's 32 / 1
    const beta = (k: string, fallback: number) => (r[k] ? num(k) : fallback);
    if (r.truncate === false) throw new Error(`${file}: ${field}.truncate = false is not supported (YaRN's ramp between whole dimensions, as llama.cpp computes it)`);
    // vLLM's own knobs (transformers ignores them): refused unless they leave YaRN as it is.
    for (const k of ['extrapolation_factor', 'attn_factor']) if (r[k] !== undefined && r[k] !== null && r[k] !== 1) throw new Error(`${file}: ${field}.${k} ${shown(r[k])} is not supported (transformers' attention_factor sets YaRN's attention factor)`);
    const orig = num('original_max_position_embeddings', original);
    if (!Number.isInteger(orig)) throw new Error(`${file}: ${field}.original_max_position_embeddings must be a whole number of positions, got ${shown(orig)}`);
    const s = { type: 'yarn' as const, factor, originalMaxPositionEmbeddings: orig, betaFast: beta('beta_fast', 32), betaSlow: beta('beta_slow', 1), attentionFactor };
    if (!(s.betaFast > s.betaSlow)) throw new Error(`${file}: ${field}.beta_fast (${s.betaFast}) must exceed beta_slow (${s.betaSlow})`);
    return s;
  }
  const s = { type, factor: num('factor'), lowFreqFactor: num('low_freq_factor'), highFreqFactor: num('high_freq_factor'), originalMaxPositionEmbeddings: num('original_max_position_embeddings') } as const;
  if (!(s.highFreqFactor > s.lowFreqFactor)) throw new Error(`${file}: ${field}.high_freq_factor (${s.highFreqFactor}) must exceed low_freq_factor (${s.lowFreqFactor})`);
  return s;
}

/**
 * Check that the tensors a Qwen2/Qwen3/Llama graph needs exist with the shapes the config implies; `what` names the
 * source, `attentionNote` ends an attention tensor's shape error (the config's defaulted fields), `fileName` gives a
 * tensor's name as the file spells it (a GGUF's are llama.cpp's).
 */
export function checkWeights(c: ModelConfig, w: WeightSource, what: string, attentionNote: (name: string) => string = () => '', fileName: (name: string) => string = (n) => n): void {
  const used = new Set<string>();
  const expect = (name: string, shape: number[]) => {
    used.add(name);
    if (!w.has(name)) {
      const hint = (w instanceof ShardedWeights ? w.whyMissing(name) : '') || (name === 'lm_head.weight' ? ' (tie_word_embeddings is false, so the checkpoint needs its own lm_head)' : '');
      throw new Error(`${what}: tensor "${fileName(name)}" is missing${hint}`);
    }
    const got = w.shape(name);
    if (got.join() !== shape.join()) throw new Error(`${what}: tensor "${fileName(name)}" has shape [${got}], expected [${shape}] from the config${name.includes('.self_attn.') ? attentionNote(name) : ''}`);
  };
  expect('model.embed_tokens.weight', [c.vocabSize, c.hiddenSize]);
  expect('model.norm.weight', [c.hiddenSize]);
  if (!c.tieWordEmbeddings) expect('lm_head.weight', [c.vocabSize, c.hiddenSize]);
  for (let l = 0; l < c.numLayers; l++) {
    expect(`model.layers.${l}.input_layernorm.weight`, [c.hiddenSize]);
    expect(`model.layers.${l}.post_attention_layernorm.weight`, [c.hiddenSize]);
    for (const p of PROJECTIONS) {
      const shape = projectionShape(c, p), name = projectionTensorName(l, p);
      expect(`${name}.weight`, shape);
      if (c.attentionBias && ['q_proj', 'k_proj', 'v_proj'].includes(p)) expect(`${name}.bias`, [shape[0]]);
    }
    if (hasQkNorm(c)) for (const n of ['q_norm', 'k_norm']) expect(`model.layers.${l}.self_attn.${n}.weight`, [c.headDim]);
  }
  // A tensor the graph would not use means the checkpoint is something else (biases, extra norms): refuse it
  // rather than compute without it. Cached RoPE frequencies and a tied lm_head saved anyway are harmless.
  const unused = w.names.find((n) => !used.has(n) && !/\.rotary_emb\.inv_freq$/.test(n) && n !== 'lm_head.weight');
  const layer = unused === undefined ? undefined : /^model\.layers\.(\d+)\./.exec(unused)?.[1];
  if (layer !== undefined && Number(layer) >= c.numLayers) throw new Error(`${what}: tensor "${fileName(unused!)}" belongs to layer ${layer}, but the config has ${c.numLayers} layer${c.numLayers === 1 ? '' : 's'}: the config and the weights disagree`);
  if (unused !== undefined) throw new Error(`${what}: tensor "${fileName(unused)}" is not part of the ${c.architecture} graph this runtime builds (an unsupported variant of the architecture?)`);
}

/** Tensors spread over several safetensors files, opened (header only) up front. */
class ShardedWeights implements WeightSource {
  readonly fresh = true;
  /** `whyMissing(name)`: what to add to "is missing" (a shard that holds it unlisted). */
  constructor(private readonly where: Map<string, SafetensorsFile>, readonly whyMissing: (name: string) => string = () => '') {}
  get names(): string[] { return [...this.where.keys()]; }
  has(name: string): boolean { return this.where.has(name); }
  shape(name: string): number[] { return this.file(name).shape(name); }
  get(name: string): Float32Array { return this.file(name).get(name); }
  rows(name: string, from: number, to: number): Float32Array { return this.file(name).rows(name, from, to); }
  fileOf(name: string): SafetensorsFile { return this.file(name); }
  private file(name: string): SafetensorsFile {
    const f = this.where.get(name);
    if (!f) throw new Error(`weights: tensor "${name}" is missing`);
    return f;
  }
}

/**
 * The sampling a model folder's generation_config.json asks for (generationSampling's temperature, top_p, top_k,
 * min_p), as command-line flags; undefined when it asks for none. (Its repetition penalty is said apart.)
 */
export function suggestedSampling(s: GenerationSampling | undefined): string | undefined {
  const flags = s && ([['temperature', '--temperature'], ['top_p', '--top-p'], ['top_k', '--top-k'], ['min_p', '--min-p']] as const)
    .filter(([k]) => s[k] !== undefined).map(([k, flag]) => `${flag} ${s[k]}`);
  return flags?.length ? flags.join(' ') : undefined;
}

/** The model's own sampling defaults (generation_config.json's: when it says do_sample, and its repetition penalty), as OpenAI / vLLM field names. */
export type GenerationSampling = Partial<Record<'temperature' | 'top_p' | 'top_k' | 'min_p' | 'repetition_penalty', number>>;

/**
 * A folder's generation_config.json as an object; undefined without one (or for a file path), or when it is not a
 * JSON object, which `problem` then says.
 */
function generationConfig(dir: string): { g?: Record<string, unknown>; problem?: string } {
  const file = path.join(dir, 'generation_config.json');
  try {
    const g: unknown = fs.statSync(dir).isDirectory() && fs.existsSync(file) ? readJsonFile(file) : undefined;
    if (g === undefined) return {};
    return g !== null && typeof g === 'object' && !Array.isArray(g) ? { g: g as Record<string, unknown> } : { problem: `${file} holds ${shown(g)}, not a JSON object` };
  } catch (e) { return { problem: (e as Error).message }; }
}

/** The sampling fields a generation_config.json object asks for, each with its check (the rest only where it says do_sample). */
function samplingRules(g: Record<string, unknown>): Record<string, (x: number) => boolean> {
  return {
    ...(g.do_sample === true ? { temperature: (x: number) => x >= 0, top_p: (x: number) => x > 0 && x <= 1, top_k: (x: number) => Number.isInteger(x) && x >= 0, min_p: (x: number) => x >= 0 && x <= 1 } : {}),
    repetition_penalty: (x) => x > 0 && x <= 10,
  };
}
const validSampling = (v: unknown, valid: (x: number) => boolean) => typeof v === 'number' && Number.isFinite(v) && valid(v);

export function generationSampling(dir: string): GenerationSampling | undefined {
  const { g } = generationConfig(dir);
  if (!g) return undefined;
  // The sampling fields count only where the file says do_sample; a repetition penalty applies to greedy decoding too.
  const s = Object.fromEntries(Object.entries(samplingRules(g)).filter(([k, valid]) => validSampling(g[k], valid) && !(k === 'repetition_penalty' && g[k] === 1)).map(([k]) => [k, g[k] as number]));
  return Object.keys(s).length ? s : undefined;
}

/**
 * What a folder's generation_config.json asks of sampling that is not taken, as notes: what edgereason's sampler does
 * not do (n-gram blocking, typical sampling), and values that are no sampling values (a temperature of "hot", a top_p
 * of 2), left out rather than dropped unsaid. Said where that file's sampling is taken or suggested (chat, serve, answer, eval).
 */
export function generationNotes(dir: string): string[] {
  const { g = {}, problem } = generationConfig(dir), file = path.join(dir, 'generation_config.json');
  if (problem) return [`${problem}: its sampling advice is left out`];
  const neutral: Record<string, (x: number) => boolean> = { no_repeat_ngram_size: (x) => x === 0, typical_p: (x) => x === 1 };
  const unapplied = Object.entries(neutral).filter(([k, off]) => typeof g[k] === 'number' && !off(g[k] as number)).map(([k]) => `${k} ${g[k]}`);
  const invalid = Object.entries(samplingRules(g)).filter(([k, valid]) => g[k] !== undefined && g[k] !== null && !validSampling(g[k], valid)).map(([k]) => `${k} ${shown(g[k])}`);
  return [
    ...(unapplied.length ? [`${file} also asks for ${unapplied.join(', ')}, which edgereason's sampler does not apply`] : []),
    ...(invalid.length ? [`${file}'s ${invalid.join(', ')} ${invalid.length === 1 ? 'is not a valid value' : 'are not valid values'}: left out (the defaults apply)`] : []),
  ];
}

/** Load a Hugging Face model folder (config.json + model.safetensors or a sharded index). */
export function loadHfFolder(dir: string): { config: ModelConfig; weights: WeightSource; dir: string; slidingWindow?: number } {
  const configFile = path.join(dir, 'config.json');
  if (!fs.existsSync(configFile)) {
    checkLink(configFile);
    // A folder holding a GGUF (a download of one): the file is the model (a split one by its first part).
    const ggufs = fs.readdirSync(dir).filter((f) => f.endsWith('.gguf') && !/-(?!00001)\d{5}-of-\d{5}\.gguf$/.test(f)).sort();
    const hint = ggufs.length ? `; it holds ${ggufs.length === 1 ? 'a GGUF file' : `${ggufs.length} GGUF files`}: give ${ggufs.length === 1 ? 'it' : 'one of them'} as the model (${path.join(dir, ggufs[0])}${ggufs.length > 1 ? ', …' : ''})` : '';
    throw new Error(`${dir}: no config.json, not a Hugging Face model folder${hint}`);
  }
  const genFile = path.join(dir, 'generation_config.json');
  const raw = readJsonObject(configFile), { config, window } = parseHf(raw, configFile, fs.existsSync(genFile) ? readJsonObject(genFile) : {});

  const single = path.join(dir, 'model.safetensors'), index = path.join(dir, 'model.safetensors.index.json');
  let weights: WeightSource;
  if (fs.existsSync(single)) weights = openSafetensors(single);
  else if (fs.existsSync(index)) {
    const map = readJsonObject(index).weight_map as Record<string, string> | undefined;
    if (!map || typeof map !== 'object' || Array.isArray(map)) throw new Error(`${index}: no "weight_map" object (tensor name → shard file)${map === undefined ? '' : `, got ${shown(map)}`}`);
    const shards = new Map<string, SafetensorsFile>(), where = new Map<string, SafetensorsFile>();
    for (const [tensor, shard] of Object.entries(map)) {
      if (typeof shard !== 'string') throw new Error(`${index}: "weight_map" gives ${JSON.stringify(shard)} as the file of "${tensor}"; expected a file name`);
      // The model's own files: a path out of its folder (../other/model.safetensors) is another model's.
      const rel = path.relative(dir, path.resolve(dir, shard));
      if (path.isAbsolute(shard) || rel === '..' || rel.startsWith(`..${path.sep}`)) throw new Error(`${index}: "weight_map" gives "${shard}" as the file of "${tensor}": a shard is named by its file in the model's folder, not by an absolute path or one out of the folder`);
      if (!shards.has(shard)) {
        const file = path.join(dir, shard);
        if (!fs.existsSync(file)) throw new Error(`${index}: shard "${shard}" (holding "${tensor}") is missing from ${dir}`);
        if (!fs.statSync(file).isFile()) throw new Error(`${index}: shard "${shard}" (holding "${tensor}") is not a file in ${dir}`);
        shards.set(shard, openSafetensors(file));
      }
      const f = shards.get(shard)!;
      if (!f.has(tensor)) throw new Error(`${index}: says "${tensor}" is in ${shard}, but that file does not hold it`);
      where.set(tensor, f);
    }
    // Tensors a shard holds that the index leaves out: one the model needs is said to be that, not missing.
    const unlisted = new Map([...shards].flatMap(([shard, f]) => f.names.filter((n) => !where.has(n)).map((n) => [n, shard] as const)));
    weights = new ShardedWeights(where, (name) => (unlisted.has(name) ? ` (${unlisted.get(name)} holds it, but ${path.basename(index)}'s "weight_map" leaves it out: the index is not this checkpoint's, or was cut)` : ''));
  } else {
    // The model's weights, not a trainer's optimizer or RNG state.
    for (const f of ['model.safetensors', 'model.safetensors.index.json']) checkLink(path.join(dir, f));
    const pickled = fs.readdirSync(dir).filter((f) => PYTORCH_FILE.test(f) && !/^(optimizer|scheduler|rng_state|training_args)/.test(f)).sort((a, b) => Number(!a.startsWith('pytorch_model')) - Number(!b.startsWith('pytorch_model')))[0];
    // Shards without their index: said so (which shard holds which tensor is in the index).
    const shardFiles = fs.readdirSync(dir).filter((f) => /^model-\d+-of-\d+\.safetensors$/.test(f)).sort();
    if (shardFiles.length) throw new Error(`${dir}: ${shardFiles.length === 1 ? `${shardFiles[0]} is a shard` : `${shardFiles[0]} … ${shardFiles.at(-1)} are shards`} of a checkpoint whose index, model.safetensors.index.json, is missing: copy it from where the shards came from`);
    throw new Error(`${dir}: no model.safetensors or model.safetensors.index.json${pickled ? `; ${pickled} ${PYTORCH_ADVICE}` : ''}`);
  }
  for (const name of weights.names) {
    const f = weights instanceof SafetensorsFile ? weights : (weights as ShardedWeights).fileOf(name), dtype = f.info(name).dtype;
    if (!FLOAT_DTYPES.has(dtype)) throw new Error(`${f.path}: tensor "${name}" is stored as ${dtype}; weights must be F32, F16, BF16 or F64 (a quantized checkpoint? load the unquantized one)`);
  }
  // Attention shapes that disagree where config.json left a field to its default: that default is the likely cause.
  // (num_key_value_heads shapes the keys' and values' projections; head_dim every one of them.)
  const kv = raw.num_key_value_heads == null && `num_key_value_heads (so it is num_attention_heads, ${config.numHeads})`;
  const dim = raw.head_dim == null && `head_dim (so it is ${config.architecture === 'qwen3' ? "Qwen3's default, 128" : `hidden_size / num_attention_heads, ${config.headDim}`})`;
  const note = (...fields: (string | false)[]) => (fields.some(Boolean) ? `; ${configFile} gives no ${fields.filter(Boolean).join(' and no ')}` : '');
  checkWeights(config, weights, dir, (name) => note(/\.(k|v)_proj\./.test(name) && kv, dim));
  return { config, weights, dir, ...(window !== undefined ? { slidingWindow: window } : {}) };
}

/** A missing file that is a link to nothing is said to be one (a hub cache whose blobs were removed). */
function checkLink(f: string): void {
  if (fs.lstatSync(f, { throwIfNoEntry: false })?.isSymbolicLink()) throw new Error(`${f} is a symbolic link to ${fs.readlinkSync(f)}, which does not exist (a hub cache whose blobs were removed?)`);
}
