"""Training as users see it: the whole `clipsae train` command against EleutherAI sparsify.

    .venv/bin/python benchmarks/bench_train.py                  # small + wide, equal settings + defaults
    .venv/bin/python benchmarks/bench_train.py --suite small    # only d=96, 1024 latents, k=8, batch 512
    .venv/bin/python benchmarks/bench_train.py --data-order     # read throughput of the epoch order
    nice -n 5 .venv/bin/python benchmarks/bench_train.py --encoder-like   # = benchmarks/bench_encoder_like.py

Data: a planted dictionary (unit atoms, exactly `active` of them per row with codes in
[0.5, 1.5], noise 0.01), written to a temporary `.npy` with held-out rows of the same atoms.
Each run is its own process, timed from start to exit (imports, loading, init and saving
included), so samples/s = rows × epochs / wall seconds, as a user's terminal shows it:

- clipsae: the `clipsae train` command;
- sparsify: a script (benchmarks/gpu/sparsify_loop.py, also the device benchmark's) that imports sparsify, loads the `.npy` and trains its `SparseCoder` in a
  plain loop, as its `Trainer` does (b_dec = mean of the first batch, FVU loss, gradient parallel
  to the decoder rows removed, decoder rows renormalised after each step). It prints its loop
  time too ("loop"), without its imports (~8 s here) and loading.

Settings: "equal" gives both tools the same batches (sparsify iterates `sae_core.data`'s epoch
order with the same seed), batch size, epochs and Adam at the same constant lr (no warm-up or
decay: sparsify's plain loop has none); "defaults" gives each tool only the data, d_sae, k
and epochs: ours chooses batch, lr and schedule (`sae_core/schedule.py`); sparsify's
`TrainConfig` defaults are its signum optimiser (schedule-free sign SGD, lr
5e-3/√(d_sae/16384)) with no AuxK, at the equal-settings batch (its own default batch is 32
sequences of 2,048 tokens, which a matrix does not have). Quality on held-out rows: mean max
cosine of the true atoms with the decoder rows (mmc), explained variance, L0.
Prints Markdown tables; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from sae_core.synthetic import planted_dictionary  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks/gpu"))
from common import equal_train_argv  # noqa: E402

SUITES = {  # rows, d, atoms, active, d_sae, k, batch, lr (equal settings), epochs
    "small": dict(rows=100_000, d=96, atoms=512, active=6, d_sae=1024, k=8, batch=512, lr=8e-4, epochs=5),
    "wide": dict(rows=100_000, d=512, atoms=4096, active=24, d_sae=16384, k=32, batch=4096, lr=2e-4, epochs=3),
}


def make_data(rows: int, d: int, atoms: int, active: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x = codes @ atoms + 0.01·noise with exactly `active` atoms per row, codes in [0.5, 1.5]."""
    return planted_dictionary(rows, d, atoms, active, 0.01, seed)


def quality(w_dec: np.ndarray, encode_decode, held: np.ndarray, atoms: np.ndarray) -> dict:
    """mmc of the atoms with the decoder rows, explained variance and L0 on held-out rows."""
    import torch

    w = w_dec / np.linalg.norm(w_dec, axis=1, keepdims=True)
    mmc = float((atoms @ w.T).max(axis=1).mean())
    with torch.no_grad():
        x = torch.from_numpy(held)
        x_hat, l0 = encode_decode(x)
    x64, e = held.astype(np.float64), (x_hat.numpy().astype(np.float64) - held)
    ev = 1 - (e**2).sum() / ((x64 - x64.mean(0)) ** 2).sum()
    return {"mmc": mmc, "ev": float(ev), "l0": float(l0)}


