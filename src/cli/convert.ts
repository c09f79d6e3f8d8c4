import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { isModelFileFolder, modelPath, openSource, readManifest, shellQuote, type Manifest } from '../io/source.ts';
import { shortName } from '../io/hub.ts';
import { lateProgress, onInterrupt } from '../train/progress.ts';
import { CONVERTED_FILES, convertInWorker, defaultQuant, requantisedNote, rescaled } from '../runtime/convert.ts';
import type { Quant } from '../onnx/quant.ts';
import { parseTargets } from './train-sft.ts';
import { readAdapterConfig } from '../io/peft.ts';
import { defaultModelFiles } from '../models/embedded.ts';
import { PROJECTIONS, ropeScalingWords, type Projection } from '../models/config.ts';
import { beforeDownload, canonical, checkOutDir, holdOut } from './outputs.ts';
import { cliWords, quantArg } from './main.ts';
import { ropeScalingOf, ropeScalingOptions } from './load.ts';

/** The source of a folder an earlier convert wrote (its edgereason.json is a manifest), else undefined. */
function convertedFrom(dir: string): string | undefined {
  const m = manifestIn(dir);
  return typeof m?.format === 'number' && typeof m.source?.path === 'string' ? m.source.path : undefined;
}

/** The manifest of a folder, undefined where there is none or it cannot be read. */
function manifestIn(dir: string): Manifest | undefined {
  try { return readManifest(dir); } catch { return undefined; }
}

/** An adapter folder of the reasoning setup, not one of its files (router.json, verifier.json). */
const isAdapterEntry = (f: string) => !f.endsWith('.json');

/**
 * The reasoning setup beside the model `source`, in models/default's layout (defaultModelFiles: where answer, chat and
 * serve find it), by name; nothing beside a single-file model. A conversion gives the graph its adapters' LoRA inputs
 * and says how to copy the setup along (copied by the user, it is the user's: convert never replaces it).
 */
function reasoningSetup(source: string): string[] {
  if (!fs.statSync(source).isDirectory()) return [];
  const { adapter, budgetAdapter, router, verifier } = defaultModelFiles(source);
  return [adapter, budgetAdapter, router, verifier].map((p) => path.basename(p)).filter((f) => fs.existsSync(path.join(source, f, isAdapterEntry(f) ? 'adapter_config.json' : '')));
}

/** --out: any conversion there is convert's own (another model's is refused once --model is a local path: above). */
const outCheck = (o: { out: string; model: string; overwrite?: boolean }) =>
  checkOutDir(o.out, { what: 'converted model', inputs: { '--model': o.model }, ours: (dir) => convertedFrom(dir) !== undefined, overwrite: !!o.overwrite });

/** The command that copies `files` (links followed) into the folder `out`: sh's cp, or PowerShell's Copy-Item on Windows. */
export function copyCommand(files: string[], out: string, platform: string = process.platform): string {
  const q = (p: string) => shellQuote(p, platform);
  return platform === 'win32' ? `Copy-Item -Recurse ${files.map(q).join(', ')} ${q(out)}` : `cp -rL ${files.map(q).join(' ')} ${q(out)}/`;
}

