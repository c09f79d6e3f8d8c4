/**
 * Constrained decoding to JSON (OpenAI's response_format "json_object" and "json_schema"): at each step, the only
 * tokens allowed are those whose bytes keep the answer a prefix of a JSON text the schema accepts, and once the
 * value is complete only the stop tokens. A byte-level pushdown machine reads the answer; the tokens allowed in
 * one machine state are found once, by walking the vocabulary sorted by bytes (tokens sharing a prefix share its
 * walk), and kept for every later step and sequence in that state.
 *
 * The schema subset: type (one or a list), properties / required (written in the order given; additional keys are
 * never written), additionalProperties (for objects without properties), items / minItems / maxItems, enum / const
 * (written compactly; beside other keywords, the values those allow; both, the const where the enum lists it),
 * anyOf, minLength / maxLength, $ref into $defs or definitions (recursion too). Annotations (title, description,
 * default, examples, $schema, $id, $comment) are ignored; any other keyword is refused by name, since the output
 * could break it. Whitespace is bounded: at most 4 bytes before the value (a thinking model's answer opens with
 * "\n\n"), none after it, and between two of its tokens none, one space, or a line break and up to 20 blanks of
 * indentation; so are numbers (24 bytes): a small model cannot loop on blanks or digits.
 */
import { shown } from '../show.ts';

/** A JSON schema (the subset above) or true: any JSON object (response_format "json_object"). */
export type JsonSchema = Record<string, unknown> | true;

type Node =
  | { t: 'any'; id: number }
  | { t: 'object'; id: number; props?: { key: string; node: Node; required: boolean }[]; extra: Node | null }
  | { t: 'array'; id: number; items: Node; min: number; max: number }
  | { t: 'string'; id: number; min: number; max: number }
  | { t: 'number'; id: number; integer: boolean }
  | { t: 'literal'; id: number; texts: string[] }
  | { t: 'union'; id: number; of: Node[] };

/** A node before its id is given. */
type Shape = WithoutId<Node>;
type WithoutId<N> = N extends unknown ? Omit<N, 'id'> : never;

const ANNOTATIONS = ['title', 'description', 'default', 'examples', '$schema', '$id', '$comment', 'deprecated', 'readOnly', 'writeOnly'];
const KEYWORDS: Record<string, string[]> = {
  any: ['type', 'enum', 'const', 'anyOf', '$ref', '$defs', 'definitions'],
  object: ['properties', 'required', 'additionalProperties'],
  array: ['items', 'minItems', 'maxItems'],
  string: ['minLength', 'maxLength'],
};
const TYPES = ['object', 'array', 'string', 'number', 'integer', 'boolean', 'null'];
const LEAD_MAX = 4, INDENT_MAX = 20, NUM_MAX = 24;
// Any value (negative ids: apart from a schema's nodes), and the values it may be.
const ANY: Node = { t: 'any', id: -1 }, ANY_OBJECT: Node = { t: 'object', id: -2, extra: ANY };
const ANY_VALUES: Node[] = [ANY_OBJECT, { t: 'array', id: -3, items: ANY, min: 0, max: Infinity }, { t: 'string', id: -4, min: 0, max: Infinity },
  { t: 'number', id: -5, integer: false }, { t: 'literal', id: -6, texts: ['true', 'false', 'null'] }];
/** A key of an object without properties. */
const KEY: Extract<Node, { t: 'string' }> = { t: 'string', id: -7, min: 0, max: Infinity };

/**
 * Compiles a schema into the machine's nodes; throws naming the schema path (`where`) of what it cannot hold to.
 * `lenient` (a tool's parameters, which OpenAI does not hold a model to either): keywords outside the subset, those of
 * a type the schema does not allow, required names without a property and keywords beside anyOf or $ref are left out
 * instead; oneOf is held as anyOf (the values of any of its schemas: a few more than oneOf's), and an allOf of one
 * schema (pydantic's way to annotate a $ref) as that schema.
 */
