"""Each latent's nearest latents by decoder direction (cosine), exact, computed once at atlas
time so a latent page reads a row instead of searching F directions on every page (the
table costs F²·d multiply-adds once).

Blocks of rows are fixed by the block size alone, never by how many ranks share the work,
so every row's scores come from the same matrix product shapes: one process and N ranks
write the same bits.
"""

from __future__ import annotations

import numpy as np
import torch

from sae_core.progress import Progress
from sae_core.sae import SparseAutoencoder


def unit_directions(sae: SparseAutoencoder) -> torch.Tensor:
    """The decoder rows as unit float32 vectors [F, d] (what latents.faiss indexes)."""
    w = sae.W_dec.detach().float()
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


def block_rows(n_latents: int, block_mb: float) -> int:
    """Rows per block: a [rows, F] float32 score block within `block_mb`."""
    return max(1, int(block_mb * 2**20) // (4 * n_latents))


def nearest_latents(
    directions: torch.Tensor, k: int, blocks: range, rows_per_block: int
) -> tuple[np.ndarray, np.ndarray]:
    """(cosines [R, k] float32, ids [R, k] int64) of the rows of the given blocks, best first,
    excluding the latent itself (ties: the smaller id)."""
    f = directions.shape[0]
    k = min(k, f - 1)
    out_c, out_i = [], []
    bar = Progress(len(blocks) * rows_per_block, "atlas neighbours", unit="latent")
    with torch.inference_mode():
        for b in blocks:
            lo, hi = b * rows_per_block, min(f, (b + 1) * rows_per_block)
            if lo >= hi:
                break
            s = directions[lo:hi] @ directions.T
            s[torch.arange(hi - lo, device=s.device), torch.arange(lo, hi, device=s.device)] = float("-inf")
            vals, ids = s.topk(k, dim=1)
            order = torch.argsort(ids, dim=1, stable=True)  # by id, then stably by value: ties keep the smaller id
            order = order.gather(1, vals.gather(1, order).argsort(dim=1, descending=True, stable=True))
            out_c.append(vals.gather(1, order).cpu().numpy().astype(np.float32))
            out_i.append(ids.gather(1, order).cpu().numpy())
            bar.update(hi - lo)
    bar.close()
    if not out_c:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(out_c), np.concatenate(out_i)
