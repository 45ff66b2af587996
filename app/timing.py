"""How long a generation takes on this machine, measured at start-up (no gradio).

For each resolution, from the smallest up, the decoder runs once with 3 steps: the median
gap between step ends is the time per step, the rest of the wall time the fixed cost
(MoVQ decode, set-up). Larger resolutions are measured while the measurement itself stays within a
small budget; beyond that the time is a lower bound (a step costs at least in proportion
to the pixel count) and labelled as such. Defaults follow: the largest resolution whose
image takes at most `TARGET_S` at the default steps (64 px and 10 steps on a CPU).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from .jobs import Job
from .steer import Steerer

log = logging.getLogger(__name__)
UI_RESOLUTIONS = (64, 128, 256, 512, 768)
TARGET_S = 3.0
"""The default resolution is the largest whose image is expected within this many seconds."""
CPU_STEPS, GPU_STEPS = 10, 25


@dataclass
class Timings:
    """Seconds per decoder step and fixed seconds per image, by resolution."""

    device: str
    per_step_s: dict[int, float] = field(default_factory=dict)
    fixed_s: dict[int, float] = field(default_factory=dict)
    measured: set[int] = field(default_factory=set)

    @property
    def default_steps(self) -> int:
        return GPU_STEPS if self.device.startswith("cuda") else CPU_STEPS

    def seconds(self, size: int, steps: int) -> float | None:
        """Expected seconds for one image (a lower bound where not measured); None if unknown."""
        if size not in self.per_step_s:
            return None
        return self.fixed_s.get(size, 0.0) + steps * self.per_step_s[size]

    def label(self, size: int, steps: int) -> str:
        """'64 px · ~1.2 s per image' (measured) or '512 px · ≥ 20 min per image (estimated)'."""
        s = self.seconds(size, steps)
        if s is None:
            return f"{size} px"
        if size in self.measured:
            return f"{size} px · ~{_human(s)} per image"
        return f"{size} px · ≥ {_human(s)} per image (estimated)"

    def default_size(self, steps: int | None = None) -> int:
        steps = steps or self.default_steps
        fits = [r for r in UI_RESOLUTIONS if r in self.measured and (self.seconds(r, steps) or 1e9) <= TARGET_S]
        return max(fits) if fits else UI_RESOLUTIONS[0]


def _human(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _time_one(steerer: Steerer, emb: torch.Tensor, size: int, steps: int = 3) -> tuple[float, float, float]:
    """(seconds per step, fixed seconds, wall seconds) of one decode, from step timestamps:
    the median gap between step ends is the step time, the rest of the wall time is fixed."""
    stamps: list[float] = []
    job = Job(report=lambda fraction, text: stamps.append(time.perf_counter()))
    t0 = time.perf_counter()
    steerer.decode(emb, emb, 0, steps, size, job)
    wall = time.perf_counter() - t0
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    step = gaps[len(gaps) // 2] if gaps else wall / steps
    return step, max(wall - steps * step, 0.0), wall


def measure(steerer: Steerer, device: str, budget_s: float = 4.0) -> Timings:
    """Time the decoder at each UI resolution while the measurement fits the budget."""
    t = Timings(device=device)
    d = steerer.pipes.embed_dim
    dtype = next(steerer.pipes.decoder.unet.parameters()).dtype
    emb = torch.zeros(1, d, dtype=dtype, device=steerer.pipes.decoder.device)
    steerer.decode(emb, emb, 0, 1, UI_RESOLUTIONS[0])  # warm-up: first-call costs are not the machine's speed
    spent = 0.0
    for size in UI_RESOLUTIONS:
        if t.measured:
            last = max(t.measured)
            guess = (3 * t.per_step_s[last] + t.fixed_s[last]) * (size / last) ** 2
            if spent + guess > budget_s:
                break
        t.per_step_s[size], t.fixed_s[size], wall = _time_one(steerer, emb, size)
        t.measured.add(size)
        spent += wall
    last = max(t.measured)
    for size in UI_RESOLUTIONS:
        if size not in t.measured:  # lower bound: at least proportional to the pixels
            t.per_step_s[size] = t.per_step_s[last] * (size / last) ** 2
            t.fixed_s[size] = t.fixed_s[last] * (size / last) ** 2
    log.info("generation timings (%s): %s", device, ", ".join(t.label(r, t.default_steps) for r in UI_RESOLUTIONS))
    return t
