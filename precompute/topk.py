"""Pure functions for the atlas: per-image scores from token activations and an exact,
associative running top-k per latent.

Layout: latents are rows. The running state is (values [F, k], ids [F, k]); a block of
scores is [F, b]. merge(merge(a, b), c) == merge(a, merge(b, c)) == the top-k of
everything, so per-block, per-shard and per-rank results combine in any grouping
(ties aside).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

ScoreRule = Literal["max", "mean", "cls"]


def image_scores(f_sr: Tensor, tokens_per_image: int, rule: ScoreRule = "max", cls_pos: int | None = None) -> Tensor:
    """[F, images·T] token activations (an image's tokens adjacent) -> [F, images] scores:
    max or mean over the image's tokens, or the CLS token's value (`cls_pos`: its
    position among the T rows)."""
    t = tokens_per_image
    if t == 1:
        return f_sr
    f_sbt = f_sr.view(f_sr.shape[0], -1, t)
    if rule == "max":
        return f_sbt.amax(dim=2)
    if rule == "mean":
        return f_sbt.mean(dim=2)
    if cls_pos is None:
        raise ValueError("score rule `cls` needs the CLS token among the cached tokens (--tokens cls or all)")
    return f_sbt[:, :, cls_pos]


def empty_topk(n_latents: int, k: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Values −inf and ids −1: the identity element of `merge_topk`."""
    return (torch.full((n_latents, k), float("-inf"), device=device),
            torch.full((n_latents, k), -1, dtype=torch.int64, device=device))


def merge_topk_entries(vals_sk: Tensor, ids_sk: Tensor, rows: Tensor, ids: Tensor, vals: Tensor) -> tuple[Tensor, Tensor]:
    """Merge new (latent row, image id, value) entries, grouped by row, into the running top-k.

    Entries at or below a latent's current k-th value are dropped first, so the padded
    merge buffer is only as wide as the most crowded latent's surviving entries."""
    k = vals_sk.shape[1]
    keep = vals > vals_sk[rows, -1]
    rows, ids, vals = rows[keep], ids[keep], vals[keep]
    if rows.numel() == 0:
        return vals_sk, ids_sk
    n_per = torch.bincount(rows, minlength=vals_sk.shape[0])
    starts = torch.cumsum(n_per, 0) - n_per
    slot = torch.arange(rows.numel(), device=rows.device) - starts[rows]
    m = int(n_per.max())
    buf_v = torch.full((vals_sk.shape[0], m), float("-inf"), device=vals_sk.device)
    buf_i = torch.full((vals_sk.shape[0], m), -1, dtype=torch.int64, device=vals_sk.device)
    buf_v[rows, slot] = vals
    buf_i[rows, slot] = ids
    top_vals, pos = torch.cat([vals_sk, buf_v], dim=1).topk(k, dim=1)  # sorted: column k-1 is the k-th best
    return top_vals, torch.cat([ids_sk, buf_i], dim=1).gather(1, pos)


def merge_topk(vals_sk: Tensor, ids_sk: Tensor, new_vals_sb: Tensor, new_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Per latent (row), the k largest of the running values and a dense block [F, b].

    `new_ids` is [b] (image ids shared by all latents) or [F, b]."""
    k = vals_sk.shape[1]
    if new_vals_sb.shape[1] > k:  # reduce the block to its own top-k first: bounded merge width
        new_vals_sb, pos = new_vals_sb.topk(k, dim=1)
        new_ids = new_ids[pos] if new_ids.dim() == 1 else new_ids.gather(1, pos)
    elif new_ids.dim() == 1:
        new_ids = new_ids[None, :].expand_as(new_vals_sb)
    rows = torch.arange(new_vals_sb.shape[0], device=new_vals_sb.device).repeat_interleave(new_vals_sb.shape[1])
    return merge_topk_entries(vals_sk, ids_sk, rows, new_ids.flatten(), new_vals_sb.flatten())


def finalize_topk(vals_sk: Tensor, ids_sk: Tensor) -> tuple[Tensor, Tensor]:
    """[F, k] sorted by decreasing value; slots with no active image get id −1, value 0."""
    order = vals_sk.argsort(dim=1, descending=True)
    vals = vals_sk.gather(1, order)
    ids = ids_sk.gather(1, order)
    inactive = ~(vals > 0)
    return vals.masked_fill(inactive, 0.0).contiguous(), ids.masked_fill(inactive, -1).contiguous()
