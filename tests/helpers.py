"""Builders for tiny real models and image files used across the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tiny_clip_config(folder: Path) -> str:
    """An OpenCLIP config of a 3-block, 32-wide ViT on 32 px images (4x4 patches + CLS)."""
    path = folder / "clipsae-tiny-vit.json"
    path.write_text(json.dumps(TINY_CLIP))
    return str(path)


def write_tiny_kandinsky_prior(folder: Path) -> str:
    """A folder laid out like kandinsky-2-2-prior's image_encoder/ + image_processor/, random weights."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        projection_dim=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    CLIPVisionModelWithProjection(cfg).eval().save_pretrained(folder / "image_encoder")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder / "image_processor"
    )
    return str(folder)


def write_images(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (40, 48)) -> list[Path]:
    """n random RGB images, alternating PNG and JPEG, some in a sub-folder."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = folder / ("sub" if i % 3 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        p = sub / f"img_{i:03d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def build_tiny_clip_atlas(folder: Path, n_images: int = 10, d_sae: int = 24, k: int = 4, labels: bool = False) -> Path:
    """Images -> tiny CLIP `embed` cache with patch tokens -> a random SAE -> its atlas (labels
    only if asked: they embed ~2k words). Returns the atlas folder; the images, cache and SAE
    sit beside it."""
    import torch

    from precompute.activations import EmbedConfig, run_embed
    from precompute.atlas import AtlasConfig, build_atlas
    from precompute.encoders import EncoderSpec
    from sae_core.config import SAEConfig
    from sae_core.io import save_sae
    from sae_core.sae import SparseAutoencoder

    write_images(folder / "imgs", n_images)
    spec = EncoderSpec(model=write_tiny_clip_config(folder), pretrained="none", patch_tokens=True)
    run_embed(EmbedConfig(images=str(folder / "imgs"), out=str(folder / "cache"), encoder=spec, workers=0))
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=d_sae), generator=torch.Generator().manual_seed(0))
    save_sae(sae, folder / "sae")
    build_atlas(
        AtlasConfig(
            acts=str(folder / "cache"), sae=str(folder / "sae"), out=str(folder / "atlas"), top_images=k, labels=labels
        )
    )
    return folder / "atlas"


def kill_training_at(monkeypatch, step: int, npy, out: Path, specs, cfg) -> None:
    """Run `train` into `out` and kill it (KeyboardInterrupt) when the trainer reaches `step`,
    as a Ctrl-C or a lost machine would; the trainer is restored afterwards."""
    import pytest

    from sae_core.train import train
    from sae_core.trainer import SAETrainer

    real_step = SAETrainer.step

    def crash(self, x, at, *a, **kw):
        if at == step:
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, x, at, *a, **kw)

    monkeypatch.setattr(SAETrainer, "step", crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(npy, out, specs, cfg)
    finally:
        monkeypatch.setattr(SAETrainer, "step", real_step)
