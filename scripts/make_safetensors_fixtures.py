#!/usr/bin/env python3
"""Writes small safetensors fixtures with the real `safetensors` library (run by hand, not in CI).

    python3 scripts/make_safetensors_fixtures.py            # writes Tests/Fixtures/safetensors/
    python3 scripts/make_safetensors_fixtures.py --check F  # loads a file we wrote, prints it

Outputs: dtypes.safetensors (F32, F16, BF16, F64, I64, I32 tensors of known values) and
expected.json (their values as fp32 after the same conversion torch does), plus sharded/, a
model directory split in two shards with model.safetensors.index.json.
"""
import json, os, sys
import torch
from safetensors.torch import save_file, load_file

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "safetensors")

if len(sys.argv) == 3 and sys.argv[1] == "--check":
    for k, v in load_file(sys.argv[2]).items():
        print(k, v.dtype, list(v.shape), v.flatten()[:8].tolist())
    sys.exit(0)

os.makedirs(os.path.join(root, "sharded"), exist_ok=True)
g = torch.Generator().manual_seed(0)
special = torch.tensor([0.0, -0.0, 1.0, -2.5, 65504.0, 6.1e-5, 5.96e-8, 1e-7, float("inf"), float("-inf"), 3.14159, -1e-3])
tensors = {
    "f32": torch.randn(3, 5, generator=g),
    "f16": torch.cat([special, torch.randn(8, generator=g)]).to(torch.float16),
    "bf16": torch.cat([special, torch.tensor([3.0e38, 1.0e-38]), torch.randn(6, generator=g)]).to(torch.bfloat16).reshape(4, 5),
    "f64": torch.randn(2, 2, generator=g, dtype=torch.float64),
    "i64": torch.tensor([[0, -1, 2], [123456, -7, 9]], dtype=torch.int64),
    "i32": torch.tensor([5, -6], dtype=torch.int32),
    "empty": torch.zeros(0, 4),
}
save_file(tensors, os.path.join(root, "dtypes.safetensors"), metadata={"format": "pt", "note": "fixture"})
def enc(x):
    # JSON has no infinities: write them as strings.
    return x if abs(x) != float("inf") else ("inf" if x > 0 else "-inf")
expected = {k: {"shape": list(v.shape), "values": [enc(float(x)) for x in v.to(torch.float32).flatten().tolist()]} for k, v in tensors.items()}
with open(os.path.join(root, "expected.json"), "w") as f:
    json.dump(expected, f, allow_nan=False)

shard1 = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b.bias": torch.tensor([1.5, -1.5])}
shard2 = {"c.weight": torch.full((2, 2), 0.25)}
save_file(shard1, os.path.join(root, "sharded", "model-00001-of-00002.safetensors"), metadata={"format": "pt"})
save_file(shard2, os.path.join(root, "sharded", "model-00002-of-00002.safetensors"), metadata={"format": "pt"})
index = {"metadata": {"total_size": 4 * (6 + 2 + 4)},
         "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.bias": "model-00001-of-00002.safetensors",
                        "c.weight": "model-00002-of-00002.safetensors"}}
with open(os.path.join(root, "sharded", "model.safetensors.index.json"), "w") as f:
    json.dump(index, f, indent=1)
print("wrote", root)
