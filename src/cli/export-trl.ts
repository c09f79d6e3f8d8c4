/**
 * `edgereason export-trl`: the reasoning-adapter recipe as a Hugging Face TRL job, to train the same adapter at
 * scale on GPUs and bring it back (PEFT folders load here with --adapter).
 *
 * Writes to --out:
 *   data/sft/train.jsonl   TRL prompt-completion records, {"prompt": [turns], "completion": [assistant turn]} (the
 *                          synthetic reasoning traces of the default recipe, or the user's --data), or the user's
 *                          prompt/completion lines as they are; trained with completion_only_loss
 *   data/grpo/train.jsonl  {"prompt": [user], "control", "answer", "numeric", "budget"} — the RL prompts; "control" is
 *                          the budget line fed after the invocation; "numeric" keeps the gold's type for the grader
 *   sft.yaml, grpo.yaml    configs the scripts read (`trl sft --config sft.yaml` also trains a plain LoRA; GRPO needs train_grpo.py)
 *   train_sft.py           SFT with PEFT's activated LoRA (alora_invocation_tokens from the tokenizer), reading sft.yaml
 *   train_grpo.py, rewards.py  GRPO on the SFT adapter with the budget reward of src/train/rl.ts
 *   recipe.json            every hyper-parameter, the invocation, budgets and reward, in one place
 *   README.md              the commands
 */
import fs from 'node:fs';
import path from 'node:path';
import { Option, type Command } from 'commander';
import { DEFAULT_DIR, INVOCATION, reasoningConversations } from '../tasks/default-model.ts';
import { readJsonl } from '../train/data.ts';
import { atomicWrite, makeDir, writeAll } from '../io/safetensors.ts';
import { loadTokenizer } from '../tokenizer/hf.ts';
import { checkToolsRendered, jsonWithPythonNumbers, templateFor } from '../tokenizer/tool-calls.ts';
import { budgetSystemLine, checkDistinctBudgets, DEFAULT_BUDGETS } from '../reason/budget.ts';
import { invocationIds } from '../reason/answer.ts';
import { PROJECTIONS, type Projection } from '../models/config.ts';
import { checkGolds, rlPrompts } from './train-rl.ts';
import { parseTargets } from './train-sft.ts';
import { budgetsOption, floatArg, intArg, positiveArg } from './main.ts';
import { shown } from '../show.ts';
import { checkOutDir, expandPath } from './outputs.ts';

export interface ExportTrlOptions {
  out: string;
  /** Replace the files of a non-empty `out` (refused otherwise). */
  overwrite?: boolean;
  /**
   * Base model for TRL: a Hub id ("org/name") or a local Hugging Face folder, written to the configs as an absolute
   * path (the scripts run from inside the job folder). A local-looking path (/, ., ~, or one that exists) must be a
   * folder holding config.json.
   */
  baseModel: string;
  /**
   * Local tokenizer folder whose ids of the invocation recipe.json records (default: the base model when local). With
   * neither, the ids are left out (train_sft.py takes them from the base model's own tokenizer).
   */
  tokenizer?: string;
  /** User SFT data (edgereason JSONL: messages or prompt/completion); default: the synthetic reasoning traces. */
  data?: string;
  /** User RL prompts (JSONL of {"prompt","answer"}); default: the synthetic train split. */
  rlData?: string;
  examples?: number;
  rlPrompts?: number;
  rank?: number;
  alpha?: number;
  targets?: Projection[];
  invocation?: string;
  lr?: number;
  epochs?: number;
  budgets?: number[];
  group?: number;
  lambda?: number;
  beta?: number;
  rlLr?: number;
  rlSteps?: number;
  /** How rewards.py grades: synthetic (default for the synthetic prompts) or gsm8k (default for --rl-data), as train-rl's --grader. */
  grader?: 'synthetic' | 'gsm8k';
  /** Share of GRPO prompts without a budget line, held to the smallest budget (train-rl's --unbudgeted-share). */
  unbudgetedShare?: number;
  seed?: number;
}

export interface ExportTrlResult { files: string[]; sftExamples: number; grpoPrompts: number; recipe: Record<string, unknown> }

