"""The Browse tab: layout and wiring. Every way of choosing a latent — the number box,
previous/next, random, a row of the list, a search result, a link in any tab (nearest
latents, linked latents, Inspect's table), the URL, the back button — opens its page in
place through one handler, `open_page`, and updates the URL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from . import ui_lists
from .handlers import Handlers
from .handlers_browse import PageView
from .ui_assets import NAV_ID, PUSH_URL_JS, REPLACE_URL_JS
from .ui_answer import answered
from .ui_common import UI, guard, run_job

TITLE, ID = "Browse", "browse"
LIST_HEADERS = ["latent", "label", "fires on (%)", "max"]


def create_ui(h: Handlers) -> dict[str, Any]:
    """The Browse tab's components."""
    c: dict[str, Any] = {}
    c["sae"] = gr.Radio(
        list(h.browsable), value=h.atlas.name, label="SAE", visible=len(h.browsable) > 1, elem_id="sae-pick"
    )
    with gr.Row(equal_height=True):
        # no min/max/precision: the handler refuses bad ids with the valid range (Gradio would round 2.5)
        c["latent"] = gr.Number(label="Latent", value=None, elem_id="latent-input", min_width=110, scale=1)
        c["show"] = gr.Button("Show", variant="primary", min_width=70, scale=0)
        c["prev"] = gr.Button("◀ previous", min_width=90, scale=0, elem_id="latent-prev")
        c["next"] = gr.Button("next ▶", min_width=90, scale=0, elem_id="latent-next")
        c["random"] = gr.Button("Random", min_width=80, scale=0)
        c["query"] = gr.Textbox(
            label=h.search_hint(), placeholder="e.g. dog", scale=3, min_width=200, elem_id="latent-search"
        )
    c["notice"] = gr.Markdown(elem_id="browse-notice")  # a refused input's one line (app.ui_answer)
    c["found"] = gr.Dataframe(
        headers=LIST_HEADERS,
        label="Latents (click a row to open it)",
        interactive=False,
        max_height=230,
        elem_id="latent-list",
        elem_classes="clipsae-table",
    )
    c["header"] = gr.Markdown(elem_id="latent-header")
    c.update(ui_lists.bookmark_row(h))  # ☆ bookmark this latent (app.ui_lists)
    with gr.Row(equal_height=False):
        c["linked"] = gr.Dropdown(label="Linked steering latents", choices=[], scale=3, min_width=200)
        c["steer_this"] = gr.Button("Steer this", scale=1, min_width=120, elem_id="steer-this")
        c["slot_here"] = gr.Button("Put in a slot, stay here", scale=1, min_width=120, elem_id="slot-here")
        c["icon"] = gr.Image(
            label="Feature icon",
            visible=False,
            height=140,
            width=140,
            interactive=False,
            elem_id="clipsae-icon",
            scale=0,
            min_width=140,
        )
    c["gallery"] = gr.Gallery(
        label=GALLERY_LABEL,
        columns=8,
        height="auto",
        elem_classes=["clipsae-gallery", "clipsae-cols-8"],
        elem_id="top-images",
    )
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            # no block label: it would cover the top tick; the PNG carries its title (render.histogram_png)
            c["hist"] = gr.Image(
                label="Activation histogram",
                show_label=False,
                type="filepath",
                interactive=False,
                elem_id="latent-histogram",
            )
            with gr.Row():
                c["log"] = gr.Checkbox(label="log counts", value=False, min_width=120)
                c["masks"] = gr.Checkbox(label="patch masks on the top images", value=True, min_width=200)
        with gr.Column(min_width=300):
            c["bands"] = gr.Gallery(
                label="Value bands: 4 images from each fifth of (0, max], highest band first (one band per row)",
                columns=4,
                height="auto",
                elem_classes=["clipsae-gallery", "clipsae-cols-4"],
                elem_id="value-bands",
            )
    with gr.Row(equal_height=True):
        c["collage_btn"] = gr.Button("Collage of this latent (PNG)", scale=1, min_width=160)
        c["collage_file"] = gr.File(label="Collage", scale=3, min_width=200)
    c["data"] = gr.JSON(visible=False)
    c["nav"] = gr.Textbox(visible="hidden", elem_id=NAV_ID)
    c["api_page"] = gr.Button(visible=False)
    return c


def _view_outputs(c: dict[str, Any]) -> list:
    return [
        c["sae"],
        c["latent"],
        c["header"],
        c["gallery"],
        c["hist"],
        c["bands"],
        c["data"],
        c["linked"],
        c["steer_this"],
        c["slot_here"],
        c["icon"],
        c["query"],
        c["masks"],
    ]


GALLERY_LABEL = (
    "Top images · tint = activation per patch, one scale per latent (full tint at the latent's largest patch value)"
)


def _view_values(h: Handlers, v: PageView) -> tuple:
    on_steering = h.steer_atlas is not None and v.sae == h.steer_atlas.name
    linked = gr.Dropdown(
        choices=v.linked,
        value=v.linked[0] if v.linked else None,
        visible=not on_steering,
        label="Linked steering latents (co-activating; Steer this sets one in the Steer tab)",
    )
    steer = gr.Button(
        value="Steer this latent" if on_steering else "Steer the linked latent",
        interactive=v.steerable,
        visible=h.steerer is not None,
    )
    here = gr.Button(interactive=v.steerable, visible=h.steerer is not None)
    icon = gr.Image(value=v.icon, visible=on_steering and not v.data["dead"])
    has_masks = h.pick(v.sae)[0].masks is not None
    gallery = gr.Gallery(
        value=v.gallery,
        label=GALLERY_LABEL
        if has_masks
        else "Top images (this atlas has no patch masks: whole-image activations only)",
    )
    return (
        v.sae,
        v.latent,
        v.header,
        gallery,
        v.histogram,
        v.bands,
        v.data,
        linked,
        steer,
        here,
        icon,
        gr.Textbox(label=h.search_hint(v.sae)),
        gr.Checkbox(visible=has_masks),
    )  # no switch without masks


