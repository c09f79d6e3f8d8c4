/**
 * Efficient-reasoning benchmark on the embedded default model (models/default + reasoning-adapter + router.json +
 * verifier.json), or any model given by flags:
 *
 * 1. TTFT of the reasoning turn vs prompt length (64 / 256 / 1024 tokens, the prompt padded with a long system
 *    message): activated LoRA reusing the base prefill (router pass, then the invocation on the same KV cache)
 *    vs the same adapter weights treated as a classic LoRA (router pass, then the prompt encoded again with the
 *    adapter on everywhere); the base model's direct TTFT for reference. Median of `ttftReps` runs (default 15:
 *    a reasoning turn costs well under a millisecond, so single runs are noise) after a warm-up.
 * 2. Routing on the synthetic test split: router accuracy (label: the greedy direct answer is wrong), share of
 *    easy + chat questions answered without the adapter, accuracy and mean latency of routed vs always-reason
 *    (and base only). Every question is answered three times (greedy): directly, always reasoning, and routed
 *    (reasoning "auto": its own answer and latency, escalations included).
 * 3. Parallel samples N = 1, 2, 4, 8 on the hard items of the synthetic test split (or, --parallel-split val, of
 *    the validation split, which no probe was trained on): accuracy by majority, confidence, verifier
 *    best-of-N, verifier-weighted vote and the checked vote (check.ts), against one greedy answer, with the
 *    paired standard error of each vote's gain over it at the largest N. One N = max run per question: sample i
 *    has seed + i, so its first N samples are the N-sample run (test/reason.test.ts checks forked = single
 *    decoding). Wall time of N vs 1 at the same tokens per sample: one prefill, fork N, decode a fixed number of
 *    tokens (stop tokens off).
 *
 * 4. With --shape-timing: the same wall-time comparison on random weights in Qwen2.5-0.5B's shape, fp32 and q4.
 *
 * Writes bench/results/reasoning-<date>.json, .md, -accuracy-vs-n.svg, -ttft.svg and -latency-vs-mix.svg.
 *
 *   node --import tsx bench/reasoning.ts [--model dir] [--adapter dir] [--router f] [--verifier f]
 *     [--router-items 100] [--parallel-items 60] [--temperature 0.8] [--parallel-split test|val] [--reps 9] [--max-tokens 384] [--shape-timing] [--no-write]
 *   node --import tsx bench/reasoning.ts --report bench/results/reasoning-<date>.json   (the .md and plots again, no run)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, type Model } from '../src/runtime/model.ts';
import { decode, Sequence } from '../src/runtime/generate.ts';
import type { SamplingParams } from '../src/runtime/sampler.ts';
import { answer, prefill, reasoningTokens } from '../src/reason/answer.ts';
import { LinearProbe, Router, type RouterGate } from '../src/reason/router.ts';
import { Verifier } from '../src/reason/verifier.ts';
import { vote, type Candidate } from '../src/reason/vote.ts';
import type { AnswerResult, VoteMethod } from '../src/reason/types.ts';
import { syntheticCases, type EvalCase } from '../src/eval/harness.ts';
import { isCorrect } from '../src/tasks/grade.ts';
import { defaultModel, defaultModelFiles } from '../src/models/embedded.ts';
import { SYSTEM_PROMPT } from '../src/tasks/synthetic.ts';
import { lineChart, writeSvg } from '../src/eval/plot.ts';
import type { ChatMessage } from '../src/tokenizer/types.ts';
import { StagedProgress } from '../src/train/progress.ts';
import { isMainModule } from '../src/main-module.ts';
import { freshStem, median, scriptArgs, writeResults } from './write.ts';
import type { Quant } from '../src/onnx/quant.ts';
import { quantArg } from '../src/cli/main.ts';

export interface ReasoningBenchOptions {
  model?: string;
  adapter?: string;
  /** router.json / verifier.json (default beside the model); sections needing a missing one are skipped. */
  router?: string;
  verifier?: string;
  quant?: Quant;
  threads?: number;
  promptLengths?: number[];
  /**
   * Rounds of the parallel wall times (best of them; default 9 on the model benched, 3 on the Qwen2.5-0.5B shape,
   * whose rounds take seconds). With 3 on the default model, its N = 8 ratio at 64 tokens moved 1.6–2.1× run to run
   * on the 2-core VM; with 9, 1.66–1.70×.
   */
  reps?: number;
  /** Runs per TTFT measurement (median; default 15). */
  ttftReps?: number;
  routerItems?: number;
  /** Sampling temperature of the routing section's answers (default 0: greedy; top-p as `topP`, seed per question). */
  routerTemperature?: number;
  parallelItems?: number;
  /** Split the parallel section's hard questions come from (default test; val = questions no probe was trained on). */
  parallelSplit?: 'test' | 'val';
  samples?: number[];
  temperature?: number;
  topP?: number;
  /** Min-p of the sampled answers (default none). */
  minP?: number;
  /** Tokens per answer (thinking + answer) and the thinking cap, for sections 2 and 3. */
  maxTokens?: number;
  maxThinkingTokens?: number;
  /** Tokens per sample in the wall-time comparison (default 64 and 160: the hard items' samples average ≈ 165–176). */
  timingTokens?: number[];
  seed?: number;
  /** Also time parallel samples on random weights in Qwen2.5-0.5B's shape, fp32 and q4 (minutes; ~3 GB of cache under the temp folder). */
  shapeTiming?: boolean;
  /** Where reasoning-<date>.* go (default bench/results); null = do not write. */
  resultsDir?: string | null;
  log?: (line: string) => void;
}

/**
 * Wall time of N forked samples at the same tokens per sample: per N the best round's ms and its ratio to N = 1's
 * best; `rounds`: the lowest and highest of the rounds' own ratios to N = 1 (the machine's noise).
 */
export type WallTime = { samples: number; ms: number; ratio: number; tokensPerSample: number; rounds?: [number, number] }[];

