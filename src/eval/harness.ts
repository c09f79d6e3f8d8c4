/**
 * The eval harness: questions in, graded answers out, with accuracy, generated and thinking tokens, TTFT,
 * latency (p50/p90) and tokens/s per category. Reasoning mode appends the invocation ("<think>", or the
 * adapter's own invocation tokens) to the chat prompt and runs the adapter as answer() does: an activated one
 * from the invocation on, a plain LoRA on the whole sequence. A model that thinks by itself (nativeThinking) runs
 * both modes on its own weights, its direct answers after an empty thinking block, as answer() does.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Model } from '../runtime/model.ts';
import { checkKeys } from '../runtime/options.ts';
import { shown } from '../show.ts';
import { seedAt, SAMPLING_OPTIONS } from '../runtime/sampler.ts';
import { ContextLengthError } from '../runtime/errors.ts';
import { checkGenerateOptions, generateBatch, type FinishReason, type GenerateOptions } from '../runtime/generate.ts';
import { answer, checkNativeThinking, checkThinkingRoom, reasoningTokens, thinkingModelPrompt, thinkingOptions } from '../reason/answer.ts';
import type { AnswerOptions } from '../reason/types.ts';
import type { Router } from '../reason/router.ts';
import type { Verifier } from '../reason/verifier.ts';
import { budgetControl } from '../reason/budget.ts';
import { readJsonlLines } from '../io/jsonl.ts';
import { checkQuestions, extractAnswer, isCorrect, type Task } from '../tasks/grade.ts';
import { makeSplits, type Item, type Mix } from '../tasks/synthetic.ts';

export interface EvalCase { id: string; question: string; gold: string | number; category: string; task: Task }

/** Generation options as eval takes them: not the decoding constraint, the thinking segment (reasoning says it) or per-token top log-probabilities and prompt lookup. */
export interface EvalOptions extends Omit<GenerateOptions, 'allowedNext' | 'thinking' | 'topLogprobs' | 'promptLookup' | 'minTokens' | 'ignoreEos'> {
  /** Reason: the invocation after the chat prompt, with the reasoning adapter on (see the header). */
  reasoning?: boolean;
  /** Invocation text for an adapter that names no invocation tokens (default "<think>"); one that differs from the adapter's own is refused. */
  invocation?: string;
  /** Prompts decoded together (1 = per-request latency). */
  batch?: number;
  /** Reasoning mode: the thinking cap, as answer()'s maxThinkingTokens ("\n</think>\n\n" forced after it). */
  maxThinkingTokens?: number;
  /** The model thinks by itself (answer()'s nativeThinking): no adapter in either mode. */
  nativeThinking?: boolean;
  /** Reasoning mode: the thinking budget line fed after the invocation, as answer()'s budget (a budget-trained adapter). */
  budget?: number;
  /** Called after each batch: cases answered so far (resumed ones included), their total, and the batch's results. */
  onCase?: (done: number, total: number, results: CaseResult[]) => void;
  /**
   * Results of the first cases from an interrupted run, in case order (eval's journal): those cases are not asked
   * again, and the report holds these results as they are.
   */
  done?: CaseResult[];
}

export interface CaseResult {
  id: string; category: string; correct: boolean; text: string;
  /** The gold answer, and the answer the grader read from the text (none: it found none, or the thinking never closed). */
  gold: string | number; extracted: string | null;
  tokens: number; thinkingTokens: number; ttftMs: number; latencyMs: number;
  /** "length": the answer was cut off by maxTokens (or the context), so it may end mid-answer. */
  finishReason: FinishReason;
  /** This case's share of the wall time of its batch (by tokens generated): what tokens/s divides by. */
  wallShareMs: number;
  /** The route taken: "reasoning" for every case of a reasoning run, the router's choice in a routed one (runAnswerEval). */
  route?: 'direct' | 'reasoning';
  /** runAnswerEval: the router's gate dropped the direct answer and the case escalated to reasoning. */
  escalated?: boolean;
  /** runAnswerEval with several samples: the votes of their answers (tokens and thinkingTokens are summed over the samples). */
  votes?: Record<string, number>;
}

