import fs from 'node:fs';
import path from 'node:path';
import { seedOrFresh } from '../runtime/sampler.ts';
import { besideModel } from '../models/embedded.ts';
import { withoutBom } from '../io/jsonl.ts';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { guessesNote, modelOption, loadModelWithProgress, negatedFlag, PROMPT_LOOKUP_HELP, promptCacheFlag, promptCacheOptions, ropeScalingOf, ropeScalingOptions, withPromptCacheFile } from './load.ts';
import { answer, answerTemperature, checkNativeThinking, checkTrainedFile, thinksByItself } from '../reason/answer.ts';
import { loadProbes } from '../reason/probes.ts';
import { budgetNote } from '../reason/budget.ts';
import { decidesEarly, VOTE_METHODS } from '../reason/vote.ts';
import type { AnswerResult, Phase, ReasoningMode, Route, VoteMethod } from '../reason/types.ts';
import type { Model } from '../runtime/model.ts';
import type { Quant } from '../onnx/quant.ts';
import type { Router } from '../reason/router.ts';
import type { Verifier } from '../reason/verifier.ts';
import { TASKS, type Task } from '../tasks/grade.ts';
import { choiceArg, floatArg, intArg, jsonObjectArg, penaltyFlags, quantArg, seedArg } from './main.ts';
import { generationNotes, generationSampling, suggestedSampling } from '../io/hf-folder.ts';
import { dimmer, onInterrupt } from '../train/progress.ts';
import { compileJsonSchema } from '../runtime/json-constraint.ts';
import { fraction, shown } from '../show.ts';

/** Said when a Qwen3 (a thinking model) is used without --native-thinking or an adapter; `output` gets the thinking then. */
export const thinkingNote = (output: string): string => `edgereason: note: this model thinks by itself: --native-thinking routes, caps and votes its thinking; without it, any thinking is part of the ${output}, between its tags`;

