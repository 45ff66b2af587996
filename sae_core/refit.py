"""Post-training refit of an L1-trained SAE's magnitudes with its support frozen (Wright &
Sharkey 2024, "Addressing feature suppression in SAEs").

An L1 (or any sparsity) penalty shrinks the codes: a latent that fires reports less than
its feature's size, and the decoder partly makes up for it. Once training is done, which
latents fire on which input is kept exactly as the encoder decides, and the magnitudes are
refitted on the reconstruction alone, in closed form over a sample of rows (F the codes, x
the normalised inputs; a tiny ridge for latents that always co-fire): mode `scale` fits one
scale a_s per latent and b_dec, x ≈ Σ_s a_s·f_s·u_s + b with the decoder directions u_s kept
(the dictionary does not move); mode `decoder` fits the decoder rows too, [F 1]·[D; b] = x.
Both read the same normal equations FᵀF, Fᵀx. A plain least squares can overfit the rows
that dominate the squared error (on encoder-shaped data 1% of rows at 10× the norm hold about
half of it: the fitted rows' EV rose, held-out EV fell), so by default the fit is pulled towards
the trained weights by a ridge chosen on held-out rows, and the SAE is kept as trained when no
ridge does better there (`choose_ridge`). SAEs wider than REFIT_MAX_LATENTS solve the scale
refit by conjugate gradients instead (`refit_cg.py`).

The result stays in the SAE format (sae_core/FORMAT.md): each refitted decoder row
D_s = n_s·u_s is stored as the unit row u_s, and its scale n_s > 0 is folded into the
encoder (W_enc[:, s], b_enc[s] and, for jumprelu, θ_s are multiplied by n_s), which leaves
the support unchanged because relu(n·h) = n·relu(h) and [n·h > n·θ] = [h > θ]; b_enc also
absorbs the change of b_dec (h = (x − b_dec)·W_enc + b_enc is unchanged). So the L0 of every
input is exactly the same before and after, and only relu and jumprelu can be refitted this
way (the top-k rules compare latents with each other, which per-latent scales would change).

Not handled here: when to refit and where the weights before it are kept (`train.py`).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from .sae import SparseAutoencoder

log = logging.getLogger(__name__)

REFIT_ARCHS = frozenset({"relu", "jumprelu"})
"""Architectures whose support survives per-latent scales (see the module docstring)."""
RIDGE = 1e-6
"""Ridge added to the normal equations, relative to the mean diagonal of the active latents' Gram."""
BEFORE_REFIT_DIR = "before_refit"
"""The sub-folder of a refitted SAE that holds it as trained (`train.py` writes it, `clipsae
metrics` shows it beside the refitted SAE)."""
MIN_SCALE = 1e-6
"""A refitted decoder row shorter than this keeps its old direction and scale (it barely contributes)."""


@torch.no_grad()
def normal_equations(sae: SparseAutoencoder, x_nd: Tensor, batch_size: int = 4096) -> tuple[Tensor, Tensor, float]:
    """(G [S+1, S+1], C [S+1, d], Σ‖x‖²) in float64: AᵀA, Aᵀx and the squared norm for A =
    [f(x), 1] over the rows of x (raw inputs, normalised here), with f the SAE's inference
    codes. On a CPU the Gram is accumulated from the sparse codes (cost nnz·S), on CUDA by
    dense GEMMs. With them the squared error of any decoder on these rows needs no second
    pass over the data (`_squared_error`)."""
    s, d = sae.cfg.d_sae, sae.cfg.d_in
    dev = sae.W_dec.device
    gram = torch.zeros(s + 1, s + 1, dtype=torch.float64, device=dev)
    cross = torch.zeros(s + 1, d, dtype=torch.float64, device=dev)
    sq = 0.0
    for lo in range(0, x_nd.shape[0], batch_size):
        x = x_nd[lo : lo + batch_size].to(dev)
        x_norm = sae.normalize(x)[0]
        f = sae.activate(sae.pre_activation(x_norm))
        a = torch.cat([f, torch.ones(f.shape[0], 1, device=dev, dtype=f.dtype)], dim=1)
        if a.is_cuda:
            gram += (a.T @ a).double()
        else:
            gram += torch.sparse.mm(a.to_sparse().t(), a).double()
        cross += (a.T @ x_norm).double()
        sq += float(x_norm.double().pow(2).sum())
    return gram, cross, sq


