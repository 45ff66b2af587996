"""The main flows in a real browser (Playwright driving the system Chromium), as a person
would: the landing page is alive, links and list rows open pages in place (URL and back
button follow), search results are in view, a broken upload gets a clean message, steering
with one slot filled leaves the others alone, Stop frees the generator, and 600 px wide
pages do not scroll sideways. Screenshots go to the test's temp folder."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from browser import open_browser, overflows_sideways, wait_header, wait_text, wait_url, why_not

pytestmark = pytest.mark.skipif(why_not() is not None, reason=why_not() or "")


@pytest.fixture(scope="module")
def served(served_app):
    return served_app  # conftest's: one server for the suite


@pytest.fixture(scope="module")
def browser():
    with open_browser() as b:
        yield b


@pytest.fixture
def page(browser, served):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.goto(served.url)
    wait_header(pg, "Latent")
    yield pg
    ctx.close()


def _title(pg) -> str:
    return pg.inner_text("#latent-header h2")


def test_landing_is_a_live_latent_and_links_open_pages_in_place(page, served, tmp_path):
    h = served.handlers
    landing = h.landing()[1]
    header = wait_header(page, f"Latent {landing}")
    assert "Fires on" in header and "Dead" not in header
    assert page.is_checked(f"#sae-pick input[value='{h.atlas.name}']")  # the selector shows its state
    wait_url(page, f"?sae={h.atlas.name}&latent={landing}")
    page.screenshot(path=str(tmp_path / "landing_1280.png"), full_page=True)
    near = page.locator("#latent-header a").first
    target = near.inner_text()
    near.click()
    wait_header(page, f"Latent {target}")
    wait_url(page, f"latent={target}")  # the URL follows
    assert len(page.context.pages) == 1  # same tab
    page.go_back()
    wait_header(page, f"Latent {landing}")
    page.click("#latent-next")
    wait_header(page, f"Latent {h.step(h.atlas.name, landing, 1)}")


def test_a_list_row_opens_its_page_and_search_results_are_in_view(page, served):
    row = page.locator('#latent-list [role=gridcell][data-row="2"]').first
    target = row.inner_text().strip()
    row.click()
    wait_header(page, f"Latent {target}")
    search = page.locator("#latent-search textarea, #latent-search input").first
    search.fill("a photo of a dog")
    search.press("Enter")
    expected = str(served.handlers.search("a photo of a dog")[0][0])
    page.wait_for_function(
        "t => [...document.querySelectorAll('#latent-list .first-column')].some(c => c.innerText.trim() === t)",
        arg=expected,
        timeout=30_000,
    )
    box = page.locator("#latent-list").bounding_box()
    assert box["y"] + box["height"] < 900  # the results are on screen, above the latent's page
    assert box["y"] < page.locator("#latent-header").bounding_box()["y"]


def test_a_broken_upload_gets_a_clean_message(page, tmp_path):
    bad = tmp_path / "notimage.png"
    bad.write_text("this is not an image")
    page.locator("button[role=tab]", has_text="Inspect").click()
    page.set_input_files("#inspect-upload input[type=file]", str(bad))
    wait_text(page, "#inspect-upload-note", "not an image", 30_000)
    page.get_by_role("button", name="Inspect", exact=True).click()
    page.wait_for_selector(".toast-body", timeout=30_000)
    toast = page.inner_text(".toast-body")
    assert "not an image (format not recognised)" in toast
    assert "/tmp" not in toast and "preprocess" not in toast and str(tmp_path) not in toast


SHOTS = Path(os.environ["CLIPSAE_SHOTS"]) if os.environ.get("CLIPSAE_SHOTS") else None


def _shot(pg, tmp_path, name):
    """A full-page screenshot in the test's folder (and in the report's, where that exists)."""
    pg.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    if SHOTS is not None:  # CLIPSAE_SHOTS=DIR keeps them for a person to look at
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _slot(pg, k):
    return pg.input_value(f"#slot-{k}-latent textarea, #slot-{k}-latent input")


def _badges(pg) -> int:
    """Gradio's red error badges on components (they block clicks until closed)."""
    return pg.locator(".error, .status-tracker .error").count()


