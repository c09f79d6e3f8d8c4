import path from 'node:path';
import type { Command } from 'commander';
import { openSource, readManifest, type Manifest } from '../io/source.ts';
import { lateProgress } from '../train/progress.ts';
import { convertInWorker, defaultQuant, requantisedNote } from '../runtime/convert.ts';
import type { Quant } from '../onnx/quant.ts';
import { parseTargets } from './train-sft.ts';
import { checkOutDir } from './outputs.ts';
import { quantArg } from './main.ts';

/** A folder an earlier convert wrote (its edgereason.json is a manifest), which convert rebuilds in place. */
function isConverted(dir: string): boolean {
  try {
    const m = readManifest(dir);
    return typeof m.format === 'number' && typeof m.source?.path === 'string';
  } catch {
    return false;
  }
}

export function convertCommand(program: Command): void {
  program.command('convert')
    .description('build the ONNX graph and weights once (model.onnx + model.onnx.data) for fast loading')
    .requiredOption('--model <path>', 'Hugging Face folder, .gguf or llama2.c .bin')
    .requiredOption('--out <dir>', 'output folder (a converted folder there is rebuilt; a model\'s own folder, or one holding files convert writes, is refused)')
    .option('--overwrite', 'replace the model, tokenizer or ONNX files another tool left in --out')
    .option('--quant <q>', 'q4, q8 or fp32', quantArg)
    .option('--lora-targets <list>', 'projections that take LoRA inputs: q,k,v,o,gate,up,down (or q_proj, ...)')
    .action(async (o) => {
      const targets = o.loraTargets ? parseTargets(String(o.loraTargets), '--lora-targets') : [];
      checkOutDir(o.out, { what: 'converted model', inputs: { '--model': o.model }, ours: isConverted, overwrite: !!o.overwrite });
      const t0 = performance.now(), src = openSource(o.model), quant: Quant = o.quant ?? defaultQuant(src.config);
      const note = requantisedNote(src, quant);
      if (note) console.error(note);
      const bar = lateProgress(`converting ${path.basename(src.path)}`, 'M weights');
      let m: Manifest;
      try {
        m = await convertInWorker({ source: src.path, out: path.resolve(o.out), quant, accuracyLevel: 4, loraTargets: targets }, bar.update);
      } finally { bar.stop(); }
      console.log(`converted ${o.model} → ${o.out} (${m.options.quant}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    });
}
