/**
 * Vector-Jacobian product rules, one per ONNX op type. A rule reads a forward node and the upstream
 * gradients of its outputs and appends ONNX nodes that compute the gradients of its inputs.
 *
 * Shapes are partly dynamic (batch, tokens): zeros and reshapes take their shape from Shape(x) at run
 * time, while the (symbolic) static shapes from `inferShapes` decide at build time which axes a broadcast
 * gradient is summed over, and give MatMul its operands' ranks. Where they cannot decide, the reduction
 * axes are computed at run time. Constants are emitted in the context's float dtype (float32 for
 * training graphs, float64 in the tests).
 */
import type { DType, Graph, Node } from '../onnx/graph.ts';
import type { Shape } from './backward.ts';

export interface Ctx {
  g: Graph;
  dtype: DType;
  /** Static (possibly symbolic) shape of a forward tensor, when known. */
  shape(t: string): Shape | undefined;
}

export interface Rule {
  /** Indices of the inputs a gradient can flow into (default: all). Others are indices, shapes, conditions. */
  diff?: (n: Node) => number[];
  /** dys[j]: gradient of output j, or null if no gradient reaches it. need[i]: whether input i wants one. */
  vjp(c: Ctx, n: Node, dys: (string | null)[], need: boolean[]): (string | null)[];
}

// ---------------------------------------------------------------------------------------------
// Helpers.

const scalar = (c: Ctx, v: number) => c.g.scalar(v, c.dtype);
const shape = (c: Ctx, t: string) => c.g.node('Shape', [t]);
/** t reshaped to like's run-time shape (allowzero: a 0 in that shape is a size, not "copy"). */
const reshapeLike = (c: Ctx, t: string, like: string) => c.g.node('Reshape', [t, shape(c, like)], { allowzero: 1 });
/** Zeros of t's shape, in the float dtype. */
export const zerosLike = (c: Ctx, t: string) => c.g.node('Expand', [scalar(c, 0), shape(c, t)]);
const mul = (c: Ctx, a: string, b: string) => c.g.node('Mul', [a, b]);
/** Integer attribute with ONNX's default. */
const attr = (n: Node, name: string, dflt: number) => (n.attrs[name] ?? dflt) as number;
const FLOAT_TYPES = new Set([1, 10, 11, 16]);

/**
 * Sums `grad` (a gradient of shape `gradShape`, e.g. a broadcast result's) down to the shape of `like`:
 * over the leading axes `like` lacks and the axes where `like` has size 1. Decided statically when the
 * shapes allow (an axis of `like` that is a number other than 1, or the same symbol as grad's, is kept),
 * else at run time from both Shape()s.
 */
function unbroadcast(c: Ctx, grad: string, like: string, gradShape: Shape | undefined): string {
  const g = c.g, L = c.shape(like);
  if (L && gradShape && gradShape.length >= L.length) {
    const lead = gradShape.length - L.length, axes = [...Array(lead).keys()];
    let decided = true;
    L.forEach((l, i) => {
      const o = gradShape[lead + i];
      if (l === 1 && o !== 1) axes.push(lead + i);
      else if (!(l === 1 || typeof l === 'number' || l === o || o === 1)) decided = false; // symbol vs other symbol
    });
    if (decided) {
      if (!axes.length) return grad;
      const r = g.node('ReduceSum', [grad, g.constant(axes)], { keepdims: 1 });
      if (!lead) return r;
      const known = L.every((d) => typeof d === 'number');
      return known ? g.node('Reshape', [r, g.constant(L as number[])]) : reshapeLike(c, r, like);
    }
  }
  // Run time: pad like's shape with leading 1s to grad's rank; sum (keepdims) where it differs from grad's.
  const sg = shape(c, grad), sl = shape(c, like);
  const ones = g.node('Expand', [g.constant([1]), g.node('Sub', [g.node('Shape', [sg]), g.node('Shape', [sl])])]);
  const padded = g.node('Concat', [ones, sl], { axis: 0 });
  const axes = g.node('Reshape', [g.node('NonZero', [g.node('Not', [g.node('Equal', [padded, sg])])]), g.constant([-1])]);
  return g.node('Reshape', [g.node('ReduceSum', [grad, axes], { keepdims: 1, noop_with_empty_axes: 1 }), sl], { allowzero: 1 });
}

