/**
 * answer(): one question in, one answer out, reasoning only when it pays.
 *
 * 1. The chat prompt is encoded once by the base model (adapter mask 0) in one prefill step, which also
 *    returns the last position's logits and final hidden state.
 * 2. Route: 'on' / 'off' forced; 'auto' asks the router (score ≥ threshold → reason; no router → reason).
 * 3. Direct route: the first token is sampled from the prefill logits; decoding goes on with the adapter off.
 *    A router with a confidence gate holds the answer back until its first tokens pass the gate; a token the
 *    base model found too unlikely drops the answer, the cache is cut back to the prompt, and the request
 *    escalates to the reasoning route on that same cache (the invocation is fed in one step; no re-prefill).
 * 4. Reasoning route (activated LoRA): the invocation ("<think>") was already in the prefill with the adapter on
 *    from its position (speculative invocation: the prompt positions before it are unaffected), so its logits
 *    give each sample's first thinking token with no extra step; the KV row is forked into N rows (no second
 *    prefill) and the N samples (seeds seed+i) decode as one batch; a finished sample leaves the batch. A thinking segment that reaches the cap is
 *    closed by the runtime with what "\n</think>\n\n" adds to it (src/runtime/generate.ts: the "\n" counts
 *    towards the cap). A classic LoRA adapter cannot reuse the base cache: its prompt is encoded again with the
 *    adapter on everywhere.
 * 5. The samples' extracted answers are combined by vote (vote.ts), optionally scored by the verifier from the
 *    hidden state the decode steps already return; with earlyStop the decode stops once the vote is decided.
 * A model that thinks by itself (nativeThinking, e.g. Qwen3) takes the same path with no adapter: the reasoning
 * route is its own thinking after "<think>", and the direct route feeds the empty thinking block first.
 */
import { budgetControl, budgetSystemLine } from './budget.ts';
import { randomInt } from 'node:crypto';
import { adapterIdentity } from '../train/checkpoint.ts';
import { namesModel, type LoadedAdapter } from '../io/peft.ts';
import os from 'node:os';
import type { Model } from '../runtime/model.ts';
import { checkKeys, checkValues, is } from '../runtime/options.ts';
import { shown } from '../show.ts';
import type { Backend, CacheHandle } from '../runtime/backend.ts';
import { checkGenerateOptions, closingAfterCap, decode, endsWithRun, maxThinkingCap, Sequence, stopList, type GenerateOptions, type ThinkingOptions } from '../runtime/generate.ts';
import { sampleToken, samplingOf, seedAt, SAMPLING_OPTIONS } from '../runtime/sampler.ts';
import { extractAnswer, sharedKey, TASKS, voteKey } from '../tasks/grade.ts';
import { ropeScalingWords, type ModelConfig } from '../models/config.ts';
import { gib } from '../runtime/convert.ts';
import type { ChatMessage } from '../tokenizer/types.ts';
import type { AnswerInput, AnswerOptions, AnswerResult, Phase, Route, SampleResult, VoteMethod } from './types.ts';
import { canStopEarly, decidesEarly, isVerifierVote, vote, VOTE_METHODS, type Candidate } from './vote.ts';
import { checkSample } from './check.ts';
import { gateTrip, Router, type RouterGate } from './router.ts';
import { Verifier } from './verifier.ts';
import { kvBytes } from '../runtime/kv-cache.ts';
import { jsonConstraint, jsonKey, JSON_STOP } from '../runtime/json-constraint.ts';
import { AbortedError, ContextLengthError } from '../runtime/errors.ts';
import { promptCacheOf, type PromptReuse } from '../runtime/prompt-cache.ts';

export const THINK_OPEN = '<think>';
export const THINK_CLOSE = '</think>';
/** What budget forcing appends when the thinking cap is reached. */
export const FORCED_CLOSE = '\n</think>\n\n';
/** The empty thinking block a thinking model answers directly after (Qwen3's template, enable_thinking: false). */
export const EMPTY_THINKING = '<think>\n\n</think>\n\n';

export { budgetSystemLine };

export interface ReasoningTokens {
  /** Fed after the prompt to start reasoning (the adapter config's alora_invocation_tokens, else "<think>"). */
  invocation: number[];
  /** "</think>" */
  end: number[];
  /** "\n</think>\n\n", appended when the thinking cap is reached (encoded whole, as the model writes it). */
  force: number[];
  /** How many of `force`'s tokens follow the capped thinking (from "</think>" on: those before it count towards the cap). */
  closing: number;
}

/** The thinking segment's options for generate: closed by the "</think>" tokens or text, capped at `maxTokens` when given. */
export const thinkingOptions = (rt: ReasoningTokens, maxTokens?: number): ThinkingOptions =>
  ({ end: rt.end, endText: THINK_CLOSE, force: rt.force, ...(maxTokens !== undefined ? { maxTokens } : {}) });

/**
 * The invocation, closing and forced-closing tokens: the invocation is the adapter's own when its config names one
 * (alora_invocation_tokens), and `invocation` (default "<think>") otherwise; one given that differs from the adapter's
 * is refused rather than ignored.
 */
export function reasoningTokens(model: Pick<Model, 'tokenizer' | 'adapter'>, invocation?: string, where = 'answer'): ReasoningTokens {
  const enc = (t: string) => model.tokenizer.encode(t, { addSpecialTokens: false }), own = model.adapter?.config.aloraInvocationTokens;
  const asked = invocation === undefined ? undefined : invocationIds(enc, invocation);
  if (own && asked && asked.join() !== own.join()) {
    throw new Error(`${where}: invocation ${shown(invocation)} is not the one the adapter was trained with (its adapter_config.json's alora_invocation_tokens, ${shown(model.tokenizer.decode(own))}, in ${model.adapter!.dir}); leave invocation out`);
  }
  const inv = own ?? asked ?? invocationIds(enc, THINK_OPEN), end = enc(THINK_CLOSE);
  if (!inv.length) throw new Error(`${where}: the invocation ${shown(invocation ?? THINK_OPEN)} encodes to no tokens`);
  if (!end.length) throw new Error(`answer: "${THINK_CLOSE}" encodes to no tokens`);
  const force = enc(FORCED_CLOSE);
  return { invocation: inv, end, force, closing: closingAfterCap(model.tokenizer, { end, endText: THINK_CLOSE, force }) };
}

export { maxThinkingCap };

/** Refuses a thinking cap above maxThinkingCap; `limitName` is the option that sets `limit` in the caller's words. */
export function checkThinkingRoom(rt: Pick<ReasoningTokens, 'closing'>, cap: number, limit: number, where: string, limitName = 'maxTokens', byDefault = false): void {
  const close = rt.closing;
  if (cap > maxThinkingCap(close, limit)) {
    throw new Error(`${where}: maxThinkingTokens ${cap} leaves no room for the answer within ${limitName} ${limit}${byDefault ? ' (the default)' : ''}: closing the thinking takes ${close} token${close === 1 ? '' : 's'} and the answer at least one; lower maxThinkingTokens or raise ${limitName}`);
  }
}

/**
 * An invocation's ids as reasoning data holds it: "<think>" is one token in a thinking model's vocabulary; without
 * such a token (Qwen2.5, Llama 3) the text before the thinking's first newline tokenizes with it ("<think>\n" ends
 * in one ">\n" token), and the model was trained on that, not on a lone ">".
 */
