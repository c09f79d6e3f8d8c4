/**
 * The JS-owned KV cache: per layer one K and one V buffer [rows, kvHeads, capacity, headDim].
 * The buffers are passed to the graph each step as inputs (no copy; the attention op masks everything past
 * each row's length); the graph returns only the step's new rows, which the engine writes in here.
 * Capacity grows by a quarter (at least to what is needed), in steps of 64 positions: at most 25 % of the cache
 * is slack (doubling left up to half), and every decode step attends over rows × capacity.
 * Rows forked from one prompt may share it as a prefix (select's `share`; the engine decides when): held once, and
 * read once per decode step for all rows; each row's own buffer then holds its positions from the prefix's end on.
 */
export interface CacheShape { layers: number; kvHeads: number; headDim: number }

/** Bytes of float32 keys and values for `rows` rows of `positions` positions of a model (every layer). */
export const kvBytes = (c: { numLayers: number; numKvHeads: number; headDim: number }, rows: number, positions: number): number =>
  2 * c.numLayers * rows * positions * c.numKvHeads * c.headDim * 4;

/** Positions 0..length-1 of every row, stored once: per layer [kvHeads, length, headDim]. */
export interface SharedPrefix { keys: Float32Array[]; values: Float32Array[]; length: number }

export class KVCache {
  keys: Float32Array[];
  values: Float32Array[];
  /** Valid positions per row (row b holds positions 0..lengths[b]-1, the shared prefix's included). */
  lengths: number[];
  /** The rows' shared first positions; the buffers then hold positions offset.. (capacity counts those). */
  prefix?: SharedPrefix;
  /** Bumped by every change of rows, lengths or layout, so a batch that mirrors this cache can tell it changed. */
  version = 0;

  constructor(readonly shape: CacheShape, rows: number, public capacity = 64) {
    this.lengths = new Array(rows).fill(0);
    const size = rows * shape.kvHeads * capacity * shape.headDim;
    this.keys = Array.from({ length: shape.layers }, () => zeros(size));
    this.values = Array.from({ length: shape.layers }, () => zeros(size));
  }

  get rows(): number { return this.lengths.length; }
  /** Positions before the rows' own buffers: the shared prefix's length (0 without one). */
  get offset(): number { return this.prefix?.length ?? 0; }
  /** This cache's size, its shared prefix included (which caches forked from it share too). */
  get bytes(): number { return 8 * this.shape.layers * (this.keys[0].length + (this.prefix?.keys[0].length ?? 0)); }

  /** Makes room for `needed` positions in every row. */
  ensureCapacity(needed: number): void {
    if (needed - this.offset <= this.capacity) return;
    this.grow(grownCapacity(this.capacity, needed - this.offset));
    this.version++;
  }

  /**
   * A cache with the given rows of this one (rows may repeat: forking a prompt into N samples). With `share`,
   * several copies of one row (and nothing else) share that row as a prefix instead of each copying it.
   */
  select(rows: number[], share = false): KVCache {
    rows.forEach((r) => this.checkRow(r));
    const first = rows[0], length = this.lengths[first];
    if (share && !this.prefix && rows.length > 1 && length > 0 && rows.every((r) => r === first)) {
      const prefix = new KVCache(this.shape, 1, length), out = new KVCache(this.shape, rows.length); // one row of capacity length: [kvHeads, length, headDim]
      copyPositions(this, first, prefix, 0, 0, length);
      out.prefix = { keys: prefix.keys, values: prefix.values, length };
      out.lengths.fill(length);
      return out;
    }
    const out = new KVCache(this.shape, 0, this.capacity);
    out.prefix = this.prefix;
    out.lengths = rows.map((r) => this.lengths[r]);
    out.keys = this.keys.map((k) => gatherRows(k, rows, this.rowSize));
    out.values = this.values.map((v) => gatherRows(v, rows, this.rowSize));
    return out;
  }

