import os from 'node:os';

/** ONNX Runtime intra-op threads (and quantisation workers) unless a caller says: $EDGEREASON_THREADS, else the available CPUs, at most 8. */
export function defaultThreads(): number {
  const env = Number(process.env.EDGEREASON_THREADS);
  if (env > 0) return env;
  return Math.max(1, Math.min(8, os.availableParallelism()));
}
