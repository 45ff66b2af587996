"""SAE quality metrics: pure functions over one batch and a float64 streaming accumulator.

Definitions (what users compare against ViT-Prisma, SAELens and the seeds):
- mse                 mean over inputs × dims of (x̂ − x)²
- l1                  mean over inputs × latents of |f|
- l0                  mean number of non-zero latents per input
- explained_variance  1 − Σ‖x − x̂‖² / (Σ‖x‖² − ‖Σx‖²/N), accumulated in float64
- cosine_similarity   mean over inputs of cos(x, x̂)
- alive_fraction      fraction of latents that fired at least once
- mean_activation     mean of the non-zero activations
- activation_entropy  entropy (nats) of the firing distribution p_i = count_i / Σ count;
                      its maximum is ln(d_sae)
- expansion           d_sae / d_in (dictionary size relative to the hidden size)
- active_fraction     l0 / d_sae (seed 000's "dict size / hidden size" column)
- ev_prefix_G         matryoshka: the explained variance of the first G latents alone
                      (x̂_G = f[:, :G] @ W_dec[:G] + b_dec), one per prefix size G
All are measured in the space the SAE reconstructs (after `normalize_activations`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def mse(x_bd: Tensor, x_hat_bd: Tensor) -> float:
    return float((x_hat_bd.double() - x_bd.double()).pow(2).mean())


def l1(f_bs: Tensor) -> float:
    return float(f_bs.double().abs().mean())


def l0(f_bs: Tensor) -> float:
    return float((f_bs != 0).sum(dim=-1).double().mean())


def explained_variance(x_bd: Tensor, x_hat_bd: Tensor) -> float:
    x = x_bd.double()
    sse = (x_hat_bd.double() - x).pow(2).sum()
    sst = x.pow(2).sum() - x.sum(dim=0).pow(2).sum() / x.shape[0]
    return float(1 - sse / sst)


def cosine_similarity(x_bd: Tensor, x_hat_bd: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(x_bd.double(), x_hat_bd.double(), dim=-1).mean())


def alive_fraction(fire_count_s: np.ndarray) -> float:
    return float((fire_count_s > 0).mean())


def activation_entropy(fire_count_s: np.ndarray) -> float:
    total = fire_count_s.sum()
    if total == 0:
        return 0.0
    p = fire_count_s[fire_count_s > 0] / total
    return float(-(p * np.log(p)).sum())


class MetricsAccumulator:
    """Streams batches (x, x̂, f) and returns every metric above; sums in float64."""

    def __init__(self, d_in: int, d_sae: int, groups: tuple[int, ...] | None = None):
        self.d_in, self.d_sae = d_in, d_sae
        self.groups = tuple(groups or ())
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self._sums: dict[str, Tensor] | None = None  # made on the first batch's device
        self.sum_sq_err_g = np.zeros(len(self.groups), dtype=np.float64)

    def _on(self, device: torch.device) -> dict[str, Tensor]:
        """The running sums, kept on the batches' device: adding a batch reads nothing back
        to the host (float64 tensors add exactly as the Python floats they replace)."""
        if self._sums is None:
            f64, i64 = torch.float64, torch.int64
            self._sums = {
                "sum_sq_err": torch.zeros((), dtype=f64, device=device),
                "sum_x_sq": torch.zeros((), dtype=f64, device=device),
                "sum_x_d": torch.zeros(self.d_in, dtype=f64, device=device),
                "sum_abs_f": torch.zeros((), dtype=f64, device=device),
                "n_active": torch.zeros((), dtype=i64, device=device),
                "sum_cos": torch.zeros((), dtype=f64, device=device),
                "fire_count_s": torch.zeros(self.d_sae, dtype=i64, device=device),
            }
        return self._sums

    def _value(self, name: str):
        t = None if self._sums is None else self._sums[name]
        if name in ("sum_x_d", "fire_count_s"):
            size = self.d_in if name == "sum_x_d" else self.d_sae
            dtype = np.float64 if name == "sum_x_d" else np.int64
            return np.zeros(size, dtype=dtype) if t is None else t.cpu().numpy()
        return (0 if name == "n_active" else 0.0) if t is None else t.item()

    sum_sq_err = property(lambda self: self._value("sum_sq_err"))
    sum_x_sq = property(lambda self: self._value("sum_x_sq"))
    sum_x_d = property(lambda self: self._value("sum_x_d"))
    sum_abs_f = property(lambda self: self._value("sum_abs_f"))
    n_active = property(lambda self: self._value("n_active"))
    sum_cos = property(lambda self: self._value("sum_cos"))
    fire_count_s = property(lambda self: self._value("fire_count_s"))

    @torch.no_grad()
    def update(self, x_bd: Tensor, x_hat_bd: Tensor, f_bs: Tensor) -> None:
        """Add a batch given dense latents."""
        f = f_bs.detach()
        self.update_stats(x_bd, x_hat_bd, f.abs().sum(), (f != 0).sum(dim=0))

    @torch.no_grad()
    def update_stats(self, x_bd: Tensor, x_hat_bd: Tensor, abs_sum: float | Tensor, fire_count_s: Tensor) -> None:
        """Add a batch given Σ|f| and the per-latent non-zero counts (cheap for sparse latents).

        Sums accumulate in float64 (each reduction runs in float64 over the inputs, without a
        float64 copy of them); the latent sums come in as float32 reductions. Nothing is read
        back to the host here (`result` does, once per metric line)."""
        x, x_hat = x_bd.detach(), x_hat_bd.detach()
        f64 = torch.float64
        t = self._on(x.device)
        self.n += x.shape[0]
        t["sum_sq_err"] += (x_hat - x).pow_(2).sum(dtype=f64)
        t["sum_x_sq"] += x.pow(2).sum(dtype=f64)
        t["sum_x_d"] += x.sum(dim=0, dtype=f64)
        t["sum_abs_f"] += abs_sum.to(f64) if isinstance(abs_sum, Tensor) else abs_sum
        counts = fire_count_s.to(torch.int64)
        t["n_active"] += counts.sum()
        cos = (x * x_hat).sum(dim=1, dtype=f64) / (x.norm(dim=1) * x_hat.norm(dim=1)).clamp_min(1e-8)
        t["sum_cos"] += cos.sum()
        t["fire_count_s"] += counts

    @torch.no_grad()
    def update_prefixes(self, x_bd: Tensor, x_hat_g: list[Tensor]) -> None:
        """Add a batch's prefix reconstructions (one per prefix size, after `update`/`update_stats`)."""
        x = x_bd.detach().double()
        for i, x_hat in enumerate(x_hat_g):
            self.sum_sq_err_g[i] += float((x_hat.detach().double() - x).pow(2).sum())

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no inputs were accumulated")
        sum_sq_err, sum_x_sq, sum_abs_f, n_active, sum_cos = (
            self.sum_sq_err,
            self.sum_x_sq,
            self.sum_abs_f,
            self.n_active,
            self.sum_cos,
        )
        fire_count_s = self.fire_count_s
        sst = sum_x_sq - float((self.sum_x_d**2).sum()) / self.n
        l0_mean = n_active / self.n
        return {
            "n_inputs": float(self.n),
            "mse": sum_sq_err / (self.n * self.d_in),
            "l1": sum_abs_f / (self.n * self.d_sae),
            "l0": l0_mean,
            "explained_variance": 1 - sum_sq_err / sst if sst > 0 else float("nan"),
            "cosine_similarity": sum_cos / self.n,
            "alive_fraction": alive_fraction(fire_count_s),
            "mean_activation": sum_abs_f / n_active if n_active else 0.0,
            "activation_entropy": activation_entropy(fire_count_s),
            "max_entropy": math.log(self.d_sae),
            "expansion": self.d_sae / self.d_in,
            "active_fraction": l0_mean / self.d_sae,
            **{
                f"ev_prefix_{g}": (1 - float(err) / sst if sst > 0 else float("nan"))
                for g, err in zip(self.groups, self.sum_sq_err_g)
            },
        }


