/**
 * Training checkpoints in a folder:
 *   tensors-<step>-<stamp>.safetensors  params as "param/<name>", AdamW moments as "adam.m/<name>", "adam.v/<name>"
 *                                       (flat float32, bit-exact)
 *   checkpoint.json                     step, epoch, data position, the seed, the run's options, config, AdamW step,
 *                                       and the name, byte size and sha256 of the tensor file
 * Both are written to a temp file and renamed; the tensors first, checkpoint.json last. A crash before the JSON
 * rename leaves the previous checkpoint intact (its tensor file is deleted only after the new JSON is in place);
 * a JSON whose tensor file is missing, has the wrong size or other bytes (sha256), or whose fields are not what
 * a save writes, is reported, never half-loaded.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ModelConfig } from '../models/config.ts';
import type { AdapterTensors } from '../runtime/engine.ts';
import type { WeightSource } from '../io/weights.ts';
import { checkFinite, makeDir, openSafetensors, sha256Of, writeJson, writeSafetensors } from '../io/safetensors.ts';
import type { AdamW, AdamWState, Params } from './optim.ts';
import { readJsonFile } from '../io/jsonl.ts';
import { is, type Rule } from '../runtime/options.ts';

export interface TrainState {
  step: number;
  epoch: number;
  /** Micro-batches of the current epoch's order already consumed. */
  position: number;
  /** The run's seed: the data order and RL's draws follow from it, the epoch and the position (or step) alone. */
  rng: number;
  /**
   * The options that fix the data order, the schedule and the objective, by CLI flag (e.g. "--lr": 0.0002); a
   * resume with different ones is refused. Absent in checkpoints from before it (their resume is not checked).
   */
  options?: RunOptions;
  config: Record<string, unknown>;
}

export type RunOptions = Record<string, number | string | boolean | number[]>;

export interface Checkpoint { params: Params; optimizer: AdamWState; state: TrainState }

const JSON_NAME = 'checkpoint.json', FORMAT = 'edgereason-checkpoint-1';

/** Save a checkpoint into `dir` (created if needed), replacing the one there. */
export function saveCheckpoint(dir: string, c: Checkpoint): void {
  checkFinite([...c.params].map(([n, data]) => [n, { data }] as const), `checkpoint ${dir} (step ${c.state.step})`); // a diverged run keeps its last good checkpoint
  makeDir(dir);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const add = (prefix: string, m: Params) => { for (const [n, d] of m) tensors.set(prefix + n, { shape: [d.length], data: d }); };
  add('param/', c.params);
  add('adam.m/', c.optimizer.m);
  add('adam.v/', c.optimizer.v);
  let tensorFile: string; // a fresh name, so the file the current checkpoint.json names is never overwritten
  for (let k = 0; fs.existsSync(path.join(dir, (tensorFile = `tensors-${c.state.step}-${Date.now().toString(36)}${k ? `-${k}` : ''}.safetensors`))); k++);
  const sha = crypto.createHash('sha256'); // of the bytes as written, not read back
  writeSafetensors(path.join(dir, tensorFile), tensors, { metadata: { format: FORMAT, step: String(c.state.step) }, onBytes: (b) => sha.update(b) });
  const json = {
    format: FORMAT, tensorFile, tensorBytes: fs.statSync(path.join(dir, tensorFile)).size, tensorSha256: sha.digest('hex'),
    params: [...c.params.keys()], adamStep: c.optimizer.step, ...c.state,
  };
  writeJson(checkpointJson(dir), json);
  for (const f of fs.readdirSync(dir)) // older tensor files and temp files of crashed saves
    if ((f.startsWith('tensors-') && f !== tensorFile) || f.includes('.tmp-')) fs.rmSync(path.join(dir, f), { force: true });
}

/** The checkpoint.json of a checkpoint folder. */
export const checkpointJson = (dir: string): string => path.join(dir, JSON_NAME);

