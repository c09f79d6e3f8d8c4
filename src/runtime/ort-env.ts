/**
 * onnxruntime-node's environment, set before it loads (ort.ts imports this first). onnxruntime 1.30 on Linux and
 * macOS queues usage events in ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ and uploads them to Microsoft's
 * collector; an on-device runtime does not report to anyone unless its user asks: its telemetry is off unless
 * ORT_DISABLE_TELEMETRY is set already (ORT_DISABLE_TELEMETRY=0 turns it back on). Set on the main thread, it reaches
 * the native library, and the runtime's own worker threads inherit it. A worker thread's process.env is its own copy,
 * which the native library never reads: loaded first in a worker of the application's, edgereason cannot turn the
 * telemetry off, and says so.
 */
import { isMainThread } from 'node:worker_threads';

if (process.env.ORT_DISABLE_TELEMETRY === undefined) {
  process.env.ORT_DISABLE_TELEMETRY = '1';
  if (!isMainThread) {
    process.emitWarning('edgereason was loaded first in a worker thread, whose environment onnxruntime does not read, so onnxruntime\'s telemetry stays on: set ORT_DISABLE_TELEMETRY=1 in the process environment, or import edgereason on the main thread first', { code: 'EDGEREASON_ORT_TELEMETRY' });
  }
}
