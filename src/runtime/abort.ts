/**
 * One 'abort' listener per signal, fanning out to every call waiting on it: an app or a request may share one
 * signal among many calls, and Node warns (MaxListenersExceededWarning) past ten listeners on an EventTarget.
 * The listener goes when the last call stops waiting: Node keeps a signal made by AbortSignal.any (or .timeout)
 * alive while it has one, with everything the listener reaches.
 */
const waiting = new WeakMap<AbortSignal, { fns: Set<() => void>; listener: () => void }>();

/** Runs `fn` once when `signal` aborts (now, when it already has); the returned function stops waiting. */
export function onAbort(signal: AbortSignal, fn: () => void): () => void {
  if (signal.aborted) { fn(); return () => {}; }
  let entry = waiting.get(signal);
  if (!entry) {
    const fns = new Set<() => void>();
    entry = { fns, listener: () => { waiting.delete(signal); for (const f of fns) f(); } };
    waiting.set(signal, entry);
    signal.addEventListener('abort', entry.listener, { once: true });
  }
  const e = entry;
  e.fns.add(fn);
  return () => {
    e.fns.delete(fn);
    if (!e.fns.size && waiting.get(signal) === e) { waiting.delete(signal); signal.removeEventListener('abort', e.listener); }
  };
}
