"""The atlas folder's identity and layout: format name and version, the declared list of its
arrays (which the writer walks and tests/test_formats.py compares with precompute/ATLAS.md),
the SAE hash, the atlas's content hash, and the one reader of `manifest.json` (every
consumer — the app, `link`, the demo — goes through `read_manifest`, which enforces the
format and version).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sae_core.files import check_format, sha256_file
from sae_core.io import CFG_FILE, WEIGHTS_FILE

ATLAS_FORMAT = "clipsae-atlas"
ATLAS_VERSION = 4
"""4: per-latent quality scores (`scores/`, written by `clipsae eval card --atlas`; precompute/atlas_scores.py);
version 3 atlases are read as they are (they have no scores). 3: self-contained and relocatable — sparse codes (`codes_*.npy`), the encoder's description
(`encoder.json`), image paths relative to a root that can be overridden, labels as arrays,
histograms and bands from a seeded random sample (all images by default), links keyed by the
other atlas's SAE hash, per-file SHA-256 in the manifest. 2: value-band samples are
`band_ids.npy` / `band_values.npy` (were `quantile_*`), the manifest says `top_images` (was `k`)."""
MIN_ATLAS_VERSION = 3
MANIFEST = "manifest.json"
ENCODER_FILE = "encoder.json"
LABEL_VOCAB = "label_vocab.json"


@dataclass(frozen=True)
class ArrayField:
    """One `.npy` file of the atlas: its dtype and symbolic shape (F latents, k = top_images,
    P = n_patches, N = n_images, nnz = n_codes, K = neighbours; numbers are literal)."""

    name: str
    dtype: str
    shape: tuple[str, ...]
    when: str = ""
    """Manifest flag that must be true for the file to exist ("" = always)."""

    def concrete_shape(self, manifest: dict[str, Any]) -> tuple[int, ...]:
        dims = {
            "F": manifest["d_sae"],
            "k": manifest["top_images"],
            "P": manifest["n_patches"],
            "N": manifest["n_images"],
            "N+1": manifest["n_images"] + 1,
            "nnz": manifest["n_codes"],
            "K": manifest["neighbours"],
        }
        return tuple(int(dims[d]) if d in dims else int(d) for d in self.shape)

    def check(self, array: np.ndarray, manifest: dict[str, Any]) -> None:
        """Raise if `array` is not what this field declares (a writer's invariant)."""
        want = self.concrete_shape(manifest)
        if array.dtype != np.dtype(self.dtype) or array.shape != want:
            raise AssertionError(f"{self.name}: {array.dtype} {array.shape}, declared {self.dtype} {want}")


ATLAS_ARRAYS: tuple[ArrayField, ...] = (
    ArrayField("topk_ids.npy", "int64", ("F", "k")),
    ArrayField("topk_values.npy", "float32", ("F", "k")),
    ArrayField("frequency.npy", "float32", ("F",)),
    ArrayField("mean_activation.npy", "float32", ("F",)),
    ArrayField("max_activation.npy", "float32", ("F",)),
    ArrayField("histogram.npy", "int64", ("F", "50")),
    ArrayField("band_ids.npy", "int64", ("F", "5", "4")),
    ArrayField("band_values.npy", "float32", ("F", "5", "4")),
    ArrayField("codes_indptr.npy", "int64", ("N+1",)),
    ArrayField("codes_latents.npy", "int32", ("nnz",)),
    ArrayField("codes_values.npy", "float32", ("nnz",)),
    ArrayField("masks.npy", "float16", ("F", "k", "P"), when="masks"),
    ArrayField("mask_scale.npy", "float32", ("F",), when="masks"),
    ArrayField("label_words.npy", "int32", ("F", "5"), when="labels"),
    ArrayField("label_scores.npy", "float32", ("F", "5"), when="labels"),
    ArrayField("neighbour_ids.npy", "int64", ("F", "K"), when="neighbours"),
    ArrayField("neighbour_cos.npy", "float32", ("F", "K"), when="neighbours"),
)
"""Every array of an atlas, in the order the writer writes them."""


def sae_hash(sae_dir: Path) -> str:
    """SHA-256 over cfg.json and the weights: the SAE's identity (what links are keyed by)."""
    h = hashlib.sha256()
    for name in (CFG_FILE, WEIGHTS_FILE):
        h.update(sha256_file(Path(sae_dir) / name).encode())
    return h.hexdigest()


def content_hash(atlas: str | Path) -> str:
    """SHA-256 of the manifest, which lists the SHA-256 of every file the build wrote: two
    atlases (or two builds in one folder) share it only if their contents are identical."""
    return sha256_file(Path(atlas) / MANIFEST)


def read_manifest(atlas: str | Path) -> dict[str, Any]:
    """The checked manifest of an atlas folder, or a one-line error naming the fix."""
    path = Path(atlas) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{atlas} is not an atlas: {MANIFEST} is missing (build one with clipsae atlas)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rebuild the atlas with clipsae atlas") from None
    return check_format(
        meta,
        ATLAS_FORMAT,
        ATLAS_VERSION,
        path,
        "atlas manifest",
        min_version=MIN_ATLAS_VERSION,
        upgrade_hint="rebuild it with the same `clipsae atlas` command (version 3 made atlases "
        "self-contained: sparse codes, the encoder, relocatable image paths)",
    )