/** Minimal YAML for flat configs: JSON scalars and flow lists are valid YAML. */
function yaml(o: Record<string, unknown>, comment: string): string {
  // PyYAML (YAML 1.1) reads an exponent without a point (5e-7, JSON's) as a string: written 5.0e-7.
  const value = (v: unknown) => (typeof v === 'number' && /e/.test(String(v)) && !String(v).includes('.') ? String(v).replace('e', '.0e') : JSON.stringify(v));
  return `# ${comment}\n` + Object.entries(o).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}: ${value(v)}`).join('\n') + '\n';
}

/**
 * The base model as the job's configs name it: a local folder as an absolute path (refused when it does not exist or
 * is no Hugging Face folder), a Hub id as given. Local: starts with /, . or ~, or exists here; a Hub id is "org/name".
 */
function resolveBaseModel(base: string, flag = '--base-model'): { name: string; local: boolean } {
  if (typeof base !== 'string' || !base) throw new Error(`${flag} (baseModel) must be a Hugging Face Hub id ("org/name") or a local model folder, got ${shown(base)}`);
  const abs = expandPath(base);
  const looksLocal = /^[/.~]/.test(base) || base.includes('\\') || fs.existsSync(abs);
  if (!looksLocal) {
    if (!/^[\w.-]+(\/[\w.-]+)?$/.test(base)) throw new Error(`${flag} "${base}" is neither a local folder (it does not exist) nor a Hugging Face Hub id ("org/name")`);
    const first = base.split('/')[0];
    if (base.includes('/') && fs.existsSync(first) && fs.statSync(first).isDirectory()) {
      throw new Error(`${flag} ${base}: no such folder (${abs}), though ${first}/ exists here; give an existing local folder, or write a Hub id whose owner is not a local folder name`);
    }
    return { name: base, local: false };
  }
  if (!fs.existsSync(abs)) throw new Error(`${flag} ${base}: no such folder (${abs}); give a local Hugging Face folder or a Hub id ("org/name")`);
  if (!fs.statSync(abs).isDirectory() || !fs.existsSync(path.join(abs, 'config.json'))) throw new Error(`${flag} ${base}: not a Hugging Face model folder (no config.json in ${abs})`);
  return { name: abs, local: true };
}

/** What export-trl writes into --out, which must not be the local base model's folder. */
const JOB_FILES = ['data/sft/train.jsonl', 'data/grpo/train.jsonl', 'recipe.json', 'sft.yaml', 'grpo.yaml', 'rewards.py', 'train_sft.py', 'train_grpo.py', 'README.md'];
const outCheck = (overwrite: boolean | undefined, base: { name: string; local: boolean }) =>
  ({ what: 'TRL job', empty: true, overwrite, writes: JOB_FILES, inputs: base.local ? { '--base-model': base.name } : {} });

export function exportTrl(o: ExportTrlOptions): ExportTrlResult {
  const seed = o.seed ?? 0, rank = o.rank ?? 16, alpha = o.alpha ?? 2 * rank, targets = o.targets ?? [...PROJECTIONS];
  const invocation = o.invocation ?? INVOCATION, budgets = o.budgets ?? [...DEFAULT_BUDGETS];
  if (!budgets.length || budgets.some((b) => !Number.isInteger(b) || b <= 0)) throw new Error(`export-trl: budgets must be positive integers, got ${budgets}`);
  checkDistinctBudgets(budgets, 'export-trl: budgets name');
  if (!invocation) throw new Error('export-trl: the invocation is empty');
  // The numbers the CLI's flags check, checked for API callers too: a zero rate or alpha trains nothing.
  for (const [k, v] of [['lr', o.lr], ['rlLr', o.rlLr], ['alpha', alpha]] as const) {
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v > 0)) throw new Error(`export-trl: ${k} must be a number above 0, got ${shown(v)}`);
  }
  const grader = o.grader ?? (o.rlData ? 'gsm8k' : 'synthetic'); // (checked before the SFT data is built)
  if (grader !== 'synthetic' && grader !== 'gsm8k') throw new Error(`export-trl: grader (--grader) must be synthetic or gsm8k (how rewards.py grades), got ${JSON.stringify(grader)}`);
  // Counts of the synthetic data, which a file of one's own replaces whole: refused rather than ignored.
  if (o.data && o.examples !== undefined) throw new Error('export-trl: examples (--examples) counts synthetic SFT conversations; with your --data every record is exported: leave it out');
  if (o.rlData && o.rlPrompts !== undefined) throw new Error('export-trl: rlPrompts (--rl-prompts) counts synthetic GRPO prompts; with your --rl-data every prompt is exported: leave it out');
  const base = resolveBaseModel(o.baseModel);
  // The SFT rate and epochs of the embedded model's own adapter recipe for it; for a pretrained base, train-sft's.
  const sftDefaults = base.local && base.name === path.resolve(DEFAULT_DIR) ? { lr: 2e-3, epochs: 2 } : { lr: 2e-4, epochs: 1 };
  // The invocation's ids only from the tokenizer the job trains with (given, or the local base model's): another
  // one's ids (models/default's for a Qwen base) would be wrong, so without it they are left to train_sft.py.
  const tokDir = o.tokenizer ?? (base.local && fs.existsSync(path.join(base.name, 'tokenizer.json')) ? base.name : undefined);
  // Its ids as reasoning data holds it (before a newline, where the vocabulary has no "<think>" token: Qwen2.5's
  // "<th" "ink" ">\n"), which train_sft.py picks from the examples too.
  let tok: ReturnType<typeof loadTokenizer> | undefined;
  try { tok = tokDir ? loadTokenizer(tokDir) : undefined; } catch (e) { throw o.tokenizer ? new Error(`export-trl: tokenizer (--tokenizer) ${o.tokenizer}: ${(e as Error).message}`, { cause: e }) : e; }
  const invocationTokens = tok && invocationIds((t) => tok.encode(t, { addSpecialTokens: false }), invocation);
  if (invocationTokens && !invocationTokens.length) throw new Error(`export-trl: the invocation "${invocation}" encodes to no tokens with the tokenizer in ${tokDir}`);

  // SFT data in TRL's prompt-completion form, trained with completion_only_loss (TRL's assistant_only_loss needs
  // a template with {% generation %} markers, which Qwen's and the default model's lack): a conversation gives
  // one record per assistant turn that follows something, the turns before it as the prompt (train-sft trains
  // every assistant turn too, each as an example of its own with an activated-LoRA invocation).
  // The default recipe's adapter data (reasoningExamples), or the user's file, which must be all conversations
  // or all prompt/completion pairs (a TRL dataset has one format).
  let sft: Record<string, unknown>[];
  const text = (x: unknown) => (typeof x === 'string' ? x : Array.isArray(x) ? x.map((m) => String((m as { content?: unknown }).content ?? '')).join('\n') : '');
  if (o.data) {
    const records = readJsonl(o.data), conversations = records.filter((r) => 'messages' in r);
    // As train-sft: tools, calls and results a template never reads would be dropped by TRL unsaid.
    if (tok) for (const r of conversations) if ('messages' in r) checkToolsRendered(templateFor(tok, r.tools), r.messages, r.tools, 'the line\'s "tools"', `export-trl: ${o.data}:${r.line}`);
    if (conversations.length && conversations.length < records.length) {
      const odd = records.find((r) => !('messages' in r))!;
      throw new Error(`export-trl: ${o.data} mixes conversations ("messages") and prompt/completion lines (e.g. line ${odd.line}); a TRL dataset has one format: split the file`);
    }
    // A conversation's tools go with each of its turns (TRL's "tools" column, given to the chat template).
    sft = records.flatMap((r) => ('messages' in r ? turns(r.messages, r.trainFrom).map((t) => (r.tools ? { ...t, tools: r.tools } : t)) : [{ prompt: r.prompt, completion: r.completion }]));
    // As train-sft: the activated LoRA trains only from its invocation on, so a record without it teaches nothing.
    // A record holds it when its text does or, with the base model's tokenizer, when its conversation as the chat
    // template renders it does (Qwen3's writes "<think>" from a reply's reasoning_content, as TRL will render it).
    const holds = (r: Record<string, unknown>): boolean => {
      if ((text(r.prompt) + text(r.completion)).includes(invocation)) return true;
      if (!tok || !Array.isArray(r.prompt) || !Array.isArray(r.completion)) return false;
      try { return tok.applyChatTemplate([...r.prompt, ...r.completion], { vars: r.tools ? { tools: r.tools } : {} }).includes(invocation); } catch { return false; }
    };
    const without = sft.filter((r) => !holds(r)).length;
    if (without === sft.length) throw new Error(`export-trl: none of the ${sft.length} training records of ${o.data} holds the activated-LoRA invocation "${invocation}" (the adapter switches on there and trains only what follows): write it at the start of each reply, or set --alora-invocation`);
    if (without) console.error(`export-trl: note: ${without} of the ${sft.length} training records of ${o.data} do not hold the invocation "${invocation}" and train nothing`);
  } else {
    sft = reasoningConversations(o.examples ?? 24000, seed).flatMap((c) => turns([{ role: 'user', content: c.question }, { role: 'assistant', content: c.reply }]));
    if (!sft.some((r) => text(r.completion).includes(invocation))) {
      throw new Error(`export-trl: the invocation ${JSON.stringify(invocation)} (--alora-invocation) is not in the synthetic traces, which open their reasoning with ${JSON.stringify(INVOCATION)}: give your --data, or leave --alora-invocation out`);
    }
  }
  // GRPO prompts: the same prompts as train-rl, each with its budget bucket as the control text that follows the
  // invocation (train_grpo.py appends both to the chat-templated prompt, as answer() and train-rl feed them). As
  // in train-rl, a share of the prompts carries no control line and is held to the smallest budget.
  const prompts = rlPrompts(o.rlData ?? 'synthetic', o.rlPrompts ?? 4000, seed), share = o.unbudgetedShare ?? 0.25;
  if (o.rlData) checkGolds(prompts, grader, o.rlData);
  const grpo = prompts.map((p, i) => {
    const bare = Math.floor((i + 1) * share) > Math.floor(i * share), budget = bare ? Math.min(...budgets) : budgets[(i - Math.floor(i * share)) % budgets.length]; // cycling over the budgeted prompts
    return { prompt: [{ role: 'user', content: p.question }], control: bare ? '' : `\n${budgetSystemLine(budget)}`, answer: String(p.gold), numeric: typeof p.gold === 'number', budget };
  });

  const lora = { r: rank, lora_alpha: alpha, lora_dropout: 0, target_modules: targets, task_type: 'CAUSAL_LM', bias: 'none' };
  const recipe = {
    format: 'edgereason-trl-recipe', version: 1,
    base_model: base.name,
    lora,
    alora: tokDir
      ? { invocation, invocation_tokens: invocationTokens, tokenizer: path.resolve(tokDir), note: 'as the examples hold it: train_sft.py counts both forms ("<think>" alone, and before a newline) in them and takes the one they hold' }
      : { invocation, invocation_tokens: null, note: `no local tokenizer of ${base.name} was given (--tokenizer): train_sft.py encodes the invocation with the base model's tokenizer` },
    sft: { dataset: 'data/sft', examples: sft.length, learning_rate: o.lr ?? sftDefaults.lr, num_train_epochs: o.epochs ?? sftDefaults.epochs, per_device_train_batch_size: 16, max_length: 1024, seed },
    grpo: {
      dataset: 'data/grpo', prompts: grpo.length, budgets, num_generations: o.group ?? 8, prompts_per_step: 8, learning_rate: o.rlLr ?? 1e-4, max_steps: o.rlSteps ?? 160,
      beta: o.beta ?? 0, temperature: 1, max_completion_length: 2 * Math.max(...budgets), unbudgeted_share: share, seed,
      reward: { penalty: 'budget', grader, lambda: o.lambda ?? 3, formula: 'correct − min(1, λ·max(0, thinking − budget)/budget); −1 when </think> never comes' },
      ...(o.beta ? { kl_reference: 'TRL takes the KL term against the base model (the adapter disabled); train-rl against the starting SFT adapter' } : {}),
    },
  };

  checkOutDir(o.out, outCheck(o.overwrite, base));
  // The folders and files this run makes: removed when it fails part way (a full disk), so that the same command
  // can run again (a half-written job would be refused as another one's output).
  const made = [o.out, path.join(o.out, 'data'), path.join(o.out, 'data/sft'), path.join(o.out, 'data/grpo')].filter((d) => !fs.existsSync(d));
  const files: string[] = [], added: string[] = [];
  const keep = (rel: string, write: () => void) => {
    const existed = fs.existsSync(path.join(o.out, rel));
    write();
    files.push(rel);
    if (!existed) added.push(rel);
  };
  const write = (rel: string, text: string) => keep(rel, () => atomicWrite(path.join(o.out, rel), (fd) => writeAll(fd, Buffer.from(text))));
  // A data set is written a thousand lines at a time: as one string, a large one passes JavaScript's length limit.
  const writeJsonl = (rel: string, records: unknown[]) => keep(rel, () => atomicWrite(path.join(o.out, rel), (fd) => {
    for (let i = 0; i < records.length; i += 1000) writeAll(fd, Buffer.from(records.slice(i, i + 1000).map((r) => jsonWithPythonNumbers(r as Record<string, unknown>) + '\n').join('')));
  }));
  try {
    makeDir(path.join(o.out, 'data/sft'));
    makeDir(path.join(o.out, 'data/grpo'));
    writeJsonl('data/sft/train.jsonl', sft);
    writeJsonl('data/grpo/train.jsonl', grpo);
    write('recipe.json', JSON.stringify(recipe, null, 2) + '\n');
    const common = { model_name_or_path: base.name, use_peft: true, lora_r: rank, lora_alpha: alpha, lora_dropout: lora.lora_dropout, lora_target_modules: targets, seed, bf16: true, logging_steps: 10, report_to: 'none',
      // PEFT's activated LoRA finds its invocation in a forward hook, which gradient checkpointing (TRL's default)
      // runs twice: the adapter's gradients came out zero (peft#2826).
      gradient_checkpointing: false };
    write('sft.yaml', yaml({
      ...common, dataset_name: 'data/sft', output_dir: 'out/sft-adapter', learning_rate: recipe.sft.learning_rate, num_train_epochs: recipe.sft.num_train_epochs,
      per_device_train_batch_size: recipe.sft.per_device_train_batch_size, max_length: recipe.sft.max_length, completion_only_loss: true, lr_scheduler_type: 'cosine',
      // 3 % of the steps on one GPU, in steps: transformers 5.2 dropped warmup_ratio, and 4.x takes no fraction in warmup_steps.
      warmup_steps: Math.max(1, Math.ceil(0.03 * Math.ceil(recipe.sft.examples / recipe.sft.per_device_train_batch_size) * recipe.sft.num_train_epochs)),
    }, 'TRL SFT config (edgereason export-trl). Plain LoRA via `trl sft --config sft.yaml`; train_sft.py reads it and adds activated LoRA.'));
    write('grpo.yaml', yaml({
      ...common, dataset_name: 'data/grpo', output_dir: 'out/grpo-adapter', learning_rate: recipe.grpo.learning_rate, max_steps: recipe.grpo.max_steps,
      // TRL counts its batches in completions: a group per device batch, prompts_per_step groups per optimizer step (train-rl's 8 prompts × 8).
      num_generations: recipe.grpo.num_generations, per_device_train_batch_size: recipe.grpo.num_generations, gradient_accumulation_steps: recipe.grpo.prompts_per_step,
      max_completion_length: recipe.grpo.max_completion_length,
      temperature: recipe.grpo.temperature, beta: recipe.grpo.beta, reward_funcs: ['rewards.budget_reward'],
      // train-rl's optimisation: the loss summed over every token of the step's rollouts over their count (TRL's "dapo";
      // TRL's default has changed between versions), a constant learning rate, gradients clipped at norm 1, no decay.
      loss_type: 'dapo', lr_scheduler_type: 'constant', max_grad_norm: 1.0, weight_decay: 0,
    }, 'TRL GRPO config (edgereason export-trl) for train_grpo.py, which starts from the SFT adapter and appends the invocation and budget line to each prompt (`trl grpo --config` would do neither).'));
    write('rewards.py', REWARDS.replace('__LAMBDA__', String(recipe.grpo.reward.lambda)).replaceAll('__GRADER__', grader));
    write('train_sft.py', TRAIN_SFT.replace('__INVOCATION__', JSON.stringify(invocation)));
    write('train_grpo.py', TRAIN_GRPO.replace('__INVOCATION__', JSON.stringify(invocation)));
    write('README.md', readme(base.name, recipe));
  } catch (e) {
    for (const rel of added) fs.rmSync(path.join(o.out, rel), { force: true });
    for (const d of made.reverse()) try { fs.rmdirSync(d); } catch { /* holds something else */ }
    const replaced = files.length - added.length;
    throw new Error(`${(e as Error).message} (the files this run added to ${o.out} were removed${replaced ? `; the ${replaced} it replaced hold this run's version` : ''})`);
  }
  return { files, sftExamples: sft.length, grpoPrompts: grpo.length, recipe };
}

