import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import type { ChatMessage, TextTokenizer, TokenizerFiles } from './types.ts';
import { commitAll, stagedWrite, writeAll } from '../io/safetensors.ts';
import { shown } from '../show.ts';
import { inexactInteger, markedNumbers, markedValue, pythonNumbers, toolsGiven } from './tool-calls.ts';
import { readJsonFile, readJsonObject, readTextFile } from '../io/jsonl.ts';

/** Ids from the model's config.json / GGUF metadata, merged with the tokenizer's own. */
export interface LoadTokenizerOptions { bosTokenId?: number; eosTokenIds?: readonly number[] }

/**
 * Loads a Hugging Face tokenizer from a model folder (see readTokenizerFolder) or from parsed files.
 */
export function loadTokenizer(src: string | TokenizerFiles, opts: LoadTokenizerOptions = {}): HfTokenizer {
  if (typeof src === 'string') return folderTokenizer(src, readTokenizerFolder(src), opts);
  const name = src.name ?? 'in-memory tokenizer';
  return tokenizerOf(src, name, name, opts);
}

/** loadTokenizer(dir) from the files readTokenizerFolder(dir) read: a caller that keeps them reads the folder once. */
export function folderTokenizer(dir: string, f: TokenizerFiles, opts: LoadTokenizerOptions = {}): HfTokenizer {
  return tokenizerOf(f, dir, path.join(dir, 'tokenizer.json'), opts);
}

/** The tokenizer of these files: `name` says it in messages, `jsonName` its tokenizer.json. */
function tokenizerOf(f: TokenizerFiles, name: string, jsonName: string, opts: LoadTokenizerOptions): HfTokenizer {
  const config = f.tokenizerConfig ?? {};
  return new HfTokenizer(build(f.tokenizerJson, config, jsonName), { tokenizerJson: f.tokenizerJson, config, chatTemplateFile: f.chatTemplateFile }, name, f.chatTemplate, opts);
}

/**
 * Writes tokenizer files into a model folder (readTokenizerFolder's inverse), each atomically; a file these files
 * lack (tokenizer_config.json, chat_template.jinja) is removed, so nothing of an earlier model's stays.
 */
export function writeTokenizerFiles(dir: string, t: TokenizerFiles): void {
  const staged = stageTokenizerFiles(dir, t);
  commitAll(staged.writes);
  staged.lacking.forEach((f) => rmSync(f, { force: true }));
}

/**
 * The tokenizer files staged under temporary names (commit renames each into place, abort drops it) with their
 * names, and the files of `dir` these lack (tokenizer_config.json, chat_template.jinja), for the caller to remove or keep.
 */
export function stageTokenizerFiles(dir: string, t: TokenizerFiles): { writes: { commit(): void; abort(): void }[]; written: string[]; lacking: string[] } {
  const file = (f: string) => path.join(dir, f), text = (s: string) => (fd: number) => writeAll(fd, Buffer.from(s));
  const json = (v: unknown) => text(JSON.stringify(v, null, 2) + '\n');
  const parts: [string, ((fd: number) => void) | undefined][] = [
    ['tokenizer.json', json(t.tokenizerJson)], ['tokenizer_config.json', t.tokenizerConfig ? json(t.tokenizerConfig) : undefined],
    ['chat_template.jinja', t.chatTemplate !== undefined ? text(t.chatTemplate) : undefined],
  ];
  const writes: { commit(): void; abort(): void }[] = [];
  try {
    for (const [f, write] of parts) if (write) writes.push(stagedWrite(file(f), write));
  } catch (e) {
    writes.forEach((w) => w.abort());
    throw e;
  }
  return { writes, written: parts.filter(([, write]) => write).map(([f]) => f), lacking: parts.filter(([f, write]) => !write && existsSync(file(f))).map(([f]) => file(f)) };
}

const SPECIAL_TOKENS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'];

/** The chat_template.jinja beside a single-file model (.gguf, llama2.c .bin), when there is one. */
export function besideTemplateFile(modelFile: string): string | undefined {
  const file = path.join(path.dirname(path.resolve(modelFile)), 'chat_template.jinja');
  return existsSync(file) ? file : undefined;
}

/** The chat template a single-file model takes from a chat_template.jinja beside it, as TokenizerFiles fields. */
export function besideTemplate(modelFile: string): { chatTemplate?: string; chatTemplateFile?: string } {
  const file = besideTemplateFile(modelFile);
  return file ? { chatTemplate: readTemplateFile(file), chatTemplateFile: file } : {};
}

/** A chat_template.jinja, read as transformers reads it (Python's text mode): a file checked out with CRLF line ends renders the same. */
const readTemplateFile = (file: string): string => readTextFile(file, 'a chat template').replace(/\r\n?/g, '\n');

/**
 * A folder's tokenizer files: tokenizer.json; tokenizer_config.json, with the special tokens it lacks filled in
 * from special_tokens_map.json (older folders keep them only there); the chat template from chat_template.jinja,
 * else chat_template.json (a processor's file, which some folders alone carry), else tokenizer_config.json.
 */
