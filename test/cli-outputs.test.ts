/**
 * Where the commands write, and what they say: outputs checked before any work (a file for a folder, a folder for a
 * file, an input or a user's model/adapter in the way), atomic writes that leave no temp file, runs stopped by
 * --max-steps/--steps that resume, Ctrl-C that restores the terminal and says how to continue, flags that
 * contradict or go unused, and the eval report's file names.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { atomicWrite, makeDir, openSafetensors, writeAll, writeJson, writeSafetensors } from '../src/io/safetensors.ts';
import { syncBuiltinESMExports } from 'node:module';
import { MemoryWeights } from '../src/io/weights.ts';
import { readJsonl, type Example } from '../src/train/data.ts';
import { trainSft } from '../src/train/sft.ts';
import { checkOptions, type RunOptions } from '../src/train/checkpoint.ts';
import { dimmer, lateProgress, Progress, StagedProgress } from '../src/train/progress.ts';
import { writeReport } from '../src/eval/report.ts';
import type { EvalReport } from '../src/eval/harness.ts';
import { exportTrl } from '../src/cli/export-trl.ts';
import { cliWords } from '../src/cli/main.ts';
import { transcript } from '../src/cli/answer.ts';
import type { AnswerResult, SampleResult } from '../src/reason/types.ts';
import { checkOutDir, checkOutFile, lockTraining, removeStale, replacedArtefacts } from '../src/cli/outputs.ts';
import { DEFAULT_DIR, ADAPTER_DIR } from '../src/tasks/default-model.ts';
import { makeRandomQwen2 } from './helpers/random-model.ts';
import { sharedPath } from './helpers/shared.ts';
import { slow, SLOW } from './helpers/tier.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(ROOT, 'bin/edgereason.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-cli-out-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const at = (...p: string[]) => path.join(tmp, ...p);

const model = makeRandomQwen2({ dir: at('m'), seed: 3, gguf: false, config: { numLayers: 2, vocabSize: 512 } });
const weights = new MemoryWeights(model.weights);
const data = at('d.jsonl');
fs.writeFileSync(data, Array.from({ length: 12 }, (_, i) => JSON.stringify({ prompt: `q ${i}`, completion: ` a ${i % 3}` })).join('\n') + '\n');

/** Run the CLI; status, stdout and stderr (never throws). */
function cli(args: string[], env?: NodeJS.ProcessEnv): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, ...(env ? { env: { ...process.env, ...env } } : {}) });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
const sft = (out: string, ...extra: string[]) => cli(['train-sft', '--model', model.dir, '--data', data, '--out', out, '--batch-tokens', '64', ...extra]);
/** name → bytes of every file under dir (recursively), to show that nothing changed. */
const snapshot = (dir: string): Record<string, string> => Object.fromEntries((fs.readdirSync(dir, { recursive: true }) as string[])
  .filter((f) => fs.statSync(path.join(dir, f)).isFile()).map((f) => [f, fs.readFileSync(path.join(dir, f)).toString('base64')]));

test('atomicWrite: a failed rename (the target is a folder) leaves no temp file and the folder as it was', () => {
  const dir = at('aw');
  fs.mkdirSync(path.join(dir, 'router.json'), { recursive: true });
  // A system error names the file it was writing (Node's own message names none: "ENOSPC: …, write"), its code kept.
  assert.throws(() => writeJson(path.join(dir, 'router.json'), { a: 1 }), new RegExp(`^Error: cannot write ${dir}/router\\.json: (EISDIR|EEXIST|ENOTEMPTY|EPERM)`));
  assert.deepEqual(fs.readdirSync(dir), ['router.json']);
  assert.ok(fs.statSync(path.join(dir, 'router.json')).isDirectory());
  assert.throws(() => atomicWrite(path.join(dir, 'x.bin'), (fd) => { writeAll(fd, Buffer.from('half')); throw new Error('disk full'); }), /^Error: disk full$/);
  const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  assert.throws(() => atomicWrite(path.join(dir, 'x.bin'), (fd) => { writeAll(fd, Buffer.from('half')); throw full; }),
    (e: NodeJS.ErrnoException) => e.message === `cannot write ${dir}/x.bin: ENOSPC: no space left on device, write` && e.code === 'ENOSPC' && e.cause === full);
  assert.throws(() => atomicWrite(path.join(dir, 'no-such', 'x.bin'), () => {}), new RegExp(`^Error: cannot write ${dir}/no-such/x\\.bin: ENOENT`));
  assert.deepEqual(fs.readdirSync(dir), ['router.json']);
});

test('a new file (a prompt cache\'s first save) on a disk without hard links (FAT32, exFAT) is renamed into place where none is; one there is kept', () => {
  const dir = at('nolinks'), file = path.join(dir, 'p.safetensors'), link = fs.linkSync;
  fs.mkdirSync(dir, { recursive: true });
  fs.linkSync = () => { throw Object.assign(new Error('EPERM: operation not permitted, link'), { code: 'EPERM' }); };
  syncBuiltinESMExports();
  try {
    writeSafetensors(file, new Map([['x', { shape: [2], data: Float32Array.of(1, 2) }]]), { exclusive: true });
    assert.deepEqual([...openSafetensors(file).get('x')], [1, 2]); // it was never written: "cannot write …: EPERM"
    assert.throws(() => writeSafetensors(file, new Map([['x', { shape: [1], data: Float32Array.of(3) }]]), { exclusive: true }), new RegExp(`^Error: cannot write ${file}: EPERM`));
    assert.deepEqual([[...openSafetensors(file).get('x')], fs.readdirSync(dir)], [[1, 2], ['p.safetensors']]);
  } finally {
    fs.linkSync = link;
    syncBuiltinESMExports();
  }
});

test('folders that cannot be made are refused at once: /proc takes none (Node\'s recursive mkdir looped there for ever)', { skip: !fs.existsSync('/proc/self') && 'no /proc' }, () => {
  assert.throws(() => makeDir('/proc/edgereason-x/y'), /^Error: cannot create the folder \/proc\/edgereason-x: \/proc takes no new folders \(ENOENT/);
  assert.throws(() => writeJson('/proc/edgereason-x/router.json', {}), /cannot create the folder \/proc\/edgereason-x/);
  assert.throws(() => checkOutDir('/proc/edgereason-x', { what: 'adapter', resume: false }), /^Error: --out \/proc\/edgereason-x: \/proc takes no new files or folders \(ENOENT\)$/);
  fs.writeFileSync(at('plain'), '');
  assert.throws(() => makeDir(at('plain')), /cannot create the folder .*plain: a file of that name exists/);
  assert.throws(() => makeDir(at('plain', 'x')), /cannot create the folder .*plain\/x .*ENOTDIR/);
  makeDir(at('made', 'a', 'b'));
  makeDir(at('made', 'a', 'b'));
  assert.ok(fs.statSync(at('made', 'a', 'b')).isDirectory());
  checkOutDir(at('made', 'new'), { what: 'adapter', resume: false });
  assert.deepEqual(fs.readdirSync(at('made')), ['a']); // the probe leaves nothing
});

test('training data: a non-string completion and an unknown role are refused, naming file:line and the value', () => {
  const f = at('bad.jsonl');
  fs.writeFileSync(f, '{"prompt":"a","completion":"b"}\n{"prompt":"a","completion":7}\n');
  assert.throws(() => readJsonl(f), { message: `${f}:2: "completion" must be a string, or both lists of chat messages (got 7)` });
  fs.writeFileSync(f, '{"prompt":"a"}\n');
  assert.throws(() => readJsonl(f), { message: `${f}:1: "completion" must be a string, or both lists of chat messages (missing)` });
  fs.writeFileSync(f, '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"x"}]}\n{"messages":[{"role":"wizard","content":"hi"},{"role":"assistant","content":"x"}]}\n');
  assert.throws(() => readJsonl(f), { message: `${f}:2: messages[0] has role "wizard" (expected system, user, assistant or tool)` });
  // TRL's conversational prompt-completion: one conversation, trained on the completion's assistant turns only.
  fs.writeFileSync(f, '{"prompt":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}],"completion":[{"role":"assistant","content":"d"}]}\n');
  const [rec] = readJsonl(f);
  assert.deepEqual(rec, { line: 1, messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }, { role: 'assistant', content: 'd' }], trainFrom: 3 });
  fs.writeFileSync(f, '{"prompt":[{"role":"user","content":"a"}],"completion":"d"}\n');
  assert.throws(() => readJsonl(f), { message: `${f}:1: "completion" is text and "prompt" a list of chat messages: give both as text, or both as lists of messages` });
  fs.writeFileSync(f, '{"prompt":"a","completion":[{"role":"assistant","content":"d"}]}\n'); // it read '"prompt" must be a non-empty list'
  assert.throws(() => readJsonl(f), { message: `${f}:1: "prompt" is text and "completion" a list of chat messages: give both as text, or both as lists of messages` });
  fs.writeFileSync(f, '{"prompt":[{"role":"user","content":"a"}],"completion":[]}\n');
  assert.throws(() => readJsonl(f), { message: `${f}:1: "completion" must be a non-empty list` });
  fs.writeFileSync(f, '{"prompt":[{"role":"user","content":"a"}],"completion":[{"role":"user","content":"d"}]}\n');
  assert.throws(() => readJsonl(f), { message: `${f}:1: "completion" has no assistant message, so nothing to train on` });
});

test('train-sft refuses, before loading anything, an --out that is the base model, a file, or holds an adapter; --overwrite replaces it', slow, () => {
  const before = snapshot(model.dir);
  let r = sft(model.dir, '--full');
  assert.equal(r.status, 1);
  assert.match(r.stderr, new RegExp(`--out ${model.dir} is the --model folder: the model would be written over its own input`));
  assert.deepEqual(snapshot(model.dir), before, 'the base model is untouched');

  fs.writeFileSync(at('afile'), 'mine');
  r = sft(at('afile'));
  assert.match(r.stderr, new RegExp(`--out ${at('afile')} is a file; expected a folder`));
  assert.doesNotMatch(r.stderr, /EEXIST/);
  r = sft(at('afile', 'sub'));
  assert.match(r.stderr, /afile is a file, so the folder cannot be created/);

  // Someone's adapter (rank 4) in --out: refused, untouched; --overwrite trains over it and clears its old files.
  const user = at('useradapter');
  assert.equal(sft(user, '--lora-r', '4', '--max-steps', '1').status, 0);
  fs.writeFileSync(path.join(user, 'rl_log.json'), '{}'); // an artefact a rank-8 SFT run does not write
  const mine = snapshot(user);
  r = sft(user, '--lora-r', '8', '--max-steps', '1');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /useradapter already holds a model or adapter \(adapter_config\.json, adapter_model\.safetensors, training_log\.json, loss\.svg, … \(6 entries\)\); choose another folder, or pass --overwrite to replace it \(or --resume to continue the run saved there\)/);
  assert.deepEqual(snapshot(user), mine, 'the adapter is untouched');
  r = sft(user, '--lora-r', '8', '--max-steps', '1', '--overwrite');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(fs.readFileSync(path.join(user, 'adapter_config.json'), 'utf8')).r, 8);
  assert.ok(!fs.existsSync(path.join(user, 'rl_log.json')), 'the earlier run\'s files are removed');
  assert.match(r.stderr, /--overwrite: removed the earlier run's rl_log\.json/);
  // An --overwrite run that stops on bad data writes nothing there (not even its record of what it would replace).
  fs.writeFileSync(at('bad.jsonl'), 'not json\n');
  const kept = snapshot(user);
  r = sft(user, '--data', at('bad.jsonl'), '--overwrite');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /bad\.jsonl/);
  assert.deepEqual(snapshot(user), kept);
  assert.match(sft(user, '--resume', '--overwrite').stderr, /--resume and --overwrite contradict/);
  assert.match(sft(at('never'), '--resume').stderr, /--resume: --out .*never holds no checkpoint/);
  // An --overwrite run records what it replaces beside its checkpoint: its --resume after an interruption removes
  // the earlier run's files it did not rewrite.
  fs.writeFileSync(path.join(user, 'rl_log.json'), '{}');
  const replaced = replacedArtefacts(user, { overwrite: true })!;
  assert.ok(replaced.has('rl_log.json') && fs.existsSync(path.join(user, 'checkpoint', 'replaced.json')));
  assert.deepEqual(replacedArtefacts(user, { resume: true }), replaced);
  assert.ok(removeStale(user, replacedArtefacts(user, { resume: true })!).includes('rl_log.json'));
  const replacedFile = path.join(user, 'checkpoint', 'replaced.json');
  assert.ok(!fs.existsSync(replacedFile), 'the record goes once the stale files are removed');
  fs.writeFileSync(replacedFile, 'null');
  assert.throws(() => replacedArtefacts(user, { resume: true }), { message: `--resume: ${replacedFile} is not a list of the earlier run's files (an object of name → identity strings); delete it to keep those files instead of removing them at the end` });
  // The half-written files of a run killed mid-write go when the next run starts; a live process's and other files stay.
  const dead = spawnSync('true').pid;
  for (const f of [`adapter_model.safetensors.tmp-${dead}`, `model-00001-of-00002.safetensors.tmp-${dead}`, `notes.tmp-${dead}`, `loss.svg.tmp-${process.ppid}`]) fs.writeFileSync(path.join(user, f), 'x');
  replacedArtefacts(user, {});
  assert.deepEqual(fs.readdirSync(user).filter((f) => f.includes('.tmp-')).sort(), [`loss.svg.tmp-${process.ppid}`, `notes.tmp-${dead}`]);
  // A folder where the run writes a file, or a file where it keeps its checkpoint folder: refused before training.
  const odd = at('odd-out');
  fs.mkdirSync(path.join(odd, 'loss.svg'), { recursive: true });
  assert.match(sft(odd, '--overwrite').stderr, /--out .*odd-out: .*odd-out\/loss\.svg is a folder, where the adapter has a file; move it away or choose another --out/);
  fs.rmSync(path.join(odd, 'loss.svg'), { recursive: true });
  fs.writeFileSync(path.join(odd, 'checkpoint'), 'my notes');
  assert.match(sft(odd).stderr, /--out .*odd-out: .*odd-out\/checkpoint is a file, where training keeps its checkpoint folder/);
  // convert writes no checkpoint and no loss curve: neither name is in its way.
  fs.mkdirSync(path.join(odd, 'loss.svg'));
  assert.doesNotThrow(() => checkOutDir(odd, { what: 'converted model', overwrite: true }));
});

