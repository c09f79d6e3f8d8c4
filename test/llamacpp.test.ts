/**
 * Our runtime against llama.cpp (node-llama-cpp's prebuilt CPU build) on the same random-weight Qwen2
 * model: an HF folder for us, F32 and Q4_0 GGUFs for llama.cpp. Token ids go straight in on both sides.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel, type Model } from '../src/runtime/model.ts';
import { decodeGgml, openGguf, quantizeQ4_0, typed, writeGguf, writeModelGguf, type DecodableType, type GgufTensorIn } from '../src/io/gguf.ts';
import { f32ToF16Bits } from '../src/io/safetensors.ts';
import { writeSafetensors } from '../src/io/safetensors.ts';
import { MemoryWeights } from '../src/io/weights.ts';
import { asGgufConfig, llama3TokenizerGguf, makeRandomQwen2, qwenTokenizer, rng } from './helpers/random-model.ts';
import { sharedPath } from './helpers/shared.ts';
import { openSource } from '../src/io/source.ts';
import { ropeFreqFactors, type ModelConfig } from '../src/models/config.ts';
import { openLlamaCpp, openLlamaCppVocab, type LlamaCpp } from './oracle/llamacpp.ts';

const THREADS = 1; // the suite runs beside other work on 2 cores; llama.cpp's 2-thread decode also syncs badly there
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgereason-llamacpp-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/**
 * A 4-layer Qwen2 (hidden 256, 4 heads / 2 KV heads, head dim 64, intermediate 512, qkv bias, tied
 * embeddings, rope_theta 1e6, 2048-token cut of the Qwen vocabulary), written as HF folder + F32 GGUF +
 * Q4_0 GGUF. The helper's weights (std 0.02) give near-uniform next-token distributions on which greedy
 * ties break arbitrarily, so the weights are rescaled:
 *  - embeddings std 2: with tied embeddings the logits are h·e_v, so their spread grows with the
 *    embedding norm: distributions are peaked (top-1 ≫ top-2) and greedy is well defined;
 *  - projections std 1/sqrt(fan_in), biases std 0.1: the layers contribute about as much as the embedding,
 *    so the continuation depends on context; larger gains make a random network chaotic (a 1e-3 change
 *    in one activation flips later argmaxes), which no 4-bit comparison survives;
 *  - final norm weights get random signs: otherwise h ≈ e_x and every token's top prediction is itself;
 *  - the embedding table is snapped to the Q4_0 grid (quantize + dequantize, which Q4_0 reproduces
 *    exactly). llama.cpp looks input embeddings up in its Q4_0 table and our q4 graph in its own 4-bit
 *    blocks (GatherBlockQuantized); snapped, both read the same values, and the q4 comparison measures the
 *    4-bit matmuls (same blocks on both sides) rather than 4-bit noise on the inputs. The fp32 tests are unaffected.
 */
function buildModel(dir: string, config: Partial<ModelConfig> = {}) {
  const m = makeRandomQwen2({
    dir, seed: 1, gguf: false,
    config: { vocabSize: 2048, hiddenSize: 256, intermediateSize: 512, numLayers: 4, numHeads: 4, numKvHeads: 2, ...config },
  });
  const sign = rng(99);
  for (const [name, w] of m.weights) {
    const d = w.data;
    if (name === 'model.embed_tokens.weight') {
      for (let i = 0; i < d.length; i++) d[i] *= 2 / 0.02;
      const { scales, q } = quantizeQ4_0(d);
      for (let i = 0; i < d.length; i++) d[i] = (q[i] - 8) * scales[i >> 5];
    } else if (name.endsWith('_proj.weight')) {
      const f = 1 / Math.sqrt(w.shape[1]) / 0.02;
      for (let i = 0; i < d.length; i++) d[i] *= f;
    } else if (name.endsWith('.bias')) {
      for (let i = 0; i < d.length; i++) d[i] *= 10;
    } else if (name === 'model.norm.weight') {
      for (let i = 0; i < d.length; i++) if (sign.uniform() < 0.5) d[i] = -d[i];
    }
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), m.weights);
  const meta = qwenTokenizer(m.config.vocabSize).gguf, src = new MemoryWeights(m.weights);
  const f32 = path.join(dir, 'model-f32.gguf'), q4 = path.join(dir, 'model-q4_0.gguf'), q8 = path.join(dir, 'model-q8_0.gguf');
  writeModelGguf(f32, m.config, src, { type: 'F32', metadata: meta });
  if (config.architecture !== 'llama') {
    writeModelGguf(q4, m.config, src, { type: 'Q4_0', metadata: meta });
    writeModelGguf(q8, m.config, src, { type: 'Q8_0', metadata: meta });
  }
  return { config: m.config, hf: dir, f32, q4, q8 };
}

