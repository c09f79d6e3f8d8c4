import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildInferenceGraph } from '../src/models/inference-graph.ts';
import { MemoryWeights } from '../src/io/weights.ts';
import { Engine, paddedFew } from '../src/runtime/engine.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import type { AdapterTensors, StepOutput } from '../src/runtime/engine.ts';
import { BatchedLocalBackend, CoalescingBackend, PREFILL_CHUNK, prefillChunks, withBackend, type BatchingBackend } from '../src/runtime/scheduler.ts';
import { generateBatch, type Completion } from '../src/runtime/generate.ts';
import { type StepRequest, type StepResult } from '../src/runtime/backend.ts';
import { loadModel } from '../src/runtime/model.ts';
import { loadAdapter } from '../src/io/peft.ts';
import { answer } from '../src/reason/answer.ts';
import { makeRandomQwen2, rng } from './helpers/random-model.ts';
import { maxDiff } from './helpers/numeric.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-scheduler-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const model = makeRandomQwen2({ dir: path.join(tmp, 'qwen2'), seed: 5, gguf: false });
const V = model.config.vocabSize;
const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;

function randomAdapter(): AdapterTensors {
  const r = rng(9), t: AdapterTensors = new Map(), c = model.config, rank = 4;
  for (let l = 0; l < c.numLayers; l++) {
    for (const p of ALL) {
      const mlp = p.startsWith('gate') || p.startsWith('up') || p.startsWith('down');
      const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
      const [out, inp] = p === 'q_proj' ? [q, c.hiddenSize] : p === 'k_proj' || p === 'v_proj' ? [kv, c.hiddenSize] : p === 'o_proj' ? [c.hiddenSize, q]
        : p === 'down_proj' ? [c.hiddenSize, c.intermediateSize] : [c.intermediateSize, c.hiddenSize];
      const a = Float32Array.from({ length: rank * inp }, () => 0.3 * r.normal()), b = Float32Array.from({ length: out * rank }, () => 0.3 * r.normal());
      t.set(`model.layers.${l}.${mlp ? 'mlp' : 'self_attn'}.${p}`, { a, b, rank, in: inp, out });
    }
  }
  return t;
}

async function engine(): Promise<Engine> {
  const g = buildInferenceGraph(model.config, new MemoryWeights(model.weights), { quant: 'fp32', loraTargets: [...ALL] });
  const e = await Engine.create(model.config, g.toModelProto(), { threads: 1 });
  e.setAdapter(randomAdapter());
  return e;
}

/** A stepMany entry's output (its error thrown). */
const ok = (r: StepOutput | Error): StepOutput => { if (r instanceof Error) throw r; return r; };

const ids = (n: number, k: number) => Array.from({ length: n }, (_, i) => (i * 31 + k * 17 + 3) % V);

