"""The scorecard of one SAE (`clipsae eval card`): every axis the inputs allow, one versioned
card.json (docs/scorecard.md), card.md, latents.csv and PNGs; with --atlas, the per-latent
scores also go into the atlas (precompute/atlas_scores.py) for the app.

    clipsae eval card --sae sae/ --acts heldout/ --out card/
    clipsae eval card --sae sae/ --acts heldout/ --atlas atlas/ --class-folders imagenet_val/ \\
        --evaluator facebook/dinov2-base --compare sae_seed1/ --dataset cifar-10-batches-bin/ --out card/

Inputs → sections: --acts alone gives reconstruction, sparsity and (token caches, or embed
caches with patch tokens) Moran's I; --evaluator the MS; --class-folders sparse probing; --atlas
(with labels or interpretations) label quality; --compare seed stability; --dataset zero-shot
accuracy and CE recovered. A section the inputs do not allow is null in card.json and card.md
says why (`skipped`).
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any

import numpy as np

from precompute.atlas_format import read_manifest, sae_hash
from precompute.atlas_scores import LOCALISED_MORANS_I, monosemantic_threshold, write_scores
from sae_core.device import resolve_device
from sae_core.io import load_sae
from sae_core.sae import SparseAutoencoder

from .configs import CardConfig
from .card_io import ABSORPTION_LEFT_OUT, CARD_FORMAT, CARD_VERSION, SECTIONS, clean, hist_png, write_card
from .card_moran import MoranAccumulator, MoranRules
from .card_pass import DENSE_FRACTION, HeldOut, PassResult, card_pass, open_heldout, patch_moran
from .card_sections import downstream, label_quality, monosemanticity_section, probing, stability

log = logging.getLogger(__name__)


def describe_sae(sae: SparseAutoencoder, path: Path) -> dict[str, Any]:
    cfg, meta = sae.cfg, sae.cfg.metadata
    return {
        "name": path.name,
        "path": str(path),
        "sha256": sae_hash(path),
        "architecture": cfg.architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "k": cfg.k,
        "l1_coefficient": meta.get("l1_coefficient"),
        "hook_name": meta.get("hook_name"),
        "model_name": meta.get("model_name"),
        "pretrained": meta.get("pretrained"),
    }


def base_sections(cfg: CardConfig, res: PassResult, held: HeldOut) -> dict[str, Any]:
    m = res.metrics
    return {
        "heldout": {
            "acts": cfg.acts,
            "rows": int(m["n_inputs"]),
            "images": held.n_images,
            "tokens_per_image": held.tokens_per_image,
            "score_rule": cfg.score if held.tokens_per_image > 1 else "single row per image",
        },
        "reconstruction": {
            "fvu": 1 - m["explained_variance"],
            "explained_variance": m["explained_variance"],
            "cosine_similarity": m["cosine_similarity"],
            "mse": m["mse"],
        },
        "sparsity": {
            "l0_mean": m["l0"],
            "l0_median": res.l0_median,
            "dead_fraction": float((res.row_frequency == 0).mean()),
            "dense_fraction": float((res.row_frequency >= DENSE_FRACTION).mean()),
            "dense_threshold": DENSE_FRACTION,
        },
    }


def localisation(acc: MoranAccumulator | None, source: str) -> tuple[dict | None, np.ndarray | None, np.ndarray | None]:
    if acc is None:
        return None, None, None
    score, count = acc.result()
    scored = score[np.isfinite(score)]
    r = acc.rules
    return (
        {
            "source": source,
            "grid": list(acc.grid),
            "min_patches": r.min_patches,
            "max_patch_fraction": r.max_patch_fraction,
            "min_images": r.min_images,
            "n_images": acc.n_images,
            "n_scored": int(scored.size),
            "mean": float(scored.mean()) if scored.size else None,
            "median": float(np.median(scored)) if scored.size else None,
            "localised_threshold": LOCALISED_MORANS_I,
            "localised_fraction": float((scored >= LOCALISED_MORANS_I).mean()) if scored.size else None,
        },
        score,
        count,
    )


def _moran(
    cfg: CardConfig, sae, held: HeldOut, res: PassResult, rules: MoranRules, dev
) -> tuple[MoranAccumulator | None, str]:
    if res.moran is not None:
        return res.moran, "spatial tokens"
    acc = patch_moran(sae, held, rules, cfg.moran_images, cfg.seed, cfg.block_mb, dev)
    return acc, "patch tokens mapped into the embedding space"


def card_main(cfg: CardConfig) -> dict[str, Any]:
    """Measure everything the inputs allow and write the card (and the atlas's scores)."""
    dev = resolve_device(cfg.device)
    sae_dir = Path(cfg.sae)
    sae = load_sae(sae_dir, device=dev).eval().requires_grad_(False)
    held = open_heldout(cfg.acts)
    manifest = read_manifest(cfg.atlas) if cfg.atlas else None
    if manifest is not None and manifest["sae_sha256"] != sae_hash(sae_dir):
        raise ValueError(f"--atlas {cfg.atlas} was built from another SAE than {cfg.sae}")
    rules = MoranRules(cfg.moran_min_patches, cfg.moran_max_patch_fraction, cfg.moran_min_images)
    res = card_pass(sae, held, cfg.score, cfg.block_mb, dev, rules)
    out = Path(cfg.out)
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "sae": describe_sae(sae, sae_dir),
        **base_sections(cfg, res, held),
    }
    skipped: dict[str, str] = {}
    columns: dict[str, np.ndarray] = {"row_frequency": res.row_frequency}
    scores: dict[str, np.ndarray] = {}
    acc, source = _moran(cfg, sae, held, res, rules, dev)
    card["localisation"], moran, counted = localisation(acc, source)
    if moran is None:
        skipped["localisation"] = (
            "the held-out activations have no patch grid (an embed cache without "
            "--patch-tokens, --tokens cls, patches that are not a square grid, or a plain .npy)"
        )
    else:
        columns["morans_i"], columns["moran_images"], scores["morans_i"] = moran, counted, moran
    card["monosemanticity"], ms = monosemanticity_section(cfg, held, res.codes, sae, dev, out, skipped)
    if ms is not None:
        columns["monosemanticity"] = scores["monosemanticity"] = ms
    card["probing"] = probing(cfg, held, res.codes, skipped)
    card["label_quality"], auc = label_quality(cfg, manifest, held, res.codes, dev, skipped)
    if auc is not None:
        columns["label_auc"] = scores["label_auc"] = auc
    card["stability"], partners = stability(cfg, sae, held, res.row_frequency > 0, dev, skipped)
    columns.update(partners)
    card["downstream"] = downstream(cfg, sae, sae_dir, dev, skipped)
    card["absorption"] = None
    skipped["absorption"] = ABSORPTION_LEFT_OUT
    card["skipped"] = {k: skipped[k] for k in SECTIONS if k in skipped}
    card["files"] = _plots(out, card, columns)
    head = ("format", "format_version", "created", "sae", "heldout")
    card = clean({k: card[k] for k in (*head, *SECTIONS, "skipped", "files")})
    write_card(out, card, columns)
    if manifest is not None:
        write_scores(cfg.atlas, manifest, scores, clean(_scores_meta(card, cfg)))
    return card


