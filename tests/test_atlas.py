"""Atlas: top-k and stats against brute force, merges, masks, labels, atomic builds."""

import json

import numpy as np
import pytest
import torch

from helpers import write_images, write_tiny_clip_config
from precompute import atlas as atlas_mod
from precompute.activations import EmbedConfig, run_embed
from precompute.atlas import AtlasConfig, build_atlas
from precompute.atlas_stats import N_BANDS, N_BINS, pass_distribution, pass_topk
from precompute.encoders import EncoderSpec
from precompute.topk import empty_topk, finalize_topk, merge_topk
from sae_core.config import ARCHITECTURES, K_ARCHS, SAEConfig
from sae_core.data import ActivationSource
from sae_core.io import save_sae
from sae_core.sae import SparseAutoencoder


def random_sae(arch: str, d: int = 8, s: int = 24, seed: int = 0) -> SparseAutoencoder:
    g = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=s, architecture=arch, k=3 if arch in K_ARCHS else None,
                                      groups=(s // 4, s) if arch == "matryoshka" else None), generator=g)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(s, generator=g) - 0.5)  # some latents rarely active
        if arch in ("jumprelu", "batchtopk", "matryoshka"):
            sae.threshold.fill_(0.3)
    return sae.eval()


def brute_force(f_ns: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((f_ns.shape[1], k), -1)
    vals = np.zeros((f_ns.shape[1], k), np.float32)
    for s in range(f_ns.shape[1]):
        order = np.argsort(-f_ns[:, s], kind="stable")[:k]
        keep = f_ns[order, s] > 0
        ids[s, : keep.sum()] = order[keep]
        vals[s, : keep.sum()] = f_ns[order[keep], s]
    return ids, vals


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("tokens", [1, 3])
@pytest.mark.parametrize("route", ["sparse", "dense"])
def test_topk_and_stats_equal_brute_force(tmp_path, monkeypatch, arch, tokens, route):
    from precompute import atlas_stats

    monkeypatch.setattr(atlas_stats, "DENSE_ABOVE", 2.0 if route == "sparse" else -1.0)
    rng = np.random.default_rng(1)
    n_images = 301
    x = rng.normal(size=(n_images * tokens, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    sae = random_sae(arch)
    stats = pass_topk(sae, ActivationSource(tmp_path / "x.npy"), k=5, tokens_per_image=tokens, block_images=7)
    with torch.no_grad():
        f = sae.encode(torch.from_numpy(x)).numpy().reshape(n_images, tokens, -1).max(axis=1)
    ids, vals = brute_force(f, 5)
    np.testing.assert_array_equal(stats.topk_ids, ids)
    np.testing.assert_allclose(stats.topk_values, vals, rtol=1e-6)
    active = f > 0
    np.testing.assert_allclose(stats.frequency, active.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats.max_activation, f.max(axis=0).clip(0), rtol=1e-6)
    mean = np.where(active.any(0), (f * active).sum(0) / active.sum(0).clip(1), 0)
    np.testing.assert_allclose(stats.mean_activation, mean, rtol=1e-5)

    pass_distribution(stats, sae, ActivationSource(tmp_path / "x.npy"), tokens, block_images=11, stats_images=200)
    sub = f[:200]
    assert stats.stats_images == 200
    np.testing.assert_array_equal(stats.histogram.sum(axis=1), (sub > 0).sum(axis=0))
    s = int(np.argmax((sub > 0).sum(0)))
    expected_hist = np.histogram(sub[sub[:, s] > 0, s], bins=N_BINS, range=(0, stats.max_activation[s]))[0]
    assert np.abs(stats.histogram[s] - expected_hist).sum() <= 2  # bin-edge rounding only
    for lat in range(f.shape[1]):
        for band in range(N_BANDS):
            for img, val in zip(stats.band_ids[lat, band], stats.band_values[lat, band]):
                if img >= 0:
                    assert val == pytest.approx(sub[img, lat])
                    rel = val / stats.max_activation[lat]
                    assert band / N_BANDS - 1e-6 <= rel <= (band + 1) / N_BANDS + 1e-6


def test_merging_two_halves_equals_the_whole():
    rng = np.random.default_rng(0)
    scores = torch.from_numpy(rng.normal(size=(12, 100)).astype(np.float32))  # [latents, images]
    ids = torch.arange(100)
    whole = merge_topk(*empty_topk(12, 6), scores, ids)
    a = merge_topk(*empty_topk(12, 6), scores[:, :40], ids[:40])
    b = merge_topk(*empty_topk(12, 6), scores[:, 40:], ids[40:])
    merged = merge_topk(*a, b[0], b[1])  # per-rank results combined: [F, k] ids per latent
    dense = scores.topk(6, dim=1)
    for x, y in zip(finalize_topk(*whole), finalize_topk(*merged)):
        torch.testing.assert_close(x, y)
    vals, top_ids = finalize_topk(*whole)
    positive = dense.values > 0
    torch.testing.assert_close(vals, dense.values.clamp_min(0))
    assert torch.equal(top_ids[positive], dense.indices[positive]) and (top_ids[~positive] == -1).all()


@pytest.fixture(scope="module")
def clip_cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("atlascache")
    write_images(d / "imgs", 12)
    cfg_path = write_tiny_clip_config(d)
    spec = EncoderSpec(model=cfg_path, pretrained="none", patch_tokens=True)
    run_embed(EmbedConfig(images=str(d / "imgs"), out=str(d / "cache"), encoder=spec, workers=0, dtype="float32"))
    sae = random_sae("relu", d=16, s=32, seed=3)
    with torch.no_grad():
        sae.b_enc.fill_(0.0)
    save_sae(sae, d / "sae")
    return d


def test_full_build_masks_equal_direct_patch_computation(tmp_path, clip_cache):
    out = tmp_path / "atlas"
    m = build_atlas(AtlasConfig(acts=str(clip_cache / "cache"), sae=str(clip_cache / "sae"), out=str(out), top_images=4,
                                labels=False))
    assert m["masks"] and m["n_patches"] == 16 and m["has_images"] and m["image_index"] and m["random_weights"]
    meta = json.loads((clip_cache / "cache/metadata.json").read_text())
    patches = np.load(clip_cache / "cache" / meta["shards"][0]["patches"])  # [12, 16, 16]
    from sae_core.io import load_sae

    sae = load_sae(clip_cache / "sae")
    ids = np.load(out / "topk_ids.npy")
    masks = np.load(out / "masks.npy")
    scale = np.load(out / "mask_scale.npy")
    w, b, bd = (t.detach().numpy() for t in (sae.W_enc, sae.b_enc, sae.b_dec))
    for lat in range(32):
        for slot, img in enumerate(ids[lat]):
            if img < 0:
                assert not masks[lat, slot].any()
                continue
            direct = np.maximum((patches[img] - bd) @ w[:, lat] + b[lat], 0)
            np.testing.assert_allclose(masks[lat, slot].astype(np.float32), direct, rtol=2e-3, atol=2e-3)
        assert scale[lat] == pytest.approx(float(masks[lat].astype(np.float32).max()), rel=2e-3, abs=1e-6)
    images = [json.loads(line) for line in (out / "images.jsonl").read_text().splitlines()]
    assert len(images) == 12


@pytest.mark.parametrize("arch", ["batchtopk", "jumprelu"])
def test_threshold_masks_use_the_inference_threshold(tmp_path, clip_cache, arch):
    """A patch's mask value is what the SAE gives that patch token at inference: patches with
    0 < h <= θ are dark (they never count towards the image's score either)."""
    sae = random_sae(arch, d=16, s=32, seed=5)
    with torch.no_grad():
        sae.b_enc.fill_(0.0)
        sae.threshold.fill_(0.05)
    save_sae(sae, tmp_path / "sae")
    build_atlas(AtlasConfig(acts=str(clip_cache / "cache"), sae=str(tmp_path / "sae"), out=str(tmp_path / "a"), top_images=4,
                            labels=False))
    meta = json.loads((clip_cache / "cache/metadata.json").read_text())
    patches = torch.from_numpy(np.load(clip_cache / "cache" / meta["shards"][0]["patches"]).astype(np.float32))
    ids, masks = np.load(tmp_path / "a/topk_ids.npy"), np.load(tmp_path / "a/masks.npy")
    with torch.no_grad():
        expected = sae.eval().encode(patches.reshape(-1, 16)).reshape(12, 16, 32).numpy()  # [image, patch, latent]
        h = (patches.reshape(-1, 16) @ sae.W_enc).reshape(12, 16, 32).numpy()
    between = 0
    for lat in range(32):
        for slot, img in enumerate(ids[lat]):
            if img >= 0:
                np.testing.assert_allclose(masks[lat, slot].astype(np.float32), expected[img, :, lat],
                                           rtol=2e-3, atol=2e-3)
                between += int(((h[img, :, lat] > 0.01) & (h[img, :, lat] < 0.04)).sum())
    assert between > 0, "the test needs patches with 0 < h < θ, which relu(h) would light"


def test_the_three_forms_of_each_rule_agree():
    """rules.activate (row- and latent-major), kept_coords (sparse training) and elementwise."""
    from sae_core import rules

    g = torch.Generator().manual_seed(7)
    h = torch.randn(9, 40, generator=g)
    theta = torch.rand(40, generator=g) * 0.5
    for arch in ARCHITECTURES:
        k = 4 if arch in K_ARCHS else None
        th = theta if arch in rules.THRESHOLD_ARCHS else None
        f = rules.activate(h, arch, k, th)
        torch.testing.assert_close(rules.activate(h.T.contiguous(), arch, k, th, latent_dim=0), f.T, rtol=0, atol=0)
        if arch != "topk":  # element-wise at inference
            torch.testing.assert_close(rules.elementwise(h, arch, th), f, rtol=0, atol=0)
        if arch != "jumprelu":  # the sparse training path keeps exactly the dense rule's entries
            f_train = rules.activate(h, arch, k, th, training=True)
            rows, cols = rules.kept_coords(h, arch, k)
            dense = torch.zeros_like(h)
            dense[rows, cols] = h[rows, cols].clamp_min(0)
            torch.testing.assert_close(dense, f_train, rtol=0, atol=0)
            assert bool((rows[1:] >= rows[:-1]).all()), "coordinates are sorted by row"
    # the known values, written out: topk keeps each row's 4 largest, jumprelu h·[h > θ]
    top = rules.activate(h, "topk", 4)
    assert ((top > 0).sum(1) <= 4).all() and torch.equal(top.topk(4, dim=1).values, h.topk(4, dim=1).values.clamp_min(0))
    torch.testing.assert_close(rules.activate(h, "jumprelu", None, theta), h * (h > theta), rtol=0, atol=0)


def test_labels_find_a_planted_direction(tmp_path, clip_cache):
    from precompute.labels import read_vocab, text_embeddings

    meta = json.loads((clip_cache / "cache/metadata.json").read_text())
    text = text_embeddings(meta, ["zebra", "lighthouse"])
    sae = random_sae("relu", d=16, s=32, seed=4)
    with torch.no_grad():
        sae.W_dec[5] = torch.from_numpy(text[0])
        sae.W_dec[9] = torch.from_numpy(text[1])
    save_sae(sae, tmp_path / "sae")
    m = build_atlas(AtlasConfig(acts=str(clip_cache / "cache"), sae=str(tmp_path / "sae"), out=str(tmp_path / "a"),
                                masks=False))
    labels = json.loads((tmp_path / "a/labels.json").read_text())
    assert m["labels"] and len(labels) == 32
    assert labels[5]["words"][0] == "zebra" and labels[5]["scores"][0] == pytest.approx(1.0, abs=1e-4)
    assert labels[9]["words"][0] == "lighthouse"
    assert len(read_vocab()) >= 2000


def test_interrupted_build_leaves_the_previous_atlas_intact(tmp_path, clip_cache, monkeypatch):
    cfg = AtlasConfig(acts=str(clip_cache / "cache"), sae=str(clip_cache / "sae"), out=str(tmp_path / "atlas"),
                      top_images=3, labels=False)
    build_atlas(cfg)
    before = {p.name: p.read_bytes() for p in (tmp_path / "atlas").iterdir() if p.is_file()}

    def boom(*a, **kw):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(atlas_mod, "_save", boom)
    with pytest.raises(KeyboardInterrupt):
        build_atlas(AtlasConfig(**{**cfg.__dict__, "top_images": 5}))
    after = {p.name: p.read_bytes() for p in (tmp_path / "atlas").iterdir() if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas"]  # no half-written temporaries


def test_plain_matrix_gives_an_atlas_without_image_parts(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    save_sae(random_sae("topk"), tmp_path / "sae")
    m = build_atlas(AtlasConfig(acts=str(tmp_path / "x.npy"), sae=str(tmp_path / "sae"), out=str(tmp_path / "a"), top_images=4))
    assert not m["has_images"] and not m["masks"] and not m["labels"] and m["n_images"] == 50
    assert any("no images" in n for n in m["notes"])
    assert np.load(tmp_path / "a/topk_ids.npy").shape == (24, 4)
    assert (tmp_path / "a/latents.faiss").exists() and not (tmp_path / "a/images.faiss").exists()


def test_link_finds_planted_coactivation(tmp_path):
    from precompute.link import link

    rng = np.random.default_rng(0)
    n = 500
    z = rng.uniform(1, 2, n) * (rng.random(n) < 0.3)  # a sparse hidden feature both sides see
    xa = rng.normal(size=(n, 8)).astype(np.float32) * 0.3
    xb = rng.normal(size=(n, 6)).astype(np.float32) * 0.3
    xa[:, 0] += 2 * z
    xb[:, 0] += 2 * z
    np.save(tmp_path / "a.npy", xa)
    np.save(tmp_path / "b.npy", xb)
    for name, d, s, planted in (("a", 8, 24, 2), ("b", 6, 20, 7)):
        sae = random_sae("relu", d=d, s=s, seed=len(name) + d)
        with torch.no_grad():
            sae.W_enc[0].mul_(0.05)  # other latents barely see the shared axis
            sae.W_enc[:, planted] = 0
            sae.W_enc[0, planted] = 1.0
            sae.b_enc[planted] = -0.5
            sae.b_dec.zero_()
        save_sae(sae, tmp_path / f"sae_{name}")
        build_atlas(AtlasConfig(acts=str(tmp_path / f"{name}.npy"), sae=str(tmp_path / f"sae_{name}"),
                                out=str(tmp_path / f"atlas_{name}"), top_images=4))
    # a budget of ~6 latents of A per chunk: the reverse direction is merged across 4 chunks
    r = link(tmp_path / "atlas_a", tmp_path / "atlas_b", top=5, block_images=64, budget_mb=0.001)
    assert r["shared_images"] == n
    ab_ids = np.load(tmp_path / "atlas_a/links/atlas_b.ids.npy")
    ab_corr = np.load(tmp_path / "atlas_a/links/atlas_b.corr.npy")
    ba_ids = np.load(tmp_path / "atlas_b/links/atlas_a.ids.npy")
    assert ab_ids.shape == (24, 5) and ba_ids.shape == (20, 5)
    assert ab_ids[2, 0] == 7 and ab_corr[2, 0] > 0.9
    assert ba_ids[7, 0] == 2
    # the correlation itself, computed directly
    with torch.no_grad():
        from sae_core.io import load_sae

        fa = load_sae(tmp_path / "sae_a").encode(torch.from_numpy(xa))[:, 2].numpy()
        fb = load_sae(tmp_path / "sae_b").encode(torch.from_numpy(xb))[:, 7].numpy()
    assert ab_corr[2, 0] == pytest.approx(np.corrcoef(fa, fb)[0, 1], abs=1e-4)
