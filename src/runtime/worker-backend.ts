/** Backend that runs the engine in a worker thread: calls are RPC messages, results come back transferred. */
import { Worker } from 'node:worker_threads';
import { fromRemote, type RemoteError } from './backend.ts';
import { again, CLOSED, ModelClosedError, RuntimeFailedError } from './errors.ts';
import type { ModelConfig, Projection, RopeScalingChoice } from '../models/config.ts';
import type { Quant } from '../onnx/quant.ts';
import type { Backend, CacheHandle, KVFileRow, KVRow, StepRequest, StepResult } from './backend.ts';
import type { AdapterTensors, EngineOptions } from './engine.ts';
import type { StepManyResult } from './scheduler.ts';

/**
 * Each worker's state, shared with it: calls it is running (BUSY) and whether it may start more (HALTED). A process
 * that exits while a worker is inside an onnxruntime call aborts (SIGABRT) instead of exiting with its own code: on
 * exit (process.exit, or the end of the program; a signal handler exits through process.exit), the workers are halted and the
 * exit waits for the calls they are running (at most EXIT_WAIT_MS).
 */
const workers = new Set<Int32Array>();
export const BUSY = 0, HALTED = 1;
const EXIT_WAIT_MS = 10_000;
let exitHook = false;

function settleWorkers(): void {
  const until = Date.now() + EXIT_WAIT_MS;
  for (const w of workers) Atomics.store(w, HALTED, 1);
  for (const w of workers) {
    for (let busy = Atomics.load(w, BUSY); busy > 0 && Date.now() < until; busy = Atomics.load(w, BUSY)) Atomics.wait(w, BUSY, busy, until - Date.now());
  }
}

/** A checkpoint whose graph the worker builds itself (loadModel's in-memory path): what Model.open would build it with. */
export interface BuildJob { source: string; ropeScaling?: RopeScalingChoice; quant: Quant; accuracyLevel?: number; loraTargets: Projection[]; threads?: number }

export class WorkerBackend implements Backend {
  private pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  private next = 1;
  /** Why calls are refused once the model is closed or the worker is gone; undefined while it serves. */
  private gone?: string;
  private closing?: Promise<void>;

  private constructor(readonly config: ModelConfig, readonly hasLora: boolean, private readonly worker: Worker) {}

  /**
   * `model`: an ONNX file's path, its bytes, which move to the worker (the caller's buffer is emptied, not copied), or
   * a checkpoint to build the graph from there (`build`: the main thread stays free while it is built; `onProgress` gets its progress).
   */
  static async create(config: ModelConfig, model: Uint8Array | string | { build: BuildJob }, opts: EngineOptions & { hasLora: boolean }, onProgress?: (done: number, total: number) => void): Promise<WorkerBackend> {
    if (model instanceof Uint8Array && !model.byteLength) throw new Error('runtime: the model\'s ONNX bytes are empty (a buffer already moved to another worker?)');
    const transfer = model instanceof Uint8Array ? [model.buffer as ArrayBuffer] : [];
    const state = new Int32Array(new SharedArrayBuffer(8));
    Atomics.store(state, BUSY, 1); // loading: the worker's first call
    const worker = new Worker(new URL('./worker-entry.mjs', import.meta.url), { workerData: { config, model, opts, state }, transferList: transfer });
    if (!exitHook) { exitHook = true; process.on('exit', settleWorkers); }
    workers.add(state);
    worker.once('exit', () => workers.delete(state));
    const backend = new WorkerBackend(config, opts.hasLora, worker);
    // The load's progress: not kept past the load (a callback holding the app's objects would keep the model from
    // being collected), and one that throws fails the load, as it would where the graph is built on the caller's thread.
    // (It fails the load once the worker has loaded: ended while it builds, onnxruntime could take the process down.)
    let progress = onProgress, progressFailed: unknown;
    worker.on('message', (m: { id: number; result?: unknown; error?: RemoteError; progress?: [number, number] }) => {
      if (m.progress) {
        try { progress?.(...m.progress); } catch (e) { progress = undefined; progressFailed = e; }
        return;
      }
      const p = backend.pending.get(m.id);
      if (!p) return;
      backend.pending.delete(m.id);
      if (!backend.pending.size && !backend.closing) worker.unref(); // a closing worker stays referenced until it exits
      if (m.error !== undefined) p.reject(fromRemote(m.error)); else p.resolve(m.result);
    });
    // Once the worker is gone, every pending call and every later one is rejected (none waits forever).
    worker.on('error', (e) => backend.fail(`runtime worker failed: ${e.message}`));
    worker.on('exit', (code) => backend.fail(`runtime worker exited with code ${code}`));
    try {
      await new Promise((resolve, reject) => backend.pending.set(0, { resolve, reject }));
      progress = undefined;
      if (progressFailed !== undefined) throw progressFailed;
    } catch (e) {
      progress = undefined;
      backend.gone ??= 'runtime: the model failed to load';
      // The load's answer left the worker unref'd (no call pending): referenced again, the event loop waits for its
      // exit; terminated, it cannot keep the process alive.
      worker.ref();
      await worker.terminate();
      throw e;
    }
    // Idle, the worker does not keep the process alive (as an idle socket would not): a script that forgets
    // close() still exits. It is referenced again while a call is in flight.
    worker.unref();
    return backend;
  }

