/**
 * A checkpoint's ONNX graph built once: `convertModel` writes it to a folder (graph + weights in a separate file),
 * and `cachedConversion` keeps one such folder per checkpoint in a cache, so that a large model is quantised on its
 * first load only and a model too large to build in memory (7B at q4) loads at all.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { checkRopeScalingChoice, graphWeightBytes, parameterCount, PROJECTIONS, ropeChoiceOf, ropeTableBytes, ropeScalingWords, withRopeScaling, type ModelConfig, type Projection, type RopeScalingChoice } from '../models/config.ts';
import { buildInferenceGraph, weightProgress } from '../models/inference-graph.ts';
import { prequantize, blockWeightNames } from './prequantize.ts';
import { QBLOCK, quantBits, quantBytes, type BlockWeight, type Quant } from '../onnx/quant.ts';
import { IN_MEMORY_LIMIT } from '../onnx/graph.ts';
import { openCopy, openSource, withConfig, contentHash, convertCommandLine, expandHome, fingerprint, sourceBytes, isSourceFolder, MANIFEST, readManifest, type Manifest, type ModelSource } from '../io/source.ts';
import { readInputFile } from '../io/jsonl.ts';
import { atomicWrite, cannotWriteIn, commitAll, dirBytes, makeDir, processAlive, realPath, removeTemp, rename, removeDeadTemps, sampledSha256, stagedWrite, writeAll, writeJson } from '../io/safetensors.ts';
import { stageTokenizerFiles } from '../tokenizer/hf.ts';
import { version } from '../version.ts';
import { checkAccuracyQuant, checkBuildOptions, checkKeys } from './options.ts';
import { shown } from '../show.ts';

export function defaultQuant(c: ModelConfig): Quant {
  return parameterCount(c) - (c.tieWordEmbeddings ? 0 : c.vocabSize * c.hiddenSize) >= 50e6 ? 'q4' : 'fp32';
}

/**
 * The bytes of a checkpoint's weights in the graph at `quant`, as layers.ts stores them: quantised in blocks of
 * QBLOCK inputs, except a projection whose input size is no multiple of it (fp32), and over such a hidden size the
 * embedding table (fp16) beside an fp32 lm_head, a tied one too.
 */
export function weightBytes(c: ModelConfig, quant: Quant): number {
  const b = quantBytes(quant);
  if (quant === 'fp32') return graphWeightBytes(c, b);
  const at = (k: number, n: number) => k * n * (k % QBLOCK ? 4 : b); // a [n, k] weight
  const { hiddenSize: H, intermediateSize: I, headDim: D, vocabSize: V } = c;
  const layer = at(H, (c.numHeads + 2 * c.numKvHeads) * D) + at(c.numHeads * D, H) + 2 * at(H, I) + at(I, H);
  const table = H % QBLOCK ? V * H * 2 + at(H, V) : at(H, V) * (c.tieWordEmbeddings ? 1 : 2);
  return c.numLayers * layer + table + ropeTableBytes(c);
}

/**
 * Refuses, before minutes of quantising, a checkpoint whose graph cannot be built in memory (about 3B parameters
 * and up at q4): `convert` writes its weights to a separate file, which has no such limit.
 */
export function checkInMemorySize(c: ModelConfig, quant: Quant, source: string, loraTargets: readonly Projection[] = [], rope?: RopeScalingChoice): void {
  const bytes = weightBytes(c, quant);
  if (bytes <= IN_MEMORY_LIMIT) return;
  const out = `${source.replace(process.platform === 'win32' ? /[\\/]+$/ : /\/+$/, '').replace(/\.(gguf|bin)$/, '')}-onnx`; // models\Qwen\ too
  throw new Error(`model: ${source} is ${(parameterCount(c) / 1e9).toFixed(1)}B parameters, whose ${quant} weights (about ${gib(bytes)} GiB) do not fit the 2 GiB an ONNX model holds in memory; convert it once (its weights go to a separate file) and load the converted folder: ${convertCommandLine(source, out, quant, loraTargets, rope)}`);
}

/**
 * A note when a GGUF's blocks of another type are decoded and rounded to `quant`'s blocks a second time (Q4_0 and
 * Q8_0 blocks come back exactly as they were); undefined when nothing is rounded again.
 */
