/**
 * One training step on onnxruntime-node: a micro-batch of examples in, the masked cross-entropy loss and the
 * gradients of the trainable tensors out. The optimizer and the loop live in TypeScript (sft.ts, rl.ts).
 */
import ort from '../runtime/ort.ts';
import type { ModelConfig } from '../models/config.ts';
import type { WeightSource } from '../io/weights.ts';
import type { Example } from './data.ts';
import { lastIndexOfRun } from '../runtime/generate.ts';
import type { Params } from './optim.ts';
import { buildTrainingGraph, frozenAsInputs, type Objective, type TrainMode } from './graph.ts';
import { defaultThreads } from '../runtime/threads.ts';
import { OnnxRuntimeError } from '../runtime/errors.ts';

const MASKED = -1e9;

export interface MicroBatch {
  examples: readonly Example[];
  /** Per-target weight; pass 1/(targets in the whole optimizer step) so accumulated micro-batches give the mean. */
  targetWeight: number;
  /** Per-token adapter switch for each example (activated LoRA); default: adapter on everywhere. */
  adapterMasks?: readonly (ArrayLike<number> | undefined)[];
  /** Policy objective: per-example advantage, and per-target behaviour (objective behaviour 'input') and reference log-probs in target order. */
  policy?: { advantages: readonly number[]; oldLogprobs?: readonly ArrayLike<number>[]; refLogprobs?: readonly ArrayLike<number>[] };
}

export interface StepResult {
  loss: number; grads: Params; targets: number;
  /** The examples' tokens, padding not counted (the progress bar's tok/s). */
  tokens: number;
  /** log p of every target, per example (in target order). */
  logprobs: Float32Array[];
}

export class Trainer {
  private constructor(readonly config: ModelConfig, readonly mode: TrainMode, readonly objective: Objective, private readonly session: ort.InferenceSession, readonly paramNames: string[], readonly gradients: boolean,
    /** The frozen weights the graph takes as inputs (TrainingGraph.frozen), made once. */
    private readonly frozen: Record<string, ort.Tensor>) {}

  /**
   * `temperature`: log-probs (and the policy loss) of softmax(logits / temperature), as rollouts sample.
   * `gradients: false`: the forward pass only (loss and log-probs; `step` returns no gradients).
   * `frozenAsInputs`: LoRA's frozen weights as graph inputs (default: only past the 2 GiB an ONNX model holds, see frozenAsInputs).
   */
  static async create(config: ModelConfig, weights: WeightSource, mode: TrainMode, opts: { threads?: number; objective?: Objective; temperature?: number; gradients?: boolean; frozenAsInputs?: boolean } = {}): Promise<Trainer> {
    const objective = opts.objective ?? { kind: 'nll' }, gradients = opts.gradients ?? true;
    const { graph, params, frozen } = buildTrainingGraph(config, weights, mode, objective, opts.temperature, gradients, mode.kind === 'full' || (opts.frozenAsInputs ?? frozenAsInputs(config)));
    const session = await ort.InferenceSession.create(graph.toModelProto(), {
      intraOpNumThreads: opts.threads ?? defaultThreads(), graphOptimizationLevel: 'all',
      // ORT's memory pattern pre-plans one block per run for the whole graph on top of the arena's own chunks;
      // for a training step (activations kept for the backward) that doubled peak memory (0.5B LoRA: 15.6 →
      // 10.9 GB measured) and was no faster, so it is off. Prepacking would keep a second, packed copy of every
      // frozen weight (≈ 1 GB more at 0.5B); packing per call costs O(K·N) against the matmul's O(M·K·N).
      enableMemPattern: false,
      extra: { session: { disable_prepacking: '1' } },
      logSeverityLevel: 4, // onnxruntime's own log lines kept off stderr: a failed run is thrown (OnnxRuntimeError) anyway
    });
    return new Trainer(config, mode, objective, session, params.map((p) => p.name), gradients, Object.fromEntries(frozen.map((n) => [n, new ort.Tensor('float32', weights.get(n), weights.shape(n))])));
  }

  /** Forward + backward (unless made without gradients) for one micro-batch at the given parameter values (names as in paramNames). */
  async step(params: Params, batch: MicroBatch): Promise<StepResult> {
    const feeds = { ...this.feeds(batch), ...this.frozen };
    for (const name of this.paramNames) {
      const p = params.get(name);
      if (!p) throw new Error(`trainer: missing value for trainable tensor "${name}"`);
      feeds[name] = new ort.Tensor('float32', p, this.shapeOf(name, p.length));
      const a = name.endsWith('.lora_B') ? feeds[name.replace(/B$/, 'A')] : undefined; // (A comes first in paramNames)
      if (a && a.dims[0] !== feeds[name].dims[1]) throw new Error(`trainer: "${name}" is of rank ${feeds[name].dims[1]} and "${name.replace(/B$/, 'A')}" of rank ${a.dims[0]}: the two halves of a LoRA pair share one rank`);
    }
    let out: ort.InferenceSession.OnnxValueMapType;
    try { out = await this.session.run(feeds); } catch (e) {
      const [B, T] = (feeds.input_ids as ort.Tensor).dims;
      throw new OnnxRuntimeError(`trainer: onnxruntime failed to run the training graph on a micro-batch of ${B} sequence${B === 1 ? '' : 's'} of up to ${T} tokens: ${(e as Error).message}`, { cause: e });
    }
    const grads: Params = new Map(this.gradients ? this.paramNames.map((n) => [n, out[`grad.${n}`].data as Float32Array]) : []);
    const flat = out.token_logprob.data as Float32Array, logprobs: Float32Array[] = [];
    let at = 0;
    for (const n of this.counts(batch)) { logprobs.push(flat.slice(at, at + n)); at += n; }
    return { loss: (out.loss.data as Float32Array)[0], grads, targets: flat.length, tokens: batch.examples.reduce((a, e) => a + e.ids.length, 0), logprobs };
  }