/** checkpoint.json in `dir`, its fields checked: a damaged or hand-edited file is named with the field, not half-loaded. */
function readCheckpointJson(dir: string): Record<string, any> {
  const jsonFile = checkpointJson(dir);
  if (!fs.existsSync(jsonFile)) throw new Error(`checkpoint: ${jsonFile} not found (no checkpoint in ${dir})`);
  const read = readJsonFile(jsonFile, 'checkpoint: '), j = (is.object.ok(read) ? read : {}) as Record<string, any>;
  if (j.format !== FORMAT) throw new Error(`checkpoint: ${jsonFile} is not an edgereason checkpoint (format ${JSON.stringify(j === read ? j.format : read)})`);
  const check = (field: string, rule: Rule) => {
    if (!rule.ok(j[field])) throw new Error(`checkpoint: ${jsonFile}: "${field}" must be ${rule.what}, got ${JSON.stringify(j[field])} (the file was edited or damaged)`);
  };
  // The tensor file is one of the checkpoint folder's own (a path out of it would read another file).
  check('tensorFile', { what: 'the name of a file in the checkpoint folder', ok: (v) => typeof v === 'string' && /^tensors-[^/\\]+\.safetensors$/.test(v) });
  check('params', { what: 'a list of parameter names', ok: (v) => Array.isArray(v) && v.every((n) => typeof n === 'string') });
  for (const k of ['step', 'epoch', 'position', 'adamStep', 'tensorBytes']) check(k, is.int(0));
  check('adamStep', { what: `at most "step" (${j.step}): the optimizer steps once per training step at most`, ok: (v) => (v as number) <= j.step });
  check('rng', { what: 'a number', ok: Number.isFinite });
  check('config', is.object);
  if (j.options !== undefined) check('options', is.object);
  if (j.tensorSha256 !== undefined) check('tensorSha256', { what: 'a sha256 in hex', ok: (v) => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v) });
  return j;
}

/** Load the checkpoint in `dir`; errors name the file that is missing, truncated or inconsistent. */
export function loadCheckpoint(dir: string): Checkpoint {
  const jsonFile = checkpointJson(dir), j = readCheckpointJson(dir);
  const tensorFile = path.join(dir, j.tensorFile);
  if (!fs.existsSync(tensorFile)) throw new Error(`checkpoint: ${tensorFile} named by ${jsonFile} is missing (interrupted save?)`);
  const size = fs.statSync(tensorFile).size;
  if (size !== j.tensorBytes) throw new Error(`checkpoint: ${tensorFile} is truncated or corrupt: ${size} bytes, ${jsonFile} expects ${j.tensorBytes}`);
  // (Checkpoints from before the hash have none.)
  if (j.tensorSha256 !== undefined && sha256Of(tensorFile) !== j.tensorSha256) throw new Error(`checkpoint: ${tensorFile} is corrupt: its bytes differ from those ${jsonFile} recorded when it was saved (sha256)`);
  const f = openSafetensors(tensorFile);
  const read = (prefix: string): Params => new Map((j.params as string[]).map((n) => {
    if (!f.has(prefix + n)) throw new Error(`checkpoint: ${tensorFile} lacks tensor "${prefix + n}"`);
    return [n, f.values(prefix + n)]; // moments may hold NaN (params are checked when saved)
  }));
  const state: TrainState = { step: j.step, epoch: j.epoch, position: j.position, rng: j.rng, ...(j.options ? { options: j.options } : {}), config: j.config };
  return { params: read('param/'), optimizer: { step: j.adamStep, m: read('adam.m/'), v: read('adam.v/') }, state };
}

/**
 * The options a checkpoint was saved with, from its JSON alone (cheap: no tensor is read), so a run can refuse a
 * resume with other options before it loads anything; undefined for a checkpoint from before options were saved.
 */
export function checkpointOptions(dir: string): RunOptions | undefined {
  return readCheckpointJson(dir).options ?? undefined;
}

/** What a list a run keeps in its checkpoint holds: each element's check, and its words for the error. */
const SAVED = {
  losses: { what: 'a finite number', ok: (x: unknown): boolean => Number.isFinite(x) },
  evalLosses: { what: 'a pair [step, loss] of an integer ≥ 0 and a finite number', ok: (x: unknown): boolean => Array.isArray(x) && x.length === 2 && Number.isInteger(x[0]) && x[0] >= 0 && Number.isFinite(x[1]) },
  history: {
    what: 'a step\'s record (step, reward, accuracy, thinking, withinBudget and tokensPerSec numbers, updated true or false)',
    ok: (x: unknown): boolean => !!x && typeof x === 'object' && !Array.isArray(x) && typeof (x as Record<string, unknown>).updated === 'boolean'
      && ['step', 'reward', 'accuracy', 'thinking', 'withinBudget', 'tokensPerSec'].every((k) => Number.isFinite((x as Record<string, unknown>)[k])),
  },
} as const;

/**
 * A list a run keeps in its checkpoint's config (its losses, its history); [] when absent. Each element is checked:
 * one edited or damaged would be written into the run's log and chart, or fail there after the training.
 */