export interface RoutingSummary {
  n: number; routerAccuracy: number; reasoningShare: number; easyChatDirectShare: number; easyChatN: number;
  /** Share sent to reasoning by the router's gate after a direct attempt (part of reasoningShare). */
  escalatedShare: number;
  /** The probe alone (score ≥ threshold, no gate), from the same direct and reasoning runs. */
  probeOnly?: { routerAccuracy: number; accuracy: number; latencyRatio: number };
  /**
   * Routing accuracy of an oracle that knows each item's category and reasons on every medium and hard item: the
   * label (greedy direct answer wrong) also counts the base's lucky direct hits, which no probe of the prompt sees.
   */
  categoryOracleAccuracy: number;
  /**
   * Routing accuracy against each query's category, the split's own ground truth: easy and chat questions should be
   * answered directly, medium and hard ones with reasoning (whatever the base's greedy answer happened to be).
   */
  categoryAccuracy: number;
  /** Routing errors by category and kind: "hard: reasoned, direct right", "easy: escalated, direct right", "easy: direct, wrong". */
  errors?: Record<string, number>;
  accuracy: { base: number; alwaysReason: number; routed: number };
  meanLatencyMs: { base: number; alwaysReason: number; routed: number };
  latencyRatio: number;
  meanTokens: { alwaysReason: number; routed: number };
}

const METHODS: VoteMethod[] = ['majority', 'confidence', 'verifier', 'verifier-vote', 'checked'];

export interface ReasoningBenchResult {
  date: string;
  model: { path: string; adapter: string; router?: string; verifier?: string; hiddenSize: number; layers: number; context: number };
  settings: Record<string, unknown>;
  ttft: {
    targetTokens: number; promptTokens: number; sharedKvMs: number; classicMs: number; baseDirectMs: number; saving: number;
    /** The reasoning turn's own cost over the base prefill the router needs anyway: (shared − base) / (classic − base). */
    turnCostRatio: number;
  }[];
  /** Routing over the whole test mix; `issueMix`: the same rows without the medium items (easy, hard and chat). */
  routing?: RoutingSummary & {
    threshold: number;
    gate?: RouterGate;
    issueMix: RoutingSummary;
    byCategory: Record<string, { n: number; directShare: number; base: number; alwaysReason: number; routed: number; latencyMs: { base: number; alwaysReason: number; routed: number } }>;
  };
  parallel?: {
    /** Split of the hard questions (older results have none: test). */
    split?: 'test' | 'val'; n: number; samples: number[];
    accuracy: Record<string, Record<string, number>>;
    /** One greedy sample (answer()'s single answer, the same items; older results have none). */
    greedy?: number;
    /** Per vote, the standard error of its gain over greedy at the largest N, paired per item (older results have none). */
    gainSE?: Record<string, number>;
    meanTokensPerSample: number;
    /** At the first of the timing lengths; `wallTimes`: at each. */
    wallTime: WallTime;
    wallTimes?: WallTime[];
  };
  /** Parallel wall time on the 0.5B shape (`shapeTiming`). */
  shapeTiming?: { model: string; quant: string; sampling?: string; promptTokens: number; reps?: number; wallTime: WallTime }[];
  /** 1-minute load averages at the start and end: above ≈ 0.5 at the start, other work shared the 2 cores. */
  machine: { cpu: string; cores: number; node: string; threads: string; loadavg?: [number, number] };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

/** Messages whose chat prompt has at most `target` tokens (as close as the filler allows), padded in the system message. */
export function paddedPrompt(model: Model, question: string, target: number): { messages: ChatMessage[]; tokens: number } {
  const filler = ' Answer the question and show your work when it helps.';
  let extra = '';
  const build = (k: number): ChatMessage[] => [{ role: 'system', content: SYSTEM_PROMPT + filler.repeat(k) + extra }, { role: 'user', content: question }];
  const len = (k: number) => model.encode(build(k), true).length;
  if (len(0) > target) return { messages: build(0), tokens: len(0) };
  let lo = 0, hi = 1; // the most whole filler sentences that fit, then single words
  while (len(hi) <= target) hi *= 2;
  while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (len(mid) <= target) lo = mid; else hi = mid; }
  for (const w of filler.split(/(?= )/)) { const before = extra; extra += w; if (len(lo) > target) { extra = before; break; } }
  return { messages: build(lo), tokens: len(lo) };
}

