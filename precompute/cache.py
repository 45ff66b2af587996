"""Read a finished activation cache: metadata, the image table, export to a plain matrix.

clipsae export cache/ --out acts.npy      # float32 [N, d] + acts.ids.txt (one id per row)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sae_core.data import ActivationSource, read_cache_metadata
from sae_core.files import atomic_write_text, atomic_write_with
from sae_core.progress import Progress


def read_metadata(cache: str | Path) -> dict[str, Any]:
    """metadata.json of a complete cache, with its format and version checked."""
    return read_cache_metadata(cache)


def read_images(cache: str | Path) -> list[dict[str, str]]:
    """The image table in row order: [{"id", "path"}, ...]; image i owns rows i·T .. i·T+T-1."""
    lines = (Path(cache) / "images.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def row_ids(cache: str | Path) -> list[str]:
    """One image id per row (repeated for the tokens of one image)."""
    meta = read_metadata(cache)
    t = meta["tokens_per_image"]
    return [img["id"] for img in read_images(cache) for _ in range(t)]


def export(cache: str | Path, out: str | Path, block_rows: int = 65_536) -> Path:
    """Write rows as float32 [N, d] `.npy` (atomically) plus `<out stem>.ids.txt`."""
    out = Path(out)
    if out.suffix != ".npy":
        raise ValueError(f"--out must end in .npy; got {out}")
    read_metadata(cache)
    source = ActivationSource(cache)
    ids = row_ids(cache)
    assert len(ids) == source.n_rows, f"{len(ids)} ids for {source.n_rows} rows"

    def write(tmp: Path) -> None:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(source.n_rows, source.d))
        bar = Progress(source.n_rows, "export", unit="rows")
        for lo in range(0, source.n_rows, block_rows):
            hi = min(source.n_rows, lo + block_rows)
            arr[lo:hi] = source.read(lo, hi)
            bar.update(hi - lo)
        bar.close()
        arr.flush()
        del arr

    atomic_write_with(out, write)
    atomic_write_text(out.with_suffix(".ids.txt"), "".join(i + "\n" for i in ids))
    return out