test('train-sft --full refuses a folder with files it would replace (a tokenizer config of the user\'s)', () => {
  const dir = at('with-template');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), '{"chat_template": "mine"}');
  assert.match(sft(dir, '--full').stderr, /with-template already holds files this run would replace \(tokenizer_config\.json\); choose another folder, or pass --overwrite/);
  assert.equal(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'), '{"chat_template": "mine"}');
  // A GGUF's own folder: every GGUF there would read the tokenizer.json written beside it.
  const ggDir = at('gguf-folder'), gguf = path.join(ggDir, 'qwen.gguf');
  fs.mkdirSync(ggDir);
  fs.copyFileSync(makeRandomQwen2({ dir: at('gguf-source'), seed: 4, config: { numLayers: 1, vocabSize: 512 } }).files.ggufF32, gguf);
  assert.match(cli(['train-sft', '--model', gguf, '--data', data, '--out', ggDir, '--full', '--batch-tokens', '64']).stderr,
    new RegExp(`^edgereason: train-sft: --out ${ggDir} is the folder of ${gguf}: the model's files would mix with it \\(every GGUF there would read the tokenizer\.json written\\); choose another --out$`, 'm'));
  assert.deepEqual(fs.readdirSync(ggDir), ['qwen.gguf']);
  // Another command's output is refused too (a folder holding both would load as one of them), and said to be that.
  const trained = at('trained-out');
  fs.mkdirSync(trained);
  fs.writeFileSync(path.join(trained, 'loss.svg'), '<svg/>');
  assert.throws(() => checkOutDir(trained, { what: 'converted model' }), /trained-out already holds the output of a training run \(loss\.svg\); choose another folder/);
  fs.renameSync(path.join(trained, 'loss.svg'), path.join(trained, 'edgereason.json'));
  assert.throws(() => checkOutDir(trained, { what: 'adapter', resume: false }), /trained-out already holds a converted model's files \(edgereason\.json\); choose another folder/);
  fs.rmSync(path.join(trained, 'edgereason.json'));
  fs.writeFileSync(path.join(trained, 'training_log.json'), '[]');
  fs.mkdirSync(path.join(trained, 'checkpoint'));
  fs.writeFileSync(path.join(trained, 'checkpoint', 'checkpoint.json'), '{}');
  assert.throws(() => checkOutDir(trained, { what: 'adapter', resume: false }), /trained-out already holds files this run would replace \(training_log\.json, checkpoint\/checkpoint\.json\); choose another folder, or pass --overwrite to replace it \(or --resume/);
});

test('an output folder is refused before any work when it would hold its own input, cannot be written into, or breaks the layout', slow, () => {
  // A model named by one of its files is its folder: --overwrite there removed the model's files as an earlier run's.
  const m = at('own-model');
  fs.cpSync(model.dir, m, { recursive: true });
  const before = snapshot(m);
  for (const file of ['config.json', 'model.safetensors']) {
    assert.match(sft(m, '--model', path.join(m, file), '--overwrite', '--max-steps', '1').stderr, new RegExp(`--out .*own-model holds the --model .*own-model/${file.replace('.', '\\.')}: the adapter would be written over its own input; choose another --out`));
  }
  // ... also where its files are links into another folder (the Hugging Face hub's cache: snapshots/<rev>/config.json → blobs/…).
  const snap = at('hub', 'snapshots', 'abc'), blobs = at('hub', 'blobs');
  fs.mkdirSync(snap, { recursive: true });
  fs.mkdirSync(blobs);
  for (const f of fs.readdirSync(m)) { fs.copyFileSync(path.join(m, f), path.join(blobs, f)); fs.symlinkSync(path.join('..', '..', 'blobs', f), path.join(snap, f)); }
  assert.throws(() => checkOutDir(snap, { what: 'adapter', inputs: { '--model': path.join(snap, 'config.json') }, resume: false, overwrite: true }), /--out .*snapshots\/abc holds the --model .*config\.json/);
  // A GGUF (or llama2.c .bin) is a file of its own: a folder beside it is a fine --out.
  fs.writeFileSync(at('lone.gguf'), '');
  checkOutDir(tmp, { what: 'adapter', inputs: { '--model': at('lone.gguf') }, resume: false, overwrite: true });
  assert.match(cli(['convert', '--model', path.join(m, 'config.json'), '--out', m, '--overwrite']).stderr, /--out .*own-model holds the --model .*config\.json/);
  assert.deepEqual(snapshot(m), before);
  // A dangling link is named as such (it failed as ENOENT after the run).
  fs.symlinkSync(at('nowhere'), at('dangling'));
  assert.throws(() => checkOutDir(at('dangling'), { what: 'adapter', resume: false }), /--out .*dangling is a symbolic link to .*nowhere, which does not exist/);
  assert.throws(() => checkOutDir(at('dangling', 'sub'), { what: 'adapter', resume: false }), /--out .*dangling\/sub: .*dangling is a symbolic link to .*nowhere, which does not exist/);
  // export-trl: its own files' places (a folder where recipe.json goes failed after the data was written), and not the base model's folder.
  const job = at('job');
  fs.mkdirSync(path.join(job, 'recipe.json'), { recursive: true });
  assert.throws(() => exportTrl({ out: job, overwrite: true, baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', examples: 4, rlPrompts: 4 }), /--out .*job: .*job\/recipe\.json is a folder, where the TRL job has a file/);
  fs.rmSync(job, { recursive: true });
  fs.mkdirSync(job);
  fs.writeFileSync(path.join(job, 'data'), '');
  assert.throws(() => exportTrl({ out: job, overwrite: true, baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', examples: 4, rlPrompts: 4 }), /--out .*job: .*job\/data is a file, where the TRL job has a folder/);
  assert.throws(() => exportTrl({ out: m, overwrite: true, baseModel: m, examples: 4, rlPrompts: 4 }), /--out .*own-model is the --base-model folder/);
  // An invocation the synthetic traces do not use would make a job whose train_sft.py stops on the GPU machine.
  assert.throws(() => exportTrl({ out: at('job2'), baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', invocation: '<reason>', examples: 4, rlPrompts: 4 }), /^Error: export-trl: the invocation "<reason>" \(--alora-invocation\) is not in the synthetic traces, which open their reasoning with "<think>": give your --data/);
  exportTrl({ out: at('job3'), baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', invocation: '<think>\n', examples: 4, rlPrompts: 4 }); // what they do hold
  assert.ok(!fs.existsSync(at('job2')));
  // bench: a --results-dir that is a file, at the start (it failed after the run); train-sft: --eval as a link to --data.
  fs.writeFileSync(at('results-file'), 'mine');
  assert.match(cli(['bench', 'reasoning', '--results-dir', at('results-file'), '--router-items', '0', '--parallel-items', '0']).stderr, /--results-dir .*results-file is a file; expected a folder \(for the results\)/);
  assert.match(cli(['bench', 'reasoning', '--no-write', '--results-dir', at('results-both'), '--router-items', '0', '--parallel-items', '0']).stderr, /^edgereason: --no-write and --results-dir contradict each other: give one$/m); // the folder was ignored unsaid
  fs.symlinkSync(data, at('eval-link.jsonl'));
  assert.match(sft(at('never'), '--eval', at('eval-link.jsonl')).stderr, /--eval .*eval-link\.jsonl is the --data file/);
  assert.deepEqual(snapshot(m), before);
});

test('train-sft: contradictory and unused flags are refused or warned about', slow, () => {
  assert.match(sft(at('f1'), '--full', '--lora-r', '4', '--targets', 'q,v').stderr, /--full trains every weight, not a LoRA adapter: --lora-r, --targets contradict it/);
  assert.match(sft(at('f1'), '--full', '--alora-invocation', '<think>').stderr, /--alora-invocation makes an activated LoRA adapter .* --full trains every weight/);
  const r = sft(at('afile'), '--eval-every', '5');
  assert.deepEqual([r.status, r.stderr], [1, 'edgereason: train-sft: --eval-every would have no effect without --eval (no held-out set to take the loss on): give --eval <file>, or drop it\n']);
  assert.ok(!fs.existsSync(at('f1')));
  // Before an hf: model is downloaded (they were found after it)
  assert.equal(cli(['train-sft', '--model', 'hf:nobody/nothing', '--data', at('afile'), '--out', at('f1'), '--full', '--lora-r', '8']).stderr, 'edgereason: --full trains every weight, not a LoRA adapter: --lora-r contradicts it; drop it or --full\n');
  assert.equal(cli(['train-router', '--model', 'hf:nobody/nothing', '--out', at('r.json'), '--rule', 'accuracy', '--max-loss', '0.1']).stderr, 'edgereason: train-router: --max-loss would have no effect: the accuracy rule generates no reasoning answers (they serve the savings rule); drop it\n');
  assert.equal(cli(['train-verifier', '--model', 'hf:nobody/nothing', '--out', at('v.json')]).stderr, 'edgereason: train-verifier: --adapter <reasoning adapter> is required (or --native-thinking for a model that thinks by itself)\n');
  const hub = ['--model', 'hf:nobody/nothing'], ask = [...hub, '--question', 'hi'];
  assert.equal(cli(['answer', ...ask, '--vote', 'verifier']).stderr, 'edgereason: answer: --vote combines several samples: give --samples N (N ≥ 2)\n');
  assert.equal(cli(['answer', ...ask, '--task', 'gsm8k', '--grader', 'math']).stderr, 'edgereason: --task is --grader\'s earlier name: give one of them\n');
  assert.equal(cli(['answer', ...ask, '--native-thinking', '--adapter-mode', 'classic']).stderr, 'edgereason: --adapter-mode applies to a reasoning adapter, not to --native-thinking\n');
  assert.equal(cli(['chat', ...hub, '--native-thinking', '--budget', '50']).stderr, 'edgereason: --budget is the control line a budget-trained (RL) adapter reads; with --native-thinking cap the thinking with --max-thinking-tokens\n');
  assert.equal(cli(['eval', ...hub, '--out', at('e.json'), '--samples', '4']).stderr, 'edgereason: eval: --samples are parallel reasoning samples: it needs --adapter (or --native-thinking)\n');
  assert.equal(cli(['eval', ...hub, '--out', at('e.json'), '--adapter', 'a', '--samples', '4', '--verifier', 'v.json']).stderr, 'edgereason: eval: --verifier scores samples for --vote verifier or verifier-vote; with --vote majority it would not be used\n');
  assert.equal(cli(['eval', ...hub, '--out', at('e.json'), '--task', 'gsm8k', '--split', 'val']).stderr, 'edgereason: --split chooses a split of --task synthetic; gsm8k is read from gsm8k/test.jsonl\n');
});

test('a run stopped by --max-steps saves its checkpoint there and --resume finishes it exactly as one run; a rank change is named', async () => {
  const ex: Example[] = Array.from({ length: 24 }, (_, k) => {
    const ids = [10 + (k % 7), 11 + (k % 5), 12, 3, 100 + (k % 4), 2];
    return { ids, lossMask: Uint8Array.from(ids, (_, i) => (i > 3 ? 1 : 0)) };
  });
  const o = { rank: 4, alpha: 8, lr: 5e-3, batchTokens: 24, epochs: 2, checkpointEvery: 50, quiet: true, threads: 1 };
  const whole = await trainSft(model.config, weights, ex, [], { ...o, out: at('whole') });
  const stopped = await trainSft(model.config, weights, ex, [], { ...o, out: at('stopped'), maxSteps: 3 });
  assert.equal(stopped.steps, 3);
  assert.equal(stopped.checkpoint, 3, 'saved at the stopped step, though 3 is no multiple of 50');
  assert.equal(JSON.parse(fs.readFileSync(at('stopped', 'checkpoint', 'checkpoint.json'), 'utf8')).step, 3);
  await assert.rejects(trainSft(model.config, weights, ex, [], { ...o, rank: 2, out: at('stopped'), resume: true }),
    { message: `resume: ${at('stopped', 'checkpoint')} was trained with --lora-r 4, this run has --lora-r 2 (resume with the same options, or start a new --out)` });
  await assert.rejects(trainSft(model.config, weights, ex, [], { ...o, targets: ['q_proj', 'v_proj'], out: at('stopped'), resume: true }),
    /was trained with --targets q,k,v,o,gate,up,down, this run has --targets q,v /);
  // --full, and another --eval set (its losses would join the same curve), are named too.
  await assert.rejects(trainSft(model.config, weights, ex, [], { ...o, rank: undefined, alpha: undefined, full: true, out: at('stopped'), resume: true }), /was trained with --full false, this run has --full true /);
  await assert.rejects(trainSft(model.config, weights, ex, ex.slice(0, 2), { ...o, out: at('stopped'), resume: true }),
    /was trained with the --eval \(a hash of its token ids\) none, this run has the --eval \(a hash of its token ids\) [0-9a-f]{12} /);
  await assert.rejects(trainSft(model.config, weights, ex.slice(1), [], { ...o, out: at('stopped'), resume: true }), /was trained with 24 examples in --data, this run has 23 examples in --data /);
  // An activated LoRA's invocation is named as text beside its ids (given the tokenizer's decode), else by its ids.
  await assert.rejects(trainSft(model.config, weights, ex, [], { ...o, aloraInvocation: [100, 2], decode: (ids) => ids.map((t) => `<${t}>`).join(''), out: at('stopped'), resume: true }),
    { message: `resume: ${at('stopped', 'checkpoint')} was trained with --alora-invocation none, this run has --alora-invocation "<100><2>" (token ids 100,2) (resume with the same options, or start a new --out)` });
  assert.throws(() => checkOptions('ck', { '--alora-invocation': [5, 6] }, { '--alora-invocation': [7] }), { message: 'resume: ck was trained with --alora-invocation 5,6, this run has --alora-invocation 7 (resume with the same options, or start a new --out)' });
  // Another base model is named first: it is why anything else differs (its invocation ids read with another vocabulary).
  assert.throws(() => checkOptions('ck', { '--alora-invocation': [5], 'the --model (a hash of its config and weights)': 'aaa' }, { '--alora-invocation': [7], 'the --model (a hash of its config and weights)': 'bbb' }),
    { message: 'resume: ck was trained with the --model (a hash of its config and weights) aaa, this run has the --model (a hash of its config and weights) bbb (resume with the same options, or start a new --out)' });
  // Another trainer's checkpoint is named as such (an older one, without its command recorded, by its options).
  for (const saved of [{ command: 'train-rl', '--group': 2 }, { '--group': 2 }] as RunOptions[]) {
    assert.throws(() => checkOptions('ck', saved, { command: 'train-sft', '--epochs': 2 }), { message: 'resume: ck holds a train-rl checkpoint: resume it with train-rl, or give train-sft another --out' });
  }
  const resumed = await trainSft(model.config, weights, ex, [], { ...o, out: at('stopped'), resume: true });
  assert.equal(resumed.steps, whole.steps);
  assert.deepEqual(resumed.losses, whole.losses);
  for (const [n, p] of whole.params) assert.deepEqual(Buffer.from(resumed.params.get(n)!.buffer), Buffer.from(p.buffer), n);
  assert.equal(resumed.checkpoint, whole.steps, 'the end of the run is saved too');
});

test('Progress: on SIGINT the bar is stopped (cursor shown again), the message printed and the exit code is 130', () => {
  const written: string[] = [], codes: number[] = [];
  const stream = { isTTY: true, columns: 120, write: (s: string) => { written.push(s); return true; } } as unknown as NodeJS.WriteStream;
  const p = new Progress(10, { stream, interrupt: (step) => `interrupted at step ${step}; the last checkpoint is step 2`, exit: (c) => codes.push(c) });
  p.update(3, { loss: 1, tokens: 10 });
  const listeners = process.listenerCount('SIGINT');
  process.emit('SIGINT', 'SIGINT');
  const out = written.join('');
  assert.ok(out.includes('\x1b[?25l'), 'the bar hid the cursor');
  assert.ok(out.lastIndexOf('\x1b[?25h') > out.lastIndexOf('\x1b[?25l'), 'and shows it again');
  assert.match(out, /\ninterrupted at step 3; the last checkpoint is step 2\n$/);
  assert.deepEqual(codes, [130]);
  assert.equal(process.listenerCount('SIGINT'), listeners - 1, 'the handler is removed');
  p.stop();
  // quiet (a library caller's trainSft with handleSignals): no bar, but the signal is still handled.
  const q = new Progress(10, { stream, quiet: true, interrupt: (step) => `stopped at ${step}`, exit: (c) => codes.push(c) });
  q.update(4);
  written.length = 0;
  process.emit('SIGTERM', 'SIGTERM');
  assert.deepEqual([written.join(''), codes], ['\nstopped at 4\n', [130, 143]]);
  q.stop();
});

test('lockTraining: its Ctrl-C handler stands until the training\'s own comes (then goes for good: it would say nothing was saved after the training saved)', async () => {
  const dir = at('lock-handover'), before = [process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')];
  const off = lockTraining(dir, 'train-sft');
  assert.deepEqual([process.listenerCount('SIGINT'), process.listenerCount('SIGTERM'), fs.readFileSync(path.join(dir, '.edgereason.lock'), 'utf8') === `${process.pid} train-sft`], [before[0] + 1, before[1] + 1, true]);
  const training = () => {};
  process.on('SIGINT', training);
  await Promise.resolve(); // handed over once the training's is there
  assert.deepEqual([process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')], [before[0] + 1, before[1]], 'only the training\'s handler is left');
  process.off('SIGINT', training);
  assert.deepEqual([process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')], before, 'and it does not come back');
  off();
});

test('StagedProgress: one counter per stage with items/s and ETA (the eval, router and verifier progress)', () => {
  let t = 0;
  const written: string[] = [];
  const stream = { isTTY: false, write: (s: string) => { written.push(s); return true; } } as unknown as NodeJS.WriteStream;
  const sp = new StagedProgress({ stream, now: () => t, itemUnit: 'questions', logEverySec: 1 });
  t = 2000; sp.update('base', 1, 4);
  t = 4000; sp.update('base', 2, 4);
  t = 8000; sp.update('base', 4, 4);
  t = 10000; sp.update('base + reasoning adapter', 1, 2);
  t = 12000; sp.update('base + reasoning adapter', 2, 2);
  sp.stop();
  assert.deepEqual(written, [
    'base 1/4 | 0.50 questions/s | elapsed 2s | ETA 6s\n',
    'base 2/4 | 0.50 questions/s | elapsed 4s | ETA 4s\n',
    'base 4/4 | 0.50 questions/s | elapsed 8s | ETA 0s\n',
    'base + reasoning adapter 1/2 | 0.50 questions/s | elapsed 2s | ETA 2s\n',
    'base + reasoning adapter 2/2 | 0.50 questions/s | elapsed 4s | ETA 0s\n',
  ]);
});

test('lateProgress (loading a checkpoint): nothing for work done within a second; a bar with rate and ETA after; each model afresh', () => {
  let t = 0;
  const written: string[] = [];
  const stream = { isTTY: false, write: (s: string) => { written.push(s); return true; } } as unknown as NodeJS.WriteStream;
  const lp = lateProgress('loading m', 'M weights', { now: () => t, stream });
  t = 100; lp.update(0, 5);
  t = 500; lp.update(1, 5);
  t = 1600; lp.update(2, 5);
  t = 3100; lp.update(5, 5);
  t = 7000; lp.update(0, 3); // a second model, after 4 s of session creation: its own clock
  t = 7300; lp.update(3, 3); // quick: no bar
  lp.stop();
  assert.deepEqual(written, ['loading m 5/5 | 1.67 M weights/s | elapsed 3s | ETA 0s\n']);
});

test('a TTY whose TERM is dumb gets plain progress lines and no control codes; NO_COLOR or TERM=dumb leave the thinking undimmed; a full disk under stdout is one line', () => {
  const env = { TERM: process.env.TERM, NO_COLOR: process.env.NO_COLOR };
  const written: string[] = [];
  const tty = { isTTY: true, columns: 80, write: (s: string) => { written.push(s); return true; } } as unknown as NodeJS.WriteStream;
  try {
    process.env.TERM = 'dumb';
    delete process.env.NO_COLOR;
    let t = 0;
    const sp = new StagedProgress({ stream: tty, now: () => t, itemUnit: 'questions', logEverySec: 1 });
    t = 2000; sp.update('base', 2, 2);
    sp.stop();
    assert.deepEqual(written, ['base 2/2 | 1.00 questions/s | elapsed 2s | ETA 0s\n']);
    assert.equal(dimmer(tty)('x'), 'x');
    process.env.TERM = 'xterm-256color';
    assert.equal(dimmer(tty)('x'), '\x1b[2mx\x1b[0m');
    assert.equal(dimmer({ isTTY: false } as NodeJS.WriteStream)('x'), 'x');
    process.env.NO_COLOR = '1';
    assert.equal(dimmer(tty)('x'), 'x');
  } finally {
    for (const [k, v] of Object.entries(env)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
  }
  if (fs.existsSync('/dev/full')) {
    const full = fs.openSync('/dev/full', 'w');
    try {
      const r = spawnSync(process.execPath, [BIN, 'generate', '--model', DEFAULT_DIR, '--prompt', 'hi', '--max-tokens', '3'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, stdio: ['ignore', full, 'pipe'] });
      assert.equal(r.status, 1);
      assert.equal(r.stderr, 'edgereason: cannot write the output: ENOSPC: no space left on device, write\n');
    } finally {
      fs.closeSync(full);
    }
  }
});

test('onnxruntime\'s telemetry is off unless ORT_DISABLE_TELEMETRY asks for it: nothing is queued in the home folder', (t) => {
  // onnxruntime sends nothing on a CI service it recognises by these variables (CI=true among them): drop them, or
  // neither run would queue
  const ciMarkers = ['CI', 'TF_BUILD', 'GITHUB_ACTIONS', 'GITLAB_CI', 'CIRCLECI', 'TRAVIS', 'JENKINS_URL', 'CODEBUILD_BUILD_ID', 'BUILDKITE', 'TEAMCITY_VERSION', 'APPVEYOR', 'BITBUCKET_BUILD_NUMBER'];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !['ORT_DISABLE_TELEMETRY', 'XDG_CACHE_HOME', ...ciMarkers].includes(k)));
  const run = (home: string, extra: Record<string, string>) => {
    const r = spawnSync(process.execPath, [BIN, 'generate', '--model', DEFAULT_DIR, '--prompt', 'Tom has 3 apples.', '--max-tokens', '4'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, env: { ...env, HOME: home, ...extra } });
    assert.equal(r.status, 0, r.stderr);
    return fs.existsSync(path.join(home, '.cache', 'Microsoft'));
  };
  if (!run(at('home-opt-in'), { ORT_DISABLE_TELEMETRY: '0' })) {
    // the control: without it the check below could not fail
    t.skip(`onnxruntime queues no telemetry on this machine even when opted in, so an empty home folder proves nothing here (variables that may tell it this is CI: ${Object.keys(env).filter((k) => /CI|BUILD|RUNNER/.test(k)).join(', ') || 'none seen'})`);
    return;
  }
  assert.equal(run(at('home-default'), {}), false, 'by default onnxruntime writes no telemetry queue');
});

test('a platform onnxruntime-node has no build for (an Intel Mac) is named in one line, before anything else', () => {
  const preload = at('intel-mac.mjs');
  fs.writeFileSync(preload, "Object.defineProperty(process, 'platform', { value: 'darwin' });\nObject.defineProperty(process, 'arch', { value: 'x64' });\n");
  const r = spawnSync(process.execPath, ['--import', pathToFileURL(preload).href, BIN, '--help'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.stderr, 'edgereason: onnxruntime-node, which runs edgereason\'s models, has no build for darwin/x64 (an Intel Mac; Macs with Apple silicon are supported): it ships builds for darwin/arm64, linux/arm64, linux/x64, win32/arm64, win32/x64\n');
  assert.equal(r.status, 1);
  assert.equal(r.stdout, '');
});

test('$EDGEREASON_THREADS other than a whole number from 1 to 1024 is named, not passed to onnxruntime or ignored', slow, () => {
  for (const bad of ['2.5', 'abc', '0', '1025']) {
    const r = spawnSync(process.execPath, [BIN, 'generate', '--model', DEFAULT_DIR, '--prompt', 'hi', '--max-tokens', '2'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, env: { ...process.env, EDGEREASON_THREADS: bad } });
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `edgereason: $EDGEREASON_THREADS must be a whole number of threads from 1 to 1024 (or unset: the available CPUs, at most 8), got "${bad}"\n`);
  }
  const ok = spawnSync(process.execPath, [BIN, 'generate', '--model', DEFAULT_DIR, '--prompt', 'hi', '--max-tokens', '2'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, env: { ...process.env, EDGEREASON_THREADS: '1' } });
  assert.equal(ok.status, 0, ok.stderr);
});

test('--prompt - and --question - read the text from the standard input', slow, () => {
  const run = (args: string[], input: string) => spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, input });
  const gen = (prompt: string, input = '') => run(['generate', '--model', DEFAULT_DIR, '--prompt', prompt, '--max-tokens', '12'], input);
  const piped = gen('-', 'Tom has 3 apples.\n'), given = gen('Tom has 3 apples.\n');
  assert.equal(piped.status, 0, piped.stderr);
  assert.equal(piped.stdout, given.stdout);
  assert.notEqual(piped.stdout, gen('Tom has 3 apples.').stdout); // the text as given, newline and all
  // With --chat it is a message, read as a question is: without echo's line end (its prompt had a token more).
  const chat = (prompt: string, input = '') => run(['generate', '--model', DEFAULT_DIR, '--chat', '--stats', '--prompt', prompt, '--max-tokens', '12'], input);
  const stats = (r: { stdout: string; stderr: string }) => [r.stdout, /^prompt \d+ tokens/m.exec(r.stderr)?.[0]];
  assert.deepEqual(stats(chat('-', 'Reverse the word sand.\n')), stats(chat('Reverse the word sand.')));
  const q = 'Zoe has 7 dollars. She sells 4 kites for 3 dollars each. How many dollars does Zoe have now?';
  const ask = (question: string, input = '') => run(['answer', '--model', DEFAULT_DIR, '--question', question, '--reasoning', 'on'], input);
  const asked = ask('-', q), echoed = ask('-', `${q}\n`);
  assert.equal(asked.status, 0, asked.stderr);
  assert.equal(asked.stdout, ask(q).stdout);
  // A question read as echo writes it is the question, without the line end (the prompt had a token more).
  const promptTokens = (r: { stderr: string }) => /tokens: prompt (\d+)/.exec(r.stderr)?.[1];
  assert.deepEqual([echoed.stdout, promptTokens(echoed)], [asked.stdout, promptTokens(asked)]);
  // So is one from a file a Windows editor saved: its byte-order mark and CRLF line end dropped (they were tokens).
  const windows = ask('-', `\uFEFF${q}\r\n`);
  assert.deepEqual([windows.stdout, promptTokens(windows)], [asked.stdout, promptTokens(asked)]);
  assert.ok(promptTokens(asked), asked.stderr);
  assert.equal(ask('-', '\n\n').stderr, 'edgereason: --question -: the standard input was empty\n');
  assert.equal(ask('-', ' \t\n').stderr, 'edgereason: --question -: the standard input held only blank space\n');
  assert.match(asked.stdout, /#### 19\n$/);
  const empty = ask('-', '');
  assert.equal(empty.status, 1);
  assert.equal(empty.stderr, 'edgereason: --question -: the standard input was empty\n');
  // generate's prompt may be empty (a BOS alone), but an empty standard input is said (it was silent).
  const nothing = gen('-', '');
  assert.equal(nothing.stderr.split('\n')[0], 'edgereason: note: --prompt -: the standard input was empty');
});

test('a bench run on a day that already has results writes <name>-<date>-2 beside them; the first run\'s files are kept', slow, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-bench-'));
  try {
    const run = () => spawnSync(process.execPath, ['--import', 'tsx', 'bench/matmul.ts', '--layers', '1', '--results-dir', dir], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    assert.equal(run().status, 0);
    const [first] = fs.readdirSync(dir).filter((f) => f.endsWith('.json')), stem = first.slice(0, -'.json'.length), before = fs.readFileSync(path.join(dir, first), 'utf8');
    assert.match(stem, /^matmul-\d{4}-\d{2}-\d{2}$/);
    assert.equal(run().status, 0);
    const second = fs.readdirSync(dir).filter((f) => f.endsWith('.json') && f !== first);
    // (A run that ends past midnight UTC names its own day: then the two never share a stem.)
    if (second[0]?.startsWith(stem)) assert.deepEqual(fs.readdirSync(dir).sort(), [`${stem}-2.json`, `${stem}-2.md`, `${stem}.json`, `${stem}.md`]);
    else assert.deepEqual(second.map((f) => /^matmul-\d{4}-\d{2}-\d{2}\.json$/.test(f)), [true]);
    assert.equal(fs.readFileSync(path.join(dir, first), 'utf8'), before);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('bench median: the middle value, of an even count the mean of the two middle ones (prefill\'s picked the upper one, reasoning\'s the lower)', async () => {
  const { median } = await import('../bench/write.ts');
  assert.deepEqual([median([3, 1, 2]), median([4, 1, 3, 2]), median([10, 20]), median([5])], [2, 2.5, 15, 5]);
  assert.ok(Number.isNaN(median([])));
});

test('bench scripts run directly refuse unknown flags and numbers not of their flag\'s kind before any work (no result file written); --help lists theirs; their own refusals are one line', slow, () => {
  const bench = (script: string, ...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', `bench/${script}.ts`, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  const before = fs.readdirSync(path.join(ROOT, 'bench/results')).join();
  for (const [args, re] of [[['--help'], /^usage: node --import tsx bench\/matmul\.ts \[--layers <an integer ≥ 1>\] \[--threads <an integer ≥ 1>\] \[--results-dir <value>\] \[--no-write\]$/m],
    [['--layer', '2'], /^bench\/matmul\.ts: Unknown option '--layer'/m], [['--layers', 'two'], /^bench\/matmul\.ts: --layers must be an integer ≥ 1, got "two"/m],
    [['--layers', '0'], /^bench\/matmul\.ts: --layers must be an integer ≥ 1, got "0"/m], [['--layers', '1.5'], /^bench\/matmul\.ts: --layers must be an integer ≥ 1, got "1\.5"/m],
    [['--no-write', '--results-dir', 'x'], /^bench\/matmul\.ts: --no-write and --results-dir contradict each other: give one$/m]] as const) { // the folder was ignored unsaid
    const r = bench('matmul', ...args);
    assert.equal(r.status, args[0] === '--help' ? 0 : 2, r.stderr);
    assert.match(args[0] === '--help' ? r.stdout : r.stderr, re);
  }
  for (const [args, message] of [[['--reps', '0'], 'bench/reasoning.ts: --reps must be an integer ≥ 1, got "0"'], [['--top-p', '1.5'], 'bench/reasoning.ts: --top-p must be a number from 0 to 1, got "1.5"'], [['--prompt-lengths', '64,-5'], 'bench/reasoning.ts: --prompt-lengths must be an integer ≥ 1, got "-5"']] as const) {
    const r = bench('reasoning', ...args, '--no-write');
    assert.deepEqual([r.status, r.stderr.split('\n')[0]], [2, message]);
  }
  // Checked before the long part, in one line: sample counts without 1, an adapter that is not there.
  const samples = bench('reasoning', '--samples', '2,4', '--no-write');
  assert.deepEqual([samples.status, samples.stderr], [1, 'bench: --samples must include 1 (wall times and accuracy gains are against one sample), got 2,4\n']);
  const rl = bench('budget', '--rl', path.join(ROOT, 'no-such-adapter'), '--no-write');
  assert.deepEqual([rl.status, rl.stderr], [1, `bench budget: --rl ${path.join(ROOT, 'no-such-adapter')} holds no adapter (no adapter_config.json)\n`]);
  const py = bench('train', '--python', '/bin/false', '--no-write');
  assert.deepEqual([py.status, py.stderr], [1, 'bench train: --python /bin/false cannot import torch (exit 1): install Debian\'s python3-torch, or pass --python <a Python with torch>\n']);
  const level = bench('decode', '--accuracy-level', '7', '--no-write'); // (the CLI's flag stops at 4; run directly it reached the models' preparation)
  assert.deepEqual([level.status, level.stderr], [1, 'bench decode: --accuracy-level must be 0, 1, 2, 3 or 4 (MatMulNBits\' levels), got 7\n']);
  const redraw = bench('reasoning', '--report', path.join(ROOT, 'no-such.json'), '--reps', '3', '--no-write'); // (they were ignored unsaid)
  assert.deepEqual([redraw.status, redraw.stderr], [1, 'bench reasoning: --report redraws a run\'s Markdown and plots, running nothing: --reps, --no-write would have no effect; drop them\n']);
  assert.equal(fs.readdirSync(path.join(ROOT, 'bench/results')).join(), before);
});

test('generate and answer interrupted by SIGINT mid-stream exit 130 saying so (they ended silently)', async () => {
  // Sampled at temperature 2, neither ends by itself before it is stopped: random tokens seldom draw the end token.
  const cases = [
    [['generate', '--prompt', 'Once upon a time', '--temperature', '2', '--seed', '1', '--max-tokens', '480'], 'stdout', 'generate: interrupted (the text ends where it was cut off)'],
    [['answer', '--question', 'What is 2 + 3?', '--reasoning', 'on', '--samples', '16', '--temperature', '2', '--seed', '1', '--max-tokens', '400', '--json'], 'stderr', 'answer: interrupted before the answer was complete: no JSON was written'],
  ] as const;
  for (const [args, streams, message] of cases) {
    const child = spawn(process.execPath, [BIN, ...args, '--model', DEFAULT_DIR], { cwd: ROOT });
    let stdout = '', stderr = '', sent = false;
    const started = () => { if (!sent && (streams === 'stdout' ? stdout : /^<think>\n./m.test(stderr))) { sent = true; child.kill('SIGINT'); } };
    child.stdout.on('data', (d) => { stdout += d; started(); });
    child.stderr.on('data', (d) => { stderr += d; started(); });
    const done = await new Promise<[number | null, string | null]>((resolve) => child.on('exit', (code, signal) => resolve([code, signal])));
    assert.deepEqual([done, stderr.trimEnd().split('\n').at(-1)], [[130, null], message], stderr);
    if (args[0] === 'answer') assert.equal(stdout, '');
  }
});

test('train-router interrupted by SIGINT while the runtime worker decodes exits 130 with its message (it aborted with SIGABRT)', async () => {
  // A short first stage, whose last progress line says the run is under way; the second is long.
  const child = spawn(process.execPath, [BIN, 'train-router', '--model', DEFAULT_DIR, '--adapter', ADAPTER_DIR, '--out', at('int-router.json'), '--limit', '20', '--val', '20000', '--max-tokens', '8'], { cwd: ROOT });
  let stderr = '';
  const started = new Promise<void>((resolve) => child.stderr.on('data', (d) => { stderr += d; if (/base answers \(train\) 20\/20/.test(stderr)) resolve(); }));
  const done = new Promise<[number | null, string | null]>((resolve) => child.on('exit', (code, signal) => resolve([code, signal])));
  await started;
  child.kill('SIGINT');
  assert.deepEqual(await done, [130, null], stderr);
  // (At once, before the second stage's first answer is in, the message names the first stage's end.)
  assert.match(stderr, /train-router: interrupted during base answers (\(train\) at 20\/20|\(val\) at \d+\/20000); nothing was written to /);
  assert.doesNotMatch(stderr, /terminate called|Napi/);
  assert.ok(!fs.existsSync(at('int-router.json')));
});

test('train-router interrupted by SIGINT while it fits the probe exits 130 saying so, and writes nothing (the fit held the signal until it ended, then wrote the router)', async () => {
  const child = spawn(process.execPath, [BIN, 'train-router', '--model', DEFAULT_DIR, '--rule', 'accuracy', '--out', at('fit-router.json'), '--limit', '20', '--val', '5', '--max-tokens', '8', '--steps', '100000000'], { cwd: ROOT });
  let stderr = '';
  const started = new Promise<void>((resolve) => child.stderr.on('data', (d) => { stderr += d; if (/base answers \(val\) 5\/5/.test(stderr)) resolve(); }));
  const done = new Promise<[number | null, string | null]>((resolve) => child.on('exit', (code, signal) => resolve([code, signal])));
  await started;
  await new Promise((resolve) => setTimeout(resolve, 500)); // into the fit, which reports every 50 ms
  child.kill('SIGINT');
  assert.deepEqual(await done, [130, null], stderr);
  assert.match(stderr, /train-router: interrupted during fitting the probe at \d+\/100000000; nothing was written to /);
  assert.ok(!fs.existsSync(at('fit-router.json')));
});

test('train-router checks --out again before it writes: a file that came there while it trained is kept, not replaced', slow, async () => {
  const out = at('late-router.json');
  const child = spawn(process.execPath, [BIN, 'train-router', '--model', DEFAULT_DIR, '--rule', 'accuracy', '--out', out, '--limit', '20', '--val', '300', '--max-tokens', '8', '--steps', '20'], { cwd: ROOT });
  let stderr = '';
  const started = new Promise<void>((resolve) => child.stderr.on('data', (d) => { stderr += d; if (/base answers \(train\) 20\/20/.test(stderr)) resolve(); }));
  const done = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await started;
  fs.writeFileSync(out, '{"mine": true}');
  assert.equal(await done, 1, stderr);
  assert.match(stderr, new RegExp(`edgereason: --out ${out} already exists \\(a router JSON from an earlier run\\?\\); pass --overwrite to replace it`));
  assert.equal(fs.readFileSync(out, 'utf8'), '{"mine": true}');
});

test('train-sft interrupted by SIGINT saves its last completed step as the checkpoint, exits 130, and --resume continues from it', async () => {
  const out = at('int');
  const args = ['train-sft', '--model', model.dir, '--data', data, '--out', out, '--batch-tokens', '16', '--epochs', '400', '--checkpoint-every', '50'];
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const done = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const ckpt = path.join(out, 'checkpoint', 'checkpoint.json');
  for (let i = 0; i < 600 && !fs.existsSync(ckpt); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(fs.existsSync(ckpt), `no checkpoint appeared: ${stderr}`);
  await new Promise((r) => setTimeout(r, 1000)); // steps past the periodic checkpoint at 50
  child.kill('SIGINT');
  assert.equal(await done, 130, stderr);
  const m = stderr.match(/train-sft: interrupted at step (\d+) of \d+; the checkpoint \(.*\) is at step (\d+): rerun the same command with --resume/);
  assert.ok(m, stderr);
  const saved = JSON.parse(fs.readFileSync(ckpt, 'utf8')).step;
  assert.deepEqual([Number(m[1]), Number(m[2])], [saved, saved]);
  assert.ok(saved > 50, `interrupted at step ${saved}: the test needs steps past the periodic checkpoint`);
  const r = cli([...args, '--resume', '--max-steps', String(saved + 1)]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`trained ${saved + 1} steps \\(stopped at step ${saved + 1} of \\d+: rerun with --resume`));
  assert.match(r.stderr, new RegExp(`^train-sft: resuming from the checkpoint's step ${saved} of \\d+ \\(${path.dirname(ckpt)}\\)$`, 'm'));
  // A data position the run cannot have reached (an edited file) is refused, not skipped over.
  fs.writeFileSync(ckpt, JSON.stringify({ ...JSON.parse(fs.readFileSync(ckpt, 'utf8')), position: 999 }));
  const e = cli([...args, '--resume']);
  assert.equal(e.status, 1);
  assert.match(e.stderr, new RegExp(`checkpoint: ${ckpt}: position 999 of epoch \\d+ lies outside this run \\(400 epochs, \\d+ batches in that one\\) \\(the file was edited or damaged, or --data is not the run's\\)`));
  // So is a step past the run's end (it wrote the outputs, saying it had trained 1000000000 steps).
  fs.writeFileSync(ckpt, JSON.stringify({ ...JSON.parse(fs.readFileSync(ckpt, 'utf8')), position: 0, step: 1e9, adamStep: 1e9 }));
  assert.match(cli([...args, '--resume']).stderr, new RegExp(`^edgereason: checkpoint: ${ckpt}: step 1000000000 lies past this run's \\d+ steps \\(the file was edited or damaged, or --data is not the run's\\)$`, 'm'));
});

test('train-sft interrupted before its first step (tokenizing its data) exits 130 at once saying nothing was saved, and leaves no lock or folder behind (the default action left both)', async () => {
  const big = at('big.jsonl'), out = at('early', 'adapter');
  fs.writeFileSync(big, Array.from({ length: 40000 }, (_, i) => JSON.stringify({ prompt: `question number ${i} about things`, completion: ` answer ${i % 7}` })).join('\n') + '\n');
  const child = spawn(process.execPath, [BIN, 'train-sft', '--model', model.dir, '--data', big, '--out', out], { cwd: ROOT });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const done = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  // Polled without a pause, so the signal comes as the lock appears: when the lock was taken before Node listened
  // for SIGINT, its default action could kill the run there, leaving the lock behind (a script polling so killed 28
  // of 31 runs; this test, once in the suite).
  const lock = path.join(out, '.edgereason.lock'), until = Date.now() + 120_000;
  while (!fs.existsSync(lock) && Date.now() < until) { /* spin */ }
  child.kill('SIGINT');
  assert.equal(await done, 130, stderr);
  // Said by the lock's handler while the data is tokenized: the tokenizing lets the signal in every 50 ms or so (it
  // held it until all 40,000 lines were done, then said the data's size and began the training, whose handler answered).
  assert.equal(stderr.trim().split('\n').at(-1), 'train-sft: interrupted before the first training step: nothing was saved by this run');
  assert.doesNotMatch(stderr, /training data:/);
  assert.deepEqual([fs.existsSync(out), fs.existsSync(at('early'))], [false, false]);
});

test('train-router, train-verifier and eval refuse a folder as --out before loading the model; eval --out is the JSON path', slow, async () => {
  const dir = at('outdir');
  fs.mkdirSync(dir);
  for (const [cmd, what] of [['train-router', 'router JSON'], ['train-verifier', 'verifier JSON'], ['eval', 'JSON report']]) {
    const r = cli([cmd, '--model', at('no-such-model'), '--adapter', at('no-such-adapter'), '--out', dir]);
    assert.match(r.stderr, new RegExp(`--out ${dir} is a folder; expected a file \\(the ${what}\\), e\\.g\\. ${dir}/`), cmd);
  }
  assert.deepEqual(fs.readdirSync(dir), [], 'no temp file left');
  // So is a folder that does not exist yet, named with a trailing slash (the write failed after all the work).
  for (const [cmd, what] of [['train-router', 'router JSON'], ['train-verifier', 'verifier JSON']]) {
    const r = cli([cmd, '--model', at('no-such-model'), '--adapter', at('no-such-adapter'), '--out', `${at('newdir')}/`]);
    assert.match(r.stderr, new RegExp(`^edgereason: --out ${at('newdir')}/ names a folder; expected a file \\(the ${what}\\), e\\.g\\. ${at('newdir')}/${cmd.slice(6)}\\.json$`, 'm'), cmd);
  }
  // A router or verifier already there is a trained artefact: replaced only with --overwrite.
  for (const [cmd, what] of [['train-router', 'router JSON'], ['train-verifier', 'verifier JSON']]) {
    const file = at(`${cmd}.json`);
    fs.writeFileSync(file, '{"mine": true}');
    const r = cli([cmd, '--model', at('no-such-model'), '--adapter', at('no-such-adapter'), '--out', file]);
    assert.match(r.stderr, new RegExp(`--out ${file} already exists \\(a ${what} from an earlier run\\?\\); pass --overwrite to replace it`), cmd);
    assert.equal(fs.readFileSync(file, 'utf8'), '{"mine": true}');
    assert.match(cli([cmd, '--model', at('no-such-model'), '--adapter', at('no-such-adapter'), '--out', file, '--overwrite']).stderr, /no-such-model does not exist/, `${cmd} --overwrite gets past the check`);
  }
  assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.startsWith('outdir')), ['outdir'], 'no outdir.json beside it');
  // Not even --overwrite writes over a file of the run's own --model or --adapter (the model's weights became a
  // router JSON); a router or verifier JSON in the model's folder is replaced as asked.
  const fakeModel = at('fake-model'), fakeAdapter = path.join(fakeModel, 'adapter');
  fs.mkdirSync(fakeAdapter, { recursive: true });
  for (const f of [path.join(fakeModel, 'model.safetensors'), path.join(fakeAdapter, 'adapter_model.safetensors')]) fs.writeFileSync(f, 'weights');
  for (const [cmd, what] of [['train-router', 'router JSON'], ['train-verifier', 'verifier JSON']]) {
    for (const [file, flag, input] of [[path.join(fakeModel, 'model.safetensors'), '--model', fakeModel], [path.join(fakeAdapter, 'adapter_model.safetensors'), '--adapter', fakeAdapter]]) {
      const r = cli([cmd, '--model', fakeModel, '--adapter', fakeAdapter, '--out', file, '--overwrite']);
      assert.equal(r.stderr, `edgereason: --out ${file} is a file of the ${flag} ${input}, not a ${what}: writing the ${what} there would destroy it; choose another --out\n`, cmd);
      assert.equal(fs.readFileSync(file, 'utf8'), 'weights');
    }
    const own = path.join(fakeModel, `${cmd.slice(6)}.json`);
    fs.writeFileSync(own, JSON.stringify({ format: `edgereason-${cmd.slice(6)}` }));
    assert.match(cli([cmd, '--model', fakeModel, '--adapter', fakeAdapter, '--out', own, '--overwrite']).stderr, /fake-model.*config\.json/, `${cmd} --overwrite gets past the check`);
  }
  // eval alike (its report replaced the model's config.json, the adapter's, the router it read), and the files it writes beside the report too.
  const fakeConfig = path.join(fakeModel, 'config.json'), notes = path.join(fakeModel, 'notes.md'), mine = at('my-router.json');
  for (const [f, text] of [[fakeConfig, '{}'], [path.join(fakeAdapter, 'adapter_config.json'), '{}'], [notes, '# mine'], [mine, '{}']]) fs.writeFileSync(f, text);
  const evalOver = (...flags: string[]) => cli(['eval', '--model', fakeModel, '--adapter', fakeAdapter, '--task', 'synthetic', '--overwrite', ...flags]).stderr;
  const refusal = (named: string, is: string) => `edgereason: --out ${named} is ${is}: writing the JSON report there would destroy it; choose another --out\n`;
  assert.equal(evalOver('--out', fakeConfig), refusal(fakeConfig, `a file of the --model ${fakeModel}, not a JSON report`));
  assert.equal(evalOver('--out', path.join(fakeAdapter, 'adapter_config.json')), refusal(path.join(fakeAdapter, 'adapter_config.json'), `a file of the --model ${fakeModel}, not a JSON report`));
  assert.equal(evalOver('--out', path.join(fakeModel, 'notes.json')), refusal(`${path.join(fakeModel, 'notes.json')}: ${notes}, written beside it,`, `a file of the --model ${fakeModel}, not a JSON report`));
  assert.equal(evalOver('--router', mine, '--out', mine), refusal(mine, `the --router ${mine}`));
  // ... nor over the run's own --task file, eval's or a trainer's (the questions became the report, or the router)
  const questions = at('tq.json');
  fs.writeFileSync(questions, '{"prompt":"What is 2+3?","answer":"5"}\n');
  assert.equal(cli(['eval', '--model', fakeModel, '--task', questions, '--out', questions, '--overwrite']).stderr, refusal(questions, `the --task ${questions}`));
  for (const [cmd, what] of [['train-router', 'router JSON'], ['train-verifier', 'verifier JSON']]) {
    assert.equal(cli([cmd, '--model', fakeModel, '--adapter', fakeAdapter, '--task', questions, '--out', questions, '--overwrite']).stderr, `edgereason: --out ${questions} is the --task ${questions}: writing the ${what} there would destroy it; choose another --out\n`, cmd);
  }
  assert.equal(fs.readFileSync(questions, 'utf8'), '{"prompt":"What is 2+3?","answer":"5"}\n');
  assert.deepEqual([fakeConfig, notes, mine].map((f) => fs.readFileSync(f, 'utf8')), ['{}', '# mine', '{}']);
  assert.match(evalOver('--out', path.join(fakeModel, 'report.json')), /config\.json/, 'a new report in the model folder gets past the check');
  // A Hugging Face cache snapshot's files are links into blobs/: one is still a file of the model's folder (its link was followed out of it).
  const repo = at('hub', 'models--o--m'), snapshot = path.join(repo, 'snapshots', 'a'.repeat(40)), blob = path.join(repo, 'blobs', 'b'.repeat(40));
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  fs.mkdirSync(snapshot, { recursive: true });
  fs.writeFileSync(blob, '{}');
  fs.symlinkSync(path.relative(snapshot, blob), path.join(snapshot, 'config.json'));
  assert.throws(() => checkOutFile(path.join(snapshot, 'config.json'), { what: 'JSON report', overwrite: true, inputs: { '--model': snapshot } }),
    { message: `--out ${path.join(snapshot, 'config.json')} is a file of the --model ${snapshot}, not a JSON report: writing the JSON report there would destroy it; choose another --out` });
  // The report: JSON exactly at --out, the table and plot named after it.
  const report: EvalReport = { options: { model: at('no-such-model'), task: 'synthetic', split: 'test', limit: 200, maxTokens: 512 }, summary: { all: { n: 1, accuracy: 1, cut: 0, meanTokens: 2, meanThinkingTokens: 0, ttftP50: 1, ttftP90: 1, latencyP50: 2, latencyP90: 2, tokensPerSec: 1 } }, cases: [] };
  await writeReport(at('rep', 'x'), [{ name: 'base', report }]);
  await writeReport(at('rep', 'y.json'), [{ name: 'base', report }]);
  assert.deepEqual(fs.readdirSync(at('rep')).sort(), ['x', 'x-accuracy.svg', 'x.md', 'y-accuracy.svg', 'y.json', 'y.md']);
  // The accuracy axis spans 0–100 %, even when every accuracy is 0 (it collapsed to one tick).
  await writeReport(at('zero', 'z.json'), [{ name: 'base', report: { ...report, summary: { all: { ...report.summary.all, accuracy: 0 } } } }]);
  const ticks = [...fs.readFileSync(at('zero', 'z-accuracy.svg'), 'utf8').matchAll(/<text[^>]*>(\d+)<\/text>/g)].map((m) => Number(m[1]));
  assert.ok(ticks.includes(0) && ticks.includes(100), `y ticks ${ticks}`);
  // It names what was evaluated: the task, the model and the number of questions (the title alone named nothing).
  assert.ok(fs.readFileSync(at('zero', 'z-accuracy.svg'), 'utf8').includes(`>synthetic (test split) · ${at('no-such-model')} · 0 questions</text>`));
  // One shape whatever was run: each run under its name, one run as two.
  assert.deepEqual(JSON.parse(fs.readFileSync(at('rep', 'x'), 'utf8')), { base: report });
  await writeReport(at('rep', 'two.json'), [{ name: 'base', report }, { name: 'base + reasoning adapter', report }]);
  assert.deepEqual(Object.keys(JSON.parse(fs.readFileSync(at('rep', 'two.json'), 'utf8'))), ['base', 'base + reasoning adapter']);
  assert.match(cli(['eval', '--help']).stdout, /results\.md\)[\s\S]*results-accuracy\.svg/);
  // A file of the user's at --out, or beside it, is refused untouched; an earlier report is refreshed; --overwrite replaces.
  const evalOut = (out: string, ...flags: string[]) => cli(['eval', '--model', at('no-such-model'), '--out', out, ...flags]).stderr;
  fs.writeFileSync(at('notes.json'), 'my notes');
  assert.match(evalOut(at('notes.json')), new RegExp(`--out ${at('notes.json')} already exists \\(and is not a JSON report edgereason wrote\\); pass --overwrite to replace it`));
  assert.match(evalOut(at('new.md')), new RegExp(`--out ${at('new.md')}: the report is JSON, so name it \\*\\.json`));
  fs.writeFileSync(at('notes.txt'), 'my notes'); // an existing file that is not JSON: named as such first
  assert.match(evalOut(at('notes.txt')), new RegExp(`--out ${at('notes.txt')}: the report is JSON, so name it \\*\\.json`));
  // An empty dataset is refused before any model loads.
  fs.mkdirSync(at('shared-empty', 'data', 'asdiv'), { recursive: true });
  fs.writeFileSync(at('shared-empty', 'data', 'asdiv', 'test.jsonl'), '');
  const empty = spawnSync(process.execPath, [BIN, 'eval', '--model', at('no-such-model'), '--task', 'asdiv', '--out', at('asdiv.json')], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, EDGEREASON_SHARED: at('shared-empty') } });
  assert.match(empty.stderr, /^edgereason: eval: asdiv has no questions \(asdiv\/test\.jsonl is empty\): nothing to evaluate$/m);
  fs.writeFileSync(at('mine.md'), 'my table');
  assert.match(evalOut(at('mine.json')), new RegExp(`--out ${at('mine.json')}: ${at('mine.md')}, written beside it, already exists; pass --overwrite`));
  assert.deepEqual([fs.readFileSync(at('notes.json'), 'utf8'), fs.readFileSync(at('mine.md'), 'utf8')], ['my notes', 'my table']);
  fs.writeFileSync(at('rep', 'old.json'), JSON.stringify(report)); // one run's report alone, as eval wrote it before
  for (const [out, flags] of [[at('rep', 'y.json'), []], [at('rep', 'old.json'), []], [at('mine.json'), ['--overwrite']]] as const) assert.match(evalOut(out, ...flags), /no-such-model does not exist/, out);
  assert.equal(evalOut(at('b.json'), '--budget', '96'), 'edgereason: eval: --budget is the control line a budget-trained adapter reads: it needs --adapter\n');
  // ... but the report of another evaluation is not replaced unless told.
  assert.match(evalOut(at('rep', 'y.json'), '--task', 'gsm8k', '--max-tokens', '64'), new RegExp(`^edgereason: --out ${at('rep', 'y.json')} holds the report of another evaluation \\(--task: "synthetic" there, "gsm8k" here; --max-tokens: 512 there, 64 here; --split: "test" there, none here\\); pass --overwrite to replace it, or choose another --out\n$`));
  assert.match(evalOut(at('rep', 'y.json'), '--task', 'gsm8k', '--overwrite'), /no-such-model does not exist/);
  // A RoPE scaling is part of what was evaluated: the same one refreshes its report, another one (or none) is another evaluation.
  await writeReport(at('rep', 'yarn.json'), [{ name: 'base', report: { ...report, options: { ...report.options, ropeScaling: 'yarn ×4' } } }]);
  assert.match(evalOut(at('rep', 'yarn.json'), '--rope-scaling', 'yarn', '--rope-scale', '4'), /no-such-model does not exist/);
  assert.match(evalOut(at('rep', 'yarn.json')), /holds the report of another evaluation \(--rope-scaling: "yarn ×4" there, none here\)/);
  assert.match(evalOut(at('rep', 'y.json'), '--rope-scaling', 'yarn', '--rope-scale', '4'), /holds the report of another evaluation \(--rope-scaling: none there, "yarn ×4" here\)/);
  // ... recorded as applied to the model: over its default original context spelt out or not, the same; none on a plain model, nothing.
  const applied = { ...report, options: { ...report.options, model: DEFAULT_DIR, ropeScaling: 'yarn ×4 over 1024 positions' } };
  await writeReport(at('rep', 'applied.json'), [{ name: 'base', report: applied }]);
  const evalDefault = (...flags: string[]) => cli(['eval', '--model', DEFAULT_DIR, '--out', at('rep', 'applied.json'), '--max-tokens', '64', ...flags]).stderr;
  for (const flags of [['--rope-scaling', 'yarn', '--rope-scale', '4'], ['--rope-scaling', 'yarn', '--rope-scale', '4', '--yarn-orig-ctx', '1024']]) {
    assert.match(evalDefault(...flags), /holds the report of another evaluation \(--max-tokens: 512 there, 64 here\)/, flags.join(' '));
  }
  assert.match(evalDefault('--rope-scaling', 'none'), /holds the report of another evaluation \(--max-tokens: 512 there, 64 here; --rope-scaling: "yarn ×4 over 1024 positions" there, none here\)/);
  // Beside an earlier report, a file of the user's under the table's or the plot's name is refused too.
  for (const f of ['y.md', 'y-accuracy.svg']) {
    const keep = fs.readFileSync(at('rep', f));
    fs.writeFileSync(at('rep', f), f.endsWith('.md') ? `${keep}\nmy notes\n` : '<svg><text>mine</text></svg>');
    assert.match(evalOut(at('rep', 'y.json')), new RegExp(`--out ${at('rep', 'y.json')}: ${at('rep', f)}, written beside it, already exists; pass --overwrite`), f);
    fs.writeFileSync(at('rep', f), keep);
  }
  // --split is the synthetic task's: a dataset's is its test file, which --split test may say (it was refused)
  assert.match(evalOut(at('mine.json'), '--task', 'gsm8k', '--split', 'val', '--overwrite'), /--split chooses a split of --task synthetic; gsm8k is read from gsm8k\/test\.jsonl/);
  assert.equal(evalOut(at('mine.json'), '--task', 'gsm8k', '--split', 'test', '--overwrite', '--limit', '1', '--max-tokens', '4'),
    `eval: note: gsm8k: its first 1 of 1319 questions (--limit 1; --limit 1319 evaluates them all)\nedgereason: model: ${at('no-such-model')} does not exist\n`);
});

test('eval on a dataset says what share of it --limit takes and how many answers --max-tokens cut off', slow, () => {
  const r = cli(['eval', '--model', at('m'), '--task', 'gsm8k', '--limit', '2', '--max-tokens', '3', '--out', at('gsm.json')]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /^eval: note: gsm8k: its first 2 of 1319 questions \(--limit 2; --limit 1319 evaluates them all\)$/m);
  assert.match(r.stderr, /^eval: note: base: 2 of 2 answers were cut off at --max-tokens 3 and graded as they stand \(the table's "cut off" column\); a larger --max-tokens lets them finish$/m);
  const [run] = Object.values(JSON.parse(fs.readFileSync(at('gsm.json'), 'utf8'))) as { options: Record<string, unknown> }[];
  assert.deepEqual([run.options.questions, run.options.datasetQuestions, run.options.maxTokens], [2, 1319, 3]);
  // stdout holds the table alone (eval > table.md), as the .md beside the report has it; what was written is said on stderr.
  assert.ok(fs.readFileSync(at('gsm.md'), 'utf8').includes(r.stdout.trim()) && r.stdout.startsWith('| run |'), r.stdout);
  assert.match(r.stderr, new RegExp(`^wrote ${at('gsm.json')}, ${at('gsm.md')} and ${at('gsm-accuracy.svg')}$`, 'm'));
  // Without --model, the embedded one (as generate, answer, chat and serve); a verifier vote takes the verifier beside it.
  const own = cli(['eval', '--adapter', ADAPTER_DIR, '--samples', '2', '--vote', 'verifier', '--limit', '1', '--max-tokens', '16', '--out', at('own.json')]);
  assert.equal(own.status, 0, own.stderr);
  assert.match(own.stderr, new RegExp(`^verifier: ${path.join(DEFAULT_DIR, 'verifier.json')} \\(the default\\)$`, 'm'));
  assert.equal(JSON.parse(fs.readFileSync(at('own.json'), 'utf8'))['base + reasoning adapter, 2 samples (verifier)'].options.verifier, path.join(DEFAULT_DIR, 'verifier.json'));
  // Without --max-tokens a dataset gets its own default (GSM8K's 1024), recorded as the evaluation's.
  const again = cli(['eval', '--model', at('m'), '--task', 'gsm8k', '--limit', '2', '--out', at('gsm.json')]);
  assert.match(again.stderr, /holds the report of another evaluation \(--max-tokens: 3 there, 1024 here\)/);
  // A question that leaves 4 tokens of the embedded model's 1024 is cut off by the context, which --max-tokens cannot help.
  fs.mkdirSync(at('shared-long', 'data', 'gsm8k'), { recursive: true });
  fs.writeFileSync(at('shared-long', 'data', 'gsm8k', 'test.jsonl'), JSON.stringify({ question: Array(158).fill('Jack has 3 apples.').join(' '), answer: '#### 3' }) + '\n');
  const long = cli(['eval', '--model', DEFAULT_DIR, '--task', 'gsm8k', '--limit', '1', '--max-tokens', '64', '--out', at('long.json')], { ...process.env, EDGEREASON_SHARED: at('shared-long') });
  assert.equal(long.status, 0, long.stderr);
  assert.doesNotMatch(long.stderr, /does not fit in the model's context/);
  // A default limit the model's context cannot hold (GSM8K's 1024 on the embedded model's 1024) is said before the run (only the cut-off note came, after it).
  const byDefault = cli(['eval', '--model', DEFAULT_DIR, '--task', 'gsm8k', '--limit', '1', '--out', at('long-default.json')], { ...process.env, EDGEREASON_SHARED: at('shared-long') });
  assert.match(byDefault.stderr, /^edgereason: note: --max-tokens 1024 \(gsm8k's default\) does not fit in the model's context of 1024 tokens beside a question: an answer stops at the context's end first$/m);
  assert.match(long.stderr, /^eval: note: base: 1 of 1 answers were cut off by the end of the model's context \(1024 tokens\) and graded as they stand \(the table's "cut off" column\)$/m);
});

test('train-router: the savings rule (the default) needs --adapter; unused flags are named; train-verifier refuses greedy candidates', slow, () => {
  let r = cli(['train-router', '--model', at('m'), '--out', at('r.json')]);
  assert.match(r.stderr, /the savings rule \(the default\) needs --adapter <reasoning adapter>.*or --rule accuracy/);
  r = cli(['train-router', '--model', at('m'), '--rule', 'accuracy', '--max-loss', '0.02', '--reasoning-max-tokens', '9', '--out', at('outdir')]);
  assert.deepEqual([r.status, r.stderr], [1, 'edgereason: train-router: --max-loss, --reasoning-max-tokens would have no effect: the accuracy rule generates no reasoning answers (they serve the savings rule); drop them\n']);
  r = cli(['train-router', '--model', at('m'), '--rule', 'accuracy', '--no-gate', '--gate-tokens', '4', '--out', at('outdir')]);
  assert.deepEqual([r.status, r.stderr], [1, 'edgereason: train-router: --gate-tokens would have no effect: --no-gate searches no gate; drop it\n']);
  assert.match(cli(['train-router', '--model', at('m'), '--rule', 'accuracy', '--task', 'gsm8k', '--seed', '5', '--out', at('outdir')]).stderr, /^edgereason: train-router: --seed would have no effect: the gsm8k items are the first of its train file; drop it$/m);
  // A random model answers no gsm8k question right: every label says "reasoning needed", and the advice is easier questions.
  r = cli(['train-router', '--model', at('m'), '--rule', 'accuracy', '--task', 'gsm8k', '--limit', '2', '--val', '1', '--max-tokens', '4', '--steps', '1', '--out', at('same-label.json')]);
  assert.match(r.stderr, /warning: every training question has the same label \(reasoning needed: the base answered none of them right directly\): the probe cannot learn to route; use more questions, with easier ones among them/);
  assert.match(r.stderr, /train-router: note: 3 of 3 direct answers were cut off at --max-tokens 4 and graded as they stand \(most as wrong: labelled as needing reasoning\); a larger --max-tokens lets them finish/);
  assert.match(cli(['train-verifier', '--model', at('m'), '--adapter', at('a'), '--temperature', '0', '--out', at('v.json')]).stderr, /train-verifier: --temperature 0 samples greedily, so the 8 candidates of a question would all be the same/);
  assert.match(cli(['train-verifier', '--model', at('m'), '--adapter', at('a'), '--top-p', '0', '--samples', '3', '--out', at('v.json')]).stderr, /train-verifier: --top-p 0 samples greedily, so the 3 candidates of a question would all be the same/);
  // Synthetic items are made before the model loads: as many as eval takes at most.
  assert.equal(cli(['train-router', '--model', at('m'), '--rule', 'accuracy', '--limit', '100000', '--out', at('r.json')]).stderr, 'edgereason: train-router: --limit 100000 and --val 100 make 100100 synthetic questions, more than a training takes (at most 100000); ask for fewer\n');
  assert.match(cli(['train-router', '--help']).stdout, /required\s+by\s+the\s+savings\s+rule\s+\(the\s+default\)/);
  assert.match(cli(['train-router', '--model', at('m'), '--native-thinking', '--adapter', at('a'), '--out', at('r.json')]).stderr, /train-router: --native-thinking routes between the model's own thinking and direct answers: leave --adapter out/);
});

test('train-rl: --out must not be its --adapter; a run stopped by --steps resumes with more; the adapter records the base model', { skip: SLOW || (!fs.existsSync(path.join(ADAPTER_DIR, 'adapter_model.safetensors')) && 'models/default not trained yet') }, async () => {
  const sftCopy = at('sft-adapter');
  fs.cpSync(ADAPTER_DIR, sftCopy, { recursive: true });
  const before = snapshot(sftCopy);
  const rl = (out: string, ...extra: string[]) => cli(['train-rl', '--model', DEFAULT_DIR, '--adapter', sftCopy, '--out', out, '--group', '2', '--prompts-per-step', '1', '--budgets', '8', '--max-tokens', '12', ...extra]);
  let r = rl(sftCopy, '--steps', '1');
  assert.match(r.stderr, /--out .*sft-adapter is the --adapter folder: the adapter would be written over its own input/);
  r = rl(sftCopy, '--steps', '1', '--overwrite');
  assert.match(r.stderr, /is the --adapter folder/, '--overwrite does not make writing over the input right');
  assert.deepEqual(snapshot(sftCopy), before);
  const out = at('rl');
  r = rl(out, '--steps', '1');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'checkpoint', 'checkpoint.json'), 'utf8')).step, 1, 'the last step is saved (checkpoint every 10)');
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8')).base_model_name_or_path, DEFAULT_DIR);
  assert.match(rl(out, '--steps', '2').stderr, /already holds a model or adapter/);
  r = rl(out, '--steps', '2', '--resume');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`^train-rl: resuming from the checkpoint's step 1 of 2 \\(${path.join(out, 'checkpoint')}\\)$`, 'm'));
  const h = JSON.parse(fs.readFileSync(path.join(out, 'rl_log.json'), 'utf8')).history;
  assert.equal(h.length, 2);
  assert.ok(r.stdout.startsWith(`GRPO 2 steps: reward ${h[0].reward.toFixed(3)} → ${h[1].reward.toFixed(3)}, accuracy ${(100 * h[0].accuracy).toFixed(1)} → ${(100 * h[1].accuracy).toFixed(1)} %, thinking ${h[0].thinking.toFixed(0)} → ${h[1].thinking.toFixed(0)} tokens (the first and last steps' rollouts, on training prompts); adapter in `), r.stdout);
  // --resume from another starting adapter (the same shape): refused.
  const rlFrom = (adapter: string, ...extra: string[]) => cli(['train-rl', '--model', DEFAULT_DIR, '--adapter', adapter, '--out', out, '--group', '2', '--prompts-per-step', '1', '--budgets', '8', '--max-tokens', '12', ...extra]);
  assert.match(rlFrom(path.join(DEFAULT_DIR, 'reasoning-adapter-rl'), '--steps', '3', '--resume').stderr, /resume: .* was trained with the --adapter \(a hash of its weights\) [0-9a-f]{12}, this run has the --adapter \(a hash of its weights\) [0-9a-f]{12}/);
  // Rollouts that cannot answer within the budget are refused before any work; a run whose every group tied (near-greedy
  // rollouts are all the same) says that it left the adapter as it was.
  assert.match(rl(at('rl-room'), '--steps', '1', '--max-tokens', '9').stderr,
    /train-rl: --max-tokens 9 leaves no room to answer within the budget 8: thinking to it, closing the thinking \(1 token\) and an answer of at least one token take 10; raise --max-tokens \(default twice the largest budget\) or lower the budgets/);
  assert.ok(!fs.existsSync(at('rl-room')));
  r = rl(at('rl-tied'), '--steps', '1', '--temperature', '0.0001', '--beta', '0.04'); // a KL term alone moves nothing either
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /train-rl: warning: no step changed the adapter: in every group all 2 completions got the same reward \(\d+\.\d % of them correct\), so there was nothing to learn from, and .*rl-tied holds the --adapter's weights/);
  // Its advice fits its rollouts: all right wants harder prompts (it said easier ones), all wrong easier ones.
  const right = Number(/\((\d+\.\d) % of them correct\)/.exec(r.stderr)![1]);
  assert.match(r.stderr, new RegExp(`'s weights; ${{ 100: 'use prompts the adapter gets wrong some of the time \\(harder ones\\)', 0: 'use prompts the adapter answers right some of the time \\(easier ones' }[right] ?? 'use a larger --group or a higher --temperature'}`));
  const [tied, start] = [at('rl-tied'), sftCopy].map((d) => openSafetensors(path.join(d, 'adapter_model.safetensors')));
  assert.deepEqual(tied.names.sort(), start.names.sort());
  for (const n of start.names) { // B is stored unscaled while training: equal up to rounding
    const [x, y] = [tied.get(n), start.get(n)];
    assert.ok(x.every((v, i) => Math.abs(v - y[i]) <= 1e-6 * Math.max(1, Math.abs(y[i]))), n);
  }
  // The shipped budget-forced adapter records the base model as the SFT one does.
  const shipped = (d: string) => JSON.parse(fs.readFileSync(path.join(DEFAULT_DIR, d, 'adapter_config.json'), 'utf8')).base_model_name_or_path;
  assert.equal(shipped('reasoning-adapter-rl'), shipped('reasoning-adapter'));
});

test('export-trl: a non-empty --out is refused without --overwrite; local base models are absolute, missing ones refused; no fallback token ids', slow, async () => {
  const out = at('trl');
  fs.mkdirSync(out);
  fs.writeFileSync(path.join(out, 'notes.txt'), 'mine');
  let r = cli(['export-trl', '--out', out, '--examples', '4', '--rl-prompts', '2']);
  assert.match(r.stderr, /--out .*trl is not empty \(notes\.txt\); choose another folder, or pass --overwrite/);
  assert.match(cli(['export-trl', '--out', at('trl-x'), '--base-model', '/nope']).stderr, /--base-model \/nope: no such folder/);
  // A count past what any recipe uses is refused at once (it ran silently for minutes towards gigabytes of memory)
  // The flag named (the grader only after the SFT data was built, as "rewards.py grades as synthetic or gsm8k"; the tokenizer not at all)
  assert.equal(cli(['export-trl', '--out', at('trl-x'), '--grader', 'bogus']).stderr, 'edgereason: export-trl: --grader must be synthetic or gsm8k (how rewards.py grades), got "bogus"\n');
  assert.equal(cli(['export-trl', '--out', at('trl-x'), '--tokenizer', at('no-tok')]).stderr, `edgereason: export-trl: --tokenizer ${at('no-tok')}: tokenizer: ${at('no-tok')}/tokenizer.json not found\n`);
  for (const flag of ['--examples', '--rl-prompts']) assert.match(cli(['export-trl', '--out', at('trl-x'), flag, '100000000']).stderr, new RegExp(`${flag} must be an integer in \\[1, 1000000\\], got "100000000"`));
  assert.match(cli(['export-trl', '--out', at('trl-x'), '--base-model', 'models/nope']).stderr, /--base-model models\/nope: no such folder .* though models\/ exists here/);
  assert.ok(!fs.existsSync(at('trl-x')));
  r = cli(['export-trl', '--out', out, '--examples', '4', '--rl-prompts', '2', '--overwrite', '--base-model', 'models/default']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(fs.readFileSync(path.join(out, 'notes.txt'), 'utf8'), 'mine');
  for (const f of ['sft.yaml', 'grpo.yaml']) assert.match(fs.readFileSync(path.join(out, f), 'utf8'), new RegExp(`^model_name_or_path: ${JSON.stringify(DEFAULT_DIR)}$`, 'm'), f);
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'recipe.json'), 'utf8')).base_model, DEFAULT_DIR);
  // A Hub id with no local tokenizer: the ids would come from another model's tokenizer, so none are recorded.
  exportTrl({ out: at('trl-hub'), baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', examples: 4, rlPrompts: 2 });
  const alora = JSON.parse(fs.readFileSync(at('trl-hub', 'recipe.json'), 'utf8')).alora;
  assert.equal(alora.invocation_tokens, null);
  assert.match(alora.note, /train_sft\.py encodes the invocation with the base model's tokenizer/);
  assert.throws(() => exportTrl({ out: at('trl-hub'), baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', examples: 4, rlPrompts: 2 }), /is not empty/);
});

test('--version prints package.json\'s version; demo --help names its default once; answer, chat, generate and serve run the embedded model without --model; CLI errors name flags, not API options', slow, async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [BIN, '--version'], { cwd: ROOT });
  assert.equal(stdout.trim(), JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
  const help = cli(['demo', '--help']).stdout;
  assert.equal(help.match(/default:/g)?.length, 1, help);
  assert.match(help, /\(default: the embedded models\/default\)/);
  for (const cmd of ['train-rl', 'export-trl']) assert.match(cli([cmd, '--help']).stdout, /--budgets <list> .*\(default: 96,160,256\)/); // as the flag takes it
  // chat's repetition penalty is the model's generation_config.json's unless typed (its help said 1); answer's and generate's is 1
  const penaltyDefault = (cmd: string) => /--repetition-penalty <x>[^]*?\(default:\s+([^)]*)\)/.exec(cli([cmd, '--help']).stdout)?.[1].replace(/\s+/g, ' ');
  assert.deepEqual(['chat', 'answer', 'generate'].map(penaltyDefault), ["generation_config.json's, else 1", '1', '1']);
  // A folder that is not there is said so (it was said to have no reasoning adapter); a model without one, that.
  assert.equal(cli(['demo', '--model', at('no-such-model')]).stderr, `edgereason: model: ${at('no-such-model')} does not exist\n`);
  const bare = at('no-adapter-model');
  fs.mkdirSync(bare);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) fs.symlinkSync(path.join(ROOT, 'models/default', f), path.join(bare, f));
  assert.match(cli(['demo', '--model', bare]).stderr, /^edgereason: demo: .*no-adapter-model has no reasoning adapter \(.*reasoning-adapter\/adapter_config\.json not found\); the demo runs on a folder laid out as models\/default/);
  // A required option given empty cannot be left out (--question); a number's range says what it is. generate's
  // empty prompt starts from BOS alone, as llama2.c's run.c does; a tokenizer without BOS has nothing to start from.
  assert.match(cli(['answer', '--model', 'models/default', '--question', '']).stderr, /^edgereason: --question is empty; give it a value$/m);
  // Thinking flags on a question the router answers directly: said to have changed nothing. (answer, chat, generate
  // and serve run the embedded model without --model, with its adapter and router.)
  for (const cmd of ['answer', 'chat', 'generate', 'serve']) assert.match(cli([cmd, '--help']).stdout, /--model <path> .*\(default: the embedded\s+models\/default\)/s);
  const direct = cli(['answer', '--question', 'Can you help me? Reverse the word sand. Just the answer, please.', '--budget', '96', '--samples', '4']);
  assert.deepEqual([direct.stdout, direct.stderr.split('\n').at(-2)], ['dnas\n', 'edgereason: note: the router answered directly, so --budget and --samples had no effect (--reasoning on reasons whatever the router says)']);
  // Without an adapter there is no router to blame (it was), and --reasoning on is refused before the model loads.
  const plain = cli(['answer', '--no-adapter', '--question', 'Reverse the word sand.', '--budget', '96', '--samples', '2']);
  assert.deepEqual([plain.stdout, plain.stderr.split('\n').at(-2)], ['dnas\n', 'edgereason: note: --budget and --samples had no effect: without a reasoning adapter every question is answered directly']);
  // An adapter given as the model names the flag it goes with: this command's, or the commands' that have it.
  const adapterDir = path.resolve('models/default/reasoning-adapter'), given = (cmd: string) => `edgereason: model: ${adapterDir} is a PEFT adapter (adapter_config.json), not a model: give it as the adapter (${cmd}), with its base model as the model`;
  assert.deepEqual([cli(['answer', '--model', adapterDir, '--question', 'x']).stderr.trim(), cli(['convert', '--model', adapterDir, '--out', path.join(os.tmpdir(), 'never-written')]).stderr.trim()],
    [given('--adapter'), given('--adapter of answer, chat, generate, serve or eval')]);
  assert.equal(cli(['answer', '--no-adapter', '--reasoning', 'on', '--question', 'x']).stderr.trim(), 'edgereason: answer: --reasoning on needs a reasoning adapter (--adapter, or reasoning-adapter/ in the model folder; --no-adapter leaves it out), or --native-thinking for a model that thinks by itself (e.g. Qwen3)');
  // The activated adapter applied as a classic one (to the whole prompt): said to be off what it was trained for.
  assert.match(cli(['answer', '--reasoning', 'on', '--adapter-mode', 'classic', '--max-tokens', '8', '--question', 'Reverse the word sand.']).stderr,
    new RegExp(`^answer: note: --adapter-mode classic applies ${path.resolve('models/default/reasoning-adapter')}, an activated LoRA adapter \\(trained to act from its invocation on\\), to the whole prompt too`, 'm'));
  // --json carries the seed of a sampled answer, as stderr's last line gives it.
  const seeded = cli(['answer', '--question', 'Reverse the word sand.', '--temperature', '1', '--seed', '5', '--json']);
  assert.deepEqual([JSON.parse(seeded.stdout).seed, seeded.stderr.split('\n').at(-2)!.endsWith('; seed 5')], [5, true]);
  // The checked vote lists each sample's flaws.
  const checked = cli(['answer', '--model', 'models/default', '--reasoning', 'on', '--samples', '2', '--vote', 'checked', '--seed', '1', '--question', 'Mia has 12 apples and buys 30 more. She gives 5 to Tom. How many apples does she have now?']);
  assert.equal(checked.stderr.split('\n').filter((l) => /^ {2}[* ] [01]: .*, \d+ flaws? in its work$/.test(l)).length, 2, checked.stderr);
  assert.match(checked.stderr, /^votes \(checked\): /m);
  // Several samples: sample 0 streams to stderr, and stdout holds the chosen one's transcript alone.
  const chosen = /^chosen answer \(sample (\d)\): (.*)$/m.exec(checked.stderr);
  assert.ok(chosen && checked.stdout.startsWith('<think>\n') && checked.stdout.endsWith(`</think>\n\n${chosen[2]}\n`), checked.stdout);
  assert.match(checked.stderr, /^route: reasoning.*; streaming sample 0 of 2 here, the chosen one to stdout at the end\n<think>\n/m);
  assert.match(cli(['generate', '--model', 'models/default', '--prompt', '']).stderr, /^edgereason: generate: the prompt has no tokens \(an empty text, and the tokenizer adds no BOS token to start from\): give it some text$/m);
  // A path flag written --model=~/x is not expanded by the shell: the CLI expands it (a prompt is left as written).
  fs.mkdirSync(at('home'));
  fs.symlinkSync(path.join(ROOT, 'models/default'), at('home', 'm'));
  const tilde = cli(['generate', '--model=~/m', '--prompt', '~/x', '--max-tokens', '1', '--stats'], { HOME: at('home') });
  assert.match(tilde.stderr, /^prompt \d+ tokens, generated 1/m, tilde.stderr);
  assert.match(cli(['generate', '--model=~/none', '--prompt', 'x'], { HOME: at('home') }).stderr, new RegExp(`^edgereason: model: ${at('home', 'none')} does not exist`, 'm'));
  // So is train-rl's --task, which names a file (it read "~/none.jsonl does not exist").
  assert.match(cli(['train-rl', '--model', 'models/default', '--adapter', 'models/default/reasoning-adapter', '--out', at('rl-tilde'), '--task=~/none.jsonl'], { HOME: at('home') }).stderr,
    new RegExp(`^edgereason: --task must be "synthetic" or a JSONL file of \\{"prompt","answer"\\} lines; ${at('home', 'none.jsonl')} does not exist`, 'm'));
  assert.match(cli(['generate', '--model', 'models/default', '--prompt', '', '--chat']).stderr, /^edgereason: generate: --prompt is empty: with --chat it would be an empty user message; give it a value$/m);
  const stories = sharedPath('models/stories260K');
  assert.equal(cli(['generate', '--model', path.join(stories, 'stories260K.bin'), '--prompt', '', '--max-tokens', '200', '--quant', 'fp32']).stdout,
    `${fs.readFileSync(path.join(stories, 'expected.txt'), 'utf8')}\n`);
  // An unquoted unset variable (--prompt $P --stats): the next flag is not taken as the value.
  assert.match(cli(['generate', '--model', 'models/default', '--prompt', '--stats', '--max-tokens', '2']).stderr, /^edgereason: --prompt took the flag --stats as its value: give --prompt a value \(an unset shell variable\?\)$/m);
  assert.match(cli(['generate', '--model', 'models/default', '--prompt', '--max-tokens=2', '--stats']).stderr, /^edgereason: --prompt took the flag --max-tokens=2 as its value/m);
  // Also where commander would first miss a required flag, or find a value left over.
  assert.match(cli(['answer', '--model', 'models/default', '--adapter', '--question', 'hi']).stderr, /^edgereason: --adapter took the flag --question as its value/m);
  assert.match(cli(['answer', '--model', 'models/default', '--question', 'hi', '--adapter', '--reasoning', 'on']).stderr, /^edgereason: --adapter took the flag --reasoning as its value/m);
  assert.match(cli(['generate', '--model', 'models/default', '--prompt=--stats', '--max-tokens', '1', '--stats']).stderr, /prompt \d+ tokens, generated 1/); // meant: = joins them
  assert.match(cli(['generate', '--model', 'models/default', '--prompt', 'x', '--temperature', 'Infinity']).stderr, /--temperature must be a finite number ≥ 0, got "Infinity"/);
  // An empty number (an unset shell variable) is refused, not read as 0 (it trained train-rl without its length penalty).
  assert.equal(cli(['generate', '--model', 'models/default', '--prompt', 'x', '--temperature', '']).stderr, 'edgereason: --temperature must be a finite number ≥ 0, got ""\n(add --help for the options)\n'); // the help page no longer follows
  // A value outside a flag's choices is refused as it is parsed: before an hf: model is downloaded (it was found after)
  for (const [cmd, flag, value, choices] of [['answer', '--vote', 'bogus', 'majority, confidence, verifier, verifier-vote, checked'], ['answer', '--adapter-mode', 'x', 'activated, classic'], ['eval', '--split', 'x', 'test, val'], ['train-rl', '--penalty', 'x', 'budget, group'], ['train-router', '--rule', 'x', 'savings, accuracy']]) {
    assert.equal(cli([cmd, '--model', 'hf:nobody/nothing', ...(cmd === 'answer' ? ['--question', 'hi'] : []), flag, value]).stderr, `edgereason: ${flag} must be one of ${choices}; got "${value}"\n(add --help for the options)\n`, cmd);
  }
  assert.equal(cli(['serve', '--reasoning-effort-budgets', '{"x":1}']).stderr, 'edgereason: --reasoning-effort-budgets: unknown effort "x" (use minimal, low, medium, high)\n(add --help for the options)\n'); // as every other flag's refusal
  assert.match(cli(['train-rl', '--model', 'models/default', '--adapter', 'models/default/reasoning-adapter', '--out', 'nowhere', '--lambda', ' ']).stderr, /--lambda must be a finite number ≥ 0, got " "/);
  assert.match(cli(['train-sft', '--model', 'models/default', '--data', 'x', '--out', 'nowhere', '--lr', '0x10']).stderr, /--lr must be a number above 0, got "0x10"/);
  // The library's option names come out as the command line's flags.
  assert.equal(cliWords('a second rounding; quant "fp32" keeps the file\'s values exactly'), 'a second rounding; --quant fp32 keeps the file\'s values exactly');
  assert.equal(cliWords('nothing to score: raise maxTokens'), 'nothing to score: raise --max-tokens');
  // A hostile file's bytes quoted by a parse error do not reach the terminal as control characters.
  fs.mkdirSync(at('evil'), { recursive: true });
  fs.writeFileSync(at('evil', 'config.json'), '{"a": \x1b[2J\x1b[31mRED\x07}');
  const evil = cli(['generate', '--model', at('evil'), '--prompt', 'hi']).stderr; // (the rest is V8's words)
  assert.ok(evil.startsWith(`edgereason: ${at('evil', 'config.json')} is not valid JSON: `) && evil.includes('\\x1b[2J\\x1b[31mRED\\x07') && !/[\x00-\x08\x0b-\x1f]/.test(evil), evil);
  assert.equal(cliWords('a\tb\nc\x00\x9b'), 'a\tb\nc\\x00\\x9b');
  // An API option named beside its flag: the flag alone.
  assert.equal(cliWords('serve: promptCacheFile (--prompt-cache-file) keeps the prompt cache, and promptCache (--prompt-cache) 0 keeps none; nativeThinking (--native-thinking) needs'),
    'serve: --prompt-cache-file keeps the prompt cache, and --prompt-cache 0 keeps none; --native-thinking needs');
  assert.equal(cliWords('export-trl: examples (--examples) counts; defaultVote verifier needs a verifier, and verifier false (--no-verifier) leaves it out'), 'export-trl: --examples counts; defaultVote verifier needs a verifier, and --no-verifier leaves it out');
  assert.equal(cliWords('eval: needs a reasoning adapter (--adapter), or more samples (--samples)'), 'eval: needs a reasoning adapter (--adapter), or more samples (--samples)');
  assert.equal(cli(['serve', '--vote', 'nope']).stderr.split('\n')[0], 'edgereason: serve: --vote must be one of "majority", "confidence", "verifier", "verifier-vote", "checked", got "nope"');
  // loadModel's ropeScaling fields are flags; a converted folder's options.ropeScaling stays its field.
  assert.equal(cliWords('m: ropeScaling.factor × ropeScaling.originalMaxPositionEmbeddings (…); ropeScaling none cannot replace it'), 'm: --rope-scale × --yarn-orig-ctx (…); --rope-scaling none cannot replace it');
  assert.equal(cliWords('model: x/edgereason.json: options.ropeScaling.factor must be a number above 1'), 'model: x/edgereason.json: options.ropeScaling.factor must be a number above 1');
  assert.equal(cliWords('answer: reasoning "on", but the chat template already closed the thinking (an empty thinking block, e.g. chatTemplateKwargs enable_thinking: false)'),
    'answer: --reasoning on, but the chat template already closed the thinking (an empty thinking block, e.g. --chat-template-kwargs enable_thinking: false)');
  assert.equal(cliWords('only with quant "q4" or "q8"'), 'only with --quant q4 or q8');
  // A nested command's flags too (bench decode).
  assert.match(cli(['bench', 'decode', '--shape', '--json']).stderr, /^edgereason: --shape took the flag --json as its value/m);
  assert.match(cli(['generate', '--model', 'models/default', '--adapter', 'models/default/reasoning-adapter', '--prompt', 'x', '--max-tokens', '1']).stderr,
    /and the raw prompt does not contain it \(end the prompt with it, use --chat, which appends it, or the answer command\)/);
  // answer's grader is --grader, as in eval and the trainers (its --task still works, noted: elsewhere --task is the data).
  assert.equal(cli(['answer', '--question', 'x', '--grader', 'nope']).stderr, 'edgereason: --grader must be one of gsm8k, svamp, asdiv, aime24, amc23, math500, synthetic; got "nope"\n');
  assert.match(cli(['answer', '--question', 'Reverse the word sand.', '--task', 'synthetic']).stderr, /^edgereason: note: answer --task is now --grader \(in eval and the trainers --task names the data\)$/m);
  // A model folder without a reasoning adapter answers directly, said so (it said only "route: direct"); --no-adapter asks for that.
  const bareAnswer = (...flags: string[]) => cli(['answer', '--model', bare, '--question', 'Reverse the word sand.', ...flags]);
  assert.deepEqual(bareAnswer().stderr.split('\n')[0], 'edgereason: note: no reasoning adapter (--adapter, or reasoning-adapter/ in the model folder): every question is answered directly');
  assert.doesNotMatch(bareAnswer('--no-adapter').stderr, /no reasoning adapter/);
  // --chat appends the invocation, and shows it: the thinking its </think> closes was opened in the output too.
  assert.equal(cli(['generate', '--model', 'models/default', '--adapter', 'models/default/reasoning-adapter', '--chat', '--prompt', 'Tom has 3 apples and buys 4 more. How many apples does he have?', '--max-tokens', '60']).stdout,
    '<think>\n4 + 3 = 7\n</think>\n\n#### 7\n');
  // … once the prompt's checks have passed: one too long for the context leaves stdout empty.
  const tooLong = cli(['generate', '--model', 'models/default', '--adapter', 'models/default/reasoning-adapter', '--chat', '--prompt', 'apple '.repeat(400)]);
  assert.deepEqual([tooLong.stdout, tooLong.stderr.split('\n')[0]], ['', `edgereason: generate: the prompt has ${/has (\d+) tokens/.exec(tooLong.stderr)?.[1]} tokens; the model's context of 1024 tokens leaves no room to generate`]);
  assert.equal(cliWords("generate: the prompt has 511 tokens, 512 with the adapter's invocation (1, appended for chat: true); the model's context of 512 tokens leaves no room to generate"),
    "generate: the prompt has 511 tokens, 512 with the adapter's invocation (1, appended for --chat); the model's context of 512 tokens leaves no room to generate");
  assert.equal(cliWords('answer: reasoning "on" needs the model loaded with its reasoning adapter (the adapter option of loadModel), or nativeThinking for a model that thinks by itself'),
    'answer: --reasoning on needs the model loaded with its reasoning adapter (--adapter), or --native-thinking for a model that thinks by itself');
  assert.match(cli(['answer', '--model', 'models/default', '--no-adapter', '--reasoning', 'on', '--question', 'x']).stderr, /or --native-thinking for a model that thinks by itself/);
  for (const flags of [['--adapter', 'models/default/reasoning-adapter', '--no-adapter'], ['--no-adapter', '--adapter=models/default/reasoning-adapter']]) {
    const r = cli(['answer', '--model', 'models/default', ...flags, '--question', 'x']);
    assert.deepEqual([r.status, r.stderr.trim()], [1, 'edgereason: --adapter and --no-adapter contradict each other: give one of them'], flags.join(' '));
  }
  // --no-router: not even the model folder's router.json (one trained for another kind of reasoning could not be left out); auto then reasons, unnoted.
  const unrouted = cli(['answer', '--model', 'models/default', '--no-router', '--question', 'Reverse the word sand.', '--max-tokens', '8']);
  assert.deepEqual([unrouted.status, unrouted.stderr.split('\n').filter((l) => l.startsWith('route:') || l.includes('router'))], [0, ['route: reasoning']]);
  for (const [command, extra] of [['answer', ['--question', 'x']], ['chat', []], ['serve', ['--port', '0']]] as const) {
    const r = cli([command, '--model', 'models/default', '--router', 'models/default/router.json', '--no-router', ...extra]);
    assert.deepEqual([r.status, r.stderr.trim()], [1, 'edgereason: --router and --no-router contradict each other: give one of them'], command);
  }
  assert.equal(cli(['serve', '--model', 'models/default', '--no-verifier', '--verifier', 'models/default/verifier.json', '--port', '0']).stderr.trim(), 'edgereason: --verifier and --no-verifier contradict each other: give one of them');
  assert.equal(cli(['serve', '--model', 'models/default', '--no-verifier', '--vote', 'verifier', '--port', '0']).stderr.trim(), 'edgereason: serve: --vote verifier needs a verifier, and --no-verifier leaves it out');
  // A thinking model's generation_config.json that asks for sampling: said when --native-thinking decodes greedily.
  const sampled = at('sampled-model');
  fs.mkdirSync(sampled);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) fs.symlinkSync(path.join(ROOT, 'models/default', f), path.join(sampled, f));
  fs.writeFileSync(path.join(sampled, 'generation_config.json'), JSON.stringify({ do_sample: true, temperature: 0.6, top_p: 0.95, top_k: 20, repetition_penalty: 1.1, eos_token_id: 2 }));
  const advice = `edgereason: note: answers are greedy unless --temperature is given; ${path.join(sampled, 'generation_config.json')} suggests sampling this model's thinking with --temperature 0.6 --top-p 0.95 --top-k 20`;
  assert.ok(cli(['answer', '--model', sampled, '--native-thinking', '--reasoning', 'on', '--question', 'x']).stderr.includes(advice));
  // (Not said in a run that went on to answer: this model, without a thinking of its own, stops after "<think>".)
  const without = (args: string[], note: string, status = 0) => { const r = cli(args); assert.deepEqual([r.status, r.stderr.includes(note), r.stderr.includes('route: ')], [status, false, true], r.stderr); };
  without(['answer', '--model', sampled, '--native-thinking', '--reasoning', 'on', '--temperature', '0.6', '--question', 'x'], 'suggests sampling', 1);
  // Its repetition penalty is said apart, until given.
  const penaltyNote = `edgereason: note: ${path.join(sampled, 'generation_config.json')} asks for repetition_penalty 1.1, which answer applies only when given --repetition-penalty 1.1 (serve applies it by default)`;
  assert.ok(cli(['answer', '--model', sampled, '--reasoning', 'off', '--question', 'x']).stderr.includes(penaltyNote));
  without(['answer', '--model', sampled, '--reasoning', 'off', '--repetition-penalty', '1.1', '--question', 'x'], 'asks for repetition_penalty');
  // Several samples are drawn (at 0.8), not greedy: said so.
  assert.ok(cli(['answer', '--model', sampled, '--native-thinking', '--reasoning', 'on', '--samples', '2', '--max-tokens', '8', '--question', 'x']).stderr.includes(advice.replace('answers are greedy', 'the 2 samples are drawn at temperature 0.8')));
  // A model whose template opens the thinking thinks by itself: eval without --native-thinking says what that means.
  const opener = at('opener-model');
  fs.mkdirSync(opener);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) fs.symlinkSync(path.join(ROOT, 'models/default', f), path.join(opener, f));
  const tc = JSON.parse(fs.readFileSync(path.join(ROOT, 'models/default', 'tokenizer_config.json'), 'utf8'));
  fs.writeFileSync(path.join(opener, 'tokenizer_config.json'), JSON.stringify({ ...tc, chat_template: tc.chat_template.replace("{{- '<|im_start|>assistant\\n' }}", "{{- '<|im_start|>assistant\\n<think>\\n' }}") }));
  const ev = cli(['eval', '--model', opener, '--limit', '1', '--max-tokens', '4', '--out', at('opener.json')]);
  assert.equal(ev.status, 0, ev.stderr);
  assert.match(ev.stderr, /^edgereason: note: this model thinks by itself: --native-thinking evaluates its thinking and its direct answers apart; without it, any thinking is part of the graded case texts, counted as no thinking$/m);
  // A converted copy keeps the file (README's Qwen3 setup converts first, then serves the copy).
  const converted = at('sampled-converted');
  assert.equal(cli(['convert', '--model', sampled, '--out', converted]).status, 0);
  assert.ok(cli(['answer', '--model', converted, '--native-thinking', '--reasoning', 'on', '--question', 'x']).stderr.includes(advice.replace(sampled, converted)));
  // Values that are no sampling values, and what the sampler does not apply, are said by answer and eval as by chat and serve (their suggestion left them out unsaid).
  const odd = at('odd-sampling');
  fs.mkdirSync(odd);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) fs.symlinkSync(path.join(ROOT, 'models/default', f), path.join(odd, f));
  fs.writeFileSync(path.join(odd, 'generation_config.json'), JSON.stringify({ do_sample: true, temperature: 0.7, top_p: 2, typical_p: 0.9 }));
  const oddNotes = (prefix: string) => [`${prefix}: note: ${path.join(odd, 'generation_config.json')} also asks for typical_p 0.9, which edgereason's sampler does not apply`,
    `${prefix}: note: ${path.join(odd, 'generation_config.json')}'s top_p 2 is not a valid value: left out (the defaults apply)`];
  const oddAnswer = cli(['answer', '--model', odd, '--reasoning', 'off', '--question', 'x', '--max-tokens', '4']);
  assert.deepEqual(oddAnswer.stderr.split('\n').filter((l) => l.includes('generation_config.json')), oddNotes('edgereason'), oddAnswer.stderr);
  const oddEval = cli(['eval', '--model', odd, '--limit', '1', '--max-tokens', '4', '--out', at('odd.json')]);
  assert.deepEqual(oddEval.stderr.split('\n').filter((l) => l.includes('generation_config.json')),
    [`eval: note: answers are greedy unless --temperature is given; ${path.join(odd, 'generation_config.json')} suggests sampling this model with --temperature 0.7`, ...oddNotes('eval')], oddEval.stderr);
  // A model that does not think by itself, told it does: said, not answered with nothing.
  const stopped = cli(['answer', '--model', 'models/default', '--native-thinking', '--reasoning', 'on', '--question', 'Zoe has 7 dollars. She earns 12 more. How many dollars does she have?']);
  assert.match(stopped.stderr, /^edgereason: answer: the model stopped right after "<think>", without thinking or answering: --native-thinking is for a model that thinks by itself \(such as Qwen3\); give this one its reasoning adapter instead$/m);
  // Said before its router (trained with the adapter) is refused for --native-thinking, with advice to train one for a thinking the model lacks.
  assert.match(cli(['answer', '--model', 'models/default', '--native-thinking', '--question', 'x']).stderr,
    /^answer: note: this model's chat template does not think by itself \(as Qwen3's and DeepSeek-R1's do\): --native-thinking asks for a thinking it may never have learned; give it a reasoning adapter \(--adapter\) instead\n.*router\.json: this router was not trained for --native-thinking/m);
  assert.equal(stopped.stdout, ''); // (it wrote "<think>" before failing)
  // eval says it too (its thinking run was answers like "\n#### 39", unnoted).
  assert.match(cli(['eval', '--model', 'models/default', '--native-thinking', '--task', 'synthetic', '--limit', '2', '--max-tokens', '8', '--out', at('native-eval.json')]).stderr,
    /^eval: note: this model's chat template does not think by itself \(as Qwen3's and DeepSeek-R1's do\): --native-thinking evaluates a thinking it may never have learned; give it a reasoning adapter \(--adapter\) instead$/m);
  // The same met while a router or verifier is trained is said as theirs (it was said as answer's).
  for (const [command, where] of [['train-router', 'router'], ['train-verifier', 'verifier']]) {
    assert.match(cli([command, '--model', 'models/default', '--native-thinking', '--limit', '4', '--val', '2', '--out', at(`native-${where}.json`)]).stderr,
      new RegExp(`^edgereason: ${where}: the model stopped right after "<think>", without thinking or answering: --native-thinking is for a model`, 'm'), command);
  }
  // A misspelt required flag is named (commander alone says only that the right one is missing).
  assert.match(cli(['answer', '--model', 'models/default', '--questions', 'hi']).stderr, /^edgereason: unknown option '--questions'\n\(Did you mean --question\?\)/);
  // Commander's own refusals in edgereason's form ("error: option '--max-tokens <n>' argument 'abc' is invalid." is gone), nested commands too.
  assert.deepEqual([cli(['nosuch']).stderr, cli(['bench', 'decode', '--foo']).stderr, cli(['generate', '--max-tokens', 'abc']).stderr],
    ["edgereason: unknown command 'nosuch'\n(add --help for the options)\n", "edgereason: unknown option '--foo'\n(add --help for the options)\n", 'edgereason: --max-tokens must be an integer ≥ 1, got "abc"\n(add --help for the options)\n']);
});

test('answer uses the reasoning adapter beside the model by default (as serve does); --no-adapter is the base alone', slow, () => {
  const q = ['answer', '--model', 'models/default', '--question', 'Zoe has 7 dollars. She sells 4 kites for 3 dollars each. How many dollars does Zoe have now?'];
  const r = cli(q);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /^adapter: models\/default\/reasoning-adapter \(the default; --no-adapter for the base model alone\)$/m);
  assert.match(r.stderr, /^route: reasoning \(router score 0\.18\d, threshold 0\.411: the direct answer was escalated by the gate\)$/m, 'and its router.json: the gate escalates');
  assert.equal(r.stdout.trim().split('\n').at(-1), '#### 19');
  // A reasoning-adapter/ that holds no adapter (a copy cut short) is refused naming what is missing: it was passed over
  // unsaid, and the base answered alone.
  const halfCopy = at('half-copy');
  fs.mkdirSync(path.join(halfCopy, 'reasoning-adapter'), { recursive: true });
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'router.json']) fs.symlinkSync(path.join(ROOT, 'models/default', f), path.join(halfCopy, f));
  fs.symlinkSync(path.join(ROOT, 'models/default/reasoning-adapter/adapter_model.safetensors'), path.join(halfCopy, 'reasoning-adapter/adapter_model.safetensors'));
  const refused = cli(['answer', '--model', halfCopy, '--question', 'hi']);
  assert.deepEqual([refused.status, refused.stdout, refused.stderr.trim().split('\n').at(-1)], [1, '', `edgereason: adapter: ${halfCopy}/reasoning-adapter/adapter_config.json not found (expected a PEFT adapter folder)`]);
  // A reply that ends at its first token shows nothing: said so (here the answer's one token made an end token).
  const ender = at('ender-model');
  fs.mkdirSync(ender);
  for (const f of ['model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) fs.symlinkSync(path.join(ROOT, 'models/default', f), path.join(ender, f));
  const answerToken = JSON.parse(cli(['answer', '--model', 'models/default', '--no-adapter', '--question', 'Reverse the word wind.', '--json']).stdout).samples[0].tokenIds;
  assert.equal(answerToken.length, 1);
  fs.writeFileSync(path.join(ender, 'config.json'), JSON.stringify({ ...JSON.parse(fs.readFileSync(path.join(ROOT, 'models/default/config.json'), 'utf8')), eos_token_id: [2, answerToken[0]] }));
  const ended = cli(['answer', '--model', ender, '--question', 'Reverse the word wind.']);
  assert.deepEqual([ended.status, ended.stdout], [0, '\n']);
  assert.match(ended.stderr, /^edgereason: note: the model ended its reply at once \(its first token was an end token\): there is nothing to show$/m);
  // A thinking that is only blank still shows its tags (the transcript as the model wrote it).
  assert.equal(cli(['answer', '--model', 'models/default', '--question', 'Reverse the word wind.', '--reasoning', 'on']).stdout, '<think>\n\n</think>\n\ndniw\n');
  const base = cli([...q, '--no-adapter']);
  assert.match(base.stderr, /^route: direct$/m);
  assert.equal(base.stdout.trim(), '#### 17');
  // --json: stdout is the JSON alone (the transcript goes to stderr)
  const json = cli([...q, '--no-adapter', '--json']);
  assert.deepEqual([JSON.parse(json.stdout).answer, JSON.parse(json.stdout).route], ['#### 17', 'direct']);
  assert.match(json.stderr, /^#### 17$/m);
  // An answer cut off by --max-tokens says so (its "####" lost the number); a cap that leaves no room is refused.
  const cut = cli([...q, '--reasoning', 'on', '--max-tokens', '24']);
  assert.deepEqual([cut.status, cut.stdout.trim().split('\n').at(-1)], [0, '####']);
  assert.match(cut.stderr, /^edgereason: note: the answer was cut off by --max-tokens 24; it may end mid-number: raise --max-tokens$/m);
  assert.doesNotMatch(r.stderr, /cut off/);
  // Cut inside the thinking: no answer at all, and the thinking cap is named.
  const thinking = cli([...q, '--reasoning', 'on', '--max-tokens', '6']);
  assert.match(thinking.stderr, /^edgereason: note: --max-tokens 6 ran out while the model was still thinking, so there is no answer: raise --max-tokens, or cap the thinking with --max-thinking-tokens \(it then closes and answers\)$/m);
  // The context's end instead (a question of 1023 prompt tokens leaves one): only a shorter question helps; a capped thinking that closed is not "still thinking".
  const long = Array(167).fill('Jack has 3 apples.').join(' ');
  const ask = (...flags: string[]) => spawnSync(process.execPath, [BIN, 'answer', '--model', 'models/default', '--question', `${long}\n`, '--reasoning', 'on', ...flags], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 }).stderr;
  assert.match(ask(), /^edgereason: note: the model's context of 1024 tokens \(the prompt takes 1023\) ran out while the model was still thinking, so there is no answer: shorten the question, or cap the thinking with --max-thinking-tokens \(it then closes and answers\)$/m);
  assert.match(ask('--max-thinking-tokens', '30'), /^edgereason: note: the thinking closed, but the model's context of 1024 tokens \(the prompt takes 1023\) left no room for the answer: shorten the question$/m);
  // eval refuses it before its base pass (a stage that ends prints its line, "base 3/3 | ...").
  const ev = cli(['eval', '--model', 'models/default', '--adapter', 'models/default/reasoning-adapter', '--task', 'synthetic', '--limit', '3', '--max-tokens', '30', '--max-thinking-tokens', '27', '--out', at('cap-eval.json')]);
  assert.deepEqual([ev.status, ev.stderr.trim().split('\n').at(-1)], [1, 'edgereason: eval: --max-thinking-tokens 27 leaves no room for the answer within --max-tokens 30: closing the thinking takes 3 tokens and the answer at least one; lower --max-thinking-tokens or raise --max-tokens']);
  assert.deepEqual([cli([...q, '--max-tokens', '30', '--max-thinking-tokens', '27']).stderr.trim().split('\n').at(-1)],
    ['edgereason: answer: --max-thinking-tokens 27 leaves no room for the answer within --max-tokens 30: closing the thinking takes 3 tokens and the answer at least one; lower --max-thinking-tokens or raise --max-tokens']);
});

test('answer --response-format: the answer is JSON the schema file accepts; a schema it cannot hold to, a missing file and bad JSON are named before the model loads', slow, () => {
  const schemaFile = at('answer-schema.json');
  const schema = { type: 'object', properties: { dollars: { type: 'integer' }, sure: { type: 'boolean' } }, required: ['dollars', 'sure'] };
  fs.writeFileSync(schemaFile, `\uFEFF${JSON.stringify(schema)}`); // with the byte-order mark Windows PowerShell 5.1 writes (it was "not JSON")
  const r = cli(['answer', '--model', 'models/default', '--question', 'Zoe has 7 dollars. How many dollars does Zoe have?', '--reasoning', 'off', '--response-format', `@${schemaFile}`, '--json']);
  assert.equal(r.status, 0, r.stderr);
  const value = JSON.parse(JSON.parse(r.stdout).answer);
  assert.deepEqual([Object.keys(value), Number.isInteger(value.dollars), typeof value.sure], [['dollars', 'sure'], true, 'boolean']);
  const refused = (arg: string) => { const x = cli(['answer', '--model', 'models/default', '--question', 'x', '--response-format', arg]); return [x.status, x.stderr.trim().split('\n')[0]]; };
  assert.deepEqual(refused('{"type": "string", "format": "email"}'), [1, `edgereason: --response-format: the keyword "format" is not supported by edgereason's constrained decoding; supported: type, enum, const, anyOf, $ref, $defs, definitions, properties, required, additionalProperties, items, minItems, maxItems, minLength, maxLength`]);
  assert.deepEqual(refused(`@${at('none.json')}`), [1, `edgereason: --response-format ${at('none.json')}: cannot read the schema file (ENOENT: no such file or directory, open '${at('none.json')}')`]);
  assert.deepEqual(refused('json'), [1, `edgereason: --response-format must be json_object, a JSON schema or @file.json holding one; got "json" (Unexpected token 'j', "json" is not valid JSON)`]);
});

test('generate --chat-template-kwargs: the variables reach the chat template (enable_thinking: false adds the empty thinking block\'s 6 tokens); bad JSON and a missing --chat are named; answer --budget with an adapter that was not budget-trained is noted', slow, () => {
  const gen = (...extra: string[]) => cli(['generate', '--model', 'models/default', '--prompt', 'What is the capital of Vorland?', '--max-tokens', '4', '--stats', ...extra]);
  const promptTokens = (r: ReturnType<typeof cli>) => Number(/^prompt (\d+) tokens/m.exec(r.stderr)?.[1]);
  const [plain, direct] = [gen('--chat'), gen('--chat', '--chat-template-kwargs', '{"enable_thinking": false}')];
  assert.equal(direct.status, 0, direct.stderr);
  assert.equal(promptTokens(direct) - promptTokens(plain), 6, `${plain.stderr}\n${direct.stderr}`);
  // A template that writes nothing of the messages (a field they lack, which jinja renders as nothing) is named as
  // the template's fault: it was "the prompt has no tokens … give it some text".
  const blank = at('blank-template');
  fs.mkdirSync(blank);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) fs.symlinkSync(path.join(ROOT, 'models/default', f), path.join(blank, f));
  fs.writeFileSync(path.join(blank, 'tokenizer_config.json'), JSON.stringify({ ...JSON.parse(fs.readFileSync(path.join(ROOT, 'models/default/tokenizer_config.json'), 'utf8')), chat_template: '{% for m in messages %}{{ m.content.foo.bar }}{% endfor %}' }));
  assert.equal(cli(['generate', '--model', blank, '--prompt', 'Hi', '--chat']).stderr, 'edgereason: generate: the chat template rendered nothing for these messages (does it read a field they do not have?); check the template, or give the prompt without it\n');
  // The penalty flags reach the sampler: a looping continuation loops no more.
  const loops = (...extra: string[]) => cli(['generate', '--model', 'models/default', '--prompt', 'I am fine, thank you, thank you,', '--max-tokens', '16', ...extra]).stdout;
  assert.deepEqual([loops().includes('shelf shelf shelf'), loops('--presence-penalty', '0.5', '--frequency-penalty', '1.5').includes('shelf shelf')], [true, false]);
  assert.match(gen('--chat', '--chat-template-kwargs', '{bad').stderr, /--chat-template-kwargs must be a JSON object, got "\{bad" \(/);
  assert.match(gen('--chat', '--chat-template-kwargs', '[1]').stderr, /--chat-template-kwargs must be a JSON object, got "\[1\]"/);
  assert.match(gen('--chat-template-kwargs', '{}').stderr, /generate: --chat-template-kwargs needs --chat/);
  // answer --native-thinking: the model's own thinking, so no adapter (not even the default one beside the model).
  const ask = (...extra: string[]) => cli(['answer', '--model', 'models/default', '--question', 'What is the capital of Vorland?', '--max-tokens', '8', ...extra]);
  assert.match(ask('--native-thinking', '--adapter', 'models/default/reasoning-adapter').stderr, /--native-thinking reasons with the model's own weights: leave --adapter out/);
  // On a model whose thinking is an adapter's, enable_thinking: false asks for the direct answer, after the plain prompt:
  // the embedded model's template would write Qwen3's empty thinking block, after which its base answered garbage.
  const ella = (...extra: string[]) => cli(['answer', '--model', 'models/default', '--question', 'At first, Ella has 5 marbles. Ella sells 3 marbles. Leo gives her 3 marbles. How many marbles does Ella end up with?', ...extra]);
  const [noThinking, off] = [ella('--chat-template-kwargs', '{"enable_thinking": false}'), ella('--reasoning', 'off')];
  assert.deepEqual([noThinking.stdout, noThinking.stderr.match(/^(route|tokens): .*?(?=;|$)/gm)], [off.stdout, off.stderr.match(/^(route|tokens): .*?(?=;|$)/gm)]);
  assert.equal(off.stdout, '#### 5\n');
  assert.equal(ella('--reasoning', 'on', '--chat-template-kwargs', '{"enable_thinking": false}').stderr.trim().split('\n').at(-1), 'edgereason: answer: --reasoning on, but --chat-template-kwargs enable_thinking: false asks for a direct answer');
  // and the reverse, as the server refuses it (it answered directly, unsaid)
  assert.equal(ella('--reasoning', 'off', '--chat-template-kwargs', '{"enable_thinking": true}').stderr.trim().split('\n').at(-1), 'edgereason: answer: --reasoning off, but --chat-template-kwargs enable_thinking: true asks for thinking: leave out one of them');
  const nat = ask('--native-thinking', '--reasoning', 'off', '--chat-template-kwargs', '{"enable_thinking": false}');
  assert.equal(nat.status, 0, nat.stderr);
  assert.doesNotMatch(nat.stderr, /^adapter:/m);
  assert.match(nat.stderr, new RegExp(`^tokens: prompt ${promptTokens(direct)}, generated \\d+;`, 'm'), 'the template\'s empty block, not a second one');
  // --budget with an adapter train-rl did not budget-train (no rl_log.json, or one without budgets) is noted; the RL adapter is not.
  const budgetNote = /^edgereason: note: models\/default\/reasoning-adapter was not budget-trained by train-rl \(no budgets in an rl_log\.json beside it\), so the budget line may not shorten its thinking; --max-thinking-tokens caps any adapter's thinking$/m;
  const [sft, rl] = ['reasoning-adapter', 'reasoning-adapter-rl'].map((a) => ask('--adapter', `models/default/${a}`, '--reasoning', 'on', '--budget', '96'));
  assert.equal(sft.status, 0, sft.stderr);
  assert.match(sft.stderr, budgetNote);
  assert.equal(rl.status, 0, rl.stderr);
  assert.doesNotMatch(rl.stderr, /rl_log/);
  // A budget outside those it was trained on (96, 160, 256) is noted too: a user's --budget 99999999 read as a number of the question.
  assert.match(ask('--adapter', 'models/default/reasoning-adapter-rl', '--reasoning', 'on', '--budget', '99999999', '--max-tokens', '8').stderr,
    /^edgereason: note: models\/default\/reasoning-adapter-rl was budget-trained on budgets of 96, 160, 256 tokens \(its rl_log\.json\): a budget of 99999999, outside their range, may not be held to \(it may even be read as part of the question\); give one from 96 to 256; --max-thinking-tokens caps any adapter's thinking$/m);
  const unbudgeted = at('rl-unbudgeted'); // train-rl --unbudgeted-share 1: an rl_log.json with no budgets
  fs.cpSync(path.join(ROOT, 'models/default/reasoning-adapter-rl'), unbudgeted, { recursive: true });
  fs.writeFileSync(path.join(unbudgeted, 'rl_log.json'), JSON.stringify({ ...JSON.parse(fs.readFileSync(path.join(unbudgeted, 'rl_log.json'), 'utf8')), budgets: [] }));
  assert.match(ask('--adapter', unbudgeted, '--reasoning', 'on', '--budget', '96').stderr, new RegExp(`^edgereason: note: ${unbudgeted} was not budget-trained by train-rl`, 'm'));
  // A log that cannot be read is refused, naming it (it was read as "not budget-trained", and serve dropped its budgets unsaid).
  const log = path.join(unbudgeted, 'rl_log.json');
  fs.writeFileSync(log, '{"budgets": [96, 160,');
  assert.match(ask('--adapter', unbudgeted, '--reasoning', 'on', '--budget', '96').stderr, new RegExp(`^edgereason: ${log} is not valid JSON \\(cut short\\?\\): `, 'm'));
  for (const [text, why] of [['{"budgets": "96,160"}', 'budgets must be a list of positive integers (the thinking budgets it trained on), got "96,160"'],
    ['{"budgets": null, "history": [1, 2, 3]}', 'budgets must be a list of positive integers (the thinking budgets it trained on), got null'], ['[96, 160]', 'expected a JSON object, got [96,160]']]) {
    fs.writeFileSync(log, text);
    assert.equal(ask('--adapter', unbudgeted, '--reasoning', 'on', '--budget', '96').stderr.trim().split('\n').at(-1), `edgereason: ${log} (train-rl's log): ${why}`);
  }
  fs.writeFileSync(log, '{"budgets": null}');
  // So does serve (its budgets for reasoning_effort; read before the model loads).
  const served = cli(['serve', '--adapter', `rl=${unbudgeted}`, '--port', '0']);
  assert.deepEqual([served.status, served.stderr.trim().split('\n').at(-1)], [1, `edgereason: ${log} (train-rl's log): budgets must be a list of positive integers (the thinking budgets it trained on), got null`]);
});

test('convert gives the graph the LoRA inputs of the reasoning adapters beside the model, and says how to bring the setup along (it copies nothing)', slow, () => {
  const src = at('setup-src'), out = at('setup-out');
  fs.mkdirSync(src);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'router.json', 'verifier.json']) fs.copyFileSync(path.join(DEFAULT_DIR, f), path.join(src, f));
  fs.cpSync(path.join(DEFAULT_DIR, 'reasoning-adapter'), path.join(src, 'reasoning-adapter'), { recursive: true });
  const r = cli(['convert', '--model', src, '--out', out, '--quant', 'q8']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, `edgereason: note: the reasoning setup beside ${src} (reasoning-adapter/, router.json, verifier.json) stays there; the graph takes its adapters' LoRA inputs (q,k,v,o,gate,up,down): copy them into ${out} to keep the reasoning setup with the converted model (answer, chat and serve look for it there): cp -rL ${src}/reasoning-adapter ${src}/router.json ${src}/verifier.json ${out}/\n`);
  assert.deepEqual(fs.readdirSync(out).filter((f) => /reasoning|router|verifier/.test(f)), []);
  // Copied as it says, the converted folder reasons with them (its graph has the adapter's LoRA inputs).
  assert.equal(spawnSync('cp', ['-rL', path.join(src, 'reasoning-adapter'), path.join(src, 'router.json'), `${out}/`]).status, 0);
  const asked = cli(['answer', '--model', out, '--question', 'Ella has 5 marbles. Ella sells 3 marbles. How many marbles does Ella have?', '--reasoning', 'on']);
  assert.equal(asked.status, 0, asked.stderr);
  assert.match(asked.stderr, new RegExp(`^adapter: ${out}/reasoning-adapter \\(the default`, 'm'));
  assert.match(asked.stdout, /<\/think>/);
  // Rebuilt in place, it leaves what the user copied there as it is, and says nothing more of it.
  const again = cli(['convert', '--model', src, '--out', out, '--quant', 'q8']);
  assert.deepEqual([again.status, again.stderr], [0, `edgereason: note: the reasoning setup beside ${src} (verifier.json) stays there; the graph takes its adapters' LoRA inputs (q,k,v,o,gate,up,down): copy it into ${out} to keep the reasoning setup with the converted model (answer, chat and serve look for it there): cp -rL ${src}/verifier.json ${out}/\n`]);
  // With fewer LoRA inputs than the adapter trains: said; its router and verifier go with it.
  const few = at('setup-few'), r2 = cli(['convert', '--model', src, '--out', few, '--quant', 'q8', '--lora-targets', 'q,v']);
  assert.deepEqual([r2.status, r2.stderr], [0, `edgereason: note: ${src}/reasoning-adapter trains k_proj, o_proj, gate_proj, up_proj, down_proj, which --lora-targets leaves without LoRA inputs: the converted model cannot take it (leave --lora-targets out for its adapters' own)\n`]);
});

test('convert refuses to write into its own --model folder or a file; a converted folder is rebuilt in place', slow, () => {
  const src = at('conv-src');
  fs.mkdirSync(src);
  for (const f of fs.readdirSync(model.dir)) if (!f.endsWith('.gguf')) fs.copyFileSync(path.join(model.dir, f), path.join(src, f));
  const before = snapshot(src);
  assert.match(cli(['convert', '--model', src, '--out', src]).stderr, new RegExp(`--out ${src} is the --model folder: the converted model would be written over its own input`));
  assert.deepEqual(snapshot(src), before, 'the source folder is untouched');
  fs.writeFileSync(at('conv-file'), 'x');
  assert.match(cli(['convert', '--model', src, '--out', at('conv-file')]).stderr, /conv-file is a file; expected a folder \(for the converted model\)/);
  for (let k = 0; k < 2; k++) assert.equal(cli(['convert', '--model', src, '--out', at('conv-out'), '--quant', 'fp32']).status, 0, `convert #${k + 1}`);
  // Another tool's ONNX export with its own chat template: refused untouched, replaced with --overwrite.
  const theirs = at('their-onnx');
  fs.mkdirSync(theirs);
  fs.writeFileSync(path.join(theirs, 'model.onnx'), 'onnx');
  fs.writeFileSync(path.join(theirs, 'tokenizer_config.json'), '{"chat_template": "mine"}');
  const kept = snapshot(theirs);
  assert.match(cli(['convert', '--model', src, '--out', theirs]).stderr, /their-onnx already holds a model or adapter \(tokenizer_config\.json, model\.onnx\); choose another folder, or pass --overwrite to replace it\n/); // convert has no --resume
  assert.deepEqual(snapshot(theirs), kept);
  assert.equal(cli(['convert', '--model', src, '--out', theirs, '--quant', 'fp32', '--overwrite']).status, 0);
  // Another model's conversion: refused untouched, replaced with --overwrite.
  const other = at('conv-src2');
  fs.cpSync(src, other, { recursive: true });
  const converted = snapshot(at('conv-out'));
  assert.match(cli(['convert', '--model', other, '--out', at('conv-out')]).stderr, new RegExp(`--out ${at('conv-out')} holds a conversion of another model \\(${src}\\); choose another folder, or pass --overwrite to replace it`));
  assert.deepEqual(snapshot(at('conv-out')), converted);
  assert.equal(cli(['convert', '--model', other, '--out', at('conv-out'), '--quant', 'fp32', '--overwrite']).status, 0);
  // A second convert into an --out another one is writing (its lock held by a live process, here this one) is refused;
  // a lock left by a process that is gone is taken over, and goes with the run.
  const lock = path.join(at('conv-out'), '.edgereason.lock');
  fs.writeFileSync(lock, `${process.pid} convert`);
  assert.equal(cli(['convert', '--model', other, '--out', at('conv-out'), '--quant', 'fp32']).stderr, `edgereason: --out: another convert run (process ${process.pid}) is writing ${at('conv-out')}; wait for it to finish, or choose another --out (if no such run is going, delete ${path.join(at('conv-out'), '.edgereason.lock')})\n`);
  fs.writeFileSync(lock, '2147483646');
  assert.equal(cli(['convert', '--model', other, '--out', at('conv-out'), '--quant', 'fp32']).status, 0);
  assert.equal(fs.existsSync(lock), false);
  // A run that fails leaves no folder it made (the lock made it first).
  assert.match(cli(['convert', '--model', at('conv-none'), '--out', at('conv-new')]).stderr, /does not exist/);
  assert.equal(fs.existsSync(at('conv-new')), false);
  // A converted folder as its own --out is that (it was called another model's conversion, --overwrite offered).
  assert.equal(cli(['convert', '--model', at('conv-out'), '--out', at('conv-out')]).stderr, `edgereason: --out ${at('conv-out')} is the --model folder: the converted model would be written over its own input; choose another --out\n`);
  // A source without a chat template or generation_config.json: the ones a user then adds survive its rebuild in
  // place; another model's conversion over it (--overwrite) leaves none of them.
  const bare = at('conv-bare'), out = at('conv-bare-out');
  fs.cpSync(src, bare, { recursive: true });
  const config = JSON.parse(fs.readFileSync(path.join(bare, 'tokenizer_config.json'), 'utf8'));
  delete config.chat_template;
  fs.writeFileSync(path.join(bare, 'tokenizer_config.json'), JSON.stringify(config));
  fs.rmSync(path.join(bare, 'generation_config.json'), { force: true });
  fs.rmSync(path.join(bare, 'chat_template.jinja'), { force: true });
  assert.equal(cli(['convert', '--model', bare, '--out', out, '--quant', 'fp32']).status, 0);
  const mine = { 'chat_template.jinja': '{% for m in messages %}{{ m.content }}{% endfor %}', 'generation_config.json': '{"temperature": 0.5}' };
  for (const [f, text] of Object.entries(mine)) fs.writeFileSync(path.join(out, f), text);
  assert.equal(cli(['convert', '--model', bare, '--out', out, '--quant', 'q8']).status, 0);
  for (const [f, text] of Object.entries(mine)) assert.equal(fs.readFileSync(path.join(out, f), 'utf8'), text, f);
  // The same source through a link is the same rebuild.
  fs.symlinkSync(bare, at('conv-bare-link'));
  assert.equal(cli(['convert', '--model', at('conv-bare-link'), '--out', out, '--quant', 'fp32']).status, 0);
  for (const [f, text] of Object.entries(mine)) assert.equal(fs.readFileSync(path.join(out, f), 'utf8'), text, f);
  // A template the earlier conversion wrote, which the source has since dropped, goes (it would outrank the new one).
  const had = at('conv-had'), hadOut = at('conv-had-out');
  fs.cpSync(bare, had, { recursive: true });
  fs.writeFileSync(path.join(had, 'chat_template.jinja'), 'OLD{{ messages[0].content }}');
  assert.equal(cli(['convert', '--model', had, '--out', hadOut, '--quant', 'fp32']).status, 0);
  assert.equal(fs.readFileSync(path.join(hadOut, 'chat_template.jinja'), 'utf8'), 'OLD{{ messages[0].content }}');
  fs.rmSync(path.join(had, 'chat_template.jinja'));
  assert.equal(cli(['convert', '--model', had, '--out', hadOut, '--quant', 'fp32']).status, 0);
  assert.ok(!fs.existsSync(path.join(hadOut, 'chat_template.jinja')));
  assert.equal(cli(['convert', '--model', src, '--out', out, '--quant', 'fp32', '--overwrite']).status, 0);
  for (const [f, text] of Object.entries(mine)) assert.ok(!fs.existsSync(path.join(out, f)) || fs.readFileSync(path.join(out, f), 'utf8') !== text, f);
  // A folder holding a single-file model (its tokenizer.json would become the GGUF's vocabulary): refused.
  const withGguf = at('with-gguf');
  fs.mkdirSync(withGguf);
  fs.writeFileSync(path.join(withGguf, 'qwen.gguf'), 'GGUF');
  assert.equal(cli(['convert', '--model', src, '--out', withGguf]).stderr, `edgereason: --out ${withGguf} already holds a model or adapter (qwen.gguf); choose another folder, or pass --overwrite to replace it\n`);
  // A trainer's .bin files are no model.
  const trainerOut = at('trainer-out');
  fs.mkdirSync(trainerOut);
  fs.writeFileSync(path.join(trainerOut, 'training_args.bin'), 'x');
  assert.doesNotThrow(() => checkOutDir(trainerOut, { what: 'model' }));
  // An adapter writes no tokenizer.json: it may go beside a GGUF.
  assert.doesNotThrow(() => checkOutDir(withGguf, { what: 'adapter' }));
  assert.throws(() => checkOutDir(withGguf, { what: 'model' }), /already holds a model or adapter \(qwen\.gguf\)/);
  // A GGUF's own folder: refused as such, not offered --overwrite for the GGUF.
  assert.equal(cli(['convert', '--model', path.join(withGguf, 'qwen.gguf'), '--out', withGguf]).stderr, `edgereason: --out ${withGguf} is the folder of --model ${path.join(withGguf, 'qwen.gguf')}: the converted files would mix with the model's own (a tokenizer.json there becomes the vocabulary of every GGUF in it); choose another folder\n`);
  // The cache folder named by $EDGEREASON_CACHE must be one.
  assert.equal(cli(['cache'], { ...process.env, EDGEREASON_CACHE: path.join(src, 'config.json') }).stderr, `edgereason: cache: the cache folder ${path.join(src, 'config.json')} is not a folder (set $EDGEREASON_CACHE to one, or pass --dir)\n`);
});

test('the CLI: output piped into a reader that stops early ends quietly; list flags and folders are checked by name; greedy answers note ignored sampling flags', slow, () => {
  const pipe = spawnSync('bash', ['-c', `"${process.execPath}" "${BIN}" generate --model "${model.dir}" --prompt hi --max-tokens 200 --quant fp32 | head -c 1; exit \${PIPESTATUS[0]}`], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  assert.deepEqual([pipe.status, pipe.stderr.includes('EPIPE')], [0, false], pipe.stderr);
  for (const cmd of [['export-trl', '--out', at('trl-x')], ['train-rl', '--model', model.dir, '--adapter', at('a'), '--out', at('rl-x')]]) {
    assert.match(cli([...cmd, '--budgets', '96,abc']).stderr, /--budgets must list positive integers separated by commas, got "96,abc"/, cmd[0]);
    assert.match(cli([...cmd, '--budgets', '96,160,96']).stderr, /--budgets names 96 twice \(96,160,96\): a bucket listed twice is drawn twice as often; list each once/, cmd[0]);
  }
  assert.match(cli(['cache', '--dir', at('no-such-cache')]).stderr, /cache: --dir .*no-such-cache does not exist/);
  assert.match(cli(['cache', '--dir', data]).stderr, /cache: --dir .*d\.jsonl is not a folder/);
  const notes = cli(['answer', '--model', model.dir, '--question', 'hi', '--reasoning', 'off', '--top-k', '5', '--max-tokens', '2', '--quant', 'fp32']).stderr;
  assert.match(notes, /note: --top-k has no effect: answers are greedy with one sample unless --temperature is given/);
  // An early stop no vote decided at the end can make (a later sample may score higher).
  const early = cli(['answer', '--model', DEFAULT_DIR, '--question', 'hi', '--samples', '2', '--vote', 'checked', '--early-stop', '--max-tokens', '8']).stderr;
  assert.match(early, /^edgereason: note: --early-stop has no effect with --vote checked: it is decided once every sample has ended \(a later one may score higher\)$/m);
  // With one sample there is nothing to vote on or stop early: refused, as eval refuses it (it ran, unsaid).
  const single = cli(['answer', '--model', DEFAULT_DIR, '--question', 'hi', '--reasoning', 'on', '--vote', 'checked', '--early-stop', '--max-tokens', '8']);
  assert.deepEqual([single.status, single.stderr.trim()], [1, 'edgereason: answer: --vote combines several samples: give --samples N (N ≥ 2)']);
});

test('chat: each line a turn of one conversation (the replies kept, read from the prompt cache the next turn), /reset starts over, --prompt-cache-file keeps them for the next chat, a bad flag is named', slow, () => {
  const kept = path.join(tmp, 'chat-prompts.safetensors');
  const chat = (input: string) => spawnSync(process.execPath, [BIN, 'chat', '--reasoning', 'off', '--prompt-cache-file', kept], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, input });
  const turnsOf = (err: string) => [...err.matchAll(/^\[direct; 1 answer token; prompt (\d+) tokens, (\d+) of them from the prompt cache; TTFT [\d.]+ ms, \d+ ms\]$/gm)].map((m) => [+m[1], +m[2]]);
  // (A mistyped command is said so and is no turn: it was sent to the model.)
  const r = chat('Reverse the word sand.\n/rest\n/reset now\nWhat is the capital of Elbonia?\n/reset\nWhat is the capital of Elbonia?\n');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'dnas\nWexley\nZemlo\n'); // (alone, as answer --question answers it; after the first turn, another guess)
  assert.match(r.stderr, /^edgereason: chat: unknown command \/rest \(the commands: \/reset, \/help, \/exit or \/quit\)$/m);
  assert.match(r.stderr, /^edgereason: chat: \/reset takes nothing after it \(nothing was sent\)$/m); // (it was sent as a turn)
  const turns = turnsOf(r.stderr);
  // The second turn holds the first (its prompt, whole, from the cache) and its reply; after /reset the question alone.
  assert.equal(turns.length, 3, r.stderr);
  assert.deepEqual([turns[0][1], turns[1][1], turns[2][1]], [0, turns[0][0], 0]);
  assert.match(r.stderr, /^\(a new conversation\)$/m);
  // Kept at the end (the second turn's prompt holds the first's; the third's is its own) and read by the next chat,
  // whose first question, the third's again, is prefilled from its last token on.
  assert.match(r.stderr, new RegExp(`^prompt cache: 2 prompts \\(${turns[1][0] + turns[2][0]} tokens, [\\d.]+ MB\\) saved to ${kept}$`, 'm'));
  const next = chat('What is the capital of Elbonia?\n');
  assert.deepEqual([next.status, next.stdout, turnsOf(next.stderr)], [0, 'Zemlo\n', [[turns[2][0], turns[2][0] - 1]]], next.stderr);
  assert.match(next.stderr, new RegExp(`^prompt cache: 2 prompts \\(${turns[1][0] + turns[2][0]} tokens\\) read from ${kept}$`, 'm'));
  const bad = cli(['chat', '--reasoning', 'maybe']);
  assert.deepEqual([bad.status, bad.stderr.trim()], [1, 'edgereason: --reasoning must be one of auto, on, off; got "maybe"\n(add --help for the options)']);
  // Options no turn can be answered with, and a --system that leaves no room, are refused before the first line is read
  // (in the chat's words; they were found at the first turn), notes said of flags that do nothing.
  const run = (args: string[], input = 'hi\nhello\n') => spawnSync(process.execPath, [BIN, 'chat', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, input });
  const none = run(['--no-adapter', '--reasoning', 'on']);
  assert.deepEqual([none.status, none.stdout, none.stderr.trim().split('\n').length], [1, '', 1]);
  assert.match(none.stderr, /^edgereason: chat: --reasoning on needs a reasoning adapter \(--adapter, or reasoning-adapter\/ in the model folder; --no-adapter leaves it out\)/);
  assert.match(run(['--max-thinking-tokens', '600']).stderr, /^edgereason: chat: --max-thinking-tokens 600 leaves no room for the answer within --max-tokens 512/m);
  const system = run(['--system', 'word '.repeat(1100)]);
  assert.deepEqual([system.status, system.stdout], [1, '']);
  assert.match(system.stderr, /^edgereason: chat: --system leaves no room for a conversation: the prompt has \d+ tokens, which leaves no room in the model's context of 1024 tokens$/m);
  // A turn too long for the context is said in the chat's words (it said "answer:"), and the chat goes on.
  const long = run(['--reasoning', 'off'], `${'word '.repeat(1100)}\nReverse the word sand.\n`);
  assert.deepEqual([long.status, long.stdout], [0, 'dnas\n'], long.stderr);
  assert.match(long.stderr, /^edgereason: chat: the prompt has \d+ tokens, which leaves no room in the model's context of 1024 tokens$/m);
  // Turn i draws with seed + i, any safe integer as the API takes it (negative ones were refused), wrapping past 2^53 − 1.
  for (const [seed, seeds] of [['-2', ['-2', '-1']], ['9007199254740991', ['9007199254740991', '0']]] as const) {
    const drawn = run(['--reasoning', 'off', '--temperature', '0.7', '--seed', seed]);
    assert.deepEqual([drawn.status, [...drawn.stderr.matchAll(/; seed (-?\d+)\]$/gm)].map((m) => m[1])], [0, seeds], drawn.stderr);
  }
  // -1 asks for a fresh seed, as llama.cpp reads it (it was the seed -1).
  const fresh = run(['--reasoning', 'off', '--temperature', '0.7', '--seed', '-1']);
  const freshSeeds = [...fresh.stderr.matchAll(/; seed (-?\d+)\]$/gm)].map((m) => +m[1]);
  assert.ok(fresh.status === 0 && freshSeeds.length === 2 && freshSeeds[0] >= 0 && freshSeeds[1] === freshSeeds[0] + 1, fresh.stderr);
  assert.match(run(['--reasoning', 'off', '--budget', '3'], '').stderr, /^edgereason: note: --budget applies to reasoning; it has no effect with --reasoning off$/m);
  // A reply cut off in its thinking has no answer to keep: left out of the conversation, as a stopped one is.
  const cut = run(['--reasoning', 'on', '--max-tokens', '6'], 'Jack starts with 15 marbles. He buys 4 bags with 4 marbles in each bag. How many marbles does Jack have?\nReverse the word sand.\n');
  assert.match(cut.stderr, /^\(cut off before any answer, in its thinking: this turn is left out of the conversation; a larger --max-tokens, or --max-thinking-tokens, leaves room for one\)$/m);
  const prompts = [...cut.stderr.matchAll(/prompt (\d+) tokens/g)].map((m) => +m[1]);
  assert.ok(prompts.length === 2 && prompts[1] < 40, cut.stderr); // the second turn's prompt is its own question alone
});

test('chat samples with the model\'s generation_config.json where the flags say nothing (as serve), and says so', slow, () => {
  const dir = at('chat-gen');
  fs.mkdirSync(dir);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(DEFAULT_DIR, f), path.join(dir, f));
  fs.writeFileSync(path.join(dir, 'generation_config.json'), '{"do_sample": true, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}');
  const run = (...args: string[]) => spawnSync(process.execPath, [BIN, 'chat', '--model', dir, '--reasoning', 'off', '--seed', '5', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, input: 'Reverse the word sand.\n' });
  const own = run();
  assert.equal(own.status, 0, own.stderr);
  assert.match(own.stderr, new RegExp(`^edgereason: note: chat samples with ${dir}/generation_config.json's temperature 0.7, top_k 20, top_p 0.8, repetition_penalty 1.05 \\(the flags override it; --temperature 0 is greedy\\)$`, 'm'));
  assert.match(own.stderr, /; seed 5\]$/m); // drawn
  const greedy = run('--temperature', '0', '--top-k', '3');
  assert.match(greedy.stderr, new RegExp(`^edgereason: note: chat decodes with ${dir}/generation_config.json's repetition_penalty 1.05 \\(the flags override it\\)$`, 'm'));
  assert.match(greedy.stderr, /^chat: note: --top-k has no effect at --temperature 0 \(greedy\)$/m);
  assert.doesNotMatch(greedy.stderr, /; seed 5\]/);
  assert.doesNotMatch(run('--temperature', '0', '--repetition-penalty', '1').stderr, /generation_config/);
  // A temperature typed keeps the file's other sampling fields.
  assert.match(run('--temperature', '0.5').stderr, new RegExp(`^edgereason: note: chat samples with ${dir}/generation_config.json's top_k 20, top_p 0.8, repetition_penalty 1.05 \\(the flags override it\\)$`, 'm'));
  // Values that are no sampling values are left out, said so (top_k -1 ended chat with "topK must be …", naming no file).
  fs.writeFileSync(path.join(dir, 'generation_config.json'), '{"do_sample": true, "temperature": "hot", "top_p": 0.8, "top_k": -1}');
  const bad = run();
  assert.equal(bad.status, 0, bad.stderr);
  assert.match(bad.stderr, new RegExp(`^edgereason: note: ${dir}/generation_config.json's temperature "hot", top_k -1 are not valid values: left out \\(the defaults apply\\)$`, 'm'));
  assert.match(bad.stderr, new RegExp(`^edgereason: note: chat samples with ${dir}/generation_config.json's top_p 0.8 \\(`, 'm'));
  // One that is not JSON: a source folder's load refuses it; a converted folder's (copied by convert) is left out, said so.
  const converted = at('chat-gen-converted');
  assert.equal(cli(['convert', '--model', dir, '--out', converted]).status, 0);
  fs.writeFileSync(path.join(converted, 'generation_config.json'), '{"do_sample": true,}');
  const broken = spawnSync(process.execPath, [BIN, 'chat', '--model', converted, '--reasoning', 'off'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, input: 'Reverse the word sand.\n' });
  assert.equal(broken.status, 0, broken.stderr);
  assert.match(broken.stderr, new RegExp(`^edgereason: note: ${converted}/generation_config.json is not valid JSON: .*: its sampling advice is left out$`, 'm'));
});

test('generate and answer --prompt-cache-file: the next run reads the prompt the last one kept (its stats say how much); a run that keeps nothing new leaves the file as it was', slow, () => {
  const kept = path.join(tmp, 'generate-prompts.safetensors'), question = 'Jack starts with 15 marbles. He buys 4 bags with 4 marbles in each bag. How many marbles does Jack have?';
  const gen = () => cli(['generate', '--model', DEFAULT_DIR, '--chat', '--prompt', question, '--max-tokens', '6', '--stats', '--prompt-cache-file', kept]);
  const first = gen(), stats = /^prompt (\d+) tokens(?: \((\d+) from the prompt cache\))?, generated/m;
  const [, prompt, none] = stats.exec(first.stderr)!;
  assert.deepEqual([first.status, none], [0, undefined], first.stderr);
  assert.match(first.stderr, new RegExp(`^prompt cache: 1 prompt \\(${prompt} tokens, [\\d.]+ MB\\) saved to ${kept}$`, 'm'));
  const before = fs.statSync(kept).mtimeMs, second = gen();
  assert.deepEqual([second.status, second.stdout, stats.exec(second.stderr)!.slice(1)], [0, first.stdout, [prompt, String(+prompt - 1)]], second.stderr);
  assert.doesNotMatch(second.stderr, /saved to/);
  assert.equal(fs.statSync(kept).mtimeMs, before);
  // answer reads the same file: the question asked directly, read from it but for its last token.
  const a = cli(['answer', '--model', DEFAULT_DIR, '--reasoning', 'off', '--question', question, '--prompt-cache-file', kept]);
  assert.match(a.stderr, new RegExp(`^tokens: prompt ${prompt} \\(${+prompt - 1} from the prompt cache\\), generated`, 'm'));
  // A folder is refused before the run (it generated, then failed to save into "sub/").
  const folder = cli(['generate', '--model', DEFAULT_DIR, '--prompt', 'hi', '--max-tokens', '2', '--prompt-cache-file', `${tmp}/`]);
  assert.deepEqual([folder.status, folder.stdout, folder.stderr.trim()], [1, '', `edgereason: prompt cache: ${tmp}/ names a folder; give the file the prompts are kept in (e.g. ${path.join(tmp, 'prompts.safetensors')})`]);
  // A folder not there yet is said at the start, and made at the save.
  const deep = path.join(tmp, 'not-yet', 'there', 'p.safetensors'), made = cli(['generate', '--model', DEFAULT_DIR, '--chat', '--prompt', question, '--max-tokens', '1', '--prompt-cache-file', deep]);
  assert.match(made.stderr, new RegExp(`^prompt cache: the folder ${path.dirname(deep)} does not exist: it is made when the prompts are saved\n`), made.stderr);
  assert.ok(fs.existsSync(deep), made.stderr);
  // A run whose prompt is too short to keep writes nothing, and says so (it was silent: the file was just not there).
  const short = path.join(tmp, 'short-prompts.safetensors'), unkept = cli(['generate', '--model', DEFAULT_DIR, '--prompt', 'hi', '--max-tokens', '1', '--prompt-cache-file', short]);
  assert.deepEqual([unkept.status, unkept.stderr, fs.existsSync(short)], [0, `prompt cache: nothing saved to ${short}: no prompt was kept (one is kept when longer than 16 tokens and within the prompt cache's 256 MiB: --prompt-cache raises it)\n`, false]);
  // --prompt-cache sets its size (a prompt of 400 tokens, 1.2 MiB of keys and values, is not kept in 1 MiB); 0 keeps nothing to save.
  const long = 'apple '.repeat(67).trim(), sized = path.join(tmp, 'sized.safetensors');
  const small = cli(['generate', '--model', DEFAULT_DIR, '--prompt', long, '--max-tokens', '1', '--prompt-cache', '1', '--prompt-cache-file', sized]);
  assert.deepEqual([small.status, small.stderr, fs.existsSync(sized)], [0, `prompt cache: nothing saved to ${sized}: no prompt was kept (one is kept when longer than 16 tokens and within the prompt cache's 1 MiB: --prompt-cache raises it)\n`, false]);
  assert.deepEqual(cli(['generate', '--model', DEFAULT_DIR, '--prompt', long, '--max-tokens', '1', '--prompt-cache', '2', '--prompt-cache-file', sized]).status, 0);
  assert.ok(fs.existsSync(sized), 'kept in 2 MiB');
  for (const command of [['generate', '--prompt', 'hi'], ['answer', '--question', 'hi'], ['chat']]) {
    const r = cli([...command, '--model', DEFAULT_DIR, '--prompt-cache', '0', '--prompt-cache-file', sized]);
    assert.deepEqual([r.status, r.stderr], [1, 'edgereason: --prompt-cache-file keeps the prompt cache, and --prompt-cache 0 keeps none: give it some MiB\n'], command[0]);
  }
});

/**
 * A spawned CLI's output as it comes (`got`): `until(what)` waits for it on stderr (or stdout, with 'out'), failing
 * with the output so far after a minute or once the process has ended and its output is all read.
 */
function watch(child: ReturnType<typeof spawn>) {
  const got = { out: '', err: '' };
  let closed = false; // its output all read (which may come after 'exit')
  child.stdout!.on('data', (d) => { got.out += d; });
  child.stderr!.on('data', (d) => { got.err += d; });
  child.on('close', () => { closed = true; });
  const until = async (what: RegExp, from: 'out' | 'err' = 'err') => {
    for (let t = 0; !what.test(got[from]); t++) {
      if (t > 3000 || closed) assert.fail(`no ${what} in:\n${got.out}\n${got.err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { got, until, exited: new Promise((r) => child.on('exit', r)) };
}

test('chat: Ctrl-C stops the reply being written (the turn left out) and the chat goes on; between turns it ends the chat', async () => {
  // The random model writes until the context is full (about a second): time to stop it.
  const child = spawn(process.execPath, [BIN, 'chat', '--model', model.dir, '--reasoning', 'off', '--max-tokens', '4000'], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  const { got, until, exited } = watch(child);
  try {
    const firstPiece = new Promise((r) => child.stdout.once('data', r));
    child.stdin.write('Hello there.\n');
    await firstPiece;
    child.kill('SIGINT');
    await until(/^\(stopped: this turn is left out of the conversation\)$/m);
    const stoppedAt = got.out.length;
    child.stdin.write('Hi\n');
    // (Its reply, a random model's, may be cut off before any answer: then its stats come with a note, and it is left out too.)
    const stats = /^\[direct; \d+ answer tokens? .*prompt (\d+) tokens/m;
    await until(stats);
    assert.ok(got.out.length > stoppedAt, 'the next turn was answered');
    // The next turn's prompt is its own question alone: the stopped turn is not in it.
    const prompt = Number(stats.exec(got.err)![1]);
    assert.ok(prompt < 30, `prompt ${prompt} tokens`);
    child.kill('SIGINT');
    assert.equal(await exited, 0, got.err);
  } finally {
    child.kill('SIGKILL'); // a failed assertion would leave it waiting on its input, and the test file with it
  }
});

test('serve: SIGTERM lets in-flight requests finish, a second signal or the end of --shutdown-grace cancels them (a second signal was ignored until the grace ran out)', async () => {
  for (const [grace, second] of [[600000, true], [300, false]] as const) {
    const child = spawn(process.execPath, [BIN, 'serve', '--model', model.dir, '--port', '0', '--shutdown-grace', String(grace)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const { got, until, exited } = watch(child);
    try {
      await until(/at (http:\/\/\S+)\/v1/, 'out');
      const base = /at (http:\/\/\S+)\/v1/.exec(got.out)![1];
      // The random model, greedy, writes 2000 tokens (about a second and a half).
      const res = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 2000, temperature: 0, stream: true, edgereason: { reasoning: 'off' } }) });
      const reader = res.body!.getReader(), text = new TextDecoder();
      let body = text.decode((await reader.read()).value);
      child.kill('SIGTERM');
      await until(/^edgereason: SIGTERM: finishing 1 in-flight request\(s\), then shutting down \(a second signal cancels them\)$/m, 'out');
      if (second) {
        child.kill('SIGINT');
        await until(/^edgereason: SIGINT: cancelling 1 in-flight request\(s\) now \(a third signal exits at once\)$/m, 'out');
      }
      for (let x = await reader.read(); !x.done; x = await reader.read()) body += text.decode(x.value);
      assert.match(body, /The server shut down before the request finished/);
      assert.equal(await exited, 0, got.err);
      const cancelled = second ? 'at the second signal' : 'after --shutdown-grace 300 ms';
      assert.match(got.out, new RegExp(`^edgereason: cancelled 1 request still running ${cancelled}\nedgereason: stopped$`, 'm'), got.out); // (unsaid: "stopped" alone)
    } finally {
      child.kill('SIGKILL');
    }
  }
});

test('chat on a terminal: Ctrl-C clears the line being typed (a fresh prompt, nothing asked), and on an empty line ends the chat on a line of its own', () => {
  // A pseudo-terminal, driven by Python's pty module: type, Ctrl-C, a question, Ctrl-C.
  const drive = `
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], sys.argv[2], 'chat', '--reasoning', 'off'])
out = b''
def read(until, seconds=60):
    global out
    end = time.time() + seconds
    while until not in out and time.time() < end:
        if select.select([fd], [], [], 0.1)[0]:
            try: out += os.read(fd, 4096)
            except OSError: return
for text, until in [(b'', b'> '), (b'half typed', b'half typed'), (b'\\x03', b'^C\\r\\n'), (b'Reverse the word sand.\\r', b'ms]'), (b'\\x03', b'never')]:
    os.write(fd, text) if text else None
    read(until, 5 if until == b'never' else 60)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
sys.stdout.write(out.decode(errors='replace'))`;
  const r = spawnSync('python3', ['-c', drive, process.execPath, BIN], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  const [code, ...rest] = r.stdout.split('\n'), screen = rest.join('\n').replace(/\x1b\[[\d;]*[A-Za-z]/g, '');
  assert.equal(code, '0', r.stdout + r.stderr);
  assert.match(screen, /> half typed\^C\r\n> Reverse the word sand\.\r\r\ndnas\r\n\[direct; 1 answer token; prompt 24 tokens, 0 of them from the prompt cache; TTFT [\d.]+ ms, \d+ ms\]\r\n> \r\n$/);
});

test('generate, answer and chat --prompt-lookup: the same text as without it; the stats say how many guesses were kept; a limit out of range is named', slow, () => {
  const story = ['--model', sharedPath('models/stories260K/stories260K.bin'), '--prompt', 'Once upon a time', '--max-tokens', '120', '--stats'];
  const [plain, fast] = [cli(['generate', ...story]), cli(['generate', ...story, '--prompt-lookup', '6'])];
  assert.equal(fast.status, 0, fast.stderr);
  assert.equal(fast.stdout, plain.stdout);
  const kept = /; (\d+) of (\d+) guessed tokens kept/.exec(fast.stderr);
  assert.ok(kept && +kept[1] > 0 && +kept[2] > +kept[1], fast.stderr);
  assert.doesNotMatch(plain.stderr, /guessed/);
  const question = ['--model', DEFAULT_DIR, '--question', 'Sara starts with 20 dollars. She spends 3 dollars on a lamp. She earns 3 dollars a day for 7 days. How much money does Sara have now, in dollars?', '--reasoning', 'on'];
  const [a, b] = [cli(['answer', ...question]), cli(['answer', ...question, '--prompt-lookup', '4'])];
  assert.equal(b.stdout, a.stdout);
  assert.match(b.stderr, /^tokens: prompt \d+, generated \d+ .*; \d+ of \d+ guessed tokens kept$/m);
  const turns = { input: 'Tom has 3 apples and buys 4 more. How many apples?\n' };
  const chat = (...extra: string[]) => spawnSync(process.execPath, [BIN, 'chat', '--reasoning', 'on', '--seed', '1', ...extra], { ...turns, encoding: 'utf8', cwd: ROOT });
  const reply = chat().stdout;
  assert.match(reply, /<\/think>/);
  const guessing = chat('--prompt-lookup', '4');
  assert.equal(guessing.stdout, reply);
  assert.match(guessing.stderr, /, \d+ ms; \d+ of \d+ guessed tokens kept(; seed \d+)?\]/);
  assert.doesNotMatch(chat().stderr, /guessed/);
  assert.match(cli(['generate', ...story, '--prompt-lookup', '65']).stderr, /--prompt-lookup must be an integer in \[0, 64\], got "65"/);
});

test('--rope-scaling, --rope-scale, --yarn-orig-ctx (llama.cpp\'s flags): generate gives the text of a config.json saying the same; convert keeps the scaling; misuse is named for every command that loads a model', slow, () => {
  // The embedded default (a trained model: its text moves with its RoPE), and a copy whose config.json says YaRN.
  const said = at('default-yarn');
  fs.mkdirSync(said);
  for (const f of ['model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(DEFAULT_DIR, f), path.join(said, f));
  const cfg = JSON.parse(fs.readFileSync(path.join(DEFAULT_DIR, 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(said, 'config.json'), JSON.stringify({ ...cfg, rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 64 } }));
  const gen = (dir: string, ...flags: string[]) => cli(['generate', '--model', dir, '--prompt', 'Tom has 12 apples and buys 7 more.', '--max-tokens', '24', ...flags]);
  const [plain, fromFile, chosen, none] = [gen(DEFAULT_DIR), gen(said), gen(DEFAULT_DIR, '--rope-scaling', 'yarn', '--rope-scale', '4', '--yarn-orig-ctx', '64'), gen(said, '--rope-scaling', 'none')];
  for (const r of [plain, fromFile, chosen, none]) assert.equal(r.status, 0, r.stderr);
  assert.equal(chosen.stdout, fromFile.stdout);
  assert.equal(none.stdout, plain.stdout);
  assert.notEqual(chosen.stdout, plain.stdout);
  // The shipped router and verifier record the scaling they were trained under (none): another is noted, the same is not.
  const probes = (...flags: string[]) => cli(['answer', '--model', DEFAULT_DIR, '--question', 'Reverse the word sand.', '--samples', '2', '--vote', 'verifier', ...flags]).stderr.split('\n').filter((l) => l.includes('RoPE'));
  assert.deepEqual(probes('--rope-scaling', 'linear', '--rope-scale', '2'), ['router', 'verifier'].map((w) => `edgereason: note: ${path.join(DEFAULT_DIR, `${w}.json`)} was trained on the model with RoPE scaling none, and it runs with linear ×2 here: the hidden states it ${w === 'router' ? 'routes by' : 'scores'} move with the RoPE; train-${w} with the same scaling makes a matching one`));
  assert.deepEqual(probes('--rope-scaling', 'none'), []);
  const out = at('default-yarn-onnx'), conv = cli(['convert', '--model', DEFAULT_DIR, '--out', out, '--rope-scaling', 'yarn', '--rope-scale', '4', '--yarn-orig-ctx', '64']);
  assert.match(conv.stdout, new RegExp(`^converted ${DEFAULT_DIR} → ${out} \\(fp32; RoPE yarn ×4 over 64 positions, 1024 positions\\) in [\\d.]+ s\\n$`));
  assert.equal(gen(out).stdout, fromFile.stdout);
  assert.deepEqual([gen(out, '--rope-scaling', 'linear', '--rope-scale', '2').stderr], [`edgereason: model: ${out} was converted with RoPE scaling yarn ×4 over 64 positions, not linear ×2; convert the source again with it: edgereason convert --model ${DEFAULT_DIR} --out <folder> --quant fp32 --lora-targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --rope-scaling linear --rope-scale 2\n`]);
  for (const [flags, message] of [
    [['--rope-scale', '2'], '--rope-scale goes with --rope-scaling: e.g. --rope-scaling yarn --rope-scale 4'],
    [['--yarn-orig-ctx', '2'], '--yarn-orig-ctx goes with --rope-scaling: e.g. --rope-scaling yarn --rope-scale 4'],
    [['--rope-scaling', 'yarn'], '--rope-scaling yarn needs --rope-scale <factor>: how many times the context is stretched (4 takes Qwen2.5\'s 32,768 positions to 131,072)'],
    [['--rope-scaling', 'linear', '--rope-scale', '2', '--yarn-orig-ctx', '64'], '--yarn-orig-ctx is YaRN\'s: leave it out with --rope-scaling linear'],
    [['--rope-scaling', 'none', '--rope-scale', '2'], '--rope-scaling none takes no --rope-scale'],
    [['--rope-scaling', 'yarn', '--rope-scale', '4096'], `${model.dir}: --rope-scale × its trained context (4096 × ${model.config.maxPositionEmbeddings} = ${4096 * model.config.maxPositionEmbeddings} positions) must be at most 1048576 (the RoPE table holds every position)`],
  ] as const) {
    // Each message once (generate), and each command that loads a model with one of them.
    const commands = [['generate', '--prompt', 'x'], ['answer', '--question', 'x'], ['eval', '--out', at('rope-eval.json')], ['serve', '--port', '0'], ['convert', '--out', at('rope-never')], ['chat'], ['train-router', '--out', at('rope-r.json'), '--adapter', ADAPTER_DIR], ['train-verifier', '--out', at('rope-v.json'), '--adapter', ADAPTER_DIR]];
    for (const command of flags[0] === '--rope-scale' ? commands : commands.slice(0, 1)) {
      const r = cli([command[0], '--model', model.dir, ...command.slice(1), ...flags]);
      assert.deepEqual([r.status, r.stderr], [1, `edgereason: ${message}\n`], command.join(' '));
    }
  }
  for (const [v, hint] of [['1', '; --rope-scaling none is RoPE unscaled'], ['0.5', ''], ['-2', ''], ['four', '']]) {
    assert.match(cli(['generate', '--model', model.dir, '--prompt', 'x', '--rope-scaling', 'linear', '--rope-scale', v]).stderr, new RegExp(`^edgereason: --rope-scale must be a number above 1 \\(how many times the context is stretched\\), got "${v}"${hint}\n`));
  }
  assert.match(cli(['chat', '--model', model.dir, '--rope-scaling', 'dynamic']).stderr, /^edgereason: --rope-scaling must be one of yarn, linear, none; got "dynamic"\n/);
  assert.deepEqual(['rope-never', 'rope-eval.json', 'rope-r.json', 'rope-v.json'].filter((f) => fs.existsSync(at(f))), []);
});

test('a --task file of one\'s own is checked as train-rl checks it, before any work: eval, train-router and train-verifier name a character the tokenizer lacks, and the routers a prompt too long for the context, by file:line', slow, () => {
  const task = (name: string, second: string) => {
    const f = at(name);
    fs.writeFileSync(f, [{ prompt: 'Tom has 5 apples. He buys 2 more. How many apples does he have?', answer: 7 }, { prompt: second, answer: 5 }].map((x) => JSON.stringify(x)).join('\n') + '\n');
    return f;
  };
  const euro = task('task-euro.jsonl', 'Tom has 5 € now. How many euros does he have?');
  const refusal = new RegExp(`^edgereason: ${euro.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: "prompt" holds "€", which the tokenizer has no token for`, 'm');
  for (const args of [['eval', '--out', at('euro-eval.json')], ['train-router', '--adapter', ADAPTER_DIR, '--limit', '1', '--val', '1', '--out', at('euro-router.json')], ['train-verifier', '--adapter', ADAPTER_DIR, '--limit', '1', '--val', '1', '--out', at('euro-verifier.json')]]) {
    const r = cli([args[0], '--model', DEFAULT_DIR, '--task', euro, ...args.slice(1)]);
    assert.equal(r.status, 1, args[0]);
    assert.match(r.stderr, refusal, args[0]);
  }
  const long = task('task-long.jsonl', `${'Tom has apples. '.repeat(400)}How many apples does he have?`);
  for (const [command, out] of [['train-router', 'long-router.json'], ['train-verifier', 'long-verifier.json']]) {
    const r = cli([command, '--model', DEFAULT_DIR, '--adapter', ADAPTER_DIR, '--task', long, '--limit', '1', '--val', '1', '--out', at(out)]);
    assert.match(r.stderr, new RegExp(`^edgereason: ${long.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: "prompt" has \\d+ tokens with the chat template, which leaves no room in the model's context of 1024 tokens for the adapter's invocation \\(1 token\\) and an answer: shorten it or leave it out$`, 'm'), command);
    assert.doesNotMatch(r.stderr, /base answers/, `${command}: before any work`);
  }
});

test('answer\'s transcript: one sample streams to stdout; of several, sample 0 streams to stderr and stdout gets the chosen one at the end', () => {
  const stream = () => { const s = { text: '', write: (t: string) => { s.text += t; return true; } }; return s; };
  const sample = (thinking: string, answer: string, tokens: number): SampleResult => ({ thinking, answer, tokens, thinkingTokens: 3, answerTokens: tokens - 5, meanLogprob: 0, finishReason: 'stop', tokenIds: [], logprobs: [], capped: false });
  const result = (samples: SampleResult[], chosen: number) => ({ route: 'reasoning', samples, chosen }) as unknown as AnswerResult;
  const run = (samples: number, r: AnswerResult) => {
    const out = stream(), err = stream(), t = transcript(out as unknown as NodeJS.WriteStream, undefined, samples, err as unknown as NodeJS.WriteStream);
    t.onRoute('reasoning', undefined);
    t.onText(0, 'thinking', '2 + 2 = 5');
    t.onText(0, 'answer', '#### 5');
    t.onText(1, 'thinking', 'never shown');
    t.end(r);
    return [out.text, err.text];
  };
  const wrong = sample('2 + 2 = 5', '#### 5', 9), right = sample('2 + 2 = 4\n', '#### 4', 9), open = { ...sample('2 + 2', '', 3) };
  assert.deepEqual(run(1, result([wrong], 0)), ['<think>\n2 + 2 = 5\n</think>\n\n#### 5\n', '']);
  assert.deepEqual(run(2, result([wrong, right], 1)), ['<think>\n2 + 2 = 4\n</think>\n\n#### 4\n', '<think>\n2 + 2 = 5\n</think>\n\n#### 5\n']);
  // A chosen sample whose thinking never closed is shown open, as it would have streamed.
  assert.equal(run(2, result([wrong, open], 1))[0], '<think>\n2 + 2\n');
  // One that closed with no answer after it, as streaming shows it (the tag, then the line's end).
  assert.equal(run(2, result([wrong, { ...sample('2 + 2', '', 5) }], 1))[0], '<think>\n2 + 2\n</think>\n\n');
  // --json: the transcript goes to stderr, which is where sample 0 streams: written once, the chosen one not again.
  const both = stream(), t = transcript(both as unknown as NodeJS.WriteStream, undefined, 2, both as unknown as NodeJS.WriteStream);
  t.onRoute('reasoning', undefined);
  t.onText(0, 'thinking', '2 + 2 = 5');
  t.onText(0, 'answer', '#### 5');
  t.end(result([wrong, right], 1));
  assert.equal(both.text, '<think>\n2 + 2 = 5\n</think>\n\n#### 5\n');
});

test('a --model through a folder that does not exist ("models/default/missing/..") is named as missing, not a bare ENOENT (the setup beside it was looked up by the path\'s normal form)', () => {
  fs.mkdirSync(at('beside', 'reasoning-adapter'), { recursive: true });
  const model = `${path.relative(ROOT, at('beside'))}/missing/..`; // (relative: an absolute path is resolved, which drops the "missing/..")
  assert.equal(cli(['answer', '--model', model, '--question', 'hi']).stderr, `edgereason: model: ${model} does not exist\n`);
});
