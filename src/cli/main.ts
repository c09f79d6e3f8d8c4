/** The `edgereason` command line: one thin subcommand per file, each parsing flags and calling the library. */
import fs from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { generateCommand } from './generate.ts';
import { convertCommand } from './convert.ts';
import { benchCommand } from './bench.ts';
import { demoCommand } from './demo.ts';
import { trainSftCommand } from './train-sft.ts';
import { evalCommand } from './eval.ts';
import { trainRlCommand } from './train-rl.ts';
import { serveCommand } from './serve.ts';
import { answerCommand } from './answer.ts';
import { chatCommand } from './chat.ts';
import { trainRouterCommand } from './train-router.ts';
import { trainVerifierCommand } from './train-verifier.ts';
import { exportTrlCommand } from './export-trl.ts';
import { cacheCommand } from './cache.ts';
import { version } from '../version.ts';
import { QUANTS, type Quant } from '../onnx/quant.ts';
import { checkDistinctBudgets, DEFAULT_BUDGETS } from '../reason/budget.ts';
import { shown } from '../show.ts';
import { expandHome } from '../io/source.ts';
import { HUB_FLAGS, resolveModelPath } from '../io/hub.ts';
import { withoutBom } from '../io/jsonl.ts';
import { lateProgress, onInterrupt } from '../train/progress.ts';

/**
 * Commander's own refusals in the form of edgereason's: "edgereason: <what>". A value a flag's parser refused is said
 * by that parser's message, which names the flag and the value (commander put "error: option '--max-tokens <n>'
 * argument 'abc' is invalid." before it); a value outside a flag's choices is said the same way.
 */
function commanderError(text: string): string {
  const invalid = /^error: option '([^']*)' argument '([^]*)' is invalid\. ([^]*?)\n?$/.exec(text);
  if (!invalid) return text.replace(/^error: /, 'edgereason: ');
  const [, flags, value, why] = invalid, flag = /--[\w-]+/.exec(flags)?.[0] ?? flags;
  const choices = /^Allowed choices are ([^]*)\.$/.exec(why);
  if (choices) return `edgereason: ${flag} must be one of ${choices[1]}; got ${shown(value)}\n`;
  return `edgereason: ${why.startsWith(flag) ? why : `${flag} ${shown(value)}: ${why}`}\n`;
}

