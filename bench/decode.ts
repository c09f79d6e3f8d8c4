/**
 * Decode benchmark: our q4 runtime (MatMulNBits) vs llama.cpp (node-llama-cpp, prebuilt CPU build) on the
 * same random weights in Qwen2.5-0.5B's exact shape (or Qwen3-0.6B's, --shape qwen3-0.6b): ours from the HF folder converted to ONNX q4, llama.cpp
 * from a Q4_0 GGUF of the same tensors (our q4 blocks are Q4_0 blocks, so both hold the same 4-bit weights;
 * both look token embeddings up in the same 4-bit table).
 *
 * Each side runs in its own child process (so peak RSS is attributable), one after the other, with the same
 * thread count. Measured: prefill tok/s for one 256-token prompt, decode tok/s at several batch sizes (ours:
 * one KV cache of B rows stepping B tokens at a time; llama.cpp: B sequences of one context decoding
 * concurrently, which node-llama-cpp merges into shared llama_decode calls), peak RSS.
 * Model files are cached under os.tmpdir(), so only the first run pays for generating them.
 *
 *   node --import tsx bench/decode.ts [--json] [--accuracy-level 4] [--threads 2] [--llama-threads N] [--shape qwen3-0.6b]
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import cliProgress from 'cli-progress';
import type { ModelConfig } from '../src/models/config.ts';
import { isMainModule } from '../src/main-module.ts';
import { dirBytes } from '../src/io/safetensors.ts';
import { freshStem, scriptArgs, writeResults } from './write.ts';
import { childMain, now, peakMb, progress, rssMb, runChild } from './child.ts';

export interface DecodeBenchOptions {
  /** Print the result as JSON on stdout (otherwise a table). */
  json?: boolean;
  /** MatMulNBits accuracy_level of our graph (default 4: int8 activations). */
  accuracyLevel?: number;
  /** Threads for both runtimes (default 2). */
  threads?: number;
  /** Threads for llama.cpp only (default: threads). */
  llamaThreads?: number;
  /** Prefill prompt length (default 256). */
  promptTokens?: number;
  /** Prompt length per row before timing decode (default 24) and timed decode steps (default 32). */
  decodePromptTokens?: number;
  decodeSteps?: number;
  /** Repetitions of each measurement; the best is reported (other work on the machine only slows runs down). Default 3. */
  reps?: number;
  /** Context before the long-context decode measurement (batch 1; default 960 tokens: the untimed first step grows the cache to 1,216 positions, so the timed steps stay within one allocation; 0 = skip). */
  longContextTokens?: number;
  /** Batch sizes for our decode (default 1, 4, 8, 16) and llama.cpp's (default the same). */
  batches?: number[];
  llamaBatches?: number[];
  /** Model cache (default <tmpdir>/edgereason-bench-decode). */
  cacheDir?: string;
  /** Where decode-<date>.json/.md go (default bench/results); null = do not write. */
  resultsDir?: string | null;
  /** Progress bars on stderr (default: when stderr is a TTY). */
  progress?: boolean;
  /** Model shape (default qwen2.5-0.5b). */
  shape?: Shape;
}

export interface DecodeBenchResult {
  date: string;
  prefill_tok_s: number;
  decode_tok_s: Record<string, number>;
  /** Batch-1 decode after a longContextTokens prompt (absent when skipped). */
  decode_long_tok_s?: number;
  llamacpp_prefill_tok_s: number;
  llamacpp_decode_tok_s: Record<string, number>;
  llamacpp_decode_long_tok_s?: number;
  /** ours / llama.cpp (> 1: we are faster). */
  prefill_ratio: number;
  decode_ratio_b1: number;
  /** Peak RSS of our benchmark process (load + all runs). */
  peak_rss_mb: number;
  /** RSS of our process right after loading the model. */
  rss_after_load_mb: number;
  llamacpp_peak_rss_mb: number;
  load_s: number;
  llamacpp_load_s: number;
  model: { shape: string; params_m: number; quant: string; accuracy_level: number; llamacpp_file: string; gguf_mb: number; onnx_mb: number };
  settings: { threads: number; llamacpp_threads: number; reps: number; prompt_tokens: number; decode_prompt_tokens: number; decode_steps: number; long_context_tokens: number; batches: number[]; llamacpp_batches: number[]; our_kv_cache: string; llamacpp_kv_cache: string; llamacpp_flash_attention: string };
  machine: { cpu: string; cores: number; memory_gb: number; os: string; node: string; onnxruntime_node: string; node_llama_cpp: string; llama_cpp_release: string; llamacpp_system_info: string; loadavg_start: number[]; loadavg_end: number[] };
}

