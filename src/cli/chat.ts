import readline from 'node:readline';
import type { Command } from 'commander';
import { answer, answerTemperature, answeringFor, inWordsOf } from '../reason/answer.ts';
import type { ReasoningMode } from '../reason/types.ts';
import type { ChatMessage } from '../tokenizer/types.ts';
import { dimmer } from '../train/progress.ts';
import { seedAt, seedOrFresh } from '../runtime/sampler.ts';
import path from 'node:path';
import { generationNotes, generationSampling } from '../io/hf-folder.ts';
import { cliWords, floatArg, intArg, noteGreedyFlags, penaltyFlags, quantArg, seedArg } from './main.ts';
import { loadReasoner, noteReasoningOff, reasonerOptions, transcript } from './answer.ts';
import { guessesNote, modelOption, promptCacheOptions, ropeScalingOptions, withPromptCacheFile } from './load.ts';

/**
 * An interactive chat on the standard input: a line is a user turn, answered as `answer` answers (routed: reasoning only
 * when the router says so), the thinking dimmed on the terminal; the replies (not their thinking, as Qwen's templates
 * drop it) stay in the conversation, which the prompt cache keeps, so a turn prefills only the new messages.
 */
export function chatCommand(program: Command): void {
  const command = program.command('chat')
    .description('chat on the standard input, each turn routed (reasoning only when the router says so); the conversation stays in the prompt cache, so a turn prefills only what is new. /reset starts over, /help lists the commands, Ctrl-C stops a reply (the turn is left out) or clears the line, /exit (or /quit), end of input or Ctrl-C on an empty line ends')
    .addOption(modelOption());
  reasonerOptions(command);
  promptCacheOptions(ropeScalingOptions(penaltyFlags(command, true)
    .option('--max-thinking-tokens <n>', 'thinking cap (then "\\n</think>\\n\\n" is forced)', intArg('--max-thinking-tokens', 0))
    .option('--budget <n>', 'thinking budget control line after <think> (budget-trained adapters)', intArg('--budget', 1))
    .option('--max-tokens <n>', 'tokens per reply (thinking + answer)', intArg('--max-tokens', 1), 512)
    .option('--temperature <t>', 'default: the model\'s generation_config.json, as serve takes it (else 0, greedy)', floatArg('--temperature'))
    .option('--top-k <k>', 'keep the k most likely tokens (default: generation_config.json\'s, else off)', intArg('--top-k'))
    .option('--top-p <p>', 'nucleus sampling mass (default: generation_config.json\'s, else 1)', floatArg('--top-p', 0, 1))
    .option('--min-p <p>', 'drop tokens below p × the top probability (default: generation_config.json\'s, else 0)', floatArg('--min-p', 0, 1))
    .option('--seed <s>', 'seed of the first turn (turn i uses seed + i; default or -1: a fresh one)', seedArg())
    .option('--quant <q>', 'q4, q8 or fp32', quantArg)))
    .action(async (o, cmd: Command) => {
      noteReasoningOff(o);
      // The model's own sampling advice (generation_config.json) is the default of what the flags leave out, as serve's.
      const own = generationSampling(o.model) ?? {}, typed = (k: string) => cmd.getOptionValueSource(k) === 'cli';
      const sampling = {
        // (a file that says do_sample without a temperature samples at 1, as transformers does)
        temperature: (o.temperature ?? own.temperature ?? ((own.top_k ?? own.top_p ?? own.min_p) === undefined ? 0 : 1)) as number, topK: (o.topK ?? own.top_k ?? 0) as number, topP: (o.topP ?? own.top_p ?? 1) as number, minP: (o.minP ?? own.min_p ?? 0) as number,
        repetitionPenalty: (typed('repetitionPenalty') ? o.repetitionPenalty : own.repetition_penalty ?? 1) as number, presencePenalty: o.presencePenalty, frequencyPenalty: o.frequencyPenalty,
      };
      const taken = Object.entries({ temperature: 'temperature', top_k: 'topK', top_p: 'topP', min_p: 'minP', repetition_penalty: 'repetitionPenalty' }).filter(([k, flag]) => own[k as keyof typeof own] !== undefined && !typed(flag) && (sampling.temperature > 0 || k === 'repetition_penalty'));
      if (taken.length) console.error(`edgereason: note: chat ${sampling.temperature > 0 ? 'samples' : 'decodes'} with ${path.join(o.model, 'generation_config.json')}'s ${taken.map(([k]) => `${k} ${own[k as keyof typeof own]}`).join(', ')} (the flags override it${taken.some(([k]) => k === 'temperature') ? '; --temperature 0 is greedy' : ''})`);
      noteGreedyFlags({ temperature: sampling.temperature, topK: o.topK ?? 0, topP: o.topP ?? 1, minP: o.minP ?? 0, seed: o.seed }, 'chat');
      const { model, router } = await loadReasoner(o, 'reply', 'chat');
      for (const n of generationNotes(o.model)) console.error(`edgereason: note: ${n}`); // (after the load, which refuses a source folder's broken file itself)
      const seed: number = seedOrFresh(o.seed);
      const start = (): ChatMessage[] => (o.system ? [{ role: 'system', content: o.system }] : []);
      const options = (turn: number, signal: AbortSignal) => ({
        signal, reasoning: o.reasoning as ReasoningMode, maxThinkingTokens: o.maxThinkingTokens, budget: o.budget, maxTokens: o.maxTokens,
        ...sampling, seed: seedAt(seed, turn), nativeThinking: !!o.nativeThinking, promptLookup: o.promptLookup,
        ...(o.chatTemplateKwargs ? { chatTemplateKwargs: o.chatTemplateKwargs } : {}),
      });
      // The options, and a --system that leaves no room, are refused before the first line is read (a turn found them).
      try {
        await answer(model, [...start(), { role: 'user', content: 'Hi' }], options(0, AbortSignal.abort()), { router });
      } catch (e) {
        await model.close();
        const message = (e as Error).message.replace(/^answer: /, '');
        throw new Error(`chat: ${o.system && /context/.test(message) ? `--system leaves no room for a conversation: ${message}` : message}`);
      }
      const dim = dimmer(process.stderr), finish = await withPromptCacheFile(model, o.promptCacheFile, (note) => console.error(dim(cliWords(note))));
      let messages = start(), turn = 0;
      const tty = process.stdin.isTTY;
      // (The prompt goes to stderr: stdout holds the transcript alone.)
      const lines = readline.createInterface({ input: process.stdin, output: tty ? process.stderr : undefined, prompt: '> ' });
      const help = 'Each line is a turn (/reset starts over, Ctrl-C stops a reply or clears the line, /exit or /quit, Ctrl-D or Ctrl-C on an empty line ends).';
      // Ctrl-C stops the reply being written (the turn is left out of the conversation); between turns it clears the
      // line being typed, and on an empty one ends the chat.
      let replying: AbortController | undefined;
      const interrupt = () => {
        if (replying) replying.abort();
        else if (tty && lines.line) {
          lines.write(null, { ctrl: true, name: 'e' }); // to the end of the line, then under it: a fresh prompt
          process.stderr.write('^C\n');
          lines.write(null, { ctrl: true, name: 'u' });
        } else {
          if (tty) process.stderr.write('\n');
          lines.close();
        }
      };
      lines.on('SIGINT', interrupt); // a terminal: readline reads Ctrl-C itself
      process.on('SIGINT', interrupt);
      try {
        if (tty) {
          console.error(dim(help));
          lines.prompt();
        }
        for await (const line of lines) {
          const text = line.trim(), command = text.toLowerCase();
          if (command === '/exit' || command === '/quit') break;
          if (command === '/reset') { messages = start(); console.error(dim('(a new conversation)')); }
          else if (command === '/help') console.error(dim(help));
          // A mistyped command (/rest), or one with words after it (/reset please), is said so, not sent to the model as a
          // turn ("/usr/bin" or "/ 2" is a turn).
          else if (/^\/(exit|quit|reset|help)\s/.test(command)) console.error(`edgereason: chat: ${text.split(/\s/)[0]} takes nothing after it (nothing was sent)`);
          else if (/^\/[a-z]+$/.test(command)) console.error(`edgereason: chat: unknown command ${text} (the commands: /reset, /help, /exit or /quit)`);
          else if (text) {
            const asked = [...messages, { role: 'user' as const, content: text }];
            const written = transcript(process.stdout);
            replying = new AbortController();
            try {
              const r = await answer(model, asked, { ...options(turn++, replying.signal), onRoute: written.onRoute, onText: written.onText }, { router });
              written.end(r);
              if (r.finishReason === 'cancelled') console.error(dim('(stopped: this turn is left out of the conversation)'));
              else {
                // Cut off before any answer (in its thinking): no reply to keep (an empty turn would read as one that said nothing).
                const none = r.finishReason === 'length' && !r.answer.trim();
                if (!none) messages = [...asked, { role: 'assistant', content: r.answer }];
                const u = r.usage, cut = r.finishReason !== 'length' ? '' : r.samples[0].tokens < o.maxTokens ? ` (cut off: the model's context is full${asked.length > start().length + 1 ? '; /reset starts a new conversation' : ''})` : ' (cut off: --max-tokens)';
                console.error(dim(`[${r.route}${r.routerScore === undefined ? '' : ` (router ${r.routerScore.toFixed(2)}${r.escalation ? ', escalated by the gate' : ''})`}; ` +
                  `${r.route === 'reasoning' ? `${u.thinkingTokens} thinking + ` : ''}${u.answerTokens} answer token${u.answerTokens === 1 ? '' : 's'}${cut}; ` +
                  `prompt ${u.promptTokens} tokens, ${u.cachedTokens} of them from the prompt cache; TTFT ${r.ttftMs.toFixed(1)} ms, ${r.latencyMs.toFixed(0)} ms${guessesNote(r.samples.map((s) => s.guesses))}` +
                  `${answerTemperature(sampling.temperature, r.route, 1) > 0 ? `; seed ${seedAt(seed, turn - 1)}` : ''}]`));
                // In its thinking, or after it closed (a cap, or the model) with no room left for an answer.
                const s0 = r.samples[0], open = r.route === 'reasoning' && s0.tokens <= s0.thinkingTokens;
                const more = s0.tokens < o.maxTokens ? '' : `; a larger --max-tokens${open ? o.maxThinkingTokens === undefined ? ', or --max-thinking-tokens,' : '' : o.maxThinkingTokens === undefined || r.route !== 'reasoning' ? '' : ', or a lower --max-thinking-tokens,'} leaves room for one`;
                if (none) console.error(dim(`(cut off before any answer${open ? ', in its thinking' : r.route === 'reasoning' ? ', after its thinking' : ''}: this turn is left out of the conversation${more})`));
              }
            } catch (e) {
              // A turn that does not fit the context leaves the conversation as it was; any other error (the options,
              // the model) would fail every turn: it ends the chat.
              const message = inWordsOf('chat', (e as Error).message);
              if (!/context/.test(message)) answeringFor('chat')(e);
              console.error(`edgereason: ${cliWords(message)}${messages.length > start().length ? ' (/reset starts a new conversation)' : ''}`);
            } finally {
              replying = undefined;
            }
          }
          if (tty) lines.prompt();
        }
      } finally {
        process.off('SIGINT', interrupt);
        lines.close();
        await finish();
      }
    });
}
