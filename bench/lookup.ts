/**
 * Prompt lookup (speculative decoding, GenerateOptions.promptLookup): what a step that checks guessed tokens costs,
 * and how many guesses real trained models keep. Side by side in one run:
 *  1. the step cost against the tokens it feeds (1 + the guesses), on random weights in Qwen2.5-0.5B's shape (q4; the
 *     decode bench's cached model), batch 1 over a 200-token context, logits at every fed position;
 *  2. on the trained models at hand — stories260K (llama2.c; story continuations, greedy and sampled) and the embedded
 *     default with its reasoning adapter (synthetic test questions, reasoning on, greedy) — for each guess limit: the
 *     tokens against decoding without guesses (they must be the same), the guesses kept, tokens per step, wall time
 *     (interleaved), and the speed-up the same guesses would give at the step costs of part 1 (a projection for a 0.5B
 *     model writing the same text: these models' own steps cost little whatever they feed);
 *  3. at q4, where a step of several tokens runs other kernels than a step of one (MatMulNBits' batched path) and so
 *     rounds otherwise: the embedded default's greedy answers with and without guesses, how many are the same, and
 *     the accuracy of each.
 * Writes bench/results/lookup-<date>.json + .md.
 *   node --import tsx bench/lookup.ts [--reps 3] [--questions 30] [--q4-questions 300] [--results-dir d] [--no-write]
 */
import path from 'node:path';
import { loadModel, type Model } from '../src/runtime/model.ts';
import { delegate } from '../src/runtime/backend.ts';
import { withBackend } from '../src/runtime/scheduler.ts';
import { defaultModel } from '../src/models/embedded.ts';
import { makeSplits } from '../src/tasks/synthetic.ts';
import { isMainModule } from '../src/main-module.ts';
import { answer } from '../src/reason/answer.ts';
import { isCorrect } from '../src/tasks/grade.ts';
import { sharedPath } from '../test/helpers/shared.ts';
import { machineNow, machineText, scriptArgs, publish } from './write.ts';
import type { Prompt, PromptOptions } from '../src/runtime/model.ts';

export interface LookupBenchOptions {
  /** Rounds of part 1 and of each part 2 row; the fastest is reported. Default 3. */
  reps?: number;
  /** Synthetic questions for the embedded model (default 30), and for its q4 comparison (default 300). */
  questions?: number;
  q4Questions?: number;
  resultsDir?: string | null;
}

const FED = [1, 2, 3, 4, 5, 6, 7, 8, 9];
const LIMITS = [1, 2, 4, 8];
const STORY_STARTS = ['Once upon a time', 'Lily and Ben', 'The little dog', 'One day, a girl named Sue', 'Tom had a red ball', 'The sun was hot', 'Mom said', 'There was a big tree'];

interface CostRow { fed: number; ms: number; ratio: number }
interface Row { model: string; limit: number; sameTokens: string; tokens: number; guessed: number; kept: number; stepsOff: number; stepsOn: number; tokensPerStep: number; offMs: number; onMs: number; wallSpeedup: number; projectedSpeedup: number }

/** Milliseconds of one batch-1 step feeding `fed` tokens after a 200-token context, logits at each (the fastest of 8 × `reps`). */
async function stepCosts(m: Model, reps: number): Promise<CostRow[]> {
  const b = m.backend, context = Array.from({ length: 200 }, (_, i) => 100 + i), best = new Map<number, number>();
  for (let rep = 0; rep < reps; rep++) {
    for (const fed of FED) { // interleaved: a slow moment of the machine hits every size alike
      const c = await b.newCache(1);
      try {
        await b.step(c, { tokens: [context] });
        for (let k = 0; k < 8; k++) { // the fastest single step: a slow moment of the machine only lengthens some
          const t = performance.now();
          await b.step(c, { tokens: [Array.from({ length: fed }, (_, i) => 500 + i)], logits: fed, want: { logits: true } });
          best.set(fed, Math.min(best.get(fed) ?? Infinity, performance.now() - t));
          await b.truncate(c, 0, context.length);
        }
      } finally {
        await b.free(c);
      }
    }
  }
  return FED.map((fed) => ({ fed, ms: best.get(fed)!, ratio: best.get(fed)! / best.get(1)! }));
}

/** How far apart one position's logits come in a 4-token step and in steps of one token (the largest difference, and the largest logit). */
async function roundingApart(m: Model): Promise<{ maxDifference: number; maxLogit: number }> {
  const b = m.backend, V = m.config.vocabSize, context = Array.from({ length: 200 }, (_, i) => 100 + i), fed = [500, 501, 502, 503];
  const [one, four] = [await b.newCache(1), await b.newCache(1)];
  try {
    await b.step(one, { tokens: [context] });
    await b.step(four, { tokens: [context] });
    const together = (await b.step(four, { tokens: [fed], logits: fed.length, want: { logits: true } })).logits!;
    let maxDifference = 0, maxLogit = 0;
    for (const [j, t] of fed.entries()) {
      const alone = (await b.step(one, { tokens: [[t]], want: { logits: true } })).logits!;
      for (let v = 0; v < V; v++) [maxDifference, maxLogit] = [Math.max(maxDifference, Math.abs(alone[v] - together[j * V + v])), Math.max(maxLogit, Math.abs(alone[v]))];
    }
    return { maxDifference, maxLogit };
  } finally {
    await b.free(one);
    await b.free(four);
  }
}

