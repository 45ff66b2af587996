"""The main flows in a real browser (Playwright driving the system Chromium), as a person
would: the landing page is alive, links and list rows open pages in place (URL and back
button follow), search results are in view, a broken upload gets a clean message, steering
with one slot filled leaves the others alone, Stop frees the generator, and 600 px wide
pages do not scroll sideways. Screenshots go to the test's temp folder."""

from __future__ import annotations

import time

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
    page.wait_for_function("t => [...document.querySelectorAll('#latent-list .first-column')]"
                           ".some(c => c.innerText.trim() === t)", arg=expected, timeout=30_000)
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


def test_steer_this_fills_one_slot_and_generation_leaves_the_others_alone(page, served, tmp_path):
    page.click("#steer-this")
    wait_text(page, "#steer-status", "set to", 30_000)
    latents = [page.input_value(f"#slot-{k}-latent textarea, #slot-{k}-latent input") for k in range(4)]
    assert latents[0] and latents[1:] == ["", "", ""]
    page.click("#steer-generate")
    readout = wait_text(page, "#steer-readout", "Causal check", 120_000)
    assert readout.count("set to") == 1 and f"latent {latents[0]} set to" in readout
    assert [page.input_value(f"#slot-{k}-latent textarea, #slot-{k}-latent input") for k in range(1, 4)] == [""] * 3
    page.screenshot(path=str(tmp_path / "steer_1280.png"), full_page=True)


def test_stop_ends_the_generation_and_frees_the_generator(page, served):
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
        wait_text(page, "#steer-status", "Stopped", 10_000)
        time.sleep(2.0)
        n = len(unet_calls)
        time.sleep(1.0)
        assert len(unet_calls) == n  # the diffusion loop has stopped
    finally:
        hook.remove()
    steps.fill("2")
    steps.press("Enter")
    t0 = time.perf_counter()
    page.click("#steer-generate")
    wait_text(page, "#steer-readout", "set to", 60_000)
    assert time.perf_counter() - t0 < 30  # the generator was free at once


@pytest.mark.parametrize("tab", ["Browse", "Steer", "Inspect"])
def test_pages_fit_a_600px_screen(browser, served, tab, tmp_path):
    ctx = browser.new_context(viewport={"width": 600, "height": 900})
    pg = ctx.new_page()
    try:
        pg.goto(served.url)
        wait_header(pg, "Latent")
        pg.locator("button[role=tab]", has_text=tab).click()
        time.sleep(0.5)
        pg.screenshot(path=str(tmp_path / f"{tab.lower()}_600.png"), full_page=True)
        assert not overflows_sideways(pg)
    finally:
        ctx.close()



def test_switching_sae_opens_that_saes_landing_latent(page, served):
    k = served.handlers.steer_atlas
    page.locator(f"#sae-pick input[value='{k.name}']").check()
    header = wait_header(page, f"Latent {k.landing_latent()}")
    assert "(steering SAE)" in header
    wait_url(page, f"?sae={k.name}&latent={k.landing_latent()}")
    assert page.is_enabled("#steer-this") and page.inner_text("#steer-this") == "Steer this latent"
