"""Link two atlases over the same images (`clipsae link ATLAS_A ATLAS_B`): for each latent
of A, the `top` latents of B whose image scores correlate most with it (Pearson, over the
shared images), and the reverse. Typically A is a CLIP atlas and B the Kandinsky-prior
atlas of the same images, so a feature found while browsing can be steered.

Images are matched by id (relative path + content hash); two atlases built from plain
matrices (no image table) are matched by row when they have the same number of rows.
The sums (n, Σa, Σb, Σa², Σb², Σab) stream over blocks of images; the cross term is kept
for a chunk of A's latents at a time, so memory is bounded by `budget_mb`, not by N.
Results go to `links/` inside each atlas: `<other>.ids.npy`, `<other>.corr.npy` [F, top]
and `<other>.json`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sae_core.data import ActivationSource
from sae_core.device import resolve_device
from sae_core.files import atomic_save_npy, atomic_write_text
from sae_core.io import load_sae
from sae_core.progress import Progress

from .atlas_format import read_manifest
from .topk import empty_topk, image_scores, merge_topk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkConfig:
    """One `clipsae link` run."""

    atlas_a: str
    """An atlas (e.g. the CLIP one)."""
    atlas_b: str
    """An atlas of the same images (e.g. the Kandinsky-prior one)."""
    top_links: int = 5
    """Linked latents kept per latent, each way."""
    block_images: int = 4096
    """Images read and encoded at once."""
    budget_mb: float = 1024
    """Memory for the correlation accumulators."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""

    def __post_init__(self) -> None:
        for name in ("top_links", "block_images", "budget_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")


class _AtlasSide:
    def __init__(self, atlas: str | Path, device: torch.device):
        self.path = Path(atlas)
        self.manifest = read_manifest(self.path)
        self.sae = load_sae(self.path / "sae", device=device)
        self.source = ActivationSource(self.manifest["config"]["acts"])
        meta = self.source.metadata
        self.t = int(meta.get("tokens_per_image", 1))
        tokens = meta.get("token_indices", [0])
        self.cls_pos = tokens.index(0) if 0 in tokens else None
        self.rule = self.manifest["config"]["score"]
        images = self.path / "images.jsonl"
        self.ids = [json.loads(line)["id"] for line in images.read_text().splitlines()] if images.exists() else None
        self.n = self.source.n_rows // self.t

    def scores(self, image_indices: np.ndarray) -> torch.Tensor:
        """Image scores [b, F] of the given image indices (contiguous runs read in one go)."""
        parts = []
        start = prev = int(image_indices[0])
        for i in list(image_indices[1:]) + [None]:
            if i is not None and int(i) == prev + 1:
                prev = int(i)
                continue
            parts.append(self.source.read(start * self.t, (prev + 1) * self.t))
            if i is not None:
                start = prev = int(i)
        x = torch.from_numpy(np.concatenate(parts)).to(self.sae.W_enc.device)
        with torch.inference_mode():
            return image_scores(self.sae.encode(x), self.t, self.rule, self.cls_pos).double()


def shared_images(a: _AtlasSide, b: _AtlasSide) -> tuple[np.ndarray, np.ndarray]:
    if a.ids is None and b.ids is None:
        if a.n != b.n:
            raise ValueError(f"atlases without image tables can only be linked row by row: {a.n} vs {b.n} rows")
        idx = np.arange(a.n)
        return idx, idx
    if a.ids is None or b.ids is None:
        raise ValueError("one atlas has an image table and the other not; build both from activation caches")
    pos_b = {iid: j for j, iid in enumerate(b.ids)}
    pairs = [(i, pos_b[iid]) for i, iid in enumerate(a.ids) if iid in pos_b]
    if len(pairs) < 2:
        raise ValueError(f"the atlases share {len(pairs)} images; they must be built from the same images")
    ia, ib = (np.asarray(p) for p in zip(*pairs))
    return ia, ib


