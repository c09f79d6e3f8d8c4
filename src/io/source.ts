/**
 * Opens any supported checkpoint: a Hugging Face folder, a GGUF file, a llama.c `.bin`, or a folder
 * written by `edgereason convert` (graph + weights already built).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { checkModelConfig, checkRopeScalingChoice, PROJECTIONS, type ModelConfig, type RopeScalingChoice } from '../models/config.ts';
import type { WeightSource } from './weights.ts';
import { besideTemplate, besideTemplateFile, folderTokenizer, loadTokenizer, readTokenizerFolder } from '../tokenizer/hf.ts';
import type { TextTokenizer, TokenizerFiles } from '../tokenizer/types.ts';
import { ggufChatTemplate, tokenizerFromGguf } from '../tokenizer/gguf.ts';
import { loadHfFolder, PYTORCH_ADVICE, PYTORCH_FILE } from './hf-folder.ts';
import { ggufToModel, splitGgufParts } from './gguf.ts';
import { findLlama2cTokenizer, loadLlama2c } from './llama2c.ts';
import { QUANTS, type Quant } from '../onnx/quant.ts';
import { shown } from '../show.ts';
import { readJsonFile } from './jsonl.ts';
import { realPath, sampledSha256, sha256Of, writeJson } from './safetensors.ts';
import { embeddedNote } from '../models/embedded.ts';

export type SourceKind = 'hf' | 'gguf' | 'llama2c' | 'converted';

export interface ModelSource {
  kind: SourceKind;
  path: string;
  config: ModelConfig;
  /** Absent for converted folders (their weights are inside the ONNX data file). */
  weights?: WeightSource;
  tokenizer: TextTokenizer;
  /** Files whose size and mtime identify this checkpoint (for cache staleness). */
  files: string[];
  /** tokenizer.json (+ tokenizer_config.json, chat template) contents to copy into a converted folder. */
  tokenizerFiles: TokenizerFiles;
  /** A GGUF's tensor types (e.g. F32, Q4_K, Q6_K). */
  storedTypes?: string[];
  /** A converted folder's edgereason.json, as checked when it was opened. */
  manifest?: Manifest;
  /** The sliding window the model attends within (Mistral's): its context stops there. */
  slidingWindow?: number;
}

export const MANIFEST = 'edgereason.json';

/** A converted folder's edgereason.json, parsed but not checked (openSource checks it). */
export function readManifest(dir: string): Manifest { return readJsonFile(path.join(dir, MANIFEST), 'model: ') as Manifest; }

/** A Hugging Face model id, owner/name (hf:owner/name downloads one: io/hub.ts). */
export const HUB_ID = /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/;

/** The model a path names: a file of a Hugging Face folder (its config.json or weights) stands for the folder. */
export function modelPath(p: string): string {
  const abs = path.resolve(p);
  return /^(config\.json|model.*\.safetensors(\.index\.json)?)$/.test(path.basename(abs)) && fs.existsSync(path.join(path.dirname(abs), 'config.json')) ? path.dirname(abs) : abs;
}

/** The folder a Hugging Face folder's config.json or weights stand for (they load as it: modelPath), else `p` as given (a folder, a hub id). */
export function folderOf(p: string): string {
  const m = modelPath(p);
  return m !== path.resolve(p) ? m : p;
}

/**
 * `lazyTokenizer`: the tokenizer is built at its first use (its files are read now, and refused now when missing or
 * not JSON): Model.load builds it while onnxruntime makes the session on the worker thread, and a worker that builds
 * the graph never builds it. Otherwise it is built here, and a tokenizer that is not the model's is refused here.
 */
export function openSource(p: string, o: { lazyTokenizer?: boolean } = {}): ModelSource {
  const src = openLazily(p);
  if (!o.lazyTokenizer) void src.tokenizer;
  return src;
}

