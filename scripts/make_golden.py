#!/usr/bin/env python3
"""Golden reference fixtures from PyTorch + transformers (run by hand, never in CI).

    python3 scripts/make_golden.py

Writes, deterministically (seed 0):
  Tests/Fixtures/tiny-llama/, Tests/Fixtures/tiny-qwen2/   HF model dirs (fp32 safetensors,
      config.json, tokenizer.json: a 384-token byte-level BPE trained on GSM8K train).
  Tests/Fixtures/golden/<model>.safetensors   logits, grad.<name> for every parameter,
      after.<name> (parameters after 5 AdamW steps).
  Tests/Fixtures/golden/<model>.json          input_ids, labels, loss, adamw {settings, losses,
      grad_norms}, perplexity {sum_nll, tokens, mean_nll, ppl}, generate {prompt_ids,
      generated_ids, text, top2_gaps}.
  Tests/Fixtures/golden/train-one-line.json   the loss trajectory `ptl train` must reproduce on
      one-line.jsonl with --batch-size 1 (see TRAIN below).
All math in float64 (the Swift side computes in fp32 and compares within 1e-4 relative).
"""
import json, math, os
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, processors
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, AutoModelForCausalLM
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = os.path.join(ROOT, "Tests", "Fixtures")
GOLD = os.path.join(FIX, "golden")
GSM = os.path.join(ROOT, "..", "shared", "data", "gsm8k")
TEMPLATE = "Question: {question}\nAnswer: {answer}"
os.makedirs(GOLD, exist_ok=True)
torch.manual_seed(0)


def render(line):
    d = json.loads(line)
    return TEMPLATE.replace("{question}", d["question"]).replace("{answer}", d["answer"])


def train_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    with open(os.path.join(GSM, "train.jsonl")) as f:
        texts = [render(l) for l in f if l.strip()]
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)])
    return tok


def save_dir(model, tok, path):
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "model_max_length": 256,
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=1)


def perturb(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))


def param_groups(model, wd):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]


def golden(name, model, tok):
    path = os.path.join(FIX, name)
    save_dir(model, tok, path)
    reloaded = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").double()
    model = model.double()
    with open(os.path.join(GSM, "test.jsonl")) as f:
        lines = [l for l in f if l.strip()]
    ids = [tok.encode(render(lines[i])).ids[:20] for i in (0, 1)]
    input_ids = torch.tensor(ids)
    labels = input_ids.clone()
    labels[1, -5:] = -100
    out = model(input_ids, labels=labels)
    assert torch.allclose(reloaded(input_ids).logits, out.logits, atol=1e-10), "reloaded model differs"
    model.zero_grad()
    out.loss.backward()
    tensors = {"logits": out.logits.detach().float().contiguous()}
    for n, p in model.named_parameters():
        tensors["grad." + n] = p.grad.detach().float().contiguous()
    # 5 AdamW steps on the same batch.
    m2 = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").double()
    settings = {"lr": 1e-3, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1, "clip": 1.0}
    opt = torch.optim.AdamW(param_groups(m2, settings["weight_decay"]), lr=settings["lr"], betas=tuple(settings["betas"]), eps=settings["eps"])
    losses, norms = [], []
    for step in range(5):
        opt.zero_grad()
        loss = m2(input_ids, labels=labels).loss
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(m2.parameters(), settings["clip"])))
        losses.append(float(loss))
        opt.step()
    with torch.no_grad():
        losses.append(float(m2(input_ids, labels=labels).loss))
    for n, p in m2.named_parameters():
        tensors["after." + n] = p.detach().float().contiguous()
    save_file(tensors, os.path.join(GOLD, name + ".safetensors"), metadata={"format": "pt"})
    # Perplexity over 6 lines, each tokenized on its own.
    ppl_lines = lines[:6]
    with open(os.path.join(GOLD, "perplexity.jsonl"), "w") as f:
        f.writelines(ppl_lines)
    sum_nll, count, ppl_ids = 0.0, 0, []
    with torch.no_grad():
        for l in ppl_lines:
            ppl_ids.append(tok.encode(render(l)).ids)
            x = torch.tensor([ppl_ids[-1]])
            logp = torch.log_softmax(model(x).logits[0, :-1], dim=-1)
            sum_nll -= float(logp.gather(1, x[0, 1:, None]).sum())
            count += x.shape[1] - 1
    # Greedy generation.
    prompt = "Question: Natalia sold clips to 48 of her friends"
    prompt_ids = tok.encode(prompt).ids
    with torch.no_grad():
        # BOS is id 0 like the pad id: pass the attention mask, or generate masks the BOS out.
        model.generation_config.eos_token_id = None
        x = torch.tensor([prompt_ids])
        gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=24,
                             pad_token_id=0)[0, len(prompt_ids):].tolist()
        full = torch.tensor([prompt_ids + gen])
        logits = model(full).logits[0, len(prompt_ids) - 1:-1]
        top2 = torch.topk(logits, 2, dim=-1).values
        gaps = (top2[:, 0] - top2[:, 1]).tolist()
        assert logits.argmax(-1).tolist() == gen
    record = {
        "model": name, "input_ids": ids, "labels": labels.tolist(), "loss": float(out.loss),
        "adamw": dict(settings, losses=losses, grad_norms=norms),
        "perplexity": {"file": "perplexity.jsonl", "sum_nll": sum_nll, "tokens": count, "ids": ppl_ids,
                       "mean_nll": sum_nll / count, "ppl": math.exp(sum_nll / count)},
        "generate": {"prompt": prompt, "prompt_ids": prompt_ids, "generated_ids": gen,
                     "text": tok.decode(gen), "top2_gaps": gaps},
    }
    with open(os.path.join(GOLD, name + ".json"), "w") as f:
        json.dump(record, f, indent=1)
    print(name, "loss", record["loss"], "ppl", record["perplexity"]["ppl"], "min top-2 gap", min(gaps))


