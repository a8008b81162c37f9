#!/usr/bin/env bash
# Builds release and runs the single-process tools on the tiny fixture model and GSM8K.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! pkg-config --exists openblas libzmq 2>/dev/null; then
    echo "installing libopenblas-dev libzmq3-dev (needs root)" >&2
    apt-get update -qq && apt-get install -y -qq libopenblas-dev libzmq3-dev pkg-config >/dev/null
fi
swift build -c release --product ptl
PTL=.build/release/ptl
M=Tests/Fixtures/tiny-llama
DATA=../shared/data/gsm8k
OUT=${OUT:-out/demo}
mkdir -p "$OUT"
$PTL inspect --model $M
$PTL perplexity --model $M --data $DATA/test.jsonl --limit 200
$PTL train --model $M --data $DATA/train.jsonl --steps 30 --lr 2e-3 --batch-size 8 --seq-len 256 \
    --warmup 3 --schedule cosine --out "$OUT/tuned" --log "$OUT/train.jsonl"
$PTL perplexity --model "$OUT/tuned" --data $DATA/test.jsonl --limit 200
$PTL generate --model "$OUT/tuned" --prompt "Question: Natalia sold clips to 48 of her friends" --max-new-tokens 40
