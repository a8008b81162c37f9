#!/usr/bin/env python3
"""Tokenizer fixtures from the `tokenizers` library (run by hand, not in CI).

    python3 scripts/make_tokenizer_fixtures.py

Trains a 1000-token byte-level BPE on GSM8K train (special <|endoftext|> = 0, TemplateProcessing
"<|endoftext|> $A") in four pre-tokenizer variants and writes, under Tests/Fixtures/tokenizers/:
  <variant>/tokenizer.json
  <variant>/gsm8k_test.ids    the ids of every GSM8K test line rendered with the template
  <variant>/hard_cases.ids    the ids of every line of hard_cases.jsonl (JSON strings)
one line per text, ids separated by spaces (default add_special_tokens=True).
Variants: bytelevel (GPT-2 regex), digits (Digits(individual) + ByteLevel), llama3 (Split with
the Llama-3 regex + ByteLevel without regex, ignore_merges), qwen2 (NFC + Split with the Qwen2
regex + ByteLevel without regex).
"""
import json, os
from tokenizers import Tokenizer, Regex, models, normalizers, pre_tokenizers, decoders, trainers, processors

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "tokenizers")
GSM = os.path.join(ROOT, "..", "shared", "data", "gsm8k")
TEMPLATE = "Question: {question}\nAnswer: {answer}"
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def render(line):
    d = json.loads(line)
    return TEMPLATE.replace("{question}", d["question"]).replace("{answer}", d["answer"])


def variant(name):
    model = models.BPE(ignore_merges=(name == "llama3"))
    tok = Tokenizer(model)
    if name == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    elif name == "digits":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False)])
    elif name == "llama3":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif name == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    with open(os.path.join(GSM, "train.jsonl")) as f:
        tok.train_from_iterator([render(l) for l in f if l.strip()], trainer=trainer)
    template = processors.TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)])
    tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), template]) if name == "llama3" else template
    return tok


with open(os.path.join(GSM, "test.jsonl")) as f:
    gsm = [render(l) for l in f if l.strip()]
with open(os.path.join(OUT, "hard_cases.jsonl")) as f:
    hard = [json.loads(l) for l in f if l.strip()]
for name in ("bytelevel", "digits", "llama3", "qwen2"):
    tok = variant(name)
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    for fname, texts in (("gsm8k_test.ids", gsm), ("hard_cases.ids", hard)):
        with open(os.path.join(d, fname), "w") as f:
            for t in texts:
                f.write(" ".join(map(str, tok.encode(t).ids)) + "\n")
    print(name, tok.get_vocab_size(), "tokens;", len(gsm), "+", len(hard), "texts")
