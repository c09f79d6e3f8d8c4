#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx: no build step between `npm ci` and use.
import { register } from 'tsx/esm/api';
register();
let main;
try { ({ main } = await import('../src/cli/main.ts')); } catch (e) {
  if (e?.code !== 'EDGEREASON_PLATFORM') throw e;
  process.stderr.write(`edgereason: ${e.message}\n`);
  process.exit(1);
}
await main(process.argv);
