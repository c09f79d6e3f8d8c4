/**
 * Block-quantised weights for ORT's MatMulNBits (block 32, no zero-point input ⇒ zero point 2^(bits−1)): 4-bit
 * blocks are llama.cpp's Q4_0 blocks and 8-bit ones its Q8_0 blocks (see io/gguf.ts), so a GGUF of that type and
 * our graph hold the same dequantised weights; only the packing differs (MatMulNBits puts neighbours in a byte,
 * and stores 8-bit values offset by 128).
 */
import { quantizeQ4_0, quantizeQ8_0 } from '../io/gguf.ts';
import { f16BitsToF32 } from '../io/safetensors.ts';

/** Weight format of a graph's linear layers: 4- or 8-bit blocks (MatMulNBits), or float32. */
export type Quant = 'q4' | 'q8' | 'fp32';
export const QUANTS: readonly Quant[] = ['q4', 'q8', 'fp32'];
/** Bits of a block-quantised format's weights; undefined for fp32. */
export const quantBits = (q: Quant): 4 | 8 | undefined => (q === 'q4' ? 4 : q === 'q8' ? 8 : undefined);
/** Bytes per weight in the graph (a block of 32 also holds one float32 scale). */
export const quantBytes = (q: Quant): number => (q === 'q4' ? 0.5 + 4 / 32 : q === 'q8' ? 1 + 4 / 32 : 4);

export const QBLOCK = 32;

export interface BlockWeight { n: number; k: number; bits: 4 | 8; packed: Uint8Array; scales: Float32Array }

/**
 * Quantises a row-major [n, k] weight (PyTorch Linear layout [out, in]); k must be a multiple of 32. `name`
 * (the tensor's) goes into the errors; non-finite weights are refused.
 */
export function quantizeBlocks(w: Float32Array, n: number, k: number, bits: 4 | 8, name?: string): BlockWeight {
  const what = `q${bits}${name ? ` "${name}"` : ''}`;
  if (k % QBLOCK !== 0) throw new Error(`${what}: input size ${k} is not a multiple of ${QBLOCK}`);
  if (w.length !== n * k) throw new Error(`${what}: ${w.length} weights, shape [${n}, ${k}] needs ${n * k}`);
  if (bits === 8) {
    const { q, scales } = quantizeQ8_0(w, name), packed = new Uint8Array(q.buffer, q.byteOffset, q.length);
    for (let i = 0; i < packed.length; i++) packed[i] ^= 0x80; // two's complement v → v + 128
    return { n, k, bits, packed, scales };
  }
  const { q, scales } = quantizeQ4_0(w, name);
  const packed = new Uint8Array(q.length / 2);
  for (let i = 0; i < packed.length; i++) packed[i] = q[2 * i] | (q[2 * i + 1] << 4);
  return { n, k, bits, packed, scales };
}

export const quantizeQ4 = (w: Float32Array, n: number, k: number, name?: string): BlockWeight => quantizeBlocks(w, n, k, 4, name);

/**
 * A GGUF tensor stored as Q4_0 (for 4 bits) or Q8_0 (for 8 bits), repacked into MatMulNBits blocks exactly: the
 * same scales and codes (quantising its decoded values again could change them: a Q4_0 made with an importance
 * matrix need not use code −8 in every block). Undefined for any other type. A scale that is not finite (a corrupt
 * file) is refused, naming the tensor as `where` does (its file and name in it), as decoding it would be.
 */
export function blocksFromGgml(type: string, bytes: Uint8Array, n: number, k: number, bits: 4 | 8, where?: string): BlockWeight | undefined {
  if (type !== `Q${bits}_0` || k % QBLOCK) return undefined;
  const count = (n * k) / QBLOCK, size = 2 + (QBLOCK * bits) / 8; // f16 scale, then the codes
  if (bytes.length !== count * size) throw new Error(`${type}: ${bytes.length} bytes for [${n}, ${k}], expected ${count * size}`);
  const scales = new Float32Array(count), packed = new Uint8Array((count * QBLOCK * bits) / 8);
  for (let b = 0; b < count; b++) {
    const at = b * size, qs = at + 2;
    scales[b] = f16BitsToF32(bytes[at] | (bytes[at + 1] << 8));
    if (!Number.isFinite(scales[b])) throw new Error(`${where ? `${where} ` : ''}(${type}) holds the scale ${scales[b]} in block ${b}: weights must be finite (the file is corrupt)`);
    if (bits === 8) {
      for (let j = 0; j < QBLOCK; j++) packed[b * QBLOCK + j] = bytes[qs + j] ^ 0x80; // two's complement v → v + 128
    } else {
      // Q4_0: byte j holds elements j (low nibble) and j + 16 (high); MatMulNBits: byte i holds 2i (low) and 2i + 1 (high)
      const code = (e: number) => (e < 16 ? bytes[qs + e] & 0xf : bytes[qs + e - 16] >> 4);
      for (let i = 0; i < QBLOCK / 2; i++) packed[b * 16 + i] = code(2 * i) | (code(2 * i + 1) << 4);
    }
  }
  return { n, k, bits, packed, scales };
}
