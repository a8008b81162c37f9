#!/usr/bin/env python3
"""Reads GGUF files written by `ptl export` with llama.cpp's own Python package (`gguf`, from PyPI)
and checks them against the HF model they came from. Run by hand (never in CI):

    pip install gguf torch safetensors
    python3 scripts/check_gguf.py FILE.gguf:HF_DIR [FILE.gguf:HF_DIR ...] > docs/gguf-check.txt

For each file it prints the metadata llama.cpp reads, the tensor types, and per tensor kind the
relative RMS error of gguf's dequantisation against the source weights (after undoing llama's q/k
row permutation). Tensors of the types gguf can quantise itself (F16, BF16, Q8_0, Q5_0) are
re-quantised from the source with gguf.quants.quantize and must match ptl's bytes exactly. With
llama.cpp's ggml library at hand (GGML_LIB=path/to/libggml-base.so, or the one of an installed
llama-cpp-python), every quantised tensor — Q4_K and Q6_K included — is also quantised by
llama.cpp's own ggml_quantize_chunk and must match byte for byte. Exit status 1 on any failure.
"""
import ctypes
import glob
import json
import os
import sys
from collections import defaultdict

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
import torch
from safetensors.torch import load_file

NAMES = {
    "attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight", "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight", "ffn_down.weight": "mlp.down_proj.weight",
}
# Loose bounds on the relative RMS error a type can show on trained weights (F16: 2^-11 rounding).
BOUNDS = {T.F32: 0.0, T.F16: 1e-3, T.BF16: 5e-3, T.Q8_0: 1e-2, T.Q6_K: 3e-2, T.Q5_0: 6e-2, T.Q4_K: 1.2e-1}
EXACT = {T.F16, T.BF16, T.Q8_0, T.Q5_0}
QUANTISED = {T.Q8_0, T.Q5_0, T.Q4_K, T.Q6_K}


