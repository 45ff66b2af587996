"""The Steer tab: layout and wiring. Four slots (latent, mode, value; an empty latent is
no edit) whose slider follows the latent's activation scale; resolutions labelled with
the time measured at start-up; decoder-step progress; Stop cancels the session's
generations, and the diffusion loop stops at its next step; "Steer this" on a Browse
page fills a slot and says what it chose; the workbench (grid, history, comparison) lives in
`ui_steer_bench`. A refused input shows one line in the status (and a toast), never an
error badge over the outputs."""

from __future__ import annotations

from typing import Any

import gradio as gr

from sae_core.edit import Edit

from .handlers import Handlers
from .handlers_steer import MODES, SteerView, slot_edits_from
from .jobs import Job
from . import ui_answer, ui_steer_bench
from .steer import DEFAULT_GUIDANCE, MAX_GUIDANCE, MAX_STEPS, parse_edits
from .steer_history import record
from .timing import UI_RESOLUTIONS
from .ui_answer import answered
from .ui_common import UI, guard, run_job, upload_image
from .ui_steer_bench import answer

TITLE, ID = "Steer", "steer"
STOPPED = "Stopped: the generation ends at its next step."
"""The status line after Stop (cleared when the next run starts)."""
N_SLOTS = 4


def _resolution_choices(h: Handlers, steps: int) -> list[tuple[str, int]]:
    t = h.timings
    return [(t.label(r, steps) if t else f"{r} px", r) for r in UI_RESOLUTIONS]


def create_ui(h: Handlers) -> dict[str, Any]:
    """The Steer tab's components."""
    c: dict[str, Any] = {"slots": []}
    if h.steerer is None:
        gr.Markdown("**Steering is unavailable**: the Kandinsky 2.2 models or the steering SAE are not loaded.")
    elif h.steerer.pipes.tiny:
        gr.Markdown(
            "Steering runs **tiny random Kandinsky components**: images are patterns, not pictures. "
            "With the real Kandinsky 2.2 the same controls make real images."
        )
    with gr.Row(equal_height=False):
        c["prompt"] = gr.Textbox(label="Prompt", value="a photo of a red boat on a lake", scale=3, min_width=240)
        c["image"] = upload_image(
            label="…or start from an image (replaces the prompt)",
            sources=["upload"],
            min_width=200,
            height=160,
            elem_id="steer-upload",
        )
    gr.Markdown(
        "Edits: a slot with an empty latent is no edit. *multiply* scales the latent, *set* gives it a value, "
        "*add* adds its direction × value; set/add values are in the latent's own activation units."
    )
    with gr.Row():
        for k in range(N_SLOTS):
            with gr.Column(min_width=200, elem_classes="clipsae-slot"):
                latent = gr.Textbox(
                    label=f"Slot {k + 1}: latent", placeholder="empty: no edit", elem_id=f"slot-{k}-latent"
                )
                mode = gr.Dropdown(list(MODES), value="set", label="mode", elem_id=f"slot-{k}-mode")
                value = gr.Number(
                    None, label="value (type a latent first)", interactive=False, elem_id=f"slot-{k}-value"
                )
                c["slots"].append((latent, mode, value))
    with gr.Row():
        c["edits"] = gr.Textbox(label="More edits: latent:value pairs (e.g. 12:4, 40:0)", value="", scale=3)
        c["edits_mode"] = gr.Dropdown(list(MODES), value="multiply", label="their mode", scale=1, min_width=120)
    t = h.timings
    steps0 = t.default_steps if t else 10
    with gr.Row():
        c["seed"] = gr.Number(label="Seed", value=0, precision=0, min_width=100)
        c["steps"] = gr.Slider(
            1, MAX_STEPS, value=steps0, step=1, label="Steps (prior and decoder)", min_width=180, elem_id="steer-steps"
        )
        c["resolution"] = gr.Dropdown(
            _resolution_choices(h, steps0),
            value=t.default_size() if t else 64,
            label="Resolution · expected time (measured at start-up)",
            min_width=220,
        )
        c["guidance"] = gr.Number(
            DEFAULT_GUIDANCE,
            label=f"Guidance scale (1–{MAX_GUIDANCE:g}; 1 is none)",
            min_width=140,
            elem_id="steer-guidance",
        )
    c["causal"] = gr.Checkbox(label="causal check after generating (re-encode both images)", value=True)
    with gr.Row():
        c["generate"] = gr.Button("Generate", variant="primary", elem_id="steer-generate")
        c["stop"] = gr.Button("Stop", variant="stop", elem_id="steer-stop")
    c["status"] = gr.Markdown(elem_id="steer-status")
    with gr.Row():
        c["original"] = gr.Image(
            label="Original",
            interactive=False,
            elem_classes="clipsae-result",
            min_width=200,
            elem_id="steer-original",
            format="png",
        )
        c["steered"] = gr.Image(
            label="Steered",
            interactive=False,
            elem_classes="clipsae-result",
            min_width=200,
            elem_id="steer-steered",
            format="png",
        )
    c["readout"] = gr.Markdown(elem_id="steer-readout")
    ui_steer_bench.create_picker(c)
    with gr.Row():
        c["strip_latent"] = gr.Textbox(label="Plus/minus strip: steering latent", min_width=160)
        c["amount"] = gr.Textbox(
            label="Amount along its direction (empty: 2 × its highest activation)", value="", min_width=200
        )
        c["strip_run"] = gr.Button("Plus / minus strip", min_width=140)
    c["strip"] = gr.Gallery(
        label="−, original, +", columns=3, height="auto", elem_classes="clipsae-result", format="png"
    )
    c["origins"] = gr.State({})
    c["api_steer"] = gr.Button(visible=False)
    ui_steer_bench.create_ui(h, c)
    return c


