/**
 * The models a server answers for: the base model and each PEFT adapter (`--adapter name=<dir>`), all in one
 * runtime worker (one copy of the weights; the graph takes LoRA inputs for every projection the adapters touch).
 * Requests for the base model run with the adapters switched off (mask 0 is exactly the base weights), so base and
 * adapter requests share batched decode steps. All steps go through one CoalescingBackend (continuous batching);
 * each request drives it through its own cancellable view.
 */
import fs from 'node:fs';
import { folderOf } from '../io/source.ts';
import { hubGguf, parseHubSpec, QUANT_LABEL, shortName, snapshotFiles, taggedGguf, type HubSpec } from '../io/hub.ts';
import { loadModel, type Model } from '../runtime/model.ts';
import { CoalescingBackend, withBackend, type RunStats } from '../runtime/scheduler.ts';
import { adapterView, type Backend } from '../runtime/backend.ts';
import { setPromptCache } from '../runtime/prompt-cache.ts';
import { readAdapterConfig } from '../io/peft.ts';
import { ggufStem } from '../io/gguf.ts';
import { besideModel } from '../models/embedded.ts';
import type { Router } from '../reason/router.ts';
import { loadProbes } from '../reason/probes.ts';
import type { Verifier } from '../reason/verifier.ts';
import { rlBudgets } from '../reason/budget.ts';
import { checkNativeThinking } from '../reason/answer.ts';
import type { Quant } from '../onnx/quant.ts';
import type { RopeScalingChoice } from '../models/config.ts';
import { generationNotes, generationSampling, type GenerationSampling } from '../io/hf-folder.ts';
import { ApiError } from './schemas.ts';

export interface AdapterSpec { name: string; dir: string }

export interface ServedModel {
  id: string;
  /**
   * 'base' = no adapter (direct answers only); 'adapter' = base + this adapter (reasoning route available);
   * 'native' = a model that thinks by itself (e.g. Qwen3; serve --native-thinking): it reasons with its own weights.
   */
  kind: 'base' | 'adapter' | 'native';
  /** The model as answer() sees it (for 'base': the adapter hidden). */
  model: Model;
  /** The session's batching backend, shared by every served model (one copy of the weights). */
  backend: CoalescingBackend;
  /** The engine adapter this model's steps use (Model.withAdapter); absent for the first adapter and the base. */
  adapterName?: string;
  /** Prompted thinking-budget buckets the adapter was RL-trained on (rl_log.json beside it); empty = none. */
  budgets: number[];
  parent?: string;
  created: number;
}

export interface LoadServedOptions {
  model: string;
  /** Adapters to serve; default: `<model>/reasoning-adapter` as "reasoning" when that folder exists. */
  adapters?: AdapterSpec[];
  servedModelName?: string;
  /** Serve the model itself as the reasoner (a thinking model such as Qwen3): no adapter. */
  nativeThinking?: boolean;
  /** router.json; default `<model>/router.json` when present, false: none. */
  router?: string | false;
  /** verifier.json; default `<model>/verifier.json` when present, false: none. */
  verifier?: string | false;
  quant?: Quant;
  ropeScaling?: RopeScalingChoice;
  threads?: number;
  /** loadModel's promptCache: MiB of prompt KV caches kept for later prompts that begin alike (0: none). */
  promptCache?: number;
  maxBatch: number;
  onRun?: (s: RunStats) => void;
  /** Progress of building each model's graph from a checkpoint (loadModel's onProgress). */
  onProgress?: (done: number, total: number) => void;
  /** loadModel's notes: a converted copy of the checkpoint written to the cache or used from it. */
  onNote?: (note: string) => void;
}

/**
 * The served model a request names (undefined: the default); a Hugging Face name as the server was started with
 * names it too, whatever its @revision: `hf:owner/name` the one served as owner/name (a model folder from the
 * Hugging Face cache), `hf:owner/name:Q4_K_M` or `hf:owner/name/<file>.gguf` the base model when it is that GGUF
 * from the cache (served by its file's name). Unknown ids are a 404 listing the served ones.
 */
export function servedModel(served: Served, id = served.defaultId): ServedModel {
  const m = served.models.get(id) ?? (id.startsWith('hf:') ? hubAlias(served, id) : undefined);
  if (!m) throw new ApiError(404, `The model '${id}' does not exist. Served models: ${[...served.models.keys()].join(', ')}.`, 'model', 'invalid_request_error', 'model_not_found');
  return m;
}

