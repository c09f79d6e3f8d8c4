/**
 * Finite-difference checks of every VJP rule, in float64: for f = Σ out ⊙ w (w fixed, pseudo-random),
 * the directional derivative <v, ∇f> from the backward graph must match the central difference
 * (f(x+εv) − f(x−εv)) / 2ε to a relative 1e-6, for each differentiated input separately.
 * Cases marked "symbolic" declare every input dim as a name, which forces the run-time (Shape-based)
 * broadcast reduction instead of the static one.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import ort from '../src/runtime/ort.ts';
import { Graph, type Dim } from '../src/onnx/graph.ts';
import { addBackward, ancestors, inferShapes } from '../src/autodiff/backward.ts';
import { Layers } from '../src/models/layers.ts';
import { decoder, lmHead } from '../src/models/qwen2.ts';
import { PROJECTIONS, type ModelConfig } from '../src/models/config.ts';
import { MemoryWeights } from '../src/io/weights.ts';
import { rng } from './helpers/random-model.ts';

/**
 * A test loss from ops with VJP rules, for gradient checks of whole graphs. Weighted token cross-entropy:
 * Σ_i w_i · (−log softmax(logits_i)[t_i]) / Σ_i w_i, a scalar. logits [..., V] (float), targets int64 [...], weights float [...] of the logits' dtype (0 masks a
 * token, e.g. prompt or padding positions; such a token's target must still be a valid id in [-V, V)).
 * The result is NaN when every weight is 0.
 */
function crossEntropy(g: Graph, logits: string, targets: string, weights: string): string {
  const logp = g.node('LogSoftmax', [g.node('Flatten', [logits], { axis: -1 })], { axis: -1 }); // [N, V]
  const t = g.node('Reshape', [targets, g.constant([-1, 1])]);
  // GatherElements picks one log-probability per row; its VJP scatters back into a [N, V] zero table.
  const picked = g.node('Reshape', [g.node('GatherElements', [logp, t], { axis: 1 }), g.constant([-1])]);
  const w = g.node('Reshape', [weights, g.constant([-1])]);
  const nll = g.node('Neg', [g.node('ReduceSum', [g.node('Mul', [picked, w]), g.constant([0])], { keepdims: 0 })]);
  return g.node('Div', [nll, g.node('ReduceSum', [w, g.constant([0])], { keepdims: 0 })]);
}

const EPS = 1e-6, TOL = 1e-6;
const sessionOptions: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 };
const report = new Map<string, number>();
after(() => {
  const w = Math.max(...[...report.keys()].map((k) => k.length));
  console.log(`max relative error of <v, grad> vs central difference (eps ${EPS}):\n` +
    [...report].map(([k, e]) => `  ${k.padEnd(w)}  ${e.toExponential(2)}`).join('\n'));
});

type InputSpec = number[] | { dims: number[]; positive?: boolean; ints?: number[]; int32?: boolean; fixed?: boolean };
const prod = (d: number[]) => d.reduce((a, b) => a * b, 1);
const seedOf = (s: string) => [...s].reduce((h, ch) => (h * 31 + ch.charCodeAt(0)) >>> 0, 7);
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => { let s = 0; for (let i = 0; i < a.length; i++) s += a[i] * b[i]; return s; };

/** Builds f = Σ build(...) ⊙ w, differentiates it w.r.t. every float input not marked fixed, checks each direction. */
async function gradCheck(name: string, inputs: Record<string, InputSpec>, build: (g: Graph) => string, opts: { symbolic?: boolean; opset?: number } = {}): Promise<void> {
  const r = rng(seedOf(name)), g = new Graph(), feeds: Record<string, ort.Tensor> = {}, wrt: string[] = [];
  for (const [k, s] of Object.entries(inputs)) {
    const spec = Array.isArray(s) ? { dims: s } : s;
    const dims: Dim[] = opts.symbolic ? spec.dims.map((_, i) => `${k}_${i}`) : spec.dims;
    if (spec.ints) {
      g.input(k, spec.int32 ? 'int32' : 'int64', dims);
      feeds[k] = spec.int32 ? new ort.Tensor('int32', Int32Array.from(spec.ints), spec.dims) : new ort.Tensor('int64', BigInt64Array.from(spec.ints.map(BigInt)), spec.dims);
      continue;
    }
    g.input(k, 'float64', dims);
    const data = Float64Array.from({ length: prod(spec.dims) }, () => ('positive' in spec && spec.positive ? 0.5 + 1.5 * r.uniform() : r.normal()));
    feeds[k] = new ort.Tensor('float64', data, spec.dims);
    if (!('fixed' in spec && spec.fixed)) wrt.push(k);
  }
  const out = build(g);
  // w_i = sin(1.3 i + 0.4), shaped like out: fixed, uneven weights, built in-graph so any out shape works.
  const iota = g.node('Reshape', [g.node('Cast', [g.node('Range', [g.constant([0], 'int64', []), g.node('Size', [out]), g.constant([1], 'int64', [])])], { to: 11 }), g.node('Shape', [out])]);
  const w = g.node('Sin', [g.node('Add', [g.node('Mul', [iota, g.scalar(1.3, 'float64')]), g.scalar(0.4, 'float64')])]);
  g.nodeN('ReduceSum', [g.node('Mul', [out, w])], { keepdims: 0 }, { names: ['loss'] });
  g.output('loss', 'float64', []);
  const grads = addBackward(g, 'loss', wrt, { outputs: true });
  await checkDirections(name, g.toModelProto({ opset: opts.opset }), feeds, wrt.map((k) => [k, grads.get(k)!]), r, TOL);
}

