"""Data-dependent initialisation: the normalisation constant, the decoder bias (geometric
median or mean), the encoder scale and λ's scale, fitted on a random sample of the training
data (`data.sample_rows`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .config import SAEConfig, TrainConfig
from .losses import sparsity_scale
from .sparse_ops import sparse_decode
from .trainer import SAETrainer

CHUNK_ROWS = 1024
"""Rows per forward when fitting the encoder scale (bounds memory at CHUNK_ROWS × d_sae)."""


def init_runs(runs: list[SAETrainer], sample_nd: torch.Tensor, cfg: TrainConfig) -> None:
    """Fit, on a sample of the data: the normalisation constant (or centre), the decoder bias, the
    encoder scale, and λ's factor for the loss convention (`losses.sparsity_scale`, from
    σ² = E‖x − E x‖² of the normalised sample).

    The encoder starts as the decoder's transpose. ReLU and top-k selection commute with a
    positive scale α of the encoder (JumpReLU too when its θ is scaled with it), so the α
    minimising ‖x_c − α·dec(f)‖² has the closed form α = ⟨x_c, g⟩ / ⟨g, g⟩ with g = f @ W_dec:
    the first steps start from the best reconstruction of that family instead of overshooting.
    (Unscaled, a 1,024-latent JumpReLU started at EV −15, its L0 penalty then raised θ above
    every pre-activation and the dictionary never formed: mean-max-cosine 0.4, issue 20.)
    """
    if not torch.isfinite(sample_nd).all():
        raise ValueError("the activations contain NaN or inf values; re-run the extraction")
    shared: dict[tuple, tuple[Tensor, Tensor, float]] = {}  # a sweep's SAEs that normalise alike share these
    for run in runs:
        sae = run.sae
        device = sae.W_enc.device
        if sae.cfg.normalize_activations == "expected_average_only_in":
            factor = math.sqrt(sae.cfg.d_in) / float(sample_nd.norm(dim=1).mean())
            sae.cfg = SAEConfig.from_dict({**sae.cfg.to_dict(), "norm_scaling_factor": factor})
        if sae.cfg.normalize_activations == "centred_unit_norm":
            centre = tuple(sample_nd.double().mean(dim=0).tolist())
            sae.cfg = SAEConfig.from_dict({**sae.cfg.to_dict(), "norm_centre": centre})
        key = (
            sae.cfg.normalize_activations,
            sae.cfg.norm_scaling_factor,
            sae.cfg.norm_centre,
            sae.cfg.layer_norm_variant,
            str(device),
        )
        if key not in shared:
            shared[key] = _bias_and_sigma(sae, sample_nd.to(device), cfg)
        x_norm, b, sigma = shared[key]
        run.l1_scale.fill_(sparsity_scale(sae.cfg.architecture, cfg.l1_convention, sigma, sae.cfg.d_in, sae.cfg.d_sae))
        with torch.no_grad():
            sae.b_dec.copy_(b)
            num = denom = 0.0
            for x_n in x_norm.split(CHUNK_ROWS):
                g = _decode_codes(sae.activate(sae.pre_activation(x_n)), sae.W_dec)
                num += float(((x_n - sae.b_dec) * g).sum())
                denom += float(g.pow(2).sum())
            if denom > 0 and num > 0:
                sae.W_enc.mul_(num / denom)
                if sae.cfg.architecture == "jumprelu":  # jumprelu(α·h; α·θ) = α·jumprelu(h; θ)
                    sae.threshold.mul_(num / denom)


def _bias_and_sigma(sae, sample_nd: Tensor, cfg: TrainConfig) -> tuple[Tensor, Tensor, float]:
    """The normalised sample, the decoder bias init and σ = √E‖x − E x‖² of the sample."""
    x_norm, _ = sae.normalize(sample_nd)
    if cfg.b_dec_init == "geometric_median":
        b = geometric_median(x_norm)
    elif cfg.b_dec_init == "mean":
        b = x_norm.mean(dim=0)
    else:
        b = torch.zeros(sae.cfg.d_in, device=x_norm.device)
    sigma = math.sqrt(float((x_norm.double() - x_norm.double().mean(dim=0)).pow(2).sum(dim=1).mean()))
    return x_norm, b, sigma


def _decode_codes(f_ns: Tensor, w_dec_sd: Tensor) -> Tensor:
    """f @ W_dec without the dense GEMM when the codes are sparse (TopK: k of d_sae per row)."""
    if f_ns.count_nonzero() > 0.05 * f_ns.numel():
        return f_ns @ w_dec_sd
    rows, cols = f_ns.nonzero(as_tuple=True)  # row-major: rows sorted, as sparse_decode needs
    return sparse_decode(w_dec_sd, rows, cols, f_ns[rows, cols], f_ns.shape[0])


def geometric_median(x_nd: Tensor, max_iter: int = 200, tol: float = 1e-7) -> Tensor:
    """Weiszfeld's algorithm in float64: the point minimising the sum of Euclidean distances."""
    x = x_nd.double()
    y = x.mean(dim=0)
    for _ in range(max_iter):
        dist = (x - y).norm(dim=1).clamp_min(1e-12)
        w = 1.0 / dist
        y_next = (w[:, None] * x).sum(dim=0) / w.sum()
        if (y_next - y).norm() <= tol * max(1.0, float(y.norm())):
            y = y_next
            break
        y = y_next
    return y.to(x_nd.dtype)
