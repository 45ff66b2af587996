"""Load: browsers loading latent pages with all their images (default), or gradio_client
sessions browsing and inspecting (--mode client), against `clipsae serve` on the demo, for a
bounded time, on 127.0.0.1 only; steering jobs join for the second half.

    nice -n 5 .venv/bin/python benchmarks/bench_load.py        # 10 browsers, 60 s, 1 steering job
    nice -n 5 .venv/bin/python benchmarks/bench_load.py --mode client --sessions 20 --steer-jobs 2

--mode browser: ONE asyncio process plays `--browsers` browsers (as browsers on other
machines would: the load generator itself costs little). Each loops over latent pages
with no pause, in one Gradio session of its own as a browser tab is: the page's API call
(POST /gradio_api/call/latent_page, then its event stream), then every file the answer
names (thumbnails, histogram) over at most 6 connections, as a browser does; files already fetched are reused when the server allowed
caching (Cache-Control max-age, or an ETag revalidated with If-None-Match). A page's time
is from the API call to its last file. The steering job (gradio_client, --steer-size px)
loops in a thread during the second half. Reports p50/p95 and pages/s per phase.

The server runs in its own process (`clipsae serve`, demo atlases, tiny Kandinsky unless
the real one is cached); its peak memory is read from /proc (VmHWM). --mode client: each
gradio_client session loops: 4 latent pages, then 1 inspect of an upload; the steering jobs join for the second
half, so latent pages are reported before and while steering runs. Reports requests
served, p50/p95 per action, errors and the server's peak RSS. Never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from app.demo import read_demo_info  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the server did not come up")


def peak_rss_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


FILE_RE = re.compile(r"(?:https?://[^\"\s\\)']+)?/gradio_api/file=[^\"\s\\)']+")


def start_server(a: argparse.Namespace, info: dict, port: int) -> subprocess.Popen:
    clipsae = str(Path(sys.executable).with_name("clipsae"))
    cmd = [
        clipsae,
        "serve",
        "--atlas",
        info["clip_atlas"],
        "--steer-atlas",
        info["kandinsky_atlas"],
        "--port",
        str(port),
        "--device",
        "cpu",
    ] + (["--tiny-kandinsky"] if info["kandinsky"] == "tiny" else [])
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def table(
    title: str,
    times: dict[str, list[float]],
    errors: dict[str, list[str]],
    actions: list[str],
    seconds: dict[str, float] | None = None,
) -> None:
    print(title + "\n")
    print("| action | served | per s | p50 (ms) | p95 (ms) | errors |\n|---|---|---|---|---|---|")
    for action in actions:
        v = np.array(times.get(action, [])) * 1000
        p50, p95 = (np.percentile(v, 50), np.percentile(v, 95)) if v.size else (float("nan"),) * 2
        rate = v.size / seconds[action] if seconds and seconds.get(action) else float("nan")
        print(f"| {action} | {v.size} | {rate:.1f} | {p50:.0f} | {p95:.0f} | {len(errors.get(action, []))} |")
    for action, errs in errors.items():
        print(f"\n{action}: {len(errs)} errors, first: {errs[0]}")


def steer_loop(url: str, size: int, steps: int, seed: int, until: float, times, errors, lock) -> None:
    """One session's generations back to back (gradio_client), until `until`."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    rng = random.Random(1000 + seed)
    label = f"steer ({size} px, {steps} steps)"
    while time.time() < until:
        t0 = time.perf_counter()
        try:
            client.predict(
                "a red boat on a lake",
                f"{rng.randrange(32)}:{rng.choice([0, 2, 4])}",
                "multiply",
                seed,
                steps,
                size,
                None,
                api_name="/steer",
            )
            with lock:
                times[label].append(time.perf_counter() - t0)
        except Exception as exc:  # counted and reported, never hidden
            with lock:
                errors[label].append(repr(exc)[:200])


async def browser(
    http,
    base: str,
    latents: list[int],
    sae: str,
    rng: random.Random,
    until: float,
    phase,
    times: dict[str, list[float]],
    errors: dict[str, list[str]],
    files: list[int],
) -> None:
    """One browser: latent pages back to back, each its API call then its files (6 connections)."""
    cache: dict[str, str | None] = {}  # url -> ETag (None: reusable without asking)
    session = f"{rng.getrandbits(64):016x}"  # a browser tab keeps one Gradio session for all its pages
    while time.time() < until:
        t0, name = time.perf_counter(), f"latent page {phase()}"
        try:
            r = await http.post(
                f"{base}/gradio_api/call/latent_page",
                json={"data": [rng.choice(latents), sae], "session_hash": session},
            )
            r.raise_for_status()
            stream = await http.get(f"{base}/gradio_api/call/latent_page/{r.json()['event_id']}")
            if "event: complete" not in stream.text:
                raise RuntimeError(stream.text[-200:])
            urls = list(dict.fromkeys(u if u.startswith("http") else base + u for u in FILE_RE.findall(stream.text)))
            await asyncio.gather(*(fetch(http, u, cache) for u in urls))
            times[name].append(time.perf_counter() - t0)
            files.append(len(urls))
        except Exception as exc:  # counted and reported, never hidden
            errors[name].append(repr(exc)[:200])


async def fetch(http, url: str, cache: dict[str, str | None]) -> None:
    if url in cache and cache[url] is None:
        return  # the browser's cache (Cache-Control: max-age)
    headers = {"If-None-Match": cache[url]} if cache.get(url) else {}
    r = await http.get(url, headers=headers)
    if r.status_code not in (200, 304):
        r.raise_for_status()
    control = r.headers.get("cache-control", "")
    if "max-age" in control and "max-age=0" not in control and "no-" not in control:
        cache[url] = None
    elif r.headers.get("etag"):
        cache[url] = r.headers["etag"]


