/**
 * Training benchmark: one training step (forward + backward, no optimizer update) of our ONNX training graph on
 * onnxruntime-node vs the same step in PyTorch CPU (fp32, eager autograd; the model of the training oracle,
 * test/oracle/torch_qwen2.py, timed by bench/torch_train_step.py), with the same shapes and thread count:
 *  - LoRA r16 (alpha 32) on all 7 projections of a random-weight model in Qwen2.5-0.5B's exact shape, base
 *    weights frozen, adapters trainable;
 *  - full-parameter training of a model in the embedded default's shape (src/tasks/default-model.ts).
 * A step is one micro-batch of `batch` rows × `tokens` tokens (default 4 × 256) with the loss on every token
 * (each position predicts the next, so 4 × 255 targets), the same in both. Weights are random (uniform, std 0.02;
 * norms 1), built in memory on each side: the values do not change the work, so the two sides do not share them.
 * Each side runs in its own child process (so peak RSS is attributable), one after the other; each does one
 * untimed warm-up step, then `steps` timed steps, of which the median is reported.
 *
 *   node --import tsx bench/train.ts [--json] [--threads 2] [--steps 3] [--small-steps 10] [--profile]
 *     [--layers N --batch B --tokens T] (smaller smoke runs) [--python /usr/bin/python3] [--torch-blas DIR]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import cliProgress from 'cli-progress';
import { PROJECTIONS, projectionShape, projectionTensorName, type ModelConfig, type Projection } from '../src/models/config.ts';
import { isMainModule } from '../src/main-module.ts';
import { freshStem, median, scriptArgs, writeResults } from './write.ts';
import { childMain, now, peakMb, progress, rssMb, runChild } from './child.ts';

export interface TrainBenchOptions {
  /** Print the result as JSON on stdout (otherwise a table). */
  json?: boolean;
  /** Threads for both sides (ORT intra-op threads; torch.set_num_threads). Default 2. */
  threads?: number;
  /** Timed steps per side after one warm-up step; the median is reported. Default 3 (0.5B LoRA) and 10 (small full). */
  steps?: number;
  smallSteps?: number;
  /** Micro-batch rows and tokens per row (default 4 × 256). */
  batch?: number;
  tokens?: number;
  /** LoRA rank and alpha (default 16, 32). */
  rank?: number;
  alpha?: number;
  /** Decoder layers of the 0.5B-shaped model (default its 24; fewer for smoke runs). */
  layers?: number;
  /** Also measure full-parameter training of the small model (default true). */
  full?: boolean;
  /** Also run one profiled LoRA step per side (ORT enableProfiling; torch.autograd.profiler) and report the op split. */
  profile?: boolean;
  /** Python with torch (default /usr/bin/python3, Debian's python3-torch). */
  python?: string;
  /** A folder put first on the torch child's LD_LIBRARY_PATH (e.g. holding another libblas.so.3). */
  torchBlas?: string;
  /** Where train-<date>.json/.md go (default bench/results); null = do not write. */
  resultsDir?: string | null;
  /** Progress on stderr (default true: a bar on a TTY, lines otherwise). */
  progress?: boolean;
}

/** One side's measurement. */
export interface SideResult {
  tok_s: number;
  /** Median step time and every timed step, seconds. */
  step_s: number;
  steps_s: number[];
  warmup_s: number;
  /** Building the weights (and ours: the training graph and the ORT session). */
  load_s: number;
  loss: number;
  peak_rss_mb: number;
  rss_after_load_mb: number;
}

export interface ProfileSplit {
  /** Kernel time of one step by op type (ours: ORT node op types; torch: aten ops, self time), largest first. */
  ops: { op: string; ms: number; share: number; count: number; gflop_s?: number }[];
  total_ms: number;
  /** Ours: kernel time of the forward (up to the loss) and the backward nodes. */
  phases?: Record<string, number>;
  step_ms?: number;
}

