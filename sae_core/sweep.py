"""Sweeps: one RunSpec (name, model config, λ) per SAE trained on the same batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import SAEConfig


@dataclass(frozen=True)
class RunSpec:
    """One SAE of a sweep: its name (sub-folder), model config and sparsity coefficient."""

    name: str
    cfg: SAEConfig
    l1_coefficient: float

    def to_dict(self) -> dict:
        return {"name": self.name, "cfg": self.cfg.to_dict(), "l1_coefficient": self.l1_coefficient}


def make_specs(base: SAEConfig, l1_values: list[float], k_values: list[int | None]) -> list[RunSpec]:
    """One RunSpec per (λ, k) pair; names only mention the values that vary."""
    specs = []
    for l1 in l1_values:
        if not l1 >= 0:  # also NaN; a negative λ rewards density
            raise ValueError(f"--l1 {l1:g}: the sparsity coefficient must be >= 0")
        for k in k_values:
            cfg = SAEConfig.from_dict({**base.to_dict(), "k": k})
            parts = []
            if len(l1_values) > 1:
                parts.append(f"l1_{l1:g}")
            if len(k_values) > 1:
                parts.append(f"k_{k}")
            specs.append(RunSpec(name="_".join(parts) or "sae", cfg=cfg, l1_coefficient=l1))
    return specs


def sae_dir(out: Path, specs: list[RunSpec], spec: RunSpec) -> Path:
    return out if len(specs) == 1 else out / spec.name