export interface Summary {
  n: number; accuracy: number;
  /** The share of cases answered on the reasoning route (escalations included). */
  reasoned?: number;
  /** Answers cut off by maxTokens (graded as they stand). */
  cut: number;
  meanTokens: number; meanThinkingTokens: number;
  ttftP50: number; ttftP90: number; latencyP50: number; latencyP90: number; tokensPerSec: number;
}

export interface EvalReport { options: Record<string, unknown>; summary: Record<string, Summary>; cases: CaseResult[] }

const EVAL_OPTIONS = ['reasoning', 'invocation', 'batch', 'maxThinkingTokens', 'nativeThinking', 'budget', 'onCase', 'done', 'maxTokens', 'seed', 'stop', 'stopTokens', ...SAMPLING_OPTIONS.filter((k) => k !== 'topLogprobs'), 'adapter', 'adapterFrom'];

/** runEval's inputs, checked before any work (a bad batch size would loop forever, a bad case fail after the others). */
function checkEvalInputs(cases: EvalCase[], o: EvalOptions, vocabSize: number): void {
  checkKeys(o, EVAL_OPTIONS, 'eval');
  if (o.batch !== undefined && !(Number.isInteger(o.batch) && o.batch >= 1)) throw new Error(`eval: batch must be an integer ≥ 1, got ${shown(o.batch)}`);
  if (o.maxThinkingTokens !== undefined && !(Number.isInteger(o.maxThinkingTokens) && o.maxThinkingTokens >= 0)) throw new Error(`eval: maxThinkingTokens must be an integer ≥ 0, got ${shown(o.maxThinkingTokens)}`);
  for (const k of ['reasoning', 'nativeThinking'] as const) if (o[k] !== undefined && typeof o[k] !== 'boolean') throw new Error(`eval: ${k} must be true or false, got ${shown(o[k])}`);
  if (o.onCase !== undefined && typeof o.onCase !== 'function') throw new Error(`eval: onCase must be a function (done, total, results) => void, got ${typeof o.onCase}`);
  checkGenerateOptions(o, vocabSize);
  checkQuestions(cases, { list: 'cases must be a list of { id, question, gold, category, task } (syntheticCases, datasetCases)', item: (i) => `case ${i}`, shape: 'id, question: string, gold: string or number, category' }, 'eval');
  if (o.done !== undefined) {
    if (!Array.isArray(o.done) || o.done.length > cases.length) throw new Error(`eval: done must be a list of the results of the first cases (at most ${cases.length}), got ${Array.isArray(o.done) ? `${o.done.length} results` : shown(o.done)}`);
    const k = o.done.findIndex((r, i) => r?.id !== cases[i].id);
    if (k >= 0) throw new Error(`eval: done[${k}] is the result of case ${shown(o.done[k]?.id)}, but case ${k} is ${cases[k].id}: done must hold the first cases' results in order`);
  }
}

