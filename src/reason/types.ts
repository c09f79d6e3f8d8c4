/**
 * The request/answer contract of `answer()` (src/reason/answer.ts): one entry point that encodes the prompt
 * once with the base model, routes (reason or answer directly), reasons with the activated-LoRA adapter on
 * the same KV cache, optionally with N parallel samples forked from it, and combines them by vote.
 */
import type { ChatMessage } from '../tokenizer/types.ts';
import type { SamplingParams } from '../runtime/sampler.ts';
import type { Task } from '../tasks/grade.ts';

export type ReasoningMode = 'auto' | 'on' | 'off';
export type VoteMethod = 'majority' | 'confidence' | 'verifier' | 'verifier-vote';
export type Route = 'direct' | 'reasoning';
export type Phase = 'thinking' | 'answer';

export interface AnswerOptions extends SamplingParams {
  /** auto = the router decides (needs a router; without one auto means on); on / off force it. */
  reasoning?: ReasoningMode;
  /** Parallel samples on the reasoning route (forked from the prompt's KV cache; never N prefills). */
  samples?: number;
  vote?: VoteMethod;
  /** Stop the remaining samples once the leading answer cannot be overtaken. */
  earlyStop?: boolean;
  /** s1-style cap: a thinking segment is closed after this many tokens and the model answers. */
  maxThinkingTokens?: number;
  /** Prompted thinking budget bucket for a budget-trained (RL) adapter, e.g. 64 | 128 | 256. */
  budget?: number;
  /** Total generated tokens per sample (thinking + answer). */
  maxTokens?: number;
  seed?: number;
  stop?: string[];
  /** Grader used to extract comparable answers for voting (default 'synthetic'). */
  task?: Task;
  /** Streams text as it is generated: sample index, phase, piece. */
  onText?: (sample: number, phase: Phase, piece: string) => void;
  /** Called once the route is known (before any generated text). */
  onRoute?: (route: Route, routerScore: number | undefined) => void;
  signal?: AbortSignal;
}

export interface SampleResult {
  /** Text of the thinking segment (without the tags) and of the answer after it. */
  thinking: string;
  answer: string;
  /** Extracted answer used for voting (undefined when none could be parsed). */
  extracted?: string;
  tokens: number;
  thinkingTokens: number;
  /** Mean log-probability of the sampled tokens (confidence-weighted vote). */
  meanLogprob: number;
  verifierScore?: number;
  finishReason: 'stop' | 'length' | 'early-stop' | 'cancelled';
}

export interface AnswerResult {
  /** The chosen answer text (after the thinking segment). */
  answer: string;
  /** The chosen sample's thinking text ('' on the direct route). */
  thinking: string;
  route: Route;
  routerScore?: number;
  samples: SampleResult[];
  chosen: number;
  /** Extracted answer → votes (count, or summed weight for weighted votes). */
  votes?: Record<string, number>;
  usage: { promptTokens: number; thinkingTokens: number; answerTokens: number; completionTokens: number };
  ttftMs: number;
  latencyMs: number;
}

export type AnswerInput = string | ChatMessage[];
