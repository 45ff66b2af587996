"""Monosemanticity score (Pach et al. 2025, sae-for-vlm; ViSAEBench's M5 over every image):
for a latent, the activation-weighted mean pairwise cosine of the images it fires on, under
another encoder's embeddings.

    a_n  = the latent's score on image n, min-max normalised over the N images
    p_n  = the evaluator's embedding of image n, L2-normalised
    MS   = Σ_{n≠m} a_n a_m p_n·p_m / Σ_{n≠m} a_n a_m

MonoLoss's exact linear-time form: with V = Σ_n a_n p_n,
Σ_{n≠m} a_n a_m p_n·p_m = ‖V‖² − Σ a_n² and Σ_{n≠m} a_n a_m = (Σa)² − Σa², so

    MS = ½(‖V‖² − Σa²) / ½((Σa)² − Σa²)

Here V comes from the sparse image codes (only the images a latent fires on carry
work): with m, M the latent's smallest and largest score, a_n = (x_n − m)/(M − m) and
V = (Σ x_n p_n − m Σ p_n)/(M − m), Σa and Σa² likewise from Σx and Σx². Undefined (NaN) when the
denominator is 0: a latent that is dead, or fires on one image only. Latents go in chunks
(memory: chunk × evaluator width), sums in float64.

The baseline is the MS of a latent equal on every image, (‖Σp‖² − N)/(N² − N): the mean
similarity of two random images under this evaluator (what "monosemantic" is measured from).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from sae_core.progress import Progress

CHUNK = 4096
"""Latents per chunk (a [CHUNK, E] float64 block)."""


def monosemanticity(codes: sp.csr_matrix | sp.csc_matrix, embeddings: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """MS of every latent [F] float64 from image scores `codes` [N, F] (non-negative, sparse)
    and unit evaluator embeddings [N, E]; NaN where undefined."""
    csc = sp.csc_matrix(codes, dtype=np.float64)
    n, f = csc.shape
    if embeddings.shape[0] != n:
        raise ValueError(f"{embeddings.shape[0]} evaluator embeddings for {n} images")
    p_sum = embeddings.sum(axis=0, dtype=np.float64)
    counts = np.diff(csc.indptr)
    s1 = np.asarray(csc.sum(axis=0), dtype=np.float64).ravel()
    s2 = np.asarray(csc.multiply(csc).sum(axis=0), dtype=np.float64).ravel()
    top, low = np.zeros(f), np.zeros(f)
    has = counts > 0
    if has.any():
        starts = csc.indptr[:-1][has]
        col_max, col_min = np.maximum.reduceat(csc.data, starts), np.minimum.reduceat(csc.data, starts)
        # an image where the latent does not fire scores 0: it takes part in the min and the max
        full = counts[has] == n
        top[has] = np.where(full, col_max, np.maximum(col_max, 0.0))
        low[has] = np.where(full, col_min, np.minimum(col_min, 0.0))
    span = top - low
    ms = np.full(f, np.nan)
    bar = Progress(f, "monosemanticity", unit="latents")
    for a in range(0, f, chunk):
        b = min(f, a + chunk)
        w = np.asarray(csc[:, a:b].T @ embeddings, dtype=np.float64)  # Σ x_n p_n [c, E]
        ok = span[a:b] > 0
        scale = np.where(ok, span[a:b], 1.0)
        v = (w - low[a:b, None] * p_sum[None, :]) / scale[:, None]
        sa = (s1[a:b] - n * low[a:b]) / scale
        sa2 = (s2[a:b] - 2 * low[a:b] * s1[a:b] + n * low[a:b] ** 2) / scale**2
        num = (v * v).sum(axis=1) - sa2
        den = sa * sa - sa2
        good = ok & (den > 1e-12 * np.maximum(sa * sa, 1e-300))
        ms[a:b][good] = num[good] / den[good]
        bar.update(b - a)
    bar.close()
    return ms


def baseline(embeddings: np.ndarray) -> float:
    """Mean cosine of two distinct images: the MS of a latent equal on every image."""
    n = embeddings.shape[0]
    if n < 2:
        return float("nan")
    s = embeddings.sum(axis=0, dtype=np.float64)
    sq = float((embeddings.astype(np.float64) ** 2).sum())
    return float((s @ s - sq) / (n * n - n))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)
