/**
 * The OpenAI-compatible HTTP server (fastify): POST /v1/chat/completions and /v1/completions (JSON or SSE), GET /v1/models,
 * GET /health, GET /metrics (Prometheus), GET / (the playground page).
 *
 * Every request is validated (JSON schema, then the semantic checks of planChat / planCompletion) before it takes batch rows;
 * bad input gets a 400 OpenAI error naming the field (what only the run can tell, as a reply the vocabulary cannot write,
 * comes from runChat: on a stream, as an error event after the 200). Admitted requests decode
 * concurrently through the coalescing backend (continuous batching); a full queue answers 429; a client that
 * disconnects cancels its request and frees its rows. `close()` stops accepting, lets in-flight requests
 * finish for a grace period, cancels the rest and closes the models; every response finished while closing ends its
 * connection (`Connection: close`), so no keep-alive connection holds the process after the last request.
 */
import { Ajv, type ErrorObject } from 'ajv';
import type { IncomingMessage, ServerResponse } from 'node:http';
import fs from 'node:fs';
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import cors from '@fastify/cors';
import { AbortedError } from '../runtime/errors.ts';
import { openPromptCacheFile, promptCacheOf } from '../runtime/prompt-cache.ts';
import { shown } from '../show.ts';
import { checkKeys, checkValues, is, type Rule } from '../runtime/options.ts';
import { MAX_THREADS } from '../runtime/threads.ts';
import path from 'node:path';
import { VOTE_METHODS } from '../reason/vote.ts';
import type { VoteMethod } from '../reason/types.ts';
import { ADAPTER_NAME, loadServed, servedModel, type AdapterSpec, type Served, type ServedModel } from './models.ts';
import { planChat, report, runChat, DEFAULT_EFFORT_BUDGETS, type ChatEvent, type ChatLimits, type ChatOutcome, type ChoiceOut, type EffortBudgets, type Plan } from './chat.ts';
import { Admission } from './queue.ts';
import { Metrics } from './metrics.ts';
import { cutOffWhenStalled, KEEP_ALIVE_MS, SseWriter } from './sse.ts';
import { prepareJsonVocabulary } from '../runtime/json-constraint.ts';
import { promptCharBound } from '../tokenizer/prompt-bound.ts';
import { ApiError, chatRequestSchema, errorBody, validationError, type ChatRequest } from './schemas.ts';
import { completionFinish, completionRequestSchema, completionUsage, planCompletion, runCompletion, type CompletionRequest, type PromptLogprobs } from './completions.ts';
import type { Completion } from '../runtime/generate.ts';
import { chatLogprobs, completionLogprobs } from './logprobs.ts';
import { QUANTS, type Quant } from '../onnx/quant.ts';
import { checkRopeScalingChoice, type RopeScalingChoice } from '../models/config.ts';
import { keepSource, parseToolCalls, ToolCallStream, topLevelText, type ParsedToolCall } from '../tokenizer/tool-calls.ts';
import { THINK_CLOSE, THINK_OPEN } from '../reason/answer.ts';
import { kvBytes } from '../runtime/kv-cache.ts';
import { gib } from '../runtime/convert.ts';

/** A reply's usage, as both endpoints count it. */
type Usage = ReturnType<typeof completionUsage>;

/** Streamed replies stopped because their client left: counted as 499 whatever their status line said. */
const cancelledReplies = new WeakSet<object>();
/** Streams that failed after their 200 was sent, by the status of the error they carry (what /metrics counts them as). */
const failedStreams = new WeakMap<object, number>();

/** Ends a stream with the error `e` (a 500 unless an ApiError), counted in /metrics by its status, not the 200 sent first. */
function streamError(sse: SseWriter, reply: FastifyReply, e: unknown): void {
  if (!(e instanceof ApiError)) reply.log.error(e); // (as the error handler logs what it answers with a 500)
  const err = e instanceof ApiError ? e : new ApiError(500, `Internal error: ${(e as Error).message}`, null, 'server_error');
  failedStreams.set(reply.raw, err.status);
  sse.send(err.toJSON());
  sse.done();
}

export interface ServerOptions {
  model: string;
  adapters?: AdapterSpec[];
  /** router.json; default `<model>/router.json` when present, false: none (serve's --no-router). */
  router?: string | false;
  /** verifier.json; default `<model>/verifier.json` when present, false: none (serve's --no-verifier). */
  verifier?: string | false;
  servedModelName?: string;
  /** Serve a thinking model (e.g. Qwen3) as its own reasoner: see LoadServedOptions. */
  nativeThinking?: boolean;
  /** Progress of building the models' graphs from a checkpoint (see LoadServedOptions). */
  onLoadProgress?: (done: number, total: number) => void;
  /** loadModel's notes while loading (see LoadServedOptions), and the prompt cache file's when read and saved. */
  onLoadNote?: (note: string) => void;
  host?: string;
  port?: number;
  /**
   * Origins whose web pages may call the API from a browser (CORS), such as "http://localhost:3000", or "*" for any.
   * Default none: a browser then lets only the server's own pages (the playground) read its replies.
   */
  corsOrigins?: string[];
  /** Sequences decoding at once, across requests (rows of the batched decode). Default 16. */
  maxBatch?: number;
  /** Requests waiting for rows before 429. Default 64. */
  maxQueue?: number;
  /** Context limit (clamped to the model's). Default 4096. */
  ctx?: number;
  /** Largest n (choices) per request. Default min(8, maxBatch). */
  maxN?: number;
  /** Largest edgereason.samples per request. Default min(8, maxBatch). */
  maxSamples?: number;
  defaultMaxTokens?: number;
  /** Tokens of max_tokens the thinking cap leaves for the answer, at most half of max_tokens. Default 32. */
  answerReserve?: number;
  effortBudgets?: Partial<EffortBudgets>;
  defaultTemperature?: number;
  /**
   * Vote for requests that name none. Default majority: it suits any question, where the checked vote (8 points
   * above it on the embedded model's hard questions, docs/results.md) is for arithmetic word problems; the verifier
   * votes trail it, and confidence weighting matches it within noise.
   */
  defaultVote?: VoteMethod;
  /**
   * Speculative decoding by prompt lookup (GenerateOptions.promptLookup) for every request: the most tokens guessed per
   * step. A request decoding beside others steps without guesses (its steps join theirs in one batched run). 0: off.
   */
  promptLookup?: number;
  quant?: Quant;
  /** loadModel's ropeScaling: RoPE scaling in place of the model's own (YaRN for a long context). */
  ropeScaling?: RopeScalingChoice;
  threads?: number;
  /** MiB of prompt KV caches kept per model for requests that begin alike (loadModel's promptCache; default 256, or room for 4,096 positions where those take more; 0: none). */
  promptCache?: number;
  /**
   * A file the prompt cache is read from at start (when it exists) and saved to by close() when something new was
   * kept: prompts kept across restarts (a long system prompt prefilled once per deployment). One another model saved
   * is replaced then. Needs promptCache above 0.
   */
  promptCacheFile?: string;
  /** How long close() lets in-flight requests finish before cancelling them. Default 10 s. */
  shutdownGraceMs?: number;
  /**
   * A stream quiet this long (a long prefill, a queue, a vote) gets a `: keep-alive` comment, so that a proxy's idle
   * timeout does not cut it; 0: none (clients that read every line as JSON, as some benchmark clients do, fail on
   * one). Default 15 s.
   */
  sseKeepAliveMs?: number;
  /**
   * Where a chat reply's thinking goes: 'separate' (default) in `reasoning_content` (and vLLM's `reasoning`), as vLLM's
   * reasoning parsers and llama.cpp's --reasoning-format deepseek put it; 'inline' in `content`, between <think> and
   * </think>, as vLLM without a reasoning parser and llama.cpp's --reasoning-format none leave it (for clients that
   * read only `content`: benchmark clients then count and time the thinking too).
   */
  reasoningFormat?: 'separate' | 'inline';
  logger?: boolean;
}

