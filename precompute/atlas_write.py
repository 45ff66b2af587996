"""Write an atlas folder (rank 0, inside `atomic_write_dir`): the codes joined from the ranks'
parts, the per-latent arrays by walking the declared `ATLAS_ARRAYS`, the image table, the
encoder's description, labels, faiss indexes, the SAE copy, and `manifest.json` last with
the SHA-256 of every file written. See precompute/ATLAS.md.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sae_core.data import ActivationSource
from sae_core.files import sha256_file
from sae_core.io import CFG_FILE, WEIGHTS_FILE
from sae_core.sae import SparseAutoencoder

from .atlas_format import ATLAS_ARRAYS, ATLAS_FORMAT, ATLAS_VERSION, ENCODER_FILE, LABEL_VOCAB, MANIFEST, sae_hash
from .atlas_stats import Distribution, finish_distribution, finish_stats, latent_sums
from .codes import CODE_FILES, write_codes

log = logging.getLogger(__name__)

ENCODER_KEYS = (
    "model_name",
    "model_config_path",
    "pretrained",
    "weights_sha256",
    "random_weights",
    "seed",
    "hook_name",
    "tokens",
    "image_size",
    "preprocessing",
    "dim",
    "token_indices",
    "tokens_per_image",
    "patch_tokens",
    "n_patches",
)
"""What encoder.json keeps of the cache's metadata: enough to load the encoder again."""
ENCODER_DIR = "encoder"


@dataclass
class AtlasInputs:
    """What every rank opened: the config, the activations, the SAE and the token layout."""

    cfg: Any  # AtlasConfig
    source: ActivationSource
    sae: SparseAutoencoder
    meta: dict[str, Any]
    tokens_per_image: int
    cls_pos: int | None
    n_images: int
    device: torch.device


@dataclass
class Shares:
    """The merged results of every rank's share: running top-k and the distribution."""

    topk_values: Tensor
    topk_ids: Tensor
    distribution: Distribution
    stats_images: int


