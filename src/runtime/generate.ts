/**
 * Batched decoding: B sequences (different prompts and lengths, or N samples forked from one prompt)
 * advance together, one engine step per token; a finished sequence leaves the batch.
 */
import type { TextTokenizer } from '../tokenizer/types.ts';
import { StreamDecoder } from '../tokenizer/stream.ts';
import type { Backend, CacheHandle, Draft } from './backend.ts';
import type { PromptCache } from './prompt-cache.ts';
import { randomInt } from 'node:crypto';
import { seededRandom, type RowSampling, type SamplingParams, type TokenLogprob } from './sampler.ts';
import { onAbort } from './abort.ts';
import { shown } from '../show.ts';
import { AbortedError, ContextLengthError } from './errors.ts';
import { isTokenId } from '../models/config.ts';

export interface GenerateOptions extends SamplingParams {
  /** Most tokens to generate (default 256, and never past the model's context). */
  maxTokens?: number;
  /**
   * Seed of this sequence's random draws: the same seed, prompt and options give the same tokens (a prompt read from
   * the prompt cache: up to float rounding, see loadModel's promptCache). Default: a fresh random seed per sequence.
   * (Irrelevant when greedy.)
   */
  seed?: number;
  /**
   * Generation ends when the text contains one of these (the stop string is not returned). In a thinking
   * segment (the `thinking` option, which answer() sets) they apply from the answer on: the thinking itself is never
   * cut by a stop string. Without one they apply from the first token, also to a completion that begins inside the
   * thinking (generate's `adapter: true` on a chat prompt appends the invocation): answer() reads that case.
   */
  stop?: string | string[];
  /** Token ids that end generation (default: the model's EOS ids). */
  stopTokens?: number[];
  /**
   * vLLM's min_tokens: until this many tokens are generated (thinking included), the end tokens (`stopTokens`) are not
   * drawn and stop strings do not end the text (one that ends in the text of those tokens never does; one that runs on
   * past them may). Default 0. Not with `allowedNext` (a constraint that could leave nothing to draw). Where the
   * runtime lowers maxTokens (the context's end), it is lowered with it.
   */
  minTokens?: number;
  /**
   * vLLM's ignore_eos: the end tokens (`stopTokens`) do not end the text, which runs to maxTokens or a stop string
   * (here they are not drawn at all, where vLLM writes them and goes on). Not with `allowedNext`.
   */
  ignoreEos?: boolean;
  /**
   * The LoRA adapter the model was loaded with (per-token adapter mask = 1). Default (Model's generate/complete):
   * on — a plain LoRA everywhere, an activated one from the invocation its prompt holds (none: base weights).
   * true insists (a chat prompt gets the activated adapter's invocation appended); false = base weights. The
   * low-level generateBatch(backend, ...) takes it literally (default off).
   */
  adapter?: boolean;
  /** With adapter: true, on from this prompt position (activated LoRA: the invocation tokens' position); default 0. */
  adapterFrom?: number;
  /** The sequence starts inside a thinking segment (its prompt ends with the invocation, e.g. "<think>"). */
  thinking?: ThinkingOptions;
  /**
   * Constrained decoding of the answer: given its tokens so far (those after a thinking segment, which is never
   * constrained) and `lead`, the answer's text that the token closing the thinking carried (a tag written in pieces
   * whose last one runs on: ">{\""), the only tokens the next one may be (undefined: any). Called in this thread before
   * each step (see toolNameConstraint, JsonConstraint).
   */
  allowedNext?: (tokens: readonly number[], lead: string) => ArrayLike<number> | undefined;
  /**
   * Speculative decoding by prompt lookup: where the last tokens of the prompt and output so far (3, else 2, else 1) occurred
   * before, the up to this many tokens that followed them there are guessed and verified in the next step, which
   * costs less than the steps its kept guesses save (decoding is memory-bound: see bench lookup) and keeps every guess
   * that is what the model samples; the tokens are the same as without it (the same draws; logits up to float rounding). A sequence decoded
   * alone guesses (not one of a batch: those steps run one row at a time), and not while a repetition, presence or
   * frequency penalty or `allowedNext` applies. 0 = off (default).
   */
  promptLookup?: number;
  /**
   * The prompt cache's scope (vLLM's cache_salt): kept prompts are read and kept only among calls of the same salt,
   * so that one user's cached-token counts (or timings) cannot tell another's prompt apart. Default: the shared scope.
   */
  cacheSalt?: string;
}

/**
 * A thinking segment and its s1-style cap ("budget forcing"): once the segment holds `maxTokens` tokens
 * without having been closed, the runtime appends `force` (the tokens of "\n</think>\n\n") instead of
 * sampling, so the model goes on with its answer. The segment never exceeds `maxTokens` tokens: the forced
 * tokens before `end` count towards it.
 */
export interface ThinkingOptions {
  /** The token ids that close the segment (the tokens of "</think>"). */
  end: number[];
  /**
   * The closing tag's text: the segment also closes where its text first holds it. A vocabulary without a "</think>"
   * token (Qwen2.5's, Llama 3's) writes it in pieces whose last one carries what follows (">\n\n"), so `end` never
   * appears as a run.
   */
  endText?: string;
  maxTokens?: number;
  /** Closing tokens fed when capped; must contain `end`, or `endText` in their text. */
  force?: number[];
  /**
   * An answer must follow (a JSON one): a stop token sampled inside the segment is dropped and `force` fed instead,
   * so that the turn does not end without it.
   */
  closeOnStop?: boolean;
}

export type FinishReason = 'stop' | 'length' | 'cancelled';

