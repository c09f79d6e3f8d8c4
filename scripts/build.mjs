// Builds dist/ (the package's JavaScript and type declarations) from src/ afresh: a module removed from src/
// leaves nothing behind. `--if-typescript` (npm's prepare) skips the build where TypeScript is not installed
// (`npm ci --omit=dev`): the CLI runs from src/ through tsx and does not need dist/.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
let tsc;
try { tsc = require.resolve('typescript/bin/tsc'); } catch {
  if (process.argv.includes('--if-typescript')) {
    console.log('edgereason: TypeScript is not installed (dev dependencies omitted): dist/ not built; the CLI runs from src/');
    process.exit(0);
  }
  console.error('build: TypeScript is not installed: run `npm ci` (with dev dependencies)');
  process.exit(1);
}
process.chdir(fileURLToPath(new URL('..', import.meta.url))); // a file path, not the URL's (%20 for a space; /C:/ on Windows)
fs.rmSync('dist', { recursive: true, force: true });
execFileSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
fs.copyFileSync('src/runtime/worker-entry.mjs', 'dist/runtime/worker-entry.mjs');
fs.copyFileSync('src/server/playground.html', 'dist/server/playground.html'); // createServer's page at /
