import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel, type Model } from '../src/runtime/model.ts';
import type { Backend, CacheHandle, KVRow, StepRequest, StepResult } from '../src/runtime/backend.ts';
import type { ModelConfig } from '../src/models/config.ts';
import { PROJECTIONS, projectionShape, projectionTensorName, withRopeScaling } from '../src/models/config.ts';
import { saveAdapter } from '../src/io/peft.ts';
import { openSafetensors, writeSafetensors } from '../src/io/safetensors.ts';
import { generateBatch, lastIndexOfRun, Sequence } from '../src/runtime/generate.ts';
import type { TextTokenizer } from '../src/tokenizer/types.ts';
import { loadTokenizer } from '../src/tokenizer/hf.ts';
import { seededRandom } from '../src/runtime/sampler.ts';
import { answer, budgetSystemLine, invocationIds, maxThinkingCap, thinkingOptions, MIN_ESCALATION_ROOM, prefill, Reasoner, reasoningTokens, modelShape, modelNote, pairingNote, ropeNote, adapterHash, thinksByItself, phaseStream, splitText } from '../src/reason/answer.ts';
import { budgetControl } from '../src/reason/budget.ts';
import { extractAnswer } from '../src/tasks/grade.ts';
import { canStopEarly, checkedVote, confidenceVote, majorityVote, verifierBestOfN, verifierVote, vote, type Candidate } from '../src/reason/vote.ts';
import { checkWork } from '../src/reason/check.ts';
import { ContextLengthError } from '../src/index.ts';
import { sharedPath } from './helpers/shared.ts';
import { openSource } from '../src/io/source.ts';
import { accuracyAt, accuracyThreshold, auc, checkProbeTraining, chooseRouting, fitProbe, gateTrip, LinearProbe, Router, routingStats, thresholdCandidates, trainRouter, type RoutingRow } from '../src/reason/router.ts';
import { trainVerifier, Verifier, withinItemAuc } from '../src/reason/verifier.ts';
import { makeRandomQwen2, QWEN_TOKENIZER_DIR, rng } from './helpers/random-model.ts';
import { ADAPTER_DIR, DEFAULT_DIR } from '../src/tasks/default-model.ts';
import { makeSplits } from '../src/tasks/synthetic.ts';
import { maxDiff } from './helpers/numeric.ts';
import { defaultPromptCacheMib, openPromptCacheFile, PromptCache, PromptCacheMismatch, promptCacheOf, setPromptCache } from '../src/runtime/prompt-cache.ts';
import { grownCapacity, kvBytes } from '../src/runtime/kv-cache.ts';
import { runEval, syntheticCases } from '../src/eval/harness.ts';
import { loadServed } from '../src/server/models.ts';
import { fraction } from '../src/show.ts';
import { CoalescingBackend, withBackend } from '../src/runtime/scheduler.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-reason-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

// A random Qwen2 whose next-token choices are peaked (embeddings ×50, as in runtime.test.ts) and that never
// chooses "</think>", an EOS token or a whitespace-only token by itself: their (tied) embedding rows are zero, so
// their logit is exactly 0 while the best token's is positive (so a capped sample always has a visible answer).
const rm = makeRandomQwen2({ dir: path.join(tmp, 'qwen2'), seed: 3, gguf: false, config: { numLayers: 2 } });
const V = rm.config.vocabSize, Hd = rm.config.hiddenSize;
const THINK = V - 2, END_THINK = V - 1; // the cut-down Qwen tokenizer puts its added tokens last: <think>, </think>
const emb = rm.weights.get('model.embed_tokens.weight')!;
emb.data.forEach((v, i) => { emb.data[i] = v * 50; });
const tokenizer = loadTokenizer(rm.dir);
const silent = Array.from({ length: V }, (_, id) => id).filter((id) => !tokenizer.decode([id]).trim());
for (const id of [END_THINK, ...rm.config.eosTokenIds, ...silent]) emb.data.fill(0, id * Hd, (id + 1) * Hd);
writeSafetensors(path.join(rm.dir, 'model.safetensors'), rm.weights);

// A random LoRA adapter on every projection with alora_invocation_tokens = [<think>], and the same weights as a
// classic LoRA folder (no invocation tokens).
const adapterDir = path.join(tmp, 'alora'), classicDir = path.join(tmp, 'lora');
{
  const r = rng(9), rank = 4, tensors = new Map<string, { a: Float32Array; b: Float32Array }>();
  for (let l = 0; l < rm.config.numLayers; l++) for (const p of PROJECTIONS) {
    const [out, inp] = projectionShape(rm.config, p);
    tensors.set(projectionTensorName(l, p), {
      a: Float32Array.from({ length: rank * inp }, () => 0.1 * r.normal()),
      b: Float32Array.from({ length: out * rank }, () => 0.1 * r.normal()),
    });
  }
  saveAdapter(adapterDir, { r: rank, loraAlpha: 8, targets: [...PROJECTIONS], aloraInvocationTokens: [THINK] }, tensors, rm.config.numLayers);
  saveAdapter(classicDir, { r: rank, loraAlpha: 8, targets: [...PROJECTIONS] }, tensors, rm.config.numLayers);
}

let shared: Model | undefined;
async function model(): Promise<Model> {
  shared ??= await loadModel(rm.dir, { quant: 'fp32', adapter: adapterDir, worker: false, threads: 1 });
  return shared;
}

/** Logits [T, V] of a fresh single run of `ids` with the given adapter mask. */
async function fresh(m: Model, ids: number[], mask: number[]): Promise<Float32Array> {
  const c = await m.backend.newCache(1);
  const r = await m.backend.step(c, { tokens: [ids], adapterMask: [mask], logits: 'all', want: { logits: true } });
  await m.backend.free(c);
  return r.logits!;
}

function logSoftmaxAt(row: Float32Array, k: number): number {
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let s = 0;
  for (const v of row) s += Math.exp(v - max);
  return row[k] - max - Math.log(s);
}

function argmax(row: Float32Array): number {
  let b = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[b]) b = i;
  return b;
}

test('the invocation tokens come from the adapter config; the forced close is "\\n</think>\\n\\n"', async () => {
  const m = await model();
  const rt = reasoningTokens(m);
  assert.deepEqual(rt.invocation, [THINK]);
  assert.deepEqual(rt.end, [END_THINK]);
  assert.equal(m.tokenizer.decode(rt.force), '\n</think>\n\n');
  // An invocation the caller gives: the adapter's own is accepted, another refused (it used to be ignored, unsaid).
  assert.deepEqual(reasoningTokens(m, '<think>').invocation, [THINK]);
  await assert.rejects(answer(m, 'What is 2 plus 2?', { reasoning: 'on', invocation: 'Let me think.' }),
    { message: `answer: invocation "Let me think." is not the one the adapter was trained with (its adapter_config.json's alora_invocation_tokens, "<think>", in ${m.adapter!.dir}); leave invocation out` });
});

test('(a) shared KV: base prefill + invocation/continuation with the adapter equals one fresh run with the adapter from the invocation (≤ 1e-4)', async () => {
  const m = await model();
  const ids = m.encode('What is 12 plus 30?', true), inv = reasoningTokens(m).invocation;
  const cont = [17, 200, 3, 91, 45, 300];
  const feed = [...inv, ...cont], full = [...ids, ...feed];
  const ref = await fresh(m, full, [...ids.map(() => 0), ...feed.map(() => 1)]);
  const at = (t: number) => ref.subarray(t * V, (t + 1) * V);

  // The path answer() takes: one base prefill (mask 0), forked into rows, invocation + continuation with mask 1.
  const p = await prefill(m.backend, ids, 0);
  assert.ok(maxDiff(p.logits, at(ids.length - 1)) <= 1e-4, 'base prefill = the prompt part of the fresh run');
  const forked = await m.backend.select(p.cache, [0, 0, 0]);
  const r = await m.backend.step(forked, { tokens: [feed, feed, feed], adapterMask: [feed.map(() => 1), feed.map(() => 1), feed.map(() => 1)], logits: 'all', want: { logits: true } });
  for (let row = 0; row < 3; row++) {
    for (let t = 0; t < feed.length; t++) {
      const got = r.logits!.subarray((row * feed.length + t) * V, (row * feed.length + t + 1) * V);
      assert.ok(maxDiff(got, at(ids.length + t)) <= 1e-4, `row ${row} position ${t}`);
    }
  }
  // Token by token after the invocation (the decode loop's steps) gives the same logits.
  await m.backend.step(p.cache, { tokens: [inv], adapterMask: [inv.map(() => 1)] });
  for (let t = 0; t < cont.length; t++) {
    const s = await m.backend.step(p.cache, { tokens: [[cont[t]]], adapterMask: [[1]], want: { logits: true } });
    assert.ok(maxDiff(s.logits!, at(ids.length + inv.length + t)) <= 1e-4, `decode step ${t}`);
  }
  await Promise.all([m.backend.free(p.cache), m.backend.free(forked)]);
  // The adapter does change the continuation (the comparison is not vacuous).
  const allBase = await fresh(m, full, full.map(() => 0));
  assert.ok(maxDiff(allBase.subarray(ids.length * V), ref.subarray(ids.length * V)) > 1e-2);

  // answer() itself: a greedy sample is the argmax of the fresh run at every position; a sampled one has the
  // fresh run's log-probabilities (activated: adapter from the invocation on; classic: everywhere).
  for (const adapterMode of ['activated', 'classic'] as const) {
    for (const temperature of [0, 1]) {
      const res = await answer(m, 'What is 12 plus 30?', { reasoning: 'on', maxTokens: 8, adapterMode, temperature, seed: 4 });
      const toks = res.samples[0].tokenIds!;
      assert.equal(toks.length, 8);
      const seq = [...ids, ...inv, ...toks];
      const lg = await fresh(m, seq, seq.map((_, i) => (adapterMode === 'classic' || i >= ids.length ? 1 : 0)));
      let lp = 0;
      toks.forEach((tok, k) => {
        const row = lg.subarray((ids.length + inv.length - 1 + k) * V, (ids.length + inv.length + k) * V);
        if (!temperature) assert.equal(tok, argmax(row), `${adapterMode}: token ${k}`);
        lp += logSoftmaxAt(row, tok);
      });
      if (temperature) assert.ok(Math.abs(res.samples[0].meanLogprob - lp / toks.length) <= 1e-4, `${adapterMode}: ${res.samples[0].meanLogprob} vs ${lp / toks.length}`);
      assert.equal(res.route, 'reasoning');
      assert.equal(res.usage.promptTokens, ids.length + inv.length);
    }
  }
});

test('prompt caching: a prompt that begins like a kept one is prefilled from where they differ (the same logits ≤ 1e-4, the same answers); a chat\'s next turn reuses the last prompt; the budget drops the least recently used', async () => {
  const m = await loadModel(rm.dir, { quant: 'fp32', adapter: adapterDir, worker: false, threads: 1, promptCache: 1 });
  try {
    const q = 'What is 12 plus 30? Answer with the number and nothing else, please.', ids = m.encode(q, true);
    const longer = m.encode([{ role: 'user', content: q }, { role: 'assistant', content: '42' }, { role: 'user', content: 'And 12 plus 31?' }], true);
    assert.deepEqual(longer.slice(0, ids.length), ids);
    // prefill() from a kept beginning: the logits and hidden state of the prompt's end as from the start, and the
    // adapter's invocation after it as a fresh run gives it.
    const inv = reasoningTokens(m).invocation, keep = new PromptCache(m.backend, 2 ** 20);
    const first = await prefill(m.backend, ids, 0, [], true, keep);
    assert.equal(first.cached, 0);
    const ref = await fresh(m, [...longer, ...inv], [...longer.map(() => 0), ...inv.map(() => 1)]), at = (t: number) => ref.subarray(t * V, (t + 1) * V);
    const again = await prefill(m.backend, longer, 0, inv, true, keep);
    assert.equal(again.cached, ids.length);
    assert.ok(maxDiff(again.logits, at(longer.length - 1)) <= 1e-4 && maxDiff(again.invocationLogits!, at(longer.length)) <= 1e-4);
    const plain = await prefill(m.backend, longer, 0, inv);
    assert.ok(maxDiff(again.hidden, plain.hidden) <= 1e-4);
    await Promise.all([first, again, plain].map((p) => m.backend.free(p.cache)));
    // The longer prompt took the place of the one it continues; a third prompt past the budget drops the least recently used.
    const one = keep.size, other = m.encode('Reverse the word sand, and then say it twice in a row for me.', true);
    assert.ok(one > 0 && (await keep.take(ids))!.length === ids.length - 1);
    const small = new PromptCache(m.backend, one + 1);
    await small.put(longer, (await prefill(m.backend, longer, 0)).cache);
    await small.put(other, (await prefill(m.backend, other, 0)).cache);
    assert.ok(small.size > 0 && small.size <= one + 1);
    assert.equal(await small.take(longer), undefined);
    assert.equal((await small.take(other))!.length, other.length - 1);
    await assert.rejects(loadModel(rm.dir, { promptCache: -1 }), { message: 'loadModel: promptCache must be a number of MiB ≥ 0 (0: no prompt caching), got -1' });
    // The default: 256 MiB, or room for 4,096 positions where those take more (Qwen2.5-0.5B: 96 MiB; 7B: 448; Llama-3.1-8B: 1,024).
    const shape = (numLayers: number, numKvHeads: number, headDim: number) => ({ numLayers, numKvHeads, headDim }) as ModelConfig;
    assert.deepEqual([shape(24, 2, 64), shape(28, 4, 128), shape(32, 8, 128)].map(defaultPromptCacheMib), [256, 448, 1024]);

    // answer(): the same question again reads all its prompt but the last token from the cache, the next turn of the
    // chat the whole first prompt; the answers are those of a model that keeps none.
    const none = await loadModel(rm.dir, { quant: 'fp32', adapter: adapterDir, worker: false, threads: 1, promptCache: 0 });
    try {
      const chat = [{ role: 'user' as const, content: q }, { role: 'assistant' as const, content: '42' }, { role: 'user' as const, content: 'And 12 plus 31?' }];
      const L = ids.length, calls = [[q, 'off', 0], [q, 'on', L - 1], [q, 'off', L - 1], [chat, 'off', L], [chat, 'on', longer.length - 1]] as const;
      for (const [input, reasoning, cached] of calls) {
        const [r, want] = await Promise.all([answer(m, input, { reasoning, maxTokens: 6 }), answer(none, input, { reasoning, maxTokens: 6 })]);
        assert.deepEqual([r.samples[0].tokenIds, r.usage.cachedTokens, want.usage.cachedTokens], [want.samples[0].tokenIds, cached, 0], `${reasoning}: ${JSON.stringify(input)}`);
      }
      // A classic adapter's reasoning encodes the whole prompt with the adapter: nothing read from the cache.
      assert.equal((await answer(m, q, { reasoning: 'on', adapterMode: 'classic', maxTokens: 2 })).usage.cachedTokens, 0);
      // Requests with one prompt at once keep one copy of it, at its own size (not the size of the one it was read from).
      const own = promptCacheOf(m.backend)!, alone = kvBytes(m.config, 1, grownCapacity(64, ids.length));
      own.clear();
      setPromptCache(m.backend, 1);
      await Promise.all([1, 2, 3, 4].map(() => answer(m, q, { reasoning: 'off', maxTokens: 1 })));
      assert.equal(promptCacheOf(m.backend)!.size, alone);
      // The chat's next turn takes the place of the prompt it continues; that prompt asked again is read from it, not kept twice.
      await answer(m, chat, { reasoning: 'off', maxTokens: 1 });
      await answer(m, q, { reasoning: 'off', maxTokens: 1 });
      assert.equal(promptCacheOf(m.backend)!.size, kvBytes(m.config, 1, grownCapacity(64, longer.length)));
      // generate / complete (one prompt) too: the positions before the adapter acts (a chat prompt: all of it), as a model
      // that keeps none decodes them.
      const [g, g0] = await Promise.all([m.complete(q, { chat: true, maxTokens: 4 }), none.complete(q, { chat: true, maxTokens: 4 })]);
      assert.deepEqual([g.tokens, g.cachedTokens, g0.cachedTokens], [g0.tokens, L - 1, 0]);
      const [raw, raw0] = await Promise.all([m.complete(longer, { maxTokens: 4, adapter: false }), none.complete(longer, { maxTokens: 4, adapter: false })]);
      assert.deepEqual([raw.tokens, raw.cachedTokens], [raw0.tokens, longer.length - 1]);
      // generate keeps its prompt once prefilled: a request beside it, begun at its first token, reads it.
      const running = m.generate(other, { maxTokens: 12, adapter: false })[Symbol.asyncIterator]();
      await running.next();
      assert.equal((await m.complete(other, { maxTokens: 1, adapter: false })).cachedTokens, other.length - 1);
      while (!(await running.next()).done);
      // generateBatch of several prompts: each row begins from its own kept beginning (or from the start), gathered
      // into one batch; every row is kept, also rows that finish steps before the others; the tokens are a model's
      // that keeps none.
      setPromptCache(m.backend, 1);
      await m.complete(other, { maxTokens: 1, adapter: false });
      const rows = [other, longer, m.encode('Name three colors of the rainbow, please, in order of their place.', true)];
      const lengths = [{ maxTokens: 1 }, { maxTokens: 5 }, { maxTokens: 3 }].map((o) => ({ ...o, adapter: false }));
      const want = await none.generateBatch(rows, lengths);
      for (const cachedTokens of [[other.length - 1, 0, 0], rows.map((r) => r.length - 1)]) {
        const got = await m.generateBatch(rows, lengths);
        assert.deepEqual(got.map((c) => [c.tokens, c.cachedTokens]), want.map((c, i) => [c.tokens, cachedTokens[i]]));
      }
      // A row whose prompt another row's continues (or repeats) is kept in that one: one copy.
      setPromptCache(m.backend, 1);
      await m.generateBatch([longer, ids, ids], { maxTokens: 1, adapter: false });
      assert.equal(promptCacheOf(m.backend)!.size, kvBytes(m.config, 1, grownCapacity(64, longer.length)));
    } finally {
      await none.close();
    }
  } finally {
    await m.close();
  }
});

