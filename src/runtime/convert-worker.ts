/**
 * Worker-thread side of convertInWorker(): converts a checkpoint (quantising on further workers), posting progress
 * and then the manifest. Every block it made is freed when the thread ends, before the model is loaded.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { fingerprint, openSource } from '../io/source.ts';
import { convertModel, prequantizeLarge, type WorkerConvertJob } from './convert.ts';

const { source, out, quant, accuracyLevel, loraTargets, ropeScaling, threads } = workerData.job as WorkerConvertJob;
const onProgress = (done: number, total: number) => parentPort!.postMessage({ progress: [done, total] });
try {
  const src = openSource(source, { lazyTokenizer: true }), blocksFrom = fingerprint(src.files); // before the blocks read any weight
  const blocks = await prequantizeLarge(src, quant, { threads, onProgress });
  parentPort!.postMessage({ manifest: convertModel(src, out, { quant, accuracyLevel, loraTargets, ropeScaling, onProgress, blocks, blocksFrom }) });
} catch (e) {
  parentPort!.postMessage({ error: { message: e instanceof Error ? e.message : String(e), code: (e as NodeJS.ErrnoException).code } });
}
