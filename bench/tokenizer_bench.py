#!/usr/bin/env python3
"""The `tokenizers` library on the same text as `ptl-bench --tokenizer`: one encode call per
GSM8K line rendered with the template, and encode_batch. MB/s of UTF-8 input, median of 5.

    RAYON_NUM_THREADS=1 python3 bench/tokenizer_bench.py TOKENIZER.json DATA.jsonl
"""
import json, statistics, sys, time
from tokenizers import Tokenizer

tok = Tokenizer.from_file(sys.argv[1])
lines = []
with open(sys.argv[2]) as f:
    for l in f:
        if l.strip():
            d = json.loads(l)
            lines.append(f"Question: {d['question']}\nAnswer: {d['answer']}")
mb = sum(len(l.encode()) for l in lines) / 1e6
for name, fn in (("per line", lambda: [tok.encode(l) for l in lines]), ("encode_batch", lambda: tok.encode_batch(lines))):
    fn()
    times = []
    for _ in range(5):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    print(f"tokenizers {name}: {mb / statistics.median(times):.2f} MB/s ({mb:.2f} MB)")
