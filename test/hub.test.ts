/**
 * Models named by their Hugging Face id (src/io/hub.ts), against a local server that answers as the Hub does
 * (/api/models/<repo>/revision/<rev>?blobs=true, /<repo>/resolve/<sha>/<file> with ranges): downloads land in the
 * Hugging Face cache in huggingface_hub's layout and load as the folder they came from; a second load reads the cache alone.
 */
import { test, after, mock } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import type { AddressInfo } from 'node:net';
import { loadModel } from '../src/runtime/model.ts';
import { hubCacheDir, parseHubSpec, resolveModelPath, shortName } from '../src/io/hub.ts';
import { parseAdapterArg } from '../src/server/models.ts';
import { makeRandomQwen2 } from './helpers/random-model.ts';
import { slow } from './helpers/tier.ts';

const run = promisify(execFile);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-hub-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const tiny = makeRandomQwen2({ dir: path.join(tmp, 'tiny'), config: { numLayers: 1 } });
const onlyGguf = path.join(tmp, 'only-gguf');
fs.mkdirSync(onlyGguf);
fs.copyFileSync(tiny.files.ggufF32, path.join(onlyGguf, 'tiny-f32.gguf'));
// Mistral's layout: shards named by an index, and a consolidated.safetensors beside them that transformers never reads.
const sharded = path.join(tmp, 'sharded');
fs.mkdirSync(sharded);
for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join('models/default', f), path.join(sharded, f));
fs.copyFileSync('models/default/model.safetensors', path.join(sharded, 'model-00001-of-00001.safetensors'));
fs.copyFileSync('models/default/model.safetensors', path.join(sharded, 'consolidated.safetensors'));
const names = Object.keys(JSON.parse(fs.readFileSync('models/default/model.safetensors').subarray(8, 8 + Number(fs.readFileSync('models/default/model.safetensors').readBigUInt64LE(0))).toString())).filter((k) => k !== '__metadata__');
fs.writeFileSync(path.join(sharded, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: Object.fromEntries(names.map((n) => [n, 'model-00001-of-00001.safetensors'])) }));
// Repositories that are not whole: an index that is not one, an index naming a shard not there, a split GGUF's lone part, a folder without tokenizer_config.json.
const odd = (name: string, files: Record<string, string | Buffer>) => {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  for (const [f, v] of Object.entries(files)) fs.writeFileSync(path.join(dir, f), v);
  return dir;
};
// GGUF files named by their quantisation: one in a folder, a split one, a projector, two of one quantisation.
const f32 = fs.readFileSync(tiny.files.ggufF32);
const quants = odd('quants', { 'tiny-f32.gguf': f32, 'tiny-Q8_0_L.gguf': 'GGUF', 'mmproj-tiny-f32.gguf': 'GGUF', 'tiny-Q4_0-00001-of-00002.gguf': 'GGUF1', 'tiny-Q4_0-00002-of-00002.gguf': 'GGUF2', 'tiny-q5_0.gguf': 'GGUF', 'other-Q5_0.gguf': 'GGUF', 'README.md': '#' });
fs.mkdirSync(path.join(quants, 'sub'));
fs.writeFileSync(path.join(quants, 'sub', 'tiny-q8_0.gguf'), f32);
fs.mkdirSync(path.join(quants, 'IQ4_XS'));
fs.writeFileSync(path.join(quants, 'IQ4_XS', 'tiny-00001-of-00001.gguf'), 'GGUF');
const base = { 'config.json': fs.readFileSync('models/default/config.json'), 'tokenizer.json': fs.readFileSync('models/default/tokenizer.json'), 'model.safetensors': fs.readFileSync('models/default/model.safetensors') };
const REPOS: Record<string, string> = {
  'edge/bad-index': odd('bad-index', { ...base, 'model.safetensors.index.json': '{"metadata": {}}' }),
  'edge/ghost-shard': odd('ghost-shard', { ...base, 'model.safetensors.index.json': '{"weight_map": {"a": "model-00002-of-00002.safetensors"}}' }),
  'edge/split': odd('split', { 'x-00001-of-00002.gguf': 'GGUF' }),
  'edge/no-tokenizer-config': odd('no-tokenizer-config', base),
  'edge/only-gguf': onlyGguf, 'edge/quants': quants, 'edge/sharded': sharded, 'edge/slow': tiny.dir, 'edge/default': path.resolve('models/default'), 'edge/reasoning': path.resolve('models/default/reasoning-adapter'), 'edge/tiny-gguf': tiny.dir, 'edge/gated': tiny.dir };