/**
 * One prompt-completion record per assistant turn that follows something, the turns before it as its prompt (from
 * `trainFrom` on: a conversational prompt's own assistant turns are context).
 */
function turns(messages: { role: string; content: string }[], trainFrom = 0): Record<string, unknown>[] {
  return messages.flatMap((m, i) => (m.role === 'assistant' && i > 0 && i >= trainFrom ? [{ prompt: messages.slice(0, i), completion: [m] }] : []));
}

/** rewards.py: a Python file beside this one (its __LAMBDA__ and __GRADER__ filled in). */
const REWARDS = fs.readFileSync(new URL('./trl-rewards.py', import.meta.url), 'utf8');

const TRAIN_SFT = `"""SFT of the reasoning adapter with PEFT's activated LoRA (written by edgereason export-trl).
Usage: python train_sft.py            (reads sft.yaml; needs torch, transformers, datasets, peft>=0.17, trl)"""
import sys
import yaml
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoTokenizer
from trl import SFTConfig, SFTTrainer

INVOCATION = __INVOCATION__

cfg = yaml.safe_load(open("sft.yaml"))
tok = AutoTokenizer.from_pretrained(cfg["model_name_or_path"])
dataset = load_dataset(cfg["dataset_name"], split="train")


def token_ids(row):
    if isinstance(row["prompt"], list):  # conversational prompt-completion
        text = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)  # transformers 5 returns a dict for tokenize=True
        return tok(text, add_special_tokens=False)["input_ids"]
    return tok(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"]


def holds(ids, run):
    return any(ids[i:i + len(run)] == run for i in range(len(ids) - len(run) + 1))


# PEFT switches the adapter on where these exact ids occur, and silently leaves it off (no gradient) where they do
# not. A tokenizer without a "<think>" token (Qwen2.5's) splits it differently in context, the newline after it
# joining its last piece ("<th" "ink" ">\\n"): then the invocation with its newline is what the examples hold.
sample = [token_ids(r) for r in dataset.select(range(min(200, len(dataset))))]
counts = {text: sum(holds(ids, tok.encode(text, add_special_tokens=False)) for ids in sample) for text in (INVOCATION, INVOCATION + "\\n")}
invocation = max(counts, key=counts.get)
if not counts[invocation]:
    sys.exit(f"train_sft.py: the invocation {INVOCATION!r} occurs as the same tokens in none of {len(sample)} examples (the tokenizer "
             "splits it differently in context), so the adapter would never switch on: export again with --alora-invocation "
             "set to the text as the completions hold it")
if invocation != INVOCATION:
    print(f"train_sft.py: the examples hold the invocation as {invocation!r} (with its newline, one token boundary later)")
invocation_tokens = tok.encode(invocation, add_special_tokens=False)
peft_config = LoraConfig(r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], lora_dropout=cfg["lora_dropout"],
                         target_modules=cfg["lora_target_modules"], task_type="CAUSAL_LM",
                         alora_invocation_tokens=invocation_tokens)
args = SFTConfig(output_dir=cfg["output_dir"], learning_rate=cfg["learning_rate"], num_train_epochs=cfg["num_train_epochs"],
                 per_device_train_batch_size=cfg["per_device_train_batch_size"], max_length=cfg["max_length"],
                 completion_only_loss=cfg["completion_only_loss"], lr_scheduler_type=cfg["lr_scheduler_type"],
                 gradient_checkpointing=cfg["gradient_checkpointing"], warmup_steps=cfg["warmup_steps"],
                 bf16=cfg["bf16"], seed=cfg["seed"], logging_steps=cfg["logging_steps"], report_to=cfg["report_to"])
trainer = SFTTrainer(model=cfg["model_name_or_path"], args=args, train_dataset=dataset, processing_class=tok, peft_config=peft_config)
trainer.train()
trainer.save_model(cfg["output_dir"])  # adapter_config.json + adapter_model.safetensors: npx edgereason serve --adapter reasoning=<dir>
`;

