/** edgereason's public API. */
export { loadModel, Model, type LoadOptions, type Prompt, type PromptOptions } from './runtime/model.ts';
export { resolveModelPath, hubCacheDir, type ResolveOptions } from './io/hub.ts';
export { PromptCacheMismatch } from './runtime/prompt-cache.ts';
export { ContextLengthError, ModelClosedError, OnnxRuntimeError, RuntimeFailedError } from './runtime/errors.ts';
export { convertModel, type ConvertOptions, type CachePolicy } from './runtime/convert.ts';
export { openSource, type ModelSource, type Manifest } from './io/source.ts';
export type { WeightSource } from './io/weights.ts';
export type { AdapterConfig, LoadedAdapter } from './io/peft.ts';
export { defaultModel, defaultModelFiles } from './models/embedded.ts';
export type { Completion, FinishReason, GenerateOptions, ThinkingOptions } from './runtime/generate.ts';
export type { SamplingParams, TokenLogprob } from './runtime/sampler.ts';
export { answer, Reasoner } from './reason/answer.ts';
export { Router, trainRouter, type RouterGate, type TrainRouterOptions, type RouterFile, type RouterReport, type LabelItem, type ThresholdRule } from './reason/router.ts';
export { Verifier, trainVerifier, type TrainVerifierOptions, type VerifierFile, type VerifierReport } from './reason/verifier.ts';
export type { AnswerInput, AnswerOptions, AnswerResult, SampleResult, ReasoningMode, VoteMethod, Route, Phase } from './reason/types.ts';
export type { Task } from './tasks/grade.ts';
export { trainSft, type SftOptions, type SftResult, type DataReport } from './train/sft.ts';
export { loadDataset, type Example } from './train/data.ts';
export { trainRl, type RlOptions, type RlPrompt, type RlStepStats } from './train/rl.ts';
export { runEval, runAnswerEval, type AnswerEvalOptions, datasetCases, syntheticCases, type EvalCase, type EvalOptions, type EvalReport, type CaseResult, type Summary } from './eval/harness.ts';
export type { ModelConfig, Projection, RopeScaling, RopeScalingChoice } from './models/config.ts';
export type { Quant } from './onnx/quant.ts';
export type { Backend } from './runtime/backend.ts';
export type { ChatMessage, TextTokenizer, TokenizerFiles } from './tokenizer/types.ts';
export { parseToolCalls, ToolCallStream, toolCallFormat, templateFor, hermesTemplate, type ToolCallFormat, type ParsedToolCall, type ParsedReply } from './tokenizer/tool-calls.ts';
import type { EdgeServer, ServerOptions } from './server/app.ts';
export type { ServerOptions, EdgeServer };
// The types ServerOptions and EdgeServer name (type-only: fastify is still loaded only by createServer).
export type { AdapterSpec, Served, ServedModel } from './server/models.ts';
export type { ChatLimits, EffortBudgets } from './server/chat.ts';
export type { Metrics } from './server/metrics.ts';
export type { Admission } from './server/queue.ts';
export type { BlockWeight } from './onnx/quant.ts';
export type { JsonConstraint } from './runtime/json-constraint.ts';

/**
 * The OpenAI-compatible server `serve` runs (ServerOptions are its flags); `listen()` resolves with its root URL (the
 * OpenAI base URL is that plus /v1), `close(graceMs)` lets the requests in flight finish for up to graceMs, then
 * cancels the rest and resolves with how many it cancelled. Loaded on first use: an app that
 * never serves does not load fastify.
 */
export async function createServer(o: ServerOptions): Promise<EdgeServer> {
  return (await import('./server/app.ts')).createServer(o);
}
