/**
 * OpenAI's legacy text completions, POST /v1/completions, as vLLM and llama.cpp's server serve them: a raw prompt (a
 * string or token ids, or a list of them), no chat template and no reasoning route. The model named continues each prompt `n`
 * times, all rows decoded as one batch with every other request; an adapter model applies its adapter as generate
 * does (a classic LoRA everywhere, an activated one from its invocation where the prompt holds it).
 */
import type { Completion, GenerateOptions } from '../runtime/generate.ts';
import { seedOrFresh } from '../runtime/sampler.ts';
import type { Model } from '../runtime/model.ts';
import { requestModel, servedModel, type Served, type ServedModel } from './models.ts';
import { samplingOptions, type ChatLimits } from './chat.ts';
import { ApiError, checkUnsupported, nullable, refuse, samplingFields, streamOptionsSchema, type ChatRequest, type SamplingRequest } from './schemas.ts';
import { promptCharBound } from '../tokenizer/prompt-bound.ts';

/** OpenAI's completions request, and vLLM's sampling extras (top_k, min_p, repetition_penalty). */
export interface CompletionRequest extends SamplingRequest {
  model?: string;
  prompt: string | string[] | number[] | number[][];
  max_tokens?: number | null;
  n?: number | null;
  stream?: boolean | null;
  stream_options?: ChatRequest['stream_options'];
  echo?: boolean | null;
  suffix?: string | null;
  best_of?: number | null;
  logprobs?: number | null;
  logit_bias?: Record<string, unknown> | null;
  user?: string | null;
}

export const completionRequestSchema = {
  type: 'object',
  required: ['prompt'],
  additionalProperties: false,
  properties: {
    ...samplingFields,
    model: { type: 'string' },
    // Text, token ids (as lm-evaluation-harness sends them), or a list of either.
    prompt: { anyOf: [{ type: 'string' }, { type: 'array', minItems: 1, items: { type: 'string' } }, { type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } }, { type: 'array', minItems: 1, items: { type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } } }] },
    max_tokens: nullable({ type: 'integer', minimum: 0 }), // 0: with echo, the prompt scored and nothing generated
    n: nullable({ type: 'integer', minimum: 1 }),
    stream: nullable({ type: 'boolean' }),
    stream_options: streamOptionsSchema,
    echo: nullable({ type: 'boolean' }),
    suffix: nullable({ type: 'string' }),
    best_of: nullable({ type: 'integer', minimum: 1 }),
    logprobs: nullable({ type: 'integer', minimum: 0, maximum: 5 }),
    logit_bias: nullable({ type: 'object' }),
    user: nullable({ type: 'string' }),
  },
} as const;

/** OpenAI's default max_tokens for completions (vLLM's too). */
export const COMPLETION_MAX_TOKENS = 16;

export interface CompletionPlan {
  served: ServedModel;
  /** One per row: each prompt `n` times, choice index = prompt × n + j (OpenAI's order); text or token ids. */
  rows: (string | number[])[];
  /** Each prompt's tokens, once (what is decoded: a text prompt is tokenized here only). */
  ids: number[][];
  n: number;
  options: GenerateOptions;
  stream: boolean;
  includeUsage: boolean;
  echo: boolean;
  /** max_tokens above 0 (0, with echo: the prompt alone, scored). */
  generate: boolean;
  /** logprobs: each token's log-probability, and this many of the most likely tokens at each (undefined: none). */
  logprobs?: number;
}

