/**
 * Fine-tuning data: JSONL files -> token ids with a loss mask, seeded shuffling, length-bucketed micro-batches
 * under a token budget, and a train/eval split.
 *
 * Each line is either {"messages": [{"role", "content"}, ...]} (roles system, user, assistant and tool; rendered with the
 * tokenizer's chat template; loss on the assistant turns only), {"prompt": "...", "completion": "..."} (both
 * strings; loss on the completion only, which gets the EOS token appended unless it ends with it), or TRL's conversational
 * {"prompt": [messages], "completion": [messages]} (rendered as one conversation; loss on the completion's
 * assistant turns only). Conversations may hold tool calling as TRL's records do: a line's "tools" (the functions the
 * chat template is given), an assistant turn's "tool_calls" (trained as part of its reply) and "tool" messages (the
 * results: context, not targets). Blank lines are skipped; every other line becomes an example or an error naming
 * the file and line.
 *
 * Loss-mask convention: mask[i] = 1 means token i is a TARGET, predicted from the logits at position i - 1.
 * So mask[0] is always 0, and the loss is sum over i of mask[i] * -log p(ids[i] | ids[0..i-1]).
 */
import { readJsonlLines } from '../io/jsonl.ts';
import { CHAT_ROLES, type ChatMessage, type TextTokenizer } from '../tokenizer/types.ts';
import { checkToolCalls, checkToolsRendered, keepSource, templateFor, templateMessage, topLevelText } from '../tokenizer/tool-calls.ts';
import { shown } from '../show.ts';
import { endsWithRun } from '../runtime/generate.ts';

export interface Example {
  ids: number[]; lossMask: Uint8Array;
  /** Where it came from (file:line), for messages about it. */
  source?: string;
  /** A reply it trains is empty (or blank): the model learns to answer nothing. */
  emptyReply?: boolean;
  /** A chat turn of its own: where its reply begins (its generation prompt), where an activated LoRA's invocation may be. */
  replyFrom?: number;
  /** Activated LoRA: where the adapter acts (from the invocation that opens the trained reply on). */
  adapterMask?: Uint8Array;
}

export type DataRecord =
  /** `trainFrom`: the assistant turns before this message are context, not targets (a conversational prompt's). */
  | { line: number; messages: ChatMessage[]; trainFrom?: number; tools?: unknown[] }
  | { line: number; prompt: string; completion: string };

/** A list of chat messages, checked; `key` names it in errors ("messages", "prompt", "completion"). */
function chatMessages(v: unknown, where: string, key: string): ChatMessage[] {
  if (!Array.isArray(v) || !v.length) throw new Error(`${where}: "${key}" must be a non-empty list`);
  return v.map((m, k) => {
    // An assistant turn that only calls tools may come without content, as TRL's and OpenAI's records have it.
    const calls = !!m && m.role === 'assistant' && Array.isArray(m.tool_calls) && m.tool_calls.length > 0;
    if (!m || typeof m.role !== 'string' || (typeof m.content !== 'string' && !(calls && m.content == null)))
      throw new Error(`${where}: ${key}[${k}] must be {"role": string, "content": string}, got ${shown(m)}`);
    if (!CHAT_ROLES.includes(m.role)) throw new Error(`${where}: ${key}[${k}] has role ${JSON.stringify(m.role)} (expected system, user, assistant or tool)`);
    checkToolCalls(m, `${where}: ${key}[${k}]`);
    return templateMessage({ ...m, content: typeof m.content === 'string' ? m.content : '' }); // "tool_calls": null is absent
  });
}

/** A line's "tools": a list of function definitions (objects), as TRL's records hold them. */
function toolList(v: unknown, where: string, line: string): unknown[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((t) => !t || typeof t !== 'object' || Array.isArray(t))) throw new Error(`${where}: "tools" must be a list of function definitions (objects), got ${shown(v)}`);
  if (v.length) keepSource(v, topLevelText(line, 'tools')); // its numbers printed as the line wrote them (20.0)
  return v.length ? v : undefined;
}

