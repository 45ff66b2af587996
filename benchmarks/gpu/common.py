"""What every section of the device benchmark shares: its context, the row recorder, timers.

A row is one JSON object on one line of `rows.jsonl` in the output folder, written and
flushed as soon as it is measured, so a run killed at any moment keeps what it finished:

    {"section": "kandinsky", "name": "decoder 512px 12 steps", "value": 0.41, "unit": "s",
     "note": "...", ...extra fields}

`report.py` turns the rows into `results.json` and `results.md`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for p in (str(REPO), str(REPO / "benchmarks"), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

ROWS = "rows.jsonl"


@dataclass
class Ctx:
    """One section's run: where to write, which device, smoke or full size."""

    section: str
    out: Path
    """Results folder ($OUT): rows.jsonl, results.md/json, profiles, log."""
    work: Path
    """Scratch folder for models and data (never under $OUT: only results come back)."""
    device: str
    """cuda or cpu."""
    smoke: bool
    """Tiny components on the CPU (the suite's run), else full size."""
    deadline: float = float("inf")
    """time.monotonic() by which the section is killed (parts may skip themselves before it)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def left(self) -> float:
        """Seconds until the section's budget runs out."""
        return self.deadline - time.monotonic()

    def rec(self, name: str, value: Any, unit: str = "", note: str = "", **extra: Any) -> None:
        """Append one row to rows.jsonl (flushed and synced: it survives a kill)."""
        row = {"section": self.section, "name": name, "value": value, "unit": unit, "note": note, **extra}
        line = json.dumps(row, default=str)
        with open(self.out / ROWS, "a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        print(f"[{self.section}] {name}: {value} {unit} {note}".rstrip(), flush=True)

    def skip(self, name: str, why: str) -> None:
        """A row saying what could not be measured here, and why."""
        self.rec(name, "skipped", note=why)


def sync(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str, repeats: int = 3, warmup: int = 1) -> tuple[float, list[float], Any]:
    """(median seconds, all seconds, last result) of `fn` after `warmup` untimed calls; the
    device is synchronised around each call, so the time includes all its queued work."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(max(1, repeats)):
        sync(device)
        t0 = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


class PeakMemory:
    """Peak CUDA memory allocated inside the block (GiB; None on the CPU)."""

    def __init__(self, device: str):
        self.device, self.gib = device, None

    def __enter__(self) -> "PeakMemory":
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            self.gib = round(torch.cuda.max_memory_allocated() / 2**30, 2)


def free_cuda() -> None:
    """Return cached CUDA blocks between parts, so each part's peak is its own."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def missing(*modules: str) -> list[str]:
    """The modules among `modules` that cannot be imported here."""
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


def child_env() -> dict[str, str]:
    """The environment of the commands a section starts: this repo and the carried wheels first."""
    paths = [str(REPO), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "GRADIO_ANALYTICS_ENABLED": "False"}


def import_sparsify() -> str:
    """Import sparsify; returns a note. Its package imports `datasets` (for its Trainer only,
    which this benchmark does not use): where that import fails on the device (say, an older
    pyarrow), a stand-in module takes its place so `SparseCoder` can still be measured."""
    try:
        import sparsify  # noqa: F401

        return ""
    except ImportError as exc:
        if "datasets" not in str(exc) and "pyarrow" not in str(exc):
            raise
        import types

        for name in [m for m in sys.modules if m == "sparsify" or m.startswith(("sparsify.", "datasets"))]:
            del sys.modules[name]
        stub = types.ModuleType("datasets")
        stub.Dataset = stub.DatasetDict = type("Dataset", (), {})  # type: ignore[attr-defined]
        sys.modules["datasets"] = stub
        import sparsify  # noqa: F401

        return f"datasets stubbed ({type(exc).__name__}: {exc})"[:200]


def equal_train_argv(
    acts: Path, out: Path, s: dict, device: str, k: str | None = None, seed: str = "0", dead_latents: str = "none"
) -> list[str]:
    """`clipsae train`'s arguments at a suite's equal settings with sparsify (benchmarks/bench_train.py,
    sec_train.py): its batch and constant lr, no warm-up or decay, raw inputs (sparsify has no
    normalisation), no checkpoints; `dead_latents` none as sparsify's plain loop (auto: our AuxK)."""
    return [
        "train",
        *("--acts", str(acts), "--out", str(out), "--arch", "topk", "--d-sae", str(s["d_sae"])),
        *("--k", k or str(s["k"]), "--seed", seed, "--epochs", str(s["epochs"]), "--device", device),
        *("--batch-size", str(s["batch"]), "--lr", str(s["lr"]), "--lr-warmup-steps", "0", "--lr-decay", "none"),
        *("--normalize", "none", "--dead-latents", dead_latents, "--checkpoint-every", "0"),
    ]