export async function runEval(model: Model, cases: EvalCase[], o: EvalOptions = {}): Promise<EvalReport> {
  checkEvalInputs(cases, o, model.config.vocabSize);
  const tok = model.tokenizer, batch = o.batch ?? 1, results: CaseResult[] = [...(o.done ?? [])];
  // The adapter's own invocation when it names one (activated LoRA: on from there), as answer() uses it; a plain
  // LoRA applies to the whole sequence.
  const { onCase, reasoning, invocation: invocationText, maxThinkingTokens, nativeThinking: native, budget, batch: _, done: _done, ...gen } = o;
  const aloraTokens = model.adapter?.config.aloraInvocationTokens;
  if (native && model.adapter) throw new Error(`eval: nativeThinking evaluates the model's own thinking, but it was loaded with the adapter ${model.adapter.dir}`);
  if (native) checkNativeThinking(model, 'eval');
  if (reasoning && !model.adapter && !native) throw new Error('eval: reasoning mode needs the model loaded with an adapter (the adapter option of loadModel), or nativeThinking for a model that thinks by itself');
  if (maxThinkingTokens !== undefined && !reasoning) throw new Error('eval: maxThinkingTokens applies to reasoning mode');
  if (budget !== undefined && (!reasoning || native)) throw new Error('eval: budget is the control line a budget-trained adapter reads after its invocation: it applies to reasoning mode with an adapter');
  const rt = reasoning ? reasoningTokens(model, invocationText, 'eval') : undefined;
  if (rt && maxThinkingTokens !== undefined) checkThinkingRoom(rt, maxThinkingTokens, gen.maxTokens ?? 256, 'eval', 'maxTokens', gen.maxTokens === undefined); // generate's default
  const control = budget !== undefined ? budgetControl(tok, budget, rt?.invocation ?? []) : []; // fed after the invocation, as answer() does
  const invocation = [...(rt?.invocation ?? []), ...control], nativeInvocation = native ? (rt ?? reasoningTokens(model, invocationText, 'eval')).invocation : []; // the direct route's empty block needs it too
  // Every prompt is built (and checked against the context) before the first is answered: a question too long for
  // the model is named by its id (file:line) instead of failing as "prompt 0" of a batch, minutes in.
  const ctx = model.config.maxPositionEmbeddings, start = results.length; // (the cases a journal already answered are not built again)
  const allPrompts = cases.slice(start).map((c) => {
    // A thinking model: as answer() builds it (the template may have opened the thinking, or written the empty block).
    const ids = model.encode([{ role: 'user', content: c.question }]);
    const p = { ids: native ? thinkingModelPrompt(tok, ids, nativeInvocation, !!reasoning) : [...ids, ...invocation], from: ids.length };
    if (p.ids.length >= ctx) throw new ContextLengthError(`eval: case ${c.id} has ${p.ids.length} tokens with the chat template${p.ids.length > ids.length ? ' and the thinking tags' : ''}, which leaves no room to answer in the model's context of ${ctx} tokens`, p.ids.length + 1, ctx);
    return p;
  });
  for (let i = start; i < cases.length; i += batch) {
    const group = cases.slice(i, i + batch), prompts = allPrompts.slice(i - start, i - start + batch);
    // A given seed makes the run reproducible, case j drawing with seed + j.
    const opts = prompts.map((p, k): GenerateOptions => ({
      ...gen,
      ...(reasoning && !native ? { adapter: true, adapterFrom: aloraTokens ? p.from : 0 } : {}),
      ...(rt ? { thinking: thinkingOptions(rt, maxThinkingTokens) } : {}),
      ...(o.seed !== undefined ? { seed: seedAt(o.seed, i + k) } : {}),
    }));
    const out = await generateBatch(model.backend, tok, prompts.map((p) => p.ids), opts);
    // The batch's wall time, shared by tokens generated (an equal share credited short answers with long ones' time).
    const wall = Math.max(...out.map((x) => x.totalMs)), generated = out.reduce((a, x) => a + x.tokens.length, 0);
    const fresh = out.map((c, k): CaseResult => {
      const closed = c.thinking?.closed ?? true, { task, gold } = group[k]; // the segment's tokens and whether it closed, as answer() counts them
      return {
        // In reasoning mode an output whose thinking never closed has no answer (its last number is not one).
        id: group[k].id, category: group[k].category, ...graded(task, c.text, gold, closed), text: c.text, gold,
        tokens: c.tokens.length, thinkingTokens: c.thinking?.tokens ?? 0, ttftMs: c.ttftMs, latencyMs: c.totalMs, finishReason: c.finishReason,
        wallShareMs: generated ? (wall * c.tokens.length) / generated : wall / out.length, route: reasoning ? 'reasoning' : 'direct',
      };
    });
    results.push(...fresh);
    onCase?.(results.length, cases.length, fresh);
  }
  const { onCase: _onCase, done: _resumed, ...options } = o;
  return report(options, results);
}

/** A case's grade: whether `text` answers `gold`, and the answer read from it; none when there is no answer to read (`answered` false). */
const graded = (task: Task, text: string, gold: string | number, answered: boolean): Pick<CaseResult, 'correct' | 'extracted'> =>
  ({ correct: answered && isCorrect(task, text, gold), extracted: answered ? extractAnswer(task, text) ?? null : null });