function openLazily(p: string): ModelSource {
  // owner/name where no folder "owner" is here: meant as a Hugging Face id.
  const hubId = HUB_ID.test(p) && !fs.existsSync(p.split('/')[0]);
  if (!fs.existsSync(p)) {
    const link = fs.lstatSync(p, { throwIfNoEntry: false })?.isSymbolicLink();
    if (link && (() => { try { fs.statSync(p); return false; } catch (e) { return (e as NodeJS.ErrnoException).code === 'ELOOP'; } })()) throw new Error(`model: ${p} is a symbolic link that leads back to itself (a loop)`);
    throw new Error(`model: ${p} ${link ? `is a symbolic link to ${fs.readlinkSync(p)}, which does not exist` : 'does not exist'}${embeddedNote(p) || (hubId ? ` (as a Hugging Face model it is not in the cache: hf:${p} downloads it)` : '')}`);
  }
  const abs = modelPath(p), stat = fs.statSync(abs), isDir = stat.isDirectory();
  // A named pipe would hang the read of its header (or fail it unnamed): a model is a file or a folder.
  if (!isDir && !stat.isFile()) throw new Error(`model: ${abs} is not a regular file (a named pipe, a socket or a device): give the model's file or folder`);
  const head = isDir ? '' : magic(abs);
  // torch.save writes a zip archive.
  if (!isDir && (PYTORCH_FILE.test(path.basename(abs)) || head === 'PK\x03\x04')) throw new Error(`model: ${abs} ${PYTORCH_ADVICE} and give its folder`);
  // A GGUF is read by its name: one named otherwise (.GGUF, a .bin, an Ollama blob) is said to be one.
  if (head === 'GGUF' && !abs.endsWith('.gguf')) throw new Error(`model: ${abs} is a GGUF file (its header starts with "GGUF"): give it a name ending in .gguf (a link will do)`);
  if (isDir) {
    if (fs.existsSync(path.join(abs, MANIFEST))) return openConverted(abs);
    if (!fs.existsSync(path.join(abs, 'config.json')) && fs.existsSync(path.join(abs, 'adapter_config.json'))) {
      throw new Error(`model: ${abs} is a PEFT adapter (adapter_config.json), not a model: give it as the adapter (the adapter option of loadModel), with its base model as the model`);
    }
    const { config, weights, slidingWindow } = loadHfFolder(abs), tokenizerFiles = readTokenizerFolder(abs);
    return withTokenizer({ kind: 'hf', path: abs, config, weights, files: openSourceFiles(abs), tokenizerFiles, ...(slidingWindow !== undefined ? { slidingWindow } : {}) }, () => {
      const tokenizer = checkVocab(folderTokenizer(abs, tokenizerFiles, { bosTokenId: config.bosTokenId, eosTokenIds: config.eosTokenIds }), config, path.join(abs, 'tokenizer.json'));
      checkEos(tokenizer, config, abs);
      return tokenizer;
    });
  }
  if (abs.endsWith('.gguf')) {
    const { config, weights, metadata, storedTypes } = ggufToModel(abs);
    // A tokenizer.json beside the file wins (the GGUF's chat template still counts where the folder has none, as
    // llama.cpp reads it); otherwise rebuild it from the GGUF metadata.
    const dir = path.dirname(abs), folder = fs.existsSync(path.join(dir, 'tokenizer.json')) ? readTokenizerFolder(dir) : undefined, own = ggufChatTemplate(metadata);
    const files = !folder ? { ...tokenizerFromGguf(metadata, abs), ...besideTemplate(abs) }
      : folder.chatTemplate === undefined && folder.tokenizerConfig?.chat_template === undefined && own !== undefined
        ? { ...folder, tokenizerConfig: { ...folder.tokenizerConfig, chat_template: own }, chatTemplateFile: `${path.basename(abs)}'s tokenizer.chat_template` } : folder;
    return withTokenizer({ kind: 'gguf', path: abs, config, weights, files: openSourceFiles(abs), tokenizerFiles: files, storedTypes }, () => {
      const tokenizer = checkVocab(loadTokenizer({ ...files, name: abs }, { bosTokenId: config.bosTokenId, eosTokenIds: config.eosTokenIds }), config,
        'name' in files ? `${abs} (tokenizer metadata)` : path.join(dir, 'tokenizer.json'));
      if (!('name' in files)) checkGgufVocab(tokenizer, metadata, path.join(dir, 'tokenizer.json'), abs);
      return tokenizer;
    });
  }
  if (abs.endsWith('.bin')) {
    const { config, weights, tokenizer, tokenizerPath, tokenizerFiles } = loadLlama2c(abs);
    return { kind: 'llama2c', path: abs, config, weights, tokenizer, files: [abs, tokenizerPath, ...beside(abs)], tokenizerFiles }; // the files openSourceFiles lists
  }
  throw new Error(`model: ${abs} is not a model folder (config.json), a .gguf file or a llama2.c .bin file`);
}

