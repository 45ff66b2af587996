"""The evaluation stage's configs: one dataclass per `clipsae eval` command, whose fields
are its flags (`sae_core.cliargs`); `clipsae eval X --help` reads only this module (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from precompute.configs import ScoreRule, Tokens
from precompute.selection import parse_latents
from sae_core.cliargs import POSITIONAL, renamed

DEFAULT_OUT = "eval_results"
"""Where every evaluation command writes unless told (`--out`)."""


@dataclass(frozen=True)
class ModelChoice:
    """The encoder the SAEs read; each field overrides what the SAE's cfg.json records."""

    model: str | None = None
    """OpenCLIP model name or config .json (default: what the SAE's cfg.json records)."""
    pretrained: str | None = None
    """OpenCLIP tag, local checkpoint or none (default: the SAE's)."""
    hook: str | None = None
    """embed or blocks.L.{resid_post|mlp_out|attn_out} (default: the SAE's)."""
    tokens: Tokens | None = None
    """cls, spatial or all: the token positions the SAE reads at a block hook (default: the SAE's)."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""


@dataclass(frozen=True)
class ReconConfig:
    """One `clipsae eval recon` run."""

    acts: str
    """Held-out activations: a cache folder or a .npy matrix."""
    sae: tuple[str, ...]
    """SAE folder(s); a folder of SAEs (a sweep) gives one row each."""
    out: str = DEFAULT_OUT
    """Output folder."""
    batch_size: int = 8192
    """Rows per forward pass."""
    max_rows: int | None = None
    """Evaluate on the first N rows only (default: all)."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""


@dataclass(frozen=True)
class ZeroshotConfig:
    """One `clipsae eval zeroshot` run."""

    dataset: str
    """CIFAR-10/100 binary folder or an ImageFolder tree."""
    sae: tuple[str, ...]
    """SAE folder(s); a folder of SAEs (a sweep) gives one row each."""
    out: str = DEFAULT_OUT
    """Output folder."""
    split: Literal["test", "train"] = "test"
    """Which split to classify."""
    classes: str | None = field(default=None, metadata=renamed("--class-names", "--classes"))
    """Text file: one class name per line, in label order (default: the dataset's names;
    `--classes` of eval segment picks classes)."""
    templates: str | None = None
    """cifar, openai, simple or a text file (one '{}' template a line) (default: the dataset's)."""
    logit_scale: float | None = None
    """Temperature of the logits (default: the model's own)."""
    max_images: int | None = None
    """A seeded random subset of this many images (default: all)."""
    batch_size: int = 64
    """Images encoded at once."""
    clip: ModelChoice = ModelChoice()
    """The encoder (default: what the SAE's cfg.json records)."""


@dataclass(frozen=True)
class ProbeConfig:
    """One `clipsae eval probe` run."""

    dataset: str
    """CIFAR-10/100 binary folder or ImageFolder with train/ and test/."""
    sae: tuple[str, ...]
    """SAE folder(s); a folder of SAEs (a sweep) gives one row each."""
    out: str = DEFAULT_OUT
    """Output folder."""
    C: float = 1.0
    """Inverse L2 regularisation strength of the logistic regression."""
    max_iter: int = 1000
    """Iterations of the logistic regression's solver."""
    max_images: int | None = None
    """A seeded random subset of each split (default: all)."""
    batch_size: int = 64
    """Images encoded at once."""
    clip: ModelChoice = ModelChoice()
    """The encoder (default: what the SAE's cfg.json records)."""


@dataclass(frozen=True)
class HeatmapConfig:
    """One `clipsae eval heatmap` run."""

    image: str
    """The image file."""
    text: str
    """The text whose similarity to the image is explained."""
    sae: str
    """One SAE folder."""
    latent: tuple[int, ...] | None = None
    """Latents to edit (default: the 3 most active on the image)."""
    scale: float = 0.0
    """Multiplier for those latents (0 removes them)."""
    method: Literal["grad_x_input", "grad_norm"] = "grad_x_input"
    """Saliency: gradient × input, or the gradient's norm, per patch."""
    out: str = DEFAULT_OUT
    """Output folder."""
    batch_size: int = 64
    """Images encoded at once (one here; the flag is shared with the other eval commands)."""
    clip: ModelChoice = ModelChoice()
    """The encoder (default: what the SAE's cfg.json records)."""


@dataclass(frozen=True)
class SegmentConfig:
    """One `clipsae eval segment` run."""

    dataset: str
    """ImageFolder tree (PATH/<class>/…, or its test/ or val/ split) or CIFAR binary folder."""
    sae: str
    """One SAE folder (embed with patch tokens, or a block hook)."""
    out: str = DEFAULT_OUT
    """Output folder."""
    classes: str | None = None
    """Comma-separated class names (folder names; default: every class)."""
    latents: str = "5"
    """N (the N most active latents of each class) or ids a,b,c / ranges a-b (these on every class)."""
    examples: int = 4
    """Example images of each class drawn beside its mean image."""
    max_images: int | None = None
    """A seeded random subset of this many images (default: all)."""
    keep_mb: int = 1024
    """Keep the encoder's outputs in memory for the mask pass up to this size (else encode twice)."""
    batch_size: int = 64
    """Images encoded at once."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""
    model: str | None = None
    """OpenCLIP model name or config .json (default: what the SAE's cfg.json records)."""
    pretrained: str | None = None
    """OpenCLIP tag, local checkpoint or none (default: the SAE's)."""
    hook: str | None = None
    """embed or blocks.L.{resid_post|mlp_out|attn_out} (default: the SAE's)."""
    tokens: Tokens | None = None
    """cls, spatial or all: the token positions the SAE reads at a block hook (default: the SAE's)."""

    def __post_init__(self) -> None:
        parse_latents(self.latents)
        for name in ("examples", "batch_size", "keep_mb"):
            if getattr(self, name) < (0 if name == "examples" else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be positive; got {getattr(self, name)}")


@dataclass(frozen=True)
class LatentStatsConfig:
    """One `clipsae eval latents` run."""

    atlas: str
    """An atlas folder (its SAE copy, statistics and, for the train row, its activation cache)."""
    acts: str | None = None
    """Held-out activations of the same encoder and hook: a cache folder or a .npy matrix."""
    labels: str | None = field(default=None, metadata=renamed("--class-folders", "--labels"))
    """ImageFolder tree holding the atlas's images in class folders (for label entropy;
    `--labels` of clipsae atlas turns vocabulary labels on or off)."""
    out: str = DEFAULT_OUT
    """Output folder."""
    batch_size: int = 8192
    """Rows per batch for the metrics."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""


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
