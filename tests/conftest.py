"""Shared fixtures: synthetic activations made from a known dictionary."""

from __future__ import annotations

import os
from pathlib import Path

# Threads for a shared, busy machine: OpenMP workers sleep instead of spinning when idle (a
# spinning pool steals the cores the app's server threads and the other job need). Set before
# numpy/torch load their OpenMP runtimes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KMP_BLOCKTIME", "0")
# Under `pytest -n N` (make test) each worker takes one core's worth of threads, and so do the
# interpreters it starts: N workers x all cores would oversubscribe the machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sae_core.synthetic import planted_dictionary  # noqa: E402

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# sparsify picks its Triton decoder at import when triton is installed, and Triton has no CPU
# driver: its own eager fallback is the CPU path (the interop tests compare against it).
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")


def make_dictionary_data(
    n: int = 12_000, d: int = 32, n_atoms: int = 64, active: int = 3, noise: float = 0.01, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
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


@pytest.fixture(scope="session")
def app_data(tmp_path_factory) -> Path:
    """The app tests' data, built once for the suite: `atlas` (CLIP) and `katlas` (steering)
    under the returned folder (see app_fixtures.build_app_data). Tests that change a file
    restore it; tests that need their own copy copy a folder to tmp_path."""
    from app_fixtures import build_app_data

    d = tmp_path_factory.mktemp("app_data")
    build_app_data(d)
    return d


@pytest.fixture(scope="session")
def served_app(app_data):
    """One app served on 127.0.0.1 over `app_data` for every test that drives a server
    (test_app.py over HTTP, test_app_browser.py in Chromium)."""
    from app_fixtures import serve_app

    s = serve_app(app_data, built=True)
    yield s
    s.demo.close()


# The files that take longest (seconds under `make test`'s two workers), started first so no
# worker is left running one of them alone at the end; `make test` passes --no-loadscope-reorder
# so pytest-xdist keeps this order instead of ordering files by their number of tests.
LONG_FILES = (
    "test_app_browser.py",  # ~90
    "test_demo_experiments.py",  # ~60: builds the demo
    "test_train.py",  # ~50
    "test_gpu_bench.py",  # ~45: benchmarks/gpu/run.sh --smoke
    "test_app.py",  # ~35
    "test_distributed.py",  # ~27: torchrun ranks
    "test_activations.py",
    "test_app_browser_answers.py",
    "test_app_browser_explore.py",
    "test_kandinsky.py",
    "test_eval_segment.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    """Under xdist, the long files first (a stable sort: the rest keep their order)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))