export interface TrainBenchResult {
  date: string;
  /** LoRA r16 on the 0.5B-shaped model: tokens (batch × tokens) per second of forward + backward. */
  train_tok_s: number;
  torch_train_tok_s: number;
  /** ours / torch (> 1: we are faster). */
  train_ratio: number;
  /** Peak RSS of our LoRA child process (weights, graph build, session, steps). */
  peak_rss_mb: number;
  torch_peak_rss_mb: number;
  /** Full-parameter training of the small model. */
  full_train_tok_s?: number;
  torch_full_train_tok_s?: number;
  full_train_ratio?: number;
  lora: { ours: SideResult; torch: SideResult };
  full?: { ours: SideResult; torch: SideResult };
  profile?: { ours: ProfileSplit; torch: ProfileSplit };
  model: {
    shape: string; layers: number; params_m: number; lora: { rank: number; alpha: number; targets: string; trainable_params: number };
    small_shape: string; small_params_m: number;
  };
  settings: { threads: number; batch: number; tokens: number; targets_per_step: number; loss: string; warmup_steps: number; steps: number; small_steps: number; dtype: string; ours: string; torch: string };
  machine: { cpu: string; cores: number; memory_gb: number; os: string; node: string; onnxruntime_node: string; python: string; torch: string; torch_blas: string; torch_threads: number };
}

const SHAPE = 'Qwen2.5-0.5B (hidden 896, 24 layers, 14 heads / 2 KV heads, intermediate 4864, vocab 151936, tied, rope 1e6)';
const QWEN25_05B: ModelConfig = {
  architecture: 'qwen2', vocabSize: 151936, hiddenSize: 896, intermediateSize: 4864, numLayers: 24, numHeads: 14,
  numKvHeads: 2, headDim: 64, rmsNormEps: 1e-6, ropeTheta: 1000000, maxPositionEmbeddings: 32768,
  tieWordEmbeddings: true, attentionBias: true, bosTokenId: 151643, eosTokenIds: [151645, 151643],
};
/** The embedded default's vocabulary (models/default/tokenizer.json). */
const SMALL_VOCAB = 826;

interface ChildConfig {
  side: 'ours' | 'torch';
  label: string;
  config: ModelConfig;
  mode: 'lora' | 'full';
  rank: number;
  alpha: number;
  inputIds: number[][];
  lossMask: number[][];
  warmup: number;
  steps: number;
  threads: number;
  seed: number;
  /** Ours: profile the steps (a separate, untimed run). Torch: profile one more step after the timed ones. */
  profile?: boolean;
}

interface ChildResult {
  loadMs: number;
  warmupMs: number;
  stepMs: number[];
  loss: number;
  trainableParams: number;
  peakRssMb: number;
  rssAfterLoadMb: number;
  info?: { python: string; torch: string; blas: string; threads: number };
  profile?: ProfileSplit;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

/** Deterministic token ids below `vocab` - 8: a fixed "text" per row. */
function tokenIds(rows: number, n: number, vocab: number): number[][] {
  return Array.from({ length: rows }, (_, r) => Array.from({ length: n }, (_, i) => (Math.imul(i + 1 + 7919 * r, 2654435761) >>> 0) % (vocab - 8)));
}

function paramCount(c: ModelConfig): number {
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  const layer = 2 * c.hiddenSize + c.hiddenSize * (q + 2 * kv) + (c.attentionBias ? q + 2 * kv : 0) + q * c.hiddenSize + 3 * c.hiddenSize * c.intermediateSize;
  return c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2) + c.numLayers * layer + c.hiddenSize;
}

function describe(c: ModelConfig): string {
  return `hidden ${c.hiddenSize}, ${c.numLayers} layers, ${c.numHeads} heads / ${c.numKvHeads} KV heads, intermediate ${c.intermediateSize}, vocab ${c.vocabSize}${c.tieWordEmbeddings ? ', tied' : ''}, rope ${c.ropeTheta}`;
}

// ---------------------------------------------------------------------------------------------
// Parent.

