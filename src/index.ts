/** edgereason's public API. */
export { loadModel, Model, type LoadOptions, type PromptOptions } from './runtime/model.ts';
export { convertModel, type ConvertOptions, type CachePolicy } from './runtime/convert.ts';
export type { Completion, FinishReason, GenerateOptions, ThinkingOptions } from './runtime/generate.ts';
export type { SamplingParams } from './runtime/sampler.ts';
export { answer, Reasoner } from './reason/answer.ts';
export { Router, trainRouter, type RouterGate, type TrainRouterOptions } from './reason/router.ts';
export { Verifier, trainVerifier, type TrainVerifierOptions } from './reason/verifier.ts';
export type { AnswerInput, AnswerOptions, AnswerResult, SampleResult, ReasoningMode, VoteMethod, Route, Phase } from './reason/types.ts';
export type { Task } from './tasks/grade.ts';
export { trainSft, type SftOptions } from './train/sft.ts';
export { trainRl, type RlOptions } from './train/rl.ts';
export { runEval, type EvalReport } from './eval/harness.ts';
export type { ModelConfig, Projection } from './models/config.ts';
export type { Quant } from './onnx/quant.ts';
export type { Backend } from './runtime/backend.ts';
export type { ChatMessage, TextTokenizer } from './tokenizer/types.ts';
