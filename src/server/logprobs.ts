/**
 * Log-probabilities of the generated tokens in OpenAI's two shapes: chat's `logprobs.content` (one entry per token,
 * with its bytes and its `top_logprobs`) and legacy completions' `logprobs` (parallel lists). A token's text is what
 * it decodes to alone (as vLLM gives it; a piece of a multi-byte character decodes to U+FFFD), its bytes that text's
 * UTF-8. The values are the model's (after a repetition penalty), not the temperature's.
 */
import type { TextTokenizer } from '../tokenizer/types.ts';
import type { TokenLogprob } from '../runtime/sampler.ts';

/** The tokens of a reply with their log-probabilities and, when asked for, the most likely tokens at each. */
export interface TokenLogprobs {
  tokens: number[];
  logprobs: number[];
  top?: TokenLogprob[][];
}

const text = (tok: TextTokenizer, id: number): string => tok.decode([id]);
const bytes = (s: string): number[] => [...Buffer.from(s, 'utf8')];

/** Chat's `choices[i].logprobs`: each token, its log-probability and bytes, and the `k` most likely tokens there. */
export function chatLogprobs(tok: TextTokenizer, lp: TokenLogprobs, k: number) {
  return {
    content: lp.tokens.map((id, i) => {
      const token = text(tok, id);
      return {
        token, logprob: lp.logprobs[i], bytes: bytes(token),
        top_logprobs: (lp.top?.[i] ?? []).slice(0, k).map(([t, logprob]) => { const s = text(tok, t); return { token: s, logprob, bytes: bytes(s) }; }),
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
export function completionLogprobs(tok: TextTokenizer, lp: TokenLogprobs, k: number) {
  const tokens = lp.tokens.map((id) => text(tok, id)), text_offset: number[] = [];
  let offset = 0;
  for (const t of tokens) { text_offset.push(offset); offset += t.length; }
  const top_logprobs = k > 0 ? lp.tokens.map((id, i) => Object.fromEntries([...(lp.top?.[i] ?? []).slice(0, k), [id, lp.logprobs[i]] as TokenLogprob].map(([t, v]) => [text(tok, t), v]))) : null;
  return { tokens, token_logprobs: lp.logprobs, top_logprobs, text_offset };
}