/** A report of `results`: the summary of all cases and of each category. */
function report(options: Record<string, unknown>, results: CaseResult[]): EvalReport {
  const summary: Record<string, Summary> = { all: summarize(results) };
  for (const cat of [...new Set(results.map((r) => r.category))].sort()) summary[cat] = summarize(results.filter((r) => r.category === cat));
  return { options, summary, cases: results };
}

/** runAnswerEval's options: answer()'s (its task is each case's), one question at a time. */
const NOT_EVAL_OPTIONS = ['task', 'onText', 'onSampleEnd', 'onRoute', 'signal', 'collectHidden', 'stop'] as const;
export type AnswerEvalOptions = Omit<AnswerOptions, typeof NOT_EVAL_OPTIONS[number]> & Pick<EvalOptions, 'onCase' | 'done'>;

/**
 * Each case answered by answer(), as the product answers a request: routed (reasoning "auto" with a router, its gate
 * included), several samples and their vote, the thinking cap and budget. One question at a time (answer() batches a
 * question's samples, not questions), so latency and TTFT are a request's. A case's tokens are all it generated:
 * every sample's, and an escalated case's dropped direct attempt; its text is the chosen sample's thinking and answer.
 * Case i draws with seed + i × samples (answer()'s sample j with seed + i × samples + j).
 */
export async function runAnswerEval(model: Model, cases: EvalCase[], o: AnswerEvalOptions = {}, aux: { router?: Router; verifier?: Verifier } = {}): Promise<EvalReport> {
  const { onCase, done, ...opts } = o;
  // answer()'s options that a graded case cannot take (its task is the case's; a stopped or streamed answer is not graded as asked).
  const foreign = NOT_EVAL_OPTIONS.filter((k) => (o as Record<string, unknown>)[k] !== undefined);
  if (foreign.length) throw new Error(`eval: ${foreign.join(', ')} ${foreign.length > 1 ? 'are answer() options' : 'is an answer() option'} that runAnswerEval does not take (each case's task is its own, and every case is answered whole)`);
  checkEvalInputs(cases, { onCase, done }, model.config.vocabSize);
  const results: CaseResult[] = [...(done ?? [])], n = opts.samples ?? 1;
  for (let i = results.length; i < cases.length; i++) {
    const c = cases[i];
    const r = await answer(model, c.question, { ...opts, task: c.task, ...(opts.seed !== undefined ? { seed: seedAt(opts.seed, i * n) } : {}) }, aux);
    const answered = r.finishReason !== 'cancelled';
    // The chosen sample's text as generated, as runEval records a case's (its tags where the model wrote them: a thinking never closed has none).
    const text = r.route === 'reasoning' ? model.tokenizer.decode(r.samples[r.chosen].tokenIds, { skipSpecialTokens: true, cleanUp: false }) : r.answer;
    const one: CaseResult = {
      id: c.id, category: c.category, ...graded(c.task, r.answer, c.gold, answered), text, gold: c.gold,
      tokens: r.usage.completionTokens, thinkingTokens: r.usage.thinkingTokens, ttftMs: r.ttftMs, latencyMs: r.latencyMs,
      finishReason: r.finishReason, wallShareMs: r.latencyMs, route: r.route,
      ...(r.escalation ? { escalated: true } : {}), ...(r.votes && n > 1 ? { votes: r.votes } : {}),
    };
    results.push(one);
    onCase?.(results.length, cases.length, [one]);
  }
  return report(opts, results);
}

export function summarize(rs: CaseResult[]): Summary {
  const mean = (f: (r: CaseResult) => number) => rs.reduce((s, r) => s + f(r), 0) / Math.max(1, rs.length);
  const pct = (f: (r: CaseResult) => number, p: number) => {
    const v = rs.map(f).sort((a, b) => a - b);
    return v.length ? v[Math.max(0, Math.ceil(p * v.length) - 1)] : 0; // nearest rank
  };
  const time = rs.reduce((s, r) => s + (r.wallShareMs ?? r.latencyMs), 0) / 1000;
  return {
    n: rs.length, accuracy: mean((r) => (r.correct ? 1 : 0)), ...(rs.every((r) => r.route) ? { reasoned: mean((r) => (r.route === 'reasoning' ? 1 : 0)) } : {}), cut: rs.filter((r) => r.finishReason === 'length').length, meanTokens: mean((r) => r.tokens), meanThinkingTokens: mean((r) => r.thinkingTokens),
    ttftP50: pct((r) => r.ttftMs, 0.5), ttftP90: pct((r) => r.ttftMs, 0.9), latencyP50: pct((r) => r.latencyMs, 0.5), latencyP90: pct((r) => r.latencyMs, 0.9),
    tokensPerSec: rs.reduce((s, r) => s + r.tokens, 0) / Math.max(time, 1e-9),
  };
}

