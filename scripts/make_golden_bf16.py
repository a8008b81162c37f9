#!/usr/bin/env python3
"""bf16 mixed-precision golden fixtures from PyTorch autocast (run by hand, never in CI).

    python3 scripts/make_golden_bf16.py

Reads Tests/Fixtures/<model>/ (the fp32 HF dirs that scripts/make_golden.py wrote) and the batch
of Tests/Fixtures/golden/<model>.json (its input_ids and labels, used as they are, so the fp32 and
bf16 goldens share one input), for tiny-llama and tiny-qwen2. One forward + backward of the loss
of make_golden.py (`model(input_ids, labels=labels).loss`: HF shifts the labels inside, cross-entropy
over the fp32-upcast logits, mean over the targets that are not -100; computed here and checked
against the model's own) is run three ways on the same weights: under
`torch.autocast("cpu", dtype=torch.bfloat16)` (fp32 master parameters; matmuls in bf16 through
oneDNN; backward outside autocast), in plain fp32, and in float64 (the reference).
Eager attention, as make_golden.py; 1 thread, so a rerun on the same CPU kind is bit-identical.

Writes:
  Tests/Fixtures/golden/<model>.bf16.safetensors
      logits            fp32 [batch, seq, vocab]: the autocast forward's logits (bf16), .float()
      grad.<name>       fp32, one per model.named_parameters() name (tied weights once): the .grad
                        of the fp32 master parameter after loss.backward() of the autocast loss
  Tests/Fixtures/golden/<model>.bf16.json
      model, input_ids, labels (copied from <model>.json), loss (autocast), loss_fp32, loss_fp64
                       (cross-entropy in float64 too: HF's loss would upcast float64 logits to fp32
                       only, as in make_golden.py's loss, which is within 1e-7 of this one),
      relative_error   autocast vs float64, global: ||a - b|| / ||b|| (2-norms over the whole
                       tensor; |a - b| / |b| for the loss): logits, loss, grad_max (+ grad_max_param),
                       grad_median, grad {name: error}
      max_relative_error  the same pairs in the metric of Tests/PTLModelTests/GoldenTests.swift's
                       relativeError: max |a - b| / max |b|
      fp32_relative_error  plain fp32 vs float64, global (the scale of an fp32 implementation's error)
      settings         autocast dtype, attention, threads, torch, transformers, CPU and oneDNN facts
A Swift bf16 test can take its tolerance from relative_error: that is how far PyTorch's own bf16
autocast is from exact. Autocast also rounds each matmul's output to bf16 (hence bf16 logits); a
path with fp32 matmul outputs will not match these tensors bit for bit, so compare both with the
float64 model (or with each other) within a tolerance, not exactly.
"""
import json, os, statistics
import torch
import transformers
from transformers import AutoModelForCausalLM
from safetensors.torch import save_file, load_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = os.path.join(ROOT, "Tests", "Fixtures")
GOLD = os.path.join(FIX, "golden")
THREADS = 1
torch.set_num_threads(THREADS)


def cpu_facts():
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


def causal_lm_loss(logits, labels):
    """make_golden.py's loss, HF's ForCausalLMLoss: position t predicts labels[t + 1]; mean
    cross-entropy over the targets that are not -100; logits upcast to fp32. HF upcasts float64
    logits to fp32 too; here float64 stays float64, so the reference loss is exact."""
    logits = logits if logits.dtype == torch.float64 else logits.float()
    targets = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def forward_backward(path, dtype, input_ids, labels, autocast):
    """Loss, logits (as computed) and {name: grad as float64} of one forward + backward."""
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").to(dtype)
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(input_ids, labels=labels)
        loss = causal_lm_loss(out.logits, labels)
    # The same loss as the model's own (bit for bit where HF computes it in the same precision).
    tol = 0 if dtype == torch.float32 else 1e-6 * float(loss.detach().abs())
    assert abs(float(loss.detach()) - float(out.loss.detach())) <= tol, (float(loss), float(out.loss))
    loss.backward()
    assert all(p.dtype == dtype and p.grad.dtype == dtype for p in model.parameters()), "master weights changed dtype"
    grads = {n: p.grad.detach().double() for n, p in model.named_parameters()}
    return float(loss.detach()), out.logits.detach(), grads


def global_error(a, b):
    return float(torch.linalg.vector_norm(a.double() - b) / torch.linalg.vector_norm(b))


def max_error(a, b):
    return float((a.double() - b).abs().max() / b.abs().max())


def errors(metric, loss, logits, grads, ref):
    per = {n: metric(g, ref["grads"][n]) for n, g in grads.items()}
    worst = max(per, key=per.get)
    return {"logits": metric(logits, ref["logits"]), "loss": abs(loss - ref["loss"]) / abs(ref["loss"]),
            "grad_max": per[worst], "grad_max_param": worst, "grad_median": statistics.median(per.values()),
            "grad": per}


def golden_bf16(name):
    path = os.path.join(FIX, name)
    with open(os.path.join(GOLD, name + ".json")) as f:
        fp32_golden = json.load(f)
    input_ids = torch.tensor(fp32_golden["input_ids"])
    labels = torch.tensor(fp32_golden["labels"])

    loss64, logits64, grads64 = forward_backward(path, torch.float64, input_ids, labels, autocast=False)
    # The reference must be the fp32 golden's own: same weights, inputs and loss.
    assert abs(loss64 - fp32_golden["loss"]) <= 1e-6 * abs(fp32_golden["loss"]), (loss64, fp32_golden["loss"])
    assert max_error(load_file(os.path.join(GOLD, name + ".safetensors"))["logits"], logits64) <= 1e-6
    ref = {"loss": loss64, "logits": logits64, "grads": grads64}
    loss32, logits32, grads32 = forward_backward(path, torch.float32, input_ids, labels, autocast=False)
    loss, logits, grads = forward_backward(path, torch.float32, input_ids, labels, autocast=True)

    tensors = {"logits": logits.float().contiguous()}
    for n, g in grads.items():
        tensors["grad." + n] = g.float().contiguous()  # the fp32 .grad, unchanged by the round trip
    save_file(tensors, os.path.join(GOLD, name + ".bf16.safetensors"), metadata={"format": "pt"})

    rel = errors(global_error, loss, logits, grads, ref)
    record = {
        "model": name, "input_ids": fp32_golden["input_ids"], "labels": fp32_golden["labels"],
        "loss": loss, "loss_fp32": loss32, "loss_fp64": loss64,
        "relative_error": rel,
        "max_relative_error": errors(max_error, loss, logits, grads, ref),
        "fp32_relative_error": {k: v for k, v in errors(global_error, loss32, logits32, grads32, ref).items() if k != "grad"},
        "settings": {"autocast": "torch.autocast('cpu', dtype=torch.bfloat16)", "logits_dtype_under_autocast": str(logits.dtype),
                     "attn_implementation": "eager", "threads": THREADS, "torch": torch.__version__,
                     "transformers": transformers.__version__, **cpu_facts()},
    }
    with open(os.path.join(GOLD, name + ".bf16.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(f"{name}: loss bf16 {loss:.6f} fp32 {loss32:.6f} fp64 {loss64:.6f}; autocast vs float64: "
          f"logits {rel['logits']:.3e}, loss {rel['loss']:.3e}, gradients max {rel['grad_max']:.3e} "
          f"({rel['grad_max_param']}) median {rel['grad_median']:.3e}")


for model_name in ("tiny-llama", "tiny-qwen2"):
    golden_bf16(model_name)
