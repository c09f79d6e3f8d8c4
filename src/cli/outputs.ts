/**
 * Checks on where a command writes, run before any long work: a folder where a folder is expected and a file
 * where a file is, a parent that can be created, and no model, adapter or checkpoint of the user's replaced
 * unless the command is told so (--overwrite) or continues that same run (--resume).
 */
import fs from 'node:fs';
import path from 'node:path';
import { cannotWriteIn, holdLock, lockHolder, realPath, staleLockHint, removeDeadTemps, writeJson } from '../io/safetensors.ts';
import { readJsonFile } from '../io/jsonl.ts';
import { is } from '../runtime/options.ts';
import { CONVERTED_FILES } from '../runtime/convert.ts';
import { expandHome, modelPath } from '../io/source.ts';
import { onInterrupt } from '../train/progress.ts';
import { HUB_FLAGS } from '../io/hub.ts';

/** The files that make a folder a model or an adapter (what a training run would replace). */
const MODEL_FILES = ['config.json', 'model.safetensors', 'adapter_config.json', 'adapter_model.safetensors'];
const CHECKPOINT = path.join('checkpoint', 'checkpoint.json');

/** What training writes into an output folder: files of an earlier run replaced by --overwrite are removed after. */
const ARTEFACTS = [
  ...MODEL_FILES, 'model.safetensors.index.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja',
  'training_log.json', 'loss.svg', 'rl_log.json', 'rl-curves.svg', 'rl-length.svg',
];
const SHARD = /^model-\d+-of-\d+\.safetensors$/;
/** A GGUF: a folder holding one is a model's (a tokenizer.json written beside it would become its vocabulary). Not .bin: trainers' files share it. */
const SINGLE_FILE_MODEL = /\.gguf$/i;
/** Every file a training run or convert writes into a folder: any of them found there is replaced only when told so. */
const WRITTEN = [...new Set([...ARTEFACTS, ...CONVERTED_FILES])];

/**
 * A preAction hook checking a command's --out before its hf: models download (main.ts resolves them in a later hook):
 * an --out the command refuses then costs no download. The command checks it again once they are local paths.
 */
export const beforeDownload = <O>(check: (o: O) => void) => (_: unknown, c: { opts(): O; options: readonly { long?: string; attributeName(): string }[]; getOptionValue(k: string): unknown }) => {
  const hub = c.options.some((o) => HUB_FLAGS.includes(o.long ?? '') && [c.getOptionValue(o.attributeName())].flat().some((v) => typeof v === 'string' && v.includes('hf:')));
  if (hub) check(c.opts());
};

/** `~` expanded, then resolved against the working directory (for inputs such as a base model; outputs are checked where they will be written: as given). */
export function expandPath(p: string): string {
  return path.resolve(expandHome(p));
}

/** The path with symbolic links resolved as far as it exists (so two spellings of one folder compare equal). */
export function canonical(p: string): string {
  const abs = path.resolve(p);
  let head = abs, tail = '';
  while (!fs.existsSync(head)) {
    const up = path.dirname(head);
    if (up === head) return abs;
    tail = tail ? path.join(path.basename(head), tail) : path.basename(head);
    head = up;
  }
  const real = realPath(head);
  return tail ? path.join(real, tail) : real;
}

const isLink = (p: string): boolean => { try { return fs.lstatSync(p).isSymbolicLink(); } catch { return false; } };

/** An existing output folder must take new files (else the first save fails, after the work). */
function writable(flag: string, p: string, abs: string): void {
  const why = cannotWriteIn(abs);
  if (why) throw new Error(`${flag} ${p} ${why}`);
}

/** The parent folders of `p` must be creatable: the nearest one that exists is a writable folder. */
function checkParents(flag: string, p: string): void {
  let up = path.dirname(path.resolve(p));
  while (!fs.existsSync(up)) {
    if (isLink(up)) throw new Error(`${flag} ${p}: ${up} is a symbolic link to ${fs.readlinkSync(up)}, which does not exist`);
    up = path.dirname(up);
  }
  if (!fs.statSync(up).isDirectory()) throw new Error(`${flag} ${p}: ${up} is a file, so the folder cannot be created`);
  const why = cannotWriteIn(up);
  if (why) throw new Error(`${flag} ${p}: ${up} ${why}`);
}