export async function main(argv: string[]): Promise<void> {
  // Output piped into a reader that stops early (| head) ends the command quietly; output that cannot be written
  // (a full disk under > out.txt) ends it with one line, not a stack trace.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') console.error(`edgereason: cannot write the output: ${e.message}`);
    process.exit(e.code === 'EPIPE' ? 0 : 1);
  });
  const program = new Command('edgereason')
    .description('Small language models that reason efficiently on edge devices')
    .version(version(), '-V, --version', 'print the version')
    .showHelpAfterError('(add --help for the options)') // not the whole help (60 lines that scrolled the error away)
    .configureOutput({ outputError: (text, write) => write(commanderError(text)) }); // (inherited by the commands added after)
  // An empty value (an unset shell variable: --adapter "$ADAPTER") would otherwise mean "none" or "everything";
  // unquoted ($ADAPTER), the flag takes the next flag as its value, which then goes missing.
  // generate --prompt "" is meant: a model whose tokenizer adds BOS starts from it alone (as llama2.c's run.c).
  program.hook('preAction', (_, command) => {
    for (const o of command.options) {
      // --prompt - / --question - read the text from the standard input (long prompts exceed the shell's 128 KiB word)
      if ((o.long === '--prompt' || o.long === '--question') && command.getOptionValue(o.attributeName()) === '-') {
        // A question (or generate --chat's message) without the line ends after it (echo's, a file's), a Windows file's
        // CRLFs read as \n; generate's raw prompt is continued as given.
        const message = o.long === '--question' || !!command.getOptionValue('chat');
        const text = message ? readStdin(o.long).replace(/\r\n/g, '\n').replace(/\n+$/, '') : readStdin(o.long);
        if (!text.trim() && o.long === '--question') throw new Error(`--question -: the standard input ${text ? 'held only blank space' : 'was empty'}`);
        if (!text) console.error('edgereason: note: --prompt -: the standard input was empty'); // (the model's BOS alone, where its tokenizer adds one)
        command.setOptionValueWithSource(o.attributeName(), text, command.getOptionValueSource(o.attributeName()));
      }
      if (command.name() === 'generate' && o.long === '--prompt') continue;
      const v: unknown = command.getOptionValue(o.attributeName());
      if (v === '' || (Array.isArray(v) && v.includes(''))) throw new Error(`${o.long ?? o.flags} is empty; give it a value${o.mandatory ? '' : ' or leave it out'}`);
      // A path written --out=~/x reaches us as is (the shell expands ~ only at a word's start): expanded as it would be.
      const path = /<(dir|file|path|task|name=dir\.\.\.)>/.exec(o.flags), named = path?.[1].startsWith('name=') ?? false;
      const expand = (x: unknown) => (typeof x === 'string' ? home(x, named) : x); // --no-adapter's false stays
      if (path && v !== undefined) command.setOptionValueWithSource(o.attributeName(), Array.isArray(v) ? v.map(expand) : expand(v), command.getOptionValueSource(o.attributeName()));
    }
  });
  // --model and --adapter may name a Hugging Face model (hf:owner/name): read from the Hugging Face cache, downloaded
  // first. A hook of each command, added after the command's own (its --out checked first: outputs.ts beforeDownload).
  const resolveHub = async (_: Command, command: Command) => {
    for (const o of command.options) {
      if (!HUB_FLAGS.includes(o.long ?? '')) continue;
      const v: unknown = command.getOptionValue(o.attributeName()), named = o.flags.includes('name=');
      if (v === undefined) continue;
      const local = async (x: unknown) => {
        if (typeof x !== 'string') return x;
        const at = x.indexOf('=hf:'), name = !named ? '' : at > 0 ? x.slice(0, at + 1) : /^[^=/\\]*=/.exec(x)?.[0] ?? '';
        return name + await resolveWithProgress(x.slice(name.length));
      };
      const resolved = [];
      for (const x of Array.isArray(v) ? v : [v]) resolved.push(await local(x)); // one at a time: one bar each
      command.setOptionValueWithSource(o.attributeName(), Array.isArray(v) ? resolved : resolved[0], command.getOptionValueSource(o.attributeName()));
    }
  };
  // A flag that takes a value, followed by another of the command's flags as a word of its own (--name=--x is meant).
  // Checked before the subcommand parses its flags: commander would first report the flag that went missing (a
  // required one) or the value left over ("too many arguments"), neither of which names the cause. A subcommand's
  // own subcommands (bench decode) are checked before their action (preSubcommand fires on the program's only).
  const swallowed = (command: Command) => {
    const flags = new Set(command.options.flatMap((o) => [o.long, o.short]).filter(Boolean));
    const valued = new Set(command.options.filter((o) => o.required || o.optional).flatMap((o) => [o.long, o.short]).filter(Boolean));
    argv.forEach((word, i) => {
      const next = argv[i + 1];
      if (valued.has(word) && next !== undefined && flags.has(next.split('=')[0])) throw new Error(`${word} took the flag ${next} as its value: give ${word} a value (an unset shell variable?)`);
    });
  };
  program.hook('preSubcommand', (_, command) => swallowed(command));
  program.hook('preAction', (_, command) => { if (command.parent !== program) swallowed(command); });
  for (const add of [generateCommand, convertCommand, cacheCommand, trainSftCommand, trainRlCommand, evalCommand, answerCommand, chatCommand, trainRouterCommand, trainVerifierCommand, serveCommand, exportTrlCommand, benchCommand, demoCommand]) add(program);
  const leaves = (c: Command): Command[] => c.commands.flatMap((s) => (s.commands.length ? leaves(s) : [s]));
  let running: Command | undefined; // the command whose action failed, for its error's words
  for (const cmd of leaves(program)) cmd.hook('preAction', resolveHub).hook('preAction', () => { running = cmd; });
  // A misspelt required flag (--questions) is named as unknown, with commander's suggestion; commander checks the
  // required options first, and would only say that --question is missing.
  for (const cmd of program.commands as (Command & Hidden)[]) {
    const missing = cmd.missingMandatoryOptionValue.bind(cmd);
    cmd.missingMandatoryOptionValue = (option) => {
      const unknown = cmd.args.find((a) => a.startsWith('--'));
      if (unknown) cmd.unknownOption(unknown);
      missing(option);
    };
  }
  try {
    await program.parseAsync(argv);
  } catch (e) {
    const said = cliWords(e instanceof Error ? e.message : String(e));
    // (an adapter given as the model, to a command that takes none: the flag is another command's)
    const noAdapter = running && !running.options.some((x) => x.long === '--adapter');
    console.error(`edgereason: ${noAdapter ? said.replace(/\(--adapter\)/g, '(--adapter of answer, chat, generate, serve or eval)') : said}`);
    process.exitCode = 1;
    // A command that failed with a model open may leave its ONNX Runtime worker threads holding the process.
    setTimeout(() => process.exit(1), 2000).unref();
  }
}

