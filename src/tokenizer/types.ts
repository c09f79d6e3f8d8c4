/** The chat roles messages may have: every supported template renders the first three; "tool" (a tool's result) those with tool calling. */
export const CHAT_ROLES: readonly string[] = ['system', 'user', 'assistant', 'tool'];

/**
 * One chat turn. Roles other than CHAT_ROLES are refused at run time (`string & {}` keeps editor completion). The optional fields are the ones chat templates read, as transformers passes them.
 */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | (string & {});
  content: string;
  /** An assistant turn's thinking, given apart from its content (Qwen3's template prints it for the turns after the last user message). */
  reasoning_content?: string;
  /** The tool calls an assistant turn made: `arguments` as an object (a template prints it with tojson) or JSON text. */
  tool_calls?: { id?: string; type?: 'function'; function: { name: string; arguments: Record<string, unknown> | string } }[];
  /** A tool message: the call it answers. */
  tool_call_id?: string;
  /** A tool message's tool; another's participant (OpenAI's name field, for templates that print it). */
  name?: string;
}

/** What the runtime needs from a tokenizer; implemented over @huggingface/tokenizers + @huggingface/jinja. */
export interface TextTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  /** cleanUp: transformers' clean_up_tokenization_spaces (" ." → "."); default the tokenizer config's. */
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean; cleanUp?: boolean }): string;
  tokenToId(token: string): number | undefined;
  /** The bytes a token stands for (part of a character, for some); where absent, its text's UTF-8. */
  tokenBytes?(id: number): Uint8Array;
  readonly vocabSize: number;
  readonly bosTokenId?: number;
  readonly eosTokenIds: number[];
  /** The ids decoding with skipSpecialTokens drops. */
  readonly specialIds?: ReadonlySet<number>;
  /**
   * Text with the special tokens it writes ("<|im_end|>") encoded as the characters they are, not as control tokens
   * (transformers' split_special_tokens, llama.cpp's parse_special false): a chat message's text (tokenizer/chat-ids.ts).
   */
  encodeText?(text: string): number[];
  /** The first special token `text` writes, or undefined. */
  specialIn?(text: string): string | undefined;
  /** `text` as encode encodes it (no special tokens added), but the special tokens written within the `guarded` [start, end) ranges as text. */
  encodeGuarded?(text: string, guarded: readonly (readonly [number, number])[]): number[];
  /** The chat template's source (undefined when there is none). */
  readonly chatTemplate?: string;
  /** A second template that renders calls given tools, where the model has one (transformers' named "tool_use"). */
  readonly toolUseTemplate?: string;
  /** Renders the model's chat template (throws naming the model folder if it has none). */
  applyChatTemplate(messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean; vars?: Record<string, unknown> }): string;
}

/** Parsed tokenizer files: read from a folder, or made by a converter (llama2.c, GGUF metadata). */
export interface TokenizerFiles {
  tokenizerJson: unknown;
  tokenizerConfig?: Record<string, unknown>;
  /** Overrides tokenizer_config.json's chat_template, like a chat_template.jinja file does. */
  chatTemplate?: string;
  /** The file of a folder the chat template comes from (chat_template.jinja, chat_template.json or tokenizer_config.json), for messages. */
  chatTemplateFile?: string;
  /** Used in error messages in place of a folder name. */
  name?: string;
}
