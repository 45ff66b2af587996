"""The app launched for real on 127.0.0.1 and driven through gradio_client, per API name."""

import shutil
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from app.kandinsky import TINY_DIM
from app.server import launch, make_handlers
from app.ui import build_ui, parse_edits
from helpers import build_tiny_clip_atlas
from precompute.atlas import AtlasConfig, build_atlas
from sae_core.config import SAEConfig
from sae_core.io import save_sae
from sae_core.sae import SparseAutoencoder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    d = tmp_path_factory.mktemp("app")
    build_tiny_clip_atlas(d)
    g = torch.Generator().manual_seed(1)
    np.save(d / "k.npy", np.random.default_rng(0).normal(size=(50, TINY_DIM)).astype(np.float32))
    ksae = SparseAutoencoder(SAEConfig(d_in=TINY_DIM, d_sae=40), generator=g)
    with torch.no_grad():
        ksae.b_enc.fill_(0.05)
    save_sae(ksae, d / "ksae")
    build_atlas(AtlasConfig(acts=str(d / "k.npy"), sae=str(d / "ksae"), out=str(d / "katlas"), top_images=4))
    handlers, banner = make_handlers(d / "atlas", d / "katlas", tiny_kandinsky=True, device="cpu")
    demo = build_ui(handlers, banner)
    port = free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    from gradio_client import Client

    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    yield client, d, handlers, port
    demo.close()


def test_banner_says_what_it_runs_on(running):
    _, _, handlers, _ = running
    text = " ".join(handlers.notices)
    assert "RANDOM weights" in text and "tiny random Kandinsky" in text


def test_latent_page_api(running):
    client, d, _, _ = running
    header, gallery, hist, quant, data = client.predict(3, api_name="/latent_page")
    assert header.startswith("## Latent 3")
    assert data["latent"] == 3 and len(gallery) == len(data["top"])
    for bad in (-1, 24, 2.5):
        with pytest.raises(Exception, match="whole number from 0 to 23"):
            client.predict(bad, api_name="/latent_page")


def test_inspect_api(running, tmp_path):
    from gradio_client import handle_file

    client, d, _, _ = running
    img = next((d / "imgs").glob("*.png"))
    md, heat, examples, near, data = client.predict(handle_file(str(img)), "", "", api_name="/inspect")
    assert md.startswith("| latent") and data["top"] and heat is not None and examples
    assert len(near) >= 1
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(Exception):
        client.predict(handle_file(str(bad)), "", "", api_name="/inspect")
    md2, _, _, _, data2 = client.predict(None, "", "0", api_name="/inspect")  # a dataset image by index
    assert data2["top"]
    with pytest.raises(Exception, match="no dataset image"):
        client.predict(None, "", "999", api_name="/inspect")


def test_heatmap_api_removes_a_latent(running):
    client, d, _, _ = running
    _, _, _, _, data = client.predict(None, "", "1", api_name="/inspect")
    top = data["top"][0][0]
    gallery, md = client.predict(None, "a photo of a cat", str(top), 0.0, "1", api_name="/heatmap")
    assert len(gallery) == 3 and f"latent {top} × 0" in md
    before, after = (float(v.strip("*")) for v in md.split("Similarity ")[1].split(" with")[0].split(" → "))
    assert before != after  # removing the image's most active latent changes its similarity to the text
    same_gallery, same_md = client.predict(None, "a photo of a cat", str(top), 1.0, "1", api_name="/heatmap")
    assert "Σ|Δ| / Σ = 0.000" in same_md  # scale 1 is the untouched model
    for args, msg in ((("", str(top), 0.0), "give a text"), (("cat", "", 0.0), "name the latent"),
                      (("cat", "999", 0.0), "whole number"), (("cat", str(top), 1e9), "within")):
        with pytest.raises(Exception, match=msg):
            client.predict(None, *args, "1", api_name="/heatmap")


def test_steer_api_identity_and_bad_values(running):
    client, _, _, _ = running
    orig, steered = client.predict("a red boat", "0:1.0, 5:1", "multiply", 1, 2, 64, None, api_name="/steer")
    assert np.array_equal(np.asarray(Image.open(orig)), np.asarray(Image.open(steered)))
    for edits, msg in (("0:nan", "finite"), ("0:1e9", "within"), ("99:2", "out of range"), ("x", "latent:value")):
        with pytest.raises(Exception, match=msg):
            client.predict("a red boat", edits, "multiply", 1, 2, 64, None, api_name="/steer")
    with pytest.raises(Exception, match="prompt is empty"):
        client.predict("", "0:2", "multiply", 1, 2, 64, None, api_name="/steer")
    strip = client.predict("a red boat", 3, 10.0, 1, 2, 64, api_name="/steer_strip")
    assert len(strip) == 3


def test_server_binds_loopback_only(running):
    _, _, _, port = running
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) == 0


def test_steer_tab_combines_sliders_and_typed_edits(running):
    _, _, handlers, _ = running
    original, steered, md = handlers.steer_ui("a red boat", "", "multiply", 1, 2, 64, None,
                                              3, 1.0, None, 1.0, float("nan"), 1.0, None, 1.0)
    assert np.array_equal(np.asarray(original), np.asarray(steered)) and "active steering latents" in md
    _, changed, _ = handlers.steer_ui("a red boat", "", "add", 1, 2, 64, None, 3, 20.0, None, 1.0, None, 1.0, None, 1.0)
    assert not np.array_equal(np.asarray(original), np.asarray(changed))


def test_parse_edits():
    assert parse_edits("12:2.5, 40:0") == [(12, 2.5), (40, 0.0)]
    with pytest.raises(ValueError):
        parse_edits("12=2")