export function answerCommand(program: Command): void {
  const command = program.command('answer')
    .description('answer a question, reasoning only when the router says so; streams the thinking and the answer')
    .addOption(modelOption());
  reasonerOptions(command);
  promptCacheOptions(ropeScalingOptions(penaltyFlags(command)
    .option('--verifier <file>', 'verifier.json for votes verifier / verifier-vote (default: <model>/verifier.json when present)')
    .requiredOption('--question <text>', 'the question (- reads it from the standard input)')
    .option('--samples <n>', 'parallel reasoning samples (one prefill, forked KV cache)', intArg('--samples', 1), 1)
    .option('--vote <method>', VOTE_METHODS.join(' | '), choiceArg('--vote', VOTE_METHODS), 'majority')
    .option('--early-stop', 'stop the other samples once the vote is decided')
    .option('--max-thinking-tokens <n>', 'thinking cap (then "\\n</think>\\n\\n" is forced)', intArg('--max-thinking-tokens', 0))
    .option('--budget <n>', 'thinking budget control line after <think> (budget-trained adapters)', intArg('--budget', 1))
    .option('--max-tokens <n>', 'tokens per sample (thinking + answer)', intArg('--max-tokens', 1), 512)
    .option('--temperature <t>', 'default 0 (greedy); 0.8 for several reasoning samples', floatArg('--temperature'))
    .option('--top-k <k>', 'top-k', intArg('--top-k'), 0)
    .option('--top-p <p>', 'nucleus mass', floatArg('--top-p', 0, 1), 0.95)
    .option('--min-p <p>', 'min-p', floatArg('--min-p', 0, 1), 0)
    .option('--seed <s>', 'seed of sample 0 (sample i uses seed + i; default or -1: a fresh one, printed at the end)', seedArg())
    .option('--grader <task>', `how answers are read for votes (as eval's and train-rl's --grader): ${TASKS.join(' | ')} (default: the answer stated — "#### n", "the answer is …", \\boxed{} — or the last number; a reply with neither by its whole text)`)
    .addOption(new Option('--task <task>').hideHelp()) // its earlier name: in eval and the trainers --task is the data
    .option('--adapter-mode <m>', 'activated (the adapter acts from its invocation on, over the prompt\'s KV cache) | classic (it acts on the whole prompt too, encoded again); default: activated for an activated LoRA adapter (alora_invocation_tokens), else classic', choiceArg('--adapter-mode', ['activated', 'classic']))
    .option('--quant <q>', 'q4, q8 or fp32', quantArg))
    .option('--response-format <format>', 'the answer is JSON (constrained decoding; thinking stays free): json_object (any object), a JSON schema, or @file.json holding one', responseFormatArg)
    .option('--json', 'print the whole result as JSON on stdout at the end (the streamed transcript goes to stderr)'))
    .hook('preAction', (_, c) => {
      const o = c.opts<{ task?: string; grader?: string; reasoning: string; vote: string; samples: number; earlyStop?: boolean }>();
      if (o.task !== undefined && o.grader !== undefined) throw new Error('--task is --grader\'s earlier name: give one of them');
      const grader = o.grader ?? o.task;
      if (grader !== undefined && !TASKS.includes(grader as Task)) throw new Error(`${o.task !== undefined ? '--task (now --grader)' : '--grader'} must be one of ${TASKS.join(', ')}; got "${grader}"`);
      if (o.reasoning !== 'off') refuseVoteFlags(o, 'answer');
    })
    .action(async (o, cmd: Command) => {
      if (o.task !== undefined) {
        console.error('edgereason: note: answer --task is now --grader (in eval and the trainers --task names the data)');
        o.grader = o.task;
      }
      noteReasoningOff(o, [['--samples', o.samples > 1], ['--vote', o.vote !== 'majority'], ['--early-stop', !!o.earlyStop]]);
      if (o.reasoning !== 'off') noteEarlyStop(o);
      // Greedy on every route: an explicit --temperature 0, or the default with one sample.
      if (o.temperature === 0 || (o.temperature === undefined && o.samples === 1)) {
        for (const [flag, set] of [['--top-k', o.topK !== 0], ['--top-p', o.topP !== 0.95], ['--min-p', o.minP !== 0], ['--seed', o.seed !== undefined]] as const) {
          if (set) console.error(`edgereason: note: ${flag} has no effect: answers are greedy ${o.temperature === 0 ? 'at --temperature 0' : 'with one sample unless --temperature is given'}`);
        }
        if (o.samples > 1) console.error(`edgereason: note: at --temperature 0 the ${o.samples} samples are all the same greedy answer; give a temperature above 0 to vary them`);
      }
      // A thinking model's own advice (Qwen3, DeepSeek-R1: greedy thinking tends to repeat itself): said, not applied.
      const own = generationSampling(o.model);
      const suggested = o.nativeThinking && o.temperature === undefined ? suggestedSampling(own) : undefined;
      if (suggested) console.error(`edgereason: note: ${o.samples > 1 ? `the ${o.samples} samples are drawn at temperature 0.8` : 'answers are greedy'} unless --temperature is given; ${path.join(o.model, 'generation_config.json')} suggests sampling this model's thinking with ${suggested}`);
      // Its repetition penalty is serve's default; answer applies one only when told.
      const penalty = own?.repetition_penalty;
      if (penalty !== undefined && cmd.getOptionValueSource('repetitionPenalty') !== 'cli') console.error(`edgereason: note: ${path.join(o.model, 'generation_config.json')} asks for repetition_penalty ${penalty}, which answer applies only when given --repetition-penalty ${penalty} (serve applies it by default)`);
      const seed: number = seedOrFresh(o.seed);
      const { model, router, verifier } = await loadReasoner(o, 'answer');
      for (const n of generationNotes(o.model)) console.error(`edgereason: note: ${n}`); // after the load, which refuses a source folder's broken file itself
      const finish = await withPromptCacheFile(model, o.promptCacheFile);
      const off = onInterrupt(process.stderr, () => `answer: interrupted before the answer was complete${o.json ? ': no JSON was written' : ''}`);
      try {
        const out = o.json ? process.stderr : process.stdout; // with --json, stdout holds the JSON alone
        // The score to the threshold's decimals (more where those would show the threshold as 0 or 1), so the two compare.
        const threshold = fraction(router?.threshold ?? 0, 3), decimals = threshold.length - threshold.indexOf('.') - 1;
        const logRoute = (route: string, score: number | undefined) => console.error(`route: ${route}${score === undefined ? '' : ` (router score ${score.toFixed(decimals)}, threshold ${threshold}${route === 'reasoning' && score < router!.threshold ? ': the direct answer was escalated by the gate' : ''})`}${route === 'reasoning' && o.samples > 1 ? `; streaming sample 0 of ${o.samples} here${o.json ? '' : ', the chosen one to stdout at the end'}` : ''}`);
        const input = o.system ? [{ role: 'system', content: o.system }, { role: 'user', content: o.question }] : o.question;
        const written = transcript(out, logRoute, o.samples);
        const r = await answer(model, input, {
          reasoning: o.reasoning as ReasoningMode, samples: o.samples, vote: o.vote as VoteMethod, earlyStop: !!o.earlyStop,
          maxThinkingTokens: o.maxThinkingTokens, budget: o.budget, maxTokens: o.maxTokens,
          temperature: o.temperature, topK: o.topK, topP: o.topP, minP: o.minP, repetitionPenalty: o.repetitionPenalty, presencePenalty: o.presencePenalty, frequencyPenalty: o.frequencyPenalty, seed,
          task: o.grader as Task, adapterMode: o.adapterMode, nativeThinking: !!o.nativeThinking, promptLookup: o.promptLookup,
          ...(o.chatTemplateKwargs ? { chatTemplateKwargs: o.chatTemplateKwargs } : {}), ...(o.responseFormat !== undefined ? { json: o.responseFormat } : {}),
          onRoute: written.onRoute, onText: written.onText,
        }, { router, verifier });
        written.end(r);
        if (r.finishReason === 'length') {
          // Cut before any answer: inside its thinking (a thinking cap is what makes room for one), or right after it closed.
          const cut = r.samples.filter((x) => x.finishReason === 'length'), none = r.route === 'reasoning' && cut.every((x) => !x.answerTokens);
          const open = none && cut.every((x) => x.tokens <= x.thinkingTokens), several = r.samples.length > 1 ? ' in every sample cut off' : '';
          // Which limit it was: the context's end (only a shorter prompt helps) or --max-tokens.
          const ctx = model.config.maxPositionEmbeddings, byContext = cut.every((x) => x.tokens < o.maxTokens);
          const limit = byContext ? `the model's context of ${ctx} tokens (the prompt takes ${r.usage.promptTokens})` : `--max-tokens ${o.maxTokens}`;
          console.error(open
            ? `edgereason: note: ${limit} ran out while the model was still thinking${several}, so there is no answer: ${byContext ? 'shorten the question' : 'raise --max-tokens'}, or ${o.maxThinkingTokens === undefined ? 'cap the thinking with --max-thinking-tokens (it then closes and answers)' : 'lower --max-thinking-tokens'}`
            : none ? `edgereason: note: the thinking closed, but ${limit} left no room for the answer${several}: ${byContext ? 'shorten the question' : `raise --max-tokens${o.maxThinkingTokens === undefined ? '' : ', or lower --max-thinking-tokens'}`}`
            : `edgereason: note: the answer was cut off by ${limit}${r.samples.length > 1 ? ', and no sample ended with an answer to vote on' : ''}; it may end mid-number: ${byContext ? 'shorten the question' : 'raise --max-tokens'}`);
        }
        // A reply that ended at its first token (an adapter trained off this format, say) shows nothing: said so.
        if (r.samples.every((x) => x.tokens === 0 && x.finishReason === 'stop')) console.error(`edgereason: note: the model ended its reply at once (its first token was an end token${r.samples.length > 1 ? ', in every sample' : ''}): there is nothing to show`);
        if (r.escalation) console.error(`escalated by the router's gate: the direct answer ${JSON.stringify(r.escalation.answer)} (${r.escalation.tokens} token${r.escalation.tokens === 1 ? '' : 's'}) had token ${r.escalation.at} at log-probability ${r.escalation.logprob.toFixed(3)}`);
        if (r.samples.length > 1) {
          console.error('\nsamples:');
          r.samples.forEach((s, i) => console.error(`  ${i === r.chosen ? '*' : ' '} ${i}: ${JSON.stringify(s.extracted ?? null)}  ${s.thinkingTokens} thinking + ${s.answerTokens} answer tokens, ${s.finishReason}${s.capped ? ', capped' : ''}, ${s.tokens ? `mean logprob ${s.meanLogprob.toFixed(3)}` : 'no tokens'}${s.verifierScore === undefined ? '' : `, verifier ${s.verifierScore.toFixed(3)}`}${s.flaws === undefined ? '' : `, ${s.flaws} flaw${s.flaws === 1 ? '' : 's'} in its work`}`));
          console.error(`chosen answer (sample ${r.chosen}): ${r.answer}`);
        }
        if (r.votes && r.samples.length > 1) console.error(`votes (${o.vote}): ${Object.entries(r.votes).map(([k, v]) => `${k}: ${+v.toFixed(3)}`).join(', ') || 'none'}`);
        const u = r.usage;
        // generated = thinking + the closing tag's tokens + answer (+ an escalation's dropped direct attempt)
        const dropped = r.escalation?.tokens ?? 0, tag = u.completionTokens - u.thinkingTokens - u.answerTokens - dropped;
        const parts = [`${u.thinkingTokens} thinking`, tag && `${tag} closing the thinking`, `${u.answerTokens} answer`, dropped && `${dropped} of the dropped direct answer`].filter(Boolean);
        const drawn = answerTemperature(o.temperature, r.route, o.samples) > 0;
        console.error(`tokens: prompt ${u.promptTokens}${u.cachedTokens ? ` (${u.cachedTokens} from the prompt cache)` : ''}, generated ${u.completionTokens}${r.route === 'reasoning' ? ` (${parts.join(' + ')})` : ''}; TTFT ${r.ttftMs.toFixed(1)} ms; latency ${r.latencyMs.toFixed(0)} ms${guessesNote(r.samples.map((s) => s.guesses))}${drawn ? `; seed ${seed}` : ''}`);
        // Flags for the thinking that a direct answer never used: said, so a budget that changed nothing is not mistaken for one that did.
        const unused = r.route === 'direct' ? [['--budget', o.budget !== undefined], ['--max-thinking-tokens', o.maxThinkingTokens !== undefined], ['--samples', o.samples > 1]].filter(([, set]) => set).map(([flag]) => flag) : [];
        if (unused.length && o.reasoning === 'auto') {
          console.error(model.adapter || o.nativeThinking ? `edgereason: note: the router answered directly, so ${unused.join(' and ')} had no effect (--reasoning on reasons whatever the router says)`
            : `edgereason: note: ${unused.join(' and ')} had no effect: without a reasoning adapter every question is answered directly`);
        }
        // (the seed as the stderr line gives it: a script reading the JSON can run it again)
        if (o.json) console.log(JSON.stringify({ ...r, samples: r.samples.map(({ hidden, ...s }) => s), ...(drawn ? { seed } : {}) }, null, 1));
      } finally {
        off();
        await finish();
      }
    });
}