/** A model or adapter argument's local path, with a progress bar while an hf: one downloads (Ctrl-C says how it goes on). */
async function resolveWithProgress(p: string): Promise<string> {
  const bar = lateProgress(`downloading ${p}`, 'MB');
  const off = p.startsWith('hf:') ? onInterrupt(process.stderr, () => { bar.stop(); return `download of ${p} stopped: the same command goes on from where it stopped`; }) : () => {};
  try {
    return await resolveModelPath(p, { onDownload: (done, total) => bar.update(Math.round(done / 1e6), Math.round(total / 1e6)) });
  } finally {
    off();
    bar.stop();
  }
}

/** The standard input's whole text, as given (an option's value "-"). */
function readStdin(flag: string): string {
  try {
    return withoutBom(fs.readFileSync(0, 'utf8'));
  } catch (e) {
    throw new Error(`${flag} -: cannot read the standard input (${(e as Error).message})`);
  }
}

/** `~` or `~/…` at the start of a path (`named`: of the path after a `name=`) as the home folder. */
const home = (p: string, named: boolean): string => {
  const name = named ? /^[^=/\\~]*=/.exec(p)?.[0] ?? '' : '';
  return name + expandHome(p.slice(name.length));
};

/** Commander's methods behind its error messages (not in its typings). */
interface Hidden { missingMandatoryOptionValue(option: unknown): void; unknownOption(flag: string): void }

