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

export function sampleToken(logits: Float32Array, params: SamplingParams, u: number): Sampled {
  const V = logits.length, temp = params.temperature ?? 0;
  let best = 0;
  for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
  const max = logits[best];
  if (temp <= 0) return { token: best, logprob: -logSumExp(logits, max) };
  const cand: number[] = [];
  for (let i = 0; i < V; i++) if ((logits[i] - max) / temp > -TAIL) cand.push(i);
  cand.sort((a, b) => logits[b] - logits[a] || a - b);
  let n = params.topK && params.topK > 0 ? Math.min(params.topK, cand.length) : cand.length;
  const probs = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += probs[i] = Math.exp((logits[cand[i]] - max) / temp);
  for (let i = 0; i < n; i++) probs[i] /= sum;
  if (params.minP && params.minP > 0) {
    const cut = params.minP * probs[0];
    while (n > 1 && probs[n - 1] < cut) n--;
  }
  if (params.topP !== undefined && params.topP < 1) {
    let acc = 0, keep = 0;
    while (keep < n) { acc += probs[keep++]; if (acc >= params.topP) break; }
    n = keep;
  }
  let total = 0;
  for (let i = 0; i < n; i++) total += probs[i];
  let r = u * total, pick = n - 1;
  for (let i = 0; i < n; i++) { r -= probs[i]; if (r < 0) { pick = i; break; } }
  const token = cand[pick];
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
