/**
 * Request schemas (validated by fastify's Ajv, no type coercion) and OpenAI-style errors:
 * `{"error": {"message", "type", "param", "code"}}` with the offending field in `param`.
 */
import { shown } from '../show.ts';
import { VOTE_METHODS } from '../reason/vote.ts';
import type { VoteMethod } from '../reason/types.ts';

export const EFFORTS = ['none', 'minimal', 'low', 'medium', 'high'] as const;
export type Effort = (typeof EFFORTS)[number];

export const nullable = (schema: Record<string, unknown>) => ({ anyOf: [schema, { type: 'null' }] });

/** Text parts only: the models served are text models, so an image or audio part is refused rather than dropped. */
const contentPart = {
  type: 'object', required: ['type', 'text'],
  properties: { type: { type: 'string', enum: ['text'] }, text: { type: 'string' } },
};

/**
 * OpenAI request fields edgereason cannot honour. They are declared (so a wrong type still names the field) and
 * refused by `checkUnsupported` unless their value asks for nothing (false, 0, empty, "none", {type: "text"}).
 */
const unsupportedFields = {
  functions: nullable({ type: 'array' }),
  function_call: nullable({ anyOf: [{ type: 'string' }, { type: 'object' }] }),
  logit_bias: nullable({ type: 'object' }),
  modalities: nullable({ type: 'array', items: { type: 'string' } }),
  audio: nullable({ type: 'object' }),
  prediction: nullable({ type: 'object' }),
  web_search_options: nullable({ type: 'object' }),
  verbosity: nullable({ type: 'string', enum: ['low', 'medium', 'high'] }),
} as const;

/** OpenAI request fields that change nothing here (bookkeeping, routing hints): accepted and ignored. */
const harmlessFields = {
  user: nullable({ type: 'string' }),
  metadata: nullable({ type: 'object' }),
  store: nullable({ type: 'boolean' }),
  service_tier: nullable({ type: 'string' }),
  prompt_cache_key: nullable({ type: 'string' }),
  prompt_cache_retention: nullable({ type: 'string' }), // OpenAI's "in-memory" or "24h": this server's prompt cache is serve --prompt-cache
  safety_identifier: nullable({ type: 'string' }),
} as const;

/** A function's name (a tool's, a response_format json_schema's), as OpenAI takes it. */
const functionName = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[a-zA-Z0-9_-]+$' } as const;

/** A function the model may call (OpenAI's tools[i]); its parameters are a JSON schema the chat template prints. */
const toolSchema = {
  type: 'object', required: ['type', 'function'], additionalProperties: false,
  properties: {
    type: { type: 'string', enum: ['function'] },
    custom: { type: 'object' }, // OpenAI's custom tools: declared, so that the type's error names what is wrong
    function: {
      type: 'object', required: ['name'], additionalProperties: false,
      properties: { name: functionName, description: { type: 'string' }, parameters: { type: 'object' }, strict: nullable({ type: 'boolean' }) },
    },
  },
} as const;

/** A tool call of an earlier assistant reply, as the client sends it back. */
const toolCallSchema = {
  type: 'object', required: ['function'], additionalProperties: false,
  properties: {
    id: { type: 'string' }, type: { type: 'string', enum: ['function'] },
    // parsed_arguments: what the openai package's helpers (runTools, stream) add to a call they send back; dropped.
    function: { type: 'object', required: ['name', 'arguments'], additionalProperties: false, properties: { name: { type: 'string', minLength: 1 }, arguments: { type: 'string' }, parsed_arguments: {} } },
  },
} as const;

