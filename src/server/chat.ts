/**
 * Chat completions: an OpenAI request → a plan (model, prompt, sampling, reasoning mode, thinking budget and cap,
 * how `n` maps onto answer() calls) → answer() calls → choices, usage and the `edgereason` report.
 *
 * `n` and the reasoning controls:
 * - reasoning on (or auto, and the router picks reasoning): ONE answer() call with `samples = n`, forked from
 *   one prefill; the n samples are the n choices and their vote is reported (`edgereason.votes`, `chosen`; the
 *   checked vote's `flaws` per sample, the verifier votes' `verifier_scores`).
 * - reasoning off, the base model, or auto routed to the direct answer: n independent answer() calls with seeds
 *   seed, seed+1, … (OpenAI semantics: n choices).
 * - `edgereason.samples = k`: every choice is an answer() call with k voting samples; its content is the voted
 *   answer (streamed once the vote is in). Each choice reports its own votes, chosen sample and escalation in
 *   `edgereason.choices[i]`; the top-level `votes`, `chosen` and `escalated` are the first choice's.
 *
 * Thinking budget: `thinking_token_budget` (vLLM's per-request field) wins over `reasoning_effort`, which maps
 * through the server's effort → tokens table. The tokens are the hard thinking cap; for an adapter RL-trained on
 * prompted budgets (rl_log.json) the reasoning turn also carries the largest trained bucket within the cap (the
 * smallest bucket when none is) as its budget control line (after the invocation), so the length the model aims
 * for is one the cap lets it finish. The cap never
 * exceeds max_tokens minus a reserve for the answer, so the thinking segment cannot eat the whole completion.
 * Reasoning controls that contradict each other (an effort or budget asking for thinking with reasoning off, or
 * "none" / 0 with reasoning on or auto) are refused, naming both.
 *
 * Tools (templates that write Hermes-format or Llama's JSON calls): the template gets `tools`; replies are read for calls (app.ts). A forced call
 * (`tool_choice` naming a function, or "required") and vLLM's `continue_final_message` begin the reply in the prompt
 * (the call's opening, or the last message's content) and answer without thinking.
 *
 * finish_reason: "stop", "length", "tool_calls" (a reply that ended by itself with calls), or vLLM's "abort" for a
 * sample edgereason.early_stop cut off once the vote was decided (its text is incomplete; edgereason.choices[i].finish
 * says "early-stop").
 */
import { randomUUID } from 'node:crypto';
import type { ChatMessage, TextTokenizer } from '../tokenizer/types.ts';
import { ChatTemplateError } from '../tokenizer/hf.ts';
import { encodeChat } from '../tokenizer/chat-ids.ts';
import type { AnswerOptions, AnswerResult, Phase, ReasoningMode, Route, VoteMethod } from '../reason/types.ts';
import { ALLOWED_NEXT, answer, EMPTY_THINKING, JSON_LENIENT, PROMPT_IDS, REPLY_PREFIX, UNVOTED, maxThinkingCap, reasoningTokens, templateVars, thinkingModelPrompt } from '../reason/answer.ts';
import { budgetControl, DEFAULT_BUDGETS } from '../reason/budget.ts';
import { isVerifierVote } from '../reason/vote.ts';
import { AbortedError, ContextLengthError } from '../runtime/errors.ts';
import { endsWithRun, stopList, type GenerateOptions } from '../runtime/generate.ts';
import { onAbort } from '../runtime/abort.ts';
import { seedAt, seedOrFresh } from '../runtime/sampler.ts';
import { requestModel, servedModel, type Served, type ServedModel } from './models.ts';
import { ApiError, checkUnsupported, type ChatMessageIn, type ChatRequest, type Effort, type SamplingRequest } from './schemas.ts';
import { compileJsonSchema, jsonConstraint, stopCuts, tokenBytesOf, type JsonConstraint } from '../runtime/json-constraint.ts';
import { argumentsObject, jsonDepth, templateFor, TOOL_CALL_CLOSE, TOOL_CALL_OPEN, toolCallFormat, toolNameConstraint, type ToolCallFormat } from '../tokenizer/tool-calls.ts';
import { promptCharBound } from '../tokenizer/prompt-bound.ts';
import { textOffsets, type TokenLogprobs } from './logprobs.ts';

export type EffortBudgets = Record<Exclude<Effort, 'none'>, number>;
/** reasoning_effort → thinking budget: the RL buckets (DEFAULT_BUDGETS), minimal half of the smallest. */
export const DEFAULT_EFFORT_BUDGETS: EffortBudgets = { minimal: 48, low: DEFAULT_BUDGETS[0], medium: DEFAULT_BUDGETS[1], high: DEFAULT_BUDGETS[2] };

export interface ChatLimits {
  /** Context the server allows (≤ the model's). */
  ctx: number;
  maxN: number;
  maxSamples: number;
  defaultMaxTokens: number;
  /** Tokens of max_tokens kept for the answer when capping the thinking segment. */
  answerReserve: number;
  effortBudgets: EffortBudgets;
  defaultTemperature: number;
  /** How samples are combined when a request names no edgereason.vote. */
  defaultVote: VoteMethod;
  /** serve --prompt-lookup: the most tokens guessed per step (0: off). */
  promptLookup?: number;
}

export interface Plan {
  served: ServedModel;
  messages: ChatMessage[];
  /** The messages' tokens, as answer() would encode them (before a thinking model's empty block). */
  promptIds: number[];
  promptTokens: number;
  n: number;
  /** Voting samples per choice (edgereason.samples); undefined = n maps to samples / independent calls. */
  perChoice?: number;
  mode: ReasoningMode;
  /** Sequences this request decodes at once (admission control). */
  rows: number;
  options: AnswerOptions & { [JSON_LENIENT]?: boolean };
  maxTokens: number;
  thinkingCap?: number;
  budget?: number;
  seed: number;
  stream: boolean;
  includeUsage: boolean;
  /** The request offers tools: replies are read for tool calls, in the format the chat template writes them in. */
  tools?: ToolCallFormat;
  /** The names of the tools offered (a JSON-format reply calling another is an answer, not a call). */
  toolNames?: string[];
  /** parallel_tool_calls false: a reply's first call only. */
  oneCall: boolean;
  /** A forced tool call's opening, the end of the prompt: the reply's text continues it. */
  prefix?: string;
  /**
   * The tool calls' constraint: a forced call's reply after the prefix, and (tool_choice "auto") any call the model
   * opens, writes one of the tools' names and arguments its parameters schema allows, then the call's end.
   */
  callOf?: (tokens: readonly number[]) => ArrayLike<number> | undefined;
  /** response_format's constraint, made (and checked) once here: each answer() call takes a tracker of its own. */
  jsonOf?: JsonConstraint;
  /** logprobs: the answer tokens' log-probabilities, and this many of the most likely tokens at each (top_logprobs). */
  logprobs?: number;
  /** continue_final_message: the last message's content as the prompt ends with it; the reply continues it (votes read the two together). */
  continued?: string;
}

/** A message's text; several text parts are joined with newlines, as vLLM joins them. */
function text(content: ChatRequest['messages'][number]['content']): string {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  return content.filter((p) => p.type === 'text' && typeof p.text === 'string').map((p) => p.text).join('\n');
}

const MAX_ARGUMENT_DEPTH = 64;

/**
 * JSON text of a tool call's arguments, parsed: the chat template prints them (tojson), as transformers renders them
 * (an integer beyond 2^53 as written: argumentsObject).
 */
function toolArguments(json: string, param: string): Record<string, unknown> {
  let v: Record<string, unknown>;
  try { v = argumentsObject(json, param); } catch {
    throw new ApiError(400, `Invalid value for '${param}': the arguments must be the JSON text of an object, got ${JSON.stringify(json.length > 60 ? `${json.slice(0, 60)}…` : json)}.`, param);
  }
  // The template prints them again (tojson, recursively): a deeper nesting would overflow its stack.
  if (jsonDepth(json) > MAX_ARGUMENT_DEPTH) throw new ApiError(400, `Invalid value for '${param}': the arguments nest deeper than ${MAX_ARGUMENT_DEPTH} levels.`, param);
  return v;
}