/** Checks <v, grad> against central differences of `loss` along a random v for each (input, grad) pair. */
async function checkDirections(name: string, model: Uint8Array, feeds: Record<string, ort.Tensor>, pairs: [string, string][], r: ReturnType<typeof rng>, tol: number): Promise<void> {
  const s = await ort.InferenceSession.create(model, sessionOptions);
  const base = await s.run(feeds);
  const lossAt = async (k: string, v: Float64Array, e: number) => {
    const x = feeds[k].data as Float64Array;
    const shifted = new ort.Tensor('float64', x.map((xi, i) => xi + e * v[i]), feeds[k].dims);
    return Number((await s.run({ ...feeds, [k]: shifted }, ['loss'])).loss.data[0]);
  };
  let worst = 0;
  for (const [k, gk] of pairs) {
    const v = Float64Array.from({ length: feeds[k].size }, () => r.normal());
    const grad = base[gk].data as Float64Array;
    assert.deepEqual(base[gk].dims, feeds[k].dims, `${name}: gradient of ${k} has the input's shape`);
    const ad = dot(v, grad), fd = ((await lossAt(k, v, EPS)) - (await lossAt(k, v, -EPS))) / (2 * EPS);
    const rel = Math.abs(ad - fd) / Math.max(Math.abs(fd), 1e-8);
    worst = Math.max(worst, rel);
    assert.ok(rel <= tol, `${name} d/d${k}: <v,grad> = ${ad}, finite difference = ${fd} (rel ${rel.toExponential(2)})`);
  }
  await s.release();
  report.set(name, worst);
}

const f64 = (g: Graph, v: number) => g.scalar(v, 'float64');
const ints = (dims: number[], values: number[]) => ({ dims, ints: values });

// ---------------------------------------------------------------------------------------------
// Linear algebra and layout.

test('FusedMatMul (transB, com.microsoft; float32 only in ORT): gradients equal those of MatMul·Transpose, which the float64 check covers', async () => {
  const r = rng(99), x = Float32Array.from({ length: 2 * 3 * 4 }, () => r.normal()), w = Float32Array.from({ length: 5 * 4 }, () => r.normal());
  const run = async (fused: boolean) => {
    const g = new Graph();
    g.input('x', 'float32', [2, 3, 4]); g.input('w', 'float32', [5, 4]);
    const y = fused ? g.node('FusedMatMul', ['x', 'w'], { transB: 1, alpha: { float: 0.5 } }, { domain: 'com.microsoft' })
      : g.node('Mul', [g.node('MatMul', ['x', g.node('Transpose', ['w'], { perm: [1, 0] })]), g.scalar(0.5)]);
    g.nodeN('ReduceSum', [g.node('Mul', [y, g.node('Sin', [y])])], { keepdims: 0 }, { names: ['loss'] });
    g.output('loss', 'float32', []);
    const grads = addBackward(g, 'loss', ['x', 'w'], { outputs: true });
    const s = await ort.InferenceSession.create(g.toModelProto(), sessionOptions);
    const out = await s.run({ x: new ort.Tensor('float32', x, [2, 3, 4]), w: new ort.Tensor('float32', w, [5, 4]) });
    await s.release();
    return [grads.get('x')!, grads.get('w')!].map((k) => out[k].data as Float32Array);
  };
  const [fused, plain] = [await run(true), await run(false)];
  for (let i = 0; i < 2; i++) {
    const worst = Math.max(...fused[i].map((v, j) => Math.abs(v - plain[i][j]) / Math.max(1e-3, Math.abs(plain[i][j]))));
    assert.ok(worst < 1e-5, `FusedMatMul d/d${'xw'[i]} differs from MatMul·Transpose by ${worst}`);
  }
  const g = new Graph();
  g.input('x', 'float32', [3, 4]); g.input('w', 'float32', [4, 5]);
  g.nodeN('ReduceSum', [g.node('FusedMatMul', ['x', 'w'], { transA: 0 }, { domain: 'com.microsoft' })], { keepdims: 0 }, { names: ['loss'] });
  assert.throws(() => addBackward(g, 'loss', ['w']), /FusedMatMul .* only differentiable as a·bᵀ with a 2-D b \(transB=1\)/);
  // Not differentiated itself, a FusedMatMul still shapes what is: its transA/transB flags set its output's shape,
  // which the gradient of x in x[3,1] + a[3,1]·w[1,5] is summed back to (it came out [3,5], all 1s).
  const h = new Graph();
  h.input('x', 'float32', [3, 1]); h.input('a', 'float32', [3, 1]); h.input('w', 'float32', [1, 5]);
  const aw = h.node('FusedMatMul', ['a', 'w'], { transB: 0 }, { domain: 'com.microsoft' });
  const wa = h.node('FusedMatMul', ['w', 'a'], { transA: 1, transB: 1 }, { domain: 'com.microsoft' });
  const shapes = inferShapes(h, ancestors(h, [aw, wa]));
  assert.deepEqual([shapes.get(aw), shapes.get(wa)], [[3, 5], [5, 3]]);
  h.nodeN('ReduceSum', [h.node('Add', ['x', aw])], { keepdims: 0 }, { names: ['loss'] });
  h.output('loss', 'float32', []);
  const dx = addBackward(h, 'loss', ['x'], { outputs: true }).get('x')!;
  const s = await ort.InferenceSession.create(h.toModelProto(), sessionOptions);
  const out = await s.run({ x: new ort.Tensor('float32', new Float32Array(3), [3, 1]), a: new ort.Tensor('float32', Float32Array.of(1, 2, 3), [3, 1]), w: new ort.Tensor('float32', Float32Array.of(1, 2, 3, 4, 5), [1, 5]) });
  await s.release();
  assert.deepEqual([out[dx].dims, [...(out[dx].data as Float32Array)]], [[3, 1], [5, 5, 5]]);
});

test('MatMul: 2-D, batched weight, equal-rank batches, 2-D x batched, 5-D attention broadcast', async () => {
  const mm = (g: Graph) => g.node('MatMul', ['a', 'b']);
  await gradCheck('MatMul [3,4]x[4,5]', { a: [3, 4], b: [4, 5] }, mm);
  await gradCheck('MatMul [2,3,4,5]x[5,6]', { a: [2, 3, 4, 5], b: [5, 6] }, mm);
  await gradCheck('MatMul [2,3,4]x[2,4,5]', { a: [2, 3, 4], b: [2, 4, 5] }, mm);
  await gradCheck('MatMul [3,4]x[2,4,5]', { a: [3, 4], b: [2, 4, 5] }, mm);
  await gradCheck('MatMul [2,2,3,4,5]x[2,2,1,5,4]', { a: [2, 2, 3, 4, 5], b: [2, 2, 1, 5, 4] }, mm);
  await gradCheck('MatMul [2,2,3,4,5]x[2,2,1,5,4] symbolic', { a: [2, 2, 3, 4, 5], b: [2, 2, 1, 5, 4] }, mm, { symbolic: true });
  await gradCheck('MatMul x·Transpose(W) (linear)', { x: [2, 3, 4], w: [5, 4] }, (g) => g.node('MatMul', ['x', g.node('Transpose', ['w'], { perm: [1, 0] })]));
});

