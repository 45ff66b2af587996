"""The card's one pass over the held-out activations: reconstruction and sparsity metrics,
every image's latent scores (sparse, for MS, probing and label quality) and, for token caches,
Moran's I on the spatial tokens: all from the same SAE forward, in blocks of whole images
(memory: one block of activations plus the sparse codes, nnz = images × active latents).

For `embed` caches with patch tokens (the patches mapped into the embedding space), the
SAE is run on the patch tokens of a seeded sample of images in a second loop (`patch_moran`):
49 patch rows per image cost 49 image rows, so the sample bounds that cost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from precompute.masks import PatchReader
from precompute.topk import ScoreRule, image_scores
from sae_core.data import ActivationSource
from sae_core.metrics import MetricsAccumulator
from sae_core.progress import Progress
from sae_core.sae import SparseAutoencoder

from .card_moran import MoranAccumulator, MoranRules, grid_of, is_grid

DENSE_FRACTION = 0.1
"""A latent firing on at least this fraction of the held-out rows is dense (the app's rule for images)."""


@dataclass
class HeldOut:
    """Held-out activations and what is known of their images."""

    source: ActivationSource
    tokens_per_image: int
    token_indices: list[int]
    n_images: int
    image_ids: list[str] = field(default_factory=list)
    image_paths: list[str] = field(default_factory=list)
    """Relative to `images_root` (empty for a plain .npy)."""
    images_root: str | None = None

    @property
    def meta(self) -> dict:
        return self.source.metadata

    @property
    def spatial(self) -> list[int]:
        """Positions, among an image's rows, of its patch tokens (token index ≥ 1)."""
        return [pos for pos, tok in enumerate(self.token_indices) if tok >= 1]

    @property
    def cls_pos(self) -> int | None:
        return self.token_indices.index(0) if 0 in self.token_indices else None


def open_heldout(acts: str | Path) -> HeldOut:
    """The held-out cache (or .npy) with its image table."""
    source = ActivationSource(acts)
    meta = source.metadata
    t = int(meta.get("tokens_per_image", 1))
    if source.n_rows % t:
        raise ValueError(f"{acts}: {source.n_rows} rows is not a whole number of images of {t} tokens")
    held = HeldOut(source, t, list(meta.get("token_indices", [0])), source.n_rows // t)
    table = Path(acts) / "images.jsonl"
    if meta and table.is_file():
        rows = [json.loads(line) for line in table.read_text().splitlines() if line]
        if len(rows) != held.n_images:
            raise ValueError(f"{table} lists {len(rows)} images but the cache holds {held.n_images}")
        held.image_ids = [r["id"] for r in rows]
        held.image_paths = [r["path"] for r in rows]
        held.images_root = meta.get("images_root")
    return held


@dataclass
class PassResult:
    """What the pass measured."""

    metrics: dict[str, float]
    """sae_core.metrics' metrics over every held-out row."""
    l0_median: float
    row_frequency: np.ndarray
    """[F] fraction of held-out rows each latent fires on."""
    codes: sp.csr_matrix
    """[images, F] float32 image scores (max / mean over an image's tokens, or its CLS token)."""
    moran: MoranAccumulator | None = None


def block_images(d_sae: int, tokens_per_image: int, block_mb: float) -> int:
    """Images per block: about three [rows, F] float32 buffers within `block_mb`."""
    return max(1, int(block_mb * 2**20) // (3 * 4 * d_sae * tokens_per_image))


@torch.no_grad()
def card_pass(
    sae: SparseAutoencoder,
    held: HeldOut,
    rule: ScoreRule = "max",
    block_mb: float = 512,
    device: torch.device | str = "cpu",
    moran: MoranRules | None = None,
) -> PassResult:
    """One ordered pass over every held-out image (see the module docstring)."""
    sae = sae.to(device).eval()
    f_dim, t = sae.cfg.d_sae, held.tokens_per_image
    if held.source.d != sae.cfg.d_in:
        raise ValueError(f"--acts {held.source.path} has width {held.source.d} but the SAE reads {sae.cfg.d_in}")
    acc = MetricsAccumulator(sae.cfg.d_in, f_dim)
    l0_counts = np.zeros(f_dim + 1, dtype=np.int64)
    spatial = held.spatial if t > 1 else []
    moran_acc = None
    if moran is not None and is_grid(len(spatial)):
        moran_acc = MoranAccumulator(f_dim, grid_of(len(spatial)), moran, device)
    spatial_t = torch.tensor(spatial, dtype=torch.int64, device=device)
    indptr, indices, values = [np.zeros(1, dtype=np.int64)], [], []
    step = block_images(f_dim, t, block_mb)
    bar = Progress(held.n_images, "card: held-out pass", unit="img")
    for i0 in range(0, held.n_images, step):
        i1 = min(held.n_images, i0 + step)
        x = torch.from_numpy(held.source.read(i0 * t, i1 * t)).to(device)
        if not torch.isfinite(x).all():
            raise ValueError(f"{held.source.path}: rows {i0 * t}..{i1 * t} contain NaN or inf")
        out = sae(x)
        f = out.f_bs
        acc.update(out.x_norm_bd, out.x_hat_norm_bd, f)
        l0_counts += np.bincount((f != 0).sum(dim=1).cpu().numpy(), minlength=f_dim + 1)
        s = image_scores(f.T, t, rule, held.cls_pos).T  # the atlas's rule, on a transposed view: [b, F]
        rows, cols = s.nonzero(as_tuple=True)  # row-major: CSR order
        indices.append(cols.to(torch.int32).cpu().numpy())
        values.append(s[rows, cols].float().cpu().numpy())
        indptr.append(indptr[-1][-1] + np.cumsum(np.bincount(rows.cpu().numpy(), minlength=i1 - i0)))
        if moran_acc is not None:
            moran_acc.update(f.view(i1 - i0, t, f_dim).index_select(1, spatial_t))
        bar.update(i1 - i0)
    bar.close()
    codes = sp.csr_matrix(
        (
            np.concatenate(values) if values else np.zeros(0, np.float32),
            np.concatenate(indices) if indices else np.zeros(0, np.int32),
            np.concatenate(indptr),
        ),
        shape=(held.n_images, f_dim),
    )
    m = acc.result()
    return PassResult(m, _median(l0_counts), acc.fire_count_s / max(acc.n, 1), codes, moran_acc)


def _median(counts: np.ndarray) -> float:
    """Median of the values 0..len−1 with the given counts (the mean of the two middle ones for an even total)."""
    total = int(counts.sum())
    if total == 0:
        return float("nan")
    cum = np.cumsum(counts)
    lo = int(np.searchsorted(cum, (total - 1) // 2 + 1))
    hi = int(np.searchsorted(cum, total // 2 + 1))
    return (lo + hi) / 2


@torch.no_grad()
def patch_moran(
    sae: SparseAutoencoder,
    held: HeldOut,
    rules: MoranRules,
    n_images: int,
    seed: int,
    block_mb: float = 512,
    device: torch.device | str = "cpu",
) -> MoranAccumulator | None:
    """Moran's I from the cache's patch tokens (`embed` caches made with --patch-tokens), on a
    seeded random sample of `n_images` images (0: all); None when the cache has none."""
    if not held.meta.get("patch_tokens"):
        return None
    reader = PatchReader(Path(held.source.path), held.meta)
    if not is_grid(reader.n_patches):
        return None
    n = held.n_images if n_images <= 0 or n_images >= held.n_images else n_images
    ids = (
        np.arange(held.n_images)
        if n == held.n_images
        else np.sort(np.random.default_rng(seed).choice(held.n_images, size=n, replace=False))
    )
    acc = MoranAccumulator(sae.cfg.d_sae, grid_of(reader.n_patches), rules, device)
    step = block_images(sae.cfg.d_sae, reader.n_patches, block_mb)
    bar = Progress(len(ids), "card: patch Moran's I", unit="img")
    for a in range(0, len(ids), step):
        block = ids[a : a + step]
        z = torch.from_numpy(reader.read(block)).to(device)  # [b, P, d]
        f = sae.encode(z.reshape(-1, z.shape[-1]))
        acc.update(f.view(len(block), reader.n_patches, -1))
        bar.update(len(block))
    bar.close()
    return acc


@torch.no_grad()
def alive_latents(
    sae: SparseAutoencoder, held: HeldOut, block_mb: float = 512, device: torch.device | str = "cpu"
) -> np.ndarray:
    """[F] bool: the latents of `sae` that fire on at least one held-out row (an encode-only pass)."""
    sae = sae.to(device).eval()
    if held.source.d != sae.cfg.d_in:
        raise ValueError(f"--acts {held.source.path} has width {held.source.d} but an SAE reads {sae.cfg.d_in}")
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=device)
    step = block_images(sae.cfg.d_sae, held.tokens_per_image, block_mb) * held.tokens_per_image
    for r0 in range(0, held.source.n_rows, step):
        x = torch.from_numpy(held.source.read(r0, min(held.source.n_rows, r0 + step))).to(device)
        fired |= (sae.encode(x) > 0).any(dim=0)
    return fired.cpu().numpy()
