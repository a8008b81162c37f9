#!/usr/bin/env python3
"""Golden reference of the GRPO loss and gradient (run by hand, never in CI; needs torch + transformers).

    python3 scripts/make_golden_grpo.py

Policy: the distillation fixture's student (golden/<model>-kd-student), reference model: its
teacher (golden/<model>-kd-teacher; a different FFN width, as after a prune — only log-probs of
the sampled tokens are compared). A fixed set of "sampled" completions: 4 sequences of 16 tokens
(seed 11), two groups of two completions of one prompt each; prompt rows and the padded tail of one
completion are not scored. Rewards [1.0, 0.1] and [0.9, 0.9] (the second group ties: zero
advantage, only the KL term trains it). Advantages (r − mean) / (std + 1e-6) per group, std the
unbiased one (TRL, verl). Old log-probs: the policy's own, detached, plus N(0, 0.3) noise (seed
12), so some ratios fall outside the clip on either side. Settings: clip 0.2 / 0.28, β 0.04.

    loss = token-mean over scored rows of  −min(ρ·A, clip(ρ, 0.8, 1.28)·A) + β·(exp(d) − d − 1),
    ρ = exp(logp − old), d = ref − logp

in float64, and the gradient of every policy parameter. Writes
  Tests/Fixtures/golden/<model>.grpo.json         batch, rewards, advantages, log-probs, loss, counts
  Tests/Fixtures/golden/<model>.grpo.safetensors  grad.<name> for every policy parameter
"""
import json, os
import torch
from transformers import AutoModelForCausalLM
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GOLD = os.path.join(ROOT, "Tests", "Fixtures", "golden")
CLIP_LOW, CLIP_HIGH, BETA, EPS = 0.2, 0.28, 0.04, 1e-6
B, T, G = 4, 16, 2
PROMPT = [5, 5, 7, 7]          # prompt tokens of each sequence (prompts of one group are equal)
LENGTH = [16, 16, 16, 12]      # real tokens (the last completion is padded after 12)
REWARDS = [1.0, 0.1, 0.9, 0.9]


def main():
    for name in ("tiny-llama", "tiny-qwen2"):
        policy = AutoModelForCausalLM.from_pretrained(os.path.join(GOLD, name + "-kd-student"), attn_implementation="eager").double()
        ref = AutoModelForCausalLM.from_pretrained(os.path.join(GOLD, name + "-kd-teacher"), attn_implementation="eager").double()
        V = policy.config.vocab_size
        g = torch.Generator().manual_seed(11)
        ids = torch.randint(1, V, (B, T), generator=g)
        for b in range(0, B, G):   # one prompt per group
            ids[b + 1, :PROMPT[b]] = ids[b, :PROMPT[b]]
        # targets[b, t] = ids[b, t + 1] when token t + 1 is a completion token, else -1.
        targets = torch.full((B, T), -1, dtype=torch.long)
        for b in range(B):
            for t in range(PROMPT[b] - 1, LENGTH[b] - 1):
                targets[b, t] = ids[b, t + 1]
        mask = targets >= 0
        r = torch.tensor(REWARDS, dtype=torch.float64).view(-1, G)
        adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + EPS)).view(-1)
        A = adv.view(B, 1).expand(B, T)
        tgt = targets.clamp(min=0)
        with torch.no_grad():
            ref_logp = torch.log_softmax(ref(ids).logits, -1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
            own = torch.log_softmax(policy(ids).logits, -1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
            old = (own + 0.3 * torch.randn(own.shape, generator=torch.Generator().manual_seed(12), dtype=torch.float64)).float().double()
        ref_logp = ref_logp.float().double()   # the fixture stores float32: the reference uses the same values
        policy.zero_grad()
        logp = torch.log_softmax(policy(ids).logits, -1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
        ratio = torch.exp(logp - old)
        per = -torch.min(ratio * A, torch.clamp(ratio, 1 - CLIP_LOW, 1 + CLIP_HIGH) * A)
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1
        per = per + BETA * kl
        loss = (per * mask).sum() / mask.sum()
        loss.backward()
        clipped = (((A > 0) & (ratio > 1 + CLIP_HIGH)) | ((A < 0) & (ratio < 1 - CLIP_LOW))) & mask
        out = {
            "model": name, "policy": name + "-kd-student", "reference": name + "-kd-teacher",
            "clip_low": CLIP_LOW, "clip_high": CLIP_HIGH, "beta": BETA, "group_size": G,
            "input_ids": ids.tolist(), "targets": targets.tolist(), "rewards": REWARDS, "advantages": adv.tolist(),
            "old_logp": [[float(x) if m else 0.0 for x, m in zip(row, mrow)] for row, mrow in zip(old.tolist(), mask.tolist())],
            "ref_logp": [[float(x) if m else 0.0 for x, m in zip(row, mrow)] for row, mrow in zip(ref_logp.tolist(), mask.tolist())],
            "loss": float(loss.detach()), "scored": int(mask.sum()), "clipped": int(clipped.sum()),
            "kl_mean": float((kl * mask).sum().detach() / mask.sum()),
        }
        tensors = {f"grad.{n}": p.grad.detach().float().contiguous() for n, p in policy.named_parameters()}
        save_file(tensors, os.path.join(GOLD, name + ".grpo.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(GOLD, name + ".grpo.json"), "w") as f:
            json.dump(out, f, indent=1)
        print(name, "loss", out["loss"], "scored", out["scored"], "clipped", out["clipped"], "kl", out["kl_mean"])


if __name__ == "__main__":
    main()
