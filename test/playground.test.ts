/**
 * The playground page in a real browser: headless Chromium (Debian package `chromium`) driven by playwright-core
 * sends questions through the page and checks the streamed thinking and answer, the route, votes and timings.
 * Set UPDATE_SCREENSHOTS=1 to rewrite docs/playground.png.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createServer } from '../src/server/app.ts';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

function chromiumPath(): string | undefined {
  return [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p): p is string => !!p && fs.existsSync(p));
}

/** Runs `body` on the playground of the embedded default in headless Chromium (skipped without Chromium, failed on CI); page errors are collected in `errors`. */
async function inPlayground(t: TestContext, body: (page: Page, url: string, errors: string[]) => Promise<void>, serverOptions: Partial<Parameters<typeof createServer>[0]> = {}): Promise<void> {
  const exe = chromiumPath();
  if (!exe) {
    if (process.env.CI) assert.fail('headless Chromium is missing: install the Debian package "chromium" (apt-get install -y chromium) or set CHROMIUM_PATH');
    t.skip('no Chromium (apt-get install -y chromium)');
    return;
  }
  const server = await createServer({ model: path.join(ROOT, 'models/default'), port: 0, ctx: 512, ...serverOptions });
  const url = await server.listen();
  let browser: Browser | undefined;
  try {
    browser = await chromium.launch({ executablePath: exe, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
    const page = await browser.newPage({ viewport: { width: 1200, height: 760 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(url);
    await page.waitForFunction(() => (document.getElementById('model') as HTMLSelectElement).options.length >= 2);
    await body(page, url, errors);
  } finally {
    await browser?.close();
    await server.close(1000);
  }
}

test('playground: Stop ends a streaming reply; Enter while one streams sends nothing; a base model answers with reasoning off', (t) => inPlayground(t, async (page, url, errors) => {
  // A long sampled reply: while it streams, Enter sends nothing and the button is Stop; Stop ends it.
  await page.selectOption('#reasoning', 'on');
  await page.fill('#n', '8');
  await page.fill('#temperature', '1.5');
  await page.fill('#max-tokens', '400');
  await page.fill('#prompt', 'Jack starts with 15 marbles. He buys 4 bags with 4 marbles in each bag. He gives half of his marbles to Emma. How many marbles does Jack have at the end?');
  await page.click('#send');
  await page.waitForFunction(() => (document.querySelector('.turn .sample .text')?.textContent ?? '').length > 0 || document.querySelector('.turn .error'), undefined, { timeout: 60_000 });
  assert.equal(await page.$('.turn .error'), null, 'the reply failed');
  assert.equal(await page.textContent('#send'), 'Stop');
  await page.fill('#prompt', 'What is the capital of Jastow?');
  await page.press('#prompt', 'Enter');
  assert.equal(await page.$$eval('.user', (els) => els.length), 1, 'Enter while a reply streams sent another question');
  await page.click('#send');
  await page.waitForFunction(() => document.querySelector('.turn .error')?.textContent === 'Stopped.', undefined, { timeout: 30_000 });
  assert.equal(await page.textContent('#send'), 'Send');
  assert.equal(await page.$$eval('.turn.ended', (els) => els.length), 1, 'its unanswered samples show no "…" that waits forever');
  for (const end = Date.now() + 10_000; !/edgereason_cancelled_total [1-9]/.test(await (await fetch(`${url}/metrics`)).text());) {
    assert.ok(Date.now() < end, 'the server never saw the request cancelled');
    await new Promise((r) => setTimeout(r, 50));
  }
  // The question typed meanwhile is still there, and goes now.
  assert.equal(await page.inputValue('#prompt'), 'What is the capital of Jastow?');
  await page.selectOption('#reasoning', 'off');
  await page.fill('#n', '1');
  await page.fill('#temperature', '0');
  await page.press('#prompt', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('.turn').length === 2 && /tok\/s/.test(document.getElementById('tps')?.textContent ?? ''), undefined, { timeout: 60_000 });
  assert.deepEqual(await page.$$eval('.turn:last-child .sample .answer', (els) => els.map((e) => e.textContent)), ['Pirra']);
  // The base model cannot reason: reasoning goes off and the effort with it (they were refused with a 400 before).
  await page.selectOption('#reasoning', 'on');
  await page.selectOption('#model', 'default');
  assert.deepEqual([await page.inputValue('#reasoning'), await page.isDisabled('#reasoning'), await page.isDisabled('#effort')], ['off', true, true]);
  // Back on the adapter, the reasoning chosen before comes back (it stayed off, unnoticed).
  await page.selectOption('#model', 'reasoning');
  assert.deepEqual([await page.inputValue('#reasoning'), await page.isDisabled('#reasoning'), await page.isDisabled('#effort')], ['on', false, false]);
  assert.deepEqual(errors, []);
  // A model list that cannot be read is said on the page, and nothing can be sent (the list was empty, unexplained).
  await page.route('**/v1/models', (r) => r.fulfill({ status: 503, contentType: 'application/json', body: JSON.stringify({ error: { message: 'the server is shutting down' } }) }));
  await page.reload();
  await page.waitForSelector('#log .error');
  assert.equal(await page.textContent('#log .error'), 'Could not list the models (GET /v1/models): the server is shutting down. Is the server running? Reload the page to try again.');
  assert.equal(await page.isDisabled('#send'), true);
  const posts: string[] = [];
  page.on('request', (r) => { if (r.method() === 'POST') posts.push(r.url()); });
  await page.fill('#prompt', 'What is the capital of Jastow?');
  await page.press('#prompt', 'Enter');
  await page.waitForTimeout(300);
  assert.deepEqual(posts, [], 'Enter sends nothing either');
}));

test('playground: a question streams thinking and answer into the page; route, votes, TTFT and tokens/s shown', (t) => inPlayground(t, async (page, url, errors) => {
  assert.equal(await page.inputValue('#model'), 'reasoning', 'the reasoning adapter is preselected');

  // Reasoning on, 3 samples: three thinking/answer pairs stream in, the vote and the chosen sample are shown.
  const question = 'At first, Ella has 5 marbles. Ella sells 3 marbles. Leo gives her 3 marbles. How many marbles does Ella end up with?';
  await page.selectOption('#reasoning', 'on');
  // n above 1 samples at 0.8 (three greedy samples would be one answer thrice) until the temperature is set by hand.
  await page.fill('#n', '3');
  assert.equal(await page.inputValue('#temperature'), '0.8');
  await page.fill('#temperature', '0'); // greedy: the API's answers below are the same
  await page.fill('#n', '2');
  await page.fill('#n', '3');
  assert.equal(await page.inputValue('#temperature'), '0');
  await page.fill('#max-tokens', '48');
  // Count the answer/thinking text updates to see that text arrives in pieces (streaming), not at once.
  await page.evaluate(() => {
    (window as any).updates = 0;
    new MutationObserver((m) => { (window as any).updates += m.length; }).observe(document.getElementById('log')!, { subtree: true, characterData: true, childList: true });
  });
  await page.fill('#prompt', question);
  await page.click('#send');
  await page.waitForFunction(() => /tok\/s/.test(document.getElementById('tps')?.textContent ?? ''), undefined, { timeout: 60_000 });
  const samples = await page.$$eval('.turn:last-child .sample', (els) => els.map((e) => ({
    thinking: e.querySelector('details.thinking .text')!.textContent, answer: e.querySelector('.answer')!.textContent, chosen: e.classList.contains('chosen'),
  })));
  assert.equal(samples.length, 3);
  assert.equal(await page.textContent('#route'), 'reasoning');
  assert.ok(await page.isVisible('#votes'), 'votes are shown for n > 1');
  assert.equal(samples.filter((s) => s.chosen).length, 1, 'the chosen sample is marked');
  assert.equal(await page.textContent('.turn:last-child .sample.chosen .mark'), '✓ the voted answer', 'in words too, not by its outline alone');
  assert.match((await page.textContent('#ttft'))!, /^\d+ ms$/);
  assert.ok(await page.evaluate(() => (window as any).updates) > 6, 'text arrived in several pieces');
  // The page shows what the API returns for the same request (greedy, so the seed does not matter).
  const api = await (await fetch(`${url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'reasoning', messages: [{ role: 'user', content: question }], n: 3, temperature: 0, max_tokens: 48, edgereason: { reasoning: 'on' } }),
  })).json();
  assert.deepEqual(samples.map((s) => s.answer), api.choices.map((c: { message: { content: string } }) => c.message.content));
  assert.deepEqual(samples.map((s) => s.thinking), api.choices.map((c: { message: { reasoning_content: string } }) => c.message.reasoning_content));
  assert.ok(samples.some((s) => s.thinking), 'the thinking segments appeared');

  // Reasoning off: one direct answer, no thinking segment.
  await page.selectOption('#reasoning', 'off');
  await page.fill('#n', '1');
  await page.fill('#temperature', '0.8');
  await page.fill('#seed', '4');
  await page.fill('#prompt', 'What is the capital of Jastow?');
  await page.check('#keep'); // this question goes with the conversation so far (by default each stands alone)
  await page.click('#send');
  await page.waitForFunction(() => document.querySelectorAll('.turn').length === 2 && /tok\/s/.test(document.getElementById('tps')?.textContent ?? ''), undefined, { timeout: 60_000 });
  assert.equal(await page.textContent('#route'), 'direct');
  const direct = await page.$$eval('.turn:last-child .sample .answer', (els) => els.map((e) => e.textContent));
  const history = [{ role: 'user', content: question }, { role: 'assistant', content: samples[api.edgereason.chosen].answer }, { role: 'user', content: 'What is the capital of Jastow?' }];
  const api2 = await (await fetch(`${url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'reasoning', messages: history, temperature: 0.8, seed: 4, max_tokens: 48, edgereason: { reasoning: 'off' } }),
  })).json();
  assert.deepEqual(direct, [api2.choices[0].message.content], 'the streamed answer (with the conversation so far) equals the API\'s');
  assert.ok(direct[0], 'an answer appeared');
  // The conversation so far came from the prompt cache: the tokens line says how much.
  assert.match((await page.textContent('#tokens'))!, /^\d+ prompt \([1-9]\d* cached\), \d+ generated \(0 thinking\)$/);
  assert.equal(await page.$$eval('.turn:last-child .sample.direct', (els) => els.length), 1, 'no thinking panel on the direct route');
  assert.deepEqual(errors, []);

  const shot = process.env.UPDATE_SCREENSHOTS ? path.join(ROOT, 'docs/playground.png') : path.join(os.tmpdir(), 'edgereason-playground.png');
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(fs.statSync(shot).size > 10_000);

  // New conversation clears the page and the conversation: the next question goes alone, "keep history" ticked or not
  // (there was no way to start over but a reload, once a conversation outgrew the context).
  const sent: number[] = [];
  page.on('request', (r) => { if (r.url().endsWith('/v1/chat/completions')) sent.push(JSON.parse(r.postData() ?? '{}').messages.length); });
  await page.click('#new');
  assert.equal(await page.$$eval('#log > *', (els) => els.length), 0);
  await page.fill('#prompt', 'What is the capital of Jastow?');
  await page.click('#send');
  await page.waitForFunction(() => document.querySelectorAll('.turn').length === 1 && /tok\/s/.test(document.getElementById('tps')?.textContent ?? ''), undefined, { timeout: 60_000 });
  assert.deepEqual(sent, [1]);
  assert.deepEqual(errors, []);

  // Reasoning auto in a fresh conversation: the router's gate escalates the base's unsure answer, and the page says so.
  await page.reload();
  await page.waitForFunction(() => (document.getElementById('model') as HTMLSelectElement).options.length >= 2);
  await page.selectOption('#reasoning', 'auto');
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '100');
  const zoe = 'Zoe has 7 dollars. She sells 4 kites for 3 dollars each. How many dollars does Zoe have now?';
  assert.match(await page.getAttribute('#prompt', 'placeholder') ?? '', new RegExp(zoe.replace(/[.?]/g, '\\$&')), 'the suggested question is one the model answers');
  await page.fill('#prompt', 'What is the capital of France?');
  await page.click('#send');
  await page.waitForFunction(() => /tok\/s/.test(document.getElementById('tps')?.textContent ?? ''), undefined, { timeout: 60_000 });
  await page.fill('#prompt', zoe);
  await page.click('#send');
  await page.waitForFunction(() => document.querySelectorAll('.turn').length === 2 && /tok\/s/.test(document.getElementById('tps')?.textContent ?? ''), undefined, { timeout: 60_000 });
  // The second question stood alone (history off by default): the same answer as in a fresh conversation.
  assert.equal(await page.textContent('#route'), 'reasoning (router 0.18) · escalated: the direct answer "#### 17" was unsure');
  assert.deepEqual(await page.$$eval('.turn:last-child .sample .answer', (els) => els.map((e) => e.textContent)), ['#### 19']);
  assert.deepEqual(errors, []);
}));

test('playground on a server started with --reasoning-format inline: the thinking in the content goes to the thinking panel', (t) => inPlayground(t, async (page, url, errors) => {
  const question = 'At first, Ella has 5 marbles. Ella sells 3 marbles. Leo gives her 3 marbles. How many marbles does Ella end up with?';
  await page.selectOption('#reasoning', 'on');
  await page.fill('#max-tokens', '48');
  await page.fill('#prompt', question);
  await page.click('#send');
  await page.waitForFunction(() => /tok\/s/.test(document.getElementById('tps')?.textContent ?? ''), undefined, { timeout: 60_000 });
  const shown = await page.$$eval('.turn:last-child .sample', (els) => els.map((e) => [e.querySelector('details.thinking .text')!.textContent, e.querySelector('.answer')!.textContent]));
  const api = await (await fetch(`${url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'reasoning', messages: [{ role: 'user', content: question }], temperature: 0, max_tokens: 48, edgereason: { reasoning: 'on' } }),
  })).json();
  const [, thinking, answer] = /^<think>([\s\S]*)<\/think>([\s\S]*)$/.exec(api.choices[0].message.content)!;
  assert.ok(thinking, 'it thought');
  assert.deepEqual(shown, [[thinking, answer]]);
  assert.deepEqual(errors, []);
}, { reasoningFormat: 'inline' }));
