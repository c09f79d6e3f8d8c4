"""PyTorch oracle for single VJP rules (test/autodiff-torch.test.ts): each case's expression differentiated by autograd.

Usage: /usr/bin/python3 torch_vjp.py <cases.json> <out.json>
cases.json: [{"name", "torch": a Python expression over the inputs' names and `torch`,
              "inputs": {name: {"dims", "data" (numbers, or "NaN"/"Infinity"/"-Infinity"), "dtype": "float32"|"float64"|"int64", "fixed"}}}]
The loss is sum(out * w), w_i = sin(1.3 i + 0.4) over out's flat elements (as the test builds it in the graph).
out.json: {name: {"loss": number, "grads": {input: [numbers or "NaN"/"Infinity"/"-Infinity"]}}} for every non-fixed float input.
"""
import json, math, sys
import torch

torch.set_num_threads(1)
DTYPES = {'float32': torch.float32, 'float64': torch.float64, 'int64': torch.int64}


def num(v):
    return float(v) if not isinstance(v, str) else float(v.replace('Infinity', 'inf'))


def enc(v):
    return v if math.isfinite(v) else ('NaN' if math.isnan(v) else ('Infinity' if v > 0 else '-Infinity'))


out = {}
for c in json.load(open(sys.argv[1])):
    env, wrt = {'torch': torch}, []
    for k, s in c['inputs'].items():
        dt = DTYPES[s['dtype']]
        t = torch.tensor([num(v) for v in s['data']] if dt != torch.int64 else s['data'], dtype=dt).reshape(s['dims'])
        if dt != torch.int64 and not s['fixed']:
            t.requires_grad_(True)
            wrt.append(k)
        env[k] = t
    y = eval(c['torch'], env)
    w = torch.sin(torch.arange(y.numel(), dtype=torch.float64) * 1.3 + 0.4).to(y.dtype).reshape(y.shape)
    loss = (y * w).sum()
    gs = torch.autograd.grad(loss, [env[k] for k in wrt], allow_unused=True)
    out[c['name']] = {'loss': enc(loss.item()), 'grads': {k: [enc(v) for v in (torch.zeros_like(env[k]) if g is None else g).flatten().tolist()] for k, g in zip(wrt, gs)}}
json.dump(out, open(sys.argv[2], 'w'))