/** Sampling fields both endpoints take: OpenAI's (presence and frequency penalties too), and vLLM's top_k, min_p and repetition_penalty. */
export const samplingFields = {
  temperature: nullable({ type: 'number', minimum: 0, maximum: 2 }),
  top_p: nullable({ type: 'number', minimum: 0, maximum: 1 }), // 0 keeps the most likely token (OpenAI takes it; vLLM does not)
  top_k: nullable({ type: 'integer', minimum: -1 }),
  min_p: nullable({ type: 'number', minimum: 0, maximum: 1 }),
  repetition_penalty: nullable({ type: 'number', exclusiveMinimum: 0, maximum: 10 }), // vLLM's extra sampling field
  presence_penalty: nullable({ type: 'number', minimum: -2, maximum: 2 }),
  frequency_penalty: nullable({ type: 'number', minimum: -2, maximum: 2 }),
  seed: nullable({ type: 'integer', minimum: -2147483648, maximum: 4294967295 }),
  stop: nullable({ anyOf: [{ type: 'string', minLength: 1 }, { type: 'array', maxItems: 4, items: { type: 'string', minLength: 1 } }] }),
  min_tokens: nullable({ type: 'integer', minimum: 0 }), // vLLM's extra sampling fields, which benchmark clients send
  ignore_eos: nullable({ type: 'boolean' }),
  skip_special_tokens: nullable({ type: 'boolean' }), // true only: the text is always decoded without them
  cache_salt: nullable({ type: 'string', minLength: 1, maxLength: 1024 }), // vLLM's: the prompt cache's scope
} as const;

export interface SamplingRequest {
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  repetition_penalty?: number | null;
  /** OpenAI's: subtracted from the logits of the output's tokens, once (presence) and per occurrence (frequency). */
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  /** vLLM's: at least this many tokens before an end token or stop string ends the reply. */
  min_tokens?: number | null;
  /** vLLM's: the end tokens do not end the reply, which runs to max_tokens or a stop string (here: they are not drawn). */
  ignore_eos?: boolean | null;
  /** vLLM's: true (its default) is what edgereason does; false is refused. */
  skip_special_tokens?: boolean | null;
  /** vLLM's: the prompt cache is read and kept only among requests of the same salt (GenerateOptions.cacheSalt). */
  cache_salt?: string | null;
}

/**
 * stream_options, both endpoints': include_obfuscation (OpenAI's padding against length side channels) is taken and
 * left off; vLLM's continuous_usage_stats (usage on every chunk) is refused when asked for.
 */
export const streamOptionsSchema = nullable({ type: 'object', additionalProperties: false, properties: { include_usage: nullable({ type: 'boolean' }), include_obfuscation: nullable({ type: 'boolean' }), continuous_usage_stats: nullable({ type: 'boolean' }) } });