export async function runTrainBench(opts: TrainBenchOptions = {}): Promise<TrainBenchResult> {
  const threads = opts.threads ?? 2, batch = opts.batch ?? 4, tokens = opts.tokens ?? 256, rank = opts.rank ?? 16, alpha = opts.alpha ?? 2 * rank;
  const steps = opts.steps ?? 3, smallSteps = opts.smallSteps ?? 10, withFull = opts.full ?? true;
  if (tokens < 2 || batch < 1) throw new Error('bench train: need batch ≥ 1 and tokens ≥ 2');
  if (steps < 1 || smallSteps < 1) throw new Error('bench train: need at least one timed step');
  const big: ModelConfig = { ...QWEN25_05B, numLayers: opts.layers ?? QWEN25_05B.numLayers };
  const { defaultConfig } = await import('../src/tasks/default-model.ts');
  const small = defaultConfig(SMALL_VOCAB);
  const python = opts.python ?? '/usr/bin/python3';
  // PyTorch is the other side: checked before ours runs for minutes.
  const probe = spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8', env: { ...process.env, ...(opts.torchBlas ? { LD_LIBRARY_PATH: [opts.torchBlas, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':') } : {}) } });
  if (probe.error || probe.status !== 0) throw new Error(`bench train: --python ${python} cannot import torch (${probe.error?.message ?? (probe.stderr.trim().split('\n').at(-1) || `exit ${probe.status}`)}): install Debian's python3-torch, or pass --python <a Python with torch>`);

  const show = opts.progress ?? true, tty = !!process.stderr.isTTY;
  const bar = show && tty
    ? new cliProgress.SingleBar({ format: '{phase} [{bar}] {value}/{total} {label} · ETA {eta_formatted}', hideCursor: true, clearOnComplete: true, stream: process.stderr }, cliProgress.Presets.shades_classic)
    : undefined;
  let phase = '';
  const start = (name: string, total: number) => { phase = name; bar?.start(total, 0, { phase: name, label: '' }); };
  const tick = (label: string) => { if (bar) bar.increment(1, { label }); else if (show) process.stderr.write(`[bench train] ${phase}: ${label}\n`); };

  const mask = (rows: number[][]) => rows.map((r) => r.map(() => 1));
  const bigIds = tokenIds(batch, tokens, big.vocabSize), smallIds = tokenIds(batch, tokens, small.vocabSize);
  const lora = (side: 'ours' | 'torch', extra: Partial<ChildConfig> = {}): ChildConfig => ({
    side, label: `${side} LoRA r${rank}, ${big.numLayers}-layer 0.5B shape`, config: big, mode: 'lora', rank, alpha,
    inputIds: bigIds, lossMask: mask(bigIds), warmup: 1, steps, threads, seed: 0, ...extra,
  });
  const full = (side: 'ours' | 'torch'): ChildConfig => ({
    side, label: `${side} full-parameter, small model`, config: small, mode: 'full', rank, alpha,
    inputIds: smallIds, lossMask: mask(smallIds), warmup: 1, steps: smallSteps, threads, seed: 0,
  });
  const run = async (cfg: ChildConfig) => {
    start(cfg.label, (cfg.side === 'ours' ? 2 : 1) + cfg.warmup + cfg.steps + (cfg.profile ? 1 : 0));
    try { return await (cfg.side === 'ours' ? runChild<ChildConfig, ChildResult>(import.meta.url, cfg, cfg.label, tick) : runTorch(cfg, python, opts.torchBlas, tick)); } finally { bar?.stop(); }
  };

  const oursLora = await run(lora('ours'));
  const torchLora = await run(lora('torch'));
  const oursFull = withFull ? await run(full('ours')) : undefined;
  const torchFull = withFull ? await run(full('torch')) : undefined;
  let profile: TrainBenchResult['profile'];
  if (opts.profile) {
    // Separate runs, so profiling overhead never touches the timed steps: ours with ORT profiling on (warm-up + 1 step),
    // torch with one autograd-profiled step.
    const o = await run(lora('ours', { label: 'ours LoRA, profiled', steps: 1, profile: true }));
    const t = await run(lora('torch', { label: 'torch LoRA, profiled', warmup: 0, steps: 0, profile: true }));
    profile = { ours: o.profile!, torch: t.profile! };
  }

  const side = (r: ChildResult): SideResult => {
    const step = median(r.stepMs);
    return {
      tok_s: round((batch * tokens * 1000) / step), step_s: round(step / 1000, 3), steps_s: r.stepMs.map((m) => round(m / 1000, 3)),
      warmup_s: round(r.warmupMs / 1000, 2), load_s: round(r.loadMs / 1000, 2), loss: round(r.loss, 4),
      peak_rss_mb: Math.round(r.peakRssMb), rss_after_load_mb: Math.round(r.rssAfterLoadMb),
    };
  };
  const cpus = os.cpus(), info = torchLora.info!;
  const ol = side(oursLora), tl = side(torchLora);
  const result: TrainBenchResult = {
    date: new Date().toISOString(),
    train_tok_s: ol.tok_s,
    torch_train_tok_s: tl.tok_s,
    train_ratio: round(ol.tok_s / tl.tok_s, 3),
    peak_rss_mb: ol.peak_rss_mb,
    torch_peak_rss_mb: tl.peak_rss_mb,
    lora: { ours: ol, torch: tl },
    model: {
      shape: big.numLayers === QWEN25_05B.numLayers ? SHAPE : `Qwen2.5-0.5B cut to ${big.numLayers} layers (${describe(big)})`,
      layers: big.numLayers, params_m: round(paramCount(big) / 1e6), lora: { rank, alpha, targets: PROJECTIONS.join(', '), trainable_params: oursLora.trainableParams },
      small_shape: `the embedded default's (${describe(small)})`, small_params_m: round(paramCount(small) / 1e6, 2),
    },
    settings: {
      threads, batch, tokens, targets_per_step: batch * (tokens - 1), loss: 'token cross-entropy on every next-token target (mean)',
      warmup_steps: 1, steps, small_steps: withFull ? smallSteps : 0, dtype: 'fp32',
      ours: 'onnxruntime-node CPU EP, training graph (plain ONNX ops + generated backward), graphOptimizationLevel all, logits at target rows only',
      torch: 'eager autograd (test/oracle/torch_qwen2.py model), base weights frozen (requires_grad False), logits at every position',
    },
    machine: {
      cpu: cpus[0]?.model ?? 'unknown', cores: os.availableParallelism(), memory_gb: round(os.totalmem() / 2 ** 30), os: `${os.type()} ${os.release()} ${os.arch()}`,
      node: process.version, onnxruntime_node: require('onnxruntime-node/package.json').version as string,
      python: info.python, torch: info.torch, torch_blas: info.blas, torch_threads: info.threads,
    },
  };
  if (oursFull && torchFull) {
    const of = side(oursFull), tf = side(torchFull);
    Object.assign(result, { full_train_tok_s: of.tok_s, torch_full_train_tok_s: tf.tok_s, full_train_ratio: round(of.tok_s / tf.tok_s, 3), full: { ours: of, torch: tf } });
  }
  if (profile) result.profile = profile;

  if (referenceBlas(info.blas)) console.error(`warning: PyTorch uses the reference BLAS (${info.blas}): its times are far slower than with OpenBLAS/MKL, so ours / torch flatters edgereason; install libopenblas0-pthread for a fair baseline`);
  // Key order: headline numbers first.
  const ordered = Object.fromEntries(['date', 'train_tok_s', 'torch_train_tok_s', 'train_ratio', 'peak_rss_mb', 'torch_peak_rss_mb', 'full_train_tok_s', 'torch_full_train_tok_s', 'full_train_ratio',
    'lora', 'full', 'model', 'settings', 'machine', 'profile'].filter((k) => k in result).map((k) => [k, result[k as keyof TrainBenchResult]])) as unknown as TrainBenchResult;

  if (opts.resultsDir !== null) {
    const dir = opts.resultsDir ?? path.join(here, 'results');
    writeResults(dir, freshStem(dir, `train-${ordered.date.slice(0, 10)}`), ordered, markdown(ordered), 2);
  }
  console.log(opts.json ? JSON.stringify(ordered, null, 2) : markdown(ordered));
  return ordered;
}

