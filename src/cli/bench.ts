import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { MAX_THREADS } from '../runtime/threads.ts';
import { floatArg, intArg } from './main.ts';
import { checkOutDir } from './outputs.ts';

const PACKAGE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** A clone of the repository writes beside the committed results; an installed package never into node_modules. */
const inClone = () => fs.existsSync(path.join(PACKAGE, '.git'));

/** Where a bench writes: bench/results/ in a clone (the committed results, by date), ./bench-results elsewhere, --results-dir, or nowhere (--no-write). */
const output = (c: Command): Command => c
  .option('--results-dir <dir>', 'write the JSON / Markdown / SVG results here (default: bench/results/ in a clone of the repository, else ./bench-results)')
  .option('--no-write', 'write no result files (print only)');
function resultsDir(o: { write?: boolean; resultsDir?: string }): string | null | undefined {
  if (o.write === false && o.resultsDir !== undefined) throw new Error('--no-write and --results-dir contradict each other: give one'); // (as the bench scripts refuse them)
  if (o.write === false) return null;
  const dir = o.resultsDir ?? (inClone() ? undefined : path.resolve('bench-results'));
  // Checked now, not when the results are written at the end of the run.
  if (dir !== undefined) checkOutDir(dir, { flag: '--results-dir', what: 'results', overwrite: true, writes: [] });
  return dir;
}

/** A bench that compares with a development dependency (llama.cpp through node-llama-cpp) says so before it starts. */
function needs(pkg: string, bench: string): void {
  try { createRequire(import.meta.url).resolve(pkg); } catch {
    throw new Error(`bench ${bench} compares with llama.cpp through ${pkg}, a development dependency of edgereason: run it from a clone (npm ci), or install it beside this package (npm i -E ${pkg}@${JSON.parse(fs.readFileSync(path.join(PACKAGE, 'package.json'), 'utf8')).devDependencies?.[pkg] ?? 'latest'})`);
  }
}

