/**
 * Budget forcing, measured (issue 6): SFT vs RL reasoning adapter on the synthetic test split's hard items —
 * accuracy and mean thinking tokens, sampled (temperature 1, as the RL rollouts; one seeded sample per item) and
 * greedy; for each prompted budget the share of responses within it; and accuracy versus an inference-time
 * thinking cap K for both adapters, sampled (does RL beat truncation at equal budget?).
 * Writes bench/results/budget-<date>.json, .md and -cap.svg (--results-dir elsewhere; --no-write: nothing).
 *   node --import tsx bench/budget.ts [--sft dir] [--rl dir] [--items 100]
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadModel, type Model } from '../src/runtime/model.ts';
import { answer } from '../src/reason/answer.ts';
import { isCorrect } from '../src/tasks/grade.ts';
import { makeSplits, type MathItem } from '../src/tasks/synthetic.ts';
import { DEFAULT_BUDGETS } from '../src/reason/budget.ts';
import { lineChart, writeSvg } from '../src/eval/plot.ts';
import { StagedProgress } from '../src/train/progress.ts';
import { isMainModule } from '../src/main-module.ts';
import { scriptArgs, publish } from './write.ts';
import { defaultModel, defaultModelFiles } from '../src/models/embedded.ts';

interface Run { accuracy: number; thinking: number; within?: number }

async function run(m: Model, items: MathItem[], o: { budget?: number; cap?: number; temperature?: number }, progress: (done: number, total: number) => void): Promise<Run> {
  let correct = 0, thinking = 0, within = 0;
  progress(0, items.length);
  for (const [i, it] of items.entries()) {
    const r = await answer(m, it.question, { reasoning: 'on', budget: o.budget, maxThinkingTokens: o.cap, maxTokens: 512, temperature: o.temperature ?? 1, topP: 1, seed: i });
    correct += isCorrect('synthetic', r.answer, it.answer) ? 1 : 0;
    thinking += r.usage.thinkingTokens;
    if (o.budget !== undefined && r.usage.thinkingTokens <= o.budget) within++;
    progress(i + 1, items.length);
  }
  const n = items.length;
  return { accuracy: correct / n, thinking: thinking / n, ...(o.budget !== undefined ? { within: within / n } : {}) };
}

export async function runBudgetBench(o: { model?: string; sft?: string; rl?: string; items?: number; caps?: number[]; /** null: write nothing */ resultsDir?: string | null } = {}) {
  const files = defaultModelFiles(o.model ?? defaultModel.dir), model = files.dir;
  const sftDir = o.sft ?? files.adapter, rlDir = o.rl ?? files.budgetAdapter;
  // Both adapters are checked before the first half of the run, not when the second begins.
  for (const [flag, dir] of [['--sft', sftDir], ['--rl', rlDir]]) if (!fs.existsSync(path.join(dir, 'adapter_config.json'))) throw new Error(`bench budget: ${flag} ${dir} holds no adapter (no adapter_config.json)`);
  const items = makeSplits({ train: 0, val: 0, test: o.items ?? 100, seed: 0, mix: { hard: 1 } }).test as MathItem[];
  const caps = o.caps ?? [16, 32, 48, 64, 96, 128, 192, 256];
  const result: Record<string, unknown> = { items: items.length, split: 'synthetic test, hard (4–8 steps)', decoding: 'sampled at temperature 1 (seed = item index), and greedy where marked' };
  const capCurves: { name: string; points: [number, number][] }[] = [];
  // A bar per run over the items (each adapter: sampled, greedy, each cap; the RL one each budget too), its figures after it.
  const progress = new StagedProgress({ itemUnit: 'questions', interrupt: (stage, done, total) => `bench budget: interrupted${stage ? ` during ${stage} at ${done}/${total}` : ''}; nothing was written` });
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  try {
    for (const [name, dir] of [['SFT', sftDir], ['RL', rlDir]] as const) {
      const m = await loadModel(model, { adapter: dir });
      const runOf = (stage: string, settings: Parameters<typeof run>[2]) => run(m, items, settings, (done, total) => progress.update(`${name} adapter, ${stage}`, done, total));
      try {
        const free = await runOf('sampled', {}), greedy = await runOf('greedy', { temperature: 0 });
        process.stderr.write(`${name}: sampled accuracy ${pct(free.accuracy)}, ${free.thinking.toFixed(1)} thinking tokens; greedy ${pct(greedy.accuracy)}, ${greedy.thinking.toFixed(1)}\n`);
        const buckets: Record<number, Run> = {};
        if (name === 'RL') {
          for (const b of DEFAULT_BUDGETS) {
            const r = buckets[b] = await runOf(`budget ${b}`, { budget: b });
            process.stderr.write(`  budget ${b}: accuracy ${pct(r.accuracy)}, ${r.thinking.toFixed(1)} thinking tokens, ${pct(r.within!)} within the budget\n`);
          }
        }
        const curve: [number, number][] = [];
        for (const k of caps) { const r = await runOf(`cap ${k}`, { cap: k }); curve.push([k, 100 * r.accuracy]); process.stderr.write(`  cap ${k}: accuracy ${pct(r.accuracy)}\n`); }
        capCurves.push({ name: `${name} adapter, capped at K`, points: curve });
        result[name] = { unconstrained: free, greedy, ...(name === 'RL' ? { budgets: buckets } : {}), capCurve: curve };
      } finally {
        await m.close();
      }
    }
  } finally {
    progress.stop();
  }
  const sft = (result.SFT as { unconstrained: Run }).unconstrained, rl = (result.RL as { unconstrained: Run }).unconstrained;
  const sftG = (result.SFT as { greedy: Run }).greedy, rlG = (result.RL as { greedy: Run }).greedy;
  result.thinking_reduction = 1 - rl.thinking / sft.thinking;
  result.accuracy_change_points = 100 * (rl.accuracy - sft.accuracy);
  const date = new Date().toISOString().slice(0, 10);
  const rlb = (result.RL as { budgets: Record<number, Run> }).budgets;
  const md = [`# Budget forcing ${date}`, '', `${items.length} hard items of the synthetic test split, no budget line in the prompt; sampled at temperature 1 (one sample per item, seed = item index) unless marked greedy.`, '',
    '| adapter | accuracy | mean thinking tokens | greedy accuracy | greedy thinking tokens |', '|---|---:|---:|---:|---:|',
    `| SFT | ${(100 * sft.accuracy).toFixed(1)} % | ${sft.thinking.toFixed(1)} | ${(100 * sftG.accuracy).toFixed(1)} % | ${sftG.thinking.toFixed(1)} |`,
    `| RL (GRPO) | ${(100 * rl.accuracy).toFixed(1)} % | ${rl.thinking.toFixed(1)} | ${(100 * rlG.accuracy).toFixed(1)} % | ${rlG.thinking.toFixed(1)} |`, '',
    `Sampled: thinking tokens ${signed(-100 * (result.thinking_reduction as number))} %, accuracy ${(result.accuracy_change_points as number) >= 0 ? '+' : ''}${(result.accuracy_change_points as number).toFixed(1)} points.`, '',
    'With the budget control line after the invocation (`Thinking budget: N tokens.`), RL adapter:', '',
    '| prompted budget | accuracy | mean thinking | within budget |', '|---:|---:|---:|---:|',
    ...Object.entries(rlb).map(([b, r]) => `| ${b} | ${(100 * r.accuracy).toFixed(1)} % | ${r.thinking.toFixed(1)} | ${(100 * r.within!).toFixed(1)} % |`), '',
    'Accuracy with an inference-time thinking cap K (sampled):', '',
    '| thinking cap K | ' + caps.join(' | ') + ' |', '|---|' + caps.map(() => '---:').join('|') + '|',
    ...capCurves.map((c) => `| ${c.name} | ${c.points.map(([, a]) => `${a.toFixed(1)} %`).join(' | ')} |`), ''].join('\n');
  const stem = publish(o.resultsDir, `budget-${date}`, result, md);
  if (!stem) return result;
  writeSvg(`${stem}-cap.svg`, await lineChart({ title: 'Accuracy vs thinking-token cap (hard items)', x: 'cap K (tokens)', y: 'accuracy (%)', series: capCurves, points: true, logX: true, yDomain: [0, 100] }));
  console.error(`wrote ${stem}-cap.svg`);
  return result;
}

if (isMainModule(import.meta.url)) {
  const a = scriptArgs('bench/budget.ts', { sft: 'string', rl: 'string', items: 'count', 'results-dir': 'string', 'no-write': 'boolean' });
  await runBudgetBench({ sft: a.str('sft'), rl: a.str('rl'), items: a.num('items'), resultsDir: a.resultsDir() });
}

/** A change with its sign: −12.5 or +3.0 (the minus sign, as the tables write it). */
export const signed = (x: number): string => `${x < 0 ? '−' : '+'}${Math.abs(x).toFixed(1)}`;