/** A file's first four bytes, as Latin-1 text. */
function magic(file: string): string {
  const fd = fs.openSync(file, 'r'), head = Buffer.alloc(4);
  try { return head.toString('latin1', 0, fs.readSync(fd, head, 0, 4, 0)); } finally { fs.closeSync(fd); }
}

/** A tokenizer with ids past the embedding table belongs to another model: refuse it before it indexes out of range. */
function checkVocab<T extends { vocabSize: number }>(tokenizer: T, config: ModelConfig, where: string): T {
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new Error(`model: ${where} has token ids up to ${tokenizer.vocabSize - 1}, but the model's embedding has ${config.vocabSize} rows: the tokenizer belongs to another model`);
  }
  return tokenizer;
}

/**
 * A Hugging Face folder's end tokens (config.json's eos_token_id) include a special token of its tokenizer.json: where
 * every one is ordinary text there ("#"), the tokenizer is another model's, which would read the weights' ids as other
 * words. (One ordinary end token beside a special one is a choice a config may make.)
 */
function checkEos(tokenizer: TextTokenizer, config: ModelConfig, dir: string): void {
  // Named by the file that gives it: the ids are config.json's eos_token_id, then generation_config.json's.
  // (Read only to name it in a refusal: a model that loads reads config.json once.)
  const from = (id: number) => ([(readJsonFile(path.join(dir, 'config.json')) as { eos_token_id?: unknown }).eos_token_id].flat().includes(id) ? 'config.json' : 'generation_config.json');
  const special = tokenizer.specialIds, ids = config.eosTokenIds.filter((id) => id < tokenizer.vocabSize);
  // Every end token past the tokenizer's vocabulary (a smaller tokenizer's, another model's): no reply could end.
  if (config.eosTokenIds.length && !ids.length) {
    const id = config.eosTokenIds[0];
    throw new Error(`model: ${path.join(dir, from(id))}'s end token ${id} is past ${path.join(dir, 'tokenizer.json')}'s vocabulary (0..${tokenizer.vocabSize - 1}): the tokenizer is not this model's (or eos_token_id is wrong)`);
  }
  if (!special || !ids.length || ids.some((id) => special.has(id) || tokenizer.decode([id]) === '')) return;
  const plain = ids[0];
  throw new Error(`model: ${path.join(dir, from(plain))}'s end token ${plain} is ${JSON.stringify(tokenizer.decode([plain]))} in ${path.join(dir, 'tokenizer.json')}, ordinary text, not a special token: the tokenizer is not this model's (or eos_token_id is wrong)`);
}

/** A tokenizer.json beside a GGUF must be the GGUF's own vocabulary (a shared models folder may hold another model's). */
function checkGgufVocab(tokenizer: TextTokenizer, metadata: Record<string, unknown>, where: string, gguf: string): void {
  const tokens = metadata['tokenizer.ggml.tokens'], types = metadata['tokenizer.ggml.token_type'];
  if (!Array.isArray(tokens)) return;
  const ids = new Set([...Array.from({ length: 64 }, (_, i) => Math.floor((i * tokens.length) / 64)), tokens.length - 1, tokenizer.bosTokenId, ...tokenizer.eosTokenIds]);
  for (const id of ids) {
    if (id === undefined || id >= tokens.length || (Array.isArray(types) && types[id] === 5)) continue; // 5: an unused padding row ([PAD151700])
    if (tokenizer.tokenToId(String(tokens[id])) === id) continue;
    throw new Error(`model: ${where} is not the vocabulary of ${gguf} (the GGUF's token ${id} is ${JSON.stringify(tokens[id])}, which ${where} ${tokenizer.tokenToId(String(tokens[id])) === undefined ? 'does not have' : `numbers ${tokenizer.tokenToId(String(tokens[id]))}`}): move it away to use the GGUF's own tokenizer, or put the model's own there`);
  }
}

