/**
 * The router: does this prompt need the reasoning adapter? Two stages, both free of extra forward passes:
 *
 * 1. A logistic-regression probe on the base model's final hidden state at the prompt's last token (the state
 *    the prefill returns anyway, so this costs one dot product): score ≥ threshold → reason.
 * 2. Optionally, a confidence gate on the direct route (RouterGate): the direct answer is decoded, and when one
 *    of its first tokens is less likely than the gate allows, it is dropped and the request escalates to
 *    reasoning on the same prompt KV cache (answer.ts). A probe of the prompt cannot see whether the base will
 *    slip on an easy question; the answer's own token probabilities can.
 *
 * Label 1 = "needs reasoning" = the base model, answering directly and greedily, gets it wrong.
 *
 * Training: features standardised (training mean/std), full-batch gradient descent with AdamW on the mean
 * (optionally class-balanced) log loss + L2/2·|w|², deterministic. Threshold and gate are chosen jointly on
 * validation items by one of two rules (recorded in router.json; see chooseRouting):
 *
 * - 'savings' (default when the adapter is loaded): the fewest generated tokens whose routed accuracy is at
 *   most `maxLoss` (default 0) below always-reason accuracy;
 * - 'accuracy': the highest routing accuracy (predicting the label).
 *
 * Candidate thresholds are 0 (always reason), the midpoints between consecutive distinct validation scores, and
 * the midpoint between the highest score and 1; candidate gates are none and GATE_CANDIDATES.
 */
import { ropeScalingWords } from '../models/config.ts';
import fs from 'node:fs';
import type { Model } from '../runtime/model.ts';
import { checkRules, is, type Rule } from '../runtime/options.ts';
import { shown } from '../show.ts';
import { writeJson } from '../io/safetensors.ts';
import { readJsonFile } from '../io/jsonl.ts';
import { AdamW } from '../train/optim.ts';
import { checkQuestions, isCorrect, type Task } from '../tasks/grade.ts';
import { answer, answeringFor, checkNativeThinking, checkThinkingRoom, reasoningTokens, trainedWith } from './answer.ts';
import { embeddedNote } from '../models/embedded.ts';

// ---------------------------------------------------------------------------------------------------------
// Logistic probe (shared with the verifier)

export interface ProbeData { weights: number[]; bias: number; mean: number[]; std: number[] }

export class LinearProbe {
  constructor(readonly weights: Float64Array, readonly bias: number, readonly mean: Float64Array, readonly std: Float64Array) {
    if (mean.length !== weights.length || std.length !== weights.length) throw new Error(`probe: weights (${weights.length}), mean (${mean.length}) and std (${std.length}) differ in size`);
  }

  get dim(): number { return this.weights.length; }

  logit(x: ArrayLike<number>): number {
    if (x.length !== this.dim) throw new Error(`probe: feature vector has ${x.length} values, the probe expects ${this.dim} (hidden size of the model it was trained on)`);
    let z = this.bias;
    for (let i = 0; i < x.length; i++) z += this.weights[i] * ((x[i] - this.mean[i]) / this.std[i]);
    if (Number.isNaN(z)) { // a NaN would compare false with any threshold: a route or verdict taken unsaid
      const at = Array.prototype.findIndex.call(x, (v: number) => !Number.isFinite(v));
      throw new Error(`probe: the model's hidden state ${at < 0 ? 'overflows the probe' : `holds ${x[at]} at ${at} of ${x.length}`}: its forward pass overflowed or its weights are not finite`);
    }
    return z;
  }

  /** Probability of the positive class. */
  score(x: ArrayLike<number>): number { return sigmoid(this.logit(x)); }

  toJSON(): ProbeData {
    return { weights: [...this.weights], bias: this.bias, mean: [...this.mean], std: [...this.std] };
  }

