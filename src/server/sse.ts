/**
 * Server-sent events for streamed chat completions and completions: `data: <json>\n\n` per chunk, `data: [DONE]` at
 * the end, and a comment line (`: keep-alive`, which clients skip) after each `keepAliveMs` without a chunk, so that
 * a proxy's idle timeout does not cut a stream that is thinking or voting before its next chunk.
 */
import type { ServerResponse } from 'node:http';

/** Milliseconds a stream may go without a byte before it sends a keep-alive comment (nginx cuts after 60 s by default). */
export const KEEP_ALIVE_MS = 15_000;

/**
 * Milliseconds a reply's client may go without reading while what the server wrote waits for it: a client that stopped
 * reading holds it in the server's memory (the decoding does not wait for any one client), so then it is cut off.
 */
export const UNREAD_MS = 60_000;

/**
 * Cuts the connection of `res` once its client has read nothing for `ms` while its reply waits to be written (a slow
 * reader that keeps reading is not cut); from when the reply is complete, so a long thinking silence is not counted.
 */
export function cutOffWhenStalled(res: ServerResponse, ms = UNREAD_MS): void {
  const socket = res.socket;
  if (!socket || typeof socket.setTimeout !== 'function' || res.writableFinished) return;
  const cut = () => socket.destroy();
  socket.setTimeout(ms, cut);
  // All written: Node sets the kept-alive socket's own timeout for the next request (at 'finish', before this).
  res.once('finish', () => socket.off('timeout', cut));
}

export class SseWriter {
  private ended = false;
  private readonly beat?: NodeJS.Timeout;

  constructor(private readonly res: ServerResponse, headers: Record<string, string> = {}, keepAliveMs = KEEP_ALIVE_MS, private readonly unreadMs = UNREAD_MS) {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      ...headers,
    });
    res.flushHeaders();
    if (keepAliveMs > 0) { // (0: none)
      this.beat = setInterval(() => { if (this.open) this.res.write(': keep-alive\n\n'); }, keepAliveMs).unref();
      res.once('close', () => clearInterval(this.beat)); // a client gone before end() stops it too
    }
  }

  /** False once the client is gone or the stream has ended. */
  get open(): boolean { return !this.ended && !this.res.destroyed && this.res.writable; }

  send(data: unknown): void {
    if (!this.open) return;
    this.res.write(`data: ${JSON.stringify(data)}\n\n`);
    this.beat?.refresh(); // the next comment only after another quiet spell
  }

  /** Ends the stream with `data: [DONE]`. */
  done(): void {
    if (this.open) this.res.write('data: [DONE]\n\n');
    this.end();
  }

  end(): void {
    clearInterval(this.beat);
    if (this.ended) return;
    this.ended = true;
    if (this.res.destroyed) return;
    this.res.end();
    cutOffWhenStalled(this.res, this.unreadMs);
  }
}
