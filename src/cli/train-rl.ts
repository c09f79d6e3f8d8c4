import fs from 'node:fs';
import path from 'node:path';
import type { EvalCase } from '../eval/harness.ts';
import { readJsonFile, readJsonlLines } from '../io/jsonl.ts';
import type { Command } from 'commander';
import { openSource } from '../io/source.ts';
import { hubRepo } from '../io/hub.ts';
import { loadModelWithProgress } from './load.ts';
import { chatIds, checkRlPromptText, trainRl, type RlPrompt } from '../train/rl.ts';
import type { TextTokenizer } from '../tokenizer/types.ts';
import { makeSplits } from '../tasks/synthetic.ts';
import { isCorrect, TASKS, type Task } from '../tasks/grade.ts';
import { choiceArg, budgetsOption, floatArg, intArg, positiveArg } from './main.ts';
import { beforeDownload, checkOutDir, lockTraining, removeStale, replacedArtefacts } from './outputs.ts';
import { shown } from '../show.ts';

/** Prompts: the synthetic train split's math items, or a JSONL of {"prompt","answer"} lines. */
export function rlPrompts(task: string, limit: number, seed: number): RlPrompt[] {
  if (task === 'synthetic') {
    return makeSplits({ train: limit, val: 0, test: 0, seed: seed + 7, mix: { easy: 0.2, medium: 0.3, hard: 0.5 } }).train
      .map((it) => ({ question: it.question, gold: it.answer }));
  }
  if (!fs.existsSync(task)) throw new Error(`--task must be "synthetic" or a JSONL file of {"prompt","answer"} lines; ${task} does not exist`);
  const rows = readJsonlLines(task, 'prompts').map(({ line: n, value }) => {
    const r = (value ?? {}) as { prompt?: unknown; answer?: unknown };
    // TRL's conversational form (export-trl's data/grpo): a list holding the user's message
    const one = Array.isArray(r.prompt) && r.prompt.length === 1 && r.prompt[0]?.role === 'user' ? r.prompt[0].content : r.prompt;
    if (Array.isArray(r.prompt) && typeof one !== 'string') throw new Error(`${task}:${n}: a "prompt" list must hold one {"role": "user", "content": string} message (train-rl renders it with the chat template), got ${shown(r.prompt).slice(0, 80)}`);
    const need = 'a line needs "prompt" (a string) and "answer" (a string or a number)';
    for (const k of ['prompt', 'answer'] as const) {
      if (r[k] === null) throw new Error(`${task}:${n}: field "${k}" is null (${need})`);
      if (r[k] === undefined) throw new Error(`${task}:${n}: field "${k}" is missing (${need}; this one has ${Object.keys(r).map((x) => JSON.stringify(x)).join(', ') || 'none'})`);
    }
    if (typeof one !== 'string') throw new Error(`${task}:${n}: field "prompt" must be a string (or a list holding the user's message), got ${shown(r.prompt).slice(0, 80)}`);
    if (!(typeof r.answer === 'string' || (typeof r.answer === 'number' && Number.isFinite(r.answer)))) throw new Error(`${task}:${n}: field "answer" must be a string or a finite number, got ${typeof r.answer === 'number' ? 'a number beyond floating point (it reads as Infinity)' : shown(r.answer).slice(0, 80)}`);
    if (!one.trim()) throw new Error(`${task}:${n}: "prompt" is empty`);
    // A number written as a string ("5") is that number: the synthetic grader would otherwise want the reply to be
    // exactly "5", never its "#### 5" line (JSON files hold answers as strings as often as not).
    const numeric = typeof r.answer === 'string' && /^-?\d+(\.\d+)?$/.test(r.answer.trim());
    return { question: one, gold: numeric ? Number(r.answer) : r.answer, line: n };
  });
  if (!rows.length) throw new Error(`${task}: no prompts (expected JSONL lines of {"prompt","answer"})`);
  return rows;
}

/**
 * Whether the SFT adapter read budget lines (train-sft's --budget-lines counts, in its training_log.json): one that
 * never read one takes a line's digits for the problem's, and one that read others meets new numbers. Undefined
 * where it did read them, or where its log does not say (an adapter from elsewhere, or an older train-sft).
 */