def test_steer_this_fills_one_slot_and_generation_leaves_the_others_alone(page, served, tmp_path):
    page.click("#steer-this")
    wait_text(page, "#steer-status", "+ direction", 30_000)
    latents = [_slot(page, k) for k in range(4)]
    assert latents[0] and latents[1:] == ["", "", ""]
    page.locator("button[role=tab]", has_text="Browse").click()
    page.click("#steer-this")  # twice: the same latent stays in its one slot
    wait_text(page, "#steer-status", "already in slot 1", 30_000)
    assert [_slot(page, k) for k in range(4)] == latents
    page.click("#steer-generate")
    readout = wait_text(page, "#steer-readout", "Causal check", 120_000)
    assert readout.count("+ direction") == 1 and f"latent {latents[0]} + direction" in readout
    assert [_slot(page, k) for k in range(1, 4)] == [""] * 3
    # a click in the active-latent list fills a slot in place (it used to open Browse)
    page.locator("#steer-active-pick label").first.click()
    wait_text(page, "#steer-status", "Slot", 30_000)
    assert page.is_visible("#steer-generate") and not page.is_visible("#latent-header")
    _shot(page, tmp_path, "steer_this_and_generate")


def test_stop_says_stopped_and_it_stays_said(page, served, tmp_path):
    page.locator("button[role=tab]", has_text="Steer").click()
    page.locator("#slot-0-latent textarea, #slot-0-latent input").first.fill("3")
    steps = page.locator("#steer-steps input[type=number]")
    steps.fill("100")
    steps.press("Enter")
    page.click("#steer-generate")
    page.wait_for_function("() => document.body.innerText.includes('step ')", timeout=60_000)
    unet_calls = []
    hook = served.handlers.steerer.pipes.decoder.unet.register_forward_pre_hook(lambda *a: unet_calls.append(1))
    try:
        page.click("#steer-stop")
        wait_text(page, "#steer-status", "Stopped", 60_000)
        queue = served.handlers.steerer.queue
        deadline = 1200  # polls: a guard against hanging, not a timing claim
        while queue.running is not None and deadline:
            time.sleep(0.1)
            deadline -= 1
        assert queue.running is None  # the diffusion loop has stopped and freed the generator
        n = len(unet_calls)
        time.sleep(1.0)
        assert len(unet_calls) == n
        assert "Stopped" in page.inner_text("#steer-status")  # still said (nothing overwrote it)
    finally:
        hook.remove()
    _shot(page, tmp_path, "stop_confirmed")
    steps.fill("2")
    steps.press("Enter")
    page.click("#steer-generate")
    wait_text(page, "#steer-readout", "latent 3 ", 120_000)
    assert "Stopped" not in page.inner_text("#steer-status")  # a new run clears the old line


def test_a_refused_input_in_steer_is_one_line_and_no_badge(page, served, tmp_path):
    page.locator("button[role=tab]", has_text="Steer").click()
    page.locator("#slot-1-latent textarea, #slot-1-latent input").first.fill("2.5")
    page.click("#steer-generate")
    line = wait_text(page, "#steer-status", "Not done", 60_000)
    assert "slot 2's latent" in line and len(line.strip().splitlines()) == 1
    page.wait_for_selector(".toast-body", timeout=10_000)  # the toast is visible
    assert _badges(page) == 0
    _shot(page, tmp_path, "steer_refused")
    page.locator("#slot-1-latent textarea, #slot-1-latent input").first.fill("")
    value = page.locator("#slot-0-value input")
    page.locator("#slot-0-latent textarea, #slot-0-latent input").first.fill("3")
    value.fill("0.5")  # a typed value is used as typed (never clamped to a slider)
    value.press("Enter")
    page.click("#steer-generate")
    readout = wait_text(page, "#steer-readout", "latent 3 set to", 120_000)
    assert re.search(r"latent 3 set to 0\.5\s", readout)