test('Transpose, Reshape, Flatten, Unsqueeze, Squeeze, Identity, Expand', async () => {
  await gradCheck('Transpose perm', { x: [2, 3, 4, 5] }, (g) => g.node('Transpose', ['x'], { perm: [0, 2, 3, 1] }));
  await gradCheck('Transpose reversed', { x: [2, 3, 4] }, (g) => g.node('Transpose', ['x']));
  await gradCheck('Reshape', { x: [2, 3, 4] }, (g) => g.node('Reshape', ['x', g.constant([0, 2, -1])]));
  await gradCheck('Flatten', { x: [2, 3, 4] }, (g) => g.node('Flatten', ['x'], { axis: -1 }));
  await gradCheck('Unsqueeze', { x: [2, 3] }, (g) => g.node('Unsqueeze', ['x', g.constant([0, -1])]));
  await gradCheck('Squeeze', { x: [2, 1, 3] }, (g) => g.node('Squeeze', ['x', g.constant([1])]));
  await gradCheck('Identity', { x: [2, 3] }, (g) => g.node('Identity', ['x']));
  await gradCheck('Expand [3,1]->[2,3,4]', { x: [3, 1] }, (g) => g.node('Expand', ['x', g.constant([2, 3, 4])]));
  await gradCheck('Expand symbolic', { x: [3, 1] }, (g) => g.node('Expand', ['x', g.constant([2, 3, 4])]), { symbolic: true });
});

test('Cast: float->float passes through, through-int path carries no gradient', async () => {
  await gradCheck('Cast f64->f64', { x: [2, 3] }, (g) => g.node('Cast', ['x'], { to: 11 }));
  // Only the direct x term carries gradient: floor-like int round trip is piecewise constant.
  await gradCheck('Cast via int64 (no gradient)', { x: [2, 3] }, (g) =>
    g.node('Add', ['x', g.node('Cast', [g.node('Cast', [g.node('Mul', ['x', f64(g, 100)])], { to: 7 })], { to: 11 })]));
});

// ---------------------------------------------------------------------------------------------
// Elementwise with broadcasting.

test('Add, Sub, Mul, Div, Sum with broadcasting (static and symbolic shapes), reuse x*x', async () => {
  for (const op of ['Add', 'Sub', 'Mul', 'Div']) {
    const b = (dims: number[]) => (op === 'Div' ? { dims, positive: true } : dims);
    const f = (g: Graph) => g.node(op, ['a', 'b']);
    await gradCheck(`${op} [2,3,4]+[4]`, { a: [2, 3, 4], b: b([4]) }, f);
    await gradCheck(`${op} [2,3,4]+[4] symbolic`, { a: [2, 3, 4], b: b([4]) }, f, { symbolic: true });
    await gradCheck(`${op} [2,1,4]+[3,1] symbolic`, { a: [2, 1, 4], b: b([3, 1]) }, f, { symbolic: true });
    await gradCheck(`${op} [2,1,4]+[3,1]`, { a: [2, 1, 4], b: b([3, 1]) }, f);
    await gradCheck(`${op} [2,3]+[2,3]`, { a: [2, 3], b: b([2, 3]) }, f);
  }
  await gradCheck('Mul by scalar constant', { x: [2, 3] }, (g) => g.node('Mul', ['x', f64(g, 0.7)]));
  await gradCheck('Div scalar constant by x', { x: { dims: [2, 3], positive: true } }, (g) => g.node('Div', [f64(g, 0.7), 'x']));
  await gradCheck('Mul x*x (reused tensor)', { x: [2, 3] }, (g) => g.node('Mul', ['x', 'x']));
  await gradCheck('x used three times', { x: [2, 3] }, (g) => g.node('Add', [g.node('Mul', ['x', 'x']), g.node('Exp', ['x'])]));
  await gradCheck('Sum [2,3,4],[4],[3,1]', { a: [2, 3, 4], b: [4], c: [3, 1] }, (g) => g.node('Sum', ['a', 'b', 'c']));
  await gradCheck('Sum symbolic', { a: [2, 3, 4], b: [4], c: [3, 1] }, (g) => g.node('Sum', ['a', 'b', 'c']), { symbolic: true });
});

test('Pow (constant and tensor exponent), Where', async () => {
  await gradCheck('Pow x^3', { x: [2, 3] }, (g) => g.node('Pow', ['x', f64(g, 3)]));
  await gradCheck('Pow x^-1.5 (x>0)', { x: { dims: [2, 3], positive: true } }, (g) => g.node('Pow', ['x', f64(g, -1.5)]));
  await gradCheck('Pow x^2 (int64 exponent)', { x: [2, 3] }, (g) => g.node('Pow', ['x', g.constant([2], 'int64', [])]));
  await gradCheck('Pow x^p (tensor p, x>0)', { x: { dims: [2, 3], positive: true }, p: [3] }, (g) => g.node('Pow', ['x', 'p']));
  await gradCheck('Where [2,3] / [3]', { c: { dims: [2, 3], fixed: true }, a: [2, 3], b: [3] },
    (g) => g.node('Where', [g.node('Greater', ['c', f64(g, 0)]), 'a', 'b']));
  await gradCheck('Where symbolic', { c: { dims: [2, 3], fixed: true }, a: [2, 3], b: [3] },
    (g) => g.node('Where', [g.node('Greater', ['c', f64(g, 0)]), 'a', 'b']), { symbolic: true });
});

test('unary: Neg, Sqrt, Reciprocal, Sigmoid, Tanh, Relu, Exp, Log, Cos, Sin', async () => {
  for (const op of ['Neg', 'Sigmoid', 'Tanh', 'Relu', 'Exp', 'Cos', 'Sin']) await gradCheck(op, { x: [3, 4] }, (g) => g.node(op, ['x']));
  for (const op of ['Sqrt', 'Reciprocal', 'Log']) await gradCheck(op, { x: { dims: [3, 4], positive: true } }, (g) => g.node(op, ['x']));
});

// ---------------------------------------------------------------------------------------------
// Reductions, normalisers, indexing.