export interface OutDirCheck {
  /** The flag named in messages (default --out). */
  flag?: string;
  /** What the run writes there, for messages ("adapter", "model", "TRL job"). */
  what: string;
  /** Inputs the output must not replace: flag → path (e.g. {"--model": "models/default"}). */
  inputs?: Record<string, string | undefined>;
  /** The run continues the checkpoint in `<dir>/checkpoint` (it must exist). */
  resume?: boolean;
  overwrite?: boolean;
  /** The command writing it (a refusal names a run of the same command as "another"). */
  command?: string;
  /** Refuse any non-empty folder, not only one holding a model, adapter or checkpoint (export-trl). */
  empty?: boolean;
  /** Whether the folder holds this command's own earlier output (a converted model), which it rebuilds in place. */
  ours?: (dir: string) => boolean;
  /** The files the command writes there (relative paths), when not a training run's or convert's (export-trl's job). */
  writes?: readonly string[];
}

/** Refuse an output folder that is a file, overwrites an input, or holds files the command would replace (see OutDirCheck). */
export function checkOutDir(dir: string, c: OutDirCheck): void {
  const flag = c.flag ?? '--out';
  if (c.resume && c.overwrite) throw new Error('--resume and --overwrite contradict each other: --resume continues the run in --out, --overwrite starts a new one there');
  const abs = path.resolve(dir), exists = fs.existsSync(abs);
  if (!exists && isLink(abs)) throw new Error(`${flag} ${dir} is a symbolic link to ${fs.readlinkSync(abs)}, which does not exist`);
  if (exists && !fs.statSync(abs).isDirectory()) throw new Error(`${flag} ${dir} is a file; expected a folder (for the ${c.what})`);
  if (!exists) checkParents(flag, dir);
  else writable(flag, dir, abs);
  for (const [inFlag, p] of Object.entries(c.inputs ?? {})) {
    if (p === undefined) continue;
    if (canonical(p) === canonical(dir)) throw new Error(`${flag} ${dir} is the ${inFlag} folder: the ${c.what} would be written over its own input; choose another ${flag}`);
    // A Hugging Face model given by one of its files (config.json, its weights) stands for its folder (the folder as
    // named: in the hub's cache the files are links into another one).
    if (modelPath(p) !== path.resolve(p) && canonical(modelPath(p)) === canonical(dir)) {
      throw new Error(`${flag} ${dir} holds the ${inFlag} ${p}: the ${c.what} would be written over its own input; choose another ${flag}`);
    }
  }
  // What the run writes must be writable whatever it is told: a folder where a file goes (or a file where the
  // checkpoint folder goes) would fail the first save, after the work.
  // (Training commands say whether --resume was given; convert writes no artefacts of training, and no checkpoint.)
  if (exists && (!c.empty || c.writes)) {
    const training = c.resume !== undefined, writes = c.writes ?? (training ? ARTEFACTS : CONVERTED_FILES);
    const folder = writes.find((f) => fs.existsSync(path.join(abs, f)) && fs.statSync(path.join(abs, f)).isDirectory());
    if (folder) throw new Error(`${flag} ${dir}: ${path.join(dir, folder)} is a folder, where the ${c.what} has a file; move it away or choose another ${flag}`);
    const file = [...new Set(writes.flatMap((f) => { const up: string[] = []; for (let d = path.dirname(f); d !== '.'; d = path.dirname(d)) up.push(d); return up; }))]
      .find((d) => fs.existsSync(path.join(abs, d)) && !fs.statSync(path.join(abs, d)).isDirectory());
    if (file) throw new Error(`${flag} ${dir}: ${path.join(dir, file)} is a file, where the ${c.what} has a folder; move it away or choose another ${flag}`);
    const ckpt = path.join(abs, path.dirname(CHECKPOINT));
    if (training && fs.existsSync(ckpt) && !fs.statSync(ckpt).isDirectory()) throw new Error(`${flag} ${dir}: ${path.join(dir, path.dirname(CHECKPOINT))} is a file, where training keeps its checkpoint folder; move it away or choose another ${flag}`);
  }
  if (c.resume) {
    // A run writing it now has saved no checkpoint yet: that is what to say (starting afresh would be refused too).
    const lock = path.join(abs, OUT_LOCK), held = lockHolder(lock);
    if (held) throw new Error(lockedOut(dir, c.command)(held.pid, held.holder) + staleLockHint(lock));
    if (!fs.existsSync(path.join(abs, CHECKPOINT))) throw new Error(`--resume: ${flag} ${dir} holds no checkpoint (${path.join(dir, CHECKPOINT)} not found); start without --resume`);
    return;
  }
  if (!exists || c.overwrite || c.ours?.(abs)) return;
  const writesTokenizer = c.what === 'model' || c.what === 'converted model'; // a GGUF there would take its tokenizer.json (an adapter writes none)
  const found = c.empty ? fs.readdirSync(abs) : [...WRITTEN.filter((f) => fs.existsSync(path.join(abs, f))), ...fs.readdirSync(abs).filter((f) => SHARD.test(f) || (writesTokenizer && SINGLE_FILE_MODEL.test(f))),
    ...(fs.existsSync(path.join(abs, CHECKPOINT)) ? [CHECKPOINT] : [])];
  if (found.length) {
    const shown = found.slice(0, 4).join(', ') + (found.length > 4 ? `, … (${found.length} entries)` : '');
    // Another command's files are refused too: a folder holding two outputs loads as one of them.
    const own = c.resume !== undefined ? ARTEFACTS : CONVERTED_FILES;
    const holds = found.includes(CHECKPOINT) && found.length === 1 ? 'a training checkpoint' : found.some((f) => MODEL_FILES.includes(f) || f === 'model.onnx' || SINGLE_FILE_MODEL.test(f)) ? 'a model or adapter'
      : found.every((f) => own.includes(f) || SHARD.test(f) || (c.resume !== undefined && f === CHECKPOINT)) ? 'files this run would replace' : c.resume !== undefined ? "a converted model's files" : 'the output of a training run';
    const kind = c.empty ? 'is not empty' : `already holds ${holds}`;
    // --resume is offered by the commands that have it (the training commands say whether it was given)
    const resume = c.resume !== undefined && found.includes(CHECKPOINT) ? ' (or --resume to continue the run saved there)' : '';
    throw new Error(`${flag} ${dir} ${kind} (${shown}); choose another folder, or pass --overwrite to replace it${resume}`);
  }
}

