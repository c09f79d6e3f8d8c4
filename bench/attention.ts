/**
 * Cost of one decode step's attention over a KV cache, as the inference graph runs it: 24 layers of Qwen2.5-0.5B's
 * head layout (14 query heads, 2 KV heads, head size 64), B rows each attending over `len` cached positions in a
 * cache of the runtime's capacity, one new token per row. ORT's GroupQueryAttention (past in, the new rows taken out
 * of its present output; what the graph runs for prompts) against ONNX's own Attention (opset 23: past in, an
 * additive mask over the unused capacity, the new row sliced off the end of its present) and the runtime's own
 * attention layer (Layers.cachedAttention, built exactly as the inference graph builds it: for one new token its
 * If takes the plain ops that read the cache in place; RoPE included, which the other two skip). Then 8 rows forked
 * from a 1,000-token prompt: each with its own copy of it, against the prompt held once as a shared prefix. Random inputs.
 * Writes bench/results/attention-<date>.json + .md.
 *   node --import tsx bench/attention.ts [--threads 2]
 */
import ort from '../src/runtime/ort.ts';
import { Graph, MS } from '../src/onnx/graph.ts';
import { Layers } from '../src/models/layers.ts';
import { MemoryWeights } from '../src/io/weights.ts';
import { grownCapacity } from '../src/runtime/kv-cache.ts';
import { seededRandom } from '../src/runtime/sampler.ts';
import { QWEN25_05B } from '../test/helpers/random-model.ts';
import { isMainModule } from '../src/main-module.ts';
import { scriptArgs, publish, machineNow, machineText } from './write.ts';

const { numHeads: H, numKvHeads: HKV, headDim: D, numLayers: LAYERS } = QWEN25_05B;
const CASES = [{ rows: 1, len: 64 }, { rows: 8, len: 64 }, { rows: 1, len: 1000 }, { rows: 8, len: 1000 }];
type Kind = 'GroupQueryAttention' | 'Attention (opset 23)' | 'runtime (plain ops)';
const KINDS: Kind[] = ['GroupQueryAttention', 'Attention (opset 23)', 'runtime (plain ops)'];

function graph(kind: Kind, B: number, cap: number): Uint8Array {
  const g = new Graph();
  const q = g.input('q', 'float32', [B, 1, H * D]), k = g.input('k', 'float32', [B, 1, HKV * D]), v = g.input('v', 'float32', [B, 1, HKV * D]);
  const extra = kind === 'Attention (opset 23)'
    ? [g.input('mask', 'float32', [B, 1, 1, cap + 1])]
    : [g.input('seqlens_k', 'int32', [B]), g.input('total', 'int32', [])];
  const L = new Layers(g, QWEN25_05B, new MemoryWeights(new Map()), { quant: 'fp32', accuracyLevel: 4, fused: true, loraTargets: [], weightsAsInputs: false });
  const outs: string[] = [], rows: string[] = [];
  for (let l = 0; l < LAYERS; l++) {
    const pk = g.input(`past_key.${l}`, 'float32', [B, HKV, cap, D]), pv = g.input(`past_value.${l}`, 'float32', [B, HKV, cap, D]);
    if (kind === 'runtime (plain ops)') {
      const prefix = (n: string) => g.input(`${n}.${l}`, 'float32', [HKV, 'prefix', D]);
      const a = L.cachedAttention(q, k, v, { seqlensK: extra[0], total: extra[1], pastKey: pk, pastValue: pv, prefixKey: prefix('prefix_key'), prefixValue: prefix('prefix_value') });
      outs.push(a.out); rows.push(a.newKey);
    } else if (kind === 'GroupQueryAttention') {
      const [o, presentK] = g.nodeN('GroupQueryAttention', [q, k, v, pk, pv, ...extra], { num_heads: H, kv_num_heads: HKV }, { domain: MS, outputs: 3 });
      // The new row sits at position total - 1 of the present output (all rows share one length here).
      const at = g.node('Cast', [g.node('Unsqueeze', [g.node('Sub', [extra[1], g.constant([1], 'int32', [])]), g.constant([0])])], { to: 7 });
      outs.push(o); rows.push(g.node('Slice', [presentK, at, g.node('Add', [at, g.constant([1])]), g.constant([2])]));
    } else {
      const qh = g.node('Transpose', [g.node('Reshape', [q, g.constant([B, 1, H, D])])], { perm: [0, 2, 1, 3] });
      const kh = g.node('Transpose', [g.node('Reshape', [k, g.constant([B, 1, HKV, D])])], { perm: [0, 2, 1, 3] });
      const vh = g.node('Transpose', [g.node('Reshape', [v, g.constant([B, 1, HKV, D])])], { perm: [0, 2, 1, 3] });
      const [o, presentK] = g.nodeN('Attention', [qh, kh, vh, extra[0], pk, pv], { q_num_heads: H, kv_num_heads: HKV }, { outputs: 3 });
      outs.push(o); rows.push(g.node('Slice', [presentK, g.constant([cap]), g.constant([cap + 1]), g.constant([2])]));
    }
  }
  g.nodeN('Concat', outs, { axis: -1 }, { names: ['out'] });
  g.output('out', 'float32', kind === 'Attention (opset 23)' ? [B, H, 1, LAYERS * D] : [B, 1, LAYERS * H * D]);
  g.nodeN('Concat', rows, { axis: 2 }, { names: ['new_rows'] }); g.output('new_rows', 'float32', [B, HKV, LAYERS, D]);
  return g.toModelProto({ opset: kind === 'Attention (opset 23)' ? 23 : 17 });
}

