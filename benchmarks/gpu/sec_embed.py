"""`clipsae embed`'s extraction loop (decode workers, forward, fp16 shard writes) against a bare
forward of the same model on pre-decoded tensors, full-size ViT-B/32 and ViT-L/14 with random
weights (open_clip), in images/s; alternating rounds, medians (benchmarks/bench_embed.py's
method)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from common import Ctx, free_cuda, missing


def rates(ctx: Ctx, model: str, n: int, batch: int, workers: int, rounds: int, folder: Path) -> tuple[float, float]:
    import torch

    from bench_embed import make_jpegs
    from precompute.activations import EmbedConfig, _extract, check_or_write_settings, settings_of
    from precompute.encoders import EncoderSpec, load_encoder
    from precompute.images import list_images, load_image

    imgs = folder / "imgs"
    if not imgs.exists():
        imgs.mkdir(parents=True)
        make_jpegs(imgs, n, (500, 375))
    spec = EncoderSpec(model=model, pretrained="none")
    enc = load_encoder(spec, ctx.device)
    _, refs = list_images(imgs)
    x = torch.stack([enc.preprocess(load_image(r.abs_path)[0]) for r in refs])
    enc.encode(x[:batch])  # warm-up
    sync = torch.cuda.synchronize if ctx.cuda else (lambda: None)

    def bare() -> float:
        sync()
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            enc.encode(x[i : i + batch])
        sync()
        return n / (time.perf_counter() - t0)

    def pipeline(r: int) -> float:
        cfg = EmbedConfig(
            images=str(imgs),
            out=str(folder / f"cache_{model}_{r}"),
            encoder=spec,
            batch_size=batch,
            workers=workers,
            shard_size=n,
            device=ctx.device,
        )
        check_or_write_settings(Path(cfg.out), settings_of(cfg, refs, torch.device(ctx.device)))
        t0 = time.perf_counter()
        _extract(cfg, refs, enc, [0], Path(cfg.out))
        return n / (time.perf_counter() - t0)

    b, p = [], []
    for r in range(rounds):
        b.append(bare())
        p.append(pipeline(r))
    return statistics.median(b), statistics.median(p)


def run(ctx: Ctx) -> None:
    gaps = missing("open_clip")
    if gaps:
        ctx.skip("embed", f"not installed: {', '.join(gaps)}")
        return
    if ctx.smoke:
        plan = [("ViT-B-32", 8, 4, 0, 1)]
    else:
        workers = min(8, max(1, (os.cpu_count() or 2) - 2))
        plan = [("ViT-B-32", 2048, 256, workers, 3), ("ViT-L-14", 1024, 128, workers, 2)]
    for model, n, batch, workers, rounds in plan:
        if ctx.left() < 15 and not ctx.smoke:
            ctx.skip(f"embed {model}", "the section's budget is nearly spent")
            continue
        bare, pipe = rates(ctx, model, n, batch, workers, rounds, ctx.work)
        free_cuda()  # the encoder went with rates()' frame
        note = f"{n} JPEGs 500x375, batch {batch}, {workers} workers, median of {rounds}"
        ctx.rec(f"embed {model}: bare forward", round(bare, 1), "images/s", note)
        ctx.rec(f"embed {model}: clipsae embed pipeline", round(pipe, 1), "images/s", f"{pipe / bare:.0%} of bare")