/** Fields outside OpenAI's request, vLLM's and edgereason's are refused ("Unrecognized request argument supplied"). */
export const chatRequestSchema = {
  type: 'object',
  required: ['messages'],
  additionalProperties: false,
  properties: {
    ...unsupportedFields,
    ...harmlessFields,
    ...samplingFields,
    model: { type: 'string' },
    logprobs: nullable({ type: 'boolean' }),
    top_logprobs: nullable({ type: 'integer', minimum: 0, maximum: 20 }),
    tools: nullable({ type: 'array', items: toolSchema }),
    // Structured output: the answer is any JSON object, or JSON a schema accepts (constrained decoding).
    response_format: nullable({
      type: 'object', required: ['type'], additionalProperties: false,
      properties: {
        type: { type: 'string', enum: ['text', 'json_object', 'json_schema'] },
        json_schema: {
          type: 'object', required: ['name'], additionalProperties: false,
          properties: { name: functionName, description: { type: 'string' }, schema: { type: 'object' }, strict: nullable({ type: 'boolean' }) },
        },
      },
    }),
    // false: only a reply's first call is returned (a model may write several).
    parallel_tool_calls: nullable({ type: 'boolean' }),
    tool_choice: nullable({
      anyOf: [{ type: 'string', enum: ['none', 'auto', 'required'] },
        { type: 'object', required: ['type', 'function'], additionalProperties: false, properties: { type: { type: 'string', enum: ['function'] }, function: { type: 'object', required: ['name'], additionalProperties: false, properties: { name: { type: 'string' } } } } }],
    }),
    messages: {
      type: 'array', minItems: 1,
      items: {
        type: 'object', required: ['role'], additionalProperties: false,
        properties: {
          role: { type: 'string', enum: ['system', 'developer', 'user', 'assistant', 'tool'] },
          content: nullable({ anyOf: [{ type: 'string' }, { type: 'array', items: contentPart }] }),
          name: { type: 'string' },
          // A reply's own fields, as a client sends an earlier reply back: its thinking and tool calls go to the chat
          // template (which drops earlier thinking), an empty refusal is dropped, audio is refused by checkUnsupported.
          reasoning_content: nullable({ type: 'string' }),
          reasoning: nullable({ type: 'string' }),
          refusal: { type: 'null' },
          parsed: {}, // the openai package's helpers add it to a message they send back; dropped
          annotations: nullable({ type: 'array', maxItems: 0 }),
          tool_calls: nullable({ type: 'array', items: toolCallSchema }),
          tool_call_id: { type: 'string' },
          function_call: nullable({ type: 'object' }),
          audio: nullable({ type: 'object' }),
        },
      },
    },
    max_tokens: nullable({ type: 'integer', minimum: 1 }),
    max_completion_tokens: nullable({ type: 'integer', minimum: 1 }),
    n: nullable({ type: 'integer', minimum: 1 }),
    stream: nullable({ type: 'boolean' }),
    stream_options: streamOptionsSchema,
    reasoning_effort: nullable({ type: 'string', enum: EFFORTS }),
    thinking_token_budget: nullable({ type: 'integer', minimum: 0 }),
    chat_template_kwargs: nullable({ type: 'object' }),
    // vLLM's: continue the last (assistant) message instead of starting a reply; add_generation_prompt false goes with it.
    continue_final_message: nullable({ type: 'boolean' }),
    add_generation_prompt: nullable({ type: 'boolean' }),
    edgereason: nullable({
      type: 'object', additionalProperties: false,
      properties: {
        reasoning: { type: 'string', enum: ['auto', 'on', 'off'] },
        samples: { type: 'integer', minimum: 1 },
        vote: { type: 'string', enum: VOTE_METHODS },
        early_stop: { type: 'boolean' },
      },
    }),
  },
} as const;

export interface ToolCallIn { id?: string; type?: 'function'; function: { name: string; arguments: string } }

export interface ChatMessageIn {
  role: string; content?: string | { type: string; text?: string }[] | null; name?: string;
  reasoning_content?: string | null; reasoning?: string | null;
  tool_calls?: ToolCallIn[] | null; tool_call_id?: string; function_call?: Record<string, unknown> | null; audio?: Record<string, unknown> | null;
}

export interface ToolIn { type: 'function'; function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean | null } }

export interface ChatRequest extends SamplingRequest {
  model?: string;
  messages: ChatMessageIn[];
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  n?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null; include_obfuscation?: boolean | null; continuous_usage_stats?: boolean | null } | null;
  reasoning_effort?: Effort | null;
  thinking_token_budget?: number | null;
  /** vLLM's and llama.cpp's: variables for the chat template, e.g. {"enable_thinking": false} for Qwen3. */
  chat_template_kwargs?: Record<string, unknown> | null;
  continue_final_message?: boolean | null;
  add_generation_prompt?: boolean | null;
  edgereason?: { reasoning?: 'auto' | 'on' | 'off'; samples?: number; vote?: VoteMethod; early_stop?: boolean } | null;
  /** Functions the model may call: rendered by the chat template, the reply's calls (Hermes or Llama's JSON format) parsed into tool_calls. */
  tools?: ToolIn[] | null;
  tool_choice?: 'none' | 'auto' | 'required' | { type: 'function'; function: { name: string } } | null;
  parallel_tool_calls?: boolean | null;
  /** The answer tokens' log-probabilities, and the most likely tokens at each (0–20; needs logprobs true). */
  logprobs?: boolean | null;
  top_logprobs?: number | null;
  /** The answer is JSON: any object (json_object), or what json_schema.schema accepts (the subset JsonConstraint documents). */
  response_format?: { type: 'text' | 'json_object' | 'json_schema'; json_schema?: { name: string; description?: string; schema?: Record<string, unknown>; strict?: boolean | null } } | null;
  // Accepted by the schema, refused by checkUnsupported when they ask for something.
  functions?: unknown[] | null;
  function_call?: string | Record<string, unknown> | null;
  logit_bias?: Record<string, unknown> | null;
  modalities?: string[] | null;
  audio?: Record<string, unknown> | null;
  prediction?: Record<string, unknown> | null;
  web_search_options?: Record<string, unknown> | null;
  verbosity?: 'low' | 'medium' | 'high' | null;
}

