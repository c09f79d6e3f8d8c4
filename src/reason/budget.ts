/**
 * Budget-conditioned reasoning: the thinking budget a request asks for is a control line right after the
 * adapter's invocation ("<think>\nThinking budget: 96 tokens.\n…"), the same text in SFT traces, RL rollouts and
 * at inference, so one adapter serves several budgets. It sits inside the adapter's turn, not in the system
 * prompt: the base prefill the router reads and the direct route answers from stays the same for every budget.
 */
import fs from 'node:fs';
import path from 'node:path';
import { shown } from '../show.ts';
import { readJsonFile } from '../io/jsonl.ts';
import type { TextTokenizer } from '../tokenizer/types.ts';

export const budgetSystemLine = (budget: number): string => `Thinking budget: ${budget} tokens.`;
/** A text that opens with a budget line (a trace's thinking that holds one already). */
export const BUDGET_LINE = /^\s*Thinking budget: \d+ tokens\./;

/**
 * Token ids fed after the invocation for a budget: the ids an SFT trace "<think>\nThinking budget: 96 tokens.\n…"
 * holds from the invocation to its thinking. So the line follows a newline only where the invocation does not end
 * in one (Qwen2.5's "<think>\n" ends in a ">\n" token), and its closing newline is fed where the tokenizer joins it
 * to the line's last token (Qwen's ".\n"); a newline that is a token of its own is the model's to write, as after
 * an invocation alone.
 */
export function budgetControl(tok: Pick<TextTokenizer, 'encode' | 'decode'>, budget: number, invocation: readonly number[]): number[] {
  if (!Number.isInteger(budget) || budget <= 0) throw new Error(`answer: budget must be a positive integer number of tokens, got ${shown(budget)}`);
  const enc = (t: string) => tok.encode(t, { addSpecialTokens: false });
  const opened = invocation.length > 0 && tok.decode(invocation.slice(-1), { skipSpecialTokens: false }).endsWith('\n');
  const text = `${opened ? '' : '\n'}${budgetSystemLine(budget)}`, line = enc(text), closed = enc(`${text}\n`);
  const apart = closed.length === line.length + 1 && line.every((t, i) => closed[i] === t);
  return apart ? line : closed;
}

/**
 * The default buckets RL trains and the server's reasoning_effort maps onto. Sized for the embedded model's
 * synthetic world: a concise trace of a hard (4–8 step) item takes 44–86 thinking tokens, a verbose one 100–560.
 */
export const DEFAULT_BUDGETS = [96, 160, 256] as const;

/** Refuses a budget listed twice (its bucket would be drawn twice as often); `names`: the list's words ("--budgets names"). */
export function checkDistinctBudgets(budgets: readonly number[], names: string): void {
  const twice = budgets.find((b, i) => budgets.indexOf(b) !== i);
  if (twice !== undefined) throw new Error(`${names} ${twice} twice (${budgets.join(',')}): a bucket listed twice is drawn twice as often; list each once`);
}

/**
 * Said when a budget line goes to an adapter that train-rl did not budget-train (no budgets beside it), or names a
 * budget outside the range of those it was trained on (which it was never taught to hold to); undefined otherwise.
 */
export function budgetNote(adapterDir: string, budget: number): string | undefined {
  const trained = rlBudgets(adapterDir);
  if (!trained.length) return `${adapterDir} was not budget-trained by train-rl (no budgets in an rl_log.json beside it), so the budget line may not shorten its thinking`;
  if (budget < trained[0] || budget > trained.at(-1)!) return `${adapterDir} was budget-trained on budgets of ${trained.join(', ')} tokens (its rl_log.json): a budget of ${budget}, outside their range, may not be held to (it may even be read as part of the question); give one from ${trained[0]} to ${trained.at(-1)}`;
  return undefined;
}

/**
 * The budget buckets an adapter was RL-trained on (train-rl's rl_log.json beside it), ascending; [] = none (no log, or
 * one without budgets). A log that cannot be read is refused, naming it: read as none, it changed what budgets do unsaid.
 */
export function rlBudgets(adapterDir: string): number[] {
  const f = path.join(adapterDir, 'rl_log.json');
  if (!fs.existsSync(f)) return [];
  const log = readJsonFile(f);
  if (!log || typeof log !== 'object' || Array.isArray(log)) throw new Error(`${f} (train-rl's log): expected a JSON object, got ${shown(log)}`);
  const b = (log as { budgets?: unknown }).budgets;
  if (b === undefined) return [];
  if (!Array.isArray(b) || b.some((x) => !Number.isInteger(x) || x < 1)) throw new Error(`${f} (train-rl's log): budgets must be a list of positive integers (the thinking budgets it trained on), got ${shown(b)}`);
  return [...(b as number[])].sort((a, c) => a - c);
}

