"""Training steps read nothing back from the device (issue 24): on CUDA every `.item()`,
`float(t)`, `bool(t)` or boolean-mask index stalls the GPU until its queue drains. Counted here
on the CPU with the profiler, where the same ops run (`aten::_local_scalar_dense` is what a
scalar read runs, `aten::nonzero` what a boolean mask runs); the loss check that CUDA defers
raises as the per-step one does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from sae_core.config import SAEConfig, TrainConfig
from sae_core.errors import TrainingDiverged
from sae_core.init import init_runs
from sae_core.metrics import MetricsAccumulator
from sae_core.schedule import resolve
from sae_core.sweep import RunSpec
from sae_core.trainer import SAETrainer


def _run(arch: str, x: torch.Tensor, dead: str = "none") -> tuple[SAETrainer, TrainConfig]:
    k = 4 if arch in ("topk", "batchtopk") else None
    cfg, _ = resolve(TrainConfig(batch_size=128, device="cpu", dead_latents=dead), len(x), x.shape[1], 64, arch)
    run = SAETrainer(
        RunSpec(arch, SAEConfig(d_in=x.shape[1], d_sae=64, architecture=arch, k=k), 0.0), cfg, torch.device("cpu")
    )
    init_runs([run], x, cfg)
    run.eager_checks = False  # CUDA's setting
    return run, cfg


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_a_training_step_reads_nothing_back_to_the_host(arch):
    x = torch.randn(1280, 16, generator=torch.Generator().manual_seed(3)) + 2.0
    run, cfg = _run(arch, x)
    run.step(x[:128], 0, 10, cfg, 10**6)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(1, 9):
            run.step(x[128 * i : 128 * (i + 1)], i, 10, cfg, 10**6)
    reads = []
    for e in prof.events():
        if e.name in ("aten::_local_scalar_dense", "aten::nonzero"):
            parent = e.cpu_parent
            while parent is not None and parent.cpu_parent is not None and parent.name == "aten::item":
                parent = parent.cpu_parent
            reads.append(parent.name if parent is not None else e.name)
    # the CPU's fused Adam reads its step counters as scalars (4 parameters); CUDA's reads them on the device
    assert reads and set(reads) == {"aten::_fused_adam_"} and len(reads) == 4 * 8, sorted(set(reads))


def test_the_deferred_loss_check_raises_with_the_first_bad_step():
    x = torch.randn(640, 16, generator=torch.Generator().manual_seed(4))
    run, cfg = _run("topk", x)
    for i in range(3):
        run.step(x[128 * i : 128 * (i + 1)], i, 5, cfg, 10**6)
    run.check_finite(cfg)  # nothing wrong yet
    huge = x[384:512] * 1e30  # squares overflow float32
    run.step(huge, 3, 5, cfg, 10**6)
    run.step(huge, 4, 5, cfg, 10**6)
    with pytest.raises(TrainingDiverged, match=r"at step 3; .*lower --lr"):
        run.check_finite(cfg)


def test_metrics_on_the_device_equal_the_python_sums():
    rng = np.random.default_rng(5)
    acc, ref = MetricsAccumulator(8, 12), {"sq": 0.0, "x2": 0.0, "f": 0.0, "cos": 0.0, "n_active": 0}
    sum_x_d, counts_ref = np.zeros(8), np.zeros(12, dtype=np.int64)
    for _ in range(5):
        x = torch.from_numpy(rng.normal(size=(33, 8)).astype(np.float32) + 3)
        x_hat = x + torch.from_numpy(rng.normal(size=(33, 8)).astype(np.float32) * 0.1)
        f = torch.from_numpy(np.maximum(rng.normal(size=(33, 12)), 0).astype(np.float32))
        acc.update(x, x_hat, f)
        ref["sq"] += float((x_hat - x).pow(2).sum(dtype=torch.float64))
        ref["x2"] += float(x.pow(2).sum(dtype=torch.float64))
        ref["f"] += float(f.abs().sum())
        counts = (f != 0).sum(dim=0).numpy()
        ref["n_active"] += int(counts.sum())
        counts_ref += counts
        sum_x_d += x.sum(dim=0, dtype=torch.float64).numpy()
        cos = (x * x_hat).sum(dim=1, dtype=torch.float64) / (x.norm(dim=1) * x_hat.norm(dim=1)).clamp_min(1e-8)
        ref["cos"] += float(cos.sum())
    assert (acc.sum_sq_err, acc.sum_x_sq, acc.sum_abs_f, acc.sum_cos, acc.n_active) == (
        ref["sq"],
        ref["x2"],
        ref["f"],
        ref["cos"],
        ref["n_active"],
    )  # bit for bit
    assert np.array_equal(acc.sum_x_d, sum_x_d) and np.array_equal(acc.fire_count_s, counts_ref)
    m = acc.result()
    sst = ref["x2"] - float((sum_x_d**2).sum()) / acc.n
    assert m["explained_variance"] == 1 - ref["sq"] / sst and m["l0"] == ref["n_active"] / acc.n
