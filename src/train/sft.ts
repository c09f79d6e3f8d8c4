/**
 * Supervised fine-tuning: LoRA (optionally activated LoRA) or full-parameter, AdamW with warmup + cosine,
 * global-norm clipping, gradient accumulation, token-budget micro-batches, periodic eval loss, atomic
 * checkpoints with bit-identical resume, and the result saved as a PEFT adapter or a Hugging Face folder.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { makeDir, writeJson, type SafetensorsDtype } from '../io/safetensors.ts';
import path from 'node:path';
import type { ModelConfig, Projection } from '../models/config.ts';
import { projectionShape, PROJECTIONS } from '../models/config.ts';
import type { WeightSource } from '../io/weights.ts';
import { saveAdapter } from '../io/peft.ts';
import { lineChart, writeSvg } from '../eval/plot.ts';
import { AdamW, checkDiverged, clipGradNorm, lrAt, type Params } from './optim.ts';
import { batches, Rng, type Batch, type Example } from './data.ts';
import { checkOptions, checkpointJson, checkpointOptions, dataIdentity, interrupted, outputsThere, modelIdentity, modelTensorsIdentity, MODEL_TENSORS, resume, savedList, saveCheckpoint, writingOutputs, type RunOptions } from './checkpoint.ts';
import type { TextTokenizer, TokenizerFiles } from '../tokenizer/types.ts';
import { BUDGET_LINE, budgetControl } from '../reason/budget.ts';
import { THINK_CLOSE } from '../reason/answer.ts';
import { lateProgress, Progress } from './progress.ts';
import { saveHfFolder, toHfConfig } from './save.ts';
import { Trainer, aloraMask, type MicroBatch } from './trainer.ts';
import { MAX_THREADS } from '../runtime/threads.ts';
import { checkRules, is, type Rule } from '../runtime/options.ts';

export interface SftOptions {
  out: string;
  full?: boolean;
  rank?: number;
  alpha?: number;
  targets?: Projection[];
  /** Activated LoRA: token ids of the invocation sequence (e.g. the ids of "<think>"). */
  aloraInvocation?: number[];
  /** The text of token ids (the tokenizer's decode): a refused --resume names the invocations as text, beside their ids. */
  decode?: (ids: number[]) => string;
  lr?: number;
  epochs?: number;
  batchTokens?: number;
  accum?: number;
  seed?: number;
  warmupSteps?: number;
  minLrRatio?: number;
  weightDecay?: number;
  clip?: number;
  maxLen?: number;
  evalEvery?: number;
  /**
   * Save a checkpoint every n optimizer steps, and at the step the run ends or stops (maxSteps), so that a stopped
   * run can be resumed; none when unset.
   */
  checkpointEvery?: number;
  /** Continue from the checkpoint in `<out>/checkpoint`. */
  resume?: boolean;
  /** Stop after this many optimizer steps (for tests and quick runs). */
  maxSteps?: number;
  threads?: number;
  quiet?: boolean;
  /** On SIGINT/SIGTERM: stop the progress bar, save the last completed step as the checkpoint (checkpoints on), say how to resume, exit 130 (the CLI's). */
  handleSignals?: boolean;
  baseModel?: string;
  /** With `full`: the dtype the weights are written in (default F32, as trained; BF16 or F16 halve the folder). */
  dtype?: SafetensorsDtype;
  /** With `full`: written beside the weights so the output folder loads on its own (the CLI passes the base model's). */
  tokenizerFiles?: TokenizerFiles;
  /** With `full`: the base model's generation_config.json text, written beside the weights (its sampling advice). */
  generationConfig?: string;
  onStep?: (s: { step: number; loss: number; lr: number; gradNorm: number }) => void;
  /**
   * With aloraInvocation, for an adapter train-rl will budget-train: a budget line after the invocation of this share
   * of the traces (addBudgetLines; share 0 only counts the traces that hold one). Recorded in training_log.json,
   * where train-rl looks for it.
   */
  budgetLines?: { share: number; budgets: number[]; tokenizer: Pick<TextTokenizer, 'encode' | 'decode'> };
}

/** What budgetLines did to a data set: its activated traces (empty thinking blocks aside), those given a line, those that held one. */
export interface BudgetLinesReport { share: number; budgets: number[]; traces: number; added: number; already: number }

/**
 * What became of a data set: examples with no target token left after the activated-LoRA masking and the cut to
 * maxLen are dropped (a micro-batch of only those has nothing to learn); `truncated` kept examples are cut.
 */