const FORMAT_KEYS = ['messages', 'prompt', 'completion'];

/** Parse a JSONL dataset, validating every line; errors read `file:line: ...`. */
export function readJsonl(file: string): DataRecord[] {
  const records: DataRecord[] = [];
  readJsonlLines(file).forEach(({ line, value: v, raw }) => {
    const where = `${file}:${line}`;
    // The other format's columns left null are absent (Hugging Face datasets' to_json writes a mixed dataset so).
    const given = (k: string) => (v as Record<string, unknown>)[k] !== undefined && (v as Record<string, unknown>)[k] !== null;
    const other = (k: string) => (k === 'messages' ? given('prompt') || given('completion') : given('messages'));
    const o = Object.fromEntries(Object.entries(v as Record<string, unknown>).filter(([k, x]) => !(x === null && FORMAT_KEYS.includes(k) && other(k))));
    if ('messages' in o && ('prompt' in o || 'completion' in o)) throw new Error(`${where}: holds both "messages" and "prompt"/"completion"; one format a line`);
    if ('messages' in o) {
      const msgs = chatMessages(o.messages, where, 'messages'), tools = toolList(o.tools, where, raw);
      if (!msgs.some((m) => m.role === 'assistant')) throw new Error(`${where}: no assistant message, so nothing to train on`);
      records.push({ line, messages: msgs, ...(tools ? { tools } : {}) });
    } else if (Array.isArray(o.prompt) || Array.isArray(o.completion)) { // TRL's conversational prompt-completion
      const text = (['prompt', 'completion'] as const).find((k) => typeof o[k] === 'string');
      if (text) throw new Error(`${where}: "${text}" is text and "${text === 'prompt' ? 'completion' : 'prompt'}" a list of chat messages: give both as text, or both as lists of messages`);
      const prompt = chatMessages(o.prompt, where, 'prompt'), completion = chatMessages(o.completion, where, 'completion'), tools = toolList(o.tools, where, raw);
      if (!completion.some((m) => m.role === 'assistant')) throw new Error(`${where}: "completion" has no assistant message, so nothing to train on`);
      records.push({ line, messages: [...prompt, ...completion], trainFrom: prompt.length, ...(tools ? { tools } : {}) });
    } else if ('prompt' in o || 'completion' in o) {
      for (const k of ['prompt', 'completion'] as const) {
        if (typeof o[k] !== 'string') throw new Error(`${where}: "${k}" must be a string, or both lists of chat messages (${k in o ? `got ${shown(o[k])}` : 'missing'})`);
      }
      if (o.tools != null) throw new Error(`${where}: "tools" go with chat messages (the chat template prints them); "prompt" and "completion" text is used as it is`);
      records.push({ line, prompt: o.prompt as string, completion: o.completion as string });
    } else {
      throw new Error(`${where}: expected {"messages": [...]}, or {"prompt": ..., "completion": ...} (strings, or lists of chat messages), got keys ${JSON.stringify(Object.keys(o))}`);
    }
  });
  if (!records.length) throw new Error(`${file}: empty dataset (no examples)`);
  return records;
}

/** Chat-template rendering as token ids (the template writes its own special tokens, so none are added); `tools` given to it. */
function renderIds(tok: TextTokenizer, msgs: ChatMessage[], addGenerationPrompt: boolean, tools?: unknown[]): number[] {
  return tok.encode(tok.applyChatTemplate(msgs, { addGenerationPrompt, ...(tools ? { vars: { tools } } : {}) }), { addSpecialTokens: false });
}

const isPrefix = (p: number[], of: number[]) => p.length <= of.length && p.every((x, i) => x === of[i]);

