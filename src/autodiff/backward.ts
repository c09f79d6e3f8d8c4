/**
 * Reverse-mode autodiff on a Graph: appends the backward pass to the same graph, so one ORT session
 * computes the loss and its gradients. Only nodes on a path from a `wrt` tensor to the loss are
 * differentiated; everything else (positions, masks, RoPE tables, frozen branches) is left alone.
 * Symbolic input dims that share a name ('batch', 'tokens') are taken to be equal at run time: that is
 * what lets broadcast reductions be decided while building (see inferShapes).
 */
import type { Dim, Graph, Node, ValueInfo } from '../onnx/graph.ts';
import { VJP, zerosLike, type Ctx } from './vjp.ts';

export interface BackwardOptions {
  /** Also declare each gradient as a graph output, with its parameter's dtype and dims (default false:
   *  the caller marks the outputs it wants). */
  outputs?: boolean;
}

/**
 * The outer-scope tensors a node's subgraphs (If branches, Loop/Scan bodies, nested ones included) read: names
 * used there that the subgraph neither produces nor takes as a formal input. They are the node's implicit inputs.
 */
function outerReads(n: Node): string[] {
  const reads = new Set<string>();
  for (const v of Object.values(n.attrs)) {
    if (typeof v !== 'object' || !('graph' in v)) continue;
    const sub = v.graph, local = new Set([...sub.inputs.map((i) => i.name), ...sub.nodes.flatMap((m) => m.outputs)]);
    for (const m of sub.nodes) for (const t of [...m.inputs, ...outerReads(m)]) if (t && !local.has(t)) reads.add(t);
    for (const o of sub.outputs) if (!local.has(o.name)) reads.add(o.name);
  }
  return [...reads];
}

const hasSubgraph = (n: Node) => Object.values(n.attrs).some((v) => typeof v === 'object' && 'graph' in v);
/** A node's explicit inputs followed by its implicit ones (see outerReads). */
const allInputs = (n: Node) => (hasSubgraph(n) ? [...n.inputs, ...outerReads(n)] : n.inputs);

/**
 * The nodes `roots` depend on, in topological order (iterative DFS: graphs are thousands of nodes deep).
 * A node with subgraphs depends on the outer-scope tensors they read as well as on its inputs.
 */
export function ancestors(g: Graph, roots: string[]): Node[] {
  const producer = new Map<string, Node>();
  for (const n of g.nodes) for (const o of n.outputs) producer.set(o, n);
  const order: Node[] = [], state = new Map<Node, 'open' | 'done'>(), stack: [Node, number, string[]][] = [];
  const push = (t: string) => {
    const p = producer.get(t);
    if (!p) return;
    if (state.get(p) === 'open') throw new Error(`autodiff: cycle through tensor "${t}"`);
    if (!state.has(p)) { state.set(p, 'open'); stack.push([p, 0, allInputs(p)]); }
  };
  for (const r of roots) {
    push(r);
    while (stack.length) {
      const top = stack[stack.length - 1], [n, i, ins] = top;
      if (i < ins.length) { top[1]++; push(ins[i]); continue; }
      stack.pop(); state.set(n, 'done'); order.push(n);
    }
  }
  return order;
}

const detached = new WeakMap<Graph, Set<string>>();

/** A copy of `t` that the backward pass treats as a constant (PyTorch's detach, TensorFlow's stop_gradient). */
export function stopGradient(g: Graph, t: string): string {
  const out = g.node('Identity', [t]);
  if (!detached.has(g)) detached.set(g, new Set());
  detached.get(g)!.add(out);
  return out;
}

/**
 * Appends nodes computing d(loss)/d(w) for each w in `wrt` (graph inputs, initializers or intermediate
 * tensors) and returns the gradient tensor names. `loss` should be a scalar: its gradient is seeded with 1.
 */
