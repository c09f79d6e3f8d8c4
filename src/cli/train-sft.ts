import { InvalidArgumentError, type Command } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { isModelFileFolder, modelPath, openSource } from '../io/source.ts';
import { hubRepo } from '../io/hub.ts';
import { PROJECTIONS, type Projection } from '../models/config.ts';
import { checkKnown, loadDatasetAsync, type Example } from '../train/data.ts';
import { lastIndexOfRun } from '../runtime/generate.ts';
import { invocationIds } from '../reason/answer.ts';
import type { TextTokenizer } from '../tokenizer/types.ts';
import { MAX_EPOCHS, trainSft } from '../train/sft.ts';
import { dtypeNamed } from '../train/save.ts';
import { lateProgress } from '../train/progress.ts';
import { readJsonFile, readTextFile } from '../io/jsonl.ts';
import { dirBytes, type SafetensorsDtype } from '../io/safetensors.ts';
import { budgetsOption, floatArg, intArg, positiveArg } from './main.ts';
import { beforeDownload, canonical, checkOutDir, lockTraining, removeStale, replacedArtefacts } from './outputs.ts';

/** q,k,v,o,gate,up,down (or full names) -> projection names. */
export function parseTargets(list: string, flag = '--targets'): Projection[] {
  const names = list.split(',').map((t) => t.trim()).filter(Boolean).map((t) => {
    const p = (t.endsWith('_proj') ? t : `${t}_proj`) as Projection;
    if (!PROJECTIONS.includes(p)) throw new Error(`${flag}: unknown target module "${t}" (use q,k,v,o,gate,up,down)`);
    return p;
  });
  if (!names.length) throw new Error(`${flag}: no projection named in ${JSON.stringify(list)} (use q,k,v,o,gate,up,down)`);
  return PROJECTIONS.filter((p) => names.includes(p)); // each once, in the model's order
}

/** --dtype: the dtype a --full output is written in. */
function dtypeArg(v: string): SafetensorsDtype {
  const d = dtypeNamed(v);
  if (!d) throw new InvalidArgumentError(`--dtype must be f32, bf16 or f16, got "${v}"`);
  return d;
}

/** The dtype a Hugging Face folder says its weights are in (config.json's torch_dtype, or dtype as newer transformers write it), else undefined. */
function folderDtype(dir: string): SafetensorsDtype | undefined {
  try {
    const c = readJsonFile(path.join(dir, 'config.json')) as Record<string, unknown>;
    const named = c.torch_dtype ?? c.dtype;
    return typeof named === 'string' ? dtypeNamed(named) : undefined;
  } catch { return undefined; }
}

const outCheck = (o: { out: string; full?: boolean; model: string; resume?: boolean; overwrite?: boolean }) =>
  checkOutDir(o.out, { what: o.full ? 'model' : 'adapter', inputs: { '--model': o.model }, resume: !!o.resume, overwrite: !!o.overwrite, command: 'train-sft' });

