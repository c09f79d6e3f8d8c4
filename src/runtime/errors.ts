/**
 * A prompt too long for the model's context, with what must follow it (an adapter's invocation, a budget line, a
 * thinking model's empty thinking block) and room for one generated token. An application keeping a conversation
 * catches it to drop its oldest turns and ask again; `code` is OpenAI's name for the same refusal.
 */
export class ContextLengthError extends Error {
  readonly code = 'context_length_exceeded';
  /** `tokens`: what the prompt needs (with what must follow it); `context`: the model's context, in tokens. */
  constructor(message: string, readonly tokens: number, readonly context: number) {
    super(message);
  }
}