/**
 * The rendered conversation cut after the last message's content (transformers' continue_final_message): the
 * template's end-of-turn after it goes. Where that content is printed is found by rendering a marker in its place, so
 * the cut is in the last turn whatever the template does to whitespace (Qwen3 strips leading newlines, Llama 3
 * trims) and whatever else holds the same text; its trailing whitespace stays when the template prints it. A
 * template that does not print the content (its non-blank text) at that place cannot continue it. Returns the prompt
 * and the content's printed text, which the prompt ends with.
 */
function continued(render: (messages: ChatMessage[]) => string, messages: ChatMessage[], final: number): { prompt: string; printed: string } {
  const content = messages[final].content, text = content.trim(), mark = `edgereason${randomUUID().replace(/-/g, '')}`;
  const rendered = render(messages), from = render(messages.map((m, i) => (i === final ? { ...m, content: mark } : m))).indexOf(mark);
  const at = text && from >= 0 ? rendered.indexOf(text, from) : -1;
  if (at < 0 || rendered.slice(from, at).trim()) {
    throw new ApiError(400, `Invalid value for 'continue_final_message': the chat template does not print the last message's content as given${text ? '' : ' (it is blank)'}, so there is nothing to continue.`, 'continue_final_message', 'invalid_request_error', 'invalid_value');
  }
  const tail = content.slice(content.trimEnd().length), end = at + text.length + (tail && rendered.startsWith(tail, at + text.length) ? tail.length : 0);
  return { prompt: rendered.slice(0, end), printed: rendered.slice(at, end) };
}

/**
 * A request message as the chat template reads it: developer → system; an assistant reply's thinking
 * (reasoning_content, or vLLM's reasoning, or a <think>…</think> block opening its content) and tool calls, a tool result's call id, and any message's name go with it.
 */
function chatMessage(msg: ChatMessageIn, i: number, continued = false): ChatMessage {
  const out: ChatMessage = { role: msg.role === 'developer' ? 'system' : msg.role, content: text(msg.content) };
  if (msg.role === 'assistant') {
    let thinking = msg.reasoning_content ?? msg.reasoning;
    // A reply sent back as serve --reasoning-format inline wrote it (and llama.cpp's "none"): its thinking opens its content.
    const inline = continued ? null : /^<think>([\s\S]*?)<\/think>/.exec(out.content);
    if (inline && thinking == null) { thinking = inline[1]; out.content = out.content.slice(inline[0].length); }
    if (thinking != null) out.reasoning_content = thinking;
    if (msg.tool_calls?.length) {
      out.tool_calls = msg.tool_calls.map((c, j) => ({
        ...(c.id !== undefined ? { id: c.id } : {}), type: 'function' as const,
        function: { name: c.function.name, arguments: toolArguments(c.function.arguments, `messages[${i}].tool_calls[${j}].function.arguments`) },
      }));
    }
  }
  if (msg.role === 'tool' && msg.tool_call_id !== undefined) out.tool_call_id = msg.tool_call_id;
  if (msg.name !== undefined) out.name = msg.name; // a tool's; or a participant's, for templates that print it
  return out;
}

/**
 * Tool results answer the calls before them, as OpenAI's API requires: a tool message follows an assistant message's
 * tool_calls (or another tool message after them) and answers one of its calls, and each call gets its result before
 * the conversation goes on. A history cut in the middle of a call would otherwise reach the model as a turn that
 * answers nothing, or a call never answered.
 */
function checkToolTurns(msgs: readonly ChatMessageIn[], continued: boolean): void {
  let open: (string | undefined)[] | undefined, at = -1; // the calls of the last assistant message with tool_calls, not yet answered
  const unanswered = () => {
    if (!open?.length) return;
    const ids = open.filter((id) => id !== undefined);
    throw new ApiError(400, `An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. ${ids.length ? `The following tool_call_ids did not have response messages: ${ids.join(', ')}` : `${open.length} of its calls had no response message`}.`, `messages[${at}].tool_calls`);
  };
  msgs.forEach((msg, i) => {
    if (msg.role === 'tool') {
      if (!open) throw new ApiError(400, `Invalid parameter: messages with role 'tool' must be a response to a preceding message with 'tool_calls' (messages[${i}]).`, `messages[${i}].role`);
      const k = msg.tool_call_id === undefined || open.every((id) => id === undefined) ? (open.length ? 0 : -1) : open.indexOf(msg.tool_call_id);
      if (k < 0) throw new ApiError(400, `Invalid parameter: messages[${i}].tool_call_id ${JSON.stringify(msg.tool_call_id)} answers none of the calls of messages[${at}] (${open.length ? open.map((id) => JSON.stringify(id ?? null)).join(', ') : 'all answered'}).`, `messages[${i}].tool_call_id`);
      open.splice(k, 1);
      return;
    }
    unanswered();
    open = msg.role === 'assistant' && msg.tool_calls?.length ? msg.tool_calls.map((c) => c.id) : undefined;
    at = i;
  });
  if (!continued) unanswered(); // a last message continued is refused for its calls below, in its own words
}

/**
 * The reasoning mode the request's controls ask for. `edgereason.reasoning` names it; `reasoning_effort` "none",
 * `thinking_token_budget` 0 and `chat_template_kwargs.enable_thinking` false (Qwen3's switch: the template writes an
 * empty thinking block) ask for reasoning off, any other effort or budget for reasoning on (or, with
 * reasoning "auto", for that budget when the router picks reasoning). Controls that contradict each other are
 * refused (400 naming both) rather than one of them winning silently.
 */
function reasoningMode(req: ChatRequest): ReasoningMode {
  const effort = req.reasoning_effort ?? undefined, budget = req.thinking_token_budget ?? undefined, ext = req.edgereason?.reasoning;
  const noThinking = req.chat_template_kwargs?.enable_thinking === false;
  const off = effort === 'none' ? `'reasoning_effort' "none"` : budget === 0 ? `'thinking_token_budget' 0` : noThinking ? `'chat_template_kwargs.enable_thinking' false` : undefined;
  const on = effort !== undefined && effort !== 'none' ? `'reasoning_effort' "${effort}"` : budget !== undefined && budget > 0 ? `'thinking_token_budget' ${budget}` : undefined;
  const conflict = (param: string, a: string, b: string) => {
    throw new ApiError(400, `Conflicting reasoning controls: ${a}, but ${b}. Send one of them, or make them agree.`, param, 'invalid_request_error', 'conflicting_parameters');
  };
  if (off && on) conflict(noThinking && !(effort === 'none' || budget === 0) ? 'chat_template_kwargs' : 'thinking_token_budget', `${off} turns reasoning off`, `${on} asks for thinking`);
  if (ext === 'off' && on) conflict('edgereason.reasoning', `'edgereason.reasoning' "off" turns reasoning off`, `${on} asks for thinking`);
  // enable_thinking true is Qwen3's default and asks for nothing by itself, but it contradicts a control that turns thinking off.
  if (req.chat_template_kwargs?.enable_thinking === true && (off || ext === 'off')) {
    conflict('chat_template_kwargs', `'chat_template_kwargs.enable_thinking' true asks for thinking`, `${off ?? `'edgereason.reasoning' "off"`} turns it off`);
  }
  if ((ext === 'on' || ext === 'auto') && off) {
    conflict('edgereason.reasoning', `'edgereason.reasoning' "${ext}" ${ext === 'on' ? 'forces reasoning on' : 'lets the router choose reasoning'}`, `${off} turns it off`);
  }
  return ext ?? (off ? 'off' : on ? 'on' : 'auto');
}

/** finish_reason: "abort" (vLLM's) for a sample that early stopping (edgereason.early_stop) or a cancel cut short. */
export function finishReason(f: AnswerResult['samples'][number]['finishReason']): 'stop' | 'length' | 'abort' {
  return f === 'length' ? 'length' : f === 'stop' ? 'stop' : 'abort';
}

/** The most characters of a response_format schema, and of the tools, made into constraints (as JSON text). */
const MAX_SCHEMA_CHARS = 256 * 1024, MAX_TOOLS_CHARS = 1024 * 1024;

/**
 * A request's sampling fields as generate options. One the request leaves out is the model's generation_config.json's
 * (as vLLM); the temperature's default (serve --temperature, else that file's, else 1) is the server's limit.
 */
