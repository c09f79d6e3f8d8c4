import path from 'node:path';
import type { Command } from 'commander';
import { loadModel } from '../runtime/model.ts';
import { datasetCases } from '../eval/harness.ts';
import { makeSplits } from '../tasks/synthetic.ts';
import type { LabelItem } from '../reason/router.ts';
import { trainRouter } from '../reason/router.ts';
import { sharedDir } from './demo.ts';
import { floatArg, intArg, quantArg } from './main.ts';

/** Training and validation questions: the synthetic train/val splits, or GSM8K's train file (its tail as validation). */
/** An AUC for the console: n/a when the labels hold one class only (it is undefined then). */
export const aucText = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : 'n/a (one class only)');

export function labelItems(task: string, train: number, val: number, seed = 0): { train: LabelItem[]; val: LabelItem[] } {
  if (task === 'synthetic') {
    const s = makeSplits({ train, val, test: 0, seed });
    const item = (it: (typeof s.train)[number]): LabelItem => ({ question: it.question, gold: it.answer, task: 'synthetic', category: it.kind === 'chat' ? 'chat' : it.difficulty });
    return { train: s.train.map(item), val: s.val.map(item) };
  }
  if (task === 'gsm8k') {
    const all = datasetCases('gsm8k', path.join(sharedDir(), 'data/gsm8k/train.jsonl'), train + val);
    if (all.length < train + val) throw new Error(`gsm8k train file has ${all.length} questions, fewer than --limit + --val = ${train + val}`);
    return { train: all.slice(0, train), val: all.slice(train) };
  }
  throw new Error(`--task must be synthetic or gsm8k, got "${task}"`);
}

/** "stage: done/total", redrawn in place on a terminal; in a log (not a TTY), one line per tenth and at the end. */
export function progressLine(stage: string, done: number, total: number): void {
  if (process.stderr.isTTY) process.stderr.write(`\r${stage}: ${done}/${total}${done === total ? '\n' : ''}`);
  else if (done === total || done % Math.max(1, Math.ceil(total / 10)) === 0) process.stderr.write(`${stage}: ${done}/${total}\n`);
}

export function trainRouterCommand(program: Command): void {
  program.command('train-router')
    .description('train the reasoning router (a probe on the base model\'s prompt hidden state, plus a confidence gate on the direct answer) and write router.json')
    .requiredOption('--model <path>', 'base model')
    .option('--adapter <dir>', 'reasoning adapter (needed for the default "savings" threshold rule)')
    .option('--task <task>', 'synthetic | gsm8k', 'synthetic')
    .requiredOption('--out <file>', 'router JSON to write')
    .option('--limit <n>', 'training questions', intArg('--limit', 1), 400)
    .option('--val <n>', 'validation questions (threshold choice)', intArg('--val', 1), 100)
    .option('--rule <rule>', 'threshold rule: savings (fewest generated tokens within --max-loss of always-reason accuracy) | accuracy (best routing accuracy)')
    .option('--max-loss <x>', 'accuracy loss allowed by the savings rule (0.01 = 1 point)', floatArg('--max-loss', 0, 1), 0)
    .option('--no-gate', 'no confidence gate on the direct answer (the probe alone decides)')
    .option('--gate-tokens <n>', 'direct-answer tokens the gate watches', intArg('--gate-tokens', 1), 16)
    .option('--max-tokens <n>', 'direct answer length for labelling', intArg('--max-tokens', 1), 64)
    .option('--reasoning-max-tokens <n>', 'reasoning answer length (savings rule)', intArg('--reasoning-max-tokens', 1), 512)
    .option('--max-thinking-tokens <n>', 'thinking cap for the reasoning answers', intArg('--max-thinking-tokens', 0))
    .option('--l2 <x>', 'L2 penalty', floatArg('--l2', 0), 1e-3)
    .option('--steps <n>', 'optimizer steps', intArg('--steps', 1), 500)
    .option('--seed <s>', 'seed of the synthetic items', intArg('--seed'), 0)
    .option('--quant <q>', 'q4 or fp32', quantArg)
    .action(async (o) => {
      if (o.rule !== undefined && o.rule !== 'savings' && o.rule !== 'accuracy') throw new Error(`--rule must be savings or accuracy, got "${o.rule}"`);
      const items = labelItems(o.task, o.limit, o.val, o.seed);
      const model = await loadModel(o.model, { adapter: o.adapter, quant: o.quant });
      try {
        const { router, report } = await trainRouter(model, items.train, {
          val: items.val, rule: o.rule, maxLoss: o.maxLoss, gate: o.gate, gateTokens: o.gateTokens, maxTokens: o.maxTokens, reasoningMaxTokens: o.reasoningMaxTokens,
          maxThinkingTokens: o.maxThinkingTokens, l2: o.l2, steps: o.steps, onProgress: progressLine,
          metadata: { model: o.model, task: o.task, seed: o.seed },
        });
        router.save(o.out);
        const pct = (x: number | undefined) => (x === undefined ? '-' : `${(100 * x).toFixed(1)} %`);
        const gate = report.gate ? `gate: escalate when one of the first ${report.gate.tokens} direct tokens has log-probability < ${report.gate.minLogprob}` : 'no gate';
        console.log(`router → ${o.out} (rule ${report.rule.name}${report.rule.name === 'savings' ? `, max loss ${report.rule.maxLoss}` : ''}, threshold ${report.threshold.toFixed(4)}, ${gate})`);
        console.log(`train: ${report.train.n} questions, ${report.train.positives} need reasoning; probe accuracy at the threshold ${pct(report.train.accuracy)}, AUC ${aucText(report.train.auc)}`);
        const v = report.val;
        if (!report.train.positives || report.train.positives === report.train.n) console.warn(`warning: every training question has the same label (${report.train.positives ? 'reasoning needed' : 'direct answer right'}): the probe cannot learn to route; use more or harder questions`);
        console.log(`val (the threshold and gate were chosen on these, so the figures are optimistic; measure held-out with eval or the bench): ${v.n} questions, ${v.positives} need reasoning; routing accuracy ${pct(v.routingAccuracy)}, probe AUC ${aucText(v.auc)}; reasoning share ${pct(v.reasoningShare)} (escalated by the gate ${pct(v.escalatedShare)})`);
        console.log(`val answers: base ${pct(v.baseAccuracy)}, always-reason ${pct(v.reasoningAccuracy)}, routed ${pct(v.routedAccuracy)}; generated tokens routed ${v.meanTokens?.toFixed(1) ?? '-'} vs always-reason ${v.alwaysReasonTokens?.toFixed(1) ?? '-'}`);
      } finally {
        await model.close();
      }
    });
}
