/**
 * Qwen2 / Qwen3 / Llama decoder (they differ only by config: QKV bias, Qwen3's per-head q/k RMSNorm, tied
 * embeddings, rope_theta).
 * Tensor names are Hugging Face's, so loading is a lookup. The same function builds the inference
 * graph and the forward half of the training graph.
 */
import type { Layers } from './layers.ts';
import { hasQkNorm } from './config.ts';

export interface DecoderIO {
  inputIds: string; // int64 [B, T]
  /** Inference: the JS-owned KV cache; `newRows` receives each layer's new K/V rows [B, Hkv, T, D]. */
  cache?: { seqlensK: string; total: string; past: { k: string; v: string; prefixK: string; prefixV: string }[]; newRows: { k: string; v: string }[] };
  /** Training: positions int64 [B, T] and an additive causal mask [B, 1, 1, T, T]. */
  positions?: string;
  bias?: string;
}

/** Returns the final-norm hidden states [B, T, H]. */
export function decoder(L: Layers, io: DecoderIO): string {
  const { g, cfg } = L;
  const rope = io.cache ? undefined : L.ropeTables(io.positions!);
  let h = L.embed(io.inputIds);
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`, bias = cfg.attentionBias;
    const x = L.rmsNorm(h, `${p}.input_layernorm.weight`);
    let q = L.linear(x, `${p}.self_attn.q_proj`, { bias, projection: 'q_proj' });
    let k = L.linear(x, `${p}.self_attn.k_proj`, { bias, projection: 'k_proj' });
    if (hasQkNorm(cfg)) {
      q = L.headNorm(q, cfg.numHeads, `${p}.self_attn.q_norm.weight`);
      k = L.headNorm(k, cfg.numKvHeads, `${p}.self_attn.k_norm.weight`);
    }
    const v = L.linear(x, `${p}.self_attn.v_proj`, { bias, projection: 'v_proj' });
    let attn: string;
    if (io.cache) {
      const a = L.cachedAttention(q, k, v, { seqlensK: io.cache.seqlensK, total: io.cache.total, pastKey: io.cache.past[i].k, pastValue: io.cache.past[i].v, prefixKey: io.cache.past[i].prefixK, prefixValue: io.cache.past[i].prefixV });
      io.cache.newRows.push({ k: a.newKey, v: a.newValue });
      attn = a.out;
    } else {
      attn = L.attention(L.rope(L.splitHeads(q, cfg.numHeads), rope!), L.rope(L.splitHeads(k, cfg.numKvHeads), rope!), L.splitHeads(v, cfg.numKvHeads), io.bias!);
    }
    h = g.node('Add', [h, L.linear(attn, `${p}.self_attn.o_proj`, { projection: 'o_proj' })]);
    const y = L.rmsNorm(h, `${p}.post_attention_layernorm.weight`);
    const gate = L.silu(L.linear(y, `${p}.mlp.gate_proj`, { projection: 'gate_proj' }));
    const up = L.linear(y, `${p}.mlp.up_proj`, { projection: 'up_proj' });
    h = g.node('Add', [h, L.linear(g.node('Mul', [gate, up]), `${p}.mlp.down_proj`, { projection: 'down_proj' })]);
  }
  return L.rmsNorm(h, 'model.norm.weight');
}

/** Logits for hidden states [..., H]: lm_head, or the embedding table when tied. */
export function lmHead(L: Layers, hidden: string): string {
  const tied = L.cfg.tieWordEmbeddings || !L.weights.has('lm_head.weight');
  if (!tied) return L.linear(hidden, 'lm_head');
  if (L.bits && !L.opts.weightsAsInputs) return L.linear(hidden, 'model.embed_tokens');
  return L.matmulT(hidden, L.param('model.embed_tokens.weight'), true);
}
