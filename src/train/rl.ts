/**
 * Budget forcing by RL: GRPO on the reasoning adapter's LoRA weights. Each prompt carries a thinking budget
 * (a control line after the invocation, see reason/budget.ts; a share of prompts carries none and is held to the
 * smallest budget); G completions are sampled as one batch forked from the prompt's KV cache; the reward is
 * correctness minus a soft penalty for thinking past the prompted budget (or, optionally, past the group's
 * mean length); advantages are group-normalised; the clipped policy-gradient loss runs in the training graph.
 */
import fs from 'node:fs';
import { realPath, writeJson } from '../io/safetensors.ts';
import path from 'node:path';
import type { ModelConfig, Projection } from '../models/config.ts';
import type { WeightSource } from '../io/weights.ts';
import { loadAdapter, loraScale, recordedBase, saveAdapter, type LoadedAdapter } from '../io/peft.ts';
import { adapterView, type Backend } from '../runtime/backend.ts';
import { decode, Sequence } from '../runtime/generate.ts';
import { seedAt } from '../runtime/sampler.ts';
import type { TextTokenizer } from '../tokenizer/types.ts';
import { isCorrect, TASKS, type Task } from '../tasks/grade.ts';
import { budgetControl, checkDistinctBudgets } from '../reason/budget.ts';
import { THINK_CLOSE } from '../reason/answer.ts';
import { lineChart, writeSvg } from '../eval/plot.ts';
import { AdamW, checkDiverged, clipGradNorm, type Params } from './optim.ts';
import { checkSpecialText, Rng, type Example } from './data.ts';
import { checkOptions, checkpointOptions, dataIdentity, interrupted, outputsThere, modelIdentity, modelTensorsIdentity, MODEL_TENSORS, resume, adapterIdentity, savedList, saveCheckpoint, writingOutputs, type RunOptions } from './checkpoint.ts';
import { Progress } from './progress.ts';
import { Trainer } from './trainer.ts';
import { checkRules, is, type Rule } from '../runtime/options.ts';
import { MAX_THREADS } from '../runtime/threads.ts';
import { shown } from '../show.ts';

export interface RlPrompt { question: string; gold: string | number; /** Line of the prompts file. */ line?: number }

export interface RlOptions {
  out: string;
  budgets: number[];
  /** 'budget': penalty per token past the prompted budget; 'group': past the group's mean thinking length. */
  penalty?: 'budget' | 'group';
  /**
   * Share of prompts with no budget line (default 0.25): they are held to the smallest budget, so the adapter is
   * brief by default, when a request names no budget.
   */
  unbudgetedShare?: number;
  /** Penalty weight (default 3): reward = correct − min(1, λ·excess/budget). */
  lambda?: number;
  group?: number;
  promptsPerStep?: number;
  steps: number;
  lr?: number;
  temperature?: number;
  maxTokens?: number;
  clipEps?: number;
  /** KL weight to the starting (SFT) adapter; 0 skips the reference pass. */
  beta?: number;
  seed?: number;
  task?: Task;
  /** Save a checkpoint every n steps and at the last step (so a finished run continues with --resume and more steps). */
  checkpointEvery?: number;
  resume?: boolean;
  /**
   * base_model_name_or_path of the adapter written: the base model (what train-sft records). Default: what the
   * starting adapter's adapter_config.json records.
   */
  baseModel?: string;
  /** The file the prompts were read from (their `line`s are its lines), for messages. */
  promptsFile?: string;
  threads?: number;
  quiet?: boolean;
  /** On SIGINT/SIGTERM: stop the progress bar, save the last completed step as the checkpoint (checkpoints on), say how to resume, exit 130 (the CLI's). */
  handleSignals?: boolean;
  onStep?: (s: RlStepStats) => void;
}

