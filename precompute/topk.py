"""Pure functions for the atlas and `link`: per-image scores from token activations, an exact,
associative running top-k per latent, and a top-k per row of ragged (row, id, value) entries.

Layout: latents are rows. The running state is (values [F, k], ids [F, k]), sorted; a block
of scores is [F, b]. merge(merge(a, b), c) == merge(a, merge(b, c)) == the top-k of
everything, so per-block, per-shard and per-rank results combine in any grouping. Ties
between equal values go to the smaller id (blocks and ranks are merged in ascending id
order, and every selection here is stable), so the grouping never changes the result.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .configs import ScoreRule


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
    return (
        torch.full((n_latents, k), float("-inf"), device=device),
        torch.full((n_latents, k), -1, dtype=torch.int64, device=device),
    )


def merge_topk_entries(
    vals_sk: Tensor, ids_sk: Tensor, rows: Tensor, ids: Tensor, vals: Tensor
) -> tuple[Tensor, Tensor]:
    """Merge new (latent row, image id, value) entries into the running top-k.

    Entries must be grouped by row, with ids ascending within a row and larger than the
    running ids (later images). Entries at or below a latent's current k-th value are
    dropped first (a tie goes to the earlier, smaller id), so the padded merge buffer is
    only as wide as the most crowded latent's surviving entries."""
    k = vals_sk.shape[1]
    keep = vals > vals_sk[rows, -1]
    rows, ids, vals = rows[keep], ids[keep], vals[keep]
    if rows.numel() == 0:
        return vals_sk, ids_sk
    n_per = torch.bincount(rows, minlength=vals_sk.shape[0])
    starts = torch.cumsum(n_per, 0) - n_per
    slot = torch.arange(rows.numel(), device=rows.device) - starts[rows]
    m = int(n_per.max())
    buf_v = torch.full((vals_sk.shape[0], m), float("-inf"), dtype=vals_sk.dtype, device=vals_sk.device)
    buf_i = torch.full((vals_sk.shape[0], m), -1, dtype=torch.int64, device=vals_sk.device)
    buf_v[rows, slot] = vals
    buf_i[rows, slot] = ids
    cand_v = torch.cat([vals_sk, buf_v], dim=1)
    pos = cand_v.argsort(dim=1, descending=True, stable=True)[:, :k]  # stable: ties keep the smaller id
    return cand_v.gather(1, pos), torch.cat([ids_sk, buf_i], dim=1).gather(1, pos)


