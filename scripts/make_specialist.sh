#!/usr/bin/env bash
# Builds the SmolLM2 arithmetic specialist into cache/smollm2-arith/ (not committed):
#   base/                     SmolLM2-135M-Instruct as an HF directory (from the GGUF)
#   data/{train,test}.jsonl   the demo's task (2–3 steps, operands ≤ 20, multipliers ≤ 5; seed 7)
#   run/                      the training run (checkpoints every 25 steps; a re-run resumes)
#   model/                    the specialist (HF directory, fp32), then its accuracy on the
#                             500 held-out problems in model/eval.txt
#   scripts/make_specialist.sh            (after scripts/setup.sh; a few hours on 2 cores)
# Environment: WORKERS (default 2 local workers of 1 thread), STEPS (recipe default 500).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=cache/smollm2-arith
RECIPE=recipes/smollm2-arith/specialist.yaml
GGUF=cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$GGUF" ] || { echo "make_specialist: $GGUF is missing; run scripts/setup.sh first" >&2; exit 1; }
swift build -c release
B=.build/release
mkdir -p "$CACHE"
# The base model as an HF directory (fp32, with SmolLM2's tokenizer.json), so the run's
# checkpoints and final model are complete HF directories too.
[ -f "$CACHE/base/tokenizer.json" ] || $B/ptl export --model "$GGUF" --out "$CACHE/base"
[ -f "$CACHE/data/test.jsonl" ] || $B/ptl data generate --out "$CACHE/data" --train 40000 --test 500 --seed 7 \
    --min-steps 2 --max-steps 3 --max-operand 20 --max-multiplier 5
start=$(date +%s)
$B/ptl-coordinator --config "$RECIPE" --local-workers "${WORKERS:-2}" --threads-per-worker 1 ${STEPS:+--steps "$STEPS"}
echo "trained in $(( $(date +%s) - start )) s (this invocation)"
if [ ! -d "$CACHE/run/final" ]; then
    echo "make_specialist: the run stopped before its last step; run this script again to resume it" >&2
    exit 1
fi
rm -rf "$CACHE/model"
cp -r "$CACHE/run/final" "$CACHE/model"
$B/ptl eval --model "$CACHE/model" --data "$CACHE/data/test.jsonl" --max-new-tokens 160 --batch-size 16 --quiet | tee "$CACHE/model/eval.txt"
