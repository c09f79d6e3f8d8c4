import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import type { Token } from 'node-llama-cpp';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  bf16BitsToF32, f16BitsToF32, f32ToBf16Array, f32ToBf16Bits, f32ToF16Array, f32ToF16Bits, f16ToF32Array, bf16ToF32Array,
  openSafetensors, sampledSha256, sha256Of, writeSafetensors,
} from '../src/io/safetensors.ts';
import { loadHfFolder, parseHfConfig } from '../src/io/hf-folder.ts';
import { tokenizerFromGguf } from '../src/tokenizer/gguf.ts';
import { loadTokenizer } from '../src/tokenizer/hf.ts';
import {
  decodeGgml, encodeGgml, ggufToModel, openGguf, permuteQK, quantizeQ4_0, quantizeQ8_0, typed, writeGguf, writeModelGguf,
} from '../src/io/gguf.ts';
import { MemoryWeights } from '../src/io/weights.ts';
import { convertCommandLine, expandHome, openSource, openSourceFiles, shellQuote } from '../src/io/source.ts';
import { copyCommand } from '../src/cli/convert.ts';
import { gguf } from '@huggingface/gguf';
import { quantizeQ4 } from '../src/onnx/quant.ts';
import { checkModelConfig } from '../src/models/config.ts';
import { asGgufConfig, hfConfig, makeRandomQwen2, qwenTokenizer, type RandomModel } from './helpers/random-model.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-io-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const file = (name: string) => path.join(tmp, name);
const seq = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));
const hex = (s: string) => Uint8Array.from(s.match(/../g)!.map((b) => parseInt(b, 16)));

describe('half precision', () => {
  it('fp16 rounds to nearest even, with subnormals, overflow and NaN', () => {
    assert.equal(f32ToF16Bits(1), 0x3c00);
    assert.equal(f32ToF16Bits(-2), 0xc000);
    assert.equal(f32ToF16Bits(65504), 0x7bff);
    assert.equal(f32ToF16Bits(65520), 0x7c00); // halfway to the next binade rounds up to inf
    assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00); // tie -> even
    assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02); // tie -> even (up)
    assert.equal(f32ToF16Bits(2 ** -24), 0x0001);
    assert.equal(f32ToF16Bits(2 ** -25), 0x0000); // tie with 0 -> even
    assert.equal(f32ToF16Bits(1.5 * 2 ** -24), 0x0002);
    assert.equal(f32ToF16Bits(-0), 0x8000);
    assert.ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN))));
    for (let h = 0; h < 0x7c00; h += 7) assert.equal(f32ToF16Bits(f16BitsToF32(h)), h);
  });
  it('bf16 rounds to nearest even', () => {
    assert.equal(f32ToBf16Bits(1), 0x3f80);
    assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80);
    assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82);
    assert.equal(bf16BitsToF32(0xc020), -2.5);
    assert.ok(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN))));
  });
});

