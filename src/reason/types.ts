/**
 * The request/answer contract of `answer()` (src/reason/answer.ts): one entry point that encodes the prompt
 * once with the base model, routes (reason or answer directly), reasons with the activated-LoRA adapter on
 * the same KV cache, optionally with N parallel samples forked from it, and combines them by vote.
 */
import type { ChatMessage } from '../tokenizer/types.ts';
import type { SamplingParams, TokenLogprob } from '../runtime/sampler.ts';
import type { Task } from '../tasks/grade.ts';

export type ReasoningMode = 'auto' | 'on' | 'off';
export type VoteMethod = 'majority' | 'confidence' | 'verifier' | 'verifier-vote' | 'checked';
export type Route = 'direct' | 'reasoning';
export type Phase = 'thinking' | 'answer';

export interface AnswerOptions extends SamplingParams {
  // temperature: default 0 (greedy), except 0.8 for several samples on the reasoning route (N greedy samples would
  // all be the same); a direct answer is one sample.
  /** auto = the router decides (needs a router; without one auto means on); on / off force it. */
  reasoning?: ReasoningMode;
  /** Parallel samples on the reasoning route (forked from the prompt's KV cache; never N prefills). At temperature 0 they are all the same greedy answer. */
  samples?: number;
  /**
   * How the samples' extracted answers are combined (default majority). Samples without an answer do not vote;
   * a tie goes first to an answer given by a sample whose thinking ended by itself (not by the cap), then to the
   * answer given first (by the lowest sample index); `chosen` is the first such sample giving the winning answer,
   * else its first (vote.ts).
   */
  vote?: VoteMethod;
  /**
   * Stop the remaining samples once the leading answer cannot be overtaken (not with vote "verifier" or "checked":
   * an unfinished sample may score higher, or have fewer flaws). The winning answer is the one the whole vote would
   * give; the sample shown for it (`chosen`) is among those finished by then, so it may be a capped one where a
   * stopped sample would have ended its thinking by itself.
   */
  earlyStop?: boolean;
  /**
   * s1-style cap: a thinking segment is closed after this many tokens and the model answers. A model not trained
   * with caps may go on reasoning in its answer after the forced close (and write the closing tag again there,
   * as s1 allows): `thinkingTokens` counts the segment up to the forced close, `answerTokens` the rest. The
   * budget-trained (RL) adapter answers directly. Only the reasoning route reads it: with reasoning "off" (or
   * "auto" routed to the direct answer) nothing thinks, and it has no effect (the CLI notes a flag given so).
   */
  maxThinkingTokens?: number;
  /**
   * Thinking budget bucket for a budget-trained (RL) adapter, e.g. 96 | 160 | 256: fed as a control line after the
   * invocation (so, as maxThinkingTokens, without effect when the request does not reason).
   */
  budget?: number;
  /**
   * Total generated tokens per sample (thinking + answer, and an escalated request's dropped direct attempt;
   * default 512, and never past the model's context). The router's confidence gate escalates only where 64 tokens
   * are left to reason in after its attempt (MIN_ESCALATION_ROOM): below the gate's tokens + 64 (80 for the
   * embedded model's router) an unsure direct answer is kept as it is.
   */
  maxTokens?: number;
  /** Sample i draws with seed + i. Default: a fresh random seed per call. */
  seed?: number;
  /** Stop strings; they apply to the answer, never inside the thinking segment. */
  stop?: string | string[];
  /** Speculative decoding by prompt lookup for a single sample (see GenerateOptions.promptLookup): the same tokens, in fewer steps. */
  promptLookup?: number;
  /** The prompt cache's scope (vLLM's cache_salt; see GenerateOptions.cacheSalt). Default: the shared scope. */
  cacheSalt?: string;
  /**
   * vLLM's min_tokens: no end token and no stop string ends a sample before it has this many tokens (thinking
   * included; see GenerateOptions.minTokens); not with `json`. Default 0.
   */
  minTokens?: number;
  /** vLLM's ignore_eos: no end token ends a sample, which runs to maxTokens or a stop string (GenerateOptions.ignoreEos); not with `json`. */
  ignoreEos?: boolean;
  /**
   * How an answer is read for voting: a task's grader (the synthetic task's "#### n" line, MATH's normalised
   * \boxed{}, …). Default: the answer it states ("#### n", "the answer is …", \boxed{}) or else its last number,
   * and a reply with neither (chat) by its whole text.
   */
  task?: Task;
  /** Streams text as it is generated: sample index, phase, piece. */
  onText?: (sample: number, phase: Phase, piece: string) => void;
  /**
   * Called when a sample of the answer ends, after its last text: by itself ('stop', 'length'), or cut off by early
   * stopping ('early-stop'). Not for a direct attempt the gate drops, nor for samples a cancel stops.
   */
  onSampleEnd?: (sample: number, finishReason: 'stop' | 'length' | 'early-stop') => void;
  /** Called once the route is known (before any generated text). */
  onRoute?: (route: Route, routerScore: number | undefined) => void;
  signal?: AbortSignal;
  /** Invocation text when the adapter config names no alora_invocation_tokens (default "<think>"). */
  invocation?: string;
  /**
   * How the adapter is applied on the reasoning route: 'activated' reuses the base model's prompt KV cache
   * and switches the adapter on from the invocation; 'classic' (plain LoRA) re-encodes the prompt with the
   * adapter on everywhere. Default: activated when the adapter config has alora_invocation_tokens.
   */
  adapterMode?: 'activated' | 'classic';
  /**
   * Return hidden states: the prompt's (router input) and each sample's last one (verifier input). There is no
   * prompt state when a classic adapter is forced on (reasoning "on": the base prefill is skipped), and none for a
   * sample that ended at its first token (no decode step ran for it).
   */
  collectHidden?: boolean;
  /** Extra variables for the chat template (generate's chatTemplateKwargs; the server's chat_template_kwargs). */
  chatTemplateKwargs?: Record<string, unknown>;
  /**
   * The model thinks with its own weights (a thinking model such as Qwen3; no adapter loaded): the reasoning route
   * opens "<think>" on the prompt's cache, and the direct route answers after an empty thinking block
   * ("<think>\n\n</think>\n\n", what Qwen3's template writes for enable_thinking: false) on that same cache.
   * Routing, the gate, budgets, the thinking cap, samples and votes work as with an adapter.
   */
  nativeThinking?: boolean;
  /**
   * The answer is JSON (constrained decoding; the thinking before it is free): true for any JSON object (OpenAI's
   * response_format "json_object"), or a JSON schema it follows (the subset JsonConstraint documents; others are
   * refused by name). Several samples vote with the parsed value. A router decides alone (its confidence gate reads
   * the model's own log-probabilities, which the constraint overrides).
   */
  json?: true | Record<string, unknown>;
}