def wire(h: Handlers, ui: UI) -> None:
    """The Browse tab's events."""
    c = ui.comps[ID]
    outs = _view_outputs(c)

    def open_page(sae: str, latent: Any, log_counts: bool, masks: bool, notice: str = "") -> tuple:
        return _view_values(h, h.page_view(sae, latent, bool(log_counts), notice, bool(masks)))

    def open_previous(sae: str, latent: Any, log_counts: bool, masks: bool) -> tuple:
        return open_page(sae, h.step(sae, latent, -1), log_counts, masks)

    def open_next(sae: str, latent: Any, log_counts: bool, masks: bool) -> tuple:
        return open_page(sae, h.step(sae, latent, 1), log_counts, masks)

    def open_nav(value: str, log_counts: bool, masks: bool) -> tuple:
        sae, latent, *_ = (value or "").split("|") + ["", ""]
        target_sae, target, notice = h.deep_link({"sae": sae, "latent": latent})
        return (*open_page(target_sae, target, log_counts, masks, notice), gr.Tabs(selected=ID))

    def open_landing(sae: str, log_counts: bool, masks: bool) -> tuple:
        name, latent = h.landing(sae)
        return open_page(name, latent, log_counts, masks)

    def open_row(sae: str, log_counts: bool, masks: bool, evt: gr.SelectData) -> tuple:
        row = evt.row_value if evt is not None else None
        if not row:
            raise ValueError("click a row of the list")
        return open_page(sae, row[0], log_counts, masks)

    def first_load(log_counts: bool, masks: bool, request: gr.Request) -> tuple:
        sae, latent, notice = h.deep_link(dict(request.query_params) if request is not None else {})
        return (*open_page(sae, latent, log_counts, masks, notice), h.search("", sae))

    @guard
    def histogram(data: dict | None, log_counts: bool) -> str | None:
        if not data:
            return None
        atlas, render = h.pick(data["sae"])
        page = atlas.page(data["latent"])
        return render.histogram(page.latent, page.histogram, page.histogram_max, bool(log_counts))

    def push(event: Any, replace: bool = False) -> None:
        event.then(None, [c["data"]], None, js=REPLACE_URL_JS if replace else PUSH_URL_JS, queue=False)

    # Page events run in the queue without a limit (a toast needs the queue); a refused input
    # leaves the page as it is and says why in the notice line and a toast (app.ui_answer).
    n, souts = len(outs), [*outs, c["notice"]]
    page = dict(api_name=False, concurrency_limit=None)
    page_in = [c["sae"], c["latent"], c["log"], c["masks"]]
    for trigger in (c["show"].click, c["latent"].submit):
        push(trigger(answered(open_page, n), page_in, souts, **page))
    for button, step in ((c["prev"], open_previous), (c["next"], open_next)):
        push(button.click(answered(step, n), page_in, souts, **page))
    push(
        c["random"]
        .click(lambda sae: h.random_latent(sae), [c["sae"]], c["latent"], api_name=False, queue=False)
        .then(answered(open_page, n), page_in, souts, **page)
    )
    push(c["sae"].input(answered(open_landing, n), [c["sae"], c["log"], c["masks"]], souts, **page))
    c["sae"].input(guard(lambda sae: h.search("", sae)), [c["sae"]], c["found"], api_name=False, queue=False)
    push(c["found"].select(answered(open_row, n), [c["sae"], c["log"], c["masks"]], souts, **page))
    nav_outs = [*outs, ui.tabs, c["notice"]]
    push(c["nav"].change(answered(open_nav, n + 1), [c["nav"], c["log"], c["masks"]], nav_outs, **page))
    c["log"].input(histogram, [c["data"], c["log"]], c["hist"], api_name=False, queue=False)
    c["masks"].input(answered(open_page, n), page_in, souts, **page)
    c["query"].submit(guard(h.search), [c["query"], c["sae"]], c["found"], api_name="search", queue=False)
    c["collage_btn"].click(guard(h.collage), [c["latent"], c["sae"]], c["collage_file"], api_name="collage")
    # the documented API (header, top images, histogram, bands, data); read-only and fast, so no queue
    c["api_page"].click(
        guard(h.latent_page),
        [c["latent"], c["sae"]],
        [c["header"], c["gallery"], c["hist"], c["bands"], c["data"]],
        api_name="latent_page",
        queue=False,
    )
    push(
        ui.blocks.load(answered(first_load, n + 1), [c["log"], c["masks"]], [*outs, c["found"], c["notice"]], **page),
        replace=True,
    )
    if h.icons is not None:
        # icons are generated in the generation queue, after the page is shown
        c["data"].change(
            guard(icon_for(h)),
            [c["data"]],
            c["icon"],
            api_name=False,
            concurrency_id="generate",
            concurrency_limit=16,
            show_progress="minimal",
        )


def icon_for(h: Handlers) -> Callable:
    """The feature-icon handler: a cached icon at once, else one made in the generation queue."""

    async def feature_icon(data: dict | None, request: gr.Request, progress=gr.Progress()) -> Any:
        if not data or h.steer_atlas is None or data.get("sae") != h.steer_atlas.name or data.get("dead"):
            return gr.Image()
        return await run_job(h.icon, data["sae"], data["latent"], request=request, progress=progress)

    return feature_icon