  static fromJSON(d: ProbeData, where: string): LinearProbe {
    if (!d || typeof d !== 'object' || Array.isArray(d)) throw new Error(`${where}: field "probe" must be an object {weights, bias, mean, std}, got ${shown(d)}`);
    const arr = (k: keyof ProbeData) => {
      const v = d[k];
      if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) throw new Error(`${where}: field "probe.${k}" must be an array of finite numbers`);
      return Float64Array.from(v);
    };
    if (typeof d.bias !== 'number' || !Number.isFinite(d.bias)) throw new Error(`${where}: field "probe.bias" must be a finite number`);
    const weights = arr('weights'), mean = arr('mean'), std = arr('std');
    if (mean.length !== weights.length || std.length !== weights.length) throw new Error(`${where}: fields "probe.weights" (${weights.length}), "probe.mean" (${mean.length}) and "probe.std" (${std.length}) differ in size`);
    if (std.some((s) => !(s > 0))) throw new Error(`${where}: field "probe.std" must hold positive numbers (the features' standard deviations), found ${std.find((s) => !(s > 0))}`);
    return new LinearProbe(weights, d.bias, mean, std);
  }
}

export const sigmoid = (z: number): number => (z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z)));

export interface FitOptions {
  /** L2 penalty on the weights (on standardised features); default 1e-3. */
  l2?: number;
  /** Full-batch optimizer steps (default 500) and AdamW learning rate (default 0.05). */
  steps?: number;
  lr?: number;
  /** Weight the classes equally (each class's examples share half the loss). */
  balance?: boolean;
}

/** Fits a logistic regression on feature rows X and 0/1 labels y. */
export function fitProbe(X: readonly ArrayLike<number>[], y: readonly number[], o: FitOptions = {}): LinearProbe {
  const steps = fitSteps(X, y, o);
  for (let r = steps.next(); ; r = steps.next()) if (r.done) return r.value;
}

/** The stage name trainRouter and trainVerifier report the fit under (onProgress, in optimizer steps). */
export const FIT_STAGE = 'fitting the probe';

/**
 * fitProbe, letting the event loop run every ~50 ms (a Ctrl-C is heard; a fit of many steps on a large hidden size
 * takes seconds) and saying how far it is: `onStep(done, total)`.
 */
export async function fitProbeAsync(X: readonly ArrayLike<number>[], y: readonly number[], o: FitOptions = {}, onStep?: (done: number, total: number) => void): Promise<LinearProbe> {
  const steps = fitSteps(X, y, o), total = o.steps ?? 500;
  let since = Date.now();
  for (let r = steps.next(), done = 1; ; r = steps.next(), done++) { // done: the steps taken
    if (r.done) { onStep?.(total, total); return r.value; }
    if (Date.now() - since >= 50) {
      onStep?.(done, total);
      await new Promise((resolve) => setImmediate(resolve));
      since = Date.now();
    }
  }
}

/** The fit, one optimizer step per yield; returns the probe. */
function* fitSteps(X: readonly ArrayLike<number>[], y: readonly number[], o: FitOptions): Generator<void, LinearProbe> {
  const n = X.length;
  if (!n) throw new Error('probe: no training examples');
  if (y.length !== n) throw new Error(`probe: ${n} feature rows but ${y.length} labels`);
  if (!y.every((v) => v === 0 || v === 1)) throw new Error('probe: labels must be 0 or 1');
  const d = X[0].length;
  X.forEach((x, i) => { if (x.length !== d) throw new Error(`probe: feature row ${i} has ${x.length} values, row 0 has ${d}`); });
  const mean = new Float64Array(d), std = new Float64Array(d);
  for (const x of X) for (let j = 0; j < d; j++) mean[j] += x[j] / n;
  for (const x of X) for (let j = 0; j < d; j++) std[j] += (x[j] - mean[j]) ** 2 / n;
  for (let j = 0; j < d; j++) std[j] = std[j] > 1e-12 ? Math.sqrt(std[j]) : 1; // a constant feature stays 0 after centring
  const Z = new Float64Array(n * d);
  X.forEach((x, i) => { for (let j = 0; j < d; j++) Z[i * d + j] = (x[j] - mean[j]) / std[j]; });
  const pos = y.reduce((a: number, b) => a + b, 0);
  const sw = y.map((v) => (o.balance && pos > 0 && pos < n ? n / (2 * (v ? pos : n - pos)) : 1));
  const W = sw.reduce((a: number, b) => a + b, 0), l2 = o.l2 ?? 1e-3;
  const w = new Float32Array(d), b = new Float32Array(1);
  const opt = new AdamW(new Map([['w', w], ['b', b]]), { lr: o.lr ?? 0.05, weightDecay: 0 });
  const gw = new Float32Array(d), gb = new Float32Array(1), g64 = new Float64Array(d);
  for (let step = 0; step < (o.steps ?? 500); step++) {
    g64.fill(0);
    let g0 = 0;
    for (let i = 0; i < n; i++) {
      let z = b[0];
      for (let j = 0; j < d; j++) z += w[j] * Z[i * d + j];
      const g = ((sigmoid(z) - y[i]) * sw[i]) / W;
      g0 += g;
      for (let j = 0; j < d; j++) g64[j] += g * Z[i * d + j];
    }
    for (let j = 0; j < d; j++) gw[j] = g64[j] + l2 * w[j];
    gb[0] = g0;
    opt.update(new Map([['w', gw], ['b', gb]]));
    yield;
  }
  return new LinearProbe(Float64Array.from(w), b[0], mean, std);
}

