/** Decoder-only transformer configuration (Qwen2, Qwen3 and Llama families), normalised from any loader. */
import { shown } from '../show.ts';

export interface ModelConfig {
  /** Qwen3 is Qwen2 with an RMSNorm on each query and key head (q_norm, k_norm) and, by default, no biases. */
  architecture: 'qwen2' | 'qwen3' | 'llama';
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** Long-context RoPE (Hugging Face rope_scaling: "llama3", "linear" or "yarn"); absent: plain RoPE. */
  ropeScaling?: RopeScaling;
  /**
   * Per-frequency divisors of RoPE's inverse frequencies (headDim / 2 of them), as GGUF stores llama3 scaling
   * (rope_freqs.weight); used when ropeScaling is absent.
   */
  ropeFreqFactors?: number[];
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** Bias on q/k/v projections (Qwen2 has it, Llama does not). */
  attentionBias: boolean;
  bosTokenId?: number;
  eosTokenIds: number[];
}

/** Whether `t` is a token id of a vocabulary of `vocabSize` (0 .. vocabSize − 1). */
export const isTokenId = (t: unknown, vocabSize: number): boolean => Number.isInteger(t) && (t as number) >= 0 && (t as number) < vocabSize;

export const ARCHITECTURES: readonly ModelConfig['architecture'][] = ['qwen2', 'qwen3', 'llama'];

/** Whether each query and key head is RMS-normalised before RoPE (Qwen3's q_norm / k_norm, weights [headDim]). */
export const hasQkNorm = (c: ModelConfig): boolean => c.architecture === 'qwen3';

/** The longest context a model may declare: its RoPE table is built for every position (2^20: Qwen2.5-1M fits). */
export const MAX_POSITIONS = 1 << 20;

/**
 * Checks a ModelConfig, as a loader built it or as read from a file edgereason wrote (a converted folder's manifest).
 * `where` names the file (the message prefix, e.g. `x/config.json:`); `name` names a field as that file holds it.
 */