describe('safetensors', () => {
  const tensors = { a: { shape: [2, 3], data: seq(6, (i) => i / 3 - 1) }, 'b.weight': { shape: [5], data: seq(5, (i) => 1e-3 * i + 100) } };

  for (const dtype of ['F32', 'F16', 'BF16'] as const) {
    it(`round trips ${dtype} with metadata and an 8-byte aligned header`, () => {
      const p = file(`rt-${dtype}.safetensors`);
      writeSafetensors(p, tensors, { dtype, metadata: { format: 'pt' } });
      assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')), []);
      const headerLen = Number(fs.readFileSync(p).readBigUInt64LE(0));
      assert.equal((8 + headerLen) % 8, 0);
      const f = openSafetensors(p);
      assert.deepEqual(f.metadata, { format: 'pt' });
      assert.deepEqual(f.names, ['a', 'b.weight']);
      assert.deepEqual(f.shape('a'), [2, 3]);
      assert.equal(f.info('b.weight').dtype, dtype);
      const cast = (x: Float32Array) => dtype === 'F32' ? x : dtype === 'F16' ? f16ToF32Array(f32ToF16Array(x)) : bf16ToF32Array(f32ToBf16Array(x));
      for (const [name, t] of Object.entries(tensors)) assert.deepEqual(f.get(name), cast(t.data));
    });
  }

  it('reads rows of a 2-D float tensor apart (F32, F16, BF16): the same values as the whole; a non-finite one named by its index in the whole', () => {
    const w = seq(7 * 32, (i) => Math.sin(i) * 3);
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      const p = file(`rows-${dtype}.safetensors`);
      writeSafetensors(p, { w: { shape: [7, 32], data: w }, v: { shape: [7 * 32], data: w } }, { dtype });
      const f = openSafetensors(p), whole = f.get('w');
      for (const [from, to] of [[0, 7], [0, 1], [2, 5], [6, 7]]) assert.deepEqual(f.rows('w', from, to), whole.subarray(from * 32, to * 32), `${dtype} ${from}..${to}`);
      assert.throws(() => f.rows('w', 3, 8), { message: `${p}: tensor "w" (${dtype} [7, 32]) has no rows 3..8 (2-D float tensors only)` });
      assert.throws(() => f.rows('v', 0, 1), { message: `${p}: tensor "v" (${dtype} [224]) has no rows 0..1 (2-D float tensors only)` });
    }
    const bad = w.slice();
    bad[3 * 32 + 5] = NaN;
    const p = file('rows-nan.safetensors');
    writeSafetensors(p, { w: { shape: [7, 32], data: bad } });
    assert.deepEqual(openSafetensors(p).rows('w', 0, 3), w.subarray(0, 96));
    assert.throws(() => openSafetensors(p).rows('w', 2, 5), { message: `${p}: tensor "w" holds NaN at element 101: weights must be finite (the file is corrupt, or was saved from a training run that diverged)` });
  });

  it('refuses to write F16 values past its range (they were written as Infinity, and the file then refused as corrupt); the file there is kept', () => {
    const p = file('f16-range.safetensors'), w = Float32Array.from([1, 65519, -2]);
    writeSafetensors(p, { w: { shape: [3], data: w } }, { dtype: 'F16' });
    assert.deepEqual(openSafetensors(p).get('w'), Float32Array.from([1, 65504, -2]));
    for (const x of [65520, -1e6]) {
      assert.throws(() => writeSafetensors(p, { w: { shape: [3], data: Float32Array.from([1, 2, x]) } }, { dtype: 'F16' }), { message: `${p}: tensor "w" holds ${x} at element 2, beyond float16's range (±65504): write it as bf16 or f32` });
    }
    assert.deepEqual(openSafetensors(p).get('w'), Float32Array.from([1, 65504, -2]));
    writeSafetensors(p, { w: { shape: [1], data: Float32Array.from([65520]) } }, { dtype: 'BF16' });
    assert.deepEqual(openSafetensors(p).get('w'), Float32Array.from([65536]));
  });

  const rawFile = (name: string, header: object, dataBytes: number) => {
    const json = Buffer.from(JSON.stringify(header)), b = Buffer.alloc(8 + json.length + dataBytes);
    b.writeBigUInt64LE(BigInt(json.length));
    json.copy(b, 8);
    fs.writeFileSync(file(name), b);
    return file(name);
  };

  it('sampledSha256: evenly spaced blocks, the first at the start and the last at the end; a file no larger is hashed whole', () => {
    const f = path.join(tmp, 'sampled.bin'), bytes = Buffer.alloc(1024, 7);
    fs.writeFileSync(f, bytes);
    const sum = sampledSha256(f, 4, 16); // blocks at 0, 336, 672 and 1008 (to the last byte)
    const changed = (at: number) => { const b = Buffer.from(bytes); b[at] ^= 1; fs.writeFileSync(f, b); const s = sampledSha256(f, 4, 16); fs.writeFileSync(f, bytes); return s !== sum; };
    assert.deepEqual([0, 15, 336, 680, 1008, 1023].map(changed), [true, true, true, true, true, true]);
    assert.deepEqual([16, 500, 1007].map(changed), [false, false, false], 'between the blocks: not read (the check is a sample)');
    assert.equal(sampledSha256(f, 64, 16), sha256Of(f));
  });

  it('rejects a truncated file, naming file, tensor and offsets', () => {
    const p = file('trunc.safetensors');
    writeSafetensors(p, tensors);
    fs.truncateSync(p, fs.statSync(p).size - 4);
    assert.throws(() => openSafetensors(p), (e: Error) => e.message.includes(p) && e.message.includes('"b.weight"') && e.message.includes('[24,44]') && /outside the file/.test(e.message));
    fs.writeFileSync(p, Buffer.alloc(5));
    assert.throws(() => openSafetensors(p), new RegExp(`${p}: truncated safetensors file \\(5 bytes`));
    const folder = file('folder.safetensors');
    fs.mkdirSync(folder);
    assert.throws(() => openSafetensors(folder), new RegExp(`^Error: ${folder} is a folder, not a safetensors file$`));
  });
  it('rejects a header length beyond the file', () => {
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(1000n);
    fs.writeFileSync(file('long.safetensors'), b);
    assert.throws(() => openSafetensors(file('long.safetensors')), /long\.safetensors: header length 1000 goes beyond the end of the file \(16 bytes\)/);
    // A repository cloned without git-lfs holds pointers.
    const pointer = 'version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 988097824\n';
    fs.writeFileSync(file('lfs.safetensors'), pointer);
    assert.throws(() => openSafetensors(file('lfs.safetensors')), /lfs\.safetensors: a Git LFS pointer \(\d+ bytes\), not the weights: fetch them \(git lfs pull/);
    fs.writeFileSync(file('lfs.gguf'), pointer);
    assert.throws(() => openGguf(file('lfs.gguf')), /lfs\.gguf: a Git LFS pointer .*, not the model: fetch it \(git lfs pull/);
  });
  it('rejects data_offsets outside the file or inconsistent with the shape', () => {
    const out = rawFile('out.safetensors', { w: { dtype: 'F32', shape: [1000], data_offsets: [0, 4000] } }, 16);
    assert.throws(() => openSafetensors(out), /out\.safetensors: tensor "w": data_offsets \[0,4000\] point outside the file \(data section has 16 bytes\)/);
    const bad = rawFile('bad.safetensors', { w: { dtype: 'F16', shape: [2, 3], data_offsets: [0, 8] } }, 8);
    assert.throws(() => openSafetensors(bad), /bad\.safetensors: tensor "w": data_offsets \[0,8\] span 8 bytes but shape \[2,3\] × F16 needs 12/);
  });
  it('rejects an unknown dtype', () => {
    const p = rawFile('dtype.safetensors', { w: { dtype: 'F8_E4M3', shape: [4], data_offsets: [0, 4] } }, 4);
    assert.throws(() => openSafetensors(p), /dtype\.safetensors: tensor "w" has unsupported dtype "F8_E4M3" \(supported: .*BF16/);
  });
  it('reads "__metadata__" only as the format gives it: names to strings, or null', () => {
    const w = { dtype: 'F32', shape: [1], data_offsets: [0, 4] };
    assert.deepEqual(openSafetensors(rawFile('meta.safetensors', { __metadata__: { format: 'pt' }, w }, 4)).metadata, { format: 'pt' });
    assert.deepEqual(openSafetensors(rawFile('null-meta.safetensors', { __metadata__: null, w }, 4)).metadata, {});
    assert.throws(() => openSafetensors(rawFile('num-meta.safetensors', { __metadata__: { format: 'pt', step: 3 }, w }, 4)),
      /num-meta\.safetensors: "__metadata__" gives "step" the value 3; the format allows only strings there/);
    assert.throws(() => openSafetensors(rawFile('list-meta.safetensors', { __metadata__: ['pt'], w }, 4)),
      /list-meta\.safetensors: "__metadata__" is \["pt"\]; the format makes it an object of strings/);
  });
});

describe('Hugging Face config.json', () => {
  const base = hfConfig({ ...qwenConfigForTests() });
  it('parses Qwen2 and applies defaults', () => {
    const c = parseHfConfig({ ...base, num_key_value_heads: undefined, rope_theta: undefined, rms_norm_eps: undefined, eos_token_id: 5 });
    assert.equal(c.architecture, 'qwen2');
    assert.equal(c.numKvHeads, c.numHeads);
    assert.equal(c.ropeTheta, 10000);
    assert.equal(c.rmsNormEps, 1e-6);
    assert.equal(c.headDim, 16);
    assert.equal(c.attentionBias, true);
    assert.deepEqual(c.eosTokenIds, [5]);
  });
  it('maps Llama and Mistral, with attention_bias from the config', () => {
    const llama = { ...base, architectures: ['LlamaForCausalLM'], model_type: 'llama' };
    assert.equal(parseHfConfig(llama).attentionBias, false);
    // Llama's attention_bias also biases o_proj, which the graph does not have; Qwen2's q/k/v biases it does.
    assert.throws(() => parseHfConfig({ ...llama, attention_bias: true }, 'l/config.json'), /l\/config\.json: attention_bias = true is not supported for "LlamaForCausalLM" \(its o_proj bias/);
    assert.throws(() => parseHfConfig({ ...llama, mlp_bias: true }), /mlp_bias = true is not supported/);
    // transformers' Qwen2 has q/k/v biases whatever attention_bias says.
    assert.equal(parseHfConfig({ ...base, attention_bias: false }).attentionBias, true);
    // Qwen2's sliding-window switch is true (refused) or false: another value was read as false, unsaid.
    assert.throws(() => parseHfConfig({ ...base, use_sliding_window: 1 }, 'q/config.json'), { message: 'q/config.json: field "use_sliding_window" must be true or false, got 1' });
    assert.throws(() => parseHfConfig({ ...base, use_sliding_window: true }, 'q/config.json'), /use_sliding_window = true is not supported/);
    // Mistral's sliding window: exact up to the window, so the context stops there.
    assert.equal(parseHfConfig({ ...base, architectures: ['MistralForCausalLM'], model_type: 'mistral', max_position_embeddings: 32768, sliding_window: 4096 }).maxPositionEmbeddings, 4096);
    assert.equal(parseHfConfig({ ...base, architectures: ['MistralForCausalLM'], model_type: 'mistral' }).architecture, 'llama');
    // ... whose window transformers' MistralConfig defaults to 4096 when the key is missing (null: none).
    const { sliding_window: _, ...unwindowed } = base;
    assert.equal(parseHfConfig({ ...unwindowed, architectures: ['MistralForCausalLM'], model_type: 'mistral', max_position_embeddings: 32768 }).maxPositionEmbeddings, 4096);
    assert.equal(parseHfConfig({ ...unwindowed, architectures: undefined, model_type: 'mistral', max_position_embeddings: 32768 }).maxPositionEmbeddings, 4096);
    assert.equal(parseHfConfig({ ...unwindowed, architectures: ['LlamaForCausalLM'], model_type: 'llama', max_position_embeddings: 32768 }).maxPositionEmbeddings, 32768);
    assert.equal(parseHfConfig({ ...base, architectures: ['MistralForCausalLM'], model_type: 'mistral', max_position_embeddings: 32768, sliding_window: null }).maxPositionEmbeddings, 32768);
    // A window that is not one is refused (a string was ignored: the context uncut); Llama's field is ignored, as transformers' Llama does (it cut the context).
    assert.throws(() => parseHfConfig({ ...base, architectures: ['MistralForCausalLM'], model_type: 'mistral', sliding_window: '4096' }, 'm/config.json'), { message: 'm/config.json: field "sliding_window" must be a positive integer (the window) or null (none), got "4096"' });
    assert.equal(parseHfConfig({ ...base, architectures: ['LlamaForCausalLM'], model_type: 'llama', max_position_embeddings: 32768, sliding_window: 16 }).maxPositionEmbeddings, 32768);
    // Partial rotary embeddings (RoPE over part of each head) are refused, not run over the whole head.
    assert.throws(() => parseHfConfig({ ...base, partial_rotary_factor: 0.5 }, 'p/config.json'), /^Error: p\/config\.json: partial_rotary_factor 0\.5 is not supported \(RoPE over the whole head only\)$/);
    assert.throws(() => parseHfConfig({ ...base, rope_theta: undefined, rope_parameters: { rope_type: 'default', rope_theta: 1e6, partial_rotary_factor: 0.25 } }), /rope_parameters\.partial_rotary_factor 0\.25 is not supported/);
    assert.equal(parseHfConfig({ ...base, partial_rotary_factor: 1 }).headDim, parseHfConfig(base).headDim);
    assert.equal(parseHfConfig({ ...base, architectures: undefined, model_type: 'llama' }).architecture, 'llama');
    assert.throws(() => parseHfConfig({ ...base, architectures: ['Qwen2ForSequenceClassification'] }), /unknown architecture "Qwen2ForSequenceClassification"/);
    assert.throws(() => parseHfConfig({ ...base, architectures: [null] }), /config\.json: field "architectures" must list class names such as "Qwen2ForCausalLM", got \[null\]/);
  });
  it('names config.json and the field when one is missing or mistyped', () => {
    assert.throws(() => parseHfConfig({ ...base, hidden_size: undefined }, '/m/config.json'), /\/m\/config\.json: required field "hidden_size" is missing/);
    assert.throws(() => parseHfConfig({ ...base, num_hidden_layers: '2' }, '/m/config.json'), /\/m\/config\.json: field "num_hidden_layers" must be a positive integer, got "2"/);
    assert.throws(() => parseHfConfig({ ...base, eos_token_id: 'x' }), /config\.json: field "eos_token_id" must be a token id/);
    assert.throws(() => parseHfConfig({ ...base, eos_token_id: 5000, vocab_size: 900 }), /config\.json: token id 5000 \(bos_token_id \/ eos_token_id\) is outside the vocabulary \(vocab_size 900\)/);
    assert.throws(() => parseHfConfig({ ...base }, '/m/config.json', { eos_token_id: '2' }), { message: '/m/generation_config.json: field "eos_token_id" must be a token id or a list of them, got "2"' });
    assert.throws(() => parseHfConfig({ ...base, vocab_size: 900 }, '/m/config.json', { eos_token_id: [2, 5000] }), { message: '/m/generation_config.json: token id 5000 (eos_token_id) is outside the vocabulary (vocab_size 900 in config.json)' });
    assert.throws(() => parseHfConfig({ ...base, architectures: undefined, model_type: undefined }, '/m/config.json'), /^Error: \/m\/config\.json: names no architecture \(neither "architectures" nor "model_type"\); supported: Qwen2ForCausalLM/);
  });
  it('a config.json, generation_config.json or shard index that is not a JSON object, or a shard that is not a file name, is named', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-null-'));
    try {
      fs.writeFileSync(path.join(dir, 'config.json'), 'null');
      assert.throws(() => loadHfFolder(dir), { message: `${path.join(dir, 'config.json')}: must hold a JSON object, got null` });
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(base));
      fs.writeFileSync(path.join(dir, 'generation_config.json'), '[]');
      assert.throws(() => loadHfFolder(dir), { message: `${path.join(dir, 'generation_config.json')}: must hold a JSON object, got []` });
      fs.rmSync(path.join(dir, 'generation_config.json'));
      fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'model.norm.weight': 5 } }));
      assert.throws(() => loadHfFolder(dir), { message: `${path.join(dir, 'model.safetensors.index.json')}: "weight_map" gives 5 as the file of "model.norm.weight"; expected a file name` });
      // A path out of the folder is another model's file (it loaded silently).
      for (const shard of ['../other/model.safetensors', '/tmp/model.safetensors']) {
        fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'model.norm.weight': shard } }));
        assert.throws(() => loadHfFolder(dir), { message: `${path.join(dir, 'model.safetensors.index.json')}: "weight_map" gives "${shard}" as the file of "model.norm.weight": a shard is named by its file in the model's folder, not by an absolute path or one out of the folder` });
      }
      // A file whose name starts with two dots is one of the folder's (missing here, and said so).
      fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'model.norm.weight': '..model.safetensors' } }));
      assert.throws(() => loadHfFolder(dir), { message: `${path.join(dir, 'model.safetensors.index.json')}: shard "..model.safetensors" (holding "model.norm.weight") is missing from ${dir}` });
      fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: [] }));
      assert.throws(() => loadHfFolder(dir), { message: `${path.join(dir, 'model.safetensors.index.json')}: no "weight_map" object (tensor name → shard file), got []` });
      // A tensor a shard holds that the index leaves out is said to be that (it was "missing"); shards without their index too.
      const shard = 'model-00001-of-00001.safetensors', h = base.hidden_size as number, v = base.vocab_size as number;
      writeSafetensors(path.join(dir, shard), new Map([['model.norm.weight', { shape: [h], data: new Float32Array(h) }], ['model.embed_tokens.weight', { shape: [v, h], data: new Float32Array(v * h) }]]));
      fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'model.norm.weight': shard } }));
      assert.throws(() => loadHfFolder(dir), { message: `${dir}: tensor "model.embed_tokens.weight" is missing (${shard} holds it, but model.safetensors.index.json's "weight_map" leaves it out: the index is not this checkpoint's, or was cut)` });
      fs.rmSync(path.join(dir, 'model.safetensors.index.json'));
      assert.throws(() => loadHfFolder(dir), { message: `${dir}: ${shard} is a shard of a checkpoint whose index, model.safetensors.index.json, is missing: copy it from where the shards came from` });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  it('lists the supported architectures for an unknown one', () => {
    assert.throws(() => parseHfConfig({ ...base, architectures: ['Qwen3MoeForCausalLM'], model_type: 'qwen3_moe' }, 'q3/config.json'),
      /q3\/config\.json: unknown architecture "Qwen3MoeForCausalLM" \(supported: Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM/);
  });
  it('maps Qwen3 as Qwen3-0.6B\'s config.json writes it (head_dim 128 ≠ hidden / heads, no biases)', () => {
    const q3 = { ...base, architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', hidden_size: 1024, num_attention_heads: 16, num_key_value_heads: 8,
      head_dim: 128, attention_bias: false, max_position_embeddings: 40960, rope_theta: 1000000, sliding_window: null, use_sliding_window: false, max_window_layers: 28 };
    const c = parseHfConfig(q3);
    assert.deepEqual([c.architecture, c.headDim, c.attentionBias, c.maxPositionEmbeddings, c.ropeTheta], ['qwen3', 128, false, 40960, 1000000]);
    assert.equal(parseHfConfig({ ...q3, attention_bias: undefined, architectures: undefined }).attentionBias, false, 'transformers\' Qwen3 default');
    assert.equal(parseHfConfig({ ...q3, head_dim: undefined, hidden_size: 2048 }).headDim, 128, 'transformers\' Qwen3 default, not hidden / heads');
    assert.throws(() => parseHfConfig({ ...q3, rope_parameters: [1] }), /field "rope_parameters" must be an object, got \[1\]/);
    assert.throws(() => parseHfConfig({ ...q3, attention_bias: true }, 'q3/config.json'), /q3\/config\.json: attention_bias = true is not supported for "Qwen3ForCausalLM" \(its o_proj bias/);
    // A saved config reads back as it was written.
    assert.deepEqual(parseHfConfig(hfConfig(c)), c);
  });
  it('reads transformers 5\'s rope_parameters (rope_theta and the scaling in one object)', () => {
    const v5 = { ...base, rope_theta: undefined, rope_scaling: undefined };
    assert.equal(parseHfConfig({ ...v5, rope_parameters: { rope_type: 'default', rope_theta: 1000000 } }).ropeTheta, 1000000);
    const llama3 = { rope_type: 'llama3', rope_theta: 500000, factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
    const c = parseHfConfig({ ...v5, rope_parameters: llama3 });
    assert.deepEqual([c.ropeTheta, c.ropeScaling], [500000, { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 }]);
    assert.throws(() => parseHfConfig({ ...v5, rope_parameters: { rope_type: 'dynamic', rope_theta: 1e6, factor: 4 } }, 'v5/config.json'), /v5\/config\.json: rope_parameters type "dynamic" is not supported/);
    assert.throws(() => parseHfConfig({ ...v5, rope_parameters: { rope_type: 'default', rope_theta: 'big' } }), /field "rope_parameters\.rope_theta" must be a positive number, got "big"/);
    assert.throws(() => parseHfConfig({ ...v5, rope_parameters: 7 }), /field "rope_parameters" must be an object, got 7/);
    // A rope_scaling beside them (a model card's long-context edit) is not dropped: refused unless it agrees.
    assert.throws(() => parseHfConfig({ ...v5, rope_parameters: { rope_type: 'default', rope_theta: 1e6 }, rope_scaling: llama3 }, 'v5/config.json'), /^Error: v5\/config\.json: rope_scaling \{"rope_type":"llama3".*\} and rope_parameters \{"rope_type":"default","rope_theta":1000000\} say different things: keep one of them \(transformers 5 reads rope_parameters: a scaling goes there, beside rope_theta\)$/);
    assert.throws(() => parseHfConfig({ ...v5, rope_parameters: { rope_type: 'default', rope_theta: 1e6 }, rope_scaling: { rope_type: 'yarn', factor: 4 } }), /rope_scaling \{"rope_type":"yarn","factor":4\} and rope_parameters .* say different things/);
    assert.deepEqual(parseHfConfig({ ...v5, rope_parameters: llama3, rope_scaling: llama3 }).ropeScaling, c.ropeScaling);
    assert.equal(parseHfConfig({ ...v5, rope_parameters: { rope_type: 'default', rope_theta: 1e6 }, rope_scaling: null }).ropeScaling, undefined);
  });
  it('reads YaRN as Qwen2.5\'s and Qwen3\'s cards write it (the context reaches factor × the original), and linear scaling', () => {
    const yarn = (attentionFactor = 0.1 * Math.log(4) + 1, original = 32768) => ({ type: 'yarn' as const, factor: 4, originalMaxPositionEmbeddings: original, betaFast: 32, betaSlow: 1, attentionFactor });
    // Qwen2.5: max_position_embeddings stays 32768; Qwen3 (transformers 5's rope_parameters) raises it to 131072.
    const q25 = parseHfConfig({ ...base, max_position_embeddings: 32768, rope_scaling: { factor: 4.0, original_max_position_embeddings: 32768, type: 'yarn' } });
    assert.deepEqual([q25.ropeScaling, q25.maxPositionEmbeddings], [yarn(), 131072]);
    const q3 = parseHfConfig({ ...base, rope_theta: undefined, max_position_embeddings: 131072, rope_parameters: { rope_type: 'yarn', rope_theta: 1e6, factor: 4.0, original_max_position_embeddings: 32768 } });
    assert.deepEqual([q3.ropeScaling, q3.maxPositionEmbeddings, q3.ropeTheta], [yarn(), 131072, 1e6]);
    // The original context from a top-level field, else the declared one; an attention factor given, or DeepSeek's pair.
    assert.deepEqual(parseHfConfig({ ...base, original_max_position_embeddings: 4096, rope_scaling: { rope_type: 'yarn', factor: 4 } }).ropeScaling, yarn(undefined, 4096));
    assert.deepEqual(parseHfConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4, beta_fast: 0, beta_slow: null } }).ropeScaling, yarn(undefined, 2048));
    assert.deepEqual(parseHfConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4, attention_factor: 1 } }).ropeScaling, yarn(1, 2048));
    const m = (s: number) => 0.1 * s * Math.log(4) + 1;
    assert.deepEqual(parseHfConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4, mscale: 0.707, mscale_all_dim: 1 } }).ropeScaling, yarn(m(0.707) / m(1), 2048));
    assert.throws(() => parseHfConfig({ ...base, rope_scaling: { rope_type: 'yarn', original_max_position_embeddings: 4096 } }, 'y/config.json'), /^Error: y\/config\.json: rope_scaling\.factor must be a positive finite number, got undefined$/);
    assert.throws(() => parseHfConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4, truncate: false } }, 'y/config.json'), /^Error: y\/config\.json: rope_scaling\.truncate = false is not supported/);
    assert.throws(() => parseHfConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4, beta_fast: 1, beta_slow: 32 } }, 'y/config.json'), /^Error: y\/config\.json: rope_scaling\.beta_fast \(1\) must exceed beta_slow \(32\)$/);
    // vLLM's knobs, a fractional or mistyped original context, and a stretched context past the RoPE table: by name.
    assert.throws(() => parseHfConfig({ ...base, rope_scaling: 'yarn' }, 'y/config.json'), /^Error: y\/config\.json: field "rope_scaling" must be an object such as \{"rope_type": "yarn", "factor": 4\.0, …\}, got "yarn"$/);
    assert.throws(() => parseHfConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4, attn_factor: 2 } }, 'y/config.json'), /^Error: y\/config\.json: rope_scaling\.attn_factor 2 is not supported \(transformers' attention_factor sets YaRN's attention factor\)$/);
    assert.throws(() => parseHfConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4, extrapolation_factor: 0.5 } }, 'y/config.json'), /^Error: y\/config\.json: rope_scaling\.extrapolation_factor 0\.5 is not supported/);
    assert.deepEqual(parseHfConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4, attn_factor: 1, extrapolation_factor: 1 } }).ropeScaling, yarn(undefined, 2048));
    assert.throws(() => parseHfConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 256.5 } }, 'y/config.json'), /^Error: y\/config\.json: rope_scaling\.original_max_position_embeddings must be a whole number of positions, got 256\.5$/);
    assert.throws(() => parseHfConfig({ ...base, original_max_position_embeddings: '32768', rope_scaling: { rope_type: 'yarn', factor: 4 } }, 'y/config.json'), /^Error: y\/config\.json: field "original_max_position_embeddings" must be a positive integer, got "32768"$/);
    assert.throws(() => parseHfConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 64, original_max_position_embeddings: 32768 } }, 'y/config.json'), /^Error: y\/config\.json: rope_scaling\.factor × rope_scaling\.original_max_position_embeddings \(64 × 32768 = 2097152 positions\) must be at most 1048576 \(the RoPE table holds every position\)$/);
    assert.throws(() => parseHfConfig({ ...base, max_position_embeddings: 32768, rope_scaling: { rope_type: 'yarn', factor: 64 } }, 'y/config.json'), /^Error: y\/config\.json: rope_scaling\.factor × max_position_embeddings \(64 × 32768 = 2097152 positions\)/);
    const linear = parseHfConfig({ ...base, rope_scaling: { type: 'linear', factor: 2 } });
    assert.deepEqual([linear.ropeScaling, linear.maxPositionEmbeddings], [{ type: 'linear', factor: 2 }, 2048]);
    // Saved as transformers writes it, and read back the same.
    for (const c of [q25, linear]) assert.deepEqual(parseHfConfig(hfConfig(c)), c);
    // A converted folder's manifest is checked as strictly.
    assert.throws(() => checkModelConfig({ ...q25, ropeScaling: { type: 'dynamic', factor: 2 } as never }, 'c/edgereason.json:'), /^Error: c\/edgereason\.json: field "config\.ropeScaling" must be \{type: "llama3", .*\} or \{type: "linear", factor\} or \{type: "yarn", factor, originalMaxPositionEmbeddings, betaFast, betaSlow, attentionFactor\} \(positive, finite\), got/);
    assert.throws(() => checkModelConfig({ ...q25, ropeScaling: { ...yarn(), attentionFactor: -1 } }, 'c/edgereason.json:'), /field "config\.ropeScaling" must be/);
    assert.throws(() => checkModelConfig({ ...q25, ropeScaling: { ...yarn(), betaFast: 1 } }, 'c/edgereason.json:'), /^Error: c\/edgereason\.json: field "config\.ropeScaling" must be YaRN with a whole original context and betaFast above betaSlow, got/);
    assert.throws(() => checkModelConfig({ ...q25, ropeFreqFactors: new Array(8).fill(1) }, 'c/edgereason.json:'), /^Error: c\/edgereason\.json: field "config\.ropeFreqFactors" must be absent with ropeScaling "yarn" \(one RoPE scaling at a time\), got/);
  });
  it('reads llama3 rope_scaling; refuses other kinds, incomplete ones and quantized checkpoints by name', () => {
    const llama3 = { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
    assert.deepEqual(parseHfConfig({ ...base, rope_scaling: llama3 }).ropeScaling, { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
    assert.equal(parseHfConfig({ ...base, rope_scaling: { type: 'default' } }).ropeScaling, undefined);
    assert.throws(() => parseHfConfig({ ...base, rope_scaling: { rope_type: 'longrope', factor: 4 } }), /rope_scaling type "longrope" is not supported \(plain RoPE, "llama3", "linear" or "yarn"\)/);
    assert.throws(() => parseHfConfig({ ...base, rope_scaling: { rope_type: 'llama3', factor: 8 } }), /rope_scaling\.low_freq_factor must be a positive finite number, got undefined/);
    assert.throws(() => parseHfConfig({ ...base, quantization_config: { quant_method: 'bitsandbytes', load_in_8bit: true } }, 'q/config.json'),
      /q\/config\.json: quantization_config \(quant_method "bitsandbytes"\) is not supported: load the unquantized checkpoint/);
    assert.throws(() => parseHfConfig({ ...base, quantization: { group_size: 64, bits: 4 } }, 'mlx/config.json'),
      /mlx\/config\.json: "quantization" \{"group_size":64,"bits":4\} marks an MLX-quantized checkpoint, which is not supported: load the unquantized one/);
  });
});

function qwenConfigForTests() {
  return { architecture: 'qwen2' as const, vocabSize: 512, hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2,
    headDim: 16, rmsNormEps: 1e-6, ropeTheta: 1e6, maxPositionEmbeddings: 2048, tieWordEmbeddings: true, attentionBias: true, bosTokenId: 486, eosTokenIds: [488, 486] };
}

describe('random model in every format', () => {
  let m: RandomModel;
  before(() => { m = makeRandomQwen2({ dir: file('qwen'), seed: 1, q4_0: true }); });

  it('loads back from the HF folder with identical config and weights', () => {
    const { config, weights } = loadHfFolder(m.dir);
    assert.deepEqual(config, m.config);
    assert.deepEqual(new Set(weights.names), new Set(m.weights.keys()));
    for (const [name, t] of m.weights) { assert.deepEqual(weights.shape(name), t.shape); assert.deepEqual(weights.get(name), t.data); }
  });

  it('loads a sharded folder, and names a missing shard', () => {
    const dir = file('sharded');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(m.dir, 'config.json'), path.join(dir, 'config.json'));
    const names = [...m.weights.keys()], weight_map: Record<string, string> = {};
    [names.slice(0, 7), names.slice(7)].forEach((part, i) => {
      const shard = `model-0000${i + 1}-of-00002.safetensors`;
      writeSafetensors(path.join(dir, shard), new Map(part.map((n) => [n, m.weights.get(n)!])), { dtype: 'BF16' });
      for (const n of part) weight_map[n] = shard;
    });
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map }));
    const { config, weights } = loadHfFolder(dir);
    assert.equal(config.eosTokenIds.length, 2);
    for (const [name, t] of m.weights) assert.deepEqual(weights.get(name), bf16ToF32Array(f32ToBf16Array(t.data)));
    fs.rmSync(path.join(dir, 'model-00002-of-00002.safetensors'));
    assert.throws(() => loadHfFolder(dir), /model\.safetensors\.index\.json: shard "model-00002-of-00002\.safetensors" \(holding "[^"]+"\) is missing/);
  });

  it('refuses a tensor the graph would not use, and integer-typed (quantized) weights, naming them', () => {
    const extra = file('extra'), int8 = file('int8');
    for (const d of [extra, int8]) { fs.mkdirSync(d); fs.copyFileSync(path.join(m.dir, 'config.json'), path.join(d, 'config.json')); }
    writeSafetensors(path.join(extra, 'model.safetensors'), new Map([...m.weights, ['model.layers.0.self_attn.o_proj.bias', { shape: [64], data: new Float32Array(64) }]]));
    assert.throws(() => loadHfFolder(extra), /extra: tensor "model\.layers\.0\.self_attn\.o_proj\.bias" is not part of the qwen2 graph this runtime builds/);
    // Raw bytes: the q_proj weight stored as I8.
    const q = 'model.layers.0.self_attn.q_proj.weight', header: Record<string, unknown> = {};
    let off = 0;
    const blobs: Buffer[] = [];
    for (const [n, t] of m.weights) {
      const b = n === q ? Buffer.from(Int8Array.from(t.data, () => 7).buffer) : Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      header[n] = { dtype: n === q ? 'I8' : 'F32', shape: t.shape, data_offsets: [off, off + b.length] };
      off += b.length; blobs.push(b);
    }
    let h = Buffer.from(JSON.stringify(header));
    h = Buffer.concat([h, Buffer.alloc((8 - (h.length % 8)) % 8, 0x20)]);
    const len = Buffer.alloc(8); len.writeBigUInt64LE(BigInt(h.length));
    fs.writeFileSync(path.join(int8, 'model.safetensors'), Buffer.concat([len, h, ...blobs]));
    assert.throws(() => loadHfFolder(int8), /int8\/model\.safetensors: tensor "model\.layers\.0\.self_attn\.q_proj\.weight" is stored as I8; weights must be F32, F16, BF16 or F64/);
  });

  it('a tokenizer rebuilt from GGUF metadata adds BOS when tokenizer.ggml.add_bos_token says so', () => {
    const md = ggufToModel(m.files.ggufF32).metadata, bos = m.config.bosTokenId!;
    const plain = loadTokenizer(tokenizerFromGguf(md, 'x.gguf'));
    const withBos = loadTokenizer(tokenizerFromGguf({ ...md, 'tokenizer.ggml.add_bos_token': true, 'tokenizer.ggml.bos_token_id': bos }, 'x.gguf'));
    assert.deepEqual(withBos.encode('Hi there'), [bos, ...plain.encode('Hi there')]);
    assert.deepEqual(withBos.encode('Hi there', { addSpecialTokens: false }), plain.encode('Hi there'));
    assert.notEqual(plain.encode('Hi there')[0], bos);
    // add_eos_token ends the encoding with EOS; a template reads bos_token even where encoding does not add it.
    const eos = m.config.eosTokenIds[0];
    const withEos = loadTokenizer(tokenizerFromGguf({ ...md, 'tokenizer.ggml.add_eos_token': true, 'tokenizer.ggml.eos_token_id': eos }, 'x.gguf'));
    assert.deepEqual(withEos.encode('Hi there'), [...plain.encode('Hi there'), eos]);
    const bosTemplate = '{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}';
    const noBos = loadTokenizer(tokenizerFromGguf({ ...md, 'tokenizer.ggml.add_bos_token': false, 'tokenizer.ggml.bos_token_id': bos, 'tokenizer.chat_template': bosTemplate }, 'x.gguf'));
    assert.equal(noBos.applyChatTemplate([{ role: 'user', content: 'hi' }]), `${noBos.decode([bos], { skipSpecialTokens: false })}hi`);
    assert.deepEqual(noBos.encode('Hi there'), plain.encode('Hi there'));
  });

  it('a tokenizer rebuilt from GGUF metadata decodes and splits as the model\'s own: no space clean-up for Qwen, whole-word entries first for Llama 3, padding rows without text, llama.cpp\'s aliases', () => {
    const md = ggufToModel(m.files.ggufF32).metadata, hf = loadTokenizer(m.dir);
    const rebuilt = loadTokenizer(tokenizerFromGguf(md, 'x.gguf'));
    for (const text of ['Bonjour ! Comment ça va ?', 'print(a , b)']) assert.equal(rebuilt.decode(rebuilt.encode(text)), hf.decode(hf.encode(text)), text);
    assert.equal(rebuilt.decode(rebuilt.encode('print(a , b)')), 'print(a , b)');
    // DeepSeek-R1-Distill-Qwen's GGUFs name Qwen2's pre-tokenizer differently.
    assert.deepEqual(loadTokenizer(tokenizerFromGguf({ ...md, 'tokenizer.ggml.pre': 'deepseek-r1-qwen' }, 'r1.gguf')).encode('Hi 123 there'), rebuilt.encode('Hi 123 there'));
    // A vocabulary where "abc" is an entry but no merge reaches it: Llama 3 takes the entry (ignore_merges), Qwen merges.
    const tiny = { 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': ['a', 'b', 'c', 'ab', 'abc', '[PAD5]'], 'tokenizer.ggml.token_type': [1, 1, 1, 1, 1, 5], 'tokenizer.ggml.merges': ['a b'] };
    for (const [pre, ids] of [['llama3', [4]], ['llama-bpe', [4]], ['qwen2', [3, 2]]] as const) {
      assert.deepEqual(loadTokenizer(tokenizerFromGguf({ ...tiny, 'tokenizer.ggml.pre': pre }, 't.gguf')).encode('abc'), ids, pre);
    }
    assert.equal(loadTokenizer(tokenizerFromGguf({ ...tiny, 'tokenizer.ggml.pre': 'qwen2' }, 't.gguf')).decode([0, 5, 1]), 'ab', 'a padding row has no text');
    // A named "tool_use" template (llama.cpp's key) renders calls given tools, as in a folder's tokenizer_config.json.
    const named = loadTokenizer(tokenizerFromGguf({ ...tiny, 'tokenizer.chat_template': 'plain', 'tokenizer.chat_template.tool_use': 'tools: {{ tools | length }}' }, 't.gguf'));
    assert.deepEqual([named.applyChatTemplate([]), named.applyChatTemplate([], { vars: { tools: [1, 2] } }), named.toolUseTemplate], ['plain', 'tools: 2', 'tools: {{ tools | length }}']);
    // No merges: every text would be single bytes (llama.cpp refuses it too).
    assert.throws(() => tokenizerFromGguf({ ...tiny, 'tokenizer.ggml.merges': undefined } as never, 't.gguf'), { message: 'tokenizer: t.gguf has no tokenizer.ggml.merges in its metadata, which rebuilding its tokenizer needs — put the model\'s tokenizer.json beside the file' });
    assert.throws(() => tokenizerFromGguf({ ...tiny, 'tokenizer.ggml.pre': 'tekken' }, 't.gguf'), /tokenizer\.ggml\.pre = "tekken", which is not supported \(qwen2, llama-bpe, default, deepseek-r1-qwen, llama3, llama-v3\)/);
    // A BOS that encoding adds must be in the vocabulary (it said "token id undefined is outside the vocabulary" at
    // the first request); a token spelled "__proto__" is one like any other; a renamed token its merge makes is refused.
    const qwen = { ...tiny, 'tokenizer.ggml.pre': 'qwen2' };
    assert.throws(() => tokenizerFromGguf({ ...qwen, 'tokenizer.ggml.bos_token_id': 5, 'tokenizer.ggml.add_bos_token': true }, 't.gguf'), { message: 'tokenizer: t.gguf metadata "tokenizer.ggml.bos_token_id" is 5, a token the vocabulary leaves out (its tokenizer.ggml.token_type says unused), yet encoding is to add it' });
    // An id past the token list: an EOS (generation would never end by itself), a BOS that encoding adds (it was left out silently); a BOS not added may
    const n = (qwen['tokenizer.ggml.tokens'] as string[]).length;
    for (const [k, more] of [['tokenizer.ggml.eos_token_id', {}], ['tokenizer.ggml.bos_token_id', { 'tokenizer.ggml.add_bos_token': true }]] as const) {
      assert.throws(() => tokenizerFromGguf({ ...qwen, ...more, [k]: n + 3 }, 't.gguf'), { message: `tokenizer: t.gguf metadata "${k}" is ${n + 3}, not a token of tokenizer.ggml.tokens (0 to ${n - 1})` });
    }
    assert.deepEqual(loadTokenizer(tokenizerFromGguf({ ...qwen, 'tokenizer.ggml.bos_token_id': n + 3, 'tokenizer.ggml.add_bos_token': false }, 't.gguf')).encode('ab'), [3]);
    assert.equal(loadTokenizer(tokenizerFromGguf({ ...qwen, 'tokenizer.ggml.tokens': ['a', 'b', 'c', 'ab', '__proto__', '[PAD5]'] }, 't.gguf')).decode([4, 0]), '__proto__a');
    assert.throws(() => loadTokenizer(tokenizerFromGguf({ ...qwen, 'tokenizer.ggml.tokens': ['a', 'b', 'c', 'xy', 'abc', '[PAD5]'] }, 't.gguf')), { message: 'tokenizer: t.gguf: "model.merges"[0] ["a","b"] makes "ab", which "model.vocab" lacks: the text it merges would be dropped' });
  });

  it('requires lm_head.weight when embeddings are not tied', () => {
    const dir = file('untied');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...hfConfig(m.config), tie_word_embeddings: false }));
    fs.copyFileSync(path.join(m.dir, 'model.safetensors'), path.join(dir, 'model.safetensors'));
    assert.throws(() => loadHfFolder(dir), /untied: tensor "lm_head\.weight" is missing \(tie_word_embeddings is false/);
  });

  it('GGUF (F32) loads back via ggufToModel with identical config (stopping also where llama.cpp does) and weights', () => {
    const g = ggufToModel(m.files.ggufF32);
    assert.deepEqual(g.config, asGgufConfig(m.config));
    assert.equal(g.metadata['tokenizer.ggml.model'], 'gpt2');
    assert.deepEqual(new Set(g.weights.names), new Set(m.weights.keys()));
    for (const [name, t] of m.weights) { assert.deepEqual(g.weights.shape(name), t.shape); assert.deepEqual(g.weights.get(name), t.data); }
    // GGUF dims are innermost-first.
    assert.deepEqual(g.file.info('blk.0.attn_q.weight').dims, [64, 64]);
    assert.deepEqual(g.file.info('blk.0.ffn_down.weight').dims, [128, 64]);
  });

  it('a split GGUF (gguf-split parts) loads from its first part as the whole file does; missing or misnamed parts are named', () => {
    const whole = openGguf(m.files.ggufF32), names = whole.names, dir = file('split');
    fs.mkdirSync(dir);
    const metadata = (no: number, extra = {}) => ({ ...extra, 'split.no': typed('u16', no), 'split.count': typed('u16', 2), 'split.tensors.count': typed('i32', names.length) });
    const part = (k: number) => path.join(dir, `model-0000${k}-of-00002.gguf`);
    const tensors = (ns: string[]) => ns.map((n) => ({ name: n, shape: whole.shape(n), type: 'F32' as const, data: whole.get(n) }));
    const mdAll = Object.fromEntries(Object.entries(whole.metadata).map(([k, v]) => [k, typed(whole.metadataTypes[k], v)]));
    writeGguf(part(1), { metadata: metadata(0, mdAll), tensors: tensors(names.slice(0, 5)) });
    writeGguf(part(2), { metadata: metadata(1), tensors: tensors(names.slice(5)) });
    const g = ggufToModel(part(1)), ref = ggufToModel(m.files.ggufF32);
    assert.deepEqual(g.config, ref.config);
    // A tensor under its Hugging Face name beside the llama.cpp one: the file holds one weight twice (the later one
    // used to replace the other silently).
    const twice = path.join(dir, 'twice.gguf');
    writeGguf(twice, { metadata: mdAll, tensors: [...tensors(names), { name: 'model.embed_tokens.weight', shape: whole.shape('token_embd.weight'), type: 'F32', data: new Float32Array(whole.get('token_embd.weight').length) }] });
    assert.throws(() => ggufToModel(twice), { message: `${twice}: tensors "token_embd.weight" and "model.embed_tokens.weight" are both model.embed_tokens.weight: the file holds one weight twice` });
    fs.rmSync(twice);
    // A tensor missing, misshapen or beyond the layers is named as the file spells it (llama.cpp's names), not as HF's.
    const broken = path.join(dir, 'broken.gguf'), layers = ref.config.numLayers;
    writeGguf(broken, { metadata: mdAll, tensors: tensors(names.filter((n) => n !== 'blk.0.ffn_up.weight')) });
    assert.throws(() => ggufToModel(broken), { message: `${broken}: tensor "blk.0.ffn_up.weight" is missing` });
    writeGguf(broken, { metadata: mdAll, tensors: tensors(names).map((t) => (t.name === 'blk.1.attn_output.weight' ? { ...t, shape: [t.shape[0], t.shape[1] - 1], data: t.data.subarray(0, t.shape[0] * (t.shape[1] - 1)) } : t)) });
    assert.throws(() => ggufToModel(broken), { message: new RegExp(`^${broken.replace(/[.]/g, '\\.')}: tensor "blk\\.1\\.attn_output\\.weight" has shape \\[\\d+,\\d+\\], expected \\[\\d+,\\d+\\] from the config$`) });
    writeGguf(broken, { metadata: mdAll, tensors: [...tensors(names), { ...tensors(['blk.0.ffn_norm.weight'])[0], name: `blk.${layers}.ffn_norm.weight` }] });
    assert.throws(() => ggufToModel(broken), { message: `${broken}: tensor "blk.${layers}.ffn_norm.weight" belongs to layer ${layers}, but the config has ${layers} layers: the config and the weights disagree` });
    fs.rmSync(broken);
    for (const n of ref.weights.names) assert.deepEqual(g.weights.get(n), ref.weights.get(n), n);
    assert.deepEqual(openSourceFiles(part(1)).sort(), [part(1), part(2)]);
    assert.throws(() => openGguf(part(2)), new RegExp(`model-00002-of-00002\\.gguf: part 2 of a GGUF split into 2 files: load the first part, .*model-00001-of-00002\\.gguf`));
    const renamed = path.join(dir, 'renamed.gguf');
    fs.renameSync(part(1), renamed);
    assert.throws(() => openGguf(renamed), /renamed\.gguf: part 1 of a GGUF split into 2 files, but its name does not end in -0000k-of-00002\.gguf/);
    fs.renameSync(renamed, part(1));
    fs.rmSync(part(2));
    assert.throws(() => openGguf(part(1)), /the first of 2 parts of a split GGUF; part 2, .*model-00002-of-00002\.gguf, is missing/);
  });

  it('a tokenizer.json beside a GGUF must be its vocabulary; the cache fingerprint covers it', () => {
    const dir = file('gguf-tok');
    fs.mkdirSync(dir);
    const g = path.join(dir, 'model.gguf');
    fs.copyFileSync(m.files.ggufF32, g);
    assert.deepEqual(openSourceFiles(g), [g]);
    fs.copyFileSync(path.join(m.dir, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    assert.deepEqual(openSource(g).tokenizer.encode('Hello world'), loadTokenizer(m.dir).encode('Hello world'));
    assert.deepEqual(openSourceFiles(g).sort(), [g, path.join(dir, 'tokenizer.json')]);
    // The folder holds no chat template: the GGUF's own (tokenizer.chat_template) renders, as llama.cpp reads it (it was "no chat template").
    const own = openSource(m.files.ggufF32).tokenizer, withJson = openSource(g).tokenizer, hi = [{ role: 'user' as const, content: 'Hi' }];
    assert.ok(own.chatTemplate);
    assert.equal(withJson.applyChatTemplate(hi, { addGenerationPrompt: true }), own.applyChatTemplate(hi, { addGenerationPrompt: true }));
    // another model's vocabulary: the ids swapped
    const other = JSON.parse(fs.readFileSync(path.join(m.dir, 'tokenizer.json'), 'utf8')), v = other.model.vocab as Record<string, number>;
    const [a, b] = Object.keys(v).filter((k) => v[k] === 0 || v[k] === 64);
    [v[a], v[b]] = [v[b], v[a]];
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(other));
    assert.throws(() => openSource(g), new RegExp(`model: .*gguf-tok/tokenizer\\.json is not the vocabulary of .*gguf-tok/model\\.gguf \\(the GGUF's token 0 is ".*", which .*tokenizer\\.json numbers 64\\): move it away`));
  });

  it('GGUF (Q4_0) weights equal llama.cpp-style dequantization of the originals', () => {
    const g = ggufToModel(m.files.ggufQ4_0!);
    assert.deepEqual(g.config, asGgufConfig(m.config));
    assert.equal(g.file.info('token_embd.weight').typeName, 'Q4_0');
    assert.equal(g.file.info('blk.1.attn_k.bias').typeName, 'F32');
    for (const [name, t] of m.weights) {
      const want = t.shape.length === 2 ? decodeGgml('Q4_0', encodeGgml('Q4_0', t.data), t.data.length) : t.data;
      assert.deepEqual(g.weights.get(name), want, name);
    }
  });

  it('@huggingface/gguf, an independent reader, reads our GGUFs as openGguf does: metadata, tensor names, dims, types, data offsets', async () => {
    const num = (v: unknown): unknown => (typeof v === 'bigint' ? Number(v) : Array.isArray(v) ? v.map(num) : v);
    for (const f of [m.files.ggufF32, m.files.ggufQ4_0!]) {
      const theirs = await gguf(f, { allowLocalFile: true }), ours = openGguf(f);
      assert.equal(theirs.metadata.version, ours.version);
      assert.equal(Number(theirs.metadata.tensor_count), ours.names.length);
      const md = theirs.metadata as unknown as Record<string, unknown>;
      assert.deepEqual(Object.keys(md).filter((k) => !['version', 'tensor_count', 'kv_count'].includes(k)).sort(), Object.keys(ours.metadata).sort());
      for (const [k, v] of Object.entries(ours.metadata)) {
        // f32 values: ours reads back the shortest decimal of the stored float, theirs the float itself.
        if (ours.metadataTypes[k] === 'f32') assert.equal(Math.fround(v as number), md[k], k);
        else assert.deepEqual(num(md[k]), v, k);
      }
      assert.deepEqual(theirs.tensorInfos.map((t) => t.name), ours.names);
      for (const t of theirs.tensorInfos) {
        const o = ours.info(t.name);
        assert.deepEqual([num(t.shape), t.dtype, Number(theirs.tensorDataOffset + t.offset)], [o.dims, o.type, o.offset], t.name);
      }
    }
  });

  it('llama GGUFs store q/k rows permuted and load back un-permuted', () => {
    const config = { ...m.config, architecture: 'llama' as const, attentionBias: true };
    const p = file('llama.gguf');
    writeModelGguf(p, config, new MemoryWeights(m.weights), { metadata: qwenTokenizer(512).gguf });
    const g = ggufToModel(p);
    assert.deepEqual(g.config, asGgufConfig(config));
    for (const [name, t] of m.weights) assert.deepEqual(g.weights.get(name), t.data, name);
    // Stored layout: gguf row 2i+s of each head = HF row s*hd/2+i (hd = 16 here).
    const hf = m.weights.get('model.layers.0.self_attn.k_proj.weight')!.data, raw = g.file.get('blk.0.attn_k.weight');
    assert.deepEqual(raw.subarray(1 * 64, 2 * 64), hf.subarray(8 * 64, 9 * 64));
    assert.deepEqual(raw.subarray(2 * 64, 3 * 64), hf.subarray(1 * 64, 2 * 64));
    assert.deepEqual(g.file.get('blk.0.attn_q.bias').subarray(16, 20), Float32Array.of(...[0, 8, 1, 9].map((r) => m.weights.get('model.layers.0.self_attn.q_proj.bias')!.data[16 + r])));
    assert.deepEqual(permuteQK(permuteQK(hf, 32, 2, true), 32, 2, false), hf);
  });

  it('llama.cpp loads the GGUFs, tokenizes like the HF tokenizer.json, and agrees on the q/k permutation', async (t) => {
    let llama;
    try {
      const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
      llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
    } catch (e) {
      t.skip(`node-llama-cpp unavailable: ${(e as Error).message}`);
      return;
    }
    const text = 'Hello world, this is a test.';
    // Same model as qwen2 and as llama (zero biases, q/k/v scaled up so attention matters): llama.cpp
    // applies NEOX RoPE to the first and rotate-pairs RoPE to the second, so outputs only agree if our permutation is right.
    const w = new Map([...m.weights].map(([k, v]) => [k, { shape: v.shape, data: k.endsWith('.bias') ? new Float32Array(v.data.length) : v.shape.length === 2 ? v.data.map((x) => x * 10) : v.data }]));
    const tok = qwenTokenizer(512).gguf;
    writeModelGguf(file('same-qwen2.gguf'), m.config, new MemoryWeights(w), { metadata: tok });
    writeModelGguf(file('same-llama.gguf'), { ...m.config, architecture: 'llama', attentionBias: false },
      new MemoryWeights(new Map([...w].filter(([k]) => !k.endsWith('.bias')))), { metadata: tok });
    const probs: Map<number, number>[] = [];
    for (const f of [m.files.ggufF32, m.files.ggufQ4_0!, file('same-qwen2.gguf'), file('same-llama.gguf')]) {
      const model = await llama.loadModel({ modelPath: f });
      const ids = model.tokenize(text);
      assert.deepEqual(ids, [39, 301, 385, 289, 269, 75, 67, 11, 419, 374, 264, 259, 477, 13]); // as @huggingface/tokenizers encodes it with tokenizer.json
      assert.equal(model.detokenize(ids), text);
      assert.equal(model.tokens.eos, m.config.eosTokenIds[0]);
      // The tokens generation ends on: llama.cpp's end-of-generation set (end tokens by text, fill-in-the-middle separators).
      const eog = Array.from({ length: 512 }, (_, i) => i).filter((i) => model.isEogToken(i as Token));
      assert.deepEqual(eog, [...ggufToModel(f).config.eosTokenIds].sort((a, b) => a - b), f);
      const ctx = await model.createContext({ contextSize: 128 });
      const out = await ctx.getSequence().controlledEvaluate([...ids.slice(0, -1),
        [ids.at(-1)!, { generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } } }]]);
      probs.push(out.at(-1)!.next.probabilities!);
      await ctx.dispose();
      await model.dispose();
    }
    await llama.dispose();
    const [, , q, l] = probs;
    assert.ok(Math.max(...[...q].map(([id, p]) => Math.abs(p - (l.get(id) ?? 0)))) < 1e-4);
    assert.ok(Math.max(...q.values()) > 2 / 512, 'the scaled model should not be uniform');
  });
});

