/**
 * Models and adapters named by their Hugging Face Hub id: `hf:owner/name` (a model folder: its config, tokenizer and
 * safetensors files), `hf:owner/name/file.gguf` (one GGUF file, all parts of a split one) or `hf:owner/name:Q4_0` (the
 * GGUF file of that quantisation), `@revision` after the name. They are read from the Hugging Face cache that
 * Python's huggingface_hub writes (HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub), in its layout,
 * so either side finds what the other downloaded; what is missing is downloaded there (HF_ENDPOINT, HF_TOKEN;
 * HF_HUB_OFFLINE=1 reads the cache only). A bare `owner/name` that is no path on disk is looked up in the cache alone,
 * never downloaded.
 *
 * The Hub's HTTP protocol is used directly (fetch): @huggingface/hub's cache writer files each file under the commit
 * that last changed it, so one revision's files would not share a snapshot folder.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { atomicWrite, holdLock, makeDir, rename, writeAll } from './safetensors.ts';
import { expandHome, HUB_ID } from './source.ts';
import { readJsonFile } from './jsonl.ts';
import { ggufStem, splitGgufParts } from './gguf.ts';

export interface HubSpec {
  repo: string;
  revision: string;
  /** A GGUF file's path in the repository. */
  file?: string;
  /** A GGUF file named by its quantisation (hf:owner/name:Q4_K_M, as llama.cpp's -hf names it). */
  tag?: string;
}

const NAME = /^[A-Za-z0-9][\w.-]*$/;

/** The command-line flags whose values may name a Hugging Face model (cli/main.ts resolves them; cli/outputs.ts checks --out first). */
export const HUB_FLAGS: readonly string[] = ['--model', '--adapter'];

/** `hf:owner/name[@revision][/path/file.gguf | :quantisation]`; undefined for anything not starting with "hf:". */
export function parseHubSpec(spec: string): HubSpec | undefined {
  if (!spec.startsWith('hf:')) return undefined;
  const m = /^hf:([^/@:]+)\/([^/@:]+)(?:@(refs\/pr\/\d+|[^/:]+))?(?::([^/]+)|\/(.+))?$/.exec(spec);
  if (!m || !NAME.test(m[1]) || !NAME.test(m[2]) || (m[3] !== undefined && !NAME.test(m[3]) && !m[3].startsWith('refs/pr/')) || (m[4] !== undefined && !NAME.test(m[4])) || (m[5] !== undefined && !/\.gguf$/.test(m[5])) || (m[5] ?? '').split('/').some((p) => p === '..' || p === '.'))
    throw new Error(`hub: ${JSON.stringify(spec)} is not a Hugging Face name: hf:owner/name for a model or adapter folder, hf:owner/name/file.gguf for a GGUF file or hf:owner/name:Q4_0 for the one of that quantisation, with @revision after the name if wanted (a branch, tag, commit or refs/pr/N: hf:Qwen/Qwen2.5-0.5B-Instruct@main)`);
  return { repo: `${m[1]}/${m[2]}`, revision: m[3] ?? 'main', ...(m[4] !== undefined ? { tag: m[4] } : {}), ...(m[5] !== undefined ? { file: m[5] } : {}) };
}

/**
 * The GGUF file of `tag`'s quantisation among a repository's files: the one whose name holds the tag as a word of its
 * own ("-", ".", "/" or "_" before it; "-", ".", "/" after it), in any case (Q4_K_M: qwen2.5-0.5b-instruct-q4_k_m.gguf;
 * a split one by its first part); projector files (mmproj) are not models. A string says why none is chosen.
 */
export function taggedGguf(files: readonly string[], tag: string): string | { none: string } {
  const models = files.filter((f) => f.endsWith('.gguf') && !/^mmproj/i.test(path.posix.basename(f)));
  const word = new RegExp(`(^|[-._/])${tag.replace(/[.]/g, '\\.')}([-./]|$)`, 'i'); // a file's name or its folder's (Q8_0/model-00001-of-00002.gguf); Q6_K is not Q6_K_L
  const hits = [...new Set(models.filter((f) => word.test(ggufStem(f))).map((f) => ggufParts(f)[0]))].sort();
  if (hits.length === 1) return hits[0];
  const list = models.filter((f) => ggufParts(f)[0] === f).sort();
  if (!hits.length) return { none: `no GGUF file of the quantisation ${tag}${list.length ? ` (its GGUF files: ${list.join(', ')})` : ', and no GGUF files'}` };
  return { none: `${hits.length} GGUF files of the quantisation ${tag}: ${hits.join(', ')}; name one: hf:owner/name/<file>` };
}

