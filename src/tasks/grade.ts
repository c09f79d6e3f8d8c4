/**
 * Answer extraction and grading, shared by eval, RL rewards and majority voting (one grader, no copies).
 *
 * - gsm8k / svamp / asdiv / aime24 / amc23: numeric. The answer is the last one stated — a "####" line, an
 *   "answer is" / "answer:" phrase, a \boxed{} (which a later "answer is" that starts with words, a check, does not replace) — else
 *   the last number in the text; a hedged value ("18 or 19", "at least 18") is no answer; "$" and thousands commas are ignored, LaTeX is read as MATH answers are, values
 *   compare numerically. ASDiv also has non-numeric golds (names, "3:4", "3:30 p.m.", compared as case-folded
 *   strings; a time without "a.m."/"p.m." also matches one with) and ordinals ("6th", compared as numbers).
 * - math500: the last \boxed{...} (else the last answer stated), normalised (LaTeX spacing, \left/\right, units, degrees, percent, \dfrac,
 *   shorthand fractions); equal if the strings match, or both are numbers and equal, or both are tuples /
 *   intervals / lists whose elements are equal one by one, or both are expressions of the same value (sameValue).
 * - synthetic: math golds need the fixed "#### n" line, the number alone; chat golds must match exactly after trimming.
 *
 * Text after the last </think> is graded when the model wrote a think block.
 */
import { shown } from '../show.ts';
import { callsKey, parseToolCalls } from '../tokenizer/tool-calls.ts';

export type Task = 'gsm8k' | 'svamp' | 'asdiv' | 'aime24' | 'amc23' | 'math500' | 'synthetic';
export const TASKS: readonly Task[] = ['gsm8k', 'svamp', 'asdiv', 'aime24', 'amc23', 'math500', 'synthetic'];

/** The reply proper: whatever follows the last </think> (thinking may contain trial answers). */
function reply(text: string): string {
  const i = text.lastIndexOf('</think>');
  // A Unicode minus is a minus; LaTeX's "{,}" (10{,}080) a thousands comma.
  return (i < 0 ? text : text.slice(i + '</think>'.length)).replace(/\u2212/g, '-').replace(/\{,\}/g, ',');
}

// ---------------------------------------------------------------------------------------------------------
// Numbers

// a minus sign counts only where it cannot be subtraction ("16-3" holds 16 and 3); "5/2" is one number, also before a full stop
const NUMBER = /(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\/\d+(?!\d|\.\d))?|(?<![\w.])-?\.\d+/g;

/** A plain number, allowing "$", thousands commas, a trailing "%" or ".", a unit in parentheses, "a/b" and "-(a/b)". */
export function parseNumber(s: string): number | undefined {
  let t = s.trim().replace(/(?<!\s)\s*\(([^()]*)\)$/, (all, inner: string) => (/[A-Za-z]/.test(inner) ? '' : all)) // "9 (apples)"
    .replace(/\\?\$/g, '').replace(/(\d),(?=\d{3}\b)/g, '$1').replace(/[.%]$/, '').trim();
  const neg = /^-\((.*)\)$/.exec(t); // "-(1/3)"
  if (neg) t = '-' + neg[1];
  if (/^-?(\d+(\.\d+)?|\.\d+)$/.test(t)) return Number(t);
  const frac = /^(-?\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)$/.exec(t); // "10 / 2" is a division left unworked (UNWORKED), no number
  if (frac && Number(frac[2]) !== 0) return Number(frac[1]) / Number(frac[2]);
  return undefined;
}

/** Canonical text of a number, so voting can group equal answers by string: a plain decimal (never "1e+21"). */
const numberKey = (x: number) => Number(x.toPrecision(15)).toLocaleString('en-US', { useGrouping: false, maximumFractionDigits: 20 });
// tight enough that 1450001 != 1450000, loose enough for float noise and 15-digit voting keys
const close = (x: number, y: number) => Math.abs(x - y) <= 1e-12 * Math.max(1, Math.abs(x), Math.abs(y));

function lastNumber(text: string): number | undefined {
  const all = text.match(NUMBER);
  return all ? parseNumber(all[all.length - 1]) : undefined;
}
/** The last ratio or clock time written ("3:4", "3 : 4", "3:30 p.m."), when no digit follows it; else undefined. */
function lastRatio(text: string): string | undefined {
  // "3:4" or "3 : 4", not a label "day 2: 8"
  const all = [...text.matchAll(/(?<!\d)\d+(?::|\s:\s)\d+(?:\s*[ap]\.?\s?m\b\.?)?/gi)], m = all.at(-1);
  if (!m) return undefined;
  return /\d/.test(text.slice(m.index! + m[0].length)) ? undefined : m[0];
}
function firstNumber(text: string): number | undefined {
  const m = text.match(NUMBER);
  return m ? parseNumber(m[0]) : undefined;
}

/**
 * The answer a model states explicitly, and where: the last of a "####" line that holds a number (not a
 * markdown heading), an "answer is" / "answer:" phrase that holds a number or a box, and a \boxed{}; undefined
 * when there is none. An "answer is" phrase keeps its box if it has one, else its sentence after the last "="
 * ("the answer is 5 + 3 = 8.").
 */
