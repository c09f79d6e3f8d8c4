/**
 * A small graph-building DSL over ONNX. Nodes are kept as plain records so that the
 * autodiff pass can read and extend the same graph; `toModelProto` serialises it with
 * onnx-proto (protobufjs), optionally moving large initializers to an external data file.
 */
import onnxProto from 'onnx-proto';
import { f32ToF16Array } from '../io/safetensors.ts';
const { onnx } = onnxProto;

export type DType = 'float32' | 'float16' | 'float64' | 'int64' | 'int32' | 'uint8' | 'bool';
export type Dim = number | string;
export type AttrValue = number | string | number[] | { floats: number[] } | { float: number } | { graph: Graph };
export type TypedData = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array;

export interface Node {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
  domain: string;
}
export interface ValueInfo { name: string; dtype: DType; dims: Dim[] }
export interface Initializer extends ValueInfo { data: TypedData }

const ONNX_TYPES: Record<DType, number> = {
  float32: 1, uint8: 2, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11,
};

/** An ONNX model built in memory is one protobuf message, which holds at most 2 GiB (less a margin for the graph). */
export const IN_MEMORY_LIMIT = 2 ** 31 - 2 ** 26;

/** The typed array an initializer of each dtype holds (float16: the raw fp16 bits; bool: 0/1 bytes). */
const ARRAY_TYPES: Record<DType, Function> = {
  float32: Float32Array, float16: Uint16Array, float64: Float64Array, int64: BigInt64Array, int32: Int32Array, uint8: Uint8Array, bool: Uint8Array,
};

/** Attributes that are floats wherever ONNX and com.microsoft ops define them: a plain integer (serialised as INT) is refused. */
const FLOAT_ATTRS = new Set(['alpha', 'beta', 'gamma', 'epsilon', 'scale']);

export const MS = 'com.microsoft';

