/**
 * Chunked prefill: a long prompt fed in steps of PREFILL_CHUNK tokens against one step of it all, side by side on one
 * model (random weights in Qwen2.5-0.5B's shape, q4: the decode bench's cached model), at prompts of 1024, 2048 and
 * 4096 tokens: the time and the last position's logits. And what it is for in a server: the time to the first token
 * of a short request that arrives while a long prompt is prefilled, chunked against in one step (two coalescers over
 * the same session). Writes bench/results/prefill-<date>.json + .md.
 *   node --import tsx bench/prefill.ts [--reps 3] [--results-dir d] [--no-write]
 */
import { loadModel } from '../src/runtime/model.ts';
import { CoalescingBackend, PREFILL_CHUNK } from '../src/runtime/scheduler.ts';
import type { Backend } from '../src/runtime/backend.ts';
import { isMainModule } from '../src/main-module.ts';
import { machineNow, machineText, median, scriptArgs, publish } from './write.ts';

export interface PrefillBenchOptions {
  /** Runs per row and setting (interleaved); the fastest is reported. Default 3. */
  reps?: number;
  resultsDir?: string | null;
}

const LENGTHS = [1024, 2048, 4096];
const ids = (n: number, k: number, vocab: number) => Array.from({ length: n }, (_, i) => (i * 131 + k * 17 + 7) % vocab);

/** Milliseconds of one prefill of `tokens` through `b` (a fresh cache), and its last position's logits. */
async function prefill(b: Backend, tokens: number[]): Promise<{ ms: number; logits: Float32Array }> {
  const cache = await b.newCache(1), t0 = performance.now();
  try {
    const r = await b.step(cache, { tokens: [tokens], want: { logits: true } });
    return { ms: performance.now() - t0, logits: r.logits! };
  } finally {
    await b.free(cache);
  }
}

/** While `long` is prefilled through `b`, a short prompt arrives: its first token's time, and the long prefill's. */
async function beside(b: Backend, long: number[], short: number[]): Promise<{ shortTtftMs: number; longMs: number }> {
  const [lc, sc] = [await b.newCache(1), await b.newCache(1)], t0 = performance.now();
  try {
    const longDone = b.step(lc, { tokens: [long] }).then(() => performance.now() - t0);
    await new Promise((r) => setTimeout(r, 50)); // it arrives once the long prompt's first step runs
    const s0 = performance.now();
    await b.step(sc, { tokens: [short], sample: [{ temperature: 0, u: 0.5 }] });
    return { shortTtftMs: performance.now() - s0, longMs: await longDone };
  } finally {
    await b.free(lc);
    await b.free(sc);
  }
}

interface Row { tokens: number; wholeMs: number; chunkedMs: number; ratio: number; maxLogitDiff: number }

export async function runPrefillBench(o: PrefillBenchOptions = {}) {
  const reps = o.reps ?? 3, machine = machineNow();
  const { preparedShapeModels } = await import('./decode.ts');
  const files = await preparedShapeModels();
  const m = await loadModel(files.onnxDir, { promptCache: 0 });
  const chunked = m.backend as CoalescingBackend, whole = new CoalescingBackend(chunked.inner, { prefillChunk: Infinity }), V = m.config.vocabSize;
  const rows: Row[] = [];
  let served: { tokens: number; short: number; chunked: { shortTtftMs: number; longMs: number }; whole: { shortTtftMs: number; longMs: number } } | undefined;
  try {
    await prefill(chunked, ids(600, 0, V)); // warm-up
    for (const n of LENGTHS) {
      let w = Infinity, c = Infinity, diff = 0;
      for (let rep = 0; rep < reps; rep++) { // interleaved: a slow moment of the machine hits both alike
        const prompt = ids(n, rep, V), a = await prefill(whole, prompt), b = await prefill(chunked, prompt);
        [w, c] = [Math.min(w, a.ms), Math.min(c, b.ms)];
        for (let i = 0; i < a.logits.length; i++) diff = Math.max(diff, Math.abs(a.logits[i] - b.logits[i]));
      }
      rows.push({ tokens: n, wholeMs: w, chunkedMs: c, ratio: c / w, maxLogitDiff: diff });
      console.error(`${n}-token prompt: ${w.toFixed(0)} ms in one step, ${c.toFixed(0)} ms in steps of ${PREFILL_CHUNK} (${(c / w).toFixed(2)}×); last position's logits ${diff.toExponential(1)} apart`);
    }
    const long = ids(4096, 9, V), short = ids(32, 10, V);
    const runs = { chunked: [] as { shortTtftMs: number; longMs: number }[], whole: [] as { shortTtftMs: number; longMs: number }[] };
    for (let rep = 0; rep < reps; rep++) {
      runs.whole.push(await beside(whole, long, short));
      runs.chunked.push(await beside(chunked, long, short));
    }
    // Each column its own median (not the long prefill of the run whose short request was the median one).
    const medians = (xs: { shortTtftMs: number; longMs: number }[]) => ({ shortTtftMs: median(xs.map((x) => x.shortTtftMs)), longMs: median(xs.map((x) => x.longMs)) });
    served = { tokens: long.length, short: short.length, chunked: medians(runs.chunked), whole: medians(runs.whole) };
    console.error(`a ${short.length}-token request arriving during a ${long.length}-token prefill: first token after ${served.whole.shortTtftMs.toFixed(0)} ms (one step) vs ${served.chunked.shortTtftMs.toFixed(0)} ms (chunked); the long prefill ${served.whole.longMs.toFixed(0)} vs ${served.chunked.longMs.toFixed(0)} ms`);
  } finally {
    await m.close();
  }
  const date = new Date().toISOString().slice(0, 10);
  const result = { date, model: 'random weights, Qwen2.5-0.5B shape, q4 (accuracy level 4)', chunk: PREFILL_CHUNK, reps, machine, rows, served };
  const md = [`# Chunked prefill ${date}`, '',
    `${result.model}, batch 1, ${machineText(machine)}. A prompt fed in steps of ${PREFILL_CHUNK} tokens (the runtime's default) against one step of it all, through the same session; the fastest of ${reps} runs per setting (interleaved).`, '',
    '| prompt (tokens) | one step (ms) | in steps of ' + PREFILL_CHUNK + ' (ms) | × | last position\'s logits, max difference |', '|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.tokens} | ${r.wholeMs.toFixed(0)} | ${r.chunkedMs.toFixed(0)} | ${r.ratio.toFixed(2)} | ${r.maxLogitDiff.toExponential(1)} |`), '',
    '## A request arriving during a long prefill', '',
    `A ${served!.short}-token request sent 50 ms into a ${served!.tokens}-token prefill (the median of ${reps} runs each): in one step it waits for the whole prompt; chunked, it runs between two of its steps.`, '',
    '| prefill | the short request\'s first token (ms) | the long prefill (ms) |', '|---|---:|---:|',
    `| one step | ${served!.whole.shortTtftMs.toFixed(0)} | ${served!.whole.longMs.toFixed(0)} |`,
    `| in steps of ${PREFILL_CHUNK} | ${served!.chunked.shortTtftMs.toFixed(0)} | ${served!.chunked.longMs.toFixed(0)} |`, ''].join('\n');
  publish(o.resultsDir, `prefill-${date}`, result, md);
  return result;
}

if (isMainModule(import.meta.url)) {
  const a = scriptArgs('bench/prefill.ts', { reps: 'count', 'results-dir': 'string', 'no-write': 'boolean' });
  await runPrefillBench({ reps: a.num('reps'), resultsDir: a.resultsDir() });
}
