"""The precompute stage's configs: one dataclass per command, whose fields are its flags.

`clipsae embed|export|atlas|link|interpret --help` reads only this module (no torch), and
`sae_core.cliargs` turns every field into the same flag in every command. The modules that
run the commands import their config from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sae_core.cliargs import POSITIONAL, renamed
from sae_core.interop.hooks import canonical_hook

from .hub_ids import BLIP_CAPTIONER, CLIP_MODEL, CLIP_PRETRAINED, KANDINSKY_PRIOR
from .selection import parse_latents

Tokens = Literal["cls", "spatial", "all"]
"""Token positions of a block hook: cls (token 0), spatial (1..T-1) or all."""
ScoreRule = Literal["max", "mean", "cls"]
"""How an image's score comes from its token activations."""
KANDINSKY_ALIASES = {"kandinsky-2-2-prior", "kandinsky", KANDINSKY_PRIOR}
"""Model names that mean the Kandinsky 2.2 prior's image encoder."""
DEFAULT_MAX_PIXELS = 64_000_000
"""Larger images are refused (decompression-bomb guard): 64 MP, e.g. 8000 x 8000."""


@dataclass(frozen=True)
class EncoderSpec:
    """Which model, weights, hook and tokens to extract."""

    model: str = CLIP_MODEL
    """OpenCLIP model name, a local OpenCLIP config `.json`, or `kandinsky-2-2-prior` / a local
    diffusers prior folder."""
    pretrained: str = CLIP_PRETRAINED
    """OpenCLIP pretrained tag, a local checkpoint path, or `none` (random weights)."""
    hook: str = "embed"
    """embed | blocks.L.resid_post | blocks.L.mlp_out | blocks.L.attn_out (SAELens / ViT-Prisma spellings
    such as blocks.L.hook_resid_post are accepted and stored in ours)."""
    tokens: Tokens = "cls"
    """Token positions of a block hook: cls (token 0), spatial (1..T-1) or all."""
    patch_tokens: bool = False
    """For `embed`: also return patch tokens mapped into the embedding space."""
    seed: int = 0
    """Seed of the random weights when pretrained is `none`."""

    def __post_init__(self) -> None:
        hook = canonical_hook(self.hook)  # SAELens / Prisma spellings: blocks.9.hook_resid_post
        if hook is None:
            raise ValueError(
                f"--hook must be embed or blocks.L.{{resid_post|mlp_out|attn_out}} (or the SAELens / "
                f"ViT-Prisma spelling blocks.L.hook_resid_post, ...); got {self.hook!r}"
            )
        object.__setattr__(self, "hook", hook)
        if self.tokens not in ("cls", "spatial", "all"):
            raise ValueError(f"--tokens must be cls, spatial or all; got {self.tokens!r}")
        if self.hook == "embed" and self.tokens != "cls":
            raise ValueError("hook `embed` is one vector per image: use --tokens cls (or a blocks.L hook for tokens)")
        if self.patch_tokens and self.hook != "embed":
            raise ValueError("--patch-tokens maps patch tokens into the embedding space; it needs --hook embed")

    @property
    def is_kandinsky(self) -> bool:
        return self.model in KANDINSKY_ALIASES or (Path(self.model) / "image_encoder").is_dir()


