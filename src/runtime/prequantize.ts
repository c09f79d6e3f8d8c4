/**
 * The 4-bit blocks of a checkpoint's q4 weights, quantised in parallel on worker threads (the graph builder then
 * takes them instead of quantising one weight after another on the main thread): the main thread reads each
 * weight, a free worker quantises it. The blocks are exactly quantizeQ4's.
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { PROJECTIONS, projectionTensorName, type ModelConfig } from '../models/config.ts';
import { Q4_BLOCK, type Q4Weight } from '../onnx/quant.ts';
import type { WeightSource } from '../io/weights.ts';

/** The weights a q4 graph stores in 4-bit blocks: projections, the embedding table, an untied lm_head. */
export function q4WeightNames(c: ModelConfig, weights: WeightSource): string[] {
  const names = ['model.embed_tokens.weight', ...Array.from({ length: c.numLayers }, (_, l) => PROJECTIONS.map((p) => `${projectionTensorName(l, p)}.weight`)).flat()];
  if (!c.tieWordEmbeddings && weights.has('lm_head.weight')) names.push('lm_head.weight');
  return names.filter((n) => weights.has(n) && weights.shape(n).length === 2 && weights.shape(n)[1] % Q4_BLOCK === 0);
}

export async function prequantize(weights: WeightSource, names: string[], o: { threads?: number; onWeights?: (done: number) => void } = {}): Promise<Map<string, Q4Weight>> {
  const out = new Map<string, Q4Weight>();
  const count = Math.max(1, Math.min(o.threads ?? os.availableParallelism(), 8, names.length));
  const workers = Array.from({ length: count }, () => new Worker(new URL('./worker-entry.mjs', import.meta.url), { workerData: { entry: 'quant-worker' } }));
  let done = 0;
  try {
    const run = (w: Worker, name: string): Promise<void> => new Promise((resolve, reject) => {
      // A copy, transferred: the source may keep (and reuse) its own buffer, and structured cloning a large array
      // costs several times a memcpy (4 s vs 0.3 s for 622 MB here).
      const [n, k] = weights.shape(name), data = weights.get(name).slice();
      const onError = (e: Error) => reject(e);
      w.once('error', onError);
      w.once('message', (m: { packed?: Uint8Array; scales?: Float32Array; error?: string }) => {
        w.off('error', onError);
        if (m.error !== undefined) return reject(new Error(m.error));
        out.set(name, { n, k, packed: m.packed!, scales: m.scales! });
        o.onWeights?.((done += n * k));
        resolve();
      });
      w.postMessage({ name, data, n, k }, [data.buffer as ArrayBuffer]);
    });
    let next = 0;
    // Each worker takes the next weight as soon as it is free; at most one weight per worker is in memory unquantised.
    await Promise.all(workers.map(async (w) => { while (next < names.length) await run(w, names[next++]); }));
    return out;
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