export interface Completion {
  text: string;
  tokens: number[];
  logprobs: number[];
  /** With topLogprobs: at each generated token, the most likely tokens and their log-probabilities (none for a forced token). */
  topLogprobs?: TokenLogprob[][];
  finishReason: FinishReason;
  promptTokens: number;
  /** Milliseconds from start to the first generated token, and to the end. */
  ttftMs: number;
  totalMs: number;
  /** With a thinking segment: its tokens (without the tags) and whether it was closed. */
  thinking?: { tokens: number; closed: boolean };
  /** The prompt's first tokens read from a kept prompt's cache (prompt caching), not prefilled again. */
  cachedTokens: number;
  /** With promptLookup: the tokens guessed, and how many of them the model's own draws kept. */
  guesses?: { made: number; kept: number };
}

/**
 * The n-gram lengths prompt lookup matches the context's end with, longest first (single tokens too: on the models
 * at hand they found twice the guesses, a third of them kept; 4-grams found none that 3-grams missed).
 */
const LOOKUP_NGRAMS = [3, 2, 1];

/** One sequence in a running batch: its sampling state, stop handling, thinking segment and streamed text. */
export class Sequence {
  readonly tokens: number[] = [];
  readonly logprobs: number[] = [];
  /** With opts.topLogprobs: the most likely tokens at each of `tokens` ([] where the runtime forced one). */
  readonly topLogprobs: TokenLogprob[][] = [];
  /** The stop token that ended the sequence (not among `tokens`). */
  stopToken?: number;
  text = '';
  finishReason?: FinishReason;
  ttftMs = 0;
  /** Tokens in the thinking segment (without its tags), and whether that segment is still open. */
  thinkingTokens = 0;
  thinkingOpen: boolean;
  /** Speculative decoding (promptLookup): tokens guessed, and how many of them were kept. */
  guessesMade = 0;
  guessesKept = 0;
  /** No guesses before this many tokens (answer()'s confidence gate reads the first ones one step at a time). */
  guessFrom = 0;
  /** Index in `tokens` where the answer starts (after the closing tag); undefined while thinking. */
  answerFrom?: number;
  /** The answer's text carried by the token that closed the thinking (a closing tag written in pieces: ">\n\n"). */
  answerLead = '';
  /** Tokens the runtime appended instead of sampling (budget forcing); their logprobs are 0. */
  forcedTokens = 0;
  /** Whether the forced close came at a stop token inside the thinking (closeOnStop), not at the cap. */
  closedAtStop = false;
  /** Whether the thinking cap closed the segment (forced there, not at a stop token). */
  get capped(): boolean { return this.forcedTokens > 0 && !this.closedAtStop; }
  private logprobSum = 0;
  private queued: number[] = [];
  private emitted = 0;
  private readonly random: () => number;
  /** Draws made for guesses that were not sampled at (they are the next ones taken). */
  private readonly unread: number[] = [];
  /** With promptLookup: the prompt and the output, and per n of LOOKUP_NGRAMS where each n-gram ending before the last token last ended. */
  private readonly context?: number[];
  private readonly ngrams?: Map<string, number>[];
  private indexed = 0;
  /** How many tokens the next guess may have: one more than the last guess kept, twice as many after one kept whole. */
  private guessLength = 1;
  private readonly decoder: StreamDecoder;
  private readonly stopTokens: Set<number>;
  /** stopTokens as a list: what the sampler may not draw before minTokens, or at all with ignoreEos. */
  private ends?: number[];
  /** opts.minTokens, at most maxTokens. */
  private readonly minTokens: number;
  /** How many tokens of `thinking.force` come before its closing tag. */
  private readonly forceEndAt: number = 0;
  /** At the cap's edge: the next sampled token stays only if it closes the segment or is the forced text's own next token. */
  private atEdge = false;
  private readonly stops: string[];
  /** While thinking: the text length after each token (where a closing tag written in pieces began). */
  private readonly textEnds: number[] = [];
  /**
   * Where in `text` the answer starts (0 without a thinking segment; Infinity while the segment, or the forced
   * text that closes it, is being written): stop strings are looked for from its first non-blank character.
   */
  private stopFrom = 0;
  /** Whether the answer's first non-blank character has been seen (stopFrom then points at it). */
  private answerSeen = false;
  /** Text length at the last stop search. */
  private searched = 0;
  /** With a repetition penalty: the distinct ids of the prompt and the output so far (tokens[0 … seenUpTo) added). */
  private readonly seen?: Set<number>;
  private readonly seenIds: number[] = [];
  private seenUpTo = 0;
  /**
   * With a presence or frequency penalty: the output's distinct tokens and how often each occurs (tokens[0 …
   * countedUpTo) counted), kept as the sampler takes them; `slot` finds a token's place.
   */
  private readonly counted?: { ids: number[]; n: number[]; slot: Map<number, number> };
  private countedUpTo = 0;

  /**
   * `promptTail`: the prompt's last tokens, the first generated one's neighbours when text is decoded (StreamDecoder).
   * `prompt`: the prompt's tokens, which a repetition penalty applies to (with the output).
   */
  constructor(private readonly tokenizer: TextTokenizer, readonly opts: GenerateOptions, readonly promptTokens: number, private readonly onText?: (piece: string) => void,
    promptTail: readonly number[] = [], prompt: readonly number[] = []) {
    // minTokens comes down with a maxTokens the runtime lowered (an escalated answer's dropped attempt, the context's end).
    this.minTokens = Math.min(opts.minTokens ?? 0, opts.maxTokens ?? 256);
    checkGenerateOptions(opts.minTokens === this.minTokens ? opts : { ...opts, minTokens: this.minTokens }, tokenizer.vocabSize);
    if (opts.presencePenalty || opts.frequencyPenalty) this.counted = { ids: [], n: [], slot: new Map() };
    if (opts.repetitionPenalty !== undefined && opts.repetitionPenalty !== 1) { this.seen = new Set(prompt); this.seenIds = [...this.seen]; }
    else if (opts.promptLookup && !this.counted) { this.context = [...prompt]; this.ngrams = LOOKUP_NGRAMS.map(() => new Map()); }
    this.random = seededRandom(opts.seed ?? randomInt(2 ** 32));
    this.decoder = new StreamDecoder(tokenizer, { skipSpecialTokens: true }, promptTail);
    this.stopTokens = new Set(opts.stopTokens ?? tokenizer.eosTokenIds);
    this.stops = stopList(opts.stop);
    const th = opts.thinking;
    this.thinkingOpen = !!th;
    if (th) {
      this.stopFrom = Infinity;
      if (th.force) {
        this.forceEndAt = closeStart(tokenizer, th as ForcedClose);
        if (this.forceEndAt < 0) throw new Error(`generate: thinking.force [${th.force}] does not contain the closing tokens [${th.end}]${th.endText ? ` or text ${JSON.stringify(th.endText)}` : ''}`);
      }
      this.checkCap(); // a cap of 0: at the edge from the first token
    } else this.answerFrom = 0;
  }