// ---------------------------------------------------------------------------------------------------------
// Thresholds and metrics

/** Share of items whose prediction (score ≥ t) equals the label. */
export function accuracyAt(scores: readonly number[], labels: readonly number[], t: number): number {
  return scores.reduce((a, s, i) => a + (Number(s >= t) === labels[i] ? 1 : 0), 0) / Math.max(1, scores.length);
}

/**
 * Area under the ROC curve (probability a random positive outscores a random negative; ties count half). NaN with one
 * class. With `groups`, only pairs within a group count (verifier.ts withinItemAuc).
 */
export function auc(scores: readonly number[], labels: readonly number[], groups?: readonly number[]): number {
  let pairs = 0, wins = 0;
  scores.forEach((p, i) => {
    if (labels[i] !== 1) return;
    scores.forEach((q, k) => { if (labels[k] === 0 && groups?.[k] === groups?.[i]) { pairs++; wins += p > q ? 1 : p === q ? 0.5 : 0; } });
  });
  return pairs ? wins / pairs : NaN;
}

/**
 * 0, the midpoints between consecutive distinct scores, and one above every score: the midpoint between the
 * highest score and 1, or Infinity when the highest score is 1 (a saturated sigmoid), so "never" stays an option.
 */
export function thresholdCandidates(scores: readonly number[]): number[] {
  const s = [...new Set(scores)].sort((a, b) => a - b), out = [0];
  for (let i = 1; i < s.length; i++) out.push((s[i - 1] + s[i]) / 2);
  if (s.length) out.push(s[s.length - 1] < 1 ? (s[s.length - 1] + 1) / 2 : Infinity);
  return [...new Set(out)].sort((a, b) => a - b);
}

/** Highest routing accuracy; ties go to the lowest threshold (more reasoning). */
export function accuracyThreshold(scores: readonly number[], labels: readonly number[]): number {
  let best = 0, bestAcc = -1;
  for (const t of thresholdCandidates(scores)) {
    const a = accuracyAt(scores, labels, t);
    if (a > bestAcc + 1e-12) { best = t; bestAcc = a; }
  }
  return best;
}

/**
 * The router's second stage, on the direct route: the direct answer's own confidence. When one of its first
 * `tokens` tokens has a log-probability (under the base model, before temperature, after a repetition, presence or
 * frequency penalty: train-router fits the gate without them, so a penalty moves it) below `minLogprob`, the direct answer is dropped
 * and the request escalates to reasoning on the same prompt KV cache.
 */
export interface RouterGate { minLogprob: number; tokens: number }

/** Gate thresholds train-router tries (besides no gate). */
export const GATE_CANDIDATES = [-4, -3, -2, -1.5, -1, -0.7, -0.5, -0.4, -0.3, -0.2, -0.15, -0.1, -0.07, -0.05, -0.03, -0.02, -0.01];

/** Index of the direct-answer token that trips the gate (-1: the answer passes). */
export function gateTrip(gate: RouterGate | undefined, logprobs: readonly number[]): number {
  if (!gate) return -1;
  const n = Math.min(gate.tokens, logprobs.length);
  for (let i = 0; i < n; i++) if (logprobs[i] < gate.minLogprob) return i;
  return -1;
}

