import { fraction } from '../show.ts';
import path from 'node:path';
import { TASKS, type Task } from '../tasks/grade.ts';
import { fileCases, ownTaskFile, taskFileOf } from './train-rl.ts';
import { openSource } from '../io/source.ts';
import { readAdapterConfig } from '../io/peft.ts';
import { rescaled } from '../runtime/convert.ts';
import type { TextTokenizer } from '../tokenizer/types.ts';
import type { Command } from 'commander';
import { loadModelWithProgress, ropeScalingOf, ropeScalingOptions } from './load.ts';
import { datasetCases, SYNTHETIC_LIMIT, withInstruction } from '../eval/harness.ts';
import { makeSplits } from '../tasks/synthetic.ts';
import { FIT_STAGE, trainRouter, type LabelItem } from '../reason/router.ts';
import { sharedDir } from './demo.ts';
import { choiceArg, floatArg, intArg, quantArg } from './main.ts';
import { beforeDownload, checkOutFile, holdsFormat } from './outputs.ts';
import { StagedProgress } from '../train/progress.ts';

/** train-router's and train-verifier's --out: a JSON file (`what`), never one of the model's or adapter's; an earlier one of `format` may be replaced. */
export const probeOutCheck = (what: string, example: string, format: string) => (o: { out: string; model: string; adapter?: string; overwrite?: boolean; task: string }) =>
  checkOutFile(o.out, { what, example, overwrite: !!o.overwrite, inputs: { '--adapter': o.adapter, '--model': o.model }, inputFiles: { '--task': ownTaskFile(o.task, LABEL_TASKS) }, replaceable: holdsFormat(format) });
const outCheck = probeOutCheck('router JSON', 'router.json', 'edgereason-router');

/** An AUC for the console: n/a, and why, when it is undefined (by default: the labels hold one class only). */
export const aucText = (x: number, undefinedWhen = 'one class only'): string => (Number.isFinite(x) ? x.toFixed(3) : `n/a (${undefinedWhen})`);

/**
 * A model's tokenizer and context (its RoPE scaling's, as asked), which a --task file is checked against; `invocation`:
 * the tokens the reasoning route puts after a prompt (the adapter's).
 */
export interface ModelText { tok: TextTokenizer; ctx: number; invocation: number }

/** `--model`'s ModelText, read before it loads (undefined where it cannot be: the load then names the problem). */
export function modelText(o: Parameters<typeof ropeScalingOf>[0] & { model: string; adapter?: string }): ModelText | undefined {
  try {
    const src = openSource(o.model), invocation = o.adapter ? readAdapterConfig(o.adapter).aloraInvocationTokens?.length ?? 0 : 0;
    return { tok: src.tokenizer, ctx: rescaled(src, ropeScalingOf(o)).config.maxPositionEmbeddings, invocation };
  } catch { return undefined; }
}

/**
 * Training and validation questions: the synthetic train/val splits, or GSM8K's train file (its tail as validation),
 * bare and with eval's instruction by turns, or a file of one's own (its first lines, the next as validation), graded by `grader`.
 */
export function labelItems(task: string, train: number, val: number, seed = 0, command = 'train-router', grader: Task = 'gsm8k', model?: () => ModelText | undefined): { train: LabelItem[]; val: LabelItem[] } {
  if (task === 'synthetic') {
    // The items are made before the model loads: 10^8 of them filled memory for minutes, silently.
    if (train + val > SYNTHETIC_LIMIT) throw new Error(`${command}: --limit ${train} and --val ${val} make ${train + val} synthetic questions, more than a training takes (at most ${SYNTHETIC_LIMIT}); ask for fewer`);
    const s = makeSplits({ train, val, test: 0, seed });
    const item = (it: (typeof s.train)[number]): LabelItem => ({ question: it.question, gold: it.answer, task: 'synthetic', category: it.kind === 'chat' ? 'chat' : it.difficulty });
    return { train: s.train.map(item), val: s.val.map(item) };
  }
  if (task === 'gsm8k') {
    // The probe reads the prompts it will route: requests ask bare questions, eval adds its instruction (MATH_INSTRUCTION).
    // Every other question is asked each way (labelled as asked), so both forms are in its training and validation.
    const bare = datasetCases('gsm8k', path.join(sharedDir(), 'data/gsm8k/train.jsonl'), train + val, command, false);
    if (bare.length < train + val) throw new Error(`gsm8k train file has ${bare.length} questions, fewer than --limit + --val = ${train + val}`);
    const all = bare.map((c, i) => (i % 2 ? { ...c, question: withInstruction(c.question) } : c));
    return { train: all.slice(0, train), val: all.slice(train) };
  }
  const all = fileCases(task, grader, model?.());
  if (all.length < train + val) throw new Error(`${command}: ${task} has ${all.length} questions, fewer than --limit + --val = ${train + val}${all.length > 1 ? ` (e.g. --limit ${all.length - Math.max(1, Math.floor(all.length / 5))} --val ${Math.max(1, Math.floor(all.length / 5))})` : ''}`);
  return { train: all.slice(0, train), val: all.slice(train, train + val) };
}

