"""Shared fixtures: synthetic activations made from a known dictionary."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sae_core.synthetic import planted_dictionary

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# sparsify picks its Triton decoder at import when triton is installed, and Triton has no CPU
# driver: its own eager fallback is the CPU path (the interop tests compare against it).
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")


def make_dictionary_data(n: int = 12_000, d: int = 32, n_atoms: int = 64, active: int = 3,
                         noise: float = 0.01, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`sae_core.synthetic.planted_dictionary` with the tests' small defaults (issue 12's
    recovery data is n=100k, d=96, 512 atoms, 6 active)."""
    return planted_dictionary(n, d, n_atoms, active, noise, seed)


@pytest.fixture(scope="session")
def dict_data() -> tuple[np.ndarray, np.ndarray]:
    return make_dictionary_data()


@pytest.fixture()
def small_npy(tmp_path) -> str:
    x, _ = make_dictionary_data(n=2_000, d=16, n_atoms=24, seed=1)
    path = tmp_path / "acts.npy"
    np.save(path, x)
    return str(path)
