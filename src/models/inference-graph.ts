/**
 * The inference graph contract (later stages depend on it):
 *   inputs   input_ids int64 [B,T], position_ids int64 [B,T], attention_bias float [B,T,P+T] (0 = attend,
 *            -1e9 = masked; built by the KV-cache manager), past_key.i / past_value.i float [B,Hkv,P,D]
 *            (JS-owned cache, capacity-sized, masked), logits_index int64 [B,L] (positions within T whose
 *            logits/hidden states are returned), and with LoRA: adapter_mask float [B,T] plus
 *            <projection>.lora_A [r,in] / .lora_B [out,r] for each targeted projection.
 *   outputs  logits [B,L,V], hidden_states [B,L,H] (final norm; for routers and verifiers),
 *            present_key.i / present_value.i [B,Hkv,T,D]: the new rows only.
 */
import { Graph } from '../onnx/graph.ts';
import type { WeightSource } from '../io/weights.ts';
import type { ModelConfig, Projection } from './config.ts';
import { Layers } from './layers.ts';
import { decoder, lmHead } from './qwen2.ts';

export interface InferenceGraphOptions {
  quant: 'fp32' | 'q4';
  accuracyLevel?: number;
  loraTargets?: readonly Projection[];
}

export function buildInferenceGraph(cfg: ModelConfig, weights: WeightSource, opts: InferenceGraphOptions): Graph {
  const g = new Graph();
  const L = new Layers(g, cfg, weights, {
    quant: opts.quant, accuracyLevel: opts.accuracyLevel ?? 4, fused: true,
    loraTargets: opts.loraTargets ?? [], weightsAsInputs: false,
  });
  const { numKvHeads: hkv, headDim: d } = cfg;
  const inputIds = g.input('input_ids', 'int64', ['batch', 'tokens']);
  const positions = g.input('position_ids', 'int64', ['batch', 'tokens']);
  const bias2d = g.input('attention_bias', 'float32', ['batch', 'tokens', 'total']);
  const bias = g.node('Unsqueeze', [bias2d, g.constant([1, 2])]);
  const past = Array.from({ length: cfg.numLayers }, (_, i) => ({
    k: g.input(`past_key.${i}`, 'float32', ['batch', hkv, 'past', d]),
    v: g.input(`past_value.${i}`, 'float32', ['batch', hkv, 'past', d]),
  }));
  const logitsIndex = g.input('logits_index', 'int64', ['batch', 'selected']);
  const { hidden, newKeys, newValues } = decoder(L, { inputIds, positions, bias, past });
  const picked = g.node('GatherND', [hidden, g.node('Unsqueeze', [logitsIndex, g.constant([2])])], { batch_dims: 1 });
  g.nodeN('Identity', [picked], {}, { names: ['hidden_states'] });
  g.nodeN('Identity', [lmHead(L, picked)], {}, { names: ['logits'] });
  g.output('logits', 'float32', ['batch', 'selected', cfg.vocabSize]);
  g.output('hidden_states', 'float32', ['batch', 'selected', cfg.hiddenSize]);
  for (let i = 0; i < cfg.numLayers; i++) {
    g.nodeN('Identity', [newKeys[i]], {}, { names: [`present_key.${i}`] });
    g.nodeN('Identity', [newValues[i]], {}, { names: [`present_value.${i}`] });
    g.output(`present_key.${i}`, 'float32', ['batch', hkv, 'tokens', d]);
    g.output(`present_value.${i}`, 'float32', ['batch', hkv, 'tokens', d]);
  }
  return g;
}