export async function runAttentionBench(o: { threads?: number; reps?: number; /** null: write nothing */ resultsDir?: string | null } = {}) {
  const machine = machineNow();
  const threads = o.threads ?? 2, reps = o.reps ?? 15, rand = seededRandom(7);
  const fill = (n: number) => Float32Array.from({ length: n }, () => rand() - 0.5);
  // One new token per row: its query, key and value.
  const newToken = (B: number): Record<string, ort.Tensor> => ({
    q: new ort.Tensor('float32', fill(B * H * D), [B, 1, H * D]), k: new ort.Tensor('float32', fill(B * HKV * D), [B, 1, HKV * D]), v: new ort.Tensor('float32', fill(B * HKV * D), [B, 1, HKV * D]),
  });
  // One session run's ms: the lower quartile of `reps` after 3 warm-ups (other work on the machine only slows runs).
  const timed = async (graphBytes: Uint8Array, f: Record<string, ort.Tensor>): Promise<number> => {
    const session = await ort.InferenceSession.create(graphBytes, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' });
    for (let i = 0; i < 3; i++) await session.run(f);
    const t: number[] = [];
    for (let i = 0; i < reps; i++) { const t0 = performance.now(); await session.run(f); t.push(performance.now() - t0); }
    await session.release();
    return t.sort((a, b) => a - b)[Math.floor(reps / 4)];
  };
  const rows: { kind: Kind; rows: number; len: number; capacity: number; ms: number }[] = [];
  for (const c of CASES) {
    const B = c.rows, cap = grownCapacity(64, c.len + 1), feeds = newToken(B);
    for (let l = 0; l < LAYERS; l++) for (const n of ['past_key', 'past_value']) feeds[`${n}.${l}`] = new ort.Tensor('float32', fill(B * HKV * cap * D), [B, HKV, cap, D]);
    // ONNX Attention's additive mask over past + new positions: the unused capacity is hidden.
    const m = new Float32Array(B * (cap + 1));
    for (let b = 0; b < B; b++) m.fill(-Infinity, b * (cap + 1) + c.len, b * (cap + 1) + cap);
    const mask = new ort.Tensor('float32', m, [B, 1, 1, cap + 1]);
    for (const kind of KINDS) {
      const f: Record<string, ort.Tensor> = kind === 'Attention (opset 23)'
        ? { ...feeds, mask }
        : { ...feeds, seqlens_k: new ort.Tensor('int32', new Int32Array(B).fill(c.len), [B]), total: new ort.Tensor('int32', Int32Array.of(c.len + 1), []) };
      if (kind === 'runtime (plain ops)') for (let l = 0; l < LAYERS; l++) for (const n of ['prefix_key', 'prefix_value']) f[`${n}.${l}`] = new ort.Tensor('float32', new Float32Array(0), [HKV, 0, D]);
      const ms = await timed(graph(kind, B, cap), f);
      rows.push({ kind, rows: B, len: c.len, capacity: cap, ms });
      console.error(`${kind}: ${B} rows × ${c.len} positions (capacity ${cap}): ${ms.toFixed(2)} ms`);
    }
  }
  // 8 rows forked from one 1,000-token prompt: each with its own copy (the 8 × 1000 row above) against the prompt
  // held once as the shared prefix, which all rows' queries meet in one product per KV head (their own caches empty,
  // at the first capacity, 64).
  const B = 8, P = 1000, own = 64;
  const f: Record<string, ort.Tensor> = {
    ...newToken(B), seqlens_k: new ort.Tensor('int32', new Int32Array(B).fill(P), [B]), total: new ort.Tensor('int32', Int32Array.of(P + 1), []),
  };
  for (let l = 0; l < LAYERS; l++) {
    for (const n of ['past_key', 'past_value']) f[`${n}.${l}`] = new ort.Tensor('float32', fill(B * HKV * own * D), [B, HKV, own, D]);
    for (const n of ['prefix_key', 'prefix_value']) f[`${n}.${l}`] = new ort.Tensor('float32', fill(HKV * P * D), [HKV, P, D]);
  }
  const sharedMs = await timed(graph('runtime (plain ops)', B, own), f);
  const copies = rows.find((r) => r.kind === 'runtime (plain ops)' && r.rows === B && r.len === P)!, mb = (positions: number) => (positions * LAYERS * 2 * HKV * D * 4) / 2 ** 20;
  const shared = { rows: B, prefix: P, ownCapacity: own, ms: sharedMs, copiesMs: copies.ms, kvMiB: mb(P + B * own), copiesKvMiB: mb(B * copies.capacity) };
  console.error(`shared prefix: ${B} rows over a ${P}-position prefix: ${shared.ms.toFixed(2)} ms (own copies ${copies.ms.toFixed(2)} ms)`);
  const date = new Date().toISOString().slice(0, 10);
  const result = { date, threads, layers: LAYERS, heads: { query: H, kv: HKV, size: D }, machine, rows, shared };
  const md = [`# Decode-step attention cost ${date}`, '',
    `${LAYERS} layers of Qwen2.5-0.5B's attention (${H} query heads, ${HKV} KV heads, head size ${D}), one new token per row over a cache of the runtime's capacity; random inputs, ${threads} threads, ${machineText(result.machine)}. One session run (lower quartile of ${reps}).`, '',
    `| rows × cached positions | capacity | ${KINDS.join(' | ')} |`, `|---|---:|${KINDS.map(() => '---:').join('|')}|`,
    ...CASES.map((c) => {
      const r = rows.filter((x) => x.rows === c.rows && x.len === c.len);
      return `| ${c.rows} × ${c.len} | ${r[0].capacity} | ${r.map((x) => `${x.ms.toFixed(2)} ms`).join(' | ')} |`;
    }), '',
    `${B} samples forked from one ${P}-token prompt, the runtime's attention: each row holding its own copy of the prompt (the ${B} × ${P} row above) against the prompt held once as a shared prefix, which the queries of all rows meet in one product per KV head (their own caches at the first capacity, ${own}).`, '',
    '| | attention, one decode step | KV cache |', '|---|---:|---:|',
    `| own copies | ${shared.copiesMs.toFixed(2)} ms | ${shared.copiesKvMiB.toFixed(1)} MiB |`,
    `| shared prefix | ${shared.ms.toFixed(2)} ms | ${shared.kvMiB.toFixed(1)} MiB |`, ''].join('\n');
  publish(o.resultsDir, `attention-${date}`, result, md);
  return result;
}

if (isMainModule(import.meta.url)) {
  const a = scriptArgs('bench/attention.ts', { threads: 'count', 'results-dir': 'string', 'no-write': 'boolean' });
  await runAttentionBench({ threads: a.num('threads'), resultsDir: a.resultsDir() });
}
