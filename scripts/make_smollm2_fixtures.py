#!/usr/bin/env python3
"""SmolLM2 reference fixtures from transformers (run by hand after scripts/setup.sh fetched the GGUF).

    python3 scripts/make_smollm2_fixtures.py [cache/models/SmolLM2-135M-Instruct.Q4_1.gguf]

transformers dequantises the GGUF (with the gguf package) into fp32 HF weights and converts its
tokenizer; this script records, under Tests/Fixtures/smollm2/:
  gsm8k_question_ids.txt  the HF tokenizer's ids of every GSM8K test question (one line each),
                          with SmolLM2's Digits + ByteLevel pre-tokenizer
  greedy.json             greedy continuations (token ids) of a few prompts, with top-2 logit gaps
"""
import json, os, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "smollm2")
os.makedirs(OUT, exist_ok=True)
d, f = os.path.split(os.path.abspath(path))
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
# transformers' GGUF converter gives every gpt2-type vocabulary a plain ByteLevel pre-tokenizer;
# SmolLM2's published tokenizer.json (and llama.cpp's `smollm` pre-type) first split digits one
# by one. Restore that, so the reference is the `tokenizers` library on SmolLM2's real config.
from tokenizers import pre_tokenizers
tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
    [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
with open(os.path.join(ROOT, "..", "shared", "data", "gsm8k", "test.jsonl")) as fh:
    questions = [json.loads(l)["question"] for l in fh if l.strip()]
with open(os.path.join(OUT, "gsm8k_question_ids.txt"), "w") as fh:
    for q in questions:
        fh.write(" ".join(map(str, tok(q)["input_ids"])) + "\n")
prompts = ["The capital of France is", "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:",
           "Once upon a time"]
out = []
with torch.no_grad():
    for p in prompts:
        ids = tok(p)["input_ids"]
        x = torch.tensor([ids])
        gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=24,
                             pad_token_id=tok.eos_token_id)[0, len(ids):].tolist()
        logits = model(torch.tensor([ids + gen])).logits[0, len(ids) - 1:-1]
        top2 = torch.topk(logits, 2, dim=-1).values
        out.append({"prompt": p, "prompt_ids": ids, "generated_ids": gen, "text": tok.decode(gen),
                    "top2_gaps": (top2[:, 0] - top2[:, 1]).tolist(), "first_logits": logits[0, :16].tolist()})
        print(repr(p), "->", repr(tok.decode(gen)))
with open(os.path.join(OUT, "greedy.json"), "w") as fh:
    json.dump(out, fh, indent=1)