describe('GGUF', () => {
  it('round trips metadata of every type and F32/F16/BF16/Q8_0/Q4_0 tensors', () => {
    const p = file('rt.gguf');
    const x = seq(64, (i) => Math.sin(i) * (i + 1));
    writeGguf(p, {
      metadata: {
        'general.architecture': 'qwen2', 'general.alignment': typed('u32', 64), s: 'héllo', u32: 7, i32: -7, f32: 0.1, b: true, big: 2n ** 60n,
        u8: typed('u8', 255), i8: typed('i8', -128), u16: typed('u16', 65535), i16: typed('i16', -32768), i64: typed('i64', -5), f64: typed('f64', Math.PI),
        strs: ['a', 'b c', ''], ints: [1, -2, 3], floats: [0.5, 1.25], u64s: typed('u64', [1, 2]), wide: 2 ** 33, wides: [1, 2 ** 33], flags: [true, false],
      },
      tensors: (['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0'] as const).map((type) => ({ name: `t.${type}`, shape: [2, 32], type, data: x })),
    });
    const f = openGguf(p);
    assert.equal(f.version, 3);
    assert.equal(f.alignment, 64);
    assert.deepEqual({ ...f.metadata, 'general.alignment': undefined, 'general.architecture': undefined }, {
      'general.alignment': undefined, 'general.architecture': undefined, s: 'héllo', u32: 7, i32: -7, f32: 0.1, b: true, big: 2n ** 60n,
      u8: 255, i8: -128, u16: 65535, i16: -32768, i64: -5, f64: Math.PI, strs: ['a', 'b c', ''], ints: [1, -2, 3], floats: [0.5, 1.25], u64s: [1, 2],
      wide: 2 ** 33, wides: [1, 2 ** 33], flags: [true, false],
    });
    assert.deepEqual([f.metadataTypes.f32, f.metadataTypes.ints, f.metadataTypes.big, f.metadataTypes.u64s], ['f32', 'i32', 'u64', 'u64']);
    assert.deepEqual([f.metadataTypes.wide, f.metadataTypes.wides, f.metadataTypes.flags], ['u64', 'u64', 'bool'], 'untyped values get a type wide enough');
    for (const t of f.tensors.values()) assert.equal(t.offset % 64, 0);
    assert.deepEqual(f.shape('t.Q4_0'), [2, 32]);
    assert.deepEqual(f.info('t.Q4_0').dims, [32, 2]);
    assert.deepEqual(f.get('t.F32'), x);
    assert.deepEqual(f.get('t.F16'), f16ToF32Array(f32ToF16Array(x)));
    assert.deepEqual(f.get('t.BF16'), bf16ToF32Array(f32ToBf16Array(x)));
    assert.deepEqual(f.get('t.Q8_0'), decodeGgml('Q8_0', encodeGgml('Q8_0', x), 64));
    assert.deepEqual(f.get('t.Q4_0'), decodeGgml('Q4_0', encodeGgml('Q4_0', x), 64));
  });

  it('general.alignment is read and written as llama.cpp reads it: a u32 power of two', () => {
    const t = [{ name: 't', shape: [1, 4], type: 'F32' as const, data: seq(4, (i) => i) }], p = file('al.gguf');
    writeGguf(p, { metadata: { 'general.alignment': 4 }, tensors: t }); // 4 was refused (not a multiple of 8)
    assert.deepEqual([openGguf(p).alignment, openGguf(p).metadataTypes['general.alignment']], [4, 'u32']);
    assert.throws(() => writeGguf(file('al24.gguf'), { metadata: { 'general.alignment': 24 }, tensors: t }), { message: `writeGguf(${file('al24.gguf')}): metadata "general.alignment" must be a power of two, written as a u32 (as llama.cpp reads it), got 24` });
    // Stored as an i32 (its type id patched): llama.cpp refuses the file, and so does the reader.
    const bytes = fs.readFileSync(p), at = bytes.indexOf('general.alignment') + 'general.alignment'.length;
    bytes.writeUInt32LE(5, at); // GGUF's i32
    fs.writeFileSync(p, bytes);
    assert.throws(() => openGguf(p), { message: `${p}: metadata "general.alignment" is stored as i32; it must be a u32 (llama.cpp refuses such a file too)` });
  });

  it('Q4_0 and Q8_0 match bytes and values from llama.cpp quantize_row_*_ref / dequantize_row_*', () => {
    // Expected bytes were produced by llama.cpp's libggml-base (via ctypes) for these two blocks.
    const a = seq(32, (i) => i - 16), b = seq(32, (i) => -i / 7);
    assert.deepEqual(encodeGgml('Q4_0', a), hex('0040809191a2a2b3b3c4c4d5d5e6e6f7f7f8'));
    assert.deepEqual(encodeGgml('Q4_0', b), hex('6e3848483737373726262626151515150404'));
    assert.deepEqual(encodeGgml('Q8_0', a), hex('083081899199a1a9b1b9c0c8d0d8e0e8f0f8000810182028303840474f575f676f77'));
    assert.deepEqual(encodeGgml('Q8_0', b), hex('772800fcf8f4f0ece7e3dfdbd7d3cfcbc7c3bebab6b2aeaaa6a29e9a95918d898581'));
    assert.deepEqual([...decodeGgml('Q4_0', encodeGgml('Q4_0', a), 32)],
      [-16, -14, -14, -12, -12, -10, -10, -8, -8, -6, -6, -4, -4, -2, -2, 0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14, 14]);
    assert.deepEqual([...decodeGgml('Q4_0', encodeGgml('Q4_0', b), 32)].slice(0, 8), [0, 0, -0.5537109375, -0.5537109375, -0.5537109375, -0.5537109375, -1.107421875, -1.107421875]);
    const q = quantizeQ4_0(a); // MatMulNBits view: x ≈ (q - 8) * scale
    assert.equal(q.scales[0], 2);
    assert.deepEqual([...q.q.subarray(0, 4)], [0, 1, 1, 2]);
    assert.deepEqual(encodeGgml('Q4_0', new Float32Array(32)), hex('0080' + '88'.repeat(16))); // all zeros: d = 0 / -8 = -0, q = 8
  });

  it('Q4_0 / Q8_0: non-finite weights are refused by tensor name; huge ones saturate at the largest fp16 scale; q4 checks the length', () => {
    const name = 'model.layers.0.mlp.up_proj.weight';
    for (const bad of [NaN, Infinity, -Infinity]) {
      const x = seq(64, (i) => (i === 40 ? bad : 1));
      assert.throws(() => quantizeQ4(x, 2, 32, name), new RegExp(`quantizeQ4_0: tensor "${name}" holds ${bad} at element 40`));
      assert.throws(() => quantizeQ8_0(x, name), new RegExp(`quantizeQ8_0: tensor "${name}" holds ${bad} at element 40`));
      assert.throws(() => encodeGgml('Q4_0', x), new RegExp(`quantizeQ4_0: holds ${bad} at element 40`));
    }
    assert.throws(() => quantizeQ4(new Float32Array(64), 1, 32, name), new RegExp(`q4 "${name}": 64 weights, shape \\[1, 32\\] needs 32`));
    // Block 0: max 1e6 would need d = -125000 (fp16 Inf, turning every weight of the block into NaN): d = -65504, the
    // largest weights saturate, the others are quantised against that scale. Block 1 is untouched (see above).
    const x = seq(64, (i) => (i < 32 ? 0 : i - 48));
    x.set([1e6, 3e5, 1, -2e5]);
    const q = quantizeQ4_0(x);
    assert.deepEqual([...q.scales], [-65504, 2]);
    assert.deepEqual([...q.q.subarray(0, 5)], [0, 3, 8, 11, 8]);
    assert.deepEqual([...q.q.subarray(32)], [...quantizeQ4_0(x.slice(32)).q]);
    assert.deepEqual([...decodeGgml('Q4_0', encodeGgml('Q4_0', x), 64).subarray(0, 5)], [524032, 327520, -0, -196512, -0]);
    assert.deepEqual([...decodeGgml('Q4_0', encodeGgml('Q4_0', x.map((v) => -v)), 64).subarray(0, 5)], [-524032, -327520, 0, 196512, 0]);
    const y = seq(32, () => 0);
    y.set([1e8, -5e6, 1]);
    assert.deepEqual([...decodeGgml('Q8_0', encodeGgml('Q8_0', y), 32).subarray(0, 4)], [65504 * 127, -65504 * 76, 0, 0]);
  });

  it('names file, tensor and type for an unsupported tensor type', () => {
    const p = file('iq2.gguf');
    writeGguf(p, { metadata: { 'general.architecture': 'qwen2' }, tensors: [
      { name: 'token_embd.weight', shape: [1, 256], type: 'IQ2_XXS', raw: new Uint8Array(66) },
      { name: 'odd', shape: [4], type: 77, raw: new Uint8Array(4) },
    ] });
    const f = openGguf(p);
    assert.equal(f.info('odd').typeName, 'unknown type id 77');
    assert.throws(() => f.get('token_embd.weight'), new RegExp(`${p}: tensor "token_embd.weight" has type IQ2_XXS, which is not supported \\(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS\\)`));
    assert.throws(() => ggufToModel(p), /iq2\.gguf: tensor "token_embd\.weight" has type IQ2_XXS, which is not supported/);
  });

  it('decodes a Q4_K super-block: 8 sub-blocks of 32, each d·scale·q − dmin·min with 6-bit scales and mins', () => {
    // d = 0.5, dmin = 0.25; scales 1..8 and mins 0..7 (sub-blocks 4..7 keep theirs in the last four bytes' nibbles);
    // every byte of qs 0x21: sub-blocks 0, 2, 4, 6 read the low nibbles (1), 1, 3, 5, 7 the high ones (2).
    const block = new Uint8Array(144), dv = new DataView(block.buffer);
    dv.setUint16(0, 0x3800, true);
    dv.setUint16(2, 0x3400, true);
    block.set([1, 2, 3, 4, 0, 1, 2, 3, 5 | (4 << 4), 6 | (5 << 4), 7 | (6 << 4), 8 | (7 << 4)], 4);
    block.fill(0x21, 16);
    const y = decodeGgml('Q4_K', block, 256);
    assert.deepEqual(Array.from({ length: 8 }, (_, k) => [...new Set(y.subarray(32 * k, 32 * k + 32))]), Array.from({ length: 8 }, (_, k) => [0.5 * (k + 1) * (k % 2 ? 2 : 1) - 0.25 * k]));
  });

  it('rejects truncated files and unknown architectures', () => {
    const p = file('trunc.gguf');
    writeGguf(p, { metadata: { 'general.architecture': 'gemma' }, tensors: [{ name: 'a', shape: [8, 32], type: 'F32', data: new Float32Array(256) }] });
    assert.throws(() => ggufToModel(p), /trunc\.gguf: general\.architecture "gemma" is not supported \(supported: qwen2, qwen3, llama\)/);
    fs.truncateSync(p, fs.statSync(p).size - 1);
    assert.throws(() => openGguf(p), /trunc\.gguf: truncated GGUF: tensor "a" needs bytes \d+\.\.\d+ but the file has \d+/);
    fs.truncateSync(p, 60);
    assert.throws(() => openGguf(p), /trunc\.gguf: truncated GGUF: metadata "general\.architecture"/);
    fs.writeFileSync(p, 'GGML not really');
    assert.throws(() => openGguf(p), /not a GGUF file/);
  });

  it('rejects tensor data that does not follow the previous tensor\'s (a corrupt type or offset), as llama.cpp does', () => {
    const p = file('layout.gguf');
    writeGguf(p, { metadata: { 'general.architecture': 'llama' }, tensors: [
      { name: 'a', shape: [16], type: 'F32', data: new Float32Array(16) }, { name: 'b', shape: [16], type: 'F32', data: new Float32Array(16).fill(1) }] });
    assert.deepEqual([...openGguf(p).get('b')], new Array(16).fill(1));
    const bytes = fs.readFileSync(p), u64 = (n: number) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(n)); return b; };
    const infoA = bytes.indexOf(Buffer.concat([u64(1), Buffer.from('a'), Buffer.from([1, 0, 0, 0]), u64(16)]));
    assert.ok(infoA > 0);
    bytes.writeUInt32LE(1, infoA + 8 + 1 + 4 + 8); // a's type F32 → F16: 32 bytes instead of 64, so b would read a's second half
    fs.writeFileSync(p, bytes);
    assert.throws(() => openGguf(p), /layout\.gguf: tensor "b" has data offset 64, but its data must follow right after tensor "a" \(F16 \[16\], 32 bytes\), padded to 32 bytes: offset 32; the file is corrupt/);
  });
});

