/**
 * Batch cost of the linear layers alone: a stack of Qwen2.5-0.5B-sized projections (per layer: gate+up 896→9728,
 * down 4864→896, two 896→896), random weights, as 4-bit MatMulNBits (accuracy level 4 = int8 activations, and 1 =
 * fp32) and as fp32 MatMul; one session run at M = 1, 2, 4, 8 rows. Shows whether batched decoding of N samples is
 * memory-bound (M rows ≈ the cost of one) or compute-bound (cost ∝ M) on this machine.
 * Writes bench/results/matmul-<date>.json + .md.
 *   node --import tsx bench/matmul.ts [--layers 12] [--threads 2]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ort from 'onnxruntime-node';
import { Graph, MS } from '../src/onnx/graph.ts';
import { quantizeQ4, Q4_BLOCK } from '../src/onnx/quant.ts';
import { seededRandom } from '../src/runtime/sampler.ts';

const H = 896, I = 4864, ROWS = [1, 2, 4, 8];
const KINDS = { 'q4, accuracy level 4': 'q4a4', 'q4, accuracy level 1': 'q4a1', fp32: 'fp32' } as const;
type Kind = (typeof KINDS)[keyof typeof KINDS];

function randomWeights(n: number, rand: () => number): Float32Array {
  return Float32Array.from({ length: n }, () => (rand() - 0.5) * 0.1);
}

function stack(kind: Kind, layers: number): Uint8Array {
  const g = new Graph(), rand = seededRandom(1);
  let x = g.input('x', 'float32', ['m', H]);
  const linear = (input: string, n: number, k: number, name: string) => {
    const w = randomWeights(n * k, rand);
    if (kind === 'fp32') {
      const wt = new Float32Array(w.length);
      for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) wt[j * n + i] = w[i * k + j];
      return g.node('MatMul', [input, g.initializer(name, 'float32', [k, n], wt)]);
    }
    const q = quantizeQ4(w, n, k), blocks = k / Q4_BLOCK;
    return g.node('MatMulNBits', [input, g.initializer(`${name}_q4`, 'uint8', [n, blocks, Q4_BLOCK / 2], q.packed), g.initializer(`${name}_scales`, 'float32', [n * blocks], q.scales)],
      { K: k, N: n, bits: 4, block_size: Q4_BLOCK, accuracy_level: kind === 'q4a1' ? 1 : 4 }, { domain: MS });
  };
  for (let l = 0; l < layers; l++) {
    const gateUp = linear(x, 2 * I, H, `gate_up.${l}`);
    const down = linear(g.node('Slice', [gateUp, g.constant([0]), g.constant([I]), g.constant([1])]), H, I, `down.${l}`);
    x = linear(linear(down, H, H, `o.${l}`), H, H, `q.${l}`);
  }
  g.nodeN('Identity', [x], {}, { names: ['y'] });
  g.output('y', 'float32', ['m', H]);
  return g.toModelProto();
}

export async function runMatmulBench(o: { layers?: number; threads?: number; reps?: number } = {}) {
  const layers = o.layers ?? 12, threads = o.threads ?? 2, reps = o.reps ?? 15;
  const rows: { weights: string; ms: Record<number, number>; ratio: Record<number, number> }[] = [];
  for (const [label, kind] of Object.entries(KINDS)) {
    const session = await ort.InferenceSession.create(stack(kind, layers), { intraOpNumThreads: threads, graphOptimizationLevel: 'all' });
    const ms: Record<number, number> = {};
    for (const m of ROWS) {
      const x = new ort.Tensor('float32', randomWeights(m * H, seededRandom(m)), [m, H]);
      for (let i = 0; i < 3; i++) await session.run({ x });
      const t: number[] = [];
      for (let i = 0; i < reps; i++) { const t0 = performance.now(); await session.run({ x }); t.push(performance.now() - t0); }
      ms[m] = t.sort((a, b) => a - b)[Math.floor(reps / 4)]; // lower quartile: other work on the machine only slows runs
    }
    await session.release();
    rows.push({ weights: label, ms, ratio: Object.fromEntries(ROWS.map((m) => [m, ms[m] / ms[1]])) });
    console.error(`${label}: ${ROWS.map((m) => `M=${m} ${ms[m].toFixed(2)} ms (${(ms[m] / ms[1]).toFixed(2)}×)`).join(', ')}`);
  }
  const date = new Date().toISOString().slice(0, 10), dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results');
  const result = { date, layers, threads, shape: `per layer: ${H}→${2 * I}, ${I}→${H}, 2 × ${H}→${H}`, machine: { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.availableParallelism() }, rows };
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, `matmul-${date}.json`), JSON.stringify(result, null, 1) + '\n');
  fs.writeFileSync(path.join(dir, `matmul-${date}.md`), [`# Linear-layer batch cost ${date}`, '',
    `${layers} layers of Qwen2.5-0.5B-sized projections (${result.shape}), random weights, ${threads} threads, ${result.machine.cpu}. One session run at M rows (lower quartile of ${reps}).`, '',
    `| weights | ${ROWS.map((m) => `M=${m}`).join(' | ')} |`, `|---|${ROWS.map(() => '---:').join('|')}|`,
    ...rows.map((r) => `| ${r.weights} | ${ROWS.map((m) => `${r.ms[m].toFixed(2)} ms (${r.ratio[m].toFixed(2)}×)`).join(' | ')} |`), ''].join('\n'));
  return result;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const arg = (k: string) => { const i = process.argv.indexOf(k); return i > 0 ? Number(process.argv[i + 1]) : undefined; };
  await runMatmulBench({ layers: arg('--layers'), threads: arg('--threads') });
}
