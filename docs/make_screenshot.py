"""Retake the README's screenshot of the app (docs/img/app.png) on the embedded demo.

    .venv/bin/python docs/make_screenshot.py                      # builds the demo into demo_cache/ if needed
    .venv/bin/python docs/make_screenshot.py --cache-dir /tmp/demo --latent 12

Serves the demo with `clipsae demo` on a free port, opens it in headless Debian Chromium
driven by Playwright (the [dev] extra; `make browser` installs chromium as root), waits for
the Browse tab's page of a latent (its top images drawn), and writes a small PNG of the page
from its top to the bottom of the latent's top images: resized to
`--width` and reduced to an adaptive palette until it fits `--max-kb`. Look at the PNG
before committing it.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from browser import FLAGS, chromium  # noqa: E402 - the suite's launch flags and browser lookup

READY = "serving the demo on"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(cache_dir: str, port: int, timeout_s: float) -> subprocess.Popen:
    """`clipsae demo` in the background (it builds the demo first if it is not there)."""
    exe = Path(sys.executable).with_name("clipsae")
    proc = subprocess.Popen(
        [str(exe), "demo", "--cache-dir", cache_dir, "--port", str(port), "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    deadline = time.monotonic() + timeout_s
    for line in proc.stdout:  # the build's report, then the line that says it is listening
        if READY in line:
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"clipsae demo did not start serving within {timeout_s:.0f} s")


def _shoot(url: str, raw: Path, width: int, height: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            deadline = time.monotonic() + 120
            while True:  # the server answers before Gradio's queue is up: retry the first load
                try:
                    page.goto(url)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            page.wait_for_function("() => /Latent \\d+/.test(document.body.innerText)", timeout=120_000)
            page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=60_000)
            page.wait_for_timeout(1500)  # let the gallery settle
            # from the top of the page to the bottom of the latent's top images (if the page has them)
            bottom = page.evaluate(
                "() => { const e = document.querySelector('#top-images');"
                " return e ? e.getBoundingClientRect().bottom + window.scrollY : null; }"
            )
            clip = {"x": 0, "y": 0, "width": width, "height": (bottom + 16) if bottom else height}
            page.screenshot(path=str(raw), full_page=True, clip=clip)
        finally:
            browser.close()


def shrink(raw: Path, out: Path, width: int, max_kb: int) -> int:
    """Resize to `width` and quantise to the largest palette that fits `max_kb`; returns bytes."""
    with Image.open(raw) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    for colours in (256, 192, 128, 96, 64):
        im.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
        if out.stat().st_size <= max_kb * 1024:
            break
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", default="demo_cache", help="the demo folder (built if missing)")
    ap.add_argument("--out", default=str(REPO / "docs" / "img" / "app.png"))
    ap.add_argument("--latent", type=int, default=None, help="a latent to show (default: the landing latent)")
    ap.add_argument("--viewport", default="1280x860", help="browser window WxH")
    ap.add_argument("--width", type=int, default=960, help="width of the written PNG")
    ap.add_argument("--max-kb", type=int, default=150)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed for building and starting the demo")
    a = ap.parse_args(argv)
    if chromium() is None:
        raise SystemExit("Debian chromium is not installed (make browser installs it as root with apt)")
    w, h = (int(v) for v in a.viewport.split("x"))
    port = _free_port()
    proc = _serve(a.cache_dir, port, a.timeout)
    out = Path(a.out)
    raw = out.with_suffix(".raw.png")
    try:
        url = f"http://127.0.0.1:{port}/" + (f"?latent={a.latent}" if a.latent is not None else "")
        _shoot(url, raw, w, h)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = shrink(raw, out, a.width, a.max_kb)
    raw.unlink()
    print(f"{out}: {size / 1024:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
