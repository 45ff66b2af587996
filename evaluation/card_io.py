"""The card's files: card.json (versioned; every field in docs/scorecard.md), card.md (the
table a person reads, with the reasons for anything not measured), latents.csv (per-latent
numbers) and the distribution PNGs; `read_card` is the one reader (`clipsae eval compare`,
the app), which enforces the format and version.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from sae_core.files import atomic_write_text, atomic_write_with, check_format

CARD_FORMAT = "clipsae-card"
CARD_VERSION = 1
"""1: first release (docs/scorecard.md)."""
CARD_FILE = "card.json"
SECTIONS = (
    "reconstruction",
    "sparsity",
    "downstream",
    "probing",
    "monosemanticity",
    "localisation",
    "stability",
    "label_quality",
    "absorption",
)
"""The measured sections, in card order; one that the inputs do not allow is null, and
`skipped` says why."""
ABSORPTION_LEFT_OUT = (
    "left out: absorption (ViSAEBench's M7) needs a class hierarchy (parent and child classes, e.g. "
    "WordNet sibling groups) with labelled images of each class, which no input of the card carries; "
    "a card that guessed one would score the guess"
)


def _num(x: Any, fmt: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return fmt.format(x)


def summary_rows(card: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, value) rows of the card's headline table (card.md, the README, the app)."""
    r, s = card["reconstruction"], card["sparsity"]
    rows = [
        ("FVU (1 − explained variance)", _num(r["fvu"], "{:.4f}")),
        ("Explained variance", _num(r["explained_variance"], "{:.4f}")),
        ("Cosine similarity", _num(r["cosine_similarity"], "{:.4f}")),
        ("L0 mean / median", f"{_num(s['l0_mean'], '{:.1f}')} / {_num(s['l0_median'], '{:.1f}')}"),
        ("Dead latents", _num(s["dead_fraction"], "{:.1%}")),
        (f"Dense latents (≥ {s['dense_threshold']:.0%} of rows)", _num(s["dense_fraction"], "{:.1%}")),
    ]
    d = card["downstream"]
    if d:
        rows.append(
            (
                f"Zero-shot accuracy, CLIP → + SAE ({d['dataset']})",
                f"{_num(d['acc_clip'], '{:.3f}')} → {_num(d['acc_sae'], '{:.3f}')}",
            )
        )
        rows.append(("CE recovered", _num(d["ce_recovered"], "{:.1%}")))
    p = card["probing"]
    if p:
        rows.append(
            (
                "Sparse probing accuracy, k = " + " / ".join(map(str, p["k"])),
                " / ".join(_num(a, "{:.3f}") for a in p["accuracy"]),
            )
        )
        rows.append(
            ("Sparse probing AUC, k = " + " / ".join(map(str, p["k"])), " / ".join(_num(a, "{:.3f}") for a in p["auc"]))
        )
    m = card["monosemanticity"]
    if m:
        rows.append(
            (
                f"Monosemanticity, median (baseline {m['baseline']:.3f}; {m['evaluator']})",
                f"{_num(m['median'], '{:.3f}')} ({_num(m['monosemantic_fraction'], '{:.1%}')} monosemantic)",
            )
        )
    loc = card["localisation"]
    if loc:
        rows.append(
            (
                "Moran's I, median over scored latents",
                f"{_num(loc['median'], '{:.3f}')} ({loc['n_scored']} scored, "
                f"{_num(loc['localised_fraction'], '{:.1%}')} localised)",
            )
        )
    for st in card["stability"] or []:
        rows.append(
            (
                f"Seed stability vs {st['other']} (cos ≥ {st['threshold']:g})",
                f"{st['matched_fraction']:.1%} matched, mean cos {st['mean_cosine']:.3f}",
            )
        )
    lq = card["label_quality"]
    if lq:
        rows.append(
            (f"Label AUC, median ({lq['source']})", f"{_num(lq['median'], '{:.3f}')} ({lq['n_scored']} labels)")
        )
    return rows


def card_markdown(card: dict[str, Any]) -> str:
    """card.md: the headline table, the images, and why each missing section is missing."""
    sae, held = card["sae"], card["heldout"]
    lines = [
        f"# Card: {sae['name']}",
        "",
        f"{sae['architecture']} SAE, {sae['d_sae']} latents on {sae['d_in']}-d "
        f"`{sae['hook_name']}` activations of {sae['model_name']} ({sae['pretrained']}); held-out: "
        f"{held['rows']} rows, {held['images']} images (`{held['acts']}`).",
        "",
        "| Metric | Value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(card)]
    lines.append("")
    for name, file in card["files"].items():
        if file.endswith(".png"):
            lines += [f"![{name}]({file})", ""]
    if card["skipped"]:
        lines += ["Not measured:", ""] + [f"- **{k}**: {v}" for k, v in card["skipped"].items()] + [""]
    lines.append("Definitions: docs/scorecard.md. Per-latent numbers: latents.csv.")
    return "\n".join(lines) + "\n"


def latents_csv(columns: dict[str, np.ndarray]) -> str:
    """One row per latent, one column per per-latent number (empty where undefined)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    names = list(columns)
    w.writerow(["latent", *names])
    n = len(next(iter(columns.values())))
    cols = [np.asarray(columns[k]) for k in names]
    for i in range(n):
        w.writerow(
            [i]
            + [
                ""
                if (c.dtype.kind == "f" and np.isnan(c[i]))
                else (f"{c[i]:.6g}" if c.dtype.kind == "f" else int(c[i]))
                for c in cols
            ]
        )
    return buf.getvalue()


def hist_png(path: Path, values: np.ndarray, xlabel: str, title: str, line: float | None = None) -> Path:
    """A histogram of the finite values (50 bins), with an optional vertical threshold line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = values[np.isfinite(values)]
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=110)
    ax.hist(v, bins=50, color="#1f4ed8", alpha=0.85)
    if line is not None:
        ax.axvline(line, color="#c0392b", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("latents")
    ax.set_title(f"{title} ({v.size} latents)", fontsize=10)
    fig.tight_layout()
    try:
        return atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def write_card(out: Path, card: dict[str, Any], columns: dict[str, np.ndarray]) -> Path:
    """latents.csv, card.md, then card.json (each atomically); returns card.json's path."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "latents.csv", latents_csv(columns))
    atomic_write_text(out / "card.md", card_markdown(card))
    return atomic_write_text(out / CARD_FILE, json.dumps(card, indent=1, allow_nan=False))


def read_card(path: str | Path) -> dict[str, Any]:
    """A checked card.json (a card folder or the file itself), or a one-line error."""
    p = Path(path)
    p = p / CARD_FILE if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no {CARD_FILE} (write one with clipsae eval card)")
    try:
        card = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p} is not valid JSON ({exc}); run clipsae eval card again") from None
    check_format(card, CARD_FORMAT, CARD_VERSION, p, "card", upgrade_hint="run clipsae eval card again")
    missing = [s for s in ("sae", "heldout", *SECTIONS) if s not in card]
    if missing:
        raise ValueError(f"{p} lacks the sections {', '.join(missing)}; run clipsae eval card again")
    return card


def clean(x: Any) -> Any:
    """JSON-safe: NaN and inf become None, numpy scalars plain numbers (recursively)."""
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x
