import { seedOrFresh } from '../runtime/sampler.ts';
import { ropeScalingWords } from '../models/config.ts';
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Command } from 'commander';
import { loadModelWithProgress, modelOption, ropeScalingOf, ropeScalingOptions } from './load.ts';
import { DATASETS, MATH_INSTRUCTION, datasetCases, questionCount, runAnswerEval, runEval, syntheticCases, type AnswerEvalOptions, type CaseResult, type EvalReport } from '../eval/harness.ts';
import { VOTE_METHODS } from '../reason/vote.ts';
import type { VoteMethod } from '../reason/types.ts';
import { loadProbes } from '../reason/probes.ts';
import { isReport, isReportSibling, lockJournal, readJournal, readReport, reportFiles, startJournal, writeReport, markdownTable, type Journal } from '../eval/report.ts';
import { sharedDir } from './demo.ts';
import { noteEarlyStop, refuseVoteFlags } from './answer.ts';
import { besideModel } from '../models/embedded.ts';
import { choiceArg, floatArg, intArg, noteGreedyFlags, quantArg, samplingFlags, seedArg } from './main.ts';
import { TASKS, type Task } from '../tasks/grade.ts';
import type { TextTokenizer } from '../tokenizer/types.ts';
import { fileCases, ownTaskFile, taskFileOf } from './train-rl.ts';
import { onInterrupt, StagedProgress } from '../train/progress.ts';
import { beforeDownload, checkOutFile } from './outputs.ts';
import { checkNativeThinking, checkThinkingRoom, reasoningTokens, thinksByItself, trainedWith } from '../reason/answer.ts';
import { version } from '../version.ts';
import { openSource } from '../io/source.ts';
import { defaultQuant, rescaled } from '../runtime/convert.ts';
import { budgetNote } from '../reason/budget.ts';
import { generationNotes, generationSampling, suggestedSampling } from '../io/hf-folder.ts';

const TASK_NAMES = ['synthetic', ...Object.keys(DATASETS)];