export function compileJsonSchema(schema: JsonSchema, where = 'schema', lenient = false): Node {
  let ids = 0;
  const memo = new Map<object, Node>(), root = schema;
  const count = (s: Record<string, unknown>, k: string, at: string, dflt: number): number => {
    const v = s[k];
    if (v === undefined) return dflt;
    if (!Number.isInteger(v) || (v as number) < 0) throw new Error(`${at}.${k} must be a non-negative integer, got ${shown(v)}`);
    return v as number;
  };
  /** The schema a $ref names (through a chain of them): a recursive one is then a cycle of nodes. */
  const target = (s: Record<string, unknown>, at: string): unknown => {
    const chain = new Set<unknown>();
    while (s && typeof s === 'object' && s.$ref !== undefined) {
      const ref = s.$ref;
      if (!lenient && Object.keys(s).some((k) => !ANNOTATIONS.includes(k) && k !== '$ref' && k !== '$defs' && k !== 'definitions')) throw new Error(`${at}: $ref is supported alone (with annotations), not beside other keywords`);
      if (chain.has(ref)) throw new Error(`${at}.$ref ${shown(ref)} refers to itself without a value in between`);
      chain.add(ref);
      if (ref === '#' && root !== true) { s = root; at = where; continue; } // the root schema itself (recursion)
      const m = typeof ref === 'string' ? /^#\/(\$defs|definitions)\/([^/]+)$/.exec(ref) : null;
      const defs = m && root !== true ? (root[m[1]] as Record<string, unknown> | undefined) : undefined;
      const name = m ? m[2].replace(/~1/g, '/').replace(/~0/g, '~') : '';
      if (!m || !defs || typeof defs !== 'object' || !Object.hasOwn(defs, name)) throw new Error(`${at}.$ref ${shown(ref)} does not name the root ("#") or a schema under the root's $defs or definitions`);
      s = defs[name] as Record<string, unknown>;
      at = `${where}.${m[1]}.${name}`;
    }
    return s;
  };
  /** Schemas alone but for one keyword (oneOf, a one-schema allOf) and annotations: what lenient mode reads as that keyword's. */
  const only = (s: Record<string, unknown>, key: string) => Object.keys(s).every((k) => k === key || ANNOTATIONS.includes(k) || k === '$defs' || k === 'definitions');
  const unwrapping = new Map<unknown, string>(); // one-schema allOfs being compiled as their schema (and where): one met again refers to itself
  const compile = (s: unknown, at: string): Node => {
    if (s === true || (s && typeof s === 'object' && !Array.isArray(s) && !Object.keys(s).some((k) => !ANNOTATIONS.includes(k)))) return ANY;
    if (!s || typeof s !== 'object' || Array.isArray(s)) throw new Error(`${at} must be a JSON schema (an object), got ${shown(s)}`);
    const seen = memo.get(s);
    if (seen) return seen;
    if ((s as Record<string, unknown>).$ref !== undefined) return compile(target(s as Record<string, unknown>, at), at);
    const all = (s as Record<string, unknown>).allOf;
    if (lenient && Array.isArray(all) && all.length === 1 && only(s as Record<string, unknown>, 'allOf')) {
      if (unwrapping.has(s)) throw new Error(`${unwrapping.get(s)}.allOf[0] refers to itself without a value in between`);
      unwrapping.set(s, at);
      try { return compile(all[0], `${at}.allOf[0]`); } finally { unwrapping.delete(s); }
    }
    const node = { id: ids++ } as Node;
    memo.set(s, node);
    Object.assign(node, build(s as Record<string, unknown>, at));
    return node;
  };
  const build = (s: Record<string, unknown>, at: string): Shape => {
    const allowed = new Set([...ANNOTATIONS, ...Object.values(KEYWORDS).flat()]);
    // A oneOf alone is held as anyOf; beside other keywords (a type its branches refine: {"type": "string", "oneOf":
    // [{"format": ...}, ...]}) it is left out, as its branches' refinements would be, and the other keywords held.
    if (lenient) s = Object.fromEntries(Object.entries(Array.isArray(s.oneOf) && s.oneOf.length && s.anyOf === undefined && only(s, 'oneOf') ? { ...s, anyOf: s.oneOf } : s).filter(([k]) => allowed.has(k)));
    for (const k of Object.keys(s)) {
      if (!allowed.has(k)) {
        const hint = k === 'oneOf' ? ' (anyOf is: the output could match two of oneOf\'s schemas)' : '';
        throw new Error(`${at}: the keyword "${k}" is not supported by edgereason's constrained decoding${hint}; supported: ${Object.values(KEYWORDS).flat().join(', ')}`);
      }
    }
    const alts: Shape[] = [];
    if (s.anyOf !== undefined) {
      if (!Array.isArray(s.anyOf) || !s.anyOf.length) throw new Error(`${at}.anyOf must be a non-empty list of schemas, got ${shown(s.anyOf)}`);
      if (!lenient && Object.keys(s).some((k) => !ANNOTATIONS.includes(k) && k !== 'anyOf' && k !== '$defs' && k !== 'definitions')) throw new Error(`${at}: anyOf is supported alone (with annotations), not beside other keywords`);
      // Branches written alike are one (each would be read apart: a way of reading the output more at every level).
      const seen = new Set<string>(), text = (a: unknown, i: number) => { try { return JSON.stringify(a); } catch { return `#${i}`; } }; // (an object that holds itself: kept)
      const distinct = s.anyOf.map((a, i) => [a, i] as const).filter(([a, i]) => !seen.has(text(a, i)) && !!seen.add(text(a, i)));
      return { t: 'union', of: distinct.map(([a, i]) => compile(a, `${at}.anyOf[${i}]`)) };
    }
    if (s.enum !== undefined || s.const !== undefined) {
      if (s.enum !== undefined && (!Array.isArray(s.enum) || !s.enum.length)) throw new Error(`${at}.enum must be a non-empty list, got ${shown(s.enum)}`);
      const key = (v: unknown) => bytesText(JSON.stringify(v));
      // Both: the const, where the enum lists it (as a validator reads them, each holds).
      const values = s.const === undefined ? s.enum as unknown[] : s.enum === undefined || (s.enum as unknown[]).some((v) => key(v) === key(s.const)) ? [s.const] : [];
      if (!values.length) throw new Error(`${at}: its const ${shown(s.const)} is not one of its enum's values`);
      const texts = [...new Set(values.map(key))];
      // Beside other keywords (type, maxLength, ...): the values those allow (as the machine reads them, written compactly).
      const rest = Object.fromEntries(Object.entries(s).filter(([k]) => k !== 'enum' && k !== 'const' && !ANNOTATIONS.includes(k)));
      if (!Object.keys(rest).length) return { t: 'literal', texts };
      const other = compile(rest, at);
      let kept: string[];
      try { kept = texts.filter((t) => accepts(other, t)); } catch (e) { throw e instanceof TooAmbiguous ? new Error(tooAmbiguous(at)) : e; }
      if (!kept.length) throw new Error(`${at}: no value of its ${s.const !== undefined ? 'const' : 'enum'} fits its other keywords`);
      return { t: 'literal', texts: kept };
    }
    const types = s.type === undefined ? TYPES : Array.isArray(s.type) ? s.type : [s.type];
    if (!types.length) throw new Error(`${at}.type must name a type, got []`);
    for (const t of types) if (!TYPES.includes(t as string)) throw new Error(`${at}.type ${shown(t)} is not a JSON schema type (${TYPES.join(', ')})`);
    for (const t of types as string[]) {
      if (t === 'object') {
        const props = s.properties, required = s.required ?? [];
        if (props !== undefined && (!props || typeof props !== 'object' || Array.isArray(props))) throw new Error(`${at}.properties must be an object of schemas, got ${shown(props)}`);
        if (!Array.isArray(required) || required.some((r) => typeof r !== 'string')) throw new Error(`${at}.required must be a list of property names, got ${shown(required)}`);
        for (const r of required) if (!lenient && (!props || !Object.hasOwn(props, r))) throw new Error(`${at}.required names ${shown(r)}, which is not one of its properties: edgereason writes only the properties given`);
        const ap = s.additionalProperties;
        const extra = ap === false ? null : ap === undefined || ap === true ? ANY : compile(ap, `${at}.additionalProperties`);
        alts.push(props && Object.keys(props).length
          ? { t: 'object', props: Object.entries(props as Record<string, unknown>).map(([k, v]) => ({ key: bytesText(JSON.stringify(k).slice(1)), node: compile(v, `${at}.properties.${k}`), required: required.includes(k) })), extra: null }
          : { t: 'object', extra });
      } else if (t === 'array') {
        const min = count(s, 'minItems', at, 0), max = count(s, 'maxItems', at, Infinity);
        if (min > max) throw new Error(`${at}: minItems ${min} is more than maxItems ${max}`);
        alts.push({ t: 'array', items: s.items === undefined ? ANY : compile(s.items, `${at}.items`), min, max });
      } else if (t === 'string') {
        const min = count(s, 'minLength', at, 0), max = count(s, 'maxLength', at, Infinity);
        if (min > max) throw new Error(`${at}: minLength ${min} is more than maxLength ${max}`);
        alts.push({ t: 'string', min, max });
      } else if (t === 'number' || t === 'integer') {
        if (!types.includes('number') || t === 'number') alts.push({ t: 'number', integer: t === 'integer' });
      } else alts.push({ t: 'literal', texts: t === 'boolean' ? ['true', 'false'] : ['null'] });
    }
    // Keywords of a type the schema does not allow have nothing to hold to: refused as a likely mistake.
    for (const [t, ks] of Object.entries(KEYWORDS)) {
      if (t === 'any') continue;
      const k = ks.find((k) => s[k] !== undefined);
      if (k && !types.includes(t) && !lenient) throw new Error(`${at}.${k} applies to ${t}s, but the schema's type is ${shown(s.type)}`);
    }
    return alts.length === 1 ? alts[0] : { t: 'union', of: alts.map((a) => ({ ...a, id: ids++ }) as Node) };
  };
  const top = schema === true ? ANY_OBJECT : compile(schema, where);
  leaveOutEndless(top, where);
  return top;
}

