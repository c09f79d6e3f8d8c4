// Runs the test files (test/*.test.ts, or those named) one at a time under tsx. The list is made here, not by a shell
// glob: npm runs scripts through cmd.exe on Windows, which expands none, and Node 20's test runner does not either.
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

process.chdir(fileURLToPath(new URL('..', import.meta.url)));
const named = process.argv.slice(2);
const files = named.length ? named : fs.readdirSync('test').filter((f) => f.endsWith('.test.ts')).sort().map((f) => `test/${f}`);
const run = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', ...files], { stdio: 'inherit' });
process.exit(run.status ?? 1);
