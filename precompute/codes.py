"""The atlas's sparse codes: every non-zero image score of every latent, stored by image (CSR).

    codes_indptr.npy   [N + 1] int64   image i's entries are indptr[i] .. indptr[i+1]
    codes_latents.npy  [nnz] int32     latent of each entry, ascending within an image
    codes_values.npy   [nnz] float32   its image score (the number the top-k ranks)

At ~64 latents per image that is ~0.5 KB per image (1M images: 512 MB), whatever the
dictionary size. `link` correlates two atlases from these alone, and the histograms and
value bands are counted from them, so neither re-encodes the activations.

While an atlas is built, each rank streams its images' entries to raw part files
(`CodesWriter`); `write_codes` then joins the parts in rank order into the three `.npy`
files without holding them in memory.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CODE_FILES = ("codes_indptr.npy", "codes_latents.npy", "codes_values.npy")
BYTES_PER_ENTRY = 8
"""int32 latent + float32 value."""


class CodesWriter:
    """Append one rank's entries (images in ascending order) to raw part files in `folder`."""

    def __init__(self, folder: Path, part: int, lo: int, hi: int):
        self.folder, self.part, self.lo, self.hi = Path(folder), part, lo, hi
        self.counts = np.zeros(hi - lo, dtype=np.int64)
        self._lat = open(self.path("latents"), "wb")  # noqa: SIM115 - closed in close()
        self._val = open(self.path("values"), "wb")  # noqa: SIM115

    def path(self, what: str) -> Path:
        return self.folder / f"codes_part{self.part:05d}.{what}"

    def add(
        self, first_image: int, n_images: int, image_rel: np.ndarray, latents: np.ndarray, values: np.ndarray
    ) -> None:
        """Entries of images [first_image, first_image + n_images), sorted by image then latent;
        `image_rel` is each entry's image relative to `first_image`."""
        lo = first_image - self.lo
        self.counts[lo : lo + n_images] += np.bincount(image_rel, minlength=n_images)
        self._lat.write(np.ascontiguousarray(latents, dtype=np.int32).tobytes())
        self._val.write(np.ascontiguousarray(values, dtype=np.float32).tobytes())

    def close(self) -> None:
        self._lat.close()
        self._val.close()
        np.save(self.path("counts.npy"), self.counts)


@dataclass
class CodesPart:
    """One rank's finished part, memory-mapped: images [lo, lo + len(counts))."""

    lo: int
    indptr: np.ndarray  # [n + 1] int64, from 0
    latents: np.ndarray  # [nnz] int32
    values: np.ndarray  # [nnz] float32

    @classmethod
    def open(cls, folder: Path, part: int, lo: int) -> "CodesPart":
        base = Path(folder) / f"codes_part{part:05d}"
        counts = np.load(f"{base}.counts.npy")
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        nnz = int(indptr[-1])

        def raw(what: str, dtype: type) -> np.ndarray:
            return np.memmap(f"{base}.{what}", dtype=dtype, mode="r", shape=(nnz,)) if nnz else np.zeros(0, dtype)

        return cls(lo, indptr, raw("latents", np.int32), raw("values", np.float32))

    @property
    def n_images(self) -> int:
        return len(self.indptr) - 1


def _npy_from_raw(out: Path, sources: list[Path], dtype: str, n: int) -> None:
    with open(out, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (n,)})
        for src in sources:
            with open(src, "rb") as part:
                shutil.copyfileobj(part, fh, 1 << 24)


def write_codes(out: Path, parts_folder: Path, n_parts: int) -> int:
    """Join the parts (rank order) into the three code files in `out`; returns nnz."""
    counts = [np.load(Path(parts_folder) / f"codes_part{p:05d}.counts.npy") for p in range(n_parts)]
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    nnz = int(indptr[-1])
    np.save(out / CODE_FILES[0], indptr)
    parts = [Path(parts_folder) / f"codes_part{p:05d}" for p in range(n_parts)]
    _npy_from_raw(out / CODE_FILES[1], [Path(f"{b}.latents") for b in parts], "int32", nnz)
    _npy_from_raw(out / CODE_FILES[2], [Path(f"{b}.values") for b in parts], "float32", nnz)
    return nnz


class Codes:
    """The codes of a finished atlas, memory-mapped."""

    def __init__(self, atlas: str | Path):
        atlas = Path(atlas)
        self.indptr, self.latents, self.values = (np.load(atlas / name, mmap_mode="r") for name in CODE_FILES)
        self.n_images = len(self.indptr) - 1
        self.nnz = int(self.indptr[-1])

    def csr(self, n_latents: int, images: np.ndarray | None = None):
        """A scipy CSR matrix [images, latents] of float64 scores (all images, or these rows in order)."""
        import scipy.sparse as sp

        m = sp.csr_matrix(
            (np.asarray(self.values, dtype=np.float64), np.asarray(self.latents), np.asarray(self.indptr)),
            shape=(self.n_images, n_latents),
        )
        return (
            m
            if images is None or (len(images) == self.n_images and np.array_equal(images, np.arange(self.n_images)))
            else m[images]
        )
