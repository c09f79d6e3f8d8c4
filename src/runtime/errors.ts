/** What a closed model's calls are refused with. */
export const CLOSED = 'runtime: model is closed';

/**
 * A call on a model that was closed (close(), or while closing), or whose session ended with it: `code`
 * "model_closed" (an app's shutdown race, not a failure).
 */
export class ModelClosedError extends Error {
  readonly code = 'model_closed';
  constructor() { super(CLOSED); }
}

/** A call on a model whose runtime worker died (an out-of-memory kill, a crash): `code` "runtime_failed"; load the model again. */
export class RuntimeFailedError extends Error {
  readonly code = 'runtime_failed';
}

/**
 * A session run that onnxruntime failed (a graph it cannot run with these inputs, out of memory): `code`
 * "onnxruntime_error". The model stays usable; the message is onnxruntime's, after what was run.
 */
export class OnnxRuntimeError extends Error {
  readonly code = 'onnxruntime_error';
}

/**
 * An error thrown again (from another tick or thread, with the caller's stack): its name and code kept, and the class
 * its code names (an app tests `instanceof ModelClosedError` or `code`), the original its cause.
 */
export const again = (e: unknown): Error => {
  const err = e as Error & { code?: unknown };
  return ofCode(Object.assign(new Error(err?.message, { cause: e }), { name: err?.name ?? 'Error' }, typeof err?.code === 'string' ? { code: err.code } : {}));
};

/** An error (from the worker thread, or thrown again), as the class its code names (RuntimeFailedError, ModelClosedError) where it names one. */
export const ofCode = (e: Error & { code?: unknown }): Error => {
  const cls = e.code === 'model_closed' ? ModelClosedError : e.code === 'runtime_failed' ? RuntimeFailedError : e.code === 'onnxruntime_error' ? OnnxRuntimeError : undefined;
  if (cls) Object.setPrototypeOf(e, cls.prototype);
  return e;
};

/** A step dropped because its request's signal aborted before it ran. */
export class AbortedError extends Error {
  constructor(message = 'request cancelled') { super(message); this.name = 'AbortError'; }
}

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
