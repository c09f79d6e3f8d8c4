/**
 * The user-facing model: `const m = await loadModel(path)`, `for await (const piece of m.generate(prompt))`,
 * `await m.generateBatch([...])`, `await m.close()`. The ONNX session runs in a worker thread by default.
 */
import path from 'node:path';
import { checkRopeScalingChoice, isTokenId, parameterCount, ropeChoiceOf, PROJECTIONS, type ModelConfig, type Projection, type RopeScalingChoice } from '../models/config.ts';
export { parameterCount };
import { convertAgain, openSource, readManifest, MANIFEST, type ModelSource } from '../io/source.ts';
import { resolveModelPath } from '../io/hub.ts';
import { baseModelNote, checkInvocationIds, loadAdapter, modelNames, type LoadedAdapter } from '../io/peft.ts';
import type { Quant } from '../onnx/quant.ts';
import { buildInMemory, CACHE_POLICIES, CopyGone, cacheFolder, cachedConversion, checkInMemorySize, defaultCachePolicy, defaultQuant, requantisedNote, rescaled, type CachePolicy } from './convert.ts';
export { convertModel, checkInMemorySize } from './convert.ts'; // (for the tests; the package exports them from convert.ts)
import { CHAT_ROLES, type ChatMessage, type TextTokenizer } from '../tokenizer/types.ts';
import { ChatTemplateError } from '../tokenizer/hf.ts';
import { encodeChat } from '../tokenizer/chat-ids.ts';
import { adapterView, sessionOf, type Backend } from './backend.ts';
import { BatchedLocalBackend, CoalescingBackend } from './scheduler.ts';
import { promptCharBound } from '../tokenizer/prompt-bound.ts';
import { WorkerBackend, type BuildJob } from './worker-backend.ts';
import { dropPromptCache, MIN_REUSED, promptCacheOf, setPromptCache, type PromptCache } from './prompt-cache.ts';
import { checkGenerateOptions, endsWithRun, generateBatch, lastIndexOfRun, promptName, stopList, type Completion, type GenerateOptions } from './generate.ts';
import { sampleToken, seedAt, SAMPLING_OPTIONS, type TokenLogprob } from './sampler.ts';
import { MAX_THREADS, threadsNote } from './threads.ts';
import { onAbort } from './abort.ts';
import { checkAccuracyQuant, checkBuildOptions, checkKeys, checkValues, is } from './options.ts';
import { jsonConstraint, JSON_STOP } from './json-constraint.ts';
import { ContextLengthError } from './errors.ts';
import { shown } from '../show.ts';
import { checkToolCalls, checkToolsRendered, templateFor, templateMessage } from '../tokenizer/tool-calls.ts';

export interface LoadOptions {
  /**
   * Weight format of the linear layers: 'q4' or 'q8' (MatMulNBits, 4- or 8-bit blocks of 32, as llama.cpp's Q4_0 and
   * Q8_0) or 'fp32'. Default: q4 from 50M parameters up, else fp32. q8 is nearly lossless at about twice q4's size.
   */
  quant?: Quant;
  /** MatMulNBits accuracy level with q4 / q8: 0–4 (4, the default, = int8 activations; see docs). */
  accuracyLevel?: number;
  /** A PEFT LoRA adapter folder; builds the graph with LoRA inputs. */
  adapter?: string;
  /** Projections that take LoRA inputs beyond the adapter's, so that withAdapter can add adapters on them. */
  loraTargets?: Projection[];
  /** ONNX Runtime intra-op threads (default: $EDGEREASON_THREADS, else the available CPUs, at most 8). */
  threads?: number;
  /** Run the session in a worker thread (default true). */
  worker?: boolean;
  /** Progress of building the graph from a checkpoint (quantising it): parts done of the total. */
  onProgress?: (done: number, total: number) => void;
  /** Progress of downloading an `hf:` model or adapter into the Hugging Face cache: bytes done of the total. */
  onDownload?: (done: number, total: number) => void;
  /**
   * Stops loading (rejecting with its AbortError) after the step under way: a download breaks off (the next load goes
   * on from where it stopped), a conversion into the cache stops at once and keeps nothing, and no session is left open
   * (a graph built in memory in the worker, from 10M parameters on, is a step: the session it makes is closed then).
   */
  signal?: AbortSignal;
  /**
   * Keeping a converted copy of the checkpoint (graph + quantised weights) so that later loads skip building it:
   * 'auto' (the default) for checkpoints of 100M parameters and up at q4 or q8 and for any too large to build in memory,
   * 'always', or 'never' (build in memory on every load; the default when $EDGEREASON_CACHE is "off").
   */
  cache?: CachePolicy;
  /** The cache folder (default $EDGEREASON_CACHE, else $XDG_CACHE_HOME/edgereason, else ~/.cache/edgereason). */
  cacheDir?: string;
  /** Notes for a person: a converted copy being written to the cache, or used from it. */
  onNote?: (note: string) => void;
  /**
   * MiB of prompt KV caches kept for reuse (prompt caching, src/runtime/prompt-cache.ts): answer(), generate,
   * complete and generateBatch prefill a prompt only from where it differs from a kept one, as a chat's next turn
   * does. Default 256, or room for 4,096 positions where those take more (a 7B model's); 0 keeps none.
   */
  promptCache?: number;
  /**
   * RoPE scaling in place of the checkpoint's own, as llama.cpp's --rope-scaling / --rope-scale / --yarn-orig-ctx
   * set it: `{ type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 32768 }` gives a Qwen2.5 or Qwen3 GGUF (whose
   * metadata leaves YaRN out) its 131,072 positions, as their cards say (the original context defaults to the one the
   * model declares: 32768 for Qwen2.5, 40960 for Qwen3); `{ type: 'none' }` takes away a checkpoint's YaRN (better on
   * short inputs, Qwen's cards say). A converted folder keeps the scaling it was converted with.
   */
  ropeScaling?: RopeScalingChoice;
}

