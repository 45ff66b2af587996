"""Auxiliary training losses beyond the reconstruction and sparsity terms of `SAEOutput`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .sae import EPS, SAEOutput, SparseAutoencoder
from .sparse_ops import sparse_decode, sparse_preact


def auxk_loss(sae: SparseAutoencoder, out: SAEOutput, dead_s: Tensor, k_aux: int) -> Tensor:
    """AuxK: reconstruct the residual from the k_aux largest *dead* pre-activations.

    Normalised by the residual's variance (an FVU) and scaled by min(n_dead / k_aux, 1)
    so that it fades as latents revive.
    """
    n_dead = int(dead_s.sum())
    if n_dead == 0:
        return torch.zeros((), device=out.h_bs.device)
    k = min(k_aux, n_dead)
    residual_bd = (out.x_norm_bd - out.x_hat_norm_bd).detach()
    h = out.h_bs.detach()
    n_batch = h.shape[0]
    cols = h.masked_fill(~dead_s, float("-inf")).topk(k, dim=-1, sorted=False).indices.flatten()
    rows = torch.arange(n_batch, device=h.device).repeat_interleave(k)
    vals = F.relu(sparse_preact(sae.W_enc, sae.b_enc, out.x_c_bd, h, rows, cols))
    e_hat = sparse_decode(sae.W_dec, rows, cols, vals, n_batch)
    denom = (residual_bd - residual_bd.mean(dim=0)).pow(2).sum().clamp_min(EPS)
    fvu = (e_hat - residual_bd).pow(2).sum() / denom
    return fvu * min(n_dead / k_aux, 1.0)