export function readTokenizerFolder(dir: string): TokenizerFiles {
  const file = (f: string) => path.join(dir, f), has = (f: string) => existsSync(file(f));
  if (!has('tokenizer.json')) {
    // The "slow" tokenizer's files (a BPE's vocab.json + merges.txt, a SentencePiece tokenizer.model) are not read.
    const slow = ['vocab.json', 'merges.txt', 'tokenizer.model'].filter(has);
    const hint = slow.length ? `; the folder has ${slow.length > 2 ? `${slow.slice(0, -1).join(', ')} and ${slow.at(-1)}` : slow.join(' and ')}, the "slow" tokenizer's files, which edgereason does not read: transformers writes tokenizer.json from them (AutoTokenizer.from_pretrained(folder).save_pretrained(folder))` : '';
    throw new Error(`tokenizer: ${file('tokenizer.json')} not found${hint}`);
  }
  const config = has('tokenizer_config.json') ? readJsonObject(file('tokenizer_config.json'), 'tokenizer: ') : undefined;
  const map = has('special_tokens_map.json') ? readJsonObject(file('special_tokens_map.json'), 'tokenizer: ') : {};
  // (The map's list of additional special tokens too, where it is one: a template may read it.)
  const missing = [...SPECIAL_TOKENS, ...(Array.isArray(map.additional_special_tokens) ? ['additional_special_tokens'] : [])].filter((k) => map[k] !== undefined && config?.[k] === undefined);
  const merged = missing.length ? { ...config, ...Object.fromEntries(missing.map((k) => [k, map[k]])) } : config;
  const json = has('chat_template.json') ? readJsonObject(file('chat_template.json'), 'tokenizer: ') : undefined;
  const jinja = has('chat_template.jinja'), chatTemplate = jinja ? readTemplateFile(file('chat_template.jinja')) : pickTemplate(json?.chat_template, file('chat_template.json'));
  const chatTemplateFile = chatTemplate === undefined ? 'tokenizer_config.json' : jinja ? 'chat_template.jinja' : 'chat_template.json';
  return { tokenizerJson: readJson(file('tokenizer.json')), ...(merged ? { tokenizerConfig: merged } : {}), ...(chatTemplate !== undefined ? { chatTemplate } : {}), chatTemplateFile };
}

const readJson = (file: string): unknown => readJsonFile(file, 'tokenizer: ');

function build(json: unknown, config: Record<string, unknown>, name: string): Tokenizer {
  const j = json as { model?: { vocab?: Record<string, number> }; added_tokens?: { id: number; content: string }[] };
  if (!j || typeof j !== 'object' || !j.model) throw new Error(`tokenizer: ${name} is not a tokenizer.json (no "model" section)`);
  // transformers' Llama and Gemma fast tokenizers rebuild the post-processor from add_bos_token (default true) and
  // add_eos_token (default false) whatever tokenizer.json says: DeepSeek-R1-Distill-Qwen's file has Qwen's ByteLevel
  // step, and its raw prompts start with BOS all the same.
  const post = BOS_EOS_CLASSES.includes(config.tokenizer_class as string) ? (() => {
    const id = (t: string | undefined) => (t === undefined ? undefined : j.added_tokens?.find((a) => a.content === t)?.id ?? j.model!.vocab?.[t]);
    const pick = (k: string, flag: unknown) => {
      const text = tokenString(config[k]), tokenId = flag ? id(text) : undefined;
      return tokenId !== undefined ? { text: text!, id: tokenId } : undefined;
    };
    return { post_processor: bosEosProcessor(pick('bos_token', config.add_bos_token ?? true), pick('eos_token', config.add_eos_token ?? false)) };
  })() : {};
  // transformers' default for clean_up_tokenization_spaces is false since 4.45 (the tokenizers library's is true)
  checkSteps(j, name);
  const extra = config.additional_special_tokens; // the library walks it: anything else fails there, blamed on tokenizer.json
  if (extra !== undefined && !Array.isArray(extra)) throw new Error(`tokenizer: ${path.join(path.dirname(name), 'tokenizer_config.json')} field "additional_special_tokens" must be a list of tokens, got ${shown(extra)}`);
  checkTokenIds(j, name);
  let tokenizer: Tokenizer, ids: unknown;
  try {
    tokenizer = new Tokenizer({ added_tokens: [], ...j, ...post }, { clean_up_tokenization_spaces: false, ...config });
    // A file the library takes but cannot use (a post-processor or pre-tokenizer missing its fields) fails or drops
    // the text only when encoding: found now, not at the first request.
    ids = tokenizer.encode(PROBE, { add_special_tokens: false }).ids;
  } catch (e) { throw new Error(`tokenizer: ${name} could not be loaded: ${(e as Error).message}`); }
  if (!Array.isArray(ids) || !ids.every((id) => Number.isInteger(id) && id >= 0)) {
    throw new Error(`tokenizer: ${name} encodes ${JSON.stringify(PROBE)} to ${shown(ids)}, not to token ids: the file is broken`);
  }
  return tokenizer;
}

/** The list a "Sequence" step of each stage holds its steps in. */
const STEPS = { normalizer: ['normalizer', 'normalizers'], pre_tokenizer: ['pre-tokenizer', 'pretokenizers'], decoder: ['decoder', 'decoders'] } as const;

/**
 * Steps the library reads only when it runs them, checked at load: a Split or Replace step without its pattern
 * drops text (a Split all of it, with a console line) or fails at the first request, and a Sequence needs a list.
 */
function checkSteps(j: Record<string, unknown>, name: string): void {
  for (const [field, [what, list]] of Object.entries(STEPS)) {
    const walk = (step: unknown): void => {
      if (!step || typeof step !== 'object') return;
      const s = step as Record<string, unknown>, pattern = s.pattern as Record<string, unknown> | undefined;
      if (s.type === 'Sequence') {
        if (!Array.isArray(s[list])) throw new Error(`tokenizer: ${name}: a "Sequence" ${what}'s "${list}" must be a list of steps, got ${shown(s[list])}`);
        s[list].forEach(walk);
      } else if (s.type === 'Split' || s.type === 'Replace') {
        if (pattern === undefined || pattern === null) throw new Error(`tokenizer: ${name}: a "${s.type}" ${what} has no "pattern" (${shown(step)})`);
        if (typeof pattern !== 'object' || !(typeof pattern.String === 'string' || typeof pattern.Regex === 'string')) throw new Error(`tokenizer: ${name}: a "${s.type}" ${what}'s "pattern" must be {"String": text} or {"Regex": text}, got ${shown(pattern)}`);
        if (s.type === 'Replace' && typeof s.content !== 'string') throw new Error(`tokenizer: ${name}: a "Replace" ${what}'s "content" must be text, got ${shown(s.content)}`);
      }
    };
    walk(j[field]);
  }
}

