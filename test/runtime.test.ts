import { after, mock, test } from 'node:test';
import { syncBuiltinESMExports } from 'node:module';
import assert from 'node:assert/strict';
import { ContextLengthError, ModelClosedError, RuntimeFailedError } from '../src/runtime/errors.ts';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { getEventListeners } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Worker } from 'node:worker_threads';
import { loadModel, convertModel, checkInMemorySize, parameterCount, BUILD_IN_WORKER, type LoadOptions } from '../src/runtime/model.ts';
import { cacheEntries, cachedConversion, pruneCache, weightBytes } from '../src/runtime/convert.ts';
import { WorkerBackend } from '../src/runtime/worker-backend.ts';
import { interrupted } from '../src/cli/convert.ts';
import { adapterView, delegate, LocalBackend, type Backend, type StepRequest, type StepResult } from '../src/runtime/backend.ts';
import { CoalescingBackend, withBackend } from '../src/runtime/scheduler.ts';
import { baseModelNote, loadAdapter, modelNames, refName, saveAdapter } from '../src/io/peft.ts';
import { Engine, SHARE_FROM } from '../src/runtime/engine.ts';
import { KVCache, copyPositions, grownCapacity } from '../src/runtime/kv-cache.ts';
import { withRopeScaling, type ModelConfig } from '../src/models/config.ts';
import { buildInferenceGraph } from '../src/models/inference-graph.ts';
import { prequantize, blockWeightNames } from '../src/runtime/prequantize.ts';
import { blocksFromGgml, quantizeBlocks, quantizeQ4 } from '../src/onnx/quant.ts';
import { MemoryWeights } from '../src/io/weights.ts';
import { writeSafetensors } from '../src/io/safetensors.ts';
import { fingerprint, openSource, openSourceFiles, readManifest, type ModelSource } from '../src/io/source.ts';
import { sampleToken, seededRandom } from '../src/runtime/sampler.ts';
import { generateBatch, Sequence, type Completion } from '../src/runtime/generate.ts';
import { tokenizeRecord } from '../src/train/data.ts';
import { makeRandomQwen2, QWEN25_05B, QWEN_TOKENIZER_DIR, rng } from './helpers/random-model.ts';
import { loadTokenizer } from '../src/tokenizer/hf.ts';
import { answer, reasoningTokens, thinkingOptions } from '../src/reason/answer.ts';
import { sharedPath } from './helpers/shared.ts';
import { loadLlama2c } from '../src/io/llama2c.ts';
import ort from '../src/runtime/ort.ts';
import { Graph } from '../src/onnx/graph.ts';
import { Layers } from '../src/models/layers.ts';
import { lmHead } from '../src/models/qwen2.ts';
import { decodeGgml, ggufToModel, quantizeQ4_0, writeModelGguf } from '../src/io/gguf.ts';
import { f32ToF16Bits } from '../src/io/safetensors.ts';
import { maxDiff } from './helpers/numeric.ts';
import { slow } from './helpers/tier.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-runtime-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
// Embedding std 1 makes next-token distributions peaked, so greedy choices are not near-ties.
const model = makeRandomQwen2({ dir: path.join(tmp, 'qwen2'), seed: 3, gguf: false, config: { numLayers: 2 } });
for (const [name, t] of model.weights) if (name === 'model.embed_tokens.weight') t.data.forEach((v, i) => { t.data[i] = v * 50; });
writeSafetensors(path.join(model.dir, 'model.safetensors'), model.weights);
const V = model.config.vocabSize;

async function backend(opts: { quant?: 'fp32' | 'q4'; lora?: boolean; weights?: MemoryWeights } = {}): Promise<LocalBackend> {
  const g = buildInferenceGraph(model.config, opts.weights ?? new MemoryWeights(model.weights), {
    quant: opts.quant ?? 'fp32', loraTargets: opts.lora ? ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] : [],
  });
  return LocalBackend.create(model.config, g.toModelProto(), { threads: 1 });
}

/** Logits [T, V] of every position of `ids` in one fresh prefill. */
async function allLogits(b: Backend, ids: number[]): Promise<Float32Array> {
  const c = await b.newCache(1);
  const r = await b.step(c, { tokens: [ids], logits: 'all', want: { logits: true } });
  await b.free(c);
  return r.logits!;
}

const prompt = Array.from({ length: 23 }, (_, i) => (i * 37 + 11) % V);

/** Rejects instead of waiting forever when `p` does not settle within `ms`. */
function within<T>(p: Promise<T>, ms = 10_000): Promise<T> {
  let timer!: NodeJS.Timeout;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms); });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

const graphBytes = (config: ModelConfig = model.config) => buildInferenceGraph(config, new MemoryWeights(model.weights), { quant: 'fp32' }).toModelProto();

test('stories260K: greedy output equals llama2.c run.c output exactly', async () => {
  const dir = sharedPath('models/stories260K');
  const expected = fs.readFileSync(path.join(dir, 'expected.txt'), 'utf8');
  const m = await loadModel(path.join(dir, 'stories260K.bin'), { quant: 'fp32' });
  try {
    // run.c: start from BOS, 200 steps (each produces one token), stop if BOS comes back (the model's own stop tokens).
    const c = await m.complete('', { maxTokens: 200 });
    assert.equal(c.text, expected);
    assert.equal(c.tokens.length, 200);
    // A sampled story that ends ("The end.") starts the next one with BOS: generation stops there, as run.c does.
    const story = await m.complete('Once upon a time', { maxTokens: 400, temperature: 1, seed: 4 });
    assert.deepEqual([story.finishReason, story.tokens.length < 400, story.text.trimEnd().endsWith('The end.')], ['stop', true, true], story.text);
    // Prompt/completion training data is encoded as one text, as it is read at inference: the completion's first word
    // keeps its own word-start piece ("▁there"), not a lone "▁" before it (encoded alone, " there" got two).
    const [ex] = tokenizeRecord({ line: 1, prompt: 'Once upon a time', completion: ' there was a cat.' }, m.tokenizer);
    const whole = m.tokenizer.encode('Once upon a time there was a cat.'), from = m.tokenizer.encode('Once upon a time').length;
    assert.deepEqual([ex.ids, ex.lossMask.indexOf(1)], [[...whole, 2], from]);
  } finally {
    await m.close();
  }
});

test('KV-cached incremental decoding equals full recompute (fp32, ≤ 1e-4)', async () => {
  const b = await backend();
  const full = await allLogits(b, prompt);
  const c = await b.newCache(1);
  await b.step(c, { tokens: [prompt.slice(0, 5)] });
  for (let t = 5; t < prompt.length; t++) {
    const r = await b.step(c, { tokens: [[prompt[t]]], want: { logits: true } });
    assert.ok(maxDiff(r.logits!, full.subarray(t * V, (t + 1) * V)) <= 1e-4, `position ${t}`);
  }
  // Growing past the initial capacity (64) keeps results identical.
  const long = Array.from({ length: 150 }, (_, i) => (i * 13 + 5) % V);
  const ref = await allLogits(b, long);
  const c2 = await b.newCache(1);
  for (let t = 0; t < long.length; t += 37) {
    const chunk = long.slice(t, t + 37);
    const r = await b.step(c2, { tokens: [chunk], logits: 'all', want: { logits: true } });
    assert.ok(maxDiff(r.logits!.subarray(0, chunk.length * V), ref.subarray(t * V, (t + chunk.length) * V)) <= 1e-4, `chunk at ${t}`);
  }
  assert.deepEqual(await b.lengths(c2), [150]);
  await b.close();
});

test('a batch of 4 prompts of different lengths equals the 4 single runs', async () => {
  const b = await backend();
  const prompts = [prompt, prompt.slice(3, 8), [7], prompt.slice(0, 15).reverse()];
  const c = await b.newCache(4);
  const batched = await b.step(c, { tokens: prompts, want: { logits: true } });
  let next = prompts.map((p, i) => [batched.logits!.subarray(i * V, (i + 1) * V)]);
  for (let i = 0; i < 4; i++) {
    const single = await allLogits(b, prompts[i]);
    assert.ok(maxDiff(next[i][0], single.subarray((prompts[i].length - 1) * V)) <= 1e-4, `prompt ${i}`);
  }
  // With every position's logits ('all'), each row samples at its own last token, not at the padding after it.
  const greedy = { temperature: 0, u: 0 }, c2 = await b.newCache(4);
  const all = await b.step(c2, { tokens: prompts, logits: 'all', sample: prompts.map(() => greedy) });
  assert.deepEqual(all.tokens, next.map(([l]) => sampleToken(l, greedy, 0).token));
  await b.free(c2);
  // Then decode 3 steps in the batch and compare each row with its own single-row cache.
  const singles = await Promise.all(prompts.map(async (p) => { const s = await b.newCache(1); await b.step(s, { tokens: [p] }); return s; }));
  for (let step = 0; step < 3; step++) {
    const toks = prompts.map((_, i) => [(step * 31 + i * 7) % V]);
    const r = await b.step(c, { tokens: toks, want: { logits: true } });
    for (let i = 0; i < 4; i++) {
      const s = await b.step(singles[i], { tokens: [toks[i]], want: { logits: true } });
      assert.ok(maxDiff(r.logits!.subarray(i * V, (i + 1) * V), s.logits!) <= 1e-4, `row ${i} step ${step}`);
    }
  }
  await b.close();
});

test('a forked prefix equals re-encoding it; rows can be dropped from a batch', async () => {
  const b = await backend();
  const c = await b.newCache(1);
  await b.step(c, { tokens: [prompt.slice(0, 12)] });
  const forked = await b.select(c, [0, 0, 0]);
  const conts = [[5, 6], [9, 10], [100, 3]];
  const r = await b.step(forked, { tokens: conts, want: { logits: true } });
  for (let i = 0; i < 3; i++) {
    const ref = await allLogits(b, [...prompt.slice(0, 12), ...conts[i]]);
    assert.ok(maxDiff(r.logits!.subarray(i * V, (i + 1) * V), ref.subarray(13 * V, 14 * V)) <= 1e-4, `fork ${i}`);
  }
  await b.keep(forked, [2]);
  const r2 = await b.step(forked, { tokens: [[42]], want: { logits: true } });
  const ref = await allLogits(b, [...prompt.slice(0, 12), ...conts[2], 42]);
  assert.ok(maxDiff(r2.logits!, ref.subarray(14 * V)) <= 1e-4);
  await b.close();
});

test('copies of one row share it as a prefix: held once, and every step equals rows that each hold a copy', async () => {
  const e = await Engine.create(model.config, graphBytes(model.config), { threads: 1 });
  try {
    const base = e.newCache(1), P = 150;
    await e.step(base, { tokens: [Array.from({ length: P }, (_, i) => prompt[i % prompt.length])] });
    const shared = base.select([0, 0, 0, 0], true), copies = base.select([0, 0, 0, 0]);
    assert.deepEqual([shared.offset, copies.offset, shared.lengths], [P, 0, [P, P, P, P]]);
    // The prompt once plus 64 own positions per row, against 4 rows of 192 (the prompt's capacity).
    assert.deepEqual([shared.bytes, copies.bytes].map((b) => b / (8 * model.config.numLayers * model.config.numKvHeads * model.config.headDim)), [P + 4 * 64, 4 * 192]);
    // The engine shares once the copies would repeat SHARE_FROM positions (7 × 150 here, not 3 × 150); one row never shares.
    assert.deepEqual([e.select(base, new Array(8).fill(0)).offset, e.select(base, [0, 0, 0, 0]).offset, base.select([0], true).offset], [P, 0, 0]);
    assert.ok(7 * P >= SHARE_FROM && 3 * P < SHARE_FROM);
    const same = async (label: string, tokens: number[][]) => {
      const a = await e.step(shared, { tokens, logits: 'all' }), b = await e.step(copies, { tokens, logits: 'all' });
      assert.ok(maxDiff(a.logits, b.logits) <= 1e-4, label);
      assert.deepEqual(shared.lengths, copies.lengths, label);
    };
    for (let t = 0; t < 70; t++) await same(`decode step ${t}`, [[t % V], [(t * 7) % V], [(t * 11 + 3) % V], [(t * 13 + 5) % V]]); // the own buffers grow past 64
    await same('several tokens on some rows (each runs with all its positions)', [[1, 2, 3], [4], [], [5, 6]]);
    assert.equal(shared.offset, P);
    shared.keep([3, 1]); copies.keep([3, 1]);
    await same('after rows left', [[7], [8]]);
    // Truncating into the prefix gives every row its own copy of it.
    shared.truncate(1, P - 8); copies.truncate(1, P - 8);
    assert.equal(shared.offset, 0);
    await same('after a truncation into the prefix', [[9], [10]]);
    // In a batch across caches, the shared cache steps alone (the batch cache would copy its prefix into every row).
    const others = [e.newCache(1), e.newCache(1)];
    for (const [k, c] of others.entries()) await e.step(c, { tokens: [prompt.slice(5 + k, 9)] });
    const fork = base.select([0, 0], true), ref = base.select([0, 0]);
    const [many, ...rest] = await e.stepMany([{ cache: fork, input: { tokens: [[11], [12]] } }, ...others.map((cache) => ({ cache, input: { tokens: [[13]] } }))]);
    assert.ok(!(many instanceof Error) && maxDiff(many.logits, (await e.step(ref, { tokens: [[11], [12]] })).logits) <= 1e-4);
    assert.ok(rest.every((r) => !(r instanceof Error)));
    const batchCache = (e as unknown as { mirrors: Map<string, { slots: unknown[] }> }).mirrors.get('')!; // the engine's own batch cache
    assert.deepEqual([batchCache.slots.filter(Boolean).length, fork.offset], [2, P], 'only the two other rows were batched');
    const next = await e.step(fork, { tokens: [[14], [15]] }), nextRef = await e.step(ref, { tokens: [[14], [15]] });
    assert.ok(maxDiff(next.logits, nextRef.logits) <= 1e-4);
    assert.throws(() => copyPositions(base, 0, fork, 0, 3, 5), /kv-cache: copyPositions cannot write position 3, in the destination's shared prefix of 150/);
    // A last row holds all its positions again (the engine's keep, which backend.keep runs).
    e.keep(fork, [1]); ref.keep([1]);
    assert.equal(fork.offset, 0);
    // backend.select forks through the engine: 8 copies of the prompt share it.
    const lb = new LocalBackend(e), h = await lb.newCache(1);
    await lb.step(h, { tokens: [Array.from({ length: P }, (_, i) => prompt[i % prompt.length])] });
    const cacheOf = (handle: number) => (lb as unknown as { cache(h: number): KVCache }).cache(handle); // the backend's own cache, for its layout
    assert.deepEqual([cacheOf(await lb.select(h, new Array(8).fill(0))).offset, cacheOf(await lb.select(h, [0, 0])).offset], [P, 0]);
    assert.deepEqual((await e.step(fork, { tokens: [[16, 17]] })).logits, (await e.step(ref, { tokens: [[16, 17]] })).logits);
  } finally {
    await e.close();
  }
});

test('several new tokens on several non-empty rows near the end of the context: each row runs with its own count', async () => {
  // The RoPE tables hold exactly the context (64 here): a row padded to the step's widest count would run past them.
  const config = { ...model.config, maxPositionEmbeddings: 64 };
  const e = await Engine.create(config, graphBytes(config), { threads: 1 });
  try {
    const c = e.newCache(2), long = Array.from({ length: 62 }, (_, i) => (i * 29 + 7) % V);
    await e.step(c, { tokens: [long, prompt.slice(0, 10)] });
    c.ensureCapacity(128); // the capacity the step grows to, so each row alone runs the very same computation
    const step = [[5], [5, 6, 7, 8]];
    for (const logits of ['last', 'all'] as const) {
      const both = c.select([0, 1]), out = await e.step(both, { tokens: step, logits });
      assert.deepEqual(both.lengths, [63, 14]);
      for (const b of [0, 1]) {
        const alone = c.select([b]), ref = await e.step(alone, { tokens: [step[b]], logits }), L = out.positions;
        assert.deepEqual(out.logits.subarray(b * L * V, b * L * V + ref.logits.length), ref.logits, `row ${b}, logits ${logits}`);
        const { kvHeads, headDim: D } = c.shape, cap = both.capacity, n = both.lengths[b];
        for (let h = 0; h < kvHeads; h++) {
          assert.deepEqual(alone.keys[1].subarray(h * cap * D, (h * cap + n) * D), both.view(b, 1).keys[1].subarray(h * cap * D, (h * cap + n) * D), `row ${b}: the same cached keys`);
        }
      }
    }
    // A row at the very end of the context may sit idle while another one decodes; one more token is refused by name.
    const full = c.select([0, 1]);
    await e.step(full, { tokens: [[5, 6], [7]] });
    const idle = await e.step(full, { tokens: [[], [8]] }), ref = c.select([1]);
    await e.step(ref, { tokens: [[7]] });
    assert.deepEqual(idle.logits.subarray(V), (await e.step(ref, { tokens: [[8]] })).logits);
    assert.deepEqual(full.lengths, [64, 12]);
    assert.throws(() => e.validate(full, { tokens: [[1], [2, 3]] }), /engine: sequence length 65 exceeds the model's context of 64 tokens/);
  } finally {
    await e.close();
  }
});

test('LoRA inputs: mask 1 equals the merged weights W + (alpha/r)·B·A, mask 0 equals the base', async () => {
  const r = rng(9), rank = 4, alpha = 8;
  const adapter = new Map<string, { shape: number[]; data: Float32Array }>();
  const merged = new Map([...model.weights].map(([k, v]) => [k, { shape: v.shape, data: v.data.slice() }]));
  const peft = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, t] of model.weights) {
    if (!/proj\.weight$/.test(name)) continue;
    const [out, inp] = t.shape, base = name.slice(0, -'.weight'.length);
    const A = Float32Array.from({ length: rank * inp }, () => 0.1 * r.normal());
    const B = Float32Array.from({ length: out * rank }, () => 0.1 * r.normal());
    peft.set(`base_model.model.${base}.lora_A.weight`, { shape: [rank, inp], data: A });
    peft.set(`base_model.model.${base}.lora_B.weight`, { shape: [out, rank], data: B });
    const w = merged.get(name)!.data;
    for (let o = 0; o < out; o++) for (let i = 0; i < inp; i++) {
      let s = 0;
      for (let k = 0; k < rank; k++) s += B[o * rank + k] * A[k * inp + i];
      w[o * inp + i] += (alpha / rank) * s;
    }
    adapter.set(base, t);
  }
  const dir = path.join(tmp, 'adapter');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: rank, lora_alpha: alpha, target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] }));
  writeSafetensors(path.join(dir, 'adapter_model.safetensors'), peft);

  const withAdapter = await loadModel(model.dir, { quant: 'fp32', adapter: dir, worker: false });
  const base = await backend(), mergedB = await backend({ weights: new MemoryWeights(merged) });
  const ids = prompt.slice(0, 10);
  const run = async (mask: number) => {
    const c = await withAdapter.backend.newCache(1);
    return (await withAdapter.backend.step(c, { tokens: [ids], adapterMask: [ids.map(() => mask)], logits: 'all', want: { logits: true } })).logits!;
  };
  assert.ok(maxDiff(await run(1), await allLogits(mergedB, ids)) <= 1e-4);
  assert.ok(maxDiff(await run(0), await allLogits(base, ids)) <= 1e-4);
  assert.ok(maxDiff(await run(1), await run(0)) > 1e-2, 'the adapter changes the logits');
  await Promise.all([withAdapter.close(), base.close(), mergedB.close()]);

  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ r: 0, lora_alpha: 8, target_modules: ['q_proj'] }));
  await assert.rejects(loadModel(model.dir, { adapter: dir }), /adapter_config\.json field "r" must be a positive integer, got 0/);
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ r: 4, lora_alpha: 8, target_modules: ['qkv'] }));
  await assert.rejects(loadModel(model.dir, { adapter: dir }), /target module "qkv" is not supported/);
});

test('generate: worker thread, streaming, batch equals singles, seeded sampling, stop strings', async () => {
  const m = await loadModel(model.dir, { quant: 'fp32' });
  const local = await loadModel(model.dir, { quant: 'fp32', worker: false });
  try {
    const opts = { maxTokens: 12, temperature: 8, topP: 0.95, seed: 5 }; // hot: the test model is peaked
    const pieces: string[] = [];
    const gen = m.generate('Hello there', opts);
    let r = await gen.next();
    while (!r.done) { pieces.push(r.value); r = await gen.next(); }
    assert.equal(pieces.join(''), r.value.text);
    assert.equal(r.value.tokens.length, 12);
    const again = await local.complete('Hello there', opts);
    assert.deepEqual(again.tokens, r.value.tokens, 'same seed, same tokens, in the worker and in-process');
    const other = await local.complete('Hello there', { ...opts, seed: 6 });
    assert.notDeepEqual(other.tokens, r.value.tokens);

    const prompts = ['a', 'the quick brown fox', 'Hello there', '12345'];
    const batch = await m.generateBatch(prompts, prompts.map((_, i) => ({ ...opts, seed: i, maxTokens: 4 + 3 * i })));
    for (let i = 0; i < prompts.length; i++) {
      const single = await local.complete(prompts[i], { ...opts, seed: i, maxTokens: 4 + 3 * i });
      assert.deepEqual(batch[i].tokens, single.tokens, `prompt ${i}`);
      assert.equal(batch[i].tokens.length, 4 + 3 * i);
    }

    const full = await local.complete('Hello there', { maxTokens: 20 });
    const stop = full.text.slice(6, 9);
    const stopped = await local.complete('Hello there', { maxTokens: 20, stop: [stop] });
    assert.equal(stopped.text, full.text.slice(0, full.text.indexOf(stop)));
    assert.equal(stopped.finishReason, 'stop');
  } finally {
    await m.close();
    await local.close();
  }
});

