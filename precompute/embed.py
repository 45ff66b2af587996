"""Entry point of `clipsae embed`, also runnable under torchrun for several processes:

    torchrun --nproc_per_node=2 -m precompute.embed --images photos/ --out cache/

Each rank takes a disjoint set of shards (gloo on CPU, nccl on GPU); rank 0 writes the
metadata once all ranks are done.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .activations import EmbedConfig, run_embed
from .encoders import EncoderSpec


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = EmbedConfig(images="", out="")
    e = EncoderSpec()
    p.add_argument("--images", required=True, help="folder of images (recursive) or a list file of paths")
    p.add_argument("--out", required=True, help="cache folder (created; an unfinished one is resumed)")
    p.add_argument("--model", default=e.model, help="OpenCLIP model name, or kandinsky-2-2-prior / a local prior folder")
    p.add_argument("--pretrained", default=e.pretrained, help="OpenCLIP tag, local checkpoint path, or none (random weights)")
    p.add_argument("--hook", default=e.hook, help="embed | blocks.L.resid_post | blocks.L.mlp_out | blocks.L.attn_out")
    p.add_argument("--tokens", default=e.tokens, choices=["cls", "spatial", "all"])
    p.add_argument("--patch-tokens", action="store_true", help="with --hook embed: also store patch tokens mapped to the embedding space")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--workers", type=int, default=d.workers, help="decode worker processes (default: cores - 1, at most 8)")
    p.add_argument("--shard-size", type=int, default=d.shard_size, help="images per shard (unit of resuming)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default=d.dtype, choices=["float16", "float32"], help="storage dtype")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="skip larger images")
    p.add_argument("--seed", type=int, default=e.seed, help="seed of random weights (--pretrained none)")


def config_from_args(a: argparse.Namespace) -> EmbedConfig:
    spec = EncoderSpec(model=a.model, pretrained=a.pretrained, hook=a.hook, tokens=a.tokens,
                       patch_tokens=a.patch_tokens, seed=a.seed)
    return EmbedConfig(images=a.images, out=a.out, encoder=spec, batch_size=a.batch_size, workers=a.workers,
                       shard_size=a.shard_size, device=a.device, dtype=a.dtype, max_pixels=a.max_pixels)


def run(a: argparse.Namespace) -> int:
    """Run single-process, or as one rank when launched by torchrun (WORLD_SIZE > 1)."""
    cfg = config_from_args(a)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        meta = run_embed(cfg)
    else:
        import torch
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
        try:
            meta = run_embed(cfg, rank=dist.get_rank(), world_size=dist.get_world_size(), barrier=dist.barrier)
        finally:
            dist.destroy_process_group()
    if meta is not None:
        print(f"{meta['n_images']} images, {meta['n_rows']} rows x {meta['dim']} -> {cfg.out}; "
              f"{meta['n_failed']} skipped" + (f" (see {cfg.out}/failures.jsonl)" if meta["n_failed"] else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="precompute.embed", description=__doc__.splitlines()[0])
    add_arguments(p)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(p.parse_args(argv))
    except (ValueError, FileNotFoundError) as exc:
        print(f"embed: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