export function requantisedNote(src: ModelSource, quant: Quant): string | undefined {
  const bits = quantBits(quant), same = `Q${bits}_0`, again = bits ? src.storedTypes?.filter((t) => !['F32', 'F16', 'BF16', same].includes(t)) : undefined;
  if (!again?.length) return undefined;
  const ratio = quantBytes('fp32') / quantBytes(quant);
  return `model: ${src.path} stores weights as ${again.join(', ')}: they are decoded and quantised again to ${quant} (${bits}-bit blocks of 32, as ${same}), a second rounding; quant "fp32" keeps the file's values exactly, in ${ratio.toFixed(1)}× the memory of ${quant}`;
}

export interface ConvertOptions {
  quant?: Quant; accuracyLevel?: number; loraTargets?: Projection[]; onProgress?: (done: number, total: number) => void;
  /** A RoPE scaling in place of the source's own (loadModel's ropeScaling): the converted folder keeps it. */
  ropeScaling?: RopeScalingChoice;
  /** Blocks made beforehand on worker threads (prequantizeLarge), by weight name. */
  blocks?: ReadonlyMap<string, BlockWeight>;
  /** The source's fingerprint before `blocks` read its weights (fingerprint(src.files)): compared after the last read. */
  blocksFrom?: string;
}

/**
 * `src` with the RoPE scaling `choice` in place of its own (as it is without one). A converted folder keeps the
 * scaling it was converted with: another is refused, naming the command that converts the source with it.
 */
export function rescaled(src: ModelSource, choice: RopeScalingChoice | undefined): ModelSource {
  if (!choice) return src;
  const m = src.manifest;
  if (!m) {
    const config = withRopeScaling(src.config, choice, src.path), w = src.slidingWindow;
    if (w !== undefined && config.maxPositionEmbeddings > w) {
      throw new Error(`model: ${src.path} attends within a sliding window of ${w} positions (Mistral's), which the graph computes as whole attention up to it: RoPE scaling ${ropeScalingWords(choice)} cannot take its context past the window (to ${config.maxPositionEmbeddings} positions)`);
    }
    return config === src.config ? src : withConfig(src, config);
  }
  // The folder's own scaling restated comes back unchanged (withRopeScaling returns the same config). A scaling the
  // source was trained with stays (its error says so); one chosen at conversion is the conversion's.
  let config: ModelConfig | undefined;
  try { config = withRopeScaling(src.config, choice, src.path); } catch (e) { if (!m.options.ropeScaling) throw e; }
  if (config === src.config) return src;
  // What the source itself refuses (a scaling it was trained with, a Mistral's window) is said rather than a convert that would fail.
  let source: ModelSource | undefined;
  try { source = openSource(m.source.path, { lazyTokenizer: true }); } catch { /* gone or changed: the convert command says what it says */ }
  if (source) rescaled(source, choice);
  throw new Error(`model: ${src.path} was converted with RoPE scaling ${ropeScalingWords(src.config.ropeScaling)}, not ${ropeScalingWords(choice)}; convert the source again with it: ${convertCommandLine(m.source.path, '<folder>', m.options.quant, m.options.loraTargets, choice)}`);
}

/**
 * A large checkpoint's (100M parameters and up) q4 / q8 blocks, quantised on worker threads (`threads` of them,
 * default the available CPUs) before the graph is built; undefined for fp32 or a small model, which the builder
 * quantises itself. `onProgress` counts millions of weights, as the builder does.
 */
export async function prequantizeLarge(src: ModelSource, quant: Quant, o: { threads?: number; onProgress?: (done: number, total: number) => void } = {}): Promise<Map<string, BlockWeight> | undefined> {
  const bits = quantBits(quant);
  if (!bits || parameterCount(src.config) < LARGE || !src.weights) return undefined;
  const report = weightProgress(src.config, o.onProgress);
  const blocks = await prequantize(src.weights, blockWeightNames(src.config, src.weights), { bits, threads: o.threads, onWeights: report });
  report?.(parameterCount(src.config)); // done: norms and any unquantised weight are not counted above
  return blocks;
}

