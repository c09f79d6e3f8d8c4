/**
 * Checking a candidate's written work, with no model at all: the arithmetic a reasoning trace writes out
 * ("18 - 14 = 4", "(3 + 4) * 2 = 14") is recomputed, and the quantities the question gives are looked for among
 * the numbers that work computes with. A small model's wrong candidates mostly show one of the two: a slip
 * (`0 + 6 = 16`), or correct arithmetic on the wrong numbers — a quantity misread or a step skipped leaves one of
 * the question's numbers unused. The "checked" vote (vote.ts) lets only the candidates with the fewest flaws vote.
 *
 * Numbers are read as written in digits ("1,200", "$5", "3.5"); quantities given in words ("twice", "half") are
 * not looked for. `×`, `·`, `\times`, `\cdot`, `x` between digits multiply, `÷` and `\div` divide. A result is
 * right when it equals the computed value to the decimals it is written with (10 / 3 = 3.33 holds).
 */

export interface WorkCheck {
  /** Equations found in the work (an expression with at least one operator, "=", a number). */
  equations: number;
  /** The ones whose written result is not the value of their left side, as written. */
  falseEquations: string[];
  /** The question's numbers (distinct, in order of appearance) that no equation computes with. */
  unusedQuantities: number[];
  /** falseEquations + unusedQuantities: the "checked" vote's ranking (fewer is better). */
  flaws: number;
}

const NUMBER = String.raw`\d+(?:\.\d+)?`;
// The left side of an equation, read back from an "=": operands (a number, perhaps negative, opening or closing
// parentheses) joined by + - * /, within one line, not beginning inside a word or a number. Each space belongs to one place only (no
// backtracking through the ways of splitting it), and it is looked for only in the run of expression characters
// before each "=", at most MAX_EXPRESSION of them, so a long trace is checked in linear time.
const OPERAND = String.raw`\(*-?${NUMBER}\)*`;
const LEFT = new RegExp(String.raw`(?<![\w.])${OPERAND}(?:[ \t]*[-+*/][ \t]*${OPERAND})+[ \t]*$`);
const RESULT = new RegExp(String.raw`^[ \t]*(-?${NUMBER})`);
const EXPRESSION_CHAR = /[\d. \t+\-*/()]/;
/** Longer left sides are not checked (nor parsed: the parser recurses once per parenthesis). */
const MAX_EXPRESSION = 200;

/** One spelling for operators and numbers: `×` → `*`, "1,200" → "1200", no "$". */
function normalise(text: string): string {
  return text
    .replace(/\\times|\\cdot|[×·∗]/g, '*').replace(/\\div|÷/g, '/')
    .replace(/(\d)[ \t]*x[ \t]*(?=\d)/g, '$1 * ')
    .replace(/(\d),(?=\d{3}(?!\d))/g, '$1')
    .replace(/\\?\$/g, '');
}

const numbersIn = (text: string): number[] => (text.match(new RegExp(`(?<![\\w.])${NUMBER}`, 'g')) ?? []).map(Number);

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
  const falseEquations: string[] = [], operands = new Set<number>();
  let equations = 0;
  const text = normalise(work);
  for (let at = text.indexOf('='); at >= 0; at = text.indexOf('=', at + 1)) {
    let from = at; // back over what an expression may hold, at most MAX_EXPRESSION characters
    while (from > 0 && at - from <= MAX_EXPRESSION && EXPRESSION_CHAR.test(text[from - 1])) from--;
    if (at - from > MAX_EXPRESSION) continue;
    // With the character before it, which the expression must not begin right after (a letter: "x2 + 3").
    const found = LEFT.exec(text.slice(Math.max(0, from - 1), at)), result = RESULT.exec(text.slice(at + 1, at + 1 + 64));
    if (!found || !result) continue;
    let left = found[0].trim();
    // Parentheses the sentence opened or closed around the equation are not part of it.
    while (left.startsWith('(') && evaluate(left) === undefined) left = left.slice(1).trim();
    while (left.endsWith(')') && evaluate(left) === undefined) left = left.slice(0, -1).trim();
    const value = evaluate(left);
    if (value === undefined) continue;
    equations++;
    for (const x of numbersIn(left)) operands.add(x);
    if (!holds(value, result[1])) falseEquations.push(`${left} = ${result[1]}`);
  }
  const unusedQuantities = [...new Set(numbersIn(normalise(question)))].filter((x) => !operands.has(x));
  return { equations, falseEquations, unusedQuantities, flaws: falseEquations.length + unusedQuantities.length };
}