/** Notes the flags given that apply to reasoning alone (the thinking cap and budget, and `more`) when it is off. */
export function noteReasoningOff(o: { reasoning: string; maxThinkingTokens?: number; budget?: number }, more: [string, boolean][] = []): void {
  if (o.reasoning !== 'off') return;
  for (const [flag, set] of [...more, ['--max-thinking-tokens', o.maxThinkingTokens !== undefined], ['--budget', o.budget !== undefined]] as const) {
    if (set) console.error(`edgereason: note: ${flag} applies to reasoning; it has no effect with --reasoning off`);
  }
}

/**
 * The options `answer` and `chat` share for what answers and how it is asked (the reasoning adapter, the router, the
 * system message, the chat template's variables, the reasoning mode), added to `command` with a hook refusing the
 * ones that contradict each other before its action.
 */
export function reasonerOptions(command: Command): void {
  command
    .option('--adapter <dir>', 'reasoning adapter (default: <model>/reasoning-adapter when present, as serve)')
    .option('--no-adapter', 'the base model alone (reasoning off, unless --native-thinking)')
    .option('--native-thinking', 'the model thinks by itself (e.g. Qwen3): reason with its own weights, no adapter; the direct route answers after an empty thinking block')
    .option('--router <file>', 'router.json for reasoning auto (default: <model>/router.json when present; without one, auto reasons)')
    .option('--no-router', 'no router, not even <model>/router.json: reasoning auto reasons on every question')
    .option('--system <text>', 'system message')
    .option('--chat-template-kwargs <json>', 'variables for the chat template, e.g. \'{"enable_thinking": false}\'', jsonObjectArg('--chat-template-kwargs'))
    .option('--reasoning <mode>', 'auto | on | off', choiceArg('--reasoning', ['auto', 'on', 'off']), 'auto')
    .option('--prompt-lookup <n>', PROMPT_LOOKUP_HELP, intArg('--prompt-lookup', 0, 64), 0);
  const checks = ['adapter', 'router'].map((name) => negatedFlag(command, name));
  // Refused as parsed, before an hf: model downloads (main.ts resolves it in a later hook) or anything is noted.
  command.hook('preAction', (_, c) => {
    const o = c.opts() as Pick<ReasonerFlags, 'nativeThinking' | 'adapter' | 'adapterMode' | 'budget' | 'promptCache' | 'promptCacheFile'>;
    for (const check of checks) check();
    promptCacheFlag(o);
    if (o.nativeThinking && typeof o.adapter === 'string') throw new Error('--native-thinking reasons with the model\'s own weights: leave --adapter out');
    if (o.nativeThinking && o.adapterMode !== undefined) throw new Error('--adapter-mode applies to a reasoning adapter, not to --native-thinking');
    if (o.nativeThinking && o.budget !== undefined) throw new Error('--budget is the control line a budget-trained (RL) adapter reads; with --native-thinking cap the thinking with --max-thinking-tokens');
  });
}