/**
 * A checkpoint's inference graph built in memory (loadModel without a converted copy): a large one's blocks
 * quantised first on worker threads; `signal` is looked at between the two. Model.open runs it, or the session's
 * worker (worker.ts) for a checkpoint of BUILD_IN_WORKER parameters and up.
 */
export async function buildInMemory(src: ModelSource, quant: Quant, o: { accuracyLevel?: number; loraTargets: readonly Projection[]; threads?: number; onProgress?: (done: number, total: number) => void; signal?: AbortSignal }): Promise<Uint8Array> {
  const blocks = await prequantizeLarge(src, quant, o);
  o.signal?.throwIfAborted();
  return buildInferenceGraph(src.config, src.weights!, { quant, accuracyLevel: o.accuracyLevel, loraTargets: [...o.loraTargets], onProgress: o.onProgress, blocks }).toModelProto();
}

/**
 * Writes model.onnx + model.onnx.data + tokenizer files + edgereason.json into `out`, so later loads skip
 * quantisation and graph building. The manifest records the source's fingerprint to detect a stale folder.
 */
export function convertModel(source: string | ModelSource, out: string, opts: ConvertOptions = {}): Manifest {
  checkKeys(opts, ['quant', 'accuracyLevel', 'loraTargets', 'onProgress', 'ropeScaling', 'blocks', 'blocksFrom'], 'convert');
  if (opts.blocks && typeof opts.blocksFrom !== 'string') throw new Error('convert: blocks need blocksFrom, the source\'s fingerprint before they were made (fingerprint(src.files)), to find a source changed meanwhile');
  checkBuildOptions(opts, 'convert');
  if (opts.ropeScaling !== undefined) checkRopeScalingChoice(opts.ropeScaling, 'convert');
  if (typeof out !== 'string' || !out) throw new Error(`convert: out must be a folder path, got ${shown(out)}`);
  if (typeof source !== 'string' && !(source && typeof source === 'object' && source.config && typeof source.path === 'string')) throw new Error(`convert: source must be a model path or openSource()'s result, got ${shown(source)}`);
  const opened = typeof source === 'string' ? openSource(source) : source;
  if (opened.kind === 'converted') throw new Error(`convert: ${opened.path} is already a converted model`);
  const src = rescaled(opened, opts.ropeScaling);
  const quant = opts.quant ?? defaultQuant(src.config), accuracyLevel = opts.accuracyLevel ?? 4;
  checkAccuracyQuant(quant, opts, 'convert');
  // The source's own folder would take the converted files beside its own (a GGUF's then reads the tokenizer.json
  // written there, and so would every other GGUF in that folder).
  if (isSourceFolder(out, src.path)) throw new Error(`convert: out ${out} is the folder of ${src.path}: the converted files would mix with the model's own; choose another folder`);
  // Taken before any weight is read (by prequantizeLarge, for blocks), and compared after the last: a checkpoint
  // replaced meanwhile (a training run saving into it) would leave a graph of mixed weights.
  const before = opts.blocksFrom ?? fingerprint(src.files), sha256 = contentHash(src.files), sourceSize = sourceBytes(src.files);
  // Its own earlier conversion is rebuilt: of the files the source lacks, those it wrote then go, others (a
  // chat_template.jinja the user added) stay. Another model's conversion, or an unknown folder, keeps none of them.
  let keep: (file: string) => boolean = () => false;
  try {
    const m = fs.existsSync(path.join(out, MANIFEST)) ? readManifest(out) : undefined;
    if (m && realPath(m.source.path) === realPath(src.path)) keep = (f) => !(m.written ?? []).includes(path.basename(f));
  } catch { /* not a conversion of ours, or its source is gone */ }
  // A RoPE scaling is recorded where it changed the source's (spelt out): the folder's scaling, chosen at conversion.
  const options = { quant, accuracyLevel, loraTargets: [...(opts.loraTargets ?? [])], ...(src !== opened ? { ropeScaling: ropeChoiceOf(src.config) } : {}) }, from = { path: src.path, kind: src.kind, fingerprint: '' };
  // Built (every weight read) before the folder is made: weights it refuses leave no empty folder behind.
  const graph = buildInferenceGraph(src.config, src.weights!, { quant, accuracyLevel, loraTargets: opts.loraTargets, onProgress: opts.onProgress, blocks: opts.blocks });
  makeDir(out);
  removeDeadTemps(out, (f) => CONVERTED_FILES.includes(f));
  const dataName = 'model.onnx.data';
  let offset = 0, bytes: Uint8Array | undefined;
  // Weights first, then the graph that points into them, both under temporary names: a conversion that dies while
  // writing them (a crash, a full disk, Ctrl-C) leaves an earlier one in the folder as it was, still loadable.
  const staged: { commit(): void; abort(): void }[] = [stagedWrite(path.join(out, dataName), (fd) => {
    bytes = graph.toModelProto({
      external: {
        location: dataName, minBytes: 1024,
        write: (raw) => { const at = offset; writeAll(fd, raw); offset += raw.byteLength; const pad = (64 - (offset % 64)) % 64; if (pad) { writeAll(fd, new Uint8Array(pad)); offset += pad; } return at; },
      },
    });
  })];
  // The tokenizer files and generation_config.json are staged too, and committed with the weights: the folder never
  // holds the new weights beside none (or the old) of them.
  const gen = path.join(src.path, GENERATION_CONFIG), genOut = path.join(out, GENERATION_CONFIG), lacking: string[] = [], written: string[] = [];
  try {
    staged.push(stagedWrite(path.join(out, 'model.onnx'), (g) => writeAll(g, bytes!)));
    const tok = stageTokenizerFiles(out, src.tokenizerFiles);
    staged.push(...tok.writes);
    lacking.push(...tok.lacking);
    written.push(...tok.written);
    // generation_config.json too: its sampling advice is what serve and answer read from the folder they are given.
    if (src.kind === 'hf' && fs.existsSync(gen)) { const raw = readInputFile(gen, 'a JSON file'); staged.push(stagedWrite(genOut, (fd) => writeAll(fd, raw))); written.push(GENERATION_CONFIG); } else if (fs.existsSync(genOut)) lacking.push(genOut);
    if (fingerprint(src.files) !== before) throw new Error(`convert: ${src.path} changed while it was being converted (a file of it was written meanwhile), so the graph would mix old and new weights: nothing was written to ${out}; convert it again once it is complete`);
  } catch (e) {
    for (const s of staged) s.abort();
    throw e;
  }
  // From here to the last write the folder says it is being converted: one that dies in between is refused at load
  // with the command to run again, never paired with an earlier run's files.
  const manifestFile = path.join(out, MANIFEST);
  let earlier: Buffer | undefined;
  try {
    earlier = fs.existsSync(manifestFile) ? fs.readFileSync(manifestFile) : undefined;
    writeJson(manifestFile, { format: 2, converting: true, source: from, options });
  } catch (e) {
    for (const s of staged) s.abort(); // a full disk here leaves no temporary copy of the weights behind
    throw e;
  }
  try {
    staged[0].commit();
  } catch (e) {
    // Nothing replaced (the weights in use: Windows renames over no open file): the earlier conversion stays loadable.
    for (const s of staged.slice(1)) s.abort();
    if (earlier) atomicWrite(manifestFile, (fd) => writeAll(fd, earlier)); else fs.rmSync(manifestFile, { force: true });
    throw e;
  }
  commitAll(staged.slice(1));
  for (const f of lacking) if (!keep(f)) fs.rmSync(f, { force: true });
  const manifest: Manifest = {
    format: 2, config: src.config, graph: 'model.onnx', sizes: { 'model.onnx': bytes!.byteLength, [dataName]: offset },
    samples: Object.fromEntries(['model.onnx', dataName].map((f) => [f, sampledSha256(path.join(out, f))])),
    options, source: { ...from, fingerprint: before, sha256, bytes: sourceSize }, edgereason: builder(),
    written,
  };
  writeJson(path.join(out, MANIFEST), manifest);
  return manifest;
}

