import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chatIds, groupAdvantages, policyBatch, reward, rolloutCorrect, rollouts, trainRl } from '../src/train/rl.ts';
import { loadAdapter } from '../src/io/peft.ts';
import { openSource } from '../src/io/source.ts';
import { loadModel } from '../src/runtime/model.ts';
import { rlPrompts } from '../src/cli/train-rl.ts';
import { ADAPTER_DIR, DEFAULT_DIR } from '../src/tasks/default-model.ts';
import { makeSplits } from '../src/tasks/synthetic.ts';
import { budgetControl } from '../src/reason/budget.ts';

test('rewards: correctness minus a soft, bounded penalty past the budget (or the group mean); unclosed thinking is −1', () => {
  const o = { penalty: 'budget' as const, lambda: 1, groupMean: 0 };
  assert.equal(reward({ correct: true, thinking: 60, closed: true, budget: 64 }, o), 1);
  assert.equal(reward({ correct: true, thinking: 96, closed: true, budget: 64 }, o), 0.5);
  assert.equal(reward({ correct: false, thinking: 96, closed: true, budget: 64 }, o), -0.5);
  assert.equal(reward({ correct: true, thinking: 1000, closed: true, budget: 64 }, o), 0, 'the penalty is capped at 1');
  assert.equal(reward({ correct: true, thinking: 10, closed: false, budget: 64 }, o), -1);
  assert.equal(reward({ correct: true, thinking: 150, closed: true, budget: 64 }, { penalty: 'group', lambda: 0.5, groupMean: 100 }), 0.75);
});

test('a rollout is right only when it closed its thinking and ended by itself: one cut by the token limit may hold "#### 3" of "#### 39"', () => {
  const cut = 'a + b = 39 </think> #### 3';
  assert.deepEqual([[true, true], [true, false], [false, true]].map(([closed, ended]) => rolloutCorrect('synthetic', { closed, ended }, cut, 3)), [true, false, false]);
  assert.equal(rolloutCorrect('synthetic', { closed: true, ended: true }, cut, 39), false);
});

test('a policy step: every rollout\'s tokens count in 1/N; zero-advantage rollouts run only for the KL term', () => {
  const rolls = [[1, 2], [3], [], [4, 5, 6]].map((trained) => ({ trained }));
  const adv = [0.5, 0, 1, 0];
  assert.deepEqual(policyBatch(rolls, adv, false), { live: [{ r: rolls[0], a: 0.5 }], tokens: 6 });
  assert.deepEqual(policyBatch(rolls, adv, true), { live: [{ r: rolls[0], a: 0.5 }, { r: rolls[1], a: 0 }, { r: rolls[3], a: 0 }], tokens: 6 });
});

test('group advantages are normalised within each group of G as TRL does it (torch std: n − 1)', () => {
  const a = groupAdvantages([1, 0, 1, 0, 2, 2, 2, 2, 3, 0, 0], 4);
  // [1, 0, 1, 0]: mean 0.5, std √(1/3); [3, 0, 0] (a last, shorter group): mean 1, std √3.
  const want = [1, -1, 1, -1].map((s) => (s * 0.5) / (Math.sqrt(1 / 3) + 1e-4)).concat([0, 0, 0, 0], [2, -1, -1].map((d) => d / (Math.sqrt(3) + 1e-4)));
  assert.equal(a.length, want.length, 'one advantage per reward, the last, shorter group too');
  a.forEach((x, i) => assert.ok(Math.abs(x - want[i]) < 1e-12, `advantage ${i}: ${x} vs ${want[i]}`));
  assert.deepEqual(a.slice(4, 8), [0, 0, 0, 0], 'equal rewards carry no signal');
  assert.deepEqual(groupAdvantages([5], 1), [0], 'a group of one has no spread');
});

