#!/usr/bin/env python3
"""Loads GGUF files written by `ptl export` with llama.cpp itself (llama-cpp-python, built from
PyPI's source package) and compares it with ptl reading the same file: the prompt's token ids
(llama.cpp's tokenizer from tokenizer.ggml.* against ptl's tokenizer.json) and the greedy
continuation (llama.cpp's CPU kernels against ptl's fp32 ones; identical up to the first
near-tie, where different summation orders may pick either token). Run by hand (never in CI):

    CMAKE_ARGS="-DLLAMA_CURL=OFF" pip install llama-cpp-python     # builds llama.cpp (long)
    python3 scripts/check_llamacpp.py FILE.gguf [FILE.gguf ...] > docs/llamacpp-check.txt

Exit status 1 when a tokenization differs or a continuation differs before a near-tie.
"""
import json
import os
import subprocess
import sys

import numpy as np
import llama_cpp

PTL = os.path.join(os.path.dirname(__file__), "..", ".build", "release", "ptl")
PROMPTS = [
    "Question: Tom has 12 apples and buys 7 more. Then he eats 4. How many apples does he have?\nAnswer:",
    "Question: A box holds 6 rows of 8 eggs. 5 eggs break. How many eggs are left?\nAnswer:",
    "The capital of France is",
]
NEW_TOKENS = 24


def ptl_ids(path, text):
    out = subprocess.run([PTL, "tokenize", "--model", path, "--text", text, "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["ids"]


def ptl_greedy(path, text):
    out = subprocess.run([PTL, "generate", "--model", path, "--prompt", text, "--max-new-tokens", str(NEW_TOKENS),
                          "--precision", "fp32", "--threads", "1", "--ignore-eos"], check=True, capture_output=True, text=True)
    return out.stdout


def check(path):
    ok = True
    llm = llama_cpp.Llama(model_path=path, n_ctx=512, n_threads=1, n_batch=512, logits_all=True, verbose=False)
    meta = llm.metadata
    print(f"## {os.path.basename(path)}: llama.cpp loads it ({meta.get('general.architecture')}, {llm.n_vocab()} tokens, "
          f"{meta.get('general.file_type')} file type, pre {meta.get('tokenizer.ggml.pre')})")
    for text in PROMPTS:
        ours = ptl_ids(path, text)
        theirs = llm.tokenize(text.encode(), add_bos=True, special=True)
        same_ids = ours == theirs
        if not same_ids:
            # llama.cpp adds eos only through its own template handling; compare without a trailing eos.
            same_ids = ours[:len(theirs)] == theirs and len(ours) == len(theirs) + 1
        print(f"  tokens {'equal' if same_ids else 'DIFFER'} ({len(ours)} ids): {text[:40]!r}")
        if not same_ids:
            print(f"    ptl       {ours}\n    llama.cpp {theirs}")
            ok = False
        # Greedy with llama.cpp on ptl's ids, logging each step's top-2 gap.
        llm.reset()
        llm.eval(ours)
        generated, gaps = [], []
        for _ in range(NEW_TOKENS):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            top = np.argsort(logits)[-2:]
            gaps.append(float(logits[top[1]] - logits[top[0]]))
            tok = int(top[1])
            generated.append(tok)
            llm.eval([tok])
        theirs_text = llm.detokenize(generated).decode("utf-8", errors="replace")
        ours_text = ptl_greedy(path, text)
        ours_new = ours_text[len(text):] if ours_text.startswith(text) else ours_text
        first_tie = next((i for i, g in enumerate(gaps) if g < 1e-2), len(gaps))
        prefix = llm.detokenize(generated[:first_tie]).decode("utf-8", errors="replace")
        agree = ours_new.startswith(prefix)
        print(f"  greedy {'agrees' if agree else 'DIFFERS'} over {first_tie}/{NEW_TOKENS} tokens before any near-tie: llama.cpp {theirs_text!r}")
        if not agree:
            print(f"    ptl {ours_new!r}")
            ok = False
    print("  " + ("OK" if ok else "FAILED") + "\n")
    return ok


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    from importlib.metadata import version
    print(f"llama-cpp-python {version('llama_cpp_python')} (llama.cpp {getattr(llama_cpp, '__version__', '?')})\n")
    return 0 if all([check(p) for p in sys.argv[1:]]) else 1


if __name__ == "__main__":
    sys.exit(main())
