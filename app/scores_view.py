"""The per-latent quality scores and the SAE's card in the app (no gradio): the lines a latent
page shows, the Overview's score filters ("monosemantic", "localised") and score colours, and
the card's table on the Overview. Everything comes from `Atlas.latent_scores` (the atlas's
scores/, written by `clipsae eval card --atlas`); an atlas without scores shows none of it.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from evaluation.card_io import summary_rows
from precompute.atlas_scores import LOCALISED_MORANS_I, LatentScores

FILTERS = ("monosemantic", "localised")
"""The Overview's score filters."""
COLOURS = {"kind": None, "monosemanticity": "monosemanticity", "Moran's I": "morans_i", "label AUC": "label_auc"}
"""Colour-by choices of the Overview: kind, or one score (its array name)."""
UNSCORED = (205, 205, 205)


def _scores(atlas: Any) -> LatentScores | None:
    return getattr(atlas, "latent_scores", None)


def _value(a: np.ndarray | None, latent: int) -> float | None:
    if a is None:
        return None
    v = float(a[latent])
    return None if math.isnan(v) else v


def score_data(atlas: Any, latent: int) -> dict[str, float | None] | None:
    """The latent's scores for the page's data (None for an atlas without scores)."""
    s = _scores(atlas)
    if s is None:
        return None
    return {
        "monosemanticity": _value(s.monosemanticity, latent),
        "morans_i": _value(s.morans_i, latent),
        "label_auc": _value(s.label_auc, latent),
    }


def score_line(atlas: Any, latent: int) -> str:
    """One Markdown line for the latent page ("" without scores): each score with what it means."""
    s = _scores(atlas)
    if s is None:
        return ""
    parts = []
    ms = _value(s.monosemanticity, latent)
    if s.monosemanticity is not None:
        above = s.monosemantic_above
        verdict = " — **monosemantic**" if ms is not None and above is not None and ms >= above else ""
        parts.append(
            f"monosemanticity **{ms:.3f}**{verdict} (≥ {above:.3f} counts; {s.meta.get('ms_evaluator')})"
            if ms is not None
            else "monosemanticity: fires on too few held-out images"
        )
    mi = _value(s.morans_i, latent)
    if s.morans_i is not None:
        verdict = " — **localised**" if mi is not None and mi >= LOCALISED_MORANS_I else ""
        parts.append(
            f"Moran's I **{mi:.3f}**{verdict} (patch clustering; ≥ {LOCALISED_MORANS_I} counts)"
            if mi is not None
            else "Moran's I: not scored (too few images with a patch pattern)"
        )
    auc = _value(s.label_auc, latent)
    if s.label_auc is not None and auc is not None:
        parts.append(f"label AUC **{auc:.3f}** (how well its label ranks the images it fires on; 0.5 = chance)")
    return "**Scores** (clipsae eval card): " + " · ".join(parts) if parts else ""


def score_flags(atlas: Any, n_latents: int) -> dict[str, np.ndarray]:
    """{filter name: [F] bool} for the filters this atlas's scores allow."""
    s = _scores(atlas)
    if s is None:
        return {}
    found = {"monosemantic": s.monosemantic(), "localised": s.localised()}
    return {k: v for k, v in found.items() if v is not None and len(v) == n_latents}


def score_values(atlas: Any, colour: str) -> np.ndarray | None:
    """[F] float values to colour the Overview by (NaN: unscored), or None for `kind` / absent scores."""
    s = _scores(atlas)
    name = COLOURS.get(colour)
    if s is None or name is None:
        return None
    a = getattr(s, name)
    return None if a is None else np.asarray(a, dtype=np.float64)


def score_rgb(
    px: np.ndarray, py: np.ndarray, values: np.ndarray, mask: np.ndarray, height: int, width: int
) -> np.ndarray:
    """[height, width, 3] uint8: each shown latent a 3×3 dot coloured (viridis) by the mean score of
    the latents at that pixel, between the 2nd and 98th percentile; unscored ones light grey."""
    from matplotlib import colormaps

    img = np.full((height, width, 3), 255.0)
    finite = np.isfinite(values)
    for sel, colour in ((mask & ~finite, None), (mask & finite, "score")):
        if not sel.any():
            continue
        key = py[sel] * width + px[sel]
        weights = values[sel] if colour else np.ones(int(sel.sum()))
        count = _spread(np.bincount(key, minlength=height * width).reshape(height, width))
        if colour is None:
            img[count > 0] = UNSCORED
            continue
        total = _spread(np.bincount(key, weights=weights, minlength=height * width).reshape(height, width))
        lo, hi = np.percentile(values[sel], [2, 98])
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        rgb = colormaps["viridis"](np.clip((mean - lo) / max(hi - lo, 1e-12), 0, 1))[..., :3] * 255
        img[count > 0] = rgb[count > 0]
    return img.astype(np.uint8)


def map_note(atlas: Any, flags: dict[str, np.ndarray], mask: np.ndarray, colour: str, only) -> str:
    """What the map's title adds about scores: the colour scale, or why a choice shows nothing."""
    note = ""
    values = score_values(atlas, colour)
    if values is not None:
        shown = values[mask & np.isfinite(values)]
        if shown.size:
            lo, hi = np.percentile(shown, [2, 98])
            note += f" · colour: {colour} {lo:.3g} (dark) → {hi:.3g} (yellow), grey: not scored"
    elif colour != "kind":
        note += f" · no {colour} scores in this atlas: coloured by kind"
    missing = [f for f in only if f not in flags]
    if missing:
        note += f" · no scores for {' / '.join(missing)} (clipsae eval card --atlas): the filter keeps no latent"
    return note


def _spread(grid: np.ndarray) -> np.ndarray:
    """Each pixel's 3×3 neighbourhood sum (a 3×3 dot per latent)."""
    h, w = grid.shape
    padded = np.pad(grid.astype(np.float64), 1)
    return sum(padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def card_html(atlas: Any) -> str:
    """The SAE's card as a small table under its map ("" when the atlas carries none)."""
    s = _scores(atlas)
    card = s.card if s is not None else None
    if not card:
        return ""
    try:
        rows = summary_rows(card)
    except (KeyError, TypeError):  # a card of another shape: say nothing rather than fail the tab
        return ""
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    held = card.get("heldout", {})
    where = f"{held.get('rows', '?')} rows of {str(held.get('acts', '?')).rstrip('/').rsplit('/', 1)[-1]}"
    return (
        f'<details class="ov-card" open><summary>Card of {html.escape(str(atlas.name))} '
        f"(clipsae eval card, on {html.escape(where)}; details: card.md)</summary>"
        f"<table>{body}</table></details>"
    )
