"""`clipsae eval compare CARD... --out DIR`: several SAEs' cards side by side (compare.md,
.csv, .json) and the L0–explained-variance frontier, one point per SAE (frontier.png).

The frontier joins the SAEs no other SAE beats on both axes (lower L0 and higher explained
variance). Cards measured on different held-out activations are compared all the same, and
the notes say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sae_core.files import atomic_write_with

from .configs import CompareConfig
from .card_io import read_card
from .report import Column, write_table


COLUMNS = [
    Column("sae", "SAE"),
    Column("architecture", "Arch"),
    Column("d_sae", "Latents"),
    Column("l0_mean", "L0", "{:.1f}"),
    Column("explained_variance", "EV", "{:.4f}"),
    Column("fvu", "FVU", "{:.4f}"),
    Column("cosine_similarity", "Cos", "{:.4f}"),
    Column("dead_fraction", "Dead", "{:.1%}"),
    Column("dense_fraction", "Dense", "{:.1%}"),
    Column("ce_recovered", "CE rec.", "{:.1%}"),
    Column("probe_area", "Probe (area over k)", "{:.3f}"),
    Column("ms_median", "MS median", "{:.3f}"),
    Column("monosemantic_fraction", "Monosemantic", "{:.1%}"),
    Column("morans_median", "Moran's I", "{:.3f}"),
    Column("localised_fraction", "Localised", "{:.1%}"),
    Column("label_auc_median", "Label AUC", "{:.3f}"),
    Column("stability", "Stability (matched)", "{:.1%}"),
    Column("on_frontier", "Frontier"),
]


def card_row(card: dict[str, Any]) -> dict[str, Any]:
    """One table row: the card's headline numbers (None where it did not measure them)."""

    def get(section: str, key: str) -> Any:
        s = card.get(section)
        return s.get(key) if isinstance(s, dict) else None

    stab = card.get("stability") or []
    return {
        "sae": card["sae"]["name"],
        "architecture": card["sae"]["architecture"],
        "d_sae": card["sae"]["d_sae"],
        "acts": card["heldout"]["acts"],
        "l0_mean": get("sparsity", "l0_mean"),
        "explained_variance": get("reconstruction", "explained_variance"),
        "fvu": get("reconstruction", "fvu"),
        "cosine_similarity": get("reconstruction", "cosine_similarity"),
        "dead_fraction": get("sparsity", "dead_fraction"),
        "dense_fraction": get("sparsity", "dense_fraction"),
        "ce_recovered": get("downstream", "ce_recovered"),
        "probe_area": get("probing", "area_under_k_accuracy"),
        "ms_median": get("monosemanticity", "median"),
        "monosemantic_fraction": get("monosemanticity", "monosemantic_fraction"),
        "morans_median": get("localisation", "median"),
        "localised_fraction": get("localisation", "localised_fraction"),
        "label_auc_median": get("label_quality", "median"),
        "stability": float(np.mean([s["matched_fraction"] for s in stab])) if stab else None,
    }


def frontier(l0: np.ndarray, ev: np.ndarray) -> np.ndarray:
    """[n] bool: the points no other point beats on both axes (lower-or-equal L0 and
    higher-or-equal EV, one of them strictly)."""
    n = len(l0)
    on = np.ones(n, dtype=bool)
    for i in range(n):
        beaten = (l0 <= l0[i]) & (ev >= ev[i]) & ((l0 < l0[i]) | (ev > ev[i]))
        on[i] = not beaten.any()
    return on


def frontier_png(path: Path, rows: list[dict[str, Any]]) -> Path:
    """L0 (log) against explained variance, one labelled point per SAE, the frontier joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r["l0_mean"], r["explained_variance"], r["sae"], r["on_frontier"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6.2, 4.4), dpi=120)
    for x, y, name, on in pts:
        ax.plot([x], [y], "o", color="#c0392b" if on else "#7f8c8d")
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    line = sorted((x, y) for x, y, _, on in pts if on)
    if len(line) > 1:
        ax.plot([p[0] for p in line], [p[1] for p in line], "-", color="#c0392b", linewidth=1, label="frontier")
        ax.legend(loc="lower right", fontsize=8)
    if all(x > 0 for x, *_ in pts):
        ax.set_xscale("log")
    ax.set_xlabel("L0 (active latents per input, held-out)")
    ax.set_ylabel("explained variance (held-out)")
    ax.set_title(f"L0–EV frontier of {len(pts)} SAEs", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    try:
        return atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def compare_main(cfg: CompareConfig) -> str:
    """Read every card, write the table and the frontier plot; returns the Markdown table."""
    rows = [card_row(read_card(c)) for c in cfg.cards]
    on = frontier(
        np.array([r["l0_mean"] for r in rows], dtype=float),
        np.array([r["explained_variance"] for r in rows], dtype=float),
    )
    for r, o in zip(rows, on):
        r["on_frontier"] = "yes" if o else ""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    frontier_png(out / "frontier.png", rows)
    acts = sorted({r["acts"] for r in rows})
    notes = (
        "Held-out activations: "
        + ", ".join(f"`{a}`" for a in acts)
        + (" — the cards were measured on different data: compare with care." if len(acts) > 1 else ".")
        + " Frontier: no other SAE has both a lower L0 and a higher EV (frontier.png). "
        "Definitions: docs/scorecard.md; – means the card did not measure it."
    )
    return write_table(out, "compare", rows, COLUMNS, title=f"{len(rows)} SAEs side by side", notes=notes)