export function savedList<T>(state: TrainState, key: keyof typeof SAVED, dir: string): T[] {
  const v = state.config[key], damaged = (what: string, got: unknown) => new Error(`checkpoint: ${checkpointJson(dir)}: ${what}, got ${JSON.stringify(got)?.slice(0, 60)} (the file was edited or damaged)`);
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw damaged(`config.${key} must be a list`, v);
  const bad = v.findIndex((x) => !SAVED[key].ok(x));
  if (bad >= 0) throw damaged(`config.${key}[${bad}] must be ${SAVED[key].what}`, v[bad]);
  return v as T[];
}

/**
 * Restore a checkpoint into live training buffers (params copied in place, optimizer state loaded); returns the state.
 * With `options`, a checkpoint saved with different options is refused first (nothing is touched); `optional` as
 * in checkOptions.
 */
export function resume(dir: string, params: Params, optimizer: AdamW, options?: RunOptions, optional: readonly string[] = []): TrainState {
  const c = loadCheckpoint(dir);
  if (options) checkOptions(dir, c.state.options, options, optional);
  const other = 'the checkpoint was trained with another model, LoRA rank or targets';
  for (const [n, p] of params) {
    const saved = c.params.get(n);
    if (!saved) throw new Error(`checkpoint: ${dir} has no parameter "${n}" (${other})`);
    if (saved.length !== p.length) throw new Error(`checkpoint: ${dir} parameter "${n}" has ${saved.length} values, this run's ${p.length} (${other})`);
  }
  for (const n of c.params.keys()) if (!params.has(n)) throw new Error(`checkpoint: ${dir} has parameter "${n}" this run does not (${other})`);
  for (const [n, p] of params) p.set(c.params.get(n)!);
  optimizer.loadState(c.optimizer);
  return c.state;
}

/**
 * Refuse to continue a run with options other than those it was saved with; `saved` absent (old checkpoint): no
 * check. Keys in `optional` (options recorded since a later version) are checked only when the checkpoint has them.
 * `described` words an option's values for the message (undefined: as recorded).
 */
export function checkOptions(dir: string, saved: RunOptions | undefined, now: RunOptions, optional: readonly string[] = [], described: Record<string, (v: unknown) => string | undefined> = {}): void {
  if (!saved) return;
  // The command first (a checkpoint of the other trainer differs in every option); older checkpoints by their options.
  const by = saved.command ?? ('--group' in saved ? 'train-rl' : '--epochs' in saved ? 'train-sft' : undefined);
  if (by !== undefined && now.command !== undefined && by !== now.command) throw new Error(`resume: ${dir} holds a ${by} checkpoint: resume it with ${by}, or give ${now.command} another --out`);
  const none = dataIdentity([]); // the hash of no data: no --eval
  const show = (v: unknown) => (v === undefined ? '(unset)' : v === none ? 'none' : Array.isArray(v) ? v.join(',') : String(v));
  const counts: Record<string, string> = { examples: 'examples in --data', prompts: 'prompts' };
  // Another base model first: it is the cause of any other difference (an invocation's ids read with another vocabulary).
  const keys = [...new Set([...Object.keys(saved), ...Object.keys(now)])].sort((a, b) => Number(b.startsWith('the --model')) - Number(a.startsWith('the --model')));
  for (const k of keys) {
    if (k === 'command' || (optional.includes(k) && !(k in saved))) continue;
    const say = (v: unknown) => (counts[k] ? `${show(v)} ${counts[k]}` : `${k} ${described[k]?.(v) ?? show(v)}`);
    if (show(saved[k]) !== show(now[k])) throw new Error(`resume: ${dir} was trained with ${say(saved[k])}, this run has ${say(now[k])} (resume with the same options, or start a new --out)`);
  }
}

/**
 * A short hash that tells base models apart (Qwen2.5-0.5B from -Instruct, of one shape): the config and the
 * first layer's query projection and the final norm, read in full (small next to what training reads).
 */
export function modelIdentity(config: ModelConfig, weights: WeightSource): string {
  const h = crypto.createHash('sha256').update(JSON.stringify(config));
  for (const n of ['model.layers.0.self_attn.q_proj.weight', 'model.norm.weight']) {
    if (!weights.has(n)) continue;
    const w = weights.get(n);
    h.update(n).update(new Uint8Array(w.buffer, w.byteOffset, w.byteLength));
  }
  return h.digest('hex').slice(0, 12);
}

