"""Auxiliary training losses beyond the reconstruction and sparsity terms of `SAEOutput`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .sae import SAEOutput, SparseAutoencoder, recon_error
from .sparse_ops import sparse_decode, sparse_preact


def sparsity_scale(architecture: str, convention: str, sigma: float, d_in: int, d_sae: int) -> float:
    """The factor c that turns the user's λ into the weight of `SAEOutput.sparsity` beside the
    MSE mean over inputs × dims (`mse`), so that loss = mse + c·λ·sparsity.

    mean (seed 001): c = 1. scaled: the loss is FVU + λ·E[Σ_s f_s]/σ (relu) or FVU + λ·E[L0]
    (jumprelu) with σ² = E‖x − E x‖², up to the constant factor σ²/d_in that turns FVU into mse:
    c = σ·d_sae/d_in (relu) or σ²·d_sae/d_in (jumprelu). Unit-norm decoder rows make Σ_s f_s
    the usual Σ_s f_s·‖W_dec[s]‖."""
    if convention == "mean" or architecture not in ("relu", "jumprelu"):
        return 1.0
    return (sigma if architecture == "relu" else sigma**2) * d_sae / d_in


def auxk_loss(sae: SparseAutoencoder, out: SAEOutput, dead_s: Tensor, k_aux: int) -> Tensor:
    """AuxK (Gao et al. 2024, sec. 2.4): reconstruct the residual e = x − x̂ from the k_aux
    largest *dead* pre-activations, scaled by min(n_dead / k_aux, 1) so that it fades as
    latents revive.

    In the reconstruction's units: `recon_error` of (ê, e), the same mean over batch × d_in
    of squared errors as `SAEOutput.mse`. So loss = mse + α·auxk has the ratio of
    sparsify's fvu + α·auxk_loss (both divided by the input's total variance there) and
    α = 1/32 means what it means in Gao et al. A residual-variance denominator instead
    made AuxK up to 15× the MSE at init and killed latents (issue 20).
    """
    n_dead = int(dead_s.sum())
    if n_dead == 0:
        return torch.zeros((), device=out.h_bs.device)
    k = min(k_aux, n_dead)
    residual_bd = (out.x_norm_bd - out.x_hat_norm_bd).detach()
    h = out.h_bs.detach()
    n_batch = h.shape[0]
    # The top-k over the dead columns only (usually few): h[:, dead] instead of a masked copy of h.
    dead_idx = dead_s.nonzero().squeeze(1)
    h_top, pos = h.index_select(1, dead_idx).topk(k, dim=-1, sorted=False)
    cols = dead_idx[pos.flatten()]
    rows = torch.arange(n_batch, device=h.device).repeat_interleave(k)
    vals = F.relu(sparse_preact(sae.W_enc, sae.b_enc, sae.b_dec, out.x_c_bd, rows, cols, h_top.flatten()))
    e_hat = sparse_decode(sae.W_dec, rows, cols, vals, n_batch)
    return recon_error(e_hat, residual_bd) * min(n_dead / k_aux, 1.0)