def run_browsers(a: argparse.Namespace, url: str, info: dict) -> None:
    import httpx

    manifest = Path(info["clip_atlas"]) / "manifest.json"
    sae = Path(info["clip_atlas"]).name
    freq = Path(info["clip_atlas"]) / "frequency.npy"
    n = int(json.loads(manifest.read_text())["d_sae"])
    latents = [int(i) for i in np.flatnonzero(np.load(freq) > 0)] if freq.is_file() else list(range(n))
    times: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, list[str]] = defaultdict(list)
    lock, files = threading.Lock(), []
    t0 = time.time()
    half, stop_at = t0 + a.seconds / 2, t0 + a.seconds
    steering = [
        threading.Thread(target=steer_loop, args=(url, a.steer_size, a.steer_steps, i, stop_at, times, errors, lock))
        for i in range(a.steer_jobs)
    ]

    def phase() -> str:
        return "while a generation runs" if time.time() >= half and steering else "alone"

    async def go() -> None:
        async def one(i: int) -> None:
            limits = httpx.Limits(max_connections=6, max_keepalive_connections=6)
            async with httpx.AsyncClient(limits=limits, timeout=120) as http:
                await browser(
                    http, url.rstrip("/"), latents, sae, random.Random(i), stop_at, phase, times, errors, files
                )

        await asyncio.gather(*(one(i) for i in range(a.browsers)))

    def start_steering() -> None:
        time.sleep(max(0.0, half - time.time()))
        for t in steering:
            t.start()

    starter = threading.Thread(target=start_steering)
    starter.start()
    asyncio.run(go())
    starter.join()
    for t in steering:
        t.join()
    steer = f"steer ({a.steer_size} px, {a.steer_steps} steps)"
    span = {
        "latent page alone": a.seconds / 2 if steering else a.seconds,
        "latent page while a generation runs": a.seconds / 2,
        steer: a.seconds / 2,
    }
    table(
        f"\n{a.browsers} browsers (one asyncio process, 6 connections each, {np.mean(files or [0]):.0f} files a "
        f"page) for {a.seconds:.0f} s, {a.steer_jobs} steering job(s) in the second half, on 127.0.0.1",
        times,
        errors,
        list(span),
        span,
    )


def run_clients(a: argparse.Namespace, url: str, info: dict) -> None:
    from gradio_client import Client, handle_file

    uploads = (
        sorted((Path(a.cache_dir) / "images").rglob("*.png"))[:20]
        or sorted((Path(a.cache_dir) / "images").rglob("*.*"))[:20]
    )
    n_latents = int(json.loads((Path(info["clip_atlas"]) / "manifest.json").read_text())["d_sae"])
    times: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, list[str]] = defaultdict(list)
    lock = threading.Lock()
    steering = threading.Event()
    stop_at = time.time() + a.seconds
    start_steering = time.time() + a.seconds / 2

    def timed(action: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            fn()
            with lock:
                times[action].append(time.perf_counter() - t0)
                if action == "latent page":
                    phase = "while steering" if steering.is_set() else "before steering starts"
                    times[f"latent page {phase}"].append(time.perf_counter() - t0)
        except Exception as exc:  # counted and reported, never hidden
            with lock:
                errors[action].append(repr(exc)[:200])

    def browse(seed: int) -> None:
        rng = random.Random(seed)
        client = Client(url, verbose=False, download_files=False)
        while time.time() < stop_at:
            for _ in range(4):
                timed("latent page", lambda: client.predict(rng.randrange(n_latents), api_name="/latent_page"))
            img = handle_file(str(rng.choice(uploads)))
            timed("inspect", lambda: client.predict(img, "", "", api_name="/inspect"))

    def steer(seed: int) -> None:
        time.sleep(max(0.0, start_steering - time.time()))  # the first half browses alone
        steering.set()
        steer_loop(url, 64, 10, seed, stop_at, times, errors, lock)

    threads = [threading.Thread(target=browse, args=(i,)) for i in range(a.sessions)]
    threads += [threading.Thread(target=steer, args=(i,)) for i in range(a.steer_jobs)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    table(
        f"\n{a.sessions} browsing sessions + {a.steer_jobs} steering jobs for {time.time() - t0:.0f} s on 127.0.0.1",
        times,
        errors,
        [
            "latent page",
            "latent page before steering starts",
            "latent page while steering",
            "inspect",
            "steer (64 px, 10 steps)",
        ],
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["browser", "client"], default="browser")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--browsers", type=int, default=10, help="--mode browser: simulated browsers")
    p.add_argument("--sessions", type=int, default=20, help="--mode client: gradio_client sessions")
    p.add_argument("--steer-jobs", type=int, default=None, help="default: 1 (browser), 2 (client)")
    p.add_argument("--steer-size", type=int, default=256, help="--mode browser: the generation's resolution")
    p.add_argument("--steer-steps", type=int, default=10)
    p.add_argument("--cache-dir", default=str(REPO / "demo_cache"))
    a = p.parse_args()
    a.steer_jobs = a.steer_jobs if a.steer_jobs is not None else (1 if a.mode == "browser" else 2)
    clipsae = str(Path(sys.executable).with_name("clipsae"))
    subprocess.run([clipsae, "demo", "--no-serve", "--cache-dir", a.cache_dir], check=True, stdout=subprocess.DEVNULL)
    info = read_demo_info(a.cache_dir)
    port = free_port()
    server = start_server(a, info, port)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_ready(url, server)
        (run_browsers if a.mode == "browser" else run_clients)(a, url, info)
        peak = peak_rss_gib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\nserver peak RSS {peak:.2f} GiB; load average {os.getloadavg()[0]:.1f} at the end (a shared machine)")


if __name__ == "__main__":
    main()
