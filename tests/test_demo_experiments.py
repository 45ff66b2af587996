"""The seeds' remaining experiments on the embedded demo (issue 16: each command on the
demo): `clipsae demo` interprets its atlases; collage, eval latents, eval segment and the
Overview run on what it built. One demo build serves the module: the issue asks for every
command on the demo, and building it once is the cheapest way; it is built from the first 8 of
its 22 photos (48 images, every step the same: ~23 s instead of ~46 s on one core)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.demo import build_demo
from precompute.interpret import NO_PATTERN, read_interpretations

DEMO_PHOTOS = 8
"""The first 8 bundled photos: astronaut, rocket and coffee (test_eval_segment_on_the_demo_photos) among them."""


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return root, build_demo(root / "demo_cache", device="cpu", photos=DEMO_PHOTOS)


def test_demo_interprets_both_atlases_with_what_is_available(demo):
    _, info = demo
    assert info["captioner"] in ("tiny", "Salesforce/blip-image-captioning-base")
    for key in ("clip_atlas", "kandinsky_atlas"):
        doc = read_interpretations(info[key])
        alive = np.load(f"{info[key]}/frequency.npy") > 0
        assert [r["latent"] for r in doc["latents"]] == list(range(alive.size))
        assert all(bool(r["captions"]) == bool(alive[r["latent"]]) for r in doc["latents"])
        assert any(r["interpretation"] != NO_PATTERN for r in doc["latents"])
    from app.demo import demo_main

    report = demo_main(str(demo[0] / "demo_cache"), device="cpu")
    assert "Latent interpretations (clipsae interpret):" in report
    assert "Card of the CLIP SAE" in report and "| Explained variance |" in report


def test_demo_builds_a_card_and_scores_its_atlas(demo):
    from app.atlas import Atlas
    from evaluation.card_io import read_card

    _, info = demo
    card = read_card(info["card"])
    assert card["monosemanticity"]["n_images"] == info["n_images"] and card["monosemanticity"]["n_scored"] > 0
    assert "kandinsky" in card["monosemanticity"]["evaluator"] or "prior" in card["monosemanticity"]["evaluator"]
    assert card["localisation"]["grid"] == [7, 7] and card["label_quality"]["n_scored"] > 0
    scores = Atlas(info["clip_atlas"]).latent_scores
    assert scores is not None and scores.monosemanticity.shape == (1024,) and scores.card["sae"]["d_sae"] == 1024


def test_collage_and_overview_on_the_demo(demo, tmp_path):
    from app.atlas import Atlas
    from app.cli import main
    from app.overview import KINDS, Overview

    _, info = demo
    assert main(["collage", info["clip_atlas"], "--top", "2", "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("latent_*.png"))) == 2
    atlases = {k: Atlas(info[k]) for k in ("clip_atlas", "kandinsky_atlas")}
    html = Overview(atlases).html(list(KINDS))
    for a in atlases.values():
        assert f"{a.n_latents} latents" in html and f"{a.manifest['n_dead']} dead" in html


def test_eval_latents_on_the_demo_agrees_with_its_atlas(demo, tmp_path):
    from app.cli import main

    _, info = demo
    # held-out = the training cache itself: both rows and both frequency columns must agree
    assert (
        main(
            [
                "eval",
                "latents",
                "--atlas",
                info["clip_atlas"],
                "--acts",
                info["clip_cache"],
                "--out",
                str(tmp_path),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "latents_table.json").read_text())
    assert [r["split"] for r in rows] == ["train", "held-out"]
    manifest = json.loads((Path(info["clip_atlas"]) / "manifest.json").read_text())
    assert rows[0]["dead_latents"] == rows[1]["dead_latents"] == manifest["n_dead"]
    for key in ("mse", "l0", "mean_activation", "entropy"):
        assert rows[0][key] == rows[1][key]


def test_eval_segment_on_the_demo_photos(demo, tmp_path):
    from app.cli import main

    root, info = demo
    for photo in ("astronaut", "rocket", "coffee"):
        (tmp_path / "photos" / photo).mkdir(parents=True)
        for p in (root / "demo_cache/images").glob(f"{photo}_*.png"):
            shutil.copy(p, tmp_path / "photos" / photo / p.name)
    assert (
        main(
            [
                "eval",
                "segment",
                "--dataset",
                str(tmp_path / "photos"),
                "--sae",
                info["clip_sae"],
                "--latents",
                "3",
                "--out",
                str(tmp_path / "out"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "out/segment.json").read_text())
    assert [r["class"] for r in rows] == ["astronaut"] * 3 + ["coffee"] * 3 + ["rocket"] * 3
    assert all(r["images"] == 6 and len(r["mask"].split()) == 49 for r in rows)  # ViT-B-32: 7x7 patches
    assert len(list((tmp_path / "out").glob("segment_*.png"))) == 3


def test_a_built_demo_serves_from_any_working_directory_and_when_moved(demo, tmp_path, monkeypatch):
    from app.demo import PATH_KEYS, read_demo_info

    root, _ = demo
    written = json.loads((root / "demo_cache" / "demo.json").read_text())
    assert all("/" not in written[key] for key in PATH_KEYS)  # names inside the demo folder
    moved = tmp_path / "elsewhere" / "my_demo"
    shutil.copytree(root / "demo_cache", moved)
    monkeypatch.chdir(tmp_path)
    info = read_demo_info(moved)
    for key in PATH_KEYS:
        assert Path(info[key]).parent == moved and Path(info[key]).is_dir()
    old = {**written, **{key: f"demo_cache/{written[key]}" for key in PATH_KEYS}}  # as older demos wrote it
    (moved / "demo.json").write_text(json.dumps(old))
    assert read_demo_info(moved) == info