/** Identity of a checkpoint: path, size and modification time of each of its files. */
export function fingerprint(files: string[]): string {
  const h = crypto.createHash('sha256');
  for (const f of [...files].sort()) {
    const s = fs.statSync(f, { throwIfNoEntry: false }); // a link whose target is gone counts as a missing file
    h.update(`${path.resolve(f)}\0${s ? `${s.size}\0${Math.floor(s.mtimeMs)}` : 'missing'}\n`);
  }
  return h.digest('hex').slice(0, 16);
}

/**
 * The sha256 of a checkpoint's files' contents (by name, in order; a missing file counted as missing), and their bytes:
 * read where their sizes are the same but their times changed, so that files rewritten with the same bytes (a copy
 * without -p, a touch, a checkout) are not taken for another model.
 */
export function contentHash(files: string[]): string {
  const h = crypto.createHash('sha256');
  for (const f of [...files].sort()) h.update(`${path.basename(f)}\0${fs.existsSync(f) ? sha256Of(f) : 'missing'}\n`);
  return h.digest('hex');
}

/** The bytes of a checkpoint's files (a missing one counts none). */
export const sourceBytes = (files: string[]): number => files.reduce((n, f) => n + (fs.statSync(f, { throwIfNoEntry: false })?.size ?? 0), 0);

export interface Manifest {
  /** 2: the graph returns only each step's new K/V rows (format 1 returned the whole cache). */
  format: 2;
  config: ModelConfig;
  /** ropeScaling: the RoPE scaling chosen at conversion in place of the source's own (absent: the source's). */
  options: { quant: Quant; accuracyLevel: number; loraTargets: string[]; ropeScaling?: RopeScalingChoice };
  /**
   * sha256: contentHash of the source's files, and bytes their sizes' sum (both absent in folders from before them):
   * where the fingerprint differs but the bytes do not, the contents are compared.
   */
  source: { path: string; kind: SourceKind; fingerprint: string; sha256?: string; bytes?: number };
  graph: string;
  /** Bytes of each file convert wrote (graph and weights), checked at load; absent in folders from before it. */
  sizes?: Record<string, number>;
  /** sampledSha256 of the same files, checked at load: a copy damaged since, of the same size, is refused (absent in folders from before it). */
  samples?: Record<string, string>;
  /** What wrote the folder: the edgereason version + a hash of its graph-building code (absent in folders from before it). */
  edgereason?: string;
  /** The tokenizer and generation-config files convert wrote from the source (a rebuild removes those the source no longer has, and keeps the user's). */
  written?: string[];
  /** Set while convert renames its files into place: a folder that still says so holds a conversion that did not finish. */
  converting?: true;
}

/**
 * The command that rebuilds a converted folder with the settings it was converted with (into another folder when
 * this one is the source's own, as convert now requires); `m` as read, possibly damaged.
 */
export function convertAgain(dir: string, m: Partial<Manifest> | undefined): string {
  const from = m?.source?.path, out = typeof from === 'string' && isSourceFolder(dir, from) ? '<folder>' : dir;
  return convertCommandLine(from ?? '<source>', out, m?.options?.quant, Array.isArray(m?.options?.loraTargets) ? m.options.loraTargets : [], m?.options?.ropeScaling);
}

/**
 * openSource of `dir`, the cache's converted copy of `of` (its manifest checked against `of`'s files, as ever): the
 * copy's tokenizer is `of`'s, written from it, and not built a second time (a second for a 151K-token vocabulary).
 */
export const openCopy = (dir: string, of: ModelSource): ModelSource => openConverted(path.resolve(dir), of);