export interface SampleResult {
  /** Text of the thinking segment (without the tags) and of the answer after it. */
  thinking: string;
  answer: string;
  /** Extracted answer used for voting (undefined when none could be parsed, or the sample did not end by itself). */
  extracted?: string;
  /** Generated tokens: thinking + "</think>" + answer (forced closing tokens included). */
  tokens: number;
  /** Tokens inside the thinking segment, tags excluded (forced text before "</think>" included). */
  thinkingTokens: number;
  /** Mean log-probability of the sampled tokens (confidence-weighted vote). */
  meanLogprob: number;
  verifierScore?: number;
  /** With vote "checked", on the reasoning route: flaws in the sample's written work, thinking and answer (check.ts checkWork: false equations + the question's quantities it never uses). */
  flaws?: number;
  finishReason: 'stop' | 'length' | 'early-stop' | 'cancelled';
  /** Generated token ids (forced closing tokens included). */
  tokenIds: number[];
  /** With promptLookup: the tokens guessed, and how many of them the model's own draws kept. */
  guesses?: { made: number; kept: number };
  /** Log-probability of each generated token (0 for forced ones). */
  logprobs: number[];
  /** With topLogprobs: the most likely tokens at each generated token, best first ([] for forced ones). */
  topLogprobs?: TokenLogprob[][];
  /** Tokens after the closing tag (all of them on the direct route). */
  answerTokens: number;
  /** Whether the thinking cap closed the segment. */
  capped: boolean;
  /** Final hidden state at the sample's last token (collectHidden; absent for a sample that ended at its first token). */
  hidden?: Float32Array;
}

export interface AnswerResult {
  /** The chosen answer text (after the thinking segment). */
  answer: string;
  /** The chosen sample's thinking text ('' on the direct route). */
  thinking: string;
  /**
   * How the chosen answer ended: 'stop' (by itself), 'length' (cut off by maxTokens or the context, possibly
   * mid-number; with several samples, none ended with an answer to vote on and one was cut off), or 'cancelled' (the
   * signal stopped samples).
   */
  finishReason: 'stop' | 'length' | 'cancelled';
  route: Route;
  routerScore?: number;
  samples: SampleResult[];
  chosen: number;
  /**
   * Extracted answer → votes (count, or summed weight for weighted votes). With vote "verifier" (best of N) these are
   * counts, which decide only when no sample was scored: the winner is the sample the verifier scored highest
   * (samples[i].verifierScore).
   */
  votes?: Record<string, number>;
  /**
   * promptTokens: chat prompt (+ invocation and any budget line on the reasoning route); the rest summed over samples, and
   * completionTokens also counts the direct attempt an escalation dropped (escalation.tokens). cachedTokens: the prompt's
   * first tokens read from an earlier prompt's kept cache (prompt caching, loadModel's promptCache), not prefilled.
   */
  usage: { promptTokens: number; cachedTokens: number; thinkingTokens: number; answerTokens: number; completionTokens: number };
  /**
   * Time to the first token shown (onText's first piece; to the whole answer when none was generated, e.g. cancelled
   * before its first). A direct answer the router's gate holds back until its first gate.tokens have passed shows
   * them then, so its ttftMs is that much later than its first token (the whole answer, for one as short).
   */
  ttftMs: number;
  latencyMs: number;
  /** The winning extracted answer, when any sample gave one. */
  winner?: string;
  /**
   * Set when the router's gate rejected the direct answer and the request escalated to reasoning: the dropped
   * direct answer, its generated tokens, and the log-probability of the token that tripped the gate (index `at`).
   */
  escalation?: { answer: string; tokens: number; logprob: number; at: number };
  /** Final hidden state of the prompt's last token under the base model (collectHidden; the router's input; absent when no base prefill ran). */
  promptHidden?: Float32Array;
}

export type AnswerInput = string | ChatMessage[];
