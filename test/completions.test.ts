/**
 * The server's legacy text completions (POST /v1/completions) through the `openai` package, on the embedded model:
 * the text equals the library's own generateBatch of the same rows and seeds, streamed or not; errors name the field.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { createServer, type EdgeServer } from '../src/server/app.ts';
import { loadModel, type Model } from '../src/runtime/model.ts';
import { sharedPath } from './helpers/shared.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
let server: EdgeServer, client: OpenAI, model: Model;

before(async () => {
  server = await createServer({ model: path.join(ROOT, 'models/default'), port: 0, ctx: 1024 });
  client = new OpenAI({ baseURL: `${await server.listen()}/v1`, apiKey: 'none', maxRetries: 0 });
  model = await loadModel(path.join(ROOT, 'models/default'), { promptCache: 0 });
});

after(async () => {
  await server?.close();
  await model?.close();
});

const PROMPTS = ['Emma has 3 apples and buys 4 more. How many', 'The capital of'];

test('completions: each prompt n times, in OpenAI\'s order, as the library\'s generateBatch decodes the same rows with the same seed; usage counts each prompt once', async () => {
  const counted = server.metrics.promptTokens.get();
  const r = await client.completions.create({ model: 'default', prompt: PROMPTS, n: 2, max_tokens: 12, temperature: 0.9, seed: 5 });
  assert.equal(server.metrics.promptTokens.get() - counted, r.usage!.prompt_tokens, 'the metric counts each prompt once, as usage does');
  const want = await model.generateBatch([PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[1]], { maxTokens: 12, temperature: 0.9, seed: 5 });
  assert.equal(r.object, 'text_completion');
  assert.match(r.id, /^cmpl-/);
  assert.deepEqual(r.choices.map((c) => [c.index, c.text, c.finish_reason]), want.map((c, i) => [i, c.text, c.finishReason === 'length' ? 'length' : 'stop']));
  assert.ok(new Set(r.choices.map((c) => c.text)).size > 2, 'the rows draw independently');
  const promptTokens = PROMPTS.reduce((a, p) => a + model.encode(p, false).length, 0), completion = want.reduce((a, c) => a + c.tokens.length, 0);
  assert.deepEqual(r.usage, { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion, prompt_tokens_details: { cached_tokens: 0 } });
  // Greedy, a stop string, and OpenAI's default of 16 tokens.
  const greedy = await client.completions.create({ model: 'default', prompt: PROMPTS[1], temperature: 0 });
  const [own] = await model.generateBatch([PROMPTS[1]], { maxTokens: 16, temperature: 0 });
  assert.deepEqual([greedy.choices[0].text, greedy.usage?.completion_tokens], [own.text, own.tokens.length]);
  const cut = own.text.slice(2, 4);
  const stopped = await client.completions.create({ model: 'default', prompt: PROMPTS[1], temperature: 0, stop: [cut] });
  assert.deepEqual([stopped.choices[0].text, stopped.choices[0].finish_reason], [own.text.slice(0, own.text.indexOf(cut)), 'stop']);
  // OpenAI's presence and frequency penalties, as the library applies them (they were a 400).
  const looping = 'I am fine, thank you, thank you,', penalties = { presencePenalty: 0.5, frequencyPenalty: 1.5 };
  const [pen, loop] = await Promise.all([{ ...penalties }, {}].map(async (o) => (await model.generateBatch([looping], { maxTokens: 16, temperature: 0, ...o }))[0]));
  const penalised = await client.completions.create({ model: 'default', prompt: looping, temperature: 0, presence_penalty: 0.5, frequency_penalty: 1.5 });
  assert.equal(penalised.choices[0].text, pen.text);
  assert.deepEqual([loop.text.includes('shelf shelf shelf shelf'), pen.text.includes('shelf shelf')], [true, false], 'the penalties change the greedy text');
  // vLLM's min_tokens and ignore_eos (benchmark clients send them): the library's minTokens and ignoreEos, on a prompt
  // answered in one token without them.
  const turn = '<|im_start|>user\nCan you help me? Tell me the capital of Jastow. Just the answer, please.<|im_end|>\n<|im_start|>assistant\n';
  const [short, least] = await Promise.all([{}, { minTokens: 12 }].map(async (o) => (await model.generateBatch([turn], { maxTokens: 16, temperature: 0, ...o }))[0]));
  const atLeast = await client.completions.create({ model: 'default', prompt: turn, temperature: 0, min_tokens: 12 } as never) as { choices: { text: string }[] };
  const fixed = await client.completions.create({ model: 'default', prompt: turn, temperature: 0, max_tokens: 20, ignore_eos: true } as never) as { usage: { completion_tokens: number }; choices: { finish_reason: string }[] };
  assert.deepEqual([short.text, short.tokens.length, atLeast.choices[0].text, fixed.usage.completion_tokens, fixed.choices[0].finish_reason], ['Pirra', 1, least.text, 20, 'length']);
  assert.ok(least.tokens.length >= 12, least.text);
  // Nothing generated (echo at max_tokens 0): min_tokens asks for nothing.
  const echoed = await client.completions.create({ model: 'default', prompt: 'Hi', max_tokens: 0, echo: true, logprobs: 1, min_tokens: 2 } as never) as { choices: { text: string }[] };
  assert.equal(echoed.choices[0].text, 'Hi');
  // Prompt caching: a prompt (one row) that begins like a kept one is prefilled from where they differ; the text is
  // the library's, which keeps none here.
  const long = 'Emma has 3 apples and buys 4 more. Then she gives 2 to Tom and 1 to Zoe. How many apples does Emma have', n = model.encode(long, false).length;
  const [plain] = await model.generateBatch([long], { maxTokens: 8, temperature: 0 });
  for (const cached of [0, n - 1]) {
    const again = await client.completions.create({ model: 'default', prompt: long, max_tokens: 8, temperature: 0 });
    assert.deepEqual([again.choices[0].text, again.usage?.prompt_tokens_details?.cached_tokens], [plain.text, cached]);
  }
});

test('completions, streamed: the pieces add up to the same text, echo sends the prompt first, include_usage ends with the usage', async () => {
  const ask = { model: 'default', prompt: PROMPTS, max_tokens: 10, temperature: 0.7, seed: 11 };
  const whole = await client.completions.create(ask);
  const stream = await client.completions.create({ ...ask, stream: true, echo: true, stream_options: { include_usage: true } });
  const texts = ['', ''], finish: (string | null)[] = [null, null];
  let usage: unknown;
  for await (const c of stream) {
    assert.equal(c.object, 'text_completion');
    for (const ch of c.choices) { texts[ch.index] += ch.text; finish[ch.index] = ch.finish_reason ?? finish[ch.index]; }
    if (c.usage) usage = c.usage;
  }
  assert.deepEqual(texts, whole.choices.map((c, i) => PROMPTS[i] + c.text));
  assert.deepEqual(finish, whole.choices.map((c) => c.finish_reason));
  assert.deepEqual(usage, whole.usage);
  const echoed = await client.completions.create({ ...ask, echo: true });
  assert.deepEqual(echoed.choices.map((c) => c.text), whole.choices.map((c, i) => PROMPTS[i] + c.text));
  // A client that leaves mid-stream cancels its rows (they go back to the batch).
  const gone = new AbortController();
  const long = await client.completions.create({ model: 'default', prompt: PROMPTS[0], max_tokens: 500, stream: true }, { signal: gone.signal });
  const cancelled = server.metrics.cancelled.get();
  try { for await (const _ of long) gone.abort(); } catch { /* the client's own abort */ }
  for (let i = 0; i < 300 && server.admission.rowsInUse; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual([server.admission.rowsInUse, server.metrics.cancelled.get()], [0, cancelled + 1]);
});

