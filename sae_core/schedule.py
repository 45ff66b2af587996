"""Learning-rate and λ schedules (pure functions of the step), and the automatic choice of
batch size, learning rate, warm-ups and resampling period from the data size and width.

The automatic choices (`resolve`), for every TrainConfig field left unset (None):
- batch_size: the power of two nearest to rows × epochs / 2,000, so a run makes about 2,000
  optimiser steps when the data allows, at most 4096 (10M rows × 5 epochs: 12,210 steps) and
  at least 256 or d_sae / 16, whichever is larger (each step also costs a few passes over the
  d_in × d_sae weights — Adam, the decoder's upkeep — which small batches would repeat
  for little work: 1024 for 16,384 latents);
- lr: 4e-4 / √(d_sae / 16384), twice sparsify's rule for Adam (1.6e-3 for 1024 latents, 4e-4
  for 16384: runs of a few thousand steps need the larger step; sparsify's rule was set for
  long runs), times 6 for relu/jumprelu, whose penalties sparsify the codes only as fast as
  the weights move;
- lr_warmup_steps: 5% of the steps; l1_warmup_steps: 5% of the steps for relu/jumprelu;
- resample_every: a tenth of the steps;
- aux_k: d_in / 2, at most 512 (Gao et al.'s heuristic, as sparsify).
Explicit values always win; `train_config.json` records the values used.
"""

from __future__ import annotations

import dataclasses
import math

from .config import TrainConfig

TARGET_STEPS = 2_000
"""Optimiser steps the automatic batch size aims for."""
BATCH_RANGE = (256, 4096)
"""Smallest and largest automatic batch size."""
WARMUP_FRACTION = 0.05
"""Automatic lr (and λ) warm-up, as a fraction of the steps."""
RESAMPLE_FRACTION = 0.1
"""Automatic resampling period, as a fraction of the steps."""
PENALTY_LR_FACTOR = 6.0
"""The automatic lr of relu/jumprelu relative to the k architectures'."""


def auto_batch_size(n_samples: int, d_sae: int) -> int:
    """The power of two nearest (in log scale) to n_samples / TARGET_STEPS, within
    [max(BATCH_RANGE[0], d_sae / 16), BATCH_RANGE[1]]."""
    lo, hi = BATCH_RANGE
    lo = min(hi, max(lo, 2 ** round(math.log2(max(d_sae / 16, 1)))))
    ideal = max(n_samples / TARGET_STEPS, 1.0)
    return int(min(hi, max(lo, 2 ** round(math.log2(ideal)))))


def auto_lr(d_sae: int, architecture: str) -> float:
    """4e-4 / √(d_sae / 16384) (twice sparsify's Adam rule), × PENALTY_LR_FACTOR for relu/jumprelu."""
    lr = 4e-4 / math.sqrt(d_sae / 2**14)
    return lr * PENALTY_LR_FACTOR if architecture in ("relu", "jumprelu") else lr


def n_steps(n_rows: int, batch_size: int, epochs: int) -> int:
    """Optimiser steps of a run (see `data.make_plan`: only the last batch of an epoch is short)."""
    return -(-n_rows // batch_size) * epochs


def resolve(cfg: TrainConfig, n_rows: int, d_in: int, d_sae: int, architecture: str) -> tuple[TrainConfig, list[str]]:
    """`cfg` with every unset field chosen; and one line per choice (for the log)."""
    chosen: dict[str, object] = {}
    notes: list[str] = []
    batch = cfg.batch_size
    if batch is None:
        batch = chosen["batch_size"] = auto_batch_size(n_rows * cfg.epochs, d_sae)
    total = n_steps(n_rows, batch, cfg.epochs)
    if "batch_size" in chosen:
        notes.append(
            f"batch_size={batch} ({n_rows} rows x {cfg.epochs} epochs -> {total} steps; "
            f"aiming at ~{TARGET_STEPS} steps with batches of max(256, d_sae/16)..4096)"
        )
    if cfg.lr is None:
        chosen["lr"] = auto_lr(d_sae, architecture)
        notes.append(
            f"lr={chosen['lr']:.3g} (4e-4/sqrt(d_sae/16384) for d_sae={d_sae}"
            + (f", x{PENALTY_LR_FACTOR:g} for {architecture})" if architecture in ("relu", "jumprelu") else ")")
        )
    if cfg.lr_warmup_steps is None:
        chosen["lr_warmup_steps"] = round(WARMUP_FRACTION * total)
        notes.append(f"lr_warmup_steps={chosen['lr_warmup_steps']} ({WARMUP_FRACTION:.0%} of {total} steps)")
    if cfg.l1_warmup_steps is None:
        chosen["l1_warmup_steps"] = round(WARMUP_FRACTION * total) if architecture in ("relu", "jumprelu") else 0
        if architecture in ("relu", "jumprelu"):
            notes.append(f"l1_warmup_steps={chosen['l1_warmup_steps']} ({WARMUP_FRACTION:.0%} of the steps)")
    if cfg.resample_every is None:
        chosen["resample_every"] = max(1, round(RESAMPLE_FRACTION * total))
    if cfg.aux_k is None:
        chosen["aux_k"] = max(1, min(512, d_in // 2))
    return dataclasses.replace(cfg, **chosen), notes  # type: ignore[arg-type]


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then constant, then linear or cosine decay to 0 over the last fraction."""
    factor = min(1.0, (step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps else 1.0
    start = total * (1 - cfg.lr_decay_fraction)
    if cfg.lr_decay != "none" and cfg.lr_decay_fraction > 0 and step >= start:
        t = (step - start) / max(total - start, 1)
        factor *= (1 - t) if cfg.lr_decay == "linear" else 0.5 * (1 + math.cos(math.pi * t))
    return factor


def l1_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up of λ over `l1_warmup_steps`."""
    return min(1.0, (step + 1) / cfg.l1_warmup_steps) if cfg.l1_warmup_steps else 1.0
