"""Host–device syncs inside the training and atlas loops, counted with the PyTorch profiler.

Training: `SAETrainer.step` over `iter_batches` (the body of `sae_core.train._train`, its
metric lines every `log_every` steps included) on the wide shape. Atlas: `pass_topk` with a
codes writer (the body of pass 1). On CUDA a sync is a `cudaStreamSynchronize` /
`cudaDeviceSynchronize` / `cudaEventSynchronize` runtime call; on any device the ops that
make one are `aten::_local_scalar_dense` (`.item()`, `float(t)`, `int(t)`, `bool(t)`) and
`aten::nonzero` (also behind boolean-mask indexing), counted per step / per block. The
op tables go to profile_train.txt and profile_atlas.txt in the results folder.
"""

from __future__ import annotations

import numpy as np

from common import Ctx

SYNC_RUNTIME = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::item")


def count_syncs(prof) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in prof.key_averages():
        if e.key in SYNC_RUNTIME or e.key in SYNC_OPS:
            counts[e.key] = counts.get(e.key, 0) + e.count
    return counts


def _profile(ctx: Ctx, fn, name: str, per: int, unit: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.cuda else [])
    fn(warm=True)
    with profile(activities=acts) as prof:
        seconds = fn(warm=False)
    counts = count_syncs(prof)
    sort = "cuda_time_total" if ctx.cuda else "cpu_time_total"
    (ctx.out / f"profile_{name}.txt").write_text(
        f"{name}: {per} {unit}s on {ctx.device}, {seconds:.3f} s\nsync counts: {counts}\n\n"
        + prof.key_averages().table(sort_by=sort, row_limit=30)
    )
    runtime = sum(counts.get(k, 0) for k in SYNC_RUNTIME)
    ops = sum(counts.get(k, 0) for k in SYNC_OPS if k != "aten::item")
    ctx.rec(
        f"{name}: syncs per {unit}",
        round((runtime if ctx.cuda else ops) / per, 2),
        "",
        f"{'CUDA runtime syncs' if ctx.cuda else 'sync-making ops'} over {per} {unit}s: {counts}",
    )
    ctx.rec(f"{name}: time per {unit}", round(1000 * seconds / per, 3), "ms", "under the profiler")


def train_loop(ctx: Ctx, rows: int, d: int, d_sae: int, k: int, batch: int):
    import time

    import torch

    from sae_core.config import SAEConfig, TrainConfig
    from sae_core.data import ActivationSource, iter_batches, make_plan
    from sae_core.init import init_runs
    from sae_core.schedule import resolve
    from sae_core.sweep import RunSpec
    from sae_core.train import _log_metrics
    from sae_core.trainer import SAETrainer

    path = ctx.work / "acts.npy"
    np.save(path, np.random.default_rng(0).normal(size=(rows, d)).astype(np.float16))
    src = ActivationSource(path)
    cfg, _ = resolve(
        TrainConfig(batch_size=batch, device=ctx.device, lr=2e-4, lr_warmup_steps=0, log_every=50),
        rows,
        d,
        d_sae,
        "topk",
    )
    plan = make_plan(rows, cfg.batch_size, cfg.block_rows, cfg.chunk_rows)
    spec = RunSpec(name="k", cfg=SAEConfig(d_in=d, d_sae=d_sae, architecture="topk", k=k), l1_coefficient=0.0)
    run = SAETrainer(spec, cfg, torch.device(ctx.device))
    init_runs([run], torch.from_numpy(src.read(0, min(rows, 4096))), cfg)
    total = plan.batches_per_epoch

    def go(warm: bool) -> float:
        from common import sync

        sync(ctx.device)
        t0 = time.perf_counter()
        for step, x in enumerate(iter_batches(src, plan, cfg.seed, 0, device=ctx.device)):
            if warm and step >= 5:
                break
            run.step(x, step, total, cfg, rows)
            if (step + 1) % cfg.log_every == 0:
                _log_metrics([run], step + 1, total, _NoBar())
        sync(ctx.device)
        return time.perf_counter() - t0

    return go, total


class _NoBar:
    def set_postfix(self, **kw) -> None:
        pass


def atlas_loop(ctx: Ctx, n: int, d: int, f: int, l0: int):
    import time

    import bench_scale

    from precompute.atlas_stats import pass_topk
    from precompute.codes import CodesWriter
    from sae_core.data import ActivationSource
    from sae_core.io import load_sae

    bench_scale.make_inputs(ctx.work / "A", n, d, f, l0, 1)
    sae = load_sae(ctx.work / "A" / "sae", device=ctx.device).eval()
    src = ActivationSource(ctx.work / "A" / "x.npy")
    block = max(1, (1 << 30) // (4 * f * 2))

    def go(warm: bool) -> float:
        from common import sync

        writer = CodesWriter(ctx.work, 0, 0, n)
        sync(ctx.device)
        t0 = time.perf_counter()
        pass_topk(sae, src, 16, 1, block, device=ctx.device, hi=min(n, block) if warm else n, codes=writer)
        sync(ctx.device)
        writer.close()
        return time.perf_counter() - t0

    return go, -(-n // block)


def run(ctx: Ctx) -> None:
    if ctx.smoke:
        go, steps = train_loop(ctx, 2048, 16, 64, 4, 128)
        _profile(ctx, go, "train", steps, "step")
        go, blocks = atlas_loop(ctx, 300, 16, 256, 8)
    else:
        go, steps = train_loop(ctx, 409_600, 512, 16_384, 32, 4096)
        _profile(ctx, go, "train", steps, "step")
        go, blocks = atlas_loop(ctx, 16_384, 512, 98_304, 64)
    _profile(ctx, go, "atlas", blocks, "block")
