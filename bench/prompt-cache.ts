/**
 * What prompt caching saves in a chat: time to the first token of a conversation's next turn with the conversation so
 * far kept from the turn before (prompt caching on) against prefilling it all again (off), side by side in one run on
 * one model (the cache switched per turn), on random weights in Qwen2.5-0.5B's shape (q4, the decode bench's cached
 * model, the real Qwen tokenizer and chat template), at conversations of about 256, 1024 and 2048 tokens. And after a
 * restart: the first request of a fresh prompt cache under a long system prompt, prefilled whole against read from the
 * prompt cache file a run before saved (loadPromptCache; its time counted). And how far apart models compute the
 * probe a file is checked with: the same weights at other thread counts, and the embedded model's quantisations.
 * Writes bench/results/prompt-cache-<date>.json + .md.
 *   node --import tsx bench/prompt-cache.ts [--reps 3] [--results-dir d] [--no-write]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel, type Model } from '../src/runtime/model.ts';
import { answer } from '../src/reason/answer.ts';
import { probe, PROBE_TOLERANCE, relativeDifference, setPromptCache } from '../src/runtime/prompt-cache.ts';
import { defaultModel } from '../src/models/embedded.ts';
import type { LoadOptions } from '../src/runtime/model.ts';
import type { ChatMessage } from '../src/tokenizer/types.ts';
import { isMainModule } from '../src/main-module.ts';
import { machineNow, machineText, scriptArgs, publish } from './write.ts';

export interface PromptCacheBenchOptions {
  /** Turns timed per row and setting; the fastest is reported. Default 3. */
  reps?: number;
  resultsDir?: string | null;
}

const LENGTHS = [256, 1024, 2048];
const SENTENCE = 'The river town keeps its boats in the north harbour, and the ferry crosses twice a day when the weather allows.';

/** A conversation of about `tokens` tokens (user and assistant turns), ending with a user turn. */
function conversation(m: Model, tokens: number, tag: string): ChatMessage[] {
  const msgs: ChatMessage[] = [{ role: 'system', content: `You are a helpful assistant (${tag}).` }];
  for (let i = 0; m.encode([...msgs, { role: 'user', content: 'x' }], true).length < tokens; i++) {
    msgs.push({ role: 'user', content: `Question ${i}: ${SENTENCE} What follows?` }, { role: 'assistant', content: `${SENTENCE} (${i})` });
  }
  return [...msgs, { role: 'user', content: 'And what does the ferry carry?' }];
}

/** TTFT of a conversation's next turn, its turn before answered first (kept when the cache is on). */
async function nextTurn(m: Model, tokens: number, cache: boolean, tag: string): Promise<{ ttftMs: number; prompt: number; cached: number }> {
  setPromptCache(m.backend, cache ? 256 : 0);
  const before = conversation(m, tokens, tag);
  const reply = await answer(m, before, { reasoning: 'off', maxTokens: 12, seed: 1 });
  const next = [...before, { role: 'assistant' as const, content: reply.answer }, { role: 'user' as const, content: 'How long does the crossing take, roughly?' }];
  const r = await answer(m, next, { reasoning: 'off', maxTokens: 1, seed: 1 });
  return { ttftMs: r.ttftMs, prompt: r.usage.promptTokens, cached: r.usage.cachedTokens };
}

interface Row { tokens: number; prompt: number; cached: number; offMs: number; onMs: number; ratio: number }

/** A system message of about `tokens` tokens. */
function systemPrompt(m: Model, tokens: number): ChatMessage[] {
  let text = 'You are the harbour office\'s assistant. The notes:';
  for (let i = 0; m.encode([{ role: 'system', content: text }], true).length < tokens; i++) text += ` (${i}) ${SENTENCE}`;
  return [{ role: 'system', content: text }];
}

const QUESTION = { role: 'user' as const, content: 'When does the ferry cross?' };

/**
 * The first request after a restart (a fresh, empty prompt cache): TTFT with the system prompt prefilled, against
 * loading the prompt cache file (timed) and then TTFT.
 */
