"""App latency on the embedded demo (ViT-B/32 with random weights on CPU, tiny Kandinsky).

    .venv/bin/python benchmarks/bench_app.py            # builds demo_cache/ first if needed
    .venv/bin/python benchmarks/bench_app.py --cache-dir /tmp/demo

Launches the app in this process on 127.0.0.1 and measures:
- latent page, 200 random latents: server latency (a direct HTTP request) and through
  gradio_client (files not downloaded; a browser fetches thumbnails in parallel);
- gradio_client's own floor: the trivial search;
- inspect (upload -> ViT-B/32 + SAE + heat map), 10 requests;
- steering per image with the prior and the original cached, per resolution and steps;
- Stop: from a client's cancel to the last decoder step of a 100-step job, and to the end
  of the next (2-step) job from another client;
- the start-up timing table (what the resolution menu shows).
Prints one Markdown table; never asserts.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from pathlib import Path

import numpy as np


def pct(ts: list[float]) -> tuple[float, float]:
    return float(np.median(ts) * 1000), float(np.percentile(ts, 95) * 1000)


def browse_rows(url: str, client, n_latents: int, sae: str, rng) -> list[tuple[str, float, float]]:
    rows = []
    ts = []
    for lat in rng.integers(0, n_latents, 200):
        body = json.dumps({"data": [int(lat), sae]}).encode()
        req = urllib.request.Request(
            f"{url}/gradio_api/run/latent_page", data=body, headers={"Content-Type": "application/json"}
        )
        t0 = time.perf_counter()
        urllib.request.urlopen(req).read()
        ts.append(time.perf_counter() - t0)
    rows.append(("latent page, direct HTTP (200 random latents)", *pct(ts)))
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
    rows.append(("gradio_client floor: trivial search (50)", *pct(ts)))
    return rows


def steer_rows(client, handle_file, image: Path) -> list[tuple[str, float, float]]:
    rows = []
    ts = []
    for _ in range(10):
        t0 = time.perf_counter()
        client.predict(handle_file(str(image)), "", "", api_name="/inspect")
        ts.append(time.perf_counter() - t0)
    rows.append(("inspect an upload, ViT-B/32 on CPU (10)", *pct(ts)))
    for size, steps in ((64, 10), (64, 25), (128, 10)):  # the tiny MoVQ downsamples only 2x: larger sizes crawl
        client.predict("a red boat", "0:2.0", "multiply", 1, steps, size, None, api_name="/steer")  # warms the caches
        ts = []
        for v in (3.0, 4.0, 5.0):
            t0 = time.perf_counter()
            client.predict("a red boat", f"0:{v}", "multiply", 1, steps, size, None, api_name="/steer")
            ts.append(time.perf_counter() - t0)  # the original is cached: one decoder run per slider move
        rows.append(
            (f"steer, per slider move (prior and original cached), tiny Kandinsky {size}px {steps} steps", *pct(ts))
        )
    return rows


def stop_rows(url: str, client, handlers) -> list[tuple[str, float, float]]:
    """Cancel a 100-step generation mid-way: how long until the loop stops, and until the
    next user's short job is done."""
    from gradio_client import Client

    import threading

    unet = handlers.steerer.pipes.decoder.unet
    to_stop, to_next = [], []
    for seed in range(3):
        calls: list[tuple[float, int]] = []  # (end of a UNet step, thread): the cancelled job's are its thread's
        hook = unet.register_forward_hook(lambda *a: calls.append((time.perf_counter(), threading.get_ident())))
        try:
            job = client.submit("a red boat", "0:2", "multiply", 100 + seed, 100, 64, None, api_name="/steer")
            while len(calls) < 5:
                time.sleep(0.01)
            t0 = time.perf_counter()
            job.cancel()
            Client(url + "/", verbose=False).predict(
                "a blue boat", "0:1", "multiply", seed, 2, 64, None, api_name="/steer"
            )
            to_next.append(time.perf_counter() - t0)
            time.sleep(1.0)
            cancelled = [t for t, thread in calls if thread == calls[0][1]]
            to_stop.append(max(cancelled[-1] - t0, 0.0))
        finally:
            hook.remove()
    return [
        ("Stop: cancel → the end of the cancelled loop's last step (3 runs)", *pct(to_stop)),
        ("Stop: cancel → another user's 2-step job done (3 runs)", *pct(to_next)),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", default="demo_cache")
    a = p.parse_args()
    from gradio_client import Client, handle_file

    from app.demo import build_demo
    from app.server import launch, make_handlers
    from app.timing import UI_RESOLUTIONS
    from app.ui import build_ui

    info = build_demo(a.cache_dir)
    t0 = time.perf_counter()
    handlers, banner = make_handlers(
        info["clip_atlas"], info["kandinsky_atlas"], tiny_kandinsky=info["kandinsky"] == "tiny", device="cpu"
    )
    startup = time.perf_counter() - t0
    demo = build_ui(handlers, banner)
    port = _free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    url = f"http://127.0.0.1:{port}"
    rng = np.random.default_rng(0)
    try:
        client = Client(url + "/", verbose=False, download_files=False)
        rows = browse_rows(url, client, handlers.atlas.n_latents, handlers.atlas.name, rng)
        image = next(Path(info["clip_atlas"]).parent.joinpath("images").glob("*.png"))
        rows += steer_rows(client, handle_file, image)
        rows += stop_rows(url, client, handlers)
    finally:
        demo.close()
    print("| action | p50 (ms) | p95 (ms) |\n|---|---|---|")
    for name, p50, p95 in rows:
        print(f"| {name} | {p50:.0f} | {p95:.0f} |")
    t = handlers.timings
    print(
        f"\nStart-up (handlers, decoder timing included): {startup:.1f} s. Resolution menu at "
        f"{t.default_steps} steps: " + "; ".join(t.label(r, t.default_steps) for r in UI_RESOLUTIONS)
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
