import { fraction } from '../show.ts';
import path from 'node:path';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Option, type Command } from 'commander';
import { loadModel, parameterCount } from '../runtime/model.ts';
import { Reasoner } from '../reason/answer.ts';
import { Router } from '../reason/router.ts';
import { Verifier } from '../reason/verifier.ts';
import { defaultModel, defaultModelFiles } from '../models/embedded.ts';
import { openSource } from '../io/source.ts';
import type { AnswerOptions, AnswerResult } from '../reason/types.ts';
import { isCorrect } from '../tasks/grade.ts';
import { makeSplits, type Item, type MathItem } from '../tasks/synthetic.ts';
import { dimmer, onInterrupt } from '../train/progress.ts';

/** Where the datasets' files go, and where they come from (the datasets' own test files, unchanged). */
const DATA_LAYOUT = 'data/<task>/test.jsonl holds each dataset\'s questions as its own release has them: gsm8k from openai/grade-school-math (grade_school_math/data/test.jsonl), math500 from openai/prm800k (prm800k/math_splits/test.jsonl), svamp, asdiv, aime24 and amc23 from QwenLM/Qwen2.5-Math (evaluation/data/<task>/test.jsonl); or give questions of your own as --task mine.jsonl';

/** $EDGEREASON_SHARED, else ../shared beside the project root: the folder whose data/ holds the datasets (gsm8k, math500, ...). */
export function sharedDir(): string {
  const env = process.env.EDGEREASON_SHARED;
  const dir = env ? path.resolve(env) : path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../shared');
  if (!fs.existsSync(path.join(dir, 'data'))) {
    throw new Error(`${env ? `EDGEREASON_SHARED=${env}: ${path.join(dir, 'data')} not found` : `shared data folder not found at ${dir}: it sits beside the project folder, or set EDGEREASON_SHARED to a folder with data/ in it`}. ${DATA_LAYOUT}`);
  }
  return dir;
}

const dim = (s: string): string => dimmer(process.stdout)(s);

/** Three test-split questions: a chat query, an easy and a hard problem. */
function examples(): Item[] {
  const test = makeSplits({ train: 0, val: 0, test: 60, seed: 0 }).test;
  const pick = (f: (i: Item) => boolean) => test.find(f)!;
  return [pick((i) => i.kind === 'chat' && i.topic === 'capital'), pick((i) => i.kind === 'math' && i.difficulty === 'easy'), pick((i) => i.kind === 'math' && i.difficulty === 'hard' && i.ops >= 5)];
}

async function show(r: Reasoner, item: Item, label: string, opts: AnswerOptions): Promise<AnswerResult> {
  process.stdout.write(`  ${label}: `);
  // With several samples only sample 1 streams; the vote picks the answer, printed after it.
  if ((opts.samples ?? 1) > 1) process.stdout.write(dim(`(sample 1 of ${opts.samples}) `));
  let phase = '', routed = false;
  const res = await r.answer(item.question, {
    ...opts,
    onRoute: (route) => { routed = route === 'reasoning'; },
    onText: (sample, p, piece) => {
      if (sample !== 0) return;
      if (p !== phase) {
        if (p === 'thinking') process.stdout.write(dim('<think> '));
        else if (routed) process.stdout.write(dim(phase === 'thinking' ? ' </think> ' : '<think> </think> ')); // an empty thinking shows as such
        phase = p;
      }
      process.stdout.write(p === 'thinking' ? dim(piece.replace(/\n/g, ' ')) : piece.replace(/\n/g, ' '));
    },
  });
  const verdict = isCorrect('synthetic', res.answer, item.answer) ? 'correct' : `wrong (gold ${item.answer})`;
  const n = res.samples.length;
  // A count per answer (majority), or its summed weight (a weighted vote).
  const weighted = (opts.vote ?? 'majority') !== 'majority';
  const tally = Object.entries(res.votes ?? {}).sort((a, b) => b[1] - a[1]).map(([k, v]) => (weighted ? `${k} ${v.toFixed(2)}` : v > 1 ? `${k} ×${v}` : k)).join(', ');
  const flaws = opts.vote === 'checked' ? ` (flaws in each sample's written work: ${res.samples.map((s) => s.flaws).join(' ')}; the fewest vote)` : '';
  const ok = res.votes && n > 1 ? `votes ${tally}${flaws} → sample ${res.chosen + 1}'s answer "${res.answer.replace(/\n/g, ' ').trim()}": ${verdict}` : verdict;
  const esc = res.escalation ? `, escalated: the direct answer "${res.escalation.answer}" had a token at p = ${Math.exp(res.escalation.logprob).toFixed(2)}` : '';
  console.log(`\n    → ${ok}; route ${res.route}${res.routerScore !== undefined ? ` (router ${res.routerScore.toFixed(2)}${esc})` : ''}; ` +
    `${res.usage.thinkingTokens} thinking + ${res.usage.answerTokens} answer tokens${n > 1 ? ` over the ${n} samples` : ''}${res.escalation ? ` (${res.usage.completionTokens} generated in all, the dropped direct attempt and the tags included)` : ''}; TTFT ${res.ttftMs.toFixed(1)} ms; total ${res.latencyMs.toFixed(0)} ms`);
  return res;
}

