import type { TextTokenizer } from './types.ts';

/**
 * Turns generated token ids, fed one at a time, into text pieces whose concatenation equals
 * `tokenizer.decode(allIds)` without transformers' space clean-up (which takes spaces away as later tokens arrive,
 * so pieces already emitted would no longer add up; vLLM's streaming skips it too). Each step re-decodes a short
 * window that starts one emitted chunk back, so tokenizer rules that depend on the neighbours (sentencepiece's
 * leading-space strip, byte-level merging) give the same text as a full decode; text ending in U+FFFD is held back
 * because it is an incomplete UTF-8 sequence split across tokens, and emitted once the next token completes it.
 * `context`: tokens before the first generated one (the prompt's last), decoded as its neighbour and never emitted,
 * so a completion's first token keeps the leading space a sentencepiece decoder strips at a text's start. A character
 * the context begins (a prompt cut inside it) and the first tokens complete is emitted whole.
 */
export class StreamDecoder {
  private ids: number[];
  private prefix = 0; // window start: context already emitted, decoded again so the diff is exact
  private read: number; // ids[prefix, read) have been emitted
  private readonly opts: { skipSpecialTokens?: boolean; cleanUp: false };

  constructor(private readonly tokenizer: Pick<TextTokenizer, 'decode' | 'specialIds'>, opts: { skipSpecialTokens?: boolean } = {}, private readonly context: readonly number[] = []) {
    this.opts = { ...opts, cleanUp: false };
    this.ids = [...context];
    this.read = context.length;
  }

  /** Adds one token; returns the newly completed text ('' while a character is still incomplete). */
  push(id: number): string {
    // A special token decoding skips adds no text: kept out of the window, which a long run of them made ever longer.
    if (this.opts.skipSpecialTokens && this.tokenizer.specialIds?.has(id)) return '';
    this.ids.push(id);
    const [before, now] = this.window(), text = now.endsWith('\uFFFD') ? undefined : added(before, now);
    if (!text) return '';
    this.prefix = this.read;
    this.read = this.ids.length;
    return text;
  }

  /** Returns whatever is still held back (e.g. a genuinely invalid byte sequence) and resets for a new stream. */
  flush(): string {
    const [before, now] = this.window();
    this.ids = [...this.context];
    this.prefix = 0;
    this.read = this.context.length;
    return added(before, now) ?? now.slice(before.length);
  }

  private window(): [string, string] {
    const dec = (ids: number[]) => this.tokenizer.decode(ids, this.opts);
    return [dec(this.ids.slice(this.prefix, this.read)), dec(this.ids.slice(this.prefix))];
  }
}

/**
 * The text `now` adds after `before`, or undefined where it does not continue it. `before` ending in U+FFFD that
 * `now` replaces with text (the bytes of a character begun before, completed now): from that character on.
 */
function added(before: string, now: string): string | undefined {
  if (now.startsWith(before)) return now.slice(before.length);
  const kept = before.replace(/\uFFFD+$/, '');
  return kept.length < before.length && now.startsWith(kept) ? now.slice(kept.length) : undefined;
}
