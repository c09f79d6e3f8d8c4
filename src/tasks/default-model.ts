/**
 * The recipe of the embedded default model (models/default): a small Qwen2 trained from scratch on direct
 * answers (so it answers easy items and chat queries, and guesses on hard ones), then an activated-LoRA
 * reasoning adapter trained on step-by-step traces (invocation "<think>"), both with edgereason's own engine.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ModelConfig } from '../models/config.ts';
import { MemoryWeights } from '../io/weights.ts';
import { makeDir } from '../io/safetensors.ts';
import { loadTokenizer } from '../tokenizer/hf.ts';
import type { TextTokenizer } from '../tokenizer/types.ts';
import { tokenizeRecord, type Example } from '../train/data.ts';
import { budgetSystemLine, DEFAULT_BUDGETS } from '../reason/budget.ts';
import { trainSft } from '../train/sft.ts';
import {
  formatAnswer, formatResponse, formatThinking, generateMath, makeSplits, Rng, splitOf, type Item, type Mix, type TraceStyle,
} from './synthetic.ts';
import { isMainModule } from '../main-module.ts';
import { defaultModel } from '../models/embedded.ts';

export const DEFAULT_DIR = defaultModel.dir, ADAPTER_DIR = defaultModel.adapter;
export const INVOCATION = '<think>';

export function defaultConfig(vocabSize: number): ModelConfig {
  return {
    architecture: 'qwen2', vocabSize, hiddenSize: 192, intermediateSize: 512, numLayers: 6, numHeads: 6, numKvHeads: 2,
    headDim: 32, rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 1024, tieWordEmbeddings: true,
    attentionBias: true, bosTokenId: 0, eosTokenIds: [2],
  };
}

/** GPT-2 style initialisation: N(0, 0.02), residual output projections scaled by 1/sqrt(2·layers), norms 1. */
function initWeights(c: ModelConfig, seed: number): Map<string, { shape: number[]; data: Float32Array }> {
  const rng = new Rng(seed), w = new Map<string, { shape: number[]; data: Float32Array }>();
  const normal = () => Math.sqrt(-2 * Math.log(1 - rng.float())) * Math.cos(2 * Math.PI * rng.float());
  const add = (name: string, shape: number[], std: number, fill?: number) =>
    w.set(name, { shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b) }, () => fill ?? std * normal()) });
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim, resid = 0.02 / Math.sqrt(2 * c.numLayers);
  add('model.embed_tokens.weight', [c.vocabSize, c.hiddenSize], 0.02);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [c.hiddenSize], 0, 1);
    add(`${p}.post_attention_layernorm.weight`, [c.hiddenSize], 0, 1);
    for (const [n, rows] of [['q', q], ['k', kv], ['v', kv]] as const) {
      add(`${p}.self_attn.${n}_proj.weight`, [rows, c.hiddenSize], 0.02);
      add(`${p}.self_attn.${n}_proj.bias`, [rows], 0, 0);
    }
    add(`${p}.self_attn.o_proj.weight`, [c.hiddenSize, q], resid);
    add(`${p}.mlp.gate_proj.weight`, [c.intermediateSize, c.hiddenSize], 0.02);
    add(`${p}.mlp.up_proj.weight`, [c.intermediateSize, c.hiddenSize], 0.02);
    add(`${p}.mlp.down_proj.weight`, [c.hiddenSize, c.intermediateSize], resid);
  }
  add('model.norm.weight', [c.hiddenSize], 0, 1);
  return w;
}

const chat = (tok: TextTokenizer, question: string, reply: string, line: number): Example =>
  tokenizeRecord({ line, messages: [{ role: 'user', content: question }, { role: 'assistant', content: reply }] }, tok, `recipe example ${line}`)[0];

/**
 * Base-model data, the "pretraining" of the default model:
 * - chat turns answered directly ("#### n", or the chat reply) for every difficulty and the chat queries, plus
 *   single operations up to 40, so the base answers easy items and chat queries and guesses on hard ones;
 * - plain-text worked solutions ("Problem: … Solution: <think> … </think> The answer is n.", no chat template, loss
 *   on every token), concise and verbose, the way a real base model has read solved problems without being tuned to
 *   reason in chat. They teach the arithmetic facts and every token the reasoning traces use — a token the base never
 *   sees keeps an untrained embedding that the LoRA adapter cannot move (tied embeddings), so e.g. "</think>" would
 *   be indistinguishable from every other unseen token. Eliciting the reasoning in chat is the adapter's job.
 */
