/**
 * GGUF (llama.cpp's model format, https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) reader
 * and writer, plus the mapping between llama.cpp and Hugging Face tensor names.
 *
 * Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count, metadata key/values,
 * tensor infos (name, dims innermost-first, ggml type, offset), padding to `general.alignment`, data.
 * Dims are innermost-first: a PyTorch [out, in] weight is stored with dims [in, out].
 */
import * as fs from 'node:fs';
import { ARCHITECTURES, checkModelConfig, ropeFreqFactors, yarnAttentionFactor, yarnContext, type ModelConfig, type RopeScaling } from '../models/config.ts';
import type { WeightSource } from './weights.ts';
import { checkWeights } from './hf-folder.ts';
import { atomicWrite, bf16ToF32Array, f16BitsToF32, f16ToF32Array, f32ToBf16Array, f32ToF16Array, f32ToF16Bits, finiteWeights, firstNonFinite, numel, readAt, readFully, writeAll } from './safetensors.ts';
import { shown } from '../show.ts';

// ---------------------------------------------------------------------------------------------
// ggml tensor types: id -> name, elements per block, bytes per block (ggml's type traits).

const GGML: Record<number, [name: string, block: number, bytes: number]> = {
  0: ['F32', 1, 4], 1: ['F16', 1, 2], 2: ['Q4_0', 32, 18], 3: ['Q4_1', 32, 20], 6: ['Q5_0', 32, 22], 7: ['Q5_1', 32, 24],
  8: ['Q8_0', 32, 34], 9: ['Q8_1', 32, 36], 10: ['Q2_K', 256, 84], 11: ['Q3_K', 256, 110], 12: ['Q4_K', 256, 144],
  13: ['Q5_K', 256, 176], 14: ['Q6_K', 256, 210], 15: ['Q8_K', 256, 292], 16: ['IQ2_XXS', 256, 66], 17: ['IQ2_XS', 256, 74],
  18: ['IQ3_XXS', 256, 98], 19: ['IQ1_S', 256, 50], 20: ['IQ4_NL', 32, 18], 21: ['IQ3_S', 256, 110], 22: ['IQ2_S', 256, 82],
  23: ['IQ4_XS', 256, 136], 24: ['I8', 1, 1], 25: ['I16', 1, 2], 26: ['I32', 1, 4], 27: ['I64', 1, 8], 28: ['F64', 1, 8],
  29: ['IQ1_M', 256, 56], 30: ['BF16', 1, 2], 34: ['TQ1_0', 256, 54], 35: ['TQ2_0', 256, 66], 39: ['MXFP4', 32, 17],
};
/** Tensor types this module can encode (and decode). */
export type GgmlType = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0';
/**
 * Tensor types this module can decode: llama.cpp's other legacy types, its k-quants (a Q4_K_M file is Q4_K + Q6_K)
 * and the 4-bit i-quants (non-linear levels); not the 1–3-bit i-quants, whose codebooks are grids of thousands of entries.
 */
export type DecodableType = GgmlType | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q2_K' | 'Q3_K' | 'Q4_K' | 'Q5_K' | 'Q6_K' | 'IQ4_NL' | 'IQ4_XS';
const SUPPORTED_TYPES: readonly DecodableType[] = ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'IQ4_NL', 'IQ4_XS'];
const TYPE_ID: Record<string, number> = Object.fromEntries(Object.entries(GGML).map(([id, [name]]) => [name, Number(id)]));
const ggmlTypeName = (id: number): string => GGML[id]?.[0] ?? `unknown type id ${id}`;

/** Data size of a tensor: NaN when a row is not a whole number of blocks, undefined for a type not in the table. */
function typeBytes(type: number, dims: readonly number[]): number | undefined {
  const t = GGML[type];
  return t && (dims[0] % t[1] === 0 ? (numel(dims) / t[1]) * t[2] : NaN);
}

// ---------------------------------------------------------------------------------------------
// Q8_0 / Q4_0, bit-exact with llama.cpp's reference quantize_row_q*_0_ref (all float32 arithmetic).

const QK = 32, fr = Math.fround;

/** Refuses NaN and ±Inf (they would corrupt their whole block), naming the tensor when the caller gives its name. */
function refuseNonFinite(fn: string, x: Float32Array, name?: string): void {
  const i = firstNonFinite(x);
  if (i >= 0) throw new Error(`${fn}: ${name ? `tensor "${name}" ` : ''}holds ${x[i]} at element ${i}; only finite weights can be quantized`);
}

/**
 * d kept in the fp16 range: a |d| that fp16 would round to Inf (≥ 65520, from weights beyond about ±65504·127 in
 * Q8_0 or ±65504·8 in Q4_0) becomes ±65504, the largest fp16, and the block's largest weights saturate. Smaller d
 * are left alone, so blocks stay bit-exact with llama.cpp wherever its scale is finite.
 */
const clampScale = (d: number) => (Math.abs(d) < 65520 ? d : Math.sign(d) * 65504);

/** Per block of 32: d = amax/127, scale = fp16(d), q = round-half-away(x/d); x ≈ q * scale. */
export function quantizeQ8_0(x: Float32Array, name?: string): { scales: Float32Array; q: Int8Array } {
  if (x.length % QK) throw new Error(`quantizeQ8_0: length ${x.length} is not a multiple of ${QK}`);
  const scales = new Float32Array(x.length / QK), q = new Int8Array(x.length);
  // Written for speed, as quantizeQ4_0: no closures or Math.max/min/sign in the per-weight loops.
  for (let b = 0, o = 0; b < scales.length; b++, o += QK) {
    let amax = 0;
    for (let j = o; j < o + QK; j++) {
      const v = x[j], a = v < 0 ? -v : v;
      if (a > amax) amax = a; else if (a !== a) refuseNonFinite('quantizeQ8_0', x, name); // NaN
    }
    if (amax === Infinity) refuseNonFinite('quantizeQ8_0', x, name);
    const d = clampScale(fr(amax / 127)), id = d ? fr(1 / d) : 0;
    scales[b] = f16BitsToF32(f32ToF16Bits(d));
    // roundf (half away from zero): floor(|v| + 0.5) is exact for float32 |v| < 2^24.
    for (let j = o; j < o + QK; j++) { const v = fr(x[j] * id), a = v < 0 ? -v : v, r = Math.floor(a + 0.5), c = r > 127 ? 127 : r; q[j] = v < 0 ? -c : c; }
  }
  return { scales, q };
}

/**
 * Per block of 32: d = m / -8 where m is the element of largest |x| (sign kept), scale = fp16(d),
 * q = trunc(x/d + 8.5) clamped to 0..15; x ≈ (q - 8) * scale. Same blocks as ONNX MatMulNBits
 * (bits 4, block 32, zero point 8), so they can be repacked there unchanged.
 */
export function quantizeQ4_0(x: Float32Array, name?: string): { scales: Float32Array; q: Uint8Array } {
  if (x.length % QK) throw new Error(`quantizeQ4_0: length ${x.length} is not a multiple of ${QK}`);
  const scales = new Float32Array(x.length / QK), q = new Uint8Array(x.length);
  // Written for speed (a 7B checkpoint has 7e9 weights): no closures or Math.max/min in the per-weight loops.
  for (let b = 0, o = 0; b < scales.length; b++, o += QK) {
    let amax = 0, max = 0;
    for (let j = o; j < o + QK; j++) {
      const v = x[j], a = v < 0 ? -v : v;
      if (a > amax) { amax = a; max = v; } else if (a !== a) refuseNonFinite('quantizeQ4_0', x, name); // NaN
    }
    if (amax === Infinity) refuseNonFinite('quantizeQ4_0', x, name);
    const d = clampScale(fr(max / -8)), id = d ? fr(1 / d) : 0; // the reference uses the unrounded d here
    scales[b] = f16BitsToF32(f32ToF16Bits(d));
    for (let j = o; j < o + QK; j++) { const v = Math.trunc(fr(fr(x[j] * id) + 8.5)); q[j] = v < 0 ? 0 : v > 15 ? 15 : v; }
  }
  return { scales, q };
}