/** One validation question answered both ways: the router's score, and each route's grade and generated tokens. */
export interface RoutingRow {
  score: number;
  baseCorrect: boolean;
  /** Log-probabilities of the direct answer's tokens (the gate's input). */
  baseLogprobs: readonly number[];
  baseTokens: number;
  reasonCorrect?: boolean;
  reasonTokens?: number;
}

/**
 * How a row is answered at threshold t with a gate: reasoning when score ≥ t (the direct answer is never
 * started) or when the gate trips (the direct tokens up to the tripping one were generated first).
 */
export function routeRow(r: RoutingRow, t: number, gate?: RouterGate): { reason: boolean; escalated: boolean; correct: boolean; tokens: number } {
  if (r.score >= t) return { reason: true, escalated: false, correct: !!r.reasonCorrect, tokens: r.reasonTokens ?? 0 };
  const k = gateTrip(gate, r.baseLogprobs);
  if (k < 0) return { reason: false, escalated: false, correct: r.baseCorrect, tokens: r.baseTokens };
  return { reason: true, escalated: true, correct: !!r.reasonCorrect, tokens: k + 1 + (r.reasonTokens ?? 0) };
}

export interface RoutingStats { accuracy: number; routingAccuracy: number; reasoningShare: number; escalatedShare: number; meanTokens: number }

/** Routed accuracy, routing accuracy (reasoning ⇔ the direct answer is wrong), shares and mean generated tokens. */
export function routingStats(rows: readonly RoutingRow[], t: number, gate?: RouterGate): RoutingStats {
  const st = { accuracy: 0, routingAccuracy: 0, reasoningShare: 0, escalatedShare: 0, meanTokens: 0 }, n = Math.max(1, rows.length);
  for (const r of rows) {
    const x = routeRow(r, t, gate);
    st.accuracy += +x.correct / n; st.routingAccuracy += +(x.reason === !r.baseCorrect) / n;
    st.reasoningShare += +x.reason / n; st.escalatedShare += +x.escalated / n; st.meanTokens += x.tokens / n;
  }
  return st;
}

/**
 * Threshold and gate for a rule, searched jointly over the thresholds of `thresholdCandidates` and `gates`
 * (undefined = no gate):
 * - savings: the fewest generated tokens (direct attempts included) among the choices whose routed accuracy
 *   is at most maxLoss below always-reason accuracy; ties to the higher accuracy, then to the earlier gate;
 * - accuracy: the highest routing accuracy; ties to the fewest reasoning calls, then to the earlier gate.
 */
export function chooseRouting(rows: readonly RoutingRow[], rule: ThresholdRule, gates: readonly (RouterGate | undefined)[] = [undefined]): { threshold: number; gate?: RouterGate; stats: RoutingStats } {
  const always = routingStats(rows, 0).accuracy;
  let best: { threshold: number; gate?: RouterGate; stats: RoutingStats } | undefined;
  const better = (a: RoutingStats, b: RoutingStats) => rule.name === 'savings'
    ? a.meanTokens < b.meanTokens - 1e-9 || (Math.abs(a.meanTokens - b.meanTokens) <= 1e-9 && a.accuracy > b.accuracy + 1e-12)
    : a.routingAccuracy > b.routingAccuracy + 1e-12 || (Math.abs(a.routingAccuracy - b.routingAccuracy) <= 1e-12 && a.reasoningShare < b.reasoningShare - 1e-12);
  const thresholds = thresholdCandidates(rows.map((r) => r.score));
  for (const gate of gates) {
    for (const t of thresholds) {
      const stats = routingStats(rows, t, gate);
      if (rule.name === 'savings' && stats.accuracy < always - rule.maxLoss - 1e-12) continue;
      if (!best || better(stats, best.stats)) best = { threshold: t, ...(gate ? { gate } : {}), stats };
    }
  }
  return best!; // t = 0 (always reason) always qualifies
}

// ---------------------------------------------------------------------------------------------------------
// Router and its file

export type ThresholdRule = { name: 'accuracy' } | { name: 'savings'; maxLoss: number };

