import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { cacheEntries, cacheFolder, gib, pruneCache, type CacheEntry } from '../runtime/convert.ts';
import { hubRepo } from '../io/hub.ts';

/** " (hf:owner/name)" for a source in the Hugging Face cache (a snapshot folder, or a GGUF file in one). */
const hubNote = (source: string): string => {
  const repo = hubRepo(source), inRepo = repo ? undefined : hubRepo(path.dirname(source));
  return repo ? ` (hf:${repo})` : inRepo ? ` (hf:${inRepo}/${path.basename(source)})` : '';
};

export function cacheCommand(program: Command): void {
  program.command('cache')
    .description('list the converted copies that loading keeps of large checkpoints (in $EDGEREASON_CACHE, else $XDG_CACHE_HOME/edgereason, else ~/.cache/edgereason), or remove them')
    .option('--dir <dir>', 'the cache folder (default: $EDGEREASON_CACHE, else $XDG_CACHE_HOME/edgereason, else ~/.cache/edgereason)')
    .option('--prune', 'remove the copies that would be converted again (source changed or gone, another edgereason version) and half-written ones')
    .option('--clear', 'remove every copy (except one being written now)')
    .action((o: { dir?: string; prune?: boolean; clear?: boolean }) => {
      if (o.prune && o.clear) throw new Error('cache: give --prune or --clear, not both');
      const root = o.dir ?? cacheFolder();
      // A --dir given by hand must be a folder (a misspelt one would list "0 copies"); the default may not exist yet.
      if (o.dir !== undefined && !(fs.existsSync(root) && fs.statSync(root).isDirectory())) throw new Error(`cache: --dir ${root} ${fs.existsSync(root) ? 'is not a folder' : 'does not exist'}`);
      if (o.dir === undefined && fs.existsSync(root) && !fs.statSync(root).isDirectory()) throw new Error(`cache: the cache folder ${root} is not a folder (set $EDGEREASON_CACHE to one, or pass --dir)`);
      if (o.prune || o.clear) {
        const gone = pruneCache(root, !!o.clear);
        console.log(`removed ${gone.length} converted cop${gone.length === 1 ? 'y' : 'ies'} (${gib(total(gone), 2)} GiB) from ${root}`);
        return;
      }
      const entries = cacheEntries(root);
      console.log(`${root}: ${entries.length} converted cop${entries.length === 1 ? 'y' : 'ies'}, ${gib(total(entries), 2)} GiB`);
      for (const e of entries) {
        console.log(`  ${gib(e.bytes, 2).padStart(6)} GiB  ${e.state}  ${e.dir}${e.source ? `\n              from ${e.source}${hubNote(e.source)}` : ''}${e.why ? `\n              which ${e.why}` : ''}`);
      }
      if (entries.some((e) => e.state === 'stale' || e.state === 'abandoned')) console.log('`edgereason cache --prune` removes the stale and abandoned ones.');
    });
}

const total = (entries: CacheEntry[]) => entries.reduce((n, e) => n + e.bytes, 0);