/** The model shapes (the helper's QWEN25_05B and QWEN3_06B, imported when the models are made). */
export const SHAPES = {
  'qwen2.5-0.5b': { constant: 'QWEN25_05B', label: 'Qwen2.5-0.5B (hidden 896, 24 layers, 14 heads / 2 KV heads, intermediate 4864, vocab 151936, tied, rope 1e6)' },
  'qwen3-0.6b': { constant: 'QWEN3_06B', label: 'Qwen3-0.6B (hidden 1024, 28 layers, 16 heads / 8 KV heads of 128, q/k head norms, intermediate 3072, vocab 151936, tied, rope 1e6)' },
} as const;
export type Shape = keyof typeof SHAPES;

interface ChildConfig {
  kind: 'ours' | 'llama';
  path: string;
  threads: number;
  accuracyLevel: number;
  promptTokens: number;
  decodePromptTokens: number;
  decodeSteps: number;
  longContextTokens: number;
  reps: number;
  batches: number[];
}

interface ChildResult {
  loadMs: number;
  prefillTokS: number;
  decodeTokS: Record<string, number>;
  decodeLongTokS?: number;
  peakRssMb: number;
  rssAfterLoadMb: number;
  info?: { release: string; systemInfo: string };
}

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const mb = (bytes: number) => Math.round(bytes / 2 ** 20);

/** Deterministic token ids below 150000 (ordinary BPE tokens): a fixed "prompt" per row. */
function promptIds(n: number, row = 0): number[] {
  return Array.from({ length: n }, (_, i) => (Math.imul(i + 1 + 7919 * row, 2654435761) >>> 0) % 150000);
}

// ---------------------------------------------------------------------------------------------
// Parent.