export function samplingOptions(req: SamplingRequest, served: Served, limits: ChatLimits, max: { tokens: number; param: string; given: boolean }): Pick<GenerateOptions, 'temperature' | 'topP' | 'topK' | 'minP' | 'repetitionPenalty' | 'presencePenalty' | 'frequencyPenalty' | 'stop' | 'promptLookup' | 'minTokens' | 'ignoreEos' | 'cacheSalt'> {
  const own = served.sampling ?? {}, topP = req.top_p ?? own.top_p, topK = req.top_k ?? own.top_k, minP = req.min_p ?? own.min_p;
  const repetitionPenalty = req.repetition_penalty ?? own.repetition_penalty, stop = req.stop == null ? [] : stopList(req.stop);
  // vLLM's: with ignore_eos no end token ends the reply (benchmark clients ask for max_tokens tokens so), with min_tokens
  // none before that many (nor a stop string). Nothing is generated at max_tokens 0 (/v1/completions' echo).
  if (req.skip_special_tokens === false) throw new ApiError(400, "Unsupported value: 'skip_special_tokens' false is not supported by edgereason: the text is decoded without the special tokens (vLLM's default, true).", 'skip_special_tokens', 'invalid_request_error', 'unsupported_value');
  if (req.min_tokens && max.tokens && req.min_tokens > max.tokens) throw new ApiError(400, `Invalid value for 'min_tokens': ${req.min_tokens} is more than ${max.param} (${max.tokens}${max.given ? '' : ', the default'}).`, 'min_tokens');
  const minTokens = max.tokens ? req.min_tokens ?? 0 : 0, ignoreEos = !!max.tokens && !!req.ignore_eos;
  return {
    temperature: req.temperature ?? limits.defaultTemperature,
    ...(topP != null ? { topP } : {}),
    ...(topK != null && topK > 0 ? { topK } : {}),
    ...(minP != null ? { minP } : {}),
    ...(repetitionPenalty != null && repetitionPenalty !== 1 ? { repetitionPenalty } : {}),
    ...(req.presence_penalty ? { presencePenalty: req.presence_penalty } : {}),
    ...(req.frequency_penalty ? { frequencyPenalty: req.frequency_penalty } : {}),
    ...(stop.length ? { stop } : {}),
    ...(limits.promptLookup ? { promptLookup: limits.promptLookup } : {}),
    ...(minTokens ? { minTokens } : {}),
    ...(ignoreEos ? { ignoreEos } : {}),
    ...(req.cache_salt ? { cacheSalt: req.cache_salt } : {}),
  };
}