/** A prompt: text, messages (rendered by the chat template), or token ids (a raw prompt, as tokenized by the caller). */
export type Prompt = string | ChatMessage[] | readonly number[];

/** Whether a prompt is token ids (a non-empty list of numbers; messages are objects). */
export const isTokenIds = (p: unknown): p is readonly number[] => Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'number');
/** Whether a prompt is rendered by the chat template: a list of messages unless told otherwise, text when told; token ids never. */
const isChat = (p: Prompt, o: { chat?: boolean }): boolean => !isTokenIds(p) && (o.chat ?? Array.isArray(p));

/** The generation options of the model's methods; the decoding constraint (allowedNext) is the library's own, made from `json`. */
export interface PromptOptions extends Omit<GenerateOptions, 'allowedNext'> {
  /** Render the prompt with the model's chat template (a string becomes one user message). */
  chat?: boolean;
  /**
   * Extra variables for the chat template, as transformers' apply_chat_template takes them (and vLLM's and
   * llama.cpp's servers as chat_template_kwargs): e.g. `{ enable_thinking: false }` makes a Qwen3 template
   * pre-fill an empty thinking block, so the model answers directly.
   */
  chatTemplateKwargs?: Record<string, unknown>;
  /** Cancels the call: generation ends at the next step, finish reason 'cancelled' (for a batch, every row). */
  signal?: AbortSignal;
  /**
   * The completion is JSON (constrained decoding from its first token): true for any JSON object, or a JSON schema
   * (the subset JsonConstraint documents). answer()'s json holds only the answer after a thinking segment.
   */
  json?: true | Record<string, unknown>;
}

/** A cached copy gone while it loaded: loaded once more (Model.load), but not a second time. */
const copyGone = (gone: CopyGone, mayRetry: boolean): Error =>
  (mayRetry ? gone : new Error(`model: ${gone.message}, twice; load it again once nothing else is using ${path.dirname(gone.dir)}`));

/** Whether a converted folder still holds the copy that was opened (its manifest unchanged). */
function sameCopy(src: ModelSource): boolean {
  try { return JSON.stringify(readManifest(src.path)) === JSON.stringify(src.manifest); } catch { return false; }
}

export class Model {
  private constructor(
    readonly config: ModelConfig,
    readonly tokenizer: TextTokenizer,
    readonly backend: Backend,
    readonly adapter?: LoadedAdapter,
    /** The engine adapter this model's steps use when it shares a session (withAdapter); undefined for the first. */
    readonly adapterName?: string,
  ) {}

  static async load(p: string, opts: LoadOptions = {}): Promise<Model> {
    checkLoadOptions(opts);
    const hub = { onDownload: opts.onDownload, signal: opts.signal };
    if (typeof p === 'string' && p) p = await resolveModelPath(p, hub);
    if (typeof opts.adapter === 'string' && opts.adapter) opts = { ...opts, adapter: await resolveModelPath(opts.adapter, hub) };
    opts.signal?.throwIfAborted();
    const crowded = threadsNote(opts.threads, 'model'); // said once, not again when a vanished cached copy loads again
    if (crowded) opts.onNote?.(crowded);
    try {
      return await Model.open(p, opts, true);
    } catch (e) {
      if (!(e instanceof CopyGone)) throw e;
      opts.onNote?.(`model: ${e.message}; loading again`);
      return Model.open(p, opts, false);
    }
  }

