"""The atlas's per-latent numbers, in two passes that merge across blocks and ranks.

Pass 1 (`pass_topk`, every image of a rank's range, SAE encoded blockwise): exact top-k
images and the sparse codes (every non-zero image score, streamed to disk by a
`CodesWriter`). Rank results merge associatively (`merge_topk_states`). Frequency and mean
are counted from the finished codes (`latent_sums`), in one fixed order.
Pass 2 (`pass_distribution`, over the codes, no encoding): a 50-bin histogram of non-zero
scores on [0, max] and value-band samples (4 images from each of 5 equal-width bands of
(0, max]), over the images of a seeded random sample (`stats_sample`; all images by
default). The band samples are the band's images of smallest random priority: a uniform
random choice that merges across ranks exactly (`merge_distribution`).
Memory is bounded by the block (images × tokens × latents), never by N × F.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sae_core.data import ActivationSource
from sae_core.progress import Progress
from sae_core.sae import SparseAutoencoder

from .codes import BYTES_PER_ENTRY, CodesPart, CodesWriter
from .topk import ScoreRule, empty_topk, finalize_topk, image_scores, merge_topk, merge_topk_entries, segment_topk

N_BINS = 50
N_BANDS = 5
PER_BAND = 4
DENSE_ABOVE = 0.05
"""Above this fraction of active (latent, image) pairs a block's top-k is merged densely."""
ENTRIES_PER_STEP = 1 << 22
"""Code entries handled at once in pass 2."""


@dataclass
class LatentStats:
    """Per-latent results (numpy, as written to the atlas)."""

    topk_values: np.ndarray  # [F, k] float32, decreasing
    topk_ids: np.ndarray  # [F, k] int64 image indices, −1 where fewer than k images are active
    frequency: np.ndarray  # [F] float32 fraction of images with a non-zero score
    mean_activation: np.ndarray  # [F] float32 mean of the non-zero scores
    max_activation: np.ndarray  # [F] float32
    n_images: int
    histogram: np.ndarray | None = None  # [F, N_BINS] int64 counts of non-zero scores on [0, max]
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
    return sae.elementwise_codes(x_rd, latent_major=True)


def block_scores(
    sae: SparseAutoencoder,
    source: ActivationSource,
    tokens_per_image: int,
    block_images: int,
    rule: ScoreRule,
    cls_pos: int | None,
    lo: int,
    hi: int,
    device: torch.device,
    desc: str,
) -> Iterator[tuple[int, Tensor]]:
    """Yield (first image index, scores [F, b]) over images [lo, hi), in order."""
    bar = Progress(hi - lo, desc, unit="img")
    with torch.inference_mode():
        for i0 in range(lo, hi, block_images):
            i1 = min(hi, i0 + block_images)
            x = torch.from_numpy(source.read(i0 * tokens_per_image, i1 * tokens_per_image)).to(device)
            yield i0, image_scores(encode_transposed(sae, x), tokens_per_image, rule, cls_pos)
            bar.update(i1 - i0)
    bar.close()


def check_codes_size(density: float, n_images: int, n_latents: int, max_gb: float) -> None:
    """Refuse, before writing much, an SAE so dense that its codes would exceed `max_gb`."""
    gb = density * n_images * n_latents * BYTES_PER_ENTRY / 2**30
    if gb > max_gb:
        raise ValueError(
            f"this SAE fires on {density:.1%} of (latent, image) pairs: its sparse codes would take "
            f"~{gb:.1f} GB (limit --max-codes-gb {max_gb:g}); train a sparser SAE or raise the limit"
        )


def pass_topk(
    sae: SparseAutoencoder,
    source: ActivationSource,
    k: int,
    tokens_per_image: int,
    block_images: int,
    rule: ScoreRule = "max",
    cls_pos: int | None = None,
    device: torch.device | str = "cpu",
    lo: int = 0,
    hi: int | None = None,
    codes: CodesWriter | None = None,
    max_codes_gb: float = float("inf"),
) -> tuple[Tensor, Tensor]:
    """Pass 1 over images [lo, hi) (default: all): the running top-k (values, ids) [F, k] of
    non-zero scores, and every non-zero score streamed to `codes`."""
    device = torch.device(device)
    n_all = source.n_rows // tokens_per_image
    hi = n_all if hi is None else hi
    f = sae.cfg.d_sae
    vals, ids = empty_topk(f, k, device)
    vals.fill_(0.0)  # only positive scores rank: a zero floor skips inactive entries at once
    first = True
    for i0, s in block_scores(
        sae, source, tokens_per_image, block_images, rule, cls_pos, lo, hi, device, "atlas top-k"
    ):
        rows, cols = s.nonzero(as_tuple=True)  # latent-major, images ascending within a latent
        v = s[rows, cols]
        density = rows.numel() / max(s.numel(), 1)
        if first:
            check_codes_size(density, n_all, f, max_codes_gb)
            first = False
        block_ids = torch.arange(i0, i0 + s.shape[1], device=device)
        if density < DENSE_ABOVE:
            vals, ids = merge_topk_entries(vals, ids, rows, block_ids[cols], v)
        else:
            vals, ids = merge_topk(vals, ids, s, block_ids)
        if codes is not None:
            order = torch.sort(cols, stable=True).indices  # image-major, latents ascending within an image
            codes.add(i0, s.shape[1], cols[order].cpu().numpy(), rows[order].cpu().numpy(), v[order].cpu().numpy())
    return vals, ids