  /** The given rows' first `length` positions, in a cache of their own just large enough for them. */
  head(rows: number[], length: number): KVCache {
    rows.forEach((r) => {
      if (!Number.isInteger(length) || length < 0 || length > this.lengths[this.checkRow(r)]) throw new Error(`kv-cache: cannot copy the first ${length} positions of row ${r}, of length ${this.lengths[r]}`);
    });
    const out = new KVCache(this.shape, rows.length, grownCapacity(64, length));
    rows.forEach((r, i) => copyPositions(this, r, out, i, 0, length));
    out.lengths.fill(length);
    return out;
  }

  /**
   * Row `row`'s first `length` positions as one array: per layer its keys, then its values, each [kvHeads, length,
   * headDim] (a prompt cache file's layout, see prompt-cache.ts).
   */
  exportRow(row: number, length: number): Float32Array {
    if (!Number.isInteger(length) || length < 1 || length > this.lengths[this.checkRow(row)]) throw new Error(`kv-cache: cannot export the first ${length} positions of row ${row}, of length ${this.lengths[row]}`);
    const tight = new KVCache(this.shape, 1, length), n = tight.keys[0].length, out = new Float32Array(2 * this.shape.layers * n);
    copyPositions(this, row, tight, 0, 0, length);
    for (let l = 0; l < this.shape.layers; l++) { out.set(tight.keys[l], 2 * l * n); out.set(tight.values[l], (2 * l + 1) * n); }
    tight.release();
    return out;
  }

  /**
   * A one-row cache holding `length` positions in exportRow's layout, which `read(into, from)` gives: `into.length`
   * values from value `from` on (from an array, or straight from a file into the cache's buffers). Values that are
   * not finite are refused (a corrupt source).
   */
  static importRow(shape: CacheShape, length: number, read: (into: Float32Array, from: number) => void): KVCache {
    if (!Number.isInteger(length) || length < 1) throw new Error(`kv-cache: cannot import ${length} positions`);
    const out = new KVCache(shape, 1, grownCapacity(64, length)), run = length * shape.headDim;
    for (let l = 0; l < shape.layers; l++) {
      for (const kv of [0, 1]) {
        const buf = (kv ? out.values : out.keys)[l];
        for (let h = 0; h < shape.kvHeads; h++) {
          const into = buf.subarray(h * out.capacity * shape.headDim, h * out.capacity * shape.headDim + run);
          read(into, ((2 * l + kv) * shape.kvHeads + h) * run);
          let nan = 0;
          for (let i = 0; i < into.length; i++) nan += into[i] * 0; // NaN for a NaN or an infinity, else 0
          if (nan !== 0) { out.release(); throw new Error(`kv-cache: layer ${l}'s ${kv ? 'values' : 'keys'} of head ${h} hold a value that is not finite`); }
        }
      }
    }
    out.lengths[0] = length;
    return out;
  }

  /** A cache whose row r holds row 0 of `sources[r]` (every position), or nothing for null: one batch of several caches. */
  static gather(shape: CacheShape, sources: (KVCache | null)[]): KVCache {
    const lengths = sources.map((c) => c?.lengths[0] ?? 0), out = new KVCache(shape, sources.length, grownCapacity(64, Math.max(...lengths)));
    sources.forEach((c, r) => { if (c) copyPositions(c, 0, out, r, 0, lengths[r]); });
    out.lengths = lengths;
    return out;
  }

  /** Keeps only the given rows, in that order (finished sequences leave the batch). */
  keep(rows: number[]): void {
    const c = this.select(rows);
    this.recycle();
    this.keys = c.keys; this.values = c.values; this.lengths = c.lengths;
    this.version++;
  }