const SHA = 'a'.repeat(40);
let head = SHA; // the commit main is at
const requests: string[] = [];
let corrupt = ''; // a file served with one byte changed
let longer = ''; // a file served with one byte more
let cut = ''; // a file whose connection drops half-way
let refuse = ''; // a file whose connection drops before any answer
let down = 0; // the revision API's HTTP status instead of its answer (503), or 200 with a proxy's HTML page (-1)

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
  // As the Hub: an unknown repository is a 401 (as a private one), a gated one 401 without a token and 403 with one not let in.
  if (!dir) { res.writeHead(401, { 'x-error-code': 'RepoNotFound' }).end('{"error":"Repository not found"}'); return; }
  if (repo === 'edge/gated' && req.headers.authorization !== 'Bearer right') { res.writeHead(req.headers.authorization ? 403 : 401, { 'x-error-code': 'GatedRepo' }).end('{"error":"gated"}'); return; }
  if (api && down) { res.writeHead(down > 0 ? down : 200, { 'content-type': 'text/html' }).end('<html>maintenance</html>'); return; }
  if (file && decodeURIComponent(file[3]) === refuse) { res.destroy(); return; }
  if (api) {
    const files = (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => fs.statSync(path.join(dir, f)).isFile()).map((f) => f.split(path.sep).join('/'));
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: repo, sha: head, siblings: files.map((f) => sibling(dir, f)) }));
    return;
  }
  let bytes = fs.readFileSync(path.join(dir, decodeURIComponent(file![3])));
  if (file![3] === corrupt) { bytes = Buffer.from(bytes); bytes[bytes.length - 1] ^= 1; }
  if (file![3] === longer) bytes = Buffer.concat([bytes, Buffer.from(' ')]);
  const from = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
  if (file![3] === cut || repo === 'edge/slow') { // half, then the connection drops (edge/slow: half, then nothing)
    res.writeHead(200, { 'content-length': bytes.length }).write(bytes.subarray(0, bytes.length >> 1));
    if (repo !== 'edge/slow') setTimeout(() => res.destroy(), 50);
    return;
  }
  res.writeHead(from ? 206 : 200, { 'content-length': bytes.length - from, ...(from ? { 'content-range': `bytes ${from}-${bytes.length - 1}/${bytes.length}` } : {}) }).end(bytes.subarray(from));
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
after(() => { server.closeAllConnections(); server.close(); });
const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

/** Runs `fn` with these environment variables (undefined: unset), restoring them after. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const before = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const set = (v: Record<string, string | undefined>) => { for (const [k, x] of Object.entries(v)) if (x === undefined) delete process.env[k]; else process.env[k] = x; };
  set(vars);
  try { return await fn(); } finally { set(before); }
}
/** A command's environment: this one's, pointed at the local Hub and `cache`, plain progress lines. */
const childEnv = (cache: string) => Object.fromEntries(Object.entries({ ...process.env, ...hubEnv(cache), TERM: 'dumb' }).filter(([, v]) => v !== undefined));
const hubEnv = (cache: string, extra: Record<string, string | undefined> = {}) => ({
  HF_ENDPOINT: endpoint, HF_HUB_CACHE: cache, HF_HUB_OFFLINE: undefined, TRANSFORMERS_OFFLINE: undefined, HF_TOKEN: undefined, HUGGING_FACE_HUB_TOKEN: undefined,
  HF_TOKEN_PATH: path.join(tmp, 'no-token'), ...extra,
});

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
  // Only what loading reads: configs, tokenizer, safetensors, and edgereason's reasoning adapters beside the model (not the SVG plots).
  const files = (dir: string) => (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort();
  assert.deepEqual(files(snapshot), files('models/default').filter((f) => /^(reasoning-adapter(-rl)?\/)?[^/]+\.(json|jinja|safetensors)$/.test(f)));
  assert.ok(files(snapshot).includes(path.join('reasoning-adapter', 'adapter_model.safetensors')));
  // One bar per download: from 0 to its total, the files' bytes.
  const total = files(snapshot).reduce((a, f) => a + fs.statSync(path.join(snapshot, f)).size, 0);
  assert.deepEqual([progress[0], progress.some(([, t]) => t === total), progress.at(-1)![0] === progress.at(-1)![1]], [[0, total], true, true]);

  // Served and shown by the repository's name, not the snapshot's commit.
  assert.deepEqual([shortName(snapshot), parseAdapterArg(await withEnv(hubEnv(cache), () => resolveModelPath('hf:edge/reasoning'))).name, shortName('models/default')], ['edge/default', 'edge/reasoning', 'default']);
  requests.length = 0;
  for (const spec of ['hf:edge/default', 'edge/default', 'hf:edge/reasoning', `hf:edge/default@${SHA}`]) {
    assert.equal(await withEnv(hubEnv(cache, { HF_ENDPOINT: 'http://127.0.0.1:9' }), () => resolveModelPath(spec)), path.join(cache, `models--${parseHubSpec(spec.startsWith('hf:') ? spec : `hf:${spec}`)!.repo.replace('/', '--')}`, 'snapshots', SHA));
  }
  assert.deepEqual(requests, []);
});

