"""Training throughput and quality: our TopK and ReLU SAEs vs overcomplete and sparsify.

    .venv/bin/pip install -r benchmarks/requirements-bench.txt -c benchmarks/constraints.txt
    .venv/bin/python benchmarks/bench_train.py                      # defaults below
    .venv/bin/python benchmarks/bench_train.py --steps 10 --d-sae 4096   # quicker

Every method trains on the same synthetic batches (a known random dictionary of unit
atoms, `--active` non-negative codes per row, plus noise), with Adam at the same
learning rate, for the same number of steps. Samples/s counts the optimisation steps
after one warm-up step (data already in memory). Explained variance and L0 are measured
on held-out rows. Prints one Markdown table; never asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from sae_core.config import SAEConfig, TrainConfig
from sae_core.metrics import MetricsAccumulator
from sae_core.init import init_runs
from sae_core.sweep import RunSpec
from sae_core.trainer import SAETrainer


def make_data(n: int, d: int, n_atoms: int, active: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, d)).astype(np.float32)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    x = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, 8192):
        hi = min(n, lo + 8192)
        idx = rng.integers(0, n_atoms, size=(hi - lo, active))
        codes = rng.uniform(0.5, 1.5, size=(hi - lo, active, 1)).astype(np.float32)
        x[lo:hi] = (atoms[idx] * codes).sum(axis=1) + 0.01 * rng.normal(size=(hi - lo, d)).astype(np.float32)
    return x


Step = Callable[[torch.Tensor], None]
Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # x -> (x_hat, f)


def ours(arch: str, d: int, s: int, k: int, lr: float, l1: float, init: torch.Tensor) -> tuple[Step, Encode]:
    cfg = TrainConfig(lr=lr, lr_warmup_steps=0, lr_decay="none", checkpoint_every=0, log_every=10**9)
    spec = RunSpec("bench", SAEConfig(d_in=d, d_sae=s, architecture=arch, k=k if arch == "topk" else None), l1)
    run = SAETrainer(spec, cfg, torch.device("cpu"))
    init_runs([run], init, cfg)  # what `clipsae train` does: geometric-median b_dec, encoder scale
    counter = {"step": 0}

    def step(x: torch.Tensor) -> None:
        run.step(x, counter["step"], 10**9, cfg, dead_after=10**9)
        counter["step"] += 1

    def encode(x: torch.Tensor):
        run.sae.eval()
        out = run.sae(x)
        run.sae.train()
        return out.x_hat_bd, out.f_bs

    return step, encode


def sparsify_topk(d: int, s: int, k: int, lr: float, init: torch.Tensor) -> tuple[Step, Encode]:
    # sparsify's own switch: the CUDA torch wheel ships Triton, whose kernel cannot run on a CPU.
    if not torch.cuda.is_available():
        os.environ["SPARSIFY_DISABLE_TRITON"] = "1"
    from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(d, SparseCoderConfig(num_latents=s, k=k))
    sae.b_dec.data = init.mean(dim=0)  # what sparsify's Trainer does before the first step
    opt = torch.optim.Adam(sae.parameters(), lr=lr)

    def step(x: torch.Tensor) -> None:
        out = sae(x)
        opt.zero_grad()
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()

    @torch.no_grad()
    def encode(x: torch.Tensor):
        out = sae(x)
        f = torch.zeros(x.shape[0], s).scatter_(1, out.latent_indices, out.latent_acts)
        return out.sae_out, f

    return step, encode


def overcomplete_sae(arch: str, d: int, s: int, k: int, lr: float, l1: float) -> tuple[Step, Encode]:
    from overcomplete.sae import SAE, TopKSAE
    from overcomplete.sae.losses import mse_l1
    from overcomplete.sae.trackers import DeadCodeTracker

    if arch == "topk":
        sae = TopKSAE(d, s, top_k=k)

        def crit(x, x_hat, pre, z, dic):  # plain MSE: its fastest TopK path (its aux-k loss is ~4x slower here)
            return (x - x_hat).square().mean()
    else:
        sae = SAE(d, s)

        def crit(x, x_hat, pre, z, dic):
            return mse_l1(x, x_hat, pre, z, dic, penalty=l1)

    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    tracker = DeadCodeTracker(s, "cpu")

    def step(x: torch.Tensor) -> None:  # the body of overcomplete.sae.train_sae, monitoring=0
        opt.zero_grad()
        pre, z, x_hat = sae(x)
        loss = crit(x, x_hat, pre, z, sae.get_dictionary())
        tracker.update(z)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()

    @torch.no_grad()
    def encode(x: torch.Tensor):
        _, z, x_hat = sae(x)
        return x_hat, z

    return step, encode


def measure(name: str, make: Callable[[], tuple[Step, Encode]], batches: list[torch.Tensor],
            held: torch.Tensor, s: int) -> dict:
    torch.manual_seed(0)
    step, encode = make()
    step(batches[0])  # warm-up (allocations, first-call overheads)
    t0 = time.perf_counter()
    for x in batches[1:]:
        step(x)
    dt = time.perf_counter() - t0
    acc = MetricsAccumulator(held.shape[1], s)
    with torch.no_grad():
        for i in range(0, held.shape[0], 4096):
            x_hat, f = encode(held[i : i + 4096])
            acc.update(held[i : i + 4096], x_hat, f)
    m = acc.result()
    n = sum(x.shape[0] for x in batches[1:])
    return {"name": name, "samples_s": n / dt, "ev": m["explained_variance"], "l0": m["l0"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--d-sae", type=int, default=16384)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--l1", type=float, default=1.0,
                   help="ReLU λ (ours: λ·mean over batch×latents; overcomplete gets λ/d_sae: same objective)")
    p.add_argument("--atoms", type=int, default=4096)
    p.add_argument("--active", type=int, default=16)
    p.add_argument("--only", default="", help="comma list of method names to run")
    a = p.parse_args()
    torch.manual_seed(0)
    data = torch.from_numpy(make_data((a.steps + 1) * a.batch_size + 8192, a.d, a.atoms, a.active, seed=0))
    batches = list(data[: (a.steps + 1) * a.batch_size].split(a.batch_size))
    held = data[(a.steps + 1) * a.batch_size :]
    d, s, k = a.d, a.d_sae, a.k
    init = batches[0]  # each tool's data-dependent init sees the first batch
    methods = {
        "clipsae topk": lambda: ours("topk", d, s, k, a.lr, 0.0, init),
        "sparsify topk": lambda: sparsify_topk(d, s, k, a.lr, init),
        "overcomplete topk": lambda: overcomplete_sae("topk", d, s, k, a.lr, 0.0),
        "clipsae relu": lambda: ours("relu", d, s, k, a.lr, a.l1, init),
        "overcomplete relu": lambda: overcomplete_sae("relu", d, s, k, a.lr, a.l1 / s),
    }
    only = {m.strip() for m in a.only.split(",") if m.strip()}
    rows = []
    for name, make in methods.items():
        if only and name not in only:
            continue
        try:
            rows.append(measure(name, make, batches, held, s))
        except ImportError as exc:
            print(f"skipped {name}: {exc} (pip install -r benchmarks/requirements-bench.txt)")
            continue
        print(f"{name}: {rows[-1]['samples_s']:.0f} samples/s, EV {rows[-1]['ev']:.3f}, L0 {rows[-1]['l0']:.1f}", flush=True)
    ref = {r["name"].split()[1]: r["samples_s"] for r in rows if r["name"].startswith("clipsae")}
    print(f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"d={d}, d_sae={s}, k={k}, batch {a.batch_size}, {a.steps} timed steps, lr {a.lr}\n")
    print("| method | samples/s | expl. var. | L0 | our speed / theirs |")
    print("|---|---|---|---|---|")
    for r in rows:
        arch = r["name"].split()[1]
        ratio = f"{ref[arch] / r['samples_s']:.2f}×" if arch in ref and not r["name"].startswith("clipsae") else "—"
        print(f"| {r['name']} | {r['samples_s']:.0f} | {r['ev']:.3f} | {r['l0']:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
