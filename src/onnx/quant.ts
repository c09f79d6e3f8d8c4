/**
 * 4-bit weights for ORT's MatMulNBits (bits 4, block 32, no zero-point input ⇒ zero point 8).
 * The blocks are llama.cpp's Q4_0 blocks (see io/gguf.ts), so a Q4_0 GGUF and our graph hold the
 * same dequantised weights; only the nibble order differs (MatMulNBits packs neighbours in a byte).
 */
import { quantizeQ4_0 } from '../io/gguf.ts';

export const Q4_BLOCK = 32;

export interface Q4Weight { n: number; k: number; packed: Uint8Array; scales: Float32Array }

/**
 * Quantises a row-major [n, k] weight (PyTorch Linear layout [out, in]); k must be a multiple of 32. `name`
 * (the tensor's) goes into the errors; non-finite weights are refused.
 */
export function quantizeQ4(w: Float32Array, n: number, k: number, name?: string): Q4Weight {
  const what = name ? ` "${name}"` : '';
  if (k % Q4_BLOCK !== 0) throw new Error(`q4${what}: input size ${k} is not a multiple of ${Q4_BLOCK}`);
  if (w.length !== n * k) throw new Error(`q4${what}: ${w.length} weights, shape [${n}, ${k}] needs ${n * k}`);
  const { q, scales } = quantizeQ4_0(w, name);
  const packed = new Uint8Array(q.length / 2);
  for (let i = 0; i < packed.length; i++) packed[i] = q[2 * i] | (q[2 * i + 1] << 4);
  return { n, k, packed, scales };
}
