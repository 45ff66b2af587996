"""`clipsae train` on the device against sparsify 1.3.3 with its Triton decoder, same data
and settings: TopK, equal batch, Adam at sparsify's constant lr rule, no warm-up or decay, no
AuxK (`--dead-latents none`; sparsify's plain loop has none), the same batches (sparsify
iterates `sae_core.data`'s epoch order with the same seed).

Sets: wide (d=512, k=32, 16,384 latents) and seed-sized (d=1280, k=32, 163,840 latents),
planted dictionaries generated on the device. Each run is its own process: "whole command"
is its wall time from start to exit; "loop" is clipsae's train.log from the first step's
line to the saved SAE, and sparsify's training loop alone (its Trainer's
`set_float32_matmul_precision("high")` and its bf16-autocast forward, as it ships).
clipsae runs at torch's default fp32 matmul precision and again with TF32 ("high").
Quality on held-out rows: explained variance and the mean max cosine of the true atoms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from common import HERE, REPO, Ctx, child_env, equal_train_argv, free_cuda, import_sparsify, missing

SETS = {  # rows, d, atoms, active, d_sae, k, batch, lr (sparsify's rule 2e-4 / sqrt(d_sae / 2^14)), epochs
    "wide": dict(rows=1_000_000, d=512, atoms=4096, active=24, d_sae=16_384, k=32, batch=4096, lr=2e-4, epochs=2),
    "seed": dict(rows=600_000, d=1280, atoms=16_384, active=32, d_sae=163_840, k=32, batch=4096, lr=6.3e-5, epochs=1),
}
SMOKE = {"wide": dict(rows=4096, d=16, atoms=48, active=3, d_sae=64, k=4, batch=256, lr=1e-3, epochs=1)}
HELD = 10_000


def planted(
    path: Path, rows: int, d: int, atoms: int, active: int, device: str, seed: int = 7, a: np.ndarray | None = None
) -> np.ndarray:
    """x = codes @ atoms + 0.01·noise with exactly `active` distinct unit atoms per row, written
    to `path` as float16 (generated on the device in blocks); returns the atoms (drawn from
    `seed` unless given as `a`)."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    if a is None:
        t = torch.randn(atoms, d, device=device, generator=g)
        t /= t.norm(dim=1, keepdim=True)
    else:
        t = torch.from_numpy(a).to(device)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, d))
    step = max(1, min(rows, (1 << 28) // max(atoms, active * d)))
    for lo in range(0, rows, step):
        n = min(step, rows - lo)
        idx = torch.rand(n, atoms, device=device, generator=g).topk(active, dim=1).indices
        codes = 0.5 + torch.rand(n, active, 1, device=device, generator=g)
        x = (codes * t[idx]).sum(1) + 0.01 * torch.randn(n, d, device=device, generator=g)
        out[lo : lo + n] = x.half().cpu().numpy()
    out.flush()
    return t.cpu().numpy()


DRIVER = r"""
import json, sys, time
t0 = time.perf_counter()
a = json.loads(sys.argv[1])
import torch
if a["matmul"]:
    torch.set_float32_matmul_precision(a["matmul"])
from app.cli import main
t1 = time.perf_counter()
rc = main(a["argv"])
if torch.cuda.is_available():
    torch.cuda.synchronize()
print(json.dumps({"import_s": t1 - t0, "main_s": time.perf_counter() - t1, "rc": rc}))
"""


def _log_time(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def loop_seconds(out: Path) -> float:
    """From train.log: the 'training …' line (init done) to the 'wrote …' line (SAE saved)."""
    lines = (out / "train.log").read_text().splitlines()
    start = next(_log_time(x) for x in lines if " training " in x)
    end = next(_log_time(x) for x in reversed(lines) if " wrote " in x)
    return end - start


def run_clipsae(ctx: Ctx, acts: Path, out: Path, s: dict, matmul: str | None) -> dict:
    argv = equal_train_argv(acts, out, s, ctx.device)
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps({"argv": argv, "matmul": matmul})],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=max(10, ctx.left()),
    )
    wall = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(f"clipsae train failed: {r.stderr[-1500:]}")
    return {"wall_s": wall, "loop_s": loop_seconds(out), **json.loads(r.stdout.strip().splitlines()[-1])}


def run_sparsify(ctx: Ctx, acts: Path, out: Path, s: dict) -> dict:
    arg = {
        "acts": str(acts),
        "out": str(out),
        "d_sae": s["d_sae"],
        "k": s["k"],
        "batch": s["batch"],
        "lr": s["lr"],
        "epochs": s["epochs"],
        "repo": str(REPO),
        "device": ctx.device,
    }
    env = child_env()
    if not ctx.cuda:
        env["SPARSIFY_DISABLE_TRITON"] = "1"  # Triton has no CPU driver: sparsify's own eager fallback
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, str(HERE / "sparsify_loop.py"), json.dumps(arg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=max(10, ctx.left()),
    )
    wall = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(f"sparsify failed: {r.stderr[-1500:]}")
    return {"wall_s": wall, **json.loads(r.stdout.strip().splitlines()[-1])}


def quality(ctx: Ctx, w_dec, encode_decode, held: np.ndarray, atoms: np.ndarray) -> dict:
    """Explained variance on held-out rows and the atoms' mean max cosine with the decoder rows."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(held.astype(np.float32)).to(ctx.device)
        x_hat = encode_decode(x).float()
        ev = 1 - float((x_hat - x).pow(2).sum()) / float((x - x.mean(0)).pow(2).sum())
        w = w_dec.float() / w_dec.float().norm(dim=1, keepdim=True)
        a = torch.from_numpy(atoms).to(ctx.device)
        mmc = float(torch.cat([(a[i : i + 1024] @ w.T).amax(1) for i in range(0, len(a), 1024)]).mean())
    return {"ev": round(ev, 4), "mmc": round(mmc, 4)}


def evaluate_clipsae(ctx: Ctx, out: Path, held: np.ndarray, atoms: np.ndarray) -> dict:
    from sae_core.io import load_sae

    sae = load_sae(out, device=ctx.device).eval()
    return quality(ctx, sae.W_dec.detach(), lambda x: sae(x).x_hat_bd, held, atoms)


def evaluate_sparsify(ctx: Ctx, out: Path, held: np.ndarray, atoms: np.ndarray) -> dict:
    if not ctx.cuda:
        os.environ["SPARSIFY_DISABLE_TRITON"] = "1"  # Triton has no CPU driver
    import_sparsify()
    from sparsify import SparseCoder

    sae = SparseCoder.load_from_disk(out, device=ctx.device)
    return quality(ctx, sae.W_dec.detach(), lambda x: sae(x).sae_out, held, atoms)


def bench_set(ctx: Ctx, name: str, s: dict) -> None:
    acts, held_path = ctx.work / f"{name}.npy", ctx.work / f"{name}_held.npy"
    t0 = time.perf_counter()
    atoms = planted(acts, s["rows"], s["d"], s["atoms"], s["active"], ctx.device)
    planted(held_path, HELD if not ctx.smoke else 512, s["d"], s["atoms"], s["active"], ctx.device, seed=8, a=atoms)
    held = np.load(held_path)
    ctx.rec(
        f"{name}: planted data",
        s["rows"],
        "rows",
        f"d={s['d']}, {s['atoms']} atoms, {s['active']} per row, generated in {time.perf_counter() - t0:.1f} s",
    )
    samples = s["rows"] * s["epochs"]
    runs = [("clipsae", None), ("clipsae tf32", "high")] if not ctx.smoke else [("clipsae", None)]
    results = {}
    for label, matmul in runs:
        out = ctx.work / f"{name}_{label.replace(' ', '_')}"
        r = run_clipsae(ctx, acts, out, s, matmul)
        r.update(evaluate_clipsae(ctx, out, held, atoms))
        results[label] = r
        ctx.rec(
            f"{name}: {label} (loop)",
            round(samples / r["loop_s"]),
            "samples/s",
            f"whole command {samples / r['wall_s']:,.0f}/s ({r['wall_s']:.1f} s); EV {r['ev']}, mmc {r['mmc']}",
        )
        free_cuda()
    gaps = missing("sparsify", "schedulefree", "simple_parsing", "natsort")
    if gaps or ctx.smoke:
        ctx.skip(
            f"{name}: sparsify",
            f"not installed: {', '.join(gaps)}"
            if gaps
            else "--smoke: importing sparsify alone takes ~10 s on 2 cores (tests compile sparsify_loop.py)",
        )
        return
    out = ctx.work / f"{name}_sparsify"
    try:
        r = run_sparsify(ctx, acts, out, s)
        r.update(evaluate_sparsify(ctx, out, held, atoms))
    except Exception as exc:  # noqa: BLE001 - the next set still runs
        ctx.rec(f"{name}: sparsify", f"failed: {type(exc).__name__}: {exc}"[:400])
        return
    ctx.rec(
        f"{name}: sparsify (loop)",
        round(samples / r["loop_s"]),
        "samples/s",
        f"decoder {r['decoder']}{'; ' + r['note'] if r.get('note') else ''}; whole command {samples / r['wall_s']:,.0f}/s ({r['wall_s']:.1f} s); "
        f"EV {r['ev']}, mmc {r['mmc']}",
    )
    best = max(results.values(), key=lambda q: samples / q["loop_s"])
    ctx.rec(
        f"{name}: clipsae / sparsify (loop)",
        round(r["loop_s"] / best["loop_s"], 2),
        "×",
        f"whole command {r['wall_s'] / best['wall_s']:.2f}×; the faster clipsae row",
    )


def run(ctx: Ctx) -> None:
    sets = SMOKE if ctx.smoke else SETS
    if ctx.cuda:
        import importlib.util

        ctx.rec(
            "triton",
            "installed" if importlib.util.find_spec("triton") else "not installed",
            note="sparsify's sparse decoder kernel",
        )
    for name, s in sets.items():
        if ctx.left() < 20 and not ctx.smoke:
            ctx.skip(name, "the section's budget is nearly spent")
            continue
        try:
            bench_set(ctx, name, s)
        except Exception as exc:  # noqa: BLE001 - the next set still runs
            ctx.rec(f"{name}: failed", f"{type(exc).__name__}: {exc}"[:400])
        free_cuda()