/** The flags `answer` and `chat` share for what answers: the model, its reasoning adapter, router and verifier. */
export interface ReasonerFlags {
  model: string; adapter?: string | false; nativeThinking?: boolean; router?: string | false; verifier?: string;
  reasoning: string; vote?: string; budget?: number; adapterMode?: string; quant?: Quant; chatTemplateKwargs?: Record<string, unknown>;
  ropeScaling?: 'yarn' | 'linear' | 'none'; ropeScale?: number; yarnOrigCtx?: number; promptCache?: number; promptCacheFile?: string;
}

/**
 * The model with its reasoning adapter (default: <model>/reasoning-adapter) and, for reasoning auto, its router
 * (<model>/router.json), and a verifier for the verifier votes; each file is checked before the model loads, and notes
 * go to stderr. `what`: the output a thinking model's thinking would be part of without --native-thinking; `command` names refusals.
 */
export async function loadReasoner(o: ReasonerFlags, what: string, command = 'answer'): Promise<{ model: Model; router?: Router; verifier?: Verifier }> {
  const beside = (f: 'adapter' | 'router' | 'verifier') => besideModel(o.model, f);
  // --no-adapter gives false; no flag, the adapter beside the model when there is one (a folder of that name that
  // holds no adapter, a copy cut short, is refused by the load, naming what is missing: it was passed over unsaid)
  if (o.adapter === undefined && !o.nativeThinking && o.reasoning !== 'off' && beside('adapter')) {
    o.adapter = beside('adapter');
    console.error(`adapter: ${o.adapter} (the default; --no-adapter for the base model alone)`);
  }
  const declined = o.adapter === false; // --no-adapter: the base model alone, asked for
  if (o.adapter === false) o.adapter = undefined;
  const budgetNoted = o.budget !== undefined && typeof o.adapter === 'string' ? budgetNote(o.adapter, o.budget) : undefined;
  if (budgetNoted) console.error(`edgereason: note: ${budgetNoted}; --max-thinking-tokens caps any adapter's thinking`);
  const reasons = !!o.adapter || !!o.nativeThinking;
  const routerFile: string | undefined = o.router === false ? undefined : o.router ?? (o.reasoning === 'auto' && reasons ? beside('router') : undefined);
  const verifierFile: string | undefined = o.verifier ?? (o.vote?.startsWith('verifier') ? beside('verifier') : undefined);
  // Refused before the model loads (answer() would refuse them once it has).
  if (o.reasoning === 'on' && !reasons) throw new Error(`${command}: --reasoning on needs a reasoning adapter (--adapter, or reasoning-adapter/ in the model folder${declined ? '; --no-adapter leaves it out' : ''}), or --native-thinking for a model that thinks by itself (e.g. Qwen3)`);
  if (o.vote?.startsWith('verifier') && !verifierFile && reasons && o.reasoning !== 'off') throw new Error(`${command}: --vote ${o.vote} needs a verifier: --verifier <file> (train-verifier trains one), or verifier.json in the model folder`);
  const noThinking = o.chatTemplateKwargs?.enable_thinking === false; // the template's switch: a direct answer
  if (o.reasoning === 'auto' && reasons && !routerFile && !noThinking && o.router !== false) console.error('edgereason: note: no router (--router, or router.json in the model folder): reasoning auto reasons on every question');
  // A router or verifier trained for the other kind of reasoning is refused before the model loads (with
  // --native-thinking after the model is found to think by itself, which is the first thing to say when it cannot).
  const checkFiles = () => {
    for (const [kind, file] of [['router', routerFile], ['verifier', verifierFile]] as const) {
      let metadata: unknown;
      // A regular file only: a pipe (<(cat router.json)) is read once, by the load.
      try { metadata = file && fs.statSync(file).isFile() && JSON.parse(fs.readFileSync(file, 'utf8')).metadata; } catch { /* Router.load / Verifier.load name the problem */ }
      if (file && metadata && typeof metadata === 'object') checkTrainedFile(kind, file, metadata as Record<string, unknown>, !!o.nativeThinking);
    }
  };
  if (!o.nativeThinking) checkFiles();
  const model = await loadModelWithProgress(o.model, { adapter: o.adapter || undefined, quant: o.quant, ropeScaling: ropeScalingOf(o), promptCache: promptCacheFlag(o) });
  try {
    if (o.nativeThinking) {
      checkNativeThinking(model, command);
      // (said before a router or verifier trained for an adapter is refused: the advice to train one for the model's own thinking would be wrong)
      if (!thinksByItself(model)) console.error(`${command}: note: this model's chat template does not think by itself (as Qwen3's and DeepSeek-R1's do): --native-thinking asks for a thinking it may never have learned; give it a reasoning adapter (--adapter) instead`);
      checkFiles();
    }
    if (o.adapterMode === 'classic' && model.adapter?.config.aloraInvocationTokens) console.error(`${command}: note: --adapter-mode classic applies ${model.adapter.dir}, an activated LoRA adapter (trained to act from its invocation on), to the whole prompt too: its answers are not what it was trained to give (the mode measures a re-encoded prompt's cost, and runs plain LoRA adapters)`);
    if (!reasons && thinksByItself(model)) console.error(thinkingNote(what));
    else if (!reasons && !declined && o.reasoning === 'auto') console.error(`edgereason: note: no reasoning adapter (--adapter, or reasoning-adapter/ in the model folder): every question is answered directly`);
    return {
      model, ...loadProbes({ router: routerFile, verifier: verifierFile }, {
        config: model.config, native: !!o.nativeThinking, adapters: model.adapter ? [model.adapter] : [], names: model.names, onNote: (n) => console.error(`edgereason: ${n}`),
      }),
    };
  } catch (e) {
    await model.close();
    throw e;
  }
}