test('ReduceMean, ReduceSum, Softmax, LogSoftmax', async () => {
  await gradCheck('ReduceMean axes [-1] keepdims', { x: [2, 3, 4] }, (g) => g.node('ReduceMean', ['x'], { axes: [-1], keepdims: 1 }));
  await gradCheck('ReduceMean axes [0,2] no keepdims', { x: [2, 3, 4] }, (g) => g.node('ReduceMean', ['x'], { axes: [0, 2], keepdims: 0 }));
  await gradCheck('ReduceMean all', { x: [2, 3, 4] }, (g) => g.node('ReduceMean', ['x'], { keepdims: 0 }));
  await gradCheck('ReduceSum axes [1] no keepdims', { x: [2, 3, 4] }, (g) => g.node('ReduceSum', ['x', g.constant([1])], { keepdims: 0 }));
  await gradCheck('ReduceSum axes [-1,0] keepdims', { x: [2, 3, 4] }, (g) => g.node('ReduceSum', ['x', g.constant([-1, 0])], { keepdims: 1 }));
  await gradCheck('ReduceSum all', { x: [2, 3, 4] }, (g) => g.node('ReduceSum', ['x'], { keepdims: 0 }));
  // No axes with noop_with_empty_axes: the identity, whose output keeps x's shape (the Mul then broadcasts b over it).
  await gradCheck('ReduceSum no axes, noop_with_empty_axes', { x: [2, 3], b: [3] }, (g) => g.node('Mul', [g.node('ReduceSum', ['x'], { keepdims: 0, noop_with_empty_axes: 1 }), 'b']));
  const g = new Graph();
  g.input('x', 'float64', [2, 3]);
  const noop = g.node('ReduceSum', ['x'], { keepdims: 0, noop_with_empty_axes: 1 }), all = g.node('ReduceSum', ['x', g.constant([])], { keepdims: 0 });
  const shapes = inferShapes(g, ancestors(g, [noop, all]));
  assert.deepEqual([shapes.get(noop), shapes.get(all)], [[2, 3], []]);
  await gradCheck('Softmax axis -1', { x: [2, 3, 5] }, (g) => g.node('Softmax', ['x'], { axis: -1 }));
  await gradCheck('Softmax axis 1', { x: [2, 3, 5] }, (g) => g.node('Softmax', ['x'], { axis: 1 }));
  await gradCheck('LogSoftmax axis -1', { x: [2, 3, 5] }, (g) => g.node('LogSoftmax', ['x'], { axis: -1 }));
  await gradCheck('LogSoftmax axis 0', { x: [2, 3, 5] }, (g) => g.node('LogSoftmax', ['x'], { axis: 0 }));
});

test('Concat, Split, Slice', async () => {
  await gradCheck('Concat axis -1 (x twice)', { a: [2, 3, 1], b: [2, 3, 4] }, (g) => g.node('Concat', ['a', 'b', 'a'], { axis: -1 }));
  await gradCheck('Concat axis 0 symbolic', { a: [1, 3], b: [2, 3] }, (g) => g.node('Concat', ['a', 'b'], { axis: 0 }), { symbolic: true });
  await gradCheck('Split both outputs', { x: [2, 5] }, (g) => {
    const [a, b] = g.nodeN('Split', ['x', g.constant([2, 3])], { axis: -1 }, { outputs: 2 });
    return g.node('Concat', [g.node('Exp', [a]), g.node('Neg', [b])], { axis: -1 });
  });
  await gradCheck('Split one output used', { x: [4, 3] }, (g) => g.nodeN('Split', ['x', g.constant([1, 3])], { axis: 0 }, { outputs: 2 })[1]);
  await gradCheck('Split equal, no sizes', { x: [2, 6] }, (g) => g.nodeN('Split', ['x'], { axis: 1 }, { outputs: 3 })[2]);
  await gradCheck('Slice axes [1], step 1', { x: [3, 5] }, (g) => g.node('Slice', ['x', g.constant([1]), g.constant([4]), g.constant([1])]));
  await gradCheck('Slice steps 2 and -1', { x: [4, 6] }, (g) =>
    g.node('Slice', ['x', g.constant([0, -1]), g.constant([4, -100]), g.constant([0, 1]), g.constant([2, -1])]));
});

test('Gather (embedding and axis 1), GatherElements, GatherND', async () => {
  // Repeated ids: their rows' gradients must add up.
  await gradCheck('Gather axis 0 (repeated ids)', { table: [4, 3], ids: ints([2, 3], [0, 2, 2, 1, 2, 0]) }, (g) => g.node('Gather', ['table', 'ids']));
  await gradCheck('Gather axis 0 scalar index', { table: [4, 3], ids: ints([], [2]) }, (g) => g.node('Gather', ['table', 'ids']));
  await gradCheck('Gather axis 1', { x: [2, 4, 3], ids: ints([3], [3, 0, 3]) }, (g) => g.node('Gather', ['x', 'ids'], { axis: 1 }));
  // Ids counted from the end (-1 is the last row) and int32 ids, as Gather takes them.
  await gradCheck('Gather axis 0 (negative ids)', { table: [4, 3], ids: ints([4], [-1, 3, 0, -4]) }, (g) => g.node('Gather', ['table', 'ids']));
  await gradCheck('Gather axis 0 (int32 ids)', { table: [4, 3], ids: { ...ints([3], [1, 1, 2]), int32: true } }, (g) => g.node('Gather', ['table', 'ids']));
  await gradCheck('Gather axis 1 (negative ids)', { x: [2, 4, 3], ids: ints([3], [-1, 0, 3]) }, (g) => g.node('Gather', ['x', 'ids'], { axis: 1 }));
  await gradCheck('GatherElements axis 1', { x: [3, 5], ids: ints([3, 2], [0, 4, 2, 2, 1, 0]) }, (g) => g.node('GatherElements', ['x', 'ids'], { axis: 1 }));
  await gradCheck('GatherND', { x: [3, 4, 2], ids: ints([3, 2], [0, 1, 2, 3, 0, 1]) }, (g) => g.node('GatherND', ['x', 'ids']));
  await gradCheck('GatherND batch_dims 1', { x: [2, 4, 3], ids: ints([2, 2, 1], [3, 1, 0, 0]) }, (g) => g.node('GatherND', ['x', 'ids'], { batch_dims: 1 }));
});

