"""Gradio layout and event wiring. The logic lives in atlas.py / steer.py / inspect_image.py;
handlers here format results, and are the only place errors become `gr.Error`.

API names (usable from gradio_client): latent_page, inspect, heatmap, steer, steer_strip, search.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from precompute.images import DEFAULT_MAX_PIXELS, BadImage, decode_image

from evaluation.heatmap import heat_overlay

from .atlas import Atlas
from .inspect_image import Inspector
from .render import RenderCache, overlay
from .steer import Edit, Steerer

log = logging.getLogger(__name__)
MAX_UPLOAD = "20mb"


def parse_edits(text: str) -> list[tuple[int, float]]:
    """'12:2.5, 40:0' -> [(12, 2.5), (40, 0.0)]; a clear ValueError for anything else."""
    out = []
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if ":" not in part:
            raise ValueError(f"write edits as latent:value pairs, e.g. 12:2.5, 40:0; got {part!r}")
        lat, val = (p.strip() for p in part.split(":", 1))
        try:
            latent, value = int(lat), float(val)
        except ValueError:
            raise ValueError(f"write edits as latent:value pairs with numbers; got {part!r}") from None
        out.append((latent, value))
    return out


@dataclass
class Handlers:
    """Everything the UI calls; plain Python in, plain Python out."""

    atlas: Atlas
    steerer: Steerer | None = None
    steer_atlas: Atlas | None = None
    inspector: Inspector | None = None
    notices: list[str] = field(default_factory=list)
    render: RenderCache | None = None

    def __post_init__(self) -> None:
        if self.render is None:
            self.render = RenderCache(self.atlas)
        self.browsable: dict[str, tuple[Atlas, RenderCache]] = {self.atlas.name: (self.atlas, self.render)}
        if self.steer_atlas is not None and self.steer_atlas.name not in self.browsable:
            self.browsable[self.steer_atlas.name] = (self.steer_atlas, RenderCache(self.steer_atlas))

    def pick(self, sae: str | None) -> tuple[Atlas, RenderCache]:
        """The browsable atlas named `sae` (default: the main one)."""
        if not sae:
            return self.browsable[self.atlas.name]
        if sae not in self.browsable:
            raise ValueError(f"unknown SAE {sae!r}; this app serves {', '.join(self.browsable)}")
        return self.browsable[sae]

    # ---------------------------------------------------------------- browse
    def latent_page(self, latent: Any, sae: str = "") -> tuple[str, list, pd.DataFrame, list, dict]:
        atlas, render = self.pick(sae)
        page = atlas.page(latent)
        label = f" — {', '.join(page.label)}" if page.label else ""
        lines = [f"## Latent {page.latent}{label}",
                 f"fires on **{page.frequency:.2%}** of {atlas.manifest['n_images']} images · mean "
                 f"{page.mean_activation:.4g} · max {page.max_activation:.4g}" + (" · **dead**" if page.dead else "")]
        if page.neighbours:
            lines.append("Nearest latents: " + ", ".join(f"[{n}](?sae={atlas.name}&latent={n}) ({c:.2f})"
                                                         for n, c in page.neighbours))
        for identity, linked in page.links.items():
            name = atlas.link_names.get(identity, identity[:12])
            lines.append(f"Co-activates with **{name}** latents (steer them in the Steer tab): "
                         + ", ".join(f"{j} (r={c:.2f})" for j, c in linked))
        band_items = [(b, q) for b, band in enumerate(page.bands) for q in band]
        paths = render.parallel([(render.overlay, (page.latent, slot, t["image"], t["mask"], page.mask_scale))
                                 for slot, t in enumerate(page.top)] + [(render.thumb, (q["image"], 96))
                                                                        for _, q in band_items])
        gallery = [(path, f"{t['path'] or t['image']} · {t['value']:.3g}") for path, t in zip(paths, page.top)]
        edges = np.linspace(0, page.histogram_max, len(page.histogram) + 1)
        hist = pd.DataFrame({"activation": [f"{(a + b) / 2:.3g}" for a, b in zip(edges[:-1], edges[1:])],
                             "images": page.histogram})
        bands = [(path, f"band {b + 1}/5 · {q['value']:.3g}") for path, (b, q) in zip(paths[len(page.top):], band_items)]
        data = {"sae": atlas.name, "latent": page.latent, "label": page.label, "frequency": page.frequency,
                "mean_activation": page.mean_activation, "max_activation": page.max_activation, "dead": page.dead,
                # "image_path", not "path": gradio_client would take a dict with "path" for a file to fetch
                "top": [{"image": t["image"], "image_path": t["path"], "value": t["value"]} for t in page.top],
                "neighbours": page.neighbours, "links": page.links}
        return "\n\n".join(lines), gallery, hist, bands, data

    def linked_choices(self, latent: Any, sae: str = "") -> list[str]:
        """'j (r=0.94)' for each linked steering latent of this latent (empty without links)."""
        atlas, _ = self.pick(sae)
        if self.steer_atlas is None or atlas is self.steer_atlas:
            return []
        try:
            s = atlas.check_latent(latent)
        except ValueError:
            return []
        links = atlas.links_to(self.steer_atlas, s)
        return [f"{j} (r={c:.2f})" for j, c in links]

    def random_latent(self, sae: str = "") -> int:
        atlas, _ = self.pick(sae)
        alive = np.flatnonzero(np.asarray(atlas.frequency) > 0)
        return int(random.choice(alive)) if alive.size else 0

    def search(self, text: str, sae: str = "") -> list[list[Any]]:
        """Latents whose label contains the text, then (embed-space SAEs) the latents nearest
        its CLIP text embedding; empty text lists the most frequent latents."""
        atlas, _ = self.pick(sae)
        text = (text or "").strip()
        if not text:
            ids = atlas.ranked("frequency", 50)
        else:
            ids = atlas.search_labels(text)
            if atlas is self.atlas and self.inspector is not None:
                ids += [i for i, _ in self.inspector.text_to_latents(text) if i not in ids]
        return [[i, ", ".join(atlas.label(i)[:3]), round(float(atlas.frequency[i]), 4),
                 round(float(atlas.max_activation[i]), 4)] for i in ids]

    # ---------------------------------------------------------------- inspect
    def _input_image(self, image: Image.Image | None, dataset_image: Any) -> Image.Image:
        """The uploaded image, or dataset image number `dataset_image`; size-checked."""
        if self.inspector is None:
            raise ValueError("inspecting images needs the atlas's encoder, which is not available for this atlas")
        if image is None and dataset_image not in (None, ""):
            try:
                index = int(float(dataset_image))
            except ValueError:
                raise ValueError(f"dataset image must be an index; got {dataset_image!r}") from None
            path = self.atlas.image_path(index)
            if path is None:
                raise ValueError(f"no dataset image {dataset_image!r} (0..{len(self.atlas.image_paths) - 1})")
            image = decode_image(path.read_bytes())
        if image is None:
            raise ValueError("upload an image (or give a dataset image index) first")
        w, h = image.size
        if w * h > DEFAULT_MAX_PIXELS:
            raise ValueError(f"the image is too large ({w}x{h}); the limit is {DEFAULT_MAX_PIXELS} pixels")
        return image

    def inspect(self, image: Image.Image | None, latent: Any = None,
                dataset_image: Any = None) -> tuple[str, Image.Image | None, list, list, dict]:
        image = self._input_image(image, dataset_image)
        res = self.inspector.run(image)  # type: ignore[union-attr]
        top = res["top"]
        rows = [f"| {s} | {v:.4g} | {', '.join(self.atlas.label(s)[:3])} |" for s, v in top]
        md = "| latent | activation | label |\n|---|---|---|\n" + "\n".join(rows) if rows else "No latent fires."
        chosen = self.atlas.check_latent(latent) if latent not in (None, "") else (top[0][0] if top else None)
        heat = None
        if chosen is not None and res["patches"] is not None:
            vals = np.maximum(res["patches"][:, chosen], 0)
            heat = overlay(image.convert("RGB").resize((336, 336)), vals, float(vals.max()) or 1.0)
        near = [(self.render.thumb(i), f"{self.atlas.image_paths[i] if self.atlas.image_paths else i} · {c:.2f}")
                for i, c in self.inspector.nearest_images(res["embedding"])]
        examples = [(self.render.thumb(int(self.atlas.topk_ids[s, 0])), f"latent {s} · {v:.3g}")
                    for s, v in top if self.atlas.topk_ids[s, 0] >= 0 and self.atlas.image_paths]
        return md, heat, examples, near, {"top": top, "latent": chosen}

    def heatmap(self, image: Image.Image | None, text: str, latent: Any, scale: Any = 0.0,
                dataset_image: Any = None) -> tuple[list, str]:
        """Gradient heat maps of cos(image, text): as is, with `latent` × `scale`, and the difference."""
        image = self._input_image(image, dataset_image)
        if latent in (None, ""):
            raise ValueError("name the latent to remove or scale (run Inspect to see the active ones)")
        chosen = self.atlas.check_latent(latent)
        try:
            factor = float(scale)
        except (TypeError, ValueError):
            raise ValueError(f"the scale must be a number; got {scale!r}") from None
        res = self.inspector.gradient_heatmaps(image, text, chosen, factor)  # type: ignore[union-attr]
        vmax = float(max(res.base.max(), res.edited.max()))
        shown = [(heat_overlay(image, res.base, vmax), f"saliency of “{text.strip()}”"),
                 (heat_overlay(image, res.edited, vmax), f"latent {chosen} × {factor:g}"),
                 (heat_overlay(image, res.difference, signed=True), "difference (red: more, blue: less)")]
        change = float(np.abs(res.difference).sum() / max(float(np.abs(res.base).sum()), 1e-12))
        md = (f"Similarity {res.sim_base:.4f} → **{res.sim_edited:.4f}** with latent {chosen} × {factor:g} "
              f"(spliced back in at `{self.inspector.meta['hook_name']}`, SAE error kept). "  # type: ignore[union-attr]
              f"Heat moved: Σ|Δ| / Σ = {change:.3f}.")
        return shown, md

    # ---------------------------------------------------------------- steer
    def steer(self, prompt: str, edits: str, mode: str = "multiply", seed: float = 0, steps: float = 25,
              resolution: float = 512, image: Image.Image | None = None) -> tuple[Image.Image, Image.Image]:
        if self.steerer is None:
            raise ValueError("steering is not available: the Kandinsky 2.2 models or the steering SAE are not loaded")
        parsed = [Edit(lat, mode, val) for lat, val in parse_edits(edits)]  # type: ignore[arg-type]
        original, steered = self.steerer.steer(prompt, parsed, seed=int(seed), steps=int(steps), size=int(resolution),
                                               prior_steps=int(steps), image=image)
        return original, steered

    def steer_ui(self, prompt, edits, mode, seed, steps, resolution, image, *slots,
                 progress=gr.Progress(track_tqdm=True)):
        """The Steer tab's button: slider slots (latent, value) are added to the typed edits;
        also lists the most active steering latents of the starting embedding."""
        pairs = [f"{int(lat)}:{float(val)}" for lat, val in zip(slots[::2], slots[1::2])
                 if lat not in (None, "") and not (isinstance(lat, float) and np.isnan(lat))]
        all_edits = ", ".join([e for e in [(edits or "").strip()] if e] + pairs)
        original, steered = self.steer(prompt, all_edits, mode, seed, steps, resolution, image)
        x, _ = self.steerer.start_embeds(prompt, int(seed), int(steps), image=image)  # cached by steer()
        active = self.steerer.active_latents(x, n=12)
        md = ("Most active steering latents of this " + ("image" if image is not None else "prompt") + ": "
              + ", ".join(f"**{i}** ({v:.3g})" for i, v in active)) if active else "No steering latent is active."
        return original, steered, md

    def steer_strip(self, prompt: str, latent: float, amount: float = 10.0, seed: float = 0, steps: float = 25,
                    resolution: float = 512) -> list:
        """Seed 001's plus/minus strip: −amount · direction, original, +amount · direction."""
        if self.steerer is None:
            raise ValueError("steering is not available: the Kandinsky 2.2 models or the steering SAE are not loaded")
        out = []
        for sign, name in ((-1, "minus"), (0, "original"), (1, "plus")):
            edits = [Edit(int(latent), "add", sign * float(amount))] if sign else []
            _, img = self.steerer.steer(prompt, edits, seed=int(seed), steps=int(steps), size=int(resolution),
                                        prior_steps=int(steps), with_original=False)
            out.append((img, name))
        return out


