/** Server-sent events for streamed chat completions and completions: `data: <json>\n\n` per chunk, `data: [DONE]` at the end. */
import type { ServerResponse } from 'node:http';

export class SseWriter {
  private ended = false;

  constructor(private readonly res: ServerResponse, headers: Record<string, string> = {}) {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      ...headers,
    });
    res.flushHeaders();
  }

  /** False once the client is gone or the stream has ended. */
  get open(): boolean { return !this.ended && !this.res.destroyed && this.res.writable; }

  send(data: unknown): void {
    if (this.open) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** Ends the stream with `data: [DONE]`. */
  done(): void {
    if (this.open) this.res.write('data: [DONE]\n\n');
    this.end();
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.res.destroyed) this.res.end();
  }
}
