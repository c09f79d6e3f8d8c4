/**
 * Token sampling: repetition penalty, presence and frequency penalties, then greedy, temperature, top-k, top-p, min-p. The random draw `u` in
 * [0,1) comes from the caller's seeded generator (one per sequence), so a sequence samples the same tokens
 * whether it is decoded alone or inside a batch.
 */
import { randomInt } from 'node:crypto';

export interface SamplingParams {
  /** 0 = greedy (default). */
  temperature?: number;
  /** Keep the k best tokens: exactly k, a tie at the k-th logit going to the lower id (as llama.cpp; transformers keeps every tied one). */
  topK?: number;
  topP?: number;
  minP?: number;
  /**
   * Repetition penalty, as transformers' and vLLM's: the logit of every token already in the prompt or the output
   * is divided by it where positive and multiplied by it where negative (greedy decoding too); 1 = off (default).
   * The reported log-probabilities are of the penalised distribution.
   */
  repetitionPenalty?: number;
  /**
   * OpenAI's presence and frequency penalties (-2 to 2; 0 = off, default): subtracted from the logit of every token the
   * output holds so far, the presence penalty once and the frequency penalty once per time it occurs (vLLM's too: the
   * prompt's tokens are not counted). The reported log-probabilities are of the penalised distribution.
   */
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** Also report the k most likely tokens at each step with their log-probabilities (OpenAI's top_logprobs; 0 = none). */
  topLogprobs?: number;
}

/** SamplingParams' keys, for the lists of options each entry point takes (a key left out of one is refused there). */
export const SAMPLING_OPTIONS = ['temperature', 'topK', 'topP', 'minP', 'repetitionPenalty', 'presencePenalty', 'frequencyPenalty', 'topLogprobs'] as const satisfies readonly (keyof SamplingParams)[];
// Every key: a SamplingParams key missing from the list fails to compile here (it would be refused by answer(), or taken and dropped).
void (true satisfies (Exclude<keyof SamplingParams, (typeof SAMPLING_OPTIONS)[number]> extends never ? true : never));

/** The sampling options `o` gives (those not undefined), as SamplingParams: what answer() checks and passes on. */
export const samplingOf = (o: SamplingParams): SamplingParams => Object.fromEntries(SAMPLING_OPTIONS.filter((k) => o[k] !== undefined).map((k) => [k, o[k]]));

/**
 * What the engine's sampler takes per row: the parameters, the row's random draw, the ids the penalty applies to, and
 * (`allow`) the only tokens it may draw at this step (constrained decoding: the log-probabilities reported stay the model's), and
 * (`deny`) tokens it may not draw (the end tokens before minTokens, or with ignoreEos; the log-probabilities reported stay the model's, as vLLM's).
 */
export type RowSampling = SamplingParams & { u: number; seen?: ArrayLike<number>; allow?: ArrayLike<number>; counted?: Counted; deny?: ArrayLike<number> };

/** The distinct tokens of the output so far (`ids`) and how often each occurs (`n`): what the presence and frequency penalties apply to. */
export interface Counted { ids: ArrayLike<number>; n: ArrayLike<number> }

/** A token and its log-probability. */
export type TokenLogprob = [token: number, logprob: number];

/** The token drawn and its log-probability, and (topLogprobs) the most likely ones, best first. */
export interface Sampled { token: number; logprob: number; top?: TokenLogprob[] }

/** Tokens whose probability is below e^-25 of the best one cannot matter for top-p/min-p at fp32 precision. */
const TAIL = 25;
/** Steps of the scaled logit range (−TAIL, 0] whose exponentials are tabled: the weights' precision (see fromSlices). */
const NUCLEUS_BUCKETS = 4096;
/**
 * Slices (groups of those steps) that locate the end of the top-p nucleus before sorting: the power of two at or
 * above a quarter of the vocabulary, 64 to NUCLEUS_BUCKETS. Every call walks them a few times: with 4,096 slices,
 * an 826-token vocabulary spent most of a call on empty ones.
 */
const slicesFor = (V: number): number => Math.min(NUCLEUS_BUCKETS, Math.max(64, 2 ** Math.ceil(Math.log2(V / 4))));

// Scratch buffers reused across calls (sampling runs once per row per decode step: no garbage per token).
let scratchP = new Float64Array(0), scratchI = new Int32Array(0), scratchO = new Int32Array(0), scratchS = new Int32Array(0);
// Per slice (at most NUCLEUS_BUCKETS): mass, start offsets, fill counts; per step, exp(−sΔ) with Δ = TAIL / NUCLEUS_BUCKETS.
const sliceMass = new Float64Array(NUCLEUS_BUCKETS), sliceStart = new Int32Array(NUCLEUS_BUCKETS + 1), sliceFill = new Int32Array(NUCLEUS_BUCKETS);
const SLICE_STEP = TAIL / NUCLEUS_BUCKETS, SLICE_EXP = Float64Array.from({ length: NUCLEUS_BUCKETS }, (_, b) => Math.exp(-b * SLICE_STEP));

let scratchL = new Float32Array(0), scratchA = new Float32Array(0);

/**
 * `lse`: log Σ exp(logits) when the caller has it (the inference graph outputs it), else computed here. `seen`:
 * the distinct token ids the repetition penalty applies to (the logits themselves are left as they are). `allow`:
 * the only tokens the draw may pick (see RowSampling). `counted`: the output's tokens the presence and frequency
 * penalties apply to.
 */
export function sampleToken(logits: Float32Array, params: SamplingParams, u: number, lse?: number, seen?: ArrayLike<number>, allow?: ArrayLike<number>, counted?: Counted, deny?: ArrayLike<number>): Sampled {
  const rp = params.repetitionPenalty, repeated = rp !== undefined && rp !== 1 && !!seen?.length;
  const pp = params.presencePenalty ?? 0, fp = params.frequencyPenalty ?? 0, occurred = (pp !== 0 || fp !== 0) && !!counted?.ids.length;
  const penalised = repeated || occurred;
  if (penalised) {
    if (scratchL.length < logits.length) scratchL = new Float32Array(logits.length);
    const pen = scratchL.subarray(0, logits.length);
    pen.set(logits);
    if (repeated) for (let i = 0; i < seen.length; i++) { const t = seen[i], x = pen[t]; pen[t] = x > 0 ? x / rp : x * rp; }
    if (occurred) for (let i = 0; i < counted.ids.length; i++) pen[counted.ids[i]] -= pp + fp * counted.n[i];
    logits = pen; lse = undefined; // the graph's normaliser is of the logits before the penalty
  }
  // The distribution reported (log-probabilities, top tokens) is the model's; a constraint only limits the draw.
  const full = logits;
  if (allow && !(params.temperature! > 0) && !params.topLogprobs && allow.length) { // greedy: the best allowed token (ties to the lower id)
    let best = allow[0];
    for (let i = 1; i < allow.length; i++) { const t = allow[i], x = logits[t], y = logits[best]; if (x > y || (x === y && t < best) || y !== y) best = t; }
    if (!Number.isFinite(logits[best])) throw notFinite(logits[best], repeated ? rp : undefined);
    const m = lse === undefined ? maxOf(full) : 0;
    return { token: best, logprob: full[best] - (lse ?? m + logSumExp(full, m)) };
  }
  if (allow) { // every other token at -Infinity for the draw
    if (scratchA.length < logits.length) scratchA = new Float32Array(logits.length);
    const only = scratchA.subarray(0, logits.length).fill(-Infinity);
    for (let i = 0; i < allow.length; i++) only[allow[i]] = logits[allow[i]];
    logits = only;
  } else if (deny?.length) { // these at -Infinity for the draw (allow and deny never go together: see checkGenerateOptions)
    if (scratchA.length < logits.length) scratchA = new Float32Array(logits.length);
    const kept = scratchA.subarray(0, logits.length);
    kept.set(logits);
    for (let i = 0; i < deny.length; i++) kept[deny[i]] = -Infinity;
    logits = kept;
  }
  const V = logits.length, temp = params.temperature ?? 0, k = params.topK && params.topK > 0 ? Math.min(params.topK, V) : 0; // more than the vocabulary keeps all of it
  // The k best tokens (top-k), else the single best: its logit is the maximum.
  let sorted = temp > 0 && k ? topK(logits, k) : undefined, best = sorted?.[0] ?? 0;
  if (!sorted) {
    while (best < V - 1 && Number.isNaN(logits[best])) best++; // a NaN compares false: never the best, even first
    for (let i = best + 1; i < V; i++) if (logits[i] > logits[best]) best = i;
  }
  const max = logits[best];
  if (max === -Infinity && deny?.length) throw new Error('sampler: no token is left to draw: every one the model could write is an end token, which minTokens or ignoreEos keeps out (stopTokens covering the vocabulary?)');
  // No finite best logit (all NaN, or an infinite one): the forward pass overflowed, and any pick would be garbage.
  if (!Number.isFinite(max)) throw notFinite(max, repeated ? rp : undefined);
  let lseAll = lse; // log Σ exp of the model's logits, over the whole vocabulary once (a top-20 list asks for 21 log-probabilities)
  const normaliser = () => { const m = allow || deny?.length ? maxOf(full) : max; return m + logSumExp(full, m); };
  const logprob = (token: number) => full[token] - (lseAll ??= normaliser());
  const top = params.topLogprobs ? { top: Array.from(topK(full, Math.min(params.topLogprobs, V)), (t): TokenLogprob => [t, logprob(t)]) } : {};
  // A temperature so small that the tail floor rounds back to the best logit leaves only the best token: greedy.
  if (temp <= 0 || !(max - TAIL * temp < max)) return { token: best, logprob: logprob(best), ...top };
  if (scratchP.length < V) { scratchP = new Float64Array(V); scratchI = new Int32Array(V); }
  const e = scratchP, floorLogit = max - TAIL * temp; // tokens at or below the floor weigh < e^-25 of the best
  let norm = 0;
  if (sorted) {
    // Only the k kept tokens need their weights; those at or below the floor are dropped (as without top-k).
    let n = 0;
    while (n < sorted.length && logits[sorted[n]] > floorLogit) n++;
    sorted = sorted.subarray(0, n);
    for (let i = 0; i < n; i++) norm += e[sorted[i]] = Math.exp((logits[sorted[i]] - max) / temp);
  } else return { ...fromSlices(logits, params, u, max, floorLogit, temp, logprob), ...top };
  let n = sorted.length;
  const prob = (i: number) => e[sorted[i]] / norm;
  if (params.minP && params.minP > 0) {
    const cut = params.minP * prob(0);
    while (n > 1 && prob(n - 1) < cut) n--;
  }
  if (params.topP !== undefined && params.topP < 1) {
    let acc = 0, keep = 0;
    while (keep < n) { acc += prob(keep++); if (acc >= params.topP) break; }
    n = keep;
  }
  let total = 0;
  for (let i = 0; i < n; i++) total += prob(i);
  let r = u * total, pick = n - 1;
  for (let i = 0; i < n; i++) { r -= prob(i); if (r < 0) { pick = i; break; } }
  const token = sorted[pick];
  return { token, logprob: logprob(token), ...top };
}

/**
 * Sampling without top-k: the tokens above the tail floor are bucketed into equal slices (slicesFor) of the
 * scaled logit range (−TAIL, 0] (the slices are in logit order, so slice by slice, each sorted, is the order a
 * full sort gives). Min-p is a logit threshold; the top-p nucleus ends in the first slice whose mass reaches topP,
 * and the draw lands in one slice: only those slices are sorted (two, or a few more where the mass comes within
 * rounding of topP), never the whole nucleus, which on a flat distribution is most of the vocabulary. Picks
 * exactly what sorting every token would.
 */
function fromSlices(logits: Float32Array, params: SamplingParams, u: number, max: number, floorLogit: number, temp: number, logprob: (t: number) => number): Sampled {
  const V = logits.length, B = slicesFor(V), shift = Math.log2(NUCLEUS_BUCKETS / B);
  if (scratchO.length < V) { scratchO = new Int32Array(V); scratchS = new Int32Array(V); }
  const e = scratchP, cand = scratchI, sl = scratchS, ordered = scratchO;
  const mass = sliceMass.fill(0, 0, B), start = sliceStart.fill(0, 0, B + 1), fill = sliceFill.fill(0, 0, B), step = SLICE_STEP;
  // One pass: weights (all above the floor count towards the normaliser), then min-p, which keeps tokens whose
  // probability is at least minP × the best's (whose weight is 1), and each kept token's slice.
  // Weights without an exponential per token: d = (max − x) / temp is split into its step's start sΔ and a
  // remainder f < Δ = TAIL / NUCLEUS_BUCKETS ≈ 0.006 (to rounding), and exp(−d) = exp(−sΔ) · exp(−f) with exp(−f)
  // from its Taylor series to f⁵ (the next term, < 7e-17, is below double rounding); slice b groups 2^shift steps.
  const minP = params.minP && params.minP > 0 ? params.minP : 0;
  // Multiplications: a division per token cost a third of the pass. Below temperature 5.6e-309 the inverse would
  // overflow, and only logits equal to the best pass the floor: finite, it keeps their d at 0 (∞ · 0 is NaN).
  const invTemp = Math.min(1 / temp, Number.MAX_VALUE), invStep = 1 / step;
  let kept = 0, norm = 0;
  for (let i = 0; i < V; i++) {
    const x = logits[i];
    if (!(x > floorLogit)) continue; // NaN too
    const d = (max - x) * invTemp, s = Math.min(NUCLEUS_BUCKETS - 1, (d * invStep) | 0), f = d - s * step, b = s >> shift;
    const w = SLICE_EXP[s] * (1 - f * (1 - f * (0.5 - f * (1 / 6 - f * (1 / 24 - f * (1 / 120))))));
    norm += w;
    if (w < minP && x !== max) continue;
    e[i] = w; cand[kept] = i; sl[kept++] = b; start[b + 1]++; mass[b] += w;
  }
  for (let b = 0; b < B; b++) start[b + 1] += start[b];
  for (let j = 0; j < kept; j++) ordered[start[sl[j]] + fill[sl[j]]++] = cand[j]; // index order within a slice
  const sortSlice = (b: number) => sortByLogit(logits, ordered.subarray(start[b], start[b + 1])); // in place
  // The nucleus: whole slices while the mass stays below topP, then the sorted tokens of the slice that reaches it.
  const topP = params.topP !== undefined && params.topP < 1 ? params.topP : undefined;
  let endSlice = B, endCount = 0, acc = 0; // nucleus = slices < endSlice + the first endCount tokens of endSlice
  for (let b = 0; b < B; b++) {
    const m = mass[b] / norm;
    if (!m) continue;
    if (topP !== undefined && acc + m >= topP * (1 - 1e-12)) {
      const toks = sortSlice(b);
      let a = acc, k = 0;
      while (k < toks.length) { a += e[toks[k++]] / norm; if (a >= topP) break; }
      if (a >= topP) { endSlice = b; endCount = k; acc = a; break; }
    }
    acc += m;
  }
  // The draw: skip whole slices by their mass, then walk the sorted tokens of the slice it lands in.
  const size = (b: number) => (b === endSlice ? endCount : start[b + 1] - start[b]);
  let r = u * acc, lastSlice = -1;
  for (let b = 0; b < Math.min(B, endSlice + 1); b++) {
    const n = size(b);
    if (!n) continue;
    lastSlice = b;
    if (b !== endSlice && r - mass[b] / norm >= 0) { r -= mass[b] / norm; continue; }
    const toks = b === endSlice ? ordered.subarray(start[b], start[b] + n) : sortSlice(b); // endSlice is sorted already
    for (let i = 0; i < n; i++) { r -= e[toks[i]] / norm; if (r < 0) return { token: toks[i], logprob: logprob(toks[i]) }; }
  }
  // Rounding left u · mass at the very end: the nucleus's last token.
  const n = size(lastSlice), token = (lastSlice === endSlice ? ordered.subarray(start[lastSlice], start[lastSlice] + n) : sortSlice(lastSlice))[n - 1];
  return { token, logprob: logprob(token) };
}

let heapV = new Float32Array(0), heapI = new Int32Array(0);

/**
 * The k tokens with the largest logits (ties to the lower index), largest first. One pass in index
 * order over a min-heap of the k best so far whose root is the weakest kept token (lowest logit; among equal
 * logits the highest index, so a later token that merely ties never enters): almost every token costs one
 * comparison with the root, O(V + k log k · log V) instead of sorting or partitioning the vocabulary.
 */
function topK(logits: Float32Array, k: number): Int32Array {
  if (heapV.length < k) { heapV = new Float32Array(k); heapI = new Int32Array(k); }
  const hv = heapV, hi = heapI;
  const weaker = (a: number, b: number) => hv[a] < hv[b] || (hv[a] === hv[b] && hi[a] > hi[b]);
  const swap = (a: number, b: number) => { const v = hv[a]; hv[a] = hv[b]; hv[b] = v; const t = hi[a]; hi[a] = hi[b]; hi[b] = t; };
  let n = 0;
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i];
    if (x !== x) continue; // NaN: no candidate (as −∞ would be), and no heap comparison holds for it
    if (n < k) { // sift up
      let c = n++;
      hv[c] = x; hi[c] = i;
      while (c > 0) { const p = (c - 1) >> 1; if (!weaker(c, p)) break; swap(c, p); c = p; }
    } else if (x > hv[0]) { // replace the root, sift down
      hv[0] = x; hi[0] = i;
      for (let c = 0; ;) {
        const l = 2 * c + 1, r = l + 1;
        let m = c;
        if (l < n && weaker(l, m)) m = l;
        if (r < n && weaker(r, m)) m = r;
        if (m === c) break;
        swap(c, m); c = m;
      }
    }
  }
  return sortByLogit(logits, hi.slice(0, n));
}

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
let scratchK = new Float64Array(0);

