"""The activation rules, in one place: how pre-activations h become latents f.

    relu       f = relu(h)
    topk       f = relu(h) on the k largest h of each input (along the latent axis), 0 elsewhere
    batchtopk  training: the k·B largest relu(h) over the whole batch of B inputs;
               inference: f = relu(h)·[h > θ_s] with one fixed θ (EMA of the smallest kept value)
    jumprelu   f = h·[h > θ_s] with learned θ_s > 0 (straight-through gradient to θ in training)
    matryoshka batchtopk's rules (training and inference); only its loss differs (nested prefixes)

Three forms of the same rules, tested equal to each other:
- `activate`     dense latents in any layout (`latent_dim` names the latent axis: -1 for
                 [inputs, latents], 0 for the atlas's latent-major [latents, inputs]);
- `kept_entries` the (input, latent, h) entries a training batch keeps, sorted by input, for
                 the sparse training path that never builds a dense latent gradient;
- `elementwise`  the rule without competition between latents: what one latent does on one
                 input by itself. Exact for relu, jumprelu and batchtopk at inference; for topk
                 it is relu(h), the latent's drive (the top-k needs every latent of the input).

Not handled here: the pre-activation itself and normalisation (`sae.py`).
"""

from __future__ import annotations

import torch
from torch import Tensor

THRESHOLD_ARCHS = frozenset({"jumprelu", "batchtopk", "matryoshka"})
"""Architectures whose inference rule is an element-wise threshold θ_s."""
BATCH_ARCHS = frozenset({"batchtopk", "matryoshka"})
"""Architectures that keep the k·B largest activations of a training batch (and, at inference,
apply the fixed threshold θ learned as the EMA of the smallest kept value)."""


def _rectangle(z: Tensor) -> Tensor:
    return ((z > -0.5) & (z < 0.5)).to(z.dtype)


def _along(threshold_s: Tensor, h: Tensor, latent_dim: int) -> Tensor:
    """θ [S] shaped to broadcast against h along its latent axis."""
    shape = [1] * h.dim()
    shape[latent_dim] = -1
    return threshold_s.view(shape)


def elementwise(
    h: Tensor, architecture: str, threshold_s: Tensor | None = None, latent_dim: int = -1, inplace: bool = False
) -> Tensor:
    """The per-element rule: relu(h), or relu(h)·[h > θ] for the threshold architectures."""
    if architecture in THRESHOLD_ARCHS:
        assert threshold_s is not None, f"{architecture} needs its threshold"
        theta = _along(threshold_s, h, latent_dim)
        keep = h > theta
        f = h.clamp_min_(0) if inplace else h.clamp_min(0)
        return f.mul_(keep) if inplace else f * keep
    return h.clamp_min_(0) if inplace else h.clamp_min(0)


class _JumpReLU(torch.autograd.Function):
    """f = h·[h > θ]; ∂f/∂h = [h > θ]; ∂f/∂θ = −(θ/ε)·rect((h − θ)/ε) (Rajamanoharan et al.)."""

    @staticmethod
    def forward(ctx, h: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(h, threshold)
        ctx.bandwidth = bandwidth
        return elementwise(h, "jumprelu", threshold)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        h, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_h = grad_out * (h > threshold)
        grad_t = (-(threshold / bw) * _rectangle((h - threshold) / bw) * grad_out).sum(dim=0)
        return grad_h, grad_t, None


class _Step(torch.autograd.Function):
    """H(h − θ) with ∂/∂θ = −(1/ε)·rect((h − θ)/ε) and no gradient to h (JumpReLU's L0)."""

    @staticmethod
    def forward(ctx, h: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(h, threshold)
        ctx.bandwidth = bandwidth
        return (h > threshold).to(h.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        h, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_t = (-(1.0 / bw) * _rectangle((h - threshold) / bw) * grad_out).sum(dim=0)
        return torch.zeros_like(h), grad_t, None


def step_l0(h_bs: Tensor, threshold_s: Tensor, bandwidth: float) -> Tensor:
    """[h > θ] with JumpReLU's straight-through gradient to θ (its L0 penalty)."""
    return _Step.apply(h_bs, threshold_s, bandwidth)


def batch_keep_count(k: int, h: Tensor, latent_dim: int = -1) -> int:
    """k·B for a batch of B inputs (capped at the batch's size)."""
    return min(k * (h.numel() // h.shape[latent_dim]), h.numel())


def activate(
    h: Tensor,
    architecture: str,
    k: int | None = None,
    threshold_s: Tensor | None = None,
    training: bool = False,
    latent_dim: int = -1,
    bandwidth: float = 1e-3,
) -> Tensor:
    """Dense latents f from pre-activations h (same shape), by the architecture's rule.

    `training` selects batchtopk's batch rule and jumprelu's straight-through gradient."""
    if architecture == "topk":
        assert k is not None, "topk needs k"
        vals, idx = h.topk(k, dim=latent_dim, sorted=False)
        return torch.zeros_like(h).scatter_(latent_dim, idx, vals.clamp_min(0))
    if architecture in BATCH_ARCHS and training:
        assert k is not None, f"{architecture} needs k"
        flat = h.clamp_min(0).flatten()
        vals, idx = flat.topk(batch_keep_count(k, h, latent_dim), sorted=False)
        return torch.zeros_like(flat).scatter_(0, idx, vals).view_as(h)
    if architecture == "jumprelu" and training and latent_dim in (-1, h.dim() - 1):
        return _JumpReLU.apply(h, threshold_s, bandwidth)
    return elementwise(h, architecture, threshold_s, latent_dim)


@torch.no_grad()
def kept_entries(h_bs: Tensor, architecture: str, k: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(rows, cols, h[rows, cols]) of the latents a training batch keeps, sorted by row: relu's
    positive entries, topk's k per row, batchtopk's k·B of the batch. Their activations are
    relu(h) there, exactly `activate(h, training=True)` at those positions and 0 elsewhere;
    the values come from the selection itself (no gather)."""
    n_batch, d_sae = h_bs.shape
    if architecture == "relu":
        positive = h_bs > 0
        rows, cols = positive.nonzero(as_tuple=True)  # row-major, so sorted by row
        return rows, cols, h_bs[positive]
    if architecture == "topk":
        vals, cols = h_bs.topk(k, dim=-1, sorted=False)
        rows = torch.arange(n_batch, device=h_bs.device).repeat_interleave(k)
        return rows, cols.flatten(), vals.flatten()
    if architecture in BATCH_ARCHS:
        vals, flat = h_bs.flatten().topk(batch_keep_count(k, h_bs), sorted=False)
        flat, order = flat.sort()
        return flat // d_sae, flat % d_sae, vals[order]
    raise ValueError(f"{architecture} has no sparse training path")
