import readline from 'node:readline';
import { randomInt } from 'node:crypto';
import type { Command } from 'commander';
import { answer } from '../reason/answer.ts';
import type { ReasoningMode } from '../reason/types.ts';
import type { ChatMessage } from '../tokenizer/types.ts';
import { defaultModel } from '../models/embedded.ts';
import { dimmer } from '../train/progress.ts';
import { floatArg, intArg, jsonObjectArg, quantArg } from './main.ts';
import { loadReasoner, transcript } from './answer.ts';

/**
 * An interactive chat on the standard input: a line is a user turn, answered as `answer` answers (routed: reasoning only
 * when the router says so), the thinking dimmed on the terminal; the replies (not their thinking, as Qwen's templates
 * drop it) stay in the conversation, which the prompt cache keeps, so a turn prefills only the new messages.
 */
export function chatCommand(program: Command): void {
  program.command('chat')
    .description('chat on the standard input, each turn routed (reasoning only when the router says so); the conversation stays in the prompt cache, so a turn prefills only what is new. /reset starts over, /exit (or end of input) ends')
    .option('--model <path>', 'base model', defaultModel.dir)
    .option('--adapter <dir>', 'reasoning adapter (default: <model>/reasoning-adapter when present)')
    .option('--no-adapter', 'the base model alone (reasoning off, unless --native-thinking)')
    .option('--native-thinking', 'the model thinks by itself (e.g. Qwen3): reason with its own weights, no adapter')
    .option('--router <file>', 'router.json for reasoning auto (default: <model>/router.json when present; without one, auto reasons)')
    .option('--system <text>', 'system message')
    .option('--chat-template-kwargs <json>', 'variables for the chat template, e.g. \'{"enable_thinking": false}\'', jsonObjectArg('--chat-template-kwargs'))
    .option('--reasoning <mode>', 'auto | on | off', 'auto')
    .option('--max-thinking-tokens <n>', 'thinking cap (then "</think>" is forced)', intArg('--max-thinking-tokens', 0))
    .option('--budget <n>', 'thinking budget control line after <think> (budget-trained adapters)', intArg('--budget', 1))
    .option('--max-tokens <n>', 'tokens per reply (thinking + answer)', intArg('--max-tokens', 1), 512)
    .option('--temperature <t>', 'default 0 (greedy)', floatArg('--temperature'))
    .option('--seed <s>', 'seed of the first turn (turn i uses seed + i; default: a fresh one)', intArg('--seed'))
    .option('--quant <q>', 'q4, q8 or fp32', quantArg)
    .action(async (o) => {
      if (!['auto', 'on', 'off'].includes(o.reasoning)) throw new Error(`--reasoning must be auto, on or off; got "${o.reasoning}"`);
      const { model, router } = await loadReasoner(o, 'reply');
      const seed: number = o.seed ?? randomInt(2 ** 31), dim = dimmer(process.stderr);
      const start = (): ChatMessage[] => (o.system ? [{ role: 'system', content: o.system }] : []);
      let messages = start(), turn = 0;
      const tty = process.stdin.isTTY;
      const lines = readline.createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, prompt: '> ' });
      try {
        if (tty) {
          console.error(dim('Each line is a turn (/reset starts over, /exit or Ctrl-D ends).'));
          lines.prompt();
        }
        for await (const line of lines) {
          const text = line.trim();
          if (text === '/exit' || text === '/quit') break;
          if (text === '/reset') { messages = start(); console.error(dim('(a new conversation)')); }
          else if (text) {
            const asked = [...messages, { role: 'user' as const, content: text }];
            const written = transcript(process.stdout);
            try {
              const r = await answer(model, asked, {
                reasoning: o.reasoning as ReasoningMode, maxThinkingTokens: o.maxThinkingTokens, budget: o.budget, maxTokens: o.maxTokens,
                temperature: o.temperature, seed: seed + turn++, nativeThinking: !!o.nativeThinking,
                ...(o.chatTemplateKwargs ? { chatTemplateKwargs: o.chatTemplateKwargs } : {}), onRoute: written.onRoute, onText: written.onText,
              }, { router });
              written.end(r);
              messages = [...asked, { role: 'assistant', content: r.answer }];
              const u = r.usage;
              console.error(dim(`[${r.route}${r.routerScore === undefined ? '' : ` (router ${r.routerScore.toFixed(2)}${r.escalation ? ', escalated by the gate' : ''})`}; ` +
                `${r.route === 'reasoning' ? `${u.thinkingTokens} thinking + ` : ''}${u.answerTokens} answer tokens${r.finishReason === 'length' ? ' (cut off: --max-tokens)' : ''}; ` +
                `prompt ${u.promptTokens} tokens, ${u.cachedTokens} of them from the prompt cache; TTFT ${r.ttftMs.toFixed(1)} ms, ${r.latencyMs.toFixed(0)} ms]`));
            } catch (e) {
              // A turn that cannot be answered (the conversation outgrew the context, ...) leaves the conversation as it was.
              console.error(`edgereason: ${(e as Error).message}${/context/.test((e as Error).message) ? ' (/reset starts a new conversation)' : ''}`);
            }
          }
          if (tty) lines.prompt();
        }
      } finally {
        lines.close();
        await model.close();
      }
    });
}