test('hf: where symbolic links are refused (Windows without Developer Mode) a snapshot\'s files are hard links to their blobs: no second copy', async () => {
  const cache = path.join(tmp, 'cache-nolinks');
  const refuse = mock.method(fs, 'symlinkSync', () => { throw Object.assign(new Error('EPERM: operation not permitted, symlink'), { code: 'EPERM' }); });
  try {
    await withEnv(hubEnv(cache), () => resolveModelPath('hf:edge/default'));
  } finally {
    refuse.mock.restore();
  }
  const file = path.join(cache, 'models--edge--default', 'snapshots', SHA, 'model.safetensors'), weights = sibling('models/default', 'model.safetensors');
  const [own, blob] = [file, path.join(cache, 'models--edge--default', 'blobs', weights.lfs!.sha256)].map((f) => fs.lstatSync(f));
  assert.deepEqual([own.isSymbolicLink(), own.ino === blob.ino, own.nlink], [false, true, 2]); // it was a copy: the model twice on disk
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

  // Whole but not renamed (cut off just before): checked and taken without asking the server for it again.
  fs.renameSync(blob, `${blob}.incomplete`);
  fs.rmSync(path.join(cache, 'models--edge--tiny-gguf', 'snapshots'), { recursive: true });
  requests.length = 0;
  assert.equal(await withEnv(hubEnv(cache), () => resolveModelPath('hf:edge/tiny-gguf/model-f32.gguf')), file);
  assert.deepEqual(requests.filter((r) => r.includes('/resolve/')), []);

  // A folder whose download fails links none of its files: the next run downloads what is missing, and it loads.
  const folder = path.join(tmp, 'cache2b'), snapshot = path.join(folder, 'models--edge--default', 'snapshots', SHA);
  corrupt = 'tokenizer.json'; // not an LFS file: checked by its git blob id
  await assert.rejects(withEnv(hubEnv(folder), () => resolveModelPath('hf:edge/default')), /^Error: hub: tokenizer\.json: the downloaded file's git blob id is not the one the Hub lists \(removed: run the same command again\)$/);
  assert.equal(fs.existsSync(snapshot), false);
  corrupt = '';
  longer = 'tokenizer.json';
  await assert.rejects(withEnv(hubEnv(folder), () => resolveModelPath('hf:edge/default')), /^Error: hub: tokenizer\.json: the server sent more than the \d+ bytes the Hub lists for it \(nothing kept\)$/);
  longer = '';
  requests.length = 0;
  const twice = await withEnv(hubEnv(folder), () => Promise.all([resolveModelPath('hf:edge/default'), resolveModelPath('hf:edge/default')]));
  assert.deepEqual(twice, [snapshot, snapshot]);
  // The file that failed and those after it are fetched, once each (two calls, one download); those before it are kept.
  const fetched = requests.filter((r) => r.includes('/resolve/')).map((r) => r.slice(r.indexOf(`/resolve/${SHA}/`) + 50));
  assert.deepEqual([fetched.includes('tokenizer.json'), new Set(fetched).size === fetched.length, fetched.includes('config.json'), fetched.includes('model.safetensors')], [true, true, false, false], fetched.join(' '));
  // A snapshot whose safetensors index names a shard it lacks is not whole: the Hub is asked again.
  fs.writeFileSync(path.join(snapshot, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'a.weight': 'model-00002-of-00002.safetensors' } }));
  requests.length = 0;
  await withEnv(hubEnv(folder), () => resolveModelPath('hf:edge/default'));
  assert.equal(requests.length, 1);
});

