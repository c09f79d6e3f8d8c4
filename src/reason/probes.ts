/** Loading the router and verifier files a model is served with, each checked against that model. */
import type { LoadedAdapter } from '../io/peft.ts';
import type { ModelConfig } from '../models/config.ts';
import { checkTrainedFile, modelNote, pairingNote, ropeNote } from './answer.ts';
import { Router } from './router.ts';
import { Verifier } from './verifier.ts';

/**
 * Router.load / Verifier.load for the files given, refused when trained for the other kind of reasoning or a model
 * of another shape (errors prefixed with `where`); `onNote` hears when one was trained on another model than the one
 * `names` name, with another adapter than any of `adapters`, or under another RoPE scaling.
 */
export function loadProbes(files: { router?: string; verifier?: string }, o: { config: ModelConfig; native: boolean; adapters: readonly LoadedAdapter[]; names?: readonly string[]; where?: string; onNote?: (note: string) => void }): { router?: Router; verifier?: Verifier } {
  const router = files.router ? Router.load(files.router, o.config.hiddenSize) : undefined;
  const verifier = files.verifier ? Verifier.load(files.verifier, o.config.hiddenSize) : undefined;
  for (const [what, file, p] of [['router', files.router, router], ['verifier', files.verifier, verifier]] as const) {
    if (!p) continue;
    checkTrainedFile(what, file!, p.metadata, o.native, o.where ?? '', o.config);
    for (const note of [modelNote(what, file!, p.metadata, o.names ?? []), pairingNote(what, file!, p.metadata, o.adapters), ropeNote(what, file!, p.metadata, o.config)]) if (note) o.onNote?.(note);
  }
  return { router, verifier };
}
