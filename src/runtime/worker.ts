/** Worker-thread side of WorkerBackend: owns the ONNX session and the KV caches, answers RPC messages. */
import { parentPort, workerData } from 'node:worker_threads';
import { BatchedLocalBackend } from './scheduler.ts';
import { BUSY, HALTED } from './worker-backend.ts';
import { remoteError } from './backend.ts';
import type { ModelConfig } from '../models/config.ts';
import type { EngineOptions } from './engine.ts';
import type { BuildJob } from './worker-backend.ts';

const data = workerData as { config: ModelConfig; model?: Uint8Array | string | { build: BuildJob }; opts: EngineOptions; state: Int32Array }, { state } = data;
/** One call fewer running; the parent may be waiting for none to run (worker-backend.ts's settleWorkers). */
const done = () => { if (Atomics.sub(state, BUSY, 1) === 1) Atomics.notify(state, BUSY); };
// A LocalBackend that also answers stepMany (continuous batching across requests, see scheduler.ts). Loading is
// the first call the parent counts (BUSY starts at 1).
const ready = graph().then((model) => BatchedLocalBackend.create(data.config, model, data.opts));

/** The graph: as sent, or built here from its checkpoint (off the parent's thread, which stays free meanwhile). */
async function graph(): Promise<Uint8Array | string> {
  const model = data.model!;
  if (typeof model === 'string' || model instanceof Uint8Array) return model;
  const [{ openSource }, { buildInMemory, rescaled }] = await Promise.all([import('../io/source.ts'), import('./convert.ts')]);
  const { source, ropeScaling, quant, ...build } = model.build;
  return buildInMemory(rescaled(openSource(source, { lazyTokenizer: true }), ropeScaling), quant, { ...build, onProgress: (done, total) => parentPort!.postMessage({ progress: [done, total] }) });
}
// A graph built in memory (its bytes: tens to hundreds of MB) is the session's once it exists: not kept here too.
ready.finally(() => { data.model = undefined; done(); }).catch(() => {});

parentPort!.on('message', async ({ id, method, args }: { id: number; method: string; args: unknown[] }) => {
  // Counted before HALTED is read: the parent sets HALTED, then waits while BUSY > 0 (worker-backend.ts).
  Atomics.add(state, BUSY, 1);
  if (Atomics.load(state, HALTED)) return done(); // the process is exiting: start nothing
  try {
    const backend = await ready;
    if (method === 'setAdapter' && args[0]) args[0] = new Map(args[0] as []);
    const result = await (backend as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[method](...args);
    // Float32Arrays of the result (or of each result of a stepMany) are transferred, each buffer once.
    const parts = Array.isArray(result) ? result : [result];
    const transfer = [...new Set(parts.flatMap((r) => (r && typeof r === 'object' ? Object.values(r) : []))
      .filter((v): v is Float32Array => v instanceof Float32Array).map((v) => v.buffer as ArrayBuffer))];
    parentPort!.postMessage({ id, result }, transfer);
  } catch (e) {
    parentPort!.postMessage({ id, error: remoteError(e) });
  } finally {
    done();
  }
  // The worker ends on close even when releasing the session failed (the parent waits for its exit).
  if (method === 'close') process.exit(0);
});
ready.then(() => parentPort!.postMessage({ id: 0, result: 'ready' }), (e) => parentPort!.postMessage({ id: 0, error: remoteError(e) }));
