/**
 * PEFT LoRA adapters: adapter_config.json (r, lora_alpha, target_modules, optional alora_invocation_tokens)
 * + adapter_model.safetensors with tensors named
 * base_model.model.model.layers.<i>.<self_attn|mlp>.<proj>.lora_A.weight [r, in] / lora_B.weight [out, r].
 */
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { PROJECTIONS, projectionShape, projectionTensorName, type ModelConfig, type Projection } from '../models/config.ts';
import type { AdapterTensors } from '../runtime/engine.ts';
import { checkFinite, finiteWeights, FLOAT_DTYPES, makeDir, openSafetensors, writeJson, writeSafetensors, type SafetensorsFile } from './safetensors.ts';
import { shown } from '../show.ts';
import { readJsonFile } from './jsonl.ts';
import { hubRepo } from './hub.ts';
import { ggufStem } from './gguf.ts';
import { embeddedNote } from '../models/embedded.ts';
import { pytorchAdvice } from './hf-folder.ts';

export interface AdapterConfig {
  r: number;
  loraAlpha: number;
  /** Rank-stabilised LoRA (use_rslora): B·A is scaled by alpha / √r instead of alpha / r. */
  rslora?: boolean;
  targets: Projection[];
  /** Activated LoRA: the adapter applies from these tokens on. */
  aloraInvocationTokens?: number[];
}

export interface LoadedAdapter { dir: string; config: AdapterConfig; tensors: AdapterTensors }

const PEFT_PREFIX = 'base_model.model.';

/** The factor PEFT applies to B·A: lora_alpha / r, or lora_alpha / √r for rank-stabilised LoRA. */
export const loraScale = (c: AdapterConfig): number => c.loraAlpha / (c.rslora ? Math.sqrt(c.r) : c.r);

/** A PEFT adapter folder's adapter_config.json, checked (see parseAdapterConfig). */
export function readAdapterConfig(dir: string, numLayers?: number): AdapterConfig {
  const cfgFile = path.join(dir, 'adapter_config.json');
  if (!fs.existsSync(cfgFile)) throw new Error(`adapter: ${notAnAdapter(dir) ?? `${cfgFile} not found (expected a PEFT adapter folder)`}`);
  const raw = readJsonFile(cfgFile, 'adapter: ') as Record<string, unknown>;
  return parseAdapterConfig(raw, cfgFile, numLayers);
}

/** What `dir`, given as an adapter folder without an adapter_config.json, is instead (a file, a model, an unfinished run), or undefined. */
function notAnAdapter(dir: string): string | undefined {
  if (!fs.existsSync(dir)) return `${dir} does not exist${embeddedNote(dir)}`;
  if (!fs.statSync(dir).isDirectory()) {
    const own = ['adapter_config.json', 'adapter_model.safetensors'].includes(path.basename(dir));
    return `${dir} is a file; an adapter is a folder (adapter_config.json and adapter_model.safetensors)${own ? `: give ${path.dirname(dir)}` : ''}`;
  }
  const inside = fs.readdirSync(dir).filter((d) => fs.existsSync(path.join(dir, d, 'adapter_config.json'))).map((d) => path.join(dir, d));
  if (fs.existsSync(path.join(dir, 'config.json'))) {
    return `${dir} holds a model (config.json), not a PEFT adapter (adapter_config.json): give it as the model${inside.length ? `, and an adapter folder such as ${inside.slice(0, 2).join(' or ')}` : ''}`;
  }
  if (fs.existsSync(path.join(dir, 'checkpoint', 'checkpoint.json'))) return `${dir} holds a training checkpoint but no adapter: the run did not finish (run it again with --resume to finish it and write the adapter)`;
  if (inside.length) return `${dir} holds no adapter_config.json, but ${inside.slice(0, 2).join(' and ')} ${inside.length > 1 ? 'are adapter folders' : 'is an adapter folder'}: give ${inside.length > 1 ? 'one' : 'it'}`;
  return undefined;
}

