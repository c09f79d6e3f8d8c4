import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MemoryWeights } from '../src/io/weights.ts';
import { writeSafetensors } from '../src/io/safetensors.ts';
import { loadAdapter } from '../src/io/peft.ts';
import { loadModel } from '../src/runtime/model.ts';
import { trainSft } from '../src/train/sft.ts';
import { Trainer } from '../src/train/trainer.ts';
import type { Example } from '../src/train/data.ts';
import { makeRandomQwen2 } from './helpers/random-model.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-sft-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const model = makeRandomQwen2({ dir: path.join(tmp, 'm'), seed: 2, gguf: false, config: { numLayers: 2, vocabSize: 512 } });
// Embedding std 0.2 (not 0.02): with tied embeddings the logits are bounded by |h|·|e|, and at 0.02 no
// adapter could make any token likely.
model.weights.get('model.embed_tokens.weight')!.data.forEach((v, i, a) => { a[i] = v * 10; });
writeSafetensors(path.join(model.dir, 'model.safetensors'), model.weights);
const weights = new MemoryWeights(model.weights);
const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '../bin/edgereason.js');

/** A toy task: random prompts, and a completion that is one fixed phrase with the prompt's first token echoed. */
function toy(n: number, seed: number): Example[] {
  let s = seed;
  const next = () => { s = (s * 1103515245 + 12345) >>> 0; return s; };
  return Array.from({ length: n }, () => {
    const p = Array.from({ length: 4 + (next() % 4) }, () => 10 + (next() % 40));
    const ids = [...p, 3, 100, 101, p[0], 102, 2];
    return { ids, lossMask: Uint8Array.from(ids, (_, i) => (i > p.length ? 1 : 0)) };
  });
}
const train = toy(64, 1), evalSet = toy(16, 2);
const base = { rank: 8, alpha: 16, lr: 5e-3, batchTokens: 256, quiet: true, threads: 2 };

test('LoRA SFT on a toy corpus drives the loss down by more than half; eval loss falls too', async () => {
  const r = await trainSft(model.config, weights, train, evalSet, { ...base, out: path.join(tmp, 'a'), epochs: 10, evalEvery: 1000 });
  const first = r.losses[0], last = r.losses.slice(-3).reduce((a, b) => a + b) / 3;
  console.log(`toy LoRA SFT: ${r.steps} steps, loss ${first.toFixed(3)} → ${last.toFixed(3)}, eval ${r.evalLosses.map(([, l]) => l.toFixed(3)).join(' → ')}`);
  assert.ok(last < 0.5 * first, `loss ${first} → ${last}`);
  assert.ok(r.evalLosses.at(-1)![1] < 0.5 * first, 'held-out loss falls as well');
  assert.ok(fs.existsSync(path.join(tmp, 'a/loss.svg')));
  assert.ok(fs.readFileSync(path.join(tmp, 'a/loss.svg'), 'utf8').includes('SFT loss'));
});

test('a run stopped at a checkpoint and resumed equals the uninterrupted run bit for bit', async () => {
  const opts = { ...base, epochs: 2, checkpointEvery: 3 };
  const straight = await trainSft(model.config, weights, train, [], { ...opts, out: path.join(tmp, 'straight') });
  await trainSft(model.config, weights, train, [], { ...opts, out: path.join(tmp, 'resumed'), maxSteps: 3 });
  const resumed = await trainSft(model.config, weights, train, [], { ...opts, out: path.join(tmp, 'resumed'), resume: true });
  assert.equal(resumed.steps, straight.steps);
  for (const [n, p] of straight.params) assert.deepEqual(Buffer.from(resumed.params.get(n)!.buffer), Buffer.from(p.buffer), n);
  assert.deepEqual(resumed.losses, straight.losses);
});

test('the saved PEFT adapter, loaded by the runtime, reproduces the training forward', async () => {
  const out = path.join(tmp, 'a');
  const adapter = loadAdapter(out, model.config);
  assert.equal(adapter.config.r, 8);
  const ex = evalSet[0];
  const trainer = await Trainer.create(model.config, weights, { kind: 'lora', targets: adapter.config.targets, scale: 2 }, { threads: 2 });
  const raw = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
  assert.equal(raw.lora_alpha, 16);
  // Parameters as trained (B unscaled) from the safetensors file, via the PEFT loader (which pre-scales B).
  const params = new Map<string, Float32Array>();
  for (const [proj, t] of adapter.tensors) { params.set(`${proj}.lora_A`, t.a); params.set(`${proj}.lora_B`, t.b.map((x) => x / 2)); }
  const targets = ex.lossMask.reduce((a, b) => a + b, 0);
  const { loss } = await trainer.step(params, { examples: [ex], targetWeight: 1 / targets });
  await trainer.close();
  const m = await loadModel(model.dir, { quant: 'fp32', adapter: out, worker: false });
  const c = await m.backend.newCache(1);
  const r = await m.backend.step(c, { tokens: [ex.ids], adapterMask: [ex.ids.map(() => 1)], logits: 'all', want: { logits: true } });
  await m.close();
  const V = model.config.vocabSize;
  let nll = 0;
  for (let t = 1; t < ex.ids.length; t++) {
    if (!ex.lossMask[t]) continue;
    const row = r.logits!.subarray((t - 1) * V, t * V), mx = Math.max(...row);
    nll += -(row[ex.ids[t]] - mx - Math.log(row.reduce((s, x) => s + Math.exp(x - mx), 0)));
  }
  assert.ok(Math.abs(nll / targets - loss) <= 1e-4, `runtime ${nll / targets} vs training ${loss}`);
});

test('train-sft CLI: bad rank, unknown target, empty data file, a line without completion', () => {
  const data = path.join(tmp, 'd.jsonl');
  fs.writeFileSync(data, '{"prompt":"a","completion":"b"}\n');
  const run = (args: string[]) => {
    try { execFileSync(process.execPath, [BIN, 'train-sft', '--model', model.dir, '--out', path.join(tmp, 'cli'), ...args], { stdio: 'pipe' }); return ''; }
    catch (e) { return String((e as { stderr: Buffer }).stderr); }
  };
  assert.match(run(['--data', data, '--lora-r', '0']), /--lora-r must be a positive integer, got 0/);
  assert.match(run(['--data', data, '--targets', 'q,qkv']), /unknown target module "qkv"/);
  fs.writeFileSync(path.join(tmp, 'empty.jsonl'), '');
  assert.match(run(['--data', path.join(tmp, 'empty.jsonl')]), /empty\.jsonl: empty dataset/);
  fs.writeFileSync(path.join(tmp, 'bad.jsonl'), '{"prompt":"a","completion":"b"}\n{"prompt":"only a prompt"}\n');
  assert.match(run(['--data', path.join(tmp, 'bad.jsonl')]), /bad\.jsonl:2: .*completion/);
});
