const MARK = '\uE000', MARKED = /"\uE000([^"\uE000]*)\uE000"/g; // a private-use character, which JSON leaves as it is

/**
 * A value as an error message shows it: numbers as written, inside lists and objects too (JSON would turn NaN and
 * Infinity into null), a BigInt with its n, an instance by its class ("a Reasoner", not its whole state), anything
 * else as JSON, cut at `max` characters. Never throws (a circular object would make JSON.stringify throw and lose
 * the message it was for).
 */
export function shown(v: unknown, max = 120): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'function') return 'a function';
  if (typeof v === 'symbol') return String(v);
  const proto = v !== null && typeof v === 'object' ? Object.getPrototypeOf(v) : undefined;
  if (proto && proto !== Object.prototype && proto !== Array.prototype) {
    const name: string = proto.constructor?.name || 'object';
    return `${/^[AEIO]/i.test(name) ? 'an' : 'a'} ${name}`; // "a Uint8Array"
  }
  let s: string | undefined;
  // Nested non-finite numbers and BigInts go through JSON as marked strings, unquoted after: [1, NaN, 2n].
  const marked = (x: unknown) => ((typeof x === 'number' && !Number.isFinite(x)) || typeof x === 'bigint' ? `${MARK}${x}${typeof x === 'bigint' ? 'n' : ''}${MARK}` : x);
  try { s = JSON.stringify(v, (_, x) => marked(x)); } catch { return Array.isArray(v) ? 'a list' : 'an object'; }
  if (s === undefined) return String(v);
  s = s.replace(MARKED, '$1');
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/**
 * A number between 0 and 1 (a probe's score or threshold) to `digits` decimals, and to more where those would show
 * it as 0 or 1: a threshold of 0.99999983 is "0.9999998", not "1.0000" (which would read as never reasoning).
 */
export function fraction(x: number, digits: number): string {
  let d = digits;
  while (d < 20 && x > 0 && x < 1 && /^[01](\.0*)?$/.test(x.toFixed(d))) d++;
  return x.toFixed(d);
}
