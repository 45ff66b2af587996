"""The card's optional sections, one function each: each returns its section (None when the
inputs do not allow it, with the reason added to `skipped`) and its per-latent numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from precompute.atlas_format import sae_hash
from precompute.atlas_scores import monosemantic_threshold
from sae_core.io import load_sae
from sae_core.sae import SparseAutoencoder

from .card_mono import baseline, monosemanticity
from .card_pass import HeldOut, alive_latents


def spread(values: np.ndarray) -> dict[str, Any]:
    """n_scored, mean, median, p10, p90 of the finite values (None when there are none)."""
    v = values[np.isfinite(values)]
    if not v.size:
        return {"n_scored": 0, "mean": None, "median": None, "p10": None, "p90": None}
    return {
        "n_scored": int(v.size),
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "p10": float(np.percentile(v, 10)),
        "p90": float(np.percentile(v, 90)),
    }


def monosemanticity_section(
    cfg, held: HeldOut, codes: sp.csr_matrix, sae: SparseAutoencoder, device, out: Path, skipped: dict[str, str]
) -> tuple[dict | None, np.ndarray | None]:
    """MS of every latent under --evaluator, over the held-out images it could embed."""
    if not cfg.evaluator:
        skipped["monosemanticity"] = (
            "no --evaluator: the MS compares the images a latent fires on under another encoder (e.g. DINOv2)"
        )
        return None, None
    if not held.image_ids:
        skipped["monosemanticity"] = f"{cfg.acts} is a plain matrix without images to embed"
        return None, None
    from .card_evaluator import evaluator_embeddings

    emb = evaluator_embeddings(
        cfg.evaluator, cfg.evaluator_pretrained, held, sae.cfg.metadata, cfg.batch_size, device, out
    )
    keep = np.flatnonzero(emb.present)
    vectors = emb.vectors[keep]
    ms = monosemanticity(codes[keep], vectors)
    base = baseline(vectors)
    threshold = monosemantic_threshold(base)
    s = spread(ms)
    fraction = float((ms[np.isfinite(ms)] >= threshold).mean()) if s["n_scored"] else None
    return (
        {
            "evaluator": emb.description,
            "n_images": int(keep.size),
            "n_unreadable": int(held.n_images - keep.size),
            "baseline": base,
            **s,
            "monosemantic_threshold": threshold,
            "monosemantic_fraction": fraction,
        },
        ms,
    )


def probing(cfg, held: HeldOut, codes: sp.csr_matrix, skipped: dict[str, str]) -> dict | None:
    """Sparse probing on the held-out images' classes (--class-folders)."""
    if not cfg.labels:
        skipped["probing"] = (
            "no --class-folders: sparse probing needs the held-out images' classes (an ImageFolder tree)"
        )
        return None
    if not held.image_paths:
        skipped["probing"] = f"{cfg.acts} is a plain matrix: its rows have no image paths to find classes by"
        return None
    from .card_probe import sparse_probing
    from .latent_stats import image_classes

    classes, _ = image_classes(held.images_root or ".", held.image_paths, cfg.labels)
    return {
        "labels": cfg.labels,
        "n_labelled": int((classes >= 0).sum()),
        **sparse_probing(codes, classes, seed=cfg.seed),
    }


def label_quality(
    cfg, manifest: dict | None, held: HeldOut, codes: sp.csr_matrix, device, skipped: dict[str, str]
) -> tuple[dict | None, np.ndarray | None]:
    """Label AUC of every labelled or interpreted latent of --atlas."""
    if manifest is None:
        skipped["label_quality"] = "no --atlas: the labels and interpretations to score live in the atlas"
        return None, None
    from .card_labels import atlas_encoder, atlas_labels, heldout_image_embeddings, label_auc, label_texts

    atlas = Path(cfg.atlas)
    words, source = atlas_labels(atlas, manifest)
    if not words:
        skipped["label_quality"] = (
            f"{atlas} has no vocabulary labels and no interpretations (clipsae interpret writes them)"
        )
        return None, None
    try:
        encoder = atlas_encoder(atlas, device)
        images, present = heldout_image_embeddings(held, encoder, cfg.batch_size)
    except ValueError as exc:
        skipped["label_quality"] = str(exc)
        return None, None
    texts = label_texts(encoder, words, int(manifest["d_sae"]))
    keep = np.flatnonzero(present)
    auc = label_auc(codes[keep], images[keep], texts, cfg.label_negatives, cfg.seed)
    return (
        {
            "source": source,
            "n_labelled": len(words),
            "n_images": int(keep.size),
            "max_negatives": cfg.label_negatives,
            **spread(auc),
        },
        auc,
    )


def stability(
    cfg, sae: SparseAutoencoder, held: HeldOut, alive: np.ndarray, device, skipped: dict[str, str]
) -> tuple[list | None, dict[str, np.ndarray]]:
    """One-to-one matching of the decoder against each --compare SAE (latents alive on the held-out rows)."""
    if not cfg.compare:
        skipped["stability"] = "no --compare: seed stability matches this SAE's decoder against other SAEs'"
        return None, {}
    from sae_core.stability import match_dictionaries

    rows, columns = [], {}
    for path in cfg.compare:
        other = load_sae(path, device=device).eval().requires_grad_(False)
        if other.cfg.d_in != sae.cfg.d_in:
            raise ValueError(f"--compare {path} reads {other.cfg.d_in}-d inputs, this SAE {sae.cfg.d_in}-d")
        m = match_dictionaries(
            sae.W_dec,
            other.W_dec,
            threshold=cfg.stability_threshold,
            alive_a=alive,
            alive_b=alive_latents(other, held, cfg.block_mb, device),
        )
        name = Path(path).name
        rows.append(
            {
                "other": name,
                "other_path": str(path),
                "other_sha256": sae_hash(Path(path)),
                "other_d_sae": other.cfg.d_sae,
                **m.summary(),
            }
        )
        columns[f"stability_cos_{name}"] = m.cosine
    return rows, columns


def downstream(cfg, sae: SparseAutoencoder, sae_dir: Path, device, skipped: dict[str, str]) -> dict | None:
    """Zero-shot accuracy and CE recovered with the SAE spliced in (`clipsae eval zeroshot`)."""
    if not cfg.dataset:
        skipped["downstream"] = (
            "no --dataset: zero-shot accuracy and CE recovered need a labelled image set "
            "and the CLIP model the SAE's cfg.json names"
        )
        return None
    from .common import ModelChoice, NamedSAE, load_clip
    from .datasets import open_dataset
    from .prompts import templates_for
    from .zeroshot import zeroshot

    data = open_dataset(cfg.dataset).subset(cfg.max_images, cfg.seed)
    named = [NamedSAE(sae_dir.name, sae_dir, sae)]
    clip = load_clip(named, ModelChoice(device=cfg.device))
    rows, failures = zeroshot(
        clip, named, data, data.classnames, templates_for(data.kind, None), batch_size=cfg.batch_size
    )
    r = rows[0]
    keys = ("dataset", "n_images", "acc_clip", "acc_sae", "acc_delta", "ce_clip", "ce_sae", "ce_zero", "ce_recovered")
    return {**{k: r[k] for k in keys}, "n_unreadable": len(failures)}
