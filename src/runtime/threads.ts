import os from 'node:os';

/** ONNX Runtime intra-op threads (and quantisation workers) unless a caller says: $EDGEREASON_THREADS, else the available CPUs, at most 8. */
export function defaultThreads(): number {
  const env = process.env.EDGEREASON_THREADS;
  if (env !== undefined && env.trim() !== '') {
    if (!/^\s*[1-9]\d*\s*$/.test(env)) throw new Error(`$EDGEREASON_THREADS must be a whole number of threads ≥ 1 (or unset: the available CPUs, at most 8), got ${JSON.stringify(env)}`);
    return Number(env);
  }
  return Math.max(1, Math.min(8, os.availableParallelism()));
}