export async function runReasoningBench(o: ReasoningBenchOptions = {}): Promise<ReasoningBenchResult> {
  const log = o.log ?? ((l: string) => console.error(l));
  // A bar with ETA per section on a terminal (plain lines every 30 s otherwise); none when a caller takes the log.
  const progress = o.log ? undefined : new StagedProgress({ itemUnit: 'questions', interrupt: (stage, done, total) => `bench reasoning: interrupted${stage ? ` during ${stage} at ${done}/${total}` : ''}; nothing was written` });
  const files = defaultModelFiles(o.model ?? defaultModel.dir), modelDir = files.dir, adapterDir = o.adapter ?? files.adapter;
  if (o.model !== undefined && !fs.existsSync(o.model)) throw new Error(`bench: --model ${o.model} does not exist`);
  if (!fs.existsSync(path.join(adapterDir, 'adapter_config.json'))) throw new Error(`bench: no reasoning adapter at ${adapterDir} (no adapter_config.json; ${o.adapter ? 'check --adapter' : 'pass --adapter'})`);
  for (const [flag, file] of [['--router', o.router], ['--verifier', o.verifier]]) if (file !== undefined && !fs.existsSync(file)) throw new Error(`bench: ${flag} ${file} does not exist`);
  if (o.samples && !o.samples.includes(1)) throw new Error(`bench: --samples must include 1 (wall times and accuracy gains are against one sample), got ${o.samples.join(',')}`);
  const routerFile = o.router ?? files.router, verifierFile = o.verifier ?? files.verifier;
  if (o.parallelSplit !== undefined && o.parallelSplit !== 'test' && o.parallelSplit !== 'val') throw new Error(`bench: --parallel-split must be test or val, got "${o.parallelSplit as string}"`);
  // Without prompt caching: the sections answer the same questions again, and each answer is timed as a first request.
  const model = await loadModel(modelDir, { adapter: adapterDir, quant: o.quant, threads: o.threads, promptCache: 0 });
  const H = model.config.hiddenSize, ctx = model.config.maxPositionEmbeddings;
  const router = fs.existsSync(routerFile) ? Router.load(routerFile, H) : undefined;
  const verifier = fs.existsSync(verifierFile) ? Verifier.load(verifierFile, H) : undefined;
  if (!router) log(`no router at ${routerFile}: the routing section is skipped`);
  if (!verifier) log(`no verifier at ${verifierFile}: verifier votes are skipped`);
  const reps = o.reps ?? 9, maxTokens = o.maxTokens ?? 384, temperature = o.temperature ?? 0.8, topP = o.topP ?? 0.95, minP = o.minP, seed = o.seed ?? 0;
  const sampleCounts = o.samples ?? [1, 2, 4, 8], maxN = Math.max(...sampleCounts);
  const result: ReasoningBenchResult = {
    date: new Date().toISOString(),
    model: { path: modelDir, adapter: adapterDir, router: router ? routerFile : undefined, verifier: verifier ? verifierFile : undefined, hiddenSize: H, layers: model.config.numLayers, context: ctx },
    settings: { reps, ttftReps: o.ttftReps ?? 15, maxTokens, maxThinkingTokens: o.maxThinkingTokens ?? null, temperature, topP, ...(minP !== undefined ? { minP } : {}), seed, quant: o.quant ?? 'default', routerThreshold: router?.threshold, routerTemperature: o.routerTemperature ?? 0 },
    ttft: [],
    machine: { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.availableParallelism(), node: process.version, threads: String(o.threads ?? process.env.EDGEREASON_THREADS ?? 'default (the available CPUs, at most 8)'), loadavg: [os.loadavg()[0], 0] },
  };
  if (os.loadavg()[0] > 0.5) log(`warning: 1-minute load average ${os.loadavg()[0].toFixed(2)} before the run: other work shares the cores, timings will be high`);
  try {
    // 1. TTFT of the reasoning turn.
    const always = new Router(router?.probe ?? new LinearProbe(new Float64Array(H), 0, new Float64Array(H), new Float64Array(H).fill(1)), -1); // routes everything to reasoning
    const inv = reasoningTokens(model).invocation.length;
    for (const target of o.promptLengths ?? [64, 256, 1024]) {
      const { messages, tokens } = paddedPrompt(model, 'Mia has 12 apples and buys 30 more. How many apples does she have now?', Math.min(target, ctx - inv - 2));
      const run = async (mode: 'activated' | 'classic' | 'base') => {
        const r = await answer(model, messages, mode === 'base' ? { reasoning: 'off', maxTokens: 1 } : { reasoning: 'auto', maxTokens: 1, adapterMode: mode }, { router: always });
        if (mode !== 'base' && r.route !== 'reasoning') throw new Error('bench: expected the reasoning route');
        return r.ttftMs;
      };
      await run('activated'); await run('classic'); // warm-up (allocations, ORT first-run)
      const t: Record<string, number[]> = { activated: [], classic: [], base: [] };
      for (let i = 0; i < (o.ttftReps ?? 15); i++) for (const m of ['activated', 'classic', 'base'] as const) t[m].push(await run(m));
      const row = { targetTokens: target, promptTokens: tokens, sharedKvMs: median(t.activated), classicMs: median(t.classic), baseDirectMs: median(t.base), saving: 0, turnCostRatio: 0 };
      row.saving = 1 - row.sharedKvMs / row.classicMs;
      // Paired within each round (the three runs sit side by side), so drift between rounds cancels out.
      const paired = (m: 'activated' | 'classic') => median(t[m].map((x, i) => x - t.base[i]));
      row.turnCostRatio = paired('activated') / Math.max(1e-9, paired('classic')); // unclamped: a noise-level negative shows as such
      result.ttft.push(row);
      log(`TTFT @ ${tokens} prompt tokens: shared KV ${row.sharedKvMs.toFixed(1)} ms, classic re-prefill ${row.classicMs.toFixed(1)} ms, base direct ${row.baseDirectMs.toFixed(1)} ms, turn cost ${signed(row.turnCostRatio)}×`);
    }

    // 2. Routing.
    const gen = { maxTokens, maxThinkingTokens: o.maxThinkingTokens };
    if (router && (o.routerItems ?? 100) > 0) {
      const cases = syntheticCases('test', o.routerItems ?? 100, seed);
      const rows: { c: EvalCase; score: number; off: AnswerResult; on: AnswerResult; auto: AnswerResult; offOk: boolean; onOk: boolean; autoOk: boolean }[] = [];
      const rt = o.routerTemperature ?? 0;
      for (const [k, c] of cases.entries()) {
        const g = { ...gen, task: c.task, ...(rt > 0 ? { temperature: rt, topP, seed: seed + k } : {}) };
        // The three in a rotating order (off, on, auto; then on, auto, off; ...), so that none is always measured first.
        const runs = {
          off: () => answer(model, c.question, { ...g, reasoning: 'off', collectHidden: true }),
          on: () => answer(model, c.question, { ...g, reasoning: 'on' }),
          auto: () => answer(model, c.question, { ...g, reasoning: 'auto' }, { router }),
        };
        const modes = (['off', 'on', 'auto'] as const).map((_, i, all) => all[(i + k) % 3]), got: Partial<Record<keyof typeof runs, AnswerResult>> = {};
        for (const m of modes) got[m] = await runs[m]();
        const { off, on, auto } = got as Record<keyof typeof runs, AnswerResult>;
        rows.push({ c, score: router.score(off.promptHidden!), off, on, auto, offOk: isCorrect(c.task, off.answer, c.gold), onOk: isCorrect(c.task, on.answer, c.gold), autoOk: isCorrect(c.task, auto.answer, c.gold) });
        progress?.update('routing', rows.length, cases.length);
      }
      type Row = (typeof rows)[number];
      const reason = (r: Row) => r.auto.route === 'reasoning', probe = (r: Row) => r.score >= router.threshold;
      const needsReasoning = (r: Row) => r.c.category === 'medium' || r.c.category === 'hard';
      const latency = (rs: Row[]) => ({ base: mean(rs.map((r) => r.off.latencyMs)), alwaysReason: mean(rs.map((r) => r.on.latencyMs)), routed: mean(rs.map((r) => r.auto.latencyMs)) });
      const summary = (rs: Row[]): RoutingSummary => {
        const easyChat = rs.filter((r) => r.c.category === 'easy' || r.c.category === 'chat'), lat = latency(rs);
        return {
          n: rs.length,
          routerAccuracy: mean(rs.map((r) => (reason(r) === !r.offOk ? 1 : 0))),
          reasoningShare: mean(rs.map((r) => +reason(r))), escalatedShare: mean(rs.map((r) => +!!r.auto.escalation)),
          easyChatDirectShare: mean(easyChat.map((r) => (reason(r) ? 0 : 1))), easyChatN: easyChat.length,
          categoryOracleAccuracy: mean(rs.map((r) => (needsReasoning(r) === !r.offOk ? 1 : 0))),
          categoryAccuracy: mean(rs.map((r) => (reason(r) === needsReasoning(r) ? 1 : 0))),
          errors: rs.filter((r) => reason(r) === r.offOk).reduce<Record<string, number>>((e, r) => {
            const k = `${r.c.category}: ${!reason(r) ? 'direct, wrong' : r.auto.escalation ? 'escalated, direct right' : 'reasoned, direct right'}`;
            e[k] = (e[k] ?? 0) + 1;
            return e;
          }, {}),
          accuracy: { base: mean(rs.map((r) => +r.offOk)), alwaysReason: mean(rs.map((r) => +r.onOk)), routed: mean(rs.map((r) => +r.autoOk)) },
          meanLatencyMs: lat, latencyRatio: lat.routed / Math.max(1e-9, lat.alwaysReason),
          meanTokens: { alwaysReason: mean(rs.map((r) => r.on.usage.completionTokens)), routed: mean(rs.map((r) => r.auto.usage.completionTokens)) },
          probeOnly: {
            routerAccuracy: mean(rs.map((r) => (probe(r) === !r.offOk ? 1 : 0))), accuracy: mean(rs.map((r) => +(probe(r) ? r.onOk : r.offOk))),
            latencyRatio: mean(rs.map((r) => (probe(r) ? r.on : r.off).latencyMs)) / Math.max(1e-9, lat.alwaysReason),
          },
        };
      };
      const byCategory: NonNullable<ReasoningBenchResult['routing']>['byCategory'] = {};
      const ORDER = ['chat', 'easy', 'medium', 'hard']; // by difficulty
      for (const cat of [...new Set(rows.map((r) => r.c.category))].sort((a, b) => ORDER.indexOf(a) - ORDER.indexOf(b))) {
        const rs = rows.filter((r) => r.c.category === cat);
        byCategory[cat] = { n: rs.length, directShare: mean(rs.map((r) => (reason(r) ? 0 : 1))), base: mean(rs.map((r) => +r.offOk)), alwaysReason: mean(rs.map((r) => +r.onOk)), routed: mean(rs.map((r) => +r.autoOk)), latencyMs: latency(rs) };
      }
      result.routing = { ...summary(rows), threshold: router.threshold, ...(router.gate ? { gate: router.gate } : {}), issueMix: summary(rows.filter((r) => r.c.category !== 'medium')), byCategory };
      const g = result.routing;
      log(`routing: accuracy vs category ${(100 * g.categoryAccuracy).toFixed(1)} %, vs direct-answer label ${(100 * g.routerAccuracy).toFixed(1)} %, easy+chat direct ${(100 * g.easyChatDirectShare).toFixed(1)} %, accuracy routed ${(100 * g.accuracy.routed).toFixed(1)} % vs always-reason ${(100 * g.accuracy.alwaysReason).toFixed(1)} %, latency ${g.meanLatencyMs.routed.toFixed(0)} vs ${g.meanLatencyMs.alwaysReason.toFixed(0)} ms`);
    }

    // 3. Parallel samples.
    if ((o.parallelItems ?? 60) > 0) {
      const split = o.parallelSplit ?? 'test';
      const cases = syntheticCases(split, o.parallelItems ?? 60, seed + 1, { hard: 1 }); // the items reasoning is for
      const methods = METHODS.filter((m) => verifier || !m.startsWith('verifier'));
      const hits: Record<string, Record<string, number>> = Object.fromEntries(methods.map((m) => [m, Object.fromEntries(sampleCounts.map((n) => [n, 0]))]));
      const tokens: number[] = [], gains: Record<string, number[]> = Object.fromEntries(methods.map((m) => [m, []])); // per item at N = max: vote right − greedy right
      let greedyHits = 0; // the baseline a user gets from one sample: answer() decodes it greedily
      for (let k = 0; k < cases.length; k++) {
        const c = cases[k];
        const one = await answer(model, c.question, { ...gen, reasoning: 'on', task: c.task });
        const greedyHit = isCorrect(c.task, one.answer, c.gold) && one.winner !== undefined;
        if (greedyHit) greedyHits++;
        // vote 'checked' only has answer() count each sample's flaws: every vote below is taken here, on the same samples.
        const r = await answer(model, c.question, { ...gen, reasoning: 'on', samples: maxN, temperature, topP, minP, seed: seed + 1000 * k, task: c.task, vote: 'checked' }, { verifier });
        r.samples.forEach((s) => tokens.push(s.tokens));
        const cands: Candidate[] = r.samples.map((s) => ({ extracted: s.extracted, meanLogprob: s.meanLogprob, verifierScore: s.verifierScore, flaws: s.flaws, capped: s.capped })); // as answer() votes
        for (const m of methods) for (const n of sampleCounts) {
          const chosen = vote(m, cands.slice(0, n)).chosen;
          const hit = isCorrect(c.task, r.samples[chosen].answer, c.gold) && r.samples[chosen].extracted !== undefined;
          if (hit) hits[m][n]++;
          if (n === maxN) gains[m].push(+hit - +greedyHit);
        }
        progress?.update('parallel', k + 1, cases.length);
      }
      const accuracy = Object.fromEntries(methods.map((m) => [m, Object.fromEntries(sampleCounts.map((n) => [n, hits[m][n] / cases.length]))]));
      // Wall time at the same tokens per sample: one prefill, a fork, fixed-length decoding.
      const ids = model.encode([{ role: 'user', content: cases[0]?.question ?? 'What is 2 plus 3?' }], true);
      const wallTimes: WallTime[] = [];
      for (const t of o.timingTokens ?? [64, 160]) wallTimes.push(await parallelWallTime(model, ids, { invocation: reasoningTokens(model).invocation, sampleCounts, tokens: t, reps, sampling: { temperature, topP, minP } }));
      result.parallel = { split, n: cases.length, samples: sampleCounts, accuracy, greedy: greedyHits / cases.length, gainSE: Object.fromEntries(methods.map((m) => [m, pairedSE(gains[m])])), meanTokensPerSample: mean(tokens), wallTime: wallTimes[0], wallTimes };
      log(`parallel: greedy single answer ${(100 * greedyHits / cases.length).toFixed(1)}%; ${methods.map((m) => `${m} ${sampleCounts.map((n) => `${n}:${(100 * accuracy[m][n]).toFixed(1)}%`).join(' ')}`).join('; ')}; wall time ratio ${wallTimes.map((wt) => `@${wt[0].tokensPerSample} tokens ${wt.map((w) => `${w.samples}:${w.ratio.toFixed(2)}`).join(' ')}`).join('; ')}`);
    }
  } finally {
    progress?.stop(); // a failure mid-section leaves no bar (or hidden cursor) behind
    await model.close();
  }
  if (o.shapeTiming) result.shapeTiming = await shapeWallTimes(sampleCounts, o.reps ?? 3, log);
  result.machine.loadavg![1] = os.loadavg()[0];

  if (o.resultsDir !== null) await writeReport(result, o.resultsDir ?? path.join(path.dirname(fileURLToPath(import.meta.url)), 'results'), log);
  return result;
}

