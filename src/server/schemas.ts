/**
 * Request schemas (validated by fastify's Ajv, no type coercion) and OpenAI-style errors:
 * `{"error": {"message", "type", "param", "code"}}` with the offending field in `param`.
 */
export const VOTES = ['majority', 'confidence', 'verifier', 'verifier-vote'] as const;
export const EFFORTS = ['none', 'minimal', 'low', 'medium', 'high'] as const;
export type Effort = (typeof EFFORTS)[number];

const nullable = (schema: Record<string, unknown>) => ({ anyOf: [schema, { type: 'null' }] });

/** Text parts only: the models served are text models, so an image or audio part is refused rather than dropped. */
const contentPart = {
  type: 'object', required: ['type', 'text'],
  properties: { type: { type: 'string', enum: ['text'] }, text: { type: 'string' } },
};

export const chatRequestSchema = {
  type: 'object',
  required: ['messages'],
  properties: {
    model: { type: 'string' },
    messages: {
      type: 'array', minItems: 1,
      items: {
        type: 'object', required: ['role'],
        properties: {
          role: { type: 'string', enum: ['system', 'developer', 'user', 'assistant'] },
          content: nullable({ anyOf: [{ type: 'string' }, { type: 'array', items: contentPart }] }),
          name: { type: 'string' },
        },
      },
    },
    max_tokens: nullable({ type: 'integer', minimum: 1 }),
    max_completion_tokens: nullable({ type: 'integer', minimum: 1 }),
    temperature: nullable({ type: 'number', minimum: 0, maximum: 2 }),
    top_p: nullable({ type: 'number', exclusiveMinimum: 0, maximum: 1 }),
    top_k: nullable({ type: 'integer', minimum: -1 }),
    min_p: nullable({ type: 'number', minimum: 0, maximum: 1 }),
    seed: nullable({ type: 'integer', minimum: -2147483648, maximum: 4294967295 }),
    stop: nullable({ anyOf: [{ type: 'string', minLength: 1 }, { type: 'array', maxItems: 4, items: { type: 'string', minLength: 1 } }] }),
    n: nullable({ type: 'integer', minimum: 1 }),
    stream: nullable({ type: 'boolean' }),
    stream_options: nullable({ type: 'object', properties: { include_usage: { type: 'boolean' } } }),
    reasoning_effort: nullable({ type: 'string', enum: EFFORTS }),
    thinking_token_budget: nullable({ type: 'integer', minimum: 0 }),
    edgereason: nullable({
      type: 'object', additionalProperties: false,
      properties: {
        reasoning: { type: 'string', enum: ['auto', 'on', 'off'] },
        samples: { type: 'integer', minimum: 1 },
        vote: { type: 'string', enum: VOTES },
        early_stop: { type: 'boolean' },
      },
    }),
  },
} as const;

export interface ChatMessageIn { role: string; content?: string | { type: string; text?: string }[] | null; name?: string }

export interface ChatRequest {
  model?: string;
  messages: ChatMessageIn[];
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  n?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
  reasoning_effort?: Effort | null;
  thinking_token_budget?: number | null;
  edgereason?: { reasoning?: 'auto' | 'on' | 'off'; samples?: number; vote?: (typeof VOTES)[number]; early_stop?: boolean } | null;
}

export type ErrorType = 'invalid_request_error' | 'rate_limit_error' | 'server_error' | 'not_found_error';

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

/** JSON pointer "/messages/0/role" → "messages[0].role". */
export function pointerToParam(pointer: string): string {
  return pointer.split('/').filter(Boolean).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((acc, p) => (/^\d+$/.test(p) ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '');
}

/** The most useful of Ajv's errors, as an ApiError naming the field. */
export function validationError(errors: AjvError[]): ApiError {
  // anyOf failures list every branch; prefer the deepest specific error over the anyOf summary.
  const specific = errors.filter((e) => e.keyword !== 'anyOf');
  const pick = specific.sort((a, b) => (b.instancePath?.length ?? 0) - (a.instancePath?.length ?? 0))[0] ?? errors[0];
  let param = pointerToParam(pick?.instancePath ?? '');
  if (pick?.keyword === 'required' && typeof pick.params?.missingProperty === 'string') param = param ? `${param}.${pick.params.missingProperty}` : pick.params.missingProperty;
  if (pick?.keyword === 'additionalProperties' && typeof pick.params?.additionalProperty === 'string') param = `${param}.${pick.params.additionalProperty}`;
  const sameField = errors.filter((e) => e.instancePath === pick?.instancePath && e.keyword !== 'anyOf');
  let what = pick?.message ?? 'is invalid';
  if (pick?.keyword === 'type' && sameField.length > 1) what = `must be ${sameField.filter((e) => e.keyword === 'type').map((e) => e.params?.type).join(' or ')}`;
  if (pick?.keyword === 'enum' && Array.isArray(pick.params?.allowedValues)) what = `must be one of ${(pick.params!.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
  if (pick?.keyword === 'required') return new ApiError(400, `Missing required parameter: '${param}'.`, param || null, 'invalid_request_error', 'missing_required_parameter');
  return new ApiError(400, `Invalid value for '${param || 'body'}': ${what}.`, param || null, 'invalid_request_error', 'invalid_value');
}
