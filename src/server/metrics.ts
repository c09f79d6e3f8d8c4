/** Prometheus text exposition (format 0.0.4) of the server's counters, gauges and histograms. */

type Labels = Record<string, string>;
const key = (l: Labels) => Object.keys(l).sort().map((k) => `${k}="${String(l[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',');

class Metric {
  constructor(readonly name: string, readonly help: string, readonly type: 'counter' | 'gauge' | 'histogram') {}
}

export class Counter extends Metric {
  private values = new Map<string, number>();
  constructor(name: string, help: string) { super(name, help, 'counter'); }
  inc(labels: Labels = {}, by = 1): void { const k = key(labels); this.values.set(k, (this.values.get(k) ?? 0) + by); }
  get(labels: Labels = {}): number { return this.values.get(key(labels)) ?? 0; }
  render(): string[] { return [...this.values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ''} ${v}`); }
}

export class Gauge extends Metric {
  constructor(name: string, help: string, private readonly read: () => number) { super(name, help, 'gauge'); }
  render(): string[] { return [`${this.name} ${this.read()}`]; }
}

export class Histogram extends Metric {
  private counts: number[];
  private sum = 0;
  private count = 0;
  constructor(name: string, help: string, readonly buckets: number[]) {
    super(name, help, 'histogram');
    this.counts = new Array(buckets.length).fill(0);
  }
  observe(v: number): void {
    this.sum += v; this.count++;
    this.buckets.forEach((b, i) => { if (v <= b) this.counts[i]++; });
  }
  render(): string[] {
    return [
      ...this.buckets.map((b, i) => `${this.name}_bucket{le="${b}"} ${this.counts[i]}`),
      `${this.name}_bucket{le="+Inf"} ${this.count}`, `${this.name}_sum ${this.sum}`, `${this.name}_count ${this.count}`,
    ];
  }
}

const TIME_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class Metrics {
  readonly requests = new Counter('edgereason_requests_total', 'HTTP requests by route and status code');
  readonly promptTokens = new Counter('edgereason_prompt_tokens_total', 'Prompt tokens processed');
  readonly cachedTokens = new Counter('edgereason_prompt_tokens_cached_total', 'Prompt tokens read from the prompt cache instead of prefilled');
  readonly completionTokens = new Counter('edgereason_completion_tokens_total', 'Tokens generated (thinking and answer)');
  readonly reasoningTokens = new Counter('edgereason_reasoning_tokens_total', 'Tokens generated inside thinking segments');
  readonly guessedTokens = new Counter('edgereason_lookup_guessed_tokens_total', 'Tokens guessed by prompt lookup (serve --prompt-lookup) and checked in a decode step');
  readonly keptGuesses = new Counter('edgereason_lookup_kept_tokens_total', 'Guessed tokens the model drew (each a decode step saved)');
  readonly routes = new Counter('edgereason_routes_total', 'Chat requests by route taken (direct or reasoning)');
  readonly rejected = new Counter('edgereason_rejected_total', 'Requests refused because the queue was full');
  readonly cancelled = new Counter('edgereason_cancelled_total', 'Requests cancelled by a client disconnect or shutdown');
  readonly ttft = new Histogram('edgereason_time_to_first_token_seconds', 'Time from request to the first generated token', TIME_BUCKETS);
  readonly latency = new Histogram('edgereason_request_duration_seconds', 'Chat and text completion latency, request to last token', TIME_BUCKETS);
  readonly queueWait = new Histogram('edgereason_queue_wait_seconds', 'Time a request waited for batch slots', TIME_BUCKETS);
  readonly batchRows = new Histogram('edgereason_batch_rows', 'Sequences (rows) stepped per session run: batch occupancy', [1, 2, 4, 8, 16, 32, 64, 128]);
  readonly runSeconds = new Histogram('edgereason_batch_run_seconds', 'Duration of one batched session run', [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]);
  private readonly gauges: Gauge[] = [];

  gauge(name: string, help: string, read: () => number): void { this.gauges.push(new Gauge(name, help, read)); }

  render(): string {
    const all: (Counter | Gauge | Histogram)[] = [
      this.requests, this.promptTokens, this.cachedTokens, this.completionTokens, this.reasoningTokens, this.guessedTokens, this.keptGuesses, this.routes, this.rejected, this.cancelled,
      this.ttft, this.latency, this.queueWait, this.batchRows, this.runSeconds, ...this.gauges,
    ];
    return all.map((m) => [`# HELP ${m.name} ${m.help}`, `# TYPE ${m.name} ${m.type}`, ...m.render()].join('\n')).join('\n') + '\n';
  }
}
