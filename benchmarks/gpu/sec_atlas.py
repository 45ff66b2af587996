"""`clipsae atlas` at the seeds' size on the device, and `clipsae link` between the two:
A = 98,304 latents on 512-d inputs, B = 163,840 latents on 1280-d inputs, 32,000 images, random
ReLU SAEs whose biases leave ~64 latents firing per image (benchmarks/bench_scale.py's
generator; its CPU numbers are in benchmarks/README.md). Each command is its own process,
timed from start to exit (imports included), with its peak RSS."""

from __future__ import annotations

import json
import time

from common import Ctx, child_env, missing

FULL = {"n": 32_000, "a": (512, 98_304), "b": (1280, 163_840), "l0": 64}
SMOKE = {"n": 600, "a": (16, 256), "b": (24, 512), "l0": 8}


def _clipsae(ctx: Ctx, name: str, *args: str) -> dict:
    """One `clipsae` command: its own process on the device (bench_scale.child); in this
    process with --smoke (the same CLI code, without ~3 s of interpreter and imports each)."""
    import bench_scale

    if ctx.smoke:
        from app.cli import main

        t0 = time.perf_counter()
        rc = main([*args, "--device", ctx.device])
        r = {"seconds": time.perf_counter() - t0, "peak_gib": float("nan")} if rc == 0 else {"error": f"exit {rc}"}
    else:
        bench_scale.ENV.update(child_env())
        r = bench_scale.child(bench_scale.clipsae(*args, "--device", ctx.device))
    if "error" in r:
        ctx.rec(name, f"failed: {r['error']}"[:300])
    else:
        ctx.rec(name, round(r["seconds"], 2), "s", f"peak RSS {r['peak_gib']:.2f} GiB; whole command")
    return r


def run(ctx: Ctx) -> None:
    gaps = missing("faiss", "scipy")
    if gaps:
        ctx.skip("atlas", f"not installed: {', '.join(gaps)}")
        return
    import bench_scale

    s = SMOKE if ctx.smoke else FULL
    n = s["n"]
    folders = {}
    for key, seed in (("a", 1), ("b", 2)):
        d, f = s[key]
        folder = ctx.work / key.upper()
        t0 = time.perf_counter()
        bench_scale.make_inputs(folder, n, d, f, s["l0"], seed)
        ctx.rec(
            f"inputs {key.upper()}",
            f"{f:,} latents x {d}-d, {n:,} images",
            note=f"made in {time.perf_counter() - t0:.1f} s",
        )
        folders[key] = folder
    a, b = folders["a"], folders["b"]
    fa, fb = s["a"][1], s["b"][1]
    _clipsae(
        ctx,
        f"atlas A ({fa:,} x {n:,})",
        "atlas",
        "--acts",
        str(a / "x.npy"),
        "--sae",
        str(a / "sae"),
        "--out",
        str(a / "atlas"),
    )
    if (a / "atlas" / "manifest.json").exists():
        m = json.loads((a / "atlas" / "manifest.json").read_text())
        ctx.rec("atlas A codes", m["n_codes"], "entries", f"{m['n_codes'] / n:.0f} per image; {m['n_dead']} dead")
    _clipsae(
        ctx,
        f"atlas A --neighbours 0 ({fa:,} x {n:,})",
        "atlas",
        "--acts",
        str(a / "x.npy"),
        "--sae",
        str(a / "sae"),
        "--out",
        str(a / "atlas_nn0"),
        "--neighbours",
        "0",
    )
    if ctx.left() < 20 and not ctx.smoke:
        ctx.skip("atlas B and link", "the section's budget is nearly spent")
        return
    _clipsae(
        ctx,
        f"atlas B ({fb:,} x {n:,})",
        "atlas",
        "--acts",
        str(b / "x.npy"),
        "--sae",
        str(b / "sae"),
        "--out",
        str(b / "atlas"),
    )
    _clipsae(ctx, "link A B", "link", str(a / "atlas"), str(b / "atlas"))