/** Debian's netlib reference BLAS (libblas.so.3 under blas/): unoptimised, the slowest baseline PyTorch can have. */
const referenceBlas = (blas: string) => /\/blas\/libblas\.so/.test(blas);

function runTorch(cfg: ChildConfig, python: string, blasDir: string | undefined, tick: (label: string) => void): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    // torch.set_num_threads covers ATen's OpenMP; a threaded BLAS (OpenBLAS) takes its own count from the environment.
    const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: String(cfg.threads), OPENBLAS_NUM_THREADS: String(cfg.threads), MKL_NUM_THREADS: String(cfg.threads) };
    if (blasDir) env.LD_LIBRARY_PATH = [blasDir, env.LD_LIBRARY_PATH].filter(Boolean).join(':');
    const child = spawn(python, [path.join(here, 'torch_train_step.py')], { stdio: ['pipe', 'pipe', 'pipe'], env });
    let stdout = '', stderr = '', partial = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => {
      partial += d;
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const l of lines) if (l.startsWith('progress ')) tick(l.slice('progress '.length)); else stderr += l + '\n';
    });
    child.on('error', (e) => reject(new Error(`bench train: cannot run ${python}: ${e.message}`)));
    child.stdin.on('error', () => { /* a child that exits before reading its input: its exit code says why */ });
    child.on('exit', (code, signal) => {
      if (code !== 0) return reject(new Error(`bench train: the child "${cfg.label}" failed (exit ${code ?? signal})\n${(stderr + partial).slice(-4000)}`));
      const r = JSON.parse(stdout);
      const prof = r.profile as { total_ms: number; ops: { op: string; ms: number; count: number }[] } | undefined;
      resolve({
        loadMs: r.load_ms, warmupMs: r.warmup_ms, stepMs: r.step_ms, loss: r.loss, trainableParams: r.trainable_params,
        peakRssMb: r.peak_rss_mb, rssAfterLoadMb: r.rss_after_load_mb, info: r.info,
        profile: prof && { total_ms: round(prof.total_ms), ops: prof.ops.map((o) => ({ op: o.op, ms: round(o.ms), share: round(o.ms / prof.total_ms, 3), count: o.count })) },
      });
    });
    child.stdin.end(JSON.stringify({
      config: cfg.config, mode: cfg.mode, rank: cfg.rank, alpha: cfg.alpha, input_ids: cfg.inputIds, loss_mask: cfg.lossMask,
      warmup: cfg.warmup, steps: cfg.steps, threads: cfg.threads, seed: cfg.seed, profile: !!cfg.profile,
    }));
  });
}