test('Engine.stepMany: one batched run equals stepping each cache alone (rows joining, leaving, changing, masks per row); a row sampled but fed nothing is refused before the step', async () => {
  const e = await engine();
  // Two copies of every cache: `a` stepped alone, `b` stepped through stepMany.
  const prompts = [ids(5, 1), ids(9, 2), ids(3, 3), ids(12, 4)];
  const masks = (n: number, k: number) => Array.from({ length: n }, (_, i) => ((i + k) % 3 === 0 ? 1 : 0));
  const a: KVCache[] = [], b: KVCache[] = [];
  for (const [k, p] of prompts.entries()) {
    const rows = k === 1 ? 2 : 1; // cache 1 holds two rows (a forked prefix)
    for (const set of [a, b]) {
      const c = e.newCache(rows);
      await e.step(c, { tokens: Array.from({ length: rows }, (_, r) => p.slice(0, p.length - r)), adapterMask: Array.from({ length: rows }, (_, r) => masks(p.length - r, k)) });
      set.push(c);
    }
  }
  let active = [0, 1, 2];
  for (let t = 0; t < 14; t++) {
    if (t === 4) active = [0, 1, 2, 3]; // a cache joins the batch
    if (t === 7) active = [3, 0, 2]; // one leaves, order changes
    if (t === 9) { a[0].keep([0, 0]); b[0].keep([0, 0]); } // a cache changes shape (fork) between steps
    if (t === 11) { a[2].truncate(0, 4); b[2].truncate(0, 4); } // ... or is rewound
    const inputs = active.map((k) => ({
      tokens: a[k].lengths.map((_, r) => [(t * 7 + k * 13 + r * 5) % V]),
      adapterMask: a[k].lengths.map((_, r) => [(t + k + r) % 2]),
    }));
    const many = (await e.stepMany(active.map((k, i) => ({ cache: b[k], input: inputs[i] })))).map(ok);
    for (const [i, k] of active.entries()) {
      const alone = await e.step(a[k], inputs[i]);
      assert.ok(maxDiff(many[i].logits, alone.logits) <= 1e-4, `step ${t}, cache ${k}: logits differ by ${maxDiff(many[i].logits, alone.logits)}`);
      assert.ok(maxDiff(many[i].hidden, alone.hidden) <= 1e-4, `step ${t}, cache ${k}: hidden states differ`);
      assert.deepEqual(b[k].lengths, a[k].lengths);
    }
  }
  // A prefill entry mixed with decode entries runs alone; results are still per entry.
  const fresh = e.newCache(1), freshRef = e.newCache(1);
  const mixed = (await e.stepMany([
    { cache: fresh, input: { tokens: [ids(6, 9)] } },
    { cache: b[3], input: { tokens: [[5]] } },
    { cache: b[1], input: { tokens: [[6], [7]] } },
  ])).map(ok);
  const ref = [await e.step(freshRef, { tokens: [ids(6, 9)] }), await e.step(a[3], { tokens: [[5]] }), await e.step(a[1], { tokens: [[6], [7]] })];
  mixed.forEach((m, i) => assert.ok(maxDiff(m.logits, ref[i].logits) <= 1e-4, `mixed entry ${i}`));
  assert.throws(() => e.validate(fresh, { tokens: [[V]] }), /outside the vocabulary/);
  await assert.rejects(e.stepMany([{ cache: b[0], input: { tokens: [[1], [1]] } }, { cache: b[0], input: { tokens: [[1], [1]] } }]), /same cache twice/);
  // Once a long row has left, the batch cache is rebuilt small (every step attends over its whole capacity).
  const mirror = () => (e as unknown as { mirrors: Map<string, { cache: KVCache }> }).mirrors.get('')!;
  const long = e.newCache(1);
  await e.step(long, { tokens: [ids(700, 5)] });
  const decode = (cs: KVCache[], t: number) => cs.map((c) => ({ cache: c, input: { tokens: c.lengths.map((_, r) => [(t + r) % V]) } }));
  ok((await e.stepMany(decode([b[3], long], 1)))[0]);
  await e.step(a[3], decode([a[3]], 1)[0].input);
  assert.ok(mirror().cache.capacity >= 701);
  e.forget(long);
  // ... after 16 runs in a row that need under a quarter of it (a long row missing a run or two does not thrash it).
  for (let t = 2; t < 2 + 16; t++) {
    assert.ok(mirror().cache.capacity >= 701, `run ${t - 2}: not rebuilt yet`);
    const after = (await e.stepMany(decode([b[3], b[2]], t))).map(ok);
    const alone = [await e.step(a[3], decode([a[3]], t)[0].input), await e.step(a[2], decode([a[2]], t)[0].input)];
    after.forEach((m, i) => assert.ok(maxDiff(m.logits, alone[i].logits) <= 1e-4, `run ${t}, entry ${i}`));
  }
  assert.ok(mirror().cache.capacity < 256 && mirror().cache.rows === 2, `capacity ${mirror().cache.capacity}, rows ${mirror().cache.rows}`);
  const after = (await e.stepMany(decode([b[3], b[2]], 99))).map(ok);
  const alone = [await e.step(a[3], decode([a[3]], 99)[0].input), await e.step(a[2], decode([a[2]], 99)[0].input)];
  after.forEach((m, i) => assert.ok(maxDiff(m.logits, alone[i].logits) <= 1e-4, `after the rebuild, entry ${i}`));
  // A cache with no rows left, or a row sampled without being fed, is refused by name.
  const empty = e.newCache(1);
  empty.keep([]);
  await assert.rejects(e.step(empty, { tokens: [] }), /engine: the cache has no rows to step/);
  for (const c of b) e.forget(c);
  await e.close();
  // ... before the step runs, through either backend: the other rows are not moved on by a step that was refused.
  for (const worker of [false, true]) {
    const m = await loadModel(model.dir, { quant: 'fp32', worker, promptCache: 0 }), h = await m.backend.newCache(2);
    await m.backend.step(h, { tokens: [[3, 4, 5], [6, 7]] });
    await assert.rejects(m.backend.step(h, { tokens: [[8], []], sample: [{ u: 0.5 }, { u: 0.5 }] }), { message: 'engine: row 1 is sampled but was fed no token (nothing new to sample from)' });
    assert.deepEqual(await m.backend.lengths(h), [3, 2], `worker: ${worker}`);
    await m.close();
  }
});

