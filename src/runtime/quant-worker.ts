/** Worker-thread side of prequantize(): quantises the weights it is sent (decoding GGUF blocks first) and sends back their blocks. */
import { parentPort } from 'node:worker_threads';
import { blocksFromGgml, quantizeBlocks } from '../onnx/quant.ts';
import { decodeGgml, type DecodableType } from '../io/gguf.ts';

parentPort!.on('message', ({ name, data, type, where, n, k, bits }: { name: string; data: Float32Array | Uint8Array; type?: DecodableType; where?: string; n: number; k: number; bits: 4 | 8 }) => {
  try {
    // With a type, `data` is the tensor's stored GGUF bytes, decoded here.
    const q = (type && blocksFromGgml(type, data as Uint8Array, n, k, bits, where)) || quantizeBlocks(type ? decodeGgml(type, data as Uint8Array, n * k) : (data as Float32Array), n, k, bits, name);
    parentPort!.postMessage({ packed: q.packed, scales: q.scales }, [q.packed.buffer as ArrayBuffer, q.scales.buffer as ArrayBuffer]);
  } catch (e) {
    parentPort!.postMessage({ error: e instanceof Error ? e.message : String(e) });
  }
});