/** The library's errors name API options; on the command line they are flags and commands. */
const CLI_WORDS: [RegExp, string][] = [
  // An API option named with its flag ("defaultVote (--vote)", "…: examples (--examples)", "verifier false (--no-verifier)"):
  // the flag alone (a word of a sentence, "a reasoning adapter (--adapter)", stays).
  [/\b[a-z]+(?:[A-Z][a-z0-9]*)+ \((--[a-z-]+)\)/g, '$1'], [/(^|: )([a-z]+) \(--\2\)/g, '$1--$2'], [/\bverifier false \(--no-verifier\)/g, '--no-verifier'],
  [/\bchat: true\b/g, '--chat'], [/\bnativeThinking\b/g, '--native-thinking'], [/\bor answer\(\)/g, 'or the answer command'],
  [/\bquant "(q4|q8|fp32)" or "(q4|q8|fp32)"/g, '--quant $1 or $2'], [/\bquant "(q4|q8|fp32)"/g, '--quant $1'], [/\bmaxTokens\b/g, '--max-tokens'], [/\bmaxThinkingTokens\b/g, '--max-thinking-tokens'], [/\breasoningMaxTokens\b/g, '--reasoning-max-tokens'],
  [/\bthe adapter option of loadModel\b/g, '--adapter'], [/\bchatTemplateKwargs\b/g, '--chat-template-kwargs'], [/(?<![\w."])ropeScaling\.factor\b/g, '--rope-scale'], [/(?<![\w."])ropeScaling\.originalMaxPositionEmbeddings\b/g, '--yarn-orig-ctx'], [/(?<![\w."])ropeScaling (yarn|linear|none)\b/g, '--rope-scaling $1'], [/\breasoning "(auto|on|off)"/g, '--reasoning $1']];
/**
 * A library message in the CLI's words (flags for API options), its control characters escaped: a parse error quotes
 * the bytes of the file it failed on, and a hostile one's escape sequences would reach the terminal (clear it, recolour it).
 */
export const cliWords = (message: string) => CLI_WORDS.reduce((m, [re, w]) => m.replace(re, w), message)
  .replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);

/** A flag that takes one of `choices`, refused as it is parsed (before a model is downloaded or loaded). */
export function choiceArg<T extends string>(name: string, choices: readonly T[]) {
  return (v: string): T => {
    if (!choices.includes(v as T)) throw new InvalidArgumentError(`${name} must be one of ${choices.join(', ')}; got "${v}"`);
    return v as T;
  };
}

export function intArg(name: string, min = 0, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = /^\s*[+-]?\d+\s*$/.test(v) ? Number(v) : NaN; // decimal digits only: not "", "0x10" or "1e3"
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      const range = min === -Number.MAX_SAFE_INTEGER ? 'within ±(2^53 − 1)' : max < Number.MAX_SAFE_INTEGER ? `in [${min}, ${max}]` : n > max ? `in [${min}, 2^53 − 1]` : `≥ ${min}`;
      throw new InvalidArgumentError(`${name} must be an integer ${range}, got "${v}"`);
    }
    return n;
  };
}

/** The seed of sampling (generate, answer, chat, eval): any safe integer, as the API takes (-1 asks for a fresh one: seedOrFresh). */
export const seedArg = () => intArg('--seed', -Number.MAX_SAFE_INTEGER);

/** generate's and eval's top-k, top-p and min-p flags (off by default). */
export const samplingFlags = (command: Command): Command => command
  .option('--top-k <k>', 'keep the k most likely tokens (0 = off)', intArg('--top-k'), 0)
  .option('--top-p <p>', 'nucleus sampling mass', floatArg('--top-p', 0, 1), 1)
  .option('--min-p <p>', 'drop tokens below p × the top probability', floatArg('--min-p', 0, 1), 0);

/**
 * generate's, answer's and chat's repetition, presence and frequency penalty flags (off by default; `ownDefault`: the
 * repetition penalty defaults to the model's generation_config.json's, as chat takes it).
 */
export const penaltyFlags = (command: Command, ownDefault = false): Command => command
  .addOption(new Option('--repetition-penalty <x>', 'divide the logits of tokens already in the prompt or output by x (multiply where negative), greedy too; 1 = off').argParser(positiveArg('--repetition-penalty')).default(1, ownDefault ? 'generation_config.json\'s, else 1' : undefined))
  .option('--presence-penalty <x>', 'subtract x from the logits of tokens the output holds (OpenAI\'s; -2 to 2)', floatArg('--presence-penalty', -2, 2))
  .option('--frequency-penalty <x>', 'subtract x per time a token occurs in the output (OpenAI\'s; -2 to 2)', floatArg('--frequency-penalty', -2, 2));

/** Notes (`who`: their prefix) for sampling flags given with --temperature 0, where they do nothing. */
export function noteGreedyFlags(o: { temperature: number; topK: number; topP: number; minP: number; seed?: number }, who: string): void {
  if (o.temperature !== 0) return;
  for (const [flag, set] of [['--top-k', o.topK !== 0], ['--top-p', o.topP !== 1], ['--min-p', o.minP !== 0], ['--seed', o.seed !== undefined]] as const) {
    if (set) console.error(`${who}: note: ${flag} has no effect at --temperature 0 (greedy)`);
  }
}

/** The --budgets option (train-rl, export-trl): its default shown as the flag takes it. */
export const budgetsOption = (description: string): Option => new Option('--budgets <list>', description).argParser(budgetsArg).default([...DEFAULT_BUDGETS], DEFAULT_BUDGETS.join(','));

/** --budgets: a comma-separated list of positive integers (thinking budget buckets). */
function budgetsArg(v: string): number[] {
  const budgets = v.split(',').map((b) => (/^\s*\d+\s*$/.test(b) ? Number(b) : NaN));
  if (budgets.some((b) => !Number.isSafeInteger(b) || b <= 0)) throw new InvalidArgumentError(`--budgets must list positive integers separated by commas, got "${v}"`);
  try { checkDistinctBudgets(budgets, '--budgets names'); } catch (e) { throw new InvalidArgumentError((e as Error).message); }
  return budgets;
}

/** A flag's decimal number ("0.8", "1e-4", "-2"); NaN for anything else (Number() reads "" and " " as 0, "0x10" as 16). */
const decimal = (v: string): number => (/^\s*[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*$/i.test(v) ? Number(v) : NaN);

export function floatArg(name: string, min = 0, max = Infinity) {
  return (v: string): number => {
    const n = decimal(v);
    if (!Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be a ${max === Infinity ? `finite number ≥ ${min}` : `number in [${min}, ${max}]`}, got "${v}"`);
    return n;
  };
}

/** A number above 0 (a learning rate, a LoRA alpha, a sampling temperature where 0 would make the run a no-op). */
export function positiveArg(name: string) {
  return (v: string): number => {
    const n = decimal(v);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a number above 0, got "${v}"`);
    return n;
  };
}

export function jsonObjectArg(name: string) {
  return (v: string): Record<string, unknown> => {
    let x: unknown;
    try { x = JSON.parse(v); } catch (e) { throw new InvalidArgumentError(`${name} must be a JSON object, got ${shown(v)} (${(e as Error).message})`); }
    if (x === null || typeof x !== 'object' || Array.isArray(x)) throw new InvalidArgumentError(`${name} must be a JSON object, got ${shown(v)}`);
    return x as Record<string, unknown>;
  };
}

export function quantArg(v: string): Quant {
  if (!(QUANTS as readonly string[]).includes(v)) throw new InvalidArgumentError(`--quant must be ${QUANTS.join(', ')}, got "${v}"`);
  return v as Quant;
}