export interface ProbeFile {
  format: string;
  version: 1;
  kind: 'logistic';
  /** What the features are (documentation for readers of the file). */
  features: string;
  hiddenSize: number;
  probe: ProbeData;
  threshold: number;
  metadata: Record<string, unknown>;
}

export interface RouterFile extends ProbeFile { format: 'edgereason-router'; rule: ThresholdRule; gate?: RouterGate }

export const ROUTER_FEATURES = 'final hidden state (after the final norm) of the last prompt token, base model (adapter off), chat-templated prompt';

export class Router {
  constructor(readonly probe: LinearProbe, public threshold: number, readonly rule: ThresholdRule = { name: 'accuracy' }, readonly metadata: Record<string, unknown> = {}, public gate?: RouterGate) {}

  /** Probability that the prompt needs reasoning, from the base model's final hidden state of its last token. */
  score(hidden: ArrayLike<number>): number { return this.probe.score(hidden); }
  /** The probe's decision alone: false can still end in reasoning when the gate rejects the direct answer (answer.ts). */
  needsReasoning(hidden: ArrayLike<number>): boolean { return this.score(hidden) >= this.threshold; }

  toJSON(): RouterFile {
    return { format: 'edgereason-router', version: 1, kind: 'logistic', features: ROUTER_FEATURES, hiddenSize: this.probe.dim, probe: this.probe.toJSON(), threshold: this.threshold, rule: this.rule, ...(this.gate ? { gate: this.gate } : {}), metadata: this.metadata };
  }

  save(file: string): void { writeJson(file, this.toJSON(), 1); }

  /** Reads router.json; with `hiddenSize`, checks it matches the model it will route for. */
  static load(file: string, hiddenSize?: number): Router {
    const d = readProbeFile(file, 'edgereason-router', hiddenSize) as RouterFile;
    if (d.rule !== undefined && !['savings', 'accuracy'].includes(d.rule?.name)) throw new Error(`${file}: field "rule.name" must be "savings" or "accuracy", got ${shown(d.rule?.name)}`);
    const maxLoss = d.rule?.name === 'savings' ? d.rule.maxLoss ?? 0 : 0;
    if (!(typeof maxLoss === 'number' && Number.isFinite(maxLoss) && maxLoss >= 0)) throw new Error(`${file}: field "rule.maxLoss" must be a number ≥ 0, got ${shown((d.rule as { maxLoss?: unknown }).maxLoss)}`);
    const rule = d.rule?.name === 'savings' ? { name: 'savings' as const, maxLoss } : { name: 'accuracy' as const };
    const g = d.gate ?? undefined; // null: no gate
    if (g !== undefined && (typeof g?.minLogprob !== 'number' || !Number.isFinite(g.minLogprob) || g.minLogprob > 0 || !Number.isInteger(g.tokens) || g.tokens < 1)) {
      throw new Error(`${file}: field "gate" must be {"minLogprob": a log-probability ≤ 0, "tokens": integer ≥ 1} or null, got ${shown(g)}`);
    }
    return new Router(LinearProbe.fromJSON(d.probe, file), d.threshold, rule, d.metadata ?? {}, g && { minLogprob: g.minLogprob, tokens: g.tokens });
  }
}