/**
 * Leaves out of the nodes what no finite value can fill (a $ref that recurses through required properties or
 * minItems): begun, such a value could never end. Throws when the schema itself has no finite value.
 */
function leaveOutEndless(top: Node, where: string): void {
  const nodes: Node[] = [], seen = new Set<Node>();
  const visit = (n: Node | null): void => {
    if (!n || n.id < 0 || seen.has(n)) return;
    seen.add(n);
    nodes.push(n);
    if (n.t === 'object') { n.props?.forEach((p) => visit(p.node)); visit(n.extra); }
    else if (n.t === 'array') visit(n.items);
    else if (n.t === 'union') n.of.forEach(visit);
  };
  visit(top);
  const finite = new Set<Node>(), ok = (n: Node): boolean => n.id < 0 || finite.has(n);
  const fills = (n: Node): boolean =>
    n.t === 'object' ? (n.props ?? []).every((p) => !p.required || ok(p.node)) : n.t === 'array' ? n.min === 0 || ok(n.items) : n.t === 'union' ? n.of.some(ok) : true;
  for (let grew = true; grew;) {
    grew = false;
    for (const n of nodes) if (!finite.has(n) && fills(n)) { finite.add(n); grew = true; }
  }
  if (!ok(top)) throw new Error(`${where} has no finite value: it requires a value inside itself (a $ref that recurses through required properties or minItems)`);
  for (const n of nodes) {
    if (n.t === 'object') { if (n.props) n.props = n.props.filter((p) => ok(p.node)); if (n.extra && !ok(n.extra)) n.extra = null; }
    else if (n.t === 'array' && !ok(n.items)) n.max = 0;
    else if (n.t === 'union') n.of = n.of.filter(ok);
  }
}

const tooAmbiguous = (where: string) => `${where}: the schema is too ambiguous to decode: more than ${MAX_WAYS} ways to read the output so far (anyOf branches that begin alike, nested in each other), or more than ${MAX_CONFIGURATIONS} values it may go on with; make its branches differ sooner, or nest fewer of them`;

/** A text's UTF-8 bytes as a latin-1 string (one character per byte), as the machine reads it. */
const bytesText = (t: string): string => Buffer.from(t, 'utf8').toString('latin1');

/** Whether `text` (bytesText) is a whole value of `n`. */
function accepts(n: Node, text: string): boolean {
  return feedBytes([push({ k: 'val', n, ws: 0 }, push({ k: 'root' }, null))], Buffer.from(text, 'latin1')).some(ends);
}

// ---- The machine: a stack of frames (linked, shared between configurations); a state is a set of configurations.

type Frame =
  | { k: 'root' }
  | { k: 'val'; n: Node; ws: number }
  | { k: 'lit'; rest: string }
  | { k: 'num'; ph: number; integer: boolean; len: number }
  /**
   * id: the string's node; esc: 1 after a backslash, 2–5 hex digits of \u to go (u: their value so far); pair: the last
   * character was a high surrogate's \u escape (a low one after it completes one character); cont: UTF-8 continuation
   * bytes to go, lead: the first byte while the second is to come; len: characters (code points, as JSON schema counts).
   */
  | { k: 'str'; id: number; esc: number; u: number; pair: boolean; cont: number; lead: number; len: number; min: number; max: number }
  /** ph: 0 after "{", 1 after ",", 2 after a key (":" next), 3 after a value ("," or "}" next); i: the next property. */
  | { k: 'obj'; n: Extract<Node, { t: 'object' }>; ph: number; i: number; ws: number }
  /** ph: 0 after "[", 1 after a value, 2 after ",". */
  | { k: 'arr'; n: Extract<Node, { t: 'array' }>; ph: number; count: number; ws: number };