const GENERATION_CONFIG = 'generation_config.json';

/** 'auto': checkpoints of 100M parameters and up at q4 or q8, and any too large to build in memory; 'never': build in memory. */
export type CachePolicy = 'auto' | 'always' | 'never';

export const CACHE_POLICIES: readonly CachePolicy[] = ['auto', 'always', 'never'];

/**
 * From this size up a q4 or q8 checkpoint takes many seconds to quantise (Qwen3-0.6B: 14 s here): it is quantised
 * on worker threads, and cached by 'auto'.
 */
const LARGE = 100e6;

/** The cache folder: $EDGEREASON_CACHE, else $XDG_CACHE_HOME/edgereason, else ~/.cache/edgereason. */
export function cacheFolder(): string {
  const env = process.env.EDGEREASON_CACHE;
  if (env && env !== 'off') return path.resolve(expandHome(env)); // a quoted "~/c" is not expanded by the shell
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'edgereason');
}

/** The policy when loadModel is given none: $EDGEREASON_CACHE=off turns the cache off. */
export const defaultCachePolicy = (): CachePolicy => (process.env.EDGEREASON_CACHE === 'off' ? 'never' : 'auto');

export interface CacheOptions {
  quant: Quant;
  /** A RoPE scaling in place of the source's own: its copy is kept apart from the source's plain one. */
  ropeScaling?: RopeScalingChoice;
  accuracyLevel?: number;
  loraTargets?: readonly Projection[];
  policy: CachePolicy;
  /** The policy is the default, $EDGEREASON_CACHE's (not one the caller gave): the note of a conversion says how to turn it off. */
  defaultPolicy?: boolean;
  /** The cache folder; converted copies go to its `converted/` subfolder. */
  dir: string;
  threads?: number;
  onProgress?: (done: number, total: number) => void;
  /** Where a converted copy is written or found, for a person to read. */
  onNote?: (note: string) => void;
  /** Stops a conversion under way (nothing is kept of it). */
  signal?: AbortSignal;
  /**
   * What must hold before a conversion (its error is said before the minutes of converting, not after them); default:
   * the source's tokenizer builds (one opened lazily is built then).
   */
  check?: () => void;
}

