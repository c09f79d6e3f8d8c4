/**
 * A lazy, read-only view of a checkpoint's tensors under Hugging Face names
 * (`model.embed_tokens.weight`, `model.layers.0.self_attn.q_proj.weight`, ...).
 * Tensors are materialised one at a time as float32 so that converting a large model
 * never holds the whole checkpoint in memory.
 */
import type { DecodableType } from './gguf.ts';

export interface WeightSource {
  /** Every tensor name the checkpoint holds. */
  readonly names: readonly string[];
  has(name: string): boolean;
  /** Shape in PyTorch order (row-major, e.g. [out, in] for a Linear weight). Throws naming the tensor if absent. */
  shape(name: string): number[];
  /** The tensor converted to float32 (fp16/bf16/quantized types are decoded). Throws naming the file and tensor on error. */
  get(name: string): Float32Array;
  /** True when get() reads a new array on every call (a file), which the caller may keep, change or transfer. */
  readonly fresh?: boolean;
  /**
   * Rows [from, to) of a 2-D tensor as float32, read without the rest (a new array, checked as get() checks the
   * whole): a file's large weights are quantised a slice at a time, never held whole.
   */
  rows?(name: string, from: number, to: number): Float32Array;
  /**
   * The tensor as stored, when decoding those bytes (decodeGgml) gives exactly get()'s values: a GGUF's tensors,
   * whose quantised blocks are a fraction of the float32 size, can be decoded elsewhere (prequantize's workers).
   */
  encoded?(name: string): { type: DecodableType; bytes: Uint8Array; where?: string } | undefined;
}

/** A WeightSource over tensors already in memory (random-weight test models, trained weights). */
export class MemoryWeights implements WeightSource {
  constructor(private readonly tensors: Map<string, { shape: number[]; data: Float32Array }>) {}
  get names(): string[] { return [...this.tensors.keys()]; }
  has(name: string): boolean { return this.tensors.has(name); }
  shape(name: string): number[] { return this.entry(name).shape; }
  get(name: string): Float32Array { return this.entry(name).data; }
  private entry(name: string) {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`weights: tensor "${name}" is missing`);
    return t;
  }
}
