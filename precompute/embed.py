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

from sae_core.cliargs import add_config_flags, run_reporting
from sae_core.cliargs import config_from_args as configs_from_args

from .activations import EmbedConfig, run_embed
from .encoders import EncoderSpec


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `clipsae embed` (= `torchrun -m precompute.embed`), from EmbedConfig + EncoderSpec."""
    add_config_flags(p, EmbedConfig, skip=("encoder",), required=("images", "out"),
                     helps={"images": "folder of images (recursive) or a list file of paths",
                            "out": "cache folder (created; an unfinished one is resumed)"})
    add_config_flags(p.add_argument_group("encoder"), EncoderSpec)


def config_from_args(a: argparse.Namespace) -> EmbedConfig:
    return configs_from_args(EmbedConfig, a, encoder=configs_from_args(EncoderSpec, a))


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
    args = p.parse_args(argv)
    return run_reporting("precompute.embed", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
