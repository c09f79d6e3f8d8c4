/**
 * Progress of long work: step/total, loss, tokens/s (or items/s) and ETA on a cli-progress bar; when the stream is
 * not a terminal (a log file, CI, TERM=dumb) one plain line every `logEverySec` seconds instead. Nothing when `quiet` is set
 * (but the interrupt below); `onUpdate` receives the numbers either way (tests, logs).
 *
 * With `interrupt`, Ctrl-C (SIGINT) or SIGTERM while the reporter runs stops the bar (which restores the cursor it
 * hid), prints what `interrupt` says (what was saved, how to continue) and exits with 130 (SIGINT) or 143 (SIGTERM).
 * Signal handlers run between synchronous operations, so a checkpoint or file being written is never cut in half.
 */
import os from 'node:os';
import cliProgress from 'cli-progress';

/** A terminal that takes control codes: a TTY whose TERM is not "dumb" (Emacs' shell, some IDE consoles). */
const isTerminal = (stream: NodeJS.WriteStream): boolean => !!stream.isTTY && process.env.TERM !== 'dumb';

/** Text dimmed (thinking, notes) on such a terminal, unless NO_COLOR is set (no-color.org); as is elsewhere. */
export const dimmer = (stream: NodeJS.WriteStream): ((s: string) => string) =>
  (isTerminal(stream) && !process.env.NO_COLOR ? (s) => `\x1b[2m${s}\x1b[0m` : (s) => s);

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
  /** When the work began, on that clock (default: now). */
  startedAt?: number;
  /** Seconds between plain progress lines when the stream is not a TTY (default 30). */
  logEverySec?: number;
  /** What is counted, first on the bar and the lines (default "train"). */
  label?: string;
  /** What the `loss` figure is called (default "loss"; GRPO reports its mean reward). */
  metric?: string;
  /**
   * Items instead of training steps: the rate shown is steps per second named by this unit (e.g. "questions"),
   * and no loss is shown. Default: a training run, with loss and tokens/s.
   */
  itemUnit?: string;
  /** Handle SIGINT/SIGTERM while running: the message printed for the last step reported (see the file comment). */
  interrupt?: (step: number) => string;
  /** Exits the process (default: once the runtime workers' calls in flight have answered), injectable for tests. */
  exit?: (code: number) => void;
  /** Hide the terminal cursor while the bar runs (default true; restored on stop, and on Ctrl-C with `interrupt`). */
  hideCursor?: boolean;
}

export function formatSeconds(s: number | undefined): string {
  if (s === undefined || !Number.isFinite(s)) return '--';
  const t = Math.round(s), h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), sec = t % 60;
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

/** A rate for display: whole numbers from 10 up, two decimals below (0.35 questions/s is not 0). */
const rate = (x: number) => (x >= 10 || x === 0 ? x.toFixed(0) : x.toFixed(2));

export class Progress {
  private readonly bar?: cliProgress.SingleBar;
  private readonly now: () => number;
  private readonly t0: number;
  private readonly startStep: number;
  private tokens = 0;
  private step: number;
  /** Time spent on asides (periodic evals): not the work's, so not in its rate. */
  private asideMs = 0;
  /** What the bar says after its ETA (the last eval loss, an aside under way). */
  private note = '';
  private info?: { loss: string; rate: string; eta_s: string };
  private readonly logStream?: NodeJS.WriteStream;
  private lastLog: number;
  private readonly label: string;
  private readonly offSignals?: () => void;
  private stopped = false;

  constructor(readonly total: number, private readonly opts: ProgressOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.t0 = opts.startedAt ?? this.now();
    this.startStep = this.step = opts.startStep ?? 0;
    this.label = opts.label ?? 'train';
    const stream = opts.stream ?? process.stderr;
    this.lastLog = this.t0;
    if (!opts.quiet && !isTerminal(stream)) this.logStream = stream;
    if (!opts.quiet && isTerminal(stream)) {
      const fields = opts.itemUnit ? `{rate} ${opts.itemUnit}/s` : `${opts.metric ?? 'loss'} {loss} | {rate} tok/s`;
      this.bar = new cliProgress.SingleBar({
        stream, hideCursor: opts.hideCursor ?? true, clearOnComplete: false,
        format: `${this.label} |{bar}| {value}/{total} | ${fields} | ETA {eta_s}{note}`,
      }, cliProgress.Presets.shades_classic);
      this.bar.start(total, this.startStep, { loss: '-', rate: '0', eta_s: '--', note: '' });
    }
    const interrupt = opts.interrupt;
    if (interrupt) this.offSignals = onInterrupt(stream, () => { this.stop(); return interrupt(this.step); }, opts.exit);
  }

