"""`clipsae eval card` / `compare` end to end, in process, on real (tiny, random-weight) models:
an OpenCLIP ViT's `embed` cache with patch tokens, a DINOv2 evaluator saved with
save_pretrained and loaded through transformers, an ImageFolder of classes, an atlas with
vocabulary labels. card.json against docs/scorecard.md, the scores in the atlas (format 4;
format 3 atlases still open) and in the app's latent page and Overview."""

from __future__ import annotations

import html
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from app.cli import main as cli_main
from helpers import write_tiny_clip_config
from test_formats import REPO, check_fields, tree_patterns

DOC = REPO / "docs/scorecard.md"
CLASSES = {"red": (220, 40, 30), "green": (30, 200, 60), "blue": (40, 70, 230)}


def write_class_images(root, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name, colour in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            px = np.clip(np.array(colour) + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            px[rng.integers(0, 24) :, rng.integers(0, 24) :] = rng.integers(0, 255, 3)  # a patch of another colour
            Image.fromarray(px).save(root / name / f"{name}_{i:02d}.png")


def write_tiny_dinov2(folder) -> str:
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(3)
    cfg = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, image_size=32, patch_size=8
    )
    Dinov2Model(cfg).eval().save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_convert_rgb=True
    ).save_pretrained(folder)
    return str(folder)


