#!/usr/bin/env python3
"""PyTorch on the shapes of `ptl-bench` (2 threads), in fp32 and/or bf16 autocast: training step
(forward + backward + global-norm clip + AdamW), prefill (one no-grad forward over batch x seq),
and greedy decode with a KV cache (64-token prompt + 128 new tokens, counting the new ones) for
batch 1 and batch 8 (8 same-length prompts advancing together; 8 x 128 new tokens counted).
Medians after a warm-up.

    python3 bench/pytorch_bench.py [--config a|b|all] [--precision fp32|bf16|both] [--reps N] [--threads N]

Prints one JSON object per line, one per (config, precision), fp32 first:
  config, precision ("fp32" | "bf16"), torch, transformers, threads, cpu (model name from
  /proc/cpuinfo), cpu_capability (torch.backends.cpu.get_cpu_capability()), avx512_bf16, amx
  (CPU flags), mkldnn_bf16 (oneDNN says bf16 is supported), loadavg_1min (when the config
  started), OPENBLAS_CORETYPE, and the figures
  train_tokens_per_s, prefill_tokens_per_s, decode_b1_tokens_per_s, decode_b8_tokens_per_s.
The metric keys are the same for both precisions; the "precision" key tells them apart.

bf16 is `torch.autocast("cpu", dtype=torch.bfloat16)`, as one trains and serves with it:
  train    forward + cross-entropy inside autocast (matmuls in bf16 through oneDNN; the logits
           are taken to fp32 before the loss), backward outside it; the parameters, their
           gradients, the clip and AdamW stay fp32 (fp32 master weights).
  prefill  the no-grad forward inside autocast.
  decode   the whole generation (prompt, then the 128 steps) inside one autocast region, so the
           bf16 copies of the weights are cast once, in the untimed prompt forward, and reused
           by every timed step (autocast's weight-cast cache); the KV cache is what the model
           writes under autocast.
fp32 is the same code without autocast. Each (config, precision) starts from the same seeded
model, so both precisions run on identical weights.
"""
import argparse, inspect, json, os, statistics, time
from contextlib import nullcontext
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

CONFIGS = {
    "a": dict(cfg=dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=8,
                       num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=False), batch=8, seq=256),
    "b": dict(cfg=dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True, rope_theta=100000.0),
              batch=4, seq=256),
}
PROMPT, NEW, DECODE_BATCH = 64, 128, 8
# transformers 5.x renamed the KV-cache argument and output `past_key_values` to `cache`.
CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def cpu_info():
    name, flags = None, set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name is None:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return {"cpu": name, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512_bf16": "avx512_bf16" in flags, "amx": any(f.startswith("amx") for f in flags),
            "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}


def autocast(precision):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def median_time(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return statistics.median(times)


def decode_seconds(model, prompt, precision):
    """Greedy decode of NEW tokens after `prompt` (batch x PROMPT); returns the seconds of the NEW steps."""
    with autocast(precision):
        out = model(prompt, use_cache=True)
        cache, tok = getattr(out, CACHE_ARG), out.logits[:, -1].argmax(-1, keepdim=True)
        t0 = time.perf_counter()
        for _ in range(NEW):
            out = model(tok, use_cache=True, **{CACHE_ARG: cache})
            cache, tok = getattr(out, CACHE_ARG), out.logits[:, -1].argmax(-1, keepdim=True)
        return time.perf_counter() - t0


def run(name, precision, reps, info):
    spec = CONFIGS[name]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(max_position_embeddings=2048, attn_implementation="sdpa", **spec["cfg"]))
    B, T = spec["batch"], spec["seq"]
    V = spec["cfg"]["vocab_size"]
    x = torch.randint(0, V, (B, T)); y = torch.randint(0, V, (B, T))
    prompts = torch.randint(0, V, (DECODE_BATCH, PROMPT), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        opt.zero_grad()
        with autocast(precision):
            logits = model(x).logits
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, V), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    r = {"config": name, "precision": precision, "torch": torch.__version__, "transformers": transformers.__version__,
         "threads": torch.get_num_threads(), **info, "loadavg_1min": os.getloadavg()[0],
         "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    r["train_tokens_per_s"] = B * T / median_time(step, reps)
    model.eval()
    with torch.no_grad():
        def prefill():
            with autocast(precision):
                model(x)
        r["prefill_tokens_per_s"] = B * T / median_time(prefill, reps)
        runs = max(1, reps // 2)
        decode_seconds(model, x[:1, :PROMPT], precision)
        r["decode_b1_tokens_per_s"] = NEW / statistics.median(
            [decode_seconds(model, x[:1, :PROMPT], precision) for _ in range(runs)])
        decode_seconds(model, prompts, precision)
        r["decode_b8_tokens_per_s"] = DECODE_BATCH * NEW / statistics.median(
            [decode_seconds(model, prompts, precision) for _ in range(runs)])
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="all", choices=["a", "b", "all"])
    ap.add_argument("--precision", default="both", choices=["fp32", "bf16", "both"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    info = cpu_info()
    for name in (["a", "b"] if a.config == "all" else [a.config]):
        for precision in (["fp32", "bf16"] if a.precision == "both" else [a.precision]):
            run(name, precision, a.reps, info)