/** The jobs' completions with and without guesses (interleaved; the fastest of `reps` each), and the tokens each step fed. */
async function compare(name: string, m: Model, jobs: [Prompt, PromptOptions][], limit: number, reps: number, cost: (fed: number) => number): Promise<Row> {
  let fed: number[] = [];
  const spy = withBackend(m, delegate(m.backend, { step: (cache, req) => { fed.push(req.tokens[0].length); return m.backend.step(cache, req); } }));
  /** A completion and its decode steps' fed counts (the prefill, its first step, left out: the same with guesses or not). */
  const run = async (prompt: Prompt, opts: PromptOptions) => { fed = []; const t = performance.now(), c = await spy.complete(prompt, opts); return { c, ms: performance.now() - t, steps: fed.slice(1) }; };
  let off = Infinity, on = Infinity, same = 0, tokens = 0, guessed = 0, kept = 0, stepsOff = 0, stepsOn = 0, costOn = 0;
  for (let rep = 0; rep < reps; rep++) {
    let offMs = 0, onMs = 0;
    [same, tokens, guessed, kept, stepsOff, stepsOn, costOn] = [0, 0, 0, 0, 0, 0, 0];
    for (const [prompt, o] of jobs) {
      const plain = await run(prompt, o), fast = await run(prompt, { ...o, promptLookup: limit });
      offMs += plain.ms; onMs += fast.ms;
      if (fast.c.tokens.join() === plain.c.tokens.join()) same++;
      tokens += fast.c.tokens.length; guessed += fast.c.guesses!.made; kept += fast.c.guesses!.kept;
      stepsOff += plain.steps.length; stepsOn += fast.steps.length; costOn += fast.steps.reduce((a, f) => a + cost(f), 0);
    }
    [off, on] = [Math.min(off, offMs), Math.min(on, onMs)];
  }
  const row = { model: name, limit, sameTokens: `${same} / ${jobs.length}`, tokens, guessed, kept, stepsOff, stepsOn, tokensPerStep: stepsOff / stepsOn, offMs: off, onMs: on, wallSpeedup: off / on, projectedSpeedup: stepsOff / costOn };
  console.error(`${name}, up to ${limit}: same tokens ${row.sameTokens}; ${kept} of ${guessed} guesses kept; decode steps ${stepsOff} → ${stepsOn} (${row.tokensPerStep.toFixed(2)} tokens/step); wall ${off.toFixed(0)} → ${on.toFixed(0)} ms (${row.wallSpeedup.toFixed(2)}×); projected at the 0.5B shape's step costs ${row.projectedSpeedup.toFixed(2)}×`);
  return row;
}

