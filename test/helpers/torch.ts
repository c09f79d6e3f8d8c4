/** The PyTorch oracle (Debian's python3-torch, from /usr/bin/python3 only): whether it is there, and the skip note when not. */
import { execFileSync } from 'node:child_process';

export const PY = '/usr/bin/python3';
export const hasTorch = (() => { try { execFileSync(PY, ['-c', 'import torch']); return true; } catch { return false; } })();
export const torchNote = 'PyTorch oracle missing: install Debian\'s python3-torch (apt-get install python3-torch); .ci/run does this';