const M = buildModel(path.join(tmp, 'qwen2'));
const Q3 = buildModel(path.join(tmp, 'qwen3'), { architecture: 'qwen3', headDim: 128 });
const V = M.config.vocabSize;
const r = rng(5);
/** A fixed prompt of arbitrary token ids (the first 2000 ids are plain BPE tokens). */
const PROMPT = Array.from({ length: 16 }, () => Math.floor(r.uniform() * 2000));
const SEQ256 = Array.from({ length: 256 }, () => Math.floor(r.uniform() * 2000));

/** Logits [ids.length, V] for every position of `ids`, in one prefill. */
async function allLogits(m: Model, ids: number[]): Promise<Float32Array> {
  const c = await m.backend.newCache(1);
  try {
    const out = await m.backend.step(c, { tokens: [ids], logits: 'all', want: { logits: true } });
    assert.equal(out.positions, ids.length);
    return out.logits!;
  } finally {
    await m.backend.free(c);
  }
}

/** Our greedy continuation through the KV cache: prefill, then one token per step. */
async function oursGreedy(m: Model, prompt: number[], n: number): Promise<number[]> {
  const c = await m.backend.newCache(1), out: number[] = [];
  try {
    let next = prompt;
    while (out.length < n) {
      const s = await m.backend.step(c, { tokens: [next], sample: [{ temperature: 0, u: 0 }] });
      out.push(s.tokens![0]);
      next = [s.tokens![0]];
    }
    return out;
  } finally {
    await m.backend.free(c);
  }
}

function argmax(row: Float32Array): number {
  let b = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[b]) b = i;
  return b;
}

/** Largest |Δp| over the whole vocabulary at `positions`, between our logits [T, V] and llama.cpp's probabilities. */
function maxProbDiff(logits: Float32Array, theirs: Map<number, Float32Array>, positions: number[]): number {
  return Math.max(...positions.map((i) => {
    const p = softmax(logits.subarray(i * V, (i + 1) * V)), q = theirs.get(i)!;
    let m = 0;
    for (let j = 0; j < V; j++) m = Math.max(m, Math.abs(p[j] - q[j]));
    return m;
  }));
}

function softmax(row: Float32Array): Float64Array {
  const mx = row[argmax(row)], p = new Float64Array(row.length);
  let s = 0;
  for (let i = 0; i < row.length; i++) s += p[i] = Math.exp(row[i] - mx);
  for (let i = 0; i < row.length; i++) p[i] /= s;
  return p;
}