/** <name>.json, .md and the SVG plots in `dir`: a run's reasoning-<date> (-2, … after the day's first), or a redrawn report's own name. */
async function writeReport(result: ReasoningBenchResult, dir: string, log: (l: string) => void, name = freshStem(dir, `reasoning-${result.date.slice(0, 10)}`)): Promise<void> {
  const stem = writeResults(dir, name, result, markdown(result, name));
  writeSvg(`${stem}-ttft.svg`, await lineChart({
    title: 'TTFT of the reasoning turn vs prompt length', x: 'prompt tokens', y: 'TTFT (ms)', points: true,
    series: [
      { name: 'activated LoRA (shared KV)', points: result.ttft.map((t) => [t.promptTokens, t.sharedKvMs]) },
      { name: 'classic LoRA (re-prefill)', points: result.ttft.map((t) => [t.promptTokens, t.classicMs]) },
      { name: 'base, direct', points: result.ttft.map((t) => [t.promptTokens, t.baseDirectMs]) },
    ],
  }));
  if (result.parallel) {
    const p = result.parallel;
    writeSvg(`${stem}-accuracy-vs-n.svg`, await lineChart({
      title: `Accuracy vs parallel samples (${p.n} hard ${p.split} items)`, x: 'samples N', y: 'accuracy (%)', points: true, logX: true, yDomain: [0, 100],
      series: Object.entries(p.accuracy).map(([m, byN]) => ({ name: m, points: p.samples.map((n) => [n, 100 * byN[n]] as [number, number]) })),
    }));
  }
  const curve = result.routing ? latencyByMix(result.routing.byCategory) : [];
  if (result.routing && curve.length) { // a run too small to hold every category draws no curve
    const at = (k: keyof MixPoint) => curve.map((c) => [100 * c.hardShare, c[k]] as [number, number]);
    writeSvg(`${stem}-latency-vs-mix.svg`, await lineChart({
      title: 'Routed / always-reason mean latency vs the share of hard questions', x: 'hard questions in the mix (%), easy : chat as measured', y: 'routed / always-reason latency', points: true,
      series: [{ name: 'routed (measured per category)', points: at('routed') }, { name: 'perfect routing: easy + chat at base latency', points: at('perfect') }, { name: 'target 0.6×', points: at('target') },
        { name: `this mix: ${result.routing.issueMix.latencyRatio.toFixed(2)}× measured`, points: [[100 * hardShare(result.routing.byCategory), result.routing.issueMix.latencyRatio]] }],
    }));
  }
  log(`wrote the plots ${stem}-*.svg`);
}