test('prompt cache files: kept prompts saved and read back by a new session give the same tokens from the cache; another quantisation, another shape, a file that is not one are refused; keepPrompt; close (and await using) drops them', async () => {
  const file = path.join(tmp, 'prompts', 'kept.safetensors'); // (its folder is made)
  const system = [{ role: 'system' as const, content: 'You answer questions about numbers. Give the number alone, with no words around it.' }];
  const asked = [...system, { role: 'user' as const, content: 'What is 12 plus 30?' }];
  const m = await loadModel(rm.dir, { quant: 'fp32', adapter: adapterDir, threads: 1 }); // in its worker: the keys and values cross threads
  const none = await loadModel(rm.dir, { quant: 'fp32', adapter: adapterDir, worker: false, threads: 1, promptCache: 0 });
  try {
    // keepPrompt: the system message (no generation prompt) encoded now; the question after it reads all of it.
    const n = await m.keepPrompt(system), full = m.encode(asked, true);
    assert.deepEqual(full.slice(0, n), m.encode(m.renderChat(system, undefined, 'test', false)));
    const [first, want] = await Promise.all([m.complete(asked, { maxTokens: 6, adapter: false }), none.complete(asked, { maxTokens: 6, adapter: false })]);
    assert.deepEqual([first.tokens, first.cachedTokens], [want.tokens, n]);
    assert.deepEqual(await m.savePromptCache(file), { prompts: 1, tokens: full.length, bytes: fs.statSync(file).size });
    // A new session reads it: the same question is prefilled from its last token on, with the same tokens.
    const again = await loadModel(rm.dir, { quant: 'fp32', adapter: adapterDir, worker: false, threads: 1 });
    try {
      assert.deepEqual(await again.loadPromptCache(file), { prompts: 1, tokens: full.length, of: 1 });
      // A budget that holds none of its prompts reads none (and copies none in).
      const tiny = new PromptCache(again.backend, kvBytes(again.config, 1, 64));
      assert.deepEqual([await tiny.load(file), tiny.size], [{ prompts: 0, tokens: 0, of: 1 }, 0]);
      const r = await again.complete(asked, { maxTokens: 6, adapter: false });
      assert.deepEqual([r.tokens, r.cachedTokens], [want.tokens, full.length - 1]);
      // answer() reads it too (its reasoning route included: the base positions are the same).
      assert.equal((await answer(again, asked, { reasoning: 'on', maxTokens: 4 })).usage.cachedTokens, full.length - 1);
    } finally {
      await again.close();
    }
    // The same weights quantised otherwise compute other keys and values: refused, by the probe.
    const q8 = await loadModel(rm.dir, { quant: 'q8', worker: false, threads: 1 });
    try {
      await assert.rejects(q8.loadPromptCache(file), (e: Error) => e instanceof PromptCacheMismatch && e.code === 'prompt_cache_mismatch' && new RegExp(`^prompt cache: ${file} was saved from another model \\(other weights, the same ones quantised otherwise, or another RoPE scaling\\): this one computes the probe's keys and values \\d\\.\\de-\\d+ apart \\(relative\\), so its prompts would answer as that model does; save the prompt cache again with this model$`).test(e.message));
      assert.equal((await q8.complete(asked, { maxTokens: 1 })).cachedTokens, 0);
    } finally {
      await q8.close();
    }
    // Another RoPE scaling is refused by what the file records: a YaRN can rotate the probe's first positions alike.
    const stretched = await loadModel(rm.dir, { worker: false, threads: 1, ropeScaling: { type: 'yarn', factor: 4 } });
    try {
      const base = `RoPE base ${rm.config.ropeTheta}`;
      await assert.rejects(stretched.loadPromptCache(file), (e: Error) => e instanceof PromptCacheMismatch
        && e.message === `prompt cache: ${file} was saved from a model with ${base}, scaling none; this one has ${base}, scaling yarn ×4 over ${rm.config.maxPositionEmbeddings} positions: its prompts' keys were rotated otherwise; save the prompt cache again with this model`);
    } finally {
      await stretched.close();
    }
    const other = await loadModel(DEFAULT_DIR, { worker: false, threads: 1 });
    try {
      await assert.rejects(other.loadPromptCache(file), (e: Error) => e instanceof PromptCacheMismatch && e.message.startsWith(`prompt cache: ${file} was saved from a model of 2 layers × 2 KV heads × ${rm.config.headDim} keys and values per position; this one has ${other.config.numLayers} layers × ${other.config.numKvHeads} KV heads × ${other.config.headDim}`));
    } finally {
      await other.close();
    }
    // A file saved over this one while it is read (another process) is read again, whole; one replaced at every read
    // leaves nothing of it kept.
    let saves = 1;
    const replacing = new Proxy(m.backend, {
      get: (b, k) => (k === 'importRow' ? async (kv: object) => { if (saves-- > 0) { fs.copyFileSync(file, `${file}.new`); fs.renameSync(`${file}.new`, file); } return b.importRow(kv as never); } : Reflect.get(b, k)),
    });
    const racing = new PromptCache(replacing, 2 ** 20);
    assert.deepEqual(await racing.load(file), { prompts: 1, tokens: full.length, of: 1 });
    racing.clear();
    saves = Infinity;
    const again2 = new PromptCache(replacing, 2 ** 20);
    await assert.rejects(again2.load(file), { message: `prompt cache: ${file} was replaced while it was read, three times (other processes saving it): nothing read; load it again` });
    assert.equal(again2.size, 0);
    // A symbolic link is saved through (its target replaced, the link kept); an empty file (touch, mktemp) holds none.
    const target = path.join(tmp, 'prompts', 'target.safetensors'), link = path.join(tmp, 'prompts', 'link.safetensors');
    fs.copyFileSync(file, target);
    fs.symlinkSync(target, link);
    await m.savePromptCache(link);
    assert.ok(fs.lstatSync(link).isSymbolicLink() && fs.statSync(target).size > 0);
    const empty = path.join(tmp, 'prompts', 'empty.safetensors');
    fs.writeFileSync(empty, '');
    assert.deepEqual(await m.loadPromptCache(empty), { prompts: 0, tokens: 0, of: 0 });
    // A place that cannot be written is said at once: read, not saved.
    const notes: string[] = [], under = path.join(rm.dir, 'config.json', 'kept.safetensors');
    await (await openPromptCacheFile(promptCacheOf(m.backend)!, under, (n) => notes.push(n))).save();
    assert.deepEqual(notes, [`prompt cache: ${under} is read but not saved: ${path.join(rm.dir, 'config.json')} is a file, not a folder`]);
    // A file that is not a prompt cache is neither read nor replaced; a cut one is not read.
    const weights = path.join(rm.dir, 'model.safetensors'), before = fs.readFileSync(weights);
    await assert.rejects(m.loadPromptCache(weights), { message: `prompt cache: ${weights} is not a prompt cache file (its metadata has no "format": "edgereason-prompt-cache"): not read, and not replaced (name another file)` });
    await assert.rejects(m.savePromptCache(weights), { message: `prompt cache: ${weights} exists and is not a prompt cache file: not replaced (name another file)` });
    assert.ok(fs.readFileSync(weights).equals(before));
    const cut = path.join(tmp, 'prompts', 'cut.safetensors');
    fs.writeFileSync(cut, fs.readFileSync(file).subarray(0, fs.statSync(file).size - 4));
    await assert.rejects(m.loadPromptCache(cut), /^Error: prompt cache: .*cut\.safetensors is corrupt: tensor "prompt\.0": data_offsets .* point outside the file .*: file truncated\? \(delete it, or name another file\)$/);
    // Keys or values changed since the save (not finite, or finite: read before as they were, answering garbage): a
    // corrupt file, refused naming the tensor.
    for (const value of [NaN, 0.5]) {
      const changed = path.join(tmp, 'prompts', 'changed.safetensors'), bytes = fs.readFileSync(file);
      bytes.writeFloatLE(value, openSafetensors(file).info('prompt.0').begin + 4 * 5);
      fs.writeFileSync(changed, bytes);
      await assert.rejects(m.loadPromptCache(changed), { message: `prompt cache: ${changed} is corrupt: tensor "prompt.0" holds other bytes than were saved (sha256) (delete it, or name another file)` });
    }
    // A file made where a prompt cache is being saved, while its keys and values are copied out, is not replaced.
    const late = path.join(tmp, 'prompts', 'late.safetensors');
    const slow = new PromptCache(new Proxy(m.backend, {
      get: (b, k) => (k === 'exportRow' ? (...a: Parameters<Backend['exportRow']>) => { fs.writeFileSync(late, 'my notes'); return b.exportRow(...a); } : Reflect.get(b, k)),
    }), 2 ** 20);
    await assert.rejects(slow.save(late), { message: `prompt cache: ${late} exists and is not a prompt cache file: not replaced (name another file)` });
    assert.equal(fs.readFileSync(late, 'utf8'), 'my notes');
    // The token ids the keys and values belong to are checked too (an id changed answered one prompt from another's
    // cache), and a file without its sums is not read unchecked.
    const rewritten = (name: string, metadata: (m: Record<string, string>) => Record<string, string>) => {
      const f = openSafetensors(file), out = path.join(tmp, 'prompts', name);
      writeSafetensors(out, new Map(f.names.map((n) => [n, { shape: f.shape(n), data: f.values(n) }])), { metadata: metadata(f.metadata as Record<string, string>) });
      return out;
    };
    const otherIds = rewritten('ids.safetensors', (md) => ({ ...md, prompts: md.prompts.replace(/\d+/, (d) => String(+d + 1)) }));
    await assert.rejects(m.loadPromptCache(otherIds), { message: `prompt cache: ${otherIds} is corrupt: its "prompts" metadata (the token ids of the kept prompts) differs from what was saved (sha256) (delete it, or name another file)` });
    const unsummed = rewritten('unsummed.safetensors', ({ sha256, ...md }) => md);
    await assert.rejects(m.loadPromptCache(unsummed), { message: `prompt cache: ${unsummed} is corrupt: its "sha256" metadata is missing (delete it, or name another file)` });
    assert.deepEqual(await m.loadPromptCache(rewritten('same.safetensors', (md) => md)), await m.loadPromptCache(file));
    // One an earlier edgereason wrote (format 1: sums without the token ids, or none) is another model's, as it were:
    // refused with PromptCacheMismatch (the CLI and serve note it and replace it at the end), and replaced by a save.
    const earlier = rewritten('earlier.safetensors', ({ sha256, ...md }) => ({ ...md, version: '1' }));
    await assert.rejects(m.loadPromptCache(earlier), (e: Error) => e instanceof PromptCacheMismatch && e.message === `prompt cache: ${earlier} was saved by an earlier edgereason (format version 1; this one reads version 2, whose sums also cover the prompts' token ids); save the prompt cache again with this model`);
    await m.savePromptCache(earlier);
    assert.deepEqual(await m.loadPromptCache(earlier), await m.loadPromptCache(file));
    // A prompt cache another edgereason wrote (another format version) is neither read nor replaced.
    const newer = path.join(tmp, 'prompts', 'newer.safetensors');
    writeSafetensors(newer, { probe: { shape: [1], data: new Float32Array(1) } }, { metadata: { format: 'edgereason-prompt-cache', version: '3', prompts: '[]' } });
    await assert.rejects(m.loadPromptCache(newer), { message: `prompt cache: ${newer} is a prompt cache of format version 3, which another edgereason wrote; this one reads version 2 (delete it, or name another file)` });
    await assert.rejects(m.savePromptCache(newer), { message: `prompt cache: ${newer} is a prompt cache of format version 3, which another edgereason wrote: not replaced (name another file, or delete it)` });
    await assert.rejects(m.loadPromptCache(path.join(tmp, 'none')), { message: `prompt cache: ${path.join(tmp, 'none')} does not exist` });
    await assert.rejects(m.keepPrompt('Hi'), { message: `keepPrompt: a prompt of ${m.encode('Hi').length} tokens is not kept: one of at most 16 tokens costs less to prefill than to copy` });
    await assert.rejects(none.savePromptCache(file), { message: 'savePromptCache: this model keeps no prompts (it was loaded with promptCache: 0)' });
    // A prompt kept while a longer one that continues it is copied (both at once) is held by that one alone, and a
    // beginning of 16 tokens in common is prefilled, not copied (as keepPrompt refuses to keep one).
    setPromptCache(m.backend, 1);
    const longIds = m.encode('Tom had 20 coins, lost 7, then found 4 more. How many coins does Tom have now, after all that?');
    await Promise.all([m.keepPrompt(longIds), m.keepPrompt(longIds.slice(0, 30))]);
    assert.deepEqual([promptCacheOf(m.backend)!.prompts, promptCacheOf(m.backend)!.size], [1, kvBytes(m.config, 1, grownCapacity(64, longIds.length))]);
    for (const [common, reused] of [[16, undefined], [17, 17]] as const) {
      const hit = await promptCacheOf(m.backend)!.take([...longIds.slice(0, common), 99, 98]);
      assert.equal(hit?.length, reused);
      if (hit) await m.backend.free(hit.cache);
    }
    // Several rows in the runtime worker, one finishing at the first step: each row kept under its own tokens.
    setPromptCache(m.backend, 1);
    const two = [m.encode('Name three colors of the rainbow, please, in order of their place.', true), full];
    const both = [{ maxTokens: 1, adapter: false }, { maxTokens: 4, adapter: false }], plain = await none.generateBatch(two, both);
    for (const cachedTokens of [[0, 0], two.map((r) => r.length - 1)]) {
      assert.deepEqual((await m.generateBatch(two, both)).map((c) => [c.tokens, c.cachedTokens]), plain.map((c, i) => [c.tokens, cachedTokens[i]]));
    }
    // Closing the model (here as `await using` does) drops what it kept.
    const kept = promptCacheOf(m.backend)!;
    assert.equal(kept.prompts, 2);
    await m[Symbol.asyncDispose]();
    assert.deepEqual([kept.prompts, kept.size], [0, 0]);
    await assert.rejects(m.backend.newCache(1), { message: 'runtime: model is closed' });
  } finally {
    await Promise.all([m.close(), none.close()]);
  }
});

test('prompt lookup in answer(): the same thinking, capped thinking, sampled, routed and JSON answers as without it', async () => {
  const m = await loadModel(DEFAULT_DIR, { adapter: ADAPTER_DIR, worker: false });
  // With the verifier every sample's last hidden state is read (a decode hook): guesses go on beside it.
  const aux = { router: Router.load(path.join(DEFAULT_DIR, 'router.json')), verifier: Verifier.load(path.join(DEFAULT_DIR, 'verifier.json')) };
  setPromptCache(m.backend, 0); // each answer prefills its prompt (the usage compared whole)
  try {
    let made = 0, kept = 0, escalated = 0;
    const items = makeSplits({ train: 0, val: 0, test: 24 }).test.filter((_, i) => i < 8 || i >= 22); // 22 and 23: escalated by the gate
    const settings: Parameters<typeof answer>[2][] = [{ reasoning: 'on' }, { reasoning: 'on', maxThinkingTokens: 9 }, { reasoning: 'on', temperature: 0.8, seed: 2 },
      { reasoning: 'auto' }, { reasoning: 'on', json: true, maxTokens: 80 }];
    for (const it of items) for (const o of settings) {
      const plain = await answer(m, it.question, o, aux), fast = await answer(m, it.question, { ...o, promptLookup: 4 }, aux);
      const what = `${it.question} ${JSON.stringify(o)}`;
      assert.ok(plain.samples.every((s) => s.tokenIds!.length > 0), what);
      assert.deepEqual(fast.samples.map((s) => s.tokenIds), plain.samples.map((s) => s.tokenIds), what);
      assert.equal(fast.answer, plain.answer, what);
      assert.equal(fast.route, plain.route, what);
      assert.deepEqual(fast.usage, plain.usage, what);
      assert.deepEqual(fast.escalation, plain.escalation, what);
      fast.samples.forEach((s, k) => { // the verifier reads the state of the token whose logits drew the last one, as without guesses
        const p = plain.samples[k];
        assert.equal(s.verifierScore === undefined, p.verifierScore === undefined, what);
        if (p.verifierScore !== undefined) assert.ok(Math.abs(s.verifierScore! - p.verifierScore) < 1e-4, `${what}: verifier ${s.verifierScore} vs ${p.verifierScore}`);
      });
      escalated += fast.escalation ? 1 : 0;
      for (const s of fast.samples) { made += s.guesses!.made; kept += s.guesses!.kept; }
      assert.ok(plain.samples.every((s) => s.guesses === undefined));
    }
    assert.equal(escalated, 2);
    assert.ok(kept > 0 && made > kept, `made ${made}, kept ${kept}`);
  } finally {
    await m.close();
  }
});

test('a classic LoRA folder (no alora_invocation_tokens) re-encodes the prompt with the adapter: same samples as adapterMode classic', async () => {
  const m = await model(), classic = await loadModel(rm.dir, { quant: 'fp32', adapter: classicDir, worker: false, threads: 1 });
  try {
    assert.deepEqual(reasoningTokens(classic).invocation, [THINK], '"<think>" from the tokenizer');
    const opts = { reasoning: 'on' as const, samples: 2, temperature: 8, topP: 0.95, maxTokens: 6, seed: 2 };
    const a = await answer(classic, 'Name a color.', opts), b = await answer(m, 'Name a color.', { ...opts, adapterMode: 'classic' });
    assert.deepEqual(a.samples.map((s) => s.tokenIds), b.samples.map((s) => s.tokenIds));
    const act = await answer(m, 'Name a color.', opts);
    assert.notDeepEqual(act.samples.map((s) => s.tokenIds), a.samples.map((s) => s.tokenIds), 'activated differs: base prompt states');
  } finally {
    await classic.close();
  }
});

test('(b) forked parallel samples with fixed seeds equal the same samples decoded one by one', async () => {
  const m = await model();
  const q = 'Tell me a story about 7 cats.', opts = { reasoning: 'on' as const, temperature: 8, topP: 0.95, maxTokens: 10, seed: 11 };
  const texts: Record<string, string>[] = [], events: string[] = [];
  const par = await answer(m, q, {
    ...opts, samples: 4, onText: (i, phase, piece) => { (texts[i] ??= { thinking: '', answer: '' })[phase] += piece; events.push(`${i}:text`); },
    onSampleEnd: (i, f) => events.push(`${i}:end:${f}`),
  });
  // Each sample ends once, after its last text, with its result's finish reason.
  for (let i = 0; i < 4; i++) {
    const ends = events.flatMap((e, k) => (e.startsWith(`${i}:end:`) ? [k] : []));
    assert.deepEqual(ends.map((k) => events[k]), [`${i}:end:${par.samples[i].finishReason}`]);
    assert.ok(events.lastIndexOf(`${i}:text`) < ends[0], `sample ${i} ends after its text`);
  }
  assert.equal(par.samples.length, 4);
  assert.ok(new Set(par.samples.map((s) => s.tokenIds!.join())).size > 1, 'the samples differ');
  const ids = m.encode(q, true), inv = reasoningTokens(m).invocation;
  for (let i = 0; i < 4; i++) {
    const one = await answer(m, q, { ...opts, samples: 1, seed: 11 + i });
    assert.deepEqual(par.samples[i].tokenIds, one.samples[0].tokenIds, `sample ${i} vs alone`);
    assert.ok(Math.abs(par.samples[i].meanLogprob - one.samples[0].meanLogprob) <= 1e-5); // batch-size rounding only
    // An independent path: the prompt and invocation re-encoded as one prompt (as the eval harness does).
    const [c] = await generateBatch(m.backend, m.tokenizer, [[...ids, ...inv]], [{ ...opts, seed: 11 + i, adapter: true, adapterFrom: ids.length }]);
    assert.deepEqual(par.samples[i].tokenIds, c.tokens, `sample ${i} vs a fresh prefill`);
    assert.equal(texts[i].thinking, par.samples[i].thinking, 'the streamed thinking is the thinking, exactly');
    assert.equal(texts[i].answer, par.samples[i].answer, 'the streamed answer is the answer, exactly');
  }
  assert.equal(par.usage.completionTokens, par.samples.reduce((a, s) => a + s.tokens, 0));
  assert.ok(par.ttftMs > 0 && par.ttftMs <= par.latencyMs);
});