/**
 * The converted copy of `src` in the cache, written now when it is missing, stale (its source changed) or from
 * another edgereason version; undefined when the policy builds this checkpoint in memory. Copies are written
 * under a temporary name and renamed into place, so an interrupted load leaves no half-written copy behind.
 */
export async function cachedConversion(src: ModelSource, o: CacheOptions): Promise<ModelSource | undefined> {
  const bytes = weightBytes(src.config, o.quant), fits = bytes <= IN_MEMORY_LIMIT;
  const worthIt = !fits || (o.quant !== 'fp32' && parameterCount(src.config) >= LARGE);
  if (o.policy === 'never' || (o.policy === 'auto' && !worthIt)) return undefined;
  const targets = PROJECTIONS.filter((p) => o.loraTargets?.includes(p)), accuracyLevel = o.accuracyLevel ?? 4;
  const entry = path.join(o.dir, 'converted', entryName(src.path, o.quant, accuracyLevel, targets, o.ropeScaling));
  const found = openEntry(entry, src.path, src);
  if (found.source) {
    o.onNote?.(`model: using the converted copy of ${src.path} in ${entry}`);
    return found.source;
  }
  (o.check ?? (() => void src.tokenizer))();
  // Without a copy, when one cannot be written: build in memory where that is possible, else say what to do.
  const withoutCopy = (problem: string): undefined => {
    if (fits && o.policy === 'auto') {
      o.onNote?.(`model: not keeping a converted copy of ${src.path} (${problem}); building it in memory`);
      return undefined;
    }
    throw new Error(`model: cannot keep a converted copy of ${src.path} (${problem}); set EDGEREASON_CACHE (or loadModel's cacheDir) to a folder with room, or convert it yourself: ${convertCommandLine(src.path, '<folder>', o.quant, targets, o.ropeScaling)}`);
  };
  // Space held by copies that go anyway (half-written ones, this one when it cannot be used) counts as free.
  try {
    makeDir(path.dirname(entry));
    removeAbandoned(path.dirname(entry));
    if (found.why) fs.rmSync(entry, { recursive: true, force: true });
  } catch (e) {
    return withoutCopy(`${path.dirname(entry)} cannot be written: ${(e as Error).message}`);
  }
  const problem = roomFor(path.dirname(entry), bytes);
  if (problem) return withoutCopy(problem);
  o.onNote?.(`model: ${found.why ? `the converted copy in ${entry} ${found.why}; converting` : 'converting'} ${src.path} once (about ${gib(bytes)} GiB) into ${entry}; later loads use it${o.defaultPolicy ? ' (EDGEREASON_CACHE=off builds in memory instead)' : o.policy === 'auto' ? " (cache: 'never' builds in memory instead)" : ''}`);
  const tmp = `${entry}.partial-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
  writing.add(tmp);
  try {
    await convertInWorker({ source: src.path, out: tmp, quant: o.quant, accuracyLevel: o.accuracyLevel, loraTargets: targets, ropeScaling: o.ropeScaling, threads: o.threads }, o.onProgress, o.signal);
    install(tmp, entry, src.path);
  } catch (e) {
    if (!DISK_ERRORS.has((e as NodeJS.ErrnoException).code ?? '')) throw e;
    return withoutCopy(`writing it failed: ${(e as Error).message}`);
  } finally {
    removeTemp(tmp); // (one that cannot be removed must not stand in for the copy, or for building in memory)
    writing.delete(tmp);
  }
  try {
    return openCopy(entry, src);
  } catch (e) {
    if (fs.existsSync(entry)) throw e;
    throw new CopyGone(`the converted copy in ${entry} was removed as soon as it was written (edgereason cache --clear or --prune)`, entry);
  }
}

/** A cached converted copy that went while it loaded: Model.load loads once more, which converts it again. */
export class CopyGone extends Error {
  constructor(message: string, readonly dir: string) { super(message); }
}

/** Errors of the cache folder's disk (full, read-only, no permission), after which a load can still build in memory. */
const DISK_ERRORS = new Set(['ENOSPC', 'EDQUOT', 'EROFS', 'EACCES', 'EPERM']);

/** Temporary folders this process is writing now (a pid alone is not enough: containers reuse them across runs). */
const writing = new Set<string>();

export interface WorkerConvertJob { source: string; out: string; quant: Quant; accuracyLevel?: number; loraTargets: Projection[]; ropeScaling?: RopeScalingChoice; threads?: number }

/**
 * convertModel (with prequantizeLarge) on a worker thread: the gigabytes of blocks it builds go with the
 * thread, instead of sitting in this thread's heap (no GC comes while it waits) beside the session loaded next
 * (7B: peak RSS 11.5 GB when converted here).
 */
export function convertInWorker(job: WorkerConvertJob, onProgress?: (done: number, total: number) => void, signal?: AbortSignal): Promise<Manifest> {
  return new Promise((resolve, reject) => {
    signal?.throwIfAborted();
    const w = new Worker(new URL('./worker-entry.mjs', import.meta.url), { workerData: { entry: 'convert-worker', job } });
    // Aborted: the thread stops where it is (its temporary files are the caller's to remove).
    const stop = () => void w.terminate();
    signal?.addEventListener('abort', stop, { once: true });
    let result: { manifest?: Manifest; error?: { message: string; code?: string } } | undefined;
    w.on('message', (m: { progress?: [number, number] } & NonNullable<typeof result>) => {
      if (m.progress) onProgress?.(...m.progress);
      else result = m;
    });
    w.once('error', reject);
    w.once('exit', (exit) => {
      signal?.removeEventListener('abort', stop);
      if (result?.manifest) return resolve(result.manifest);
      if (signal?.aborted) return reject(signal.reason);
      const e: NodeJS.ErrnoException = new Error(result?.error?.message ?? `convert: the conversion thread stopped (exit code ${exit}) before it finished`);
      if (result?.error?.code) e.code = result.error.code;
      reject(e);
    });
  });
}

/** A name entryName makes, or a temporary copy of one (.partial-<pid>-<hex>, .old-<pid>-<hex>). */
const ENTRY = /-(q4|q8|fp32)(-al\d)?(-lora-[a-z_.]+)?(-rope-[a-z]+[\d.x]*)?-[0-9a-f]{10}(\.(partial|old)-\d+-[0-9a-f]+)?$/;

/** One folder per checkpoint and graph setting: readable name, plus a hash of the source's path. */
function entryName(source: string, quant: Quant, accuracyLevel: number, targets: readonly Projection[], rope?: RopeScalingChoice): string {
  const resolved = real(source) ?? source; // one copy whatever link names the checkpoint
  const base = path.basename(resolved).replace(/\.(gguf|bin)$/, '').replace(/[^\w.-]+/g, '_');
  const hash = crypto.createHash('sha256').update(resolved).digest('hex').slice(0, 10);
  const scaled = rope ? `-rope-${rope.type}${rope.factor ?? ''}${rope.originalMaxPositionEmbeddings !== undefined ? `x${rope.originalMaxPositionEmbeddings}` : ''}` : '';
  return `${base}-${quant}${quant !== 'fp32' ? `-al${accuracyLevel}` : ''}${targets.length ? `-lora-${targets.join('.')}` : ''}${scaled}-${hash}`;
}

/**
 * A checkpoint's path with the links to its folder resolved (as given when it does not exist). A GGUF or llama2.c
 * file keeps its own name: its tokenizer files are read beside the name it is given by.
 */
const real = (p: string | undefined): string | undefined => {
  if (p === undefined || !fs.existsSync(p)) return p;
  return fs.statSync(p).isDirectory() ? realPath(p) : path.join(realPath(path.dirname(p)), path.basename(p));
};

/** The cached copy when it is whole and current; otherwise why not (nothing when there is none). */
function openEntry(dir: string, source: string, of?: ModelSource): { source?: ModelSource; why?: string } {
  if (!fs.existsSync(dir)) return {};
  try {
    const m = readManifest(dir), made = m.edgereason;
    if (made !== builder()) return { why: `was made by ${made ? `edgereason ${made}` : 'an earlier edgereason'}, not this one (${builder()})` };
    if (m.source?.path !== source && real(m.source?.path) !== real(source)) return { why: `belongs to ${m.source?.path}` };
    return { source: of ? openCopy(dir, of) : openSource(dir, { lazyTokenizer: true }) }; // (a load of the copy takes its source's tokenizer)
  } catch (e) {
    // The loader's own advice ("run edgereason convert … again") is what the cache is about to do; a message about
    // the folder itself ("<dir> is stale: …") reads as what the copy is.
    const m = (e as Error).message.replace(/^model: /, '').replace(/; run `[^`]*` again$/, '');
    return { why: m.startsWith(`${dir} `) ? m.slice(dir.length + 1) : `cannot be used (${m})` };
  }
}

