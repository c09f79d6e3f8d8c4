/**
 * Supervised fine-tuning: LoRA (optionally activated LoRA) or full-parameter, AdamW with warmup + cosine,
 * global-norm clipping, gradient accumulation, token-budget micro-batches, periodic eval loss, atomic
 * checkpoints with bit-identical resume, and the result saved as a PEFT adapter or a Hugging Face folder.
 */
import fs from 'node:fs';
import { writeJson } from '../io/safetensors.ts';
import path from 'node:path';
import type { ModelConfig, Projection } from '../models/config.ts';
import { projectionShape, PROJECTIONS } from '../models/config.ts';
import type { WeightSource } from '../io/weights.ts';
import { saveAdapter } from '../io/peft.ts';
import { lineChart, writeSvg } from '../eval/plot.ts';
import { AdamW, clipGradNorm, lrAt, type Params } from './optim.ts';
import { batches, Rng, type Batch, type Example } from './data.ts';
import { loadCheckpoint, resume, saveCheckpoint } from './checkpoint.ts';
import { Progress } from './progress.ts';
import { saveHfFolder } from './save.ts';
import { Trainer, aloraMask, type MicroBatch } from './trainer.ts';

export interface SftOptions {
  out: string;
  full?: boolean;
  rank?: number;
  alpha?: number;
  targets?: Projection[];
  /** Activated LoRA: token ids of the invocation sequence (e.g. the ids of "<think>"). */
  aloraInvocation?: number[];
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
  checkpointEvery?: number;
  /** Continue from the checkpoint in `<out>/checkpoint`. */
  resume?: boolean;
  /** Stop after this many optimizer steps (for tests and quick runs). */
  maxSteps?: number;
  threads?: number;
  quiet?: boolean;
  baseModel?: string;
  onStep?: (s: { step: number; loss: number; lr: number; gradNorm: number }) => void;
}

export interface SftResult { steps: number; losses: number[]; evalLosses: [number, number][]; params: Params; out: string }

