"""The Overview tab's logic (no gradio): every latent of an atlas on the PatchSAE map,
activation frequency against mean activation (log–log), rendered on the server.

At any dictionary size the browser receives one PNG (all latents, drawn as a density of
3×3-pixel dots coloured by kind) plus, per occupied 10×10-pixel cell of the plot, one
representative latent with its tooltip text: a bounded payload (a few hundred kB at
163,840 latents) that the page's script uses for hover and click. Dead latents (never
fire) have no place on a log axis: they are the grey column left of the plot.

Kinds: dead (frequency 0), dense (fires on ≥ DENSE_FREQUENCY of the images), live (the
rest); "labelled" latents have vocabulary label words or a caption-keyword interpretation.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .atlas import DENSE_FREQUENCY, Atlas
from .scores_view import card_html, map_note, score_data, score_flags, score_rgb, score_values

KINDS = ("live", "dense", "dead")
COLOURS = {"dead": (150, 150, 150), "live": (31, 78, 216), "dense": (230, 120, 0)}
WIDTH, HEIGHT = 760, 470
"""Size of one map in pixels."""
CELL = 10
"""Side of the hover/click cells in pixels."""
DEAD_COLUMN = 0.06
"""Width of the dead latents' column, as a fraction of the plot's x range."""
FIG_W, FIG_H = WIDTH + 110, HEIGHT + 70
AXES_BOX = (80 / FIG_W, 15 / FIG_H, (80 + WIDTH) / FIG_W, (15 + HEIGHT) / FIG_H)
"""(left, top, right, bottom) of the plot area as fractions of the figure: a pixel of the
plot area is a pixel of the PNG, offset by (80, 15)."""


@dataclass
class LatentMap:
    """One atlas's latents in display coordinates (computed once per atlas)."""

    name: str
    n_images: int
    frequency: np.ndarray
    mean_activation: np.ndarray
    kind: np.ndarray  # [F] index into KINDS
    labelled: np.ndarray  # [F] bool
    x: np.ndarray  # [F] log10 frequency; dead latents inside the dead column
    y: np.ndarray  # [F] log10 mean activation; dead latents spread over the column by id
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    dead_x: float
    """Right edge of the dead column."""
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    """[F] bool per score filter the atlas allows ("monosemantic", "localised"; `clipsae eval card`)."""


def latent_map(atlas: Atlas) -> LatentMap:
    """Display coordinates and kinds of every latent of `atlas`."""
    freq = np.asarray(atlas.frequency, dtype=np.float64)
    mean = np.asarray(atlas.mean_activation, dtype=np.float64)
    dead = freq <= 0
    kind = np.where(dead, 2, np.where(freq >= DENSE_FREQUENCY, 1, 0))
    alive = ~dead & (mean > 0)
    n_images = max(int(atlas.manifest["n_images"]), 1)
    x = np.full(freq.shape, np.nan)
    y = np.full(freq.shape, np.nan)
    x[alive], y[alive] = np.log10(freq[alive]), np.log10(mean[alive])
    x0 = min(float(np.log10(1.0 / n_images)), float(np.nanmin(x)) if alive.any() else 0.0) - 0.1
    x1 = 0.05
    y0, y1 = (float(np.nanmin(y)), float(np.nanmax(y))) if alive.any() else (-3.0, 0.0)
    pad = max(0.1, 0.05 * (y1 - y0))
    y0, y1 = y0 - pad, y1 + pad
    width = DEAD_COLUMN * (x1 - x0)
    dead_right = x0
    x0 = x0 - width
    ids = np.flatnonzero(dead | ~alive)
    if ids.size:
        rank = np.arange(ids.size)
        x[ids] = x0 + width * (0.2 + 0.6 * ((rank * 0.618034) % 1.0))
        y[ids] = y0 + (y1 - y0) * (0.02 + 0.96 * (rank + 0.5) / ids.size)
    labelled = np.zeros(freq.shape, dtype=bool)
    words = getattr(atlas, "label_words", None)  # the label arrays (atlas format 3): no per-latent dicts
    if words is not None:
        labelled[:] = (np.asarray(words) >= 0).any(axis=1)
    elif atlas.labels:
        labelled[:] = [bool(lab.get("words")) for lab in atlas.labels]
    for s, row in atlas.interpretations.rows.items():
        if atlas.interpretation_words(s):
            labelled[s] = True
    return LatentMap(
        atlas.name,
        n_images,
        freq,
        mean,
        kind,
        labelled,
        x,
        y,
        (x0, x1),
        (y0, y1),
        dead_right,
        score_flags(atlas, freq.size),
    )


