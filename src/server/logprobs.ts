/**
 * Log-probabilities of the generated tokens in OpenAI's two shapes: chat's `logprobs.content` (one entry per token,
 * with its bytes and its `top_logprobs`) and legacy completions' `logprobs` (parallel lists). A token's bytes are the
 * raw bytes it stands for after other text (joined, they are the text: tokenBytes), its text those bytes as text (a
 * piece of a multi-byte character as U+FFFD, as vLLM gives it; a SentencePiece piece with its leading space, as llama.cpp's piece). The values are the model's (after a repetition,
 * presence or frequency penalty), not the temperature's.
 */
import type { TextTokenizer } from '../tokenizer/types.ts';
import type { TokenLogprob } from '../runtime/sampler.ts';
import { tokenBytesOf } from '../runtime/json-constraint.ts';

/** The tokens of a reply with their log-probabilities and, when asked for, the most likely tokens at each. */
export interface TokenLogprobs {
  tokens: number[];
  /** null for a prompt's first token (nothing before it predicts it). */
  logprobs: (number | null)[];
  top?: TokenLogprob[][];
}

const bytesOf = (tok: TextTokenizer, id: number): number[] => [...tokenBytesOf(tok, id)];
const UTF8 = new TextDecoder();
/** A token's text: its bytes as text, so a SentencePiece piece keeps the space it stands for ("▁Once": " Once"; decoded alone, "Once"). */
const text = (tok: TextTokenizer, id: number): string => UTF8.decode(tokenBytesOf(tok, id));

/**
 * Where each token's text begins in the text of them all, by `length` (code points by default, as Python counts
 * them): the characters before it; of a character that tokens split, its first token's offset is the character's,
 * the rest the next one's. A token not in the text (`inText`; by default a special token) adds nothing. `atStart`:
 * the tokens begin the text (an echoed prompt), where a SentencePiece decoder strips the space its first piece
 * stands for ("▁Once" is " Once" after other text, "Once" at the start).
 */
export function textOffsets(tok: TextTokenizer, ids: readonly number[], inText: (i: number) => boolean = (i) => !tok.specialIds?.has(ids[i]), length = (s: string) => [...s].length, atStart = false): number[] {
  const utf8 = new TextDecoder();
  let at = 0, first = atStart;
  return ids.map((id, i) => {
    const begins = Math.max(0, at);
    if (!inText(i)) return begins;
    const piece = utf8.decode(tokenBytesOf(tok, id), { stream: true });
    if (first && piece.startsWith(' ') && !tok.decode([id]).startsWith(' ')) at -= 1;
    first = false;
    at += length(piece);
    return begins;
  });
}

/** Chat's `choices[i].logprobs`: each token, its log-probability and bytes, and the `k` most likely tokens there. */
export function chatLogprobs(tok: TextTokenizer, lp: TokenLogprobs, k: number) {
  return {
    content: lp.tokens.map((id, i) => {
      return {
        token: text(tok, id), logprob: lp.logprobs[i], bytes: bytesOf(tok, id),
        top_logprobs: (lp.top?.[i] ?? []).slice(0, k).map(([t, logprob]) => ({ token: text(tok, t), logprob, bytes: bytesOf(tok, t) })),
      };
    }),
    refusal: null,
  };
}

/**
 * Legacy completions' `choices[i].logprobs`: the tokens, their log-probabilities, each token's offset in the choice's
 * text and, for `k` > 0, a map of the k most likely tokens at each, with the sampled one always in it (as OpenAI's,
 * which may then hold k + 1).
 */
export function completionLogprobs(tok: TextTokenizer, lp: TokenLogprobs, k: number, inText?: (i: number) => boolean, echoed = false) {
  // (inText: not a generated special token, nor a BOS the tokenizer added to an echoed prompt; see textOffsets.)
  const tokens = lp.tokens.map((id) => text(tok, id)), text_offset = textOffsets(tok, lp.tokens, inText, undefined, echoed);
  const top_logprobs = k > 0 ? lp.tokens.map((id, i) => {
    const own = lp.logprobs[i];
    return own === null ? null : Object.fromEntries([...(lp.top?.[i] ?? []).slice(0, k), [id, own] as TokenLogprob].map(([t, v]) => [text(tok, t), v]));
  }) : null;
  return { tokens, token_logprobs: lp.logprobs, top_logprobs, text_offset };
}
