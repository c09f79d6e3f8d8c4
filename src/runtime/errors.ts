/**
 * A prompt too long for the model's context, with what must follow it (an adapter's invocation, a budget line, a
 * thinking model's empty thinking block) and, where something is to be generated, room for one token. An application
 * keeping a conversation catches it to drop its oldest turns and ask again; `code` is OpenAI's name for the same
 * refusal. Its name stays "Error" (String(e) reads "Error: answer: the prompt has …", as every other refusal does).
 */
export class ContextLengthError extends Error {
  readonly code = 'context_length_exceeded';
  /** `tokens`: the positions needed (the prompt, what must follow it, one to generate where asked); `context`: the model's context, in tokens. */
  constructor(message: string, readonly tokens: number, readonly context: number) {
    super(message);
  }
}