/** huggingface_hub's home folder: $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
const hfHome = (env: NodeJS.ProcessEnv) => expandHome(env.HF_HOME || path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'huggingface'));

/** The Hugging Face cache folder, as huggingface_hub finds it. */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const set = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  return set ? expandHome(set) : path.join(hfHome(env), 'hub');
}

/** HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it: 1, ON, YES or TRUE in any case. */
const offline = (env: NodeJS.ProcessEnv) => ['1', 'ON', 'YES', 'TRUE'].includes((env.HF_HUB_OFFLINE || env.TRANSFORMERS_OFFLINE || '').toUpperCase());

/** HF_TOKEN, else the token `hf auth login` saved ($HF_TOKEN_PATH, else $HF_HOME/token). */
function hubToken(env: NodeJS.ProcessEnv): string | undefined {
  const set = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN;
  if (set) return set.trim();
  try { return fs.readFileSync(expandHome(env.HF_TOKEN_PATH || path.join(hfHome(env), 'token')), 'utf8').trim() || undefined; } catch { return undefined; }
}

const repoFolder = (repo: string) => path.join(hubCacheDir(), `models--${repo.replace('/', '--')}`);
const isCommit = (rev: string) => /^[0-9a-f]{40}$/.test(rev);

/** The cached snapshot of `spec` that holds what it names (a model or adapter folder's files, or its GGUF), or undefined. */
function cachedPath(spec: HubSpec): string | undefined {
  const folder = repoFolder(spec.repo), ref = path.join(folder, 'refs', spec.revision);
  const sha = isCommit(spec.revision) ? spec.revision : fs.existsSync(ref) ? fs.readFileSync(ref, 'utf8').trim() : undefined;
  if (!sha) return undefined;
  const snapshot = path.join(folder, 'snapshots', sha), has = (f: string) => fs.existsSync(path.join(snapshot, f));
  if (spec.tag) {
    const files = snapshotFiles(snapshot);
    const file = files && taggedGguf(files, spec.tag);
    return typeof file === 'string' ? cachedPath({ repo: spec.repo, revision: sha, file }) : undefined;
  }
  if (spec.file) return ggufParts(spec.file).every(has) ? path.join(snapshot, spec.file) : undefined;
  if (has('adapter_config.json')) return has('adapter_model.safetensors') ? snapshot : undefined;
  // tokenizer_config.json, or huggingface_hub's mark that the commit has none (.no_exist/<commit>/<file>).
  const tokenizerConfig = has('tokenizer_config.json') || fs.existsSync(path.join(folder, '.no_exist', sha, 'tokenizer_config.json'));
  return has('config.json') && has('tokenizer.json') && tokenizerConfig && weightsWhole(snapshot) ? snapshot : undefined;
}

/** Whether a folder holds its weights whole: every shard its safetensors index names, or a safetensors file. */
function weightsWhole(dir: string): boolean {
  try {
    const index = path.join(dir, 'model.safetensors.index.json');
    if (fs.existsSync(index)) return Object.values((readJsonFile(index) as { weight_map: Record<string, string> }).weight_map).every((f) => fs.existsSync(path.join(dir, f)));
    return fs.readdirSync(dir).some((f) => f.endsWith('.safetensors'));
  } catch {
    return false; // an index that cannot be read: downloaded again
  }
}

/** A quantisation's name as GGUF files carry it (Q4_K_M, IQ4_XS, Q8_0, BF16, F16, F32). */
export const QUANT_LABEL = /^(i?q\d(_[a-z\d]+)*|bf16|f16|f32)$/i;

/** ", or by its quantisation: hf:owner/name:Q4_K_M" with a quantisation one of the files is named by, or nothing. */
function quantExample(ggufs: readonly string[], repo: string): string {
  const label = ggufs.flatMap((f) => path.posix.basename(f, '.gguf').split(/[-.]/)).find((w) => QUANT_LABEL.test(w));
  return label && typeof taggedGguf(ggufs, label) === 'string' ? `, or by its quantisation: hf:${repo}:${label}` : '';
}