export interface OutFileCheck {
  flag?: string;
  /** What the file is, for messages ("router JSON"). */
  what: string;
  /** A file name to suggest inside a folder given instead (e.g. "router.json"). */
  example?: string;
  /** Files written beside it (e.g. the eval report's .md and .svg): they must not be folders either. */
  siblings?: string[];
  /** Replace an existing file and the files beside it (--overwrite); otherwise they are refused. */
  overwrite?: boolean;
  /** Whether an existing file is this command's own earlier output (a report, which a rerun refreshes). */
  ours?: (file: string) => boolean;
  /** Whether a file beside such an earlier output is that output's own (refreshed with it); default: none is. */
  oursBeside?: (file: string) => boolean;
  /**
   * The command's inputs, flag → a model or adapter (folder or file): an existing file that is one of them, or lies
   * in one's folder, is refused even with --overwrite, unless `replaceable` says it is an output of this command's kind.
   */
  inputs?: Record<string, string | undefined>;
  /** Input files protected by identity alone, flag → file (eval's --router and --verifier): never written over. */
  inputFiles?: Record<string, string | undefined>;
  /** Whether an existing file (the output or one beside it) is this command's kind of output, which --overwrite may replace. */
  replaceable?: (file: string) => boolean;
}

/** Whether `file` is a JSON file whose "format" is `format` (a router or verifier edgereason wrote, which --overwrite may replace). */
export const holdsFormat = (format: string) => (file: string): boolean => {
  try { return fs.statSync(file).size < 16 * 2 ** 20 && (JSON.parse(fs.readFileSync(file, 'utf8')) as { format?: unknown } | null)?.format === format; } catch { return false; }
};