test('hf: names, access, offline use and a repository that is not a model folder are refused with what to do', async () => {
  const cache = path.join(tmp, 'cache3'), run = (spec: string, extra: Record<string, string | undefined> = {}) => withEnv(hubEnv(cache, extra), () => resolveModelPath(spec));
  await assert.rejects(run('hf:edge'), /^Error: hub: "hf:edge" is not a Hugging Face name: hf:owner\/name for a model or adapter folder, hf:owner\/name\/file\.gguf for a GGUF file/);
  for (const bad of ['hf:edge/tiny/model.bin', 'hf:edge/default@..', 'hf:edge/default@.', 'hf:edge/default@a\\b']) await assert.rejects(run(bad), /is not a Hugging Face name/, bad);
  await assert.rejects(run('hf:edge/missing'), new RegExp(`^Error: hub: hf:edge/missing: the model edge/missing was not found on ${endpoint}, or is private \\(HTTP 401 RepoNotFound\\): check the name; for a private one, set HF_TOKEN to a token that may read it$`));
  await assert.rejects(run('hf:edge/gated'), new RegExp(`^Error: hub: hf:edge/gated: edge/gated is gated \\(HTTP 401 GatedRepo\\): accept its conditions at ${endpoint}/edge/gated, then set HF_TOKEN to a token of that account$`));
  await assert.rejects(run('hf:edge/gated', { HF_TOKEN: 'wrong' }), /is gated \(HTTP 403 GatedRepo\)/);
  // The token `hf auth login` saves is read where HF_TOKEN is not set.
  fs.writeFileSync(path.join(tmp, 'token'), 'right\n');
  assert.equal(await run('hf:edge/gated', { HF_TOKEN_PATH: path.join(tmp, 'token') }), path.join(cache, 'models--edge--gated', 'snapshots', SHA));
  await assert.rejects(run('hf:edge/tiny-gguf/other.gguf'), /^Error: hub: hf:edge\/tiny-gguf\/other\.gguf: edge\/tiny-gguf has no file other\.gguf \(its GGUF files: model-f32\.gguf\)$/);
  await assert.rejects(run('hf:edge/only-gguf'), /^Error: hub: hf:edge\/only-gguf: edge\/only-gguf is not a model or adapter folder with safetensors weights \(config\.json or adapter_config\.json, \*\.safetensors\); name one of its GGUF files: hf:edge\/only-gguf\/tiny-f32\.gguf, or by its quantisation: hf:edge\/only-gguf:f32$/);
  await assert.rejects(run('hf:edge/tiny-gguf', { HF_HUB_OFFLINE: '1' }), /^Error: hub: hf:edge\/tiny-gguf is not in the Hugging Face cache \(.*cache3\), and HF_HUB_OFFLINE is set: unset it to download$/);
  for (const off of [{ HF_HUB_OFFLINE: 'yes' }, { HF_HUB_OFFLINE: 'TRUE' }, { TRANSFORMERS_OFFLINE: '1' }]) await assert.rejects(run('hf:edge/tiny-gguf', off), /HF_HUB_OFFLINE is set/);
  // huggingface_hub's folders, ~ included.
  assert.deepEqual([hubCacheDir({ HF_HOME: '~/hf' }), hubCacheDir({ HF_HUB_CACHE: '~/c', HF_HOME: '/x' }), hubCacheDir({ XDG_CACHE_HOME: '/xdg' })],
    [path.join(os.homedir(), 'hf', 'hub'), path.join(os.homedir(), 'c'), path.join('/xdg', 'huggingface', 'hub')]);
  await assert.rejects(run('hf:edge/default', { HF_ENDPOINT: 'http://127.0.0.1:9' }), /^Error: hub: hf:edge\/default: could not reach http:\/\/127\.0\.0\.1:9 \(.*\); set HF_HUB_OFFLINE=1 to read the Hugging Face cache only, HF_ENDPOINT for a mirror$/);
  // A model path that is not on disk and not in the cache says how to download it.
  await assert.rejects(withEnv(hubEnv(cache), () => loadModel('edge/default')), /^Error: model: edge\/default does not exist \(as a Hugging Face model it is not in the cache: hf:edge\/default downloads it\)$/);
});

test('the command line downloads --model hf:… with the rest of the command unchanged', slow, async () => {
  const cache = path.join(tmp, 'cache4');
  const cli = (model: string) => run(process.execPath, ['bin/edgereason.js', 'generate', '--model', model, '--prompt', 'Hello', '--max-tokens', '12'],
    { encoding: 'utf8', env: childEnv(cache) });
  const [hub, local] = await Promise.all([cli('hf:edge/default'), cli('models/default')]);
  // A repository in edgereason's layout (models/default's) answers as the local folder: reasoning adapter, router and verifier beside the model.
  const answer = (model: string) => run(process.execPath, ['bin/edgereason.js', 'answer', '--model', model, '--question', 'Zoe has 7 dollars. She sells 4 kites for 3 dollars each. How many dollars does Zoe have now?'],
    { encoding: 'utf8', env: childEnv(cache) });
  const [hubAnswer, localAnswer] = await Promise.all([answer('hf:edge/default'), answer('models/default')]);
  assert.match(localAnswer.stdout, /<\/think>/);
  assert.equal(hubAnswer.stdout, localAnswer.stdout);
  // serve's named adapters: the name before "=hf:" may hold a "/"; a bare one is served under its repository's name.
  const child = spawn(process.execPath, ['bin/edgereason.js', 'serve', '--model', 'hf:edge/default', '--adapter', 'team/r=hf:edge/reasoning', '--adapter', 'hf:edge/reasoning', '--port', '0'],
    { env: childEnv(cache) });
  let out = '';
  const serving = await new Promise<string>((resolve, reject) => {
    const read = (d: Buffer) => { out += d; const m = /serving (.*) at http/.exec(out); if (m) resolve(m[1]); };
    child.stdout.on('data', read);
    child.stderr.on('data', read);
    child.on('exit', () => reject(new Error(out)));
  }).finally(() => child.kill());
  assert.equal(serving, 'edge/default, team/r, edge/reasoning');
  // The converted copies that `edgereason cache` lists say which Hugging Face model they came from.
  const copies = path.join(tmp, 'copies');
  await (await withEnv(hubEnv(cache), () => loadModel('hf:edge/default', { cache: 'always', cacheDir: copies }))).close();
  const listed = await run(process.execPath, ['bin/edgereason.js', 'cache', '--dir', copies], { encoding: 'utf8' });
  assert.match(listed.stdout, new RegExp(`from ${path.join(cache, 'models--edge--default', 'snapshots', SHA)} \\(hf:edge/default\\)\n`));
  assert.deepEqual([hub.stdout, fs.existsSync(path.join(cache, 'models--edge--default', 'snapshots', SHA, 'model.safetensors'))], [local.stdout, true]);
});

