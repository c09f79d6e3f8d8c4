/**
 * The verifier: how likely is a finished candidate to be correct? A logistic-regression probe (router.ts's
 * LinearProbe) on the final hidden state at the candidate's last token. That state comes back from the decode
 * step that sampled the stop token, so scoring needs no extra forward pass. Trained on N sampled candidates
 * per question, labelled correct / incorrect by the task's grader; classes are balanced by default (a good
 * adapter is right far more often than not).
 *
 * verifier.json: the probe, a threshold (the validation-accuracy-maximising one, for accept/reject uses; the
 * votes use the raw scores) and metadata with the validation report.
 */
import { ropeScalingWords } from '../models/config.ts';
import type { Model } from '../runtime/model.ts';
import { isCorrect } from '../tasks/grade.ts';
import { answer, answeringFor, checkNativeThinking, checkThinkingRoom, reasoningTokens, trainedWith } from './answer.ts';
import { majorityVote, verifierBestOfN, verifierVote, type Candidate } from './vote.ts';
import { accuracyAt, accuracyThreshold, auc, checkProbeTraining, FIT_STAGE, fitProbeAsync, LinearProbe, readProbeFile, type FitOptions, type LabelItem, type ProbeFile } from './router.ts';
import { writeJson } from '../io/safetensors.ts';
import { is } from '../runtime/options.ts';

export const VERIFIER_FEATURES = 'final hidden state (after the final norm) at the candidate\'s last token (the step that sampled its stop token), on the reasoning route (adapter on, or the model\'s own thinking)';

export interface VerifierFile extends ProbeFile { format: 'edgereason-verifier' }

export class Verifier {
  constructor(readonly probe: LinearProbe, public threshold = 0.5, readonly metadata: Record<string, unknown> = {}) {}

  /** Probability that the candidate ending in this hidden state is correct. */
  score(hidden: ArrayLike<number>): number { return this.probe.score(hidden); }

  toJSON(): VerifierFile {
    return { format: 'edgereason-verifier', version: 1, kind: 'logistic', features: VERIFIER_FEATURES, hiddenSize: this.probe.dim, probe: this.probe.toJSON(), threshold: this.threshold, metadata: this.metadata };
  }

  save(file: string): void { writeJson(file, this.toJSON(), 1); }

  static load(file: string, hiddenSize?: number): Verifier {
    const d = readProbeFile(file, 'edgereason-verifier', hiddenSize);
    return new Verifier(LinearProbe.fromJSON(d.probe, file), d.threshold, d.metadata ?? {});
  }
}

/** One sampled candidate: its features, grade and vote key. */
export interface ScoredCandidate { item: number; sample: number; hidden: Float32Array; correct: boolean; extracted?: string; meanLogprob: number; capped?: boolean }

export interface SampleOptions {
  samples?: number;
  temperature?: number;
  topP?: number;
  maxTokens?: number;
  maxThinkingTokens?: number;
  seed?: number;
  /** The model thinks by itself (answer()'s nativeThinking): no adapter. */
  nativeThinking?: boolean;
  onItem?: (done: number) => void;
}

/**
 * N reasoning samples per item (forked from one prefill), each with its final hidden state and grade: those that end
 * by themselves; `cut` counts those that reached maxTokens.
 */
export async function sampleCandidates(model: Model, items: readonly LabelItem[], o: SampleOptions = {}): Promise<ScoredCandidate[] & { cut: number }> {
  const out = Object.assign([] as ScoredCandidate[], { cut: 0 });
  for (let k = 0; k < items.length; k++) {
    const it = items[k];
    const r = await answer(model, it.question, {
      reasoning: 'on', samples: o.samples ?? 8, temperature: o.temperature ?? 0.8, topP: o.topP ?? 0.95, seed: (o.seed ?? 0) + 1000 * k,
      maxTokens: o.maxTokens ?? 512, maxThinkingTokens: o.maxThinkingTokens, task: it.task, collectHidden: true, nativeThinking: o.nativeThinking,
    }).catch(answeringFor('verifier'));
    // Only candidates that end by themselves after closing their thinking, the ones answer() scores: a cut-off one's
    // state is not at an end.
    r.samples.forEach((s, i) => {
      if (s.finishReason === 'length') out.cut++;
      if (s.hidden && s.finishReason === 'stop' && s.answerTokens > 0) out.push({ item: k, sample: i, hidden: s.hidden, correct: isCorrect(it.task, s.answer, it.gold), extracted: s.extracted, meanLogprob: s.meanLogprob, capped: s.capped });
    });
    o.onItem?.(k + 1);
  }
  return out;
}

/** onProgress reports the sampling of both sets (SampleOptions' onItem, one set's count, is not taken). */
export interface TrainVerifierOptions extends FitOptions, Omit<SampleOptions, 'onItem'> {
  val?: LabelItem[];
  valFraction?: number;
  metadata?: Record<string, unknown>;
  onProgress?: (stage: string, done: number, total: number) => void;
}

export interface VerifierReport {
  threshold: number;
  /** `cut`: samples that reached maxTokens, left out of the candidates. */
  train: { items: number; candidates: number; cut: number; positives: number; accuracy: number; auc: number };
  /** Per validation item: share answered correctly by the first sample, majority vote, best-of-N and verifier-weighted vote. */
  val: {
    items: number; candidates: number; cut: number; positives: number; accuracy: number; auc: number;
    /** AUC within a question: how often a right candidate outscores a wrong one of the same question (what choosing among samples needs). */
    withinItemAuc: number;
    firstSample: number; majority: number; bestOfN: number; verifierVote: number; oracle: number;
  };
}

