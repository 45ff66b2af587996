"""The Lists tab, the Browse page's bookmark row, and a CSV download under every table.

Lists live in the browser (`gr.BrowserState`, so a reload keeps them; the server stores
nothing); `app.lists` holds the logic and documents the JSON and CSV formats. A row of the
Lists table opens that latent's page in Browse.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gradio as gr

from . import lists as L
from .handlers import Handlers
from .tables import export_file, frame_rows, markdown_tables, write_csv
from .ui_answer import answer
from .ui_common import UI, guard

TITLE, ID = "Lists", "lists"
HEADERS = ["list", "sae", "latent", "label", "note"]
DEFAULT_LIST = "bookmarks"
STORAGE_KEY = "clipsae-lists"


def bookmark_row(h: Handlers) -> dict[str, Any]:
    """The Browse page's row: bookmark the latent shown into a named list, with a note."""
    c: dict[str, Any] = {}
    with gr.Row(equal_height=True):
        c["b_list"] = gr.Dropdown(
            [DEFAULT_LIST],
            value=DEFAULT_LIST,
            allow_custom_value=True,
            scale=1,
            min_width=150,
            label="List (pick or type a new name)",
            elem_id="bookmark-list",
        )
        c["b_note"] = gr.Textbox(
            label="Note", placeholder="what this latent is about", scale=3, min_width=200, elem_id="bookmark-note"
        )
        c["b_add"] = gr.Button("☆ Bookmark this latent", scale=0, min_width=160, elem_id="bookmark-add")
    c["b_status"] = gr.Markdown(elem_id="bookmark-status")
    return c


def create_ui(h: Handlers) -> dict[str, Any]:
    """The Lists tab's components."""
    c: dict[str, Any] = {}
    c["state"] = gr.BrowserState({}, storage_key=STORAGE_KEY)
    gr.Markdown(
        "Bookmark latents into named lists, with a note (here, or with ☆ on a latent's page). Lists stay in "
        "this browser; export them as JSON or CSV to keep or share them (format: docs/app.md). Click a row "
        "to open its page."
    )
    with gr.Row(equal_height=True):
        c["name"] = gr.Dropdown(
            [DEFAULT_LIST],
            value=DEFAULT_LIST,
            allow_custom_value=True,
            min_width=150,
            label="List (pick or type a new name)",
            elem_id="lists-name",
        )
        c["sae"] = gr.Dropdown(
            list(h.browsable), value=h.atlas.name, label="SAE", min_width=150, visible=len(h.browsable) > 1
        )
        c["latent"] = gr.Textbox(label="Latent", min_width=90, elem_id="lists-latent")
        c["note"] = gr.Textbox(label="Note", min_width=200, scale=2, elem_id="lists-note")
    with gr.Row():
        c["add"] = gr.Button("Add / update note", variant="primary", elem_id="lists-add")
        c["remove"] = gr.Button("Remove from list", elem_id="lists-remove")
        c["delete"] = gr.Button("Delete this list", variant="stop", elem_id="lists-delete")
    c["status"] = gr.Markdown(elem_id="lists-status")
    c["table"] = gr.Dataframe(
        headers=HEADERS,
        label="Bookmarks (click a row to open its page)",
        interactive=False,
        elem_id="lists-table",
        elem_classes="clipsae-table",
        max_height=360,
    )
    with gr.Row(equal_height=True):
        with gr.Column(scale=0, min_width=200):
            c["export_json"] = gr.Button("Export all lists (JSON)", elem_id="lists-export-json")
            c["export_csv"] = gr.Button("Export all lists (CSV)", elem_id="lists-export-csv")
        c["exported"] = gr.File(label="Exported lists", elem_id="lists-exported")
        c["import"] = gr.File(
            label="Import lists (.json or .csv; merged into yours)",
            file_types=[".json", ".csv"],
            type="filepath",
            elem_id="lists-import",
        )
    return c


def _label(h: Handlers, sae: str, latent: int) -> str:
    atlas = next((a for a, _ in h.browsable.values() if a.name == sae), None)
    return ", ".join(atlas.short_label(latent)) if atlas is not None and latent < atlas.n_latents else ""


def _views(h: Handlers, lists: L.Lists | None, name: str | None) -> tuple:
    """(table rows, the Lists tab's list picker, Browse's list picker)."""
    lists = lists or {}
    names = list(lists) or [DEFAULT_LIST]
    keep = name if name else names[0]
    table = [[k, s, i, _label(h, s, i), note] for k, s, i, note in L.rows(lists)]
    return (
        table,
        gr.Dropdown(choices=names if keep in names else names + [keep], value=keep),
        gr.Dropdown(choices=names if keep in names else names + [keep], value=keep),
    )


