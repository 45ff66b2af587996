"""Pearson correlations between the latents of two SAEs over the same images, from their
sparse codes: exact, in one pass, never forming the dense F_A × F_B product.

For latents a (of A) and b (of B) over n images, with s = Σx, v = n·Σx² − (Σx)²:

    r(a, b) = (n·Σab − s_a·s_b) / sqrt(v_a·v_b)

Σab is non-zero only for co-active pairs (both fire on some image): those come from the
sparse product Aᵀ·B over the codes (scipy on the CPU, cuSPARSE through torch on a GPU), a
chunk of A's latents at a time so memory stays within a budget. Every other pair has
Σab = 0, so r(a, b) = −(s_a/√v_a)·(s_b/√v_b): for a given a, the best of them are the b with
the smallest g_b = s_b/√v_b that are not co-active with a — a short walk down one sorted
list. The top links of a latent are therefore the best of its co-active pairs and of a
few non-co-active ones, the same set the dense computation ranks. A correlation is
undefined (and never a link) when either latent has zero variance (dead or constant).
Ties go to the smaller latent id, so results do not depend on the chunking or the ranks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .topk import grouped_kth, segment_topk

Backend = Literal["auto", "scipy", "torch"]
BYTES_PER_PAIR = 96
"""Working memory per co-active pair of a chunk (sums, keys, correlations, sort buffers)."""


@dataclass
class Side:
    """One atlas's codes over the shared images and its per-latent sums."""

    csr: object  # scipy.sparse.csr_matrix [n, F] float64
    s: Tensor  # [F] float64 Σx
    v: Tensor  # [F] float64 n·Σx² − (Σx)², ≥ 0
    order: Tensor  # alive latents (v > 0) by increasing g = s/√v, ties by id

    @property
    def n_latents(self) -> int:
        return int(self.s.shape[0])


def make_side(csr, device: torch.device) -> Side:
    """Sums and the g-order of a [n, F] CSR matrix of scores (rows: the shared images)."""
    n, f = csr.shape
    lat = csr.indices
    s = np.bincount(lat, weights=csr.data, minlength=f)
    s2 = np.bincount(lat, weights=csr.data * csr.data, minlength=f)
    v = np.maximum(n * s2 - s * s, 0.0)
    alive = np.flatnonzero(v > 0)
    g = s[alive] / np.sqrt(v[alive])
    order = alive[np.lexsort((alive, g))]
    return Side(csr, torch.from_numpy(s).to(device), torch.from_numpy(v).to(device),
                torch.from_numpy(order).to(device))


def pair_counts(at_csr, b: Side) -> np.ndarray:
    """Co-activation events per latent of A (an upper bound on its co-active pairs)."""
    deg_b = np.diff(b.csr.indptr)
    rows = np.repeat(np.arange(at_csr.shape[0]), np.diff(at_csr.indptr))
    return np.bincount(rows, weights=deg_b[at_csr.indices], minlength=at_csr.shape[0]).astype(np.int64)


def chunks(counts: np.ndarray, lo: int, hi: int, budget_pairs: int) -> list[tuple[int, int]]:
    """Consecutive latent ranges within [lo, hi) of at most `budget_pairs` pairs (≥ 1 latent)."""
    out, start, acc = [], lo, 0
    for a in range(lo, hi):
        if acc and acc + counts[a] > budget_pairs:
            out.append((start, a))
            start, acc = a, 0
        acc += int(counts[a])
    if start < hi:
        out.append((start, hi))
    return out


@dataclass
class Pairs:
    """Co-active pairs of a chunk grouped two ways: by A's latent (`rows` local to the chunk,
    then `cols`) and by B's latent (`t_rows` = B's latent, then `t_cols` = A's, local)."""

    rows: Tensor
    cols: Tensor
    sab: Tensor
    t_rows: Tensor
    t_cols: Tensor
    t_sab: Tensor


def pair_sums(at_rows, b_csr, device: torch.device, backend: Backend = "auto") -> Pairs:
    """Σab of the co-active pairs of a chunk: `at_rows` is [C, n] (the chunk's latents of A
    over the images), `b_csr` [n, F_B]."""
    if backend == "auto":
        backend = "torch" if device.type == "cuda" else "scipy"
    if backend == "scipy":
        prod = (at_rows @ b_csr).tocsr()
        prod.sort_indices()
        by_b = prod.tocsc()  # a counting sort: A's latents ascending within each of B's

        def t(x: np.ndarray) -> Tensor:
            return torch.from_numpy(x).to(device)

        def groups(m) -> Tensor:
            return t(np.repeat(np.arange(len(m.indptr) - 1, dtype=np.int64), np.diff(m.indptr)))

        return Pairs(groups(prod), t(prod.indices.astype(np.int64)), t(prod.data),
                     groups(by_b), t(by_b.indices.astype(np.int64)), t(by_b.data))

    def to_torch(m) -> Tensor:
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                       torch.from_numpy(m.indices.astype(np.int64)),
                                       torch.from_numpy(m.data), size=m.shape, device=device)

    with warnings.catch_warnings():  # torch calls its sparse CSR support "beta"
        warnings.simplefilter("ignore", UserWarning)
        prod = (to_torch(at_rows) @ to_torch(b_csr)).to_sparse_coo()
    rows, cols = prod.indices()  # grouped by row, but not sorted within a row
    sab = prod.values()
    by_a = torch.sort(rows * b_csr.shape[1] + cols).indices
    by_b = torch.sort(cols * at_rows.shape[0] + rows).indices
    return Pairs(rows[by_a], cols[by_a], sab[by_a], cols[by_b], rows[by_b], sab[by_b])


