/**
 * Checking a candidate's written work, with no model at all: the arithmetic a reasoning trace writes out
 * ("18 - 14 = 4", "(3 + 4) * 2 = 14") is recomputed, and the quantities the question gives are looked for in the
 * lines of the work that compute (those with an "=" or "≈"). A small model's wrong candidates mostly show one of the two:
 * a slip (`0 + 6 = 16`), or correct arithmetic on the wrong numbers — a quantity misread or a step skipped leaves
 * one of the question's numbers unused. The "checked" vote (vote.ts) lets only the candidates with the fewest
 * flaws vote.
 *
 * Only what is surely arithmetic is checked, so that right work is not called wrong: numbers written in digits
 * ("1,200", "$5", "3.5"; not "twice" or "half"); an equation of numbers alone, within one line, not continuing a
 * product or fraction written before it ("9 hours * 2/3 = 6", "27(1/3) = 9", "15 pages x 1/3 = 5") and with a
 * plain number after its "=" (not "= 240g/5", "= 50%", "= 3 1/2", "= 2x"). `×`, `·`, `⋅`, `\times`, `\cdot`, `x`
 * between numbers multiply, `÷` and `\div` divide, `−` and a spaced `–` subtract (an unspaced one is a range). A
 * result is right when it equals the computed value to the decimals it is written with (10 / 3 = 3.33 holds). On
 * GSM8K's 1,319 reference solutions it checks 3,260 equations and calls 2 false, both wrong in the reference; 101 of
 * the solutions leave a quantity unused (one the answer does not need, or one used in words): there every candidate
 * that rightly leaves it out carries that flaw, and one that computes with it has one fewer (test/reason.test.ts).
 */

export interface WorkCheck {
  /** Equations found in the work (an expression with at least one operator, "=", a number). */
  equations: number;
  /** The ones whose written result is not the value of their left side, as written. */
  falseEquations: string[];
  /**
   * The question's quantities (distinct, as written, in order of appearance: "12", "25%", "1/4") that no line of the
   * work with an "=" or "≈" has, in any spelling (25% as 25, 0.25, 1.25, 0.75, 125, 75 or 4; 1/4 as 1/4, 0.25 or 4).
   */
  unusedQuantities: string[];
  /** falseEquations + unusedQuantities: the "checked" vote's ranking (fewer is better). */
  flaws: number;
}

const NUMBER = String.raw`(?:\d+(?:\.\d+)?|\.\d+)`;
// The left side of an equation, read back from an "=": operands (a number, perhaps negative, opening or closing
// parentheses) joined by + - * /, within one line, not beginning inside a word or a number. Each space belongs to
// one place only (no backtracking through the ways of splitting it), and it is looked for only in the run of
// expression characters before each "=", at most MAX_EXPRESSION of them, so a long trace is checked in linear time.
const OPERAND = String.raw`\(*-?${NUMBER}\)*`;
const NOT_INSIDE = String.raw`(?<![\w.])(?<!\d:)`; // not inside a word, a number or a clock time ("9:30")
const LEFT = new RegExp(String.raw`${NOT_INSIDE}${OPERAND}(?:[ \t]*[-+*/][ \t]*${OPERAND})+[ \t]*$`);
// A plain number, perhaps with a scale word ("= 1.2 million", "= 7 dozen": either scale of the value holds): not the
// numerator of a fraction or of a unit ("240g/5"), a percentage, a power ("5^2", "5²"), the first term of an
// expression ("= 8 + 18 = 26"), a mixed number or space-separated thousands ("3 1/2", "12 000"), a coefficient or a
// one-letter suffix ("2x", "3k"; "150kg" is read). A result followed by "?" is a trial ("16 - 7 = 8? No: 16 - 7 =
// 9"), by ":" a clock time.
const SCALES: Record<string, number> = { dozen: 12, hundred: 100, thousand: 1e3, million: 1e6, billion: 1e9, trillion: 1e12 };
const RESULT = new RegExp(String.raw`^[ \t]*(-?${NUMBER})(?:[ \t]*(${Object.keys(SCALES).join('|')})\b)?(?![ \t]*[\d/%^*+?-]|[(:²³¹⁰⁴-⁹]|[a-zA-Z](?![a-zA-Z])|[a-zA-Z]+/)`, 'i');
// What may not come right before an equation's left side: it would continue a product, fraction or root written before it.
const CONTINUES = /(?:[-+*/^(\d.)√∛∜]|\b(?:x|of|times|by|per))[ \t]*$/i;
const BULLET = /^[ \t]*[-*+][ \t]+$/; // a list item's mark at the start of its line
const EXPRESSION_CHAR = /[\d. \t+\-*/()]/;
const PLAIN = new RegExp(String.raw`^[ \t]*${NUMBER}[ \t]*$`); // a number alone
/** Longer left sides are not checked (nor parsed: the parser recurses once per parenthesis). */
const MAX_EXPRESSION = 200;