export function addBackward(g: Graph, loss: string, wrt: string[], opts: BackwardOptions = {}): Map<string, string> {
  const info = new Map<string, ValueInfo>();
  for (const v of [...g.inputs, ...g.initializers.values()]) info.set(v.name, v);
  const order = ancestors(g, [loss]);
  const shapes = inferShapes(g, order);
  // The backward's constants take the dtype of the first wrt tensor.
  const c: Ctx = { g, dtype: info.get(wrt[0])?.dtype ?? 'float32', shape: (t) => shapes.get(t) };
  const constant = detached.get(g) ?? new Set<string>();
  const diffInputs = (n: Node) => (constant.has(n.outputs[0]) ? [] : (VJP[n.op]?.diff ?? ((m: Node) => m.inputs.map((_, i) => i)))(n));

  // Forward sweep: which tensors depend on a wrt tensor through differentiable inputs, or through the outer-scope
  // tensors a subgraph reads (outerDep: no VJP rule covers those, so reaching one is an error, not a zero gradient).
  const dep = new Set(wrt);
  const outerDep = (n: Node) => (hasSubgraph(n) ? outerReads(n).filter((t) => dep.has(t)) : []);
  for (const n of order) if (diffInputs(n).some((i) => dep.has(n.inputs[i])) || outerDep(n).length) n.outputs.forEach((o) => dep.add(o));

  // Reverse sweep. A tensor's contributions (one per use) are summed when its producer is reached,
  // which in reverse topological order is after all of its consumers.
  const grads = new Map<string, string[]>();
  const contribute = (t: string, d: string) => { const l = grads.get(t); if (l) l.push(d); else grads.set(t, [d]); };
  const total = (t: string): string | null => {
    const l = grads.get(t);
    if (!l) return null;
    if (l.length > 1) grads.set(t, [g.node('Sum', l)]);
    return grads.get(t)![0];
  };
  if (dep.has(loss)) contribute(loss, g.node('Expand', [g.scalar(1, c.dtype), g.node('Shape', [loss])]));
  for (let k = order.length - 1; k >= 0; k--) {
    const n = order[k];
    const diff = new Set(diffInputs(n));
    const need = n.inputs.map((t, i) => t !== '' && diff.has(i) && dep.has(t)), outer = outerDep(n);
    if (!need.some(Boolean) && !outer.length) continue;
    const dys = n.outputs.map((o) => (dep.has(o) ? total(o) : null));
    if (dys.every((d) => d === null)) continue;
    if (outer.length) throw new Error(`autodiff: no VJP rule for ${n.op} (producing "${n.outputs[0]}") through the outer-scope tensor "${outer[0]}" its subgraph reads`);
    const rule = VJP[n.op];
    if (!rule) throw new Error(`autodiff: no VJP rule for ${n.op} (producing "${n.outputs[0]}")`);
    const dxs = rule.vjp(c, n, dys, need);
    n.inputs.forEach((t, i) => { if (need[i] && dxs[i]) contribute(t, dxs[i]!); });
  }

  const out = new Map<string, string>(), taken = new Set(g.nodes.flatMap((n) => n.outputs));
  for (const w of wrt) {
    // Parameters the loss does not reach get zeros, so callers can treat every gradient alike.
    const d = total(w) ?? zerosLike(c, w);
    const name = `${w}.grad`;
    if (taken.has(name)) throw new Error(`autodiff: gradient name "${name}" is already taken`);
    g.nodeN('Identity', [d], {}, { names: [name] });
    taken.add(name);
    const v = info.get(w);
    if (opts.outputs && v) g.output(name, v.dtype, v.dims);
    out.set(w, name);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Shapes.

/*
 * Static shape inference over a Graph, symbolic where the graph is (dims named by graph inputs, e.g.
 * 'batch', 'tokens'). The backward pass uses it to decide at build time which axes a broadcast gradient
 * must be summed over (usually none) and to know MatMul operands' ranks. A dim it cannot derive gets a
 * fresh name '?N', equal only to itself; a tensor whose rank it cannot derive has no entry.
 */
export type Shape = Dim[];

/** Broadcast of two dims, as ONNX does: equal dims, or 1 against anything; undecidable pairs get `fresh()`. */
function bdim(a: Dim, b: Dim, fresh: () => string): Dim {
  if (a === b || b === 1) return a;
  if (a === 1) return b;
  if (typeof a === 'number') return a; // a ≠ 1 fixed: b must be a (or 1)
  if (typeof b === 'number') return b;
  return fresh();
}
function broadcastShapes(shapes: Shape[], fresh: () => string): Shape {
  const r = Math.max(...shapes.map((s) => s.length));
  return Array.from({ length: r }, (_, i) => shapes.reduce<Dim>((d, s) => {
    const k = i - (r - s.length);
    return k < 0 ? d : bdim(d, s[k], fresh);
  }, 1));
}

const UNARY = new Set([
  'Identity', 'Cast', 'CastLike', 'Neg', 'Exp', 'Log', 'Sqrt', 'Reciprocal', 'Sigmoid', 'Tanh', 'Relu', 'Cos', 'Sin',
  'Abs', 'Sign', 'Floor', 'Ceil', 'Round', 'Not', 'Erf', 'Softmax', 'LogSoftmax', 'ScatterElements', 'ScatterND', 'CumSum',
]);
const BROADCAST = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Sum', 'Max', 'Min', 'Where', 'Equal', 'Less',
  'LessOrEqual', 'Greater', 'GreaterOrEqual', 'And', 'Or', 'Mod']);