RIDGE_GRID = (0.0, 1e-2, 1e-1, 1.0, 10.0)
"""Ridge strengths ρ tried by the validated refit, pulling every latent towards its trained
weights with weight ρ·mean_s (FᵀF)_ss (so ρ has no units); ∞ (keep them) is tried too."""
REFIT_MAX_LATENTS = 8192
"""Widest SAE refitted through dense normal equations ((d_sae + 1)² float64 matrices, a few at
once: about 0.5 GiB each at 8,192 latents, 137 GiB at 131,072). Wider SAEs take the scale refit
matrix-free (`refit_cg`); their decoder refit is skipped (`too_large`), the reason in their metadata."""
MIN_VALIDATION_ROWS = 256
"""Fewer rows than twice this: no validation, ρ = 0 (the plain least squares)."""


def _system(sae: SparseAutoencoder, g: Tensor, c: Tensor, lat: Tensor, mode: str) -> tuple[Tensor, Tensor, Tensor]:
    """(M, R, θ0) of the least squares M·θ = R in the unknowns θ of `mode`, from G = AᵀA and
    C = Aᵀx restricted to [lat, bias]: decoder θ = [D (n×d); b] (M = G, R = C); scale θ =
    [a (n); b (d)], the design's columns being f_s·u_s and e_j. θ0: the trained SAE (a = 1,
    D = its unit rows, b = b_dec), which reproduces it exactly."""
    n, d = len(lat), sae.cfg.d_in
    b_old = sae.b_dec.double()
    if mode == "decoder":
        return g, c, torch.cat([sae.W_dec[lat].double(), b_old[None]])
    u = sae.W_dec[lat].double()
    eye = torch.eye(d, dtype=torch.float64, device=g.device)
    m = torch.zeros(n + d, n + d, dtype=torch.float64, device=g.device)
    m[:n, :n] = g[:n, :n] * (u @ u.T)
    m[:n, n:] = g[:n, n:] * u  # Σ f_s·u_s[j]
    m[n:, :n] = m[:n, n:].T
    m[n:, n:] = g[n, n] * eye
    r = torch.cat([(c[:n] * u).sum(dim=1), c[n]])[:, None]
    theta0 = torch.cat([torch.ones(n, dtype=torch.float64, device=g.device), b_old])[:, None]
    return m, r, theta0


def _solve_towards(m: Tensor, r: Tensor, theta0: Tensor, n_lat: int, rho: float) -> Tensor:
    """argmin ‖Aθ − x‖² + w·Σ_s ‖θ_s − θ0_s‖² over the first n_lat (latent) unknowns, with
    w = (ρ + RIDGE)·mean_s(M_ss): one prior weight for all latents, so a latent seen on a few
    rows stays near its trained weights (a weight ∝ its own M_ss let the scale of a latent that
    fired on one row reach 150×), and RIDGE keeps latents that always co-fire solvable."""
    w = (rho + RIDGE) * float(m.diagonal()[:n_lat].mean())
    m = m.clone()
    m.diagonal()[:n_lat] += w
    rhs = r.clone()
    rhs[:n_lat] += w * theta0[:n_lat]
    return torch.linalg.solve(m, rhs)