test('prompt lookup (speculative decoding): the tokens and log-probabilities of decoding one by one, greedy and sampled, in fewer steps', async () => {
  // stories260K (a real trained model) repeats its names and phrases, so some guesses hold and some do not.
  const file = path.join(sharedPath('models/stories260K'), 'stories260K.bin');
  for (const worker of [false, true]) {
    const m = await loadModel(file, { quant: 'fp32', worker });
    try {
      let made = 0, kept = 0;
      const settings = [{ maxTokens: 150 }, { maxTokens: 150, temperature: 0.8, seed: 3 }, { maxTokens: 150, temperature: 1, topP: 0.9, minP: 0.02, seed: 4, topLogprobs: 2 },
        { maxTokens: 41 }, { maxTokens: 150, stop: [' park'] }, { maxTokens: 150, temperature: 0.8, seed: 9, stop: ['!'] }];
      for (const p of ['Once upon a time', 'Lily and Ben']) for (const o of settings) {
        const plain = await m.complete(p, o), fast = await m.complete(p, { ...o, promptLookup: 6 });
        const what = `${p} ${JSON.stringify(o)} (${worker ? 'worker' : 'in-thread'})`;
        assert.deepEqual(fast.tokens, plain.tokens, what);
        assert.equal(fast.text, plain.text, what);
        assert.equal(fast.finishReason, plain.finishReason, what);
        assert.ok(maxDiff(Float32Array.from(fast.logprobs), Float32Array.from(plain.logprobs)) < 1e-4, what);
        assert.deepEqual(fast.topLogprobs?.map((t) => t.map(([id]) => id)), plain.topLogprobs?.map((t) => t.map(([id]) => id)), what);
        assert.equal(plain.guesses, undefined);
        made += fast.guesses!.made; kept += fast.guesses!.kept;
      }
      // Guesses were kept (steps saved) and others were not (cut from the cache again): both paths ran.
      assert.ok(kept > 30 && made > kept + 30, `made ${made}, kept ${kept}`);
      // Concurrent calls: a step with guesses beside others goes without them and joins their batched run (the same tokens).
      const starts = ['Once upon a time', 'Lily and Ben', 'The little dog', 'Tom had a red ball'], o = (i: number) => ({ maxTokens: 60, temperature: 0.8, seed: i, promptLookup: 6 });
      const alone: Completion[] = [];
      for (const [i, p] of starts.entries()) alone.push(await m.complete(p, o(i)));
      const co = m.backend as CoalescingBackend, rowsBefore = co.stats.maxRows;
      const together = await Promise.all(starts.map((p, i) => m.complete(p, o(i))));
      together.forEach((c, i) => assert.deepEqual(c.tokens, alone[i].tokens, `${starts[i]}, concurrent (${worker ? 'worker' : 'in-thread'})`));
      const guessed = (cs: typeof alone) => cs.reduce((n, c) => n + c.guesses!.made, 0);
      assert.ok(rowsBefore === 1 && co.stats.maxRows >= 2 && guessed(together) < guessed(alone) / 2, `batched runs, fewer guesses: ${guessed(together)} of ${guessed(alone)}`);
      // A callback that aborts inside a run of kept guesses ends the sequence there, as it does between steps.
      for (const [after, maxTokens] of [[45, 46], [45, 150], [68, 69]]) {
        const stopped = async (promptLookup: number) => {
          const ac = new AbortController();
          let pieces = 0, late = 0, streamed = '';
          const [c] = await m.generateBatch(['Once upon a time'], { maxTokens, promptLookup }, (_, p) => { if (ac.signal.aborted) late++; streamed += p; if (++pieces === after) ac.abort(); }, ac.signal);
          return { tokens: c.tokens, finishReason: c.finishReason, streamed: streamed === c.text, late };
        };
        assert.deepEqual(await stopped(6), await stopped(0), `aborted at piece ${after} of ${maxTokens} (${worker ? 'worker' : 'in-thread'})`);
      }
      // A thinking segment that closes inside a run: the answer's first token is drawn under its constraint.
      const ids = m.tokenizer.encode('Once upon a time'), story = (await m.complete(ids, { maxTokens: 60 })).tokens, zoo = m.tokenizer.encode(' Zoo', { addSpecialTokens: false });
      let closedInRuns = 0;
      for (const end of new Set(story)) {
        const o = { maxTokens: 80, thinking: { end: [end] }, allowedNext: () => zoo };
        const [plain] = await generateBatch(m.backend, m.tokenizer, [[...ids, ...story]], [o]), [fast] = await generateBatch(m.backend, m.tokenizer, [[...ids, ...story]], [{ ...o, promptLookup: 6 }]);
        assert.deepEqual(fast.tokens, plain.tokens, `thinking closed by ${JSON.stringify(m.tokenizer.decode([end]))}`);
        if (fast.guesses!.kept && fast.thinking!.closed) closedInRuns++;
      }
      assert.ok(closedInRuns > 0, 'some segments closed inside a run of kept guesses');
    } finally {
      await m.close();
    }
  }
});

