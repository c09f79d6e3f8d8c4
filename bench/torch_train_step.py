"""Benchmark helper (not a test): times PyTorch CPU training steps (forward + backward, no optimizer) of a
random-weight Qwen2 for bench/train.ts, with the model of the training oracle (test/oracle/torch_qwen2.py).

Usage: /usr/bin/python3 bench/torch_train_step.py < spec.json
spec: {"config": ModelConfig (edgereason's camelCase fields), "mode": "lora"|"full", "rank", "alpha",
       "input_ids": [[...]] (B rows of T tokens), "loss_mask": [[...]], "warmup", "steps", "threads", "seed",
       "profile": bool (one more step under torch.autograd.profiler, after the timed ones)}
Weights: projections and embeddings ~ U with std 0.02, norms 1, biases std 0.01, all fp32 and frozen in LoRA
mode; LoRA A ~ U(±1/sqrt(in)) (PEFT's bound), B ~ U with std 0.02 (random, so the adapter path is not zero).
Progress lines ("progress <text>") go to stderr; one JSON object to stdout: load_ms, warmup_ms, step_ms[],
loss, trainable_params, peak_rss_mb, rss_after_load_mb, info{python, torch, blas, threads}, profile?.
"""
import json, os, platform, resource, sys, time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'oracle'))
from torch_qwen2 import model_loss  # noqa: E402

PROJ = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']


def progress(text):
    print(f'progress {text}', file=sys.stderr, flush=True)


def rss_mb():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def blas_library():
    """The BLAS shared object torch's matmuls went through (resolved), from this process's mappings."""
    libs = set()
    with open('/proc/self/maps') as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ''
            name = os.path.basename(path).lower()
            if 'blas' in name or 'mkl_' in name or 'libmkl' in name:
                libs.add(os.path.realpath(path))
    return ', '.join(sorted(libs)) or 'none mapped'


def uniform(gen, shape, std, center=0.0):
    half = std * 3 ** 0.5
    return (torch.rand(shape, generator=gen) * 2 - 1) * half + center


def projection_shape(c, p):
    q, kv = c['numHeads'] * c['headDim'], c['numKvHeads'] * c['headDim']
    return {'q_proj': (q, c['hiddenSize']), 'k_proj': (kv, c['hiddenSize']), 'v_proj': (kv, c['hiddenSize']),
            'o_proj': (c['hiddenSize'], q), 'gate_proj': (c['intermediateSize'], c['hiddenSize']),
            'up_proj': (c['intermediateSize'], c['hiddenSize']), 'down_proj': (c['hiddenSize'], c['intermediateSize'])}[p]


def block(p):
    return 'mlp' if p in ('gate_proj', 'up_proj', 'down_proj') else 'self_attn'


def random_weights(c, gen):
    w = {'model.embed_tokens.weight': uniform(gen, (c['vocabSize'], c['hiddenSize']), 0.02)}
    for l in range(c['numLayers']):
        pre = f'model.layers.{l}'
        w[f'{pre}.input_layernorm.weight'] = torch.ones(c['hiddenSize'])
        w[f'{pre}.post_attention_layernorm.weight'] = torch.ones(c['hiddenSize'])
        for p in PROJ:
            out, inp = projection_shape(c, p)
            w[f'{pre}.{block(p)}.{p}.weight'] = uniform(gen, (out, inp), 0.02)
            if c['attentionBias'] and p in ('q_proj', 'k_proj', 'v_proj'):
                w[f'{pre}.self_attn.{p}.bias'] = uniform(gen, (out,), 0.01)
    w['model.norm.weight'] = torch.ones(c['hiddenSize'])
    if not c['tieWordEmbeddings']:
        w['lm_head.weight'] = uniform(gen, (c['vocabSize'], c['hiddenSize']), 0.02)
    return w


def main():
    spec = json.load(sys.stdin)
    torch.set_num_threads(spec.get('threads', 2))
    c = spec['config']
    gen = torch.Generator().manual_seed(spec.get('seed', 0))
    t = time.perf_counter()
    w = random_weights(c, gen)
    if spec['mode'] == 'lora':
        r = spec['rank']
        for l in range(c['numLayers']):
            for p in PROJ:
                out, inp = projection_shape(c, p)
                name = f'model.layers.{l}.{block(p)}.{p}'
                w[f'{name}.lora_A.weight'] = (torch.rand((r, inp), generator=gen) * 2 - 1) / inp ** 0.5
                w[f'{name}.lora_B.weight'] = uniform(gen, (out, r), 0.02)
    trainable = [n for n in w if ('lora_' in n) == (spec['mode'] == 'lora')]
    for n in trainable:
        w[n].requires_grad_(True)
    ids = spec['input_ids']
    B, T = len(ids), len(ids[0])
    step_spec = {
        'config': c, 'mode': spec['mode'], 'rank': spec.get('rank', 1), 'alpha': spec.get('alpha', 1),
        'input_ids': ids, 'lengths': [T] * B, 'adapter_mask': [[1] * T for _ in range(B)], 'loss_mask': spec['loss_mask'],
    }
    load_ms = (time.perf_counter() - t) * 1000
    rss_after_load = rss_mb()
    progress(f'weights built in {load_ms / 1000:.1f} s')

    def step():
        for n in trainable:
            w[n].grad = None
        t0 = time.perf_counter()
        loss = model_loss(w, step_spec)
        loss.backward()
        return (time.perf_counter() - t0) * 1000, loss.item()

    warmup_ms, loss = 0.0, None
    for i in range(spec.get('warmup', 1)):
        ms, loss = step()
        warmup_ms += ms
        progress(f'warm-up step: {ms / 1000:.1f} s')
    step_ms = []
    for i in range(spec['steps']):
        ms, loss = step()
        step_ms.append(ms)
        progress(f'step {i + 1}/{spec["steps"]}: {ms / 1000:.1f} s, {B * T * 1000 / ms:.1f} tok/s')

    result = {
        'load_ms': load_ms, 'warmup_ms': warmup_ms, 'step_ms': step_ms, 'loss': loss,
        'trainable_params': sum(w[n].numel() for n in trainable),
        'rss_after_load_mb': rss_after_load,
        'info': {'python': platform.python_version(), 'torch': torch.__version__, 'blas': blas_library(),
                 'threads': torch.get_num_threads(), 'mkldnn': torch.backends.mkldnn.is_available(), 'mkl': torch.backends.mkl.is_available()},
    }
    if spec.get('profile'):
        for n in trainable:
            w[n].grad = None
        with torch.autograd.profiler.profile() as prof:
            model_loss(w, step_spec).backward()
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in ops)
        result['profile'] = {
            'total_ms': total / 1000,
            'ops': [{'op': e.key, 'ms': e.self_cpu_time_total / 1000, 'count': e.count} for e in ops[:20]],
        }
        progress('profiled one step')
    result['peak_rss_mb'] = peak_mb()
    json.dump(result, sys.stdout)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