/** What each option may be (trainRl's API; the CLI's flags are checked as they are parsed). */
const RL_RULES: Record<keyof RlOptions, Rule> = {
  out: is.text, budgets: is.list('positive integers (thinking budgets in tokens)', (b) => Number.isSafeInteger(b) && (b as number) > 0),
  penalty: is.oneOf(['budget', 'group']), unbudgetedShare: is.share, lambda: is.atLeast0,
  group: { what: 'an integer ≥ 2 (a group of one has no spread: its advantage is 0)', ok: (v) => Number.isSafeInteger(v) && (v as number) >= 2 },
  promptsPerStep: is.int(1), steps: is.int(1), lr: is.above0, temperature: is.above0, maxTokens: is.int(1), clipEps: is.above0, beta: is.atLeast0,
  seed: is.seed, task: is.oneOf(TASKS), checkpointEvery: is.int(1), resume: is.bool, baseModel: is.text, promptsFile: is.text, threads: is.intIn(1, MAX_THREADS),
  quiet: is.bool, handleSignals: is.bool, onStep: is.fn,
};

let policySlots = 0;

/** One step's means over its rollouts; `updated`: whether any group's rewards differed (when none did, GRPO has no signal: only a KL term, --beta, moves the adapter, back towards its start, and only once it has moved away). */
export interface RlStepStats { step: number; reward: number; accuracy: number; thinking: number; withinBudget: number; tokensPerSec: number; updated: boolean }

/** `generated`: the completion's tokens; `trained`: the same with the stop token that ended it (stopping is a choice the policy learns). */
interface Rollout { prompt: number[]; adapterFrom: number; generated: number[]; trained: number[]; budget: number; thinking: number; correct: boolean; closed: boolean; ended: boolean }

/**
 * Whether a rollout answered right: only one that closed its thinking and then ended by itself has an answer (one
 * cut off by the token limit may hold "#### 3" of "#### 39"; answer() leaves such samples out of the vote too).
 */
export function rolloutCorrect(task: Task, r: Pick<Rollout, 'closed' | 'ended'>, text: string, gold: number | string): boolean {
  return r.closed && r.ended && isCorrect(task, text, gold);
}

/** Reward of one completion (exported for tests). */
export function reward(r: { correct: boolean; thinking: number; closed: boolean; budget: number }, o: { penalty: 'budget' | 'group'; lambda: number; groupMean: number }): number {
  if (!r.closed) return -1; // never closed its thinking: no answer at all
  const limit = o.penalty === 'budget' ? r.budget : Math.max(1, o.groupMean);
  return (r.correct ? 1 : 0) - Math.min(1, o.lambda * Math.max(0, r.thinking - limit) / limit);
}

/**
 * The rollouts a policy step runs, each with its advantage, and the token count N of the loss's 1/N. Every
 * rollout's trained tokens count in N (as TRL's); one with zero advantage (a group whose rewards are all equal)
 * adds only its KL term, so it is run only `withKl` (beta > 0).
 */
export function policyBatch<R extends { trained: number[] }>(rolls: R[], adv: number[], withKl: boolean): { live: { r: R; a: number }[]; tokens: number } {
  const trained = rolls.map((r, i) => ({ r, a: adv[i] })).filter((x) => x.r.trained.length);
  return { live: withKl ? trained : trained.filter((x) => Math.abs(x.a) > 1e-6), tokens: trained.reduce((s, x) => s + x.r.trained.length, 0) };
}

/**
 * (r − mean) / (std + 1e-4) within each group of G, std with Bessel's correction (n − 1) as TRL's GRPO computes it
 * (torch's `std`): the same advantages for the same rewards. A group of one has no spread: its advantage is 0.
 */
export function groupAdvantages(rewards: number[], G: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < rewards.length; i += G) {
    const g = rewards.slice(i, i + G), m = g.reduce((a, b) => a + b) / g.length;
    const sd = g.length > 1 ? Math.sqrt(g.reduce((a, b) => a + (b - m) ** 2, 0) / (g.length - 1)) : 0;
    out.push(...g.map((x) => (x - m) / (sd + 1e-4)));
  }
  return out;
}