  private static async open(p: string, opts: LoadOptions, mayRetry: boolean): Promise<Model> {
    if (typeof p !== 'string' || !p) throw new Error(`loadModel: the first argument must be the path of a model (a Hugging Face folder, a .gguf or llama2.c .bin file, or a converted folder), got ${shown(p)}; the embedded default is loadModel(defaultModel.dir, { adapter: defaultModel.adapter })`);
    // The tokenizer is built while onnxruntime makes the session (below): a second of a 151K-token vocabulary's load.
    const opened = openSource(p, { lazyTokenizer: true });
    let src = rescaled(opened, opts.ropeScaling);
    // The choice goes into the cached copy only where it changes the checkpoint's RoPE (else its plain copy serves),
    // spelt out (yarn ×4 and yarn ×4 over the default original context are one copy).
    const rope = src.config !== opened.config ? ropeChoiceOf(src.config) : undefined;
    const adapter = opts.adapter ? loadAdapter(opts.adapter, src.config) : undefined, names = modelNames(opened); // (its ids against the tokenizer's below)
    // Notes on what was asked for are said at the first try only (a vanished cached copy loads again, converting anew).
    const said = mayRetry ? opts.onNote : undefined;
    const other = adapter && baseModelNote(adapter.dir, names);
    if (other) said?.(other);
    const quant = opts.quant ?? defaultQuant(src.config);
    if (src.kind !== 'converted') checkAccuracyQuant(quant, opts, 'loadModel');
    const loraTargets = PROJECTIONS.filter((p) => adapter?.config.targets.includes(p) || opts.loraTargets?.includes(p));
    const requantised = requantisedNote(src, quant);
    if (requantised) said?.(requantised);
    // Aborted: nothing after the step under way (a conversion into the cache stops at once, keeping nothing).
    const signal = opts.signal;
    signal?.throwIfAborted();
    const cached = src.kind !== 'converted';
    if (cached) {
      const from = src;
      src = await cachedConversion(src, {
        check: () => void tokenizerOf(from, adapter),
        quant, accuracyLevel: opts.accuracyLevel, loraTargets, ropeScaling: rope, policy: opts.cache ?? defaultCachePolicy(), defaultPolicy: opts.cache === undefined,
        dir: opts.cacheDir ?? cacheFolder(), threads: opts.threads, onProgress: opts.onProgress, onNote: opts.onNote, signal,
      }).catch((e) => { throw e instanceof CopyGone ? copyGone(e, mayRetry) : e; }) ?? src;
    }
    let graph: Uint8Array | string | { build: BuildJob }, hasLora = loraTargets.length > 0;
    if (src.kind === 'converted') {
      const m = src.manifest!;
      hasLora = m.options.loraTargets.length > 0;
      // (Its manifest records accuracyLevel 4 whatever the quant: for fp32 weights there is none to compare.)
      if (m.options.quant === 'fp32' && opts.accuracyLevel !== undefined && (opts.quant ?? 'fp32') === 'fp32') throw new Error(`model: ${src.path} was converted to fp32, where accuracyLevel does not apply (it is for block-quantised weights, quant "q4" or "q8"): leave it out`);
      const differs = (['quant', 'accuracyLevel'] as const).find((k) => opts[k] !== undefined && opts[k] !== m.options[k]);
      if (differs) {
        throw new Error(`model: ${src.path} was converted with ${differs} ${m.options[differs]}, not ${opts[differs]}; convert the source again with that setting (or leave it out)`);
      }
      const lacking = loraTargets.filter((t) => !m.options.loraTargets.includes(t));
      if (lacking.length) {
        throw new Error(`model: ${src.path} was converted without LoRA inputs for ${lacking.join(',')}${m.options.loraTargets.length ? ` (it has them for ${m.options.loraTargets.join(',')})` : ''}; convert again with --lora-targets ${PROJECTIONS.filter((t) => m.options.loraTargets.includes(t) || lacking.includes(t)).join(',')}`);
      }
      graph = path.join(src.path, m.graph);
    } else {
      checkInMemorySize(src.config, quant, src.path, loraTargets, rope);
      // From BUILD_IN_WORKER parameters on, built in the session's worker from the checkpoint, as this thread would:
      // it stays free meanwhile (an app's UI, a server's other requests: a 45M-parameter checkpoint held it for 0.6 s),
      // and the graph's bytes are the worker's from the start. (Not for a small one: the worker's own imports would
      // take longer than the build; nor a llama2.c file, read whole here already: not twice.)
      const here = opts.worker === false || parameterCount(src.config) < BUILD_IN_WORKER || src.kind === 'llama2c';
      const build = { accuracyLevel: opts.accuracyLevel, loraTargets, threads: opts.threads };
      if (here) tokenizerOf(src, adapter); // (refused before the build, as where the worker builds it)
      graph = here ? await buildInMemory(src, quant, { ...build, onProgress: opts.onProgress, signal }) : { build: { ...build, source: src.path, ropeScaling: opts.ropeScaling, quant } };
    }
    signal?.throwIfAborted();
    let backend: Backend, tokenizer: TextTokenizer;
    const creating = opts.worker === false
      ? BatchedLocalBackend.create(src.config, graph as Uint8Array | string, { threads: opts.threads })
      : WorkerBackend.create(src.config, graph, { threads: opts.threads, hasLora }, opts.onProgress);
    try {
      // Built on this thread while the worker makes the session (or builds the graph); refused, the session is closed.
      tokenizer = tokenizerOf(src, adapter);
    } catch (e) {
      await creating.then((b) => b.close(), () => undefined);
      throw e;
    }
    try {
      // Concurrent calls on the model (and its withAdapter views) step as one batch: see scheduler.ts.
      backend = new CoalescingBackend(await creating);
    } catch (e) {
      // A cached copy removed or replaced while the session read it (cache --clear or --prune, a load by another
      // edgereason version): loaded once more, which converts it again.
      if (cached && src.kind === 'converted' && !sameCopy(src)) {
        throw copyGone(new CopyGone(`the converted copy in ${src.path} was removed or replaced while it loaded (edgereason cache --clear or --prune, or a load by another edgereason version)`, src.path), mayRetry);
      }
      if (src.kind !== 'converted') throw e;
      // The engine's own size check: for a converted folder, the manifest's config is what disagrees.
      if (/^engine: the model config says/.test((e as Error).message)) throw new Error(`model: ${path.join(src.path, MANIFEST)} does not match ${graph}: ${(e as Error).message}`);
      // onnxruntime cannot read the graph (a damaged file of the same size): said with the command that rebuilds it.
      if (/^Load model from .* failed/.test((e as Error).message)) throw new Error(`model: onnxruntime cannot read ${graph} (${(e as Error).message.replace(/^Load model from .* failed:\s*/, '')}): the converted folder is damaged; run \`${convertAgain(src.path, src.manifest)}\` again`);
      throw e;
    }
    try {
      if (adapter) await backend.setAdapter(adapter.tensors);
      signal?.throwIfAborted(); // aborted meanwhile: the session is closed, nothing is left open
    } catch (e) {
      await backend.close().catch(() => undefined); // the error that matters is the adapter's (or the abort)
      throw e;
    }
    setPromptCache(backend, opts.promptCache);
    const model = new Model(src.config, tokenizer, backend, adapter);
    model.known = names;
    // Dropped without close(), its session (a worker thread, the weights) ends once the backend is collected: an app
    // that reloads models and misses a close() on one path would otherwise grow by a model each time.
    model.collected = {};
    droppedModels.register(backend, (backend as CoalescingBackend).inner, model.collected);
    return model;
  }

  /**
   * Token ids for a prompt: raw text (with the tokenizer's special tokens), chat-templated text, or messages (with the
   * template's generation prompt unless `generationPrompt` is false).
   */
  encode(prompt: string | ChatMessage[], chat = Array.isArray(prompt), chatTemplateKwargs?: Record<string, unknown>, where = 'generate', generationPrompt = true): number[] {
    if (chatTemplateKwargs !== undefined && !chat) throw new Error(`${where}: chatTemplateKwargs are variables of the chat template: they apply to chat prompts only (chat: true, or a list of messages)`);
    if (Array.isArray(prompt) && !chat) throw new Error(`${where}: a list of messages is rendered by the chat template: leave chat out (or set it to true)`);
    if (!chat && typeof prompt === 'string') {
      this.checkLength(prompt, where);
      return this.tokenizer.encode(prompt);
    }
    // A message's text stays text: a special token it writes is not the control token (tokenizer/chat-ids.ts).
    const render = (p: string | ChatMessage[]) => this.renderChat(p, chatTemplateKwargs, where, generationPrompt);
    const messages: ChatMessage[] = typeof prompt === 'string' ? [{ role: 'user', content: prompt }] : prompt;
    const text = render(prompt); // what is tokenized (a template may drop part of a message: Qwen3's an earlier reply's thinking)
    this.checkLength(text, where);
    return encodeChat(this.tokenizer, messages, render, text, where);
  }