test('a step with a draft samples at each guess\'s position while the guesses hold; a draft is checked', async () => {
  const b = await backend();
  try {
    const greedy = { temperature: 0, u: 0 };
    const c = await b.newCache(1);
    const first = await b.step(c, { tokens: [prompt], sample: [greedy] });
    const next: number[] = [first.tokens![0]];
    for (let i = 0; i < 4; i++) next.push((await b.step(c, { tokens: [[next.at(-1)!]], sample: [greedy] })).tokens![0]);
    await b.truncate(c, 0, prompt.length);
    // [t0 | g1 g2 g3] fed with the guesses g = the greedy tokens: every guess holds, one token more comes after them.
    const all = await b.step(c, { tokens: [[next[0], ...next.slice(1, 4)]], sample: [greedy], draft: [{ tokens: next.slice(1, 4), u: [0, 0, 0] }], logits: 4 });
    assert.deepEqual(all.runs![0]!.map((s) => s.token), next.slice(1, 5));
    assert.equal(all.tokens![0], next[1]);
    assert.deepEqual(await b.lengths(c), [prompt.length + 4], 'every guess stays in the cache');
    await b.truncate(c, 0, prompt.length);
    const wrong = (next[2] + 1) % V; // the second guess is wrong: the run ends with the token drawn there
    const some = await b.step(c, { tokens: [[next[0], next[1], wrong, next[3]]], sample: [greedy], draft: [{ tokens: [next[1], wrong, next[3]], u: [0, 0, 0] }], logits: 'all' });
    assert.deepEqual(some.runs![0]!.map((s) => s.token), next.slice(1, 3));
    assert.deepEqual(await b.lengths(c), [prompt.length + 2], 'the guesses from the wrong one on leave the cache');
    // The next step goes on from there as decoding one by one does.
    assert.equal((await b.step(c, { tokens: [[next[2]]], sample: [greedy] })).tokens![0], next[3]);
    await b.truncate(c, 0, prompt.length);
    await assert.rejects(b.step(c, { tokens: [[next[0]]], sample: [greedy], draft: [{ tokens: [next[0]], u: [0] }], logits: 1 }), /engine: row 0's draft of 1 tokens \(1 draws\) needs a sampled row, more fed tokens than its 1 and more positions of logits than 1/);
    await assert.rejects(b.step(c, { tokens: [[next[0], next[1]]], sample: [greedy], draft: [{ tokens: [next[1]], u: [0] }] }), /more fed tokens than its 2 and more positions of logits than 1/);
    await assert.rejects(b.step(c, { tokens: [[next[0], next[1]]], draft: [{ tokens: [next[1]], u: [0] }], logits: 2 }), /needs a sampled row/);
    const other = (next[1] + 1) % V;
    await assert.rejects(b.step(c, { tokens: [[next[0], next[1]]], sample: [greedy], draft: [{ tokens: [other], u: [0] }], logits: 2 }), new RegExp(`engine: row 0's draft \\[${other}\\] is not the end of its fed tokens \\[${next[0]},${next[1]}\\]`));
    assert.deepEqual(await b.lengths(c), [prompt.length], 'a refused draft runs nothing');
    await b.free(c);
  } finally {
    await b.close();
  }
  const local = await loadModel(model.dir, { quant: 'fp32', worker: false });
  try {
    for (const bad of [-1, 1.5, 65, '4']) await assert.rejects(local.complete('a', { promptLookup: bad as number }), /generate: promptLookup must be an integer in \[0, 64\] \(the most tokens guessed per step; 0 = off\), got/);
  } finally {
    await local.close();
  }
});

test('breaking out of generate() stops decoding', async () => {
  const m = await loadModel(model.dir, { quant: 'fp32', worker: false });
  try {
    let steps = 0;
    const step = m.backend.step.bind(m.backend);
    m.backend.step = (cache, req) => { steps++; return step(cache, req); };
    let first = '';
    for await (const piece of m.generate('Hello there', { maxTokens: 300, stopTokens: [] })) { first = piece; break; }
    assert.notEqual(first, '', 'a first piece of text came');
    const at = steps;
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(steps, at, 'no step after the loop ended');
    assert.ok(at < 20, `${at} steps for one piece of text`);
    // A loop dropped unfinished (one piece taken, no break) lets go of an app's long-lived signal once decoding ends.
    const shared = new AbortController().signal, dropped = m.generate('Hello there', { maxTokens: 30, stopTokens: [], signal: shared });
    await dropped.next();
    assert.equal(getEventListeners(shared, 'abort').length, 1);
    for (let i = 0; i < 100 && getEventListeners(shared, 'abort').length; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(getEventListeners(shared, 'abort').length, 0, 'the signal still holds the dropped generation');
  } finally {
    await m.close();
  }
});

test('a session run onnxruntime fails is an OnnxRuntimeError naming the step (code "onnxruntime_error"), across the worker; the model stays usable, and onnxruntime logs nothing to stderr', async () => {
  // A graph that reshapes input_ids to [1, 1]: it runs steps of one token and fails any longer one inside onnxruntime.
  const g = buildInferenceGraph(model.config, new MemoryWeights(model.weights), { quant: 'fp32' });
  const ids = g.node('Reshape', ['input_ids', g.constant([1, 1])]);
  g.nodes.unshift(g.nodes.pop()!);
  for (const n of g.nodes.slice(1)) n.inputs = n.inputs.map((x) => (x === 'input_ids' ? ids : x));
  const bad = path.join(tmp, 'one-token.onnx');
  fs.writeFileSync(bad, g.toModelProto());
  const script = path.join(tmp, 'ort-fails.mts');
  fs.writeFileSync(script, `import { WorkerBackend } from ${JSON.stringify(new URL('../src/runtime/worker-backend.ts', import.meta.url).pathname)};
const b = await WorkerBackend.create(${JSON.stringify(model.config)}, ${JSON.stringify(bad)}, { hasLora: false, threads: 1 });
const c = await b.newCache(1);
const failed = await b.step(c, { tokens: [[1, 2, 3]] }).then(() => 'ran', (e) => [e.constructor.name, e.code, e.message.split(': ').slice(0, 3).join(': ')]);
const after = await b.step(c, { tokens: [[1]], want: { logits: true } });
console.log(JSON.stringify([failed, after.logits.length]));
await b.close();
`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', script], { cwd: new URL('..', import.meta.url), encoding: 'utf8', timeout: 60_000 });
  assert.deepEqual([r.status, r.stdout.trim(), r.stderr], [0, JSON.stringify([['OnnxRuntimeError', 'onnxruntime_error', "runtime: onnxruntime failed to run the model's graph on 1 row of 3 tokens: Non-zero status code returned while running Reshape node. Name:'edgereason/Reshape_0' Status Message"], model.config.vocabSize]), ''], r.stderr);
});

test('runtime worker: a failed load ends the worker; calls after close() or after the worker exited are refused, none hangs', slow, async () => {
  const junk = () => Uint8Array.from({ length: 64 }, (_, i) => (i * 7) % 256);
  await assert.rejects(within(WorkerBackend.create(model.config, junk(), { hasLora: false, threads: 1 })), /protobuf parsing failed/);
  // A process whose only load failed exits by itself (a live worker thread would keep it running).
  const script = path.join(tmp, 'failed-load.mts'), src = new URL('../src/runtime/worker-backend.ts', import.meta.url).href;
  fs.writeFileSync(script, `import { WorkerBackend } from ${JSON.stringify(src)};\nawait WorkerBackend.create(${JSON.stringify(model.config)}, new Uint8Array(64).fill(7), { hasLora: false, threads: 1 }).catch((e) => console.log('rejected:', e.message));\n`);
  const child = spawnSync(process.execPath, ['--import', 'tsx', script], { cwd: new URL('..', import.meta.url), encoding: 'utf8', timeout: 30_000 });
  assert.equal(child.signal, null, `the process did not exit by itself: ${child.stderr}`);
  assert.match(child.stdout, /rejected: .*protobuf parsing failed/);
  // An idle model does not keep the process alive (a script that forgets close() still exits), and a timer's
  // later call still works: the worker is referenced while a call is in flight.
  const forgot = path.join(tmp, 'no-close.mts'), lib = new URL('../src/runtime/model.ts', import.meta.url).href;
  fs.writeFileSync(forgot, `import { loadModel } from ${JSON.stringify(lib)};\nconst m = await loadModel(${JSON.stringify(model.dir)}, { quant: 'fp32', threads: 1 });\nconsole.log('first', (await m.complete('Hello', { maxTokens: 3 })).tokens.length);\nawait m.backend.setAdapter(new Map([['x', { a: () => 1 }]])).catch((e) => console.log('refused', e.name));\nsetTimeout(async () => console.log('later', (await m.complete('Hi', { maxTokens: 2 })).tokens.length), 50);\n`);
  const idle = spawnSync(process.execPath, ['--import', 'tsx', forgot], { cwd: new URL('..', import.meta.url), encoding: 'utf8', timeout: 60_000 });
  assert.equal(idle.signal, null, `the process did not exit by itself: ${idle.stderr}`);
  assert.equal(idle.stdout, 'first 3\nrefused DataCloneError\nlater 2\n', 'a value the worker cannot be sent is refused, and keeps nothing alive');

  // process.exit() while the worker is inside a session run exits with the code given (it used to abort: SIGABRT).
  const exiting = path.join(tmp, 'exit-mid-run.mts');
  fs.writeFileSync(exiting, `import { loadModel } from ${JSON.stringify(lib)};\nconst m = await loadModel(${JSON.stringify(model.dir)}, { quant: 'fp32', threads: 1 });\nlet n = 0;\nfor await (const _ of m.generate('Hello', { maxTokens: 200, temperature: 1, stopTokens: [] })) if (++n === 3 + Number(process.argv[2])) setImmediate(() => process.exit(3));\n`);
  const codes = [0, 1, 2, 3, 4, 5].map((k) => spawnSync(process.execPath, ['--import', 'tsx', exiting, String(k)], { cwd: new URL('..', import.meta.url), encoding: 'utf8', timeout: 60_000 }))
    .map((r) => r.signal ?? r.status);
  assert.deepEqual(codes, [3, 3, 3, 3, 3, 3]);

  // The worker exits under the backend (a crash): calls in flight settle, later ones are refused with the exit code.
  const b = await WorkerBackend.create(model.config, graphBytes(), { hasLora: false, threads: 1 });
  const c = await b.newCache(1);
  // An error inside the worker comes back with the caller's frames in its stack and the worker's error as its cause.
  const failing = async function callerOfSetAdapter() { await b.setAdapter(new Map()); };
  await assert.rejects(failing(), (e: Error) => e.message === 'engine: this model was built without LoRA inputs; load it with an adapter, or with loadModel\'s loraTargets (or convert it with --lora-targets) naming the projections adapters will use'
    && /at async callerOfSetAdapter/.test(e.stack ?? '') && /at Engine\.setAdapter/.test((e.cause as Error)?.stack ?? ''));
  // (Calls that run no session: terminating a worker inside onnxruntime's run aborts the whole process.)
  const inFlight = [b.lengths(c), b.lengths(c)];
  // within(): once both calls have answered, the idle worker is unref'd, and nothing else would keep the event loop
  // alive until its exit event (the test runner then cancels the file: CI saw it once).
  await within((b as unknown as { worker: Worker }).worker.terminate());
  for (const r of await within(Promise.allSettled(inFlight))) if (r.status === 'rejected') assert.match(r.reason.message, /runtime worker exited with code 1/);
  await assert.rejects(within(b.lengths(c)), (e: unknown) => e instanceof RuntimeFailedError && e.message === 'runtime worker exited with code 1' && e.code === 'runtime_failed'); // for an app to branch on (reload the model)
  assert.equal(b.failed, 'runtime worker exited with code 1', 'said failed (the server\'s /health reads it)');
  await within(b.close());

  // close(): calls made from then on are refused at once; the ones before it settle.
  const b2 = await WorkerBackend.create(model.config, graphBytes(), { hasLora: false, threads: 1 });
  const c2 = await b2.newCache(1), before = b2.lengths(c2), closing = b2.close();
  await assert.rejects(within(b2.step(c2, { tokens: [[1]] })), /runtime: model is closed/);
  await within(Promise.all([closing, b2.close(), Promise.allSettled([before])]));
  await assert.rejects(within(b2.lengths(c2)), /runtime: model is closed/);
  assert.equal(b2.failed, undefined, 'closed is not failed');
});

test('the graph\'s log-normaliser (logits_lse) equals log Σ exp of its logits; sampled log-probabilities use it', async () => {
  const b = await backend();
  try {
    const c = await b.newCache(2);
    const sample = [{ temperature: 0.9, topK: 5, u: 0.3 }, { u: 0 }];
    const r = await b.step(c, { tokens: [[5, 9, 11], [7, 3, 2]], logits: 'all', want: { logits: true }, sample });
    const out = await b.engine.step(b.engine.newCache(1), { tokens: [[5, 9, 11]], logits: 'all' });
    assert.ok(out.lse && out.lse.length === 3, 'one normaliser per returned position');
    for (let t = 0; t < 3; t++) {
      const row = out.logits.subarray(t * V, (t + 1) * V), max = Math.max(...row);
      const lse = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
      assert.ok(Math.abs(out.lse[t] - lse) < 1e-4, `position ${t}: ${out.lse[t]} vs ${lse}`);
    }
    // The sampled tokens' log-probabilities equal the ones computed from the logits alone.
    sample.forEach((p, row) => {
      const last = r.logits!.subarray((row * 3 + 2) * V, (row * 3 + 3) * V), ref = sampleToken(last, p, p.u);
      assert.equal(r.tokens![row], ref.token);
      assert.ok(Math.abs(r.logprobs![row] - ref.logprob) < 1e-4, `row ${row}: ${r.logprobs![row]} vs ${ref.logprob}`);
    });
    await b.free(c);
  } finally {
    await b.close();
  }
});

test('a GGUF\'s Q4_0 / Q8_0 blocks are taken exactly as stored, also those a second rounding would change', () => {
  const n = 3, k = 64, r = rng(4), blocks = (n * k) / 32;
  // Blocks as an importance matrix may leave them: Q4_0 codes 1..15 (none at −8), Q8_0 codes within ±100.
  for (const [type, bits, size] of [['Q4_0', 4, 18], ['Q8_0', 8, 34]] as const) {
    const raw = new Uint8Array(blocks * size);
    for (let b = 0; b < blocks; b++) {
      const d = f32ToF16Bits(0.01 + 0.1 * r.uniform());
      raw[b * size] = d & 0xff; raw[b * size + 1] = d >> 8;
      for (let j = 2; j < size; j++) raw[b * size + j] = bits === 4 ? (1 + Math.floor(15 * r.uniform())) | ((1 + Math.floor(15 * r.uniform())) << 4) : (Math.floor(201 * r.uniform()) - 100) & 0xff;
    }
    const stored = decodeGgml(type, raw, n * k), q = blocksFromGgml(type, raw, n, k, bits)!;
    const back = Float32Array.from({ length: n * k }, (_, i) => {
      const code = bits === 4 ? (q.packed[i >> 1] >> (4 * (i & 1))) & 0xf : q.packed[i];
      return (code - (bits === 4 ? 8 : 128)) * q.scales[i >> 5];
    });
    assert.deepEqual(back, stored, `${type}: the blocks hold the file's values`);
    const again = quantizeBlocks(stored, n, k, bits);
    assert.ok(again.packed.some((x, i) => x !== q.packed[i]) || again.scales.some((x, i) => x !== q.scales[i]), `${type}: rounding again would change them`);
    assert.equal(blocksFromGgml(type === 'Q4_0' ? 'Q8_0' : 'Q4_0', raw, n, k, bits), undefined);
    // A corrupt block's scale (fp16 Inf or NaN) is refused by file and tensor name (the GGUF's: a load gives its
    // encoded().where; it said the Hugging Face name, without the file), as the decoded weights would be.
    for (const [bitsOf, shown] of [[0x7c00, 'Infinity'], [0x7e00, 'NaN']] as const) {
      const bad = raw.slice();
      bad[4 * size] = bitsOf & 0xff; bad[4 * size + 1] = bitsOf >> 8;
      assert.throws(() => blocksFromGgml(type, bad, n, k, bits, 'm.gguf: tensor "blk.0.ffn_up.weight"'), { message: `m.gguf: tensor "blk.0.ffn_up.weight" (${type}) holds the scale ${shown} in block 4: weights must be finite (the file is corrupt)` });
    }
  }
});

test('q4: token embeddings are the Q4_0-dequantised rows of the one 4-bit table the tied lm_head reads', async () => {
  const g = new Graph(), weights = new MemoryWeights(model.weights);
  const L = new Layers(g, model.config, weights, { quant: 'q4', accuracyLevel: 4, fused: true, loraTargets: [], weightsAsInputs: false });
  const ids = g.input('ids', 'int64', ['batch', 'tokens']);
  g.nodeN('Identity', [L.embed(ids)], {}, { names: ['rows'] });
  g.output('rows', 'float32', ['batch', 'tokens', model.config.hiddenSize]);
  lmHead(L, g.input('h', 'float32', ['batch', model.config.hiddenSize]));
  assert.deepEqual([...g.initializers.keys()].filter((n) => n.includes('embed_tokens')), ['model.embed_tokens.weight_q4', 'model.embed_tokens.weight_scales'], 'one table: no fp16 copy');
  const session = await ort.InferenceSession.create(g.toModelProto(), { intraOpNumThreads: 1 });
  const picks = [0, 7, V - 1], H = model.config.hiddenSize, table = weights.get('model.embed_tokens.weight');
  const out = await session.run({ ids: new ort.Tensor('int64', BigInt64Array.from(picks.map(BigInt)), [1, 3]), h: new ort.Tensor('float32', new Float32Array(H), [1, H]) }, ['rows']);
  const rows = out.rows.data as Float32Array;
  picks.forEach((id, i) => {
    const { q, scales } = quantizeQ4_0(table.slice(id * H, (id + 1) * H));
    const want = Float32Array.from(q, (v, j) => (v - 8) * scales[Math.floor(j / 32)]);
    assert.ok(maxDiff(rows.subarray(i * H, (i + 1) * H), want) < 1e-6, `row ${id}`);
  });
  await session.release();
});

test('promptLogprobs: each prompt token\'s log-probability given the ones before it, in chunks of positions, as one prefill of them all gives it', async () => {
  const m = await loadModel(path.join(import.meta.dirname, '../models/default'), { quant: 'fp32', worker: false });
  try {
    const prompt = 'Emma has 12 apples. She buys 7 more and gives 3 to Liam. Then she buys twice as many as she gave away. '.repeat(7);
    const ids = m.encode(prompt, false), V = m.config.vocabSize;
    assert.ok(ids.length > 130, 'across several chunks of 64');
    const got = await m.promptLogprobs(prompt, { topLogprobs: 3 });
    const cache = await m.backend.newCache(1), all = await m.backend.step(cache, { tokens: [ids], logits: 'all', want: { logits: true } });
    await m.backend.free(cache);
    const want = ids.map((_, i) => {
      if (i === 0) return null;
      const row = all.logits!.subarray((i - 1) * V, i * V), max = Math.max(...row);
      return row[ids[i]] - max - Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
    });
    assert.deepEqual(got.tokens, ids);
    assert.equal(got.logprobs[0], null);
    assert.ok(got.logprobs.every((v, i) => i === 0 || Math.abs(v! - want[i]!) < 1e-4), 'matches the single prefill');
    assert.ok(got.top.slice(1).every((t, i) => t.length === 3 && t[0][1] >= t[1][1] && t[1][1] >= t[2][1] && got.logprobs[i + 1]! <= t[0][1] + 1e-6));
    await assert.rejects(m.promptLogprobs(''), /^Error: promptLogprobs: the prompt encodes to no tokens: nothing to score$/);
    // OpenAI's spelling of the option, and a chat that is not true or false, are refused (they read as none and as true).
    await assert.rejects(m.promptLogprobs(prompt, { top_logprobs: 3 } as object), /^Error: promptLogprobs: unknown option "top_logprobs" \(options: chat, chatTemplateKwargs, topLogprobs\)$/);
    await assert.rejects(m.promptLogprobs(prompt, { chat: 'no' as never }), /^Error: promptLogprobs: chat must be true or false, got "no"$/);
    await assert.rejects(m.keepPrompt(prompt, { chat: 'no' as never }), /^Error: keepPrompt: chat must be true or false, got "no"$/);
  } finally {
    await m.close();
  }
});

test('promptLogprobs: an activated adapter acts where generate\'s would — from a raw prompt\'s last invocation, in a chat prompt only from a trailing one', async () => {
  const dir = path.join(import.meta.dirname, '../models/default');
  const base = await loadModel(dir, { quant: 'fp32', worker: false }), m = await loadModel(dir, { quant: 'fp32', worker: false, adapter: path.join(dir, 'reasoning-adapter') });
  try {
    const user = 'Think first. <think> Emma has 12 apples and buys 7 more. How many apples does Emma have?';
    const far = (a: (number | null)[], b: (number | null)[]) => Math.max(...a.map((v, i) => (v === null ? 0 : Math.abs(v - b[i]!))));
    // The user's own "<think>" in a chat prompt does not invoke the adapter: the base model's log-probabilities.
    const chat = await m.promptLogprobs(user, { chat: true }), plain = await base.promptLogprobs(user, { chat: true });
    assert.deepEqual(chat.tokens, plain.tokens);
    assert.ok(far(chat.logprobs, plain.logprobs) < 1e-5, `chat prompt scored as the base model: ${far(chat.logprobs, plain.logprobs)}`);
    // The same text as a raw prompt invokes it from there: after it the adapter's log-probabilities, before it the base's.
    const raw = await m.promptLogprobs(user), rawBase = await base.promptLogprobs(user), at = raw.tokens.indexOf(m.encode('<think>', false).at(-1)!);
    assert.ok(at > 0 && far(raw.logprobs.slice(0, at + 1), rawBase.logprobs.slice(0, at + 1)) < 1e-5, 'base up to the invocation');
    assert.ok(far(raw.logprobs.slice(at + 1), rawBase.logprobs.slice(at + 1)) > 1e-2, 'the adapter after it');
  } finally {
    await Promise.all([base.close(), m.close()]);
  }
});

test('generate: a raw prompt holding an activated adapter\'s invocation as other tokens (" Reason:\\n" in Qwen\'s BPE, as " <think>\\n" where "<think>" is no token) is told so, not "does not contain it"', async () => {
  const tok = loadTokenizer(model.dir), inv = tok.encode('Reason:\n', { addSpecialTokens: false }), c = model.config;
  assert.ok(inv.length > 1, 'the invocation is several tokens in this vocabulary');
  const dir = path.join(tmp, 'alora-bpe'), a = new Float32Array(2 * c.hiddenSize), b = new Float32Array(c.numHeads * c.headDim * 2);
  saveAdapter(dir, { r: 2, loraAlpha: 2, targets: ['q_proj'], aloraInvocationTokens: inv }, new Map(Array.from({ length: c.numLayers }, (_, l) => [`model.layers.${l}.self_attn.q_proj`, { a, b }])), c.numLayers);
  const m = await loadModel(model.dir, { adapter: dir, worker: false, quant: 'fp32' });
  try {
    assert.notDeepEqual(tok.encode('A: Reason:\n', { addSpecialTokens: false }).slice(-inv.length), inv, 'a space before it joins it otherwise');
    await assert.rejects(m.complete('Q: 2+2?\nA: Reason:\n', { adapter: true, maxTokens: 1 }), { message: `generate: the adapter ${dir} is activated LoRA: it acts from its invocation "Reason:\\n" on, and the raw prompt holds its text but not its tokens [${inv.join(', ')}] (the text around it joins it into other tokens, as a space before it does: put it on a line of its own, use chat: true, which appends it, or answer())` });
    await assert.rejects(m.complete('Q: 2+2?', { adapter: true, maxTokens: 1 }), /the raw prompt does not contain it \(end the prompt with it, use chat: true/);
    assert.equal((await m.complete('Q: 2+2?\nA:\nReason:\n', { adapter: true, maxTokens: 1 })).tokens.length, 1, 'on a line of its own it invokes the adapter');
  } finally {
    await m.close();
  }
});

test('sampler: greedy, top-k, top-p and min-p select exactly the expected tokens', () => {
  const logits = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
  assert.equal(sampleToken(logits, {}, 0.99).token, 0);
  assert.equal(sampleToken(logits, { temperature: 1, topK: 1 }, 0.99).token, 0);
  // Probabilities 0.5/0.3/0.15/0.05: u walks the cumulative mass.
  assert.equal(sampleToken(logits, { temperature: 1 }, 0.49).token, 0);
  assert.equal(sampleToken(logits, { temperature: 1 }, 0.51).token, 1);
  assert.equal(sampleToken(logits, { temperature: 1 }, 0.97).token, 3);
  // topLogprobs: the k most likely tokens with their log-probabilities (the model's, whatever the temperature), best first.
  const top = (p: Parameters<typeof sampleToken>[1], u = 0.97) => sampleToken(logits, { ...p, topLogprobs: 3 }, u).top!.map(([t, v]) => [t, Math.round(Math.exp(v) * 1e6) / 1e6]);
  for (const p of [{}, { temperature: 1 }, { temperature: 0.3, topK: 2 }, { temperature: 1, topP: 0.6 }]) assert.deepEqual(top(p), [[0, 0.5], [1, 0.3], [2, 0.15]], JSON.stringify(p));
  assert.deepEqual(sampleToken(logits, { temperature: 1, topLogprobs: 9 }, 0.97), { token: 3, logprob: sampleToken(logits, { temperature: 1 }, 0.97).logprob, top: sampleToken(logits, { topLogprobs: 4 }, 0).top });
  assert.equal(sampleToken(logits, { temperature: 1 }, 0.97).top, undefined);
  // An allow list limits the draw, not the distribution reported: the token drawn among 2 and 3, its value and the top tokens the model's.
  const held = sampleToken(logits, { topLogprobs: 2 }, 0, undefined, undefined, [2, 3]);
  assert.deepEqual([held.token, Math.round(Math.exp(held.logprob) * 1e6) / 1e6, held.top!.map(([t, v]) => [t, Math.round(Math.exp(v) * 1e6) / 1e6])], [2, 0.15, [[0, 0.5], [1, 0.3]]]);
  assert.equal(sampleToken(logits, { temperature: 1 }, 0.99, undefined, undefined, [1, 2]).token, 2);
  // Greedy under an allow list (the JSON constraint's lists come in any order): the best allowed token, a tie to the lower
  // id, its log-probability the model's (from the graph's normaliser when given, as without a list).
  const tied = Float32Array.from([1, 3, 3, 2]);
  for (const lse of [undefined, Math.log(Math.E + 2 * Math.E ** 3 + Math.E ** 2)]) {
    const g = sampleToken(tied, {}, 0, lse, undefined, Int32Array.from([3, 2, 1]));
    assert.deepEqual([g.token, Math.round(g.logprob * 1e6) / 1e6], [1, Math.round((3 - Math.log(Math.E + 2 * Math.E ** 3 + Math.E ** 2)) * 1e6) / 1e6]);
  }
  assert.equal(sampleToken(tied, {}, 0, undefined, undefined, [0, 3]).token, 3);
  assert.throws(() => sampleToken(Float32Array.from([NaN, 1]), {}, 0, undefined, undefined, [0]), /^Error: sampler: the model's logits are not finite \(all NaN\)/);
  // top-p 0.8 keeps {0,1} (mass 0.8): u = 0.97 of 0.8 lands on token 1.
  assert.equal(sampleToken(logits, { temperature: 1, topP: 0.8 }, 0.97).token, 1);
  // min-p 0.4 drops tokens below 0.2 (=0.4×0.5): keeps {0,1}.
  assert.equal(sampleToken(logits, { temperature: 1, minP: 0.4 }, 0.97).token, 1);
  assert.equal(sampleToken(logits, { temperature: 1, topK: 3 }, 0.99).token, 2);
  assert.ok(Math.abs(sampleToken(logits, { temperature: 1 }, 0.6).logprob - Math.log(0.3)) < 1e-6);
  assert.ok(Math.abs(sampleToken(logits.map((x) => x + 40), {}, 0).logprob - Math.log(0.5)) < 1e-6, 'greedy reports the model log-probability');
  const a = seededRandom(42), b = seededRandom(42);
  assert.deepEqual([a(), a(), a()], [b(), b(), b()]);
});

test('repetition penalty: logits of tokens in the prompt or the output are divided by it (multiplied where negative), as transformers does, at every step', async () => {
  const logits = Float32Array.from([3, 1, 2.5, -1]), before = logits.slice();
  const r = sampleToken(logits, { repetitionPenalty: 2 }, 0, undefined, [0, 3]); // [1.5, 1, 2.5, -2]
  const lse = Math.log([1.5, 1, 2.5, -2].reduce((a, x) => a + Math.exp(x), 0));
  assert.deepEqual([r.token, Math.abs(r.logprob - (2.5 - lse)) < 1e-6], [2, true], 'greedy on the penalised logits, their log-probability');
  assert.deepEqual(logits, before, 'the logits themselves are left as they are');
  assert.deepEqual([sampleToken(logits, { repetitionPenalty: 2 }, 0).token, sampleToken(logits, { repetitionPenalty: 1 }, 0, undefined, [0]).token], [0, 0], 'nothing seen, or 1: no penalty');
  // Greedy decoding with the penalty equals a reference loop over the model's own logits, recomputed for the whole
  // sequence each step, with the prompt and the output so far penalised.
  const b = await backend(), tok = loadTokenizer(model.dir), ids = prompt.slice(0, 8), rp = 1e4; // the test model is peaked: only a large penalty moves its picks
  try {
    const out: number[] = [];
    for (let i = 0; i < 10; i++) {
      const all = await allLogits(b, [...ids, ...out]), last = Array.from(all.subarray((ids.length + out.length - 1) * V, (ids.length + out.length) * V));
      for (const t of new Set([...ids, ...out])) last[t] = last[t] > 0 ? last[t] / rp : last[t] * rp;
      out.push(last.indexOf(Math.max(...last)));
    }
    const [got] = await generateBatch(b, tok, [ids], [{ maxTokens: 10, repetitionPenalty: rp, stopTokens: [] }]);
    const [plain] = await generateBatch(b, tok, [ids], [{ maxTokens: 10, stopTokens: [] }]);
    assert.deepEqual(got.tokens, out);
    assert.notDeepEqual(plain.tokens, out, 'the penalty changed what greedy decoding picks');
    assert.throws(() => new Sequence(tok, { repetitionPenalty: 0 }, 1), /generate: repetitionPenalty must be a finite number > 0 \(1 = off\), got 0/);
  } finally {
    await b.close();
  }
});

test('presence and frequency penalties (OpenAI\'s): the output\'s tokens lose the presence penalty once and the frequency penalty per occurrence, at every step; the prompt\'s are not counted', async () => {
  const logits = Float32Array.from([3, 1, 2.5, -1]), before = logits.slice();
  // token 0 twice in the output, token 2 once: [3 - 0.5 - 2 × 0.75, 1, 2.5 - 0.5 - 0.75, -1] = [1, 1, 1.25, -1]
  const r = sampleToken(logits, { presencePenalty: 0.5, frequencyPenalty: 0.75 }, 0, undefined, undefined, undefined, { ids: [0, 2], n: [2, 1] });
  const lse = Math.log([1, 1, 1.25, -1].reduce((a, x) => a + Math.exp(x), 0));
  assert.deepEqual([r.token, Math.abs(r.logprob - (1.25 - lse)) < 1e-6], [2, true], 'greedy on the penalised logits, their log-probability');
  assert.deepEqual(logits, before, 'the logits themselves are left as they are');
  assert.equal(sampleToken(logits, { presencePenalty: -2, frequencyPenalty: -1 }, 0, undefined, undefined, undefined, { ids: [1], n: [1] }).token, 1, 'a negative penalty favours what was written');
  // Greedy decoding with the penalties equals a reference loop over the model's own logits, recomputed for the whole
  // sequence each step, with the output's counts so far subtracted.
  // (The embedded model: the random one's picks lead by more than the penalties' range.) A prompt it answers "I am
  // fine, thank you, thank you, thank you, …" after.
  const m = await loadModel(path.join(import.meta.dirname, '../models/default'), { quant: 'fp32', worker: false }), W = m.config.vocabSize, pp = 0.5, fp = 1;
  const ids = m.encode('At first, Ella has 5 marbles. Ella sells 3 marbles. Leo gives her 3 marbles. How many marbles does Ella end up with?', true, { enable_thinking: false });
  try {
    const out: number[] = [];
    for (let i = 0; i < 16; i++) {
      const all = await allLogits(m.backend, [...ids, ...out]), last = Array.from(all.subarray((ids.length + out.length - 1) * W, (ids.length + out.length) * W));
      for (const t of new Set(out)) last[t] -= pp + fp * out.filter((x) => x === t).length;
      out.push(last.indexOf(Math.max(...last)));
    }
    const [got] = await generateBatch(m.backend, m.tokenizer, [ids], [{ maxTokens: 16, presencePenalty: pp, frequencyPenalty: fp, stopTokens: [] }]);
    const [plain] = await generateBatch(m.backend, m.tokenizer, [ids], [{ maxTokens: 16, stopTokens: [] }]);
    assert.deepEqual(got.tokens, out);
    assert.deepEqual([plain.text, got.text], ['I am fine, thank you, thank you, thank you, thank you,', 'I am fine, thank you, thank you, Ella! How can I help'], 'the penalties changed what greedy decoding picks');
    assert.throws(() => new Sequence(m.tokenizer, { frequencyPenalty: 2.5 }, 1), /^Error: generate: frequencyPenalty must be a number in \[-2, 2\] \(0 = off\), got 2\.5$/);
  } finally {
    await m.close();
  }
});

test('minTokens (vLLM\'s min_tokens): before that many tokens the end tokens are not drawn and stop strings do not end the text; greedy equals a reference loop with the end tokens masked', async () => {
  const m = await loadModel(path.join(import.meta.dirname, '../models/default'), { quant: 'fp32', worker: false }), W = m.config.vocabSize;
  const q = 'Can you help me? Tell me the capital of Jastow. Just the answer, please.', ids = m.encode(q, true), ends = new Set(m.tokenizer.eosTokenIds);
  try {
    const out: number[] = [], lps: number[] = [];
    for (let i = 0; i < 12; i++) {
      const all = await allLogits(m.backend, [...ids, ...out]), last = Array.from(all.subarray((ids.length + out.length - 1) * W, (ids.length + out.length) * W));
      const top = Math.max(...last), lse = top + Math.log(last.reduce((a, x) => a + Math.exp(x - top), 0)); // the model's own distribution
      if (out.length < 6) for (const t of ends) last[t] = -Infinity;
      const t = last.indexOf(Math.max(...last));
      if (ends.has(t)) break;
      out.push(t);
      lps.push(last[t] - lse);
    }
    const plain = await m.complete(q, { chat: true, maxTokens: 12 }), min = await m.complete(q, { chat: true, maxTokens: 12, minTokens: 6 });
    assert.deepEqual([plain.text, plain.finishReason], ['Pirra', 'stop'], 'a one-word answer without it');
    assert.deepEqual([min.tokens, min.finishReason], [out, 'stop']);
    // The log-probabilities reported are the model's (as vLLM's), not renormalised without the end tokens.
    assert.ok(min.logprobs.every((lp, i) => Math.abs(lp - lps[i]) < 1e-4), `${min.logprobs} vs ${lps}`);
    assert.ok(lps[1] < -1, 'the second token is one the model did not want (its end token was)');
    assert.ok(out.length >= 6 && min.text.startsWith('Pirra'), min.text);
    // A stop string within the first 6 tokens ("r" of "Pirra") is passed over, also later; one after them ends the text.
    const at = min.text.lastIndexOf(' '), tail = min.text.slice(at + 1);
    const first6 = m.tokenizer.decode(out.slice(0, 6));
    assert.deepEqual([first6.includes('r'), min.text.slice(first6.length).includes('r')], [true, false], min.text);
    assert.equal((await m.complete(q, { chat: true, maxTokens: 12, minTokens: 6, stop: 'r' })).text, min.text);
    assert.equal((await m.complete(q, { chat: true, maxTokens: 12, minTokens: 6, stop: tail })).text, min.text.slice(0, at + 1));
    // A stop string never ends the text within the first minTokens tokens, nor later from there (a stop of another
    // length, or a token without text, once let one found there cut the text), and what streams is the text returned.
    for (const stop of [['er', 'help'], ['r'], ['e', 'second'], ['ra', ' I']]) {
      for (let k = 1; k <= 7; k++) {
        let streamed = '';
        const r = await m.complete(q, { chat: true, maxTokens: 12, minTokens: k, stop }), [again] = await generateBatch(m.backend, m.tokenizer, [ids], [{ maxTokens: 12, minTokens: k, stop }], (_, piece) => { streamed += piece; });
        const first = m.tokenizer.decode(r.tokens.slice(0, k), { skipSpecialTokens: true });
        assert.ok(r.text.startsWith(first) && r.tokens.length >= k, `${stop} ${k}: ${JSON.stringify(r.text)}`);
        assert.deepEqual([again.text, streamed], [r.text, r.text], `${stop} ${k}`);
      }
    }
    // ignoreEos: no end token ends it, a stop string does.
    const full = await m.complete(q, { chat: true, maxTokens: 10, ignoreEos: true });
    assert.deepEqual([full.tokens.length, full.finishReason, full.tokens.slice(0, out.length)], [10, 'length', out]);
    const word = full.text.split(' ')[3], cut = await m.complete(q, { chat: true, maxTokens: 10, ignoreEos: true, stop: word });
    assert.deepEqual([cut.text, cut.finishReason], [full.text.slice(0, full.text.indexOf(word)), 'stop']);
    await assert.rejects(m.complete(q, { maxTokens: 4, minTokens: 5 }), /^Error: generate: minTokens \(5\) is more than maxTokens \(4\)$/);
    await assert.rejects(m.complete(q, { minTokens: 300 }), /^Error: generate: minTokens \(300\) is more than maxTokens \(256, the default\)$/);
    await assert.rejects(answer(m, q, { minTokens: 600 }), /^Error: answer: minTokens \(600\) is more than maxTokens \(512, the default\)$/);
    // Cancelled before it began: no error (a cancelled answer never throws).
    assert.equal((await answer(m, q, { minTokens: 5, signal: AbortSignal.abort() })).finishReason, 'cancelled');
    // Near the context's end, minTokens comes down with the room left.
    const long = m.encode('x '.repeat(m.config.maxPositionEmbeddings), false).slice(0, m.config.maxPositionEmbeddings - 5);
    const [edge] = await generateBatch(m.backend, m.tokenizer, [long], [{ maxTokens: 10, minTokens: 8 }]);
    assert.deepEqual([edge.tokens.length, edge.finishReason], [5, 'length']);
    await assert.rejects(m.complete(q, { minTokens: 1.5 }), /^Error: generate: minTokens must be an integer ≥ 0, got 1\.5$/);
    await assert.rejects(m.complete(q, { chat: true, minTokens: 2, json: true }), /minTokens cannot go with a constraint on the answer/);
  } finally {
    await m.close();
  }
});

test('loadModel builds a checkpoint of 10M parameters and up in its worker (the main thread stays free): the same logits as built here, RoPE scaling too, progress reported', async () => {
  const mid = makeRandomQwen2({ dir: path.join(tmp, 'mid'), seed: 21, gguf: false, config: { vocabSize: 32768, hiddenSize: 256, intermediateSize: 512, numLayers: 4, numHeads: 4, numKvHeads: 2, headDim: 64 } });
  assert.ok(parameterCount(mid.config) >= BUILD_IN_WORKER);
  const ids = [1, 2, 3, 4, 5, 6, 7, 8];
  for (const ropeScaling of [undefined, { type: 'linear' as const, factor: 2 }]) {
    const progress: [number, number][] = [];
    const inWorker = await loadModel(mid.dir, { cache: 'never', ropeScaling, onProgress: (d, t) => progress.push([d, t]) });
    const here = await loadModel(mid.dir, { cache: 'never', ropeScaling, worker: false });
    try {
      assert.ok(maxDiff(await allLogits(inWorker.backend, ids), await allLogits(here.backend, ids)) <= 1e-5);
      assert.ok(progress.length > 1 && progress.at(-1)![0] === progress.at(-1)![1], JSON.stringify(progress.slice(-3)));
    } finally {
      await Promise.all([inWorker.close(), here.close()]);
    }
  }
  // A progress callback that throws fails the load (as where the graph is built on the caller's thread), with no worker left.
  await assert.rejects(loadModel(mid.dir, { cache: 'never', onProgress: () => { throw new Error('the app\'s bar broke'); } }), /^Error: the app's bar broke$/);
});

test('loadModel builds the tokenizer while the worker loads the session, and still refuses one that is not the model\'s (the session closed; before a conversion, not after it), and an adapter invoked past its vocabulary', async () => {
  const dir = path.join(tmp, 'lazy-tokenizer'), cacheDir = path.join(tmp, 'lazy-tokenizer-cache'), tokFile = path.join(dir, 'tokenizer.json');
  fs.cpSync(model.dir, dir, { recursive: true });
  const tj = JSON.parse(fs.readFileSync(tokFile, 'utf8')), vocab = { ...tj.model.vocab, zzzz: V + 74 };
  const another = (file: string) => ({ message: `model: ${file} has token ids up to ${V + 74}, but the model's embedding has ${V} rows: the tokenizer belongs to another model` });
  fs.writeFileSync(tokFile, JSON.stringify({ ...tj, model: { ...tj.model, vocab } }));
  // A conversion into the cache is not begun (nothing written), where the tokenizer would be refused after it.
  await assert.rejects(loadModel(dir, { cache: 'always', cacheDir, quant: 'q4' }), another(tokFile));
  assert.deepEqual(fs.existsSync(path.join(cacheDir, 'converted')) ? fs.readdirSync(path.join(cacheDir, 'converted')) : [], []);
  // A converted folder's session loads on the worker meanwhile: closed once the tokenizer is refused.
  const out = path.join(tmp, 'lazy-tokenizer-converted'), closed = mock.method(WorkerBackend.prototype, 'close');
  try {
    fs.writeFileSync(tokFile, JSON.stringify(tj));
    convertModel(openSource(dir), out, { quant: 'q4' });
    const outTok = path.join(out, 'tokenizer.json');
    fs.writeFileSync(outTok, JSON.stringify({ ...tj, model: { ...tj.model, vocab } }));
    await assert.rejects(loadModel(out), another(outTok));
    assert.equal(closed.mock.callCount(), 1, 'the session loaded meanwhile is closed');
  } finally {
    closed.mock.restore();
  }
  // Within the embedding but past the tokenizer's tokens (this one without its last four, "<think>" among them: the
  // embedding's rows past it are padding, as Qwen's are): checked against the tokenizer built meanwhile.
  fs.writeFileSync(tokFile, JSON.stringify({ ...tj, added_tokens: tj.added_tokens.filter((t: { id: number }) => t.id < V - 4) }));
  const c = model.config, inv = [V - 2], adapter = path.join(tmp, 'lazy-tokenizer-adapter'), a = new Float32Array(2 * c.hiddenSize), b = new Float32Array(c.numHeads * c.headDim * 2);
  saveAdapter(adapter, { r: 2, loraAlpha: 2, targets: ['q_proj'], aloraInvocationTokens: inv }, new Map(Array.from({ length: c.numLayers }, (_, l) => [`model.layers.${l}.self_attn.q_proj`, { a, b }])), c.numLayers);
  await assert.rejects(loadModel(dir, { adapter, quant: 'fp32' }), { message: `adapter: ${path.join(adapter, 'adapter_config.json')} field "alora_invocation_tokens" holds token id ${V - 2}, outside the model's vocabulary (0..${V - 5}, its tokenizer's; the embedding's rows past it are padding): the adapter belongs to another model` });
  const m = await loadModel(dir, { quant: 'fp32' });
  try {
    assert.equal(m.tokenizer.vocabSize, V - 4);
    assert.deepEqual((await m.complete('Hello', { maxTokens: 3, stopTokens: [] })).tokens.length, 3);
  } finally {
    await m.close();
  }
});

test('a prompt of megabytes is refused before it is tokenized (ContextLengthError), where the tokenizer bounds the characters a token spans', async () => {
  const m = await loadModel(path.join(import.meta.dirname, '../models/default'), { worker: false });
  try {
    const big = 'Ella has 5 marbles. '.repeat(50_000), ctx = m.config.maxPositionEmbeddings; // 1 MB
    let encoded = 0;
    const encode = m.tokenizer.encode.bind(m.tokenizer);
    m.tokenizer.encode = (...a) => { encoded++; return encode(...a); };
    const longest = 13; // the embedded vocabulary's longest entry, in characters
    // (A chat prompt is measured as the template renders it: what is tokenized.)
    const rendered = m.renderChat([{ role: 'user', content: big }]).length;
    for (const [call, where, chars] of [[() => answer(m, big), 'answer', rendered], [() => m.complete(big), 'generate', big.length], [() => m.complete([{ role: 'user', content: big }]), 'generate', rendered]] as const) {
      await assert.rejects(call(), (e: unknown) => e instanceof ContextLengthError && e.tokens === Math.ceil(chars / longest) && e.context === ctx
        && e.message === `${where}: the prompt has ${chars} characters, and no token of this model spans more than ${longest}, so it needs at least ${Math.ceil(chars / longest)} tokens, more than the model's context of ${ctx}`);
    }
    assert.equal(encoded, 0, 'nothing was tokenized');
    assert.throws(() => m.encode(42 as never), /^Error: generate: a prompt must be a string or a list of messages, got number$/);
    // One that might fit is tokenized, as before.
    assert.equal((await m.complete('Ella has 5 marbles. '.repeat(30), { maxTokens: 1 })).tokens.length, 1);
  } finally {
    await m.close();
  }
});

test('sampler: the pruned fast paths (top-k selection, top-p/min-p floors) pick exactly what a full sort over the vocabulary picks', () => {
  // Reference: sort every token by probability, then top-k, min-p, top-p, and walk the kept mass with u.
  const reference = (logits: Float32Array, p: { temperature: number; topK?: number; topP?: number; minP?: number }, u: number) => {
    const max = logits.reduce((a, b) => Math.max(a, b), -Infinity), order = [...logits.keys()].filter((i) => (logits[i] - max) / p.temperature > -25).sort((a, b) => logits[b] - logits[a] || a - b);
    const kept = p.topK ? order.slice(0, p.topK) : order, w = kept.map((i) => Math.exp((logits[i] - max) / p.temperature)), z = w.reduce((a, b) => a + b);
    let probs = w.map((x) => x / z), n = probs.length;
    if (p.minP) while (n > 1 && probs[n - 1] < p.minP * probs[0]) n--;
    if (p.topP !== undefined && p.topP < 1) { let acc = 0, k = 0; while (k < n) { acc += probs[k++]; if (acc >= p.topP) break; } n = k; }
    probs = probs.slice(0, n);
    let r = u * probs.reduce((a, b) => a + b), pick = n - 1;
    for (let i = 0; i < n; i++) { r -= probs[i]; if (r < 0) { pick = i; break; } }
    return kept[pick];
  };
  const rand = seededRandom(7);
  for (let trial = 0; trial < 300; trial++) {
    const flat = trial % 10 === 9; // a large, flat vocabulary: a nucleus of thousands of tokens (the packed-key sort)
    const V = flat ? 3000 + Math.floor(rand() * 3000) : 50 + Math.floor(rand() * 900), spread = flat ? 0.3 : 1 + 8 * rand();
    const logits = Float32Array.from({ length: V }, () => spread * (rand() * 2 - 1) ** 3 * 4).map((x) => (trial % 5 === 0 ? Math.round(x) : x)); // rounded: ties at the top-k boundary
    const params = { temperature: [0.3, 0.8, 1, 1.5][trial % 4], topP: [undefined, 0.95, 0.5][trial % 3], minP: [0, 0.05][trial % 2], topK: [0, 0, 40][trial % 3] };
    for (const u of [rand(), rand(), 0, 0.999999]) assert.equal(sampleToken(logits, params, u).token, reference(logits, params, u), `trial ${trial} u ${u}`);
  }
  // A NaN logit is no candidate (as −∞ would be), not a poison for the whole draw.
  const withNaN = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 3), asInf = withNaN.slice();
  withNaN[500] = NaN; asInf[500] = -Infinity;
  for (const u of [0, 0.3, 0.9]) assert.equal(sampleToken(withNaN, { temperature: 1, topP: 0.9 }, u).token, sampleToken(asInf, { temperature: 1, topP: 0.9 }, u).token);
  const nanFirst = Float32Array.of(NaN, 0, 1);
  assert.equal(sampleToken(nanFirst, {}, 0).token, 2, 'greedy skips a NaN at index 0');
  // With no finite best (an overflowed forward pass) there is nothing to pick: said, not token V − 1 with logprob NaN.
  for (const p of [{}, { temperature: 1 }, { temperature: 1, topK: 2 }]) {
    assert.throws(() => sampleToken(Float32Array.of(NaN, NaN, NaN), p, 0.5), /^Error: sampler: the model's logits are not finite \(all NaN\): its weights, or its adapter's, overflow float32 or are damaged \(a converted folder's changed model\.onnx\.data: convert it again\)$/);
    assert.throws(() => sampleToken(Float32Array.of(0, Infinity, 1), p, 0.5), /logits are not finite \(the best is Infinity\): its weights, or its adapter's, overflow float32 or are damaged \(a converted folder's changed model\.onnx\.data: convert it again\)$/);
    assert.throws(() => sampleToken(Float32Array.of(5, 1), { ...p, repetitionPenalty: 1e-38 }, 0.5, undefined, [0]), /the best is Infinity\): its weights, or its adapter's, overflow float32 or are damaged \(a converted folder's changed model\.onnx\.data: convert it again\), or the repetition penalty 1e-38 overflows them$/);
  }
  assert.equal(sampleToken(nanFirst, { temperature: 1 }, 0.9).token, reference(Float32Array.of(-Infinity, 0, 1), { temperature: 1 }, 0.9));
  for (const u of [0, 0.3, 0.9]) { // with top-k too: NaN never enters the heap
    assert.equal(sampleToken(withNaN, { temperature: 1, topK: 40 }, u).token, reference(asInf, { temperature: 1, topK: 40 }, u));
    assert.equal(sampleToken(nanFirst, { temperature: 1, topK: 2 }, u).token, reference(Float32Array.of(-Infinity, 0, 1), { temperature: 1, topK: 2 }, u));
  }
  // Qwen's vocabulary size, Zipf-shaped and flat: nuclei of thousands of tokens spread over many slices.
  for (const flat of [false, true]) {
    const logits = Float32Array.from({ length: 151936 }, (_, i) => (flat ? 0.5 * (rand() * 2 - 1) : -1.3 * Math.log(1 + ((i * 7919) % 151936)) + 0.01 * rand()));
    for (const params of [{ temperature: 0.8, topP: 0.95 }, { temperature: 1 }, { temperature: 0.7, topP: 0.9, minP: 0.05 }]) {
      for (const u of [rand(), rand(), 0, 0.999999]) assert.equal(sampleToken(logits, params, u).token, reference(logits, params, u), `V 151936 ${flat ? 'flat' : 'Zipf'} ${JSON.stringify(params)} u ${u}`);
    }
  }
  // Vocabularies in ascending and descending logit order (every token enters the top-k heap, or none after the first k), with ties.
  for (const dir of [1, -1]) {
    const logits = Float32Array.from({ length: 2000 }, (_, i) => dir * Math.round(i / 3) / 50);
    for (const topK of [1, 7, 40, 64, 300]) {
      for (const u of [0, 0.37, 0.999999]) assert.equal(sampleToken(logits, { temperature: 1, topK }, u).token, reference(logits, { temperature: 1, topK }, u), `order ${dir} top-k ${topK} u ${u}`);
    }
  }
});

test('convert writes a loadable graph; a changed source makes the converted folder stale', async () => {
  const out = path.join(tmp, 'converted');
  convertModel(openSource(model.dir), out, { quant: 'q4' });
  assert.ok(fs.existsSync(path.join(out, 'model.onnx.data')));
  const direct = await loadModel(model.dir, { quant: 'q4', worker: false });
  const converted = await loadModel(out, { worker: false });
  const ids = prompt.slice(0, 9);
  assert.ok(maxDiff(await allLogits(direct.backend, ids), await allLogits(converted.backend, ids)) <= 1e-5);
  // The folder's own accuracy level may be named (the model would load as fp32 from its source, not from here).
  const level = JSON.parse(fs.readFileSync(path.join(out, 'edgereason.json'), 'utf8')).options.accuracyLevel;
  const named = await loadModel(out, { worker: false, accuracyLevel: level });
  await Promise.all([direct.close(), converted.close(), named.close()]);
  // A folder converted by an older edgereason (its graph returned the whole cache) is refused with the fix.
  const manifest = path.join(out, 'edgereason.json'), current = fs.readFileSync(manifest, 'utf8');
  fs.writeFileSync(manifest, current.replace('"format": 2', '"format": 1'));
  await assert.rejects(loadModel(out), new RegExp(`has format 1; this edgereason reads format 2: run \`edgereason convert --model ${model.dir} --out ${out} --quant q4\` again`));
  // Every field is checked by name, and the config must agree with the graph it describes.
  const edited = (edit: (m: Record<string, any>) => void) => { const m = JSON.parse(current); edit(m); fs.writeFileSync(manifest, JSON.stringify(m)); return loadModel(out, { worker: false }); };
  await assert.rejects(edited((m) => { delete m.source; }), /edgereason\.json field "source" must be an object \{path, kind, fingerprint\}, got undefined/);
  await assert.rejects(edited((m) => { m.options.quant = 'q3'; }), /edgereason\.json field "options\.quant" must be "q4", "q8", "fp32", got "q3"/);
  await assert.rejects(edited((m) => { m.sizes = null; }), /edgereason\.json field "sizes" must be an object of byte counts, got null/);
  await assert.rejects(edited((m) => { m.samples = { '.': 'ab' }; }), /edgereason\.json field "samples" must be sampled sha256 sums \(hex\) of the files "sizes" names, got \{"\.":"ab"\}/);
  for (const graph of ['../../../etc/passwd', '.']) await assert.rejects(edited((m) => { m.graph = graph; }), new RegExp(`edgereason\\.json field "graph" must be the name of the graph file in the folder, got "${graph.replace(/\./g, '\\.')}"`)); // a path out of it was opened
  await assert.rejects(edited((m) => { m.config.hiddenSize = 'x'; }), /edgereason\.json field "config\.hiddenSize" must be a positive integer, got "x"/);
  await assert.rejects(edited((m) => { m.config.eosTokenIds = [V + 9]; }), new RegExp(`field "config\\.eosTokenIds" must be token ids below the vocabulary size \\(${V}\\), got \\[${V + 9}\\]`));
  await assert.rejects(edited((m) => { m.config.numLayers = 1; }), /edgereason\.json does not match .*model\.onnx: engine: the model config says numLayers 1, but the graph has 2/);
  await assert.rejects(edited((m) => { m.config.vocabSize = V + 64; }), new RegExp(`engine: the model config says vocabSize ${V + 64}, but the graph has ${V}`));
  fs.writeFileSync(manifest, current);
  // Its tokenizer.json is checked against the model's vocabulary as a source folder's is (not first by a prompt).
  const tokFile = path.join(out, 'tokenizer.json'), tok = fs.readFileSync(tokFile, 'utf8'), tj = JSON.parse(tok);
  fs.writeFileSync(tokFile, JSON.stringify({ ...tj, model: { ...tj.model, vocab: { ...tj.model.vocab, zzzz: V + 74 } } }));
  assert.throws(() => openSource(out), new RegExp(`tokenizer\.json has token ids up to ${V + 74}, but the model's embedding has ${V} rows: the tokenizer belongs to another model`));
  fs.writeFileSync(tokFile, tok);
  // A setting that contradicts the conversion is refused, not silently ignored.
  await assert.rejects(loadModel(out, { quant: 'fp32' }), /was converted with quant q4, not fp32/);
  // A graph that does not match the weights beside it (an interrupted re-conversion) is refused by size.
  const data = path.join(out, 'model.onnx.data');
  fs.appendFileSync(data, Buffer.alloc(64));
  await assert.rejects(loadModel(out), new RegExp(`model\\.onnx\\.data has \\d+ bytes, edgereason\\.json recorded \\d+ \\(an interrupted convert\\?\\); run \`edgereason convert --model ${model.dir} --out ${out} --quant q4\` again`));
  fs.truncateSync(data, fs.statSync(data).size - 64);
  // So is one of the same size damaged since (it loaded, and answered garbage): its sampled sha256 differs.
  const whole = fs.readFileSync(data), flipped = Buffer.from(whole);
  for (let i = 0; i < 4096; i++) flipped[i] ^= 0xff;
  fs.writeFileSync(data, flipped);
  await assert.rejects(loadModel(out), { message: `model: ${data} holds other bytes than convert wrote (sampled sha256; damaged since, by a crash or a write?); run \`edgereason convert --model ${model.dir} --out ${out} --quant q4\` again` });
  fs.writeFileSync(data, whole);
  const cfg = path.join(model.dir, 'config.json');
  // Files with new times but the same bytes (a copy without -p, a touch) are read once, their times then recorded (it was stale).
  fs.utimesSync(cfg, new Date(), new Date(Date.now() + 5000));
  const before = readManifest(out).source.fingerprint;
  await (await loadModel(out)).close();
  assert.deepEqual([readManifest(out).source.fingerprint === before, readManifest(out).source.fingerprint], [false, fingerprint(openSourceFiles(model.dir))]);
  const text = fs.readFileSync(cfg, 'utf8');
  assert.ok(text.includes('\n'), text);
  fs.writeFileSync(cfg, text.replace('\n', ' ')); // other bytes, as many: read and compared
  await assert.rejects(loadModel(out), /is stale: its source .* changed after it was converted/);
  fs.appendFileSync(cfg, ' '); // more bytes: stale without reading them
  await assert.rejects(loadModel(out), /is stale: its source .* changed after it was converted/);
});

test('convert: a conversion that died half-way is refused at load (and Ctrl-C then says the folder is incomplete); its dead temp files go at the next convert', async () => {
  const out = path.join(tmp, 'converted-half');
  convertModel(openSource(model.dir), out, { quant: 'fp32' });
  // (accuracyLevel has nothing to act on in an fp32 folder: refused, as for an fp32 source, not compared with the manifest's 4.)
  for (const accuracyLevel of [0, 4]) await assert.rejects(loadModel(out, { worker: false, accuracyLevel }), { message: `model: ${out} was converted to fp32, where accuracyLevel does not apply (it is for block-quantised weights, quant "q4" or "q8"): leave it out` });
  // Re-converting dies after the weights are written (here: model.onnx cannot be replaced).
  fs.rmSync(path.join(out, 'model.onnx'));
  fs.mkdirSync(path.join(out, 'model.onnx'));
  assert.throws(() => convertModel(openSource(model.dir), out, { quant: 'fp32' }));
  await assert.rejects(loadModel(out, { worker: false }), new RegExp(`model: ${out} holds a conversion that did not finish; run \`edgereason convert --model ${model.dir} --out ${out} --quant fp32\` again`));
  // Ctrl-C at that point (the files being renamed into place) says the folder is incomplete, not the earlier one intact.
  fs.writeFileSync(path.join(out, `model.onnx.data.tmp-${process.pid}`), 'x');
  assert.equal(interrupted(out, model.dir), `convert: interrupted while the converted files were being put in place: ${out} is incomplete; run the same command again`);
  assert.ok(!fs.existsSync(path.join(out, `model.onnx.data.tmp-${process.pid}`)), 'its half-written files go');
  fs.rmdirSync(path.join(out, 'model.onnx'));
  // One that fails after the weights are staged (the manifest cannot be written: a full disk) leaves no temporary copy.
  const manifest = path.join(out, 'edgereason.json'), manifestBytes = fs.readFileSync(manifest);
  fs.rmSync(manifest);
  fs.mkdirSync(manifest);
  assert.throws(() => convertModel(openSource(model.dir), out, { quant: 'fp32' }), /EISDIR/);
  assert.deepEqual(fs.readdirSync(out).filter((f) => f.endsWith(`.tmp-${process.pid}`)), []);
  fs.rmdirSync(manifest);
  fs.writeFileSync(manifest, manifestBytes);
  // A convert killed mid-write leaves <file>.tmp-<pid>; the next one removes those of dead processes, not other files.
  const dead = spawnSync('true').pid;
  for (const f of [`model.onnx.data.tmp-${dead}`, `notes.tmp-${dead}`, `model.onnx.tmp-${process.ppid}`]) fs.writeFileSync(path.join(out, f), 'x');
  convertModel(openSource(model.dir), out, { quant: 'fp32' });
  assert.deepEqual(fs.readdirSync(out).filter((f) => f.includes('.tmp-')).sort(), [`model.onnx.tmp-${process.ppid}`, `notes.tmp-${dead}`]);
  await (await loadModel(out, { worker: false })).close();
  // Weights that cannot be replaced (in use: Windows renames over no open file) replace nothing: the earlier
  // conversion still loads (it was refused as one that did not finish).
  const rename = fs.renameSync, busy = mock.method(fs, 'renameSync', (from: fs.PathLike, to: fs.PathLike) => {
    if (String(to).endsWith('model.onnx.data')) throw Object.assign(new Error(`EBUSY: resource busy or locked, rename '${from}'`), { code: 'EBUSY' });
    rename(from, to);
  });
  syncBuiltinESMExports();
  try {
    assert.throws(() => convertModel(openSource(model.dir), out, { quant: 'fp32' }), /EBUSY/);
  } finally {
    busy.mock.restore();
    syncBuiltinESMExports();
  }
  assert.deepEqual(fs.readdirSync(out).filter((f) => f.endsWith(`.tmp-${process.pid}`)), []);
  await (await loadModel(out, { worker: false })).close();
  assert.equal(interrupted(out, model.dir), `convert: interrupted; the earlier conversion in ${out} is as it was`);
  assert.equal(interrupted(path.join(tmp, 'never-made'), undefined), `convert: interrupted; nothing was written to ${path.join(tmp, 'never-made')}`);
  // A source written while it converts (a training run saving into it) would give a graph of mixed weights: refused,
  // and nothing of it is written: the conversion already there (of another model) is untouched and still loads.
  const moving = makeRandomQwen2({ dir: path.join(tmp, 'moving'), seed: 8 }), weights = path.join(moving.dir, 'model.safetensors');
  let touched = false;
  const touch = () => { if (!touched) { touched = true; fs.utimesSync(weights, new Date(), new Date(Date.now() + 7000)); } };
  const files = () => Object.fromEntries(fs.readdirSync(out).map((f) => [f, fs.readFileSync(path.join(out, f)).toString('base64')]));
  const kept = files();
  assert.throws(() => convertModel(openSource(moving.dir), out, { quant: 'fp32', onProgress: touch }), { message: `convert: ${moving.dir} changed while it was being converted (a file of it was written meanwhile), so the graph would mix old and new weights: nothing was written to ${out}; convert it again once it is complete` });
  assert.deepEqual(files(), kept);
  // Also where it changed while blocks were made beforehand (a large model's, quantised on workers before convertModel
  // opens it): compared with the fingerprint taken before those (it was taken after, and the mixed copy loaded as current).
  const opened = openSource(moving.dir), from = fingerprint(opened.files);
  fs.utimesSync(weights, new Date(), new Date(Date.now() + 14000));
  assert.throws(() => convertModel(opened, out, { quant: 'fp32', blocks: new Map(), blocksFrom: from }), { message: /^convert: .* changed while it was being converted/ });
  assert.throws(() => convertModel(opened, out, { quant: 'fp32', blocks: new Map() }), { message: /^convert: blocks need blocksFrom/ });
  assert.deepEqual(files(), kept);
  const still = await loadModel(out, { worker: false });
  assert.equal(still.config.hiddenSize, model.config.hiddenSize);
  await still.close();
  // A file it wrote gone (a cached copy partly deleted: it would load without its chat template) is named.
  const written = readManifest(out).written![0], aside = path.join(tmp, 'aside');
  fs.renameSync(path.join(out, written), aside);
  assert.throws(() => openSource(out), { message: new RegExp(`^model: ${path.join(out, written).replace(/[.]/g, '\\.')} is missing \\(the convert that made .* wrote it\\); run \`edgereason convert`) });
  fs.renameSync(aside, path.join(out, written));
  // The folder of the source itself is refused (a GGUF's: the tokenizer.json written there would take it over).
  assert.throws(() => convertModel(openSource(moving.files.ggufF32), moving.dir), { message: `convert: out ${moving.dir} is the folder of ${moving.files.ggufF32}: the converted files would mix with the model's own; choose another folder` });
  assert.throws(() => convertModel(openSource(moving.dir), `${moving.dir}/`), /is the folder of .*moving: the converted files would mix with the model's own/);
  // A PEFT adapter saved in the model's folder is not part of the model: the copy stays current.
  convertModel(openSource(moving.dir), out, { quant: 'fp32' });
  const adapterFile = path.join(moving.dir, 'adapter_model.safetensors');
  fs.writeFileSync(adapterFile, 'x');
  await (await loadModel(out, { worker: false })).close();
  // ... and a folder converted before, whose fingerprint counted such a file, is not stale for it either (until it changes).
  const manifestFile = path.join(out, 'edgereason.json'), m = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
  fs.writeFileSync(manifestFile, JSON.stringify({ ...m, source: { ...m.source, sha256: undefined, fingerprint: fingerprint([...openSourceFiles(moving.dir), adapterFile]) } }));
  await (await loadModel(out, { worker: false })).close();
  fs.utimesSync(adapterFile, new Date(), new Date(Date.now() + 9000));
  await assert.rejects(loadModel(out, { worker: false }), /is stale: its source .* changed after it was converted/);
  fs.rmSync(adapterFile);
  // A folder converted into its source's own folder (before convert refused it): the command to rebuild it names another folder.
  const gdir = path.join(tmp, 'gguf-home'), gguf = path.join(gdir, 'm.gguf');
  fs.mkdirSync(gdir);
  fs.copyFileSync(moving.files.ggufF32, gguf);
  const other = path.join(tmp, 'gguf-home-out');
  convertModel(openSource(gguf), other, { quant: 'fp32' });
  for (const f of fs.readdirSync(other)) fs.copyFileSync(path.join(other, f), path.join(gdir, f));
  const gm = JSON.parse(fs.readFileSync(path.join(gdir, 'edgereason.json'), 'utf8'));
  fs.writeFileSync(path.join(gdir, 'edgereason.json'), JSON.stringify({ ...gm, format: 1 }));
  await assert.rejects(loadModel(gdir, { worker: false }), { message: `model: ${path.join(gdir, 'edgereason.json')} has format 1; this edgereason reads format 2: run \`edgereason convert --model ${gguf} --out <folder> --quant fp32\` again` });
});

test('a converted folder whose graph was damaged (its size unchanged) is said to be damaged, with the command that rebuilds it: by its sampled sum, or where onnxruntime cannot read it', async () => {
  const out = path.join(tmp, 'damaged');
  convertModel(model.dir, out, { quant: 'fp32' });
  const graph = path.join(out, 'model.onnx'), bytes = fs.readFileSync(graph), again = `run \`edgereason convert --model ${model.dir} --out ${out} --quant fp32\` again`;
  fs.writeFileSync(graph, Buffer.alloc(bytes.length, 0xff));
  await assert.rejects(loadModel(out), { message: `model: ${graph} holds other bytes than convert wrote (sampled sha256; damaged since, by a crash or a write?); ${again}` });
  // A folder from before the sums were recorded: onnxruntime's refusal says it.
  const manifest = path.join(out, 'edgereason.json'), { samples, ...rest } = JSON.parse(fs.readFileSync(manifest, 'utf8'));
  assert.ok(samples);
  fs.writeFileSync(manifest, JSON.stringify(rest));
  for (const worker of [false, true]) {
    await assert.rejects(loadModel(out, { worker }), { message: `model: onnxruntime cannot read ${graph} (Protobuf parsing failed.): the converted folder is damaged; ${again}` });
  }
});

test('loadModel keeps a converted copy in the cache: written once, then used as is; converted again when stale, broken or from another version; listed and pruned', slow, async () => {
  const cacheDir = path.join(tmp, 'cache'), converted = path.join(cacheDir, 'converted'), notes: string[] = [];
  const load = (o: LoadOptions = {}) => loadModel(model.dir, { quant: 'q4', worker: false, cacheDir, onNote: (n) => notes.push(n), ...o });
  // 'auto' builds a checkpoint this small in memory (well under a second) and writes nothing.
  await (await load()).close();
  assert.deepEqual([notes, fs.existsSync(cacheDir)], [[], false]);
  // 'always': the first load converts it into the cache, with the logits of the graph built in memory.
  const direct = await loadModel(model.dir, { quant: 'q4', worker: false, cache: 'never' });
  const first = await load({ cache: 'always' });
  const entry = path.join(converted, fs.readdirSync(converted)[0]), ids = prompt.slice(0, 9);
  assert.match(entry, /\/qwen2-q4-al4-[0-9a-f]{10}$/);
  assert.equal(notes.shift(), `model: converting ${model.dir} once (about 0.0 GiB) into ${entry}; later loads use it`); // not "(EDGEREASON_CACHE=off builds in memory instead)": 'always' was asked for
  assert.ok(maxDiff(await allLogits(direct.backend, ids), await allLogits(first.backend, ids)) <= 1e-5);
  // The next load uses the copy: nothing is quantised again.
  let progress = 0;
  const second = await load({ cache: 'always', onProgress: () => progress++ });
  assert.deepEqual([notes.shift(), progress], [`model: using the converted copy of ${model.dir} in ${entry}`, 0]);
  assert.ok(maxDiff(await allLogits(direct.backend, ids), await allLogits(second.backend, ids)) <= 1e-5);
  // The same checkpoint through a symbolic link uses the same copy (not a second one, nor a conversion in turn).
  const link = path.join(tmp, 'model-link');
  fs.symlinkSync(model.dir, link);
  await (await loadModel(link, { quant: 'q4', worker: false, cacheDir, onNote: (n) => notes.push(n), cache: 'always' })).close();
  assert.deepEqual([notes.shift(), fs.readdirSync(converted)], [`model: using the converted copy of ${link} in ${entry}`, [path.basename(entry)]]);
  // A GGUF linked into two folders is two checkpoints: its tokenizer files are read beside the name it is given by.
  const withGguf = makeRandomQwen2({ dir: path.join(tmp, 'linked-gguf'), seed: 5, config: { numLayers: 1 } });
  const [ga, gb] = ['gguf-a', 'gguf-b'].map((d) => path.join(tmp, d));
  for (const d of [ga, gb]) { fs.mkdirSync(d); fs.symlinkSync(withGguf.files.ggufF32, path.join(d, 'm.gguf')); }
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(withGguf.dir, f), path.join(gb, f));
  for (const d of [ga, gb]) await (await loadModel(path.join(d, 'm.gguf'), { quant: 'q4', worker: false, cacheDir, onNote: (n) => notes.push(n), cache: 'always' })).close();
  assert.deepEqual(notes.splice(0).map((n) => n.split(' once ')[0]), [`model: converting ${path.join(ga, 'm.gguf')}`, `model: converting ${path.join(gb, 'm.gguf')}`]);
  for (const e of fs.readdirSync(converted)) if (e.startsWith('m-')) fs.rmSync(path.join(converted, e), { recursive: true });
  // A copy removed while it loads (cache --clear from another shell, here at the note that it is used) is converted again.
  const cleared = await load({ cache: 'always', onNote: (n) => { notes.push(n); if (n.startsWith('model: using')) fs.rmSync(entry, { recursive: true }); } });
  assert.ok(maxDiff(await allLogits(direct.backend, ids), await allLogits(cleared.backend, ids)) <= 1e-5);
  assert.deepEqual(notes.splice(0).map((n) => n.replace(/ once .*/, '')), [`model: using the converted copy of ${model.dir} in ${entry}`,
    `model: the converted copy in ${entry} was removed or replaced while it loaded (edgereason cache --clear or --prune, or a load by another edgereason version); loading again`,
    `model: converting ${model.dir}`]);
  // Removed as soon as it is written (between its rename into place and its opening): converted again too (the load failed).
  fs.rmSync(entry, { recursive: true });
  const remove = fs.rmSync;
  let removedOnce = false;
  const racing = mock.method(fs, 'rmSync', (p: string, o: fs.RmOptions) => {
    remove(p, o);
    if (!removedOnce && /\.old-\d+-[0-9a-f]+$/.test(p)) { removedOnce = true; remove(entry, { recursive: true }); } // install's last step
  });
  syncBuiltinESMExports(); // (removeTemp calls it through `import * as fs`)
  const raced = await load({ cache: 'always' }).finally(() => { racing.mock.restore(); syncBuiltinESMExports(); });
  assert.ok(maxDiff(await allLogits(direct.backend, ids), await allLogits(raced.backend, ids)) <= 1e-5);
  assert.deepEqual(notes.splice(0).map((n) => n.replace(/ once .*/, '')), [`model: converting ${model.dir}`,
    `model: the converted copy in ${entry} was removed as soon as it was written (edgereason cache --clear or --prune); loading again`, `model: converting ${model.dir}`]);
  // The notes on what was asked for (here a Q4_0 GGUF quantised again to q8) are said once, not again at the second try.
  const q40 = makeRandomQwen2({ dir: path.join(tmp, 'q4_0-gone'), seed: 6, config: { numLayers: 1 }, q4_0: true }).files.ggufQ4_0!;
  removedOnce = false;
  const racing2 = mock.method(fs, 'rmSync', (p: string, o: fs.RmOptions) => {
    remove(p, o);
    if (!removedOnce && /\.old-\d+-[0-9a-f]+$/.test(p)) { removedOnce = true; remove(p.replace(/\.old-\d+-[0-9a-f]+$/, ''), { recursive: true }); }
  });
  syncBuiltinESMExports();
  await (await loadModel(q40, { quant: 'q8', worker: false, cacheDir, onNote: (n) => notes.push(n), cache: 'always' }).finally(() => { racing2.mock.restore(); syncBuiltinESMExports(); })).close();
  assert.deepEqual(notes.splice(0).map((n) => n.replace(/ once .*|: they are decoded .*|; loading again$/g, '').replace(/ in \S+ was removed .*/, ' removed')), [
    `model: ${q40} stores weights as Q4_0`, `model: converting ${q40}`, 'model: the converted copy removed', `model: converting ${q40}`]);
  for (const e of fs.readdirSync(converted)) if (e.startsWith('model-q4_0-')) fs.rmSync(path.join(converted, e), { recursive: true });
  await Promise.all([direct.close(), first.close(), second.close(), cleared.close(), raced.close()]);
  // A changed source, a broken copy and a copy made by another edgereason version are each converted again, in place.
  const touch = () => fs.appendFileSync(path.join(model.dir, 'config.json'), ' '); // other bytes (new times alone are read through)
  touch();
  await (await load({ cache: 'always' })).close();
  assert.equal(notes.shift()!.split('; converting')[0], `model: the converted copy in ${entry} is stale: its source ${model.dir} changed after it was converted`);
  fs.appendFileSync(path.join(entry, 'model.onnx.data'), Buffer.alloc(64));
  await (await load({ cache: 'always' })).close();
  assert.match(notes.shift()!, /^model: the converted copy in \S+ cannot be used \(\S+model\.onnx\.data has \d+ bytes, edgereason\.json recorded \d+ \(an interrupted convert\?\)/);
  const zeroed = fs.openSync(path.join(entry, 'model.onnx.data'), 'r+'); // a crash before its data reached the disk
  fs.writeSync(zeroed, Buffer.alloc(4096), 0, 4096, 0);
  fs.closeSync(zeroed);
  await (await load({ cache: 'always' })).close();
  assert.match(notes.shift()!, /^model: the converted copy in \S+ cannot be used \(\S+model\.onnx\.data holds other bytes than convert wrote \(sampled sha256; damaged since, by a crash or a write\?\)\); converting /);
  const manifest = path.join(entry, 'edgereason.json');
  fs.writeFileSync(manifest, fs.readFileSync(manifest, 'utf8').replace(/"edgereason": "[^"]*"/, '"edgereason": "0.0.1"'));
  await (await load({ cache: 'always' })).close();
  assert.match(notes.shift()!, /^model: the converted copy in \S+ was made by edgereason 0\.0\.1, not this one \(0\.1\.0\+[0-9a-f]{8}\); converting /);
  assert.deepEqual([fs.readdirSync(converted), notes], [[path.basename(entry)], []]); // no temporary folder left behind
  // Two loads converting at once (as two processes would): the copy installed first stays, the other is dropped.
  fs.rmSync(converted, { recursive: true, force: true });
  const both = await Promise.all([load({ cache: 'always' }), load({ cache: 'always' })]);
  notes.length = 0;
  assert.deepEqual(fs.readdirSync(converted), [path.basename(entry)]);
  assert.ok(maxDiff(await allLogits(both[0].backend, ids), await allLogits(both[1].backend, ids)) <= 1e-6);
  await Promise.all(both.map((m) => m.close()));
  // A cache folder that cannot be written is named, with what to do instead.
  const file = path.join(tmp, 'not-a-folder');
  fs.writeFileSync(file, '');
  await assert.rejects(load({ cache: 'always', cacheDir: file }), new RegExp(`^Error: model: cannot keep a converted copy of ${model.dir} \\(${file}/converted cannot be written: .*\\); set EDGEREASON_CACHE \\(or loadModel's cacheDir\\) to a folder with room, or convert it yourself: edgereason convert --model ${model.dir} --out <folder> --quant q4$`));
  await assert.rejects(load({ cache: 'sometimes' as 'auto' }), /loadModel: cache must be "auto", "always", "never", got "sometimes"/);
  // Listing: a copy whose source changed is stale; one a dead process left half-written is abandoned, as is one
  // with this process's pid that it is not writing (containers reuse pids across runs); a live process's is being written.
  const live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
  after(() => live.kill());
  const dead = spawnSync(process.execPath, ['-e', '']).pid!, abandoned = `${entry}.partial-${dead}-0a0b0c`, writing = `${entry}.partial-${live.pid}-0d0e0f`;
  fs.mkdirSync(abandoned);
  fs.mkdirSync(writing);
  fs.mkdirSync(`${entry}.old-${process.pid}-0f0f0f`);
  fs.writeFileSync(path.join(converted, 'stray-file'), '');
  // A user's own folders there are not copies: listing, pruning and clearing leave them alone (they were removed as stale).
  fs.mkdirSync(path.join(converted, 'notes'));
  fs.writeFileSync(path.join(converted, 'notes', 'readme.txt'), 'mine');
  const states = () => Object.fromEntries(cacheEntries(cacheDir).map((e) => [path.basename(e.dir), [e.state, e.why ?? '']]));
  assert.deepEqual(states(), { [path.basename(entry)]: ['ready', ''], [path.basename(abandoned)]: ['abandoned', ''], [path.basename(writing)]: ['writing', ''], [`${path.basename(entry)}.old-${process.pid}-0f0f0f`]: ['abandoned', ''] });
  touch();
  assert.deepEqual(states()[path.basename(entry)], ['stale', `is stale: its source ${model.dir} changed after it was converted`]);
  const cli = (...args: string[]) => spawnSync(process.execPath, ['bin/edgereason.js', 'cache', '--dir', cacheDir, ...args], { cwd: path.join(import.meta.dirname, '..'), encoding: 'utf8' });
  const listed = cli();
  assert.match(listed.stdout, new RegExp(`GiB  stale  ${entry}\\n {14}from ${model.dir}\\n {14}which is stale: its source ${model.dir} changed after it was converted\\n`));
  assert.equal(listed.stdout.split('\n')[0], `${cacheDir}: 4 converted copies, ${(cacheEntries(cacheDir).reduce((n, e) => n + e.bytes, 0) / 2 ** 30).toFixed(2)} GiB`);
  assert.match(listed.stdout, /\n`edgereason cache --prune` removes the stale and abandoned ones\.\n$/);
  assert.match(cli('--prune', '--clear').stderr, /cache: give --prune or --clear, not both/);
  // Pruning removes the stale and abandoned copies; clearing removes the rest but the one being written. A copy that
  // cannot be removed (a read-only disk) stops it, said with what went before (it was the system's EROFS message alone).
  const rm = fs.rmSync, removed: string[] = [];
  const failing = mock.method(fs, 'rmSync', (dir: string, o: fs.RmOptions) => {
    if (removed.length) throw Object.assign(new Error(`EROFS: read-only file system, rmdir '${dir}'`), { code: 'EROFS' });
    removed.push(dir);
    rm(dir, o);
  });
  let stopped = '';
  try { pruneCache(cacheDir); } catch (e) { stopped = (e as Error).message; } finally { failing.mock.restore(); }
  assert.match(stopped, /^cache: cannot remove (\S+) \(EROFS: read-only file system, rmdir '\1'\); removed the 1 copy before it \(0\.00 GiB\)$/);
  assert.deepEqual([...removed, ...pruneCache(cacheDir).map((e) => e.dir)].map((d) => path.basename(d)).sort(), [path.basename(entry), path.basename(abandoned), `${path.basename(entry)}.old-${process.pid}-0f0f0f`].sort());
  await (await load({ cache: 'always' })).close();
  assert.equal(cli('--clear').stdout, `removed 1 converted copy (0.00 GiB) from ${cacheDir}\n`);
  assert.deepEqual(fs.readdirSync(converted).sort(), ['notes', path.basename(writing), 'stray-file']);
  assert.equal(fs.readFileSync(path.join(converted, 'notes', 'readme.txt'), 'utf8'), 'mine');
});

test('a converted copy of a hub snapshot (links into blobs) loads once every blob is gone, and is stale when some are', async () => {
  const blobs = makeRandomQwen2({ dir: path.join(tmp, 'hub-blobs'), seed: 12, gguf: false }).dir, snap = path.join(tmp, 'hub-snapshot'), out = path.join(tmp, 'hub-converted');
  fs.mkdirSync(snap);
  for (const f of fs.readdirSync(blobs)) fs.symlinkSync(path.join(blobs, f), path.join(snap, f));
  convertModel(openSource(snap), out, { quant: 'fp32' });
  fs.rmSync(path.join(blobs, 'tokenizer.json'));
  await assert.rejects(loadModel(out, { worker: false }), /is stale: its source .*hub-snapshot changed after it was converted/);
  fs.rmSync(blobs, { recursive: true }); // it failed with ENOENT on the broken links
  await (await loadModel(out, { worker: false })).close();
  assert.throws(() => openSource(snap), { message: `${path.join(snap, 'config.json')} is a symbolic link to ${path.join(blobs, 'config.json')}, which does not exist (a hub cache whose blobs were removed?)` });
});

test('without a writable cache, "auto" builds a checkpoint that fits in memory (with a note); one too large to is refused with what to do, after half-written copies are removed', async () => {
  // Sources of the shapes only: every decision here comes before a weight is read.
  const source = (config: ModelConfig, name: string) => ({ kind: 'hf', path: path.join(tmp, name), config, files: [] }) as unknown as ModelSource;
  const notes: string[] = [], file = path.join(tmp, 'cache-is-a-file');
  fs.writeFileSync(file, '');
  const opts = (dir: string, policy: 'auto' | 'always' = 'auto') => ({ quant: 'q4' as const, policy, dir, onNote: (n: string) => notes.push(n) });
  const small = source(QWEN25_05B, 'qwen2.5-0.5b');
  assert.equal(await cachedConversion(small, opts(file)), undefined);
  assert.match(notes.join('\n'), new RegExp(`^model: not keeping a converted copy of ${small.path} \\(${file}/converted cannot be written: .*\\); building it in memory$`));
  // 'always' insists on the copy.
  await assert.rejects(cachedConversion(small, opts(file, 'always')), /^Error: model: cannot keep a converted copy of .*qwen2\.5-0\.5b \(.*cannot be written/);
  // A checkpoint no disk has room for (and that no graph in memory could hold) names the free space it found;
  // the half-written copy a dead process left was removed first, since its space counts as free.
  const huge = source({ ...QWEN25_05B, numLayers: 1_000_000 }, 'huge');
  const cacheDir = path.join(tmp, 'cache-room'), converted = path.join(cacheDir, 'converted');
  const dead = spawnSync(process.execPath, ['-e', '']).pid!, abandoned = path.join(converted, `huge-q4-al4-0123456789.partial-${dead}-0a0b0c`);
  fs.mkdirSync(abandoned, { recursive: true });
  await assert.rejects(cachedConversion(huge, opts(cacheDir)), new RegExp(`^Error: model: cannot keep a converted copy of ${huge.path} \\(${converted} has [\\d.]+ GiB free, and the copy takes about [\\d.]+ GiB\\); set EDGEREASON_CACHE .* or convert it yourself: edgereason convert --model ${huge.path} --out <folder> --quant q4$`));
  assert.deepEqual(fs.readdirSync(converted), []);
});

test('KV cache capacity grows by a quarter at least, in 64-position steps (at most 25 % slack)', () => {
  assert.equal(grownCapacity(64, 64), 64);
  assert.equal(grownCapacity(64, 89), 128); // what is needed, rounded up to 64
  assert.equal(grownCapacity(128, 129), 192); // +25 % = 160, rounded up
  assert.equal(grownCapacity(1024, 1025), 1280);
  assert.equal(grownCapacity(64, 1100), 1152);
  const c = new KVCache({ layers: 1, kvHeads: 1, headDim: 2 }, 2, 64);
  c.keys[0].set([1, 2], 2 * 5); // row 0, position 5
  c.keys[0].set([3, 4], 64 * 2 + 2 * 7); // row 1, position 7
  c.lengths = [6, 8];
  c.ensureCapacity(65);
  assert.equal(c.capacity, 128);
  assert.deepEqual([...c.keys[0].subarray(2 * 5, 2 * 6), ...c.keys[0].subarray(128 * 2 + 2 * 7, 128 * 2 + 2 * 8)], [1, 2, 3, 4], 'rows keep their positions');
  // Lengths are whole positions: NaN or 2.5 would corrupt the next step's writes.
  for (const bad of [NaN, 2.5, -1, 7]) assert.throws(() => c.truncate(0, bad), new RegExp(`kv-cache: cannot truncate row 0 of length 6 to ${bad}`));
  assert.throws(() => c.advance(0, 1.5), /kv-cache: row 0 cannot advance by 1\.5 positions/);
  // head(): a row's first positions in a cache just large enough for them (what the prompt cache keeps).
  const h = c.head([1], 8);
  assert.deepEqual([h.capacity, h.lengths, [...h.keys[0].subarray(2 * 7, 2 * 8)]], [64, [8], [3, 4]]);
  assert.throws(() => c.head([0], 7), /kv-cache: cannot copy the first 7 positions of row 0, of length 6/);
});

test('exportRow gives a row\'s first positions as [layer][keys, values][head][position][dim] (its shared prefix included); importRow reads them back', () => {
  const shape = { layers: 2, kvHeads: 2, headDim: 3 }, n = 5;
  const one = new KVCache(shape, 1, 64);
  // Each value names where it is: layer, keys or values, head, position, dim.
  const at = (l: number, kv: number, h: number, p: number, d: number) => 10000 * l + 1000 * kv + 100 * h + 10 * p + d;
  for (let l = 0; l < 2; l++) for (let kv = 0; kv < 2; kv++) for (let h = 0; h < 2; h++) for (let p = 0; p < n; p++) for (let d = 0; d < 3; d++) (kv ? one.values : one.keys)[l][(h * 64 + p) * 3 + d] = at(l, kv, h, p, d);
  one.lengths = [n];
  const want: number[] = [];
  for (let l = 0; l < 2; l++) for (let kv = 0; kv < 2; kv++) for (let h = 0; h < 2; h++) for (let p = 0; p < 4; p++) for (let d = 0; d < 3; d++) want.push(at(l, kv, h, p, d));
  assert.deepEqual([...one.exportRow(0, 4)], want);
  // Rows forked with a shared prefix give the same values; a row read back holds them at the same places.
  const forked = one.select([0, 0], true);
  assert.equal(forked.offset, n);
  assert.deepEqual([...forked.exportRow(1, 4)], want);
  const from = (data: Float32Array) => (into: Float32Array, at: number) => into.set(data.subarray(at, at + into.length));
  const back = KVCache.importRow(shape, 4, from(Float32Array.from(want)));
  assert.deepEqual([back.rows, back.lengths, back.capacity], [1, [4], 64]);
  assert.deepEqual([...back.exportRow(0, 4)], want);
  assert.equal(back.values[1][(1 * 64 + 3) * 3 + 2], at(1, 1, 1, 3, 2));
  assert.throws(() => one.exportRow(0, 6), /kv-cache: cannot export the first 6 positions of row 0, of length 5/);
  const bad = Float32Array.from(want);
  bad[want.indexOf(at(1, 1, 0, 2, 1))] = Infinity;
  assert.throws(() => KVCache.importRow(shape, 4, from(bad)), /^Error: kv-cache: layer 1's values of head 0 hold a value that is not finite$/);
});

test('cache buffers let go of are reused, zeroed; a released cache is refused; free waits for the run in flight before its buffers go', async () => {
  const shape = { layers: 1, kvHeads: 1, headDim: 2 };
  const a = new KVCache(shape, 2, 64), old = a.keys[0];
  old.fill(7);
  a.lengths = [3, 3];
  a.ensureCapacity(65); // grown: its 64-position buffers are let go of
  const b = new KVCache(shape, 2, 64);
  assert.ok([b.keys[0], b.values[0]].includes(old), 'a new cache of the old size takes the old buffer');
  assert.ok(old.every((x) => x === 0), 'zeroed');
  // A view into a live cache's buffer is never pooled (the engine's batch view), even one over all of it, nor is a
  // buffer pooled twice.
  const live = new KVCache(shape, 2, 64), view = new KVCache(shape, 0, 64);
  view.keys = [live.keys[0].subarray(0, 128)]; view.values = [live.values[0].subarray(0)];
  view.release();
  b.release(); b.release();
  const c = new KVCache(shape, 2, 64), d = new KVCache(shape, 2, 64);
  const bufs = [...c.keys, ...c.values, ...d.keys, ...d.values].map((x) => x.buffer);
  assert.equal(new Set(bufs).size, 4);
  assert.ok(!bufs.includes(live.keys[0].buffer) && !bufs.includes(live.values[0].buffer), 'a live cache\'s buffer was handed out');
  assert.throws(() => b.advance(0, 1), /kv-cache: row 0 out of range \(cache has 0 rows\)/);
  // A cache freed, or narrowed by keep, while its step runs: its buffers are reused only after the step wrote its
  // new positions into them. free waits for that cache's runs only.
  const lb = await backend();
  try {
    const kvOf = (h: number) => (lb as unknown as { cache(h: number): KVCache }).cache(h);
    for (const drop of ['free', 'keep'] as const) {
      const h = await lb.newCache(1);
      await lb.step(h, { tokens: [prompt] });
      const forked = drop === 'keep' ? await lb.select(h, [0, 0]) : h;
      const stepping = lb.step(forked, { tokens: drop === 'keep' ? [[5], [6]] : [[5]] });
      if (drop === 'free') await lb.free(h); else await lb.keep(forked, [1]);
      const next = await lb.newCache(drop === 'keep' ? 2 : 1); // the size of the buffers let go of
      await stepping;
      assert.ok([...kvOf(next).keys, ...kvOf(next).values].every((buf) => buf.every((x) => x === 0)), `${drop}: the new cache is untouched by the other's step`);
    }
    const idle = await lb.newCache(1), busy = await lb.newCache(1);
    let stepped = false;
    const long = lb.step(busy, { tokens: [Array.from({ length: 200 }, (_, i) => prompt[i % prompt.length])] }).then(() => { stepped = true; });
    await lb.free(idle);
    assert.equal(stepped, false, 'freeing an idle cache waited for another cache\'s run');
    await long;
  } finally {
    await lb.close();
  }
});

test('a sequence that ends on a stop token or is cancelled keeps its half-decoded last character, as decoding its tokens does', () => {
  // token 0 is "a", token 1 half of a character (decoded alone: U+FFFD), token 2 the stop token
  const tok = { vocabSize: 3, eosTokenIds: [2], decode: (ids: readonly number[]) => ids.filter((i) => i < 2).map((i) => (i === 0 ? 'a' : '\uFFFD')).join('') };
  const run = (ids: number[], maxTokens: number) => {
    const s = new Sequence(tok as never, { maxTokens }, 1);
    for (const id of ids) if (s.accept(id, 0)) break;
    if (!s.done) s.cancel();
    return [s.finishReason, s.text, s.stopToken];
  };
  assert.deepEqual(run([0, 1], 2), ['length', 'a\uFFFD', undefined]);
  assert.deepEqual(run([0, 1, 2], 5), ['stop', 'a\uFFFD', 2], 'the stop token is kept apart from the tokens (RL trains it)');
  assert.deepEqual(run([0, 1], 5), ['cancelled', 'a\uFFFD', undefined]);
});

test('graph building reports progress from (0, total) up to (total, total), never back', () => {
  const seen: [number, number][] = [];
  buildInferenceGraph(model.config, new MemoryWeights(model.weights), { quant: 'q4', onProgress: (d, t) => seen.push([d, t]) });
  const total = Math.ceil(parameterCount(model.config) / 1e6);
  assert.deepEqual([seen[0], seen.at(-1)], [[0, total], [total, total]]);
  assert.ok(seen.every(([d], i) => i === 0 || d >= seen[i - 1][0]), JSON.stringify(seen));
});

test('a graph without the inference contract\'s outputs is refused by name', async () => {
  const g = new Graph();
  g.nodeN('Identity', [g.input('input_ids', 'int64', ['batch', 'tokens'])], {}, { names: ['logits'] });
  g.output('logits', 'int64', ['batch', 'tokens']);
  await assert.rejects(Engine.create(model.config, g.toModelProto()), /engine: the graph has no logits_lse, hidden_states, new_key\.0, new_value\.0 output: it was built for another inference-graph contract/);
});

test('graph builder: bool, uint8 and float16 constants load in ORT with their own element types; an integer float attribute is refused', async () => {
  const g = new Graph();
  g.input('x', 'float32', [1, 3]);
  const mask = g.constant([1, 0, 1], 'bool', [1, 3]), bytes = g.constant([7, 255, 200], 'uint8', [1, 3]), half = g.constant([0.5, -2, 65504], 'float16', [1, 3]);
  const picked = g.node('Where', [mask, g.node('Cast', [bytes], { to: 1 }), g.node('Cast', [half], { to: 1 })]);
  g.nodeN('FusedMatMul', [picked, 'x'], { transB: 1, alpha: { float: 1 } }, { domain: 'com.microsoft', names: ['y'] }); // alpha serialised as FLOAT
  g.output('y', 'float32', [1, 1]);
  const session = await ort.InferenceSession.create(g.toModelProto(), { intraOpNumThreads: 1 });
  const out = await session.run({ x: new ort.Tensor('float32', Float32Array.from([1, 10, 100]), [1, 3]) });
  await session.release();
  assert.deepEqual([...(out.y.data as Float32Array)], [7 - 20 + 20000]); // picks 7, -2, 200
  assert.throws(() => g.node('FusedMatMul', ['x', 'x'], { transB: 1, alpha: 1 }, { domain: 'com.microsoft' }), /graph: FusedMatMul attribute "alpha" is a float; pass \{ float: 1 \}/);
  assert.throws(() => g.initializer('w', 'float16', [2], new Float32Array(2)), /graph: initializer "w" \(float16\) needs a Uint16Array, got a Float32Array/);
  // Same element width, other type: its bytes would be read as the wrong numbers (1 as 1.4e-45).
  assert.throws(() => g.initializer('w', 'float32', [2], Int32Array.of(1, 2)), /graph: initializer "w" \(float32\) needs a Float32Array, got a Int32Array/);
  assert.throws(() => g.initializer('w', 'int32', [2], new Float32Array(2)), /graph: initializer "w" \(int32\) needs a Int32Array, got a Float32Array/);
});

test('an inference graph for a head size that is no multiple of 8 is refused by name (onnxruntime\'s GroupQueryAttention fails on every prompt of several tokens)', () => {
  assert.throws(() => buildInferenceGraph({ ...model.config, headDim: 12 }, new MemoryWeights(model.weights), { quant: 'fp32' }),
    /^Error: graph: the head size \(head_dim, or hidden_size \/ num_attention_heads\) must be a multiple of 8 for onnxruntime's GroupQueryAttention, which runs prompts; got 12$/);
});

test('bad input: prompt beyond the context, maxTokens 0, unknown token id, missing model path', async () => {
  const m = await loadModel(model.dir, { quant: 'fp32', worker: false });
  try {
    const long = 'word '.repeat(model.config.maxPositionEmbeddings + 10);
    await assert.rejects(m.complete(long), (e: unknown) => e instanceof ContextLengthError && e.context === 2048 && /the prompt has \d+ tokens; the model's context of 2048 tokens leaves no room to generate/.test(e.message));
    // A cache no buffer could hold is refused (it used to end the process: out of memory before the buffers' check).
    await assert.rejects(m.backend.newCache(5e8), /^Error: engine: a cache of 500000000 rows needs [\d.]+ GiB for its first 64 positions, more than a Float32Array holds \(4294967296 floats per layer\): ask for fewer rows$/);
    // ... and one that fits in buffers but not in this machine's memory
    const mc = m.config, perRow = 2 * mc.numLayers * mc.numKvHeads * 64 * mc.headDim * 4, rows = Math.ceil(os.totalmem() / perRow) + 1;
    await assert.rejects(m.backend.newCache(rows), new RegExp(`^Error: engine: a cache of ${rows} rows needs [\\d.]+ GiB for its first 64 positions, more than this machine's [\\d.]+ GiB of memory: ask for fewer rows$`));
    for (const rows of [0, 1.5, NaN]) await assert.rejects(m.backend.newCache(rows), new RegExp(`^Error: engine: a cache needs a whole number of rows ≥ 1, got ${rows}$`));
    await assert.rejects(m.generateBatch(['a', 'b', 'c'], [{ maxTokens: 2 }]), /generate: 1 option objects for 3 prompts \(give one per prompt, or one object for all\)/);
    assert.deepEqual(await m.generateBatch([]), [], 'no prompts, no rows (was an engine error: a cache of 0 rows)');
    await assert.rejects(m.complete('a', { topLogprobs: 21 }), /^Error: generate: topLogprobs must be an integer in \[0, 20\], got 21$/);
    await assert.rejects(m.generateBatch([], { adapter: true }), /^Error: generate: adapter: true asks for the adapter, but the model was loaded without one \(the adapter option of loadModel\)$/);
    await assert.rejects(m.generateBatch([], { maxTokens: -1 }), /generate: maxTokens/);
    await assert.rejects(m.complete('Hello', { maxTokens: 0 }), /generate: maxTokens must be an integer ≥ 1, got 0/);
    const c = await m.backend.newCache(1);
    await assert.rejects(m.backend.step(c, { tokens: [[V + 5]] }), new RegExp(`token id ${V + 5} is outside the vocabulary`));
    // Tokens not shaped as one list per row (a TypeError "req.tokens.every is not a function", or "row is not iterable", before)
    for (const [tokens, got] of [['x', '"x"'], [[5], '[5]'], [null, 'null']] as const) {
      await assert.rejects(m.backend.step(c, { tokens } as never), { message: `engine: a step's tokens must be one list of token ids per cache row, got ${got}` });
    }
  } finally {
    await m.close();
  }
  await assert.rejects(loadModel(path.join(tmp, 'nope')), /nope does not exist/);
});

test('convert carries the chat template of chat_template.jinja into the converted folder', async () => {
  const dir = path.join(tmp, 'with jinja'), out = path.join(tmp, 'with jinja converted');
  fs.mkdirSync(dir);
  for (const f of fs.readdirSync(model.dir)) if (!f.endsWith('.gguf')) fs.copyFileSync(path.join(model.dir, f), path.join(dir, f));
  fs.writeFileSync(path.join(dir, 'chat_template.jinja'), '{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}');
  convertModel(dir, out, { quant: 'fp32' });
  const chat = [{ role: 'user', content: 'hi' }];
  const src = openSource(dir).tokenizer.applyChatTemplate(chat), conv = openSource(out).tokenizer.applyChatTemplate(chat);
  assert.equal(src, '<user>hi');
  assert.equal(conv, src);
  // Converting another source into the same folder leaves none of the first one's tokenizer files behind.
  const other = path.join(tmp, 'without-jinja');
  fs.mkdirSync(other);
  for (const f of fs.readdirSync(model.dir)) if (!f.endsWith('.gguf')) fs.copyFileSync(path.join(model.dir, f), path.join(other, f));
  convertModel(other, out, { quant: 'fp32' });
  assert.equal(fs.existsSync(path.join(out, 'chat_template.jinja')), false);
  assert.equal(openSource(out).tokenizer.applyChatTemplate(chat), openSource(other).tokenizer.applyChatTemplate(chat));
  convertModel(dir, out, { quant: 'fp32' });
  // The command a stale folder suggests can be pasted: paths with spaces are quoted.
  fs.appendFileSync(path.join(dir, 'config.json'), ' ');
  assert.throws(() => openSource(out), { message: `model: ${out} is stale: its source ${dir} changed after it was converted; run \`edgereason convert --model '${dir}' --out '${out}' --quant fp32\` again` });
});

test('options that would be ignored or mean nothing are refused by name; seeds, stop strings and tiny temperatures behave', async () => {
  await assert.rejects(loadModel(model.dir, { quant: 'q3' as 'q4' }), /loadModel: quant must be "q4", "q8", "fp32", got "q3"/);
  await assert.rejects(loadModel(model.dir, { quant: 'q4', accuracyLevel: 7 }), /loadModel: accuracyLevel must be 0, 1, 2, 3 or 4, got 7/);
  await assert.rejects(loadModel(model.dir, { quant: 'fp32', accuracyLevel: 4 }), /accuracyLevel applies to block-quantised weights \(quant "q4" or "q8"\), not to fp32/);
  await assert.rejects(loadModel(model.dir, { accuracyLevel: 4 }), /loadModel: accuracyLevel applies to block-quantised weights, and this model loads as fp32 \(small models do by default\)/);
  // convertModel alike (it recorded the level beside fp32 weights), before it writes anything.
  const never = path.join(os.tmpdir(), `er-accuracy-${process.pid}`);
  assert.throws(() => convertModel(model.dir, never, { quant: 'fp32', accuracyLevel: 2 }), /^Error: convert: accuracyLevel applies to block-quantised weights \(quant "q4" or "q8"\), not to fp32$/);
  assert.throws(() => convertModel(model.dir, never, { accuracyLevel: 2 }), /^Error: convert: accuracyLevel applies to block-quantised weights, and this model converts to fp32 \(small models do by default\)/);
  assert.equal(fs.existsSync(never), false);
  await assert.rejects(loadModel(model.dir, { adapter: '' }), /loadModel: adapter must be the path of a PEFT adapter folder, got ""/);
  await assert.rejects(loadModel(model.dir, { worker: 'false' as never }), /loadModel: worker must be true or false, got "false"/);
  // Threads past ONNX Runtime's int were dropped unsaid (2^31), a thousand took 25 s to load: refused; more than the CPUs is noted.
  for (const threads of [0, 1025, 2 ** 31, 1.5]) await assert.rejects(loadModel(model.dir, { threads }), { message: `loadModel: threads must be an integer from 1 to 1024, got ${threads}` });
  const crowded: string[] = [];
  await (await loadModel(model.dir, { threads: os.availableParallelism() + 1, worker: false, onNote: (n) => crowded.push(n) })).close();
  assert.deepEqual(crowded, [`model: ${os.availableParallelism() + 1} threads on this machine's ${os.availableParallelism()} CPUs: threads beyond the CPUs wait on each other, which slows the model down`]);
  await assert.rejects(loadModel(model.dir, { adaptor: 'x' } as object), /loadModel: unknown option "adaptor" \(options: quant, accuracyLevel, adapter, loraTargets, threads, worker, onProgress, onDownload, signal, cache, cacheDir, onNote, promptCache, ropeScaling\)/);
  // null is no option's default (undefined is): refused by name, every option alike.
  await assert.rejects(loadModel(model.dir, { quant: null } as never), /^Error: loadModel: quant is null; leave it out \(or undefined\) for the default$/);
  await assert.rejects(loadModel(undefined as never), /^Error: loadModel: the first argument must be the path of a model .*, got undefined; the embedded default is loadModel\(defaultModel\.dir, \{ adapter: defaultModel\.adapter \}\)$/);
  const m = await loadModel(model.dir, { quant: 'fp32', worker: false });
  try {
    const bad: [object, RegExp][] = [
      [{ temperature: NaN }, /generate: temperature must be a finite number ≥ 0 \(0 = greedy\), got NaN/],
      [{ temperature: -1 }, /temperature must be a finite number ≥ 0/],
      [{ topK: 1.5 }, /generate: topK must be an integer ≥ 0 \(0 = off\), got 1\.5/],
      [{ topP: 2 }, /generate: topP must be in \[0, 1\] \(0 keeps the most likely token\), got 2/],
      [{ minP: -1 }, /generate: minP must be in \[0, 1\], got -1/],
      [{ seed: 1.5 }, /generate: seed must be an integer within ±\(2\^53 − 1\), got 1\.5/],
      [{ stopTokens: [V + 1] }, new RegExp(`generate: stopTokens must be token ids \\(0\\.\\.${V - 1}\\), got \\[${V + 1}\\]`)],
      [{ stopTokens: [1, NaN, -Infinity] }, /generate: stopTokens must be token ids \(0\.\.\d+\), got \[1,NaN,-Infinity\]$/], // as written, not null
      [{ adapterFrom: 3 }, /generate: adapterFrom needs adapter: true, got 3/],
      [{ max_tokens: 5 }, /generate: unknown option "max_tokens"/],
      [{ stop: null, seed: null }, /^Error: generate: stop, seed are null; leave them out \(or undefined\) for the default$/], // stop: null meant none
      // Checked as given, before the defaults and per-row seeds are made from them.
      [{ maxTokens: '4' }, /generate: maxTokens must be an integer ≥ 1, got "4"/],
      [{ maxTokens: Infinity }, /generate: maxTokens must be an integer ≥ 1, got Infinity/],
      [{ seed: 'x' }, /generate: seed must be an integer within ±\(2\^53 − 1\), got "x"/],
      // Values JSON cannot show (a BigInt, a cycle) or would show whole (a model) still give the check's own message.
      [{ seed: 5n }, /generate: seed must be an integer within ±\(2\^53 − 1\), got 5n$/],
      [{ stopTokens: (() => { const c: unknown[] = [1]; c.push(c); return c; })() }, /generate: stopTokens must be token ids .*, got a list$/],
      [{ seed: m }, /generate: seed must be an integer within ±\(2\^53 − 1\), got a Model$/],
      [{ adapter: 'yes' }, /generate: adapter must be true or false, got "yes"/],
      [{ thinking: {} }, new RegExp(`generate: thinking\\.end must be the token ids that close the thinking segment \\(a non-empty list of 0\\.\\.${V - 1}\\), got undefined`)],
      [{ thinking: { end: [1], maxTokens: NaN } }, /generate: thinking\.maxTokens must be an integer ≥ 0, got NaN/],
      [{ thinking: { end: [1], force: [V] } }, new RegExp(`generate: thinking\\.force must be a non-empty list of token ids \\(0\\.\\.${V - 1}\\), got \\[${V}\\]`)],
      [{ thinking: [1] }, /generate: thinking must be an object \{ end, endText\?, maxTokens\?, force\?, closeOnStop\? \}, got \[1\]/],
      // A cap without the tokens to force at it, or a misspelt key, would be ignored.
      [{ thinking: { end: [1], maxTokens: 2 } }, /generate: thinking\.maxTokens needs thinking\.force, the closing tokens fed at the cap .*, to end the thinking there; thinking\.maxTokens, got 2$/],
      // A stop string would cut the JSON the constraint keeps whole (it came back as "{\n", finishReason "stop").
      [{ json: { type: 'object' }, stop: '\n' }, /^Error: generate: json and stop: a stop string would cut the JSON, which the constraint ends by itself once it is complete; leave stop out$/],
      [{ thinking: { end: [1], force: [1], max_tokens: 2 } }, /generate: thinking has an unknown option "max_tokens" \(options: end, endText, maxTokens, force, closeOnStop\)/],
    ];
    for (const [opts, re] of bad) await assert.rejects(m.complete('Hello', opts), re);
    await assert.rejects(m.complete([{ role: 'user', content: 'hi' }], { chat: false }), /a list of messages is rendered by the chat template/);
    // The decoding constraint is the library's own (made from json): not an option of the public type, refused at run time.
    // @ts-expect-error allowedNext is no PromptOptions
    await assert.rejects(m.complete('Hello', { allowedNext: () => [1] }), /^Error: generate: unknown option "allowedNext"/);
    await assert.rejects(m.generateBatch('Hello' as never), /generate: generateBatch takes a list of prompts \(one per row\), got string/);
    await assert.rejects(m.generateBatch(['Hello'], {}, 5 as never), /generate: onText must be a function \(row, piece\) => void, got number/);
    await assert.rejects(m.generateBatch(['Hello'], {}, undefined, {} as never), /generate: signal must be an AbortSignal, got \{\}/);
    // An abort that comes while decoding starts (here: during its first call to the backend) cancels the row.
    const ac = new AbortController(), be = delegate(m.backend, {}), lengths = be.lengths.bind(be);
    be.lengths = async (c) => { const r = await lengths(c); ac.abort(); return r; };
    const [aborted] = await generateBatch(be, m.tokenizer, [m.encode('Hello')], [{ maxTokens: 16 }], undefined, ac.signal);
    assert.deepEqual([aborted.finishReason, aborted.tokens.length], ['cancelled', 0]);
    // An abort from inside onText (the caller has seen enough): the pieces add up to the result's text (the last
    // one came again as the cancelled sequence finished inside the callback).
    for (const seed of [1, 2, 3]) {
      const stop = new AbortController(), pieces: string[] = [];
      const [c] = await m.generateBatch(['Hello'], { maxTokens: 32, temperature: 1, seed, stopTokens: [] }, (_, piece) => { if (pieces.push(piece) === 3) stop.abort(); }, stop.signal);
      assert.deepEqual([c.finishReason, pieces.join('')], ['cancelled', c.text], `seed ${seed}`);
    }
    // options.signal cancels complete() and generate(); one signal shared by many calls adds one listener (Node warns past ten).
    const warnings: string[] = [], onWarning = (w: Error) => warnings.push(w.name), shared = new AbortController();
    process.on('warning', onWarning);
    try {
      // Aborted once every call has taken a few steps (each call's first step follows the listener's setup).
      const step = m.backend.step.bind(m.backend);
      let steps = 0;
      m.backend.step = async (...a) => { const r = await step(...a); if (++steps === 36) shared.abort(); return r; };
      const calls = Array.from({ length: 12 }, () => m.complete('Hello', { maxTokens: 64, temperature: 1, stopTokens: [], signal: shared.signal }));
      const done = await Promise.all(calls);
      m.backend.step = step;
      assert.deepEqual(done.map((c) => c.finishReason), Array(12).fill('cancelled'));
      await new Promise((r) => setTimeout(r, 10));
    } finally {
      process.off('warning', onWarning);
    }
    assert.deepEqual(warnings, []);
    const pieces: string[] = [], gen = m.generate('Hello', { maxTokens: 5, signal: AbortSignal.abort() });
    for await (const p of gen) pieces.push(p);
    assert.deepEqual(pieces, []);
    await assert.rejects(m.complete('Hello', { signal: 'stop' as never }), /generate: signal must be an AbortSignal, got "stop"/);
    await assert.rejects(m.generate('Hello', { signal: 'stop' as never }).next(), /generate: signal must be an AbortSignal, got "stop"/);
    await assert.rejects(m.generate('Hello', null as never).next(), /^Error: generate: options must be an object, got null$/);
    await assert.rejects(m.complete('Hello', [{ maxTokens: 3 }] as never), /^Error: generate: options must be an object, got a list$/); // generate refuses it too
    await assert.rejects(m.complete('Hello', { stop: 'x'.repeat(300) as never, seed: 'y'.repeat(300) as never }), (e: Error) => e.message.endsWith(`got "${'y'.repeat(118)}…`));
    await assert.rejects(m.generateBatch(['a', 'b'], [{ signal: shared.signal }, {}] as never), /generate: a signal cancels the whole batch/);
    await assert.rejects(m.complete([{ role: 'robot', content: 'hi' }]), /generate: message 0 has role "robot" \(roles: system, user, assistant, tool\)/);
    // A temperature so small that every logit but the best falls below the tail floor is greedy (it used to pick no token).
    const greedy = await m.complete('Hello', { maxTokens: 6 }), tiny = await m.complete('Hello', { maxTokens: 6, temperature: 1e-300, seed: 1 });
    assert.deepEqual(tiny.tokens, greedy.tokens);
    // Seeds: the same seed repeats; 1 and 2^32 + 1 differ; one options object gives batch row i the seed + i.
    const draw = (seed: number) => m.complete('Hello', { maxTokens: 8, temperature: 50, seed }).then((c) => c.tokens.join());
    assert.equal(await draw(1), await draw(1));
    assert.notEqual(await draw(1), await draw(2 ** 32 + 1));
    const rows = await m.generateBatch(['Hello', 'Hello'], { maxTokens: 8, temperature: 50, seed: 1 }); // near-flat: draws differ
    assert.equal(rows[0].tokens.join(), await draw(1));
    assert.equal(rows[1].tokens.join(), await draw(2));
    // The largest seed still gives each row a valid seed of its own.
    const top = await m.generateBatch(['Hello', 'Hello'], { maxTokens: 8, temperature: 50, seed: Number.MAX_SAFE_INTEGER });
    assert.equal(top[0].tokens.join(), await draw(Number.MAX_SAFE_INTEGER));
    assert.notEqual(top[1].tokens.join(), top[0].tokens.join());
    // A top-k past the vocabulary keeps all of it (it used to allocate top-k-sized buffers: 2^31 took 16 GB).
    assert.equal((await m.complete('Hello', { maxTokens: 8, temperature: 50, seed: 3, topK: 2 ** 31 - 1 })).tokens.join(),
      (await m.complete('Hello', { maxTokens: 8, temperature: 50, seed: 3, topK: V })).tokens.join());
    // The low-level generateBatch leaves the caller's options as they were (a context cap once leaked into the next call).
    const opts = [{ maxTokens: 1000 }];
    await generateBatch(m.backend, m.tokenizer, [m.tokenizer.encode('Hello')], opts);
    assert.deepEqual(opts, [{ maxTokens: 1000 }]);
    // A stop string may be given as a string, as OpenAI's API allows.
    const text = greedy.text, cut = text.slice(2, 4);
    assert.equal(cut.length, 2, `the greedy text ${JSON.stringify(text)} is long enough to cut`);
    assert.equal((await m.complete('Hello', { maxTokens: 6, stop: cut })).text, text.slice(0, text.indexOf(cut)));
  } finally {
    await m.close();
  }
});

test('prequantize: worker threads make exactly the 4-bit blocks the graph builder makes, whole or in row slices; a graph built from them is byte for byte the same', async () => {
  const w = new MemoryWeights(model.weights), names = blockWeightNames(model.config, w);
  assert.equal(names.length, 1 + 7 * model.config.numLayers, 'the embedding table and every projection (tied lm_head)');
  let reported = 0;
  const blocks = await prequantize(w, names, { threads: 2, onWeights: (d) => { reported = d; } });
  for (const n of names) {
    const [rows, cols] = w.shape(n), ref = quantizeQ4(w.get(n), rows, cols, n);
    assert.deepEqual([blocks.get(n)!.packed, blocks.get(n)!.scales], [ref.packed, ref.scales], n);
  }
  assert.equal(reported, names.reduce((a, n) => a + w.shape(n)[0] * w.shape(n)[1], 0));
  const plain = buildInferenceGraph(model.config, w, { quant: 'q4' }).toModelProto();
  const pre = buildInferenceGraph(model.config, w, { quant: 'q4', blocks: blocks }).toModelProto();
  assert.ok(Buffer.from(pre).equals(Buffer.from(plain)));
  assert.deepEqual(model.weights.get('model.embed_tokens.weight')!.data.length > 0, true, 'the source keeps its weights (copied to the workers, not transferred)');
  // A file's fresh arrays are transferred as they are: the same blocks, and the file reads again afterwards.
  const file = openSource(model.dir).weights!;
  assert.equal(file.fresh, true);
  const fromFile = await prequantize(file, names, { threads: 2 });
  for (const n of names) assert.deepEqual([fromFile.get(n)!.packed, fromFile.get(n)!.scales], [blocks.get(n)!.packed, blocks.get(n)!.scales], n);
  assert.deepEqual(file.get('model.embed_tokens.weight'), w.get('model.embed_tokens.weight'));
  // Read in row slices (a file reads rows apart): the same blocks, 4- and 8-bit, the progress counting every weight once.
  for (const bits of [4, 8] as const) {
    let sliced = 0;
    const ref = bits === 4 ? blocks : await prequantize(w, names, { threads: 2, bits });
    const fromSlices = await prequantize(file, names, { threads: 2, bits, slice: 1000, onWeights: (d) => { sliced = d; } });
    for (const n of names) assert.deepEqual([fromSlices.get(n)!.packed, fromSlices.get(n)!.scales], [ref.get(n)!.packed, ref.get(n)!.scales], `${n} q${bits}`);
    assert.equal(sliced, reported);
  }
  // A quantised GGUF's tensors go to the workers as their stored blocks and are decoded there: the blocks are those
  // of the values the main thread decodes (q4 and q8).
  const gguf = path.join(tmp, 'prequantize-q8_0.gguf');
  writeModelGguf(gguf, model.config, w, { type: 'Q8_0' });
  const gw = ggufToModel(gguf).weights;
  assert.equal(gw.encoded?.('model.layers.0.mlp.down_proj.weight')?.type, 'Q8_0');
  for (const bits of [4, 8] as const) {
    const fromBlocks = await prequantize(gw, names, { threads: 2, bits });
    for (const n of names) {
      const [rows, cols] = gw.shape(n), ref = quantizeBlocks(gw.get(n), rows, cols, bits, n);
      assert.deepEqual([fromBlocks.get(n)!.bits, fromBlocks.get(n)!.packed, fromBlocks.get(n)!.scales], [bits, ref.packed, ref.scales], `${n} q${bits}`);
    }
  }
});

test('a checkpoint too large for an in-memory ONNX model (2 GiB) is refused before building, with the convert command that loads it', () => {
  const qwen7b: ModelConfig = { ...QWEN25_05B, vocabSize: 152064, hiddenSize: 3584, intermediateSize: 18944, numLayers: 28, numHeads: 28, numKvHeads: 4, headDim: 128, tieWordEmbeddings: false };
  const qwen3b: ModelConfig = { ...QWEN25_05B, hiddenSize: 2048, intermediateSize: 11008, numLayers: 36, numHeads: 16, numKvHeads: 2, headDim: 128 };
  assert.equal(Math.round(parameterCount(qwen7b) / 1e6), 7615); // Qwen2.5-7B: 7.61B
  assert.throws(() => checkInMemorySize(qwen7b, 'q4', '/m/Qwen2.5 7B/', ['q_proj']), {
    message: "model: /m/Qwen2.5 7B/ is 7.6B parameters, whose q4 weights (about 4.4 GiB) do not fit the 2 GiB an ONNX model holds in memory; convert it once (its weights go to a separate file) and load the converted folder: edgereason convert --model '/m/Qwen2.5 7B/' --out '/m/Qwen2.5 7B-onnx' --quant q4 --lora-targets q_proj",
  });
  checkInMemorySize(qwen3b, 'q4', 'm'); // 3.1B parameters: 1.8 GiB at q4
  checkInMemorySize(QWEN25_05B, 'fp32', 'm'); // 0.5B in fp32: 1.8 GiB
  assert.throws(() => checkInMemorySize(qwen3b, 'fp32', 'm.gguf'), /--out m-onnx --quant fp32$/);
  // The estimate is what the graph holds: over sizes no multiple of the quantisation block too (a projection
  // stays fp32, the embedding table fp16 beside an fp32 lm_head), which were counted as quantised.
  for (const [i, shape] of ([{ hiddenSize: 64 }, { hiddenSize: 64, tieWordEmbeddings: false }, { hiddenSize: 48, numHeads: 3, numKvHeads: 1, intermediateSize: 40 }, { hiddenSize: 48, numHeads: 3, numKvHeads: 1, tieWordEmbeddings: false }] as const).entries()) {
    const m = makeRandomQwen2({ config: shape, dir: path.join(tmp, `bytes-${i}`) });
    for (const quant of ['q4', 'q8', 'fp32'] as const) {
      const g = buildInferenceGraph(m.config, new MemoryWeights(m.weights), { quant });
      const held = [...g.initializers.values()].reduce((a, t) => a + t.data.byteLength, 0), estimate = weightBytes(m.config, quant);
      const small = m.config.hiddenSize * (2 * m.config.numLayers + 1) * 4 + (2 * m.config.numHeads + 4 * m.config.numKvHeads) * m.config.headDim * m.config.numLayers * 4 + 4096; // norms, biases, constants
      assert.ok(held >= estimate && held - estimate <= small, `${JSON.stringify(shape)} ${quant}: the graph holds ${held} bytes, estimated ${estimate}`);
    }
  }
});

test('chatTemplateKwargs reach the chat template (Qwen3\'s enable_thinking: false pre-fills an empty thinking block); misuse is refused by name', async () => {
  const m = await loadModel(model.dir, { quant: 'fp32', worker: false });
  try {
    const thinking = m.tokenizer.decode(m.encode('hi', true)), direct = m.tokenizer.decode(m.encode('hi', true, { enable_thinking: false }));
    assert.ok(thinking.endsWith('<|im_start|>assistant\n'), thinking);
    assert.equal(direct, `${thinking}<think>\n\n</think>\n\n`);
    const c = await m.complete('hi', { chat: true, chatTemplateKwargs: { enable_thinking: false }, maxTokens: 2 });
    assert.equal(c.promptTokens, m.encode(direct, false).length);
    await assert.rejects(m.complete('hi', { chatTemplateKwargs: { enable_thinking: false } }), /generate: chatTemplateKwargs are variables of the chat template: they apply to chat prompts only/);
    await assert.rejects(m.complete('hi', { chat: true, chatTemplateKwargs: { messages: [] } }), /generate: chatTemplateKwargs cannot set "messages": the call sets it/);
    await assert.rejects(m.complete('hi', { chat: true, chatTemplateKwargs: [1] as never }), /generate: chatTemplateKwargs must be an object of template variables, got \[1\]/);
  } finally {
    await m.close();
  }
});

test('a lone GGUF file loads with its tokenizer rebuilt from metadata; logits equal the HF folder', async () => {
  const m = makeRandomQwen2({ dir: path.join(tmp, 'gguf-src'), seed: 4 });
  const lone = path.join(tmp, 'lone');
  fs.mkdirSync(lone, { recursive: true });
  fs.copyFileSync(m.files.ggufF32, path.join(lone, 'model.gguf'));
  const hf = await loadModel(m.dir, { quant: 'fp32', worker: false });
  const gg = await loadModel(path.join(lone, 'model.gguf'), { quant: 'fp32', worker: false });
  try {
    const text = 'Hello world, 你好 🙂 def f(x):\n\treturn x**2';
    assert.deepEqual(gg.tokenizer.encode(text), hf.tokenizer.encode(text));
    assert.equal(gg.tokenizer.decode(gg.tokenizer.encode(text)), text);
    const chat = [{ role: 'user', content: 'hi' }];
    assert.equal(gg.tokenizer.applyChatTemplate(chat, { addGenerationPrompt: true }), hf.tokenizer.applyChatTemplate(chat, { addGenerationPrompt: true }));
    const ids = hf.tokenizer.encode(text);
    assert.ok(maxDiff(await allLogits(gg.backend, ids), await allLogits(hf.backend, ids)) <= 1e-4);
  } finally {
    await hf.close();
    await gg.close();
  }
  // A chat_template.jinja beside a single-file model is its chat template (over the GGUF metadata's), and one of the
  // files the model is read with; llama2.c's .bin, which has none of its own, takes one the same way.
  fs.writeFileSync(path.join(lone, 'chat_template.jinja'), '{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}');
  assert.equal(openSource(path.join(lone, 'model.gguf')).tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }]), '[user] hi\n');
  assert.ok(openSourceFiles(path.join(lone, 'model.gguf')).includes(path.join(lone, 'chat_template.jinja')));
  // A GGUF named otherwise is said to be one (a .bin was read as llama2.c, its magic as a header of nonsense).
  for (const name of ['Model.Q4_0.GGUF', 'ggml-model-q4_0.bin']) {
    fs.copyFileSync(path.join(lone, 'model.gguf'), path.join(lone, name));
    assert.throws(() => openSource(path.join(lone, name)), { message: `model: ${path.join(lone, name)} is a GGUF file (its header starts with "GGUF"): give it a name ending in .gguf (a link will do)` });
  }
  const stories = path.join(tmp, 'stories');
  fs.mkdirSync(stories);
  for (const f of ['stories260K.bin', 'tok512.bin']) fs.copyFileSync(sharedPath(`models/stories260K/${f}`), path.join(stories, f));
  assert.throws(() => openSource(path.join(stories, 'stories260K.bin')).tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }]),
    { message: `tokenizer: ${path.join(stories, 'tok512.bin')} has no chat template (no chat_template.jinja, chat_template.json or chat_template in tokenizer_config.json; for a .gguf without one in its metadata, or a llama2.c .bin, a chat_template.jinja beside the file)` });
  fs.copyFileSync(path.join(lone, 'chat_template.jinja'), path.join(stories, 'chat_template.jinja'));
  assert.equal(openSource(path.join(stories, 'stories260K.bin')).tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }]), '[user] hi\n');
});

test('an adapter recording another base model (base_model_name_or_path) than the one it is loaded on is noted, by name: a GGUF\'s quantisation, a cached model\'s repository and a converted folder\'s source count as the name', async () => {
  const dir = path.join(import.meta.dirname, '../models/default'), other = fs.mkdtempSync(path.join(os.tmpdir(), 'er-base-'));
  try {
    fs.cpSync(path.join(dir, 'reasoning-adapter'), other, { recursive: true });
    const cfg = path.join(other, 'adapter_config.json');
    fs.writeFileSync(cfg, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfg, 'utf8')), base_model_name_or_path: 'Qwen/Qwen2.5-0.5B-Instruct' }));
    const want = `adapter: ${other} was trained on Qwen/Qwen2.5-0.5B-Instruct (its adapter_config.json's base_model_name_or_path), and this model is ${dir}: on another model than its own an adapter answers worse without any error (if this is that model under another name, all is well)`;
    const notes: string[] = [];
    const m = await loadModel(dir, { adapter: other, worker: false, onNote: (n) => notes.push(n) });
    try {
      assert.deepEqual(notes, [want]);
      await (await m.withAdapter(path.join(dir, 'reasoning-adapter-rl'), { onNote: (n) => notes.push(n) })).close(); // its own base: no note
      await (await m.withAdapter(other, { onNote: (n) => notes.push(n) })).close();
      assert.deepEqual(notes, [want, want]);
    } finally {
      await m.close();
    }
    // The embedded default's adapters record models/default: loaded on it, no note.
    const quiet: string[] = [];
    await (await loadModel(dir, { adapter: path.join(dir, 'reasoning-adapter'), worker: false, onNote: (n) => quiet.push(n) })).close();
    assert.deepEqual(quiet, []);
  } finally {
    fs.rmSync(other, { recursive: true, force: true });
  }
  // Names compared: a path's or an id's last part, lower-cased, a GGUF's without its quantisation and part number.
  const snapshot = '/c/models--Qwen--Qwen2.5-0.5B-Instruct-GGUF/snapshots/' + 'a'.repeat(40);
  assert.deepEqual(modelNames({ path: `${snapshot}/qwen2.5-0.5b-instruct-q4_k_m.gguf` }), ['Qwen/Qwen2.5-0.5B-Instruct-GGUF', `${snapshot}/qwen2.5-0.5b-instruct-q4_k_m.gguf`]);
  assert.deepEqual(modelNames({ path: '/cache/x', manifest: { source: { path: '/m/Qwen2.5-0.5B' } } }), ['/cache/x', '/m/Qwen2.5-0.5B']);
  for (const [ref, name] of [['Qwen/Qwen2.5-0.5B-Instruct', 'qwen2.5-0.5b-instruct'], ['/m/qwen2.5-0.5b-instruct-q4_k_m.gguf', 'qwen2.5-0.5b-instruct'], ['Qwen2.5-7B-Instruct-Q8_0-00001-of-00003.gguf', 'qwen2.5-7b-instruct'],
    ['Qwen/Qwen2.5-0.5B-Instruct-GGUF', 'qwen2.5-0.5b-instruct'], ['models/default/', 'default'], [`${snapshot}`, 'qwen2.5-0.5b-instruct'], ['Llama-3.2-1B-Instruct-f16.gguf', 'llama-3.2-1b-instruct'],
    ['unsloth/Qwen2.5-0.5B-Instruct-bnb-4bit', 'qwen2.5-0.5b-instruct'], ['Qwen3-0.6B-UD-Q4_K_XL.gguf', 'qwen3-0.6b'], ['llama-2-7b-chat.Q4_K_M.gguf', 'llama-2-7b-chat'],
    ['meta-llama/Llama-2-7b-chat-hf', 'llama-2-7b-chat'], ['Qwen/Qwen2.5-7B-Instruct-AWQ', 'qwen2.5-7b-instruct'], ['mlx-community/Qwen2.5-0.5B-Instruct-4bit', 'qwen2.5-0.5b-instruct']]) assert.equal(refName(ref), name, ref);
  assert.equal(baseModelNote('/no/such/adapter', ['x']), undefined); // nothing recorded
  // llama.cpp's default file name says nothing of the model: not compared.
  const named = fs.mkdtempSync(path.join(os.tmpdir(), 'er-base-'));
  try {
    fs.writeFileSync(path.join(named, 'adapter_config.json'), JSON.stringify({ base_model_name_or_path: 'meta-llama/Llama-2-7b-chat-hf' }));
    assert.deepEqual([baseModelNote(named, ['/m/ggml-model-q4_0.gguf']), baseModelNote(named, ['/m/llama-2-7b-chat.Q4_K_M.gguf'])], [undefined, undefined]);
    assert.match(baseModelNote(named, ['/m/llama-2-13b-chat.Q4_K_M.gguf'])!, /was trained on meta-llama\/Llama-2-7b-chat-hf .* and this model is \/m\/llama-2-13b-chat\.Q4_K_M\.gguf:/);
  } finally {
    fs.rmSync(named, { recursive: true, force: true });
  }
});