export function invocationIds(enc: (text: string) => number[], invocation: string): number[] {
  // Joined where the ids with the newline do not begin with the ids alone (">" became ">\n"); a SentencePiece
  // vocabulary writes the newline as tokens of its own ("▁" "<0x0A>"), after the invocation's.
  const alone = enc(invocation), before = enc(`${invocation}\n`);
  return alone.length > 1 && !alone.every((t, i) => before[i] === t) ? before : alone;
}

export interface Prefill {
  cache: CacheHandle;
  /** The prompt's last position: logits (the direct answer's first token) and final hidden state (the router's input). */
  logits: Float32Array;
  hidden: Float32Array;
  /** With an invocation: the logits after it (the first thinking token). */
  invocationLogits?: Float32Array;
  /** The prompt's first tokens taken from a kept prompt's cache (`reuse`), not prefilled again. */
  cached: number;
}

/**
 * Encodes a prompt into a new one-row cache in one step. With `invocation`, those tokens are appended with the
 * adapter on (speculative invocation): the prompt's positions still see base weights only (attention is causal),
 * so its logits and hidden state are the base model's, and the reasoning route starts from the invocation's
 * logits without another step; the direct route truncates the invocation away.
 */
export async function prefill(backend: Backend, ids: number[], adapterMask: 0 | 1 = 0, invocation: number[] = [], invocationAdapter = true, reuse?: PromptReuse, signal?: AbortSignal): Promise<Prefill> {
  // With `reuse` (base weights only): from the longest kept beginning of the prompt on, and the prompt kept after.
  const hit = adapterMask ? undefined : await reuse?.take(ids);
  const cache = hit?.cache ?? await backend.newCache(1), cached = hit?.length ?? 0;
  const L = invocation.length + 1, V = backend.config.vocabSize, H = backend.config.hiddenSize;
  try {
    const tokens = [...ids.slice(cached), ...invocation], own = ids.length - cached;
    const mask = adapterMask || (invocation.length && invocationAdapter) ? [tokens.map((_, i) => (adapterMask || i >= own ? 1 : 0))] : undefined;
    const r = await backend.step(cache, { tokens: [tokens], ...(mask ? { adapterMask: mask } : {}), logits: L, want: { logits: true, hidden: true } }, signal);
    if (reuse && !adapterMask) await reuse.put(ids, cache);
    return {
      cache, logits: r.logits!.slice(0, V), hidden: r.hidden!.slice(0, H), cached,
      ...(invocation.length ? { invocationLogits: r.logits!.slice((L - 1) * V, L * V) } : {}),
    };
  } catch (e) {
    await backend.free(cache);
    throw e;
  }
}

/**
 * A router or verifier scores what it was trained on: answers with the reasoning adapter, or a model's own
 * thinking (nativeThinking, recorded in its metadata). The other kind is refused.
 */
export function checkTrainedFor(what: 'router' | 'verifier', probe: { metadata: Record<string, unknown> }, native: boolean, config?: ModelConfig): void {
  const shape = probe.metadata.modelShape;
  if (config && typeof shape === 'string' && shape !== modelShape(config)) {
    throw new Error(`answer: this ${what} was trained on a model of another shape (${shape}); this one is ${modelShape(config)}: train one for it (train-${what})`);
  }
  const trained = probe.metadata.nativeThinking === true, command = `train-${what} --native-thinking`;
  if (trained !== native) {
    throw new Error(trained
      ? `answer: this ${what} was trained for a model that thinks by itself (${command}): use it with nativeThinking`
      : `answer: this ${what} was not trained for nativeThinking (${probe.metadata.adapter ? `but with the reasoning adapter ${probe.metadata.adapter}` : 'its answers had no empty thinking block'}): train one with ${command}`);
  }
}

/** checkTrainedFor for a router.json / verifier.json, its error naming the file (`where` prefixes it, e.g. "serve: "). */
export function checkTrainedFile(what: 'router' | 'verifier', file: string, metadata: Record<string, unknown>, native: boolean, where = '', config?: ModelConfig): void {
  try { checkTrainedFor(what, { metadata }, native, config); } catch (e) { throw new Error(inWordsOf(`${where}${file}`, (e as Error).message)); }
}

/** A model's shape as a router or verifier records it (the probe reads that model's hidden states). */
export const modelShape = (c: ModelConfig): string =>
  `${c.architecture}, ${c.numLayers} layers, hidden ${c.hiddenSize}, heads ${c.numHeads}/${c.numKvHeads}×${c.headDim}, MLP ${c.intermediateSize}, vocabulary ${c.vocabSize}`;

const adapterHashes = new WeakMap<LoadedAdapter, string>();
/** adapterIdentity, once per loaded adapter: what a router or verifier records of the adapter it was trained with. */
export function adapterHash(a: LoadedAdapter): string {
  let h = adapterHashes.get(a);
  if (h === undefined) adapterHashes.set(a, h = adapterIdentity(a.tensors));
  return h;
}

/** What a router or verifier records of the model it is trained with. */
export const trainedWith = (model: Model): Record<string, string> => ({ modelShape: modelShape(model.config), ...(model.adapter ? { adapterHash: adapterHash(model.adapter) } : {}) });

/**
 * A note when a router or verifier was trained with another reasoning adapter than any of `adapters` (its threshold,
 * or the hidden states it scores, came from that adapter); undefined when one matches or the file records none.
 */
export function pairingNote(what: 'router' | 'verifier', file: string, metadata: Record<string, unknown>, adapters: readonly LoadedAdapter[]): string | undefined {
  const want = metadata.adapterHash;
  if (typeof want !== 'string' || !adapters.length || adapters.some((a) => adapterHash(a) === want)) return undefined;
  return `note: ${file} was trained with another reasoning adapter (${JSON.stringify(metadata.adapter)}) than ${adapters.map((a) => a.dir).join(', ')}: its ${what === 'router' ? 'threshold was chosen for that adapter' : 'scores are for that adapter\'s answers'}; train-${what} with this adapter makes a matching one`;
}

/**
 * A note when a router or verifier records it was trained on another model (metadata.model, by name: namesModel)
 * than one of `names`: a same-shaped model's hidden states load without an error, and route or score otherwise.
 */
export function modelNote(what: 'router' | 'verifier', file: string, metadata: Record<string, unknown>, names: readonly string[]): string | undefined {
  const trained = metadata.model;
  if (typeof trained !== 'string' || namesModel(trained, names) !== false) return undefined;
  return `note: ${file} was trained on ${trained}, and this model is ${names[0]}: it ${what === 'router' ? 'routes by' : 'scores'} that model's hidden states; train-${what} on this model makes a matching one (if this is that model under another name, all is well)`;
}

/**
 * A note when a router or verifier was trained on the model under another RoPE scaling than `config`'s (the hidden
 * states it reads move with the RoPE); undefined when they agree or the file records none (one written before it was recorded).
 */
export function ropeNote(what: 'router' | 'verifier', file: string, metadata: Record<string, unknown>, config: ModelConfig): string | undefined {
  const trained = metadata.ropeScaling, now = ropeScalingWords(config.ropeScaling);
  if (typeof trained !== 'string' || trained === now) return undefined;
  return `note: ${file} was trained on the model with RoPE scaling ${trained}, and it runs with ${now} here: the hidden states it ${what === 'router' ? 'routes by' : 'scores'} move with the RoPE; train-${what} with the same scaling makes a matching one`;
}