/** Validates a request against the served models and limits (ApiError 400 naming the field) and plans it. */
export function planChat(req: ChatRequest, served: Served, limits: ChatLimits): Plan {
  checkUnsupported(req);
  const m = servedModel(served, req.model);
  const n = req.n ?? 1;
  if (n > limits.maxN) throw new ApiError(400, `Invalid value for 'n': ${n} is more than this server allows (${limits.maxN}).`, 'n');
  const ext = req.edgereason ?? {};
  const perChoice = ext.samples;
  if (perChoice !== undefined && perChoice > limits.maxSamples) throw new ApiError(400, `Invalid value for 'edgereason.samples': ${perChoice} is more than this server allows (${limits.maxSamples}).`, 'edgereason.samples');
  if (isVerifierVote(ext.vote) && !served.verifier) {
    throw new ApiError(400, `Invalid value for 'edgereason.vote': "${ext.vote}" needs a verifier; start the server with --verifier.`, 'edgereason.vote');
  }
  // In OpenAI's API only an assistant message that made tool calls may come without content.
  const bare = req.messages.findIndex((msg) => msg.content == null && !(msg.role === 'assistant' && msg.tool_calls?.length));
  if (bare >= 0) throw new ApiError(400, `Invalid value for 'messages[${bare}].content': ${/^[aeio]/.test(req.messages[bare].role) ? 'an' : 'a'} ${req.messages[bare].role} message must have content.`, `messages[${bare}].content`);
  const misplaced = req.messages.findIndex((msg) => msg.role !== 'assistant' && msg.tool_calls?.length);
  if (misplaced >= 0) throw new ApiError(400, `Invalid value for 'messages[${misplaced}].tool_calls': only an assistant message makes tool calls, not a ${req.messages[misplaced].role} message.`, `messages[${misplaced}].tool_calls`);
  // (The message continue_final_message continues keeps its text as given: the reply goes on from it, a <think> block too.)
  const messages: ChatMessage[] = req.messages.map((msg, i) => chatMessage(msg, i, req.continue_final_message === true && i === req.messages.length - 1));
  // Tools go to the chat template, which must write calls the way replies are read (tool_choice "none": no tools offered).
  // A template without them would drop the tools, or an earlier turn's calls, unsaid.
  const tools = req.tools?.length && req.tool_choice !== 'none' ? req.tools : undefined;
  const forcing = req.tool_choice === 'required' || (!!req.tool_choice && typeof req.tool_choice === 'object');
  const forcedBy = `'tool_choice' ${typeof req.tool_choice === 'string' ? '"required"' : 'naming a function'}`; // (when forcing)
  if (forcing && !req.tools?.length) {
    throw new ApiError(400, `Invalid value for 'tool_choice': ${typeof req.tool_choice === 'string' ? '"required"' : 'a named function'} asks for a tool call, and the request has no 'tools'.`, 'tool_choice', 'invalid_request_error', 'invalid_value');
  }
  if (forcing && req.stop != null && stopList(req.stop).length) {
    throw new ApiError(400, `Unsupported value: 'stop' with ${forcedBy}: ${stopCuts('the tool call')}; leave out 'stop'.`, 'stop', 'invalid_request_error', 'unsupported_value');
  }
  const minimum = req.ignore_eos ? 'ignore_eos' : req.min_tokens ? 'min_tokens' : undefined;
  if (req.ignore_eos && (perChoice ?? 1) > 1) throw new ApiError(400, `Unsupported value: 'ignore_eos' with 'edgereason.samples' ${perChoice}: no sample would end by itself, and only those vote; leave out one of them.`, 'ignore_eos', 'invalid_request_error', 'unsupported_value');
  if (minimum && (forcing || (req.response_format?.type ?? 'text') !== 'text')) {
    throw new ApiError(400, `Unsupported value: '${minimum}' with ${forcing ? forcedBy : `'response_format' ${req.response_format!.type}`}: the constraint on the reply could leave the model no token to draw but its end; leave out '${minimum}'.`, minimum, 'invalid_request_error', 'unsupported_value');
  }
  const toolTurn = req.messages.findIndex((msg) => msg.role === 'tool' || msg.tool_calls?.length);
  const format = toolCallFormat(templateFor(m.model.tokenizer, tools));
  if ((tools || toolTurn >= 0) && !format) {
    const param = tools ? 'tools' : req.messages[toolTurn].role === 'tool' ? `messages[${toolTurn}].role` : `messages[${toolTurn}].tool_calls`;
    throw new ApiError(400, `Unsupported value: '${param}': the chat template of the model '${m.id}' does not write tool calls in a format edgereason reads them in (Hermes: <tool_call>{"name": …, "arguments": …}</tool_call>, as the templates of Qwen2.5 and Qwen3 do; or the call's JSON, {"name": …, "parameters": …}, as Llama 3.1's to 3.3's do).`, param, 'invalid_request_error', 'unsupported_value');
  }
  checkToolTurns(req.messages, req.continue_final_message === true);
  if (req.chat_template_kwargs && Object.hasOwn(req.chat_template_kwargs, 'tools')) {
    throw tools ? new ApiError(400, `Conflicting parameters: 'tools' and 'chat_template_kwargs.tools' both give the chat template its tools; send them in 'tools'.`, 'chat_template_kwargs', 'invalid_request_error', 'conflicting_parameters')
      : new ApiError(400, `Invalid value for 'chat_template_kwargs': send the tools in 'tools', where the reply's calls are read too (and a template that cannot write them is refused).`, 'chat_template_kwargs', 'invalid_request_error', 'invalid_value');
  }

  // Reasoning mode and thinking budget.
  const effort = req.reasoning_effort ?? undefined, budgetReq = req.thinking_token_budget ?? undefined;
  let mode = reasoningMode(req);
  // An effort or budget asks for thinking under "auto" too (the budget of the reasoning route the router may pick).
  const wantsReasoning = mode === 'on' || (mode === 'auto' && ((effort !== undefined && effort !== 'none') || (budgetReq !== undefined && budgetReq > 0)));
  const thinkingParam = ext.reasoning === 'on' ? 'edgereason.reasoning' : effort !== undefined ? 'reasoning_effort' : 'thinking_token_budget'; // what asked for it
  if (m.kind === 'base') {
    if (wantsReasoning) {
      const adapters = [...served.models.values()].filter((s) => s.kind !== 'base').map((s) => s.id);
      throw new ApiError(400, `The model '${m.id}' has no reasoning adapter, so it cannot reason${adapters.length ? `; use ${adapters.map((a) => `'${a}'`).join(' or ')}` : ' (a model that thinks by itself, such as Qwen3, is served with --native-thinking)'}.`, thinkingParam);
    }
    mode = 'off';
  }
  // A reply begun by the request is answered directly: thinking cannot come before text already written.
  const begun = (what: string) => {
    if (wantsReasoning && mode !== 'off') {
      throw new ApiError(400, `Conflicting parameters: ${what}, but '${thinkingParam}' asks for thinking before it. Send one of them.`, thinkingParam, 'invalid_request_error', 'conflicting_parameters');
    }
    mode = 'off';
  };
  // continue_final_message (vLLM's): the last message, an assistant's, is continued: the prompt ends with its content.
  const final = req.messages.length - 1, cont = req.continue_final_message === true;
  if (req.add_generation_prompt != null && req.add_generation_prompt === cont) {
    throw new ApiError(400, cont ? `Conflicting parameters: 'continue_final_message' true continues the last message, but 'add_generation_prompt' true begins a new one. Send one of them.`
      : `Invalid value for 'add_generation_prompt': false (the messages without a reply's opening) is taken only with 'continue_final_message' true.`, 'add_generation_prompt', 'invalid_request_error', cont ? 'conflicting_parameters' : 'invalid_value');
  }
  if (cont) {
    if (messages[final].role !== 'assistant') throw new ApiError(400, `Invalid value for 'continue_final_message': true continues the last message, which must be an assistant's (it is a ${req.messages[final].role} message).`, 'continue_final_message', 'invalid_request_error', 'invalid_value');
    if (messages[final].tool_calls) throw new ApiError(400, `Invalid value for 'messages[${final}].tool_calls': 'continue_final_message' continues the last message's text, and its tool calls come after it.`, `messages[${final}].tool_calls`, 'invalid_request_error', 'invalid_value');
    if (tools || forcing) throw new ApiError(400, `Unsupported value: 'continue_final_message' true with tools is not supported by edgereason (a forced tool call begins the reply itself).`, 'continue_final_message', 'invalid_request_error', 'unsupported_value');
    begun(`'continue_final_message' true continues the last message`);
  }
  // Schemas are made into machines before the prompt is measured: ones too large to be worth it are refused first
  // (3.6 MB of enum took 1 s of the main thread and 25 MB kept; 2.4 MB of tools 3.3 s). The tools are printed into the
  // prompt, so more text than the context holds cannot be sent (nor more than 1 MiB, where a long context would hold it);
  // a response format's schema is not printed, and is held to 256 KiB.
  const bound = promptCharBound(m.model.tokenizer), toolsText = tools ? JSON.stringify(tools).length : 0;
  if (toolsText > MAX_TOOLS_CHARS) throw new ApiError(400, `Invalid value for 'tools': they are ${toolsText} characters long (as JSON), more than this server makes into constraints (${MAX_TOOLS_CHARS}).`, 'tools', 'invalid_request_error', 'invalid_value');
  if (bound && toolsText > limits.ctx * bound.maxTokenChars) {
    throw new ApiError(400, `This model's maximum context length is ${limits.ctx} tokens. However, your tools are ${toolsText} characters long, and no token of this model spans more than ${bound.maxTokenChars} characters, so they need more than ${limits.ctx} tokens. Please reduce the length of the tools.`, 'tools', 'invalid_request_error', 'context_length_exceeded');
  }
  const schemaText = req.response_format?.json_schema?.schema ? JSON.stringify(req.response_format.json_schema.schema).length : 0;
  if (schemaText > MAX_SCHEMA_CHARS) throw new ApiError(400, `Invalid value for 'response_format.json_schema.schema': it is ${schemaText} characters long, more than this server makes into a constraint (${MAX_SCHEMA_CHARS}).`, 'response_format.json_schema.schema', 'invalid_request_error', 'invalid_value');
  // A function marked strict is held to its parameters exactly, as OpenAI's strict mode: what the constraint cannot hold
  // to is refused rather than left out (the others' parameters are held to leniently, below).
  tools?.forEach((t, i) => {
    if (t.function.strict !== true) return;
    const where = `tools[${i}].function.parameters`, p = t.function.parameters;
    try {
      if (!p || p.type !== 'object') throw new Error(`${where} of a strict function must be a schema of type "object", got ${p ? (p.type === undefined ? 'no type' : `type ${JSON.stringify(p.type)}`) : 'no parameters'}`);
      compileJsonSchema(p, where);
    } catch (e) { throw new ApiError(400, (e as Error).message, where, 'invalid_request_error', 'invalid_value'); }
  });
  // tool_choice "required" or a named function: the reply is begun with the call's opening (after the generation
  // prompt), so the model writes a call; it answers directly (a thinking model after its empty thinking block).
  let prefix: string | undefined, callOf: Plan['callOf'];
  if (tools && forcing) {
    const named = req.tool_choice && typeof req.tool_choice === 'object' ? req.tool_choice.function.name : tools.length === 1 ? tools[0].function.name : undefined;
    if (named !== undefined && !tools.some((t) => t.function.name === named)) {
      throw new ApiError(400, `Invalid value for 'tool_choice': it names the function ${JSON.stringify(named)}, which is not one of the tools (${tools.map((t) => JSON.stringify(t.function.name)).join(', ')}).`, 'tool_choice', 'invalid_request_error', 'invalid_value');
    }
    begun(`${forcedBy} makes the reply a tool call`);
    // (Up to the colon: Qwen's tokenizer joins the space after it to the brace, " {\"", so a trailing space would be a token the model never saw there.)
    const [open, key] = format === 'json' ? ['', 'parameters'] : [`${TOOL_CALL_OPEN}\n`, 'arguments'];
    prefix = named !== undefined ? `${open}{"name": ${JSON.stringify(named)}, "${key}":` : `${open}{"name": "`;
    // The call is held to JSON by constrained decoding: the name one of the tools' ("required" with several: OpenAI's
    // calls one of them), the arguments what its parameters schema allows (leniently: keywords outside the supported
    // subset, such as "format", are not held to, as OpenAI's non-strict calls are not), then the call's end.
    const forced = tools.filter((t) => named === undefined || t.function.name === named);
    try {
      callOf = jsonConstraint(m.model.tokenizer, callSchema(forced, key), 'tools', { begun: prefix.slice(open.length), after: format === 'json' ? '' : `\n${TOOL_CALL_CLOSE}`, lenient: true, notInStrings: TOOL_TAGS }).tracker();
    } catch { // parameters the machine cannot read even so (a $ref to another document, ...): the name alone is held
      if (named === undefined) callOf = toolNameConstraint(m.model.tokenizer, tools.map((t) => t.function.name));
    }
  } else if (tools && !minimum) { // (under min_tokens or ignore_eos the calls are read, not held to their form: that could leave no token to draw)
    // tool_choice "auto": free until the model opens a call itself (Hermes: "<tool_call>"; JSON: a reply that begins
    // with "{"); that call is then held as a forced one is.
    try {
      const hermes = format === 'hermes', tok = m.model.tokenizer;
      const c = jsonConstraint(tok, callSchema(tools, hermes ? 'arguments' : 'parameters'), 'tools', { after: hermes ? `\n${TOOL_CALL_CLOSE}` : '', lenient: true, notInStrings: TOOL_TAGS });
      callOf = hermes ? openedCalls(tok, c) : jsonReplyCall(tok, c);
    } catch { /* free, as before */ }
  }
  // Structured output: the answer (after any thinking) is held to JSON by constrained decoding.
  const responseFormat = req.response_format?.type ?? 'text';
  let json: AnswerOptions['json'], lenient = false, jsonOf: JsonConstraint | undefined;
  if (responseFormat !== 'text') {
    if (responseFormat === 'json_schema' && !req.response_format!.json_schema) throw new ApiError(400, "Missing required parameter: 'response_format.json_schema'.", 'response_format.json_schema', 'invalid_request_error', 'missing_required_parameter');
    if (tools) throw new ApiError(400, `Unsupported value: 'response_format' ${responseFormat} with 'tools' is not supported by edgereason: the JSON constraint would keep the model from writing a tool call (send tool_choice "none", or leave out one of them).`, 'response_format', 'invalid_request_error', 'unsupported_value');
    if (req.stop != null && stopList(req.stop).length) throw new ApiError(400, `Unsupported value: 'stop' with 'response_format' ${responseFormat}: ${stopCuts('the JSON')}; leave out 'stop'.`, 'stop', 'invalid_request_error', 'unsupported_value');
    if (cont) throw new ApiError(400, `Unsupported value: 'response_format' ${responseFormat} with 'continue_final_message' is not supported by edgereason (the message continued is not held to the JSON).`, 'response_format', 'invalid_request_error', 'unsupported_value');
    json = responseFormat === 'json_object' ? true : req.response_format!.json_schema!.schema ?? {};
    // A schema without strict: true is held to leniently, as a non-strict function's parameters are (OpenAI holds the
    // model to neither): keywords the constraint cannot hold to ("minimum", "pattern", "format", ...) are left out.
    lenient = responseFormat === 'json_schema' && req.response_format!.json_schema!.strict !== true;
    const where = 'response_format.json_schema.schema';
    // Made here to refuse a schema it cannot hold to (the error names the schema's path), and kept for the answer.
    try { jsonOf = jsonConstraint(m.model.tokenizer, json, where, { lenient }); } catch (e) { throw new ApiError(400, (e as Error).message, where, 'invalid_request_error', 'invalid_value'); }
  }
  let cap = budgetReq !== undefined && budgetReq > 0 ? budgetReq : effort && effort !== 'none' ? limits.effortBudgets[effort] : undefined;
  const budgetAsked = cap !== undefined;

  // Prompt and context. A prompt longer than ctx × the longest token (in characters) cannot fit: refused before
  // tokenizing it, which for megabytes of text would hold up every other request's decoding for seconds. More
  // messages than context tokens are refused before the chat template renders them (135,000 empty ones: 5 s).
  const ctx = limits.ctx, given = templateVars(m.model, req.chat_template_kwargs ?? undefined, m.kind === 'native').vars, kwargs = tools ? { ...given, tools } : given;
  // The field a problem with the template's variables is named by: the tools are one, named so when the request sends no other.
  const kwName = tools && !Object.keys(req.chat_template_kwargs ?? {}).length ? 'tools' : 'chat_template_kwargs';
  if (messages.length > ctx) {
    throw new ApiError(400, `Invalid 'messages': ${messages.length} messages are more than this server takes in one request (${ctx}, the context length of the model: each message takes at least one token of its chat template).`,
      'messages', 'invalid_request_error', 'context_length_exceeded');
  }
  // Rendered once: measured here, tokenized below. A template or kwargs error is said after the question check.
  let rendered: string | undefined, renderError: unknown, printed: string | undefined;
  const renderBare = (msgs: ChatMessage[]) => m.model.renderChat(msgs, kwargs, 'chat', false);
  const render = (msgs: ChatMessage[]) => (cont ? continued(renderBare, msgs, final).prompt : m.model.renderChat(msgs, kwargs, 'chat'));
  try {
    if (cont) ({ prompt: rendered, printed } = continued(renderBare, messages, final));
    else rendered = render(messages);
  } catch (e) { renderError = e; }
  // What is measured is the rendered text: the template renders the kwargs too (tools, documents), and a template
  // may make much more text than it is given.
  if (bound) {
    const chars = rendered === undefined ? 0 : bound.normalizedLength(rendered);
    if (chars > ctx * bound.maxTokenChars) {
      // Rendered without the kwargs they would fit: what the template made of the kwargs (tools, documents) does not.
      let kw = false;
      if (kwargs && Object.keys(kwargs).length) try { kw = bound.normalizedLength(m.model.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true })) <= ctx * bound.maxTokenChars; } catch { /* as without */ }
      const what = kw ? `your messages with the ${kwName}` : 'your messages';
      throw new ApiError(400, `This model's maximum context length is ${ctx} tokens. However, ${what} are ${chars} characters long (with the chat template), and no token of this model spans more than ${bound.maxTokenChars} characters, so they need more than ${ctx} tokens. Please reduce the length of the ${kw ? kwName : 'messages'}.`,
        kw ? kwName : 'messages', 'invalid_request_error', 'context_length_exceeded');
    }
  }
  // The question a reply answers: an empty one would be answered with whatever the model makes up.
  const last = messages.length - 1;
  if (messages[last].role === 'user' && !messages[last].content.trim()) throw new ApiError(400, `Invalid value for 'messages[${last}].content': the last user message (the question) is empty.`, `messages[${last}].content`);
  let ids: number[], opening = 0; // opening: what a forced call's opening adds to the rendered prompt's tokens
  try {
    if (rendered === undefined) throw renderError;
    ids = encodeChat(m.model.tokenizer, messages, render, rendered, 'chat'); // a message's special-token text stays text
    // A forced call's opening: a thinking model's after its empty thinking block (closing one its template opened).
    if (prefix !== undefined) {
      const tok = m.model.tokenizer, head = m.kind === 'native' ? thinkingModelPrompt(tok, ids, reasoningTokens(m.model).invocation, false) : ids;
      const before = ids.length;
      ids = [...head, ...tok.encode(prefix, { addSpecialTokens: false })];
      opening = ids.length - before;
    }
  } catch (e) {
    if (e instanceof ApiError) throw e;
    // The server's fault, said without its file paths.
    if (e instanceof ChatTemplateError && e.kind === 'broken') throw new ApiError(500, `The chat template of the model '${m.id}' failed: ${e.message.replace(/^tokenizer: the chat template of .*? (failed|does not parse): /, '')}`, null, 'server_error');
    const msg = (e as Error).message.replace(/^tokenizer: the chat template of .*? refuses these messages: /, 'the chat template refuses these messages: ');
    const param = /chatTemplateKwargs/.test(msg) ? kwName : 'messages';
    throw new ApiError(400, `Invalid '${param}': ${msg.replace(/chatTemplateKwargs(\.tools\b)?/, (_, t) => (param === 'tools' ? 'tools' : `chat_template_kwargs${t ?? ''}`))}`, param);
  }
  // A thinking model's direct answer follows the empty thinking block answer() adds (unless the template wrote it);
  // its reasoning route adds "<think>" and no budget line.
  const promptIds = ids;
  const native = m.kind === 'native', empty = native ? m.model.tokenizer.encode(EMPTY_THINKING, { addSpecialTokens: false }) : [];
  if (native && mode === 'off' && prefix === undefined && !cont && !endsWithRun(ids, empty)) ids = [...ids, ...empty];
  // Kept back beyond the prompt: the invocation and budget line (a thinking model: its empty block or "<think>").
  const kept = mode === 'off' ? 0 : native ? (mode === 'auto' ? empty.length : 1) : reasoningReserve(m, budgetAsked), reserve = 1 + kept; // plus one completion token
  if (ids.length + reserve > ctx) {
    const tail = ids.length >= ctx ? ''
      : kept && native ? `, and ${kept} more are kept back for the thinking tags (reasoning "${mode}"${mode === 'auto' ? ': "<think>", or the empty thinking block of a direct answer' : ''}), which leaves too little room for a completion`
      : kept ? `, and ${kept} more are kept back for the reasoning invocation and budget line (reasoning "${mode}"${mode === 'auto' ? ' may take the reasoning route' : ''}), which leaves too little room for a completion`
        : ', which leaves too little room for a completion';
    // Off keeps nothing back (a thinking model's direct answer still needs its empty block, so no hint there).
    const hint = kept && !native && ids.length < ctx ? ', or turn reasoning off (edgereason.reasoning "off" or reasoning_effort "none")' : '';
    // The tools' fault when the messages would fit without them (the template prints every tool's schema).
    let without: number | undefined;
    if (tools) try { without = m.model.encode(messages, true, given, 'chat').length + opening + (ids.length - promptIds.length); } catch { /* as with them */ }
    if (without !== undefined && without + reserve <= ctx) {
      throw new ApiError(400, `This model's maximum context length is ${ctx} tokens. However, your messages with the tools resulted in ${ids.length} tokens (${without} without them)${tail}. Please reduce the number or length of the tools.`, 'tools', 'invalid_request_error', 'context_length_exceeded');
    }
    throw new ApiError(400, `This model's maximum context length is ${ctx} tokens. However, your messages resulted in ${ids.length} tokens${tail}. Please reduce the length of the messages${hint}.`, 'messages', 'invalid_request_error', 'context_length_exceeded');
  }
  const asked = req.max_completion_tokens ?? req.max_tokens ?? undefined;
  const askedParam = req.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens';
  if (asked !== undefined && asked > ctx) throw new ApiError(400, `Invalid value for '${askedParam}': ${asked} is more than this model's context of ${ctx} tokens.`, askedParam);
  if (asked !== undefined && ids.length + kept + asked > ctx) {
    const keptNote = !kept ? '' : native ? `, ${kept} kept back for the thinking tags` : `, ${kept} kept back for the reasoning invocation and budget line`;
    throw new ApiError(400, `This model's maximum context length is ${ctx} tokens. However, you requested ${ids.length + kept + asked} tokens (${ids.length} in the messages${keptNote}, ${asked} in the completion). Please reduce the length of the messages or completion.`, askedParam, 'invalid_request_error', 'context_length_exceeded');
  }
  const maxTokens = asked ?? Math.min(limits.defaultMaxTokens, ctx - ids.length - kept);
  // The thinking segment always leaves room for the answer.
  if (mode !== 'off') {
    // ... and for closing it (answer() refuses a cap above maxThinkingCap): a max_tokens too small to close any
    // thinking has no cap, its thinking is cut off as it would be.
    const room = Math.min(maxThinkingCap(reasoningTokens(m.model).closing, maxTokens), maxTokens - Math.min(limits.answerReserve, Math.floor(maxTokens / 2)));
    cap = room < 0 ? undefined : Math.min(cap ?? room, room);
  }
  // The budget line the model reads: the largest trained bucket within the cap it will actually be held to (told a
  // larger one, it would aim past the cap and be cut), else the smallest.
  const budget = budgetAsked && cap !== undefined && m.budgets.length ? m.budgets.filter((b) => b <= cap!).at(-1) ?? m.budgets[0] : undefined;

  const seed = seedOrFresh(req.seed);
  if (req.top_logprobs && req.logprobs !== true) throw new ApiError(400, "Invalid value for 'top_logprobs': the most likely tokens' log-probabilities come with the reply's, which need 'logprobs' true.", 'top_logprobs');
  const logprobs = req.logprobs === true ? req.top_logprobs ?? 0 : undefined;
  const options: Plan['options'] = {
    reasoning: mode, maxTokens, seed, ...samplingOptions(req, served, limits, { tokens: maxTokens, param: askedParam, given: asked !== undefined }), ...(logprobs ? { topLogprobs: logprobs } : {}),
    ...(mode !== 'off' && cap !== undefined ? { maxThinkingTokens: cap } : {}),
    ...(mode !== 'off' && budget !== undefined ? { budget } : {}),
    vote: ext.vote ?? limits.defaultVote,
    ...(ext.early_stop ? { earlyStop: true } : {}),
    ...(kwargs ? { chatTemplateKwargs: kwargs } : {}),
    nativeThinking: native && prefix === undefined && !cont, // a begun reply's prompt holds its empty thinking block already
    ...(json !== undefined ? { json, ...(lenient ? { [JSON_LENIENT]: true } : {}) } : {}),
  };
  return {
    served: m, messages, promptIds, promptTokens: ids.length, n, perChoice, mode,
    rows: n * (mode === 'off' ? 1 : perChoice ?? 1), options, maxTokens, // a direct answer decodes one sequence per choice
    thinkingCap: mode !== 'off' ? cap : undefined, budget: mode !== 'off' ? budget : undefined, seed,
    stream: !!req.stream, includeUsage: !!req.stream_options?.include_usage, ...(tools ? { tools: format, toolNames: tools.map((t) => t.function.name) } : {}), ...(logprobs !== undefined ? { logprobs } : {}), oneCall: req.parallel_tool_calls === false, ...(prefix !== undefined ? { prefix } : {}), ...(callOf ? { callOf } : {}), ...(jsonOf ? { jsonOf } : {}),
    ...(printed !== undefined ? { continued: printed } : {}),
  };
}

