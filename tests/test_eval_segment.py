"""`clipsae eval segment` (class-averaged patch masks) and `clipsae eval latents` (latent
statistics), checked against the activation cache and the atlas's mask code: independent
paths through the same tiny CLIP."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import write_tiny_clip_config
from precompute.activations import EmbedConfig, run_embed
from precompute.atlas import AtlasConfig, build_atlas
from precompute.encoders import EncoderSpec
from precompute.masks import PatchReader, patch_masks
from sae_core.config import SAEConfig
from sae_core.data import ActivationSource
from sae_core.io import load_sae, save_sae
from sae_core.sae import SparseAutoencoder

CLASSES = ("blue sky", "green", "red")


def write_classes(root, per_class=5, seed=0):
    """An ImageFolder: per class, images whose colour leans one way (and differ in layout)."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name.replace(" ", "_")).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 120, size=(36 + 4 * i, 40, 3))
            arr[..., c] += 120
            arr[: 10 + 3 * i, :, (c + 1) % 3] = 250  # a band whose height varies
            Image.fromarray(arr.astype(np.uint8)).save(root / name.replace(" ", "_") / f"{name[0]}{i}.png")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("seg")
    write_classes(d / "data")
    write_classes(d / "heldout", per_class=3, seed=1)
    cfg_path = write_tiny_clip_config(d)
    out = {"d": d, "cfg": cfg_path}
    for name, hook, d_in in (("embed", "embed", 16), ("block", "blocks.1.resid_post", 32)):
        spec = EncoderSpec(
            model=cfg_path,
            pretrained="none",
            hook=hook,
            tokens="cls" if hook == "embed" else "all",
            patch_tokens=hook == "embed",
        )
        meta = run_embed(EmbedConfig(images=str(d / "data"), out=str(d / f"cache_{name}"), encoder=spec, workers=0))
        sae_meta = {k: meta[k] for k in ("model_name", "model_config_path", "pretrained", "seed", "hook_name")}
        sae_meta["tokens"] = "spatial" if hook != "embed" else "cls"
        sae = SparseAutoencoder(
            SAEConfig(d_in=d_in, d_sae=20, metadata=sae_meta), generator=torch.Generator().manual_seed(3)
        )
        with torch.no_grad():
            sae.b_enc.fill_(0.02)
        save_sae(sae, d / f"sae_{name}")
    run_embed(
        EmbedConfig(
            images=str(d / "heldout"),
            out=str(d / "heldout_embed"),
            workers=0,
            encoder=EncoderSpec(model=cfg_path, pretrained="none", patch_tokens=True),
        )
    )
    build_atlas(
        AtlasConfig(
            acts=str(d / "cache_embed"), sae=str(d / "sae_embed"), out=str(d / "atlas"), top_images=6, labels=False
        )
    )
    return out


def _run_segment(world, name, **kw):
    from evaluation.segment import SegmentConfig, segment

    d = world["d"]
    cfg = SegmentConfig(
        dataset=str(d / "data"), sae=str(d / f"sae_{name}"), out=str(d / f"out_{name}"), device="cpu", **kw
    )
    return segment(cfg)


def _class_images(cache):
    """Per class name, the cache's image indices (from the images' folder names)."""
    table = [json.loads(line) for line in (cache / "images.jsonl").read_text().splitlines()]
    by_class = {}
    for i, t in enumerate(table):
        by_class.setdefault(t["path"].split("/")[0].replace("_", " "), []).append(i)
    return by_class


@pytest.mark.parametrize("name", ["embed", "block"])
def test_segment_matches_the_cache_and_the_atlas_mask_code(world, name):
    """Class means from the activation cache (clipsae embed) and class masks from
    precompute.masks.patch_masks on the cache's patch tokens: the same numbers."""
    rows, failures = _run_segment(world, name, latents="3")
    assert not failures
    cache = world["d"] / f"cache_{name}"
    sae = load_sae(world["d"] / f"sae_{name}").eval()
    meta = json.loads((cache / "metadata.json").read_text())
    t = meta["tokens_per_image"]
    x = torch.from_numpy(ActivationSource(cache).read(0, ActivationSource(cache).n_rows)).float()
    with torch.no_grad():
        f = sae.encode(x).reshape(-1, t, sae.cfg.d_sae)
    spatial = [p for p, tok in enumerate(meta["token_indices"]) if tok >= 1] or [0]
    scores = f[:, spatial].amax(dim=1).numpy() if name == "block" else f[:, 0].numpy()
    reader = PatchReader(cache, meta)
    for cls, ids in _class_images(cache).items():
        mine = [r for r in rows if r["class"] == cls]
        expected = np.argsort(-scores[ids].mean(axis=0), kind="stable")[:3]
        assert [r["latent"] for r in mine] == [int(i) for i in expected], cls
        for r in mine:
            assert r["class_mean"] == pytest.approx(float(scores[ids, r["latent"]].mean()), rel=2e-2, abs=2e-3)
            assert r["class_frequency"] == pytest.approx(float((scores[ids, r["latent"]] > 0).mean()))
            topk = np.full((sae.cfg.d_sae, len(ids)), -1)
            topk[r["latent"]] = ids
            masks, _ = patch_masks(sae, reader, topk)
            expected_mask = masks[r["latent"]].astype(np.float64).mean(axis=0)
            got = np.array([float(v) for v in r["mask"].split()])
            np.testing.assert_allclose(got, expected_mask, rtol=2e-2, atol=2e-3)
    for cls in CLASSES:
        assert (world["d"] / f"out_{name}" / f"segment_{cls.replace(' ', '_')}.png").stat().st_size > 1000