/** --out: a JSON file, not another command's (said before the existing-file check, which would offer --overwrite, after the folder check, which names a file to give); its report's files. */
function outCheck(o: { out: string; overwrite?: boolean; model: string; adapter?: string; router?: string; verifier?: string; task: string }): ReturnType<typeof reportFiles> {
  if (!/\.json$/i.test(o.out) && !fs.statSync(o.out, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`--out ${o.out}: the report is JSON, so name it *.json (its .md table and -accuracy.svg plot are written beside it)`);
  const files = reportFiles(o.out);
  // Never over the run's own inputs, --overwrite or not (an earlier report in the model's folder is refreshed).
  const replaceable = (f: string) => (f === path.resolve(o.out) ? isReport(f) : isReportSibling(f));
  checkOutFile(o.out, {
    what: 'JSON report', example: 'results.json', siblings: [files.md, files.svg], overwrite: !!o.overwrite, ours: isReport, oursBeside: isReportSibling,
    inputs: { '--model': o.model, '--adapter': o.adapter }, inputFiles: { '--router': o.router, '--verifier': o.verifier, '--task': ownTaskFile(o.task, TASK_NAMES) }, replaceable,
  });
  return files;
}

export function evalCommand(program: Command): void {
  const cmd = program.command('eval')
    .description('accuracy, tokens, TTFT and latency on a task; writes JSON, a Markdown table and an SVG plot')
    .addOption(modelOption())
    .option('--adapter <dir>', 'reasoning adapter: also evaluates base + adapter ("<think>" after the prompt; an activated adapter on from there, a plain LoRA everywhere)')
    .option('--native-thinking', 'the model thinks by itself (e.g. Qwen3): evaluates its direct answers (after an empty thinking block) and its thinking, no adapter')
    .option('--max-thinking-tokens <n>', 'thinking cap in the reasoning run ("\\n</think>\\n\\n" forced after it)', intArg('--max-thinking-tokens', 0))
    .option('--budget <n>', 'thinking budget line after <think> in the reasoning run (a budget-trained adapter, as answer --budget)', intArg('--budget', 1))
    .option('--task <task>', `${TASK_NAMES.join(' | ')} (datasets from ../shared/data, each question followed by "${MATH_INSTRUCTION}"), or a JSONL file of your own {"prompt","answer"} lines (as train-rl takes them; asked as written, graded by --grader)`, 'synthetic')
    .option('--grader <task>', `how the answers to a --task file are graded: ${TASKS.join(' | ')} (default: gsm8k, the last number, as train-rl grades a file)`)
    .option('--split <split>', 'synthetic split: test | val (default: test; the datasets are read from their test file)', choiceArg('--split', ['test', 'val']))
    .option('--limit <n>', 'number of questions (a dataset\'s first n)', intArg('--limit', 1), 200)
    .option('--max-tokens <n>', `generation limit per answer, thinking included (default: 512 for synthetic and a file of your own, ${Object.entries(DATASETS).map(([k, d]) => `${d.maxTokens} for ${k}`).join(', ')})`, intArg('--max-tokens', 1))
    .option('--temperature <t>', '0 = greedy; above it, each case draws with --seed + its index', floatArg('--temperature'), 0);
  ropeScalingOptions(samplingFlags(cmd)
    .option('--seed <s>', 'seed of case 0 when sampling (default or -1: a fresh one, recorded in the report)', seedArg())
    .option('--batch <n>', 'questions decoded together in the base and reasoning runs (1 = per-request latency; the routed and samples runs answer one at a time, as answer() does)', intArg('--batch', 1), 1)
    .option('--router <file>', 'also evaluate routed answers (answer() with reasoning auto: the router decides per question, its gate may escalate), run "routed"')
    .option('--samples <n>', 'also evaluate N parallel reasoning samples combined by --vote (answer(): one prefill, forked KV cache), run "…, N samples (vote)"; the routed run reasons with them too. Drawn at --temperature, else at 0.8 with top-p 0.95', intArg('--samples', 1), 1)
    .option('--vote <method>', `how the samples are combined: ${VOTE_METHODS.join(' | ')}`, choiceArg('--vote', VOTE_METHODS), 'majority')
    .option('--verifier <file>', 'verifier.json for --vote verifier / verifier-vote (default: <model>/verifier.json when present, as answer)')
    .option('--early-stop', 'stop the other samples once the vote is decided')
    .option('--quant <q>', 'q4, q8 or fp32', quantArg))
    .requiredOption('--out <file>', 'the JSON report to write (e.g. results.json: each run\'s report under its name, "base" and, with --adapter, "base + reasoning adapter", or with --native-thinking "no thinking" and "thinking"); beside it go the Markdown table (results.md) and the accuracy plot (results-accuracy.svg), and while it runs the finished answers (results.partial.jsonl: after an interruption the same command goes on from there)')
    .option('--overwrite', 'replace an --out (and the files beside it) that is not an earlier report of this evaluation (the same command refreshes its own report without it), and start afresh instead of going on from the journal of another evaluation')
    // The flags that contradict each other are refused before anything is read or downloaded (an hf: model).
    .hook('preAction', (_, c) => {
      const o = c.opts<{ task: string; grader?: string; split?: string; nativeThinking?: boolean; adapter?: string; maxThinkingTokens?: number; budget?: number; router?: string; samples: number; vote: string; earlyStop?: boolean; verifier?: string }>();
      const { file: ownFile } = taskFileOf(o, TASK_NAMES);
      // A dataset is read from its test file: --split test says so (it was refused), another split is not there.
      if (o.split !== undefined && o.split !== 'test' && o.task !== 'synthetic') throw new Error(`--split chooses a split of --task synthetic; ${o.task} is ${ownFile ? 'your file, read whole' : `read from ${DATASETS[o.task as keyof typeof DATASETS].test}`}`);
      if (o.nativeThinking && o.adapter) throw new Error('eval: --native-thinking evaluates the model\'s own thinking: leave --adapter out');
      const reasons = !!o.adapter || !!o.nativeThinking;
      if (o.maxThinkingTokens !== undefined && !reasons) throw new Error('eval: --max-thinking-tokens applies to the reasoning run, which needs --adapter or --native-thinking');
      if (o.budget !== undefined && !o.adapter) throw new Error(`eval: --budget is the control line a budget-trained adapter reads: it needs --adapter${o.nativeThinking ? ' (with --native-thinking cap the thinking with --max-thinking-tokens)' : ''}`);
      if ((o.router || o.samples > 1) && !reasons) throw new Error(`eval: ${o.router ? '--router routes between direct answers and reasoning' : '--samples are parallel reasoning samples'}: it needs --adapter (or --native-thinking)`);
      refuseVoteFlags(o, 'eval');
      if (o.verifier && !o.vote.startsWith('verifier')) throw new Error(`eval: --verifier scores samples for --vote verifier or verifier-vote; with --vote ${o.vote} it would not be used`);
    })
    .hook('preAction', beforeDownload(outCheck))
    .action(async (o, cmd: Command) => {
      const { file: ownFile, grader } = taskFileOf(o, TASK_NAMES);
      const split = o.split ?? 'test', dataset = o.task === 'synthetic' || ownFile ? undefined : DATASETS[o.task as keyof typeof DATASETS];
      const maxTokensGiven = o.maxTokens !== undefined;
      o.maxTokens ??= dataset?.maxTokens ?? 512;
      const reasons = !!o.adapter || !!o.nativeThinking;
      noteEarlyStop(o);
      const ownVerifier = o.vote.startsWith('verifier') && !o.verifier ? besideModel(o.model, 'verifier') : undefined;
      if (ownVerifier) console.error(`verifier: ${o.verifier = ownVerifier} (the default)`);
      if (o.vote.startsWith('verifier') && !o.verifier) throw new Error(`eval: --vote ${o.vote} scores the samples with a verifier: give --verifier verifier.json (train-verifier writes one)`);
      const budgetNoted = o.budget !== undefined ? budgetNote(o.adapter, o.budget) : undefined;
      if (budgetNoted) console.error(`eval: note: ${budgetNoted}`);
      const files = outCheck(o);
      // What is evaluated, as the report records it: paths resolved (a rerun from another folder is the same run), the quantisation used.
      // A RoPE scaling as applied, where it changes the model's (as the flags say when the model cannot be read).
      let quant: string | undefined = o.quant;
      const ropeScaling = ropeScalingOf(o);
      let applied = ropeScaling && ropeScalingWords(ropeScaling), tok: TextTokenizer | undefined;
      try {
        const src = openSource(o.model);
        tok = src.tokenizer;
        quant ??= src.kind === 'converted' ? src.manifest!.options.quant : defaultQuant(src.config);
        const scaled = rescaled(src, ropeScaling);
        applied = scaled.config !== src.config ? ropeScalingWords(scaled.config.ropeScaling) : undefined;
      } catch { /* the load below names the problem */ }
      // A file of one's own is the user's to edit: what it held is part of what was evaluated (an interrupted run's
      // answers to its earlier questions or golds are not mixed into the report).
      const own = ownFile ? fileCases(ownFile, grader, tok && { tok }) : undefined;
      const held = own && createHash('sha1').update(JSON.stringify(own.map((c) => [c.question, c.gold]))).digest('hex').slice(0, 12);
      const what = { model: path.resolve(o.model), ...(o.adapter ? { adapter: path.resolve(o.adapter) } : {}), task: ownFile ? path.resolve(o.task) : o.task, ...(own ? { grader, taskContents: held } : {}), ...(o.task === 'synthetic' ? { split } : {}), limit: o.limit, ...(quant ? { quant } : {}), ...(applied ? { ropeScaling: applied } : {}) };
      const drawn = o.temperature > 0 || o.samples > 1; // some run samples: its top-k/p and min-p count, and it has a seed
      const sampled = drawn ? { topK: o.topK, topP: o.topP, minP: o.minP } : {};
      const several = o.samples > 1 ? { samples: o.samples, vote: o.vote, ...(o.verifier ? { verifier: path.resolve(o.verifier) } : {}), ...(o.earlyStop ? { earlyStop: true } : {}) } : {};
      const evaluation = { ...what, maxTokens: o.maxTokens, temperature: o.temperature, ...sampled, ...(o.maxThinkingTokens !== undefined ? { maxThinkingTokens: o.maxThinkingTokens } : {}), ...(o.budget !== undefined ? { budget: o.budget } : {}), ...(o.nativeThinking ? { nativeThinking: true } : {}), ...(o.router ? { router: path.resolve(o.router) } : {}), ...several };
      // An earlier report is refreshed by the same evaluation; another one is not replaced unless told.
      const earlier = o.overwrite || !fs.existsSync(o.out) ? undefined : readReport(o.out);
      // What the report records it evaluated (reports before that record: its runs' options together).
      const recorded = earlier && (earlier[0].options.evaluation as Record<string, unknown> | undefined ?? Object.assign({}, ...earlier.map((r) => r.options)));
      const other = recorded ? differences(recorded, evaluation) : [];
      if (other.length) throw new Error(`--out ${o.out} holds the report of another evaluation (${other.join('; ')}); pass --overwrite to replace it, or choose another --out`);
      // An interrupted run of the same evaluation goes on from its journal (the same batch size: latencies stay comparable; the same seed).
      // Ctrl-C before the progress takes it (the model loading) says so and exits, which releases the lock (Node's
      // default action killed the process, leaving the lock and the folders it made).
      let answersKept = 0;
      const early = onInterrupt(process.stderr, () => `eval: interrupted before the first question; ${answersKept ? `the ${answersKept} finished answer${answersKept === 1 ? ' is' : 's are'} kept in ${files.journal}: run the same command again to go on from there` : `nothing was written to ${o.out}`}`);
      try { lockJournal(files.journal); } catch (e) { early(); throw e; } // released when the process exits (Ctrl-C and errors end the process)
      const resumed = resumable(files.journal, { ...evaluation, batch: o.batch, ...(drawn && o.seed !== undefined ? { seed: o.seed } : {}) }, !!o.overwrite);
      answersKept = resumed?.answers ?? 0;
      const cases = own ? own.slice(0, o.limit) : dataset ? datasetCases(o.task as Task, path.join(sharedDir(), 'data', dataset.test), o.limit) : syntheticCases(split, o.limit);
      if (!cases.length) throw new Error(`eval: ${o.task} has no questions${dataset ? ` (${dataset.test} is empty)` : ''}: nothing to evaluate`);
      if (cases.length < o.limit) console.error(`eval: note: ${o.task} has ${cases.length} questions${o.task === 'synthetic' ? ` in its ${split} split` : ''}, fewer than --limit ${o.limit}: all are evaluated`);
      const all = own ? own.length : dataset && cases.length === o.limit ? questionCount(path.join(sharedDir(), 'data', dataset.test)) : 0;
      if (all > cases.length) console.error(`eval: note: ${o.task}: its first ${cases.length} of ${all} questions (--limit ${o.limit}; --limit ${all} evaluates them all)`);
      // Without prompt caching: each answer as a first request's, whatever was evaluated before it.
      const model = await loadModelWithProgress(o.model, { adapter: o.adapter, quant: o.quant, ropeScaling, promptCache: 0 });
      if (o.nativeThinking) checkNativeThinking(model, 'eval'); // before a router or verifier is blamed
      if (o.nativeThinking && !thinksByItself(model)) console.error('eval: note: this model\'s chat template does not think by itself (as Qwen3\'s and DeepSeek-R1\'s do): --native-thinking evaluates a thinking it may never have learned; give it a reasoning adapter (--adapter) instead');
      const greedy = o.temperature === 0, suggested = greedy ? suggestedSampling(generationSampling(o.model)) : undefined;
      if (suggested) console.error(`eval: note: answers are greedy unless --temperature is given; ${path.join(o.model, 'generation_config.json')} suggests sampling this model with ${suggested}`);
      if (greedy) for (const n of generationNotes(o.model)) console.error(`eval: note: ${n}`); // what the suggestion leaves out
      if (o.samples === 1) noteGreedyFlags(o, 'eval');
      const seed: number | undefined = drawn ? seedOrFresh(o.seed ?? (resumed?.evaluation.seed as number | undefined)) : undefined;
      const sampling = greedy ? { temperature: 0 } : { temperature: o.temperature, topK: o.topK, topP: o.topP, minP: o.minP, seed };
      // Several samples at temperature 0 would all be the greedy answer: they are drawn as answer() draws them.
      const untypedTopP = cmd.getOptionValueSource('topP') !== 'cli'; // a --top-p typed (1 too) is kept
      const sampleDraws = greedy ? { temperature: 0.8, topK: o.topK, topP: untypedTopP ? 0.95 : o.topP, minP: o.minP, seed } : sampling;
      if (greedy && o.samples > 1) console.error(`eval: note: the ${o.samples} samples are drawn at temperature 0.8 (answer()'s default for several samples) with top-p ${sampleDraws.topP}${untypedTopP ? ' (its default)' : ''}; the other runs are greedy. --temperature sets one for all runs`);
      const probes = loadProbes({ router: o.router, verifier: o.verifier }, { config: model.config, native: !!o.nativeThinking, adapters: model.adapter ? [model.adapter] : [], names: model.names, onNote: (n) => console.error(`eval: ${n}`) });
      // What answered, beyond the paths: answers of other weights (an adapter retrained in place) are not mixed into one report.
      const weights = { ...trainedWith(model), ...Object.fromEntries((['router', 'verifier'] as const).filter((k) => o[k]).map((k) => [`${k}Hash`, createHash('sha1').update(fs.readFileSync(o[k])).digest('hex').slice(0, 12)])) };
      if (resumed) checkResumed(files.journal, resumed, weights, cases);
      // The reasoning setup answer, chat and serve would use from the model's folder is evaluated only when named.
      const beside = (f: 'adapter' | 'router') => besideModel(o.model, f), folderAdapter = beside('adapter');
      const setup = !reasons && folderAdapter && fs.existsSync(path.join(folderAdapter, 'adapter_config.json')) ? folderAdapter : undefined;
      if (setup) console.error(`eval: note: the base model alone is evaluated; --adapter ${setup} evaluates its reasoning adapter too${beside('router') ? ` (and --router ${beside('router')} the routed answers)` : ''}`);
      else if (!reasons && thinksByItself(model)) console.error('edgereason: note: this model thinks by itself: --native-thinking evaluates its thinking and its direct answers apart; without it, any thinking is part of the graded case texts, counted as no thinking');
      else if (o.adapter && !o.router && beside('router') && folderAdapter && path.resolve(o.adapter) === path.resolve(folderAdapter)) console.error(`eval: note: no routed run; --router ${beside('router')} evaluates the routed answers too`);
      // Before the base pass: the reasoning pass would refuse it only after that.
      if (reasons && o.maxThinkingTokens !== undefined) checkThinkingRoom(reasoningTokens(model), o.maxThinkingTokens, o.maxTokens, 'eval');
      // A dataset's default limit past the model's context (aime24's 4096 on a 1024-token model): said before the run, not only after it.
      const ctx = model.config.maxPositionEmbeddings;
      if (o.maxTokens >= ctx) console.error(`edgereason: note: --max-tokens ${o.maxTokens}${maxTokensGiven ? '' : ` (${o.task}'s default)`} does not fit in the model's context of ${ctx} tokens beside a question: an answer stops at the context's end first`);
      const runs: { name: string; report: EvalReport }[] = [];
      // Each finished answer goes to the journal beside the report, so an interruption loses none of them.
      let kept = resumed?.answers ?? 0;
      const progress = new StagedProgress({
        itemUnit: 'questions',
        interrupt: (stage, done, total) => `eval: interrupted ${stage ? `during ${stage} at ${done}/${total}` : 'before the first question'}; ${kept ? `the ${kept} finished answer${kept === 1 ? ' is' : 's are'} kept in ${files.journal}: run the same command again to go on from there` : `nothing was written to ${o.out}`}`,
      });
      early(); // the progress has Ctrl-C now
      const journal = startJournal(files.journal, { evaluation: { ...evaluation, batch: o.batch, ...(seed !== undefined ? { seed } : {}) }, version: version(), weights, done: resumed?.done });
      let closed = false;
      const close = async () => { if (!closed) { closed = true; await model.close(); } };
      try {
        const reasoningName = o.nativeThinking ? 'thinking' : 'base + reasoning adapter', voted = `${o.samples} samples (${o.vote})`;
        // base (no thinking), the reasoning run, then the samples and routed runs through answer().
        const specs: { name: string; reasoning: boolean; answer?: AnswerEvalOptions }[] = [
          { name: o.nativeThinking ? 'no thinking' : 'base', reasoning: false },
          ...(reasons ? [{ name: reasoningName, reasoning: true }] : []),
        ];
        const answerOpts: AnswerEvalOptions = {
          maxTokens: o.maxTokens, nativeThinking: !!o.nativeThinking, maxThinkingTokens: o.maxThinkingTokens, budget: o.budget,
          ...(o.samples > 1 ? { samples: o.samples, vote: o.vote as VoteMethod, earlyStop: !!o.earlyStop, ...sampleDraws } : sampling),
        };
        if (o.samples > 1) specs.push({ name: `${reasoningName}, ${voted}`, reasoning: true, answer: { ...answerOpts, reasoning: 'on' } });
        if (o.router) specs.push({ name: o.samples > 1 ? `routed, ${voted}` : 'routed', reasoning: true, answer: { ...answerOpts, reasoning: 'auto' } });
        for (const { name, reasoning, answer: asked } of specs) {
          const done = resumed?.done.get(name) ?? [];
          if (done.length) console.error(`eval: ${name}: ${done.length} of ${cases.length} questions answered before, kept in ${files.journal}; going on from there (delete it to start afresh)`);
          if (done.length < cases.length) progress.begin(name, done.length, cases.length); // an interruption in the first batch says where
          const onCase = (d: number, t: number, fresh: CaseResult[]) => { journal(name, fresh); kept += fresh.length; progress.update(name, d, t); };
          const report = asked ? await runAnswerEval(model, cases, { ...asked, done, onCase }, probes) : await runEval(model, cases, {
            reasoning, maxTokens: o.maxTokens, batch: o.batch, ...sampling, ...(o.nativeThinking ? { nativeThinking: true } : {}),
            ...(reasoning && o.maxThinkingTokens !== undefined ? { maxThinkingTokens: o.maxThinkingTokens } : {}),
            ...(reasoning && o.budget !== undefined ? { budget: o.budget } : {}),
            done, onCase,
          });
          // what was evaluated, ahead of the run's own options
          const probeFiles = { ...(asked?.reasoning === 'auto' ? { router: path.resolve(o.router) } : {}), ...(asked && o.verifier ? { verifier: path.resolve(o.verifier) } : {}) };
          // Cut off by --max-tokens, or (fewer tokens than that: a single answer's count) by the end of the context.
          const cut = report.cases.filter((c) => c.finishReason === 'length'), atContext = (asked?.samples ?? 1) > 1 ? 0 : cut.filter((c) => c.tokens < o.maxTokens).length;
          if (cut.length) {
            const where = atContext === cut.length ? `by the end of the model's context (${model.config.maxPositionEmbeddings} tokens)` : `at --max-tokens ${o.maxTokens}${atContext ? ` (${atContext} of them earlier, by the end of the model's context of ${model.config.maxPositionEmbeddings} tokens)` : ''}`;
            console.error(`eval: note: ${name}: ${cut.length} of ${cases.length} answers were cut off ${where} and graded as they stand (the table's "cut off" column)${atContext === cut.length ? '' : '; a larger --max-tokens lets them finish'}`);
          }
          runs.push({ name, report: { ...report, options: { ...what, ...probeFiles, questions: cases.length, ...(all > cases.length ? { datasetQuestions: all } : {}), decoding: greedy && !asked?.samples ? 'greedy' : 'sampled', edgereason: version(), ...report.options, evaluation } } });
        }
        // Ctrl-C stays handled until the report is written (saying where the finished answers are kept until then).
        await close();
        await writeReport(o.out, runs);
        fs.rmSync(files.journal, { force: true });
      } finally {
        progress.stop();
        await close();
      }
      console.log(markdownTable(runs));
      console.error(`wrote ${files.json}, ${files.md} and ${files.svg}`);
    });
}

/** What an earlier evaluation (its report's runs' options together, or its journal's record) evaluated that differs from `now` (paths compared resolved). */
function differences(before: Record<string, unknown>, now: Record<string, unknown>): string[] {
  // Reports before --temperature were greedy (and sampled with no top-k, top-p or min-p), before quant was recorded unknown.
  const unset: Record<string, unknown> = { temperature: 0, topK: 0, topP: 1, minP: 0 };
  const norm = (k: string, v: unknown) => (typeof v === 'string' && ['model', 'adapter', 'router', 'verifier'].includes(k) ? path.resolve(v) : v ?? unset[k]);
  return [...new Set([...Object.keys(now), 'adapter', 'grader', 'split', 'maxThinkingTokens', 'budget', 'nativeThinking', 'topK', 'topP', 'minP', 'router', 'samples', 'vote', 'verifier', 'earlyStop', 'ropeScaling'])]
    .filter((k) => norm(k, before[k]) !== norm(k, now[k]) && !(k === 'quant' && before[k] === undefined))
    .map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}: ${before[k] === undefined ? 'none' : JSON.stringify(before[k])} there, ${now[k] === undefined ? 'none' : JSON.stringify(now[k])} here`);
}

/**
 * The journal an interrupted run of this evaluation left at `file`, to go on from; undefined when there is none, when
 * it holds no answer, or (with --overwrite, said) when it is another evaluation's, which this run replaces. A journal
 * of another evaluation or version, or a file that is not a journal, is refused otherwise: its answers may be hours of
 * work. A journal without a seed (a sampled run's) leaves the seed to this run; a seed given here must be the journal's.
 */
function resumable(file: string, now: Record<string, unknown>, overwrite: boolean): Journal | undefined {
  const stat = fs.statSync(file, { throwIfNoEntry: false });
  if (!stat) return undefined;
  if (!stat.isFile()) throw new Error(`--out: ${file}, the journal eval keeps beside the report, is not a file; move it away or choose another --out`);
  const j = readJournal(file);
  if (!j) {
    if (overwrite) return undefined;
    throw new Error(`--out: ${file}, where eval keeps the answers of a run until its report is written, already exists and is not an eval journal; pass --overwrite to replace it, or choose another --out`);
  }
  if (!j.answers) return undefined; // interrupted before its first answer: nothing to keep
  const answers = `${j.answers} finished answer${j.answers === 1 ? '' : 's'}`;
  if (j.version !== version()) throw new Error(`--out: ${file} holds ${answers} of ${j.version ? `edgereason ${j.version}` : 'an earlier edgereason'}, this is ${version()}: answers graded by another version are not mixed into one report; delete it to start afresh`);
  const other = differences(j.evaluation, { ...now, ...(j.evaluation.seed !== undefined && now.seed === undefined ? { seed: j.evaluation.seed } : {}) });
  if (!other.length) return j;
  if (!overwrite) throw new Error(`--out: ${file} holds ${answers} of an interrupted evaluation that is not this one (${other.join('; ')}); run that one again to finish it, or pass --overwrite to drop them and start afresh`);
  console.error(`eval: --overwrite: dropping the ${answers} of another evaluation in ${file} (${other.join('; ')})`);
  return undefined;
}

/** A journal's answers come from these weights and probes, and from these cases in order: otherwise it is not resumed. */
function checkResumed(file: string, j: Journal, weights: Record<string, string>, cases: { id: string }[]): void {
  const changed = Object.keys({ ...weights, ...j.weights }).filter((k) => weights[k] !== j.weights?.[k]);
  const what: Record<string, string> = { modelShape: "the model's shape", adapterHash: "the adapter's weights", routerHash: 'the router file', verifierHash: 'the verifier file' };
  if (changed.length) throw new Error(`--out: ${file} holds answers made with other weights (${changed.map((k) => what[k] ?? k).join(', ')} changed since): delete it to start afresh`);
  for (const [run, rs] of j.done) {
    const k = rs.findIndex((r, i) => r.id !== cases[i]?.id);
    if (k >= 0) throw new Error(`--out: ${file}: answer ${k + 1} of "${run}" is question ${rs[k].id}, where this evaluation asks ${cases[k]?.id ?? 'no more questions'} (was the journal written by two evals at once?); delete it to start afresh`);
  }
}