function markdown(r: TrainBenchResult): string {
  const row = (name: string, o: SideResult, t: SideResult) =>
    `| ${name} | ${o.tok_s.toFixed(1)} (${o.step_s.toFixed(2)} s/step) | ${t.tok_s.toFixed(1)} (${t.step_s.toFixed(2)} s/step) | ${(o.tok_s / t.tok_s).toFixed(2)} |`;
  const s = r.settings;
  const lines = [
    `# Training benchmark ${r.date.slice(0, 10)}`,
    '',
    `One step = forward + backward (no optimizer update) on ${s.batch} × ${s.tokens} tokens, loss on every next-token target (${s.targets_per_step}), ${s.dtype}, ${s.threads} threads each side; median of ${s.steps} timed steps after 1 warm-up step (small model: ${s.small_steps}). Each side in its own process, one after the other.`,
    `LoRA: r${r.model.lora.rank}, alpha ${r.model.lora.alpha} on ${r.model.lora.targets} (${(r.model.lora.trainable_params / 1e6).toFixed(2)}M trainable), base frozen; random weights in ${r.model.shape}, ${r.model.params_m}M parameters.`,
    r.full ? `Full-parameter: ${r.model.small_shape}, ${r.model.small_params_m}M parameters, all trainable.` : '',
    `Ours: ${s.ours}. PyTorch: ${s.torch}.`,
    '',
    '| tok/s | ours (onnxruntime) | PyTorch CPU | ours / torch |',
    '|---|---:|---:|---:|',
    row(`LoRA r${r.model.lora.rank}, 0.5B shape`, r.lora.ours, r.lora.torch),
    ...(r.full ? [row('full-parameter, small model', r.full.ours, r.full.torch)] : []),
    `| peak RSS MB, LoRA 0.5B | ${r.lora.ours.peak_rss_mb} (after load ${r.lora.ours.rss_after_load_mb}) | ${r.lora.torch.peak_rss_mb} (after load ${r.lora.torch.rss_after_load_mb}) | |`,
    ...(r.full ? [`| peak RSS MB, full small | ${r.full.ours.peak_rss_mb} | ${r.full.torch.peak_rss_mb} | |`] : []),
    `| load s (weights${'; ours: + graph + session'}), LoRA 0.5B | ${r.lora.ours.load_s} | ${r.lora.torch.load_s} | |`,
    `| warm-up step s, LoRA 0.5B | ${r.lora.ours.warmup_s} | ${r.lora.torch.warmup_s} | |`,
    `| loss (random weights; ln V = ${Math.log(QWEN25_05B.vocabSize).toFixed(2)}) | ${r.lora.ours.loss} | ${r.lora.torch.loss} | |`,
    '',
  ];
  if (r.profile) {
    const p = r.profile;
    lines.push('## Where a LoRA step goes (one profiled step each)', '');
    lines.push(`Ours: ${p.ours.total_ms.toFixed(0)} ms kernel time${p.ours.step_ms ? ` in a ${p.ours.step_ms.toFixed(0)} ms run` : ''}${p.ours.phases ? ` (${Object.entries(p.ours.phases).map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(', ')})` : ''}. PyTorch: ${p.torch.total_ms.toFixed(0)} ms self CPU time.`, '');
    lines.push('| ours op | ms | share | nodes | GFLOP/s | | torch op | ms | share | calls |', '|---|---:|---:|---:|---:|---|---|---:|---:|---:|');
    for (let i = 0; i < Math.max(p.ours.ops.length, p.torch.ops.length) && i < 15; i++) {
      const o = p.ours.ops[i], t = p.torch.ops[i];
      lines.push(`| ${o ? `${o.op} | ${o.ms.toFixed(0)} | ${(100 * o.share).toFixed(1)}% | ${o.count} | ${o.gflop_s?.toFixed(1) ?? ''}` : ' | | | | '} | | ${t ? `${t.op} | ${t.ms.toFixed(0)} | ${(100 * t.share).toFixed(1)}% | ${t.count}` : ' | | | '} |`);
    }
    lines.push('');
  }
  const m = r.machine;
  if (referenceBlas(m.torch_blas)) lines.push(`**Caution:** PyTorch ran on the reference BLAS (${m.torch_blas}), which is far slower than OpenBLAS or MKL: the ratios above flatter edgereason. Install \`libopenblas0-pthread\` (or pass --torch-blas) for a fair baseline.`, '');
  lines.push(`Machine: ${m.cpu}, ${m.cores} cores, ${m.memory_gb} GB, ${m.os}; node ${m.node}, onnxruntime-node ${m.onnxruntime_node}; Python ${m.python}, torch ${m.torch} (${m.torch_threads} threads, BLAS ${m.torch_blas}).`, '');
  return lines.filter((l, i) => l !== '' || lines[i - 1] !== '').join('\n');
}