/** A `.catch` for answer() run as a step of `where` (router, verifier): its refusals are said as that command's. */
export const answeringFor = (where: string) => (e: unknown): never => {
  if (e instanceof Error) e.message = inWordsOf(where, e.message);
  throw e;
};

/** answer()'s message in the words of `where` (eval, chat, …). */
export const inWordsOf = (where: string, message: string): string => (message.startsWith('answer: ') ? `${where}: ${message.slice('answer: '.length)}` : message);

/** nativeThinking needs "<think>" and "</think>" as tokens of their own: a model without them cannot think natively. */
function checkThinkingTokens(rt: ReasoningTokens, where = 'answer'): void {
  if (rt.invocation.length !== 1 || rt.end.length !== 1) {
    throw new Error(`${where}: nativeThinking (--native-thinking) needs a model that thinks by itself, whose tokenizer has "${THINK_OPEN}" and "${THINK_CLOSE}" tokens (such as Qwen3); this one encodes them as ${rt.invocation.length} and ${rt.end.length} tokens: give it a reasoning adapter instead (train-sft makes one)`);
  }
}

/** Refuses a model that cannot think by itself (nativeThinking), in the words of `where` (eval, serve, router, verifier), before any work. */
export function checkNativeThinking(model: Pick<Model, 'tokenizer'>, where: string): void {
  checkThinkingTokens(reasoningTokens({ tokenizer: model.tokenizer }, undefined, where), where);
}

/**
 * Whether a model thinks by itself, as its chat template tells: its generation prompt opens the thinking
 * (DeepSeek-R1-Distill, Qwen3-Thinking-2507), or a Qwen3 ChatML template answers to enable_thinking (Qwen3's
 * hybrid models; the Instruct-2507 ones do not think), or any other template drops the thinking of earlier
 * answers (R1's first distills and R1-0528-Qwen3-8B, QwQ). Templates that only pre-fill an empty block for enable_thinking:
 * false on another architecture (the embedded model's) do not count: its adapter does the thinking.
 */
export function thinksByItself(model: Pick<Model, 'tokenizer' | 'config'>): boolean {
  const hi: ChatMessage[] = [{ role: 'user', content: 'Hi' }];
  const render = (messages: ChatMessage[], vars?: Record<string, unknown>) => model.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true, vars });
  try {
    const prompt = render(hi);
    if (prompt.trimEnd().endsWith(THINK_OPEN)) return true;
    // Qwen3's own (ChatML) templates: the hybrid models' answers to enable_thinking; the Instruct-2507 ones drop
    // earlier thinking from the history as the others do, but those models do not think.
    if (model.config.architecture === 'qwen3' && prompt.includes('<|im_start|>')) return render(hi, { enable_thinking: false }) !== prompt;
    // Elsewhere, a template that drops an earlier answer's thinking from the history is a thinking model's
    // (DeepSeek-R1's distills whose generation prompt leaves the "<think>" to the model, R1-0528's Qwen3 one
    // included; QwQ).
    const history = render([...hi, { role: 'assistant', content: `${THINK_OPEN}\nPLAN-7f3\n${THINK_CLOSE}\n\nDONE-7f3` }, { role: 'user', content: 'Ok' }]);
    return history.includes('DONE-7f3') && !history.includes('PLAN-7f3');
  } catch {
    return false; // no chat template (or one that fails): nothing to tell
  }
}

/** thinksByItself, found once per model (it renders the template three times). */
const OWN_THINKING = new WeakMap<object, boolean>();
const ownThinking = (model: Pick<Model, 'tokenizer' | 'config'>): boolean => {
  let own = OWN_THINKING.get(model);
  if (own === undefined) OWN_THINKING.set(model, own = thinksByItself(model));
  return own;
};

/**
 * The chat template's variables as answer() and the server give them. `enable_thinking` is Qwen3's switch (false: the
 * template writes an empty thinking block, after which the model answers directly): given to the template of a model
 * that thinks by itself (`native`, or as thinksByItself finds); not to another's, whose base never learned to answer
 * after that block (the embedded model's template writes it, and its base answered garbage there). Its false asks for
 * a direct answer all the same: `direct`, where it was left out (`stripped`).
 */
export function templateVars(model: Pick<Model, 'tokenizer' | 'config'>, kwargs: Record<string, unknown> | undefined, native: boolean): { vars?: Record<string, unknown>; direct: boolean; stripped: boolean } {
  const direct = kwargs?.enable_thinking === false;
  if (!kwargs || !Object.hasOwn(kwargs, 'enable_thinking') || native || ownThinking(model)) return { vars: kwargs, direct, stripped: false };
  const { enable_thinking: _, ...vars } = kwargs;
  return { vars, direct, stripped: true };
}

/**
 * A thinking model's direct answer follows the empty thinking block: the prompt is kept up to `tagEnd` and `block` fed
 * after it. Nothing is fed when the template wrote the whole block (Qwen3's enable_thinking: false); after a
 * template's opening tag (`opened`), the blank it wrote after the tag is cut and the rest of the block fed from the
 * tag on, so the block's tokens are the ones its text encodes to ("\n\n" is one token, not the template's "\n" and ours).
 */
function emptyBlock(tok: Model['tokenizer'], ids: number[], opened: number, invocation: number[]): { tagEnd: number; block: number[] } {
  const empty = tok.encode(EMPTY_THINKING, { addSpecialTokens: false });
  if (opened < 0) return { tagEnd: ids.length, block: endsWithRun(ids, empty) ? [] : empty };
  const tagEnd = opened + invocation.length;
  return { tagEnd, block: tok.encode(EMPTY_THINKING.slice(tok.decode(ids.slice(opened, tagEnd)).length), { addSpecialTokens: false }) };
}

/**
 * The whole prompt a thinking model is fed, as answer() builds it on its cache: to think, the chat prompt with the
 * invocation, unless the template opened the thinking itself; to answer directly, with the empty thinking block.
 */
export function thinkingModelPrompt(tok: Model['tokenizer'], ids: number[], invocation: number[], think: boolean): number[] {
  const opened = openedAt(tok, ids, invocation);
  if (think) return opened >= 0 ? ids : [...ids, ...invocation];
  const { tagEnd, block } = emptyBlock(tok, ids, opened, invocation);
  return [...ids.slice(0, tagEnd), ...block];
}

/** Where the prompt opens the thinking itself (the invocation, then at most two blank tokens, at its end), else -1. */
function openedAt(tok: Model['tokenizer'], ids: number[], invocation: number[]): number {
  for (let k = 0; k <= 2 && k < ids.length; k++) {
    const at = ids.length - k - invocation.length;
    if (at >= 0 && endsWithRun(ids.slice(0, ids.length - k), invocation) && !tok.decode(ids.slice(ids.length - k)).trim()) return at;
  }
  return -1;
}

/**
 * Splits a sample's streamed text into its thinking and answer phases: the tags dropped, the thinking's blank space
 * at either end (held back until more thinking follows) and the newlines that follow "</think>" too; the answer
 * otherwise as generated. So the pieces add up to the result's thinking and answer exactly. A tag written again in
 * the answer (a capped model that goes on reasoning there, as s1 allows) is dropped, its text kept. A direct answer
 * (`start` 'answer') streams exactly as generated: tags a model that thinks by itself writes there are kept, so a
 * client can still tell its thinking from its answer. Exported for tests.
 */
