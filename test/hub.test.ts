/**
 * Models named by their Hugging Face id (src/io/hub.ts), against a local server that answers as the Hub does
 * (/api/models/<repo>/revision/<rev>?blobs=true, /<repo>/resolve/<sha>/<file> with ranges): downloads land in the
 * Hugging Face cache in huggingface_hub's layout and load as the folder they came from; a second load reads the cache alone.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { AddressInfo } from 'node:net';
import { loadModel } from '../src/runtime/model.ts';
import { parseHubSpec, resolveModelPath, shortName } from '../src/io/hub.ts';
import { parseAdapterArg } from '../src/server/models.ts';
import { makeRandomQwen2 } from './helpers/random-model.ts';

const run = promisify(execFile);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-hub-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const tiny = makeRandomQwen2({ dir: path.join(tmp, 'tiny'), config: { numLayers: 1 } });
const onlyGguf = path.join(tmp, 'only-gguf');
fs.mkdirSync(onlyGguf);
fs.copyFileSync(tiny.files.ggufF32, path.join(onlyGguf, 'tiny-f32.gguf'));
const REPOS: Record<string, string> = { 'edge/only-gguf': onlyGguf, 'edge/default': path.resolve('models/default'), 'edge/reasoning': path.resolve('models/default/reasoning-adapter'), 'edge/tiny-gguf': tiny.dir, 'edge/gated': tiny.dir };
const SHA = 'a'.repeat(40);
const requests: string[] = [];
let corrupt = ''; // a file served with one byte changed

const lfs = (f: string) => /\.(safetensors|gguf)$/.test(f);
const sibling = (dir: string, f: string) => {
  const bytes = fs.readFileSync(path.join(dir, f));
  const blobId = crypto.createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
  return { rfilename: f, size: bytes.length, blobId, ...(lfs(f) ? { lfs: { sha256: crypto.createHash('sha256').update(bytes).digest('hex'), size: bytes.length, pointerSize: 130 } } : {}) };
};
const server = http.createServer((req, res) => {
  requests.push(`${req.headers.range ?? ''} ${req.url}`);
  const url = new URL(req.url!, 'http://x');
  const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(url.pathname), file = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
  const repo = api?.[1] ?? file?.[1], dir = repo ? REPOS[repo] : undefined;
  if (!dir) { res.writeHead(404, { 'x-error-code': 'RepoNotFound' }).end('{"error":"Repository not found"}'); return; }
  if (repo === 'edge/gated' && req.headers.authorization !== 'Bearer right') { res.writeHead(401).end('{"error":"gated"}'); return; }
  if (api) {
    const files = fs.readdirSync(dir).filter((f) => fs.statSync(path.join(dir, f)).isFile());
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: repo, sha: SHA, siblings: files.map((f) => sibling(dir, f)) }));
    return;
  }
  let bytes = fs.readFileSync(path.join(dir, decodeURIComponent(file![3])));
  if (file![3] === corrupt) { bytes = Buffer.from(bytes); bytes[bytes.length - 1] ^= 1; }
  const from = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
  res.writeHead(from ? 206 : 200, { 'content-length': bytes.length - from, ...(from ? { 'content-range': `bytes ${from}-${bytes.length - 1}/${bytes.length}` } : {}) }).end(bytes.subarray(from));
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
after(() => server.close());
const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

/** Runs `fn` with these environment variables (undefined: unset), restoring them after. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const before = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const set = (v: Record<string, string | undefined>) => { for (const [k, x] of Object.entries(v)) if (x === undefined) delete process.env[k]; else process.env[k] = x; };
  set(vars);
  try { return await fn(); } finally { set(before); }
}
const hubEnv = (cache: string, extra: Record<string, string | undefined> = {}) => ({ HF_ENDPOINT: endpoint, HF_HUB_CACHE: cache, HF_HUB_OFFLINE: undefined, HF_TOKEN: undefined, HUGGING_FACE_HUB_TOKEN: undefined, ...extra });

test('hf:owner/name downloads a model and its adapter into the Hugging Face cache (huggingface_hub layout) and loads as the folder does; the next load reads the cache alone', async () => {
  const cache = path.join(tmp, 'cache1'), prompt = 'What is the capital of Rivalon?';
  const local = await loadModel('models/default', { adapter: 'models/default/reasoning-adapter' });
  const want = await local.complete(prompt, { chat: true, adapter: true, maxTokens: 24 });
  await local.close();
  const progress: [number, number][] = [];
  requests.length = 0;
  const m = await withEnv(hubEnv(cache), () => loadModel('hf:edge/default', { adapter: 'hf:edge/reasoning', onDownload: (d, t) => progress.push([d, t]) }));
  try {
    assert.deepEqual((await m.complete(prompt, { chat: true, adapter: true, maxTokens: 24 })).tokens, want.tokens);
  } finally {
    await m.close();
  }
  const repo = path.join(cache, 'models--edge--default'), snapshot = path.join(repo, 'snapshots', SHA);
  assert.equal(fs.readFileSync(path.join(repo, 'refs', 'main'), 'utf8'), SHA);
  const weights = sibling('models/default', 'model.safetensors'), config = sibling('models/default', 'config.json');
  assert.equal(fs.readlinkSync(path.join(snapshot, 'model.safetensors')), path.join('..', '..', 'blobs', weights.lfs!.sha256));
  assert.equal(fs.readlinkSync(path.join(snapshot, 'config.json')), path.join('..', '..', 'blobs', config.blobId));
  // Only what loading reads: configs, tokenizer, safetensors (not the SVG plots or training logs' neighbours).
  assert.deepEqual(fs.readdirSync(snapshot).sort(), fs.readdirSync('models/default').filter((f) => /\.(json|jinja|safetensors)$/.test(f)).sort());
  // One bar per download: from 0 to its total, the files' bytes.
  const total = fs.readdirSync(snapshot).reduce((a, f) => a + fs.statSync(path.join(snapshot, f)).size, 0);
  assert.deepEqual([progress[0], progress.some(([, t]) => t === total), progress.at(-1)![0] === progress.at(-1)![1]], [[0, total], true, true]);

  // Served and shown by the repository's name, not the snapshot's commit.
  assert.deepEqual([shortName(snapshot), parseAdapterArg(await withEnv(hubEnv(cache), () => resolveModelPath('hf:edge/reasoning'))).name, shortName('models/default')], ['edge/default', 'edge/reasoning', 'default']);
  requests.length = 0;
  for (const spec of ['hf:edge/default', 'edge/default', 'hf:edge/reasoning', `hf:edge/default@${SHA}`]) {
    assert.equal(await withEnv(hubEnv(cache, { HF_ENDPOINT: 'http://127.0.0.1:9' }), () => resolveModelPath(spec)), path.join(cache, `models--${parseHubSpec(spec.startsWith('hf:') ? spec : `hf:${spec}`)!.repo.replace('/', '--')}`, 'snapshots', SHA));
  }
  assert.deepEqual(requests, []);
});

test('hf: downloads check each file: a cut download goes on from where it stopped (a range request), one whose SHA-256 differs is removed', async () => {
  const cache = path.join(tmp, 'cache2'), gguf = sibling(tiny.dir, 'model-f32.gguf');
  const blob = path.join(cache, 'models--edge--tiny-gguf', 'blobs', gguf.lfs!.sha256);
  corrupt = 'model-f32.gguf';
  await assert.rejects(withEnv(hubEnv(cache), () => resolveModelPath('hf:edge/tiny-gguf/model-f32.gguf')), /^Error: hub: model-f32\.gguf: the downloaded file's SHA-256 is not the one the Hub lists \(removed: run the same command again\)$/);
  assert.deepEqual([fs.existsSync(blob), fs.existsSync(`${blob}.incomplete`)], [false, false]);
  corrupt = '';
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  fs.writeFileSync(`${blob}.incomplete`, fs.readFileSync(tiny.files.ggufF32).subarray(0, 1000));
  requests.length = 0;
  const file = await withEnv(hubEnv(cache), () => resolveModelPath('hf:edge/tiny-gguf/model-f32.gguf'));
  assert.ok(requests.includes(`bytes=1000- /edge/tiny-gguf/resolve/${SHA}/model-f32.gguf`), requests.join('\n'));
  assert.deepEqual(fs.readFileSync(file), fs.readFileSync(tiny.files.ggufF32));
  const m = await loadModel(file, { quant: 'fp32' });
  await m.close();
});

test('hf: names, access, offline use and a repository that is not a model folder are refused with what to do', async () => {
  const cache = path.join(tmp, 'cache3'), run = (spec: string, extra: Record<string, string | undefined> = {}) => withEnv(hubEnv(cache, extra), () => resolveModelPath(spec));
  await assert.rejects(run('hf:edge'), /^Error: hub: "hf:edge" is not a Hugging Face name: hf:owner\/name for a model or adapter folder, hf:owner\/name\/file\.gguf for a GGUF file/);
  await assert.rejects(run('hf:edge/tiny/model.bin'), /is not a Hugging Face name/);
  await assert.rejects(run('hf:edge/missing'), new RegExp(`^Error: hub: hf:edge/missing: the model edge/missing was not found on ${endpoint} \\(HTTP 404: check the name\\)$`));
  await assert.rejects(run('hf:edge/gated'), /^Error: hub: hf:edge\/gated: the model edge\/gated needs access \(HTTP 401: a gated or private repository\): set HF_TOKEN to a token that may read it$/);
  await assert.rejects(run('hf:edge/gated', { HF_TOKEN: 'wrong' }), /the token in HF_TOKEN is refused$/);
  assert.equal(await run('hf:edge/gated', { HF_TOKEN: 'right' }), path.join(cache, 'models--edge--gated', 'snapshots', SHA));
  await assert.rejects(run('hf:edge/tiny-gguf/other.gguf'), /^Error: hub: hf:edge\/tiny-gguf\/other\.gguf: edge\/tiny-gguf has no file other\.gguf \(its GGUF files: model-f32\.gguf\)$/);
  await assert.rejects(run('hf:edge/only-gguf'), /^Error: hub: hf:edge\/only-gguf: edge\/only-gguf is not a model or adapter folder with safetensors weights \(config\.json or adapter_config\.json, \*\.safetensors\); name one of its GGUF files: hf:edge\/only-gguf\/tiny-f32\.gguf$/);
  await assert.rejects(run('hf:edge/tiny-gguf', { HF_HUB_OFFLINE: '1' }), /^Error: hub: hf:edge\/tiny-gguf is not in the Hugging Face cache \(.*cache3\), and HF_HUB_OFFLINE is set: unset it to download$/);
  await assert.rejects(run('hf:edge/default', { HF_ENDPOINT: 'http://127.0.0.1:9' }), /^Error: hub: hf:edge\/default: could not reach http:\/\/127\.0\.0\.1:9 \(.*\); set HF_HUB_OFFLINE=1 to read the Hugging Face cache only, HF_ENDPOINT for a mirror$/);
  // A model path that is not on disk and not in the cache says how to download it.
  await assert.rejects(withEnv(hubEnv(cache), () => loadModel('edge/default')), /^Error: model: edge\/default does not exist \(as a Hugging Face model it is not in the cache: hf:edge\/default downloads it\)$/);
});

test('the command line downloads --model hf:… with the rest of the command unchanged', async () => {
  const cache = path.join(tmp, 'cache4');
  const cli = (model: string) => run(process.execPath, ['bin/edgereason.js', 'generate', '--model', model, '--prompt', 'Hello', '--max-tokens', '12'],
    { encoding: 'utf8', env: Object.fromEntries(Object.entries({ ...process.env, ...hubEnv(cache), TERM: 'dumb' }).filter(([, v]) => v !== undefined)) });
  const [hub, local] = await Promise.all([cli('hf:edge/default'), cli('models/default')]);
  assert.deepEqual([hub.stdout, fs.existsSync(path.join(cache, 'models--edge--default', 'snapshots', SHA, 'model.safetensors'))], [local.stdout, true]);
});
