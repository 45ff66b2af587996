"""The Overview tab at research scale: a synthetic atlas of 163,840 latents (the seeds'
Kandinsky-prior dictionary) over 1M images, 30% dead, log-normal frequencies.

    .venv/bin/python benchmarks/bench_overview.py

Rows: building the map coordinates once per atlas, rendering the page (PNG of every latent
+ the hover/click cells) cold and from the cache, the bytes the browser receives, and a
click's nearest-latent lookup. Prints one Markdown table; never asserts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_overview import synthetic

    from app.overview import KINDS, Overview

    atlas = synthetic()
    ov = Overview({"big": atlas})
    rows = []
    t0 = time.perf_counter()
    ov.map("big")
    rows.append(("map coordinates of 163,840 latents (once per atlas)", time.perf_counter() - t0, ""))
    for label, kinds in (
        ("dead only, the process's first (matplotlib start-up)", ["dead"]),
        ("every latent", list(KINDS)),
        ("live only", ["live"]),
    ):
        t0 = time.perf_counter()
        html = ov.html(kinds)
        rows.append((f"page, {label}, cold", time.perf_counter() - t0, f"{len(html) / 1e3:.0f} kB"))
    t0 = time.perf_counter()
    ov.html(list(KINDS))
    rows.append(("page, every latent, cached", time.perf_counter() - t0, ""))
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for x, y in rng.uniform(0, 400, size=(20, 2)):
        ov.nearest("big", x, y, list(KINDS))
    rows.append(("click: nearest latent (mean of 20)", (time.perf_counter() - t0) / 20, ""))
    print("| step | seconds | payload |\n|---|---|---|")
    for name, s, size in rows:
        print(f"| {name} | {s:.3f} | {size} |")


if __name__ == "__main__":
    main()