function openConverted(dir: string, of?: ModelSource): ModelSource {
  const file = path.join(dir, MANIFEST);
  const m = readManifest(dir);
  const again = () => convertAgain(dir, m);
  if (m?.format !== 2) throw new Error(`model: ${file} has format ${JSON.stringify(m?.format)}; this edgereason reads format 2: run \`${again()}\` again`);
  if (m.converting) throw new Error(`model: ${dir} holds a conversion that did not finish; run \`${again()}\` again`);
  checkManifest(m, file);
  for (const [name, size] of Object.entries(m.sizes ?? {})) {
    const f = path.join(dir, name), got = fs.existsSync(f) ? fs.statSync(f).size : -1;
    if (got !== size) {
      throw new Error(`model: ${f} ${got < 0 ? 'is missing' : `has ${got} bytes, ${MANIFEST} recorded ${size}`} (an interrupted convert?); run \`${again()}\` again`);
    }
    const sum = m.samples?.[name];
    if (sum !== undefined && sampledSha256(f) !== sum) throw new Error(`model: ${f} holds other bytes than convert wrote (sampled sha256; damaged since, by a crash or a write?); run \`${again()}\` again`);
  }
  // The tokenizer and generation files it wrote: one gone (a cached copy partly deleted) would lose the chat template
  // or the model's sampling advice.
  const gone = (Array.isArray(m.written) ? m.written : []).find((f) => typeof f === 'string' && f === path.basename(f) && !fs.existsSync(path.join(dir, f)));
  if (gone) throw new Error(`model: ${path.join(dir, gone)} is missing (the convert that made ${dir} wrote it); run \`${again()}\` again`);
  // A source gone, or all of whose files are (links whose targets are gone: a hub cache's pruned blobs), cannot be
  // compared: the copy loads as it is. Some files gone is a change.
  const sourceFiles = fs.existsSync(m.source.path) ? openSourceFiles(m.source.path) : [];
  if (sourceFiles.some((f) => fs.existsSync(f))) {
    const now = fingerprint(sourceFiles);
    // folders converted before the file set was narrowed hashed every .json/.safetensors/.jinja (no recorded sizes),
    // or an adapter_model.safetensors beside the weights too
    const earlier = (set: RegExp) => fingerprint(openSourceFiles(m.source.path, set)) === m.source.fingerprint;
    if (now !== m.source.fingerprint && !earlier(WITH_ADAPTER) && (m.sizes || !earlier(/\.(json|safetensors|jinja)$/))) {
      const text = fs.readFileSync(file, 'utf8'); // (the manifest before the contents are read: a convert may rewrite it meanwhile)
      if (m.source.sha256 === undefined || m.source.bytes !== sourceBytes(sourceFiles) || contentHash(sourceFiles) !== m.source.sha256) {
        throw new Error(`model: ${dir} is stale: its source ${m.source.path} changed after it was converted; run \`${again()}\` again`);
      }
      // The same bytes under new times: recorded, so that the next load need not read them again (where it may write:
      // a read-only folder reads them at every load), unless a convert rewrote the manifest meanwhile.
      try {
        if (fs.readFileSync(file, 'utf8') === text && JSON.stringify(JSON.parse(text)) === JSON.stringify(m)) writeJson(file, { ...m, source: { ...m.source, fingerprint: now } });
      } catch { /* read again next time */ }
    }
  }
  if (of) return withTokenizer({ kind: 'converted', path: dir, config: m.config, files: [file], tokenizerFiles: of.tokenizerFiles, manifest: m }, () => of.tokenizer);
  const tokenizerFiles = readTokenizerFolder(dir);
  return withTokenizer({ kind: 'converted', path: dir, config: m.config, files: [file], tokenizerFiles, manifest: m },
    () => checkVocab(folderTokenizer(dir, tokenizerFiles, { bosTokenId: m.config.bosTokenId, eosTokenIds: m.config.eosTokenIds }), m.config, path.join(dir, 'tokenizer.json')));
}

/** `s` with the tokenizer `make` builds at its first use, kept from then on (one that fails is tried again at each use). */
function withTokenizer(s: Omit<ModelSource, 'tokenizer'>, make: () => TextTokenizer): ModelSource {
  let made: TextTokenizer | undefined;
  return Object.defineProperty(s, 'tokenizer', { get: () => (made ??= make()), enumerable: true }) as ModelSource;
}

