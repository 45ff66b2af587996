"""Sparse training operations: gradients that touch only the kept (input, latent) pairs.

`sparse_preact` passes the kept values h[rows, cols] of h = (x − b_dec) @ W_enc + b_enc (computed
without autograd) with a backward of cost O(n·d) instead of O(B·d_sae·d); `sparse_decode` is
Σ vals·W_dec[cols] per input without a dense [B, d_sae] matrix (sparsify's embedding_bag trick).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class _GatherPreact(torch.autograd.Function):
    """Values h[rows, cols] of h = x_c @ W_enc + b_enc with x_c = x − b_dec, already computed
    without autograd (`vals`, from the top-k that chose the coordinates).

    Gradients go to W_enc, b_enc and b_dec only (the input is data): W_enc's through a sparse
    [d_sae, B] × [B, d] product, b_dec's as −W_enc @ (b_enc's gradient), a matrix-vector
    product instead of a [B, d] input gradient.
    """

    @staticmethod
    def forward(ctx, x_c_bd, W_enc_ds, b_enc_s, b_dec_d, rows_n, cols_n, vals_n):  # type: ignore[override]
        ctx.save_for_backward(x_c_bd, W_enc_ds, rows_n, cols_n)
        return vals_n.clone()

    @staticmethod
    def backward(ctx, g_n):  # type: ignore[override]
        x_c, W_enc, rows, cols = ctx.saved_tensors
        n_batch, d_sae = x_c.shape[0], W_enc.shape[1]
        grad_w = grad_b = grad_b_dec = None
        if ctx.needs_input_grad[1]:
            g_sb = torch.sparse_coo_tensor(torch.stack([cols, rows]), g_n, (d_sae, n_batch), check_invariants=False)
            grad_w = torch.sparse.mm(g_sb, x_c).T
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            grad_b = torch.zeros(d_sae, dtype=g_n.dtype, device=g_n.device).index_add_(0, cols, g_n)
            if ctx.needs_input_grad[3]:
                grad_b_dec = -(W_enc @ grad_b)
        return None, grad_w, grad_b, grad_b_dec, None, None, None


def sparse_preact(
    W_enc_ds: Tensor, b_enc_s: Tensor, b_dec_d: Tensor, x_c_bd: Tensor, rows_n: Tensor, cols_n: Tensor, vals_n: Tensor
) -> Tensor:
    """`vals` = h[rows, cols] (h = x_c @ W_enc + b_enc, x_c = x − b_dec, computed without autograd),
    with gradients to W_enc, b_enc and b_dec (see `_GatherPreact`). `x_c` is treated as data."""
    return _GatherPreact.apply(x_c_bd.detach(), W_enc_ds, b_enc_s, b_dec_d, rows_n, cols_n, vals_n)


def sparse_decode(W_dec_sd: Tensor, rows_n: Tensor, cols_n: Tensor, vals_n: Tensor, n_batch: int) -> Tensor:
    """Σ_n vals·W_dec[cols] per row (rows sorted), without a dense [B, d_sae] matrix."""
    offsets = torch.searchsorted(rows_n, torch.arange(n_batch, device=rows_n.device))
    return F.embedding_bag(cols_n, W_dec_sd, offsets, mode="sum", per_sample_weights=vals_n)