  get done(): boolean { return this.finishReason !== undefined; }

  /** Mean log-probability of the sampled tokens (forced ones left out); 0 when none. */
  get meanLogprob(): number {
    const n = this.tokens.length - this.forcedTokens;
    return n > 0 ? this.logprobSum / n : 0;
  }

  /** Adapter mask for the next `count` tokens fed, starting at absolute position `from`. */
  adapterMask(from: number, count: number): number[] {
    const on = this.opts.adapter ? this.opts.adapterFrom ?? 0 : Infinity;
    return Array.from({ length: count }, (_, i) => (from + i >= on ? 1 : 0));
  }

  /** Parameters (with this sequence's next random draw, and the ids the repetition, presence and frequency penalties apply to) for the engine's sampler. */
  sampling(): RowSampling {
    const { temperature, topK, topP, minP, repetitionPenalty, presencePenalty, frequencyPenalty, topLogprobs } = this.opts, from = this.answerFrom;
    const allow = from === undefined ? undefined : this.opts.allowedNext?.(from ? this.tokens.slice(from) : this.tokens, this.answerLead);
    const p: RowSampling = { temperature, topK, topP, minP, u: this.draw(), ...(topLogprobs ? { topLogprobs } : {}), ...(allow ? { allow } : {}) };
    if (this.opts.ignoreEos || this.tokens.length < this.minTokens) p.deny = this.ends ??= [...this.stopTokens];
    const c = this.counted;
    if (c) {
      for (; this.countedUpTo < this.tokens.length; this.countedUpTo++) {
        const t = this.tokens[this.countedUpTo], at = c.slot.get(t);
        if (at === undefined) { c.slot.set(t, c.ids.length); c.ids.push(t); c.n.push(1); } else c.n[at]++;
      }
      Object.assign(p, { presencePenalty, frequencyPenalty, counted: { ids: c.ids, n: c.n } });
    }
    if (!this.seen) return p;
    for (; this.seenUpTo < this.tokens.length; this.seenUpTo++) { // the output so far, forced tokens too (they are in the context)
      const t = this.tokens[this.seenUpTo];
      if (!this.seen.has(t)) { this.seen.add(t); this.seenIds.push(t); }
    }
    return { ...p, repetitionPenalty, seen: this.seenIds };
  }

  private draw(): number { return this.unread.length ? this.unread.shift()! : this.random(); }

  /**
   * Prompt lookup (promptLookup): the tokens that followed the latest earlier occurrence of the context's last 3
   * tokens (else 2, else 1), at most as many as the option, the token limit and a thinking cap leave room for; with their
   * draws. Undefined when there is nothing to guess, or no guessing now (a constraint on the answer).
   */
  guess(): Draft | undefined {
    const ctx = this.context, most = Math.min(this.guessLength, this.opts.promptLookup ?? 0, (this.opts.maxTokens ?? 256) - this.tokens.length - 1,
      this.thinkingOpen && this.opts.thinking!.maxTokens !== undefined ? this.room() - this.forceEndAt - 1 : Infinity,
      // a step's draws share one sampling: all before minTokens (the end tokens denied) or all after it
      this.tokens.length < this.minTokens ? this.minTokens - this.tokens.length - 1 : Infinity);
    if (!ctx || most < 1 || this.atEdge || this.tokens.length < this.guessFrom || this.constrained) return undefined;
    const key = (end: number, n: number) => ctx.slice(end - n + 1, end + 1).join();
    for (; this.indexed < ctx.length - 1; this.indexed++) LOOKUP_NGRAMS.forEach((n, i) => { if (this.indexed >= n - 1) this.ngrams![i].set(key(this.indexed, n), this.indexed); });
    for (const [i, n] of LOOKUP_NGRAMS.entries()) {
      const at = ctx.length >= n ? this.ngrams![i].get(key(ctx.length - 1, n)) : undefined;
      if (at === undefined) continue;
      const tokens = ctx.slice(at + 1, at + 1 + most);
      return { tokens, u: tokens.map(() => this.draw()) };
    }
    return undefined;
  }

  /**
   * A guess verified: `kept` of its tokens were what the model drew (`checked` false: the step went without it, see
   * BatchedLocalBackend.stepMany). Its draws from there on were not sampled at (the guess before them was wrong, or the sequence
   * took another way): they are the next ones taken.
   */
  verified(guess: Draft, kept: number, checked = true): void {
    this.unread.unshift(...guess.u.slice(kept));
    if (!checked) return;
    this.guessesMade += guess.tokens.length;
    this.guessesKept += kept;
    this.guessLength = kept === guess.tokens.length ? 2 * kept : kept + 1;
  }

  /**
   * Whether the next token's sampling depends on the tokens before it (allowedNext, from the answer on): a guessed
   * run, whose positions are all sampled with one sampling, cannot go on through it.
   */
  get constrained(): boolean { return this.answerFrom !== undefined && !!this.opts.allowedNext; }

  /** The tokens to feed next: the last sampled token when it was kept, then those the runtime appended (budget forcing). */
  takeFeed(): number[] {
    const q = this.queued;
    this.queued = [];
    return q;
  }

