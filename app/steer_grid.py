"""The steering workbench's grid (no gradio): one or two steering latents, each strength ×
each seed, one image per cell with its measured effect.

    run = h.steer_grid("a red boat", None, "12, 40", "-1, 0, 1, 2", "0, 1", steps=10, resolution=64)

A strength s adds s × (the latent's highest activation over the atlas) along each chosen
latent's decoder direction, so two latents' strengths are comparable. Each cell reports,
with the image re-encoded by the prior's image encoder, the latent's activation in the
seed's unsteered image → in the cell's image, and, where the latent has a text (a label,
an interpretation, or the text the user gave) and the app has a CLIP `embed` SAE, the change
in CLIP cosine similarity between the image and that text. Every cell takes its own turn
in the steerer's fair queue (another user's job can run between two cells) and the job's
cancel flag stops the grid at the next decoder step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from sae_core.edit import Edit

from .inputs import MAX_SEED, finite_number, whole_number
from .jobs import Job

if TYPE_CHECKING:
    from .atlas import Atlas
    from .inspect_image import Inspector
    from .steer import Steerer

MAX_LATENTS, MAX_STRENGTHS, MAX_SEEDS = 2, 7, 4
"""A grid holds at most 2 latents, 7 strengths and 4 seeds (28 images)."""
MAX_STRENGTH = 10.0
"""Strengths are multiples of the latent's highest activation; beyond ±10 only noise."""


@dataclass
class GridCell:
    """One image of the grid and what it measured."""

    seed: int
    strength: float
    image: Image.Image
    before: dict[int, float]
    """Each latent's activation in this seed's unsteered image, re-encoded."""
    after: dict[int, float]
    """... and in this cell's image, re-encoded."""
    clip_change: dict[int, float]
    """CLIP cos(image, latent's text) here minus in the unsteered image (latents with a text only)."""

    def caption(self) -> str:
        """One line under the cell's image."""
        parts = [f"seed {self.seed}, strength {self.strength:+g}"]
        for j in self.before:
            part = f"#{j}: {self.before[j]:.3g} → {self.after[j]:.3g}"
            if j in self.clip_change:
                part += f", CLIP text {self.clip_change[j]:+.3f}"
            parts.append(part)
        return " · ".join(parts)


@dataclass
class GridRun:
    """A whole grid: its settings and its cells (strength-major, then seed)."""

    latents: list[int]
    strengths: list[float]
    seeds: list[int]
    scales: dict[int, float]
    """Each latent's unit of strength: its highest activation over the atlas."""
    texts: dict[int, str]
    """The text each latent's CLIP change is measured against (latents with none are absent)."""
    cells: list[GridCell] = field(default_factory=list)

    def summary(self) -> str:
        """A markdown table: rows are strengths, columns seeds, each cell its readout."""
        head = "| strength | " + " | ".join(f"seed {s}" for s in self.seeds) + " |"
        lines = [head, "|---" * (len(self.seeds) + 1) + "|"]
        for st in self.strengths:
            row = [c for c in self.cells if c.strength == st]
            lines.append(f"| {st:+g} | " + " | ".join(c.caption().split(" · ", 1)[-1] for c in row) + " |")
        units = ", ".join(f"latent {j}: 1 = + direction × {self.scales[j]:.3g}" for j in self.latents)
        texts = "; ".join(f"latent {j} vs “{t}”" for j, t in self.texts.items()) or (
            "none: no latent has a label or interpretation, and no text was given"
        )
        return (
            f"Strength units ({units}). Activations: unsteered image → this image, both re-encoded.\n\n"
            f"CLIP text similarity change: {texts}.\n\n" + "\n".join(lines)
        )


def parse_numbers(text: Any, what: str, limit: int, whole: bool = False) -> list[float]:
    """Comma- or space-separated numbers, in order, without repeats ('-1, 0, 1'); refuses
    empty lists, more than `limit` values, and anything that is not a number."""
    raw = str(text or "").replace(",", " ").split()
    if not raw:
        raise ValueError(f"give at least one {what} (for example: {'0, 1' if whole else '-1, 0, 1, 2'})")
    if len(raw) > limit:
        raise ValueError(f"at most {limit} {what}s in one grid; got {len(raw)}")
    values = [float(whole_number(r, what, 0, MAX_SEED)) if whole else finite_number(r, what) for r in raw]
    return list(dict.fromkeys(values))