async function afterRestart(m: Model, system: ChatMessage[], file: string | undefined): Promise<{ loadMs: number; ttftMs: number; cached: number }> {
  setPromptCache(m.backend, 256); // a new process's: empty
  const t0 = performance.now();
  if (file) await m.loadPromptCache(file);
  const loadMs = performance.now() - t0;
  const r = await answer(m, [...system, QUESTION], { reasoning: 'off', maxTokens: 1, seed: 1 });
  return { loadMs, ttftMs: r.ttftMs, cached: r.usage.cachedTokens };
}

/** The probe's keys and values a model loaded from `dir` with `opts` computes. */
async function probeOf(dir: string, opts: LoadOptions): Promise<Float32Array> {
  const m = await loadModel(dir, { ...opts, promptCache: 0 });
  try { return await probe(m.backend); } finally { await m.close(); }
}

interface ProbeRow { model: string; against: string; difference: number; read: boolean }

interface RestartRow { tokens: number; prompt: number; cached: number; fileMB: number; coldMs: number; loadMs: number; warmMs: number; firstWarmMs: number; ratio: number }

export async function runPromptCacheBench(o: PromptCacheBenchOptions = {}) {
  const reps = o.reps ?? 3, machine = machineNow();
  const { preparedShapeModels } = await import('./decode.ts');
  const files = await preparedShapeModels();
  const m = await loadModel(files.onnxDir);
  const rows: Row[] = [], restarts: RestartRow[] = [];
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-bench-kept-')), 'prompts.safetensors');
  try {
    await nextTurn(m, 64, false, 'warm-up');
    for (const tokens of LENGTHS) {
      let off = Infinity, on = Infinity, prompt = 0, cached = 0;
      for (let rep = 0; rep < reps; rep++) { // interleaved: a slow moment of the machine hits both settings alike
        // (A conversation of its own per run: nothing of another run's is kept.)
        off = Math.min(off, (await nextTurn(m, tokens, false, `off ${rep}`)).ttftMs);
        const r = await nextTurn(m, tokens, true, `on ${rep}`);
        [on, prompt, cached] = [Math.min(on, r.ttftMs), r.prompt, r.cached];
      }
      rows.push({ tokens, prompt, cached, offMs: off, onMs: on, ratio: on / off });
      console.error(`~${tokens} tokens: next turn's prompt ${prompt} tokens (${cached} cached): TTFT ${off.toFixed(0)} ms without the cache, ${on.toFixed(0)} ms with it (${(on / off).toFixed(3)}×)`);
    }
    for (const tokens of LENGTHS.slice(1)) {
      const system = systemPrompt(m, tokens);
      setPromptCache(m.backend, 256);
      await m.keepPrompt(system);
      const fileMB = (await m.savePromptCache(file)).bytes / 1e6;
      let cold = Infinity, warm = Infinity, load = Infinity, cached = 0, firstWarm = 0;
      for (let rep = 0; rep < reps; rep++) {
        cold = Math.min(cold, (await afterRestart(m, system, undefined)).ttftMs);
        const r = await afterRestart(m, system, file);
        [warm, load, cached] = [Math.min(warm, r.loadMs + r.ttftMs), Math.min(load, r.loadMs), r.cached];
        if (rep === 0) firstWarm = r.loadMs + r.ttftMs; // (this file's first read: its buffers fresh memory, as in a new process)
      }
      const prompt = m.encode([...system, QUESTION], true).length;
      restarts.push({ tokens, prompt, cached, fileMB, coldMs: cold, loadMs: load, warmMs: warm, firstWarmMs: firstWarm, ratio: warm / cold });
      console.error(`restart, ~${tokens}-token system prompt: first request's TTFT ${cold.toFixed(0)} ms prefilled, ${warm.toFixed(0)} ms read from the file (${load.toFixed(0)} ms of it loading ${fileMB.toFixed(1)} MB; ${(warm / cold).toFixed(3)}×; the run's first read ${firstWarm.toFixed(0)} ms)`);
    }
  } finally {
    await m.close();
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  }
  const probes: ProbeRow[] = [];
  const compare = async (model: string, against: string, a: Float32Array | Promise<Float32Array>, b: Float32Array | Promise<Float32Array>) => {
    const difference = relativeDifference(await a, await b);
    probes.push({ model, against, difference, read: difference <= PROBE_TOLERANCE });
  };
  await compare('0.5B shape q4, 1 thread', '2 threads', probeOf(files.onnxDir, { threads: 1 }), probeOf(files.onnxDir, { threads: 2 }));
  const dflt = (o: LoadOptions) => probeOf(defaultModel.dir, o), fp32 = await dflt({ quant: 'fp32', threads: 2 });
  await compare('embedded fp32, 1 thread', '2 threads', dflt({ quant: 'fp32', threads: 1 }), fp32);
  await compare('embedded q4, 1 thread', '2 threads', dflt({ quant: 'q4', threads: 1 }), dflt({ quant: 'q4', threads: 2 }));
  await compare('embedded q8', 'fp32', dflt({ quant: 'q8' }), fp32);
  await compare('embedded q4', 'fp32', dflt({ quant: 'q4' }), fp32);
  await compare('embedded q4, accuracy level 0', 'accuracy level 4', dflt({ quant: 'q4', accuracyLevel: 0 }), dflt({ quant: 'q4', accuracyLevel: 4 }));
  for (const p of probes) console.error(`probe: ${p.model} against ${p.against}: ${p.difference.toExponential(1)} (${p.read ? 'read' : 'refused'})`);
  const date = new Date().toISOString().slice(0, 10);
  const result = { date, model: 'random weights, Qwen2.5-0.5B shape, q4 (accuracy level 4)', reps, machine, rows, restarts, probes };
  const md = [`# Prompt caching: time to the first token of a chat's next turn ${date}`, '',
    `${result.model}, the Qwen chat template; batch 1, greedy, the fastest of ${reps} turns per setting (interleaved), ${machineText(machine)}. Each turn: a conversation answered, then its next user message; with prompt caching the conversation's prompt from the turn before is kept, so the next prefills only the reply and the new message.`, '',
    '| conversation | next turn\'s prompt | of it cached | TTFT without cache (ms) | with cache (ms) | × |', '|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ~${r.tokens} | ${r.prompt} | ${r.cached} | ${r.offMs.toFixed(0)} | ${r.onMs.toFixed(0)} | ${r.ratio.toFixed(3)} |`), '',
    '## After a restart', '',
    'The first request of a new session (an empty prompt cache) under a long system prompt: prefilled whole, against reading the prompt cache file a run before saved (`loadPromptCache`, timed: the file was just written, so it is read from the page cache) and prefilling the question alone.', '',
    '| system prompt | first request\'s prompt | of it cached | file (MB) | TTFT prefilled (ms) | load + TTFT (ms) | of it loading (ms) | × | load + TTFT, the first of the run (ms) |', '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...restarts.map((r) => `| ~${r.tokens} | ${r.prompt} | ${r.cached} | ${r.fileMB.toFixed(1)} | ${r.coldMs.toFixed(0)} | ${r.warmMs.toFixed(0)} | ${r.loadMs.toFixed(0)} | ${r.ratio.toFixed(3)} | ${r.firstWarmMs.toFixed(0)} |`), '',
    '## The probe', '',
    `A prompt cache file holds the keys and values its model computed for 8 fixed tokens; a model loading it computes them again and refuses the file beyond ${PROBE_TOLERANCE} (relative RMS difference):`, '',
    '| model | against | difference | the file |', '|---|---|---:|---|',
    ...probes.map((p) => `| ${p.model} | ${p.against} | ${p.difference.toExponential(1)} | ${p.read ? 'read' : 'refused'} |`), ''].join('\n');
  publish(o.resultsDir, `prompt-cache-${date}`, result, md);
  return result;
}

if (isMainModule(import.meta.url)) {
  const a = scriptArgs('bench/prompt-cache.ts', { reps: 'count', 'results-dir': 'string', 'no-write': 'boolean' });
  await runPromptCacheBench({ reps: a.num('reps'), resultsDir: a.resultsDir() });
}
