"""The Steer tab's workbench (gradio): put any listed latent in a slot without leaving the
tab (the generation's most active latents, a search of the steering atlas), a strength ×
seed grid for one or two latents (`app.steer_grid`, cancellable by Stop, each cell taking
its own turn in the shared fair queue), and this session's history (`app.steer_history`):
every run restorable, any two side by side.

A refused input anywhere here ends as one line in the Steer status and a warning toast
(`answer`): no red error badge covers the outputs, and nothing else changes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import gradio as gr

from sae_core.edit import Edit

from .handlers import Handlers
from .inputs import menu_latent
from .jobs import Cancelled
from .steer_history import Run, choices, compare, find, record
from .ui_common import EXPECTED, UI, run_job

log = logging.getLogger(__name__)
GRID_FIELDS = ("grid_latents", "strengths", "seeds", "grid_text")


def refused(exc: BaseException) -> str:
    """The one line a refused input shows (and its toast)."""
    text = " ".join(str(exc).split())[:300]
    gr.Warning(text)
    return f"⚠️ **Not done:** {text}"


async def answer(job: Awaitable) -> Any:
    """The job's result, or the refusal line when it raised an expected error (a clear message:
    bad input, missing file); anything else is logged and answered with a generic line."""
    try:
        return await job
    except Cancelled:
        raise
    except EXPECTED as exc:
        log.info("steer refused: %s", exc)
        return refused(exc)
    except Exception:
        log.exception("steer failed")
        return refused(RuntimeError("something went wrong on the server (the server log has the details)"))


def create_picker(c: dict[str, Any]) -> None:
    """The latents a click puts in a slot: the last generation's most active, or a search."""
    with gr.Row(equal_height=False):
        c["active_pick"] = gr.Radio(
            [],
            label="Most active steering latents (generate first) — click one to put it in a slot",
            elem_id="steer-active-pick",
            scale=3,
        )
        with gr.Column(scale=2, min_width=200):
            c["find"] = gr.Textbox(
                label="Find a steering latent: its number or label/interpretation words", elem_id="steer-find"
            )
            c["found_pick"] = gr.Radio([], label="Found — click one to put it in a slot", elem_id="steer-found")


def create_ui(h: Handlers, c: dict[str, Any]) -> None:
    """The grid and the history."""
    c["history"] = gr.State([])
    with gr.Accordion("Workbench: strength × seed grid", open=True):
        gr.Markdown(
            "Strengths are multiples of each latent's highest activation over the atlas, added along its "
            "direction (0 is the unsteered image). Each cell: the latent re-encoded from the unsteered image "
            "→ from this one; and the change in CLIP similarity to the latent's text where it has one."
        )
        with gr.Row():
            c["grid_latents"] = gr.Textbox(
                label="One or two steering latents", placeholder="e.g. 12, 40", elem_id="grid-latents", min_width=160
            )
            c["strengths"] = gr.Textbox("-1, 0, 1, 2", label="Strengths (≤ 7)", elem_id="grid-strengths", min_width=160)
            c["seeds"] = gr.Textbox("0, 1", label="Seeds (≤ 4)", elem_id="grid-seeds", min_width=120)
            c["grid_text"] = gr.Textbox(label="Text for the CLIP change (empty: the latent's own)", min_width=200)
        c["grid_run"] = gr.Button("Run grid", variant="primary", elem_id="grid-run")
        c["grid"] = gr.Gallery(
            label="Grid: rows are strengths, columns seeds",
            columns=4,
            height="auto",
            format="png",
            elem_id="grid-gallery",
            object_fit="contain",
        )
        c["grid_summary"] = gr.Markdown(elem_id="grid-summary")
    with gr.Accordion("History of this session's runs", open=True):
        with gr.Row():
            c["history_pick"] = gr.Dropdown([], label="Run", elem_id="history-pick", scale=3)
            c["restore"] = gr.Button("Restore its settings and images", elem_id="history-restore", scale=1)
        with gr.Row():
            c["compare_a"] = gr.Dropdown([], label="Compare: A", elem_id="compare-a")
            c["compare_b"] = gr.Dropdown([], label="B", elem_id="compare-b")
            c["compare"] = gr.Button("Side by side", elem_id="compare-run", min_width=120)
        c["compare_line"] = gr.Markdown(elem_id="compare-line")
        with gr.Row(equal_height=False):
            for side in ("a", "b"):
                with gr.Column(min_width=240):
                    c[f"side_{side}"] = gr.Gallery(
                        label=side.upper(), columns=2, height="auto", format="png", object_fit="contain"
                    )
                    c[f"side_{side}_text"] = gr.Markdown()


def active_update(view: Any) -> gr.Radio:
    """The picker of the generation's most active steering latents."""
    names = [f"{i} ({v:.3g})" for i, v in view.active_ids]
    label = (view.active.split(":")[0] + " — click one to put it in a slot") if names else view.active
    return gr.Radio(choices=names, value=None, label=label)


def history_update(history: list[Run]) -> gr.Dropdown:
    return gr.Dropdown(choices=choices(history), value=choices(history)[0] if history else None)


def fill_slot(h: Handlers, k: int, edit: Edit, origin: tuple | None, origins: dict | None, n: int) -> tuple:
    """Updates of every slot's (latent, mode, value) putting `edit` in slot k, and the origins
    (the CLIP latent a slot was linked from) without slot k's old one."""
    origins = {key: v for key, v in (origins or {}).items() if key != str(k)}
    if origin is not None:
        origins[str(k)] = [*origin, edit.latent]
    label = h.slot_scale(edit.latent, edit.mode)[4]
    slots: list[Any] = []
    for i in range(n):
        if i == k:
            slots += [
                gr.Textbox(value=str(edit.latent)),
                gr.Dropdown(value=edit.mode),
                gr.Number(value=edit.value, label=label, interactive=True),
            ]
        else:
            slots += [gr.Textbox(), gr.Dropdown(), gr.Number()]
    return slots, origins