function statedAnswer(text: string, needNumber = true): { phrase: string; boxed: boolean } | undefined {
  // `lead`: an answer that starts with its value ("the answer is 27"), not with words ("the answer is consistent with …")
  const found: { at: number; phrase: string; boxed: boolean; lead: boolean }[] = [];
  for (const m of text.matchAll(/####[ \t]*([^\n]*)/g)) { // a number, perhaps with a unit word: not "#### 2. Subtract"
    const line = m[1].trim();
    if (/^\$?-?\(?\.?\d/.test(line) ? !HEADING.test(line) : HEDGED.test(line) || (!needNumber && line && !/\d/.test(text.slice(m.index! + m[0].length)))) { // "#### not 18": stated, and hedged
      found.push({ at: m.index!, phrase: line, boxed: false, lead: true }); // "-(1/3)"; an ASDiv "#### Yes" as the last word
    }
  }
  // "answer is" anywhere, but not "this answer is 2 more than …"; "answer:" only where a line starts with it ("Final Answer:", "**Answer:**")
  for (const m of text.matchAll(/(?<!\b(?:this|that|which|each|an|one)\s+)\banswer\s+is\**:?\s*(?=([^\n]*))|(?:^|\n)[ \t*#]*(?:final\s+)?answer\s*\**:\**\s*([^\n]*)/gi)) {
    const rest = (m[1] ?? m[2]).replace(/^(?:the\s+)?(?:final\s+)?answer\s+is\**:?\s*/i, '') // Minerva's "Final Answer: The final answer is … I hope it is correct."
      .replace(/(?:\.|(?<![.\s]))\s*I hope it is correct\.?\s*$/i, '');
    if (COMPARISON.test(rest)) continue; // "the answer is 2 more than yesterday's": a comparison, not the value
    const box = lastBoxed(rest);
    // the sentence only, once it holds a number ("5 + 3 = 8. Next, ..."; but "Mrs. Hilt" stays whole)
    const cut = [...rest.matchAll(/\.\s+(?=[A-Z])/g)].find((d) => /\d/.test(rest.slice(0, d.index)));
    let phrase = box ?? (cut ? rest.slice(0, cut.index) : rest);
    // a worked expression states its result after the last "=" ("5 + 3 = 8"); "18 (= 9 × 2)" does not
    const eq = phrase.indexOf('=');
    if (box === undefined && eq >= 0 && (WORKED.test(phrase.slice(0, eq)) || WORKED.test(phrase.slice(0, eq).replace(/^.*:\s/, '')))) phrase = phrase.slice(phrase.lastIndexOf('=') + 1);
    // and so does "…, which is 5" after an expression ("1/2 of 10, which is 5"), not after one answer ("18, which is 9 + 9")
    const which = box === undefined ? [...phrase.matchAll(/\b(?:which|that)\s+(?:is|equals|gives|makes)\b/gi)].at(-1) : undefined;
    const before = which && phrase.slice(0, which.index).trim();
    if (which && /\d/.test(phrase.slice(which.index! + which[0].length)) && !(/^\$?-?\d/.test(before!) && before!.match(NUMBER)?.length === 1)) {
      phrase = phrase.slice(which.index! + which[0].length);
    }
    phrase = phrase.replace(/\*+/g, '').trim();
    // a phrase without a number (an ASDiv name) only when no number is written after it
    const ok = /\d/.test(phrase) || (!needNumber && !/\d/.test(text.slice(m.index! + m[0].length)));
    if (phrase && ok) found.push({ at: m.index!, phrase, boxed: box !== undefined, lead: box !== undefined || /^[\s*]*(?:\$|\\\(|\\\[)?\s*-?\.?\d/.test(rest) });
  }
  const boxed = lastBox(text);
  if (boxed) found.push({ at: boxed.at, phrase: boxed.content, boxed: true, lead: true });
  // A box outranks an "answer is" after it that starts with words, a check ("the answer is consistent with 16 - 3 - 4 =
  // 9"); a later answer that starts with its value ("So the answer is 27.", "Final Answer: 27") is a correction.
  const boxAt = boxed?.at ?? Infinity;
  // A phrase without a number after one with a number is a remark on it ("The answer is 9.\nThe answer is correct."), not an ASDiv name.
  const firstWithNumber = Math.min(...found.filter((f) => /\d/.test(f.phrase)).map((f) => f.at));
  const last = found.filter((f) => (f.lead || f.at < boxAt) && !(f.at > firstWithNumber && !/\d/.test(f.phrase))).sort((x, y) => x.at - y.at).at(-1);
  return last && { phrase: last.phrase, boxed: last.boxed };
}

/**
 * A worked expression before "=": its first number starts an operation, perhaps after words and with units
 * ("5 + 3", "(16 - 7) * 2", "2(3 + 4)", "she has 16 - 3", "5 hours * 60", "20% of 50", "12 \times 3", "20 minus 2"), or a
 * multiple of a number in words ("half of 36", "twice 9"), or LaTeX ("\frac{36}{2}"), also after a colon ("3 days
 * later: 5 + 3"); not an answer followed by its reason ("18 because 16 - 3 - 4 = 9", "18, then 18/2 = 9").
 */
const WORKED = /^(?:[^\d]*\d[\d,.]*(?:\s*%|\s+[A-Za-z]+(?:\/[A-Za-z]+)?){0,2}\s*(?:(?:[-+*/×÷^·]|\\(?:times|cdot|div)\b|\b(?:x|times|of|plus|minus|(?:divided|multiplied)\s+by)\b)\s*\(?|\()-?\$?\d|[^\d]*\b(?:[Hh]alf|[Tt]wice|[Dd]ouble|[Tt]riple|[Tt]hrice)\s+(?:of\s+)?\$?\d|[^\d]*\\(?:[dt]?frac|sqrt)\b)/;

/** A value compared with another ("2 dollars more than", "3 fewer than"): what follows "answer is" in a remark, not an answer. */
const COMPARISON = /^[\s*$]*-?[\d.,]+\s+(?:[A-Za-z]+\s+)?(?:more|less|fewer|greater|higher|lower|larger|smaller|bigger)\s+than\b/i;

/**
 * A numbered markdown heading on a "####" line ("#### 2. Money", "#### 1) **Eggs**", "#### 2 - Money"), not an answer
 * ("#### 18 - that is her income", "#### 18. (9 eggs x $2)", "#### 18) 9 eggs times 2").
 */
const HEADING = /^\d+(?:[.)]\s+[A-Za-z*`$]|:\s+[A-Za-z]|\s+[-–]\s+(?:[A-Z`]|\*\*[A-Z]))/;

/** A phrase that starts with an operation between numbers (a fraction "1/2" is one number): an unworked expression. */
const UNWORKED = /^[^\d]*\d[\d,.]*\s*(?:[-+*×÷^·]|\/(?=\s)|\s\/|\\(?:times|cdot|div)\b|\bx\b)\s*\(?-?\$?\d/;

/** A ratio or clock time ("3:4", "5:45 p.m."): an answer of its own, not the number before its colon. */
const isRatioOrTime = (s: string) => /^\d+\s*:\s*\d+/.test(s.trim());

/**
 * The numeric value of a stated answer, undefined when it is not a number: LaTeX goes through the MATH
 * normaliser ("\frac{3}{4}" is 0.75, "3\sqrt{3}" is no number); plain text may carry words ("18 dollars").
 */
function statedNumber(s: { phrase: string; boxed: boolean }): number | undefined {
  const direct = parseNumber(s.phrase);
  if (direct !== undefined) return direct;
  if (s.boxed || s.phrase.includes('\\')) {
    const t = normalizeMath(s.boxed ? s.phrase : mathSpan(s.phrase)!), n = latexNumber(t) ?? latexNumber(t.replace(/^\((.+)\)$/, '$1')); // AIME's "\textbf{(113)}"
    // unboxed LaTeX that is not one value ("\(18\) dollars"): its first number, unless it is a fraction, root or power
    if (n !== undefined || s.boxed || /\\(?:frac|sqrt)|\^/.test(s.phrase)) return n;
  }
  // An expression left unworked ("12 - 3", "3 × 4 dollars") is no number; "18 (= 9 × 2)", "18 = 9 + 9" and
  // "8 because 5 + 3 is 8" are 18 and 8.
  return isRatioOrTime(s.phrase) || UNWORKED.test(s.phrase) || HEDGED.test(s.phrase) ? undefined : firstNumber(s.phrase);
}

/**
 * A stated value that is hedged or qualified: "18 or 19", "18 to 19", "18–19", "between 18 and 19", "not 18", "at least
 * 18", "18 or more", "nearly 18" — no one value, graded as none (a reward for "18 or 19" when 18 is right would pay hedging).
 * After a comma, "or" restates the value ("0.5, or 50%"; "18, or 2 * 9"); "approximately 18" states 18, as the references read it.
 */
const HEDGED = /^(?:[^\d]*?\b(?:not|no|either|between|nearly|almost|over|under|at\s+(?:least|most)|(?:more|less|fewer)\s+than)\s+[$\\(]*-?\.?\d|[^\d]*\d(?:[\d.,]*\d)?(?:\s+[A-Za-z]+)?\s*(?:(?:or|to|and)\s+\$?-?\.?\d|[–—]\s*\$?\d|-\s*\$?\d|or\s+(?:more|less|fewer|so)\b))/i;

// ---------------------------------------------------------------------------------------------------------
// LaTeX answers (MATH)

/** Contents of the last \boxed{...} (nested braces allowed) or \boxed x / \fbox{...}; undefined if none. */
export function lastBoxed(text: string): string | undefined { return lastBox(text)?.content; }

/**
 * The last box with something in it, and where it begins: an empty one ("put your answer within \boxed{}", echoed
 * after the answer) or a mention of the word ("\boxed.") is passed over for the one before it; a box the model
 * stopped in the middle of is none (what it was writing is no answer).
 */
function lastBox(text: string): { at: number; content: string } | undefined {
  for (let end = text.length; end > 0;) {
    const i = Math.max(text.lastIndexOf('\\boxed', end - 1), text.lastIndexOf('\\fbox', end - 1));
    if (i < 0) return undefined;
    end = i;
    const j = i + (text.startsWith('\\boxed', i) ? 6 : 5);
    if (text[j] === ' ') { // "\boxed 5"
      const bare = /^ *([^\s$]+)/.exec(text.slice(j))?.[1];
      if (bare) return { at: i, content: bare };
      continue;
    }
    if (text[j] !== '{') continue;
    let close = -1;
    for (let depth = 0, k = j; k < text.length && close < 0; k++) {
      if (text[k] === '{') depth++;
      else if (text[k] === '}' && --depth === 0) close = k;
    }
    if (close < 0) return undefined; // unbalanced: the model stopped mid-box
    if (text.slice(j + 1, close).trim()) return { at: i, content: text.slice(j + 1, close) };
  }
  return undefined;
}

/** Words that qualify a value rather than name its unit ("at least 5", "5 or more", "not 5", "5 (wrong)"). */
const QUALIFIER = /\b(?:or|and|not|no|none|more|less|least|most|than|at|only|about|approximately|roughly|wrong|impossible|cannot|never|is|are|if|unless|except)\b|[()=<>]/i;

/** Strips presentation from a MATH answer so equal answers become equal strings. */
export function normalizeMath(s: string): string {
  let t = s
    .replace(/(?<!\\)\\(?:displaystyle|!|,|;|:|quad|qquad|\s)|(?<!\\)~/g, ' ') // not the \\ of matrix rows (before trimming: "\text{(C)}\ "); ~ is a space too
    .replace(/\\[()[\]]/g, ' ') // \( \) \[ \] math delimiters
    .replace(/\\[dt]frac/g, '\\frac')
    .replace(/\{bmatrix\}/g, '{pmatrix}')
    .replace(/\\(?:left|right)(?![a-z])/g, '')
    .replace(/\^\s*\{?\\circ\}?|\\circ|°/g, '')
    .replace(/\\?%/g, '')
    .replace(/\\?\$/g, '')
    .replace(/π/g, '\\pi').replace(/√/g, '\\sqrt')
    .replace(/\\math(?:rm|it)\{([A-Za-z])\}/g, '$1'); // "9\mathrm{i}" is 9i, not 9 and a unit
  t = t.replace(/\\(?:text|mbox|mathrm)\{\s*(?:or|and)\s*\}/g, ','); // "1 \text{ or } 2" lists two answers
  // \text{...}: a whole-answer word is unwrapped ("\text{(C)}", "\text{east}"), a trailing unit is dropped
  t = t.trim().replace(/(?<!\s)\s*\.$/, '').trim(); // "\displaystyle \text{Evelyn}" left a space before the \text; "\text{even}." its full stop
  const whole = /^\\(?:text|textbf|textnormal|mbox|mathrm|mathbf|boldsymbol)\{([^{}]*)\}$/.exec(t);
  if (whole) t = whole[1];
  else {
    // units only: words that qualify the value ("at least 5", "5 or more", "not 5") keep the answer from matching
    const texts = [...t.matchAll(/\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}/g)].map((m) => m[1]);
    const noUnits = t.replace(/(?<!\s)\s*\\(?:text|textbf|mbox|mathrm)\{[^{}]*\}(?:\^\{?\d\}?)?/g, '').trim();
    if (noUnits && !texts.some((x) => QUALIFIER.test(x))) t = noUnits;
  }
  const unit = /^(-?\d+(?:\.\d+)?)\s+([A-Za-z]{2,}(?:\s+[A-Za-z]+)*)$/.exec(t); // a unit without \text: "5.4 cents"
  if (unit && !/\b(?:pi|sqrt|log|ln|sin|cos|tan|sec|csc|cot|exp|i)\b/.test(unit[2]) && !QUALIFIER.test(unit[2])) t = unit[1];
  t = t.replace(/^[A-Za-z]\s*(?:=|\\in)\s*/, '') // "x = 5", "x \in [-2,7]"
    .replace(/\s+/g, '')
    .replace(/\.$/, '')
    .replace(/\\frac(\d)(\d)/g, '\\frac{$1}{$2}') // \frac12
    .replace(/\\frac(\d)\{/g, '\\frac{$1}{') // \frac9{19}
    .replace(/\\frac\{([^{}]*)\}(\d)/g, '\\frac{$1}{$2}') // \frac{270}7
    .replace(/\\sqrt(\d+)/g, '\\sqrt{$1}')
    .replace(/([_^])\{(\w+)\}/g, '$1$2'); // 4210_{5}, x^{2}
  if (/^-?\d{1,3}(,\d{3})+(\.\d+)?$/.test(t)) t = t.replace(/,/g, ''); // 10,080
  t = splitTop(t, ',').map((el) => el.replace(/^[A-Za-z]=(?!=)/, '')).join(','); // "x=3,x=5": every root named
  t = t.replace(/^(-?)\.(\d)/, '$10.$2'); // .35 -> 0.35
  const choice = /^\(([A-Ea-e])\)$/.exec(t); // multiple-choice letter "(C)"
  if (choice) t = choice[1].toUpperCase();
  if (/^[A-Za-z][a-z]{2,}$/.test(t)) t = t.toLowerCase(); // a word: "\text{Even}", "East" (not "AB", a segment)
  // \frac{-\pi}{6} = -\frac{\pi}{6}: the sign of a one-term numerator, when the fraction is the whole answer
  t = t.replace(/^(-?)\\frac\{-([^{}+-]*(?:\{[^{}]*\}[^{}+-]*)*)\}(\{[^{}]*\})$/, (_, neg, num, den) => `${neg ? '' : '-'}\\frac{${num}}${den}`);
  // "1\pm\sqrt{19}": both solutions, in a list or a set of them too ("\{1\pm\sqrt{5},-2\}")
  const set = /^\\\{(.*)\\\}$/.exec(t), items = splitTop(set ? set[1] : t, ',');
  const both = items.flatMap((el) => { const pm = splitTop(el, '\\pm'); return pm.length === 2 && pm[0] ? [`${pm[0]}+${pm[1]}`, `${pm[0]}-${pm[1]}`] : [el]; });
  if (both.length > items.length) t = set ? `\\{${both.join(',')}\\}` : both.join(',');
  return t;
}

/** The value of a normalised answer that is a plain number, fraction (\frac{a}{b}, a/b) or mixed number. */
function latexNumber(t: string): number | undefined {
  if (/^-?(\d+(\.\d+)?|\.\d+)$/.test(t)) return Number(t);
  const ab = /^(-?\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)$/.exec(t);
  if (ab && Number(ab[2]) !== 0) return Number(ab[1]) / Number(ab[2]);
  const f = /^(-?)(\d+)?\\frac\{(-?\d+(?:\.\d+)?)\}\{(\d+(?:\.\d+)?)\}$/.exec(t);
  if (f && Number(f[4]) !== 0) return (f[1] ? -1 : 1) * (Number(f[2] ?? 0) + Number(f[3]) / Number(f[4]));
  return undefined;
}

/** Splits at `sep` where not nested in (), [] or {}. */
function splitTop(t: string, sep: string): string[] {
  const parts: string[] = [];
  let depth = 0, start = 0;
  for (let i = 0; i < t.length; i++) {
    const ch = t[i];
    if ('([{'.includes(ch)) depth++;
    else if (')]}'.includes(ch)) depth--;
    else if (depth === 0 && t.startsWith(sep, i)) { parts.push(t.slice(start, i)); start = i + sep.length; i += sep.length - 1; }
  }
  parts.push(t.slice(start));
  return parts;
}

/** "(a,b]" -> brackets and inner text when the outer brackets enclose the whole string. */
function bracketed(t: string): { open: string; close: string; inner: string } | undefined {
  const m = /^(\\\{|\(|\[|\\begin\{[pb]matrix\})(.*)(\\\}|\)|\]|\\end\{[pb]matrix\})$/.exec(t);
  if (!m) return undefined;
  let depth = 0;
  for (let i = 0; i < m[2].length; i++) { // the outer pair must not close early, as in "(1,2)\cup(3,4)"
    if ('([{'.includes(m[2][i])) depth++;
    else if (')]}'.includes(m[2][i]) && --depth < 0) return undefined;
  }
  return { open: m[1], close: m[3], inner: m[2] };
}

/** Equality of two normalised MATH answers; `ordered`: inside a tuple, interval or matrix (lists keep their order). */
export function mathEqual(a: string, b: string, ordered = false): boolean {
  if (a === b) return true;
  const x = latexNumber(a), y = latexNumber(b);
  if (x !== undefined && y !== undefined) return close(x, y);
  const ba = bracketed(a), bb = bracketed(b);
  // a set \{...\} and a bare list of its elements ("all solutions, separated by commas") are the same answer
  const [set, list] = ba?.open === '\\{' && !bb ? [ba, b] : bb?.open === '\\{' && !ba ? [bb, a] : [];
  if (!ordered && set) return sameElements(splitTop(set.inner, ','), splitTop(list!, ',')); // "\{5\}" and "5" too
  if (ba && bb) {
    if (ba.open !== bb.open || ba.close !== bb.close) return false;
    // a set \{...\} is unordered; tuples, intervals and matrices are not
    return ba.open === '\\{' ? sameElements(splitTop(ba.inner, ','), splitTop(bb.inner, ',')) : mathEqual(ba.inner, bb.inner, true);
  }
  for (const sep of ['\\cup', '\\\\', ',', '&']) { // unions, matrix rows, tuple/list elements, matrix columns
    const pa = splitTop(a, sep), pb = splitTop(b, sep);
    if (pa.length > 1 || pb.length > 1) {
      // a bare comma list ("all solutions, separated by commas") is unordered; elements of a bracketed one are not
      if ((sep === ',' && !ordered && !ba && !bb) || sep === '\\cup') return sameElements(pa, pb); // a union in any order
      return pa.length === pb.length && pa.every((p, i) => mathEqual(p, pb[i]));
    }
  }
  return sameValue(a, b);
}

/**
 * The last resort of mathEqual, as the references' symbolic check (Qwen2.5-Math's math_equal, Minerva's is_equiv):
 * two expressions are equal if they take the same value at several points, their letters (the same ones on both
 * sides) set to fixed pseudo-random values — "2\pi+18" is "18+2\pi", "\sqrt{3}/3" is "\frac{\sqrt3}{3}", "2^{10}" is
 * 1024. Words (three letters in a row outside a command) are not expressions: "even" is not "neve".
 */
function sameValue(a: string, b: string): boolean {
  try {
    const x = expression(a), y = expression(b);
    if (!x || !y || x.vars.size !== y.vars.size || ![...x.vars].every((v) => y.vars.has(v))) return false;
    // fixed points, half of them negative ("\sqrt{x^2}" is not "x"); a point where both sides are undefined is skipped
    const vars = [...x.vars], point = (k: number) => (k % 2 ? -1 : 1) * (1.1 + 1.8 * ((Math.abs(Math.sin(k * 12.9898)) * 43758.5453) % 1));
    let compared = 0;
    for (let p = 0; p < (vars.length ? 6 : 1); p++) {
      const env = new Map(vars.map((v, i) => [v, point(p * 31 + i + 1)]));
      const u = x.value(env), w = y.value(env);
      if (Number.isNaN(u) && Number.isNaN(w)) continue;
      if (!Number.isFinite(u) || !Number.isFinite(w) || !close(u, w)) return false; // 1/0 equals nothing
      compared++;
    }
    return compared > 0;
  } catch (e) {
    if (e instanceof RangeError) return false; // nested too deep for the stack: no answer of ours
    throw e;
  }
}

type Value = (env: Map<string, number>) => number;
const FUNCTIONS: Record<string, (x: number) => number> = {
  arcsin: Math.asin, arccos: Math.acos, arctan: Math.atan, sin: Math.sin, cos: Math.cos, tan: Math.tan, cot: (x) => 1 / Math.tan(x),
  sec: (x) => 1 / Math.cos(x), csc: (x) => 1 / Math.sin(x), sinh: Math.sinh, cosh: Math.cosh, tanh: Math.tanh,
  ln: Math.log, log: Math.log10, exp: Math.exp,
};
// The commands an expression may hold, longest first: normalised answers have no spaces ("\cot x" is "\cotx").
const COMMAND = new RegExp(`\\\\(?:${['frac', 'sqrt', 'pi', 'cdot', 'times', 'div', ...Object.keys(FUNCTIONS)].sort((p, q) => q.length - p.length).join('|')})|\\\\[A-Za-z]+`, 'y');

/** A normalised MATH answer read as an arithmetic expression of numbers, letters, \pi, \frac, \sqrt, ^, ! and functions; undefined if it is not one. */
function expression(t: string): { value: Value; vars: Set<string> } | undefined {
  const tokens: string[] = [];
  for (let at = 0; at < t.length;) {
    COMMAND.lastIndex = at;
    const m = t[at] === '\\' ? COMMAND.exec(t) : /^(?:\d+(?:\.\d+)?|\.\d+)/.exec(t.slice(at));
    const tk = m ? m[0] : t[at];
    tokens.push(tk);
    at += tk.length;
  }
  // Not an expression: letters in a row outside commands (a word, not a product of variables), letters alone ("no"
  // is not "on"), a mixed number (latexNumber's "1\frac{1}{2}" is 1.5), or too long to read.
  const letter = (tk: string | undefined) => tk !== undefined && /^[A-Za-z]$/.test(tk);
  if (!tokens.length || tokens.length > 400 || tokens.every(letter) || tokens.some((tk, k) => letter(tk) && letter(tokens[k + 1]) && letter(tokens[k + 2]))
    || /\d\\frac\{\d+\}\{\d+\}/.test(t)) return undefined;
  const vars = new Set<string>();
  let i = 0, inside = 0; // inside: under a root or a function, where i would not be a real number
  const within = (read: () => Value): Value => { inside++; try { return read(); } finally { inside--; } };
  const peek = () => tokens[i], take = (want?: string) => {
    if (want !== undefined && tokens[i] !== want) throw new SyntaxError(want);
    return tokens[i++];
  };
  const group = (): Value => { // {…}, or one token, as a LaTeX argument
    if (peek() === '{') { take('{'); const v = sum(); take('}'); return v; }
    return primary();
  };
  const startsFactor = (tk: string | undefined) => tk !== undefined && (/^[\d.A-Za-z({]/.test(tk) || (tk[0] === '\\' && !['\\cdot', '\\times', '\\div'].includes(tk)));
  function sum(): Value {
    let v = product();
    while (peek() === '+' || peek() === '-') {
      const op = take(), l = v, r = product();
      v = op === '+' ? (e) => l(e) + r(e) : (e) => l(e) - r(e);
    }
    return v;
  }
  function product(): Value {
    let v = unary();
    for (;;) {
      const tk = peek();
      if (tk === '*' || tk === '\\cdot' || tk === '\\times') { take(); const l = v, r = unary(); v = (e) => l(e) * r(e); }
      else if (tk === '/' || tk === '\\div') { take(); const l = v, r = unary(); v = (e) => quotient(l(e), r(e)); }
      else if (startsFactor(tk)) { const l = v, r = power(); v = (e) => l(e) * r(e); } // implicit: 2\pi, 3x, x(y+1)
      else return v;
    }
  }
  function unary(): Value {
    if (peek() === '-') { take(); const v = unary(); return (e) => -v(e); }
    if (peek() === '+') { take(); return unary(); }
    return power();
  }
  function power(): Value {
    let v = primary();
    while (peek() === '!') { take(); const b = v; v = (e) => factorial(b(e)); }
    if (peek() === '^') {
      take();
      const b = v, neg = peek() === '-' && take() === '-', x = group();
      v = (e) => raise(b(e), neg ? -x(e) : x(e));
    }
    return v;
  }
  function primary(): Value {
    const tk = take();
    if (tk === undefined) throw new SyntaxError('end');
    if (/^[\d.]/.test(tk)) { const n = Number(tk); return () => n; }
    if (/^[A-Za-z]$/.test(tk)) {
      if (tk === 'i' && inside) throw new SyntaxError('i'); // as a real number, i would make \sqrt{i^4} equal i^2
      vars.add(tk);
      return (e) => e.get(tk)!;
    }
    if (tk === '(' || tk === '{') { const v = sum(); take(tk === '(' ? ')' : '}'); return v; }
    if (tk === '\\pi') return () => Math.PI;
    if (tk === '\\frac') { const n = group(), d = group(); return (e) => quotient(n(e), d(e)); }
    if (tk === '\\sqrt') {
      let k: Value = () => 2;
      if (peek() === '[') { take('['); k = sum(); take(']'); }
      const r = within(group);
      return (e) => root(r(e), k(e));
    }
    const f = FUNCTIONS[tk.slice(1)];
    if (f) { // \sin(x), \sin{x}, or \sin 2x: the numbers and letters that follow
      let x = within(() => (peek() === '(' ? primary() : group()));
      while (peek() !== undefined && /^[\d.A-Za-z]/.test(peek()!)) { const l = x, r = within(primary); x = (e) => l(e) * r(e); }
      return (e) => { const a = x(e); return Number.isFinite(a) ? finite(f(a)) : NaN; };
    }
    throw new SyntaxError(tk);
  }
  try {
    const value = sum();
    return i === tokens.length ? { value, vars } : undefined;
  } catch (e) {
    if (e instanceof SyntaxError) return undefined;
    throw e;
  }
}

// No value in, no value out: 1/(1/0) is not 0, (1/0)^0 not 1 (JavaScript's NaN ** 0 is 1).
const quotient = (a: number, b: number) => (b === 0 || !Number.isFinite(a) || !Number.isFinite(b) ? NaN : a / b);
const finite = (x: number) => (Number.isFinite(x) ? x : NaN);
const raise = (a: number, b: number) => (!Number.isFinite(a) || !Number.isFinite(b) || (a === 0 && b <= 0) ? NaN : finite(a ** b));
/** The k-th root; an odd k of a negative number is negative (\sqrt[3]{-8} is -2). */
const root = (a: number, k: number) => (Number.isInteger(k) && k % 2 === 1 && a < 0 ? -raise(-a, 1 / k) : raise(a, 1 / k));

function factorial(n: number): number {
  if (!Number.isInteger(n) || n < 0 || n > 170) return NaN;
  let f = 1;
  for (let k = 2; k <= n; k++) f *= k;
  return f;
}

/** Equal as multisets under mathEqual. */
function sameElements(pa: string[], pb: string[]): boolean {
  if (pa.length !== pb.length) return false;
  const left = [...pb];
  return pa.every((p) => { const k = left.findIndex((q) => mathEqual(p, q)); return k >= 0 && left.splice(k, 1).length === 1; });
}

// ---------------------------------------------------------------------------------------------------------
// Public API

/**
 * ASDiv's non-numeric golds ("Mrs. Hilt", "3:30 p.m."): out of "$…$", "\\(…\\)", \\boxed{}, \\text{} and quotes,
 * case-folded, spaces collapsed, unit and final dots dropped.
 */
function foldPhrase(s: string): string {
  // LaTeX spacing is a space ("Mrs.~Hilt", "3:30\ \text{p.m.}"), "{:}" a colon, "6^{th}" 6th; bold and curly quotes go.
  let t = s.trim().replace(/(?<!\\)\\(?:[ ,;:!]|quad\b|qquad\b)|(?<!\\)~/g, ' ').replace(/\{:\}/g, ':').replace(/\*\*/g, '').replace(/[‘’]/g, "'")
    .replace(/\^\s*\{?\s*(?:\\text\{)?(st|nd|rd|th)\}?\s*\}?/g, '$1'), was;
  do {
    was = t;
    t = t.replace(/(?<!\.)\.+$/, '').replace(/^\$+|(?<!\$)\$+$/g, '').replace(/^\\\(|\\\)$/g, '').replace(/^["'“”]+|(?<!["'“”])["'“”]+$/g, '')
      .replace(/\\(?:text|textbf|textnormal|mbox|mathrm)\{([^{}]*)\}/g, '$1')
      .replace(/^\\(?:boxed|text|textbf|textnormal|mbox|mathrm)\{(.*)\}$/, (all, inner: string) => (balancedBraces(inner) ? inner : all)).trim();
  } while (t !== was);
  return t.toLowerCase().replace(/\s+/g, ' ').replace(/(?<!\s)\s*\([^()]*\)$/, '').replace(/\b([ap])\.?\s?m\b\.?/g, '$1m').replace(/(?<!\.)\.+$/, '')
    .replace(/(\d)\s*:\s*(\d)/g, '$1:$2'); // a ratio written "3 : 4"
}

/** Whether every brace the text opens it closes, and none closes before it opens (so "a} \\text{b" is not one group's content). */
function balancedBraces(text: string): boolean {
  let depth = 0;
  for (const c of text) if ((depth += c === '{' ? 1 : c === '}' ? -1 : 0) < 0) return false;
  return depth === 0;
}

/** A stated phrase's leading "$…$" or "\\(…\\)" (a sentence may go on after it), else the phrase. */
function mathSpan(phrase: string | undefined): string | undefined {
  const m = phrase === undefined ? null : /^(?:\$((?:[^$\\]|\\.)+)\$|\\\((.+?)\\\))/.exec(phrase); // "$\$36$" holds "\$36"
  return m ? m[1] ?? m[2] : phrase;
}

/** A synthetic reply's "#### n" number: undefined when the line is missing or holds more than a number ("#### 7 or 8", "#### 7 + 1", "#### not 7"). */
function hashAnswer(r: string): number | undefined {
  const i = r.lastIndexOf('####');
  return i < 0 ? undefined : parseNumber(r.slice(i + 4).split('\n')[0]);
}

/**
 * The answer a model gave, canonicalised so equal answers are equal strings where possible (numbers as plain
 * decimals, MATH answers normalised): usable directly as a voting key. undefined when there is none.
 */
export function extractAnswer(task: Task, text: string): string | undefined {
  const r = reply(text);
  if (task === 'math500') { // the last \\boxed{}; without one, the last answer stated ("The answer is $\\frac{1}{2}$.")
    const box = lastBoxed(r) ?? mathSpan(statedAnswer(r, false)?.phrase);
    if (box === undefined) return undefined;
    const t = normalizeMath(box), n = latexNumber(t);
    return n === undefined ? t || undefined : numberKey(n);
  }
  if (task === 'synthetic') { // math replies count only through the fixed "#### n" line; chat replies whole
    if (r.includes('####')) { const n = hashAnswer(r); return n === undefined ? undefined : numberKey(n); }
    return r.trim() || undefined;
  }
  const stated = statedAnswer(r, task !== 'asdiv');
  if (stated) { // a stated answer decides, number or not (a non-number can then only be wrong, or an ASDiv phrase)
    const n = statedNumber(stated);
    if (n !== undefined) return numberKey(n);
    return (task === 'asdiv' ? foldPhrase(stated.phrase) : stated.boxed ? normalizeMath(stated.phrase) : stated.phrase.trim()) || undefined;
  }
  // No explicit answer: the last number written (ASDiv's last ratio or clock time, when it holds that number).
  const ratio = task === 'asdiv' ? lastRatio(r) : undefined;
  if (ratio !== undefined) return foldPhrase(ratio);
  const last = lastNumber(r);
  if (last === undefined && task === 'asdiv') return foldPhrase(r.trim().split('\n').at(-1) ?? '') || undefined; // a name, as isCorrect reads it
  return last === undefined ? undefined : numberKey(last);
}

/**
 * Voting keys of one question's samples, so that MATH answers of the same value vote together ("2\\pi+18" and
 * "18+2\\pi"): returns the first key in `seen` that mathEqual takes as equal, else adds `key` to `seen` and returns it.
 * Other tasks' keys are canonical already.
 */
export function sharedKey(task: Task | undefined, seen: string[], key: string | undefined): string | undefined {
  if (key === undefined || task !== 'math500') return key;
  const same = seen.find((k) => k === key || mathEqual(k, key));
  if (same !== undefined) return same;
  seen.push(key);
  return key;
}

/**
 * The voting key of a reply when no task names its answer format: the answer it states ("#### n", "the answer is …",
 * \boxed{}) or else its last number, as a GSM8K reply is read; a reply with neither (a chat reply, the embedded
 * model's "Paris") votes with its whole text. A "####" line without a number gives none, as in the synthetic task. A
 * reply that calls tools (Hermes blocks, or the whole reply a call's JSON as Llama writes it) votes with its calls.
 */
export function voteKey(text: string): string | undefined {
  const r = reply(text), hermes = parseToolCalls(r).calls, calls = hermes.length ? hermes : parseToolCalls(r, 'json').calls;
  if (calls.length) return callsKey(calls); // a reply that calls tools is its calls, not the numbers in their arguments
  return extractAnswer('gsm8k', r) ?? (r.includes('####') ? undefined : r.trim() || undefined);
}

/**
 * Questions with their gold answers (eval cases, router and verifier items): a list of objects with a question, a
 * gold answer and a task; errors name the list (`o.list`), the item (`o.item(i)`) and the fields it must have.
 */
export function checkQuestions(list: unknown, o: { list: string; item: (i: number) => string; shape: string }, where: string): void {
  if (!Array.isArray(list)) throw new Error(`${where}: ${o.list}, got ${shown(list)}`);
  list.forEach((it, i) => {
    if (!it || typeof it !== 'object' || typeof it.question !== 'string' || !(typeof it.gold === 'string' || typeof it.gold === 'number') || !TASKS.includes(it.task)) {
      throw new Error(`${where}: ${o.item(i)} must be { ${o.shape}, task: ${TASKS.join(' | ')} }, got ${shown(it)}`);
    }
  });
}

/** Whether `predictedText` (a model's whole output) answers `gold` (the dataset's answer field) correctly. */
export function isCorrect(task: Task, predictedText: string, gold: string | number): boolean {
  if (task === 'synthetic') {
    const r = reply(predictedText);
    if (typeof gold === 'number') { const n = hashAnswer(r); return n !== undefined && close(n, gold); }
    return r.trim() === gold.trim(); // exact: an "upper-case this word" reply must be upper case
  }
  if (task === 'math500') {
    const pred = extractAnswer(task, predictedText);
    return pred !== undefined && mathEqual(pred, normalizeMath(String(gold)));
  }
  // ASDiv's ordinal golds ("6th") are their number: "\\boxed{6}", "\\boxed{6th}", "Danny's bus is 6th."
  const num = (s: string) => parseNumber(s) ?? (task === 'asdiv' && /^\d+(?:st|nd|rd|th)$/i.test(s.trim()) ? parseInt(s, 10) : undefined);
  const g = typeof gold === 'number' ? gold : num(gold);
  if (g === undefined) { // ASDiv names, times, ratios: compare the stated phrase (or the last line) as text
    if (task !== 'asdiv') return false;
    const r = reply(predictedText), stated = statedAnswer(r, false)?.phrase, want = foldPhrase(String(gold));
    // a time the gold gives without "a.m."/"p.m." ("12:50") is also right with one
    const same = (got: string) => { const t = foldPhrase(got); return t === want || (/^\d+:\d+$/.test(want) && t.replace(/ ?[ap]m$/, '') === want); };
    if (stated !== undefined) return same(stated);
    const ratio = lastRatio(r); // "The ratio of boys to girls is 3:4.", "She arrives at 3:30 p.m."
    return same(ratio ?? r.trim().split('\n').at(-1) ?? '');
  }
  const pred = extractAnswer(task, predictedText), p = pred === undefined ? undefined : num(pred);
  return p !== undefined && close(p, g);
}
