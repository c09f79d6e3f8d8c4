/**
 * `npm run demo`, the README's first command: the embedded default answering with and without reasoning, routed,
 * capped and voted. Greedy lines are checked to the token; sampled ones by their shape.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

test('npm run demo: direct, reasoning, routed, capped, voted and escalated answers from the embedded default', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [path.join(root, 'bin/edgereason.js'), 'demo'], { cwd: root, timeout: 120_000 });
  const lines = stdout.split('\n');
  const after = (prefix: string, from = 0) => {
    const i = lines.findIndex((l, k) => k >= from && l.startsWith(prefix));
    assert.ok(i >= 0, `demo output has a line starting ${JSON.stringify(prefix)}:\n${stdout}`);
    return { line: lines[i], result: lines[i + 1], at: i };
  };
  assert.match(lines[0], /^edgereason demo — .*models\/default: qwen2 architecture, 2\.5M parameters \(6 layers, hidden 192, vocab 826\), trained by edgereason from scratch on a synthetic task \(word problems and facts about a made-up world\): it shows the mechanisms, not a real LLM's answers; reasoning adapter: reasoning-adapter \(activated LoRA, invocation <think>\), budget-forced: reasoning-adapter-rl; router loaded; verifier loaded$/);

  const chat = after('Q (chat): Can you help me? Tell me the capital of Jastow.');
  const chatDirect = after('  base model, no reasoning   : ', chat.at);
  assert.equal(chatDirect.line, '  base model, no reasoning   : Pirra');
  assert.match(chatDirect.result, /^ {4}→ correct; route direct; 0 thinking \+ 1 answer tokens; TTFT [\d.]+ ms; total \d+ ms$/);
  assert.match(after('  router decides (auto)      : ', chat.at).result, /→ correct; route direct \(router 0\.00\)/);

  const hard = after('Q (hard, 6 steps): Jack starts with 15 marbles.');
  const trace = '<think> 4 * 4 = 16 15 + 16 = 31 31 + 2 = 33 33 - 19 = 14 14 * 2 = 28 28 / 2 = 14 </think> #### 14';
  assert.equal(after('  base model, no reasoning   : ', hard.at).line, '  base model, no reasoning   : #### 11');
  const on = after('  reasoning adapter on       : ', hard.at);
  assert.equal(on.line, `  reasoning adapter on       : ${trace}`);
  assert.match(on.result, /→ correct; route reasoning; 62 thinking \+ 6 answer tokens;/);
  const auto = after('  router decides (auto)      : ', hard.at);
  assert.equal(auto.line, `  router decides (auto)      : ${trace}`);
  assert.match(auto.result, /→ correct; route reasoning \(router 0\.92\); 62 thinking/);
  const capped = after('  SFT, thinking capped at 48 : ', hard.at);
  assert.equal(capped.line, '  SFT, thinking capped at 48 : <think> 4 * 4 = 16 15 + 16 = 31 31 + 2 = 33 33 - 19 = 14 14 * 2 </think> #### 14');
  assert.match(capped.result, /route reasoning; 48 thinking \+ 6 answer tokens/);
  assert.match(after('  SFT adapter, sampled T 1   : <think> ', hard.at).result, /→ (correct|wrong \(gold 14\)); route reasoning; \d+ thinking/);
  assert.match(after('  RL adapter, same sampling  : <think> ', hard.at).result, /→ (correct|wrong \(gold 14\)); route reasoning; \d+ thinking/);
  assert.match(after('  RL, same, budget line 96   : <think> ', hard.at).result, /→ (correct|wrong \(gold 14\)); route reasoning; \d+ thinking/);
  const voted = after('  8 samples T 0.8, majority  : (sample 1 of 8) <think> ', hard.at);
  assert.match(voted.result, /^ {4}→ votes (\d+( ×\d+)?(, )?)+ → sample [1-8]'s answer "#### \d+": (correct|wrong \(gold 14\)); route reasoning; \d+ thinking \+ \d+ answer tokens over the 8 samples;/);
  const tally = /votes (.*?) →/.exec(voted.result)![1].split(', ').map((v) => Number(v.split(' ×')[1] ?? 1));
  assert.equal(tally.reduce((a, b) => a + b, 0), 8, 'eight candidates voted');
  // The same 8 samples, weighted by the verifier: the same sample 1; each answer's summed scores, largest first.
  const weighted = after('  same 8, verifier-weighted  : (sample 1 of 8) <think> ', hard.at);
  assert.equal(weighted.line.split(': ').slice(1).join(': '), voted.line.split(': ').slice(1).join(': '));
  const weights = /votes (.*?) →/.exec(weighted.result)![1].split(', ').map((v) => Number(v.split(' ')[1]));
  assert.ok(weights.every((w, i) => w > 0 && (i === 0 || w <= weights[i - 1])), weighted.result);
  assert.equal(after('  reasoning adapter on       : ', chat.at).line.startsWith('  reasoning adapter on       : <think> '), true, 'a chat answer with the adapter shows its (empty) thinking');

  const gate = after("Q (easy, 2 steps; the router's gate at work): Zoe has 7 dollars.");
  assert.equal(after('  base model, no reasoning   : ', gate.at).line, '  base model, no reasoning   : #### 17');
  const escalated = after('  router decides (auto)      : ', gate.at);
  assert.equal(escalated.line, '  router decides (auto)      : <think> 4 * 3 = 12 7 + 12 = 19 </think> #### 19');
  assert.match(escalated.result, /→ correct; route reasoning \(router 0\.18, escalated: the direct answer "#### 17" had a token at p = 0\.28\); 20 thinking \+ 6 answer tokens \(31 generated in all, the dropped direct attempt and the tags included\);/);
});

test('demo interrupted by SIGINT after its first question exits 130 saying so (it ended silently)', async () => {
  const child = spawn(process.execPath, [path.join(root, 'bin/edgereason.js'), 'demo'], { cwd: root });
  let stdout = '', stderr = '';
  child.stdout.on('data', (d) => { stdout += d; if (/^Q \(/m.test(stdout)) child.kill('SIGINT'); });
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = await new Promise<[number | null, string | null]>((resolve) => child.on('exit', (code, signal) => resolve([code, signal])));
  assert.deepEqual([exited, stderr.trimEnd().split('\n').at(-1)], [[130, null], 'demo: interrupted'], stderr);
  assert.doesNotMatch(stdout, /the router's gate at work/, 'stopped before the last question');
});