/** The schema a call of one of `tools` is held to: its name and (under `key`) arguments argumentsSchema makes of its parameters. */
function callSchema(tools: NonNullable<ChatRequest['tools']>, key: string): Record<string, unknown> {
  const defs: Record<string, unknown> = {};
  const calls = tools.map((t, i) => ({ type: 'object', properties: { name: { const: t.function.name }, [key]: argumentsSchema(t.function.parameters, i, defs) }, required: ['name', key] }));
  return { ...(calls.length === 1 ? calls[0] : { anyOf: calls }), ...(Object.keys(defs).length ? { $defs: defs } : {}) };
}

/** A call's tags, which an argument's text may not hold (the parser would end the call there, or begin another). */
const TOOL_TAGS = [TOOL_CALL_OPEN, TOOL_CALL_CLOSE];

/**
 * A reply that is free until it opens a Hermes call ("<tool_call>", a token of its own or written in pieces); the text
 * after the last opening is held by `c` (its `after`: the closing tag) until the call ends, and is free again after it
 * (text, or another call).
 */
function openedCalls(tok: TextTokenizer, c: JsonConstraint): (tokens: readonly number[]) => ArrayLike<number> | undefined {
  const follow = c.tracker({ open: true }), tag = Buffer.from(TOOL_CALL_OPEN), known = new Map<number, Uint8Array>();
  const bytesOf = (t: number) => { let b = known.get(t); if (!b) known.set(t, b = tokenBytesOf(tok, t)); return b; };
  return (tokens) => {
    const parts = tokens.map(bytesOf), all = Buffer.concat(parts), at = all.lastIndexOf(tag);
    if (at < 0) return undefined;
    // The token the tag ends in, and what it carries after the tag (the call's first text: "\n", or "\n{").
    let j = 0, end = parts[0]?.length ?? 0;
    while (end < at + tag.length) end += parts[++j].length;
    return follow(tokens.slice(j + 1), all.subarray(at + tag.length, end).toString('utf8'));
  };
}

