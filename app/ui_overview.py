"""The Overview tab: every latent of every served SAE on the frequency × mean-activation map;
hover for its label or interpretation, click to open its latent page. Layout and wiring
only; the maps are drawn by app/overview.py (server-side, bounded payload at any size).

One tab module of app/ui.py (TITLE, ID, create_ui(h), wire(h, ui)).
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from .handlers import Handlers
from .overview import DENSE_FREQUENCY, KINDS, Overview
from .scores_view import COLOURS, FILTERS
from .ui_common import UI

# Hover and click without a script tag: one listener on the component reads the map's cell
# table (data-map) and the mouse position in the image's pixels.
JS = """
const tip = document.createElement('div');  // re-attached after each re-render of the maps
tip.className = 'ov-tip';
function pick(ev) {
  const img = ev.target && ev.target.closest ? ev.target.closest('img.ov-img') : null;
  if (!img) return null;
  const wrap = img.closest('.ov-map');
  if (!wrap._d) {
    wrap._d = JSON.parse(wrap.dataset.map);
    wrap._g = new Map(wrap._d.cells.map(c => [c[0] + ',' + c[1], c]));
  }
  const d = wrap._d, r = img.getBoundingClientRect();
  const px = (ev.clientX - r.left) * img.naturalWidth / r.width - d.box[0];
  const py = (ev.clientY - r.top) * img.naturalHeight / r.height - d.box[1];
  const cx = Math.floor(px / d.cell), cy = Math.floor(py / d.cell);
  let best = null, bd = Infinity;
  for (let dx = -1; dx <= 1; dx++) for (let dy = -1; dy <= 1; dy++) {
    const c = wrap._g.get((cx + dx) + ',' + (cy + dy));
    if (!c) continue;
    const dist = (c[0] + 0.5 - px / d.cell) ** 2 + (c[1] + 0.5 - py / d.cell) ** 2;
    if (dist < bd) { bd = dist; best = c; }
  }
  return best ? {sae: d.sae, cell: best} : null;
}
element.addEventListener('mousemove', ev => {
  const p = pick(ev);
  if (!p) { tip.style.display = 'none'; return; }
  if (!tip.isConnected) element.appendChild(tip);
  tip.textContent = p.cell[4] + (p.cell[3] > 1 ? ` (+${p.cell[3] - 1} more here)` : '') + ' · click to open';
  const er = element.getBoundingClientRect();
  tip.style.left = (ev.clientX - er.left + 14) + 'px';
  tip.style.top = (ev.clientY - er.top + 14) + 'px';
  tip.style.display = 'block';
});
element.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
element.addEventListener('click', ev => {
  const p = pick(ev);
  if (p) trigger('click', {sae: p.sae, latent: p.cell[2]});
});
"""
CSS = """
position: relative;
.ov-img { max-width: 100%; height: auto; cursor: crosshair; display: block; }
.ov-title { font-size: 14px; margin: 10px 0 4px; }
.ov-card { font-size: 13px; margin: 6px 0 14px; }
.ov-card td { padding: 1px 10px 1px 0; }
.ov-tip { position: absolute; display: none; background: #222; color: #fff; padding: 4px 8px; border-radius: 4px;
          font-size: 13px; pointer-events: none; max-width: 460px; z-index: 20; }
"""


TITLE, ID = "Overview", "overview"


def create_ui(h: Handlers) -> dict[str, Any]:
    """The Overview tab's components (the maps are drawn when the tab is opened)."""
    c: dict[str, Any] = {"overview": Overview({name: atlas for name, (atlas, _) in h.browsable.items()})}
    gr.Markdown(
        "Every latent on the PatchSAE map: how often it fires against how strongly (log–log). "
        f"Blue: live, orange: dense (fires on ≥ {DENSE_FREQUENCY:.0%} of images), grey column: dead. "
        "Hover for a latent's label or interpretation; click to open its page. Atlases scored by "
        "`clipsae eval card --atlas` can be filtered to monosemantic or localised latents and coloured "
        "by a score, and show the SAE's card under their map."
    )
    with gr.Row():
        c["kinds"] = gr.CheckboxGroup(list(KINDS), value=list(KINDS), label="Show")
        c["labelled"] = gr.Checkbox(False, label="Only labelled or interpreted latents")
    with gr.Row():  # scores from `clipsae eval card --atlas`; an atlas without them shows no latent when filtered
        c["only"] = gr.CheckboxGroup(list(FILTERS), value=[], label="Only latents that are (clipsae eval card scores)")
        c["colour"] = gr.Dropdown(list(COLOURS), value="kind", label="Colour by (scores: viridis, grey = not scored)")
    c["maps"] = gr.HTML("", js_on_load=JS, css_template=CSS, elem_id="overview-maps")
    return c


def wire(h: Handlers, ui: UI) -> None:
    """Filters redraw the maps; a click on a latent opens its page in the Browse tab, in place,
    through the same navigation box every in-app link uses (URL and back button included)."""
    c = ui.comps[ID]
    overview: Overview = c["overview"]

    def render(
        kinds: list[str] | None, labelled_only: bool, only: list[str] | None = None, colour: str | None = "kind"
    ) -> str:
        """The maps of every served SAE under the filters, as HTML."""
        return overview.html(kinds or [], bool(labelled_only), only or [], colour or "kind")

    def open_latent(evt: gr.EventData) -> str:
        # the Browse tab's navigation box: "sae|latent|nonce" (the nonce makes every click a change)
        return f"{evt.sae}|{int(evt.latent)}|{time.monotonic_ns()}"

    inputs = [c["kinds"], c["labelled"], c["only"], c["colour"]]
    ui.tab_of[ID].select(render, inputs, c["maps"], api_name=False, queue=False)
    c["kinds"].change(render, inputs, c["maps"], api_name="overview", queue=False)
    for other in ("labelled", "only", "colour"):
        c[other].change(render, inputs, c["maps"], api_name=False, queue=False)
    c["maps"].click(open_latent, None, ui.comps["browse"]["nav"], api_name=False, queue=False)