def shown(
    m: LatentMap,
    kinds: list[str] | tuple[str, ...],
    labelled_only: bool = False,
    only: list[str] | tuple[str, ...] = (),
) -> np.ndarray:
    """Mask of the latents the filters keep; `only` names score filters ("monosemantic",
    "localised"), and one this atlas has no scores for keeps none of its latents."""
    keep = np.isin(m.kind, [KINDS.index(k) for k in kinds if k in KINDS])
    for name in only:
        keep = keep & m.flags.get(name, np.zeros_like(keep))
    return keep & m.labelled if labelled_only else keep


def to_pixels(m: LatentMap, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel columns and rows (0 at the top) of data coordinates, clipped to the map."""
    px = (x - m.xlim[0]) / (m.xlim[1] - m.xlim[0]) * (WIDTH - 1)
    py = (1 - (y - m.ylim[0]) / (m.ylim[1] - m.ylim[0])) * (HEIGHT - 1)
    return np.clip(np.rint(px), 0, WIDTH - 1).astype(np.int64), np.clip(np.rint(py), 0, HEIGHT - 1).astype(np.int64)


def density_rgb(m: LatentMap, mask: np.ndarray) -> np.ndarray:
    """[HEIGHT, WIDTH, 3] uint8: each shown latent a 3×3 dot, darker where many overlap."""
    img = np.full((HEIGHT, WIDTH, 3), 255.0)
    px, py = to_pixels(m, m.x, m.y)
    for k in (2, 0, 1):  # dead first, dense on top
        sel = mask & (m.kind == k)
        if not sel.any():
            continue
        counts = np.bincount(py[sel] * WIDTH + px[sel], minlength=HEIGHT * WIDTH).reshape(HEIGHT, WIDTH)
        padded = np.pad(counts, 1)
        spread = sum(
            padded[1 + dy : 1 + dy + HEIGHT, 1 + dx : 1 + dx + WIDTH] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
        )
        alpha = np.where(spread > 0, 0.45 + 0.55 * np.log1p(spread) / np.log1p(max(int(spread.max()), 1)), 0.0)
        img = img * (1 - alpha[..., None]) + np.asarray(COLOURS[KINDS[k]], dtype=np.float64) * alpha[..., None]
    return img.astype(np.uint8)


def render_png(m: LatentMap, mask: np.ndarray, values: np.ndarray | None = None) -> bytes:
    """The map with its axes as PNG bytes; the plot area is AXES_BOX, WIDTH × HEIGHT pixels, so
    positions in it map back to the data (`to_pixels`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(FIG_W / 100, FIG_H / 100), dpi=100)
    ax = fig.add_axes((AXES_BOX[0], 1 - AXES_BOX[3], AXES_BOX[2] - AXES_BOX[0], AXES_BOX[3] - AXES_BOX[1]))
    rgb = density_rgb(m, mask) if values is None else score_rgb(*to_pixels(m, m.x, m.y), values, mask, HEIGHT, WIDTH)
    ax.imshow(rgb, extent=(*m.xlim, *m.ylim), aspect="auto", interpolation="nearest")
    ax.axvline(m.dead_x, color="#999", linewidth=0.8)
    ax.text(
        m.xlim[0] + 0.5 * (m.dead_x - m.xlim[0]), m.ylim[1], "dead", ha="center", va="bottom", fontsize=8, color="#666"
    )
    xt = log_ticks(m.dead_x, m.xlim[1])
    ax.set_xticks(xt, [f"{10.0**t:.0%}" if t >= -2 else f"{10.0**t:.0e}".replace("e-0", "e-") for t in xt])
    yt = log_ticks(*m.ylim)
    ax.set_yticks(yt, [f"{10.0**t:.3g}" for t in yt])
    ax.set_xlabel(f"activation frequency (fraction of {m.n_images} images, log)")
    ax.set_ylabel("mean activation when active (log)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def log_ticks(lo: float, hi: float) -> list[float]:
    """log10 positions of round values in [lo, hi]: decades, or 1-2-5 steps when fewer than 3 decades fit."""
    decades = [float(e) for e in range(int(np.ceil(lo)), int(np.floor(hi)) + 1)]
    if len(decades) >= 3:
        return decades
    return [
        float(np.log10(k * 10.0**e))
        for e in range(int(np.floor(lo)), int(np.ceil(hi)) + 1)
        for k in (1, 2, 5)
        if lo <= np.log10(k * 10.0**e) <= hi
    ]


def tooltip(atlas: Atlas, m: LatentMap, latent: int) -> str:
    """One line for hovering a latent: id, frequency, mean, label or interpretation keywords."""
    f = m.frequency[latent]
    text = f"latent {latent} · " + (f"fires on {f:.2%} · mean {m.mean_activation[latent]:.3g}" if f > 0 else "dead")
    words = atlas.short_label(latent)
    scores = {k: v for k, v in (score_data(atlas, latent) or {}).items() if v is not None}
    names = {"monosemanticity": "MS", "morans_i": "Moran's I", "label_auc": "label AUC"}
    return (
        text
        + (f" · {', '.join(words)}" if words else "")
        + "".join(f" · {names[k]} {v:.2f}" for k, v in scores.items())
    )


def cells(atlas: Atlas, m: LatentMap, mask: np.ndarray) -> list[list]:
    """Per occupied CELL×CELL cell: [column, row, representative latent, latents in the cell,
    tooltip]. The representative is a labelled latent when the cell has one, else the most
    frequent."""
    ids = np.flatnonzero(mask)
    if not ids.size:
        return []
    px, py = to_pixels(m, m.x[ids], m.y[ids])
    key = (py // CELL) * (WIDTH // CELL + 1) + px // CELL
    order = np.lexsort((-m.frequency[ids], ~m.labelled[ids], key))  # by cell, labelled first, then frequency
    key, ids, px, py = key[order], ids[order], px[order], py[order]
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    counts = np.diff(np.r_[first, key.size])
    return [
        [int(px[i] // CELL), int(py[i] // CELL), int(ids[i]), int(c), tooltip(atlas, m, int(ids[i]))]
        for i, c in zip(first, counts)
    ]


def summary(m: LatentMap) -> str:
    n = m.frequency.size
    dead, dense = int((m.kind == 2).sum()), int((m.kind == 1).sum())
    flags = "".join(f", {int(v.sum())} {k}" for k, v in m.flags.items())
    return (
        f"**{m.name}**: {n} latents — {n - dead - dense} live, {dense} dense (fire on ≥ {DENSE_FREQUENCY:.0%} "
        f"of images), {dead} dead (the grey column), {int(m.labelled.sum())} labelled or interpreted{flags}"
    )


def map_html(
    atlas: Atlas, m: LatentMap, mask: np.ndarray, colour: str = "kind", only: list[str] | tuple[str, ...] = ()
) -> str:
    """One map as HTML: the PNG (coloured by kind or by a score), the cell table the page's
    script reads (no script inside), and the SAE's card when the atlas has one."""
    png = base64.b64encode(render_png(m, mask, score_values(atlas, colour))).decode()
    box = [AXES_BOX[0] * FIG_W, AXES_BOX[1] * FIG_H]
    data = json.dumps({"sae": m.name, "cell": CELL, "box": box, "cells": cells(atlas, m, mask)}, separators=(",", ":"))
    return (
        f'<div class="ov-map" data-map="{html.escape(data, quote=True)}">'
        f'<div class="ov-title">{html.escape(summary(m).replace("**", ""))} · shown: {int(mask.sum())}'
        f"{html.escape(map_note(atlas, m.flags, mask, colour, only))}</div>"
        f'<img class="ov-img" alt="latent map of {html.escape(m.name)}" width="{FIG_W}" height="{FIG_H}" '
        f'src="data:image/png;base64,{png}">{card_html(atlas)}</div>'
    )


class Overview:
    """The maps of several atlases, computed once each and cached per filter setting."""

    def __init__(self, atlases: dict[str, Atlas], cache_size: int = 16):
        self.atlases = atlases
        self._maps: dict[str, LatentMap] = {}
        self._html: OrderedDict[tuple, str] = OrderedDict()
        self.cache_size = cache_size

    def map(self, name: str) -> LatentMap:
        if name not in self.atlases:
            raise ValueError(f"unknown SAE {name!r}; this app serves {', '.join(self.atlases)}")
        if name not in self._maps:
            self._maps[name] = latent_map(self.atlases[name])
        return self._maps[name]

    def html(
        self,
        kinds: list[str] | tuple[str, ...],
        labelled_only: bool = False,
        only: list[str] | tuple[str, ...] = (),
        colour: str = "kind",
    ) -> str:
        """Every atlas's map under the filters and colouring (cached)."""
        key = (tuple(sorted(kinds)), bool(labelled_only), tuple(sorted(only)), colour)
        if key not in self._html:
            parts = [
                map_html(self.atlases[n], self.map(n), shown(self.map(n), kinds, labelled_only, only), colour, only)
                for n in self.atlases
            ]
            self._html[key] = "".join(parts)
            while len(self._html) > self.cache_size:
                self._html.popitem(last=False)
        return self._html[key]

    def nearest(
        self,
        name: str,
        px: float,
        py: float,
        kinds: list[str] | tuple[str, ...],
        labelled_only: bool = False,
        only: list[str] | tuple[str, ...] = (),
    ) -> int | None:
        """The shown latent nearest a pixel of the map (plot-area pixels, 0 at the top left)."""
        m = self.map(name)
        ids = np.flatnonzero(shown(m, kinds, labelled_only, only))
        if not ids.size:
            return None
        x, y = to_pixels(m, m.x[ids], m.y[ids])
        return int(ids[np.argmin((x - px) ** 2 + (y - py) ** 2)])
