/** The embedded default model's files (models/default), found from wherever the package is installed. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { folderOf } from '../io/source.ts';

/** The files of a folder laid out as models/default: the base model, its adapters, router and verifier. */
export function defaultModelFiles(dir: string) {
  return {
    /** The base model (a Hugging Face folder). */
    dir,
    /** The SFT reasoning adapter (activated LoRA, invoked by `<think>`); the router and verifier were trained with it. */
    adapter: path.join(dir, 'reasoning-adapter'),
    /** The same adapter after budget forcing (GRPO with a thinking budget in the prompt). */
    budgetAdapter: path.join(dir, 'reasoning-adapter-rl'),
    router: path.join(dir, 'router.json'),
    verifier: path.join(dir, 'verifier.json'),
  } as const;
}

/** The embedded default model, trained from scratch by edgereason (`npm run train:default`). */
export const defaultModel = defaultModelFiles(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../models/default'));

/**
 * For a path that does not exist: where the README's `models/default/…` (`p`, relative) is when edgereason is
 * installed as a package (the repository's folder is the package's), as a note to add to the message; else ''.
 */
export function embeddedNote(p: string): string {
  const parts = path.normalize(p).split(path.sep);
  if (path.isAbsolute(p) || parts[0] !== 'models' || parts[1] !== 'default') return '';
  const there = path.join(defaultModel.dir, ...parts.slice(2));
  return fs.existsSync(there) ? ` (the README's models/default is the embedded default model's folder: give ${there})` : '';
}

/**
 * File `f` of the setup in `model`'s folder laid out as models/default, when `model` is a folder (or its config.json or
 * weights, which load as the folder) and it is there; else undefined.
 */
export function besideModel(model: string, f: Exclude<keyof ReturnType<typeof defaultModelFiles>, 'dir'>): string | undefined {
  model = folderOf(model);
  const file = defaultModelFiles(model)[f];
  // (stat, not join's normal form: "x/missing/.." is no folder, though x/reasoning-adapter is there)
  return fs.existsSync(file) && fs.statSync(model, { throwIfNoEntry: false })?.isDirectory() ? file : undefined;
}
