/**
 * A benchmark's measured side runs in a child process of its own (a fresh heap and peak RSS per configuration):
 * the parent forks `script --child`, sends the configuration once the child is ready (it can be too long for
 * argv), and relays the child's progress lines until its result.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

type ChildMessage<R> = { type: 'ready' } | { type: 'progress'; label: string } | { type: 'result'; result: R } | { type: 'error'; message: string };

/** In the parent: runs `script` (its import.meta.url) as a child on `cfg`; `what` names it in a failure. */
export function runChild<C, R>(script: string, cfg: C, what: string, tick: (label: string) => void): Promise<R> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(script), ['--child'], { execArgv: ['--import', import.meta.resolve('tsx')], stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    let result: R | undefined, error: string | undefined, stderr = '';
    child.stdout!.on('data', () => {});
    child.stderr!.on('data', (d) => { stderr += d; });
    child.on('message', (m: ChildMessage<R>) => {
      if (m.type === 'ready') child.send(cfg as object);
      else if (m.type === 'progress') tick(m.label);
      else if (m.type === 'result') result = m.result;
      else error = m.message;
    });
    child.on('exit', (code, signal) => {
      if (result !== undefined) resolve(result);
      else reject(new Error(`bench: the child "${what}" failed (exit ${code ?? signal}): ${error ?? ''}\n${stderr.slice(-4000)}`));
    });
  });
}

/** In the child (`--child`): runs `measure` on the configuration the parent sends, reports its result and exits. */
export function childMain<C, R>(measure: (cfg: C) => Promise<R>): void {
  process.once('disconnect', () => process.exit(1)); // the parent is gone (killed): nothing will read the result
  process.once('message', (cfg: C) => {
    measure(cfg).then(
      (result) => process.send!({ type: 'result', result } satisfies ChildMessage<R>, () => process.exit(0)),
      (e) => process.send!({ type: 'error', message: e instanceof Error ? e.stack ?? e.message : String(e) } satisfies ChildMessage<R>, () => process.exit(1)),
    );
  });
  process.send!({ type: 'ready' } satisfies ChildMessage<R>);
}

/** A progress line, from the child. */
export const progress = (label: string) => process.send!({ type: 'progress', label } satisfies ChildMessage<never>);
export const now = () => performance.now();
export const rssMb = () => process.memoryUsage().rss / 2 ** 20;
export const peakMb = () => process.resourceUsage().maxRSS / 1024; // maxRSS is in KiB
