/**
 * The synthetic reasoning world the default model is trained and evaluated on: GSM8K-style multi-step
 * arithmetic word problems (the positive class for "reason"), short lookup/formatting chat queries (the
 * router's negative class), and SFT traces in a concise and a verbose style.
 *
 * Everything is a pure function of integer seeds through our own PRNG, so the same seed gives the same items
 * on every machine. Every word the generator can emit comes from the fixed lists below (LEXICON_SOURCES), so
 * the word-level tokenizer built by vocab.ts covers all of it.
 */

// ---------------------------------------------------------------------------------------------------------
// PRNG: splitmix32 (Weyl sequence + murmur3 finaliser). Integer-only, so identical on every platform.

export class Rng {
  private s: number;
  constructor(seed: number) { this.s = seed >>> 0; }
  u32(): number {
    this.s = (this.s + 0x9e3779b9) >>> 0;
    return mix32(this.s);
  }
  /** Uniform in [0, 1). */
  float(): number { return this.u32() / 4294967296; }
  /** Uniform integer in [lo, hi] (inclusive). */
  int(lo: number, hi: number): number { return lo + Math.floor(this.float() * (hi - lo + 1)); }
  chance(p: number): boolean { return this.float() < p; }
  pick<T>(xs: readonly T[]): T { return xs[Math.floor(this.float() * xs.length)]; }
}