/**
 * Tokenize one record into its training examples. Prompt/completion: the two as one text, the targets from where
 * the prompt's own encoding ends (or parts from it). Chat: assistant turn k's targets are the tokens from the end of
 * render(messages[0..k), generation prompt) to the end of render(messages[0..k]), less the whitespace a template
 * writes after the turn's end token (Qwen's "\n" after <|im_end|>). Turns rendered as a prefix of the whole
 * conversation are trained in it, as one example; a turn the template renders differently once later turns follow
 * (Qwen3 drops the thinking of earlier turns) is an example of its own, the conversation up to it, as TRL trains
 * each assistant turn. The generation prompt's last token may merge with the reply's first ("\n" + "\nHello" is
 * one "\n\n"): the targets start at that token. `perTurn`: every assistant turn is an example of its own (an
 * activated LoRA trains only what follows the last invocation of an example, so the earlier turns would be lost).
 */
export function tokenizeRecord(r: DataRecord, tok: TextTokenizer, where = `line ${r.line}`, perTurn = false): Example[] {
  return tokenizeOne(r, tok, where, perTurn).map((e) => ({ ...e, source: where }));
}

function tokenizeOne(r: DataRecord, tok: TextTokenizer, where: string, perTurn: boolean): Example[] {
  if ('prompt' in r) {
    // Prompt and completion encoded as one text, as TRL does and as the model reads them at inference: a completion
    // encoded alone would open with a word-start marker of its own (SentencePiece's "▁" before " there"). The targets
    // start where the two encodings part (a token the boundary merges is a target).
    const ids = encodeText(tok, r.prompt + r.completion), p = encodeText(tok, r.prompt), added = tok.encode('', { addSpecialTokens: true });
    // Named by field only once the whole text is found to hold an unknown token (the special tokens the encoding adds, a BOS, aside).
    if (unknownToken(r.prompt + r.completion, ids.filter((id) => !added.includes(id)), tok) !== undefined) {
      allKnown(where, (['prompt', 'completion'] as const).map((k) => () => checkKnown(r[k], tok.encode(r[k], { addSpecialTokens: false }), tok, `${where}: ${k}`)));
    }
    let from = 0;
    while (from < p.length && from < ids.length && p[from] === ids[from]) from++;
    // The EOS goes after the completion, unless it ends with it already (as TRL's add_eos).
    if (tok.eosTokenIds.length && ids.at(-1) !== tok.eosTokenIds[0]) ids.push(tok.eosTokenIds[0]);
    if (from === ids.length) throw new Error(`${where}: empty completion${tok.eosTokenIds.length ? ' after a prompt that ends with the EOS' : ' and no EOS token'}, so nothing to train on`);
    return [{ ids, lossMask: new Uint8Array(ids.length).fill(1, from), ...(blank(r.completion, tok) ? { emptyReply: true } : {}) }];
  }
  // A message named as the line writes it: TRL's conversational records hold "prompt" and "completion" lists.
  const named = (k: number) => (r.trainFrom === undefined ? `messages[${k}]` : k < r.trainFrom ? `prompt[${k}]` : `completion[${k - r.trainFrom}]`);
  allKnown(where, [...r.messages.flatMap((m, k) => [
    ...['content', ...REASONING_FIELDS].map((f) => () => {
      const text = (m as unknown as Record<string, unknown>)[f];
      if (typeof text === 'string') checkSpecialText(text, tok, `${where}: ${named(k)}.${f}`);
    }),
    ...(m.tool_calls ?? []).map((c, j) => () => checkSpecialText(`${c.function.name} ${JSON.stringify(c.function.arguments)}`, tok, `${where}: ${named(k)}.tool_calls[${j}]`)),
  ]), () => { if (r.tools) checkSpecialText(JSON.stringify(r.tools), tok, `${where}: tools`); }]);
  checkToolsRendered(templateFor(tok, r.tools), r.messages, r.tools, 'the line\'s "tools"', where);
  const render = (msgs: ChatMessage[], generationPrompt: boolean) => renderIds(tok, msgs, generationPrompt, r.tools);
  const ids = render(r.messages, false), lossMask = new Uint8Array(ids.length), own: Example[] = [];
  let emptyReply = false;
  r.messages.forEach((m, k) => {
    if (m.role !== 'assistant' || k < (r.trainFrom ?? 0)) return;
    checkReasoningRendered(r.messages, k, tok, `${where}: ${named(k)}`);
    const empty = blank(m.content, tok) && !m.tool_calls?.length; // a turn that only calls tools is not an empty reply
    const before = render(r.messages.slice(0, k), true), upTo = render(r.messages.slice(0, k + 1), false);
    let start = 0;
    while (start < before.length && before[start] === upTo[start]) start++;
    if (start < before.length - 1 || start === upTo.length) {
      throw new Error(`${where}: the chat template does not render the conversation up to messages[${k}] as a prefix of the conversation through it, cannot find the assistant tokens`);
    }
    // What the template writes after every conversation (the first Llama 3 template's assistant header) is not the turn's.
    const tail = alwaysTail(tok), appended = tail.length && upTo.length - tail.length > start && endsWithRun(upTo, tail);
    let end = upTo.length - (appended ? tail.length : 0);
    while (end > start + 1 && !tok.decode([upTo[end - 1]]).trim()) end--;
    if (!perTurn && isPrefix(upTo.slice(0, end), ids)) { lossMask.fill(1, start, end); emptyReply ||= empty; }
    else {
      // where the generation prompt begins: the conversation before the turn, without one, as far as it is a prefix
      // (a template that ends every rendering with the assistant header: before it, so an invocation that is that header counts)
      const ctx = perTurn && k ? render(r.messages.slice(0, k), false) : [];
      let replyFrom = 0;
      while (replyFrom < ctx.length && ctx[replyFrom] === before[replyFrom]) replyFrom++;
      if (tail.length && replyFrom === ctx.length && ctx.length > tail.length && endsWithRun(ctx, tail)) replyFrom -= tail.length;
      own.push({ ids: upTo.slice(0, end), lossMask: new Uint8Array(end).fill(1, start), ...(perTurn ? { replyFrom } : {}), ...(empty ? { emptyReply: true } : {}) });
    }
  });
  return lossMask.includes(1) || !own.length ? [{ ids, lossMask, ...(emptyReply ? { emptyReply } : {}) }, ...own] : own;
}