test('(d) thinking cap on a model that never closes its thinking: ≤ K thinking tokens, then "</think>" and an answer', async () => {
  const m = await model();
  const { force } = reasoningTokens(m), before = force.indexOf(END_THINK);
  for (const K of [0, 1, 3, 7]) {
    for (const sampling of [{}, { temperature: 1, samples: 3, seed: 1 }]) {
      const res = await answer(m, 'How many legs do 3 spiders have?', { reasoning: 'on', maxThinkingTokens: K, maxTokens: 30, ...sampling });
      for (const s of res.samples) {
        const toks = s.tokenIds!, end = toks.indexOf(END_THINK);
        assert.ok(s.thinkingTokens <= K, `K=${K}: ${s.thinkingTokens} thinking tokens`);
        assert.equal(end, K, `K=${K}: "</think>" follows exactly K segment tokens`);
        assert.deepEqual(toks.slice(end - Math.min(K, before), end + force.length - before), force.slice(before - Math.min(K, before)));
        assert.equal(s.capped, true);
        // Greedy writes a parsable answer; a draw at temperature 1 may end at once or write no number (seeds 4 and 6 here).
        // This model never writes <eos>: maxTokens cuts every answer, which therefore has no vote.
        if (!('temperature' in sampling)) assert.ok(s.answer.length > 0 && extractAnswer('synthetic', s.answer) !== undefined, `K=${K}: a parsable answer after </think>`);
        assert.deepEqual([s.finishReason, s.extracted], ['length', undefined]);
        assert.ok(s.answerTokens! > 0);
        assert.equal(s.tokens, s.thinkingTokens + 1 + s.answerTokens!, 'segment + "</think>" + answer (from the forced blank line on)');
      }
      assert.ok(res.answer.length > 0);
    }
  }
});

test('thinksByItself: a generation prompt that opens the thinking, a Qwen3 template that answers to enable_thinking, or another\'s that drops earlier thinking; not the embedded model', () => {
  const dir = path.resolve(import.meta.dirname, '../models/default');
  const tokenizerJson = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
  const own = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')).chat_template as string;
  const r1 = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}";
  const plain = r1.replace('<think>\n', '');
  const thinks = (architecture: string, template?: string) => thinksByItself({
    config: { architecture } as ModelConfig,
    tokenizer: loadTokenizer({ tokenizerJson, tokenizerConfig: template === undefined ? {} : { chat_template: template }, name: 't' }),
  });
  // R1's first distills: the generation prompt leaves "<think>" to the model; earlier answers lose their thinking.
  const r1Old = "{% for m in messages %}{% set c = m.content %}{% if m.role == 'assistant' and '</think>' in c %}{% set c = c.split('</think>')[-1] %}{% endif %}<|im_start|>{{ m.role }}\n{{ c }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
  assert.deepEqual([thinks('qwen2', own), thinks('qwen3', own), thinks('qwen2', r1), thinks('llama', r1), thinks('qwen3', plain), thinks('qwen3')],
    [false, true, true, true, false, false]);
  // ... which Qwen3's Instruct-2507 (ChatML) templates do as well, without the model thinking; DeepSeek-R1-0528's
  // template on its Qwen3 distill does it and the model thinks.
  const r1New = r1Old.replaceAll('<|im_start|>{{ m.role }}\n', '<｜{{ m.role }}｜>').replaceAll('<|im_end|>\n', '').replace('<|im_start|>assistant\n', '<｜Assistant｜>');
  assert.deepEqual([thinks('qwen2', r1Old), thinks('llama', r1Old), thinks('qwen3', r1Old), thinks('qwen3', r1New)], [true, true, false, true]);
});

test('nativeThinking (a model that thinks by itself, no adapter): the reasoning route equals a fresh run of prompt + "<think>" up to the cap; the direct route equals the enable_thinking: false prompt', async () => {
  const m = await loadModel(rm.dir, { quant: 'fp32', worker: false, threads: 1 });
  try {
    const q = 'How many legs do 3 spiders have?', K = 6;
    const { force } = reasoningTokens(m), sampled = K - force.indexOf(END_THINK); // the forced "\n" counts as thinking
    const on = await answer(m, q, { reasoning: 'on', nativeThinking: true, maxThinkingTokens: K, maxTokens: 20 });
    const fresh = await m.complete(`${m.tokenizer.applyChatTemplate([{ role: 'user', content: q }], { addGenerationPrompt: true })}<think>`, { maxTokens: sampled });
    const s = on.samples[0];
    assert.equal(on.route, 'reasoning');
    assert.deepEqual(s.tokenIds!.slice(0, sampled), fresh.tokens, 'the thinking continues the shared prompt cache exactly as a fresh run');
    assert.deepEqual(s.tokenIds!.slice(sampled, sampled + force.length), force, 'then the cap forces "\n</think>\n\n"');
    assert.deepEqual([s.thinkingTokens, s.capped, on.usage.promptTokens], [K, true, m.encode(q, true).length + 1]);
    // Sampled at a high temperature (varied tokens): the same seed draws the same thinking as the fresh run.
    const hot = { temperature: 200, seed: 11 };
    const onHot = await answer(m, q, { reasoning: 'on', nativeThinking: true, maxThinkingTokens: K, maxTokens: 20, ...hot });
    const freshHot = await m.complete(`${m.tokenizer.applyChatTemplate([{ role: 'user', content: q }], { addGenerationPrompt: true })}<think>`, { maxTokens: sampled, ...hot });
    assert.deepEqual(onHot.samples[0].tokenIds!.slice(0, sampled), freshHot.tokens);
    assert.ok(new Set(freshHot.tokens).size >= 3, `varied tokens: ${freshHot.tokens}`);
    // Direct: the answer after Qwen3's empty thinking block, on the same kind of cache.
    const off = await answer(m, q, { reasoning: 'off', nativeThinking: true, maxTokens: 8 });
    const direct = await m.complete(q, { chat: true, chatTemplateKwargs: { enable_thinking: false }, maxTokens: 8 });
    assert.equal(off.route, 'direct');
    assert.deepEqual(off.samples[0].tokenIds, direct.tokens);
    assert.equal(off.usage.promptTokens, direct.promptTokens);
    // A prompt that fits, but not with the empty thinking block, is refused before the prefill.
    const ctx = m.config.maxPositionEmbeddings, padded = (k: number) => `${q}${' legs'.repeat(k)}`;
    let k = 0;
    while (m.encode(padded(k + 1), true).length < ctx) k++;
    const steps: number[] = [], step = m.backend.step.bind(m.backend);
    m.backend.step = async (h, req) => { steps.push(req.tokens[0].length); return step(h, req); };
    try {
      await assert.rejects(answer(m, padded(k), { reasoning: 'off', nativeThinking: true }), new RegExp(`^Error: answer: the prompt and the empty thinking block have \\d+ tokens, which leaves no room in the model's context of ${ctx} tokens$`));
      assert.deepEqual(steps, [], 'no prefill ran');
    } finally {
      m.backend.step = step;
    }
    // Parallel samples fork the same prompt cache.
    const three = await answer(m, q, { reasoning: 'on', nativeThinking: true, maxThinkingTokens: 3, maxTokens: 12, samples: 3, seed: 4 });
    assert.deepEqual(three.samples.map((x) => [x.thinkingTokens, x.capped]), [[3, true], [3, true], [3, true]]);
    await assert.rejects(answer(m, q, { reasoning: 'on' }), /answer: reasoning "on" needs the model loaded with its reasoning adapter \(the adapter option of loadModel\), or nativeThinking for a model that thinks by itself/);
    // The template's enable_thinking: false closes the thinking: "on" is refused, "auto" answers directly (no router).
    const noThink = { nativeThinking: true, chatTemplateKwargs: { enable_thinking: false } };
    await assert.rejects(answer(m, q, { reasoning: 'on', ...noThink }), /answer: reasoning "on", but the chat template already closed the thinking/);
    const router = new Router(fitProbe([[0], [1]], [0, 1], { steps: 1 }), -1, { name: 'accuracy' }, { nativeThinking: true });
    const auto = await answer(m, q, { reasoning: 'auto', maxTokens: 8, ...noThink }, { router: Object.assign(Object.create(router), { score: () => assert.fail('no routing') }) });
    assert.deepEqual([auto.route, auto.samples[0].tokenIds], ['direct', off.samples[0].tokenIds]);
    // A router trained for the other kind of reasoning is refused; a budget line is the RL adapter's, not Qwen3's.
    await assert.rejects(answer(m, q, { nativeThinking: true }, { router: new Router(router.probe, 0, { name: 'accuracy' }, { adapter: 'a' }) }), /answer: this router was not trained for nativeThinking \(but with the reasoning adapter a\)/);
    await assert.rejects(answer(m, q, { reasoning: 'on', nativeThinking: true, budget: 96 }), /answer: budget is the control line a budget-trained \(RL\) adapter reads/);
    const adapterVerifier = new Verifier(router.probe, 0.5, { adapter: 'a' });
    await assert.rejects(answer(m, q, { reasoning: 'on', nativeThinking: true }, { verifier: adapterVerifier }), /answer: this verifier was not trained for nativeThinking \(but with the reasoning adapter a\): train one with train-verifier --native-thinking/);
    await assert.rejects(answer(m, q, { nativeThinking: true, adapterMode: 'classic' }), /answer: adapterMode applies to a reasoning adapter, not to nativeThinking/);
    await assert.rejects(answer(m, q, { nativeThinking: true, invocation: '<think>\n' }), /answer: invocation names a reasoning adapter's opening text; with nativeThinking the model opens its thinking with its own "<think>": leave invocation out/);
    // A router trained on a model of another shape is refused by name (its probe reads that model's hidden states).
    const other = new Router(router.probe, 0, { name: 'accuracy' }, { nativeThinking: true, modelShape: 'llama, 2 layers, hidden 64, heads 4/2×16, MLP 128, vocabulary 512' });
    await assert.rejects(answer(m, q, { nativeThinking: true }, { router: other }),
      new RegExp(`answer: this router was trained on a model of another shape \\(llama, 2 layers, hidden 64, heads 4/2×16, MLP 128, vocabulary 512\\); this one is ${modelShape(m.config).replace(/[()]/g, '\\$&')}: train one for it \\(train-router\\)`));
  } finally {
    await m.close();
  }
  await assert.rejects(answer(await model(), 'q', { nativeThinking: true }), /answer: nativeThinking reasons with the model's own weights, but it was loaded with the adapter .*alora: load it without one/);
});

test('nativeThinking with a template that opens the thinking itself (thinking-only models): no second "<think>"; the direct route closes the open block', async () => {
  const dir = path.join(tmp, 'opens-thinking');
  fs.mkdirSync(dir);
  for (const f of fs.readdirSync(rm.dir)) if (!f.endsWith('.gguf')) fs.copyFileSync(path.join(rm.dir, f), path.join(dir, f));
  fs.writeFileSync(path.join(dir, 'chat_template.jinja'), "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}");
  const m = await loadModel(dir, { quant: 'fp32', worker: false, threads: 1 });
  try {
    const q = 'How many legs do 3 spiders have?', ids = m.encode(q, true), hot = { temperature: 200, seed: 5 };
    assert.ok(m.tokenizer.decode(ids).endsWith('assistant\n<think>\n'));
    const on = await answer(m, q, { reasoning: 'on', nativeThinking: true, maxThinkingTokens: 6, maxTokens: 12, ...hot });
    const fresh = await m.complete(q, { chat: true, maxTokens: 5, ...hot });
    assert.equal(on.usage.promptTokens, ids.length, 'the prompt already holds the invocation');
    assert.deepEqual(on.samples[0].tokenIds!.slice(0, 5), fresh.tokens, 'thinking continues the template\'s open block');
    // The direct route: the block's tokens as its text encodes, "<think>" then "\n\n</think>\n\n" (the template's "\n"
    // after the tag is cut and written again within "\n\n", one token), so it answers as the whole text encoded would.
    const off = await answer(m, q, { reasoning: 'off', nativeThinking: true, maxTokens: 4 });
    const canonical = m.tokenizer.encode(`${m.tokenizer.decode(ids.slice(0, -1))}\n\n</think>\n\n`, { addSpecialTokens: false });
    assert.deepEqual(canonical.slice(0, ids.length - 1), ids.slice(0, -1));
    assert.deepEqual([off.route, off.usage.promptTokens], ['direct', canonical.length]);
    const [direct] = await generateBatch(m.backend, m.tokenizer, [canonical], [{ maxTokens: 4 }]);
    assert.deepEqual(off.samples[0].tokenIds, direct.tokens);
    // Escalated from there, it reasons exactly as reasoning "on" (the blank cut for the block is fed back).
    const H = m.config.hiddenSize, half = new LinearProbe(new Float64Array(H), 0, new Float64Array(H), new Float64Array(H).fill(1));
    const gate = new Router(half, 0.9, { name: 'savings', maxLoss: 0 }, { nativeThinking: true }, { minLogprob: 1, tokens: 8 }); // every token is below it
    const ctx = { reasoning: 'on' as const, nativeThinking: true, maxThinkingTokens: 6, ...hot };
    const esc = await answer(m, q, { ...ctx, reasoning: 'auto', maxTokens: 13 + MIN_ESCALATION_ROOM }, { router: gate });
    const on2 = await answer(m, q, { ...ctx, maxTokens: 12 + MIN_ESCALATION_ROOM });
    assert.deepEqual([esc.route, esc.escalation?.tokens], ['reasoning', 1]);
    assert.deepEqual(esc.samples[0].tokenIds, on2.samples[0].tokenIds);
  } finally {
    await m.close();
  }
});

test('(e) an escalated request reasons exactly as reasoning "on" does: the invocation is fed on the cut-back prompt cache', async () => {
  const m = await model();
  const half = new LinearProbe(new Float64Array(Hd), 0, new Float64Array(Hd), new Float64Array(Hd).fill(1)); // scores 0.5: direct at 0.9
  const gated = (minLogprob: number) => new Router(half, 0.9, { name: 'savings', maxLoss: 0 }, {}, { minLogprob, tokens: 8 });
  const q = 'What is 2 plus 3?';
  // The escalation's one dropped token comes off maxTokens (room enough is left for the gate to escalate).
  const M = 8 + MIN_ESCALATION_ROOM;
  for (const o of [{}, { samples: 3, temperature: 1, seed: 5 }]) {
    const on = await answer(m, q, { ...o, maxTokens: M - 1, reasoning: 'on' });
    const esc = await answer(m, q, { ...o, maxTokens: M, reasoning: 'auto' }, { router: gated(1) }); // every token is below log-probability 1
    assert.equal(esc.route, 'reasoning');
    assert.deepEqual([esc.escalation!.at, esc.escalation!.tokens], [0, 1], 'cancelled at its first token');
    assert.deepEqual(esc.samples.map((s) => s.tokenIds), on.samples.map((s) => s.tokenIds));
    esc.samples.forEach((s, i) => {
      assert.equal(s.logprobs!.length, on.samples[i].logprobs!.length, `sample ${i}: a log-probability per token`);
      s.logprobs!.forEach((lp, k) => assert.ok(Math.abs(lp - on.samples[i].logprobs![k]) < 1e-4, `sample ${i} token ${k}: ${lp} vs ${on.samples[i].logprobs![k]}`));
    });
  }
  const off = await answer(m, q, { reasoning: 'off', maxTokens: M });
  const pass = await answer(m, q, { reasoning: 'auto', maxTokens: M }, { router: gated(-1e9) });
  assert.equal(pass.route, 'direct');
  assert.deepEqual(pass.samples[0].tokenIds, off.samples[0].tokenIds);
});

// ---------------------------------------------------------------------------------------------------------
// A scripted model: exact control over what is sampled, to test routing, forcing, early stop and hidden states.

const VOCAB = ['<eos>', '<think>', '</think>', '\n', 'hmm ', '#### 5', '#### 7', 'q', 'The answer is 5.', 'Answer: 5.', '\\boxed{2\\pi+18}', '\\boxed{18+2\\pi}', '2 + 3 = 5', '2 + 3 = 7'];
const [EOS, OPEN, CLOSE, NL, HMM, A5, A7, Q, SAY5, COLON5, PI18, EIGHTEENPI, RIGHT_SUM, WRONG_SUM] = VOCAB.map((_, i) => i);

class ScriptedBackend implements Backend {
  readonly config = { vocabSize: VOCAB.length, hiddenSize: 2, maxPositionEmbeddings: 1000, numLayers: 1 } as ModelConfig & { maxPositionEmbeddings: number };
  readonly hasLora = true;
  private caches = new Map<CacheHandle, number[][]>();
  private next = 1;
  steps = 0;
  /** The temperature of every row sampled by a step. */
  temperatures: number[] = [];
  /** Every token fed to each row, when that row sampled EOS. */
  finished: number[][] = [];
  constructor(private readonly policy: (history: number[], u: number) => number) {}
  async newCache(rows: number): Promise<CacheHandle> { const h = this.next++; this.caches.set(h, Array.from({ length: rows }, () => [])); return h; }
  async step(h: CacheHandle, req: StepRequest): Promise<StepResult> {
    const c = this.caches.get(h)!;
    this.steps++;
    req.tokens.forEach((t, b) => c[b].push(...t));
    const L = typeof req.logits === 'number' ? req.logits : 1, res: StepResult = { positions: L };
    const at = (row: number[]) => Array.from({ length: L }, (_, i) => row.slice(0, row.length - (L - 1 - i))); // history at each returned position
    if (req.want?.hidden) res.hidden = Float32Array.from(c.flatMap((row) => at(row).flatMap((h) => [h.length, h.at(-1)!])));
    if (req.want?.logits) res.logits = Float32Array.from(c.flatMap((row) => at(row).flatMap((h) => VOCAB.map((_, k) => (k === this.policy(h, 0) ? 10 : 0)))));
    if (req.sample) {
      res.tokens = req.sample.map((p, b) => (p ? this.policy(c[b], p.u) : -1));
      for (const p of req.sample) if (p) this.temperatures.push(p.temperature ?? 0);
      res.logprobs = res.tokens.map((t) => (t === A7 ? Math.log(0.25) : Math.log(0.5)));
      res.tokens.forEach((t, b) => { if (t === EOS) this.finished.push([...c[b]]); });
    }
    return res;
  }
  async select(h: CacheHandle, rows: number[]): Promise<CacheHandle> { const c = this.caches.get(h)!, n = this.next++; this.caches.set(n, rows.map((r) => [...c[r]])); return n; }
  async keep(h: CacheHandle, rows: number[]): Promise<void> { const c = this.caches.get(h)!; this.caches.set(h, rows.map((r) => c[r])); }
  async gather(hs: (CacheHandle | null)[]): Promise<CacheHandle> { const n = this.next++; this.caches.set(n, hs.map((h) => (h === null ? [] : [...this.caches.get(h)![0]]))); return n; }
  async exportRow(): Promise<KVRow> { throw new Error('a scripted model has no keys and values'); }
  async importRow(): Promise<CacheHandle> { throw new Error('a scripted model has no keys and values'); }
  async truncate(h: CacheHandle, row: number, length: number): Promise<void> { this.caches.get(h)![row].length = length; }
  async lengths(h: CacheHandle): Promise<number[]> { return this.caches.get(h)!.map((r) => r.length); }
  async free(h: CacheHandle): Promise<void> { this.caches.delete(h); }
  async setAdapter(): Promise<void> {}
  async close(): Promise<void> {}
  get live(): number { return this.caches.size; }
}

const scriptedTokenizer: TextTokenizer = {
  encode(text: string): number[] {
    const out: number[] = [];
    for (let i = 0; i < text.length;) {
      const k = VOCAB.map((v, id) => [v, id] as const).filter(([v]) => text.startsWith(v, i)).sort((a, b) => b[0].length - a[0].length)[0];
      if (!k) throw new Error(`scripted tokenizer: cannot encode ${JSON.stringify(text.slice(i))}`);
      out.push(k[1]); i += k[0].length;
    }
    return out;
  },
  decode: (ids, o) => ids.filter((i) => !(o?.skipSpecialTokens && i === EOS)).map((i) => VOCAB[i]).join(''),
  tokenToId: (t) => (VOCAB.includes(t) ? VOCAB.indexOf(t) : undefined),
  vocabSize: VOCAB.length,
  eosTokenIds: [EOS],
  applyChatTemplate: () => 'qqq',
};

function scripted(policy: (history: number[], u: number) => number, activated = true, context = 1000): { m: Model; b: ScriptedBackend } {
  const b = new ScriptedBackend(policy);
  b.config.maxPositionEmbeddings = context;
  const m = {
    backend: b, tokenizer: scriptedTokenizer, config: b.config,
    adapter: { dir: 'scripted', config: { r: 1, loraAlpha: 1, targets: ['q_proj'], ...(activated ? { aloraInvocationTokens: [OPEN] } : {}) }, tensors: new Map() },
    encode: () => [Q, Q, Q],
  } as unknown as Model;
  return { m, b };
}

/** Thinks "hmm" until `close` says so, then answers `ans` and stops. */
const thinker = (close: (h: number[], u: number) => boolean, ans: (h: number[]) => number = () => A5) => (h: number[], u: number): number => {
  const last = h.at(-1)!;
  if (!h.includes(CLOSE)) return close(h, u) ? CLOSE : HMM;
  return last === A5 || last === A7 ? EOS : last === CLOSE || last === NL ? ans(h) : EOS;
};

test('streamed thinking and answer add up to the result for any text, think tags written in pieces or inside each other', () => {
  const rand = seededRandom(7), pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)];
  const parts = ['<', '</', '<th', 'th', 'ink', '>', '/think>', '<think>', '</think>', 'a', ' ', '\n', 'x<y'];
  for (let trial = 0; trial < 3000; trial++) {
    const text = Array.from({ length: 1 + Math.floor(rand() * 10) }, () => pick(parts)).join('');
    for (const reasoning of [true, false]) {
      const got = { thinking: '', answer: '' }, stream = phaseStream((phase, piece) => { got[phase] += piece; }, reasoning ? 'thinking' : 'answer');
      for (let i = 0; i < text.length;) { const n = 1 + Math.floor(rand() * 4); stream.push(text.slice(i, i + n)); i += n; }
      stream.flush();
      const seq = { text, answerFrom: text.includes('</think>') ? 0 : undefined, tokens: [], thinkingTokens: 0 };
      assert.deepEqual(got, splitText(seq, reasoning, undefined as never), JSON.stringify({ text, reasoning }));
      // Re-entrant: the first piece's callback pushes the rest and flushes, as a request aborted from inside onText
      // finishes the sample there: the pieces still add up (the held text was given out twice, and a third time in answer()).
      const again = { thinking: '', answer: '' };
      let at = 0, nested = false;
      const s2 = phaseStream((phase, piece) => { again[phase] += piece; if (!nested) { nested = true; s2.push(text.slice(at)); s2.flush(); } }, reasoning ? 'thinking' : 'answer');
      while (at < text.length && !nested) { const n = 1 + Math.floor(rand() * 4); at += n; s2.push(text.slice(at - n, at)); }
      if (!nested) s2.flush();
      assert.deepEqual(again, got, JSON.stringify({ text, reasoning, reentrant: true }));
    }
  }
});