function mix32(z: number): number {
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** Combines integers (each taken mod 2^32) into one well-mixed 32-bit seed. */
function hash32(...xs: number[]): number {
  let h = 0x2545f491;
  for (const x of xs) h = mix32((h ^ (x >>> 0)) + 0x9e3779b9 >>> 0);
  return h;
}

/** FNV-1a over UTF-16 code units, then mixed: a stable hash of a string. */
function hashText(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return mix32(h >>> 0);
}

function weighted<K extends string>(rng: Rng, w: Partial<Record<K, number>>): K {
  const entries = Object.entries(w).filter(([, v]) => (v as number) > 0) as [K, number][];
  if (!entries.length) throw new Error('synthetic: mix has no positive weight');
  let r = rng.float() * entries.reduce((a, [, v]) => a + v, 0);
  for (const [k, v] of entries) if ((r -= v) < 0) return k;
  return entries[entries.length - 1][0];
}

// ---------------------------------------------------------------------------------------------------------
// Items

export type Difficulty = 'easy' | 'medium' | 'hard';
export type ChatTopic = 'capital' | 'reverse' | 'upper' | 'unit' | 'greeting';

export interface MathItem {
  id: string; kind: 'math'; question: string; answer: number;
  /** Canonical solution, one binary operation per line: "12 + 7 = 19". */
  steps: string[];
  ops: number; difficulty?: Difficulty;
}
export interface ChatItem {
  id: string; kind: 'chat'; question: string;
  /** The exact expected reply. */
  answer: string;
  topic: ChatTopic;
  /** What the query is about (country, word, quantity, greeting), used by the verbose trace. */
  subject: string;
}
export type Item = MathItem | ChatItem;

/** Difficulty presets: easy = 1–2 operations, medium = 3, hard = 4–8; maxValue bounds every number. */
export const DIFFICULTY: Record<Difficulty, { minOps: number; maxOps: number; maxValue: number }> = {
  easy: { minOps: 1, maxOps: 2, maxValue: 20 },
  medium: { minOps: 3, maxOps: 3, maxValue: 40 },
  hard: { minOps: 4, maxOps: 8, maxValue: 40 },
};

export type Mix = Partial<Record<Difficulty | 'chat', number>>;
const DEFAULT_MIX: Mix = { easy: 0.3, medium: 0.25, hard: 0.25, chat: 0.2 };

export const SYSTEM_PROMPT = 'You are a helpful assistant.';

// ---------------------------------------------------------------------------------------------------------
// Math word problems

const NAMES: readonly [string, 'f' | 'm'][] = [
  ['Mia', 'f'], ['Emma', 'f'], ['Ava', 'f'], ['Lily', 'f'], ['Zoe', 'f'], ['Nora', 'f'], ['Ella', 'f'],
  ['Ruby', 'f'], ['Anna', 'f'], ['Sara', 'f'], ['Leo', 'm'], ['Noah', 'm'], ['Liam', 'm'], ['Owen', 'm'],
  ['Jack', 'm'], ['Ben', 'm'], ['Max', 'm'], ['Sam', 'm'], ['Tom', 'm'], ['Eli', 'm'],
];
const PRONOUNS = {
  f: { S: 'She', s: 'she', o: 'her', g: 'her', r: 'herself' },
  m: { S: 'He', s: 'he', o: 'him', g: 'his', r: 'himself' },
};

type TopicKind = 'count' | 'measure' | 'money';
interface Topic { kind: TopicKind; x: string; c: [string, string]; food?: boolean }
const TOPICS: readonly Topic[] = [
  { kind: 'count', x: 'apples', c: ['basket', 'baskets'], food: true },
  { kind: 'count', x: 'cookies', c: ['box', 'boxes'], food: true },
  { kind: 'count', x: 'eggs', c: ['carton', 'cartons'], food: true },
  { kind: 'count', x: 'candies', c: ['jar', 'jars'], food: true },
  { kind: 'count', x: 'pencils', c: ['pack', 'packs'] },
  { kind: 'count', x: 'stickers', c: ['sheet', 'sheets'] },
  { kind: 'count', x: 'marbles', c: ['bag', 'bags'] },
  { kind: 'count', x: 'cards', c: ['deck', 'decks'] },
  { kind: 'count', x: 'shells', c: ['bucket', 'buckets'] },
  { kind: 'count', x: 'books', c: ['shelf', 'shelves'] },
  { kind: 'count', x: 'stamps', c: ['album', 'albums'] },
  { kind: 'count', x: 'flowers', c: ['vase', 'vases'] },
  { kind: 'count', x: 'toy cars', c: ['box', 'boxes'] },
  { kind: 'measure', x: 'meters of rope', c: ['roll', 'rolls'] },
  { kind: 'measure', x: 'meters of ribbon', c: ['spool', 'spools'] },
  { kind: 'measure', x: 'liters of juice', c: ['bottle', 'bottles'] },
  { kind: 'measure', x: 'liters of water', c: ['jug', 'jugs'] },
  { kind: 'measure', x: 'kilograms of flour', c: ['bag', 'bags'] },
  { kind: 'measure', x: 'kilograms of rice', c: ['sack', 'sacks'] },
  { kind: 'money', x: 'dollars', c: ['envelope', 'envelopes'] },
];
const TOPIC_WEIGHT: Record<TopicKind, number> = { count: 0.6, measure: 0.2, money: 0.2 };
const SHOP_ITEMS: readonly [string, string][] = [
  ['book', 'books'], ['hat', 'hats'], ['ball', 'balls'], ['kite', 'kites'], ['lamp', 'lamps'], ['game', 'games'],
  ['cake', 'cakes'], ['shirt', 'shirts'], ['ticket', 'tickets'], ['plant', 'plants'],
];

/**
 * Sentence templates. Placeholders: {N} actor, {O} other person, {S} sentence subject (name or pronoun),
 * {s}/{o}/{g}/{r} pronoun forms, {X} counted thing ("apples", "meters of rope"), {c}/{C} container,
 * {i}/{I} shop item, {a} {b} {k} {v} {p} numbers. Keyed by topic kind; "all" applies to every kind.
 */
type ByKind = Partial<Record<TopicKind | 'all' | 'food', readonly string[]>>;
const T: Record<string, ByKind> = {
  start: {
    all: ['{N} has {v} {X}.', '{N} starts with {v} {X}.', 'At first, {N} has {v} {X}.'],
    count: ['{N} has a collection of {v} {X}.'],
    money: ['{N} has {v} dollars in {g} wallet.'],
  },
  startGroups: {
    count: ['{N} has {a} {C} with {b} {X} in each {c}.', '{N} buys {a} {C} of {X}. Each {c} holds {b} {X}.'],
    measure: ['{N} has {a} {C} with {b} {X} in each {c}.'],
    money: ['{N} earns {b} dollars a day for {a} days.', '{N} saves {b} dollars each week for {a} weeks.'],
  },
  add: {
    count: ['{S} buys {a} more {X}.', '{S} finds {a} more {X}.', '{S} collects {a} more {X}.',
      '{S} gets {a} more {X} from {O}.', '{O} gives {o} {a} {X}.'],
    measure: ['{S} buys {a} more {X}.', '{S} gets {a} more {X} from {O}.', '{O} gives {o} {a} {X}.'],
    money: ['{S} earns {a} dollars.', '{S} finds {a} dollars.', '{S} saves {a} more dollars.',
      '{S} gets {a} dollars from {O}.', '{O} gives {o} {a} dollars.'],
  },
  sub: {
    count: ['{S} gives {a} {X} to {O}.', '{S} sells {a} {X}.', '{S} loses {a} {X}.', '{S} gives away {a} {X}.'],
    food: ['{S} eats {a} {X}.'],
    measure: ['{S} uses {a} {X}.', '{S} uses up {a} {X}.', '{S} gives {a} {X} to {O}.', '{S} sells {a} {X}.'],
    money: ['{S} spends {a} dollars on a {i}.', '{S} pays {a} dollars for a {i}.', '{S} gives {a} dollars to {O}.',
      '{S} loses {a} dollars.'],
  },
  addGroups: {
    count: ['{S} buys {a} {C} with {b} {X} in each {c}.', '{O} gives {o} {a} {C}, and each {c} has {b} {X}.'],
    measure: ['{S} buys {a} {C} with {b} {X} in each {c}.', '{O} gives {o} {a} {C}, and each {c} has {b} {X}.'],
    money: ['{S} works {a} hours and earns {b} dollars per hour.', '{S} sells {a} {I} for {b} dollars each.',
      '{S} earns {b} dollars a day for {a} days.'],
  },
  subGroups: {
    count: ['{S} fills {a} {C} with {b} {X} each and gives them to {O}.',
      '{S} sells {a} {C} of {X}, with {b} {X} in each {c}.'],
    measure: ['{S} fills {a} {C} with {b} {X} each and sells them.'],
    money: ['{S} buys {a} {I} for {b} dollars each.', '{S} pays for {a} {I} that cost {b} dollars each.'],
  },
  mul: {
    all: ['After a week, {s} has {k} times as many {X} as before.',
      '{O} gives {o} enough {X} that {s} now has {k} times as many.',
      '{S} ends up with {k} times as many {X} as {s} had.'],
  },
  div: {
    all: ['{S} splits {g} {X} into {k} equal parts and keeps one part.',
      '{S} shares {g} {X} equally among {k} people, {r} included.'],
    count: ['{S} packs {g} {X} equally into {k} {C} and keeps only one {c}.'],
    money: ['{S} puts {g} dollars equally into {k} {C} and keeps one {c}.'],
  },
  half: {
    all: ['{S} gives half of {g} {X} to {O}.'],
    count: ['{S} sells half of {g} {X}.', '{S} loses half of {g} {X}.'],
    measure: ['{S} uses half of {g} {X}.', '{S} sells half of {g} {X}.'],
    money: ['{S} spends half of {g} money.'],
  },
  percent: {
    all: ['{S} gives {p}% of {g} {X} to {O}.'],
    count: ['{S} sells {p}% of {g} {X}.'],
    measure: ['{S} uses {p}% of {g} {X}.'],
    money: ['{S} spends {p}% of {g} money.'],
  },
  more: { all: ['{O} has {a} more {X} than {N} has now.'] },
  fewer: { all: ['{O} has {a} fewer {X} than {N} has now.'] },
  times: { all: ['{O} has {k} times as many {X} as {N} has now.'] },
  ask: {
    all: ['How many {X} does {N} have now?', 'How many {X} does {N} have at the end?',
      'How many {X} does {N} end up with?'],
    money: ['How much money does {N} have now, in dollars?'],
  },
  askLeft: { all: ['How many {X} does {N} have left?'] },
  askOther: { all: ['How many {X} does {O} have?'] },
};

function templates(key: string, topic: Topic): string[] {
  const t = T[key];
  return [...(t.all ?? []), ...(t[topic.kind] ?? []), ...(topic.food ? t.food ?? [] : [])];
}

interface Ctx { rng: Rng; max: number; topic: Topic; actor: [string, 'f' | 'm']; other: string; item: [string, string] }

function fill(tpl: string, ctx: Ctx, nums: Record<string, number>): string {
  const p = PRONOUNS[ctx.actor[1]];
  const vars: Record<string, string> = {
    N: ctx.actor[0], O: ctx.other, s: p.s, o: p.o, g: p.g, r: p.r, X: ctx.topic.x,
    c: ctx.topic.c[0], C: ctx.topic.c[1], i: ctx.item[0], I: ctx.item[1],
    S: ctx.rng.chance(0.7) ? p.S : ctx.actor[0],
  };
  for (const [k, v] of Object.entries(nums)) vars[k] = String(v);
  return tpl.replace(/\{(\w)\}/g, (_, k: string) => {
    if (vars[k] === undefined) throw new Error(`synthetic: template "${tpl}" uses unset {${k}}`);
    return vars[k];
  });
}

const eq = (a: number, op: string, b: number, c: number) => `${a} ${op} ${b} = ${c}`;

/** One story event: a sentence, the step lines it adds and the new running value (null if infeasible). */
interface Event { text: string; steps: string[]; v: number }
type EventKind = 'add' | 'sub' | 'addGroups' | 'subGroups' | 'mul' | 'div' | 'half' | 'percent';
const EVENT_COST: Record<EventKind, number> = { add: 1, sub: 1, mul: 1, div: 1, half: 1, addGroups: 2, subGroups: 2, percent: 2 };
const EVENT_WEIGHT: Record<EventKind, number> = { add: 3, sub: 3, mul: 1, div: 1, half: 1, addGroups: 1.5, subGroups: 1.5, percent: 1 };

function tryEvent(kind: EventKind, ctx: Ctx, v: number): Event | null {
  const { rng, max } = ctx;
  const say = (nums: Record<string, number>) => fill(rng.pick(templates(kind, ctx.topic)), ctx, nums);
  switch (kind) {
    case 'add': {
      if (max - v < 2) return null;
      const a = rng.int(2, Math.min(max - v, Math.max(2, Math.floor(max / 2))));
      return { text: say({ a }), steps: [eq(v, '+', a, v + a)], v: v + a };
    }
    case 'sub': {
      if (v < 3) return null;
      const a = rng.int(2, v - 1);
      return { text: say({ a }), steps: [eq(v, '-', a, v - a)], v: v - a };
    }
    case 'addGroups': case 'subGroups': {
      const room = kind === 'addGroups' ? max - v : v - 1;
      if (room < 4) return null;
      const a = rng.int(2, Math.min(9, Math.floor(room / 2))), b = rng.int(2, Math.min(12, Math.floor(room / a)));
      const ab = a * b, w = kind === 'addGroups' ? v + ab : v - ab;
      return { text: say({ a, b }), steps: [eq(a, '*', b, ab), eq(v, kind === 'addGroups' ? '+' : '-', ab, w)], v: w };
    }
    case 'mul': {
      if (v * 2 > max) return null;
      const k = rng.int(2, Math.min(5, Math.floor(max / v)));
      return { text: say({ k }), steps: [eq(v, '*', k, v * k)], v: v * k };
    }
    case 'div': {
      const ks = [2, 3, 4, 5, 6, 7, 8, 9, 10].filter((k) => v % k === 0 && v > k);
      if (!ks.length) return null;
      const k = rng.pick(ks);
      return { text: say({ k }), steps: [eq(v, '/', k, v / k)], v: v / k };
    }
    case 'half': {
      if (v % 2 || v < 4) return null;
      return { text: say({}), steps: [eq(v, '/', 2, v / 2)], v: v / 2 };
    }
    case 'percent': {
      const ds = ([[10, 10], [20, 5], [25, 4], [50, 2]] as const).filter(([, d]) => v % d === 0 && v > d);
      if (!ds.length) return null;
      const [p, d] = rng.pick(ds), r = v / d;
      return { text: say({ p }), steps: [eq(v, '/', d, r), eq(v, '-', r, v - r)], v: v - r };
    }
  }
}

/** A math word problem with exactly `ops` operations, every number (given or intermediate) in [0, maxValue]. */
export function generateMath(rng: Rng, opts: { ops: number; maxValue: number; id?: string; difficulty?: Difficulty }): MathItem {
  const { ops, maxValue: max } = opts;
  if (!(ops >= 1 && ops <= 8 && Number.isInteger(ops))) throw new Error(`synthetic: ops must be an integer in 1..8, got ${ops}`);
  if (!(max >= 20)) throw new Error(`synthetic: maxValue must be at least 20, got ${max}`);
  const kind = weighted(rng, TOPIC_WEIGHT);
  const topic = rng.pick(TOPICS.filter((t) => t.kind === kind));
  const actor = rng.pick(NAMES);
  const ctx: Ctx = { rng, max, topic, actor, other: rng.pick(NAMES.filter((n) => n !== actor))[0], item: rng.pick(SHOP_ITEMS) };
  const sentences: string[] = [], steps: string[] = [];
  let v: number;
  // Start from a plain amount, or (one operation) from groups: "4 boxes with 6 apples in each box".
  if (rng.chance(0.3)) {
    const a = rng.int(2, 9), b = rng.int(2, Math.max(2, Math.min(12, Math.floor(max / 2 / a))));
    v = a * b;
    sentences.push(fill(rng.pick(templates('startGroups', topic)), ctx, { a, b }));
    steps.push(eq(a, '*', b, v));
  } else {
    v = rng.int(Math.min(10, Math.floor(max / 4)), Math.floor(max / 2));
    sentences.push(fill(rng.pick(templates('start', topic)), ctx, { v }));
  }
  // Optionally end by comparing someone else to the actor (the question then asks about them).
  const compare = steps.length < ops && rng.chance(0.2);
  let lastKind: EventKind | undefined;
  while (steps.length < ops - (compare ? 1 : 0)) {
    const left = ops - (compare ? 1 : 0) - steps.length;
    let ev: Event | null = null, k: EventKind = 'add';
    for (let tries = 0; !ev && tries < 20; tries++) {
      k = weighted(rng, EVENT_WEIGHT);
      if (EVENT_COST[k] <= left) ev = tryEvent(k, ctx, v);
    }
    // add or sub is always feasible when max >= 20 (v is either >= 3 or <= max - 2)
    if (!ev) ev = tryEvent(k = 'add', ctx, v) ?? tryEvent(k = 'sub', ctx, v)!;
    sentences.push(ev.text); steps.push(...ev.steps); v = ev.v; lastKind = k;
  }
  let ask: string;
  if (compare) {
    const options = [...(max - v >= 2 ? ['more'] : []), ...(v >= 3 ? ['fewer'] : []), ...(v * 2 <= max ? ['times'] : [])];
    const c = rng.pick(options);
    const a = c === 'more' ? rng.int(2, Math.min(max - v, 20)) : c === 'fewer' ? rng.int(2, Math.min(v - 1, 20)) : rng.int(2, Math.min(5, Math.floor(max / v)));
    const w = c === 'more' ? v + a : c === 'fewer' ? v - a : v * a;
    sentences.push(fill(rng.pick(templates(c, topic)), ctx, c === 'times' ? { k: a } : { a }));
    steps.push(eq(v, c === 'more' ? '+' : c === 'fewer' ? '-' : '*', a, w));
    v = w;
    ask = fill(rng.pick(templates('askOther', topic)), ctx, {});
  } else {
    const reduced = lastKind && ['sub', 'subGroups', 'half', 'percent', 'div'].includes(lastKind);
    ask = fill(rng.pick([...templates('ask', topic), ...(reduced ? templates('askLeft', topic) : [])]), ctx, {});
  }
  sentences.push(ask);
  return { id: opts.id ?? '', kind: 'math', question: sentences.join(' '), answer: v, steps, ops: steps.length, difficulty: opts.difficulty };
}

// ---------------------------------------------------------------------------------------------------------
// Chat queries (no reasoning needed), each with its exact expected reply

const COUNTRIES: readonly [string, string][] = [
  ['Zorvia', 'Melbar'], ['Quendor', 'Tashik'], ['Blavaria', 'Korrin'], ['Estmark', 'Vallon'], ['Drunia', 'Pellas'],
  ['Morvania', 'Suthra'], ['Kelgard', 'Irvasa'], ['Velmora', 'Dunhal'], ['Ostrelia', 'Branik'], ['Tarvos', 'Elmire'],
  ['Lunaris', 'Corvell'], ['Pyrenth', 'Astova'], ['Norrland', 'Felden'], ['Sarkesh', 'Omballa'], ['Varrow', 'Kintal'],
  ['Ulmeria', 'Getsby'], ['Kravonia', 'Rusk'], ['Delphar', 'Mirrow'], ['Fenwick', 'Halden'], ['Gorsica', 'Lentari'],
  ['Halvane', 'Sorrel'], ['Ithara', 'Zemlo'], ['Jastow', 'Pirra'], ['Kalmar', 'Vesk'], ['Loravia', 'Teskin'],
  ['Mendora', 'Quill'], ['Nubara', 'Fossa'], ['Orlenia', 'Wexley'], ['Palandra', 'Yorvik'], ['Rivalon', 'Cendra'],
];
const QUANTITIES: readonly [string, string][] = [
  ['length', 'meters'], ['mass', 'kilograms'], ['time', 'seconds'], ['temperature', 'kelvins'],
  ['electric current', 'amperes'], ['amount of substance', 'moles'], ['luminous intensity', 'candelas'],
  ['force', 'newtons'], ['energy', 'joules'], ['power', 'watts'], ['pressure', 'pascals'], ['frequency', 'hertz'],
  ['voltage', 'volts'], ['electric charge', 'coulombs'], ['resistance', 'ohms'], ['area', 'square meters'],
  ['volume', 'cubic meters'], ['speed', 'meters per second'],
];
const WORDS: readonly string[] = [
  'lamp', 'star', 'moon', 'tree', 'fish', 'book', 'door', 'rain', 'snow', 'bird', 'frog', 'ship', 'rose', 'gold',
  'salt', 'milk', 'wind', 'leaf', 'road', 'ring', 'bell', 'cake', 'kite', 'desk', 'sand', 'wolf', 'bear', 'nest',
  'coin', 'hill', 'lake', 'drum', 'corn', 'duck', 'farm', 'hand', 'king', 'lion', 'map', 'pen',
];
const reverse = (w: string) => [...w].reverse().join('');
const GREETINGS: readonly [string, string][] = [
  ['Hi!', 'Hello! How can I help?'], ['Hello!', 'Hello! How can I help?'], ['Hey there!', 'Hi there! How can I help?'],
  ['Good morning!', 'Good morning! How can I help?'], ['Good evening!', 'Good evening! How can I help?'],
  ['Thank you!', 'You are welcome!'], ['Thanks a lot!', 'You are welcome!'], ['Bye!', 'Goodbye! Have a nice day!'],
  ['Goodbye!', 'Goodbye! Have a nice day!'], ['How are you?', 'I am fine, thank you! How can I help?'],
];
const NAMED_GREETINGS: readonly [string, string][] = [
  ['Hi, I am {N}!', 'Hello {N}! How can I help?'], ['Hello, my name is {N}.', 'Nice to meet you, {N}! How can I help?'],
];
const CHAT_T: Record<Exclude<ChatTopic, 'greeting'>, readonly string[]> = {
  capital: ['What is the capital of {x}?', 'Which city is the capital of {x}?', 'Name the capital city of {x}.',
    'What city is the capital of {x}?', 'Tell me the capital of {x}.'],
  unit: ['What unit is used to measure {x}?', 'Which unit do we use to measure {x}?', 'Name the unit of {x}.',
    'What is the unit of {x}?', 'In which unit is {x} measured?'],
  reverse: ['Reverse the word {x}.', 'Write the word {x} backwards.', 'What is {x} spelled backwards?',
    'Spell the word {x} in reverse order.'],
  upper: ['Write the word {x} in capital letters.', 'Make the word {x} uppercase.', 'Convert {x} to upper case.'],
};
// Politeness wrappers multiply the phrasings, so every split gets its own share of each fact.
const CHAT_PREFIX = ['', '', '', 'Quick question: ', 'Hey! ', 'Tell me this: ', 'I have a question. ', 'Can you help me? ', 'Hello! '];
const CHAT_SUFFIX = ['', '', '', ' Thanks!', ' Please answer briefly.', ' Just the answer, please.'];
const CHAT_WEIGHT: Record<ChatTopic, number> = { capital: 0.35, unit: 0.2, reverse: 0.15, upper: 0.15, greeting: 0.15 };

function generateChat(rng: Rng, opts: { id?: string } = {}): ChatItem {
  const topic = weighted(rng, CHAT_WEIGHT), id = opts.id ?? '';
  if (topic === 'greeting') {
    if (rng.chance(0.4)) {
      const [q, a] = rng.pick(NAMED_GREETINGS), n = rng.pick(NAMES)[0];
      return { id, kind: 'chat', question: q.replace('{N}', n), answer: a.replace('{N}', n), topic, subject: q };
    }
    const [q, a] = rng.pick(GREETINGS);
    return { id, kind: 'chat', question: q, answer: a, topic, subject: q };
  }
  const [x, answer] = topic === 'capital' ? rng.pick(COUNTRIES) : topic === 'unit' ? rng.pick(QUANTITIES)
    : ((w: string) => [w, topic === 'reverse' ? reverse(w) : w.toUpperCase()])(rng.pick(WORDS));
  const question = rng.pick(CHAT_PREFIX) + rng.pick(CHAT_T[topic]).replace('{x}', x) + rng.pick(CHAT_SUFFIX);
  return { id, kind: 'chat', question, answer, topic, subject: x };
}

// ---------------------------------------------------------------------------------------------------------
// SFT traces

export type TraceStyle = 'concise' | 'verbose';

const OP_VERB: Record<string, string> = { '+': 'add', '-': 'subtract', '*': 'multiply by', '/': 'divide by' };
const INVERSE: Record<string, string> = { '+': '-', '-': '+', '*': '/', '/': '*' };
const V = {
  open: ['Okay, let me restate the problem.', 'Let me read the problem again carefully.', 'First, let me understand the question.'],
  restate: ['The question asks: {q}', 'So the question is: {q}', 'We need to answer: {q}'],
  plan: ['I will work through it step by step.', 'Let me go one step at a time.', 'Let me solve this carefully.'],
  first: ['First', 'To start'], mid: ['Next', 'Then', 'After that', 'Now'], last: ['Finally', 'Last'],
  step: ['{C}, I {verb} {b}: {eq}.', '{C}, {eq}.', '{C}, I compute {eq}.'],
  verify: ['Wait, let me verify: {inv}. Yes, that is right.', 'Wait, is that right? Checking: {inv}. Yes.',
    'Hmm, let me double check {eq}. Yes, {c} is correct.'],
  recompute: ['Let me recompute that step: {eq}. Same result.', 'Actually, let me do that again. {eq}. Good.'],
  sofar: ['That gives {c}.', 'So we get {c}.'],
  recap: ['Let me go over all the steps once more.', 'Let me check the whole solution again.'],
  answer: ['So the answer is {ans}.', 'Therefore the answer is {ans}.'],
  confirm: ['Yes, the answer is {ans}.', 'Everything checks out, so the answer is {ans}.'],
};
const CHAT_V: Record<ChatTopic, string> = {
  capital: 'The user asks for the capital of {x}. The capital of {x} is {a}.',
  unit: 'The user asks which unit measures {x}. The unit of {x} is {a}.',
  reverse: 'The user wants the word {x} reversed. Reading it backwards gives {a}.',
  upper: 'The user wants the word {x} in capital letters. That is {a}.',
  greeting: 'This is a greeting, so I should greet back politely.',
};

const sub = (s: string, vars: Record<string, string | number>) => s.replace(/\{(\w+)\}/g, (_, k: string) => String(vars[k]));

/**
 * The text between <think> and </think>. Concise: the canonical steps, one per line (empty for chat).
 * Verbose: restatement, narrated steps, verification detours and recomputation at seeded rates, a final recap,
 * the way long chain-of-thought teachers write; about 3–5× the concise length on average, varying a lot.
 */
export function formatThinking(item: Item, style: TraceStyle, rng: Rng): string {
  if (item.kind === 'chat') {
    if (style === 'concise') return '';
    const lines = [sub(CHAT_V[item.topic], { x: item.subject, a: item.answer })];
    if (rng.chance(0.5)) lines.push('Wait, let me make sure. Yes, that is right.');
    return lines.join('\n');
  }
  if (style === 'concise') return item.steps.join('\n');
  const t = rng.float(); // per-trace thoroughness, so lengths spread widely for the same problem
  const lines: string[] = [];
  if (rng.chance(0.3 + 0.5 * t)) lines.push(rng.pick(V.open));
  const q = item.question.slice(item.question.lastIndexOf('. ') + 2); // the question sentence itself
  lines.push(sub(rng.pick(V.restate), { q: rng.chance(0.3 * t) ? item.question : q }));
  if (rng.chance(0.5 * t)) lines.push(rng.pick(V.plan));
  item.steps.forEach((s, i) => {
    const [a, op, b, , c] = s.split(' ');
    const C = i === 0 ? rng.pick(V.first) : i === item.steps.length - 1 ? rng.pick(V.last) : rng.pick(V.mid);
    lines.push(sub(rng.pick(V.step), { C, verb: OP_VERB[op], b, eq: s }));
    if (rng.chance(0.1 + 0.6 * t)) lines.push(sub(rng.pick(V.verify), { inv: `${c} ${INVERSE[op]} ${b} = ${a}`, eq: s, c }));
    if (rng.chance(0.3 * t)) lines.push(sub(rng.pick(V.recompute), { eq: s }));
    if (i < item.steps.length - 1 && rng.chance(0.2)) lines.push(sub(rng.pick(V.sofar), { c }));
  });
  lines.push(sub(rng.pick(V.answer), { ans: item.answer }));
  if (rng.chance(0.6 * t)) lines.push(rng.pick(V.recap), ...item.steps, sub(rng.pick(V.confirm), { ans: item.answer }));
  return lines.join('\n');
}

/** The reply after </think>: "#### 42" for math, the exact expected string for chat. */
export function formatAnswer(item: Item): string {
  return item.kind === 'math' ? `#### ${item.answer}` : item.answer;
}

/** The whole assistant turn in Qwen3's thinking layout (empty thinking still keeps the tags). */
export function formatResponse(item: Item, style: TraceStyle, rng: Rng): string {
  return `<think>\n${formatThinking(item, style, rng)}\n</think>\n\n${formatAnswer(item)}`;
}

// ---------------------------------------------------------------------------------------------------------
// Splits

export type Split = 'train' | 'val' | 'test';
/** Item seeds of each split come from disjoint ranges of width 2^30. */
const SEED_BASE: Record<Split, number> = { train: 0, val: 2 ** 30, test: 2 ** 31 };
/** Share of the question space each split owns (by hash of the normalised question). */
const SHARE: Record<Split, number> = { train: 0.8, val: 0.1, test: 0.1 };

/** Lower case, punctuation dropped, spaces collapsed: questions equal under this are duplicates. */
export function questionKey(question: string): string {
  return question.toLowerCase().replace(/[^a-z0-9]+/g, ' ').trim();
}

/**
 * The split a question belongs to, from a seed-independent hash of its normalised text. Every split only
 * keeps questions it owns, so no question can appear in two splits, whatever seeds or sizes were used.
 */
export function splitOf(item: Pick<Item, 'question'> | string): Split {
  const u = hashText(questionKey(typeof item === 'string' ? item : item.question)) / 4294967296;
  return u < SHARE.train ? 'train' : u < SHARE.train + SHARE.val ? 'val' : 'test';
}

/** Refuses a mix with a category it does not know ("hrad") or a weight that is no finite number ≥ 0, by name. */
function checkMix(mix: Mix): void {
  if (!mix || typeof mix !== 'object' || Array.isArray(mix)) throw new Error(`synthetic: mix must be an object of weights by category (easy, medium, hard, chat), got ${JSON.stringify(mix)}`);
  for (const [k, v] of Object.entries(mix)) {
    if (!(k in DIFFICULTY) && k !== 'chat') throw new Error(`synthetic: mix has the category ${JSON.stringify(k)}; the categories are easy, medium, hard and chat`);
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new Error(`synthetic: mix weight of ${k} must be a finite number ≥ 0, got ${JSON.stringify(v)}`);
  }
}

/** The item for one seed: its category drawn from `mix`, then the problem itself. */
export function generateItem(seed: number, itemSeed: number, mix: Mix = DEFAULT_MIX): Item {
  const rng = new Rng(hash32(seed, itemSeed)), id = `${seed}-${itemSeed}`;
  const cat = weighted(rng, mix);
  if (cat === 'chat') return generateChat(rng, { id });
  const d = DIFFICULTY[cat];
  return generateMath(rng, { ops: rng.int(d.minOps, d.maxOps), maxValue: d.maxValue, id, difficulty: cat });
}

/**
 * Train/val/test item arrays. Items come from disjoint seed ranges; a question is kept only by the split that
 * owns it (splitOf), and val/test also drop repeats so each eval question counts once. Train may repeat
 * (small pools such as greetings would otherwise run dry).
 */
export function makeSplits(opts: { train: number; val: number; test: number; seed?: number; mix?: Mix }): Record<Split, Item[]> {
  const seed = opts.seed ?? 0, mix = opts.mix ?? DEFAULT_MIX;
  checkMix(mix);
  const make = (split: Split, n: number): Item[] => {
    const out: Item[] = [], seen = new Set<string>();
    for (let i = 0; out.length < n; i++) {
      if (i >= 2 ** 30) throw new Error(`synthetic: split ${split} ran out of seeds`);
      if (i > 200 * n + 10000) throw new Error(`synthetic: could only find ${out.length} of ${n} distinct ${split} items for mix ${JSON.stringify(mix)}; ask for fewer or widen the mix`);
      const item = generateItem(seed, SEED_BASE[split] + i, mix), key = questionKey(item.question);
      if (splitOf(item) !== split || (split !== 'train' && seen.has(key))) continue;
      seen.add(key); out.push(item);
    }
    return out;
  };
  return { train: make('train', opts.train), val: make('val', opts.val), test: make('test', opts.test) };
}

/** Every fixed string the generator draws words from; vocab.ts turns these into word tokens. */
export const LEXICON_SOURCES: unknown[] = [
  NAMES, PRONOUNS, TOPICS, SHOP_ITEMS, T, COUNTRIES, QUANTITIES, WORDS, WORDS.map(reverse), WORDS.map((w) => w.toUpperCase()),
  GREETINGS, NAMED_GREETINGS, CHAT_T, CHAT_PREFIX, CHAT_SUFFIX, V, CHAT_V, OP_VERB, SYSTEM_PROMPT,
  'Wait, let me make sure. Yes, that is right.',
];
