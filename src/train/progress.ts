/**
 * Training progress: step/total, loss, tokens/s and ETA on a cli-progress bar; when the stream is not a TTY (a
 * log file, CI) one plain line every `logEverySec` seconds instead. Nothing when `quiet` is set; `onUpdate`
 * receives the numbers either way (tests, logs).
 */
import cliProgress from 'cli-progress';

export interface ProgressInfo {
  step: number;
  total: number;
  loss?: number;
  /** Tokens per second since the reporter started. */
  tokensPerSec: number;
  /** Seconds left, extrapolated from the steps taken since the start; undefined before the first step. */
  etaSec?: number;
  elapsedSec: number;
}

export interface ProgressOptions {
  quiet?: boolean;
  stream?: NodeJS.WriteStream;
  onUpdate?: (p: ProgressInfo) => void;
  /** First step (when resuming), so speed and ETA count only this run's steps. */
  startStep?: number;
  /** Clock in milliseconds (injectable for tests). */
  now?: () => number;
  /** Seconds between plain progress lines when the stream is not a TTY (default 30). */
  logEverySec?: number;
}

export function formatSeconds(s: number | undefined): string {
  if (s === undefined || !Number.isFinite(s)) return '--';
  const t = Math.round(s), h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), sec = t % 60;
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

export class Progress {
  private readonly bar?: cliProgress.SingleBar;
  private readonly now: () => number;
  private readonly t0: number;
  private readonly startStep: number;
  private tokens = 0;
  private readonly logStream?: NodeJS.WriteStream;
  private lastLog: number;

  constructor(readonly total: number, private readonly opts: ProgressOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.t0 = this.now();
    this.startStep = opts.startStep ?? 0;
    const stream = opts.stream ?? process.stderr;
    this.lastLog = this.t0;
    if (!opts.quiet && !stream.isTTY) this.logStream = stream;
    if (!opts.quiet && stream.isTTY) {
      this.bar = new cliProgress.SingleBar({
        stream, hideCursor: true, clearOnComplete: false,
        format: 'train |{bar}| {value}/{total} | loss {loss} | {tps} tok/s | ETA {eta_s}',
      }, cliProgress.Presets.shades_classic);
      this.bar.start(total, this.startStep, { loss: '-', tps: '0', eta_s: '--' });
    }
  }

  /** Report that `step` steps are done, `tokens` more tokens were processed, with the latest loss. */
  update(step: number, o: { loss?: number; tokens?: number } = {}): ProgressInfo {
    this.tokens += o.tokens ?? 0;
    const elapsedSec = (this.now() - this.t0) / 1000, done = step - this.startStep;
    const info: ProgressInfo = {
      step, total: this.total, loss: o.loss, elapsedSec,
      tokensPerSec: elapsedSec > 0 ? this.tokens / elapsedSec : 0,
      etaSec: done > 0 ? (elapsedSec / done) * Math.max(0, this.total - step) : undefined,
    };
    this.bar?.update(step, { loss: o.loss === undefined ? '-' : o.loss.toFixed(4), tps: info.tokensPerSec.toFixed(0), eta_s: formatSeconds(info.etaSec) });
    if (this.logStream && (this.now() - this.lastLog >= 1000 * (this.opts.logEverySec ?? 30) || step === this.total)) {
      this.lastLog = this.now();
      this.logStream.write(`train ${step}/${this.total} | loss ${o.loss === undefined ? '-' : o.loss.toFixed(4)} | ${info.tokensPerSec.toFixed(0)} tok/s | elapsed ${formatSeconds(elapsedSec)} | ETA ${formatSeconds(info.etaSec)}\n`);
    }
    this.opts.onUpdate?.(info);
    return info;
  }

  stop(): void { this.bar?.stop(); }
}
