/**
 * The JS-owned KV cache: per layer one K and one V buffer [rows, kvHeads, capacity, headDim].
 * The buffers are passed to the graph each step as inputs (no copy; the attention op masks everything past
 * each row's length); the graph returns only the step's new rows, which the engine writes in here.
 * Capacity grows by a quarter (at least to what is needed), in steps of 64 positions: at most 25 % of the cache
 * is slack (doubling left up to half), and ORT's attention zero-fills rows × capacity every step.
 */
export interface CacheShape { layers: number; kvHeads: number; headDim: number }

export class KVCache {
  keys: Float32Array[];
  values: Float32Array[];
  /** Valid positions per row (row b holds positions 0..lengths[b]-1). */
  lengths: number[];
  /** Bumped by every change of rows, lengths or layout, so a batch that mirrors this cache can tell it changed. */
  version = 0;

  constructor(readonly shape: CacheShape, rows: number, public capacity = 64) {
    this.lengths = new Array(rows).fill(0);
    const size = rows * shape.kvHeads * capacity * shape.headDim;
    this.keys = Array.from({ length: shape.layers }, () => new Float32Array(size));
    this.values = Array.from({ length: shape.layers }, () => new Float32Array(size));
  }

  get rows(): number { return this.lengths.length; }
  get bytes(): number { return 8 * this.shape.layers * this.keys[0].length; }

  /** Makes room for `needed` positions in every row. */
  ensureCapacity(needed: number): void {
    if (needed <= this.capacity) return;
    this.relayout(this.lengths.map((_, i) => i), grownCapacity(this.capacity, needed));
    this.version++;
  }

  /** A cache with the given rows of this one (rows may repeat: forking a prompt into N samples). */
  select(rows: number[]): KVCache {
    const out = new KVCache(this.shape, 0, this.capacity);
    out.lengths = rows.map((r) => this.lengths[this.checkRow(r)]);
    out.keys = this.keys.map((k) => gatherRows(k, rows, this.rowSize, this.rowSize));
    out.values = this.values.map((v) => gatherRows(v, rows, this.rowSize, this.rowSize));
    return out;
  }

  /** Keeps only the given rows, in that order (finished sequences leave the batch). */
  keep(rows: number[]): void {
    const c = this.select(rows);
    this.keys = c.keys; this.values = c.values; this.lengths = c.lengths;
    this.version++;
  }

  truncate(row: number, length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.lengths[this.checkRow(row)]) throw new Error(`kv-cache: cannot truncate row ${row} of length ${this.lengths[row]} to ${length}`);
    this.lengths[row] = length;
    this.version++;
  }

  /** Records that `count` new positions were written into `row` (the engine, from the graph's new rows). */
  advance(row: number, count: number): void {
    if (!Number.isInteger(count) || count < 0) throw new Error(`kv-cache: row ${row} cannot advance by ${count} positions`);
    if (this.lengths[this.checkRow(row)] + count > this.capacity) throw new Error(`kv-cache: row ${row} overflows capacity ${this.capacity}`);
    this.lengths[row] += count;
    this.version++;
  }

  /** Row `row`'s slice of layer `layer` ([1, kvHeads, capacity, headDim] views, no copy). */
  rowView(layer: number, row: number): { k: Float32Array; v: Float32Array } {
    const n = this.rowSize;
    return { k: this.keys[layer].subarray(row * n, (row + 1) * n), v: this.values[layer].subarray(row * n, (row + 1) * n) };
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

/**
 * Copies positions [from, to) of `src` row `srcRow` into `dst` row `dstRow`, every layer, K and V (the caches may
 * have different capacities and row counts). Gathers rows of several caches into one batch cache and scatters
 * the positions a batched step wrote back to their own caches. `dst` must have room for `to` positions.
 */
export function copyPositions(src: KVCache, srcRow: number, dst: KVCache, dstRow: number, from: number, to: number): void {
  if (to <= from) return;
  const { kvHeads, headDim: d } = src.shape;
  if (dst.shape.kvHeads !== kvHeads || dst.shape.headDim !== d || dst.shape.layers !== src.shape.layers) throw new Error('kv-cache: copyPositions between caches of different shapes');
  if (to > dst.capacity || to > src.capacity) throw new Error(`kv-cache: copyPositions up to ${to} exceeds capacity (${src.capacity} → ${dst.capacity})`);
  const sc = src.capacity, dc = dst.capacity;
  for (let l = 0; l < src.shape.layers; l++) {
    for (const [s, t] of [[src.keys[l], dst.keys[l]], [src.values[l], dst.values[l]]]) {
      for (let h = 0; h < kvHeads; h++) {
        const so = ((srcRow * kvHeads + h) * sc + from) * d, dO = ((dstRow * kvHeads + h) * dc + from) * d;
        t.set(s.subarray(so, so + (to - from) * d), dO);
      }
    }
  }
}

function gatherRows(buf: Float32Array, rows: number[], srcSize: number, dstSize: number): Float32Array {
  const out = new Float32Array(rows.length * dstSize);
  rows.forEach((r, i) => out.set(buf.subarray(r * srcSize, r * srcSize + dstSize), i * dstSize));
  return out;
}

/** The capacity after growing `current` to hold `needed` positions: +25 % at least, rounded up to 64. */
export function grownCapacity(current: number, needed: number): number {
  if (needed <= current) return current;
  return 64 * Math.ceil(Math.max(needed, Math.ceil(current * 1.25)) / 64);
}