/** Float32 data -> ggml bytes of `type`. Block layouts: Q8_0 = fp16 d + 32 × i8; Q4_0 = fp16 d + 16 bytes, element j in the low nibble of byte j, j+16 in the high. */
export function encodeGgml(type: GgmlType, x: Float32Array, name?: string): Uint8Array {
  const asBytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  switch (type) {
    case 'F32': return asBytes(x);
    case 'F16': return asBytes(f32ToF16Array(x));
    case 'BF16': return asBytes(f32ToBf16Array(x));
    case 'Q8_0': {
      const { scales, q } = quantizeQ8_0(x, name), out = new Uint8Array(scales.length * 34), dv = new DataView(out.buffer);
      for (let b = 0; b < scales.length; b++) {
        dv.setUint16(b * 34, f32ToF16Bits(scales[b]), true);
        out.set(new Uint8Array(q.buffer, b * QK, QK), b * 34 + 2);
      }
      return out;
    }
    case 'Q4_0': {
      const { scales, q } = quantizeQ4_0(x, name), out = new Uint8Array(scales.length * 18), dv = new DataView(out.buffer);
      for (let b = 0; b < scales.length; b++) {
        dv.setUint16(b * 18, f32ToF16Bits(scales[b]), true);
        for (let j = 0; j < 16; j++) out[b * 18 + 2 + j] = q[b * QK + j] | (q[b * QK + 16 + j] << 4);
      }
      return out;
    }
  }
}

/** ggml bytes of `type` holding `n` elements -> float32, exactly as llama.cpp's dequantize_row_* (F32 may share `bytes`' memory). */
export function decodeGgml(type: DecodableType, bytes: Uint8Array, n: number): Float32Array {
  const aligned = bytes.byteOffset % 4 ? bytes.slice() : bytes, buf = aligned.buffer, off = aligned.byteOffset;
  switch (type) {
    case 'F32': return new Float32Array(buf, off, n);
    case 'F16': return f16ToF32Array(new Uint16Array(buf, off, n));
    case 'BF16': return bf16ToF32Array(new Uint16Array(buf, off, n));
    case 'Q8_0': case 'Q4_0': {
      const out = new Float32Array(n), size = type === 'Q8_0' ? 34 : 18;
      for (let b = 0; b < n / QK; b++) {
        const p = b * size, d = f16BitsToF32(aligned[p] | (aligned[p + 1] << 8));
        for (let j = 0; j < (type === 'Q8_0' ? QK : 16); j++) {
          const v = aligned[p + 2 + j];
          if (type === 'Q8_0') out[b * QK + j] = ((v << 24) >> 24) * d;
          else { out[b * QK + j] = ((v & 15) - 8) * d; out[b * QK + 16 + j] = ((v >> 4) - 8) * d; }
        }
      }
      return out;
    }
    default: return decodeBlocks(type, aligned, n);
  }
}

// ---------------------------------------------------------------------------------------------
// llama.cpp's other quantized types, decoded as its dequantize_row_* do (float32 arithmetic): the legacy blocks
// of 32 with a minimum (Q4_1, Q5_1) or a fifth bit (Q5_0, Q5_1), and the k-quants' super-blocks of 256 weights in
// sub-blocks of 16 or 32, each with its own scale (and minimum), the scales quantised against the block's fp16 d.

const QK_K = 256;
/** The 16 levels of IQ4_NL and IQ4_XS (a 4-bit index picks one, times the block's scale). */
const IQ4_LEVELS = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/** Sub-block j's 6-bit scale and minimum, packed in the 12 scale bytes at `q` (Q4_K, Q5_K). */
function scaleMinK4(a: Uint8Array, q: number, j: number): [number, number] {
  if (j < 4) return [a[q + j] & 63, a[q + j + 4] & 63];
  return [(a[q + j + 4] & 15) | ((a[q + j - 4] >> 6) << 4), (a[q + j + 4] >> 4) | ((a[q + j] >> 6) << 4)];
}

