"""App latency on the embedded demo (ViT-B/32 with random weights on CPU, tiny Kandinsky).

    .venv/bin/python benchmarks/bench_app.py            # builds demo_cache/ first if needed

Launches the app in this process on 127.0.0.1 and measures:
- latent page, 200 random latents: server latency (a direct HTTP request) and through
  gradio_client (files not downloaded; a browser fetches thumbnails in parallel);
- gradio_client's own floor: the trivial label search;
- inspect (upload -> ViT-B/32 + SAE + heat map), 10 requests;
- steering per image with the prior cached (tiny components, CPU), per resolution.
Prints one Markdown table; never asserts.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np


def pct(ts: list[float]) -> tuple[float, float]:
    return float(np.median(ts) * 1000), float(np.percentile(ts, 95) * 1000)


def main() -> None:
    from gradio_client import Client, handle_file

    from app.server import launch, make_handlers
    from app.ui import build_ui
    from app.demo import build_demo

    info = build_demo("demo_cache")
    handlers, banner = make_handlers(info["clip_atlas"], info["kandinsky_atlas"],
                                     tiny_kandinsky=info["kandinsky"] == "tiny", device="cpu")
    demo = build_ui(handlers, banner)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    url = f"http://127.0.0.1:{port}"
    rng = np.random.default_rng(0)
    n_latents = handlers.atlas.n_latents
    rows = []
    try:
        ts = []
        for lat in rng.integers(0, n_latents, 200):
            req = urllib.request.Request(f"{url}/gradio_api/run/latent_page", data=json.dumps({"data": [int(lat)]}).encode(),
                                         headers={"Content-Type": "application/json"})
            t0 = time.perf_counter()
            urllib.request.urlopen(req).read()
            ts.append(time.perf_counter() - t0)
        rows.append(("latent page, direct HTTP (200 random latents)", *pct(ts)))
        client = Client(url + "/", verbose=False, download_files=False)
        ts = []
        for lat in rng.integers(0, n_latents, 200):
            t0 = time.perf_counter()
            client.predict(int(lat), api_name="/latent_page")
            ts.append(time.perf_counter() - t0)
        rows.append(("latent page, gradio_client (200 random latents)", *pct(ts)))
        ts = []
        for _ in range(50):
            t0 = time.perf_counter()
            client.predict("zzz", api_name="/search")
            ts.append(time.perf_counter() - t0)
        rows.append(("gradio_client floor: trivial label search (50)", *pct(ts)))
        img = next(Path(info["clip_atlas"]).parent.joinpath("images").glob("*.png"))
        ts = []
        for _ in range(10):
            t0 = time.perf_counter()
            client.predict(handle_file(str(img)), "", "", api_name="/inspect")
            ts.append(time.perf_counter() - t0)
        rows.append(("inspect an upload, ViT-B/32 on CPU (10)", *pct(ts)))
        for size, steps in ((64, 10), (64, 25)):  # the tiny MoVQ downsamples only 2x: larger sizes crawl on CPU
            client.predict("a red boat", "0:2.0", "multiply", 1, steps, size, None, api_name="/steer")  # warms the prior
            ts = []
            for v in (3.0, 4.0, 5.0):
                t0 = time.perf_counter()
                client.predict("a red boat", f"0:{v}", "multiply", 1, steps, size, None, api_name="/steer")
                ts.append((time.perf_counter() - t0) / 2)  # original + steered: two decoder runs
            rows.append((f"steer, per image, prior cached, tiny Kandinsky {size}px {steps} steps (CPU)", *pct(ts)))
    finally:
        demo.close()
    print("| action | p50 (ms) | p95 (ms) |\n|---|---|---|")
    for name, p50, p95 in rows:
        print(f"| {name} | {p50:.0f} | {p95:.0f} |")


if __name__ == "__main__":
    main()
