/**
 * Losses built only from ops that have VJP rules, so `addBackward` can differentiate them.
 */
import type { Graph } from '../onnx/graph.ts';
import { stopGradient } from './backward.ts';

/** log softmax(logits_i)[t_i] for each row: logits [N, V], targets int64 [N] → [N]. */
export function tokenLogprobs(g: Graph, logits: string, targets: string): string {
  const logp = g.node('LogSoftmax', [logits], { axis: -1 });
  const t = g.node('Reshape', [targets, g.constant([-1, 1])]);
  return g.node('Reshape', [g.node('GatherElements', [logp, t], { axis: 1 }), g.constant([-1])]);
}

/** −Σ_i w_i · logp_i: weighted negative log-likelihood; the caller's weights normalise (e.g. 1/targets per optimizer step). */
export function weightedNll(g: Graph, logp: string, weights: string): string {
  return g.node('Neg', [g.node('ReduceSum', [g.node('Mul', [logp, weights]), g.constant([0])], { keepdims: 0 })]);
}

/**
 * GRPO / PPO clipped policy-gradient loss with an optional k3 KL penalty to a reference policy:
 *   Σ_i w_i · ( −min(ρ_i A_i, clip(ρ_i, 1−ε, 1+ε) A_i) + β·(exp(ref_i − logp_i) − (ref_i − logp_i) − 1) ),
 * ρ_i = exp(logp_i − old_i). All inputs [N]; min/clip are written with Where so they have VJP rules.
 * Without `old` the behaviour policy is the current one, detached: ρ = 1 and the gradient is A·∇logp (on-policy,
 * one update per batch of rollouts, as TRL's GRPO with num_iterations = 1).
 */
export function policyLoss(g: Graph, logp: string, io: { old?: string; advantage: string; ref?: string; weights: string }, clipEps: number, beta: number): string {
  const ratio = g.node('Exp', [g.node('Sub', [logp, io.old ?? stopGradient(g, logp)])]);
  const hi = g.scalar(1 + clipEps), lo = g.scalar(1 - clipEps);
  const clipped = g.node('Where', [g.node('Greater', [ratio, hi]), hi, g.node('Where', [g.node('Less', [ratio, lo]), lo, ratio])]);
  const a = g.node('Mul', [ratio, io.advantage]), b = g.node('Mul', [clipped, io.advantage]);
  let per = g.node('Neg', [g.node('Where', [g.node('Less', [a, b]), a, b])]);
  if (io.ref && beta > 0) {
    const d = g.node('Sub', [io.ref, logp]);
    per = g.node('Add', [per, g.node('Mul', [g.scalar(beta), g.node('Sub', [g.node('Sub', [g.node('Exp', [d]), d]), g.scalar(1)])])]);
  }
  return g.node('ReduceSum', [g.node('Mul', [per, io.weights]), g.constant([0])], { keepdims: 0 });
}