  /** Accepts a sampled token; returns true when the sequence has finished. */
  accept(token: number, logprob: number, top?: TokenLogprob[]): boolean {
    if (this.atEdge) { // a stop token there is dropped too: the close is forced and the model answers
      this.atEdge = false;
      const room = this.room(), { end, endText, force } = this.opts.thinking!, text = this.tokenizer.decode([token]);
      // Where the vocabulary has the tag as one token (Qwen3's, the default model's), only that token closes at the edge:
      // a "<" there is no tag begun, and a tag spelled out by force in pieces is not one the model reads as closed.
      const single = end.length === 1;
      const tag = single ? { tokens: 0, text: '' } : this.tagInProgress(), piece = tag.text + text; // a closing tag written in pieces: begun, continued or ended
      const closes = single ? token === end[0] : !!endText && text !== '' && (endText.startsWith(piece) || piece.startsWith(endText)); // not a token without text (EOS)
      // the forced text before the tag ("\n"), written by the model itself (alone, or ending its token: ".\n"), not after a begun tag
      const own = room > 0 && !tag.tokens && (token === force![this.forceEndAt - room] || text.endsWith(this.tokenizer.decode(force!.slice(this.forceEndAt - room, this.forceEndAt))));
      if (!closes && !own) { // neither: dropped, the close forced (a begun tag completed, so its pieces stay out of the count)
        this.force(tag.tokens ? this.tagCompletion(tag.tokens, tag.text) : force!.slice(this.forceEndAt - room));
        if (this.done) return true;
        this.checkCap(); // a segment the force left open (see tagCompletion) is held at the edge
        this.emit(false);
        return false;
      }
    }
    if (this.stopTokens.has(token)) {
      // The turn ended inside the thinking where an answer must follow (JSON): the end is dropped and the close forced
      // (the rest of a tag begun in pieces), so that the answer is written (it came back empty, with finish "stop").
      const { force, closeOnStop } = this.opts.thinking ?? {};
      if (this.thinkingOpen && closeOnStop && force) {
        const tag = this.tagInProgress();
        this.closedAtStop = true;
        this.force(tag.tokens ? this.tagCompletion(tag.tokens, tag.text) : force);
        if (this.done) return true;
        this.emit(false);
        return false;
      }
      this.stopToken = token;
      return this.finish('stop');
    }
    this.logprobSum += logprob;
    this.queued.push(token);
    this.push(token, logprob, top);
    if (this.finished()) return true;
    this.checkCap();
    if (this.done) return true;
    this.emit(false);
    return false;
  }

  /** Ends the sequence from outside (early stop, abort); it leaves the batch at the next step. */
  cancel(): void {
    if (!this.done) this.finish('cancelled');
  }

  private push(token: number, logprob: number, top: TokenLogprob[] = []): void {
    this.tokens.push(token);
    this.context?.push(token);
    this.logprobs.push(logprob);
    if (this.opts.topLogprobs) this.topLogprobs.push(top);
    this.text += this.decoder.push(token);
    if (!this.thinkingOpen) return;
    const { end, endText } = this.opts.thinking!;
    this.textEnds.push(this.text.length);
    const at = endText ? this.text.indexOf(endText, Math.max(0, (this.textEnds.at(-2) ?? 0) - endText.length + 1)) : -1; // new text only
    if (endsWithRun(this.tokens, end)) {
      this.thinkingTokens = this.tokens.length - end.length;
      this.stopFrom = this.text.length;
    } else if (at >= 0) { // written in pieces: the segment ends before the token where the tag began
      this.thinkingTokens = this.textEnds.findIndex((e) => e > at);
      this.stopFrom = at + endText!.length;
      this.answerLead = this.text.slice(this.stopFrom);
    } else {
      this.thinkingTokens = this.tokens.length;
      return;
    }
    this.thinkingOpen = false;
    this.answerFrom = this.tokens.length;
  }

  /**
   * Where stop strings are looked for: from the start without a thinking segment; after one, from the answer's
   * first non-blank character (the answer opens with the "\n\n" after the tag, which a "\n" stop must not take).
   */
  private stopStart(): number {
    if (!this.opts.thinking || this.stopFrom === Infinity || this.answerSeen) return this.stopFrom;
    const rest = this.text.slice(this.stopFrom), blank = rest.length - rest.trimStart().length;
    if (blank === rest.length) return this.text.length; // blank so far
    this.stopFrom += blank; // fixed from the first non-blank on
    this.answerSeen = true;
    return this.stopFrom;
  }

  /** Finishes the sequence on a stop string or at the length limit; true if it did. */
  private finished(): boolean {
    // Up to minTokens a stop string does not count (as vLLM's, the minTokens-th token's text included), nor later: the
    // search goes on from the text after them (a stop string may begin in it).
    if (!this.stopsCount()) this.searched = this.text.length;
    else if (this.cutAtStop()) return this.finish('stop', false);
    if (this.tokens.length >= (this.opts.maxTokens ?? 256)) return this.finish('length');
    return false;
  }

  /** Whether a stop string found now ends the text: not up to minTokens tokens. */
  private stopsCount(): boolean { return !this.minTokens || this.tokens.length > this.minTokens; }

  /** Cuts the text where the first stop string begins, if it holds one; true if it did. */
  private cutAtStop(): boolean {
    // Text already searched holds no stop: look again only where a stop could end in the new text.
    const start = this.stopStart(), searched = this.searched;
    this.searched = this.text.length;
    const hits = start === Infinity ? [] : this.stops.map((s) => this.text.indexOf(s, Math.max(start, searched - s.length + 1))).filter((i) => i >= 0);
    if (!hits.length) return false;
    this.text = this.text.slice(0, Math.min(...hits));
    return true;
  }

  /**
   * Budget forcing: once the segment's room is down to the forced text before the closing tag ("\n"), each sampled
   * token is kept only if it begins, continues or ends the closing tag, or (while there is room) writes that text
   * itself ("\n", or a token ending in it): a segment that closes by itself within the cap is not forced. Any other
   * token is dropped, never fed, and the close forced in its place.
   */
  private checkCap(): void {
    const th = this.opts.thinking!;
    if (this.thinkingOpen && th.maxTokens !== undefined && th.force && this.room() <= this.forceEndAt) this.atEdge = true;
  }

