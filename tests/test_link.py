"""`clipsae link`: exact Pearson correlations from the atlases' sparse codes, against a dense
float64 computation; links keyed by the other atlas's SAE hash; no cache reopened."""

import json
import shutil

import numpy as np
import pytest
import torch

from precompute.atlas import AtlasConfig, build_atlas
from precompute.link import link
from sae_core.config import SAEConfig
from sae_core.io import load_sae, save_sae
from sae_core.sae import SparseAutoencoder


def sparse_sae(
    d: int,
    s: int,
    seed: int,
    bias: float = -1.2,
    dead: tuple[int, ...] = (),
    rare: tuple[int, ...] = (),
    x: np.ndarray | None = None,
) -> SparseAutoencoder:
    """A random ReLU SAE whose latents fire on a minority of inputs; `dead` never fire, `rare`
    fire on exactly one row of `x`."""
    g = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=s), generator=g)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d, s, generator=g) / d**0.5)
        sae.b_enc.copy_(bias + 0.3 * torch.randn(s, generator=g))
        sae.b_enc[list(dead)] = -1e3
        for j in rare:
            h = torch.from_numpy(x) @ sae.W_enc[:, j]
            sae.b_enc[j] = -h.sort().values[-1] + 1e-4
        sae.b_dec.zero_()
    return sae.eval()


def make_atlas(folder, name, x, sae):
    np.save(folder / f"{name}.npy", x)
    save_sae(sae, folder / f"sae_{name}")
    build_atlas(
        AtlasConfig(
            acts=str(folder / f"{name}.npy"), sae=str(folder / f"sae_{name}"), out=str(folder / name), top_images=4
        )
    )
    return folder / name


def dense_codes(atlas, n_latents):
    """The [N, F] float64 image scores stored in an atlas's codes."""
    indptr, lat, val = (np.load(atlas / f) for f in ("codes_indptr.npy", "codes_latents.npy", "codes_values.npy"))
    out = np.zeros((len(indptr) - 1, n_latents))
    out[np.repeat(np.arange(len(indptr) - 1), np.diff(indptr)), lat] = val
    return out


