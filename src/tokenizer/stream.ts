import type { TextTokenizer } from './types.ts';

/**
 * Turns generated token ids, fed one at a time, into text pieces whose concatenation equals
 * `tokenizer.decode(allIds)` without transformers' space clean-up (which takes spaces away as later tokens arrive,
 * so pieces already emitted would no longer add up; vLLM's streaming skips it too). Each step re-decodes a short
 * window that starts one emitted chunk back, so tokenizer rules that depend on the neighbours (sentencepiece's
 * leading-space strip, byte-level merging) give the same text as a full decode; text ending in U+FFFD is held back
 * because it is an incomplete UTF-8 sequence split across tokens, and emitted once the next token completes it.
 * `context`: tokens before the first generated one (the prompt's last), decoded as its neighbour and never emitted,
 * so a completion's first token keeps the leading space a sentencepiece decoder strips at a text's start.
 */
export class StreamDecoder {
  private ids: number[];
  private prefix = 0; // window start: context already emitted, decoded again so the diff is exact
  private read: number; // ids[prefix, read) have been emitted
  private readonly opts: { skipSpecialTokens?: boolean; cleanUp: false };

  constructor(private readonly tokenizer: Pick<TextTokenizer, 'decode'>, opts: { skipSpecialTokens?: boolean } = {}, private readonly context: readonly number[] = []) {
    this.opts = { ...opts, cleanUp: false };
    this.ids = [...context];
    this.read = context.length;
  }

  /** Adds one token; returns the newly completed text ('' while a character is still incomplete). */
  push(id: number): string {
    this.ids.push(id);
    const [before, now] = this.window();
    if (now.length <= before.length || now.endsWith('\uFFFD') || !now.startsWith(before)) return '';
    this.prefix = this.read;
    this.read = this.ids.length;
    return now.slice(before.length);
  }

  /** Returns whatever is still held back (e.g. a genuinely invalid byte sequence) and resets for a new stream. */
  flush(): string {
    const [before, now] = this.window();
    this.ids = [...this.context];
    this.prefix = 0;
    this.read = this.context.length;
    return now.slice(before.length);
  }

  private window(): [string, string] {
    const dec = (ids: number[]) => this.tokenizer.decode(ids, this.opts);
    return [dec(this.ids.slice(this.prefix, this.read)), dec(this.ids.slice(this.prefix))];
  }
}
