/**
 * Rebuilds a Hugging Face tokenizer.json from a GGUF's `tokenizer.ggml.*` metadata (byte-level BPE, the
 * "gpt2" model llama.cpp uses for Qwen2 and most recent models), so a lone .gguf file can be used.
 */
import type { GgufValue } from '../io/gguf.ts';
import type { TokenizerFiles } from './types.ts';
import { bosEosProcessor } from './hf.ts';
import { shown } from '../show.ts';

/**
 * Pre-tokenizer split patterns by llama.cpp's `tokenizer.ggml.pre` name (its aliases in PRE_ALIASES), applied in turn,
 * each to the pieces the one before left. "default" is what llama.cpp falls back to for a GGUF that names no
 * pre-tokenizer (older conversions): punctuation runs first, then GPT-2's pattern, then digit runs in threes.
 */
const SPLIT_PATTERNS: Record<string, string[]> = {
  qwen2: ["(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
  'llama-bpe': ["(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
  default: ['[\\p{P}\\$\\+<=>\\^~\\|]+', "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", '\\p{N}+', '[0-9][0-9][0-9]'],
};
/** Names llama.cpp gives the same pre-tokenizer as another (DeepSeek-R1-Distill-Qwen: Qwen2's; Llama 3's). */
const PRE_ALIASES: Record<string, string> = { 'deepseek-r1-qwen': 'qwen2', llama3: 'llama-bpe', 'llama-v3': 'llama-bpe' };
const CONTROL = 3, USER_DEFINED = 4, UNUSED = 5;

/**
 * A GGUF's chat template (tokenizer.chat_template) as tokenizer_config.json's chat_template, with the "tool_use" one
 * (llama.cpp's tokenizer.chat_template.tool_use) as transformers lists named templates; undefined without one.
 */
export function ggufChatTemplate(md: Record<string, GgufValue>): string | { name: string; template: string }[] | undefined {
  const chat = md['tokenizer.chat_template'], toolUse = md['tokenizer.chat_template.tool_use'];
  if (typeof chat !== 'string') return undefined;
  return typeof toolUse === 'string' ? [{ name: 'default', template: chat }, { name: 'tool_use', template: toolUse }] : chat;
}

export function tokenizerFromGguf(md: Record<string, GgufValue>, file: string): TokenizerFiles {
  const model = md['tokenizer.ggml.model'], named = String(md['tokenizer.ggml.pre'] ?? 'default'), pre = PRE_ALIASES[named] ?? named;
  if (model !== 'gpt2') throw new Error(`tokenizer: ${file} has tokenizer.ggml.model = ${shown(model)}; only "gpt2" (byte-level BPE) can be rebuilt from GGUF metadata — put the model's tokenizer.json beside the file`);
  const patterns = SPLIT_PATTERNS[pre];
  if (!patterns) throw new Error(`tokenizer: ${file} has tokenizer.ggml.pre = ${shown(named)}, which is not supported (${[...Object.keys(SPLIT_PATTERNS), ...Object.keys(PRE_ALIASES)].join(', ')}) — put the model's tokenizer.json beside the file`);
  // The lists as llama.cpp writes them: refused by key when they are of another type. Without its merges a BPE
  // tokenizer would split every text into single bytes, silently (llama.cpp refuses such a file too).
  const list = <T>(key: string, ok: (x: unknown) => boolean, want: string, fallback?: T[]): T[] => {
    const v = md[key] ?? fallback;
    if (v === undefined) throw new Error(`tokenizer: ${file} has no ${key} in its metadata, which rebuilding its tokenizer needs — put the model's tokenizer.json beside the file`);
    const bad = Array.isArray(v) ? v.findIndex((x) => !ok(x)) : -1;
    if (!Array.isArray(v) || bad >= 0) throw new Error(`tokenizer: ${file} metadata "${key}" must be an array of ${want}, got ${Array.isArray(v) ? `${shown(v[bad])} at index ${bad}` : shown(v)}`);
    return v as T[];
  };
  const tokens = list<string>('tokenizer.ggml.tokens', (x) => typeof x === 'string', 'strings');
  const types = list<number>('tokenizer.ggml.token_type', Number.isInteger, 'integers', []);
  const merges = list<string>('tokenizer.ggml.merges', (x) => typeof x === 'string' && x.includes(' '), 'strings "left right"');
  if (!tokens.length) throw new Error(`tokenizer: ${file} has no tokenizer.ggml.tokens`);
  // A template stored as another type is a corrupt file, not a model without one (it was read as none).
  for (const key of ['tokenizer.chat_template', 'tokenizer.chat_template.tool_use']) {
    if (md[key] !== undefined && typeof md[key] !== 'string') throw new Error(`tokenizer: ${file} metadata "${key}" must be a string (a Jinja template), got ${shown(md[key])}`);
  }
  // A type per token (the file is corrupt otherwise: the tokens past the list would lose theirs, control tokens read as text).
  if (md['tokenizer.ggml.token_type'] !== undefined && types.length !== tokens.length) throw new Error(`tokenizer: ${file} metadata "tokenizer.ggml.token_type" has ${types.length} entries for ${tokens.length} tokens (tokenizer.ggml.tokens): the file is corrupt — put the model's tokenizer.json beside it`);
  const vocab: Record<string, number> = Object.create(null), added: unknown[] = []; // no prototype: a token may be "__proto__"
  tokens.forEach((t, id) => {
    if (types[id] === UNUSED) return; // a padding row of the embedding ([PAD151700]): no text, as in the model's tokenizer.json
    vocab[t] = id;
    if (types[id] === CONTROL || types[id] === USER_DEFINED) {
      added.push({ id, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: types[id] === CONTROL });
    }
  });
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };
  // (A BOS not added may name no token, as llama.cpp lets it; an EOS must: generation would never end by itself.)
  const name = (k: string, needed: boolean) => {
    if (typeof md[k] !== 'number') return undefined;
    const id = md[k] as number;
    if (needed && !(Number.isInteger(id) && id >= 0 && id < tokens.length)) throw new Error(`tokenizer: ${file} metadata "${k}" is ${id}, not a token of tokenizer.ggml.tokens (0 to ${tokens.length - 1})`);
    return tokens[id];
  };
  // add_bos_token (Llama 3): encoding with special tokens starts with BOS, as llama.cpp and the model's own
  // tokenizer.json (a TemplateProcessing step) do. Where the file does not say, llama.cpp adds it for Llama 3's
  // pre-tokenizer only. add_eos_token: it ends with EOS.
  const addBos = md['tokenizer.ggml.add_bos_token'] ?? pre === 'llama-bpe';
  const bosText = name('tokenizer.ggml.bos_token_id', addBos === true), eosText = name('tokenizer.ggml.eos_token_id', true);
  const token = (text: string | undefined, add: boolean, key: string) => {
    if (!add || text === undefined) return undefined;
    if (!Object.hasOwn(vocab, text)) throw new Error(`tokenizer: ${file} metadata "${key}" is ${md[key]}, a token the vocabulary leaves out (its tokenizer.ggml.token_type says unused), yet encoding is to add it`);
    return { text, id: vocab[text] };
  };
  const bos = token(bosText, addBos === true, 'tokenizer.ggml.bos_token_id'), eos = token(eosText, md['tokenizer.ggml.add_eos_token'] === true, 'tokenizer.ggml.eos_token_id');
  const post = !bos && !eos ? byteLevel : { type: 'Sequence', processors: [byteLevel, bosEosProcessor(bos, eos)] };
  const chatTemplate = ggufChatTemplate(md);
  return {
    name: file,
    tokenizerJson: {
      version: '1.0', truncation: null, padding: null, added_tokens: added,
      normalizer: pre === 'qwen2' ? { type: 'NFC' } : null,
      pre_tokenizer: { type: 'Sequence', pretokenizers: [...patterns.map((p) => ({ type: 'Split', pattern: { Regex: p }, behavior: 'Isolated', invert: false })), byteLevel] },
      post_processor: post, decoder: byteLevel,
      model: {
        // Llama 3's tokenizer.json takes whole-word vocabulary entries before merges, as llama.cpp does for it.
        type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, ignore_merges: pre === 'llama-bpe',
        vocab, merges: merges.map((m) => m.split(' ')),
      },
    },
    tokenizerConfig: {
      // Qwen's tokenizer_config.json (and llama.cpp for its pre-tokenizer) keep " ." and " ,": no clean-up.
      clean_up_tokenization_spaces: pre !== 'qwen2',
      // chat templates read bos_token whether or not encoding adds it (as llama.cpp and transformers pass it)
      ...(bosText !== undefined ? { bos_token: bosText } : {}),
      ...(eosText !== undefined ? { eos_token: eosText } : {}),
      ...(chatTemplate !== undefined ? { chat_template: chatTemplate } : {}),
    },
  };
}