def _guard(fn):
    """Turn the library's clear errors into gr.Error (a message in the UI, never a trace)."""
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, BadImage, FileNotFoundError) as exc:
            raise gr.Error(str(exc)) from None
    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _picked_latent(evt: gr.SelectData) -> float:
    return float(evt.row_value[0]) if evt is not None and evt.row_value else 0.0


def _deep_link(request: gr.Request) -> tuple[float, str | None]:
    """?latent=N&sae=NAME from the page's URL."""
    q = dict(request.query_params) if request is not None else {}
    try:
        latent = float(q.get("latent", 0) or 0)
    except ValueError:
        latent = 0.0
    return latent, q.get("sae") or None


def build_ui(h: Handlers, banner: str = "") -> gr.Blocks:
    a = h.atlas
    with gr.Blocks(title="clipsae — what CLIP sees", analytics_enabled=False) as demo:
        gr.Markdown(f"# clipsae · {a.name}\n{banner}")
        with gr.Tabs() as tabs:
            with gr.Tab("Browse", id="browse"):
                sae_pick = gr.Radio(list(h.browsable), value=a.name, label="SAE", visible=len(h.browsable) > 1)
                with gr.Row():
                    # no min/max/precision here: the handler's check refuses bad ids with the valid range,
                    # where Gradio's would silently round 2.5 to a whole number
                    latent = gr.Number(label="Latent", value=0, elem_id="latent-input")
                    go = gr.Button("Show", variant="primary")
                    rnd = gr.Button("Random")
                    query = gr.Textbox(label="Search labels (empty: most frequent)", scale=2)
                header = gr.Markdown(elem_id="latent-header")
                with gr.Row():
                    linked = gr.Dropdown(label="Steering latents this one co-activates with", choices=[], scale=3)
                    steer_this = gr.Button("Steer this", scale=1)
                gallery = gr.Gallery(label="Top images (patch masks share one scale per latent)", columns=8, height="auto")
                hist = gr.BarPlot(x="activation", y="images", label="Activation histogram (non-zero images)", sort=None)
                bands = gr.Gallery(label="Value bands: images from each fifth of (0, max], low to high", columns=10, height="auto")
                found = gr.Dataframe(headers=["latent", "label", "frequency", "max"], label="Latents", interactive=False)
                page_json = gr.JSON(visible=False)
                outs = [header, gallery, hist, bands, page_json]
                # read-only, millisecond handlers skip the queue: a direct request is ~10x faster
                def show_links(value, sae):
                    choices = h.linked_choices(value, sae)
                    return gr.Dropdown(choices=choices, value=choices[0] if choices else None)

                page_in = [latent, sae_pick]
                go.click(_guard(h.latent_page), page_in, outs, api_name="latent_page", queue=False).then(
                    show_links, page_in, linked, api_name=False, queue=False)
                latent.submit(_guard(h.latent_page), page_in, outs, api_name=False, queue=False).then(
                    show_links, page_in, linked, api_name=False, queue=False)
                sae_pick.change(_guard(h.latent_page), page_in, outs, api_name=False, queue=False).then(
                    show_links, page_in, linked, api_name=False, queue=False)
                rnd.click(h.random_latent, [sae_pick], latent, api_name=False).then(
                    _guard(h.latent_page), page_in, outs, api_name=False).then(show_links, page_in, linked, api_name=False)
                query.submit(_guard(h.search), [query, sae_pick], found, api_name="search", queue=False)
                found.select(_picked_latent, None, latent, api_name=False)
                demo.load(_deep_link, None, [latent, sae_pick], api_name=False).then(
                    _guard(h.latent_page), page_in, outs, api_name=False).then(show_links, page_in, linked, api_name=False)
            with gr.Tab("Inspect", id="inspect"):
                with gr.Row():
                    up = gr.Image(type="pil", label="Upload an image", sources=["upload", "clipboard"])
                    heat = gr.Image(type="pil", label="Per-patch activation of the selected latent")
                with gr.Row():
                    which = gr.Textbox(label="Latent for the heat map (empty: the most active)")
                    pick = gr.Textbox(label="…or a dataset image by index")
                run = gr.Button("Inspect", variant="primary")
                top_md = gr.Markdown()
                examples = gr.Gallery(label="Each active latent's best dataset image", columns=10, height="auto")
                near = gr.Gallery(label="Nearest dataset images", columns=8, height="auto")
                ins_json = gr.JSON(visible=False)
                run.click(_guard(h.inspect), [up, which, pick], [top_md, heat, examples, near, ins_json],
                          api_name="inspect")
                with gr.Accordion("Gradient heat map: what changes if this latent is removed?", open=False):
                    gr.Markdown("Saliency of the image–text similarity over the patches, then the same with the "
                                "latent scaled (0 removes it) and re-injected at the SAE's hook.")
                    with gr.Row():
                        g_text = gr.Textbox(label="Text to compare with", value="a photo of a dog", scale=3)
                        g_latent = gr.Textbox(label="Latent", value="")
                        g_scale = gr.Number(label="Scale (0 = remove)", value=0.0)
                    g_btn = gr.Button("Compute heat maps")
                    g_md = gr.Markdown()
                    g_gallery = gr.Gallery(label="As is · edited · difference", columns=3, height="auto")
                g_btn.click(_guard(h.heatmap), [up, g_text, g_latent, g_scale, pick], [g_gallery, g_md],
                            api_name="heatmap", concurrency_limit=2)
            with gr.Tab("Steer", id="steer"):
                if h.steerer is None:
                    gr.Markdown("**Steering is unavailable**: the Kandinsky 2.2 models or the steering SAE are not loaded.")
                elif h.steerer.pipes.tiny:
                    gr.Markdown("Steering runs **tiny random Kandinsky components on the CPU**: images are patterns, "
                                "not pictures. With the real Kandinsky 2.2 and a GPU the same controls make real images.")
                with gr.Row():
                    prompt = gr.Textbox(label="Prompt", value="a photo of a red boat on a lake", scale=3)
                    steer_img = gr.Image(type="pil", label="…or start from an image", sources=["upload"])
                mode = gr.Radio(["multiply", "set", "add"], value="multiply", label="Mode")
                slots = []
                with gr.Row():
                    for i in range(4):
                        with gr.Column(min_width=160):
                            slots.append(gr.Number(label=f"Latent {i + 1}", value=None, precision=0))
                            slots.append(gr.Slider(-20, 20, value=1.0, step=0.1, label="Multiplier / value"))
                edits = gr.Textbox(label="More edits: latent:value pairs (for example 12:4, 40:0)", value="")
                active_md = gr.Markdown()
                with gr.Row():
                    seed = gr.Number(label="Seed", value=0, precision=0)
                    steps = gr.Slider(1, 100, value=25, step=1, label="Steps")
                    res = gr.Dropdown([64, 128, 256, 512, 768], value=512, label="Resolution")
                btn = gr.Button("Generate", variant="primary")
                with gr.Row():
                    orig = gr.Image(label="Original")
                    steered = gr.Image(label="Steered")
                strip_latent = gr.Number(label="Plus/minus strip: latent", value=0, precision=0)
                amount = gr.Number(label="Amount added along its direction", value=10.0)
                strip_btn = gr.Button("Plus / minus strip")
                strip = gr.Gallery(label="−, original, +", columns=3)
                btn.click(_guard(h.steer_ui), [prompt, edits, mode, seed, steps, res, steer_img, *slots],
                          [orig, steered, active_md], api_name=False, concurrency_limit=1, concurrency_id="gpu")
                api_steer = gr.Button(visible=False)  # the documented API: typed edits only
                api_steer.click(_guard(h.steer), [prompt, edits, mode, seed, steps, res, steer_img], [orig, steered],
                                api_name="steer", concurrency_limit=1, concurrency_id="gpu")
                strip_btn.click(_guard(h.steer_strip), [prompt, strip_latent, amount, seed, steps, res], strip,
                                api_name="steer_strip", concurrency_limit=1, concurrency_id="gpu")
            def steer_linked(choice):
                if not choice:
                    raise gr.Error("this latent has no linked steering latents (run clipsae link on the two atlases)")
                j = int(str(choice).split()[0])
                return j, 4.0, j, gr.Tabs(selected="steer")

            steer_this.click(steer_linked, [linked], [slots[0], slots[1], strip_latent, tabs], api_name=False,
                             queue=False)
    demo.queue(default_concurrency_limit=8)
    return demo