export interface DataReport {
  examples: number;
  /** The lines they came from (a conversation may be split into several examples). */
  lines: number;
  used: number;
  /** The lines the used examples came from. */
  usedLines: number;
  /** Tokens of the used examples (before the cut to maxLen), and how many of them are targets. */
  tokens: number;
  targets: number;
  dropped: { noTargets: number; noInvocation: number; cutOff: number };
  /** Where the first few dropped examples came from (file:line), by reason. */
  droppedAt: { noTargets: string[]; noInvocation: string[]; cutOff: string[] };
  truncated: number;
  /** Where the first few cut examples came from (file:line). */
  truncatedAt: string[];
  /** Used examples that are kept though suspect: a repeat of an earlier one, an empty reply, (eval) one also in the training set. */
  noted: { repeats: number; emptyReplies: number; inTraining: number };
  notedAt: { repeats: string[]; emptyReplies: string[]; inTraining: string[] };
  /** With budgetLines: its counts. */
  budgetLines?: BudgetLinesReport;
}

export interface SftResult {
  steps: number;
  /** Optimizer steps the whole run spans (the schedule's length; `steps` is less when maxSteps stops it). */
  total: number;
  losses: number[]; evalLosses: [number, number][]; params: Params; out: string;
  data: { train: DataReport; eval: DataReport };
  /** The step the checkpoint in `<out>/checkpoint` holds, when there is one. */
  checkpoint?: number;
}

/** The most epochs a run plans (each is counted before the first step, to fix the schedule). */
export const MAX_EPOCHS = 1_000_000;

/** What each option may be (trainSft's API; the CLI's flags are checked as they are parsed). */
const sftRules = (vocab: number): Record<keyof SftOptions, Rule> => ({
  out: is.text, full: is.bool, rank: is.int(1), alpha: is.above0,
  targets: is.list(`projections (${PROJECTIONS.join(', ')})`, (t) => PROJECTIONS.includes(t as Projection)),
  aloraInvocation: is.list(`token ids (0..${vocab - 1})`, (t) => Number.isInteger(t) && (t as number) >= 0 && (t as number) < vocab),
  lr: is.above0, epochs: is.intIn(1, MAX_EPOCHS), batchTokens: is.int(2), accum: is.int(1), seed: is.seed, warmupSteps: is.int(0), minLrRatio: is.share,
  weightDecay: is.atLeast0, clip: is.above0, maxLen: is.int(2), evalEvery: is.int(1), checkpointEvery: is.int(1), resume: is.bool,
  maxSteps: is.int(1), threads: is.intIn(1, MAX_THREADS), quiet: is.bool, handleSignals: is.bool, baseModel: is.text, dtype: is.oneOf(['F32', 'BF16', 'F16']), tokenizerFiles: is.object, generationConfig: is.text, onStep: is.fn, decode: is.fn,
  budgetLines: {
    what: '{share (in [0, 1]), budgets (a non-empty list of integers ≥ 1), tokenizer (the model\'s)}',
    ok: (v) => is.object.ok(v) && is.share.ok((v as { share: unknown }).share) && is.list('', (b) => is.int(1).ok(b)).ok((v as { budgets: unknown }).budgets) && typeof (v as { tokenizer?: { encode?: unknown } }).tokenizer?.encode === 'function',
  },
});

/** Resume options recorded since a later version: checked only when the checkpoint has them. */
const LATER_OPTIONS = ['--full', '--lora-r', '--targets', 'the --model (a hash of its config and weights)', 'the --data (a hash of its token ids)', 'the --eval (a hash of its token ids)', MODEL_TENSORS, '--budget-lines', '--budgets'];

