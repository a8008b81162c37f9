#!/usr/bin/env bash
# Reproduces the shipped demo model (models/demo) from scratch: generate the arithmetic task,
# initialise a small Llama from recipes/demo (config + tokenizer), train it, evaluate it.
#   scripts/train_demo.sh [OUT_DIR]        (default out/demo-recipe; about 15 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/demo-recipe}
STEPS=${STEPS:-1400}
swift build -c release --product ptl
PTL=.build/release/ptl
mkdir -p "$OUT"
$PTL data generate --out "$OUT/data" --train 60000 --test 500 --seed 0
$PTL init --config recipes/demo/config.json --tokenizer recipes/demo/tokenizer.json --out "$OUT/init" --seed 0 --std 0.02
start=$(date +%s)
$PTL train --model "$OUT/init" --data "$OUT/data/train.jsonl" --steps "$STEPS" --lr 3e-3 --batch-size 32 --seq-len 256 \
    --warmup 50 --schedule cosine --min-lr-ratio 0.05 --weight-decay 0.1 --clip 1.0 --seed 0 \
    --out "$OUT/model" --dtype bf16 --log "$OUT/train.jsonl" > /dev/null
echo "trained in $(( $(date +%s) - start )) s"
$PTL eval --model "$OUT/model" --data "$OUT/data/test.jsonl" --max-new-tokens 160 --batch-size 16
