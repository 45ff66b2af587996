"""Issue 22, points 3-5 in a real browser (Playwright driving the system Chromium): a latent's
text side on its page and in search, Inspect exploring a latent in place, and lists
(bookmark, export, a refused import, an import, a row that opens its page) with tables as
CSV. Screenshots go to the test's temp folder (and to $CLIPSAE_SHOTS when set)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from browser import open_browser, wait_header, wait_text, why_not

pytestmark = pytest.mark.skipif(why_not() is not None, reason=why_not() or "")


@pytest.fixture(scope="module")
def served(served_app):
    served_app.handlers.text_sides[served_app.handlers.atlas.name].get(wait=120)
    return served_app  # conftest's: one server for the suite


@pytest.fixture(scope="module")
def browser():
    with open_browser() as b:
        yield b


@pytest.fixture
def page(browser, served):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = ctx.new_page()
    pg.goto(served.url)
    wait_header(pg, "Latent")
    yield pg
    ctx.close()


def shot(pg, tmp_path: Path, name: str) -> None:
    for folder in (tmp_path, os.environ.get("CLIPSAE_SHOTS")):
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            pg.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_a_latents_page_shows_its_text_side_and_search_finds_it(page, served, tmp_path):
    h = served.handlers
    landing = h.landing()[1]
    word = h.text_side(landing)["top"][0]["text"]
    header = wait_text(page, "#latent-header", "Text side")
    assert f"nearest {word}" in header and "farthest" in header
    shot(page, tmp_path, "text_side_page")
    search = page.locator("#latent-search textarea, #latent-search input").first
    search.fill(word)
    search.press("Enter")
    page.wait_for_function(
        "t => [...document.querySelectorAll('#latent-list .first-column')].some(c => c.innerText.trim() === t)",
        arg=str(landing),
        timeout=30_000,
    )
    shot(page, tmp_path, "text_side_search")


def test_inspect_explores_a_latent_in_place(page, served, tmp_path):
    page.locator("button[role=tab]", has_text="Inspect").click()
    page.locator("#inspect-upload").wait_for()
    page.get_by_label("…or a dataset image by index", exact=False).fill("3")
    page.get_by_role("button", name="Inspect", exact=True).click()
    wait_text(page, "#inspect-table", "Heat map")
    links = page.locator("#inspect-table table a")
    target = links.nth(links.count() - 1).inner_text().strip()
    url = page.url
    links.nth(links.count() - 1).click()
    wait_text(page, "#explore-header", f"Exploring latent {target}")
    assert page.url == url  # still on Inspect: no navigation
    assert page.locator("#inspect-table").is_visible() and not page.locator("#latent-header").is_visible()
    page.locator("#explore-heat img").wait_for()
    assert page.locator("#explore-top img").count() >= 1
    shot(page, tmp_path, "inspect_explore")
    # a patch's list explores in place too
    heat = page.locator("#inspect-heat img")
    box = heat.bounding_box()
    heat.click(position={"x": box["width"] / 2, "y": box["width"] / 2})
    patch_link = page.locator("#inspect-patch a").first
    patch_link.wait_for(timeout=30_000)
    other = patch_link.inner_text().strip()
    patch_link.click()
    wait_text(page, "#explore-header", f"Exploring latent {other}")
    assert not page.locator("#latent-header").is_visible()


def _slot(pg, k: int) -> str:
    return pg.input_value(f"#slot-{k}-latent textarea, #slot-{k}-latent input")


def test_a_latent_goes_in_a_steer_slot_from_browse_and_inspect_without_leaving(page, served, tmp_path):
    h = served.handlers
    landing = h.landing()[1]
    linked = h.linked_choices(landing)
    assert linked, "the landing latent has a linked steering latent (the Steer this tests rely on it too)"
    page.click("#slot-here")
    notice = wait_text(page, "#browse-notice", "Slot 1", 30_000)
    assert f"Latent {linked[0].split()[0]}, linked from" in notice and "Generate in the Steer tab" in notice
    assert page.is_visible("#latent-header") and not page.is_visible("#steer-generate")
    shot(page, tmp_path, "slot_from_browse")
    # Inspect: a latent of the table with a linked steering latent, explored, then put in a slot
    page.locator("button[role=tab]", has_text="Inspect").click()
    page.get_by_label("…or a dataset image by index", exact=False).fill("3")
    page.get_by_role("button", name="Inspect", exact=True).click()
    wait_text(page, "#inspect-table", "Heat map")
    links = page.locator("#inspect-table table a")
    names = [links.nth(i).inner_text().strip() for i in range(links.count())]
    with_link = [n for n in names if n.isdigit() and h.linked_choices(int(n)) and int(n) != landing]
    unlinked = [n for n in names if n.isdigit() and not h.linked_choices(int(n))]
    if unlinked:  # refused by name, on Inspect's line, and no slot changes
        links.nth(names.index(unlinked[0])).click()
        wait_text(page, "#explore-header", f"Exploring latent {unlinked[0]}")
        page.click("#explore-slot")
        wait_text(page, "#explore-slot-line", "no linked steering latent", 30_000)
        shot(page, tmp_path, "slot_from_inspect_refused")
    assert with_link, f"image 3's table {names} has a latent with a linked steering latent"
    target = with_link[0]
    links.nth(names.index(target)).click()
    wait_text(page, "#explore-header", f"Exploring latent {target}")
    page.click("#explore-slot")
    line = wait_text(page, "#explore-slot-line", "Slot", 30_000)
    steering = h.linked_choices(int(target))[0].split()[0]
    assert not page.is_visible("#latent-header") and page.is_visible("#inspect-table")
    shot(page, tmp_path, "slot_from_inspect")
    page.locator("button[role=tab]", has_text="Steer").click()
    held = [_slot(page, k) for k in range(4)]
    first = linked[0].split()[0]
    if steering == first:  # the same steering latent keeps its one slot
        assert "already in slot 1" in line and held == [first, "", "", ""]
    else:
        assert "Slot 2" in line and f"Latent {steering}," in line
        assert held == [first, steering, "", ""]


def test_lists_bookmark_export_import_and_open(page, served, tmp_path):
    h = served.handlers
    landing = h.landing()[1]
    page.locator("#bookmark-note textarea, #bookmark-note input").first.fill("my first note")
    page.click("#bookmark-add")
    wait_text(page, "#bookmark-status", f"Latent {landing} of {h.atlas.name} added")
    shot(page, tmp_path, "lists_bookmark")
    with page.expect_download() as dl:  # every table downloads as CSV: Browse's list here
        page.click("#csv-browse-found")
    rows = list(csv.reader(open(dl.value.path(), encoding="utf-8")))
    assert rows[0] == ["latent", "label", "fires on (%)", "max"] and len(rows) == len(h.search("")) + 1
    page.locator("button[role=tab]", has_text="Lists").click()
    wait_text(page, "#lists-table", "my first note")
    page.click("#lists-export-json")
    link = page.locator("#lists-exported a").first
    link.wait_for(timeout=30_000)
    with page.expect_download() as dl:
        link.click()
    doc = json.loads(Path(dl.value.path()).read_text())
    assert doc["lists"]["bookmarks"] == [{"sae": h.atlas.name, "latent": landing, "note": "my first note"}]
    bad = tmp_path / "bad.csv"
    bad.write_text("list,sae,latent\nx,,2.5\n")
    page.set_input_files("#lists-import input[type=file]", str(bad))
    page.wait_for_selector(".toast-body", timeout=30_000)
    assert "row 2: latent must be a whole number" in page.inner_text(".toast-body")
    good = tmp_path / "good.csv"
    good.write_text(f"list,sae,latent,note\nfrom a colleague,{h.atlas.name},1,look at this\n")
    page.set_input_files("#lists-import input[type=file]", str(good))
    wait_text(page, "#lists-status", "Imported 1 bookmark in 1 list")
    shot(page, tmp_path, "lists_tab")
    page.locator("#lists-table [role=gridcell]", has_text="look at this").first.click()
    wait_header(page, "Latent 1")