/** modelTensorsIdentity's RunOptions key (recorded since a later version: older checkpoints lack it). */
export const MODEL_TENSORS = 'the --model (a sample of every tensor)';

/**
 * A short hash of every tensor's name, shape and 256 evenly spaced values (of its stored bytes where the source
 * keeps them encoded): base models of one shape that differ only past modelIdentity's two tensors (a fine-tune with
 * its first layer frozen, a partial merge) tell apart. A second read of every tensor on top of the training graph's:
 * about 10 s for Qwen2.5-0.5B's fp32 safetensors on 2 cores (1 s from a Q4_0 GGUF's stored blocks), once per run.
 */
export function modelTensorsIdentity(weights: WeightSource): string {
  const h = crypto.createHash('sha256');
  for (const n of [...weights.names].sort()) {
    const stored = weights.encoded?.(n)?.bytes, x = stored ?? weights.get(n), k = Math.min(256, x.length);
    const sample = stored ? new Uint8Array(k) : new Float32Array(k);
    for (let i = 0; i < k; i++) sample[i] = x[Math.floor((i * x.length) / k)];
    h.update(`${n} ${weights.shape(n).join('x')}`).update(new Uint8Array(sample.buffer));
  }
  return h.digest('hex').slice(0, 12);
}

/**
 * A short hash of an adapter's A and B weights: train-rl refuses a resume from another adapter, and a router or
 * verifier records the adapter it was trained with.
 */
export function adapterIdentity(tensors: AdapterTensors): string {
  const h = crypto.createHash('sha256');
  for (const [p, t] of tensors) for (const [n, x] of [[`${p}.a`, t.a], [`${p}.b`, t.b]] as const) h.update(n).update(new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
  return h.digest('hex').slice(0, 12);
}

/** A short hash of data (token ids, prompts): a resume with other data than the run's is refused. */
export function dataIdentity(items: Iterable<unknown>): string {
  const h = crypto.createHash('sha256');
  for (const x of items) h.update(JSON.stringify(x, (_, v) => (v instanceof Uint8Array ? [...v] : v)));
  return h.digest('hex').slice(0, 12);
}

/**
 * Writes a run's outputs (`write`); when that fails (a full disk) after the last step's checkpoint was saved, the error
 * says that --resume writes them without training again.
 */
export async function writingOutputs(dir: string, checkpoint: number | undefined, step: number, write: () => Promise<void>): Promise<void> {
  try {
    await write();
  } catch (e) {
    if (checkpoint === step && e instanceof Error) e.message += `; the checkpoint (${dir}) holds the last step (${step}): rerun the same command with --resume (and without --overwrite) to write the outputs without training again`;
    throw e;
  }
}

/**
 * What Ctrl-C does to a training run: it saves the last completed step as the checkpoint (when checkpoints are on
 * and that step has none yet), then says how to continue. The handler runs while the run awaits its next result:
 * parameters, optimizer state and the step and data position change together in one synchronous block after each
 * optimizer step, so at any await they describe a completed step. `last` gives the step the checkpoint holds;
 * `earlier`: the output files in the run's folder that it has not written (an --overwrite's predecessor's), named so
 * that they are not taken for its own.
 */
export function interrupted(command: string, total: number, dir: string, every: number | undefined, step: number, last: () => number | undefined, save: () => void, earlier: readonly string[] = []): string {
  let failed = '';
  if (every && step > (last() ?? 0)) {
    process.stderr.write(`${command}: saving step ${step} to ${dir} before exiting (a large model's takes a while; Ctrl-C again waits for it)\n`);
    try { save(); } catch (e) { failed = `; saving step ${step} failed (${(e as Error).message})`; }
  }
  const at = last();
  return `${command}: interrupted at step ${step} of ${total}${failed}; ` + (at !== undefined
    ? `the checkpoint (${dir}) is at step ${at}: rerun the same command with --resume (and without --overwrite) to continue from it`
    : `no checkpoint was saved${!every ? ' (checkpoints are off)' : step === 0 ? ' (no step was completed)' : ''}: nothing to resume, rerun to start again`)
    + (earlier.length ? `; ${earlier.join(' and ')} ${earlier.length > 1 ? 'were' : 'was'} there before this run (it writes its own when it finishes)` : '');
}

/** Which of a run's output files (`files`, in `out`) exist now: before it writes them, an earlier run's. */
export function outputsThere(out: string, files: readonly string[]): string[] {
  return files.map((f) => path.join(out, f)).filter((f) => fs.existsSync(f));
}