/**
 * `idx` sorted in place by logit, largest first, ties to the lower index. A few tokens go through a comparator
 * sort; many (flat distributions with a large nucleus) through one native numeric sort of packed keys in the same
 * order: the order-preserving 32-bit image of the float, then the inverted index in the low 21 bits (exact in a
 * float64; larger vocabularies keep the comparator).
 */
function sortByLogit(logits: Float32Array, idx: Int32Array): Int32Array {
  if (idx.length <= 64 || logits.length > 2 ** 21) return idx.sort((a, b) => logits[b] - logits[a] || a - b);
  if (scratchK.length < idx.length) scratchK = new Float64Array(logits.length);
  const keys = scratchK.subarray(0, idx.length), low = 2 ** 21 - 1;
  for (let i = 0; i < idx.length; i++) {
    f32[0] = logits[idx[i]] || 0; // -0 → +0 (equal logits tie on the index)
    const bits = u32[0], ord = bits & 0x80000000 ? ~bits >>> 0 : (bits | 0x80000000) >>> 0;
    keys[i] = ord * 2 ** 21 + (low - idx[i]);
  }
  keys.sort();
  for (let i = 0; i < idx.length; i++) idx[i] = low - (keys[idx.length - 1 - i] % 2 ** 21);
  return idx;
}

