/** Checks of option objects shared by loadModel, convertModel, generate, answer, eval and the trainers. */
import { PROJECTIONS, type Projection } from '../models/config.ts';
import { QUANTS, type Quant } from '../onnx/quant.ts';
import { shown } from '../show.ts';

/** A misspelt option (say `max_tokens`) would be silently ignored: refuse it, naming the ones that exist. */
export function checkKeys(o: object, known: readonly string[], where: string): void {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new Error(`${where}: options must be an object, got ${o === null ? 'null' : Array.isArray(o) ? 'a list' : typeof o}`);
  const unknown = Object.keys(o).filter((k) => !known.includes(k));
  if (unknown.length) throw new Error(`${where}: unknown option${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')} (options: ${known.join(', ')})`);
  // One rule for every option: undefined (or leaving it out) is the default, null is refused (not read as either).
  const nulls = Object.keys(o).filter((k) => (o as Record<string, unknown>)[k] === null);
  if (nulls.length) throw new Error(`${where}: ${nulls.join(', ')} ${nulls.length > 1 ? 'are' : 'is'} null; leave ${nulls.length > 1 ? 'them' : 'it'} out (or undefined) for the default`);
}

/** What building a graph takes (loadModel, convertModel): weight format, MatMulNBits accuracy, LoRA inputs, progress. */
export function checkBuildOptions(o: { quant?: Quant; accuracyLevel?: number; loraTargets?: Projection[]; onProgress?: unknown }, where: string): void {
  if (o.quant !== undefined && !QUANTS.includes(o.quant)) throw new Error(`${where}: quant must be ${QUANTS.map((q) => `"${q}"`).join(', ')}, got ${shown(o.quant)}`);
  if (o.accuracyLevel !== undefined && ![0, 1, 2, 3, 4].includes(o.accuracyLevel)) throw new Error(`${where}: accuracyLevel must be 0, 1, 2, 3 or 4, got ${shown(o.accuracyLevel)}`);
  if (o.loraTargets !== undefined && !(Array.isArray(o.loraTargets) && o.loraTargets.every((t) => PROJECTIONS.includes(t)))) throw new Error(`${where}: loraTargets must be a list of projections (${PROJECTIONS.join(', ')}), got ${shown(o.loraTargets)}`);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw new Error(`${where}: onProgress must be a function (done, total) => void, got ${typeof o.onProgress}`);
}

/**
 * accuracyLevel is MatMulNBits' (block-quantised weights): refused beside fp32 weights, asked for or the model's
 * default (`quant`, what the weights become; `o.quant`, what was asked).
 */
export function checkAccuracyQuant(quant: Quant, o: { quant?: Quant; accuracyLevel?: number }, where: string): void {
  if (o.accuracyLevel === undefined || quant !== 'fp32') return;
  throw new Error(o.quant === undefined
    ? `${where}: accuracyLevel applies to block-quantised weights, and this model ${where === 'convert' ? 'converts to' : 'loads as'} fp32 (small models do by default): pass quant "q4" or "q8" with it, or leave it out`
    : `${where}: accuracyLevel applies to block-quantised weights (quant "q4" or "q8"), not to fp32`);
}

/** What one option's value must be: said in the message, and tested. */
export interface Rule { what: string; ok: (v: unknown) => boolean }

const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
export const is = {
  int: (min: number): Rule => ({ what: `an integer ≥ ${min}`, ok: (v) => Number.isSafeInteger(v) && (v as number) >= min }),
  intIn: (min: number, max: number): Rule => ({ what: `an integer from ${min} to ${max >= 10_000 ? max.toLocaleString('en-US') : max}`, ok: (v) => Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max }),
  seed: { what: 'an integer within ±(2^53 − 1)', ok: (v) => Number.isSafeInteger(v) } as Rule,
  above0: { what: 'a number above 0', ok: (v) => finite(v) && v > 0 } as Rule,
  atLeast0: { what: 'a number ≥ 0', ok: (v) => finite(v) && v >= 0 } as Rule,
  share: { what: 'a number in [0, 1]', ok: (v) => finite(v) && v >= 0 && v <= 1 } as Rule,
  bool: { what: 'true or false', ok: (v) => typeof v === 'boolean' } as Rule,
  fn: { what: 'a function', ok: (v) => typeof v === 'function' } as Rule,
  signal: { what: 'an AbortSignal', ok: (v) => v instanceof AbortSignal } as Rule,
  text: { what: 'a non-empty string', ok: (v) => typeof v === 'string' && v !== '' } as Rule,
  object: { what: 'an object', ok: (v) => v !== null && typeof v === 'object' && !Array.isArray(v) } as Rule,
  oneOf: (xs: readonly unknown[]): Rule => ({ what: `one of ${xs.map((x) => JSON.stringify(x)).join(', ')}`, ok: (v) => xs.includes(v) }),
  list: (item: string, ok: (x: unknown) => boolean): Rule => ({ what: `a non-empty list of ${item}`, ok: (v) => Array.isArray(v) && v.length > 0 && v.every(ok) }),
};

/** Refuses unknown keys (checkKeys) and any given value its rule refuses, naming the option and the value. */
export function checkRules(o: object, rules: Record<string, Rule>, where: string): void {
  checkKeys(o, Object.keys(rules), where);
  checkValues(o, rules, where);
}

/** Refuses any given value of these options that its rule refuses, naming the option (as `named` shows it) and the value. */
export function checkValues(o: object, rules: Record<string, Rule>, where: string, named: (option: string) => string = (k) => k): void {
  for (const [k, r] of Object.entries(rules)) {
    const v = (o as Record<string, unknown>)[k];
    if (v !== undefined && !r.ok(v)) throw new Error(`${where}: ${named(k)} must be ${r.what}, got ${shown(v)}`);
  }
}