test('train-rl on the embedded model: forked rollouts, policy steps, a loadable PEFT adapter and curves', { skip: !fs.existsSync(path.join(ADAPTER_DIR, 'adapter_model.safetensors')) && 'models/default not trained yet' }, async (t) => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-rl-'));
  t.after(() => fs.rmSync(out, { recursive: true, force: true }));
  const src = openSource(DEFAULT_DIR);
  // (Without prompt caching: the probe below compares log-probabilities exactly, and a prompt read from the cache
  // would match only to float rounding.)
  const m = await loadModel(DEFAULT_DIR, { adapter: ADAPTER_DIR, quant: 'fp32', promptCache: 0 });
  try {
    const steps: number[] = [];
    // Chat queries close their thinking quickly and mostly correctly, math ones mostly not: rewards differ within groups.
    // beta > 0: the KL term and its reference pass (a forward-only trainer) run too.
    const chat = makeSplits({ train: 20, val: 0, test: 0, seed: 1, mix: { chat: 1 } }).train.map((it) => ({ question: it.question, gold: it.answer }));
    const probe = () => m.complete('What is 12 plus 7?', { chat: true, adapter: true, maxTokens: 6 });
    const before = await probe();
    const { history } = await trainRl({ config: src.config, weights: src.weights!, tokenizer: m.tokenizer, backend: m.backend }, ADAPTER_DIR, [...chat, ...rlPrompts('synthetic', 20, 0)], {
      out, budgets: [32, 64], steps: 2, group: 4, promptsPerStep: 4, maxTokens: 96, beta: 0.04, quiet: true, checkpointEvery: 10, onStep: (s) => steps.push(s.step),
    });
    // The caller's model keeps the adapter it was loaded with: the policy trained in a slot of its own.
    assert.deepEqual((await probe()).logprobs, before.logprobs);
    assert.deepEqual(steps, [1, 2]);
    assert.equal(history.length, 2);
    for (const h of history) {
      // Means over 4 prompts × 4 rollouts; a penalty or an unclosed thinking only lowers a reward below its correctness.
      for (const share of [h.accuracy, h.withinBudget]) assert.ok(Number.isInteger(share * 16) && share >= 0 && share <= 1, JSON.stringify(h));
      assert.ok(h.reward <= h.accuracy && h.thinking > 0 && h.tokensPerSec > 0, JSON.stringify(h));
    }
    assert.ok(history.some((h) => h.updated), 'some group\'s rewards differed');
    const a = loadAdapter(out, src.config), start = loadAdapter(ADAPTER_DIR, src.config);
    assert.deepEqual(a.config.aloraInvocationTokens, start.config.aloraInvocationTokens);
    const k = [...start.tensors.keys()][0];
    assert.notDeepEqual(a.tensors.get(k)!.b, start.tensors.get(k)!.b, 'the policy steps changed the adapter');
    for (const f of ['rl-curves.svg', 'rl-length.svg', 'rl_log.json']) assert.ok(fs.existsSync(path.join(out, f)), f);
    // Resumed at its last step with the same --steps: said, no step taken, the outputs written again from it.
    const said: string[] = [], write = process.stderr.write;
    process.stderr.write = ((chunk: string) => { said.push(String(chunk)); return true; }) as typeof process.stderr.write;
    let again;
    try {
      again = await trainRl({ config: src.config, weights: src.weights!, tokenizer: m.tokenizer, backend: m.backend }, ADAPTER_DIR, [...chat, ...rlPrompts('synthetic', 20, 0)], {
        out, budgets: [32, 64], steps: 2, group: 4, promptsPerStep: 4, maxTokens: 96, beta: 0.04, checkpointEvery: 10, resume: true, onStep: (s) => steps.push(s.step),
      });
    } finally {
      process.stderr.write = write;
    }
    assert.ok(said.some((l) => l.includes('train-rl: the checkpoint is at step 2, --steps is 2: nothing left to train (a larger --steps goes on); writing the outputs from it')), said.join(''));
    assert.deepEqual([steps, again.history.length], [[1, 2], 2]);
    // Rollouts: a completion that ends on the stop token trains that token too (stopping is a choice the policy
    // learns); at a high temperature, rows run to the model's context, not past it.
    const inv = start.config.aloraInvocationTokens!, ctx = src.config.maxPositionEmbeddings, eos = new Set(m.tokenizer.eosTokenIds);
    const end = m.tokenizer.encode('</think>', { addSpecialTokens: false });
    const rolls = await rollouts(m.backend, m.tokenizer, chat.slice(0, 2).map((p) => ({ p, budget: 32, line: true })), inv, 2, { temperature: 1, maxTokens: 96, seed: 1, end });
    for (const r of rolls) {
      assert.deepEqual(r.trained.slice(0, r.generated.length), r.generated);
      // thinking: the tokens before </think>, as inference counts them
      assert.deepEqual([r.closed, r.thinking], r.generated.includes(end[0]) ? [true, r.generated.indexOf(end[0])] : [false, r.generated.length]);
      assert.equal(r.ended, r.trained.length === r.generated.length + 1, 'ended: by its stop token');
    }
    assert.ok(rolls.some((r) => r.closed));
    assert.ok(rolls.some((r) => r.trained.length === r.generated.length + 1 && eos.has(r.trained.at(-1)!)), 'a chat reply ends on its stop token, trained');
    // More rows than one batch decodes (3 × 30 > ROLLOUT_ROWS, 64: all of them at once took memory without bound,
    // 4.7 GB for a group of 100,000): blocks whose rows are each those of its prompt decoded alone, with its seeds.
    const three = chat.slice(0, 3).map((p, i) => ({ p, budget: 32, line: i !== 1 })), o = { temperature: 1, maxTokens: 24, seed: 5, end };
    const forks: number[] = [], select = m.backend.select.bind(m.backend);
    m.backend.select = (cache, rows) => { forks.push(rows.length); return select(cache, rows); };
    const blocked = await rollouts(m.backend, m.tokenizer, three, inv, 30, o).finally(() => { m.backend.select = select; });
    assert.deepEqual(forks, [64, 26]);
    const alone = (await Promise.all(three.map((b, i) => rollouts(m.backend, m.tokenizer, [b], inv, 30, { ...o, seed: o.seed + 30 * i })))).flat();
    assert.deepEqual(blocked.map((r) => [r.prompt.length, r.budget, r.generated]), alone.map((r) => [r.prompt.length, r.budget, r.generated]));
    assert.ok(new Set(blocked.slice(0, 30).map((r) => r.generated.join())).size > 1, 'the rows of a group differ');
    // A seed near 2^53 − 1 wraps row by row (rows past it shared seeds, lost to rounding): the third row from the last
    // seed but one draws with seed 0.
    const [top, low] = await Promise.all([rollouts(m.backend, m.tokenizer, three.slice(0, 1), inv, 3, { ...o, seed: 2 ** 53 - 2 }), rollouts(m.backend, m.tokenizer, three.slice(0, 1), inv, 1, { ...o, seed: 0 })]);
    assert.deepEqual(top[2].generated, low[0].generated);
    // A prompt that leaves less room than the smallest budget is refused before any step, by its line.
    const long = { question: 'word '.repeat(1000), gold: 1, line: 7 };
    await assert.rejects(trainRl({ config: src.config, weights: src.weights!, tokenizer: m.tokenizer, backend: m.backend }, ADAPTER_DIR, [...chat, long], { out: path.join(out, 'long'), budgets: [32, 64], steps: 1, quiet: true, promptsFile: 'p.jsonl' }),
      /train-rl: 1 prompt leaves less room than the smallest budget \(32 tokens\) in the model's context of 1024 tokens, e\.g\. p\.jsonl:7 \(\d+ tokens with the chat template, the invocation and the budget line\): shorten or leave them out/);
    // A budget no prompt fits beside is the budget's fault, not the prompts'.
    await assert.rejects(trainRl({ config: src.config, weights: src.weights!, tokenizer: m.tokenizer, backend: m.backend }, ADAPTER_DIR, chat, { out: path.join(out, 'long'), budgets: [5000], steps: 1, quiet: true }),
      /^Error: train-rl: no prompt fits: the shortest \(\d+ tokens with the chat template, the invocation and the budget line\) and the smallest budget \(5000 thinking tokens\) exceed the model's context of 1024 tokens; give smaller --budgets, or shorter prompts$/);
    assert.ok(!fs.existsSync(path.join(out, 'long')));
    await assert.rejects(trainRl({ config: src.config, weights: src.weights!, tokenizer: m.tokenizer, backend: m.backend }, ADAPTER_DIR, chat, { out: path.join(out, 'long'), budgets: [32, 64, 32], steps: 1, quiet: true }),
      { message: 'train-rl: budgets name 32 twice (32,64,32): a bucket listed twice is drawn twice as often; list each once' });
    await assert.rejects(trainRl({ config: src.config, weights: src.weights!, tokenizer: m.tokenizer, backend: m.backend }, ADAPTER_DIR, [long], { out: path.join(out, 'long'), budgets: [32], unbudgetedShare: 1, steps: 1, quiet: true }),
      /\(\d+ tokens with the chat template and the invocation\)/, 'no budget line is fed when every prompt goes without one');
    // A prompt a few tokens short of the context: sampled rows stop at its end (at temperature 50 a stop token is
    // unlikely within the few tokens left), not at maxTokens.
    const room = (q: string) => ctx - chatIds(m.tokenizer, q).length - inv.length - budgetControl(m.tokenizer, 32, inv).length;
    const padded = (n: number) => chat[0].question + ' seven'.repeat(n);
    let [lo, hi] = [0, ctx]; // the most words that leave room: room(padded(lo)) ≥ 1
    while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (room(padded(mid)) >= 1) lo = mid; else hi = mid; }
    const longQ = padded(lo);
    const hot = await rollouts(m.backend, m.tokenizer, [{ p: { question: longQ, gold: 1 }, budget: 32, line: true }], inv, 4, { temperature: 50, maxTokens: 5000, seed: 3, end });
    assert.ok(room(longQ) > 0 && room(longQ) <= 6, `${room(longQ)} tokens of room`);
    assert.equal(Math.max(...hot.map((r) => r.prompt.length + r.generated.length)), ctx, 'a row ran to the end of the context');
  } finally {
    await m.close();
  }
});
