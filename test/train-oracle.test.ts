/**
 * The training graph against PyTorch (Debian's python3-torch, used only as the oracle): loss and gradients of
 * a small random Qwen2 with LoRA on all 7 projections (plain and activated-LoRA masking) and full-parameter;
 * full-parameter Qwen3 and Llama 3.1 variants.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MemoryWeights } from '../src/io/weights.ts';
import { openSafetensors, writeSafetensors } from '../src/io/safetensors.ts';
import { PROJECTIONS, projectionShape, projectionTensorName } from '../src/models/config.ts';
import { Trainer, aloraMask } from '../src/train/trainer.ts';
import type { Example } from '../src/train/data.ts';
import type { Params } from '../src/train/optim.ts';
import { makeRandomQwen2, rng } from './helpers/random-model.ts';
import { hasTorch, PY, torchNote } from './helpers/torch.ts';
import { SLOW } from './helpers/tier.ts';

const ORACLE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'oracle/torch_qwen2.py');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-oracle-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const model = makeRandomQwen2({ dir: path.join(tmp, 'm'), seed: 7, gguf: false, config: { numLayers: 2, vocabSize: 512 } });
const cfg = model.config;
const r = rng(11);
const RANK = 4, ALPHA = 8;
const lora: Params = new Map();
for (let l = 0; l < cfg.numLayers; l++) for (const p of PROJECTIONS) {
  const [out, inp] = projectionShape(cfg, p), name = projectionTensorName(l, p);
  lora.set(`${name}.lora_A`, Float32Array.from({ length: RANK * inp }, () => 0.2 * r.normal()));
  lora.set(`${name}.lora_B`, Float32Array.from({ length: out * RANK }, () => 0.2 * r.normal()));
}
const seqs = [[5, 17, 99, 3, 250, 7, 7, 41, 300, 12, 8], [44, 2, 91, 160, 33, 70]];
const examples: Example[] = seqs.map((ids, i) => ({ ids, lossMask: Uint8Array.from(ids, (_, t) => (t >= 3 + i ? 1 : 0)) }));
const INVOCATION = [7, 41];

/** Runs the PyTorch oracle; returns its loss and gradients keyed by our tensor names. */
function torchOracle(mode: 'lora' | 'full', adapterMasks?: Uint8Array[], policy?: Record<string, unknown>, m = model): { loss: number; grads: Map<string, Float32Array>; logprobs: Float32Array } {
  const tensors = new Map(m.weights);
  if (mode === 'lora') for (const [n, d] of lora) {
    const proj = n.replace(/\.lora_[AB]$/, '') as string, [out, inp] = projectionShape(cfg, proj.split('.').pop() as never);
    tensors.set(`${n}.weight`, { shape: n.endsWith('A') ? [RANK, inp] : [out, RANK], data: d });
  }
  const T = Math.max(...seqs.map((s) => s.length));
  const spec = {
    config: m.config, mode, rank: RANK, alpha: ALPHA,
    input_ids: seqs.map((s) => [...s, ...new Array(T - s.length).fill(0)]),
    lengths: seqs.map((s) => s.length),
    adapter_mask: seqs.map((s, b) => Array.from({ length: T }, (_, t) => (t < s.length ? adapterMasks?.[b]?.[t] ?? 1 : 0))),
    loss_mask: examples.map((e) => Array.from({ length: T }, (_, t) => e.lossMask[t] ?? 0)),
    ...policy,
  };
  const dir = fs.mkdtempSync(path.join(tmp, 'run-'));
  fs.writeFileSync(path.join(dir, 'in.json'), JSON.stringify(spec));
  writeSafetensors(path.join(dir, 'in.safetensors'), tensors);
  execFileSync(PY, [ORACLE, path.join(dir, 'in.json'), path.join(dir, 'in.safetensors'), path.join(dir, 'out.safetensors')]);
  const out = openSafetensors(path.join(dir, 'out.safetensors'));
  const ours = (n: string) => (/\.lora_[AB]\.weight$/.test(n) ? n.slice(0, -'.weight'.length) : n);
  const grads = new Map(out.names.filter((n) => n !== 'loss' && n !== 'logprob').map((n) => [ours(n), out.get(n)] as const));
  return { loss: out.get('loss')[0], grads, logprobs: out.get('logprob') };
}

function relErr(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i] - b[i]) ** 2; den += b[i] ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