/** Text every tokenizer must encode (to integer ids, without the library failing). */
const PROBE = 'Hello, world 42';

const BOS_EOS_CLASSES = ['LlamaTokenizerFast', 'CodeLlamaTokenizerFast', 'GemmaTokenizerFast', 'LlamaTokenizer', 'GemmaTokenizer'];

/** A post-processor that puts BOS before and EOS after each sequence (either may be absent), as transformers writes it. */
export function bosEosProcessor(bos?: { text: string; id: number }, eos?: { text: string; id: number }): Record<string, unknown> {
  const wrap = (seq: string, type: number) => [
    ...(bos ? [{ SpecialToken: { id: bos.text, type_id: type } }] : []), { Sequence: { id: seq, type_id: type } },
    ...(eos ? [{ SpecialToken: { id: eos.text, type_id: type } }] : []),
  ];
  return {
    type: 'TemplateProcessing', single: wrap('A', 0), pair: [...wrap('A', 0), ...wrap('B', 1)],
    special_tokens: Object.fromEntries([bos, eos].filter((t) => t !== undefined).map((t) => [t.text, { id: t.text, ids: [t.id], tokens: [t.text] }])),
  };
}

/** tokenizer_config.json writes special tokens as a string or as an AddedToken object. */
function tokenString(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
}

/**
 * chat_template is a string, or transformers' list of named templates ({name, template}) where "default" is the chat
 * one (and "tool_use", when there is one, renders requests with tools: see HfTokenizer.toolUseTemplate); anything
 * else is an error naming `file`, as a list without "default" is (transformers refuses it when applied).
 */
function pickTemplate(t: unknown, file: string): string | undefined {
  if (t === undefined || t === null || typeof t === 'string') return t ?? undefined;
  const named = Array.isArray(t) && t.every((x) => x && typeof x === 'object' && typeof x.name === 'string' && typeof x.template === 'string');
  if (!named) throw new Error(`tokenizer: ${file} field "chat_template" must be a string or a list of {name, template}, got ${shown(t)}`);
  const chat = (t as { name: string; template: string }[]).find((x) => x.name === 'default');
  if (!chat) throw new Error(`tokenizer: ${file} field "chat_template" ${t.length ? `lists templates named ${t.map((x) => JSON.stringify(x.name)).join(', ')}, none of them "default" (the chat template)` : 'is an empty list: give the chat template (a string, or a {name: "default", template} entry), or leave the field out'}`);
  return chat.template;
}

/** An added token as tokenizer.json lists it. */
interface AddedSpecial { id: number; content: string; special?: boolean; lstrip?: boolean; rstrip?: boolean; normalized?: boolean }

export class HfTokenizer implements TextTokenizer {
  readonly vocabSize: number;
  readonly bosTokenId?: number;
  readonly eosTokenIds: number[];
  readonly specialIds: ReadonlySet<number>;
  /** The variables transformers gives every template beside the messages: special tokens, tools and documents. */
  private readonly specialTokens: Record<string, unknown>;
  private readonly templateSource?: string;
  get chatTemplate(): string | undefined { return this.templateSource; }
  private template?: Template;
  private templateError?: string;
  /**
   * The template named "tool_use" in tokenizer_config.json's list of templates (Hermes 2 Pro and Hermes 3 ship one
   * beside a "default" that takes no tools): as transformers does, it renders any call given tools. Not when the
   * chat template comes from a file of its own (chat_template.jinja, or one beside a GGUF), which replaces the list.
   */
  readonly toolUseTemplate?: string;
  private toolUse?: Template;
  private toolUseError?: string;

  /** `files`: the tokenizer.json and tokenizer_config.json contents `tokenizer` was built from. */
  constructor(readonly tokenizer: Tokenizer, readonly files: { tokenizerJson: unknown; config: Record<string, unknown>; chatTemplateFile?: string }, readonly name: string,
    chatTemplate: string | undefined, opts: LoadTokenizerOptions = {}) {
    const config = files.config;
    this.vocabSize = 1 + [...tokenizer.get_vocab(true).values()].reduce((a, b) => Math.max(a, b), -1);
    if (!this.vocabSize) throw new Error(`tokenizer: ${name} has no vocabulary (its "model.vocab" holds no tokens)`);
    this.specialIds = new Set([...tokenizer.get_added_tokens_decoder()].filter(([, t]) => t.special).map(([id]) => id));
    const special: Record<string, string> = {};
    for (const k of SPECIAL_TOKENS) {
      const s = tokenString(config[k]);
      if (s !== undefined) special[k] = s;
    }
    // tools and documents are none, not undefined ("{% if tools is not none %}" renders no tool section)
    const extra = Array.isArray(config.additional_special_tokens) ? config.additional_special_tokens.map(tokenString).filter((t) => t !== undefined) : undefined;
    this.specialTokens = { tools: null, documents: null, ...(extra ? { additional_special_tokens: extra } : {}), ...special };
    const id = (k: string) => special[k] === undefined ? undefined : tokenizer.token_to_id(special[k]);
    // One the vocabulary lacks would leave generation nothing to stop on, and be spelt out in pieces where a template writes it.
    for (const k of ['bos_token', 'eos_token']) {
      if (special[k] !== undefined && id(k) == null) throw new Error(`tokenizer: ${name}: its ${k} ${JSON.stringify(special[k])} (from tokenizer_config.json or special_tokens_map.json) is not a token of tokenizer.json's vocabulary`);
    }
    this.bosTokenId = id('bos_token') ?? opts.bosTokenId;
    const eos = id('eos_token');
    this.eosTokenIds = [...new Set([...(eos === undefined ? [] : [eos]), ...(opts.eosTokenIds ?? [])])];
    // Parsed now, and a template that is not one (or does not parse) is reported by name at the first chat request
    // (raw prompts, training on prompt/completion data and convert do not need it).
    try { this.templateSource = chatTemplate ?? pickTemplate(config.chat_template, `${this.name} (tokenizer_config.json)`); } catch (e) { this.templateError = (e as Error).message; }
    if (this.templateSource !== undefined) {
      // raise_exception is how templates refuse a conversation (a system role, alternation): the caller's messages are
      // at fault, where any other failure is the template's. The interpreter's own raise_exception throws a plain
      // Error like every other failure, so calls to it go to ours (a global cannot be redefined).
      // Where it came from, for the messages (a folder's file; a GGUF's metadata or an in-memory one: the name alone).
      const from = files.chatTemplateFile ? ` (${files.chatTemplateFile})` : '';
      if (!this.templateSource.trim()) this.templateError = `tokenizer: the chat template of ${name}${from} is empty`;
      // range() likewise goes to one that refuses a length no chat template needs (range(1e9) ended the process).
      else try { this.template = compile(this.templateSource); } catch (e) {
        this.templateError = `tokenizer: the chat template of ${name}${from} does not parse: ${unbalancedBlock(this.templateSource) ?? (e as Error).message}`;
      }
    }
    const named = chatTemplate === undefined && Array.isArray(config.chat_template) ? (config.chat_template as { name?: unknown; template?: unknown }[]).find((t) => t?.name === 'tool_use')?.template : undefined;
    if (typeof named === 'string') {
      this.toolUseTemplate = named;
      // A broken one fails the calls that would use it (given tools), as in transformers, not every chat.
      try { this.toolUse = compile(named); } catch (e) {
        this.toolUseError = `tokenizer: the "tool_use" chat template of ${name} (tokenizer_config.json) does not parse: ${unbalancedBlock(named) ?? (e as Error).message}`;
      }
    }
  }

