/**
 * Malformed checkpoints are refused at load, naming the file and the field (config.json key, GGUF metadata key,
 * tensor): never a RangeError deep in graph building, a stack overflow, a huge allocation or NaN output.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { readJsonFile } from '../src/io/jsonl.ts';
import { generationSampling, loadHfFolder } from '../src/io/hf-folder.ts';
import { openSource } from '../src/io/source.ts';
import { ggufToModel, openGguf, typed, writeGguf, type GgufTyped, type GgufValue } from '../src/io/gguf.ts';
import { openSafetensors, writeSafetensors } from '../src/io/safetensors.ts';
import { loadAdapter, recordedBase, saveAdapter } from '../src/io/peft.ts';
import { llama2cTokenizerJson, readLlama2cModel } from '../src/io/llama2c.ts';
import { tokenizerFromGguf } from '../src/tokenizer/gguf.ts';
import { loadTokenizer } from '../src/tokenizer/hf.ts';
import { MAX_POSITIONS } from '../src/models/config.ts';
import { convertModel } from '../src/runtime/convert.ts';
import { makeRandomQwen2 } from './helpers/random-model.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-loader-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const base = makeRandomQwen2({ dir: path.join(tmp, 'base'), seed: 1, gguf: true });

/** A copy of the base HF folder with config.json edited. */
function hfWith(name: string, edit: (c: Record<string, unknown>) => void): string {
  const dir = path.join(tmp, name);
  fs.cpSync(base.dir, dir, { recursive: true });
  const c = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  edit(c);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(c));
  return dir;
}

/** A copy of the base GGUF with its metadata edited. */
function ggufWith(name: string, edit: (md: Record<string, GgufTyped>) => void): string {
  const f = openGguf(base.files.ggufF32), md: Record<string, GgufTyped> = {};
  for (const [k, v] of Object.entries(f.metadata)) md[k] = typed(f.metadataTypes[k] as never, v as GgufValue);
  edit(md);
  const out = path.join(tmp, `${name}.gguf`);
  writeGguf(out, { metadata: md, tensors: f.names.map((n) => ({ name: n, shape: f.shape(n), type: f.info(n).type, raw: f.raw(n) })) });
  return out;
}

test('config.json: heads that do not divide, an odd head size, a context past the RoPE table, no head_dim for an uneven split', () => {
  const cfg = path.join(tmp, 'kv3', 'config.json');
  assert.throws(() => loadHfFolder(hfWith('kv3', (c) => { c.num_key_value_heads = 3; })),
    (e: Error) => e.message === `${cfg}: field "num_key_value_heads" must be a divisor of the number of attention heads (4), got 3`);
  assert.throws(() => loadHfFolder(hfWith('hd15', (c) => { c.head_dim = 15; })), /hd15\/config\.json: field "head_dim" must be even \(RoPE turns pairs of dimensions\), got 15/);
  assert.throws(() => loadHfFolder(hfWith('pos', (c) => { c.max_position_embeddings = 2 ** 31 - 1; })),
    new RegExp(`pos/config\\.json: field "max_position_embeddings" must be at most ${MAX_POSITIONS} \\(the RoPE table holds every position\\), got 2147483647`));
  assert.throws(() => loadHfFolder(hfWith('heads5', (c) => { c.num_attention_heads = 5; c.num_key_value_heads = 5; delete c.head_dim; })),
    /heads5\/config\.json: hidden_size \(64\) is not a multiple of num_attention_heads \(5\), and no head_dim is given/);
  assert.throws(() => loadHfFolder(hfWith('layers1', (c) => { c.num_hidden_layers = 1; })), /layers1: tensor "model\.layers\.1\.[\w.]+" belongs to layer 1, but the config has 1 layer: the config and the weights disagree/);
  // Values that load and then compute garbage: an epsilon that swamps the mean square, an infinite RoPE factor.
  assert.throws(() => loadHfFolder(hfWith('eps', (c) => { c.rms_norm_eps = 1e10; })), /eps\/config\.json: field "rms_norm_eps" must be below 1 .*, got 10000000000/);
  const ropeInf = hfWith('rope-inf', (c) => { c.rope_scaling = { rope_type: 'llama3', factor: 12345, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }; });
  const cfgFile = path.join(ropeInf, 'config.json');
  fs.writeFileSync(cfgFile, fs.readFileSync(cfgFile, 'utf8').replace('12345', '1e999')); // JSON.parse reads it as Infinity
  assert.throws(() => loadHfFolder(ropeInf), /rope-inf\/config\.json: rope_scaling\.factor must be a positive finite number, got Infinity/);
});

