"""The scorecard's metrics against independent computations: MS against its O(N²) definition,
Moran's I on a hand-worked grid and against the `visaebench` package, the label AUC against
scikit-learn, sparse probing on planted classes, seed stability against scipy's assignment;
and on planted data where the answer is known (compact vs scattered atoms, two seeds vs an
untrained SAE). Data: awkward on purpose (a large shared mean, heavy-tailed frequencies,
outlier rows), seeds other than the ones the code was written with."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from evaluation.card_labels import label_auc
from evaluation.card_mono import baseline, monosemanticity, unit_rows
from evaluation.card_moran import MoranAccumulator, MoranRules, morans_i, queen_weights
from evaluation.card_pass import alive_latents, card_pass, open_heldout, patch_moran
from evaluation.card_probe import sparse_probing
from sae_core.config import SAEConfig
from sae_core.sae import SparseAutoencoder
from sae_core.synthetic import write_cache


# ---------------------------------------------------------------- monosemanticity
def ms_brute(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Pach et al.'s definition, pair by pair in float64 (sae-for-vlm's loop over n < m)."""
    sim = p.astype(np.float64) @ p.astype(np.float64).T
    out = np.full(x.shape[1], np.nan)
    for j in range(x.shape[1]):
        col = x[:, j].astype(np.float64)
        if col.max() == col.min():
            continue
        a = (col - col.min()) / (col.max() - col.min())
        w = np.triu(np.outer(a, a), 1)
        if w.sum() > 0:
            out[j] = (w * sim).sum() / w.sum()
    return out


def test_ms_linear_form_equals_the_pairwise_definition():
    rng = np.random.default_rng(2027)
    n, f, e = 90, 40, 11
    rate = np.minimum(rng.pareto(1.2, f) * 0.02 + 0.005, 1.0)  # heavy-tailed firing frequencies
    x = np.where(rng.random((n, f)) < rate, rng.lognormal(0, 1.5, (n, f)), 0.0)
    x[[7, 41]] *= 12  # two outlier rows
    x[:, 0] = rng.uniform(0.3, 2, n)  # fires on every image: its minimum is not 0
    x[:, 1] = 0
    x[5, 1] = 3.0  # one image: undefined
    x[:, 2] = 0  # dead: undefined
    x[:, 3] = 0
    x[[3, 60], 3] = [1.0, 2.5]  # two images
    p = unit_rows(rng.normal(size=(n, e)) + 4.0)  # a large shared mean: every pair is similar
    ours, ref = monosemanticity(sp.csr_matrix(x.astype(np.float32)), p, chunk=16), ms_brute(x.astype(np.float32), p)
    assert np.array_equal(np.isnan(ours), np.isnan(ref)) and np.isnan(ours[[1, 2]]).all()
    assert np.allclose(ours[~np.isnan(ref)], ref[~np.isnan(ref)], atol=1e-6)
    sim = p.astype(np.float64) @ p.astype(np.float64).T
    assert baseline(p) == pytest.approx((sim.sum() - np.trace(sim)) / (n * n - n), abs=1e-9)


def test_ms_is_high_for_a_latent_on_one_cluster_and_at_baseline_for_a_random_one():
    rng = np.random.default_rng(404)
    n, e = 400, 24
    cluster = rng.integers(0, 4, n)
    centres = rng.normal(size=(4, e)) * 3
    p = unit_rows(centres[cluster] + rng.normal(size=(n, e)))
    x = np.zeros((n, 2), np.float32)
    x[cluster == 2, 0] = rng.exponential(1, int((cluster == 2).sum()))
    x[:, 1] = np.where(rng.random(n) < 0.25, rng.exponential(1, n), 0)
    ms, base = monosemanticity(sp.csr_matrix(x), p), baseline(p)
    assert ms[0] > base + 0.5 * (1 - base) and abs(ms[1] - base) < 0.05


