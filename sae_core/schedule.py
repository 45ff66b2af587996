"""Learning-rate and λ schedules: pure functions of the step."""

from __future__ import annotations

import math

from .config import TrainConfig


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then constant, then linear or cosine decay to 0 over the last fraction."""
    factor = min(1.0, (step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps else 1.0
    start = total * (1 - cfg.lr_decay_fraction)
    if cfg.lr_decay != "none" and cfg.lr_decay_fraction > 0 and step >= start:
        t = (step - start) / max(total - start, 1)
        factor *= (1 - t) if cfg.lr_decay == "linear" else 0.5 * (1 + math.cos(math.pi * t))
    return factor


def l1_factor(step: int, cfg: TrainConfig) -> float:
    return min(1.0, (step + 1) / cfg.l1_warmup_steps) if cfg.l1_warmup_steps else 1.0
