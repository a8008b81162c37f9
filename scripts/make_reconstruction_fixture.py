#!/usr/bin/env python3
"""Reference of least-squares reconstruction (run by hand; needs numpy only).

    python3 scripts/make_reconstruction_fixture.py

A block's FFN activations A (80 tokens × 12 neurons, correlated, float32-exact), its down_proj
W (5 × 12), and the neurons kept (8 of 12). numpy's lstsq solves min ‖A Wᵀ − A_K W'ᵀ‖ directly
on the activations — not through the normal equations ptl uses — and the fixture holds W'.
Writes Tests/Fixtures/reconstruction.json.
"""
import json, os
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
rng = np.random.default_rng(5)
N, I, H = 80, 12, 5
mix = rng.normal(size=(I, I)) * 0.3 + np.eye(I)
A = (rng.normal(size=(N, I)) @ mix).astype(np.float32)      # correlated neurons
A[:, 4] *= 0.01                                            # a nearly silent neuron (removed)
W = rng.normal(size=(H, I)).astype(np.float32)
keep = [0, 2, 3, 5, 6, 8, 9, 11]
A64, W64 = A.astype(np.float64), W.astype(np.float64)
X, *_ = np.linalg.lstsq(A64[:, keep], A64 @ W64.T, rcond=None)  # k × H
refit = X.T                                                     # H × k
before = np.linalg.norm(A64 @ W64.T - A64[:, keep] @ W64[:, keep].T)
after = np.linalg.norm(A64 @ W64.T - A64[:, keep] @ refit.T)
out = {"tokens": N, "intermediate": I, "hidden": H, "keep": keep,
       "activations": A.reshape(-1).tolist(), "down": W.reshape(-1).tolist(), "refit": refit.reshape(-1).tolist(),
       "residual_sliced": before, "residual_refit": after}
with open(os.path.join(ROOT, "Tests", "Fixtures", "reconstruction.json"), "w") as f:
    json.dump(out, f)
print(f"residual: sliced {before:.4f}, refitted {after:.4f}")