export async function trainSft(config: ModelConfig, weights: WeightSource, train: Example[], evalSet: Example[], o: SftOptions): Promise<SftResult> {
  checkRules(o, sftRules(config.vocabSize), 'train-sft');
  if (o.out === undefined) throw new Error('train-sft: out (the output folder) is required');
  if (!train.length) throw new Error('train-sft: the training set is empty');
  const lora = (['rank', 'alpha', 'targets', 'aloraInvocation'] as const).filter((k) => o[k] !== undefined);
  if (o.full && lora.length) throw new Error(`train-sft: full trains every weight, not a LoRA adapter: ${lora.join(', ')} contradict${lora.length === 1 ? 's' : ''} it`);
  if (o.budgetLines && !o.aloraInvocation) throw new Error('train-sft: budgetLines puts budget lines after the adapter\'s invocation: it needs aloraInvocation (budget forcing trains an activated adapter)');
  const rank = o.rank ?? 16, alpha = o.alpha ?? 2 * rank, targets = o.targets ?? [...PROJECTIONS];
  // A rank past the smallest side of an adapted projection adds parameters and no expressiveness.
  const side = Math.min(...targets.flatMap((t) => projectionShape(config, t)));
  if (!o.full && rank > side) throw new Error(`train-sft: --lora-r ${rank} is larger than the projections it adapts (their smallest side is ${side}); a LoRA rank is usually 8–64`);
  if (o.full) toHfConfig(config); // a config that config.json cannot express fails now, not after the run
  // Examples are cut to the model's context at most: positions past it are never seen at inference.
  const ctx = config.maxPositionEmbeddings;
  if (o.maxLen !== undefined && o.maxLen > ctx) throw new Error(`train-sft: --max-len ${o.maxLen} exceeds the model's context of ${ctx} tokens`);
  const seed = o.seed ?? 0, accum = o.accum ?? 1, epochs = o.epochs ?? 1, batchTokens = o.batchTokens ?? 4096, maxLen = o.maxLen ?? Math.min(batchTokens, ctx);
  // How messages name the cut: the flag when given, else where its default came from.
  const cut = o.maxLen !== undefined ? `--max-len ${maxLen}` : maxLen === ctx ? `the model's context of ${maxLen}` : `--batch-tokens ${maxLen} (the --max-len default)`;
  const lines = o.budgetLines && o.aloraInvocation ? [addBudgetLines(train, o.budgetLines.tokenizer, o.aloraInvocation, { ...o.budgetLines, seed }), addBudgetLines(evalSet, o.budgetLines.tokenizer, o.aloraInvocation, { ...o.budgetLines, seed: seed + 1 })] : undefined;
  if (lines) [train, evalSet] = lines.map((l) => l.examples);
  const trainData = usable(train, maxLen, o.aloraInvocation), evalData = usable(evalSet, maxLen, o.aloraInvocation, trainData.keys);
  if (lines) [trainData.report.budgetLines, evalData.report.budgetLines] = lines.map((l) => l.report);
  if (!trainData.examples.length) throw new Error(`train-sft: none of the ${train.length} training examples has a target token left: ${dropReasons(trainData.report, cut, o.aloraInvocation)}`);
  if (evalSet.length && !evalData.examples.length) throw new Error(`train-sft: none of the ${evalSet.length} eval examples has a target token left (there would be no eval loss): ${dropReasons(evalData.report, cut, o.aloraInvocation)}`);
  train = trainData.examples; evalSet = evalData.examples;
  // Each epoch's micro-batch count (the order is a function of seed and epoch; an epoch's batches are made again when
  // it is trained, so one epoch's are held at a time). Counts differ between epochs (the length buckets change with
  // the shuffle): the run is the sum over epochs, so the schedule ends on the last step. The schedule spans the whole
  // run even when maxSteps stops it early, so a stopped run resumes exactly. Counting many epochs of a large set
  // takes a while: it shows a bar, and yields to Ctrl-C.
  const epochBatches = (epoch: number) => batches(train, { batchTokens, seed, epoch, maxLen });
  const counts: number[] = [], counting = o.quiet ? undefined : lateProgress('planning the epochs', 'epochs');
  for (let e = 0; e < epochs; e++) {
    counts.push(epochBatches(e).batches.length);
    if (e % 8 === 7) { counting?.update(e + 1, epochs); await new Promise(setImmediate); }
  }
  counting?.stop();
  const total = counts.reduce((a, n) => a + Math.ceil(n / accum), 0), stopAt = Math.min(o.maxSteps ?? Infinity, total);
  for (const [set, r] of [[train, trainData.report], [evalSet, evalData.report]] as const) {
    const long = set.filter((e) => e.ids.length > maxLen);
    r.truncated = long.length;
    r.truncatedAt = [...new Set(long.filter((e) => e.source !== undefined).map((e) => e.source!))].slice(0, 3);
  }
  const report = { train: trainData.report, eval: evalData.report };
  if (!o.quiet) {
    for (const [what, r] of [['training', report.train], ['eval', report.eval]] as const) {
      if (r.examples) for (const line of dataLines(what, r, cut, o.aloraInvocation)) process.stderr.write(`train-sft: ${line}\n`);
    }
  }
  // --full's default suits fine-tuning a pretrained model; training from scratch (the embedded model) takes ~1e-3.
  const lr = o.lr ?? (o.full ? 2e-5 : 2e-4), weightDecay = o.weightDecay ?? (o.full ? 0.1 : 0), clip = o.clip ?? 1.0;
  const schedule = { lr, warmup: o.warmupSteps ?? Math.max(1, Math.round(total * 0.05)), total, minLr: lr * (o.minLrRatio ?? 0.1) };
  // What fixes the data order, the schedule, the objective and the trained parameters: a resume with other values
  // is refused (before the trainer is built).
  const options: RunOptions = {
    command: 'train-sft', '--full': !!o.full, '--seed': seed, '--batch-tokens': batchTokens, '--accum': accum, '--max-len': maxLen, '--epochs': epochs, '--lr': lr,
    ...(o.full ? {} : { '--lora-r': rank, '--lora-alpha': alpha, '--targets': PROJECTIONS.filter((p) => targets.includes(p)).map((p) => p.replace(/_proj$/, '')).join(',') }),
    '--alora-invocation': o.aloraInvocation ?? 'none',
    ...(o.budgetLines ? { '--budget-lines': o.budgetLines.share, ...(o.budgetLines.share > 0 ? { '--budgets': o.budgetLines.budgets.join(',') } : {}) } : {}),
    examples: train.length, warmupSteps: schedule.warmup, minLrRatio: o.minLrRatio ?? 0.1, weightDecay, clip,
    'the --model (a hash of its config and weights)': modelIdentity(config, weights), [MODEL_TENSORS]: modelTensorsIdentity(weights),
    'the --data (a hash of its token ids)': dataIdentity(train.map(tokensOf)),
    'the --eval (a hash of its token ids)': dataIdentity(evalSet.map(tokensOf)), // its losses go on one curve
  };
  const ckptDir = path.join(o.out, 'checkpoint');
  if (o.resume) {
    if (!fs.existsSync(path.join(ckptDir, 'checkpoint.json'))) throw new Error(`train-sft: --resume given but ${ckptDir} holds no checkpoint`);
    const invocation = (v: unknown) => (Array.isArray(v) && o.decode ? `${JSON.stringify(o.decode(v))} (token ids ${v.join(',')})` : undefined);
    checkOptions(ckptDir, checkpointOptions(ckptDir), options, LATER_OPTIONS, { '--alora-invocation': invocation });
  }
  const mode = o.full ? { kind: 'full' as const } : { kind: 'lora' as const, targets, scale: alpha / rank };
  // What a diverged run should lower: the LoRA scale where it is far above the usual 1–2, else the learning rate.
  const lower = !o.full && alpha / rank > 16 ? `--lora-alpha (${alpha}: a LoRA scale alpha / r of ${+(alpha / rank).toPrecision(3)}, where 1 to 2 is usual)` : `--lr (${lr})`;
  const trainer = await Trainer.create(config, weights, mode, { threads: o.threads });
  const params: Params = o.full ? new Map(trainer.paramNames.map((n) => [n, weights.get(n).slice()])) : initLora(trainer.paramNames, config, rank, seed);
  const opt = new AdamW(params, { lr, weightDecay, decay: (n) => !/norm|bias/.test(n) });
  const grads: Params = new Map(trainer.paramNames.map((n) => [n, new Float32Array(params.get(n)!.length)])); // zeroed each step, reused: with --full, as large as the model
  const masks = (b: Batch) => (o.aloraInvocation ? b.examples.map((e) => e.adapterMask!) : undefined);

  let step = 0, epoch = 0, position = 0, checkpoint: number | undefined;
  const losses: number[] = [], evalLosses: [number, number][] = [];
  // An eval loss needs no backward pass. A full run's weights are fed to its session, so one without gradients holds
  // none of them and takes eval losses 3–4× faster (measured); a LoRA run's would hold a second copy of the frozen
  // base model, so it takes them with the training session (computing gradients it drops).
  let evalTrainer: Trainer | undefined;
  const evaluate = async (final = false) => {
    if (o.full) evalTrainer ??= await Trainer.create(config, weights, mode, { threads: o.threads, gradients: false });
    // The last one runs after the training bar is done: it gets a bar of its own (shown after a second).
    const bar = final && !o.quiet ? lateProgress('eval', 'batches') : undefined;
    try { return await evalLoss(evalTrainer ?? trainer, params, evalSet, batchTokens, masks, maxLen, bar?.update); } finally { bar?.stop(); }
  };
  /** Whether a periodic eval loss is taken at this step. */
  const evalDueAt = (s: number) => !!o.evalEvery && evalSet.length > 0 && s % o.evalEvery === 0;
  const save = () => {
    saveCheckpoint(ckptDir, { params, optimizer: opt.state(), state: { step, epoch, position, rng: seed, options, config: { losses, evalLosses } } });
    checkpoint = step;
  };
  let earlier = outputsThere(o.out, o.full ? ['model.safetensors', 'model.safetensors.index.json'] : ['adapter_model.safetensors']);
  const onInterrupt = () => interrupted('train-sft', stopAt, ckptDir, o.checkpointEvery, step, () => checkpoint, save, earlier);
  let progress: Progress | undefined;
  try {
    if (o.resume) {
      const st = resume(ckptDir, params, opt); // its options were checked above, before the trainer was built
      ({ step, epoch, position } = st);
      // Same options, same plan: a step past the run, or a position past its epoch's batches (or an epoch past the run),
      // was edited in (or the data is not the run's: a checkpoint from before its hash was recorded).
      const outside = (what: string) => new Error(`checkpoint: ${checkpointJson(ckptDir)}: ${what} (the file was edited or damaged, or --data is not the run's)`);
      if (step > total) throw outside(`step ${step} lies past this run's ${total} steps`);
      if (epoch > epochs || position > (counts[epoch] ?? 0)) throw outside(`position ${position} of epoch ${epoch} lies outside this run (${epochs} epochs${epoch < epochs ? `, ${counts[epoch]} batches in that one` : ''})`);
      checkpoint = step;
      losses.push(...savedList<number>(st, 'losses', ckptDir));
      evalLosses.push(...savedList<[number, number]>(st, 'evalLosses', ckptDir));
      if (!o.quiet) {
        process.stderr.write(step < stopAt ? `train-sft: resuming from the checkpoint's step ${step} of ${stopAt} (${ckptDir})\n`
          : `train-sft: the checkpoint is at step ${step}${step >= total ? `, the end of the run (${total} steps)` : `, --max-steps is ${stopAt}`}: nothing left to train; writing the outputs from it\n`);
      }
    }
    const bar = progress = new Progress(stopAt, { quiet: o.quiet, startStep: step, ...(o.handleSignals ? { interrupt: onInterrupt } : {}) });
    // A periodic eval loss: the bar says so meanwhile (its time is not training's), then shows it.
    const periodicEval = async () => {
      const l = await bar.aside('eval', () => evaluate());
      evalLosses.push([step, l]);
      bar.say(`eval loss ${l.toFixed(4)} at step ${step}`);
    };
    // A periodic eval loss the interrupted run had not taken yet (Ctrl-C during it saves the step without it).
    if (o.resume && step > 0 && step < stopAt && evalDueAt(step) && evalLosses.at(-1)?.[0] !== step) await periodicEval();
    while (step < stopAt && epoch < epochs) {
      const order = epochBatches(epoch).batches;
      while (position < order.length && step < stopAt) {
        const group = order.slice(position, position + accum);
        const count = group.reduce((s, b) => s + b.examples.reduce((a, e) => a + sum(e.lossMask, 1), 0), 0);
        let loss = 0, tokens = 0;
        for (const g of grads.values()) g.fill(0);
        for (const b of group) {
          const mb: MicroBatch = { examples: b.examples, targetWeight: 1 / Math.max(1, count), adapterMasks: masks(b) };
          const r = await trainer.step(params, mb);
          loss += r.loss; tokens += r.tokens;
          for (const [n, g] of r.grads) { const acc = grads.get(n)!; for (let i = 0; i < g.length; i++) acc[i] += g[i]; }
        }
        const gradNorm = clipGradNorm(grads, clip);
        const stepLr = lrAt(step, schedule);
        checkDiverged('train-sft', step + 1, { loss, gradNorm }, lr, checkpoint === undefined ? undefined : { step: checkpoint, dir: ckptDir }, lower);
        opt.update(grads, stepLr);
        step++; position += group.length;
        losses.push(loss);
        progress.update(step, { loss, tokens });
        o.onStep?.({ step, loss, lr: stepLr, gradNorm });
        if (evalDueAt(step)) await periodicEval();
        if (o.checkpointEvery && step % o.checkpointEvery === 0) save();
      }
      if (position >= order.length) { epoch++; position = 0; }
    }
    // The step the run ended or was stopped at (maxSteps) is always saved, so --resume continues from it.
    if (o.checkpointEvery && checkpoint !== step) save();
    if (evalSet.length && (!evalLosses.length || evalLosses[evalLosses.length - 1][0] !== step)) { progress.endBar(); evalLosses.push([step, await evaluate(true)]); }
    // Written while Ctrl-C is still handled: each file is written whole, and the message says how to finish.
    await writingOutputs(ckptDir, checkpoint, step, async () => {
      makeDir(o.out);
      if (o.full) saveHfFolder(o.out, config, new Map(trainer.paramNames.map((n) => [n, { shape: weights.shape(n), data: params.get(n)! }])), { dtype: o.dtype, tokenizer: o.tokenizerFiles, generationConfig: o.generationConfig });
      else saveAdapter(o.out, { r: rank, loraAlpha: alpha, targets, ...(o.aloraInvocation ? { aloraInvocationTokens: o.aloraInvocation } : {}), baseModel: o.baseModel }, loraTensors(params), config.numLayers);
      earlier = [];
      writeSvg(path.join(o.out, 'loss.svg'), await lossChart(losses, evalLosses));
      writeJson(path.join(o.out, 'training_log.json'), { steps: step, total, data: report, losses, evalLosses }, 1);
    });
  } finally {
    progress?.stop();
    await Promise.all([trainer.close(), evalTrainer?.close()]);
  }
  return { steps: step, total, losses, evalLosses, params, out: o.out, data: report, ...(checkpoint !== undefined ? { checkpoint } : {}) };
}

