"""Lists of latents (no gradio): bookmarks in named lists, each with a note; export to and
import from JSON and CSV. A browser session keeps its lists (`app.ui_lists` stores them in
the browser); the server never writes them anywhere.

Lists are a plain dict, `{list name: [{"sae": NAME, "latent": N, "note": TEXT}, ...]}`.

JSON file::

    {"format": "clipsae-lists", "version": 1,
     "lists": {"dogs": [{"sae": "atlas", "latent": 12, "note": "fires on snouts"}]}}

CSV file: a header row `list,sae,latent,note`, then one row per bookmark (UTF-8; the
`note` column may be left out). Import checks every row and refuses the whole file with one
line naming the first problem (row number, field); latents of an SAE this app serves must
be in its range.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMAT, VERSION = "clipsae-lists", 1
COLUMNS = ["list", "sae", "latent", "note"]
MAX_FILE = 1_000_000
MAX_LISTS, MAX_ITEMS = 100, 2000
MAX_NAME, MAX_NOTE = 80, 500

Lists = dict[str, list[dict[str, Any]]]
Checker = Callable[[str, Any], tuple[str, int]]
"""(sae, latent) -> (the SAE's name, the latent as an int), raising ValueError when invalid."""


def list_name(name: Any) -> str:
    """A list's name, trimmed; refuses an empty or too long one."""
    text = " ".join(str(name or "").split())
    if not text:
        raise ValueError("give the list a name")
    if len(text) > MAX_NAME:
        raise ValueError(f"a list name has at most {MAX_NAME} characters (this one has {len(text)})")
    return text


def note_text(note: Any) -> str:
    text = str(note or "").strip()
    if len(text) > MAX_NOTE:
        raise ValueError(f"a note has at most {MAX_NOTE} characters (this one has {len(text)})")
    return text


def copy(lists: Lists | None) -> Lists:
    return {k: [dict(e) for e in v] for k, v in (lists or {}).items()}


def add(lists: Lists | None, name: Any, sae: str, latent: Any, note: Any, check: Checker) -> tuple[Lists, str]:
    """Lists with the latent bookmarked in list `name` (created if new; a latent already there
    gets the new note). Returns (lists, what happened)."""
    out, name = copy(lists), list_name(name)
    sae, latent = check(sae, latent)
    note = note_text(note)
    if name not in out and len(out) >= MAX_LISTS:
        raise ValueError(f"at most {MAX_LISTS} lists")
    items = out.setdefault(name, [])
    for e in items:
        if e["sae"] == sae and e["latent"] == latent:
            e["note"] = note
            return out, f"Latent {latent} of {sae} was already in “{name}”: its note is updated."
    if len(items) >= MAX_ITEMS:
        raise ValueError(f"“{name}” already holds {MAX_ITEMS} latents, the most a list holds")
    items.append({"sae": sae, "latent": latent, "note": note})
    return out, f"Latent {latent} of {sae} added to “{name}” ({len(items)} latent{'s' * (len(items) != 1)})."


def remove(lists: Lists | None, name: Any, sae: str, latent: Any, check: Checker) -> tuple[Lists, str]:
    """Lists without that bookmark; a list left empty is kept."""
    out, name = copy(lists), list_name(name)
    sae, latent = check(sae, latent)
    if name not in out:
        raise ValueError(f"there is no list “{name}”")
    kept = [e for e in out[name] if not (e["sae"] == sae and e["latent"] == latent)]
    if len(kept) == len(out[name]):
        raise ValueError(f"latent {latent} of {sae} is not in “{name}”")
    out[name] = kept
    return out, f"Latent {latent} removed from “{name}”."


def delete(lists: Lists | None, name: Any) -> tuple[Lists, str]:
    out, name = copy(lists), list_name(name)
    if out.pop(name, None) is None:
        raise ValueError(f"there is no list “{name}”")
    return out, f"List “{name}” deleted."


def rows(lists: Lists | None, name: str | None = None) -> list[list[Any]]:
    """[list, sae, latent, note] for each bookmark (of one list, or all)."""
    return [
        [k, e["sae"], e["latent"], e["note"]]
        for k, items in (lists or {}).items()
        if name in (None, "", k)
        for e in items
    ]


def to_json(lists: Lists | None) -> str:
    return json.dumps({"format": FORMAT, "version": VERSION, "lists": copy(lists)}, indent=1, ensure_ascii=False)


def to_csv(lists: Lists | None) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(rows(lists))
    return out.getvalue()


def _from_json(text: str) -> list[tuple[str, Any, Any, Any]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f'not a clipsae lists file: expected {{"format": "{FORMAT}", "version": 1, "lists": …}}')
    if doc.get("version") != VERSION:
        raise ValueError(f"lists file version {doc.get('version')!r}; this app reads version {VERSION}")
    if not isinstance(doc.get("lists"), dict):
        raise ValueError('"lists" must map each list name to a list of {"sae", "latent", "note"}')
    out = []
    for name, items in doc["lists"].items():
        if not isinstance(items, list):
            raise ValueError(f"list {str(name)[:40]!r}: expected a list of bookmarks")
        for k, e in enumerate(items, 1):
            if not isinstance(e, dict) or "latent" not in e:
                raise ValueError(f'list {str(name)[:40]!r}, bookmark {k}: expected {{"sae", "latent", "note"}}')
            out.append((name, e.get("sae", ""), e["latent"], e.get("note", "")))
    return out


def _from_csv(text: str) -> list[tuple[str, Any, Any, Any]]:
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in COLUMNS[:3] if c not in header]
    if missing:
        raise ValueError(f"the CSV header must name the columns {', '.join(COLUMNS)} (missing: {', '.join(missing)})")
    at = {c: header.index(c) for c in COLUMNS if c in header}
    out = []
    for k, row in enumerate(reader, 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise ValueError(f"row {k}: {len(row)} cells where the header has {len(header)}")
        out.append((row[at["list"]], row[at["sae"]], row[at["latent"]], row[at["note"]] if "note" in at else ""))
    return out


def parse(data: bytes, filename: str, check: Checker) -> Lists:
    """Lists from a JSON or CSV file's bytes (by its extension), every row checked; the first
    problem refuses the file with one line."""
    suffix = Path(filename or "").suffix.lower()
    if suffix not in (".json", ".csv"):
        raise ValueError(f"import a .json or .csv lists file (got {Path(filename or '?').name[:60]!r})")
    if len(data) > MAX_FILE:
        raise ValueError(f"the lists file is {len(data):,} bytes; at most {MAX_FILE:,}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("the lists file is not UTF-8 text") from None
    entries = _from_json(text) if suffix == ".json" else _from_csv(text)
    out: Lists = {}
    for k, (name, sae, latent, note) in enumerate(entries, 1):
        where = f"row {k + 1}" if suffix == ".csv" else f"bookmark {k}"
        try:
            out, _ = add(out, name, str(sae or ""), latent, note, check)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if not out:
        raise ValueError("the lists file holds no bookmark")
    return out


def merge(lists: Lists | None, other: Lists) -> Lists:
    """`lists` with `other`'s bookmarks added (a bookmark already there takes the imported note)."""
    out = copy(lists)
    for name, items in other.items():
        mine = out.setdefault(name, [])
        for e in items:
            same = next((m for m in mine if m["sae"] == e["sae"] and m["latent"] == e["latent"]), None)
            if same is not None:
                same["note"] = e["note"]
            else:
                mine.append(dict(e))
    return out


def checker(pick: Callable[[str], Any]) -> Checker:
    """The check of (sae, latent) against the served atlases (`Handlers.pick`): an empty SAE
    is the main atlas, a served one's latent must be in its range; an SAE not served here
    (a list from another server) is kept with any whole-number latent."""

    def check(sae: str, latent: Any) -> tuple[str, int]:
        sae = str(sae or "").strip()
        try:
            atlas, _ = pick(sae)
        except ValueError:
            if len(sae) > MAX_NAME:
                raise ValueError(f"an SAE name has at most {MAX_NAME} characters") from None
            text = str(latent).strip()
            if not text.isdigit():
                raise ValueError(f"latent {text[:20]!r} is not a whole number >= 0") from None
            return sae, int(text)
        return atlas.name, atlas.check_latent(latent)

    return check