test('router gate (scripted): an unlikely direct token escalates to reasoning on the prompt cache, nothing of the direct answer streams', async () => {
  // Direct route: "</think>" (from the prefill logits, logprob ≈ 0), "#### 7" (log .25), <eos> (log .5).
  const policy = thinker(() => true, () => A7);
  const direct = (gate: { minLogprob: number; tokens: number }) => new Router(fitProbe([[0, 0], [1, 1]], [0, 1], { steps: 1 }), 1.1, { name: 'savings', maxLoss: 0 }, {}, gate);
  for (const [gate, escalates] of [[{ minLogprob: -1, tokens: 4 }, true], [{ minLogprob: -2, tokens: 4 }, false], [{ minLogprob: -1, tokens: 1 }, false]] as const) {
    const { m, b } = scripted(policy);
    const routes: string[] = [], text: string[] = [];
    const res = await answer(m, 'q', {
      reasoning: 'auto', onRoute: (r) => routes.push(r), onText: (i, phase, piece) => text.push(`${i}:${phase}:${piece}`), onSampleEnd: (i, f) => text.push(`${i}:end:${f}`),
    }, { router: direct(gate) });
    assert.deepEqual(routes, [res.route], 'onRoute fires once, with the final route');
    if (escalates) {
      assert.equal(res.route, 'reasoning');
      assert.deepEqual(res.escalation, { answer: '</think>#### 7', tokens: 2, logprob: Math.log(0.25), at: 1 }); // a direct answer as generated
      // The direct tokens were cut from the cache: the reasoning row holds prompt, invocation, its own tokens.
      assert.deepEqual(b.finished, [[Q, Q, Q, OPEN, CLOSE, A7]]);
      assert.equal(b.steps, 5, 'prefill, one direct step (cancelled at "#### 7"), invocation, "</think>", "#### 7"');
      assert.deepEqual(text, ['0:answer:#### 7', '0:end:stop'], 'only the reasoning sample streams (and ends)');
      assert.equal(res.usage.promptTokens, 4);
      assert.deepEqual([res.samples[0].tokens, res.usage.completionTokens], [2, 2 + 2], 'the dropped direct attempt counts as generated');
    } else {
      assert.equal(res.route, 'direct');
      assert.equal(res.escalation, undefined);
      assert.equal(res.answer, '</think>#### 7', 'a direct answer is kept as generated, tags too (a client can tell a thinking model\'s thinking apart)');
      assert.equal(text.map((t) => t.split(':answer:')[1] ?? '').join(''), res.answer, 'the held-back answer streams once the gate passes');
      assert.equal(text.at(-1), '0:end:stop', 'then the direct answer ends');
    }
    assert.equal(b.live, 0);
  }
  // Near the end of the context the gate stands down: a reasoning turn needs MIN_ESCALATION_ROOM tokens after the
  // prompt (3 tokens) and the invocation.
  for (const [context, escalates] of [[3 + 1 + MIN_ESCALATION_ROOM, true], [3 + MIN_ESCALATION_ROOM, false]] as const) {
    const res = await answer(scripted(policy, true, context).m, 'q', { reasoning: 'auto' }, { router: direct({ minLogprob: -1, tokens: 4 }) });
    assert.deepEqual([res.route, !!res.escalation, res.answer], [escalates ? 'reasoning' : 'direct', escalates, escalates ? '#### 7' : '</think>#### 7'], `context ${context}`);
  }
  // The dropped direct attempt (2 tokens) comes off maxTokens, not off the thinking cap: completion tokens stay within
  // maxTokens (here the reasoning thinks until it is cut), and the gate stands down where what would be left is too little.
  const endless = (h: number[], u: number) => (h.includes(OPEN) ? HMM : policy(h, u));
  for (const [maxTokens, escalates] of [[4 + MIN_ESCALATION_ROOM, true], [3 + MIN_ESCALATION_ROOM, false]] as const) {
    const res = await answer(scripted(endless).m, 'q', { reasoning: 'auto', maxTokens }, { router: direct({ minLogprob: -1, tokens: 4 }) });
    assert.deepEqual([res.route, res.usage.completionTokens], escalates ? ['reasoning', maxTokens] : ['direct', 2], `maxTokens ${maxTokens}`);
  }
  const capped = await answer(scripted(endless).m, 'q', { reasoning: 'auto', maxTokens: 80, maxThinkingTokens: 10 }, { router: direct({ minLogprob: -1, tokens: 4 }) });
  assert.deepEqual([capped.escalation?.tokens, capped.samples[0].thinkingTokens, capped.samples[0].capped], [2, 10, true]);
  // ... unless what is left would not hold the cap, its close and an answer: then the cap is lowered to fit, so the
  // thinking still closes and answers (it was cut off unclosed by maxTokens).
  const full = scripted(endless).m, most = maxThinkingCap(reasoningTokens(full).closing, 80);
  const tight = await answer(full, 'q', { reasoning: 'auto', maxTokens: 80, maxThinkingTokens: most }, { router: direct({ minLogprob: -1, tokens: 4 }) });
  assert.deepEqual([tight.escalation?.tokens, tight.samples[0].thinkingTokens, tight.samples[0].capped, (tight.samples[0].answerTokens ?? 0) > 0, tight.usage.completionTokens <= 80],
    [2, maxThinkingCap(reasoningTokens(full).closing, 80 - 2), true, true, true]);
  // The same where the context's end comes first (eval's runs decode through generateBatch): the cap is lowered to
  // fit the room the context leaves, and the thinking closes and answers.
  const small = scripted(endless, true, 40).m, rt = reasoningTokens(small), prompt = [Q, Q, Q, OPEN];
  const [near] = await generateBatch(small.backend, small.tokenizer, [prompt], [{ maxTokens: 80, thinking: thinkingOptions(rt, 60) }]);
  assert.deepEqual([near.thinking, near.promptTokens + near.tokens.length <= 40, near.text.includes('</think>')],
    [{ tokens: maxThinkingCap(rt.closing, 40 - prompt.length), closed: true }, true, true]);
  // Cancelled before the first token: nothing generated, and no time to a first token that never came.
  const ac = new AbortController();
  ac.abort();
  const none = await answer(scripted(policy).m, 'q', { reasoning: 'off', signal: ac.signal });
  assert.deepEqual([none.samples[0].tokens, none.ttftMs], [0, none.latencyMs]);
});

test('an answer cut off by maxTokens has no vote and no verifier score; a direct answer is greedy unless asked, whatever samples says', async () => {
  // Reasoning: "</think>", "#### 5", <eos>. With 2 tokens the answer is written but the sample never ended.
  const policy = thinker(() => true);
  const verifier = new Verifier(fitProbe([[0, 0], [1, 1]], [0, 1], { steps: 1 }));
  for (const method of ['majority', 'verifier'] as const) {
    const cut = await answer(scripted(policy).m, 'q', { reasoning: 'on', samples: 2, maxTokens: 2, vote: method }, { verifier });
    assert.deepEqual(cut.samples.map((s) => [s.finishReason, s.answer, s.extracted, s.verifierScore]), [['length', '#### 5', undefined, undefined], ['length', '#### 5', undefined, undefined]], method);
    assert.deepEqual([cut.winner, cut.votes, cut.finishReason], [undefined, {}, 'length']); // the answer "#### 5" says it was cut
    const whole = await answer(scripted(policy).m, 'q', { reasoning: 'on', samples: 2, maxTokens: 3, vote: method }, { verifier });
    assert.deepEqual([whole.winner, whole.votes, whole.samples.map((s) => s.verifierScore !== undefined), whole.finishReason], ['5', { 5: 2 }, [true, true], 'stop'], method);
  }
  // A thinking cap that cannot close within maxTokens would cut every sample mid-thought: refused.
  const room = (K: number, maxTokens?: number) => answer(scripted(policy).m, 'q', { reasoning: 'on', maxThinkingTokens: K, ...(maxTokens ? { maxTokens } : {}) });
  const close = reasoningTokens(scripted(policy).m).closing;
  assert.equal(close, reasoningTokens(scripted(policy).m).force.length - 1, 'the forced "\\n" before "</think>" counts towards the cap, not after it');
  await assert.rejects(room(30 - close, 30), { message: `answer: maxThinkingTokens ${30 - close} leaves no room for the answer within maxTokens 30: closing the thinking takes ${close} token${close === 1 ? '' : 's'} and the answer at least one; lower maxThinkingTokens or raise maxTokens` });
  await assert.rejects(room(600), /maxThinkingTokens 600 leaves no room for the answer within maxTokens 512 \(the default\): /);
  assert.equal((await room(29 - close, 30)).finishReason, 'stop');
  // Several samples sample at 0.8 on the reasoning route only; the direct answer is one greedy sample.
  const { m, b } = scripted(thinker(() => true, () => A7));
  const off = await answer(m, 'q', { reasoning: 'off', samples: 4 });
  assert.deepEqual([off.samples.length, b.temperatures], [1, [0, 0]]); // "#### 7" and <eos> (the first token comes from the prefill)
  b.temperatures.length = 0;
  await answer(m, 'q', { reasoning: 'on', samples: 4 });
  assert.deepEqual(b.temperatures, [0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]);
  b.temperatures.length = 0;
  await answer(m, 'q', { reasoning: 'off', samples: 4, temperature: 0.5 });
  assert.deepEqual(b.temperatures, [0.5, 0.5]);
});

test('thinking cap (scripted): forced "\\n</think>\\n\\n" is fed, counted and streamed exactly', async () => {
  const never = thinker(() => false);
  const cases: [number, number[], number][] = [ // K, generated tokens, thinking tokens
    [0, [CLOSE, NL, NL, A5], 0],
    [1, [NL, CLOSE, NL, NL, A5], 1],
    [3, [HMM, HMM, NL, CLOSE, NL, NL, A5], 3],
  ];
  for (const [K, toks, thinking] of cases) {
    const { m, b } = scripted(never);
    const pieces: Record<string, string> = { thinking: '', answer: '' };
    const r = await answer(m, 'q', { reasoning: 'on', maxThinkingTokens: K, onText: (_, phase, p) => { pieces[phase] += p; } });
    const s = r.samples[0];
    assert.deepEqual(s.tokenIds, toks, `K=${K}`);
    assert.equal(s.thinkingTokens, thinking);
    assert.equal(s.answer, '#### 5');
    assert.equal(s.extracted, '5');
    assert.equal(s.answerTokens, toks.length - toks.indexOf(CLOSE) - 1);
    assert.equal(s.capped, true);
    assert.equal(s.finishReason, 'stop');
    assert.equal(s.thinking, 'hmm '.repeat(Math.max(0, K - 1)).trim());
    assert.equal(pieces.answer, '#### 5');
    assert.equal(pieces.thinking, s.thinking, 'the streamed thinking adds up to the thinking exactly (no trailing blank)');
    // Every forced token was fed to the model, in order, after the prompt and the invocation.
    assert.deepEqual(b.finished, [[Q, Q, Q, OPEN, ...toks]]);
    assert.equal(b.live, 0, 'every KV cache is freed');
  }
  // A capped model that goes on reasoning in its answer and closes again: the tags are dropped from the answer, the
  // text kept, and the stream adds up to it.
  const again = (h: number[]) => (h.filter((t) => t === CLOSE).length === 1 ? [HMM, OPEN, HMM, CLOSE][h.length - h.lastIndexOf(NL) - 1] ?? A5 : h.at(-1) === A5 ? EOS : never(h, 0));
  const pieces: Record<string, string> = { thinking: '', answer: '' };
  const re = (await answer(scripted(again).m, 'q', { reasoning: 'on', maxThinkingTokens: 2, onText: (_, phase, p) => { pieces[phase] += p; } })).samples[0];
  assert.equal(re.answer, 'hmm hmm #### 5');
  assert.equal(pieces.answer, re.answer);
  assert.equal(re.extracted, '5');
  // A sample that closes by itself before the cap is not forced.
  const { m } = scripted(thinker((h) => h.filter((t) => t === HMM).length === 2));
  const s = (await answer(m, 'q', { reasoning: 'on', maxThinkingTokens: 5 })).samples[0];
  assert.deepEqual(s.tokenIds, [HMM, HMM, CLOSE, A5]);
  assert.equal(s.thinkingTokens, 2);
  assert.equal(s.capped, false);
  // Without a close and without a cap, the length limit ends it: no vote.
  const cut = (await answer(scripted(never).m, 'q', { reasoning: 'on', maxTokens: 4 })).samples[0];
  assert.equal(cut.finishReason, 'length');
  assert.equal(cut.extracted, undefined);
  assert.equal(cut.answer, '');
});

