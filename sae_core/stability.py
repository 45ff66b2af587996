"""Seed stability: match two dictionaries latent for latent and say how alike they are.

    m = match_dictionaries(sae_a.W_dec, sae_b.W_dec, threshold=0.9)
    m.matched_fraction, m.mean_cosine, m.partner[i], m.cosine[i]

The match is the one-to-one assignment of A's latents to B's that maximises the total cosine
of their decoder rows (the Hungarian problem; Paulo & Belrose 2025 and the "seed stability"
of sparsify #39 score SAEs this way). `matched_fraction` is the fraction of A's latents whose
partner has cosine >= `threshold`; `mean_cosine` the mean cosine over the assigned pairs.

Two exact methods, the same optimum (tested against `scipy.optimize.linear_sum_assignment`):
- exact                 the dense float64 cosine matrix and scipy's dense assignment: memory
                        F_a·F_b·8 bytes (2 GiB at 16,384²), ~60 s there on 2 cores;
- certified-candidates  for large dictionaries: each latent's best partners by cosine (per
                        row and per column, plus a fallback permutation that guarantees a full
                        matching) form a sparse graph solved by LAPJVsp
                        (`scipy.sparse.csgraph.min_weight_full_bipartite_matching`). Then LP
                        duality certifies it: dual prices v of B's latents from shortest
                        alternating paths on that graph, and one pass over all pairs checks
                        cos(a_i, b_j) + v_j <= cos(a_i, b_σ(i)) + v_σ(i) for every (i, j). Where
                        that holds, no assignment of the dense problem has a larger total (to
                        within F·1e-9 of total cosine), so the result *is* the dense optimum;
                        pairs that break it join the graph and it is solved again until none do.
                        Memory stays at the candidates plus one block of cosines.
`auto` (the default) takes the dense method up to 2,048 x 2,048 latents, else the candidates.

Not handled here: reading SAE folders (`evaluate.py`), choosing which latents are alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_array
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

Method = Literal["auto", "exact", "certified-candidates"]
DENSE_MAX_PAIRS = 2048 * 2048
"""`auto` solves the dense problem up to this many (a, b) pairs."""
CERTIFICATE_TOL = 1e-9
"""Slack allowed in the dual check (float64 cosines): the result's total cosine is within
F·CERTIFICATE_TOL of the dense optimum's."""
LEFTOVER_MAX_PAIRS = 4096 * 4096
"""Largest leftover problem (latents that are not each other's best candidate) solved densely
for the first guess."""
REPAIR_PER_ROW = 32
"""Pairs that break the dual check added per row and round (the worst first)."""
BLOCK_ELEMENTS = 2**25
"""Cosines computed at once (a block of rows of A against all of B: 128 MiB in float32)."""


@dataclass(frozen=True)
class DictionaryMatch:
    """The one-to-one match of dictionary A's latents to dictionary B's."""

    partner: np.ndarray
    """int64 [F_a]: the latent of B assigned to each latent of A, or -1 (dead, or none left)."""
    cosine: np.ndarray
    """float64 [F_a]: the cosine of each latent's decoder row with its partner's; NaN without one."""
    matched_fraction: float
    """Fraction of A's (alive) latents whose partner has cosine >= threshold."""
    mean_cosine: float
    """Mean cosine over the assigned pairs (NaN when none)."""
    threshold: float
    """The cosine at which a pair counts as matched."""
    method: str
    """exact (dense assignment) or certified-candidates (sparse, proved equal to the dense optimum)."""

    def summary(self) -> dict[str, float | str]:
        """The scalar fields, for tables and JSON."""
        return {
            "matched_fraction": self.matched_fraction,
            "mean_cosine": self.mean_cosine,
            "threshold": self.threshold,
            "method": self.method,
        }


def _unit_rows(dec: torch.Tensor | np.ndarray) -> torch.Tensor:
    """float64 rows of unit norm (zero rows stay zero: cosine 0 with everything)."""
    t = torch.as_tensor(np.asarray(dec) if not isinstance(dec, torch.Tensor) else dec.detach())
    t = t.to("cpu", torch.float64)
    if t.dim() != 2:
        raise ValueError(f"decoder rows must be a 2-D [latents, d] array; got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("decoder rows contain NaN or inf values")
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-300)


def _mask(alive: torch.Tensor | np.ndarray | None, n: int, name: str) -> np.ndarray:
    if alive is None:
        return np.arange(n)
    m = np.asarray(alive.cpu() if isinstance(alive, torch.Tensor) else alive).astype(bool)
    if m.shape != (n,):
        raise ValueError(f"{name} must be a boolean mask of shape ({n},); got {m.shape}")
    return np.flatnonzero(m)


