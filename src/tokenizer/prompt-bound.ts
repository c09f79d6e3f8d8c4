/**
 * A cheap lower bound on a prompt's token count, so a prompt of megabytes is refused without tokenizing it
 * (BPE over megabytes holds the event loop, and every other request's decoding, for seconds).
 *
 * Every character of the (normalized) text belongs to exactly one token, and no token covers more characters than
 * its vocabulary string is long — for a byte-level vocabulary the string has one character per byte, and a UTF-16
 * string is never longer than its UTF-8 bytes. So a prompt of C characters needs at least C / M tokens, M being the
 * longest vocabulary string (added tokens included). That holds only for pipelines that never drop text nor fold
 * a run of text into one token: a BPE model without fuse_unk, added tokens that strip no whitespace, pre-tokenizers
 * that keep every character, and normalizers that never shorten text, apart from Unicode normalization forms, which
 * are applied here (natively, milliseconds for megabytes). For any other tokenizer there is no bound (undefined) and
 * the prompt is simply tokenized.
 */
import { HfTokenizer } from './hf.ts';
import type { TextTokenizer } from './types.ts';

export interface PromptCharBound {
  /** Characters the longest token covers at most. */
  maxTokenChars: number;
  /** The text's length after the tokenizer's normalizer, or a lower bound on it. */
  normalizedLength(text: string): number;
}

type Config = { type?: string; [k: string]: unknown };
type Form = 'NFC' | 'NFD' | 'NFKC' | 'NFKD';
const FORMS = new Set<string>(['NFC', 'NFD', 'NFKC', 'NFKD']);

/** The Unicode forms to apply, in order, for a lower bound on the normalized length; undefined = text may shrink otherwise. */
function normalizerForms(c: Config | null | undefined): Form[] | undefined {
  if (!c) return [];
  const steps = c.type === 'Sequence' ? (c.normalizers as Config[] | undefined) ?? [] : [c];
  const forms: Form[] = [];
  let lengthening = false; // a step after which a normalization form could see different text
  for (const s of steps) {
    if (FORMS.has(s.type ?? '')) {
      if (lengthening) return undefined;
      forms.push(s.type as Form);
    } else if (s.type === 'Prepend' || s.type === 'Lowercase') lengthening = true;
    else if (s.type === 'Replace') {
      const pattern = (s.pattern as { String?: unknown } | undefined)?.String;
      if (typeof pattern !== 'string' || typeof s.content !== 'string' || s.content.length < pattern.length) return undefined;
      lengthening = true;
    } else return undefined; // Strip, StripAccents, BertNormalizer, Precompiled, ...: may drop characters
  }
  return forms;
}

/** Pre-tokenizers that keep every character of the text. */
function keepsText(c: Config | null | undefined): boolean {
  if (!c) return true;
  switch (c.type) {
    case 'ByteLevel': case 'Metaspace': case 'Digits': return true;
    case 'Split': case 'Punctuation': return c.behavior !== 'Removed';
    case 'Sequence': return ((c.pretokenizers as Config[] | undefined) ?? []).every(keepsText);
    default: return false; // Whitespace, WhitespaceSplit, BertPreTokenizer, ...: drop whitespace
  }
}

function compute(tokenizer: TextTokenizer): PromptCharBound | undefined {
  if (!(tokenizer instanceof HfTokenizer)) return undefined;
  // The tokenizer.json it was built from, and tokenizer_config.json's XLM-style options that tokenizers.js applies.
  const json = tokenizer.files.tokenizerJson as { normalizer?: Config | null; pre_tokenizer?: Config | null; model?: Config } | null;
  const { remove_space: removeSpace, do_lowercase_and_remove_accent: lowercase } = tokenizer.files.config;
  if (!json || json.model?.type !== 'BPE' || (json.model.fuse_unk && !json.model.byte_fallback) || removeSpace || lowercase) return undefined;
  if ([...tokenizer.tokenizer.get_added_tokens_decoder().values()].some((a) => a.lstrip || a.rstrip)) return undefined;
  if (!keepsText(json.pre_tokenizer)) return undefined;
  const forms = normalizerForms(json.normalizer);
  if (!forms) return undefined;
  let longest = 2; // an unknown character (one <unk>) may be a surrogate pair
  for (const token of tokenizer.tokenizer.get_vocab(true).keys()) longest = Math.max(longest, token.length);
  return {
    maxTokenChars: longest,
    normalizedLength: (text) => forms.reduce((s, f) => s.normalize(f), text).length,
  };
}

const cache = new WeakMap<TextTokenizer, PromptCharBound | null>();

/** The bound for a tokenizer, computed once (undefined where its pipeline allows none). */
export function promptCharBound(tokenizer: TextTokenizer): PromptCharBound | undefined {
  if (!cache.has(tokenizer)) cache.set(tokenizer, compute(tokenizer) ?? null);
  return cache.get(tokenizer) ?? undefined;
}