function decodeBlocks(type: Exclude<DecodableType, GgmlType>, a: Uint8Array, n: number): Float32Array {
  const y = new Float32Array(n), [, block, size] = GGML[TYPE_ID[type]], half = (p: number) => f16BitsToF32(a[p] | (a[p + 1] << 8));
  for (let b = 0, o = 0; b < n / block; b++) {
    const p = b * size;
    switch (type) {
      case 'Q4_1': {
        const d = half(p), m = half(p + 2);
        for (let j = 0; j < 16; j++) { const v = a[p + 4 + j]; y[o + j] = fr(fr((v & 15) * d) + m); y[o + j + 16] = fr(fr((v >> 4) * d) + m); }
        o += QK;
        break;
      }
      case 'Q5_0': case 'Q5_1': {
        const one = type === 'Q5_1', d = half(p), m = one ? half(p + 2) : 0, h = p + (one ? 4 : 2);
        const qh = (a[h] | (a[h + 1] << 8) | (a[h + 2] << 16) | (a[h + 3] << 24)) >>> 0;
        for (let j = 0; j < 16; j++) {
          const v = a[h + 4 + j], x0 = (v & 15) | (((qh >>> j) << 4) & 16), x1 = (v >> 4) | ((qh >>> (j + 12)) & 16);
          y[o + j] = one ? fr(fr(x0 * d) + m) : fr((x0 - 16) * d);
          y[o + j + 16] = one ? fr(fr(x1 * d) + m) : fr((x1 - 16) * d);
        }
        o += QK;
        break;
      }
      case 'Q2_K': { // scales[16] (4-bit scale | 4-bit min << 4), qs[64], d, dmin
        const d = half(p + 80), min = half(p + 82);
        for (let n0 = 0, is = 0; n0 < 2; n0++) {
          const q = p + 16 + 32 * n0;
          for (let shift = 0; shift < 8; shift += 2) {
            for (const half16 of [0, 16]) {
              const sc = a[p + is++], dl = fr(d * (sc & 15)), ml = fr(min * (sc >> 4));
              for (let l = 0; l < 16; l++) y[o++] = fr(fr(dl * ((a[q + half16 + l] >> shift) & 3)) - ml);
            }
          }
        }
        break;
      }
      case 'Q3_K': { // hmask[32] (third bit, set = no -4), qs[64] (low 2 bits), scales[12] (16 × 6 bits, offset 32), d
        const d = half(p + 108), s = p + 96;
        // Scale i: low 4 bits from byte (i & 7) (its high nibble for i ≥ 8), high 2 bits from byte 8 + i % 4.
        const scale = (i: number) => (((a[s + ((i >> 2) & 1) * 4 + (i & 3)] >> ((i >> 3) * 4)) & 15) | (((a[s + 8 + (i & 3)] >> (2 * (i >> 2))) & 3) << 4)) - 32;
        for (let n0 = 0, is = 0, m = 1; n0 < 2; n0++) {
          const q = p + 32 + 32 * n0;
          for (let shift = 0; shift < 8; shift += 2, m <<= 1) {
            for (const half16 of [0, 16]) {
              const dl = fr(d * scale(is++));
              for (let l = 0; l < 16; l++) y[o++] = fr(dl * (((a[q + half16 + l] >> shift) & 3) - (a[p + half16 + l] & m ? 0 : 4)));
            }
          }
        }
        break;
      }
      case 'Q4_K': case 'Q5_K': { // d, dmin, scales[12], (Q5_K: qh[32],) qs[128]
        const five = type === 'Q5_K', d = half(p), min = half(p + 2), qs = p + (five ? 48 : 16);
        for (let j = 0, is = 0; j < QK_K / 64; j++, is += 2) {
          const [sc1, m1] = scaleMinK4(a, p + 4, is), [sc2, m2] = scaleMinK4(a, p + 4, is + 1);
          const d1 = fr(d * sc1), o1 = fr(min * m1), d2 = fr(d * sc2), o2 = fr(min * m2), u1 = 1 << (2 * j), u2 = 2 << (2 * j);
          for (let l = 0; l < 32; l++) y[o + l] = fr(fr(d1 * ((a[qs + 32 * j + l] & 15) + (five && a[p + 16 + l] & u1 ? 16 : 0))) - o1);
          for (let l = 0; l < 32; l++) y[o + 32 + l] = fr(fr(d2 * ((a[qs + 32 * j + l] >> 4) + (five && a[p + 16 + l] & u2 ? 16 : 0))) - o2);
          o += 64;
        }
        break;
      }
      case 'IQ4_NL': case 'IQ4_XS': { // NL: d, qs[16]; XS: d, scales_h (u16), scales_l[4], qs[128] (8 sub-blocks of 32, 6-bit scales offset 32)
        const d = half(p), xs = type === 'IQ4_XS', high = xs ? a[p + 2] | (a[p + 3] << 8) : 0;
        for (let ib = 0; ib < block / 32; ib++) {
          const ls = xs ? ((a[p + 4 + (ib >> 1)] >> (4 * (ib & 1))) & 15) | (((high >> (2 * ib)) & 3) << 4) : 33;
          const dl = fr(d * (ls - 32)), qs = p + (xs ? 8 : 2) + 16 * ib;
          for (let j = 0; j < 16; j++) { y[o + j] = fr(dl * IQ4_LEVELS[a[qs + j] & 15]); y[o + j + 16] = fr(dl * IQ4_LEVELS[a[qs + j] >> 4]); }
          o += 32;
        }
        break;
      }
      case 'Q6_K': { // ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8), d
        const d = half(p + 208);
        for (let n0 = 0; n0 < 2; n0++) {
          const ql = p + 64 * n0, qh = p + 128 + 32 * n0, sc = p + 192 + 8 * n0;
          const scale = (k: number) => fr(d * ((a[sc + k] << 24) >> 24));
          for (let l = 0; l < 32; l++) {
            const is = l >> 4, h = a[qh + l];
            y[o + l] = fr(scale(is) * (((a[ql + l] & 15) | ((h & 3) << 4)) - 32));
            y[o + l + 32] = fr(scale(is + 2) * (((a[ql + l + 32] & 15) | (((h >> 2) & 3) << 4)) - 32));
            y[o + l + 64] = fr(scale(is + 4) * (((a[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32));
            y[o + l + 96] = fr(scale(is + 6) * (((a[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32));
          }
          o += 128;
        }
        break;
      }
    }
  }
  return y;
}

// ---------------------------------------------------------------------------------------------
// Metadata values.

const VT = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'string', 'array', 'u64', 'i64', 'f64'] as const;
export type GgufScalarType = Exclude<(typeof VT)[number], 'array'>;
export type GgufValue = string | number | bigint | boolean | GgufValue[];
/** A metadata value with an explicit GGUF type (an array's element type when `value` is an array). llama.cpp checks these types, e.g. rope.freq_base must be f32 even when it is 10000. */
export interface GgufTyped { type: GgufScalarType; value: GgufValue }
export const typed = (type: GgufScalarType, value: GgufValue): GgufTyped => ({ type, value });

/** Shortest decimal that rounds to the same float32, so an f32 1e-6 reads back as 1e-6. */
function shortF32(x: number): number {
  for (let p = 1; p < 10; p++) { const y = Number(x.toPrecision(p)); if (fr(y) === x) return y; }
  return x;
}

/** Arrays of arrays nest no deeper than this in any real GGUF (llama.cpp writes none). */
const MAX_ARRAY_DEPTH = 8;
/** Elements in one metadata array: 64 times the largest vocabulary (262,144 tokens) in use. */
const MAX_ARRAY = 1 << 24;
const VT_SIZE: Partial<Record<GgufScalarType, number>> = { u8: 1, i8: 1, bool: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, u64: 8, i64: 8, f64: 8 };

const utf8 = new TextDecoder();

class Cursor {
  private buf = new Uint8Array(0);
  private dv = new DataView(this.buf.buffer);
  private base = 0;
  pos = 0;
  constructor(private readonly fd: number, readonly size: number, private readonly file: string) {}
  /** Make n bytes at pos available (reading ahead in 4 MiB windows); returns their index in buf. */
  private take(n: number, what: string): number {
    if (this.pos + n > this.size)
      throw new Error(`${this.file}: truncated GGUF: ${what} at byte ${this.pos} needs ${n} bytes but the file has ${this.size}`);
    if (this.pos + n > this.base + this.buf.length) {
      this.buf = new Uint8Array(Math.min(this.size - this.pos, Math.max(n, 1 << 22)));
      readFully(this.fd, this.buf, this.pos, this.file);
      this.dv = new DataView(this.buf.buffer);
      this.base = this.pos;
    }
    this.pos += n;
    return this.pos - n - this.base;
  }
  /** Read n bytes with `get` (take() first: it may swap the buffer and its DataView). */
  private num<T>(n: number, what: string, get: (dv: DataView, at: number) => T): T { const at = this.take(n, what); return get(this.dv, at); }
  u32(what: string): number { return this.num(4, what, (dv, at) => dv.getUint32(at, true)); }
  u64(what: string): number {
    const v = this.num(8, what, (dv, at) => dv.getBigUint64(at, true));
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${this.file}: ${what} = ${v} is implausibly large (corrupt file?)`);
    return Number(v);
  }
  str(what: string): string {
    const n = this.u64(`${what} length`), at = this.take(n, what);
    return utf8.decode(this.buf.subarray(at, at + n));
  }
  value(t: number, what: string, depth = 0): GgufValue {
    switch (VT[t]) {
      case 'u8': return this.num(1, what, (dv, at) => dv.getUint8(at));
      case 'i8': return this.num(1, what, (dv, at) => dv.getInt8(at));
      case 'u16': return this.num(2, what, (dv, at) => dv.getUint16(at, true));
      case 'i16': return this.num(2, what, (dv, at) => dv.getInt16(at, true));
      case 'u32': return this.u32(what);
      case 'i32': return this.num(4, what, (dv, at) => dv.getInt32(at, true));
      case 'f32': return shortF32(this.num(4, what, (dv, at) => dv.getFloat32(at, true)));
      case 'bool': return this.num(1, what, (dv, at) => dv.getUint8(at) !== 0);
      case 'string': return this.str(what);
      case 'u64': case 'i64': {
        const v = this.num(8, what, (dv, at) => VT[t] === 'u64' ? dv.getBigUint64(at, true) : dv.getBigInt64(at, true));
        return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      case 'f64': return this.num(8, what, (dv, at) => dv.getFloat64(at, true));
      case 'array': {
        if (depth >= MAX_ARRAY_DEPTH) throw new Error(`${this.file}: ${what} nests arrays more than ${MAX_ARRAY_DEPTH} deep (corrupt file?)`);
        const et = this.u32(`${what} element type`), n = this.u64(`${what} length`), out: GgufValue[] = [];
        // Each element takes at least its fixed size (a string its length, an array its type and length): a length
        // the rest of the file cannot hold is refused before it is allocated.
        const least = VT[et] === 'string' ? 8 : VT[et] === 'array' ? 12 : VT_SIZE[VT[et] as GgufScalarType] ?? 1;
        if (n * least > this.size - this.pos) throw new Error(`${this.file}: ${what} declares ${n} elements, more than the ${this.size - this.pos} bytes left in the file hold (corrupt file?)`);
        // Each element is a JS value (tens of bytes): a vocabulary's arrays hold some 10^5, and 10^8 would exhaust the heap.
        if (n > MAX_ARRAY) throw new Error(`${this.file}: ${what} declares ${n} elements, more than the ${MAX_ARRAY} a model's metadata holds (corrupt file?)`);
        for (let i = 0; i < n; i++) out.push(this.value(et, what, depth + 1));
        return out;
      }
      default: throw new Error(`${this.file}: ${what} has unknown metadata value type ${t}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Reading.

export interface GgufTensorInfo {
  name: string;
  /** GGUF order, innermost first (dims[0] is the row length). */
  dims: number[];
  /** PyTorch order (reversed dims). */
  shape: number[];
  type: number;
  typeName: string;
  /** Absolute file offset of the data. */
  offset: number;
  /** Data size in bytes (undefined for a type this module does not know the block size of). */
  bytes?: number;
  /** The file holding the data (a part of a split GGUF; the GgufFile's own path otherwise). */
  file: string;
}

/** A GGUF file: metadata plus a lazy WeightSource under the file's own (llama.cpp) tensor names. */
export class GgufFile implements WeightSource {
  readonly fresh = true;
  constructor(
    readonly path: string,
    readonly version: number,
    readonly metadata: Record<string, GgufValue>,
    /** GGUF type of each metadata value (the element type for arrays). */
    readonly metadataTypes: Record<string, GgufScalarType>,
    readonly tensors: ReadonlyMap<string, GgufTensorInfo>,
    readonly alignment: number,
  ) {}
  get names(): string[] { return [...this.tensors.keys()]; }
  has(name: string): boolean { return this.tensors.has(name); }
  shape(name: string): number[] { return [...this.info(name).shape]; }
  info(name: string): GgufTensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`${this.path}: tensor "${name}" is not in this GGUF file`);
    return t;
  }
  /** Throws naming the file, tensor and type unless the tensor's type can be decoded. */
  checkSupported(name: string): DecodableType {
    const t = this.info(name);
    if (!(SUPPORTED_TYPES as readonly string[]).includes(t.typeName))
      throw new Error(`${this.path}: tensor "${name}" has type ${t.typeName}, which is not supported (supported: ${SUPPORTED_TYPES.join(', ')})`);
    return t.typeName as DecodableType;
  }
  raw(name: string): Uint8Array {
    const t = this.info(name);
    if (t.bytes === undefined) throw new Error(`${this.path}: tensor "${name}" has type ${t.typeName}, whose size is unknown`);
    const out = new Uint8Array(t.bytes);
    readAt(t.file, t.offset, out);
    return out;
  }
  get(name: string): Float32Array {
    const type = this.checkSupported(name);
    return finiteWeights(decodeGgml(type, this.raw(name), numel(this.info(name).dims)), `${this.path}: tensor "${name}"`);
  }
  encoded(name: string): { type: DecodableType; bytes: Uint8Array; where: string } {
    return { type: this.checkSupported(name), bytes: this.raw(name), where: `${this.path}: tensor "${name}"` };
  }
}

/**
 * Parse a GGUF v2/v3 header, metadata and tensor infos, validating every tensor's extent against the file size.
 * The first part of a split GGUF (llama.cpp's gguf-split: `<name>-00001-of-0000N.gguf`, `split.*` metadata) brings
 * the tensors of the other parts, found beside it by name.
 */
export function openGguf(path: string): GgufFile {
  const first = readGguf(path), md = first.metadata, count = md['split.count'];
  if (count === undefined || count === 1) return first;
  const no = md['split.no'] ?? 0, parts = splitGgufParts(path);
  if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || typeof no !== 'number') throw new Error(`${path}: split.count = ${shown(count)}, split.no = ${shown(no)} do not describe a split GGUF`);
  if (parts?.length !== count) throw new Error(`${path}: part ${no + 1} of a GGUF split into ${count} files, but its name does not end in -0000k-of-${String(count).padStart(5, '0')}.gguf, so the other parts cannot be found (merge them with llama.cpp's llama-gguf-split --merge, or restore their names)`);
  if (no !== 0) throw new Error(`${path}: part ${no + 1} of a GGUF split into ${count} files: load the first part, ${parts[0]}`);
  const tensors = new Map(first.tensors);
  for (let k = 1; k < count; k++) {
    const f = parts[k];
    if (!fs.existsSync(f)) throw new Error(`${path}: the first of ${count} parts of a split GGUF; part ${k + 1}, ${f}, is missing`);
    const g = readGguf(f);
    if (g.metadata['split.no'] !== k || g.metadata['split.count'] !== count) throw new Error(`${f}: its split.no / split.count (${g.metadata['split.no']} / ${g.metadata['split.count']}) are not those of part ${k + 1} of ${count}`);
    for (const [name, t] of g.tensors) {
      if (tensors.has(name)) throw new Error(`${f}: tensor "${name}" is also in ${tensors.get(name)!.file}`);
      tensors.set(name, t);
    }
  }
  const total = md['split.tensors.count'];
  if (typeof total === 'number' && total !== tensors.size) throw new Error(`${path}: split.tensors.count says ${total} tensors, but the ${count} parts hold ${tensors.size}`);
  return new GgufFile(path, first.version, md, first.metadataTypes, tensors, first.alignment);
}

/** llama.cpp's name of a split GGUF's part k of N: `<name>-0000k-of-0000N.gguf`. */
const SPLIT_PART = /^(.*)-\d{5}-of-(\d{5})\.gguf$/;

/** The files of a split GGUF by llama.cpp's naming (k = 1…N), from any part's name; undefined for another name. */
export function splitGgufParts(file: string): string[] | undefined {
  const m = SPLIT_PART.exec(file);
  return m ? Array.from({ length: Number(m[2]) }, (_, k) => `${m[1]}-${String(k + 1).padStart(5, '0')}-of-${m[2]}.gguf`) : undefined;
}

/** A GGUF's name without its extension and a split one's part number (tiny-Q4_0-00001-of-00003.gguf: tiny-Q4_0); another name as it is. */
export const ggufStem = (file: string): string => SPLIT_PART.exec(file)?.[1] ?? file.replace(/\.gguf$/, '');

/** A general.alignment llama.cpp takes: a power of two (stored as a u32). */
const isAlignment = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

function readGguf(path: string): GgufFile {
  const size = fs.statSync(path).size, fd = fs.openSync(path, 'r');
  try {
    const c = new Cursor(fd, size, path);
    const magic = c.u32('magic');
    if (magic === 0x73726576) throw new Error(`${path}: a Git LFS pointer ("version https://git-lfs…", ${size} bytes), not the model: fetch it (git lfs pull, or download the file itself)`);
    if (magic !== 0x46554747) throw new Error(`${path}: not a GGUF file (magic 0x${magic.toString(16)}, expected "GGUF")`);
    const version = c.u32('version');
    if (version !== 2 && version !== 3) throw new Error(`${path}: GGUF version ${version} is not supported (2 and 3 are)`);
    const nTensors = c.u64('tensor count'), nKv = c.u64('metadata count');
    // Counts no file this size could hold (more entries than bytes) are corruption, said as such (they read on into
    // "tensor "" has 0 dims"); a file cut short within its entries is said to be truncated where it ends, below.
    if (nTensors + nKv > size) throw new Error(`${path}: the header counts ${nTensors} tensors and ${nKv} metadata keys, more than its ${size} bytes can hold: the file is corrupt`);
    const metadata: Record<string, GgufValue> = {}, metadataTypes: Record<string, GgufScalarType> = {};
    for (let i = 0; i < nKv; i++) {
      const key = c.str(`metadata key #${i}`), t = c.u32(`type of metadata "${key}"`);
      if (Object.hasOwn(metadata, key)) throw new Error(`${path}: metadata "${key}" appears twice (llama.cpp refuses such a file too)`);
      if (VT[t] === 'array') { // peek the element type for metadataTypes, then read the whole array
        const at = c.pos, et = c.u32(`metadata "${key}"`);
        c.pos = at;
        metadataTypes[key] = VT[et] as GgufScalarType;
      } else metadataTypes[key] = VT[t] as GgufScalarType;
      metadata[key] = c.value(t, `metadata "${key}"`);
    }
    // As llama.cpp reads it: a u32 power of two.
    const alignment = metadata['general.alignment'] ?? 32;
    if (metadataTypes['general.alignment'] !== undefined && metadataTypes['general.alignment'] !== 'u32') throw new Error(`${path}: metadata "general.alignment" is stored as ${metadataTypes['general.alignment']}; it must be a u32 (llama.cpp refuses such a file too)`);
    if (!isAlignment(alignment))
      throw new Error(`${path}: general.alignment = ${alignment} is not a power of two (llama.cpp refuses such a file too)`);

    const infos: GgufTensorInfo[] = [];
    for (let i = 0; i < nTensors; i++) {
      const name = c.str(`tensor name #${i}`), nd = c.u32(`tensor "${name}" dim count`);
      if (nd < 1 || nd > 4) throw new Error(`${path}: tensor "${name}" has ${nd} dims (1 to 4 allowed)`);
      const dims = Array.from({ length: nd }, () => c.u64(`tensor "${name}" dims`));
      const type = c.u32(`tensor "${name}" type`), offset = c.u64(`tensor "${name}" offset`);
      if (offset % alignment) throw new Error(`${path}: tensor "${name}" offset ${offset} is not a multiple of the alignment ${alignment}`);
      infos.push({ name, dims, shape: [...dims].reverse(), type, typeName: ggmlTypeName(type), offset, bytes: typeBytes(type, dims), file: path });
    }
    const dataStart = Math.ceil(c.pos / alignment) * alignment;
    const tensors = new Map<string, GgufTensorInfo>();
    // Each tensor's data follows the previous one's, padded to the alignment (llama.cpp refuses other layouts): a
    // tensor whose offset or type was corrupted would otherwise read another tensor's bytes as its own.
    let expected: number | undefined = 0, previous: GgufTensorInfo | undefined;
    for (const t of infos) {
      if (tensors.has(t.name)) throw new Error(`${path}: tensor "${t.name}" appears twice`);
      if (Number.isNaN(t.bytes)) throw new Error(`${path}: tensor "${t.name}" (${t.typeName}) has row length ${t.dims[0]}, not a multiple of its block size ${GGML[t.type][1]}`);
      if (expected !== undefined && t.offset !== expected) {
        const after = previous ? `right after tensor "${previous.name}" (${previous.typeName} [${previous.shape.join(', ')}], ${previous.bytes} bytes)` : 'at the start of the data';
        throw new Error(`${path}: tensor "${t.name}" has data offset ${t.offset}, but its data must follow ${after}, padded to ${alignment} bytes: offset ${expected}; the file is corrupt (a wrong offset, type or shape)`);
      }
      // After a tensor of a type whose size is unknown, where the next one starts is unknown (it is refused when read).
      expected = expected === undefined || t.bytes === undefined ? undefined : expected + Math.ceil(t.bytes / alignment) * alignment;
      previous = t;
      t.offset += dataStart;
      if (t.bytes !== undefined && t.offset + t.bytes > size)
        throw new Error(`${path}: truncated GGUF: tensor "${t.name}" needs bytes ${t.offset}..${t.offset + t.bytes} but the file has ${size}`);
      tensors.set(t.name, t);
    }
    return new GgufFile(path, version, metadata, metadataTypes, tensors, alignment);
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// Writing.

export type GgufTensorIn =
  | { name: string; shape: number[]; type: GgmlType; data: Float32Array | (() => Float32Array) }
  /** Pre-encoded bytes of any ggml type (by name or id), e.g. to test a reader with a type it cannot decode. */
  | { name: string; shape: number[]; type: string | number; raw: Uint8Array };

const isTyped = (v: GgufValue | GgufTyped): v is GgufTyped => typeof v === 'object' && !Array.isArray(v);

const ggufString = (x: string): Buffer => {
  const s = Buffer.from(x), b = Buffer.alloc(8 + s.length);
  b.writeBigUInt64LE(BigInt(s.length));
  s.copy(b, 8);
  return b;
};

function ggufScalar(t: GgufScalarType, x: GgufValue): Buffer {
  if (t === 'string') return ggufString(String(x));
  const b = Buffer.alloc(VT_SIZE[t]!), n = Number(x);
  switch (t) {
    case 'u8': b.writeUInt8(n); break; case 'i8': b.writeInt8(n); break; case 'bool': b.writeUInt8(x ? 1 : 0); break;
    case 'u16': b.writeUInt16LE(n); break; case 'i16': b.writeInt16LE(n); break;
    case 'u32': b.writeUInt32LE(n); break; case 'i32': b.writeInt32LE(n); break; case 'f32': b.writeFloatLE(n); break;
    case 'u64': b.writeBigUInt64LE(BigInt(x as number | bigint)); break; case 'i64': b.writeBigInt64LE(BigInt(x as number | bigint)); break;
    case 'f64': b.writeDoubleLE(n); break;
  }
  return b;
}

/**
 * The type an untyped value is written as: string, bool, an integer type wide enough for its range (an array's:
 * all its values'; i32 first, as llama.cpp writes integer arrays such as token types; u32 first for a scalar), else f32.
 */
function untypedType(values: unknown[], array: boolean): GgufScalarType {
  if (values.every((x) => typeof x === 'string')) return 'string';
  if (values.every((x) => typeof x === 'boolean')) return 'bool';
  if (!values.every((x) => typeof x === 'bigint' || Number.isInteger(x))) return 'f32';
  const ns = values.map((x) => BigInt(x as number | bigint)), min = ns.reduce((a, b) => (b < a ? b : a), 0n), max = ns.reduce((a, b) => (b > a ? b : a), 0n);
  const i32 = min >= -(2n ** 31n) && max < 2n ** 31n, u32 = min >= 0n && max < 2n ** 32n;
  if (array ? i32 : u32) return array ? 'i32' : 'u32';
  return u32 ? 'u32' : i32 ? 'i32' : min >= 0n ? 'u64' : 'i64';
}

/** Type tag + payload of one metadata value (untyped ones typed by untypedType). */
function ggufValue(v: GgufValue | GgufTyped, key: string): Buffer {
  const val = isTyped(v) ? v.value : v, explicit = isTyped(v) ? v.type : undefined;
  const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
  if (Array.isArray(val)) {
    if (val.some(Array.isArray)) throw new Error(`writeGguf: metadata "${key}": nested arrays are not supported`);
    const et = explicit ?? untypedType(val, true);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(val.length));
    return Buffer.concat([u32(VT.indexOf('array')), u32(VT.indexOf(et)), len, ...val.map((x) => ggufScalar(et, x))]);
  }
  const t = explicit ?? untypedType([val], false);
  return Buffer.concat([u32(VT.indexOf(t)), ggufScalar(t, val)]);
}

/** Write a GGUF v3 file atomically. Shapes are in PyTorch order; tensor data is encoded one tensor at a time. */
export function writeGguf(path: string, { metadata, tensors }: { metadata: Record<string, GgufValue | GgufTyped>; tensors: GgufTensorIn[] }): void {
  const al = metadata['general.alignment'], alignment = al === undefined ? 32 : Number(isTyped(al) ? al.value : al);
  if (al !== undefined && ((isTyped(al) && al.type !== 'u32') || !isAlignment(alignment))) {
    throw new Error(`writeGguf(${path}): metadata "general.alignment" must be a power of two, written as a u32 (as llama.cpp reads it), got ${shown(al)}`);
  }
  if (al !== undefined && !isTyped(al)) metadata = { ...metadata, 'general.alignment': { type: 'u32', value: alignment } };
  const parts: Buffer[] = [Buffer.from('GGUF'), Buffer.alloc(4), Buffer.alloc(8), Buffer.alloc(8)];
  parts[1].writeUInt32LE(3);
  parts[2].writeBigUInt64LE(BigInt(tensors.length));
  parts[3].writeBigUInt64LE(BigInt(Object.keys(metadata).length));
  for (const [key, v] of Object.entries(metadata)) parts.push(ggufString(key), ggufValue(v, key));
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    const type = typeof t.type === 'number' ? t.type : TYPE_ID[t.type];
    if (type === undefined) throw new Error(`writeGguf(${path}): tensor "${t.name}" has unknown type ${t.type}`);
    const dims = [...t.shape].reverse(), expected = typeBytes(type, dims), bytes = 'raw' in t ? t.raw.length : expected!;
    if (Number.isNaN(expected)) throw new Error(`writeGguf(${path}): tensor "${t.name}" row length ${dims[0]} is not a multiple of ${t.type}'s block size`);
    if (expected !== undefined && bytes !== expected) throw new Error(`writeGguf(${path}): tensor "${t.name}" has ${bytes} raw bytes, ${t.type} ${shown(t.shape)} needs ${expected}`);
    const b = Buffer.alloc(4 + 8 * dims.length + 12);
    b.writeUInt32LE(dims.length, 0);
    dims.forEach((d, i) => b.writeBigUInt64LE(BigInt(d), 4 + 8 * i));
    b.writeUInt32LE(type, 4 + 8 * dims.length);
    b.writeBigUInt64LE(BigInt(offset), 8 + 8 * dims.length);
    parts.push(ggufString(t.name), b);
    sizes.push(bytes);
    offset += Math.ceil(bytes / alignment) * alignment;
  }
  const head = Buffer.concat(parts), pad = (n: number) => new Uint8Array((alignment - (n % alignment)) % alignment);
  atomicWrite(path, (fd) => {
    writeAll(fd, head);
    writeAll(fd, pad(head.length));
    tensors.forEach((t, i) => {
      let bytes: Uint8Array;
      if ('raw' in t) bytes = t.raw;
      else {
        const data = typeof t.data === 'function' ? t.data() : t.data;
        if (data.length !== numel(t.shape)) throw new Error(`writeGguf(${path}): tensor "${t.name}" has ${data.length} values but shape ${shown(t.shape)}`);
        bytes = encodeGgml(t.type, data, t.name);
      }
      writeAll(fd, bytes);
      writeAll(fd, pad(sizes[i]));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// llama.cpp <-> Hugging Face model mapping.

const GLOBAL_NAMES: [gguf: string, hf: string][] = [
  ['token_embd.weight', 'model.embed_tokens.weight'], ['output_norm.weight', 'model.norm.weight'], ['output.weight', 'lm_head.weight'],
];
const LAYER_NAMES: [gguf: string, hf: string][] = [
  ['attn_norm.weight', 'input_layernorm.weight'],
  ...['q', 'k', 'v'].flatMap((p) => ['weight', 'bias'].map((w): [string, string] => [`attn_${p}.${w}`, `self_attn.${p}_proj.${w}`])),
  ['attn_q_norm.weight', 'self_attn.q_norm.weight'], ['attn_k_norm.weight', 'self_attn.k_norm.weight'],
  ['attn_output.weight', 'self_attn.o_proj.weight'], ['ffn_norm.weight', 'post_attention_layernorm.weight'],
  ['ffn_gate.weight', 'mlp.gate_proj.weight'], ['ffn_up.weight', 'mlp.up_proj.weight'], ['ffn_down.weight', 'mlp.down_proj.weight'],
];

/** llama.cpp tensor name -> Hugging Face name (undefined when not a Qwen2/Qwen3/Llama tensor). */
function ggufToHfName(name: string): string | undefined {
  const g = GLOBAL_NAMES.find(([a]) => a === name);
  if (g) return g[1];
  const m = /^blk\.(\d+)\.(.+)$/.exec(name), l = m && LAYER_NAMES.find(([a]) => a === m[2]);
  return l ? `model.layers.${m[1]}.${l[1]}` : undefined;
}
function hfToGgufName(name: string): string | undefined {
  const g = GLOBAL_NAMES.find(([, b]) => b === name);
  if (g) return g[0];
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name), l = m && LAYER_NAMES.find(([, b]) => b === m[2]);
  return l ? `blk.${m[1]}.${l[0]}` : undefined;
}

/**
 * llama.cpp's converter reorders each Llama q/k head's rows from HF's rotate_half layout
 * (first half, second half) to interleaved pairs: gguf row 2i+s = hf row s*hd/2 + i.
 * `toGguf` applies that; otherwise it is undone. Works for weights and biases (rowLen 1).
 */
export function permuteQK(x: Float32Array, rows: number, nHeads: number, toGguf: boolean): Float32Array {
  const out = new Float32Array(x.length), rowLen = x.length / rows, half = rows / nHeads / 2;
  for (let h = 0; h < nHeads; h++)
    for (let i = 0; i < half; i++)
      for (let s = 0; s < 2; s++) {
        const hf = (h * 2 * half + s * half + i) * rowLen, gg = (h * 2 * half + 2 * i + s) * rowLen;
        if (toGguf) out.set(x.subarray(hf, hf + rowLen), gg);
        else out.set(x.subarray(gg, gg + rowLen), hf);
      }
  return out;
}

/**
 * RoPE scaling as llama.cpp reads it for these architectures: rope.scaling.type (linear when absent), factor
 * (rope.scaling.factor, else rope.scale_linear; none or 1: no scaling), YaRN's rope.scaling.original_context_length
 * (else context_length) and rope.scaling.attn_factor (multiplying 0.1 ln factor + 1); llama.cpp leaves the yarn_*
 * keys to other architectures, and so does this.
 */
function ggufRopeScaling(path: string, arch: string, md: Record<string, GgufValue>, key: (k: string, fallback?: number, float?: boolean) => number): { scaling?: RopeScaling; context?: number } {
  const type = md[`${arch}.rope.scaling.type`] ?? 'linear';
  if (type !== 'none' && type !== 'linear' && type !== 'yarn') throw new Error(`${path}: ${arch}.rope.scaling.type = ${shown(type)} is not supported ("none", "linear" or "yarn")`);
  // Either factor key, as llama.cpp reads them: rope.scaling.factor when present.
  const factorKey = md[`${arch}.rope.scaling.factor`] !== undefined ? 'rope.scaling.factor' : 'rope.scale_linear', factor = type === 'none' ? 1 : key(factorKey, 0, true);
  if (!(factor >= 0) || !Number.isFinite(factor)) throw new Error(`${path}: metadata "${arch}.${factorKey}" must be a positive number, got ${shown(factor)}`);
  const scaled = factor !== 0 && factor !== 1, attn = key('rope.scaling.attn_factor', 1, true);
  // llama.cpp scales cos and sin by attn_factor whatever the scaling; only YaRN's attention factor carries it here.
  if (!(attn > 0) || !Number.isFinite(attn) || (attn !== 1 && !(type === 'yarn' && scaled))) {
    throw new Error(`${path}: metadata "${arch}.rope.scaling.attn_factor" must be ${type === 'yarn' && scaled ? 'a positive number' : `1 with RoPE scaling ${shown(type)}${scaled ? '' : ' and no factor'}`}, got ${shown(attn)}`);
  }
  if (!scaled) return {};
  if (type === 'linear') return { scaling: { type, factor } };
  const originalKey = md[`${arch}.rope.scaling.original_context_length`] !== undefined ? 'rope.scaling.original_context_length' : 'context_length', original = key(originalKey);
  if (!Number.isInteger(original) || original <= 0) throw new Error(`${path}: metadata "${arch}.${originalKey}" must be a positive integer, got ${shown(original)}`);
  const scaling = { type: 'yarn', factor, originalMaxPositionEmbeddings: original, betaFast: 32, betaSlow: 1, attentionFactor: attn * yarnAttentionFactor(factor) } as const;
  // YaRN reaches `factor` times its original context, as the Hugging Face loader reads it.
  return { scaling, context: yarnContext(scaling, `${path}:`, `metadata "${arch}.${factorKey}" × "${arch}.${originalKey}"`) };
}
const ROPE_FREQS = 'rope_freqs.weight';
/** The end-of-generation tokens llama.cpp recognises by their text (llama-vocab.cpp, v0.4.0 of node-llama-cpp's build). */
const EOG_TEXTS = ['<|eot_id|>', '<|im_end|>', '<|end|>', '<|return|>', '<|call|>', '<|flush|>', '<|calls|>', '<end_of_turn>', '<|endoftext|>', '</s>',
  '<|eom_id|>', '<EOT>', '_<EOT>', '[EOT]', '[EOS]', '<|end_of_text|>', '<end_of_utterance>', '<eos>', '<turn|>', '<|tool_response>', '<｜end▁of▁sentence｜>', '[e~['];
/** ... and the fill-in-the-middle tokens it stops on too (a coder model's pad, repository and file separators), where the metadata names none. */
const FIM_STOPS: Record<string, string[]> = {
  fim_pad: ['<|fim_pad|>', '<fim-pad>', '<fim_pad>', '<PAD>', '[PAD]'], fim_rep: ['<|fim_repo|>', '<|repo_name|>', '<fim-repo>', '<REPO>', '<reponame>'], fim_sep: ['<|file_sep|>'],
};

/** Load a Qwen2/Qwen3/Llama GGUF as a ModelConfig plus Hugging Face-named float32 weights (llama q/k un-permuted). */
export function ggufToModel(path: string): {
  config: ModelConfig; weights: WeightSource; metadata: Record<string, GgufValue>; file: GgufFile;
  /** The tensor types the model's weights are stored in (e.g. F32, Q4_K, Q6_K). */
  storedTypes: string[];
} {
  const file = openGguf(path), md = file.metadata;
  const arch = md['general.architecture'];
  if (!ARCHITECTURES.includes(arch as ModelConfig['architecture']))
    throw new Error(`${path}: general.architecture ${shown(arch)} is not supported (supported: ${ARCHITECTURES.join(', ')})`);
  const key = (k: string, fallback?: number, float = false): number => {
    const v = md[`${arch}.${k}`] ?? fallback, type = file.metadataTypes[`${arch}.${k}`];
    if (typeof v !== 'number') throw new Error(`${path}: metadata "${arch}.${k}" is ${v === undefined ? 'missing' : `not a number (${shown(v)})`}`);
    // A float stored under an integer type reads as its bit pattern's value (llama.cpp refuses it too).
    if (float && type !== undefined && type !== 'f32' && type !== 'f64') throw new Error(`${path}: metadata "${arch}.${k}" is stored as ${type} (${v}); it must be a float (f32)`);
    return v;
  };
  const { scaling: ropeScaling, context: stretched } = ggufRopeScaling(path, arch as string, md, key);
  // llama.cpp divides the frequencies by rope_freqs.weight and then scales them; the graph has one or the other.
  if (ropeScaling && file.has(ROPE_FREQS)) throw new Error(`${path}: tensor "${ROPE_FREQS}" together with ${arch}.rope.scaling.type ${shown(ropeScaling.type)} is not supported (one RoPE scaling at a time)`);
  for (const name of file.names) if (ggufToHfName(name) || name === ROPE_FREQS) file.checkSupported(name); // fail now, not mid-conversion
  if (!file.has('token_embd.weight')) throw new Error(`${path}: tensor "token_embd.weight" is missing`);

  const hiddenSize = key('embedding_length'), numHeads = key('attention.head_count');
  if (md[`${arch}.attention.key_length`] === undefined && hiddenSize % numHeads) {
    throw new Error(`${path}: ${arch}.embedding_length (${hiddenSize}) is not a multiple of ${arch}.attention.head_count (${numHeads}), and there is no ${arch}.attention.key_length`);
  }
  for (const k of ['bos', 'eos', 'eot', 'eom', 'fim_pad', 'fim_rep', 'fim_sep']) { // a u64 beyond 2^53 reads as a BigInt: no id
    const v = md[`tokenizer.ggml.${k}_token_id`];
    if (v !== undefined && !Number.isInteger(v)) throw new Error(`${path}: metadata "tokenizer.ggml.${k}_token_id" must be a token id, got ${shown(v)}`);
  }
  // Stop tokens as llama.cpp decides them: eos, eot, eom, the end-of-generation tokens it recognises by text, and
  // the fill-in-the-middle pad, repository and file-separator tokens (by their metadata ids, else by text).
  const tokens = md['tokenizer.ggml.tokens'], find = (texts: string[]) => (Array.isArray(tokens) ? texts.map((t) => tokens.indexOf(t)).find((i) => i >= 0) : undefined);
  const byText = Array.isArray(tokens) ? EOG_TEXTS.map((t) => tokens.indexOf(t)) : [];
  const fim = Object.entries(FIM_STOPS).map(([k, texts]) => md[`tokenizer.ggml.${k}_token_id`] ?? find(texts));
  const eos = [...new Set([...['eos', 'eot', 'eom'].map((k) => md[`tokenizer.ggml.${k}_token_id`]), ...byText, ...fim].filter((x): x is number => typeof x === 'number' && x >= 0))];
  const config: ModelConfig = {
    architecture: arch as ModelConfig['architecture'],
    vocabSize: file.shape('token_embd.weight')[0],
    hiddenSize,
    intermediateSize: key('feed_forward_length'),
    numLayers: key('block_count'),
    numHeads,
    numKvHeads: key('attention.head_count_kv', numHeads),
    headDim: key('attention.key_length', hiddenSize / numHeads),
    rmsNormEps: key('attention.layer_norm_rms_epsilon', undefined, true),
    ropeTheta: key('rope.freq_base', 10000, true),
    // Llama 3.x long-context RoPE: llama.cpp's converter stores it only as per-frequency divisors.
    ...(file.has(ROPE_FREQS) ? { ropeFreqFactors: [...file.get(ROPE_FREQS)] } : {}),
    ...(ropeScaling ? { ropeScaling } : {}),
    maxPositionEmbeddings: Math.max(key('context_length'), stretched ?? 0),
    tieWordEmbeddings: !file.has('output.weight'),
    attentionBias: file.has('blk.0.attn_q.bias'),
    ...(typeof md['tokenizer.ggml.bos_token_id'] === 'number' ? { bosTokenId: md['tokenizer.ggml.bos_token_id'] as number } : {}),
    eosTokenIds: eos,
  };

  // llama.cpp rotates the first rope.dimension_count dimensions of each head: partial rotary, which the graph has not.
  const rotary = md[`${arch}.rope.dimension_count`];
  if (rotary !== undefined && rotary !== config.headDim) throw new Error(`${path}: ${arch}.rope.dimension_count = ${shown(rotary)}, but the heads have ${config.headDim} dimensions: partial rotary embeddings are not supported`);
  if (config.ropeFreqFactors && config.ropeFreqFactors.length !== config.headDim / 2) {
    throw new Error(`${path}: tensor "${ROPE_FREQS}" has ${config.ropeFreqFactors.length} values, expected head_dim / 2 = ${config.headDim / 2}`);
  }
  const meta = (k: string) => `metadata "${k}"`, names: Record<keyof ModelConfig, string> = {
    architecture: meta('general.architecture'), vocabSize: 'the rows of tensor "token_embd.weight"', hiddenSize: meta(`${arch}.embedding_length`),
    intermediateSize: meta(`${arch}.feed_forward_length`), numLayers: meta(`${arch}.block_count`), numHeads: meta(`${arch}.attention.head_count`),
    numKvHeads: meta(`${arch}.attention.head_count_kv`), headDim: meta(`${arch}.attention.key_length`), rmsNormEps: meta(`${arch}.attention.layer_norm_rms_epsilon`),
    ropeTheta: meta(`${arch}.rope.freq_base`), ropeScaling: meta(`${arch}.rope.scaling.type`), ropeFreqFactors: `tensor "${ROPE_FREQS}"`,
    maxPositionEmbeddings: meta(`${arch}.context_length`), tieWordEmbeddings: 'tensor "output.weight"', attentionBias: 'tensor "blk.0.attn_q.bias"',
    bosTokenId: meta('tokenizer.ggml.bos_token_id'), eosTokenIds: 'the end-of-generation ids (tokenizer.ggml.eos_token_id, eot, eom)',
  };
  checkModelConfig(config, `${path}:`, (k) => names[k]);
  // Unknown tensors keep their llama.cpp name (checkWeights refuses them).
  const toGguf = new Map<string, string>();
  for (const name of file.names.filter((n) => n !== ROPE_FREQS)) {
    const hf = ggufToHfName(name) ?? name, other = toGguf.get(hf);
    if (other !== undefined) throw new Error(`${path}: tensors "${other}" and "${name}" are both ${hf}: the file holds one weight twice`);
    toGguf.set(hf, name);
  }
  const src = (name: string) => {
    const g = toGguf.get(name);
    if (!g) throw new Error(`${path}: tensor "${name}" is not in this GGUF file`);
    return g;
  };
  const weights: WeightSource = {
    fresh: true,
    names: [...toGguf.keys()],
    has: (name) => toGguf.has(name),
    shape: (name) => file.shape(src(name)),
    get(name) {
      const g = src(name), data = file.get(g);
      if (config.architecture !== 'llama') return data;
      const rows = file.info(g).shape[0];
      if (/^blk\.\d+\.attn_q\./.test(g)) return permuteQK(data, rows, config.numHeads, false);
      if (/^blk\.\d+\.attn_k\./.test(g)) return permuteQK(data, rows, config.numKvHeads, false);
      return data;
    },
    // Llama's q/k rows are permuted after decoding: those are decoded here.
    encoded: (name) => (config.architecture === 'llama' && /^blk\.\d+\.attn_[qk]\./.test(src(name)) ? undefined : file.encoded(src(name))),
  };
  checkWeights(config, weights, path, undefined, (hf) => toGguf.get(hf) ?? hfToGgufName(hf) ?? hf); // (llama.cpp's names: the file's)
  const storedTypes = [...new Set([...toGguf.values()].map((g) => file.info(g).typeName))].sort();
  return { config, weights, metadata: md, file, storedTypes };
}

/** Linear and YaRN RoPE scaling as llama.cpp's converter writes them (Llama 3's goes in rope_freqs.weight). */
function ggufRopeScalingMetadata(c: ModelConfig): Record<string, GgufTyped> {
  const r = c.ropeScaling, a = c.architecture;
  if (r?.type === 'linear') return { [`${a}.rope.scaling.type`]: typed('string', 'linear'), [`${a}.rope.scaling.factor`]: typed('f32', r.factor) };
  if (r?.type !== 'yarn') return {};
  if (r.betaFast !== 32 || r.betaSlow !== 1) throw new Error(`writeModelGguf: YaRN with beta_fast ${r.betaFast} / beta_slow ${r.betaSlow} cannot be written for llama.cpp, which reads 32 / 1 for ${a} models`);
  const attn = r.attentionFactor / yarnAttentionFactor(r.factor);
  return {
    [`${a}.rope.scaling.type`]: typed('string', 'yarn'), [`${a}.rope.scaling.factor`]: typed('f32', r.factor),
    [`${a}.rope.scaling.original_context_length`]: typed('u32', r.originalMaxPositionEmbeddings),
    ...(Math.abs(attn - 1) > 1e-7 ? { [`${a}.rope.scaling.attn_factor`]: typed('f32', attn) } : {}),
  };
}

/**
 * Write a model (HF names) as a GGUF that llama.cpp loads: architecture metadata, llama.cpp tensor names,
 * Llama q/k rows permuted. 2-D weights get `type` (quantized types fall back to F32 when a row is not a
 * whole number of blocks); norms and biases stay F32 as llama.cpp's converter does. `metadata` adds or
 * overrides keys (tokenizer.* is needed for llama.cpp to load the file).
 */
export function writeModelGguf(
  path: string,
  config: ModelConfig,
  weights: WeightSource,
  opts: { type?: GgmlType; name?: string; metadata?: Record<string, GgufValue | GgufTyped> } = {},
): void {
  const type = opts.type ?? 'F32', a = config.architecture;
  const metadata: Record<string, GgufValue | GgufTyped> = {
    'general.architecture': a,
    'general.name': opts.name ?? 'edgereason',
    // llama_ftype: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q8_0 7, MOSTLY_BF16 32.
    'general.file_type': typed('u32', { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7, BF16: 32 }[type]),
    [`${a}.context_length`]: typed('u32', config.maxPositionEmbeddings),
    [`${a}.embedding_length`]: typed('u32', config.hiddenSize),
    [`${a}.block_count`]: typed('u32', config.numLayers),
    [`${a}.feed_forward_length`]: typed('u32', config.intermediateSize),
    [`${a}.attention.head_count`]: typed('u32', config.numHeads),
    [`${a}.attention.head_count_kv`]: typed('u32', config.numKvHeads),
    [`${a}.rope.freq_base`]: typed('f32', config.ropeTheta),
    [`${a}.attention.layer_norm_rms_epsilon`]: typed('f32', config.rmsNormEps),
    ...ggufRopeScalingMetadata(config),
    ...(config.headDim * config.numHeads !== config.hiddenSize
      ? { [`${a}.attention.key_length`]: typed('u32', config.headDim), [`${a}.attention.value_length`]: typed('u32', config.headDim) } : {}),
    ...opts.metadata,
  };
  const hfNames = [...GLOBAL_NAMES.map(([, h]) => h), ...Array.from({ length: config.numLayers }, (_, l) => LAYER_NAMES.map(([, h]) => `model.layers.${l}.${h}`)).flat()]
    .filter((n) => weights.has(n) && !(n === 'lm_head.weight' && config.tieWordEmbeddings) && !(n.endsWith('.bias') && !config.attentionBias));
  const tensors: GgufTensorIn[] = hfNames.map((hf) => {
    const name = hfToGgufName(hf)!, shape = weights.shape(hf);
    const quantOk = type === 'F32' || type === 'F16' || type === 'BF16' || shape[shape.length - 1] % QK === 0;
    const data = () => {
      const x = weights.get(hf);
      if (a !== 'llama') return x;
      if (/\.q_proj\./.test(hf)) return permuteQK(x, shape[0], config.numHeads, true);
      if (/\.k_proj\./.test(hf)) return permuteQK(x, shape[0], config.numKvHeads, true);
      return x;
    };
    return { name, shape, type: shape.length === 2 && quantOk ? type : 'F32', data };
  });
  if (config.ropeScaling?.type === 'llama3' || (!config.ropeScaling && config.ropeFreqFactors)) {
    const f = Float32Array.from(ropeFreqFactors(config));
    tensors.push({ name: ROPE_FREQS, shape: [f.length], type: 'F32', data: () => f });
  }
  writeGguf(path, { metadata, tensors });
}
