/**
 * The JS-owned KV cache: per layer one K and one V buffer [rows, kvHeads, capacity, headDim].
 * The whole buffer is passed to the graph each step (no copy) and unused slots are masked by the
 * attention bias; only the new rows come back and are written in place. Capacity grows by doubling.
 */
export interface CacheShape { layers: number; kvHeads: number; headDim: number }

export const MASKED = -1e9;

export class KVCache {
  keys: Float32Array[];
  values: Float32Array[];
  /** Valid positions per row (row b holds positions 0..lengths[b]-1). */
  lengths: number[];

  constructor(readonly shape: CacheShape, rows: number, public capacity = 64) {
    this.lengths = new Array(rows).fill(0);
    const size = rows * shape.kvHeads * capacity * shape.headDim;
    this.keys = Array.from({ length: shape.layers }, () => new Float32Array(size));
    this.values = Array.from({ length: shape.layers }, () => new Float32Array(size));
  }

  get rows(): number { return this.lengths.length; }
  get bytes(): number { return 8 * this.shape.layers * this.keys[0].length; }

  /** Makes room for `needed` positions in every row, doubling the capacity as needed. */
  ensureCapacity(needed: number): void {
    if (needed <= this.capacity) return;
    let cap = this.capacity;
    while (cap < needed) cap *= 2;
    this.relayout(this.lengths.map((_, i) => i), cap);
  }

  /** A cache with the given rows of this one (rows may repeat: forking a prompt into N samples). */
  select(rows: number[]): KVCache {
    const out = new KVCache(this.shape, 0, this.capacity);
    out.lengths = rows.map((r) => this.lengths[this.checkRow(r)]);
    out.keys = this.keys.map((k) => gatherRows(k, rows, this.rowSize, this.rowSize));
    out.values = this.values.map((v) => gatherRows(v, rows, this.rowSize, this.rowSize));
    return out;
  }

  /** Forks one row's prefix into n rows. */
  fork(row: number, n: number): KVCache { return this.select(new Array(n).fill(row)); }

  /** Keeps only the given rows, in that order (finished sequences leave the batch). */
  keep(rows: number[]): void {
    const c = this.select(rows);
    this.keys = c.keys; this.values = c.values; this.lengths = c.lengths;
  }

  truncate(row: number, length: number): void {
    if (length < 0 || length > this.lengths[this.checkRow(row)]) throw new Error(`kv-cache: cannot truncate row ${row} of length ${this.lengths[row]} to ${length}`);
    this.lengths[row] = length;
  }

  /** Appends `count` new rows from a graph output [B, Hkv, T, D] (row `row`, first `count` tokens). */
  append(row: number, newKeys: Float32Array[], newValues: Float32Array[], tokens: number, count: number): void {
    const { kvHeads, headDim: d } = this.shape, start = this.lengths[row];
    if (start + count > this.capacity) throw new Error(`kv-cache: row ${row} overflows capacity ${this.capacity}`);
    for (let l = 0; l < this.shape.layers; l++) {
      for (let h = 0; h < kvHeads; h++) {
        const src = ((row * kvHeads + h) * tokens) * d, dst = ((row * kvHeads + h) * this.capacity + start) * d;
        this.keys[l].set(newKeys[l].subarray(src, src + count * d), dst);
        this.values[l].set(newValues[l].subarray(src, src + count * d), dst);
      }
    }
    this.lengths[row] = start + count;
  }

  /**
   * Additive attention bias [rows, T, capacity + T] for a step where row b adds newCounts[b] tokens
   * (padded to T): each token sees its row's valid past and the new tokens up to itself.
   */
  attentionBias(newCounts: number[], T: number): Float32Array {
    const cap = this.capacity, width = cap + T, bias = new Float32Array(this.rows * T * width).fill(MASKED);
    for (let b = 0; b < this.rows; b++) {
      for (let t = 0; t < T; t++) {
        const o = (b * T + t) * width;
        if (t < newCounts[b]) {
          bias.fill(0, o, o + this.lengths[b]);
          bias.fill(0, o + cap, o + cap + t + 1);
        } else bias[o + cap + t] = 0; // padding attends to itself only, so its row stays finite
      }
    }
    return bias;
  }

  private get rowSize(): number { return this.shape.kvHeads * this.capacity * this.shape.headDim; }

  private relayout(rows: number[], capacity: number): void {
    const { kvHeads, headDim: d } = this.shape, oldCap = this.capacity;
    const move = (buf: Float32Array) => {
      const out = new Float32Array(rows.length * kvHeads * capacity * d);
      rows.forEach((r, i) => {
        for (let h = 0; h < kvHeads; h++) {
          const src = (r * kvHeads + h) * oldCap * d, dst = (i * kvHeads + h) * capacity * d;
          out.set(buf.subarray(src, src + Math.min(oldCap, capacity) * d), dst);
        }
      });
      return out;
    };
    this.keys = this.keys.map(move);
    this.values = this.values.map(move);
    this.capacity = capacity;
  }

  private checkRow(r: number): number {
    if (!Number.isInteger(r) || r < 0 || r >= this.rows) throw new Error(`kv-cache: row ${r} out of range (cache has ${this.rows} rows)`);
    return r;
  }
}

function gatherRows(buf: Float32Array, rows: number[], srcSize: number, dstSize: number): Float32Array {
  const out = new Float32Array(rows.length * dstSize);
  rows.forEach((r, i) => out.set(buf.subarray(r * srcSize, r * srcSize + dstSize), i * dstSize));
  return out;
}