def first_absent(rows: Tensor, order: Tensor, present_keys: Tensor, width: int, k: int) -> tuple[Tensor, Tensor]:
    """For each given row, the first k entries of `order` whose key row·width + entry is not in
    the sorted `present_keys`: (rows repeated, entries) of the picks (fewer where `order` runs out)."""
    picked_rows, picked = [], []
    length = min(len(order), 2 * k)
    while rows.numel() and length:
        prefix = order[:length]
        keys = rows[:, None] * width + prefix[None, :]
        if present_keys.numel():
            pos = torch.searchsorted(present_keys, keys).clamp_(max=present_keys.numel() - 1)
            absent = present_keys[pos] != keys
        else:
            absent = torch.ones_like(keys, dtype=torch.bool)
        rank = absent.cumsum(1)
        done = (rank[:, -1] >= k) | (length == len(order))
        take = absent & (rank <= k) & done[:, None]
        r, c = take.nonzero(as_tuple=True)
        picked_rows.append(rows[r])
        picked.append(prefix[c])
        rows = rows[~done]
        length = min(len(order), 4 * length)
    empty = torch.zeros(0, dtype=torch.int64, device=order.device)
    return (torch.cat(picked_rows) if picked_rows else empty), (torch.cat(picked) if picked else empty)


def _correlate(n: int, sab: Tensor, sa: Tensor, va: Tensor, sb: Tensor, vb: Tensor) -> Tensor:
    """Pearson r, −inf where undefined (a zero variance)."""
    den = torch.sqrt(va * vb)
    return torch.where(den > 0, (n * sab - sa * sb) / den, float("-inf"))


def one_direction(n: int, rows: Tensor, ids: Tensor, sab: Tensor, row_side: Side, id_side: Side,
                  row_range: tuple[int, int], id_range: tuple[int, int], top: int) -> tuple[Tensor, Tensor]:
    """Top-`top` (values [R, top], ids) for the rows [r0, r1) of `row_side` against the ids
    [i0, i1) of `id_side`, given the co-active (row − r0, id, Σab) entries sorted by (row, id)."""
    (r0, r1), (i0, i1) = row_range, id_range
    sa, va = row_side.s[r0:r1], row_side.v[r0:r1]
    vals = _correlate(n, sab, sa[rows], va[rows], id_side.s[ids], id_side.v[ids])
    keep = (vals >= grouped_kth(rows, vals, r1 - r0, top)[rows]) & (vals > float("-inf"))
    r, i, vals = rows[keep], ids[keep], vals[keep]  # each row's best co-active entries (ties kept)
    order = id_side.order[(id_side.order >= i0) & (id_side.order < i1)]
    width = id_side.n_latents
    nr, ni = first_absent(torch.nonzero(va > 0).flatten(), order, rows * width + ids, width, top)
    other = _correlate(n, torch.zeros(len(nr), dtype=torch.float64, device=sab.device), sa[nr], va[nr],
                       id_side.s[ni], id_side.v[ni])
    v, idx, _ = segment_topk(torch.cat([r, nr]), torch.cat([i, ni]), torch.cat([vals, other]), r1 - r0, top)
    return v, idx


def chunk_links(n: int, a: Side, b: Side, at_rows, a_range: tuple[int, int], top_ab: int, top_ba: int,
                device: torch.device, backend: Backend = "auto") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For A's latents [a0, a1): their top links into B, and B's top links into this range.

    Returns (ab values [C, top_ab], ab ids, ba values [F_B, top_ba], ba ids)."""
    a0, a1 = a_range
    p = pair_sums(at_rows, b.csr, device, backend)
    ab_v, ab_i = one_direction(n, p.rows, p.cols, p.sab, a, b, (a0, a1), (0, b.n_latents), top_ab)
    ba_v, ba_i = one_direction(n, p.t_rows, p.t_cols + a0, p.t_sab, b, a, (0, b.n_latents), (a0, a1), top_ba)
    return ab_v, ab_i, ba_v, ba_i


def merge_links(parts: list[tuple[Tensor, Tensor]], top: int) -> tuple[Tensor, Tensor]:
    """Per row, the best `top` of several candidate sets [R, top] (−1 ids are empty)."""
    vals = torch.cat([v for v, _ in parts], dim=1)
    ids = torch.cat([i for _, i in parts], dim=1)
    have = ids >= 0
    rows = torch.arange(vals.shape[0], device=vals.device)[:, None].expand_as(ids)[have]
    v, i, _ = segment_topk(rows, ids[have], vals[have], vals.shape[0], top)
    return v, i