/** The largest relative error over the trained tensors' gradients, once the tensors trained are checked to be those PyTorch trains. */
function worstGradient(names: readonly string[], ours: Map<string, Float32Array>, ref: Map<string, Float32Array>): { worst: number; worstName: string } {
  assert.deepEqual([...names].sort(), [...ref.keys()].sort(), 'the tensors trained are the ones PyTorch has gradients for');
  assert.deepEqual([...ours.keys()].sort(), [...names].sort());
  let worst = 0, worstName = '';
  for (const name of names) {
    const e = relErr(ours.get(name)!, ref.get(name)!);
    if (e > worst) { worst = e; worstName = name; }
  }
  return { worst, worstName };
}

async function compare(mode: 'lora' | 'full', adapterMasks?: Uint8Array[], m = model): Promise<number> {
  const trainer = await Trainer.create(m.config, new MemoryWeights(m.weights), mode === 'lora' ? { kind: 'lora', targets: PROJECTIONS, scale: ALPHA / RANK } : { kind: 'full' }, { threads: 2 });
  try {
    const targets = examples.reduce((s, e) => s + e.lossMask.reduce((a, b) => a + b, 0), 0);
    const params: Params = mode === 'lora' ? lora : new Map([...m.weights].map(([n, t]) => [n, t.data]));
    const ours = await trainer.step(params, { examples, targetWeight: 1 / targets, adapterMasks });
    const ref = torchOracle(mode, adapterMasks, undefined, m);
    assert.ok(Math.abs(ours.loss - ref.loss) / ref.loss <= 1e-5, `loss ${ours.loss} vs torch ${ref.loss}`);
    const { worst, worstName } = worstGradient(trainer.paramNames, ours.grads, ref.grads);
    console.log(`${mode}${adapterMasks ? ' (activated LoRA)' : ''}: loss ${ours.loss.toFixed(6)} (torch ${ref.loss.toFixed(6)}), worst gradient relative error ${worst.toExponential(2)} (${worstName}) over ${trainer.paramNames.length} tensors`);
    assert.ok(worst <= 1e-4, `gradient of ${worstName}: relative error ${worst}`);
    return ref.loss;
  } finally {
    await trainer.close();
  }
}

test('LoRA on all 7 projections: loss and gradients match PyTorch (fp32, ≤ 1e-4 relative)', { skip: !hasTorch && torchNote }, async () => {
  await compare('lora');
});

test('activated LoRA (adapter from the invocation tokens on): loss and gradients match PyTorch', { skip: !hasTorch && torchNote }, async () => {
  const masks = seqs.map((s) => aloraMask(s, INVOCATION));
  assert.deepEqual([...masks[0]], [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1], 'from the last occurrence of [7, 41] on');
  assert.deepEqual([...masks[1]], [0, 0, 0, 0, 0, 0], 'no invocation: base weights only');
  await compare('lora', masks);
});

test('full-parameter training: loss and gradients of every weight match PyTorch', { skip: !hasTorch && torchNote }, async () => {
  await compare('full');
});

test('Llama with Llama 3.1 RoPE scaling (rope_scaling llama3): loss and gradients match PyTorch', { skip: !hasTorch && torchNote }, async () => {
  // A short original context, so most of the tiny model's frequencies are slowed or blended at these positions.
  const ropeScaling = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 } as const;
  const llama = makeRandomQwen2({ dir: path.join(tmp, 'llama3'), seed: 8, gguf: false, config: { architecture: 'llama', numLayers: 2, vocabSize: 512, ropeTheta: 10000, ropeScaling } });
  // Sharper attention than the helper's std 0.02 gives, so positions (and so RoPE) matter to the loss.
  for (const [n, t] of llama.weights) if (/\.(q|k)_proj\.weight$/.test(n)) t.data.forEach((x, i) => { t.data[i] = 40 * x; });
  const scaled = await compare('full', undefined, llama);
  const plain = torchOracle('full', undefined, undefined, { ...llama, config: { ...llama.config, ropeScaling: undefined } }).loss;
  assert.ok(Math.abs(scaled - plain) > 1e-3 * plain, `the scaling must matter at these positions (loss ${scaled} vs plain RoPE ${plain})`);
});