def wire(h: Handlers, ui: UI) -> None:
    """The Lists tab's and the bookmark row's events."""
    c, b = ui.comps[ID], ui.comps["browse"]
    check = L.checker(h.pick)
    views = [c["table"], c["name"], b["b_list"]]

    def bookmark(lists: dict | None, name: str, note: str, data: dict | None) -> tuple:
        if not data:
            raise ValueError("open a latent's page first")
        new, msg = L.add(lists, name or DEFAULT_LIST, data["sae"], data["latent"], note, check)
        return (new, f"✓ {msg}", *_views(h, new, L.list_name(name or DEFAULT_LIST)))

    def change(action: str, lists: dict | None, name: str, sae: str, latent: str, note: str) -> tuple:
        if action == "add":
            new, msg = L.add(lists, name, sae, latent, note, check)
        elif action == "remove":
            new, msg = L.remove(lists, name, sae, latent, check)
        else:
            new, msg = L.delete(lists, name)
            name = next(iter(new), DEFAULT_LIST)
        return (new, f"✓ {msg}", *_views(h, new, name))

    def export(lists: dict | None, kind: str) -> str:
        if not lists:
            raise ValueError("there is no list to export yet: bookmark a latent first")
        return export_file(L.to_json(lists) if kind == "json" else L.to_csv(lists), f"clipsae-lists.{kind}")

    def load_file(lists: dict | None, path: str | None) -> tuple:
        if not path:
            return (lists, "", *_views(h, lists, None))
        imported = L.parse(Path(path).read_bytes(), Path(path).name, check)
        new = L.merge(lists, imported)
        n = sum(len(v) for v in imported.values())
        return (
            new,
            f"✓ Imported {n} bookmark{'s' * (n != 1)} in {len(imported)} list{'s' * (len(imported) != 1)}.",
            *_views(h, new, next(iter(imported))),
        )

    def open_row(evt: gr.SelectData) -> str:
        row = evt.row_value if evt is not None else None
        if not row:
            raise ValueError("click a row of the table")
        return f"{row[1]}|{row[2]}|{time.time_ns()}"

    def add(lists: dict | None, name: str, sae: str, latent: str, note: str) -> tuple:
        return change("add", lists, name, sae, latent, note)

    def remove(lists: dict | None, name: str, sae: str, latent: str, note: str) -> tuple:
        return change("remove", lists, name, sae, latent, note)

    def delete(lists: dict | None, name: str, sae: str, latent: str, note: str) -> tuple:
        return change("delete", lists, name, sae, latent, note)

    n = 2 + len(views)  # state, status, views
    b["b_add"].click(
        answer(bookmark, n, 1),
        [c["state"], b["b_list"], b["b_note"], b["data"]],
        [c["state"], b["b_status"], *views],
        api_name=False,
    )
    for button, fn in ((c["add"], add), (c["remove"], remove), (c["delete"], delete)):
        button.click(
            answer(fn, n, 1),
            [c["state"], c["name"], c["sae"], c["latent"], c["note"]],
            [c["state"], c["status"], *views],
            api_name=False,
        )
    c["export_json"].click(answer(lambda s: export(s, "json"), 1), [c["state"]], c["exported"], api_name=False)
    c["export_csv"].click(answer(lambda s: export(s, "csv"), 1), [c["state"]], c["exported"], api_name=False)
    c["import"].upload(
        answer(load_file, n, 1), [c["state"], c["import"]], [c["state"], c["status"], *views], api_name=False
    ).then(lambda: None, None, c["import"], api_name=False, queue=False)
    c["table"].select(answer(open_row, 1), None, b["nav"], api_name=False)
    c["name"].input(lambda name: gr.Dropdown(value=name), [c["name"]], b["b_list"], api_name=False, queue=False)
    ui.blocks.load(lambda s: _views(h, s, None), [c["state"]], views, api_name=False, queue=False)


# ---------------------------------------------------------------- every table as CSV
def _markdown_csv(stem: str):
    def to_file(md: str | None) -> Any:
        path = write_csv(markdown_tables(md or ""), stem)
        return gr.DownloadButton(value=path, visible=path is not None)

    return guard(to_file)


def _frame_csv(stem: str, headers: list[str]):
    def to_file(value: Any) -> Any:
        path = write_csv([frame_rows(value, headers)], stem)
        return gr.DownloadButton(value=path, visible=path is not None)

    return guard(to_file)


CSV_TABLES = [  # (tab, component, file stem, button text, Dataframe headers or None for a Markdown table)
    ("browse", "found", "latents", "the latent list", ["latent", "label", "fires on (%)", "max"]),
    ("inspect", "table", "inspect-latents", "the image's latents", None),
    ("steer", "readout", "steer-readout", "the steering readout", None),
    (ID, "table", "lists", "the bookmarks", HEADERS),
]


def add_csv_downloads(ui: UI) -> None:
    """A 'Download … (CSV)' button at the foot of each tab with a table, shown once the table
    has rows and always holding its current rows (call inside the Blocks, after the tabs)."""
    for tab, key, stem, text, headers in CSV_TABLES:
        comp = ui.comps.get(tab, {}).get(key)
        if comp is None or tab not in ui.tab_of:
            continue
        with ui.tab_of[tab]:
            btn = gr.DownloadButton(f"Download {text} (CSV)", visible=False, size="sm", elem_id=f"csv-{tab}-{key}")
        fn = _markdown_csv(stem) if headers is None else _frame_csv(stem, headers)
        comp.change(fn, [comp], btn, api_name=False, queue=False)
