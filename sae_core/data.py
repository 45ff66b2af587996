"""Read activation matrices that do not fit in memory: a `.npy` file or a cache folder.

Each epoch reads the file in contiguous chunks (`chunk_rows`) in a random order; blocks of
`block_rows` rows (about block_rows / chunk_rows chunks from anywhere in the file) are
shuffled in memory and cut into batches (`BlockPlan`). Everything is a pure function of
(seed, epoch), so a resumed run can skip to batch i without reading the batches before it.

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
        hint = (
            " (an unfinished run: repeat the clipsae embed command to resume)"
            if (Path(cache) / "settings.json").exists()
            else ", or pass a .npy matrix"
        )
        raise FileNotFoundError(
            f"{cache} is a folder without metadata.json; expected an activation cache written by `clipsae embed`{hint}"
        )
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
        return self.read_pieces([(start, stop)])

    def read_pieces(self, pieces: list[tuple[int, int]]) -> np.ndarray:
        """The row ranges [start, stop) one after the other, as one float32 array."""
        out = np.empty((sum(stop - start for start, stop in pieces), self.d), dtype=np.float32)
        at = 0
        for start, stop in pieces:
            pos = start
            while pos < stop:
                i = int(np.searchsorted(self._starts, pos, side="right") - 1)
                a = self._arrays[i]
                lo = pos - int(self._starts[i])
                hi = min(a.shape[0], lo + (stop - pos))
                out[at : at + hi - lo] = a[lo:hi]
                at += hi - lo
                pos += hi - lo
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given rows (sorted ascending), as float32."""
        out = np.empty((len(rows), self.d), dtype=np.float32)
        shard = np.searchsorted(self._starts, rows, side="right") - 1
        for i in np.unique(shard):
            sel = shard == i
            out[sel] = self._arrays[int(i)][rows[sel] - int(self._starts[i])]
        return out


@dataclass(frozen=True)
class BlockPlan:
    """How an epoch is cut into chunks, blocks and batches (a pure function of sizes).

    Each epoch lays the file's chunks (`chunk_rows` contiguous rows each) end to end in a
    random order and cuts that sequence into blocks of `block_rows` rows, a whole number of
    batches; a block's rows are shuffled together. So a batch mixes rows from about
    block_rows / chunk_rows places spread over the whole file (a class-sorted cache still
    gives batches of every class), while every read stays a contiguous run of chunk_rows rows.
    """

    n_rows: int
    batch_size: int
    block_rows: int
    chunk_rows: int

    @property
    def n_chunks(self) -> int:
        return -(-self.n_rows // self.chunk_rows)

    @property
    def n_blocks(self) -> int:
        return -(-self.n_rows // self.block_rows)

    def block_bounds(self, b: int) -> tuple[int, int]:
        """Block b's span [lo, hi) in the epoch's sequence of (permuted) rows."""
        return b * self.block_rows, min(self.n_rows, (b + 1) * self.block_rows)

    def batches_in_block(self, b: int) -> int:
        lo, hi = self.block_bounds(b)
        return -(-(hi - lo) // self.batch_size)

    @property
    def batches_per_epoch(self) -> int:
        return sum(self.batches_in_block(b) for b in range(self.n_blocks))

    def pieces(self, chunk_order: np.ndarray, b: int) -> list[tuple[int, int]]:
        """The file row ranges [start, stop) that make up block b, given the epoch's chunk order."""
        lo, hi = self.block_bounds(b)
        lengths = np.minimum(self.chunk_rows, self.n_rows - chunk_order * self.chunk_rows)
        ends = np.cumsum(lengths)
        out = []
        i = int(np.searchsorted(ends, lo, side="right"))
        pos = lo
        while pos < hi:
            c_start = int(ends[i] - lengths[i])  # where chunk i begins in the sequence
            take_lo, take_hi = pos - c_start, min(int(lengths[i]), hi - c_start)
            base = int(chunk_order[i]) * self.chunk_rows
            out.append((base + take_lo, base + take_hi))
            pos = c_start + take_hi
            i += 1
        return out


def make_plan(n_rows: int, batch_size: int, block_rows: int, chunk_rows: int | None = None) -> BlockPlan:
    """Blocks are a whole number of batches, so only the last block yields a short batch.
    Without `chunk_rows`, chunks are whole blocks (contiguous blocks in a random order)."""
    block = max(batch_size, (block_rows // batch_size) * batch_size)
    return BlockPlan(n_rows=n_rows, batch_size=batch_size, block_rows=block, chunk_rows=chunk_rows or block)


def chunk_order(plan: BlockPlan, seed: int, epoch: int) -> tuple[np.ndarray, np.random.Generator]:
    """The epoch's random chunk order (a pure function of seed and epoch) and the generator
    that then draws the within-block shuffles. The short last chunk of the file, if any, goes
    last, so every block but the last is exactly block_rows rows."""
    rng = np.random.default_rng([seed, epoch])
    full = plan.n_rows // plan.chunk_rows
    order = rng.permutation(full)
    if plan.n_chunks > full:
        order = np.append(order, full)
    return order, rng


def iter_batches(
    source: ActivationSource,
    plan: BlockPlan,
    seed: int,
    epoch: int,
    skip: int = 0,
    device: torch.device | str = "cpu",
) -> Iterator[torch.Tensor]:
    """Yield float32 batches of one epoch, skipping the first `skip` without reading them.
    A block holding NaN or inf is refused (ValueError) before any of its batches is used."""
    order, rng = chunk_order(plan, seed, epoch)
    on_gpu = torch.device(device).type == "cuda"
    seen = 0
    for b in range(plan.n_blocks):
        lo, hi = plan.block_bounds(b)
        n_batches = plan.batches_in_block(b)
        perm = rng.permutation(hi - lo)  # drawn even when skipped: keeps the stream identical
        if seen + n_batches <= skip:
            seen += n_batches
            continue
        # in file order: forward reads only (the block is shuffled anyway)
        block = torch.from_numpy(source.read_pieces(sorted(plan.pieces(order, b))))
        if on_gpu:  # one copy per block; each batch is then a gather on the device (the same rows)
            block = block.to(device)
            perm_t = torch.from_numpy(perm).to(device)
        if not torch.isfinite(block).all():
            raise ValueError(
                f"{source.path}: rows of block {b} (epoch {epoch}) contain NaN or inf activations; "
                "clean or re-extract the activations"
            )
        for j in range(n_batches):
            if seen >= skip:
                sel = slice(j * plan.batch_size, (j + 1) * plan.batch_size)
                yield block[perm_t[sel]] if on_gpu else block[torch.from_numpy(perm[sel])].to(device)
            seen += 1


def sample_rows(source: ActivationSource, n: int, seed: int) -> np.ndarray:
    """Up to n distinct rows drawn at random from the whole file (the init sample: decoder bias,
    encoder scale, normalisation constant, σ), in file order; reproducible from the seed."""
    rng = np.random.default_rng([seed, 0x1A17])
    if n >= source.n_rows:
        return source.read(0, source.n_rows)
    return source.take(np.sort(rng.choice(source.n_rows, size=n, replace=False)))
