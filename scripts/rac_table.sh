#!/usr/bin/env bash
# RAC's table (arXiv 2509.12464, Table 1) on a model of ours: one-shot SparseGPT at 50 %
# unstructured and 2:4, calibrated on the dataset's text, on the prompts alone, and on the
# model's own chains of thought, without tuning — accuracy and mean generated tokens per answer.
#   scripts/rac_table.sh NAME OUT [ptl sparsify options…]
#   scripts/rac_table.sh demo out/rac-demo                       (models/demo, ~3 min)
#   scripts/rac_table.sh smollm2-arith out/rac-smollm2 --model cache/smollm2-arith/model \
#       --data recipes/smollm2-arith/... (the specialist's data options, see make_specialist.sh)
# Writes OUT/<pattern>-<calibration>/ (each run's model, masks, report) and docs/rac-NAME.md.
# Runs finished before are kept (delete OUT/X to redo one).
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/rac_table.sh NAME OUT [options]}; out=${2:?}; shift 2
[ -x .build/release/ptl ] || swift build -c release --product ptl
mkdir -p "$out" docs
for pattern in 0.5 2:4; do
    for cal in dataset prompts on-policy; do
        dir="$out/${pattern/:/of}-$cal"
        [ -f "$dir/summary.json" ] && continue
        echo "== $pattern, $cal"
        .build/release/ptl sparsify --sparsity "$pattern" --calibration "$cal" --out "$dir" "$@" 2>&1 | grep -E "dense:|pruned:|calibration|traces" || true
        [ -f "$dir/summary.json" ] || { echo "rac_table.sh: $dir failed" >&2; exit 1; }
    done
done
python3 - "$name" "$out" "$*" <<'PY'
import json, os, sys
name, out, opts = sys.argv[1], sys.argv[2], sys.argv[3]
rows = []
for pattern in ["0.5", "2of4"]:
    for cal in ["dataset", "prompts", "on-policy"]:
        rows.append((pattern.replace("of", ":"), cal, json.load(open(os.path.join(out, f"{pattern}-{cal}", "summary.json")))))
dense = rows[0][2]["before"]
md = [f"# RAC's table on {name}: one-shot SparseGPT, three calibrations, no tuning", "",
      f"`scripts/rac_table.sh {name} {out} {opts}`".replace(" `", "`"), "",
      f"Model `{rows[0][2]['model']}`; {dense['problems']} held-out problems, greedy. Calibration: the dataset's question and",
      "answer (dataset), the question alone (prompts), the question with the model's own greedy chain of thought (on-policy,",
      "RAC). Every linear layer of every block pruned (embeddings and norms dense); no tuning afterwards.", "",
      "| sparsity | calibration | accuracy | mean generated tokens | held-out loss | calibration tokens | zeros (linear) | seconds |",
      "|---|---|---|---|---|---|---|---|",
      f"| dense | — | {dense['accuracy']*100:.1f} % | {dense['meanGeneratedTokens']:.1f} | {dense['heldOutLoss']:.4f} | — | 0 % | — |"]
for p, c, s in rows:
    a = s["after"]
    md.append(f"| {p} | {c} | {a['accuracy']*100:.1f} % | {a['meanGeneratedTokens']:.1f} | {a['heldOutLoss']:.4f} | {s['calibrationTokens']} | {s['linearSparsity']*100:.1f} % | {s['seconds']:.0f} |")
open(os.path.join("docs", f"rac-{name}.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