export async function runDecodeBench(opts: DecodeBenchOptions = {}): Promise<DecodeBenchResult> {
  const loadStart = os.loadavg();
  const threads = opts.threads ?? 2, accuracyLevel = opts.accuracyLevel ?? 4;
  if (![0, 1, 2, 3, 4].includes(accuracyLevel)) throw new Error(`bench decode: --accuracy-level must be 0, 1, 2, 3 or 4 (MatMulNBits' levels), got ${accuracyLevel}`); // before minutes of preparing models
  const batches = opts.batches ?? [1, 4, 8, 16], llamaBatches = opts.llamaBatches ?? batches;
  const promptTokens = opts.promptTokens ?? 256, decodePromptTokens = opts.decodePromptTokens ?? 24, decodeSteps = opts.decodeSteps ?? 32;
  const longContextTokens = opts.longContextTokens ?? 960;
  // A bar on a terminal; elsewhere (a log, CI) a line per step, so minutes of work are not silent.
  const progress = opts.progress ?? true, tty = !!process.stderr.isTTY;
  const bar = progress && tty
    ? new cliProgress.SingleBar({ format: '{phase} [{bar}] {value}/{total} {label} · ETA {eta_formatted}', hideCursor: true, clearOnComplete: true }, cliProgress.Presets.shades_classic)
    : undefined;
  let phase = '';
  const note = (p: string, total: number) => { phase = p; bar?.start(total, 0, { phase, label: '' }); };
  const tick = (label: string) => { if (bar) bar.increment(1, { label }); else if (progress) process.stderr.write(`[bench decode] ${phase}: ${label}\n`); };

  const shape = opts.shape ?? 'qwen2.5-0.5b';
  if (!Object.hasOwn(SHAPES, shape)) throw new Error(`bench decode: --shape must be one of ${Object.keys(SHAPES).join(', ')}; got ${JSON.stringify(shape)}`);
  const files = await prepareModels(opts.cacheDir ?? path.join(os.tmpdir(), 'edgereason-bench-decode'), accuracyLevel, note, tick, { shape });
  bar?.stop();
  if (files.kept) console.error(files.kept);

  const base = { threads, accuracyLevel, promptTokens, decodePromptTokens, decodeSteps, longContextTokens, reps: opts.reps ?? 3 };
  const phases = 2 + batches.length + (longContextTokens ? 1 : 0);
  note('ours (onnxruntime)', phases);
  const ours = await runChild<ChildConfig, ChildResult>(import.meta.url, { kind: 'ours', path: files.onnxDir, ...base, batches }, 'ours', tick);
  bar?.stop();
  note('llama.cpp', phases - batches.length + llamaBatches.length);
  const llamaThreads = opts.llamaThreads ?? threads;
  const ll = await runChild<ChildConfig, ChildResult>(import.meta.url, { kind: 'llama', path: files.q4gguf, ...base, threads: llamaThreads, batches: llamaBatches }, 'llama.cpp', tick);
  bar?.stop();

  const ortVersion = require('onnxruntime-node/package.json').version as string;
  const nlcVersion = JSON.parse(fs.readFileSync(path.join(path.dirname(require.resolve('node-llama-cpp')), '..', 'package.json'), 'utf8')).version as string;
  const cpus = os.cpus();
  const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
  const roundAll = (r: Record<string, number>) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, round(v)]));
  const result: DecodeBenchResult = {
    date: new Date().toISOString(),
    prefill_tok_s: round(ours.prefillTokS),
    decode_tok_s: roundAll(ours.decodeTokS),
    ...(ours.decodeLongTokS ? { decode_long_tok_s: round(ours.decodeLongTokS) } : {}),
    llamacpp_prefill_tok_s: round(ll.prefillTokS),
    llamacpp_decode_tok_s: roundAll(ll.decodeTokS),
    ...(ll.decodeLongTokS ? { llamacpp_decode_long_tok_s: round(ll.decodeLongTokS) } : {}),
    prefill_ratio: round(ours.prefillTokS / ll.prefillTokS, 3),
    decode_ratio_b1: round(ours.decodeTokS['1'] / ll.decodeTokS['1'], 3),
    peak_rss_mb: Math.round(ours.peakRssMb),
    rss_after_load_mb: Math.round(ours.rssAfterLoadMb),
    llamacpp_peak_rss_mb: Math.round(ll.peakRssMb),
    load_s: round(ours.loadMs / 1000, 2),
    llamacpp_load_s: round(ll.loadMs / 1000, 2),
    model: {
      shape: SHAPES[shape].label, params_m: Math.round(params(files.config) / 1e6), quant: 'q4 (MatMulNBits bits 4, block 32; tied lm_head and input embedding share the q4 table, GatherBlockQuantized)',
      accuracy_level: accuracyLevel, llamacpp_file: 'Q4_0 GGUF (all 2-D weights Q4_0)', gguf_mb: mb(fs.statSync(files.q4gguf).size), onnx_mb: mb(dirBytes(files.onnxDir)),
    },
    settings: {
      threads, llamacpp_threads: llamaThreads, reps: base.reps, prompt_tokens: promptTokens, decode_prompt_tokens: decodePromptTokens, decode_steps: decodeSteps, long_context_tokens: longContextTokens, batches, llamacpp_batches: llamaBatches,
      our_kv_cache: 'F32', llamacpp_kv_cache: 'F16 (default)', llamacpp_flash_attention: 'auto (default)',
    },
    machine: {
      cpu: cpus[0]?.model ?? 'unknown', cores: os.availableParallelism(), memory_gb: round(os.totalmem() / 2 ** 30), os: `${os.type()} ${os.release()} ${os.arch()}`,
      node: process.version, onnxruntime_node: ortVersion, node_llama_cpp: nlcVersion, llama_cpp_release: ll.info?.release ?? 'unknown',
      llamacpp_system_info: ll.info?.systemInfo ?? '',
      // 1/5/15-minute load averages. At the start, above ~0.5 means other work shares the cores (numbers come out low);
      // at the end they include the benchmark's own ~2 busy threads.
      loadavg_start: loadStart.map((x) => round(x, 2)), loadavg_end: os.loadavg().map((x) => round(x, 2)),
    },
  };

  if (opts.resultsDir !== null) {
    const dir = opts.resultsDir ?? path.join(here, 'results');
    writeResults(dir, freshStem(dir, `decode-${result.date.slice(0, 10)}${shape === 'qwen2.5-0.5b' ? '' : `-${shape}`}`), result, markdown(result), 2);
  }
  console.log(opts.json ? JSON.stringify(result, null, 2) : markdown(result));
  return result;
}