/** answer's and eval's refusal of the flags that combine samples with one sample (they would do nothing). */
export function refuseVoteFlags(o: { earlyStop?: boolean; vote: string; samples: number }, command: string): void {
  for (const [flag, set] of [['--vote', o.vote !== 'majority'], ['--early-stop', !!o.earlyStop]] as const) if (set && o.samples === 1) throw new Error(`${command}: ${flag} combines several samples: give --samples N (N ≥ 2)`);
}

/** answer's and eval's note of --early-stop beside a vote decided only once every sample has ended. */
export function noteEarlyStop(o: { earlyStop?: boolean; vote: string }): void {
  if (o.earlyStop && !decidesEarly(o.vote as VoteMethod)) console.error(`edgereason: note: --early-stop has no effect with --vote ${o.vote}: it is decided once every sample has ended (a later one may score higher)`);
}

/**
 * answer()'s onRoute / onText writing sample 0's transcript to `out` as the model writes it (the thinking dimmed,
 * between its tags), and `end`, which closes it. With several reasoning samples, sample 0 streams to stderr instead and
 * `end` writes the chosen sample's transcript to `out`: what a pipe gets is the answer the vote chose.
 */
export function transcript(to: NodeJS.WriteStream, onRoute?: (route: Route, score: number | undefined) => void, samples = 1, side: NodeJS.WriteStream = process.stderr) {
  // The reasoning route's "<think>" is written with what follows it: a run that fails before its first token (a model
  // that cannot think) leaves nothing on stdout.
  let out = to, dim = dimmer(out), phase: Phase | undefined, last = '', opening = false;
  const open = () => { if (opening) out.write(dim('<think>\n')); opening = false; };
  return {
    onRoute: (route: Route, score: number | undefined) => {
      onRoute?.(route, score);
      if (route !== 'reasoning') return;
      if (samples > 1) { out = side; dim = dimmer(out); }
      opening = true;
      phase = 'thinking';
    },
    onText: (sample: number, ph: Phase, piece: string) => {
      if (sample !== 0) return;
      open();
      if (ph !== phase) {
        if (ph === 'thinking') out.write(dim('<think>\n'));
        else if (phase === 'thinking') out.write(dim(`${closeTag(last)}\n`)); // the transcript as written
        phase = ph;
      }
      out.write(ph === 'thinking' ? dim(piece) : piece);
      last = piece;
    },
    end: (r: AnswerResult) => {
      // A thinking that closed with nothing after it (or only blank around it) streamed no piece of the answer: its
      // closing tag is shown all the same.
      const s0 = r.samples[0];
      open();
      if (r.route === 'reasoning' && phase === 'thinking' && s0 && s0.tokens > s0.thinkingTokens) out.write(dim(closeTag(last)));
      out.write('\n');
      if (out === to) return;
      // The chosen sample, as it would have streamed (its thinking closed, unless it never was).
      const c = r.samples[r.chosen], d = dimmer(to), closed = c.tokens > c.thinkingTokens;
      to.write(d(`<think>\n${c.thinking}`) + (closed ? d(closeTag(c.thinking)) + (c.answer && `\n${c.answer}`) : '') + '\n');
    },
  };
}

