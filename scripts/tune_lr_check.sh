#!/usr/bin/env bash
# Does a short distillation tune at the loop's learning rate help or hurt the converged SmolLM2
# specialist (scripts/make_specialist.sh)? Prune-Once to 95 % of the parameters (one block and
# 64 neurons a block), then 14 kd steps of 16 lines (2-step warm-up, cosine) at each rate, in
# this process on one thread; accuracy on 100 held-out problems. docs/compare-smollm2-30.md.
#   scripts/tune_lr_check.sh                 (LRS="1e-6 1e-5 1e-4", OUT=out/diag-lr)
set -euo pipefail
cd "$(dirname "$0")/.."
M=cache/smollm2-arith/model
D=cache/smollm2-arith/data
[ -f "$M/model.safetensors" ] || { echo "tune_lr_check: $M is missing; run scripts/make_specialist.sh first" >&2; exit 1; }
swift build -c release --product ptl
OUT=${OUT:-out/diag-lr}
mkdir -p "$OUT"
for lr in ${LRS:-1e-6 1e-5 1e-4}; do
  .build/release/ptl prune --method prune-once --model $M --out "$OUT/lr$lr" --target-params 0.95 \
    --data $D/train.jsonl --eval-data $D/test.jsonl --eval-count 100 --round-eval-count 100 \
    --calibration-lines 32 --heldout-lines 64 --max-new-tokens 96 --seq-len 192 --step 0.2 \
    --recover kd --calibration dataset --reconstruct ffn --tune-steps 7 --batch-size 16 --shards 4 --lr "$lr" \
    --threads 1 --log-level notice > "$OUT/lr$lr.log" 2>&1
  echo "lr $lr: $(grep -h -E '^\| (0|1) ' "$OUT/lr$lr/report.md" | cut -d'|' -f2,6,7,8,9 | tr '\n' ' ')"
done
