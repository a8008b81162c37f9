#!/usr/bin/env python3
"""Golden reference of the distillation loss (run by hand, never in CI; needs torch + transformers).

    python3 scripts/make_golden_kd.py

For each tiny fixture (Tests/Fixtures/tiny-llama, tiny-qwen2) the teacher is the fixture with its
final norm's weight scaled by 30 (10 when embeddings are tied; a randomly initialised model's next-token distributions are nearly
uniform: scaled, they are as peaked as a trained model's), and the student a pruned copy of the
teacher — FFN width cut by 32 (the first neurons kept) and every parameter perturbed by 20 % of
its tensor's spread (seed 3), as after a prune and some tuning.
The batch is the one of golden/<model>.json (input_ids, labels; -100 ignored, shifted as HF does).
For two settings — kd (T = 1, w = 1: Minitron's loss) and kd+ce (T = 2, w = 0.5) — the loss

    mean over scored positions of  (1 − w) · CE(z, y) + w · T² · KL(softmax(t/T) ‖ softmax(z/T))

and the gradient of every student parameter, all in float64. Writes:
  Tests/Fixtures/golden/<model>-kd-teacher/   the teacher (HF directory, fp32)
  Tests/Fixtures/golden/<model>-kd-student/   the student (HF directory, fp32)
  Tests/Fixtures/golden/<model>.kd.json       the settings and losses
  Tests/Fixtures/golden/<model>.kd.safetensors  <setting>.grad.<name> for every student parameter
"""
import json, os
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = os.path.join(ROOT, "Tests", "Fixtures")
GOLD = os.path.join(FIX, "golden")
SETTINGS = {"kd": {"temperature": 1.0, "kd_weight": 1.0}, "kdce": {"temperature": 2.0, "kd_weight": 0.5}}


def teacher_of(name):
    m = AutoModelForCausalLM.from_pretrained(os.path.join(FIX, name), attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        # Tied embeddings (Qwen2) peak far sooner: 10 leaves a mean top probability of ~0.7.
        m.model.norm.weight.mul_(10 if m.config.tie_word_embeddings else 30)
    return m


def student_of(teacher_dir):
    m = AutoModelForCausalLM.from_pretrained(teacher_dir, attn_implementation="eager", dtype=torch.float32)
    KEEP = m.config.intermediate_size - 32
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in m.model.layers:
            mlp = layer.mlp
            for lin in (mlp.gate_proj, mlp.up_proj):
                lin.weight = torch.nn.Parameter(lin.weight[:KEEP].clone())
                lin.out_features = KEEP
            mlp.down_proj.weight = torch.nn.Parameter(mlp.down_proj.weight[:, :KEEP].clone())
            mlp.down_proj.in_features = KEEP
        m.config.intermediate_size = KEEP
        for n, p in m.named_parameters():
            p.add_(0.2 * p.std() * torch.randn(p.shape, generator=g))
    return m


def kd_loss(z, t, labels, T, w):
    z, t, y = z[:, :-1], t[:, :-1], labels[:, 1:]
    mask = y != -100
    z, t, y = z[mask], t[mask], y[mask]
    ce = F.cross_entropy(z, y, reduction="none")
    logp, logq = F.log_softmax(z / T, -1), F.log_softmax(t / T, -1)
    kl = (logq.exp() * (logq - logp)).sum(-1)
    return ((1 - w) * ce + w * T * T * kl).mean()


def main():
    for name in ("tiny-llama", "tiny-qwen2"):
        gold = json.load(open(os.path.join(GOLD, name + ".json")))
        ids, labels = torch.tensor(gold["input_ids"]), torch.tensor(gold["labels"])
        tdir = os.path.join(GOLD, name + "-kd-teacher")
        teacher_of(name).save_pretrained(tdir, safe_serialization=True)
        student = student_of(tdir)
        sdir = os.path.join(GOLD, name + "-kd-student")
        student.save_pretrained(sdir, safe_serialization=True)
        student = AutoModelForCausalLM.from_pretrained(sdir, attn_implementation="eager").double()
        teacher = AutoModelForCausalLM.from_pretrained(tdir, attn_implementation="eager").double()
        with torch.no_grad():
            t = teacher(ids).logits
        out, tensors = {"model": name, "student": os.path.basename(sdir), "teacher": os.path.basename(tdir)}, {}
        for key, s in SETTINGS.items():
            student.zero_grad()
            loss = kd_loss(student(ids).logits, t, labels, s["temperature"], s["kd_weight"])
            loss.backward()
            out[key] = dict(s, loss=float(loss.detach()))
            for n, p in student.named_parameters():
                tensors[f"{key}.grad.{n}"] = p.grad.detach().float().contiguous()
        save_file(tensors, os.path.join(GOLD, name + ".kd.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(GOLD, name + ".kd.json"), "w") as f:
            json.dump(out, f, indent=1)
        print(name, {k: v["loss"] for k, v in out.items() if isinstance(v, dict)})


if __name__ == "__main__":
    main()
