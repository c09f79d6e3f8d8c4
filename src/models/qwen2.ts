/**
 * Qwen2 / Llama decoder (the two differ only by config: QKV bias, tied embeddings, rope_theta).
 * Tensor names are Hugging Face's, so loading is a lookup. The same function builds the inference
 * graph and the forward half of the training graph.
 */
import type { Layers } from './layers.ts';

export interface DecoderIO {
  inputIds: string;         // int64 [B, T]
  positions: string;        // int64 [B, T]
  bias: string;             // float [B, 1, 1, T, P+T] additive attention mask
  past?: { k: string; v: string }[]; // per layer [B, Hkv, P, D]; absent when training
}

/** Returns the final-norm hidden states [B, T, H] and each layer's new (rotated) keys and values [B, Hkv, T, D]. */
export function decoder(L: Layers, io: DecoderIO): { hidden: string; newKeys: string[]; newValues: string[] } {
  const { g, cfg } = L;
  const rope = L.ropeTables(io.positions);
  let h = L.embed(io.inputIds);
  const newKeys: string[] = [], newValues: string[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`, bias = cfg.attentionBias;
    const x = L.rmsNorm(h, `${p}.input_layernorm.weight`);
    const q = L.rope(L.splitHeads(L.linear(x, `${p}.self_attn.q_proj`, { bias, projection: 'q_proj' }), cfg.numHeads), rope);
    const k = L.rope(L.splitHeads(L.linear(x, `${p}.self_attn.k_proj`, { bias, projection: 'k_proj' }), cfg.numKvHeads), rope);
    const v = L.splitHeads(L.linear(x, `${p}.self_attn.v_proj`, { bias, projection: 'v_proj' }), cfg.numKvHeads);
    const kT = g.node('Transpose', [k], { perm: [0, 2, 1, 3] }), vT = g.node('Transpose', [v], { perm: [0, 2, 1, 3] });
    newKeys.push(kT); newValues.push(vT);
    const qFlat = g.node('Reshape', [q, g.constant([0, 0, -1])]);
    const attn = L.attention(qFlat, kT, vT, io.bias, io.past?.[i]);
    h = g.node('Add', [h, L.linear(attn, `${p}.self_attn.o_proj`, { projection: 'o_proj' })]);
    const y = L.rmsNorm(h, `${p}.post_attention_layernorm.weight`);
    const gate = L.silu(L.linear(y, `${p}.mlp.gate_proj`, { projection: 'gate_proj' }));
    const up = L.linear(y, `${p}.mlp.up_proj`, { projection: 'up_proj' });
    h = g.node('Add', [h, L.linear(g.node('Mul', [gate, up]), `${p}.mlp.down_proj`, { projection: 'down_proj' })]);
  }
  return { hidden: L.rmsNorm(h, 'model.norm.weight'), newKeys, newValues };
}

/** Logits for hidden states [..., H]: lm_head, or the embedding table when tied. */
export function lmHead(L: Layers, hidden: string): string {
  const tied = L.cfg.tieWordEmbeddings || !L.weights.has('lm_head.weight');
  if (!tied) return L.linear(hidden, 'lm_head');
  if (L.opts.quant === 'q4' && !L.opts.weightsAsInputs) return L.linear(hidden, 'model.embed_tokens', {});
  return L.matmulT(hidden, L.param('model.embed_tokens.weight'));
}
