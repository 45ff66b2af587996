"""Load: 20 concurrent gradio_client sessions browsing and inspecting, plus 2 steering jobs,
against `clipsae serve` on the demo, for a bounded time, on 127.0.0.1 only.

    .venv/bin/python benchmarks/bench_load.py                  # 60 s, 20 sessions, 2 steering jobs
    .venv/bin/python benchmarks/bench_load.py --seconds 120 --sessions 40

The server runs in its own process (`clipsae serve`, demo atlases, tiny Kandinsky unless
the real one is cached); its peak memory is read from /proc (VmHWM). Each browsing session
loops: 4 latent pages, then 1 inspect of an upload; the steering jobs join for the second
half, so latent pages are reported before and while steering runs. Reports requests
served, p50/p95 per action, errors and the server's peak RSS. Never asserts.
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--steer-jobs", type=int, default=2)
    p.add_argument("--cache-dir", default=str(REPO / "demo_cache"))
    a = p.parse_args()
    clipsae = str(Path(sys.executable).with_name("clipsae"))
    subprocess.run([clipsae, "demo", "--no-serve", "--cache-dir", a.cache_dir], check=True, stdout=subprocess.DEVNULL)
    info = read_demo_info(a.cache_dir)
    port = free_port()
    cmd = [clipsae, "serve", "--atlas", info["clip_atlas"], "--steer-atlas", info["kandinsky_atlas"],
           "--port", str(port), "--device", "cpu"] + (["--tiny-kandinsky"] if info["kandinsky"] == "tiny" else [])
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_ready(url, server)
        from gradio_client import Client, handle_file

        uploads = sorted((Path(a.cache_dir) / "images").rglob("*.png"))[:20] or \
            sorted((Path(a.cache_dir) / "images").rglob("*.*"))[:20]
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
            client = Client(url, verbose=False, download_files=False)
            rng = random.Random(1000 + seed)
            time.sleep(max(0.0, start_steering - time.time()))  # the first half browses alone
            steering.set()
            while time.time() < stop_at:
                edits = f"{rng.randrange(32)}:{rng.choice([0, 2, 4])}"
                timed("steer (64 px, 10 steps)", lambda: client.predict(
                    "a red boat on a lake", edits, "multiply", seed, 10, 64, None, api_name="/steer"))

        threads = [threading.Thread(target=browse, args=(i,)) for i in range(a.sessions)]
        threads += [threading.Thread(target=steer, args=(i,)) for i in range(a.steer_jobs)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.time() - t0
        peak = peak_rss_gib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    total = sum(len(v) for k, v in times.items() if not k.startswith("latent page "))
    print(f"\n{a.sessions} browsing sessions + {a.steer_jobs} steering jobs for {wall:.0f} s on 127.0.0.1; "
          f"{total} requests served, {sum(len(v) for v in errors.values())} errors; server peak RSS {peak:.2f} GiB\n")
    print("| action | served | p50 (ms) | p95 (ms) | errors |\n|---|---|---|---|---|")
    for action in ("latent page", "latent page before steering starts", "latent page while steering", "inspect",
                   "steer (64 px, 10 steps)"):
        v = np.array(times.get(action, [])) * 1000
        p50, p95 = (np.percentile(v, 50), np.percentile(v, 95)) if v.size else (float("nan"),) * 2
        print(f"| {action} | {v.size} | {p50:.0f} | {p95:.0f} | {len(errors.get(action, []))} |")
    for action, errs in errors.items():
        print(f"\n{action}: {len(errs)} errors, first: {errs[0]}")


if __name__ == "__main__":
    main()