/**
 * Refuses OpenAI options edgereason would otherwise have to ignore silently (400 naming the parameter): legacy
 * functions, logit bias, audio, predicted outputs, web search, verbosity, usage on every stream chunk,
 * stream_options without stream (as OpenAI does), and a message's function call or audio. Values that ask for nothing
 * pass.
 */
export function checkUnsupported(req: ChatRequest): void {
  const given = (v: unknown) => v !== undefined && v !== null;
  if (req.functions?.length) refuse('functions', '(function calling)');
  if (given(req.function_call) && req.function_call !== 'none') refuse('function_call', '(function calling)');
  if (given(req.logit_bias) && Object.keys(req.logit_bias!).length) refuse('logit_bias', '(token biases)');
  if (req.modalities?.some((m) => m !== 'text')) {
    throw new ApiError(400, `Unsupported value: 'modalities' ${JSON.stringify(req.modalities)} is not supported by edgereason; the models served output text only (["text"]).`, 'modalities', 'invalid_request_error', 'unsupported_value');
  }
  if (given(req.audio)) refuse('audio', '(audio output)');
  if (given(req.prediction)) refuse('prediction', '(predicted outputs)');
  if (given(req.web_search_options)) refuse('web_search_options', '(web search)');
  if (given(req.verbosity) && req.verbosity !== 'medium') refuse('verbosity', `"${req.verbosity}" (only "medium")`);
  req.messages.forEach((m, i) => {
    if (given(m.function_call)) refuse(`messages[${i}].function_call`, '(function calling)');
    if (given(m.audio)) refuse(`messages[${i}].audio`, '(audio)');
  });
  if (req.stream_options?.continuous_usage_stats === true) refuse('stream_options.continuous_usage_stats', '(usage on every chunk; include_usage sends it once, at the end)');
  if (given(req.stream_options) && req.stream !== true) {
    throw new ApiError(400, "Invalid value for 'stream_options': stream_options is only allowed when 'stream' is true.", 'stream_options', 'invalid_request_error', 'invalid_value');
  }
}

/** Refuses a request parameter edgereason does not support (400 naming it; `what`: what it asks for). */
export function refuse(param: string, what: string): never {
  throw new ApiError(400, `Unsupported parameter: '${param}' ${what} is not supported by edgereason.`, param, 'invalid_request_error', 'unsupported_parameter');
}

export type ErrorType = 'invalid_request_error' | 'rate_limit_error' | 'server_error';

/** An error the client caused (or a busy server), sent as an OpenAI error object with this status. */
export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly param: string | null = null,
    readonly type: ErrorType = status === 429 ? 'rate_limit_error' : status >= 500 ? 'server_error' : 'invalid_request_error',
    readonly code: string | null = null) {
    super(message);
  }
  toJSON() { return errorBody(this.message, this.type, this.param, this.code); }
}

export function errorBody(message: string, type: string, param: string | null = null, code: string | null = null) {
  return { error: { message, type, param, code } };
}

interface AjvError { instancePath?: string; keyword?: string; message?: string; params?: Record<string, unknown> }

/** A JSON pointer's segments, unescaped: "/messages/0/role" → ["messages", "0", "role"]. */
const pointerSegments = (pointer: string): string[] => pointer.split('/').filter(Boolean).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));