/** The served model as one request drives it: through its own view of the shared backend, which `signal` cancels. */
export function requestModel(m: ServedModel, signal: AbortSignal): Model {
  return over(m.model, m.adapterName, m.backend.forRequest(signal));
}

/** `model` stepping through `backend`, with its adapter's view of it where it has one (`adapterName`). */
const over = (model: Model, adapterName: string | undefined, backend: Backend): Model => withBackend(model, adapterName ? adapterView(backend, adapterName) : backend);

/** Served's hubGguf for a base model at `p`: its repository, file and the files beside it in its snapshot. */
function servedGguf(p: string): Pick<Served, 'hubGguf'> {
  const g = hubGguf(p);
  return g ? { hubGguf: { repo: g.repo, file: g.file, files: snapshotFiles(g.snapshot) ?? [g.file] } } : {};
}

/** The served model a Hugging Face name (hf:…) stands for, if any. */
function hubAlias(served: Served, id: string): ServedModel | undefined {
  let spec: HubSpec | undefined;
  try { spec = parseHubSpec(id); } catch { return undefined; }
  if (!spec?.tag && !spec?.file) return spec && served.models.get(spec.repo);
  const g = served.hubGguf;
  // A quantisation tag (Q4_K_M, UD-Q4_K_XL) names the file it picks among the snapshot's, as the loader picks it; the
  // snapshot may hold that file alone, so another word of its name (instruct, 0.5b) is not taken for one.
  const tag = spec.tag !== undefined && spec.tag.split('-').some((w) => QUANT_LABEL.test(w));
  const same = g?.repo === spec.repo && (spec.file !== undefined ? spec.file === g.file : tag && taggedGguf(g.files, spec.tag!) === g.file);
  return same ? served.models.get(served.baseId) : undefined;
}

export interface Served {
  models: Map<string, ServedModel>;
  /** The base model's repository, file and its snapshot's files when it is a GGUF from the Hugging Face cache (its hf: names are aliases). */
  hubGguf?: { repo: string; file: string; files: readonly string[] };
  /** Used when a request names no model: the first adapter, else the base. */
  defaultId: string;
  baseId: string;
  router?: Router;
  verifier?: Verifier;
  /** The model's own context (max position embeddings). */
  contextLength: number;
  /** generation_config.json's sampling (when it says do_sample): the defaults of requests that leave a field out. */
  sampling?: GenerationSampling;
  close(): Promise<void>;
}

/** `name=<dir>` → AdapterSpec; a bare `<dir>` (also one whose path holds "=", such as runs/lr=2e-4) is named after its folder. */
export function parseAdapterArg(v: string): AdapterSpec {
  const at = v.indexOf('='), bare = at < 0 || fs.existsSync(v);
  if (!bare && at === 0) throw new Error(`--adapter ${v}: the name before "=" is empty: give <name>=<dir>, or the folder alone (served under its name)`);
  const name = bare ? shortName(v) : v.slice(0, at), dir = bare ? v : v.slice(at + 1);
  if (!ADAPTER_NAME.test(name)) {
    throw new Error(bare
      ? `--adapter ${v}: its folder's name "${name}" cannot be a model id (letters, digits and . _ : / - only): name it, as --adapter <name>=${v}`
      : `--adapter: name "${name}" may only use letters, digits and . _ : / -`);
  }
  if (!dir) throw new Error(`--adapter ${v}: missing folder after "="`);
  return { name, dir };
}
/** A served adapter's name (its model id). */
export const ADAPTER_NAME = /^[A-Za-z0-9._:/-]+$/;

/** The id a model is served under by default: its name without .gguf / .bin, and a split GGUF's without its part number (tiny-Q4_0-00001-of-00003.gguf: tiny-Q4_0). */
export const servedModelId = (model: string): string => ggufStem(shortName(folderOf(model))).replace(/\.bin$/, '');

