"""Write an evaluation table as Markdown + CSV + JSON (atomically) and draw its plots."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sae_core.files import atomic_write_text, atomic_write_with


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    fmt: str = "{}"

    def cell(self, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        return self.fmt.format(value)


def write_skipped(out_dir: str | Path, name: str, failures: list[str]) -> Path | None:
    """OUT/name_skipped.txt listing the unreadable images (None when there were none)."""
    if not failures:
        return None
    path = Path(out_dir) / f"{name}_skipped.txt"
    atomic_write_text(path, "\n".join(failures) + "\n")
    return path


def markdown(rows: list[dict[str, Any]], columns: list[Column]) -> str:
    lines = ["| " + " | ".join(c.title for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(c.cell(r.get(c.key)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_table(
    out_dir: str | Path, name: str, rows: list[dict[str, Any]], columns: list[Column], title: str = "", notes: str = ""
) -> str:
    """OUT/name.md (title, table, notes), OUT/name.csv (every key, full precision) and
    OUT/name.json; returns the Markdown table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, columns)
    text = (f"# {title}\n\n" if title else "") + table + "\n" + (f"\n{notes}\n" if notes else "")
    atomic_write_text(out / f"{name}.md", text)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / f"{name}.csv", buf.getvalue())
    atomic_write_text(out / f"{name}.json", json.dumps(rows, indent=2, default=str))
    return table


def scatter_png(
    path: str | Path,
    points: list[tuple[float, float, str]],
    xlabel: str,
    ylabel: str,
    title: str,
    log_x: bool = False,
    hline: tuple[float, str] | None = None,
) -> Path:
    """One labelled point per (x, y, label), optionally a horizontal reference line; PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    ax.plot(xs, ys, "o-" if len(points) > 1 else "o", color="#c0392b")
    for x, y, label in points:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if hline is not None:
        ax.axhline(hline[0], color="#555", linestyle="--", linewidth=1, label=hline[1])
        ax.legend(loc="lower right", fontsize=8)
    if log_x and all(x > 0 for x in xs):
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    try:
        return atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