test('broadcast edge shapes: size-1 dims on both sides, rank differences, scalars; Where/Expand/Sum; MatMul batch broadcast', async () => {
  // Each operand broadcast along a different axis, leading axes missing, and 0-d / [1] operands: every gradient summed
  // back over exactly its broadcast axes (the static decision and, symbolic, the run-time one).
  const pairs: [number[], number[]][] = [[[5, 1, 1], [1, 4, 1]], [[2, 1, 3, 1], [4, 1, 5]], [[1, 3], [2, 1, 3]], [[2, 3], []], [[1], [2, 3]], [[], [1]]];
  for (const op of ['Add', 'Mul', 'Div']) for (const [da, db] of pairs) for (const symbolic of [false, true]) {
    await gradCheck(`${op} [${da}]·[${db}]${symbolic ? ' symbolic' : ''}`, { a: da, b: op === 'Div' ? { dims: db, positive: true } : db }, (g) => g.node(op, ['a', 'b']), { symbolic });
  }
  await gradCheck('Sum x, x, y (one input twice)', { x: [2, 3], y: [3] }, (g) => g.node('Sum', ['x', 'x', 'y']));
  // The condition broadcasts past both branches: a [] and b [3] get gradients summed over [4,2,3].
  for (const symbolic of [false, true]) {
    await gradCheck(`Where cond [4,2,1], a [], b [3]${symbolic ? ' symbolic' : ''}`, { c: { dims: [4, 2, 1], fixed: true }, a: [], b: [3] },
      (g) => g.node('Where', [g.node('Greater', ['c', f64(g, 0)]), 'a', 'b']), { symbolic });
  }
  await gradCheck('Expand [3,1] to Shape(y) symbolic', { x: [3, 1], y: { dims: [2, 3, 4], fixed: true } }, (g) => g.node('Expand', ['x', g.node('Shape', ['y'])]), { symbolic: true });
  await gradCheck('Expand [1,3]->[2,2,3], x also used directly', { x: [1, 3], y: [2, 2, 3] },
    (g) => g.node('Add', [g.node('Mul', [g.node('Expand', ['x', g.constant([2, 2, 3])]), 'y']), g.node('Mul', ['x', 'x'])]));
  const mm = (g: Graph) => g.node('MatMul', ['a', 'b']);
  for (const [da, db] of [[[2, 1, 3, 4], [1, 5, 4, 6]], [[2, 3, 4], [1, 4, 5]], [[1, 3, 4], [2, 4, 5]], [[4, 1, 2, 3], [3, 2]]]) for (const symbolic of [false, true]) {
    await gradCheck(`MatMul [${da}]x[${db}]${symbolic ? ' symbolic' : ''}`, { a: da, b: db }, mm, { symbolic });
  }
  await gradCheck('MatMul a·a (one tensor as both operands)', { a: [3, 3] }, (g) => g.node('MatMul', ['a', 'a']));
});

test('reductions with empty or input axes; Gather on 1-D / 3-D data and negative axes; GatherElements with negative, repeated indices', async () => {
  await gradCheck('ReduceSum empty axes constant, keepdims 0 (all axes)', { x: [2, 3] }, (g) => g.node('ReduceSum', ['x', g.constant([])], { keepdims: 0 }));
  await gradCheck('ReduceSum empty axes constant, keepdims 1', { x: [2, 3] }, (g) => g.node('ReduceSum', ['x', g.constant([])], { keepdims: 1 }));
  await gradCheck('ReduceSum empty axes constant, noop_with_empty_axes', { x: [2, 3], b: [3] },
    (g) => g.node('Mul', [g.node('ReduceSum', ['x', g.constant([])], { keepdims: 0, noop_with_empty_axes: 1 }), 'b']));
  await gradCheck('ReduceMean axes [-1,-3] no keepdims symbolic', { x: [2, 3, 4] }, (g) => g.node('ReduceMean', ['x'], { axes: [-1, -3], keepdims: 0 }), { symbolic: true });
  await gradCheck('ReduceMean over a size-1 axis', { x: [2, 1, 4] }, (g) => g.node('ReduceMean', ['x'], { axes: [1], keepdims: 0 }));
  await gradCheck('ReduceMean axes as input (opset 18)', { x: [2, 3, 4] }, (g) => g.node('ReduceMean', ['x', g.constant([1])], { keepdims: 0 }), { opset: 18 });
  await gradCheck('Gather axis 0, 1-D data, repeated and negative ids', { x: [5], ids: ints([6], [1, 1, 4, 1, 0, -1]) }, (g) => g.node('Gather', ['x', 'ids']));
  await gradCheck('Gather axis 0, 3-D data, 2-D ids', { x: [4, 2, 3], ids: ints([2, 3], [3, 3, 0, 3, 1, 3]) }, (g) => g.node('Gather', ['x', 'ids']));
  await gradCheck('Gather axis 0, one id repeated 7 times', { x: [4, 3], ids: ints([7], [2, 2, 2, 2, 2, 2, 2]) }, (g) => g.node('Gather', ['x', 'ids']));
  await gradCheck('Gather axis -1, repeated ids', { x: [2, 3, 4], ids: ints([5], [0, 3, 3, -1, 2]) }, (g) => g.node('Gather', ['x', 'ids'], { axis: -1 }));
  await gradCheck('Gather axis -2 of 2-D data', { x: [4, 3], ids: ints([3], [2, 2, 0]) }, (g) => g.node('Gather', ['x', 'ids'], { axis: -2 }));
  await gradCheck('GatherElements negative and repeated indices', { x: [3, 4], ids: ints([3, 5], [0, -1, 3, 3, 0, 1, 1, 1, -4, 2, 3, 2, -2, 2, 0]) },
    (g) => g.node('GatherElements', ['x', 'ids'], { axis: 1 }));
  await gradCheck('GatherND repeated rows', { x: [3, 4], ids: ints([4, 1], [2, 0, 2, 2]) }, (g) => g.node('GatherND', ['x', 'ids']));
});