/**
 * SFT data for an adapter that budget forcing (train-rl) starts from: a budget control line put after the
 * invocation of a `share` of the activated-LoRA traces (a bucket of `budgets` drawn for each, seeded): the ids
 * answer() feeds there at inference, so the SFT adapter learns to read past the line and RL to obey it (an adapter that
 * never read one takes its digits for the problem's: docs/results.md). The line is input, not a target (loss mask 0):
 * the adapter is not taught to write budget lines of its own. Traces that hold one already are counted, not given
 * another; an empty thinking block (Qwen3's before a direct reply) gets none: its line would teach "close at once".
 */
export function addBudgetLines(examples: readonly Example[], tok: Pick<TextTokenizer, 'encode' | 'decode'>, invocation: readonly number[], o: { share: number; budgets: readonly number[]; seed: number }): { examples: Example[]; report: BudgetLinesReport } {
  const rng = new Rng(o.seed ^ 0x0b0d6e7), control = new Map(o.budgets.map((b) => [b, budgetControl(tok, b, invocation)]));
  const window = Math.max(...[...control.values()].map((l) => l.length)) + 4; // enough tokens to hold a line in any vocabulary
  const report: BudgetLinesReport = { share: o.share, budgets: [...o.budgets], traces: 0, added: 0, already: 0 };
  const out = examples.map((e) => {
    const from = aloraMask(e.ids, invocation, e.lossMask.indexOf(1), e.replyFrom).indexOf(1), at = from + invocation.length;
    if (from < 0) return e; // a reply without the invocation (trainSft drops it, naming it)
    const next = tok.decode(e.ids.slice(at, at + window));
    if (next.trimStart().startsWith(THINK_CLOSE)) return e;
    report.traces++;
    if (BUDGET_LINE.test(next)) { report.already++; return e; }
    if (!(rng.next() < o.share)) return e;
    const line = control.get(o.budgets[Math.floor(rng.next() * o.budgets.length)])!;
    // A line that ends in its newline (Qwen's ".\n" token) takes the place of the trace's own newline token after the
    // invocation, as the text "<think>\nThinking budget: 96 tokens.\n3 + 4" tokenizes; else that newline closes the line.
    const skip = tok.decode(line.slice(-1)).endsWith('\n') && tok.decode(e.ids.slice(at, at + 1)) === '\n' ? 1 : 0;
    const lossMask = new Uint8Array(e.lossMask.length + line.length - skip); // (trainSft masks the adapter from the invocation on)
    lossMask.set(e.lossMask.subarray(0, at));
    lossMask.set(e.lossMask.subarray(at + skip), at + line.length);
    report.added++;
    return { ...e, ids: [...e.ids.slice(0, at), ...line, ...e.ids.slice(at + skip)], lossMask };
  });
  return { examples: out, report };
}

