#!/usr/bin/env bash
# fp32 against bf16, ours against PyTorch's, in one sitting: PyTorch (bench/pytorch_bench.py, fp32
# and bf16 autocast) and ptl-bench (fp32 and bf16) alternately, ROUNDS times, every JSON line to
# OUT (default bench/results-bf16-$(date +%F).txt), then the medians per figure.
#   bench/bf16_sitting.sh [ROUNDS]        (needs torch and transformers; ~12 minutes a round)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
OUT=${OUT:-bench/results-bf16-$(date +%F).txt}
swift build -c release --product ptl-bench >/dev/null
{
    echo "# $(date -u +%FT%TZ) bench/bf16_sitting.sh $ROUNDS; CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
         "flags: $(grep -o -m1 -w -E 'avx512_bf16|amx_bf16' /proc/cpuinfo | sort -u | xargs)," \
         "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}"
    for r in $(seq "$ROUNDS"); do
        echo "## round $r"
        python3 bench/pytorch_bench.py --config all --threads 2 --precision both | sed 's/^/PYTORCH /'
        .build/release/ptl-bench --config all --reps 3 --precision both | grep -E '^(JSON|#)' | sed 's/^JSON/PTL/'
    done
} | tee "$OUT"
python3 - "$OUT" <<'PY' | sed 's/^/# /' | tee -a "$OUT"
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who, _, rest = line.partition(" ")
    if who not in ("PYTORCH", "PTL"):
        continue
    d = json.loads(rest)
    for k, v in d.items():
        if k.endswith("tokens_per_s") and isinstance(v, (int, float)):
            rows.setdefault((d["config"], k, who, d["precision"]), []).append(v)
keys = sorted({(c, k) for c, k, _, _ in rows})
print(f"{'config':6} {'figure':26} {'ptl fp32':>16} {'ptl bf16':>16} {'torch fp32':>16} {'torch bf16':>16}")
for c, k in keys:
    cells = []
    for who, p in (("PTL", "fp32"), ("PTL", "bf16"), ("PYTORCH", "fp32"), ("PYTORCH", "bf16")):
        v = rows.get((c, k, who, p), [])
        cells.append(f"{statistics.median(v):8.1f} [{min(v):.0f}-{max(v):.0f}]" if v else "-")
    print(f"{c:6} {k:26} " + " ".join(f"{x:>16}" for x in cells))
PY