test('Qwen2 with YaRN and with linear RoPE scaling (Qwen2.5\'s long-context rope_scaling): loss and gradients match PyTorch', { skip: !hasTorch && torchNote }, async () => {
  // A short original context, so YaRN slows most of the tiny model's frequencies at these positions; its attention
  // factor (0.1 ln 4 + 1) scales cos and sin.
  const scalings = [
    { type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 64, betaFast: 32, betaSlow: 1, attentionFactor: 0.1 * Math.log(4) + 1 },
    { type: 'linear', factor: 4 },
  ] as const;
  for (const [i, ropeScaling] of scalings.entries()) {
    const m = makeRandomQwen2({ dir: path.join(tmp, `rope-${ropeScaling.type}`), seed: 11 + i, gguf: false, config: { numLayers: 2, vocabSize: 512, ropeTheta: 10000, ropeScaling } });
    for (const [n, t] of m.weights) if (/\.(q|k)_proj\.weight$/.test(n)) t.data.forEach((x, j) => { t.data[j] = 40 * x; });
    const scaled = await compare('full', undefined, m);
    const plain = torchOracle('full', undefined, undefined, { ...m, config: { ...m.config, ropeScaling: undefined } }).loss;
    assert.ok(Math.abs(scaled - plain) > 1e-3 * plain, `${ropeScaling.type}: the scaling must matter at these positions (loss ${scaled} vs plain RoPE ${plain})`);
  }
});

test('Qwen3 (per-head q/k RMSNorm, head_dim ≠ hidden / heads): loss and gradients of every weight match PyTorch', { skip: !hasTorch && torchNote }, async () => {
  const qwen3 = makeRandomQwen2({ dir: path.join(tmp, 'qwen3'), seed: 9, gguf: false, config: { architecture: 'qwen3', numLayers: 2, vocabSize: 512, headDim: 32 } });
  assert.deepEqual(qwen3.weights.get('model.layers.1.self_attn.k_norm.weight')?.shape, [32]);
  assert.deepEqual(qwen3.weights.get('model.layers.0.self_attn.q_proj.weight')?.shape, [128, 64]);
  const loss = await compare('full', undefined, qwen3);
  // LoRA (activated from the invocation) on the same architecture, with the shared LoRA tensors' shapes.
  const q16 = makeRandomQwen2({ dir: path.join(tmp, 'qwen3-16'), seed: 10, gguf: false, config: { architecture: 'qwen3', numLayers: 2, vocabSize: 512 } });
  await compare('lora', seqs.map((s) => aloraMask(s, INVOCATION)), q16);
  // Without the head norms the model computes something else: they are part of the graph, not ignored.
  const unnormed = torchOracle('full', undefined, undefined, { ...qwen3, config: { ...qwen3.config, architecture: 'qwen2' } }).loss;
  assert.ok(Math.abs(loss - unnormed) > 1e-3 * loss, `the q/k norms must matter (loss ${loss} vs ${unnormed} without them)`);
});

test('embedding gradient with many repeated ids on 2 threads: equals PyTorch, the same on every run', { skip: SLOW || (!hasTorch && torchNote) }, async () => {
  // ORT's CPU ScatterND-add races when ids repeat across its threads; the Gather VJP sums repeats before scattering.
  const ids = Array.from({ length: 4000 }, (_, i) => ((i * 37) % 13) + 3), long: Example[] = [{ ids, lossMask: Uint8Array.from(ids, (_, t) => (t ? 1 : 0)) }];
  const trainer = await Trainer.create(cfg, new MemoryWeights(model.weights), { kind: 'full' }, { threads: 2 });
  try {
    const params: Params = new Map([...model.weights].map(([n, t]) => [n, t.data]));
    const step = async () => (await trainer.step(params, { examples: long, targetWeight: 1 / (ids.length - 1) })).grads.get('model.embed_tokens.weight')!;
    const [a, b] = [await step(), await step()];
    assert.deepEqual(b, a, 'the same gradient on every run');
    const saved = { seqs: seqs.splice(0, seqs.length, ids), ex: examples.splice(0, examples.length, ...long) };
    try {
      const ref = torchOracle('full').grads.get('model.embed_tokens.weight')!;
      assert.ok(relErr(a, ref) <= 1e-4, `embedding gradient vs torch: relative error ${relErr(a, ref)}`);
    } finally {
      seqs.splice(0, seqs.length, ...saved.seqs); examples.splice(0, examples.length, ...saved.ex);
    }
  } finally {
    await trainer.close();
  }
});

