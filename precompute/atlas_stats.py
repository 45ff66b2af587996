"""Streaming passes over activations that produce the atlas's per-latent numbers.

Pass 1 (every image): exact top-k images, frequency, mean and max activation.
Pass 2 (the first `stats_images` images): a 50-bin histogram of non-zero image scores
on [0, max] and value-band samples (5 equal-width bands of the latent's max × 4 images), both of
which need the max from pass 1.
Memory is bounded by the block (images × tokens × latents), never by N × F.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sae_core.data import ActivationSource
from sae_core import rules
from sae_core.progress import Progress
from sae_core.sae import SparseAutoencoder

from .topk import ScoreRule, empty_topk, finalize_topk, image_scores, merge_topk, merge_topk_entries

N_BINS = 50
N_BANDS = 5
PER_BAND = 4
DENSE_ABOVE = 0.05
"""Above this fraction of active (latent, image) pairs a block is ranked densely."""



@dataclass
class LatentStats:
    """Per-latent results of pass 1 (+ histogram and value bands from pass 2)."""

    topk_values: np.ndarray  # [F, k] float32, decreasing
    topk_ids: np.ndarray  # [F, k] int64 image indices, −1 where fewer than k images are active
    frequency: np.ndarray  # [F] fraction of images with a non-zero score
    mean_activation: np.ndarray  # [F] mean of the non-zero scores
    max_activation: np.ndarray  # [F]
    n_images: int
    histogram: np.ndarray | None = None  # [F, N_BINS] counts of non-zero scores on [0, max]
    band_ids: np.ndarray | None = None  # [F, N_BANDS, PER_BAND] int64, −1 fill
    band_values: np.ndarray | None = None  # [F, N_BANDS, PER_BAND] float32
    stats_images: int = 0


def encode_transposed(sae: SparseAutoencoder, x_rd: Tensor) -> Tensor:
    """Latent activations as [F, rows] (latents contiguous), the layout the top-k wants.

    The SAE's own rule (`sae_core.rules`) in inference mode: element-wise rules (relu,
    jumprelu, batchtopk) run in this layout, in place; topk's per-input competition goes
    through `sae.encode`, where it runs along the contiguous axis."""
    assert not sae.training, "the atlas encodes with the inference rule (sae.eval())"
    if sae.cfg.architecture == "topk":
        return sae.encode(x_rd).T.contiguous()
    x_norm, _ = sae.normalize(x_rd)
    x_c = x_norm - sae.b_dec
    h_sr = torch.addmm(sae.b_enc[:, None], sae.W_enc.T, x_c.T)
    return rules.elementwise(h_sr, sae.cfg.architecture, sae.threshold_s, latent_dim=0, inplace=True)


def block_scores(sae: SparseAutoencoder, source: ActivationSource, tokens_per_image: int, block_images: int,
                 rule: ScoreRule, cls_pos: int | None, n_images: int, device: torch.device,
                 desc: str) -> Iterator[tuple[int, Tensor]]:
    """Yield (first image index, scores [F, b]) over the first `n_images` images, in order."""
    bar = Progress(n_images, desc, unit="img")
    with torch.inference_mode():
        for i0 in range(0, n_images, block_images):
            i1 = min(n_images, i0 + block_images)
            x = torch.from_numpy(source.read(i0 * tokens_per_image, i1 * tokens_per_image)).to(device)
            yield i0, image_scores(encode_transposed(sae, x), tokens_per_image, rule, cls_pos)
            bar.update(i1 - i0)
    bar.close()


def pass_topk(sae: SparseAutoencoder, source: ActivationSource, k: int, tokens_per_image: int,
              block_images: int, rule: ScoreRule = "max", cls_pos: int | None = None,
              device: torch.device | str = "cpu") -> LatentStats:
    device = torch.device(device)
    n_images = source.n_rows // tokens_per_image
    f = sae.cfg.d_sae
    vals, ids = empty_topk(f, k, device)
    vals.fill_(0.0)  # only positive scores rank: a zero floor skips inactive entries at once
    count = torch.zeros(f, dtype=torch.int64, device=device)
    total = torch.zeros(f, dtype=torch.float64, device=device)
    density = 0.0  # of the previous block: picks the sparse or the dense route (same results)
    for i0, s in block_scores(sae, source, tokens_per_image, block_images, rule, cls_pos, n_images, device, "atlas top-k"):
        block_ids = torch.arange(i0, i0 + s.shape[1], device=device)
        if density < DENSE_ABOVE:
            # one scan for the active entries (scores are >= 0); everything else works on them
            rows, cols = s.nonzero(as_tuple=True)
            v = s[rows, cols]
            count += torch.bincount(rows, minlength=f)
            total += torch.bincount(rows, weights=v.double(), minlength=f)
            vals, ids = merge_topk_entries(vals, ids, rows, block_ids[cols], v)
            density = rows.numel() / s.numel()
        else:
            block_count = torch.gt(s, 0, out=torch.empty_like(s)).sum(dim=1)  # float: exact below 2**24
            count += block_count.long()
            total += s.sum(dim=1)
            vals, ids = merge_topk(vals, ids, s, block_ids)
            density = float(block_count.sum()) / s.numel()
    top_vals, top_ids = finalize_topk(vals, ids)
    cnt = count.cpu().numpy()
    return LatentStats(
        topk_values=top_vals.cpu().numpy().astype(np.float32),
        topk_ids=top_ids.cpu().numpy(),
        frequency=(cnt / max(n_images, 1)).astype(np.float32),
        mean_activation=np.where(cnt > 0, total.cpu().numpy() / np.maximum(cnt, 1), 0).astype(np.float32),
        max_activation=top_vals[:, 0].clamp_min(0).cpu().numpy().astype(np.float32),
        n_images=n_images,
    )


def pass_distribution(stats: LatentStats, sae: SparseAutoencoder, source: ActivationSource, tokens_per_image: int,
                      block_images: int, stats_images: int, rule: ScoreRule = "max", cls_pos: int | None = None,
                      device: torch.device | str = "cpu") -> None:
    """Fill `stats.histogram` and the value-band samples from the first `stats_images` images.

    Quantile samples are the first images met in each band (deterministic); only the
    (latent, band) pairs that still need images are looked at."""
    device = torch.device(device)
    f = sae.cfg.d_sae
    n = min(stats.n_images, stats_images)
    inv_peak = (N_BINS / torch.from_numpy(stats.max_activation).to(device).clamp_min(1e-12))[:, None]
    hist = torch.zeros(f * (N_BINS + 1), dtype=torch.int64, device=device)
    q_ids = torch.full((f, N_BANDS, PER_BAND), -1, dtype=torch.int64, device=device)
    q_vals = torch.zeros(f, N_BANDS, PER_BAND, device=device)
    filled = torch.zeros(f, N_BANDS + 1, dtype=torch.int64, device=device)
    filled[:, N_BANDS] = PER_BAND  # the spare band of inactive entries never needs images
    bins_per_band = N_BINS // N_BANDS
    for i0, s in block_scores(sae, source, tokens_per_image, block_images, rule, cls_pos, n, device, "atlas stats"):
        lat, img = s.nonzero(as_tuple=True)  # grouped by latent, images ascending within a latent
        v = s[lat, img]
        bins = (v * inv_peak[lat, 0]).long().clamp_(max=N_BINS - 1)
        hist += torch.bincount(lat * (N_BINS + 1) + bins, minlength=f * (N_BINS + 1))
        if bool((filled >= PER_BAND).all()):
            continue
        bnd = bins // bins_per_band
        need = filled[lat, bnd] < PER_BAND
        lat, img, bnd, v = lat[need], img[need], bnd[need], v[need]
        if not lat.numel():
            continue
        key = lat * (N_BANDS + 1) + bnd
        order = torch.sort(key, stable=True).indices  # stable: images stay ascending within a group
        lat, img, bnd, v, key = lat[order], img[order], bnd[order], v[order], key[order]
        first = torch.ones_like(key, dtype=torch.bool)
        first[1:] = key[1:] != key[:-1]
        idx = torch.arange(key.numel(), device=device)
        group_start = torch.cummax(torch.where(first, idx, torch.zeros_like(idx)), 0).values
        slot = idx - group_start + filled[lat, bnd]
        take = slot < PER_BAND
        lat, img, bnd, v, slot = lat[take], img[take], bnd[take], v[take], slot[take]
        q_ids[lat, bnd, slot] = i0 + img
        q_vals[lat, bnd, slot] = v
        filled.view(-1).scatter_add_(0, lat * (N_BANDS + 1) + bnd, torch.ones_like(lat))
    stats.histogram = hist.view(f, N_BINS + 1)[:, :N_BINS].cpu().numpy()
    stats.band_ids = q_ids.cpu().numpy()
    stats.band_values = q_vals.cpu().numpy()
    stats.stats_images = n
