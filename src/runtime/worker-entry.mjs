// Plain-JS entry of the runtime's worker threads: the built JS beside it (dist/), or else the TypeScript sources
// through tsx, however the parent was started. workerData.entry names the module (default: the engine's worker).
import { existsSync } from 'node:fs';
import { workerData } from 'node:worker_threads';
const entry = workerData?.entry ?? 'worker';
const built = new URL(`./${entry}.js`, import.meta.url);
if (existsSync(built)) await import(built.href);
else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(`./${entry}.ts`);
}
