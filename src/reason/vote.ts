/**
 * Combining N sampled answers into one (pure functions over the extracted answers):
 *
 * - majority: one vote per sample;
 * - confidence: each sample votes with weight exp(mean token log-probability), in (0, 1];
 * - verifier: best-of-N, the sample with the highest verifier score;
 * - verifier-vote: each sample votes with its verifier score, in [0, 1];
 * - checked: only the samples whose written work has the fewest flaws (check.ts: false equations, the question's
 *   numbers left unused) vote, each weighted as in confidence.
 *
 * Samples without an extracted answer do not vote. Ties go to the answer first given by the lowest sample
 * index (best-of-N: the lowest index among equal scores); with no vote at all, sample 0 is chosen. The sample that
 * gives the winning answer is the first whose thinking ended by itself, where one did (a capped one may go on
 * reasoning in its answer text), and a tie goes first to an answer that has such a sample.
 */
import type { VoteMethod } from './types.ts';

export interface Candidate {
  /** The extracted, canonical answer (grade.ts extractAnswer); undefined = no vote. */
  extracted?: string;
  meanLogprob: number;
  verifierScore?: number;
  /** Flaws in the sample's written work (check.ts checkWork), for the checked vote; undefined = unchecked, counted as none. */
  flaws?: number;
  /** Its thinking was closed by the cap, not by itself: another sample with its answer is shown where there is one. */
  capped?: boolean;
}

export interface VoteResult {
  /** Index of the chosen sample: the lowest-index sample giving the winning answer, uncapped first (best-of-N: the top-scored one). */
  chosen: number;
  winner?: string;
  /** Answer → count (majority) or summed weight. */
  votes: Record<string, number>;
}

export const VOTE_METHODS: readonly VoteMethod[] = ['majority', 'confidence', 'verifier', 'verifier-vote', 'checked'];
/** The votes a verifier decides (best of N, and the verifier-weighted vote). */
export const isVerifierVote = (m: unknown): boolean => m === 'verifier' || m === 'verifier-vote';

/** The weight of one sample's vote under a method (best-of-N counts samples, as majority does). */
export function voteWeight(method: VoteMethod, c: Candidate): number {
  if (method === 'confidence' || method === 'checked') return Math.exp(c.meanLogprob);
  if (method === 'verifier-vote') return c.verifierScore ?? 0; // unscored (stopped before its end): no say
  return 1;
}

/** Summed weights per answer, keyed in order of first appearance (lowest sample index first); `shown`: its first uncapped sample, else its first. */
export function tally(method: VoteMethod, cands: readonly Candidate[]): Map<string, { weight: number; first: number; shown: number }> {
  const t = new Map<string, { weight: number; first: number; shown: number }>();
  cands.forEach((c, i) => {
    if (c.extracted === undefined || (method === 'verifier-vote' && c.verifierScore === undefined)) return;
    const e = t.get(c.extracted);
    const w = voteWeight(method, c);
    if (!e) t.set(c.extracted, { weight: w, first: i, shown: i });
    else {
      e.weight += w;
      if (cands[e.shown].capped && !c.capped) e.shown = i;
    }
  });
  return t;
}

function weighted(method: VoteMethod, cands: readonly Candidate[]): VoteResult {
  const t = tally(method, cands);
  let best: [string, { weight: number; first: number; shown: number }] | undefined;
  // Insertion order = first index: a tie keeps the earlier answer, unless only the later one has a sample that ended its thinking by itself.
  const clean = (e: [string, { shown: number }]) => !cands[e[1].shown].capped;
  for (const e of t) if (!best || e[1].weight > best[1].weight || (e[1].weight === best[1].weight && clean(e) && !clean(best))) best = e;
  return { chosen: best ? best[1].shown : 0, winner: best?.[0], votes: Object.fromEntries([...t].map(([k, v]) => [k, v.weight])) };
}

export const majorityVote = (c: readonly Candidate[]): VoteResult => weighted('majority', c);
export const confidenceVote = (c: readonly Candidate[]): VoteResult => weighted('confidence', c);
export const verifierVote = (c: readonly Candidate[]): VoteResult => weighted('verifier-vote', c);

/**
 * Best-of-N by verifier score: the scored samples with a parsable answer compete (all scored ones when none has
 * one; samples stopped or cut before their end have no score and do not compete; when none has one, the majority
 * decides); votes = counts.
 */
export function verifierBestOfN(cands: readonly Candidate[]): VoteResult {
  const answered = cands.some((c) => c.verifierScore !== undefined && c.extracted !== undefined);
  let chosen = -1;
  cands.forEach((c, i) => {
    if (c.verifierScore === undefined || (answered && c.extracted === undefined)) return;
    if (chosen < 0 || c.verifierScore > cands[chosen].verifierScore!) chosen = i;
  });
  const majority = majorityVote(cands);
  if (chosen < 0) return majority; // no sample reached its end (cancelled, or stopped at its first token)
  return { chosen, winner: cands[chosen].extracted, votes: majority.votes };
}

/**
 * Of the samples with an answer, those with the fewest flaws vote, confidence-weighted; `chosen` indexes `cands`
 * and votes are the voters' weights.
 */
export function checkedVote(cands: readonly Candidate[]): VoteResult {
  const fewest = Math.min(...cands.filter((c) => c.extracted !== undefined).map((c) => c.flaws ?? 0));
  return weighted('checked', cands.map((c) => ((c.flaws ?? 0) > fewest ? { ...c, extracted: undefined } : c)));
}

export function vote(method: VoteMethod, cands: readonly Candidate[]): VoteResult {
  if (!cands.length) throw new Error('vote: no samples');
  switch (method) {
    case 'majority': return majorityVote(cands);
    case 'confidence': return confidenceVote(cands);
    case 'verifier': return verifierBestOfN(cands);
    case 'checked': return checkedVote(cands);
    case 'verifier-vote': { // no sample scored (all stopped before their end): the majority decides, as for best-of-N
      const r = verifierVote(cands);
      return r.winner === undefined && cands.some((c) => c.extracted !== undefined) ? majorityVote(cands) : r;
    }
    default: throw new Error(`vote: unknown method "${method as string}" (use ${VOTE_METHODS.join(', ')})`);
  }
}

/** Whether a vote may be decided before every sample has ended: not best-of-N, nor the checked vote (a later sample may be better). */
export const decidesEarly = (method: VoteMethod): boolean => method !== 'verifier' && method !== 'checked';

/**
 * Early stop: true when the answer leading among the finished samples can no longer be overtaken, or tied,
 * by the `remaining` unfinished ones, each adding at most weight 1 (exp of a log-probability, a verifier
 * probability) to any answer. Best-of-N and the checked vote never stop early (an unfinished sample may score
 * higher, or have fewer flaws than every voter so far).
 */
export function canStopEarly(method: VoteMethod, finished: readonly Candidate[], remaining: number): boolean {
  if (!decidesEarly(method)) return remaining === 0;
  const w = [...tally(method, finished).values()].map((e) => e.weight).sort((a, b) => b - a);
  const lead = w[0] ?? 0, second = w[1] ?? 0;
  return lead - second > remaining;
}