/** A split GGUF's parts (name-00001-of-00003.gguf …), or the file alone. */
const ggufParts = (file: string): string[] => splitGgufParts(file) ?? [file];

/**
 * The files of a model or adapter folder that loading reads (root level: configs, tokenizer, chat template, safetensors;
 * router.json and verifier.json among them), and the reasoning adapters of edgereason's own layout (models/default's:
 * reasoning-adapter/ and reasoning-adapter-rl/), which answer, chat and serve find beside the model.
 */
const FOLDER_FILE = /^(reasoning-adapter(-rl)?\/)?\w[\w.-]*\.(json|jinja|safetensors)$/;

export interface ResolveOptions {
  /** Bytes downloaded so far of all that this call downloads (starts at 0, ends at total). */
  onDownload?: (done: number, total: number) => void;
  /** Stops the download (rejecting with the signal's reason); what was written stays, and the next call goes on from there. */
  signal?: AbortSignal;
}

/**
 * The local path of a model or adapter argument: a path as it is; `hf:…` from the Hugging Face cache, downloaded
 * there first when it is not (yet) whole; a bare owner/name that is not on disk from the cache when it is there.
 */
export async function resolveModelPath(p: string, o: ResolveOptions = {}): Promise<string> {
  const spec = parseHubSpec(p);
  if (!spec) {
    if (fs.existsSync(p) || !HUB_ID.test(p)) return p;
    return cachedPath({ repo: p, revision: 'main' }) ?? p;
  }
  const cached = cachedPath(spec);
  // A commit never changes; a branch or tag is asked for its commit first, as huggingface_hub does (the cached one when
  // the Hub cannot answer: unreachable, a server error).
  if (cached && (isCommit(spec.revision) || offline(process.env))) return cached;
  if (!cached && offline(process.env)) throw new Error(`hub: ${p} is not in the Hugging Face cache (${hubCacheDir()}), and HF_HUB_OFFLINE is set: unset it to download`);
  try {
    return await download(p, spec, o);
  } catch (e) {
    if (cached && e instanceof Unreachable) return cached;
    throw e;
  }
}

/** The Hub could not say which commit a branch is at (no network, a timeout, a server error): a cached snapshot serves instead. */
class Unreachable extends Error {}

interface Sibling { rfilename: string; size?: number; blobId?: string; lfs?: { sha256?: string; oid?: string; size?: number } }

