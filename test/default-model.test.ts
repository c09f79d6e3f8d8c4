/**
 * The embedded default: a few steps of the same recipe `npm run train:default` runs (the loss falls), and the
 * committed model answering exactly what it answered when it was trained.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trainDefault, DEFAULT_DIR, ADAPTER_DIR } from '../src/tasks/default-model.ts';
import { loadModel } from '../src/runtime/model.ts';
import { answer } from '../src/reason/answer.ts';
import { Router } from '../src/reason/router.ts';
import { slow } from './helpers/tier.ts';

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

test('the default recipe: base (full-parameter), anneal and reasoning adapter (activated LoRA) losses fall within a few steps', slow, async (t) => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-default-'));
  t.after(() => fs.rmSync(out, { recursive: true, force: true }));
  const r = await trainDefault({ out, baseExamples: 1500, annealExamples: 2000, adapterExamples: 200, maxSteps: 40, quiet: true });
  const b = r.baseLosses, a = r.adapterLosses;
  console.log(`base loss ${mean(b.slice(0, 5)).toFixed(3)} → ${mean(b.slice(-5)).toFixed(3)} over ${b.length} steps; adapter loss ${mean(a.slice(0, 3)).toFixed(3)} → ${mean(a.slice(-3)).toFixed(3)} over ${a.length} steps`);
  assert.equal(b.length, 40);
  assert.ok(mean(b.slice(-5)) < 0.7 * mean(b.slice(0, 5)), 'base loss falls by 30 % (its worked-solution documents carry loss on every token)');
  assert.ok(mean(a.slice(-3)) < mean(a.slice(0, 3)), 'adapter loss falls');
  assert.equal(r.annealLosses.length, 40);
  // It starts where the base ended (a fresh start would open near the untrained loss), on data of its own.
  const an = r.annealLosses;
  console.log(`anneal loss ${mean(an.slice(0, 3)).toFixed(3)} → ${mean(an.slice(-5)).toFixed(3)}`);
  assert.ok(Math.abs(mean(an.slice(0, 3)) - mean(b.slice(-5))) < 0.25 * mean(b.slice(-5)), 'the anneal continues from the trained base');
  for (const f of ['config.json', 'model.safetensors', 'loss-anneal.svg', 'training_log-anneal.json', 'reasoning-adapter/adapter_config.json', 'reasoning-adapter/adapter_model.safetensors']) {
    assert.ok(fs.existsSync(path.join(out, f)), f);
  }
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'reasoning-adapter/adapter_config.json'), 'utf8'));
  assert.equal(cfg.peft_type, 'LORA');
  assert.equal(cfg.alora_invocation_tokens.length, 1, 'invocation "<think>" is one token');
});

test('the committed default model and adapter answer test questions as recorded', { skip: !fs.existsSync(path.join(ADAPTER_DIR, 'adapter_model.safetensors')) && 'models/default not trained yet' }, async () => {
  const m = await loadModel(DEFAULT_DIR, { adapter: ADAPTER_DIR, worker: false });
  try {
    const expected = JSON.parse(fs.readFileSync(path.join(DEFAULT_DIR, 'expected.json'), 'utf8')) as { question: string; reasoning: 'on' | 'off'; answer: string }[];
    for (const e of expected) {
      const r = await answer(m, e.question, { reasoning: e.reasoning, maxTokens: 400 });
      assert.equal(r.answer, e.answer, `${e.reasoning}: ${e.question}`);
    }
    // The committed router: its probe sends this easy question to the direct route, the base slips ("#### 17"),
    // the gate catches the unsure "7" and the request escalates to reasoning, which gets it right.
    const router = Router.load(path.join(DEFAULT_DIR, 'router.json'), m.config.hiddenSize), q = 'Zoe has 7 dollars. She sells 4 kites for 3 dollars each. How many dollars does Zoe have now?';
    assert.equal((await answer(m, q, { reasoning: 'off' })).answer, '#### 17');
    const r = await answer(m, q, { reasoning: 'auto', maxTokens: 400 }, { router });
    assert.ok(r.routerScore! < router.threshold);
    assert.deepEqual([r.route, r.escalation?.answer, r.answer], ['reasoning', '#### 17', '#### 19']);
    assert.ok(r.escalation!.logprob < router.gate!.minLogprob);
  } finally {
    await m.close();
  }
});