export async function runLookupBench(o: LookupBenchOptions = {}) {
  const reps = o.reps ?? 3, questions = o.questions ?? 30, machine = machineNow();
  const { preparedShapeModels } = await import('./decode.ts');
  const files = await preparedShapeModels();
  const big = await loadModel(files.onnxDir);
  let costs: CostRow[], rounding: { maxDifference: number; maxLogit: number };
  try {
    await stepCosts(big, 1); // warm-up
    costs = await stepCosts(big, reps);
    rounding = await roundingApart(big);
  } finally {
    await big.close();
  }
  for (const c of costs) console.error(`0.5B shape q4: a step feeding ${c.fed}: ${c.ms.toFixed(1)} ms (${c.ratio.toFixed(2)}×)`);
  console.error(`0.5B shape q4: logits in a 4-token step vs steps of one: up to ${rounding.maxDifference.toExponential(1)} apart (largest logit ${rounding.maxLogit.toFixed(2)})`);
  const cost = (fed: number) => (costs.find((c) => c.fed === fed) ?? costs.at(-1)!).ratio * Math.max(1, fed / costs.at(-1)!.fed); // (beyond the table: in proportion)
  const rows: Row[] = [];
  const stories = await loadModel(path.join(sharedPath('models/stories260K'), 'stories260K.bin'), { quant: 'fp32' });
  try {
    const jobs = STORY_STARTS.flatMap((p, i): [Prompt, PromptOptions][] => [[p, { maxTokens: 200 }], [p, { maxTokens: 200, temperature: 0.8, topP: 0.95, seed: i }]]);
    for (const limit of LIMITS) rows.push(await compare('stories260K', stories, jobs, limit, reps, cost));
  } finally {
    await stories.close();
  }
  const dflt = await loadModel(defaultModel.dir, { adapter: defaultModel.adapter, quant: 'fp32' });
  try {
    const jobs = makeSplits({ train: 0, val: 0, test: questions }).test.map((it): [Prompt, PromptOptions] => [[{ role: 'user', content: it.question }], { chat: true, adapter: true, maxTokens: 256 }]);
    for (const limit of LIMITS) rows.push(await compare('embedded default + reasoning adapter', dflt, jobs, limit, reps, cost));
  } finally {
    await dflt.close();
  }
  const q4Items = makeSplits({ train: 0, val: 0, test: o.q4Questions ?? 300 }).test;
  const q4 = { questions: q4Items.length, same: 0, rightWithout: 0, rightWith: 0 };
  const small = await loadModel(defaultModel.dir, { adapter: defaultModel.adapter, quant: 'q4' });
  try {
    for (const it of q4Items) {
      const plain = await answer(small, it.question, { reasoning: 'on', maxTokens: 256 }), fast = await answer(small, it.question, { reasoning: 'on', maxTokens: 256, promptLookup: 4 });
      q4.same += fast.samples[0]!.tokenIds!.join() === plain.samples[0]!.tokenIds!.join() ? 1 : 0;
      q4.rightWithout += isCorrect('synthetic', plain.answer, it.answer) ? 1 : 0;
      q4.rightWith += isCorrect('synthetic', fast.answer, it.answer) ? 1 : 0;
    }
  } finally {
    await small.close();
  }
  console.error(`embedded default at q4, ${q4.questions} questions reasoning greedily: the same tokens in ${q4.same}; accuracy ${q4.rightWithout} without guesses, ${q4.rightWith} with up to 4`);
  const date = new Date().toISOString().slice(0, 10);
  const result = { date, stepCostModel: 'random weights, Qwen2.5-0.5B shape, q4 (accuracy level 4)', reps, questions, machine, costs, rounding, rows, q4 };
  const md = [`# Prompt lookup (speculative decoding) ${date}`, '',
    `${machineText(machine)}; ${reps} interleaved rounds: each step cost the fastest of ${8 * reps} single steps, each wall time the fastest round.`, '',
    `## What a step costs against the tokens it feeds`, '',
    `${result.stepCostModel}, batch 1, after a 200-token context, logits at every fed position (a step with guesses: the token sampled last, then the guesses).`, '',
    '| tokens fed | ms / step | × one token |', '|---:|---:|---:|',
    ...costs.map((c) => `| ${c.fed} | ${c.ms.toFixed(1)} | ${c.ratio.toFixed(2)} |`), '',
    `## Guesses kept by trained models`, '',
    `stories260K: ${STORY_STARTS.length} story starts, each continued for 200 tokens greedily and at temperature 0.8 (top-p 0.95, seeded). Embedded default: ${questions} synthetic test questions, chat prompt, reasoning adapter on, greedy, up to 256 tokens. "Same tokens": completions equal to decoding without guesses. Decode steps (the prefill left out) without guesses / with them; tokens per step: their ratio. Projected: the speed-up these steps would give at the step costs above (a 0.5B model writing this text); the wall times are these small models' own, whose steps cost about the same whatever they feed.`, '',
    '| model | guesses up to | same tokens | tokens | guessed | kept | decode steps | tokens / step | wall ms without / with | wall × | projected 0.5B × |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.model} | ${r.limit} | ${r.sameTokens} | ${r.tokens} | ${r.guessed} | ${r.kept} (${(100 * r.kept / Math.max(1, r.guessed)).toFixed(0)} %) | ${r.stepsOff} → ${r.stepsOn} | ${r.tokensPerStep.toFixed(2)} | ${r.offMs.toFixed(0)} / ${r.onMs.toFixed(0)} | ${r.wallSpeedup.toFixed(2)} | ${r.projectedSpeedup.toFixed(2)} |`), '',
    `## At q4`, '',
    `The rows above are fp32, where a step of several tokens computes what steps of one do up to float rounding (the same tokens in every completion). At q4 (and q8) it runs MatMulNBits' batched kernels, which round otherwise (on the 0.5B shape, one position's logits in a 4-token step against steps of one token: up to ${rounding.maxDifference.toFixed(3)} apart, the largest being ${rounding.maxLogit.toFixed(2)}), so a completion may part from the one decoded token by token at a near tie. The embedded default at q4 (its own q4 weights), ${q4.questions} synthetic test questions, reasoning on, greedy, up to 256 tokens, guesses up to 4:`, '',
    '| the same tokens | accuracy without guesses | with them |', '|---:|---:|---:|',
    `| ${q4.same} of ${q4.questions} | ${(100 * q4.rightWithout / q4.questions).toFixed(1)} % | ${(100 * q4.rightWith / q4.questions).toFixed(1)} % |`, ''].join('\n');
  publish(o.resultsDir, `lookup-${date}`, result, md);
  return result;
}

if (isMainModule(import.meta.url)) {
  const a = scriptArgs('bench/lookup.ts', { reps: 'count', questions: 'count', 'q4-questions': 'count', 'results-dir': 'string', 'no-write': 'boolean' });
  await runLookupBench({ reps: a.num('reps'), questions: a.num('questions'), q4Questions: a.num('q4-questions'), resultsDir: a.resultsDir() });
}
