/**
 * Losses built only from ops that have VJP rules, so `addBackward` can differentiate them.
 */
import type { Graph } from '../onnx/graph.ts';

/**
 * Weighted token cross-entropy: Σ_i w_i · (−log softmax(logits_i)[t_i]) / Σ_i w_i, a scalar.
 * logits [..., V] (float), targets int64 [...], weights float [...] of the logits' dtype (0 masks a
 * token, e.g. prompt or padding positions; such a token's target must still be a valid id in [-V, V)).
 * The result is NaN when every weight is 0.
 */
export function crossEntropy(g: Graph, logits: string, targets: string, weights: string): string {
  const logp = g.node('LogSoftmax', [g.node('Flatten', [logits], { axis: -1 })], { axis: -1 }); // [N, V]
  const t = g.node('Reshape', [targets, g.constant([-1, 1])]);
  // GatherElements picks one log-probability per row; its VJP scatters back into a [N, V] zero table.
  const picked = g.node('Reshape', [g.node('GatherElements', [logp, t], { axis: 1 }), g.constant([-1])]);
  const w = g.node('Reshape', [weights, g.constant([-1])]);
  const nll = g.node('Neg', [g.node('ReduceSum', [g.node('Mul', [picked, w]), g.constant([0])], { keepdims: 0 })]);
  return g.node('Div', [nll, g.node('ReduceSum', [w, g.constant([0])], { keepdims: 0 })]);
}