let builderId: string | undefined;
/**
 * What built a converted folder: the version, plus a hash of the graph builder's code (src/models/, src/onnx/),
 * so a cached copy is converted again after any change to the graph it holds, released or not. The TypeScript
 * sources are hashed from both the CLI (src/, through tsx) and the built package (dist/), so the two share copies.
 */
export function builder(): string {
  if (builderId) return builderId;
  const h = crypto.createHash('sha256');
  for (const folder of ['../../src/models/', '../../src/onnx/']) {
    const dir = new URL(folder, import.meta.url);
    for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.ts')).sort()) h.update(f).update(fs.readFileSync(new URL(f, dir)));
  }
  return (builderId = `${version()}+${h.digest('hex').slice(0, 8)}`);
}

/** Why `dir` cannot take `bytes` more (not writable, too little free space), or undefined when it can. */
function roomFor(dir: string, bytes: number): string | undefined {
  const why = cannotWriteIn(dir);
  if (why) return `${dir} cannot be written: it ${why}`;
  try {
    const s = fs.statfsSync(dir), free = s.bavail * s.bsize;
    if (free < bytes * 1.05 + 2 ** 28) return `${dir} has ${gib(free)} GiB free, and the copy takes about ${gib(bytes)} GiB`;
  } catch (e) {
    return `${dir} cannot be written: ${(e as Error).message}`;
  }
  return undefined;
}