def wire(h: Handlers, ui: UI) -> None:
    """The Steer tab's events, and Browse's 'Steer this' button."""
    c = ui.comps[ID]
    slot_values = [comp for slot in c["slots"] for comp in slot]
    common = [c["prompt"], c["image"], c["seed"], c["steps"], c["resolution"]]
    gen_inputs = [*common, c["edits"], c["edits_mode"], c["causal"], c["origins"], c["guidance"]]

    async def generate(values: dict, request: gr.Request, progress=gr.Progress()):
        """The Generate button: every input arrives in one dict keyed by component. The first
        update clears the status line (the last Stop's line no longer applies); a refused input
        ends as one line there, the images and readout left as they were."""
        skip = [gr.skip()] * 6
        yield (*skip, "")
        args = [values[comp] for comp in gen_inputs]
        slots = [values[comp] for comp in slot_values]
        view = await answer(run_job(_generate_view, h, *args[:-1], slots, args[-1], request=request, progress=progress))
        if isinstance(view, str):
            yield (*skip, view)
            return
        settings = _settings(values, c, slots, view.edits)
        history = record(
            values[c["history"]],
            "generate",
            settings,
            [(view.original, "original"), (view.steered, "steered")],
            view.readout,
        )
        yield (
            view.original,
            view.steered,
            view.readout,
            ui_steer_bench.active_update(view),
            history,
            ui_steer_bench.history_update(history),
            "",
        )

    async def steer(
        prompt: str,
        edits: str,
        mode: str,
        seed: float,
        steps: float,
        resolution: int,
        image: str | None,
        request: gr.Request,
        progress=gr.Progress(),
    ) -> tuple:
        """(original, steered) for typed edits 'latent:value, …' in one mode."""
        return await run_job(
            h.steer, prompt, edits, mode, seed, steps, resolution, image, request=request, progress=progress
        )

    async def steer_strip(
        prompt: str,
        latent: str,
        amount: str,
        seed: float,
        steps: float,
        resolution: int,
        image: str | None,
        request: gr.Request,
        progress=gr.Progress(),
    ) -> list:
        """−amount · direction, original, +amount · direction of one steering latent."""
        return await run_job(
            h.steer_strip, prompt, latent, amount, seed, steps, resolution, image, request=request, progress=progress
        )

    jobs = dict(concurrency_id="generate", concurrency_limit=16)
    gen = c["generate"].click(
        generate,
        {*gen_inputs, *slot_values, c["history"]},
        [c["original"], c["steered"], c["readout"], c["active_pick"], c["history"], c["history_pick"], c["status"]],
        api_name=False,
        show_progress_on=[c["original"], c["steered"]],
        **jobs,
    )
    api = c["api_steer"].click(
        guard(steer),
        [c["prompt"], c["edits"], c["edits_mode"], c["seed"], c["steps"], c["resolution"], c["image"]],
        [c["original"], c["steered"]],
        api_name="steer",
        **jobs,
    )
    strip = c["strip_run"].click(
        guard(steer_strip),
        [c["prompt"], c["strip_latent"], c["amount"], c["seed"], c["steps"], c["resolution"], c["image"]],
        c["strip"],
        api_name="steer_strip",
        **jobs,
    )
    grid = ui_steer_bench.wire(h, ui, jobs)
    # two events: one Stop that cancels and also writes its line loses the line to the cancel
    c["stop"].click(None, None, None, api_name=False, queue=False, cancels=[gen, api, strip, grid])
    c["stop"].click(lambda: STOPPED, None, c["status"], api_name=False, queue=False)
    for k, (latent, mode, value) in enumerate(c["slots"]):
        # .change, not .input: Gradio's input event needs key presses (a paste would be missed)
        for trigger in (latent.change, mode.change):
            trigger(
                guard(_slot_scale(h, k)),
                [latent, mode, value, c["origins"]],
                [value, c["origins"]],
                api_name=False,
                queue=False,
            )
    c["steps"].change(
        guard(lambda steps: gr.Dropdown(choices=_resolution_choices(h, int(steps)))),
        [c["steps"]],
        [c["resolution"]],
        api_name=False,
        queue=False,
    )
    _wire_steer_this(h, ui)