const TRAIN_GRPO = `"""GRPO with thinking budgets on the SFT adapter (written by edgereason export-trl).
Usage: python train_grpo.py out/sft-adapter      (reads grpo.yaml and rewards.py)"""
import sys
import yaml
from datasets import load_dataset
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

import rewards

INVOCATION = __INVOCATION__

cfg = yaml.safe_load(open("grpo.yaml"))
tok = AutoTokenizer.from_pretrained(cfg["model_name_or_path"])
rewards.TOKENIZER = tok
base = AutoModelForCausalLM.from_pretrained(cfg["model_name_or_path"], torch_dtype="auto")
# Rollouts sampled as the recipe says (train-rl's): the model's own generation_config.json (Qwen's sets top_p, top_k and a
# repetition penalty) must not reshape them, as it does under some TRL versions.
base.generation_config.update(temperature=cfg["temperature"], top_p=1.0, top_k=0, repetition_penalty=1.0)
model = PeftModel.from_pretrained(base, sys.argv[1], is_trainable=True)


# The invocation as the SFT adapter was trained with it ("<think>", or "<think>\\n" where the tokenizer joins the
# newline to it): PEFT switches the adapter on only where its exact ids occur.
invocation = tok.decode(model.peft_config["default"].alora_invocation_tokens or tok.encode(INVOCATION, add_special_tokens=False))


def render(row):
    # The chat-templated prompt, the invocation and the budget control line: the completion starts inside the thinking.
    # As answer() feeds it: no newline before the line after an invocation that ends in one, and the line's closing
    # newline where the tokenizer joins it to the line's last token (Qwen's ".\\n"), as the SFT traces hold it.
    control = row["control"][1:] if invocation.endswith("\\n") and row["control"].startswith("\\n") else row["control"]
    prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True) + invocation + control
    ids = lambda text: tok(text, add_special_tokens=False).input_ids
    line, closed = ids(prompt), ids(prompt + "\\n")
    if control and not (len(closed) == len(line) + 1 and closed[:len(line)] == line):
        prompt += "\\n"
    return {"prompt": prompt}


data = load_dataset(cfg["dataset_name"], split="train").map(render)
args = GRPOConfig(output_dir=cfg["output_dir"], learning_rate=cfg["learning_rate"], max_steps=cfg["max_steps"],
                  num_generations=cfg["num_generations"], per_device_train_batch_size=cfg["per_device_train_batch_size"],
                  gradient_accumulation_steps=cfg["gradient_accumulation_steps"],
                  max_completion_length=cfg["max_completion_length"], temperature=cfg["temperature"], beta=cfg["beta"],
                  loss_type=cfg["loss_type"], lr_scheduler_type=cfg["lr_scheduler_type"], max_grad_norm=cfg["max_grad_norm"],
                  weight_decay=cfg["weight_decay"], gradient_checkpointing=cfg["gradient_checkpointing"],
                  bf16=cfg["bf16"], seed=cfg["seed"], logging_steps=cfg["logging_steps"], report_to=cfg["report_to"])
trainer = GRPOTrainer(model=model, args=args, train_dataset=data, reward_funcs=[rewards.budget_reward], processing_class=tok)
trainer.train()
trainer.save_model(cfg["output_dir"])
`;