/** key: exact (which configurations are the same); near: what the next token can tell apart (the allowed lists' cache). */
interface Stack { f: Frame; up: Stack | null; key?: string; near?: string }

const frameKey = (f: Frame, clamp: number): string => {
  switch (f.k) {
    case 'root': return 'R';
    case 'val': return `v${f.n.id},${f.ws}`;
    case 'lit': return `l${JSON.stringify(f.rest)}`;
    case 'num': return `n${f.ph},${+f.integer},${f.len}`;
    // Only what the next token (at most `clamp` bytes) can reach matters: the room left to maxLength and to minLength.
    case 'str': return `s${f.id},${f.esc},${f.u},${+f.pair},${f.cont},${f.lead},${Math.min(clamp, f.max - f.len)},${Math.max(0, Math.min(clamp, f.min - f.len))}`;
    case 'obj': return `o${f.n.id},${f.ph},${f.i},${f.ws}`;
    case 'arr': return `a${f.n.id},${f.ph},${Math.min(f.count, f.n.min)},${f.n.max - f.count > clamp ? 'm' : f.n.max - f.count},${f.ws}`;
  }
};
const push = (f: Frame, up: Stack | null): Stack => ({ f, up });
/** Whether the value is complete here: nothing left but the root (a number at the top level may end with the text). */
const ends = (x: Stack): boolean => x.f.k === 'root' || (x.f.k === 'num' && [1, 2, 4, 7].includes(x.f.ph) && ends(x.up!));
/**
 * Whitespace between two tokens of the JSON: none, one space, or a line break and at most INDENT_MAX spaces or tabs.
 * `ws` is the gap so far (0 none, 1 a space, 2 + n a line break and n blanks); −1: `b` cannot extend it.
 */
const gap = (ws: number, b: number): number => (ws === 0 ? (b === 0x20 ? 1 : b === 0x0a ? 2 : -1) : ws >= 2 && ws < 2 + INDENT_MAX && (b === 0x20 || b === 0x09) ? ws + 1 : -1);
const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const HEX = /^[0-9a-fA-F]$/;