test('hf: a branch follows the commit the Hub names (the cached one when the Hub cannot be reached); an index downloads only its shards; a snapshot without its tokenizer config is completed', async () => {
  const cache = path.join(tmp, 'cache5'), env = hubEnv(cache), repo = path.join(cache, 'models--edge--default');
  const first = await withEnv(env, () => resolveModelPath('hf:edge/default'));
  head = 'b'.repeat(40);
  try {
    requests.length = 0;
    const moved = await withEnv(env, () => resolveModelPath('hf:edge/default'));
    // The new commit's snapshot, from the blobs already there: one question, no file fetched again.
    assert.deepEqual([moved, fs.readFileSync(path.join(repo, 'refs', 'main'), 'utf8'), requests.length], [path.join(repo, 'snapshots', head), head, 1]);
    assert.equal(await withEnv({ ...env, HF_ENDPOINT: 'http://127.0.0.1:9' }, () => resolveModelPath('hf:edge/default')), moved);
    assert.equal(await withEnv(env, () => resolveModelPath(`hf:edge/default@${SHA}`)), first);
  } finally {
    head = SHA;
  }
  // huggingface_hub fetched the tokenizer alone (AutoTokenizer): the rest comes now.
  fs.rmSync(path.join(first, 'tokenizer_config.json'));
  assert.equal(await withEnv(env, () => resolveModelPath('hf:edge/default')), first);
  assert.ok(fs.existsSync(path.join(first, 'tokenizer_config.json')));

  requests.length = 0;
  const shards = await withEnv(env, () => resolveModelPath('hf:edge/sharded'));
  assert.deepEqual(fs.readdirSync(shards).sort(), ['config.json', 'model-00001-of-00001.safetensors', 'model.safetensors.index.json', 'tokenizer.json', 'tokenizer_config.json']);
  assert.ok(!requests.some((r) => r.includes('consolidated')), requests.join('\n'));
  const m = await loadModel(shards);
  await m.close();
});

test('hf: a dropped connection says how the download goes on; Ctrl-C on the command line too, and the same command goes on', async () => {
  const cache = path.join(tmp, 'cache6');
  cut = 'model.safetensors';
  try {
    await assert.rejects(withEnv(hubEnv(cache), () => resolveModelPath('hf:edge/default')), /^Error: hub: model\.safetensors: the download broke off at \d+ of \d+ bytes \(.*\): run the same command again: it goes on from there$/);
  } finally {
    cut = '';
  }
  requests.length = 0;
  await withEnv(hubEnv(cache), () => resolveModelPath('hf:edge/default'));
  assert.ok(requests.some((r) => /^bytes=\d+- \/edge\/default\/resolve\/a+\/model\.safetensors$/.test(r)), requests.join('\n'));

  requests.length = 0;
  const child = spawn(process.execPath, ['bin/edgereason.js', 'generate', '--model', 'hf:edge/slow', '--prompt', 'x'],
    { env: childEnv(cache) });
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  while (!requests.some((r) => r.includes('/edge/slow/resolve/'))) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 300));
  child.kill('SIGINT');
  assert.deepEqual([await exited, err.trim().split('\n').at(-1)], [130, 'download of hf:edge/slow stopped: the same command goes on from where it stopped']);
  assert.ok(fs.readdirSync(path.join(cache, 'models--edge--slow', 'blobs')).some((f) => f.endsWith('.incomplete')));
});