def ggml_library():
    """llama.cpp's libggml-base (GGML_LIB, or llama-cpp-python's), or None."""
    candidates = [os.environ.get("GGML_LIB", "")]
    try:
        import llama_cpp  # noqa: F401  (only its directory is used)
        candidates += glob.glob(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so*"))
    except ImportError:
        pass
    for c in candidates:
        if c and os.path.exists(c):
            lib = ctypes.CDLL(c)
            lib.ggml_quantize_chunk.restype = ctypes.c_size_t
            lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
            return c, lib
    return None, None


GGML_PATH, GGML = ggml_library()


def hf_name(name):
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    _, layer, rest = name.split(".", 2)
    return f"model.layers.{layer}.{NAMES[rest]}"


def permute(w, heads):
    """convert_hf_to_gguf's permute for llama q/k rows."""
    shape = w.shape
    return w.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def field(r, key):
    f = r.fields.get(key)
    return None if f is None else f.contents()


def check(path, hf_dir):
    ok = True
    r = gguf.GGUFReader(path)
    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    arch = field(r, "general.architecture")
    src = {k: v.float().numpy() for k, v in load_file(os.path.join(hf_dir, "model.safetensors")).items()}
    print(f"## {os.path.basename(path)} ({os.path.getsize(path) / 1e6:.2f} MB) from {hf_dir}")
    for key in ["general.architecture", "general.name", "general.file_type", "general.alignment", f"{arch}.block_count",
                f"{arch}.context_length", f"{arch}.embedding_length", f"{arch}.feed_forward_length",
                f"{arch}.attention.head_count", f"{arch}.attention.head_count_kv", f"{arch}.rope.freq_base",
                f"{arch}.attention.layer_norm_rms_epsilon", f"{arch}.attention.key_length",
                "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token"]:
        if key in r.fields:
            print(f"  {key} = {field(r, key)!r} ({r.fields[key].types[0].name})")
    tokens = field(r, "tokenizer.ggml.tokens")
    print(f"  tokenizer.ggml.tokens: {len(tokens)}, merges: {len(field(r, 'tokenizer.ggml.merges') or [])}, "
          f"chat_template: {'yes' if 'tokenizer.chat_template' in r.fields else 'no'}")
    expect = {f"{arch}.block_count": cfg["num_hidden_layers"], f"{arch}.embedding_length": cfg["hidden_size"],
              f"{arch}.feed_forward_length": cfg["intermediate_size"], f"{arch}.attention.head_count": cfg["num_attention_heads"],
              f"{arch}.attention.head_count_kv": cfg["num_key_value_heads"]}
    for k, v in expect.items():
        if field(r, k) != v:
            print(f"  FAIL {k} = {field(r, k)} but config.json says {v}")
            ok = False
    if len(tokens) != cfg["vocab_size"]:
        print(f"  FAIL {len(tokens)} tokens, vocab_size {cfg['vocab_size']}")
        ok = False
    types = defaultdict(int)
    errors = defaultdict(list)
    exact_total = exact_match = 0
    ggml_total = ggml_match = 0
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    for t in r.tensors:
        types[t.tensor_type.name] += 1
        shape = [int(x) for x in reversed(t.shape)]
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)
        ref = src[hf_name(t.name)]
        if arch == "llama" and t.name.endswith(("attn_q.weight", "attn_q.bias")):
            ref = permute(ref, heads)
        elif arch == "llama" and t.name.endswith(("attn_k.weight", "attn_k.bias")):
            ref = permute(ref, kv_heads)
        ref = np.ascontiguousarray(ref, dtype=np.float32)
        if list(ref.shape) != shape:
            print(f"  FAIL {t.name}: shape {shape}, source {list(ref.shape)}")
            ok = False
            continue
        rel = float(np.sqrt(np.mean((got - ref) ** 2)) / max(np.sqrt(np.mean(ref.astype(np.float64) ** 2)), 1e-30))
        kind = t.name.split(".", 2)[-1] if t.name.startswith("blk.") else t.name
        errors[(kind, t.tensor_type.name)].append(rel)
        if rel > BOUNDS[t.tensor_type]:
            print(f"  FAIL {t.name} ({t.tensor_type.name}): relative RMS error {rel:.3g} above {BOUNDS[t.tensor_type]}")
            ok = False
        if t.tensor_type in EXACT:
            exact_total += 1
            want = gguf.quants.quantize(ref, t.tensor_type)
            if np.array_equal(np.asarray(want).view(np.uint8).reshape(-1), np.asarray(t.data).view(np.uint8).reshape(-1)):
                exact_match += 1
            else:
                print(f"  FAIL {t.name} ({t.tensor_type.name}): bytes differ from gguf.quants.quantize")
                ok = False
        if GGML is not None and t.tensor_type in QUANTISED:
            ggml_total += 1
            ours = np.asarray(t.data).view(np.uint8).reshape(-1)
            theirs = np.zeros(ours.size, dtype=np.uint8)
            n = GGML.ggml_quantize_chunk(int(t.tensor_type), ref.ctypes.data, theirs.ctypes.data, 0, ref.shape[0] if ref.ndim > 1 else 1,
                                         ref.shape[-1], None)
            if n == ours.size and np.array_equal(theirs, ours):
                ggml_match += 1
            else:
                print(f"  FAIL {t.name} ({t.tensor_type.name}): bytes differ from llama.cpp's ggml_quantize_chunk")
                ok = False
    print("  tensor types: " + ", ".join(f"{n} {k}" for k, n in sorted(types.items())))
    print(f"  bytes identical to gguf.quants.quantize: {exact_match}/{exact_total} tensors of F16/BF16/Q8_0/Q5_0")
    if GGML is not None:
        print(f"  bytes identical to llama.cpp's ggml_quantize_chunk: {ggml_match}/{ggml_total} quantised tensors (Q8_0/Q5_0/Q4_K/Q6_K)")
    print("  relative RMS error (dequantised by gguf vs source), by tensor kind and type: mean / max")
    for (kind, tname), v in sorted(errors.items()):
        print(f"    {kind:28s} {tname:5s} {np.mean(v):.2e} / {np.max(v):.2e}  ({len(v)})")
    print("  " + ("OK" if ok else "FAILED"))
    print()
    return ok


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    from importlib.metadata import version, PackageNotFoundError
    def v(p):
        try:
            return version(p)
        except PackageNotFoundError:
            return "not installed"
    print(f"gguf package {v('gguf')}; llama-cpp-python {v('llama_cpp_python')}; numpy {np.__version__}; "
          f"llama.cpp ggml: {GGML_PATH or 'not found (set GGML_LIB to check Q4_K/Q6_K bytes)'}\n")
    results = [check(*arg.split(":", 1)) for arg in sys.argv[1:]]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
