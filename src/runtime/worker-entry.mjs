// Plain-JS entry of the runtime worker: the built JS beside it (dist/), or else the TypeScript sources through
// tsx, however the parent was started.
import { existsSync } from 'node:fs';
const built = new URL('./worker.js', import.meta.url);
if (existsSync(built)) await import(built.href);
else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('./worker.ts');
}
