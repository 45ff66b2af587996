"""The app launched for real on 127.0.0.1 and driven through gradio_client, per API name:
named parameters, clean one-line errors (no server path, no traceback in the log), uploads
through our decoder with one pixel cap everywhere, generation that really stops, the
snippet of docs/app.md, and the serving defaults."""

from __future__ import annotations

import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app.server import launch, make_handlers
from app.ui import build_ui
from app_fixtures import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def served(served_app):
    return served_app  # conftest's: one server for the suite


@pytest.fixture(scope="module")
def client(served):
    return Client(served.url, verbose=False)


def _image(served) -> str:
    return str(next((served.folder / "imgs").rglob("*.png")))


def test_banner_says_what_it_runs_on(served):
    text = " ".join(served.handlers.notices)
    assert "RANDOM weights" in text and "tiny random Kandinsky" in text and "per image at 10 steps" in text
    assert not list((REPO / "app").glob("*.pyi"))  # building the UI writes nothing into the source tree


def test_api_names_keep_working_with_named_parameters(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = {k: [p["parameter_name"] for p in v["parameters"]] for k, v in api.items()}
    assert names == {
        "/latent_page": ["latent", "sae"],
        "/search": ["text", "sae"],
        "/collage": ["latent", "sae"],
        "/overview": ["kinds", "labelled_only", "only", "colour"],  # only, colour: score filters (issue 21)
        "/inspect": ["image", "latent", "dataset_image"],
        "/heatmap": ["image", "text", "latent", "scale", "dataset_image"],
        "/steer": ["prompt", "edits", "mode", "seed", "steps", "resolution", "image"],
        "/steer_strip": ["prompt", "latent", "amount", "seed", "steps", "resolution", "image"],
    }
    header, *_ = client.predict(latent=3, api_name="/latent_page")  # by name, as docs/app.md shows
    assert header.startswith("## Latent 3")


def test_latent_page_api(client, served):
    header, gallery, hist, bands, data = client.predict(3, api_name="/latent_page")
    assert header.startswith("## Latent 3") and data["latent"] == 3 and len(gallery) == len(data["top"])
    assert Image.open(hist).format == "PNG"
    for bad in (-1, 24, 2.5):
        with pytest.raises(AppError, match="whole number from 0 to 23"):
            client.predict(bad, api_name="/latent_page")
    with pytest.raises(AppError, match="unknown SAE 'nope'|not in the list of choices"):
        client.predict(5, "nope", api_name="/latent_page")
    header, *_, data = client.predict(5, served.handlers.steer_atlas.name, api_name="/latent_page")
    assert data["sae"] == "katlas" and "(steering SAE)" in header


def test_user_errors_are_one_clean_line_with_no_traceback_in_the_log(client, served, capfd, tmp_path):
    bad = tmp_path / "notimage.png"
    bad.write_text("this is not an image")
    capfd.readouterr()
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(bad)), "", "", api_name="/inspect")
    message = str(err.value)
    assert "not an image (format not recognised)" in message
    assert str(tmp_path) not in message and "/tmp" not in message and "gradio" not in message.lower()
    for args, api, msg in (
        ((10**20,), "/latent_page", "out of range|whole number"),
        (("a red boat", "0:2", "multiply", 2**64, 2, 64, None), "/steer", "seed must be"),
        (("a red boat", "", "", 1, 2, 64, None), "/steer_strip", "name the steering latent"),
    ):
        with pytest.raises(AppError, match=msg):
            client.predict(*args, api_name=api)
    assert "Traceback" not in capfd.readouterr().err


def test_inspect_api(client):
    _, _, _, _, data = client.predict(None, "", "0", api_name="/inspect")  # a dataset image by index
    md, heat, examples, near, data = client.predict(None, "", "1", api_name="/inspect")
    top = data["top"][0][0]
    assert f"latent [{top}](?sae=atlas&latent={top})" in md and f"| [{top}](" in md  # links to Browse
    assert heat is not None and examples and near and data["grid"] == 4
    assert Image.open(heat).size == (336, 336 + 48)  # the centre crop, then its colour scale underneath
    for index, msg in (("999", "from 0 to 11"), ("inf", "whole number"), ("1.5", "whole number")):
        with pytest.raises(AppError, match=msg):
            client.predict(None, "", index, api_name="/inspect")


def test_uploads_are_decoded_by_our_decoder(client, tmp_path):
    gradient = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = tmp_path / "grad16.png"
    Image.fromarray(gradient).save(path)
    assert np.asarray(Image.open(path).convert("RGB")).mean() > 250  # what Gradio's PIL decoding made of it
    _, heat, *_ = client.predict(handle_file(str(path)), "", "", api_name="/inspect")
    shown = np.asarray(Image.open(heat).convert("L"))[:336]  # above the colour scale
    assert 80 < shown.mean() < 170  # our decoder: 16-bit → 8-bit, a mid-grey gradient


