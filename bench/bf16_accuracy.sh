#!/usr/bin/env bash
# Does bf16 cost accuracy? Two measurements, each run in fp32 and in bf16 with the same seeds:
#   1. 300 steps of `ptl train` on a config-a model (hidden 256, 8 layers, 8/4 heads, FFN 768,
#      vocab 4096; ptl-bench's shape a) from random init on GSM8K train (../shared/data),
#      batch 8 × 256 tokens: the mean loss of the last 20 steps.
#   2. The demo loop (recipes/demo/ptl.yaml, one process): final accuracy on 500 problems.
#   bench/bf16_accuracy.sh [OUT_DIR]     (default out/bf16-accuracy; ~15 minutes on 2 cores)
# Resumable: a finished part is not run again.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/bf16-accuracy}
swift build -c release --product ptl >/dev/null
PTL=.build/release/ptl
mkdir -p "$OUT"
GSM=../shared/data/gsm8k/train.jsonl
if [ ! -d "$OUT/init-a" ]; then
    cat > "$OUT/config-a.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 768,
 "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 4096,
 "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000, "tie_word_embeddings": false,
 "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu"}
JSON
    $PTL init --config "$OUT/config-a.json" --tokenizer recipes/demo/tokenizer.json --out "$OUT/init-a" --seed 0 --std 0.02
fi
for p in fp32 bf16; do
    if [ ! -f "$OUT/train-$p.done" ]; then
        $PTL train --model "$OUT/init-a" --data "$GSM" --steps 300 --lr 1e-3 --batch-size 8 --seq-len 256 \
            --warmup 20 --schedule cosine --min-lr-ratio 0.1 --weight-decay 0.1 --clip 1.0 --seed 0 \
            --precision "$p" --out "$OUT/train-$p" --log "$OUT/train-$p.jsonl" > /dev/null
        touch "$OUT/train-$p.done"
    fi
done
for p in fp32 bf16; do
    if [ ! -f "$OUT/demo-$p/summary.json" ] || ! grep -q '"done" *: *true' "$OUT/demo-$p/summary.json"; then
        $PTL prune --config recipes/demo/ptl.yaml --precision "$p" --out "$OUT/demo-$p" > "$OUT/demo-$p.log" 2>&1
    fi
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
loss = {}
for p in ("fp32", "bf16"):
    steps = [json.loads(l) for l in open(f"{out}/train-{p}.jsonl")]
    loss[p] = sum(s["loss"] for s in steps[-20:]) / 20
    print(f"train config a, 300 steps, {p}: mean loss of the last 20 steps {loss[p]:.4f} (step 300: {steps[-1]['loss']:.4f})")
print(f"bf16 vs fp32: {100 * (loss['bf16'] - loss['fp32']) / loss['fp32']:+.2f} %")
for p in ("fp32", "bf16"):
    s = json.load(open(f"{out}/demo-{p}/summary.json"))
    print(f"demo loop {p}: " + ", ".join(f"{k} {v}" for k, v in s.items() if not isinstance(v, (list, dict))))
PY