/** Shapes of graph inputs, initializers and the outputs of `order` (a topological order of nodes). */
export function inferShapes(g: Graph, order: Node[]): Map<string, Shape> {
  const s = new Map<string, Shape>();
  for (const v of [...g.inputs, ...g.initializers.values()]) s.set(v.name, v.dims);
  let k = 0;
  const fresh = () => `?${k++}`;
  const producer = new Map<string, Node>();
  for (const n of order) for (const o of n.outputs) producer.set(o, n);
  const num = (d: Dim | undefined) => (typeof d === 'number' ? d : undefined);
  /** Product of dims; symbolic products are canonical names ('batch*tokens'), so flattening twice agrees. */
  const prod = (ds: Dim[]): Dim => {
    const k = ds.reduce<number>((a, d) => (typeof d === 'number' ? a * d : a), 1), syms = ds.filter((d) => typeof d === 'string').sort();
    if (!syms.length || k === 0) return k;
    return syms.some((d) => d.startsWith('?')) ? fresh() : [...(k === 1 ? [] : [String(k)]), ...syms].join('*');
  };
  const norm = (axis: number, r: number) => (axis < 0 ? axis + r : axis);
  /** Values of a constant int tensor (an initializer), e.g. axes or a target shape. */
  const ints = (t: string | undefined): number[] | undefined => {
    const init = t ? g.initializers.get(t) : undefined;
    return init && (init.dtype === 'int64' || init.dtype === 'int32') ? Array.from(init.data, Number) : undefined;
  };
  /** The dims a 1-D shape operand holds: constant values, or Shape(x) = the shape of x. */
  const shapeOperand = (t: string | undefined): Shape | undefined => {
    const v = ints(t);
    if (v) return v;
    const p = t ? producer.get(t) : undefined;
    return p?.op === 'Shape' && p.attrs.start === undefined && p.attrs.end === undefined ? s.get(p.inputs[0]) : undefined;
  };

  const infer = (n: Node): Shape[] | undefined => {
    const x = s.get(n.inputs[0]), ins = n.inputs.map((t) => (t ? s.get(t) : undefined));
    const attr = (name: string, d: number) => (n.attrs[name] ?? d) as number;
    if (UNARY.has(n.op)) return x && [x];
    if (BROADCAST.has(n.op)) {
      const present = ins.filter((_, i) => n.inputs[i] !== '');
      return present.every(Boolean) ? [broadcastShapes(present as Shape[], fresh)] : undefined;
    }
    if (n.op.startsWith('Reduce')) {
      if (!x) return undefined;
      // No axes (absent or empty): all of them, or none with noop_with_empty_axes.
      const axes = (n.attrs.axes as number[] | undefined) ?? (n.inputs[1] ? ints(n.inputs[1]) : []);
      if (!axes) return undefined;
      if (!axes.length && attr('noop_with_empty_axes', 0)) return [x];
      const red = new Set((axes.length ? axes : x.map((_, i) => i)).map((a) => norm(a, x.length)));
      return [attr('keepdims', 1) ? x.map((d, i) => (red.has(i) ? 1 : d)) : x.filter((_, i) => !red.has(i))];
    }
    switch (n.op) {
      case 'MatMul': case 'FusedMatMul': { // com.microsoft's FusedMatMul: transA/transB swap an operand's last two dims
        const [a, b] = ins;
        if (!a || !b || a.length < 2 || b.length < 2 || attr('transBatchA', 0) || attr('transBatchB', 0)) return undefined;
        const rows = attr('transA', 0) ? a.at(-1)! : a.at(-2)!, cols = attr('transB', 0) ? b.at(-2)! : b.at(-1)!;
        return [[...broadcastShapes([a.slice(0, -2), b.slice(0, -2)], fresh), rows, cols]];
      }
      case 'Transpose': {
        const perm = (n.attrs.perm as number[] | undefined) ?? x?.map((_, i) => x.length - 1 - i);
        return x && perm && [perm.map((p) => x[p])];
      }
      case 'Reshape': {
        const target = ints(n.inputs[1]);
        if (!target) { const t = shapeOperand(n.inputs[1]); return t && [t]; }
        const out: Dim[] = target.map((v, i) => (v === 0 && !attr('allowzero', 0) ? x?.[i] ?? fresh() : v));
        const unk = out.indexOf(-1);
        if (unk >= 0) {
          // -1: the element count over the other dims' (when it is a number, or the others are all 1).
          const total = x ? prod(x) : fresh(), rest = prod(out.filter((_, i) => i !== unk));
          out[unk] = rest === 1 ? total : typeof total === 'number' && typeof rest === 'number' ? total / rest : fresh();
        }
        return [out];
      }
      case 'Flatten': {
        if (!x) return undefined;
        const a = norm(attr('axis', 1), x.length);
        return [[prod(x.slice(0, a)), prod(x.slice(a))]];
      }
      case 'Unsqueeze': {
        const axes = ints(n.inputs[1]);
        if (!x || !axes) return undefined;
        const r = x.length + axes.length, at = new Set(axes.map((a) => norm(a, r))), out: Dim[] = [];
        for (let i = 0, j = 0; i < r; i++) out.push(at.has(i) ? 1 : x[j++]);
        return [out];
      }
      case 'Squeeze': {
        const axes = ints(n.inputs[1]);
        if (!x || !axes) return undefined;
        const at = new Set(axes.map((a) => norm(a, x.length)));
        return [x.filter((_, i) => !at.has(i))];
      }
      case 'Concat': {
        if (!ins.every(Boolean)) return undefined;
        const a = norm(n.attrs.axis as number, x!.length), out = [...x!];
        out[a] = ins.reduce<Dim>((t, sh) => (typeof t === 'number' && typeof sh![a] === 'number' ? t + (sh![a] as number) : fresh()), 0);
        return [out];
      }
      case 'Split': {
        if (!x) return undefined;
        const a = norm(attr('axis', 0), x.length), sizes = ints(n.inputs[1]), m = n.outputs.length;
        const total = num(x[a]);
        return n.outputs.map((_, j) => x.map((d, i) => (i !== a ? d : sizes ? sizes[j] : total !== undefined && total % m === 0 ? total / m : fresh())));
      }
      case 'Slice': {
        if (!x) return undefined;
        const axes = ints(n.inputs[3]) ?? x.map((_, i) => i), at = new Set(axes.map((a) => norm(a, x.length)));
        return [x.map((d, i) => (at.has(i) ? fresh() : d))];
      }
      case 'Gather': {
        const idx = ins[1];
        if (!x || !idx) return undefined;
        const a = norm(attr('axis', 0), x.length);
        return [[...x.slice(0, a), ...idx, ...x.slice(a + 1)]];
      }
      case 'GatherElements': return ins[1] && [ins[1]];
      case 'GatherND': {
        const idx = ins[1], last = num(idx?.at(-1));
        if (!x || !idx || last === undefined) return undefined;
        return [[...idx.slice(0, -1), ...x.slice(attr('batch_dims', 0) + last)]];
      }
      case 'Expand': {
        const t = shapeOperand(n.inputs[1]);
        return x && t && [broadcastShapes([x, t], fresh)];
      }
      case 'ConstantOfShape': { const t = shapeOperand(n.inputs[0]); return t && [t]; }
      case 'Shape': return x && [[x.length]];
      case 'Size': return [[]];
      case 'Range': return [[fresh()]];
      case 'NonZero': return x && [[x.length, fresh()]];
    }
    return undefined;
  };
  for (const n of order) {
    const out = infer(n);
    if (out) n.outputs.forEach((o, i) => out[i] && s.set(o, out[i]));
  }
  return s;
}