test('withAdapter: a second adapter in the same session gives a separate load\'s logits, while the first keeps its own; batched steps group rows by adapter; names and targets are checked', async () => {
  const dir = path.join(import.meta.dirname, '../models/default'), sftDir = path.join(dir, 'reasoning-adapter'), rlDir = path.join(dir, 'reasoning-adapter-rl');
  const logitsOf = async (m: { backend: Backend }, ids: number[]) => {
    const c = await m.backend.newCache(1);
    try { return (await m.backend.step(c, { tokens: [ids], adapterMask: [ids.map(() => 1)], logits: 'all', want: { logits: true } })).logits!; } finally { await m.backend.free(c); }
  };
  const sft = await loadModel(dir, { adapter: sftDir }), ref = await loadModel(dir, { adapter: rlDir, worker: false });
  const ids = sft.encode('Sam has 12 apples. He gives 5 to Ann and buys 9 more. How many apples does Sam have now?', true);
  let refLogits: Float32Array = new Float32Array();
  try {
    const before = await logitsOf(sft, ids);
    const rl = await sft.withAdapter(rlDir);
    const [viaView, viaFirst] = await Promise.all([logitsOf(rl, ids), logitsOf(sft, ids)]); // both at once, one session
    refLogits = await logitsOf(ref, ids);
    assert.ok(maxDiff(viaView, refLogits) <= 1e-5, 'the second adapter gives what loading the model with it gives');
    assert.ok(maxDiff(viaFirst, before) <= 1e-6, 'the first adapter is unchanged');
    assert.ok(maxDiff(viaView, viaFirst) > 0.1, 'the two adapters differ');
    // withAdapter on the second model adds a third adapter; the second keeps its own.
    const third = await rl.withAdapter(sftDir);
    assert.ok(maxDiff(await logitsOf(third, ids), before) <= 1e-5);
    assert.ok(maxDiff(await logitsOf(rl, ids), viaView) <= 1e-6);
    await third.close();
    // Decode steps of both adapters in one stepMany: each row gets its own adapter's logits, as alone.
    const b = sft.backend as WorkerBackend, name = 'rl';
    await b.setAdapter(loadAdapter(rlDir, sft.config).tensors, name);
    const caches = await Promise.all([0, 1, 2].map(() => b.newCache(1)));
    for (const [i, c] of caches.entries()) await b.step(c, { tokens: [ids], adapterMask: [ids.map(() => 1)], ...(i ? { adapterName: name } : {}) });
    const req = (i: number): StepRequest => ({ tokens: [[ids[3 + i]]], adapterMask: [[1]], want: { logits: true }, ...(i ? { adapterName: name } : {}) });
    const many = await b.stepMany(caches, [0, 1, 2].map(req)) as StepResult[];
    const forks = await Promise.all(caches.map((c) => b.select(c, [0])));
    for (const c of caches) await b.truncate(c, 0, ids.length);
    for (let i = 0; i < 3; i++) assert.ok(maxDiff(many[i].logits!, (await b.step(caches[i], req(i))).logits!) <= 1e-5, `row ${i}`);
    assert.ok(maxDiff(many[1].logits!, many[0].logits!) > 0.01);
    await assert.rejects(b.step(forks[0], { tokens: [[1]], adapterName: 'nope' }), /engine: no adapter named "nope" is set \(adapters: "", "adapter \d+: .*reasoning-adapter-rl", "rl"\)/);
    // Closing the second model removes its adapter and leaves the session to the first; the closed one refuses calls.
    // A view of it lives on (its steps go to the session, not through the closed view) until it closes its own.
    const child = await rl.withAdapter(sftDir);
    await rl.close();
    assert.ok(maxDiff(await logitsOf(sft, ids), before) <= 1e-6);
    assert.ok(maxDiff(await logitsOf(child, ids), before) <= 1e-5);
    await child.close();
    await assert.rejects(b.step(forks[0], { tokens: [[1]], adapterName: 'nope' }), /\(adapters: "", "rl"\)$/); // both removed
    await assert.rejects(rl.complete('Hello', { maxTokens: 1 }), /^Error: runtime: model is closed$/);
    await assert.rejects(answer(rl, 'Hello', { signal: AbortSignal.abort() }), /^Error: runtime: model is closed$/); // cancelled or not
    await assert.rejects(rl.withAdapter(sftDir), /^Error: runtime: model is closed$/);
    await rl.close(); // again: a no-op
    // A view's step still queued when the view closes (its adapter removed first) fails as a closed model's call.
    const inner = delegate(b, {}), at = await b.newCache(1);
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    inner.step = async (c, r) => { await held; return b.step(c, r); };
    await b.setAdapter(loadAdapter(rlDir, sft.config).tensors, 'racing');
    const view = adapterView(inner, 'racing'), stepping = view.step(at, { tokens: [ids], adapterMask: [ids.map(() => 1)] });
    await view.close();
    release();
    await assert.rejects(stepping, /^Error: runtime: model is closed$/);
    await assert.rejects(sft.withAdapter(5 as never), /withAdapter: dir must be the path of a PEFT adapter folder, got 5/);
  } finally {
    await Promise.all([sft.close(), ref.close()]);
  }
  // Closing a view after its model, in either backend, and a local model twice: no-ops; later calls are refused alike.
  for (const worker of [true, false]) {
    const m = await loadModel(dir, { adapter: sftDir, worker }), v = await m.withAdapter(rlDir);
    await m.close();
    await v.close();
    await m.close();
    await assert.rejects(m.complete('Hello', { maxTokens: 1 }), /runtime: model is closed/, `worker ${worker}`);
    // With a code an app can branch on (a shutdown race, not a failure), through answer() too.
    const closedError = (e: unknown) => e instanceof ModelClosedError && e.message === 'runtime: model is closed' && e.code === 'model_closed' && String(e) === 'Error: runtime: model is closed';
    for (const call of [m.complete('Hello'), answer(m, 'Hello'), v.generateBatch(['Hello'])]) await assert.rejects(call, closedError, `worker ${worker}`);
    // Closed while generating: the step running finishes, the generation is refused alike (an in-process session
    // used to be released under its step: "Session already disposed").
    const busy = await loadModel(dir, { worker }), step = busy.backend.step.bind(busy.backend);
    let closing: Promise<void> | undefined;
    busy.backend.step = (...a) => { const r = step(...a); closing ??= busy.close(); return r; };
    await assert.rejects(busy.complete('Hello', { maxTokens: 20, temperature: 1, stopTokens: [] }), (e: unknown) => closedError(e), `worker ${worker}`); // in flight: the class too
    await closing;
    // More rows than one run takes (maxRows) always leave steps queued: close() refuses them and later calls at once,
    // rather than waiting for every call to finish.
    const crowded = await loadModel(dir, { worker }), narrow = new CoalescingBackend((crowded.backend as CoalescingBackend).inner, { maxRows: 1 });
    const stepNarrow = narrow.step.bind(narrow);
    let steps = 0, shut: Promise<void> | undefined;
    narrow.step = (...a) => { if (++steps === 6) shut = narrow.close(); return stepNarrow(...a); };
    const m3 = withBackend(crowded, narrow), story = (i: number) => m3.complete(`Story ${i}`, { maxTokens: 200, temperature: 1, seed: i, stopTokens: [] });
    const ends = await Promise.all([0, 1, 2].map((i) => story(i).then((c) => `${c.tokens.length} tokens`, (e: Error) => e.message)));
    assert.deepEqual(ends, new Array(3).fill('runtime: model is closed'), `worker ${worker}`);
    await shut;
    await assert.rejects(story(3), /^Error: runtime: model is closed$/);
    if (!worker) {
      // Closed twice while a step runs: neither close() resolves before the session is released.
      const twice = await loadModel(dir, { worker: false }), engine = ((twice.backend as CoalescingBackend).inner as unknown as LocalBackend).engine;
      const release = engine.close.bind(engine);
      let released = false;
      engine.close = async () => { await release(); released = true; };
      const gen = twice.complete('Hello', { maxTokens: 20, temperature: 1, stopTokens: [] }).catch(() => undefined);
      await new Promise((r) => setImmediate(r));
      const closes = [twice.close(), twice.close()];
      await closes[1];
      assert.ok(released, 'the second close() waited for the release');
      await Promise.all([...closes, gen]);
    }
  }
  // A view dropped without close() gives its adapter back once collected; a closed engine keeps no adapter.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  // A model dropped without close() ends its session (its worker) once collected: each forgotten one stayed for good.
  for (const worker of [true, false]) {
    const session = await (async () => {
      const dropped = await loadModel(dir, { worker });
      await dropped.complete('Hello', { maxTokens: 1 });
      return (dropped.backend as CoalescingBackend).inner;
    })();
    const closed = () => session.newCache(1).then((h) => session.free(h).then(() => false), (e: Error) => /model is closed/.test(e.message));
    let ended = false;
    for (let i = 0; i < 100 && !(ended = await closed()); i++) { gc(); await new Promise((r) => setTimeout(r, 20)); }
    assert.ok(ended, `the session of a dropped model (worker ${worker}) still serves`);
  }
  const base = await loadModel(dir, { adapter: sftDir, worker: false }), engine = ((base.backend as CoalescingBackend).inner as unknown as LocalBackend).engine as unknown as { adapterFeeds: Map<string, unknown> };
  await (async () => { await (await base.withAdapter(rlDir)).complete('Hello', { maxTokens: 1 }); })();
  assert.equal(engine.adapterFeeds.size, 2);
  for (let i = 0; i < 100 && engine.adapterFeeds.size > 1; i++) { gc(); await new Promise((r) => setTimeout(r, 20)); }
  assert.equal(engine.adapterFeeds.size, 1, 'the dropped view\'s adapter is still set');
  // Its backend kept alone (the model dropped) keeps the adapter; then dropped, it goes.
  let held: Backend | undefined = await (async () => (await base.withAdapter(rlDir)).backend)();
  for (let i = 0; i < 20; i++) { gc(); await new Promise((r) => setTimeout(r, 20)); }
  assert.equal(engine.adapterFeeds.size, 2, 'the adapter of a view whose backend is held went');
  assert.ok(held);
  held = undefined;
  for (let i = 0; i < 100 && engine.adapterFeeds.size > 1; i++) { gc(); await new Promise((r) => setTimeout(r, 20)); }
  assert.equal(engine.adapterFeeds.size, 1, 'the dropped backend\'s adapter is still set');
  await base.close();
  assert.equal(engine.adapterFeeds.size, 0);
  // A graph without LoRA inputs for an adapter's projections refuses it by name.
  const out = path.join(tmp, 'default-q-only');
  convertModel(openSource(dir), out, { loraTargets: ['q_proj'] });
  const qOnly = await loadModel(out, { worker: false });
  try {
    await assert.rejects(qOnly.withAdapter(rlDir), /engine: the adapter has LoRA weights for model\.layers\.0\.self_attn\.k_proj, but this graph takes LoRA inputs only for q: load the model with an adapter on the same projections/);
    // LoRA weights of another model's sizes are refused when set: taken, they failed every later run, with the adapter or not.
    const q = 'model.layers.0.self_attn.q_proj', out = qOnly.config.numHeads * qOnly.config.headDim, inp = qOnly.config.hiddenSize;
    const wrong = new Map([[q, { a: new Float32Array(2 * 2 * inp), b: new Float32Array(out * 2), rank: 2, in: 2 * inp, out }]]);
    await assert.rejects(qOnly.backend.setAdapter(wrong), new RegExp(`^Error: engine: the adapter's model\\.layers\\.0\\.self_attn\\.q_proj is ${out} × ${2 * inp} \\(out × in\\), but this model's is ${out} × ${inp}: an adapter for another model\\?$`));
    await qOnly.complete('Hello', { maxTokens: 2 }); // still runs
  } finally {
    await qOnly.close();
  }
  await assert.rejects(loadModel(out, { loraTargets: ['k_proj'] }), /default-q-only was converted without LoRA inputs for k_proj \(it has them for q_proj\); convert again with --lora-targets q_proj,k_proj$/);
  // loraTargets builds LoRA inputs without an adapter, so that any adapter on them can join later.
  const bare = await loadModel(dir, { worker: false, loraTargets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] });
  try {
    assert.ok(maxDiff(await logitsOf(await bare.withAdapter(rlDir), ids), refLogits) <= 1e-5);
  } finally {
    await bare.close();
  }
});