/** Validates a completions request (ApiError naming the field) and plans it. */
export function planCompletion(req: CompletionRequest, served: Served, limits: ChatLimits): CompletionPlan {
  const m = servedModel(served, req.model);
  // The fields both endpoints share are refused as chat refuses them (logit bias, stream_options without stream).
  checkUnsupported({ messages: [], logit_bias: req.logit_bias, stream: req.stream, stream_options: req.stream_options } as ChatRequest);
  if (req.suffix) refuse('suffix', '(text to insert before)');
  const n = req.n ?? 1;
  if (req.best_of != null && req.best_of !== n) refuse('best_of', `${req.best_of} (ranking more samples than n by log-probability; only best_of = n)`);
  const p = req.prompt, texts: (string | number[])[] = typeof p === 'string' || typeof p[0] === 'number' ? [p as string | number[]] : p as (string | number[])[];
  if (n * texts.length > limits.maxN) throw new ApiError(400, `Invalid value for 'n': ${n} choices for each of ${texts.length} prompt${texts.length === 1 ? '' : 's'} is more than this server decodes for one request (${limits.maxN}).`, 'n');
  if (req.max_tokens === 0 && !req.echo) throw new ApiError(400, "Invalid value for 'max_tokens': 0 generates nothing; with 'echo' true (and 'logprobs') it returns the prompt scored.", 'max_tokens');
  const ctx = limits.ctx, asked = req.max_tokens ?? COMPLETION_MAX_TOKENS, param = (i: number) => (texts.length === 1 && texts[0] === p ? 'prompt' : `prompt[${i}]`);
  // A text longer than ctx × the longest token (in characters) cannot fit: refused before tokenizing it, which for
  // megabytes of text would hold up every other request's decoding for seconds (as chat does).
  const bound = promptCharBound(m.model.tokenizer);
  const ids = texts.map((p, i) => {
    const chars = typeof p === 'string' && bound ? bound.normalizedLength(p) : 0;
    if (bound && chars > ctx * bound.maxTokenChars) {
      throw new ApiError(400, `This model's maximum context length is ${ctx} tokens. However, your prompt is ${chars} characters long, and no token of this model spans more than ${bound.maxTokenChars} characters, so it needs more than ${ctx} tokens. Please reduce the length of the prompt.`,
        param(i), 'invalid_request_error', 'context_length_exceeded');
    }
    const ids = typeof p === 'string' ? m.model.encode(p, false) : p;
    const bad = ids.findIndex((t) => t >= m.model.config.vocabSize);
    if (bad >= 0) throw new ApiError(400, `Invalid value for '${param(i)}': ${ids[bad]} at position ${bad} is not a token id of this model (0..${m.model.config.vocabSize - 1}).`, param(i));
    if (!ids.length) throw new ApiError(400, `Invalid value for '${param(i)}': the prompt is empty (it encodes to no tokens, and a model continues some text).`, param(i));
    if (ids.length + asked > ctx) {
      throw new ApiError(400, `This model's maximum context length is ${ctx} tokens. However, you requested ${ids.length + asked} tokens (${ids.length} in the prompt, ${asked} in the completion). Please reduce the length of the prompt or completion.`, req.max_tokens != null ? 'max_tokens' : param(i), 'invalid_request_error', 'context_length_exceeded');
    }
    return ids;
  });
  return {
    served: m, rows: texts.flatMap((t) => Array<string | number[]>(n).fill(t)), ids, n,
    options: { maxTokens: Math.max(1, asked), seed: seedOrFresh(req.seed), ...samplingOptions(req, served, limits, { tokens: asked, param: 'max_tokens', given: req.max_tokens != null }), ...(req.logprobs ? { topLogprobs: req.logprobs } : {}) },
    stream: !!req.stream, includeUsage: !!req.stream_options?.include_usage, echo: !!req.echo, generate: asked > 0, ...(req.logprobs != null ? { logprobs: req.logprobs } : {}),
  };
}

/** Decodes a plan's rows as one batch over the served model's backend, cancelled by `signal`; `onText` streams each row's text. */
export async function runCompletion(plan: CompletionPlan, signal: AbortSignal, onText?: (row: number, piece: string) => void): Promise<{ out: Completion[]; prompts?: PromptLogprobs[] }> {
  const model = requestModel(plan.served, signal), rowIds = plan.rows.map((_, i) => plan.ids[Math.floor(i / plan.n)]);
  // echo with logprobs: each prompt scored once (its n rows share it), before its continuations.
  const prompts = plan.echo && plan.logprobs !== undefined ? await Promise.all(plan.ids.map(async (ids, i) => {
    const p = plan.rows[i * plan.n];
    return {
      ...await model.promptLogprobs(ids, { chat: false, topLogprobs: plan.logprobs }),
      added: typeof p === 'string' ? ids.length - model.tokenizer.encode(p, { addSpecialTokens: false }).length : 0, // a BOS the tokenizer adds: not in the text
    };
  })) : undefined;
  const out = plan.generate ? await model.generateBatch(rowIds, { ...plan.options, chat: false }, onText, signal)
    : rowIds.map((ids): Completion => ({ text: '', tokens: [], logprobs: [], finishReason: 'length', promptTokens: ids.length, cachedTokens: 0, ttftMs: 0, totalMs: 0 }));
  return { out, ...(prompts ? { prompts } : {}) };
}

export type PromptLogprobs = Awaited<ReturnType<Model['promptLogprobs']>> & { added: number };

/** The finish_reason of a row: "stop" (an end token or stop string) or "length". */
export const completionFinish = (c: Completion): 'stop' | 'length' => (c.finishReason === 'length' ? 'length' : 'stop');

/** usage: each prompt's tokens once, every row's completion tokens; of the prompts', those the prompt cache held. */
export function completionUsage(plan: CompletionPlan, out: readonly Completion[]) {
  const prompt = plan.ids.reduce((a, ids) => a + ids.length, 0), completion = out.reduce((a, c) => a + c.tokens.length, 0);
  const cached = out.filter((_, i) => i % plan.n === 0).reduce((a, c) => a + c.cachedTokens, 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: { cached_tokens: cached } };
}
