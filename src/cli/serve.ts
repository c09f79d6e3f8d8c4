import os from 'node:os';
import path from 'node:path';
import { shortName } from '../io/hub.ts';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { MAX_THREADS } from '../runtime/threads.ts';
import { lateProgress, onStopSignals } from '../train/progress.ts';
import { thinkingNote } from './answer.ts';
import { thinksByItself } from '../reason/answer.ts';
import { parseAdapterArg, type AdapterSpec } from '../server/models.ts';
import { DEFAULT_EFFORT_BUDGETS, type EffortBudgets } from '../server/chat.ts';
import { cliWords, floatArg, intArg, quantArg } from './main.ts';
import { modelOption, negatedFlag, PROMPT_LOOKUP_HELP, ropeScalingOf, ropeScalingOptions } from './load.ts';
import { VOTE_METHODS } from '../reason/vote.ts';
import { shown } from '../show.ts';

function effortBudgets(v: string): Partial<EffortBudgets> {
  let o: unknown;
  try { o = JSON.parse(v); } catch (e) { throw new InvalidArgumentError(`--reasoning-effort-budgets is not valid JSON: ${(e as Error).message}`); }
  if (!o || typeof o !== 'object' || Array.isArray(o)) throw new InvalidArgumentError('--reasoning-effort-budgets must be a JSON object like {"low":32,"medium":64,"high":128}');
  for (const [k, n] of Object.entries(o)) {
    if (!['minimal', 'low', 'medium', 'high'].includes(k)) throw new InvalidArgumentError(`--reasoning-effort-budgets: unknown effort "${k}" (use minimal, low, medium, high)`);
    if (!Number.isInteger(n) || (n as number) < 1) throw new InvalidArgumentError(`--reasoning-effort-budgets: "${k}" must be a positive integer number of thinking tokens, got ${shown(n)}`);
  }
  return o as Partial<EffortBudgets>;
}