/** Gradient of an elementwise node's input i: `grad` (output-shaped) reduced to input i's shape. */
function ew(c: Ctx, n: Node, i: number, grad: string): string {
  return unbroadcast(c, grad, n.inputs[i], c.shape(n.outputs[0]));
}

/** Swaps the last two axes of a rank-r tensor. */
function swapLast(c: Ctx, t: string, r: number): string {
  const perm = [...Array(r).keys()];
  [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
  return c.g.node('Transpose', [t], { perm });
}

/** iota shaped like t: each element holds its own flat index (int64). Applying a gather/slice op to it
 *  tells where each output element came from, which turns any indexing op's VJP into a scatter-add over the flat
 *  data: ScatterElements, whose add is exact where indices repeat (ScatterND's add races across ORT's threads). */
function scatterThroughIota(c: Ctx, data: string, dy: string, apply: (iota: string) => string): string {
  const g = c.g, size = g.node('Size', [data]);
  const iota = reshapeLike(c, g.node('Range', [g.constant([0], 'int64', []), size, g.constant([1], 'int64', [])]), data);
  const where = g.node('Reshape', [apply(iota), g.constant([-1])]);
  const flat = g.node('Expand', [scalar(c, 0), g.node('Reshape', [size, g.constant([1])])]);
  const scattered = g.node('ScatterElements', [flat, where, g.node('Reshape', [dy, g.constant([-1])])], { axis: 0, reduction: 'add' });
  return reshapeLike(c, scattered, data);
}

/** Axes of a Reduce* node: attribute (ReduceMean etc. at opset 17) or second input (ReduceSum). */
function reduceAxes(c: Ctx, n: Node): string | undefined {
  if (n.attrs.axes !== undefined) return c.g.constant(n.attrs.axes as number[]);
  return n.inputs[1] || undefined;
}

/** dy of a reduction broadcast back over x: re-insert the reduced axes when keepdims=0, then Expand. */
function unreduce(c: Ctx, n: Node, dy: string): string {
  const g = c.g, axes = reduceAxes(c, n), x = n.inputs[0];
  if (!axes && attr(n, 'noop_with_empty_axes', 0)) return dy;
  if (!attr(n, 'keepdims', 1) && axes) dy = g.node('Unsqueeze', [dy, axes]);
  return g.node('Expand', [dy, shape(c, x)]);
}

// ---------------------------------------------------------------------------------------------
// Rules.

const only = (...idx: number[]) => () => idx;
const none = { diff: () => [], vjp: () => [] } satisfies Rule;
/** Unary op whose gradient is dy * f'(x, y). */
const unary = (d: (c: Ctx, x: string, y: string, dy: string) => string): Rule => ({
  vjp: (c, n, [dy]) => [d(c, n.inputs[0], n.outputs[0], dy!)],
});
/** Sums (Add, Sum): every input's gradient is dy, reduced to its shape. */
const sum: Rule = { vjp: (c, n, [dy], need) => need.map((w, i) => (w ? ew(c, n, i, dy!) : null)) };
/** Ops whose input gradient is dy reshaped back to the input's shape. */
const reshapeBack: Rule = { diff: only(0), vjp: (c, n, [dy]) => [reshapeLike(c, dy!, n.inputs[0])] };

export const VJP: Record<string, Rule> = {
  Identity: { vjp: (_c, _n, [dy]) => [dy] },
  Cast: {
    // Float-to-float casts pass the gradient through (cast back); casts to or from integers stop it.
    diff: (n) => (FLOAT_TYPES.has(n.attrs.to as number) ? [0] : []),
    vjp: (c, n, [dy]) => [c.g.node('CastLike', [dy!, n.inputs[0]])],
  },
  Neg: unary((c, _x, _y, dy) => c.g.node('Neg', [dy])),
  Exp: unary((c, _x, y, dy) => mul(c, dy, y)),
  Log: unary((c, x, _y, dy) => c.g.node('Div', [dy, x])),
  Sqrt: unary((c, _x, y, dy) => c.g.node('Div', [mul(c, dy, scalar(c, 0.5)), y])), // d√x = 1/(2√x)
  Reciprocal: unary((c, _x, y, dy) => c.g.node('Neg', [mul(c, dy, mul(c, y, y))])), // d(1/x) = -1/x²
  Sigmoid: unary((c, _x, y, dy) => mul(c, dy, mul(c, y, c.g.node('Sub', [scalar(c, 1), y])))),
  Tanh: unary((c, _x, y, dy) => mul(c, dy, c.g.node('Sub', [scalar(c, 1), mul(c, y, y)]))),
  Relu: unary((c, x, _y, dy) => c.g.node('Where', [c.g.node('Greater', [x, scalar(c, 0)]), dy, scalar(c, 0)])),
  Cos: unary((c, x, _y, dy) => c.g.node('Neg', [mul(c, dy, c.g.node('Sin', [x]))])),
  Sin: unary((c, x, _y, dy) => mul(c, dy, c.g.node('Cos', [x]))),

  Add: sum,
  Sum: sum,
  Sub: { vjp: (c, n, [dy], need) => [need[0] ? ew(c, n, 0, dy!) : null, need[1] ? ew(c, n, 1, c.g.node('Neg', [dy!])) : null] },
  Mul: {
    vjp: (c, n, [dy], need) => {
      const [a, b] = n.inputs;
      return [need[0] ? ew(c, n, 0, mul(c, dy!, b)) : null, need[1] ? ew(c, n, 1, mul(c, dy!, a)) : null];
    },
  },
  Div: {
    vjp: (c, n, [dy], need) => {
      const [, b] = n.inputs, da = need[0] || need[1] ? c.g.node('Div', [dy!, b]) : ''; // dy/b; d/db = -(dy/b)·(a/b)
      return [need[0] ? ew(c, n, 0, da) : null, need[1] ? ew(c, n, 1, c.g.node('Neg', [mul(c, da, n.outputs[0])])) : null];
    },
  },
  Pow: {
    vjp: (c, n, [dy], need) => {
      const g = c.g, [x, p] = n.inputs, y = n.outputs[0];
      const pf = g.node('CastLike', [p, x]), z = scalar(c, 0); // the exponent may be an integer tensor
      // As PyTorch's pow_backward: d/dx is 0 where p = 0 (p·x^(p−1) is 0·∞ = NaN at x = 0), and d/dp is 0 where
      // x = 0 and p ≥ 0 (y·log x is 0·(−∞) = NaN there, or −∞ at p = 0). Elsewhere d/dp needs x > 0 (NaN for x < 0).
      const dx = need[0] ? ew(c, n, 0, mul(c, dy!, g.node('Where', [g.node('Equal', [pf, z]), z,
        mul(c, pf, g.node('Pow', [x, g.node('Sub', [pf, scalar(c, 1)])]))]))) : null;
      const dp = need[1] ? ew(c, n, 1, mul(c, dy!, g.node('Where', [g.node('And', [g.node('Equal', [x, z]), g.node('GreaterOrEqual', [pf, z])]), z,
        mul(c, y, g.node('Log', [x]))]))) : null;
      return [dx, dp];
    },
  },
  Where: {
    diff: only(1, 2),
    vjp: (c, n, [dy], need) => {
      const [cond] = n.inputs, z = scalar(c, 0);
      return [null,
        need[1] ? ew(c, n, 1, c.g.node('Where', [cond, dy!, z])) : null,
        need[2] ? ew(c, n, 2, c.g.node('Where', [cond, z, dy!])) : null];
    },
  },
  Expand: { diff: only(0), vjp: (c, n, [dy]) => [unbroadcast(c, dy!, n.inputs[0], c.shape(n.outputs[0]))] },

  MatMul: {
    vjp: (c, n, [dy], need) => {
      const g = c.g, [a, b] = n.inputs, A = c.shape(a), B = c.shape(b), Y = c.shape(n.outputs[0]);
      if (!A || !B || !Y || A.length < 2 || B.length < 2) {
        throw new Error(`autodiff: MatMul ${n.outputs[0]} needs operands of known rank >= 2 (shapes [${A}], [${B}])`);
      }
      const ra = A.length, rb = B.length, batch = Y.slice(0, -2);
      let da: string | null = null, db: string | null = null;
      // dA = dY·Bᵀ, dB = Aᵀ·dY, each summed over the batch axes its operand was broadcast along.
      if (need[0]) {
        da = rb === 2 ? g.node('MatMul', [dy!, g.node('Transpose', [b], { perm: [1, 0] })])
          : unbroadcast(c, g.node('MatMul', [dy!, swapLast(c, b, rb)]), a, [...batch, ...A.slice(-2)]);
      }
      if (need[1]) {
        // A weight [K,N] shared by every batch row: fold the batch into rows, one [K,M']x[M',N] MatMul.
        const flat = (t: string) => (ra === 2 ? t : g.node('Flatten', [t], { axis: ra - 1 }));
        db = rb === 2 ? g.node('MatMul', [g.node('Transpose', [flat(a)], { perm: [1, 0] }), flat(dy!)])
          : unbroadcast(c, g.node('MatMul', [swapLast(c, a, ra), dy!]), b, [...batch, ...B.slice(-2)]);
      }
      return [da, db];
    },
  },
  // com.microsoft FusedMatMul as the linear layers use it: y = alpha·a·bᵀ with b a 2-D weight [N,K] (transB=1).
  // dA = alpha·dY·B and dB = alpha·dYᵀ·A need no transposed copy of the weight, which is why linear() uses it.
  FusedMatMul: {
    vjp: (c, n, [dy], need) => {
      const g = c.g, [a, b] = n.inputs, A = c.shape(a), B = c.shape(b);
      const alpha = typeof n.attrs.alpha === 'object' ? (n.attrs.alpha as { float: number }).float : (n.attrs.alpha as number | undefined) ?? 1;
      if (attr(n, 'transA', 0) || !attr(n, 'transB', 0) || attr(n, 'transBatchA', 0) || attr(n, 'transBatchB', 0) || !A || A.length < 2 || B?.length !== 2) {
        throw new Error(`autodiff: FusedMatMul ${n.outputs[0]} is only differentiable as a·bᵀ with a 2-D b (transB=1), shapes [${A}], [${B}]`);
      }
      const scaled = (t: string) => (alpha === 1 ? t : mul(c, t, scalar(c, alpha)));
      const flat = (t: string) => (A.length === 2 ? t : g.node('Flatten', [t], { axis: A.length - 1 }));
      return [
        need[0] ? scaled(g.node('MatMul', [dy!, b])) : null,
        need[1] ? scaled(g.node('MatMul', [g.node('Transpose', [flat(dy!)], { perm: [1, 0] }), flat(a)])) : null,
      ];
    },
  },
  Transpose: {
    vjp: (c, n, [dy]) => {
      const perm = n.attrs.perm as number[] | undefined; // absent: reversed axes, its own inverse
      if (!perm) return [c.g.node('Transpose', [dy!])];
      const inv = perm.map((_, i) => perm.indexOf(i));
      return [c.g.node('Transpose', [dy!], { perm: inv })];
    },
  },
  Reshape: reshapeBack,
  Flatten: reshapeBack,
  Squeeze: reshapeBack,
  Unsqueeze: reshapeBack,

  Concat: {
    vjp: (c, n, [dy], need) => {
      const g = c.g, axis = n.attrs.axis as number;
      const sizes = g.node('Concat', n.inputs.map((x) => g.node('Gather', [shape(c, x), g.constant([axis])])), { axis: 0 });
      const parts = g.nodeN('Split', [dy!, sizes], { axis }, { outputs: n.inputs.length });
      return need.map((w, i) => (w ? parts[i] : null));
    },
  },
  Split: {
    diff: only(0),
    vjp: (c, n, dys) => {
      // Outputs nobody used contribute zeros of their shape.
      const parts = dys.map((d, j) => d ?? zerosLike(c, n.outputs[j]));
      return [c.g.node('Concat', parts, { axis: attr(n, 'axis', 0) })];
    },
  },
  Slice: { diff: only(0), vjp: (c, n, [dy]) => [scatterThroughIota(c, n.inputs[0], dy!, (iota) => c.g.node('Slice', [iota, ...n.inputs.slice(1)]))] },

  Gather: {
    diff: only(0),
    vjp: (c, n, [dy]) => {
      const g = c.g, [data, idx] = n.inputs, axis = attr(n, 'axis', 0);
      // Embedding lookup. A ScatterND-add of each row's gradient races in ORT's CPU kernel when ids repeat across
      // its threads (the table's gradient came out different from run to run, ≈ 2 % off): repeated ids are summed
      // first — Unique, then a one-hot [N, U] matmul — and the U distinct rows scattered without reduction.
      // Ids are made int64 and non-negative first (Gather counts -1 from the end; ScatterND wants int64 and no wrap).
      if (axis === 0) {
        const ids = g.node('Cast', [g.node('Reshape', [idx, g.constant([-1])])], { to: 7 }); // INT64
        const rows0 = g.node('Slice', [shape(c, data), g.constant([0]), g.constant([1])]);
        const flat = g.node('Where', [g.node('Less', [ids, g.constant([0], 'int64', [])]), g.node('Add', [ids, rows0]), ids]);
        const [uniq, , inverse] = g.nodeN('Unique', [flat], { sorted: 1 }, { outputs: 4 });
        const rows = g.node('Reshape', [dy!, g.node('Concat', [shape(c, flat), g.constant([-1])], { axis: 0 })]); // [N, R]
        const oneHot = g.node('OneHot', [inverse, shape(c, uniq), g.constant([0, 1], 'float32', [2])], { axis: -1 }); // [N, U]
        const summed = g.node('MatMul', [g.node('Transpose', [g.node('CastLike', [oneHot, rows])], { perm: [1, 0] }), rows]); // [U, R]
        const rest = g.node('Slice', [shape(c, data), g.constant([1]), g.constant([2 ** 62])]);
        const table = g.node('Reshape', [summed, g.node('Concat', [shape(c, uniq), rest], { axis: 0 })]);
        return [g.node('ScatterND', [zerosLike(c, data), g.node('Unsqueeze', [uniq, g.constant([-1])]), table])];
      }
      return [scatterThroughIota(c, data, dy!, (iota) => g.node('Gather', [iota, idx], { axis }))];
    },
  },
  GatherElements: {
    diff: only(0),
    vjp: (c, n, [dy]) => {
      const [data, idx] = n.inputs;
      return [c.g.node('ScatterElements', [zerosLike(c, data), idx, dy!], { axis: attr(n, 'axis', 0), reduction: 'add' })];
    },
  },
  GatherND: {
    diff: only(0),
    vjp: (c, n, [dy]) => {
      const g = c.g, [data, idx] = n.inputs, batchDims = attr(n, 'batch_dims', 0);
      // (ScatterND with idx itself would race where indices repeat, as Gather's comment says)
      return [scatterThroughIota(c, data, dy!, (iota) => g.node('GatherND', [iota, idx], { batch_dims: batchDims }))];
    },
  },

  ReduceSum: { diff: only(0), vjp: (c, n, [dy]) => [unreduce(c, n, dy!)] },
  ReduceMean: {
    diff: only(0),
    vjp: (c, n, [dy]) => {
      const g = c.g, [x] = n.inputs, y = n.outputs[0];
      const count = g.node('CastLike', [g.node('Div', [g.node('Size', [x]), g.node('Size', [y])]), dy!]);
      return [unreduce(c, n, g.node('Div', [dy!, count]))];
    },
  },
  Softmax: {
    vjp: (c, n, [dy]) => {
      // dx = y ⊙ (dy − Σ_axis dy ⊙ y)
      const g = c.g, y = n.outputs[0], axes = g.constant([attr(n, 'axis', -1)]);
      const s = g.node('ReduceSum', [mul(c, dy!, y), axes], { keepdims: 1 });
      return [mul(c, y, g.node('Sub', [dy!, s]))];
    },
  },
  LogSoftmax: {
    vjp: (c, n, [dy]) => {
      // dx = dy − softmax(x) ⊙ Σ_axis dy
      const g = c.g, y = n.outputs[0], axes = g.constant([attr(n, 'axis', -1)]);
      const s = g.node('ReduceSum', [dy!, axes], { keepdims: 1 });
      return [g.node('Sub', [dy!, mul(c, g.node('Exp', [y]), s)])];
    },
  },

  // No gradient flows through these (integer results, shapes, comparisons, piecewise-constant functions).
  Shape: none, Size: none, Range: none, ConstantOfShape: none, NonZero: none, Equal: none, Less: none,
  LessOrEqual: none, Greater: none, GreaterOrEqual: none, Not: none, And: none, Or: none, ArgMax: none,
  ArgMin: none, Sign: none, Floor: none, Ceil: none, Round: none,
};