test('fp32: greedy continuation and next-token distributions equal llama.cpp on the F32 GGUF', async () => {
  const ours = await loadModel(M.hf, { quant: 'fp32', worker: false, threads: THREADS });
  let ll: LlamaCpp | undefined;
  try {
    ll = await openLlamaCpp(M.f32, { threads: THREADS, contextSize: 512 });
    const expected = await ll.greedy(PROMPT, 64);
    const got = await oursGreedy(ours, PROMPT, 64);
    assert.deepEqual(got, expected);
    assert.ok(new Set(expected).size >= 8, `the continuation should not be degenerate: ${expected.join(' ')}`);

    // Distributions after several prefixes of prompt + continuation, over the whole vocabulary.
    const ids = [...PROMPT, ...expected], positions = [0, 7, 15, 31, 50, 78];
    const theirs = await ll.probsAt(ids, positions);
    const logits = await allLogits(ours, ids);
    let maxDiff = 0, minTop = 1;
    for (const i of positions) {
      const p = softmax(logits.subarray(i * V, (i + 1) * V)), q = theirs.get(i)!;
      assert.equal(q.length, V);
      for (let j = 0; j < V; j++) maxDiff = Math.max(maxDiff, Math.abs(p[j] - q[j]));
      minTop = Math.min(minTop, p[argmax(logits.subarray(i * V, (i + 1) * V))]);
    }
    console.log(`fp32 vs llama.cpp: max |Δp| ${maxDiff.toExponential(2)} over ${positions.length} prefixes × ${V} tokens (smallest top-1 probability ${minTop.toFixed(3)})`);
    assert.ok(maxDiff < 1e-3, `max probability difference ${maxDiff}`);
  } finally {
    await ll?.dispose();
    await ours.close();
  }
});

test('fp32: the F32 GGUF loaded by our loader gives the HF folder\'s logits', async () => {
  const hf = await loadModel(M.hf, { quant: 'fp32', worker: false, threads: THREADS });
  const gg = await loadModel(M.f32, { quant: 'fp32', worker: false, threads: THREADS });
  try {
    assert.deepEqual(gg.config, asGgufConfig(hf.config));
    const ids = SEQ256.slice(0, 48);
    const [a, b] = [await allLogits(hf, ids), await allLogits(gg, ids)];
    let maxDiff = 0;
    for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    console.log(`F32 GGUF vs HF folder (both ours): max |Δlogit| ${maxDiff.toExponential(2)}`);
    assert.ok(maxDiff < 1e-4, `max logit difference ${maxDiff}`);
  } finally {
    await hf.close();
    await gg.close();
  }
});

test('Llama with Llama 3.1 RoPE scaling: our graph (HF rope_scaling) and our GGUF (rope_freqs.weight) equal llama.cpp', async () => {
  // A short original context: at these positions most frequencies are slowed (factor 8) or blended.
  const ropeScaling = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 256 } as const;
  const L = buildModel(path.join(tmp, 'llama3'), { architecture: 'llama', ropeScaling });
  // The same weights with plain RoPE, to show the scaling matters here.
  const plainDir = path.join(tmp, 'llama3-plain');
  fs.mkdirSync(plainDir);
  for (const f of fs.readdirSync(L.hf)) if (!f.endsWith('.gguf') && f !== 'config.json') fs.symlinkSync(path.join(L.hf, f), path.join(plainDir, f));
  const cfg = JSON.parse(fs.readFileSync(path.join(L.hf, 'config.json'), 'utf8'));
  assert.equal(cfg.rope_scaling.rope_type, 'llama3');
  fs.writeFileSync(path.join(plainDir, 'config.json'), JSON.stringify({ ...cfg, rope_scaling: null }));
  const [hf, gg, plain] = await Promise.all([L.hf, L.f32, plainDir].map((p) => loadModel(p, { quant: 'fp32', worker: false, threads: THREADS })));
  let ll: LlamaCpp | undefined;
  try {
    assert.deepEqual(gg.config.ropeFreqFactors?.map((x) => Math.fround(x)), ropeFreqFactors(hf.config).map((x) => Math.fround(x)));
    ll = await openLlamaCpp(L.f32, { threads: THREADS, contextSize: 512 });
    const ids = SEQ256.slice(0, 96), positions = [15, 47, 95];
    const theirs = await ll.probsAt(ids, positions);
    const diff = (logits: Float32Array) => maxProbDiff(logits, theirs, positions);
    const [dHf, dGg, dPlain] = [diff(await allLogits(hf, ids)), diff(await allLogits(gg, ids)), diff(await allLogits(plain, ids))];
    console.log(`llama3 RoPE vs llama.cpp: max |Δp| ${dHf.toExponential(2)} (HF folder), ${dGg.toExponential(2)} (GGUF); plain RoPE would differ by ${dPlain.toFixed(3)}`);
    assert.ok(dHf < 1e-3 && dGg < 1e-3, `max probability difference ${dHf} / ${dGg}`);
    assert.ok(dPlain > 0.05, `the scaling should matter at these positions (plain RoPE differs by only ${dPlain})`);
  } finally {
    await ll?.dispose();
    await Promise.all([hf, gg, plain].map((m) => m.close()));
  }
});

