/**
 * The building blocks a decoder architecture is written in (linear, RMSNorm, RoPE, attention, SwiGLU).
 * Each emits ONNX nodes on a Graph. Two lowerings share this code:
 *  - inference (`fused`): ORT contrib ops (MatMulNBits, SimplifiedLayerNormalization, RotaryEmbedding);
 *  - training (`!fused`): plain ONNX ops, each of which has a vector-Jacobian rule in autodiff/.
 */
import { Graph, MS } from '../onnx/graph.ts';
import { blocksFromGgml, quantBits, quantizeBlocks, QBLOCK, type BlockWeight, type Quant } from '../onnx/quant.ts';
import { f32ToF16Array } from '../io/safetensors.ts';
import type { WeightSource } from '../io/weights.ts';
import { ropeAttentionFactor, ropePeriods, type ModelConfig, type Projection } from './config.ts';

export interface LayerOptions {
  quant: Quant;
  /** MatMulNBits accuracy_level: 4 = int8 activations (fast), 0 = fp32 activations. */
  accuracyLevel: number;
  fused: boolean;
  /** Projections that take LoRA A/B inputs, gated per token by the `adapter_mask` input. */
  loraTargets: readonly Projection[];
  /** Weights fed as graph inputs instead of initializers (full-parameter training). */
  weightsAsInputs: boolean;
  /** LoRA scale alpha/r applied in the graph (training: B is PEFT's unscaled B). Inference pre-scales B: 1. */
  loraScale?: number;
  /** Called as weights are built into the graph (quantised): how many weights so far. */
  onWeights?: (done: number) => void;
  /** Blocks already made (prequantize, on worker threads), by weight name: used instead of quantising again. */
  blocks?: ReadonlyMap<string, BlockWeight>;
}

export class Layers {
  private adapterGate?: string;
  private maskShape?: string;
  /** Nodes the LoRA products share: a flattened input, an output shape. */
  private shared = new Map<string, string>();
  private weightsDone = 0;
  private readonly blocksMade = new Map<string, { packed: string; scales: string }>();
  private ropeCache?: { cos: string; sin: string };
  private ropeTablesCached?: { cos: string; sin: string };
  private newPositions?: { pos: string; pos64: string; gather: string; pastMask: string; split: string; decode: string; plainDecode: string; splitShared: string; byKvHead: string; byRow: string };
  constructor(readonly g: Graph, readonly cfg: ModelConfig, readonly weights: WeightSource, readonly opts: LayerOptions) {}

  /** A float32 parameter under its Hugging Face name (initializer, or graph input when training all weights). */
  param(name: string): string {
    if (this.g.initializers.has(name) || this.g.inputs.some((i) => i.name === name)) return name;
    const shape = this.weights.shape(name);
    if (this.opts.weightsAsInputs) return this.g.input(name, 'float32', shape);
    return this.g.initializer(name, 'float32', shape, this.weights.get(name));
  }

