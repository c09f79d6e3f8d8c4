import type { Command } from 'commander';
import { openSource } from '../io/source.ts';
import { convertModel } from '../runtime/model.ts';
import { parseTargets } from './train-sft.ts';
import { checkOutDir } from './outputs.ts';
import { quantArg } from './main.ts';

export function convertCommand(program: Command): void {
  program.command('convert')
    .description('build the ONNX graph and weights once (model.onnx + model.onnx.data) for fast loading')
    .requiredOption('--model <path>', 'Hugging Face folder, .gguf or llama2.c .bin')
    .requiredOption('--out <dir>', 'output folder (a converted folder there is rebuilt; a model\'s own folder, or one holding a model or adapter, is refused)')
    .option('--quant <q>', 'q4 or fp32', quantArg)
    .option('--lora-targets <list>', 'projections that take LoRA inputs: q,k,v,o,gate,up,down (or q_proj, ...)')
    .action(async (o) => {
      const targets = o.loraTargets ? parseTargets(String(o.loraTargets), '--lora-targets') : [];
      checkOutDir(o.out, { what: 'converted model', inputs: { '--model': o.model } });
      const t0 = performance.now();
      const m = convertModel(openSource(o.model), o.out, { quant: o.quant, loraTargets: targets });
      console.log(`converted ${o.model} → ${o.out} (${m.options.quant}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    });
}