def _rows_and_bias(sae: SparseAutoencoder, theta: Tensor, lat: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """θ as (decoder rows D [n, d], b_dec [d])."""
    n = len(lat)
    if mode == "decoder":
        return theta[:n], theta[n]
    return theta[:n] * sae.W_dec[lat].double(), theta[n:, 0]


def _squared_error(eq: tuple[Tensor, Tensor, float], idx: Tensor, rows: Tensor, b: Tensor) -> float:
    """Σ‖x − x̂‖² over the rows whose normal equations are `eq` (G, C, Σ‖x‖²), for x̂ = f_lat·rows
    + b (lat = idx without its last, bias, entry): ‖x‖² − 2⟨P, C⟩ + ⟨P, G·P⟩ with P = [rows; b],
    exact algebra, so scoring a refit candidate on unseen rows costs no pass over them."""
    g, c, sq = eq
    p = torch.cat([rows, b[None]])
    c, g = c[idx], g[idx][:, idx]
    return max(sq - 2.0 * float((p * c).sum()) + float((p * (g @ p)).sum()), 0.0)


def choose_ridge(
    sae: SparseAutoencoder, eqs: list[tuple[Tensor, Tensor, float]], idx: Tensor, mode: str
) -> tuple[float, float]:
    """(ρ, relative gain in held-out squared error over the trained SAE) by two-fold
    cross-validation: each half's fit (normal equations `eqs[i]`, restricted to `idx`) is scored
    on the other half; the ρ of RIDGE_GRID, or ∞ (keep the trained weights), with the smallest
    total wins. A plain least squares can overfit rows that dominate the squared error (raw
    encoder-shaped inputs: 1% of rows at 10× the norm hold about half of it): it raised the
    fitted rows' EV from 0.51 to 0.76 and lowered held-out EV from 0.69 to 0.56 (issue 20)."""
    lat = idx[:-1]
    systems = [_system(sae, g[idx][:, idx], c[idx], lat, mode) for g, c, _ in eqs]
    keep = sum(_squared_error(eq, idx, *_rows_and_bias(sae, systems[0][2], lat, mode)) for eq in eqs)
    best, best_err = math.inf, keep
    for rho in RIDGE_GRID:
        err = 0.0
        for system, other in zip(systems, eqs[::-1]):
            theta = _solve_towards(*system, len(lat), rho)
            err += _squared_error(other, idx, *_rows_and_bias(sae, theta, lat, mode))
        if err < best_err:
            best, best_err = rho, err
    return best, (keep - best_err) / keep if keep > 0 else 0.0


def too_large(sae: SparseAutoencoder, mode: str = "scale") -> str | None:
    """Why `sae` is not refitted in `mode`, or None: wider than REFIT_MAX_LATENTS, the decoder
    mode would need dense normal equations (the scale mode then runs matrix-free, `refit_cg`)."""
    s = sae.cfg.d_sae
    if s <= REFIT_MAX_LATENTS or mode != "decoder":
        return None
    gib = (s + 1) ** 2 * 8 / 2**30
    return (
        f"{s} latents > {REFIT_MAX_LATENTS}: the decoder refit's dense normal equations would need "
        f"{gib:.0f} GiB per matrix (--refit scale runs without them); saved as trained"
    )


def _fold_(sae: SparseAutoencoder, lat: Tensor, rows: Tensor, b_dec_new: Tensor) -> Tensor:
    """Store refitted decoder rows D_s (latents `lat`) as unit rows with their norms folded into the
    encoder, and the new b_dec; return the folded scales (see the module docstring)."""
    b_dec_new = b_dec_new.to(sae.b_dec.dtype)
    norms = rows.norm(dim=1)
    keep = norms > MIN_SCALE
    lat, rows, norms = lat[keep], rows[keep], norms[keep]
    # b_enc absorbs b_dec's change so that every pre-activation stays the same, then the scales fold in:
    # (x − b_new)·W + b_enc' = (x − b_old)·W + b_enc gives b_enc' = h(b_new) under the old b_dec.
    sae.b_enc.copy_(sae.pre_activation(b_dec_new[None])[0])
    sae.b_dec.copy_(b_dec_new)
    scale = norms.to(sae.W_enc.dtype)
    sae.W_dec[lat] = (rows / norms[:, None]).to(sae.W_dec.dtype)
    sae.W_enc[:, lat] *= scale
    sae.b_enc[lat] *= scale
    if sae.cfg.architecture == "jumprelu":
        sae.threshold[lat] *= scale
    return scale


@torch.no_grad()
def refit_(
    sae: SparseAutoencoder, x_nd: Tensor, batch_size: int = 4096, mode: str = "scale", ridge: float | None = None
) -> dict[str, float | None]:
    """Refit `sae` in place on the raw inputs x [N, d_in] (see the module docstring); return
    what changed: the number of latents refitted, the mean folded scale n_s, the ridge ρ used
    and (validated) the cross-validated gain.

    mode decoder: the decoder rows are free (directions and scales); scale: each latent keeps
    its decoder direction u_s and only its scale a_s (and b_dec) is fitted, from the same
    normal equations: x ≈ Σ_s a_s·f_s·u_s + b. ridge None (training's default): ρ is chosen by
    cross-validation on the halves of x (`choose_ridge`), possibly ∞, which keeps the SAE as
    trained; a number: that ρ (0: the plain least squares)."""
    if sae.cfg.architecture not in REFIT_ARCHS:
        raise ValueError(
            f"refit keeps the support only for {', '.join(sorted(REFIT_ARCHS))}, not {sae.cfg.architecture}"
        )
    if mode not in ("scale", "decoder"):
        raise ValueError(f"refit mode must be scale or decoder; got {mode!r}")
    was_training = sae.training
    sae.eval()
    if ridge is None and x_nd.shape[0] < 2 * MIN_VALIDATION_ROWS:
        ridge = 0.0
    if sae.cfg.d_sae > REFIT_MAX_LATENTS:
        if mode != "scale":
            raise ValueError(too_large(sae, mode))
        return _refit_wide_(sae, x_nd, ridge, batch_size, was_training)
    halves = [x_nd] if ridge is not None else [x_nd[: x_nd.shape[0] // 2], x_nd[x_nd.shape[0] // 2 :]]
    eqs = [normal_equations(sae, h, batch_size) for h in halves]
    gram, cross = sum(g for g, _, _ in eqs), sum(c for _, c, _ in eqs)
    active = gram.diagonal()[: sae.cfg.d_sae] > 0
    idx = torch.cat([active, torch.ones(1, dtype=torch.bool, device=gram.device)]).nonzero().squeeze(1)
    lat = idx[:-1]
    info: dict[str, float | None] = {"refit_latents": 0.0, "refit_mean_scale": 1.0, "refit_ridge": ridge}
    if ridge is None and len(lat):
        ridge, info["refit_validation_gain"] = choose_ridge(sae, eqs, idx, mode)
        info["refit_ridge"] = ridge
    if len(lat) == 0 or ridge == math.inf:
        info["refit_ridge"] = None  # JSON has no ∞: None with latents 0 says "kept as trained"
        sae.train(was_training)
        log.info("refit: kept the SAE as trained (no refit did better on held-out rows)")
        return info
    theta = _solve_towards(*_system(sae, gram[idx][:, idx], cross[idx], lat, mode), len(lat), float(ridge))
    rows, b_dec_new = _rows_and_bias(sae, theta, lat, mode)
    scale = _fold_(sae, lat, rows, b_dec_new)
    sae.train(was_training)
    info.update(refit_latents=float(len(scale)), refit_mean_scale=float(scale.mean()) if len(scale) else 1.0)
    log.info("refit: %d latents, mean scale %.4g, ridge %g", len(scale), info["refit_mean_scale"], ridge)
    return info


def _refit_wide_(
    sae: SparseAutoencoder, x_nd: Tensor, ridge: float | None, batch_size: int, was_training: bool
) -> dict:
    """The scale refit of an SAE wider than REFIT_MAX_LATENTS, matrix-free (`refit_cg`)."""
    from . import refit_cg

    a, b, info = refit_cg.scale_fit(sae, x_nd, ridge, RIDGE_GRID, RIDGE, min(batch_size, 1024))
    info.update(refit_latents=0.0, refit_mean_scale=1.0)
    if ridge is None and info["refit_ridge"] is None:
        sae.train(was_training)
        log.info("refit: kept the SAE as trained (no refit did better on held-out rows)")
        return info
    lat = torch.arange(sae.cfg.d_sae, device=a.device)
    scale = _fold_(sae, lat, a[:, None] * sae.W_dec.double(), b)
    sae.train(was_training)
    info.update(refit_latents=float(len(scale)), refit_mean_scale=float(scale.mean()) if len(scale) else 1.0)
    log.info("refit (conjugate gradients): %d latents, mean scale %.4g", len(scale), info["refit_mean_scale"])
    return info