def default_workers() -> int:
    """One core stays with the model: on 2 cores one worker hides the decoding where two compete
    with the model (benchmarks/bench_embed.py compares the pipeline with the bare forward)."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass(frozen=True)
class EmbedConfig:
    """One extraction run (saved as `settings.json`; a resume must match it)."""

    images: str
    """Folder of images (walked recursively) or a list file of paths."""
    out: str
    """Cache folder (created; an unfinished one is resumed)."""
    encoder: EncoderSpec = EncoderSpec()
    """Which model, weights, hook and tokens (its fields are flags of their own)."""
    batch_size: int = 64
    """Images per forward pass."""
    workers: int = field(default_factory=lambda: default_workers())
    """Decode/preprocess worker processes (0: in the main process); default cores − 1, at most 8."""
    shard_size: int = 4096
    """Images per shard (the unit of resuming)."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""
    dtype: Literal["float16", "float32"] = "float16"
    """Storage dtype of the activations."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Images with more pixels are skipped (decompression-bomb guard)."""

    def __post_init__(self) -> None:
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"--dtype must be float16 or float32; got {self.dtype!r}")
        for name in ("batch_size", "shard_size", "max_pixels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0; got {self.workers}")


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
    block_mb: float = 1024
    """Memory budget of one block of latent activations (larger blocks: faster matmuls). Blocks
    start at fixed image offsets and torchrun ranks take whole blocks, so every rank encodes
    exactly the matrices one process would (the same bits on any BLAS)."""
    stats_images: int = 0
    """Images behind the histograms and value bands: a random sample of this many, drawn
    across the whole dataset from --seed (0: every image)."""
    seed: int = 0
    """Seed of the stats sample and of the random choice of value-band images."""
    images_root: str | None = None
    """Where the images live (default: the cache's images_root); the app can override it."""
    masks: bool = True
    """Patch masks of the top images (needs patch tokens in the cache)."""
    labels: bool = True
    """Vocabulary labels (SAEs on the CLIP embed space)."""
    vocab: str | None = None
    """Vocabulary file for labels (default: the bundled visual-concepts list)."""
    max_codes_gb: float = 64.0
    """Refuse an SAE so dense that its sparse codes would exceed this size."""
    neighbours: int = 8
    """Nearest latents stored per latent (exact; F²·d multiply-adds: minutes for 10⁵ latents on a
    CPU, seconds on a GPU); 0: none, the app then searches latents.faiss on each page."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""

    def __post_init__(self) -> None:
        for name in ("top_images", "block_mb", "max_codes_gb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")
        if self.neighbours < 0:
            raise ValueError(f"neighbours must be >= 0; got {self.neighbours}")
        if self.stats_images < 0:
            raise ValueError(f"stats_images must be >= 0 (0: every image); got {self.stats_images}")
        if self.score not in ("max", "mean", "cls"):
            raise ValueError(f"--score must be max, mean or cls; got {self.score!r}")


@dataclass(frozen=True)
class LinkConfig:
    """One `clipsae link` run."""

    atlas_a: str = field(metadata=POSITIONAL)
    """An atlas (e.g. the CLIP one)."""
    atlas_b: str = field(metadata=POSITIONAL)
    """An atlas of the same images (e.g. the Kandinsky-prior one)."""
    top_links: int = 5
    """Linked latents kept per latent, each way."""
    budget_mb: float = 1024
    """Memory for the co-active pairs of one chunk of A's latents."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""

    def __post_init__(self) -> None:
        for name in ("top_links", "budget_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")


@dataclass(frozen=True)
class InterpretConfig:
    """One `clipsae interpret` run."""

    atlas: str = field(metadata=POSITIONAL)
    """An atlas folder (clipsae atlas) whose images are available."""
    captioner: str = BLIP_CAPTIONER
    """BLIP: a hub id from the Hugging Face cache, a local folder, or `tiny` (random weights, a demo)."""
    latents: str | None = None
    """Which latents: N (the N most frequent), ids a,b,c, ranges a-b, or one id 'a,' (default: all)."""
    images: int = field(default=8, metadata=renamed("--images-per-latent", "--images"))
    """Distinct top images captioned per latent (`--images` is embed's image folder)."""
    batch_size: int = 16
    """Images captioned at once."""
    caption_tokens: int = 30
    """Longest caption, in tokens."""
    images_root: str | None = None
    """Where the atlas's images are (default: the atlas's images_root)."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""
    seed: int = 0
    """Seed of the tiny captioner's random weights."""

    def __post_init__(self) -> None:
        for name in ("images", "batch_size", "caption_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0; got {getattr(self, name)}")
        parse_latents(self.latents)  # a bad --latents fails before any model is loaded


@dataclass(frozen=True)
class ExportConfig:
    """One `clipsae export` run."""

    cache: str = field(metadata=POSITIONAL)
    """Activation cache folder."""
    out: str
    """X.npy (X.ids.txt is written beside it)."""
