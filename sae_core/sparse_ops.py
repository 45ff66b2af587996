"""Sparse training operations: gradients that touch only the kept (input, latent) pairs.

`sparse_preact` gathers h[rows, cols] of h = x_c @ W_enc + b_enc (computed without autograd)
with a backward of cost O(n·d) instead of O(B·d_sae·d); `sparse_decode` is Σ vals·W_dec[cols]
per input without a dense [B, d_sae] matrix (sparsify's embedding_bag trick).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class _GatherPreact(torch.autograd.Function):
    """Values h[rows, cols] of h = x_c @ W_enc + b_enc, already computed without autograd.

    rows/cols are flat coordinates sorted by row, which lets the input gradient be one
    `embedding_bag` with offsets from `searchsorted`.
    """

    @staticmethod
    def forward(ctx, x_c_bd, W_enc_ds, b_enc_s, rows_n, cols_n, vals_n):  # type: ignore[override]
        ctx.save_for_backward(x_c_bd, W_enc_ds, rows_n, cols_n)
        return vals_n.clone()

    @staticmethod
    def backward(ctx, g_n):  # type: ignore[override]
        x_c, W_enc, rows, cols = ctx.saved_tensors
        n_batch, d_sae = x_c.shape[0], W_enc.shape[1]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            g_sb = torch.sparse_coo_tensor(torch.stack([cols, rows]), g_n, (d_sae, n_batch), check_invariants=False)
            grad_w = torch.sparse.mm(g_sb, x_c).T
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(d_sae, dtype=g_n.dtype, device=g_n.device).index_add_(0, cols, g_n)
        if ctx.needs_input_grad[0]:
            offsets = torch.searchsorted(rows, torch.arange(n_batch, device=rows.device))
            grad_x = F.embedding_bag(cols, W_enc.T.contiguous(), offsets, mode="sum", per_sample_weights=g_n)
        return grad_x, grad_w, grad_b, None, None, None


def sparse_preact(W_enc_ds: Tensor, b_enc_s: Tensor, x_c_bd: Tensor, h_bs: Tensor, rows_n: Tensor,
                  cols_n: Tensor) -> Tensor:
    """h[rows, cols] with gradients to W_enc, b_enc and x_c (see `_GatherPreact`)."""
    return _GatherPreact.apply(x_c_bd, W_enc_ds, b_enc_s, rows_n, cols_n, h_bs[rows_n, cols_n])


def sparse_decode(W_dec_sd: Tensor, rows_n: Tensor, cols_n: Tensor, vals_n: Tensor, n_batch: int) -> Tensor:
    """Σ_n vals·W_dec[cols] per row (rows sorted), without a dense [B, d_sae] matrix."""
    offsets = torch.searchsorted(rows_n, torch.arange(n_batch, device=rows_n.device))
    return F.embedding_bag(cols_n, W_dec_sd, offsets, mode="sum", per_sample_weights=vals_n)
