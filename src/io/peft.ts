/**
 * PEFT LoRA adapters: adapter_config.json (r, lora_alpha, target_modules, optional alora_invocation_tokens)
 * + adapter_model.safetensors with tensors named
 * base_model.model.model.layers.<i>.<self_attn|mlp>.<proj>.lora_A.weight [r, in] / lora_B.weight [out, r].
 */
import fs from 'node:fs';
import path from 'node:path';
import { PROJECTIONS, projectionShape, type ModelConfig, type Projection } from '../models/config.ts';
import type { AdapterTensors } from '../runtime/engine.ts';
import { openSafetensors } from './safetensors.ts';

export interface AdapterConfig {
  r: number;
  loraAlpha: number;
  targets: Projection[];
  /** Activated LoRA: the adapter applies from these tokens on. */
  aloraInvocationTokens?: number[];
}

export interface LoadedAdapter { dir: string; config: AdapterConfig; tensors: AdapterTensors }

export const PEFT_PREFIX = 'base_model.model.';

export function loadAdapter(dir: string, model: ModelConfig): LoadedAdapter {
  const cfgFile = path.join(dir, 'adapter_config.json'), wFile = path.join(dir, 'adapter_model.safetensors');
  if (!fs.existsSync(cfgFile)) throw new Error(`adapter: ${cfgFile} not found (expected a PEFT adapter folder)`);
  let raw: Record<string, unknown>;
  try { raw = JSON.parse(fs.readFileSync(cfgFile, 'utf8')); } catch (e) { throw new Error(`adapter: ${cfgFile} is not valid JSON: ${(e as Error).message}`); }
  const config = parseAdapterConfig(raw, cfgFile);
  if (!fs.existsSync(wFile)) throw new Error(`adapter: ${wFile} not found`);
  const file = openSafetensors(wFile);
  const scale = config.loraAlpha / config.r, tensors: AdapterTensors = new Map();
  for (let l = 0; l < model.numLayers; l++) {
    for (const proj of config.targets) {
      const base = `model.layers.${l}.${proj.startsWith('gate') || proj.startsWith('up') || proj.startsWith('down') ? 'mlp' : 'self_attn'}.${proj}`;
      const aName = `${PEFT_PREFIX}${base}.lora_A.weight`, bName = `${PEFT_PREFIX}${base}.lora_B.weight`;
      if (!file.has(aName) || !file.has(bName)) throw new Error(`adapter: ${wFile} lacks "${file.has(aName) ? bName : aName}" (target_modules lists ${proj})`);
      const [out, inp] = projectionShape(model, proj);
      const want = { [aName]: [config.r, inp], [bName]: [out, config.r] };
      for (const [n, s] of Object.entries(want)) {
        const got = file.shape(n);
        if (got.join() !== s.join()) throw new Error(`adapter: ${wFile} tensor "${n}" has shape [${got}], the base model needs [${s}]`);
      }
      const b = file.get(bName).map((x) => x * scale);
      tensors.set(base, { a: file.get(aName), b, rank: config.r, in: inp, out });
    }
  }
  return { dir, config, tensors };
}

export function parseAdapterConfig(raw: Record<string, unknown>, file: string): AdapterConfig {
  const r = raw.r, alpha = raw.lora_alpha ?? r, targets = raw.target_modules;
  if (!Number.isInteger(r) || (r as number) <= 0) throw new Error(`adapter: ${file} field "r" must be a positive integer, got ${JSON.stringify(r)}`);
  if (typeof alpha !== 'number') throw new Error(`adapter: ${file} field "lora_alpha" must be a number, got ${JSON.stringify(alpha)}`);
  const list = typeof targets === 'string' ? [targets] : targets;
  if (!Array.isArray(list) || !list.length) throw new Error(`adapter: ${file} field "target_modules" must list projections (${PROJECTIONS.join(', ')})`);
  for (const t of list) {
    if (!PROJECTIONS.includes(t)) throw new Error(`adapter: ${file} target module ${JSON.stringify(t)} is not supported (supported: ${PROJECTIONS.join(', ')})`);
  }
  const inv = raw.alora_invocation_tokens;
  if (inv !== undefined && inv !== null && (!Array.isArray(inv) || !inv.every(Number.isInteger))) {
    throw new Error(`adapter: ${file} field "alora_invocation_tokens" must be a list of token ids, got ${JSON.stringify(inv)}`);
  }
  return { r: r as number, loraAlpha: alpha, targets: list as Projection[], ...(Array.isArray(inv) && inv.length ? { aloraInvocationTokens: inv as number[] } : {}) };
}
