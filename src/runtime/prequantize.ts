/**
 * The 4- or 8-bit blocks of a checkpoint's q4 / q8 weights, quantised in parallel on worker threads (the graph
 * builder then takes them instead of quantising one weight after another on the main thread): the main thread
 * reads each weight, a free worker quantises it. The blocks are exactly quantizeBlocks' (a GGUF's Q4_0 / Q8_0
 * tensors are not quantised again: blocksFromGgml repacks them).
 */
import { Worker } from 'node:worker_threads';
import { PROJECTIONS, projectionTensorName, type ModelConfig } from '../models/config.ts';
import { QBLOCK, type BlockWeight } from '../onnx/quant.ts';
import type { WeightSource } from '../io/weights.ts';
import { defaultThreads } from './threads.ts';

/** The weights a q4 / q8 graph stores in blocks: projections, the embedding table, an untied lm_head. */
export function blockWeightNames(c: ModelConfig, weights: WeightSource): string[] {
  const names = ['model.embed_tokens.weight', ...Array.from({ length: c.numLayers }, (_, l) => PROJECTIONS.map((p) => `${projectionTensorName(l, p)}.weight`)).flat()];
  if (!c.tieWordEmbeddings && weights.has('lm_head.weight')) names.push('lm_head.weight');
  return names.filter((n) => weights.has(n) && weights.shape(n).length === 2 && weights.shape(n)[1] % QBLOCK === 0);
}

/** Weights a slice of a large tensor holds at most (64 MB as float32), where its source reads rows apart (WeightSource.rows). */
export const SLICE_WEIGHTS = 1 << 24;

export async function prequantize(weights: WeightSource, names: string[], o: { bits?: 4 | 8; threads?: number; onWeights?: (done: number) => void; slice?: number } = {}): Promise<Map<string, BlockWeight>> {
  const bits = o.bits ?? 4, slice = o.slice ?? SLICE_WEIGHTS;
  const out = new Map<string, BlockWeight>();
  // Jobs: whole tensors, or row slices of a large one (blocks never span rows: each slice's blocks are its rows').
  const jobs: { name: string; from: number; to: number }[] = [];
  for (const name of names) {
    const [n, k] = weights.shape(name), step = weights.rows && !weights.encoded?.(name) ? Math.max(1, Math.floor(slice / k)) : n;
    for (let from = 0; from < n; from += step) jobs.push({ name, from, to: Math.min(n, from + step) });
    out.set(name, { n, k, bits, packed: new Uint8Array((n * k * bits) / 8), scales: new Float32Array((n * k) / QBLOCK) });
  }
  const count = Math.max(1, Math.min(o.threads ?? defaultThreads(), 8, jobs.length)); // each worker holds a job in flight
  const workers = Array.from({ length: count }, () => new Worker(new URL('./worker-entry.mjs', import.meta.url), { workerData: { entry: 'quant-worker' } }));
  let done = 0;
  try {
    const run = (w: Worker, { name, from, to }: (typeof jobs)[number]): Promise<void> => new Promise((resolve, reject) => {
      // Transferred, since structured cloning a large array costs several times a memcpy (4 s vs 0.3 s for 622 MB
      // here): a file's own fresh array, or else a copy (the source may keep and reuse its buffer).
      // A GGUF tensor goes as stored, decoded by the worker (in parallel; quantised blocks are 4–8× fewer bytes).
      const [n, k] = weights.shape(name), rows = to - from, encoded = weights.encoded?.(name);
      const data = encoded?.bytes ?? (rows < n ? weights.rows!(name, from, to) : weights.fresh ? weights.get(name) : weights.get(name).slice());
      const onError = (e: Error) => reject(e);
      w.once('error', onError);
      w.once('message', (m: { packed?: Uint8Array; scales?: Float32Array; error?: string }) => {
        w.off('error', onError);
        if (m.error !== undefined) return reject(new Error(m.error));
        const b = out.get(name)!;
        b.packed.set(m.packed!, (from * k * bits) / 8);
        b.scales.set(m.scales!, (from * k) / QBLOCK);
        o.onWeights?.((done += rows * k));
        resolve();
      });
      w.postMessage({ name, data, type: encoded?.type, where: encoded?.where ?? `tensor "${name}"`, n: rows, k, bits }, [data.buffer as ArrayBuffer]);
    });
    // Each worker takes the next job as soon as it is free; at most one job per worker is in memory unquantised (a
    // slice of a large weight where the source reads rows: a 0.5B's first load peaked 450 MB higher with its whole
    // float32 embedding table in flight). Largest weights first: where one goes whole (a GGUF's, a source without
    // rows), the embedding table and lm_head (2.2 GB each as float32 in a 7B) are read while few blocks are held, not
    // at the end on top of all of them (a 7B's first load: peak RSS 8.8 → 7.1 GB).
    const size = (name: string) => weights.shape(name).reduce((a, b) => a * b, 1);
    const order = jobs.map((j, i) => ({ j, i })).sort((a, b) => size(b.j.name) - size(a.j.name) || a.i - b.i).map(({ j }) => j);
    let next = 0;
    await Promise.all(workers.map(async (w) => { while (next < order.length) await run(w, order[next++]); }));
    return out;
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
