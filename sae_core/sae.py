"""The sparse autoencoder: encode, decode, forward with loss terms, for four architectures.

Conventions (shape suffixes: b = batch, d = d_in, s = d_sae):
- pre-activation  h = (norm(x) − b_dec) @ W_enc + b_enc
- relu       f = relu(h)                          sparsity term: mean_{b,s} f (unit-norm decoder rows)
- topk       f = relu(h) on the k largest h per input, 0 elsewhere
- batchtopk  training: the k·B largest relu(h) over the whole batch; inference:
             f = h·[h > θ] with one fixed θ (EMA of the smallest kept activation)
- jumprelu   f = h·[h > θ_s] with learned θ_s; sparsity term mean_{b,s} [h > θ_s]
             (straight-through estimator with a rectangle kernel of width ε)
- x̂ = denorm(f @ W_dec + b_dec); the MSE term is the mean over batch × d_in of
  (x̂ − x)² measured in the normalised space.

Means over elements (not sums) make λ comparable with the seeds' tables (seed 001's
`--l1 1e-3,1e-2,3e-2` on unit-norm CLIP embeddings).

Not handled here: the training loop, dead-latent bookkeeping and file I/O
(see `train.py`, `io.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import SAEConfig

_EPS = 1e-6


def _rectangle(z: Tensor) -> Tensor:
    return ((z > -0.5) & (z < 0.5)).to(z.dtype)


class _JumpReLU(torch.autograd.Function):
    """f = h·[h > θ]; ∂f/∂h = [h > θ]; ∂f/∂θ = −(θ/ε)·rect((h − θ)/ε)."""

    @staticmethod
    def forward(ctx, h: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(h, threshold)
        ctx.bandwidth = bandwidth
        return h * (h > threshold)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        h, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_h = grad_out * (h > threshold)
        grad_t = (-(threshold / bw) * _rectangle((h - threshold) / bw) * grad_out).sum(dim=0)
        return grad_h, grad_t, None


class _Step(torch.autograd.Function):
    """H(h − θ) with ∂/∂θ = −(1/ε)·rect((h − θ)/ε) and no gradient to h."""

    @staticmethod
    def forward(ctx, h: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(h, threshold)
        ctx.bandwidth = bandwidth
        return (h > threshold).to(h.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        h, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_t = (-(1.0 / bw) * _rectangle((h - threshold) / bw) * grad_out).sum(dim=0)
        return torch.zeros_like(h), grad_t, None


class _GatherPreact(torch.autograd.Function):
    """Values h[rows, cols] of h = x_c @ W_enc + b_enc, already computed without autograd,
    with a backward that touches only those entries: O(n·d) instead of O(B·d_sae·d).

    rows/cols are flat coordinates sorted by row; `cols_bk` is the same as a [B, K] index
    when every row has K entries (topk, AuxK), which lets the input gradient be one
    `embedding_bag`.
    """

    @staticmethod
    def forward(ctx, x_c_bd, W_enc_ds, b_enc_s, rows_n, cols_n, vals_n):  # type: ignore[override]
        ctx.save_for_backward(x_c_bd, W_enc_ds, rows_n, cols_n)
        return vals_n.clone()

    @staticmethod
    def backward(ctx, g_n):  # type: ignore[override]
        x_c, W_enc, rows, cols = ctx.saved_tensors
        n_batch, d_sae = x_c.shape[0], W_enc.shape[1]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            g_sb = torch.sparse_coo_tensor(torch.stack([cols, rows]), g_n, (d_sae, n_batch), check_invariants=False)
            grad_w = torch.sparse.mm(g_sb, x_c).T
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(d_sae, dtype=g_n.dtype, device=g_n.device).index_add_(0, cols, g_n)
        if ctx.needs_input_grad[0]:
            offsets = torch.searchsorted(rows, torch.arange(n_batch, device=rows.device))
            grad_x = F.embedding_bag(cols, W_enc.T.contiguous(), offsets, mode="sum", per_sample_weights=g_n)
        return grad_x, grad_w, grad_b, None, None, None


def sparse_preact(sae: "SparseAutoencoder", x_c_bd: Tensor, h_bs: Tensor, rows_n: Tensor, cols_n: Tensor) -> Tensor:
    """h[rows, cols] with gradients to W_enc, b_enc and x_c (see `_GatherPreact`)."""
    return _GatherPreact.apply(x_c_bd, sae.W_enc, sae.b_enc, rows_n, cols_n, h_bs[rows_n, cols_n])


def sparse_decode(W_dec_sd: Tensor, rows_n: Tensor, cols_n: Tensor, vals_n: Tensor, n_batch: int) -> Tensor:
    """Σ_n vals·W_dec[cols] per row (rows sorted), without a dense [B, d_sae] matrix."""
    offsets = torch.searchsorted(rows_n, torch.arange(n_batch, device=rows_n.device))
    return F.embedding_bag(cols_n, W_dec_sd, offsets, mode="sum", per_sample_weights=vals_n)


@dataclass
class NormContext:
    """Per-input statistics needed to undo the input normalisation on the output."""

    scale_b1: Tensor | None = None
    shift_b1: Tensor | None = None


@dataclass
class SAEOutput:
    """What `forward` returns: reconstruction, latents and the loss terms (scalars)."""

    x_hat_bd: Tensor
    """Reconstruction in the input space (normalisation undone)."""
    h_bs: Tensor
    """Pre-activations (before the sparsifying non-linearity)."""
    mse: Tensor
    """Mean over batch × d_in of the squared error, in the normalised space."""
    sparsity: Tensor
    """relu: mean f (L1; f >= 0); jumprelu: mean [h > θ] (STE); 0 for topk/batchtopk."""
    x_norm_bd: Tensor
    """The normalised input (what the SAE reconstructs)."""
    x_hat_norm_bd: Tensor
    """The reconstruction in the normalised space."""
    x_c_bd: Tensor
    """The centred input x_norm − b_dec that the encoder reads."""
    f_dense_bs: Tensor | None = None
    """Latents as a dense matrix (dense path)."""
    coords: tuple[Tensor, Tensor, Tensor] | None = None
    """(rows, cols, values) of the kept latents (sparse training path of topk/batchtopk)."""

    @property
    def f_bs(self) -> Tensor:
        """Latent activations [B, d_sae] (built on demand, detached, for the sparse path)."""
        if self.f_dense_bs is not None:
            return self.f_dense_bs
        rows, cols, vals = self.coords  # type: ignore[misc]
        f = torch.zeros_like(self.h_bs)
        f[rows, cols] = vals.detach()
        return f

    @torch.no_grad()
    def latent_stats(self) -> tuple[float, Tensor]:
        """(Σ|f|, per-latent count of non-zero activations), with one pass over f.

        Every architecture gives f >= 0, so Σ|f| = Σf."""
        if self.coords is not None:
            _, cols, vals = self.coords
            counts = torch.bincount(cols[vals != 0], minlength=self.h_bs.shape[1])
            return float(vals.detach().sum()), counts
        f = self.f_dense_bs.detach()  # type: ignore[union-attr]
        # 0/1 written straight into a float buffer, then a float column sum: ~6x faster on CPU
        # than count_nonzero (bool -> int64 cast + int64 reduction); exact below 2**24 rows.
        counts = torch.gt(f, 0, out=torch.empty_like(f)).sum(dim=0)
        return float(f.sum()), counts.to(torch.int64)


class SparseAutoencoder(nn.Module):
    """One SAE. Weights follow the SAELens layout: W_enc [d_in, d_sae], W_dec [d_sae, d_in]."""

    def __init__(self, cfg: SAEConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        d, s = cfg.d_in, cfg.d_sae
        w_dec = torch.randn(s, d, generator=generator)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        # Tied initialisation (encoder = decoder transpose) speeds up early training.
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(s))
        self.b_dec = nn.Parameter(torch.zeros(d))
        if cfg.architecture == "jumprelu":
            # θ itself (not log θ) is the parameter, so the file's `threshold` round-trips bit-exactly.
            self.threshold = nn.Parameter(torch.full((s,), 1e-3))
        if cfg.architecture == "batchtopk":
            # 0 until training has seen a batch; then the EMA of the smallest kept value.
            self.register_buffer("threshold", torch.zeros(s))

    # ------------------------------------------------------------------ normalisation
    def normalize(self, x_bd: Tensor) -> tuple[Tensor, NormContext]:
        """Apply the configured input normalisation; return the context that undoes it."""
        mode = self.cfg.normalize_activations
        if mode == "none":
            return x_bd, NormContext()
        if mode == "unit_norm":
            scale = x_bd.norm(dim=-1, keepdim=True).clamp_min(_EPS)
            return x_bd / scale, NormContext(scale_b1=scale)
        if mode == "layer_norm":
            mu = x_bd.mean(dim=-1, keepdim=True)
            std = x_bd.std(dim=-1, keepdim=True, unbiased=False) + _EPS
            return (x_bd - mu) / std, NormContext(scale_b1=std, shift_b1=mu)
        # expected_average_only_in: one constant fitted on the training data
        factor = self.cfg.norm_scaling_factor
        if factor is None:
            raise ValueError("normalize_activations=expected_average_only_in needs cfg.norm_scaling_factor")
        return x_bd * factor, NormContext(scale_b1=torch.full_like(x_bd[..., :1], 1.0 / factor))

    @staticmethod
    def denormalize(y_bd: Tensor, ctx: NormContext) -> Tensor:
        if ctx.scale_b1 is not None:
            y_bd = y_bd * ctx.scale_b1
        if ctx.shift_b1 is not None:
            y_bd = y_bd + ctx.shift_b1
        return y_bd

    # ------------------------------------------------------------------ encode / decode
    @property
    def threshold_s(self) -> Tensor | None:
        """Per-latent inference threshold (jumprelu, batchtopk), else None."""
        if self.cfg.architecture in ("jumprelu", "batchtopk"):
            return self.threshold
        return None

    def pre_activation(self, x_norm_bd: Tensor) -> Tensor:
        """h = (x − b_dec) @ W_enc + b_enc, computed as x @ W_enc + (b_enc − b_dec @ W_enc): the
        same function, but b_dec's gradient is a vector-matrix product, not a B×d×s matmul."""
        return torch.addmm(self.b_enc - self.b_dec @ self.W_enc, x_norm_bd, self.W_enc)

    def activate(self, h_bs: Tensor) -> Tensor:
        """The sparsifying non-linearity; batchtopk uses the batch rule only in training mode."""
        arch = self.cfg.architecture
        if arch == "relu":
            return F.relu(h_bs)
        if arch == "topk":
            vals, idx = h_bs.topk(self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(h_bs).scatter_(-1, idx, F.relu(vals))
        if arch == "batchtopk":
            if self.training:
                flat = F.relu(h_bs).flatten()
                n_keep = min(self.cfg.k * h_bs.shape[0], flat.numel())
                vals, idx = flat.topk(n_keep, sorted=False)
                return torch.zeros_like(flat).scatter_(0, idx, vals).view_as(h_bs)
            return F.relu(h_bs) * (h_bs > self.threshold)
        return _JumpReLU.apply(h_bs, self.threshold, self.cfg.jumprelu_bandwidth)

    def encode(self, x_bd: Tensor) -> Tensor:
        """Latent activations f [B, d_sae] of raw inputs x [B, d_in]."""
        x_norm, _ = self.normalize(x_bd)
        return self.activate(self.pre_activation(x_norm))

    def decode(self, f_bs: Tensor, ctx: NormContext | None = None) -> Tensor:
        """Reconstruction from latents; with `ctx` (from `normalize`) in the input space."""
        y = f_bs @ self.W_dec + self.b_dec
        return self.denormalize(y, ctx) if ctx is not None else y

    SPARSE_RELU_DENSITY = 0.05
    """ReLU trains on the sparse path when the last batch had fewer active latents than this."""
    _relu_density = 1.0

    def note_density(self, active_fraction: float) -> None:
        """Tell the model the fraction of active latents of the last training batch (the
        trainer has it from its statistics), which picks ReLU's dense or sparse path."""
        self._relu_density = active_fraction

    def forward(self, x_bd: Tensor) -> SAEOutput:
        arch = self.cfg.architecture
        if self.training and (arch in ("topk", "batchtopk") or
                              (arch == "relu" and self._relu_density < self.SPARSE_RELU_DENSITY)):
            return self._forward_sparse(x_bd)
        x_norm, ctx = self.normalize(x_bd)
        x_c = x_norm - self.b_dec
        h = self.pre_activation(x_norm)
        f = self.activate(h)
        y_norm = f @ self.W_dec + self.b_dec
        mse = (y_norm - x_norm).pow(2).mean()
        arch = self.cfg.architecture
        if arch == "relu":
            # L1 of f (f >= 0). The usual ‖W_dec[s]‖ weight is 1 here: training keeps the rows
            # unit-norm and removes the gradient along them, which is all that factor would add.
            sparsity = f.sum() / f.numel()  # sum's backward is a broadcast view; mean's divides B·d_sae values
        elif arch == "jumprelu":
            sparsity = _Step.apply(h, self.threshold, self.cfg.jumprelu_bandwidth).mean()
        else:
            sparsity = torch.zeros((), device=x_bd.device)
        return SAEOutput(
            x_hat_bd=self.denormalize(y_norm, ctx),
            f_dense_bs=f,
            h_bs=h,
            mse=mse,
            sparsity=sparsity,
            x_norm_bd=x_norm,
            x_hat_norm_bd=y_norm,
            x_c_bd=x_c,
        )

    def _forward_sparse(self, x_bd: Tensor) -> SAEOutput:
        """Training forward that never builds a dense latent gradient (topk, batchtopk, and
        relu once its codes are sparse).

        Same values and gradients as the dense forward (tested): the encoder matmul runs
        without autograd and only the kept (row, latent) pairs carry gradients, which is
        exact because no other latent passes a gradient through the non-linearity.
        """
        x_norm, ctx = self.normalize(x_bd)
        x_c = x_norm - self.b_dec
        n_batch = x_bd.shape[0]
        with torch.no_grad():
            h = torch.addmm(self.b_enc, x_c, self.W_enc)
            if self.cfg.architecture == "relu":
                rows, cols = (h > 0).nonzero(as_tuple=True)  # row-major, so sorted by row
            elif self.cfg.architecture == "topk":
                cols = h.topk(self.cfg.k, dim=-1, sorted=False).indices.flatten()
                rows = torch.arange(n_batch, device=h.device).repeat_interleave(self.cfg.k)
            else:
                n_keep = min(self.cfg.k * n_batch, h.numel())
                flat = h.flatten().topk(n_keep, sorted=False).indices.sort().values
                rows, cols = flat // h.shape[1], flat % h.shape[1]
        vals = F.relu(sparse_preact(self, x_c, h, rows, cols))
        y_norm = sparse_decode(self.W_dec, rows, cols, vals, n_batch) + self.b_dec
        return SAEOutput(
            x_hat_bd=self.denormalize(y_norm, ctx),
            coords=(rows, cols, vals),
            h_bs=h,
            mse=(y_norm - x_norm).pow(2).mean(),
            sparsity=vals.sum() / h.numel() if self.cfg.architecture == "relu" else torch.zeros((), device=x_bd.device),
            x_norm_bd=x_norm,
            x_hat_norm_bd=y_norm,
            x_c_bd=x_c,
        )

    # ------------------------------------------------------------------ training helpers
    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Scale decoder rows to unit norm."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(_EPS)

    @torch.no_grad()
    def clamp_threshold_(self, minimum: float = 1e-6) -> None:
        """Keep JumpReLU thresholds positive after an optimiser step."""
        if self.cfg.architecture == "jumprelu":
            self.threshold.clamp_(min=minimum)

    @torch.no_grad()
    def remove_parallel_grads_(self) -> None:
        """Drop the gradient component parallel to each (unit) decoder row."""
        if self.W_dec.grad is None:
            return
        parallel_s1 = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
        self.W_dec.grad -= parallel_s1 * self.W_dec

    @torch.no_grad()
    def update_batchtopk_threshold_(self, kept: Tensor, momentum: float) -> None:
        """EMA of the smallest activation kept by the batch top-k (batchtopk only).

        `kept`: the kept activation values (any shape; zeros are ignored)."""
        active = kept[kept > 0]
        if active.numel() == 0:
            return
        low = active.min()
        if bool((self.threshold == 0).all()):
            self.threshold.fill_(low)
        else:
            self.threshold.mul_(momentum).add_((1 - momentum) * low)


def auxk_loss(sae: SparseAutoencoder, out: SAEOutput, dead_s: Tensor, k_aux: int) -> Tensor:
    """AuxK: reconstruct the residual from the k_aux largest *dead* pre-activations.

    Normalised by the residual's variance (an FVU) and scaled by min(n_dead / k_aux, 1)
    so that it fades as latents revive.
    """
    n_dead = int(dead_s.sum())
    if n_dead == 0:
        return torch.zeros((), device=out.h_bs.device)
    k = min(k_aux, n_dead)
    residual_bd = (out.x_norm_bd - out.x_hat_norm_bd).detach()
    h = out.h_bs.detach()
    n_batch = h.shape[0]
    cols = h.masked_fill(~dead_s, float("-inf")).topk(k, dim=-1, sorted=False).indices.flatten()
    rows = torch.arange(n_batch, device=h.device).repeat_interleave(k)
    vals = F.relu(sparse_preact(sae, out.x_c_bd, h, rows, cols))
    e_hat = sparse_decode(sae.W_dec, rows, cols, vals, n_batch)
    denom = (residual_bd - residual_bd.mean(dim=0)).pow(2).sum().clamp_min(_EPS)
    fvu = (e_hat - residual_bd).pow(2).sum() / denom
    return fvu * min(n_dead / k_aux, 1.0)


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
