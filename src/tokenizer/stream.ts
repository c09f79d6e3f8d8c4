import type { TextTokenizer } from './types.ts';

/**
 * Turns generated token ids, fed one at a time, into text pieces whose concatenation equals
 * `tokenizer.decode(allIds)`. Each step re-decodes a short window that starts one emitted chunk back,
 * so tokenizer rules that depend on the neighbours (sentencepiece's leading-space strip, byte-level
 * merging) give the same text as a full decode; text ending in U+FFFD is held back because it is an
 * incomplete UTF-8 sequence split across tokens, and emitted once the next token completes it.
 */
export class StreamDecoder {
  private ids: number[] = [];
  private prefix = 0; // window start: context already emitted, decoded again so the diff is exact
  private read = 0; // ids[prefix, read) have been emitted

  constructor(private readonly tokenizer: Pick<TextTokenizer, 'decode'>, private readonly opts: { skipSpecialTokens?: boolean } = {}) {}

  /** Adds one token; returns the newly completed text ('' while a character is still incomplete). */
  push(id: number): string {
    this.ids.push(id);
    const [before, now] = this.window();
    if (now.length <= before.length || now.endsWith('\uFFFD')) return '';
    this.prefix = this.read;
    this.read = this.ids.length;
    return now.slice(before.length);
  }

  /** Returns whatever is still held back (e.g. a genuinely invalid byte sequence) and resets for a new stream. */
  flush(): string {
    const [before, now] = this.window();
    this.ids = [];
    this.prefix = this.read = 0;
    return now.slice(before.length);
  }

  private window(): [string, string] {
    const dec = (ids: number[]) => this.tokenizer.decode(ids, this.opts);
    return [dec(this.ids.slice(this.prefix, this.read)), dec(this.ids.slice(this.prefix))];
  }
}
