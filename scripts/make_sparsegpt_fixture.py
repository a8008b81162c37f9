#!/usr/bin/env python3
"""Reference of SparseGPT (run by hand; needs torch, transformers, safetensors).

    python3 scripts/make_sparsegpt_fixture.py

Runs the tiny Llama fixture (Tests/Fixtures/tiny-llama) in transformers on two GSM8K lines and
records the real inputs of two linear layers of block 1: mlp.gate_proj (176 × 64, its input the
post-attention norm's output) and mlp.down_proj (64 × 176, its input the FFN activations). Then
prunes each with the SparseGPT algorithm of Frantar & Alistarh (2023) as their reference
implementation performs it — H = 2XᵀX/n, dead inputs zeroed, damping percdamp·mean(diag H), the
upper Cholesky factor of H⁻¹, blocks of `blocksize` columns with the mask chosen per block
(unstructured: the smallest w²/[H⁻¹]_cc² of the block, ties included; n:m: the n smallest of each m
columns of a row), column-by-column OBS updates inside the block and one lazy update of the
columns after it — in float64, so ptl (also float64) can be held to it tightly.
Writes Tests/Fixtures/sparsegpt/layers.safetensors: x.<layer> (tokens × in), w.<layer>, and
pruned.<layer>.<config> (the pruned weights; the pruned entries are exact zeros).
"""
import json, math, os
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TINY = os.path.join(ROOT, "Tests", "Fixtures", "tiny-llama")
torch.manual_seed(0)


def sparsegpt(W, X, sparsity=0.0, prunen=0, prunem=0, blocksize=128, percdamp=0.01):
    W = W.clone().double()
    cols = W.shape[1]
    H = 2.0 / X.shape[0] * (X.double().t() @ X.double())
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=torch.float64)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        d = torch.diag(U1)
        if prunen == 0:
            score = W1 ** 2 / d.reshape(1, -1) ** 2
            thresh = torch.sort(score.flatten())[0][int(score.numel() * sparsity)]
            mask1 = score <= thresh
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            w = W1[:, i]
            if prunen != 0 and i % prunem == 0:
                score = W1[:, i:i + prunem] ** 2 / d[i:i + prunem].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.topk(score, prunen, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / d[i]
            W1[:, i:] -= err.unsqueeze(1) @ U1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W


model = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)
tok = AutoTokenizer.from_pretrained(TINY)
model.eval()
with open(os.path.join(ROOT, "Tests", "Fixtures", "golden", "perplexity.jsonl")) as f:
    lines = [json.loads(l) for l in f][:2]
texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in lines]
inputs = {}
block = model.model.layers[1].mlp
hooks = [getattr(block, n).register_forward_hook(lambda m, i, o, n=n: inputs.setdefault(n, []).append(i[0].reshape(-1, i[0].shape[-1])))
         for n in ["gate_proj", "down_proj"]]
with torch.no_grad():
    for t in texts:
        ids = tok(t, return_tensors="pt").input_ids[:, :80]
        model(ids)
for h in hooks:
    h.remove()

configs = {"gate_proj": [("u50", dict(sparsity=0.5)), ("4of8-b16", dict(prunen=4, prunem=8, blocksize=16))],
           "down_proj": [("u50", dict(sparsity=0.5)), ("2of4", dict(prunen=2, prunem=4)), ("u60-b32", dict(sparsity=0.6, blocksize=32))]}
out = {}
for name, cfgs in configs.items():
    X = torch.cat(inputs[name]).float().contiguous()
    W = getattr(block, name).weight.detach().float().contiguous()
    out[f"x.{name}"], out[f"w.{name}"] = X, W
    for cfg, kw in cfgs:
        P = sparsegpt(W, X, **kw)
        out[f"pruned.{name}.{cfg}"] = P.float().contiguous()
        zeros = (P == 0).double().mean().item()
        before = torch.linalg.norm(X.double() @ W.double().t()).item()
        err = torch.linalg.norm(X.double() @ (W.double() - P).t()).item()
        print(f"{name} {cfg}: {X.shape[0]} tokens, {zeros:.3f} zeros, output error {err / before:.4f} of the output norm")
save_file(out, os.path.join(ROOT, "Tests", "Fixtures", "sparsegpt", "layers.safetensors"))