/**
 * A chat message's text may not hold the tokenizer's special tokens ("<|im_end|>"): the template writes those, and one
 * in the text would be encoded as the real token, so the model learns to end a turn early or write the next turn's
 * header. (A "prompt"/"completion" text may: it is the rendered text itself.) Characters the tokenizer has no token
 * for are refused too (checkKnown). `fix`: the advice that ends the message.
 */
export function checkSpecialText(text: string, tok: TextTokenizer, what: string, fix = 'remove it, or give the conversation already rendered as "prompt"/"completion" text'): void {
  const ids = tok.encode(text, { addSpecialTokens: false });
  checkKnown(text, ids, tok, what);
  const special = ids.find((id) => isSpecial(id, tok));
  if (special !== undefined) throw new Error(`${what} holds ${JSON.stringify(tok.decode([special]))}, one of the tokenizer's special tokens, as text: the chat template writes those itself, and this one would be read as the real token (a turn that ends early, a header); ${fix}`);
}

/** Whether decoding with skipSpecialTokens drops the token (the tokenizer's set of them, else found by decoding it). */
const isSpecial = (id: number, tok: TextTokenizer): boolean => (tok.specialIds ? tok.specialIds.has(id) : !tok.decode([id], { skipSpecialTokens: true }) && !!tok.decode([id]));

/** The first special token of `ids` (an encoding of `text`) whose own text `text` does not hold: its unknown token. */
function unknownToken(text: string, ids: number[], tok: TextTokenizer): number | undefined {
  return ids.find((id) => isSpecial(id, tok) && !text.includes(tok.decode([id])));
}