/** The most synthetic questions one evaluation generates (100,000: over an hour of answers on 2 cores). */
export const SYNTHETIC_LIMIT = 100_000;

/** The synthetic test split (or val) as eval cases, categorised easy / medium / hard / chat. */
export function syntheticCases(split: 'test' | 'val', limit: number, seed = 0, mix?: Mix): EvalCase[] {
  if (split !== 'test' && split !== 'val') throw new Error(`eval: the synthetic split must be "test" or "val", got ${shown(split)}`);
  if (!(Number.isInteger(limit) && limit >= 1)) throw new Error(`eval: limit must be an integer ≥ 1, got ${shown(limit)}`);
  // Items are generated (and kept distinct) before the first is asked: 10^8 of them filled memory for minutes, silently.
  if (limit > SYNTHETIC_LIMIT) throw new Error(`eval: limit ${limit} is more synthetic questions than an evaluation takes (at most ${SYNTHETIC_LIMIT}); ask for fewer`);
  if (!Number.isSafeInteger(seed)) throw new Error(`eval: seed must be an integer within ±(2^53 − 1), got ${shown(seed)}`);
  const s = makeSplits({ train: 0, val: split === 'val' ? limit : 0, test: split === 'test' ? limit : 0, seed, mix });
  return s[split].map((it: Item) => ({
    id: it.id, question: it.question, gold: it.answer, task: 'synthetic',
    category: it.kind === 'chat' ? 'chat' : it.difficulty ?? 'math',
  }));
}

/**
 * Each dataset in ../shared/data: its test file (under data/), the fields its lines hold (question parts, then the
 * gold answer), and eval's default tokens per answer (competition solutions run long: at the 90th percentile the
 * reference solutions alone are 197 Qwen tokens for GSM8K, 474 for MATH-500 and 3,207 for AIME 2024).
 */
export const DATASETS: Record<Exclude<Task, 'synthetic'>, { test: string; fields: string[]; maxTokens: number }> = {
  gsm8k: { test: 'gsm8k/test.jsonl', fields: ['question', 'answer'], maxTokens: 1024 }, math500: { test: 'math500/test.jsonl', fields: ['problem', 'answer'], maxTokens: 2048 },
  svamp: { test: 'svamp/test.jsonl', fields: ['Body', 'Question', 'Answer'], maxTokens: 1024 }, asdiv: { test: 'asdiv/test.jsonl', fields: ['body', 'question', 'answer'], maxTokens: 1024 },
  aime24: { test: 'aime24/test.jsonl', fields: ['problem', 'answer'], maxTokens: 4096 }, amc23: { test: 'amc23/test.jsonl', fields: ['problem', 'answer'], maxTokens: 2048 },
};
/**
 * The instruction after every dataset question: Qwen2.5-Math's chain-of-thought prompt, which DeepSeek-R1 and Qwen3
 * recommend in the user's message for math; the graders read the \\boxed{} it asks for first.
 */
export const MATH_INSTRUCTION = 'Please reason step by step, and put your final answer within \\boxed{}.';
/** A dataset question as eval asks it: followed by MATH_INSTRUCTION. */
export const withInstruction = (question: string): string => `${question}\n\n${MATH_INSTRUCTION}`;

/** The questions a dataset file holds (its non-blank lines), to say what share of them --limit takes. */
export const questionCount = (file: string): number => fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).length;

