"""Gradient heat maps (seed 003): saliency of the image–text similarity with respect to the
input patches, and how it changes when SAE latents are zeroed or scaled and the edited
reconstruction is re-injected at the SAE's hook.

    saliency[p] = ReLU(Σ_c ∂cos(image, text)/∂t[p, c] · t[p, c])     (gradient × input)
    or          = ‖∂cos/∂t[p]‖                                        (gradient norm)

where t[p] is patch p's token right after the patch embedding (`visual.conv1`), so the map
has the model's patch-grid shape. Edits are spliced in delta form: with no edit the model
is untouched bit for bit, so any difference between the two maps is the edit's doing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from precompute.images import load_image
from sae_core.edit import Edit
from sae_core.files import atomic_write_with
from sae_core.sae import SparseAutoencoder

from .common import setup
from .configs import HeatmapConfig
from .report import Column, write_table
from .splice import SpliceFn, SplicedClip, edit

Method = Literal["grad_x_input", "grad_norm"]


def saliency(
    clip: SplicedClip,
    pixels: torch.Tensor,
    text_emb: torch.Tensor,
    fn: SpliceFn | None = None,
    method: Method = "grad_x_input",
) -> tuple[np.ndarray, float]:
    """(map [grid_h, grid_w], cosine similarity) for one preprocessed image [1, 3, H, W]."""
    if pixels.shape[0] != 1:
        raise ValueError("saliency takes one image at a time")
    tokens: dict[str, torch.Tensor] = {}

    def grab(module, inputs, output):
        t = output.detach().requires_grad_(True)
        tokens["t"] = t
        return t

    handle = clip.model.visual.conv1.register_forward_hook(grab)
    try:
        with torch.enable_grad(), torch.autocast(clip.device.type, enabled=False):
            emb = clip.encode(pixels, fn)
            sim = torch.nn.functional.cosine_similarity(emb, text_emb.to(emb)[None], dim=-1)[0]
            (grad,) = torch.autograd.grad(sim, tokens["t"])
    finally:
        handle.remove()
    t = tokens["t"].detach()
    if method == "grad_x_input":
        heat = torch.relu((grad * t).sum(dim=1))[0]
    elif method == "grad_norm":
        heat = grad.norm(dim=1)[0]
    else:
        raise ValueError(f"method must be grad_x_input or grad_norm; got {method!r}")
    return heat.float().cpu().numpy(), float(sim.detach())


@dataclass
class HeatmapComparison:
    base: np.ndarray
    edited: np.ndarray
    sim_base: float
    sim_edited: float

    @property
    def difference(self) -> np.ndarray:
        return self.edited - self.base


def compare(
    clip: SplicedClip,
    sae: SparseAutoencoder,
    pixels: torch.Tensor,
    text_emb: torch.Tensor,
    edits: list[Edit],
    method: Method = "grad_x_input",
) -> HeatmapComparison:
    """The saliency map of the untouched model and of the model with `edits` spliced in."""
    base, sim0 = saliency(clip, pixels, text_emb, None, method)
    edited, sim1 = saliency(clip, pixels, text_emb, edit(sae, edits), method)
    return HeatmapComparison(base, edited, sim0, sim1)


def heat_overlay(
    image: Image.Image, heat: np.ndarray, vmax: float | None = None, signed: bool = False, size: int = 336
) -> Image.Image:
    """Blend a patch-grid map over the image: red for positive values, blue for negative
    (signed maps); opacity ∝ |value| / vmax (vmax: the map's own max |value|)."""
    base = image.convert("RGB").resize((size, size), Image.BICUBIC)
    h = np.asarray(heat, dtype=np.float32)
    vmax = float(np.abs(h).max()) if vmax is None else float(vmax)
    if not np.isfinite(h).all() or vmax <= 0:
        return base
    a = np.clip(np.abs(h) / vmax, 0, 1)
    rgb = np.zeros(h.shape + (3,), dtype=np.float32)
    rgb[h >= 0] = (255, 40, 0)
    if signed:
        rgb[h < 0] = (20, 90, 255)
    grid_rgb = Image.fromarray(rgb.astype(np.uint8), "RGB").resize(base.size, Image.NEAREST)
    alpha = Image.fromarray((a * 0.65 * 255).astype(np.uint8), "L").resize(base.size, Image.BILINEAR)
    return Image.composite(grid_rgb, base, alpha)


def scale_latents(latents: list[int], scale: float) -> list[Edit]:
    """Edits that multiply each latent by `scale` (0 removes it)."""
    return [Edit(int(i), "multiply", float(scale)) for i in latents]


def top_latents(clip: SplicedClip, sae: SparseAutoencoder, pixels: torch.Tensor, n: int) -> list[int]:
    """The n latents most active on this image at the SAE's hook (max over its tokens)."""
    found: list[torch.Tensor] = []

    def peek(acts: torch.Tensor) -> torch.Tensor:
        found.append(sae.encode(acts.reshape(-1, acts.shape[-1]).float()).amax(dim=0))
        return acts

    with torch.no_grad():
        clip.encode(pixels, peek)
    return [int(i) for i in found[0].topk(min(n, found[0].numel())).indices]


HEATMAP_COLUMNS = [
    Column("image", "Image"),
    Column("text", "Text"),
    Column("latents", "Latents"),
    Column("scale", "Scale"),
    Column("sim_base", "Similarity", "{:.4f}"),
    Column("sim_edited", "Similarity (edited)", "{:.4f}"),
    Column("heat_change", "Σ|Δ heat| / Σ heat", "{:.3f}"),
]


def heatmap_main(cfg: HeatmapConfig) -> tuple[str, str]:
    """`clipsae eval heatmap`: the three overlays OUT/<stem>_heat_{base,edited,difference}.png
    and the table OUT/<stem>_heatmap.md, .csv, .json; returns (the table's name, the table)."""
    saes, clip = setup(cfg.sae, cfg.clip)
    sae = saes[0].sae
    image, _ = load_image(cfg.image)
    pixels = clip.preprocess(image)[None].to(clip.device)
    latents = list(cfg.latent or ()) or top_latents(clip, sae, pixels, 3)
    result = compare(clip, sae, pixels, clip.text_embedding(cfg.text), scale_latents(latents, cfg.scale), cfg.method)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    vmax = float(max(result.base.max(), result.edited.max()))
    stem = Path(cfg.image).stem
    files = {
        "base": heat_overlay(image, result.base, vmax),
        "edited": heat_overlay(image, result.edited, vmax),
        "difference": heat_overlay(image, result.difference, signed=True),
    }
    for key, im in files.items():
        atomic_write_with(out / f"{stem}_heat_{key}.png", lambda tmp, im=im: im.save(tmp, format="PNG"))
    row = {
        "image": cfg.image,
        "text": cfg.text,
        "latents": " ".join(map(str, latents)),
        "scale": cfg.scale,
        "sim_base": result.sim_base,
        "sim_edited": result.sim_edited,
        "heat_change": float(abs(result.difference).sum() / max(abs(result.base).sum(), 1e-12)),
    }
    name = f"{stem}_heatmap"
    table = write_table(
        out,
        name,
        [row],
        HEATMAP_COLUMNS,
        title="Gradient heat map",
        notes=f"Overlays: {', '.join(f'{stem}_heat_{k}.png' for k in files)} (difference: red = more, "
        "blue = less salient after the edit).",
    )
    return name, table
