"""Every table of the app as a CSV file (no gradio): a list of rows (a Dataframe's value), or
the tables inside a Markdown text (Inspect's latent table, Steer's readout), with links and
emphasis reduced to their text. Files are written to a fresh folder under the system temp
folder, which Gradio serves as downloads."""

from __future__ import annotations

import atexit
import csv
import hashlib
import io
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
EMPHASIS = re.compile(r"(\*\*|__|\*|`)")
SAFE_STEM = re.compile(r"[^A-Za-z0-9_.-]+")
FORMULA = ("=", "+", "-", "@", "\t", "\r")
"""Cells starting with these could run as spreadsheet formulas: such text cells get a leading quote."""


def plain(cell: str) -> str:
    """A Markdown cell as text: links become their text, emphasis marks go, spaces are trimmed."""
    return EMPHASIS.sub("", LINK.sub(r"\1", cell)).strip()


def markdown_tables(md: str) -> list[list[list[str]]]:
    """The pipe tables in a Markdown text, each a list of rows (the header row first, the
    |---| separator dropped), cells as plain text."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in (md or "").splitlines() + [""]:
        s = line.strip()
        if s.startswith("|") and s.endswith("|") and len(s) > 1:
            cells = [plain(c) for c in s[1:-1].split("|")]
            if not all(set(c) <= set("-: ") and c for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _safe(cell: Any) -> Any:
    if isinstance(cell, str) and cell.startswith(FORMULA) and not _is_number(cell):
        return "'" + cell
    return cell


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def csv_text(tables: Sequence[Sequence[Sequence[Any]]]) -> str:
    """CSV of one or more tables (each with its header row), separated by an empty row."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    for k, table in enumerate(tables):
        if k:
            w.writerow([])
        w.writerows([[_safe(c) for c in row] for row in table])
    return out.getvalue()


_EXPORTS: Path | None = None


def export_file(text: str, name: str) -> str:
    """`text` as a download named `name`: in this process's one export folder (removed at
    exit), under a sub-folder named by the content's hash, so a repeated download reuses its
    file and the folder grows only with distinct contents, never per click."""
    global _EXPORTS
    if _EXPORTS is None:
        _EXPORTS = Path(tempfile.mkdtemp(prefix="clipsae-exports-"))
        atexit.register(shutil.rmtree, _EXPORTS, True)
    data = text.encode("utf-8")
    path = _EXPORTS / hashlib.sha256(data).hexdigest()[:16] / name
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return str(path)


def write_csv(tables: Sequence[Sequence[Sequence[Any]]], stem: str) -> str | None:
    """A CSV file of the tables, named `<stem>.csv` (`export_file`); None when there is no row."""
    if not any(len(t) > 1 for t in tables):
        return None
    return export_file(csv_text(tables), f"{SAFE_STEM.sub('_', stem)[:60] or 'table'}.csv")


def frame_rows(value: Any, headers: Sequence[str] = ()) -> list[list[Any]]:
    """A Dataframe's value (pandas DataFrame, {"headers", "data"} dict or list of rows) as a
    table with its header row."""
    if value is None:
        return []
    if hasattr(value, "columns") and hasattr(value, "values"):  # pandas
        return [list(map(str, value.columns))] + [list(r) for r in value.values.tolist()]
    if isinstance(value, dict):
        return [list(value.get("headers") or headers)] + [list(r) for r in value.get("data") or []]
    rows = [list(r) for r in value]
    return [list(headers)] + rows if headers else rows
