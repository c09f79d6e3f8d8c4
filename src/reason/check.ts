/**
 * Checking a candidate's written work, with no model at all: the arithmetic a reasoning trace writes out
 * ("18 - 14 = 4", "(3 + 4) * 2 = 14") is recomputed, and the quantities the question gives are looked for in the
 * lines of the work that compute (those with an "="). A small model's wrong candidates mostly show one of the two:
 * a slip (`0 + 6 = 16`), or correct arithmetic on the wrong numbers — a quantity misread or a step skipped leaves
 * one of the question's numbers unused. The "checked" vote (vote.ts) lets only the candidates with the fewest
 * flaws vote.
 *
 * Only what is surely arithmetic is checked, so that right work is not called wrong: numbers written in digits
 * ("1,200", "$5", "3.5"; not "twice" or "half"); an equation of numbers alone, within one line, not continuing a
 * product or fraction written before it ("9 hours * 2/3 = 6", "27(1/3) = 9", "15 pages x 1/3 = 5") and with a
 * plain number after its "=" (not "= 240g/5", "= 50%", "= 3 1/2"). `×`, `·`, `\times`, `\cdot`, `x` between
 * numbers multiply, `÷` and `\div` divide, `–` and `−` subtract. A result is right when it equals the computed value
 * to the decimals it is written with (10 / 3 = 3.33 holds). On GSM8K's 1,319 reference solutions it checks 3,261
 * equations and calls 2 false, both wrong in the reference; 106 of the solutions leave a quantity unused (one the
 * answer does not need, or one used in words) — such a question counts against every candidate alike (tested).
 */

export interface WorkCheck {
  /** Equations found in the work (an expression with at least one operator, "=", a number). */
  equations: number;
  /** The ones whose written result is not the value of their left side, as written. */
  falseEquations: string[];
  /**
   * The question's quantities (distinct, as written, in order of appearance: "12", "25%", "1/4") that no line of the
   * work with an "=" has, in any spelling (25% as 25, 0.25, 1.25 or 0.75; 1/4 as 1/4, 0.25 or 4).
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
const LEFT = new RegExp(String.raw`(?<![\w.])${OPERAND}(?:[ \t]*[-+*/][ \t]*${OPERAND})+[ \t]*$`);
// A plain number: not the numerator of a fraction or of a unit ("240g/5"), a percentage, a power, the first term of
// an expression ("= 8 + 18 = 26"), a mixed number or space-separated thousands ("3 1/2", "12 000").
const RESULT = new RegExp(String.raw`^[ \t]*(-?${NUMBER})(?![ \t]*[\d/%^*+-]|\(|[a-zA-Z]+/)`);
// What may not come right before an equation's left side: it would continue a product or fraction written before it.
const CONTINUES = /(?:[-+*/^(\d.)]|\b(?:x|of|times|by|per))[ \t]*$/i;
const BULLET = /^[ \t]*[-*+][ \t]+$/; // a list item's mark at the start of its line
const EXPRESSION_CHAR = /[\d. \t+\-*/()]/;
/** Longer left sides are not checked (nor parsed: the parser recurses once per parenthesis). */
const MAX_EXPRESSION = 200;

/** One spelling for operators and numbers: `×` → `*`, "1,200" → "1200", no "$". */
function normalise(text: string): string {
  return text
    .replace(/\\times|\\cdot|[×·∗]/g, '*').replace(/\\div|÷/g, '/').replace(/[–−]/g, '-')
    .replace(/(\d\)?)[ \t]*x[ \t]*(?=\(?\d)/g, '$1 * ')
    .replace(/(\d),(?=\d{3}(?!\d))/g, '$1')
    .replace(/\\?\$/g, '');
}

/** Numbers written in digits, not a clock time's parts ("1:00"). */
const numbersIn = (text: string): number[] => (text.match(new RegExp(`(?<![\\w.:])${NUMBER}(?!:\\d)`, 'g')) ?? []).map(Number);

/**
 * The question's quantities as written, each with the numbers that count as its use: a percentage p% also as p/100
 * and 1 ± p/100 ("25% more" is × 1.25), a fraction a/b as its value (1/b also as b: divided by b).
 */
function quantities(question: string): { written: string; as: number[] }[] {
  const out = new Map<string, number[]>();
  for (const m of normalise(question).matchAll(new RegExp(`(?<![\\w.:/])(${NUMBER})(?:[ \\t]*/[ \\t]*(${NUMBER}))?(%)?(?![:/]\\d)`, 'g'))) {
    const a = Number(m[1]), b = m[2] === undefined ? undefined : Number(m[2]);
    const written = m[0].replace(/[ \t]/g, '');
    if (b !== undefined) out.set(written, a === 1 ? [a / b, b] : [a / b]); // 1/4 of it: × 0.25, or divided by 4
    else out.set(written, m[3] ? [a, a / 100, 1 + a / 100, 1 - a / 100] : [a]);
  }
  return [...out].map(([written, as]) => ({ written, as }));
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

/** Whether `written` is `value` to the decimals it is written with. */
function holds(value: number, written: string): boolean {
  const decimals = written.split('.')[1]?.length ?? 0;
  return Math.abs(value - Number(written)) <= 0.5 * 10 ** -decimals + 1e-9 * Math.max(1, Math.abs(value));
}

/** Checks the work (a candidate's thinking) against the question it answers. */
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
    const lineStart = text.lastIndexOf('\n', from + found.index - 1) + 1;
    const prefix = text.slice(Math.max(lineStart, from - 40), Math.max(0, from - 1) + found.index);
    if (CONTINUES.test(prefix) && !BULLET.test(prefix)) continue;
    let left = found[0].trim();
    // Parentheses the sentence opened or closed around the equation are not part of it.
    while (left.startsWith('(') && evaluate(left) === undefined) left = left.slice(1).trim();
    while (left.endsWith(')') && evaluate(left) === undefined) left = left.slice(0, -1).trim();
    const value = evaluate(left);
    if (value === undefined) continue;
    equations++;
    if (!holds(value, result[1])) falseEquations.push(`${left} = ${result[1]}`);
  }
  const computing = text.split('\n').filter((line) => line.includes('='));
  const used = new Set(computing.flatMap(numbersIn));
  for (const line of computing) for (const m of line.matchAll(new RegExp(`(${NUMBER})[ \\t]*/[ \\t]*(${NUMBER})`, 'g'))) used.add(Number(m[1]) / Number(m[2])); // a fraction written
  const isUsed = (x: number) => used.has(x) || [...used].some((u) => Math.abs(u - x) <= 1e-9 * Math.max(1, Math.abs(x)));
  const unusedQuantities = quantities(question).filter((q) => !q.as.some(isUsed)).map((q) => q.written);
  return { equations, falseEquations, unusedQuantities, flaws: falseEquations.length + unusedQuantities.length };
}
