"""Read activation matrices that do not fit in memory: a `.npy` file or a cache folder.

Reads are sequential blocks of rows (`block_rows`), shuffled within the block; the block
order is shuffled per epoch. Everything is a pure function of (seed, epoch), so a resumed
run can skip to batch i without reading the batches before it.

A cache folder is what `clipsae embed` writes (see `precompute/FORMAT.md`): a
`metadata.json` with a `shards` list of fp16 `.npy` files, in row order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .files import check_format

CACHE_FORMAT = "clipsae-activations"
CACHE_VERSION = 1
"""The activation cache's header (`metadata.json`), written by `clipsae embed` and checked by
every reader (see precompute/FORMAT.md)."""


def read_cache_metadata(cache: str | Path) -> dict:
    """metadata.json of a finished cache, with its format and version checked."""
    path = Path(cache) / "metadata.json"
    if not path.exists():
        hint = (" (an unfinished run: repeat the clipsae embed command to resume)"
                if (Path(cache) / "settings.json").exists() else ", or pass a .npy matrix")
        raise FileNotFoundError(f"{cache} is a folder without metadata.json; expected an activation cache written "
                                f"by `clipsae embed`{hint}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); re-run the clipsae embed command") from None
    return check_format(meta, CACHE_FORMAT, CACHE_VERSION, path, "activation cache")


class ActivationSource:
    """Row-addressable view over one `.npy` matrix or the shards of a cache folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metadata: dict = {}
        if self.path.is_dir():
            self.metadata = read_cache_metadata(self.path)
            shard_files = [self.path / s["file"] for s in self.metadata.get("shards", [])]
            self._arrays = [np.load(f, mmap_mode="r") for f in shard_files]
            if not self._arrays:
                raise ValueError(f"activation cache {self.path} has no shards (is it complete?)")
        elif self.path.suffix == ".npy":
            if not self.path.exists():
                raise FileNotFoundError(f"no such activation file: {self.path}")
            self._arrays = [np.load(self.path, mmap_mode="r")]
        else:
            raise ValueError(f"--acts must be a .npy matrix [N, d] or an activation cache folder; got {self.path}")
        for a in self._arrays:
            if a.ndim != 2:
                raise ValueError(f"activations must be 2-D [N, d]; {self.path} holds shape {a.shape}")
            if a.dtype.kind != "f":
                raise ValueError(f"activations must be floating point; {self.path} holds {a.dtype}")
        dims = {a.shape[1] for a in self._arrays}
        if len(dims) != 1:
            raise ValueError(f"shards of {self.path} disagree on the width: {sorted(dims)}")
        self.d = dims.pop()
        self._starts = np.cumsum([0] + [a.shape[0] for a in self._arrays])
        self.n_rows = int(self._starts[-1])
        if self.n_rows == 0:
            raise ValueError(f"{self.path} holds no rows")

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as float32 (a copy; the files stay untouched)."""
        out = np.empty((stop - start, self.d), dtype=np.float32)
        pos = start
        while pos < stop:
            i = int(np.searchsorted(self._starts, pos, side="right") - 1)
            a = self._arrays[i]
            lo = pos - int(self._starts[i])
            hi = min(a.shape[0], lo + (stop - pos))
            out[pos - start : pos - start + hi - lo] = a[lo:hi]
            pos += hi - lo
        return out


@dataclass(frozen=True)
class BlockPlan:
    """How an epoch is cut into blocks and batches (pure function of sizes)."""

    n_rows: int
    batch_size: int
    block_rows: int

    @property
    def n_blocks(self) -> int:
        return -(-self.n_rows // self.block_rows)

    def block_bounds(self, b: int) -> tuple[int, int]:
        return b * self.block_rows, min(self.n_rows, (b + 1) * self.block_rows)

    def batches_in_block(self, b: int) -> int:
        lo, hi = self.block_bounds(b)
        return -(-(hi - lo) // self.batch_size)

    @property
    def batches_per_epoch(self) -> int:
        return sum(self.batches_in_block(b) for b in range(self.n_blocks))


def make_plan(n_rows: int, batch_size: int, block_rows: int) -> BlockPlan:
    """Blocks are a whole number of batches, so only the last block yields a short batch."""
    block = max(batch_size, (block_rows // batch_size) * batch_size)
    return BlockPlan(n_rows=n_rows, batch_size=batch_size, block_rows=block)


def iter_batches(
    source: ActivationSource,
    plan: BlockPlan,
    seed: int,
    epoch: int,
    skip: int = 0,
    device: torch.device | str = "cpu",
) -> Iterator[torch.Tensor]:
    """Yield float32 batches of one epoch, skipping the first `skip` without reading them."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(plan.n_blocks)
    seen = 0
    for b in order:
        lo, hi = plan.block_bounds(int(b))
        n_batches = plan.batches_in_block(int(b))
        perm = rng.permutation(hi - lo)  # drawn even when skipped: keeps the stream identical
        if seen + n_batches <= skip:
            seen += n_batches
            continue
        block = torch.from_numpy(source.read(lo, hi))
        for j in range(n_batches):
            if seen >= skip:
                idx = torch.from_numpy(perm[j * plan.batch_size : (j + 1) * plan.batch_size])
                yield block[idx].to(device, non_blocking=True)
            seen += 1


def sample_rows(source: ActivationSource, n: int, seed: int) -> np.ndarray:
    """Up to n rows from the first block (used for the bias init and the norm constant)."""
    rows = source.read(0, min(n, source.n_rows))
    rng = np.random.default_rng(seed)
    return rows[rng.permutation(rows.shape[0])]