test('Qwen2 with YaRN and with linear RoPE scaling: our graph (HF rope_scaling) and our GGUF (rope.scaling.*) equal llama.cpp', async () => {
  // YaRN as Qwen2.5's card sets it (factor 4) over a short original context, so most frequencies are slowed or
  // ramped at these positions; its attention factor scales every logit by (0.1 ln 4 + 1)².
  const scalings = [
    { type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 256, betaFast: 32, betaSlow: 1, attentionFactor: 0.1 * Math.log(4) + 1 },
    { type: 'linear', factor: 4 },
  ] as const;
  const ids = SEQ256.slice(0, 96), positions = [15, 47, 95];
  for (const ropeScaling of scalings) {
    const R = buildModel(path.join(tmp, `rope-${ropeScaling.type}`), { ropeScaling, maxPositionEmbeddings: 256 });
    const [hf, gg, plain] = await Promise.all([R.hf, R.f32, M.hf].map((p) => loadModel(p, { quant: 'fp32', worker: false, threads: THREADS })));
    let ll: LlamaCpp | undefined;
    try {
      assert.deepEqual(gg.config, asGgufConfig(hf.config));
      assert.deepEqual(hf.config.ropeScaling, ropeScaling);
      // YaRN reaches factor × its original context; linear scaling keeps the declared one.
      assert.equal(hf.config.maxPositionEmbeddings, ropeScaling.type === 'yarn' ? 1024 : 256);
      ll = await openLlamaCpp(R.f32, { threads: THREADS, contextSize: 512 });
      const theirs = await ll.probsAt(ids, positions);
      const diff = (logits: Float32Array) => maxProbDiff(logits, theirs, positions);
      const [dHf, dGg, dPlain] = [diff(await allLogits(hf, ids)), diff(await allLogits(gg, ids)), diff(await allLogits(plain, ids))];
      // The same scaling chosen at load (loadModel's ropeScaling, the CLI's --rope-scaling) over the plain checkpoint.
      const choice = ropeScaling.type === 'yarn' ? { type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 256 } as const : { type: 'linear', factor: 4 } as const;
      const chosen = await Promise.all([M.hf, M.f32].map((p) => loadModel(p, { quant: 'fp32', worker: false, threads: THREADS, ropeScaling: choice })));
      const [dChosenHf, dChosenGg] = [diff(await allLogits(chosen[0], ids)), diff(await allLogits(chosen[1], ids))];
      await Promise.all(chosen.map((m) => m.close()));
      console.log(`${ropeScaling.type} RoPE vs llama.cpp: max |Δp| ${dHf.toExponential(2)} (HF folder), ${dGg.toExponential(2)} (GGUF), ${dChosenHf.toExponential(2)} / ${dChosenGg.toExponential(2)} (chosen at load over the plain HF folder / GGUF); plain RoPE would differ by ${dPlain.toFixed(3)}`);
      assert.ok(dHf < 1e-3 && dGg < 1e-3, `${ropeScaling.type}: max probability difference ${dHf} / ${dGg}`);
      assert.ok(dChosenHf < 1e-3 && dChosenGg < 1e-3, `${ropeScaling.type} chosen at load: max probability difference ${dChosenHf} / ${dChosenGg}`);
      assert.ok(dPlain > 0.05, `${ropeScaling.type}: the scaling should matter at these positions (plain RoPE differs by only ${dPlain})`);
    } finally {
      await ll?.dispose();
      await Promise.all([hf, gg, plain].map((m) => m.close()));
    }
  }
});