export function trainSftCommand(program: Command): void {
  program.command('train-sft')
    .description('supervised fine-tuning: a LoRA adapter (PEFT format) or, with --full, all weights')
    .requiredOption('--model <dir>', 'base model (Hugging Face folder, .gguf or llama2.c .bin, or hf:owner/name from the Hugging Face cache, downloaded once)')
    .requiredOption('--data <file>', 'training JSONL: {"messages":[...]} or {"prompt","completion"} (strings, or lists of chat messages as TRL writes them) per line')
    .option('--eval <file>', 'held-out JSONL for eval loss')
    .requiredOption('--out <dir>', 'output folder (adapter or model; checkpoints in <out>/checkpoint); one that holds a model, adapter or checkpoint is refused without --overwrite or --resume')
    .option('--lora-r <n>', 'LoRA rank', intArg('--lora-r', 1), 16)
    .option('--lora-alpha <a>', 'LoRA alpha (default: 2 × --lora-r, a scale of 2 whatever the rank)', positiveArg('--lora-alpha'))
    .option('--targets <list>', 'projections to adapt', 'q,k,v,o,gate,up,down')
    .option('--full', 'train every weight instead of a LoRA adapter (refused with --lora-r, --lora-alpha, --targets, --alora-invocation)')
    .option('--dtype <t>', 'with --full: f32, bf16 or f16, the dtype the weights are written in (default: the --model\'s own, as its config.json\'s torch_dtype says, else f32; trained in f32 either way)', dtypeArg)
    .option('--alora-invocation <text>', 'activated LoRA: the adapter acts from this token sequence on (e.g. "<think>"), and the loss counts only what follows it; LoRA only')
    .option('--budget-lines <share>', 'with --alora-invocation, for an adapter train-rl will budget-train: put a budget line ("Thinking budget: 96 tokens.", as answer --budget feeds it) after the invocation of this share of the traces (e.g. 0.3, the share of the embedded default\'s recipe), read, not trained, so that the adapter reads past it; train-rl notes an adapter that read none', floatArg('--budget-lines', 0, 1), 0)
    .addOption(budgetsOption('with --budget-lines: the budgets its lines name, one drawn per trace: the ones train-rl will train (its default buckets)'))
    .option('--lr <lr>', 'peak learning rate (default: 2e-4 for LoRA, 2e-5 with --full, as for fine-tuning a pretrained model; from scratch ~1e-3)', positiveArg('--lr'))
    .option('--epochs <n>', 'epochs', intArg('--epochs', 1, MAX_EPOCHS), 1)
    .option('--batch-tokens <n>', 'padded tokens per micro-batch', intArg('--batch-tokens', 2), 4096)
    .option('--accum <n>', 'micro-batches per optimizer step', intArg('--accum', 1), 1)
    .option('--max-len <n>', 'cut examples to this many tokens (default: --batch-tokens or the model\'s context, the smaller)', intArg('--max-len', 2))
    .option('--eval-every <n>', 'eval loss every n steps (with --eval; the eval loss is always taken at the end)', intArg('--eval-every', 1))
    .option('--checkpoint-every <n>', 'checkpoint every n steps, at the last step, and on Ctrl-C', intArg('--checkpoint-every', 1), 50)
    .option('--max-steps <n>', 'stop after n optimizer steps (the schedule still spans every epoch: --resume continues)', intArg('--max-steps', 1))
    .option('--seed <s>', 'seed for data order and LoRA init', intArg('--seed'), 0)
    .option('--resume', 'continue the run saved in <out>/checkpoint (same options; a larger or no --max-steps goes on)')
    .option('--overwrite', 'replace the model or adapter already in --out (its other training files are removed after)')
    // The flags that contradict each other are refused before anything is read or downloaded (an hf: model).
    .hook('preAction', (_, cmd) => {
      const o = cmd.opts(), given = (k: string) => cmd.getOptionValueSource(k) === 'cli';
      if (o.full) {
        const loraFlags = [['loraR', '--lora-r'], ['loraAlpha', '--lora-alpha'], ['targets', '--targets']].filter(([k]) => given(k)).map(([, f]) => f);
        if (loraFlags.length) throw new Error(`--full trains every weight, not a LoRA adapter: ${loraFlags.join(', ')} contradict${loraFlags.length === 1 ? 's' : ''} it; drop ${loraFlags.length === 1 ? 'it' : 'them'} or --full`);
        if (o.aloraInvocation !== undefined) throw new Error('--alora-invocation makes an activated LoRA adapter (acting from the invocation on); --full trains every weight, with no adapter to activate: drop one of them');
      }
      if (!o.full && o.dtype !== undefined) throw new Error('--dtype is the dtype of a --full run\'s weights; an adapter is written in float32, as PEFT writes it');
      if (o.budgetLines > 0 && o.aloraInvocation === undefined) throw new Error('--budget-lines puts budget lines after the adapter\'s invocation: it needs --alora-invocation (budget forcing trains an activated adapter)');
      if (given('budgets') && !(o.budgetLines > 0)) throw new Error('--budgets names the budgets of the lines --budget-lines puts in the traces: give --budget-lines too');
      parseTargets(o.targets);
      if (o.evalEvery !== undefined && !o.eval) throw new Error('train-sft: --eval-every would have no effect without --eval (no held-out set to take the loss on): give --eval <file>, or drop it');
      if (o.eval && canonical(o.eval) === canonical(o.data)) throw new Error(`--eval ${o.eval} is the --data file: its loss would be the training loss; give held-out examples (or leave --eval out)`);
    })
    .hook('preAction', beforeDownload(outCheck))
    .action(async (o) => {
      const targets = parseTargets(o.targets);
      // A whole model written beside a single-file one (a GGUF's folder) would give every GGUF there its tokenizer.json.
      if (o.full && isModelFileFolder(o.out, o.model)) throw new Error(`train-sft: --out ${o.out} is the folder of ${modelPath(o.model)}: the model's files would mix with it (every GGUF there would read the tokenizer.json written); choose another --out`);
      outCheck(o);
      const trained = lockTraining(o.out, 'train-sft'); // released when the process exits (Ctrl-C and errors end it, as after the run)
      const src = openSource(o.model), genConfig = path.join(src.path, 'generation_config.json');
      const genText = o.full && src.kind === 'hf' && fs.existsSync(genConfig) ? readTextFile(genConfig, 'a JSON file') : ''; // its sampling advice, for a --full output
      if (!src.weights) throw new Error(`train-sft: ${o.model} is a converted folder; train from the original checkpoint`);
      const perTurn = o.aloraInvocation !== undefined; // an activated LoRA trains each assistant turn as an example of its own
      // A large file takes minutes to tokenize: a bar once it has taken a second.
      const load = async (file: string, flag: string) => {
        const bar = lateProgress(`tokenizing ${flag} ${path.basename(file)}`, 'lines');
        try { return await loadDatasetAsync(file, src.tokenizer, perTurn, bar.update); } finally { bar.stop(); }
      };
      const train = await load(o.data, '--data'), evalSet = o.eval ? await load(o.eval, '--eval') : [];
      const invocation = o.aloraInvocation ? heldInvocation(src.tokenizer, o.aloraInvocation, train) : undefined;
      const before = replacedArtefacts(o.out, o); // recorded once the inputs load; removed after the run (or its --resume), where not rewritten
      const dtype = o.full ? o.dtype ?? (src.kind === 'hf' ? folderDtype(src.path) : undefined) ?? 'F32' : undefined; // a --full output in its base model's dtype
      const r = await trainSft(src.config, src.weights, train, evalSet, {
        out: o.out, full: !!o.full, ...(o.full ? {} : { rank: o.loraR, alpha: o.loraAlpha, targets, aloraInvocation: invocation }), handleSignals: true,
        ...(invocation ? { budgetLines: { share: o.budgetLines, budgets: o.budgets, tokenizer: src.tokenizer } } : {}), // (share 0 counts the traces holding one, for train-rl)
        lr: o.lr, epochs: o.epochs, batchTokens: o.batchTokens, accum: o.accum, maxLen: o.maxLen, evalEvery: o.evalEvery,
        checkpointEvery: o.checkpointEvery, maxSteps: o.maxSteps, seed: o.seed, resume: !!o.resume, baseModel: hubRepo(src.path) ?? src.path,
        ...(dtype ? { dtype } : {}),
        tokenizerFiles: src.tokenizerFiles, // a --full output folder gets the base model's tokenizer files, so it loads on its own
        ...(genText.trim() ? { generationConfig: genText } : {}), // and its sampling advice
        decode: (ids) => src.tokenizer.decode(ids),
      });
      trained();
      const stale = before ? removeStale(o.out, before) : [];
      if (stale.length) process.stderr.write(`train-sft: --overwrite: removed the earlier run's ${stale.join(', ')} from ${o.out}\n`);
      const last = r.evalLosses.at(-1);
      const stopped = r.steps < r.total ? ` (stopped at step ${r.steps} of ${r.total}: rerun with --resume and a larger or no --max-steps to continue)` : '';
      console.log(`trained ${r.steps} step${r.steps === 1 ? '' : 's'}${o.maxSteps !== undefined && r.steps < o.maxSteps ? ` (the whole schedule of ${o.epochs} epoch${o.epochs === 1 ? '' : 's'}, fewer than --max-steps ${o.maxSteps})` : ''}${stopped}; loss ${r.losses[0]?.toFixed(4)} → ${r.losses.at(-1)?.toFixed(4)}${last ? `; eval loss ${last[1].toFixed(4)}` : ''}; saved to ${r.out}${dtype ? ` (${dtype.toLowerCase()})` : ''} (loss curve: loss.svg)`);
      // A whole model's checkpoint is three times its float32 weights (the optimizer's two moments): said, where it is kept.
      const kept = path.join(r.out, 'checkpoint');
      if (o.full && fs.existsSync(kept)) console.error(`train-sft: note: ${kept} (${(dirBytes(kept) / 1e6).toFixed(0)} MB: the weights in float32 and the optimizer's moments) is kept for --resume${dtype !== 'F32' ? ' and holds the float32 weights the model was rounded from' : ''}; delete it once the model is all you need`);
    });
}

