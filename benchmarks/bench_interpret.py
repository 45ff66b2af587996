"""Cost of `clipsae interpret` with the tiny random BLIP on the CPU, on the embedded demo.

    .venv/bin/python benchmarks/bench_interpret.py [DEMO_CACHE]     # builds demo_cache/ first if needed

Rows: loading the captioner; interpreting the 100 and the 300 most frequent latents of the
demo's CLIP atlas (fresh file each time: every image of theirs captioned), in seconds per
100 latents and captions per second; and the whole command as a user runs it (a new
process: imports and loading included). A real BLIP-base costs far more per caption (a
384-px ViT-B/16 and a 12-layer decoder): run the same command with --captioner on a GPU.
Prints one Markdown table; never asserts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    from app.demo import build_demo
    from precompute.captioner import load_captioner
    from precompute.interpret import JSON_FILE, InterpretConfig, interpret

    info = build_demo(sys.argv[1] if len(sys.argv) > 1 else "demo_cache", device="cpu")
    atlas = Path(info["clip_atlas"])
    rows = []
    t0 = time.perf_counter()
    captioner = load_captioner("tiny", "cpu")
    rows.append(("load the tiny captioner", time.perf_counter() - t0, "", ""))
    for n in (100, 300):
        (atlas / JSON_FILE).unlink(missing_ok=True)
        res = interpret(InterpretConfig(atlas=str(atlas), captioner="tiny", latents=str(n), device="cpu"), captioner)
        captioned = len({i for r in res.doc["latents"] for i in r["images"]})
        rows.append(
            (
                f"interpret the {n} most frequent latents ({captioned} images captioned)",
                res.seconds,
                f"{100 * res.seconds / n:.2f}",
                f"{captioned / res.seconds:.1f}",
            )
        )
    (atlas / JSON_FILE).unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "interpret",
            str(atlas),
            "--captioner",
            "tiny",
            "--latents",
            "100",
            "--device",
            "cpu",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    wall = time.perf_counter() - t0
    rows.append(("`clipsae interpret … --captioner tiny --latents 100`, whole command", wall, f"{wall:.2f}", ""))
    interpret(InterpretConfig(atlas=str(atlas), captioner="tiny", device="cpu"), captioner)  # leave the demo whole
    print("| step | seconds | seconds per 100 latents | captions/s |\n|---|---|---|---|")
    for name, s, per, rate in rows:
        print(f"| {name} | {s:.2f} | {per} | {rate} |")


if __name__ == "__main__":
    main()
