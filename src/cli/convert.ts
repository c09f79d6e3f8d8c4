import path from 'node:path';
import type { Command } from 'commander';
import { openSource, type Manifest } from '../io/source.ts';
import { lateProgress } from '../train/progress.ts';
import { convertModel, defaultQuant, prequantizeLarge } from '../runtime/convert.ts';
import { parseTargets } from './train-sft.ts';
import { checkOutDir } from './outputs.ts';
import { quantArg } from './main.ts';

export function convertCommand(program: Command): void {
  program.command('convert')
    .description('build the ONNX graph and weights once (model.onnx + model.onnx.data) for fast loading')
    .requiredOption('--model <path>', 'Hugging Face folder, .gguf or llama2.c .bin')
    .requiredOption('--out <dir>', 'output folder (a converted folder there is rebuilt; a model\'s own folder, or one holding a model or adapter, is refused)')
    .option('--quant <q>', 'q4, q8 or fp32', quantArg)
    .option('--lora-targets <list>', 'projections that take LoRA inputs: q,k,v,o,gate,up,down (or q_proj, ...)')
    .action(async (o) => {
      const targets = o.loraTargets ? parseTargets(String(o.loraTargets), '--lora-targets') : [];
      checkOutDir(o.out, { what: 'converted model', inputs: { '--model': o.model } });
      const t0 = performance.now(), bar = lateProgress(`converting ${path.basename(path.resolve(o.model))}`, 'M weights');
      let m: Manifest;
      try {
        const src = openSource(o.model), quant = o.quant ?? defaultQuant(src.config);
        const blocks = await prequantizeLarge(src, quant, { onProgress: bar.update }); // none for a converted folder, which convertModel refuses
        m = convertModel(src, o.out, { quant, loraTargets: targets, onProgress: bar.update, blocks });
      } finally { bar.stop(); }
      console.log(`converted ${o.model} → ${o.out} (${m.options.quant}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    });
}