def random_sae(folder, meta: dict, d_sae: int, seed: int):
    import torch

    from sae_core.config import SAEConfig
    from sae_core.io import save_sae
    from sae_core.sae import SparseAutoencoder

    keep = {
        k: meta[k]
        for k in ("model_name", "model_config_path", "pretrained", "seed", "hook_name", "tokens")
        if k in meta
    }
    sae = SparseAutoencoder(
        SAEConfig(d_in=meta["dim"], d_sae=d_sae, metadata=keep), generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        sae.b_enc.fill_(0.02)
    save_sae(sae, folder)
    return folder


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Images -> tiny CLIP embed cache (+ patch tokens) -> random SAE -> labelled atlas -> the card
    with every section these inputs allow, through the CLI."""
    from precompute.activations import EmbedConfig, run_embed
    from precompute.atlas import AtlasConfig, build_atlas
    from precompute.encoders import EncoderSpec

    d = tmp_path_factory.mktemp("card")
    write_class_images(d / "imgs", 10, seed=8)
    spec = EncoderSpec(model=write_tiny_clip_config(d), pretrained="none", patch_tokens=True)
    meta = run_embed(EmbedConfig(images=str(d / "imgs"), out=str(d / "cache"), encoder=spec, workers=0))
    random_sae(d / "sae", meta, 40, seed=1)
    build_atlas(
        AtlasConfig(
            acts=str(d / "cache"), sae=str(d / "sae"), out=str(d / "atlas"), top_images=4, labels=True, vocab=None
        )
    )
    dino = write_tiny_dinov2(d / "dino")
    assert (
        cli_main(
            [
                "eval",
                "card",
                "--sae",
                str(d / "sae"),
                "--acts",
                str(d / "cache"),
                "--atlas",
                str(d / "atlas"),
                "--labels",
                str(d / "imgs"),
                "--evaluator",
                dino,
                "--dataset",
                str(d / "imgs"),
                "--moran-min-images",
                "2",
                "--moran-min-patches",
                "2",
                "--out",
                str(d / "out"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    return d


def test_card_json_is_what_docs_scorecard_documents(scored):
    card = json.loads((scored / "out" / "card.json").read_text())
    check_fields(DOC, "card.json", card)
    for section in (
        "sae",
        "heldout",
        "reconstruction",
        "sparsity",
        "downstream",
        "probing",
        "monosemanticity",
        "localisation",
        "label_quality",
    ):
        assert card[section] is not None, f"{section} was not measured: {card['skipped'].get(section)}"
        check_fields(DOC, section, card[section])
    assert set(card["skipped"]) == {"stability", "absorption"} and card["absorption"] is None
    ms, loc = card["monosemanticity"], card["localisation"]
    assert "Dinov2Model" in ms["evaluator"] and ms["n_images"] == 30 and ms["n_scored"] > 0
    assert loc["source"].startswith("patch tokens") and loc["grid"] == [4, 4] and loc["n_images"] == 30
    assert card["probing"]["n_classes"] == 3 and card["probing"]["n_labelled"] == 30
    assert card["downstream"]["n_images"] == 30 and 0 <= card["downstream"]["acc_clip"] <= 1
    assert card["sparsity"]["l0_mean"] > 0 and card["reconstruction"]["explained_variance"] <= 1  # a random SAE: < 0


def test_card_md_csv_and_pngs(scored):
    out = scored / "out"
    md = (out / "card.md").read_text()
    assert "| Explained variance |" in md and "Monosemanticity" in md and "Moran's I" in md
    assert "**absorption**: left out" in md and "class hierarchy" in md
    rows = (out / "latents.csv").read_text().splitlines()
    assert rows[0].startswith("latent,row_frequency,") and len(rows) == 41
    for name in ("monosemanticity.png", "morans_i.png", "label_auc.png", "probing.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 300
    assert (out / "evaluator_embeddings.npy").is_file()  # reused by a later run with the same evaluator


def test_scores_go_into_the_atlas_and_old_atlases_still_open(scored, tmp_path):
    from app.atlas import Atlas
    from precompute.atlas_format import ATLAS_VERSION
    from precompute.atlas_scores import SCORES_FORMAT, read_scores

    atlas = Atlas(scored / "atlas")
    assert atlas.manifest["format_version"] == ATLAS_VERSION == 4
    s = atlas.latent_scores
    assert s is not None and s.card["sae"]["d_sae"] == 40 and s.meta["format"] == SCORES_FORMAT
    check_fields(REPO / "precompute/ATLAS.md", "scores/scores.json", s.meta)
    patterns = tree_patterns(REPO / "precompute/ATLAS.md")
    written = [str(p.relative_to(scored / "atlas")) for p in (scored / "atlas" / "scores").iterdir()]
    assert len(written) == 4 and all(any(pat.match(w) for pat in patterns) for w in written), written
    csv_ms = [line.split(",") for line in (scored / "out" / "latents.csv").read_text().splitlines()[1:]]
    header = (scored / "out" / "latents.csv").read_text().splitlines()[0].split(",")
    col = header.index("monosemanticity")
    assert [float(r[col]) if r[col] else np.nan for r in csv_ms] == pytest.approx(
        np.asarray(s.monosemanticity, dtype=np.float64), abs=1e-5, nan_ok=True
    )
    old = tmp_path / "old"
    shutil.copytree(scored / "atlas", old)
    shutil.rmtree(old / "scores")
    m = json.loads((old / "manifest.json").read_text())
    m["format_version"] = 3
    (old / "manifest.json").write_text(json.dumps(m))
    assert Atlas(old).latent_scores is None and Atlas(old).page(0).latent == 0
    shutil.copytree(scored / "atlas" / "scores", old / "scores")
    m["sae_sha256"] = "f" * 64
    with pytest.raises(ValueError, match="another SAE"):
        read_scores(old, m)


def test_latent_page_and_overview_show_the_scores_and_the_card(scored):
    from app.atlas import Atlas
    from app.handlers import Handlers
    from app.overview import Overview

    atlas = Atlas(scored / "atlas")
    h = Handlers(atlas=atlas)
    s = atlas.latent_scores
    latent = int(np.nanargmax(np.asarray(s.monosemanticity)))
    header, *_, data = h.latent_page(latent)
    assert "**Scores** (clipsae eval card): monosemanticity" in header
    assert data["scores"]["monosemanticity"] == pytest.approx(float(s.monosemanticity[latent]), abs=1e-6)
    ov = Overview({atlas.name: atlas})
    kinds = ["live", "dense", "dead"]
    everything = ov.html(kinds)
    assert "Card of atlas" in everything and "Explained variance" in everything and "rows of cache" in everything
    m = ov.map(atlas.name)
    assert set(m.flags) == {"monosemantic", "localised"}
    assert f"shown: {int(m.flags['localised'].sum())}<" in ov.html(kinds, only=["localised"])
    coloured = ov.html(kinds, colour="monosemanticity")
    assert coloured != everything and "colour: monosemanticity" in coloured and "(yellow)" in coloured
    bare = Overview({"bare": Atlas(scored / "atlas")})
    bare.atlases["bare"].latent_scores = None  # an atlas never scored: filters keep nothing, and say why
    assert "shown: 0 · no scores for localised" in bare.html(kinds, only=["localised"])
    assert "no Moran's I scores in this atlas" in html.unescape(bare.html(kinds, colour="Moran's I"))
    assert f"{int(m.flags['monosemantic'].sum())} monosemantic" in everything


def test_compare_two_cards_and_the_frontier(scored, tmp_path):
    random_sae(tmp_path / "wide", json.loads((scored / "cache" / "metadata.json").read_text()), 80, seed=2)
    assert (
        cli_main(
            [
                "eval",
                "card",
                "--sae",
                str(tmp_path / "wide"),
                "--acts",
                str(scored / "cache"),
                "--out",
                str(tmp_path / "card2"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    second = json.loads((tmp_path / "card2" / "card.json").read_text())
    assert second["monosemanticity"] is None and "no --evaluator" in second["skipped"]["monosemanticity"]
    assert (
        cli_main(
            [
                "eval",
                "compare",
                str(scored / "out"),
                str(tmp_path / "card2" / "card.json"),
                "--out",
                str(tmp_path / "cmp"),
            ]
        )
        == 0
    )
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert md.count("| sae |") == 1 and "| wide |" in md and "Frontier" in md
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["sae"] for r in rows] == ["sae", "wide"] and any(r["on_frontier"] for r in rows)
    with Image.open(tmp_path / "cmp" / "frontier.png") as im:
        assert im.size[0] > 400


def test_bad_inputs_are_one_line_refusals(scored, tmp_path, capsys):
    base = [
        "eval",
        "card",
        "--sae",
        str(scored / "sae"),
        "--acts",
        str(scored / "cache"),
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
    ]
    clip_cfg = str(scored / "clipsae-tiny-vit.json")
    other = random_sae(tmp_path / "other", json.loads((scored / "cache" / "metadata.json").read_text()), 40, seed=5)
    cases = [
        (["--evaluator", clip_cfg], "--evaluator-pretrained"),
        (["--evaluator", clip_cfg, "--evaluator-pretrained", "none"], "the SAE's own encoder"),
        (["--evaluator", str(scored / "cache")], "the SAE's own encoder"),
        (["--atlas", str(scored / "atlas"), "--sae", str(other)], "was built from another SAE"),
        (["--sae", str(tmp_path / "nothing")], "has no cfg.json"),
        (["--moran-max-patch-fraction", "1.5"], "must be in (0, 1]"),
    ]
    for extra, message in cases:
        assert cli_main(base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "bad.json").write_text(json.dumps({"format": "clipsae-card", "format_version": 99}))
    assert cli_main(["eval", "compare", str(tmp_path / "bad.json"), "--out", str(tmp_path)]) == 2
    assert "format_version 99" in capsys.readouterr().err
