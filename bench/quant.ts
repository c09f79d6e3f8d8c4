/**
 * Choosing a weight format: the same checkpoint as q4, q8 and fp32.
 *  - Speed: random weights in Qwen2.5-0.5B's shape; a 256-token prefill and 32 batch-1 decode steps, the three
 *    formats taking turns (best of 4 runs each, the first dropped), plus the weights' size and the first load's time.
 *  - Fidelity: the embedded default model (trained, so its predictions mean something); the fp32 model's greedy
 *    answers to test questions, then each format teacher-forced through them: top-1 agreement with fp32 at every
 *    answer position, mean max |Δp|, and how many greedy answers come out word for word the same.
 * Writes bench/results/quant-<date>.json + .md.
 *   node --import tsx bench/quant.ts [--questions 24] [--threads 2]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel, type Model } from '../src/runtime/model.ts';
import { QUANTS, quantBytes, type Quant } from '../src/onnx/quant.ts';
import { parameterCount } from '../src/models/config.ts';
import { makeSplits } from '../src/tasks/synthetic.ts';
import { isMainModule } from '../src/main-module.ts';
import { scriptArgs, publish, machineNow, machineText } from './write.ts';
import { prepareModels } from './decode.ts';
import { defaultModel } from '../src/models/embedded.ts';

const greedy = [{ temperature: 0, u: 0 }];

async function speed(m: Model, prompt: number[]): Promise<{ prefillMs: number; decodeMs: number }> {
  const b = m.backend, c = await b.newCache(1);
  try {
    let t = performance.now(), s = await b.step(c, { tokens: [prompt], sample: greedy });
    const prefillMs = performance.now() - t;
    t = performance.now();
    for (let i = 0; i < 32; i++) s = await b.step(c, { tokens: [[s.tokens![0]]], sample: greedy });
    return { prefillMs, decodeMs: (performance.now() - t) / 32 };
  } finally {
    await b.free(c);
  }
}

/** Probabilities at each position of `ids` (one prefill), as rows of V. */
async function probs(m: Model, ids: number[]): Promise<Float64Array[]> {
  const c = await m.backend.newCache(1), V = m.config.vocabSize;
  try {
    const l = (await m.backend.step(c, { tokens: [ids], logits: 'all', want: { logits: true } })).logits!;
    return Array.from({ length: ids.length }, (_, i) => {
      const row = l.subarray(i * V, (i + 1) * V), mx = Math.max(...row), p = Float64Array.from(row, (x) => Math.exp(x - mx));
      const s = p.reduce((a, b) => a + b, 0);
      return p.map((x) => x / s);
    });
  } finally {
    await m.backend.free(c);
  }
}

const argmax = (p: Float64Array) => p.reduce((b, x, i) => (x > p[b] ? i : b), 0);

