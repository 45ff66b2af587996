"""Training checkpoints: `OUT/checkpoint/` holds one safetensors file per SAE (weights,
optimiser state, dead-latent counters, RNG state, the ReLU path's density buffer) and
`state.json` (the step, the run's configs); written atomically, read back exactly."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from .config import SAEConfig, TrainConfig
from .files import atomic_write_dir
from .trainer import SAETrainer

CHECKPOINT_DIR = "checkpoint"


def save_checkpoint(out: Path, runs: list[SAETrainer], step: int, meta: dict) -> None:
    """Every run's tensors + the step and configs, as one folder written atomically."""

    def fill(tmp: Path) -> None:
        for i, run in enumerate(runs):
            save_file(run.state_tensors(), str(tmp / f"run_{i}.safetensors"))
        # norm_scaling_factor is fitted at init, so the configs are saved as they are now.
        state = {**meta, "step": step, "specs_now": [r.sae.cfg.to_dict() for r in runs]}
        (tmp / "state.json").write_text(json.dumps(state, indent=2))

    atomic_write_dir(out / CHECKPOINT_DIR, fill)


def load_checkpoint(ckpt: Path, runs: list[SAETrainer], meta: dict) -> int:
    """Restore every run from `ckpt` after checking it belongs to this run; returns the step."""
    state = json.loads((ckpt / "state.json").read_text())
    state["train_config"] = with_defaults(state["train_config"])
    for key in ("train_config", "specs", "n_rows"):
        if state[key] != meta[key]:
            raise ValueError(
                f"{ckpt} was written with a different {key}: {diff_configs(state[key], meta[key])}. "
                "Resume with the original command, or start over in another --out."
            )
    for i, run in enumerate(runs):
        run.sae.cfg = SAEConfig.from_dict(state["specs_now"][i])
        run.load_state_tensors(load_file(str(ckpt / f"run_{i}.safetensors")))
    return int(state["step"])


def with_defaults(train_config: dict) -> dict:
    """A saved train_config with the fields added to TrainConfig since it was written at their
    defaults, so that a run from an older version resumes when nothing it used has changed."""
    return {**json.loads(json.dumps(TrainConfig().to_dict())), **train_config}


def diff_configs(old: object, new: object) -> str:
    """'key: old -> new' for the keys that differ (or the two values)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)
    return f"{old!r} -> {new!r}"
