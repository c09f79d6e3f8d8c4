/** Worker-thread side of prequantize(): quantises the weights it is sent and sends back their blocks. */
import { parentPort } from 'node:worker_threads';
import { quantizeBlocks } from '../onnx/quant.ts';

parentPort!.on('message', ({ name, data, n, k, bits }: { name: string; data: Float32Array; n: number; k: number; bits: 4 | 8 }) => {
  try {
    const q = quantizeBlocks(data, n, k, bits, name);
    parentPort!.postMessage({ packed: q.packed, scales: q.scales }, [q.packed.buffer as ArrayBuffer, q.scales.buffer as ArrayBuffer]);
  } catch (e) {
    parentPort!.postMessage({ error: e instanceof Error ? e.message : String(e) });
  }
});