export function phaseStream(emit: (phase: Phase, piece: string) => void, start: Phase) {
  let phase = start, held = '', lead = start === 'thinking', blank = '';
  const raw = start === 'answer';
  // Pieces are given out once the state is updated, in order: a callback that aborts the request pushes the
  // sample's last text from inside `emit`, and that text joins the queue.
  const pending: [Phase, string][] = [];
  let draining = false;
  const drain = () => {
    if (draining) return;
    draining = true;
    try { while (pending.length) emit(...pending.shift()!); } finally { draining = false; }
  };
  const out = (text: string) => {
    if (lead) { text = text.replace(phase === 'thinking' ? /^\s+/ : /^[\r\n]+/, ''); if (text) lead = false; }
    if (phase === 'thinking' && text) { text = blank + text; const body = text.trimEnd(); blank = text.slice(body.length); text = body; }
    if (text) pending.push([phase, text]);
  };
  const release = () => { // all but a tail that may still become a tag
    const keep = raw ? 0 : phase === 'thinking' ? closeTagTail(held) : tagPiecesTail(held);
    out(held.slice(0, held.length - keep));
    held = held.slice(held.length - keep);
  };
  const take = (piece: string): void => {
    held += piece;
    if (phase === 'thinking') {
      const at = held.indexOf(THINK_CLOSE);
      if (at < 0) return release();
      out(held.slice(0, at));
      phase = 'answer'; lead = true; blank = ''; held = held.slice(at + THINK_CLOSE.length);
    }
    if (!raw) held = dropTags(held);
    release();
  };
  return {
    push(piece: string): void { take(piece); drain(); },
    flush(): void { out(held); held = ''; drain(); },
  };
}

const ANSWER_TAGS = [THINK_OPEN, THINK_CLOSE];
/** Length of the longest tail of `text` that begins "</think>". */
function closeTagTail(text: string): number {
  for (let k = Math.min(THINK_CLOSE.length - 1, text.length); k > 0; k--) if (THINK_CLOSE.startsWith(text.slice(-k))) return k;
  return 0;
}
/**
 * Length of the longest tail of `text` made of beginnings of think tags ("</th" "<"): text to come may complete each
 * of them around the next, and dropTags then removes them all ("</th<think>ink>"), so none of it can be streamed yet.
 */
function tagPiecesTail(text: string): number {
  const ends = new Array<boolean>(text.length + 1).fill(false); // ends[i]: text.slice(i) is such pieces
  ends[text.length] = true;
  let longest = 0;
  for (let i = text.length - 1; i >= 0; i--) {
    // A piece text[i, i+k) that begins a tag (not all of it), followed by such pieces.
    for (let k = 1; k < THINK_CLOSE.length && i + k <= text.length && !ends[i]; k++) {
      ends[i] = ends[i + k] && ANSWER_TAGS.some((t) => k < t.length && t.startsWith(text.slice(i, i + k)));
    }
    if (ends[i]) longest = text.length - i;
  }
  return longest;
}

/** The text without think tags, removed until none is left ("<th</think>ink>" leaves none either). */
function dropTags(text: string): string {
  for (let was = ''; was !== text;) { was = text; text = text.replaceAll(THINK_OPEN, '').replaceAll(THINK_CLOSE, ''); }
  return text;
}

/** Thinking and answer text of a finished sequence, as phaseStream streams them (exported for tests). */
export function splitText(seq: Pick<Sequence, 'text' | 'answerFrom' | 'tokens' | 'thinkingTokens'>, reasoning: boolean, model: Model): { thinking: string; answer: string } {
  const answerText = (t: string) => dropTags(t).replace(/^[\r\n]+/, '');
  if (!reasoning) return { thinking: '', answer: seq.text }; // as generated (phaseStream)
  const at = seq.text.indexOf(THINK_CLOSE); // the first close, as the stream splits
  if (at >= 0) return { thinking: seq.text.slice(0, at).trim(), answer: answerText(seq.text.slice(at + THINK_CLOSE.length)) };
  if (seq.answerFrom === undefined) return { thinking: seq.text.trim(), answer: '' };
  // The tag decoded to nothing (a tokenizer that treats it as special): split by tokens instead.
  const dec = (ids: number[]) => model.tokenizer.decode(ids, { skipSpecialTokens: true });
  return { thinking: dec(seq.tokens.slice(0, seq.thinkingTokens)).trim(), answer: answerText(dec(seq.tokens.slice(seq.answerFrom))) };
}

/** answer()'s maxTokens when none is given: generated tokens per sample. */
const ANSWER_MAX_TOKENS = 512;
const ANSWER_OPTIONS = ['reasoning', 'samples', 'vote', 'earlyStop', 'maxThinkingTokens', 'budget', 'maxTokens', 'seed', 'stop', 'task', 'onText', 'onRoute',
  'onSampleEnd', 'signal', 'invocation', 'adapterMode', 'collectHidden', 'chatTemplateKwargs', 'nativeThinking', 'json', ...SAMPLING_OPTIONS, 'promptLookup', 'minTokens', 'ignoreEos', 'cacheSalt'];

/** A router and verifier must be what their names say (a file path or the other probe would be misread). */
function checkProbes(aux: { router?: unknown; verifier?: unknown }, where: string): void {
  if (aux.router !== undefined && !(aux.router instanceof Router)) throw new Error(`${where}: router must be a Router (Router.load(file, hiddenSize)), got ${aux.router instanceof Verifier ? 'a Verifier' : shown(aux.router)}`);
  if (aux.verifier !== undefined && !(aux.verifier instanceof Verifier)) throw new Error(`${where}: verifier must be a Verifier (Verifier.load(file, hiddenSize)), got ${aux.verifier instanceof Router ? 'a Router' : shown(aux.verifier)}`);
}

/**
 * The prompt's token ids when the caller has them already (the server, which rendered and tokenized these messages
 * with their chatTemplateKwargs to check them against the context): answer() uses them instead of encoding again.
 */
export const PROMPT_IDS: unique symbol = Symbol('edgereason.promptIds');
/** Text the prompt ends with that begins every reply (the server's forced tool call, or the message continue_final_message continues): answers are read, and vote, with it. */
export const REPLY_PREFIX: unique symbol = Symbol('edgereason.replyPrefix');
/**
 * Constrained decoding of the answer (GenerateOptions.allowedNext): the server's forced tool call, held to one of its
 * tools and that tool's parameters; or, with `json`, its constraint's tracker (the server's response_format, made once
 * when the request was checked), which is then used instead of one made here.
 */
export const ALLOWED_NEXT: unique symbol = Symbol('edgereason.allowedNext');
/** `json`'s schema held to leniently (the server's response_format without strict: true, as OpenAI's): see compileJsonSchema. */
export const JSON_LENIENT: unique symbol = Symbol('edgereason.jsonLenient');
/** The samples are read one by one, not voted on (the server's `n` choices): ignoreEos may go with several. */
export const UNVOTED: unique symbol = Symbol('edgereason.unvoted');

/** answer()'s own options: the server's, given by symbol. */
type InternalAnswerOptions = AnswerOptions & { [PROMPT_IDS]?: readonly number[]; [REPLY_PREFIX]?: string; [ALLOWED_NEXT]?: GenerateOptions['allowedNext']; [JSON_LENIENT]?: boolean; [UNVOTED]?: boolean };

