import path from 'node:path';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { loadModel } from '../runtime/model.ts';

/** ../shared beside the project root (data and the stories260K model live there). */
export function sharedDir(): string {
  const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../shared');
  if (!fs.existsSync(dir)) throw new Error(`shared data folder not found at ${dir}: it must sit beside the project folder`);
  return dir;
}

export function demoCommand(program: Command): void {
  program.command('demo')
    .description('generate from the bundled demo model, streaming tokens and reporting speed')
    .option('--max-tokens <n>', 'tokens to generate', '200')
    .action(async (o) => {
      const file = path.join(sharedDir(), 'models/stories260K/stories260K.bin');
      const model = await loadModel(file, { quant: 'fp32' });
      try {
        console.log(`model: ${file} (llama2.c, ${model.config.numLayers} layers, dim ${model.config.hiddenSize})\n`);
        for (const [label, temperature] of [['greedy', 0], ['sampled, T=0.8, seed 7', 0.8]] as const) {
          console.log(`--- ${label} ---`);
          const gen = model.generate('Once upon a time', { maxTokens: Number(o.maxTokens), temperature, topP: 0.95, seed: 7 });
          let r = await gen.next();
          while (!r.done) { process.stdout.write(r.value); r = await gen.next(); }
          const c = r.value;
          console.log(`\n[${c.tokens.length} tokens, TTFT ${c.ttftMs.toFixed(1)} ms, ${(c.tokens.length / (c.totalMs / 1000)).toFixed(0)} tok/s]\n`);
        }
      } finally {
        await model.close();
      }
    });
}