export function benchCommand(program: Command): void {
  const bench = program.command('bench').description('benchmarks (results under bench/results/ in a clone, ./bench-results elsewhere, or bench <name> --results-dir <dir> / --no-write)');
  output(bench.command('decode'))
    .description('prefill and batched decode speed on a Qwen2.5-0.5B-shaped (or Qwen3-0.6B-shaped) q4 model vs llama.cpp')
    .option('--json', 'print the result as JSON')
    .option('--accuracy-level <n>', 'MatMulNBits accuracy level (0: fp32 activations … 4: int8)', intArg('--accuracy-level', 0, 4), 4)
    .option('--shape <shape>', 'model shape: qwen2.5-0.5b or qwen3-0.6b', 'qwen2.5-0.5b')
    .action(async (o) => {
      needs('node-llama-cpp', 'decode');
      const { runDecodeBench } = await import('../../bench/decode.ts');
      await runDecodeBench({ json: !!o.json, accuracyLevel: o.accuracyLevel, shape: o.shape, resultsDir: resultsDir(o) });
    });
  output(bench.command('train'))
    .description('training-step speed (LoRA r16 on a Qwen2.5-0.5B-shaped model; full-parameter on the default model\'s shape) vs PyTorch CPU')
    .option('--json', 'print the result as JSON')
    .option('--threads <n>', 'threads for both sides', intArg('--threads', 1, MAX_THREADS), 2)
    .option('--steps <n>', 'timed steps after the warm-up (LoRA 0.5B)', intArg('--steps', 1), 3)
    .option('--small-steps <n>', 'timed steps after the warm-up (full-parameter, small model)', intArg('--small-steps', 1), 10)
    .option('--no-full', 'skip the full-parameter small-model comparison')
    .option('--profile', 'also profile one LoRA step on each side and report the op split')
    .option('--python <path>', 'Python with torch', '/usr/bin/python3')
    .action(async (o) => {
      const { runTrainBench } = await import('../../bench/train.ts');
      await runTrainBench({ json: !!o.json, threads: o.threads, steps: o.steps, smallSteps: o.smallSteps, full: o.full, profile: !!o.profile, python: o.python, resultsDir: resultsDir(o) });
    });
  output(bench.command('reasoning'))
    .description('the embedded default: reasoning-turn TTFT (shared KV vs re-prefill), routing, parallel samples and votes')
    .option('--model <dir>', 'model folder (default models/default)')
    .option('--adapter <dir>', 'reasoning adapter (default <model>/reasoning-adapter)')
    .option('--router-items <n>', 'test questions for routing', intArg('--router-items', 0), 100)
    .option('--router-temperature <t>', 'sample the routing section\'s answers at this temperature (top-p 0.95) instead of greedy', floatArg('--router-temperature', 0, 2))
    .option('--parallel-items <n>', 'hard test questions for parallel sampling', intArg('--parallel-items', 0), 60)
    .option('--parallel-split <split>', 'split of those questions: test, or val (no probe was trained on them)', 'test')
    .option('--shape-timing', 'also time parallel samples on random weights in Qwen2.5-0.5B\'s shape, fp32 and q4 (minutes; ~3 GB cached in the temp folder)')
    .action(async (o) => {
      const { runReasoningBench } = await import('../../bench/reasoning.ts');
      await runReasoningBench({ model: o.model, adapter: o.adapter, routerItems: o.routerItems, routerTemperature: o.routerTemperature, parallelItems: o.parallelItems, parallelSplit: o.parallelSplit, shapeTiming: !!o.shapeTiming, resultsDir: resultsDir(o) });
    });
  output(bench.command('matmul'))
    .description('batch cost of Qwen2.5-0.5B-sized linear layers: 4- and 8-bit MatMulNBits vs fp32 MatMul at M = 1, 2, 4, 8 rows')
    .option('--layers <n>', 'layers in the stack', intArg('--layers', 1), 12)
    .action(async (o) => {
      const { runMatmulBench } = await import('../../bench/matmul.ts');
      await runMatmulBench({ layers: o.layers, resultsDir: resultsDir(o) });
    });
  output(bench.command('quant'))
    .description('choosing a weight format: q4, q8 and fp32 side by side (speed on Qwen2.5-0.5B\'s shape, agreement with fp32 on the embedded default)')
    .option('--questions <n>', 'test questions for the agreement part', intArg('--questions', 1), 24)
    .action(async (o) => {
      const { runQuantBench } = await import('../../bench/quant.ts');
      await runQuantBench({ questions: o.questions, resultsDir: resultsDir(o) });
    });
  output(bench.command('json'))
    .description('structured output: decode speed with the answer held to JSON (json_object, a schema) vs free text, Qwen2.5-0.5B shape q4 with its 151k vocabulary')
    .option('--tokens <n>', 'tokens generated per run', intArg('--tokens', 8), 64)
    .option('--reps <n>', 'runs per row (the fastest is reported)', intArg('--reps', 1), 3)
    .action(async (o) => {
      const { runJsonBench } = await import('../../bench/json.ts');
      await runJsonBench({ tokens: o.tokens, reps: o.reps, resultsDir: resultsDir(o) });
    });
  output(bench.command('prompt-cache'))
    .description('prompt caching: time to the first token of a chat\'s next turn with the conversation kept from the turn before vs prefilled again, Qwen2.5-0.5B shape q4, conversations of ~256 / 1024 / 2048 tokens; and the first request after a restart under a ~1024 / 2048-token system prompt, prefilled vs read from a prompt cache file')
    .option('--reps <n>', 'turns per row and setting (the fastest is reported)', intArg('--reps', 1), 3)
    .action(async (o) => {
      const { runPromptCacheBench } = await import('../../bench/prompt-cache.ts');
      await runPromptCacheBench({ reps: o.reps, resultsDir: resultsDir(o) });
    });
  output(bench.command('prefill'))
    .description('chunked prefill: a prompt of 1024 / 2048 / 4096 tokens in steps of 512 vs one step (time, logits), and a short request\'s first token while a 4096-token prompt is prefilled, Qwen2.5-0.5B shape q4')
    .option('--reps <n>', 'runs per row and setting (the fastest is reported)', intArg('--reps', 1), 3)
    .action(async (o) => {
      const { runPrefillBench } = await import('../../bench/prefill.ts');
      await runPrefillBench({ reps: o.reps, resultsDir: resultsDir(o) });
    });
  output(bench.command('lookup'))
    .description('prompt lookup (speculative decoding): a step\'s cost against the tokens it feeds (Qwen2.5-0.5B shape q4), and the guesses stories260K and the embedded default keep (the same tokens as without; steps, wall time, projected 0.5B speed-up); at q4, same answers and accuracy')
    .option('--reps <n>', 'rounds per row (the fastest is reported)', intArg('--reps', 1), 3)
    .option('--questions <n>', 'synthetic questions for the embedded model', intArg('--questions', 1), 30)
    .option('--q4-questions <n>', 'questions for its q4 comparison (same tokens, accuracy)', intArg('--q4-questions', 1), 300)
    .action(async (o) => {
      const { runLookupBench } = await import('../../bench/lookup.ts');
      await runLookupBench({ reps: o.reps, questions: o.questions, q4Questions: o.q4Questions, resultsDir: resultsDir(o) });
    });
  output(bench.command('attention'))
    .description('one decode step\'s attention over a KV cache (Qwen2.5-0.5B heads): GroupQueryAttention vs ONNX Attention vs the runtime\'s, 1 and 8 rows, 64 and 1000 positions; 8 samples of a 1000-token prompt copied vs shared')
    .action(async (o) => {
      const { runAttentionBench } = await import('../../bench/attention.ts');
      await runAttentionBench({ resultsDir: resultsDir(o) });
    });
  output(bench.command('web'))
    .description('the same graphs (the embedded default, fp32 and q4 with LoRA inputs) in onnxruntime-web\'s WebAssembly build vs onnxruntime-node; needs onnxruntime-web installed beside edgereason (npm i --no-save onnxruntime-web)')
    .action(async (o) => {
      const { runWebBench } = await import('../../bench/web.ts');
      await runWebBench({ resultsDir: resultsDir(o) });
    });
  output(bench.command('budget'))
    .description('budget forcing: SFT vs RL adapter on hard items (accuracy, thinking tokens), budget buckets, accuracy vs thinking cap')
    .option('--items <n>', 'hard test questions', intArg('--items', 1), 100)
    .action(async (o) => {
      const { runBudgetBench } = await import('../../bench/budget.ts');
      await runBudgetBench({ items: o.items, resultsDir: resultsDir(o) });
    });
}