test('a vocabulary without <think> tokens (Qwen2.5\'s): the thinking closes where its text does, stop strings apply after it, and the cap forces the close as the model writes it', () => {
  const json = JSON.parse(fs.readFileSync(path.join(QWEN_TOKENIZER_DIR, 'tokenizer.json'), 'utf8'));
  json.added_tokens = json.added_tokens.filter((t: { content: string }) => !/^<\/?think>$/.test(t.content));
  const tok = loadTokenizer({ tokenizerJson: json, tokenizerConfig: JSON.parse(fs.readFileSync(path.join(QWEN_TOKENIZER_DIR, 'tokenizer_config.json'), 'utf8')) });
  const enc = (t: string) => tok.encode(t, { addSpecialTokens: false }), rt = reasoningTokens({ tokenizer: tok, adapter: undefined });
  assert.deepEqual([rt.invocation, rt.force], [enc('<think>\n'), enc('\n</think>\n\n')], 'as the model writes them: ">\\n" and ">\\n\\n" are single tokens');
  const ids = enc('12 - 4 = 8.\n</think>\n\n#### 8');
  assert.ok(!ids.some((_, i) => rt.end.every((t, k) => ids[i + k] === t)), 'the "</think>" ids never occur as a run');
  const run = (o: object) => { const s = new Sequence(tok, { maxTokens: 100, stopTokens: [], thinking: thinkingOptions(rt), ...o }, 1); for (const t of ids) if (s.accept(t, 0)) break; return s; };
  const s = run({});
  assert.equal(tok.decode(ids.slice(0, s.thinkingTokens)), '12 - 4 = 8.\n');
  assert.equal(tok.decode(ids.slice(s.answerFrom!)), '#### 8');
  const cut = run({ stop: ['8'] });
  assert.deepEqual([cut.finishReason, cut.text.trim()], ['stop', '12 - 4 = 8.\n</think>\n\n####'], 'the "8" of the thinking is not a stop; the answer\'s is');
  // Capped at 3 thinking tokens: after two, one more is sampled; a third that is not the forced "\n" is dropped and
  // "\n</think>\n\n" forced (its "\n" the third), and the segment is closed.
  const capped = new Sequence(tok, { maxTokens: 100, stopTokens: [], thinking: thinkingOptions(rt, 3) }, 1);
  capped.accept(ids[0], 0);
  capped.accept(ids[1], 0);
  assert.deepEqual(capped.takeFeed(), ids.slice(0, 2));
  assert.notEqual(ids[2], rt.force[0]);
  capped.accept(ids[2], 0);
  assert.deepEqual(capped.takeFeed(), rt.force);
  // A segment that closes by itself exactly at the cap, its tag written in pieces ("</" "think" ">\n\n"), is not cut.
  const exact = run({ thinking: thinkingOptions(rt, s.thinkingTokens) });
  assert.deepEqual([exact.thinkingTokens, exact.answerFrom, exact.forcedTokens, exact.text], [s.thinkingTokens, s.answerFrom, 0, s.text]);
  // A stop token at the edge (it begins no closing tag) is dropped: the close is forced, and the model answers.
  const eos = new Sequence(tok, { maxTokens: 100, thinking: thinkingOptions(rt, 3) }, 1);
  eos.accept(ids[0], 0);
  eos.accept(ids[1], 0);
  eos.takeFeed();
  assert.equal(eos.accept(tok.eosTokenIds[0], 0), false);
  assert.deepEqual([eos.takeFeed(), eos.thinkingOpen, eos.done], [rt.force, false, false]);
  // One token less: the close is forced, the segment stays within the cap.
  const under = run({ thinking: thinkingOptions(rt, s.thinkingTokens - 1) });
  assert.ok(under.forcedTokens > 0 && under.thinkingTokens === s.thinkingTokens - 1, JSON.stringify([under.forcedTokens, under.thinkingTokens]));
  assert.deepEqual([capped.thinkingTokens, capped.answerFrom, capped.thinkingOpen], [3, 2 + rt.force.length, false]);
  // A tag begun at the edge and then abandoned ("</" "think" then "\n", or a word): the token is dropped and the
  // tag completed by force, so its pieces stay out of the segment, which never passes the cap.
  const [lt, think] = [enc('</')[0], enc('think')[0]];
  assert.deepEqual(tok.decode([lt, think]), '</think');
  for (const K of [0, 1, 3]) {
    for (const abandon of [enc('\n')[0], enc(' a')[0], lt]) {
      const q = new Sequence(tok, { maxTokens: 100, stopTokens: [], thinking: thinkingOptions(rt, K) }, 1);
      for (const t of [...enc(' a a a').slice(0, Math.max(0, K - 1)), lt, think, abandon, lt, think]) if (q.accept(t, 0) || !q.thinkingOpen) break;
      assert.ok(!q.thinkingOpen && q.thinkingTokens <= K, `cap ${K}, then ${JSON.stringify(tok.decode([abandon]))}: ${q.thinkingTokens} thinking tokens in ${JSON.stringify(q.text)}`);
      assert.ok(q.text.includes('</think>\n\n'), JSON.stringify(q.text));
    }
  }
});

