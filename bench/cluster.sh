#!/usr/bin/env bash
# Grad-phase scaling over the real binaries on the SmolLM2-135M shape: `ptl-coordinator
# --method train` with 1, then 2 local workers of one thread each (batch 16 GSM8K lines of up to
# 256 tokens in 4 shards, the coordinator's defaults). Prints, per worker count, the mean step
# time (steps after the first, which includes the first model fetch), the coordinator's busy
# share of it (messaging, checks, reduce, AdamW — time not spent idle in poll), the split, and the
# speed-up. Release build: swift build -c release.  Usage: bench/cluster.sh [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-4}
MODEL=${MODEL:-cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${DATA:-../shared/data/gsm8k/train.jsonl}
[ -f "$MODEL" ] || { echo "no $MODEL: run scripts/setup.sh" >&2; exit 1; }
mkdir -p out
for n in 1 2; do
    out=out/bench-cluster-$n
    rm -rf "$out"
    .build/release/ptl-coordinator --method train --model "$MODEL" --data "$DATA" --steps "$STEPS" --batch-size 16 --shards 4 \
        --seq-len 256 --local-workers "$n" --threads-per-worker 1 --checkpoint-every 100000 --bind tcp://127.0.0.1:0 \
        --out "$out" --fresh 2> "$out.log" || { tail -20 "$out.log"; exit 1; }
done
python3 - <<'PY'
import json
rows = {}
for n in (1, 2):
    lines = [json.loads(l) for l in open(f"out/bench-cluster-{n}/metrics.jsonl")][1:]
    mean = lambda f: sum(f(r) for r in lines) / len(lines)
    rows[n] = dict(step=mean(lambda r: r["seconds"]), busy=mean(lambda r: r["coordinator_seconds"]),
                   **{k: mean(lambda r, k=k: r["timing"][k]) for k in ("publish", "phase", "idle", "reduce", "update", "worker_compute")})
for n, r in rows.items():
    print(f"{n} worker(s): {r['step']:.2f} s/step; coordinator busy {r['busy']:.2f} s = {100 * r['busy'] / r['step']:.1f} % "
          f"(publish {r['publish']:.2f}, messaging+checks {r['phase'] - r['idle']:.2f}, reduce {r['reduce']:.2f}, AdamW {r['update']:.2f}); "
          f"worker compute {r['worker_compute']:.2f} s summed over shards")
print(f"speed-up 2 vs 1 worker: {rows[1]['step'] / rows[2]['step']:.2f}x")
PY
