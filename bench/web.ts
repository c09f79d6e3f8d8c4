/**
 * The same ONNX graphs in ONNX Runtime's WebAssembly build (onnxruntime-web, run in Node): the check that a graph
 * edgereason generates runs outside onnxruntime-node and gives its numbers. The embedded default is converted as
 * fp32 and as q4 with LoRA inputs on every projection; each graph takes the same feeds in both runtimes — a prompt
 * step, a decode step over two cache rows, a decode step over a shared prefix, and a prompt and a decode step with
 * LoRA on — and the bench reports the largest difference per output and the top-1 agreement of the logits.
 * onnxruntime-web is not a dependency (139 MB): install it beside edgereason first,
 *   npm i --no-save onnxruntime-web@<onnxruntime-node's version>
 * Writes bench/results/web-<date>.json + .md.
 *   node --import tsx bench/web.ts
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import ort from '../src/runtime/ort.ts';
import { convertModel } from '../src/runtime/convert.ts';
import { parseHfConfig } from '../src/io/hf-folder.ts';
import { PROJECTIONS, type ModelConfig, type Projection } from '../src/models/config.ts';
import { isMainModule } from '../src/main-module.ts';
import { seededRandom } from '../src/runtime/sampler.ts';
import { machineNow, machineText, scriptArgs, publish } from './write.ts';
import { defaultModel } from '../src/models/embedded.ts';

const require = createRequire(import.meta.url);

type Feed = [type: 'int64' | 'int32' | 'float32', data: BigInt64Array | Int32Array | Float32Array, dims: number[]];
interface Case { name: string; rows: number; tokens: number; lengths: number[]; prefix?: number; logits: number; lora?: boolean }
const CASES: Case[] = [
  { name: 'prompt, 7 tokens', rows: 1, tokens: 7, lengths: [0], logits: 7 },
  { name: 'decode, 2 rows at 9 / 4 positions', rows: 2, tokens: 1, lengths: [9, 4], logits: 1 },
  { name: 'decode, 3 rows over a 4-position shared prefix', rows: 3, tokens: 1, lengths: [8, 6, 10], prefix: 4, logits: 1 },
  { name: 'prompt with LoRA on, 6 tokens', rows: 1, tokens: 6, lengths: [0], logits: 6, lora: true },
  { name: 'decode with LoRA on, 2 rows', rows: 2, tokens: 1, lengths: [5, 7], logits: 1, lora: true },
];

/** The graph's feeds for one case, from its input names and the model's shape (see src/models/inference-graph.ts). */
function feeds(inputs: readonly { name: string; shape: readonly (number | string)[] }[], c: ModelConfig, k: Case): Record<string, Feed> {
  // Fixed numbers in [-1, 1): the same feeds in both runtimes and on every run.
  const draw = seededRandom(7), rnd = () => 2 * draw() - 1, cap = 16, P = k.prefix ?? 0, T = k.tokens, B = k.rows, out: Record<string, Feed> = {};
  const ids = BigInt64Array.from({ length: B * T }, (_, i) => BigInt(3 + ((i * 37) % (c.vocabSize - 3))));
  out.input_ids = ['int64', ids, [B, T]];
  const seqlens = Int32Array.from(k.lengths, (l) => l + T - 1);
  out.seqlens_k = ['int32', seqlens, [B]];
  out.total_sequence_length = ['int32', Int32Array.of(Math.max(...seqlens) + 1), []];
  out.logits_index = ['int64', BigInt64Array.from({ length: B * k.logits }, (_, i) => BigInt(T - k.logits + (i % k.logits))), [B, k.logits]];
  const names = new Set(inputs.map((i) => i.name));
  for (let l = 0; l < c.numLayers; l++) for (const kv of ['key', 'value']) {
    const past = new Float32Array(B * c.numKvHeads * cap * c.headDim);
    for (let b = 0; b < B; b++) for (let h = 0; h < c.numKvHeads; h++) for (let p = 0; p < k.lengths[b] - P; p++) {
      for (let d = 0; d < c.headDim; d++) past[((b * c.numKvHeads + h) * cap + p) * c.headDim + d] = rnd();
    }
    out[`past_${kv}.${l}`] = ['float32', past, [B, c.numKvHeads, cap, c.headDim]];
    if (names.has(`prefix_${kv}.${l}`)) out[`prefix_${kv}.${l}`] = ['float32', Float32Array.from({ length: c.numKvHeads * P * c.headDim }, rnd), [c.numKvHeads, P, c.headDim]];
  }
  if (names.has('adapter_mask')) {
    out.adapter_mask = ['float32', Float32Array.from({ length: B * T }, (_, i) => (k.lora && i % 2 ? 1 : 0)), [B, T]];
    for (const input of inputs) {
      const a = input.name.endsWith('.lora_A');
      if (!a && !input.name.endsWith('.lora_B')) continue;
      const other = Number(a ? input.shape[1] : input.shape[0]), r = k.lora ? 4 : 0;
      out[input.name] = ['float32', Float32Array.from({ length: r * other }, () => 0.05 * rnd()), a ? [r, other] : [other, r]];
    }
  }
  return out;
}

