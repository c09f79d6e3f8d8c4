/**
 * What structured output costs: decode speed with the answer held to JSON (response_format json_object, and a
 * schema) against free text, side by side in one run, on random weights in Qwen2.5-0.5B's shape (q4; the decode
 * bench's cached model, with the real 151,936-token Qwen vocabulary, whose string states allow ~147k tokens: the
 * constraint's worst case), greedy and sampled. Also the one-off costs: indexing the vocabulary (once per tokenizer)
 * and finding a state's allowed tokens the first time.
 * Writes bench/results/json-<date>.json + .md.
 *   node --import tsx bench/json.ts [--tokens 64] [--reps 3] [--results-dir d] [--no-write]
 */
import { loadModel, type Model } from '../src/runtime/model.ts';
import { answer } from '../src/reason/answer.ts';
import { JsonConstraint, type JsonSchema } from '../src/runtime/json-constraint.ts';
import { isMainModule } from '../src/main-module.ts';
import { machineNow, machineText, scriptArgs, publish } from './write.ts';

export interface JsonBenchOptions {
  /** Tokens generated per run (default 64). */
  tokens?: number;
  /** Runs per row; the fastest is reported (other work on the machine only slows runs down). Default 3. */
  reps?: number;
  resultsDir?: string | null;
}

const SCHEMA = { type: 'object', properties: { name: { type: 'string' }, tags: { type: 'array', items: { type: 'string' } } }, required: ['name', 'tags'] };
const MODES: [name: string, json: JsonSchema | undefined][] = [['free text', undefined], ['json_object', true], ['json_schema', SCHEMA]];
const SAMPLING = [['greedy', { temperature: 0 }], ['temperature 0.8, top-p 0.95', { temperature: 0.8, topP: 0.95 }]] as const;

interface Row { mode: string; sampling: string; tokens: number; msPerToken: number; ratio: number }

/** Decode milliseconds per token (after the first) of one answer, and its tokens. */
async function run(m: Model, json: JsonSchema | undefined, sampling: { temperature: number; topP?: number }, tokens: number): Promise<{ ms: number; tokens: number }> {
  // Random weights may end the text at once: the first seed (from 1) whose answer is long enough to time.
  for (let seed = 1; seed <= 20; seed++) {
    const r = await answer(m, 'Describe a cat as JSON.', { reasoning: 'off', maxTokens: tokens, seed, ...sampling, ...(json !== undefined ? { json } : {}) });
    const n = r.usage.completionTokens;
    if (n >= 8) return { ms: (r.latencyMs - r.ttftMs) / (n - 1), tokens: n };
  }
  throw new Error('bench json: no seed from 1 to 20 gave an answer of 8 tokens or more to time');
}

export async function runJsonBench(o: JsonBenchOptions = {}) {
  const tokens = o.tokens ?? 64, reps = o.reps ?? 3, machine = machineNow();
  if (tokens < 8) throw new Error(`bench json: --tokens must be at least 8 (decode time per token is timed after the first), got ${tokens}`);
  const { preparedShapeModels } = await import('./decode.ts');
  const files = await preparedShapeModels();
  const m = await loadModel(files.onnxDir);
  const rows: Row[] = [];
  let oneOff: { indexMs: number; firstStateMs: Record<string, number> };
  try {
    // One-off costs, on a tokenizer object of their own (the index is kept per tokenizer object).
    const tok = Object.create(m.tokenizer) as typeof m.tokenizer;
    let t = performance.now();
    const c = new JsonConstraint(tok, true), next = c.tracker();
    const indexMs = performance.now() - t, firstStateMs: Record<string, number> = {};
    for (const text of ['{', '{"', '{"a": "', '{"a": {"b": "']) {
      t = performance.now();
      next(tok.encode(text, { addSpecialTokens: false }));
      firstStateMs[text] = performance.now() - t;
    }
    oneOff = { indexMs, firstStateMs };
    console.error(`vocabulary index ${indexMs.toFixed(0)} ms; first allowed lists: ${Object.entries(firstStateMs).map(([k, v]) => `${JSON.stringify(k)} ${v.toFixed(1)} ms`).join(', ')}`);
    for (const [, json] of MODES) await run(m, json, { temperature: 0 }, 8); // warm-up (sessions, each constraint and the allowed lists of its first states)
    for (const [sampling, params] of SAMPLING) {
      // Interleaved by rep, so a slow moment of the machine hits every mode alike.
      const best = new Map<string, { ms: number; tokens: number }>();
      for (let rep = 0; rep < reps; rep++) {
        for (const [mode, json] of MODES) {
          const r = await run(m, json, params, tokens);
          if (!best.has(mode) || r.ms < best.get(mode)!.ms) best.set(mode, r);
        }
      }
      const free = best.get('free text')!.ms;
      for (const [mode] of MODES) {
        const b = best.get(mode)!;
        rows.push({ mode, sampling, tokens: b.tokens, msPerToken: b.ms, ratio: b.ms / free });
        console.error(`${sampling}, ${mode}: ${b.ms.toFixed(2)} ms/token (${(b.ms / free).toFixed(3)}× free text), ${b.tokens} tokens`);
      }
    }
  } finally {
    await m.close();
  }
  const date = new Date().toISOString().slice(0, 10);
  const result = { date, model: 'random weights, Qwen2.5-0.5B shape, q4 (accuracy level 4)', vocabulary: m.config.vocabSize, tokens, reps, machine, oneOff, rows };
  const md = [`# Structured output: decode cost of the JSON constraint ${date}`, '',
    `${result.model}, its ${result.vocabulary}-token Qwen vocabulary; up to ${tokens} generated tokens per run (a JSON answer that ends sooner is timed on its own tokens: the tokens column), batch 1, the fastest of ${reps} runs (interleaved), ${machineText(machine)}. Decode time per token after the first. json_schema: \`${JSON.stringify(SCHEMA)}\`.`, '',
    '| sampling | answer | tokens | ms / token | × free text |', '|---|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r.sampling} | ${r.mode} | ${r.tokens} | ${r.msPerToken.toFixed(2)} | ${r.ratio.toFixed(3)} |`), '',
    `One-off: indexing the vocabulary ${oneOff.indexMs.toFixed(0)} ms (once per tokenizer); a machine state's allowed tokens the first time: ${Object.entries(oneOff.firstStateMs).map(([k, v]) => `\`${k}\` ${v.toFixed(1)} ms`).join(', ')} (the first string state finds the quote-free tokens every string allows, once per tokenizer; later string states scan only the quoted ones).`, ''].join('\n');
  publish(o.resultsDir, `json-${date}`, result, md);
  return result;
}

if (isMainModule(import.meta.url)) {
  const a = scriptArgs('bench/json.ts', { tokens: 'count', reps: 'count', 'results-dir': 'string', 'no-write': 'boolean' });
  await runJsonBench({ tokens: a.num('tokens'), reps: a.num('reps'), resultsDir: a.resultsDir() });
}