  /**
   * A prompt of megabytes is refused before it is tokenized, which would hold the caller's thread (0.25 s per MB on
   * the embedded model, more with a real vocabulary): where the tokenizer allows a bound (promptCharBound), text of C
   * characters needs at least C / (the longest token's characters) tokens.
   */
  private checkLength(text: string, where: string): void {
    const ctx = this.config.maxPositionEmbeddings;
    if (text.length <= 2 * ctx) return; // (the bound is at least 2 characters a token: it refuses nothing this short)
    const bound = promptCharBound(this.tokenizer);
    if (!bound) return;
    const chars = bound.normalizedLength(text);
    const least = Math.ceil(chars / bound.maxTokenChars);
    if (least > ctx) throw new ContextLengthError(`${where}: the prompt has ${chars} characters, and no token of this model spans more than ${bound.maxTokenChars}, so it needs at least ${least} tokens, more than the model's context of ${ctx}`, least, ctx);
  }

  /**
   * The text the chat template makes of a prompt (one user message) or messages, with its generation prompt: what
   * encode() tokenizes. `generationPrompt` false renders the messages alone (transformers' add_generation_prompt).
   */
  renderChat(prompt: string | ChatMessage[], chatTemplateKwargs?: Record<string, unknown>, where = 'generate', generationPrompt = true): string {
    if (chatTemplateKwargs !== undefined) { checkTemplateKwargs(chatTemplateKwargs, where); checkKwargsText(this.tokenizer, chatTemplateKwargs, where); }
    if (Array.isArray(prompt)) checkMessages(prompt, where);
    else if (typeof prompt !== 'string') throw new Error(`${where}: a prompt must be a string or a list of messages, got ${typeof prompt}`);
    const messages: ChatMessage[] = typeof prompt === 'string' ? [{ role: 'user', content: prompt }] : prompt.map(templateMessage);
    checkToolsRendered(templateFor(this.tokenizer, chatTemplateKwargs?.tools), messages, chatTemplateKwargs?.tools, 'chatTemplateKwargs.tools', where);
    let text: string;
    try {
      text = this.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: generationPrompt, vars: chatTemplateKwargs });
    } catch (e) {
      // A template that renders these messages without the kwargs fails because of them: the caller's value, not the template.
      if (!(e instanceof ChatTemplateError && e.kind === 'broken') || !chatTemplateKwargs || !Object.keys(chatTemplateKwargs).length) throw e;
      try { this.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: generationPrompt }); } catch { throw e; }
      throw new Error(`${where}: the chat template fails with these chatTemplateKwargs (${Object.keys(chatTemplateKwargs).join(', ')}): ${e.message.replace(/^tokenizer: the chat template of .*? failed: /, '')}`);
    }
    // Jinja renders a missing field as nothing where Python's jinja2 fails on it: a template that wrote nothing of
    // messages that say something is broken (it was told as an empty prompt, "give it some text").
    if (!text.trim() && messages.some((m) => typeof m.content === 'string' && m.content.trim())) throw new Error(`${where}: the chat template rendered nothing for these messages (does it read a field they do not have?); check the template, or give the prompt without it`);
    return text;
  }

  /**
   * Streams the completion's text as it is generated; the generator's return value is the Completion.
   * Leaving the loop early (break, return, a throw) cancels the generation: it ends once decoding has stopped.
   */
  async *generate(prompt: Prompt, opts: PromptOptions = {}): AsyncGenerator<string, Completion, undefined> {
    const queue: string[] = [], stop = new AbortController();
    let wake: (() => void) | undefined;
    let done = false, result: Completion | undefined, error: unknown;
    checkKeys(opts, PROMPT_OPTIONS, 'generate');
    const { signal, ...rest } = opts;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new Error(`generate: signal must be an AbortSignal, got ${shown(signal)}`);
    // The caller's signal stops this call through onAbort (AbortSignal.any would tie every call to it for good).
    const stopWaiting = signal && onAbort(signal, () => stop.abort());
    const running = this.generateBatch([prompt], rest, (_, piece) => { queue.push(piece); wake?.(); }, stop.signal)
      .then((r) => { result = r[0]; }, (e) => { error = e; })
      // Decoding over, nothing is left to cancel: a loop the caller dropped unfinished is not kept alive by its signal.
      .finally(() => { done = true; stopWaiting?.(); wake?.(); });
    try {
      for (;;) {
        while (queue.length) yield queue.shift()!;
        if (done) break;
        await new Promise<void>((r) => { wake = r; });
        wake = undefined;
      }
    } finally {
      if (!done) { stop.abort(); await running; } // which lets go of the caller's signal
    }
    if (error) throw error;
    return result!;
  }

  async complete(prompt: Prompt, opts: PromptOptions = {}): Promise<Completion> {
    if (Array.isArray(opts)) throw new Error('generate: options must be an object, got a list'); // generateBatch's one per prompt
    return (await this.generateBatch([prompt], opts))[0];
  }

  /**
   * The log-probability of each of a prompt's tokens given the ones before it (the first has none: null) and, with
   * `topLogprobs` (0–20), the most likely tokens at each position: the prompt scored, not continued (as OpenAI's echo
   * with logprobs and max_tokens 0 give it; lm-evaluation-harness's loglikelihood). A loaded adapter applies as
   * generate's does. Encoded in chunks of `CHUNK` positions, so the logits held are chunk × vocabulary at a time.
   */
  async promptLogprobs(prompt: Prompt, opts: { chat?: boolean; chatTemplateKwargs?: Record<string, unknown>; topLogprobs?: number } = {}): Promise<{ tokens: number[]; logprobs: (number | null)[]; top: TokenLogprob[][] }> {
    checkPromptForm(opts, ['chat', 'chatTemplateKwargs', 'topLogprobs'], 'promptLogprobs');
    const k = opts.topLogprobs ?? 0;
    checkGenerateOptions({ topLogprobs: k }, this.config.vocabSize, 'promptLogprobs');
    const ids = this.promptIds(prompt, 'the prompt', opts, 'promptLogprobs');
    if (!ids.length) throw new Error('promptLogprobs: the prompt encodes to no tokens: nothing to score');
    this.checkFits(ids, 'promptLogprobs');
    // The adapter from where generate's would act: everywhere (a classic LoRA), or from its invocation (activated).
    const from = !this.adapter ? -1 : this.invokedAt(ids, isChat(prompt, opts)), on = from < 0 ? Infinity : from;
    const CHUNK = 64, V = this.config.vocabSize, logprobs: (number | null)[] = [null], top: TokenLogprob[][] = [[]];
    const cache = await this.backend.newCache(1);
    try {
      for (let at = 0; at < ids.length - 1; at += CHUNK) {
        const part = ids.slice(at, Math.min(at + CHUNK, ids.length - 1)); // the last token predicts nothing of the prompt
        const r = await this.backend.step(cache, { tokens: [part], adapterMask: [part.map((_, j) => (at + j >= on ? 1 : 0))], logits: 'all', want: { logits: true } });
        part.forEach((_, j) => {
          const row = r.logits!.subarray(j * V, (j + 1) * V), next = ids[at + j + 1], lse = r.lse![j];
          logprobs.push(row[next] - lse);
          top.push(k ? sampleToken(row, { topLogprobs: k }, 0, lse).top! : []);
        });
      }
    } finally {
      await this.backend.free(cache);
    }
    return { tokens: ids, logprobs, top };
  }

  /**
   * Several independent prompts decoded as one batch (each with its own options, seed and stops). One options
   * object for every row gives row i the seed `seed + i` (when a seed is given), so equal prompts still draw
   * independently. Aborting `signal` ends every sequence at the next step (finish reason 'cancelled').
   */
  async generateBatch(prompts: Prompt[], opts: PromptOptions | Omit<PromptOptions, 'signal'>[] = {}, onText?: (row: number, piece: string) => void, signal?: AbortSignal): Promise<Completion[]> {
    if (!Array.isArray(prompts)) throw new Error(`generate: generateBatch takes a list of prompts (one per row), got ${typeof prompts}`);
    if (Array.isArray(opts) && opts.length !== prompts.length) throw new Error(`generate: ${opts.length} option objects for ${prompts.length} prompts (give one per prompt, or one object for all)`);
    // Checked as given, before defaults and per-row seeds are derived from them.
    for (const o of Array.isArray(opts) ? opts : [opts]) {
      checkKeys(o, PROMPT_OPTIONS, 'generate');
      checkGenerateOptions(o, this.config.vocabSize);
      for (const k of ['chat', 'adapter'] as const) if (o[k] !== undefined && typeof o[k] !== 'boolean') throw new Error(`generate: ${k} must be true or false, got ${shown(o[k])}`);
    }
    if (Array.isArray(opts) && opts.some((o: PromptOptions) => o.signal !== undefined)) throw new Error('generate: a signal cancels the whole batch: give it in one options object for every row, or as generateBatch\'s fourth argument');
    if (!Array.isArray(opts) && opts.signal !== undefined) {
      if (signal !== undefined) throw new Error('generate: two signals (options.signal and the fourth argument): give one');
      ({ signal, ...opts } = opts);
    }
    const per: (Omit<PromptOptions, 'signal'> & Pick<GenerateOptions, 'allowedNext'>)[] = prompts.map((_, i) => (Array.isArray(opts) ? opts[i] ?? {} : opts.seed === undefined ? opts : { ...opts, seed: seedAt(opts.seed, i) }));
    per.forEach((o, i) => {
      if (o.json === undefined) return;
      if (stopList(o.stop).length) throw new Error(JSON_STOP('generate'));
      const { json, ...rest } = o;
      // (Ended by the row's own stop tokens where it has some: the JSON complete, only they may come.)
      // (A thinking segment with its closing tokens is closed by them, not ended, at a stop token: the JSON must follow.)
      if (rest.thinking?.force && rest.thinking.closeOnStop === undefined) rest.thinking = { ...rest.thinking, closeOnStop: true };
      per[i] = { ...rest, allowedNext: jsonConstraint(this.tokenizer, json, 'generate: json', rest.stopTokens ? { stopTokens: rest.stopTokens } : {}).tracker() };
    });
    if ((Array.isArray(opts) ? opts : [opts]).some((o) => o.adapter) && !this.adapter) throw new Error('generate: adapter: true asks for the adapter, but the model was loaded without one (the adapter option of loadModel)');
    if (!prompts.length) return []; // no rows (as Promise.all([]) resolves to []), checked as a batch of any size is
    const ids = prompts.map((p, i) => this.promptIds(p, promptName(i, prompts.length), per[i]));
    // A loaded adapter applies unless a call says adapter: false: a plain LoRA everywhere; an activated one (as
    // PEFT's aLoRA) from its invocation tokens — where a raw prompt last holds them, or where a chat prompt ends
    // with them (a generation prompt that opens the thinking; the user's own text does not invoke it) — and not at
    // all without them. adapter: true insists: a chat prompt then gets the invocation appended after its
    // generation prompt (as answer() does, so the completion starts inside the thinking); a raw one is refused.
    const inv = this.adapter?.config.aloraInvocationTokens;
    if (this.adapter) {
      per.forEach((o, i) => {
        if (o.adapter === false || o.adapterFrom !== undefined) return;
        if (!inv) { per[i] = { ...o, adapter: true }; return; }
        const chat = isChat(prompts[i], o), at = this.invokedAt(ids[i], chat);
        if (o.adapter === true && at < 0 && chat) {
          const ctx = this.config.maxPositionEmbeddings, n = ids[i].length + inv.length;
          if (ids[i].length < ctx && n >= ctx) throw new ContextLengthError(`generate: ${promptName(i, prompts.length)} has ${ids[i].length} tokens, ${n} with the adapter's invocation (${inv.length}, appended for chat: true); the model's context of ${ctx} tokens leaves no room to generate`, n + 1, ctx);
          per[i] = { ...o, adapterFrom: ids[i].length };
          ids[i] = [...ids[i], ...inv];
        } else if (at >= 0) per[i] = { ...o, adapter: true, adapterFrom: at };
        else if (o.adapter === true) {
          // Its text may be there in other tokens (" <think>\n": " <" "think" ">\n", not "<th" "ink" ">\n"), which PEFT does not match either.
          const text = this.tokenizer.decode(inv), shown = text.trim(), written = !isTokenIds(prompts[i]) && !!shown && this.tokenizer.decode(ids[i]).trimEnd().endsWith(shown);
          const how = written ? `holds its text but not its tokens [${inv.join(', ')}] (the text around it joins it into other tokens, as a space before it does: put it on a line of its own` : 'does not contain it (end the prompt with it';
          throw new Error(`generate: the adapter ${this.adapter!.dir} is activated LoRA: it acts from its invocation ${JSON.stringify(text)} on, and ${promptName(i, prompts.length, 'raw ')} ${how}, use chat: true, which appends it, or answer())`);
        }
      });
    }
    return generateBatch(this.backend, this.tokenizer, ids, per, onText, signal, promptCacheOf(this.backend));
  }

  /**
   * Where the loaded adapter acts from in a prompt's ids: 0 for a classic LoRA (everywhere); for an activated one, a
   * raw prompt's last invocation, or a chat prompt's invocation only where the prompt ends with it (a generation
   * prompt that opens the thinking; the user's own text does not invoke it); -1 where it does not act.
   */
  private invokedAt(ids: readonly number[], chat: boolean): number {
    const inv = this.adapter?.config.aloraInvocationTokens;
    if (!inv) return 0;
    if (!chat) return lastIndexOfRun(ids, inv);
    return endsWithRun(ids, inv) ? ids.length - inv.length : -1;
  }

  /** A prompt's token ids (`which`: "the prompt", or "prompt 2" of several): text or messages encoded (a list of messages as chat unless told), token ids checked. */
  private promptIds(prompt: Prompt, which: string, o: { chat?: boolean; chatTemplateKwargs?: Record<string, unknown> }, where = 'generate'): number[] {
    if (isTokenIds(prompt)) return this.checkedIds(prompt, which, o.chat, where);
    if (typeof prompt !== 'string' && !Array.isArray(prompt)) throw new Error(`${where}: ${which} must be text, a list of messages or token ids, got ${shown(prompt)}`);
    return this.encode(prompt, isChat(prompt, o), o.chatTemplateKwargs, where);
  }

  /** Refuses a prompt longer than the context (ContextLengthError), as `where` says. */
  private checkFits(ids: readonly number[], where: string): void {
    const ctx = this.config.maxPositionEmbeddings;
    if (ids.length > ctx) throw new ContextLengthError(`${where}: the prompt is ${ids.length} tokens, more than the model's context of ${ctx}`, ids.length, ctx);
  }
  /** A prompt given as token ids, checked: a raw prompt of this vocabulary's ids. */
  private checkedIds(ids: readonly number[], which: string, chat: boolean | undefined, where: string): number[] {
    if (chat) throw new Error(`${where}: ${which} is token ids, a raw prompt: the chat template renders text and messages (leave chat out)`);
    const bad = ids.findIndex((t) => !isTokenId(t, this.config.vocabSize));
    if (bad >= 0) throw new Error(`${where}: ${which} holds ${shown(ids[bad])} at position ${bad}, not a token id of this model (0..${this.config.vocabSize - 1})`);
    return [...ids];
  }

  /**
   * Encodes `prompt` now with the base weights and keeps it in the prompt cache (loadModel's promptCache), so that
   * later prompts that begin with it — a long system prompt, a document asked about — prefill only the rest. Messages
   * (or chat: true) are rendered without the generation prompt: the conversation so far, which requests continue.
   * Resolves with the prompt's token count. Refused: a prompt of at most MIN_REUSED (16) tokens, cheaper to prefill
   * than to copy; one whose keys and values are over the budget; any on a model loaded with promptCache: 0 (as
   * savePromptCache and loadPromptCache are).
   */
  async keepPrompt(prompt: Prompt, opts: { chat?: boolean; chatTemplateKwargs?: Record<string, unknown> } = {}): Promise<number> {
    checkPromptForm(opts, ['chat', 'chatTemplateKwargs'], 'keepPrompt');
    const keep = this.keptPrompts('keepPrompt');
    const ids = isTokenIds(prompt) ? this.checkedIds(prompt, 'the prompt', opts.chat, 'keepPrompt') : this.encode(prompt as string | ChatMessage[], isChat(prompt, opts), opts.chatTemplateKwargs, 'keepPrompt', false);
    this.checkFits(ids, 'keepPrompt');
    if (!keep.keeps(ids.length)) throw new Error(`keepPrompt: a prompt of ${ids.length} tokens is not kept: ${ids.length <= MIN_REUSED ? `one of at most ${MIN_REUSED} tokens costs less to prefill than to copy` : `its keys and values are more than the prompt cache's ${keep.budget / 2 ** 20} MiB (loadModel's promptCache)`}`);
    const hit = await keep.take(ids), cache = hit?.cache ?? await this.backend.newCache(1);
    try {
      await this.backend.step(cache, { tokens: [ids.slice(hit?.length ?? 0)] });
      await keep.put(ids, cache);
    } finally {
      await this.backend.free(cache);
    }
    return ids.length;
  }

  /**
   * Writes the prompts the prompt cache keeps, with their keys and values, to `file` (atomically; a file there that
   * is not a prompt cache, or one of another format version, is not replaced): loadPromptCache reads them back, after
   * a restart too.
   */
  async savePromptCache(file: string): Promise<{ prompts: number; tokens: number; bytes: number }> {
    return this.keptPrompts('savePromptCache').save(checkFile(file, 'savePromptCache'));
  }

  /**
   * Keeps the prompts savePromptCache wrote to `file` (`of` them), within this model's budget: the most recently used.
   * A file another model wrote (other weights, the same ones quantised otherwise, or another RoPE scaling) is refused with a
   * PromptCacheMismatch; a corrupt one, or one this model cannot use, with an error naming it. All or nothing is read.
   */
  async loadPromptCache(file: string): Promise<{ prompts: number; tokens: number; of: number }> {
    return this.keptPrompts('loadPromptCache').load(checkFile(file, 'loadPromptCache'));
  }

  private keptPrompts(where: string): PromptCache {
    const keep = promptCacheOf(this.backend);
    if (!keep) throw new Error(`${where}: this model keeps no prompts (it was loaded with promptCache: 0)`);
    return keep;
  }

  /**
   * This model with another PEFT adapter, in the same session: no second copy of the weights, and both models can
   * generate at once (concurrent calls step as one batch, rows grouped by adapter). The graph must take LoRA inputs for the adapter's
   * projections: load this model with an adapter on them (or from a folder converted with --lora-targets).
   * Closing the returned model removes its adapter; closing this one ends the session for both.
   */
  async withAdapter(dir: string, opts: Pick<LoadOptions, 'onDownload' | 'signal' | 'onNote'> = {}): Promise<Model> {
    if (typeof dir !== 'string' || !dir) throw new Error(`withAdapter: dir must be the path of a PEFT adapter folder, got ${shown(dir)}`);
    checkKeys(opts, ['onDownload', 'signal', 'onNote'], 'withAdapter');
    if (opts.onNote !== undefined && typeof opts.onNote !== 'function') throw new Error(`withAdapter: onNote must be a function (note) => void, got ${typeof opts.onNote}`);
    checkHubOptions(opts, 'withAdapter');
    dir = await resolveModelPath(dir, opts);
    opts.signal?.throwIfAborted();
    const adapter = loadAdapter(dir, this.config, this.tokenizer.vocabSize), name = `adapter ${++adapterViews}: ${path.resolve(dir)}`;
    const other = baseModelNote(adapter.dir, this.known);
    if (other) opts.onNote?.(other);
    await this.backend.setAdapter(adapter.tensors, name);
    const view = new Model(this.config, this.tokenizer, adapterView(this.backend, name), adapter, name);
    view.known = this.known;
    // Registered on the view's backend, which the view and objects made from it (Object.create) hold, and which a
    // caller may keep alone; the token lets close() unregister it.
    view.collected = {};
    droppedViews.register(view.backend, { session: sessionOf(this.backend), name }, view.collected);
    return view;
  }
  private collected?: object;
  private known: readonly string[] = [];
  /**
   * What the model goes by: its Hugging Face repository where it came from the cache, its path, and a converted
   * folder's source's (compared with what an adapter, a router or a verifier records it was trained on).
   */
  get names(): readonly string[] { return this.known; }

  /**
   * Ends the model's session (a view made by withAdapter gives back only its adapter): calls still running, and any
   * made later, are refused with "runtime: model is closed"; the prompts it kept are dropped. It resolves once the
   * step running has ended: a worker thread of the app's that holds a model awaits this before it ends (terminated
   * mid-step, onnxruntime-node aborts the process).
   */
  async close(): Promise<void> {
    if (this.collected) { droppedViews.unregister(this.collected); droppedModels.unregister(this.collected); }
    dropPromptCache(this.backend);
    await this.backend.close();
  }

  /** `await using model = await loadModel(…)` closes it at the end of the block. */
  async [Symbol.asyncDispose](): Promise<void> { await this.close(); }
}