  truncate(row: number, length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.lengths[this.checkRow(row)]) throw new Error(`kv-cache: cannot truncate row ${row} of length ${this.lengths[row]} to ${length}`);
    if (length < this.offset) this.unshare(); // the row leaves the shared prefix: every row holds its own copy
    this.lengths[row] = length;
    this.version++;
  }

  /** Copies the shared prefix into every row, which then hold all their positions. */
  unshare(): void {
    if (!this.prefix) return;
    const plain = new KVCache(this.shape, this.rows, grownCapacity(64, Math.max(...this.lengths)));
    this.lengths.forEach((len, r) => copyPositions(this, r, plain, r, 0, len));
    this.recycle();
    this.keys = plain.keys; this.values = plain.values; this.capacity = plain.capacity;
    this.prefix = undefined;
    this.version++;
  }

  /** Records that `count` new positions were written into `row` (the engine, from the graph's new rows). */
  advance(row: number, count: number): void {
    if (!Number.isInteger(count) || count < 0) throw new Error(`kv-cache: row ${row} cannot advance by ${count} positions`);
    if (this.lengths[this.checkRow(row)] + count - this.offset > this.capacity) throw new Error(`kv-cache: row ${row} overflows capacity ${this.capacity}`);
    this.lengths[row] += count;
    this.version++;
  }

  /**
   * Gives this cache's own buffers back for reuse (its shared prefix, which other caches may hold, stays): the cache
   * is gone, and using it again throws. Only once no session run reads or writes it (LocalBackend.free waits).
   */
  release(): void {
    this.recycle();
    this.keys = []; this.values = []; this.lengths = [];
    this.version++;
  }

  /** Rows from .. from + count - 1 as a cache over the same buffers (no copy; rows are the outermost dimension) and prefix. */
  view(from: number, count: number): KVCache {
    const v = new KVCache(this.shape, 0, this.capacity), n = this.rowSize;
    v.keys = this.keys.map((k) => k.subarray(from * n, (from + count) * n));
    v.values = this.values.map((x) => x.subarray(from * n, (from + count) * n));
    v.lengths = this.lengths.slice(from, from + count);
    v.prefix = this.prefix;
    return v;
  }

  private get rowSize(): number { return this.shape.kvHeads * this.capacity * this.shape.headDim; }

  /** Moves every row into buffers of a larger `capacity` (positions stay where they are in each head). */
  private grow(capacity: number): void {
    const { kvHeads, headDim: d } = this.shape, oldCap = this.capacity, heads = this.rows * kvHeads;
    const move = (buf: Float32Array) => {
      const out = zeros(heads * capacity * d);
      for (let h = 0; h < heads; h++) out.set(buf.subarray(h * oldCap * d, (h + 1) * oldCap * d), h * capacity * d);
      return out;
    };
    const keys = this.keys.map(move), values = this.values.map(move);
    this.recycle();
    this.keys = keys; this.values = values;
    this.capacity = capacity;
  }

  /** The own buffers go to the pool (the caller replaces them). */
  private recycle(): void {
    recycle(this.keys);
    recycle(this.values);
  }

  private checkRow(r: number): number {
    if (!Number.isInteger(r) || r < 0 || r >= this.rows) throw new Error(`kv-cache: row ${r} out of range (cache has ${this.rows} rows)`);
    return r;
  }
}

/**
 * Copies positions [from, to) of `src` row `srcRow` into `dst` row `dstRow`, every layer, K and V (the caches may
 * have different capacities, row counts and prefixes; positions in src's shared prefix come from it). Gathers rows
 * of several caches into one batch cache and scatters the positions a batched step wrote back to their own caches.
 * `dst` must have room for `to` positions, and its shared prefix (if any) must end at or before `from`.
 */
