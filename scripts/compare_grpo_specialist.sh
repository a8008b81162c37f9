#!/usr/bin/env bash
# Issue 17's comparison on the SmolLM2 arithmetic specialist (scripts/make_specialist.sh): PTL +
# GRPO against Prune-Once + GRPO at TARGET of the parameters, equal rollout budget (TUNE_STEPS ×
# PTL's round count GRPO steps of PROMPTS × ROLLOUTS sampled completions each, for both), every
# tune step a GRPO step on the tuning questions' final answers (no worked solution is used).
# Both prune like ptl-best (on-policy calibration, least-squares refit; PTL: the probe budget with
# 30 % of the steps kept for the last round). Over 2 local workers; OUT/compare.md and .png.
# Resumable: a finished variant is not run again, a stopped one resumes from its checkpoint.
#   scripts/compare_grpo_specialist.sh 0.5
# Environment: OUT (default out/compare-grpo-smollm2-<target>), TUNE_STEPS (8 a round), PROMPTS (4),
# ROLLOUTS (8), GRPO_LR (1e-5), KL_BETA (0.04), MAX_NEW (96 new tokens a completion).
# Cost on a 2-core fp32 machine (Zen 3): ~1 min a GRPO step of 32 completions; PTL's 5 rounds of
# 8 steps plus their traces, probes and evals ≈ 1 h; Prune-Once ≈ 45 min.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-0.5}
M=cache/smollm2-arith/model
D=cache/smollm2-arith/data
[ -f "$M/model.safetensors" ] || { echo "compare_grpo_specialist: $M is missing; run scripts/make_specialist.sh first" >&2; exit 1; }
swift build -c release --product ptl
swift build -c release --product ptl-worker
OUT=${OUT:-out/compare-grpo-smollm2-${T/./}}
start=$(date +%s)
.build/release/ptl compare --model "$M" --out "$OUT" --seeds 0 --target-params "$T" --local-workers 2 \
    --variants "${VARIANTS:-ptl-grpo,prune-once-grpo}" -- \
    --data "$D/train.jsonl" --eval-data "$D/test.jsonl" --eval-count 200 --round-eval-count 100 \
    --calibration-lines 32 --heldout-lines 64 --max-new-tokens "${MAX_NEW:-96}" --seq-len 192 \
    --step 0.2 --tune-steps "${TUNE_STEPS:-8}" --shards 4 --checkpoint-every 2 \
    --prompts-per-step "${PROMPTS:-4}" --rollouts-per-prompt "${ROLLOUTS:-8}" \
    --grpo-lr "${GRPO_LR:-1e-5}" --kl-beta "${KL_BETA:-0.04}"
echo "compare took $(( $(date +%s) - start )) s (this invocation); $OUT/compare.md"