def test_the_workbench_grid_history_and_comparison(page, served, tmp_path):
    page.locator("button[role=tab]", has_text="Steer").click()
    page.locator("#grid-latents textarea, #grid-latents input").first.fill("3")
    page.locator("#grid-strengths textarea, #grid-strengths input").first.fill("0, 2")
    page.locator("#grid-seeds textarea, #grid-seeds input").first.fill("0")
    page.click("#grid-run")
    summary = wait_text(page, "#grid-summary", "Strength units", 180_000)
    assert "+2" in summary and "seed 0" in summary and page.locator("#grid-gallery img").count() == 2
    page.locator("#grid-seeds textarea, #grid-seeds input").first.fill("1")
    page.click("#grid-run")
    page.wait_for_function(
        "() => ((document.querySelector('#history-pick input') || {}).value || '').startsWith('#2 grid')",
        timeout=180_000,
    )
    _shot(page, tmp_path, "grid")
    for box, text in (("#compare-a", "#1 grid"), ("#compare-b", "#2 grid")):
        page.locator(f"{box} input").first.click()
        page.locator("[role=option]", has_text=text).first.click()
    page.click("#compare-run")
    assert "differ in: seed, seeds" in wait_text(page, "#compare-line", "differ", 30_000)
    _shot(page, tmp_path, "history_compare")


TAB_CONTENT = {
    "Browse": "#latent-header",
    "Steer": "#steer-generate",
    "Inspect": "#inspect-upload",
    "Lists": "#lists-table",
}


def test_pages_fit_a_600px_screen(browser, served, tmp_path):
    """Each tab on a 600-px-wide screen, one page load visiting them in turn."""
    ctx = browser.new_context(viewport={"width": 600, "height": 900})
    pg = ctx.new_page()
    try:
        pg.goto(served.url)
        wait_header(pg, "Latent")
        for tab in ("Steer", "Inspect", "Lists", "Browse"):
            pg.locator("button[role=tab]", has_text=tab).click()
            pg.wait_for_selector(TAB_CONTENT[tab], state="visible", timeout=60_000)  # the tab has rendered
            pg.screenshot(path=str(tmp_path / f"{tab.lower()}_600.png"), full_page=True)
            assert not overflows_sideways(pg), tab
    finally:
        ctx.close()


def test_switching_sae_opens_that_saes_landing_latent(page, served):
    k = served.handlers.steer_atlas
    page.locator(f"#sae-pick input[value='{k.name}']").check()
    header = wait_header(page, f"Latent {k.landing_latent()}")
    assert "(steering SAE)" in header
    wait_url(page, f"?sae={k.name}&latent={k.landing_latent()}")
    assert page.is_enabled("#steer-this") and page.inner_text("#steer-this") == "Steer this latent"


@pytest.mark.parametrize("typed", ["2.5", "5000", ""])
def test_a_refused_latent_in_browse_is_one_line_a_toast_and_no_badge(page, served, tmp_path, typed):
    before = _title(page)
    box = page.locator("#latent-input input")
    box.fill(typed)
    box.press("Enter")
    line = wait_text(page, "#browse-notice", "⚠️", 30_000)
    assert len(line.strip().splitlines()) == 1 and "Traceback" not in line
    page.wait_for_selector(".toast-body", timeout=10_000)  # the toast is visible
    assert _badges(page) == 0
    assert _title(page) == before  # the page still shows what it showed
    _shot(page, tmp_path, f"browse_refused_{typed or 'empty'}")
    page.click("#latent-next")  # the next action acts on the page shown, and clears the line
    page.wait_for_function(
        "b => document.querySelector('#latent-header h2').innerText !== b", arg=before, timeout=30_000
    )
    assert "⚠️" not in page.inner_text("#browse-notice")


def test_inspect_without_an_image_is_one_line_a_toast_and_no_badge(page, served, tmp_path):
    page.locator("button[role=tab]", has_text="Inspect").click()
    page.get_by_role("button", name="Inspect", exact=True).click()
    line = wait_text(page, "#inspect-upload-note", "⚠️", 30_000)
    assert len(line.strip().splitlines()) == 1
    page.wait_for_selector(".toast-body", timeout=10_000)
    assert _badges(page) == 0
    _shot(page, tmp_path, "inspect_refused")
    page.locator("#inspect-upload").scroll_into_view_if_needed()
    page.fill("#inspect-pick textarea, #inspect-pick input", "0")
    page.get_by_role("button", name="Inspect", exact=True).click()
    wait_text(page, "#inspect-table", "activation", 120_000)
    assert "⚠️" not in page.inner_text("#inspect-upload-note")