export function baseExamples(tok: TextTokenizer, n: number, seed: number, o: { mix?: Mix; opsShare?: number; docsShare?: number } = {}): Example[] {
  const mix: Mix = o.mix ?? { easy: 0.5, medium: 0.08, hard: 0.08, chat: 0.34 };
  const nOps = Math.round(n * (o.opsShare ?? 0.1)), nDocs = Math.round(n * (o.docsShare ?? 0.15)), nDirect = n - nOps - nDocs;
  const items: Item[] = makeSplits({ train: nDirect, val: 0, test: 0, seed, mix }).train;
  const rng = new Rng(seed ^ 0xa11);
  while (items.length < nDirect + nOps) {
    const it = generateMath(rng, { ops: 1, maxValue: 40, id: `op-${items.length}` });
    if (splitOf(it) === 'train') items.push(it);
  }
  const direct = items.map((it, i) => chat(tok, it.question, formatAnswer(it), i + 1));
  const docItems = makeSplits({ train: nDocs, val: 0, test: 0, seed: seed + 2, mix: { easy: 0.2, medium: 0.3, hard: 0.4, chat: 0.1 } }).train;
  const docs = docItems.map((it) => solutionDocument(tok, it, it.kind === 'chat' || rng.chance(0.5) ? 'verbose' : 'concise', rng));
  return [...direct, ...docs];
}

/** One worked solution as a plain-text document between <|endoftext|> tokens; every token after the first is a target. */
function solutionDocument(tok: TextTokenizer, item: Item, style: TraceStyle, rng: Rng): Example {
  const text = `Problem: ${item.question}\nSolution:\n<think>\n${formatThinking(item, style, rng)}\n</think>\n${item.kind === 'math' ? `The answer is ${item.answer}.` : item.answer}`;
  const sep = tok.encode('<|endoftext|>', { addSpecialTokens: false });
  const ids = [...sep, ...tok.encode(text, { addSpecialTokens: false }), ...sep];
  return { ids, lossMask: new Uint8Array(ids.length).fill(1, 1) };
}

/**
 * The recipe's share of verbose (long-CoT style) traces; the rest are concise. Long-CoT teachers dominate, so the
 * SFT adapter thinks at length when sampled (about 190 thinking tokens on hard items at temperature 1; greedy
 * decoding still picks the concise style); budget forcing (RL) shortens it.
 */
const VERBOSE_SHARE = 0.7;
/** Share of SFT traces that carry a budget control line after "<think>". */
const BUDGETED_SHARE = 0.3;

/** Adapter conversations: "<think>\n…\n</think>\n\n#### n" replies, concise and verbose traces mixed. */
export function reasoningConversations(n: number, seed: number, verboseShare = VERBOSE_SHARE): { question: string; reply: string }[] {
  const items = makeSplits({ train: n, val: 0, test: 0, seed: seed + 1, mix: { easy: 0.2, medium: 0.3, hard: 0.4, chat: 0.1 } }).train;
  const rng = new Rng(seed ^ 0x7e5);
  return items.map((it) => {
    const reply = formatResponse(it, rng.chance(verboseShare) ? 'verbose' : 'concise', rng);
    // A share of traces open with a budget control line (random bucket, whatever the trace's length): SFT teaches
    // the adapter to read past it; budget forcing (RL) then teaches it to obey.
    if (!rng.chance(BUDGETED_SHARE)) return { question: it.question, reply };
    return { question: it.question, reply: reply.replace(/^<think>\n/, `<think>\n${budgetSystemLine(rng.pick(DEFAULT_BUDGETS))}\n`) };
  });
}

export function reasoningExamples(tok: TextTokenizer, n: number, seed: number): Example[] {
  return reasoningConversations(n, seed).map((c, i) => chat(tok, c.question, c.reply, i + 1));
}

export interface DefaultRecipe {
  out?: string;
  baseExamples?: number;
  baseEpochs?: number;
  adapterExamples?: number;
  adapterEpochs?: number;
  /** Stop each stage after this many steps (CI runs a few steps of the same recipe). */
  maxSteps?: number;
  seed?: number;
  quiet?: boolean;
  annealExamples?: number;
  stages?: Stage[];
}

