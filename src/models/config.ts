/** Decoder-only transformer configuration (Qwen2 and Llama families), normalised from any loader. */
export interface ModelConfig {
  architecture: 'qwen2' | 'llama';
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** Llama 3.x long-context RoPE (Hugging Face rope_scaling, rope_type "llama3"); absent: plain RoPE. */
  ropeScaling?: Llama3RopeScaling;
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

export interface Llama3RopeScaling { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }

/**
 * RoPE's divisor for each of the headDim / 2 frequencies: 1 for plain RoPE; under llama3 scaling, `factor` for
 * wavelengths longer than original context / lowFreqFactor, 1 below original context / highFreqFactor, and a
 * smooth blend between (Meta's Llama 3.1 recipe; GGUF stores the same numbers as rope_freqs.weight).
 */
export function ropeFreqFactors(c: ModelConfig): number[] {
  const half = c.headDim / 2;
  const s = c.ropeScaling;
  if (!s) return c.ropeFreqFactors ?? new Array<number>(half).fill(1);
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

/** Hugging Face tensor names of one decoder layer's linear projections, in graph order. */
export const PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type Projection = (typeof PROJECTIONS)[number];

export function projectionTensorName(layer: number, proj: Projection): string {
  const block = proj.endsWith('_proj') && ['gate_proj', 'up_proj', 'down_proj'].includes(proj) ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${block}.${proj}`;
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