export interface EdgeServer {
  app: FastifyInstance;
  served: Served;
  metrics: Metrics;
  admission: Admission;
  limits: ChatLimits;
  /** Starts listening; resolves with the base URL. */
  listen(): Promise<string>;
  /**
   * Stops accepting, lets in-flight requests finish for `graceMs` (default shutdownGraceMs), then cancels the rest.
   * A call while closing shortens that wait to its own `graceMs` and resolves when the first does, with how many
   * requests were still running when the wait ended (cancelled).
   */
  close(graceMs?: number): Promise<{ cancelled: number }>;
}

/** An id for a reply or tool call: `prefix` and 24 hex digits. */
const newId = (prefix: string) => `${prefix}${randomUUID().replace(/-/g, '').slice(0, 24)}`;
/** A parsed tool call as OpenAI sends it, with an id of its own. */
const toolCallOut = (c: ParsedToolCall) => ({ id: newId('call_'), type: 'function', function: { name: c.name, arguments: c.arguments } });
/** A chat choice's `logprobs` (null unless asked for). */
const choiceLogprobs = (plan: Plan, c: ChoiceOut) => (c.logprobs ? chatLogprobs(plan.served.model.tokenizer, c.logprobs, plan.logprobs!) : null);
/** A choice that ended by itself with tool calls finishes with "tool_calls", as OpenAI's do. */
const toolsFinish = (reason: string, called: boolean): string => (called && reason === 'stop' ? 'tool_calls' : reason);

const PLAYGROUND = new URL('./playground.html', import.meta.url);
/** Retry-After on 429 (queue full), in seconds. */
const RETRY_AFTER_S = 1;
/** Milliseconds a client may take to send a whole request (headers and body; the reply may take longer). */
const REQUEST_TIMEOUT_MS = 60_000;
/** After the last in-flight request, how long close() waits for connections to end before cutting them. */
const CLOSE_CONNECTIONS_AFTER_MS = 2000;

/** A loopback name or address: localhost (and *.localhost), 127.0.0.0/8 (also IPv4-mapped), ::1 however written. */
export const isLoopback = (name: string): boolean => {
  const ip = net.isIPv6(name) ? new net.SocketAddress({ address: name, family: 'ipv6' }).address.replace(/^::ffff:(?=\d+\.)/, '') : name;
  return ip === 'localhost' || ip.endsWith('.localhost') || ip === '::1' || (net.isIPv4(ip) && ip.startsWith('127.'));
};

/** The CORS headers the plugin put on a reply (--cors-origin), for a stream that writes its headers itself. */
function corsHeaders(reply: FastifyReply): Record<string, string> {
  return Object.fromEntries(Object.entries(reply.getHeaders()).filter(([k, v]) => (k.startsWith('access-control-') || k === 'vary') && v !== undefined).map(([k, v]) => [k, String(v)]));
}

/** The name in a Host header ("[::1]:8080" → "::1"), lower-cased; undefined without one. */
const hostName = (h: string | undefined): string | undefined => {
  if (!h) return undefined;
  const m = /^\[([^\]]*)\](?::\d*)?$/.exec(h) ?? /^([^:]*)(?::\d*)?$/.exec(h);
  return (m ? m[1] : h).toLowerCase().replace(/\.$/, '');
};

const MODEL_RULE: Rule = { what: 'the path of a model (a folder, a .gguf or llama2.c .bin file, or hf:owner/name), which the server loads itself', ok: is.text.ok };
const fileOrNone: Rule = { what: 'a file name, or false for none', ok: (v) => v === false || is.text.ok(v) };
/** The longest a timer waits (Node's setTimeout fires a longer one at once). */
const MAX_MS = 2 ** 31 - 1;
const EFFORTS = Object.keys(DEFAULT_EFFORT_BUDGETS);
/** Each option's rule, and the serve flag that sets it (named too: the CLI's values reach these checks). */
const SERVER_OPTIONS: Record<keyof ServerOptions, [Rule, string?]> = {
  model: [MODEL_RULE, '--model'],
  adapters: [{ what: 'a list of {name, dir} (the id it is served as: letters, digits and . _ : / -; its PEFT folder)', ok: (v) => Array.isArray(v) && v.every((a) => a !== null && typeof a === 'object' && typeof a.name === 'string' && ADAPTER_NAME.test(a.name) && is.text.ok(a.dir)) }, '--adapter'],
  router: [fileOrNone, '--router'], verifier: [fileOrNone, '--verifier'],
  servedModelName: [is.text, '--served-model-name'], nativeThinking: [is.bool, '--native-thinking'],
  onLoadProgress: [is.fn], onLoadNote: [is.fn],
  host: [is.text, '--host'], port: [is.intIn(0, 65535), '--port'],
  corsOrigins: [{ what: 'a list of origins (strings)', ok: (v) => Array.isArray(v) && v.every((x) => typeof x === 'string') }, '--cors-origin'],
  maxBatch: [is.int(1), '--max-batch'], maxQueue: [is.int(0), '--max-queue'], ctx: [is.int(2), '--ctx'],
  maxN: [is.int(1), '--max-n'], maxSamples: [is.int(1), '--max-samples'], defaultMaxTokens: [is.int(1), '--max-tokens'], answerReserve: [is.int(0), '--answer-reserve'],
  effortBudgets: [{ what: `an object of thinking tokens (integers ≥ 1) by effort (${EFFORTS.join(', ')})`, ok: (v) => is.object.ok(v) && Object.entries(v as object).every(([k, n]) => EFFORTS.includes(k) && is.int(1).ok(n)) }, '--reasoning-effort-budgets'],
  defaultTemperature: [{ what: 'a number in [0, 2]', ok: (v) => typeof v === 'number' && v >= 0 && v <= 2 }, '--temperature'],
  defaultVote: [is.oneOf(VOTE_METHODS), '--vote'], promptLookup: [{ ...is.intIn(0, 64), what: 'an integer from 0 to 64 (the most tokens guessed per step; 0: off)' }, '--prompt-lookup'],
  quant: [is.oneOf(QUANTS), '--quant'], ropeScaling: [is.object, '--rope-scaling'], threads: [is.intIn(1, MAX_THREADS), '--threads'],
  promptCache: [{ what: 'a number of MiB ≥ 0 (0: none)', ok: is.atLeast0.ok }, '--prompt-cache'], promptCacheFile: [is.text, '--prompt-cache-file'],
  shutdownGraceMs: [{ ...is.intIn(0, MAX_MS), what: `a whole number of milliseconds from 0 to ${MAX_MS}` }, '--shutdown-grace'],
  sseKeepAliveMs: [{ ...is.intIn(0, MAX_MS), what: `a whole number of milliseconds from 0 (none) to ${MAX_MS}` }, '--sse-keepalive'], reasoningFormat: [is.oneOf(['separate', 'inline']), '--reasoning-format'], logger: [is.bool, '--log'],
};