/**
 * base: full-parameter pretraining from random weights; anneal: one more pass at a lower learning rate on fresh
 * items weighted towards two-step direct answers (what the base still got wrong most); adapter: the reasoning LoRA.
 */
export type Stage = 'base' | 'anneal' | 'adapter';

export async function trainDefault(r: DefaultRecipe = {}): Promise<{ baseLosses: number[]; annealLosses: number[]; adapterLosses: number[] }> {
  const out = r.out ?? DEFAULT_DIR, seed = r.seed ?? 0, stages = r.stages ?? ['base', 'anneal', 'adapter'];
  makeDir(out);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) if (out !== DEFAULT_DIR) fs.copyFileSync(path.join(DEFAULT_DIR, f), path.join(out, f));
  const tok = loadTokenizer(out);
  const config = defaultConfig(tok.vocabSize);
  let baseLosses: number[] = [], annealLosses: number[] = [], adapterLosses: number[] = [];
  if (stages.includes('base')) {
    const data = baseExamples(tok, r.baseExamples ?? 120000, seed);
    const res = await trainSft(config, new MemoryWeights(initWeights(config, seed)), data, [], {
      out, full: true, lr: 2e-3, epochs: r.baseEpochs ?? 2, batchTokens: 2048, weightDecay: 0.1, maxSteps: r.maxSteps,
      checkpointEvery: 200, quiet: r.quiet, seed,
    });
    baseLosses = res.losses;
    fs.rmSync(path.join(out, 'checkpoint'), { recursive: true, force: true });
  }
  if (stages.includes('anneal')) {
    const { loadHfFolder } = await import('../io/hf-folder.ts');
    const base = loadHfFolder(out), tmp = path.join(out, '.anneal');
    const data = baseExamples(tok, r.annealExamples ?? 45000, seed + 3, { mix: { easy: 0.6, medium: 0.05, hard: 0.05, chat: 0.3 }, opsShare: 0.05, docsShare: 0.15 });
    const res = await trainSft(base.config, base.weights, data, [], {
      out: tmp, full: true, lr: 1e-3, epochs: 1, batchTokens: 2048, weightDecay: 0.1, maxSteps: r.maxSteps, checkpointEvery: 200, quiet: r.quiet, seed: seed + 3,
    });
    annealLosses = res.losses;
    // The annealed weights replace the base's (rename: atomic); its loss curve sits beside the base's.
    fs.renameSync(path.join(tmp, 'model.safetensors'), path.join(out, 'model.safetensors'));
    fs.renameSync(path.join(tmp, 'loss.svg'), path.join(out, 'loss-anneal.svg'));
    fs.renameSync(path.join(tmp, 'training_log.json'), path.join(out, 'training_log-anneal.json'));
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  if (stages.includes('adapter')) {
    const { loadHfFolder } = await import('../io/hf-folder.ts');
    const base = loadHfFolder(out);
    const data = reasoningExamples(tok, r.adapterExamples ?? 24000, seed);
    const invocation = tok.encode(INVOCATION, { addSpecialTokens: false });
    const res = await trainSft(base.config, base.weights, data, [], {
      out: path.join(out, 'reasoning-adapter'), rank: 16, alpha: 32, lr: 2e-3, epochs: r.adapterEpochs ?? 2, batchTokens: 4096,
      aloraInvocation: invocation, maxSteps: r.maxSteps, checkpointEvery: 200, quiet: r.quiet, seed, baseModel: 'models/default',
    });
    adapterLosses = res.losses;
    fs.rmSync(path.join(out, 'reasoning-adapter', 'checkpoint'), { recursive: true, force: true });
  }
  return { baseLosses, annealLosses, adapterLosses };
}

if (isMainModule(import.meta.url)) {
  const stages = (process.argv[2] ?? 'base,anneal,adapter').split(',') as Stage[];
  for (const st of stages) if (!['base', 'anneal', 'adapter'].includes(st)) throw new Error(`train:default: unknown stage "${st}" (use base, anneal, adapter)`);
  const t0 = Date.now();
  await trainDefault({ stages });
  console.log(`trained ${stages.join(' + ')} in ${((Date.now() - t0) / 60000).toFixed(1)} min → ${DEFAULT_DIR}`);
}