/** checkKnown's refusal, with the characters it names (a dataset gathers them from all its lines: loadDataset). */
class UnknownCharacters extends Error {
  /** `held`: what holds which of them ("f.jsonl:2: prompt holds "é""); `unk`: the token they would be read as. */
  constructor(readonly chars: string[], readonly held: string, readonly unk: string, use = 'be trained as') {
    super(`${held}, which the tokenizer has no token for: ${chars.length > 1 ? 'each' : 'it'} would ${use} ${unk}; remove or replace ${chars.length > 1 ? 'them' : 'it'}`);
  }
}

/**
 * Refuses text holding characters the tokenizer has no token for: they are encoded as a special token (its "<unk>")
 * the text does not hold, and would be trained as that. `ids`: the text's encoding, without special tokens added.
 */
export function checkKnown(text: string, ids: number[], tok: TextTokenizer, what: string, use?: string): void {
  const unknown = unknownToken(text, ids, tok);
  if (unknown === undefined) return;
  const chars: string[] = [];
  for (const c of new Set(text)) if (chars.length < 5 && tok.encode(c, { addSpecialTokens: false }).includes(unknown)) chars.push(c);
  throw new UnknownCharacters(chars, `${what} holds ${chars.length ? chars.map((c) => JSON.stringify(c)).join(', ') : 'text'}`, JSON.stringify(tok.decode([unknown])), use);
}

/**
 * Runs a line's checks, each of which may refuse characters the tokenizer lacks: those of every field are said at
 * once (the first field's alone were, so a line took one rerun per field); any other refusal stops at once.
 */
function allKnown(where: string, checks: (() => void)[]): void {
  const found: UnknownCharacters[] = [];
  for (const check of checks) {
    try { check(); } catch (e) {
      if (!(e instanceof UnknownCharacters)) throw e;
      found.push(e);
    }
  }
  if (found.length > 1) throw new UnknownCharacters([...new Set(found.flatMap((e) => e.chars))], found.map((e, i) => (i ? e.held.replace(`${where}: `, '') : e.held)).join('; '), found[0].unk);
  if (found.length) throw found[0];
}

/** The reasoning fields a message may carry: transformers' and vLLM's names (serve returns reasoning_content and reasoning). */
const REASONING_FIELDS = ['reasoning_content', 'reasoning', 'thinking'];

/** An assistant turn's reasoning field must be in what the template renders for it, else the reply is trained without its thinking; `what` names the message. */
function checkReasoningRendered(messages: ChatMessage[], k: number, tok: TextTokenizer, what: string): void {
  const m = messages[k] as unknown as Record<string, unknown>;
  const fields = REASONING_FIELDS.filter((f) => typeof m[f] === 'string' && (m[f] as string).trim());
  if (!fields.length) return;
  // Rendered is what changes the rendering (its text found anywhere, in the question say, proves nothing). The fields
  // holding the same text go together: serve and vLLM write reasoning_content and reasoning alike, a template renders one.
  const render = (last: Record<string, unknown>) => tok.applyChatTemplate([...messages.slice(0, k), last as unknown as ChatMessage], { addGenerationPrompt: false });
  const text = render(m), same = (f: string) => fields.filter((g) => (m[g] as string).trim() === (m[f] as string).trim());
  for (const f of fields) {
    const without = Object.fromEntries(Object.entries(m).filter(([g]) => !same(f).includes(g))), bare = render(without);
    if (bare !== text) continue;
    // Renamed reasoning_content, would this template render it?
    const renamed = f !== 'reasoning_content' && render({ ...without, reasoning_content: m[f] }) !== bare;
    throw new Error(`${what}.${f} is not in the text the chat template renders for this turn, so the reply would be trained without its reasoning; ${renamed ? 'this template renders "reasoning_content": rename the field' : 'this template has no place for it: put the reasoning into "content" as "<think>\\n…\\n</think>\\n\\n" before the reply'}`);
  }
}