function params(c: ModelConfig): number {
  const attn = c.hiddenSize * (c.numHeads + 2 * c.numKvHeads) * c.headDim + c.numHeads * c.headDim * c.hiddenSize;
  return c.vocabSize * c.hiddenSize + c.numLayers * (attn + 3 * c.hiddenSize * c.intermediateSize);
}

/**
 * The Qwen2.5-0.5B-shaped random-weight q4 model (and with `fp32` its fp32 conversion) that the json, lookup,
 * prompt-cache and reasoning benches time: prepared in the decode bench's cache, each step and where the models are
 * kept said through `log`.
 */
export async function preparedShapeModels(log: (line: string) => void = (l) => console.error(l), o: { fp32?: boolean } = {}) {
  log(`Qwen2.5-0.5B shape: preparing the random-weight ${o.fp32 ? '' : 'q4 '}model (cached; the first run takes a few minutes)`);
  const files = await prepareModels(path.join(os.tmpdir(), 'edgereason-bench-decode'), 4, () => {}, (l) => log(`  ${l}`), o);
  if (files.kept) log(files.kept);
  return files;
}

/** Short hash of the source files that decide what a cached artefact contains, so code changes invalidate it. */
function sourceKey(globs: string[]): string {
  const h = crypto.createHash('sha256'), root = path.join(here, '..');
  for (const g of globs) {
    const dir = path.join(root, path.dirname(g)), base = path.basename(g);
    const files = base === '*' ? fs.readdirSync(dir).filter((f) => f.endsWith('.ts')).sort() : [base];
    for (const f of files) h.update(`${g}/${f}\0`).update(fs.readFileSync(path.join(dir, f)));
  }
  return h.digest('hex').slice(0, 10);
}

/**
 * The random model (seed 0, the helper's default init) as an HF folder + Q4_0 GGUF, and our converted
 * q4 ONNX folder for this accuracy level (with `fp32`, also an fp32 ONNX folder); each is reused while the code
 * that writes it is unchanged.
 */
