import { InvalidArgumentError, Option, type Command } from 'commander';
import { shortName } from '../io/hub.ts';
import { loadModel, type LoadOptions, type Model } from '../runtime/model.ts';
import type { RopeScalingChoice } from '../models/config.ts';
import { lateProgress } from '../train/progress.ts';
import { cliWords, floatArg, intArg } from './main.ts';
import { openPromptCacheFile, promptCacheOf } from '../runtime/prompt-cache.ts';
import { defaultModel } from '../models/embedded.ts';

/**
 * loadModel with a progress bar while a checkpoint's graph is built and quantised (shown when that takes a while),
 * and the cache's notes (a converted copy written or used) on stderr.
 */
export async function loadModelWithProgress(p: string, opts: LoadOptions = {}): Promise<Model> {
  const bar = lateProgress(`loading ${shortName(p)}`, 'M weights');
  try {
    return await loadModel(p, { ...opts, onProgress: bar.update, onNote: (note) => console.error(cliWords(note)) });
  } finally {
    bar.stop();
  }
}

/**
 * `--name <value>` and `--no-name` set one value, the last given winning silently: the function returned (called
 * at the start of the action) refuses the two together.
 */
export function negatedFlag(command: Command, name: string): () => void {
  const given = new Set<string>();
  command.on(`option:${name}`, () => given.add(`--${name}`)).on(`option:no-${name}`, () => given.add(`--no-${name}`));
  return () => { if (given.size > 1) throw new Error(`--${name} and --no-${name} contradict each other: give one of them`); };
}

/** --model of the commands that run a model (answer, chat, generate, serve): the embedded models/default unless given. */
export const modelOption = (): Option => new Option('--model <path>', 'base model: a Hugging Face folder, .gguf or llama2.c .bin file, a converted folder, or hf:owner/name (from the Hugging Face cache, downloaded once)')
  .default(defaultModel.dir, 'the embedded models/default');

/** --rope-scaling, --rope-scale and --yarn-orig-ctx, as llama.cpp names them: loadModel's ropeScaling (ropeScalingOf). */
export const ropeScalingOptions = (command: Command): Command => command
  .addOption(new Option('--rope-scaling <type>', 'RoPE scaling in place of the model\'s own: yarn or linear (with --rope-scale), or none (takes a checkpoint\'s YaRN away); e.g. --rope-scaling yarn --rope-scale 4 --yarn-orig-ctx 32768 gives Qwen2.5 and Qwen3 131,072 positions, as their cards say').choices(['yarn', 'linear', 'none']))
  .option('--rope-scale <factor>', 'how many times --rope-scaling stretches the context (above 1)', ropeScaleArg)
  .option('--yarn-orig-ctx <n>', 'the context YaRN stretches (default: the one the model was trained for)', intArg('--yarn-orig-ctx', 1));

/** --rope-scale: a number above 1. */
function ropeScaleArg(v: string): number {
  let n = NaN;
  try { n = floatArg('--rope-scale', -Infinity)(v); } catch { /* not a number: said below */ }
  if (!(n > 1)) throw new InvalidArgumentError(`--rope-scale must be a number above 1 (how many times the context is stretched), got "${v}"${n === 1 ? '; --rope-scaling none is RoPE unscaled' : ''}`);
  return n;
}

/** The RoPE scaling the flags of ropeScalingOptions choose; undefined without them. */
export function ropeScalingOf(o: { ropeScaling?: 'yarn' | 'linear' | 'none'; ropeScale?: number; yarnOrigCtx?: number }): RopeScalingChoice | undefined {
  const type = o.ropeScaling;
  if (type === undefined) {
    if (o.ropeScale !== undefined || o.yarnOrigCtx !== undefined) throw new Error(`${o.ropeScale !== undefined ? '--rope-scale' : '--yarn-orig-ctx'} goes with --rope-scaling: e.g. --rope-scaling yarn --rope-scale 4`);
    return undefined;
  }
  if (type === 'none') {
    if (o.ropeScale !== undefined || o.yarnOrigCtx !== undefined) throw new Error(`--rope-scaling none takes no ${o.ropeScale !== undefined ? '--rope-scale' : '--yarn-orig-ctx'}`);
    return { type };
  }
  if (o.ropeScale === undefined) throw new Error(`--rope-scaling ${type} needs --rope-scale <factor>: how many times the context is stretched (4 takes Qwen2.5's 32,768 positions to 131,072)`);
  if (o.yarnOrigCtx !== undefined && type !== 'yarn') throw new Error(`--yarn-orig-ctx is YaRN's: leave it out with --rope-scaling ${type}`);
  return { type, factor: o.ropeScale, ...(o.yarnOrigCtx !== undefined ? { originalMaxPositionEmbeddings: o.yarnOrigCtx } : {}) };
}

/** --prompt-lookup's help (generate, answer, chat, serve). */
export const PROMPT_LOOKUP_HELP = 'speculative decoding by prompt lookup: up to n next tokens guessed from where the last ones occurred before (in the prompt or the output) and checked in one step — the same tokens in fewer steps, where the text repeats its input; one sample at a time; 0 = off, at most 64';

/** --prompt-cache and --prompt-cache-file of `generate`, `answer` and `chat`, which read and save the prompt cache alike (serve words its own). */
export const promptCacheOptions = (command: Command): Command => command
  .option('--prompt-cache <MiB>', 'MiB of prompt KV caches kept, so that a prompt beginning like a kept one prefills only the rest (what --prompt-cache-file saves); default 256, or room for 4,096 prompt tokens where those take more (a 7B model\'s); 0: none', intArg('--prompt-cache', 0))
  .option('--prompt-cache-file <file>', 'read the prompt cache from this file at start (when it exists) and save it there at the end when something new was kept: a later run whose prompt begins alike (a long system prompt or document) prefills only the rest');

/** loadModel's promptCache for --prompt-cache (undefined: the default), refused with --prompt-cache-file at 0, which keeps nothing to save. */
export function promptCacheFlag(o: { promptCache?: number; promptCacheFile?: string }): number | undefined {
  if (o.promptCache === 0 && o.promptCacheFile !== undefined) throw new Error('--prompt-cache-file keeps the prompt cache, and --prompt-cache 0 keeps none: give it some MiB');
  return o.promptCache;
}

/** A stats line's "; 12 of 40 guessed tokens kept" for the guesses of --prompt-lookup (summed), or "" without them. */
export function guessesNote(guesses: readonly ({ made: number; kept: number } | undefined)[]): string {
  const g = guesses.filter((x) => x !== undefined);
  return g.length ? `; ${g.reduce((a, x) => a + x.kept, 0)} of ${g.reduce((a, x) => a + x.made, 0)} guessed tokens kept` : '';
}

/**
 * --prompt-cache-file: the model's prompt cache read from `file` now (when it exists; a failure closes the model);
 * the function returned saves it there when something new was kept (a failure is said, and the exit code is 1) and
 * closes the model.
 */
export async function withPromptCacheFile(model: Model, file: string | undefined, note: (line: string) => void = (l) => console.error(cliWords(l))): Promise<() => Promise<void>> {
  let kept: { save(): Promise<void> } | undefined;
  try {
    if (file !== undefined) kept = await openPromptCacheFile(promptCacheOf(model.backend)!, file, note);
  } catch (e) {
    await model.close();
    throw e;
  }
  return async () => {
    try {
      await kept?.save();
    } catch (e) {
      console.error(`edgereason: ${cliWords((e as Error).message)}`);
      process.exitCode = 1;
    } finally {
      await model.close();
    }
  };
}