export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: ValueInfo[] = [];
  readonly outputs: ValueInfo[] = [];
  readonly initializers = new Map<string, Initializer>();
  private counter = 0;
  private constCache = new Map<string, string>();
  /** For a branch (an If's subgraph): the graph whose names, constants and initializers it shares. */
  private root: Graph = this;

  /** A fresh tensor name with a readable prefix. */
  fresh(prefix: string): string { return this.root === this ? `${prefix}_${this.counter++}` : this.root.fresh(prefix); }

  /**
   * A subgraph for an `If` node's branch: its nodes are its own; names, constants and initializers come from (and
   * go to) this graph, whose values the branch may read.
   */
  branch(): Graph {
    const b = new Graph();
    b.root = this.root;
    return b;
  }

  input(name: string, dtype: DType, dims: Dim[]): string {
    this.inputs.push({ name, dtype, dims });
    return name;
  }

  output(name: string, dtype: DType, dims: Dim[]): void {
    this.outputs.push({ name, dtype, dims });
  }

  initializer(name: string, dtype: DType, dims: number[], data: TypedData): string {
    if (this.root !== this) return this.root.initializer(name, dtype, dims, data);
    if (this.initializers.has(name)) throw new Error(`graph: initializer "${name}" defined twice`);
    const size = dims.reduce((a, b) => a * b, 1), want = ARRAY_TYPES[dtype];
    if (!(data instanceof want)) throw new Error(`graph: initializer "${name}" (${dtype}) needs a ${want.name}, got a ${data.constructor.name}`);
    if (data.length !== size) throw new Error(`graph: initializer "${name}" has ${data.length} elements, shape [${dims}] needs ${size}`);
    this.initializers.set(name, { name, dtype, dims, data });
    return name;
  }

  /** A small constant, deduplicated by value. */
  constant(values: number[] | bigint[], dtype: DType = 'int64', dims: number[] = [values.length]): string {
    if (this.root !== this) return this.root.constant(values, dtype, dims);
    const key = `${dtype}:${dims}:${values.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.fresh('const');
    const nums = values.map(Number);
    const data = dtype === 'int64' ? BigInt64Array.from(values.map(BigInt))
      : dtype === 'int32' ? Int32Array.from(nums)
      : dtype === 'uint8' ? Uint8Array.from(nums)
      : dtype === 'bool' ? Uint8Array.from(nums, (v) => (v ? 1 : 0))
      : dtype === 'float16' ? f32ToF16Array(Float32Array.from(nums))
      : dtype === 'float64' ? Float64Array.from(nums) : Float32Array.from(nums);
    this.initializer(name, dtype, dims, data);
    this.constCache.set(key, name);
    return name;
  }
  scalar(v: number, dtype: DType = 'float32'): string { return this.constant([v], dtype, []); }

  /** Appends a node; returns its single output name (or all names when `outputs` > 1). */
  node(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, opts: { domain?: string; outputs?: number; names?: string[] } = {}): string {
    return this.nodeN(op, inputs, attrs, opts)[0];
  }
  nodeN(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, opts: { domain?: string; outputs?: number; names?: string[] } = {}): string[] {
    for (const [k, v] of Object.entries(attrs)) {
      if (FLOAT_ATTRS.has(k) && typeof v === 'number' && Number.isInteger(v)) {
        throw new Error(`graph: ${op} attribute "${k}" is a float; pass { float: ${v} } (a plain integer is serialised as INT)`);
      }
    }
    const outputs = opts.names ?? Array.from({ length: opts.outputs ?? 1 }, () => this.fresh(op));
    this.nodes.push({ op, inputs, outputs, attrs, domain: opts.domain ?? '' });
    return outputs;
  }

  /** This graph's nodes, inputs and outputs as a GraphProto object (initializers are added by toModelProto). */
  graphProto(name: string): Record<string, unknown> {
    return {
      name,
      node: this.nodes.map((n, i) => ({
        opType: n.op, input: n.inputs, output: n.outputs, domain: n.domain, name: `${name}/${n.op}_${i}`,
        attribute: Object.entries(n.attrs).map(([k, v]) => attribute(k, v)),
      })),
      input: this.inputs.map(valueInfo),
      output: this.outputs.map(valueInfo),
    };
  }

  /**
   * Serialises to ModelProto bytes. Initializers of at least `external.minBytes` go to `external.write` (e.g.
   * model.onnx.data). `opset`: the default-domain opset (17 unless a graph needs a newer operator).
   */
  toModelProto(opts: { external?: { location: string; minBytes: number; write: (bytes: Uint8Array) => number }; opset?: number } = {}): Uint8Array {
    const initializer = [...this.initializers.values()].map((t) => {
      const raw = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      const proto: Record<string, unknown> = { name: t.name, dataType: ONNX_TYPES[t.dtype], dims: t.dims };
      if (opts.external && raw.byteLength >= opts.external.minBytes) {
        const offset = opts.external.write(raw);
        proto.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
        proto.externalData = [
          { key: 'location', value: opts.external.location },
          { key: 'offset', value: String(offset) },
          { key: 'length', value: String(raw.byteLength) },
        ];
      } else proto.rawData = raw;
      return proto;
    });
    const model = {
      irVersion: (opts.opset ?? 17) >= 21 ? 10 : 8,
      producerName: 'edgereason',
      opsetImport: [{ domain: '', version: opts.opset ?? 17 }, { domain: MS, version: 1 }],
      graph: { ...this.graphProto('edgereason'), initializer },
    };
    return onnx.ModelProto.encode(onnx.ModelProto.fromObject(model)).finish();
  }
}

function valueInfo(v: ValueInfo) {
  return {
    name: v.name,
    type: { tensorType: { elemType: ONNX_TYPES[v.dtype], shape: { dim: v.dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  };
}

function attribute(name: string, v: AttrValue): Record<string, unknown> {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'object' && 'graph' in v) return { name, type: T.GRAPH, g: v.graph.graphProto(name) };
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (typeof v === 'number') return Number.isInteger(v) ? { name, type: T.INT, i: v } : { name, type: T.FLOAT, f: v };
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
  if ('floats' in v) return { name, type: T.FLOATS, floats: v.floats };
  return { name, type: T.FLOAT, f: v.float };
}