describe('suggested commands', () => {
  it('~ at the start of a path is the home folder, before "/" (and "\\" on Windows); ~user and other paths stay', () => {
    const home = os.homedir();
    assert.deepEqual(['~', '~/m', '~\\m', '~user/m', 'a/~/m', '~m'].map((p) => expandHome(p, 'linux')), [home, `${home}/m`, '~\\m', '~user/m', 'a/~/m', '~m']);
    assert.deepEqual(['~', '~\\m', '~/m', '~user\\m'].map((p) => expandHome(p, 'win32')), [home, `${home}\\m`, `${home}/m`, '~user\\m']);
  });

  it('a suggested convert command can be pasted: paths quoted for a POSIX shell, and for cmd.exe or PowerShell on Windows', () => {
    assert.equal(convertCommandLine('/home/me/models/Qwen2.5-7B', '/home/me/models/Qwen2.5-7B-onnx', 'q4'), 'edgereason convert --model /home/me/models/Qwen2.5-7B --out /home/me/models/Qwen2.5-7B-onnx --quant q4');
    assert.equal(convertCommandLine("/home/me/my models/it's", '<folder>'), "edgereason convert --model '/home/me/my models/it'\\''s' --out <folder>");
    const win = (p: string) => shellQuote(p, 'win32');
    assert.deepEqual([win('C:\\Users\\me\\models\\Qwen'), win('C:\\My Models\\Qwen'), win('.\\models\\q')], ['C:\\Users\\me\\models\\Qwen', '"C:\\My Models\\Qwen"', '.\\models\\q']);
    // PowerShell reads a bare q_proj,v_proj as a list (two arguments) and @x as splatting: quoted there, not in sh.
    assert.deepEqual([win('q_proj,v_proj'), win('@schema.json'), shellQuote('q_proj,v_proj', 'linux')], ['"q_proj,v_proj"', '"@schema.json"', 'q_proj,v_proj']);
    // convert's note on copying the reasoning setup along: cp in sh, Copy-Item on Windows (cmd has no cp; PowerShell's cp refuses -rL).
    assert.equal(copyCommand(['/m/reasoning-adapter', '/m/router.json'], '/out dir', 'linux'), "cp -rL /m/reasoning-adapter /m/router.json '/out dir'/");
    assert.equal(copyCommand(['C:\\m\\reasoning-adapter', 'C:\\m\\router.json'], 'C:\\out dir', 'win32'), 'Copy-Item -Recurse C:\\m\\reasoning-adapter, C:\\m\\router.json "C:\\out dir"');
  });
});