const checkFile = (file: unknown, where: string): string => {
  if (typeof file !== 'string' || !file) throw new Error(`${where}: give the path of a file, got ${shown(file)}`);
  return file;
};

export const loadModel = (p: string, opts?: LoadOptions): Promise<Model> => Model.load(p, opts);

/** Checkpoints built in memory from this many parameters on are built in the session's worker (see Model.open). */
export const BUILD_IN_WORKER = 10_000_000;

let adapterViews = 0;
/** A view whose backend is collected without close() gives its adapter's weights back (an app making one per request would otherwise grow). */
const droppedViews = new FinalizationRegistry<{ session: Backend; name: string }>(({ session, name }) => { session.setAdapter(null, name).catch(() => {}); });
/** A model's session, closed when the model's backend is collected without close() (held: the session under it, which does not hold it). */
const droppedModels = new FinalizationRegistry<Backend>((session) => { session.close().catch(() => {}); });

const LOAD_OPTIONS = ['quant', 'accuracyLevel', 'adapter', 'loraTargets', 'threads', 'worker', 'onProgress', 'onDownload', 'signal', 'cache', 'cacheDir', 'onNote', 'promptCache', 'ropeScaling'];
const PROMPT_OPTIONS = ['chat', 'chatTemplateKwargs', 'signal', 'json', 'maxTokens', 'minTokens', 'ignoreEos', 'seed', 'stop', 'stopTokens', 'adapter', 'adapterFrom', 'thinking', ...SAMPLING_OPTIONS, 'promptLookup', 'cacheSalt'];