test('routing: off/on forced, auto by router threshold, no router means on; classic adapters re-prefill', async () => {
  const policy = thinker(() => true, () => A7);
  const router = (t: number) => new Router(fitProbe([[0, 0], [1, 1]], [0, 1], { steps: 1 }), t);
  for (const [mode, r, route] of [['off', undefined, 'direct'], ['on', undefined, 'reasoning'], ['auto', undefined, 'reasoning'], ['auto', router(0), 'reasoning'], ['auto', router(1.1), 'direct']] as const) {
    const { m, b } = scripted(policy);
    let seen: [string, number | undefined] | undefined;
    const res = await answer(m, 'q', { reasoning: mode, onRoute: (rt, sc) => { seen = [rt, sc]; } }, { router: r });
    assert.equal(res.route, route, `${mode} ${r?.threshold}`);
    assert.deepEqual(seen, [route, res.routerScore]);
    assert.equal(res.routerScore === undefined, r === undefined);
    // One prefill either way; with the adapter loadable it carries the invocation (speculatively), which the
    // direct route truncates away and the reasoning route samples its first token after: no extra step.
    assert.deepEqual(b.finished[0].slice(0, 4), route === 'reasoning' ? [Q, Q, Q, OPEN] : [Q, Q, Q, CLOSE]);
    assert.equal(b.steps, 3, 'the prefill, then one step per fed token (CLOSE, A7): no step for the invocation');
    assert.equal(res.usage.promptTokens, route === 'reasoning' ? 4 : 3);
  }
  // Classic LoRA with routing: the base prefill for the router, then the prompt and the invocation again with the
  // adapter on (one prefill: its last logits give the first thinking token), then one step per sampled token.
  const { m, b } = scripted(policy, false);
  const steps: number[][][] = [];
  const orig = b.step.bind(b);
  b.step = async (h, req) => { steps.push(req.adapterMask ?? req.tokens.map((t) => t.map(() => 0))); return orig(h, req); };
  const res = await answer(m, 'q', { reasoning: 'auto' }, { router: router(0) });
  assert.equal(res.route, 'reasoning');
  assert.deepEqual(steps.slice(0, 3), [[[0, 0, 0]], [[1, 1, 1, 1]], [[1]]]);
  assert.equal(b.live, 0);
});

test('generate applies a loaded adapter by default: an activated one from the prompt\'s invocation (as PEFT\'s aLoRA), a plain one everywhere', async () => {
  const m = await model(), prompt = 'Hello there<think>';
  const ids = m.encode(prompt), at = ids.lastIndexOf(THINK);
  assert.equal(at, ids.length - 1);
  // This random model is sure of its greedy token: a near-flat temperature makes the draws show the logits.
  const o = { adapter: true, maxTokens: 8, temperature: 1000, seed: 5 } as const;
  const auto = await m.complete(prompt, o), explicit = await m.complete(prompt, { ...o, adapterFrom: at }), everywhere = await m.complete(prompt, { ...o, adapterFrom: 0 });
  assert.deepEqual(auto.tokens, explicit.tokens);
  assert.notDeepEqual(auto.tokens, everywhere.tokens, 'adapterFrom 0 is a different computation');
  await assert.rejects(m.complete('Hello there', { adapter: true }), /generate: the adapter .* is activated LoRA: it acts from its invocation "<think>" on, and the raw prompt does not contain it/);
  // chat: true appends the invocation: a prompt it no longer fits with is refused naming it.
  const ctx = m.config.maxPositionEmbeddings, padded = (k: number) => `Hello${' there'.repeat(k)}`;
  let k = 0;
  while (m.encode(padded(k + 1), true).length < ctx) k++;
  const n = m.encode(padded(k), true).length;
  await assert.rejects(m.complete(padded(k), { adapter: true, chat: true }), new RegExp(`^Error: generate: the prompt has ${n} tokens, ${n + 1} with the adapter's invocation \\(1, appended for chat: true\\); the model's context of ${ctx} tokens leaves no room to generate$`));
  // By default a loaded adapter applies: an activated one from the invocation its prompt holds, else not at all.
  const { adapter: _, ...plain } = o;
  assert.deepEqual((await m.complete(prompt, plain)).tokens, auto.tokens);
  assert.deepEqual((await m.complete('Hello there', plain)).tokens, (await m.complete('Hello there', { ...plain, adapter: false })).tokens);
  assert.notDeepEqual((await m.complete(prompt, { ...plain, adapter: false })).tokens, auto.tokens, 'adapter: false is the base model');
  // A plain LoRA applies everywhere by default.
  const classic = await loadModel(rm.dir, { quant: 'fp32', adapter: classicDir, worker: false, threads: 1 });
  try {
    assert.deepEqual((await classic.complete('Hello there', plain)).tokens, (await classic.complete('Hello there', { ...plain, adapter: true })).tokens);
    assert.notDeepEqual((await classic.complete('Hello there', plain)).tokens, (await classic.complete('Hello there', { ...plain, adapter: false })).tokens);
  } finally {
    await classic.close();
  }
  // A chat prompt gets the invocation after its generation prompt: the same tokens as that raw text.
  const chat = m.tokenizer.applyChatTemplate([{ role: 'user', content: 'Hello there' }], { addGenerationPrompt: true });
  assert.deepEqual((await m.complete('Hello there', { ...o, chat: true })).tokens, (await m.complete(`${chat}<think>`, o)).tokens);
  // In a chat prompt only a generation prompt that ends with the invocation invokes it, not the user's own text.
  const quoted = 'I wrote <think> in my notes';
  const quotedChat = m.tokenizer.applyChatTemplate([{ role: 'user', content: quoted }], { addGenerationPrompt: true });
  const asked = await m.complete(quoted, { ...o, chat: true });
  assert.equal(asked.promptTokens, m.encode(quoted, true).length + 1, 'the invocation was appended');
  assert.deepEqual(asked.tokens, (await m.complete(`${quotedChat}<think>`, { ...o, adapterFrom: m.encode(`${quotedChat}<think>`).length - 1 })).tokens);
  assert.deepEqual((await m.complete(quoted, { ...plain, chat: true })).tokens, (await m.complete(quoted, { ...plain, chat: true, adapter: false })).tokens, 'by default: base weights');
});