export interface MixPoint { hardShare: number; routed: number; perfect: number; target: number }

/**
 * The routed / always-reason latency ratio of mixes with more or fewer hard questions, from the per-category mean
 * latencies measured (easy and chat in their measured proportion): how far the ratio depends on the mix, since hard
 * questions take the same reasoning on both paths. `perfect`: every easy and chat question answered directly at
 * the base model's latency, every hard one reasoned.
 */
export function latencyByMix(byCategory: NonNullable<ReasoningBenchResult['routing']>['byCategory'], shares = Array.from({ length: 13 }, (_, i) => i / 20)): MixPoint[] {
  const { easy, chat, hard } = byCategory;
  if (!easy || !chat || !hard) return [];
  const light = easy.n + chat.n, mixOf = (h: number, f: (c: typeof easy) => number) => h * f(hard) + (1 - h) * (easy.n * f(easy) + chat.n * f(chat)) / light;
  return shares.map((h) => {
    const always = mixOf(h, (c) => c.latencyMs.alwaysReason);
    return { hardShare: h, routed: mixOf(h, (c) => c.latencyMs.routed) / always, perfect: mixOf(h, (c) => (c === hard ? c.latencyMs.alwaysReason : c.latencyMs.base)) / always, target: 0.6 };
  });
}

const hardShare = (c: NonNullable<ReasoningBenchResult['routing']>['byCategory']): number => c.hard!.n / (c.hard!.n + c.easy!.n + c.chat!.n);

/** The largest share of hard questions (to 0.1 %) at which the routed latency is at most `target`× always-reason. */
export function hardShareAtRatio(byCategory: NonNullable<ReasoningBenchResult['routing']>['byCategory'], target: number): number | undefined {
  const fits = (h: number) => (latencyByMix(byCategory, [h])[0]?.routed ?? Infinity) <= target;
  if (!fits(0)) return undefined;
  let lo = 0, hi = 1;
  for (let i = 0; i < 20; i++) { const mid = (lo + hi) / 2; if (fits(mid)) lo = mid; else hi = mid; }
  return Math.floor(lo * 1000) / 1000;
}

