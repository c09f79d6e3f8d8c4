import type { Command } from 'commander';
import { openSource } from '../io/source.ts';
import { convertModel } from '../runtime/model.ts';
import { PROJECTIONS, type Projection } from '../models/config.ts';
import { quantArg } from './main.ts';

export function convertCommand(program: Command): void {
  program.command('convert')
    .description('build the ONNX graph and weights once (model.onnx + model.onnx.data) for fast loading')
    .requiredOption('--model <path>', 'Hugging Face folder, .gguf or llama2.c .bin')
    .requiredOption('--out <dir>', 'output folder')
    .option('--quant <q>', 'q4 or fp32', quantArg)
    .option('--lora-targets <list>', `projections that take LoRA inputs (${PROJECTIONS.join(',')})`)
    .action(async (o) => {
      const targets = o.loraTargets ? String(o.loraTargets).split(',').map((t) => t.trim()) : [];
      for (const t of targets) if (!PROJECTIONS.includes(t as Projection)) throw new Error(`--lora-targets: unknown projection "${t}" (use ${PROJECTIONS.join(',')})`);
      const t0 = performance.now();
      const m = convertModel(openSource(o.model), o.out, { quant: o.quant, loraTargets: targets as Projection[] });
      console.log(`converted ${o.model} → ${o.out} (${m.options.quant}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    });
}