  /**
   * Segment tokens still allowed, counting those of a closing tag the model is writing in pieces ("</" "think"): the
   * next token must complete such a tag, else it is dropped and the tag completed by force, so the pieces end up
   * outside the segment and it never passes the cap.
   */
  private room(): number {
    return Math.max(0, this.opts.thinking!.maxTokens! - this.thinkingTokens);
  }

  /** The trailing tokens whose text begins `endText` (a closing tag being written in pieces), and that text. */
  private tagInProgress(): { tokens: number; text: string } {
    const endText = this.opts.thinking!.endText, n = this.tokens.length;
    let found = { tokens: 0, text: '' };
    if (!endText || !this.thinkingOpen) return found;
    for (let k = 1; k <= n && k < endText.length; k++) {
      const text = this.text.slice(this.textEnds[n - k - 1] ?? 0);
      if (text.length >= endText.length) break;
      if (text && endText.startsWith(text)) found = { tokens: k, text };
    }
    return found;
  }

  /**
   * The forced tokens that finish a closing tag the model began in `n` pieces writing `text`, then what the forced
   * text has after the tag: the forced tokens themselves where the model began the tag as they do, else the rest of
   * the text encoded, when it joins the pieces into the tag (not on SentencePiece vocabularies, whose encoding opens
   * with a space: "</ think>"). Else the whole tag after the pieces, which then count as thinking.
   */
  private tagCompletion(n: number, text: string): number[] {
    const th = this.opts.thinking!, rest = th.force!.slice(this.forceEndAt), begun = this.tokens.slice(-n);
    if (begun.every((t, i) => rest[i] === t)) return rest.slice(n);
    const tail = this.tokenizer.encode(this.tokenizer.decode(rest).slice(text.length), { addSpecialTokens: false });
    return this.tokenizer.decode([...begun, ...tail]).includes(th.endText!) ? tail : rest;
  }

  /** Feeds forced tokens: the text before the closing tag as far as it fits, then the tag, or the rest of a begun one (push closes the segment as a written one). */
  private force(tokens: number[]): void {
    for (const token of tokens) {
      this.forcedTokens++;
      this.queued.push(token);
      this.push(token, 0);
      if (this.finished()) return;
    }
  }

  /**
   * `flush`: the text the decoder holds back (from a token that ends in half a character) ends the text, as decoding
   * the tokens gives it; not after a stop string. A stop string in it ends the sequence there (reason "stop").
   */
  private finish(reason: FinishReason, flush = true): boolean {
    if (flush) {
      this.text += this.decoder.flush();
      if (this.stopsCount() && this.cutAtStop()) reason = 'stop';
    }
    this.finishReason = reason;
    this.emit(true);
    return true;
  }

  /** Streams text that can no longer turn into a stop string. */
  private emit(final: boolean): void {
    let safe = this.text.length;
    const from = this.stopStart();
    if (!final && from !== Infinity) {
      for (const s of this.stops) {
        for (let k = Math.min(s.length - 1, this.text.length); k > 0; k--) {
          if (this.text.length - k >= from && this.text.endsWith(s.slice(0, k))) { safe = Math.min(safe, this.text.length - k); break; }
        }
      }
    }
    // Marked as given before the callback runs: one that aborts the request finishes the sequence inside it.
    if (safe > this.emitted) { const piece = this.text.slice(this.emitted, safe); this.emitted = safe; this.onText?.(piece); }
  }
}

/** Stop strings as a list: OpenAI's API, and so these options, take one string or several. */
export const stopList = (stop: string | string[] | undefined): string[] => (stop === undefined ? [] : typeof stop === 'string' ? [stop] : stop);