test('hf: when the Hub cannot say which commit a branch is at (a server error, a page that is not its answer), the cached snapshot serves; once it has named one, its files must come', async () => {
  const cache = path.join(tmp, 'cache7'), env = hubEnv(cache);
  const first = await withEnv(env, () => resolveModelPath('hf:edge/default'));
  for (const status of [503, 429, -1]) {
    down = status;
    try {
      assert.equal(await withEnv(env, () => resolveModelPath('hf:edge/default')), first);
      await assert.rejects(withEnv(env, () => resolveModelPath('hf:edge/reasoning')), status === -1 ? /answered the model's revision with something that is not JSON \(a proxy's page\?\)/ : new RegExp(`HTTP ${status} from .*: try again later, or set HF_HUB_OFFLINE=1`));
    } finally {
      down = 0;
    }
  }
  // main moves to a commit with a file whose blob is not here, and that file's connection drops: an error, not the old snapshot.
  const tokenizer = sibling('models/default', 'tokenizer.json').blobId;
  fs.rmSync(path.join(cache, 'models--edge--default', 'blobs', tokenizer));
  head = 'c'.repeat(40);
  refuse = 'tokenizer.json';
  try {
    await assert.rejects(withEnv(env, () => resolveModelPath('hf:edge/default')), /^Error: hub: hf:edge\/default: could not reach /);
  } finally {
    head = SHA;
    refuse = '';
  }
});