/** Target tokens of an example (loss-mask ones after position 0) within its first `maxLen` tokens. */
const targetsWithin = (lossMask: Uint8Array, maxLen: number) => sum(lossMask.subarray(0, maxLen), 1);

/**
 * The examples that keep a target token after the activated-LoRA masking and the cut to maxLen (the rest counted
 * by reason). With an invocation, a target predicted from a position the adapter does not act on (the invocation's
 * first token, anything before it) cannot be learnt by the adapter: it only adds a constant to the loss, so it is
 * dropped from the mask.
 */
function usable(set: Example[], maxLen: number, invocation?: number[], training?: Set<string>): { examples: Example[]; report: DataReport; keys: Set<string> } {
  const report: DataReport = {
    examples: set.length, lines: new Set(set.map((e, i) => e.source ?? i)).size, used: 0, usedLines: 0, tokens: 0, targets: 0,
    dropped: { noTargets: 0, noInvocation: 0, cutOff: 0 }, droppedAt: { noTargets: [], noInvocation: [], cutOff: [] }, truncated: 0, truncatedAt: [],
    noted: { repeats: 0, emptyReplies: 0, inTraining: 0 }, notedAt: { repeats: [], emptyReplies: [], inTraining: [] },
  };
  const examples: Example[] = [], keys = new Set<string>(), usedLines = new Set<string | number>();
  const count = <K extends string>(n: Record<K, number>, at: Record<K, string[]>, why: K, e: Example) => {
    n[why]++;
    const where = at[why]; // a conversation split into turns drops from one line several times
    if (e.source !== undefined && where.length < 3 && !where.includes(e.source)) where.push(e.source);
  };
  const drop = (why: keyof DataReport['dropped'], e: Example) => count(report.dropped, report.droppedAt, why, e);
  const note = (why: keyof DataReport['noted'], e: Example) => count(report.noted, report.notedAt, why, e);
  for (const e of set) {
    let lossMask = e.lossMask, adapterMask: Uint8Array | undefined;
    if (!sum(lossMask, 1)) { drop('noTargets', e); continue; }
    if (invocation) {
      const m = adapterMask = aloraMask(e.ids, invocation, lossMask.indexOf(1), e.replyFrom);
      lossMask = lossMask.map((v, i) => (i > 0 && m[i - 1] ? v : 0));
      if (!sum(lossMask, 1)) { drop('noInvocation', e); continue; }
    }
    if (!targetsWithin(lossMask, maxLen)) { drop('cutOff', e); continue; }
    const key = exampleKey(e);
    if (keys.has(key)) note('repeats', e);
    if (training?.has(key)) note('inTraining', e);
    if (e.emptyReply) note('emptyReplies', e);
    keys.add(key);
    report.tokens += e.ids.length;
    report.targets += sum(lossMask, 1);
    examples.push(invocation ? { ...e, lossMask, adapterMask } : e);
    usedLines.add(e.source ?? examples.length);
  }
  report.used = examples.length;
  report.usedLines = usedLines.size;
  return { examples, report, keys };
}