def merge_topk(vals_sk: Tensor, ids_sk: Tensor, new_vals_sb: Tensor, new_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Per latent (row), the k largest of the running values and a dense block [F, b] of
    later (larger) ids. `new_ids` is [b] (image ids shared by all latents) or [F, b], ascending
    along each row (another running top-k of later images qualifies: ties are sorted by id)."""
    k = vals_sk.shape[1]
    if new_vals_sb.shape[1] > k:  # the block's candidates: its top-k and anything tied with the k-th
        kth = new_vals_sb.topk(k, dim=1).values[:, -1:]
        rows, cols = (new_vals_sb >= kth).nonzero(as_tuple=True)
    else:
        rows, cols = torch.ones_like(new_vals_sb, dtype=torch.bool).nonzero(as_tuple=True)
    ids = new_ids[cols] if new_ids.dim() == 1 else new_ids[rows, cols]
    return merge_topk_entries(vals_sk, ids_sk, rows, ids, new_vals_sb[rows, cols])


def finalize_topk(vals_sk: Tensor, ids_sk: Tensor) -> tuple[Tensor, Tensor]:
    """[F, k] sorted by decreasing value; slots with no active image get id −1, value 0."""
    order = vals_sk.argsort(dim=1, descending=True, stable=True)
    vals = vals_sk.gather(1, order)
    ids = ids_sk.gather(1, order)
    inactive = ~(vals > 0)
    return vals.masked_fill(inactive, 0.0).contiguous(), ids.masked_fill(inactive, -1).contiguous()


def segment_topk(
    rows: Tensor, ids: Tensor, vals: Tensor, n_rows: int, k: int, payload: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per row, the k entries of largest value among ragged (row, id, value) entries in any
    order; ties go to the smaller id. (row, id) pairs must be unique and values not NaN.

    Returns values [n_rows, k] (−inf where a row has fewer entries), ids [n_rows, k] (−1
    there) and, when given, the chosen entries' `payload` [n_rows, k] (0 there). Entries
    below a row's k-th value are dropped first (`grouped_kth`); the rest are laid out one
    row each and sorted by id, then (stably) by value."""
    dev = vals.device
    if rows.numel() > 1 and not bool((rows[1:] >= rows[:-1]).all()):
        order = torch.sort(rows, stable=True).indices
        rows, ids, vals = rows[order], ids[order], vals[order]
        payload = payload[order] if payload is not None else None
    deg = torch.bincount(rows, minlength=n_rows) if rows.numel() else torch.zeros(n_rows, dtype=torch.int64, device=dev)
    if rows.numel() and int(deg.max()) > 2 * k:  # keep each row's k best (and their ties)
        keep = (vals >= grouped_kth(rows, vals, n_rows, k)[rows]).nonzero().flatten()
        rows, ids, vals = rows[keep], ids[keep], vals[keep]
        payload = payload[keep] if payload is not None else None
        deg = torch.bincount(rows, minlength=n_rows)
    width = max(k, int(deg.max()) if rows.numel() else 0)
    slot = torch.arange(rows.numel(), device=dev) - (torch.cumsum(deg, 0) - deg)[rows]
    none = torch.iinfo(torch.int64).max
    buf_v = torch.full((n_rows, width), float("-inf"), dtype=vals.dtype, device=dev)
    buf_i = torch.full((n_rows, width), none, dtype=torch.int64, device=dev)
    buf_v[rows, slot], buf_i[rows, slot] = vals, ids
    pos = buf_i.argsort(dim=1, stable=True)  # by id, then stably by value: ties keep the smaller id
    pos = pos.gather(1, buf_v.gather(1, pos).argsort(dim=1, descending=True, stable=True))[:, :k]
    out_v, out_i = buf_v.gather(1, pos), buf_i.gather(1, pos)
    out_i[out_i == none] = -1
    out_p = None
    if payload is not None:
        buf_p = torch.zeros((n_rows, width), dtype=payload.dtype, device=dev)
        buf_p[rows, slot] = payload
        out_p = buf_p.gather(1, pos)
    return out_v, out_i, out_p


def grouped_kth(groups: Tensor, vals: Tensor, n_groups: int, k: int) -> Tensor:
    """The k-th largest value of each group (−inf where a group has fewer than k entries),
    for entries grouped by group (any order within a group). Entries ≥ it hold the group's
    top k (and its ties), so `segment_topk` on those alone is exact. Groups are laid out in
    padded rows: all at once when that costs at most 4× the entries, else in buckets of
    similar length (at most 4× each bucket's entries)."""
    dev = vals.device
    kth = torch.full((n_groups,), float("-inf"), dtype=vals.dtype, device=dev)
    if groups.numel() == 0:
        return kth
    deg = torch.bincount(groups, minlength=n_groups)
    slot = torch.arange(groups.numel(), device=dev) - (torch.cumsum(deg, 0) - deg)[groups]
    longest = int(deg.max())
    if longest <= k:
        return kth
    if n_groups * longest <= 4 * groups.numel():  # one padded matrix
        buf = torch.full((n_groups, longest), float("-inf"), dtype=vals.dtype, device=dev)
        buf[groups, slot] = vals
        return buf.topk(k, dim=1).values[:, -1]
    low, width = k, 4 * k
    while low < longest:
        in_bucket = (deg > low) & (deg <= width)
        gid = in_bucket.nonzero().flatten()
        if gid.numel():
            row = torch.full((n_groups,), -1, dtype=torch.int64, device=dev)
            row[gid] = torch.arange(gid.numel(), device=dev)
            e = in_bucket[groups].nonzero().flatten()
            buf = torch.full((gid.numel(), width), float("-inf"), dtype=vals.dtype, device=dev)
            buf[row[groups[e]], slot[e]] = vals[e]
            kth[gid] = buf.topk(k, dim=1).values[:, -1]
        low, width = width, 4 * width
    return kth