def match_dictionaries(
    dec_a: torch.Tensor | np.ndarray,
    dec_b: torch.Tensor | np.ndarray,
    *,
    threshold: float = 0.9,
    alive_a: torch.Tensor | np.ndarray | None = None,
    alive_b: torch.Tensor | np.ndarray | None = None,
    method: Method = "auto",
    candidates: int = 8,
) -> DictionaryMatch:
    """Assign A's latents one-to-one to B's maximising the total decoder cosine (module doc).

    dec_a [F_a, d], dec_b [F_b, d]: decoder rows, any norms (normalised here, float64
    cosines). `alive_a`/`alive_b`: boolean masks of the latents to match (dead ones get
    partner -1). `candidates`: partners kept per latent by the candidates method (any value
    gives the same optimum; more means fewer repair rounds)."""
    a, b = _unit_rows(dec_a), _unit_rows(dec_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the dictionaries have different widths: {a.shape[1]} and {b.shape[1]}")
    if method not in ("auto", "exact", "certified-candidates"):
        raise ValueError(f"method must be auto, exact or certified-candidates; got {method!r}")
    ia, ib = _mask(alive_a, a.shape[0], "alive_a"), _mask(alive_b, b.shape[0], "alive_b")
    sub_a, sub_b = a[torch.from_numpy(ia)], b[torch.from_numpy(ib)]
    if method == "auto":
        method = "exact" if len(ia) * len(ib) <= DENSE_MAX_PAIRS else "certified-candidates"
    partner = np.full(a.shape[0], -1, dtype=np.int64)
    cosine = np.full(a.shape[0], np.nan)
    if len(ia) and len(ib):
        swap = len(ia) > len(ib)  # the solvers match every row: rows are the smaller side
        rows, cols = (sub_b, sub_a) if swap else (sub_a, sub_b)
        if method == "exact":
            sigma, cos = _dense_assignment(rows, cols)
        else:
            sigma, cos = _certified_assignment(rows, cols, candidates)
        if swap:  # sigma maps B's rows to A's
            partner[ia[sigma]] = ib
            cosine[ia[sigma]] = cos
        else:
            partner[ia] = ib[sigma]
            cosine[ia] = cos
    assigned = cosine[~np.isnan(cosine)]
    n_alive = len(ia)
    return DictionaryMatch(
        partner=partner,
        cosine=cosine,
        matched_fraction=float((assigned >= threshold).sum() / n_alive) if n_alive else 0.0,
        mean_cosine=float(assigned.mean()) if len(assigned) else float("nan"),
        threshold=float(threshold),
        method=method,
    )


def _dense_assignment(rows: torch.Tensor, cols: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(σ, cos[i, σ(i)]) for every row, from the dense float64 cosine matrix."""
    c = (rows @ cols.T).numpy()
    r, sigma = linear_sum_assignment(c, maximize=True)
    return sigma.astype(np.int64), c[r, sigma]


def _row_blocks(n_rows: int, n_cols: int) -> list[tuple[int, int]]:
    step = max(1, BLOCK_ELEMENTS // max(n_cols, 1))
    return [(lo, min(n_rows, lo + step)) for lo in range(0, n_rows, step)]


def _exact_cos(rows: torch.Tensor, cols: torch.Tensor, ei: np.ndarray, ej: np.ndarray) -> np.ndarray:
    """float64 cosines of the pairs (ei, ej), in chunks."""
    out = np.empty(len(ei))
    step = max(1, 2**22 // rows.shape[1])
    for lo in range(0, len(ei), step):
        i, j = torch.from_numpy(ei[lo : lo + step]), torch.from_numpy(ej[lo : lo + step])
        out[lo : lo + step] = (rows[i] * cols[j]).sum(dim=1).numpy()
    return out


def _initial_candidates(rows: torch.Tensor, cols: torch.Tensor, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's c best columns and each column's c best rows (float32 cosines), plus the
    pairs (i, i) so that the graph always has a full matching."""
    n, m = rows.shape[0], cols.shape[0]
    r32, c32 = rows.float(), cols.float()
    ei, ej = [np.arange(n)], [np.arange(n)]
    kr, kc = min(c, m), min(c, n)
    col_best_v = torch.full((kc, m), -np.inf)
    col_best_i = torch.zeros((kc, m), dtype=torch.int64)
    for lo, hi in _row_blocks(n, m):
        s = r32[lo:hi] @ c32.T
        top = s.topk(kr, dim=1).indices
        ei.append(np.repeat(np.arange(lo, hi), kr))
        ej.append(top.flatten().numpy())
        v, i = s.topk(min(kc, hi - lo), dim=0)
        both_v, both_i = torch.cat([col_best_v, v]), torch.cat([col_best_i, i + lo])
        col_best_v, pick = both_v.topk(kc, dim=0)
        col_best_i = both_i.gather(0, pick)
    ei.append(col_best_i.flatten().numpy())
    ej.append(np.tile(np.arange(m), kc))
    return np.concatenate(ei), np.concatenate(ej)


def _solve_sparse(n: int, m: int, ei: np.ndarray, ej: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """σ [n] maximising Σ cos over the graph's full matchings (weights 2 − cos > 0)."""
    graph = csr_array((2.0 - cos, (ei, ej)), shape=(n, m))
    r, sigma = min_weight_full_bipartite_matching(graph)
    out = np.empty(n, dtype=np.int64)
    out[r] = sigma
    return out


def _column_prices(
    m: int, sigma: np.ndarray, ei: np.ndarray, ej: np.ndarray, cos: np.ndarray, matched_cos: np.ndarray
) -> np.ndarray:
    """Dual variables v [m] = −(price of each column of B), feasible on the graph:
    cos[i, j] − p_j <= cos[i, σ(i)] − p_σ(i) on every edge, p >= 0, p = 0 on unassigned columns.

    In prices, an edge (i, j) says p_σ(i) <= p_j + w with w = cos[i, σ(i)] − cos[i, j] (row i
    moving from its column to j). Optimality of σ on the graph means these constraints have no
    negative cycle, so shortest paths (Bellman-Ford, vectorised over the edges) solve them. The
    lowest prices (distances from a source joined to every column at cost 0) bound the highest
    ones, which are returned: a column then costs what its owner would lose by leaving it, so
    a latent outside the graph rarely finds a column worth taking and few repair rounds follow."""
    own, w = sigma[ei], matched_cos[ei] - cos
    low = -_shortest(np.zeros(m), own, ej, w)  # p_j <= p_own + ... read backwards: −v of the lowest prices
    owned = np.zeros(m, bool)
    owned[sigma] = True
    high = _shortest(np.where(owned, float(low.max(initial=0.0)), 0.0), ej, own, w)
    return -high


def _shortest(start: np.ndarray, src: np.ndarray, dst: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """d with d[dst] = min(start[dst], d[src] + cost) over every edge (Bellman-Ford, vectorised)."""
    order = np.argsort(dst, kind="stable")
    src, cost, dst = src[order], cost[order], dst[order]
    starts = np.flatnonzero(np.r_[True, dst[1:] != dst[:-1]])
    targets = dst[starts]
    d = start.astype(np.float64).copy()
    for _ in range(len(d) + 1):
        best = np.minimum.reduceat(d[src] + cost, starts)
        better = best < d[targets] - 1e-13
        if not better.any():
            return d
        d[targets[better]] = best[better]
    raise ArithmeticError("the sparse assignment is not optimal on its own graph (a negative cycle)")


def _violations(
    rows: torch.Tensor, cols: torch.Tensor, ei: np.ndarray, ej: np.ndarray, v: np.ndarray, rhs: np.ndarray, per_row: int
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs outside the graph that break the dual check (at most `per_row` per row, the
    worst first). A float32 pass flags the rows that might (with a margin above float32's
    rounding of a dot product of unit vectors); those rows are checked again in float64."""
    n, m = rows.shape[0], cols.shape[0]
    margin = (
        4.0 * (rows.shape[1] + 8 + float(np.abs(v).max(initial=0.0)) + float(np.abs(rhs).max(initial=0.0))) * 2.0**-24
    )
    r32, c32, v32 = rows.float(), cols.float(), torch.from_numpy(v).float()
    in_graph = np.argsort(ei, kind="stable")
    gi, gj = ei[in_graph], ej[in_graph]
    bounds = np.searchsorted(gi, np.arange(n + 1))
    out_i, out_j = [], []
    for lo, hi in _row_blocks(n, m):
        s = torch.addmm(v32.expand(hi - lo, m), r32[lo:hi], c32.T)
        sel = slice(bounds[lo], bounds[hi])
        s[torch.from_numpy(gi[sel] - lo), torch.from_numpy(gj[sel])] = -np.inf
        flagged = np.flatnonzero(s.max(dim=1).values.double().numpy() > rhs[lo:hi] - margin) + lo
        if not len(flagged):
            continue
        exact = rows[torch.from_numpy(flagged)] @ cols.T + torch.from_numpy(v)
        counts = bounds[flagged + 1] - bounds[flagged]  # the graph's own pairs hold already: mask them
        at = np.repeat(bounds[flagged] - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(counts.sum())
        exact[torch.from_numpy(np.repeat(np.arange(len(flagged)), counts)), torch.from_numpy(gj[at])] = -np.inf
        excess = exact - torch.from_numpy(rhs[flagged])[:, None]
        worst_v, worst_j = excess.topk(min(per_row, m), dim=1)
        hit = (worst_v > CERTIFICATE_TOL).numpy()
        out_i.append(np.repeat(flagged, worst_j.shape[1])[hit.flatten()])
        out_j.append(worst_j.numpy()[hit])
    if not out_i:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j)


def _certified_assignment(rows: torch.Tensor, cols: torch.Tensor, c: int) -> tuple[np.ndarray, np.ndarray]:
    """(σ, cos[i, σ(i)]) equal to the dense optimum: solve on candidates, certify, repair."""
    n, m = rows.shape[0], cols.shape[0]
    ei, ej = _initial_candidates(rows, cols, max(1, c))
    key = np.unique(ei * m + ej)
    ei, ej = key // m, key % m
    cos = _exact_cos(rows, cols, ei, ej)
    seed_i, seed_j = _leftover_assignment(rows, cols, ei, ej, cos)
    if len(seed_i):
        key, cos = _add_pairs(rows, cols, key, cos, seed_i * m + seed_j)
        ei, ej = key // m, key % m
    while True:
        sigma = _solve_sparse(n, m, ei, ej, cos)
        matched = cos[np.searchsorted(key, np.arange(n) * m + sigma)]
        v = _column_prices(m, sigma, ei, ej, cos, matched)
        add_i, add_j = _violations(rows, cols, ei, ej, v, matched + v[sigma], REPAIR_PER_ROW)
        if not len(add_i):
            return sigma, matched
        key, cos = _add_pairs(rows, cols, key, cos, add_i * m + add_j)
        ei, ej = key // m, key % m


def _add_pairs(
    rows: torch.Tensor, cols: torch.Tensor, key: np.ndarray, cos: np.ndarray, more: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The graph's sorted pair keys (i·m + j) and cosines with the pairs `more` added."""
    m = cols.shape[0]
    new = np.setdiff1d(more, key)
    key = np.concatenate([key, new])
    cos = np.concatenate([cos, _exact_cos(rows, cols, new // m, new % m)])
    order = np.argsort(key, kind="stable")
    return key[order], cos[order]


def _leftover_assignment(
    rows: torch.Tensor, cols: torch.Tensor, ei: np.ndarray, ej: np.ndarray, cos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A good first guess to add to the graph (it only speeds the repair rounds up): pairs that
    are each other's best candidate, and a dense assignment of the latents left over when
    they are few enough (LEFTOVER_MAX_PAIRS), where partners are rarely among the top few."""
    n, m = rows.shape[0], cols.shape[0]
    by_row = np.flatnonzero(np.r_[True, ei[1:] != ei[:-1]])  # ei is sorted
    best_j = ej[by_row + _segment_argmax(cos, by_row)]
    order = np.argsort(ej, kind="stable")
    by_col = np.flatnonzero(np.r_[True, ej[order][1:] != ej[order][:-1]])
    best_i = np.full(m, -1)
    best_i[ej[order][by_col]] = ei[order][by_col + _segment_argmax(cos[order], by_col)]
    mutual = best_i[best_j] == np.arange(n)
    left_i = np.flatnonzero(~mutual)
    taken = np.zeros(m, bool)
    taken[best_j[mutual]] = True
    left_j = np.flatnonzero(~taken)
    if not len(left_i) or len(left_i) * len(left_j) > LEFTOVER_MAX_PAIRS:
        return np.flatnonzero(mutual), best_j[mutual]
    sigma, _ = _dense_assignment(rows[torch.from_numpy(left_i)], cols[torch.from_numpy(left_j)])
    return np.r_[np.flatnonzero(mutual), left_i], np.r_[best_j[mutual], left_j[sigma]]


def _segment_argmax(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Offset of the largest value within each segment [starts[k], starts[k+1])."""
    seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(values)]))
    top = np.maximum.reduceat(values, starts)
    hit = np.flatnonzero(values == top[seg])
    first = np.full(len(starts), -1)
    first[seg[hit[::-1]]] = hit[::-1]  # the first hit of each segment wins
    return first - starts