test('thinking cap where "</think>" is one token (Qwen3, the default model): a "<" at the edge is dropped and the close forced with that token, not spelled out in pieces', () => {
  for (const tok of [loadTokenizer(QWEN_TOKENIZER_DIR), loadTokenizer(path.resolve(import.meta.dirname, '../models/default'))]) {
    const enc = (t: string) => tok.encode(t, { addSpecialTokens: false }), rt = reasoningTokens({ tokenizer: tok, adapter: undefined });
    const word = enc(' a').at(-1)!, lt = enc('<')[0];
    assert.equal(rt.end.length, 1);
    for (const K of [1, 2, 4]) {
      const q = new Sequence(tok, { maxTokens: 60, stopTokens: [], thinking: thinkingOptions(rt, K) }, 1);
      for (const t of [...Array(K - 1).fill(word), lt, word, word]) if (q.accept(t, 0) || !q.thinkingOpen) break;
      assert.ok(!q.thinkingOpen && q.thinkingTokens <= K, `cap ${K}: open ${q.thinkingOpen}, ${q.thinkingTokens} thinking tokens`);
      assert.deepEqual(q.tokens, [...Array(K - 1).fill(word), ...rt.force], `cap ${K}: ${JSON.stringify(q.text)}`);
    }
  }
});