test('Qwen3 (per-head q/k RMSNorm, head_dim 128 ≠ hidden / heads): greedy continuation and distributions equal llama.cpp; our GGUF loader agrees', async () => {
  const Q = Q3;
  assert.equal(Q.config.attentionBias, false);
  const [hf, gg] = await Promise.all([Q.hf, Q.f32].map((p) => loadModel(p, { quant: 'fp32', worker: false, threads: THREADS })));
  let ll: LlamaCpp | undefined;
  try {
    assert.deepEqual(gg.config, asGgufConfig(hf.config));
    ll = await openLlamaCpp(Q.f32, { threads: THREADS, contextSize: 512 });
    const expected = await ll.greedy(PROMPT, 32);
    assert.deepEqual(await oursGreedy(hf, PROMPT, 32), expected);
    assert.ok(new Set(expected).size >= 8, `the continuation should not be degenerate: ${expected.join(' ')}`);
    const ids = [...PROMPT, ...expected], positions = [0, 15, 31, 47];
    const theirs = await ll.probsAt(ids, positions);
    const diff = (logits: Float32Array) => maxProbDiff(logits, theirs, positions);
    const [dHf, dGg] = [diff(await allLogits(hf, ids)), diff(await allLogits(gg, ids))];
    console.log(`qwen3 vs llama.cpp: max |Δp| ${dHf.toExponential(2)} (HF folder), ${dGg.toExponential(2)} (GGUF)`);
    assert.ok(dHf < 1e-3 && dGg < 1e-3, `max probability difference ${dHf} / ${dGg}`);
  } finally {
    await ll?.dispose();
    await Promise.all([hf, gg].map((m) => m.close()));
  }
});

/** Our q4 / q8 graph against llama.cpp's Q4_0 / Q8_0 kernels on the same blocks: top-1 agreement and whole distributions. */
async function blockAgreement(m: { hf: string; q4: string; q8: string }, label: string, quant: 'q4' | 'q8' = 'q4'): Promise<number> {
  const ours = await loadModel(m.hf, { quant, worker: false, threads: THREADS });
  let ll: LlamaCpp | undefined;
  try {
    ll = await openLlamaCpp(m[quant], { threads: THREADS, contextSize: 512 });
    const theirs = await ll.argmaxAll(SEQ256);
    const logits = await allLogits(ours, SEQ256);
    const row = (i: number) => logits.subarray(i * V, (i + 1) * V);
    let agree = 0;
    for (let i = 0; i < SEQ256.length; i++) if (argmax(row(i)) === theirs[i]) agree++;
    // The disagreements are near-ties (e.g. 0.58 vs 0.42 in our distribution): the two int8 activation
    // quantisations differ slightly. The whole distributions agree far more closely than q4 vs fp32 does.
    const positions = Array.from({ length: 32 }, (_, k) => 8 * k + 3), probs = await ll.probsAt(SEQ256, positions);
    let meanMax = 0;
    for (const i of positions) meanMax += maxProbDiff(logits, probs, [i]) / positions.length;
    const pct = (100 * agree) / SEQ256.length;
    console.log(`${label} ${quant} (MatMulNBits, accuracy level 4) vs llama.cpp ${quant === 'q4' ? 'Q4_0' : 'Q8_0'}: top-1 agreement ${agree}/${SEQ256.length} = ${pct.toFixed(1)}%, mean over ${positions.length} positions of max |Δp| ${meanMax.toFixed(4)}`);
    assert.ok(pct >= 95, `top-1 agreement ${pct.toFixed(1)}% < 95%`);
    assert.ok(meanMax < 0.05, `mean max |Δp| ${meanMax}`);
    return meanMax;
  } finally {
    await ll?.dispose();
    await ours.close();
  }
}

