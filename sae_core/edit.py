"""Latent edits spliced back into the activations an SAE reads, in delta form.

    f  = sae.encode(x)                latents
    f' = edit(f)                      multiply / set a latent, or leave f and add a direction
    x' = x + s·(f' − f) @ W_dec [+ Σ v·s·W_dec[i] for "add"]

This equals dec(f') + (x − dec(f)) — the SAE's error term is kept — and is bit-exact when
nothing changes (f' − f is exactly zero). `s` undoes the SAE's input normalisation. The
function is differentiable (gradient heat maps backpropagate through it); steering calls
it under `no_grad`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .sae import SparseAutoencoder

Mode = Literal["multiply", "set", "add"]
MAX_ABS_VALUE = 1000.0
"""Multipliers, set values and added amounts beyond this are refused (they only make noise)."""


@dataclass(frozen=True)
class Edit:
    """One latent edit: `multiply` f_i by value, `set` f_i to value, or `add` value × direction i."""

    latent: int
    mode: Mode
    value: float


def validate_edits(edits: list[Edit], d_sae: int) -> None:
    """Refuse out-of-range latents, unknown modes and non-finite or huge values (ValueError)."""
    for e in edits:
        if isinstance(e.latent, bool) or not isinstance(e.latent, (int, np.integer)):
            raise ValueError(f"latent id must be an integer; got {e.latent!r}")
        if not 0 <= e.latent < d_sae:
            raise ValueError(f"latent {e.latent} is out of range: this SAE has latents 0..{d_sae - 1}")
        if e.mode not in ("multiply", "set", "add"):
            raise ValueError(f"mode must be multiply, set or add; got {e.mode!r}")
        if not isinstance(e.value, (int, float)) or not math.isfinite(e.value):
            raise ValueError(f"the value for latent {e.latent} must be a finite number; got {e.value!r}")
        if abs(e.value) > MAX_ABS_VALUE:
            raise ValueError(f"the value for latent {e.latent} is {e.value:g}; keep it within ±{MAX_ABS_VALUE:g}")


def apply_edits(sae: SparseAutoencoder, x_bd: torch.Tensor, edits: list[Edit]) -> torch.Tensor:
    """The activations x [B, d] with the edits applied in delta form (see the module docstring)."""
    validate_edits(edits, sae.cfg.d_sae)
    x = x_bd.float()
    x_norm, ctx = sae.normalize(x)
    f = sae.activate(sae.pre_activation(x_norm))
    f_new = f.clone()
    add = torch.zeros_like(x)
    for e in edits:
        if e.mode == "multiply":
            f_new[:, e.latent] = f[:, e.latent] * e.value
        elif e.mode == "set":
            f_new[:, e.latent] = e.value
        else:
            add = add + e.value * sae.W_dec[e.latent]
    delta_norm = (f_new - f) @ sae.W_dec + add
    scale = ctx.scale_b1 if ctx.scale_b1 is not None else 1.0
    return (x + scale * delta_norm).to(x_bd.dtype)