export async function loadServed(o: LoadServedOptions): Promise<Served> {
  const auto = besideModel(o.model, 'adapter');
  if (o.nativeThinking && o.adapters?.length) throw new Error('serve: --native-thinking serves the model\'s own thinking; leave --adapter out');
  // (a folder of that name that holds no adapter, a copy cut short, is refused by the load, naming what is missing)
  const adapters = o.adapters ?? (!o.nativeThinking && auto ? [{ name: 'reasoning', dir: auto }] : []);
  const baseId = o.servedModelName ?? servedModelId(o.model);
  const names = new Set([baseId]);
  for (const a of adapters) {
    if (names.has(a.name)) throw new Error(`serve: model id "${a.name}" is used twice (base model and adapters need distinct names)`);
    names.add(a.name);
  }
  const loaded: Model[] = [];
  const models = new Map<string, ServedModel>();
  const created = Math.floor(Date.now() / 1000);
  // The server's own coalescer (its batch limit and metrics) over the session, in place of the model's; the prompt
  // cache goes with it.
  const coalesce = (m: Model) => {
    const b = new CoalescingBackend((m.backend as CoalescingBackend).inner, { maxRows: o.maxBatch, onRun: o.onRun });
    setPromptCache(b, o.promptCache);
    return b;
  };
  try {
    // One session: the first adapter is loaded with the model, the others join it (Model.withAdapter), so the
    // weights are in memory once and requests for different adapters batch together (rows grouped by adapter).
    // The graph takes LoRA inputs for every projection any of them touches.
    let backend: CoalescingBackend | undefined;
    const loraTargets = [...new Set(adapters.flatMap((a) => readAdapterConfig(a.dir).targets))];
    const budgets = adapters.map((a) => rlBudgets(a.dir)); // (a broken rl_log.json refused before anything loads)
    for (const [i, a] of adapters.entries()) {
      const m = loaded[0] ? await loaded[0].withAdapter(a.dir, { onNote: o.onNote }) : await loadModel(o.model, { adapter: a.dir, loraTargets, quant: o.quant, ropeScaling: o.ropeScaling, threads: o.threads, promptCache: 0, onProgress: o.onProgress, onNote: o.onNote });
      if (!loaded[0]) loaded.push(m);
      backend ??= coalesce(m);
      models.set(a.name, { id: a.name, kind: 'adapter', model: over(m, m.adapterName, backend), backend, adapterName: m.adapterName, budgets: budgets[i], parent: baseId, created });
    }
    if (adapters.length) {
      const first = models.get(adapters[0].name)!;
      const model = Object.create(first.model, { adapter: { value: undefined, enumerable: true } }) as Model;
      models.set(baseId, { id: baseId, kind: 'base', model, backend: first.backend, budgets: [], created });
    } else {
      const m = await loadModel(o.model, { quant: o.quant, ropeScaling: o.ropeScaling, threads: o.threads, promptCache: 0, onProgress: o.onProgress, onNote: o.onNote });
      loaded.push(m);
      if (o.nativeThinking) checkNativeThinking(m, 'serve');
      const backend = coalesce(m);
      models.set(baseId, { id: baseId, kind: o.nativeThinking ? 'native' : 'base', model: withBackend(m, backend), backend, budgets: [], created });
    }
    // Every request is rendered by the chat template: one that fails on a plain conversation fails them all.
    const tok = loaded[0].tokenizer;
    try { tok.applyChatTemplate([{ role: 'user', content: 'Hello' }], { addGenerationPrompt: true }); } catch (e) {
      throw new Error(`serve: ${(e as Error).message.replace(/^tokenizer: /, '')} (on a plain user message)`);
    }
    const beside = (probe: 'router' | 'verifier') => (o[probe] === false ? undefined : o[probe] ?? besideModel(o.model, probe));
    const routerFile = beside('router'), verifierFile = beside('verifier');
    const { router, verifier } = loadProbes({ router: routerFile, verifier: verifierFile }, {
      config: loaded[0].config, native: !!o.nativeThinking, where: 'serve: ', onNote: o.onNote, names: loaded[0].names,
      adapters: [...models.values()].flatMap((s) => (s.model.adapter ? [s.model.adapter] : [])),
    });
    const sampling = generationSampling(o.model);
    for (const n of generationNotes(o.model)) o.onNote?.(`serve: note: ${n}`);
    // Base first in listings, as vLLM does; requests without a model go to the reasoning pipeline when there is one.
    const ordered = new Map([[baseId, models.get(baseId)!], ...[...models].filter(([k]) => k !== baseId)]);
    return {
      models: ordered, baseId, defaultId: adapters[0]?.name ?? baseId, router, verifier,
      contextLength: loaded[0].config.maxPositionEmbeddings, ...servedGguf(o.model),
      ...(sampling ? { sampling } : {}),
      async close() {
        for (const s of models.values()) await s.backend.idle();
        for (const m of loaded) await m.close();
      },
    };
  } catch (e) {
    for (const m of loaded) await m.close().catch(() => undefined);
    throw e;
  }
}

