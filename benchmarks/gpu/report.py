"""`rows.jsonl` -> `results.json` (every row, grouped by section) and `results.md` (the goals
table first, then one table per section). Rewritten after each section; also a command:

    python benchmarks/gpu/report.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ROWS = "rows.jsonl"

# (goal, section, row name, unit, limit, higher is better)
GOALS = [
    (
        "slider move (decoder only, 512², 12 steps, fp16) ≤ 0.5 s",
        "kandinsky",
        "slider move fp16 512px 12 steps",
        "s",
        0.5,
        False,
    ),
    (
        "slider move (decoder only, 512², 16 steps, fp16) ≤ 0.5 s",
        "kandinsky",
        "slider move fp16 512px 16 steps",
        "s",
        0.5,
        False,
    ),
    (
        "full Generate (prior + original + steered, 512², 12 steps, fp16) ≤ 1.5 s",
        "kandinsky",
        "full generate fp16 512px 12 steps",
        "s",
        1.5,
        False,
    ),
    (
        "training ≥ 1.3× sparsify with Triton (wide set, samples/s of the loop)",
        "train",
        "wide: clipsae / sparsify (loop)",
        "×",
        1.3,
        True,
    ),
    ("98,304-latent atlas over 32,000 images ≤ 60 s", "atlas", "atlas A (98,304 x 32,000)", "s", 60.0, False),
]

ANCHORS = (
    "Anchors: diffusers' Kandinsky 2.2 combined pipeline, fp16, 50 decoder steps, 512², batch 1: 3.5 s on an "
    "A10G with 9.8 GB peak; SDXL-Turbo: a 512² image in ~0.2 s on an A100; saev: ~42k patches/s on an A6000."
)


def read_rows(out: Path) -> list[dict[str, Any]]:
    """Every complete row of rows.jsonl (a line cut by a kill is ignored)."""
    rows = []
    path = Path(out) / ROWS
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def goals_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| goal | measured | met |", "|---|---|---|"]
    for goal, section, name, unit, limit, higher in GOALS:
        hit = next((r for r in rows if r["section"] == section and r["name"] == name), None)
        if hit is None or not isinstance(hit["value"], (int, float)):
            lines.append(f"| {goal} | {'not measured' if hit is None else _fmt(hit['value'])} | — |")
            continue
        ok = hit["value"] >= limit if higher else hit["value"] <= limit
        lines.append(f"| {goal} | {_fmt(hit['value'])} {unit} | {'yes' if ok else '**no**'} |")
    return lines


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    env = {r["name"]: r["value"] for r in rows if r["section"] == "env"}
    title = "Device benchmark (smoke: tiny components on the CPU)" if meta.get("smoke") else "Device benchmark"
    out = [
        f"# {title}",
        "",
        f"Started {meta.get('started', '?')} on {env.get('device name', meta.get('device', '?'))}; "
        f"torch {env.get('torch', '?')}, CUDA {env.get('cuda', '?')}, triton {env.get('triton', '?')}.",
        "",
        "## Goals",
        "",
        *goals_table(rows),
        "",
        ANCHORS,
        "",
    ]
    for section in dict.fromkeys(r["section"] for r in rows):
        out += [f"## {section}", "", "| measure | value | unit | note |", "|---|---|---|---|"]
        for r in rows:
            if r["section"] == section:
                out.append(
                    f"| {_fmt(r['name'])} | {_fmt(r['value'])} | {r.get('unit', '')} | {_fmt(r.get('note', ''))} |"
                )
        out.append("")
    return "\n".join(out)


def write_report(out: Path, meta: dict[str, Any] | None = None) -> None:
    """results.json and results.md from the rows so far (each written atomically)."""
    out = Path(out)
    meta = meta or (json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else {})
    rows = read_rows(out)
    by_section: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_section.setdefault(r["section"], []).append(r)
    for name, text in (
        ("results.json", json.dumps({"meta": meta, "sections": by_section}, indent=1, default=str)),
        ("results.md", markdown(rows, meta)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


if __name__ == "__main__":
    write_report(Path(sys.argv[1]))