export async function prepareModels(cacheDir: string, accuracyLevel: number, note: (phase: string, total: number) => void, tick: (label: string) => void, o: { fp32?: boolean; shape?: Shape; /** Only the HF folder (quant converts it itself) */ sourceOnly?: boolean } = {}) {
  const shape = o.shape ?? 'qwen2.5-0.5b';
  const modelKey = sourceKey(['test/helpers/random-model.ts', 'src/io/gguf.ts', 'src/io/safetensors.ts']);
  const graphKey = sourceKey(['src/models/*', 'src/onnx/*', 'src/io/*', 'src/runtime/model.ts', 'src/runtime/convert.ts']);
  const hf = path.join(cacheDir, `${shape}-shape-seed0-${modelKey}`), onnxDir = path.join(cacheDir, `onnx-${shape}-q4-al${accuracyLevel}-${graphKey}-${modelKey}`);
  const q4gguf = path.join(hf, 'model-q4_0.gguf'), done = path.join(hf, 'bench-ready.json'), fp32Dir = path.join(cacheDir, `onnx-${shape}-fp32-${graphKey}-${modelKey}`);
  if (fs.existsSync(cacheDir)) { // drop artefacts written by older code (every shape's current ones stay)
    const keep = (d: string) => d.endsWith(`-shape-seed0-${modelKey}`) || (d.startsWith('onnx-') && d.endsWith(`-${graphKey}-${modelKey}`));
    for (const d of fs.readdirSync(cacheDir)) if (!keep(d)) fs.rmSync(path.join(cacheDir, d), { recursive: true, force: true });
  }
  const helper = await import('../test/helpers/random-model.ts'), config = helper[SHAPES[shape].constant];
  const needFp32 = !!o.fp32 && !fs.existsSync(path.join(fp32Dir, 'edgereason.json'));
  const needQ4 = !o.sourceOnly && !fs.existsSync(path.join(onnxDir, 'edgereason.json'));
  const steps = (fs.existsSync(done) ? 0 : 1) + (needQ4 ? 1 : 0) + (needFp32 ? 1 : 0);
  if (steps) note('preparing models', steps);
  if (!fs.existsSync(done)) {
    tick('random weights → HF folder + Q4_0 GGUF (~1 min)');
    await new Promise((r) => setImmediate(r)); // let the bar draw before the long synchronous work
    fs.rmSync(hf, { recursive: true, force: true });
    helper.makeRandomQwen2({ dir: hf, config, seed: 0, gguf: false, q4_0: true });
    fs.writeFileSync(done, JSON.stringify({ config }) + '\n');
  }
  const convert = async (dir: string, label: string, opts: { quant: 'q4' | 'fp32'; accuracyLevel?: number }) => {
    tick(`converting to ONNX ${label}`);
    await new Promise((r) => setImmediate(r));
    const { openSource } = await import('../src/io/source.ts');
    const { convertModel } = await import('../src/runtime/convert.ts');
    fs.rmSync(dir, { recursive: true, force: true });
    convertModel(openSource(hf), dir, opts);
  };
  if (needQ4) await convert(onnxDir, `q4 (accuracy level ${accuracyLevel})`, { quant: 'q4', accuracyLevel });
  if (needFp32) await convert(fp32Dir, 'fp32', { quant: 'fp32' });
  // Gigabytes left in the temp folder are said once, when written (the next bench run reuses them): `kept`, for the caller to print (after its bar).
  const kept = steps ? `bench: the random-weight ${shape} models are kept in ${cacheDir} (${(dirBytes(cacheDir) / 1e9).toFixed(1)} GB) for the next bench run; delete that folder to free the space` : undefined;
  return { kept, hf, q4gguf, onnxDir, fp32Dir: o.fp32 ? fp32Dir : undefined, config: JSON.parse(fs.readFileSync(done, 'utf8')).config as ModelConfig };
}

