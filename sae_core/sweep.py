"""Sweeps: one RunSpec (name, model config, λ, seed) per SAE trained on the same batches.

    make_specs(base, l1_values=[0.0], k_values=[16, 32], seeds=[0, 1])
    # -> k_16_seed_0, k_16_seed_1, k_32_seed_0, k_32_seed_1

Every combination of the swept values is one SAE; a name mentions only the values that vary.
A spec's seed sets what is the SAE's own (its weight init, its resampling draws); the batches
and the init sample are shared by the sweep and follow `TrainConfig.data_seed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import SAEConfig


@dataclass(frozen=True)
class RunSpec:
    """One SAE of a sweep: its name (sub-folder), model config, sparsity coefficient and seed."""

    name: str
    cfg: SAEConfig
    l1_coefficient: float
    seed: int | None = None
    """Seeds the SAE's weight init and its own random draws (dead-latent resampling); None:
    the run's `TrainConfig.seed`."""

    def to_dict(self) -> dict:
        d = {"name": self.name, "cfg": self.cfg.to_dict(), "l1_coefficient": self.l1_coefficient}
        if self.seed is not None:  # absent when unset: checkpoints written before seeds were swept still resume
            d["seed"] = self.seed
        return d


def make_specs(
    base: SAEConfig, l1_values: list[float], k_values: list[int | None], seeds: list[int] | None = None
) -> list[RunSpec]:
    """One RunSpec per (λ, k, seed) combination; names only mention the values that vary.
    `seeds` None or one value: every spec keeps the run's seed (spec.seed None or that value)."""
    seeds = list(seeds) if seeds else [None]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seed {','.join(map(str, seeds))}: each seed once")
    specs = []
    for l1 in l1_values:
        if not l1 >= 0:  # also NaN; a negative λ rewards density
            raise ValueError(f"--l1 {l1:g}: the sparsity coefficient must be >= 0")
        for k in k_values:
            cfg = SAEConfig.from_dict({**base.to_dict(), "k": k})
            for seed in seeds:
                parts = []
                if len(l1_values) > 1:
                    parts.append(f"l1_{l1:g}")
                if len(k_values) > 1:
                    parts.append(f"k_{k}")
                if len(seeds) > 1:
                    parts.append(f"seed_{seed}")
                specs.append(RunSpec(name="_".join(parts) or "sae", cfg=cfg, l1_coefficient=l1, seed=seed))
    return specs


def sae_dir(out: Path, specs: list[RunSpec], spec: RunSpec) -> Path:
    """Where a spec's SAE is written: OUT itself for a single SAE, else OUT/<name>."""
    return out if len(specs) == 1 else out / spec.name