/** JSON pointer "/messages/0/role" → "messages[0].role". */
export function pointerToParam(pointer: string): string {
  return pointerSegments(pointer)
    .reduce((acc, p) => (/^\d+$/.test(p) ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '');
}

/** The value a JSON pointer names in `body` (undefined when it names nothing). */
function valueAt(body: unknown, pointer: string): unknown {
  let v = body;
  for (const p of pointerSegments(pointer)) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[p] : undefined;
  return v;
}

/** The most useful of Ajv's errors, as an ApiError naming the field and the value sent. */
export function validationError(errors: AjvError[], body?: unknown): ApiError {
  // A legacy function's result is function calling, before any of its own fields is "unknown".
  const roles = errors.filter((e) => e.keyword === 'enum' && /^\/messages\/\d+\/role$/.test(e.instancePath ?? '')).map((e) => [e.instancePath!, valueAt(body, e.instancePath!)] as const);
  const fn = roles.find(([, role]) => role === 'function');
  if (fn) {
    const param = pointerToParam(fn[0]);
    return new ApiError(400, `Unsupported value: '${param}' "function" (legacy function calling) is not supported by edgereason; send the function's result as a "tool" message.`, param, 'invalid_request_error', 'unsupported_value');
  }
  // An image, audio or file part: what the served models cannot take, said so (not as a misspelt "text").
  const part = errors.find((e) => e.keyword === 'enum' && /^\/messages\/\d+\/content\/\d+\/type$/.test(e.instancePath ?? ''));
  const kind = part && valueAt(body, part.instancePath!);
  if (part && typeof kind === 'string') {
    const param = pointerToParam(part.instancePath!);
    return new ApiError(400, `Unsupported value: '${param}' ${JSON.stringify(kind)} is not supported by edgereason: the models it serves take text only (content parts of type "text").`, param, 'invalid_request_error', 'unsupported_value');
  }
  // Unknown fields first (most often a misspelt name), all of them at once, as OpenAI lists them.
  const unknown = errors.filter((e) => e.keyword === 'additionalProperties' && typeof e.params?.additionalProperty === 'string')
    .map((e) => { const at = pointerToParam(e.instancePath ?? ''); return at ? `${at}.${e.params!.additionalProperty}` : e.params!.additionalProperty as string; });
  if (unknown.length) {
    const names = [...new Set(unknown)];
    return new ApiError(400, `Unrecognized request argument${names.length > 1 ? 's' : ''} supplied: ${names.join(', ')}`, names[0], 'invalid_request_error', 'unknown_parameter');
  }
  // anyOf failures list every branch; prefer the deepest specific error over the anyOf summary, and at one field a
  // constraint of the branch whose type matched (maxItems, minLength, ...) over the other branches' type errors.
  const specific = errors.filter((e) => e.keyword !== 'anyOf');
  const depth = (e: AjvError) => pointerSegments(e.instancePath ?? '').length; // (by segments: prompt[10] is not deeper than prompt[9])
  const pick = specific.sort((a, b) => depth(b) - depth(a) || Number(a.keyword === 'type') - Number(b.keyword === 'type'))[0] ?? errors[0];
  let param = pointerToParam(pick?.instancePath ?? '');
  if (pick?.keyword === 'required' && typeof pick.params?.missingProperty === 'string') param = param ? `${param}.${pick.params.missingProperty}` : pick.params.missingProperty;
  if (!param && pick?.keyword === 'type') return new ApiError(400, 'The request body must be a JSON object.', null, 'invalid_request_error', 'invalid_value');
  const sameField = errors.filter((e) => e.instancePath === pick?.instancePath && e.keyword !== 'anyOf');
  let what = pick?.message ?? 'is invalid';
  if (pick?.keyword === 'type' && sameField.length > 1) what = `must be ${sameField.filter((e) => e.keyword === 'type').map((e) => e.params?.type).join(' or ')}`;
  if (pick?.keyword === 'enum' && Array.isArray(pick.params?.allowedValues)) what = `must be one of ${(pick.params!.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
  if (pick?.keyword === 'maxItems') what = `at most ${pick.params?.limit} ${param === 'stop' ? 'stop sequences are' : 'items are'} allowed`;
  if (pick?.keyword === 'required') return new ApiError(400, `Missing required parameter: '${param}'.`, param || null, 'invalid_request_error', 'missing_required_parameter');
  const got = body === undefined || pick?.keyword === 'maxItems' ? '' : `, got ${shown(valueAt(body, pick?.instancePath ?? ''), 60)}`;
  return new ApiError(400, `Invalid value for '${param || 'body'}': ${what}${got}.`, param || null, 'invalid_request_error', 'invalid_value');
}