def _labels(inp: AtlasInputs, notes: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """(word ids [F, 5] int32, scores [F, 5] float32, vocabulary) or None, with a note why."""
    cfg, meta = inp.cfg, inp.meta
    if not cfg.labels:
        return None
    if (
        meta.get("hook_name") != "embed"
        or str(meta.get("model_name", "")).startswith("kandinsky")
        or meta.get("pretrained") == "diffusers"
    ):
        notes.append("no labels: vocabulary labels need an SAE on the CLIP `embed` space")
        return None
    from .labels import label_latents, read_vocab

    try:
        labels = label_latents(inp.sae, meta, vocab_path=cfg.vocab, device=inp.device)
    except ValueError as exc:
        notes.append(f"no labels: {exc}")
        return None
    vocab = list(dict.fromkeys(read_vocab(cfg.vocab)))
    index = {w: i for i, w in enumerate(vocab)}
    words = np.array([[index[w] for w in lab["words"]] for lab in labels], dtype=np.int32)
    scores = np.array([lab["scores"] for lab in labels], dtype=np.float32)
    return words, scores, vocab


def _parts(staging: Path, world: int, *names: str) -> list[np.ndarray]:
    """Each named array, joined from the ranks' parts in rank order."""
    return [np.concatenate([np.load(staging / f"{name}_part{r:05d}.npy") for r in range(world)]) for name in names]


def _encoder(tmp: Path, meta: dict[str, Any]) -> None:
    """encoder.json (+ a copy of a local OpenCLIP config, named relative to the atlas)."""
    enc = {k: meta[k] for k in ENCODER_KEYS if k in meta}
    if enc.get("model_config_path"):
        src = Path(enc["model_config_path"])
        if src.is_file():
            (tmp / ENCODER_DIR).mkdir()
            shutil.copyfile(src, tmp / ENCODER_DIR / src.name)
            enc["model_config_path"] = f"{ENCODER_DIR}/{src.name}"
    (tmp / ENCODER_FILE).write_text(json.dumps(enc, indent=2))


def _images_root(cfg: Any, meta: dict[str, Any]) -> tuple[str | None, str | None]:
    """(absolute images root, the same relative to the atlas folder)."""
    root = cfg.images_root or meta.get("images_root")
    if not root:
        return None, None
    root = str(Path(root).resolve())
    return root, os.path.relpath(root, Path(cfg.out).resolve())


def _files(tmp: Path) -> dict[str, str]:
    """SHA-256 of every file written (the SAE copy is covered by sae_sha256)."""
    return {
        str(p.relative_to(tmp)): sha256_file(p)
        for p in sorted(tmp.rglob("*"))
        if p.is_file() and p.relative_to(tmp).parts[0] != "sae"
    }


def write_atlas(
    tmp: Path, inp: AtlasInputs, shares: Shares, staging: Path, world: int, has_masks: bool, notes: list[str]
) -> None:
    """Fill the temporary atlas folder; `manifest.json` is its last file."""
    cfg, sae, meta = inp.cfg, inp.sae, inp.meta
    n_codes = write_codes(tmp, staging, world)
    count, total = latent_sums(*(np.load(tmp / name, mmap_mode="r") for name in CODE_FILES[1:]), sae.cfg.d_sae)
    stats = finish_stats(shares.topk_values, shares.topk_ids, count, total, inp.n_images)
    finish_distribution(stats, shares.distribution, shares.stats_images)
    labels = _labels(inp, notes)
    arrays: dict[str, np.ndarray] = {
        "topk_ids.npy": stats.topk_ids,
        "topk_values.npy": stats.topk_values,
        "frequency.npy": stats.frequency,
        "mean_activation.npy": stats.mean_activation,
        "max_activation.npy": stats.max_activation,
        "histogram.npy": stats.histogram,
        "band_ids.npy": stats.band_ids,
        "band_values.npy": stats.band_values,
    }
    if has_masks:
        arrays["masks.npy"], arrays["mask_scale.npy"] = _parts(staging, world, "masks", "mask_scale")
    n_neighbours = min(cfg.neighbours, sae.cfg.d_sae - 1)
    if n_neighbours > 0:
        arrays["neighbour_ids.npy"], arrays["neighbour_cos.npy"] = _parts(
            staging, world, "neighbour_ids", "neighbour_cos"
        )
    if labels is not None:
        arrays["label_words.npy"], arrays["label_scores.npy"] = labels[0], labels[1]
        (tmp / LABEL_VOCAB).write_text(json.dumps(labels[2]))
    has_images = bool(meta) and (Path(cfg.acts) / "images.jsonl").exists()
    image_index = has_images and inp.tokens_per_image == 1
    root, root_rel = _images_root(cfg, meta)
    manifest: dict[str, Any] = {
        "format": ATLAS_FORMAT,
        "format_version": ATLAS_VERSION,
        "config": asdict(cfg),
        "sae_sha256": sae_hash(Path(cfg.sae)),
        "cache_sha256": _cache_hash(Path(cfg.acts)),
        "d_sae": sae.cfg.d_sae,
        "d_in": sae.cfg.d_in,
        "architecture": sae.cfg.architecture,
        "top_images": cfg.top_images,
        "score_rule": cfg.score if inp.tokens_per_image > 1 else "single row per image",
        "n_images": inp.n_images,
        "stats_images": stats.stats_images,
        "n_dead": int((stats.frequency == 0).sum()),
        "n_codes": n_codes,
        "model_name": meta.get("model_name"),
        "pretrained": meta.get("pretrained"),
        "random_weights": bool(meta.get("random_weights", False)),
        "hook_name": meta.get("hook_name"),
        "encoder": bool(meta),
        "images_root": root,
        "images_root_relative": root_rel,
        "has_images": has_images,
        "masks": has_masks,
        "n_patches": int(arrays["masks.npy"].shape[2]) if has_masks else 0,
        "labels": labels is not None,
        "image_index": image_index,
        "neighbours": max(n_neighbours, 0),
        "notes": notes,
    }
    for field in ATLAS_ARRAYS:  # the declared list: every array, checked against its dtype and shape
        if field.when and not manifest[field.when]:
            continue
        if field.name in CODE_FILES:  # already streamed from the ranks' parts
            field.check(np.load(tmp / field.name, mmap_mode="r"), manifest)
            continue
        field.check(arrays[field.name], manifest)
        np.save(tmp / field.name, arrays[field.name])
    _write_sidecars(tmp, inp, has_images, image_index)
    manifest["files"] = _files(tmp)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))  # last file of the folder


def _cache_hash(acts: Path) -> str:
    """SHA-256 of a .npy file, or of a cache's metadata.json (which lists its shards)."""
    return sha256_file(acts / "metadata.json" if acts.is_dir() else acts)


def _write_sidecars(tmp: Path, inp: AtlasInputs, has_images: bool, image_index: bool) -> None:
    """Image table, encoder description, faiss indexes, the SAE copy."""
    from .indexes import image_index as make_image_index
    from .indexes import latent_index

    acts, sae_dir = Path(inp.cfg.acts), Path(inp.cfg.sae)
    if has_images:
        shutil.copyfile(acts / "images.jsonl", tmp / "images.jsonl")
    if inp.meta:
        _encoder(tmp, inp.meta)
    latent_index(inp.sae).write(tmp / "latents.faiss")
    if image_index:
        make_image_index(inp.source).write(tmp / "images.faiss")
    (tmp / "sae").mkdir()
    for name in (CFG_FILE, WEIGHTS_FILE):
        shutil.copyfile(sae_dir / name, tmp / "sae" / name)