def _scores_meta(card: dict[str, Any], cfg: CardConfig) -> dict[str, Any]:
    ms, loc, lq = card["monosemanticity"], card["localisation"], card["label_quality"]
    return {
        "acts": cfg.acts,
        "ms_evaluator": ms["evaluator"] if ms else None,
        "ms_baseline": ms["baseline"] if ms else None,
        "moran": {k: loc[k] for k in ("min_patches", "max_patch_fraction", "min_images", "grid")} if loc else None,
        "label_source": lq["source"] if lq else None,
        "card": card,
    }


def _plots(out: Path, card: dict[str, Any], columns: dict[str, np.ndarray]) -> dict[str, str]:
    """The distribution PNGs the inputs allow; returns {what: file name}."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"latents": "latents.csv"}
    ms = card["monosemanticity"]
    if "monosemanticity" in columns:
        hist_png(
            out / "monosemanticity.png",
            columns["monosemanticity"],
            f"monosemanticity ({ms['evaluator']})",
            "Monosemanticity per latent",
            monosemantic_threshold(ms["baseline"]),
        )
        files["monosemanticity"] = "monosemanticity.png"
    if "morans_i" in columns:
        hist_png(
            out / "morans_i.png",
            columns["morans_i"],
            "Moran's I (8-connected patches)",
            "Localisation per latent",
            LOCALISED_MORANS_I,
        )
        files["localisation"] = "morans_i.png"
    if "label_auc" in columns:
        hist_png(out / "label_auc.png", columns["label_auc"], "label AUC", "Label quality per latent", 0.5)
        files["label_quality"] = "label_auc.png"
    if card["probing"]:
        from .report import scatter_png

        p = card["probing"]
        scatter_png(
            out / "probing.png",
            [(k, a, f"k={k}") for k, a in zip(p["k"], p["accuracy"])],
            "k (latents, ranked by ANOVA F)",
            "test accuracy",
            "Sparse probing",
            log_x=True,
        )
        files["probing"] = "probing.png"
    return files