export function unreadBudgets(adapter: string, budgets: readonly number[]): string | undefined {
  let lines: { budgets?: unknown; added?: unknown; already?: unknown; traces?: unknown } | undefined;
  try { lines = (readJsonFile(path.join(adapter, 'training_log.json')) as { data?: { train?: { budgetLines?: typeof lines } } }).data?.train?.budgetLines; } catch { return undefined; }
  if (!lines || typeof lines.traces !== 'number' || !lines.traces) return undefined;
  if (!lines.added && !lines.already) return `${adapter} was trained on traces without budget lines (its training_log.json): it may read the budget's digits as part of the problem; train it with train-sft --budget-lines 0.3 --budgets ${budgets.join(',')} first`;
  const read = Array.isArray(lines.budgets) && lines.added ? lines.budgets : undefined;
  const unseen = read ? budgets.filter((b) => !read.includes(b)) : [];
  return unseen.length ? `${adapter} read budget lines of ${read!.join(', ')} tokens in its SFT traces, not of ${unseen.join(', ')} (--budgets): train-sft --budgets ${budgets.join(',')} would show it those` : undefined;
}

/** A gold answer the grader cannot match even in "The answer is <gold>." would give its prompt zero reward forever: refuse it. */
export function checkGolds(prompts: RlPrompt[], grader: Task, file: string): void {
  const replies = (g: string | number) => (grader === 'synthetic' ? [`#### ${g}`, String(g)] : [`The final answer is $\\boxed{${g}}$.`]);
  const bad = prompts.filter((p) => !replies(p.gold).some((r) => isCorrect(grader, r, p.gold)));
  if (bad.length) {
    throw new Error(`${file}: ${bad.length} answer${bad.length > 1 ? 's' : ''} the ${grader} grader can never match, e.g. line ${bad[0].line}: ${JSON.stringify(bad[0].gold)}`
      + ` (give the answer alone, e.g. "5" rather than "5 apples"; or choose another --grader)`);
  }
}

/** --grader (train-rl's, and a --task file's in eval, train-router and train-verifier): one of TASKS. */
function checkGrader(grader: string | undefined): void {
  if (grader !== undefined && !TASKS.includes(grader as Task)) throw new Error(`--grader must be one of ${TASKS.join(', ')}, got "${grader}"`);
}

/** The file --task names: any --task that is none of `builtins` (undefined for those). */
export const ownTaskFile = (task: string, builtins: readonly string[]): string | undefined => (builtins.includes(task) ? undefined : task);

/**
 * What a --task names: one of `builtins` (file undefined), or a file of one's own questions, and the grader of that
 * file's answers (--grader, default gsm8k: the last number; refused beside a built-in task, which grades as its own).
 */
export function taskFileOf(o: { task: string; grader?: string }, builtins: readonly string[]): { file?: string; grader: Task } {
  const file = ownTaskFile(o.task, builtins);
  if (file !== undefined && !fs.existsSync(file)) {
    throw new Error(/\.jsonl?$/i.test(file) ? `--task ${file} does not exist (a JSONL file of {"prompt","answer"} lines, or one of ${builtins.join(', ')})` : `--task must be one of ${builtins.join(', ')}, or a JSONL file of {"prompt","answer"} lines; got "${o.task}"`);
  }
  if (o.grader !== undefined && file === undefined) throw new Error(`--grader grades the answers to a --task file; ${o.task} has its own grader`);
  checkGrader(o.grader);
  return { file, grader: (o.grader ?? 'gsm8k') as Task };
}

/**
 * The questions of a file of one's own (rlPrompts' {"prompt","answer"} lines, their golds checked against `grader`),
 * asked as written, for eval, train-router and train-verifier; given the model's tokenizer, their text is checked as
 * train-rl checks it (no special tokens, no characters it has no token for), and given its context too, each must
 * leave room in it for the adapter's invocation and an answer (train-router and train-verifier, which would meet a
 * longer one minutes in; eval checks its prompts with their instruction itself).
 */
