"""The SAE's input normalisations and their inverses (`SAEConfig.normalize_activations`).

    none                      x
    unit_norm                 x / ‖x‖                      undone: y·‖x‖
    layer_norm (saelens)      (x − μ) / (σ + 1e-5)         undone: y·σ + μ   (σ unbiased; SAELens, ViT-Prisma)
    layer_norm (clipsae-v1)   (x − μ) / (σ + 1e-6)         undone: y·(σ + 1e-6) + μ   (σ biased)
    expected_average_only_in  x · c (c fitted in training)  undone: y / c
    centred_unit_norm         (x − c) / ‖x − c‖  (c fitted)  undone: y·‖x − c‖ + c

unit_norm, layer_norm and centred_unit_norm need each input's own statistics to be undone
(`NormContext`); expected_average_only_in one constant.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import SAEConfig

EPS = 1e-6
LAYER_NORM_EPS = 1e-5
"""ε of the saelens layer_norm variant (SAELens's and ViT-Prisma's run-time layer norm)."""
PER_INPUT_NORMS = frozenset({"unit_norm", "layer_norm", "centred_unit_norm"})
"""Normalisations whose undoing needs each input's own statistics (not one constant)."""


@dataclass
class NormContext:
    """Per-input statistics needed to undo the input normalisation on the output."""

    scale_b1: Tensor | None = None
    shift_b1: Tensor | None = None


def normalize(cfg: SAEConfig, x_bd: Tensor) -> tuple[Tensor, NormContext]:
    """Apply `cfg`'s input normalisation to x [..., d_in]; return the context that undoes it.

    layer_norm follows `cfg.layer_norm_variant`: saelens divides by the unbiased std plus
    1e-5 and multiplies the output back by the std alone (SAELens's and ViT-Prisma's
    formula, not an exact inverse); clipsae-v1 uses the biased std plus 1e-6 both ways."""
    mode = cfg.normalize_activations
    if mode == "none":
        return x_bd, NormContext()
    if mode == "unit_norm":
        scale = x_bd.norm(dim=-1, keepdim=True).clamp_min(EPS)
        return x_bd / scale, NormContext(scale_b1=scale)
    if mode == "centred_unit_norm":
        if cfg.norm_centre is None:
            raise ValueError("normalize_activations=centred_unit_norm needs cfg.norm_centre")
        centre = _centre(cfg.norm_centre, x_bd.device, x_bd.dtype)
        centred = x_bd - centre
        scale = centred.norm(dim=-1, keepdim=True).clamp_min(EPS)
        return centred / scale, NormContext(scale_b1=scale, shift_b1=centre.expand_as(x_bd))
    if mode == "layer_norm":
        mu = x_bd.mean(dim=-1, keepdim=True)
        centred = x_bd - mu
        if cfg.layer_norm_variant == "saelens":
            std = centred.std(dim=-1, keepdim=True)
            return centred / (std + LAYER_NORM_EPS), NormContext(scale_b1=std, shift_b1=mu)
        std = centred.std(dim=-1, keepdim=True, unbiased=False) + EPS
        return centred / std, NormContext(scale_b1=std, shift_b1=mu)
    # expected_average_only_in: one constant fitted on the training data
    factor = cfg.norm_scaling_factor
    if factor is None:
        raise ValueError("normalize_activations=expected_average_only_in needs cfg.norm_scaling_factor")
    return x_bd * factor, NormContext(scale_b1=torch.full_like(x_bd[..., :1], 1.0 / factor))


@functools.lru_cache(maxsize=16)
def _centre(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """cfg.norm_centre as a tensor (built once per device and dtype)."""
    return torch.tensor(values, dtype=dtype, device=device)


def denormalize(y_bd: Tensor, ctx: NormContext) -> Tensor:
    """Map a reconstruction from the normalised space back: y·scale + shift."""
    if ctx.scale_b1 is not None:
        y_bd = y_bd * ctx.scale_b1
    if ctx.shift_b1 is not None:
        y_bd = y_bd + ctx.shift_b1
    return y_bd
