"""Inspect explores in place (layout and wiring): a plain click on a latent in Inspect's
table or in a clicked patch's list — or a choice in the "Explore" menu — redraws that
latent's heat map on the inspected image beside its top atlas images, in the Inspect tab.
A modified click (new tab) still opens the latent's Browse page, and the explore header
links to it."""

from __future__ import annotations

from typing import Any

import gradio as gr

from .explore import EXPLORE_SIZE, latent_choices, patch_at
from .handlers import Handlers
from .handlers_inspect import HEAT_SIZE
from .ui_answer import answer
from .ui_common import UI, guard

EXPLORE_NAV = "inspect-explore-nav"
EXPLORE_JS = """
() => {
  if (window.__clipsaeExplore) return;
  window.__clipsaeExplore = true;
  window.addEventListener('click', (e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = e.target.closest ? e.target.closest('a[href]') : null;
    if (!a || !a.closest('#inspect-table, #inspect-patch')) return;
    const url = new URL(a.getAttribute('href'), window.location.href);
    if (url.origin !== window.location.origin || !url.searchParams.has('latent')) return;
    const box = document.querySelector('#%(nav)s textarea, #%(nav)s input');
    if (!box) return;
    e.preventDefault();
    e.stopPropagation();
    box.value = url.searchParams.get('latent') + '|' + Date.now();
    box.dispatchEvent(new Event('input', {bubbles: true}));
    const panel = document.querySelector('#inspect-explore');
    if (panel) panel.scrollIntoView({behavior: 'instant', block: 'nearest'});
  }, true);
}
""" % {"nav": EXPLORE_NAV}


def create_ui(h: Handlers) -> dict[str, Any]:
    """The explore panel (inside the Inspect tab)."""
    c: dict[str, Any] = {}
    with gr.Group(elem_id="inspect-explore"):
        c["x_pick"] = gr.Dropdown(
            [],
            label="Explore a latent here (or click one in the table or a patch's list)",
            allow_custom_value=True,
            elem_id="explore-pick",
        )
        with gr.Row(equal_height=True):
            c["x_slot"] = gr.Button(
                "Put it in a Steer slot", visible=h.steerer is not None, scale=0, min_width=180, elem_id="explore-slot"
            )
            c["x_slot_md"] = gr.Markdown(elem_id="explore-slot-line")
        c["x_md"] = gr.Markdown(elem_id="explore-header")
        with gr.Row(equal_height=False):
            c["x_heat"] = gr.Image(
                type="pil",
                label="This latent on the image",
                interactive=False,
                format="png",
                elem_id="explore-heat",
                min_width=240,
                scale=1,
                height=EXPLORE_SIZE + 48,
            )
            c["x_top"] = gr.Gallery(
                label="Its top atlas images (tint = activation per patch)",
                columns=4,
                height="auto",
                elem_id="explore-top",
                scale=2,
                min_width=300,
                elem_classes=["clipsae-gallery", "clipsae-cols-4"],
            )
    c["x_nav"] = gr.Textbox(visible="hidden", elem_id=EXPLORE_NAV)
    return c


def wire(h: Handlers, ui: UI) -> None:
    """The explore panel's events (Inspect's components are read, never changed)."""
    c = ui.comps["inspect"]
    src = [c["upload"], c["pick"]]
    outs = [c["x_md"], c["x_heat"], c["x_top"]]

    def from_menu(image: Any, dataset_image: Any, latent: str) -> tuple:
        return h.explore(image, latent, dataset_image)

    def from_link(image: Any, dataset_image: Any, nav: str, data: dict | None) -> tuple:
        latent = (nav or "").split("|")[0]
        shown = next((x for x in latent_choices(data) if x.split()[0] == latent), latent)
        return (gr.Dropdown(value=shown), *h.explore(image, latent, dataset_image))

    @guard
    def choices(data: dict | None) -> Any:
        return gr.Dropdown(choices=latent_choices(data), value=None)

    @guard
    def add_patch(data: dict | None, evt: gr.SelectData) -> Any:
        x, y = evt.index if evt is not None and evt.index is not None else (-1, -1)
        return gr.Dropdown(choices=latent_choices(data, patch_at(data, float(x), float(y), HEAT_SIZE)))

    c["x_pick"].input(
        answer(from_menu, 3, 0),
        [*src, c["x_pick"]],
        outs,
        api_name=False,
        concurrency_id="encoder",
        concurrency_limit=2,
    )
    c["x_nav"].change(
        answer(from_link, 4, 1),
        [*src, c["x_nav"], c["data"]],
        [c["x_pick"], *outs],
        api_name=False,
        concurrency_id="encoder",
        concurrency_limit=2,
    )
    c["data"].change(choices, [c["data"]], c["x_pick"], api_name=False, queue=False)
    c["heat"].select(add_patch, [c["data"]], c["x_pick"], api_name=False, queue=False)
    ui.blocks.load(None, None, None, js=EXPLORE_JS)