def run_clipsae(acts: Path, out: Path, s: dict, equal: bool) -> dict:
    """The whole `clipsae train`: at the equal settings (with our AuxK) or at our defaults."""
    if equal:
        cmd = [sys.executable, "-m", "app.cli", *equal_train_argv(acts, out, s, "cpu", dead_latents="auto")]
    else:
        cmd = [sys.executable, "-m", "app.cli", "train", "--acts", str(acts), "--out", str(out), "--arch", "topk"]
        cmd += ["--d-sae", str(s["d_sae"]), "--k", str(s["k"]), "--epochs", str(s["epochs"]), "--device", "cpu"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    cfg = json.loads((out / "train_config.json").read_text())["train_config"]
    return {"wall_s": wall, "batch": cfg["batch_size"], "lr": cfg["lr"], "loop_s": loop_seconds(out)}


def run_sparsify(acts: Path, out: Path, s: dict, equal: bool) -> dict:
    arg = {
        "acts": str(acts),
        "out": str(out),
        "d_sae": s["d_sae"],
        "k": s["k"],
        "batch": s["batch"],
        "lr": s["lr"],
        "epochs": s["epochs"],
        "optimizer": "adam" if equal else "signum",
        "repo": str(REPO),
        "device": "cpu",
    }
    t0 = time.perf_counter()
    env = {**os.environ, "SPARSIFY_DISABLE_TRITON": "1"}  # its Triton kernel needs a GPU
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/gpu/sparsify_loop.py"), json.dumps(arg)],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    info = json.loads(r.stdout.strip().splitlines()[-1])
    lr = s["lr"] if equal else 5e-3 / (s["d_sae"] / 2**14) ** 0.5
    return {"wall_s": wall, "loop_s": info["loop_s"], "import_s": info["import_s"], "batch": s["batch"], "lr": lr}


def evaluate_clipsae(out: Path, held: np.ndarray, atoms: np.ndarray) -> dict:
    sys.path.insert(0, str(REPO))
    from sae_core.io import load_sae

    sae = load_sae(out)

    def encode_decode(x):
        o = sae(x)
        return o.x_hat_bd, (o.f_bs > 0).sum(1).double().mean()

    return quality(sae.W_dec.detach().numpy(), encode_decode, held, atoms)


def evaluate_sparsify(out: Path, held: np.ndarray, atoms: np.ndarray) -> dict:
    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    from sparsify import SparseCoder

    sae = SparseCoder.load_from_disk(out)

    def encode_decode(x):
        o = sae(x)
        return o.sae_out, (o.latent_acts > 0).sum(1).double().mean()

    return quality(sae.W_dec.detach().numpy(), encode_decode, held, atoms)


def bench_suite(name: str, s: dict, tmp: Path, seed: int) -> list[dict]:
    x, atoms = make_data(s["rows"] + 10_000, s["d"], s["atoms"], s["active"], seed)
    acts = tmp / f"{name}.npy"
    np.save(acts, x[: s["rows"]])
    held = x[s["rows"] :]
    rows = []
    for setting in ("equal", "defaults"):
        for tool, run, evaluate in (
            ("clipsae", run_clipsae, evaluate_clipsae),
            ("sparsify", run_sparsify, evaluate_sparsify),
        ):
            out = tmp / f"{name}_{setting}_{tool}"
            r = run(acts, out, s, setting == "equal")
            r.update(
                evaluate(out, held, atoms),
                suite=name,
                setting=setting,
                tool=tool,
                samples_s=s["rows"] * s["epochs"] / r["wall_s"],
            )
            if "loop_s" in r:
                r["loop_samples_s"] = s["rows"] * s["epochs"] / r["loop_s"]
            print(
                f"{name} {setting} {tool}: {r['wall_s']:.1f} s, {r['samples_s']:.0f} samples/s, "
                f"mmc {r['mmc']:.3f}, EV {r['ev']:.3f}, L0 {r['l0']:.1f}",
                flush=True,
            )
            rows.append(r)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| set | settings | tool | batch | lr | wall s | samples/s (whole command) | samples/s (loop only) | "
        "mmc | EV | L0 | clipsae speed ÷ sparsify (whole / loop) |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        ratio = "—"
        if r["tool"] == "clipsae":
            sp = next(
                o for o in rows if o["tool"] == "sparsify" and o["suite"] == r["suite"] and o["setting"] == r["setting"]
            )
            ratio = f"{r['samples_s'] / sp['samples_s']:.2f}×"
            if "loop_samples_s" in r and "loop_samples_s" in sp:  # each tool's loop against the other's
                ratio += f" / {r['loop_samples_s'] / sp['loop_samples_s']:.2f}×"
        loop = f"{r['loop_samples_s']:.0f}" if "loop_samples_s" in r else "—"
        lines.append(
            f"| {r['suite']} | {r['setting']} | {r['tool']} | {r['batch']} | {r['lr']:.2g} | {r['wall_s']:.1f} | "
            f"{r['samples_s']:.0f} | {loop} | {r['mmc']:.3f} | {r['ev']:.3f} | {r['l0']:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def data_order(tmp: Path, rows: int = 400_000, d: int = 512, repeats: int = 3) -> str:
    """Rows/s of one epoch of batches from an fp16 cache-like matrix (page cache warm):
    contiguous blocks in a random order (chunk = block, the old order) vs chunks of 1,024 rows."""
    sys.path.insert(0, str(REPO))
    from sae_core.data import ActivationSource, iter_batches, make_plan

    path = tmp / "order.npy"
    np.save(path, np.random.default_rng(0).normal(size=(rows, d)).astype(np.float16))
    src = ActivationSource(path)
    lines = ["| epoch order | rows/s (median of %d) |" % repeats, "|---|---|"]
    for label, chunk in (("contiguous 262,144-row blocks (before)", None), ("1,024-row chunks (now)", 1024)):
        plan = make_plan(src.n_rows, 4096, 262_144, chunk)
        times = []
        for rep in range(repeats):
            t0 = time.perf_counter()
            for _ in iter_batches(src, plan, seed=rep, epoch=0):
                pass
            times.append(time.perf_counter() - t0)
        lines.append(f"| {label} | {rows / sorted(times)[len(times) // 2]:,.0f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- many SAEs in one pass; the GEMM limit
def loop_seconds(out: Path) -> float:
    """Seconds of the training loop, from train.log: the "training N SAE(s)" line to the last step's line."""
    from datetime import datetime

    def stamp(line: str) -> float:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()

    lines = (out / "train.log").read_text().splitlines()
    start = next(ln for ln in lines if " SAE(s) on " in ln)
    last = [ln for ln in lines if re.match(r"\S+ \S+ step (\d+)/\1 ", ln)]
    return stamp(last[-1]) - stamp(start)


def gemm_flops(batch: int, d: int, d_sae: int, repeats: int = 5) -> float:
    """The machine's dense float32 GEMM rate (FLOP/s, median of `repeats`) at the encoder's shape
    [batch, d] @ [d, d_sae], on the CPU with torch's threads, as `clipsae train --device cpu` runs."""
    import torch

    a, b = torch.randn(batch, d), torch.randn(d, d_sae)
    torch.matmul(a, b)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * batch * d * d_sae / sorted(times)[len(times) // 2]


def gemm_fraction(samples_s: float, d: int, d_sae: int, flops: float) -> float:
    """Training's rate as a fraction of the GEMM limit: one encoder GEMM (2·d·d_sae FLOP per
    input) per step is the least work a step can do, so samples/s × 2·d·d_sae ÷ the GEMM's
    measured FLOP/s is 1 only for a step that costs exactly one encoder GEMM."""
    return samples_s * 2 * d * d_sae / flops


def gemm_table(rows: list[dict]) -> str:
    """Fraction of the dense GEMM rate that each clipsae run of the tables above reaches."""
    lines = [
        "| set | settings | batch | GEMM GFLOP/s at [batch, d] @ [d, d_sae] | fraction (whole command) | "
        "fraction (loop) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["tool"] != "clipsae" or "loop_s" not in r:
            continue
        s = SUITES[r["suite"]]
        flops = gemm_flops(r["batch"], s["d"], s["d_sae"])
        loop = s["rows"] * s["epochs"] / r["loop_s"]
        lines.append(
            f"| {r['suite']} | {r['setting']} | {r['batch']} | {flops / 1e9:.0f} | "
            f"{gemm_fraction(r['samples_s'], s['d'], s['d_sae'], flops):.0%} | "
            f"{gemm_fraction(loop, s['d'], s['d_sae'], flops):.0%} |"
        )
    return "\n".join(lines)


def train_cmd(acts: Path, out: Path, s: dict, k: str, seed: str, extra: tuple[str, ...] = ()) -> dict:
    """One `clipsae train` at the equal settings of `s` (constant lr): whole-command and loop seconds."""
    cmd = [sys.executable, "-m", "app.cli", *equal_train_argv(acts, out, s, "cpu", k, seed, "auto"), *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return {"wall_s": wall, "loop_s": loop_seconds(out)}


def multi(tmp: Path, rows: int, seeds: list[int], ks: list[int], data_seed: int = 7) -> str:
    """Many SAEs in one pass (`--k K1,K2 --seed S1,S2`) against one `clipsae train` per SAE, on the
    wide set (d=512, 16,384 latents, batch 4096) cut to `rows` rows, one epoch. The separate runs
    take `--data-seed` = the first seed, so each trains exactly the SAE of the sweep's sub-folder
    (checked here: the weights are compared)."""
    from safetensors.torch import load_file

    s = {**SUITES["wide"], "rows": rows, "epochs": 1}
    x, _ = make_data(rows, s["d"], s["atoms"], s["active"], data_seed)
    acts = tmp / "multi.npy"
    np.save(acts, x)
    n = len(seeds) * len(ks)
    one = train_cmd(acts, tmp / "multi_one", s, ",".join(map(str, ks)), ",".join(map(str, seeds)))
    print(f"one pass, {n} SAEs: {one['wall_s']:.1f} s (loop {one['loop_s']:.1f} s)", flush=True)
    alone, same = [], True
    for k in ks:
        for seed in seeds:
            out = tmp / f"multi_k{k}_s{seed}"
            alone.append(train_cmd(acts, out, s, str(k), str(seed), ("--data-seed", str(seeds[0]))))
            print(
                f"alone k={k} seed={seed}: {alone[-1]['wall_s']:.1f} s (loop {alone[-1]['loop_s']:.1f} s)", flush=True
            )
            name = "_".join(([f"k_{k}"] if len(ks) > 1 else []) + ([f"seed_{seed}"] if len(seeds) > 1 else []))
            a, b = (load_file(str(p / "sae_weights.safetensors")) for p in (tmp / "multi_one" / name, out))
            same &= all(np.array_equal(a[t].numpy(), b[t].numpy()) for t in a)
    flops = gemm_flops(s["batch"], s["d"], s["d_sae"])
    wall, loop = sum(r["wall_s"] for r in alone), sum(r["loop_s"] for r in alone)
    per_sae = rows * n / one["loop_s"]
    return "\n".join(
        [
            f"wide set cut to {rows:,} rows x 1 epoch (batch {s['batch']}, {rows // s['batch']} steps), k={','.join(map(str, ks))}, "
            f"seeds {','.join(map(str, seeds))}: {n} SAEs; sweep SAEs bitwise equal to the separate runs: {'yes' if same else 'NO'}",
            "",
            "| | wall s (whole commands) | loop s | SAE-samples/s (loop) | encoder-GEMM fraction (loop) |",
            "|---|---|---|---|---|",
            f"| {n} separate `clipsae train` runs | {wall:.1f} | {loop:.1f} | {rows * n / loop:.0f} | "
            f"{gemm_fraction(rows * n / loop, s['d'], s['d_sae'], flops):.0%} |",
            f"| one pass (`--k {','.join(map(str, ks))} --seed {','.join(map(str, seeds))}`) | {one['wall_s']:.1f} | "
            f"{one['loop_s']:.1f} | {per_sae:.0f} | {gemm_fraction(per_sae, s['d'], s['d_sae'], flops):.0%} |",
            f"| speed-up of one pass | {wall / one['wall_s']:.2f}× | {loop / one['loop_s']:.2f}× | | |",
            "",
            f"dense GEMM at [{s['batch']}, {s['d']}] @ [{s['d']}, {s['d_sae']}]: {flops / 1e9:.0f} GFLOP/s",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", choices=["small", "wide", "both"], default="both")
    p.add_argument("--seed", type=int, default=7, help="seed of the planted data")
    p.add_argument("--data-order", action="store_true", help="only measure the read throughput of the epoch order")
    p.add_argument("--multi", action="store_true", help="only the many-SAEs-in-one-pass section (wide set, cut rows)")
    p.add_argument("--multi-rows", type=int, default=32_768, help="rows of the wide set for --multi")
    p.add_argument("--multi-seeds", default="0,1", help="--seed list of the --multi sweep")
    p.add_argument("--multi-k", default="32", help="--k list of the --multi sweep")
    p.add_argument("--encoder-like", action="store_true", help="only the encoder_like table (every arch, defaults)")
    a = p.parse_args()
    import torch

    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if a.data_order:
            print(data_order(Path(tmp)))
            return
        if a.multi:
            print(
                multi(
                    Path(tmp),
                    a.multi_rows,
                    [int(v) for v in a.multi_seeds.split(",")],
                    [int(v) for v in a.multi_k.split(",")],
                )
            )
            return
        if a.encoder_like:
            from bench_encoder_like import encoder_like_table

            print(encoder_like_table(Path(tmp), a.seed))
            return
        rows = []
        for name in ["small", "wide"] if a.suite == "both" else [a.suite]:
            rows += bench_suite(name, SUITES[name], Path(tmp), a.seed)
        print()
        print(table(rows))
        print()
        print(gemm_table(rows))


if __name__ == "__main__":
    main()
