/**
 * Token sampling: greedy, temperature, top-k, top-p, min-p. The random draw `u` in [0,1) comes from the
 * caller's seeded generator (one per sequence), so a sequence samples the same tokens whether it is
 * decoded alone or inside a batch.
 */
export interface SamplingParams {
  /** 0 = greedy (default). */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
}

export interface Sampled { token: number; logprob: number }

/** Tokens whose probability is below e^-25 of the best one cannot matter for top-p/min-p at fp32 precision. */
const TAIL = 25;

// Scratch buffers reused across calls (sampling runs once per row per decode step: no garbage per token).
let scratchP = new Float64Array(0), scratchI = new Int32Array(0);

export function sampleToken(logits: Float32Array, params: SamplingParams, u: number): Sampled {
  const V = logits.length, temp = params.temperature ?? 0;
  let best = 0;
  for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
  const max = logits[best];
  if (temp <= 0) return { token: best, logprob: -logSumExp(logits, max) };
  if (scratchP.length < V) { scratchP = new Float64Array(V); scratchI = new Int32Array(V); }
  const e = scratchP, cand = scratchI;
  let count = 0, sumAll = 0;
  for (let i = 0; i < V; i++) {
    const x = (logits[i] - max) / temp;
    if (x > -TAIL) { sumAll += e[i] = Math.exp(x); cand[count++] = i; }
  }
  const byLogit = (a: number, b: number) => logits[b] - logits[a] || a - b;
  let sorted: Int32Array, norm: number;
  if (params.topK && params.topK > 0 && params.topK < count) {
    sorted = cand.slice(0, count).sort(byLogit).subarray(0, params.topK);
    norm = 0;
    for (let i = 0; i < sorted.length; i++) norm += e[sorted[i]];
  } else {
    // Without top-k the probabilities are e / sumAll. A token below minP·p_best is cut by min-p, and one below
    // (1 − topP) / count cannot enter the nucleus (everything at or below it weighs < 1 − topP), so only the few
    // tokens above both floors need sorting.
    norm = sumAll;
    let floor = params.minP && params.minP > 0 ? params.minP / sumAll : 0;
    if (params.topP !== undefined && params.topP < 1) floor = Math.max(floor, 0.5 * (1 - params.topP) / count);
    let k = 0;
    for (let j = 0; j < count; j++) if (e[cand[j]] / sumAll >= floor) cand[k++] = cand[j];
    sorted = cand.subarray(0, k).sort(byLogit);
  }
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
  return { token, logprob: (logits[token] - max) - logSumExp(logits, max) };
}

/** log Σ exp(x - max) */
function logSumExp(x: Float32Array, max: number): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp(x[i] - max);
  return Math.log(s);
}

/** Seeded generator (SplitMix32-style mixing of a 32-bit state): small, fast and reproducible across platforms. */
export function seededRandom(seed: number): () => number {
  let s = (seed >>> 0) ^ 0x9e3779b9;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