/** The options that say how a prompt is read (keepPrompt, promptLogprobs): known keys, chat true or false. */
function checkPromptForm(o: { chat?: unknown }, known: readonly string[], where: string): void {
  checkKeys(o, known, where);
  if (o.chat !== undefined && typeof o.chat !== 'boolean') throw new Error(`${where}: chat must be true or false, got ${shown(o.chat)}`);
}

function checkLoadOptions(o: LoadOptions): void {
  checkKeys(o, LOAD_OPTIONS, 'loadModel');
  checkBuildOptions(o, 'loadModel');
  if (o.quant === 'fp32') checkAccuracyQuant('fp32', o, 'loadModel'); // a converted folder's too
  if (o.worker !== undefined && typeof o.worker !== 'boolean') throw new Error(`loadModel: worker must be true or false, got ${shown(o.worker)}`);
  checkValues(o, { threads: is.intIn(1, MAX_THREADS) }, 'loadModel');
  if (o.adapter !== undefined && (typeof o.adapter !== 'string' || !o.adapter)) throw new Error(`loadModel: adapter must be the path of a PEFT adapter folder, got ${shown(o.adapter)}`);
  if (o.cache !== undefined && !CACHE_POLICIES.includes(o.cache)) throw new Error(`loadModel: cache must be ${CACHE_POLICIES.map((p) => `"${p}"`).join(', ')}, got ${shown(o.cache)}`);
  if (o.cacheDir !== undefined && (typeof o.cacheDir !== 'string' || !o.cacheDir)) throw new Error(`loadModel: cacheDir must be a folder path, got ${shown(o.cacheDir)}`);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw new Error(`loadModel: onProgress must be a function (done, total) => void, got ${typeof o.onProgress}`);
  checkHubOptions(o, 'loadModel');
  if (o.onNote !== undefined && typeof o.onNote !== 'function') throw new Error(`loadModel: onNote must be a function (note) => void, got ${typeof o.onNote}`);
  if (o.ropeScaling !== undefined) checkRopeScalingChoice(o.ropeScaling, 'loadModel');
  if (o.promptCache !== undefined && !(typeof o.promptCache === 'number' && Number.isFinite(o.promptCache) && o.promptCache >= 0)) throw new Error(`loadModel: promptCache must be a number of MiB ≥ 0 (0: no prompt caching), got ${shown(o.promptCache)}`);
}