/** The configurations after byte `b` (none: `b` cannot come next). */
function feed(s: Stack, b: number, out: Stack[]): void {
  const f = s.f, up = s.up;
  switch (f.k) {
    case 'root': return;
    case 'lit':
      if (b !== f.rest.charCodeAt(0)) return;
      out.push(f.rest.length === 1 ? up! : push({ k: 'lit', rest: f.rest.slice(1) }, up));
      return;
    case 'str': {
      if (f.esc === 1) { // after a backslash
        if ('"\\/bfnrt'.includes(String.fromCharCode(b))) { if (f.len < f.max) out.push(push({ ...f, esc: 0, pair: false, len: f.len + 1 }, up)); }
        else if (b === 0x75) out.push(push({ ...f, esc: 5, u: 0 }, up)); // \u and four hex digits
        return;
      }
      if (f.esc > 1) {
        if (!HEX.test(String.fromCharCode(b))) return;
        const u = f.u * 16 + parseInt(String.fromCharCode(b), 16), scale = 16 ** (f.esc - 2);
        // At maxLength only a low surrogate joining the pair fits: the digits must still be able to make one.
        if (f.len >= f.max && (u * scale > 0xdfff || (u + 1) * scale - 1 < 0xdc00)) return;
        if (f.esc > 2) { out.push(push({ ...f, esc: f.esc - 1, u }, up)); return; }
        const low = u >= 0xdc00 && u <= 0xdfff, joins = f.pair && low; // a surrogate pair is one character
        out.push(push({ ...f, esc: 0, u: 0, pair: !joins && u >= 0xd800 && u <= 0xdbff, len: f.len + (joins ? 0 : 1) }, up));
        return;
      }
      // Valid UTF-8 only: continuation bytes (10xxxxxx) where the first byte asked for them, the second in the range that
      // keeps out overlong forms, surrogates and code points past U+10FFFF.
      if (f.cont) {
        const [lo, hi] = f.lead === 0xe0 ? [0xa0, 0xbf] : f.lead === 0xed ? [0x80, 0x9f] : f.lead === 0xf0 ? [0x90, 0xbf] : f.lead === 0xf4 ? [0x80, 0x8f] : [0x80, 0xbf];
        if (b >= lo && b <= hi) out.push(push({ ...f, cont: f.cont - 1, lead: 0 }, up));
        return;
      }
      if (b === 0x22) { if (f.len >= f.min) out.push(up!); return; }
      // (A low surrogate's escape may still join a high one at maxLength: it adds no character.)
      if (b === 0x5c && (f.len < f.max || f.pair)) { out.push(push({ ...f, esc: 1 }, up)); return; }
      if (b < 0x20 || (b >= 0x80 && b < 0xc2) || b > 0xf4 || f.len >= f.max) return;
      out.push(push({ ...f, len: f.len + 1, pair: false, cont: b < 0x80 ? 0 : b < 0xe0 ? 1 : b < 0xf0 ? 2 : 3, lead: b < 0x80 ? 0 : b }, up));
      return;
    }
    case 'num': {
      // A "." "e" or sign must be followed by a digit: taken only where one still fits within NUM_MAX.
      const { ph, integer, len } = f, next = (p: number) => { if (len + (p === 3 || p === 5 || p === 6 ? 2 : 1) <= NUM_MAX) out.push(push({ k: 'num', ph: p, integer, len: len + 1 }, up)); };
      if (isDigit(b)) {
        if (ph === 0) return next(b === 0x30 ? 1 : 2);
        if (ph === 2 || ph === 4 || ph === 7) return next(ph);
        if (ph === 3) return next(4);
        if (ph === 5 || ph === 6) return next(7);
        return; // after a leading 0
      }
      if (!integer && b === 0x2e && (ph === 1 || ph === 2)) return next(3);
      if (!integer && (b === 0x65 || b === 0x45) && (ph === 1 || ph === 2 || ph === 4)) return next(5);
      if ((b === 0x2b || b === 0x2d) && ph === 5) return next(6);
      if (ph === 1 || ph === 2 || ph === 4 || ph === 7) feed(up!, b, out); // the number ended: the byte is its parent's
      return;
    }
    case 'val': {
      if (isWs(b)) { const ws = up!.f.k === 'root' ? (f.ws < LEAD_MAX ? f.ws + 1 : -1) : gap(f.ws, b); if (ws >= 0) out.push(push({ ...f, ws }, up)); return; }
      start(f.n, b, up!, out);
      return;
    }
    case 'obj': {
      const { n, ph, i } = f;
      if (isWs(b)) { const ws = gap(f.ws, b); if (ws >= 0) out.push(push({ ...f, ws }, up)); return; }
      const props = n.props, left = props ? props.slice(i) : [], needs = left.some((p) => p.required);
      if (ph === 0 || ph === 1) {
        if (b === 0x7d && ph === 0 && !needs) { out.push(up!); return; }
        if (b !== 0x22) return;
        if (props) {
          for (let j = i; j < props.length; j++) {
            out.push(push({ k: 'lit', rest: props[j].key }, push({ k: 'obj', n, ph: 2, i: j + 1, ws: 0 }, up)));
            if (props[j].required) break; // a required property cannot be skipped
          }
        } else if (n.extra) out.push(push(openString(KEY), push({ k: 'obj', n, ph: 2, i, ws: 0 }, up)));
        return;
      }
      if (ph === 2) {
        if (b === 0x3a) out.push(push({ k: 'val', n: props ? props[i - 1].node : n.extra!, ws: 0 }, push({ k: 'obj', n, ph: 3, i, ws: 0 }, up)));
        return;
      }
      if (b === 0x2c && (!props || left.length)) out.push(push({ k: 'obj', n, ph: 1, i, ws: 0 }, up));
      else if (b === 0x7d && !needs) out.push(up!);
      return;
    }
    case 'arr': {
      const { n, ph, count } = f;
      if (isWs(b)) { const ws = gap(f.ws, b); if (ws >= 0) out.push(push({ ...f, ws }, up)); return; }
      if (ph === 1) {
        if (b === 0x2c && count < n.max) out.push(push({ k: 'arr', n, ph: 2, count, ws: 0 }, up));
        else if (b === 0x5d && count >= n.min) out.push(up!);
        return;
      }
      if (b === 0x5d && ph === 0 && n.min === 0) { out.push(up!); return; }
      if (b === 0x5d || (ph === 0 && n.max === 0)) return;
      start(n.items, b, push({ k: 'arr', n, ph: 1, count: count + 1, ws: 0 }, up), out);
      return;
    }
  }
}

const openString = (n: Extract<Node, { t: 'string' }>): Frame => ({ k: 'str', id: n.id, esc: 0, u: 0, pair: false, cont: 0, lead: 0, len: 0, min: n.min, max: n.max });
/** A value of `n` begun with byte `b`, its parent `up` already in its after-value state. */
function start(n: Node, b: number, up: Stack, out: Stack[]): void {
  switch (n.t) {
    case 'union': for (const o of n.of) start(o, b, up, out); return;
    case 'literal':
      for (const t of n.texts) if (t.charCodeAt(0) === b) out.push(t.length === 1 ? up : push({ k: 'lit', rest: t.slice(1) }, up));
      return;
    case 'object': if (b === 0x7b) out.push(push({ k: 'obj', n, ph: 0, i: 0, ws: 0 }, up)); return;
    case 'array': if (b === 0x5b) out.push(push({ k: 'arr', n, ph: 0, count: 0, ws: 0 }, up)); return;
    case 'string': if (b === 0x22) out.push(push(openString(n), up)); return;
    case 'number': if (b === 0x2d || isDigit(b)) out.push(push({ k: 'num', ph: b === 0x2d ? 0 : b === 0x30 ? 1 : 2, integer: n.integer, len: 1 }, up)); return;
    case 'any': for (const o of ANY_VALUES) start(o, b, up, out); return;
  }
}

/** A machine state: its configurations (deduplicated) and its key. */
export interface JsonState { readonly stacks: readonly Stack[]; readonly key: string }

const exactKey = (s: Stack): string => (s.key ??= frameKey(s.f, Infinity) + (s.up ? `|${exactKey(s.up)}` : ''));
const nearKey = (s: Stack, clamp: number): string => (s.near ??= frameKey(s.f, clamp) + (s.up ? `|${nearKey(s.up, clamp)}` : ''));
function state(stacks: Stack[], clamp: number): JsonState {
  const byKey = new Map<string, Stack>();
  for (const s of stacks) { const k = exactKey(s); if (!byKey.has(k)) byKey.set(k, s); }
  const kept = [...byKey.values()];
  return { stacks: kept, key: [...new Set(kept.map((s) => nearKey(s, clamp)))].sort().join(' ') };
}
/**
 * The most ways of reading the text so far that a state may hold, and the most configurations. Overlapping anyOf
 * branches multiply the ways at every level they nest (a 3 KB schema reached millions: seconds of work on the main
 * thread a token, then out of memory), and every allowed-token scan costs each configuration; a schema past either is
 * refused (TooAmbiguous). The values of an enum (or the keys an object may write next) begun alike are configurations
 * of one way: a large enum is not ambiguous, only long to scan.
 */