export async function trainVerifier(model: Model, items: readonly LabelItem[], o: TrainVerifierOptions = {}): Promise<{ verifier: Verifier; report: VerifierReport }> {
  const { train, val } = checkProbeTraining(items, o, { samples: is.int(1), temperature: is.atLeast0, topP: is.share, seed: is.seed }, 'verifier');
  const same = o.temperature === 0 ? 'temperature 0' : o.topP === 0 ? 'topP 0' : undefined;
  if (same && (o.samples ?? 8) > 1) throw new Error(`verifier: ${same} draws the most likely token every time, so the ${o.samples ?? 8} candidates of a question would all be the same; the verifier learns from candidates that differ: sample with a temperature and topP above 0`);
  if (!model.adapter && !o.nativeThinking) throw new Error('verifier: the model must be loaded with its reasoning adapter (the adapter option of loadModel), or nativeThinking set for a model that thinks by itself');
  if (o.nativeThinking) checkNativeThinking(model, 'verifier');
  if (o.maxThinkingTokens !== undefined) checkThinkingRoom(reasoningTokens(model), o.maxThinkingTokens, o.maxTokens ?? 512, 'verifier', 'maxTokens', o.maxTokens === undefined); // before any sampling
  const tr = await sampleCandidates(model, train, { ...o, onItem: (d) => o.onProgress?.('samples (train)', d, train.length) });
  const va = await sampleCandidates(model, val, { ...o, seed: (o.seed ?? 0) + 7919, onItem: (d) => o.onProgress?.('samples (val)', d, val.length) });
  for (const [set, items, n] of [['training', train, tr.length], ['validation', val, va.length]] as const) {
    if (!n) throw new Error(`verifier: no sample of the ${items.length} ${set} items ended by itself after its thinking (every one was cut at maxTokens ${o.maxTokens ?? 512}, or never closed its thinking), so there is nothing to score: raise maxTokens, or ${o.maxThinkingTokens === undefined ? 'cap the thinking with maxThinkingTokens' : 'lower maxThinkingTokens'}`);
  }
  const yTr = tr.map((c) => (c.correct ? 1 : 0)), yVa = va.map((c) => (c.correct ? 1 : 0));
  const probe = await fitProbeAsync(tr.map((c) => c.hidden), yTr, { ...o, balance: o.balance ?? true }, (d, t) => o.onProgress?.(FIT_STAGE, d, t));
  const sTr = tr.map((c) => probe.score(c.hidden)), sVa = va.map((c) => probe.score(c.hidden));
  const threshold = accuracyThreshold(sVa, yVa);

  // Voting on the validation items with these scores.
  const perItem = new Map<number, { c: Candidate; ok: boolean; sample: number }[]>();
  va.forEach((c, i) => {
    const l = perItem.get(c.item) ?? [];
    l.push({ c: { extracted: c.extracted, meanLogprob: c.meanLogprob, verifierScore: sVa[i], capped: c.capped }, ok: c.correct, sample: c.sample }); // voted as answer() votes
    perItem.set(c.item, l);
  });
  const share = (pick: (l: { c: Candidate; ok: boolean; sample: number }[]) => boolean) => [...perItem.values()].filter(pick).length / Math.max(1, val.length);
  const okOf = (l: { c: Candidate; ok: boolean }[], chosen: number) => l[chosen]?.ok ?? false;
  const report: VerifierReport = {
    threshold,
    train: { items: train.length, candidates: tr.length, cut: tr.cut, positives: yTr.reduce((a: number, b) => a + b, 0), accuracy: accuracyAt(sTr, yTr, threshold), auc: auc(sTr, yTr) },
    val: {
      items: val.length, candidates: va.length, cut: va.cut, positives: yVa.reduce((a: number, b) => a + b, 0), accuracy: accuracyAt(sVa, yVa, threshold), auc: auc(sVa, yVa),
      withinItemAuc: withinItemAuc(va.map((c) => c.item), sVa, yVa),
      firstSample: share((l) => l.find((x) => x.sample === 0)?.ok ?? false), // sample 0 cut off: not right
      majority: share((l) => okOf(l, majorityVote(l.map((x) => x.c)).chosen)),
      bestOfN: share((l) => okOf(l, verifierBestOfN(l.map((x) => x.c)).chosen)),
      verifierVote: share((l) => okOf(l, verifierVote(l.map((x) => x.c)).chosen)),
      oracle: share((l) => l.some((x) => x.ok)),
    },
  };
  const verifier = new Verifier(probe, threshold, {
    // what it was trained on: the path the model was loaded from, unless the metadata says
    model: model.names[0], ...o.metadata, hiddenSize: probe.dim, samples: o.samples ?? 8, temperature: o.temperature ?? 0.8, l2: o.l2 ?? 1e-3, steps: o.steps ?? 500,
    ...(model.adapter ? { adapter: model.adapter.dir } : { nativeThinking: true }), ...trainedWith(model), ropeScaling: ropeScalingWords(model.config.ropeScaling), report, createdAt: new Date().toISOString(),
  });
  return { verifier, report };
}

/** Within each group (question), the share of (right, wrong) candidate pairs where the right one scores higher (ties half); NaN with no such pair. */
export const withinItemAuc = (groups: readonly number[], scores: readonly number[], labels: readonly number[]): number => auc(scores, labels, groups);