/** Standard error of the mean of per-item differences (NaN, shown as none, below two items). */
function pairedSE(d: number[]): number {
  if (d.length < 2) return NaN;
  const m = mean(d);
  return Math.sqrt(d.reduce((a, x) => a + (x - m) ** 2, 0) / (d.length - 1) / d.length);
}

/**
 * Wall time of N samples at the same tokens per sample: one prefill of `ids`, a fork into N rows, then `tokens`
 * decode steps with stop tokens off (with `invocation`, the rows start with it and the adapter on from there).
 * Best of `reps` rounds (each times every N in turn) after a warm-up at the largest N.
 */
export async function parallelWallTime(model: Model, ids: number[], o: { invocation?: number[]; sampleCounts: number[]; tokens: number; reps: number; sampling: SamplingParams }): Promise<WallTime> {
  // The first decode step feeds the invocation, or else the prompt's last token (its logits give the first sample).
  const head = o.invocation ? ids : ids.slice(0, -1), pending = o.invocation ?? ids.slice(-1);
  const timeN = async (n: number) => {
    const t0 = performance.now();
    const p = await prefill(model.backend, head, 0);
    const cache = n === 1 ? p.cache : await model.backend.select(p.cache, new Array(n).fill(0));
    if (cache !== p.cache) await model.backend.free(p.cache);
    const adapter = o.invocation ? { adapter: true, adapterFrom: ids.length } : {};
    const seqs = Array.from({ length: n }, (_, i) => new Sequence(model.tokenizer, { ...o.sampling, seed: i, maxTokens: o.tokens, stopTokens: [], ...adapter }, head.length + pending.length));
    await decode(model.backend, cache, seqs, seqs.map(() => pending), t0);
    await model.backend.free(cache);
    return performance.now() - t0;
  };
  await timeN(Math.max(...o.sampleCounts));
  // Round after round of every N, side by side, so a drift in the machine's speed hits every N alike; every other
  // round in reverse, so no N always follows the largest one (whose garbage the next run collects).
  const xs = o.sampleCounts.map((): number[] => []), order = [...o.sampleCounts.keys()];
  for (let i = 0; i < o.reps; i++) for (const k of i % 2 ? [...order].reverse() : order) xs[k].push(await timeN(o.sampleCounts[k]));
  const one = o.sampleCounts.indexOf(1);
  if (one < 0) throw new Error(`bench: the sample counts must include 1 (wall times are ratios to one sample), got ${o.sampleCounts.join(', ')}`);
  const rows: WallTime = o.sampleCounts.map((n, k) => {
    const perRound = xs[k].map((x, r) => x / xs[one][r]);
    return { samples: n, ms: Math.min(...xs[k]), ratio: 0, tokensPerSample: o.tokens, rounds: [Math.min(...perRound), Math.max(...perRound)] };
  });
  rows.forEach((w) => { w.ratio = w.ms / rows[one].ms; });
  return rows;
}

/**
 * The same wall-time comparison on random weights in Qwen2.5-0.5B's shape (the decode bench's cached model),
 * fp32 and q4: where decoding is memory-bound, N rows cost little more than one. 40-token prompt, 32 tokens per
 * sample, temperature 0.8 with top-k 40, and with top-p 0.95 (random weights give a flat distribution, whose
 * nucleus is most of the 151,936-token vocabulary: the sampler's worst case).
 */
async function shapeWallTimes(sampleCounts: number[], reps: number, log: (l: string) => void): Promise<NonNullable<ReasoningBenchResult['shapeTiming']>> {
  const { preparedShapeModels } = await import('./decode.ts');
  const files = await preparedShapeModels(log, { fp32: true });
  const out: NonNullable<ReasoningBenchResult['shapeTiming']> = [];
  for (const [quant, dir] of [['fp32', files.fp32Dir!], ['q4', files.onnxDir]] as const) {
    const m = await loadModel(dir, { promptCache: 0 });
    try {
      const ids = Array.from({ length: 40 }, (_, i) => 100 + 37 * i);
      for (const [name, sampling] of [['top-k 40', { temperature: 0.8, topK: 40 }], ['top-p 0.95', { temperature: 0.8, topP: 0.95 }]] as const) {
        const wallTime = await parallelWallTime(m, ids, { sampleCounts, tokens: 32, reps, sampling });
        out.push({ model: 'random weights, Qwen2.5-0.5B shape', quant, sampling: `temperature 0.8, ${name}`, promptTokens: ids.length, reps, wallTime }); // (settings.reps is the embedded model's)
        log(`0.5B shape ${quant}, ${name}: wall time ratio ${wallTime.map((w) => `${w.samples}:${w.ratio.toFixed(2)}`).join(' ')}`);
      }
    } finally {
      await m.close();
    }
  }
  return out;
}

/** "310 ms (2.11×; rounds 1.95–2.30×)": the best round's time and ratio, and the spread of the rounds' own ratios. */
const wallCell = (w: WallTime[number]): string =>
  `${w.ms.toFixed(0)} ms (${w.ratio.toFixed(2)}×${w.rounds && w.samples !== 1 ? `; rounds ${w.rounds[0].toFixed(2)}–${w.rounds[1].toFixed(2)}×` : ''})`;

/** Two decimals, without a "-0.00" for a small negative (the turn cost is a difference of two timings). */
const signed = (x: number) => (Math.abs(x) < 0.005 ? 0 : x).toFixed(2);