/**
 * One spelling for operators and numbers: `×` → `*`, "1,200" → "1200", no "$"; LaTeX and Markdown as plain text
 * (`\frac{48}{2}` → "48/2", `\boxed{72}` → "72", `\text{ apples}` → " apples ", `\(`…`\)` and "**" bold marks
 * dropped), as instruction-tuned models write their work.
 */
function normalise(text: string): string {
  let t = text.replace(/(\d)[ \t]*(\\[dt]?frac\{)/g, '$1 $2'); // 2\frac{1}{2}: a mixed number, 2 1/2
  for (let i = 0; i < 3 && /\\[dt]?frac\{/.test(t); i++) { // innermost first: a fraction of fractions in three passes
    t = t.replace(/\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}/g, (_, a: string, b: string) => (PLAIN.test(a) && PLAIN.test(b) ? `${a.trim()}/${b.trim()}` : `(${a})/(${b})`));
  }
  return t
    .replace(/\\(?:boxed|text|textbf|textrm|mathrm|mathbf|mbox|operatorname)\{([^{}]*)\}/g, ' $1 ')
    .replace(/\\(?:left|right)(?=[()[\]])|\\[()[\]]/g, ' ').replace(/\\%/g, '%')
    .replace(/\*\*(?![ \t]*\d)|(?<![\d][ \t]*)\*\*/g, '') // bold marks, not a power between numbers ("2**3")
    .replace(/\\times|\\cdot|[×·∗⋅∙]/g, '*').replace(/\\div|÷/g, '/').replace(/\\approx|≃/g, '≈')
    .replace(/(\d)–(?=\d)/g, '$1 to ').replace(/[–−]/g, '-') // an unspaced en dash joins a range ("2015–2020"), not a subtraction
    .replace(/(\d\)?)[ \t]*x[ \t]*(?=\(?\d)/g, '$1 * ')
    .replace(/(\d)(?:,|\{,\}|\\,|[\u00a0\u2009\u202f])(?=\d{3}(?!\d))/g, '$1') // 1,200 1{,}200 1\,200, no-break and thin spaces
    .replace(/\\?\$/g, '');
}

/** Numbers written in digits, not a clock time's parts ("1:00"). */
const numbersIn = (text: string): number[] => (text.match(new RegExp(`${NOT_INSIDE}${NUMBER}(?!:\\d)`, 'g')) ?? []).map(Number);
/** Fractions and mixed numbers written ("3/4", "2 1/2"), with their parts' values. */
const FRACTION = new RegExp(String.raw`${NOT_INSIDE}(?:(\d+)[ \t]+)?(${NUMBER})[ \t]*/[ \t]*(${NUMBER})`, 'g');

/**
 * The question's quantities as written, each with the ways its use may show (any one number of a list, or all of
 * them): a percentage p% also as p/100, 1 ± p/100 and 100 ± p ("25% more" is × 1.25 or 125%), and 100/p where that is
 * whole (50% as ÷ 2); a fraction a/b as its value or as a
 * and b (16 / 8 * 5 for 5/8 of 16), 1/b also as b (divided by b); a mixed number as its value or as its parts.
 * Ordinals ("3rd") are no quantities, nor are a clock time's parts.
 */
function quantities(question: string): { written: string; as: number[]; all: number[] }[] {
  const out = new Map<string, { as: number[]; all: number[] }>();
  const q = normalise(question);
  const fractions = [...q.matchAll(FRACTION)];
  for (const m of fractions) {
    const whole = m[1] === undefined ? 0 : Number(m[1]), a = Number(m[2]), b = Number(m[3]);
    out.set(m[0].trim().replace(/[ \t]*\/[ \t]*/, '/'), { as: [whole + a / b, ...(a === 1 && !whole ? [b] : [])], all: whole ? [whole, a, b] : [a, b] });
  }
  const covered = new Uint8Array(q.length); // the places a fraction covers
  for (const m of fractions) covered.fill(1, m.index, m.index + m[0].length);
  const inFraction = (i: number) => covered[i] === 1;
  for (const m of q.matchAll(new RegExp(`${NOT_INSIDE}(${NUMBER})(%)?(?![:/]\\d|[ \\t]*/[ \\t]*\\d|st\\b|nd\\b|rd\\b|th\\b)`, 'g'))) {
    if (inFraction(m.index)) continue;
    const a = Number(m[1]);
    out.set(m[0], { as: m[2] ? [a, a / 100, 1 + a / 100, 1 - a / 100, 100 + a, 100 - a, ...(Number.isInteger(100 / a) ? [100 / a] : [])] : [a], all: [] });
  }
  return [...out].map(([written, v]) => ({ written, ...v }));
}

/** The last question's quantities: every sample of a vote is checked against the same question. */
let last: { question: string; quantities: ReturnType<typeof quantities> } | undefined;
function quantitiesOf(question: string): ReturnType<typeof quantities> {
  if (last?.question !== question) last = { question, quantities: quantities(question) };
  return last.quantities;
}

/** The value of an expression of numbers, + - * / and parentheses (undefined when it does not parse). */
function evaluate(expr: string): number | undefined {
  const tokens = expr.match(new RegExp(`${NUMBER}|[-+*/()]`, 'g')) ?? [];
  let at = 0;
  const primary = (): number | undefined => {
    const t = tokens[at++];
    if (t === '-') { const v = primary(); return v === undefined ? undefined : -v; }
    if (t === '(') { const v = sum(); return tokens[at++] === ')' ? v : undefined; }
    return t !== undefined && /\d/.test(t) ? Number(t) : undefined;
  };
  const product = (): number | undefined => {
    let v = primary();
    while (v !== undefined && (tokens[at] === '*' || tokens[at] === '/')) {
      const op = tokens[at++], r = primary();
      v = r === undefined ? undefined : op === '*' ? v * r : v / r;
    }
    return v;
  };
  const sum = (): number | undefined => {
    let v = product();
    while (v !== undefined && (tokens[at] === '+' || tokens[at] === '-')) {
      const op = tokens[at++], r = product();
      v = r === undefined ? undefined : op === '+' ? v + r : v - r;
    }
    return v;
  };
  const v = sum();
  return at === tokens.length ? v : undefined;
}

/**
 * Whether `written` is `value` to the decimals it is written with; after a division also rounded down or up to them
 * (19 / 5 = 3 full boxes, 25 / 6 = 5 buses, 2 / 3 = 0.66).
 */
function holds(value: number, written: string, divides: boolean): boolean {
  const decimals = written.split('.')[1]?.length ?? 0, w = Number(written), eps = 1e-9 * Math.max(1, Math.abs(value));
  if (Math.abs(value - w) <= 0.5 * 10 ** -decimals + eps) return true;
  const f = 10 ** decimals;
  return divides && (Math.abs(Math.floor(value * f) / f - w) <= eps || Math.abs(Math.ceil(value * f) / f - w) <= eps);
}

/** Checks the work (what a candidate wrote) against the question it answers. */
export function checkWork(question: string, work: string): WorkCheck {
  const falseEquations: string[] = [];
  let equations = 0;
  const text = normalise(work);
  for (let at = text.indexOf('='); at >= 0; at = text.indexOf('=', at + 1)) {
    let from = at; // back over what an expression may hold, at most MAX_EXPRESSION characters
    while (from > 0 && at - from <= MAX_EXPRESSION && EXPRESSION_CHAR.test(text[from - 1])) from--;
    if (at - from > MAX_EXPRESSION) continue;
    // With the character before it, which the expression must not begin right after (a letter: "x2 + 3").
    const before = text.slice(Math.max(0, from - 1), at), found = LEFT.exec(before), result = RESULT.exec(text.slice(at + 1, at + 1 + 64));
    if (!found || !result) continue;
    // The 40 characters before it on its line (a bullet's "- " may open the line).
    const start = Math.max(0, from - 1) + found.index, window = text.slice(Math.max(0, start - 40), start), nl = window.lastIndexOf('\n');
    const prefix = nl >= 0 ? window.slice(nl + 1) : window;
    if (CONTINUES.test(prefix) && !BULLET.test(prefix)) continue;
    let left = found[0].trim();
    // Parentheses the sentence opened or closed around the equation are not part of it.
    const opened = (left.match(/\(/g) ?? []).length - (left.match(/\)/g) ?? []).length;
    if (opened > 0) left = left.replace(new RegExp(`^(?:\\([ \\t]*){1,${opened}}`), '');
    if (opened < 0) left = left.replace(new RegExp(`(?:[ \\t]*\\)){1,${-opened}}$`), '');
    const value = evaluate(left);
    if (value === undefined) continue;
    equations++;
    const scale = result[2] ? SCALES[result[2].toLowerCase()] : 1, divides = left.includes('/');
    if (!holds(value, result[1], divides) && !holds(value / scale, result[1], divides)) falseEquations.push(`${left.replace(/[ \t]+/g, ' ')} = ${result[0].trim()}`);
  }
  const computing = text.split('\n').filter((line) => /[=≈]/.test(line));
  // Values to 12 significant digits, so that 0.1 + 0.2 is the question's 0.3 (a set: a long work is looked up in linear time).
  const key = (x: number) => Number(x.toPrecision(12)), used = new Set(computing.flatMap(numbersIn).map(key));
  for (const line of computing) for (const m of line.matchAll(FRACTION)) used.add(key((m[1] === undefined ? 0 : Number(m[1])) + Number(m[2]) / Number(m[3]))); // its value
  const isUsed = (x: number) => used.has(key(x));
  const unusedQuantities = quantitiesOf(question).filter((q) => !q.as.some(isUsed) && !(q.all.length && q.all.every(isUsed))).map((q) => q.written);
  return { equations, falseEquations, unusedQuantities, flaws: falseEquations.length + unusedQuantities.length };
}

/** A sample's work is all it wrote: its thinking and its answer. */
export const checkSample = (question: string, sample: { thinking: string; answer: string }): WorkCheck => checkWork(question, `${sample.thinking}\n${sample.answer}`);
