"""One process or several (`torchrun`): the process group and the few collectives `embed`, the
atlas build and `link` use.

    torchrun --nproc_per_node=2 -m precompute.atlas --acts cache/ --sae sae/ --out atlas/
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \
        --rdzv_endpoint=HOST:29500 -m precompute.atlas ...        # the same on every node

WORLD_SIZE > 1 in the environment (torchrun sets it) starts a process group: gloo on the
CPU, nccl when the device is CUDA (each rank takes the GPU of its LOCAL_RANK). Without it,
`Ranks()` is the single process and every collective is the identity.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from sae_core.device import resolve_device


@dataclass
class Ranks:
    """This process's rank among `world` processes, and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes."""
        return self.rank == 0

    def split(self, n: int, rank: int | None = None) -> tuple[int, int]:
        """The contiguous share [lo, hi) of n items of a rank (default: this one)."""
        r = self.rank if rank is None else rank
        return n * r // self.world, n * (r + 1) // self.world

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's tensor of the same shape, in rank order."""
        if self.world == 1:
            return [t]
        import torch.distributed as dist

        t = t.contiguous()
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t)
        return out


@contextmanager
def ranks_from_env(device: str = "auto") -> Iterator[Ranks]:
    """The process group torchrun describes in the environment (or the single process)."""
    dev = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield Ranks(0, 1, dev)
        return
    import torch.distributed as dist

    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    try:
        yield Ranks(dist.get_rank(), dist.get_world_size(), dev)
    finally:
        dist.destroy_process_group()
