"""Pearson correlations between the latents of two SAEs over the same images, from their
sparse codes: exact, in one pass, never forming the dense F_A × F_B product.

For latents a (of A) and b (of B) over n images, with s = Σx, v = n·Σx² − (Σx)²:

    r(a, b) = (n·Σab − s_a·s_b) / √(v_a·v_b) = n·Σab·ρ_a·ρ_b − g_a·g_b,   ρ = 1/√v, g = s·ρ

Σab is non-zero only for co-active pairs (both fire on some image): those come from the
sparse product Aᵀ·B over the codes (scipy on the CPU, cuSPARSE through torch on a GPU), a
chunk of A's latents at a time so memory stays within a budget. Every other pair has
Σab = 0, so r(a, b) = −g_a·g_b < 0: for a given a, the best of them are the b with the
smallest g_b that are not co-active with a — a short walk down one sorted list, needed only
when a has fewer than `top` co-active pairs of r ≥ 0. The top links of a latent are
therefore the best of its co-active pairs and of a few non-co-active ones: the same set
the dense computation ranks. A correlation is undefined (and never a link) when either
latent has zero variance (dead or constant). Ties go to the smaller latent id, so results
do not depend on the chunking or the ranks.
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
    """One atlas's codes over the shared images and its per-latent factors."""

    csr: object  # scipy.sparse.csr_matrix [n, F] float64
    rho: Tensor  # [F] float64 1/√v, v = n·Σx² − (Σx)²; NaN where v = 0 (correlations undefined)
    g: Tensor  # [F] float64 Σx/√v (NaN where v = 0)
    order: Tensor  # alive latents (v > 0) by increasing g, ties by id

    @property
    def n_latents(self) -> int:
        return int(self.rho.shape[0])


def make_side(csr, device: torch.device) -> Side:
    """Factors and the g-order of a [n, F] CSR matrix of scores (rows: the shared images).

    r(a, b) = n·Σab·ρ_a·ρ_b − g_a·g_b, the Pearson formula with the per-latent parts factored out."""
    n, f = csr.shape
    lat = csr.indices
    s = np.bincount(lat, weights=csr.data, minlength=f)
    s2 = np.bincount(lat, weights=csr.data * csr.data, minlength=f)
    v = np.maximum(n * s2 - s * s, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(v > 0, 1.0 / np.sqrt(v), np.nan)
    g = s * rho
    alive = np.flatnonzero(v > 0)
    order = alive[np.lexsort((alive, g[alive]))]
    return Side(
        csr, torch.from_numpy(rho).to(device), torch.from_numpy(g).to(device), torch.from_numpy(order).to(device)
    )


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
    """Co-active pairs of a chunk grouped two ways: by A's latent (`rows`, local to the chunk;
    `cols` = B's latent) and by B's latent (`t_rows` = B's latent; `t_cols` = A's, local)."""

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
        prod = (at_rows @ b_csr).tocsr()  # grouped by A's latent (B's latents in no particular order)
        by_b = prod.tocsc()  # a counting sort: grouped by B's latent

        def t(x: np.ndarray) -> Tensor:
            return torch.from_numpy(x).to(device)

        def groups(m) -> Tensor:
            return torch.repeat_interleave(
                torch.arange(len(m.indptr) - 1, device=device), t(np.diff(m.indptr).astype(np.int64))
            )

        return Pairs(
            groups(prod),
            t(prod.indices.astype(np.int64)),
            t(prod.data),
            groups(by_b),
            t(by_b.indices.astype(np.int64)),
            t(by_b.data),
        )

    def to_torch(m) -> Tensor:
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data),
            size=m.shape,
            device=device,
        )

    with warnings.catch_warnings():  # torch calls its sparse CSR support "beta"
        warnings.simplefilter("ignore", UserWarning)
        prod = (to_torch(at_rows) @ to_torch(b_csr)).to_sparse_coo()
    rows, cols = prod.indices()  # grouped by row
    sab = prod.values()
    by_b = torch.sort(cols).indices
    return Pairs(rows, cols, sab, cols[by_b], rows[by_b], sab[by_b])