  async close(): Promise<void> { await this.session.release(); }

  private feeds(batch: MicroBatch): Record<string, ort.Tensor> {
    const ex = batch.examples, B = ex.length, T = Math.max(...ex.map((e) => e.ids.length));
    const ids = new BigInt64Array(B * T), pos = new BigInt64Array(B * T), bias = new Float32Array(B * T * T).fill(MASKED);
    const mask = new Float32Array(B * T), index: bigint[] = [], targets: bigint[] = [], weight: number[] = [];
    const old: number[] = [], adv: number[] = [], ref: number[] = [];
    ex.forEach((e, b) => {
      const n = e.ids.length;
      for (let t = 0, k = 0; t < T; t++) { // k: this example's targets so far
        ids[b * T + t] = BigInt(t < n ? e.ids[t] : 0);
        pos[b * T + t] = BigInt(t);
        // Real tokens see themselves and earlier real tokens; padding sees only itself (keeps softmax finite).
        const row = (b * T + t) * T;
        if (t < n) bias.fill(0, row, row + t + 1); else bias[row + t] = 0;
        mask[b * T + t] = t < n ? batch.adapterMasks?.[b]?.[t] ?? 1 : 0;
        if (t > 0 && t < n && e.lossMask[t]) {
          index.push(BigInt(b * T + t - 1)); targets.push(BigInt(e.ids[t])); weight.push(batch.targetWeight);
          if (batch.policy) { old.push(batch.policy.oldLogprobs?.[b]?.[k] ?? 0); adv.push(batch.policy.advantages[b]); ref.push(batch.policy.refLogprobs?.[b]?.[k] ?? 0); }
          k++;
        }
      }
    });
    if (this.objective.kind === 'policy' && !batch.policy) throw new Error('trainer: the policy objective needs advantages');
    if (this.objective.kind === 'policy' && this.objective.behaviour === 'input' && !batch.policy?.oldLogprobs) throw new Error('trainer: the policy objective with behaviour "input" needs behaviour log-probs (oldLogprobs)');
    if (this.objective.kind === 'policy' && this.objective.beta > 0 && !batch.policy?.refLogprobs) throw new Error('trainer: the policy objective with beta > 0 needs reference log-probs (refLogprobs)');
    if (!targets.length) throw new Error('trainer: the micro-batch has no target tokens (every loss mask is empty)');
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [B, T]),
      position_ids: new ort.Tensor('int64', pos, [B, T]),
      attention_bias: new ort.Tensor('float32', bias, [B, 1, 1, T, T]),
      target_index: new ort.Tensor('int64', BigInt64Array.from(index), [index.length]),
      targets: new ort.Tensor('int64', BigInt64Array.from(targets), [targets.length]),
      target_weight: new ort.Tensor('float32', Float32Array.from(weight), [targets.length]),
    };
    if (this.objective.kind === 'policy') {
      if (this.objective.behaviour === 'input') feeds.old_logprob = new ort.Tensor('float32', Float32Array.from(old), [old.length]);
      feeds.advantage = new ort.Tensor('float32', Float32Array.from(adv), [adv.length]);
      if (this.objective.beta > 0) feeds.ref_logprob = new ort.Tensor('float32', Float32Array.from(ref), [ref.length]);
    }
    if (this.mode.kind === 'lora') feeds.adapter_mask = new ort.Tensor('float32', mask, [B, T]);
    return feeds;
  }

  /** Targets per example (loss-mask ones after position 0). */
  private counts(batch: MicroBatch): number[] {
    return batch.examples.map((e) => { let c = 0; for (let t = 1; t < e.ids.length; t++) c += e.lossMask[t] ? 1 : 0; return c; });
  }

  private shapeOf(name: string, size: number): number[] {
    const meta = this.session.inputMetadata.find((m) => m.name === name);
    const dims = meta?.isTensor ? meta.shape.map(Number) : [];
    const fixed = (d: number) => Number.isFinite(d) && d > 0, known = dims.filter(fixed).reduce((a, b) => a * b, 1);
    const free = dims.length - dims.filter(fixed).length;
    if (free ? size % known !== 0 || size === 0 : size !== known) throw new Error(`trainer: "${name}" has ${size} values, where its shape [${dims.map((d) => (fixed(d) ? d : '?')).join(', ')}] takes ${free ? `a multiple of ${known}` : known}`);
    return dims.map((d) => (fixed(d) ? d : size / known));
  }
}

/**
 * Activated LoRA: the adapter acts from the last occurrence of the invocation sequence on (1), base before (0); with
 * `until` and `from`, the last that starts within them (a training example's reply: from its generation prompt to its
 * first target; a reply that mentions "<think>" later still reasons from the one that opens it, and one an earlier
 * turn opened does not switch the adapter on for a direct reply, as at inference).
 */
export function aloraMask(ids: readonly number[], invocation: readonly number[], until = ids.length, from = 0): Uint8Array {
  const mask = new Uint8Array(ids.length), s = lastIndexOfRun(ids.slice(0, Math.min(until + invocation.length, ids.length)), invocation);
  if (s >= from) mask.fill(1, s);
  return mask;
}