# `ptl train --model M --data one-line.jsonl --batch-size 1 --seq-len 1024 --steps 8 --lr 1e-3
#  --warmup 2 --schedule cosine --clip 1.0 --weight-decay 0.1` (betas 0.9/0.95, eps 1e-8,
#  min lr ratio 0.1): lr(s) = P(s+1)/W for s < W, else P(r + (1-r)/2 (1 + cos(pi (s-W)/max(1, N-W)))).
TRAIN = {"steps": 8, "lr": 1e-3, "warmup": 2, "schedule": "cosine", "min_lr_ratio": 0.1, "clip": 1.0,
         "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8, "batch_size": 1, "seq_len": 1024}


def lr_at(s):
    P, W, N, r = TRAIN["lr"], TRAIN["warmup"], TRAIN["steps"], TRAIN["min_lr_ratio"]
    if s < W:
        return P * (s + 1) / W
    progress = min(1.0, (s - W) / max(1, N - W))
    return P * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_trajectory(name, tok):
    with open(os.path.join(GSM, "train.jsonl")) as f:
        line = min((l for l in f if l.strip()), key=len)
    with open(os.path.join(GOLD, "one-line.jsonl"), "w") as f:
        f.write(line)
    ids = tok.encode(render(line)).ids[:TRAIN["seq_len"]]
    x = torch.tensor([ids[:-1]]); y = torch.tensor([ids[1:]])
    model = AutoModelForCausalLM.from_pretrained(os.path.join(FIX, name), attn_implementation="eager").double()
    opt = torch.optim.AdamW(param_groups(model, TRAIN["weight_decay"]), lr=TRAIN["lr"], betas=tuple(TRAIN["betas"]), eps=TRAIN["eps"])
    losses, lrs, norms = [], [], []
    for s in range(TRAIN["steps"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(s)
        opt.zero_grad()
        logits = model(x).logits[0]
        loss = torch.nn.functional.cross_entropy(logits, y[0])
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), TRAIN["clip"])))
        losses.append(float(loss)); lrs.append(lr_at(s))
        opt.step()
    return {"tokens": len(ids), "losses": losses, "lrs": lrs, "grad_norms": norms}


tok = train_tokenizer()
V = tok.get_vocab_size()
llama = LlamaForCausalLM(LlamaConfig(
    vocab_size=V, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
    intermediate_size=176, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=256,
    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 32},
    tie_word_embeddings=False, attention_bias=False, mlp_bias=False, bos_token_id=0, eos_token_id=0,
    attn_implementation="eager"))
qwen = Qwen2ForCausalLM(Qwen2Config(
    vocab_size=V, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
    intermediate_size=128, rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=256, tie_word_embeddings=True,
    use_sliding_window=False, bos_token_id=0, eos_token_id=0, attn_implementation="eager"))
for m in (llama, qwen):
    perturb(m)
golden("tiny-llama", llama, tok)
golden("tiny-qwen2", qwen, tok)
record = {"settings": TRAIN, "data": "one-line.jsonl"}
for name in ("tiny-llama", "tiny-qwen2"):
    record[name] = train_trajectory(name, tok)
with open(os.path.join(GOLD, "train-one-line.json"), "w") as f:
    json.dump(record, f, indent=1)
for name in ("tiny-llama", "tiny-qwen2"):
    print(name, "config:", open(os.path.join(FIX, name, "config.json")).read())