/** No finite best logit (`best`): the forward pass (or the repetition penalty `rp`) overflowed, and any pick would be garbage. */
const notFinite = (best: number, rp: number | undefined): Error => new Error(`sampler: the model's logits are not finite (${Number.isNaN(best) ? 'all NaN' : `the best is ${best}`}): its weights, or its adapter's, overflow float32 or are damaged (a converted folder's changed model.onnx.data: convert it again)${rp !== undefined ? `, or the repetition penalty ${rp} overflows them` : ''}`);

/** The largest value (NaN left out). */
function maxOf(x: Float32Array): number {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i] > m) m = x[i];
  return m;
}

/** log Σ exp(x - max) */
function logSumExp(x: Float32Array, max: number): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp(x[i] - max);
  return Math.log(s);
}

/** The seed that asks for a fresh one in the CLI and the server, as llama.cpp's -1 does (the library's seed -1 is a seed like any other). */
export const FRESH_SEED = -1;

/** A request's seed, or a fresh one where it gives none (or FRESH_SEED). */
export const seedOrFresh = (seed: number | null | undefined): number => (seed == null || seed === FRESH_SEED ? randomInt(2 ** 31) : seed);

/** Seed `seed + i` for row or sample i, wrapped within the safe integers: a seed near 2^53 still gives valid, distinct seeds. */
export const seedAt = (seed: number, i: number): number => (seed + i <= Number.MAX_SAFE_INTEGER ? seed + i : seed - 2 ** 53 + i);

/** Seeded generator: mulberry32 (as train/data.ts's Rng) from a 32-bit state, small, fast and reproducible across platforms. */
export function seededRandom(seed: number): () => number {
  // Seeds outside 0..2^32-1 fold their high part in (so 1 and 2^32 + 1 differ); those inside keep their stream.
  let s = ((seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32) | 0, 0x85ebca6b) ^ 0x9e3779b9) >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