test('q4: top-1 agreement with llama.cpp on the Q4_0 GGUF over 256 teacher-forced positions (Qwen2, Qwen3)', async () => {
  await blockAgreement(M, 'qwen2');
  await blockAgreement(Q3, 'qwen3');
});

test('q8: agreement with llama.cpp on the Q8_0 GGUF (the same blocks); against our fp32, q8 is several times closer than q4', async () => {
  await blockAgreement(M, 'qwen2', 'q8');
  const logits = async (quant: 'q4' | 'q8' | 'fp32') => {
    const m = await loadModel(M.hf, { quant, worker: false, threads: THREADS });
    try { return await allLogits(m, SEQ256); } finally { await m.close(); }
  };
  const [fp32, q4, q8] = [await logits('fp32'), await logits('q4'), await logits('q8')];
  const versus = (l: Float32Array) => {
    let agree = 0, meanMax = 0;
    for (let i = 0; i < SEQ256.length; i++) {
      const p = softmax(l.subarray(i * V, (i + 1) * V)), q = softmax(fp32.subarray(i * V, (i + 1) * V));
      if (argmax(l.subarray(i * V, (i + 1) * V)) === argmax(fp32.subarray(i * V, (i + 1) * V))) agree++;
      let m = 0;
      for (let j = 0; j < V; j++) m = Math.max(m, Math.abs(p[j] - q[j]));
      meanMax += m / SEQ256.length;
    }
    return { agree, meanMax };
  };
  const a4 = versus(q4), a8 = versus(q8);
  console.log(`against fp32: q4 top-1 ${a4.agree}/256, mean max |Δp| ${a4.meanMax.toFixed(4)}; q8 top-1 ${a8.agree}/256, mean max |Δp| ${a8.meanMax.toFixed(4)}`);
  // Measured: q4 215/256 and 0.148, q8 250/256 and 0.019.
  assert.ok(a8.agree >= 0.95 * SEQ256.length && a8.meanMax * 4 < a4.meanMax, JSON.stringify({ a4, a8 }));
});


/**
 * llama.cpp's other quantized types (a Q4_K_M file is Q4_K and Q6_K, with Q5_0 or Q8_0 where a row is not a whole
 * number of 256-weight super-blocks): M's GGUF with every projection replaced by random blocks of one type (random
 * bytes; each block's fp16 scales set to a random sign and a size that gives the weights buildModel's spread). We
 * decode the blocks and run in fp32; llama.cpp multiplies them as they are, its activations rounded to 8 bits.
 * Measured: top-1 agreement 96–99 %, mean max |Δp| 0.002–0.038 (llama.cpp's 8-bit activations), where a decoder
 * that misreads one field (nibble order, a scale's high bits, a sign, the fifth bit's position) gets 7–36 % and
 * 0.65–0.93: the weights are then unrelated.
 */