export function copyPositions(src: KVCache, srcRow: number, dst: KVCache, dstRow: number, from: number, to: number): void {
  if (to <= from) return;
  const { kvHeads, headDim: d } = src.shape;
  if (dst.shape.kvHeads !== kvHeads || dst.shape.headDim !== d || dst.shape.layers !== src.shape.layers) throw new Error('kv-cache: copyPositions between caches of different shapes');
  if (from < dst.offset) throw new Error(`kv-cache: copyPositions cannot write position ${from}, in the destination's shared prefix of ${dst.offset}`);
  if (to - dst.offset > dst.capacity || to - src.offset > src.capacity) throw new Error(`kv-cache: copyPositions up to ${to} exceeds capacity (${src.offset + src.capacity} → ${dst.offset + dst.capacity})`);
  // Each run of positions: where position p of head h starts in the source buffer and in the destination's.
  const runs: [number, number, (l: number, kv: 0 | 1) => Float32Array, (h: number, p: number) => number][] = [];
  const P = src.offset, mid = Math.min(to, Math.max(from, P));
  if (mid > from) runs.push([from, mid, (l, kv) => (kv ? src.prefix!.values : src.prefix!.keys)[l], (h, p) => (h * P + p) * d]);
  if (to > mid) runs.push([mid, to, (l, kv) => (kv ? src.values : src.keys)[l], (h, p) => ((srcRow * kvHeads + h) * src.capacity + p - P) * d]);
  for (let l = 0; l < src.shape.layers; l++) {
    for (const kv of [0, 1] as const) {
      const t = (kv ? dst.values : dst.keys)[l];
      for (const [a, b, buf, at] of runs) {
        const s = buf(l, kv);
        for (let h = 0; h < kvHeads; h++) t.set(s.subarray(at(h, a), at(h, b)), ((dstRow * kvHeads + h) * dst.capacity + a - dst.offset) * d);
      }
    }
  }
}

function gatherRows(buf: Float32Array, rows: number[], size: number): Float32Array {
  const out = zeros(rows.length * size, true); // every row set below, whole
  rows.forEach((r, i) => out.set(buf.subarray(r * size, (r + 1) * size), i * size));
  return out;
}

/** The capacity after growing `current` to hold `needed` positions: +25 % at least, rounded up to 64. */
export function grownCapacity(current: number, needed: number): number {
  if (needed <= current) return current;
  return 64 * Math.ceil(Math.max(needed, Math.ceil(current * 1.25)) / 64);
}

/**
 * Cache buffers let go of (a cache grown, rows dropped, a cache freed) are kept here by length, up to POOL_BYTES in
 * all, and handed out again zeroed. Fresh memory costs a page fault per 4 KB at its first touch, and on a VM that is
 * slow: 350 MB/s on the CI's 2-core EPYC, where forking a prompt into 8 samples of the default model (3 MB of cache)
 * took 9 ms and growing their cache once 12 ms, together a seventh of decoding 64 tokens each. One pool per thread,
 * emptied when the thread's last engine closes (engineOpened / engineClosed).
 */
const POOL_BYTES = 64 * 2 ** 20;
const pool = new Map<number, Float32Array[]>();
let pooled = 0, engines = 0;
/** Buffers made here and in use: only these are pooled (never a view into another, and never one twice). */
const owned = new WeakSet<Float32Array>();

/** A buffer of `n` floats, recycled when one of that length is pooled: zeroed, unless the caller fills it whole. */
function zeros(n: number, filledByCaller = false): Float32Array {
  let a = pool.get(n)?.pop();
  if (a) { pooled -= a.byteLength; if (!filledByCaller) a.fill(0); } else a = new Float32Array(n);
  owned.add(a);
  return a;
}

/** Pools the buffers zeros() made, while there is room. */
function recycle(bufs: Float32Array[]): void {
  for (const b of bufs) {
    if (!owned.has(b) || pooled + b.byteLength > POOL_BYTES) continue;
    owned.delete(b);
    const list = pool.get(b.length);
    if (list) list.push(b); else pool.set(b.length, [b]);
    pooled += b.byteLength;
  }
}

/** Counts the engines of this thread; the pool goes when the last one closes. */
export function engineOpened(): void { engines++; }
export function engineClosed(): void {
  if (--engines > 0) return;
  engines = 0;
  pool.clear();
  pooled = 0;
}
