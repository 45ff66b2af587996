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
import numbers
from dataclasses import dataclass
from typing import Any, Literal

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


def latent_id(value: Any, n_latents: int, text: bool = False) -> int:
    """The one latent-id rule: a whole number in [0, n_latents), given as an int or a whole
    float (2.0) — or, with `text=True` (deep links, text boxes), a numeric string ("12").
    Anything else (2.7, "abc", NaN, True, out of range) is a ValueError saying what is
    allowed; nothing is ever truncated or rounded."""
    allowed = f"latent must be a whole number from 0 to {n_latents - 1} (an integer)"
    if isinstance(value, (bool, np.bool_)) or value is None or (isinstance(value, str) and not text):
        raise ValueError(f"{allowed}; got {value!r}")
    if isinstance(value, (int, np.integer)):
        number = int(value)
    else:
        try:
            as_float = float(value.strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{allowed}; got {value!r}") from None
        if not math.isfinite(as_float) or not as_float.is_integer():
            raise ValueError(f"{allowed}; got {value!r}")
        number = int(as_float)
    if not 0 <= number < n_latents:
        raise ValueError(f"latent {number} is out of range: {allowed}")
    return number


def validate_edits(edits: list[Edit], d_sae: int) -> list[Edit]:
    """The edits with checked latent ids; refuses out-of-range or non-whole latents, unknown
    modes, and non-finite or huge values (ValueError naming the edit)."""
    checked = []
    for e in edits:
        latent = latent_id(e.latent, d_sae)
        if e.mode not in ("multiply", "set", "add"):
            raise ValueError(f"mode must be multiply, set or add; got {e.mode!r}")
        if isinstance(e.value, (bool, np.bool_)) or not isinstance(e.value, numbers.Real) or not math.isfinite(e.value):
            raise ValueError(f"the value for latent {latent} must be a finite number; got {e.value!r}")
        if abs(e.value) > MAX_ABS_VALUE:
            raise ValueError(f"the value for latent {latent} is {e.value:g}; keep it within ±{MAX_ABS_VALUE:g}")
        checked.append(Edit(latent, e.mode, float(e.value)))
    return checked


def apply_edits(sae: SparseAutoencoder, x_bd: torch.Tensor, edits: list[Edit]) -> torch.Tensor:
    """The activations x [B, d] with the edits applied in delta form (see the module docstring)."""
    edits = validate_edits(edits, sae.cfg.d_sae)
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
