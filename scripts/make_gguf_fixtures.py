#!/usr/bin/env python3
"""GGUF fixtures made with the `gguf` Python package (run by hand, not in CI).

    python3 scripts/make_gguf_fixtures.py

Writes Tests/Fixtures/gguf/:
  types.gguf + types-expected.safetensors: one (2, 512) tensor of every type we read (F32, F16,
      BF16, Q8_0, Q4_0, Q4_1 quantised by gguf; Q4_K, Q5_K, Q6_K as random blocks with sane
      scales) and the fp32 values `gguf.quants.dequantize` gives for them.
  tiny-llama.gguf: Tests/Fixtures/tiny-llama written the way llama.cpp's converter does
      (blk.N.* names, q/k rows permuted, tokenizer.ggml.* from tokenizer.json), without its
      llama3 rope scaling: the Swift test checks our loader recovers every HF tensor exactly
      and that the rebuilt tokenizer gives the HF tokenizer's ids.
"""
import json, os
import numpy as np
import gguf
from gguf import GGMLQuantizationType as T, quants
from safetensors.numpy import save_file, load_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "gguf")
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(0)

# 1. Every type.
w = gguf.GGUFWriter(os.path.join(OUT, "types.gguf"), "llama")
expected = {}
x = rng.standard_normal((2, 512)).astype(np.float32)
for name in ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"]:
    qt = T[name]
    if name == "F32":
        raw = x.copy()
    elif name == "F16":
        raw = x.astype(np.float16)
    elif name in ("BF16", "Q8_0", "Q4_0", "Q4_1"):
        raw = quants.quantize(x, qt)
    else:
        block, size = gguf.GGML_QUANT_SIZES[qt]
        raw = rng.integers(0, 256, size=(2, 512 // block * size), dtype=np.uint8)
        blocks = raw.reshape(-1, size)
        scale = np.array([0.01], dtype=np.float16).view(np.uint8)
        mins = np.array([0.002], dtype=np.float16).view(np.uint8)
        if name == "Q6_K":
            blocks[:, 208:210] = scale            # d is the last field
        else:
            blocks[:, 0:2] = scale                 # d
            blocks[:, 2:4] = mins                  # dmin
    deq = quants.dequantize(raw, qt).astype(np.float32) if name not in ("F32", "F16") else raw.astype(np.float32)
    expected[name.lower()] = np.ascontiguousarray(deq.reshape(2, 512))
    w.add_tensor(name.lower(), raw, raw_dtype=qt if name not in ("F32", "F16") else None)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
save_file(expected, os.path.join(OUT, "types-expected.safetensors"))

# 2. The tiny Llama as llama.cpp would write it.
src = os.path.join(ROOT, "Tests", "Fixtures", "tiny-llama")
cfg = json.load(open(os.path.join(src, "config.json")))
tensors = load_file(os.path.join(src, "model.safetensors"))
tok = json.load(open(os.path.join(src, "tokenizer.json")))


def permute(weights, n_head, n_head_kv=None):      # convert_hf_to_gguf.LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


w = gguf.GGUFWriter(os.path.join(OUT, "tiny-llama.gguf"), "llama")
H, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
w.add_block_count(cfg["num_hidden_layers"]); w.add_context_length(cfg["max_position_embeddings"])
w.add_embedding_length(H); w.add_feed_forward_length(cfg["intermediate_size"])
w.add_head_count(heads); w.add_head_count_kv(kv); w.add_key_length(cfg["head_dim"]); w.add_value_length(cfg["head_dim"])
w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"]); w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
w.add_vocab_size(cfg["vocab_size"])
vocab = tok["model"]["vocab"]
tokens = [None] * len(vocab)
for t, i in vocab.items():
    tokens[i] = t
w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("default")
w.add_token_list(tokens)
w.add_token_types([3 if t == "<|endoftext|>" else 1 for t in tokens])
w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]])
w.add_bos_token_id(0); w.add_eos_token_id(0); w.add_add_bos_token(True)
names = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
         "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
         "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
         "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight"}
for name, t in tensors.items():
    if name == "model.embed_tokens.weight": g = "token_embd.weight"
    elif name == "model.norm.weight": g = "output_norm.weight"
    elif name == "lm_head.weight": g = "output.weight"
    else:
        layer, rest = name.split(".")[2], ".".join(name.split(".")[3:])
        g = f"blk.{layer}.{names[rest]}"
        if rest == "self_attn.q_proj.weight": t = permute(t, heads, heads)
        if rest == "self_attn.k_proj.weight": t = permute(t, heads, kv)
    w.add_tensor(g, np.ascontiguousarray(t))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print("wrote", OUT, sorted(os.listdir(OUT)))
