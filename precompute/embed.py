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

from sae_core.cliargs import add_config_flags, config_from_args, run_reporting

from .activations import run_embed
from .configs import EmbedConfig


def run(a: argparse.Namespace) -> int:
    """Run single-process, or as one rank when launched by torchrun (WORLD_SIZE > 1)."""
    cfg = config_from_args(EmbedConfig, a)
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
    """`torchrun -m precompute.embed …` (or `python -m precompute.embed …`): the flags of `clipsae embed`."""
    p = argparse.ArgumentParser(prog="precompute.embed", description=__doc__.splitlines()[0])
    add_config_flags(p, EmbedConfig)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = p.parse_args(argv)
    return run_reporting("precompute.embed", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