/** onDownload and signal, as loadModel and withAdapter take them. */
function checkHubOptions(o: Pick<LoadOptions, 'onDownload' | 'signal'>, where: string): void {
  if (o.onDownload !== undefined && typeof o.onDownload !== 'function') throw new Error(`${where}: onDownload must be a function (done, total) => void, got ${typeof o.onDownload}`);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new Error(`${where}: signal must be an AbortSignal, got ${shown(o.signal)}`);
}

/** The template's own inputs (messages, add_generation_prompt) are set by the call, not by kwargs. */
function checkTemplateKwargs(kw: Record<string, unknown>, where: string): void {
  if (kw === null || typeof kw !== 'object' || Array.isArray(kw)) throw new Error(`${where}: chatTemplateKwargs must be an object of template variables, got ${shown(kw)}`);
  const taken = ['messages', 'add_generation_prompt'].find((k) => Object.hasOwn(kw, k));
  if (taken) throw new Error(`${where}: chatTemplateKwargs cannot set "${taken}": the call sets it (pass messages as the prompt)`);
  if (Object.hasOwn(kw, 'raise_exception')) throw new Error(`${where}: chatTemplateKwargs cannot set "raise_exception": it is the template's own function for refusing messages`);
}

/**
 * A special token that a template variable's text writes (a tool's description, a document) would be encoded as the
 * control token itself, ending the turn it is in and letting the text open another: refused by where it is (a
 * message's own text is kept as text instead: encodeChat).
 */