/**
 * A JSON-format reply (Llama 3.x) that begins with "{" is a call: held by `c` from its first token on, then ended (the
 * whole reply is the call). A reply that begins otherwise is free.
 */
function jsonReplyCall(tok: TextTokenizer, c: JsonConstraint): (tokens: readonly number[]) => ArrayLike<number> | undefined {
  const follow = c.tracker({ open: true, ends: true });
  return (tokens) => {
    let j = 0, text = '';
    while (j < tokens.length && !(text = Buffer.from(tokenBytesOf(tok, tokens[j])).toString('utf8').trimStart())) j++;
    return text.startsWith('{') ? follow(tokens.slice(j + 1), text) : undefined;
  };
}

/**
 * A tool's parameters as a forced call's arguments: an object (a call's arguments are one; parseToolCalls reads no
 * other), its $defs / definitions moved into the call's schema as `defs` under names of their own (`t<i>.<name>`, the
 * tool's index i keeping several tools' apart) and its refs to them (and to itself, "#") rewritten to match.
 */
function argumentsSchema(p: unknown, i: number, defs: Record<string, unknown>): Record<string, unknown> {
  if (!p || typeof p !== 'object' || Array.isArray(p)) return { type: 'object' };
  const own = (ref: string) => { const m = /^#\/(?:\$defs|definitions)\/([^/]+)$/.exec(ref); return m ? `#/$defs/t${i}.${m[1]}` : ref === '#' ? `#/$defs/t${i}#` : ref; };
  const rewrite = (v: unknown): unknown => (Array.isArray(v) ? v.map(rewrite) : v && typeof v === 'object'
    ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, k === '$ref' && typeof x === 'string' ? own(x) : rewrite(x)])) : v);
  const { $defs, definitions, ...rest } = p as Record<string, unknown>;
  for (const d of [definitions, $defs]) if (d && typeof d === 'object') for (const [k, v] of Object.entries(d)) defs[`t${i}.${k}`] = rewrite(v);
  let args = rewrite(rest) as Record<string, unknown>;
  const t = args.type;
  if (t !== 'object' && args.$ref === undefined) { // only an object: a type list keeps "object"; anything else is any object
    args = (Array.isArray(t) && t.includes('object')) || (t === undefined && ['anyOf', 'enum', 'const'].every((k) => args[k] === undefined)) ? { ...args, type: 'object' } : { type: 'object' };
  }
  if (JSON.stringify(p).includes('"$ref":"#"')) defs[`t${i}#`] = args; // refers to itself
  return args;
}