# ---------------------------------------------------------------- Moran's I
def test_morans_i_on_a_hand_worked_grid():
    # 3×3 grid, a 2×2 block in the corner: P=9, S=40 (4 corners×3 + 4 edges×5 + centre 8).
    # x̄ = 4/9: the 12 ordered block–block pairs give (5/9)², the 18 block–rest pairs (5/9)(−4/9),
    # the 10 rest–rest pairs (4/9)²: numerator 100/81; denominator 4·(5/9)² + 5·(4/9)² = 180/81.
    # I = (9/40)·(100/180) = 1/8.
    x = torch.tensor([[1.0, 1, 0, 1, 1, 0, 0, 0, 0]])
    w = torch.from_numpy(queen_weights(3, 3))
    assert float(w.sum()) == 40
    assert float(morans_i(x, w)[0]) == pytest.approx(0.125, abs=1e-12)
    checker = torch.tensor([[1.0, 0, 1, 0, 1, 0, 1, 0, 1]])  # queen weights see diagonals as neighbours
    rook_like = float(morans_i(checker, w)[0])
    assert -1 <= rook_like < 0.125
    assert torch.isnan(morans_i(torch.ones(1, 9), w)[0])


@pytest.fixture()
def visaebench_localization():
    """visaebench's M1 module, imported without the package's __init__ (which loads datasets,
    timm and its backbones: seconds, and nothing the metric uses)."""
    spec = importlib.util.find_spec("visaebench")
    if spec is None:
        pytest.skip("visaebench is not installed (requirements-dev.txt)")
    saved = {k: v for k, v in sys.modules.items() if k.startswith("visaebench")}
    root = spec.submodule_search_locations[0]
    for name, sub in (("visaebench", ""), ("visaebench.metrics", "/metrics")):
        stub = types.ModuleType(name)
        stub.__path__ = [root + sub]
        sys.modules[name] = stub
    from visaebench.metrics.spatial_coherence import localization

    yield localization
    for k in [k for k in sys.modules if k.startswith("visaebench")]:
        del sys.modules[k]
    sys.modules.update(saved)


def planted_patches(n_images: int, grid: int, d: int, seed: int, p_on: float = 0.35):
    """Patch activations from orthonormal atoms: atoms 0..d/2−1 on compact rectangles of 2–3 × 2–3
    patches, the others on 7 scattered patches; a large shared mean and rare 10× images."""
    rng = np.random.default_rng(seed)
    atoms = np.linalg.qr(rng.normal(size=(d, d)))[0].T
    n_p = grid * grid
    codes = np.zeros((n_images, n_p, d))
    for i in range(n_images):
        for a in range(d):
            if rng.random() >= p_on:
                continue
            m = np.zeros((grid, grid), bool)
            if a < d // 2:
                h, w = rng.integers(2, 4, size=2)
                r, c = rng.integers(0, grid - h + 1), rng.integers(0, grid - w + 1)
                m[r : r + h, c : c + w] = True
            else:
                m.flat[rng.choice(n_p, 7, replace=False)] = True
            codes[i, m.ravel(), a] = rng.uniform(1, 2, int(m.sum()))
    codes[rng.random(n_images) < 0.03] *= 10
    x = codes @ atoms + 0.005 * rng.normal(size=codes.shape) + 6.0
    return x.astype(np.float32), atoms.astype(np.float32)