/**
 * Puts a finished copy in place of an old one. When another load (another process) installed a current copy
 * meanwhile, that one stays, since it may be in use; ours is dropped by the caller.
 */
function install(tmp: string, entry: string, source: string): void {
  if (openEntry(entry, source).source) return;
  const old = `${entry}.old-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
  try {
    rename(entry, old);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  try {
    rename(tmp, entry);
  } catch (e) {
    if (!openEntry(entry, source).source) throw e; // another load got there between our two renames
  } finally {
    removeTemp(old);
  }
}

/** The files convert writes (see convertModel). */
export const CONVERTED_FILES = ['model.onnx', 'model.onnx.data', MANIFEST, 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', GENERATION_CONFIG];

/** Copies left half-written by a load that died. */
function removeAbandoned(dir: string): void {
  for (const name of fs.readdirSync(dir)) if (tempState(path.join(dir, name)) === 'abandoned') removeTemp(path.join(dir, name));
}

/** A temporary copy's state, from the pid in its name; undefined for a finished copy. */
function tempState(dir: string): 'writing' | 'abandoned' | undefined {
  const pid = Number(/\.(?:partial|old)-(\d+)-[0-9a-f]+$/.exec(dir)?.[1]);
  if (!pid) return undefined;
  if (pid === process.pid) return writing.has(dir) ? 'writing' : 'abandoned';
  return processAlive(pid) ? 'writing' : 'abandoned';
}

export const gib = (bytes: number, digits = 1): string => (bytes / 2 ** 30).toFixed(digits);

export interface CacheEntry {
  /** The copy's folder. */
  dir: string;
  bytes: number;
  /** The checkpoint it was converted from (unknown for a half-written copy). */
  source?: string;
  /** ready: loads as is; stale: would be converted again (why says why); writing: a running process is writing it; abandoned: left half-written. */
  state: 'ready' | 'stale' | 'writing' | 'abandoned';
  /** For a stale copy, what it is, to follow "the copy": "is stale: its source … changed after it was converted". */
  why?: string;
}

/** The converted copies in a cache folder, each with its state. */
export function cacheEntries(root: string = cacheFolder()): CacheEntry[] {
  const dir = path.join(root, 'converted');
  if (!fs.existsSync(dir)) return [];
  // Folders only, and any that goes meanwhile (another load installing or replacing it) is left out.
  // Only the folders the cache names (entryName, and its temporary copies): anything else there is the user's.
  const folders = fs.readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory() && ENTRY.test(d.name)).map((d) => d.name).sort();
  return folders.flatMap((name): CacheEntry[] => {
    const full = path.join(dir, name), bytes = folderBytes(full), temp = tempState(full);
    if (bytes === undefined) return [];
    if (temp) return [{ dir: full, bytes, state: temp }];
    let source: string | undefined;
    try { source = readManifest(full).source?.path; } catch { /* openEntry says why below */ }
    if (source !== undefined && !fs.existsSync(source)) return [{ dir: full, bytes, source, state: 'stale', why: `lost its source: ${source} is gone` }];
    const found = openEntry(full, source ?? '');
    return [found.source ? { dir: full, bytes, source, state: 'ready' } : { dir: full, bytes, source, state: 'stale', why: found.why }];
  });
}

/**
 * Removes the stale and abandoned copies (all of them with `all`, except those being written); returns those removed.
 * A copy that cannot be removed (a read-only disk, no permission) stops it, said with what was removed before.
 */
export function pruneCache(root: string = cacheFolder(), all = false): CacheEntry[] {
  const gone = cacheEntries(root).filter((e) => e.state === 'stale' || e.state === 'abandoned' || (all && e.state === 'ready'));
  for (const [i, e] of gone.entries()) {
    try {
      fs.rmSync(e.dir, { recursive: true, force: true });
    } catch (err) {
      const before = gone.slice(0, i);
      throw new Error(`cache: cannot remove ${e.dir} (${(err as Error).message}); ${before.length ? `removed the ${before.length} cop${before.length === 1 ? 'y' : 'ies'} before it (${gib(before.reduce((n, x) => n + x.bytes, 0), 2)} GiB)` : 'nothing was removed'}`);
    }
  }
  return gone;
}

/** The bytes of a folder's files; undefined when it is gone. */
function folderBytes(dir: string): number | undefined {
  try {
    return dirBytes(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}