def dense_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference: every Pearson r of a's columns with b's (float64, dense, the textbook
    formula), −inf where undefined (a column of zero variance)."""
    n = a.shape[0]
    sa, sb = a.sum(0), b.sum(0)
    va, vb = n * (a * a).sum(0) - sa**2, n * (b * b).sum(0) - sb**2
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (n * (a.T @ b) - np.outer(sa, sb)) / np.sqrt(np.outer(va, vb))
    r[~((va[:, None] > 0) & (vb[None, :] > 0))] = -np.inf
    return r


def assert_top_links(ids: np.ndarray, vals: np.ndarray, r: np.ndarray, top: int) -> None:
    """Each row's links are its `top` largest correlations: the same values in order as the
    dense reference, each id a holder of its value, no repeats, −1 exactly where fewer are
    defined. (Which of several equal correlations is listed is float noise in either method.)"""
    want = -np.sort(-r, axis=1)[:, :top]
    defined = np.isfinite(want)
    np.testing.assert_array_equal(ids >= 0, defined)
    np.testing.assert_allclose(vals[defined], want[defined], rtol=0, atol=1e-12)
    rows = np.nonzero(defined)[0]
    np.testing.assert_allclose(r[rows, ids[defined]], vals[defined], rtol=0, atol=1e-12)
    assert all(len(set(row[row >= 0])) == (row >= 0).sum() for row in ids)


def test_link_finds_planted_coactivation(tmp_path):
    rng = np.random.default_rng(0)
    n = 500
    z = rng.uniform(1, 2, n) * (rng.random(n) < 0.3)  # a sparse hidden feature both sides see
    xa = rng.normal(size=(n, 8)).astype(np.float32) * 0.3
    xb = rng.normal(size=(n, 6)).astype(np.float32) * 0.3
    xa[:, 0] += 2 * z
    xb[:, 0] += 2 * z
    saes = {}
    for name, x, d, s, planted in (("atlas_a", xa, 8, 24, 2), ("atlas_b", xb, 6, 20, 7)):
        sae = sparse_sae(d, s, seed=d)
        with torch.no_grad():
            sae.W_enc[0].mul_(0.05)  # other latents barely see the shared axis
            sae.W_enc[:, planted] = 0
            sae.W_enc[0, planted] = 1.0
            sae.b_enc[planted] = -0.5
        saes[name] = sae
        make_atlas(tmp_path, name, x, sae)
    # a budget of a few pairs per chunk: A's latents are cut into many chunks, B's links merged across them
    r = link(tmp_path / "atlas_a", tmp_path / "atlas_b", top=5, budget_mb=0.001)
    assert r["shared_images"] == n
    key_b = json.loads((tmp_path / "atlas_b/manifest.json").read_text())["sae_sha256"]
    key_a = json.loads((tmp_path / "atlas_a/manifest.json").read_text())["sae_sha256"]
    ab_ids = np.load(tmp_path / f"atlas_a/links/{key_b}.ids.npy")
    ab_corr = np.load(tmp_path / f"atlas_a/links/{key_b}.corr.npy")
    ba_ids = np.load(tmp_path / f"atlas_b/links/{key_a}.ids.npy")
    assert ab_ids.shape == (24, 5) and ba_ids.shape == (20, 5)
    assert ab_ids[2, 0] == 7 and ab_corr[2, 0] > 0.9
    assert ba_ids[7, 0] == 2
    with torch.no_grad():  # the correlation itself, from the SAEs re-encoding the inputs
        fa = load_sae(tmp_path / "sae_atlas_a").encode(torch.from_numpy(xa))[:, 2].double().numpy()
        fb = load_sae(tmp_path / "sae_atlas_b").encode(torch.from_numpy(xb))[:, 7].double().numpy()
    assert ab_corr[2, 0] == pytest.approx(np.corrcoef(fa, fb)[0, 1], abs=1e-5)


@pytest.mark.parametrize("backend", ["scipy", "torch"])
@pytest.mark.parametrize(
    "seed, n, fa, fb, budget_mb", [(11, 400, 37, 53, 0.002), (12, 257, 64, 29, 64.0), (13, 600, 90, 70, 0.01)]
)
def test_link_equals_dense_pearson(tmp_path, backend, seed, n, fa, fb, budget_mb):
    """Every latent's top links, both ways, equal the dense float64 computation over the same
    scores: co-active pairs, non-co-active (negative) ones, dead latents (no links)."""
    from precompute.link import AtlasSide, correlate
    from precompute.coactivation import make_side
    from precompute.ranks import Ranks

    rng = np.random.default_rng(seed)
    xa = rng.normal(size=(n, 7)).astype(np.float32)
    xb = np.concatenate([xa[:, :3] * 0.8, rng.normal(size=(n, 4))], axis=1).astype(np.float32)
    a = make_atlas(tmp_path, "a", xa, sparse_sae(7, fa, seed, dead=(0, 5), rare=(1, 2), x=xa))
    b = make_atlas(tmp_path, "b", xb, sparse_sae(7, fb, seed + 100, bias=-1.6, dead=(3,)))
    side_a, side_b = AtlasSide(a), AtlasSide(b)
    idx = np.arange(n)
    ab_v, ab_i, ba_v, ba_i = correlate(
        make_side(side_a.codes.csr(fa, idx), torch.device("cpu")),
        make_side(side_b.codes.csr(fb, idx), torch.device("cpu")),
        n,
        5,
        5,
        budget_mb,
        Ranks(),
        backend,
    )
    da, db = dense_codes(a, fa), dense_codes(b, fb)
    partners = ((da > 0).T.astype(int) @ (db > 0).astype(int) > 0).sum(1)
    assert ((partners > 0) & (partners < 5)).any(), "the data must give a latent with fewer than 5 co-active partners"
    r = dense_pearson(da, db)
    assert_top_links(ab_i.numpy(), ab_v.numpy(), r, 5)
    assert_top_links(ba_i.numpy(), ba_v.numpy(), r.T, 5)
    assert (ab_i[[0, 5]] == -1).all() and (ba_i[3] == -1).all()  # dead latents have no links
    assert (ab_v[ab_i >= 0] < 0).any()  # links beyond the co-active partners: negative correlations


def test_link_needs_only_the_atlases_and_survives_renames(tmp_path):
    """No cache or SAE folder is reopened; links follow the other atlas's SAE hash, not its name."""
    from app.atlas import Atlas

    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    a = make_atlas(tmp_path, "a", x, sparse_sae(6, 30, 1))
    b = make_atlas(tmp_path, "b", x * 1.5, sparse_sae(6, 20, 2))
    for p in ("a.npy", "b.npy", "sae_a", "sae_b"):
        shutil.rmtree(tmp_path / p) if (tmp_path / p).is_dir() else (tmp_path / p).unlink()
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    link(a, b, top=3)
    shutil.move(str(b), moved / "renamed")  # the steering atlas renamed after linking
    atlas_a, atlas_b = Atlas(a), Atlas(moved / "renamed")
    s = int(np.argmax(atlas_a.frequency))
    assert atlas_a.links_to(atlas_b, s) and atlas_a.links_to(atlas_b, s) == atlas_a.links(s)[atlas_b.identity]
    assert atlas_a.link_names == {atlas_b.identity: "b"}  # the name it had when linked, for display
    assert atlas_b.links_to(atlas_a, 0) is not None
    other = make_atlas(tmp_path, "c", x, sparse_sae(6, 20, 3))  # same name, another SAE: not linked
    assert Atlas(other).identity != atlas_b.identity and atlas_a.links_to(Atlas(other), s) == []


def test_link_cli_accepts_device_auto(tmp_path, capsys):
    from app.cli import main

    rng = np.random.default_rng(6)
    x = rng.normal(size=(100, 5)).astype(np.float32)
    a = make_atlas(tmp_path, "a", x, sparse_sae(5, 12, 1))
    b = make_atlas(tmp_path, "b", x, sparse_sae(5, 9, 2))
    assert main(["link", str(a), str(b), "--device", "auto", "--top-links", "2"]) == 0
    assert "over 100 shared images (top 2)" in capsys.readouterr().out
    assert main(["link", str(a), str(tmp_path / "nothing")]) == 2
    assert "manifest.json is missing" in capsys.readouterr().err