test('GGUF RoPE scaling is read as llama.cpp reads it: linear without a type (either factor key), YaRN from its factor, original context and attn_factor', () => {
  const read = (name: string, md: Record<string, GgufTyped>) => ggufToModel(ggufWith(name, (m) => Object.assign(m, md))).config;
  assert.deepEqual(read('linear', { 'qwen2.rope.scaling.factor': typed('f32', 4) }).ropeScaling, { type: 'linear', factor: 4 });
  assert.deepEqual(read('linear-old', { 'qwen2.rope.scale_linear': typed('f32', 2) }).ropeScaling, { type: 'linear', factor: 2 });
  const yarn = { 'qwen2.rope.scaling.type': typed('string', 'yarn'), 'qwen2.rope.scaling.factor': typed('f32', 4) };
  // No original context: the trained one (context_length, 2048 here), reaching 4 × 2048 positions.
  const noOriginal = read('yarn', yarn);
  assert.deepEqual(noOriginal.ropeScaling, { type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 2048, betaFast: 32, betaSlow: 1, attentionFactor: 0.1 * Math.log(4) + 1 });
  assert.equal(noOriginal.maxPositionEmbeddings, 8192);
  // attn_factor scales cos and sin in llama.cpp whatever the scaling: kept with YaRN's, refused elsewhere; rope_freqs.weight
  // with a scaling type is refused (the graph has one RoPE scaling).
  assert.throws(() => read('attn-linear', { 'qwen2.rope.scaling.factor': typed('f32', 4), 'qwen2.rope.scaling.attn_factor': typed('f32', 1.19) }),
    /attn-linear\.gguf: metadata "qwen2\.rope\.scaling\.attn_factor" must be 1 with RoPE scaling "linear", got 1\.19/);
  assert.throws(() => read('attn-none', { 'qwen2.rope.scaling.type': typed('string', 'none'), 'qwen2.rope.scaling.attn_factor': typed('f32', 2) }),
    /attn-none\.gguf: metadata "qwen2\.rope\.scaling\.attn_factor" must be 1 with RoPE scaling "none" and no factor, got 2/);
  const freqs = ggufWith('yarn-freqs', (m) => Object.assign(m, yarn)), f = openGguf(freqs), both = path.join(tmp, 'yarn-freqs-2.gguf');
  const md: Record<string, GgufTyped> = {};
  for (const [k, v] of Object.entries(f.metadata)) md[k] = typed(f.metadataTypes[k] as never, v as GgufValue);
  writeGguf(both, { metadata: md, tensors: [...f.names.map((n) => ({ name: n, shape: f.shape(n), type: f.info(n).type, raw: f.raw(n) })), { name: 'rope_freqs.weight', shape: [8], type: 'F32' as const, data: new Float32Array(8).fill(2) }] });
  assert.throws(() => ggufToModel(both), /yarn-freqs-2\.gguf: tensor "rope_freqs\.weight" together with qwen2\.rope\.scaling\.type "yarn" is not supported \(one RoPE scaling at a time\)/);
  // A factor key that is there is the factor, as llama.cpp reads it: NaN refused, 0 (no scaling) not replaced by the other key.
  assert.throws(() => read('yarn-nan', { ...yarn, 'qwen2.rope.scaling.factor': typed('f32', NaN) }), /yarn-nan\.gguf: metadata "qwen2\.rope\.scaling\.factor" must be a positive number, got NaN/);
  assert.equal(read('factor0', { 'qwen2.rope.scaling.factor': typed('f32', 0), 'qwen2.rope.scale_linear': typed('f32', 2) }).ropeScaling, undefined);
  // A stretched context past the RoPE table, named by the keys that make it.
  assert.throws(() => read('yarn-huge', { ...yarn, 'qwen2.rope.scaling.factor': typed('f32', 10000) }),
    /^Error: .*yarn-huge\.gguf: metadata "qwen2\.rope\.scaling\.factor" × "qwen2\.context_length" \(10000 × 2048 = 20480000 positions\) must be at most 1048576 \(the RoPE table holds every position\)$/);
  assert.throws(() => read('yarn-huge-2', { ...yarn, 'qwen2.rope.scaling.factor': typed('f32', 10000), 'qwen2.rope.scaling.original_context_length': typed('u32', 4096) }),
    /yarn-huge-2\.gguf: metadata "qwen2\.rope\.scaling\.factor" × "qwen2\.rope\.scaling\.original_context_length" \(10000 × 4096 = 40960000 positions\)/);
  const given = read('yarn-orig', { ...yarn, 'qwen2.rope.scaling.original_context_length': typed('u32', 256), 'qwen2.rope.scaling.attn_factor': typed('f32', 0.5) });
  assert.deepEqual([given.ropeScaling, given.maxPositionEmbeddings], [{ type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 256, betaFast: 32, betaSlow: 1, attentionFactor: 0.5 * (0.1 * Math.log(4) + 1) }, 2048]);
});

test('GGUF metadata: values are checked as config.json\'s are, naming the key; nested and oversized arrays are refused', () => {
  assert.throws(() => ggufToModel(ggufWith('eps', (md) => { md['qwen2.attention.layer_norm_rms_epsilon'] = typed('f32', -1); })),
    /eps\.gguf: metadata "qwen2\.attention\.layer_norm_rms_epsilon" must be a positive number, got -1/);
  assert.throws(() => ggufToModel(ggufWith('theta', (md) => { md['qwen2.rope.freq_base'] = typed('f32', -10000); })),
    /theta\.gguf: metadata "qwen2\.rope\.freq_base" must be a positive number, got -10000/);
  // A float's bits stored under an integer type (as llama.cpp, refused: it would load and compute garbage).
  assert.throws(() => ggufToModel(ggufWith('eps-u32', (md) => { md['qwen2.attention.layer_norm_rms_epsilon'] = typed('u32', 897988541); })),
    /eps-u32\.gguf: metadata "qwen2\.attention\.layer_norm_rms_epsilon" is stored as u32 \(897988541\); it must be a float \(f32\)/);
  assert.throws(() => ggufToModel(ggufWith('ctx0', (md) => { md['qwen2.context_length'] = typed('u32', 0); })),
    /ctx0\.gguf: metadata "qwen2\.context_length" must be a positive integer, got 0/);
  assert.throws(() => ggufToModel(ggufWith('eos', (md) => { md['tokenizer.ggml.eos_token_id'] = typed('u32', 600); })),
    /eos\.gguf: the end-of-generation ids \(tokenizer\.ggml\.eos_token_id, eot, eom\) must be token ids below the vocabulary size \(512\), got \[600/);
  assert.throws(() => ggufToModel(ggufWith('longrope', (md) => { md['qwen2.rope.scaling.type'] = typed('string', 'longrope'); md['qwen2.rope.scaling.factor'] = typed('f32', 4); })),
    /^Error: .*longrope\.gguf: qwen2\.rope\.scaling\.type = "longrope" is not supported \("none", "linear" or "yarn"\)$/);
  assert.throws(() => ggufToModel(ggufWith('yarn-attn', (md) => { md['qwen2.rope.scaling.type'] = typed('string', 'yarn'); md['qwen2.rope.scaling.factor'] = typed('f32', 4); md['qwen2.rope.scaling.attn_factor'] = typed('f32', -1); })),
    /yarn-attn\.gguf: metadata "qwen2\.rope\.scaling\.attn_factor" must be a positive number, got -1/);
  assert.throws(() => ggufToModel(ggufWith('factor-neg', (md) => { md['qwen2.rope.scaling.factor'] = typed('f32', -4); })),
    /factor-neg\.gguf: metadata "qwen2\.rope\.scaling\.factor" must be a positive number, got -4/);
  assert.throws(() => ggufToModel(ggufWith('partial', (md) => { md['qwen2.rope.dimension_count'] = typed('u32', 8); })),
    /^Error: .*partial\.gguf: qwen2\.rope\.dimension_count = 8, but the heads have 16 dimensions: partial rotary embeddings are not supported$/);
  assert.deepEqual(ggufToModel(ggufWith('factor1', (md) => { md['qwen2.rope.scaling.factor'] = typed('f32', 1); })).config, ggufToModel(base.files.ggufF32).config);
  assert.deepEqual(ggufToModel(ggufWith('none', (md) => { md['qwen2.rope.scaling.type'] = typed('string', 'none'); md['qwen2.rope.scaling.factor'] = typed('f32', 4); })).config, ggufToModel(base.files.ggufF32).config);
  // u64 values beyond 2^53 read as BigInts: named in the message (which JSON could not print), and no token id.
  assert.throws(() => ggufToModel(ggufWith('u64-layers', (md) => { md['qwen2.block_count'] = typed('u64', BigInt(2 ** 60)); })),
    /u64-layers\.gguf: metadata "qwen2\.block_count" is not a number \(1152921504606846976n\)/);
  assert.throws(() => ggufToModel(ggufWith('u64-bos', (md) => { md['tokenizer.ggml.bos_token_id'] = typed('u64', BigInt(2 ** 60)); })),
    /u64-bos\.gguf: metadata "tokenizer\.ggml\.bos_token_id" must be a token id, got 1152921504606846976n/);
  // A key written twice (llama.cpp refuses the file), and a tensor type id no ggml type has.
  const dup = fs.readFileSync(ggufWith('dup', () => {})), eosKey = dup.indexOf('tokenizer.ggml.eos_token_id');
  dup.write('tokenizer.ggml.bos_token_id', eosKey); // same length: now a second bos key
  fs.writeFileSync(path.join(tmp, 'dup.gguf'), dup);
  assert.throws(() => openGguf(path.join(tmp, 'dup.gguf')), /dup\.gguf: metadata "tokenizer\.ggml\.bos_token_id" appears twice/);
  const f = openGguf(base.files.ggufF32), name = f.names[1], file = fs.readFileSync(base.files.ggufF32);
  file.writeUInt32LE(5, file.indexOf(name, file.indexOf('tokenizer.ggml')) + name.length + 4 + 8 * f.info(name).dims.length); // its type: 5 was Q4_2, long gone
  fs.writeFileSync(path.join(tmp, 'type5.gguf'), file);
  // It opens (its size is unknown, so where the next tensor starts is too), and is refused by name at load.
  assert.equal(openGguf(path.join(tmp, 'type5.gguf')).info(name).typeName, 'unknown type id 5');
  assert.throws(() => ggufToModel(path.join(tmp, 'type5.gguf')), new RegExp(`type5\\.gguf: tensor "${name.replaceAll('.', '\\.')}" has type unknown type id 5, which is not supported`));
  // Arrays nested 100 000 deep (writeGguf writes none: the bytes by hand): refused before the reader recurses that far.
  const u32 = (x: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(x); return b; }, u64 = (x: number) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(x)); return b; };
  const key = Buffer.from('general.nested'), ARRAY = 9, U8 = 0;
  const nest = path.join(tmp, 'nest.gguf');
  fs.writeFileSync(nest, Buffer.concat([Buffer.from('GGUF'), u32(3), u64(0), u64(1), u64(key.length), key, u32(ARRAY),
    ...Array.from({ length: 100_000 }, () => Buffer.concat([u32(ARRAY), u64(1)])), u32(U8), u64(1), Buffer.from([7])]));
  assert.throws(() => openGguf(nest), /nest\.gguf: metadata "general\.nested" nests arrays more than 8 deep \(corrupt file\?\)/);
  // An array length the file cannot hold: refused before it is allocated.
  const big = ggufWith('biglen', (md) => { md['general.zz'] = typed('u8', [1, 2, 3, 4]); });
  const bytes = fs.readFileSync(big), at = bytes.indexOf(Buffer.from('general.zz')) + 'general.zz'.length + 4 + 4; // key, value type, element type
  bytes.writeBigUInt64LE(2n ** 40n, at);
  fs.writeFileSync(big, bytes);
  assert.throws(() => openGguf(big), /biglen\.gguf: metadata "general\.zz" declares 1099511627776 elements, more than the \d+ bytes left in the file hold \(corrupt file\?\)/);
  // ... and one the file holds but the heap would not (one JS value per element; 2e8 took the process down).
  bytes.writeBigUInt64LE(2n ** 24n + 1n, at);
  fs.writeFileSync(big, bytes);
  fs.truncateSync(big, bytes.length + 2 ** 24); // sparse
  assert.throws(() => openGguf(big), /biglen\.gguf: metadata "general\.zz" declares 16777217 elements, more than the 16777216 a model's metadata holds \(corrupt file\?\)/);
});