// ---------------------------------------------------------------------------------------------
// Our child.


/** Random weights under Hugging Face names: uniform with std 0.02 (biases 0.01), norms 1 (as the torch side). */
function randomWeights(c: ModelConfig, seed: number): Map<string, { shape: number[]; data: Float32Array }> {
  let s = seed >>> 0;
  const uniform = () => { // mulberry32
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const w = new Map<string, { shape: number[]; data: Float32Array }>();
  const add = (name: string, shape: number[], std: number) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1)), half = std * Math.sqrt(3);
    if (std === 0) data.fill(1);
    else for (let i = 0; i < data.length; i++) data[i] = (2 * uniform() - 1) * half;
    w.set(name, { shape, data });
  };
  add('model.embed_tokens.weight', [c.vocabSize, c.hiddenSize], 0.02);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [c.hiddenSize], 0);
    add(`${p}.post_attention_layernorm.weight`, [c.hiddenSize], 0);
    for (const proj of PROJECTIONS) {
      const [out, inp] = projectionShape(c, proj);
      add(`${projectionTensorName(l, proj)}.weight`, [out, inp], 0.02);
      if (c.attentionBias && /^[qkv]_proj$/.test(proj)) add(`${p}.self_attn.${proj}.bias`, [out], 0.01);
    }
  }
  add('model.norm.weight', [c.hiddenSize], 0);
  if (!c.tieWordEmbeddings) add('lm_head.weight', [c.vocabSize, c.hiddenSize], 0.02);
  return w;
}