test('Pow at x = 0: gradients as PyTorch\'s pow_backward (0 where p = 0, d/dp 0 where x = 0 and p >= 0), not NaN', async () => {
  // Not a finite-difference case (x^0 and 0^p are not differentiable there in the usual sense): the values PyTorch gives.
  const g = new Graph();
  g.input('x', 'float64', [4]); g.input('p', 'float64', [4]); g.input('z', 'float64', [3]);
  const sum = (t: string) => g.node('ReduceSum', [t], { keepdims: 0 });
  g.nodeN('Add', [sum(g.node('Pow', ['x', 'p'])), sum(g.node('Pow', ['z', f64(g, 0)]))], {}, { names: ['loss'] });
  g.output('loss', 'float64', []);
  const grads = addBackward(g, 'loss', ['x', 'p', 'z'], { outputs: true });
  const s = await ort.InferenceSession.create(g.toModelProto(), sessionOptions);
  const t = (v: number[]) => new ort.Tensor('float64', Float64Array.from(v), [v.length]);
  const out = await s.run({ x: t([0, 1.5, 0, 2]), p: t([2, 3, 0, 1]), z: t([0, -0, -2]) });
  await s.release();
  const [dx, dp, dz] = ['x', 'p', 'z'].map((k) => [...(out[grads.get(k)!].data as Float64Array)]);
  const close = (a: number[], b: number[], what: string) => {
    assert.equal(a.length, b.length, `${what}: size`);
    a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) <= 1e-12 * Math.max(1, Math.abs(b[i])), `${what}[${i}]: ${a} vs ${b}`));
  };
  close(dx, [0, 3 * 1.5 ** 2, 0, 1], 'd(x^p)/dx');
  close(dp, [0, 1.5 ** 3 * Math.log(1.5), 0, 2 * Math.log(2)], 'd(x^p)/dp');
  close(dz, [0, 0, 0], 'd(z^0)/dz');
});

// ---------------------------------------------------------------------------------------------
// Composites, the loss, pruning.

test('composite: RMSNorm + linear + softmax cross-entropy (layers.ts lowering, float64)', async () => {
  await gradCheck('RMSNorm+linear+softmax CE', { x: [2, 3, 4], nw: [4], w: [5, 4], bias: [5], onehot: { dims: [2, 3, 5], fixed: true } }, (g) => {
    const ms = g.node('ReduceMean', [g.node('Mul', ['x', 'x'])], { axes: [-1], keepdims: 1 });
    const inv = g.node('Reciprocal', [g.node('Sqrt', [g.node('Add', [ms, f64(g, 1e-6)])])]);
    const h = g.node('Mul', [g.node('Mul', ['x', inv]), 'nw']);
    const logits = g.node('Add', [g.node('MatMul', [h, g.node('Transpose', ['w'], { perm: [1, 0] })]), 'bias']);
    const p = g.node('Softmax', [logits], { axis: -1 });
    return g.node('Neg', [g.node('ReduceSum', [g.node('Mul', [g.node('Log', [p]), 'onehot']), g.constant([-1])], { keepdims: 0 })]);
  });
});

test('crossEntropy: weighted mean NLL over [B,T,V] logits', async () => {
  await gradCheck('crossEntropy', {
    logits: [2, 3, 5], targets: ints([2, 3], [4, 0, 2, 2, 1, 3]), weights: { dims: [2, 3], fixed: true },
  }, (g) => crossEntropy(g, 'logits', 'targets', 'weights'));
  // Value check against a direct computation.
  const g = new Graph();
  g.input('logits', 'float64', [2, 2, 3]); g.input('t', 'int64', [2, 2]); g.input('w', 'float64', [2, 2]);
  g.nodeN('Identity', [crossEntropy(g, 'logits', 't', 'w')], {}, { names: ['loss'] });
  g.output('loss', 'float64', []);
  const logits = [1, 2, 3, 0, 0, 0, -1, 5, 2, 0.5, 0.5, 3], t = [2, 0, 1, 1], w = [1, 0, 2, 1];
  const s = await ort.InferenceSession.create(g.toModelProto(), sessionOptions);
  const out = await s.run({
    logits: new ort.Tensor('float64', Float64Array.from(logits), [2, 2, 3]), t: new ort.Tensor('int64', BigInt64Array.from(t.map(BigInt)), [2, 2]),
    w: new ort.Tensor('float64', Float64Array.from(w), [2, 2]),
  });
  let num = 0;
  for (let i = 0; i < 4; i++) {
    const row = logits.slice(3 * i, 3 * i + 3), lse = Math.log(row.reduce((a, x) => a + Math.exp(x), 0));
    num += w[i] * (lse - row[t[i]]);
  }
  assert.ok(Math.abs(Number(out.loss.data[0]) - num / 4) < 1e-12);
});

test('pruning: unreached inputs get zeros, non-differentiable branches need no rule, missing rules are reported', async () => {
  await gradCheck('unused wrt input gets zeros', { x: [2, 3], unused: [4] }, (g) => g.node('Mul', ['x', 'x']));
  // TopK has no rule, but only the fixed input flows through it; the Shape-derived branch is no path either.
  await gradCheck('no-rule op off the wrt path', { x: [2, 3], c: { dims: [2, 3], fixed: true } }, (g) => {
    const top = g.nodeN('TopK', ['c', g.constant([1])], { axis: -1 }, { outputs: 2 })[0];
    const n = g.node('Cast', [g.node('Size', ['x'])], { to: 11 });
    return g.node('Mul', [g.node('Mul', ['x', top]), n]);
  });
  // sum(exp(y) · x) by x only: nothing of y's branch is emitted, whose first node (d exp(y) = dp · x) is the only one to read x.
  const backward = (wrt: string[]) => {
    const before = (() => { const g = new Graph(); g.input('x', 'float64', [2]); g.input('y', 'float64', [2]); return g; })();
    const loss = before.node('ReduceSum', [before.node('Mul', [before.node('Exp', ['y']), 'x'])], { keepdims: 0 });
    const n0 = before.nodes.length;
    addBackward(before, loss, wrt);
    return before.nodes.slice(n0);
  };
  assert.ok(backward(['x', 'y']).some((n) => n.inputs.includes('x')), 'by both, y\'s branch reads x');
  assert.ok(!backward(['x']).some((n) => n.inputs.includes('x')), 'by x only, y\'s branch is pruned');
  assert.ok(backward(['x']).length < backward(['x', 'y']).length);
  const g = new Graph();
  g.input('x', 'float64', [2, 3]);
  const e = g.node('Erf', ['x']);
  assert.throws(() => addBackward(g, g.node('ReduceSum', [e], { keepdims: 0 }), ['x']), /no VJP rule for Erf/);
});

