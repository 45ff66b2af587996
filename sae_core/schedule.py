"""Learning-rate and λ schedules (pure functions of the step), and the automatic choice of
batch size, learning rate, warm-ups and resampling period from the data size and width.

The automatic choices (`resolve`), for every TrainConfig field left unset (None):
- batch_size: the power of two from 256 to 4096 nearest to rows × epochs / 2,000, so a run
  makes about 2,000 optimiser steps when the data allows (more, in batches of 4096, on large
  data: 10M rows × 5 epochs is 12,210 steps; fewer, in batches of 256, on small data);
- lr: 4e-4 / √(d_sae / 16384), twice sparsify's rule for Adam (1.6e-3 for 1024 latents, 4e-4
  for 16384: runs of a few thousand steps need the larger step; sparsify's rule was set for
  long runs), times 6 for relu/jumprelu, whose penalties sparsify the codes only as fast as
  the weights move;
- lr_warmup_steps: 5% of the steps; l1_warmup_steps: 5% of the steps for relu/jumprelu;
- resample_every: a tenth of the steps.
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


def auto_batch_size(n_samples: int) -> int:
    """The power of two in BATCH_RANGE nearest (in log scale) to n_samples / TARGET_STEPS."""
    lo, hi = BATCH_RANGE
    ideal = max(n_samples / TARGET_STEPS, 1.0)
    return int(min(hi, max(lo, 2 ** round(math.log2(ideal)))))


def auto_lr(d_sae: int, architecture: str) -> float:
    """4e-4 / √(d_sae / 16384) (twice sparsify's Adam rule), × PENALTY_LR_FACTOR for relu/jumprelu."""
    lr = 4e-4 / math.sqrt(d_sae / 2**14)
    return lr * PENALTY_LR_FACTOR if architecture in ("relu", "jumprelu") else lr


def n_steps(n_rows: int, batch_size: int, epochs: int) -> int:
    """Optimiser steps of a run (see `data.make_plan`: only the last batch of an epoch is short)."""
    return -(-n_rows // batch_size) * epochs


def resolve(cfg: TrainConfig, n_rows: int, d_sae: int, architecture: str) -> tuple[TrainConfig, list[str]]:
    """`cfg` with every unset field chosen; and one line per choice (for the log)."""
    chosen: dict[str, object] = {}
    notes: list[str] = []
    batch = cfg.batch_size
    if batch is None:
        batch = chosen["batch_size"] = auto_batch_size(n_rows * cfg.epochs)
    total = n_steps(n_rows, batch, cfg.epochs)
    if "batch_size" in chosen:
        notes.append(f"batch_size={batch} ({n_rows} rows x {cfg.epochs} epochs -> {total} steps; "
                     f"aiming at ~{TARGET_STEPS} steps, batch {BATCH_RANGE[0]}..{BATCH_RANGE[1]})")
    if cfg.lr is None:
        chosen["lr"] = auto_lr(d_sae, architecture)
        notes.append(f"lr={chosen['lr']:.3g} (4e-4/sqrt(d_sae/16384) for d_sae={d_sae}"
                     + (f", x{PENALTY_LR_FACTOR:g} for {architecture})" if architecture in ("relu", "jumprelu") else ")"))
    if cfg.lr_warmup_steps is None:
        chosen["lr_warmup_steps"] = round(WARMUP_FRACTION * total)
        notes.append(f"lr_warmup_steps={chosen['lr_warmup_steps']} ({WARMUP_FRACTION:.0%} of {total} steps)")
    if cfg.l1_warmup_steps is None:
        chosen["l1_warmup_steps"] = round(WARMUP_FRACTION * total) if architecture in ("relu", "jumprelu") else 0
        if architecture in ("relu", "jumprelu"):
            notes.append(f"l1_warmup_steps={chosen['l1_warmup_steps']} ({WARMUP_FRACTION:.0%} of the steps)")
    if cfg.resample_every is None:
        chosen["resample_every"] = max(1, round(RESAMPLE_FRACTION * total))
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