function readme(base: string, recipe: { sft: { examples: number }; grpo: { prompts: number; budgets: number[]; beta: number } }): string {
  const kl = recipe.grpo.beta ? `\nOne difference from \`edgereason train-rl\`: with beta ${recipe.grpo.beta}, TRL's KL term pulls the adapter towards the base model (PEFT's
adapter disabled); train-rl's pulls it towards the SFT adapter it started from.\n` : '';
  return `# edgereason → TRL

Base model: \`${base}\`. ${recipe.sft.examples} SFT examples (prompt-completion) in \`data/sft\`, ${recipe.grpo.prompts} GRPO prompts
(budgets ${recipe.grpo.budgets.join(', ')}) in \`data/grpo\`. All hyper-parameters: \`recipe.json\`.
${kl}
\`\`\`sh
pip install "torch" "transformers" "datasets" "peft>=0.17" "trl" pyyaml
python train_sft.py                       # activated LoRA (alora_invocation_tokens), → out/sft-adapter
python train_grpo.py out/sft-adapter      # thinking budgets, → out/grpo-adapter
# plain LoRA instead: trl sft --config sft.yaml
\`\`\`

Back in edgereason (the adapter folders are PEFT format):

\`\`\`sh
npx edgereason serve --model <base model folder> --adapter reasoning=out/grpo-adapter
\`\`\`
`;
}