test('thinking cap on Qwen3 (a "</think>" token) and SentencePiece (llama2.c) vocabularies: a tag begun in pieces and then abandoned, or closed by the tag token, never passes the cap', () => {
  const qwen3 = loadTokenizer(QWEN_TOKENIZER_DIR), sp = loadLlama2c(sharedPath('models/stories260K/stories260K.bin')).tokenizer;
  for (const [name, tok] of [['qwen3', qwen3], ['sentencepiece', sp]] as const) {
    const enc = (t: string) => tok.encode(t, { addSpecialTokens: false }), rt = reasoningTokens({ tokenizer: tok, adapter: undefined });
    const word = enc(' a').at(-1)!, begun = name === 'qwen3' ? [enc('</')[0], enc('think')[0]] : [enc('<').at(-1)!, enc('/').at(-1)!];
    for (const K of [0, 1, 2, 4]) {
      for (const after of [word, ...(name === 'qwen3' ? [rt.end[0]] : [])]) {
        const q = new Sequence(tok, { maxTokens: 60, stopTokens: [], thinking: thinkingOptions(rt, K) }, 1);
        for (const t of [...Array(Math.max(0, K - 1)).fill(word), ...begun, after, word, word, word]) if (q.accept(t, 0) || !q.thinkingOpen) break;
        assert.ok(!q.thinkingOpen && q.thinkingTokens <= K, `${name} cap ${K}, then ${JSON.stringify(tok.decode([after]))}: open ${q.thinkingOpen}, ${q.thinkingTokens} thinking tokens in ${JSON.stringify(q.text)}`);
      }
    }
  }
});