def test_the_pixel_cap_is_the_same_in_every_tab(client, tmp_path):
    big = tmp_path / "big81mp.png"
    Image.new("1", (9000, 9000)).save(big)  # 81 megapixels in a small file
    calls = (
        ((handle_file(str(big)), "", ""), "/inspect"),
        (("a red boat", "", "multiply", 0, 2, 64, handle_file(str(big))), "/steer"),
        (("a red boat", "1", "", 0, 2, 64, handle_file(str(big))), "/steer_strip"),
    )
    for args, api in calls:
        with pytest.raises(AppError, match="9000x9000 pixels exceeds the cap of 64000000"):
            client.predict(*args, api_name=api)


def test_heatmap_api_removes_a_latent(client):
    _, _, _, _, data = client.predict(None, "", "1", api_name="/inspect")
    top = data["top"][0][0]
    gallery, md = client.predict(None, "a photo of a cat", str(top), 0.0, "1", api_name="/heatmap")
    assert len(gallery) == 3 and f"latent {top} × 0" in md
    before, after = (float(v.strip("*")) for v in md.split("Similarity ")[1].split(" with")[0].split(" → "))
    assert before != after  # removing the image's most active latent changes its similarity to the text
    _, same_md = client.predict(None, "a photo of a cat", str(top), 1.0, "1", api_name="/heatmap")
    assert "Σ|Δ| / Σ = 0.000" in same_md  # scale 1 is the untouched model
    for args, msg in (
        (("", str(top), 0.0), "give a text"),
        (("cat", "", 0.0), "name the latent"),
        (("cat", "999", 0.0), "whole number"),
        (("cat", str(top), 1e9), "within"),
    ):
        with pytest.raises(AppError, match=msg):
            client.predict(None, *args, "1", api_name="/heatmap")


def test_steer_api_identity_strip_and_bad_values(client, served):
    orig, steered = client.predict("a red boat", "0:1.0, 5:1", "multiply", 1, 2, 64, None, api_name="/steer")
    assert np.array_equal(np.asarray(Image.open(orig)), np.asarray(Image.open(steered)))
    for edits, msg in (("0:nan", "finite"), ("0:1e9", "within"), ("99:2", "out of range"), ("x", "latent:value")):
        with pytest.raises(AppError, match=msg):
            client.predict("a red boat", edits, "multiply", 1, 2, 64, None, api_name="/steer")
    with pytest.raises(AppError, match="prompt is empty"):
        client.predict("", "0:2", "multiply", 1, 2, 64, None, api_name="/steer")
    with pytest.raises(AppError, match="whole number"):
        client.predict("a red boat", "2.5", "", 1, 2, 64, None, api_name="/steer_strip")
    from_prompt = client.predict("a red boat", "3", "", 1, 2, 64, None, api_name="/steer_strip")
    from_image = client.predict("a red boat", "3", "", 1, 2, 64, handle_file(_image(served)), api_name="/steer_strip")
    assert len(from_prompt) == len(from_image) == 3
    middle = [np.asarray(Image.open(strip[1]["image"])) for strip in (from_prompt, from_image)]
    assert not np.array_equal(*middle)  # the uploaded start image is used, not ignored


def _listening(port: int) -> list[str]:
    """Addresses a TCP port is listening on, read from /proc/net/tcp{,6}."""
    found = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        table = Path("/proc/net") / name
        for line in table.read_text().splitlines()[1:] if table.exists() else []:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if int(hexport, 16) == port and state == "0A":  # LISTEN
                raw = b"".join(bytes.fromhex(addr[i : i + 8])[::-1] for i in range(0, len(addr), 8))
                found.append(socket.inet_ntop(family, raw))
    return found


def test_server_binds_loopback_only(served):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux's /proc/net/tcp to read the listening address")
    assert _listening(served.port) and set(_listening(served.port)) <= {"127.0.0.1", "::1"}
    with socket.socket() as s:  # the check itself sees a server bound to every interface
        s.bind(("0.0.0.0", 0))
        s.listen()
        assert _listening(s.getsockname()[1]) == ["0.0.0.0"]


