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
    """x = codes @ atoms + noise, with unit-norm random atoms and `active` non-negative codes per row."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n, n_atoms))
    for i in range(n):
        idx = rng.choice(n_atoms, size=active, replace=False)
        codes[i, idx] = rng.uniform(0.5, 1.5, size=active)
    x = codes @ atoms + noise * rng.normal(size=(n, d))
    return x.astype(np.float32), atoms.astype(np.float32)


@pytest.fixture(scope="session")
def dict_data() -> tuple[np.ndarray, np.ndarray]:
    return make_dictionary_data()


@pytest.fixture()
def small_npy(tmp_path) -> str:
    x, _ = make_dictionary_data(n=2_000, d=16, n_atoms=24, seed=1)
    path = tmp_path / "acts.npy"
    np.save(path, x)
    return str(path)