test('GGUF k-quants (Q2_K … Q6_K), 4-bit i-quants (IQ4_NL, IQ4_XS) and legacy types (Q4_1, Q5_0, Q5_1) decode as llama.cpp reads them', async () => {
  const f = openGguf(M.f32), r = rng(11);
  const metadata = Object.fromEntries(Object.entries(f.metadata).map(([k, v]) => [k, typed(f.metadataTypes[k], v)]));
  // Byte offsets of each block's fp16 scales: [d, dmin or m] (absent: the type has none).
  const SCALES: Record<string, [block: number, size: number, d: number, min?: number]> = {
    Q4_1: [32, 20, 0, 2], Q5_0: [32, 22, 0], Q5_1: [32, 24, 0, 2], Q2_K: [256, 84, 80, 82], Q3_K: [256, 110, 108],
    Q4_K: [256, 144, 0, 2], Q5_K: [256, 176, 0, 2], Q6_K: [256, 210, 208], IQ4_NL: [32, 18, 0], IQ4_XS: [256, 136, 0],
  };
  const blocks = (type: string, shape: number[]): Uint8Array => {
    const [block, size, d, min] = SCALES[type], n = (shape[0] * shape[1]) / block, raw = new Uint8Array(n * size);
    for (let i = 0; i < raw.length; i++) raw[i] = Math.floor(r.uniform() * 256);
    const signs = Array.from({ length: n }, () => (r.uniform() < 0.5 ? -1 : 1));
    const setScales = (c: number) => {
      for (let b = 0; b < n; b++) for (const at of min === undefined ? [d] : [d, min]) {
        const h = f32ToF16Bits(signs[b] * c);
        raw[b * size + at] = h & 255;
        raw[b * size + at + 1] = h >> 8;
      }
    };
    setScales(1);
    const w = decodeGgml(type as DecodableType, raw, shape[0] * shape[1]);
    let ss = 0;
    for (const v of w) ss += v * v;
    setScales(1 / Math.sqrt(shape[1]) / Math.sqrt(ss / w.length)); // std 1/sqrt(fan_in), as buildModel's projections
    return raw;
  };
  const positions = Array.from({ length: 24 }, (_, k) => 10 * k + 5);
  for (const type of Object.keys(SCALES)) {
    const file = path.join(tmp, `model-${type}.gguf`);
    const tensors: GgufTensorIn[] = f.names.map((name) => {
      const t = f.info(name);
      return /\.(attn_(q|k|v|output)|ffn_(gate|up|down))\.weight$/.test(name) ? { name, shape: t.shape, type, raw: blocks(type, t.shape) } : { name, shape: t.shape, type: t.type, raw: f.raw(name) };
    });
    writeGguf(file, { metadata, tensors });
    const ours = await loadModel(file, { quant: 'fp32', worker: false, threads: THREADS });
    let ll: LlamaCpp | undefined;
    try {
      ll = await openLlamaCpp(file, { threads: THREADS, contextSize: 512 });
      const [theirs, probs, logits] = [await ll.argmaxAll(SEQ256), await ll.probsAt(SEQ256, positions), await allLogits(ours, SEQ256)];
      let agree = 0, meanMax = 0;
      for (let i = 0; i < SEQ256.length; i++) if (argmax(logits.subarray(i * V, (i + 1) * V)) === theirs[i]) agree++;
      for (const i of positions) meanMax += maxProbDiff(logits, probs, [i]) / positions.length;
      console.log(`${type}: top-1 agreement with llama.cpp ${agree}/${SEQ256.length}, mean max |Δp| ${meanMax.toFixed(4)}`);
      assert.ok(agree >= 0.93 * SEQ256.length && meanMax < 0.06, `${type}: top-1 agreement ${agree}/${SEQ256.length}, mean max |Δp| ${meanMax}`);
    } finally {
      await ll?.dispose();
      await ours.close();
    }
  }
  // Loaded as q4, the decoded weights are rounded a second time: the loader says so.
  const notes: string[] = [], file = path.join(tmp, 'model-Q4_K.gguf');
  await (await loadModel(file, { quant: 'q4', worker: false, onNote: (n) => notes.push(n) })).close();
  assert.deepEqual(notes, [`model: ${file} stores weights as Q4_K: they are decoded and quantised again to q4 (4-bit blocks of 32, as Q4_0), a second rounding; quant "fp32" keeps the file's values exactly, in 6.4× the memory of q4`]);
});