class _ScoreSums:
    """A codes sink that keeps only the per-latent count and sum of the non-zero scores."""

    def __init__(self, n_latents: int):
        self.count = np.zeros(n_latents, dtype=np.int64)
        self.total = np.zeros(n_latents, dtype=np.float64)

    def add(self, i0: int, n: int, images: np.ndarray, latents: np.ndarray, values: np.ndarray) -> None:
        self.count += np.bincount(latents, minlength=len(self.count))
        self.total += np.bincount(latents, weights=values.astype(np.float64), minlength=len(self.total))


def score_stats(
    sae: SparseAutoencoder,
    source: ActivationSource,
    k: int,
    tokens_per_image: int,
    block_images: int,
    rule: ScoreRule = "max",
    cls_pos: int | None = None,
    device: torch.device | str = "cpu",
) -> LatentStats:
    """Top-k, frequency, mean and max of every latent over every image of `source`, in one pass
    and without writing codes (held-out statistics: `clipsae eval latents --acts`)."""
    sums = _ScoreSums(sae.cfg.d_sae)
    vals, ids = pass_topk(sae, source, k, tokens_per_image, block_images, rule, cls_pos, device, codes=sums)  # type: ignore[arg-type]
    return finish_stats(vals, ids, sums.count, sums.total, source.n_rows // tokens_per_image)


def merge_topk_states(states: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Combine rank results given in rank order (ranks hold ascending image ranges)."""
    vals, ids = states[0]
    for v, i in states[1:]:
        vals, ids = merge_topk(vals, ids, v, i)
    return vals, ids


def latent_sums(
    latents: np.ndarray, values: np.ndarray, n_latents: int, window: int = ENTRIES_PER_STEP
) -> tuple[np.ndarray, np.ndarray]:
    """(count [F] int64, sum [F] float64) of the non-zero scores over all codes, summed in
    fixed windows of the entry stream: the same bits however many ranks built the codes."""
    count = np.zeros(n_latents, dtype=np.int64)
    total = np.zeros(n_latents, dtype=np.float64)
    for e0 in range(0, len(latents), window):
        lat = np.asarray(latents[e0 : e0 + window])
        count += np.bincount(lat, minlength=n_latents)
        total += np.bincount(lat, weights=np.asarray(values[e0 : e0 + window], dtype=np.float64), minlength=n_latents)
    return count, total


def finish_stats(vals: Tensor, ids: Tensor, count: np.ndarray, total: np.ndarray, n_images: int) -> LatentStats:
    """Top-k, frequency, mean and max of every latent."""
    top_vals, top_ids = finalize_topk(vals, ids)
    return LatentStats(
        topk_values=top_vals.cpu().numpy().astype(np.float32),
        topk_ids=top_ids.cpu().numpy(),
        frequency=(count / max(n_images, 1)).astype(np.float32),
        mean_activation=np.where(count > 0, total / np.maximum(count, 1), 0).astype(np.float32),
        max_activation=top_vals[:, 0].clamp_min(0).cpu().numpy().astype(np.float32),
        n_images=n_images,
    )


def stats_sample(n_images: int, stats_images: int, seed: int) -> tuple[np.ndarray | None, np.ndarray]:
    """(in_sample [N] bool or None for every image, priority [N] int64): the images behind
    histograms and bands — `stats_images` of them drawn at random across the whole dataset
    (0: all) — and a random order of all images that picks each band's samples. Both are a
    pure function of (N, stats_images, seed): every rank draws the same."""
    rng = np.random.default_rng([seed, 0x57A75])
    priority = rng.permutation(n_images).astype(np.int64)
    if stats_images <= 0 or stats_images >= n_images:
        return None, priority
    in_sample = np.zeros(n_images, dtype=bool)
    in_sample[rng.choice(n_images, size=stats_images, replace=False)] = True
    return in_sample, priority


@dataclass
class Distribution:
    """Pass-2 state: histogram counts and the running band samples (mergeable)."""

    histogram: Tensor  # [F, N_BINS] int64
    band_priority: Tensor  # [F·N_BANDS, PER_BAND] −priority (larger is chosen), −inf fill
    band_ids: Tensor  # [F·N_BANDS, PER_BAND] int64, −1 fill
    band_values: Tensor  # [F·N_BANDS, PER_BAND] float32


def empty_distribution(n_latents: int, device: torch.device | str = "cpu") -> Distribution:
    g = n_latents * N_BANDS
    return Distribution(
        torch.zeros(n_latents, N_BINS, dtype=torch.int64, device=device),
        torch.full((g, PER_BAND), float("-inf"), dtype=torch.float64, device=device),
        torch.full((g, PER_BAND), -1, dtype=torch.int64, device=device),
        torch.zeros(g, PER_BAND, dtype=torch.float32, device=device),
    )


def _merge_bands(d: Distribution, groups: Tensor, ids: Tensor, prio: Tensor, vals: Tensor) -> None:
    have = d.band_ids >= 0
    g_run = torch.arange(d.band_ids.shape[0], device=ids.device)[:, None].expand_as(d.band_ids)[have]
    d.band_priority, d.band_ids, d.band_values = segment_topk(
        torch.cat([g_run, groups]),
        torch.cat([d.band_ids[have], ids]),
        torch.cat([d.band_priority[have], prio]),
        d.band_ids.shape[0],
        PER_BAND,
        payload=torch.cat([d.band_values[have], vals]),
    )


def pass_distribution(
    part: CodesPart,
    max_activation: np.ndarray,
    in_sample: np.ndarray | None,
    priority: np.ndarray,
    device: torch.device | str = "cpu",
) -> Distribution:
    """Histogram and band samples of one codes part (its images in the sample)."""
    device = torch.device(device)
    f = len(max_activation)
    d = empty_distribution(f, device)
    inv_peak = N_BINS / torch.from_numpy(max_activation).to(device).clamp_min(1e-12)
    bins_per_band = N_BINS // N_BANDS
    avg = max(1, int(part.indptr[-1]) // max(part.n_images, 1))
    step = max(1, ENTRIES_PER_STEP // avg)
    bar = Progress(part.n_images, "atlas stats", unit="img")
    for i0 in range(0, part.n_images, step):
        i1 = min(part.n_images, i0 + step)
        e0, e1 = int(part.indptr[i0]), int(part.indptr[i1])
        img = np.repeat(np.arange(part.lo + i0, part.lo + i1, dtype=np.int64), np.diff(part.indptr[i0 : i1 + 1]))
        keep = in_sample[img] if in_sample is not None else slice(None)
        img_t = torch.from_numpy(img[keep]).to(device)
        lat = torch.from_numpy(np.array(part.latents[e0:e1][keep], dtype=np.int64)).to(device)
        v = torch.from_numpy(np.array(part.values[e0:e1][keep], dtype=np.float32)).to(device)
        bins = (v * inv_peak[lat]).long().clamp_(max=N_BINS - 1)
        d.histogram.view(-1).add_(torch.bincount(lat * N_BINS + bins, minlength=f * N_BINS))
        groups = lat * N_BANDS + bins // bins_per_band
        prio = -torch.from_numpy(priority[img[keep]]).to(device).double()
        better = prio > d.band_priority[groups, -1]  # only entries that beat a band's current 4th sample
        _merge_bands(d, groups[better], img_t[better], prio[better], v[better])
        bar.update(i1 - i0)
    bar.close()
    return d


def merge_distribution(parts: list[Distribution]) -> Distribution:
    """Sum the histograms and keep each band's samples of smallest priority (any order)."""
    d = Distribution(parts[0].histogram.clone(), parts[0].band_priority, parts[0].band_ids, parts[0].band_values)
    for p in parts[1:]:
        d.histogram += p.histogram
        have = p.band_ids >= 0
        groups = torch.arange(p.band_ids.shape[0], device=p.band_ids.device)[:, None].expand_as(p.band_ids)[have]
        _merge_bands(d, groups, p.band_ids[have], p.band_priority[have], p.band_values[have])
    return d


def finish_distribution(stats: LatentStats, d: Distribution, stats_images: int) -> None:
    """Store the histogram and the bands (each band's samples by increasing value)."""
    f = stats.topk_ids.shape[0]
    vals = d.band_values.view(f, N_BANDS, PER_BAND)
    ids = d.band_ids.view(f, N_BANDS, PER_BAND)
    key = torch.where(ids >= 0, vals.double(), torch.full_like(vals, float("inf"), dtype=torch.float64))
    order = key.argsort(dim=2, stable=True)
    stats.histogram = d.histogram.cpu().numpy()
    stats.band_ids = ids.gather(2, order).cpu().numpy()
    stats.band_values = vals.gather(2, order).cpu().numpy()
    stats.stats_images = stats_images
