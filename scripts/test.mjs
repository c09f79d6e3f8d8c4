// Runs the test files (test/*.test.ts, or those named) one at a time under tsx. The list is made here, not by a shell
// glob: npm runs scripts through cmd.exe on Windows, which expands none, and Node 20's test runner does not either.
// `--all` also runs the slow tier (test/helpers/tier.ts), which the default run skips.
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

process.chdir(fileURLToPath(new URL('..', import.meta.url)));
const args = process.argv.slice(2), all = args.includes('--all') || process.env.EDGEREASON_ALL_TESTS === '1';
const named = args.filter((a) => a !== '--all');
const files = named.length ? named : fs.readdirSync('test').filter((f) => f.endsWith('.test.ts')).sort().map((f) => `test/${f}`);
const run = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', ...files], { stdio: 'inherit', env: { ...process.env, EDGEREASON_ALL_TESTS: all ? '1' : '0' } });
process.exit(run.status ?? 1);