export function markdown(r: ReasoningBenchResult, stem = 'reasoning'): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  const points = (x: number) => `${x >= 0 ? '+' : '−'}${Math.abs(100 * x).toFixed(1)} points`;
  const out = [`# Efficient reasoning benchmark ${r.date.slice(0, 10)}`, '',
    `Model: ${r.model.path} (hidden ${r.model.hiddenSize}, ${r.model.layers} layers, context ${r.model.context}) + adapter ${r.model.adapter}; router ${r.model.router ?? 'none'}; verifier ${r.model.verifier ?? 'none'}.`,
    `Machine: ${r.machine.cpu}, ${r.machine.cores} cores, threads ${r.machine.threads}, node ${r.machine.node}${r.machine.loadavg ? `, 1-minute load average ${r.machine.loadavg[0].toFixed(2)} at the start and ${r.machine.loadavg[1].toFixed(2)} at the end${r.machine.loadavg[0] > 0.5 ? ' (above 0.5 at the start: the cores were busy just before the run, or other work shared them, and timings may be high; the end includes the run itself)' : ''}` : ''}. Settings: ${JSON.stringify(r.settings)}.`, '',
    '## TTFT of the reasoning turn', '',
    `Both paths first run the base prefill (the router\'s input). Activated LoRA: that prefill already carries the invocation with the adapter on (speculative invocation), so the first thinking token comes from the same step; the classic adapter encodes the prompt again with the adapter on. "Turn cost" is the reasoning turn\'s own time over the base prefill: (shared − base) / (classic − base), each difference the median over rounds of the three runs side by side. Times: median of ${r.settings.ttftReps ?? r.settings.reps} runs.`, '',
    '| prompt tokens | activated LoRA, shared KV (ms) | classic LoRA, re-prefill (ms) | saving | turn cost, shared / re-prefill | base direct (ms) |', '|---:|---:|---:|---:|---:|---:|',
    ...r.ttft.map((t) => `| ${t.promptTokens} | ${t.sharedKvMs.toFixed(1)} | ${t.classicMs.toFixed(1)} | ${pct(t.saving)} | ${signed(t.turnCostRatio ?? 0)}× | ${t.baseDirectMs.toFixed(1)} |`), '',
    `![TTFT](${stem}-ttft.svg)`, ''];
  if (r.routing) {
    const g = r.routing, m = g.issueMix;
    const col = (f: (x: RoutingSummary) => string) => `${f(g)} | ${f(m)} |`;
    out.push('## Routing (synthetic test split)', '',
      `${g.n} questions (all categories), and the same rows without the medium items (the issue's mix of easy, hard and chat queries); probe threshold ${g.threshold.toFixed(4)}, ${g.gate ? `gate: escalate when one of the first ${g.gate.tokens} direct tokens has log-probability < ${g.gate.minLogprob}` : 'no gate'}. ${r.settings.routerTemperature ? `Sampled answers (temperature ${r.settings.routerTemperature}, top-p ${r.settings.topP}, one seed per question)` : 'Greedy answers'}, each question answered three times: directly, always reasoning, and routed (reasoning "auto": its own answer and latency, escalations included).`, '',
      '| | all categories | easy + hard + chat |', '|---|---:|---:|',
      `| questions | ${col((x) => String(x.n))}`,
      `| routing accuracy against the category (easy, chat: direct; medium, hard: reason) | ${col((x) => pct(x.categoryAccuracy))}`,
      `| router accuracy (label: direct answer wrong) | ${col((x) => pct(x.routerAccuracy))}`,
      `| same, category oracle (reasons on every medium/hard item) | ${col((x) => pct(x.categoryOracleAccuracy))}`,
      `| same, probe alone (no gate) | ${col((x) => (x.probeOnly ? pct(x.probeOnly.routerAccuracy) : 'n/a'))}`,
      `| questions sent to reasoning (of which escalated by the gate) | ${col((x) => `${pct(x.reasoningShare)} (${pct(x.escalatedShare)})`)}`,
      `| easy + chat answered without the adapter | ${col((x) => `${pct(x.easyChatDirectShare)} of ${x.easyChatN}`)}`,
      `| accuracy: base / always-reason / routed | ${col((x) => `${pct(x.accuracy.base)} / ${pct(x.accuracy.alwaysReason)} / ${pct(x.accuracy.routed)}`)}`,
      `| mean latency ms: base / always-reason / routed | ${col((x) => `${x.meanLatencyMs.base.toFixed(1)} / ${x.meanLatencyMs.alwaysReason.toFixed(1)} / ${x.meanLatencyMs.routed.toFixed(1)}`)}`,
      `| accuracy, probe alone | ${col((x) => (x.probeOnly ? pct(x.probeOnly.accuracy) : 'n/a'))}`, // (runs before 2026-12-01 did not record it)
      `| routed latency / always-reason (probe alone) | ${col((x) => `${x.latencyRatio.toFixed(2)}×${x.probeOnly ? ` (${x.probeOnly.latencyRatio.toFixed(2)}×)` : ''}`)}`,
      `| mean generated tokens: always-reason / routed (direct attempts included) | ${col((x) => `${x.meanTokens.alwaysReason.toFixed(1)} / ${x.meanTokens.routed.toFixed(1)}`)}`, '',
      ...(m.errors && !Object.keys(m.errors).length ? [`No routing errors on the easy + hard + chat rows (0 of ${m.n}).`, ''] : []),
      ...(m.errors && Object.keys(m.errors).length ? [`Routing errors on the easy + hard + chat rows (${Object.values(m.errors).reduce((a, b) => a + b, 0)} of ${m.n}; "direct right" = the label said no reasoning was needed): ${Object.entries(m.errors).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join('; ')}.`, ''] : []),
      '| category | n | answered directly | base | always-reason | routed | latency ms: base / always-reason / routed |', '|---|---:|---:|---:|---:|---:|---:|',
      ...Object.entries(g.byCategory).map(([c, v]) => `| ${c} | ${v.n} | ${pct(v.directShare)} | ${pct(v.base)} | ${pct(v.alwaysReason)} | ${pct(v.routed)} | ${v.latencyMs.base.toFixed(1)} / ${v.latencyMs.alwaysReason.toFixed(1)} / ${v.latencyMs.routed.toFixed(1)} |`), '');
    const curve = latencyByMix(g.byCategory), share = hardShareAtRatio(g.byCategory, 0.6);
    if (curve.length) {
      const hard = hardShare(g.byCategory);
      out.push(`Hard questions reason on both paths, so the routed / always-reason latency ratio depends on how many the mix holds. From the per-category latencies above (easy : chat as measured), the ratio is ${curve.filter((c) => [0, 0.1, 0.2, 0.3, 0.4, 0.5].some((h) => Math.abs(c.hardShare - h) < 1e-9)).map((c) => `${c.routed.toFixed(2)}× at ${(100 * c.hardShare).toFixed(0)} %`).join(', ')} hard questions (${pct(hard)} in this mix); it is at most 0.6× up to ${share === undefined ? '— (nowhere)' : pct(share)}.${Math.min(...['easy', 'chat', 'hard'].map((c) => g.byCategory[c]?.n ?? 0)) < 30 ? ` (Fewer than 30 questions in a category: these latencies, and the curve, are rough.)` : ''}`, '',
        `![latency vs mix](${stem}-latency-vs-mix.svg)`, '');
    }
  }
  if (r.parallel) {
    const p = r.parallel, top = Math.max(...p.samples);
    out.push(`## Parallel samples (synthetic ${p.split ?? 'test'} split, hard items)`, '',
      `${p.n} hard (4–8 step) questions of the ${p.split ?? 'test'} split; ${p.samples.join(', ')} samples forked from one prefill; ${p.meanTokensPerSample.toFixed(1)} tokens per sample on average.`, '',
      `| vote | ${p.samples.map((n) => `N=${n}`).join(' | ')} |`, `|---|${p.samples.map(() => '---:').join('|')}|`,
      ...Object.entries(p.accuracy).map(([m, byN]) => `| ${m} | ${p.samples.map((n) => pct(byN[n])).join(' | ')} |`), '',
      ...(p.greedy === undefined ? [] : [`Samples at temperature ${r.settings.temperature} (top-p ${r.settings.topP}${r.settings.minP !== undefined ? `, min-p ${r.settings.minP}` : ''}). One greedy sample — what answer() gives for one sample — is right on ${pct(p.greedy)} of these items: N = ${top} adds ${Object.entries(p.accuracy).map(([m, byN]) => `${points(byN[top] - p.greedy!)}${Number.isFinite(p.gainSE?.[m]) ? ` (${m}, standard error ${(100 * p.gainSE![m]).toFixed(1)})` : ` (${m})`}`).join(', ')} over it${p.samples.includes(1) ? `, and ${Object.entries(p.accuracy).map(([m, byN]) => `${points(byN[top] - byN[1])} (${m})`).join(', ')} over one sample at the same temperature` : ''}.`, '']),
      `Wall time at the same tokens per sample (prefill + fork + decode, best of ${r.settings.reps} rounds, every N timed in each round side by side; "rounds": the lowest and highest of the rounds' own ratios to N = 1, the machine's noise):`, '',
      `| tokens per sample | ${p.samples.map((n) => `N=${n}`).join(' | ')} |`, `|---:|${p.samples.map(() => '---:').join('|')}|`,
      ...(p.wallTimes ?? [p.wallTime]).map((wt) => `| ${wt[0]?.tokensPerSample} | ${wt.map(wallCell).join(' | ')} |`), '',
      `![accuracy vs N](${stem}-accuracy-vs-n.svg)`, '');
  }
  if (r.shapeTiming?.length) {
    const st = r.shapeTiming, ns = st[0].wallTime.map((w) => w.samples);
    out.push('## Parallel wall time on the Qwen2.5-0.5B shape', '',
      `Random weights in Qwen2.5-0.5B's shape (no adapter): one ${st[0].promptTokens}-token prefill, fork, ${st[0].wallTime[0]?.tokensPerSample} tokens per sample, best of the rounds (every N in each). Random weights give flat next-token distributions: with top-p 0.95 the nucleus is most of the vocabulary, the sampler's worst case.`, '',
      `| weights | ${ns.map((n) => `N=${n}`).join(' | ')} |`, `|---|${ns.map(() => '---:').join('|')}|`,
      ...st.map((x) => `| ${x.quant}${x.sampling ? `, ${x.sampling}` : ''} | ${x.wallTime.map(wallCell).join(' | ')} |`), '');
  }
  return out.join('\n');
}