export async function runQuantBench(o: { questions?: number; threads?: number; resultsDir?: string | null } = {}) {
  const machine = machineNow();
  const threads = o.threads ?? 2, nq = o.questions ?? 24;
  // Speed on the 0.5B shape (the decode bench's cached random checkpoint).
  const cache = path.join(os.tmpdir(), 'edgereason-bench-decode');
  const { hf, config, kept } = await prepareModels(cache, 4, (phase) => console.error(`${phase}…`), (label) => console.error(label), { sourceOnly: true });
  if (kept) console.error(kept);
  const speedRows: Record<string, { loadS: number; weightsMb: number; prefill: number[]; decode: number[] }> = {};
  const models: Partial<Record<Quant, Model>> = {}, cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-bench-quant-'));
  try {
    for (const q of QUANTS) {
      const t = performance.now(); // a first load: q4 and q8 quantise into the (fresh) cache, fp32 builds in memory
      models[q] = await loadModel(hf, { quant: q, worker: false, threads, cacheDir });
      speedRows[q] = { loadS: (performance.now() - t) / 1000, weightsMb: (parameterCount(config) * quantBytes(q)) / 1e6, prefill: [], decode: [] };
    }
  } finally {
    fs.rmSync(cacheDir, { recursive: true, force: true }); // the sessions hold what they read
  }
  const prompt = Array.from({ length: 256 }, (_, i) => (i * 37 + 11) % 20000);
  for (let rep = 0; rep < 4; rep++) {
    for (const q of QUANTS) {
      const s = await speed(models[q]!, prompt);
      if (rep > 0) { speedRows[q].prefill.push(s.prefillMs); speedRows[q].decode.push(s.decodeMs); }
    }
    console.error(`speed run ${rep + 1}/4`);
  }
  for (const m of Object.values(models)) await m!.close();
  const speedOut = QUANTS.map((q) => ({
    quant: q, weightsMb: Math.round(speedRows[q].weightsMb), loadS: speedRows[q].loadS,
    prefillTokS: 256000 / Math.min(...speedRows[q].prefill), decodeTokS: 1000 / Math.min(...speedRows[q].decode),
  }));

  // Fidelity on the embedded default: fp32's greedy answers, teacher-forced through each format.
  const dir = defaultModel.dir, questions = makeSplits({ train: 0, val: 0, test: nq, seed: 7 }).test.map((i) => i.question);
  const loaded = Object.fromEntries(await Promise.all(QUANTS.map(async (q) => [q, await loadModel(dir, { quant: q, worker: false, threads })]))) as Record<Quant, Model>;
  const stats = Object.fromEntries(QUANTS.map((q) => [q, { agree: 0, positions: 0, sumMax: 0, sameText: 0 }]));
  for (const question of questions) {
    const ref = await loadedComplete(loaded.fp32, question), ids = [...loaded.fp32.encode(question, true), ...ref.tokens];
    const from = ids.length - ref.tokens.length - 1, p32 = await probs(loaded.fp32, ids);
    for (const q of QUANTS) {
      const pq = await probs(loaded[q], ids), st = stats[q];
      for (let i = from; i < ids.length - 1; i++) {
        st.positions++;
        if (argmax(pq[i]) === argmax(p32[i])) st.agree++;
        st.sumMax += pq[i].reduce((m, x, j) => Math.max(m, Math.abs(x - p32[i][j])), 0);
      }
      if ((await loadedComplete(loaded[q], question)).text === ref.text) st.sameText++;
    }
  }
  for (const m of Object.values(loaded)) await m.close();
  const fidelity = QUANTS.map((q) => ({ quant: q, top1: stats[q].agree / stats[q].positions, meanMaxDp: stats[q].sumMax / stats[q].positions, sameAnswers: stats[q].sameText, questions: nq }));

  const date = new Date().toISOString().slice(0, 10);
  const result = { date, threads, machine, speedShape: 'Qwen2.5-0.5B (random weights)', speed: speedOut, fidelity };
  const md = [`# Weight formats ${date}`, '',
    `Speed: random weights in Qwen2.5-0.5B's shape, ${threads} threads, ${machineText(result.machine)}; prefill of 256 tokens and 32 batch-1 decode steps, the formats taking turns (best of 3 runs after a warm-up). Weights: parameters × bytes per weight of the format. Load: the first (q4 and q8 quantise into a cache; fp32 builds in memory).`, '',
    '| format | weights MB | first load s | prefill tok/s | decode tok/s |', '|---|---:|---:|---:|---:|',
    ...speedOut.map((r) => `| ${r.quant} | ${r.weightsMb} | ${r.loadS.toFixed(1)} | ${r.prefillTokS.toFixed(1)} | ${r.decodeTokS.toFixed(1)} |`), '',
    `Fidelity: the embedded default model (fp32 is its own format), the fp32 model's greedy answers to ${nq} test questions teacher-forced through each format.`, '',
    '| format | top-1 agreement with fp32 | mean max \\|Δp\\| | same greedy answer |', '|---|---:|---:|---:|',
    ...fidelity.map((r) => `| ${r.quant} | ${(100 * r.top1).toFixed(1)} % | ${r.meanMaxDp.toFixed(4)} | ${r.sameAnswers}/${r.questions} |`), ''].join('\n');
  if (publish(o.resultsDir, `quant-${date}`, result, md)) console.log(md); // (printed by publish with --no-write)
  return result;
}

const loadedComplete = (m: Model, question: string) => m.complete(question, { chat: true, maxTokens: 96, adapter: false });

if (isMainModule(import.meta.url)) {
  const a = scriptArgs('bench/quant.ts', { questions: 'count', threads: 'count', 'results-dir': 'string', 'no-write': 'boolean' });
  await runQuantBench({ questions: a.num('questions'), threads: a.num('threads'), resultsDir: a.resultsDir() });
}
