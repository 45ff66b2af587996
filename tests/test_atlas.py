"""Atlas: top-k and stats against brute force, merges, masks, labels, atomic builds."""

import copy
import json

import numpy as np
import pytest
import torch

from helpers import write_images, write_tiny_clip_config
from precompute.activations import EmbedConfig, run_embed
from precompute.atlas import AtlasConfig, build_atlas
from precompute.atlas_stats import N_BANDS, N_BINS, pass_topk
from precompute.encoders import EncoderSpec
from precompute.topk import empty_topk, finalize_topk, merge_topk
from sae_core.config import ARCHITECTURES, K_ARCHS, SAEConfig
from sae_core.data import ActivationSource
from sae_core.io import save_sae
from sae_core.sae import SparseAutoencoder


def random_sae(arch: str, d: int = 8, s: int = 24, seed: int = 0) -> SparseAutoencoder:
    g = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(
        SAEConfig(
            d_in=d,
            d_sae=s,
            architecture=arch,
            k=3 if arch in K_ARCHS else None,
            groups=(s // 4, s) if arch == "matryoshka" else None,
        ),
        generator=g,
    )
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


def run_passes(tmp_path, sae, x_path, k, tokens, block_images, stats_images=0, seed=0):
    """Pass 1 (top-k + codes), the codes joined, sums and pass 2: what build_atlas does in one process."""
    from precompute.atlas_stats import finish_distribution, finish_stats, latent_sums, pass_distribution, stats_sample
    from precompute.codes import CODE_FILES, CodesPart, CodesWriter, write_codes

    source = ActivationSource(x_path)
    n = source.n_rows // tokens
    parts = tmp_path / "parts"
    parts.mkdir()
    writer = CodesWriter(parts, 0, 0, n)
    vals, ids = pass_topk(sae, source, k=k, tokens_per_image=tokens, block_images=block_images, codes=writer)
    writer.close()
    out = tmp_path / "codes"
    out.mkdir()
    write_codes(out, parts, 1)
    count, total = latent_sums(*(np.load(out / f) for f in CODE_FILES[1:]), sae.cfg.d_sae)
    stats = finish_stats(vals, ids, count, total, n)
    in_sample, priority = stats_sample(n, stats_images, seed)
    d = pass_distribution(CodesPart.open(parts, 0, 0), stats.max_activation, in_sample, priority)
    finish_distribution(stats, d, n if in_sample is None else int(in_sample.sum()))
    return stats, in_sample, priority, out


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
    stats, in_sample, priority, codes = run_passes(
        tmp_path, sae, tmp_path / "x.npy", 5, tokens, 7, stats_images=200, seed=3
    )
    with torch.no_grad():  # the reference in float64: it does not depend on the BLAS's float32 reduction order
        f64 = copy.deepcopy(sae).double().encode(torch.from_numpy(x).double()).numpy()
    f64 = f64.reshape(n_images, tokens, -1).max(axis=1)
    f = f64.astype(np.float32)
    ids, vals = brute_force(f64, 5)
    # float32 scores equal float64 to ~1e-7 relative: ids may swap only between values that close
    np.testing.assert_allclose(stats.topk_values, vals, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(stats.topk_ids >= 0, ids >= 0)
    lat_of = np.arange(f.shape[1])[:, None]
    held = np.where(stats.topk_ids >= 0, f64[np.maximum(stats.topk_ids, 0), lat_of], 0)
    np.testing.assert_allclose(held, vals, rtol=1e-5, atol=1e-6)  # each id holds the value it is listed with
    assert all(len(set(r[r >= 0])) == (r >= 0).sum() for r in stats.topk_ids)
    assert (stats.topk_ids != ids).mean() < 0.05  # swaps between near-equal values only, not a different list
    active = f > 0
    np.testing.assert_allclose(stats.frequency, active.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats.max_activation, f.max(axis=0).clip(0), rtol=1e-5, atol=1e-6)
    mean = np.where(active.any(0), (f.astype(np.float64) * active).sum(0) / active.sum(0).clip(1), 0)
    np.testing.assert_allclose(stats.mean_activation, mean, rtol=1e-5, atol=1e-6)
    # the codes hold every non-zero image score, by image
    indptr, lat, val = (np.load(codes / name) for name in ("codes_indptr.npy", "codes_latents.npy", "codes_values.npy"))
    dense = np.zeros_like(f)
    dense[np.repeat(np.arange(n_images), np.diff(indptr)), lat] = val
    np.testing.assert_allclose(dense, f, rtol=1e-5, atol=1e-6)
    assert (dense > 0).sum() == active.sum()

    # histogram and bands: a random sample of 200 images drawn across the whole dataset
    assert stats.stats_images == 200 and in_sample.sum() == 200 and in_sample[200:].any()
    sub = f[in_sample]
    np.testing.assert_array_equal(stats.histogram.sum(axis=1), (sub > 0).sum(axis=0))
    s = int(np.argmax((sub > 0).sum(0)))
    expected_hist = np.histogram(sub[sub[:, s] > 0, s], bins=N_BINS, range=(0, stats.max_activation[s]))[0]
    assert np.abs(stats.histogram[s] - expected_hist).sum() <= 2  # bin-edge rounding only
    # each band's samples: the 4 sample images of smallest random priority among those whose score
    # falls in that fifth of (0, max] (bins computed as the code does, in float32, from the codes)
    inv_peak = np.float32(N_BINS) / np.maximum(stats.max_activation, np.float32(1e-12))
    band_of = np.minimum((dense * inv_peak).astype(np.int64), N_BINS - 1) // (N_BINS // N_BANDS)
    for lat in range(f.shape[1]):
        for band in range(N_BANDS):
            members = np.flatnonzero(in_sample & (dense[:, lat] > 0) & (band_of[:, lat] == band))
            expected = sorted(members, key=lambda i: priority[i])[:4]
            chosen = stats.band_ids[lat, band]
            assert sorted(chosen[chosen >= 0].tolist()) == sorted(int(i) for i in expected)
            vals_here = stats.band_values[lat, band][chosen >= 0]
            np.testing.assert_allclose(vals_here, f[chosen[chosen >= 0], lat], rtol=1e-5, atol=1e-6)
            assert (np.diff(vals_here) >= 0).all()  # low to high within a band
            rel = vals_here / max(stats.max_activation[lat], 1e-12)
            assert ((band / N_BANDS - 1e-5 <= rel) & (rel <= (band + 1) / N_BANDS + 1e-5)).all()


def test_stats_sample_is_seeded_and_spread():
    from precompute.atlas_stats import stats_sample

    a, pa = stats_sample(10_000, 500, seed=1)
    b, pb = stats_sample(10_000, 500, seed=1)
    c, _ = stats_sample(10_000, 500, seed=2)
    assert np.array_equal(a, b) and np.array_equal(pa, pb) and not np.array_equal(a, c)
    assert a.sum() == 500 and a[5000:].sum() > 150  # not the first images: across the whole dataset
    assert stats_sample(100, 0, seed=1)[0] is None and sorted(stats_sample(100, 0, 1)[1]) == list(range(100))


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
    m = build_atlas(
        AtlasConfig(
            acts=str(clip_cache / "cache"), sae=str(clip_cache / "sae"), out=str(out), top_images=4, labels=False
        )
    )
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
    build_atlas(
        AtlasConfig(
            acts=str(clip_cache / "cache"),
            sae=str(tmp_path / "sae"),
            out=str(tmp_path / "a"),
            top_images=4,
            labels=False,
        )
    )
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
                np.testing.assert_allclose(
                    masks[lat, slot].astype(np.float32), expected[img, :, lat], rtol=2e-3, atol=2e-3
                )
                between += int(((h[img, :, lat] > 0.01) & (h[img, :, lat] < 0.04)).sum())
    assert between > 0, "the test needs patches with 0 < h < θ, which relu(h) would light"


def test_the_three_forms_of_each_rule_agree():
    """rules.activate (row- and latent-major), kept_entries (sparse training) and elementwise."""
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
            rows, cols, vals = rules.kept_entries(h, arch, k)
            assert torch.equal(vals, h[rows, cols])
            dense = torch.zeros_like(h)
            dense[rows, cols] = vals.clamp_min(0)
            torch.testing.assert_close(dense, f_train, rtol=0, atol=0)
            assert bool((rows[1:] >= rows[:-1]).all()), "coordinates are sorted by row"
    # the known values, written out: topk keeps each row's 4 largest, jumprelu h·[h > θ]
    top = rules.activate(h, "topk", 4)
    assert ((top > 0).sum(1) <= 4).all() and torch.equal(
        top.topk(4, dim=1).values, h.topk(4, dim=1).values.clamp_min(0)
    )
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
    m = build_atlas(
        AtlasConfig(acts=str(clip_cache / "cache"), sae=str(tmp_path / "sae"), out=str(tmp_path / "a"), masks=False)
    )
    from app.atlas import Atlas

    vocab = json.loads((tmp_path / "a/label_vocab.json").read_text())
    words, scores = np.load(tmp_path / "a/label_words.npy"), np.load(tmp_path / "a/label_scores.npy")
    assert m["labels"] and words.shape == (32, 5) and scores.shape == (32, 5)
    assert vocab[words[5, 0]] == "zebra" and scores[5, 0] == pytest.approx(1.0, abs=1e-4)
    assert vocab[words[9, 0]] == "lighthouse"
    atlas = Atlas(tmp_path / "a")
    assert atlas.label(5)[0] == "zebra" and atlas.search_labels("ZEBR")[0] == 5  # by the label's best word first
    assert 9 in atlas.search_labels("lighthouse") and atlas.search_labels("no such word") == []
    assert len(read_vocab()) >= 2000


def test_interrupted_build_leaves_the_previous_atlas_intact(tmp_path, clip_cache, monkeypatch):
    cfg = AtlasConfig(
        acts=str(clip_cache / "cache"),
        sae=str(clip_cache / "sae"),
        out=str(tmp_path / "atlas"),
        top_images=3,
        labels=False,
    )
    build_atlas(cfg)
    before = {p.name: p.read_bytes() for p in (tmp_path / "atlas").iterdir() if p.is_file()}

    def boom(*a, **kw):
        raise KeyboardInterrupt("killed while writing")

    from precompute import atlas_write

    monkeypatch.setattr(atlas_write, "_write_sidecars", boom)
    with pytest.raises(KeyboardInterrupt):
        build_atlas(AtlasConfig(**{**cfg.__dict__, "top_images": 5}))
    after = {p.name: p.read_bytes() for p in (tmp_path / "atlas").iterdir() if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas"]  # no half-written temporaries


def test_plain_matrix_gives_an_atlas_without_image_parts(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    save_sae(random_sae("topk"), tmp_path / "sae")
    m = build_atlas(
        AtlasConfig(acts=str(tmp_path / "x.npy"), sae=str(tmp_path / "sae"), out=str(tmp_path / "a"), top_images=4)
    )
    assert not m["has_images"] and not m["masks"] and not m["labels"] and m["n_images"] == 50
    assert any("no images" in n for n in m["notes"])
    assert np.load(tmp_path / "a/topk_ids.npy").shape == (24, 4)
    assert (tmp_path / "a/latents.faiss").exists() and not (tmp_path / "a/images.faiss").exists()