export function demoCommand(program: Command): void {
  program.command('demo')
    .description('the embedded default model: answers with and without the reasoning adapter, routing, budgets and voting')
    .addOption(new Option('--model <dir>', 'model folder laid out as models/default (reasoning-adapter/ inside; router.json, verifier.json and reasoning-adapter-rl/ when present)').default(defaultModel.dir, 'the embedded models/default'))
    .action(async (o) => {
      const { adapter, budgetAdapter: rl, router: routerFile, verifier: verifierFile } = defaultModelFiles(o.model);
      if (!fs.existsSync(path.join(adapter, 'adapter_config.json'))) {
        openSource(o.model); // a folder that is no model (or none at all) is said so first
        throw new Error(`demo: ${o.model} has no reasoning adapter (${path.join(adapter, 'adapter_config.json')} not found); the demo runs on a folder laid out as models/default. For another model use answer, generate or serve`);
      }
      const useRl = fs.existsSync(path.join(rl, 'adapter_config.json'));
      // The router and verifier were trained with the SFT adapter; the budget-forced one is shown beside it, in the
      // same session (one copy of the weights). Without prompt caching: each question is answered several ways, and
      // each answer's TTFT is shown as a first request's.
      const model = await loadModel(o.model, { adapter, promptCache: 0 });
      const rlr = useRl ? new Reasoner(await model.withAdapter(rl)) : undefined;
      const router = fs.existsSync(routerFile) ? Router.load(routerFile, model.config.hiddenSize) : undefined;
      const verifier = fs.existsSync(verifierFile) ? Verifier.load(verifierFile, model.config.hiddenSize) : undefined;
      const r = new Reasoner(model, { router, verifier });
      const off = onInterrupt(process.stderr, () => 'demo: interrupted');
      try {
        const c = model.config, embedded = path.resolve(o.model) === path.resolve(defaultModel.dir);
        console.log(`edgereason demo — ${o.model}: ${c.architecture} architecture, ${(parameterCount(c) / 1e6).toFixed(1)}M parameters (${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize})` +
          `${embedded ? ', trained by edgereason from scratch on a synthetic task (word problems and facts about a made-up world): it shows the mechanisms, not a real LLM\'s answers' : ''}; ` +
          `reasoning adapter: ${path.basename(adapter)} (activated LoRA, invocation <think>)${useRl ? `, budget-forced: ${path.basename(rl)}` : ''}${router ? '; router loaded' : ''}${verifier ? '; verifier loaded' : ''}`);
        const gate = router?.gate ? `; a direct answer is held back for its first ${router.gate.tokens} tokens, and one of them below p = ${Math.exp(router.gate.minLogprob).toFixed(2)} escalates it to reasoning` : '';
        console.log(dim(`Greedy unless marked sampled (T: temperature). The adapter's turn runs on the base prompt's KV cache (no second prefill), so its TTFT is the base's. ` +
          `TTFT: time to the first token out${gate ? ' (on a gated direct answer, the release of the held-back tokens)' : ''}. (router 0.xx): the probe's estimate that a question needs reasoning${router ? ` (it reasons from ${fraction(router.threshold, 2)}${gate})` : ''}. ` +
          `One question each, one draw where sampled: docs/results.md measures each over hundreds\n`));
        for (const item of examples()) {
          console.log(`Q (${item.kind === 'chat' ? 'chat' : `${item.difficulty}, ${item.ops} steps`}): ${item.question}`);
          await show(r, item, 'base model, no reasoning   ', { reasoning: 'off', maxTokens: 32 });
          await show(r, item, 'reasoning adapter on       ', { reasoning: 'on', maxTokens: 400 });
          if (router) await show(r, item, 'router decides (auto)      ', { reasoning: 'auto', maxTokens: 400 });
          if (item.kind === 'math' && item.difficulty === 'hard') {
            await show(r, item, 'SFT adapter, sampled T 1   ', { reasoning: 'on', temperature: 1, seed: 2, maxTokens: 400 });
            if (rlr) await show(rlr, item, 'RL adapter, same sampling  ', { reasoning: 'on', temperature: 1, seed: 2, maxTokens: 400 });
            // The RL adapter keeps within every budget it was trained on (96, 160, 256) at about the same length: the line changes little here.
            if (rlr) await show(rlr, item, 'RL, same, budget line 96   ', { reasoning: 'on', temperature: 1, seed: 2, budget: 96, maxTokens: 400 });
            await show(r, item, 'SFT, thinking capped at 48 ', { reasoning: 'on', maxThinkingTokens: 48, maxTokens: 400 });
            // The same 8 samples (one batch on one prefill) combined three ways: majority; the checked vote, the best on this
            // model's hard questions (docs/results.md: its written arithmetic is checked); and the verifier's.
            const eight = { reasoning: 'on', samples: 8, temperature: 0.8, seed: 1, maxTokens: 400 } as const;
            await show(r, item, '8 samples T 0.8, majority  ', { ...eight, vote: 'majority' });
            await show(r, item, 'same 8, checked vote       ', { ...eight, vote: 'checked' });
            if (verifier) await show(r, item, 'same 8, verifier-weighted  ', { ...eight, vote: 'verifier-vote' });
          }
          console.log();
        }
        if (router?.gate) {
          // The gate at work: the first easy test question the base model gets wrong and is unsure of.
          const easy = makeSplits({ train: 0, val: 0, test: 300, seed: 0 }).test.filter((i): i is MathItem => i.kind === 'math' && i.difficulty === 'easy');
          for (const item of easy) {
            const direct = await r.answer(item.question, { reasoning: 'off', maxTokens: 32 });
            if (isCorrect('synthetic', direct.answer, item.answer) || !(await r.answer(item.question, { reasoning: 'auto', maxTokens: 400 })).escalation) continue;
            console.log(`Q (easy, ${item.ops} steps; the router's gate at work): ${item.question}`);
            await show(r, item, 'base model, no reasoning   ', { reasoning: 'off', maxTokens: 32 });
            await show(r, item, 'router decides (auto)      ', { reasoning: 'auto', maxTokens: 400 });
            break;
          }
        }
        console.log(dim(`\nA conversation of your own: npx edgereason chat${embedded ? '' : ` --model ${o.model}`} (each line a turn, routed; the conversation stays in the prompt cache)`));
      } finally {
        off();
        await rlr?.close();
        await r.close();
      }
    });
}