export function readProbeFile(file: string, format: string, hiddenSize?: number): ProbeFile {
  const what = format.replace(/^edgereason-/, ''); // router, verifier
  if (typeof file !== 'string' || !file) throw new Error(`${what}: load takes the path of a ${what} JSON file, got ${shown(file)}`);
  if (hiddenSize !== undefined && !(Number.isInteger(hiddenSize) && hiddenSize > 0)) throw new Error(`${what}: hiddenSize must be the model's hidden size (a positive integer, model.config.hiddenSize), got ${shown(hiddenSize)}`);
  if (!fs.existsSync(file)) throw new Error(`${what}: ${file} not found${embeddedNote(file)}`);
  const d = readJsonFile(file) as ProbeFile;
  if (d?.format !== format) throw new Error(`${file}: field "format" is ${JSON.stringify(d?.format)}, expected "${format}"`);
  if (d.version !== 1) throw new Error(`${file}: unsupported version ${JSON.stringify(d.version)} (this edgereason reads version 1)`);
  if (d.kind !== 'logistic') throw new Error(`${file}: unsupported kind ${JSON.stringify(d.kind)} (expected "logistic")`);
  // null: "never" (JSON's Infinity; chosen when the top training score is a saturated 1)
  if (d.threshold === null) d.threshold = Infinity;
  else if (typeof d.threshold !== 'number' || !(d.threshold >= 0 && d.threshold <= 1)) throw new Error(`${file}: field "threshold" must be a probability in [0, 1] (or null: never), got ${shown(d.threshold)}`);
  if (d.metadata !== undefined && (d.metadata === null || typeof d.metadata !== 'object' || Array.isArray(d.metadata))) throw new Error(`${file}: field "metadata" must be an object, got ${shown(d.metadata)}`);
  if (d.metadata?.nativeThinking !== undefined && typeof d.metadata.nativeThinking !== 'boolean') throw new Error(`${file}: field "metadata.nativeThinking" must be true or false, got ${shown(d.metadata.nativeThinking)}`);
  if (!Number.isInteger(d.hiddenSize) || d.hiddenSize <= 0) throw new Error(`${file}: field "hiddenSize" must be a positive integer (the model's hidden size), got ${shown(d.hiddenSize)}`);
  if (hiddenSize !== undefined && d.hiddenSize !== hiddenSize) throw new Error(`${file} was trained on hidden states of size ${d.hiddenSize}, this model's is ${hiddenSize}: train it for this model`);
  const w = (d.probe as { weights?: unknown })?.weights;
  if (Array.isArray(w) && w.length !== d.hiddenSize) throw new Error(`${file}: field "probe.weights" has ${w.length} values, "hiddenSize" says ${d.hiddenSize}`);
  return d;
}

// ---------------------------------------------------------------------------------------------------------
// Training on a model

export interface LabelItem { question: string; gold: string | number; task: Task; category?: string }

/** `cut`: the answer reached maxTokens (graded as it stands). */
export interface BaseOutcome { hidden: Float32Array; correct: boolean; text: string; logprobs: number[]; cut: boolean }

/** Greedy direct answers of the base model (adapter off): the prompt's hidden state, the answer's token log-probabilities, whether it was right. */
export async function baseOutcomes(model: Model, items: readonly LabelItem[], o: { maxTokens?: number; nativeThinking?: boolean; onItem?: (done: number) => void } = {}): Promise<BaseOutcome[]> {
  const out: BaseOutcome[] = [];
  for (const it of items) {
    const r = await answer(model, it.question, { reasoning: 'off', maxTokens: o.maxTokens ?? 64, task: it.task, collectHidden: true, nativeThinking: o.nativeThinking }).catch(answeringFor('router'));
    out.push({ hidden: r.promptHidden!, correct: isCorrect(it.task, r.answer, it.gold), text: r.answer, logprobs: r.samples[0].logprobs ?? [], cut: r.finishReason === 'length' });
    o.onItem?.(out.length);
  }
  return out;
}

/** Greedy single-sample reasoning answers (adapter on from the invocation): whether each was right, its generated tokens, whether it reached maxTokens. */
export async function reasoningOutcomes(model: Model, items: readonly LabelItem[], o: { maxTokens?: number; maxThinkingTokens?: number; nativeThinking?: boolean; onItem?: (done: number) => void } = {}): Promise<{ correct: boolean; tokens: number; cut: boolean }[]> {
  const out: { correct: boolean; tokens: number; cut: boolean }[] = [];
  for (const it of items) {
    const r = await answer(model, it.question, { reasoning: 'on', maxTokens: o.maxTokens ?? 512, maxThinkingTokens: o.maxThinkingTokens, task: it.task, nativeThinking: o.nativeThinking }).catch(answeringFor('router'));
    out.push({ correct: isCorrect(it.task, r.answer, it.gold), tokens: r.usage.completionTokens, cut: r.finishReason === 'length' });
    o.onItem?.(out.length);
  }
  return out;
}

