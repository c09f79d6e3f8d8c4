import os from 'node:os';

/** ONNX Runtime intra-op threads (and quantisation workers) unless a caller says: $EDGEREASON_THREADS, else the available CPUs, at most 8. */
export function defaultThreads(): number {
  const env = process.env.EDGEREASON_THREADS;
  if (env !== undefined && env.trim() !== '') {
    if (!/^\s*[1-9]\d*\s*$/.test(env) || Number(env) > MAX_THREADS) throw new Error(`$EDGEREASON_THREADS must be a whole number of threads from 1 to ${MAX_THREADS} (or unset: the available CPUs, at most 8), got ${JSON.stringify(env)}`);
    return Number(env);
  }
  return Math.max(1, Math.min(8, os.availableParallelism()));
}

/** The most threads a caller may ask for (ONNX Runtime takes an int; far more threads than cores only wait on each other). */
export const MAX_THREADS = 1024;

/** A note for threads beyond this machine's CPUs (each waits on the others: slower, not faster); undefined within them. */
export function threadsNote(threads: number | undefined, where: string): string | undefined {
  const cpus = os.availableParallelism();
  return threads !== undefined && threads > cpus ? `${where}: ${threads} threads on this machine's ${cpus} CPUs: threads beyond the CPUs wait on each other, which slows the model down` : undefined;
}
