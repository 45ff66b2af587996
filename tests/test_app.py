"""The app launched for real on 127.0.0.1 and driven through gradio_client, per API name."""

import socket

import numpy as np
import pytest
import torch
from PIL import Image

from app.kandinsky import TINY_DIM
from app.server import make_handlers
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
    build_atlas(AtlasConfig(acts=str(d / "k.npy"), sae=str(d / "ksae"), out=str(d / "katlas"), k=4))
    handlers, banner = make_handlers(d / "atlas", d / "katlas", tiny_kandinsky=True, device="cpu")
    demo = build_ui(handlers, banner)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
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