export async function trainRl(
  model: { config: ModelConfig; weights: WeightSource; tokenizer: TextTokenizer; backend: Backend },
  adapterDir: string, prompts: RlPrompt[], o: RlOptions,
): Promise<{ history: RlStepStats[]; out: string }> {
  checkRules(o, RL_RULES, 'train-rl');
  for (const k of ['out', 'budgets', 'steps'] as const) if (o[k] === undefined) throw new Error(`train-rl: ${k} is required`);
  checkDistinctBudgets(o.budgets, 'train-rl: budgets name');
  const bad = Array.isArray(prompts) ? prompts.findIndex((p) => !p || typeof p.question !== 'string' || !(typeof p.gold === 'string' || typeof p.gold === 'number')) : -1;
  if (!Array.isArray(prompts) || !prompts.length || bad >= 0) throw new Error(`train-rl: prompts must be a non-empty list of { question: string, gold: string or number }, got ${shown(bad >= 0 ? prompts[bad] : prompts)}${bad >= 0 ? ` at ${bad}` : ''}`);
  const { config, tokenizer: tok } = model;
  const start: LoadedAdapter = loadAdapter(adapterDir, config, tok.vocabSize);
  if (fs.existsSync(o.out) && realPath(o.out) === realPath(adapterDir)) throw new Error(`train-rl: out ${o.out} is the starting adapter's folder: the trained adapter would replace its own starting point; choose another out`);
  const { r: rank, loraAlpha: alpha, targets, rslora } = start.config;
  // Budget forcing trains the adapter from its invocation on (rollouts switch it on there): a plain LoRA would come out
  // an activated one, a different policy from the one it started as.
  const invocation = start.config.aloraInvocationTokens;
  if (!invocation) throw new Error(`train-rl: ${adapterDir} is a plain LoRA adapter (its adapter_config.json has no alora_invocation_tokens); budget forcing trains an activated one, which acts from "<think>" on: train the SFT adapter with --alora-invocation "<think>"`);
  const end = tok.encode(THINK_CLOSE, { addSpecialTokens: false });
  const share = o.unbudgetedShare ?? 0.25, least = Math.min(...o.budgets), most = Math.max(...o.budgets);
  checkRlPromptText(tok, prompts, o.promptsFile);
  checkPromptRoom(tok, prompts, invocation, share < 1 ? o.budgets : [], least, config.maxPositionEmbeddings, o.promptsFile);
  const G = o.group ?? 8, P = o.promptsPerStep ?? 8, task = o.task ?? 'synthetic', seed = o.seed ?? 0, lr = o.lr ?? 1e-4, clipEps = o.clipEps ?? 0.2, beta = o.beta ?? 0;
  const scale = loraScale(start.config), unscaled = (b: Float32Array) => b.map((x) => x / scale);
  const params: Params = new Map();
  for (const [proj, t] of start.tensors) { params.set(`${proj}.lora_A`, t.a.slice()); params.set(`${proj}.lora_B`, unscaled(t.b)); }
  const reference = beta ? new Map([...params].map(([k, v]) => [k, v.slice()])) : undefined;
  const opt = new AdamW(params, { lr, weightDecay: 0 });
  const grads: Params = new Map([...params].map(([n, p]) => [n, new Float32Array(p.length)])); // zeroed each step, reused
  const ckpt = path.join(o.out, 'checkpoint'), history: RlStepStats[] = [];
  const temperature = o.temperature ?? 1, maxTokens = o.maxTokens ?? 2 * most, penalty = o.penalty ?? 'budget', lambda = o.lambda ?? 3;
  // A rollout cut off before it answers is wrong whatever it thought: the largest budget's thinking, its close and one
  // answer token must fit, or that budget is never met.
  if (maxTokens < most + end.length + 1) throw new Error(`train-rl: maxTokens ${maxTokens} leaves no room to answer within the budget ${most}: thinking to it, closing the thinking (${end.length} token${end.length === 1 ? '' : 's'}) and an answer of at least one token take ${most + end.length + 1}; raise maxTokens (default twice the largest budget) or lower the budgets`);
  // What fixes the prompts drawn, the rollouts and the objective: a resume with other values is refused (--steps
  // may grow: nothing depends on it).
  const options: RunOptions = {
    command: 'train-rl', '--seed': seed, '--group': G, '--prompts-per-step': P, '--budgets': o.budgets, '--unbudgeted-share': share, '--penalty': penalty,
    '--lambda': lambda, '--beta': beta, '--lr': lr, '--temperature': temperature, '--max-tokens': maxTokens, '--grader': task,
    clipEps, prompts: prompts.length, 'the --adapter\'s r': rank, 'the --adapter\'s targets': targets.join(','),
    'the --adapter\'s lora_alpha': alpha, 'the --adapter\'s use_rslora': !!rslora,
    'the --model (a hash of its config and weights)': modelIdentity(config, model.weights), [MODEL_TENSORS]: modelTensorsIdentity(model.weights),
    'the prompts (a hash)': dataIdentity(prompts),
    // the policy starts from it, and with --beta it stays the reference
    'the --adapter (a hash of its weights)': adapterIdentity(start.tensors),
  };
  const later = ['the --adapter\'s r', 'the --adapter\'s targets', 'the --adapter\'s lora_alpha', 'the --adapter\'s use_rslora', // recorded since a later version
    'the --model (a hash of its config and weights)', 'the prompts (a hash)', 'the --adapter (a hash of its weights)', MODEL_TENSORS];
  let step = 0, checkpoint: number | undefined;
  if (o.resume) {
    if (!fs.existsSync(path.join(ckpt, 'checkpoint.json'))) throw new Error(`train-rl: --resume given but ${ckpt} holds no checkpoint`);
    checkOptions(ckpt, checkpointOptions(ckpt), options, later);
    const st = resume(ckpt, params, opt); // its options were checked just above, before its tensors were read
    step = checkpoint = st.step;
    history.push(...savedList<RlStepStats>(st, 'history', ckpt));
    if (step < o.steps && !o.quiet) process.stderr.write(`train-rl: resuming from the checkpoint's step ${step} of ${o.steps} (${ckpt})\n`);
    if (step >= o.steps && !o.quiet) process.stderr.write(`train-rl: the checkpoint is at step ${step}, --steps is ${o.steps}: nothing left to train (a larger --steps goes on); writing the outputs from it\n`);
  }
  const save = () => {
    saveCheckpoint(ckpt, { params, optimizer: opt.state(), state: { step, epoch: 0, position: 0, rng: seed, options, config: { history } } });
    checkpoint = step;
  };
  let earlier = outputsThere(o.out, ['adapter_model.safetensors']);
  const onInterrupt = () => interrupted('train-rl', o.steps, ckpt, o.checkpointEvery, step, () => checkpoint, save, earlier);
  const trainer = await Trainer.create(config, model.weights, { kind: 'lora', targets: targets as Projection[], scale }, {
    threads: o.threads, objective: { kind: 'policy', clipEps, beta }, temperature,
  });
  const refTrainer = reference ? await Trainer.create(config, model.weights, { kind: 'lora', targets: targets as Projection[], scale }, { threads: o.threads, temperature, gradients: false })
    .catch(async (e) => { await trainer.close(); throw e; }) : undefined; // (the policy's session is not left open)
  // The policy's weights go into an adapter slot of their own: the caller's model keeps the adapter it was loaded
  // with (rollouts would otherwise leave it on the weights of the step before the last).
  const backend = adapterView(model.backend, `train-rl policy ${++policySlots}`); // one per run: two runs on one model keep theirs apart
  const push = async () => backend.setAdapter(new Map([...start.tensors.keys()].map((proj) => {
    const t = start.tensors.get(proj)!;
    return [proj, { ...t, a: params.get(`${proj}.lora_A`)!, b: params.get(`${proj}.lora_B`)!.map((x) => x * scale) }];
  })));
  const progress = new Progress(o.steps, { quiet: o.quiet, startStep: step, metric: 'reward', ...(o.handleSignals ? { interrupt: onInterrupt } : {}) });
  try {
    while (step < o.steps) {
      await push();
      const t0 = performance.now(), rng = new Rng((seed * 1000003 + step) >>> 0);
      const batch = Array.from({ length: P }, () => {
        const p = prompts[Math.floor(rng.next() * prompts.length)], b = o.budgets[Math.floor(rng.next() * o.budgets.length)];
        return rng.next() < share ? { p, budget: least, line: false } : { p, budget: b, line: true };
      });
      const rolls = await rollouts(backend, tok, batch, invocation, G, { temperature, maxTokens, seed: seedAt(seed, step * Math.max(7919, P * G)), end }); // no two steps' rows share a seed
      rolls.forEach((r, k) => { r.correct = rolloutCorrect(task, r, tok.decode(r.generated), batch[Math.floor(k / G)].p.gold); });
      const rewards: number[] = [];
      for (let i = 0; i < rolls.length; i += G) {
        const grp = rolls.slice(i, i + G), mean = grp.reduce((a, r) => a + r.thinking, 0) / G;
        for (const r of grp) rewards.push(reward(r, { penalty, lambda, groupMean: mean }));
      }
      const adv = groupAdvantages(rewards, G);
      const { live, tokens } = policyBatch(rolls, adv, !!refTrainer);
      // A step where every group tied (and no KL term) has no gradient: no optimizer step is taken. TRL's would
      // still step, and AdamW's momentum would move the adapter on a step that carried no signal.
      if (live.length) {
        for (const g of grads.values()) g.fill(0);
        for (let i = 0; i < live.length; i += 16) {
          const chunk = live.slice(i, i + 16);
          const examples: Example[] = chunk.map(({ r }) => {
            const ids = [...r.prompt, ...r.trained];
            return { ids, lossMask: Uint8Array.from(ids, (_, k) => (k >= r.prompt.length ? 1 : 0)) };
          });
          const masks = chunk.map(({ r }) => Uint8Array.from({ length: r.prompt.length + r.trained.length }, (_, k) => (k >= r.adapterFrom ? 1 : 0)));
          const refLogprobs = refTrainer ? (await refTrainer.step(reference!, { examples, targetWeight: 1, adapterMasks: masks })).logprobs : undefined;
          const res = await trainer.step(params, {
            examples, targetWeight: 1 / tokens, adapterMasks: masks,
            policy: { advantages: chunk.map((x) => x.a), refLogprobs },
          });
          for (const [n, g] of res.grads) { const acc = grads.get(n)!; for (let k = 0; k < g.length; k++) acc[k] += g[k]; }
        }
        checkDiverged('train-rl', step + 1, { gradNorm: clipGradNorm(grads, 1.0) }, lr, checkpoint === undefined ? undefined : { step: checkpoint, dir: ckpt });
        opt.update(grads);
      }
      step++;
      const all = rolls.reduce((s, r) => s + r.generated.length, 0);
      const stats: RlStepStats = {
        step, reward: mean(rewards), accuracy: mean(rolls.map((r) => (r.correct ? 1 : 0))), thinking: mean(rolls.map((r) => r.thinking)),
        withinBudget: mean(rolls.map((r) => (r.closed && r.thinking <= r.budget ? 1 : 0))), tokensPerSec: all / ((performance.now() - t0) / 1000), updated: adv.some((x) => Math.abs(x) > 1e-6),
      };
      history.push(stats);
      progress.update(step, { loss: stats.reward, tokens: all });
      o.onStep?.(stats);
      if (o.checkpointEvery && step % o.checkpointEvery === 0) save();
    }
    // The last step is always saved: --resume with a larger --steps continues from it.
    if (o.checkpointEvery && checkpoint !== step) save();
    // Written while Ctrl-C is still handled: each file is written whole, and the message says how to finish.
    await writingOutputs(ckpt, checkpoint, step, async () => {
      const tensors = new Map([...start.tensors.keys()].map((proj) => [proj, { a: params.get(`${proj}.lora_A`)!, b: params.get(`${proj}.lora_B`)! }]));
      saveAdapter(o.out, { r: rank, loraAlpha: alpha, rslora, targets, aloraInvocationTokens: invocation, baseModel: o.baseModel ?? recordedBase(adapterDir) }, tensors, config.numLayers);
      earlier = [];
      // `budgets`: the buckets prompts carried as a budget line (none when every prompt went without one); the server
      // writes a request's bucket into the prompt only for adapters trained with them.
      writeJson(path.join(o.out, 'rl_log.json'), {
        budgets: share < 1 ? o.budgets : [], unbudgetedShare: share, unbudgetedBudget: least, history,
      }, 1);
      const curve = (name: keyof RlStepStats) => history.map((h) => [h.step, h[name]] as [number, number]);
      writeSvg(path.join(o.out, 'rl-curves.svg'), await lineChart({
        title: 'GRPO: reward, accuracy and within-budget rate', x: 'step', y: 'value',
        series: [{ name: 'mean reward', points: curve('reward') }, { name: 'accuracy', points: curve('accuracy') }, { name: 'within budget', points: curve('withinBudget') }],
      }));
      writeSvg(path.join(o.out, 'rl-length.svg'), await lineChart({ title: 'GRPO: mean thinking tokens', x: 'step', y: 'tokens', series: [{ name: 'thinking tokens', points: curve('thinking') }] }));
    });
  } finally {
    progress.stop();
    await backend.close(); // the view only: removes the policy's slot
    await trainer.close();
    await refTrainer?.close();
  }
  return { history, out: o.out };
}