/** The closing tag after the thinking `text` (on a line of its own). */
const closeTag = (text: string): string => `${text.endsWith('\n') ? '' : '\n'}</think>\n`;

/** --response-format: json_object, a JSON schema inline, or @file with one; the schema is checked here, naming the flag (and file). */
function responseFormatArg(v: string): true | Record<string, unknown> {
  if (v === 'json_object') return true;
  const file = v.startsWith('@') ? v.slice(1) : undefined, where = file ? `--response-format ${file}` : '--response-format';
  let text = v, schema: unknown;
  if (file !== undefined) try { text = withoutBom(fs.readFileSync(file, 'utf8')); } catch (e) { throw new InvalidArgumentError(`${where}: cannot read the schema file (${(e as Error).message})`); }
  try { schema = JSON.parse(text); } catch (e) { throw new InvalidArgumentError(`${where} must be json_object, a JSON schema or @file.json holding one; ${file ? 'the file is not JSON' : `got ${shown(v)}`} (${(e as Error).message})`); }
  if (!schema || typeof schema !== 'object' || Array.isArray(schema)) throw new InvalidArgumentError(`${where} must be json_object or a JSON schema (an object), got ${shown(schema)}`);
  try { compileJsonSchema(schema as Record<string, unknown>, where); } catch (e) { throw new InvalidArgumentError((e as Error).message); }
  return schema as Record<string, unknown>;
}
