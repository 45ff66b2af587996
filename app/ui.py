"""Gradio assembly: the Blocks from one module per tab. Layout and wiring live in
`ui_browse`, `ui_overview`, `ui_inspect`, `ui_steer` (oobabooga's split: each has `create_ui(h)` and
`wire(h, ui)`); the shared guard in `ui_common`; the logic in `handlers*.py`.

API names (gradio_client): latent_page, search, collage, overview, inspect, heatmap, steer, steer_strip.
"""

from __future__ import annotations

import gradio as gr

from . import ui_browse, ui_inspect, ui_lists, ui_overview, ui_steer
from .handlers import Handlers
from .logcap import cap_log_records
from .ui_common import UI, guard

__all__ = ["TABS", "build_ui", "guard"]

TABS = [ui_browse, ui_overview, ui_inspect, ui_steer, ui_lists]
"""One module per tab, in display order; adding a tab is one line here (its module has
TITLE, ID, create_ui(h) -> dict of components, wire(h, ui))."""


def build_ui(h: Handlers, banner: str = "") -> gr.Blocks:
    """The app's Blocks: a banner, then one tab per module of TABS."""
    cap_log_records()  # user input reaches log lines (refusals, library warnings): capped (app.logcap)
    # The render folders' files go out as they are (their names are fixed per atlas): Gradio
    # skips hashing and copying each thumbnail into its own cache on every page (app/file_cache.py)
    gr.set_static_paths([str(render.root) for _, render in h.browsable.values()])
    with gr.Blocks(title="clipsae — what CLIP sees", analytics_enabled=False) as demo:
        gr.Markdown(f"# clipsae\n{banner}")
        with gr.Tabs() as tabs:
            ui = UI(demo, tabs)
            for tab in TABS:
                with gr.Tab(tab.TITLE, id=tab.ID) as ui.tab_of[tab.ID]:
                    ui.comps[tab.ID] = tab.create_ui(h)
        ui_lists.add_csv_downloads(ui)  # every table as CSV, at the foot of its tab
        for tab in TABS:
            tab.wire(h, ui)
    demo.queue(default_concurrency_limit=8)
    return demo
