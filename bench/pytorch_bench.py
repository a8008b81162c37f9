#!/usr/bin/env python3
"""PyTorch on the shapes of `ptl-bench` (fp32, 2 threads): training step (forward + backward +
AdamW), prefill (one no-grad forward over batch x seq) and batch-1 greedy decode with a KV cache
(64-token prompt + 128 new tokens, counting the new ones). Medians after a warm-up.

    python3 bench/pytorch_bench.py [--config a|b|all] [--reps N] [--threads N]
Prints one JSON object per config.
"""
import argparse, json, os, statistics, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM

CONFIGS = {
    "a": dict(cfg=dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=8,
                       num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=False), batch=8, seq=256),
    "b": dict(cfg=dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True, rope_theta=100000.0),
              batch=4, seq=256),
}


def median_time(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(name, reps):
    spec = CONFIGS[name]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(max_position_embeddings=2048, attn_implementation="sdpa", **spec["cfg"]))
    B, T = spec["batch"], spec["seq"]
    V = spec["cfg"]["vocab_size"]
    x = torch.randint(0, V, (B, T)); y = torch.randint(0, V, (B, T))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        opt.zero_grad()
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, V), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    r = {"config": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
         "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    r["train_tokens_per_s"] = B * T / median_time(step, reps)
    model.eval()
    with torch.no_grad():
        r["prefill_tokens_per_s"] = B * T / median_time(lambda: model(x), reps)
        prompt = x[:1, :64]

        def decode():
            out = model(prompt, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            t0 = time.perf_counter()
            for _ in range(128):
                out = model(tok, past_key_values=past, use_cache=True)
                past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            return time.perf_counter() - t0
        decode()
        r["decode_b1_tokens_per_s"] = 128 / statistics.median([decode() for _ in range(max(1, reps // 2))])
    print(json.dumps(r))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="all", choices=["a", "b", "all"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for name in (["a", "b"] if a.config == "all" else [a.config]):
        run(name, a.reps)
