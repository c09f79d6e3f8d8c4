import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sharedPath } from './helpers/shared.ts';
import { extractAnswer, isCorrect, lastBoxed, mathEqual, normalizeMath, parseNumber, sharedKey, voteKey, type Task } from '../src/tasks/grade.ts';
import {
  DIFFICULTY, Rng, formatAnswer, formatResponse, formatThinking, generateItem, generateMath, makeSplits, questionKey,
  splitOf, type Item, type MathItem, type Mix,
} from '../src/tasks/synthetic.ts';
import { buildTokenizerFiles, pretokenize } from '../src/tasks/vocab.ts';
import { loadTokenizer } from '../src/tokenizer/hf.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const jsonl = (rel: string) => readFileSync(sharedPath(rel), 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
/** Replaces the contents of the last \boxed{...}. */
const rebox = (text: string, content: string) => {
  const box = lastBoxed(text)!, i = text.lastIndexOf('\\boxed{' + box + '}');
  return text.slice(0, i) + '\\boxed{' + content + '}' + text.slice(i + box.length + 8);
};

// ---------------------------------------------------------------------------------------------------------
// Grading on the real benchmarks' gold solutions

test('gsm8k: every gold solution grades correct, off-by-one wrong', () => {
  const rows = jsonl('data/gsm8k/test.jsonl');
  assert.equal(rows.length, 1319);
  for (const r of rows) {
    const gold: string = r.answer.split('####').at(-1).trim();
    assert.ok(isCorrect('gsm8k', r.answer, gold), `gold solution graded wrong: ${r.question}`);
    const n = Number(gold.replace(/,/g, ''));
    assert.ok(!isCorrect('gsm8k', r.answer.replace(/####.*$/, `#### ${n + 1}`), gold), `off-by-one graded correct: ${gold}`);
    assert.ok(isCorrect('gsm8k', `So she pays $${gold} in total.`, gold), `last-number fallback: ${gold}`);
  }
});

test('math500: every gold solution grades correct against its answer; perturbed ones wrong', () => {
  const rows = jsonl('data/math500/test.jsonl');
  assert.equal(rows.length, 500);
  const failures = rows.filter((r) => !isCorrect('math500', r.solution, r.answer)).map((r) => `${r.unique_id}: ${r.answer}`);
  assert.deepEqual(failures, [], 'gold solutions graded wrong');
  for (const r of rows) {
    const box = lastBoxed(r.solution)!;
    // Every box dropped with its content: no answer is guessed from the rest. (With only the word \boxed dropped, a
    // solution that says "our answer is $7 + (-2) + 0 = {5}$" still states its answer, and is right.)
    let unboxed = r.solution;
    for (let b = lastBoxed(unboxed), was = ''; b !== undefined && was !== unboxed; b = lastBoxed(unboxed)) [was, unboxed] = [unboxed, unboxed.replace(`\\boxed{${b}}`, '')];
    assert.ok(!isCorrect('math500', unboxed, r.answer), `missing box graded correct: ${r.unique_id}`);
    assert.ok(!isCorrect('math500', '\\boxed{\\frac{1}{0}}', r.answer), `1/0 graded correct: ${r.unique_id}`);
    const n = Number(normalizeMath(r.answer));
    const wrong = Number.isFinite(n) ? String(n + 1) : box + '+1';
    assert.ok(!isCorrect('math500', rebox(r.solution, wrong), r.answer), `perturbed answer graded correct: ${r.unique_id} ${wrong}`);
    const frac = /^\\frac\{(\d+)\}\{(\d+)\}$/.exec(r.answer);
    if (frac && frac[1] !== frac[2]) {
      assert.ok(!isCorrect('math500', rebox(r.solution, `\\frac{${frac[2]}}{${frac[1]}}`), r.answer), `inverted fraction graded correct: ${r.answer}`);
    }
  }
});

test('math500: normalisation equivalences and near misses', () => {
  const same: [string, string][] = [
    ['0.5', '\\frac12'], ['\\frac{1}{2}', '\\frac12'], ['\\dfrac{1}{2}', '1/2'], ['.5', '\\tfrac{1}{2}'],
    ['\\frac{270}7\\text{ degrees}', '\\frac{270}{7}'], ['10\\%', '10'], ['30^\\circ', '30'], ['30^{\\circ}', '30'],
    ['\\$18.90', '18.9'], ['\\$32,\\!348', '32348'], ['10,\\!080', '10080'], ['\\text{(C)}', 'C'], ['(C)', '\\text{(C)}'],
    ['\\displaystyle \\text{Evelyn}', '\\text{Evelyn}'], ['\\textnormal{Evelyn}', 'Evelyn'],
    ['x \\in [-2,7]', '[-2, 7]'], ['x=5', '5'], ['\\left( 3, \\frac{\\pi}{2} \\right)', '(3,\\frac{\\pi}{2})'],
    ['864 \\mbox{ inches}^2', '864'], ['5.4 \\text{ cents}', '5.4'], ['1\\frac{4}{5}', '1.8'], ['137 \\frac{1}{2}', '137.5'],
    ['11\\sqrt2', '11\\sqrt{2}'], ['4210_{5}', '4210_5'], ['(0,9) \\cup (9,36)', '(0, 9)\\cup(9, 36)'], ['3, 5, 7', '3,5,7'],
    ['\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}', '\\begin{pmatrix} \\frac15 \\\\ -\\frac{18}{5} \\end{pmatrix}'],
    ['(1, 0.5)', '(1,\\frac{1}{2})'], ['\\text{Evelyn}', 'Evelyn'], ['-\\frac{3}{8}', '-0.375'], ['2.', '2'],
    // words and choice letters in either case; bmatrix for pmatrix; the sign of a fraction; ±; units without \text
    ['\\text{even}', '\\text{Even}'], ['\\text{ellipse}', 'Ellipse'], ['\\text{(C)}', '(c)'],
    ['\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}', '\\begin{bmatrix} -1/3 \\\\ 2/3 \\end{bmatrix}'], ['-\\frac{\\pi}{6}', '\\frac{-\\pi}{6}'],
    ['1 \\pm \\sqrt{19}', '1+\\sqrt{19}, 1-\\sqrt{19}'], ['1 \\pm \\sqrt{19}', '1-\\sqrt{19},1+\\sqrt{19}'], ['\\{1\\pm\\sqrt{5},-2\\}', '\\{-2,1-\\sqrt{5},1+\\sqrt{5}\\}'], ['5.4 \\text{ cents}', '5.4 cents'],
    // a full stop after a \text answer; "\ " before trimming
    ['\\text{(C)}.', '\\text{(C)}'], ['\\text{even}.', 'even'], ['\\text{(C)}\\ ', 'C'],
    // the same value (the references' symbolic check): terms in another order, forms unsimplified, a/b, powers, functions
    ['2\\pi+18', '18+2\\pi'], ['11+11\\sqrt5', '11\\sqrt{5}+11'], ['274i+1', '1+274i'], ['3-13x', '-13x+3'], ['\\pi\\cdot288', '288\\pi'],
    ['\\frac{1}{\\sqrt3}', '\\frac{\\sqrt3}{3}'], ['\\sqrt{20}', '2\\sqrt5'], ['2(k+1)', '2k+2'], ['(b+2)(a+5)', 'ab+5b+2a+10'], ['2^{10}', '1024'],
    ['6.72\\times10^{-5}', '.0000672'], ['\\cot(x)', '\\cot x'], ['\\cot{x}', '\\cot x'], ['-\\pi/6', '-\\frac{\\pi}{6}'], ['20000/\\pi', '\\frac{20000}{\\pi}'],
    ['\\sqrt{3}/3', '\\frac{\\sqrt{3}}{3}'], ['5!', '120'], ['\\sqrt[3]{8}', '2'], ['(3,\\pi/2)', '\\left(3,\\frac{\\pi}{2}\\right)'], ['y=2x+3', '3+2x'],
    ['\\log 100', '2'], ['\\sin 2x', '\\sin(2x)'], ['\\sinh x', '\\sinh(x)'], ['\\frac{\\pi}{2\\pi}', '0.5'],
    ['\\{5\\}', '5'], ['(9,36)\\cup(0,9)', '(0,9)\\cup(9,36)'],
    ['6+9\\mathrm{i}', '6+9i'], ['2π', '2\\pi'], ['√2/2', '\\frac{\\sqrt2}{2}'], ['\\sqrt[3]{-8}', '-2'], ['5\\text{ square units}', '5'], ['\\sin(\\pi)', '0'],
  ];
  for (const [a, b] of same) assert.ok(mathEqual(normalizeMath(a), normalizeMath(b)), `${a} should equal ${b}`);
  const differ: [string, string][] = [
    ['\\frac{2}{3}', '\\frac{3}{2}'], ['(3,4]', '[3,4]'], ['(3,4]', '(3,4)'], ['(1,2)', '(2,1)'], ['(1,2)', '(1,2,3)'],
    ['\\sqrt{2}', '\\sqrt{3}'], ['0.33', '\\frac13'], ['x+1', 'x-1'], ['\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}', '\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}'],
    ['x', 'X'], ['\\text{(C)}', '(D)'], ['1 \\pm \\sqrt{19}', '1+\\sqrt{19}'], ['\\{1\\pm\\sqrt{5},-2\\}', '\\{1+\\sqrt{5},-2\\}'], ['5.4 \\text{ cents}', '5.5 cents'], ['\\frac{-\\pi}{6}', '\\frac{\\pi}{6}'],
    ['\\frac{-1+\\sqrt5}{2}', '-\\frac{1+\\sqrt5}{2}'], ['x\\frac{-1}{2}', 'x-\\frac12'], ['3 pi', '3'], ['\\text{AB}', 'ab'],
    // values that differ somewhere, or only nearly agree; words are not products of letters
    ['\\text{even}', '\\text{neve}'], ['x^2', '2x'], ['2x', '2y'], ['\\sqrt2', '1.414'], ['e', '2.718281828459045'], ['1450001', '1450000'], ['2\\pi+18', '18+2\\pi+x'],
    // no value (1/0 equals nothing), values apart by less than 1e-9 of their size, forms the evaluator must not misread
    ['\\frac{1}{0}', '5'], ['9^{999}', '5'], ['\\cot 0', '\\pi'], ['2^{40}', '1099511627000'], ['3^{20}', '3486784400'], ['\\sinh x', 'x\\sin h'],
    ['\\sin 2x', 'x\\sin 2'], ['\\log 100', '2\\ln 10'], ['\\sqrt{x^2}', 'x'], ['\\ln(x^2)', '2\\ln x'], ['\\sqrt{i^4}', 'i^2'], ['no', 'on'],
    ['1\\frac{1}{2}', '\\frac{\\pi}{2\\pi}'], ['\\{5\\}', '6'], ['\\{5\\}', '5, 6'], ['(1,2)', '2, 1'], ['(9,36)\\cup(0,9)', '(0,9)\\cup[9,36)'],
    // words that qualify the value are not units; \mathrm{i} is i; undefined stays undefined (0^0, 1/(1/0), NaN ** 0)
    ['\\text{at least }5', '5'], ['5\\text{ or more}', '5'], ['\\text{not } 5', '5'], ['5\\text{ (wrong)}', '5'], ['5 or more', '5'], ['3\\mathrm{i}', '3'],
    ['\\frac{1}{\\frac{1}{0}}', '0'], ['2^{-\\frac{1}{0}}', '0'], ['\\exp(\\ln 0)', '0'], ['0^0', '1'], ['(\\frac10)^0', '1'], ['(\\sqrt{-4})^0', '1'], ['\\arctan(\\frac1{0})', '\\frac{\\pi}{2}'],
  ];
  for (const [a, b] of differ) assert.ok(!mathEqual(normalizeMath(a), normalizeMath(b)), `${a} should differ from ${b}`);
  // Degenerate answers are graded wrong, not thrown on: nested past the stack, or too long to read.
  for (const t of ['('.repeat(3000) + '5' + ')'.repeat(3000), '-'.repeat(10000) + '1', '1+'.repeat(50000) + '1', '\\pi'.repeat(33000)]) assert.equal(isCorrect('math500', `\\boxed{${t}}`, '5'), false);
  // Voting keys: MATH answers of one value share the key seen first; other tasks' keys are left as they are.
  const seen: string[] = [];
  assert.deepEqual(['2\\pi+18', '18+2\\pi', '3', undefined, '2\\pi+18', '\\frac{6}{2}'].map((k) => sharedKey('math500', seen, k)), ['2\\pi+18', '2\\pi+18', '3', undefined, '2\\pi+18', '3']);
  assert.deepEqual(seen, ['2\\pi+18', '3']);
  assert.equal(sharedKey('gsm8k', ['18'], '18.0'), '18.0');
  assert.equal(lastBoxed('so \\boxed{\\frac{\\sqrt{3}}{3}} and then \\boxed{\\left\\{1,2\\right\\}}.'), '\\left\\{1,2\\right\\}');
  assert.equal(lastBoxed('\\boxed 5$'), '5');
  assert.equal(lastBoxed('unfinished \\boxed{\\frac{1}{'), undefined);
  // Without a box, the last answer stated (the prompt asks for a box; models do not always give one).
  assert.equal(extractAnswer('math500', 'The answer is 5.'), '5');
  assert.equal(extractAnswer('math500', 'We find that x = 5.'), undefined, 'no answer stated: no number is guessed');
  for (const [reply, gold] of [['The answer is $\\frac{1}{2}$.', '\\frac{1}{2}'], ['Final Answer: The final answer is $\\text{east}$. I hope it is correct.', '\\text{east}'],
    ['#### 5', '5'], ['**Answer:** (1,2)', '(1,2)'], ['We get \\boxed{5}. The answer is in the box above.', '5'], ['So the answer is \\(\\sqrt{2}\\), as claimed.', '\\sqrt{2}'],
    ['The answer is \\text{Navin}.', '\\text{Navin}'], ['Final Answer: The final answer is (C). I hope it is correct.', '\\text{(C)}'], ['\\boxed{-\\pi/6}', '-\\frac{\\pi}{6}']]) {
    assert.ok(isCorrect('math500', reply, gold), `${reply} answers ${gold}`);
  }
  assert.ok(!isCorrect('math500', 'The answer is 6.', '5'));
});

test('svamp and asdiv: every gold answer, stated as a sentence, grades correct; off-by-one wrong', () => {
  const svamp = jsonl('data/svamp/test.jsonl');
  assert.equal(svamp.length, 1000);
  for (const r of svamp) {
    assert.ok(isCorrect('svamp', `${r.Body} ${r.Question} The answer is ${r.Answer}.`, r.Answer), `svamp ${r.ID}`);
    assert.ok(isCorrect('svamp', `${r.Equation} = ${r.Answer}`, String(r.Answer)), `svamp last number ${r.ID}`);
    assert.ok(!isCorrect('svamp', `The answer is ${r.Answer + 1}.`, r.Answer), `svamp off-by-one ${r.ID}`);
  }
  const asdiv = jsonl('data/asdiv/test.jsonl');
  assert.equal(asdiv.length, 2215);
  let numeric = 0, ratios = 0;
  for (const r of asdiv) {
    const stated = String(r.answer).replace(/\s*\([^()]*[a-z][^()]*\)$/i, ''); // "9 (apples)", not "-(1/3)"
    assert.ok(isCorrect('asdiv', `${r.body} The answer is ${stated}.`, r.answer), `asdiv ${r.idx}: ${r.answer}`);
    const n = Number(stated);
    if (Number.isFinite(n)) {
      numeric++;
      assert.ok(!isCorrect('asdiv', `The answer is ${n + 1}.`, r.answer), `asdiv off-by-one ${r.idx}`);
    } else {
      assert.ok(!isCorrect('asdiv', 'The answer is Nobody.', r.answer), `asdiv wrong text ${r.idx}`);
      // a name, "Yes" or a time, however it is wrapped
      if (parseNumber(String(r.answer)) === undefined) for (const form of [`$${stated}$`, `\\boxed{\\text{${stated}}}`, `"${stated}"`, `#### ${stated}`, `The answer is \\(\\text{${stated}}\\).`]) {
        assert.ok(isCorrect('asdiv', form, r.answer), `asdiv ${r.idx}: ${form} answers ${r.answer}`);
      }
      assert.ok(!isCorrect('asdiv', '#### Nobody', r.answer));
      // a ratio or a clock time written in a sentence, no answer phrase: the last one is the answer
      if (/^\d+\s*:\s*\d+(\s*[ap]\.?\s?m\.?)?$/i.test(stated.trim())) {
        assert.ok(isCorrect('asdiv', `${r.body} So it is ${stated}.`, r.answer), `asdiv ${r.idx}: "So it is ${stated}." answers ${r.answer}`);
        assert.ok(!isCorrect('asdiv', `So it is ${stated.replace(/^(\d+)/, (d) => String(Number(d) + 1))}.`, r.answer), `asdiv ${r.idx}: another ratio or time`);
        ratios++;
      }
    }
    // a fraction ends the sentence: "5/2." is 2.5, not 2
    if (/^-?\d+\/\d+$/.test(stated)) assert.ok(isCorrect('asdiv', `Each one gets ${stated}.`, r.answer) && !isCorrect('asdiv', `Each one gets ${stated}.`, stated.split('/')[1]), `asdiv ${r.idx}: ${stated}.`);
  }
  assert.ok(numeric > 2000, `asdiv: only ${numeric} numeric golds`);
  assert.ok(ratios > 40, `asdiv: only ${ratios} ratio or time golds`);
  assert.equal(extractAnswer('asdiv', 'The ratio of boys to girls is 3:4.'), '3:4'); // a voting key, not the 4 in it
  assert.equal(extractAnswer('asdiv', 'Monday: 3 apples\nTotal on day 2: 8'), '8'); // a label is no ratio
  assert.equal(extractAnswer('asdiv', 'So the winner is\nSally'), 'sally'); // a name, as isCorrect reads it
  assert.ok(isCorrect('asdiv', '#### -(1/3)', '-(1/3)') && !isCorrect('asdiv', '#### -(1/3)', '1/3'), 'a negative fraction on the #### line keeps its sign');
  assert.ok(isCorrect('asdiv', 'The answer is 3 : 4', '3:4') && !isCorrect('asdiv', 'The answer is 3 : 5', '3:4'), 'a ratio with spaces around its colon');
});

test('the default voting key: the answer stated or the last number, a reply with neither by its text', () => {
  const cases: [string, string | undefined][] = [
    ['<think>\n3 + 4 = 7\n</think>\n\n#### 42', '42'], // the thinking is not read
    ['The answer is 1,200.', '1200'], ['Answer: 5.', '5'], ['So we get \\boxed{\\frac{1}{2}}.', '0.5'],
    ['There are 3 cats and 4 dogs.', '4'], ['Paris', 'Paris'], ['Hello! How can I help?', 'Hello! How can I help?'],
    ['#### abc', undefined], ['  ', undefined], // a "####" line without a number is no answer, as in the synthetic task
  ];
  for (const [text, key] of cases) assert.equal(voteKey(text), key, JSON.stringify(text));
});

test('numeric extraction: ####, stated answer, box, last number, think blocks, voting keys', () => {
  assert.equal(extractAnswer('gsm8k', 'x = 3\n#### 1,000'), '1000');
  assert.equal(extractAnswer('gsm8k', 'The answer is $1,000.00.'), '1000');
  assert.equal(extractAnswer('gsm8k', 'so 16-3 = 13 eggs'), '13');
  assert.equal(extractAnswer('gsm8k', 'it is -4 degrees'), '-4');
  assert.equal(extractAnswer('gsm8k', '<think>maybe 7? #### 7</think>\n\nThe answer is 8.'), '8');
  assert.equal(extractAnswer('aime24', 'thus $\\boxed{204}$'), '204');
  assert.equal(extractAnswer('gsm8k', 'no numbers here'), undefined);
  assert.ok(isCorrect('asdiv', 'The ratio is 3:4, so the answer is 3:4.', '3:4'));
  assert.ok(isCorrect('asdiv', 'The answer is -1/3.', '-(1/3)'));
});

test('numeric answers: a hedged or qualified value states no answer ("18 or 19", "not 18", "at least 18"); a restatement after a comma does; a remark after the answer does not replace it', () => {
  for (const t of ['The answer is 18 or 19.', 'The answer is either 18 or 19.', 'The answer is 18 to 19.', 'The answer is 18–19.', 'The answer is between 18 and 19.',
    'The answer is not 18.', 'The answer is not 18 but 19.', 'The answer is at least 18.', 'The answer is more than 18.', 'The answer is 18 and 19.',
    'The answer is 18 or more.', 'The answer is nearly 18.', '#### 18 or 19', '#### not 18', 'Final Answer: 18 or 19']) {
    assert.ok(!isCorrect('gsm8k', t, 18) && !isCorrect('gsm8k', t, 19), t);
  }
  for (const t of ['The answer is 18, or 2 * 9.', 'The answer is 18 dollars.', 'The answer is 18, not 19.', 'The answer is 18 apples to share.', 'The answer is approximately 18.']) assert.ok(isCorrect('gsm8k', t, 18), t);
  // The synthetic task's line holds the number alone.
  assert.ok(isCorrect('synthetic', '<think>\n1 + 6 = 7\n</think>\n\n#### 7', 7));
  for (const t of ['#### 7 or 8', '#### 7 + 1', '#### not 7', '#### 7-8', '#### 7:30', '#### 7,5', '#### 7e5']) assert.ok(!isCorrect('synthetic', t, 7), t);
  // ASDiv reads a phrase without a number as the answer (a name), but not after a stated number.
  for (const t of ['The answer is 9 apples.\nThe answer is correct.', 'The answer is 9.\nI hope the answer is helpful!']) assert.ok(isCorrect('asdiv', t, '9 (apples)'), t);
  assert.ok(isCorrect('asdiv', 'She has 5 apples and Tom 3. The answer is Tom.', 'Tom'));
  // Operations in words are worked expressions too: the result after "=" is the answer, not the first operand.
  for (const t of ['The answer is 20 minus 2 = 18.', 'The answer is 16 plus 2 = 18.', 'The answer is 36 divided by 2 = 18.', 'Answer: 6 multiplied by 3 = 18',
    'The answer is half of 36 = 18.', 'The answer is twice 9 = 18.', 'Half of 36 = 18, so the answer is 18.', 'The answer is $\\frac{36}{2} = 18$.', 'The answer is \\(\\frac{36}{2} = 18\\).']) {
    assert.ok(isCorrect('gsm8k', t, 18) && !isCorrect('gsm8k', t, Number(t.match(/\d+/)![0])), t);
  }
});

test('numeric answers: the last answer stated wins, its sentence after "=", LaTeX read as a value, ratios kept whole', () => {
  const x = (t: string, task: Task = 'gsm8k') => extractAnswer(task, t);
  assert.equal(x('The answer is 5 + 3 = 8.'), '8');
  assert.equal(x('The answer is 20 - 5 = 15 apples. That was easy.'), '15');
  assert.equal(x('Therefore, the answer is $100 + 13 = \\boxed{\\textbf{(113) }}$', 'aime24'), '113');
  assert.equal(x('so our answer is $25+8 = \\boxed{033}$', 'aime24'), '33');
  // markdown headings are not the GSM8K marker
  assert.equal(x('#### Step 1: add\n9 + 9 = 18\n#### Step 2: check\nThe answer is 18.'), '18');
  assert.equal(x('#### 2. Subtract\n12 - 5 = 7\n\nSo the answer is $\\boxed{7}$.', 'svamp'), '7');
  // a later correction beats an earlier statement; "answer is" without a number is no answer
  assert.equal(x('So the answer is 5.\nWait, 4 + 2 = 6.\n$\\boxed{6}$'), '6');
  assert.equal(x('Check: 9 + 9 = 18, so the answer is correct.\n#### 18'), '18');
  assert.equal(x('9 + 9 = 18. I verified it, so the answer is correct.'), '18');
  assert.equal(x('Answer: 18\nThis used 3 steps.'), '18');
  assert.equal(x('**Final Answer:** 18 (it took 2 hours)'), '18');
  // LaTeX boxes are values, not their first digit
  assert.ok(!isCorrect('amc23', '$\\boxed{\\frac{3}{4}}$', 3));
  assert.ok(isCorrect('amc23', '$\\boxed{\\frac{3}{4}}$', '0.75'));
  assert.ok(!isCorrect('amc23', '$\\boxed{3\\sqrt{3}}$', 3));
  assert.ok(!isCorrect('amc23', '$\\boxed{2^{10}}$', 2));
  assert.ok(!isCorrect('aime24', '$\\boxed{\\frac{204}{5}}$', 204));
  // ASDiv ratios and times are answers of their own
  assert.equal(x('The answer is 3:4.', 'asdiv'), '3:4');
  assert.notEqual(x('The answer is 3:5.', 'asdiv'), x('The answer is 3:4.', 'asdiv'));
  assert.ok(!isCorrect('asdiv', 'The answer is 3:5.', 3));
  assert.ok(isCorrect('asdiv', 'The answer is 3:30 pm.', '3:30 p.m.'));
  assert.ok(isCorrect('asdiv', 'The answer is Mrs. Hilt.', 'Mrs. Hilt'));
  // what models write around the answer
  for (const t of ['The answer is \\(18\\).', 'The answer is \\( 18 \\) dollars.', 'Answer: \\(18\\)', 'The answer is \\[18\\]', 'The answer is \\textbf{18}.',
    'Final Answer: The final answer is \\$18. I hope it is correct.', 'The answer is 18 = 9 + 9.', 'The answer is 18 (= 9 × 2).', 'The answer is 18 since 2 = 2.',
    'The answer is 18 dollars.', 'the answer is: $18', 'Answer: **18**', '#### 18 apples left\nCheck: 3 steps', '#### $18 per day\nI used 2 steps.',
    'To find the answer: add 9 and 9. That gives 18.']) assert.equal(x(t), '18', t);
  assert.equal(x('The answer is \\(-5\\).'), '-5');
  assert.equal(x('The answer is \\(3.5\\) hours.'), '3.5');
  assert.equal(x('Answer: Let\'s solve this step by step.\nShe has 9 + 9 = 18 apples.', 'asdiv'), '18');
  assert.equal(x('The answer is 18 apples.\nI double-checked the answer: it is right.', 'asdiv'), '18');
  // LaTeX and typographic operators, signs and separators; fractions as one number; large numbers as plain decimals
  for (const t of ['The answer is $12 \\times 3 = 36$.', 'The answer is $12 \\cdot 3 = 36$.', 'Final Answer: 12 x 3 = 36']) assert.equal(x(t), '36', t);
  assert.equal(x('The answer is 2x + 3 = 7, so 2.'), '2', 'an unknown x is no multiplication');
  assert.equal(x('The answer is \u22125.'), '-5');
  assert.equal(x('#### 10{,}000'), '10000');
  assert.ok(isCorrect('math500', '\\boxed{10{,}080}', '10,080'));
  assert.equal(x('Each friend gets 5/2 pies.'), '2.5');
  assert.equal(x('The answer is 1/2 of the pie.'), '0.5');
  // an expression left unworked is no number (its first number used to pass); "which is" states the result
  for (const t of ['The answer is 12 - 3.', 'The answer is 3 × 4 dollars.']) assert.ok(!isCorrect('gsm8k', t, 12) && !isCorrect('gsm8k', t, 3), t);
  assert.equal(x('The answer is 1/2 of 10, which is 5.'), '5');
  for (const t of ['The answer is 18, which is to say 9 + 9.', 'The answer is 18 apples, which is 6 more than 12.', 'The answer is 20 - 2 = 18 eggs, which is 9 pairs.',
    'The answer is 18 [9 + 9].', 'The answer is 18 because 9 + 9 is 18.', 'The answer is 18, or 2 * 9.']) assert.equal(x(t), '18', t);
  assert.equal(x('#### 1000000000000000000000'), '1000000000000000000000');
  assert.ok(isCorrect('gsm8k', '#### 1000000000000000000000', 1e21));
  assert.ok(isCorrect('gsm8k', 'The answer is 0.0000001', '0.0000001'));
});

test('numeric answers as models write them: a reason after the answer, units in a worked sum, numbered headings, a check after the box', () => {
  const x = (t: string, task: Task = 'gsm8k') => extractAnswer(task, t);
  // the answer, then why: the sum in the reason is not the answer
  for (const t of ['The answer is 18 because she sells 16 - 3 - 4 = 9 eggs.', 'The answer is $18, since she sells 16 - 3 - 4 = 9 eggs.',
    'Therefore the answer is \\boxed{18}.\n\nCheck: if the answer is 18, then 18/2 = 9 eggs were sold.',
    'So the final answer is \\boxed{18}.\n\nTo verify, the answer is consistent with 16 - 3 - 4 = 9 eggs sold.',
    // a worked sum with units or words between its numbers states its result
    'The answer is 9 eggs × $2 = $18.', 'The answer is 2 * 9, which equals 18.', 'The answer is 2 * 9 which gives 18.', 'The answer is half of 36, which is 18.',
    'The answer is 3 times 6 = 18.', 'The answer is 50% of 36, which is 18.', 'The answer is 20% of 90 = 18.',
    // numbered markdown headings on "####" lines are not answers
    '#### 1. **Eggs left**\n16 - 3 - 4 = 9\n#### 2. **Money**\n9 * 2 = 18\nJanet makes $18 every day.',
    '#### 1) **Eggs left**\n9 * 2 = 18\nJanet makes $18.', '#### 1. `Eggs`\n9 * 2 = 18\nJanet makes $18.', '#### 2 - Money\n9 * 2 = 18', '#### 2. $9 \\times 2$\n = 18',
    // a correction on the same line
    'I first thought the answer is 5, but the answer is 18.', 'The answer is 5. Wait, 9 + 9 = 18. The answer is 18.',
  ]) assert.equal(x(t), '18', t);
  assert.equal(x('The answer is: 5 hours * 60 = 300 minutes.'), '300');
  assert.equal(x('The answer is 60 minutes/hour × 5 hours = 300 minutes.'), '300');
  assert.equal(x('The answer is 18 dollars, since 9 eggs × $2 = $18.'), '18');
  assert.equal(x('#### 18. \nDone.'), '18'); // an answer with a full stop is no heading
  // ... nor one with words after it; a correction after a box wins, a remark after an answer does not
  for (const t of ['#### 18 - that is her daily income from 9 eggs', '#### 18 - **final answer**, from 6 * 3', '#### 18. (9 eggs x $2)', '#### 18) 9 eggs times 2',
    '\\boxed{5}\n\nFinal Answer: 18', '\\boxed{5}\n**Answer:** 18', '\\boxed{5}\n\nWait, I made an error: 9 * 2 = 18. So the answer is 18.',
    'The answer is 18; this answer is 2 more than the 16 she started with.', 'The answer is 18, and the answer is 2 dollars more than yesterday.']) assert.equal(x(t), '18', t);
  // MATH's dollar amounts inside $…$; ASDiv's ordinal and clock-time golds
  assert.ok(isCorrect('math500', 'Final Answer: The final answer is $\\$36$. I hope it is correct.', '\\$36'));
  assert.ok(isCorrect('math500', 'The answer is $\\$36$.', '\\$36'));
  for (const t of ['\\boxed{6}', '\\boxed{6th}', 'The answer is 6th.', "Danny's bus is 6th in line."]) assert.ok(isCorrect('asdiv', t, '6th'), t);
  assert.ok(!isCorrect('asdiv', '\\boxed{5th}', '6th'));
  assert.ok(isCorrect('asdiv', 'The answer is 12:50 p.m.', '12:50'));
  assert.ok(!isCorrect('asdiv', 'The answer is 12:50 p.m.', '12:50 a.m.'));
  assert.ok(!isCorrect('asdiv', 'The answer is 12:55.', '12:50'));
});

test('graders as standard graders judge: worked expressions, restatements, named roots, sets as lists, \\text units, a leading $…$', () => {
  const cases: [Task, string, string, boolean][] = [
    ['gsm8k', 'The answer is 5 + 3 = 8.', '8', true], // a worked expression states its result
    ['gsm8k', 'The answer is 2 × 9, because 2 × 9 = 18.', '18', true],
    ['gsm8k', 'The answer is 1/2 * 10 = 5.', '5', true],
    ['gsm8k', 'The answer is 2(3 + 4) = 14.', '14', true],
    ['gsm8k', 'The answer is 3 days later: 5 + 3 = 8.', '8', true],
    ['gsm8k', 'The answer is 0.5, or 50%.', '0.5', true], // a restatement
    ['gsm8k', 'The answer is 2, or 120 minutes.', '2', true],
    ['gsm8k', 'The answer is 10 / 2.', '5', false], // a division left unworked, as "10 - 5" (it was read as the fraction 5)
    ['gsm8k', 'The answer is 10/2.', '5', true], // a fraction
    ['math500', '\\boxed{x = 3, x = 5, x = 7}', '3, 5, 7', true], // every root named
    ['math500', '\\boxed{x=1, x=-2}', '1,-2', true],
    ['math500', '\\boxed{\\{1,-2\\}}', '1,-2', true], // a set and a bare list of its elements
    ['math500', '\\boxed{1\\pm\\sqrt{5}, -2}', '\\{1\\pm\\sqrt{5},-2\\}', true],
    ['math500', '\\boxed{(1,-2)}', '1,-2', false], // a point is not a list
    ['math500', '\\boxed{\\{1,3\\}}', '1,2', false],
    ['asdiv', 'The show ends at $\\boxed{3:30 \\text{ p.m.}}$', '3:30 p.m.', true],
    ['asdiv', 'The answer is $\\frac{5}{2}$ pounds.', '5/2', true],
    // An empty box or the word after the answer (an echoed instruction) leaves the answer's box as the last one.
    ['math500', 'So $x=\\boxed{5}$.\n\nPlease reason step by step, and put your final answer within \\boxed{}.', '5', true],
    ['math500', 'The answer is \\boxed{5}. (I put it in \\boxed.)', '5', true],
    ['gsm8k', '\\boxed{18}\n\nNote: \\boxed{} holds the answer.', '18', true],
    ['math500', '\\boxed{5}\nWait: \\boxed{7', '5', false], // a box cut off mid-way is no answer, not the one before it
    // LaTeX's ~ is a space; an ASDiv phrase's spacing, separate \text groups, ordinals, bold and a curly apostrophe.
    ['math500', '\\boxed{5.4~\\text{cents}}', '5.4', true],
    ['gsm8k', '\\boxed{18~\\text{dollars}}', '18', true],
    ['asdiv', '\\boxed{\\text{Mrs. } \\text{Hilt}}', 'Mrs. Hilt', true],
    ['asdiv', 'The answer is \\text{Mrs.~Hilt}.', 'Mrs. Hilt', true],
    ['asdiv', 'The show ends at $\\boxed{3{:}30\\ \\text{p.m.}}$', '3:30 p.m.', true],
    ['asdiv', 'The answer is **Yes**.', 'Yes', true],
    ['asdiv', 'The answer is Jake’s stables.', "Jake's stables", true],
  ];
  for (const [task, reply, gold, want] of cases) assert.equal(isCorrect(task, reply, gold), want, `${task}: ${reply} (gold ${gold})`);
  // ... and the synthetic task's "####" line pays no reward for one (it did)
  assert.deepEqual(['#### 10 / 2', '#### 10/2', '#### 5'].map((a) => isCorrect('synthetic', `<think> 5 * 2 = 10 </think> ${a}`, 5)), [false, true, true]);
});

test('aime24: every gold solution grades correct against its answer; aime24 and amc23: the boxed answer grades correct, its neighbour wrong', () => {
  for (const task of ['aime24', 'amc23'] as const) {
    const rows = readFileSync(sharedPath(`data/${task}/test.jsonl`), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(rows.length, task === 'aime24' ? 30 : 40, `${task}: questions`);
    // AIME 2024's rows carry worked solutions; AMC 2023's only answers.
    const withSolution = rows.filter((r) => typeof r.solution === 'string');
    assert.equal(withSolution.length, task === 'aime24' ? 30 : 0, `${task}: rows with a solution`);
    const failures = withSolution.filter((r) => !isCorrect(task, r.solution, r.answer)).map((r) => `${r.id}: ${r.answer}`);
    assert.deepEqual(failures, [], `${task} gold solutions graded wrong`);
    for (const r of rows) {
      assert.ok(isCorrect(task, `The answer is $\\boxed{${r.answer}}$.`, r.answer), `${task} ${r.id}: boxed gold`);
      assert.equal(isCorrect(task, `The answer is $\\boxed{${Number(r.answer) + 1}}$.`, r.answer), false, `${task} ${r.id}: boxed gold + 1`);
    }
  }
});

// ---------------------------------------------------------------------------------------------------------
// Synthetic generator

const isMath = (i: Item): i is MathItem => i.kind === 'math';

test('synthetic: same seed gives identical items (golden hash guards cross-machine determinism)', () => {
  const a = makeSplits({ train: 300, val: 100, test: 100, seed: 7 }), b = makeSplits({ train: 300, val: 100, test: 100, seed: 7 });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a.train.slice(0, 50), makeSplits({ train: 50, val: 0, test: 0, seed: 8 }).train);
  const g = makeSplits({ train: 50, val: 20, test: 20, seed: 7 }), r = new Rng(1);
  const digest = createHash('sha256').update(JSON.stringify(g) + g.train.map((i) => formatThinking(i, 'verbose', r)).join('')).digest('hex');
  // changes when templates or the PRNG change: then rebuild the tokenizer (src/tasks/vocab.ts) and update this hash
  assert.equal(digest, '12ab918a72631aefc5a2bce209b1b3ad1052364ff3f1586eecccecd4c38711d8');
});

test('synthetic: a mix with an unknown category or a weight that is no number ≥ 0 is refused by name (was a TypeError, or the weight dropped)', () => {
  const splits = (mix: unknown) => () => makeSplits({ train: 3, val: 0, test: 0, mix: mix as Mix });
  assert.throws(splits({ easy: 1, hrad: 1 }), { message: 'synthetic: mix has the category "hrad"; the categories are easy, medium, hard and chat' });
  assert.throws(splits({ Easy: 1 }), { message: 'synthetic: mix has the category "Easy"; the categories are easy, medium, hard and chat' });
  assert.throws(splits({ easy: 1, medium: -1 }), { message: 'synthetic: mix weight of medium must be a finite number ≥ 0, got -1' });
  assert.throws(splits({ easy: '1' }), { message: 'synthetic: mix weight of easy must be a finite number ≥ 0, got "1"' });
  assert.throws(splits([1]), { message: 'synthetic: mix must be an object of weights by category (easy, medium, hard, chat), got [1]' });
  assert.deepEqual(makeSplits({ train: 3, val: 0, test: 0, mix: { hard: 1, chat: 0 } }).train.map((i) => (i as MathItem).difficulty), ['hard', 'hard', 'hard']);
});

test('synthetic: splits never overlap (5000 items each)', () => {
  const s = makeSplits({ train: 5000, val: 5000, test: 5000, seed: 3 });
  const keys = { train: new Set<string>(), val: new Set<string>(), test: new Set<string>() };
  for (const split of ['train', 'val', 'test'] as const) {
    assert.equal(s[split].length, 5000);
    for (const it of s[split]) { keys[split].add(questionKey(it.question)); assert.equal(splitOf(it), split); }
  }
  for (const [x, y] of [['train', 'val'], ['train', 'test'], ['val', 'test']] as const) {
    const shared = [...keys[x]].filter((k) => keys[y].has(k));
    assert.deepEqual(shared, [], `${x} and ${y} share questions`);
  }
  const ids = [...s.train, ...s.val, ...s.test].map((i) => i.id);
  assert.equal(new Set(ids).size, ids.length, 'ids are unique (disjoint seed ranges)');
  assert.equal(keys.test.size, 5000, 'test questions are distinct');
  for (const split of ['train', 'val', 'test'] as const) assert.ok(s[split].some((i) => i.kind === 'chat') && s[split].some(isMath));
});

test('synthetic: op counts per difficulty; steps are correct non-negative integer arithmetic ending at the answer', () => {
  const check = (it: MathItem, max: number) => {
    assert.equal(it.steps.length, it.ops);
    let last = NaN;
    for (const s of it.steps) {
      const m = /^(\d+) ([-+*/]) (\d+) = (\d+)$/.exec(s);
      assert.ok(m, `bad step line "${s}"`);
      const [a, b, c] = [m[1], m[3], m[4]].map(Number);
      const want = m[2] === '+' ? a + b : m[2] === '-' ? a - b : m[2] === '*' ? a * b : a / b;
      assert.equal(c, want, `wrong step "${s}" in ${it.question}`);
      assert.ok(Number.isInteger(c) && c >= 0 && c <= max, `value out of range in "${s}"`);
      last = c;
    }
    assert.equal(last, it.answer);
    for (const n of it.question.match(/\d+(?!\d|%)/g) ?? []) assert.ok(Number(n) <= max, `number ${n} above maxValue in ${it.question}`);
  };
  for (const d of ['easy', 'medium', 'hard'] as const) {
    const items = Array.from({ length: 1500 }, (_, i) => generateItem(11, i, { [d]: 1 })).filter(isMath);
    assert.equal(items.length, 1500);
    const ops = new Set(items.map((i) => i.ops));
    assert.deepEqual([...ops].sort(), Array.from({ length: DIFFICULTY[d].maxOps - DIFFICULTY[d].minOps + 1 }, (_, k) => DIFFICULTY[d].minOps + k));
    items.forEach((it) => check(it, DIFFICULTY[d].maxValue));
  }
  assert.ok(Array.from({ length: 200 }, (_, i) => generateItem(11, i, { easy: 1 }) as MathItem).every((i) => i.ops <= 2));
  assert.ok(Array.from({ length: 200 }, (_, i) => generateItem(11, i, { hard: 1 }) as MathItem).every((i) => i.ops >= 4));
  for (let ops = 1; ops <= 8; ops++) for (let i = 0; i < 100; i++) check(generateMath(new Rng(i * 8 + ops), { ops, maxValue: 30 }), 30);
  assert.throws(() => generateMath(new Rng(1), { ops: 9, maxValue: 100 }), /ops must be/);
});

test('synthetic: canonical answers grade correct, perturbed ones wrong', () => {
  const items = makeSplits({ train: 1000, val: 0, test: 0, seed: 5 }).train, r = new Rng(2);
  for (const it of items) {
    const reply = formatResponse(it, 'verbose', r);
    assert.ok(isCorrect('synthetic', reply, it.answer), `canonical reply graded wrong: ${reply}`);
    assert.ok(isCorrect('synthetic', formatAnswer(it), it.answer));
    if (isMath(it)) {
      assert.equal(formatAnswer(it), `#### ${it.answer}`);
      assert.ok(!isCorrect('synthetic', `#### ${it.answer + 1}`, it.answer));
      assert.ok(!isCorrect('synthetic', `${it.steps.join('\n')}`, it.answer), 'an answer without "####" is wrong');
      assert.ok(!isCorrect('synthetic', `<think>\n#### ${it.answer}\n</think>\n\n#### ${it.answer - 1}`, it.answer));
    } else {
      assert.ok(isCorrect('synthetic', `  ${it.answer} \n`, it.answer));
      // exact, case included: "upper-case this word" answered in lower case is wrong
      if (it.answer !== it.answer.toLowerCase()) assert.ok(!isCorrect('synthetic', it.answer.toLowerCase(), it.answer), `case-folded reply graded correct: ${it.answer}`);
      assert.ok(!isCorrect('synthetic', `${it.answer} Anything else?`, it.answer));
    }
  }
});

test('synthetic: verbose traces are at least 2.5x longer than concise ones, and vary', () => {
  const tok = loadTokenizer(path.join(root, 'models/default'));
  let concise = 0, verbose = 0;
  const lengths = new Set<number>();
  const items = Array.from({ length: 600 }, (_, i) => generateItem(13, i, { easy: 1, medium: 1, hard: 1 })).filter(isMath);
  items.forEach((it, i) => {
    const c = formatThinking(it, 'concise', new Rng(i)), v = formatThinking(it, 'verbose', new Rng(i));
    assert.equal(c, it.steps.join('\n'));
    concise += tok.encode(c).length; verbose += tok.encode(v).length;
    if (i < 20) for (let s = 0; s < 10; s++) lengths.add(formatThinking(items[0], 'verbose', new Rng(1000 * i + s)).length);
  });
  assert.ok(verbose / concise >= 2.5, `verbose/concise token ratio ${(verbose / concise).toFixed(2)}`);
  assert.ok(lengths.size > 20, 'verbose lengths vary for the same problem');
});

// ---------------------------------------------------------------------------------------------------------
// Tokenizer for the synthetic world

test('tokenizer: committed files match src/tasks/vocab.ts output', () => {
  const { tokenizerJson, tokenizerConfig } = buildTokenizerFiles();
  const read = (f: string) => JSON.parse(readFileSync(path.join(root, 'models/default', f), 'utf8'));
  assert.deepEqual(read('tokenizer.json'), tokenizerJson, 'run: node --import tsx src/tasks/vocab.ts');
  assert.deepEqual(read('tokenizer_config.json'), tokenizerConfig, 'run: node --import tsx src/tasks/vocab.ts');
});

test('tokenizer: every generated text round-trips exactly, word by word, with no <unk>', () => {
  const tok = loadTokenizer(path.join(root, 'models/default'));
  const unk = tok.tokenToId('<unk>')!;
  const s = makeSplits({ train: 1500, val: 500, test: 500, seed: 99 }), r = new Rng(4);
  for (const it of [...s.train, ...s.val, ...s.test]) {
    for (const text of [it.question, formatThinking(it, 'concise', r), formatThinking(it, 'verbose', r), formatAnswer(it)]) {
      const ids = tok.encode(text);
      assert.ok(!ids.includes(unk), `<unk> in ${JSON.stringify(text)}`);
      assert.equal(tok.decode(ids), text);
      assert.equal(ids.length, pretokenize(text).length, `a word fell back to characters in ${JSON.stringify(text)}`);
    }
    const chat = tok.applyChatTemplate([{ role: 'user', content: it.question }, { role: 'assistant', content: formatResponse(it, 'verbose', r) }]);
    const ids = tok.encode(chat);
    assert.ok(!ids.includes(unk));
    assert.equal(tok.decode(ids), chat);
  }
});

test('tokenizer: digits split one by one, special tokens, ChatML template', () => {
  const tok = loadTokenizer(path.join(root, 'models/default'));
  const pieces = (t: string) => tok.encode(t).map((i) => tok.tokenizer.id_to_token(i));
  assert.deepEqual(pieces('Mia has 123 apples.\n#### 42'), ['Mia', '▁has', '▁', '1', '2', '3', '▁apples', '.', '\n', '####', '▁', '4', '2']);
  assert.deepEqual(pieces('Zebra'), ['Z', 'e', 'b', 'r', 'a'], 'unknown words fall back to letters');
  for (const t of ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<think>', '</think>']) assert.deepEqual(tok.encode(t), [tok.tokenToId(t)]);
  assert.equal(tok.vocabSize, Object.keys(buildTokenizerFiles().tokenizerJson.model.vocab).length);
  assert.ok(tok.vocabSize < 1000, `vocab size ${tok.vocabSize}`);
  assert.deepEqual(tok.eosTokenIds, [tok.tokenToId('<|im_end|>')]);
  assert.equal(tok.decode(tok.encode('<think>\n1 + 2 = 3\n</think>\n\n#### 3<|im_end|>'), { skipSpecialTokens: true }), '<think>\n1 + 2 = 3\n</think>\n\n#### 3');
  assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'Hi!' }], { addGenerationPrompt: true }),
    '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n');
  assert.equal(tok.applyChatTemplate([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi!' }], { addGenerationPrompt: true, vars: { enable_thinking: false } }),
    '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n');
});