test('completions: what it cannot do, a prompt that does not fit and an unknown model are refused naming the field', async () => {
  const refused = async (body: Record<string, unknown>, status: number, param: string | null, message: string) => {
    await assert.rejects(client.completions.create({ model: 'default', prompt: 'Hi', ...body } as never),
      (e: { status: number; param: string | null; message: string }) => e.status === status && e.param === param && e.message === `${status} ${message}`);
  };
  await refused({ prompt: [] }, 400, 'prompt', "Invalid value for 'prompt': must NOT have fewer than 1 items, got [].");
  await refused({ prompt: [1, 2, 99999] }, 400, 'prompt', "Invalid value for 'prompt': 99999 at position 2 is not a token id of this model (0..825).");
  await refused({ prompt: [[1], [2, 99999]] }, 400, 'prompt[1]', "Invalid value for 'prompt[1]': 99999 at position 1 is not a token id of this model (0..825).");
  await refused({ max_tokens: 0 }, 400, 'max_tokens', "Invalid value for 'max_tokens': 0 generates nothing; with 'echo' true (and 'logprobs') it returns the prompt scored.");
  await refused({ suffix: 'x' }, 400, 'suffix', "Unsupported parameter: 'suffix' (text to insert before) is not supported by edgereason.");
  await refused({ best_of: 3 }, 400, 'best_of', "Unsupported parameter: 'best_of' 3 (ranking more samples than n by log-probability; only best_of = n) is not supported by edgereason.");
  await refused({ presence_penalty: 2.5 }, 400, 'presence_penalty', "Invalid value for 'presence_penalty': must be <= 2, got 2.5.");
  await refused({ skip_special_tokens: false }, 400, 'skip_special_tokens', "Unsupported value: 'skip_special_tokens' false is not supported by edgereason: the text is decoded without the special tokens (vLLM's default, true).");
  await refused({ stream: true, stream_options: { continuous_usage_stats: true } }, 400, 'stream_options.continuous_usage_stats', "Unsupported parameter: 'stream_options.continuous_usage_stats' (usage on every chunk; include_usage sends it once, at the end) is not supported by edgereason.");
  // What asks for nothing passes, as on chat (benchmark clients send these).
  const quiet = await client.completions.create({ model: 'default', prompt: 'Hi', max_tokens: 2, skip_special_tokens: true, stream: true, stream_options: { include_usage: false, continuous_usage_stats: false } } as never) as unknown as AsyncIterable<unknown>;
  for await (const _ of quiet) { /* drained */ }
  await refused({ prompt: '' }, 400, 'prompt', "Invalid value for 'prompt': the prompt is empty (it encodes to no tokens, and a model continues some text).");
  await refused({ prompt: ['Hi', ''] }, 400, 'prompt[1]', "Invalid value for 'prompt[1]': the prompt is empty (it encodes to no tokens, and a model continues some text).");
  const long = 'one two three four '.repeat(300), tokens = model.encode(long, false).length;
  await refused({ prompt: long, max_tokens: 10 }, 400, 'max_tokens', `This model's maximum context length is 1024 tokens. However, you requested ${tokens + 10} tokens (${tokens} in the prompt, 10 in the completion). Please reduce the length of the prompt or completion.`);
  await refused({ n: 9 }, 400, 'n', "Invalid value for 'n': 9 choices for each of 1 prompt is more than this server decodes for one request (8).");
  // Megabytes of prompt are refused by their length before tokenizing (which held up every other request for seconds).
  const huge = 'x'.repeat(1024 * 13 + 1);
  await refused({ prompt: ['Hi', huge] }, 400, 'prompt[1]', `This model's maximum context length is 1024 tokens. However, your prompt is ${huge.length} characters long, and no token of this model spans more than 13 characters, so it needs more than 1024 tokens. Please reduce the length of the prompt.`);
  await refused({ model: 'nope' }, 404, 'model', "The model 'nope' does not exist. Served models: default, reasoning.");
  await refused({ messages: [] }, 400, 'messages', "Unrecognized request argument supplied: messages");
});

