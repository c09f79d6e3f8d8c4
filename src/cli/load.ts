import path from 'node:path';
import { loadModel, type LoadOptions, type Model } from '../runtime/model.ts';
import { lateProgress } from '../train/progress.ts';
import { cliWords } from './main.ts';

/**
 * loadModel with a progress bar while a checkpoint's graph is built and quantised (shown when that takes a while),
 * and the cache's notes (a converted copy written or used) on stderr.
 */
export async function loadModelWithProgress(p: string, opts: LoadOptions = {}): Promise<Model> {
  const bar = lateProgress(`loading ${path.basename(path.resolve(p))}`, 'M weights');
  try {
    return await loadModel(p, { ...opts, onProgress: bar.update, onNote: (note) => console.error(cliWords(note)) });
  } finally {
    bar.stop();
  }
}