async function download(p: string, spec: HubSpec, o: ResolveOptions): Promise<string> {
  const endpoint = (process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  const token = hubToken(process.env);
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  /**
   * A GET whose answer's headers come within 10 s (huggingface_hub's timeout); `stop` also aborts it (its body too);
   * `signal`: the caller's (o.signal), or a shared download's (every caller waiting for it gone).
   */
  const get = async (url: string, what: string, extra: Record<string, string> = {}, stop?: AbortController, signal = o.signal): Promise<Response> => {
    let res: Response;
    const late = stop ?? new AbortController(), timer = setTimeout(() => late.abort(new Error('no answer within 10 s')), 10_000);
    try {
      res = await fetch(url, { headers: { ...headers, ...extra }, signal: signal ? AbortSignal.any([signal, late.signal]) : late.signal });
    } catch (e) {
      if (signal?.aborted) throw e;
      throw new Unreachable(`hub: ${p}: could not reach ${endpoint} (${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message}); set HF_HUB_OFFLINE=1 to read the Hugging Face cache only, HF_ENDPOINT for a mirror`);
    } finally {
      clearTimeout(timer);
    }
    if (res.ok || res.status === 416) return res;
    await res.body?.cancel();
    const code = res.headers.get('x-error-code'), http = `HTTP ${res.status}${code ? ` ${code}` : ''}`;
    if (res.status >= 500 || res.status === 429) throw new Unreachable(`hub: ${p}: ${what}: ${http} from ${endpoint}: try again later, or set HF_HUB_OFFLINE=1 to read the Hugging Face cache only`);
    if (code === 'GatedRepo') throw new Error(`hub: ${p}: ${spec.repo} is gated (${http}): accept its conditions at ${endpoint}/${spec.repo}, then set HF_TOKEN to a token of that account`);
    // The Hub answers 401 for a repository that does not exist as for a private one.
    if (res.status === 401) throw new Error(`hub: ${p}: ${what} was not found on ${endpoint}, or is private (${http}): check the name; ${token ? 'the token in HF_TOKEN may not read it' : 'for a private one, set HF_TOKEN to a token that may read it'}`);
    if (res.status === 403) throw new Error(`hub: ${p}: ${what}: access refused (${http})${token ? ': the token in HF_TOKEN may not read it' : ': set HF_TOKEN to a token that may read it'}`);
    if (res.status === 404) throw new Error(`hub: ${p}: ${what} was not found on ${endpoint} (${http}: check the name${spec.revision !== 'main' ? ' and the revision' : ''})`);
    throw new Error(`hub: ${p}: ${what}: ${http} from ${endpoint}`);
  };
  // Only this question may fall back to a cached snapshot: once the Hub has named the commit, its files must come.
  let info: { sha?: unknown; siblings?: Sibling[] };
  try {
    info = await (await get(`${endpoint}/api/models/${spec.repo}/revision/${encodeURIComponent(spec.revision)}?blobs=true`, `the model ${spec.repo}${spec.revision !== 'main' ? ` at ${spec.revision}` : ''}`)).json();
  } catch (e) {
    if (e instanceof Unreachable) throw e;
    if (e instanceof SyntaxError) throw new Unreachable(`hub: ${p}: ${endpoint} answered the model's revision with something that is not JSON (a proxy's page?): check HF_ENDPOINT, or set HF_HUB_OFFLINE=1`);
    throw e;
  }
  if (typeof info.sha !== 'string' || !isCommit(info.sha) || !Array.isArray(info.siblings)) throw new Unreachable(`hub: ${p}: ${endpoint} answered the model's revision without a commit and a file list: check HF_ENDPOINT, or set HF_HUB_OFFLINE=1`);
  try {
    return await fetchRevision(p, spec, info.sha, info.siblings, endpoint, get, o);
  } catch (e) {
    throw e instanceof Unreachable ? new Error(e.message) : e;
  }
}

type Get = (url: string, what: string, extra?: Record<string, string>, stop?: AbortController, signal?: AbortSignal) => Promise<Response>;

/** Downloads what `spec` names at commit `sha` (its files listed in `siblings`) into the cache; its local path. */
async function fetchRevision(p: string, spec: HubSpec, sha: string, siblings: Sibling[], endpoint: string, get: Get, o: ResolveOptions): Promise<string> {
  const byName = new Map(siblings.map((s) => [s.rfilename, s]));
  const folder = repoFolder(spec.repo), snapshot = path.join(folder, 'snapshots', sha);
  let wanted: string[];
  const ggufs = [...byName.keys()].filter((f) => f.endsWith('.gguf'));
  if (spec.tag) {
    const file = taggedGguf(ggufs, spec.tag);
    if (typeof file !== 'string') throw new Error(`hub: ${p}: ${spec.repo} has ${file.none.replace('hf:owner/name', `hf:${spec.repo}`)}`);
    spec = { ...spec, file };
  }
  if (spec.file) {
    if (!byName.has(spec.file)) throw new Error(`hub: ${p}: ${spec.repo} has no file ${spec.file}${ggufs.length ? ` (its GGUF files: ${ggufs.join(', ')})` : ''}`);
    wanted = ggufParts(spec.file);
    const missing = wanted.filter((f) => !byName.has(f));
    if (missing.length) throw new Error(`hub: ${p}: ${spec.repo} lacks ${missing.join(', ')} of the split GGUF ${spec.file}`);
  } else {
    wanted = [...byName.keys()].filter((f) => FOLDER_FILE.test(f));
    const named = (f: string) => wanted.includes(f);
    // With a safetensors index, only the shards it names (Mistral's repositories also hold consolidated.safetensors).
    const index = 'model.safetensors.index.json';
    if (named(index)) {
      const local = path.join(snapshot, index);
      const text = fs.existsSync(local) ? fs.readFileSync(local, 'utf8') : await (await get(`${endpoint}/${spec.repo}/resolve/${sha}/${index}`, index)).text();
      let map: unknown;
      try { map = JSON.parse(text).weight_map; } catch { /* refused below */ }
      if (!map || typeof map !== 'object' || Object.values(map).some((f) => typeof f !== 'string')) throw new Error(`hub: ${p}: ${spec.repo}'s ${index} is not a safetensors index (no "weight_map" of tensor names to files)`);
      const shards = new Set(Object.values(map) as string[]), unlisted = [...shards].filter((f) => !byName.has(f));
      if (unlisted.length) throw new Error(`hub: ${p}: ${spec.repo}'s ${index} names ${unlisted.join(', ')}, which the repository does not hold`);
      wanted = wanted.filter((f) => f.includes('/') || !f.endsWith('.safetensors') || shards.has(f));
    }
    if (!wanted.some((f) => !f.includes('/') && f.endsWith('.safetensors')) || !(named('config.json') || named('adapter_config.json'))) {
      throw new Error(`hub: ${p}: ${spec.repo} is not a model or adapter folder with safetensors weights (config.json or adapter_config.json, *.safetensors)${ggufs.length ? `; name one of its GGUF files: ${ggufs.map((f) => `hf:${spec.repo}/${f}`).join(', ')}${quantExample(ggufs, spec.repo)}` : ''}`);
    }
  }
  const todo = wanted.filter((f) => !fs.existsSync(path.join(snapshot, f))).map((f) => {
    const s = byName.get(f)!, sha256 = s.lfs?.sha256 ?? s.lfs?.oid, etag = sha256 ?? s.blobId, size = s.lfs?.size ?? s.size;
    if (!etag || !/^[0-9a-f]{40,64}$/.test(etag)) throw new Error(`hub: ${p}: ${endpoint} listed ${f} without its blob id`);
    const blob = path.join(folder, 'blobs', etag), part = fs.existsSync(`${blob}.incomplete`) ? fs.statSync(`${blob}.incomplete`).size : 0;
    // Bytes this run fetches: a file's part downloaded before (.incomplete) is not fetched again.
    const fetches = fs.existsSync(blob) ? 0 : part <= (size ?? 0) ? (size ?? 0) - part : size ?? 0;
    return { f, s, sha256, size, blob, fetches };
  });
  const total = todo.reduce((a, t) => a + t.fetches, 0);
  let done = 0;
  o.onDownload?.(0, total);
  for (const { f, s, sha256, size, blob, fetches } of todo) {
    const url = `${endpoint}/${spec.repo}/resolve/${sha}/${f.split('/').map(encodeURIComponent).join('/')}`;
    // One download per blob in this process (two adapters of one repository), stopped when every call waiting for it
    // has been (each caller's signal stops its own wait); another process's is waited for by no one: refused.
    let shared = inFlight.get(blob);
    if (shared?.stop.signal.aborted) { // stopped (all its callers gone): a new one starts once it has let go of the file
      await shared.download.catch(() => {});
      shared = inFlight.get(blob);
    }
    o.signal?.throwIfAborted(); // none is started for a caller already gone
    if (!shared && !fs.existsSync(blob)) {
      const stop = new AbortController(), listeners = new Set<(bytes: number) => void>();
      const download = (async () => {
        const release = holdLock(`${blob}.lock`, (pid) => `hub: ${p}: process ${pid} is downloading ${f} into ${path.dirname(blob)}: run this again once it has ended`);
        try {
          if (!fs.existsSync(blob)) await fetchBlob(url, blob, { size, sha256, gitBlob: sha256 ? undefined : s.blobId }, (n) => { for (const l of listeners) l(n); }, (u, extra, late) => get(u, f, extra, late, stop.signal), stop.signal);
        } finally {
          release();
        }
      })().finally(() => inFlight.delete(blob));
      download.catch(() => {}); // said to the callers waiting (none, once all have stopped)
      shared = { download, stop, waiting: 0, listeners };
      inFlight.set(blob, shared);
    }
    if (shared) await waitFor(shared, o.signal, (n) => o.onDownload?.(done + n, total)); // each caller's own progress
    done += fetches;
  }
  // Linked once every file is there: a snapshot in the cache is whole, or missing files a later run downloads.
  for (const { f, blob } of todo) link(blob, path.join(snapshot, f));
  // A model folder without a tokenizer config: marked as huggingface_hub marks a file a commit lacks, so the snapshot counts as whole.
  if (!spec.file && !byName.has('adapter_config.json') && !byName.has('tokenizer_config.json')) {
    makeDir(path.join(folder, '.no_exist', sha));
    fs.writeFileSync(path.join(folder, '.no_exist', sha, 'tokenizer_config.json'), '');
  }
  o.onDownload?.(total, total);
  if (spec.revision !== sha) { // refs/main, refs/refs/pr/1 as huggingface_hub writes them
    const ref = path.join(folder, 'refs', spec.revision);
    makeDir(path.dirname(ref));
    atomicWrite(ref, (fd) => writeAll(fd, Buffer.from(sha))); // another process reading it meanwhile never sees it empty
  }
  return spec.file ? path.join(snapshot, spec.file) : snapshot;
}

interface SharedDownload { download: Promise<void>; stop: AbortController; waiting: number; listeners: Set<(bytes: number) => void> }
const inFlight = new Map<string, SharedDownload>();

/**
 * Waits for a shared download, its bytes reported to `progress`, or for `signal` (this caller gone: the download stops
 * once no one waits for it).
 */
async function waitFor(d: SharedDownload, signal: AbortSignal | undefined, progress: (bytes: number) => void): Promise<void> {
  d.waiting++;
  d.listeners.add(progress);
  let off = () => {};
  try {
    signal?.throwIfAborted();
    await new Promise<void>((resolve, reject) => {
      if (signal) {
        const stopped = () => reject(signal.reason);
        signal.addEventListener('abort', stopped, { once: true });
        off = () => signal.removeEventListener('abort', stopped);
      }
      d.download.then(resolve, reject);
    });
  } finally {
    off();
    d.listeners.delete(progress);
    if (--d.waiting === 0 && signal?.aborted) d.stop.abort(signal.reason);
  }
}

/**
 * Streams `url` into `blob` through `blob.incomplete` (a download cut short goes on from where it stopped), checking
 * its size and its id — an LFS file's SHA-256, another's git blob id — before the file takes its name.
 */
async function fetchBlob(url: string, blob: string, want: { size?: number; sha256?: string; gitBlob?: string }, progress: (bytes: number) => void,
  get: (url: string, extra: Record<string, string>, stop: AbortController) => Promise<Response>, signal?: AbortSignal): Promise<void> {
  const part = `${blob}.incomplete`, name = decodeURIComponent(path.basename(url));
  const hash = want.sha256 ? crypto.createHash('sha256') : crypto.createHash('sha1');
  if (!want.sha256 && want.size !== undefined) hash.update(`blob ${want.size}\0`);
  let have = fs.existsSync(part) ? fs.statSync(part).size : 0;
  // A part written in the last seconds may be another program's download under way (huggingface_hub's, whose lock
  // cannot be seen from here): if it grows, it is left to it rather than written twice.
  if (have && Date.now() - fs.statSync(part).mtimeMs < 10_000) {
    await new Promise<void>((r) => { const t = setTimeout(r, 1500); signal?.addEventListener('abort', () => { clearTimeout(t); r(); }, { once: true }); });
    signal?.throwIfAborted();
    if (fs.statSync(part).size !== have) throw new Error(`hub: ${name}: another program is downloading it (${part} grows): run this again once it has ended`);
  }
  if (want.size !== undefined && have > want.size) { fs.rmSync(part); have = 0; }
  const resumed = have, stop = new AbortController();
  // Whole already (cut off before its rename): checked without asking again.
  let res = have && have === want.size ? undefined : await get(url, have ? { range: `bytes=${have}-` } : {}, stop);
  if (res?.status === 416) { await res.body?.cancel(); res = await get(url, {}, stop); } // a range past the server's file: sent whole
  if (res && res.status !== 206) have = 0;
  let bytes = have, fd: number | undefined;
  try {
    if (have) for await (const chunk of fs.createReadStream(part)) { signal?.throwIfAborted(); hash.update(chunk as Buffer); }
    if (res?.body) fd = fs.openSync(part, have ? 'a' : 'w');
  } catch (e) {
    await res?.body?.cancel().catch(() => undefined); // the connection is given back now, not when collected
    throw e;
  }
  if (res?.body && fd !== undefined) {
    let oversize = false;
    // No data for 10 s (huggingface_hub's read timeout): the download broke off.
    const idle = setTimeout(() => stop.abort(new Error('no data for 10 s')), 10_000);
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        idle.refresh();
        if (want.size !== undefined && bytes + chunk.length > want.size) throw new Oversize(`hub: ${name}: the server sent more than the ${want.size} bytes the Hub lists for it (nothing kept)`);
        try {
          for (let off = 0; off < chunk.length;) off += fs.writeSync(fd, chunk, off);
        } catch (e) {
          throw new Error(`hub: ${name}: cannot write ${part}: ${(e as Error).message}`);
        }
        hash.update(chunk);
        // This run's bytes (those already there are not fetched again; a server that sends the file whole counts them once).
        progress(Math.max(0, (bytes += chunk.length) - resumed));
      }
    } catch (e) {
      oversize = e instanceof Oversize;
      if (signal?.aborted) throw signal.reason; // stopped by the caller: what was written stays for the next run
      if (!(e as Error).message.startsWith('hub: ')) throw new Error(`hub: ${name}: the download broke off at ${bytes}${want.size !== undefined ? ` of ${want.size}` : ''} bytes (${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message}): run the same command again: it goes on from there`);
      throw e;
    } finally {
      clearTimeout(idle);
      fs.closeSync(fd);
      if (oversize) fs.rmSync(part, { force: true }); // once closed (Windows cannot remove an open file)
    }
  }
  if (want.size !== undefined && bytes !== want.size) throw new Error(`hub: ${name}: the download ended at ${bytes} of ${want.size} bytes (run the same command again: it goes on from there)`);
  const id = want.sha256 ?? (want.size !== undefined ? want.gitBlob : undefined);
  if (id && hash.digest('hex') !== id) {
    fs.rmSync(part);
    throw new Error(`hub: ${name}: the downloaded file's ${want.sha256 ? 'SHA-256' : 'git blob id'} is not the one the Hub lists (removed: run the same command again)`);
  }
  rename(part, blob);
}