export function exportTrlCommand(program: Command): void {
  program.command('export-trl')
    .description('write the reasoning-adapter recipe as a Hugging Face TRL job: datasets (synthetic or yours), SFT/GRPO configs and scripts')
    .requiredOption('--out <dir>', 'output folder (a non-empty one is refused without --overwrite)')
    .option('--overwrite', 'write into a non-empty --out, replacing the files of the same names')
    .addOption(new Option('--base-model <id|dir>', 'base model for TRL: a Hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct) or a local HF folder (written as an absolute path)').default(DEFAULT_DIR, 'the embedded models/default'))
    .option('--tokenizer <dir>', 'local tokenizer folder for the invocation token ids in recipe.json (default: the base model if local; for a Hub id without it, they are left to train_sft.py)')
    .option('--data <file>', 'your SFT JSONL ({"messages"} or {"prompt","completion"}); default: the synthetic reasoning traces')
    .option('--rl-data <file>', 'your RL prompts, JSONL of {"prompt","answer"}; default: the synthetic train split')
    .option('--grader <g>', 'how rewards.py grades: synthetic | gsm8k (default: synthetic for the synthetic prompts, gsm8k for --rl-data, as train-rl)')
    .option('--examples <n>', 'synthetic SFT conversations (as the default recipe)', intArg('--examples', 1, 1_000_000), 24000)
    .option('--rl-prompts <n>', 'synthetic GRPO prompts', intArg('--rl-prompts', 1, 1_000_000), 4000)
    .option('--lora-r <n>', 'LoRA rank', intArg('--lora-r', 1), 16)
    .option('--lora-alpha <a>', 'LoRA alpha (default: 2 × --lora-r, as train-sft)', positiveArg('--lora-alpha'))
    .option('--targets <list>', 'projections to adapt', 'q,k,v,o,gate,up,down')
    .option('--alora-invocation <text>', 'activated-LoRA invocation', INVOCATION)
    .option('--lr <lr>', 'SFT learning rate (default: 2e-3 for the embedded model, as its adapter was trained; 2e-4 for another, train-sft\'s for a pretrained model)', positiveArg('--lr'))
    .option('--epochs <n>', 'SFT epochs (default: 2 for the embedded model, 1 for another, as train-sft)', intArg('--epochs', 1))
    .addOption(budgetsOption('GRPO thinking budget buckets'))
    .option('--group <n>', 'GRPO completions per prompt', intArg('--group', 2), 8)
    .option('--lambda <x>', 'GRPO length penalty weight', floatArg('--lambda', 0), 3)
    .option('--beta <x>', 'GRPO KL weight', floatArg('--beta', 0), 0)
    .option('--rl-lr <lr>', 'GRPO learning rate', positiveArg('--rl-lr'), 1e-4)
    .option('--rl-steps <n>', 'GRPO steps (as train-rl\'s default)', intArg('--rl-steps', 1), 160)
    .option('--unbudgeted-share <x>', 'share of GRPO prompts without a budget line, held to the smallest budget', floatArg('--unbudgeted-share', 0, 1), 0.25)
    .option('--seed <s>', 'seed', intArg('--seed'), 0)
    .action((o, cmd: Command) => {
      checkOutDir(o.out, outCheck(!!o.overwrite, resolveBaseModel(o.baseModel)));
      const given = (k: string) => (cmd.getOptionValueSource(k) === 'default' ? undefined : o[k]); // a count typed, not the default
      const r = exportTrl({
        out: o.out, overwrite: !!o.overwrite, baseModel: o.baseModel, tokenizer: o.tokenizer, data: o.data, rlData: o.rlData, examples: given('examples'), rlPrompts: given('rlPrompts'),
        rank: o.loraR, alpha: o.loraAlpha, targets: parseTargets(o.targets), invocation: o.aloraInvocation, lr: o.lr, epochs: o.epochs,
        budgets: o.budgets, group: o.group, lambda: o.lambda, beta: o.beta, rlLr: o.rlLr, rlSteps: o.rlSteps, unbudgetedShare: o.unbudgetedShare, grader: o.grader, seed: o.seed,
      });
      console.log(`export-trl: ${r.sftExamples} SFT examples, ${r.grpoPrompts} GRPO prompts; wrote ${r.files.join(', ')} to ${o.out} (see README.md there)`);
    });
}