export async function trainSft(config: ModelConfig, weights: WeightSource, train: Example[], evalSet: Example[], o: SftOptions): Promise<SftResult> {
  if (!train.length) throw new Error('train-sft: the training set is empty');
  if (o.aloraInvocation) {
    // A target predicted from a position the adapter does not act on (the invocation's first token, anything
    // before it) cannot be learnt by the adapter: it only adds a constant to the loss, so it is dropped.
    const adapted = (e: Example): Example => {
      const m = aloraMask(e.ids, o.aloraInvocation!), lossMask = e.lossMask.map((v, i) => (i > 0 && m[i - 1] ? v : 0));
      return { ids: e.ids, lossMask };
    };
    train = train.map(adapted); evalSet = evalSet.map(adapted);
    if (!train.some((e) => e.lossMask.some((v) => v))) throw new Error(`train-sft: no training example contains the activated-LoRA invocation tokens [${o.aloraInvocation.join(', ')}] before its completion`);
  }
  const rank = o.rank ?? 16, alpha = o.alpha ?? 2 * rank, targets = o.targets ?? [...PROJECTIONS];
  if (!o.full && (!Number.isInteger(rank) || rank <= 0)) throw new Error(`train-sft: --lora-r must be a positive integer, got ${rank}`);
  for (const t of targets) if (!PROJECTIONS.includes(t)) throw new Error(`train-sft: unknown target module "${t}" (use ${PROJECTIONS.join(', ')})`);
  const seed = o.seed ?? 0, accum = o.accum ?? 1, epochs = o.epochs ?? 1, batchTokens = o.batchTokens ?? 4096;
  const mode = o.full ? { kind: 'full' as const } : { kind: 'lora' as const, targets, scale: alpha / rank };
  const trainer = await Trainer.create(config, weights, mode, { threads: o.threads });
  const params: Params = o.full ? new Map(trainer.paramNames.map((n) => [n, weights.get(n).slice()])) : initLora(trainer.paramNames, config, rank, seed);
  const lr = o.lr ?? (o.full ? 1e-3 : 2e-4);
  const opt = new AdamW(params, { lr, weightDecay: o.weightDecay ?? (o.full ? 0.1 : 0), decay: (n) => !/norm|bias/.test(n) });
  const epochBatches = (epoch: number) => batches(train, { batchTokens, seed, epoch, maxLen: o.maxLen ?? batchTokens }).batches;
  const perEpoch = Math.ceil(epochBatches(0).length / accum);
  // The schedule spans the whole run even when maxSteps stops it early, so a stopped run resumes exactly.
  const total = perEpoch * epochs, stopAt = Math.min(o.maxSteps ?? Infinity, total);
  const schedule = { lr, warmup: o.warmupSteps ?? Math.max(1, Math.round(total * 0.05)), total, minLr: lr * (o.minLrRatio ?? 0.1) };
  const ckptDir = path.join(o.out, 'checkpoint');
  const masks = (b: Batch) => (o.aloraInvocation ? b.examples.map((e) => aloraMask(e.ids, o.aloraInvocation!)) : undefined);

  let step = 0, epoch = 0, position = 0;
  const losses: number[] = [], evalLosses: [number, number][] = [];
  if (o.resume) {
    if (!fs.existsSync(path.join(ckptDir, 'checkpoint.json'))) throw new Error(`train-sft: --resume given but ${ckptDir} holds no checkpoint`);
    const st = resume(ckptDir, params, opt);
    ({ step, epoch, position } = st);
    losses.push(...((st.config.losses as number[]) ?? []));
    evalLosses.push(...((st.config.evalLosses as [number, number][]) ?? []));
  }
  const progress = new Progress(stopAt, { quiet: o.quiet, startStep: step });
  try {
    while (step < stopAt && epoch < epochs) {
      const order = epochBatches(epoch);
      while (position < order.length && step < stopAt) {
        const group = order.slice(position, position + accum);
        const count = group.reduce((s, b) => s + b.examples.reduce((a, e) => a + sum(e.lossMask, 1), 0), 0);
        let loss = 0, tokens = 0;
        const grads: Params = new Map(trainer.paramNames.map((n) => [n, new Float32Array(params.get(n)!.length)]));
        for (const b of group) {
          const mb: MicroBatch = { examples: b.examples, targetWeight: 1 / Math.max(1, count), adapterMasks: masks(b) };
          const r = await trainer.step(params, mb);
          loss += r.loss; tokens += r.tokens;
          for (const [n, g] of r.grads) { const acc = grads.get(n)!; for (let i = 0; i < g.length; i++) acc[i] += g[i]; }
        }
        const gradNorm = clipGradNorm(grads, o.clip ?? 1.0);
        const stepLr = lrAt(step, schedule);
        opt.update(grads, stepLr);
        step++; position += group.length;
        losses.push(loss);
        progress.update(step, { loss, tokens });
        o.onStep?.({ step, loss, lr: stepLr, gradNorm });
        if (o.evalEvery && evalSet.length && step % o.evalEvery === 0) evalLosses.push([step, await evalLoss(trainer, params, evalSet, batchTokens, masks)]);
        if (o.checkpointEvery && step % o.checkpointEvery === 0) {
          saveCheckpoint(ckptDir, { params, optimizer: opt.state(), state: { step, epoch, position, rng: seed, config: { losses, evalLosses } } });
        }
      }
      if (position >= order.length) { epoch++; position = 0; }
    }
    if (evalSet.length && (!evalLosses.length || evalLosses[evalLosses.length - 1][0] !== step)) evalLosses.push([step, await evalLoss(trainer, params, evalSet, batchTokens, masks)]);
  } finally {
    progress.stop();
    await trainer.close();
  }
  fs.mkdirSync(o.out, { recursive: true });
  if (o.full) saveHfFolder(o.out, config, new Map(trainer.paramNames.map((n) => [n, { shape: weights.shape(n), data: params.get(n)! }])));
  else saveAdapter(o.out, { r: rank, loraAlpha: alpha, targets, ...(o.aloraInvocation ? { aloraInvocationTokens: o.aloraInvocation } : {}), baseModel: o.baseModel }, loraTensors(params), config.numLayers);
  await writeSvg(path.join(o.out, 'loss.svg'), await lineChart({
    title: 'SFT loss', x: 'optimizer step', y: 'cross-entropy',
    series: [{ name: 'train', points: losses.map((l, i) => [i + 1, l]) }, ...(evalLosses.length ? [{ name: 'eval', points: evalLosses }] : [])],
  }));
  writeJson(path.join(o.out, 'training_log.json'), { steps: step, losses, evalLosses }, 1);
  return { steps: step, losses, evalLosses, params, out: o.out };
}

/** Mean token cross-entropy over a held-out set. */
export async function evalLoss(trainer: Trainer, params: Params, set: Example[], batchTokens: number, masks: (b: Batch) => Uint8Array[] | undefined): Promise<number> {
  const count = set.reduce((s, e) => s + sum(e.lossMask, 1), 0);
  let loss = 0;
  for (const b of batches(set, { batchTokens, seed: 0, epoch: 0 }).batches) {
    loss += (await trainer.step(params, { examples: b.examples, targetWeight: 1 / count, adapterMasks: masks(b) })).loss;
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
