"""Metric functions and the streaming accumulator against independent numpy formulas."""

import json

import numpy as np
import pytest
import torch

from sae_core import metrics as M


@pytest.fixture()
def batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)) + 3.0  # a large mean: a naive baseline would overstate EV
    x_hat = x + 0.3 * rng.normal(size=x.shape)
    f = np.maximum(rng.normal(size=(300, 40)) - 1.0, 0)
    f[:, 5] = 0  # one dead latent
    return x, x_hat, f


def test_functions_match_numpy(batch):
    x, x_hat, f = batch
    tx, tx_hat, tf = (torch.tensor(a, dtype=torch.float32) for a in batch)
    assert M.mse(tx, tx_hat) == pytest.approx(((x - x_hat) ** 2).mean(), rel=1e-5)
    assert M.l1(tf) == pytest.approx(np.abs(f).mean(), rel=1e-5)
    assert M.l0(tf) == pytest.approx((f != 0).sum(1).mean())
    ev = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert M.explained_variance(tx, tx_hat) == pytest.approx(ev, rel=1e-5)
    cos = (x * x_hat).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(x_hat, axis=1)
    assert M.cosine_similarity(tx, tx_hat) == pytest.approx(cos.mean(), rel=1e-6)
    counts = (f > 0).sum(0)
    assert M.alive_fraction(counts) == pytest.approx(39 / 40)
    p = counts[counts > 0] / counts.sum()
    assert M.activation_entropy(counts) == pytest.approx(-(p * np.log(p)).sum())


def test_accumulator_over_batches_equals_whole(batch):
    x, x_hat, f = (torch.tensor(a, dtype=torch.float32) for a in batch)
    acc = M.MetricsAccumulator(12, 40)
    for i in range(0, 300, 64):  # uneven last batch
        acc.update(x[i : i + 64], x_hat[i : i + 64], f[i : i + 64])
    r = acc.result()
    assert r["n_inputs"] == 300
    assert r["mse"] == pytest.approx(M.mse(x, x_hat), rel=1e-6)
    assert r["explained_variance"] == pytest.approx(M.explained_variance(x, x_hat), rel=1e-6)
    assert r["l0"] == pytest.approx(M.l0(f))
    assert r["l1"] == pytest.approx(M.l1(f), rel=1e-6)
    assert r["cosine_similarity"] == pytest.approx(M.cosine_similarity(x, x_hat), rel=1e-6)
    assert r["mean_activation"] == pytest.approx(float(f[f > 0].mean()), rel=1e-6)
    assert r["expansion"] == pytest.approx(40 / 12)
    assert r["active_fraction"] == pytest.approx(M.l0(f) / 40)
    assert r["max_entropy"] == pytest.approx(np.log(40))


def test_perfect_reconstruction_and_mean_baseline():
    x = torch.randn(50, 6, dtype=torch.float64)
    assert M.explained_variance(x, x) == 1.0
    assert M.explained_variance(x, x.mean(0).expand_as(x)) == pytest.approx(0.0, abs=1e-12)


def test_markdown_table_has_one_row_per_sae():
    m = {
        "l0": 3.0,
        "mse": 1e-5,
        "l1": 0.004,
        "explained_variance": 0.98,
        "cosine_similarity": 0.99,
        "alive_fraction": 0.5,
        "mean_activation": 0.2,
        "activation_entropy": 2.0,
        "active_fraction": 0.01,
    }
    table = M.markdown_table([({"SAE": "a"}, m), ({"SAE": "b"}, m)])
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| a | 3.00 |") and "50.0%" in lines[3]


def test_prefix_explained_variance_of_a_matryoshka_sae(tmp_path):
    """`clipsae metrics` on a matryoshka SAE: one EV per prefix, each equal to numpy's
    1 − Σ‖x − x̂_g‖² / Σ‖x − x̄‖² with x̂_g decoded from the first g latents only."""
    from sae_core.config import SAEConfig
    from sae_core.evaluate import metrics_main
    from sae_core.io import save_sae
    from sae_core.sae import SparseAutoencoder

    rng = np.random.default_rng(5)
    x = (rng.normal(size=(500, 10)) + 1.0).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    sae = SparseAutoencoder(
        SAEConfig(d_in=10, d_sae=40, architecture="matryoshka", k=3, groups=(5, 20, 40)),
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        sae.threshold.fill_(0.05)
        sae.b_dec.copy_(torch.from_numpy(x.mean(0)))
    save_sae(sae, tmp_path / "m")
    table = metrics_main(str(tmp_path / "x.npy"), str(tmp_path / "m"), out=str(tmp_path / "t.md"), batch_size=128)
    record = json.loads((tmp_path / "t.json").read_text())[0]
    w, b = sae.W_dec.detach().numpy().astype(np.float64), sae.b_dec.detach().numpy().astype(np.float64)
    h = (x - b) @ sae.W_enc.detach().numpy() + sae.b_enc.detach().numpy()
    f = np.where(h > 0.05, h, 0.0)
    sst = ((x - x.mean(0)) ** 2).sum()
    for g in (5, 20, 40):
        ev = 1 - ((f[:, :g] @ w[:g] + b - x) ** 2).sum() / sst
        assert record[f"ev_prefix_{g}"] == pytest.approx(ev, rel=1e-4, abs=1e-5)
    assert record["ev_prefix_40"] == pytest.approx(record["explained_variance"], rel=1e-5, abs=1e-6)
    assert "EV per prefix" in table and "groups=5,20,40" in table
