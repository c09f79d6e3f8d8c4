/**
 * Single VJP rules against PyTorch's autograd (Debian's python3-torch, used only as the oracle), in float32 as training
 * runs them, on the inputs where a rule is easy to get wrong: huge and infinite logits in Softmax/LogSoftmax, the
 * cross-entropy of loss.ts, RMSNorm with a tiny eps on tiny or all-zero rows, Pow at 0, the LoRA delta's mask and scale,
 * broadcast and batch-broadcast shapes, repeated Gather ids. Gradients must agree to 2e-5 (relative L2 per input; float32 rounding gives ≤ 4e-6, a wrong rule O(1)) and
 * be non-finite in the same places. (autodiff.test.ts checks every rule against finite differences in float64.)
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from '../src/runtime/ort.ts';
import { Graph } from '../src/onnx/graph.ts';
import { addBackward } from '../src/autodiff/backward.ts';
import { tokenLogprobs, weightedNll } from '../src/autodiff/loss.ts';
import { rng } from './helpers/random-model.ts';
import { hasTorch, PY, torchNote } from './helpers/torch.ts';

const ORACLE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'oracle/torch_vjp.py');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-vjp-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

type DT = 'float32' | 'float64';
type Input = { dims: number[]; data?: number[]; ints?: number[]; fixed?: boolean; scale?: number; positive?: boolean };
interface Case { name: string; inputs: Record<string, Input>; build: (g: Graph, dt: DT) => string; torch: string; dtype?: DT }

const wave = (n: number, s: number) => Array.from({ length: n }, (_, i) => s * Math.sin(7.1 * i + 0.3));
const rmsNorm = (eps: number) => (g: Graph, dt: DT) => { // layers.ts's training lowering
  const ms = g.node('ReduceMean', [g.node('Mul', ['x', 'x'])], { axes: [-1], keepdims: 1 });
  const inv = g.node('Reciprocal', [g.node('Sqrt', [g.node('Add', [ms, g.scalar(eps, dt)])])]);
  return g.node('Mul', [g.node('Mul', ['x', inv]), 'w']);
};
const cases: Case[] = [
  { name: 'Softmax, logits ±1e4', inputs: { x: { dims: [3, 6], data: wave(18, 1e4) } }, build: (g) => g.node('Softmax', ['x'], { axis: -1 }), torch: 'torch.softmax(x, -1)' },
  { name: 'LogSoftmax, logits ±1e4', inputs: { x: { dims: [3, 6], data: wave(18, 1e4) } }, build: (g) => g.node('LogSoftmax', ['x'], { axis: -1 }), torch: 'torch.log_softmax(x, -1)' },
  { name: 'Softmax, logits 1e4 + O(1) spread', inputs: { x: { dims: [3, 6], data: wave(18, 3).map((v) => 1e4 + v) } }, build: (g) => g.node('Softmax', ['x'], { axis: -1 }), torch: 'torch.softmax(x, -1)' },
  { name: 'LogSoftmax, logits -1e4 + O(1) spread', inputs: { x: { dims: [3, 6], data: wave(18, 3).map((v) => v - 1e4) } }, build: (g) => g.node('LogSoftmax', ['x'], { axis: -1 }), torch: 'torch.log_softmax(x, -1)' },
  { name: 'LogSoftmax, logits 1e30 (ties)', inputs: { x: { dims: [2, 4], data: [1e30, 0, -5, 2, 3, 1e30, 1e30, 0] } }, build: (g) => g.node('LogSoftmax', ['x'], { axis: -1 }), torch: 'torch.log_softmax(x, -1)' },
  { name: 'Softmax + -1e9 mask (a row with one position left)', inputs: { x: { dims: [2, 5] }, m: { dims: [2, 5], fixed: true, data: [0, 0, -1e9, -1e9, 0, -1e9, 0, -1e9, -1e9, -1e9] } },
    build: (g) => g.node('Softmax', [g.node('Add', ['x', 'm'])], { axis: -1 }), torch: 'torch.softmax(x + m, -1)' },
  { name: 'Softmax axis 0 with -inf entries', inputs: { x: { dims: [3, 2], data: [-Infinity, 1, 0, -Infinity, 2, 3] } }, build: (g) => g.node('Softmax', ['x'], { axis: 0 }), torch: 'torch.softmax(x, 0)' },
  { name: 'LogSoftmax with a -inf entry', inputs: { x: { dims: [2, 3], data: [-Infinity, 1, 0, 5, 2, 3] } }, build: (g) => g.node('LogSoftmax', ['x'], { axis: -1 }), torch: 'torch.log_softmax(x, -1)' },
  { name: 'loss.ts tokenLogprobs + weightedNll at temperature 0.7, logits ±1e4, a masked target', inputs: { x: { dims: [4, 6], data: wave(24, 1e4) }, t: { dims: [4], ints: [1, 5, 0, 5] }, w: { dims: [4], fixed: true, data: [0.25, 0, 0.25, 0.5] } },
    build: (g, dt) => weightedNll(g, tokenLogprobs(g, g.node('Mul', ['x', g.scalar(1 / 0.7, dt)]), 't'), 'w'),
    torch: '(torch.nn.functional.cross_entropy(x * (1 / 0.7), t, reduction="none") * w).sum()' },
  { name: 'loss.ts tokenLogprobs + weightedNll, logits 1e4 + O(1) spread', inputs: { x: { dims: [4, 6], data: wave(24, 2).map((v) => 1e4 + v) }, t: { dims: [4], ints: [1, 5, 0, 5] }, w: { dims: [4], fixed: true, data: [0.25, 0, 0.25, 0.5] } },
    build: (g) => weightedNll(g, tokenLogprobs(g, 'x', 't'), 'w'), torch: '(torch.nn.functional.cross_entropy(x, t, reduction="none") * w).sum()' },
  ...([[1e-6, 1], [1e-6, 1e-5], [1e-12, 1e-3], [1e-12, 0]] as const).map(([eps, s]): Case => ({
    name: `RMSNorm eps ${eps}, x·${s}`, inputs: { x: { dims: [3, 8], scale: s }, w: { dims: [8] } }, build: rmsNorm(eps),
    torch: `x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + ${eps}) * w`,
  })),
  { name: 'Pow x^0 and x^2 at x = 0', inputs: { x: { dims: [4], data: [0, 1.5, -0, 2] } }, build: (g, dt) => g.node('Add', [g.node('Pow', ['x', g.scalar(0, dt)]), g.node('Pow', ['x', g.scalar(2, dt)])]), torch: 'x.pow(0.0) + x.pow(2.0)' },
  { name: 'Pow x^p (tensor p) at x = 0', inputs: { x: { dims: [4], data: [0, 1.5, 0, 2] }, p: { dims: [4], data: [2, 3, 0, 1] } }, build: (g) => g.node('Pow', ['x', 'p']), torch: 'x.pow(p)' },
  { name: 'LoRA delta: ((x·Aᵀ)⊙mask)·Bᵀ·scale beside x·Wᵀ', inputs: { x: { dims: [2, 3, 4] }, W: { dims: [5, 4] }, A: { dims: [2, 4] }, B: { dims: [5, 2] }, m: { dims: [2, 3], fixed: true, data: [1, 1, 0, 0, 1, 1] } },
    build: (g, dt) => {
      const mt = (x: string, w: string) => g.node('MatMul', [x, g.node('Transpose', [w], { perm: [1, 0] })]);
      const h = g.node('Mul', [mt('x', 'A'), g.node('Unsqueeze', ['m', g.constant([2])])]);
      return g.node('Add', [mt('x', 'W'), g.node('Mul', [mt(h, 'B'), g.scalar(2.5, dt)])]);
    }, torch: 'x @ W.T + ((x @ A.T) * m.unsqueeze(2)) @ B.T * 2.5' },
  { name: 'Div [2,1,3,1] / [4,1,5]', inputs: { a: { dims: [2, 1, 3, 1] }, b: { dims: [4, 1, 5], positive: true } }, build: (g) => g.node('Div', ['a', 'b']), torch: 'a / b' },
  { name: 'MatMul [2,1,3,4] x [1,5,4,6]', inputs: { a: { dims: [2, 1, 3, 4] }, b: { dims: [1, 5, 4, 6] } }, build: (g) => g.node('MatMul', ['a', 'b']), torch: 'a @ b' },
  { name: 'Where cond [4,2,1], a [], b [3]', inputs: { c: { dims: [4, 2, 1], fixed: true }, a: { dims: [] }, b: { dims: [3] } }, build: (g, dt) => g.node('Where', [g.node('Greater', ['c', g.scalar(0, dt)]), 'a', 'b']), torch: 'torch.where(c > 0, a, b)' },
  { name: 'Gather axis 0, 3-D table, repeated ids', inputs: { x: { dims: [4, 2, 3] }, i: { dims: [2, 4], ints: [3, 3, 0, 3, 1, 3, -1, 0] } }, build: (g) => g.node('Gather', ['x', 'i']), torch: 'x[i]' },
];

const encode = (v: number) => (Number.isFinite(v) ? v : String(v));
const decode = (v: number | string) => (typeof v === 'number' ? v : Number(v));

test('VJP rules in float32 against PyTorch autograd: large and infinite logits, tiny eps, Pow at 0, LoRA mask and scale, broadcasts', { skip: !hasTorch && torchNote }, async () => {
  const r = rng(2024), spec: unknown[] = [], ours = new Map<string, { loss: number; grads: Map<string, Float32Array | Float64Array> }>();
  for (const c of cases) {
    const dt = c.dtype ?? 'float32', g = new Graph(), feeds: Record<string, ort.Tensor> = {}, wrt: string[] = [], inputs: Record<string, unknown> = {};
    for (const [k, s] of Object.entries(c.inputs)) {
      if (s.ints) {
        g.input(k, 'int64', s.dims);
        feeds[k] = new ort.Tensor('int64', BigInt64Array.from(s.ints.map(BigInt)), s.dims);
        inputs[k] = { dims: s.dims, data: s.ints, dtype: 'int64', fixed: true };
        continue;
      }
      const n = s.dims.reduce((a, b) => a * b, 1);
      const v = s.data ?? Array.from({ length: n }, () => (s.positive ? 0.5 + 1.5 * r.uniform() : r.normal()) * (s.scale ?? 1));
      const data = dt === 'float32' ? Float32Array.from(v) : Float64Array.from(v);
      g.input(k, dt, s.dims);
      feeds[k] = new ort.Tensor(dt, data, s.dims);
      inputs[k] = { dims: s.dims, data: Array.from(data, encode), dtype: dt, fixed: !!s.fixed };
      if (!s.fixed) wrt.push(k);
    }
    const out = c.build(g, dt);
    // w_i = sin(1.3 i + 0.4) over out's flat elements, computed in float64 as the oracle does.
    const iota = g.node('Reshape', [g.node('Cast', [g.node('Range', [g.constant([0], 'int64', []), g.node('Size', [out]), g.constant([1], 'int64', [])])], { to: 11 }), g.node('Shape', [out])]);
    const w = g.node('Cast', [g.node('Sin', [g.node('Add', [g.node('Mul', [iota, g.scalar(1.3, 'float64')]), g.scalar(0.4, 'float64')])])], { to: dt === 'float32' ? 1 : 11 });
    g.nodeN('ReduceSum', [g.node('Mul', [out, w])], { keepdims: 0 }, { names: ['loss'] });
    g.output('loss', dt, []);
    const grads = addBackward(g, 'loss', wrt, { outputs: true });
    const s = await ort.InferenceSession.create(g.toModelProto(), { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 });
    const res = await s.run(feeds);
    await s.release();
    ours.set(c.name, { loss: Number(res.loss.data[0]), grads: new Map(wrt.map((k) => [k, res[grads.get(k)!].data as Float32Array])) });
    spec.push({ name: c.name, torch: c.torch, inputs });
  }
  fs.writeFileSync(path.join(tmp, 'cases.json'), JSON.stringify(spec));
  execFileSync(PY, [ORACLE, path.join(tmp, 'cases.json'), path.join(tmp, 'out.json')]);
  const ref = JSON.parse(fs.readFileSync(path.join(tmp, 'out.json'), 'utf8')) as Record<string, { loss: number | string; grads: Record<string, (number | string)[]> }>;
  const report: string[] = [];
  for (const c of cases) {
    const o = ours.get(c.name)!, t = ref[c.name], tl = decode(t.loss);
    assert.ok(o.loss === tl || Math.abs(o.loss - tl) <= 1e-5 * Math.max(1, Math.abs(tl)), `${c.name}: loss ${o.loss} vs torch ${tl}`);
    let worst = 0;
    for (const [k, a] of o.grads) {
      const b = t.grads[k].map(decode);
      assert.equal(a.length, b.length, `${c.name} d/d${k}: size`);
      let num = 0, den = 0;
      a.forEach((v, i) => {
        if (Number.isFinite(v) && Number.isFinite(b[i])) { num += (v - b[i]) ** 2; den += b[i] ** 2; return; }
        assert.ok(Object.is(v, b[i]) || (Number.isNaN(v) && Number.isNaN(b[i])), `${c.name} d/d${k}[${i}]: ${v}, torch ${b[i]} (ours [${[...a]}], torch [${b}])`);
      });
      const rel = Math.sqrt(num / Math.max(den, 1e-30));
      worst = Math.max(worst, rel);
      assert.ok(rel <= 2e-5, `${c.name} d/d${k}: relative error ${rel.toExponential(2)} (ours [${[...a].slice(0, 8)}], torch [${b.slice(0, 8)}])`);
    }
    report.push(`  ${c.name.padEnd(90)} ${worst.toExponential(2)}`);
  }
  console.log(`worst relative error of each case's gradients vs torch (float32):\n${report.join('\n')}`);
});
