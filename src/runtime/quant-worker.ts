/** Worker-thread side of prequantize(): quantises the weights it is sent and sends back their 4-bit blocks. */
import { parentPort } from 'node:worker_threads';
import { quantizeQ4 } from '../onnx/quant.ts';

parentPort!.on('message', ({ name, data, n, k }: { name: string; data: Float32Array; n: number; k: number }) => {
  try {
    const q = quantizeQ4(data, n, k, name);
    parentPort!.postMessage({ packed: q.packed, scales: q.scales }, [q.packed.buffer as ArrayBuffer, q.scales.buffer as ArrayBuffer]);
  } catch (e) {
    parentPort!.postMessage({ error: e instanceof Error ? e.message : String(e) });
  }
});
