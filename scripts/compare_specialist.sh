#!/usr/bin/env bash
# The SmolLM2 arithmetic specialist (scripts/make_specialist.sh) compressed to TARGET of its
# parameters by each variant, at an equal token budget (tune-steps × PTL's round count, batch 16,
# sequences of ≤ 192 tokens), over 2 local workers; the table in OUT/compare.md and .png.
# Resumable: a finished variant is not run again, a stopped one resumes from its checkpoint.
#   scripts/compare_specialist.sh 0.5                      (PTL and Prune-Once, best recovery)
#   VARIANTS=ptl,prune-once,ptl-kd scripts/compare_specialist.sh 0.3
# Environment: VARIANTS, OUT (default out/compare-smollm2-<target>), TUNE_STEPS (20 a round),
# REMOVE_LAYERS and LAYERS_PER_ROUND (1 and 1; at 30 % the tied embedding and the attention alone
# are 40 % of SmolLM2, so 18 of its 30 blocks must go: 18 and 6 below 35 %), HIDDEN (a final hidden
# size for --hidden-size: channels go with the neuron rounds and the FFN keeps more width; e.g.
# HIDDEN=448 at 0.5 leaves 30 blocks × FFN 608 instead of 29 × 256).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-0.5}
M=cache/smollm2-arith/model
D=cache/smollm2-arith/data
[ -f "$M/model.safetensors" ] || { echo "compare_specialist: $M is missing; run scripts/make_specialist.sh first" >&2; exit 1; }
swift build -c release --product ptl
swift build -c release --product ptl-worker
OUT=${OUT:-out/compare-smollm2-${T/./}}
if awk "BEGIN { exit !($T < 0.35) }"; then LAYERS=${REMOVE_LAYERS:-18}; PER_ROUND=${LAYERS_PER_ROUND:-6}
else LAYERS=${REMOVE_LAYERS:-1}; PER_ROUND=${LAYERS_PER_ROUND:-1}; fi
start=$(date +%s)
# Eval: 200 of the 500 held-out problems for the original and final models, 100 between rounds;
# probes and on-policy traces on 32 calibration questions; 20% of the FFN width a neuron round.
.build/release/ptl compare --model "$M" --out "$OUT" --seeds 0 --target-params "$T" --local-workers 2 \
    --variants "${VARIANTS:-ptl-best,prune-once-best}" -- \
    --data "$D/train.jsonl" --eval-data "$D/test.jsonl" --eval-count 200 --round-eval-count 100 \
    --calibration-lines 32 --heldout-lines 64 --max-new-tokens 96 --seq-len 192 \
    --remove-layers "$LAYERS" --layers-per-round "$PER_ROUND" ${HIDDEN:+--hidden-size "$HIDDEN"} \
    --step 0.2 --tune-steps "${TUNE_STEPS:-20}" --batch-size 16 --shards 4 --lr 1e-4 --checkpoint-every 5
echo "compare took $(( $(date +%s) - start )) s (this invocation); $OUT/compare.md"