def _settings(values: dict, c: dict, slots: list, edits: list[Edit]) -> dict:
    """The inputs a Generate run is restored from (see `ui_steer_bench.restore`)."""
    names = ("prompt", "seed", "steps", "resolution", "guidance", "edits", "edits_mode")
    out = {n: values[c[n]] for n in names}
    out["slots"] = [(e.latent, e.mode, e.value) for e in edits][:N_SLOTS]
    out["slot_fields"] = list(slots)
    return out


def _generate_view(
    h: Handlers,
    prompt: str,
    image: str | None,
    seed: Any,
    steps: Any,
    resolution: Any,
    edits: str,
    edits_mode: str,
    causal: bool,
    origins: dict | None,
    slots: list,
    guidance: Any,
    job: Job,
) -> SteerView:
    """Slots (latent, mode, value triples) + typed edits → one generation with its readout
    (runs in a worker thread). Messages name the slot as the page numbers it (slot 1..4)."""
    d = h.steerer.sae.cfg.d_sae if h.steerer is not None else 1
    all_edits, by_latent = [], {}
    for k in range(0, len(slots), 3):
        found = slot_edits_from([tuple(slots[k : k + 3])], d, k // 3 + 1)  # type: ignore[list-item]
        all_edits += found
        if found and str(k // 3) in (origins or {}):
            by_latent[found[0].latent] = tuple(origins[str(k // 3)][:2])
    all_edits += [Edit(lat, edits_mode, val) for lat, val in parse_edits(edits)]
    view = h.generate_view(
        prompt, image, seed, steps, resolution, all_edits, by_latent, bool(causal), job=job, guidance=guidance
    )
    return view


def _slot_scale(h: Handlers, k: int):
    def slot_scale(latent: str, mode: str, value: Any, origins: dict | None) -> tuple:
        """A latent or mode changed: the value box's label follows that latent's activation
        scale, and an empty box gets its suggested value (a typed or restored value is kept:
        nothing is clamped). The slot keeps the CLIP latent 'Steer this' linked it from only
        while it holds that latent."""
        lo, hi, step, suggested, label = h.slot_scale(latent, mode)
        kept = {key: v for key, v in (origins or {}).items() if key != str(k) or str(v[2]) == (latent or "").strip()}
        filled = bool((latent or "").strip())
        new = (suggested if value in (None, 0) else value) if filled else None
        return gr.Number(value=new, label=f"{label}; typical {lo:g}..{hi:g}", interactive=filled), kept

    slot_scale.__name__ = f"slot_{k}_scale"
    return slot_scale


def _wire_steer_this(h: Handlers, ui: UI) -> None:
    b, c = ui.comps["browse"], ui.comps[ID]
    slot_latents = [slot[0] for slot in c["slots"]]

    def steer_this(data: dict | None, choice: str | None, origins: dict | None, *latents: str) -> tuple:
        if not data:
            raise ValueError("open a latent's page first")
        k, edit, origin, message = h.steer_this_edit(data["sae"], data["latent"], choice, list(latents))
        slots, origins = ui_steer_bench.fill_slot(h, k, edit, origin, origins, len(latents))
        return (*slots, f"**Slot {k + 1}** — {message}", origins, str(edit.latent), gr.Tabs(selected=ID))

    outs = [comp for slot in c["slots"] for comp in slot]
    # a refusal stays on Browse (its notice line and a toast) and changes nothing (app.ui_answer)
    b["steer_this"].click(
        answered(steer_this, len(outs) + 4),
        [b["data"], b["linked"], c["origins"], *slot_latents],
        [*outs, c["status"], c["origins"], c["strip_latent"], ui.tabs, b["notice"]],
        api_name=False,
        concurrency_limit=None,
    )
    _wire_stay_here(h, ui, outs, slot_latents)


def _wire_stay_here(h: Handlers, ui: UI, outs: list, slot_latents: list) -> None:
    """Browse's "Put in a slot, stay here" and Inspect's explore "Put in a Steer slot": the
    latent goes in a Steer slot and the user stays in the tab, told which slot on its line."""
    b, x, c = ui.comps["browse"], ui.comps["inspect"], ui.comps[ID]

    def put(sae: str | None, latent: Any, choice: str | None, origins: dict | None, latents: tuple) -> tuple:
        k, edit, origin, message = h.slot_from_list(sae, latent, list(latents), choice)
        slots, origins = ui_steer_bench.fill_slot(h, k, edit, origin, origins, len(latents))
        return (*slots, origins, f"**Slot {k + 1}** — {message}")

    def from_browse(data: dict | None, choice: str | None, origins: dict | None, *latents: str) -> tuple:
        if not data:
            raise ValueError("open a latent's page first")
        return put(data["sae"], data["latent"], choice, origins, latents)

    def from_inspect(latent: str | None, origins: dict | None, *latents: str) -> tuple:
        if not (latent or "").strip():
            raise ValueError("choose a latent to explore first (in the menu, the table or a patch's list)")
        return put(h.atlas.name, latent, None, origins, latents)

    n = len(outs) + 2  # the slots, the origins, the tab's line
    b["slot_here"].click(
        ui_answer.answer(from_browse, n, status=n - 1),
        [b["data"], b["linked"], c["origins"], *slot_latents],
        [*outs, c["origins"], b["notice"]],
        api_name=False,
        concurrency_limit=None,
    )
    x["x_slot"].click(
        ui_answer.answer(from_inspect, n, status=n - 1),
        [x["x_pick"], c["origins"], *slot_latents],
        [*outs, c["origins"], x["x_slot_md"]],
        api_name=False,
        concurrency_limit=None,
    )