/** `src` with another config, its tokenizer the same (not built for the copy when it has not been yet). */
export function withConfig(src: ModelSource, config: ModelConfig): ModelSource {
  return Object.defineProperties({}, { ...Object.getOwnPropertyDescriptors(src), config: { value: config, enumerable: true, writable: true } }) as ModelSource;
}

/** Whether `dir` is the folder a checkpoint lives in (a Hugging Face folder itself, a GGUF's or .bin's folder), links resolved. */
export function isSourceFolder(dir: string, source: string): boolean {
  if (!fs.existsSync(dir) || !fs.existsSync(source)) return false;
  return realPath(fs.statSync(source).isDirectory() ? source : path.dirname(source)) === realPath(dir);
}

/** Whether `dir` is the folder of the single-file model (a GGUF, a llama2.c .bin) that `model` names; false for a model folder. */
export function isModelFileFolder(dir: string, model: string): boolean {
  const file = modelPath(model);
  return fs.existsSync(file) && !fs.statSync(file).isDirectory() && isSourceFolder(dir, file);
}

/** `~` at the start of a path, alone or before a separator ("/", and "\\" on Windows), as the home folder; `~user/…` and other paths as they are. */
export function expandHome(p: string, platform: string = process.platform): string {
  return (platform === 'win32' ? /^~(?=[\\/]|$)/ : /^~(?=\/|$)/).test(p) ? os.homedir() + p.slice(1) : p;
}

/** The `edgereason convert` command line for a source, as the errors suggest it (`out` "<folder>" stays as is). */
export function convertCommandLine(source: string, out: string, quant?: string, loraTargets: readonly string[] = [], rope?: RopeScalingChoice): string {
  return `edgereason convert --model ${shellQuote(source)} --out ${out === '<folder>' ? out : shellQuote(out)}${quant ? ` --quant ${quant}` : ''}${loraTargets.length ? ` --lora-targets ${shellQuote(loraTargets.join(','))}` : ''}${rope ? ` ${ropeScalingFlags(rope)}` : ''}`;
}

/** A RoPE scaling choice as the CLI's flags (llama.cpp's names): --rope-scaling yarn --rope-scale 4 --yarn-orig-ctx 32768. */
function ropeScalingFlags(r: RopeScalingChoice): string {
  return `--rope-scaling ${r.type}${r.factor !== undefined ? ` --rope-scale ${r.factor}` : ''}${r.originalMaxPositionEmbeddings !== undefined ? ` --yarn-orig-ctx ${r.originalMaxPositionEmbeddings}` : ''}`;
}

/**
 * A path as a shell word, so a suggested command can be pasted: as is when plain, else quoted — in single quotes for
 * a POSIX shell, in double quotes on Windows (cmd.exe keeps single quotes; a Windows path holds no double quote).
 */
