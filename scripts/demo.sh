#!/usr/bin/env bash
# The main command for now: set up, build release, and run the single-process tools on the
# shipped demo model (arithmetic task) and on SmolLM2 (GSM8K).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product ptl
PTL=.build/release/ptl
OUT=${OUT:-out/demo}
mkdir -p "$OUT"
echo "== the shipped demo model"
$PTL inspect --model models/demo --context 1 160 | sed -n 1,8p
$PTL data generate --out "$OUT/task" --train 2000 --test 200 --seed 1
$PTL eval --model models/demo --data "$OUT/task/test.jsonl" --max-new-tokens 160 --batch-size 16
$PTL bench-decode --model models/demo
echo "== continual pre-training of the demo model on fresh problems (a few steps)"
$PTL train --model models/demo --data "$OUT/task/train.jsonl" --steps 20 --lr 3e-4 --batch-size 16 --seq-len 256 \
    --warmup 2 --out "$OUT/tuned" --log "$OUT/train.jsonl" | tail -2
$PTL perplexity --model "$OUT/tuned" --data "$OUT/task/test.jsonl"
echo "== the same kind of training over the cluster: coordinator + 2 local worker processes"
swift build -c release --product ptl-coordinator
swift build -c release --product ptl-worker
.build/release/ptl-coordinator --local-workers 2 --steps 10 --out "$OUT/cluster" --fresh
GGUF=cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$GGUF" ]; then
    echo "== SmolLM2-135M-Instruct"
    $PTL generate --model $GGUF --prompt "The capital of France is" --max-new-tokens 24
    $PTL eval --model $GGUF --data ../shared/data/gsm8k/test.jsonl --limit 20 --few-shot 4 --max-new-tokens 200
    $PTL bench-decode --model $GGUF
fi