/** Checks answer()'s arguments (throws, naming the option and the value); returns the choices the rest reads. */
function checkAnswerArgs(model: Model, input: AnswerInput, opts: InternalAnswerOptions, aux: { router?: Router; verifier?: Verifier }) {
  if (!model || typeof model !== 'object' || typeof model.encode !== 'function' || !model.backend) throw new Error(`answer: model must be a loaded model (loadModel), got ${shown(model)}`);
  checkKeys(opts, ANSWER_OPTIONS, 'answer');
  if (aux === null || typeof aux !== 'object' || Array.isArray(aux)) throw new Error(`answer: the fourth argument must be { router?, verifier? } (or left out), got ${shown(aux)}`);
  checkKeys(aux, ['router', 'verifier'], 'answer');
  checkProbes(aux, 'answer');
  if (typeof input !== 'string' && !Array.isArray(input)) throw new Error(`answer: the question must be a string or a list of messages, got ${input === null ? 'null' : typeof input}`);
  const question = typeof input === 'string' ? input : input.at(-1)?.role === 'user' ? input.at(-1)!.content : undefined;
  if (typeof question === 'string' && !question.trim()) throw new Error(`answer: the question is empty${typeof input === 'string' ? '' : ' (the last message, from the user)'}`);
  const drawing = samplingOf(opts);
  checkGenerateOptions({ ...drawing, stop: opts.stop, promptLookup: opts.promptLookup, minTokens: opts.minTokens, ignoreEos: opts.ignoreEos, maxTokens: opts.maxTokens, cacheSalt: opts.cacheSalt }, model.config.vocabSize, 'answer', ANSWER_MAX_TOKENS);
  if (opts.json !== undefined && stopList(opts.stop).length) throw new Error(JSON_STOP('answer'));
  if ((opts.json !== undefined || opts[ALLOWED_NEXT]) && (opts.minTokens || opts.ignoreEos)) throw new Error(`answer: ${opts.ignoreEos ? 'ignoreEos' : 'minTokens'} cannot go with ${opts.json !== undefined ? 'json' : 'a constraint on the tool calls'}: the constraint could leave the model no token to draw`);
  if (opts.ignoreEos && (opts.samples ?? 1) > 1 && !opts[UNVOTED]) throw new Error(`answer: ignoreEos with ${opts.samples} samples: no sample would end by itself, and only those vote; leave out one of them`);
  const mode = opts.reasoning ?? 'auto', n = opts.samples ?? 1, method = opts.vote ?? 'majority', task = opts.task;
  if (!['auto', 'on', 'off'].includes(mode)) throw new Error(`answer: reasoning must be auto, on or off; got ${shown(mode)}`);
  if (!Number.isInteger(n) || n < 1) throw new Error(`answer: samples must be a positive integer, got ${shown(n)}`);
  if (opts.seed !== undefined && !Number.isSafeInteger(opts.seed)) throw new Error(`answer: seed must be an integer within ±(2^53 − 1), got ${shown(opts.seed)}`);
  if (task !== undefined && !TASKS.includes(task)) throw new Error(`answer: task must be one of ${TASKS.join(', ')}; got ${shown(task)}`);
  if (opts.adapterMode !== undefined && opts.adapterMode !== 'activated' && opts.adapterMode !== 'classic') throw new Error(`answer: adapterMode must be "activated" or "classic", got ${shown(opts.adapterMode)}`);
  if (!VOTE_METHODS.includes(method)) throw new Error(`answer: vote must be one of ${VOTE_METHODS.join(', ')}; got ${shown(method)}`);
  checkValues(opts, { onText: is.fn, onRoute: is.fn, onSampleEnd: is.fn, earlyStop: is.bool, collectHidden: is.bool, nativeThinking: is.bool, signal: is.signal, invocation: is.text }, 'answer');
  const native = !!opts.nativeThinking;
  if (opts.invocation !== undefined && native) throw new Error(`answer: invocation names a reasoning adapter's opening text; with nativeThinking the model opens its thinking with its own "${THINK_OPEN}": leave invocation out`);
  if (native && model.adapter) throw new Error(`answer: nativeThinking reasons with the model's own weights, but it was loaded with the adapter ${model.adapter.dir}: load it without one`);
  if (native && opts.adapterMode !== undefined) throw new Error('answer: adapterMode applies to a reasoning adapter, not to nativeThinking');
  const reasons = !!model.adapter || native; // whether this model can take the reasoning route at all
  if (isVerifierVote(method) && !aux.verifier && mode !== 'off' && reasons) throw new Error(`answer: vote "${method}" needs a verifier (train one with train-verifier and pass it)`);
  if (mode === 'on' && !reasons) throw new Error('answer: reasoning "on" needs the model loaded with its reasoning adapter (the adapter option of loadModel), or nativeThinking for a model that thinks by itself (e.g. Qwen3)');
  if (aux.router && !reasons && mode === 'auto') throw new Error('answer: a router was given, but the model was loaded without its reasoning adapter (the adapter option of loadModel) and nativeThinking is off: there is nothing to route to');
  const K = opts.maxThinkingTokens;
  if (K !== undefined && (!Number.isInteger(K) || K < 0)) throw new Error(`answer: maxThinkingTokens must be an integer ≥ 0, got ${shown(K)}`);
  if (native && opts.budget !== undefined) throw new Error('answer: budget is the control line a budget-trained (RL) adapter reads; with nativeThinking cap the thinking with maxThinkingTokens');
  if (aux.router && mode === 'auto') checkTrainedFor('router', aux.router, native, model.config);
  if (aux.verifier && mode !== 'off' && reasons) checkTrainedFor('verifier', aux.verifier, native, model.config);
  return { drawing, mode, n, method, task, native, reasons, K };
}

