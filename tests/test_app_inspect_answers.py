"""Inspect answers every input (issue 22, points 1 and 7): the gradient heat map says
which input it used when both are given, a clicked patch is outlined, a heat map that cannot move says why, and
server-drawn labels use glyphs the bundled font has. Expected values come from the inspector's arrays."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from app.handlers_inspect import HEAT_SIZE, mark_patch
from app.render import drawable
from app.server import make_handlers


@pytest.fixture(scope="module")
def h(app_data):
    handlers, _ = make_handlers(
        app_data / "atlas", app_data / "katlas", tiny_kandinsky=True, device="cpu", measure_timings=False
    )
    return handlers


def test_the_gradient_heat_map_says_the_upload_is_used_when_an_index_is_given_too(h):
    upload = Image.open(h.atlas.image_path(0)).convert("RGB")
    top = h.inspector.run(upload)["top"][0][0]
    _, md = h.heatmap(upload, "a photo of a cat", str(top), 0.0, "#3")
    assert md.startswith("> ⚠️ Both an upload and dataset image 3 were given: the upload is inspected")
    _, alone = h.heatmap(upload, "a photo of a cat", str(top), 0.0)
    assert alone.startswith("Similarity")


def test_a_clicked_patch_is_outlined_on_the_heat_map_and_nowhere_else():
    grid = 7
    heat = Image.new("RGB", (HEAT_SIZE, HEAT_SIZE + 48), (128, 128, 128))
    side = HEAT_SIZE / grid
    row, col = 2, 5
    marked = np.asarray(mark_patch(heat, grid, (col + 0.5) * side, (row + 0.5) * side)).astype(int)
    changed = np.argwhere((marked != 128).any(axis=2))
    assert changed[:, 0].min() == int(row * side) and changed[:, 0].max() == int((row + 1) * side - 1)
    assert changed[:, 1].min() == int(col * side) and changed[:, 1].max() == int((col + 1) * side - 1)
    assert np.asarray(heat).max() == 128  # the clean map is not drawn on
    assert (np.asarray(mark_patch(heat, grid, 10, HEAT_SIZE + 5)) == 128).all()  # a click on the scale


def test_a_heat_map_that_cannot_move_says_why(h):
    image = Image.open(h.atlas.image_path(1)).convert("RGB")
    scores = h.inspector.run(image)["scores"]
    inactive = int(np.flatnonzero(scores <= 0)[0])
    _, md = h.heatmap(image, "a photo of a cat", str(inactive), 0.0)
    assert "= 0.000" in md and f"Latent {inactive} is not active on this image" in md
    _, same = h.heatmap(image, "a photo of a cat", str(int(np.argmax(scores))), 1.0)
    assert "Scale 1 leaves the latent as it is" in same


def _glyph(text: str) -> np.ndarray:
    im = Image.new("L", (40, 20))
    ImageDraw.Draw(im).text((2, 2), text, fill=255, font=ImageFont.load_default(size=12))
    return np.asarray(im)


def test_server_drawn_labels_have_no_missing_glyphs():
    missing = _glyph("\u4e00")  # a character the bundled font has no glyph for: its missing-glyph box
    assert (_glyph("×") == missing).all() and (_glyph("−") == missing).all()  # why the fold exists
    label = drawable("edited − as is; gradient × input → 1–2")
    assert label == "edited - as is; gradient x input -> 1-2"
    assert all(not (_glyph(ch) == missing).all() for ch in set(label) - {" "})


def test_text_search_logs_no_open_clip_lines_after_the_first(h, caplog):
    encoder = h.inspector.encoder
    first = encoder.text_embeddings(["a photo of a dog"])
    with caplog.at_level(logging.INFO):
        again = encoder.text_embeddings(["a photo of a dog"])
        h.inspector.text_to_latents("a photo of a cat", 5)
    assert [r.getMessage() for r in caplog.records] == []
    assert np.array_equal(first.numpy(), again.numpy())