/** A body longer than the file the Hub lists: what was written is removed. */
class Oversize extends Error {}

/**
 * The snapshot's file points at its blob: a relative link, as huggingface_hub makes; where links are refused (Windows
 * without Developer Mode), a hard link, which costs no room; a copy where neither can be made (FAT32, exFAT).
 */
function link(blob: string, file: string): void {
  makeDir(path.dirname(file));
  const made = (make: () => void): boolean => {
    try { make(); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EEXIST'; }
  };
  if (made(() => fs.symlinkSync(path.relative(path.dirname(file), blob), file)) || made(() => fs.linkSync(blob, file))) return;
  const copy = `${file}.${process.pid}.tmp`; // whole or absent: a copy cut short is never taken for the file
  fs.copyFileSync(blob, copy);
  rename(copy, file);
}

/**
 * A model's short name for people and served ids: owner/name for a folder of the Hugging Face cache's snapshots
 * (models--owner--name/snapshots/<commit>, not the commit), else the file or folder's own name.
 */
export function shortName(p: string): string {
  return hubRepo(p) ?? path.basename(path.resolve(p));
}

/**
 * The repository, file and snapshot folder of a GGUF in the Hugging Face cache's snapshots
 * (models--owner--name/snapshots/<commit>/<file>), else undefined.
 */
export function hubGguf(p: string): { repo: string; file: string; snapshot: string } | undefined {
  const m = /^(.*[\\/]models--([^\\/]+?)--([^\\/]+)[\\/]snapshots[\\/][0-9a-f]{40})[\\/](.+\.gguf)$/.exec(path.resolve(p));
  return m ? { repo: `${m[2]}/${m[3]}`, file: m[4].split(path.sep).join('/'), snapshot: m[1] } : undefined;
}

/** A snapshot's files, "/"-separated, its subfolders' too; undefined when it cannot be read. */
export function snapshotFiles(snapshot: string): string[] | undefined {
  try { return (fs.readdirSync(snapshot, { recursive: true }) as string[]).map((f) => f.split(path.sep).join('/')); } catch { return undefined; }
}

/** owner/name for a folder of the Hugging Face cache's snapshots (models--owner--name/snapshots/<commit>), else undefined. */
export function hubRepo(p: string): string | undefined {
  const m = /(?:^|[\\/])models--([^\\/]+?)--([^\\/]+)[\\/]snapshots[\\/][0-9a-f]{40}$/.exec(path.resolve(p));
  return m ? `${m[1]}/${m[2]}` : undefined;
}