/** An example's tokens and targets, hashed (repeats and eval examples also in training are found by it). */
const exampleKey = (e: Example): string => crypto.createHash('sha1').update(new Int32Array(e.ids)).update(e.lossMask).digest('base64');

/** An example's tokens alone (where it came from does not change the run). */
const tokensOf = ({ ids, lossMask }: Example) => ({ ids, lossMask });

function dropReasons(r: DataReport, cut: string, invocation?: number[]): string {
  const { noTargets, noInvocation, cutOff } = r.dropped;
  const at = (why: keyof DataReport['dropped']) => (r.droppedAt[why].length ? ` (${r.dropped[why] > r.droppedAt[why].length ? 'e.g. ' : ''}${r.droppedAt[why].join(', ')})` : '');
  return [
    noTargets && `${noTargets} with an empty loss mask${at('noTargets')}`,
    noInvocation && `${noInvocation} without the activated-LoRA invocation tokens [${invocation?.join(', ')}] before their completion${at('noInvocation')}`,
    cutOff && `${cutOff} whose completion is cut off by ${cut}${at('cutOff')}`,
  ].filter(Boolean).join(', ');
}

/** What the data holds (examples, lines, tokens, targets), then what was dropped and cut, and what is suspect. */
function dataLines(what: string, r: DataReport, cut: string, invocation?: number[]): string[] {
  const dropped = r.examples - r.used, parts: string[] = [], n = (x: number) => x.toLocaleString('en-US');
  const lines = [`${what} data: ${n(r.used)} example${r.used === 1 ? '' : 's'}${r.usedLines !== r.used ? ` from ${n(r.usedLines)} line${r.usedLines === 1 ? '' : 's'}` : ''}, ${n(r.tokens)} tokens, ${n(r.targets)} of them targets${r.truncated ? ' (before the cut)' : ''}`];
  if (dropped) parts.push(`dropped ${dropped} of ${r.examples} ${what} examples with no target tokens (${dropReasons(r, cut, invocation)})`);
  if (r.truncated) parts.push(`${r.truncated} ${dropped ? 'kept' : `of ${r.examples} ${what}`} examples cut to ${cut} tokens${r.truncatedAt.length ? ` (${r.truncated > r.truncatedAt.length ? 'e.g. ' : ''}${r.truncatedAt.join(', ')})` : ''}`);
  if (parts.length) lines.push(parts.join('; '));
  const b = r.budgetLines;
  if (b?.share) lines.push(`budget lines (${b.budgets.join(', ')} tokens) put in ${b.added} of ${b.traces} ${what} traces${b.already ? ` (${b.already} held one already)` : ''}`);
  const at = (why: keyof DataReport['noted']) => ` (${r.noted[why] > r.notedAt[why].length ? 'e.g. ' : ''}${r.notedAt[why].join(', ')})`;
  const notes: [keyof DataReport['noted'], string, string][] = [
    ['repeats', 'repeats an earlier one', 'repeat an earlier one'],
    ['emptyReplies', 'trains an empty reply (the model learns to answer nothing)', 'train an empty reply (the model learns to answer nothing)'],
    ['inTraining', 'is also in the training data (its loss is not held out)', 'are also in the training data (their loss is not held out)'],
  ];
  for (const [why, one, many] of notes) {
    const k = r.noted[why];
    if (k) lines.push(`note: ${k} ${what} example${k === 1 ? ` ${one}` : `s ${many}`}${r.notedAt[why].length ? at(why) : ''}`);
  }
  return lines;
}

