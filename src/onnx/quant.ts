/**
 * 4-bit block quantisation for ORT's MatMulNBits (bits 4, block 32, no zero-point input ⇒ zero point 8).
 * The blocks are computed exactly like llama.cpp's reference Q4_0 (scale = signed max / -8, rounded to
 * fp16), so a Q4_0 GGUF and our graph hold the same dequantised weights; only the nibble order differs.
 */
import { f16ToF32, f32ToF16 } from './half.ts';

export const Q4_BLOCK = 32;

export interface Q4Weight { n: number; k: number; packed: Uint8Array; scales: Float32Array }

/** Quantises a row-major [n, k] weight (PyTorch Linear layout [out, in]); k must be a multiple of 32. */
export function quantizeQ4(w: Float32Array, n: number, k: number): Q4Weight {
  if (k % Q4_BLOCK !== 0) throw new Error(`q4: input size ${k} is not a multiple of ${Q4_BLOCK}`);
  const blocks = k / Q4_BLOCK;
  const packed = new Uint8Array(n * blocks * (Q4_BLOCK / 2));
  const scales = new Float32Array(n * blocks);
  for (let row = 0; row < n; row++) {
    for (let b = 0; b < blocks; b++) {
      const base = row * k + b * Q4_BLOCK;
      let amax = 0, max = 0;
      for (let j = 0; j < Q4_BLOCK; j++) {
        const v = w[base + j];
        if (Math.abs(v) > amax) { amax = Math.abs(v); max = v; }
      }
      const d = max / -8;
      const id = d ? 1 / d : 0;
      scales[row * blocks + b] = f16ToF32(f32ToF16(d));
      const out = (row * blocks + b) * (Q4_BLOCK / 2);
      for (let j = 0; j < Q4_BLOCK; j += 2) {
        const q0 = Math.min(15, Math.trunc(w[base + j] * id + 8.5));
        const q1 = Math.min(15, Math.trunc(w[base + j + 1] * id + 8.5));
        packed[out + j / 2] = q0 | (q1 << 4);
      }
    }
  }
  return { n, k, packed, scales };
}

/** Inverse of quantizeQ4 (for tests and for reading our own q4 caches). */
export function dequantizeQ4(q: Q4Weight): Float32Array {
  const out = new Float32Array(q.n * q.k);
  for (let i = 0; i < out.length; i += 2) {
    const byte = q.packed[i >> 1], s = q.scales[Math.floor(i / Q4_BLOCK)];
    out[i] = ((byte & 15) - 8) * s;
    out[i + 1] = ((byte >> 4) - 8) * s;
  }
  return out;
}