export async function answer(model: Model, input: AnswerInput, opts: InternalAnswerOptions = {}, aux: { router?: Router; verifier?: Verifier } = {}): Promise<AnswerResult> {
  const start = performance.now();
  const { drawing, mode, n, method, task, native, reasons, K } = checkAnswerArgs(model, input, opts, aux);
  const { backend, tokenizer: tok } = model;
  const messages: ChatMessage[] = typeof input === 'string' ? [{ role: 'user', content: input }] : [...input];
  const given = templateVars(model, opts.chatTemplateKwargs, native);
  const ids = opts[PROMPT_IDS] ? [...opts[PROMPT_IDS]] : model.encode(messages, true, given.vars, 'answer'), ctx = backend.config.maxPositionEmbeddings;
  if (!ids.length) throw new Error('answer: the prompt encodes to no tokens');
  // What the chat template already wrote: an empty thinking block (Qwen3's enable_thinking: false) asks for a direct
  // answer; a generation prompt that opens the thinking (templates of thinking-only models) has the invocation in it.
  // So does enable_thinking: false where templateVars left it out (a model whose thinking is an adapter's).
  const empty = tok.encode(EMPTY_THINKING, { addSpecialTokens: false }), directByKwargs = given.direct && given.stripped;
  const closedByTemplate = endsWithRun(ids, empty) || directByKwargs;
  if (directByKwargs && mode === 'on') throw new Error('answer: reasoning "on", but chatTemplateKwargs enable_thinking: false asks for a direct answer');
  // (true is Qwen3's default and asks for nothing by itself, but it contradicts reasoning "off", as the server says)
  if (opts.chatTemplateKwargs?.enable_thinking === true && mode === 'off') throw new Error('answer: reasoning "off", but chatTemplateKwargs enable_thinking: true asks for thinking: leave out one of them');
  if (closedByTemplate && mode === 'on') throw new Error('answer: reasoning "on", but the chat template already closed the thinking (an empty thinking block, e.g. chatTemplateKwargs enable_thinking: false)');
  const rt = reasons ? reasoningTokens(model, opts.invocation) : undefined;
  if (native) checkThinkingTokens(rt!);
  const opened = native && !closedByTemplate ? openedAt(tok, ids, rt!.invocation) : -1;
  const invocation = opened >= 0 ? [] : rt?.invocation ?? [];
  const control = opts.budget !== undefined ? budgetControl(tok, opts.budget, invocation) : []; // fed after the invocation
  // Refused before any prefill: a prompt that fills the context leaves no room for a single generated token.
  if (ids.length >= ctx) throw new ContextLengthError(`answer: the prompt has ${ids.length} tokens, which leaves no room in the model's context of ${ctx} tokens`, ids.length + 1, ctx);
  // So is a route known to be taken that cannot fit: reasoning past the invocation and the budget line (the router
  // and the gate's escalation, below, then answer directly), or a thinking model's empty thinking block.
  const reasonLen = ids.length + invocation.length + control.length, roomToReason = reasonLen < ctx;
  const noRoomToReason = () => {
    const added = [invocation.length && `the invocation's ${invocation.length}`, control.length && `the budget line's ${control.length}`].filter(Boolean).join(' and ');
    return new ContextLengthError(`answer: the prompt has ${ids.length} tokens${added ? `, ${reasonLen} with ${added}` : ''}, which leaves no room to reason in the model's context of ${ctx} tokens`, reasonLen + 1, ctx);
  };
  if (mode === 'on' && reasons && !roomToReason) throw noRoomToReason();
  const direct = native ? emptyBlock(tok, ids, opened, rt!.invocation) : { tagEnd: ids.length, block: [] as number[] }, directLen = direct.tagEnd + direct.block.length;
  const noRoomToAnswer = () => new ContextLengthError(`answer: the prompt and the empty thinking block have ${directLen} tokens, which leaves no room in the model's context of ${ctx} tokens`, directLen + 1, ctx);
  if ((mode === 'off' || closedByTemplate) && directLen >= ctx) throw noRoomToAnswer();
  const limit = opts.maxTokens ?? ANSWER_MAX_TOKENS; // generated tokens per sample
  if (K !== undefined && rt && mode !== 'off') checkThinkingRoom(rt, K, limit, 'answer', 'maxTokens', opts.maxTokens === undefined);
  checkKvMemory(backend.config, mode === 'off' || !reasons ? 1 : n, Math.min(ctx, ids.length + limit)); // a direct answer is one sequence
  // One tracker per call: its samples share the machine states of their common prefixes.
  const allowedNext = opts[ALLOWED_NEXT] ?? (opts.json !== undefined ? jsonConstraint(tok, opts.json, 'answer: json', { lenient: !!opts[JSON_LENIENT] }).tracker() : undefined);
  const classic = !!model.adapter && (opts.adapterMode ?? (model.adapter.config.aloraInvocationTokens ? 'activated' : 'classic')) === 'classic';
  const sampling = (route: Route) => ({
    ...drawing, temperature: answerTemperature(opts.temperature, route, n), stop: opts.stop, ...(allowedNext ? { allowedNext } : {}), ...(opts.promptLookup ? { promptLookup: opts.promptLookup } : {}),
    ...(opts.minTokens ? { minTokens: opts.minTokens } : {}), ...(opts.ignoreEos ? { ignoreEos: true } : {}),
  });
  const seed = opts.seed ?? randomInt(2 ** 31);
  const handles = new Set<CacheHandle>();
  const release = async (h: CacheHandle) => { handles.delete(h); await backend.free(h); };

  try {
    let base: Prefill | undefined, routerScore: number | undefined, escalation: AnswerResult['escalation'];
    const hidden: (Float32Array | undefined)[] = [], scores: (number | undefined)[] = [];

    const early = new Set<number>(), keys: string[] = []; // keys: the answers seen, MATH ones of one value voting together
    // The question the checked vote checks the work against: the last user message (a tool's result may follow it).
    const asked = typeof input === 'string' ? input : [...input].reverse().find((m) => m.role === 'user')?.content ?? '';
    // Only a sample that ended by itself (a stop token or string), with its thinking closed, has an answer to give:
    // one cut off by maxTokens may hold half a number ("#### 3" of 39), and its hidden state is not at an end.
    const candidate = (seqs: Sequence[], reasoning: boolean, i: number, split = splitText(seqs[i], reasoning, model)): Candidate => {
      const s = seqs[i], { thinking, answer: a } = split;
      const voting = s.finishReason === 'stop' && (!reasoning || s.answerFrom !== undefined);
      const read = (opts[REPLY_PREFIX] ?? '') + a;
      // (Read once, for the result: early stop never asks the checked vote before every sample has ended.)
      const flaws = method === 'checked' && reasoning ? checkSample(asked, { thinking, answer: a }).flaws : undefined;
      const capped = s.capped;
      return voting ? { extracted: sharedKey(task, keys, task ? extractAnswer(task, read) : opts.json !== undefined ? jsonKey(read) : voteKey(read)), meanLogprob: s.meanLogprob, verifierScore: scores[i], flaws, capped } : { meanLogprob: s.meanLogprob, flaws, capped };
    };
    const result = (seqs: Sequence[], reasoning: boolean, promptTokens: number): AnswerResult => {
      const splits = seqs.map((s) => splitText(s, reasoning, model)), cands = seqs.map((_, i) => candidate(seqs, reasoning, i, splits[i]));
      const samples: SampleResult[] = seqs.map((s, i) => {
        const { thinking, answer: a } = splits[i], c = cands[i];
        return {
          thinking, answer: a, extracted: c.extracted, // none for an unclosed thinking segment, a cut or a stopped sample
          tokens: s.tokens.length, thinkingTokens: reasoning ? s.thinkingTokens : 0,
          answerTokens: s.answerFrom === undefined ? 0 : s.tokens.length - s.answerFrom,
          meanLogprob: s.meanLogprob, ...(c.verifierScore !== undefined ? { verifierScore: c.verifierScore } : {}), ...(c.flaws !== undefined ? { flaws: c.flaws } : {}),
          finishReason: early.has(i) ? 'early-stop' : s.finishReason!,
          tokenIds: s.tokens, logprobs: s.logprobs, ...(opts.topLogprobs ? { topLogprobs: s.topLogprobs } : {}), capped: s.capped,
          ...(s.opts.promptLookup ? { guesses: { made: s.guessesMade, kept: s.guessesKept } } : {}),
          ...(opts.collectHidden && hidden[i] ? { hidden: hidden[i] } : {}),
        };
      });
      const v = reasoning ? vote(method, cands) : undefined;
      const chosen = v?.chosen ?? 0, winner = v ? v.winner : samples[0].extracted;
      const finish = samples[chosen].finishReason; // a voter ended by itself ('early-stop' is never chosen over one)
      const ttfts = seqs.map((s) => s.ttftMs).filter((t) => t > 0), latencyMs = performance.now() - start;
      const sum = (f: (s: SampleResult) => number) => samples.reduce((a, s) => a + f(s), 0);
      return {
        answer: samples[chosen].answer, thinking: samples[chosen].thinking, route: reasoning ? 'reasoning' : 'direct',
        // With no answer to vote on, a cut-off sample says that more room might have given one, whichever sample is chosen.
        finishReason: samples.some((x) => x.finishReason === 'cancelled') ? 'cancelled'
          : v && v.winner === undefined && samples.some((x) => x.finishReason === 'length') ? 'length' : finish === 'early-stop' ? 'stop' : finish,
        ...(routerScore !== undefined ? { routerScore } : {}),
        ...(escalation ? { escalation } : {}),
        samples, chosen, ...(v ? { votes: v.votes } : {}),
        ...(winner !== undefined ? { winner } : {}),
        usage: { promptTokens, cachedTokens: reasoning && classic ? 0 : base?.cached ?? 0, thinkingTokens: sum((s) => s.thinkingTokens), answerTokens: sum((s) => s.answerTokens), completionTokens: sum((s) => s.tokens) + (escalation?.tokens ?? 0) },
        ttftMs: ttfts.length ? Math.min(...ttfts) : latencyMs,
        latencyMs,
        ...(opts.collectHidden && base ? { promptHidden: base.hidden } : {}),
      };
    };

    // The route: direct or reasoning as asked, else the router's decision on the prompt's hidden state.
    const mayReason = mode !== 'off' && reasons && !closedByTemplate;
    const router = mode === 'auto' && mayReason ? aux.router : undefined;
    const routeFor = (score?: number): Route => (!mayReason || !roomToReason ? 'direct' : !router || score! >= router.threshold ? 'reasoning' : 'direct');

    // Cancelled before any work, or during the prompt's encoding (a long one stops between its parts): no answer. The
    // route is the one known without the prompt's encoding (a router's is not: said to be direct, and not reported
    // through onRoute), or the reasoning route already taken and said (`reasoningTaken`: a classic adapter's encoding).
    const cancelled = async (reasoningTaken = false) => {
      await backend.free(await backend.newCache(1)); // a closed model refuses the call, cancelled or not
      const reasoning = reasoningTaken || (!router && routeFor() === 'reasoning');
      if (!router && !reasoningTaken) opts.onRoute?.(reasoning ? 'reasoning' : 'direct', undefined);
      const none = Array.from({ length: reasoning ? n : 1 }, () => new Sequence(tok, { ...sampling(reasoning ? 'reasoning' : 'direct'), seed, maxTokens: 1 }, ids.length, undefined, [], ids));
      none.forEach((s) => s.cancel());
      return result(none, reasoning, reasoning ? reasonLen : ids.length);
    };
    if (opts.signal?.aborted) return await cancelled();

    // 1. Base prefill (skipped only when a classic adapter is forced on: its prompt must be encoded with the adapter).
    //    When the activated adapter may be switched on, the invocation rides along (speculative invocation, see prefill).
    const spec = mayReason && !classic ? [...invocation, ...control] : [];
    const speculate = spec.length > 0 && ids.length + spec.length < ctx;
    if (!(mode === 'on' && classic)) {
      try {
        base = await prefill(backend, ids, 0, speculate ? spec : [], !native, promptCacheOf(backend)?.within(opts.cacheSalt ?? ''), opts.signal);
      } catch (e) {
        if (e instanceof AbortedError && opts.signal?.aborted) return await cancelled();
        throw e;
      }
      handles.add(base.cache);
    }
    // 2. Route by the probe; a gated direct route may still escalate (3).
    routerScore = router && base ? router.score(base.hidden) : undefined;
    const route = routeFor(routerScore);
    const wantHidden = !!aux.verifier || !!opts.collectHidden;

    // 3. Direct route: the first token comes from the prefill logits, decoding goes on with the adapter off.
    //    With the router's gate, the answer is held back (not streamed) until its first gate.tokens tokens pass;
    //    a token below the gate cancels it, and the request escalates to reasoning on the same prompt cache.
    if (route === 'direct') {
      // The tokens of a dropped direct attempt count against maxTokens: where what would be left (or the context's
      // end) gives a reasoning turn no room to think, the direct answer stands.
      const room = (g: RouterGate) => Math.min(limit - g.tokens, ctx - reasonLen);
      // (Not for a JSON answer: the tokens the constraint picks are not the model's confident ones, and the gate, which
      // reads the model's own log-probabilities, would escalate nearly every JSON answer at its first token. Nor under
      // minTokens or ignoreEos: the tokens after an answer the model would have ended are ones it did not want to write.)
      const gate = router?.gate && opts.json === undefined && !opts.minTokens && !opts.ignoreEos && room(router.gate) >= MIN_ESCALATION_ROOM ? router.gate : undefined;
      // A thinking model answers after an empty thinking block (emptyBlock), fed on the prompt's cache; its logits give
      // the first token. (Cutting the cache to tagEnd also drops a speculative invocation, which sits past the prompt.)
      const { tagEnd, block } = direct;
      if (directLen >= ctx) throw noRoomToAnswer(); // a thinking model that the router sent here
      if (speculate || tagEnd < ids.length) await backend.truncate(base!.cache, 0, tagEnd);
      const firstLogits = block.length ? (await backend.step(base!.cache, { tokens: [block], logits: 1, want: { logits: true } })).logits! : base!.logits;
      const maxTokens = Math.min(limit, ctx - directLen); // ≥ 1: checked above
      let decided = !gate, trip = -1, held: [Phase, string][] = [];
      const stream = opts.onText && phaseStream((phase, piece) => (decided ? opts.onText!(0, phase, piece) : held.push([phase, piece])), 'answer');
      if (decided) opts.onRoute?.('direct', routerScore);
      const seq = new Sequence(tok, { ...sampling('direct'), seed, maxTokens }, directLen, stream && ((p) => stream.push(p)), [], [...ids.slice(0, tagEnd), ...block]);
      if (gate) seq.guessFrom = gate.tokens; // (a guess kept would take tokens past a trip: an escalation spends them)
      const check = () => {
        if (decided) return;
        if ((trip = gateTrip(gate, seq.logprobs)) >= 0) { seq.cancel(); decided = true; return; } // escalate
        if (seq.done || seq.tokens.length >= gate!.tokens) {
          decided = true;
          seq.ttftMs = performance.now() - start; // the held-back text is released now: that is when it is first seen
          opts.onRoute?.('direct', routerScore);
          for (const [phase, piece] of held) opts.onText!(0, phase, piece);
          held = [];
        }
      };
      if (opts.signal?.aborted) seq.cancel(); // aborted before the first token: none is taken
      else takeFirst(seq, firstLogits, start);
      check();
      if (!seq.done) {
        await decode(backend, base!.cache, [seq], [[]], start, { // the first token is fed as the sequence's own (takeFeed)
          signal: opts.signal, afterStep: check,
          ...(wantHidden ? { onFinish: (_: number, h: Float32Array) => { hidden[0] = h; } } : {}),
        });
      }
      check();
      if (trip < 0 || opts.signal?.aborted) { // passed (or no gate), or cancelled by the caller
        stream?.flush();
        if (seq.finishReason === 'stop' || seq.finishReason === 'length') opts.onSampleEnd?.(0, seq.finishReason);
        return result([seq], false, directLen);
      }
      escalation = { answer: splitText(seq, false, model).answer, tokens: seq.tokens.length, logprob: seq.logprobs[trip], at: trip };
      hidden.length = 0;
      await backend.truncate(base!.cache, 0, tagEnd);
      if (tagEnd < ids.length) await backend.step(base!.cache, { tokens: [ids.slice(tagEnd)] }); // the blank cut above
    } else opts.onRoute?.(route, routerScore);
    if (escalation) opts.onRoute?.('reasoning', routerScore);

    // 4. Reasoning route.
    // After an escalation the direct attempt's tokens come off maxTokens (a request's total); the thinking cap is the
    // thinking's own, lowered only where what is left would not hold it, its close and an answer token.
    const promptTokens = reasonLen, spent = escalation?.tokens ?? 0;
    const maxTokens = Math.min(limit - spent, ctx - promptTokens);
    const cap = K === undefined ? undefined : Math.max(0, Math.min(K, maxThinkingCap(rt!.closing, maxTokens)));
    if (maxTokens < 1) throw noRoomToReason(); // room was checked before the prefill, and an escalation leaves some
    const streams = Array.from({ length: n }, (_, i) => opts.onText ? phaseStream((phase, piece) => opts.onText!(i, phase, piece), 'thinking') : undefined);
    // The first thinking token's logits: after the speculated invocation, or the prompt's own when the template
    // opened the thinking (still valid after an escalation, which cuts the cache back to the prompt).
    let prompt: CacheHandle, firstLogits = !invocation.length && !control.length ? base?.logits : escalation ? undefined : base?.invocationLogits;
    if (classic) { // plain LoRA: the base cache is of no use, encode the prompt (and the invocation) again with the adapter on
      if (base) await release(base.cache);
      let p: Prefill;
      try {
        p = await prefill(backend, ids, 1, [...invocation, ...control], true, undefined, opts.signal);
      } catch (e) {
        if (e instanceof AbortedError && opts.signal?.aborted) return await cancelled(true);
        throw e;
      }
      prompt = p.cache; firstLogits = p.invocationLogits;
      handles.add(prompt);
    } else prompt = base!.cache;
    let cache: CacheHandle;
    if (n === 1) cache = prompt;
    else { cache = await backend.select(prompt, new Array(n).fill(0)); handles.add(cache); await release(prompt); }
    const reasonIds = [...ids, ...invocation, ...control]; // the prompt each sample's penalties and guesses read (Sequence copies what it keeps)
    const seqs = Array.from({ length: n }, (_, i) => new Sequence(tok, {
      ...sampling('reasoning'), seed: seedAt(seed, i), maxTokens, ...(native ? {} : { adapter: true, adapterFrom: classic ? 0 : ids.length }),
      thinking: { ...thinkingOptions(rt!, cap), ...(opts.json !== undefined ? { closeOnStop: true } : {}) }, // a JSON answer must follow
    }, promptTokens, streams[i] && ((p) => streams[i]!.push(p)), [], reasonIds));
    // A sample that ends says so at once, its held-back text first (the others go on).
    const ended = (i: number) => {
      streams[i]?.flush();
      const f = early.has(i) ? 'early-stop' : seqs[i].finishReason;
      if (f === 'stop' || f === 'length' || f === 'early-stop') opts.onSampleEnd?.(i, f);
    };
    let pending: number[][];
    if (firstLogits) { // the prefill ended with the invocation (speculated, or classic): each sample's first token from its logits
      pending = seqs.map((seq) => {
        if (opts.signal?.aborted) { seq.cancel(); return []; } // aborted before the first token: none is taken
        return takeFirst(seq, firstLogits!, start) ? [] : seq.takeFeed();
      });
      seqs.forEach((s, i) => { if (s.done && s.finishReason !== 'cancelled') ended(i); });
    } else pending = seqs.map(() => reasonIds.slice(ids.length));

    // 5. Decode with verifier scoring and early stop. The vote can change only where a sample has ended (or been
    //    cancelled) since the last look: the finished samples' answers are read (split, extracted) then, not after every step.
    let voted = -1, left = -1;
    await decode(backend, cache, seqs, pending, start, {
      signal: opts.signal, onEnd: ended,
      ...(wantHidden ? { onFinish: (i: number, h: Float32Array) => { hidden[i] = h; if (aux.verifier) scores[i] = aux.verifier.score(h); } } : {}),
      afterStep: () => {
        if (!opts.earlyStop || n < 2 || !decidesEarly(method)) return;
        const done = seqs.map((s, i) => i).filter((i) => seqs[i].done && seqs[i].finishReason !== 'cancelled');
        const remaining = seqs.filter((s) => !s.done).length;
        if (done.length === voted && remaining === left) return;
        [voted, left] = [done.length, remaining];
        if (!remaining || !canStopEarly(method, done.map((i) => candidate(seqs, true, i)), remaining)) return;
        seqs.forEach((s, i) => { if (!s.done) { s.cancel(); early.add(i); ended(i); } });
      },
    });
    streams.forEach((s) => s?.flush());
    // A model that does not think by itself stops at once after "<think>" (the embedded model does): say so, not answer "".
    if (opts.nativeThinking && seqs.every((s) => s.finishReason === 'stop' && !s.tokens.length)) {
      throw new Error(`answer: the model stopped right after ${JSON.stringify(model.tokenizer.decode(invocation))}, without thinking or answering: nativeThinking is for a model that thinks by itself (such as Qwen3); give this one its reasoning adapter instead`);
    }
    return result(seqs, true, promptTokens);

  } finally {
    for (const h of [...handles]) await backend.free(h);
  }
}