test('subgraphs (If): a branch that reads a differentiated tensor from the outer scope is refused, not given zero gradients', async () => {
  /** If(c) { x·x } else { x+x }, x read from the outer scope: directly, through a node only the branches use, or from a nested If. */
  const build = (how: 'direct' | 'intermediate' | 'nested') => {
    const g = new Graph();
    g.input('x', 'float64', [2]);
    const x = how === 'intermediate' ? g.node('Mul', ['x', f64(g, 2)]) : 'x';
    const then = g.branch(), other = g.branch();
    if (how === 'nested') {
      const inner = then.branch(), innerElse = then.branch();
      inner.output(inner.node('Mul', [x, x]), 'float64', [2]);
      innerElse.output(innerElse.node('Neg', [x]), 'float64', [2]);
      then.output(then.node('If', [g.constant([1], 'bool', [])], { then_branch: { graph: inner }, else_branch: { graph: innerElse } }), 'float64', [2]);
    } else then.output(then.node('Mul', [x, x]), 'float64', [2]);
    other.output(other.node('Add', [x, x]), 'float64', [2]);
    const y = g.node('If', [g.constant([1], 'bool', [])], { then_branch: { graph: then }, else_branch: { graph: other } });
    return { g, loss: g.node('ReduceSum', [y], { keepdims: 0 }) };
  };
  for (const how of ['direct', 'intermediate', 'nested'] as const) {
    const { g, loss } = build(how);
    assert.ok(ancestors(g, [loss]).some((n) => n.op === (how === 'intermediate' ? 'Mul' : 'If')), how);
    assert.throws(() => addBackward(g, loss, ['x']), /no VJP rule for If \(producing "If_\d+"\) through the outer-scope tensor "(x|Mul_\d+)"/, how);
  }
  // A subgraph that reads only fixed tensors is a constant for the backward pass.
  await gradCheck('If reading only a fixed input', { x: [2, 3], c: { dims: [2, 3], fixed: true } }, (g) => {
    const then = g.branch(), other = g.branch();
    then.output(then.node('Exp', ['c']), 'float64', [2, 3]);
    other.output(other.node('Neg', ['c']), 'float64', [2, 3]);
    return g.node('Mul', ['x', g.node('If', [g.constant([1], 'bool', [])], { then_branch: { graph: then }, else_branch: { graph: other } })]);
  });
});

// ---------------------------------------------------------------------------------------------
// The training graph itself: decoder (training lowering) + LoRA + cross-entropy.

const TINY: ModelConfig = {
  architecture: 'qwen2', vocabSize: 13, hiddenSize: 8, intermediateSize: 12, numLayers: 2, numHeads: 2, numKvHeads: 1,
  headDim: 4, rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 64, tieWordEmbeddings: true, attentionBias: true, eosTokenIds: [0],
};

/** The float32 training graph: every weight a graph input (full fine-tuning) plus LoRA A/B on every projection. */
function trainingGraph(cfg: ModelConfig, weights: MemoryWeights): { g: Graph; loss: string; wrt: string[] } {
  const g = new Graph();
  const L = new Layers(g, cfg, weights, { quant: 'fp32', accuracyLevel: 0, fused: false, loraTargets: PROJECTIONS, weightsAsInputs: true });
  const ids = g.input('input_ids', 'int64', ['batch', 'tokens']);
  const positions = g.input('positions', 'int64', ['batch', 'tokens']);
  const bias = g.input('bias', 'float32', ['batch', 1, 1, 'tokens', 'tokens']);
  const logits = lmHead(L, decoder(L, { inputIds: ids, positions, bias }));
  const targets = g.input('targets', 'int64', ['batch', 'tokens']), lw = g.input('loss_weights', 'float32', ['batch', 'tokens']);
  g.nodeN('Identity', [crossEntropy(g, logits, targets, lw)], {}, { names: ['loss'] });
  g.output('loss', 'float32', []);
  const fixed = new Set(['adapter_mask', 'bias', 'loss_weights']);
  return { g, loss: 'loss', wrt: g.inputs.filter((v) => v.dtype === 'float32' && !fixed.has(v.name)).map((v) => v.name) };
}

/** A float64 copy of a float32 graph (initializers, inputs, outputs, Cast targets). Tensors other than the
 *  graph's inputs and outputs are renamed so that names the copy's own counter generates cannot collide. */
function toFloat64(src: Graph): Graph {
  const g = new Graph(), keep = new Set([...src.inputs, ...src.outputs].map((v) => v.name));
  const rn = (t: string) => (t === '' || keep.has(t) ? t : `f64.${t}`);
  const dt = (d: string) => (d === 'float32' ? 'float64' : d) as 'float64';
  for (const v of src.inputs) g.input(v.name, dt(v.dtype), v.dims);
  for (const v of src.initializers.values()) g.initializer(rn(v.name), dt(v.dtype), v.dims as number[], v.dtype === 'float32' ? Float64Array.from(v.data as Float32Array) : v.data);
  for (const n of src.nodes) {
    const attrs = n.op === 'Cast' && n.attrs.to === 1 ? { ...n.attrs, to: 11 } : n.attrs;
    g.nodes.push({ ...n, attrs, inputs: n.inputs.map(rn), outputs: n.outputs.map(rn) });
  }
  for (const v of src.outputs) g.output(rn(v.name), dt(v.dtype), v.dims);
  return g;
}

/** Random tiny weights and one batch: two rows of 5 tokens; row 1 is left-padded by one (masked in
 *  attention and the loss), and its LoRA mask is off for two tokens. LoRA A/B get random values. */
