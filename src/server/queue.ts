/**
 * Admission control: at most `maxRows` sequences decode at once (a request takes as many rows as it runs
 * sequences in parallel); the requests waiting for rows form a FIFO queue of at most `maxQueue`, beyond which a
 * request is refused (429). A waiting request whose client goes away leaves the queue.
 */
import { onAbort } from '../runtime/abort.ts';
import { ApiError } from './schemas.ts';

interface Waiter { rows: number; grant: (release: () => void) => void; fail: (e: Error) => void }

export class Admission {
  private used = 0;
  private waiting: Waiter[] = [];
  private running = 0;

  constructor(readonly maxRows: number, readonly maxQueue: number) {}

  get rowsInUse(): number { return this.used; }
  get queued(): number { return this.waiting.length; }
  get active(): number { return this.running; }

  /**
   * Waits for `rows` slots; resolves with a release function (idempotent) and the time waited. `onQueued` is called
   * when the request has to wait, before it joins the queue.
   */
  async acquire(rows: number, signal?: AbortSignal, onQueued?: () => void): Promise<{ release: () => void; waitedMs: number }> {
    if (rows > this.maxRows) throw new ApiError(400, `This request needs ${rows} parallel sequences (n × edgereason.samples); the server runs at most ${this.maxRows} (--max-batch).`, 'n');
    const since = performance.now();
    if (!this.waiting.length && this.used + rows <= this.maxRows) return { release: this.take(rows), waitedMs: 0 };
    if (this.waiting.length >= this.maxQueue) throw new ApiError(429, `The server is busy: ${this.running} requests running and ${this.waiting.length} queued. Retry later.`, null, 'rate_limit_error', 'queue_full');
    onQueued?.();
    let stopWaiting: (() => void) | undefined;
    const release = await new Promise<() => void>((resolve, reject) => {
      const w: Waiter = { rows, grant: resolve, fail: reject };
      this.waiting.push(w);
      stopWaiting = signal && onAbort(signal, () => {
        const i = this.waiting.indexOf(w);
        if (i >= 0) { this.waiting.splice(i, 1); reject(new ApiError(499, 'client closed the request')); this.pump(); }
      });
    }).finally(() => stopWaiting?.());
    return { release, waitedMs: performance.now() - since };
  }

  /** Refuses every waiting request (shutdown). */
  drain(error: Error): void {
    for (const w of this.waiting.splice(0)) w.fail(error);
  }

  /** Reserves rows now; the returned function gives them back (once). */
  private take(rows: number): () => void {
    this.used += rows; this.running++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.used -= rows; this.running--;
      this.pump();
    };
  }

  /** Admits waiting requests in order while their rows fit. */
  private pump(): void {
    while (this.waiting.length && this.used + this.waiting[0].rows <= this.maxRows) {
      const w = this.waiting.shift()!;
      w.grant(this.take(w.rows));
    }
  }
}
