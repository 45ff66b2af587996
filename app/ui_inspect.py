"""The Inspect tab: layout and wiring. Uploads reach the handlers as files and are decoded
by our decoder (`app.inputs.read_upload`); the latents in the table are links that open
their Browse page in place; a click on the heat map lists the latents of that patch."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from precompute.images import BadImage

from . import ui_explore
from .handlers import Handlers
from .handlers_inspect import HEAT_SIZE, mark_patch
from .inputs import read_upload
from .ui_answer import answer, answered
from .ui_common import UI, guard, upload_image

TITLE, ID = "Inspect", "inspect"


def create_ui(h: Handlers) -> dict[str, Any]:
    """The Inspect tab's components."""
    c: dict[str, Any] = {}
    with gr.Row(equal_height=False):
        c["upload"] = upload_image(
            label="Upload an image",
            sources=["upload", "clipboard"],
            elem_id="inspect-upload",
            min_width=260,
            height=HEAT_SIZE + 48,
        )
        c["heat"] = gr.Image(
            type="pil",
            label="Heat map (click a patch to list its latents)",
            interactive=False,
            elem_id="inspect-heat",
            min_width=260,
            format="png",
            height=HEAT_SIZE + 48,
        )
    c["upload_note"] = gr.Markdown(elem_id="inspect-upload-note")
    with gr.Row():
        c["which"] = gr.Textbox(label="Latent for the heat map (empty: the most active)", min_width=200)
        n = len(h.atlas.image_paths)
        c["pick"] = gr.Textbox(
            label=f"…or a dataset image by index (0–{max(n - 1, 0)}; #N in captions)",
            elem_id="inspect-pick",
            min_width=200,
        )
    c["run"] = gr.Button("Inspect", variant="primary")
    c["patch"] = gr.Markdown(elem_id="inspect-patch")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            c["table"] = gr.Markdown(elem_id="inspect-table")
        with gr.Column(scale=2, min_width=300):
            c["examples"] = gr.Gallery(
                label="Each active latent's best dataset image (value · latent)",
                columns=5,
                height="auto",
                elem_classes=["clipsae-gallery", "clipsae-cols-5"],
            )
            c["near"] = gr.Gallery(
                label="Nearest dataset images (#index · cosine · name)",
                columns=5,
                height="auto",
                elem_classes=["clipsae-gallery", "clipsae-cols-5"],
            )
    c.update(ui_explore.create_ui(h))  # explore a latent in place (app.ui_explore)
    c["data"] = gr.JSON(visible=False)
    c["heat_clean"] = gr.State(None)  # the heat map as drawn, without a clicked patch's outline
    c["api_inspect"], c["api_heatmap"] = gr.Button(visible=False), gr.Button(visible=False)  # the documented API
    with gr.Accordion("Gradient heat map: what changes if this latent is removed?", open=False):
        gr.Markdown(
            "Saliency of the image–text similarity over the patches, then the same with the "
            "latent scaled (0 removes it) and re-injected at the SAE's hook."
        )
        with gr.Row():
            c["g_text"] = gr.Textbox(label="Text to compare with", value="a photo of a dog", scale=3)
            c["g_latent"] = gr.Textbox(label="Latent", value="", elem_id="inspect-g-latent")
            c["g_scale"] = gr.Number(label="Scale (0 = remove)", value=0.0)
        c["g_run"] = gr.Button("Compute heat maps")
        c["g_md"] = gr.Markdown(elem_id="inspect-gradient-md")
        # contain, not the default square crop: the colour scale under each map stays whole
        c["g_gallery"] = gr.Gallery(
            label="As is · edited · difference",
            columns=3,
            height="auto",
            object_fit="contain",
            elem_id="inspect-gradient",
        )
    return c


def wire(h: Handlers, ui: UI) -> None:
    """The Inspect tab's events."""
    c = ui.comps[ID]

    @guard
    def check_upload(image: str | None) -> str:
        try:
            decoded = read_upload(image)
        except BadImage as exc:
            return f"⚠️ {html.escape(str(exc), quote=False)}"
        return f"Decoded: {decoded.width}×{decoded.height} RGB. Press Inspect." if decoded is not None else ""

    @guard
    def patch_click(data: dict | None, clean: Any, evt: gr.SelectData) -> tuple[str, Any]:
        x, y = evt.index if evt is not None and evt.index is not None else (None, None)
        if x is None:
            return "", gr.skip()
        marked = mark_patch(clean, int((data or {}).get("grid") or 0), float(x), float(y)) if clean else gr.skip()
        return h.patch_view(data, float(x), float(y)), marked

    def inspect_page(*args: Any) -> tuple:
        out = h.inspect(*args)
        return (*out, out[1])  # and the heat map kept clean for patch outlines

    c["upload"].upload(check_upload, [c["upload"]], c["upload_note"], api_name=False, queue=False)
    inspect_in, inspect_out = (
        [c["upload"], c["which"], c["pick"]],
        [c["table"], c["heat"], c["examples"], c["near"], c["data"]],
    )
    heat_in = [c["upload"], c["g_text"], c["g_latent"], c["g_scale"], c["pick"]]
    encoder = dict(concurrency_id="encoder", concurrency_limit=2)
    # the buttons: a refusal is one line under the upload (or in the heat-map panel) and a toast,
    # the rest of the tab stays as it was (app.ui_answer); the API events raise for API clients
    c["run"].click(
        answered(inspect_page, 6),
        inspect_in,
        [*inspect_out, c["heat_clean"], c["upload_note"]],
        api_name=False,
        **encoder,
    ).then(lambda: "", None, c["patch"], api_name=False, queue=False)
    c["api_inspect"].click(guard(h.inspect), inspect_in, inspect_out, api_name="inspect", **encoder)
    c["heat"].select(patch_click, [c["data"], c["heat_clean"]], [c["patch"], c["heat"]], api_name=False, queue=False)
    c["g_run"].click(answer(h.heatmap, 2, status=1), heat_in, [c["g_gallery"], c["g_md"]], api_name=False, **encoder)
    c["api_heatmap"].click(guard(h.heatmap), heat_in, [c["g_gallery"], c["g_md"]], api_name="heatmap", **encoder)
    ui_explore.wire(h, ui)