def link(atlas_a: str | Path, atlas_b: str | Path, top: int = 5, block_images: int = 4096,
         budget_mb: float = 1024, device: str = "auto") -> dict:
    """Compute and store the links both ways; returns a summary."""
    dev = resolve_device(device)
    a, b = _AtlasSide(atlas_a, dev), _AtlasSide(atlas_b, dev)
    ia, ib = shared_images(a, b)
    fa, fb = a.sae.cfg.d_sae, b.sae.cfg.d_sae
    top_a, top_b = min(top, fb), min(top, fa)
    chunk = max(1, min(fa, int(budget_mb * 2**20) // (8 * fb)))
    ab_ids = np.zeros((fa, top_a), np.int64)
    ab_corr = np.zeros((fa, top_a), np.float32)
    ba_vals, ba_ids = empty_topk(fb, top_b, dev)
    n = len(ia)
    bar = Progress(n * (-(-fa // chunk)), "link", unit="img")
    for c0 in range(0, fa, chunk):
        c1 = min(fa, c0 + chunk)
        sa = torch.zeros(c1 - c0, dtype=torch.float64, device=dev)
        sa2 = torch.zeros_like(sa)
        sb = torch.zeros(fb, dtype=torch.float64, device=dev)
        sb2 = torch.zeros_like(sb)
        sab = torch.zeros(c1 - c0, fb, dtype=torch.float64, device=dev)
        for i0 in range(0, n, block_images):
            xa = a.scores(ia[i0 : i0 + block_images])[:, c0:c1]
            xb = b.scores(ib[i0 : i0 + block_images])
            sa += xa.sum(0)
            sa2 += (xa * xa).sum(0)
            sb += xb.sum(0)
            sb2 += (xb * xb).sum(0)
            sab += xa.T @ xb
            bar.update(len(xa))
        var_a = (n * sa2 - sa * sa).clamp_min(0)
        var_b = (n * sb2 - sb * sb).clamp_min(0)
        denom = (var_a[:, None] * var_b[None, :]).sqrt()
        corr = torch.where(denom > 0, (n * sab - sa[:, None] * sb[None, :]) / denom.clamp_min(1e-300),
                           torch.zeros_like(sab)).float()
        v, j = corr.topk(top_a, dim=1)
        ab_ids[c0:c1], ab_corr[c0:c1] = j.cpu().numpy(), v.cpu().numpy()
        ba_vals, ba_ids = merge_topk(ba_vals, ba_ids, corr.T.contiguous(), torch.arange(c0, c1, device=dev))
    bar.close()
    order = ba_vals.argsort(dim=1, descending=True)
    ba_corr = ba_vals.gather(1, order).cpu().numpy()
    ba_idx = ba_ids.gather(1, order).cpu().numpy()
    _store(a.path, b, ab_ids, ab_corr, n)
    _store(b.path, a, ba_idx, ba_corr, n)
    log.info("linked %s (%d latents) <-> %s (%d latents) over %d shared images", a.path, fa, b.path, fb, n)
    return {"shared_images": n, "a": str(a.path), "b": str(b.path), "top": top}


def _store(atlas: Path, other: _AtlasSide, ids: np.ndarray, corr: np.ndarray, n_shared: int) -> None:
    d = atlas / "links"
    d.mkdir(exist_ok=True)
    name = other.path.resolve().name
    atomic_save_npy(d / f"{name}.ids.npy", ids)
    atomic_save_npy(d / f"{name}.corr.npy", corr)
    atomic_write_text(d / f"{name}.json", json.dumps({
        "other_atlas": str(other.path.resolve()), "other_sae_sha256": other.manifest["sae_sha256"],
        "other_model": other.manifest.get("model_name"), "shared_images": n_shared, "top": int(ids.shape[1]),
        "measure": "Pearson correlation of image scores over the shared images"}, indent=2))