export interface TrainRouterOptions extends FitOptions {
  /** Validation items for the threshold (default: the last valFraction of `items`). */
  val?: LabelItem[];
  valFraction?: number;
  /** Threshold rule (default 'savings' when the model has its adapter, else 'accuracy') and its tolerance (default 0). */
  rule?: 'accuracy' | 'savings';
  maxLoss?: number;
  /** Search a confidence gate on the direct answer (default true) over its first `gateTokens` tokens (default 16). */
  gate?: boolean;
  gateTokens?: number;
  /** Token limits for the direct (default 64) and reasoning (default 512) answers used for labels. */
  maxTokens?: number;
  reasoningMaxTokens?: number;
  maxThinkingTokens?: number;
  /** The model thinks by itself (answer()'s nativeThinking): both routes run on its own weights, no adapter. */
  nativeThinking?: boolean;
  metadata?: Record<string, unknown>;
  onProgress?: (stage: string, done: number, total: number) => void;
}

export interface RouterReport {
  rule: ThresholdRule;
  threshold: number;
  gate?: RouterGate;
  train: { n: number; positives: number; accuracy: number; auc: number };
  val: {
    n: number; positives: number; auc: number; routingAccuracy: number; baseAccuracy: number; reasoningShare: number; escalatedShare: number;
    reasoningAccuracy?: number; routedAccuracy?: number; meanTokens?: number; alwaysReasonTokens?: number;
  };
  /** Answers cut off at their token limit, graded as they stand: direct ones (training and validation), reasoning ones (validation). */
  cut: { direct: number; reasoning: number };
}

/**
 * The inputs every probe training takes (trainRouter, trainVerifier), checked before any answer is generated:
 * labelled items, the split, the fit's settings, callbacks; `extra` names the trainer's own options. Returns the
 * split: `val` as given, else the last `valFraction` (default 0.2) of the items.
 */
export function checkProbeTraining(items: readonly LabelItem[], o: TrainRouterOptions | Record<string, unknown>, extra: Record<string, Rule>, where: string): { train: LabelItem[]; val: LabelItem[] } {
  checkRules(o, { ...PROBE_RULES, ...extra }, where);
  const given = o as { val?: readonly LabelItem[]; valFraction?: number };
  for (const [name, list] of [['items', items], ['val', given.val]] as const) {
    if (list !== undefined || name === 'items') checkQuestions(list, { list: `${name} must be a list of { question, gold, task }`, item: (i) => `${name}[${i}]`, shape: 'question: string, gold: string or number' }, where);
  }
  const k = given.val ? 0 : Math.round(items.length * (given.valFraction ?? 0.2));
  const train = items.slice(0, items.length - k), val = given.val ? [...given.val] : items.slice(items.length - k);
  if (!train.length || !val.length) throw new Error(`${where}: need training and validation items (got ${train.length} and ${val.length})`);
  return { train, val };
}

/** The options every probe training takes; `val` is checked item by item by checkQuestions. */
const PROBE_RULES: Record<string, Rule> = {
  val: { what: 'a list', ok: () => true }, valFraction: { what: 'between 0 and 1', ok: (v) => is.share.ok(v) && v !== 0 && v !== 1 }, l2: is.atLeast0,
  steps: is.int(1), lr: is.above0, balance: is.bool, metadata: is.object, onProgress: is.fn, maxTokens: is.int(1), maxThinkingTokens: is.int(0), nativeThinking: is.bool,
};