test('GRPO clipped policy-gradient loss with KL: loss and gradients match PyTorch', { skip: !hasTorch && torchNote }, async () => {
  const objective = { kind: 'policy' as const, clipEps: 0.2, beta: 0.05, behaviour: 'input' as const };
  const trainer = await Trainer.create(cfg, new MemoryWeights(model.weights), { kind: 'lora', targets: PROJECTIONS, scale: ALPHA / RANK }, { threads: 2, objective });
  try {
    const counts = examples.map((e) => e.lossMask.reduce((a, b) => a + b, 0));
    // Behaviour log-probs shifted so that some ratios fall outside [0.8, 1.2] and the clip is exercised.
    const probe = await Trainer.create(cfg, new MemoryWeights(model.weights), { kind: 'lora', targets: PROJECTIONS, scale: ALPHA / RANK }, { threads: 2 });
    const cur = (await probe.step(lora, { examples, targetWeight: 1 })).logprobs;
    await probe.close();
    const shifts = [0.5, -0.3, 0.05, 0.1, -0.02, 0.4, -0.5, 0.0];
    const old = cur.map((lp, b) => Float32Array.from(lp, (x, k) => x + shifts[(b * 3 + k) % shifts.length]));
    const ref = cur.map((lp, b) => Float32Array.from(lp, (x, k) => x - 0.1 * ((b + k) % 3)));
    const advantages = [1.3, -0.7];
    const weight = 1 / counts.reduce((a, b) => a + b);
    const ours = await trainer.step(lora, { examples, targetWeight: weight, policy: { advantages, oldLogprobs: old, refLogprobs: ref } });
    const refOut = torchOracle('lora', undefined, {
      objective, weight, advantage: advantages, old_logprob: old.flatMap((a) => [...a]), ref_logprob: ref.flatMap((a) => [...a]),
    });
    assert.ok(Math.abs(ours.loss - refOut.loss) <= 1e-5 * Math.max(1, Math.abs(refOut.loss)), `loss ${ours.loss} vs torch ${refOut.loss}`);
    const { worst } = worstGradient(trainer.paramNames, ours.grads, refOut.grads);
    console.log(`policy loss ${ours.loss.toFixed(6)} (torch ${refOut.loss.toFixed(6)}), worst gradient relative error ${worst.toExponential(2)}`);
    assert.ok(worst <= 1e-4, `worst gradient relative error ${worst}`);
  } finally {
    await trainer.close();
  }
});

test('GRPO on-policy at temperature 0.7 (ratio against the detached current policy): loss, log-probs and gradients match PyTorch', { skip: !hasTorch && torchNote }, async () => {
  const objective = { kind: 'policy' as const, clipEps: 0.2, beta: 0 }, temperature = 0.7;
  const trainer = await Trainer.create(cfg, new MemoryWeights(model.weights), { kind: 'lora', targets: PROJECTIONS, scale: ALPHA / RANK }, { threads: 2, objective, temperature });
  try {
    const counts = examples.map((e) => e.lossMask.reduce((a, b) => a + b, 0));
    const advantages = [1.3, -0.7], weight = 1 / counts.reduce((a, b) => a + b);
    const ours = await trainer.step(lora, { examples, targetWeight: weight, policy: { advantages } });
    const refOut = torchOracle('lora', undefined, { objective, weight, advantage: advantages, temperature });
    // ρ = 1: the loss is −Σ w·A, whatever the log-probs
    const expected = -weight * advantages.reduce((s, a, b) => s + a * counts[b], 0);
    assert.ok(Math.abs(ours.loss - expected) <= 1e-6 && Math.abs(refOut.loss - expected) <= 1e-6, `loss ${ours.loss}, torch ${refOut.loss}, expected ${expected}`);
    const { worst } = worstGradient(trainer.paramNames, ours.grads, refOut.grads);
    console.log(`on-policy loss at temperature ${temperature}: worst gradient relative error ${worst.toExponential(2)}`);
    assert.ok(worst <= 1e-4, `worst gradient relative error ${worst}`);
    // The log-probs are of the tempered distribution, as PyTorch's: not the untempered ones.
    const lps = ours.logprobs.flatMap((a) => [...a]), worstLp = Math.max(...lps.map((x, i) => Math.abs(x - refOut.logprobs[i])));
    assert.equal(lps.length, refOut.logprobs.length);
    assert.ok(worstLp <= 1e-5, `worst log-prob difference ${worstLp}`);
    const plain = await Trainer.create(cfg, new MemoryWeights(model.weights), { kind: 'lora', targets: PROJECTIONS, scale: ALPHA / RANK }, { threads: 2 });
    const untempered = (await plain.step(lora, { examples, targetWeight: weight })).logprobs;
    await plain.close();
    assert.ok(ours.logprobs.some((lp, b) => lp.some((x, k) => Math.abs(x - untempered[b][k]) > 1e-3)), 'tempered log-probs differ from untempered ones');
  } finally {
    await trainer.close();
  }
});
