"""The Overview tab: every latent on the frequency × mean-activation map, a bounded payload at
163,840 latents, hover and click in a real browser."""

import json
import re
import socket

import numpy as np
import pytest
from PIL import Image

from app.atlas import Atlas, Interpretations
from app.overview import CELL, HEIGHT, KINDS, WIDTH, Overview, cells, latent_map, shown, to_pixels
from helpers import build_tiny_clip_atlas


class FakeAtlas:
    """The parts of app.atlas.Atlas the overview reads, for synthetic dictionaries of any size."""

    def __init__(self, frequency, mean, n_images, words=None, name="big"):
        self.frequency, self.mean_activation = frequency.astype(np.float32), mean.astype(np.float32)
        self.manifest, self.name = {"n_images": n_images}, name
        self.labels = [{"words": w} for w in words] if words is not None else None
        self.interpretations = Interpretations({}, "", False, "")

    def label(self, s):
        return list(self.labels[s]["words"]) if self.labels else []

    def interpretation_words(self, s):
        return []

    short_label = Atlas.short_label  # the real rule over the two above


def synthetic(n_latents=163_840, n_images=1_000_000, seed=0):
    rng = np.random.default_rng(seed)
    count = np.where(rng.random(n_latents) < 0.3, 0, np.minimum(rng.lognormal(5, 2.5, n_latents), n_images))
    freq = np.floor(count) / n_images
    mean = np.where(freq > 0, rng.lognormal(-2, 1, n_latents), 0)
    words = [["cat", "dog"] if i % 7 == 0 else [] for i in range(n_latents)]
    return FakeAtlas(freq, mean, n_images, words)


def test_map_places_every_latent_dead_ones_in_their_column():
    a = synthetic(5000, 20_000, seed=1)
    m = latent_map(a)
    alive = a.frequency > 0
    px, py = to_pixels(m, m.x, m.y)
    dead_px = to_pixels(m, np.array([m.dead_x]), np.array([0.0]))[0][0]
    assert (px[~alive] <= dead_px).all() and (px[alive] >= dead_px).all()
    # log-log: order of frequency is order of x, order of mean activation is order of y (rows grow downwards)
    i, j = np.flatnonzero(alive)[:2]
    assert (a.frequency[i] < a.frequency[j]) == (m.x[i] < m.x[j])
    assert np.array_equal(np.argsort(m.y[alive], kind="stable"), np.argsort(a.mean_activation[alive], kind="stable"))
    assert set(np.unique(m.kind)) == {0, 1, 2} and (m.kind[alive & (a.frequency >= 0.1)] == 1).all()


def test_cells_cover_every_shown_latent_once_with_labelled_representatives():
    a = synthetic(5000, 20_000, seed=2)
    m = latent_map(a)
    mask = shown(m, KINDS)
    table = cells(a, m, mask)
    assert sum(c[3] for c in table) == int(mask.sum())
    px, py = to_pixels(m, m.x, m.y)
    for cx, cy, rep, count, tip in table[::37]:
        assert (px[rep] // CELL, py[rep] // CELL) == (cx, cy) and tip.startswith(f"latent {rep} ")
        members = mask & (px // CELL == cx) & (py // CELL == cy)
        assert members.sum() == count
        if m.labelled[members].any():
            assert m.labelled[rep] and "cat, dog" in tip
    only = shown(m, ["live"], labelled_only=True)
    assert only.sum() == (m.labelled & (m.kind == 0)).sum() and sum(c[3] for c in cells(a, m, only)) == only.sum()


def test_163840_latents_make_a_bounded_page():
    a = synthetic()
    ov = Overview({"big": a})
    html = ov.html(list(KINDS))
    assert len(html) < 1_500_000, f"{len(html)} bytes"
    data = json.loads(re.search(r'data-map="([^"]*)"', html).group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert len(data["cells"]) <= (WIDTH // CELL + 1) * (HEIGHT // CELL + 1)
    assert sum(c[3] for c in data["cells"]) == a.frequency.size
    assert f"shown: {a.frequency.size}" in html and "dead" in html
    assert ov.html(list(KINDS)) is html  # cached per filter setting


def test_nearest_finds_an_isolated_latent():
    freq = np.array([0.0, 0.001, 0.01, 0.5], dtype=np.float32)
    mean = np.array([0.0, 0.1, 1.0, 3.0], dtype=np.float32)
    ov = Overview({"x": FakeAtlas(freq, mean, 1000, name="x")})
    m = ov.map("x")
    px, py = to_pixels(m, m.x, m.y)
    for s in range(4):
        assert ov.nearest("x", float(px[s]) + 1, float(py[s]) - 1, list(KINDS)) == s
    assert ov.nearest("x", float(px[0]), float(py[0]), ["live", "dense"]) in (1, 2, 3)
    with pytest.raises(ValueError, match="unknown SAE"):
        ov.map("nope")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from app.server import launch, make_handlers
    from app.ui import build_ui

    d = tmp_path_factory.mktemp("ovapp")
    atlas = build_tiny_clip_atlas(d, n_images=10, d_sae=24, k=4)
    handlers, banner = make_handlers(atlas, device="cpu")
    demo = build_ui(handlers, banner)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    yield port, d
    demo.close()


def test_overview_and_collage_apis(served):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    port, d = served
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    html = client.predict(["live", "dense", "dead"], False, api_name="/overview")
    assert "24 latents" in html and 'class="ov-img"' in html and "<script" not in html
    assert "shown: 0" in client.predict([], False, api_name="/overview")
    png = client.predict(3, api_name="/collage")
    assert png.endswith("collage_3.png") and Image.open(png).width > 900
    with pytest.raises(AppError, match="whole number from 0 to 23"):
        client.predict(99, api_name="/collage")


def test_hover_and_click_open_the_latent_page_in_a_real_browser(served, tmp_path):
    from browser import open_browser, wait_header, wait_url, why_not

    if why_not():
        pytest.skip(why_not())
    port, _ = served
    with open_browser() as browser:
        page = browser.new_page(viewport={"width": 1300, "height": 1100})
        page.goto(f"http://127.0.0.1:{port}/")
        wait_header(page, "Latent")
        page.get_by_role("tab", name="Overview").click()
        page.wait_for_function(
            "() => { const i = document.querySelector('img.ov-img'); return i && i.complete; }", timeout=60_000
        )
        point = page.evaluate("""() => {
            const w = document.querySelector('.ov-map'), d = JSON.parse(w.dataset.map);
            const img = w.querySelector('img'), r = img.getBoundingClientRect(), k = r.width / img.naturalWidth;
            const c = d.cells.find(c => c[4].includes('fires on'));
            return {x: r.left + (d.box[0] + (c[0] + 0.5) * d.cell) * k,
                    y: r.top + (d.box[1] + (c[1] + 0.5) * d.cell) * k, latent: c[2]}; }""")
        page.mouse.move(point["x"], point["y"])
        page.wait_for_function(
            "() => { const t = document.querySelector('.ov-tip');"
            " return t && t.style.display === 'block' && t.innerText; }",
            timeout=10_000,
        )
        assert page.inner_text(".ov-tip").startswith(f"latent {point['latent']} · fires on")
        page.screenshot(path=str(tmp_path / "overview_hover.png"))
        page.mouse.click(point["x"], point["y"])
        header = wait_header(page, f"Latent {point['latent']}", 30_000)
        page.wait_for_selector("#latent-header", state="visible", timeout=10_000)  # the Browse tab is shown
        assert f"Latent {point['latent']}" in header
        wait_url(page, f"latent={point['latent']}")  # the URL follows, as for every in-app link