test('hostile files: a safetensors header over the format\'s 100 MB is refused, and so is a link to a device (/dev/zero) among a model\'s or adapter\'s files; a pipe is read', () => {
  const st = path.join(tmp, 'hugeheader.safetensors'), len = Buffer.alloc(8);
  len.writeBigUInt64LE(100_000_001n);
  fs.writeFileSync(st, len);
  fs.truncateSync(st, 8 + 100_000_001 + 8); // sparse
  assert.throws(() => openSafetensors(st), /hugeheader\.safetensors: header length 100000001 is over the format's limit of 100000000 bytes: corrupt, or not safetensors/);
  // A GGUF header counting more tensors than the file can hold is corrupt, said so (it read on into 'tensor "" has 0 dims').
  const counted = path.join(tmp, 'counted.gguf'), g = fs.readFileSync(base.files.ggufF32);
  g.writeBigUInt64LE(2n ** 40n, 8);
  fs.writeFileSync(counted, g);
  assert.throws(() => openGguf(counted), { message: `${counted}: the header counts ${2 ** 40} tensors and ${g.readBigUInt64LE(16)} metadata keys, more than its ${g.length} bytes can hold: the file is corrupt` });
  fs.writeFileSync(st, Buffer.alloc(16, 0xff)); // the length as written, not rounded to a double (18446744073709552000)
  assert.throws(() => openSafetensors(st), { message: `${st}: header length 18446744073709551615 goes beyond the end of the file (16 bytes): file truncated or not safetensors` });
  if (!fs.existsSync('/dev/zero')) return;
  const m = path.join(tmp, 'zero-model');
  fs.cpSync(base.dir, m, { recursive: true });
  fs.rmSync(path.join(m, 'tokenizer_config.json'), { force: true });
  fs.symlinkSync('/dev/zero', path.join(m, 'tokenizer_config.json'));
  assert.throws(() => openSource(m), /zero-model\/tokenizer_config\.json is not a regular file or a pipe \(a device or socket\), not a JSON file/);
  const adapter = path.join(tmp, 'zero-adapter');
  fs.mkdirSync(adapter);
  fs.symlinkSync('/dev/zero', path.join(adapter, 'adapter_config.json'));
  assert.throws(() => loadAdapter(adapter, base.config), /^Error: adapter: .*zero-adapter\/adapter_config\.json is not a regular file or a pipe/);
  // A pipe (serve --router <(cat router.json)) is read as the file it carries.
  const fifo = path.join(tmp, 'pipe.json');
  if (spawnSync('mkfifo', [fifo]).status !== 0) return;
  const writer = spawn('sh', ['-c', `cat '${path.join(base.dir, 'config.json')}' > '${fifo}'`]);
  assert.deepEqual(readJsonFile(fifo), JSON.parse(fs.readFileSync(path.join(base.dir, 'config.json'), 'utf8')));
  writer.kill();
});

test('what is not a model is named: a symbolic link loop, a named pipe, an adapter folder, another model\'s tokenizer beside the weights', () => {
  const loop = path.join(tmp, 'loop-a');
  fs.symlinkSync(path.join(tmp, 'loop-b'), loop);
  fs.symlinkSync(loop, path.join(tmp, 'loop-b'));
  assert.throws(() => openSource(loop), { message: `model: ${loop} is a symbolic link that leads back to itself (a loop)` }); // it "did not exist"
  const dangling = path.join(tmp, 'dangling.gguf');
  fs.symlinkSync(path.join(tmp, 'gone.gguf'), dangling);
  assert.throws(() => openSource(dangling), { message: `model: ${dangling} is a symbolic link to ${path.join(tmp, 'gone.gguf')}, which does not exist` });
  const fifo = path.join(tmp, 'pipe.gguf');
  if (spawnSync('mkfifo', [fifo]).status === 0) assert.throws(() => openSource(fifo), { message: `model: ${fifo} is not a regular file (a named pipe, a socket or a device): give the model's file or folder` }); // it hung on the header's read
  const adapter = path.join(tmp, 'an-adapter');
  fs.mkdirSync(adapter);
  fs.writeFileSync(path.join(adapter, 'adapter_config.json'), '{}');
  assert.throws(() => openSource(adapter), { message: `model: ${adapter} is a PEFT adapter (adapter_config.json), not a model: give it as the adapter (the adapter option of loadModel), with its base model as the model` });
  // A folder holding a GGUF (its first part, where it is split) names it: the file is the model.
  const ggufs = path.join(tmp, 'ggufs');
  fs.mkdirSync(ggufs);
  assert.throws(() => openSource(ggufs), { message: `${ggufs}: no config.json, not a Hugging Face model folder` });
  for (const f of ['big-00001-of-00002.gguf', 'big-00002-of-00002.gguf']) fs.writeFileSync(path.join(ggufs, f), '');
  assert.throws(() => openSource(ggufs), { message: `${ggufs}: no config.json, not a Hugging Face model folder; it holds a GGUF file: give it as the model (${path.join(ggufs, 'big-00001-of-00002.gguf')})` });
  fs.writeFileSync(path.join(ggufs, 'a-Q4_0.gguf'), '');
  assert.throws(() => openSource(ggufs), { message: `${ggufs}: no config.json, not a Hugging Face model folder; it holds 2 GGUF files: give one of them as the model (${path.join(ggufs, 'a-Q4_0.gguf')}, …)` });
  // The embedded model's weights beside this random model's tokenizer (fewer tokens, so not refused by size): its end
  // token is ordinary text there, and chat was garbage.
  const mixed = path.join(tmp, 'mixed');
  fs.mkdirSync(mixed);
  for (const f of ['config.json', 'model.safetensors']) fs.symlinkSync(path.resolve('models/default', f), path.join(mixed, f));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(base.dir, f), path.join(mixed, f));
  const eos = JSON.parse(fs.readFileSync('models/default/config.json', 'utf8')).eos_token_id;
  assert.throws(() => openSource(mixed), new RegExp(`^Error: model: ${path.join(mixed, 'config\\.json')}'s end token ${eos} is ".*" in ${path.join(mixed, 'tokenizer\\.json')}, ordinary text, not a special token: the tokenizer is not this model's \\(or eos_token_id is wrong\\)$`));
  // An end token that only generation_config.json gives is named by that file.
  const { eos_token_id: _, ...rest } = JSON.parse(fs.readFileSync('models/default/config.json', 'utf8'));
  fs.rmSync(path.join(mixed, 'config.json'));
  fs.writeFileSync(path.join(mixed, 'config.json'), JSON.stringify(rest));
  fs.writeFileSync(path.join(mixed, 'generation_config.json'), JSON.stringify({ eos_token_id: eos }));
  assert.throws(() => openSource(mixed), new RegExp(`^Error: model: ${path.join(mixed, 'generation_config\\.json')}'s end token ${eos} is ".*" in ${path.join(mixed, 'tokenizer\\.json')}, ordinary text`));
  // A shape that disagrees where config.json left a field to its default names that default (it blamed "the config").
  const noKv = path.join(tmp, 'no-kv-heads');
  fs.mkdirSync(noKv);
  for (const f of fs.readdirSync(base.dir).filter((f) => f !== 'config.json' && !f.endsWith('.gguf'))) fs.symlinkSync(path.join(base.dir, f), path.join(noKv, f));
  const { num_key_value_heads: kv, ...withoutKv } = JSON.parse(fs.readFileSync(path.join(base.dir, 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(noKv, 'config.json'), JSON.stringify(withoutKv));
  assert.ok(kv < withoutKv.num_attention_heads);
  assert.throws(() => openSource(noKv), new RegExp(`^Error: ${noKv}: tensor "model\\.layers\\.0\\.self_attn\\.k_proj\\.weight" has shape \\[\\d+,\\d+\\], expected \\[\\d+,\\d+\\] from the config; ${path.join(noKv, 'config\\.json')} gives no num_key_value_heads \\(so it is num_attention_heads, ${withoutKv.num_attention_heads}\\)$`));
  // An end token past the smaller tokenizer's vocabulary (Llama 3.2's tokenizer.json in a Qwen folder): it loaded, unsaid.
  const size = loadTokenizer(mixed).vocabSize, rows = JSON.parse(fs.readFileSync('models/default/config.json', 'utf8')).vocab_size;
  assert.ok(size < rows - 1, `${size} tokens, ${rows} rows`);
  fs.writeFileSync(path.join(mixed, 'generation_config.json'), JSON.stringify({ eos_token_id: rows - 1 }));
  assert.throws(() => openSource(mixed), { message: `model: ${path.join(mixed, 'generation_config.json')}'s end token ${rows - 1} is past ${path.join(mixed, 'tokenizer.json')}'s vocabulary (0..${size - 1}): the tokenizer is not this model's (or eos_token_id is wrong)` });
});

test('GGUF tokenizer lists of the wrong type are refused by key', () => {
  const md = openGguf(base.files.ggufF32).metadata;
  assert.throws(() => tokenizerFromGguf({ ...md, 'tokenizer.ggml.merges': [1, 2] }, 'x.gguf'),
    /tokenizer: x\.gguf metadata "tokenizer\.ggml\.merges" must be an array of strings "left right", got 1 at index 0/);
  assert.throws(() => tokenizerFromGguf({ ...md, 'tokenizer.ggml.tokens': 'abc' }, 'x.gguf'), /metadata "tokenizer\.ggml\.tokens" must be an array of strings, got "abc"/);
  assert.throws(() => tokenizerFromGguf({ ...md, 'tokenizer.chat_template': 7 }, 'x.gguf'), { message: 'tokenizer: x.gguf metadata "tokenizer.chat_template" must be a string (a Jinja template), got 7' }); // it was read as none
  // A type list shorter than the tokens (a corrupt file): the tokens past it read as text, the chat markers too.
  const n = (md['tokenizer.ggml.tokens'] as string[]).length;
  assert.throws(() => tokenizerFromGguf({ ...md, 'tokenizer.ggml.token_type': (md['tokenizer.ggml.token_type'] as number[]).slice(0, 10) }, 'x.gguf'),
    { message: `tokenizer: x.gguf metadata "tokenizer.ggml.token_type" has 10 entries for ${n} tokens (tokenizer.ggml.tokens): the file is corrupt — put the model's tokenizer.json beside it` });
});

test('weights that are not finite are refused at load (model and adapter), naming file, tensor and element', () => {
  const dir = path.join(tmp, 'nan');
  fs.cpSync(base.dir, dir, { recursive: true });
  const st = openSafetensors(path.join(dir, 'model.safetensors'));
  const tensors = new Map(st.names.map((n) => [n, { shape: st.shape(n), data: st.get(n) }]));
  tensors.get('model.layers.0.mlp.down_proj.weight')!.data[5] = NaN;
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  const m = loadHfFolder(dir);
  assert.throws(() => m.weights.get('model.layers.0.mlp.down_proj.weight'),
    /nan\/model\.safetensors: tensor "model\.layers\.0\.mlp\.down_proj\.weight" holds NaN at element 5: weights must be finite/);
  // convert refuses them before it makes its folder (an empty one was left behind).
  const out = path.join(tmp, 'nan-converted');
  assert.throws(() => convertModel(dir, out, { quant: 'fp32' }), /holds NaN at element 5: weights must be finite/);
  assert.equal(fs.existsSync(out), false);
  const ad = path.join(tmp, 'adapter');
  const a = new Float32Array(4 * base.config.hiddenSize).fill(0.1), b = new Float32Array(base.config.numHeads * base.config.headDim * 4).fill(0.1);
  saveAdapter(ad, { r: 4, loraAlpha: 8, targets: ['q_proj'] }, new Map(Array.from({ length: base.config.numLayers }, (_, l) => [`model.layers.${l}.self_attn.q_proj`, { a, b }])), base.config.numLayers);
  const w = path.join(ad, 'adapter_model.safetensors'), f = openSafetensors(w);
  const t = new Map(f.names.map((n) => [n, { shape: f.shape(n), data: f.get(n) }]));
  t.get(f.names.find((n) => n.endsWith('lora_B.weight'))!)!.data[0] = Infinity;
  writeSafetensors(w, t);
  assert.throws(() => loadAdapter(ad, base.config), /adapter_model\.safetensors: tensor ".*lora_B\.weight" holds Infinity at element 0/);
  // PEFT's older adapter_model.bin (a pickle) in its place is named, with how to save it as safetensors.
  fs.renameSync(w, path.join(ad, 'adapter_model.bin'));
  assert.throws(() => loadAdapter(ad, base.config), { message: `adapter: ${w} not found; ${path.join(ad, 'adapter_model.bin')} is a PyTorch checkpoint, which edgereason does not read: save the adapter as safetensors (PEFT's save_pretrained(dir, safe_serialization=True))` });
});

test('a JSON file that is a folder, or cut short, is refused naming the file and which of the two it is', () => {
  const cases: [string, string, (dir: string) => unknown][] = [
    ['config.json', '', (d) => loadHfFolder(d)], ['tokenizer.json', 'tokenizer: ', (d) => loadTokenizer(d)],
    ['adapter_config.json', 'adapter: ', (d) => loadAdapter(d, base.config)],
  ];
  for (const [file, prefix, load] of cases) {
    const dir = path.join(tmp, `json-${file}`), f = path.join(dir, file);
    fs.cpSync(base.dir, dir, { recursive: true });
    fs.writeFileSync(f, '{"a": ');
    assert.throws(() => load(dir), (e: Error) => e.message.startsWith(`${prefix}${f} is not valid JSON (cut short?): `));
    fs.writeFileSync(f, '{"a": 1,}'); // not cut short: not said to be (every JSON error was "(truncated?)")
    assert.throws(() => load(dir), (e: Error) => e.message.startsWith(`${prefix}${f} is not valid JSON: `) || assert.fail(e.message));
    if (fs.existsSync(path.join(base.dir, file))) { // a byte-order mark (a Windows editor's) is read past
      fs.writeFileSync(f, `\uFEFF${fs.readFileSync(path.join(base.dir, file), 'utf8')}`);
      load(dir);
    }
    fs.rmSync(f);
    fs.mkdirSync(f);
    assert.throws(() => load(dir), (e: Error) => e.message === `${prefix}${f} is a folder, not a JSON file`);
  }
  // Also where a file is read for a note or advice: generation_config.json's sampling, an adapter's recorded base model.
  const bom = path.join(tmp, 'json-bom');
  fs.mkdirSync(bom);
  fs.writeFileSync(path.join(bom, 'generation_config.json'), `\uFEFF${JSON.stringify({ do_sample: true, temperature: 0.6 })}`);
  fs.writeFileSync(path.join(bom, 'adapter_config.json'), `\uFEFF${JSON.stringify({ base_model_name_or_path: 'Qwen/Qwen2.5-0.5B' })}`);
  assert.deepEqual([generationSampling(bom), recordedBase(bom)], [{ temperature: 0.6 }, 'Qwen/Qwen2.5-0.5B']);
  const template = path.join(tmp, 'json-tokenizer.json', 'chat_template.jinja'); // that copy's tokenizer.json is a folder now
  fs.rmSync(path.dirname(template), { recursive: true });
  fs.cpSync(base.dir, path.dirname(template), { recursive: true });
  fs.mkdirSync(template);
  assert.throws(() => loadTokenizer(path.dirname(template)), { message: `${template} is a folder, not a chat template` }); // it was a bare EISDIR
});

test('PyTorch checkpoints are refused by name; a file of a Hugging Face folder stands for the folder', () => {
  const dir = path.join(tmp, 'pickled');
  fs.mkdirSync(dir);
  fs.copyFileSync(path.resolve(import.meta.dirname, '../models/default/config.json'), path.join(dir, 'config.json'));
  fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), Buffer.from([0x50, 0x4b, 0x03, 0x04, 0, 0]));
  assert.throws(() => openSource(dir), { message: `${dir}: no model.safetensors or model.safetensors.index.json; pytorch_model.bin is a PyTorch checkpoint, which edgereason does not read: save the model as safetensors (save_pretrained(dir, safe_serialization=True))` });
  assert.throws(() => openSource(path.join(dir, 'pytorch_model.bin')), /^Error: model: .*pytorch_model\.bin is a PyTorch checkpoint, which edgereason does not read/);
  fs.copyFileSync(path.join(dir, 'pytorch_model.bin'), path.join(dir, 'weights.bin')); // torch.save's zip, whatever its name
  assert.throws(() => openSource(path.join(dir, 'weights.bin')), /weights\.bin is a PyTorch checkpoint/);
  const def = path.resolve(import.meta.dirname, '../models/default');
  for (const f of ['config.json', 'model.safetensors']) assert.equal(openSource(path.join(def, f)).path, def);
  // A trainer's folder: the model's own file is named, not its optimizer state; a folder named like a file is a folder.
  fs.writeFileSync(path.join(dir, 'optimizer.pt'), 'x');
  assert.throws(() => openSource(dir), /; pytorch_model\.bin is a PyTorch checkpoint/);
  const named = path.join(tmp, 'tiny.pt');
  fs.mkdirSync(named);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) fs.symlinkSync(path.join(def, f), path.join(named, f));
  assert.equal(openSource(named).kind, 'hf');
});