/** Refuses options that would be ignored or mean nothing, naming the option and the value (`defaultMaxTokens`: the caller's maxTokens when none is given). */
export function checkGenerateOptions(o: GenerateOptions, vocabSize: number, where = 'generate', defaultMaxTokens = 256): void {
  const bad = (what: string, v: unknown) => { throw new Error(`${where}: ${what}, got ${shown(v)}`); };
  const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  if (o.temperature !== undefined && !(num(o.temperature) && o.temperature >= 0)) bad('temperature must be a finite number ≥ 0 (0 = greedy)', o.temperature);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) bad('topK must be an integer ≥ 0 (0 = off)', o.topK);
  if (o.topP !== undefined && !(num(o.topP) && o.topP >= 0 && o.topP <= 1)) bad('topP must be in [0, 1] (0 keeps the most likely token)', o.topP);
  if (o.minP !== undefined && !(num(o.minP) && o.minP >= 0 && o.minP <= 1)) bad('minP must be in [0, 1]', o.minP);
  if (o.repetitionPenalty !== undefined && !(num(o.repetitionPenalty) && o.repetitionPenalty > 0)) bad('repetitionPenalty must be a finite number > 0 (1 = off)', o.repetitionPenalty);
  for (const k of ['presencePenalty', 'frequencyPenalty'] as const) if (o[k] !== undefined && !(num(o[k]) && Math.abs(o[k]) <= 2)) bad(`${k} must be a number in [-2, 2] (0 = off)`, o[k]);
  if (o.seed !== undefined && !Number.isSafeInteger(o.seed)) bad('seed must be an integer within ±(2^53 − 1)', o.seed);
  if (o.topLogprobs !== undefined && !(Number.isInteger(o.topLogprobs) && o.topLogprobs >= 0 && o.topLogprobs <= 20)) bad('topLogprobs must be an integer in [0, 20]', o.topLogprobs);
  // The first token is sampled before any limit is checked: a limit below 1 cannot be honoured.
  if (o.maxTokens !== undefined && !(Number.isInteger(o.maxTokens) && o.maxTokens >= 1)) bad('maxTokens must be an integer ≥ 1', o.maxTokens);
  if (o.minTokens !== undefined && !(Number.isInteger(o.minTokens) && o.minTokens >= 0)) bad('minTokens must be an integer ≥ 0', o.minTokens);
  if (o.minTokens && o.minTokens > (o.maxTokens ?? defaultMaxTokens)) throw new Error(`${where}: minTokens (${o.minTokens}) is more than maxTokens (${o.maxTokens ?? `${defaultMaxTokens}, the default`})`);
  if (o.ignoreEos !== undefined && typeof o.ignoreEos !== 'boolean') bad('ignoreEos must be true or false', o.ignoreEos);
  if ((o.minTokens || o.ignoreEos) && o.allowedNext) throw new Error(`${where}: ${o.ignoreEos ? 'ignoreEos' : 'minTokens'} cannot go with a constraint on the answer (json, a forced tool call): it could leave the model no token to draw`);
  if (o.promptLookup !== undefined && !(Number.isInteger(o.promptLookup) && o.promptLookup >= 0 && o.promptLookup <= 64)) bad('promptLookup must be an integer in [0, 64] (the most tokens guessed per step; 0 = off)', o.promptLookup);
  if (o.cacheSalt !== undefined && typeof o.cacheSalt !== 'string') bad('cacheSalt must be a string', o.cacheSalt);
  const stops = stopList(o.stop);
  if (!Array.isArray(stops) || stops.some((x) => typeof x !== 'string')) bad('stop must be a string or a list of strings', o.stop);
  if (stops.some((x) => !x)) throw new Error(`${where}: stop strings must be non-empty (an empty one would match before the first token)`);
  if (o.stopTokens !== undefined && !(Array.isArray(o.stopTokens) && o.stopTokens.every((t) => isTokenId(t, vocabSize)))) {
    bad(`stopTokens must be token ids (0..${vocabSize - 1})`, o.stopTokens);
  }
  const th: unknown = o.thinking;
  if (th !== undefined) {
    if (th === null || typeof th !== 'object' || Array.isArray(th)) bad('thinking must be an object { end, endText?, maxTokens?, force?, closeOnStop? }', th);
    const unknown = Object.keys(th as object).find((k) => !['end', 'endText', 'maxTokens', 'force', 'closeOnStop'].includes(k));
    if (unknown !== undefined) bad(`thinking has an unknown option "${unknown}" (options: end, endText, maxTokens, force, closeOnStop)`, th);
    const { end, force, maxTokens, endText } = th as ThinkingOptions;
    const ids = (v: unknown) => Array.isArray(v) && v.length > 0 && v.every((t) => isTokenId(t, vocabSize));
    if (!ids(end)) bad(`thinking.end must be the token ids that close the thinking segment (a non-empty list of 0..${vocabSize - 1})`, end);
    if (force !== undefined && !ids(force)) bad(`thinking.force must be a non-empty list of token ids (0..${vocabSize - 1})`, force);
    if (maxTokens !== undefined && !(Number.isInteger(maxTokens) && maxTokens >= 0)) bad('thinking.maxTokens must be an integer ≥ 0', maxTokens);
    if (maxTokens !== undefined && force === undefined) bad('thinking.maxTokens needs thinking.force, the closing tokens fed at the cap (the tokens of "\\n</think>\\n\\n"), to end the thinking there; thinking.maxTokens', maxTokens);
    if (endText !== undefined && !(typeof endText === 'string' && endText)) bad('thinking.endText must be a non-empty string', endText);
    const { closeOnStop } = th as ThinkingOptions;
    if (closeOnStop !== undefined && typeof closeOnStop !== 'boolean') bad('thinking.closeOnStop must be true or false', closeOnStop);
    if (closeOnStop && force === undefined) bad('thinking.closeOnStop needs thinking.force, the closing tokens fed in place of the stop token', closeOnStop);
  }
  if (o.adapterFrom !== undefined) {
    if (!(Number.isInteger(o.adapterFrom) && o.adapterFrom >= 0)) bad('adapterFrom must be a position ≥ 0', o.adapterFrom);
    if (!o.adapter) bad('adapterFrom needs adapter: true', o.adapterFrom);
  }
}

/** How many of `ids` decode wholly before `text` begins in their decoded text; -1 when it does not occur. */
function tokensBefore(tokenizer: TextTokenizer, ids: readonly number[], text: string): number {
  const at = tokenizer.decode(ids).indexOf(text);
  if (at < 0) return -1;
  let k = 0;
  while (k < ids.length && tokenizer.decode(ids.slice(0, k + 1)).length <= at) k++;
  return k;
}

function indexOfRun(xs: readonly number[], run: readonly number[]): number {
  for (let s = 0; s + run.length <= xs.length; s++) if (run.every((t, i) => xs[s + i] === t)) return s;
  return -1;
}

export function lastIndexOfRun(xs: readonly number[], run: readonly number[]): number {
  for (let s = xs.length - run.length; s >= 0; s--) if (run.every((t, i) => xs[s + i] === t)) return s;
  return -1;
}

type ForcedClose = Pick<ThinkingOptions, 'end' | 'endText'> & { force: readonly number[] };

/** Where the closing tag begins in `th.force` (the forced tokens before it count towards the cap); -1 where it is not in it. */
export function closeStart(tokenizer: TextTokenizer, th: ForcedClose): number {
  const at = indexOfRun(th.force, th.end);
  return at < 0 && th.endText ? tokensBefore(tokenizer, th.force, th.endText) : at;
}

/** The forced close's tokens that follow a capped thinking segment: from the closing tag on. */
export const closingAfterCap = (tokenizer: TextTokenizer, th: ForcedClose): number => th.force.length - Math.max(0, closeStart(tokenizer, th));

/**
 * The largest thinking cap that leaves room within `limit` generated tokens for the forced close's tokens after the
 * cap (`closing`: closingAfterCap) and one answer token: a cap the thinking cannot reach never closes it, and every
 * sample would be cut off mid-thought.
 */
