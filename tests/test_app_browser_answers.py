"""Refused inputs and Inspect's answers in a real browser (issue 22, points 1, 3, 4, 7): a CLIP
id typed while the steering SAE is shown is one line and a toast, no badge, and "Steer this"
then acts on the latent the page shows; Inspect takes "#N", says which input it used when
both are given, refuses "#3.5" without a badge, opens on a heat map that is not blank,
outlines a clicked patch, and shows the gradient heat maps uncropped with their scale.
Screenshots go to the test's folder and to CLIPSAE_SHOTS when set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from browser import open_browser, wait_header, wait_text, why_not

pytestmark = pytest.mark.skipif(why_not() is not None, reason=why_not() or "")
SHOTS = Path(os.environ["CLIPSAE_SHOTS"]) if os.environ.get("CLIPSAE_SHOTS") else None
PICK = "#inspect-pick textarea, #inspect-pick input"


@pytest.fixture(scope="module")
def browser():
    with open_browser() as b:
        yield b


@pytest.fixture
def page(browser, served_app):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.goto(served_app.url)
    wait_header(pg, "Latent")
    yield pg
    ctx.close()


def _shot(pg, tmp_path, name):
    pg.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _badges(pg) -> int:
    return pg.locator(".error, .status-tracker .error").count()


def _toast(pg) -> str:
    pg.wait_for_selector(".toast-body", timeout=10_000)
    return pg.inner_text(".toast-body")


def test_a_clip_id_on_the_steering_sae_is_refused_and_steer_this_acts_on_the_page_shown(page, served_app, tmp_path):
    k = served_app.handlers.steer_atlas
    typed = str(k.n_latents)  # one past the steering SAE's last latent (a CLIP id on the demo)
    page.locator(f"#sae-pick input[value='{k.name}']").check()
    shown = k.landing_latent()
    wait_header(page, f"Latent {shown}")
    box = page.locator("#latent-input input")
    box.fill(typed)
    box.press("Enter")
    line = wait_text(page, "#browse-notice", "⚠️", 30_000)
    assert len(line.strip().splitlines()) == 1 and typed in _toast(page)
    assert _badges(page) == 0 and f"Latent {shown}" in page.inner_text("#latent-header h2")
    _shot(page, tmp_path, "browse_clip_id_on_steering_sae")
    page.click("#steer-this")  # acts on the latent the page shows, not on the refused one
    wait_text(page, "#steer-status", "Slot", 30_000)
    assert page.input_value("#slot-0-latent textarea, #slot-0-latent input") == str(shown)


def test_inspect_answers_hash_n_both_inputs_a_refusal_and_a_patch_click(page, served_app, tmp_path):
    page.locator("button[role=tab]", has_text="Inspect").click()
    page.fill(PICK, "#3.5")
    page.get_by_role("button", name="Inspect", exact=True).click()
    line = wait_text(page, "#inspect-upload-note", "⚠️", 30_000)
    assert "whole number" in line and "whole number" in _toast(page) and _badges(page) == 0
    _shot(page, tmp_path, "inspect_refused_hash_3_5")
    page.fill(PICK, "#3")  # as the captions write it
    page.get_by_role("button", name="Inspect", exact=True).click()
    table = wait_text(page, "#inspect-table", "activation", 120_000)
    assert "Heat map: latent" in table and "⚠️" not in page.inner_text("#inspect-upload-note")
    heat = page.locator("#inspect-heat img")
    heat.wait_for(timeout=30_000)
    before = heat.get_attribute("src")
    box = heat.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["width"] * 0.45)  # a patch, not the scale
    wait_text(page, "#inspect-patch", "patch (row", 30_000)
    page.wait_for_function("b => document.querySelector('#inspect-heat img').src !== b", arg=before, timeout=30_000)
    _shot(page, tmp_path, "inspect_hash_3_patch_marked")
    upload = Path(served_app.handlers.atlas.image_path(0))
    page.set_input_files("#inspect-upload input[type=file]", str(upload))
    wait_text(page, "#inspect-upload-note", "Decoded", 30_000)
    page.get_by_role("button", name="Inspect", exact=True).click()
    wait_text(page, "#inspect-table", "Both an upload and dataset image 3 were given", 120_000)
    _shot(page, tmp_path, "inspect_upload_and_index")


def test_gradient_heat_maps_show_whole_with_their_scale(page, served_app, tmp_path):
    h = served_app.handlers
    page.locator("button[role=tab]", has_text="Inspect").click()
    page.fill(PICK, "1")
    page.get_by_text("Gradient heat map: what changes").click()
    scores = h.inspector.run(h._input_image(None, 1)[0])["scores"]
    inactive = int(next(i for i, s in enumerate(scores) if s <= 0))
    page.fill("#inspect-g-latent textarea, #inspect-g-latent input", str(inactive))
    page.get_by_role("button", name="Compute heat maps").click()
    md = wait_text(page, "#inspect-gradient-md", "Heat moved", 180_000)
    assert f"Latent {inactive} is not active on this image" in md
    images = page.locator("#inspect-gradient img")
    images.first.wait_for(timeout=30_000)
    assert images.count() == 3
    for i in range(3):  # contain: the whole image with its scale, never cropped to a square
        fit = images.nth(i).evaluate("e => getComputedStyle(e).objectFit")
        assert fit == "contain"
    _shot(page, tmp_path, "inspect_gradient_inactive")