test('hf: a repository that is not whole is refused by name; one without tokenizer_config.json is marked as huggingface_hub marks it, and then read offline', async () => {
  const cache = path.join(tmp, 'cache8'), run = (spec: string, extra: Record<string, string | undefined> = {}) => withEnv(hubEnv(cache, extra), () => resolveModelPath(spec));
  await assert.rejects(run('hf:edge/bad-index'), /^Error: hub: hf:edge\/bad-index: edge\/bad-index's model\.safetensors\.index\.json is not a safetensors index \(no "weight_map" of tensor names to files\)$/);
  await assert.rejects(run('hf:edge/ghost-shard'), /^Error: hub: hf:edge\/ghost-shard: edge\/ghost-shard's model\.safetensors\.index\.json names model-00002-of-00002\.safetensors, which the repository does not hold$/);
  await assert.rejects(run('hf:edge/split/x-00001-of-00002.gguf'), /^Error: hub: hf:edge\/split\/x-00001-of-00002\.gguf: edge\/split lacks x-00002-of-00002\.gguf of the split GGUF x-00001-of-00002\.gguf$/);
  const snapshot = await run('hf:edge/no-tokenizer-config');
  assert.ok(fs.existsSync(path.join(cache, 'models--edge--no-tokenizer-config', '.no_exist', SHA, 'tokenizer_config.json')));
  assert.equal(await run('hf:edge/no-tokenizer-config', { HF_HUB_OFFLINE: '1' }), snapshot);
});

test('hf: a download that stalls (no data for 10 s) breaks off with what to do', slow, async () => {
  await assert.rejects(withEnv(hubEnv(path.join(tmp, 'cache9')), () => resolveModelPath('hf:edge/slow')), /^Error: hub: (config|model)\.\S+: the download broke off at \d+ of \d+ bytes \(no data for 10 s\): run the same command again: it goes on from there$/);
});

test('loadModel and withAdapter take a signal: it stops a download under way (the part written stays for the next call)', async () => {
  const cache = path.join(tmp, 'cache10'), stop = new AbortController();
  requests.length = 0;
  await assert.rejects(withEnv(hubEnv(cache), () => loadModel('hf:edge/slow', { signal: stop.signal, onDownload: (done) => { if (done > 0) stop.abort(); } })), { name: 'AbortError' });
  const parts = fs.readdirSync(path.join(cache, 'models--edge--slow', 'blobs')).filter((f) => f.endsWith('.incomplete'));
  assert.equal(parts.length, 1);
  assert.ok(fs.statSync(path.join(cache, 'models--edge--slow', 'blobs', parts[0])).size > 0);
  // Stopped before it starts: nothing is asked or opened.
  requests.length = 0;
  await assert.rejects(withEnv(hubEnv(cache), () => loadModel('hf:edge/slow', { signal: AbortSignal.abort() })), { name: 'AbortError' });
  await assert.rejects(loadModel('models/default', { signal: AbortSignal.abort() }), { name: 'AbortError' });
  assert.deepEqual(requests, []);
  // Aborted while it loads (it went on and loaded): stopped after the step under way. The graph built in memory, or the
  // conversion into the cache, which stops at once and keeps nothing.
  const building = new AbortController();
  await assert.rejects(loadModel('models/default', { signal: building.signal, onProgress: () => building.abort() }), { name: 'AbortError' });
  const converting = new AbortController(), cacheDir = path.join(tmp, 'abort-cache'), notes: string[] = [];
  const onNote = (n: string) => { notes.push(n); if (n.startsWith('model: converting')) converting.abort(); };
  await assert.rejects(loadModel('models/default', { signal: converting.signal, cache: 'always', cacheDir, onNote }), { name: 'AbortError' });
  assert.deepEqual([notes.length, fs.readdirSync(path.join(cacheDir, 'converted'))], [1, []]);
  const midway = new AbortController();
  await assert.rejects(loadModel('models/default', { signal: midway.signal, cache: 'always', cacheDir, onProgress: () => midway.abort() }), { name: 'AbortError' });
  assert.deepEqual(fs.readdirSync(path.join(cacheDir, 'converted')), []); // its thread stopped, its files removed
  const m = await loadModel('models/default', { adapter: 'models/default/reasoning-adapter' });
  try {
    await assert.rejects(withEnv(hubEnv(cache), () => m.withAdapter('hf:edge/reasoning', { signal: AbortSignal.abort() })), { name: 'AbortError' });
    await assert.rejects(m.withAdapter('models/default/reasoning-adapter-rl', { signal: 'stop' as never }), /^Error: withAdapter: signal must be an AbortSignal, got "stop"$/);
    await assert.rejects(m.withAdapter('models/default/reasoning-adapter-rl', { onDownlaod: () => {} } as object), /^Error: withAdapter: unknown option "onDownlaod" \(options: onDownload, signal, onNote\)$/);
  } finally {
    await m.close();
  }
  await assert.rejects(loadModel('models/default', { signal: 5 as never }), /^Error: loadModel: signal must be an AbortSignal, got 5$/);
  // Two calls sharing one download: each signal stops its own call alone; the download stops once neither waits.
  await withEnv(hubEnv(path.join(tmp, 'cache10b')), async () => {
    const [a, b] = [new AbortController(), new AbortController()], spec = 'hf:edge/slow/model-f32.gguf';
    let started!: () => void;
    const going = new Promise<void>((r) => { started = r; }), onDownload = (d: number) => { if (d > 0) started(); };
    const [pa, pb] = [resolveModelPath(spec, { signal: a.signal, onDownload }), resolveModelPath(spec, { signal: b.signal, onDownload })];
    await going;
    a.abort(new Error('A stopped'));
    await assert.rejects(pa, /^Error: A stopped$/);
    assert.equal(await Promise.race([pb.then(() => 'done', () => 'failed'), new Promise((r) => setTimeout(() => r('waiting'), 300))]), 'waiting');
    b.abort(new Error('B stopped'));
    await assert.rejects(pb, /^Error: B stopped$/);
  });
});

test('hf:owner/name:Q4_K_M names a GGUF file by its quantisation, as llama.cpp\'s -hf does (any case, a word of the name; projectors left out; a split one by its first part)', async () => {
  const cache = path.join(tmp, 'cache11'), run = (spec: string, extra: Record<string, string | undefined> = {}) => withEnv(hubEnv(cache, extra), () => resolveModelPath(spec));
  const snapshot = path.join(cache, 'models--edge--quants', 'snapshots', SHA);
  assert.equal(await run('hf:edge/quants:F32'), path.join(snapshot, 'tiny-f32.gguf'));
  assert.equal(await run('hf:edge/quants:Q8_0'), path.join(snapshot, 'sub', 'tiny-q8_0.gguf')); // not tiny-Q8_0_L.gguf, another quantisation
  assert.equal(await run('hf:edge/quants:q4_0'), path.join(snapshot, 'tiny-Q4_0-00001-of-00002.gguf'));
  assert.ok(fs.existsSync(path.join(snapshot, 'tiny-Q4_0-00002-of-00002.gguf')));
  assert.equal(await run('hf:edge/quants:iq4_xs'), path.join(snapshot, 'IQ4_XS', 'tiny-00001-of-00001.gguf')); // by its folder's name
  // Only the files named were fetched (not the projector, the other quantisations or the README).
  assert.deepEqual(fs.readdirSync(snapshot, { recursive: true }).sort(), ['IQ4_XS', path.join('IQ4_XS', 'tiny-00001-of-00001.gguf'), 'sub', path.join('sub', 'tiny-q8_0.gguf'), 'tiny-Q4_0-00001-of-00002.gguf', 'tiny-Q4_0-00002-of-00002.gguf', 'tiny-f32.gguf']);
  await assert.rejects(run('hf:edge/quants:Q5_0'), /^Error: hub: hf:edge\/quants:Q5_0: edge\/quants has 2 GGUF files of the quantisation Q5_0: other-Q5_0\.gguf, tiny-q5_0\.gguf; name one: hf:edge\/quants\/<file>$/);
  await assert.rejects(run('hf:edge/quants:Q6_K'), /^Error: hub: hf:edge\/quants:Q6_K: edge\/quants has no GGUF file of the quantisation Q6_K \(its GGUF files: IQ4_XS\/tiny-00001-of-00001\.gguf, other-Q5_0\.gguf, sub\/tiny-q8_0\.gguf, tiny-Q4_0-00001-of-00002\.gguf, tiny-Q8_0_L\.gguf, tiny-f32\.gguf, tiny-q5_0\.gguf\)$/);
  await assert.rejects(run('hf:edge/quants:Q4/x.gguf'), /is not a Hugging Face name/);
  // A pull request's revision, as huggingface_hub names and caches it (refs/refs/pr/1).
  requests.length = 0;
  assert.equal(await run('hf:edge/quants@refs/pr/1:F32'), path.join(snapshot, 'tiny-f32.gguf'));
  assert.deepEqual([requests[0], fs.readFileSync(path.join(cache, 'models--edge--quants', 'refs', 'refs', 'pr', '1'), 'utf8')], [' /api/models/edge/quants/revision/refs%2Fpr%2F1?blobs=true', SHA]);
  assert.equal(await run('hf:edge/quants@refs/pr/1:F32', { HF_HUB_OFFLINE: '1' }), path.join(snapshot, 'tiny-f32.gguf'));
  await assert.rejects(run('hf:edge/quants@refs/heads/main'), /is not a Hugging Face name/);
  // Read from the cache alone afterwards, and loaded as the file it names.
  requests.length = 0;
  const file = await run('hf:edge/quants:f32', { HF_HUB_OFFLINE: '1' });
  assert.deepEqual([file, requests], [path.join(snapshot, 'tiny-f32.gguf'), []]);
  const [a, b] = [await loadModel(file), await loadModel(tiny.files.ggufF32)];
  try {
    assert.deepEqual((await a.complete('Hello', { maxTokens: 8 })).tokens, (await b.complete('Hello', { maxTokens: 8 })).tokens);
  } finally {
    await a.close();
    await b.close();
  }
});

test('a command\'s --out is checked before its hf: models download: a refused one costs no download', async () => {
  const cache = path.join(tmp, 'cache12'), adapter = path.join(tmp, 'an-adapter');
  fs.mkdirSync(adapter);
  fs.writeFileSync(path.join(adapter, 'adapter_config.json'), '{}');
  const cli = (...args: string[]) => run(process.execPath, ['bin/edgereason.js', ...args], { encoding: 'utf8', env: childEnv(cache) });
  requests.length = 0;
  await assert.rejects(cli('train-sft', '--model', 'hf:edge/default', '--data', 'x.jsonl', '--out', adapter), new RegExp(`--out ${adapter} already holds a model or adapter \\(adapter_config\\.json\\); choose another folder, or pass --overwrite to replace it`));
  await assert.rejects(cli('train-rl', '--model', 'hf:edge/default', '--adapter', 'hf:edge/reasoning', '--out', adapter), /already holds a model or adapter/);
  await assert.rejects(cli('convert', '--model', 'hf:edge/default', '--out', adapter), /already holds a model or adapter/);
  await assert.rejects(cli('eval', '--model', 'hf:edge/default', '--out', path.join(tmp, 'report.txt')), /--out \S+report\.txt: the report is JSON, so name it \*\.json/);
  for (const c of ['train-router', 'train-verifier']) await assert.rejects(cli(c, '--model', 'hf:edge/default', '--adapter', 'hf:edge/reasoning', '--out', `${tmp}${path.sep}`), /names a folder; expected a file/);
  assert.deepEqual(requests, []);
});

test('hf: a part another program is still writing (huggingface_hub downloading the same file) is left to it', async () => {
  const cache = path.join(tmp, 'cache13'), bytes = fs.readFileSync(path.join(tiny.dir, 'model-f32.gguf'));
  const blobs = path.join(cache, 'models--edge--tiny-gguf', 'blobs'), part = path.join(blobs, `${sibling(tiny.dir, 'model-f32.gguf').lfs!.sha256}.incomplete`);
  fs.mkdirSync(blobs, { recursive: true });
  fs.writeFileSync(part, bytes.subarray(0, 100));
  let at = 100;
  const writer = setInterval(() => { fs.appendFileSync(part, bytes.subarray(at, at + 100)); at += 100; }, 100);
  const get = () => withEnv(hubEnv(cache), () => resolveModelPath('hf:edge/tiny-gguf/model-f32.gguf'));
  try {
    await assert.rejects(get(), /^Error: hub: model-f32\.gguf: another program is downloading it \(\S+\.incomplete grows\): run this again once it has ended$/);
  } finally {
    clearInterval(writer);
  }
  // Once it stops, the download goes on from its part.
  requests.length = 0;
  assert.deepEqual(fs.readFileSync(await get()), bytes);
  assert.ok(requests.some((r) => r.startsWith(`bytes=${at}- `)), requests.join('\n'));
});