def _find(h: Handlers, text: str) -> gr.Radio:
    k = h.steer_atlas
    text = (text or "").strip()
    if k is None or not text:
        return gr.Radio(choices=[], label="Found — click one to put it in a slot")
    ids = [int(text)] if text.isdigit() and int(text) < k.n_latents else []
    ids += [i for i in (*k.search_labels(text), *k.search_interpretations(text)) if i not in ids]
    ids = [i for i in ids if k.frequency[i] > 0][:12]
    names = [f"{i} {' '.join(k.short_label(i))}".strip() for i in ids]
    return gr.Radio(
        choices=names,
        value=None,
        label=f"Found {len(ids)} live latent(s) — click one to put it in a slot"
        if ids
        else f"no live steering latent matches “{text[:40]}”",
    )


def wire(h: Handlers, ui: UI, jobs: dict) -> Any:
    """The workbench's events; returns the grid's event (for Stop to cancel)."""
    c = ui.comps["steer"]
    slot_comps = [comp for slot in c["slots"] for comp in slot]
    latents = [slot[0] for slot in c["slots"]]

    def pick(choice: str | None, origins: dict | None, *held: str) -> tuple:
        if not choice:
            return (*[gr.skip()] * len(slot_comps), gr.skip(), gr.skip())
        try:
            k, edit, origin, message = h.steer_this_edit(
                h.steer_atlas.name if h.steer_atlas else None, menu_latent(choice), None, list(held)
            )
        except ValueError as exc:
            return (*[gr.skip()] * len(slot_comps), refused(exc), gr.skip())
        slots, origins = fill_slot(h, k, edit, origin, origins, len(held))
        return (*slots, f"**Slot {k + 1}** — {message}", origins)

    for radio in (c["active_pick"], c["found_pick"]):
        radio.input(
            pick, [radio, c["origins"], *latents], [*slot_comps, c["status"], c["origins"]], api_name=False, queue=False
        )
    c["find"].submit(lambda t: _find(h, t), c["find"], c["found_pick"], api_name=False, queue=False)

    grid_in = [
        c["prompt"],
        c["image"],
        c["grid_latents"],
        c["strengths"],
        c["seeds"],
        c["steps"],
        c["resolution"],
        c["guidance"],
        c["grid_text"],
    ]

    async def run_grid(values: dict, request: gr.Request, progress=gr.Progress()):
        """Run grid: the first update clears the status, the last shows the cells (or a refusal)."""
        skip = [gr.skip()] * 4
        yield (*skip, "")
        args = [values[comp] for comp in grid_in]
        run = await answer(run_job(h.steer_grid, *args, request=request, progress=progress))
        if isinstance(run, str):
            yield (*skip, run)
            return
        cells = [(cell.image, cell.caption()) for cell in run.cells]
        names = ("prompt", "seed", "steps", "resolution", "guidance", *GRID_FIELDS)
        settings = {n: values.get(c[n]) for n in names}
        settings["seed"] = run.seeds[0]
        history = record(values[c["history"]], "grid", settings, cells, run.summary())
        yield cells, run.summary(), history, history_update(history), ""

    grid = c["grid_run"].click(
        run_grid,
        {*grid_in, c["history"]},
        [c["grid"], c["grid_summary"], c["history"], c["history_pick"], c["status"]],
        api_name=False,
        show_progress_on=[c["grid"]],
        **jobs,
    )
    c["history_pick"].change(
        lambda hist: [gr.Dropdown(choices=choices(hist))] * 2,
        c["history"],
        [c["compare_a"], c["compare_b"]],
        api_name=False,
        queue=False,
    )
    _wire_history(h, ui)
    return grid


def _wire_history(h: Handlers, ui: UI) -> None:
    c = ui.comps["steer"]
    slot_comps = [comp for slot in c["slots"] for comp in slot]
    plain = ["prompt", "seed", "steps", "resolution", "guidance", "edits", "edits_mode", *GRID_FIELDS]
    outs = [
        *(c[n] for n in plain),
        *slot_comps,
        c["original"],
        c["steered"],
        c["readout"],
        c["grid"],
        c["grid_summary"],
        c["status"],
    ]

    def restore(history: list[Run], choice: str | None) -> tuple:
        """The run's settings back in the inputs, its images and readout back in view."""
        try:
            r = find(history, choice)
        except ValueError as exc:
            return (*[gr.skip()] * (len(outs) - 1), refused(exc))
        s = r.settings
        values = [s[n] if n in s else gr.skip() for n in plain]
        fields = s.get("slot_fields") or [gr.skip()] * len(slot_comps)
        if r.kind == "grid":
            shown = [gr.skip()] * 3 + [r.images, r.readout]
        else:
            shown = [r.images[0][0], r.images[1][0], r.readout, gr.skip(), gr.skip()]
        return (*values, *fields, *shown, f"Restored run #{r.number} ({r.kind}).")

    c["restore"].click(restore, [c["history"], c["history_pick"]], outs, api_name=False, queue=False)

    def side_by_side(history: list[Run], a: str | None, b: str | None) -> tuple:
        try:
            ra, rb, line = compare(history, a, b)
        except ValueError as exc:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), refused(exc)
        return ra.images, ra.readout, rb.images, rb.readout, line

    c["compare"].click(
        side_by_side,
        [c["history"], c["compare_a"], c["compare_b"]],
        [c["side_a"], c["side_a_text"], c["side_b"], c["side_b_text"], c["compare_line"]],
        api_name=False,
        queue=False,
    )