/** A rollout prompt's tokens up to the invocation: the question as the chat template renders it for a reply. */
export const chatIds = (tok: TextTokenizer, question: string) =>
  tok.encode(tok.applyChatTemplate([{ role: 'user', content: question }], { addGenerationPrompt: true }), { addSpecialTokens: false });

/**
 * A prompt is a user's message: the tokenizer's special tokens in it would be read as the real ones (an injected turn),
 * and characters it has no token for as its "<unk>"; both are refused, naming the line (as train-sft's messages are).
 */
export function checkRlPromptText(tok: TextTokenizer, prompts: readonly RlPrompt[], file?: string): void {
  prompts.forEach((p, i) => checkSpecialText(p.question, tok, p.line !== undefined ? `${file ?? 'the prompts file'}:${p.line}: "prompt"` : `train-rl: prompt ${i}`, 'remove it'));
}

/**
 * Every prompt, with its chat template, the invocation and the longest budget line (of `lines`), must leave room in the context
 * for the smallest budget's thinking: a longer one could never be answered within it (and one past the context
 * would stop the run when drawn).
 */
function checkPromptRoom(tok: TextTokenizer, prompts: RlPrompt[], invocation: number[], lines: number[], least: number, ctx: number, file?: string): void {
  const control = Math.max(0, ...lines.map((b) => budgetControl(tok, b, invocation).length)); // the longest budget line fed
  const sized = prompts.map((p, i) => ({ p, i, n: chatIds(tok, p.question).length + invocation.length + control }));
  const tooLong = sized.filter((x) => x.n + least > ctx), fed = control ? ', the invocation and the budget line' : ' and the invocation';
  if (!tooLong.length) return;
  // When no prompt fits, the budget may be what is too large (a 50-token prompt beside a 5,000-token budget).
  const shortest = sized.reduce((a, b) => (b.n < a.n ? b : a));
  if (tooLong.length === prompts.length) throw new Error(`train-rl: no prompt fits: the shortest (${shortest.n} tokens with the chat template${fed}) and the smallest budget (${least} thinking tokens) exceed the model's context of ${ctx} tokens; give smaller --budgets, or shorter prompts`);
  const { p, i, n } = tooLong[0], at = p.line !== undefined ? `${file ?? 'the prompts file'}:${p.line}` : `prompt ${i}`;
  throw new Error(`train-rl: ${tooLong.length} prompt${tooLong.length > 1 ? 's' : ''} leave${tooLong.length > 1 ? '' : 's'} less room than the smallest budget (${least} tokens) in the model's context of ${ctx} tokens, e.g. ${at} (${n} tokens with the chat template${fed}): shorten or leave them out`);
}