def test_deep_link_renders_that_latent_in_a_real_browser(running):
    from browser import chromium, page_text

    if chromium() is None:
        pytest.skip("Debian chromium is not installed (make setup installs it where apt is usable as root)")
    _, _, _, port = running
    text = page_text(f"http://127.0.0.1:{port}/?latent=7", "#latent-header", "Latent 7")
    assert "Latent 7" in text and "fires on" in text


def test_both_saes_are_browsable_and_deep_linkable(running):
    from browser import chromium, page_text

    client, _, handlers, port = running
    assert set(handlers.browsable) == {"atlas", "katlas"}
    header, _, _, _, data = client.predict(5, "katlas", api_name="/latent_page")
    assert data["sae"] == "katlas" and header.startswith("## Latent 5")
    with pytest.raises(Exception, match="not in the list of choices|unknown SAE"):
        client.predict(5, "nope", api_name="/latent_page")
    rows = client.predict("a photo of a dog", api_name="/search")  # text -> latents by CLIP text embedding
    assert len(rows["data"]) > 0
    if chromium() is not None:
        text = page_text(f"http://127.0.0.1:{port}/?sae=katlas&latent=39", "#latent-header", "Latent 39")
        assert "Latent 39" in text


def _get(port: int, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_http_serves_no_file_outside_gradio_cache(running):
    _, d, handlers, port = running
    image = handlers.atlas.image_path(0)
    assert image is not None
    for target in ("/etc/passwd", str(image), str(d / "sae" / "cfg.json")):
        for path in (f"/gradio_api/file={target}", f"/file={target}",
                     f"/gradio_api/file=/tmp/gradio/..{target}", f"/gradio_api/file=%2e%2e/%2e%2e{target}"):
            status, body = _get(port, path)
            assert status != 200 or b"root:" not in body and b"d_sae" not in body, (path, status)
            assert status in (403, 404, 400, 405) or status >= 400, (path, status)


def test_uploads_over_the_cap_are_refused(running):
    import urllib.error
    import urllib.request

    _, _, _, port = running
    boundary = "clipsaeboundary"
    payload = b"\0" * (21 * 1024 * 1024)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/gradio_api/upload", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 413


def test_missing_and_corrupt_atlas_images_show_placeholders(running, caplog):
    client, d, handlers, _ = running
    atlas = handlers.atlas
    latent = int(np.argmax(atlas.frequency))
    ids = [int(i) for i in atlas.topk_ids[latent] if i >= 0]
    assert len(ids) >= 2
    gone, broken = atlas.image_path(ids[0]), atlas.image_path(ids[1])
    saved = gone.read_bytes(), broken.read_bytes()
    try:
        gone.unlink()
        broken.write_bytes(b"\xff\xd8 corrupt")
        shutil.rmtree(handlers.render.root)  # thumbnails already rendered would hide the fault
        handlers.render.root.mkdir()
        with caplog.at_level("WARNING"):
            header, top16, *_ = client.predict(latent, api_name="/latent_page")
        assert len(top16) == len(ids)
        assert "cannot show" in caplog.text or "unavailable" in caplog.text or "no image" in caplog.text
        header2, *_ = client.predict((latent + 1) % atlas.n_latents, api_name="/latent_page")  # still serving
        assert header2
    finally:
        gone.write_bytes(saved[0])
        broken.write_bytes(saved[1])


def test_a_cancelled_generation_leaves_the_app_serving(running, monkeypatch):
    import threading
    import time

    client, _, handlers, _ = running
    steerer = handlers.steerer
    decode = steerer.decode
    in_flight = [0]
    lock = threading.Lock()

    def counted(*args, **kwargs):  # lets the test wait for the cancelled job's thread to finish
        with lock:
            in_flight[0] += 1
        try:
            return decode(*args, **kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(steerer, "decode", counted)
    job = client.submit("a red boat", "0:2", "multiply", 3, 60, 64, None, api_name="/steer")
    time.sleep(1.0)
    job.cancel()
    t0 = time.perf_counter()
    header, *_ = client.predict(1, api_name="/latent_page")  # browsing does not wait for the generation
    assert header and time.perf_counter() - t0 < 5
    orig, steered = client.predict("a red boat", "0:1", "multiply", 1, 2, 64, None, api_name="/steer")
    assert np.array_equal(np.asarray(Image.open(orig)), np.asarray(Image.open(steered)))
    # Gradio cannot interrupt a running handler: the cancelled job finishes in the background.
    # Wait for it, so no generation thread outlives the test (it would abort the interpreter at exit).
    deadline, idle_since = time.time() + 120, None
    while time.time() < deadline:
        with lock:
            busy = in_flight[0] > 0
        if busy:
            idle_since = None
        elif idle_since is None:
            idle_since = time.time()
        elif time.time() - idle_since > 1.5:  # longer than the gap between its two decodes
            break
        time.sleep(0.1)


def test_without_a_steering_model_the_other_tabs_work(running):
    from gradio_client import Client

    _, d, _, _ = running
    handlers, banner = make_handlers(d / "atlas", None, device="cpu")
    assert handlers.steerer is None
    with pytest.raises(ValueError, match="steering is not available"):
        handlers.steer("a boat", "0:2")
    demo = build_ui(handlers, banner)
    assert any("Steering is unavailable" in str(getattr(b, "value", "")) for b in demo.blocks.values())
    port = free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    try:
        c = Client(f"http://127.0.0.1:{port}/", verbose=False)
        header, *_ = c.predict(3, api_name="/latent_page")
        assert "3" in str(header)
        with pytest.raises(Exception, match="steering is not available"):
            c.predict("a boat", "0:2", "multiply", 1, 2, 64, None, api_name="/steer")
    finally:
        demo.close()
