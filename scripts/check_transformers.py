#!/usr/bin/env python3
"""Checks that an HF directory written by ptl loads in transformers unchanged and agrees with ptl
(run by hand; needs torch + transformers and a release build of ptl).

    python3 scripts/check_transformers.py MODEL_DIR [--data FILE.jsonl] [--lines 8]

Loads MODEL_DIR with AutoModelForCausalLM/AutoTokenizer, then compares with `ptl`:
  - token ids of every line (tokenizer parity),
  - mean next-token loss over the lines (`ptl perplexity --json`), i.e. the logits,
  - greedy continuations of three prompts (`ptl generate --temperature 0 --json`).
Exit status 1 when anything differs beyond fp32 rounding.
"""
import argparse, json, math, os, subprocess, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PTL = os.path.join(ROOT, ".build", "release", "ptl")
ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "gsm8k", "test.jsonl"))
ap.add_argument("--lines", type=int, default=8)
a = ap.parse_args()

tok = AutoTokenizer.from_pretrained(a.model)
model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32).eval()
print(f"transformers loaded {a.model}: {type(model).__name__}, {sum(p.numel() for p in model.parameters()):,} parameters")
lines = []
with open(a.data) as f:
    for l in f:
        if l.strip() and len(lines) < a.lines:
            d = json.loads(l)
            lines.append(f"Question: {d['question']}\nAnswer: {d['answer']}")
ok = True
total, count = 0.0, 0
with torch.no_grad():
    for text in lines:
        ids = tok(text)["input_ids"]
        ours = json.loads(subprocess.check_output([PTL, "tokenize", "--model", a.model, "--text", text, "--json"]))["ids"]
        if ours != ids:
            ok = False
            print("token ids differ:", text[:60])
        x = torch.tensor([ids])
        logp = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
        total -= float(logp.gather(1, x[0, 1:, None]).sum())
        count += len(ids) - 1
tmp = os.path.join(a.model, ".check_lines.jsonl")
with open(a.data) as f, open(tmp, "w") as g:
    g.writelines([l for l in f if l.strip()][: a.lines])
ppl = json.loads(subprocess.check_output([PTL, "perplexity", "--model", a.model, "--data", tmp, "--json"]))
os.remove(tmp)
ref = total / count
rel = abs(ppl["loss"] - ref) / ref
print(f"mean loss: transformers {ref:.6f}, ptl {ppl['loss']:.6f} (relative difference {rel:.2e}, {count} tokens)")
ok &= rel < 1e-4 and ppl["tokens"] == count
for prompt in ["The capital of France is", "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:", "Once upon a time"]:
    ids = tok(prompt)["input_ids"]
    x = torch.tensor([ids])
    # Plain greedy argmax for 20 tokens (generate() with min_new_tokens would mask EOS, while
    # `ptl generate --ignore-eos` only keeps going past it).
    ref_ids = []
    with torch.no_grad():
        for _ in range(20):
            ref_ids.append(int(model(torch.tensor([ids + ref_ids])).logits[0, -1].argmax()))
    out = json.loads(subprocess.check_output([PTL, "generate", "--model", a.model, "--prompt", prompt, "--max-new-tokens", "20",
                                              "--ignore-eos", "--json"]))
    same = out["generated_ids"] == ref_ids
    ok &= same
    print(f"greedy {'==' if same else '!='} {prompt[:30]!r}: {tok.decode(ref_ids)!r}")
print("OK: transformers and ptl agree" if ok else "MISMATCH")
sys.exit(0 if ok else 1)
