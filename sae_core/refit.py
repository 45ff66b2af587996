"""Post-training refit of an L1-trained SAE's magnitudes with its support frozen (Wright &
Sharkey 2024, "Addressing feature suppression in SAEs").

An L1 (or any sparsity) penalty shrinks the codes: a latent that fires reports less than
its feature's size, and the decoder partly makes up for it. Once training is done, which
latents fire on which input is kept exactly as the encoder decides, and the magnitudes are
refitted on the reconstruction alone, in closed form over a sample of rows (F the codes, x
the normalised inputs; a tiny ridge for latents that always co-fire): mode `scale` fits one
scale a_s per latent and b_dec, x ≈ Σ_s a_s·f_s·u_s + b with the decoder directions u_s kept
(the dictionary does not move); mode `decoder` fits the decoder rows too, [F 1]·[D; b] = x.
Both read the same normal equations FᵀF, Fᵀx.

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
def normal_equations(sae: SparseAutoencoder, x_nd: Tensor, batch_size: int = 4096) -> tuple[Tensor, Tensor]:
    """(G [S+1, S+1], C [S+1, d]) in float64: AᵀA and Aᵀx for A = [f(x), 1] over the rows of x
    (raw inputs, normalised here), with f the SAE's inference codes. On a CPU the Gram is
    accumulated from the sparse codes (cost nnz·S), on CUDA by dense GEMMs."""
    s, d = sae.cfg.d_sae, sae.cfg.d_in
    dev = sae.W_dec.device
    gram = torch.zeros(s + 1, s + 1, dtype=torch.float64, device=dev)
    cross = torch.zeros(s + 1, d, dtype=torch.float64, device=dev)
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
    return gram, cross


def _solve(g: Tensor, c: Tensor, n_lat: int) -> Tensor:
    """(g + ridge on the first n_lat diagonal entries)⁻¹ c, in float64."""
    g = g.clone()
    g.diagonal()[:n_lat] += RIDGE * float(g.diagonal()[:n_lat].mean())
    return torch.linalg.solve(g, c)


@torch.no_grad()
def refit_(sae: SparseAutoencoder, x_nd: Tensor, batch_size: int = 4096, mode: str = "scale") -> dict[str, float]:
    """Refit `sae` in place on the raw inputs x [N, d_in] (see the module docstring); return
    what changed: the number of latents refitted and the mean folded scale n_s.

    mode decoder: the decoder rows are free (directions and scales); scale: each latent keeps
    its decoder direction u_s and only its scale a_s (and b_dec) is fitted, from the same
    normal equations: x ≈ Σ_s a_s·f_s·u_s + b."""
    if sae.cfg.architecture not in REFIT_ARCHS:
        raise ValueError(
            f"refit keeps the support only for {', '.join(sorted(REFIT_ARCHS))}, not {sae.cfg.architecture}"
        )
    if mode not in ("scale", "decoder"):
        raise ValueError(f"refit mode must be scale or decoder; got {mode!r}")
    was_training = sae.training
    sae.eval()
    gram, cross = normal_equations(sae, x_nd, batch_size)
    s = sae.cfg.d_sae
    idx = torch.cat([gram.diagonal()[:s] > 0, torch.ones(1, dtype=torch.bool, device=gram.device)]).nonzero().squeeze(1)
    lat = idx[:-1]
    if len(lat) == 0:
        sae.train(was_training)
        return {"refit_latents": 0.0, "refit_mean_scale": 1.0}
    g, c = gram[idx][:, idx], cross[idx]
    if mode == "decoder":
        sol = _solve(g, c, len(lat))  # [n_act + 1, d]: the decoder rows, then b_dec
        rows, b_dec_new = sol[:-1], sol[-1]
    else:  # the design's columns are f_s·u_s (latents) and e_j (bias): its Gram and cross terms from g, c
        u = torch.cat([sae.W_dec[lat].double(), torch.eye(sae.cfg.d_in, dtype=torch.float64, device=g.device)])
        n = len(lat)
        big = torch.zeros(n + sae.cfg.d_in, n + sae.cfg.d_in, dtype=torch.float64, device=g.device)
        big[:n, :n] = g[:n, :n] * (u[:n] @ u[:n].T)
        big[:n, n:] = g[:n, n:] * u[:n]  # Σ f_s·u_s[j]
        big[n:, :n] = big[:n, n:].T
        big[n:, n:] = g[n, n] * torch.eye(sae.cfg.d_in, dtype=torch.float64, device=g.device)
        rhs = torch.cat([(c[:n] * u[:n]).sum(dim=1), c[n]])
        sol = _solve(big, rhs[:, None], n).squeeze(1)
        rows, b_dec_new = sol[:n, None] * u[:n], sol[n:]
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
    sae.train(was_training)
    info = {"refit_latents": float(len(lat)), "refit_mean_scale": float(scale.mean()) if len(lat) else 1.0}
    log.info("refit: %d latents, mean scale %.4g", len(lat), info["refit_mean_scale"])
    return info
