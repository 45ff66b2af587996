"""`clipsae embed` throughput vs the bare model forward, on the same images, in one run.

    .venv/bin/python benchmarks/bench_embed.py                  # ViT-B-32, 128 JPEGs of 500x375
    .venv/bin/python benchmarks/bench_embed.py --device cuda --n 2048 --batch-size 256 --workers 8

Full-size architecture with random weights (speed does not depend on weight values).
"bare" runs `encode_image` on tensors decoded and preprocessed beforehand (not timed);
"pipeline" is the extraction loop of `clipsae embed` (decode workers, forward, fp16
shard writes), the model already loaded. Goal: pipeline >= 90% of bare. Never asserts.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from precompute.activations import EmbedConfig, _extract, check_or_write_settings, settings_of
from precompute.encoders import EncoderSpec, load_encoder
from precompute.images import list_images, load_image


def make_jpegs(folder: Path, n: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    for i in range(n):  # smooth-ish content so JPEG sizes are realistic
        im = Image.fromarray(np.roll(base, i, axis=1)).resize(size, Image.BILINEAR)
        im.save(folder / f"{i:05d}.jpg", quality=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3, help="alternating bare/pipeline rounds; medians reported")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        (tmp / "imgs").mkdir()
        make_jpegs(tmp / "imgs", a.n, (500, 375))
        spec = EncoderSpec(model=a.model, pretrained="none")
        enc = load_encoder(spec, a.device)
        _, refs = list_images(tmp / "imgs")
        x = torch.stack([enc.preprocess(load_image(r.abs_path)[0]) for r in refs])
        enc.encode(x[: a.batch_size])  # warm-up
        sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)

        def bare_rate() -> float:
            sync()
            t0 = time.perf_counter()
            for i in range(0, a.n, a.batch_size):
                enc.encode(x[i : i + a.batch_size])
            sync()
            return a.n / (time.perf_counter() - t0)

        def pipeline_rate(r: int) -> float:
            cfg = EmbedConfig(
                images=str(tmp / "imgs"),
                out=str(tmp / f"cache{r}"),
                encoder=spec,
                batch_size=a.batch_size,
                workers=a.workers,
                shard_size=a.n,
                device=a.device,
            )
            check_or_write_settings(Path(cfg.out), settings_of(cfg, refs, torch.device(a.device)))
            t0 = time.perf_counter()
            _extract(cfg, refs, enc, [0], Path(cfg.out))
            return a.n / (time.perf_counter() - t0)

        bares, pipes = [], []
        for r in range(a.rounds):  # alternate, so drifts of the machine hit both alike
            bares.append(bare_rate())
            pipes.append(pipeline_rate(r))
        bare, pipe = float(np.median(bares)), float(np.median(pipes))
        print(
            f"{a.model} random weights, {a.device}, {torch.get_num_threads()} threads, batch {a.batch_size}, "
            f"{a.workers} workers, {a.n} JPEGs 500x375, median of {a.rounds} alternating rounds"
        )
        print("| path | images/s |\n|---|---|")
        print(f"| bare forward (pre-decoded tensors) | {bare:.1f} |")
        print(f"| clipsae embed pipeline | {pipe:.1f} |")
        print(f"| pipeline / bare | {pipe / bare:.0%} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