def atom_sae(atoms: np.ndarray, shift: float) -> SparseAutoencoder:
    """relu SAE whose encoder and decoder are the orthonormal atoms (b_dec = the shared mean)."""
    d = atoms.shape[1]
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=atoms.shape[0], metadata={"hook_name": "blocks.3.resid_post"}))
    with torch.no_grad():
        sae.W_dec.copy_(torch.from_numpy(atoms))
        sae.W_enc.copy_(torch.from_numpy(atoms.T.copy()))
        sae.b_dec.fill_(shift)
        sae.b_enc.fill_(-0.1)
    return sae.eval()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A token cache (CLS + 7×7 spatial rows) and an embed cache with the same patches as patch tokens."""
    folder = tmp_path_factory.mktemp("planted")
    x, atoms = planted_patches(260, 7, 16, seed=913)
    cls = x.mean(axis=1, keepdims=True)
    write_cache(
        folder / "tokens",
        np.concatenate([cls, x], axis=1).reshape(-1, 16),
        tokens_per_image=50,
        hook_name="blocks.3.resid_post",
        shard_rows=50 * 97,
    )
    write_cache(folder / "embed", cls[:, 0], patches=x, shard_rows=70)
    return folder, x, atom_sae(atoms, 6.0)


def test_compact_atoms_are_localised_scattered_ones_are_not(planted):
    folder, _, sae = planted
    rules = MoranRules(min_images=30)
    res = card_pass(sae, open_heldout(folder / "tokens"), block_mb=0.3, moran=rules)
    score, count = res.moran.result()
    assert (score[:8] > 0.3).all() and (np.abs(score[8:]) < 0.1).all() and (count >= 30).all()
    # the embed path (patch tokens in their own shards, a sample of all images) gives the same numbers
    acc = patch_moran(sae, open_heldout(folder / "embed"), rules, n_images=0, seed=0, block_mb=0.1)
    assert np.allclose(acc.result()[0], score, atol=1e-9) and np.array_equal(acc.result()[1], count)
    assert res.codes.shape == (260, 16) and res.metrics["explained_variance"] > 0.99


def test_morans_i_equals_visaebench(planted, visaebench_localization):
    _, x, sae = planted
    torch.manual_seed(0)
    noisy = torch.from_numpy(x) + 0.3 * torch.randn(x.shape)  # more patches active, fewer cut cases
    ref = visaebench_localization.FeatureLocalization(
        grid_size=(7, 7), min_images_per_feature=20, max_images_per_feature=10**9
    ).compute(sae, noisy, device="cpu")
    acc = MoranAccumulator(16, (7, 7), MoranRules(min_images=20))
    with torch.no_grad():
        for i in range(0, len(noisy), 64):
            acc.update(sae.encode(noisy[i : i + 64].reshape(-1, 16)).view(-1, 49, 16))
    ours = acc.result()[0]
    theirs = np.array([np.nan if v is None else v for v in ref.metadata["per_feature_scores"]])
    assert np.array_equal(np.isnan(ours), np.isnan(theirs)) and np.isfinite(ours).sum() >= 8
    assert np.allclose(ours[np.isfinite(ours)], theirs[np.isfinite(theirs)], atol=1e-5)


def test_moran_thresholds_are_parameters_at_their_boundaries():
    z = torch.zeros(4, 49, 3)
    z[0, :5, 0] = 1  # 5 patches: counts
    z[1, :4, 0] = 1  # 4: does not
    z[2, :44, 1] = torch.linspace(1, 2, 44)  # 44 = ⌊0.9·49⌋: counts
    z[3, :45, 1] = 1  # 45: too many
    acc = MoranAccumulator(3, (7, 7), MoranRules(min_images=1))
    acc.update(z)
    assert acc.result()[1].tolist() == [1, 1, 0]
    strict = MoranAccumulator(3, (7, 7), MoranRules(min_patches=6, max_patch_fraction=0.5, min_images=1))
    strict.update(z)
    assert strict.result()[1].tolist() == [0, 0, 0]
    assert np.isnan(MoranAccumulator(3, (7, 7), MoranRules(min_images=2)).result()[0]).all()


# ---------------------------------------------------------------- label AUC, probing
def test_label_auc_equals_sklearn_with_ties_and_a_sample_of_negatives():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(77)
    n, d, f = 300, 8, 6
    images = unit_rows(rng.normal(size=(n, d)) + 2)
    texts = unit_rows(rng.normal(size=(f, d)))
    texts[4] = np.nan  # no label
    images[100:120] = images[100]  # tied scores
    codes = np.where(rng.random((n, f)) < 0.2, 1.0, 0.0).astype(np.float32)
    codes[:, 5] = 1.0  # fires everywhere: undefined
    codes[100:110, 0] = 1.0
    auc = label_auc(sp.csr_matrix(codes), images, texts, max_negatives=n)
    for s in range(4):
        ref = roc_auc_score(codes[:, s] > 0, images @ texts[s])
        assert auc[s] == pytest.approx(ref, abs=1e-6)
    assert np.isnan(auc[4]) and np.isnan(auc[5])
    sampled = label_auc(sp.csr_matrix(codes), images, texts, max_negatives=150, seed=3)
    assert np.allclose(sampled[:4], auc[:4], atol=0.08)


def test_sparse_probing_finds_the_class_latents():
    rng = np.random.default_rng(515)
    n, f, c = 600, 300, 3
    y = rng.integers(0, c, n)
    x = np.where(rng.random((n, f)) < 0.05, rng.lognormal(0, 1, (n, f)), 0.0)
    informative = [17, 140, 233]
    for k, s in enumerate(informative):
        x[:, s] = np.where(y == k, rng.uniform(1, 3, n), 0.0)
    y[:12] = -1  # unlabelled images are left out
    res = sparse_probing(sp.csr_matrix(x), y, seed=2)
    assert res["k"] == [1, 5, 10, 20, 50, 100] and res["n_classes"] == 3 and res["n_train"] + res["n_test"] == 588
    assert set(res["top_latents"][:3]) == set(informative)
    assert res["accuracy"][0] < 0.8 and min(res["accuracy"][1:3]) > 0.97 and min(res["auc"][1:]) > 0.99
    assert res["area_under_k_accuracy"] == pytest.approx(np.trapezoid(res["accuracy"], x=res["k"]) / 99, abs=1e-12)


# ---------------------------------------------------------------- seed stability
def test_stability_of_two_seeds_is_high_and_of_an_untrained_sae_low(tmp_path):
    pytest.importorskip("sae_core.stability")
    from scipy.optimize import linear_sum_assignment

    from evaluation.card import CardConfig, card_main
    from sae_core.config import TrainConfig
    from sae_core.io import load_sae, save_sae
    from sae_core.sweep import make_specs
    from sae_core.synthetic import planted_dictionary
    from sae_core.train import train

    x, atoms = planted_dictionary(4000, 24, 32, 3, noise=0.01, seed=1234)
    np.save(tmp_path / "x.npy", x + 3.0)
    cfg = SAEConfig(d_in=24, d_sae=32, architecture="topk", k=3)
    a, b = (
        train(
            tmp_path / "x.npy",
            tmp_path / f"s{seed}",
            make_specs(cfg, [0.0], [3]),
            TrainConfig(epochs=20, seed=seed, checkpoint_every=0, log_every=10**9, init_rows=4096),
        )[0]
        for seed in (5, 6)
    )
    save_sae(SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(9)), tmp_path / "untrained")
    card = card_main(
        CardConfig(
            sae=str(a),
            acts=str(tmp_path / "x.npy"),
            out=str(tmp_path / "card"),
            compare=(str(b), str(tmp_path / "untrained")),
            device="cpu",
        )
    )
    trained, untrained = card["stability"]
    # 4,000 rows are little data for 32 latents: most, not all, are the same in both seeds
    assert trained["matched_fraction"] > 0.6 and untrained["matched_fraction"] < 0.1
    assert trained["mean_cosine"] > 0.85 and untrained["mean_cosine"] < 0.6
    held = open_heldout(tmp_path / "x.npy")
    sa, sb = load_sae(a), load_sae(b)
    alive_a, alive_b = alive_latents(sa, held), alive_latents(sb, held)
    da, db = (s.W_dec.detach().double()[torch.from_numpy(m)] for s, m in ((sa, alive_a), (sb, alive_b)))
    cos = (torch.nn.functional.normalize(da, dim=1) @ torch.nn.functional.normalize(db, dim=1).T).numpy()
    rows, cols = linear_sum_assignment(-cos)
    assert trained["mean_cosine"] == pytest.approx(cos[rows, cols].mean(), abs=1e-9)