test('stop strings apply from the answer on, never inside the thinking; answer options are checked by name', async () => {
  const policy = thinker((h) => h.filter((t) => t === HMM).length === 2);
  const run = (o: Parameters<typeof answer>[2]) => answer(scripted(policy).m, 'q', { reasoning: 'on', ...o });
  const free = (await run({})).samples[0];
  assert.equal(free.thinking, 'hmm hmm');
  const hmm = (await run({ stop: 'hmm' })).samples[0]; // would have ended the sample at its first thought
  assert.deepEqual([hmm.thinking, hmm.answer, hmm.finishReason], [free.thinking, free.answer, 'stop']);
  const hash = (await run({ stop: ['#'] })).samples[0];
  assert.deepEqual([hash.thinking, hash.answer, hash.finishReason], ['hmm hmm', '', 'stop']);
  // With a thinking cap: neither the thinking nor the forced "\n</think>\n\n" is cut, and the answer's opening
  // blank lines are not taken by a "\n" stop.
  const capped = (stop: string[]) => answer(scripted(thinker(() => false)).m, 'q', { reasoning: 'on', maxThinkingTokens: 3, stop }).then((r) => r.samples[0]);
  for (const stop of [['hmm'], ['\n'], ['\n', 'hmm', '</think>']]) {
    const c = await capped(stop);
    assert.deepEqual([c.thinking, c.answer, c.capped, c.finishReason], ['hmm hmm', '#### 5', true, 'stop'], JSON.stringify(stop));
  }
  assert.equal((await capped(['5'])).answer, '#### ', 'the answer as generated, up to the stop');
  await assert.rejects(run({ maxTokens: 0 }), /answer: maxTokens must be an integer ≥ 1, got 0/);
  await assert.rejects(run({ max_tokens: 5 } as object), /answer: unknown option "max_tokens"/);
  await assert.rejects(run({ json: { type: 'object' }, stop: ['\n'] }), /^Error: answer: json and stop: a stop string would cut the JSON/);
  await assert.rejects(run({ samples: '2' as never }), /answer: samples must be a positive integer, got "2"/);
  await assert.rejects(run({ task: 'foo' as never }), /answer: task must be one of gsm8k, svamp, asdiv, aime24, amc23, math500, synthetic; got "foo"/);
  await assert.rejects(run({ adapterMode: 'lora' as never }), /answer: adapterMode must be "activated" or "classic", got "lora"/);
  await assert.rejects(run({ seed: 'x' as never }), /answer: seed must be an integer within ±\(2\^53 − 1\), got "x"/);
  await assert.rejects(run({ onRoute: 5 as never }), /answer: onRoute must be a function, got 5/);
  // null is no option's default: these five took it as one, the others refused it as a bad value.
  for (const k of ['reasoning', 'samples', 'vote', 'task', 'stop', 'earlyStop']) await assert.rejects(run({ [k]: null }), new RegExp(`^Error: answer: ${k} is null; leave it out \\(or undefined\\) for the default$`));
  await assert.rejects(run({ earlyStop: 'no' as never }), /answer: earlyStop must be true or false, got "no"/);
  await assert.rejects(run({ signal: 'x' as never }), /answer: signal must be an AbortSignal, got "x"/);
  await assert.rejects(run({ invocation: 5 as never }), /answer: invocation must be a non-empty string, got 5/);
  await assert.rejects(answer(scripted(policy).m, 'q', {}, { routr: 1 } as never), /answer: unknown option "routr" \(options: router, verifier\)/);
  await assert.rejects(answer(scripted(policy).m, 'q', {}, null as never), /^Error: answer: the fourth argument must be \{ router\?, verifier\? \} \(or left out\), got null$/);
  assert.throws(() => new Reasoner(scripted(policy).m, { routr: 1 } as never), /Reasoner: unknown option "routr" \(options: router, verifier\)/);
  assert.throws(() => new Reasoner(null as never), /Reasoner: the first argument must be a model from loadModel, got null/);
  // Samples whose KV cache could never fit in this machine's memory are refused before any work.
  await assert.rejects(answer(await model(), 'q', { reasoning: 'on', samples: 1e9, maxTokens: 64 }), /answer: 1000000000 samples of up to \d+ tokens need about [\d.]+ GiB of KV cache; this machine has [\d.]+ GiB of memory: ask for fewer samples \(or a lower maxTokens\)/);
  // A direct answer decodes one sequence whatever `samples` says: not refused for the samples' memory.
  assert.equal((await answer(await model(), 'q', { reasoning: 'off', samples: 1e9, maxTokens: 4 })).route, 'direct');
  await assert.rejects(answer(scripted(policy).m, { messages: [] } as never), /answer: the question must be a string or a list of messages, got object/);
  // A prompt that fills the context is refused before any prefill.
  const full = scripted(policy);
  (full.m as unknown as { encode: () => number[] }).encode = () => new Array(1000).fill(Q);
  await assert.rejects(answer(full.m, 'q', { reasoning: 'off' }), /answer: the prompt has 1000 tokens, which leaves no room in the model's context of 1000 tokens/);
  assert.equal(full.b.steps, 0, 'no prefill ran');
  // One that fits, but not with the invocation: said so, before the prefill; "auto" answers it directly.
  (full.m as unknown as { encode: () => number[] }).encode = () => new Array(999).fill(Q);
  await assert.rejects(answer(full.m, 'q', { reasoning: 'on' }), /answer: the prompt has 999 tokens, 1000 with the invocation's 1, which leaves no room to reason in the model's context of 1000 tokens/);
  assert.equal(full.b.steps, 0, 'no prefill ran');
  // An application tells these from other errors by their class (to drop its oldest turns and ask again), as OpenAI's code.
  const tooLong = await answer(full.m, 'q', { reasoning: 'on' }).catch((e: unknown) => e);
  assert.ok(tooLong instanceof ContextLengthError);
  assert.deepEqual([tooLong.code, tooLong.tokens, tooLong.context], ['context_length_exceeded', 1001, 1000]);
  const auto = await answer(full.m, 'q', { reasoning: 'auto', maxTokens: 4 });
  assert.deepEqual([auto.route, auto.samples[0].finishReason, auto.usage.promptTokens], ['direct', 'length', 999]);
  // A signal aborted before the call: nothing is encoded or generated, on either route (a cap of 0 forces no close either).
  for (const [reasoning, cap] of [['off', undefined], ['on', undefined], ['on', 0], ['auto', undefined]] as const) {
    // "auto" without a router reasons (no prompt encoding needed to know); the route is reported as it is known.
    const s = scripted(policy), routes: string[] = [], n = reasoning === 'off' ? 1 : 3;
    const r = await answer(s.m, 'q', { reasoning, samples: n, temperature: 0.5, maxThinkingTokens: cap, signal: AbortSignal.abort(), onRoute: (x) => routes.push(x) });
    assert.deepEqual(r.samples.map((x) => [x.tokens, x.finishReason, !!x.capped]), new Array(n).fill([0, 'cancelled', false]), `${reasoning} ${cap}`);
    const route = reasoning === 'off' ? 'direct' : 'reasoning';
    assert.deepEqual([r.usage.completionTokens, r.finishReason, r.route, routes, s.b.steps], [0, 'cancelled', route, [route], 0]);
  }
  // A router with nothing to route to (no adapter) is an error, not a silent "direct".
  const bare = { ...scripted(policy).m, adapter: undefined } as unknown as Model;
  await assert.rejects(answer(bare, 'q', { reasoning: 'auto' }, { router: new Router(fitProbe([[0, 0], [1, 1]], [0, 1], { steps: 1 }), 0.5) }),
    /answer: a router was given, but the model was loaded without its reasoning adapter/);
});

test('answer() with a classic adapter: the signal stops the prompt\'s encoding with the adapter between its 512-token parts; the result says cancelled, on the reasoning route', async () => {
  const classic = await loadModel(rm.dir, { quant: 'fp32', adapter: classicDir, worker: false, threads: 1, promptCache: 0 });
  try {
    const halt = new AbortController(), halting = new CoalescingBackend((classic.backend as CoalescingBackend).inner, { onRun: () => halt.abort() }), routes: string[] = [];
    const r = await answer(withBackend(classic, halting), 'word '.repeat(400), { reasoning: 'on', samples: 2, signal: halt.signal, onRoute: (x) => routes.push(x) });
    assert.deepEqual([r.finishReason, r.route, r.samples.length, r.usage.completionTokens, r.usage.promptTokens > 1024, halting.stats.runs, routes], ['cancelled', 'reasoning', 2, 0, true, 1, ['reasoning']]);
  } finally {
    await classic.close();
  }
});

test('votes read the answer each sample states unless a task says how: "The answer is 5." and "Answer: 5." agree', async () => {
  // Each sample thinks one or more "hmm"s, then states 5 in one of two ways, by the parity of its thinking.
  const policy = thinker((h, u) => h.at(-1) === HMM && u < 0.5, (h) => (h.filter((t) => t === HMM).length % 2 ? SAY5 : COLON5));
  const r = await answer(scripted(policy).m, 'q', { reasoning: 'on', samples: 8, temperature: 1, seed: 1 });
  const said = r.samples.map((s) => s.answer), k = said.filter((a) => a === 'The answer is 5.').length;
  assert.ok(k > 0 && k < 8, `both phrasings among the samples: ${said.join(' | ')}`);
  assert.deepEqual([r.votes, r.winner, r.samples.map((s) => s.extracted)], [{ 5: 8 }, '5', new Array(8).fill('5')]);
  // The synthetic task's grader reads a reply without "####" whole (its chat replies): the two phrasings differ.
  const t = await answer(scripted(policy).m, 'q', { reasoning: 'on', samples: 8, temperature: 1, seed: 1, task: 'synthetic' });
  assert.deepEqual(t.votes, { 'The answer is 5.': k, 'Answer: 5.': 8 - k });
  // MATH answers of one value vote together, under the form seen first.
  const boxes = thinker((h, u) => h.at(-1) === HMM && u < 0.5, (h) => (h.filter((x) => x === HMM).length % 2 ? PI18 : EIGHTEENPI));
  const m = await answer(scripted(boxes).m, 'q', { reasoning: 'on', samples: 8, temperature: 1, seed: 1, task: 'math500' });
  const forms = new Set(m.samples.map((s) => s.answer));
  assert.equal(forms.size, 2, `both forms among the samples: ${[...forms].join(' | ')}`);
  assert.equal(Object.keys(m.votes!).length, 1, JSON.stringify(m.votes));
  assert.equal(Object.values(m.votes!)[0], 8);
  assert.ok(['2\\pi+18', '18+2\\pi'].includes(m.winner!), m.winner);
});

test('with no answer to vote on, a sample cut off by maxTokens makes the result "length", whichever sample comes first', async () => {
  // Each sample thinks "hmm"s and either stops inside its thinking (no answer) or thinks until maxTokens.
  const policy = (h: number[], u: number) => (h.includes(CLOSE) ? EOS : h.at(-1) === HMM && u < 0.3 ? EOS : HMM);
  const orders = new Set<string>();
  for (let seed = 0; seed < 16; seed++) {
    const r = await answer(scripted(policy).m, 'q', { reasoning: 'on', samples: 2, temperature: 1, maxTokens: 12, seed });
    const kinds = r.samples.map((x) => x.finishReason);
    assert.deepEqual([r.winner, r.votes], [undefined, {}]);
    assert.equal(r.finishReason, kinds.includes('length') ? 'length' : 'stop', `seed ${seed}: ${kinds}`);
    orders.add(kinds.join());
  }
  assert.ok(orders.has('stop,length') && orders.has('length,stop'), [...orders].join(' | '));
});

test('early stop: the remaining samples stop once the leading answer cannot be overtaken', async () => {
  // Each sample thinks one "hmm" (its first token comes from the prefill's invocation logits, where this scripted
  // model is deterministic), then either closes (u < 0.5) and answers 5, or thinks until the length limit.
  const policy = thinker((h, u) => h.at(-1) === HMM && h.at(-2) === OPEN && u < 0.5);
  let stopped = 0, kept = 0;
  for (let seed = 0; seed < 12; seed++) {
    const base = await answer(scripted(policy).m, 'q', { reasoning: 'on', samples: 6, maxTokens: 40, seed });
    const quick = base.samples.filter((s) => s.finishReason === 'stop').length;
    const { m, b } = scripted(policy);
    const es = await answer(m, 'q', { reasoning: 'on', samples: 6, maxTokens: 40, seed, earlyStop: true });
    const expectStop = quick > 6 - quick; // all quick ones finish on the same step; the others can add ≤ 1 vote each
    es.samples.forEach((s, i) => {
      assert.equal(s.finishReason, base.samples[i].finishReason === 'stop' ? 'stop' : expectStop ? 'early-stop' : 'length', `seed ${seed} sample ${i}`);
    });
    assert.equal(es.winner, quick ? '5' : undefined);
    assert.equal(es.finishReason, quick ? 'stop' : 'length'); // an early-stopped sample is never the one chosen
    if (expectStop) { stopped++; assert.ok(b.steps <= 4, `seed ${seed}: ${b.steps} steps`); assert.deepEqual(es.votes, { 5: quick }); } else kept++;
  }
  assert.ok(stopped > 0 && kept > 0, `both cases occur (${stopped} stopped, ${kept} ran on)`);
});

test('verifier scores come from the hidden state of the step that sampled the stop token (no extra pass)', async () => {
  const policy = thinker((h, u) => h.at(-1) !== OPEN && u < 0.5, (h) => (h.length % 2 ? A5 : A7));
  const { m } = scripted(policy);
  const probe = fitProbe([[0, 5], [0, 6]], [1, 0], { steps: 200, lr: 0.1 }); // feature 1 = last token: "#### 5" good, "#### 7" bad
  const verifier = new Verifier(probe);
  const res = await answer(m, 'q', { reasoning: 'on', samples: 6, seed: 3, vote: 'verifier', collectHidden: true }, { verifier });
  res.samples.forEach((s, i) => {
    assert.deepEqual([...s.hidden!], [3 + 1 + s.tokens, s.tokenIds!.at(-1)!], `sample ${i}: state at its last token`);
    assert.equal(s.verifierScore, verifier.score(s.hidden!));
  });
  const fives = res.samples.map((s, i) => [s, i] as const).filter(([s]) => s.extracted === '5');
  assert.ok(fives.length && fives.length < 6, 'both answers occur');
  assert.equal(res.winner, '5');
  assert.equal(res.chosen, fives[0][1]);
  // Weighted votes from the same samples.
  const cands = res.samples.map((s) => ({ extracted: s.extracted, meanLogprob: s.meanLogprob, verifierScore: s.verifierScore }));
  assert.deepEqual(vote('verifier-vote', cands).winner, '5');
  await assert.rejects(answer(m, 'q', { reasoning: 'on', vote: 'verifier' }), /needs a verifier/);
  assert.equal((await answer(m, 'q', { reasoning: 'off', vote: 'verifier' })).route, 'direct', 'no reasoning, no vote: no verifier needed');
});

test('checked vote (scripted): the samples whose written sum holds outvote a more frequent, slipped one', async () => {
  // Each sample writes "hmm " (the first thinking token comes from the prefill's logits, the same for all), then one
  // sum — "2 + 3 = 7" three times in four — and answers what it wrote; a right sum takes three more "hmm " first, so
  // the slips end first.
  const policy = (h: number[], u: number): number => {
    if (!h.includes(CLOSE)) {
      if (!h.includes(RIGHT_SUM) && !h.includes(WRONG_SUM)) return !h.includes(HMM) ? HMM : u < 0.75 ? WRONG_SUM : RIGHT_SUM;
      return h.includes(WRONG_SUM) || h.filter((t) => t === HMM).length >= 4 ? CLOSE : HMM;
    }
    const last = h.at(-1)!;
    return last === CLOSE ? (h.includes(WRONG_SUM) ? A7 : A5) : EOS;
  };
  const { m } = scripted(policy);
  // The question's 4 is used by no sample: one flaw each, the slips' false sum a second (the check reads the question).
  const q = 'Ann has 2 pens and buys 3 more. Bo has 4. How many pens does Ann have?';
  const checked = await answer(m, q, { reasoning: 'on', samples: 8, seed: 4, vote: 'checked', earlyStop: true });
  const wrote = checked.samples.map((s) => s.thinking), right = 'hmm 2 + 3 = 5hmm hmm hmm';
  assert.ok(wrote.filter((t) => t === 'hmm 2 + 3 = 7').length > wrote.filter((t) => t === right).length && wrote.includes(right), wrote.join(' | '));
  assert.deepEqual(checked.samples.map((s) => s.flaws), wrote.map((t) => (t === right ? 1 : 2)));
  assert.equal(checked.winner, '5');
  assert.equal(checked.chosen, wrote.indexOf(right));
  assert.ok(checked.samples.every((s) => s.finishReason === 'stop'), 'the checked vote does not stop early: a later sample may have fewer flaws');
  // Majority decides 7 before the right samples end, and stops them.
  const majority = await answer(m, q, { reasoning: 'on', samples: 8, seed: 4, earlyStop: true });
  assert.deepEqual([majority.winner, majority.samples.map((s) => s.finishReason === 'early-stop'), majority.samples[0].flaws], ['7', wrote.map((t) => t === right), undefined]);
  // A tool's result after the user's message: the question is still the user's.
  const tooled = await answer(m, [{ role: 'user', content: q }, { role: 'assistant', content: '' }, { role: 'tool', content: 'pens: 9' }], { reasoning: 'on', samples: 8, seed: 4, vote: 'checked' });
  assert.deepEqual(tooled.samples.map((s) => s.flaws), checked.samples.map((s) => s.flaws));
  // A direct answer has no vote, nor flaws.
  assert.equal((await answer(m, q, { reasoning: 'off', vote: 'checked' })).samples[0].flaws, undefined);
});

// ---------------------------------------------------------------------------------------------------------
// Pure pieces

test('checkWork: false equations and unused quantities, as written (exact)', () => {
  const q = 'Owen starts with 13 liters of water. Leo gives him 7 liters. He fills 7 jugs with 2 liters each and sells them. How many liters are left?';
  assert.deepEqual(checkWork(q, '13 + 7 = 20\n7 * 2 = 14\n20 - 14 = 6'), { equations: 3, falseEquations: [], unusedQuantities: [], flaws: 0 });
  // A slip, and a step that skips the jugs: 2 is never computed with.
  assert.deepEqual(checkWork(q, 'First, 13 + 7 = 20.\nThen 20 - 7 = 12.'), { equations: 2, falseEquations: ['20 - 7 = 12'], unusedQuantities: ['2'], flaws: 2 });
  // Quantities count as used only on lines that compute (with an "="), not where the question is repeated.
  assert.deepEqual(checkWork(q, `The question: ${q}\nThe answer is 6.`), { equations: 0, falseEquations: [], unusedQuantities: ['13', '7', '2'], flaws: 3 });
  // A percentage used as a factor, a fraction by its value; a clock time is no quantity.
  const p = 'From 1:00 to 5:00 a price of $40 went up 25%, then 1/4 of it was taken off.';
  assert.deepEqual(checkWork(p, '40 * 1.25 = 50\n50 * 0.25 = 12.5\n50 - 12.5 = 37.5'), { equations: 3, falseEquations: [], unusedQuantities: [], flaws: 0 });
  assert.deepEqual(checkWork(p, '40 * 1.25 = 50, 50 - 10 = 40').unusedQuantities, ['1/4']);
  assert.deepEqual(checkWork(p, '40 * .25 = 10, 40 + 10 = 50, 50 / 4 = 12.5').unusedQuantities, [], '.25 is both 25 % and 1/4');
  assert.deepEqual(checkWork(p, '40 + 10 = 50, 50 / 4 = 12.5').unusedQuantities, [], 'a division by 4 may be either 25% or 1/4');
  assert.deepEqual(checkWork('A $40 price went up 25%, then 1/3 of it was taken off.', '40 + 10 = 50, 50 / 3 = 16.67').unusedQuantities, ['25%']);
  // 50% off as a halving, 50% more as 150% (GSM8K's pickaxe solution: "24 pounds/day * 150% = 36").
  assert.deepEqual(checkWork('A $40 coat is 50% off.', '40 / 2 = 20').unusedQuantities, []);
  assert.deepEqual(checkWork('He mines 24 pounds, and 50% more with steel.', '24 * 150 / 100 = 36').unusedQuantities, []);
  assert.deepEqual(checkWork('He mines 24 pounds, and 30% more with steel.', '24 / 3 = 8').unusedQuantities, ['30%']);
  // Precedence, parentheses (the sentence's own are not the equation's), unary minus, and the spellings of × and ÷.
  assert.deepEqual(checkWork('', '(2 + 3) * 4 = 20, 2 + 3 * 4 = 14 (and 4 - -2 = 6), 3 × 4 = 12, 3 x 4 = 12, 12 \\div 4 = 3, $3 \\times 4 = \\$12, 12 ÷ 4 = 4'),
    { equations: 8, falseEquations: ['12 / 4 = 4'], unusedQuantities: [], flaws: 1 });
  // Results rounded to the decimals they are written with (a quotient also down or up: 19 / 5 = 3 full boxes, 4
  // buses); thousands separators; numbers inside words are not operands.
  assert.deepEqual(checkWork('It costs $1,200 for 3 of them.', '1,200 / 3 = 400, 10 / 3 = 3.33, 10 / 3 = 3.5, 3.3 + 0.1 = 3.5, item2 + 2 = 4'),
    { equations: 4, falseEquations: ['10 / 3 = 3.5', '3.3 + 0.1 = 3.5'], unusedQuantities: [], flaws: 2 });
  assert.deepEqual(checkWork('', '19 / 5 = 3 full boxes, 19 / 5 = 4 trips, 2 / 3 = 0.66, 2 / 3 = 0.67, 18 / 2 = 8').falseEquations, ['18 / 2 = 8']);
  assert.deepEqual(checkWork('It cost \\$1{,}200, then 1\u202f500.', '\\$1{,}200 + \\$300 = \\$1{,}500 and 1\u00a0500 - 300 = 1\u2009200'),
    { equations: 2, falseEquations: [], unusedQuantities: [], flaws: 0 });
  // Clock times, trials ("?"), a colon before a number, ordinals.
  assert.deepEqual(checkWork('On the 3rd day, from 9:30, it costs:$5 for 3 hours.', 'Cost:$5 * 3 = 15; 9:30 + 30 = 10:00; 5 * 3 = 14? No: 5 * 3 = 15'),
    { equations: 2, falseEquations: [], unusedQuantities: [], flaws: 0 });
  // A mixed number is used by its value or its parts; a fraction a/b by its value, or a and b together.
  const mixed = 'A recipe needs 2 1/2 cups for each of 4 cakes, and 5/8 of the 16 eggs.';
  assert.deepEqual(checkWork(mixed, '2.5 * 4 = 10\n16 / 8 * 5 = 10'), { equations: 2, falseEquations: [], unusedQuantities: [], flaws: 0 });
  assert.deepEqual(checkWork(mixed, '2 * 4 = 8\n0.625 * 16 = 10').unusedQuantities, ['2 1/2']);
  // LaTeX and Markdown, as instruction-tuned models write their work: fractions, boxed results, math delimiters, bold marks.
  const clips = 'Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell in all?';
  for (const w of ['May: \\(\\frac{48}{2} = 24\\). Total: \\(48 + 24 = 72\\).', '$48 \\cdot \\dfrac{1}{2}=24$, so $48+24=\\boxed{72}$',
    '**Step 1:** 48 / 2 = 24\n**Step 2:** 48 + 24 = **72**', '\\[ \\frac{48 + 48}{4} = 24 \\]\n\\[ 48 + 24 = 72 \\text{ clips} \\]']) {
    assert.deepEqual(checkWork(clips, w), { equations: 2, falseEquations: [], unusedQuantities: [], flaws: 0 }, w);
  }
  assert.deepEqual(checkWork(clips, '**Step 1:** \\frac{48}{2} = 25\n**Step 2:** \\left(48 + 25\\right) \\times 1 = **73**').falseEquations, ['48/2 = 25']);
  assert.deepEqual(checkWork('', '2**3 = 8, 2 ** 3 = 6').equations, 0, 'a power is not read as a product');
  // A LaTeX mixed number; a result a letter or superscript changes, or one with a scale word (either scale holds); a
  // root or U+22C5 dot before the left side; "≈" lines compute; an unspaced en dash is a range.
  assert.deepEqual(checkWork('A recipe needs 2 1/2 cups per cake. How many cups for 4 cakes?', '\\(4 \\times 2\\frac{1}{2} = 10\\)').flaws, 0);
  assert.deepEqual(checkWork('It needs $2\\frac{1}{2}$ cups per cake for 4 cakes.', '4 \\times 2.5 = 10'), { equations: 1, falseEquations: [], unusedQuantities: [], flaws: 0 });
  assert.deepEqual(checkWork('', '\\(20 - 6 = 2x\\), 64 - 16 = 4w; $500,000 + $700,000 = $1.2 million; 1500 \\times 2 = 3k; 9 + 16 = 5²\n84/12 = 7 dozen\n15 * 10 = 150kg\n2 + 2 = 5 dozen'),
    { equations: 4, falseEquations: ['2 + 2 = 5 dozen'], unusedQuantities: [], flaws: 1 });
  assert.deepEqual(checkWork('', 'The diagonal is √(9 + 16) = 5 feet; √25 + 1 = 6; so 2 ⋅ 3 + 4 = 10'), { equations: 1, falseEquations: [], unusedQuantities: [], flaws: 0 });
  assert.deepEqual(checkWork('Split a $100 bill among 3 friends.', '\\( \\frac{100}{3} \\approx 33.33 \\)').unusedQuantities, []);
  assert.deepEqual(checkWork('', 'Days 1–3 = 3 days, from 2015–2020 = 5 years, 120 – 80 = 40'), { equations: 1, falseEquations: [], unusedQuantities: [], flaws: 0 });
  // A chain is read from each "=": its second step is an equation of its own. An equation is within one line (a
  // list item's "- " does not subtract it from the line before).
  assert.deepEqual(checkWork('', '3 + 4 = 7 + 2 = 10').falseEquations, ['7 + 2 = 10']);
  assert.deepEqual(checkWork('', '2 * 3 = 6\n- 6 + 1 = 7\n6\n+ 1 = 7'), { equations: 2, falseEquations: [], unusedQuantities: [], flaws: 0 });
  // Long traces: 20,000 operands without an "=" (a regular expression that backtracks through the ways of splitting
  // their spaces never returns), 100,000 parentheses (a parser that recursed into them would overflow the stack).
  assert.deepEqual(checkWork('2', ' 1 +'.repeat(20000) + ' 2 = 3 + ' + '('.repeat(100000) + '1 + 1 = 2'), { equations: 0, falseEquations: [], unusedQuantities: [], flaws: 0 });
  // What is not surely an equation of numbers is not checked (each of these right; as read, each would be false).
  for (const w of ['9 hours * 2/3 = 6 hours', 'Unicorns: 27(1/3)=9', '15 pages x 1/3 = 5 pages', '60g * 4/5 = 240g/5 = 48 grams', '3 / 6 = 50%',
    '5 - 1 - 1/2 = 3 1/2 hours', '2 * 4 + 3 * 6 = 8 + 18 = 26', '$350 000 x 5/100 = $17 500', 'Yuri scored 1/2 (68) + 10 = 44', 'so 2/3 of 12 + 1 = 9']) {
    assert.deepEqual(checkWork('', w).falseEquations, [], w);
  }
  assert.deepEqual(checkWork('', 'x = 105(2/7) = 30; 120 – 80 − 15 = 25; 32 x (30/60) = 16').equations, 2);
});

test('checkWork on GSM8K\'s 1,319 reference solutions: 2 equations called false, both wrong in the reference', () => {
  const rows = fs.readFileSync(sharedPath('data/gsm8k/test.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { question: string; answer: string });
  let equations = 0, unused = 0;
  const wrong: string[] = [];
  for (const r of rows) {
    const c = checkWork(r.question, r.answer.replace(/<<[^>]*>>/g, '').replace(/#### .*/, '')); // the solution as text, without its calculator annotations
    equations += c.equations; wrong.push(...c.falseEquations); unused += +(c.unusedQuantities.length > 0);
  }
  // "3/4 of a skein of yarn * 364 yards = 364 / 4 = 273 yards" and "So, Suzzane has $32 - $20 = $300 left."
  assert.deepEqual([rows.length, equations, wrong, unused], [1319, 3260, ['364 / 4 = 273', '32 - 20 = 300'], 101]);
});

test('checked vote: the fewest-flaw samples vote, confidence-weighted; unchecked samples count as flawless', () => {
  const c = (extracted: string | undefined, p: number, flaws?: number): Candidate => ({ extracted, meanLogprob: Math.log(p), flaws });
  // Majority and confidence say 7; the two flawless samples say 5 and 9, and 5 is surer.
  const cands = [c('7', 0.9, 1), c('5', 0.6, 0), c('7', 0.9, 2), c('9', 0.5, 0), c('7', 0.9, 1), c(undefined, 1, 0)];
  assert.equal(confidenceVote(cands).winner, '7');
  const r = checkedVote(cands);
  assert.equal(r.winner, '5'); assert.equal(r.chosen, 1);
  assert.deepEqual(Object.keys(r.votes), ['5', '9']);
  assert.ok(Math.abs(r.votes['5'] - 0.6) < 1e-12 && Math.abs(r.votes['9'] - 0.5) < 1e-12);
  assert.deepEqual(vote('checked', cands), r);
  // A sample without an answer does not set the fewest flaws (the one above has none, and no vote).
  assert.equal(checkedVote([c('7', 0.9, 1), c(undefined, 1, 0), c('5', 0.2, 1)]).winner, '7');
  assert.deepEqual(checkedVote([c('7', 0.5), c('5', 0.3), c('5', 0.3)]), confidenceVote([c('7', 0.5), c('5', 0.3), c('5', 0.3)]));
  assert.deepEqual(checkedVote([c(undefined, 1, 0)]), { chosen: 0, winner: undefined, votes: {} });
  assert.equal(canStopEarly('checked', [c('5', 1, 1), c('5', 1, 1), c('5', 1, 1)], 1), false, 'an unfinished sample may have fewer flaws');
  assert.equal(canStopEarly('checked', [c('5', 1, 1)], 0), true);
});

test('votes: majority, confidence, best-of-N, verifier-weighted; ties to the lowest sample index', () => {
  const c = (extracted: string | undefined, p = 1, verifierScore?: number): Candidate => ({ extracted, meanLogprob: Math.log(p), verifierScore });
  assert.deepEqual(majorityVote([c('5'), c('7'), c('5'), c(undefined), c('7')]), { chosen: 0, winner: '5', votes: { 5: 2, 7: 2 } });
  assert.deepEqual(majorityVote([c('7'), c('5'), c('5')]), { chosen: 1, winner: '5', votes: { 7: 1, 5: 2 } });
  // The winning answer is shown from its first sample whose thinking ended by itself (a capped one may reason on in its answer).
  const capped = (x: string) => ({ ...c(x), capped: true });
  assert.deepEqual(majorityVote([capped('5'), c('7'), capped('5'), c('5')]), { chosen: 3, winner: '5', votes: { 5: 3, 7: 1 } });
  assert.equal(majorityVote([capped('5'), capped('5')]).chosen, 0);
  assert.deepEqual(majorityVote([capped('10'), c('14'), c('6')]), { chosen: 1, winner: '14', votes: { 10: 1, 14: 1, 6: 1 } }, 'a tie goes to an answer a sample reached by itself');
  assert.equal(vote('checked', [capped('5'), { ...c('5'), flaws: 1 }, c('5')]).chosen, 2, 'among the voters');
  assert.deepEqual(majorityVote([c(undefined), c(undefined)]), { chosen: 0, winner: undefined, votes: {} });
  const conf = confidenceVote([c('7', 0.9), c('5', 0.3), c('5', 0.4)]);
  assert.equal(conf.winner, '7'); assert.equal(conf.chosen, 0);
  assert.ok(Math.abs(conf.votes['5'] - 0.7) < 1e-12);
  assert.equal(confidenceVote([c('7', 0.5), c('5', 0.3), c('5', 0.3)]).winner, '5');
  assert.deepEqual(verifierBestOfN([c('7', 1, 0.2), c('5', 1, 0.9), c(undefined, 1, 0.9), c('7', 1, 0.1)]), { chosen: 1, winner: '5', votes: { 7: 2, 5: 1 } });
  assert.equal(verifierBestOfN([c('7', 1, 0.2), c(undefined, 1, 0.95)]).chosen, 0, 'a parsable answer goes before a higher-scored unparsable one');
  assert.equal(verifierBestOfN([c(undefined, 1, 0.2), c(undefined, 1, 0.95)]).chosen, 1, 'among unparsable ones only, the best score');
  const vv = verifierVote([c('5', 1, 0.1), c('7', 1, 0.9), c('5', 1, 0.2), c('5', 1, 0.1)]); // majority would say 5
  assert.equal(vv.winner, '7'); assert.equal(vv.chosen, 1);
  assert.ok(Math.abs(vv.votes['5'] - 0.4) < 1e-12 && vv.votes['7'] === 0.9);
  assert.equal(verifierVote([c('7', 1, 0.2), c('5', 1, 0.5), c('7', 1, 0.25)]).winner, '5');
  // Samples that never reached their end carry no score: they have no say in a verifier vote, and with no
  // scored sample at all best-of-N falls back to the majority.
  assert.deepEqual(verifierVote([c('7'), c('5', 1, 0.3)]), { chosen: 1, winner: '5', votes: { 5: 0.3 } });
  assert.deepEqual(verifierVote([c('7')]), { chosen: 0, winner: undefined, votes: {} });
  assert.deepEqual(vote('verifier-vote', [c('7'), c('5'), c('5')]), { chosen: 1, winner: '5', votes: { 7: 1, 5: 2 } });
  assert.deepEqual(verifierBestOfN([c('7'), c('5'), c('5')]), { chosen: 1, winner: '5', votes: { 7: 1, 5: 2 } });
  assert.throws(() => vote('nope' as never, [c('1')]), /unknown method/);
});

test('early-stop rule: lead minus runner-up must exceed the remaining samples', () => {
  const c = (e: string, p = 1, s?: number): Candidate => ({ extracted: e, meanLogprob: Math.log(p), verifierScore: s });
  assert.equal(canStopEarly('majority', [c('5'), c('5'), c('5')], 2), true);
  assert.equal(canStopEarly('majority', [c('5'), c('5'), c('5')], 3), false, 'a tie is still possible');
  assert.equal(canStopEarly('majority', [c('5'), c('5'), c('7')], 1), false);
  assert.equal(canStopEarly('majority', [c('5'), c('5'), c('7')], 0), true);
  assert.equal(canStopEarly('majority', [], 1), false);
  assert.equal(canStopEarly('confidence', [c('5', 0.9), c('5', 0.9), c('7', 0.5)], 1), true); // 1.8 - 0.5 > 1
  assert.equal(canStopEarly('confidence', [c('5', 0.9), c('5', 0.5), c('7', 0.5)], 1), false); // 1.4 - 0.5 < 1
  assert.equal(canStopEarly('verifier-vote', [c('5', 1, 0.9), c('5', 1, 0.8)], 1), true);
  assert.equal(canStopEarly('verifier', [c('5', 1, 0.99), c('5', 1, 0.99)], 1), false, 'best-of-N cannot stop early');
});

test('router: separable features give 100 % training accuracy; save/load round trip; hand-computed thresholds', () => {
  const r = rng(5), X: number[][] = [], y: number[] = [];
  for (let i = 0; i < 80; i++) {
    const x = Array.from({ length: 6 }, () => 3 * r.normal() + 10); // off-centre and scaled: standardisation matters
    const side = x[0] - 10 + 0.5 * (x[1] - 10);
    if (Math.abs(side) < 0.5) continue; // a margin
    X.push(x); y.push(side > 0 ? 1 : 0);
  }
  const probe = fitProbe(X, y, { steps: 400, lr: 0.05, l2: 1e-4 });
  const scores = X.map((x) => probe.score(x));
  assert.equal(accuracyAt(scores, y, 0.5), 1);
  assert.equal(auc(scores, y), 1);
  const router = new Router(probe, 0.42, { name: 'savings', maxLoss: 0.01 }, { note: 'test' });
  const file = path.join(tmp, 'router.json');
  router.save(file);
  const back = Router.load(file, 6);
  assert.equal(back.threshold, 0.42);
  assert.deepEqual(back.rule, { name: 'savings', maxLoss: 0.01 });
  X.forEach((x) => assert.equal(back.score(x), router.score(x)));
  assert.throws(() => Router.load(file, 7), /hidden states of size 6, this model's is 7/);
  assert.throws(() => back.score([1, 2]), /feature vector has 2 values, the probe expects 6/);
  // A hidden state holding a NaN is refused: its NaN score was "no reasoning" (NaN ≥ threshold is false) unsaid.
  assert.throws(() => back.score([1, 2, 3, NaN, 5, 6]), { message: "probe: the model's hidden state holds NaN at 3 of 6: its forward pass overflowed or its weights are not finite" });
  assert.throws(() => Verifier.load(file), /"format" is "edgereason-router", expected "edgereason-verifier"/);
  assert.throws(() => Router.load(path.join(tmp, 'none.json')), { message: `router: ${path.join(tmp, 'none.json')} not found` });
  assert.throws(() => Router.load(undefined as never), { message: 'router: load takes the path of a router JSON file, got undefined' });
  assert.throws(() => Router.load(file, '6' as never), { message: 'router: hiddenSize must be the model\'s hidden size (a positive integer, model.config.hiddenSize), got "6"' });
  assert.throws(() => Verifier.load(file, 0), { message: 'verifier: hiddenSize must be the model\'s hidden size (a positive integer, model.config.hiddenSize), got 0' });
  assert.throws(() => Verifier.load(path.join(tmp, 'none.json')), { message: `verifier: ${path.join(tmp, 'none.json')} not found` });
  assert.equal(back.gate, undefined);
  router.gate = { minLogprob: -0.3, tokens: 16 };
  router.save(file);
  assert.deepEqual(Router.load(file, 6).gate, { minLogprob: -0.3, tokens: 16 });
  fs.writeFileSync(file, JSON.stringify({ ...router.toJSON(), gate: { minLogprob: 'x', tokens: 16 } }));
  assert.throws(() => Router.load(file), /router\.json: field "gate" must be \{"minLogprob": a log-probability ≤ 0, "tokens": integer ≥ 1\} or null, got \{"minLogprob":"x","tokens":16\}/);
  // Every field of a hand-edited file is checked by name; null means no gate.
  const edited = (change: Record<string, unknown>) => { fs.writeFileSync(file, JSON.stringify({ ...router.toJSON(), ...change })); return () => Router.load(file); };
  assert.equal(edited({ gate: null })().gate, undefined);
  assert.throws(edited({ gate: { minLogprob: 5, tokens: 16 } }), /field "gate" must be \{"minLogprob": a log-probability ≤ 0/);
  assert.throws(edited({ threshold: 5 }), /router\.json: field "threshold" must be a probability in \[0, 1\] \(or null: never\), got 5/);
  assert.throws(edited({ hiddenSize: undefined }), /router\.json: field "hiddenSize" must be a positive integer \(the model's hidden size\), got undefined/);
  assert.equal(edited({ threshold: null })().threshold, Infinity, 'a saved "never" threshold (Infinity is null in JSON) loads back');
  assert.throws(edited({ rule: { name: 'cheapest' } }), /router\.json: field "rule\.name" must be "savings" or "accuracy", got "cheapest"/);
  assert.throws(edited({ rule: { name: 'savings', maxLoss: '0.1' } }), /router\.json: field "rule\.maxLoss" must be a number ≥ 0, got "0\.1"/);
  assert.throws(edited({ metadata: 'oops' }), /router\.json: field "metadata" must be an object, got "oops"/);
  assert.throws(edited({ metadata: { nativeThinking: 'true' } }), /router\.json: field "metadata\.nativeThinking" must be true or false, got "true"/);
  assert.throws(edited({ probe: undefined }), /router\.json: field "probe" must be an object \{weights, bias, mean, std\}, got undefined/);
  assert.throws(edited({ probe: { ...router.probe.toJSON(), mean: [1, 2] } }), /router\.json: fields "probe\.weights" \(6\), "probe\.mean" \(2\) and "probe\.std" \(6\) differ in size/);

  // Candidates 0, .2, .45, .7, .85, .95; routing accuracy 2/5, 3/5, 4/5, 3/5, 4/5, 3/5 → 0.45 (lowest of the best).
  const s = [0.1, 0.3, 0.6, 0.8, 0.9], labels = [0, 0, 1, 0, 1];
  const near = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} ≠ ${b}`);
  thresholdCandidates(s).forEach((t, i) => near(t, [0, 0.2, 0.45, 0.7, 0.85, 0.95][i]));
  near(accuracyThreshold(s, labels), 0.45);
  // A saturated top score (sigmoid = 1) still leaves a threshold above every score.
  assert.deepEqual(thresholdCandidates([0.2, 1, 1]), [0, 0.6, Infinity]);
  // A probe file whose weights do not match its hidden size is refused when loaded, not on the first request.
  const bad = path.join(tmp, 'short.json'), good = JSON.parse(fs.readFileSync(file, 'utf8'));
  fs.writeFileSync(bad, JSON.stringify({ ...good, gate: undefined, probe: { ...good.probe, weights: good.probe.weights.slice(1) } }));
  assert.throws(() => Router.load(bad), /short\.json: field "probe\.weights" has \d+ values, "hiddenSize" says \d+/);
});

test('router gate and the joint choice of threshold and gate (exact, hand-computed)', () => {
  const g = { minLogprob: -0.5, tokens: 16 };
  assert.equal(gateTrip(undefined, [-9]), -1);
  assert.equal(gateTrip(g, [-0.1, -0.6, -0.7]), 1);
  assert.equal(gateTrip({ minLogprob: -0.5, tokens: 1 }, [-0.1, -0.6]), -1, 'only the first `tokens` tokens count');
  // Scores .1 .3 .6 .8 .9; the base is right on 0 and 3, reasoning on all but 3. Item 1's and 2's direct answers
  // hold a token below -0.5 (they escalate under the gate), item 4's first token already does, item 3's none.
  const rows: RoutingRow[] = [
    { score: 0.1, baseCorrect: true, baseLogprobs: [-0.01, -0.02], baseTokens: 2, reasonCorrect: true, reasonTokens: 10 },
    { score: 0.3, baseCorrect: false, baseLogprobs: [-0.01, -0.9], baseTokens: 2, reasonCorrect: true, reasonTokens: 12 },
    { score: 0.6, baseCorrect: false, baseLogprobs: [-0.3, -1.2], baseTokens: 2, reasonCorrect: true, reasonTokens: 20 },
    { score: 0.8, baseCorrect: true, baseLogprobs: [-0.2, -0.1], baseTokens: 2, reasonCorrect: false, reasonTokens: 30 },
    { score: 0.9, baseCorrect: false, baseLogprobs: [-2, -3], baseTokens: 2, reasonCorrect: true, reasonTokens: 40 },
  ];
  const near = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} ≠ ${b}`);
  // Without a gate (candidates 0 .2 .45 .7 .85 .95): accuracy .8 .8 .6 .4 .6 .4; tokens at 0 and .2: 22.4, 20.8.
  [0.8, 0.8, 0.6, 0.4, 0.6, 0.4].forEach((a, i) => near(routingStats(rows, [0, 0.2, 0.45, 0.7, 0.85, 0.95][i]).accuracy, a));
  const plain = chooseRouting(rows, { name: 'savings', maxLoss: 0 });
  near(plain.threshold, 0.2); near(plain.stats.meanTokens, 20.8); assert.equal(plain.gate, undefined);
  near(chooseRouting(rows, { name: 'savings', maxLoss: 0.45 }).threshold, 0.95); // never reasoning: 2 tokens each, 40 points lost
  // With the gate at t = .85: 0 direct (2 tokens), 1 and 2 escalate after 2 tokens (14, 22), 3 direct (2), 4 reasons
  // (40): all correct with 16 tokens on average; at .95 item 4 escalates at its first token (41): 16.2.
  const gated = chooseRouting(rows, { name: 'savings', maxLoss: 0 }, [undefined, g]);
  near(gated.threshold, 0.85); assert.deepEqual(gated.gate, g);
  near(gated.stats.accuracy, 1); near(gated.stats.meanTokens, 16); near(gated.stats.reasoningShare, 0.6); near(gated.stats.escalatedShare, 0.4);
  near(routingStats(rows, 0.95, g).meanTokens, 16.2);
  // Routing accuracy (reason ⇔ the base is wrong: items 1, 2, 4): best without a gate 4/5 at .2; with it 5/5 at .85.
  near(chooseRouting(rows, { name: 'accuracy' }).stats.routingAccuracy, 0.8);
  const acc = chooseRouting(rows, { name: 'accuracy' }, [undefined, g]);
  near(acc.threshold, 0.85); near(acc.stats.routingAccuracy, 1);
});

test('verifier: class-balanced fit on imbalanced separable data; save/load', () => {
  const X: number[][] = [], y: number[] = [];
  for (let i = 0; i < 60; i++) { const good = i % 6 !== 0; X.push([good ? 1 + (i % 5) * 0.1 : -1 - (i % 3) * 0.1, i % 7]); y.push(good ? 1 : 0); }
  const probe = fitProbe(X, y, { balance: true, steps: 300 });
  assert.equal(accuracyAt(X.map((x) => probe.score(x)), y, 0.5), 1);
  const v = new Verifier(probe, 0.6), file = path.join(tmp, 'verifier.json');
  v.save(file);
  const back = Verifier.load(file, 2);
  assert.equal(back.threshold, 0.6);
  X.forEach((x) => assert.equal(back.score(x), v.score(x)));
});

test('withinItemAuc: right vs wrong candidates of the same question only', () => {
  // Question 0: the right one (0.9) beats one wrong (0.5) and loses to the other (0.95); question 1 ties; question 2 has no wrong one.
  assert.equal(withinItemAuc([0, 0, 0, 1, 1, 2], [0.9, 0.5, 0.95, 0.3, 0.3, 0.1], [1, 0, 0, 1, 0, 1]), (1 + 0 + 0.5) / 3);
  assert.ok(Number.isNaN(withinItemAuc([0, 1], [0.2, 0.1], [1, 0])), 'no pair within a question');
});

test('budget control: "\\nThinking budget: N tokens." after the invocation; the base prompt (router, direct route) is untouched', async () => {
  assert.equal(budgetSystemLine(128), 'Thinking budget: 128 tokens.');
  const codes = (t: string) => [...t].map((c) => c.charCodeAt(0));
  const chars = { encode: codes, decode: (ids: readonly number[]) => String.fromCharCode(...ids) };
  assert.deepEqual(budgetControl(chars, 96, codes('<think>')), codes('\nThinking budget: 96 tokens.'));
  assert.deepEqual(budgetControl(chars, 96, codes('<think>\n')), codes('Thinking budget: 96 tokens.'), 'no second newline after an invocation that ends in one');
  assert.throws(() => budgetControl(chars, 0, codes('<think>')), /positive integer/);
  // Scripted model: every token fed is recorded; with a budget the control follows the invocation, the prompt stays.
  const { m, b } = scripted(thinker(() => true));
  const seen: number[][] = [];
  const orig = b.step.bind(b);
  b.step = async (h, req) => { seen.push(...req.tokens); return orig(h, req); };
  (m as unknown as { tokenizer: TextTokenizer }).tokenizer = { ...scriptedTokenizer, encode: (t: string) => (t.startsWith('\nThinking') ? [NL, HMM] : scriptedTokenizer.encode(t)) };
  const r = await answer(m, 'q', { reasoning: 'on', budget: 96 });
  assert.deepEqual(seen[0], [Q, Q, Q, OPEN, NL, HMM], 'one prefill: prompt, invocation, control');
  assert.equal(r.usage.promptTokens, 6);
  assert.equal(r.samples[0].thinkingTokens, 0, 'the control line is prompt, not thinking');
});

test('invocationIds: "<think>" before a newline where the newline joins its last piece (Qwen2.5\'s ">\\n"), alone where the vocabulary has the token (Qwen3) or writes the newline apart (SentencePiece\'s "<0x0A>")', () => {
  const json = JSON.parse(fs.readFileSync(path.join(QWEN_TOKENIZER_DIR, 'tokenizer.json'), 'utf8'));
  json.added_tokens = json.added_tokens.filter((t: { content: string }) => !/^<\/?think>$/.test(t.content));
  const qwen25 = loadTokenizer({ tokenizerJson: json, tokenizerConfig: {} });
  const stories = openSource(sharedPath('models/stories260K/stories260K.bin')).tokenizer; // llama2.c's SentencePiece tok512
  for (const [name, tok, joined] of [['Qwen2.5', qwen25, true], ['Qwen3', loadTokenizer(QWEN_TOKENIZER_DIR), false], ['stories260K', stories, false]] as const) {
    const enc = (t: string) => tok.encode(t, { addSpecialTokens: false });
    assert.deepEqual(invocationIds(enc, '<think>'), joined ? enc('<think>\n') : enc('<think>'), name);
  }
});

test('budget control: the invocation and the line are the ids an SFT trace holds up to its thinking (the embedded default\'s, Qwen3\'s and Qwen2.5\'s vocabularies)', () => {
  const json = JSON.parse(fs.readFileSync(path.join(QWEN_TOKENIZER_DIR, 'tokenizer.json'), 'utf8'));
  json.added_tokens = json.added_tokens.filter((t: { content: string }) => !/^<\/?think>$/.test(t.content)); // Qwen2.5 has no <think> token
  const qwen25 = loadTokenizer({ tokenizerJson: json, tokenizerConfig: JSON.parse(fs.readFileSync(path.join(QWEN_TOKENIZER_DIR, 'tokenizer_config.json'), 'utf8')) });
  const thinking = '4 * 4 = 16';
  for (const [name, tok] of [['default', loadTokenizer(DEFAULT_DIR)], ['Qwen3', loadTokenizer(QWEN_TOKENIZER_DIR)], ['Qwen2.5', qwen25]] as const) {
    const reply = `<think>\n${budgetSystemLine(96)}\n${thinking}\n</think>\n\n#### 16`; // as reasoningConversations writes it
    const trace = tok.encode(tok.applyChatTemplate([{ role: 'user', content: 'q' }, { role: 'assistant', content: reply }]), { addSpecialTokens: false });
    const inv = invocationIds((t) => tok.encode(t, { addSpecialTokens: false }), '<think>'), fed = [...inv, ...budgetControl(tok, 96, inv)];
    const at = lastIndexOfRun(trace, fed);
    assert.ok(at >= 0, `${name}: the trace holds the fed ${JSON.stringify(tok.decode(fed, { skipSpecialTokens: false }))}`);
    // What follows is the thinking, or a newline of its own and then the thinking: the model writes either.
    const next = trace.slice(at + fed.length), nl = tok.decode(next.slice(0, 1)) === '\n' ? 1 : 0;
    assert.ok(tok.decode(next.slice(nl)).startsWith(thinking), `${name}: then ${JSON.stringify(tok.decode(next))}`);
  }
});

test('Sequence: at the cap\'s edge one more token is sampled; a forced close is queued for the next feed and left out of the mean log-probability', () => {
  const th = { end: [CLOSE], maxTokens: 2, force: [NL, CLOSE, NL, NL] };
  // One token of room left, the forced "\n" the only text before the tag: the model samples once more. Its own
  // close, or its own "\n", is kept (a segment that closes by itself within the cap is not capped) ...
  const closes = new Sequence(scriptedTokenizer, { thinking: th, maxTokens: 50 }, 3);
  closes.accept(HMM, 0);
  closes.accept(CLOSE, 0);
  assert.deepEqual([closes.takeFeed(), closes.thinkingTokens, closes.forcedTokens], [[HMM, CLOSE], 1, 0]);
  const newline = new Sequence(scriptedTokenizer, { thinking: th, maxTokens: 50 }, 3);
  newline.accept(HMM, 0);
  newline.accept(NL, 0);
  assert.deepEqual([newline.takeFeed(), newline.thinkingTokens, newline.forcedTokens], [[HMM, NL], 2, 0]);
  newline.accept(CLOSE, 0); // no room left, but the close is not thinking: kept
  assert.deepEqual([newline.takeFeed(), newline.thinkingTokens, newline.forcedTokens], [[CLOSE], 2, 0]);
  // ... any other token is dropped, never fed, and the close forced in its place (after the model's own "\n", the tag).
  const after = new Sequence(scriptedTokenizer, { thinking: th, maxTokens: 50 }, 3);
  after.accept(HMM, 0);
  after.accept(NL, 0);
  after.accept(EOS, 0);
  assert.deepEqual([after.takeFeed(), after.thinkingTokens, after.forcedTokens, after.done], [[HMM, NL, CLOSE, NL, NL], 2, 3, false], 'a stop token at the edge too');
  const s = new Sequence(scriptedTokenizer, { thinking: th, maxTokens: 50 }, 3);
  assert.deepEqual(s.takeFeed(), []);
  assert.equal(s.accept(HMM, -1), false);
  assert.deepEqual(s.takeFeed(), [HMM]);
  assert.equal(s.accept(A5, -7), false);
  assert.deepEqual(s.takeFeed(), [NL, CLOSE, NL, NL]);
  assert.deepEqual(s.tokens, [HMM, NL, CLOSE, NL, NL]);
  assert.equal(s.thinkingTokens, 2);
  assert.equal(s.answerFrom, 3);
  assert.equal(s.accept(A5, -3), false);
  assert.equal(s.meanLogprob, -2);
  assert.equal(s.accept(EOS, 0), true);
  assert.equal(s.text, 'hmm \n</think>\n\n#### 5');
  // Where an answer must follow (a JSON one: closeOnStop), a turn that ends inside the thinking is closed by force and
  // goes on to the answer (it came back empty, finish "stop"), not counted as capped; otherwise it ends there.
  const json = { thinking: { end: [CLOSE], maxTokens: 20, force: [NL, CLOSE, NL, NL], closeOnStop: true }, maxTokens: 50 };
  const ended = new Sequence(scriptedTokenizer, json, 3);
  assert.deepEqual([ended.accept(HMM, 0), ended.accept(EOS, 0), ended.takeFeed(), ended.answerFrom, ended.forcedTokens, ended.capped], [false, false, [HMM, NL, CLOSE, NL, NL], 3, 4, false]);
  assert.deepEqual([ended.accept(A5, 0), ended.accept(EOS, 0), ended.text, ended.finishReason], [false, true, 'hmm \n</think>\n\n#### 5', 'stop']);
  const free = new Sequence(scriptedTokenizer, { ...json, thinking: { ...json.thinking, closeOnStop: false }, allowedNext: () => undefined }, 3);
  assert.deepEqual([free.accept(HMM, 0), free.accept(EOS, 0), free.text], [false, true, 'hmm '], 'a constraint alone (a tool call the reply may open) does not');
  assert.throws(() => new Sequence(scriptedTokenizer, { thinking: { end: [CLOSE], closeOnStop: true } }, 3), /^Error: generate: thinking\.closeOnStop needs thinking\.force, the closing tokens fed in place of the stop token, got true$/);
  // The length limit during forcing ends the sequence.
  const t = new Sequence(scriptedTokenizer, { thinking: { end: [CLOSE], maxTokens: 1, force: [NL, CLOSE, NL, NL] }, maxTokens: 3 }, 3);
  assert.equal(t.accept(HMM, 0), true);
  assert.equal(t.finishReason, 'length');
  assert.throws(() => new Sequence(scriptedTokenizer, { thinking: { end: [CLOSE], maxTokens: 1, force: [NL] } }, 3), /does not contain the closing tokens/);
  // Stop strings are searched incrementally: one that spans two tokens is found, and after a thinking segment the
  // answer's leading blank lines (over several tokens) are skipped, once, before a "\n" stop applies.
  const span = new Sequence(scriptedTokenizer, { stop: ['x', 'm #'], maxTokens: 50 }, 3);
  assert.deepEqual([span.accept(HMM, 0), span.accept(HMM, 0), span.accept(A5, 0), span.text, span.finishReason], [false, false, true, 'hmm hm', 'stop']);
  const nl = new Sequence(scriptedTokenizer, { stop: '\n', thinking: { end: [CLOSE] }, maxTokens: 50 }, 3);
  assert.deepEqual([HMM, NL, CLOSE, NL, NL, HMM, HMM].map((t) => nl.accept(t, 0)), [false, false, false, false, false, false, false]);
  assert.deepEqual([nl.accept(NL, 0), nl.text], [true, 'hmm \n</think>\n\nhmm hmm ']);
  // A stop string at the answer's very first character (after the blank lines) is found there.
  for (const stop of ['#', '#### 5']) {
    const first = new Sequence(scriptedTokenizer, { stop, thinking: { end: [CLOSE] }, maxTokens: 50 }, 3);
    assert.deepEqual([HMM, CLOSE, NL, NL].map((t) => first.accept(t, 0)), [false, false, false, false]);
    assert.deepEqual([first.accept(A5, 0), first.text, first.finishReason], [true, 'hmm </think>\n\n', 'stop'], stop);
  }
});

test('trainRouter and trainVerifier run end to end on a model (labels from the graders)', async () => {
  const m = await model();
  const items = Array.from({ length: 6 }, (_, i) => ({ question: `What is ${i} plus ${i + 1}?`, gold: 2 * i + 1, task: 'synthetic' as const }));
  const stages: string[] = [];
  const { router, report } = await trainRouter(m, items, { valFraction: 0.5, maxTokens: 4, reasoningMaxTokens: 6, maxThinkingTokens: 2, steps: 20, onProgress: (s, d, t) => stages.push(`${s} ${d}/${t}`) });
  assert.equal(report.train.n, 3); assert.equal(report.val.n, 3);
  // The fit reports its steps (and lets a Ctrl-C through); a random model's answers all reach their limits, and are counted.
  assert.deepEqual([stages.at(-1), stages.includes('fitting the probe 20/20')], ['reasoning answers (val) 3/3', true]);
  assert.deepEqual(report.cut, { direct: 6, reasoning: 3 });
  assert.equal(report.train.positives, 3, 'a random model answers nothing right: everything needs reasoning');
  assert.deepEqual(report.rule, { name: 'savings', maxLoss: 0 });
  assert.equal(router.probe.dim, Hd);
  // It records the model's shape and its adapter's weights: another adapter gets a note naming both.
  assert.deepEqual([router.metadata.modelShape, router.metadata.adapterHash], [modelShape(m.config), adapterHash(m.adapter!)]);
  assert.equal(pairingNote('router', 'r.json', router.metadata, [m.adapter!]), undefined);
  // and the model it was trained on (its path, unless the metadata says): another model of the same shape gets a note, by name.
  assert.deepEqual([router.metadata.model, modelNote('router', 'r.json', router.metadata, m.names)], [m.names[0], undefined]);
  assert.deepEqual([router.metadata.hiddenSize, router.metadata.steps, router.metadata.l2], [Hd, 20, 1e-3]); // the fit's settings beside it
  assert.equal(modelNote('verifier', 'v.json', { model: 'Qwen/Qwen2.5-0.5B' }, ['/m/Qwen2.5-0.5B-Instruct']),
    'note: v.json was trained on Qwen/Qwen2.5-0.5B, and this model is /m/Qwen2.5-0.5B-Instruct: it scores that model\'s hidden states; train-verifier on this model makes a matching one (if this is that model under another name, all is well)');
  for (const [trained, names] of [['hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M', ['/m/qwen2.5-0.5b-instruct-q4_k_m.gguf']], ['models/default', ['/work/x/models/default']], ['/m/ggml-model-q4_0.gguf', ['/n/Other']]] as const) {
    assert.equal(modelNote('router', 'r.json', { model: trained }, names), undefined, trained);
  }
  const otherAdapter = { ...m.adapter!, dir: 'other', tensors: new Map([...m.adapter!.tensors].map(([k, t]) => [k, { ...t, b: t.b.map((x) => x + 1) }])) };
  assert.equal(pairingNote('router', 'r.json', router.metadata, [otherAdapter]),
    `note: r.json was trained with another reasoning adapter (${JSON.stringify(m.adapter!.dir)}) than other: its threshold was chosen for that adapter; train-router with this adapter makes a matching one`);
  const res = await answer(m, items[0].question, { reasoning: 'auto', maxTokens: 4 }, { router });
  assert.equal(res.route, res.routerScore! >= router.threshold || res.escalation ? 'reasoning' : 'direct');
  // This model never ends a sample by itself: its samples, cut by maxTokens, are not what answer() scores, so there
  // is nothing to train a verifier on (the embedded model's run below has them); nor do they get a score or a vote.
  for (const same of [{ temperature: 0 }, { topP: 0 }]) {
    await assert.rejects(trainVerifier(m, items, { samples: 2, ...same }), { message: `verifier: ${Object.keys(same)[0]} 0 draws the most likely token every time, so the 2 candidates of a question would all be the same; the verifier learns from candidates that differ: sample with a temperature and topP above 0` });
  }
  await assert.rejects(trainVerifier(m, items.slice(0, 4), { valFraction: 0.5, samples: 2, maxTokens: 6, maxThinkingTokens: 2, steps: 20 }),
    /verifier: no sample of the 2 training items ended by itself after its thinking \(every one was cut at maxTokens 6, or never closed its thinking\)/);
  const dm = await loadModel(DEFAULT_DIR, { quant: 'fp32', adapter: ADAPTER_DIR, worker: false, threads: 1 });
  try {
    const chat = makeSplits({ train: 4, val: 0, test: 0, seed: 2, mix: { chat: 1 } }).train.map((it) => ({ question: it.question, gold: it.answer, task: 'synthetic' as const }));
    const { verifier, report: vr } = await trainVerifier(dm, chat, { valFraction: 0.5, samples: 2, maxTokens: 128, steps: 20 });
    assert.ok(vr.train.candidates > 0 && vr.val.candidates > 0 && vr.train.candidates + vr.train.cut <= 4 && vr.val.candidates + vr.val.cut <= 4, JSON.stringify(vr));
    assert.equal(verifier.probe.dim, dm.config.hiddenSize);
    assert.deepEqual([verifier.metadata.model, verifier.metadata.hiddenSize, verifier.metadata.samples, verifier.metadata.steps], [dm.names[0], dm.config.hiddenSize, 2, 20]);
  } finally { await dm.close(); }
  const scored = await answer(m, items[0].question, { reasoning: 'on', samples: 2, temperature: 1, maxTokens: 6, maxThinkingTokens: 2, vote: 'verifier-vote', collectHidden: true },
    { verifier: new Verifier(fitProbe([Array(Hd).fill(0), Array(Hd).fill(1)], [0, 1], { steps: 1 }), 0.5, {}) });
  scored.samples.forEach((s) => assert.deepEqual([s.finishReason, s.verifierScore], ['length', undefined]));
  await m.close();
  shared = undefined;
  // A model that thinks by itself (no adapter): the savings rule measures its own thinking; a router for it routes.
  const bare = await loadModel(rm.dir, { quant: 'fp32', worker: false, threads: 1 });
  try {
    await assert.rejects(trainRouter(bare, items, { valFraction: 0.5, rule: 'savings', steps: 1 }), /router: the savings rule needs the reasoning adapter, or nativeThinking/);
    const nat = await trainRouter(bare, items, { valFraction: 0.5, maxTokens: 4, reasoningMaxTokens: 6, maxThinkingTokens: 2, steps: 20, nativeThinking: true });
    assert.deepEqual([nat.report.rule, nat.router.metadata.nativeThinking, nat.report.val.reasoningAccuracy], [{ name: 'savings', maxLoss: 0 }, true, 0]);
    const res = await answer(bare, items[0].question, { reasoning: 'auto', maxTokens: 4, nativeThinking: true }, { router: nat.router });
    assert.equal(res.route, res.routerScore! >= nat.router.threshold || res.escalation ? 'reasoning' : 'direct');
    await assert.rejects(trainVerifier(bare, items, { steps: 1 }), /verifier: the model must be loaded with its reasoning adapter \(the adapter option of loadModel\), or nativeThinking set/);
    await assert.rejects(trainVerifier(bare, items.slice(0, 4), { valFraction: 0.5, samples: 2, maxTokens: 6, maxThinkingTokens: 2, steps: 20, nativeThinking: true }),
      /verifier: no sample of the 2 training items ended by itself after its thinking/, 'its own thinking, sampled and cut as the adapter\'s');
  } finally {
    await bare.close();
  }
});

test('probe training (router and verifier alike) validates on the val given, else on the last valFraction of the items (default 0.2)', () => {
  const items = [1, 2, 3, 4, 5].map((i) => ({ question: `q${i}`, gold: i, task: 'synthetic' as const }));
  assert.deepEqual(checkProbeTraining(items, { valFraction: 0.4 }, {}, 'router'), { train: items.slice(0, 3), val: items.slice(3) });
  assert.deepEqual(checkProbeTraining(items, {}, {}, 'router'), { train: items.slice(0, 4), val: items.slice(4) });
  assert.deepEqual(checkProbeTraining(items, { val: [items[0]] }, {}, 'verifier'), { train: items, val: [items[0]] });
});

test('nativeThinking on a model that cannot think by itself (no "<think>" token) is refused at the start of eval, serve, the router\'s and the verifier\'s training, each in its own words', async () => {
  const bin = path.join(sharedPath('models/stories260K'), 'stories260K.bin'), m = await loadModel(bin, { quant: 'fp32', worker: false, threads: 1 });
  const refusal = (where: string) => new RegExp(`^Error: ${where}: nativeThinking \\(--native-thinking\\) needs a model that thinks by itself, whose tokenizer has "<think>" and "</think>" tokens \\(such as Qwen3\\); this one encodes them as \\d+ and \\d+ tokens: give it a reasoning adapter instead \\(train-sft makes one\\)$`);
  try {
    const items = Array.from({ length: 4 }, (_, i) => ({ question: `What is ${i} plus 1?`, gold: i + 1, task: 'synthetic' as const }));
    await assert.rejects(runEval(m, syntheticCases('test', 2), { reasoning: true, nativeThinking: true }), refusal('eval'));
    await assert.rejects(trainRouter(m, items, { valFraction: 0.5, steps: 1, nativeThinking: true }), refusal('router'));
    await assert.rejects(trainVerifier(m, items, { valFraction: 0.5, steps: 1, nativeThinking: true }), refusal('verifier'));
  } finally {
    await m.close();
  }
  await assert.rejects(loadServed({ model: bin, nativeThinking: true, quant: 'fp32', maxBatch: 1 }), refusal('serve'));
});

test('a probe\'s threshold or score is printed with the decimals that keep it off 0 and 1 (0.99999983 is not "1.0000": that would read as never reasoning)', () => {
  assert.deepEqual([0.41134, 0.99999983, 0.9999, 0.99995, 2e-7, 0, 1, 0.5].map((x) => fraction(x, 4)), ['0.4113', '0.9999998', '0.9999', '0.99995', '0.0000002', '0.0000', '1.0000', '0.5000']);
  assert.equal(fraction(0.9996, 3), '0.9996');
  assert.equal(fraction(1 - 1e-17, 4), '1.0000'); // 1 in floating point
});

test('a router or verifier trained on the model under another RoPE scaling is noted where it is loaded beside it', () => {
  const c = rm.config;
  const yarn = withRopeScaling(c, { type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 512 }, 'm');
  assert.equal(ropeNote('router', 'r.json', { ropeScaling: 'none' }, yarn), 'note: r.json was trained on the model with RoPE scaling none, and it runs with yarn ×4 over 512 positions here: the hidden states it routes by move with the RoPE; train-router with the same scaling makes a matching one');
  assert.equal(ropeNote('verifier', 'v.json', { ropeScaling: 'yarn ×4 over 512 positions' }, c), 'note: v.json was trained on the model with RoPE scaling yarn ×4 over 512 positions, and it runs with none here: the hidden states it scores move with the RoPE; train-verifier with the same scaling makes a matching one');
  assert.deepEqual([ropeNote('router', 'r.json', { ropeScaling: 'none' }, c), ropeNote('router', 'r.json', {}, yarn)], [undefined, undefined]);
});