test('logprobs: the tokens\' log-probabilities and the most likely tokens, as the library reports them; chat\'s for the answer after the thinking, streamed whole with the finish', async () => {
  const [own] = await model.generateBatch([PROMPTS[0]], { maxTokens: 6, temperature: 0, topLogprobs: 2 });
  const r = await client.completions.create({ model: 'default', prompt: PROMPTS[0], max_tokens: 6, temperature: 0, logprobs: 2 });
  const text = (id: number) => model.tokenizer.decode([id]), lp = r.choices[0].logprobs!;
  assert.deepEqual(lp.tokens, own.tokens.map(text));
  assert.deepEqual(lp.token_logprobs, own.logprobs);
  assert.deepEqual(lp.text_offset, own.tokens.map((_, i) => own.tokens.slice(0, i).map(text).join('').length));
  assert.deepEqual(lp.top_logprobs, own.topLogprobs!.map((top) => Object.fromEntries(top.map(([t, v]) => [text(t), v])))); // greedy: the sampled token is the first
  assert.ok(own.topLogprobs!.every((top, i) => top[0][0] === own.tokens[i] && top[0][1] >= top[1][1]));
  const streamed = await client.completions.create({ model: 'default', prompt: PROMPTS[0], max_tokens: 6, temperature: 0, logprobs: 2, stream: true });
  let last: unknown;
  for await (const c of streamed) if (c.choices[0]?.finish_reason) last = c.choices[0].logprobs;
  assert.deepEqual(last, lp);
  // echo with logprobs: the prompt scored (its first token has none), then the continuation, as lm-evaluation-harness asks for them.
  const scored = await model.promptLogprobs(PROMPTS[0], { topLogprobs: 2 });
  const only = await client.completions.create({ model: 'default', prompt: PROMPTS[0], max_tokens: 0, echo: true, logprobs: 2 });
  const olp = only.choices[0].logprobs!;
  assert.deepEqual([only.choices[0].text, only.choices[0].finish_reason, only.usage?.completion_tokens], [PROMPTS[0], 'length', 0]);
  assert.deepEqual(olp.tokens, scored.tokens.map(text));
  assert.deepEqual(olp.token_logprobs, scored.logprobs);
  assert.equal(olp.token_logprobs![0], null);
  assert.equal(olp.top_logprobs![0], null);
  assert.equal(olp.text_offset!.at(-1), PROMPTS[0].length - text(scored.tokens.at(-1)!).length);
  // Offsets index the text as typed: special tokens written in it count, as do characters beyond the BMP (code points).
  const typed = 'Emma<|im_end|> has 3 apples', marked = (await client.completions.create({ model: 'default', prompt: typed, max_tokens: 0, echo: true, logprobs: 0 })).choices[0].logprobs!;
  assert.ok(marked.tokens!.includes('<|im_end|>'));
  marked.tokens!.forEach((t, i) => assert.ok(typed.slice(marked.text_offset![i]).startsWith(t), `${JSON.stringify(t)} at ${marked.text_offset![i]}`));
  const { completionLogprobs } = await import('../src/server/logprobs.ts');
  const astral = { ...model.tokenizer, decode: (ids: readonly number[]) => ids.map((id) => ['😀', ' end'][id]).join(''), tokenBytes: (id: number) => new Uint8Array(Buffer.from(['😀', ' end'][id])), specialIds: new Set<number>() } as never;
  assert.deepEqual(completionLogprobs(astral, { tokens: [0, 0, 1], logprobs: [null, -1, -1] }, 0).text_offset, [0, 1, 2]);
  // Token ids, as lm-evaluation-harness sends them by default (tokenized_requests): the same as the text they encode.
  const ids = model.encode(PROMPTS[0], false);
  const byIds = await client.completions.create({ model: 'default', prompt: [ids, ids], max_tokens: 6, temperature: 0, echo: true, logprobs: 2 } as never);
  assert.deepEqual(byIds.choices.map((c) => [c.text, c.logprobs!.token_logprobs]), [0, 1].map(() => [model.tokenizer.decode(ids) + r.choices[0].text, [...olp.token_logprobs!, ...lp.token_logprobs!]]));
  await assert.rejects(model.complete(ids, { chat: true }), /^Error: generate: the prompt is token ids, a raw prompt: the chat template renders text and messages \(leave chat out\)$/);
  await assert.rejects(model.complete([1, -2]), /^Error: generate: the prompt holds -2 at position 1, not a token id of this model \(0\.\.825\)$/);
  // Which prompt of a batch is not one (it was "a prompt must be …, got number"), and promptLogprobs' own errors in its name.
  await assert.rejects(model.generateBatch(['a', 5 as never]), /^Error: generate: prompt 1 must be text, a list of messages or token ids, got 5$/);
  await assert.rejects(model.promptLogprobs([1, 900]), /^Error: promptLogprobs: the prompt holds 900 at position 1, not a token id of this model \(0\.\.825\)$/);
  await assert.rejects(model.promptLogprobs(Array(1100).fill(1)), /^Error: promptLogprobs: the prompt is 1100 tokens, more than the model's context of 1024$/);
  assert.equal((await model.complete(ids, { maxTokens: 6 })).text, r.choices[0].text);
  const both = await client.completions.create({ model: 'default', prompt: PROMPTS[0], max_tokens: 6, temperature: 0, echo: true, logprobs: 2 });
  assert.equal(both.choices[0].text, PROMPTS[0] + r.choices[0].text);
  assert.deepEqual(both.choices[0].logprobs!.tokens, [...olp.tokens!, ...lp.tokens!]);
  assert.deepEqual(both.choices[0].logprobs!.token_logprobs, [...olp.token_logprobs!, ...lp.token_logprobs!]);

  // Chat, the base model: as the library's chat completion of the same messages.
  const messages = [{ role: 'user' as const, content: 'What is the capital of France?' }];
  const [chat] = await model.generateBatch([messages], { maxTokens: 8, temperature: 0, topLogprobs: 3, chat: true });
  const c = await client.chat.completions.create({ model: 'default', messages, max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 3 });
  const content = c.choices[0].logprobs!.content!;
  // (The same values to float32 rounding: the reply's first token is drawn from the prefill's logits, normalised in JS.)
  const near = (a: number, b: number) => Math.abs(a - b) < 1e-5;
  assert.deepEqual(content.map((t) => [t.token, t.bytes]), chat.tokens.map((id) => [text(id), [...Buffer.from(text(id))]]));
  assert.ok(content.every((t, i) => near(t.logprob, chat.logprobs[i])), JSON.stringify([content.map((t) => t.logprob), chat.logprobs]));
  assert.deepEqual(content.map((t) => t.top_logprobs.map((x) => x.token)), chat.topLogprobs!.map((top) => top.map(([t]) => text(t))));
  assert.ok(content.every((t, i) => t.top_logprobs.every((x, j) => near(x.logprob, chat.topLogprobs![i][j][1]))));
  // The reasoning adapter: the answer's tokens only, streamed whole with each choice's finish_reason.
  const ask = { model: 'reasoning', messages: [{ role: 'user' as const, content: 'Tom has 4 boxes with 6 pens in each. He gives away 5 pens. How many pens does he have?' }], max_tokens: 200, temperature: 0, logprobs: true, edgereason: { reasoning: 'on' } };
  const reasoned = await client.chat.completions.create(ask as never) as unknown as { choices: { message: { content: string; reasoning_content: string }; logprobs: { content: { token: string }[] } }[] };
  assert.ok(reasoned.choices[0].message.reasoning_content.length > 0);
  assert.equal(reasoned.choices[0].logprobs.content.map((t) => t.token).join(''), reasoned.choices[0].message.content); // (not the "\n\n" after the closing tag)
  // Capped: the forced close's tokens are not the model's, nor in the content.
  const capped = await client.chat.completions.create({ ...ask, thinking_token_budget: 3 } as never) as unknown as typeof reasoned;
  assert.equal(capped.choices[0].logprobs.content.map((t) => t.token).join(''), capped.choices[0].message.content);
  const chunks = await client.chat.completions.create({ ...ask, stream: true } as never) as unknown as AsyncIterable<{ choices: { finish_reason: string | null; logprobs: unknown }[] }>;
  let finished: unknown;
  for await (const ch of chunks) if (ch.choices[0]?.finish_reason) finished = ch.choices[0].logprobs;
  assert.deepEqual(finished, { ...reasoned.choices[0].logprobs, refusal: null });
  // A stop string cuts the content: the tokens after the one it begins in are not the content's.
  const ask2 = [{ role: 'user' as const, content: 'Hello! How are you?' }]; // "Hello! How can I help?"
  const [long] = await model.generateBatch([ask2], { maxTokens: 12, temperature: 0, chat: true }), pieces = long.tokens.map(text);
  const cut = pieces.findIndex((p, i) => i >= 2 && p.trim().length > 1 && !pieces.slice(0, i).join('').includes(p));
  assert.ok(cut > 0, JSON.stringify(pieces));
  const stopped = await client.chat.completions.create({ model: 'default', messages: ask2, max_tokens: 12, temperature: 0, logprobs: true, stop: [pieces[cut]] });
  assert.deepEqual([stopped.choices[0].message.content, stopped.choices[0].logprobs!.content!.map((t) => t.token)], [pieces.slice(0, cut).join(''), pieces.slice(0, cut)]);
  await assert.rejects(client.chat.completions.create({ model: 'default', messages, top_logprobs: 2 }),
    (e: { status: number; param: string }) => e.status === 400 && e.param === 'top_logprobs');
});

test('logprobs on a SentencePiece model (llama2.c stories260K): one entry per answer token, their bytes the content (the first piece\'s space counted, the last token was dropped), their texts their bytes', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-sp-'));
  for (const f of ['stories260K.bin', 'tok512.bin']) fs.symlinkSync(sharedPath(`models/stories260K/${f}`), path.join(dir, f));
  fs.writeFileSync(path.join(dir, 'chat_template.jinja'), '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}');
  const sp = await createServer({ model: path.join(dir, 'stories260K.bin'), port: 0 });
  try {
    const c = new OpenAI({ baseURL: `${await sp.listen()}/v1`, apiKey: 'none', maxRetries: 0 });
    for (const seed of [1, 2, 3]) {
      const r = await c.chat.completions.create({ model: 'stories260K', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, logprobs: true, seed });
      const entries = r.choices[0].logprobs!.content!, content = r.choices[0].message.content!;
      assert.equal(entries.length, r.usage!.completion_tokens, `seed ${seed}: ${JSON.stringify(content)}`);
      assert.equal(Buffer.from(entries.flatMap((e) => e.bytes!)).toString('utf8').trimStart(), content);
      // Each token's text is its bytes as text: a piece keeps the space it stands for (" Once", was "Once").
      for (const e of entries) assert.equal(e.token, Buffer.from(e.bytes!).toString('utf8'), JSON.stringify(e));
      assert.ok(entries.some((e) => e.token.startsWith(' ')), JSON.stringify(entries));
    }
  } finally {
    await sp.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
