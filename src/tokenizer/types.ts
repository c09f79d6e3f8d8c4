/** The chat roles every supported template renders. */
export const CHAT_ROLES: readonly string[] = ['system', 'user', 'assistant'];

/** One chat turn. Roles other than these three are refused at run time (`string & {}` keeps editor completion). */
export interface ChatMessage { role: 'system' | 'user' | 'assistant' | (string & {}); content: string }

/** What the runtime needs from a tokenizer; implemented over @huggingface/tokenizers + @huggingface/jinja. */
export interface TextTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  /** cleanUp: transformers' clean_up_tokenization_spaces (" ." → "."); default the tokenizer config's. */
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean; cleanUp?: boolean }): string;
  tokenToId(token: string): number | undefined;
  readonly vocabSize: number;
  readonly bosTokenId?: number;
  readonly eosTokenIds: number[];
  /** The ids decoding with skipSpecialTokens drops. */
  readonly specialIds?: ReadonlySet<number>;
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