/** The built-in tasks train-router and train-verifier take (a --task file besides). */
export const LABEL_TASKS = ['synthetic', 'gsm8k'];

/** train-router's and train-verifier's --task and --grader (taskFileOf reads them). */
export const labelTaskOptions = (command: Command): Command => command
  .option('--task <task>', 'synthetic | gsm8k | a JSONL file of your own {"prompt","answer"} lines (as train-rl takes them; the first --limit to train, the next --val to validate)', 'synthetic')
  .option('--grader <task>', `how the answers to a --task file are graded: ${TASKS.join(' | ')} (default gsm8k: the last number)`);

/**
 * The progress of a command's stages (a bar with items/s and ETA on a terminal, a line now and then in a log);
 * Ctrl-C stops the bar, says where the command was and that `nothing` was written, and exits 130.
 */
export function stageProgress(command: string, unit: string, nothing: string): StagedProgress {
  return new StagedProgress({ itemUnit: unit, units: { [FIT_STAGE]: 'steps' }, interrupt: (stage, done, total) => `${command}: interrupted ${stage ? `during ${stage} at ${done}/${total}` : 'before the first question'}; ${nothing}` });
}

export function trainRouterCommand(program: Command): void {
  ropeScalingOptions(labelTaskOptions(program.command('train-router'))
    .description('train the reasoning router (a probe on the base model\'s prompt hidden state, plus a confidence gate on the direct answer) and write router.json')
    .requiredOption('--model <path>', 'base model')
    .option('--adapter <dir>', 'reasoning adapter: required by the savings rule (the default); optional with --rule accuracy')
    .option('--native-thinking', 'the model thinks by itself (e.g. Qwen3): both routes on its own weights, no --adapter')
    .requiredOption('--out <file>', 'router JSON to write')
    .option('--limit <n>', 'training questions', intArg('--limit', 1), 400)
    .option('--val <n>', 'validation questions (threshold choice)', intArg('--val', 1), 100)
    .option('--rule <rule>', 'threshold rule: savings (fewest generated tokens within --max-loss of always-reason accuracy, needs --adapter or --native-thinking) | accuracy (best routing accuracy)', choiceArg('--rule', ['savings', 'accuracy']), 'savings')
    .option('--max-loss <x>', 'accuracy loss allowed by the savings rule (0.01 = 1 point; savings rule only)', floatArg('--max-loss', 0, 1), 0)
    .option('--no-gate', 'no confidence gate on the direct answer (the probe alone decides)')
    .option('--gate-tokens <n>', 'direct-answer tokens the gate watches (not with --no-gate)', intArg('--gate-tokens', 1), 16)
    .option('--max-tokens <n>', 'direct answer length for labelling', intArg('--max-tokens', 1), 64)
    .option('--reasoning-max-tokens <n>', 'reasoning answer length (savings rule)', intArg('--reasoning-max-tokens', 1), 512)
    .option('--max-thinking-tokens <n>', 'thinking cap for the reasoning answers', intArg('--max-thinking-tokens', 0))
    .option('--l2 <x>', 'L2 penalty', floatArg('--l2', 0), 1e-3)
    .option('--steps <n>', 'optimizer steps', intArg('--steps', 1), 500)
    .option('--seed <s>', 'seed of the synthetic items', intArg('--seed'), 0)
    .option('--quant <q>', 'q4, q8 or fp32', quantArg))
    .option('--overwrite', 'replace the router JSON already at --out')
    // The flags that contradict each other or go unused are refused before anything is read or downloaded (an hf: model).
    .hook('preAction', (_, cmd) => {
      const o = cmd.opts(), given = (k: string) => cmd.getOptionValueSource(k) === 'cli';
      if (o.nativeThinking && o.adapter) throw new Error('train-router: --native-thinking routes between the model\'s own thinking and direct answers: leave --adapter out');
      if (o.rule === 'savings' && !o.adapter && !o.nativeThinking) {
        throw new Error(`train-router: the savings rule${given('rule') ? '' : ' (the default)'} needs --adapter <reasoning adapter> to measure always-reason accuracy and tokens; pass --adapter (--native-thinking for a model that thinks by itself), or --rule accuracy to route by the base model's answers alone`);
      }
      // Flags the chosen rule or gate does not use: refused before the run (a warning scrolls away in a long one).
      const unused = (why: string, flags: [string, string][]) => {
        const f = flags.filter(([k]) => given(k)).map(([, name]) => name);
        if (f.length) throw new Error(`train-router: ${f.join(', ')} would have no effect: ${why}; drop ${f.length === 1 ? 'it' : 'them'}`);
      };
      if (o.rule === 'accuracy') unused('the accuracy rule generates no reasoning answers (they serve the savings rule)', [['maxLoss', '--max-loss'], ['reasoningMaxTokens', '--reasoning-max-tokens'], ['maxThinkingTokens', '--max-thinking-tokens']]);
      if (!o.gate) unused('--no-gate searches no gate', [['gateTokens', '--gate-tokens']]);
      if (o.task !== 'synthetic') unused(`the ${o.task} items are the first of ${o.task === 'gsm8k' ? 'its train file' : 'the file'}`, [['seed', '--seed']]);
    })
    .hook('preAction', beforeDownload(outCheck))
    .action(async (o) => {
      outCheck(o);
      const items = labelItems(o.task, o.limit, o.val, o.seed, 'train-router', taskFileOf(o, LABEL_TASKS).grader, () => modelText(o));
      const model = await loadModelWithProgress(o.model, { adapter: o.adapter, quant: o.quant, ropeScaling: ropeScalingOf(o) });
      const progress = stageProgress('train-router', 'questions', `nothing was written to ${o.out}`);
      try {
        const { router, report } = await trainRouter(model, items.train, {
          val: items.val, rule: o.rule, maxLoss: o.maxLoss, gate: o.gate, gateTokens: o.gateTokens, maxTokens: o.maxTokens, reasoningMaxTokens: o.reasoningMaxTokens,
          maxThinkingTokens: o.maxThinkingTokens, nativeThinking: !!o.nativeThinking, l2: o.l2, steps: o.steps, onProgress: (s, d, t) => progress.update(s, d, t),
          metadata: { model: o.model, task: o.task, ...(o.task === 'synthetic' ? { seed: o.seed } : {}) },
        });
        progress.stop();
        outCheck(o); // again: a file may have come to --out while it trained
        router.save(o.out);
        const pct = (x: number | undefined) => (x === undefined ? '-' : `${(100 * x).toFixed(1)} %`);
        const gate = report.gate ? `gate: escalate when one of the first ${report.gate.tokens} direct tokens has log-probability < ${report.gate.minLogprob}` : 'no gate';
        console.log(`router → ${o.out} (rule ${report.rule.name}${report.rule.name === 'savings' ? `, max loss ${report.rule.maxLoss}` : ''}, threshold ${fraction(report.threshold, 4)}, ${gate})`);
        const cut = report.cut;
        if (cut.direct) console.warn(`train-router: note: ${cut.direct} of ${report.train.n + report.val.n} direct answers were cut off at --max-tokens ${o.maxTokens} and graded as they stand (most as wrong: labelled as needing reasoning); a larger --max-tokens lets them finish`);
        if (cut.reasoning) console.warn(`train-router: note: ${cut.reasoning} of ${report.val.n} reasoning answers were cut off at --reasoning-max-tokens ${o.reasoningMaxTokens} and graded as they stand (always-reason accuracy counts them); a larger --reasoning-max-tokens lets them finish`);
        console.log(`train: ${report.train.n} questions, ${report.train.positives} need reasoning; probe accuracy at the threshold ${pct(report.train.accuracy)}, AUC ${aucText(report.train.auc)}`);
        const v = report.val;
        if (!report.train.positives || report.train.positives === report.train.n) console.warn(`train-router: warning: every training question has the same label (${report.train.positives ? 'reasoning needed: the base answered none of them right directly' : 'direct answer right: the base answered every one directly'}): the probe cannot learn to route; use more questions, ${report.train.positives ? 'with easier ones among them' : 'with harder ones among them'}`);
        console.log(`val (the threshold and gate were chosen on these, so the figures are optimistic; measure held-out with eval or the bench): ${v.n} questions, ${v.positives} need reasoning; routing accuracy ${pct(v.routingAccuracy)}, probe AUC ${aucText(v.auc)}; reasoning share ${pct(v.reasoningShare)} (escalated by the gate ${pct(v.escalatedShare)})`);
        console.log(`val answers: base ${pct(v.baseAccuracy)}, always-reason ${pct(v.reasoningAccuracy)}, routed ${pct(v.routedAccuracy)}; generated tokens routed ${v.meanTokens?.toFixed(1) ?? '-'} vs always-reason ${v.alwaysReasonTokens?.toFixed(1) ?? '-'}`);
      } finally {
        progress.stop();
        await model.close();
      }
    });
}
