"""faiss inner-product indexes on unit vectors (cosine): images by embedding, latents by
decoder direction. Nearest latents of a latent, text -> latents (embed-space SAEs) and
upload -> similar images all search these."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from sae_core.data import ActivationSource
from sae_core.sae import SparseAutoencoder


class FlatIndex:
    """A faiss IndexFlatIP over L2-normalised float32 rows."""

    def __init__(self, index: faiss.Index):
        self.index = index

    @classmethod
    def from_vectors(cls, x_nd: np.ndarray) -> "FlatIndex":
        x = np.ascontiguousarray(x_nd, dtype=np.float32)
        faiss.normalize_L2(x)
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        return cls(index)

    @classmethod
    def read(cls, path: str | Path) -> "FlatIndex":
        return cls(faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY))

    def write(self, path: str | Path) -> None:
        faiss.write_index(self.index, str(path))

    def search(self, q_nd: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(cosines [n, k], ids [n, k]) of the k nearest rows to each query."""
        q = np.ascontiguousarray(np.atleast_2d(q_nd), dtype=np.float32)
        faiss.normalize_L2(q)
        return self.index.search(q, min(k, self.index.ntotal))


def latent_index(sae: SparseAutoencoder) -> FlatIndex:
    return FlatIndex.from_vectors(sae.W_dec.detach().cpu().numpy())


def image_index(source: ActivationSource, block: int = 65_536) -> FlatIndex:
    index = faiss.IndexFlatIP(source.d)
    for lo in range(0, source.n_rows, block):
        x = source.read(lo, min(source.n_rows, lo + block))
        faiss.normalize_L2(x)
        index.add(x)
    return FlatIndex(index)
