/**
 * Cost of one decode step's attention over a KV cache, as the inference graph runs it: 24 layers of Qwen2.5-0.5B's
 * head layout (14 query heads, 2 KV heads, head size 64), B rows each attending over `len` cached positions in a
 * cache of the runtime's capacity, one new token per row. ORT's GroupQueryAttention (what the graph uses: past in,
 * the new rows gathered out of its present output) against ONNX's own Attention (opset 23: past in, an additive
 * mask over the unused capacity, the new row sliced off the end of its present), and plain ops that read the
 * cache in place: queries grouped per KV head, FusedMatMul against the past (masked) and the new key, one
 * softmax, two MatMuls — no copy of the past. Random inputs.
 * Writes bench/results/attention-<date>.json + .md.
 *   node --import tsx bench/attention.ts [--threads 2]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ort from 'onnxruntime-node';
import { Graph, MS } from '../src/onnx/graph.ts';
import { grownCapacity } from '../src/runtime/kv-cache.ts';
import { seededRandom } from '../src/runtime/sampler.ts';

const H = 14, HKV = 2, D = 64, LAYERS = 24;
const CASES = [{ rows: 1, len: 64 }, { rows: 8, len: 64 }, { rows: 1, len: 1000 }, { rows: 8, len: 1000 }];
type Kind = 'GroupQueryAttention' | 'Attention (opset 23)' | 'plain ops';
const KINDS: Kind[] = ['GroupQueryAttention', 'Attention (opset 23)', 'plain ops'];

function graph(kind: Kind, B: number, cap: number): Uint8Array {
  const g = new Graph();
  const q = g.input('q', 'float32', [B, 1, H * D]), k = g.input('k', 'float32', [B, 1, HKV * D]), v = g.input('v', 'float32', [B, 1, HKV * D]);
  const extra = kind === 'GroupQueryAttention'
    ? [g.input('seqlens_k', 'int32', [B]), g.input('total', 'int32', [])]
    : [g.input('mask', 'float32', [B, 1, 1, kind === 'plain ops' ? cap : cap + 1])];
  const outs: string[] = [], rows: string[] = [];
  for (let l = 0; l < LAYERS; l++) {
    const pk = g.input(`past_key.${l}`, 'float32', [B, HKV, cap, D]), pv = g.input(`past_value.${l}`, 'float32', [B, HKV, cap, D]);
    if (kind === 'plain ops') {
      const grp = H / HKV, scale = { transB: 1, alpha: 1 / Math.sqrt(D) };
      const qg = g.node('Reshape', [q, g.constant([B, HKV, grp, D])]); // one new token: [B,1,H*D] -> [B,Hkv,G,D]
      const kn = g.node('Reshape', [k, g.constant([B, HKV, 1, D])]), vn = g.node('Reshape', [v, g.constant([B, HKV, 1, D])]);
      const past = g.node('Add', [g.node('FusedMatMul', [qg, pk], scale, { domain: MS }), extra[0]]);
      const p = g.node('Softmax', [g.node('Concat', [past, g.node('FusedMatMul', [qg, kn], scale, { domain: MS })], { axis: -1 })], { axis: -1 });
      const [pPast, pNew] = g.nodeN('Split', [p, g.constant([cap, 1])], { axis: -1 }, { outputs: 2 });
      outs.push(g.node('Reshape', [g.node('Add', [g.node('MatMul', [pPast, pv]), g.node('Mul', [pNew, vn])]), g.constant([B, 1, H * D])]));
      rows.push(kn);
    } else if (kind === 'GroupQueryAttention') {
      const [o, presentK] = g.nodeN('GroupQueryAttention', [q, k, v, pk, pv, ...extra], { num_heads: H, kv_num_heads: HKV }, { domain: MS, outputs: 3 });
      // The inference graph gathers the new row at each row's length; all rows share one length here.
      outs.push(o); rows.push(g.node('Slice', [presentK, g.node('Cast', [g.node('Unsqueeze', [extra[1], g.constant([0])])], { to: 7 }), g.node('Add', [g.node('Cast', [g.node('Unsqueeze', [extra[1], g.constant([0])])], { to: 7 }), g.constant([1])]), g.constant([2])]));
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

export async function runAttentionBench(o: { threads?: number; reps?: number } = {}) {
  const threads = o.threads ?? 2, reps = o.reps ?? 15, rand = seededRandom(7);
  const fill = (n: number) => Float32Array.from({ length: n }, () => rand() - 0.5);
  const rows: { kind: Kind; rows: number; len: number; capacity: number; ms: number }[] = [];
  for (const c of CASES) {
    const B = c.rows, cap = grownCapacity(64, c.len + 1);
    const feeds: Record<string, ort.Tensor> = {
      q: new ort.Tensor('float32', fill(B * H * D), [B, 1, H * D]), k: new ort.Tensor('float32', fill(B * HKV * D), [B, 1, HKV * D]), v: new ort.Tensor('float32', fill(B * HKV * D), [B, 1, HKV * D]),
    };
    for (let l = 0; l < LAYERS; l++) for (const n of ['past_key', 'past_value']) feeds[`${n}.${l}`] = new ort.Tensor('float32', fill(B * HKV * cap * D), [B, HKV, cap, D]);
    const mask = (width: number) => {
      const m = new Float32Array(B * width);
      for (let b = 0; b < B; b++) m.fill(-Infinity, b * width + c.len, b * width + cap);
      return new ort.Tensor('float32', m, [B, 1, 1, width]);
    };
    for (const kind of KINDS) {
      const session = await ort.InferenceSession.create(graph(kind, B, cap), { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' });
      const f = kind === 'GroupQueryAttention'
        ? { ...feeds, seqlens_k: new ort.Tensor('int32', new Int32Array(B).fill(c.len), [B]), total: new ort.Tensor('int32', Int32Array.of(c.len + 1), []) }
        : { ...feeds, mask: mask(kind === 'plain ops' ? cap : cap + 1) };
      for (let i = 0; i < 3; i++) await session.run(f);
      const t: number[] = [];
      for (let i = 0; i < reps; i++) { const t0 = performance.now(); await session.run(f); t.push(performance.now() - t0); }
      await session.release();
      const ms = t.sort((a, b) => a - b)[Math.floor(reps / 4)]; // lower quartile: other work on the machine only slows runs
      rows.push({ kind, rows: B, len: c.len, capacity: cap, ms });
      console.error(`${kind}: ${B} rows × ${c.len} positions (capacity ${cap}): ${ms.toFixed(2)} ms`);
    }
  }
  const date = new Date().toISOString().slice(0, 10), dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results');
  const result = { date, threads, layers: LAYERS, heads: { query: H, kv: HKV, size: D }, machine: { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.availableParallelism() }, rows };
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, `attention-${date}.json`), JSON.stringify(result, null, 1) + '\n');
  fs.writeFileSync(path.join(dir, `attention-${date}.md`), [`# Decode-step attention cost ${date}`, '',
    `${LAYERS} layers of Qwen2.5-0.5B's attention (${H} query heads, ${HKV} KV heads, head size ${D}), one new token per row over a cache of the runtime's capacity; random inputs, ${threads} threads, ${result.machine.cpu}. One session run (lower quartile of ${reps}).`, '',
    `| rows × cached positions | capacity | ${KINDS.join(' | ')} |`, `|---|---:|${KINDS.map(() => '---:').join('|')}|`,
    ...CASES.map((c) => {
      const r = rows.filter((x) => x.rows === c.rows && x.len === c.len);
      return `| ${c.rows} × ${c.len} | ${r[0].capacity} | ${r.map((x) => `${x.ms.toFixed(2)} ms`).join(' | ')} |`;
    }), ''].join('\n'));
  return result;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const i = process.argv.indexOf('--threads');
  await runAttentionBench({ threads: i > 0 ? Number(process.argv[i + 1]) : undefined });
}