/** A text encoded with the tokenizer's special tokens, once: a text that starts with the BOS (a rendered conversation) gets no second one. */
function encodeText(tok: TextTokenizer, text: string): number[] {
  const ids = tok.encode(text), bos = tok.bosTokenId;
  return bos !== undefined && ids[0] === bos && ids[1] === bos && text.startsWith(tok.decode([bos])) ? ids.slice(1) : ids;
}

const tails = new WeakMap<TextTokenizer, number[]>();
/**
 * The tokens a chat template writes at the end of every rendering, generation prompt asked for or not (the first Llama
 * 3 template always ends with the assistant header): what a user-ended and an assistant-ended conversation end with
 * alike, after the turn's own end token, when the template ignores add_generation_prompt; else none.
 */
function alwaysTail(tok: TextTokenizer): number[] {
  let tail = tails.get(tok);
  if (tail) return tail;
  tail = [];
  try {
    const user = [{ role: 'user', content: 'a' }], r1 = renderIds(tok, user, false);
    const asked = renderIds(tok, user, true);
    if (r1.length === asked.length && r1.every((t, i) => t === asked[i])) {
      const r2 = renderIds(tok, [...user, { role: 'assistant', content: 'b' }], false);
      let n = 0;
      while (n < r1.length && n < r2.length && r1[r1.length - 1 - n] === r2[r2.length - 1 - n]) n++;
      tail = n >= 2 ? r1.slice(r1.length - n + 1) : []; // the turn's end token first, then the tail
    }
  } catch { /* a template that refuses these probes renders no such tail that we can tell */ }
  tails.set(tok, tail);
  return tail;
}

/** A reply with nothing in it but whitespace and end tokens. */
const blank = (text: string, tok: TextTokenizer): boolean => !tok.eosTokenIds.reduce((t, id) => t.replaceAll(tok.decode([id]), ''), text).trim();

/**
 * Read and tokenize a JSONL dataset (see the file comment for the formats and the mask convention; tokenizeRecord for
 * `perTurn`); `onProgress(lines done, lines)` as it tokenizes (a large file takes minutes).
 */
export function loadDataset(file: string, tok: TextTokenizer, perTurn = false, onProgress?: (done: number, total: number) => void): Example[] {
  const steps = tokenizing(file, tok, perTurn, onProgress);
  for (;;) { const r = steps.next(); if (r.done) return r.value; }
}

/**
 * loadDataset that lets the event loop run every 50 ms or so, so Ctrl-C is answered while a large file is tokenized
 * (a signal's handler waits for synchronous work to end: minutes for a large dataset).
 */
export async function loadDatasetAsync(file: string, tok: TextTokenizer, perTurn = false, onProgress?: (done: number, total: number) => void): Promise<Example[]> {
  const steps = tokenizing(file, tok, perTurn, onProgress);
  for (let since = Date.now(); ;) {
    const r = steps.next();
    if (r.done) return r.value;
    if (Date.now() - since > 50) { await new Promise((go) => setImmediate(go)); since = Date.now(); }
  }
}

