"""Patch masks: how strongly each latent fires on each patch of its top images.

Patch tokens come from the cache: for `embed` caches, the patch tokens mapped into the
embedding space (`--patch-tokens`); for token caches, the spatial token rows. The value
of a patch is the SAE's element-wise rule applied to the latent's pre-activation on that
patch (`SparseAutoencoder.elementwise_codes`): exact for relu, jumprelu and batchtopk (whose
inference rule is the threshold the atlas scores use too); for topk it is relu(h), the
latent's drive (the top-k competes over every latent of a patch, which a mask of one
latent does not compute).
Stored compactly as float16 [F, k, P] with one scale per latent (its max over the k
masks), so a latent's images share one colour scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sae_core.progress import Progress
from sae_core.sae import SparseAutoencoder


class PatchReader:
    """Random access to the patch tokens [n, P, d] of images by global image index."""

    def __init__(self, cache: Path, meta: dict):
        self.arrays: list[np.ndarray] = []
        starts = [0]
        t = meta["tokens_per_image"]
        token_indices = meta["token_indices"]
        if meta.get("patch_tokens"):
            for s in meta["shards"]:
                self.arrays.append(np.load(cache / s["patches"], mmap_mode="r"))
                starts.append(starts[-1] + s["images"])
            self.spatial: list[int] | None = None
        else:
            spatial = [pos for pos, tok in enumerate(token_indices) if tok >= 1]
            if not spatial:
                raise ValueError("the cache holds no patch tokens (embed without --patch-tokens, or --tokens cls)")
            for s in meta["shards"]:
                a = np.load(cache / s["file"], mmap_mode="r")
                self.arrays.append(a.reshape(-1, t, a.shape[1]))
                starts.append(starts[-1] + s["images"])
            self.spatial = spatial
        self.starts = np.asarray(starts)
        first = self.arrays[0]
        self.n_patches = first.shape[1] if self.spatial is None else len(self.spatial)

    def read(self, image_ids: np.ndarray) -> np.ndarray:
        """[len(ids), P, d] float32."""
        out = []
        for i in image_ids:
            s = int(np.searchsorted(self.starts, i, side="right") - 1)
            block = self.arrays[s][i - self.starts[s]]
            out.append(block if self.spatial is None else block[self.spatial])
        return np.stack(out).astype(np.float32)


@torch.inference_mode()
def patch_masks(
    sae: SparseAutoencoder,
    reader: PatchReader,
    topk_ids: np.ndarray,
    chunk: int = 64,
    device: torch.device | str = "cpu",
    first_latent: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Masks [F, k, P] float16 (0 where a slot has no image) and the per-latent scale [F] of the
    latents `first_latent` .. `first_latent + len(topk_ids)` (a rank's share, or all)."""
    device = torch.device(device)
    n_latents, k = topk_ids.shape
    masks = np.zeros((n_latents, k, reader.n_patches), dtype=np.float16)
    scale = np.zeros(n_latents, dtype=np.float32)
    bar = Progress(n_latents, "atlas masks", unit="latent")
    for l0 in range(0, n_latents, chunk):
        l1 = min(n_latents, l0 + chunk)
        ids = topk_ids[l0:l1]
        valid = ids >= 0
        if valid.any():
            uniq, inverse = np.unique(ids[valid], return_inverse=True)
            patches = torch.from_numpy(reader.read(uniq)).to(device)  # [u, P, d]
            u, p, d = patches.shape
            pos = np.zeros(ids.shape, dtype=np.int64)
            pos[valid] = inverse
            g0, g1 = first_latent + l0, first_latent + l1
            # every chunk latent on every patch of the chunk's images, then each latent's own images
            v_cup = sae.elementwise_codes(patches.reshape(u * p, d), slice(g0, g1), latent_major=True).view(
                l1 - l0, u, p
            )
            vals = v_cup[torch.arange(l1 - l0, device=device)[:, None], torch.from_numpy(pos).to(device)]  # [C, k, P]
            vals = vals * torch.from_numpy(valid).to(device)[..., None]
            masks[l0:l1] = vals.cpu().numpy().astype(np.float16)
            scale[l0:l1] = vals.flatten(1).amax(dim=1).cpu().numpy()
        bar.update(l1 - l0)
    bar.close()
    return masks, scale