function checkKwargsText(tok: TextTokenizer, kw: Record<string, unknown>, where: string): void {
  if (!tok.specialIn) return;
  const walk = (v: unknown, at: string, depth: number): void => {
    if (typeof v === 'string') {
      const special = tok.specialIn!(v);
      if (special) throw new Error(`${where}: chatTemplateKwargs.${at} writes the special token ${special}, which the chat template would pass on as the control token itself (ending the turn it is in): take it out`);
    } else if (v && typeof v === 'object' && depth < 64) {
      for (const [k, x] of Object.entries(v)) walk(x, Array.isArray(v) ? `${at}[${k}]` : `${at}.${k}`, depth + 1);
    }
  };
  for (const [k, v] of Object.entries(kw)) walk(v, k, 0);
}

function checkMessages(messages: ChatMessage[], where: string): void {
  if (!messages.length) throw new Error(`${where}: the list of messages is empty`);
  messages.forEach((m, i) => {
    if (!m || typeof m !== 'object') throw new Error(`${where}: message ${i} is not an object ({ role, content })`);
    if (!CHAT_ROLES.includes(m.role)) throw new Error(`${where}: message ${i} has role ${JSON.stringify(m.role)} (roles: ${CHAT_ROLES.join(', ')})`);
    if (typeof m.content !== 'string') throw new Error(`${where}: message ${i} has content of type ${m.content === null ? 'null' : typeof m.content}; it must be a string`);
    for (const k of ['reasoning_content', 'tool_call_id', 'name'] as const) {
      if (m[k] != null && typeof m[k] !== 'string') throw new Error(`${where}: message ${i} has ${k} of type ${typeof m[k]}; it must be a string (or null)`);
    }
    checkToolCalls(m, `${where}: message ${i}`);
  });
}

/** The source's tokenizer, built now where it was opened lazily, and the adapter's invocation ids checked against it. */
function tokenizerOf(src: ModelSource, adapter: LoadedAdapter | undefined): TextTokenizer {
  const tokenizer = src.tokenizer;
  if (adapter) checkInvocationIds(adapter, src.config, tokenizer.vocabSize);
  return tokenizer;
}