async function oursChild(cfg: ChildConfig): Promise<ChildResult> {
  const { default: ort } = await import('../src/runtime/ort.ts');
  const { MemoryWeights } = await import('../src/io/weights.ts');
  const { Trainer } = await import('../src/train/trainer.ts');
  const { Rng } = await import('../src/train/data.ts');
  const c = cfg.config;
  const mode = cfg.mode === 'lora' ? { kind: 'lora' as const, targets: PROJECTIONS, scale: cfg.alpha / cfg.rank } : { kind: 'full' as const };

  // Profiling: Trainer.create makes the session, so its options are extended on the way in.
  let session: import('onnxruntime-node').InferenceSession | undefined, profileDir: string | undefined;
  if (cfg.profile) {
    profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-bench-train-prof-'));
    const factory = ort.InferenceSession as unknown as { create: (model: Uint8Array, o: object) => Promise<import('onnxruntime-node').InferenceSession> };
    const create = factory.create.bind(factory);
    factory.create = async (model, o) => (session = await create(model, { ...o, enableProfiling: true, profileFilePrefix: path.join(profileDir!, 'train') }));
  }

  let t = now();
  let weights: Map<string, { shape: number[]; data: Float32Array }> | undefined = randomWeights(c, cfg.seed);
  progress(`weights built in ${((now() - t) / 1000).toFixed(1)} s; building the training graph and session`);
  const forwardNodes = cfg.profile ? forwardNodeCount(await import('../src/train/graph.ts'), c, new MemoryWeights(weights), mode) : 0;
  const trainer = await Trainer.create(c, new MemoryWeights(weights), mode, { threads: cfg.threads });
  const loadMs = now() - t;
  let params: Map<string, Float32Array>;
  if (cfg.mode === 'lora') {
    // A ~ U(±1/sqrt(in)) (PEFT's bound); B random too (std 0.02), so the adapter path is not zero.
    const rng = new Rng(cfg.seed ^ 0x10ba), half = 0.02 * Math.sqrt(3);
    params = new Map(trainer.paramNames.map((n) => {
      const [out, inp] = projectionShape(c, n.replace(/\.lora_[AB]$/, '').split('.').pop() as Projection);
      return n.endsWith('.lora_A')
        ? [n, Float32Array.from({ length: cfg.rank * inp }, () => (2 * rng.next() - 1) / Math.sqrt(inp))]
        : [n, Float32Array.from({ length: out * cfg.rank }, () => (2 * rng.next() - 1) * half)];
    }));
    weights = undefined; // the session holds its own copy of the frozen weights
  } else {
    params = new Map(trainer.paramNames.map((n) => [n, weights!.get(n)!.data]));
  }
  const trainableParams = [...params.values()].reduce((s, p) => s + p.length, 0);
  const rssAfterLoadMb = rssMb();
  progress(`loaded in ${(loadMs / 1000).toFixed(1)} s (RSS ${rssAfterLoadMb.toFixed(0)} MB)`);

  const examples = cfg.inputIds.map((ids, b) => ({ ids, lossMask: Uint8Array.from(cfg.lossMask[b]) }));
  const targets = examples.reduce((s, e) => s + e.lossMask.reduce((a, x, i) => a + (i > 0 ? x : 0), 0), 0);
  const batchTokens = examples.reduce((s, e) => s + e.ids.length, 0);
  const step = async () => {
    const t0 = now();
    const r = await trainer.step(params, { examples, targetWeight: 1 / targets });
    return { ms: now() - t0, loss: r.loss };
  };
  let warmupMs = 0, loss = NaN;
  for (let i = 0; i < cfg.warmup; i++) {
    const r = await step();
    warmupMs += r.ms;
    progress(`warm-up step: ${(r.ms / 1000).toFixed(1)} s`);
  }
  const stepMs: number[] = [];
  for (let i = 0; i < cfg.steps; i++) {
    const r = await step();
    stepMs.push(r.ms); loss = r.loss;
    progress(`step ${i + 1}/${cfg.steps}: ${(r.ms / 1000).toFixed(1)} s, ${((batchTokens * 1000) / r.ms).toFixed(1)} tok/s`);
  }
  let profile: ProfileSplit | undefined;
  if (cfg.profile) {
    session!.endProfiling();
    const file = fs.readdirSync(profileDir!).filter((f) => f.endsWith('.json')).map((f) => path.join(profileDir!, f))[0];
    profile = summariseOrtProfile(JSON.parse(fs.readFileSync(file, 'utf8')), forwardNodes);
    fs.rmSync(profileDir!, { recursive: true, force: true });
    progress('profile read');
  }
  await trainer.close();
  return { loadMs, warmupMs, stepMs, loss, trainableParams, peakRssMb: peakMb(), rssAfterLoadMb, profile };
}

/** Nodes of the training graph up to and including the loss (autodiff appends the backward after them). */
function forwardNodeCount(m: typeof import('../src/train/graph.ts'), c: ModelConfig, w: import('../src/io/weights.ts').WeightSource, mode: import('../src/train/graph.ts').TrainMode): number {
  const { graph } = m.buildTrainingGraph(c, w, mode);
  return graph.nodes.findIndex((n) => n.outputs.includes('loss')) + 1;
}