const e = (x: number | undefined) => (x === undefined ? '–' : x.toExponential(1));

interface Compared { graph: string; case: string; max_abs_diff: Record<string, number>; top1_agreement: number; positions: number }

export async function runWebBench(o: { resultsDir?: string | null } = {}) {
  let web: typeof ort;
  try { web = require('onnxruntime-web'); } catch {
    throw new Error(`bench web runs the graphs in onnxruntime-web, which is not a dependency of edgereason (139 MB): install it first, npm i --no-save onnxruntime-web@${ort.env.versions.node ?? ort.env.versions.common}`);
  }
  web.env.wasm.numThreads = 1;
  const machine = machineNow(), tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-web-'));
  const config = parseHfConfig(JSON.parse(fs.readFileSync(path.join(defaultModel.dir, 'config.json'), 'utf8')));
  const rows: Compared[] = [];
  try {
    const graphs: [string, { quant: 'fp32' | 'q4'; loraTargets?: Projection[] }][] = [['fp32', { quant: 'fp32' }], ['q4 + LoRA inputs', { quant: 'q4', loraTargets: [...PROJECTIONS] }]];
    for (const [graph, opts] of graphs) {
      const dir = path.join(tmp, graph.replace(/\W+/g, '-'));
      convertModel(defaultModel.dir, dir, opts);
      const file = path.join(dir, 'model.onnx');
      const node = await ort.InferenceSession.create(file, { intraOpNumThreads: 1 });
      const wasm = await web.InferenceSession.create(fs.readFileSync(file), { executionProviders: ['wasm'], externalData: [{ path: 'model.onnx.data', data: fs.readFileSync(`${file}.data`) }] });
      try {
        for (const k of CASES) {
          if (k.lora && !node.inputNames.includes('adapter_mask')) continue;
          const f = feeds(node.inputMetadata as never, config, k), tensors = (o: typeof ort) => Object.fromEntries(Object.entries(f).map(([n, [t, d, dims]]) => [n, new o.Tensor(t, d, dims)]));
          const a = await node.run(tensors(ort)), b = await wasm.run(tensors(web));
          const diffs: Record<string, number> = {};
          for (const name of Object.keys(a)) {
            const x = a[name].data as Float32Array, y = b[name].data as Float32Array;
            const key = name.replace(/\.\d+$/, '');
            diffs[key] = Math.max(diffs[key] ?? 0, x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i])), 0));
          }
          const V = config.vocabSize, x = a.logits.data as Float32Array, y = b.logits.data as Float32Array, n = x.length / V;
          const top = (l: Float32Array, r: number) => { let best = r * V; for (let j = r * V; j < (r + 1) * V; j++) if (l[j] > l[best]) best = j; return best; };
          let same = 0;
          for (let r = 0; r < n; r++) if (top(x, r) === top(y, r)) same++;
          rows.push({ graph, case: k.name, max_abs_diff: Object.fromEntries(Object.entries(diffs).map(([n, v]) => [n, Number(v.toExponential(2))])), top1_agreement: same / n, positions: n });
          console.log(`${graph} · ${k.name}: logits ${diffs.logits.toExponential(2)}, top-1 ${same}/${n}`);
        }
      } finally {
        await node.release();
        await wasm.release();
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const result = { date: new Date().toISOString(), machine, onnxruntime_node: ort.env.versions.node, onnxruntime_web: web.env.versions.web, rows };
  const md = [`# onnxruntime-web (WebAssembly) vs onnxruntime-node ${result.date.slice(0, 10)}`, '',
    `The embedded default converted as fp32 and as q4 with LoRA inputs; the same feeds in onnxruntime-node ${result.onnxruntime_node} (CPU) and onnxruntime-web ${result.onnxruntime_web} (wasm, one thread). Largest absolute difference per output over all layers; q4's MatMulNBits accuracy_level 4 (int8 activations) is taken by the CPU provider and not by the WebAssembly build.`, '',
    '| graph | step | logits | hidden | new K/V | top-1 agreement |', '|---|---|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.graph} | ${r.case} | ${e(r.max_abs_diff.logits)} | ${e(r.max_abs_diff.hidden_states)} | ${e(Math.max(r.max_abs_diff.new_key ?? 0, r.max_abs_diff.new_value ?? 0))} | ${r.positions * r.top1_agreement} / ${r.positions} |`),
    '', `Machine: ${machineText(machine)}.`, ''].join('\n');
  publish(o.resultsDir, `web-${result.date.slice(0, 10)}`, result, md);
  return result;
}

if (isMainModule(import.meta.url)) {
  const args = scriptArgs('bench/web.ts', { 'no-write': 'boolean', 'results-dir': 'string' });
  await runWebBench({ resultsDir: args.resultsDir() });
}