/** loadDataset's work, one record a step. */
function* tokenizing(file: string, tok: TextTokenizer, perTurn: boolean, onProgress?: (done: number, total: number) => void): Generator<void, Example[]> {
  const records = readJsonl(file), out: Example[] = [];
  // Characters the tokenizer lacks are gathered from every line, so one run names them all (not one rerun per character).
  const unknown: { first?: UnknownCharacters; chars: Set<string>; lines: string[] } = { chars: new Set(), lines: [] };
  onProgress?.(0, records.length);
  for (const [i, r] of records.entries()) {
    try { out.push(...tokenizeRecord(r, tok, `${file}:${r.line}`, perTurn)); } catch (e) {
      if (!(e instanceof UnknownCharacters)) throw e;
      unknown.first ??= e;
      e.chars.forEach((c) => unknown.chars.add(c));
      unknown.lines.push(`${file}:${r.line}`);
    }
    onProgress?.(i + 1, records.length);
    yield;
  }
  if (unknown.first && unknown.lines.length === 1) throw unknown.first;
  if (unknown.first) {
    const more = unknown.lines.length - 1, chars = [...unknown.chars].slice(0, 12).map((c) => JSON.stringify(c)).join(', ');
    throw new Error(`${unknown.first.message}; ${more} more line${more === 1 ? '' : 's'} hold${more === 1 ? 's' : ''} characters it has no token for (${unknown.chars.size > 12 ? `${unknown.chars.size} in all, e.g. ` : 'in all: '}${chars}), e.g. ${unknown.lines.slice(1, 4).join(', ')}`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Order and batching.

/** mulberry32: a tiny seeded PRNG whose whole state is one uint32 (made anew from the seed and the epoch or step: epochRng; a resume needs nothing more). */
export class Rng {
  state: number;
  constructor(seed: number) { this.state = seed >>> 0; }
  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(this.state ^ (this.state >>> 15), 1 | this.state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Fisher-Yates, in place. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }
}

/** The generator for (seed, epoch): independent streams per epoch, identical for identical inputs. */
const epochRng = (seed: number, epoch: number) => new Rng((Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(epoch + 1, 0x85ebca6b)) >>> 0);

export interface BatchOptions {
  /** Padded-token budget of one micro-batch: count × longest ≤ batchTokens (a single example always fits). */
  batchTokens: number;
  seed: number;
  epoch: number;
  /** Examples longer than this are cut to their first maxLen tokens (default batchTokens). */
  maxLen?: number;
  /** Examples per length-sorting chunk (default 64): larger packs tighter, smaller is more random. */
  bucket?: number;
}

export interface Batch {
  /** Indices into the examples array (position in the data order = index of the batch in the list). */
  indices: number[];
  examples: Example[];
  /** Longest example in the batch: the padded length. */
  maxLen: number;
}

/**
 * One epoch's micro-batches: shuffle with (seed, epoch), sort chunks of `bucket` examples by length, cut each
 * chunk greedily into batches under the token budget, then shuffle the batch order. Deterministic.
 */
export function batches(examples: readonly Example[], o: BatchOptions): { batches: Batch[]; truncated: number } {
  const maxLen = o.maxLen ?? o.batchTokens, bucket = o.bucket ?? 64, rng = epochRng(o.seed, o.epoch);
  if (!(maxLen >= 2) || !(o.batchTokens >= 1) || !(bucket >= 1)) throw new Error(`batches: need maxLen >= 2, batchTokens >= 1 and bucket >= 1 (got ${maxLen}, ${o.batchTokens}, ${bucket})`);
  let truncated = 0;
  const ex = examples.map((e) => {
    if (e.ids.length <= maxLen) return e;
    truncated++;
    return { ids: e.ids.slice(0, maxLen), lossMask: e.lossMask.slice(0, maxLen), ...(e.adapterMask ? { adapterMask: e.adapterMask.slice(0, maxLen) } : {}) };
  });
  const order = rng.shuffle(ex.map((_, i) => i)), out: Batch[] = [];
  for (let c = 0; c < order.length; c += bucket) {
    const chunk = order.slice(c, c + bucket).sort((a, b) => ex[b].ids.length - ex[a].ids.length || a - b);
    let cur: number[] = [], longest = 0;
    const flush = () => { if (cur.length) out.push({ indices: cur, examples: cur.map((i) => ex[i]), maxLen: longest }); cur = []; longest = 0; };
    for (const i of chunk) {
      const len = Math.max(longest, ex[i].ids.length);
      if (cur.length && (cur.length + 1) * len > o.batchTokens) flush();
      cur.push(i);
      longest = Math.max(longest, ex[i].ids.length);
    }
    flush();
  }
  return { batches: rng.shuffle(out), truncated };
}