/**
 * GSM8K / MATH-500 / SVAMP / ASDiv / AIME 2024 / AMC 2023 files from ../shared/data (their test files; GSM8K's train
 * file for train-router and train-verifier, named by `command` in messages); each question followed by
 * MATH_INSTRUCTION unless `instruction` is false (as requests ask them: the probes train on both forms).
 */
export function datasetCases(task: Task, file: string, limit: number, command = 'eval', instruction = true): EvalCase[] {
  if (task === 'synthetic') throw new Error(`${command}: the synthetic task is generated (syntheticCases), not read from a file`);
  if (!Object.hasOwn(DATASETS, task)) throw new Error(`${command}: task must be one of ${Object.keys(DATASETS).join(', ')}, got ${shown(task)}`);
  if (!(Number.isInteger(limit) && limit >= 1) && limit !== Infinity) throw new Error(`${command}: limit must be an integer ≥ 1, got ${shown(limit)}`);
  if (!fs.existsSync(file)) throw new Error(`${command}: ${file} not found (${task}'s files are in data/${path.dirname(DATASETS[task].test)}/ of the shared folder: $EDGEREASON_SHARED, else ../shared beside the project)`);
  const lines = readJsonlLines(file, 'dataset', limit), fields = DATASETS[task].fields;
  return lines.map(({ line: n, value }) => {
    const where = `${path.basename(file)}:${n}`, r = value as Record<string, unknown>;
    const missing = fields.find((k) => r?.[k] === undefined || r[k] === null);
    if (missing) throw new Error(`${command}: ${file}:${n}: field "${missing}" is missing (a ${task} line needs ${fields.join(', ')})`);
    // Text fields are non-empty strings; the answer a string or a number (an object would grade as "[object Object]"),
    // and a GSM8K solution's "####" line holds its answer.
    const bad = (k: string, want: string) => new Error(`${command}: ${file}:${n}: field "${k}" must be ${want}, got ${shown(r[k])}`);
    for (const k of fields.slice(0, -1)) if (typeof r[k] !== 'string' || !(r[k] as string).trim()) throw bad(k, 'a non-empty string');
    const answerKey = fields.at(-1)!, gold = r[answerKey] as string | number;
    if (!(typeof gold === 'number' && Number.isFinite(gold)) && !(typeof gold === 'string' && gold.trim())) throw bad(answerKey, 'a non-empty string or a number');
    const gsm8kGold = task === 'gsm8k' ? String(gold).split('####').pop()!.trim() : undefined; // after "####" (the whole text without one)
    if (gsm8kGold === '') throw bad(answerKey, 'a solution whose "####" line holds the answer');
    // One no reply can match ("#### abc" where a number is graded) would be graded wrong every time, silently.
    const want = gsm8kGold ?? gold;
    if (!isCorrect(task, `The final answer is $\\boxed{${want}}$.`, want)) throw new Error(`${command}: ${file}:${n}: the gold answer ${JSON.stringify(want)} (field "${answerKey}") is one the ${task} grader can never match${task === 'math500' || task === 'asdiv' ? '' : ' (it grades numbers)'}: no reply would be graded right`);
    // Body and question joined as Qwen2.5-Math's evaluation joins them: a SVAMP body gets its missing final period;
    // an ASDiv body is kept as it ends (a third end in "," with the question going on in lower case), and a Yes/No
    // item says so.
    const text = (k: string) => String(r[k]).trim();
    const ask = (q: string) => (instruction ? withInstruction(q) : q);
    switch (task) {
      case 'gsm8k': return { id: where, question: ask(text('question')), gold: gsm8kGold!, category: task, task };
      case 'svamp': return { id: where, question: ask(`${text('Body').replace(/([^.?!])$/, '$1.')} ${text('Question')}`), gold, category: task, task };
      case 'asdiv': return { id: where, question: ask(`${text('body')} ${text('question')}${/^(yes|no)$/i.test(String(gold).trim()) ? ' (Yes or No)' : ''}`), gold, category: task, task };
      default: return { // math500, aime24, amc23
        id: where, question: ask(text('problem')), gold, task,
        category: task === 'math500' && r.level ? `level ${r.level}` : task,
      };
    }
  });
}
