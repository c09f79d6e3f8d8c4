import { fraction } from '../show.ts';
import type { Command } from 'commander';
import { loadModelWithProgress, ropeScalingOf, ropeScalingOptions } from './load.ts';
import { trainVerifier } from '../reason/verifier.ts';
import { floatArg, intArg, quantArg } from './main.ts';
import { aucText, LABEL_TASKS, labelItems, labelTaskOptions, modelText, probeOutCheck, stageProgress } from './train-router.ts';
import { taskFileOf } from './train-rl.ts';
import { beforeDownload } from './outputs.ts';

const outCheck = probeOutCheck('verifier JSON', 'verifier.json', 'edgereason-verifier');

export function trainVerifierCommand(program: Command): void {
  ropeScalingOptions(labelTaskOptions(program.command('train-verifier'))
    .description('train the answer verifier (a probe on the hidden state at each sampled candidate\'s end) and write verifier.json')
    .requiredOption('--model <path>', 'base model')
    .option('--adapter <dir>', 'reasoning adapter (required unless --native-thinking)')
    .option('--native-thinking', 'the model thinks by itself (e.g. Qwen3): sample its own thinking, no --adapter')
    .requiredOption('--out <file>', 'verifier JSON to write')
    .option('--samples <n>', 'candidates sampled per question', intArg('--samples', 1), 8)
    .option('--limit <n>', 'training questions', intArg('--limit', 1), 100)
    .option('--val <n>', 'validation questions', intArg('--val', 1), 25)
    .option('--temperature <t>', 'sampling temperature', floatArg('--temperature', 0), 0.8)
    .option('--top-p <p>', 'nucleus mass', floatArg('--top-p', 0, 1), 0.95)
    .option('--max-tokens <n>', 'tokens per candidate', intArg('--max-tokens', 1), 512)
    .option('--max-thinking-tokens <n>', 'thinking cap', intArg('--max-thinking-tokens', 0))
    .option('--l2 <x>', 'L2 penalty', floatArg('--l2', 0), 1e-3)
    .option('--steps <n>', 'optimizer steps', intArg('--steps', 1), 500)
    .option('--seed <s>', 'seed of the items and the samples', intArg('--seed'), 0)
    .option('--quant <q>', 'q4, q8 or fp32', quantArg))
    .option('--overwrite', 'replace the verifier JSON already at --out')
    // The flags that contradict each other are refused before anything is read or downloaded (an hf: model).
    .hook('preAction', (_, cmd) => {
      const o = cmd.opts();
      if (!o.adapter === !o.nativeThinking) throw new Error(o.adapter ? 'train-verifier: --native-thinking samples the model\'s own thinking: leave --adapter out' : 'train-verifier: --adapter <reasoning adapter> is required (or --native-thinking for a model that thinks by itself)');
      const same = o.temperature === 0 ? '--temperature 0' : o.topP === 0 ? '--top-p 0' : undefined;
      if (same && o.samples > 1) throw new Error(`train-verifier: ${same} samples greedily, so the ${o.samples} candidates of a question would all be the same; the verifier learns from candidates that differ: use a temperature and a top-p above 0`);
    })
    .hook('preAction', beforeDownload(outCheck))
    .action(async (o) => {
      outCheck(o);
      const items = labelItems(o.task, o.limit, o.val, o.seed, 'train-verifier', taskFileOf(o, LABEL_TASKS).grader, () => modelText(o));
      const model = await loadModelWithProgress(o.model, { adapter: o.adapter, quant: o.quant, ropeScaling: ropeScalingOf(o) });
      const progress = stageProgress('train-verifier', 'questions', `nothing was written to ${o.out}`);
      try {
        const { verifier, report } = await trainVerifier(model, items.train, {
          val: items.val, samples: o.samples, temperature: o.temperature, topP: o.topP, maxTokens: o.maxTokens, maxThinkingTokens: o.maxThinkingTokens,
          l2: o.l2, steps: o.steps, seed: o.seed, nativeThinking: !!o.nativeThinking, onProgress: (s, d, t) => progress.update(s, d, t), metadata: { model: o.model, task: o.task },
        });
        progress.stop();
        outCheck(o); // again: a file may have come to --out while it trained
        verifier.save(o.out);
        const pct = (x: number) => `${(100 * x).toFixed(1)} %`, t = report.train, v = report.val;
        console.log(`verifier → ${o.out} (threshold ${fraction(report.threshold, 4)})`);
        if (!t.positives || t.positives === t.candidates) console.warn(`train-verifier: warning: every training candidate is ${t.positives ? 'correct' : 'wrong'}: the verifier cannot learn to tell them apart; use ${t.positives ? 'harder' : 'easier'} questions, or more samples (--samples)`);
        const cut = t.cut + v.cut;
        if (cut) console.warn(`train-verifier: note: ${cut} of ${(t.items + v.items) * o.samples} samples were cut off at --max-tokens ${o.maxTokens} and left out (a candidate is scored where it ends by itself); a larger --max-tokens, or ${o.maxThinkingTokens === undefined ? '' : 'a lower '}--max-thinking-tokens, keeps them`);
        console.log(`train: ${t.candidates} candidates of ${t.items} questions, ${t.positives} correct; accuracy at the threshold ${pct(t.accuracy)}, AUC ${aucText(t.auc)}`);
        console.log(`val (the threshold was chosen on these: accuracy is optimistic): ${v.candidates} candidates of ${v.items} questions, ${v.positives} correct; accuracy ${pct(v.accuracy)}, AUC ${aucText(v.auc)}, within a question ${aucText(v.withinItemAuc, 'no question has both a right and a wrong candidate')}`);
        console.log(`val questions right: first sample ${pct(v.firstSample)}, majority ${pct(v.majority)}, verifier best-of-${o.samples} ${pct(v.bestOfN)}, verifier-weighted vote ${pct(v.verifierVote)}, any sample (oracle) ${pct(v.oracle)}`);
      } finally {
        progress.stop();
        await model.close();
      }
    });
}