/**
 * The invocation's token ids as the training examples hold them: on its own ("<think>" is one token in Qwen3's
 * vocabulary), else as written before a newline (invocationIds: Qwen2.5's and Llama 3's vocabularies have no <think>
 * token, and "<think>\n" ends in one ">\n" token). Those ids are what the adapter records, so inference invokes it the same way.
 */
export function heldInvocation(tok: TextTokenizer, text: string, examples: readonly Pick<Example, 'ids' | 'source'>[]): number[] {
  const enc = (t: string) => tok.encode(t, { addSpecialTokens: false }), alone = enc(text), written = invocationIds(enc, text);
  if (!alone.length) throw new Error(`--alora-invocation "${text}" encodes to no tokens`);
  checkKnown(text, alone, tok, `--alora-invocation ${JSON.stringify(text)}`, 'be matched as'); // it read "no example holds the invocation's tokens [5]", the <unk>
  const held = (run: number[]) => examples.some((e) => lastIndexOfRun(e.ids, run) >= 0), holdsAlone = held(alone), holdsWritten = held(written);
  if (!holdsAlone && !holdsWritten) {
    // Written in the data but tokenized with what comes before it ("?<" in Qwen's vocabulary): said so, with the fix.
    const e = examples.find((x) => tok.decode(x.ids).includes(text));
    if (e) {
      const t = tok.decode(e.ids), at = t.indexOf(text), before = t[at - 1] ?? '', after = t[at + text.length] ?? '';
      const joins = (s: string) => lastIndexOfRun(enc(s), alone) < 0; // the invocation's tokens are not in its encoding
      const joinsBefore = !!before && joins(before + text);
      const where = joinsBefore ? `after ${JSON.stringify(before)} the tokenizer joins them` : after && joins(text + after) ? `the tokenizer joins it with the ${JSON.stringify(after)} after it` : 'the tokenizer joins it with the text around it';
      const fix = joinsBefore ? 'put a newline before it (end each prompt with "\\n", as chat templates end a turn)' : `put a newline after it, as a reasoning trace begins (${JSON.stringify(`${text}\n`)})`;
      throw new Error(`--alora-invocation ${JSON.stringify(text)}: the data writes it${e.source ? ` (e.g. ${e.source})` : ''}, but ${where} into other tokens, so no example holds the invocation's tokens [${alone}]: ${fix}`);
    }
  }
  if (holdsAlone || !holdsWritten) return alone; // training reports the examples without it
  process.stderr.write(`train-sft: --alora-invocation ${JSON.stringify(text)} is tokenized [${alone}] alone, but the data holds it before a newline: [${written}] (${JSON.stringify(`${text}\n`)}); the adapter is invoked by those tokens\n`);
  return written;
}
