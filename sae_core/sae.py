"""The sparse autoencoder: encode, decode, forward with loss terms, for five architectures.

Conventions (shape suffixes: b = batch, d = d_in, s = d_sae):
- pre-activation  h = (norm(x) − b_dec) @ W_enc + b_enc   (`pre_activation`, the only place)
- relu       f = relu(h)                          sparsity term: mean_{b,s} f (unit-norm decoder rows)
- topk       f = relu(h) on the k largest h per input, 0 elsewhere
- batchtopk  training: the k·B largest relu(h) over the whole batch; inference:
             f = h·[h > θ] with one fixed θ (EMA of the smallest kept activation)
- jumprelu   f = h·[h > θ_s] with learned θ_s; sparsity term mean_{b,s} [h > θ_s]
             (straight-through estimator with a rectangle kernel of width ε)
- matryoshka batchtopk's rules; the reconstruction loss is the sum over the nested prefixes
             g1 < g2 < … = d_sae of the MSE of x̂_g = f[:, :g] @ W_dec[:g] + b_dec
- x̂ = denorm(f @ W_dec + b_dec); the MSE term is the mean over batch × d_in of
  (x̂ − x)² measured in the normalised space.

Means over elements (not sums) are seed 001's λ convention; the trainer scales λ to the
convention in use (`TrainConfig.l1_convention`, see `trainer.py`).

The rules themselves live in `rules.py` (one home, shared with the atlas and the masks);
the normalisations in `normalization.py`; the sparse backward in `sparse_ops.py`. Not
handled here: the training loop, dead-latent bookkeeping and file I/O (see `train.py`,
`trainer.py`, `io.py`).

Python use, as SAELens's: `x_hat = sae.decode(sae.encode(x))` is in the input space for
every normalisation (see `decode`); `decode_normalized(f)` stays in the normalised space.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import rules
from .config import SAEConfig
from .normalization import EPS, PER_INPUT_NORMS, NormContext, denormalize, normalize
from .sparse_ops import sparse_decode, sparse_preact


def recon_error(y_bd: Tensor, x_bd: Tensor) -> Tensor:
    """The loss's one unit: the mean over batch × d_in of (y − x)² (in the normalised space).
    The reconstruction (`SAEOutput.mse`, each matryoshka prefix) and AuxK (`losses.auxk_loss`)
    are all written in it, so their weights compare directly."""
    return (y_bd - x_bd).pow(2).mean()


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
    """relu: mean f (L1; f >= 0); jumprelu: mean [h > θ] (STE); 0 for the k architectures."""
    x_norm_bd: Tensor
    """The normalised input (what the SAE reconstructs)."""
    x_hat_norm_bd: Tensor
    """The reconstruction in the normalised space."""
    x_c_bd: Tensor
    """The centred input x_norm − b_dec that the encoder reads (without gradient on the sparse path)."""
    f_dense_bs: Tensor | None = None
    """Latents as a dense matrix (dense path)."""
    coords: tuple[Tensor, Tensor, Tensor] | None = None
    """(rows, cols, values) of the kept latents (sparse training path of topk/batchtopk)."""
    prefix_mse_g: Tensor | None = None
    """matryoshka in training: the MSE of each nested prefix's reconstruction (the last is `mse`)."""

    @property
    def recon_loss(self) -> Tensor:
        """The reconstruction term of the loss: `mse`, or for matryoshka the sum of its prefixes' MSEs."""
        return self.mse if self.prefix_mse_g is None else self.prefix_mse_g.sum()

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
    def latent_stats(self) -> tuple[Tensor, Tensor]:
        """(Σ|f| as a 0-d tensor, per-latent count of non-zero activations), with one pass over f,
        both left on f's device (no host-device sync).

        Every architecture gives f >= 0, so Σ|f| = Σf."""
        if self.coords is not None:
            _, cols, vals = self.coords
            # a zero value adds 0 to its latent's count: no boolean mask, and index_add_ rather than
            # bincount, which reads the largest index back to the host on CUDA (both syncs)
            counts = torch.zeros(self.h_bs.shape[1], dtype=torch.int64, device=cols.device)
            return vals.detach().sum(), counts.index_add_(0, cols, (vals != 0).to(torch.int64))
        f = self.f_dense_bs.detach()  # type: ignore[union-attr]
        # 0/1 written straight into a float buffer, then a float column sum: cheaper on a CPU than
        # count_nonzero (bool -> int64 cast + int64 reduction); exact below 2**24 rows.
        counts = torch.gt(f, 0, out=torch.empty_like(f)).sum(dim=0)
        return f.sum(), counts.to(torch.int64)