def _wait_for(condition, what: str, guard_s: float = 300.0) -> None:
    """Poll until `condition()` holds; `guard_s` only turns a hang into a failure (no timing is asserted)."""
    deadline = time.monotonic() + guard_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_cancelled_generation_stops_its_work_and_frees_the_queue(served, client):
    unet = served.handlers.steerer.pipes.decoder.unet
    queue = served.handlers.steerer.queue
    calls: list[int] = []
    hook = unet.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        job = client.submit("a red boat", "0:2", "multiply", 7, 100, 64, None, api_name="/steer")
        _wait_for(lambda: len(calls) >= 3, "the generation never reached the decoder")
        header, *_ = client.predict(1, api_name="/latent_page")  # browsing does not wait for the generation
        assert header.startswith("## Latent 1") and queue.running is not None and len(calls) < 200
        job.cancel()
        _wait_for(lambda: queue.running is None, "the cancelled generation never left the queue")
        n = len(calls)
        assert n < 200  # stopped: far from 2 × 100 decoder steps
        other = Client(served.url, verbose=False)
        orig, steered = other.predict("a red boat", "0:1", "multiply", 1, 2, 64, None, api_name="/steer")
        assert np.array_equal(np.asarray(Image.open(orig)), np.asarray(Image.open(steered)))
        assert len(calls) - n <= 4  # only the new 2-step generation ran: the cancelled one never resumed
    finally:
        hook.remove()


def _get(port: int, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_http_serves_no_file_outside_gradio_cache(served):
    image = served.handlers.atlas.image_path(0)
    assert image is not None
    for target in ("/etc/passwd", str(image), str(served.folder / "sae" / "cfg.json")):
        for path in (
            f"/gradio_api/file={target}",
            f"/file={target}",
            f"/gradio_api/file=/tmp/gradio/..{target}",
            f"/gradio_api/file=%2e%2e/%2e%2e{target}",
        ):
            status, body = _get(served.port, path)
            assert status >= 400 and b"root:" not in body and b"d_sae" not in body, (path, status)


def test_uploads_over_the_cap_are_refused(served):
    import urllib.error
    import urllib.request

    boundary = "clipsaeboundary"
    payload = b"\0" * (21 * 1024 * 1024)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        f"{served.url}gradio_api/upload",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 413


def test_missing_and_corrupt_atlas_images_show_placeholders(client, served, caplog):
    atlas = served.handlers.atlas
    latent = int(np.argmax(atlas.frequency))
    ids = [int(i) for i in atlas.topk_ids[latent] if i >= 0]
    assert len(ids) >= 2
    gone, broken = atlas.image_path(ids[0]), atlas.image_path(ids[1])
    saved = gone.read_bytes(), broken.read_bytes()
    try:
        gone.unlink()
        broken.write_bytes(b"\xff\xd8 corrupt")
        shutil.rmtree(served.handlers.render.root)  # thumbnails already rendered would hide the fault
        served.handlers.render.root.mkdir()
        with caplog.at_level("WARNING"):
            header, top16, *_ = client.predict(latent, api_name="/latent_page")
        assert len(top16) == len(ids)
        assert "cannot show" in caplog.text or "unavailable" in caplog.text or "no image" in caplog.text
        header2, *_ = client.predict((latent + 1) % atlas.n_latents, api_name="/latent_page")  # still serving
        assert header2
    finally:
        gone.write_bytes(saved[0])
        broken.write_bytes(saved[1])


def test_without_a_steering_model_the_other_tabs_work(served):
    handlers, banner = make_handlers(served.folder / "atlas", None, device="cpu")
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
        with pytest.raises(AppError, match="steering is not available"):
            c.predict("a boat", "0:2", "multiply", 1, 2, 64, None, api_name="/steer")
    finally:
        demo.close()


def test_the_docs_snippet_runs_against_the_app(served):
    doc = (REPO / "docs" / "app.md").read_text()
    snippet = re.search(r"```python\n(from gradio_client import.*?)```", doc, re.S).group(1)
    for old, new in (
        ("http://127.0.0.1:7860/", served.url),
        ("cat.jpg", _image(served)),
        ("latent=42", "latent=3"),
        ('"12"', '"1"'),
        ("12:4.0, 40:0", "1:4.0, 2:0"),
        ("25, 512", "2, 64"),
    ):
        assert old in snippet, old
        snippet = snippet.replace(old, new)
    scope: dict = {}
    exec(compile(snippet, "docs/app.md", "exec"), scope)  # noqa: S102 - our own docs
    assert scope["header"].startswith("## Latent 3") and scope["page"]["latent"] == 3
    assert len(scope["maps"]) == 3 and len(scope["strip"]) == 3 and scope["rows"]["data"]


def test_a_busy_or_impossible_port_is_one_line_before_anything_loads(served, capsys):
    from app.cli import main

    missing = served.folder / "no_such_atlas"  # never read: the port is refused first
    assert main(["serve", "--atlas", str(missing), "--port", str(served.port)]) == 2
    out, err = capsys.readouterr()
    assert f"cannot listen on 127.0.0.1:{served.port}" in err and "--port" in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and "serving" not in out
    assert main(["serve", "--atlas", str(missing), "--port", "99999"]) == 2
    assert "--port 99999: a port is a number from 1 to 65535" in capsys.readouterr().err
    assert main(["serve", "--atlas", str(missing), "--port", str(free_port())]) == 2  # then the atlas is checked
    out, err = capsys.readouterr()
    assert "no_such_atlas" in err and "serving" not in out
