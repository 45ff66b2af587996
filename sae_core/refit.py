"""Post-training refit of an L1-trained SAE's magnitudes with its support frozen (Wright &
Sharkey 2024, "Addressing feature suppression in SAEs").

An L1 (or any sparsity) penalty shrinks the codes: a latent that fires reports less than
its feature's size, and the decoder partly makes up for it. Once training is done, which
latents fire on which input is kept exactly as the encoder decides, and the decoder
(directions, per-latent scales) and b_dec are refitted on the reconstruction alone, in
closed form: the least-squares solution of [F 1]·[D; b] = x over a sample of rows (F the
codes, x the normalised inputs), with a tiny ridge for latents that always co-fire.

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
REFIT_DEFAULT_ARCHS = frozenset({"relu", "jumprelu"})
"""Those `clipsae train` refits unless --no-refit (where it was measured to help: docs/training.md)."""
RIDGE = 1e-6
"""Ridge added to the normal equations, relative to the mean diagonal of the active latents' Gram."""
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
        x = x_nd[lo:lo + batch_size].to(dev)
        x_norm = sae.normalize(x)[0]
        f = sae.activate(sae.pre_activation(x_norm))
        a = torch.cat([f, torch.ones(f.shape[0], 1, device=dev, dtype=f.dtype)], dim=1)
        if a.is_cuda:
            gram += (a.T @ a).double()
        else:
            gram += torch.sparse.mm(a.to_sparse().t(), a).double()
        cross += (a.T @ x_norm).double()
    return gram, cross


@torch.no_grad()
def refit_(sae: SparseAutoencoder, x_nd: Tensor, batch_size: int = 4096) -> dict[str, float]:
    """Refit `sae` in place on the raw inputs x [N, d_in] (see the module docstring); return
    what changed: the number of latents refitted and the mean folded scale n_s."""
    if sae.cfg.architecture not in REFIT_ARCHS:
        raise ValueError(f"refit keeps the support only for {', '.join(sorted(REFIT_ARCHS))}, "
                         f"not {sae.cfg.architecture}")
    was_training = sae.training
    sae.eval()
    gram, cross = normal_equations(sae, x_nd, batch_size)
    s = sae.cfg.d_sae
    active = torch.cat([gram.diagonal()[:s] > 0, torch.ones(1, dtype=torch.bool, device=gram.device)])
    idx = active.nonzero().squeeze(1)
    g = gram[idx][:, idx]
    n_act = len(idx) - 1
    if n_act == 0:
        sae.train(was_training)
        return {"refit_latents": 0.0, "refit_mean_scale": 1.0}
    ridge = RIDGE * float(g.diagonal()[:n_act].mean())
    g.diagonal()[:n_act] += ridge
    sol = torch.linalg.solve(g, cross[idx])  # [n_act + 1, d]: the decoder rows, then b_dec
    rows, b_dec_new = sol[:n_act], sol[n_act].to(sae.b_dec.dtype)
    lat = idx[:n_act]
    norms = rows.norm(dim=1)
    keep = norms > MIN_SCALE
    lat, rows, norms = lat[keep], rows[keep], norms[keep]
    # b_enc absorbs b_dec's change so that every pre-activation stays the same, then the scales fold in.
    sae.b_enc += (b_dec_new - sae.b_dec) @ sae.W_enc
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