if (isMainModule(import.meta.url)) {
  const s = 'string' as const, spec = {
    model: s, adapter: s, router: s, verifier: s, quant: s, threads: 'count', reps: 'count', 'router-items': 'count0', 'router-temperature': 'number0', 'parallel-items': 'count0', temperature: 'number0', 'top-p': 'fraction', 'min-p': 'fraction',
    'parallel-split': s, 'max-tokens': 'count', 'max-thinking-tokens': 'count0', 'timing-tokens': 'count', seed: 'int', 'prompt-lengths': 'count', samples: 'count',
    'results-dir': s, 'no-write': 'boolean', 'shape-timing': 'boolean', report: s,
  } as const, a = scriptArgs('bench/reasoning.ts', spec);
  const report = a.str('report');
  // --report <reasoning-<date>.json>: the Markdown and plots again from a run's results, with no model run.
  const unused = report ? Object.keys(spec).filter((k) => k !== 'report' && k !== 'results-dir' && a.str(k) !== undefined) : [];
  if (unused.length) throw new Error(`bench reasoning: --report redraws a run's Markdown and plots, running nothing: ${unused.map((k) => `--${k}`).join(', ')} would have no effect; drop ${unused.length === 1 ? 'it' : 'them'}`);
  if (report) await writeReport(JSON.parse(fs.readFileSync(report, 'utf8')) as ReasoningBenchResult, a.str('results-dir') ?? path.dirname(report), console.log, path.basename(report, '.json'));
  else await runReasoningBench({
    model: a.str('model'), adapter: a.str('adapter'), router: a.str('router'), verifier: a.str('verifier'),
    quant: a.str('quant') === undefined ? undefined : quantArg(a.str('quant')!), threads: a.num('threads'), reps: a.num('reps'),
    routerItems: a.num('router-items'), routerTemperature: a.num('router-temperature'), parallelItems: a.num('parallel-items'), parallelSplit: a.str('parallel-split') as 'test' | 'val' | undefined, maxTokens: a.num('max-tokens'),
    maxThinkingTokens: a.num('max-thinking-tokens'), timingTokens: a.nums('timing-tokens'), seed: a.num('seed'), temperature: a.num('temperature'), topP: a.num('top-p'), minP: a.num('min-p'),
    promptLengths: a.nums('prompt-lengths'), samples: a.nums('samples'),
    resultsDir: a.resultsDir(), shapeTiming: a.has('shape-timing'),
  });
}
