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
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** Bias on q/k/v projections (Qwen2 has it, Llama does not). */
  attentionBias: boolean;
  bosTokenId?: number;
  eosTokenIds: number[];
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
