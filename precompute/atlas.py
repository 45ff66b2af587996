"""Build the atlas the app browses (`clipsae atlas`).

    clipsae atlas --acts cache/ --sae saes/l1_0.01 --out atlas/
    clipsae atlas --acts acts.npy --sae sae/ --out atlas/          # no images: top-k + stats only

For every latent: the top-k images (exact, every architecture), their patch masks,
frequency / mean / max, a 50-bin histogram and value-band samples, a label (embed-space
SAEs), plus faiss indexes of images (by embedding) and latents (by decoder direction).
The folder is built under a temporary name and swapped in, with `manifest.json` written
last, so an interrupted build leaves the previous atlas intact. See precompute/ATLAS.md.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sae_core.data import ActivationSource
from sae_core.files import atomic_write_dir, sha256_file
from sae_core.io import CFG_FILE, WEIGHTS_FILE, load_sae
from sae_core.device import resolve_device

from .atlas_format import ATLAS_FORMAT, ATLAS_VERSION, MANIFEST, read_manifest, sae_hash
from .atlas_stats import pass_distribution, pass_topk
from .masks import PatchReader, patch_masks
from .topk import ScoreRule

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class AtlasConfig:
    """One atlas build (saved in the manifest)."""

    acts: str
    """Activation cache folder (or a plain .npy: no image parts)."""
    sae: str
    """SAE folder."""
    out: str
    """Atlas folder (written atomically, manifest last)."""
    top_images: int = 16
    """Top images kept per latent."""
    score: ScoreRule = "max"
    """Image score from token activations: max or mean over tokens, or the CLS token."""
    block_mb: int = 1024
    """Memory budget of one block of latent activations (larger blocks: faster matmuls)."""
    stats_images: int = 32_768
    """Images used for histograms and value-band samples (the first ones of the cache)."""
    images_root: str | None = None
    """Where the images live (default: the cache's images_root)."""
    masks: bool = True
    labels: bool = True
    vocab: str | None = None
    """Vocabulary file for labels (default: the bundled visual-concepts list)."""
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("top_images", "block_mb", "stats_images"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")
        if self.score not in ("max", "mean", "cls"):
            raise ValueError(f"--score must be max, mean or cls; got {self.score!r}")


def cache_hash(acts: Path) -> str:
    """SHA-256 of a .npy file, or of a cache's metadata.json (which lists its shards)."""
    return sha256_file(acts / "metadata.json" if acts.is_dir() else acts)


def _save(tmp: Path, name: str, array: np.ndarray) -> None:
    np.save(tmp / name, array)


def build_atlas(cfg: AtlasConfig) -> dict[str, Any]:
    """Compute everything, then write the atlas folder atomically; returns the manifest."""
    device = resolve_device(cfg.device)
    acts, sae_dir = Path(cfg.acts), Path(cfg.sae)
    source = ActivationSource(acts)
    meta = source.metadata
    sae = load_sae(sae_dir, device=device)
    if sae.cfg.d_in != source.d:
        raise ValueError(f"SAE d_in={sae.cfg.d_in} but {acts} has width {source.d}")
    t = int(meta.get("tokens_per_image", 1))
    token_indices = meta.get("token_indices", [0])
    cls_pos = token_indices.index(0) if 0 in token_indices else None
    # float32 activations [F, b·T] plus a same-sized temporary of the encoder
    block_images = max(1, cfg.block_mb * 2**20 // (4 * sae.cfg.d_sae * t * 2))
    stats = pass_topk(sae, source, cfg.top_images, t, block_images, cfg.score, cls_pos, device)
    pass_distribution(stats, sae, source, t, block_images, cfg.stats_images, cfg.score, cls_pos, device)

    has_images = bool(meta) and (acts / "images.jsonl").exists()
    notes: list[str] = []
    masks = scale = None
    if cfg.masks and meta:
        try:
            masks, scale = patch_masks(sae, PatchReader(acts, meta), stats.topk_ids, device=device)
        except ValueError as exc:
            notes.append(f"no patch masks: {exc}")
    elif not meta:
        notes.append("no images: --acts is a plain matrix, so masks, image indexes and image files are skipped")

    labels = None
    if cfg.labels and meta.get("hook_name") == "embed" and not meta.get("model_name", "").startswith("kandinsky"):
        from .labels import label_latents

        try:
            labels = label_latents(sae, meta, vocab_path=cfg.vocab, device=device)
        except ValueError as exc:
            notes.append(f"no labels: {exc}")
    elif cfg.labels:
        notes.append("no labels: vocabulary labels need an SAE on the CLIP `embed` space")

    from .indexes import image_index, latent_index

    def fill(tmp: Path) -> None:
        _save(tmp, "topk_ids.npy", stats.topk_ids)
        _save(tmp, "topk_values.npy", stats.topk_values)
        _save(tmp, "frequency.npy", stats.frequency)
        _save(tmp, "mean_activation.npy", stats.mean_activation)
        _save(tmp, "max_activation.npy", stats.max_activation)
        _save(tmp, "histogram.npy", stats.histogram)
        _save(tmp, "band_ids.npy", stats.band_ids)
        _save(tmp, "band_values.npy", stats.band_values)
        if masks is not None:
            _save(tmp, "masks.npy", masks)
            _save(tmp, "mask_scale.npy", scale)
        if labels is not None:
            (tmp / "labels.json").write_text(json.dumps(labels))
        if has_images:
            shutil.copyfile(acts / "images.jsonl", tmp / "images.jsonl")
        latent_index(sae).write(tmp / "latents.faiss")
        if has_images and t == 1:
            image_index(source).write(tmp / "images.faiss")
        sae_copy = tmp / "sae"
        sae_copy.mkdir()
        for name in (CFG_FILE, WEIGHTS_FILE):
            shutil.copyfile(sae_dir / name, sae_copy / name)
        manifest = {
            "format": ATLAS_FORMAT,
            "format_version": ATLAS_VERSION,
            "config": asdict(cfg),
            "sae_sha256": sae_hash(sae_dir),
            "cache_sha256": cache_hash(acts),
            "d_sae": sae.cfg.d_sae,
            "d_in": sae.cfg.d_in,
            "architecture": sae.cfg.architecture,
            "top_images": cfg.top_images,
            "score_rule": cfg.score if t > 1 else "single row per image",
            "n_images": stats.n_images,
            "stats_images": stats.stats_images,
            "n_dead": int((stats.frequency == 0).sum()),
            "model_name": meta.get("model_name"),
            "pretrained": meta.get("pretrained"),
            "random_weights": bool(meta.get("random_weights", False)),
            "hook_name": meta.get("hook_name"),
            "images_root": cfg.images_root or meta.get("images_root"),
            "has_images": has_images,
            "masks": masks is not None,
            "n_patches": int(masks.shape[2]) if masks is not None else 0,
            "labels": labels is not None,
            "image_index": has_images and t == 1,
            "notes": notes,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))  # last file of the folder

    atomic_write_dir(cfg.out, fill)
    manifest = read_manifest(cfg.out)
    log.info("atlas: %d latents x top-%d over %d images -> %s (%d dead)%s", sae.cfg.d_sae, cfg.top_images, stats.n_images,
             cfg.out, manifest["n_dead"], "".join(f"; {n}" for n in notes))
    return manifest