/** Refuse an output file path that is a folder, whose parent cannot be created, or that would replace a file (or one beside it) of the user's. */
export function checkOutFile(file: string, c: OutFileCheck): void {
  const flag = c.flag ?? '--out';
  // "newdir/" names a folder, even one that does not exist yet (the write would fail after all the work).
  if (/[\\/]$/.test(file)) throw new Error(`${flag} ${file} names a folder; expected a file (the ${c.what})${c.example ? `, e.g. ${path.join(file, c.example)}` : ''}`);
  for (const f of [file, ...(c.siblings ?? [])]) {
    const abs = path.resolve(f);
    if (fs.existsSync(abs) && fs.statSync(abs).isDirectory()) {
      throw new Error(f === file
        ? `${flag} ${file} is a folder; expected a file (the ${c.what})${c.example ? `, e.g. ${path.join(file, c.example)}` : ''}`
        : `${flag} ${file}: ${f}, written beside it, is a folder`);
    }
  }
  // The output and each file beside it: none may be one of the inputs, nor (unless it is this command's kind of output) lie in one's folder.
  for (const f of [file, ...(c.siblings ?? [])]) {
    if (!fs.existsSync(path.resolve(f))) continue;
    // Where it lies, its folder's links followed but not its own (a Hugging Face snapshot's files link into blobs/).
    const out = canonical(f), at = path.join(canonical(path.dirname(path.resolve(f))), path.basename(f));
    const named = f === file ? `${flag} ${file}` : `${flag} ${file}: ${f}, written beside it,`;
    for (const [inFlag, p] of Object.entries(c.inputFiles ?? {})) {
      if (p !== undefined && fs.existsSync(p) && out === canonical(p)) throw new Error(`${named} is the ${inFlag} ${p}: writing the ${c.what} there would destroy it; choose another ${flag}`);
    }
    if (c.replaceable?.(path.resolve(f))) continue;
    for (const [inFlag, p] of Object.entries(c.inputs ?? {})) {
      if (p === undefined || !fs.existsSync(p)) continue;
      const dir = canonical(fs.statSync(p).isDirectory() ? p : modelPath(p));
      if (out === canonical(p) || at === dir || at.startsWith(dir + path.sep)) {
        throw new Error(`${named} is ${out === canonical(p) ? 'the' : 'a file of the'} ${inFlag} ${p}, not a ${c.what}: writing the ${c.what} there would destroy it; choose another ${flag}`);
      }
    }
  }
  const retry = `pass --overwrite to replace it, or choose another ${flag}`;
  if (!c.overwrite && fs.existsSync(path.resolve(file)) && !c.ours?.(path.resolve(file))) {
    throw new Error(`${flag} ${file} already exists (${c.ours ? `and is not a ${c.what} edgereason wrote` : `a ${c.what} from an earlier run?`}); ${retry}`);
  }
  const earlier = fs.existsSync(path.resolve(file)); // and ours: refused above otherwise
  const beside = c.overwrite ? undefined : c.siblings?.find((f) => fs.existsSync(path.resolve(f)) && !(earlier && c.oursBeside?.(path.resolve(f))));
  if (beside) throw new Error(`${flag} ${file}: ${beside}, written beside it, already exists; ${retry}`);
  checkParents(flag, file);
}

/** A snapshot of the training artefacts in `dir` (name → identity), taken before a run that --overwrite lets replace them. */
export function artefacts(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!fs.existsSync(dir)) return out;
  for (const f of fs.readdirSync(dir)) {
    // (An earlier conversion's graph and manifest too: left beside a model trained there, they would load instead of it.)
    if (!ARTEFACTS.includes(f) && !SHARD.test(f) && !CONVERTED_MODEL.includes(f)) continue;
    const s = fs.statSync(path.join(dir, f));
    out.set(f, `${s.ino}:${s.mtimeMs}:${s.size}`);
  }
  return out;
}