test('ropeScaling at load: YaRN / linear over a plain checkpoint as its config.json would set them, none takes YaRN away; converted folders and cached copies keep theirs; misuse refused by name', async () => {
  const c = model.config, n = c.maxPositionEmbeddings;
  const yarn = withRopeScaling(c, { type: 'yarn', factor: 4 }, 'm');
  assert.deepEqual([yarn.ropeScaling, yarn.maxPositionEmbeddings], [{ type: 'yarn', factor: 4, originalMaxPositionEmbeddings: n, betaFast: 32, betaSlow: 1, attentionFactor: 0.1 * Math.log(4) + 1 }, 4 * n]);
  assert.deepEqual(withRopeScaling(yarn, { type: 'none' }, 'm'), c);
  assert.equal(withRopeScaling(c, { type: 'none' }, 'm'), c); // nothing changes: the same config
  // A checkpoint declaring more than its YaRN reaches (config.json's max_position_embeddings) keeps that context.
  const wide = withRopeScaling(c, { type: 'yarn', factor: 2, originalMaxPositionEmbeddings: n / 8 }, 'm');
  assert.deepEqual([wide.maxPositionEmbeddings, withRopeScaling(wide, { type: 'yarn', factor: 2, originalMaxPositionEmbeddings: n / 8 }, 'm') === wide], [n, true]);
  assert.deepEqual([withRopeScaling(wide, { type: 'none' }, 'm').maxPositionEmbeddings, withRopeScaling(wide, { type: 'yarn', factor: 16 }, 'm').maxPositionEmbeddings], [n, 2 * n]);
  assert.deepEqual(withRopeScaling(yarn, { type: 'yarn', factor: 2 }, 'm').ropeScaling, { ...yarn.ropeScaling, factor: 2, attentionFactor: 0.1 * Math.log(2) + 1 });
  const linear = withRopeScaling(c, { type: 'linear', factor: 2.5 }, 'm');
  assert.deepEqual([linear.ropeScaling, linear.maxPositionEmbeddings], [{ type: 'linear', factor: 2.5 }, Math.floor(2.5 * n)]);
  assert.throws(() => withRopeScaling(linear, { type: 'none' }, 'm'), /^Error: m was trained with linear RoPE scaling, which stays: ropeScaling none cannot replace it$/);
  assert.equal(withRopeScaling(linear, { type: 'linear', factor: 2.5 }, 'm'), linear); // its own, restated
  const ownYarn = { ...c, ropeScaling: { type: 'yarn' as const, factor: 4, originalMaxPositionEmbeddings: n, betaFast: 16, betaSlow: 2, attentionFactor: 1.5 }, maxPositionEmbeddings: 4 * n };
  for (const same of [{ type: 'yarn', factor: 4 }, { type: 'yarn', factor: 4, originalMaxPositionEmbeddings: n }] as const) assert.equal(withRopeScaling(ownYarn, same, 'm'), ownYarn); // its betas and attention factor kept
  assert.throws(() => withRopeScaling({ ...c, ropeFreqFactors: new Array(c.headDim / 2).fill(2) }, { type: 'yarn', factor: 4 }, 'm'), /^Error: m was trained with per-frequency RoPE factors \(rope_freqs\.weight\), which stays: ropeScaling yarn ×4 cannot replace it$/);
  assert.throws(() => withRopeScaling(c, { type: 'yarn', factor: 4096 }, 'm'), new RegExp(`^Error: m: ropeScaling\\.factor × its trained context \\(4096 × ${n} = ${4096 * n} positions\\) must be at most 1048576`));
  for (const [bad, message] of [
    ['yarn', /^Error: loadModel: ropeScaling must be an object such as \{type: "yarn", factor: 4\}, got "yarn"$/],
    [{ type: 'dynamic', factor: 2 }, /^Error: loadModel: ropeScaling\.type must be "yarn", "linear" or "none", got "dynamic"$/],
    [{ type: 'yarn' }, /^Error: loadModel: ropeScaling\.factor must be a number above 1 \(how many times the context is stretched\), got undefined$/],
    [{ type: 'linear', factor: 1 }, /ropeScaling\.factor must be a number above 1 .*, got 1; type "none" is RoPE unscaled$/],
    [{ type: 'linear', factor: 2, originalMaxPositionEmbeddings: 64 }, /^Error: loadModel: ropeScaling\.originalMaxPositionEmbeddings is YaRN's: leave it out with type "linear"$/],
    [{ type: 'yarn', factor: 2, originalMaxPositionEmbeddings: 64.5 }, /^Error: loadModel: ropeScaling\.originalMaxPositionEmbeddings must be a positive whole number of positions, got 64\.5$/],
    [{ type: 'none', factor: 2 }, /^Error: loadModel: ropeScaling "none" takes no factor or originalMaxPositionEmbeddings$/],
    [{ type: 'yarn', factor: 4, beta_fast: 16 }, /^Error: loadModel: ropeScaling has "beta_fast"; its fields are type, factor, originalMaxPositionEmbeddings$/],
  ] as const) await assert.rejects(loadModel(model.dir, { ropeScaling: bad as never }), message);

  // The choice at load gives the logits of the same checkpoint whose config.json says it (llamacpp.test checks that
  // route against llama.cpp); none over that folder gives the plain model's.
  const said = path.join(tmp, 'qwen2-yarn');
  fs.cpSync(model.dir, said, { recursive: true });
  const cfg = JSON.parse(fs.readFileSync(path.join(said, 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(said, 'config.json'), JSON.stringify({ ...cfg, rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32 } }));
  const ids = prompt.slice(0, 23);
  const [chosen, fromFile, plain, none] = await Promise.all([
    loadModel(model.dir, { worker: false, ropeScaling: { type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 32 } }),
    loadModel(said, { worker: false }), loadModel(model.dir, { worker: false }), loadModel(said, { worker: false, ropeScaling: { type: 'none' } }),
  ]);
  try {
    assert.deepEqual(chosen.config, fromFile.config); // the declared context stays (2048: more than YaRN's 4 × 32)
    const [a, b, p, q] = await Promise.all([chosen, fromFile, plain, none].map((m) => allLogits(m.backend, ids)));
    assert.ok(maxDiff(a, b) <= 1e-6, `chosen vs config.json: ${maxDiff(a, b)}`);
    assert.ok(maxDiff(q, p) <= 1e-6, `none vs plain: ${maxDiff(q, p)}`);
    assert.ok(maxDiff(a, p) > 1e-3, `YaRN should change the logits at these positions (by ${maxDiff(a, p)})`);
  } finally {
    await Promise.all([chosen, fromFile, plain, none].map((m) => m.close()));
  }

  // A converted folder keeps the scaling it was converted with, and says how to convert with another.
  const out = path.join(tmp, 'converted-yarn');
  const m = convertModel(model.dir, out, { quant: 'fp32', ropeScaling: { type: 'yarn', factor: 2 } });
  assert.deepEqual([m.options.ropeScaling, m.config.ropeScaling?.type, m.config.maxPositionEmbeddings], [{ type: 'yarn', factor: 2, originalMaxPositionEmbeddings: n }, 'yarn', 2 * n]);
  for (const same of [undefined, { type: 'yarn', factor: 2 }, { type: 'yarn', factor: 2, originalMaxPositionEmbeddings: n }] as const) {
    const loaded = await loadModel(out, { worker: false, ropeScaling: same });
    assert.equal(loaded.config.maxPositionEmbeddings, 2 * n);
    await loaded.close();
  }
  await assert.rejects(loadModel(out, { ropeScaling: { type: 'none' } }), new RegExp(`^Error: model: ${out} was converted with RoPE scaling yarn ×2 over ${n} positions, not none; convert the source again with it: edgereason convert --model ${model.dir} --out <folder> --quant fp32 --rope-scaling none$`));
  // Its source gone, a converted folder still says which convert would make it.
  const gone = path.join(tmp, 'qwen2-gone'), goneOut = path.join(tmp, 'qwen2-gone-onnx');
  fs.cpSync(model.dir, gone, { recursive: true });
  convertModel(gone, goneOut, { quant: 'fp32' });
  fs.rmSync(gone, { recursive: true });
  await assert.rejects(loadModel(goneOut, { ropeScaling: { type: 'linear', factor: 2 } }), new RegExp(`^Error: model: ${goneOut} was converted with RoPE scaling none, not linear ×2; convert the source again with it: edgereason convert --model ${gone} --out <folder> --quant fp32 --rope-scaling linear --rope-scale 2$`));
  // A source trained with linear scaling, converted with it restated: another one is refused as the model's own.
  const trainedLinear = path.join(tmp, 'qwen2-linear');
  fs.cpSync(model.dir, trainedLinear, { recursive: true });
  fs.writeFileSync(path.join(trainedLinear, 'config.json'), JSON.stringify({ ...cfg, rope_scaling: { rope_type: 'linear', factor: 2 } }));
  const tl = convertModel(trainedLinear, path.join(tmp, 'qwen2-linear-onnx'), { quant: 'fp32', ropeScaling: { type: 'linear', factor: 2 } });
  assert.equal(tl.options.ropeScaling, undefined); // nothing chosen: the source's own
  await assert.rejects(loadModel(path.join(tmp, 'qwen2-linear-onnx'), { ropeScaling: { type: 'linear', factor: 3 } }), /^Error: .*qwen2-linear-onnx was trained with linear RoPE scaling, which stays: ropeScaling linear ×3 cannot replace it$/);
  // Converted with linear scaling: another choice is the conversion's to change, not a scaling the model was trained with.
  const lin = path.join(tmp, 'converted-linear');
  convertModel(model.dir, lin, { quant: 'fp32', ropeScaling: { type: 'linear', factor: 2 } });
  await assert.rejects(loadModel(lin, { ropeScaling: { type: 'yarn', factor: 4 } }), new RegExp(`^Error: model: ${lin} was converted with RoPE scaling linear ×2, not yarn ×4; convert the source again with it: edgereason convert --model ${model.dir} --out <folder> --quant fp32 --rope-scaling yarn --rope-scale 4$`));
  const manifest = path.join(out, 'edgereason.json'), written = fs.readFileSync(manifest, 'utf8');
  fs.writeFileSync(manifest, written.replace('"format": 2', '"format": 1'));
  await assert.rejects(loadModel(out), new RegExp(`run \`edgereason convert --model ${model.dir} --out ${out} --quant fp32 --rope-scaling yarn --rope-scale 2 --yarn-orig-ctx ${n}\` again`));
  const bad = JSON.parse(written);
  bad.options.ropeScaling.factor = '2';
  fs.writeFileSync(manifest, JSON.stringify(bad));
  await assert.rejects(loadModel(out), /edgereason\.json: options\.ropeScaling\.factor must be a number above 1 .*, got "2"/);

  // Mistral attends within a sliding window, computed here as whole attention up to it: no scaling takes it further.
  const mistral = makeRandomQwen2({ dir: path.join(tmp, 'mistral'), seed: 5, gguf: false, config: { architecture: 'llama', numLayers: 1, maxPositionEmbeddings: 256 } }).dir;
  const raw = JSON.parse(fs.readFileSync(path.join(mistral, 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(mistral, 'config.json'), JSON.stringify({ ...raw, architectures: ['MistralForCausalLM'], model_type: 'mistral', sliding_window: 128 }));
  await assert.rejects(loadModel(mistral, { ropeScaling: { type: 'yarn', factor: 4 } }), new RegExp(`^Error: model: ${mistral} attends within a sliding window of 128 positions \\(Mistral's\\), which the graph computes as whole attention up to it: RoPE scaling yarn ×4 cannot take its context past the window \\(to 512 positions\\)$`));
  // Converted without a scaling, it is refused for the source's own reason, not sent to a convert that would fail.
  convertModel(mistral, path.join(tmp, 'mistral-onnx'), { quant: 'fp32' });
  await assert.rejects(loadModel(path.join(tmp, 'mistral-onnx'), { ropeScaling: { type: 'yarn', factor: 4 } }), /^Error: model: .*mistral attends within a sliding window of 128 positions/);
  const within = await loadModel(mistral, { worker: false, ropeScaling: { type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 16 } });
  assert.deepEqual([within.config.ropeScaling?.type, within.config.maxPositionEmbeddings], ['yarn', 128]);
  await within.close();

  // The cache keeps a copy per scaling beside the plain one; a choice that changes nothing uses the plain copy.
  const cacheDir = path.join(tmp, 'cache-rope'), notes: string[] = [];
  const cached = async (ropeScaling?: LoadOptions['ropeScaling']) => {
    const loaded = await loadModel(model.dir, { worker: false, cache: 'always', cacheDir, ropeScaling, onNote: (x) => notes.push(x) });
    await loaded.close();
    // The copy's tokenizer is the source's (not built again from the copy's files): it names the user's folder.
    assert.equal((loaded.tokenizer as { name?: string }).name, model.dir);
    return [loaded.config.ropeScaling?.type, loaded.config.maxPositionEmbeddings];
  };
  assert.deepEqual(await cached({ type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 32 }), ['yarn', n]);
  assert.deepEqual(await cached(), [undefined, n]);
  assert.deepEqual(await cached({ type: 'none' }), [undefined, n]);
  assert.deepEqual(await cached({ type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 32 }), ['yarn', n]);
  // YaRN over the default original context, and spelt out: one copy.
  assert.deepEqual(await cached({ type: 'yarn', factor: 2 }), ['yarn', 2 * n]);
  assert.deepEqual(await cached({ type: 'yarn', factor: 2, originalMaxPositionEmbeddings: n }), ['yarn', 2 * n]);
  const entries = cacheEntries(cacheDir);
  assert.deepEqual(entries.map((e) => [path.basename(e.dir).replace(/-[0-9a-f]{10}$/, ''), e.state]), [['qwen2-fp32', 'ready'], [`qwen2-fp32-rope-yarn2x${n}`, 'ready'], ['qwen2-fp32-rope-yarn4x32', 'ready']]);
  assert.deepEqual(notes.map((x) => x.replaceAll(tmp, '<tmp>').replace(/ \(about [\d.]+ GiB\)/, '').replace(/; later loads .*$/, '').replace(/-[0-9a-f]{10}$/, '')), [
    'model: converting <tmp>/qwen2 once into <tmp>/cache-rope/converted/qwen2-fp32-rope-yarn4x32',
    'model: converting <tmp>/qwen2 once into <tmp>/cache-rope/converted/qwen2-fp32',
    'model: using the converted copy of <tmp>/qwen2 in <tmp>/cache-rope/converted/qwen2-fp32',
    'model: using the converted copy of <tmp>/qwen2 in <tmp>/cache-rope/converted/qwen2-fp32-rope-yarn4x32',
    `model: converting <tmp>/qwen2 once into <tmp>/cache-rope/converted/qwen2-fp32-rope-yarn2x${n}`,
    `model: using the converted copy of <tmp>/qwen2 in <tmp>/cache-rope/converted/qwen2-fp32-rope-yarn2x${n}`,
  ]);
});
