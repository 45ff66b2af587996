"""This session's steering runs (no gradio): every Generate and every grid is kept, newest
first, with the settings that made it, so that any run can be restored into the Steer
tab's inputs and any two shown side by side.

    history = record(history, "generate", settings, images=[(original, "original"), ...], readout=md)
    run = find(history, choice)      # choice: one of choices(history)

A history is a plain list of dicts (it lives in a per-session gr.State); it keeps the last
`MAX_RUNS` runs, so a long session does not grow without bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

MAX_RUNS = 20
"""Runs kept per session (the oldest are dropped)."""


@dataclass
class Run:
    """One steering run: what made it and what it showed."""

    number: int
    """1 for the session's first run, and so on (stable while older runs are dropped)."""
    kind: str
    """'generate' or 'grid'."""
    settings: dict[str, Any]
    """The Steer inputs by name (prompt, seed, steps, resolution, guidance, slots, grid fields)."""
    images: list[tuple[Image.Image, str]] = field(default_factory=list)
    readout: str = ""

    @property
    def title(self) -> str:
        """The run's line in the history list."""
        s = self.settings
        what = (
            f"grid of latents {s.get('grid_latents', '')}, strengths {s.get('strengths', '')}, "
            f"seeds {s.get('seeds', '')}"
            if self.kind == "grid"
            else "edits " + (", ".join(f"{lat} {mode} {val:g}" for lat, mode, val in s.get("slots", [])) or "none")
        )
        prompt = str(s.get("prompt") or "")
        prompt = prompt if len(prompt) <= 40 else prompt[:39] + "…"
        return f"#{self.number} {self.kind}: {what} · “{prompt}” · seed {s.get('seed', '')}"


def record(
    history: list[Run] | None, kind: str, settings: dict[str, Any], images: list[tuple[Image.Image, str]], readout: str
) -> list[Run]:
    """A new history with this run first (the input list is not changed)."""
    old = list(history or [])
    number = (old[0].number + 1) if old else 1
    return [Run(number, kind, dict(settings), list(images), readout), *old][:MAX_RUNS]


def choices(history: list[Run] | None) -> list[str]:
    """The history list's entries, newest first."""
    return [r.title for r in history or []]


def find(history: list[Run] | None, choice: str | None) -> Run:
    """The run whose title is `choice` (ValueError when it is not in this session's history)."""
    for r in history or []:
        if r.title == choice:
            return r
    if not history:
        raise ValueError("no run yet in this session: press Generate or Run grid first")
    raise ValueError("choose a run from this session's history")


def compare(history: list[Run] | None, a: str | None, b: str | None) -> tuple[Run, Run, str]:
    """Two runs side by side, and a line naming the settings in which they differ."""
    ra, rb = find(history, a), find(history, b)
    keys = sorted(set(ra.settings) | set(rb.settings))
    diff = [k for k in keys if ra.settings.get(k) != rb.settings.get(k)]
    line = (
        f"#{ra.number} and #{rb.number} differ in: {', '.join(diff)}"
        if diff
        else f"#{ra.number} and #{rb.number} have the same settings"
    )
    return ra, rb, line
