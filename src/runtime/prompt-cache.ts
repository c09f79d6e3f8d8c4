/**
 * Prompt caching across requests: the KV caches of recent prompts are kept (per model session, up to a byte budget,
 * the least recently used dropped first), and a new prompt that begins with one of them — the conversation so far, a
 * shared system prompt — is prefilled only from where it differs. In a chat, each turn then encodes its new messages
 * instead of the whole conversation again.
 *
 * Only positions computed with the base weights are kept (a prompt before an activated adapter's invocation), so the
 * adapters of one session (Model.withAdapter) share them. A prefill continued on a kept cache computes the same
 * values as one from the start, up to float rounding (its attention and matrix products run in other shapes).
 */
import { delegateOf, type Backend, type CacheHandle } from './backend.ts';
import { grownCapacity, kvBytes } from './kv-cache.ts';

/** Default budget: MiB of kept prompt caches per model session. */
export const PROMPT_CACHE_MIB = 256;
/** A kept beginning shorter than this is not worth the copy: prefilled from the start. */
export const MIN_REUSED = 16;

interface Entry { tokens: readonly number[]; cache: CacheHandle; bytes: number; users: number; dropped: boolean }

export class PromptCache {
  /** Least recently used first. */
  private entries: Entry[] = [];
  private bytes = 0;
  private cleared = false;

  constructor(private readonly backend: Backend, readonly budget: number) {}

  /** Bytes kept now. */
  get size(): number { return this.bytes; }

  /**
   * A new one-row cache holding the longest kept beginning of `ids` (at most all but its last token: the prefill needs
   * one to give the prompt's logits; at most `limit`), and its length; undefined when none of at least MIN_REUSED
   * tokens is kept.
   */
  async take(ids: readonly number[], limit = Infinity): Promise<{ cache: CacheHandle; length: number } | undefined> {
    let best: Entry | undefined, length = 0;
    for (const e of this.entries) {
      const n = common(e.tokens, ids);
      if (n > length) [best, length] = [e, n];
    }
    length = Math.min(length, ids.length - 1, limit);
    if (!best || length < MIN_REUSED) return undefined;
    best.users++;
    try {
      const cache = await this.backend.select(best.cache, [0], length);
      if (!best.dropped) this.touch(best);
      return { cache, length };
    } catch {
      this.drop(best); // (a closed model: the prefill's own call says so)
      return undefined;
    } finally {
      best.users--;
      if (best.dropped && !best.users) this.release(best);
    }
  }

  /**
   * Keeps a copy of `cache`'s row 0, positions 0..ids.length-1 (`ids`, computed with the base weights). Best effort:
   * a copy that fails (a closed model) keeps nothing.
   */
  async put(ids: readonly number[], cache: CacheHandle): Promise<void> {
    const c = this.backend.config, bytes = kvBytes(c, 1, grownCapacity(64, ids.length));
    if (ids.length <= MIN_REUSED || bytes > this.budget || this.cleared) return;
    // All of it kept already (in a longer prompt): that one is used again, nothing copied.
    const holder = this.entries.find((e) => e.tokens.length >= ids.length && common(e.tokens, ids) === ids.length);
    if (holder) { this.touch(holder); return; }
    const copy = await this.backend.select(cache, [0], ids.length).catch(() => undefined);
    if (copy === undefined) return;
    if (this.cleared) { this.backend.free(copy).catch(() => {}); return; }
    // A kept prompt this one repeats or continues is all in this one (one kept while the copy was made too).
    for (const e of [...this.entries]) if (e.tokens.length <= ids.length && common(e.tokens, ids) === e.tokens.length) this.drop(e);
    this.entries.push({ tokens: [...ids], cache: copy, bytes, users: 0, dropped: false });
    this.bytes += bytes;
    for (const e of [...this.entries]) { if (this.bytes <= this.budget) break; this.drop(e); }
  }

  /** Drops every kept prompt, and keeps no more. */
  clear(): void {
    this.cleared = true;
    for (const e of [...this.entries]) this.drop(e);
  }

  /** Marks a kept prompt the most recently used (last). */
  private touch(e: Entry): void { this.entries.push(...this.entries.splice(this.entries.indexOf(e), 1)); }

  private drop(e: Entry): void {
    if (e.dropped) return;
    e.dropped = true;
    this.entries.splice(this.entries.indexOf(e), 1);
    this.bytes -= e.bytes;
    if (!e.users) this.release(e);
  }

  private release(e: Entry): void { this.backend.free(e.cache).catch(() => {}); }
}

/** How many first tokens two lists share. */
function common(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

const CACHES = new WeakMap<Backend, PromptCache>();

/** Sets a model session's prompt cache: `mib` MiB at most (0: none). */
export function setPromptCache(backend: Backend, mib: number): void {
  CACHES.get(backend)?.clear();
  if (mib > 0) CACHES.set(backend, new PromptCache(backend, mib * 2 ** 20));
  else CACHES.delete(backend);
}

/** The prompt cache of `backend`, or of the backend a view of it works through (an adapter's, a request's). */
export function promptCacheOf(backend: Backend): PromptCache | undefined {
  for (let b: Backend | undefined = backend; b; b = delegateOf(b)) {
    const c = CACHES.get(b);
    if (c) return c;
  }
  return undefined;
}