export const MAX_WAYS = 1024, MAX_CONFIGURATIONS = 65_536;
class TooAmbiguous extends Error {}
function feedAll(stacks: readonly Stack[], b: number): Stack[] {
  const out: Stack[] = [];
  for (const s of stacks) {
    feed(s, b, out);
    if (out.length > MAX_CONFIGURATIONS) throw new TooAmbiguous();
  }
  // (Ways are never more than configurations: counted only where there are more configurations than ways allowed.)
  if (out.length > MAX_WAYS && new Set(out.map((s) => (s.f.k === 'lit' ? s.up : s))).size > MAX_WAYS) throw new TooAmbiguous();
  return out;
}
/** The configurations after `bytes` (none once one of them cannot come next). */
function feedBytes(stacks: readonly Stack[], bytes: Uint8Array): Stack[] {
  let out = [...stacks];
  for (let i = 0; i < bytes.length && out.length; i++) out = feedAll(out, bytes[i]);
  return out;
}

/** A token's bytes: the tokenizer's own (part of a character, for some), else its text's UTF-8. */
export const tokenBytesOf = (tok: Pick<ConstraintTokenizer, 'tokenBytes' | 'decode'>, id: number): Uint8Array => tok.tokenBytes?.(id) ?? Buffer.from(tok.decode([id]), 'utf8');

/** What JsonConstraint needs of a tokenizer. */
export interface ConstraintTokenizer {
  readonly vocabSize: number;
  readonly eosTokenIds: readonly number[];
  readonly specialIds?: ReadonlySet<number>;
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
  tokenBytes?(id: number): Uint8Array;
}

/** Tokens by bytes (as latin-1 strings), sorted, with each one's common prefix with the one before. */
interface Sorted { ids: Int32Array; bytes: string[]; lcp: Int32Array }
/**
 * A tokenizer's vocabulary, in two parts: the tokens with a quote or backslash in them, and the others, which inside a
 * string (not escaping, no bound) are allowed or not whatever holds the string: `plain`, found once.
 */
interface Vocab { quoted: Sorted; unquoted: Sorted; plain?: Int32Array; plainRoom?: Int32Array; longest: number }
const VOCABS = new WeakMap<object, Vocab>();
function vocabOf(tok: ConstraintTokenizer): Vocab {
  let v = VOCABS.get(tok);
  if (v) return v;
  const entries: [string, number][] = [];
  for (let id = 0; id < tok.vocabSize; id++) {
    if (tok.specialIds?.has(id)) continue; // control tokens never stand for JSON text
    const b = tokenBytesOf(tok, id);
    if (b.length) entries.push([Buffer.from(b).toString('latin1'), id]);
  }
  entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] - b[1]));
  const sorted = (list: [string, number][]): Sorted => {
    const lcp = new Int32Array(list.length);
    for (let i = 1; i < list.length; i++) {
      const s = list[i][0], p = list[i - 1][0];
      let k = 0;
      while (k < s.length && k < p.length && s.charCodeAt(k) === p.charCodeAt(k)) k++;
      lcp[i] = k;
    }
    return { ids: Int32Array.from(list, (e) => e[1]), bytes: list.map((e) => e[0]), lcp };
  };
  const quotes = (t: string) => t.includes('"') || t.includes('\\');
  VOCABS.set(tok, v = { quoted: sorted(entries.filter((e) => quotes(e[0]))), unquoted: sorted(entries.filter((e) => !quotes(e[0]))), longest: entries.reduce((m, e) => Math.max(m, e[0].length), 0) });
  return v;
}
/** Adds to `out` the tokens of `list` whose bytes the configurations `stacks` take. */
function walk(list: Sorted, stacks: readonly Stack[], out: number[]): void {
  const { ids, bytes, lcp } = list;
  // levels[d]: the configurations after the first d bytes of the current token (shared with the tokens before it).
  const levels: Stack[][] = [[...stacks]];
  let dead = Infinity; // the shortest prefix of the current run that no configuration takes
  for (let i = 0; i < ids.length; i++) {
    const text = bytes[i], common = lcp[i];
    if (common >= dead) continue; // shares a prefix already refused
    dead = Infinity;
    levels.length = common + 1;
    let d = common;
    for (; d < text.length; d++) {
      const next = feedAll(levels[d], text.charCodeAt(d));
      if (!next.length) break;
      levels.push(next);
    }
    if (d === text.length) out.push(ids[i]);
    else dead = d + 1;
  }
}

/** The unquoted tokens any string takes (plainStringRoom), found once per tokenizer. */
function plainTokens(v: Vocab): Int32Array {
  if (!v.plain) {
    const out: number[] = [];
    walk(v.unquoted, [push(openString(KEY), push({ k: 'root' }, null))], out);
    v.plain = Int32Array.from(out); // (copied into each list that holds it)
  }
  return v.plain;
}

/**
 * The room each plain token needs in a string bounded by maxLength (aligned with plainTokens): a character for each
 * byte that is not a UTF-8 continuation, as the machine counts them (each asks for room as it begins). Plain tokens
 * hold no backslash (those are `quoted`, walked), so no escape's rules come in.
 */
function plainRooms(v: Vocab, tok: ConstraintTokenizer): Int32Array {
  v.plainRoom ??= plainTokens(v).map((id) => tokenBytesOf(tok, id).reduce((n, b) => n + +(b < 0x80 || b >= 0xc0), 0));
  return v.plainRoom;
}

