"""Kandinsky 2.2 prior and decoder at full size with random weights, from the published
configs in `configs/` (see README.md there for where each file came from), saved with
`save_pretrained` into local diffusers folders that `app.kandinsky.load_pipelines` loads.

    python benchmarks/gpu/kandinsky_full.py --count     # parameter counts (meta device, ~1 s)

The tokenizer's vocabulary files cannot be downloaded: it is a CLIPTokenizer (the published
class, model_max_length 77) over single byte-level characters, built locally
(`app.kandinsky._tiny_tokenizer`); prompts tokenise into more, shorter tokens, which costs
the text encoder nothing (it always runs on 77 positions).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401 - puts the repo on sys.path

CONFIGS = Path(__file__).resolve().parent / "configs"
PRIOR_CFG, DECODER_CFG = CONFIGS / "kandinsky-2-2-prior", CONFIGS / "kandinsky-2-2-decoder"

MODEL_CARD = {"prior": 1.0e9, "unet": 1.22e9, "movq": 67e6, "image_encoder": 1.8e9, "text_encoder": None}
"""Published sizes (the model card; ViT-bigG/14's image tower: 1.8B in OpenCLIP's table)."""


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def build_modules(device: str | torch.device = "meta", dtype: torch.dtype | None = None) -> dict[str, torch.nn.Module]:
    """The five networks from the configs, random weights on `device` (meta: shapes only), each
    cast to `dtype` as soon as it is built (peak memory: one network in float32)."""
    from diffusers import PriorTransformer, UNet2DConditionModel, VQModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    makers = {
        "prior": lambda: PriorTransformer.from_config(_json(PRIOR_CFG / "prior/config.json")),
        "image_encoder": lambda: CLIPVisionModelWithProjection(
            CLIPVisionConfig.from_pretrained(PRIOR_CFG / "image_encoder")
        ),
        "text_encoder": lambda: CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(PRIOR_CFG / "text_encoder")),
        "unet": lambda: UNet2DConditionModel.from_config(_json(DECODER_CFG / "unet/config.json")),
        "movq": lambda: VQModel.from_config(_json(DECODER_CFG / "movq/config.json")),
    }
    mods = {}
    with torch.device(device):
        for name, make in makers.items():
            m = make()
            mods[name] = m.to(dtype) if dtype is not None else m
    return mods


def parameter_counts() -> dict[str, int]:
    return {name: sum(p.numel() for p in m.parameters()) for name, m in build_modules("meta").items()}


def save_full(folder: Path, device: str, dtype: torch.dtype = torch.float16) -> tuple[Path, Path, dict[str, float]]:
    """Build on `device` (random init is fast there), cast to `dtype`, save both pipelines;
    returns (prior folder, decoder folder, seconds per stage)."""
    from diffusers import DDPMScheduler, KandinskyV22Pipeline, KandinskyV22PriorPipeline, UnCLIPScheduler
    from transformers import CLIPImageProcessor

    from app.kandinsky import _tiny_tokenizer

    t0 = time.perf_counter()
    torch.manual_seed(0)
    mods = {k: m.eval() for k, m in build_modules(device, dtype).items()}
    with torch.no_grad():  # the random init leaves clip_std at 0, and post-processing multiplies by it
        mods["prior"].clip_std.fill_(1.0)
    (folder / "tokenizer").mkdir(parents=True, exist_ok=True)
    prior = KandinskyV22PriorPipeline(
        prior=mods["prior"],
        image_encoder=mods["image_encoder"],
        text_encoder=mods["text_encoder"],
        tokenizer=_tiny_tokenizer(folder / "tokenizer"),
        scheduler=UnCLIPScheduler.from_config(_json(PRIOR_CFG / "scheduler/scheduler_config.json")),
        image_processor=CLIPImageProcessor.from_pretrained(PRIOR_CFG / "image_processor"),
    )
    decoder = KandinskyV22Pipeline(
        unet=mods["unet"],
        movq=mods["movq"],
        scheduler=DDPMScheduler.from_config(_json(DECODER_CFG / "scheduler/scheduler_config.json")),
    )
    built = time.perf_counter()
    prior.save_pretrained(folder / "prior")
    decoder.save_pretrained(folder / "decoder")
    saved = time.perf_counter()
    del prior, decoder, mods
    return folder / "prior", folder / "decoder", {"build": built - t0, "save": saved - built}


def save_tiny(folder: Path) -> tuple[Path, Path, dict[str, float]]:
    """The tiny random pipelines of the tests, saved the same way (for --smoke)."""
    from app.kandinsky import make_tiny_pipelines

    t0 = time.perf_counter()
    pipes = make_tiny_pipelines(seed=0)
    built = time.perf_counter()
    pipes.prior.save_pretrained(folder / "prior")
    pipes.decoder.save_pretrained(folder / "decoder")
    return folder / "prior", folder / "decoder", {"build": built - t0, "save": time.perf_counter() - built}


def folder_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e9


if __name__ == "__main__":
    if "--count" in sys.argv:
        for name, n in parameter_counts().items():
            card = MODEL_CARD[name]
            print(f"{name:14s} {n / 1e6:9.1f}M" + (f"   (model card: {card / 1e6:.0f}M)" if card else ""))
