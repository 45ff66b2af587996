"""Localisation (ViSAEBench's M1): Moran's I of a latent's activations over an image's patch
grid, averaged over the images where the latent counts.

For one latent on one image, x = its activation on each of the P patches (row-major on the
grid), x_c = x − mean(x), W the 8-connected (queen) adjacency of the grid, S = ΣW:

    I = (P / S) · x_cᵀ W x_c / x_cᵀ x_c

I ≈ +1: the active patches form one region; ≈ 0: random placement; < 0: a checkerboard.
The latent counts on an image when it is active (> 0) on at least `min_patches` patches and
on at most ⌊max_patch_fraction · P⌋ of them (a latent on every patch is background, not a
place); it is scored when it counts on at least `min_images` images, and its score is the
mean I over those images (the same rules and weights as the `visaebench` package, tested
equal to it). Only the (image, latent) pairs that count are computed, so a block costs its
activations plus O(pairs · P²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class MoranRules:
    """Which (image, latent) pairs count, and which latents are scored."""

    min_patches: int = 5
    """A latent counts on an image when active on at least this many patches ..."""
    max_patch_fraction: float = 0.9
    """... and on at most this fraction of them (rounded down)."""
    min_images: int = 50
    """A latent is scored when it counts on at least this many images."""

    def max_patches(self, n_patches: int) -> int:
        return int(self.max_patch_fraction * n_patches)


def grid_of(n_patches: int) -> tuple[int, int]:
    """(rows, columns) of a square patch grid, or a ValueError for a count that is not a square."""
    side = math.isqrt(n_patches)
    if side * side != n_patches or side < 2:
        raise ValueError(f"{n_patches} patch tokens do not form a square grid; Moran's I needs the grid")
    return side, side


def is_grid(n_patches: int) -> bool:
    """Whether n patch tokens form a square grid of at least 2 × 2 (Moran's I needs one)."""
    return n_patches >= 4 and math.isqrt(n_patches) ** 2 == n_patches


def queen_weights(rows: int, cols: int) -> np.ndarray:
    """[P, P] float64 binary weights: 1 between patches that touch by a side or a corner."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    w = (np.abs(r[:, None] - r[None, :]) <= 1) & (np.abs(c[:, None] - c[None, :]) <= 1)
    np.fill_diagonal(w, False)
    return w.astype(np.float64)


def morans_i(x_np: Tensor, weights: Tensor) -> Tensor:
    """Moran's I of each row of x [n, P] under weights [P, P] (float64); NaN for a constant row."""
    x = x_np.double()
    xc = x - x.mean(dim=1, keepdim=True)
    num = (xc * (xc @ weights)).sum(dim=1)
    den = (xc * xc).sum(dim=1)
    i = (x.shape[1] / weights.sum()) * num / den
    return torch.where(den > 0, i, torch.full_like(i, float("nan")))


class MoranAccumulator:
    """Streams blocks of patch activations [B, P, F] and keeps, per latent, the sum of I and
    the number of images it counts on (float64 sums: the order of blocks does not matter
    beyond rounding)."""

    def __init__(self, n_latents: int, grid: tuple[int, int], rules: MoranRules, device: torch.device | str = "cpu"):
        self.rules, self.grid = rules, grid
        self.n_patches = grid[0] * grid[1]
        self.weights = torch.from_numpy(queen_weights(*grid)).to(device)
        self.total = torch.zeros(n_latents, dtype=torch.float64, device=device)
        self.count = torch.zeros(n_latents, dtype=torch.int64, device=device)
        self.n_images = 0

    @torch.no_grad()
    def update(self, z_bpf: Tensor) -> None:
        """Add a block of images: z [B, P, F], each image's patches in grid order."""
        if z_bpf.shape[1] != self.n_patches:
            raise ValueError(f"{z_bpf.shape[1]} patches per image, but the grid is {self.grid}")
        active = (z_bpf > 0).sum(dim=1)  # [B, F]
        valid = (active >= self.rules.min_patches) & (active <= self.rules.max_patches(self.n_patches))
        b, s = valid.nonzero(as_tuple=True)
        self.n_images += z_bpf.shape[0]
        if b.numel() == 0:
            return
        i = morans_i(z_bpf[b, :, s], self.weights)
        ok = ~torch.isnan(i)
        self.total.index_add_(0, s[ok], i[ok])
        self.count.index_add_(0, s[ok], torch.ones_like(s[ok]))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(per-latent mean Moran's I [F] float64, NaN where not scored; images counted [F] int64)."""
        count = self.count.cpu().numpy()
        total = self.total.cpu().numpy()
        score = np.full(count.shape, np.nan)
        keep = count >= max(self.rules.min_images, 1)
        score[keep] = total[keep] / count[keep]
        return score, count
