/**
 * The package as a user's project sees it: `import ... from 'edgereason'` resolves to the built JS and
 * declarations in dist/ (`npm run build`, run by `npm ci` and `npm test`), which plain node runs without tsx and
 * which a strict TypeScript project type-checks, README example included.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const dist = path.join(root, 'dist', 'index.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-package-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A user's project folder with edgereason installed (a link, as `npm i <path>` makes). */
function consumer(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(tmp, 'app-'));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(root, path.join(dir, 'node_modules', 'edgereason'));
  fs.writeFileSync(path.join(dir, 'package.json'), '{ "type": "module" }\n');
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  return dir;
}

test('the built package exports what src/index.ts exports', async () => {
  assert.ok(fs.existsSync(dist), `${dist} is missing: run \`npm run build\``);
  const built = await import(new URL('../dist/index.js', import.meta.url).href), src = await import('../src/index.ts');
  assert.deepEqual(Object.keys(built).sort(), Object.keys(src).sort());
});

test('a CommonJS project requires the package where Node loads ES modules with require (20.19+): nothing at the top level awaits (Vega loads with the first plot)', { skip: !(process.features as { require_module?: boolean }).require_module && 'this Node cannot require ES modules' }, () => {
  const dir = consumer({ 'app.cjs': `const e = require('edgereason');\nconsole.log(typeof e.loadModel, typeof e.runEval, typeof e.trainSft);\n` });
  const run = spawnSync(process.execPath, ['app.cjs'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  assert.deepEqual([run.status, run.stdout, run.stderr], [0, 'function function function\n', '']);
});

test('plain node (no tsx) runs the package: a model loads in its worker thread (or from a copy converted on the conversion thread) and answers as from the sources, which use the same copy', async () => {
  const script = `import { loadModel } from 'edgereason';
for (const opts of [{}, { cache: 'always', cacheDir: 'cache' }]) {
  const m = await loadModel(${JSON.stringify(path.join(root, 'models/default'))}, opts);
  const c = await m.complete('Tom has 3 apples and buys 4 more. How many apples does he have?', { chat: true, maxTokens: 12 });
  console.log(JSON.stringify(c.tokens));
  await m.close();
}
`;
  const dir = consumer({ 'app.mjs': script });
  const run = spawnSync(process.execPath, ['app.mjs'], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, 0, run.stderr);
  assert.equal(fs.readdirSync(path.join(dir, 'cache/converted')).length, 1);
  const { loadModel } = await import('../src/index.ts');
  // The CLI runs the sources: it must take the built package's copy as its own, not convert the model again.
  const notes: string[] = [];
  await (await loadModel(path.join(root, 'models/default'), { cache: 'always', cacheDir: path.join(dir, 'cache'), onNote: (n) => notes.push(n) })).close();
  assert.deepEqual(notes.map((n) => n.split(' of ')[0]), ['model: using the converted copy']);
  const m = await loadModel(path.join(root, 'models/default'), { worker: false });
  try {
    const c = await m.complete('Tom has 3 apples and buys 4 more. How many apples does he have?', { chat: true, maxTokens: 12 });
    assert.deepEqual(run.stdout.trim().split('\n'), [JSON.stringify(c.tokens), JSON.stringify(c.tokens)]);
  } finally {
    await m.close();
  }
});

test('plain node runs the built server (createServer): the API answers and the playground is served', () => {
  const script = `import { createServer } from 'edgereason';
const server = await createServer({ model: ${JSON.stringify(path.join(root, 'models/default'))}, port: 0 });
const url = await server.listen();
const page = await fetch(url + '/');
const reply = await (await fetch(url + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ messages: [{ role: 'user', content: 'Reverse the word sand.' }], temperature: 0, edgereason: { reasoning: 'off' } }) })).json();
console.log(JSON.stringify([page.status, (await page.text()).includes('<html'), reply.choices[0].message.content]));
await server.close();
`;
  const run = spawnSync(process.execPath, ['app.mjs'], { cwd: consumer({ 'app.mjs': script }), encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual(JSON.parse(run.stdout), [200, true, 'dnas']);
});

test('plain node runs the built quantisation workers (prequantize), which make the same blocks as quantizeQ4', () => {
  const script = `import { prequantize } from ${JSON.stringify(path.join(root, 'dist/runtime/prequantize.js'))};
import { quantizeQ4 } from ${JSON.stringify(path.join(root, 'dist/onnx/quant.js'))};
const w = Float32Array.from({ length: 64 * 96 }, (_, i) => Math.sin(i));
const src = { names: ['w'], has: (n) => n === 'w', shape: () => [64, 96], get: () => w };
const [q] = [(await prequantize(src, ['w'], { threads: 2 })).get('w')], ref = quantizeQ4(w, 64, 96);
console.log(Buffer.from(q.packed).equals(Buffer.from(ref.packed)) && Buffer.from(new Uint8Array(q.scales.buffer)).equals(Buffer.from(new Uint8Array(ref.scales.buffer))));
`;
  const dir = consumer({ 'q.mjs': script });
  const run = spawnSync(process.execPath, ['q.mjs'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  assert.equal(run.status, 0, run.stderr);
  assert.equal(run.stdout.trim(), 'true');
});

test('a strict TypeScript project type-checks the README example against the declarations, and names the types the server\'s options and results use', () => {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const example = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(example?.includes("from 'edgereason'"), 'README has a ```ts example importing edgereason');
  const tsconfig = {
    compilerOptions: {
      target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true,
      noUncheckedIndexedAccess: true, exactOptionalPropertyTypes: true, skipLibCheck: false,
      types: ['node'], typeRoots: [path.join(root, 'node_modules/@types')],
    },
    files: ['app.ts'],
  };
  const serverTypes = `import type { AdapterSpec, Admission, BlockWeight, ChatLimits, EdgeServer, EffortBudgets, JsonConstraint, Metrics, Served, ServedModel, ServerOptions } from 'edgereason';
const budgets: Partial<EffortBudgets> = { low: 32 };
const options: ServerOptions = { model: defaultModel.dir, adapters: [{ name: 'reasoning', dir: defaultModel.adapter } satisfies AdapterSpec], effortBudgets: budgets };
type Parts = [EdgeServer['served'] extends Served ? ServedModel : never, EdgeServer['limits'] extends ChatLimits ? Metrics | Admission : never, BlockWeight, JsonConstraint];
export const checked: [ServerOptions, Parts?] = [options];
`;
  const dir = consumer({ 'app.ts': `${serverTypes}${example}\nexport {};\n`, 'tsconfig.json': JSON.stringify(tsconfig) });
  const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', dir], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(tsc.status, 0, `tsc: ${tsc.stdout}${tsc.stderr}`);
});

test('a user\'s project runs the README example on the embedded default, found through the package (defaultModel), and exits', async () => {
  const example = /```ts\n([\s\S]*?)```/.exec(fs.readFileSync(path.join(root, 'README.md'), 'utf8'))?.[1] ?? '';
  const imports = example.split('\n')[0], start = example.indexOf('// the embedded default model');
  assert.ok(imports.startsWith('import ') && start > 0, 'README\'s ```ts example begins with its import and has the embedded-model part');
  const dir = consumer({ 'app.mjs': `${imports}\n${example.slice(start)}` });
  const run = spawnSync(process.execPath, ['app.mjs'], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /^reasoning /); // reasoning: "on"
  // "auto" on a chat request, greedy: answered directly (the last line; the model was not closed: the process exits all the same)
  assert.match(run.stdout, /\ndirect dnas 0\.\d+ undefined\n$/);
  const { defaultModel } = await import('../src/index.ts');
  assert.equal(defaultModel.dir, path.join(root, 'models', 'default'));
});