function markdown(r: DecodeBenchResult): string {
  const bs = [...new Set([...Object.keys(r.decode_tok_s), ...Object.keys(r.llamacpp_decode_tok_s)])].sort((a, b) => Number(a) - Number(b));
  const cell = (v: number | undefined) => (v === undefined ? '–' : v.toFixed(1));
  const lines = [
    `# Decode benchmark ${r.date.slice(0, 10)}`,
    '',
    `Model: random weights, ${r.model.shape}, ${r.model.params_m}M parameters.`,
    `Ours: ${r.model.quant}, accuracy_level ${r.model.accuracy_level}, ONNX ${r.model.onnx_mb} MB, KV cache ${r.settings.our_kv_cache}. llama.cpp: ${r.model.llamacpp_file}, ${r.model.gguf_mb} MB, KV cache ${r.settings.llamacpp_kv_cache}, flash attention ${r.settings.llamacpp_flash_attention}.`,
    `Threads: ours ${r.settings.threads}, llama.cpp ${r.settings.llamacpp_threads}; prefill = one ${r.settings.prompt_tokens}-token prompt; decode = ${r.settings.decode_steps} greedy steps per row after a ${r.settings.decode_prompt_tokens}-token prompt (best of ${r.settings.reps} runs each).`,
    '',
    '| | ours (onnxruntime) | llama.cpp | ours / llama.cpp |',
    '|---|---:|---:|---:|',
    `| prefill tok/s | ${cell(r.prefill_tok_s)} | ${cell(r.llamacpp_prefill_tok_s)} | ${r.prefill_ratio.toFixed(2)} |`,
    ...bs.map((b) => {
      const o = r.decode_tok_s[b], l = r.llamacpp_decode_tok_s[b];
      return `| decode tok/s, batch ${b} | ${cell(o)} | ${cell(l)} | ${o && l ? (o / l).toFixed(2) : '–'} |`;
    }),
    ...(r.decode_long_tok_s && r.llamacpp_decode_long_tok_s
      ? [`| decode tok/s, batch 1 after ${r.settings.long_context_tokens} tokens | ${cell(r.decode_long_tok_s)} | ${cell(r.llamacpp_decode_long_tok_s)} | ${(r.decode_long_tok_s / r.llamacpp_decode_long_tok_s).toFixed(2)} |`]
      : []),
    `| peak RSS MB | ${r.peak_rss_mb} (after load ${r.rss_after_load_mb}) | ${r.llamacpp_peak_rss_mb} | |`,
    `| load s | ${r.load_s} | ${r.llamacpp_load_s} | |`,
    '',
    `Machine: ${r.machine.cpu}, ${r.machine.cores} cores, ${r.machine.memory_gb} GB, ${r.machine.os} (1-minute load average ${r.machine.loadavg_start[0]} before the run); node ${r.machine.node}, onnxruntime-node ${r.machine.onnxruntime_node}, node-llama-cpp ${r.machine.node_llama_cpp} (llama.cpp ${r.machine.llama_cpp_release}).`,
    '',
  ];
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Children.


async function oursChild(cfg: ChildConfig): Promise<ChildResult> {
  const { loadModel } = await import('../src/runtime/model.ts');
  let t = now();
  const m = await loadModel(cfg.path, { worker: false, threads: cfg.threads });
  const loadMs = now() - t, rssAfterLoadMb = rssMb();
  progress(`loaded in ${(loadMs / 1000).toFixed(1)} s`);
  const b = m.backend, greedy = (rows: number) => Array.from({ length: rows }, () => ({ temperature: 0, u: 0 }));

  // Warm-up (first runs allocate and pick kernels).
  let c = await b.newCache(1);
  await b.step(c, { tokens: [promptIds(16, 99)], sample: greedy(1) });
  await b.step(c, { tokens: [[1]], sample: greedy(1) });
  await b.free(c);

  let best = Infinity;
  for (let rep = 0; rep < cfg.reps; rep++) {
    c = await b.newCache(1);
    t = now();
    await b.step(c, { tokens: [promptIds(cfg.promptTokens)], sample: greedy(1) });
    best = Math.min(best, now() - t);
    await b.free(c);
  }
  const prefillTokS = (cfg.promptTokens * 1000) / best;
  progress(`prefill ${prefillTokS.toFixed(1)} tok/s`);

  // Best of reps: one prompt per row, an untimed first decode step, then decodeSteps timed steps of all rows.
  const decodeMs = async (prompts: number[][]) => {
    let bestMs = Infinity;
    for (let rep = 0; rep < cfg.reps; rep++) {
      c = await b.newCache(prompts.length);
      let s = await b.step(c, { tokens: prompts, sample: greedy(prompts.length) });
      s = await b.step(c, { tokens: s.tokens!.map((x) => [x]), sample: greedy(prompts.length) });
      t = now();
      for (let i = 0; i < cfg.decodeSteps; i++) s = await b.step(c, { tokens: s.tokens!.map((x) => [x]), sample: greedy(prompts.length) });
      bestMs = Math.min(bestMs, now() - t);
      await b.free(c);
    }
    return bestMs;
  };
  const { decodeTokS, decodeLongTokS } = await decodeRates(cfg, decodeMs);
  await m.close();
  return { loadMs, prefillTokS, decodeTokS, decodeLongTokS, peakRssMb: peakMb(), rssAfterLoadMb };
}

/** Decode tok/s per batch size (a short prompt per row) and at batch 1 after a long context, from a timing function. */
async function decodeRates(cfg: ChildConfig, decodeMs: (prompts: number[][]) => Promise<number>): Promise<{ decodeTokS: Record<string, number>; decodeLongTokS?: number }> {
  const decodeTokS: Record<string, number> = {};
  for (const B of cfg.batches) {
    decodeTokS[B] = (B * cfg.decodeSteps * 1000) / await decodeMs(Array.from({ length: B }, (_, r) => promptIds(cfg.decodePromptTokens, r + 1)));
    progress(`decode batch ${B}: ${decodeTokS[B].toFixed(1)} tok/s`);
  }
  if (!cfg.longContextTokens) return { decodeTokS };
  const decodeLongTokS = (cfg.decodeSteps * 1000) / await decodeMs([promptIds(cfg.longContextTokens, 50)]);
  progress(`decode after ${cfg.longContextTokens} tokens: ${decodeLongTokS.toFixed(1)} tok/s`);
  return { decodeTokS, decodeLongTokS };
}

async function llamaChild(cfg: ChildConfig): Promise<ChildResult> {
  const { openLlamaCpp } = await import('../test/oracle/llamacpp.ts');
  let t = now();
  // llama.cpp as it ships: F16 KV cache, flash attention 'auto'. One context with a sequence per batch row.
  const ll = await openLlamaCpp(cfg.path, {
    threads: cfg.threads, contextSize: Math.max(cfg.promptTokens, cfg.longContextTokens, 64) + cfg.decodeSteps + 32, sequences: Math.max(1, ...cfg.batches),
    batchSize: Math.max(512, cfg.promptTokens), kvType: 'F16', flashAttention: 'auto',
  });
  const loadMs = now() - t, rssAfterLoadMb = rssMb();
  progress(`loaded in ${(loadMs / 1000).toFixed(1)} s`);

  await ll.greedy(promptIds(16, 99), 2); // warm-up
  let best = Infinity;
  for (let rep = 0; rep < cfg.reps; rep++) best = Math.min(best, await ll.prefill(promptIds(cfg.promptTokens)));
  const prefillTokS = (cfg.promptTokens * 1000) / best;
  progress(`prefill ${prefillTokS.toFixed(1)} tok/s`);

  // As for ours: the first token ends the prompt phase, the second decode step is untimed; then decodeSteps timed steps.
  const decodeMs = async (prompts: number[][]) => {
    let bestMs = Infinity;
    for (let rep = 0; rep < cfg.reps; rep++) {
      const times = prompts.length === 1 ? [(await ll.greedyTimed(prompts[0], cfg.decodeSteps + 2)).times] : (await ll.greedyBatchTimed(prompts, cfg.decodeSteps + 2)).times;
      bestMs = Math.min(bestMs, Math.max(...times.map((ts) => ts[cfg.decodeSteps + 1])) - Math.max(...times.map((ts) => ts[1])));
    }
    return bestMs;
  };
  const { decodeTokS, decodeLongTokS } = await decodeRates(cfg, decodeMs);
  const info = { release: `${ll.llama.llamaCppRelease.repo} ${ll.llama.llamaCppRelease.release}`, systemInfo: ll.llama.systemInfo };
  await ll.dispose();
  return { loadMs, prefillTokS, decodeTokS, decodeLongTokS, peakRssMb: peakMb(), rssAfterLoadMb, info };
}

// ---------------------------------------------------------------------------------------------
// Entry point.

if (isMainModule(import.meta.url)) {
  if (process.argv[2] === '--child') childMain((cfg: ChildConfig) => (cfg.kind === 'ours' ? oursChild(cfg) : llamaChild(cfg)));
  else {
    const s = 'string' as const, a = scriptArgs('bench/decode.ts', { json: 'boolean', 'accuracy-level': 'count0', threads: 'count', 'llama-threads': 'count', shape: s, 'results-dir': s, 'no-write': 'boolean' });
    await runDecodeBench({ json: a.has('json'), accuracyLevel: a.num('accuracy-level'), threads: a.num('threads'), llamaThreads: a.num('llama-threads'), shape: a.str('shape') as Shape | undefined, resultsDir: a.resultsDir() });
  }
}
