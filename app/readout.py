"""What a steering edit did, in numbers (no gradio).

- Per edit: the latent's activation in the starting embedding → in the steered one
  (the steered embedding re-encoded by the SAE).
- The embedding's shift: ‖x′‖ / ‖x‖ and cos(x, x′). Direct latent edits can push an
  embedding off the region the decoder was trained on (arXiv 2606.31699 reports both
  numbers); we warn when cos < 0.9 or the norm ratio leaves [0.8, 1.25].
- The causal check: re-encode the original and the steered *images* with the prior's own
  image encoder and read the edited latents again. "Did the latent's meaning reach the
  picture?" — an edit whose latent does not move in the steered image did not do what
  the latent means (or the decoder ignored it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sae_core.edit import Edit

from .steer import Generation, Steerer

COSINE_WARN = 0.9
"""Warn when cos(x, x′) falls below this."""
NORM_RATIO_RANGE = (0.8, 1.25)
"""Warn when ‖x′‖ / ‖x‖ leaves this range."""


@dataclass(frozen=True)
class EditReadout:
    """One edit and the latent's activation before and after it."""

    edit: Edit
    before: float
    after: float


@dataclass(frozen=True)
class Shift:
    """How far the edits moved the embedding."""

    norm_ratio: float
    cosine: float

    @property
    def far(self) -> bool:
        """True when the steered embedding is likely out of the decoder's distribution."""
        lo, hi = NORM_RATIO_RANGE
        return self.cosine < COSINE_WARN or not lo <= self.norm_ratio <= hi


@dataclass(frozen=True)
class CausalCheck:
    """A latent read from the re-encoded original and steered images."""

    latent: int
    original: float
    steered: float


@torch.no_grad()
def edit_readout(steerer: Steerer, gen: Generation, edits: list[Edit]) -> tuple[list[EditReadout], Shift]:
    """Per-edit activations before → after, and the embedding's shift."""
    f0, f1 = steerer.latents(gen.x), steerer.latents(gen.x_steered)
    rows = [EditReadout(e, float(f0[e.latent]), float(f1[e.latent])) for e in edits]
    x, y = gen.x.double().flatten(), gen.x_steered.double().flatten()
    nx = float(x.norm())
    ratio = float(y.norm()) / nx if nx > 0 else float("inf")
    cos = float(torch.nn.functional.cosine_similarity(x, y, dim=0)) if nx > 0 else 0.0
    return rows, Shift(norm_ratio=ratio, cosine=cos)


@torch.no_grad()
def causal_check(steerer: Steerer, gen: Generation, latents: list[int]) -> list[CausalCheck]:
    """The given steering latents, read from both images re-encoded by the prior's image encoder."""
    if gen.original is None or not latents:
        return []
    f0 = steerer.latents(steerer.image_embeds(gen.original)[0])
    f1 = steerer.latents(steerer.image_embeds(gen.steered)[0])
    return [CausalCheck(j, float(f0[j]), float(f1[j])) for j in dict.fromkeys(latents)]