/** The plain tokens that fit in `room` more characters of a bounded string (a linear pass, not a walk of the vocabulary). */
function plainWithin(v: Vocab, tok: ConstraintTokenizer, room: number): Int32Array {
  const plain = plainTokens(v), rooms = plainRooms(v, tok);
  return room >= v.longest ? plain : plain.filter((_, i) => rooms[i] <= room);
}

/**
 * Does once, for this tokenizer, what the first JSON-constrained request would (~1 s on a 151k vocabulary): a server
 * calls it at start.
 */
export function prepareJsonVocabulary(tok: ConstraintTokenizer): void { plainRooms(vocabOf(tok), tok); }

/**
 * The room left in the string every configuration is inside, where none is in an escape or a character: the plain
 * tokens' case (Infinity: no maxLength; the most any configuration has left). undefined elsewhere.
 */
const plainStringRoom = (s: JsonState): number | undefined =>
  s.stacks.every(({ f }) => f.k === 'str' && !f.esc && !f.cont && !f.pair) ? Math.max(...s.stacks.map(({ f }) => (f.k === 'str' ? f.max - f.len : 0))) : undefined;

export interface ConstraintOptions {
  /** The tokens that end the turn once the JSON is complete (default: the tokenizer's end-of-sequence ids). */
  stopTokens?: readonly number[];
  /** Names the schema in errors. */
  where?: string;
  /** Text already written (the prompt ends with it) that the answer continues: a forced tool call's opening. */
  begun?: string;
  /** Text that must follow the value before the end (a tool call's closing tag). */
  after?: string;
  /** See compileJsonSchema. */
  lenient?: boolean;
  /**
   * Texts a string may not hold as a token of their own (a tool call's tags, which Qwen's vocabulary has as ordinary
   * tokens: written inside an argument, the parser would take it for the call's end, or another call's start).
   */
  notInStrings?: readonly string[];
}

/** The machine's state after each token prefix asked about: a trie of the prefixes (rows of one call share theirs). */
interface Prefixes { state: JsonState | undefined; next: Map<number, Prefixes> }

/**
 * Allowed-token lists kept, for every constraint together, by constraint and machine state: at most this many bytes
 * (a string state's list on a 151k vocabulary is 0.6 MB), the least recently used dropped first.
 */
const ALLOWED_BYTES = 128 * 2 ** 20;
const allowedKept = new Map<string, Int32Array>();
let allowedBytes = 0, constraints = 0;

/** The refusal of a stop string beside `json` (it cut the JSON, which then said finishReason "stop"). */
export const JSON_STOP = (where: string): string => `${where}: json and stop: ${stopCuts('the JSON')}; leave stop out`;
/** Why a stop string is refused beside a constrained value (the JSON, a forced tool call). */
export const stopCuts = (what: string): string => `a stop string would cut ${what}, which the constraint ends by itself once it is complete`;

/**
 * The constraint for one schema and tokenizer. `tracker()` makes the function GenerateOptions.allowedNext takes: given
 * the answer's tokens so far, the tokens allowed next (the stop tokens once the JSON is complete). The lists are
 * found once per machine state and kept for every later call.
 */
export class JsonConstraint {
  readonly node: Node;
  private readonly vocab: Vocab;
  private readonly id = constraints++;
  private readonly start: JsonState;
  private readonly stops: number[];
  private readonly where: string;
  /** The tokens of opts.notInStrings: never allowed inside a string. */
  private readonly tagIds: ReadonlySet<number>;

  constructor(private readonly tok: ConstraintTokenizer, schema: JsonSchema, opts: ConstraintOptions = {}) {
    this.node = compileJsonSchema(schema, opts.where, opts.lenient);
    this.where = opts.where ?? 'json';
    this.stops = [...(opts.stopTokens ?? tok.eosTokenIds)];
    if (!this.stops.length) throw new Error('json constraint: the tokenizer has no end-of-sequence token to end the JSON with');
    this.vocab = vocabOf(tok);
    const root = push({ k: 'root' }, null), after = opts.after ? push({ k: 'lit', rest: bytesText(opts.after) }, root) : root;
    const stacks = this.bounded(() => feedBytes([push({ k: 'val', n: this.node, ws: 0 }, after)], Buffer.from(opts.begun ?? '', 'utf8')));
    if (!stacks.length) throw new Error(`json constraint: the text the reply begins with, ${JSON.stringify(opts.begun)}, is not JSON the schema allows`);
    this.start = state(stacks, this.vocab.longest);
    const tags = opts.notInStrings ?? [];
    // Found among the vocabulary's byte strings, which are already at hand (decoding every token took 0.3 s a schema).
    const wanted = new Set(tags.map((t) => Buffer.from(t, 'utf8').toString('latin1')));
    this.tagIds = new Set([this.vocab.quoted, this.vocab.unquoted].flatMap((l) => [...l.ids].filter((_, i) => wanted.has(l.bytes[i]))));
  }

