/**
 * The inference graph contract (later stages depend on it):
 *   inputs   input_ids int64 [B,T]; seqlens_k int32 [B] = each row's cache length after this step, minus 1;
 *            total_sequence_length int32 scalar = the largest of those lengths; past_key.i / past_value.i
 *            float [B,Hkv,capacity,D]: the JS-owned KV cache, masked beyond each row's length; prefix_key.i /
 *            prefix_value.i float [Hkv,P,D]: positions 0..P-1 shared by every row (samples forked from one
 *            prompt), the rows' own cache then holding positions P.. (P = 0 without one; decode steps only, a
 *            step of several tokens per row takes P = 0, and with a past it takes one row: onnxruntime's
 *            GroupQueryAttention refuses several, so the runtime runs such rows one by one); logits_index
 *            int64 [B,L]: positions within T whose logits and hidden states are returned; with LoRA also
 *            adapter_mask float [B,T] (0 = base weights, 1 = base + LoRA for that token) and
 *            <projection>.lora_A [r,in] / .lora_B [out,r] for each targeted projection.
 *   outputs  logits [B,L,V]; logits_lse [B,L] = log Σ exp(logits) (the log-probability normaliser, so the
 *            sampler never exponentiates the whole vocabulary in JS); hidden_states [B,L,H] (after the final norm:
 *            for routers and verifiers);
 *            new_key.i / new_value.i [B,Hkv,T,D]: this step's K/V rows (RoPE applied), which the engine writes
 *            into its cache at positions lengths[b] .. lengths[b]+T-1. Only they leave the graph: onnxruntime-node
 *            copies every output back into JS, so a whole-cache output would cost O(rows × capacity) per step.
 * New tokens of row b sit at positions lengths[b] .. lengths[b]+T-1 (RoPE applied as layers.ts cachedAttention
 * says: fused into GroupQueryAttention for prompts, a RotaryEmbedding node on decode steps, plain ops for a head
 * size that is not a multiple of 16).
 */
import { Graph } from '../onnx/graph.ts';
import type { WeightSource } from '../io/weights.ts';
import { parameterCount, type ModelConfig, type Projection } from './config.ts';
import { Layers } from './layers.ts';
import type { BlockWeight, Quant } from '../onnx/quant.ts';
import { decoder, lmHead } from './qwen2.ts';

export interface InferenceGraphOptions {
  quant: Quant;
  accuracyLevel?: number;
  loraTargets?: readonly Projection[];
  /** Building (and quantising) progress, in millions of weights: done of the total (0 first). */
  onProgress?: (done: number, total: number) => void;
  /** q4 / q8 blocks made beforehand (prequantize), by weight name. */
  blocks?: ReadonlyMap<string, BlockWeight>;
}

/**
 * `onProgress(done, total)` in millions of a model's weights, fed with how many weights are done: it reports (0, total)
 * at once, then each count, never past the total, and the total once fed all of them. Undefined without `onProgress`.
 */
export function weightProgress(cfg: ModelConfig, onProgress?: (done: number, total: number) => void): ((weights: number) => void) | undefined {
  if (!onProgress) return undefined;
  const all = parameterCount(cfg), total = Math.ceil(all / 1e6);
  onProgress(0, total);
  return (w) => onProgress(w >= all ? total : Math.min(total, Math.floor(w / 1e6)), total); // all of them: the whole total
}

export function buildInferenceGraph(cfg: ModelConfig, weights: WeightSource, opts: InferenceGraphOptions): Graph {
  // Checked here, not at load: the training graph (plain ops) takes any even head size.
  if (cfg.headDim % 8) throw new Error(`graph: the head size (head_dim, or hidden_size / num_attention_heads) must be a multiple of 8 for onnxruntime's GroupQueryAttention, which runs prompts; got ${cfg.headDim}`);
  const g = new Graph();
  const report = weightProgress(cfg, opts.onProgress);
  const L = new Layers(g, cfg, weights, {
    quant: opts.quant, accuracyLevel: opts.accuracyLevel ?? 4, fused: true,
    loraTargets: opts.loraTargets ?? [], weightsAsInputs: false, blocks: opts.blocks, onWeights: report,
  });
  const { numKvHeads: hkv, headDim: d } = cfg;
  const inputIds = g.input('input_ids', 'int64', ['batch', 'tokens']);
  const seqlensK = g.input('seqlens_k', 'int32', ['batch']);
  const total = g.input('total_sequence_length', 'int32', []);
  const past = Array.from({ length: cfg.numLayers }, (_, i) => ({
    k: g.input(`past_key.${i}`, 'float32', ['batch', hkv, 'capacity', d]),
    v: g.input(`past_value.${i}`, 'float32', ['batch', hkv, 'capacity', d]),
    prefixK: g.input(`prefix_key.${i}`, 'float32', [hkv, 'prefix', d]),
    prefixV: g.input(`prefix_value.${i}`, 'float32', [hkv, 'prefix', d]),
  }));
  const logitsIndex = g.input('logits_index', 'int64', ['batch', 'selected']);
  const cache = { seqlensK, total, past, newRows: [] as { k: string; v: string }[] };
  const hidden = decoder(L, { inputIds, cache });
  const picked = g.node('GatherND', [hidden, g.node('Unsqueeze', [logitsIndex, g.constant([2])])], { batch_dims: 1 }, { names: ['hidden_states'] });
  const logits = g.node('Identity', [lmHead(L, picked)], {}, { names: ['logits'] });
  g.nodeN('ReduceLogSumExp', [logits], { axes: [-1], keepdims: 0 }, { names: ['logits_lse'] });
  g.output('logits', 'float32', ['batch', 'selected', cfg.vocabSize]);
  g.output('logits_lse', 'float32', ['batch', 'selected']);
  g.output('hidden_states', 'float32', ['batch', 'selected', cfg.hiddenSize]);
  cache.newRows.forEach((r, i) => {
    g.nodeN('Identity', [r.k], {}, { names: [`new_key.${i}`] });
    g.nodeN('Identity', [r.v], {}, { names: [`new_value.${i}`] });
    g.output(`new_key.${i}`, 'float32', ['batch', hkv, 'tokens', d]);
    g.output(`new_value.${i}`, 'float32', ['batch', hkv, 'tokens', d]);
  });
  report?.(parameterCount(cfg)); // done: norms and any unquantised weight are not counted as they are built
  return g;
}
