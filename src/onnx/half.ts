/** IEEE half-precision conversions (round to nearest even), used for fp16 tables and Q4 scales. */
const F32 = new Float32Array(1), U32 = new Uint32Array(F32.buffer);

export function f32ToF16(v: number): number {
  F32[0] = v;
  const x = U32[0], sign = (x >>> 16) & 0x8000, exp = (x >>> 23) & 0xff, mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000, shift = 14 - e, half = 1 << (shift - 1), r = m >> shift, rem = m & ((1 << shift) - 1);
    return sign | (rem > half || (rem === half && r & 1) ? r + 1 : r);
  }
  const r = (e << 10) | (mant >> 13), rem = mant & 0x1fff;
  return sign | (rem > 0x1000 || (rem === 0x1000 && r & 1) ? r + 1 : r);
}

export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