export function serveCommand(program: Command): void {
  const serve = program.command('serve'), checks = ['router', 'verifier'].map((name) => negatedFlag(serve, name));
  ropeScalingOptions(serve
    .description('OpenAI-compatible server (chat completions with reasoning, streaming, continuous batching) and a playground page')
    .addOption(modelOption())
    .option('--adapter <name=dir...>', 'PEFT adapter(s) served as model "name" (a folder alone: under its own name; default: <model>/reasoning-adapter as "reasoning")')
    .option('--router <file>', 'router.json (default: <model>/router.json when present)')
    .option('--no-router', 'no router, not even <model>/router.json: reasoning "auto" reasons on every request')
    .option('--verifier <file>', 'verifier.json (default: <model>/verifier.json when present)')
    .option('--no-verifier', 'no verifier, not even <model>/verifier.json (the verifier votes are then refused)')
    .option('--native-thinking', 'the model thinks by itself (e.g. Qwen3): serve it as its own reasoner, no adapter; direct answers follow an empty thinking block')
    .option('--served-model-name <id>', 'model id of the base model (default: the model folder name)')
    .option('--port <n>', 'port', intArg('--port', 0, 65535), 8080)
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--cors-origin <origin...>', 'let web pages of these origins call the API from a browser (CORS), e.g. http://localhost:3000, or * for any (default: none)')
    .option('--max-batch <n>', 'sequences decoding at once across requests', intArg('--max-batch', 1), 16)
    .option('--max-queue <n>', 'requests waiting for a batch slot before 429', intArg('--max-queue', 0), 64)
    .option('--ctx <n>', 'context limit in tokens (default 4096, as llama.cpp\'s server; clamped to the model\'s)', intArg('--ctx', 2))
    .option('--max-n <n>', 'largest n (choices) per request (default: min(8, --max-batch))', intArg('--max-n', 1))
    .option('--max-samples <n>', 'largest edgereason.samples (reasoning samples voted into one choice) per request (default: min(8, --max-batch))', intArg('--max-samples', 1))
    .option('--max-tokens <n>', 'default max_tokens of a chat request that gives none (default 512; /v1/completions: 16, as OpenAI\'s)', intArg('--max-tokens', 1))
    .option('--answer-reserve <n>', 'tokens of max_tokens the thinking cap always leaves for the answer (at most half of max_tokens)', intArg('--answer-reserve', 0), 32)
    .option('--reasoning-effort-budgets <json>', `reasoning_effort → thinking tokens (default ${JSON.stringify(DEFAULT_EFFORT_BUDGETS)}, the RL budgets), e.g. '{"low":32,"medium":64,"high":128}'`, effortBudgets)
    .option('--vote <method>', `how samples are combined when a request names no edgereason.vote: ${VOTE_METHODS.join(' | ')}`, 'majority')
    .option('--temperature <t>', 'temperature when a request gives none (default: the model\'s generation_config.json, else 1 as OpenAI)', floatArg('--temperature', 0, 2))
    .option('--quant <q>', 'q4, q8 or fp32', quantArg))
    .option('--threads <n>', 'ONNX Runtime threads per model', intArg('--threads', 1, MAX_THREADS))
    .option('--prompt-cache <MiB>', 'prompt KV caches kept so that a request beginning like an earlier one (a chat\'s next turn) prefills only the rest; default 256, or room for 4,096 prompt tokens where those take more (a 7B model\'s); 0: none', intArg('--prompt-cache', 0))
    .option('--prompt-cache-file <file>', 'read the prompt cache from this file at start (when it exists) and save it there at shutdown when something new was kept: a long system prompt is prefilled once, not once per restart (needs --prompt-cache above 0)')
    .option('--prompt-lookup <n>', `${PROMPT_LOOKUP_HELP}; a request decoding beside others steps without guesses`, intArg('--prompt-lookup', 0, 64), 0)
    .option('--shutdown-grace <ms>', 'on SIGTERM or Ctrl-C, how long in-flight requests may finish before they are cancelled (a second signal cancels them at once)', intArg('--shutdown-grace', 0, 2 ** 31 - 1), 10000)
    .addOption(new Option('--reasoning-format <where>', 'a reply\'s thinking in reasoning_content (separate, as vLLM\'s reasoning parsers and llama.cpp\'s deepseek format) or in content between <think> and </think> (inline, as llama.cpp\'s none: for clients that read only content, benchmark clients among them)').choices(['separate', 'inline']).default('separate'))
    .option('--sse-keepalive <ms>', 'a stream quiet this long (a long prefill, a queue) gets a ": keep-alive" comment, so that a proxy does not cut it; 0: none (some benchmark clients read every line as JSON and fail on one)', intArg('--sse-keepalive', 0, 2 ** 31 - 1), 15000)
    .option('--log', 'log every request (fastify/pino JSON lines)')
    .action(async (o) => {
      for (const check of checks) check();
      const adapters: AdapterSpec[] | undefined = o.adapter ? (o.adapter as string[]).map(parseAdapterArg) : undefined;
      // The server (fastify) is loaded by serve alone: every other command starts without it.
      const { createServer, isLoopback } = await import('../server/app.ts');
      const bar = lateProgress(`loading ${shortName(o.model)}`, 'M weights');
      const server = await createServer({
        model: o.model, adapters, router: o.router, verifier: o.verifier, servedModelName: o.servedModelName, nativeThinking: !!o.nativeThinking,
        host: o.host, port: o.port, corsOrigins: o.corsOrigin, maxBatch: o.maxBatch, maxQueue: o.maxQueue, ctx: o.ctx, maxN: o.maxN, maxSamples: o.maxSamples,
        defaultMaxTokens: o.maxTokens, answerReserve: o.answerReserve, effortBudgets: o.reasoningEffortBudgets,
        defaultTemperature: o.temperature, defaultVote: o.vote, quant: o.quant, ropeScaling: ropeScalingOf(o), threads: o.threads, promptCache: o.promptCache, promptCacheFile: o.promptCacheFile, promptLookup: o.promptLookup, shutdownGraceMs: o.shutdownGrace, sseKeepAliveMs: o.sseKeepalive, reasoningFormat: o.reasoningFormat, logger: !!o.log, onLoadProgress: bar.update, onLoadNote: (note) => console.error(cliWords(note)),
      }).finally(() => bar.stop());
      let url: string;
      try {
        url = await server.listen();
      } catch (e) {
        await server.close(0);
        throw new Error(`cannot listen on ${o.host}:${o.port}: ${(e as Error).message}`);
      }
      const ids = [...server.served.models.keys()];
      const models = [...server.served.models.values()];
      if (models.every((m) => m.kind === 'base') && thinksByItself(models[0].model)) console.error(thinkingNote('content'));
      const sampling = server.served.sampling;
      const own = Object.entries(sampling ?? {}).filter(([k]) => k !== 'temperature' || o.temperature === undefined);
      if (own.length) console.error(`edgereason: note: requests that leave them out sample with ${path.join(o.model, 'generation_config.json')}'s ${own.map(([k, v]) => `${k} ${v}`).join(', ')}${o.temperature !== undefined ? ` and --temperature ${o.temperature}` : ''}`);
      console.log(`edgereason: serving ${ids.join(', ')} at ${url}/v1 (playground: ${url}/)`);
      const bound = server.app.server.address();
      if (bound && typeof bound === 'object' && !isLoopback(bound.address)) console.error(`edgereason: note: listening on ${bound.address}, beyond this machine: the API has no authentication and no per-client limits; on a shared network put it behind a proxy that has them`);
      // The first SIGTERM or Ctrl-C lets in-flight requests finish (--shutdown-grace), the second cancels them (the
      // prompt cache file is still saved), the third exits at once.
      await new Promise<void>((resolve) => {
        let signals = 0;
        const stop = (sig: NodeJS.Signals) => {
          if (++signals === 3) process.exit(128 + os.constants.signals[sig]);
          const again = signals === 2;
          console.log(again ? `edgereason: ${sig}: cancelling ${server.admission.active} in-flight request(s) now (a third signal exits at once)`
            : `edgereason: ${sig}: finishing ${server.admission.active} in-flight request(s), then shutting down (a second signal cancels them)`);
          const closed = server.close(again ? 0 : undefined); // the second call shortens the first's wait
          if (!again) closed.then(({ cancelled }) => { if (cancelled) console.log(`edgereason: cancelled ${cancelled} request${cancelled === 1 ? '' : 's'} still running ${signals > 1 ? 'at the second signal' : `after --shutdown-grace ${o.shutdownGrace} ms`}`); resolve(); }, (e) => { console.error(`edgereason: shutdown failed: ${(e as Error).message}`); process.exitCode = 1; resolve(); });
          else closed.catch(() => undefined); // the first call's handler says how the shutdown ended
        };
        onStopSignals(stop);
      });
      console.log('edgereason: stopped');
    });
}
