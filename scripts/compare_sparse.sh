#!/usr/bin/env bash
# PTL + RAC against one-shot RAC (issue 16): SparseGPT calibrated on the model's own chains of
# thought, raised to SPARSITY round by round with distillation between (sparse-ptl), or all at
# once followed by the same distillation budget (sparse-once) — equal tune steps (TUNE_STEPS ×
# sparse-ptl's rounds, batch 16) and equal calibration; over 2 local workers. Table and plot in
# OUT/compare.md, .png. Resumable: finished runs are kept, a stopped one resumes.
#   scripts/compare_sparse.sh demo 0.7          (the shipped demo model; STEP 0.1 → 7 rounds)
#   scripts/compare_sparse.sh smollm2 0.5       (the SmolLM2 specialist, scripts/make_specialist.sh)
#   scripts/compare_sparse.sh smollm2 2:4       (1:4 then 2:4)
# Environment: VARIANTS (sparse-ptl,sparse-ptl-cubic,sparse-once), OUT (default out/compare-sparse-MODEL-SPARSITY), STEP (0.1), TUNE_STEPS (20 demo,
# 12 smollm2), SEEDS (0,1 demo; 0 smollm2).
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:?usage: scripts/compare_sparse.sh demo|smollm2 SPARSITY}
S=${2:-0.5}
swift build -c release --product ptl
swift build -c release --product ptl-worker
OUT=${OUT:-out/compare-sparse-$WHICH-${S/[.:]/}}
# The cubic schedule spaces unstructured levels; an n:m target's rounds are 1:m, 2:m, … either way.
case "$S" in *:*) DEFAULT_VARIANTS=sparse-ptl,sparse-once ;; *) DEFAULT_VARIANTS=sparse-ptl,sparse-ptl-cubic,sparse-once ;; esac
start=$(date +%s)
case "$WHICH" in
demo)
    .build/release/ptl compare --model models/demo --out "$OUT" --seeds "${SEEDS:-0,1}" --local-workers 2 \
        --variants "${VARIANTS:-$DEFAULT_VARIANTS}" -- \
        --sparsity "$S" --step "${STEP:-0.1}" --tune-steps "${TUNE_STEPS:-20}" --eval-count 500 --round-eval-count 200 \
        --calibration-lines 64 --heldout-lines 64 --checkpoint-every 10 ;;
smollm2)
    M=cache/smollm2-arith/model
    D=cache/smollm2-arith/data
    [ -f "$M/model.safetensors" ] || { echo "compare_sparse: $M is missing; run scripts/make_specialist.sh first" >&2; exit 1; }
    # As scripts/compare_specialist.sh: 200 of the 500 held-out problems for the original and the
    # final model, 100 between rounds; traces and probes on 32 calibration questions.
    .build/release/ptl compare --model "$M" --out "$OUT" --seeds "${SEEDS:-0}" --local-workers 2 \
        --variants "${VARIANTS:-$DEFAULT_VARIANTS}" -- \
        --data "$D/train.jsonl" --eval-data "$D/test.jsonl" --eval-count 200 --round-eval-count 100 \
        --calibration-lines 32 --heldout-lines 64 --max-new-tokens 96 --seq-len 192 \
        --sparsity "$S" --step "${STEP:-0.1}" --tune-steps "${TUNE_STEPS:-12}" --batch-size 16 --shards 4 --lr 1e-4 \
        --checkpoint-every 5 ;;
*) echo "compare_sparse: the first argument is demo or smollm2" >&2; exit 2 ;;
esac
echo "compare took $(( $(date +%s) - start )) s (this invocation); $OUT/compare.md"