export const shellQuote = (p: string, platform: string = process.platform): string => platform === 'win32'
  ? (/^[\w%+=:.\\/-]+$/.test(p) ? p : `"${p}"`) // (PowerShell reads a bare a,b as a list and @x as splatting)
  : (/^[\w@%+=:,./-]+$/.test(p) ? p : `'${p.replace(/'/g, `'\\''`)}'`);

/** The manifest's fields, each checked by name (a hand-edited or truncated edgereason.json must not load as garbage). */
function checkManifest(m: Manifest, file: string): void {
  const bad = (field: string, want: string, got: unknown) => { throw new Error(`model: ${file} field "${field}" must be ${want}, got ${shown(got)}`); };
  const o = m.options, src = m.source;
  // A file of the folder: a name, not a path that leads out of it ("." and ".." included).
  if (typeof m.graph !== 'string' || !m.graph || m.graph !== path.basename(m.graph) || m.graph === '.' || m.graph === '..') bad('graph', 'the name of the graph file in the folder', m.graph);
  if (!o || typeof o !== 'object') bad('options', 'an object {quant, accuracyLevel, loraTargets}', o);
  if (!QUANTS.includes(o.quant)) bad('options.quant', QUANTS.map((q) => `"${q}"`).join(', '), o.quant);
  if (!Number.isInteger(o.accuracyLevel)) bad('options.accuracyLevel', 'an integer', o.accuracyLevel);
  if (!Array.isArray(o.loraTargets) || !o.loraTargets.every((t) => (PROJECTIONS as readonly string[]).includes(t))) bad('options.loraTargets', `a list of projections (${PROJECTIONS.join(', ')})`, o.loraTargets);
  if (o.ropeScaling !== undefined) checkRopeScalingChoice(o.ropeScaling, `model: ${file}`, 'options.ropeScaling');
  if (!src || typeof src !== 'object' || typeof src.path !== 'string' || typeof src.fingerprint !== 'string') bad('source', 'an object {path, kind, fingerprint}', src);
  if (src.sha256 !== undefined && (typeof src.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(src.sha256))) bad('source.sha256', 'a sha256 in hex', src.sha256);
  if (src.bytes !== undefined && !Number.isSafeInteger(src.bytes)) bad('source.bytes', 'a byte count', src.bytes);
  if (m.sizes !== undefined && (!m.sizes || typeof m.sizes !== 'object' || !Object.values(m.sizes).every((n) => Number.isInteger(n)))) bad('sizes', 'an object of byte counts', m.sizes);
  if (m.samples !== undefined && (!m.samples || typeof m.samples !== 'object' || !Object.entries(m.samples).every(([f, s]) => m.sizes?.[f] !== undefined && typeof s === 'string' && /^[0-9a-f]{64}$/.test(s)))) bad('samples', 'sampled sha256 sums (hex) of the files "sizes" names', m.samples);
  if (m.edgereason !== undefined && typeof m.edgereason !== 'string') bad('edgereason', 'a version string', m.edgereason);
  checkModelConfig(m.config, `model: ${file}`);
}

/**
 * What defines a model folder: weights, config, tokenizer, chat template (not e.g. a router.json trained beside it,
 * nor a PEFT adapter saved there: adapter_model.safetensors is not the model's).
 */
const DEFINING = /^(config\.json|generation_config\.json|tokenizer(_config)?\.json|special_tokens_map\.json|added_tokens\.json|vocab\.json|merges\.txt|chat_template\.(jinja|json)|(?!adapter_model\.).*\.safetensors|model\.safetensors\.index\.json)$/;
/** DEFINING as it was before 2026-12-03, adapter_model.safetensors included: the fingerprints of folders converted then. */
const WITH_ADAPTER = new RegExp(DEFINING.source.replace('(?!adapter_model\\.)', ''));

/** The files that make up a source checkpoint (without loading it). */
export function openSourceFiles(p: string, defining = DEFINING): string[] {
  const abs = path.resolve(p);
  if (fs.statSync(abs).isDirectory()) return fs.readdirSync(abs).filter((f) => defining.test(f)).map((f) => path.join(abs, f));
  if (abs.endsWith('.bin')) {
    let tok: string | undefined;
    try { tok = findLlama2cTokenizer(abs); } catch { /* the load says why */ }
    return [abs, ...(tok ? [tok] : []), ...beside(abs)];
  }
  // A GGUF: its parts (a split one's, by llama.cpp's naming) and, when a tokenizer.json sits beside it, the tokenizer files it is read with.
  const dir = path.dirname(abs), parts = splitGgufParts(abs)?.filter((f) => fs.existsSync(f)) ?? [abs];
  const tokenizer = fs.existsSync(path.join(dir, 'tokenizer.json')) ? fs.readdirSync(dir).filter((f) => TOKENIZER_FILES.test(f)).map((f) => path.join(dir, f)) : [];
  return [...parts, ...(tokenizer.length ? tokenizer : beside(abs))];
}
/** A chat_template.jinja beside a single-file model (besideTemplate): one of the files it is read with. */
const beside = (abs: string) => { const f = besideTemplateFile(abs); return f ? [f] : []; };
const TOKENIZER_FILES = /^(tokenizer(_config)?\.json|special_tokens_map\.json|chat_template\.(jinja|json))$/;