  /** Report that `step` steps are done, `tokens` more tokens were processed, with the latest loss. */
  update(step: number, o: { loss?: number; tokens?: number } = {}): ProgressInfo {
    this.tokens += o.tokens ?? 0;
    this.step = step;
    const elapsedSec = (this.now() - this.t0) / 1000, done = step - this.startStep, workSec = elapsedSec - this.asideMs / 1000;
    const info: ProgressInfo = {
      step, total: this.total, loss: o.loss, elapsedSec,
      tokensPerSec: workSec > 0 ? this.tokens / workSec : 0,
      etaSec: done > 0 ? (elapsedSec / done) * Math.max(0, this.total - step) : undefined,
    };
    const loss = o.loss === undefined ? '-' : o.loss.toFixed(4);
    const shown = this.opts.itemUnit ? rate(workSec > 0 ? done / workSec : 0) : info.tokensPerSec.toFixed(0);
    this.info = { loss, rate: shown, eta_s: formatSeconds(info.etaSec) };
    this.bar?.update(step, { ...this.info, note: this.note });
    if (this.logStream && (this.now() - this.lastLog >= 1000 * (this.opts.logEverySec ?? 30) || step === this.total)) {
      this.lastLog = this.now();
      const fields = this.opts.itemUnit ? `${shown} ${this.opts.itemUnit}/s` : `${this.opts.metric ?? 'loss'} ${loss} | ${shown} tok/s`;
      this.logStream.write(`${this.label} ${step}/${this.total} | ${fields} | elapsed ${formatSeconds(elapsedSec)} | ETA ${formatSeconds(info.etaSec)}\n`);
    }
    this.opts.onUpdate?.(info);
    return info;
  }

  /**
   * Work beside the counted steps (a periodic eval): the bar says `what…` meanwhile, and its time is left out of the
   * rate (the ETA keeps it: the next ones come too).
   */
  async aside<T>(what: string, work: () => Promise<T>): Promise<T> {
    const t0 = this.now(), before = this.note;
    this.say(`${what}…`, false);
    try { return await work(); } finally {
      this.asideMs += this.now() - t0;
      this.say(before.replace(/^ \| /, ''), false);
    }
  }

  /** A figure beside the bar until the next (the last eval loss); written as a line of its own where there is no bar. */
  say(text: string, line = true): void {
    this.note = text ? ` | ${text}` : '';
    this.bar?.update(this.step, { ...(this.info ?? {}), note: this.note });
    if (line && text) this.logStream?.write(`${this.label} ${this.step}/${this.total} | ${text}\n`);
  }

  /** Stop drawing the bar (another follows, e.g. the last eval's), keeping Ctrl-C handled until stop(). */
  endBar(): void { this.bar?.stop(); }