  /** x[..., in] @ W^T (+ b) (+ LoRA delta for tokens whose adapter mask is 1). `name` is e.g. model.layers.0.self_attn.q_proj. */
  linear(x: string, name: string, opts: { bias?: boolean; projection?: Projection } = {}): string {
    const g = this.g;
    const [n, k] = this.weights.shape(`${name}.weight`);
    let y: string;
    if (this.bits && !this.opts.weightsAsInputs && k % QBLOCK === 0) {
      const { packed, scales } = this.quantized(`${name}.weight`);
      y = g.node('MatMulNBits', [x, packed, scales], { K: k, N: n, bits: this.bits, block_size: QBLOCK, accuracy_level: this.opts.accuracyLevel }, { domain: MS });
    } else if (this.opts.weightsAsInputs || !this.opts.fused) {
      y = this.matmulT(x, this.param(`${name}.weight`), true);
    } else {
      // Stored pre-transposed so MatMul can prepack it (MLAS packs constant B operands once).
      const w = this.weights.get(`${name}.weight`);
      const wt = new Float32Array(w.length);
      for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) wt[j * n + i] = w[i * k + j];
      y = g.node('MatMul', [x, g.initializer(`${name}.weight_t`, 'float32', [k, n], wt)]);
    }
    if (opts.bias) y = g.node('Add', [y, this.param(`${name}.bias`)]);
    if (opts.projection && this.opts.loraTargets.includes(opts.projection)) y = g.node('Add', [y, this.lora(x, name, n, k, opts.projection)]);
    this.built(n * k);
    return y;
  }

  /**
   * ((x·A^T) ⊙ adapter_mask)·B^T·scale with A [r, in] and B [out, r] as graph inputs (PEFT layout); at inference,
   * transposed (see below), so that a row's delta is the same alone and in a batch. The rank is a
   * dimension per projection: an adapter feeds rank 0 to the projections it leaves out, and one shared name would
   * tell ORT's memory planner those buffers match (it warns on every run when they do not).
   */
  private lora(x: string, name: string, n: number, k: number, projection: string): string {
    const g = this.g, rank = `lora_rank_${projection}`;
    const a = g.input(`${name}.lora_A`, 'float32', [rank, k]);
    const b = g.input(`${name}.lora_B`, 'float32', [n, rank]);
    const scale = this.opts.loraScale ?? 1;
    if (this.opts.fused) {
      // Inference: A·xᵀ [r, batch·tokens], then its transpose times Bᵀ. A row's delta then comes out bit for bit
      // the same alone and in a batch: ORT computes x·Aᵀ for one token (M = 1) on another path than for several,
      // and the last-bit difference, through the int8 activations of q4 layers, changed sampled tokens. (8 % slower
      // decoding with an adapter on the 2.5M default model, where the LoRA products are a large share of the work.)
      this.maskShape ??= g.node('Shape', [g.input('adapter_mask', 'float32', ['batch', 'tokens'])]);
      this.adapterGate ??= g.node('Reshape', ['adapter_mask', g.constant([1, -1])]); // [1, batch·tokens]
      const once = (key: string, make: () => string) => this.shared.get(key) ?? (this.shared.set(key, make()), this.shared.get(key)!);
      const flat = once(`flat ${x}`, () => g.node('Reshape', [x, g.constant([-1, k])])); // q, k and v read the same x
      const hT = g.node('Mul', [g.node('FusedMatMul', [a, flat], { transB: 1, alpha: { float: 1 } }, { domain: MS }), this.adapterGate]);
      const delta = g.node('FusedMatMul', [hT, b], { transA: 1, transB: 1, alpha: { float: scale } }, { domain: MS }); // [batch·tokens, out]
      return g.node('Reshape', [delta, once(`shape ${n}`, () => g.node('Concat', [this.maskShape!, g.constant([n])], { axis: 0 }))]);
    }
    this.adapterGate ??= g.node('Unsqueeze', [g.input('adapter_mask', 'float32', ['batch', 'tokens']), g.constant([2])]);
    const h = g.node('Mul', [this.matmulT(x, a), this.adapterGate]);
    return scale === 1 ? this.matmulT(h, b) : g.node('Mul', [this.matmulT(h, b), g.scalar(scale)]);
  }

  /**
   * x @ w^T. FusedMatMul (transB) reads w in its stored [out, in] layout, so neither the forward nor the training
   * backward (dx = dy·w) needs a transposed copy: one copy of the weights in memory. `always` uses it unfused too.
   */
  matmulT(x: string, w: string, always = false): string {
    if (this.opts.fused || always) return this.g.node('FusedMatMul', [x, w], { transB: 1, alpha: { float: 1 } }, { domain: MS });
    return this.g.node('MatMul', [x, this.g.node('Transpose', [w], { perm: [1, 0] })]);
  }

  rmsNorm(x: string, weightName: string): string {
    const g = this.g, w = this.param(weightName), eps = this.cfg.rmsNormEps;
    if (this.opts.fused) return g.node('SimplifiedLayerNormalization', [x, w], { axis: -1, epsilon: { float: eps } });
    const ms = g.node('ReduceMean', [g.node('Mul', [x, x])], { axes: [-1], keepdims: 1 });
    const inv = g.node('Reciprocal', [g.node('Sqrt', [g.node('Add', [ms, g.scalar(eps)])])]);
    return g.node('Mul', [g.node('Mul', [x, inv]), w]);
  }

  /** RMSNorm of each head of x [B, T, heads·D] over its D values (Qwen3's q_norm / k_norm); returns [B, T, heads·D]. */
  headNorm(x: string, heads: number, weightName: string): string {
    return this.g.node('Reshape', [this.rmsNorm(this.splitHeads(x, heads), weightName), this.g.constant([0, 0, -1])]);
  }

  /** Bits of the quantised formats (MatMulNBits), undefined for fp32. */
  get bits(): 4 | 8 | undefined { return quantBits(this.opts.quant); }

  /** The q4/q8 initializers of a [n, k] weight (packed [n, k/32, 32·bits/8], scales [n·k/32]), made once and shared. */
  private quantized(name: string): { packed: string; scales: string } {
    const hit = this.blocksMade.get(name);
    if (hit) return hit;
    const bits = this.bits!, [n, k] = this.weights.shape(name), blocks = k / QBLOCK;
    // A GGUF's Q4_0 / Q8_0 blocks are taken as they are (read only where no blocks were prepared: encoded() reads the file).
    const stored = this.opts.blocks?.has(name) ? undefined : this.weights.encoded?.(name);
    const q = this.opts.blocks?.get(name) ?? (stored && blocksFromGgml(stored.type, stored.bytes, n, k, bits, stored.where ?? `tensor "${name}"`)) ?? quantizeBlocks(this.weights.get(name), n, k, bits, name);
    if (q.bits !== bits) throw new Error(`graph: the prepared blocks of "${name}" are ${q.bits}-bit, the graph is ${this.opts.quant}`);
    const made = {
      packed: this.g.initializer(`${name}_q${bits}`, 'uint8', [n, blocks, (QBLOCK * bits) / 8], q.packed),
      scales: this.g.initializer(`${name}_scales`, 'float32', [n * blocks], q.scales),
    };
    this.blocksMade.set(name, made);
    return made;
  }

  private built(weights: number): void {
    this.weightsDone += weights;
    this.opts.onWeights?.(this.weightsDone);
  }

  embed(ids: string): string {
    const name = 'model.embed_tokens.weight';
    const [vocab, hidden] = this.weights.shape(name);
    const rows = this.embedTable(ids, name, vocab, hidden);
    this.built(vocab * hidden);
    return rows;
  }

  private embedTable(ids: string, name: string, vocab: number, hidden: number): string {
    const g = this.g;
    if (this.bits && !this.opts.weightsAsInputs) {
      if (hidden % QBLOCK === 0) {
        // Rows looked up in the same blocks the (tied) lm_head's MatMulNBits reads: one copy of the table.
        const { packed, scales } = this.quantized(name), blocks = hidden / QBLOCK;
        const blockScales = g.node('Reshape', [scales, g.constant([vocab, blocks, 1])]);
        const rows = g.node('GatherBlockQuantized', [packed, ids, blockScales], { gather_axis: 0, quantize_axis: 2, block_size: QBLOCK, bits: this.bits }, { domain: MS });
        return g.node('Reshape', [rows, g.constant([0, 0, hidden])]);
      }
      // fp16 table otherwise: half the size; the gathered rows are cast back to fp32.
      const table = g.initializer(`${name}_f16`, 'float16', this.weights.shape(name), f32ToF16Array(this.weights.get(name)));
      return g.node('Cast', [g.node('Gather', [table, ids])], { to: 1 });
    }
    return g.node('Gather', [this.param(name), ids]);
  }

  /**
   * Inference attention over the JS-owned cache [B,Hkv,capacity,D] (the past input; seqlens_k[b] = (row b's length
   * after this step) - 1 masks the unused capacity). An If on the token count: prompts run ORT's GroupQueryAttention
   * with RoPE fused (do_rotary) and take no shared prefix (P = 0); decode steps run plain ops over the cache, and
   * with a shared prefix [Hkv,P,D] (the rows' positions 0..P-1, their own cache then holding P..) a nested branch
   * meets it with all rows' queries in one product per KV head. Returns the attention output and this step's new
   * K/V rows [B,Hkv,T,D] (RoPE applied): only they leave the graph (a whole-cache output would be copied back into
   * JS on every step by onnxruntime-node, O(rows × capacity)).
   */
  cachedAttention(q: string, k: string, v: string, io: { seqlensK: string; total: string; pastKey: string; pastValue: string; prefixKey: string; prefixValue: string }): { out: string; newKey: string; newValue: string } {
    const g = this.g, c = this.cfg, half = c.headDim / 2;
    // Positions of the new tokens: seqlens_k[b] - T + 1 + t, [B, T] int32 (shared by every layer).
    this.newPositions ??= (() => {
      const qShape = g.node('Shape', [q]), T64 = g.node('Slice', [qShape, g.constant([1]), g.constant([2])]);
      const T = g.node('Cast', [T64], { to: 6 });
      const first = g.node('Sub', [g.node('Add', [io.seqlensK, g.constant([1], 'int32', [])]), T]);
      const steps = g.node('Range', [g.constant([0], 'int32', []), g.node('Squeeze', [T, g.constant([0])]), g.constant([1], 'int32', [])]);
      const pos = g.node('Add', [g.node('Unsqueeze', [first, g.constant([1])]), g.node('Unsqueeze', [steps, g.constant([0])])]), pos64 = g.node('Cast', [pos], { to: 7 });
      // GatherElements indices [B, Hkv, T, D] selecting those positions out of a [B, Hkv, capacity, D] buffer.
      const shape = g.node('Concat', [g.node('Slice', [qShape, g.constant([0]), g.constant([1])]), g.constant([c.numKvHeads]), T64, g.constant([c.headDim])], { axis: 0 });
      const gather = g.node('Expand', [g.node('Unsqueeze', [pos64, g.constant([1, 3])]), shape]);
      // Decode steps (one new token per row): the past is visible below each row's length; [B,1,1,capacity].
      const cap = g.node('Squeeze', [g.node('Slice', [g.node('Shape', [io.pastKey]), g.constant([2]), g.constant([3])]), g.constant([0])]);
      // A shared prefix of P positions (forked samples) sits before every row's own cache, which then holds
      // positions P.. : row b's own positions below seqlens_k[b] - P are its past.
      const P = g.node('Slice', [g.node('Shape', [io.prefixKey]), g.constant([1]), g.constant([2])]);
      const visible = g.node('Less', [g.node('Unsqueeze', [g.node('Range', [g.constant([0], 'int64', []), cap, g.constant([1], 'int64', [])]), g.constant([0])]),
        g.node('Unsqueeze', [g.node('Sub', [g.node('Cast', [io.seqlensK], { to: 7 }), P]), g.constant([1])])]);
      const pastMask = g.node('Unsqueeze', [g.node('Where', [visible, g.scalar(0), g.scalar(-1e30)]), g.constant([1, 2])]);
      const decode = g.node('Equal', [g.node('Squeeze', [T, g.constant([0])]), g.constant([1], 'int32', [])]);
      const capDim = g.node('Unsqueeze', [cap, g.constant([0])]);
      const shared = g.node('Greater', [g.node('Squeeze', [P, g.constant([0])]), g.constant([0], 'int64', [])]);
      return {
        pos, pos64, gather, pastMask, decode,
        plainDecode: g.node('And', [decode, g.node('Not', [shared])]),
        split: g.node('Concat', [capDim, g.constant([1])], { axis: 0 }),
        splitShared: g.node('Concat', [P, capDim, g.constant([1])], { axis: 0 }),
        byKvHead: g.node('Concat', [g.constant([c.numKvHeads, -1]), P], { axis: 0 }), // [Hkv, B·G, P]
        byRow: g.node('Concat', [g.constant([c.numKvHeads, -1, c.numHeads / c.numKvHeads]), P], { axis: 0 }), // [Hkv, B, G, P]
      };
    })();
    // ORT fuses RoPE only for head sizes that are multiples of 16; tiny models rotate q/k here instead.
    const fuseRope = c.headDim % 16 === 0;
    let extra: string[] = [];
    if (fuseRope) {
      this.ropeCache ??= (() => {
        const n = c.maxPositionEmbeddings, cos = new Float32Array(n * half), sin = new Float32Array(n * half), period = ropePeriods(c), m = ropeAttentionFactor(c);
        for (let p = 0; p < n; p++) for (let i = 0; i < half; i++) {
          const a = p / period[i];
          cos[p * half + i] = m * Math.cos(a); sin[p * half + i] = m * Math.sin(a);
        }
        return { cos: g.initializer('rope_cos', 'float32', [n, half], cos), sin: g.initializer('rope_sin', 'float32', [n, half], sin) };
      })();
      extra = [this.ropeCache.cos, this.ropeCache.sin];
    } else {
      this.ropeTablesCached ??= this.ropeTables(this.newPositions.pos);
      const flat = (x: string) => g.node('Reshape', [x, g.constant([0, 0, -1])]);
      q = flat(this.rope(this.splitHeads(q, c.numHeads), this.ropeTablesCached));
      k = flat(this.rope(this.splitHeads(k, c.numKvHeads), this.ropeTablesCached));
    }
    const np = this.newPositions, hkv = c.numKvHeads, grp = c.numHeads / hkv, d = c.headDim;
    // Prompts (several new tokens): GroupQueryAttention, the new rows gathered out of its present buffers.
    const prompt = g.branch();
    const [pOut, presentK, presentV] = prompt.nodeN('GroupQueryAttention', [q, k, v, io.pastKey, io.pastValue, io.seqlensK, io.total, ...extra],
      { num_heads: c.numHeads, kv_num_heads: hkv, do_rotary: fuseRope ? 1 : 0, rotary_interleaved: 0 }, { domain: MS, outputs: 3 });
    const branchOutputs = (b: Graph, outs: string[]) => outs.forEach((o, i) => b.output(o, 'float32', i === 0 ? ['batch', 'tokens', 'hidden'] : ['batch', 'kv_heads', 'tokens', 'head_dim']));
    branchOutputs(prompt, [pOut, ...[presentK, presentV].map((p) => prompt.node('GatherElements', [p, np.gather], { axis: 2 }))]);
    // Decode steps: plain ops that read the cache in place, once per KV head (GroupQueryAttention copies each row's
    // past once per query head into a zero-filled buffer: 3× slower at 1,000 positions, `npm run bench -- attention`).
    const decodeStep = (sharedPrefix: boolean) => {
      const step = g.branch();
      const rotate = (x: string, n: number) => (fuseRope ? step.node('RotaryEmbedding', [x, np.pos64, extra[0], extra[1]], { num_heads: n, interleaved: 0 }, { domain: MS }) : x);
      const qg = step.node('Reshape', [rotate(q, c.numHeads), step.constant([0, hkv, grp, d])]); // [B,1,H*D] -> [B,Hkv,G,D]
      const kn = step.node('Reshape', [rotate(k, hkv), step.constant([0, hkv, 1, d])]), vn = step.node('Reshape', [v, step.constant([0, hkv, 1, d])]);
      const scores = (qs: string, keys: string) => step.node('FusedMatMul', [qs, keys], { transB: 1, alpha: { float: 1 / Math.sqrt(d) } }, { domain: MS });
      const parts = [step.node('Add', [scores(qg, io.pastKey), np.pastMask]), scores(qg, kn)];
      // The shared prefix [Hkv, P, D]: the queries of every row in one product per KV head (M = rows × G), so the
      // prefix is read once per step, where rows holding copies each read theirs.
      const perHead = (x: string, shape: string) => step.node('Reshape', [step.node('Transpose', [x], { perm: [1, 0, 2, 3] }), shape]); // [B,Hkv,..] -> [Hkv,B·..]
      const perRow = (x: string, shape: string) => step.node('Transpose', [step.node('Reshape', [x, shape])], { perm: [1, 0, 2, 3] }); // and back
      if (sharedPrefix) parts.unshift(perRow(scores(perHead(qg, step.constant([hkv, -1, d])), io.prefixKey), np.byRow));
      const probs = step.node('Softmax', [step.node('Concat', parts, { axis: -1 })], { axis: -1 });
      const split = step.nodeN('Split', [probs, sharedPrefix ? np.splitShared : np.split], { axis: -1 }, { outputs: parts.length });
      const [pPast, pNew] = split.slice(-2);
      const mixed = [step.node('MatMul', [pPast, io.pastValue]), step.node('Mul', [pNew, vn])];
      if (sharedPrefix) mixed.push(perRow(step.node('MatMul', [perHead(split[0], np.byKvHead), io.prefixValue]), step.constant([hkv, -1, grp, d])));
      branchOutputs(step, [step.node('Reshape', [mixed.reduce((x, y) => step.node('Add', [x, y])), step.constant([0, 1, -1])]), kn, vn]);
      return step;
    };
    // One If per layer on the common path (a decode step without a shared prefix); the others nest.
    const other = g.branch();
    branchOutputs(other, other.nodeN('If', [np.decode], { then_branch: { graph: decodeStep(true) }, else_branch: { graph: prompt } }, { outputs: 3 }));
    const [out, newKey, newValue] = g.nodeN('If', [np.plainDecode], { then_branch: { graph: decodeStep(false) }, else_branch: { graph: other } }, { outputs: 3 });
    return { out, newKey, newValue };
  }

  /** cos/sin tables for the given positions, [B, T, 1, headDim] (Hugging Face rotate_half convention). */
  ropeTables(positions: string): { cos: string; sin: string } {
    const g = this.g, d = this.cfg.headDim;
    const invFreq = ropePeriods(this.cfg).map((x) => 1 / x);
    const pos = g.node('Unsqueeze', [g.node('Cast', [positions], { to: 1 }), g.constant([2])]);
    const freqs = g.node('Mul', [pos, g.constant(invFreq, 'float32', [d / 2])]);
    const emb = g.node('Unsqueeze', [g.node('Concat', [freqs, freqs], { axis: -1 }), g.constant([2])]);
    const m = ropeAttentionFactor(this.cfg), scaled = (x: string) => (m === 1 ? x : g.node('Mul', [x, g.scalar(m)]));
    return { cos: scaled(g.node('Cos', [emb])), sin: scaled(g.node('Sin', [emb])) };
  }

  /** Applies RoPE to x [B, T, heads, D]. */
  rope(x: string, t: { cos: string; sin: string }): string {
    const g = this.g, half = this.cfg.headDim / 2;
    const [x1, x2] = g.nodeN('Split', [x, g.constant([half, half])], { axis: -1 }, { outputs: 2 });
    const rotated = g.node('Concat', [g.node('Neg', [x2]), x1], { axis: -1 });
    return g.node('Add', [g.node('Mul', [x, t.cos]), g.node('Mul', [rotated, t.sin])]);
  }

  /**
   * Reference causal attention in plain ONNX ops (training): q [B,T,H,D], k/v [B,T,Hkv,D] already rotated,
   * `bias` [B,1,1,T,T] additive mask. Returns [B,T,H*D].
   */
  attention(q: string, k: string, v: string, bias: string): string {
    const g = this.g, { numKvHeads: hkv, headDim: d } = this.cfg, grp = this.cfg.numHeads / hkv;
    // Queries [B,Hkv,G,T,D]; keys/values [B,Hkv,1,T,D] broadcast over the G query heads they serve.
    const q5 = g.node('Transpose', [g.node('Reshape', [q, g.constant([0, 0, hkv, grp, d])])], { perm: [0, 2, 3, 1, 4] });
    const kv5 = (x: string) => g.node('Unsqueeze', [g.node('Transpose', [x], { perm: [0, 2, 1, 3] }), g.constant([2])]);
    const kT = g.node('Transpose', [kv5(k)], { perm: [0, 1, 2, 4, 3] });
    const scores = g.node('Mul', [g.node('MatMul', [q5, kT]), g.scalar(1 / Math.sqrt(d))]);
    const out = g.node('MatMul', [g.node('Softmax', [g.node('Add', [scores, bias])], { axis: -1 }), kv5(v)]);
    return g.node('Reshape', [g.node('Transpose', [out], { perm: [0, 3, 1, 2, 4] }), g.constant([0, 0, -1])]);
  }

  /** [B,T,heads*D] -> [B,T,heads,D] */
  splitHeads(x: string, heads: number): string {
    return this.g.node('Reshape', [x, this.g.constant([0, 0, heads, this.cfg.headDim])]);
  }

  silu(x: string): string { return this.g.node('Mul', [x, this.g.node('Sigmoid', [x])]); }
}