/** Text that tells pre-tokenizers apart: contractions, digit runs, punctuation runs, scripts, emoji, whitespace kinds, special tokens. */
const TRICKY = [
  'Hello world', ' leading space', "It's 12345 apples, isn't it? I'LL see.", 'x = 3.14159 * 2^10 - 1,000,000 and 1234567',
  'Ünïcödé café naïve — “quotes” ‘single’ …', '中文测试，你好世界！', '日本語のテキスト', '한국어 텍스트', 'emoji 😀👍🏽 🇯🇵',
  '   multiple   spaces\t\ttabs\n\nnewlines\r\n crlf', 'code: def f(x):\n    return x**2  # comment\n', '\n\n\n', '  ', '!!!???...',
  "What is 17 × 23? Let's think step by step.", 'snake_case camelCase kebab-case', 'https://example.com/a?b=c&d=e#f',
  '<|im_start|>user\nhi<|im_end|>', '<think>\nok\n</think>', '<|begin_of_text|>Hi<|eot_id|>', 'a\u00a0b\u2009c\u3000d',
  'ﬁ Å Å', '$$\\frac{1}{2}$$ \\boxed{42}', '-12.5e-3 +7 <=> ~|^', "'s 'S 'Re 'VE", 'Ⅻ ½ ² ①',
];

test('GGUF tokenizers: the tokenizer rebuilt from a GGUF\'s metadata encodes as llama.cpp does (Qwen2, Llama 3, llama.cpp\'s default pre-tokenizer), with special tokens parsed and as text, and adds BOS where it does', async () => {
  const lines = (rel: string, n: number) => fs.readFileSync(sharedPath(rel), 'utf8').split('\n').filter(Boolean).slice(0, n).map((l) => JSON.parse(l));
  const texts = [...TRICKY, ...lines('data/chat/mt_bench_questions.jsonl', 80).flatMap((q) => q.turns as string[]),
    ...lines('data/math500/test.jsonl', 40).map((q) => `${q.problem}\n${q.solution}`), ...lines('data/gsm8k/test.jsonl', 40).map((q) => `${q.question}\n${q.answer}`)];
  const dir = path.join(tmp, 'vocab');
  fs.mkdirSync(dir);
  const qwen = qwenTokenizer(151936).gguf, llama3 = llama3TokenizerGguf();
  const cases: [string, Record<string, any>, 'qwen2' | 'llama', boolean][] = [
    ['qwen2', qwen, 'qwen2', false],
    ['qwen2-default-pre', { ...qwen, 'tokenizer.ggml.pre': 'default' }, 'qwen2', false],
    ['llama3', llama3, 'llama', true], // no add_bos_token: llama.cpp adds BOS for Llama 3's pre-tokenizer
    ['llama3-no-bos', { ...llama3, 'tokenizer.ggml.add_bos_token': false }, 'llama', false],
    ['llama3-default-pre', { ...llama3, 'tokenizer.ggml.pre': 'default' }, 'llama', false],
  ];
  for (const [name, md, arch, bos] of cases) {
    const file = path.join(dir, `${name}.gguf`), ref = await openLlamaCppVocab(file, md, arch);
    try {
      const ours = openSource(file).tokenizer;
      const differ = texts.filter((t) => JSON.stringify(ours.encode(t, { addSpecialTokens: false })) !== JSON.stringify(ref.tokenize(t)));
      assert.deepEqual(differ, [], `${name}: ${differ.length} of ${texts.length} texts encode differently from llama.cpp`);
      // A chat message's text: its special tokens as characters (tokenizer/chat-ids.ts), as llama.cpp without parse_special.
      const differText = texts.filter((t) => JSON.stringify(ours.encodeText!(t)) !== JSON.stringify(ref.tokenizeText(t)));
      assert.deepEqual(differText, [], `${name}: ${differText.length} of ${texts.length} texts encode as text differently from llama.cpp`);
      assert.equal(ref.addsBos, bos, `${name}: llama.cpp's BOS`);
      const bosId = (md['tokenizer.ggml.bos_token_id'] as { value: number }).value;
      assert.equal(ours.encode('Hi')[0] === bosId, bos, `${name}: our BOS`);
    } finally { await ref.dispose(); }
  }
});