COLUMNS: list[tuple[str, str, str]] = [
    ("l0", "Avg. L0", "{:.2f}"),
    ("mse", "MSE", "{:.6g}"),
    ("l1", "L1", "{:.6g}"),
    ("explained_variance", "R² (expl. var.)", "{:.4f}"),
    ("cosine_similarity", "Cos sim", "{:.4f}"),
    ("alive_fraction", "% alive", "{:.1%}"),
    ("mean_activation", "Mean act.", "{:.4g}"),
    ("activation_entropy", "Entropy (nats)", "{:.3f}"),
    ("active_fraction", "L0 / d_sae", "{:.2%}"),
]


def prefix_ev_text(m: dict[str, float]) -> str:
    """'G:ev' for each matryoshka prefix of a result ('—' for other architectures)."""
    cells = [f"{key[len('ev_prefix_') :]}:{value:.3f}" for key, value in m.items() if key.startswith("ev_prefix_")]
    return " ".join(cells) or "—"


def markdown_table(rows: list[tuple[dict[str, str], dict[str, float]]]) -> str:
    """A seed-001 style table: leading descriptive columns, then the metric columns (plus the
    explained variance per prefix when a matryoshka SAE is among the rows)."""
    if not rows:
        return ""
    lead = list(rows[0][0].keys())
    prefixes = any(key.startswith("ev_prefix_") for _, m in rows for key in m)
    header = lead + [title for _, title, _ in COLUMNS] + (["EV per prefix"] if prefixes else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for desc, m in rows:
        cells = [desc[k] for k in lead] + [fmt.format(m[key]) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells + ([prefix_ev_text(m)] if prefixes else [])) + " |")
    return "\n".join(lines)