/** The most rollouts decoded as one batch: P × G rows at once could outgrow memory (their keys and values, their logits). */
export const ROLLOUT_ROWS = 64;

/**
 * P prompts, each forked into G rows, decoded ROLLOUT_ROWS rows at a time (the prompts of a block prefilled in one
 * step: the chat prompt with base weights, then the invocation and, for a budgeted prompt, the budget control line
 * with the adapter on). Row (i, g) draws with seed + i·G + g (seedAt) whatever its block: the same rollouts as one batch.
 */
export async function rollouts(backend: Backend, tok: TextTokenizer, batch: { p: RlPrompt; budget: number; line: boolean }[], invocation: number[], G: number,
  o: { temperature: number; maxTokens: number; seed: number; end: number[] }): Promise<Rollout[]> {
  const prompts = batch.map(({ p, budget, line }) => {
    const chat = chatIds(tok, p.question);
    return { ids: [...chat, ...invocation, ...(line ? budgetControl(tok, budget, invocation) : [])], from: chat.length, budget };
  });
  const out: Rollout[] = [], ctx = backend.config.maxPositionEmbeddings;
  for (let k0 = 0; k0 < prompts.length * G; k0 += ROLLOUT_ROWS) {
    const rows = Array.from({ length: Math.min(ROLLOUT_ROWS, prompts.length * G - k0) }, (_, j) => ({ i: Math.floor((k0 + j) / G), g: (k0 + j) % G }));
    const first = rows[0].i, block = prompts.slice(first, rows.at(-1)!.i + 1);
    const cache = await backend.newCache(block.length);
    try {
      // Everything but the last token is shared; the fork then feeds it.
      await backend.step(cache, {
        tokens: block.map((p) => p.ids.slice(0, -1)), adapterMask: block.map((p) => p.ids.slice(0, -1).map((_, i) => (i >= p.from ? 1 : 0))),
      });
      const forked = await backend.select(cache, rows.map((r) => r.i - first));
      const seqs = rows.map(({ i, g }) => new Sequence(tok,
        { temperature: o.temperature, maxTokens: Math.min(o.maxTokens, ctx - prompts[i].ids.length), seed: seedAt(o.seed, i * G + g), adapter: true, adapterFrom: prompts[i].from,
          thinking: { end: o.end, endText: THINK_CLOSE } }, prompts[i].ids.length)); // thinking tokens and its close, as inference counts them
      try {
        await decode(backend, forked, seqs, rows.map((r) => prompts[r.i].ids.slice(-1)));
      } finally {
        await backend.free(forked);
      }
      out.push(...seqs.map((s, j) => {
        const p = prompts[rows[j].i];
        return {
          prompt: p.ids, adapterFrom: p.from, generated: s.tokens, trained: s.stopToken === undefined ? s.tokens : [...s.tokens, s.stopToken],
          budget: p.budget, thinking: s.thinkingTokens, closed: s.answerFrom !== undefined, ended: s.stopToken !== undefined, correct: false,
        };
      }));
    } finally {
      await backend.free(cache);
    }
  }
  return out;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
