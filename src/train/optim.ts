/**
 * Optimisation pieces around the autodiff graph: AdamW over named Float32Array parameters (updated in place),
 * global gradient-norm clipping, and a warmup + cosine learning-rate schedule. Semantics follow
 * torch.optim.AdamW and torch.nn.utils.clip_grad_norm_; arithmetic is done in float64 and stored as float32.
 */

export type Params = Map<string, Float32Array>;

export interface AdamWOptions {
  lr: number;
  beta1?: number; // 0.9
  beta2?: number; // 0.999
  eps?: number; // 1e-8
  /** Decoupled weight decay (p -= lr * wd * p), 0.01 like torch. */
  weightDecay?: number;
  /** Which parameters decay (default: all, as torch). E.g. `(n) => !n.endsWith('norm.weight')`. */
  decay?: (name: string) => boolean;
}

/** Everything a checkpoint needs to continue AdamW bit-identically. */
export interface AdamWState { step: number; m: Params; v: Params }

export class AdamW {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** Number of updates taken so far (bias correction uses step after increment, like torch). */
  step = 0;
  readonly m: Params = new Map();
  readonly v: Params = new Map();

  constructor(readonly params: Params, private readonly opts: AdamWOptions) {
    this.lr = opts.lr;
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    for (const [n, p] of params) { this.m.set(n, new Float32Array(p.length)); this.v.set(n, new Float32Array(p.length)); }
  }

  /** One update of every parameter in place; every parameter needs a gradient of its size. */
  update(grads: Params, lr = this.lr): void {
    for (const [n, p] of this.params) {
      const g = grads.get(n);
      if (!g) throw new Error(`AdamW: no gradient for parameter "${n}"`);
      if (g.length !== p.length) throw new Error(`AdamW: gradient for "${n}" has ${g.length} values, the parameter ${p.length}`);
    }
    this.step++;
    const { beta1: b1, beta2: b2, eps } = this;
    const bc1 = 1 - b1 ** this.step, bc2 = Math.sqrt(1 - b2 ** this.step), stepSize = lr / bc1;
    for (const [n, p] of this.params) {
      const g = grads.get(n)!, m = this.m.get(n)!, v = this.v.get(n)!;
      const keep = this.opts.decay && !this.opts.decay(n) ? 1 : 1 - lr * this.weightDecay;
      for (let i = 0; i < p.length; i++) {
        const gi = g[i];
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        p[i] = p[i] * keep - stepSize * m[i] / (Math.sqrt(v[i]) / bc2 + eps);
      }
    }
  }

  /** Live references to the moments (copy them if they must outlive further updates). */
  state(): AdamWState { return { step: this.step, m: this.m, v: this.v }; }

  /** Restore a saved state (copied into this optimizer's buffers); names and sizes must match. */
  loadState(s: AdamWState): void {
    for (const [what, src, dst] of [['m', s.m, this.m], ['v', s.v, this.v]] as const) {
      for (const [n, buf] of dst) {
        const from = src.get(n);
        if (!from) throw new Error(`AdamW: saved state lacks ${what} for parameter "${n}"`);
        if (from.length !== buf.length) throw new Error(`AdamW: saved ${what} for "${n}" has ${from.length} values, the parameter ${buf.length}`);
        buf.set(from);
      }
      for (const n of src.keys()) if (!dst.has(n)) throw new Error(`AdamW: saved state has ${what} for unknown parameter "${n}"`);
    }
    this.step = s.step;
  }
}

/**
 * Scale all gradients in place so their global L2 norm is at most maxNorm (coefficient maxNorm / (norm + 1e-6),
 * as torch). Returns the norm before clipping (Infinity/NaN pass through unclipped so the caller can skip the step).
 */
export function clipGradNorm(grads: Params | Iterable<Float32Array>, maxNorm: number): number {
  const list = [...(grads instanceof Map ? grads.values() : grads)];
  let sq = 0;
  for (const g of list) for (let i = 0; i < g.length; i++) sq += g[i] * g[i];
  const norm = Math.sqrt(sq), coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (const g of list) for (let i = 0; i < g.length; i++) g[i] *= coef;
  return norm;
}

/**
 * Stops a run that diverged, before its update or anything more is saved: the loss and gradient norm of step
 * `step` (1-based) must be finite. Weights that gave a non-finite loss are already broken, so skipping the update
 * would not save the run. `last` is the step of the last checkpoint, if any.
 */
export function checkDiverged(what: string, step: number, values: { loss?: number; gradNorm: number }, lr: number, last?: { step: number; dir: string }, lower = `--lr (${lr})`): void {
  if (Number.isFinite(values.loss ?? 0) && Number.isFinite(values.gradNorm)) return;
  const got = `${values.loss !== undefined ? `loss ${values.loss}, ` : ''}gradient norm ${values.gradNorm}`;
  const ckpt = !last ? '' : last.step === step - 1 ? ` The checkpoint of step ${last.step} in ${last.dir} holds the weights that gave it.`
    : ` The checkpoint of step ${last.step} in ${last.dir} is from before it.`;
  throw new Error(`${what}: step ${step} has a ${got}: the run diverged, and nothing more was saved; lower ${lower} and start again.${ckpt}`);
}

export interface Schedule { lr: number; warmup: number; total: number; minLr: number }

/**
 * Learning rate for 0-based optimizer step `step`: linear warmup lr·(step+1)/warmup for step < warmup, then a
 * cosine from lr down to minLr reached at step = total, and minLr after that.
 */
export function lrAt(step: number, s: Schedule): number {
  if (step < s.warmup) return (s.lr * (step + 1)) / s.warmup;
  if (step >= s.total) return s.minLr;
  const t = (step - s.warmup) / Math.max(1, s.total - s.warmup);
  return s.minLr + 0.5 * (1 + Math.cos(Math.PI * t)) * (s.lr - s.minLr);
}