class SparseAutoencoder(nn.Module):
    """One SAE. Weights follow the SAELens layout: W_enc [d_in, d_sae], W_dec [d_sae, d_in]."""

    JUMPRELU_INIT_THRESHOLD = 0.01
    """JumpReLU's initial θ (SAELens' `jumprelu_init_threshold` default)."""

    def __init__(self, cfg: SAEConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        d, s = cfg.d_in, cfg.d_sae
        w_dec = torch.randn(s, d, generator=generator)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        # Tied initialisation (encoder = decoder transpose) speeds up early training.
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.T.contiguous())  # contiguous: checkpoints store state contiguous
        self.b_enc = nn.Parameter(torch.zeros(s))
        self.b_dec = nn.Parameter(torch.zeros(d))
        if cfg.architecture == "jumprelu":
            # θ itself (not log θ) is the parameter, so the file's `threshold` round-trips bit-exactly.
            self.threshold = nn.Parameter(torch.full((s,), self.JUMPRELU_INIT_THRESHOLD))
        if cfg.architecture in rules.BATCH_ARCHS:
            # 0 until training has seen a batch; then the EMA of the smallest kept value.
            self.register_buffer("threshold", torch.zeros(s))
        # Fraction of active latents of the last training batch (picks ReLU's sparse path).
        self.register_buffer("relu_density", torch.ones((), dtype=torch.float64))
        # thread id -> (batch shape, NormContext) of that thread's last `encode` (see `decode`)
        self._encoded_norms: dict[int, tuple[torch.Size, NormContext]] = {}

    # ------------------------------------------------------------------ normalisation
    def normalize(self, x_bd: Tensor) -> tuple[Tensor, NormContext]:
        """Apply the configured input normalisation; return the context that undoes it
        (`normalization.normalize`)."""
        return normalize(self.cfg, x_bd)

    @staticmethod
    def denormalize(y_bd: Tensor, ctx: NormContext) -> Tensor:
        """Map a reconstruction from the normalised space back: y·scale + shift."""
        return denormalize(y_bd, ctx)

    # ------------------------------------------------------------------ encode / decode
    @property
    def threshold_s(self) -> Tensor | None:
        """Per-latent inference threshold (jumprelu, batchtopk), else None."""
        if self.cfg.architecture in rules.THRESHOLD_ARCHS:
            return self.threshold
        return None

    def pre_activation(
        self, x_norm_bd: Tensor, latents: Tensor | slice | None = None, latent_major: bool = False
    ) -> Tensor:
        """h = (x − b_dec) @ W_enc + b_enc of normalised inputs x [B, d_in] (`normalize`): the one
        place this formula is written (encode, forward, init, the atlas, its patch masks and
        eval segment all call it).

        Computed as x @ W_enc + (b_enc − b_dec @ W_enc): the same function, but b_dec's gradient
        is a vector-matrix product, not a B×d×s matmul. `latents` (ids or a slice) keeps those
        columns only; `latent_major` returns h.T [latents, B], computed in that layout."""
        w = self.W_enc if latents is None else self.W_enc[:, latents]
        b = self.b_enc if latents is None else self.b_enc[latents]
        bias = b - self.b_dec @ w
        if latent_major:
            return torch.addmm(bias[:, None], w.T, x_norm_bd.T)
        return torch.addmm(bias, x_norm_bd, w)

    def elementwise_codes(
        self, x_bd: Tensor, latents: Tensor | slice | None = None, latent_major: bool = False
    ) -> Tensor:
        """What each chosen latent does by itself on raw inputs x: the element-wise rule
        (`rules.elementwise`, inference form) of its pre-activation. Exact codes for relu,
        jumprelu and batchtopk; for topk relu(h), the latent's drive (the top-k needs every
        latent of an input). The atlas's scores, its patch masks and eval segment use it.
        `latents` and `latent_major` as in `pre_activation`."""
        h = self.pre_activation(self.normalize(x_bd)[0], latents, latent_major)
        threshold = self.threshold_s
        if threshold is not None and latents is not None:
            threshold = threshold[latents]
        return rules.elementwise(
            h, self.cfg.architecture, threshold, latent_dim=0 if latent_major else -1, inplace=True
        )

    def activate(self, h: Tensor, latent_dim: int = -1) -> Tensor:
        """The sparsifying rule (`rules.activate`); batchtopk's batch rule and jumprelu's
        straight-through gradient only in training mode. `latent_dim=0` for latent-major h."""
        c = self.cfg
        return rules.activate(h, c.architecture, c.k, self.threshold_s, self.training, latent_dim, c.jumprelu_bandwidth)

    MAX_REMEMBERED_THREADS = 64
    """`encode` keeps the normalisation of this many threads' last inputs (oldest dropped)."""

    def encode_with_context(self, x_bd: Tensor) -> tuple[Tensor, NormContext]:
        """Latents f [..., d_sae] of raw inputs x [..., d_in], and the context that undoes their
        normalisation (`decode(f, ctx)`): the explicit form, for code that decodes other latents
        or encodes in several places at once."""
        x_norm, ctx = self.normalize(x_bd)
        f = self.activate(self.pre_activation(x_norm.reshape(-1, x_norm.shape[-1])))
        return f.reshape(*x_bd.shape[:-1], -1), ctx

    def encode(self, x_bd: Tensor) -> Tensor:
        """Latent activations f [..., d_sae] of raw inputs x [..., d_in].

        As in SAELens, it keeps the normalisation statistics of x (per thread, for unit_norm
        and layer_norm) so that `decode(f)` of latents of this batch returns the input space."""
        f, ctx = self.encode_with_context(x_bd)
        if self.cfg.normalize_activations in PER_INPUT_NORMS:
            memory = self._encoded_norms
            memory.pop(threading.get_ident(), None)
            memory[threading.get_ident()] = (x_bd.shape[:-1], ctx)
            while len(memory) > self.MAX_REMEMBERED_THREADS:
                memory.pop(next(iter(memory)))
        return f

    def decode(self, f_bs: Tensor, ctx: NormContext | None = None) -> Tensor:
        """Reconstruction x̂ [..., d_in] of latents f [..., d_sae] in the input space: the
        normalisation undone, so `decode(encode(x))` is x̂ as SAELens's is (and `forward`'s).

        none and expected_average_only_in need nothing else. unit_norm and layer_norm need the
        inputs' own statistics: `ctx` (from `encode_with_context` or `normalize`), else those of
        this thread's last `encode`, when its batch has f's shape (edited latents of that batch
        decode too); otherwise a ValueError. `decode_normalized` is x̂ in the normalised space."""
        y = self.decode_normalized(f_bs)
        mode = self.cfg.normalize_activations
        if ctx is None and mode in PER_INPUT_NORMS:
            shape, ctx = self._encoded_norms.get(threading.get_ident(), (None, None))
            if ctx is None or shape != f_bs.shape[:-1]:
                seen = "no encode in this thread" if ctx is None else f"the last encode had batch shape {list(shape)}"
                raise ValueError(
                    f"decode: this SAE normalises each input ({mode}), so decoding needs those inputs' statistics, "
                    f"but latents of shape {list(f_bs.shape)} came with none ({seen}); call encode(x) on their "
                    "inputs first, pass ctx from encode_with_context(x), or use decode_normalized(f) for the "
                    "normalised space"
                )
            if not torch.is_inference_mode_enabled():  # statistics kept under inference_mode, used outside it
                ctx = NormContext(
                    *(t.clone() if t is not None and t.is_inference() else t for t in (ctx.scale_b1, ctx.shift_b1))
                )
        elif ctx is None and mode == "expected_average_only_in":  # one constant: nothing to keep
            ctx = normalize(self.cfg, y[..., :1])[1]
        return self.denormalize(y, ctx) if ctx is not None else y

    def decode_normalized(self, f_bs: Tensor) -> Tensor:
        """f @ W_dec + b_dec: the reconstruction in the normalised space the SAE works in
        (context-free; `decode` maps it back to the inputs' space)."""
        return f_bs @ self.W_dec + self.b_dec

    def prefix_reconstructions(self, f_bs: Tensor) -> list[Tensor]:
        """matryoshka: x̂_g = f[:, :g] @ W_dec[:g] + b_dec for each prefix size g in `groups`, in the
        normalised space (the last equals the full reconstruction up to float rounding)."""
        out, y, lo = [], self.b_dec.expand(f_bs.shape[0], -1), 0
        for g in self.cfg.groups or (self.cfg.d_sae,):
            y = torch.addmm(y, f_bs[:, lo:g], self.W_dec[lo:g])
            out.append(y)
            lo = g
        return out

    SPARSE_RELU_DENSITY = 0.05
    """ReLU trains on the sparse path when the last batch had fewer active latents than this."""

    def note_density(self, active_fraction: float | Tensor) -> None:
        """Tell the model the fraction of active latents of the last training batch (the
        trainer has it from its statistics), which picks ReLU's dense or sparse path. It is a
        buffer, so checkpoints carry it and a resumed run takes the same path."""
        self.relu_density.fill_(active_fraction)

    def uses_sparse_path(self) -> bool:
        """Whether the next training forward runs the sparse path."""
        arch = self.cfg.architecture
        return arch in ("topk", *rules.BATCH_ARCHS) or (
            arch == "relu" and float(self.relu_density) < self.SPARSE_RELU_DENSITY
        )

    def forward(self, x_bd: Tensor) -> SAEOutput:
        if self.training and self.uses_sparse_path():
            return self._forward_sparse(x_bd)
        x_norm, ctx = self.normalize(x_bd)
        x_c = x_norm - self.b_dec
        h = self.pre_activation(x_norm)
        f = self.activate(h)
        y_norm = self.decode_normalized(f)
        mse = recon_error(y_norm, x_norm)
        arch = self.cfg.architecture
        if arch == "relu":
            # L1 of f (f >= 0). The usual ‖W_dec[s]‖ weight is 1 here: training keeps the rows
            # unit-norm and removes the gradient along them, which is all that factor would add.
            sparsity = f.sum() / f.numel()  # sum's backward is a broadcast view; mean's divides B·d_sae values
        elif arch == "jumprelu":
            sparsity = rules.step_l0(h, self.threshold, self.cfg.jumprelu_bandwidth).mean()
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
        n_batch = x_bd.shape[0]
        with torch.no_grad():
            x_c = x_norm - self.b_dec
            h = self.pre_activation(x_norm)
        rows, cols, h_n = rules.kept_entries(h, self.cfg.architecture, self.cfg.k)
        vals = F.relu(sparse_preact(self.W_enc, self.b_enc, self.b_dec, x_c, rows, cols, h_n))
        prefix_mse = None
        if self.cfg.groups is None:
            y_norm = sparse_decode(self.W_dec, rows, cols, vals, n_batch) + self.b_dec
        else:  # each group's latents decoded apart, then summed in order: every prefix's reconstruction
            y_norm, errs, lo = self.b_dec.expand(n_batch, -1), [], 0
            for g in self.cfg.groups:
                sel = (cols >= lo) & (cols < g)
                y_norm = y_norm + sparse_decode(self.W_dec, rows[sel], cols[sel], vals[sel], n_batch)
                errs.append(recon_error(y_norm, x_norm))
                lo = g
            prefix_mse = torch.stack(errs)
        return SAEOutput(
            x_hat_bd=self.denormalize(y_norm, ctx),
            coords=(rows, cols, vals),
            h_bs=h,
            mse=recon_error(y_norm, x_norm) if prefix_mse is None else prefix_mse[-1],
            sparsity=vals.sum() / h.numel() if self.cfg.architecture == "relu" else torch.zeros((), device=x_bd.device),
            x_norm_bd=x_norm,
            x_hat_norm_bd=y_norm,
            x_c_bd=x_c,
            prefix_mse_g=prefix_mse,
        )

    # ------------------------------------------------------------------ training helpers
    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Scale decoder rows to unit norm."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(EPS)

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
        """EMA of the smallest activation kept by the batch top-k (batchtopk, matryoshka).

        `kept`: the kept activation values (any shape; zeros are ignored). Written with
        `torch.where` rather than branches, so nothing is read back to the host: the first
        update sets the threshold, a batch with nothing kept leaves it unchanged."""
        if kept.numel() == 0:  # a shape, known on the host
            return
        low = torch.where(kept > 0, kept, torch.full_like(kept, float("inf"))).min()
        ema = self.threshold * momentum + (1 - momentum) * low
        new = torch.where((self.threshold == 0).all(), low.expand_as(self.threshold), ema)
        self.threshold.copy_(torch.where(torch.isfinite(low), new, self.threshold))