export const maxThinkingCap = (closing: number, limit: number): number => limit - closing - 1;

export function endsWithRun(xs: readonly number[], run: readonly number[]): boolean {
  return xs.length >= run.length && run.every((t, i) => xs[xs.length - run.length + i] === t);
}

export interface DecodeHooks {
  /**
   * Called when a sequence finishes, with the final hidden state of its row in that step: the state of the token
   * whose logits drew the last one (the last token fed; in a step with guesses, the guess before it), which for a
   * stop-token finish is the state at the last generated token (verifier input). Giving it makes every step return
   * hidden states.
   */
  onFinish?: (seq: number, hidden: Float32Array) => void;
  /** Called when a sequence ends by itself (a stop, or its token limit), after its last token was accepted. */
  onEnd?: (seq: number) => void;
  /** Called after each step, before finished rows leave the batch; may cancel sequences (early stop). */
  afterStep?: () => void;
  /** Aborting cancels every running sequence before the next step; a step still queued (or a long prefill between its parts) is dropped. */
  signal?: AbortSignal;
}

/**
 * Decodes all sequences to completion. `cache` already holds the beginning of each row's prompt; `pending[b]`, the
 * rest (at least its last token), is fed by the first step (so prefill can be shared, forked or skipped by the
 * caller). Each sequence's options say whether its generated tokens run with the adapter. Tokens a sequence appends
 * without sampling (budget forcing) are fed together with its next token. Sequences already done are skipped
 * (their rows are dropped first).
 */
export async function decode(backend: Backend, cache: CacheHandle, seqs: Sequence[], pending: number[][], start = performance.now(), hooks: DecodeHooks = {}): Promise<void> {
  let rows = seqs.map((_, i) => i);
  const stopAll = () => rows.forEach((r) => seqs[r].cancel());
  let feed = pending.map((p, i) => [...p, ...seqs[i].takeFeed()]);
  const pos = await backend.lengths(cache); // next absolute position of each row
  const H = backend.config.hiddenSize;
  const stopWaiting = hooks.signal && onAbort(hooks.signal, stopAll); // after the await: an abort during it stops all now
  try {
    for (;;) {
      const still = rows.map((_, i) => i).filter((i) => !seqs[rows[i]].done);
      if (still.length < rows.length && still.length) await backend.keep(cache, still);
      rows = still.map((i) => rows[i]);
      feed = still.map((i) => feed[i]);
      if (!rows.length) break;
      const live = rows.map((r) => seqs[r]), sample = live.map((s) => s.sampling());
      // A sequence alone (a batch's steps of several tokens per row run row by row) may guess its next tokens: they
      // ride along with the one fed, in one step (speculative decoding).
      const draft = live.length === 1 && feed[0].length === 1 ? live[0].guess() : undefined;
      const fed = draft ? [[...feed[0], ...draft.tokens]] : feed;
      let res;
      try {
        res = await backend.step(cache, {
          tokens: fed,
          adapterMask: live.map((s, i) => s.adapterMask(pos[rows[i]], fed[i].length)),
          sample,
          ...(draft ? { draft: [draft], logits: draft.tokens.length + 1 } : {}),
          ...(hooks.onFinish ? { want: { hidden: true } } : {}),
        }, hooks.signal);
      } catch (e) {
        if (!(e instanceof AbortedError && hooks.signal?.aborted)) throw e;
        stopAll(); // (done already by the signal's listener, registered before the step's)
        break; // the step was dropped
      }
      rows.forEach((r, i) => { pos[r] += fed[i].length; });
      const cuts: Promise<void>[] = [];
      feed = live.map((s, i) => {
        // (A backend may step without the guesses: none was then fed, nor is any kept.)
        const checked = !!res.runs?.[i], run = res.runs?.[i] ?? [{ token: res.tokens![i], logprob: res.logprobs![i], top: res.top?.[i] }], k = draft?.tokens.length ?? 0;
        if (s.done) { if (draft) s.verified(draft, 0, checked); return []; } // cancelled while the step ran
        if (s.ttftMs === 0) s.ttftMs = performance.now() - start; // the first sampled token
        pos[rows[i]] -= k - (run.length - 1); // the guesses after the last one drawn right have left the cache
        for (let j = 0; ; j++) {
          if (s.accept(run[j].token, run[j].logprob, run[j].top)) {
            if (draft) s.verified(draft, j, checked);
            const at = i * res.positions + (checked ? j : 0); // the state of the token whose logits drew run[j]
            hooks.onFinish?.(rows[i], res.hidden!.slice(at * H, (at + 1) * H));
            hooks.onEnd?.(rows[i]);
            return [];
          }
          const next = s.takeFeed();
          // The token taken is the guess fed after it: already in the cache, and the run goes on from its logits —
          // unless the sequence ended meanwhile (a callback that aborts) or the token began a constrained answer.
          if (j < k && j + 1 < run.length && next.length === 1 && next[0] === draft!.tokens[j] && !s.done && !s.constrained) continue;
          if (draft) { // the guesses from j on were not taken: their draws are the next ones; any still in the cache leave it
            s.verified(draft, j, checked);
            if (j < run.length - 1) { pos[rows[i]] -= run.length - 1 - j; cuts.push(backend.truncate(cache, i, pos[rows[i]])); }
          }
          return next;
        }
      });
      await Promise.all(cuts);
      hooks.afterStep?.();
    }
  } finally {
    stopWaiting?.();
  }
}

/**
 * The prompt tokens a completion's text is decoded after (StreamDecoder's context): its last 4 (the bytes of a
 * character the prompt may cut), from after the last special token among them (decoded as nothing, so the
 * completion begins a text there, as a SentencePiece decoder's stripped first space shows).
 */
function textContext(tok: Pick<TextTokenizer, 'specialIds'>, prompt: readonly number[]): readonly number[] {
  const tail = prompt.slice(-4);
  let from = tail.length;
  while (from > 0 && !tok.specialIds?.has(tail[from - 1])) from--;
  return tail.slice(from);
}