export function checkModelConfig(c: ModelConfig, where: string, name: (field: keyof ModelConfig) => string = (k) => `field "config.${k}"`): void {
  const bad = (field: keyof ModelConfig | '', want: string, got: unknown) => {
    throw new Error(`${where} ${field ? name(field) : 'field "config"'} must be ${want}, got ${shown(got)}`);
  };
  if (!c || typeof c !== 'object') bad('', 'an object', c);
  if (!ARCHITECTURES.includes(c.architecture)) bad('architecture', `one of ${ARCHITECTURES.map((a) => `"${a}"`).join(', ')}`, c.architecture);
  for (const k of ['vocabSize', 'hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'maxPositionEmbeddings'] as const) {
    if (!Number.isInteger(c[k]) || c[k] <= 0) bad(k, 'a positive integer', c[k]);
  }
  for (const k of ['rmsNormEps', 'ropeTheta'] as const) if (!(Number.isFinite(c[k]) && c[k] > 0)) bad(k, 'a positive number', c[k]);
  if (c.rmsNormEps >= 1) bad('rmsNormEps', 'below 1 (it only guards the division: 1e-6 or 1e-5 in practice)', c.rmsNormEps);
  for (const k of ['tieWordEmbeddings', 'attentionBias'] as const) if (typeof c[k] !== 'boolean') bad(k, 'true or false', c[k]);
  if (c.numHeads % c.numKvHeads) bad('numKvHeads', `a divisor of the number of attention heads (${c.numHeads})`, c.numKvHeads);
  if (c.headDim % 2) bad('headDim', 'even (RoPE turns pairs of dimensions)', c.headDim);
  if (c.maxPositionEmbeddings > MAX_POSITIONS) bad('maxPositionEmbeddings', `at most ${MAX_POSITIONS} (the RoPE table holds every position)`, c.maxPositionEmbeddings);
  const id = (t: unknown) => isTokenId(t, c.vocabSize);
  if (!Array.isArray(c.eosTokenIds) || !c.eosTokenIds.every(id)) bad('eosTokenIds', `token ids below the vocabulary size (${c.vocabSize})`, c.eosTokenIds);
  if (c.bosTokenId !== undefined && !id(c.bosTokenId)) bad('bosTokenId', `a token id below the vocabulary size (${c.vocabSize})`, c.bosTokenId);
  if (c.ropeFreqFactors !== undefined && !(Array.isArray(c.ropeFreqFactors) && c.ropeFreqFactors.length === c.headDim / 2 && c.ropeFreqFactors.every((x) => Number.isFinite(x) && x > 0))) {
    bad('ropeFreqFactors', `${c.headDim / 2} positive numbers`, c.ropeFreqFactors);
  }
  const r = c.ropeScaling, fields = r as unknown as Record<string, unknown>;
  const positive = (k: string) => Number.isFinite(fields[k]) && (fields[k] as number) > 0;
  if (r !== undefined && !(r && typeof r === 'object' && Object.hasOwn(ROPE_SCALING_FIELDS, r.type) && ROPE_SCALING_FIELDS[r.type].every(positive))) {
    bad('ropeScaling', Object.entries(ROPE_SCALING_FIELDS).map(([t, f]) => `{type: "${t}", ${f.join(', ')}}`).join(' or ') + ' (positive, finite)', r);
  }
  if (r?.type === 'yarn' && !(Number.isInteger(r.originalMaxPositionEmbeddings) && r.betaFast > r.betaSlow)) bad('ropeScaling', 'YaRN with a whole original context and betaFast above betaSlow', r);
  if (r && c.ropeFreqFactors !== undefined) bad('ropeFreqFactors', `absent with ropeScaling "${r.type}" (one RoPE scaling at a time)`, c.ropeFreqFactors);
}

/** Llama 3.1's RoPE: long wavelengths slowed by `factor`, short ones kept, a smooth blend between. */
export interface Llama3RopeScaling { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
/** Position interpolation: every frequency slowed by `factor`. */
export interface LinearRopeScaling { type: 'linear'; factor: number }
/**
 * YaRN (Peng et al. 2023), as Qwen2.5 and Qwen3 use it past 32K tokens: frequencies that turn fewer than `betaSlow`
 * times over the original context are slowed by `factor`, those turning more than `betaFast` times kept, a linear
 * ramp over the dimensions between; cos and sin are scaled by `attentionFactor` (0.1 ln factor + 1 unless given).
 */
export interface YarnRopeScaling { type: 'yarn'; factor: number; originalMaxPositionEmbeddings: number; betaFast: number; betaSlow: number; attentionFactor: number }
export type RopeScaling = Llama3RopeScaling | LinearRopeScaling | YarnRopeScaling;

const ROPE_SCALING_FIELDS: Record<RopeScaling['type'], string[]> = {
  llama3: ['factor', 'lowFreqFactor', 'highFreqFactor', 'originalMaxPositionEmbeddings'],
  linear: ['factor'],
  yarn: ['factor', 'originalMaxPositionEmbeddings', 'betaFast', 'betaSlow', 'attentionFactor'],
};

/**
 * The context YaRN reaches: factor × its original context (vLLM's, rounded down), refused past the RoPE table's
 * limit; `where` prefixes the message and `fields` names the two factors as the file holds them.
 */
export function yarnContext(s: YarnRopeScaling, where: string, fields: string): number {
  const n = Math.floor(s.factor * s.originalMaxPositionEmbeddings);
  if (n > MAX_POSITIONS) throw new Error(`${where} ${fields} (${s.factor} × ${s.originalMaxPositionEmbeddings} = ${n} positions) must be at most ${MAX_POSITIONS} (the RoPE table holds every position)`);
  return n;
}

/**
 * A RoPE scaling chosen at load time (loadModel's ropeScaling; the CLI's --rope-scaling, --rope-scale,
 * --yarn-orig-ctx, as llama.cpp names them), replacing what the checkpoint says: "yarn" stretches the context
 * `factor` times past `originalMaxPositionEmbeddings` (default: the context the model was trained for) as Qwen's
 * cards advise for long inputs; "linear" slows every frequency `factor` times (the context grows as much); "none"
 * takes a checkpoint's YaRN away (Qwen's advice for short inputs, which static YaRN can hurt).
 */
export interface RopeScalingChoice { type: 'yarn' | 'linear' | 'none'; factor?: number; originalMaxPositionEmbeddings?: number }

/** Checks a RopeScalingChoice given to `where` (e.g. "loadModel"); the message names its fields as `name`.x (ropeScaling.factor). */
export function checkRopeScalingChoice(v: unknown, where: string, name = 'ropeScaling'): asserts v is RopeScalingChoice {
  const r = v as Record<string, unknown>;
  if (!r || typeof r !== 'object' || Array.isArray(r)) throw new Error(`${where}: ${name} must be an object such as {type: "yarn", factor: 4}, got ${shown(v)}`);
  const known = ['type', 'factor', 'originalMaxPositionEmbeddings'], unknown = Object.keys(r).filter((k) => !known.includes(k));
  if (unknown.length) throw new Error(`${where}: ${name} has ${unknown.map((k) => `"${k}"`).join(', ')}; its fields are ${known.join(', ')}`);
  if (!['yarn', 'linear', 'none'].includes(r.type as string)) throw new Error(`${where}: ${name}.type must be "yarn", "linear" or "none", got ${shown(r.type)}`);
  if (r.type === 'none') {
    if (r.factor !== undefined || r.originalMaxPositionEmbeddings !== undefined) throw new Error(`${where}: ${name} "none" takes no factor or originalMaxPositionEmbeddings`);
    return;
  }
  if (!(typeof r.factor === 'number' && r.factor > 1 && Number.isFinite(r.factor))) throw new Error(`${where}: ${name}.factor must be a number above 1 (how many times the context is stretched), got ${shown(r.factor)}${r.factor === 1 ? '; type "none" is RoPE unscaled' : ''}`);
  if (r.originalMaxPositionEmbeddings !== undefined) {
    if (r.type !== 'yarn') throw new Error(`${where}: ${name}.originalMaxPositionEmbeddings is YaRN's: leave it out with type "${r.type}"`);
    if (!(Number.isInteger(r.originalMaxPositionEmbeddings) && (r.originalMaxPositionEmbeddings as number) > 0)) throw new Error(`${where}: ${name}.originalMaxPositionEmbeddings must be a positive whole number of positions, got ${shown(r.originalMaxPositionEmbeddings)}`);
  }
}

/** The choice that gives a config its RoPE scaling as withRopeScaling makes it (yarn with its original context spelt out). */
export function ropeChoiceOf(c: ModelConfig): RopeScalingChoice {
  const r = c.ropeScaling;
  if (r?.type === 'yarn') return { type: 'yarn', factor: r.factor, originalMaxPositionEmbeddings: r.originalMaxPositionEmbeddings };
  return r?.type === 'linear' ? { type: 'linear', factor: r.factor } : { type: 'none' };
}

/** A RopeScalingChoice as a person reads it: yarn ×4 over 32768 positions, linear ×2, none. */
export function ropeScalingWords(r: RopeScaling | RopeScalingChoice | undefined): string {
  if (!r || r.type === 'none') return 'none';
  if (r.type === 'yarn') return `yarn ×${r.factor}${r.originalMaxPositionEmbeddings !== undefined ? ` over ${r.originalMaxPositionEmbeddings} positions` : ''}`;
  return `${r.type} ×${r.factor}`;
}

/**
 * `c` with the RoPE scaling `choice` in place of its own (checked beforehand: checkRopeScalingChoice); `c` itself
 * when that changes nothing. The context becomes factor × the context the model was trained for (its YaRN's
 * original context, else its declared one), or that context itself for "none" — never less than a context the
 * checkpoint declares past its YaRN's reach (config.json's max_position_embeddings, as the loaders read it). A model
 * trained with its scaling (llama3, linear, or per-frequency factors) keeps it: replacing it is refused. `where`
 * names the model in a message.
 */
export function withRopeScaling(c: ModelConfig, choice: RopeScalingChoice, where: string): ModelConfig {
  const own = c.ropeScaling;
  // Its own scaling restated (a YaRN's attention factor and betas as the checkpoint gives them).
  if (own?.type === 'linear' && choice.type === 'linear' && choice.factor === own.factor) return c;
  if (own?.type === 'yarn' && choice.type === 'yarn' && choice.factor === own.factor && (choice.originalMaxPositionEmbeddings ?? own.originalMaxPositionEmbeddings) === own.originalMaxPositionEmbeddings) return c;
  if ((own && own.type !== 'yarn') || c.ropeFreqFactors) {
    throw new Error(`${where} was trained with ${own ? `${own.type} RoPE scaling` : 'per-frequency RoPE factors (rope_freqs.weight)'}, which stays: ropeScaling ${ropeScalingWords(choice)} cannot replace it`);
  }
  const trained = own?.type === 'yarn' ? own.originalMaxPositionEmbeddings : c.maxPositionEmbeddings;
  const declared = own?.type === 'yarn' && c.maxPositionEmbeddings > Math.floor(own.factor * own.originalMaxPositionEmbeddings) ? c.maxPositionEmbeddings : trained;
  const { ropeScaling: _, ...rest } = c;
  let scaled: ModelConfig;
  if (choice.type === 'none') scaled = { ...rest, maxPositionEmbeddings: declared };
  else if (choice.type === 'linear') {
    const n = Math.floor(choice.factor! * trained);
    if (n > MAX_POSITIONS) throw new Error(`${where}: ropeScaling linear ×${choice.factor} over its ${trained} positions (${n}) must reach at most ${MAX_POSITIONS} positions (the RoPE table holds every position)`);
    scaled = { ...rest, ropeScaling: { type: 'linear', factor: choice.factor! }, maxPositionEmbeddings: Math.max(declared, n) };
  } else {
    const s: YarnRopeScaling = { type: 'yarn', factor: choice.factor!, originalMaxPositionEmbeddings: choice.originalMaxPositionEmbeddings ?? trained, betaFast: 32, betaSlow: 1, attentionFactor: yarnAttentionFactor(choice.factor!) };
    scaled = { ...rest, ropeScaling: s, maxPositionEmbeddings: Math.max(declared, yarnContext(s, `${where}:`, `ropeScaling.factor × ${choice.originalMaxPositionEmbeddings !== undefined ? 'ropeScaling.originalMaxPositionEmbeddings' : 'its trained context'}`)) };
  }
  return JSON.stringify(scaled.ropeScaling) === JSON.stringify(c.ropeScaling) && scaled.maxPositionEmbeddings === c.maxPositionEmbeddings ? c : scaled;
}

/** YaRN's default attention factor: 0.1 ln(factor) + 1 (1 when the context is not stretched). */
export const yarnAttentionFactor = (factor: number): number => (factor <= 1 ? 1 : 0.1 * Math.log(factor) + 1);

/** The factor RoPE's cos and sin are scaled by (YaRN's attention factor; 1 otherwise). */
export const ropeAttentionFactor = (c: ModelConfig): number => (c.ropeScaling?.type === 'yarn' ? c.ropeScaling.attentionFactor : 1);

/**
 * RoPE's divisor for each of the headDim / 2 frequencies: 1 for plain RoPE; `factor` for linear scaling; under
 * llama3 scaling, `factor` for wavelengths longer than original context / lowFreqFactor, 1 below original context /
 * highFreqFactor, and a smooth blend between (Meta's Llama 3.1 recipe; GGUF stores the same numbers as
 * rope_freqs.weight); under YaRN, `factor` below dimension `low`, 1 above `high`, a linear ramp between, where
 * dimension i turns (original context / 2π) / θ^(2i/d) times over the original context, and low / high are the
 * dimensions turning betaFast / betaSlow times (rounded outwards).
 */
export function ropeFreqFactors(c: ModelConfig): number[] {
  const half = c.headDim / 2;
  const s = c.ropeScaling;
  if (!s) return c.ropeFreqFactors ?? new Array<number>(half).fill(1);
  if (s.type === 'linear') return new Array<number>(half).fill(s.factor);
  if (s.type === 'yarn') {
    const dimTurning = (turns: number) => (c.headDim * Math.log(s.originalMaxPositionEmbeddings / (turns * 2 * Math.PI))) / (2 * Math.log(c.ropeTheta));
    const low = Math.max(Math.floor(dimTurning(s.betaFast)), 0), high = Math.min(Math.ceil(dimTurning(s.betaSlow)), c.headDim - 1);
    return Array.from({ length: half }, (_, i) => {
      const kept = 1 - Math.min(1, Math.max(0, (i - low) / Math.max(high - low, 0.001))); // 1: as trained, 0: slowed
      return 1 / (kept + (1 - kept) / s.factor);
    });
  }
  return Array.from({ length: half }, (_, i) => {
    const wavelength = 2 * Math.PI * Math.pow(c.ropeTheta, (2 * i) / c.headDim);
    if (wavelength < s.originalMaxPositionEmbeddings / s.highFreqFactor) return 1;
    if (wavelength > s.originalMaxPositionEmbeddings / s.lowFreqFactor) return s.factor;
    const smooth = (s.originalMaxPositionEmbeddings / wavelength - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return 1 / ((1 - smooth) / s.factor + smooth);
  });
}

/** RoPE's wavelengths over 2π, θ^(2i/d) · factor_i for i < headDim / 2: position p turns by p / this. */
export function ropePeriods(c: ModelConfig): number[] {
  return ropeFreqFactors(c).map((x, i) => Math.pow(c.ropeTheta, (2 * i) / c.headDim) * x);
}

/** Weights of the embeddings, the linear layers and an untied lm_head (norms and biases left out). */
export function parameterCount(c: ModelConfig): number {
  const layer = 2 * (c.numHeads + c.numKvHeads) * c.headDim + 3 * c.intermediateSize; // q, k, v, o; gate, up, down
  return c.hiddenSize * (c.vocabSize * (c.tieWordEmbeddings ? 1 : 2) + c.numLayers * layer);
}

/** The bytes of a graph's RoPE table: cos and sin for every position, fp32. */
export const ropeTableBytes = (c: ModelConfig): number => c.maxPositionEmbeddings * c.headDim * 4;

/** The bytes of a model's weights in a graph at `bytesPerWeight`, with its RoPE table. */
export const graphWeightBytes = (c: ModelConfig, bytesPerWeight: number): number => parameterCount(c) * bytesPerWeight + ropeTableBytes(c);

/** Hugging Face tensor names of one decoder layer's linear projections, in graph order. */
export const PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type Projection = (typeof PROJECTIONS)[number];

export function projectionTensorName(layer: number, proj: Projection): string {
  return `model.layers.${layer}.${['gate_proj', 'up_proj', 'down_proj'].includes(proj) ? 'mlp' : 'self_attn'}.${proj}`;
}

/** [out, in] shape of a projection's weight (Hugging Face / PyTorch Linear layout). */
export function projectionShape(c: ModelConfig, proj: Projection): [number, number] {
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  switch (proj) {
    case 'q_proj': return [q, c.hiddenSize];
    case 'k_proj': case 'v_proj': return [kv, c.hiddenSize];
    case 'o_proj': return [c.hiddenSize, q];
    case 'gate_proj': case 'up_proj': return [c.intermediateSize, c.hiddenSize];
    case 'down_proj': return [c.hiddenSize, c.intermediateSize];
  }
}