interface OrtEvent { cat: string; name: string; ts: number; dur: number; args?: { op_name?: string; input_type_shape?: Record<string, number[]>[]; output_type_shape?: Record<string, number[]>[] } }

/**
 * Kernel time of the last run by op type (with achieved GFLOP/s for matrix products, from the recorded shapes), and by
 * phase: our node names are `<op>_<index>` (ORT keeps the index in the names of nodes it fuses), so an index below
 * `forwardNodes` is forward (and loss), above it backward.
 */
function summariseOrtProfile(events: OrtEvent[], forwardNodes: number): ProfileSplit {
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
  const last = runs[runs.length - 1], from = last.ts, to = last.ts + last.dur;
  const ops = new Map<string, { ms: number; count: number; flop: number; flopMs: number }>(), phases: Record<string, number> = { forward: 0, backward: 0, other: 0 };
  let total = 0;
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || e.ts < from || e.ts > to) continue;
    const op = e.args?.op_name ?? '?', ms = e.dur / 1000;
    const o = ops.get(op) ?? { ms: 0, count: 0, flop: 0, flopMs: 0 };
    o.ms += ms; o.count++;
    const f = matmulFlop(op, e.args?.input_type_shape, e.args?.output_type_shape);
    if (f) { o.flop += f; o.flopMs += ms; }
    ops.set(op, o);
    total += ms;
    const idx = /_(\d+)/.exec(e.name)?.[1];
    phases[idx === undefined ? 'other' : Number(idx) < forwardNodes ? 'forward' : 'backward'] += ms;
  }
  return {
    total_ms: round(total), step_ms: round(last.dur / 1000),
    phases: Object.fromEntries(Object.entries(phases).filter(([, v]) => v > 0).map(([k, v]) => [k, round(v)])),
    ops: [...ops].sort((a, b) => b[1].ms - a[1].ms).slice(0, 20).map(([op, o]) => ({
      op, ms: round(o.ms), share: round(o.ms / total, 3), count: o.count, ...(o.flopMs > 0 ? { gflop_s: round(o.flop / (o.flopMs * 1e6)) } : {}),
    })),
  };
}

/** 2·M·N·K of a MatMul / FusedMatMul / Gemm from its recorded input and output shapes (batch dims folded into M). */
function matmulFlop(op: string, inputs?: Record<string, number[]>[], outputs?: Record<string, number[]>[]): number {
  if (!/^(MatMul|FusedMatMul|Gemm)$/.test(op) || !inputs?.length || !outputs?.length) return 0;
  const a = Object.values(inputs[0])[0], y = Object.values(outputs[0])[0];
  if (!a?.length || !y?.length) return 0;
  const outSize = y.reduce((p, d) => p * d, 1);
  // K: the contracted dim of A (its last, or first when transposed; Gemm/FusedMatMul transA is not recorded, so take
  // the dim of A that is not in the output's last-two).
  const m = y.length >= 2 ? y[y.length - 2] : 1;
  const aLast = a[a.length - 1], aPrev = a.length >= 2 ? a[a.length - 2] : 1;
  const k = aLast === m && aPrev !== m ? aPrev : aLast;
  return 2 * outSize * k;
}

// ---------------------------------------------------------------------------------------------
// Entry point.

if (isMainModule(import.meta.url)) {
  if (process.argv[2] === '--child') childMain(oursChild);
  else {
    const s = 'string' as const, a = scriptArgs('bench/train.ts', {
      json: 'boolean', threads: 'count', steps: 'count', 'small-steps': 'count', batch: 'count', tokens: 'count', layers: 'count', rank: 'count', alpha: 'number0', 'no-full': 'boolean', profile: 'boolean',
      python: s, 'torch-blas': s, 'results-dir': s, 'no-write': 'boolean',
    });
    await runTrainBench({
      json: a.has('json'), threads: a.num('threads'), steps: a.num('steps'), smallSteps: a.num('small-steps'),
      batch: a.num('batch'), tokens: a.num('tokens'), layers: a.num('layers'), rank: a.num('rank'), alpha: a.num('alpha'),
      full: !a.has('no-full'), profile: a.has('profile'), python: a.str('python'), torchBlas: a.str('torch-blas'),
      resultsDir: a.resultsDir(),
    });
  }
}