function tinySetup(cfg: ModelConfig, r: ReturnType<typeof rng>) {
  const weights = new Map<string, { shape: number[]; data: Float32Array }>();
  const q = cfg.numHeads * cfg.headDim, kv = cfg.numKvHeads * cfg.headDim, H = cfg.hiddenSize;
  const add = (name: string, shape: number[], f: () => number) => weights.set(name, { shape, data: Float32Array.from({ length: prod(shape) }, f) });
  add('model.embed_tokens.weight', [cfg.vocabSize, H], () => 0.5 * r.normal());
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    add(p + 'input_layernorm.weight', [H], () => 1 + 0.1 * r.normal());
    add(p + 'post_attention_layernorm.weight', [H], () => 1 + 0.1 * r.normal());
    for (const [n, rows] of [['q', q], ['k', kv], ['v', kv]] as const) {
      add(`${p}self_attn.${n}_proj.weight`, [rows, H], () => 0.3 * r.normal());
      add(`${p}self_attn.${n}_proj.bias`, [rows], () => 0.1 * r.normal());
    }
    add(p + 'self_attn.o_proj.weight', [H, q], () => 0.3 * r.normal());
    add(p + 'mlp.gate_proj.weight', [cfg.intermediateSize, H], () => 0.3 * r.normal());
    add(p + 'mlp.up_proj.weight', [cfg.intermediateSize, H], () => 0.3 * r.normal());
    add(p + 'mlp.down_proj.weight', [H, cfg.intermediateSize], () => 0.3 * r.normal());
  }
  add('model.norm.weight', [H], () => 1 + 0.1 * r.normal());

  const B = 2, T = 5, rank = 2;
  const i64 = (v: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), dims);
  const feeds32: Record<string, ort.Tensor> = {
    input_ids: i64([1, 5, 7, 2, 12, 0, 3, 3, 9, 4], [B, T]),
    positions: i64([0, 1, 2, 3, 4, 0, 0, 1, 2, 3], [B, T]),
    targets: i64([5, 7, 2, 12, 6, 0, 3, 9, 4, 11], [B, T]),
    loss_weights: new ort.Tensor('float32', Float32Array.from([0, 1, 1, 1, 1, 0, 0, 1, 1, 1]), [B, T]),
    adapter_mask: new ort.Tensor('float32', Float32Array.from([1, 1, 1, 1, 1, 0, 0, 1, 1, 1]), [B, T]),
  };
  const bias = new Float32Array(B * T * T);
  for (let b = 0; b < B; b++) for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) {
    bias[(b * T + i) * T + j] = j > i || (b === 1 && j === 0 && i > 0) ? -1e9 : 0;
  }
  feeds32.bias = new ort.Tensor('float32', bias, [B, 1, 1, T, T]);
  const { g } = trainingGraph(cfg, new MemoryWeights(weights));
  for (const v of g.inputs) {
    if (feeds32[v.name]) continue;
    if (weights.has(v.name)) { feeds32[v.name] = new ort.Tensor('float32', weights.get(v.name)!.data, weights.get(v.name)!.shape); continue; }
    const dims = v.dims.map((d) => (typeof d === 'string' && d.startsWith('lora_rank') ? rank : (d as number)));
    feeds32[v.name] = new ort.Tensor('float32', Float32Array.from({ length: prod(dims) }, () => 0.3 * r.normal()), dims);
  }
  const ranks = Object.fromEntries(['q', 'k', 'v', 'o', 'gate', 'up', 'down'].map((p) => [`lora_rank_${p}_proj`, rank]));
  return { weights: new MemoryWeights(weights), feeds32, sizes: { batch: B, tokens: T, ...ranks } as Record<string, number> };
}

test('decoder training graph (2 layers, GQA, biases, LoRA, tied head): float64 FD check; float32 agrees', async () => {
  const r = rng(11), cfg = TINY, { weights, feeds32 } = tinySetup(cfg, r);
  const { g, loss, wrt } = trainingGraph(cfg, weights);
  const g64 = toFloat64(trainingGraph(cfg, weights).g);
  const n0 = g.nodes.length;
  const grads32 = addBackward(g, loss, wrt, { outputs: true }), grads64 = addBackward(g64, loss, wrt, { outputs: true });
  // Every broadcast reduction was decided from the symbolic shapes (no run-time axes computation).
  assert.ok(!g.nodes.slice(n0).some((n) => n.op === 'NonZero'));
  const feeds64 = Object.fromEntries(Object.entries(feeds32).map(([k, t]) =>
    [k, t.type === 'float32' ? new ort.Tensor('float64', Float64Array.from(t.data as Float32Array), t.dims) : t]));

  await checkDirections('decoder+LoRA+CE (float64, per tensor)', g64.toModelProto(), feeds64, wrt.map((w) => [w, grads64.get(w)!]), r, TOL);

  // The float32 graph (what training runs) must give the same gradients up to float32 rounding.
  const s32 = await ort.InferenceSession.create(g.toModelProto(), sessionOptions);
  const s64 = await ort.InferenceSession.create(g64.toModelProto(), sessionOptions);
  const [o32, o64] = [await s32.run(feeds32), await s64.run(feeds64)];
  let worst = 0;
  for (const w of wrt) {
    const a = o32[grads32.get(w)!].data as Float32Array, b = o64[grads64.get(w)!].data as Float64Array;
    let num = 0, den = 0;
    for (let i = 0; i < b.length; i++) { num += (a[i] - b[i]) ** 2; den += b[i] ** 2; }
    worst = Math.max(worst, Math.sqrt(num / Math.max(den, 1e-30)));
  }
  report.set('decoder float32 vs float64 gradients (rel L2)', worst);
  assert.ok(worst < 1e-4, `float32 gradients differ from float64 by ${worst}`);
  await s32.release(); await s64.release();
});

test('inferShapes agrees with run-time shapes on the decoder training graph', async () => {
  const { weights, feeds32, sizes } = tinySetup(TINY, rng(5));
  const { g, loss } = trainingGraph(TINY, weights);
  const shapes = inferShapes(g, ancestors(g, [loss]));
  // Expose Shape(t) of every inferred intermediate tensor (int64, so no float output types to declare).
  const probes = [...shapes].filter(([t]) => !g.inputs.some((v) => v.name === t) && !g.initializers.has(t));
  for (const [t, sh] of probes) { g.nodeN('Shape', [t], {}, { names: [`shape:${t}`] }); g.output(`shape:${t}`, 'int64', [sh.length]); }
  const s = await ort.InferenceSession.create(g.toModelProto(), sessionOptions);
  const out = await s.run(feeds32);
  const value = (d: Dim) => (typeof d === 'number' ? d : d.startsWith('?') ? undefined : d.split('*').reduce((a, f) => a * (sizes[f] ?? Number(f)), 1));
  let checked = 0;
  for (const [t, sh] of probes) {
    const actual = Array.from(out[`shape:${t}`].data as BigInt64Array, Number);
    assert.equal(actual.length, sh.length, `rank of ${t}`);
    sh.forEach((d, i) => { const v = value(d); if (v !== undefined) { assert.equal(actual[i], v, `${t} dim ${i}: [${sh}] vs [${actual}]`); checked++; } });
  }
  assert.ok(probes.length > 100 && checked > 300);
  await s.release();
});
