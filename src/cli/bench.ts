import type { Command } from 'commander';

export function benchCommand(program: Command): void {
  const bench = program.command('bench').description('benchmarks (results under bench/results/)');
  bench.command('decode')
    .description('prefill and batched decode speed on a Qwen2.5-0.5B-shaped q4 model vs llama.cpp')
    .option('--json', 'print the result as JSON')
    .option('--accuracy-level <n>', 'MatMulNBits accuracy level', '4')
    .action(async (o) => {
      const { runDecodeBench } = await import('../../bench/decode.ts');
      await runDecodeBench({ json: !!o.json, accuracyLevel: Number(o.accuracyLevel) });
    });
}