def test_segment_flags(world):
    rows, _ = _run_segment(world, "embed", latents="4,1", classes="red, blue sky")
    assert [(r["class"], r["latent"]) for r in rows] == [("blue sky", 4), ("blue sky", 1), ("red", 4), ("red", 1)]
    again, _ = _run_segment(world, "embed", latents="4,1", classes="red,blue_sky", keep_mb=1, max_images=None)
    assert [r["mask"] for r in again] == [r["mask"] for r in rows]  # encoding twice gives the kept result
    with pytest.raises(ValueError, match="no class 'purple'.*blue sky, green, red"):
        _run_segment(world, "embed", classes="purple")
    with pytest.raises(ValueError, match="--latents"):
        _run_segment(world, "embed", latents="x")


def test_segment_cli(world, capsys):
    from app.cli import main

    out = world["d"] / "cli_seg"
    assert (
        main(
            [
                "eval",
                "segment",
                "--dataset",
                str(world["d"] / "data"),
                "--sae",
                str(world["d"] / "sae_embed"),
                "--latents",
                "2",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    with open(out / "segment.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and len(rows[0]["mask"].split()) == 16  # 4x4 patches of the tiny ViT
    assert "Class-averaged masks" in (out / "segment.md").read_text()


# ---------------------------------------------------------------------------- eval latents
def test_label_entropy_by_hand():
    from evaluation.latent_stats import label_entropy

    ids = np.array([[0, 1, 2, -1], [3, 4, -1, -1], [0, 1, -1, -1]])
    values = np.array([[2.0, 1.0, 1.0, 0], [1.0, 1.0, 0, 0], [3.0, 0.5, 0, 0]], dtype=np.float32)
    image_class = np.array([0, 0, 1, -1, -1])
    h, top, share = label_entropy(ids, values, image_class)
    assert h[0] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), abs=1e-6)
    assert math.isnan(h[1]) and top[1] == -1  # no labelled top image
    assert h[2] == pytest.approx(0.0, abs=1e-6) and top[2] == 0 and share[2] == 1.0


def test_latents_statistics_match_the_data(world, tmp_path):
    from evaluation.latent_stats import LatentStatsConfig, latent_stats_main

    d = world["d"]
    table = latent_stats_main(
        LatentStatsConfig(
            atlas=str(d / "atlas"),
            acts=str(d / "heldout_embed"),
            labels=str(d / "data"),
            out=str(tmp_path),
            device="cpu",
        )
    )
    assert table.count("\n") == 3  # header, rule, train, held-out
    sae = load_sae(d / "atlas/sae").eval()
    split_rows = {r["split"]: r for r in json.loads((tmp_path / "latents_table.json").read_text())}
    for split, cache in (("train", d / "cache_embed"), ("held-out", d / "heldout_embed")):
        src = ActivationSource(cache)
        x = torch.from_numpy(src.read(0, src.n_rows)).float()
        with torch.no_grad():
            f = sae.encode(x)
            x_hat = sae.decode(f)
        r = split_rows[split]
        assert r["rows"] == src.n_rows and r["l0"] == pytest.approx(float((f > 0).sum(1).float().mean()), abs=0.05)
        assert r["mse"] == pytest.approx(float((x - x_hat).pow(2).mean()), rel=1e-4)
        assert r["mean_activation"] == pytest.approx(float(f[f > 0].mean()), rel=1e-4)
        freq = (f > 0).float().mean(0).numpy()
        assert r["dead_latents"] == int((freq == 0).sum())
    with open(tmp_path / "latents.csv", newline="") as fh:
        per = list(csv.DictReader(fh))
    assert len(per) == 20 and {"held-out_frequency", "label_entropy", "top_class"} <= per[0].keys()
    held = ActivationSource(d / "heldout_embed")
    with torch.no_grad():
        hf = (sae.encode(torch.from_numpy(held.read(0, held.n_rows)).float()) > 0).float().mean(0).numpy()
    got = np.array([float(p["held-out_frequency"]) for p in per])
    assert np.abs(got - hf).max() <= 1.0 / held.n_rows + 1e-6  # a value at the 0 boundary may differ across BLAS
    assert {p["top_class"] for p in per if p["top_class"]} <= {"blue_sky", "green", "red"}
    for name in ("latents_map.png", "latents_images.png"):
        assert (tmp_path / name).stat().st_size > 5000


def test_latents_cli_without_heldout_or_labels(world, tmp_path, capsys):
    from app.cli import main

    assert main(["eval", "latents", "--atlas", str(world["d"] / "atlas"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| train |" in out and "held-out" not in out.split("wrote")[0]
    assert (
        main(
            [
                "eval",
                "latents",
                "--atlas",
                str(world["d"] / "atlas"),
                "--labels",
                str(world["d"] / "nope"),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "--class-folders" in capsys.readouterr().err  # the older name --labels still reads


def test_image_classes_from_an_imagefolder(tmp_path):
    from evaluation.latent_stats import image_classes

    (tmp_path / "ds/train/cat").mkdir(parents=True)
    cls, names = image_classes(tmp_path / "ds", ["train/cat/a.png", "train/dog/b.png", "c.png"], tmp_path / "ds")
    assert names == ["cat", "dog"] and cls.tolist() == [0, 1, -1]
    with pytest.raises(ValueError, match="none of the atlas's images"):
        image_classes(tmp_path / "elsewhere", ["x/a.png"], tmp_path / "ds")