export async function trainRouter(model: Model, items: readonly LabelItem[], o: TrainRouterOptions = {}): Promise<{ router: Router; report: RouterReport }> {
  const { train, val } = checkProbeTraining(items, o, {
    rule: is.oneOf(['accuracy', 'savings']), maxLoss: { ...is.share, what: 'a share between 0 and 1 (0.01 = one point of accuracy)' }, gate: is.bool, gateTokens: is.int(1), reasoningMaxTokens: is.int(1),
  }, 'router');
  const reasons = !!model.adapter || !!o.nativeThinking;
  if (o.nativeThinking) checkNativeThinking(model, 'router');
  const ruleName = o.rule ?? (reasons ? 'savings' : 'accuracy');
  if (ruleName === 'savings' && !reasons) throw new Error('router: the savings rule needs the reasoning adapter, or nativeThinking for a model that thinks by itself (to measure always-reason accuracy)');
  const gateTokens = o.gateTokens ?? 16;
  if (ruleName === 'savings' && o.maxThinkingTokens !== undefined) checkThinkingRoom(reasoningTokens(model), o.maxThinkingTokens, o.reasoningMaxTokens ?? 512, 'router', 'reasoningMaxTokens', o.reasoningMaxTokens === undefined); // before any answer
  const progress = (stage: string, total: number) => (d: number) => o.onProgress?.(stage, d, total);
  const tr = await baseOutcomes(model, train, { maxTokens: o.maxTokens, nativeThinking: o.nativeThinking, onItem: progress('base answers (train)', train.length) });
  const va = await baseOutcomes(model, val, { maxTokens: o.maxTokens, nativeThinking: o.nativeThinking, onItem: progress('base answers (val)', val.length) });
  const yTr = tr.map((r) => (r.correct ? 0 : 1)), yVa = va.map((r) => (r.correct ? 0 : 1));
  const probe = await fitProbeAsync(tr.map((r) => r.hidden), yTr, o, (d, t) => o.onProgress?.(FIT_STAGE, d, t));
  const sTr = tr.map((r) => probe.score(r.hidden)), sVa = va.map((r) => probe.score(r.hidden));
  const reasonOk = ruleName === 'savings'
    ? await reasoningOutcomes(model, val, { maxTokens: o.reasoningMaxTokens, maxThinkingTokens: o.maxThinkingTokens, nativeThinking: o.nativeThinking, onItem: progress('reasoning answers (val)', val.length) })
    : undefined;
  const rows: RoutingRow[] = va.map((r, i) => ({
    score: sVa[i], baseCorrect: r.correct, baseLogprobs: r.logprobs, baseTokens: r.logprobs.length,
    ...(reasonOk ? { reasonCorrect: reasonOk[i].correct, reasonTokens: reasonOk[i].tokens } : {}),
  }));
  const rule: ThresholdRule = ruleName === 'savings' ? { name: 'savings', maxLoss: o.maxLoss ?? 0 } : { name: 'accuracy' };
  const gates = [undefined, ...(o.gate ?? true ? GATE_CANDIDATES.map((minLogprob) => ({ minLogprob, tokens: gateTokens })) : [])];
  const { threshold, gate, stats } = chooseRouting(rows, rule, gates);
  const mean = (xs: number[]) => xs.reduce((a: number, b) => a + b, 0) / Math.max(1, xs.length);
  const report: RouterReport = {
    rule, threshold, ...(gate ? { gate } : {}),
    train: { n: train.length, positives: yTr.reduce((a: number, b) => a + b, 0), accuracy: accuracyAt(sTr, yTr, threshold), auc: auc(sTr, yTr) },
    val: {
      n: val.length, positives: yVa.reduce((a: number, b) => a + b, 0), auc: auc(sVa, yVa), routingAccuracy: stats.routingAccuracy,
      baseAccuracy: mean(va.map((r) => (r.correct ? 1 : 0))), reasoningShare: stats.reasoningShare, escalatedShare: stats.escalatedShare,
      ...(reasonOk ? {
        reasoningAccuracy: mean(reasonOk.map((r) => +r.correct)), routedAccuracy: stats.accuracy,
        meanTokens: stats.meanTokens, alwaysReasonTokens: mean(reasonOk.map((r) => r.tokens)),
      } : {}),
    },
    cut: { direct: [...tr, ...va].filter((r) => r.cut).length, reasoning: reasonOk?.filter((r) => r.cut).length ?? 0 },
  };
  const router = new Router(probe, threshold, rule, {
    // what it was trained on: the path the model was loaded from, unless the metadata says
    model: model.names[0], ...o.metadata, hiddenSize: probe.dim, l2: o.l2 ?? 1e-3, steps: o.steps ?? 500, balance: !!o.balance,
    adapter: model.adapter?.dir, ...trainedWith(model), ropeScaling: ropeScalingWords(model.config.ropeScaling), ...(o.nativeThinking ? { nativeThinking: true } : {}), report, createdAt: new Date().toISOString(),
  }, gate);
  return { router, report };
}