  /** addSpecialTokens (default true) applies the tokenizer's post-processor, e.g. Llama's BOS; Qwen adds nothing. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    if (typeof text !== 'string') throw new Error(`tokenizer: encode takes a string, got ${shown(text)}`); // 5 or null encoded as nothing
    const ids: number[] = this.tokenizer.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
    // tokenizers.js runs Prepend("▁") even on empty input (Rust skips it): keep only the post-processor's tokens
    return text === '' ? ids.filter((i) => this.specialIds.has(i)) : ids;
  }

  /**
   * The special tokens by their text, and a pattern finding them (the longest at a place first, as the library's
   * splitter prefers them; those it matches after normalizing are matched in the raw text here: encodeChat checks the
   * result against the whole encoding).
   */
  private specialList?: { byText: Map<string, AddedSpecial>; pattern?: RegExp };
  private specials() {
    if (!this.specialList) {
      const tokens = ((this.files.tokenizerJson as { added_tokens?: AddedSpecial[] }).added_tokens ?? []).filter((t) => t.special && t.content).sort((a, b) => b.content.length - a.content.length);
      const byText = new Map<string, AddedSpecial>();
      for (const t of tokens) if (!byText.has(t.content)) byText.set(t.content, t);
      this.specialList = { byText, ...(tokens.length ? { pattern: new RegExp(tokens.map((t) => t.content.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g') } : {}) };
    }
    return this.specialList;
  }

  /** The special token `text` writes first ("<|im_end|>"), or undefined. */
  specialIn(text: string): string | undefined {
    const { pattern } = this.specials();
    if (!pattern) return undefined;
    pattern.lastIndex = 0;
    return pattern.exec(text)?.[0];
  }

  /**
   * The tokenizer without its special tokens (its other added tokens kept, as transformers' split_special_tokens keeps
   * them), plus a token of its own that starts a section (encodeGuarded): made at the first call that needs it.
   */
  private plain?: { tokenizer: Tokenizer; section: string };
  private plainTokenizer() {
    if (!this.plain) {
      const j = this.files.tokenizerJson as { added_tokens?: AddedSpecial[] };
      // The section token is no text a message could write (random).
      const added = j.added_tokens ?? [], section = `\uE000${randomBytes(12).toString('hex')}\uE001`, id = 1 + Math.max(this.vocabSize - 1, ...added.map((t) => t.id));
      const kept = [...added.filter((t) => !t.special), { id, content: section, special: false, single_word: false, lstrip: false, rstrip: false, normalized: false }];
      this.plain = { tokenizer: new Tokenizer({ ...j, added_tokens: kept, post_processor: null }, { clean_up_tokenization_spaces: false, ...this.files.config, additional_special_tokens: [] }), section };
    }
    return this.plain;
  }

  encodeText(text: string): number[] {
    return this.plainTokenizer().tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  /**
   * `text` encoded as encode(text, { addSpecialTokens: false }) encodes it, except that a special token written
   * within one of the `guarded` ranges ([start, end) offsets: a chat message's text) stays text. The library splits a
   * text at its added tokens (the longest at each place, from the left) and encodes each section apart, the first
   * one as a text's start (a SentencePiece model's leading "▁"): so here, split at the special tokens outside the
   * ranges alone, each section encoded by the tokenizer without special tokens, after a section token of its own
   * where it is not the text's first.
   */
  encodeGuarded(text: string, guarded: readonly (readonly [number, number])[]): number[] {
    const { tokenizer, section } = this.plainTokenizer(), { byText, pattern } = this.specials();
    const inGuard = (from: number, to: number) => guarded.some(([a, b]) => from < b && to > a);
    const sections: (string | AddedSpecial)[] = [];
    let start = 0;
    if (pattern) pattern.lastIndex = 0;
    for (let m = pattern?.exec(text); m; m = pattern!.exec(text)) { // the next special token, the longest at its place
      const i = m.index, end = i + m[0].length;
      if (inGuard(i, end)) { pattern!.lastIndex = i + 1; continue; } // text: looked for again from the next character
      sections.push(text.slice(start, i), byText.get(m[0])!);
      start = end;
    }
    sections.push(text.slice(start));
    sections.forEach((s, i) => { // a special token's lstrip / rstrip trim the text beside it, as the library does
      if (typeof s === 'string') return;
      if (s.lstrip && i > 0) sections[i - 1] = (sections[i - 1] as string).trimEnd();
      if (s.rstrip && i < sections.length - 1) sections[i + 1] = (sections[i + 1] as string).trimStart();
    });
    return sections.flatMap((s, i) => {
      if (typeof s !== 'string') return [s.id];
      if (!s) return [];
      return i === 0 ? tokenizer.encode(s, { add_special_tokens: false }).ids : tokenizer.encode(section + s, { add_special_tokens: false }).ids.slice(1);
    });
  }

  /** Ids the tokenizer does not know (e.g. a model's padded vocab rows) are skipped, as Rust tokenizers does. */
  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean; cleanUp?: boolean } = {}): string {
    if (!Array.isArray(ids) && !ArrayBuffer.isView(ids)) throw new Error(`tokenizer: decode takes a list of token ids, got ${shown(ids)}`);
    // A typed array too, onnxruntime's int64 (BigInt64Array) among them.
    const list = Array.from(ids as ArrayLike<number | bigint>, (i) => (typeof i === 'bigint' ? Number(i) : i));
    const bad = list.findIndex((i) => !Number.isInteger(i) || i < 0); // -1, 1.5 or NaN decoded as nothing
    if (bad >= 0) throw new Error(`tokenizer: decode: ids[${bad}] must be a token id (an integer ≥ 0), got ${shown(list[bad])}`);
    const known = list.filter((i) => this.tokenizer.id_to_token(i) !== undefined);
    return known.length ? this.tokenizer.decode(known, { skip_special_tokens: opts.skipSpecialTokens ?? false, ...(opts.cleanUp !== undefined ? { clean_up_tokenization_spaces: opts.cleanUp } : {}) }) : '';
  }

  tokenToId(token: string): number | undefined { return this.tokenizer.token_to_id(token); }

  /** What the tokenizer.json's decoder is: byte-level, SentencePiece's ("▁" for a space), or other (tokenBytes; read at its first call). */
  private decoderKind?: 'byteLevel' | 'metaspace' | 'other';
  /**
   * The bytes a token stands for after other text: a byte-level BPE token (Qwen, Llama 3) may hold part of a
   * character, which its text alone shows as U+FFFD; a SentencePiece byte token ("<0xE2>") is that byte; another
   * SentencePiece piece its text with "▁" as a space (decoded alone, the decoder strips the space a text begins
   * with: "▁dog" would be "dog"); any other token its text's UTF-8.
   */
  tokenBytes(id: number): Uint8Array {
    const piece = this.tokenizer.id_to_token(id), utf8 = (text: string) => new Uint8Array(Buffer.from(text, 'utf8'));
    if (piece === undefined) return new Uint8Array();
    const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
    if (byte) return Uint8Array.of(parseInt(byte[1], 16));
    if (this.specialIds.has(id)) return utf8(this.decode([id]));
    if (!this.decoderKind) {
      const decoder = JSON.stringify((this.files.tokenizerJson as { decoder?: unknown }).decoder ?? null);
      this.decoderKind = decoder.includes('"ByteLevel"') ? 'byteLevel' : decoder.includes('"Metaspace"') || decoder.includes('{"String":"▁"}') ? 'metaspace' : 'other';
    }
    if (this.decoderKind === 'metaspace') return utf8(piece.replaceAll('▁', ' '));
    if (this.decoderKind === 'byteLevel') {
      const out: number[] = [];
      for (const ch of piece) { const b = BYTE_OF_CHAR.get(ch); if (b === undefined) return utf8(this.decode([id])); out.push(b); }
      return Uint8Array.from(out);
    }
    return utf8(this.decode([id]));
  }

  /**
   * Renders the chat template as transformers does: special tokens (bos_token, eos_token, ...), then `vars`
   * (e.g. { enable_thinking: false } for Qwen3), then messages and add_generation_prompt (default false).
   */
  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean; vars?: Record<string, unknown> } = {}): string {
    if (this.templateError) throw new ChatTemplateError(this.templateError, 'broken');
    if (this.templateSource === undefined) {
      throw new Error(`tokenizer: ${this.name} has no chat template (no chat_template.jinja, chat_template.json or chat_template in tokenizer_config.json; for a .gguf without one in its metadata, or a llama2.c .bin, a chat_template.jinja beside the file)`);
    }
    const raise = (message: unknown) => { throw new ChatTemplateError(`tokenizer: the chat template of ${this.name} refuses these messages: ${String(message)}`, 'refused'); };
    const withTools = toolsGiven(opts.vars?.tools) && this.toolUseTemplate !== undefined;
    if (withTools && this.toolUseError) throw new ChatTemplateError(this.toolUseError, 'broken');
    const render = (msgs: ChatMessage[], vars = opts.vars) => (withTools ? this.toolUse! : this.template!).render({ ...this.specialTokens, ...vars, [RAISE]: raise, [RANGE]: ranger(), [STRFTIME]: (format: string) => strftime(new Date(), format), ...STRIPS, messages: msgs, add_generation_prompt: opts.addGenerationPrompt ?? false });
    try {
      // Numbers of tool calls' arguments and of tools given as JSON text as Python prints them (20.0, not 20): given
      // to the template marked, unless it does more with them than print them (compares them, changes their text),
      // which gets them as numbers.
      const marked = markedNumbers(messages), tools = markedValue(opts.vars?.tools);
      if (marked || tools !== undefined) {
        let out: string | undefined;
        try { out = pythonNumbers(render(marked ?? messages, tools !== undefined ? { ...opts.vars, tools } : opts.vars)); } catch { /* rendered again below, with the numbers */ }
        if (out !== undefined) return out;
        const plain = render(messages); // (a refusal the marks did not cause is said as the template says it)
        const big = inexactInteger(messages);
        if (big !== undefined) throw new ChatTemplateError(`tokenizer: the chat template of ${this.name} does more with tool-call arguments than print them, and their integer ${big} would change as a number (beyond 2^53): send it as a string`, 'refused');
        return plain;
      }
      return render(messages);
    } catch (e) {
      if (e instanceof ChatTemplateError) throw e;
      throw new ChatTemplateError(`tokenizer: the chat template of ${this.name} failed: ${(e as Error).message}`, 'broken');
    }
  }
}

/** GPT-2's byte-level alphabet, inverted: the character a byte-level BPE vocabulary writes for each byte → that byte. */
const BYTE_OF_CHAR: ReadonlyMap<string, number> = (() => {
  const map = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    map.set(String.fromCodePoint(printable ? b : 256 + extra++), b);
  }
  return map;
})();

/** Tags that open a block closed by end<name> ({% set x %} … {% endset %} only without "="). */
const BLOCKS = ['for', 'if', 'macro', 'call', 'filter', 'generation', 'set'];

/**
 * A block tag left open or closed by the wrong end tag, said with its line: the interpreter reports these as
 * "Cannot read properties of undefined (reading 'type')" or "Unknown statement type: endif".
 */
function unbalancedBlock(source: string): string | undefined {
  const open: { name: string; line: number }[] = [], lineAt = (i: number) => source.slice(0, i).split('\n').length;
  for (const m of source.replace(/\{%-?\s*raw\s*-?%\}[\s\S]*?\{%-?\s*endraw\s*-?%\}|\{#[\s\S]*?#\}/g, (t) => t.replace(/[^\n]/g, ' ')).matchAll(/\{%[-+]?\s*(\w+)([\s\S]*?)[-+]?%\}/g)) {
    const [, word, rest] = m, line = lineAt(m.index);
    if (BLOCKS.includes(word) && !(word === 'set' && rest.includes('='))) open.push({ name: word, line });
    else if (word.startsWith('end') && BLOCKS.includes(word.slice(3))) {
      const top = open.pop();
      if (!top) return `{% ${word} %} on line ${line} closes no block`;
      if (top.name !== word.slice(3)) return `{% ${word} %} on line ${line} closes the {% ${top.name} %} of line ${top.line} (its {% end${top.name} %} is missing or misplaced)`;
    }
  }
  const last = open.pop();
  return last && `the {% ${last.name} %} on line ${last.line} is never closed (no {% end${last.name} %})`;
}

/** A chat template's source, parsed, with the calls edgereason answers itself renamed to its own. */
const compile = (source: string): Template => pythonStrips(new Template(renameCalls(source)));

/** The template with its raise_exception, range and strftime_now calls renamed to ours: in its tags, outside their strings (not its text or comments). */
const renameCalls = (source: string): string => source.replace(/\{#[\s\S]*?#\}|\{\{[\s\S]*?\}\}|\{%[\s\S]*?%\}/g, (tag) => (tag.startsWith('{#') ? tag
  : tag.split(/('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")/).map((part, i) => (i % 2 ? part
    : part.replace(/(?<![.\w])(raise_exception|range|strftime_now)(\s*\()/g, (_, name: keyof typeof RENAMED, call) => `${RENAMED[name]}${call}`))).join('')));

/**
 * Python's str.strip / lstrip / rstrip take the characters to strip ("\n" in Qwen3's template, which keeps the
 * indentation of a code answer after its thinking); @huggingface/jinja's ignore them and strip all whitespace. Their
 * calls with an argument are rewritten in the parsed template to calls of ours, `s.lstrip(c)` to `ours(s, c)`.
 */
function pythonStrips(t: Template): Template {
  type Node = { type?: unknown; callee?: Node; computed?: boolean; object?: Node; property?: Node; value?: unknown; args?: Node[] };
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) node.forEach(visit);
    else if (node instanceof Map) node.forEach((v, k) => { visit(k); visit(v); });
    else if (node && typeof node === 'object') {
      Object.values(node).forEach(visit);
      const n = node as Node, c = n.callee, name = c?.property?.value as string;
      if (n.type === 'CallExpression' && c?.type === 'MemberExpression' && !c.computed && c.property?.type === 'Identifier'
        && Object.hasOwn(STRIP_NAMES, name) && n.args?.length) {
        n.callee = { type: 'Identifier', value: STRIP_NAMES[name as keyof typeof STRIP_NAMES] };
        n.args = [c.object!, ...n.args];
      }
    }
  };
  visit(t.parsed);
  return t;
}

const STRIP_NAMES = { strip: '__edgereason_strip', lstrip: '__edgereason_lstrip', rstrip: '__edgereason_rstrip' } as const;
const pyStrip = (mode: keyof typeof STRIP_NAMES) => (s: unknown, chars: unknown): string => {
  if (typeof s !== 'string') throw new Error(`${mode}() is called on ${shown(s)}, not a string`);
  if (chars === null || chars === undefined) return mode === 'strip' ? s.trim() : mode === 'lstrip' ? s.trimStart() : s.trimEnd();
  if (typeof chars !== 'string') throw new Error(`${mode}() takes the characters to strip as a string, got ${shown(chars)}`);
  const set = new Set(chars), cs = Array.from(s);
  let a = 0, b = cs.length;
  if (mode !== 'rstrip') while (a < b && set.has(cs[a])) a++;
  if (mode !== 'lstrip') while (b > a && set.has(cs[b - 1])) b--;
  return cs.slice(a, b).join('');
};
const STRIPS = { [STRIP_NAMES.strip]: pyStrip('strip'), [STRIP_NAMES.lstrip]: pyStrip('lstrip'), [STRIP_NAMES.rstrip]: pyStrip('rstrip') };

/** What the templates' raise_exception, range and strftime_now calls are renamed to (see the constructor). */
const RAISE = '__edgereason_raise_exception', RANGE = '__edgereason_range', STRFTIME = '__edgereason_strftime_now';
const RENAMED = { raise_exception: RAISE, range: RANGE, strftime_now: STRFTIME };

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];

/**
 * Python's strftime as transformers' strftime_now calls it, in the C locale Python starts in: English day and month
 * names whatever the system's locale (Llama 3's templates print "Today Date: 26 Jul 2024"; @huggingface/jinja's own
 * names the month in the system's language and knows only %Y %m %d %b %B %H %M). Local time, as Python's.
 */
export function strftime(date: Date, format: string): string {
  const pad = (n: number, w = 2) => String(n).padStart(w, '0'), h = date.getHours();
  const dayOfYear = Math.round((new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime() - new Date(date.getFullYear(), 0, 1).getTime()) / 864e5) + 1;
  const off = -date.getTimezoneOffset();
  const f: Record<string, () => string> = {
    a: () => DAYS[date.getDay()].slice(0, 3), A: () => DAYS[date.getDay()], b: () => MONTHS[date.getMonth()].slice(0, 3), B: () => MONTHS[date.getMonth()],
    d: () => pad(date.getDate()), e: () => String(date.getDate()).padStart(2, ' '), m: () => pad(date.getMonth() + 1), y: () => pad(date.getFullYear() % 100),
    Y: () => String(date.getFullYear()), C: () => pad(Math.floor(date.getFullYear() / 100)), H: () => pad(h), I: () => pad(h % 12 || 12),
    k: () => String(h).padStart(2, ' '), l: () => String(h % 12 || 12).padStart(2, ' '), p: () => (h < 12 ? 'AM' : 'PM'), M: () => pad(date.getMinutes()),
    S: () => pad(date.getSeconds()), j: () => pad(dayOfYear, 3), w: () => String(date.getDay()), u: () => String(date.getDay() || 7),
    s: () => String(Math.floor(date.getTime() / 1000)), z: () => `${off < 0 ? '-' : '+'}${pad(Math.floor(Math.abs(off) / 60))}${pad(Math.abs(off) % 60)}`,
    n: () => '\n', t: () => '\t', '%': () => '%',
  };
  // The C locale's compound forms.
  const compound: Record<string, string> = { D: '%m/%d/%y', F: '%Y-%m-%d', T: '%H:%M:%S', R: '%H:%M', h: '%b', c: '%a %b %e %H:%M:%S %Y', x: '%m/%d/%y', X: '%H:%M:%S', r: '%I:%M:%S %p' };
  return format.replace(/%(.)/gs, (all, c: string) => (compound[c] ? strftime(date, compound[c]) : f[c]?.() ?? all));
}
const MAX_RANGE = 100_000;

/**
 * Jinja's range() for one rendering, making at most MAX_RANGE numbers in all, refused before they are made: one
 * range(1e9) ended the process, and loops nested in loops multiply (a thousand ranges of a thousand took seconds).
 */
function ranger(): (start: number, stop?: number, step?: number) => number[] {
  let made = 0;
  return (start, stop, step = 1) => {
    if (stop === undefined) [start, stop] = [0, start];
    if (step === 0) throw new Error('range() step must not be zero');
    const n = Math.max(0, Math.ceil((stop - start) / step));
    if (!(n <= MAX_RANGE)) throw new Error(`range(${start}, ${stop}, ${step}) makes ${n} numbers, more than a chat template needs (${MAX_RANGE})`);
    if ((made += n) > MAX_RANGE) throw new Error(`range() calls make more than ${MAX_RANGE} numbers in one rendering (loops within loops?), more than a chat template needs`);
    return Array.from({ length: n }, (_, i) => start + i * step);
  };
}

/** A chat template that refused the messages (raise_exception), or that is broken (does not parse or render). */
export class ChatTemplateError extends Error {
  constructor(message: string, readonly kind: 'refused' | 'broken') { super(message); }
}

/** Token ids stop below this (2^24, past any model's vocabulary: Gemma 3's is 262,144). */
const MAX_TOKEN_ID = 2 ** 24;

/**
 * The ids of tokenizer.json's "model.vocab" (a token → id map: BPE, WordPiece, WordLevel; one that is no map is
 * refused) and "added_tokens": the tokenizers library takes a string or negative id as it is, and the model would
 * then index its embedding with it. Checked before the library builds the tokenizer.
 */
function checkTokenIds(json: unknown, name: string): void {
  const j = json as { model?: { type?: unknown; vocab?: unknown }; added_tokens?: unknown } | null;
  const type = j?.model?.type, vocab = j?.model?.vocab, added = Array.isArray(j?.added_tokens) ? j!.added_tokens as { id?: unknown; content?: unknown }[] : [];
  if (j?.added_tokens !== undefined && !Array.isArray(j?.added_tokens)) throw new Error(`tokenizer: ${name}: "added_tokens" must be a list of {"id", "content"} tokens, got ${shown(j?.added_tokens)}`);
  // The library makes a table as long as the largest id: one past any vocabulary (2^31) would take it minutes, or hang.
  const check = (token: string, id: unknown, where: string) => {
    if (!Number.isInteger(id) || (id as number) < 0 || (id as number) >= MAX_TOKEN_ID) throw new Error(`tokenizer: ${name}: tokenizer.json's ${where} gives the token ${JSON.stringify(token)} the id ${shown(id)}: token ids must be integers from 0 to ${MAX_TOKEN_ID - 1}`);
  };
  const map = !!vocab && typeof vocab === 'object' && !Array.isArray(vocab);
  if (!map && ['BPE', 'WordPiece', 'WordLevel'].includes(type as string)) throw new Error(`tokenizer: ${name}: a ${type} model's "model.vocab" must map tokens to ids, got ${shown(vocab)}`);
  // A Unigram vocabulary is a list of [token, score] pairs (anything else was read as one unknown token, or failed unnamed).
  if (type === 'Unigram') {
    if (!Array.isArray(vocab) || !vocab.length) throw new Error(`tokenizer: ${name}: a Unigram model's "model.vocab" must be a list of [token, score] pairs, got ${shown(vocab)}`);
    const bad = vocab.findIndex((e) => !Array.isArray(e) || e.length !== 2 || typeof e[0] !== 'string' || typeof e[1] !== 'number');
    if (bad >= 0) throw new Error(`tokenizer: ${name}: "model.vocab"[${bad}] of a Unigram model must be [token, score], got ${shown(vocab[bad])}`);
    const unk = (j!.model as { unk_id?: unknown }).unk_id;
    if (unk !== undefined && unk !== null && !(Number.isInteger(unk) && (unk as number) >= 0 && (unk as number) < vocab.length)) throw new Error(`tokenizer: ${name}: a Unigram model's "model.unk_id" must be the index of a token of "model.vocab" (0 to ${vocab.length - 1}), got ${shown(unk)}`);
  }
  if (map) {
    // (for…in: Object.keys and Object.entries of a 151,643-token vocabulary take a quarter of a second, for…in a fifth of that)
    let tokens = 0;
    for (const token in vocab) { tokens++; check(token, (vocab as Record<string, unknown>)[token], '"model.vocab"'); }
    if (!tokens) throw new Error(`tokenizer: ${name} has no vocabulary (its "model.vocab" holds no tokens)`); // added tokens alone encode all text as unknown
  }
  added.forEach((t, i) => {
    if (typeof t?.content !== 'string') throw new Error(`tokenizer: ${name}: "added_tokens"[${i}] must be {"id", "content": string}, got ${shown(t)}`);
    check(t.content, t.id, `"added_tokens"[${i}]`);
  });
  // A merge whose parts or result the vocabulary lacks makes the library drop the text it merges ("the" encoded as
  // "e"), as the Rust tokenizers library refuses to load (MergeTokenOutOfVocabulary).
  const model = j?.model as { merges?: unknown; continuing_subword_prefix?: unknown } | undefined;
  if (type === 'BPE' && model?.merges !== undefined && !Array.isArray(model.merges)) throw new Error(`tokenizer: ${name}: "model.merges" must be a list of merges ("left right" or [left, right]), got ${shown(model.merges)}`);
  if (type === 'BPE' && map && Array.isArray(model?.merges)) {
    const has = (t: string) => Object.hasOwn(vocab, t), prefix = typeof model.continuing_subword_prefix === 'string' ? model.continuing_subword_prefix : '';
    const merges: unknown[] = model.merges;
    for (let i = 0; i < merges.length; i++) { // (a plain loop: 151,387 merges, once per load)
      const m = merges[i], space = typeof m === 'string' ? m.indexOf(' ') : -1;
      const pair = space >= 0 ? [(m as string).slice(0, space), (m as string).slice(space + 1)] : m;
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') throw new Error(`tokenizer: ${name}: "model.merges"[${i}] must be "left right" or [left, right], got ${shown(m)}`);
      const [a, b] = pair as [string, string], made = a + (prefix && b.startsWith(prefix) ? b.slice(prefix.length) : b);
      if (has(a) && has(b) && has(made)) continue;
      const lacking = [a, b, made].find((t) => !has(t));
      throw new Error(`tokenizer: ${name}: "model.merges"[${i}] ${JSON.stringify(pair)} ${lacking === made && has(a) && has(b) ? 'makes' : 'holds'} ${JSON.stringify(lacking)}, which "model.vocab" lacks: the text it merges would be dropped`);
    }
  }
  // A post-processor's special tokens: each one its template names defined, with ids the vocabulary holds (the
  // library adds an unknown one as <unk>).
  let ids: Set<unknown> | undefined; // made only for a template that names ids (most tokenizers have none)
  const templates = (p: unknown): Record<string, unknown>[] => (!p || typeof p !== 'object' ? [] : (p as { type?: unknown }).type === 'TemplateProcessing' ? [p as Record<string, unknown>] : ((p as { processors?: unknown[] }).processors ?? []).flatMap(templates));
  for (const t of templates((j as { post_processor?: unknown } | null)?.post_processor)) {
    const defined = (t.special_tokens && typeof t.special_tokens === 'object' ? t.special_tokens : {}) as Record<string, { ids?: unknown }>;
    for (const piece of [...(Array.isArray(t.single) ? t.single : []), ...(Array.isArray(t.pair) ? t.pair : [])] as { SpecialToken?: { id?: unknown } }[]) {
      const id = piece?.SpecialToken?.id;
      if (id !== undefined && !Object.hasOwn(defined, String(id))) throw new Error(`tokenizer: ${name}: the post-processor's template adds the special token ${JSON.stringify(id)}, which its "special_tokens" does not define`);
    }
    for (const [k, v] of Object.entries(defined)) {
      if (!Array.isArray(v?.ids)) throw new Error(`tokenizer: ${name}: the post-processor's special token ${JSON.stringify(k)} must have a list of "ids", got ${shown(v)}`);
      ids ??= new Set<unknown>([...(map ? Object.values(vocab) : []), ...added.map((t) => t?.id)]);
      const bad = v.ids.find((x) => !ids!.has(x));
      if (bad !== undefined) throw new Error(`tokenizer: ${name}: the post-processor's special token ${JSON.stringify(k)} has the id ${shown(bad)}, which is not a token of the vocabulary`);
    }
  }
}