def first_absent(
    rows: Tensor, order: Tensor, e_rows: Tensor, e_ids: Tensor, n_rows: int, width: int, k: int
) -> tuple[Tensor, Tensor]:
    """For each given row, the first k entries of `order` that are not among its co-active
    entries (e_rows, e_ids): (rows repeated, entries) of the picks (fewer where `order` runs out)."""
    dev = order.device
    picked_rows, picked = [], []
    length = min(len(order), 2 * k)
    while rows.numel() and length:
        prefix = order[:length]
        pos = torch.full((width,), -1, dtype=torch.int64, device=dev)
        pos[prefix] = torch.arange(length, device=dev)
        p = torch.index_select(pos, 0, e_ids)
        hit = (p >= 0).nonzero().flatten()
        present = torch.zeros((n_rows, length), dtype=torch.bool, device=dev)
        present[e_rows[hit], p[hit]] = True
        absent = ~present[rows]
        rank = absent.cumsum(1)
        done = (rank[:, -1] >= k) | (length == len(order))
        take = absent & (rank <= k) & done[:, None]
        r, c = take.nonzero(as_tuple=True)
        picked_rows.append(rows[r])
        picked.append(prefix[c])
        rows = rows[~done]
        length = min(len(order), 4 * length)
    empty = torch.zeros(0, dtype=torch.int64, device=dev)
    return (torch.cat(picked_rows) if picked_rows else empty), (torch.cat(picked) if picked else empty)


def one_direction(
    n: int,
    rows: Tensor,
    ids: Tensor,
    sab: Tensor,
    row_side: Side,
    id_side: Side,
    row_range: tuple[int, int],
    id_range: tuple[int, int],
    top: int,
) -> tuple[Tensor, Tensor]:
    """Top-`top` (values [R, top], ids) for the rows [r0, r1) of `row_side` against the ids
    [i0, i1) of `id_side`, given the co-active (row − r0, id, Σab) entries grouped by row."""
    (r0, r1), (i0, i1) = row_range, id_range
    n_rows = r1 - r0
    ra, ga = row_side.rho[r0:r1], row_side.g[r0:r1]
    vals = torch.index_select(n * ra, 0, rows).mul_(sab).mul_(torch.index_select(id_side.rho, 0, ids))
    vals.sub_(torch.index_select(ga, 0, rows).mul_(torch.index_select(id_side.g, 0, ids)))
    vals.masked_fill_(vals.isnan(), float("-inf"))  # undefined: a zero variance
    kth = grouped_kth(rows, vals, n_rows, top)
    keep = ((vals >= torch.index_select(kth, 0, rows)) & (vals > float("-inf"))).nonzero().flatten()
    r, i, vals = rows[keep], ids[keep], vals[keep]  # each row's best co-active entries (ties kept)
    # pairs that never co-activate have r = −g_a·g_b < 0: only rows whose k-th co-active value is
    # below 0 (or that have fewer than k) can take one of them
    needy = ((~ra.isnan()) & (kth < 0)).nonzero().flatten()
    order = id_side.order[(id_side.order >= i0) & (id_side.order < i1)]
    nr, ni = first_absent(needy, order, rows, ids, n_rows, id_side.n_latents, top)
    other = -ga[nr] * id_side.g[ni]  # Σab = 0
    v, idx, _ = segment_topk(torch.cat([r, nr]), torch.cat([i, ni]), torch.cat([vals, other]), n_rows, top)
    return v, idx


def chunk_links(
    n: int,
    a: Side,
    b: Side,
    at_rows,
    a_range: tuple[int, int],
    top_ab: int,
    top_ba: int,
    device: torch.device,
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
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
