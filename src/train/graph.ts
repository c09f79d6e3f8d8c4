/**
 * The training graph: the model's forward (the same `decoder()` as inference, in the plain-op lowering),
 * logits only at target positions, masked token cross-entropy, and the backward pass emitted by autodiff.
 *
 * Inputs: input_ids int64 [B,T]; position_ids int64 [B,T]; attention_bias float [B,1,1,T,T] (causal + padding,
 * 0 or -1e9); target_index int64 [N] (flat b*T+t of each position that predicts a target); targets int64 [N];
 * target_weight float [N] (per-target loss weight, e.g. 1/targets-in-the-optimizer-step); with LoRA also
 * adapter_mask float [B,T] and the trainable <projection>.lora_A / .lora_B; with full training every weight.
 * With the policy objective also advantage, old_logprob (behaviour 'input') and ref_logprob (beta > 0), all float [N].
 * Outputs: loss (scalar), token_logprob [N] (log p of each target), and grad.<name> per trainable tensor.
 * With a temperature τ every log p is of softmax(logits / τ), the distribution rollouts sample from.
 */
import { Graph, IN_MEMORY_LIMIT } from '../onnx/graph.ts';
import type { WeightSource } from '../io/weights.ts';
import { graphWeightBytes, type ModelConfig, type Projection } from '../models/config.ts';
import { Layers } from '../models/layers.ts';
import { decoder, lmHead } from '../models/qwen2.ts';
import { addBackward } from '../autodiff/backward.ts';
import { policyLoss, tokenLogprobs, weightedNll } from '../autodiff/loss.ts';

/** LoRA: `scale` = PEFT's factor, lora_alpha / r (or / √r with rsLoRA; B is PEFT's unscaled B). */
export type TrainMode = { kind: 'lora'; targets: readonly Projection[]; scale: number } | { kind: 'full' };

/**
 * 'nll': −Σ w·log p (SFT). 'policy': clipped policy gradient + optional KL (RL; see autodiff/loss.ts), the ratio
 * against behaviour log-probs fed as old_logprob ('input') or against the current policy detached ('current', the
 * default: on-policy, one update per batch of rollouts).
 */
export type Objective = { kind: 'nll' } | { kind: 'policy'; clipEps: number; beta: number; behaviour?: 'input' | 'current' };

export interface TrainingGraph {
  graph: Graph;
  /** Trainable tensor names (graph inputs), in a stable order, with their shapes. */
  params: { name: string; shape: (number | string)[] }[];
  /** Frozen weights the graph takes as inputs (see frozenAsInputs), fed as they are at every step. */
  frozen: string[];
}

/**
 * Whether LoRA's frozen weights go in as graph inputs rather than initializers: where, fp32 with the RoPE table,
 * they would pass the 2 GiB an ONNX model holds in memory (Qwen3-0.6B's shape and up: onnxruntime refused the
 * model after the whole setup). Full training always takes its weights as inputs.
 */
export const frozenAsInputs = (cfg: ModelConfig): boolean => graphWeightBytes(cfg, 4) > IN_MEMORY_LIMIT;

export function buildTrainingGraph(cfg: ModelConfig, weights: WeightSource, mode: TrainMode, objective: Objective = { kind: 'nll' }, temperature = 1, gradients = true, asInputs = mode.kind === 'full' || frozenAsInputs(cfg)): TrainingGraph {
  const g = new Graph();
  const L = new Layers(g, cfg, weights, {
    quant: 'fp32', accuracyLevel: 0, fused: false,
    loraTargets: mode.kind === 'lora' ? mode.targets : [], weightsAsInputs: asInputs,
    loraScale: mode.kind === 'lora' ? mode.scale : 1,
  });
  const inputIds = g.input('input_ids', 'int64', ['batch', 'tokens']);
  const positions = g.input('position_ids', 'int64', ['batch', 'tokens']);
  const bias = g.input('attention_bias', 'float32', ['batch', 1, 1, 'tokens', 'tokens']);
  const index = g.input('target_index', 'int64', ['targets']);
  const targets = g.input('targets', 'int64', ['targets']);
  const weight = g.input('target_weight', 'float32', ['targets']);
  const hidden = decoder(L, { inputIds, positions, bias });
  const rows = g.node('Gather', [g.node('Reshape', [hidden, g.constant([-1, cfg.hiddenSize])]), index], { axis: 0 });
  const logits = lmHead(L, rows);
  const logp = tokenLogprobs(g, temperature === 1 ? logits : g.node('Mul', [logits, g.scalar(1 / temperature)]), targets);
  const loss = objective.kind === 'nll' ? weightedNll(g, logp, weight) : policyLoss(g, logp, {
    old: objective.behaviour === 'input' ? g.input('old_logprob', 'float32', ['targets']) : undefined, advantage: g.input('advantage', 'float32', ['targets']),
    ref: objective.beta > 0 ? g.input('ref_logprob', 'float32', ['targets']) : undefined, weights: weight,
  }, objective.clipEps, objective.beta);
  g.nodeN('Identity', [loss], {}, { names: ['loss'] });
  g.nodeN('Identity', [logp], {}, { names: ['token_logprob'] });
  g.output('loss', 'float32', []);
  g.output('token_logprob', 'float32', ['targets']);
  const params = g.inputs
    .filter((i) => (mode.kind === 'lora' ? /\.lora_[AB]$/.test(i.name) : i.dtype === 'float32' && weights.has(i.name)))
    .map((i) => ({ name: i.name, shape: i.dims }));
  const frozen = mode.kind === 'lora' ? g.inputs.filter((i) => weights.has(i.name)).map((i) => i.name) : [];
  if (!gradients) return { graph: g, params, frozen }; // log-probs only (a reference policy): no backward to run
  const grads = addBackward(g, 'loss', params.map((p) => p.name));
  for (const p of params) {
    g.nodeN('Identity', [grads.get(p.name)!], {}, { names: [`grad.${p.name}`] });
    g.output(`grad.${p.name}`, 'float32', p.shape);
  }
  return { graph: g, params, frozen };
}
