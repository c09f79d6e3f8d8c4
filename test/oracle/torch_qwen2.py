"""PyTorch oracle for the training engine (tests; bench/torch_train_step.py reuses its model): an independent
Qwen2/Qwen3/Llama forward with LoRA and activated-LoRA masking, masked token cross-entropy, and autograd gradients.

Usage: /usr/bin/python3 torch_qwen2.py <in.json> <in.safetensors> <out.safetensors>
in.json: {"config": ModelConfig (edgereason's camelCase fields), "mode": "lora"|"full", "rank", "alpha",
          "targets": [...], "input_ids": [[...]], "lengths": [...], "adapter_mask": [[...]], "loss_mask": [[...]]}
loss_mask[b][t] = 1 means token t is a target predicted from position t-1.
Writes the loss (key "loss", shape [1]) and the gradient of every trainable tensor under its own name.
Importable: model_loss(w, spec) is the forward + loss alone (bench/torch_train_step.py times it).
"""
import json, math, struct, sys
import torch

torch.set_num_threads(2)
DT = torch.float64 if '--f64' in sys.argv else torch.float32


def read_safetensors(path):
    raw = open(path, 'rb').read()
    n = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        assert info['dtype'] == 'F32', (name, info['dtype'])
        a, b = info['data_offsets']
        buf = bytearray(raw[8 + n + a: 8 + n + b])
        out[name] = torch.frombuffer(buf, dtype=torch.float32).reshape(info['shape']).to(DT)
    return out


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        b = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {'dtype': 'F32', 'shape': list(t.shape), 'data_offsets': [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def model_loss(w, spec):
    """The loss of one micro-batch under `spec` (the in.json fields) with tensors `w` (HF names; LoRA as
    <projection>.lora_A.weight / .lora_B.weight). Callers mark the trainable tensors and call backward()."""
    c = spec['config']
    ids = torch.tensor(spec['input_ids'])
    B, T = ids.shape
    lengths = torch.tensor(spec['lengths'])
    amask = torch.tensor(spec['adapter_mask'], dtype=DT)
    lmask = torch.tensor(spec['loss_mask'], dtype=DT)
    scale = spec.get('alpha', 1) / spec.get('rank', 1)
    H, D, Hkv = c['numHeads'], c['headDim'], c['numKvHeads']

    def linear(x, name, bias=False):
        y = x @ w[name + '.weight'].T
        if bias:
            y = y + w[name + '.bias']
        a = name + '.lora_A.weight'
        if a in w:
            y = y + ((x @ w[a].T) * amask[..., None]) @ w[name + '.lora_B.weight'].T * scale
        return y

    def rms(x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c['rmsNormEps']) * w[name]

    pos = torch.arange(T, dtype=torch.float64)
    inv = 1.0 / (c['ropeTheta'] ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    s = c.get('ropeScaling')
    mscale = 1.0
    if s and s['type'] == 'linear':
        inv = inv / s['factor']
    elif s and s['type'] == 'yarn':  # the YaRN paper's rule, as transformers 5 writes it
        def dim_turning(turns):  # the dimension that turns `turns` times over the original context
            return D * math.log(s['originalMaxPositionEmbeddings'] / (turns * 2 * math.pi)) / (2 * math.log(c['ropeTheta']))
        lo, hi = max(math.floor(dim_turning(s['betaFast'])), 0), min(math.ceil(dim_turning(s['betaSlow'])), D - 1)
        ramp = ((torch.arange(D // 2, dtype=torch.float64) - lo) / max(hi - lo, 0.001)).clamp(0, 1)
        inv = inv / s['factor'] * ramp + inv * (1 - ramp)
        mscale = s['attentionFactor']
    elif s:  # Llama 3.1's rule as transformers writes it: long wavelengths slowed by `factor`, a blend in between
        orig, lo, hi, factor = s['originalMaxPositionEmbeddings'], s['lowFreqFactor'], s['highFreqFactor'], s['factor']
        wavelen = 2 * torch.pi / inv
        slowed = torch.where(wavelen > orig / lo, inv / factor, inv)
        smooth = (orig / wavelen - lo) / (hi - lo)
        blended = (1 - smooth) * slowed / factor + smooth * slowed
        medium = ~(wavelen < orig / hi) & ~(wavelen > orig / lo)
        inv = torch.where(medium, blended, slowed)
    f = pos[:, None] * inv[None, :]
    emb = torch.cat([f, f], -1)
    cos, sin = (mscale * emb.cos()).to(DT)[None, :, None, :], (mscale * emb.sin()).to(DT)[None, :, None, :]

    def rope(x):
        x1, x2 = x[..., :D // 2], x[..., D // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    keyok = torch.arange(T)[None, :] < lengths[:, None]
    allowed = causal[None, :, :] & keyok[:, None, :]  # [B, Tq, Tk]
    bias = torch.where(allowed, torch.zeros((), dtype=DT), torch.tensor(-1e9, dtype=DT))[:, None, :, :]

    h = w['model.embed_tokens.weight'][ids]
    for l in range(c['numLayers']):
        p = f'model.layers.{l}'
        x = rms(h, f'{p}.input_layernorm.weight')
        qb = c['attentionBias']
        q = linear(x, f'{p}.self_attn.q_proj', qb).view(B, T, H, D)
        k = linear(x, f'{p}.self_attn.k_proj', qb).view(B, T, Hkv, D)
        if c['architecture'] == 'qwen3':  # an RMSNorm on each query / key head before RoPE
            q, k = rms(q, f'{p}.self_attn.q_norm.weight'), rms(k, f'{p}.self_attn.k_norm.weight')
        q, k = rope(q).transpose(1, 2), rope(k).transpose(1, 2)
        v = linear(x, f'{p}.self_attn.v_proj', qb).view(B, T, Hkv, D).transpose(1, 2)
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / D ** 0.5 + bias, dim=-1) @ v
        h = h + linear(att.transpose(1, 2).reshape(B, T, H * D), f'{p}.self_attn.o_proj')
        y = rms(h, f'{p}.post_attention_layernorm.weight')
        g = linear(y, f'{p}.mlp.gate_proj')
        h = h + linear(torch.nn.functional.silu(g) * linear(y, f'{p}.mlp.up_proj'), f'{p}.mlp.down_proj')
    h = rms(h, 'model.norm.weight')
    head = w['lm_head.weight'] if 'lm_head.weight' in w else w['model.embed_tokens.weight']
    logits = h @ head.T / spec.get('temperature', 1)  # [B, T, V]
    # Token t is predicted from position t-1.
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    m = lmask[:, 1:]
    obj = spec.get('objective', {'kind': 'nll'})
    lp = logp[m > 0]  # the targets' log-probabilities, in (row, position) order
    if obj['kind'] == 'nll':
        loss = -(logp * m).sum() / m.sum()
    else:  # clipped policy gradient + k3 KL
        old = torch.tensor(spec['old_logprob'], dtype=DT) if 'old_logprob' in spec else lp.detach()
        ref = torch.tensor(spec['ref_logprob'], dtype=DT) if obj['beta'] > 0 else lp.detach()
        adv = torch.tensor(spec['advantage'], dtype=DT)[:, None].expand(B, T - 1)[m > 0]
        ratio = torch.exp(lp - old)
        pg = -torch.min(ratio * adv, torch.clamp(ratio, 1 - obj['clipEps'], 1 + obj['clipEps']) * adv)
        d = ref - lp
        loss = (spec['weight'] * (pg + obj['beta'] * (torch.exp(d) - d - 1))).sum()
    return loss, lp.detach()


def main():
    spec = json.load(open(sys.argv[1]))
    w = read_safetensors(sys.argv[2])
    trainable = [n for n in w if ('lora_' in n) == (spec['mode'] == 'lora')]
    for n in trainable:
        w[n].requires_grad_(True)
    loss, logprob = model_loss(w, spec)
    loss.backward()
    out = {'loss': loss.detach().reshape(1), 'logprob': logprob}
    for n in trainable:
        if w[n].grad is not None:  # a tensor the forward did not use has none
            out[n] = w[n].grad
    write_safetensors(sys.argv[3], out)


if __name__ == '__main__':
    main()
