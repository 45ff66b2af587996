"""sae_core/stability.py: the one-to-one dictionary match equals scipy's dense assignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from sae_core.stability import match_dictionaries


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _dense_partner(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    c = _unit(a) @ _unit(b).T
    r, s = linear_sum_assignment(c, maximize=True)
    partner = np.full(len(a), -1)
    partner[r] = s
    return partner, float(c[r, s].sum())


@pytest.mark.parametrize(
    "fa,fb,d,candidates", [(70, 70, 12, 8), (60, 90, 16, 1), (90, 60, 16, 2), (240, 240, 6, 1), (120, 500, 4, 1)]
)
def test_candidates_equal_the_dense_assignment_on_random_rows(fa, fb, d, candidates):
    rng = np.random.default_rng(fa * 1000 + fb)
    a, b = rng.normal(size=(fa, d)), rng.normal(size=(fb, d))
    want, total = _dense_partner(a, b)
    for method in ("certified-candidates", "exact"):
        m = match_dictionaries(a, b, method=method, candidates=candidates)
        assert m.method == method
        np.testing.assert_array_equal(m.partner, want)
        assert np.nansum(m.cosine) == pytest.approx(total, abs=1e-9)
        assert np.isnan(m.cosine).sum() == max(0, fa - fb)


def test_planted_copies_are_found_and_counted():
    """B = a shuffled noisy copy of 70% of A's rows plus unrelated rows: the copies pair up with
    their originals (cos > 0.9), the rest do not, exactly as the dense assignment says."""
    rng = np.random.default_rng(11)
    n, d, shared = 300, 48, 210
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d)) * 3.0  # any norms
    b[:shared] = a[:shared] + 0.2 * rng.normal(size=(shared, d))
    perm = rng.permutation(n)
    b = b[perm]
    m = match_dictionaries(torch.from_numpy(a).float(), b, method="certified-candidates", candidates=2)
    where = np.argsort(perm)  # where[i]: the position in B of B's original row i
    np.testing.assert_array_equal(m.partner[:shared], where[:shared])
    assert m.matched_fraction == pytest.approx(shared / n)
    want, total = _dense_partner(a.astype(np.float32).astype(np.float64), b)  # A was given in float32
    np.testing.assert_array_equal(m.partner, want)
    assert m.mean_cosine == pytest.approx(total / n, abs=1e-12)


def test_alive_masks_leave_dead_latents_out():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(50, 8))
    alive_a = rng.random(40) > 0.3
    alive_b = rng.random(50) > 0.3
    m = match_dictionaries(a, b, alive_a=alive_a, alive_b=torch.from_numpy(alive_b), method="certified-candidates")
    assert (m.partner[~alive_a] == -1).all() and np.isnan(m.cosine[~alive_a]).all()
    assert alive_b[m.partner[m.partner >= 0]].all()
    sub, _ = _dense_partner(a[alive_a], b[alive_b])
    np.testing.assert_array_equal(m.partner[alive_a], np.flatnonzero(alive_b)[sub])
    assert m.matched_fraction == pytest.approx(float((m.cosine[alive_a] >= 0.9).mean()))


def test_identical_dictionaries_match_fully_and_unrelated_do_not():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(64, 32))
    same = match_dictionaries(a, 5 * a[::-1])
    assert same.method == "exact" and same.matched_fraction == 1.0
    np.testing.assert_array_equal(same.partner, np.arange(64)[::-1])
    other = match_dictionaries(a, rng.normal(size=(64, 32)))
    assert other.matched_fraction == 0.0 and other.mean_cosine < 0.5


def test_bad_inputs_are_refused_by_name():
    with pytest.raises(ValueError, match="different widths"):
        match_dictionaries(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="alive_a"):
        match_dictionaries(np.ones((3, 4)), np.ones((3, 4)), alive_a=np.ones(2, bool))
    with pytest.raises(ValueError, match="NaN"):
        match_dictionaries(np.full((3, 4), np.nan), np.ones((3, 4)))


def test_repair_rounds_alone_reach_the_dense_optimum(monkeypatch):
    """Without the dense first guess on the leftover latents, the dual check and its repairs
    (several rounds here) still end at scipy's dense assignment."""
    import sae_core.stability as stability

    monkeypatch.setattr(stability, "LEFTOVER_MAX_PAIRS", 0)
    rng = np.random.default_rng(21)
    a, b = rng.normal(size=(240, 6)), rng.normal(size=(260, 6))
    want, total = _dense_partner(a, b)
    m = match_dictionaries(a, b, method="certified-candidates", candidates=1)
    np.testing.assert_array_equal(m.partner, want)
    assert np.nansum(m.cosine) == pytest.approx(total, abs=1e-9)


def test_metrics_compare_two_seeds_on_planted_data_match_an_untrained_sae_does_not(tmp_path):
    """`clipsae metrics --sae A --compare B`: two TopK SAEs trained (one sweep, seeds 0 and 1) on a
    planted dictionary find the same atoms, so most latents pair up at cos >= 0.9; an untrained
    SAE's random decoder rows (cos ~ 1/√d with anything) pair with none of them."""
    import json
    import subprocess
    import sys

    from conftest import make_dictionary_data
    from sae_core import io
    from sae_core.config import SAEConfig, TrainConfig
    from sae_core.sae import SparseAutoencoder
    from sae_core.sweep import make_specs
    from sae_core.train import train

    x, _ = make_dictionary_data(n=2_000, d=32, n_atoms=16, active=2, seed=3)
    np.save(tmp_path / "x.npy", x)
    base = SAEConfig(d_in=32, d_sae=16, architecture="topk", k=2)
    cfg = TrainConfig(epochs=4, batch_size=64, lr=1e-2, checkpoint_every=0, log_every=10**9, init_rows=1024)
    train(tmp_path / "x.npy", tmp_path / "s", make_specs(base, [0.0], [2], [0, 1]), cfg)
    io.save_sae(SparseAutoencoder(base, generator=torch.Generator().manual_seed(5)), tmp_path / "untrained")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "metrics",
            "--sae",
            str(tmp_path / "s/seed_0"),
            "--compare",
            str(tmp_path / "s/seed_1"),
            str(tmp_path / "untrained"),
            "--out",
            str(tmp_path / "m.md"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "matched at cos ≥ 0.9" in r.stdout and "| seed_0 | seed_1 |" in r.stdout
    seeds, untrained = json.loads((tmp_path / "m.compare.json").read_text())
    assert seeds["matched_fraction"] >= 0.6 and seeds["mean_cosine"] >= 0.8, seeds
    assert untrained["matched_fraction"] == 0.0 and untrained["mean_cosine"] < 0.5, untrained
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "metrics", "--sae", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "needs --acts" in r.stderr
