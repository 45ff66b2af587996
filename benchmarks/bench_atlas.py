"""Atlas build time and peak memory vs a bare faiss search and a dense brute force.

    .venv/bin/python benchmarks/bench_atlas.py                     # N=200k, F=16384, d=512
    .venv/bin/python benchmarks/bench_atlas.py --n 50000 --f 4096

Synthetic activations (float16 .npy, memory-mapped) and a random ReLU SAE whose encoder
bias leaves a realistic ~0.2% of latents active (L0 ≈ 32 of 16384). Each method
runs in its own process so that peak memory (max RSS) is its own:
- atlas: `clipsae atlas` top-k + stats passes (no images: masks/labels/image index off)
- faiss: `faiss.knn` of the F encoder rows against the N centred inputs, k=16 — the
  bare inner-product search the exact top-k of a monotone SAE reduces to
- dense: the full [N, F] activation matrix, then a top-k per column
Goal: atlas within 1.5x of faiss, with peak memory independent of N (beyond the memmap).
Never asserts.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_inputs(folder: Path, n: int, d: int, f: int) -> None:
    from sae_core.config import SAEConfig
    from sae_core.io import save_sae
    from sae_core.sae import SparseAutoencoder

    rng = np.random.default_rng(0)
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float16, shape=(n, d))
    for lo in range(0, n, 65536):
        x[lo : lo + 65536] = rng.normal(size=(min(65536, n - lo), d)).astype(np.float16)
    x.flush()
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=f), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # unit-variance pre-activations; this bias leaves ~32 of 16384 latents active per input
        sae.b_enc.fill_(-2.9)
    save_sae(sae, folder / "sae")


def run_method(method: str, folder: Path, k: int) -> dict:
    from sae_core.io import load_sae

    t0 = time.perf_counter()
    if method == "atlas":
        from precompute.atlas import AtlasConfig, build_atlas

        build_atlas(
            AtlasConfig(
                acts=str(folder / "x.npy"),
                sae=str(folder / "sae"),
                out=str(folder / "atlas"),
                top_images=k,
                masks=False,
                labels=False,
            )
        )
    else:
        sae = load_sae(folder / "sae")
        x = np.load(folder / "x.npy", mmap_mode="r")
        if method == "faiss":
            import faiss

            xb = np.ascontiguousarray(x, dtype=np.float32) - sae.b_dec.detach().numpy()
            xq = np.ascontiguousarray(sae.W_enc.detach().numpy().T)
            faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)
        else:
            with torch.inference_mode():
                f = sae.encode(torch.from_numpy(np.asarray(x, dtype=np.float32)))
                f.topk(k, dim=0)
    seconds = time.perf_counter() - t0
    return {
        "method": method,
        "seconds": seconds,
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--f", type=int, default=16_384)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--methods", default="atlas,faiss,dense")
    p.add_argument("--_child", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._child:
        print(json.dumps(run_method(a._child[0], Path(a._child[1]), a.k)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_inputs(folder, a.n, a.d, a.f)
        rows = []
        for method in a.methods.split(","):
            r = subprocess.run(
                [sys.executable, __file__, "--k", str(a.k), "--_child", method, str(folder)],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                rows.append({"method": method, "error": (r.stderr.strip().splitlines() or ["?"])[-1]})
            else:
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    base = next((r["seconds"] for r in rows if r["method"] == "faiss" and "seconds" in r), None)
    print(
        f"\nN={a.n}, F={a.f}, d={a.d}, k={a.k}, {torch.get_num_threads()} threads, activations float16 memmap "
        f"({a.n * a.d * 2 / 2**30:.2f} GiB)\n"
    )
    print("| method | seconds | peak RSS (GiB) | time / faiss |\n|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | failed: {r['error']} | | |")
        else:
            ratio = f"{r['seconds'] / base:.2f}×" if base else "—"
            print(f"| {r['method']} | {r['seconds']:.1f} | {r['peak_gib']:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