/** A converted model's own files (beside the tokenizer files training writes too). */
const CONVERTED_MODEL = CONVERTED_FILES.filter((f) => !ARTEFACTS.includes(f));
/**
 * The lock that convert and the training commands hold on their --out while they write: one per folder, naming the
 * command, so that any of them refuses an --out that another live run is writing (the files would mix, and the folder
 * would load as one or the other).
 */
const OUT_LOCK = '.edgereason.lock';

/** Holds --out for `command` (released when the process exits, with the folder when the lock made it). */
export function holdOut(out: string, command: string): () => void {
  return holdLock(path.join(out, OUT_LOCK), lockedOut(out, command), command);
}

/** The refusal of an --out that another live run (`holder`, process `pid`) is writing. */
const lockedOut = (out: string, command: string | undefined) => (pid: number, holder: string): string =>
  `--out: ${holder ? `${holder === command ? 'another' : 'a'} ${holder} run` : 'another run'} (process ${pid}) is writing ${out}; wait for it to finish, or choose another --out`;

/** Where a run started with --overwrite records the earlier run's artefacts, for a --resume after an interruption. */
const REPLACED = path.join('checkpoint', 'replaced.json');

/**
 * The earlier run's artefacts that this run replaces, for removeStale at its end: with --overwrite, those in `dir`
 * now (recorded beside the checkpoint); with --resume, those the interrupted --overwrite run recorded. Temp files
 * that a killed run's writes left there go first.
 */
export function replacedArtefacts(dir: string, o: { overwrite?: boolean; resume?: boolean }): Map<string, string> | undefined {
  const file = path.join(dir, REPLACED);
  removeDeadTemps(dir, (f) => ARTEFACTS.includes(f) || SHARD.test(f)); // half-written files of a run that was killed
  if (o.overwrite) {
    const before = artefacts(dir);
    if (before.size) writeJson(file, Object.fromEntries(before));
    return before;
  }
  if (o.resume && fs.existsSync(file)) {
    const j = readJsonFile(file, '--resume: ');
    if (!is.object.ok(j) || !Object.values(j as object).every((v) => typeof v === 'string')) {
      throw new Error(`--resume: ${file} is not a list of the earlier run's files (an object of name → identity strings); delete it to keep those files instead of removing them at the end`);
    }
    return new Map(Object.entries(j as Record<string, string>));
  }
}

/**
 * After a run with --overwrite: remove the artefacts of the earlier run that this one did not rewrite (an old
 * training_log.json beside a new adapter, a model's config.json beside an adapter, ...), then the record of them
 * (done with); returns their names.
 */
export function removeStale(dir: string, before: Map<string, string>): string[] {
  const now = artefacts(dir), removed: string[] = [];
  for (const [f, id] of before) {
    if (now.get(f) !== id) continue; // rewritten (atomic writes make a new file) or already gone
    fs.rmSync(path.join(dir, f), { force: true });
    removed.push(f);
  }
  fs.rmSync(path.join(dir, REPLACED), { force: true });
  return removed;
}

/**
 * Holds --out for one training run: a second one writing the same folder (a --resume started beside it) is refused
 * while the first runs, since their checkpoints would overwrite and delete each other's files. Released when the
 * process exits, with the folder when the lock made it. Until another Ctrl-C handler comes (the training's, which
 * saves its last step) or the returned function is called, Ctrl-C or SIGTERM ends the run saying nothing was saved
 * (the default action would skip the exit, leaving the lock and the folder behind).
 */
export function lockTraining(out: string, command: string): () => void {
  // Listening first: until Node listens for SIGINT its default action kills the process, which would leave the lock
  // (a signal that comes while the lock is taken waits for this synchronous code to end, and then finds the lock).
  const early = onInterrupt(process.stderr, () => `${command}: interrupted before the first training step: nothing was saved by this run`);
  try {
    holdOut(out, command);
  } catch (e) {
    early();
    throw e;
  }
  // Handed over for good once the training handles Ctrl-C itself (its handler goes when it has saved its outputs):
  // after its handler is added, as none left in between would stop Node listening (a signal on its way is lost).
  const handOver = (event: string | symbol) => { if (event === 'SIGINT') queueMicrotask(off); };
  const off = () => { early(); process.off('newListener', handOver); };
  process.on('newListener', handOver);
  return off;
}
