/**
 * Batch cost of the linear layers alone: a stack of Qwen2.5-0.5B-sized projections (per layer: gate+up 896→9728,
 * down 4864→896, two 896→896), random weights, as 4-bit MatMulNBits (accuracy level 4 = int8 activations, and 1 =
 * fp32), 8-bit MatMulNBits (level 4) and as fp32 MatMul; one session run at M = 1, 2, 4, 8 rows. Shows whether batched decoding of N samples is
 * memory-bound (M rows ≈ the cost of one) or compute-bound (cost ∝ M) on this machine.
 * Writes bench/results/matmul-<date>.json + .md.
 *   node --import tsx bench/matmul.ts [--layers 12] [--threads 2]
 */
import ort from '../src/runtime/ort.ts';
import { Graph } from '../src/onnx/graph.ts';
import type { Quant } from '../src/onnx/quant.ts';
import { Layers } from '../src/models/layers.ts';
import { MemoryWeights } from '../src/io/weights.ts';
import { seededRandom } from '../src/runtime/sampler.ts';
import { QWEN25_05B } from '../test/helpers/random-model.ts';
import { isMainModule } from '../src/main-module.ts';
import { scriptArgs, publish, machineNow, machineText } from './write.ts';

const H = QWEN25_05B.hiddenSize, I = QWEN25_05B.intermediateSize, ROWS = [1, 2, 4, 8];
const KINDS: Record<string, { quant: Quant; accuracyLevel: number }> = {
  'q4, accuracy level 4': { quant: 'q4', accuracyLevel: 4 }, 'q4, accuracy level 1': { quant: 'q4', accuracyLevel: 1 },
  'q8, accuracy level 4': { quant: 'q8', accuracyLevel: 4 }, fp32: { quant: 'fp32', accuracyLevel: 4 },
};

function randomWeights(n: number, rand: () => number): Float32Array {
  return Float32Array.from({ length: n }, () => (rand() - 0.5) * 0.1);
}

/** The stack, built by the runtime's own linear layer (so it measures exactly the nodes the inference graph uses). */
function stack(kind: { quant: Quant; accuracyLevel: number }, layers: number): Uint8Array {
  const rand = seededRandom(1), tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const weight = (name: string, n: number, k: number) => { tensors.set(`${name}.weight`, { shape: [n, k], data: randomWeights(n * k, rand) }); return name; };
  const g = new Graph(), L = new Layers(g, QWEN25_05B, new MemoryWeights(tensors), { ...kind, fused: true, loraTargets: [], weightsAsInputs: false });
  let x = g.input('x', 'float32', ['m', H]);
  for (let l = 0; l < layers; l++) {
    const gateUp = L.linear(x, weight(`gate_up.${l}`, 2 * I, H));
    const down = L.linear(g.node('Slice', [gateUp, g.constant([0]), g.constant([I]), g.constant([1])]), weight(`down.${l}`, H, I));
    x = L.linear(L.linear(down, weight(`o.${l}`, H, H)), weight(`q.${l}`, H, H));
  }
  g.nodeN('Identity', [x], {}, { names: ['y'] });
  g.output('y', 'float32', ['m', H]);
  return g.toModelProto();
}

export async function runMatmulBench(o: { layers?: number; threads?: number; reps?: number; /** null: write nothing */ resultsDir?: string | null } = {}) {
  const machine = machineNow();
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
  const date = new Date().toISOString().slice(0, 10);
  const result = { date, layers, threads, shape: `per layer: ${H}→${2 * I}, ${I}→${H}, 2 × ${H}→${H}`, machine, rows };
  const md = [`# Linear-layer batch cost ${date}`, '',
    `${layers} layer${layers === 1 ? '' : 's'} of Qwen2.5-0.5B-sized projections (${result.shape}), random weights, ${threads} threads, ${machineText(result.machine)}. One session run at M rows (lower quartile of ${reps}).`, '',
    `| weights | ${ROWS.map((m) => `M=${m}`).join(' | ')} |`, `|---|${ROWS.map(() => '---:').join('|')}|`,
    ...rows.map((r) => `| ${r.weights} | ${ROWS.map((m) => `${r.ms[m].toFixed(2)} ms (${r.ratio[m].toFixed(2)}×)`).join(' | ')} |`), ''].join('\n');
  publish(o.resultsDir, `matmul-${date}`, result, md);
  return result;
}

if (isMainModule(import.meta.url)) {
  const a = scriptArgs('bench/matmul.ts', { layers: 'count', threads: 'count', 'results-dir': 'string', 'no-write': 'boolean' });
  await runMatmulBench({ layers: a.num('layers'), threads: a.num('threads'), resultsDir: a.resultsDir() });
}
