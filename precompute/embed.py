"""Entry point of `clipsae embed`, also runnable under torchrun for several processes:

    torchrun --nproc_per_node=2 -m precompute.embed --images photos/ --out cache/

Each rank takes a disjoint set of shards (gloo on CPU, nccl on GPU, each rank on the GPU of
its LOCAL_RANK: the one process-group setup of `precompute.ranks`, as the atlas and link
use); rank 0 writes the metadata once all ranks are done.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sae_core.cliargs import add_config_flags, config_from_args, run_reporting

from .activations import run_embed
from .configs import EmbedConfig
from .ranks import ranks_from_env


def run(a: argparse.Namespace) -> int:
    """Run single-process, or as one rank when launched by torchrun (WORLD_SIZE > 1)."""
    cfg = config_from_args(EmbedConfig, a)
    with ranks_from_env(cfg.device) as ranks:
        meta = run_embed(cfg, ranks)
    if meta is not None:
        print(
            f"{meta['n_images']} images, {meta['n_rows']} rows x {meta['dim']} -> {cfg.out}; "
            f"{meta['n_failed']} skipped" + (f" (see {cfg.out}/failures.jsonl)" if meta["n_failed"] else "")
        )
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
