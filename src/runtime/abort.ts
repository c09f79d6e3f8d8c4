/**
 * One 'abort' listener per signal, fanning out to every call waiting on it: an app or a request may share one
 * signal among many calls, and Node warns (MaxListenersExceededWarning) past ten listeners on an EventTarget.
 */
const waiting = new WeakMap<AbortSignal, Set<() => void>>();

/** Runs `fn` once when `signal` aborts; the returned function stops waiting. */
export function onAbort(signal: AbortSignal, fn: () => void): () => void {
  let fns = waiting.get(signal);
  if (!fns) {
    const set = new Set<() => void>();
    waiting.set(signal, (fns = set));
    signal.addEventListener('abort', () => { waiting.delete(signal); for (const f of set) f(); }, { once: true });
  }
  fns.add(fn);
  return () => { fns.delete(fn); };
}