test('Engine.stepMany: a row far longer than the others steps alone, with the same results (batched, every row was padded to its length: 3× the time and memory in a QA run)', async () => {
  // Shortest first, the most caches whose batch cache (a power of two of rows, each as long as the longest) stays within
  // twice their own positions plus 1024 a row: short rows always batch.
  assert.deepEqual(paddedFew([[10], [20], [7000], [30]]), [0, 1, 3]);
  assert.deepEqual(paddedFew([[7000], ...Array.from({ length: 7 }, () => [400])]), [1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(paddedFew([[3000], [100, 100, 100]]), [1]);
  assert.deepEqual(paddedFew([[2000], [1500]]), [0, 1]);
  assert.deepEqual(paddedFew([[5000], [5100]]), [0, 1]);
  const e = await engine(), a: KVCache[] = [], b: KVCache[] = [];
  for (const [k, n] of [2000, 5, 9, 7, 4, 6, 8].entries()) { // (the model's context is 2048)
    for (const set of [a, b]) { const c = e.newCache(1); await e.step(c, { tokens: [ids(n, k)] }); set.push(c); }
  }
  const mirror = () => (e as unknown as { mirrors: Map<string, { cache: KVCache }> }).mirrors.get('');
  for (let t = 0; t < 3; t++) {
    const input = (k: number) => ({ tokens: [[(t * 7 + k) % V]] });
    const many = (await e.stepMany(b.map((cache, k) => ({ cache, input: input(k) })))).map(ok);
    for (const [k, c] of a.entries()) assert.ok(maxDiff(many[k].logits, (await e.step(c, input(k))).logits) <= 1e-4, `step ${t}, cache ${k}`);
    assert.ok(mirror()!.cache.capacity < 256, `the batch cache holds the short rows only (capacity ${mirror()!.cache.capacity})`);
  }
  await e.close();
});

test('Engine.stepMany: two calls in flight at once (two coalescers over one backend) each equal stepping alone', async () => {
  const e = await engine();
  try {
    const mk = async (k: number) => { const c = e.newCache(1); await e.step(c, { tokens: [ids(10 + 7 * k, k)] }); return c; };
    const alone: KVCache[] = [], many: KVCache[] = [];
    for (let k = 0; k < 8; k++) { alone.push(await mk(k)); many.push(await mk(k)); }
    for (let t = 0; t < 6; t++) {
      const input = (k: number) => ({ tokens: [[(t * 13 + k * 7) % V]], adapterMask: [[k % 2]] });
      const halves = await Promise.all([[0, 1, 2, 3], [4, 5, 6, 7]].map((ks) => e.stepMany(ks.map((k) => ({ cache: many[k], input: input(k) })))));
      for (const [k, r] of halves.flat().entries()) {
        const d = maxDiff(ok(r).logits, (await e.step(alone[k], input(k))).logits);
        assert.ok(d <= 1e-4, `step ${t}, cache ${k}: logits differ by ${d}`);
      }
    }
  } finally {
    await e.close();
  }
});

test('q4 with an adapter on: a row steps to the same logits bit for bit alone, in a larger cache and batched with others', async () => {
  const g = buildInferenceGraph(model.config, new MemoryWeights(model.weights), { quant: 'q4', loraTargets: [...ALL] });
  const e = await Engine.create(model.config, g.toModelProto(), { threads: 1 });
  e.setAdapter(randomAdapter());
  try {
    const prompt = ids(12, 1), on = (n: number) => new Array(n).fill(1);
    const one = e.newCache(1), other = e.newCache(1), batched = e.newCache(1);
    for (const c of [one, other, batched]) await e.step(c, { tokens: [prompt], adapterMask: [on(prompt.length)] });
    const two = e.select(one, [0, 0]);
    for (let t = 0; t < 4; t++) {
      const tok = (t * 37 + 5) % V, input = { tokens: [[tok]], adapterMask: [[1]] };
      const alone = (await e.step(one, input)).logits;
      const inTwo = (await e.step(two, { tokens: [[tok], [tok]], adapterMask: [[1], [1]] })).logits.subarray(0, V);
      const [many] = await e.stepMany([{ cache: batched, input }, { cache: other, input: { tokens: [[(tok + 1) % V]], adapterMask: [[1]] } }]);
      assert.equal(maxDiff(alone, inTwo), 0, `step ${t}: alone vs a two-row cache`);
      assert.equal(maxDiff(alone, ok(many).logits), 0, `step ${t}: alone vs batched`);
    }
  } finally {
    await e.close();
  }
});

test('stepMany: a step near the end of the context succeeds; an entry that fails in the session run fails alone', async () => {
  const config = { ...model.config, maxPositionEmbeddings: 64 };
  const g = buildInferenceGraph(config, new MemoryWeights(model.weights), { quant: 'fp32' }).toModelProto();
  const e = await Engine.create(config, g, { threads: 1 });
  try {
    // Two copies of each cache: `a` stepped alone, `b` through stepMany.
    const near: KVCache[] = [], d1: KVCache[] = [], d2: KVCache[] = [];
    for (const set of [near, d1, d2]) for (let k = 0; k < 2; k++) set.push(e.newCache(set === near ? 2 : 1));
    for (const k of [0, 1]) {
      await e.step(near[k], { tokens: [ids(62, 1), ids(10, 2)] });
      await e.step(d1[k], { tokens: [ids(5, 3)] });
      await e.step(d2[k], { tokens: [ids(7, 4)] });
    }
    // A cache built for another model passes validation but fails in the session run (in the batch, then alone).
    const bad = new KVCache({ ...near[0].shape, headDim: 2 * near[0].shape.headDim }, 1);
    bad.lengths = [3];
    const inputs = [{ tokens: [[5], [5, 6, 7, 8]] }, { tokens: [[1]] }, { tokens: [[1]] }, { tokens: [[2]] }];
    const out = await e.stepMany([near[1], d1[1], bad, d2[1]].map((cache, i) => ({ cache, input: inputs[i] })));
    assert.ok(out[2] instanceof Error && /past_key\.0/.test(out[2].message), `the bad entry's own error, got ${out[2]}`);
    assert.deepEqual(bad.lengths, [3]);
    for (const [i, a] of [[0, near[0]], [1, d1[0]], [3, d2[0]]] as const) {
      const alone = await e.step(a, inputs[i]);
      assert.ok(maxDiff(ok(out[i]).logits, alone.logits) <= 1e-5, `entry ${i}`);
    }
    assert.deepEqual([near[1].lengths, d1[1].lengths, d2[1].lengths], [[63, 14], [6], [8]]);
    // The batch goes on (the batch cache was rebuilt after the failed run).
    const next = await e.stepMany([{ cache: d1[1], input: { tokens: [[9]] } }, { cache: d2[1], input: { tokens: [[9]] } }]);
    for (const [i, a] of [d1[0], d2[0]].entries()) assert.ok(maxDiff(ok(next[i]).logits, (await e.step(a, { tokens: [[9]] })).logits) <= 1e-5, `next step, entry ${i}`);
  } finally {
    await e.close();
  }
  // Through the backend: the near-context entry and a decode entry in one stepMany both succeed.
  const be = await BatchedLocalBackend.create(config, buildInferenceGraph(config, new MemoryWeights(model.weights), { quant: 'fp32' }).toModelProto(), { threads: 1 });
  try {
    const [n, d] = [await be.newCache(2), await be.newCache(1)];
    await be.step(n, { tokens: [ids(62, 1), ids(10, 2)] });
    await be.step(d, { tokens: [ids(5, 3)] });
    const res = await be.stepMany([n, d, n + d + 1], [{ tokens: [[5], [5, 6, 7, 8]], sample: [{ u: 0 }, { u: 0 }] }, { tokens: [[1]], sample: [{ u: 0 }] }, { tokens: [[1]] }]);
    assert.ok(!('error' in res[0]) && !('error' in res[1]), JSON.stringify(res.slice(0, 2)));
    const { error } = res[2] as { error: { message: string; name: string; stack: string } };
    assert.deepEqual([error.message, error.name], [`runtime: KV cache ${n + d + 1} does not exist (freed?)`, 'Error']);
    assert.match(error.stack, /at \w*LocalBackend\.cache/); // where it was thrown, for the error rebuilt from it
    assert.deepEqual([await be.lengths(n), await be.lengths(d)], [[63, 14], [6]]);
  } finally {
    await be.close();
  }
});

test('CoalescingBackend: a prefill past PREFILL_CHUNK tokens goes in steps of it, the last the request itself (the same logits, hidden state and sampled token as one step); other requests decode between them; prefills in order up to a chunk a run; all or nothing; a generation\'s signal stops it between parts', async () => {
  const lengths = (parts: StepRequest[] | undefined) => parts?.map((p) => p.tokens.map((t) => t.length));
  assert.equal(PREFILL_CHUNK, 512);
  assert.deepEqual(lengths(prefillChunks({ tokens: [ids(1300, 1)] })), [[512], [276], [512]]);
  // Rows of other lengths: each row's last 512 go with the request, the rest before (a row without any idles); masks cut alike.
  const mask = (n: number) => Array.from({ length: n }, (_, i) => (i >= n - 30 ? 1 : 0));
  const req: StepRequest = { tokens: [ids(1100, 1), ids(20, 2)], adapterMask: [mask(1100), mask(20)], adapterName: 'x', logits: 2, want: { hidden: true }, sample: [null, { temperature: 0, u: 0.5 }] };
  const parts = prefillChunks(req)!;
  assert.deepEqual([lengths(parts), parts.map((p) => p.adapterMask!.map((m) => m.length))], [[[512, 0], [76, 0], [512, 20]], [[512, 0], [76, 0], [512, 20]]]);
  assert.deepEqual(parts.slice(0, -1).map((p) => Object.keys(p).sort()), [['adapterMask', 'adapterName', 'tokens'], ['adapterMask', 'adapterName', 'tokens']]);
  assert.equal(parts.flatMap((p) => p.tokens.flat()).length, 1120);
  assert.deepEqual({ ...parts[2], tokens: undefined, adapterMask: undefined }, { ...req, tokens: undefined, adapterMask: undefined });
  assert.deepEqual([parts[2].tokens[0], parts[2].adapterMask![0]], [req.tokens[0].slice(588), req.adapterMask![0].slice(588)]);
  // Not split: guesses, logits of every position or of more than a chunk, a prefill of a chunk or less.
  for (const r of [{ ...req, logits: 'all' as const }, { ...req, logits: 513 }, { ...req, draft: [null, null] }, { tokens: [ids(512, 1)] }]) assert.equal(prefillChunks(r), undefined);
  // Through the coalescer: the same as one step of the inner backend; a short request's decode steps run between the parts.
  const m = await loadModel(model.dir, { quant: 'fp32', worker: false, promptCache: 0 });
  try {
    const b = m.backend as CoalescingBackend, long = ids(1300, 3), want = { logits: true, hidden: true }, sample = [{ temperature: 0, u: 0.5 }];
    const whole = await b.inner.step(await b.newCache(1), { tokens: [long], want, sample });
    const [c, short] = [await b.newCache(1), await b.newCache(1)];
    await b.step(short, { tokens: [ids(5, 4)] });
    let decoded = 0, done = false;
    const decoding = (async () => { while (!done) { await b.step(short, { tokens: [[decoded % V]] }); decoded++; } })();
    const chunked = await b.step(c, { tokens: [long], want, sample });
    const before = decoded;
    done = true;
    await decoding;
    assert.ok(before >= 2, `${before} decode steps of the other request ran before the prefill ended`);
    assert.deepEqual([chunked.tokens, chunked.positions], [whole.tokens, whole.positions]);
    assert.ok(maxDiff(chunked.logits!, whole.logits!) <= 1e-4 && maxDiff(chunked.hidden!, whole.hidden!) <= 1e-4);
    // Prefills in the order they came, up to PREFILL_CHUNK tokens a run (the first whatever its size); a step passed over
    // holds back its cache's later steps.
    const order: string[] = [], [ca, cb, cc] = [await b.newCache(1), await b.newCache(1), await b.newCache(1)], runs = b.stats.runs;
    const step = (c: typeof ca, tokens: number[], name: string) => b.step(c, { tokens: [tokens] }).then(() => order.push(name));
    await Promise.all([step(ca, ids(300, 5), 'a 300'), step(cb, ids(300, 6), 'b 300'), step(cb, [7], 'b +1'), step(cc, ids(20, 7), 'c 20')]);
    assert.deepEqual([order, b.stats.runs - runs], [['a 300', 'c 20', 'b 300', 'b +1'], 3]);
    assert.deepEqual(await b.lengths(cb), [301]);
    // All or nothing, as one step: refused whole before any part runs (past the context, an unknown token id), and a
    // part cancelled takes back the parts run (they were left in the cache).
    const held = await b.newCache(1);
    await b.step(held, { tokens: [ids(1000, 8)] });
    await assert.rejects(b.step(held, { tokens: [ids(1300, 9)] }), /exceeds the model's context of 2048 tokens/);
    await assert.rejects(b.step(held, { tokens: [[...ids(900, 9), V]] }), /outside the vocabulary/);
    assert.deepEqual(await b.lengths(held), [1000]);
    const stop = new AbortController(), cancelling = new CoalescingBackend(b.inner, { onRun: () => stop.abort() });
    await assert.rejects(cancelling.step(held, { tokens: [ids(900, 10)] }, stop.signal), { name: 'AbortError' });
    assert.deepEqual(await b.lengths(held), [1000]);
    // A generation's signal stops its split prefill between parts (generate, complete): the rest never runs, and the
    // result says cancelled, with no tokens.
    const halt = new AbortController(), halting = new CoalescingBackend(b.inner, { onRun: () => halt.abort() });
    const [cut] = await generateBatch(halting, m.tokenizer, [ids(1300, 11)], [{ maxTokens: 4 }], undefined, halt.signal);
    assert.deepEqual([cut.finishReason, cut.tokens, halting.stats.runs], ['cancelled', [], 1]);
    const halt2 = new AbortController(), halting2 = new CoalescingBackend(b.inner, { onRun: () => halt2.abort() }); // and answer()
    const r = await answer(withBackend(m, halting2), 'word '.repeat(400), { reasoning: 'off', signal: halt2.signal });
    assert.deepEqual([r.finishReason, r.usage.promptTokens > 1024 && r.usage.promptTokens < 2048, r.usage.completionTokens, halting2.stats.runs], ['cancelled', true, 0, 1]);
    assert.throws(() => new CoalescingBackend(b.inner, { prefillChunk: 0 }), { message: 'runtime: prefillChunk must be a whole number of tokens from 1, or Infinity, got 0' });
  } finally {
    await m.close();
  }
});

test('CoalescingBackend: concurrent generations share batched runs and equal their single runs (in-process)', async () => {
  const g = buildInferenceGraph(model.config, new MemoryWeights(model.weights), { quant: 'fp32' });
  const inner = await BatchedLocalBackend.create(model.config, g.toModelProto(), { threads: 1 });
  const m = await loadModel(model.dir, { quant: 'fp32', worker: false });
  const runs: number[] = [];
  let third!: () => void;
  const thirdRun = new Promise<void>((r) => { third = r; });
  const co = new CoalescingBackend(inner, { onRun: (s) => { if (runs.push(s.rows) === 3) third(); } });
  const jobs = Array.from({ length: 6 }, (_, i) => ({
    prompt: m.encode(`question ${i}: ${'x'.repeat(i)}`),
    opts: { maxTokens: 12 + i, temperature: i % 2 ? 0.9 : 0, topP: 0.95, seed: 100 + i },
  }));
  const single: Completion[] = [];
  for (const j of jobs) single.push((await generateBatch(inner, m.tokenizer, [j.prompt], [{ ...j.opts }]))[0]);
  // Two waves: the second starts while the first decodes, and joins its batch.
  const together = await Promise.all(jobs.map(async (j, i) => {
    if (i >= 3) await thirdRun;
    return (await generateBatch(co, m.tokenizer, [j.prompt], [{ ...j.opts }]))[0];
  }));
  together.forEach((c, i) => assert.deepEqual(c.tokens, single[i].tokens, `request ${i}`));
  assert.ok(Math.max(...runs) >= 4, `batches of up to ${Math.max(...runs)} rows`);
  assert.ok(co.stats.runs < together.reduce((s, c) => s + c.tokens.length, 0), 'fewer runs than tokens generated');
  await co.close();
  await m.close();
});

test('stepMany: a step with guesses beside other decode steps of its adapter goes without them and joins their run; beside a prefill, or far longer than them, it keeps them; a bad draft is refused either way', async () => {
  const g = buildInferenceGraph(model.config, new MemoryWeights(model.weights), { quant: 'fp32' });
  const b = await BatchedLocalBackend.create(model.config, g.toModelProto(), { threads: 1 });
  try {
    const greedy = { temperature: 0, u: 0 }, prompt = (k: number) => Array.from({ length: 9 + k }, (_, i) => (i * 31 + 7 * k) % V);
    const [x, y] = [await b.newCache(1), await b.newCache(1)];
    const first = [(await b.step(x, { tokens: [prompt(0)], sample: [greedy] })).tokens![0], (await b.step(y, { tokens: [prompt(1)], sample: [greedy] })).tokens![0]];
    const draftOf = (t: number) => ({ tokens: [[t, 5, 6]], sample: [greedy], draft: [{ tokens: [5, 6], u: [0, 0] }], logits: 3 }) as StepRequest;
    // Two steps with guesses: both go without them (one batched run), as decoding one token per step.
    const both = await b.stepMany([x, y], [draftOf(first[0]), draftOf(first[1])]);
    both.forEach((r, i) => { assert.ok(!('error' in r) && r.runs === undefined, `entry ${i}: no guesses checked`); });
    assert.deepEqual(await Promise.all([b.lengths(x), b.lengths(y)]), [[prompt(0).length + 1], [prompt(1).length + 1]]);
    // Beside a prefill (which runs alone): the guesses are checked.
    const z = await b.newCache(1), t = (both[0] as StepResult).tokens![0];
    const [withPrefill] = await b.stepMany([x, z], [draftOf(t), { tokens: [prompt(2)], sample: [greedy] }]);
    assert.ok(!('error' in withPrefill) && withPrefill.runs?.[0] !== undefined, 'guesses checked beside a prefill');
    // A draft that is not the end of its fed tokens fails alone, batched or not.
    const bad = { ...draftOf(t), draft: [{ tokens: [6, 5], u: [0, 0] }] } as StepRequest;
    const [refused, fine] = await b.stepMany([x, y], [bad, { tokens: [[(both[1] as StepResult).tokens![0]]], sample: [greedy] }]);
    assert.match(('error' in refused ? refused.error.message : ''), /draft \[6,5\] is not the end of its fed tokens/);
    assert.ok(!('error' in fine));
    // A row far longer than four short ones steps alone (paddedFew): it keeps its guesses, the short ones batch.
    const shorts = [x, y, await b.newCache(1), await b.newCache(1)], long = await b.newCache(1);
    for (const [k, c] of shorts.slice(2).entries()) await b.step(c, { tokens: [prompt(3 + k)] });
    await b.step(long, { tokens: [Array.from({ length: 1500 }, (_, i) => (i * 13 + 1) % V)] });
    assert.deepEqual(paddedFew(await Promise.all([...shorts, long].map((c) => b.lengths(c)))), [0, 1, 2, 3]);
    const mixed = await b.stepMany([...shorts, long], [...shorts.map(() => ({ tokens: [[7]], sample: [greedy], want: { logits: true } })), draftOf(7)]);
    assert.deepEqual(mixed.map((r) => !('error' in r) && r.runs !== undefined), [false, false, false, false, true]);
    // The batched ones' logits are each their own (not views of the whole run's, which a caller keeping them would hold).
    assert.deepEqual(mixed.slice(0, 4).map((r) => !('error' in r) && [r.logits!.length, r.logits!.buffer.byteLength]), new Array(4).fill([V, 4 * V]));
    for (const c of [...shorts, long, z]) await b.free(c);
  } finally {
    await b.close();
  }
});

test('a loaded model batches concurrent calls (its own coalescing backend, in the worker and in-process): each gets what it gets alone', async () => {
  for (const worker of [true, false]) {
    const m = await loadModel(model.dir, { quant: 'fp32', worker });
    try {
      const prompts = [0, 1, 2, 3].map((i) => `prompt number ${i}`), opts = (i: number) => ({ maxTokens: 10, temperature: 0.8, seed: 7 + i, stopTokens: [] });
      const alone: Completion[] = [];
      for (const [i, p] of prompts.entries()) alone.push(await m.complete(p, opts(i)));
      const co = m.backend as CoalescingBackend, before = co.stats.maxRows;
      assert.equal(before, 1, 'one call at a time steps one row');
      const together = await Promise.all(prompts.map((p, i) => m.complete(p, opts(i))));
      together.forEach((c, i) => assert.deepEqual(c.tokens, alone[i].tokens, `call ${i}, worker ${worker}`));
      assert.ok(co.stats.maxRows >= 2, `concurrent calls shared runs (worker ${worker})`);
      // A failed step is thrown at the caller, with the engine's own error (and its frames) as its cause.
      const c = await co.newCache(1), V = m.config.vocabSize;
      await assert.rejects(co.step(c, { tokens: [[V + 5]] }), (e: Error) => /token id \d+ is outside the vocabulary/.test(e.message) && /at Engine\./.test((e.cause as Error)?.stack ?? ''));
      await co.free(c);
    } finally {
      await m.close();
    }
  }
});

test('a loaded model\'s backend keeps call order: a truncate, select, lengths or free issued after a step (not awaited) acts after it', async () => {
  for (const worker of [true, false]) {
    const m = await loadModel(model.dir, { quant: 'fp32', worker });
    try {
      const b = m.backend, prompt = ids(10, 1), logitsOf = async (tokens: number[]) => {
        const h = await b.newCache(1), r = await b.step(h, { tokens: [tokens], want: { logits: true } });
        await b.free(h);
        return r.logits!;
      };
      const h = await b.newCache(1);
      await b.step(h, { tokens: [prompt] });
      // The step waits for the next batch; before, the truncate went straight through and the step saw 4 positions.
      const [stepped] = await Promise.all([b.step(h, { tokens: [[42]], want: { logits: true } }), b.truncate(h, 0, 4)]);
      assert.ok(maxDiff(stepped.logits!, await logitsOf([...prompt, 42])) < 1e-4, `the step saw the whole prompt (worker ${worker})`);
      assert.deepEqual(await b.lengths(h), [4]);
      const [, fork, lengths] = await Promise.all([b.step(h, { tokens: [[7, 8]] }), b.select(h, [0, 0]), b.lengths(h)]);
      assert.deepEqual(lengths, [6]);
      assert.deepEqual(await b.lengths(fork), [6, 6], 'the fork holds the step\'s tokens');
      // Before, the free went first and the step failed: "KV cache N does not exist (freed?)".
      const [last] = await Promise.all([b.step(h, { tokens: [[9]], want: { logits: true } }), b.free(h)]);
      assert.ok(maxDiff(last.logits!, await logitsOf([...prompt.slice(0, 4), 7, 8, 9])) < 1e-4);
      await b.free(fork);
    } finally {
      await m.close();
    }
  }
});

test('a loaded model\'s backend keeps call order for setAdapter: a step issued before it (not awaited) runs with the adapter it was issued under', async () => {
  const dir = path.join(import.meta.dirname, '../models/default');
  for (const worker of [true, false]) {
    const m = await loadModel(dir, { adapter: path.join(dir, 'reasoning-adapter'), worker });
    try {
      const b = m.backend, prompt = m.encode('Sam has 12 apples. He gives 5 to Ann. How many apples does Sam have now?', true);
      const req: StepRequest = { tokens: [prompt], adapterMask: [prompt.map(() => 1)], want: { logits: true } };
      const stepOn = async () => { const h = await b.newCache(1); try { return (await b.step(h, req)).logits!; } finally { await b.free(h); } };
      const sft = await stepOn(), sftTensors = m.adapter!.tensors, rlTensors = loadAdapter(path.join(dir, 'reasoning-adapter-rl'), m.config).tensors;
      // Before, the setAdapter went straight through and the step queued before it ran with the RL adapter.
      const [h1, h2] = [await b.newCache(1), await b.newCache(1)];
      const [first, , second] = await Promise.all([b.step(h1, req), b.setAdapter(rlTensors), b.step(h2, req)]);
      await b.free(h1); await b.free(h2);
      assert.ok(maxDiff(first.logits!, sft) < 1e-5, `the step issued before setAdapter used the SFT adapter (worker ${worker})`);
      assert.ok(maxDiff(second.logits!, sft) > 0.01, 'the step issued after it used the RL adapter');
      assert.ok(maxDiff(second.logits!, await stepOn()) < 1e-5);
      await b.setAdapter(sftTensors);
      assert.ok(maxDiff(await stepOn(), sft) < 1e-5);
    } finally {
      await m.close();
    }
  }
});

test('CoalescingBackend over the runtime worker: batched decode, per-request errors, cancellation frees the slot', async () => {
  const m = await loadModel(model.dir, { quant: 'fp32' });
  const co = new CoalescingBackend(m.backend as unknown as BatchingBackend);
  try {
    const prompts = [0, 1, 2, 3].map((i) => m.encode(`prompt number ${i}`));
    const alone = await m.generateBatch(prompts.map((_, i) => `prompt number ${i}`), { maxTokens: 10, temperature: 0.8, seed: 7 }); // row i: seed 7 + i
    const shared = await Promise.all(prompts.map((p, i) => generateBatch(co, m.tokenizer, [p], [{ maxTokens: 10, temperature: 0.8, seed: 7 + i }])));
    shared.forEach((c, i) => assert.deepEqual(c[0].tokens, alone[i].tokens, `request ${i}`));
    assert.ok(co.stats.maxRows >= 2);
    // A bad request fails alone; the others in the same run go on.
    const bad = co.newCache(1).then((c) => co.step(c, { tokens: [[V + 5]] }));
    const good = generateBatch(co, m.tokenizer, [prompts[0]], [{ maxTokens: 4 }]);
    await assert.rejects(bad, /outside the vocabulary/);
    assert.equal((await good)[0].tokens.length, 4);
    // Cancellation: the request's view rejects its next step; generateBatch frees every cache it made.
    const inner = m.backend as unknown as BatchingBackend, live = new Set<number>(), made: number[] = [], { newCache, select, free } = inner;
    inner.newCache = async (rows) => { const h = await newCache.call(inner, rows); live.add(h); made.push(h); return h; };
    inner.select = async (c, rows) => { const h = await select.call(inner, c, rows); live.add(h); return h; };
    inner.free = (c) => { live.delete(c); return free.call(inner, c); };
    const ac = new AbortController();
    const view = withBackend(m, co.forRequest(ac.signal));
    const gen = view.generateBatch(['cancel me'], { maxTokens: 500, stopTokens: [] });
    setTimeout(() => ac.abort(), 30);
    await assert.rejects(gen, /cancelled/);
    await co.idle();
    assert.equal(made.length, 1, 'the cancelled request made its cache');
    assert.deepEqual([...live], [], 'the cancelled request\'s caches are freed');
  } finally {
    await co.close();
  }
});