/** A sequence's first token, drawn from a prefill's logits by the engine's sampler with the draw a step would make; true when it ends the sequence. */
function takeFirst(seq: Sequence, logits: Float32Array, start: number): boolean {
  const draw = seq.sampling(), first = sampleToken(logits, draw, draw.u, undefined, draw.seen, draw.allow, draw.counted, draw.deny);
  seq.ttftMs = performance.now() - start;
  return seq.accept(first.token, first.logprob, first.top);
}

/**
 * N samples hold N rows of KV cache (float32) up to the prompt plus maxTokens: a request that could not fit in this
 * machine's memory is refused before any work, instead of growing until the process is killed.
 */
function checkKvMemory(c: ModelConfig, samples: number, positions: number): void {
  const bytes = kvBytes(c, samples, positions);
  if (bytes > os.totalmem()) {
    throw new Error(`answer: ${samples} samples of up to ${positions} tokens need about ${gib(bytes)} GiB of KV cache; this machine has ${gib(os.totalmem())} GiB of memory: ask for fewer samples (or a lower maxTokens)`);
  }
}

/** The room a reasoning turn needs (thinking and an answer; in the context and in maxTokens) for the gate to escalate to it. */
export const MIN_ESCALATION_ROOM = 64;

/**
 * The sampling temperature of a route: the one asked for, else greedy, except for several reasoning samples (N
 * greedy samples would all be the same), which draw at 0.8. A direct answer is one sample, whatever `samples` says.
 */
export const answerTemperature = (asked: number | undefined, route: Route, samples: number): number => asked ?? (route === 'reasoning' && samples > 1 ? 0.8 : 0);

/** A model with its router and verifier: `new Reasoner(model, { router, verifier }).answer(question, opts)`. */
export class Reasoner {
  constructor(readonly model: Model, readonly aux: { router?: Router; verifier?: Verifier } = {}) {
    if (!model || typeof model.encode !== 'function') throw new Error(`Reasoner: the first argument must be a model from loadModel, got ${model === null ? 'null' : typeof model}`);
    checkKeys(aux, ['router', 'verifier'], 'Reasoner');
    checkProbes(aux, 'Reasoner');
  }
  answer(input: AnswerInput, opts: AnswerOptions = {}): Promise<AnswerResult> { return answer(this.model, input, opts, this.aux); }
  /** Closes its model (and so every other Reasoner or call on that model): for the app that made both for one use. */
  async close(): Promise<void> { await this.model.close(); }
}