  /** Stop the bar (restoring the cursor) and the signal handlers; safe to call twice. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.bar?.stop();
    this.offSignals?.();
  }
}

/**
 * The signals that stop a run or a server: Ctrl-C and SIGTERM; on Windows also Ctrl-Break and the console window
 * closing (SIGBREAK, SIGHUP: Windows never delivers SIGTERM). Not SIGHUP elsewhere: Node listening for it would undo
 * the nohup a long run was started under.
 */
const STOP_SIGNALS: readonly NodeJS.Signals[] = process.platform === 'win32' ? ['SIGINT', 'SIGTERM', 'SIGBREAK', 'SIGHUP'] : ['SIGINT', 'SIGTERM'];

/** Listens to every STOP_SIGNALS signal with `listener`; returns its removal. */
export function onStopSignals(listener: (signal: NodeJS.Signals) => void): () => void {
  for (const s of STOP_SIGNALS) process.on(s, listener);
  return () => { for (const s of STOP_SIGNALS) process.off(s, listener); };
}

/**
 * Handles the STOP_SIGNALS until the returned function is called: `message` (which stops any bar, restoring the
 * cursor it hid) is printed, and the process exits with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM)
 * once the runtime workers' calls in flight have answered (or through `exit`, in tests).
 */
export function onInterrupt(stream: NodeJS.WriteStream, message: () => string, exit?: (code: number) => void): () => void {
  const handler = (signal: NodeJS.Signals) => {
    off();
    // A second signal while the message is made (a checkpoint being saved) waits for it: without a listener it would
    // end the process mid-write, the user told a step was being saved and never that it was not.
    const unhold = onStopSignals(() => {});
    try { stream.write(`\n${message()}\n`); } finally { unhold(); }
    const code = 128 + os.constants.signals[signal];
    if (exit) exit(code);
    else process.exit(code); // which waits for the runtime workers' calls in flight (worker-backend.ts)
  };
  const off = onStopSignals(handler);
  return off;
}

/**
 * Progress of work in stages ("base answers (train)", then "base answers (val)", ...), each with its own count:
 * one Progress (in items) per stage, the previous one stopped when the next begins. `update` fits the
 * `onProgress(stage, done, total)` hooks of the router, the verifier and the eval harness. With `interrupt`, Ctrl-C
 * is handled from construction until stop(), between stages too, naming the stage last reported.
 */
export class StagedProgress {
  private current?: { stage: string; progress: Progress };
  private last?: [stage: string, done: number, total: number];
  private readonly offSignals?: () => void;
  private readonly now: () => number;
  /** When the last stage ended (or this reporter began): the next stage's work began then. */
  private since: number;

  /** `interrupt` gets the stage ('' before the first), the items done and its total; `units` names the items of stages that count others than itemUnit. */
  constructor(private readonly opts: Omit<ProgressOptions, 'label' | 'startStep' | 'startedAt' | 'interrupt'> & { itemUnit: string; units?: Record<string, string>; interrupt?: (stage: string, done: number, total: number) => string }) {
    this.now = opts.now ?? Date.now;
    this.since = this.now();
    const interrupt = opts.interrupt;
    if (interrupt) {
      this.offSignals = onInterrupt(opts.stream ?? process.stderr, () => {
        this.endStage();
        return interrupt(...(this.last ?? ['', 0, 0])); // '': before the first stage
      }, opts.exit);
    }
  }

  update(stage: string, done: number, total: number): void {
    if (this.current?.stage !== stage || this.current.progress.total !== total) this.begin(stage, 0, total);
    this.last = [stage, done, total];
    this.current!.progress.update(done);
    this.since = this.now();
    if (done >= total) this.endStage();
  }

  /** Starts `stage` with `done` of its items finished before (a resumed run: rate and ETA count the new ones only). */
  begin(stage: string, done: number, total: number): void {
    this.endStage();
    const { interrupt: _, units, ...rest } = this.opts;
    this.current = { stage, progress: new Progress(total, { ...rest, itemUnit: units?.[stage] ?? rest.itemUnit, label: stage, startedAt: this.since, startStep: done }) };
    this.last = [stage, done, total];
  }

  private endStage(): void {
    this.current?.progress.stop();
    this.current = undefined;
  }

  /** Ends the current stage's bar and the handling of Ctrl-C. */
  stop(): void {
    this.endStage();
    this.offSignals?.();
  }
}

/**
 * Progress that shows only once the work has taken a second: loading a large checkpoint gets a bar
 * with ETA, a small model loads without one. `update` fits `onProgress(done, total)` hooks; a run starts at
 * done = 0 and ends at its total, so each model loaded in turn gets its own bar and clock.
 */
export function lateProgress(label: string, itemUnit: string, o: { now?: () => number; stream?: NodeJS.WriteStream } = {}): { update: (done: number, total: number) => void; stop: () => void } {
  const now = o.now ?? Date.now;
  let t0 = now(), bar: Progress | undefined;
  return {
    update(done, total) {
      if (!bar && done === 0) t0 = now(); // a run (a model) begins
      if (!bar && (now() - t0 < 1000 || done >= total)) return;
      // No hidden cursor: the work is synchronous, so nothing could restore it on Ctrl-C.
      bar ??= new Progress(total, { label, itemUnit, startedAt: t0, now, hideCursor: false, ...(o.stream ? { stream: o.stream } : {}) });
      bar.update(done);
      if (done >= total) { bar.stop(); bar = undefined; }
    },
    stop: () => bar?.stop(),
  };
}
