/**
 * Builds models/default/tokenizer.json + tokenizer_config.json: a word-level tokenizer over the closed
 * vocabulary of the synthetic world (src/tasks/synthetic.ts).
 *
 *   node --import tsx src/tasks/vocab.ts [outDir]     (default models/default)
 *
 * Layout, chosen so @huggingface/tokenizers (and Rust tokenizers) run it with stock components:
 * - normalizer Replace " " -> "▁", so a word carries its leading space ("▁apples") and decoding is exact;
 * - pre-tokenizer Split (isolated) on PRETOKENIZE: words, single punctuation marks (each with an optional "▁"),
 *   EVERY DIGIT on its own (numbers read digit by digit, so arithmetic generalises), "\n", a lone "▁";
 * - model BPE with no merges and ignore_merges: a piece in the vocab is one token (word level); anything else
 *   falls back to single characters (letters, digits and ASCII punctuation are all in the vocab), else <unk>;
 * - decoder Replace "▁" -> " " then Fuse: decode(encode(text)) === text.
 */
import { isMainModule } from '../main-module.ts';
import { writeJson } from '../io/safetensors.ts';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DIFFICULTY, LEXICON_SOURCES, Rng, SYSTEM_PROMPT, formatAnswer, formatThinking, generateItem, type Mix,
} from './synthetic.ts';
import { budgetSystemLine } from '../reason/budget.ts';

const SPACE = '\u2581';
const PRETOKENIZE = `####|${SPACE}?[A-Za-z]+|${SPACE}?[^${SPACE}A-Za-z0-9\\n]|[0-9]|${SPACE}|\\n`;
export const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<think>', '</think>', '<unk>'] as const;
/** Qwen3 marks the think tags non-special, so skip_special_tokens keeps them in decoded text. */
const NOT_SPECIAL = new Set(['<think>', '</think>']);

/**
 * ChatML as Qwen2 writes it (default system prompt when none is given), plus Qwen3's enable_thinking=false
 * switch, which pre-fills an empty think block so the model answers directly.
 */
const CHAT_TEMPLATE =
  "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\n" + SYSTEM_PROMPT + "<|im_end|>\\n' }}{%- endif %}" +
  "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}" +
  "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}";

/** What the tokenizer's normalizer + pre-tokenizer do, in plain JS (added tokens must be split off first). */
export function pretokenize(text: string): string[] {
  return text.replaceAll(' ', SPACE).match(new RegExp(PRETOKENIZE, 'gu')) ?? [];
}

/** Texts covering every kind, difficulty, template and trace style of the generator. */
function sampleCorpus(perCategory = 4000): string[] {
  const texts: string[] = [SYSTEM_PROMPT, 'system\nuser\nassistant\n', budgetSystemLine(64)];
  const mixes: Mix[] = [...Object.keys(DIFFICULTY).map((d) => ({ [d]: 1 })), { chat: 1 }];
  mixes.forEach((mix, m) => {
    for (let i = 0; i < perCategory; i++) {
      const item = generateItem(0x5eed + m, i, mix), rng = new Rng(i);
      texts.push(item.question, formatAnswer(item), formatThinking(item, 'concise', rng), formatThinking(item, 'verbose', rng));
    }
  });
  return texts;
}

function lexiconWords(): Set<string> {
  const words = new Set<string>();
  const walk = (x: unknown): void => {
    if (typeof x === 'string') for (const w of x.replace(/\{\w+\}/g, ' ').match(/[A-Za-z]+/g) ?? []) words.add(w);
    else if (Array.isArray(x)) x.forEach(walk);
    else if (x && typeof x === 'object') Object.values(x).forEach(walk);
  };
  walk(LEXICON_SOURCES);
  return words;
}

/** The ordered vocabulary: special tokens, single characters (the fallback), then multi-character pieces. */
function buildVocab(corpus = sampleCorpus()): string[] {
  const chars = [SPACE, '\n', '####'];
  for (let c = 33; c < 127; c++) chars.push(String.fromCharCode(c)); // printable ASCII: digits, letters, punctuation
  const pieces = new Set<string>();
  for (const t of corpus) for (const p of pretokenize(t)) pieces.add(p);
  // mid-sentence form of every fixed lower-case word, even if the sample missed it; capitalised and
  // line-initial forms come from the sample (adding them all would double the vocab with unused tokens)
  for (const w of lexiconWords()) if (w.length > 1 && /^[a-z]/.test(w)) pieces.add(SPACE + w);
  const base = new Set<string>([...SPECIAL_TOKENS, ...chars]);
  // plain code-unit order (not localeCompare) so the ids are the same on every machine
  return [...base, ...[...pieces].filter((p) => !base.has(p)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))];
}

export function buildTokenizerFiles(vocab = buildVocab()) {
  const ids = Object.fromEntries(vocab.map((t, i) => [t, i]));
  const added = SPECIAL_TOKENS.map((t) => ({
    id: ids[t], content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: !NOT_SPECIAL.has(t),
  }));
  const tokenizerJson = {
    version: '1.0', truncation: null, padding: null, added_tokens: added,
    normalizer: { type: 'Replace', pattern: { String: ' ' }, content: SPACE },
    pre_tokenizer: { type: 'Split', pattern: { Regex: PRETOKENIZE }, behavior: 'Isolated', invert: false },
    post_processor: null,
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: SPACE }, content: ' ' }, { type: 'Fuse' }] },
    model: {
      type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab: ids, merges: [],
    },
  };
  const tokenizerConfig = {
    add_bos_token: false, add_prefix_space: false,
    added_tokens_decoder: Object.fromEntries(added.map(({ id, ...t }) => [String(id), t])),
    additional_special_tokens: ['<|im_start|>', '<|im_end|>'],
    bos_token: null, eos_token: '<|im_end|>', pad_token: '<|endoftext|>', unk_token: '<unk>',
    chat_template: CHAT_TEMPLATE, clean_up_tokenization_spaces: false, model_max_length: 2048,
    split_special_tokens: false, tokenizer_class: 'PreTrainedTokenizerFast',
  };
  return { tokenizerJson, tokenizerConfig };
}

if (isMainModule(import.meta.url)) {
  const out = path.resolve(process.argv[2] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '../../models/default'));
  const { tokenizerJson, tokenizerConfig } = buildTokenizerFiles();
  writeJson(path.join(out, 'tokenizer.json'), tokenizerJson);
  writeJson(path.join(out, 'tokenizer_config.json'), tokenizerConfig);
  console.log(`wrote ${out}/tokenizer.json (${Object.keys(tokenizerJson.model.vocab).length} tokens) and tokenizer_config.json`);
}
