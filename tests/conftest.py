"""Shared fixtures: synthetic activations made from a known dictionary."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# sparsify picks its Triton decoder at import when triton is installed, and Triton has no CPU
# driver: its own eager fallback is the CPU path (the interop tests compare against it).
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")


def make_dictionary_data(n: int = 12_000, d: int = 32, n_atoms: int = 64, active: int = 3,
                         noise: float = 0.01, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x = codes @ atoms + noise, with unit-norm random atoms and exactly `active` codes per row,
    uniform in [0.5, 1.5] (the planted-dictionary data of issue 12 at n=100k, d=96, 512 atoms, 6 active)."""
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


@pytest.fixture(scope="session")
def dict_data() -> tuple[np.ndarray, np.ndarray]:
    return make_dictionary_data()


@pytest.fixture()
def small_npy(tmp_path) -> str:
    x, _ = make_dictionary_data(n=2_000, d=16, n_atoms=24, seed=1)
    path = tmp_path / "acts.npy"
    np.save(path, x)
    return str(path)