/** base_model_name_or_path recorded in an adapter folder's adapter_config.json (undefined when absent, empty or unreadable). */
export function recordedBase(dir: string): string | undefined {
  try {
    const v = (readJsonFile(path.join(dir, 'adapter_config.json')) as { base_model_name_or_path?: unknown } | null)?.base_model_name_or_path;
    return typeof v === 'string' && v.trim() ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A note when an adapter records another base model (base_model_name_or_path) than the one it is loaded on, by
 * name: `names` are the model's (modelNames). Same-shaped models (an Instruct model and its base, a Coder
 * variant) take each other's adapters without an error, and answer worse; a model saved under another name
 * is the same model, hence a note, not a refusal.
 */
export function baseModelNote(dir: string, names: readonly string[]): string | undefined {
  const base = recordedBase(dir);
  if (base === undefined || namesModel(base, names) !== false) return undefined;
  return `adapter: ${dir} was trained on ${base} (its adapter_config.json's base_model_name_or_path), and this model is ${names[0]}: on another model than its own an adapter answers worse without any error (if this is that model under another name, all is well)`;
}

/**
 * What a model goes by, for baseModelNote: its Hugging Face repository where it is in the cache, its path, and for
 * a converted folder its source's too.
 */
export function modelNames(src: { path: string; manifest?: { source: { path: string } } }): string[] {
  const of = (p: string) => { const repo = hubRepo(p) ?? hubRepo(path.dirname(p)); return repo ? [repo, p] : [p]; };
  return [...of(src.path), ...(src.manifest ? of(src.manifest.source.path) : [])];
}

/**
 * The name a model reference goes by, lower-cased: a Hugging Face id's or a path's last part, without what its
 * copies add (a GGUF's quantisation and part number, a repository's -GGUF, -hf, bnb-4bit, AWQ, GPTQ, MLX or -4bit suffix).
 */
export function refName(ref: string): string {
  if (ref.startsWith('hf:')) ref = ref.slice(3).replace(/[:@][^/]*$/, ''); // the CLI's hf:owner/name[:quant][@revision]
  const last = (hubRepo(ref) ?? ref).replace(/[\\/]+$/, '').split(/[\\/]/).pop() ?? '';
  let name = ggufStem(last.toLowerCase()).replace(/\.bin$/, '');
  for (let before = ''; before !== name;) {
    before = name;
    name = name.replace(/[-._](ud-)?(i?q\d(_[a-z0-9]+)*|f16|bf16|f32|fp16)$/, '').replace(/-(gguf|hf|(unsloth-)?bnb-4bit|unsloth|awq|gptq(-int[48])?|mlx|\d+bit)$/, '');
  }
  return name;
}
/** Whether `ref` names one of the models `names` are (by refName); undefined where either says nothing (a default file name). */
export function namesModel(ref: string, names: readonly string[]): boolean | undefined {
  const want = refName(ref), known = names.map(refName).filter((n) => !GENERIC_NAMES.has(n));
  return GENERIC_NAMES.has(want) || !known.length ? undefined : known.includes(want);
}

/** An activated adapter's invocation ids lie within the model's tokenizer's vocabulary (`tokenizerSize`): see loadAdapter. */
export function checkInvocationIds(a: Pick<LoadedAdapter, 'dir' | 'config'>, model: ModelConfig, tokenizerSize: number): void {
  const size = Math.min(model.vocabSize, tokenizerSize), inv = a.config.aloraInvocationTokens?.find((t) => t >= size);
  if (inv !== undefined) throw new Error(`adapter: ${path.join(a.dir, 'adapter_config.json')} field "alora_invocation_tokens" holds token id ${inv}, outside the model's vocabulary (0..${size - 1}${size < model.vocabSize ? `, its tokenizer's; the embedding's rows past it are padding` : ''}): the adapter belongs to another model`);
}

/** Names that say nothing of the model (llama.cpp's and PyTorch's default file names): never compared. */
const GENERIC_NAMES = new Set(['ggml-model', 'model', 'consolidated', 'pytorch_model']);

/**
 * The adapter in `dir` for a model of this shape. `tokenizerSize`: the model's tokenizer's vocabulary, which an
 * activated adapter's invocation ids must lie within (Qwen's embedding has padding rows past its tokenizer's tokens,
 * where another Qwen's "<think>" id would land).
 */
export function loadAdapter(dir: string, model: ModelConfig, tokenizerSize = model.vocabSize): LoadedAdapter {
  const cfgFile = path.join(dir, 'adapter_config.json'), wFile = path.join(dir, 'adapter_model.safetensors');
  const config = readAdapterConfig(dir, model.numLayers);
  if (!fs.existsSync(wFile)) {
    const pickled = fs.existsSync(path.join(dir, 'adapter_model.bin')); // PEFT's format before safetensors
    throw new Error(`adapter: ${wFile} not found${pickled ? `; ${path.join(dir, 'adapter_model.bin')} ${pytorchAdvice('adapter')}` : ''}`);
  }
  const file = openSafetensors(wFile);
  checkSavedWith(file, config, cfgFile);
  checkInvocationIds({ dir, config }, model, tokenizerSize);
  const scale = loraScale(config), tensors: AdapterTensors = new Map(), used = new Set<string>();
  for (let l = 0; l < model.numLayers; l++) {
    for (const proj of config.targets) {
      const base = projectionTensorName(l, proj);
      const aName = `${PEFT_PREFIX}${base}.lora_A.weight`, bName = `${PEFT_PREFIX}${base}.lora_B.weight`;
      if (!file.has(aName) || !file.has(bName)) throw new Error(`adapter: ${wFile} lacks "${file.has(aName) ? bName : aName}" (target_modules lists ${proj})`);
      const [out, inp] = projectionShape(model, proj);
      const want = { [aName]: [config.r, inp], [bName]: [out, config.r] };
      for (const [n, s] of Object.entries(want)) {
        const got = file.shape(n), dtype = file.info(n).dtype;
        if (got.join() !== s.join()) {
          const rankAt = n === aName ? 0 : 1, other = 1 - rankAt; // A is [r, in], B is [out, r]
          if (got.length === 2 && got[other] === s[other]) throw new Error(`adapter: ${wFile} tensor "${n}" has rank ${got[rankAt]} (shape [${got}]), but ${cfgFile} says "r": ${config.r}`);
          const trainedOn = recordedBase(dir); // the likely cause, where the adapter says which model it was trained on
          throw new Error(`adapter: ${wFile} tensor "${n}" has shape [${got}], the base model needs [${s}]${trainedOn ? `: the adapter says it was trained on ${trainedOn} (${cfgFile}'s base_model_name_or_path): is this model that one?` : ''}`);
        }
        if (!FLOAT_DTYPES.has(dtype)) throw new Error(`adapter: ${wFile} tensor "${n}" is stored as ${dtype}; LoRA weights must be F32, F16, BF16 or F64`);
      }
      used.add(aName).add(bName);
      // Scaled in fp32, in place (get() reads a new array): a lora_alpha / r too large for it (1e300) would make B infinite.
      const b = file.get(bName);
      for (let i = 0; i < b.length; i++) b[i] *= scale;
      finiteWeights(b, `adapter: ${bName} × ${scale} (lora_alpha / ${config.rslora ? '√r' : 'r'} of ${cfgFile})`);
      tensors.set(base, { a: file.get(aName), b, rank: config.r, in: inp, out });
    }
  }
  // A tensor this loader does not apply (another layer, lm_head, a DoRA magnitude, ...) would be dropped silently.
  const extra = file.names.find((n) => !used.has(n));
  if (extra !== undefined) throw new Error(`adapter: ${wFile} holds "${extra}", which is not a LoRA A/B tensor of the ${model.numLayers} layers and targets (${config.targets.join(', ')}) this runtime applies`);
  return { dir, config, tensors };
}

/** `numLayers`: the model's, for a target_modules regex (which must take a projection in all of them or none). */
export function parseAdapterConfig(raw: Record<string, unknown>, file: string, numLayers?: number): AdapterConfig {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`adapter: ${file} must hold a JSON object (a PEFT adapter_config.json), got ${shown(raw)}`);
  if (raw.peft_type !== undefined && raw.peft_type !== 'LORA') throw new Error(`adapter: ${file} field "peft_type" is ${JSON.stringify(raw.peft_type)}; only LORA adapters are supported`);
  // Switches are true or false (null, PEFT's unset, too): another value would be read as one or the other unsaid.
  for (const f of ['use_dora', 'fan_in_fan_out', 'lora_bias', 'use_qalora', 'use_rslora']) {
    if (raw[f] !== undefined && raw[f] !== null && typeof raw[f] !== 'boolean') throw new Error(`adapter: ${file} field "${f}" must be true or false, got ${shown(raw[f])}`);
  }
  // Options that change what the tensors mean: refused by name rather than silently read as plain LoRA.
  const unsupported: [string, boolean][] = [
    ['use_dora', raw.use_dora === true],
    ['rank_pattern', isNonEmpty(raw.rank_pattern)], ['alpha_pattern', isNonEmpty(raw.alpha_pattern)],
    ['layers_to_transform', raw.layers_to_transform !== undefined && raw.layers_to_transform !== null],
    ['bias', raw.bias !== undefined && raw.bias !== 'none'], ['fan_in_fan_out', raw.fan_in_fan_out === true],
    ['modules_to_save', isNonEmpty(raw.modules_to_save)], ['trainable_token_indices', isNonEmpty(raw.trainable_token_indices)],
    ['lora_bias', raw.lora_bias === true], ['layer_replication', isNonEmpty(raw.layer_replication)],
    ['exclude_modules', isNonEmpty(raw.exclude_modules)], ['target_parameters', isNonEmpty(raw.target_parameters)],
    ['use_qalora', raw.use_qalora === true],
  ];
  // PiSSA / OLoRA / CorDA / LoftQ / LoRA-GA adapters are saved against a modified ("residual") base that PEFT
  // rebuilds on load (its names as PEFT tells them: by prefix, "OLoRA" in any case).
  const init = raw.init_lora_weights;
  if (typeof init === 'string' && /^(pissa|olora|corda|loftq|lora_ga)/i.test(init)) {
    throw new Error(`adapter: ${file} sets "init_lora_weights": ${JSON.stringify(init)}: such an adapter applies to a modified copy of the base weights, which edgereason does not rebuild; convert it to a plain LoRA adapter first (PEFT's save_pretrained with path_initial_model_for_weight_conversion)`);
  }
  for (const [field, bad] of unsupported) if (bad) throw new Error(`adapter: ${file} sets "${field}": ${JSON.stringify(raw[field])}, which edgereason does not support (plain or rank-stabilised LoRA on every layer, no bias)`);
  const r = raw.r, alpha = raw.lora_alpha === undefined ? 8 : raw.lora_alpha, targets = raw.target_modules; // PEFT's LoraConfig default lora_alpha is 8 (null is no default: PEFT fails on it)
  if (!Number.isInteger(r) || (r as number) <= 0) throw new Error(`adapter: ${file} field "r" must be a positive integer, got ${shown(r)}`);
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw new Error(`adapter: ${file} field "lora_alpha" must be a finite number, got ${shown(alpha)}`);
  if (alpha <= 0) throw new Error(`adapter: ${file} field "lora_alpha" must be above 0, got ${alpha} (the adapter's scale, lora_alpha / r: ${alpha === 0 ? '0 switches it off' : 'below 0 turns it around'})`);
  const given = typeof targets === 'string' ? stringTargets(targets, file, numLayers) : targets;
  if (!Array.isArray(given) || !given.length) throw new Error(`adapter: ${file} field "target_modules" must list projections (${PROJECTIONS.join(', ')})`);
  // PEFT matches a list entry against module names exactly or as a suffix: "self_attn.q_proj" is q_proj in every layer.
  const named = given.map((t: unknown) => PROJECTIONS.find((p) => t === p || t === `${projectionTensorName(0, p).split('.').at(-2)}.${p}`) ?? t);
  for (const t of named) {
    if (!PROJECTIONS.includes(t as Projection)) throw new Error(`adapter: ${file} target module ${JSON.stringify(t)} is not supported (supported: ${PROJECTIONS.join(', ')}, in every layer)`);
  }
  const list = PROJECTIONS.filter((p) => named.includes(p)); // a set, as PEFT reads it ("q_proj" and "self_attn.q_proj" are one)
  const inv = raw.alora_invocation_tokens;
  if (inv !== undefined && inv !== null && (!Array.isArray(inv) || !inv.length || !inv.every((t) => Number.isInteger(t) && t >= 0))) {
    throw new Error(`adapter: ${file} field "alora_invocation_tokens" must be a non-empty list of token ids (or absent, for a plain LoRA adapter), got ${shown(inv)}`);
  }
  return { r: r as number, loraAlpha: alpha, targets: list as Projection[], ...(raw.use_rslora === true ? { rslora: true } : {}), ...(Array.isArray(inv) && inv.length ? { aloraInvocationTokens: inv as number[] } : {}) };
}

/**
 * target_modules given as one string, as PEFT reads it: "all-linear" (every linear layer but the output), a module
 * name, or a regular expression matched against whole module names (model.layers.3.self_attn.q_proj). A regex
 * must select each projection in every layer or in none (a LoRA target here spans all layers).
 */
function stringTargets(t: string, file: string, numLayers?: number): string[] {
  if (t.toLowerCase() === 'all-linear') return [...PROJECTIONS];
  if ((PROJECTIONS as readonly string[]).includes(t)) return [t];
  let re = linearRegExp(`^(?:${t})$`);
  const linear = !!re;
  if (!re) {
    // Lookarounds and backreferences need the backtracking engine, where a quantified group that holds a quantifier
    // ("(?=m)(.*)*x") backtracks exponentially on a mismatch: refused with the fix (other such patterns meet the time limit below).
    if (/\((?:[^()\\]|\\.)*[*+}](?:[^()\\]|\\.)*\)[*+{]/.test(t)) throw new Error(`adapter: ${file} field "target_modules" ${JSON.stringify(t)} repeats a group that holds a repetition, which can take exponential time to match: write it without nesting them (e.g. ".*\\.(q_proj|v_proj)")`);
    try { re = new RegExp(`^(?:${t})$`); } catch (e) { throw new Error(`adapter: ${file} field "target_modules" ${JSON.stringify(t)} is neither a projection nor a valid regular expression (${(e as Error).message})`); }
  }
  // Without the model (reading the config alone), what the regex takes in any layer; the model's load checks all.
  const layers = Array.from({ length: numLayers ?? 64 }, (_, l) => l);
  const others = ['lm_head', 'model.embed_tokens'], names = [...others, ...PROJECTIONS.flatMap((p) => layers.map((l) => projectionTensorName(l, p)))];
  // The backtracking engine's matches run under a time limit: other patterns than the one refused above backtrack
  // exponentially too ("(?=m)(.|.)*z"), and a regular expression cannot be stopped from outside its script.
  let matched: boolean[];
  try {
    matched = linear ? names.map((n) => re.test(n)) : vm.runInNewContext('names.map((n) => re.test(n))', { names, re }, { timeout: REGEX_MS });
  } catch (e) {
    if ((e as { code?: string }).code !== 'ERR_SCRIPT_EXECUTION_TIMEOUT') throw e;
    throw new Error(`adapter: ${file} field "target_modules" ${JSON.stringify(t)} takes more than ${REGEX_MS / 1000} s to match the model's module names (it backtracks exponentially): write it as plain alternatives (e.g. ".*\\.(q_proj|v_proj)") or a list of projections`);
  }
  const hit = new Set(names.filter((_, i) => matched[i]));
  const other = others.find((m) => hit.has(m));
  if (other) throw new Error(`adapter: ${file} field "target_modules" ${JSON.stringify(t)} selects ${other}, which edgereason does not adapt (projections: ${PROJECTIONS.join(', ')})`);
  const picked = PROJECTIONS.filter((p) => {
    const hits = layers.filter((l) => hit.has(projectionTensorName(l, p))).length;
    if (hits && hits < layers.length && numLayers !== undefined) throw new Error(`adapter: ${file} field "target_modules" ${JSON.stringify(t)} selects ${p} in some layers only; edgereason applies a LoRA target to every layer`);
    return hits > 0;
  });
  if (!picked.length) throw new Error(`adapter: ${file} field "target_modules" ${JSON.stringify(t)} selects none of the projections (${PROJECTIONS.join(', ')})`);
  return picked;
}

/** How long a target_modules pattern that needs the backtracking engine may take to match every module name. */
const REGEX_MS = 2000;

/**
 * `pattern` compiled for V8's linear-time engine (flag "l": no backtracking, so "(.|.)*z" or ".*.*.*.*z" cannot hang
 * the load on a module name it fails to match); undefined where that engine cannot run it (lookarounds,
 * backreferences, an invalid pattern) or this V8 lacks it. The V8 flag only permits the "l" flag on regexes that ask.
 */
function linearRegExp(pattern: string): RegExp | undefined {
  v8.setFlagsFromString('--enable-experimental-regexp-engine');
  try { return new RegExp(pattern, 'l'); } catch { return undefined; }
}

const isNonEmpty = (x: unknown) => x !== undefined && x !== null && x !== '' && (typeof x !== 'object' || Object.keys(x).length > 0);

export interface SaveAdapterOptions extends AdapterConfig {
  /** base_model_name_or_path (a hub id or a folder); null when absent. */
  baseModel?: string;
}

/**
 * Write a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) that PEFT and loadAdapter
 * read. `tensors` is keyed like AdapterTensors ("model.layers.<i>.self_attn.q_proj") and must hold every target of
 * every layer; A is [r, in], B is [out, r] and UNSCALED (the trained parameter: loaders multiply by loraScale).
 * Weights are written first, the config last, each atomically.
 */
export function saveAdapter(dir: string, cfg: SaveAdapterOptions, tensors: ReadonlyMap<string, { a: Float32Array; b: Float32Array }>, numLayers: number): void {
  const { r } = cfg, out = new Map<string, { shape: number[]; data: Float32Array }>();
  if (!Number.isInteger(r) || r <= 0) throw new Error(`saveAdapter: r must be a positive integer, got ${r}`);
  for (const t of cfg.targets) if (!PROJECTIONS.includes(t)) throw new Error(`saveAdapter: target ${JSON.stringify(t)} is not a projection (${PROJECTIONS.join(', ')})`);
  const want = new Set<string>();
  for (let l = 0; l < numLayers; l++) {
    for (const proj of cfg.targets) {
      const base = projectionTensorName(l, proj), t = tensors.get(base);
      want.add(base);
      if (!t) throw new Error(`saveAdapter: no tensors for "${base}" (target ${proj}, layer ${l})`);
      const inp = t.a.length / r, o = t.b.length / r;
      if (!Number.isInteger(inp) || !Number.isInteger(o) || !inp || !o)
        throw new Error(`saveAdapter: "${base}" lora_A has ${t.a.length} values and lora_B ${t.b.length}, not multiples of r = ${r}`);
      out.set(`${PEFT_PREFIX}${base}.lora_A.weight`, { shape: [r, inp], data: t.a });
      out.set(`${PEFT_PREFIX}${base}.lora_B.weight`, { shape: [o, r], data: t.b });
    }
  }
  for (const k of tensors.keys()) if (!want.has(k)) throw new Error(`saveAdapter: "${k}" is not a target module of layers 0..${numLayers - 1} (targets ${cfg.targets.join(', ')})`);
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: cfg.baseModel ?? null,
    revision: null,
    inference_mode: true,
    r,
    lora_alpha: cfg.loraAlpha,
    lora_dropout: 0,
    target_modules: [...cfg.targets],
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: !!cfg.rslora,
    use_dora: false,
    init_lora_weights: true,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
    ...(cfg.aloraInvocationTokens?.length ? { alora_invocation_tokens: [...cfg.aloraInvocationTokens] } : {}),
  };
  checkFinite(out, `saveAdapter(${dir})`);
  makeDir(dir);
  // The fields that give the tensors their meaning ride in the weights file too: a save cut between the two
  // files (new weights beside an earlier config) is refused at load instead of applied at the wrong scale.
  writeSafetensors(path.join(dir, 'adapter_model.safetensors'), out, { metadata: { format: 'pt', [SAVED_WITH]: JSON.stringify(meaning(parseAdapterConfig(config, 'saveAdapter'))) } });
  writeJson(path.join(dir, 'adapter_config.json'), config);
}

/** Metadata key of the LoRA settings an adapter's weights were saved with. */
const SAVED_WITH = 'edgereason.lora';

// The targets as a set, in one order: PEFT writes its set of target_modules back in any order when it saves a config.
const meaning = (c: Pick<AdapterConfig, 'r' | 'loraAlpha' | 'rslora' | 'targets' | 'aloraInvocationTokens'>) => ({
  r: c.r, lora_alpha: c.loraAlpha, use_rslora: !!c.rslora, target_modules: PROJECTIONS.filter((p) => c.targets.includes(p)), alora_invocation_tokens: c.aloraInvocationTokens ?? null,
});

/** A weights file saved by edgereason names its settings: they must be the config's (see saveAdapter). */
function checkSavedWith(file: SafetensorsFile, config: AdapterConfig, cfgFile: string): void {
  const saved = file.metadata[SAVED_WITH];
  if (typeof saved !== 'string') return; // another tool's adapter
  let was: string | undefined;
  try {
    const s = JSON.parse(saved);
    was = JSON.stringify(meaning({ r: s.r, loraAlpha: s.lora_alpha, rslora: s.use_rslora, targets: Array.isArray(s.target_modules) ? s.target_modules : [], aloraInvocationTokens: s.alora_invocation_tokens ?? undefined }));
  } catch { /* not ours to read: compared as written */ }
  const want = JSON.stringify(meaning(config));
  if ((was ?? saved) !== want) throw new Error(`adapter: ${file.path} was saved with ${saved}, but ${cfgFile} says ${want}: the two files are from different saves (an interrupted one?), or the config was edited since: edgereason reads an adapter only with the settings its weights were saved with (a torn save would apply them at the wrong scale); train or copy the adapter again`);
}