class GridHandlers:
    """Mixed into `app.handlers.Handlers` beside `SteerHandlers` (whose `_run` it uses)."""

    steerer: Steerer | None
    steer_atlas: Atlas | None
    inspector: Inspector | None

    def grid_latents(self, text: Any) -> list[int]:
        """One or two steering latents from '12' or '12, 40'."""
        k = self.steer_atlas
        if self.steerer is None or k is None:
            raise ValueError("steering is not available: the Kandinsky 2.2 models or the steering SAE are not loaded")
        raw = str(text or "").replace(",", " ").split()
        if not 1 <= len(raw) <= MAX_LATENTS:
            raise ValueError(f"name one or two steering latents for the grid (for example: 12, 40); got {len(raw)}")
        latents = list(dict.fromkeys(whole_number(r, "a grid latent", 0, k.n_latents - 1) for r in raw))
        return latents

    def latent_text(self, latent: int) -> str:
        """The text a steering latent's CLIP change is measured against: its interpretation,
        else its label words ('' when it has neither)."""
        k = self.steer_atlas
        return (k.interpretation(latent) or " ".join(k.label(latent))) if k is not None else ""

    def _clip_scores(self, images: list[Image.Image], texts: list[str]) -> np.ndarray | None:
        """[images, texts] CLIP cosine similarities, or None without a CLIP `embed` SAE."""
        ins = self.inspector
        if ins is None or not texts or ins.meta.get("hook_name") != "embed" or not ins.can_explain:
            return None
        emb = np.stack([ins.run(im)["embedding"] for im in images]).astype(np.float64)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
        with ins.lock, torch.no_grad():
            txt = ins.encoder.text_embeddings(texts).double().cpu().numpy()
        return emb @ txt.T

    def steer_grid(
        self,
        prompt: str,
        image: Any,
        latents: Any,
        strengths: Any,
        seeds: Any,
        steps: Any = None,
        resolution: Any = None,
        guidance: Any = None,
        text: str = "",
        job: Job | None = None,
    ) -> GridRun:
        """Every strength × seed for one or two latents (see the module's docstring); `text`,
        when given, replaces every latent's own text for the CLIP change."""
        lats = self.grid_latents(latents)
        sts = parse_numbers(strengths, "strength", MAX_STRENGTHS)
        if any(abs(s) > MAX_STRENGTH for s in sts):
            raise ValueError(
                f"strengths are multiples of the latent's highest activation; keep them within ±{MAX_STRENGTH:g}"
            )
        sds = [int(s) for s in parse_numbers(seeds, "seed", MAX_SEEDS, whole=True)]
        self.generation_params(sds[0], steps, resolution)  # type: ignore[attr-defined]  # refuse before any work
        k, s = self.steer_atlas, self.steerer
        scales = {j: float(k.max_activation[j]) if k.max_activation[j] > 0 else float(k.typical_max) for j in lats}
        own = {j: (str(text).strip() or self.latent_text(j)) for j in lats}
        run = GridRun(lats, sts, sds, scales, {j: t for j, t in own.items() if t})
        job = job or Job()
        total, done = len(sds) * (len(sts) + (0.0 not in sts)), 0
        for seed in sds:
            base, _ = self._run(
                prompt,
                image,
                seed,
                steps,
                resolution,
                [],
                job,  # type: ignore[attr-defined]
                with_original=False,
                guidance=guidance,
            )
            images = {0.0: base.steered}
            for st in sts:
                job.progress(done / total, f"grid: seed {seed}, strength {st:+g}")
                done += 1
                if st != 0.0:
                    edits = [Edit(j, "add", st * scales[j]) for j in lats]
                    gen, _ = self._run(
                        prompt,
                        image,
                        seed,
                        steps,
                        resolution,
                        edits,
                        job,  # type: ignore[attr-defined]
                        with_original=False,
                        guidance=guidance,
                    )
                    images[st] = gen.steered
            run.cells += self._measure(run, seed, images, s)
        run.cells.sort(key=lambda c: (sts.index(c.strength), sds.index(c.seed)))
        return run

    def _measure(self, run: GridRun, seed: int, images: dict[float, Image.Image], s: Steerer) -> list[GridCell]:
        order = [0.0] + [st for st in run.strengths if st != 0.0]
        with torch.no_grad():
            acts = {st: s.latents(s.image_embeds(images[st])[0]) for st in order}
        texts = list(run.texts.values())
        cos = self._clip_scores([images[st] for st in order], texts)
        cells = []
        for st in run.strengths:
            i = order.index(st)
            change = {j: float(cos[i, n] - cos[0, n]) for n, j in enumerate(run.texts)} if cos is not None else {}
            cells.append(
                GridCell(
                    seed,
                    st,
                    images[st],
                    {j: float(acts[0.0][j]) for j in run.latents},
                    {j: float(acts[st][j]) for j in run.latents},
                    change,
                )
            )
        return cells
