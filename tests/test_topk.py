"""The pure top-k functions: ragged per-row top-k with ties to the smaller id, the k-th value
of grouped entries, and the running top-k's tie rule across merges (what makes per-rank
results combine bit for bit)."""

import numpy as np
import pytest
import torch

from precompute.topk import empty_topk, finalize_topk, grouped_kth, merge_topk, segment_topk


def brute(rows, ids, vals, n_rows, k):
    out_i = np.full((n_rows, k), -1)
    out_v = np.full((n_rows, k), -np.inf)
    for r in range(n_rows):
        sel = np.flatnonzero(rows == r)
        order = sel[np.lexsort((ids[sel], -vals[sel]))][:k]
        out_i[r, : len(order)], out_v[r, : len(order)] = ids[order], vals[order]
    return out_i, out_v


@pytest.mark.parametrize(
    "seed, n_rows, n, k, levels", [(0, 7, 60, 3, 4), (1, 40, 2000, 5, 1000), (2, 3, 500, 4, 3), (3, 50, 30, 5, 10)]
)
def test_segment_topk_equals_brute_force_with_ties(seed, n_rows, n, k, levels):
    """Values drawn from few levels (many exact ties), entries shuffled, one long row."""
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.integers(0, n_rows, n), np.zeros(n, dtype=np.int64)])  # row 0 is long
    ids = rng.permutation(10 * len(rows))[: len(rows)]
    vals = rng.integers(0, levels, len(rows)).astype(np.float64) / levels
    payload = ids * 3 + 1
    v, i, p = segment_topk(
        torch.from_numpy(rows),
        torch.from_numpy(ids),
        torch.from_numpy(vals),
        n_rows,
        k,
        payload=torch.from_numpy(payload),
    )
    want_i, want_v = brute(rows, ids, vals, n_rows, k)
    np.testing.assert_array_equal(i.numpy(), want_i)
    np.testing.assert_array_equal(v.numpy(), want_v)
    np.testing.assert_array_equal(p.numpy(), np.where(want_i >= 0, want_i * 3 + 1, 0))


def test_grouped_kth_on_skewed_groups():
    """Group lengths from 0 to 5000 (the bucketed layout) and uniform ones (one padded matrix)."""
    rng = np.random.default_rng(4)
    for lengths in ([0, 1, 3, 7, 5000, 40, 2, 900], [30] * 50):
        groups = np.repeat(np.arange(len(lengths)), lengths)
        vals = rng.normal(size=len(groups))
        kth = grouped_kth(torch.from_numpy(groups), torch.from_numpy(vals), len(lengths), 4).numpy()
        for g, length in enumerate(lengths):
            want = np.sort(vals[groups == g])[::-1][3] if length >= 4 else -np.inf
            assert kth[g] == want


def test_merging_ranks_in_order_breaks_ties_like_one_pass():
    """Equal scores on several images: one pass over all images and two halves merged keep the
    same (smallest) image ids."""
    scores = torch.tensor([[1.0, 2.0, 2.0, 0.5, 2.0, 2.0, 1.0, 0.0]])  # latent 0 over 8 images
    ids = torch.arange(8)
    whole = finalize_topk(*merge_topk(*empty_topk(1, 3), scores, ids))
    left = merge_topk(*empty_topk(1, 3), scores[:, :4], ids[:4])
    right = merge_topk(*empty_topk(1, 3), scores[:, 4:], ids[4:])
    merged = finalize_topk(*merge_topk(*left, *right))
    assert whole[1].tolist() == merged[1].tolist() == [[1, 2, 4]]