export function fileCases(file: string, grader: Task, model?: { tok: TextTokenizer; ctx?: number; invocation?: number }): EvalCase[] {
  const prompts = rlPrompts(file, Infinity, 0);
  checkGolds(prompts, grader, file);
  if (model) checkRlPromptText(model.tok, prompts, file);
  const { ctx, invocation = 0 } = model ?? {};
  const long = model && ctx !== undefined ? prompts.map((p) => ({ p, n: chatIds(model.tok, p.question).length })).find(({ n }) => n + invocation >= ctx) : undefined;
  if (long) throw new Error(`${file}:${long.p.line}: "prompt" has ${long.n} tokens with the chat template, which leaves no room in the model's context of ${ctx} tokens for ${invocation ? `the adapter's invocation (${invocation} token${invocation > 1 ? 's' : ''}) and ` : ''}an answer: shorten it or leave it out`);
  const name = path.basename(file);
  return prompts.map((p) => ({ id: `${name}:${p.line}`, question: p.question, gold: p.gold, category: name, task: grader }));
}

const outCheck = (o: { out: string; model: string; adapter: string; resume?: boolean; overwrite?: boolean }) =>
  checkOutDir(o.out, { what: 'adapter', inputs: { '--model': o.model, '--adapter': o.adapter }, resume: !!o.resume, overwrite: !!o.overwrite, command: 'train-rl' });

export function trainRlCommand(program: Command): void {
  program.command('train-rl')
    .description('budget forcing: GRPO on a reasoning adapter with a length budget in the prompt')
    .requiredOption('--model <dir>', 'base model')
    .requiredOption('--adapter <dir>', 'the SFT reasoning adapter to start from')
    .option('--task <task>', 'synthetic, or a JSONL file of {"prompt","answer"} (the prompt a string, or a list holding the user message; the answer a number, "5" too, or a text)', 'synthetic')
    .option('--grader <task>', `how answers are graded: ${TASKS.join(' | ')} (default: synthetic for the synthetic task, gsm8k for a file: the last number)`)
    .requiredOption('--out <dir>', 'output adapter folder (not the --adapter one; one that holds a model, adapter or checkpoint is refused without --overwrite or --resume)')
    .addOption(budgetsOption('thinking budget buckets trained'))
    .option('--steps <n>', 'optimizer steps', intArg('--steps', 1), 160)
    .option('--group <n>', 'completions per prompt (G)', intArg('--group', 2), 8)
    .option('--prompts-per-step <n>', 'prompts per step', intArg('--prompts-per-step', 1), 8)
    .option('--unbudgeted-share <x>', 'share of prompts without a budget line (held to the smallest budget: brief by default)', floatArg('--unbudgeted-share', 0, 1), 0.25)
    .option('--penalty <kind>', 'budget (past the prompted budget) or group (past the group mean)', choiceArg('--penalty', ['budget', 'group']), 'budget')
    .option('--lambda <x>', 'length penalty weight: reward loses lambda × (excess / budget), at most 1', floatArg('--lambda', 0), 3)
    .option('--beta <x>', 'KL weight to the SFT adapter', floatArg('--beta', 0), 0)
    .option('--lr <lr>', 'learning rate', positiveArg('--lr'), 1e-4)
    .option('--temperature <t>', 'rollout temperature (above 0: greedy rollouts of a group are all the same, and teach nothing)', positiveArg('--temperature'), 1)
    .option('--max-tokens <n>', 'rollout length limit (thinking + answer; default twice the largest budget)', intArg('--max-tokens', 1))
    .option('--seed <s>', 'seed', intArg('--seed'), 0)
    .option('--checkpoint-every <n>', 'checkpoint every n steps, at the last step, and on Ctrl-C', intArg('--checkpoint-every', 1), 10)
    .option('--resume', 'continue the run saved in <out>/checkpoint (same options; a larger --steps goes on)')
    .option('--overwrite', 'replace the adapter already in --out (its other training files are removed after)')
    .hook('preAction', beforeDownload(outCheck))
    .action(async (o) => {
      checkGrader(o.grader);
      const grader: Task = o.grader ?? (o.task === 'synthetic' ? 'synthetic' : 'gsm8k');
      const prompts = rlPrompts(o.task, 4000, o.seed);
      if (o.task !== 'synthetic') checkGolds(prompts, grader, o.task);
      const budgets: number[] = o.budgets;
      outCheck(o);
      const unread = unreadBudgets(o.adapter, budgets);
      if (unread) process.stderr.write(`train-rl: note: ${unread}\n`);
      const trained = lockTraining(o.out, 'train-rl'); // released when the process exits (Ctrl-C and errors end it, as after the run)
      const src = openSource(o.model);
      if (!src.weights) throw new Error(`train-rl: ${o.model} is a converted folder; train from the original checkpoint`);
      if (o.task !== 'synthetic') checkRlPromptText(src.tokenizer, prompts, o.task); // before the model loads
      const model = await loadModelWithProgress(o.model, { adapter: o.adapter, quant: 'fp32' });
      const before = replacedArtefacts(o.out, o); // recorded once the inputs load; removed after the run (or its --resume), where not rewritten
      try {
        const { history, out } = await trainRl({ config: src.config, weights: src.weights, tokenizer: model.tokenizer, backend: model.backend }, o.adapter,
          prompts, {
            out: o.out, task: grader, budgets, unbudgetedShare: o.unbudgetedShare, steps: o.steps, group: o.group, promptsPerStep: o.promptsPerStep, penalty: o.penalty, lambda: o.lambda,
            beta: o.beta, lr: o.lr, temperature: o.temperature, maxTokens: o.maxTokens, seed: o.seed, checkpointEvery: o.checkpointEvery, resume: !!o.resume,
            baseModel: hubRepo(src.path) ?? src.path, handleSignals: true, ...(o.task !== 'synthetic' ? { promptsFile: o.task } : {}),
          });
        trained();
        const stale = before ? removeStale(o.out, before) : [];
        if (stale.length) process.stderr.write(`train-rl: --overwrite: removed the earlier run's ${stale.join(', ')} from ${o.out}\n`);
        // A run in which every group of every step tied never moved the adapter: say so rather than report it as trained.
        if (history.length && history.every((h) => h.updated === false)) {
          const acc = history.reduce((a, h) => a + h.accuracy, 0) / history.length;
          process.stderr.write(`train-rl: warning: no step changed the adapter: in every group all ${o.group} completions got the same reward (${(100 * acc).toFixed(1)} % of them correct), so there was nothing to learn from, and ${o.out} holds the --adapter's weights; ${acc >= 1 ? 'use prompts the adapter gets wrong some of the time (harder ones), or a higher --temperature for completions that differ more'
            : acc <= 0 ? 'use prompts the adapter answers right some of the time (easier ones, a larger --max-tokens, or a better SFT adapter)' : 'use a larger --group or a higher --temperature, so that completions of a prompt differ'}\n`);
        }
        // A step is a few rollouts of training prompts: its reward swings, so the ends are means over several steps.
        const w = Math.max(1, Math.min(10, Math.floor(history.length / 4))), mean = (hs: typeof history, k: 'reward' | 'accuracy' | 'thinking') => hs.reduce((a, h) => a + h[k], 0) / hs.length;
        const [head, tail] = [history.slice(0, w), history.slice(-w)], over = w === 1 ? 'the first and last steps\' rollouts' : `means of the first and last ${w} steps' rollouts`;
        console.log(`GRPO ${history.length} step${history.length === 1 ? '' : 's'}: reward ${mean(head, 'reward').toFixed(3)} → ${mean(tail, 'reward').toFixed(3)}, accuracy ${(100 * mean(head, 'accuracy')).toFixed(1)} → ${(100 * mean(tail, 'accuracy')).toFixed(1)} %, thinking ${mean(head, 'thinking').toFixed(0)} → ${mean(tail, 'thinking').toFixed(0)} tokens (${over}, on training prompts); adapter in ${out} (curves: rl-curves.svg, rl-length.svg)`);
      } finally {
        await model.close();
      }
    });
}