  /**
   * GenerateOptions.allowedNext for one generation (one answer() call: its samples share the trie of states it
   * keeps, which lives as long as the function does). Throws if asked about tokens its lists did not allow.
   */
  tracker(): (tokens: readonly number[], lead?: string) => Int32Array;
  /**
   * `open`: a segment of a reply that is otherwise free (a tool call the model opened itself): undefined, no
   * constraint, where the lead and tokens are none it allows, and once the JSON and its `after` text are written
   * (`ends`: then only the stop tokens, as without `open`).
   */
  tracker(o: { open: true; ends?: boolean }): (tokens: readonly number[], lead?: string) => Int32Array | undefined;
  tracker(o: { open?: boolean; ends?: boolean } = {}): (tokens: readonly number[], lead?: string) => Int32Array | undefined {
    // A trie per lead (the answer's text the thinking's closing token carried): read first, or, where it cannot begin
    // the JSON, left as it stands before it (the answer will not parse, but the request is answered; open: free).
    const roots = new Map<string, Prefixes>();
    const rootFor = (lead: string): Prefixes => {
      let r = roots.get(lead);
      if (!r) {
        const stacks = feedBytes(this.start.stacks, Buffer.from(lead, 'utf8'));
        roots.set(lead, r = { state: stacks.length ? state(stacks, this.vocab.longest) : o.open ? undefined : this.start, next: new Map() });
      }
      return r;
    };
    return (tokens, lead = '') => this.bounded(() => {
      const s = this.stateAfter(tokens, rootFor(lead));
      if (o.open && (!s || (!o.ends && JsonConstraint.complete(s)))) return undefined;
      if (!s) throw new Error(`json constraint: the answer so far is not JSON its schema allows: ${JSON.stringify(this.tok.decode(tokens))}`);
      const key = `${this.id} ${s.key}`;
      let list = allowedKept.get(key);
      if (list) allowedKept.delete(key); // most recently used last
      else {
        list = this.scan(s);
        allowedBytes += list.byteLength;
        for (const [k, l] of allowedKept) { if (allowedBytes <= ALLOWED_BYTES) break; allowedKept.delete(k); allowedBytes -= l.byteLength; }
      }
      allowedKept.set(key, list);
      return list;
    });
  }

  /** `f`, where a state past MAX_CONFIGURATIONS is said as the schema's fault (the request's: a 400 in the server). */
  private bounded<T>(f: () => T): T {
    try { return f(); } catch (e) {
      if (!(e instanceof TooAmbiguous)) throw e;
      throw new Error(tooAmbiguous(this.where));
    }
  }

  /** The machine's state after these answer tokens (undefined: they are not a JSON prefix the schema allows). */
  stateAfter(tokens: readonly number[], root: Prefixes = { state: this.start, next: new Map() }): JsonState | undefined {
    let at = root;
    for (const t of tokens) {
      let n = at.next.get(t);
      if (!n) {
        const from = at.state, stacks = from ? this.bounded(() => feedBytes(from.stacks, tokenBytesOf(this.tok, t))) : [];
        at.next.set(t, n = { state: stacks.length ? state(stacks, this.vocab.longest) : undefined, next: new Map() });
      }
      at = n;
    }
    return at.state;
  }

  /** Whether the JSON is complete in this state (the stop tokens may end it): a number at the top level may end too. */
  static complete(s: JsonState): boolean { return s.stacks.some(ends); }

  /** Every token whose bytes the state can take, and the stop tokens where it is complete. */
  private scan(s: JsonState): Int32Array {
    const room = plainStringRoom(s);
    let out: number[] = [], plain = room === undefined ? undefined : room === Infinity ? plainTokens(this.vocab) : plainWithin(this.vocab, this.tok, room);
    walk(this.vocab.quoted, s.stacks, out);
    if (!plain) walk(this.vocab.unquoted, s.stacks, out);
    // A stop token with text of its own ("\n" as a stop) ends the answer: never a piece of the JSON; nor, inside a
    // string, a token of notInStrings.
    const never = new Set([...this.stops, ...(s.stacks.every(({ f }) => f.k === 'str') ? this.tagIds : [])]);
    if (out.some((t) => never.has(t))) out = out.filter((t) => !never.has(t));
    if (plain?.some((t) => never.has(t))) plain = plain.filter((t) => !never.has(t));
    if (JsonConstraint.complete(s)) out.push(...this.stops);
    // In shared memory: handed to the runtime's worker thread at every step, a list is shared there, not copied (147k ids: 0.5 ms).
    const all = new Int32Array(new SharedArrayBuffer(4 * (out.length + (plain?.length ?? 0))));
    all.set(out);
    if (plain) all.set(plain, out.length);
    if (!all.length) throw new Error(`${this.where}: no token of this model's vocabulary can write what the schema asks for next (a character it has no tokens for, in a const or an enum?)`);
    return all;
  }
}

/** Constraints kept per tokenizer, by schema text (a server's requests mostly repeat a few schemas). */
const KEPT = new WeakMap<object, Map<string, JsonConstraint>>();
const CONSTRAINTS_KEPT = 32;

/** The constraint for `schema` (true: any JSON object), made once per tokenizer, schema, options and `where` (which names the schema in its errors). */
export function jsonConstraint(tok: ConstraintTokenizer, schema: JsonSchema, where = 'json', opts: Omit<ConstraintOptions, 'where'> = {}): JsonConstraint {
  if (schema !== true && (!schema || typeof schema !== 'object' || Array.isArray(schema))) throw new Error(`${where} must be true (any JSON object) or a JSON schema (an object), got ${shown(schema)}`);
  let kept = KEPT.get(tok);
  if (!kept) KEPT.set(tok, kept = new Map());
  let text: string;
  try { text = JSON.stringify([schema, opts.begun, opts.after, !!opts.lenient, opts.stopTokens, opts.notInStrings, where]); } catch (e) { throw new Error(`${where} must be a JSON schema that JSON can write: ${(e as Error).message}`); }
  let c = kept.get(text);
  if (c) { kept.delete(text); kept.set(text, c); return c; } // most recently used last
  c = new JsonConstraint(tok, schema, { ...opts, where });
  if (kept.size >= CONSTRAINTS_KEPT) kept.delete(kept.keys().next().value!);
  kept.set(text, c);
  return c;
}

/** The voting key of a JSON answer: its value with object keys sorted (undefined where it does not parse). */
export function jsonKey(text: string): string | undefined {
  const sorted = (v: unknown): unknown => Array.isArray(v) ? v.map(sorted)
    : v && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted((v as Record<string, unknown>)[k])])) : v;
  try { return JSON.stringify(sorted(JSON.parse(text))); } catch { return undefined; }
}