/** Tokens kept back beyond the prompt when an adapter may reason: its invocation, and the longest budget line it may read. */
function reasoningReserve(m: ServedModel, budgetAsked: boolean): number {
  if (!m.model.adapter) return 0;
  const { invocation } = reasoningTokens(m.model);
  return invocation.length + (budgetAsked && m.budgets.length ? budgetControl(m.model.tokenizer, Math.max(...m.budgets), invocation).length : 0);
}

export interface ChoiceOut {
  index: number;
  thinking: string;
  content: string;
  /** OpenAI's, plus vLLM's "abort" for a sample stopped early (edgereason.early_stop: the vote was decided). */
  finishReason: 'stop' | 'length' | 'abort';
  /** edgereason's own finish reason (early-stop, cancelled, ...). */
  finish: string;
  route: Route;
  thinkingTokens: number;
  tokens: number;
  capped: boolean;
  extracted?: string;
  /** Per-choice vote (edgereason.samples). */
  votes?: Record<string, number>;
  chosen?: number;
  /** The checked vote's flaws in each of the choice's samples' work (edgereason.samples). */
  flaws?: number[];
  /** The verifier's score of each of the choice's samples, which the verifier votes decide by (edgereason.samples). */
  verifierScores?: (number | null)[];
  /** The direct attempt this choice's own call dropped for reasoning (edgereason.samples: each choice is a call). */
  escalation?: AnswerResult['escalation'];
  /** logprobs: the answer's tokens (after the thinking) with their log-probabilities. */
  logprobs?: TokenLogprobs;
}

export interface ChatOutcome {
  choices: ChoiceOut[];
  route: Route;
  routerScore?: number;
  /** The router's gate dropped the direct answer and the request escalated to reasoning. */
  escalation?: AnswerResult['escalation'];
  votes?: Record<string, number>;
  chosen?: number;
  /** The checked vote's flaws in each sample's work (the first call's, as votes). */
  flaws?: number[];
  /** The verifier's score of each sample, with a verifier vote (the first call's, as votes). */
  verifierScores?: (number | null)[];
  winner?: string;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number; prompt_tokens_details: { cached_tokens: number }; completion_tokens_details: { reasoning_tokens: number } };
  /** serve --prompt-lookup: the tokens its samples guessed, and how many of them were kept. */
  guesses: { made: number; kept: number };
  ttftMs: number;
  latencyMs: number;
}

export type ChatEvent =
  | { type: 'route'; route: Route; routerScore?: number }
  | { type: 'delta'; choice: number; phase: Phase; text: string }
  /** A choice ended (after its last delta), while others may go on. */
  | { type: 'end'; choice: number; finishReason: 'stop' | 'length' | 'abort' };

/**
 * Runs a plan: answer() calls over the model's coalescing backend through a view that `signal` cancels.
 * `onEvent` receives the route as soon as it is known, every streamed piece, per choice, and each choice's end.
 */