/** Refuses an unknown option or a bad value before anything loads, naming the option (and its serve flag). */
function checkServerOptions(o: ServerOptions): void {
  checkKeys(o, Object.keys(SERVER_OPTIONS), 'serve');
  if (o.model === undefined) throw new Error(`serve: model is required: ${MODEL_RULE.what}`);
  const rules = Object.fromEntries(Object.entries(SERVER_OPTIONS).map(([k, [rule]]) => [k, rule]));
  const named = (k: string) => { const flag = SERVER_OPTIONS[k as keyof ServerOptions][1]; return flag ? `${k} (${flag})` : k; };
  checkValues(o, rules, 'serve', named);
  if (o.ropeScaling !== undefined) checkRopeScalingChoice(o.ropeScaling, 'serve');
  // Options that contradict each other, before the model loads.
  if (o.promptCacheFile !== undefined && o.promptCache === 0) throw new Error(`serve: ${named('promptCacheFile')} keeps the prompt cache, and ${named('promptCache')} 0 keeps none: give it some MiB`);
  if (o.defaultVote?.startsWith('verifier') && o.verifier === false) throw new Error(`serve: ${named('defaultVote')} ${o.defaultVote} needs a verifier, and verifier false (--no-verifier) leaves it out`);
}

export async function createServer(o: ServerOptions): Promise<EdgeServer> {
  checkServerOptions(o);
  const inline = o.reasoningFormat === 'inline';
  // As browsers write them in an Origin header (the plugin compares the texts): "http://LocalHost:80" is http://localhost.
  const corsOrigins = (o.corsOrigins ?? []).map((origin) => {
    let url: URL | undefined;
    try { url = new URL(origin); } catch { /* refused below */ }
    if (origin === '*') return origin;
    if (!url || !/^https?:\/\/[^/\\\s?#@]+\/?$/i.test(origin)) throw new Error(`serve: corsOrigins (--cors-origin) must be origins such as http://localhost:3000 (scheme, host and port, no path) or *, got ${shown(origin)}`);
    return url.origin;
  });
  const metrics = new Metrics();
  const maxBatch = o.maxBatch ?? 16;
  // n choices (or a choice's samples) decode as rows of one batch: a request needing more rows than a batch holds is refused.
  for (const [k, flag] of [['maxN', '--max-n'], ['maxSamples', '--max-samples']] as const) {
    if (o[k] !== undefined && o[k]! > maxBatch) throw new Error(`serve: ${flag} ${o[k]} is more than --max-batch ${maxBatch}: a request's choices (and a choice's samples) decode together in one batch, so a request asking for more than ${maxBatch} would be refused; raise --max-batch or lower ${flag}`);
  }
  const served = await loadServed({
    model: o.model, adapters: o.adapters, servedModelName: o.servedModelName, nativeThinking: o.nativeThinking, router: o.router, verifier: o.verifier,
    quant: o.quant, ropeScaling: o.ropeScaling, threads: o.threads, promptCache: o.promptCache, maxBatch, onProgress: o.onLoadProgress, onNote: o.onLoadNote,
    onRun: (s) => { metrics.batchRows.observe(s.rows); metrics.runSeconds.observe(s.ms / 1000); },
  });
  const limits: ChatLimits = {
    ctx: Math.min(o.ctx ?? 4096, served.contextLength),
    maxN: o.maxN ?? Math.min(8, maxBatch), maxSamples: o.maxSamples ?? Math.min(8, maxBatch),
    defaultMaxTokens: o.defaultMaxTokens ?? 512, answerReserve: o.answerReserve ?? 32,
    effortBudgets: { ...DEFAULT_EFFORT_BUDGETS, ...o.effortBudgets }, defaultTemperature: o.defaultTemperature ?? served.sampling?.temperature ?? 1,
    defaultVote: o.defaultVote ?? 'majority', promptLookup: o.promptLookup ?? 0,
  };
  const size = (bytes: number) => (bytes >= 2 ** 30 ? `${gib(bytes)} GiB` : `${Math.ceil(bytes / 2 ** 20)} MiB`);
  // The limit said where it is not the model's context (/v1/models' max_model_len and the 400s' "maximum context length" are the limit's).
  const modelCtx = served.contextLength;
  if (limits.ctx < modelCtx) o.onLoadNote?.(`serve: note: ctx (--ctx) ${limits.ctx}${o.ctx === undefined ? ', the default,' : ''} limits each request to ${limits.ctx} tokens of the model's context of ${modelCtx}; --ctx ${modelCtx} serves all of it (a request that long holds ${size(kvBytes([...served.models.values()][0].model.config, 1, modelCtx))} of KV cache)`);
  else if (o.ctx !== undefined && o.ctx > modelCtx) o.onLoadNote?.(`serve: note: ctx (--ctx) ${o.ctx} is past the model's context of ${modelCtx} tokens: requests are limited to ${modelCtx}`);
  if (o.defaultMaxTokens !== undefined && o.defaultMaxTokens >= limits.ctx) o.onLoadNote?.(`serve: note: defaultMaxTokens (--max-tokens) ${o.defaultMaxTokens} reaches past the context of ${limits.ctx} tokens: a chat request that gives no max_tokens runs to the context's end`);
  const penalty = served.sampling?.repetition_penalty;
  if (limits.promptLookup && penalty != null && penalty !== 1) o.onLoadNote?.(`serve: note: ${path.join(o.model, 'generation_config.json')} asks for repetition_penalty ${penalty}, the default of requests that give none: --prompt-lookup makes no guesses under a penalty (a request's repetition_penalty 1 has them)`);
  const kept = promptCacheOf([...served.models.values()][0].backend); // (one session: its adapters share it)
  let keptFile: { save(): Promise<void> } | undefined;
  if (o.promptCacheFile) {
    try {
      if (!kept) throw new Error('serve: --prompt-cache-file keeps the prompt cache, and this model keeps none'); // (checkServerOptions refuses a promptCache of 0)
      keptFile = await openPromptCacheFile(kept, o.promptCacheFile, (note) => o.onLoadNote?.(note));
    } catch (e) {
      await served.close();
      throw e;
    }
  }
  if (limits.defaultVote.startsWith('verifier') && !served.verifier) {
    await served.close();
    throw new Error(`serve: --vote ${limits.defaultVote} needs a verifier (${o.verifier === false ? '--no-verifier leaves it out' : '--verifier <file>, or verifier.json in the model folder'})`);
  }
  for (const m of served.models.values()) {
    promptCharBound(m.model.tokenizer); // computed once, before the first request
    prepareJsonVocabulary(m.model.tokenizer); // so is the vocabulary index of response_format and forced tool calls
  }
  const admission = new Admission(maxBatch, o.maxQueue ?? 64);
  const inflight = new Map<symbol, { abort: AbortController; done: Promise<void> }>();
  let closing = false, shutdown: Promise<{ cancelled: number }> | undefined, shorten = (_ms: number) => {};
  metrics.gauge('edgereason_requests_running', 'Chat and text completion requests admitted and decoding', () => admission.active);
  metrics.gauge('edgereason_requests_waiting', 'Chat and text completion requests waiting for batch rows', () => admission.queued);
  metrics.gauge('edgereason_batch_rows_in_use', 'Batch rows held by admitted requests', () => admission.rowsInUse);
  metrics.gauge('edgereason_batch_rows_max', 'Batch rows available (--max-batch)', () => maxBatch);
  metrics.gauge('edgereason_prompt_cache_bytes', 'Bytes of prompt keys and values the prompt cache keeps (--prompt-cache)', () => kept?.size ?? 0);
  metrics.gauge('edgereason_prompt_cache_prompts', 'Prompts the prompt cache keeps', () => kept?.prompts ?? 0);
  metrics.gauge('process_resident_memory_bytes', 'Resident set size of the server process', () => process.memoryUsage.rss());

  const app = Fastify({
    logger: o.logger ?? false,
    bodyLimit: BODY_LIMIT,
    // A client that sends its headers and never the whole body held its connection for ever (Fastify's default 0
    // turns off Node's own limit): stalled ones, enough of them, use up the process's open files.
    requestTimeout: REQUEST_TIMEOUT_MS,
    return503OnClosing: false, // the handlers answer 503 themselves, with an OpenAI error body
    // Errors Fastify answers before any handler (a URL with a bad percent-escape): in the OpenAI error shape too.
    frameworkErrors: (err, _req, reply: FastifyReply) => {
      void reply.code(400).send(errorBody(`Invalid request: ${err.message}`, 'invalid_request_error', null, err.code === 'FST_ERR_BAD_URL' ? 'invalid_url' : 'invalid_request'));
    },
  });

  // Pages of the origins allowed may call the API (their preflight is answered, their replies carry the CORS headers).
  if (corsOrigins.length) await app.register(cors, { origin: corsOrigins.includes('*') ? '*' : corsOrigins, methods: ['GET', 'POST'], maxAge: 600 });
  // Bodies are JSON only: a text/plain body is refused by its content type (415), not read as a string.
  app.removeContentTypeParser('text/plain');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    if (req.is404) return done(null, undefined); // an unknown route is a 404 whatever its body holds
    try { done(null, parseJsonBody(body as Buffer, req.headers['content-type'])); } catch (e) { done(e as Error, undefined); }
  });
  // Ajv with allErrors names every unknown field at once, but makes an error per bad item: a million of them held the
  // event loop for 5 s (Fastify leaves allErrors off for that reason). So a body is checked for its first error, and
  // only a small one that fails is checked again for all of them.
  const ajvOptions = { coerceTypes: false, removeAdditional: false, useDefaults: false, addUsedSchema: false } as const;
  const firstOnly = new Ajv({ ...ajvOptions, allErrors: false }), every = new Ajv({ ...ajvOptions, allErrors: true });
  app.setValidatorCompiler(({ schema }) => {
    const quick = firstOnly.compile(schema), full = every.compile(schema);
    const validate = (data: unknown): boolean => {
      if (quick(data)) return true;
      validate.errors = valuesIn(data, ALL_ERRORS_UP_TO) <= ALL_ERRORS_UP_TO && !full(data) ? full.errors : quick.errors;
      return false;
    };
    validate.errors = null as ErrorObject[] | null | undefined;
    return validate;
  });
  // A client that asks before it sends (Expect: 100-continue, as curl does past 1 MiB) a body over the limit is told
  // 413 at once: Node would say "continue" and the body be read (up to DRAIN_LIMIT) only to be refused.
  app.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (Number(req.headers['content-length']) > BODY_LIMIT) {
      res.writeHead(413, { 'content-type': 'application/json; charset=utf-8', 'x-content-type-options': 'nosniff', connection: 'close' });
      res.end(JSON.stringify(tooLarge().toJSON()));
      return;
    }
    res.writeContinue();
    app.server.emit('request', req, res);
  });
  // A body that is not UTF-8 JSON is refused by parseJsonBody (an ApiError), before any handler.
  app.setErrorHandler(async (err: Error & { validation?: unknown[]; statusCode?: number; code?: string }, req, reply) => {
    // A body over the limit is refused from its length, before it is read: read the rest (up to a bound) before the
    // answer, or clients still sending it (the openai package) see the connection reset instead of the 413.
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') await drain(req.raw, DRAIN_LIMIT);
    let e: ApiError;
    if (err instanceof ApiError) e = err;
    else if (err.validation) e = validationError(err.validation as never, req.body);
    else if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      const type = req.headers['content-type'];
      e = new ApiError(415, `The request body must be sent as JSON with Content-Type: application/json; got ${type ? `Content-Type "${type}"` : 'no Content-Type'}.`, null, 'invalid_request_error', 'unsupported_media_type');
    } else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') e = tooLarge();
    else if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) e = new ApiError(err.statusCode, err.message, null);
    else {
      app.log.error(err);
      e = new ApiError(500, `Internal error: ${err.message}`, null, 'server_error');
    }
    if (e.status === 429) reply.header('retry-after', String(RETRY_AFTER_S));
    return reply.code(e.status).send(e.toJSON());
  });
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send(errorBody(`Unknown route ${req.method} ${req.url}`, 'invalid_request_error', null, 'unknown_url'));
  });
  app.addHook('onRequest', async (req, reply) => {
    // While closing, every response ends its connection: `Connection: close` where headers are still to be sent
    // (onSend), and for a stream that began before close() (its headers said keep-alive) the socket is ended once the
    // response is.
    const raw = reply.raw, socket = req.raw.socket;
    raw.once('finish', () => { if (closing && socket && !socket.destroyed) socket.end(); });
    // Each request is counted once, when its response closes: with its status once written whole (also when the
    // client left as it ended, before the response could finish: 'finish', and so onResponse, never came), else as
    // 499, the client gone; a streamed reply stopped because the client left says so (cancelledReplies). Before the
    // Host check: the hooks after one that answers do not run, and its 403s count too.
    raw.once('close', () => {
      metrics.requests.inc({ route: req.routeOptions.url ?? 'unknown', code: cancelledReplies.has(raw) || !raw.writableEnded ? '499' : String(failedStreams.get(raw) ?? raw.statusCode) });
    });
  });
  // Listening on loopback only, the server answers only to loopback names: a web page whose name an attacker's DNS
  // points at 127.0.0.1 (DNS rebinding) sends its own name as Host, and its scripts would otherwise reach the API.
  // Decided from the address bound (--host LOCALHOST or 127.1 are loopback too), once listening.
  let loopbackOnly: string | undefined;
  app.addHook('onRequest', async (req, reply) => {
    const name = hostName(req.headers.host);
    if (loopbackOnly === undefined || name === undefined || isLoopback(name)) return;
    return reply.code(403).send(errorBody(`The Host header names "${name}", but this server listens on ${loopbackOnly} and answers to localhost names only (a page reached by DNS rebinding sends its own); a reverse proxy in front of it should send Host: localhost, or serve with --host to answer to other names.`, 'invalid_request_error', null, 'forbidden_host'));
  });

  // Nothing the server sends is read as another type than it is sent as, and the playground is not shown framed in
  // another site's page (where its buttons could be clicked through it).
  app.addHook('onSend', async (_req, reply, payload) => {
    if (closing) reply.header('connection', 'close');
    reply.header('x-content-type-options', 'nosniff');
    cutOffWhenStalled(reply.raw); // (a large reply, n choices with their log-probabilities, to a client that reads none of it)
    return payload;
  });
  const playground = fs.readFileSync(PLAYGROUND);
  app.get('/', async (_req, reply) => reply.type('text/html; charset=utf-8').header('content-security-policy', "frame-ancestors 'none'").header('x-frame-options', 'DENY').send(playground));
  app.get('/health', async (_req, reply) => {
    // A model whose runtime worker died refuses every request: unhealthy, so that a supervisor restarts the server.
    const failed = [...served.models.values()].map((m) => m.model.backend.failed).find((f) => f !== undefined);
    const body = { status: closing ? 'closing' : failed ? 'failed' : 'ok', ...(failed ? { error: failed } : {}), models: [...served.models.keys()], running: admission.active, queued: admission.queued };
    return reply.code(closing || failed ? 503 : 200).send(body);
  });
  app.get('/metrics', async (_req, reply) => reply.type('text/plain; version=0.0.4; charset=utf-8').send(metrics.render()));
  const modelCard = (m: ServedModel) => ({ id: m.id, object: 'model', created: m.created, owned_by: 'edgereason', root: m.parent ?? m.id, parent: m.parent ?? null, max_model_len: limits.ctx });
  app.get('/v1/models', async () => ({
    object: 'list',
    data: [...served.models.values()].map((m) => ({
      ...modelCard(m),
      edgereason: { kind: m.kind, reasoning: m.kind !== 'base', budgets: m.budgets, router: !!served.router && m.kind !== 'base', verifier: !!served.verifier, default: m.id === served.defaultId },
    })),
  }));
  // A wildcard: model ids may hold "/" (adapter names, --served-model-name org/model), sent unencoded by curl.
  app.get('/v1/models/*', async (req) => modelCard(servedModel(served, (req.params as { '*': string })['*'])));

  app.post('/v1/chat/completions', { schema: { body: chatRequestSchema } }, async (req: FastifyRequest, reply: FastifyReply) => {
    const start = performance.now();
    if (closing) throw new ApiError(503, 'The server is shutting down', null, 'server_error');
    const plan = planChat(req.body as ChatRequest, served, limits);
    return admitted(reply, plan.rows, plan.stream, async (abort, waited, stream) => {
      const id = newId('chatcmpl-'), created = Math.floor(Date.now() / 1000);
      if (plan.stream) {
        await streamChat(plan, stream(), reply, id, created, start, waited, abort);
        return reply;
      }
      const out = await runChat(plan, served, abort.signal, undefined, start);
      if (abort.signal.aborted) throw new AbortedError(); // cut short by shutdown (or a client already gone): not an answer
      record(plan, out);
      return {
        id, object: 'chat.completion', created, model: plan.served.id, system_fingerprint: null,
        choices: out.choices.map((c) => {
          // A forced call's opening was the end of the prompt: the reply continues it.
          const text = (plan.prefix ?? '') + c.content, calls = plan.tools ? parseToolCalls(text, plan.tools, plan.toolNames) : undefined, called = !!calls?.calls.length;
          if (calls && plan.oneCall) calls.calls.splice(1);
          return {
            index: c.index,
            message: {
              role: 'assistant', ...thinkingFields(c, called ? calls!.content || null : text), refusal: null,
              ...(called ? { tool_calls: calls!.calls.map(toolCallOut) } : {}),
            },
            logprobs: choiceLogprobs(plan, c), finish_reason: toolsFinish(c.finishReason, called),
          };
        }),
        usage: out.usage,
        edgereason: report(plan, out, waited),
      };
    });
  });

  app.post('/v1/completions', { schema: { body: completionRequestSchema } }, async (req: FastifyRequest, reply: FastifyReply) => {
    const start = performance.now();
    if (closing) throw new ApiError(503, 'The server is shutting down', null, 'server_error');
    const plan = planCompletion(req.body as CompletionRequest, served, limits);
    return admitted(reply, plan.rows.length, plan.stream, async (abort, _waited, stream) => {
      const id = newId('cmpl-'), created = Math.floor(Date.now() / 1000);
      const body = (choices: unknown[], extra: Record<string, unknown> = {}) => ({ id, object: 'text_completion', created, model: plan.served.id, system_fingerprint: null, choices, ...extra });
      // (Token ids echo as the text they decode to.)
      const echoed = (row: number) => { const p = plan.rows[row]; return !plan.echo ? '' : typeof p === 'string' ? p : plan.served.model.tokenizer.decode(p); };
      // An echoed prompt's tokens come first, scored (its first token has no log-probability: null).
      const logprobsOf = (c: Completion, p?: PromptLogprobs) => (plan.logprobs === undefined ? null : completionLogprobs(plan.served.model.tokenizer, {
        tokens: [...(p?.tokens ?? []), ...c.tokens], logprobs: [...(p?.logprobs ?? []), ...c.logprobs], top: [...(p?.top ?? []), ...(c.topLogprobs ?? c.tokens.map(() => []))],
      }, plan.logprobs, (i) => (p && i < p.tokens.length ? i >= p.added : !plan.served.model.tokenizer.specialIds?.has(c.tokens[i - (p?.tokens.length ?? 0)])), !!p)); // the prompt as typed: its special tokens too
      if (!plan.stream) {
        const { out, prompts } = await runCompletion(plan, abort.signal);
        if (abort.signal.aborted) throw new AbortedError();
        const usage = completionUsage(plan, out);
        recordCompletion(usage, out, start);
        return body(out.map((c, i) => ({ index: i, text: echoed(i) + c.text, logprobs: logprobsOf(c, prompts?.[Math.floor(i / plan.n)]), finish_reason: completionFinish(c) })), { usage });
      }
      const sse = stream();
      // (Streamed, a choice's log-probabilities come whole with its finish_reason: the pieces are text, not tokens.)
      const piece = (index: number, text: string, finish: string | null = null, logprobs: unknown = null) => sse.send(body([{ index, text, logprobs, finish_reason: finish }], plan.includeUsage ? { usage: null } : {}));
      if (plan.echo) plan.rows.forEach((_, i) => piece(i, echoed(i)));
      await streamRun(sse, reply, abort, () => runCompletion(plan, abort.signal, (row, text) => piece(row, text)), ({ out, prompts }) => {
        const usage = completionUsage(plan, out);
        recordCompletion(usage, out, start);
        out.forEach((c, i) => piece(i, '', completionFinish(c), logprobsOf(c, prompts?.[Math.floor(i / plan.n)])));
        if (plan.includeUsage) sse.send(body([], { usage }));
      });
      return reply;
    });
  });

  /**
   * Runs an admitted request: takes its batch rows (429 when the queue is full), cancels it when its client goes away
   * or the server closes (`abort`), and gives the rows back however it ends. A streamed request (`streamed`) that has to wait for rows opens its stream at once, so that its headers and then
   * keep-alive comments reach the client while it waits (a client's or proxy's timeout would cut a long wait short);
   * `stream()` gives the run that stream, opened then or now.
   */
  async function admitted<T>(reply: FastifyReply, rows: number, streamed: boolean, run: (abort: AbortController, waitedMs: number, stream: () => SseWriter) => Promise<T>): Promise<T | FastifyReply> {
    let sse: SseWriter | undefined;
    const stream = () => {
      if (!sse) { reply.hijack(); sse = new SseWriter(reply.raw, { ...corsHeaders(reply), ...(closing ? { connection: 'close' } : {}) }, o.sseKeepAliveMs ?? KEEP_ALIVE_MS); }
      return sse;
    };
    const abort = new AbortController();
    const onClose = () => { if (!reply.raw.writableFinished) abort.abort(); };
    reply.raw.on('close', onClose);
    const key = Symbol('request');
    let finish!: () => void;
    inflight.set(key, { abort, done: new Promise<void>((r) => { finish = r; }) });
    let release: (() => void) | undefined;
    try {
      let waited: number;
      try {
        ({ release, waitedMs: waited } = await admission.acquire(rows, abort.signal, streamed ? stream : undefined));
      } catch (e) {
        if (e instanceof ApiError && e.status === 429) metrics.rejected.inc();
        if (!sse) throw e;
        // Left the queue of an open stream: the client went away (499), or the server is closing (503), said in it.
        if (e instanceof ApiError && e.status === 499) endCancelled(sse, reply);
        else {
          if (closing) metrics.cancelled.inc(); // (a 200 stream: counted as cut short by the shutdown, as one running is)
          streamError(sse, reply, e);
        }
        return reply;
      }
      metrics.queueWait.observe(waited / 1000);
      return await run(abort, waited, stream);
    } catch (e) {
      if (e instanceof AbortedError || (e instanceof ApiError && e.status === 499)) {
        metrics.cancelled.inc();
        if (reply.sent || reply.raw.headersSent) return reply;
        if (!closing && reply.raw.destroyed) cancelledReplies.add(reply.raw); // the client is gone: counted as 499
        throw new ApiError(closing ? 503 : 499, closing ? 'The server shut down before the request finished' : 'client closed the request', null, 'server_error');
      }
      throw e;
    } finally {
      release?.();
      reply.raw.off('close', onClose);
      inflight.delete(key);
      finish();
    }
  }

  /**
   * Ends a stream its request was cancelled in: shutting down, it says so, so a client never takes the text so far
   * for a whole answer (OpenAI's clients stop quietly at the end of the body); a client that left hears nothing.
   */
  function endCancelled(sse: SseWriter, reply: FastifyReply): void {
    metrics.cancelled.inc();
    if (closing) streamError(sse, reply, new ApiError(503, 'The server shut down before the request finished', null, 'server_error'));
    else {
      cancelledReplies.add(reply.raw);
      sse.end();
    }
  }

  /** A finished request in /metrics: its usage as its reply says it (each prompt once), prompt-lookup guesses and times. */
  function recordRun(usage: Usage, guesses: { made: number; kept: number }, ttftMs: number, latencyMs: number): void {
    metrics.promptTokens.inc({}, usage.prompt_tokens);
    metrics.cachedTokens.inc({}, usage.prompt_tokens_details.cached_tokens);
    metrics.completionTokens.inc({}, usage.completion_tokens);
    metrics.guessedTokens.inc({}, guesses.made);
    metrics.keptGuesses.inc({}, guesses.kept);
    metrics.ttft.observe(ttftMs / 1000);
    metrics.latency.observe(latencyMs / 1000);
  }

  function recordCompletion(usage: Usage, out: readonly Completion[], start: number): void {
    const guessed = (f: 'made' | 'kept') => out.reduce((a, c) => a + (c.guesses?.[f] ?? 0), 0);
    recordRun(usage, { made: guessed('made'), kept: guessed('kept') }, Math.min(...out.map((c) => c.ttftMs)), performance.now() - start);
  }

  function record(plan: Plan, out: ChatOutcome): void {
    recordRun(out.usage, out.guesses, out.ttftMs, out.latencyMs);
    metrics.reasoningTokens.inc({}, out.usage.completion_tokens_details.reasoning_tokens);
    metrics.routes.inc({ route: out.route, model: plan.served.id });
  }

  /** A reply's content and thinking fields, as reasoningFormat puts them. */
  function thinkingFields(c: ChoiceOut, content: string | null): { content: string | null; reasoning_content: string | null; reasoning: string | null } {
    const thinking = c.route === 'reasoning' ? c.thinking : null;
    // (An empty thinking gets no block, as none streams.)
    if (inline && thinking) return { content: `${THINK_OPEN}${thinking}${THINK_CLOSE}${content ?? ''}`, reasoning_content: null, reasoning: null };
    const field = inline ? null : thinking;
    return { content, reasoning_content: field, reasoning: field };
  }

  async function streamChat(plan: Plan, sse: SseWriter, reply: FastifyReply, id: string, created: number, start: number, waited: number, abort: AbortController): Promise<void> {
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => ({
      id, object: 'chat.completion.chunk', created, model: plan.served.id, system_fingerprint: null, choices,
      ...(plan.includeUsage ? { usage: null } : {}), ...extra,
    });
    const started = new Set<number>();
    const delta = (index: number, d: Record<string, unknown>, extra: Record<string, unknown> = {}) => {
      if (!started.has(index)) { started.add(index); d = { role: 'assistant', ...d }; }
      sse.send(chunk([{ index, delta: d, logprobs: null, finish_reason: null }], extra));
    };
    // A choice's finish_reason goes out as soon as it ends, as OpenAI and vLLM send it, except the last choice's
    // without a usage chunk: it carries the edgereason report, which only the end of the request completes.
    const finished = new Set<number>(), held = new Set<number>();
    // With tools, a choice's text that may begin a tool call is held back; its calls go out as one delta each before its finish_reason.
    // (A forced call's opening, the end of the prompt, goes in first: the reply continues it.)
    const toolStreams = new Map<number, ToolCallStream>();
    const push = (index: number, text: string) => {
      let t = toolStreams.get(index);
      if (!t) { toolStreams.set(index, t = new ToolCallStream(plan.tools, plan.toolNames)); text = (plan.prefix ?? '') + text; }
      const now = t.push(text);
      if (now) delta(index, { content: now });
      return t;
    };
    // reasoningFormat 'inline': the thinking streams as content, opened by <think> and closed by </think> before the
    // answer's first piece (or the finish).
    const thinkingOpen = new Set<number>();
    const closeThinking = (index: number) => { if (thinkingOpen.delete(index)) delta(index, { content: THINK_CLOSE }); };
    const thinkingPiece = (index: number, text: string) => {
      if (!inline) return delta(index, { reasoning_content: text, reasoning: text });
      const first = !thinkingOpen.has(index);
      thinkingOpen.add(index);
      delta(index, { content: first ? THINK_OPEN + text : text });
    };
    const content = (index: number, text: string) => { closeThinking(index); return plan.tools ? void push(index, text) : delta(index, { content: text }); };
    const finish = (index: number, reason: string, extra: Record<string, unknown> = {}, logprobs: unknown = null) => {
      closeThinking(index);
      const t = toolStreams.get(index) ?? (plan.prefix !== undefined ? push(index, '') : undefined);
      if (t) {
        toolStreams.delete(index);
        const { content: rest, calls } = t.end();
        if (plan.oneCall) calls.splice(1);
        if (rest) delta(index, { content: rest });
        calls.forEach((c, k) => delta(index, { tool_calls: [{ index: k, ...toolCallOut(c) }] }));
        reason = toolsFinish(reason, calls.length > 0);
      }
      if (!started.has(index)) delta(index, { content: '' });
      sse.send(chunk([{ index, delta: {}, logprobs, finish_reason: reason }], extra));
    };
    const onEvent = (e: ChatEvent) => {
      if (e.type === 'end') {
        finished.add(e.choice);
        // With logprobs, every finish waits for the answer's tokens, which come with the result (it carries them).
        if (plan.logprobs === undefined && (plan.includeUsage || finished.size < plan.n)) finish(e.choice, e.finishReason);
        else held.add(e.choice);
      } else if (e.type === 'route') {
        for (let i = 0; i < plan.n; i++) if (!started.has(i)) delta(i, { content: '' }, { edgereason: { route: e.route, ...(e.routerScore !== undefined ? { router_score: e.routerScore } : {}) } });
      } else if (e.phase === 'thinking') thinkingPiece(e.choice, e.text);
      else content(e.choice, e.text);
    };
    await streamRun(sse, reply, abort, () => runChat(plan, served, abort.signal, onEvent, start), (out) => {
      record(plan, out);
      // The edgereason report (route, votes, TTFT) rides on the last chunk: the usage chunk (choices: []) when
      // stream_options.include_usage asks for one, as OpenAI sends it, else the last finish_reason chunk.
      const rep = { edgereason: report(plan, out, waited) };
      const rest = out.choices.filter((c) => !finished.has(c.index) || held.has(c.index));
      // With logprobs, a choice's come whole with its finish_reason (the streamed pieces are text, not tokens).
      rest.forEach((c, k) => finish(c.index, c.finishReason, !plan.includeUsage && k === rest.length - 1 ? rep : {}, choiceLogprobs(plan, c)));
      if (plan.includeUsage) sse.send(chunk([], { usage: out.usage, ...rep }));
    });
  }

  /**
   * A streamed request's run and end: `run` decodes it (streaming its pieces), `end` sends what closes it (finish
   * reasons, usage) before [DONE]. A run that fails is said in the stream, as an error event after the 200; one
   * cancelled ends it as endCancelled does; a failure writing the end still ends the stream, with the error (the client
   * would wait for it).
   */
  async function streamRun<T>(sse: SseWriter, reply: FastifyReply, abort: AbortController, run: () => Promise<T>, end: (out: T) => void): Promise<void> {
    let out: T | undefined;
    try {
      out = await run();
    } catch (e) {
      if (!(e instanceof AbortedError) && !abort.signal.aborted) return streamError(sse, reply, e);
    }
    if (abort.signal.aborted || out === undefined) return endCancelled(sse, reply);
    try {
      end(out);
      sse.done();
    } catch (e) {
      streamError(sse, reply, e);
    }
  }

  return {
    app, served, metrics, admission, limits,
    async listen() {
      const url = await app.listen({ host: o.host ?? '127.0.0.1', port: o.port ?? 8080 });
      const bound = app.server.address();
      if (bound && typeof bound === 'object' && isLoopback(bound.address)) loopbackOnly = bound.address;
      return url;
    },
    close(graceMs = o.shutdownGraceMs ?? 10_000) {
      if (!is.intIn(0, MAX_MS).ok(graceMs)) return Promise.reject(new Error(`serve: close() takes a grace of whole milliseconds from 0 to ${MAX_MS}, got ${shown(graceMs)}`));
      // A later call shortens the grace of the one under way (a second Ctrl-C: cancel now) and resolves with it.
      if (shutdown) {
        shorten(graceMs);
        return shutdown;
      }
      return (shutdown = closeOnce(graceMs));
    },
  };

  async function closeOnce(graceMs: number) {
    closing = true;
    admission.drain(new ApiError(503, 'The server is shutting down', null, 'server_error'));
    const closed = app.close(); // stops accepting; chat requests on open keep-alive connections get 503 (their handler)
    const all = () => Promise.all([...inflight.values()].map((r) => r.done));
    const timers: NodeJS.Timeout[] = [];
    await Promise.race([all(), new Promise<void>((r) => {
      shorten = (ms) => { timers.push(setTimeout(r, ms)); };
      shorten(graceMs);
    })]);
    timers.forEach(clearTimeout);
    shorten = () => {}; // the grace is over: a later call has nothing to cut short (and starts no timer)
    const cancelled = inflight.size;
    for (const r of inflight.values()) r.abort.abort();
    await all();
    // Responses finished while closing end their connections (the hooks above); a connection still open a moment
    // later (a client that never finished sending its request, a stalled download) is cut.
    let cut: NodeJS.Timeout | undefined;
    await Promise.race([closed, new Promise<void>((r) => { cut = setTimeout(r, CLOSE_CONNECTIONS_AFTER_MS); })]);
    clearTimeout(cut);
    app.server.closeAllConnections();
    await closed;
    // Saved before the session closes (its keys and values are read from it); a failure is the close's error.
    const saved = keptFile?.save();
    await saved?.catch(() => undefined);
    await served.close();
    await saved;
    return { cancelled };
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A JSON request body: UTF-8 (another declared charset is refused, and bytes that are not UTF-8 are not turned into
 * replacement characters), and no "__proto__" or "constructor.prototype" key (refused by name: merged into an
 * object, such a key would change its prototype).
 */
export function parseJsonBody(body: Buffer, contentType: string | undefined): unknown {
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(contentType ?? '')?.[1];
  if (charset && !/^utf-?8$/i.test(charset)) throw new ApiError(415, `The request body must be UTF-8 JSON; got charset "${charset}".`, null, 'invalid_request_error', 'unsupported_media_type');
  let text: string;
  try { text = UTF8.decode(body); } catch { throw new ApiError(400, 'The request body is not valid UTF-8.', null, 'invalid_request_error', 'invalid_json'); }
  if (!text.trim()) throw new ApiError(400, 'The request body is not valid JSON: it is empty.', null, 'invalid_request_error', 'invalid_json');
  let parsed: unknown;
  try { parsed = JSON.parse(text); } catch (e) { throw new ApiError(400, `The request body is not valid JSON: ${(e as Error).message}`, null, 'invalid_request_error', 'invalid_json'); }
  // The tools' text, so that the chat template prints their numbers as written (20.0, as transformers prints them).
  const tools = (parsed as { tools?: unknown } | null)?.tools;
  if (Array.isArray(tools) && tools.length) keepSource(tools, topLevelText(text, 'tools'));
  // One walk without recursion (a body nested thousands deep is valid JSON): keys that could change an object's
  // prototype, and a nesting deeper than what reads the request (schemas, templates, validation) recurses through.
  // Only objects and lists are visited, each with its place (its parent's and its key), spelt out only for the error.
  const stack: Place[] = parsed && typeof parsed === 'object' ? [{ value: parsed, key: '', depth: 1 }] : [];
  while (stack.length) {
    const place = stack.pop()!;
    if (place.depth > MAX_BODY_DEPTH) {
      const at = fieldOf(place), field = at.length > 80 ? `${at.slice(0, 80)}…` : at;
      throw new ApiError(400, `The request body nests objects and lists deeper than ${MAX_BODY_DEPTH} levels (at '${field}'), more than this server reads.`, /^[^.[]+/.exec(at)?.[0] ?? null, 'invalid_request_error', 'invalid_value');
    }
    const list = Array.isArray(place.value);
    for (const key in place.value) {
      const v = (place.value as Record<string, unknown>)[key];
      if (!list && (key === '__proto__' || (key === 'constructor' && v && typeof v === 'object' && 'prototype' in v))) {
        throw new ApiError(400, `The request body holds the key "${key === '__proto__' ? key : 'constructor.prototype'}", which is refused (it could change an object's prototype).`, null, 'invalid_request_error', 'invalid_json');
      }
      if (v && typeof v === 'object') stack.push({ value: v, key, parent: place, depth: place.depth + 1 });
    }
  }
  return parsed;
}

/** An object or list of a request body: what holds it, and its key there (none at the top). */
type Place = { value: object; key: string; parent?: Place; depth: number };

/** A place in the body as the field it is (messages[0].content), from its parents' keys. */
function fieldOf(place: Place): string {
  const keys: [key: string, inList: boolean][] = [];
  for (let p: Place | undefined = place; p?.parent; p = p.parent) keys.unshift([p.key, Array.isArray(p.parent.value)]);
  return keys.reduce((at, [key, inList]) => (inList ? `${at}[${key}]` : at ? `${at}.${key}` : key), '');
}

/** The most values a failing request body may hold to have every error of it found (its unknown fields all named). */
const ALL_ERRORS_UP_TO = 10_000;

/** How many values (objects, lists and scalars) `v` holds, counted up to just past `max`. */
function valuesIn(v: unknown, max: number): number {
  let n = 0;
  const stack = [v];
  while (stack.length && n <= max) {
    const x = stack.pop();
    n++;
    if (x !== null && typeof x === 'object') for (const y of Object.values(x)) stack.push(y);
  }
  return n;
}

/** How deep a request body may nest objects and lists (a JSON schema or a tool's parameters a few levels; 1,000 exhausted the stack). */
const MAX_BODY_DEPTH = 64;

/** The largest request body the server reads (a 1,000-message conversation is a few hundred KB). */
const BODY_LIMIT = 4 * 1024 * 1024;

const tooLarge = () => new ApiError(413, `The request body is larger than this server takes (${BODY_LIMIT / 2 ** 20} MiB).`, null, 'invalid_request_error', 'request_too_large');

/** How much of a refused oversized body is read before the 413 (past it, the connection is closed as before). */
const DRAIN_LIMIT = 64 * 1024 * 1024;

/** Reads and drops what is left of a request's body, up to `max` bytes. */
function drain(req: IncomingMessage, max: number): Promise<void> {
  if (req.readableEnded || req.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    let n = 0;
    const done = () => { req.off('data', data).off('end', done).off('error', done).off('close', done); resolve(); };
    const data = (b: Buffer) => { if ((n += b.length) > max) done(); };
    req.on('data', data).once('end', done).once('error', done).once('close', done);
  });
}
