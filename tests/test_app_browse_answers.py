"""Browse's smaller answers (issue 22, point 7): value bands descend inside a band as they
do across bands, the histogram's top tick is clear of any overlay (its title is in the PNG,
the page has no block label over it), and an atlas without patch masks offers no mask switch."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.render import histogram_png
from app.server import make_handlers
from app.ui_browse import _view_outputs, _view_values


@pytest.fixture(scope="module")
def h(app_data):
    handlers, _ = make_handlers(
        app_data / "atlas", app_data / "katlas", tiny_kandinsky=True, device="cpu", measure_timings=False
    )
    return handlers


def _band_values(view) -> list[float]:
    return [float(cap.split(" · ")[0]) for _, cap in view.bands if not cap.startswith("band ")]


def test_value_bands_descend_inside_and_across(h):
    a = h.atlas
    latent = next(s for s in np.argsort(-a.frequency) if sum(len(b) for b in a.page(int(s)).bands) >= 6)
    view = h.page_view(a.name, int(latent))
    page = a.page(int(latent))
    expected = [round(q["value"], 6) for b in reversed(page.bands) for q in sorted(b, key=lambda q: -q["value"])]
    shown = _band_values(view)
    assert len(shown) == len(expected) and shown == sorted(shown, reverse=True)
    assert shown == pytest.approx([float(f"{v:.3g}") for v in expected])


def test_histogram_title_is_drawn_and_the_top_tick_is_below_it(tmp_path):
    counts = np.zeros(50)
    counts[5] = 100
    rgb = np.asarray(Image.open(histogram_png(tmp_path / "h.png", counts, 1.0)).convert("RGB")).astype(int)
    ink = (rgb < 100).all(axis=2)
    rows = np.flatnonzero(ink.any(axis=1))
    assert rows.min() < 22  # the title's ink at the top
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 120) & (rgb[..., 2] < 100)
    bar_top = int(np.flatnonzero(red.any(axis=1)).min())
    assert bar_top >= 28  # the tallest bar (the top tick's height) starts under the title band
    left_labels = ink[:, :50]  # y tick labels left of the axis
    assert not left_labels[:22].any()  # nothing at the top left, where a block label would sit


def test_no_mask_switch_on_an_atlas_without_masks(h):
    c = {
        k: k
        for k in (
            "sae",
            "latent",
            "header",
            "gallery",
            "hist",
            "bands",
            "data",
            "linked",
            "steer_this",
            "slot_here",
            "icon",
            "query",
        )
    }
    c["masks"] = "masks"
    outs = _view_outputs(c)
    for atlas in (h.atlas, h.steer_atlas):
        values = _view_values(h, h.page_view(atlas.name, h.landing(atlas.name)[1]))
        assert len(values) == len(outs)
        switch = values[outs.index("masks")]
        assert switch.visible is (atlas.masks is not None)
    assert h.steer_atlas.masks is None and h.atlas.masks is not None  # the fixture has both kinds