export async function runChat(plan: Plan, served: Served, requestSignal: AbortSignal, onEvent?: (e: ChatEvent) => void, startedAt = performance.now()): Promise<ChatOutcome> {
  const m = plan.served;
  // The request's signal, plus our own abort: when one call fails, the request's other calls stop with it. (Not
  // AbortSignal.any: Node keeps such a signal, and what its listeners reach, alive until it aborts.)
  const local = new AbortController(), signal = local.signal;
  const stopWaiting = onAbort(requestSignal, () => local.abort());
  const model = requestModel(m, signal);
  const aux = { router: served.router, verifier: served.verifier };
  const results: AnswerResult[] = [];
  const pending: Promise<AnswerResult>[] = []; // every answer() call of this request
  const emit = (choice: number, phase: Phase, text: string) => onEvent?.({ type: 'delta', choice, phase, text });
  let ttft = Infinity; // the first token of any call, from the request's start
  const call = async (choiceOf: (sample: number) => number | undefined, o: AnswerOptions & { [UNVOTED]?: boolean }, buffered = false): Promise<AnswerResult> => {
    const t0 = performance.now();
    const run = answer(model, plan.messages, {
      ...o, signal, [PROMPT_IDS]: plan.promptIds, ...(plan.prefix ?? plan.continued) !== undefined ? { [REPLY_PREFIX]: plan.prefix ?? plan.continued } : {},
      ...(plan.callOf ? { [ALLOWED_NEXT]: plan.callOf } : plan.jsonOf ? { [ALLOWED_NEXT]: plan.jsonOf.tracker() } : {}),
      onText: (s, phase, piece) => { const c = choiceOf(s); if (c !== undefined && !buffered) emit(c, phase, piece); },
      onSampleEnd: (s, f) => { const c = choiceOf(s); if (c !== undefined && !buffered) onEvent?.({ type: 'end', choice: c, finishReason: finishReason(f) }); },
      onRoute: o.onRoute,
    }, aux);
    pending.push(run);
    const r = await run;
    ttft = Math.min(ttft, t0 - startedAt + r.ttftMs);
    return r;
  };
  let route: Route = 'direct', routerScore: number | undefined;
  const onRoute = (r: Route, s: number | undefined) => { route = r; routerScore = s; onEvent?.({ type: 'route', route: r, routerScore: s }); };
  const choices: ChoiceOut[] = [];
  const toChoice = (index: number, r: AnswerResult, sample: number, perChoice: boolean): ChoiceOut => {
    const s = r.samples[sample];
    const answerText = perChoice ? r.answer : s.answer, thinking = perChoice ? r.thinking : s.thinking;
    return {
      // A voted choice ends as its result does (with no answer to vote on, 'length' when a sample was cut off).
      index, thinking, content: answerText, finishReason: perChoice ? finishReason(r.finishReason) : finishReason(s.finishReason), finish: s.finishReason,
      // A choice's tokens leave out a dropped direct attempt, reported beside them (escalated), as in the other mode.
      route: r.route, thinkingTokens: perChoice ? r.usage.thinkingTokens : s.thinkingTokens, tokens: perChoice ? r.usage.completionTokens - (r.escalation?.tokens ?? 0) : s.tokens,
      capped: s.capped, ...(perChoice ? r.winner !== undefined ? { extracted: r.winner } : {} : s.extracted !== undefined ? { extracted: s.extracted } : {}),
      ...(perChoice && r.votes ? { votes: r.votes, chosen: r.chosen, ...perSample(r, plan) } : {}), ...(perChoice && r.escalation ? { escalation: r.escalation } : {}),
      ...(plan.logprobs !== undefined ? { logprobs: answerPart(s, answerText) } : {}),
    };
  };
  /**
   * A sample's answer tokens: those after its thinking (all of a direct answer's) that its content holds — not the
   * newlines after the closing tag (the thinking cap forces them, or the model writes them), nor a thinking tag
   * written again in the answer as one token, which the content drops too, nor those after a stop string cut it.
   */
  const answerPart = (s: AnswerResult['samples'][number], content: string): TokenLogprobs => {
    const tok = m.model.tokenizer, ids = s.tokenIds, text = (i: number) => tok.decode([ids[i]]), reasoned = s.answerTokens !== ids.length;
    let from = ids.length - s.answerTokens;
    if (reasoned) while (from < ids.length && /^[\r\n]*$/.test(text(from))) from++;
    const held = Array.from({ length: ids.length - from }, (_, j) => from + j).filter((i) => !reasoned || !['<think>', '</think>'].includes(text(i)));
    // Where each token's text begins in the content (in UTF-16 units, as content.length): those past its end were cut.
    // The content is decoded from these tokens alone, so they begin it (a SentencePiece decoder drops its first space).
    const begins = textOffsets(tok, held.map((i) => ids[i]), undefined, (t) => t.length, true), keep = held.filter((_, j) => begins[j] < content.length);
    return { tokens: keep.map((i) => ids[i]), logprobs: keep.map((i) => s.logprobs[i]), ...(s.topLogprobs ? { top: keep.map((i) => s.topLogprobs![i]) } : {}) };
  };
  try {
    if (plan.perChoice !== undefined) {
      // Every choice votes over its own samples; its text is known once the vote is in.
      const k = plan.perChoice;
      const rs = await Promise.all(Array.from({ length: plan.n }, (_, i) => call(() => undefined,
        { ...plan.options, samples: k, seed: seedAt(plan.seed, i * k), ...(i === 0 ? { onRoute } : {}) }, true)));
      rs.forEach((r, i) => {
        results.push(r);
        const c = toChoice(i, r, r.chosen, true);
        choices.push(c);
        if (c.thinking) onEvent?.({ type: 'delta', choice: i, phase: 'thinking', text: c.thinking });
        if (c.content) onEvent?.({ type: 'delta', choice: i, phase: 'answer', text: c.content });
      });
    } else {
      // One call with samples = n; if it answers directly, n-1 further direct samples start as soon as the route is known.
      let extras: Promise<AnswerResult>[] = [];
      const startExtras = () => {
        extras = Array.from({ length: plan.n - 1 }, (_, j) => {
          const p = call((s) => (s === 0 ? j + 1 : undefined), { ...plan.options, reasoning: 'off', seed: seedAt(plan.seed, j + 1) });
          p.catch(() => {}); // awaited below, or settled in the catch block when the primary call fails first
          return p;
        });
      };
      const primary = await call((s) => s, {
        ...plan.options, samples: plan.n, [UNVOTED]: true,
        onRoute: (r, s) => { onRoute(r, s); if (r === 'direct' && plan.n > 1) startExtras(); },
      });
      results.push(primary);
      if (primary.route === 'reasoning') primary.samples.forEach((_, i) => choices.push(toChoice(i, primary, i, false)));
      else {
        choices.push(toChoice(0, primary, 0, false));
        const rest = await Promise.all(extras);
        rest.forEach((r, j) => { results.push(r); choices.push(toChoice(j + 1, r, 0, false)); });
      }
    }
  } catch (e) {
    const cancelled = requestSignal.aborted || e instanceof AbortedError;
    local.abort();
    await Promise.allSettled(pending);
    if (cancelled) throw new AbortedError();
    const msg = (e as Error).message ?? String(e);
    if (e instanceof ContextLengthError || /prompt encodes to no tokens/.test(msg)) throw new ApiError(400, msg, 'messages', 'invalid_request_error', 'context_length_exceeded');
    // A schema (or tool) asking for text the vocabulary cannot write, or read too many ways at once: found as the reply
    // reached it; the request's fault.
    const unwritable = /^(.*?): (no token of this model's vocabulary can write .*|the schema is too ambiguous to decode: .*)$/.exec(msg);
    if (unwritable) { const param = unwritable[1] === 'tools' ? 'tools' : 'response_format'; throw new ApiError(400, `Invalid '${param}': ${unwritable[2]}`, param, 'invalid_request_error', 'invalid_value'); }
    throw e;
  } finally {
    stopWaiting();
  }
  const primary = results[0];
  const completion = results.reduce((a, r) => a + r.usage.completionTokens, 0);
  const reasoningTokens = results.reduce((a, r) => a + r.usage.thinkingTokens, 0);
  const samples = results.flatMap((r) => r.samples), guessed = (f: 'made' | 'kept') => samples.reduce((a, s) => a + (s.guesses?.[f] ?? 0), 0);
  return {
    choices, route, ...(routerScore !== undefined ? { routerScore } : {}), ...(primary.escalation ? { escalation: primary.escalation } : {}),
    ...(primary.votes ? { votes: primary.votes, chosen: primary.chosen, ...perSample(primary, plan) } : {}),
    ...(primary.winner !== undefined ? { winner: primary.winner } : {}),
    usage: {
      prompt_tokens: primary.usage.promptTokens, completion_tokens: completion, total_tokens: primary.usage.promptTokens + completion,
      prompt_tokens_details: { cached_tokens: primary.usage.cachedTokens }, completion_tokens_details: { reasoning_tokens: reasoningTokens },
    },
    guesses: { made: guessed('made'), kept: guessed('kept') },
    ttftMs: ttft, latencyMs: performance.now() - startedAt,
  };
}

/** The `edgereason` report attached to responses. */
export function report(plan: Plan, out: ChatOutcome, queueMs: number): Record<string, unknown> {
  return {
    route: out.route,
    ...(out.routerScore !== undefined ? { router_score: out.routerScore } : {}),
    ...(out.escalation ? { escalated: escalated(out.escalation) } : {}),
    reasoning: plan.mode,
    ...(out.votes ? { votes: out.votes, chosen: out.chosen, ...scoresOf(out) } : {}),
    ...(out.winner !== undefined ? { winner: out.winner } : {}),
    // The cap and the budget line apply to the reasoning route only.
    ...(out.route === 'reasoning' && plan.thinkingCap !== undefined ? { thinking_cap: plan.thinkingCap } : {}),
    ...(out.route === 'reasoning' && plan.budget !== undefined ? { budget: plan.budget } : {}),
    seed: plan.seed,
    ttft_ms: round(out.ttftMs), latency_ms: round(out.latencyMs), queue_ms: round(queueMs),
    tokens_per_second: round(out.usage.completion_tokens / Math.max(1e-3, (out.latencyMs - out.ttftMs) / 1000)),
    choices: out.choices.map((c) => ({
      index: c.index, route: c.route, finish: c.finish, tokens: c.tokens, thinking_tokens: c.thinkingTokens, capped: c.capped,
      ...(c.extracted !== undefined ? { extracted: c.extracted } : {}), ...(c.votes ? { votes: c.votes, chosen: c.chosen, ...scoresOf(c) } : {}),
      ...(c.escalation ? { escalated: escalated(c.escalation) } : {}),
    })),
  };
}

/**
 * What decided a call's vote, per sample, beside its counts: the checked vote's flaws (each counted on the reasoning
 * route), the verifier votes' scores (best of N picks the top one, whatever the counts say; null for a sample that did
 * not end by itself, which does not compete); none for other votes.
 */
function perSample(r: AnswerResult, plan: Plan): { flaws?: number[]; verifierScores?: (number | null)[] } {
  const verified = isVerifierVote(plan.options.vote);
  return { ...(r.samples.every((s) => s.flaws !== undefined) ? { flaws: r.samples.map((s) => s.flaws!) } : {}), ...(verified ? { verifierScores: r.samples.map((s) => s.verifierScore ?? null) } : {}) };
}
/** perSample's fields as the report names them. */
const scoresOf = (o: { flaws?: number[]; verifierScores?: (number | null)[] }) => ({ ...(o.flaws ? { flaws: o.flaws } : {}), ...(o.verifierScores ? { verifier_scores: o.verifierScores.map((x) => (x === null ? null : Math.round(x * 1e4) / 1e4)) } : {}) });

const escalated = (e: NonNullable<AnswerResult['escalation']>) => ({ direct_answer: e.answer, tokens: e.tokens, logprob: Math.round(e.logprob * 1000) / 1000 });

const round = (x: number) => Math.round(x * 10) / 10;