export function convertCommand(program: Command): void {
  ropeScalingOptions(program.command('convert')
    .description('build the ONNX graph and weights once (model.onnx + model.onnx.data) for fast loading')
    .requiredOption('--model <path>', 'Hugging Face folder, .gguf or llama2.c .bin, or hf:owner/name (from the Hugging Face cache, downloaded once)')
    .requiredOption('--out <dir>', 'output folder (a conversion of the same --model there is rebuilt; a model\'s own folder, another model\'s conversion, or one holding files convert writes, is refused)')
    .option('--overwrite', 'replace the model, tokenizer or ONNX files another tool left in --out')
    .option('--quant <q>', 'q4, q8 or fp32', quantArg))
    .option('--lora-targets <list>', 'projections that take LoRA inputs: q,k,v,o,gate,up,down (or q_proj, ...); default: those of the reasoning adapters beside --model (reasoning-adapter/, reasoning-adapter-rl/)')
    .hook('preAction', beforeDownload(outCheck))
    .action(async (o) => {
      const given = o.loraTargets ? parseTargets(o.loraTargets, '--lora-targets') : undefined, ropeScaling = ropeScalingOf(o);
      // A single-file model's own folder (as convertModel refuses it): said before --overwrite is offered for its files.
      if (isModelFileFolder(o.out, o.model)) throw new Error(`--out ${o.out} is the folder of --model ${o.model}: the converted files would mix with the model's own (a tokenizer.json there becomes the vocabulary of every GGUF in it); choose another folder`);
      outCheck(o); // before the next: a converted --model given as its own --out is "the --model folder", not another model's conversion
      // Held from here: a second convert or a training run into the same --out while this one runs is refused (their
      // files would mix, the last renamed winning each), and what is found there below stays so. Its release also removes the folder it made
      // when the run left that empty (Ctrl-C, a full disk, a source changed meanwhile: "nothing was written").
      const unlock = holdOut(o.out, 'convert');
      let m: Manifest, earlier: string | undefined, t0: number, targets: Projection[] = [], bringAlong: string[] = [], from = '';
      try {
        // A conversion of the same source is rebuilt in place; another model's is replaced only when told.
        earlier = convertedFrom(o.out);
        if (earlier !== undefined && canonical(earlier) !== canonical(modelPath(o.model)) && !o.overwrite) {
          throw new Error(`--out ${o.out} holds a conversion of another model (${earlier}); choose another folder, or pass --overwrite to replace it`);
        }
        t0 = performance.now();
        const opened = openSource(o.model), quant: Quant = o.quant ?? defaultQuant(opened.config);
        // A scaling the model cannot take is refused before the conversion starts.
        const src = opened.kind === 'converted' ? opened : rescaled(opened, ropeScaling);
        from = src.path;
        const note = requantisedNote(src, quant);
        if (note) console.error(cliWords(note));
        // The reasoning adapters beside the model: their projections take LoRA inputs unless --lora-targets says which
        // (an adapter training others could not load on the graph: said).
        let setup = reasoningSetup(src.path);
        const trains = new Map(setup.filter(isAdapterEntry).map((f) => [f, readAdapterConfig(path.join(src.path, f), src.config.numLayers).targets]));
        targets = given ?? PROJECTIONS.filter((p) => [...trains.values()].some((t) => t.includes(p)));
        for (const [f, t] of trains) {
          const missing = t.filter((p) => !targets.includes(p));
          if (!missing.length) continue;
          setup = setup.filter((s) => s !== f);
          console.error(`edgereason: note: ${path.join(src.path, f)} trains ${missing.join(', ')}, which --lora-targets leaves without LoRA inputs: the converted model cannot take it (leave --lora-targets out for its adapters' own)`);
        }
        // The router and verifier go with the adapter they were trained for.
        if (!setup.includes('reasoning-adapter')) setup = setup.filter(isAdapterEntry);
        bringAlong = setup.filter((f) => !fs.existsSync(path.join(o.out, f)));
        const bar = lateProgress(`converting ${shortName(src.path)}`, 'M weights');
        const off = onInterrupt(process.stderr, () => { bar.stop(); return interrupted(o.out, earlier); });
        try {
          m = await convertInWorker({ source: src.path, out: path.resolve(o.out), quant, loraTargets: targets, ropeScaling }, bar.update);
        } finally { bar.stop(); off(); }
      } finally { unlock(); }
      const rope = ropeScaling ? `; RoPE ${ropeScalingWords(m.config.ropeScaling)}, ${m.config.maxPositionEmbeddings} positions` : '';
      console.log(`converted ${o.model} → ${o.out} (${m.options.quant}${rope}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      if (bringAlong.length) {
        const which = bringAlong.map((f) => f + (isAdapterEntry(f) ? '/' : '')).join(', '), them = bringAlong.length > 1 ? 'them' : 'it';
        console.error(`edgereason: note: the reasoning setup beside ${from} (${which}) stays there; the graph takes its adapters' LoRA inputs (${targets.map((p) => p.replace('_proj', '')).join(',')}): copy ${them} into ${o.out} to keep the reasoning setup with the converted model (answer, chat and serve look for it there): ${copyCommand(bringAlong.map((f) => path.join(from, f)), o.out)}`);
      }
    });
}

/**
 * Ctrl-C during a convert into `out`: this run's half-written files go (a load would leave them, gigabytes for a
 * large model), and what the folder holds now is said. The files in place are untouched until the last step, which
 * renames them all at once; stopped in its few milliseconds (the manifest then says a conversion is under way), the
 * folder is part old, part new, and a load refuses it until the command runs again. Exported for tests.
 */
export function interrupted(outDir: string, earlier: string | undefined): string {
  const out = path.resolve(outDir), mine = `.tmp-${process.pid}`;
  if (fs.existsSync(out)) for (const f of fs.readdirSync(out)) if (f.endsWith(mine) && CONVERTED_FILES.includes(f.slice(0, -mine.length))) fs.rmSync(path.join(out, f), { force: true });
  if (manifestIn(out)?.converting) return `convert: interrupted while the converted files were being put in place: ${outDir} is incomplete; run the same command again`;
  return `convert: interrupted; ${earlier !== undefined ? `the earlier conversion in ${outDir} is as it was` : `nothing was written to ${outDir}`}`;
}
