"""The scale refit (`refit.py`, mode `scale`) for SAEs too wide for dense normal equations:
the same ridge least squares, solved matrix-free by preconditioned conjugate gradients.

Unknowns: one scale a_s per latent and the bias b; design x̂ = F·diag(a)·U + 1·bᵀ with F the
sparse codes [N, S] (support frozen) and U the unit decoder rows. The normal operator is applied
with two sparse products per iteration (F·(a⊙U) and Fᵀ·P), so memory is the codes' nonzeros
plus [S, d] and [N, d] dense blocks, never an [S, S] matrix. Jacobi preconditioning (the
diagonal: Σ_r f_rs² + w for a_s, N for b_j). The ridge pulls every a_s towards 1 (the trained
SAE) with weight w = (ρ + RIDGE)·mean_s Σ_r f_rs², as `refit._solve_towards` does; ρ is chosen by
the same two-fold cross-validation over `refit.RIDGE_GRID` (or ∞: keep the SAE as trained).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .sae import SparseAutoencoder

CG_TOL = 1e-5
"""Relative residual at which conjugate gradients stop."""
CG_MAX_ITER = 300
"""Iteration cap per solve."""


class _Codes:
    """Normalised rows X [N, d] and their sparse codes F [N, S] (and Fᵀ, coalesced COO), in float64."""

    def __init__(self, sae: SparseAutoencoder, x_nd: Tensor, batch_size: int):
        dev = sae.W_dec.device
        xs, parts = [], []
        for lo in range(0, x_nd.shape[0], batch_size):
            x = sae.normalize(x_nd[lo : lo + batch_size].to(dev))[0]
            parts.append(sae.activate(sae.pre_activation(x)).double().to_sparse_coo())
            xs.append(x.double())
        self.x = torch.cat(xs)
        coo = torch.cat(parts).coalesce()
        self.f_sq = torch.zeros(sae.cfg.d_sae, dtype=torch.float64, device=dev)
        self.f_sq.index_add_(0, coo.indices()[1], coo.values().pow(2))  # Σ_r f_rs²
        self.f, self.f_t = coo, coo.t().coalesce()

    def predict(self, a: Tensor, b: Tensor, u: Tensor) -> Tensor:
        return torch.sparse.mm(self.f, a[:, None] * u) + b

    def adjoint(self, p: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        return (torch.sparse.mm(self.f_t, p) * u).sum(dim=1), p.sum(dim=0)


def _solve(c: _Codes, u: Tensor, b0: Tensor, rho: float, ridge: float) -> tuple[Tensor, Tensor]:
    """(a, b) minimising ‖X − F·diag(a)·U − 1bᵀ‖² + w‖a − 1‖², by Jacobi-preconditioned CG."""
    w = (rho + ridge) * float(c.f_sq.mean())
    rhs_a, rhs_b = c.adjoint(c.x, u)
    rhs_a = rhs_a + w
    diag_a, diag_b = c.f_sq + w, float(c.x.shape[0])

    def op(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        ga, gb = c.adjoint(c.predict(a, b, u), u)
        return ga + w * a, gb

    a, b = torch.ones_like(rhs_a), b0.clone()
    qa, qb = op(a, b)
    ra, rb = rhs_a - qa, rhs_b - qb
    za, zb = ra / diag_a, rb / diag_b
    pa, pb = za.clone(), zb.clone()
    rz = float((ra * za).sum() + (rb * zb).sum())
    norm0 = math.sqrt(float((rhs_a**2).sum() + (rhs_b**2).sum())) or 1.0
    for _ in range(CG_MAX_ITER):
        if math.sqrt(float((ra**2).sum() + (rb**2).sum())) <= CG_TOL * norm0:
            break
        qa, qb = op(pa, pb)
        step = rz / float((pa * qa).sum() + (pb * qb).sum())
        a, b = a + step * pa, b + step * pb
        ra, rb = ra - step * qa, rb - step * qb
        za, zb = ra / diag_a, rb / diag_b
        rz_new = float((ra * za).sum() + (rb * zb).sum())
        pa, pb = za + (rz_new / rz) * pa, zb + (rz_new / rz) * pb
        rz = rz_new
    return a, b


def _error(c: _Codes, a: Tensor, b: Tensor, u: Tensor) -> float:
    return float((c.x - c.predict(a, b, u)).pow(2).sum())


@torch.no_grad()
def scale_fit(
    sae: SparseAutoencoder, x_nd: Tensor, ridge: float | None, grid: tuple[float, ...], tiny: float, batch_size: int
) -> tuple[Tensor, Tensor, dict[str, float | None]]:
    """(scales a [S], bias b [d], info) of the scale refit; a = 1 and b = b_dec when keeping the
    SAE as trained wins the cross-validation (info's refit_ridge None)."""
    u, b0 = sae.W_dec.double(), sae.b_dec.double()
    info: dict[str, float | None] = {"refit_ridge": ridge, "refit_solver": "conjugate gradients"}
    if ridge is None:
        n = x_nd.shape[0] // 2
        halves = [_Codes(sae, x_nd[:n], batch_size), _Codes(sae, x_nd[n:], batch_size)]
        ones = torch.ones(sae.cfg.d_sae, dtype=torch.float64, device=u.device)
        keep = sum(_error(h, ones, b0, u) for h in halves)
        best, best_err = math.inf, keep
        for rho in grid:
            err = sum(_error(other, *_solve(fit, u, b0, rho, tiny), u) for fit, other in zip(halves, halves[::-1]))
            if err < best_err:
                best, best_err = rho, err
        info.update(refit_ridge=None if best == math.inf else best, refit_validation_gain=(keep - best_err) / keep)
        if best == math.inf:
            return ones, b0, info
        ridge = best
        del halves
    a, b = _solve(_Codes(sae, x_nd, batch_size), u, b0, float(ridge), tiny)
    return a, b, info
