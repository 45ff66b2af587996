"""The configs of `clipsae eval card` and `clipsae eval compare` (torch-free: `--help` builds
the parser from them without loading a model). The work is in evaluation/card.py and
evaluation/card_compare.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from precompute.configs import ScoreRule
from sae_core.cliargs import POSITIONAL, renamed

from .configs import DEFAULT_OUT


@dataclass(frozen=True)
class CardConfig:
    """One `clipsae eval card` run."""

    sae: str
    """SAE folder (ours, or any format `clipsae convert` reads, once converted)."""
    acts: str
    """Held-out activations of the SAE's encoder and hook: a cache folder (its images are used
    where a section needs them) or a .npy matrix."""
    out: str = DEFAULT_OUT
    """Output folder: card.json, card.md, latents.csv and the PNGs."""
    atlas: str | None = None
    """The SAE's atlas: its labels / interpretations are scored, and the per-latent scores are
    written into it (scores/) for the app."""
    labels: str | None = field(default=None, metadata=renamed("--class-folders", "--labels"))
    """ImageFolder tree holding the held-out images in class folders (sparse probing; `--labels`
    of clipsae atlas turns vocabulary labels on or off)."""
    evaluator: str | None = None
    """Another encoder for the monosemanticity score: an activation cache of the same images, a
    transformers model (folder or hub id, e.g. facebook/dinov2-base) or an OpenCLIP model."""
    evaluator_pretrained: str | None = None
    """Weights of an OpenCLIP --evaluator: a tag, a checkpoint file, or none (random weights)."""
    compare: tuple[str, ...] = ()
    """Other SAEs (e.g. other seeds) to match this one's decoder against: seed stability."""
    dataset: str | None = None
    """CIFAR-10/100 binary folder or ImageFolder tree: zero-shot accuracy and CE recovered with the
    SAE spliced into the CLIP model its cfg.json names."""
    max_images: int | None = None
    """A seeded random subset of this many --dataset images."""
    score: ScoreRule = "max"
    """Image score from token activations (probing, MS, label quality): max or mean over tokens, or the CLS token."""
    moran_min_patches: int = 5
    """Moran's I: a latent counts on an image when active on at least this many patches ..."""
    moran_max_patch_fraction: float = 0.9
    """... and on at most this fraction of them."""
    moran_min_images: int = 50
    """Moran's I: a latent is scored when it counts on at least this many images."""
    moran_images: int = 10_000
    """Embed caches with patch tokens: images whose patches are encoded for Moran's I (a seeded
    sample; 0: all). Token caches use every image (their patches are the pass's own rows)."""
    label_negatives: int = 10_000
    """Label quality: non-firing images per latent (a seeded sample; all when fewer)."""
    stability_threshold: float = 0.9
    """Seed stability: the decoder cosine at which a matched pair counts."""
    seed: int = 0
    """Seed of every sample and split (probing split, patch and negative samples)."""
    block_mb: float = 512
    """Memory budget of one block of latent activations."""
    batch_size: int = 64
    """Images per forward pass (evaluator, CLIP image embeddings, zero-shot)."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""

    def __post_init__(self) -> None:
        if not 0 < self.moran_max_patch_fraction <= 1:
            raise ValueError(f"--moran-max-patch-fraction must be in (0, 1]; got {self.moran_max_patch_fraction}")
        for name in ("moran_min_patches", "moran_min_images", "label_negatives", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1; got {getattr(self, name)}")
        if not self.block_mb > 0:
            raise ValueError(f"--block-mb must be > 0; got {self.block_mb}")


@dataclass(frozen=True)
class CompareConfig:
    """One `clipsae eval compare` run."""

    cards: tuple[str, ...] = field(metadata=POSITIONAL)
    """Card folders (or their card.json files), written by clipsae eval card."""
    out: str = DEFAULT_OUT
    """Output folder: compare.md, compare.csv, compare.json and frontier.png."""
