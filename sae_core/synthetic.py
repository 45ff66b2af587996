"""Planted-dictionary data: activations built from a known dictionary, so a trained SAE can be
scored on how well it recovers it (issue 12's recovery checks, the tests, bench_train)."""

from __future__ import annotations

import numpy as np


def planted_dictionary(n: int, d: int, n_atoms: int, active: int, noise: float = 0.01,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x [n, d] float32, atoms [n_atoms, d] float32): x = codes @ atoms + noise·N(0, 1), with
    unit-norm random atoms and exactly `active` distinct atoms per row, codes uniform in
    [0.5, 1.5]. Generated in blocks of 8,192 rows, so memory stays bounded at any n."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    x = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, 8192):
        hi = min(n, lo + 8192)
        idx = np.argsort(rng.random((hi - lo, n_atoms)), axis=1)[:, :active]  # `active` distinct atoms per row
        codes = np.zeros((hi - lo, n_atoms))
        np.put_along_axis(codes, idx, rng.uniform(0.5, 1.5, size=(hi - lo, active)), axis=1)
        x[lo:hi] = codes @ atoms + noise * rng.normal(size=(hi - lo, d))
    return x, atoms.astype(np.float32)
