/**
 * onnxruntime-node's environment, checked and set before it loads (ort.ts imports this first): a platform it has no
 * build for is named (below), and its telemetry is switched off. onnxruntime 1.30 on Linux and macOS queues usage
 * events in ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ and uploads them to Microsoft's collector; an on-device runtime does not report to anyone unless its user asks: its telemetry is off unless
 * ORT_DISABLE_TELEMETRY is set already (ORT_DISABLE_TELEMETRY=0 turns it back on). Set on the main thread, it reaches
 * the native library, and the runtime's own worker threads inherit it. A worker thread's process.env is its own copy,
 * which the native library never reads: loaded first in a worker of the application's, edgereason cannot turn the
 * telemetry off, and says so. (On Windows onnxruntime logs through Windows' event tracing, which it has no switch for.)
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { isMainThread } from 'node:worker_threads';

/**
 * Why onnxruntime-node cannot load here, or undefined: it ships native builds for some platforms only (1.30: Linux
 * and Windows on x64 and arm64, macOS on Apple silicon), and elsewhere fails on a missing file deep in node_modules.
 * `builds`: its folder of builds (bin/napi-v6, as its binding loads them; not checked when there is none).
 */
function missingBuild(platform: string, arch: string, builds: string): string | undefined {
  if (!fs.existsSync(builds) || fs.existsSync(path.join(builds, platform, arch, 'onnxruntime_binding.node'))) return undefined;
  const have = fs.readdirSync(builds).flatMap((p) => fs.readdirSync(path.join(builds, p)).map((a) => `${p}/${a}`));
  const intelMac = platform === 'darwin' && arch === 'x64' ? ' (an Intel Mac; Macs with Apple silicon are supported)' : '';
  return `onnxruntime-node, which runs edgereason's models, has no build for ${platform}/${arch}${intelMac}: it ships builds for ${have.join(', ')}`;
}

const ortBuilds = path.join(path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json')), 'bin', 'napi-v6');
const missing = missingBuild(process.platform, process.arch, ortBuilds);
if (missing) throw Object.assign(new Error(missing), { code: 'EDGEREASON_PLATFORM' }); // bin/edgereason.js says it in one line

if (process.env.ORT_DISABLE_TELEMETRY === undefined) {
  process.env.ORT_DISABLE_TELEMETRY = '1';
  if (!isMainThread) {
    process.emitWarning('edgereason was loaded first in a worker thread, whose environment onnxruntime does not read, so onnxruntime\'s telemetry stays on: set ORT_DISABLE_TELEMETRY=1 in the process environment, or import edgereason on the main thread first', { code: 'EDGEREASON_ORT_TELEMETRY' });
  }
}