/** A prompt as messages name it: "the prompt" of one, "prompt 2" of several (`kind`: "raw " makes "the raw prompt"). */
export const promptName = (i: number, of: number, kind = ''): string => (of > 1 ? `${kind}prompt ${i}` : `the ${kind}prompt`);

/**
 * Prefills each prompt in one batched step and decodes them together; aborting `signal` cancels them all. With
 * `reuse`, each prompt's positions the base weights encode are prefilled from the longest beginning `reuse` keeps,
 * and kept after (prompt caching).
 */

export async function generateBatch(backend: Backend, tokenizer: TextTokenizer, prompts: number[][], opts: GenerateOptions[], onText?: (row: number, piece: string) => void, signal?: AbortSignal, reuse?: PromptCache): Promise<Completion[]> {
  const start = performance.now();
  if (onText !== undefined && typeof onText !== 'function') throw new Error(`generate: onText must be a function (row, piece) => void, got ${typeof onText}`);
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new Error(`generate: signal must be an AbortSignal, got ${shown(signal)}`);
  prompts.forEach((p, i) => { if (!p.length) throw new Error(`generate: ${promptName(i, prompts.length)} has no tokens (an empty text, and the tokenizer adds no BOS token to start from): give it some text`); });
  const ctx = backend.config.maxPositionEmbeddings;
  const per = prompts.map((p, i): GenerateOptions => { // the caller's options stay as they were
    checkGenerateOptions(opts[i], tokenizer.vocabSize); // as given, before the context's cap
    if (p.length >= ctx) throw new ContextLengthError(`generate: ${promptName(i, prompts.length)} has ${p.length} tokens; the model's context of ${ctx} tokens leaves no room to generate`, p.length + 1, ctx);
    const maxTokens = Math.min(opts[i].maxTokens ?? 256, ctx - p.length), th = opts[i].thinking;
    // Where the context's end comes first, a thinking cap it would not hold with its close and an answer token is
    // lowered to fit (as answer() does), so the thinking still closes and answers instead of being cut off.
    const fit = th?.maxTokens !== undefined && th.force && maxTokens < (opts[i].maxTokens ?? 256) ? Math.min(th.maxTokens, Math.max(0, maxThinkingCap(closingAfterCap(tokenizer, th as ForcedClose), maxTokens))) : undefined;
    return { ...opts[i], maxTokens, ...(fit !== undefined && fit !== th!.maxTokens ? { thinking: { ...th!, maxTokens: fit } } : {}) };
  });
  const seqs = prompts.map((p, i) => new Sequence(tokenizer, per[i], p.length, onText && ((piece) => onText(i, piece)), textContext(tokenizer, p), p));
  // Per row, the positions the base weights encode (all of a prompt the adapter does not act on): with `reuse`, read
  // from the longest kept beginning, and kept.
  const base = prompts.map((p, i) => (!reuse ? 0 : per[i].adapter ? Math.min(p.length, per[i].adapterFrom ?? 0) : p.length));
  const salt = (i: number) => per[i].cacheSalt ?? '';
  const heads = prompts.map((p, i) => p.slice(0, base[i])), key = (i: number) => `${salt(i)}\0${base[i]}:${prompts[i].join()}`;
  // Rows of one prompt (n choices) take one copy, which gather repeats.
  const taken = new Map<string, Promise<{ cache: CacheHandle; length: number } | undefined>>();
  prompts.forEach((p, i) => { if (base[i] && !taken.has(key(i))) taken.set(key(i), reuse!.take(p, base[i], salt(i))); });
  const hits = await Promise.all(prompts.map((_, i) => taken.get(key(i))));
  const cached = hits.map((h) => h?.length ?? 0), parts = hits.map((h) => h?.cache ?? null);
  let cache: CacheHandle;
  if (prompts.length === 1 && parts[0] !== null) cache = parts[0];
  else {
    try { // rows begun from kept prompts are gathered into one batch
      cache = parts.some((h) => h !== null) ? await backend.gather(parts) : await backend.newCache(prompts.length);
    } finally {
      await Promise.all([...new Set(parts)].map((h) => h !== null && backend.free(h)));
    }
  }
  // Kept once the prompts are in the cache (after the first step), so that a request beside this one can read them.
  // Every copy is asked for then, in the hook, before rows that finish leave the batch (backend.keep renumbers the
  // rows; the backends run calls in the order they are made, so the copies read the rows as numbered here). A
  // prompt that another row's repeats or continues is in that one's: kept once.
  let keeping: Promise<unknown> | undefined;
  const within = (i: number, j: number) => j !== i && salt(i) === salt(j) && heads[j].length >= heads[i].length && heads[i].every((t, k) => heads[j][k] === t);
  const keeps = heads.map((h, i) => h.length > 0 && !heads.some((_, j) => within(i, j) && (heads[j].length > h.length || j < i)));
  const keep = () => { keeping ??= Promise.all(prompts.map((_, i) => keeps[i] && reuse!.put(heads[i], cache, i, salt(i)).catch(() => {}))); };
  try {
    await decode(backend, cache, seqs, prompts.map((p, i) => p.slice(cached[i])), start, { signal, ...(keeps.some(Boolean) ? { afterStep: keep } : {}) });
  } finally {
    await keeping;
    await backend.free(cache);
  }
  const end = performance.now();
  return seqs.map((s, i) => ({
    text: s.text, tokens: s.tokens, logprobs: s.logprobs, ...(s.opts.topLogprobs ? { topLogprobs: s.topLogprobs } : {}), finishReason: s.finishReason!,
    promptTokens: s.promptTokens, cachedTokens: cached[i], ttftMs: s.ttftMs, totalMs: end - start,
    ...(s.opts.thinking ? { thinking: { tokens: s.thinkingTokens, closed: s.answerFrom !== undefined } } : {}),
    ...(s.opts.promptLookup ? { guesses: { made: s.guessesMade, kept: s.guessesKept } } : {}),
  }));
}