/**
 * Mean token cross-entropy over a held-out set, each example cut to `maxLen` tokens as in training (default
 * batchTokens); examples with no target token within them are skipped.
 */
export async function evalLoss(trainer: Trainer, params: Params, set: Example[], batchTokens: number, masks: (b: Batch) => Uint8Array[] | undefined, maxLen = batchTokens,
  onBatch?: (done: number, total: number) => void): Promise<number> {
  const bs = batches(set.filter((e) => targetsWithin(e.lossMask, maxLen)), { batchTokens, seed: 0, epoch: 0, maxLen }).batches;
  const count = bs.reduce((s, b) => s + b.examples.reduce((a, e) => a + sum(e.lossMask, 1), 0), 0);
  if (!count) throw new Error(`evalLoss: none of the ${set.length} eval examples has a target token within --max-len ${maxLen}`);
  let loss = 0;
  onBatch?.(0, bs.length);
  for (const [k, b] of bs.entries()) {
    loss += (await trainer.step(params, { examples: b.examples, targetWeight: 1 / count, adapterMasks: masks(b) })).loss;
    onBatch?.(k + 1, bs.length);
  }
  return loss;
}

/** PEFT's initialisation: A ~ Kaiming-uniform (bound 1/sqrt(in)), B = 0, so training starts at the base model. */
function initLora(names: string[], config: ModelConfig, rank: number, seed: number): Params {
  const rng = new Rng(seed ^ 0x10ba);
  return new Map(names.map((n) => {
    const proj = n.replace(/\.lora_[AB]$/, '').split('.').pop() as Projection;
    const [out, inp] = projectionShape(config, proj);
    if (n.endsWith('.lora_B')) return [n, new Float32Array(out * rank)];
    const bound = 1 / Math.sqrt(inp);
    return [n, Float32Array.from({ length: rank * inp }, () => (2 * rng.next() - 1) * bound)];
  }));
}

function loraTensors(params: Params): Map<string, { a: Float32Array; b: Float32Array }> {
  const out = new Map<string, { a: Float32Array; b: Float32Array }>();
  for (const [n, d] of params) {
    const base = n.replace(/\.lora_[AB]$/, ''), e = out.get(base) ?? { a: new Float32Array(0), b: new Float32Array(0) };
    if (n.endsWith('.lora_A')) e.a = d; else e.b = d;
    out.set(base, e);
  }
  return out;
}

function sum(a: ArrayLike<number>, from = 0): number {
  let s = 0;
  for (let i = from; i < a.length; i++) s += a[i];
  return s;
}

/** The loss curves a run draws into loss.svg (from its training_log.json's losses and evalLosses). */
function lossChart(losses: number[], evalLosses: [number, number][]): Promise<string> {
  return lineChart({
    title: 'SFT loss', x: 'optimizer step', y: 'cross-entropy',
    series: [{ name: 'train', points: losses.map((l, i) => [i + 1, l]) }, ...(evalLosses.length ? [{ name: 'eval', points: evalLosses }] : [])],
  });
}