  /** Why the worker is gone when it ended by itself (not by close()): every call is refused. */
  get failed(): string | undefined { return this.gone !== undefined && this.gone !== CLOSED ? this.gone : undefined; }

  /** What calls are refused with once the worker is gone: closed by close(), or ended by itself. */
  private refusal(): Error { return this.gone === CLOSED ? new ModelClosedError() : new RuntimeFailedError(this.gone); }

  private fail(why: string): void {
    this.gone ??= why;
    for (const p of this.pending.values()) p.reject(this.refusal());
    this.pending.clear();
  }

  private async call<T>(method: string, ...args: unknown[]): Promise<T> {
    if (this.gone) throw this.refusal();
    const id = this.next++;
    try {
      return await new Promise<T>((resolve, reject) => {
        if (!this.pending.size) this.worker.ref();
        this.pending.set(id, { resolve, reject });
        try {
          this.worker.postMessage({ id, method, args });
        } catch (e) { // a value that cannot be sent (DataCloneError): nothing is pending, nothing keeps the process alive
          this.pending.delete(id);
          if (!this.pending.size && !this.closing) this.worker.unref();
          reject(e);
        }
      });
    } catch (e) {
      // Thrown again here, so that its stack holds the caller's frames (V8's async stack); the worker's is its cause.
      throw again(e);
    }
  }

  newCache(rows: number): Promise<CacheHandle> { return this.call('newCache', rows); }
  step(cache: CacheHandle, req: StepRequest): Promise<StepResult> { return this.call('step', cache, req); }
  /** Several caches in one call (the worker batches their decode steps into one session run). */
  stepMany(caches: CacheHandle[], reqs: StepRequest[]): Promise<StepManyResult[]> { return this.call('stepMany', caches, reqs); }
  select(cache: CacheHandle, rows: number[], length?: number): Promise<CacheHandle> { return this.call('select', cache, rows, length); }
  gather(caches: (CacheHandle | null)[]): Promise<CacheHandle> { return this.call('gather', caches); }
  keep(cache: CacheHandle, rows: number[]): Promise<void> { return this.call('keep', cache, rows); }
  exportRow(cache: CacheHandle, row: number, length: number): Promise<KVRow> { return this.call('exportRow', cache, row, length); }
  importRow(kv: KVFileRow): Promise<CacheHandle> { return this.call('importRow', kv); }
  truncate(cache: CacheHandle, row: number, length: number): Promise<void> { return this.call('truncate', cache, row, length); }
  lengths(cache: CacheHandle): Promise<number[]> { return this.call('lengths', cache); }
  free(cache: CacheHandle): Promise<void> { return this.call('free', cache); }
  setAdapter(adapter: AdapterTensors | null, name?: string): Promise<void> { return this.call('setAdapter', adapter ? [...adapter] : null, name); }

  /** Releases the session and ends the worker; calls made from now on are rejected. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    if (this.gone) return Promise.resolve(); // the worker has already exited
    const exited = new Promise<void>((r) => this.worker.once('exit', () => r()));
    const bye = this.call('close');
    this.gone = CLOSED;
    // Set before the worker can answer: the message handler leaves a closing worker referenced until it exits.
    return (this.closing = bye.catch(() => undefined).then(() => exited));
  }
}
