import { seedOrFresh } from '../runtime/sampler.ts';
import { onInterrupt } from '../train/progress.ts';
import type { Command } from 'commander';
import { guessesNote, modelOption, loadModelWithProgress, PROMPT_LOOKUP_HELP, promptCacheFlag, promptCacheOptions, ropeScalingOf, ropeScalingOptions, withPromptCacheFile } from './load.ts';
import { floatArg, intArg, jsonObjectArg, noteGreedyFlags, penaltyFlags, quantArg, samplingFlags, seedArg } from './main.ts';

export function generateCommand(program: Command): void {
  promptCacheOptions(ropeScalingOptions(penaltyFlags(samplingFlags(program.command('generate')
    .description('stream a completion to stdout')
    .addOption(modelOption())
    .requiredOption('--prompt <text>', 'prompt text ("" starts from BOS alone, where the tokenizer adds one; - reads it from the standard input)')
    .option('--max-tokens <n>', 'tokens to generate', intArg('--max-tokens', 1), 256)
    .option('--temperature <t>', '0 = greedy', floatArg('--temperature'), 0)))
    .option('--seed <s>', 'random seed (default or -1: a fresh one, printed by --stats)', seedArg())
    .option('--stop <text...>', 'stop strings')
    .option('--adapter <dir>', 'PEFT LoRA adapter folder (plain LoRA: applied everywhere; activated LoRA: from the invocation on, which --chat appends and a raw prompt must hold, e.g. ending in <think>)')
    .option('--chat', 'apply the model\'s chat template')
    .option('--chat-template-kwargs <json>', 'variables for the chat template, e.g. \'{"enable_thinking": false}\' (Qwen3: answer without thinking)', jsonObjectArg('--chat-template-kwargs'))
    .option('--quant <q>', 'q4, q8 (near-lossless, about twice the size of q4) or fp32 (default: q4 for models from 50M parameters)', quantArg))
    .option('--prompt-lookup <n>', PROMPT_LOOKUP_HELP, intArg('--prompt-lookup', 0, 64), 0)
    .option('--stats', 'print token counts and timings to stderr'))
    .action(async (o) => {
      const greedy = o.temperature === 0, seed: number = seedOrFresh(o.seed);
      noteGreedyFlags(o, 'edgereason');
      if (o.prompt === '' && o.chat) throw new Error('generate: --prompt is empty: with --chat it would be an empty user message; give it a value');
      if (o.chatTemplateKwargs && !o.chat) throw new Error('generate: --chat-template-kwargs needs --chat (they are variables of the chat template)');
      const model = await loadModelWithProgress(o.model, { quant: o.quant, adapter: o.adapter, ropeScaling: ropeScalingOf(o), promptCache: promptCacheFlag(o) });
      const finish = await withPromptCacheFile(model, o.promptCacheFile);
      // Ctrl-C: the text so far stays as it is, said so (a prompt cache file is not saved: the process ends here).
      const off = onInterrupt(process.stderr, () => `generate: interrupted (the text ends where it was cut off${o.promptCacheFile ? `; ${o.promptCacheFile} was not saved` : ''})`);
      // --adapter insists (--chat appends an activated adapter's invocation), unless the template is told not to think
      const adapter = !!o.adapter && o.chatTemplateKwargs?.enable_thinking !== false ? true : undefined;
      try {
        const gen = model.generate(o.prompt, {
          chat: !!o.chat, maxTokens: o.maxTokens, temperature: o.temperature, topK: o.topK, topP: o.topP, minP: o.minP, repetitionPenalty: o.repetitionPenalty, presencePenalty: o.presencePenalty, frequencyPenalty: o.frequencyPenalty,
          seed, stop: o.stop, promptLookup: o.promptLookup, adapter, ...(o.chatTemplateKwargs ? { chatTemplateKwargs: o.chatTemplateKwargs } : {}),
        });
        // A chat prompt with an activated adapter ends with its invocation (appended where the template did not end with
        // it): the completion starts inside the thinking, so the invocation is shown to open what its closing tag ends —
        // with the first piece, once the prompt's checks (which run at the first next()) have passed.
        const inv = adapter ? model.adapter?.config.aloraInvocationTokens : undefined;
        let r = await gen.next();
        if (o.chat && inv) process.stdout.write(model.tokenizer.decode(inv));
        while (!r.done) { process.stdout.write(r.value); r = await gen.next(); }
        process.stdout.write('\n');
        const c = r.value;
        if (c.finishReason === 'length' && c.tokens.length < o.maxTokens) {
          console.error(`edgereason: note: stopped after ${c.tokens.length} tokens, at the end of the model's context (${model.config.maxPositionEmbeddings} tokens)`);
        }
        if (o.stats) {
          const decodeS = (c.totalMs - c.ttftMs) / 1000;
          const rate = c.tokens.length > 1 ? `${((c.tokens.length - 1) / Math.max(decodeS, 1e-9)).toFixed(1)} tok/s after the first` : `${c.tokens.length ? 'one token' : 'no token'}: no decode rate`;
          console.error(`prompt ${c.promptTokens} tokens${c.cachedTokens ? ` (${c.cachedTokens} from the prompt cache)` : ''}, generated ${c.tokens.length} (${c.finishReason}); TTFT ${c.ttftMs.toFixed(0)} ms; ${rate}${guessesNote([c.guesses])}${greedy ? '' : `; seed ${seed}`}`);
        }
      } finally {
        off();
        await finish();
      }
    });
}