test('safetensors: two tensors pointing at the same bytes are refused', () => {
  const p = path.join(tmp, 'overlap.safetensors');
  const json = Buffer.from(JSON.stringify({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }));
  const buf = Buffer.alloc(8 + json.length + 12);
  buf.writeBigUInt64LE(BigInt(json.length));
  json.copy(buf, 8);
  fs.writeFileSync(p, buf);
  assert.throws(() => openSafetensors(p), /overlap\.safetensors: tensors "a" and "b" overlap in the data section \(corrupt header\)/);
});

test('safetensors: the tensors must fill the data section, so a header length a few bytes off is refused (it would shift every tensor)', () => {
  const json = JSON.stringify({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }) + '    ';
  const write = (name: string, headerLen: number, data: number, hole = false) => {
    const p = path.join(tmp, name), h = hole ? json.replace('[8, 12]', '[12, 16]').replace('[8,12]', '[12,16]') : json;
    const buf = Buffer.alloc(8 + Buffer.byteLength(h) + data);
    buf.writeBigUInt64LE(BigInt(headerLen));
    buf.write(h, 8);
    fs.writeFileSync(p, buf);
    return p;
  };
  assert.deepEqual(openSafetensors(write('exact.safetensors', json.length, 12)).names, ['a', 'b']);
  assert.throws(() => openSafetensors(write('short-header.safetensors', json.length - 4, 12)), /short-header\.safetensors: the last 4 bytes of the file belong to no tensor \(corrupt header, a wrong header length, or data appended\)/);
  assert.throws(() => openSafetensors(write('appended.safetensors', json.length, 16)), /appended\.safetensors: the last 4 bytes of the file belong to no tensor/);
  assert.throws(() => openSafetensors(write('hole.safetensors', json.length, 16, true)), /hole\.safetensors: 4 bytes of the data section before tensor "b" belong to no tensor/);
  // A dtype named like an Object property is no dtype.
  const p = path.join(tmp, 'dtype.safetensors'), h = JSON.stringify({ a: { dtype: 'toString', shape: [2], data_offsets: [0, 8] } });
  const buf = Buffer.alloc(8 + h.length + 8);
  buf.writeBigUInt64LE(BigInt(h.length));
  buf.write(h, 8);
  fs.writeFileSync(p, buf);
  assert.throws(() => openSafetensors(p), /dtype\.safetensors: tensor "a" has unsupported dtype "toString" \(supported: /);
});

test('tokenizer.json that parses but cannot tokenize, and a llama2.c tokenizer piece past its max_token_length, are refused by file', () => {
  const dir = path.join(tmp, 'tok-broken'), file = path.join(dir, 'tokenizer.json'), good = JSON.parse(fs.readFileSync(path.join(base.dir, 'tokenizer.json'), 'utf8'));
  fs.mkdirSync(dir);
  const withJson = (edit: (j: any) => void) => { const j = structuredClone(good); edit(j); fs.writeFileSync(file, JSON.stringify(j)); return () => loadTokenizer(dir); };
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ additional_special_tokens: 5 }));
  assert.throws(withJson(() => {}), new RegExp(`tokenizer: ${dir}/tokenizer_config\\.json field "additional_special_tokens" must be a list of tokens, got 5`));
  // A tokenizer_config.json that is no object was read as one without fields; a BOS or EOS the vocabulary lacks left generation nothing to stop on.
  const configFile = path.join(dir, 'tokenizer_config.json');
  fs.writeFileSync(configFile, '[]');
  assert.throws(withJson(() => {}), { message: `tokenizer: ${configFile}: must hold a JSON object, got []` });
  for (const [k, v] of [['eos_token', '<|nope|>'], ['bos_token', { content: '<s2>', special: true }]] as const) {
    fs.writeFileSync(configFile, JSON.stringify({ [k]: v }));
    assert.throws(withJson(() => {}), { message: `tokenizer: ${dir}: its ${k} "${typeof v === 'string' ? v : v.content}" (from tokenizer_config.json or special_tokens_map.json) is not a token of tokenizer.json's vocabulary` });
  }
  // (One that special_tokens_map.json gives where tokenizer_config.json has none, as older folders keep them.)
  fs.writeFileSync(configFile, '{}');
  fs.writeFileSync(path.join(dir, 'special_tokens_map.json'), JSON.stringify({ eos_token: '<|nope|>' }));
  assert.throws(withJson(() => {}), { message: `tokenizer: ${dir}: its eos_token "<|nope|>" (from tokenizer_config.json or special_tokens_map.json) is not a token of tokenizer.json's vocabulary` });
  fs.rmSync(path.join(dir, 'special_tokens_map.json'));
  // It fills sep, cls and mask and the additional special tokens too, as transformers does (a template reading them rendered them empty).
  fs.writeFileSync(path.join(dir, 'special_tokens_map.json'), JSON.stringify({ sep_token: '<|im_end|>', cls_token: '<|endoftext|>', additional_special_tokens: ['<|im_start|>'] }));
  fs.writeFileSync(path.join(dir, 'chat_template.jinja'), '[{{ sep_token }}|{{ cls_token }}|{{ additional_special_tokens | join(",") }}]');
  assert.equal(withJson(() => {})().applyChatTemplate([]), '[<|im_end|>|<|endoftext|>|<|im_start|>]');
  for (const f of ['special_tokens_map.json', 'chat_template.jinja']) fs.rmSync(path.join(dir, f));
  for (const f of ['special_tokens_map.json', 'chat_template.json']) {
    fs.writeFileSync(path.join(dir, f), '"x"');
    assert.throws(withJson(() => {}), { message: `tokenizer: ${path.join(dir, f)}: must hold a JSON object, got "x"` });
    fs.rmSync(path.join(dir, f));
  }
  fs.rmSync(configFile);
  assert.throws(withJson((j) => { j.model.vocab = []; }), new RegExp(`tokenizer: ${file}: a BPE model's "model\\.vocab" must map tokens to ids, got \\[\\]`));
  assert.throws(withJson((j) => { j.model.vocab = Object.entries(j.model.vocab); }), /a BPE model's "model\.vocab" must map tokens to ids, got \[\[/);
  // Fields the library needs only when it encodes: found at load, not at the first request.
  assert.throws(withJson((j) => { j.post_processor = { type: 'TemplateProcessing' }; }), new RegExp(`tokenizer: ${file} could not be loaded: `));
  assert.throws(withJson((j) => { j.pre_tokenizer = { type: 'Sequence', pretokenizers: [{ type: 'Split', behavior: 'Isolated', invert: false }] }; }), new RegExp(`tokenizer: ${file}: a "Split" pre-tokenizer has no "pattern" \\(\\{"type":"Split"`));
  // So do a Replace without its pattern (spaces became unknown tokens, unsaid; a decoder's failed unnamed) and a Sequence that is no list.
  assert.throws(withJson((j) => { j.normalizer = { type: 'Replace', content: '▁' }; }), { message: `tokenizer: ${file}: a "Replace" normalizer has no "pattern" ({"type":"Replace","content":"▁"})` });
  assert.throws(withJson((j) => { j.decoder = { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { Text: '▁' }, content: ' ' }] }; }), { message: `tokenizer: ${file}: a "Replace" decoder's "pattern" must be {"String": text} or {"Regex": text}, got {"Text":"▁"}` });
  assert.throws(withJson((j) => { j.decoder = { type: 'Replace', pattern: { String: '▁' } }; }), { message: `tokenizer: ${file}: a "Replace" decoder's "content" must be text, got undefined` });
  assert.throws(withJson((j) => { j.normalizer = { type: 'Sequence', normalizers: 'x' }; }), { message: `tokenizer: ${file}: a "Sequence" normalizer's "normalizers" must be a list of steps, got "x"` });
  // A Unigram vocabulary is a list of [token, score] pairs (a malformed one was read as one unknown token).
  const unigram = (vocab: unknown, unk: unknown = 0) => withJson((j) => { j.model = { type: 'Unigram', unk_id: unk, vocab }; j.added_tokens = []; });
  assert.throws(unigram('x'), { message: `tokenizer: ${file}: a Unigram model's "model.vocab" must be a list of [token, score] pairs, got "x"` });
  assert.throws(unigram([['<unk>', 0], ['a']]), { message: `tokenizer: ${file}: "model.vocab"[1] of a Unigram model must be [token, score], got ["a"]` });
  assert.throws(unigram([['<unk>', 0], ['a', -1]], 2), { message: `tokenizer: ${file}: a Unigram model's "model.unk_id" must be the index of a token of "model.vocab" (0 to 1), got 2` });
  // A merge the vocabulary cannot hold drops text ("the" encoded as "e"); a post-processor's unknown special token
  // was added as <unk>. Both are refused at load, as the Rust tokenizers library refuses them.
  const tiny = (merges: unknown[], vocab: Record<string, number>, post: unknown = null) => withJson((j) => {
    Object.assign(j, { added_tokens: [{ id: 3, content: '<s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }], normalizer: null, pre_tokenizer: null, post_processor: post, decoder: null });
    j.model = { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges };
  });
  assert.deepEqual(tiny(['t h'], { t: 0, h: 1, th: 2 })().encode('th', { addSpecialTokens: false }), [2]);
  assert.throws(tiny(['t h'], { t: 0, h: 1, e: 2 }), { message: `tokenizer: ${file}: "model.merges"[0] ["t","h"] makes "th", which "model.vocab" lacks: the text it merges would be dropped` });
  assert.throws(tiny([['t', 'h'], ['x', 'h']], { t: 0, h: 1, th: 2 }), { message: `tokenizer: ${file}: "model.merges"[1] ["x","h"] holds "x", which "model.vocab" lacks: the text it merges would be dropped` });
  const template = (id: string, ids: number[]) => ({ type: 'TemplateProcessing', single: [{ SpecialToken: { id, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [], special_tokens: { '<s>': { id: '<s>', ids, tokens: ['<s>'] } } });
  assert.deepEqual(tiny([], { t: 0 }, template('<s>', [3]))().encode('t'), [3, 0]);
  assert.throws(tiny([], { t: 0 }, { type: 'Sequence', processors: [template('<zz>', [3])] }), { message: `tokenizer: ${file}: the post-processor's template adds the special token "<zz>", which its "special_tokens" does not define` });
  assert.throws(tiny([], { t: 0 }, template('<s>', [99999])), { message: `tokenizer: ${file}: the post-processor's special token "<s>" has the id 99999, which is not a token of the vocabulary` });
  // llama2.c: int32 max_token_length, then per token a float32 score, an int32 length and the bytes.
  const piece = (text: string) => { const b = Buffer.alloc(8 + text.length); b.writeFloatLE(0, 0); b.writeInt32LE(text.length, 4); b.write(text, 8); return b; };
  const l2c = path.join(tmp, 'tok-long.bin'), header = Buffer.alloc(4);
  header.writeInt32LE(5);
  fs.writeFileSync(l2c, Buffer.concat([header, ...['<unk>', '<s>', '</s>', 'ab', 'a'.repeat(9)].map(piece)]));
  assert.throws(() => llama2cTokenizerJson(l2c), new RegExp(`llama2c: ${l2c} token 4 is 9 bytes long, more than the file's max_token_length 5: the file is corrupt`));
  // A header that allows any length: a 100 KB piece would take minutes to derive merges from.
  header.writeInt32LE(2 ** 31 - 1);
  fs.writeFileSync(l2c, Buffer.concat([header, ...['<unk>', '<s>', '</s>', 'ab', 'a'.repeat(100_000)].map(piece)]));
  assert.throws(() => llama2cTokenizerJson(l2c), { message: `llama2c: ${l2c} token 4 is 100000 bytes long, more than 1024, the longest piece edgereason reads: the file is corrupt` });
  fs.writeFileSync(l2c, ''); // said to be empty (it was "its max_token_length is -1")
  assert.throws(() => llama2cTokenizerJson(l2c), { message: `llama2c: ${l2c} is not a llama2.c tokenizer (it is empty: too short for its header)` });
});

test('tokenizer: a chat_template that is not a template, or a list without "default" (at the first chat request), and an empty vocabulary are refused by file', () => {
  const dir = path.join(tmp, 'tok');
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(base.dir, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
  const withConfig = (c: object) => { fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(c)); return () => loadTokenizer(dir); };
  // Said at the first chat request: raw prompts do not need a template.
  const chat = (c: object) => { const t = withConfig(c)(); assert.ok(t.encode('hi').length > 0); return () => t.applyChatTemplate([{ role: 'user', content: 'hi' }]); };
  assert.throws(chat({ chat_template: 42 }), /tokenizer: .*tok.* \(tokenizer_config\.json\) field "chat_template" must be a string or a list of \{name, template\}, got 42/);
  assert.throws(chat({ chat_template: [{ name: 'tool_use', template: 'x' }, { name: 'rag', template: 'y' }] }),
    /field "chat_template" lists templates named "tool_use", "rag", none of them "default" \(the chat template\)/);
  assert.throws(chat({ chat_template: [] }), /field "chat_template" is an empty list: give the chat template \(a string, or a \{name: "default", template\} entry\), or leave the field out/);
  assert.equal(withConfig({ chat_template: [{ name: 'rag', template: 'y' }, { name: 'default', template: 'z' }] })().applyChatTemplate([]), 'z');
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({ ...json, added_tokens: [], model: { ...json.model, vocab: {}, merges: [] } }));
  assert.throws(withConfig({}), /tokenizer: .*tok.* has no vocabulary \(its "model\.vocab" holds no tokens\)/);
  // Added tokens alone are no vocabulary either (every text encoded as unknown tokens).
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({ ...json, added_tokens: [{ id: 0, content: '<x>', special: true }], model: { ...json.model, vocab: {}, merges: [] } }));
  assert.throws(withConfig({}), /tokenizer: .*tok.* has no vocabulary \(its "model\.vocab" holds no tokens\)/);
  // Lists that are not lists, an added token without its text: named (the library's TypeErrors named neither).
  for (const [changed, message] of [
    [{ added_tokens: null }, /tokenizer: .*tok.*: "added_tokens" must be a list of \{"id", "content"\} tokens, got null$/],
    [{ added_tokens: [{ id: 3 }] }, /tokenizer: .*tok.*: "added_tokens"\[0\] must be \{"id", "content": string\}, got \{"id":3\}$/],
    [{ model: { ...json.model, merges: { a: 1 } } }, /tokenizer: .*tok.*: "model\.merges" must be a list of merges \("left right" or \[left, right\]\), got \{"a":1\}$/],
    [{ model: { ...json.model, merges: [...json.model.merges, 7] } }, new RegExp(`tokenizer: .*tok.*: "model\\.merges"\\[${json.model.merges.length}\\] must be "left right" or \\[left, right\\], got 7$`)],
    [{ model: { ...json.model, merges: ['ab', ...json.model.merges] } }, /tokenizer: .*tok.*: "model\.merges"\[0\] must be "left right" or \[left, right\], got "ab"$/],
    [{ model: { ...json.model, merges: [['a', 1]] } }, /tokenizer: .*tok.*: "model\.merges"\[0\] must be "left right" or \[left, right\], got \["a",1\]$/],
  ] as const) {
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({ ...json, ...changed }));
    assert.throws(withConfig({}), message);
  }
  // Ids the tokenizers library would take as they are, for the model to index its embedding with (or, past any
  // vocabulary, build a table of for minutes: 2^31 hung it).
  for (const [vocab, added, message] of [
    [{ ...json.model.vocab, h: 'seven' }, json.added_tokens, /tokenizer\.json's "model\.vocab" gives the token "h" the id "seven": token ids must be integers from 0 to 16777215/],
    [{ ...json.model.vocab, big: 2 ** 31 }, json.added_tokens, /"model\.vocab" gives the token "big" the id 2147483648: token ids must be integers from 0 to 16777215/],
    [{ ...json.model.vocab, zzzz: -3 }, json.added_tokens, /"model\.vocab" gives the token "zzzz" the id -3/],
    [json.model.vocab, [{ id: 7.5, content: '<x>', special: true }], /"added_tokens"\[0\] gives the token "<x>" the id 7\.5/],
  ] as const) {
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({ ...json, added_tokens: added, model: { ...json.model, vocab } }));
    assert.throws(withConfig({}), message);
  }
});

test('llama2.c: a weight that is not finite is refused under run.c\'s name (freq_cis, never read, may hold anything)', () => {
  const [dim, hidden, layers, heads, kv, vocab, seq] = [8, 16, 1, 2, 2, 4, 4];
  const floats = vocab * dim + layers * (dim + 4 * dim * dim + dim + 3 * hidden * dim) + dim + seq * (dim / heads);
  const write = (name: string, at: number, x: number) => {
    const w = new Float32Array(floats).fill(0.5);
    w[at] = x;
    const p = path.join(tmp, name);
    fs.writeFileSync(p, Buffer.concat([Buffer.from(Int32Array.of(dim, hidden, layers, heads, kv, vocab, seq).buffer), Buffer.from(w.buffer)]));
    return p;
  };
  const wq = vocab * dim + layers * dim; // after token_embedding_table and rms_att_weight
  assert.throws(() => readLlama2cModel(write('inf.bin', wq + 5, Infinity)), /llama2c: .*inf\.bin: wq holds Infinity at element 5: weights must be finite/);
  assert.throws(() => readLlama2cModel(write('nan.bin', 3, NaN)), /llama2c: .*nan\.bin: token_embedding_table holds NaN at element 3/);
  assert.equal(readLlama2cModel(write('freq.bin', floats - 1, NaN)).config.hiddenSize, dim);
  // A header too small for run.c's own BOS and EOS is named by its field (it read "header field eosTokenIds").
  const tiny = path.join(tmp, 'tiny-vocab.bin'), few = floats - 2 * dim;
  fs.writeFileSync(tiny, Buffer.concat([Buffer.from(Int32Array.of(dim, hidden, layers, heads, kv, 2, seq).buffer), Buffer.from(new Float32Array(few).buffer)]));
  assert.throws(() => readLlama2cModel(tiny), { message: `llama2c: ${tiny}: header field vocab_size 2 leaves no room for run.c's BOS (1) and EOS (2) tokens` });
  // A header field that cannot be is named, with why (it was "an invalid header" and all seven fields).
  const header = (name: string, ...h: number[]) => { const p = path.join(tmp, name); fs.writeFileSync(p, Buffer.concat([Buffer.from(Int32Array.of(...h).buffer), Buffer.alloc(64)])); return p; };
  for (const [h, why] of [
    [[dim, hidden, 0, heads, kv, vocab, seq], 'n_layers 0 is not positive'],
    [[dim, hidden, layers, 3, 3, vocab, seq], 'n_heads 3 does not divide dim 8'],
    [[dim, hidden, layers, 8, 8, vocab, seq], 'the head size dim / n_heads = 1 is odd (RoPE rotates pairs)'],
    [[16, hidden, layers, 4, 3, vocab, seq], 'n_kv_heads 3 does not divide n_heads 4'],
  ] as const) {
    const p = header('bad-header.bin', ...h);
    assert.throws(() => readLlama2cModel(p), { message: `llama2c: ${p} has an invalid header: ${why} (dim=${h[0]} hidden_dim=${h[1]} n_layers=${h[2]} n_heads=${h[3]} n_kv_heads=${h[4]} vocab_size=${h[5]} seq_len=${h[6]})` });
  }
});

test('llama2.c: a checkpoint over 2 GiB is refused by name, before it is read', () => {
  const p = path.join(tmp, 'big.bin');
  fs.writeFileSync(p, '');
  fs.truncateSync(p, 3_763_486_748); // sparse
  assert.throws(() => readLlama2cModel(p), /llama2c: .*big\.bin is 3\.5 GiB; llama2\.c checkpoints over 2 GiB are not supported/);
});

test("the README's models/default/… given where it is not (an app that installed edgereason) points to the embedded model's folder", async () => {
  const { defaultModel } = await import('../src/models/embedded.ts');
  const { Router } = await import('../src/reason/router.ts');
  const cwd = process.cwd(), elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-app-'));
  process.chdir(elsewhere);
  try {
    assert.throws(() => openSource('models/default'), { message: `model: models/default does not exist (the README's models/default is the embedded default model's folder: give ${defaultModel.dir})` });
    assert.throws(() => loadAdapter('models/default/reasoning-adapter-rl', loadHfFolder(defaultModel.dir).config), { message: `adapter: models/default/reasoning-adapter-rl does not exist (the README's models/default is the embedded default model's folder: give ${defaultModel.budgetAdapter})` });
    assert.throws(() => Router.load('models/default/router.json'), { message: `router: models/default/router.json not found (the README's models/default is the embedded default model's folder: give ${defaultModel.router})` });
    // Other names keep their own advice.
    assert.throws(() => openSource('models/defaults'), { message: 'model: models/defaults does not exist (as a Hugging Face model it is not in the cache: hf:models/defaults downloads it)' });
  } finally {
    process.chdir(cwd);
    fs.rmSync(elsewhere, { recursive: true, force: true });
  }
});
