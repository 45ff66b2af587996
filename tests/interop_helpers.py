"""Shared checks of the interop tests: codes and reconstructions agree to < 1e-4, TopK index
sets are identical, with the reference library's own near-ties left out (a float rounding
there may flip a selection on another BLAS; the tests assert that almost no row is left out)."""

from __future__ import annotations

import torch

TOL = 1e-4
MARGIN = 1e-4


def inputs(d: int, n: int = 96, seed: int = 7, scale: float = 1.5) -> torch.Tensor:
    """Activations with a mean offset and varied norms (float32, like a cache)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * scale + 0.3
    return x * torch.rand(n, 1, generator=g).add(0.5)


def randomize(module: torch.nn.Module, seed: int, d_in: int) -> None:
    """Random weights of a sensible size for every float parameter (codes of order 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not p.dtype.is_floating_point:
                continue
            values = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if p.dim() == 2:
                values /= d_in**0.5
            elif "threshold" in name:
                values = values.abs() * 0.3
            else:
                values *= 0.1
            p.copy_(values.to(p.dtype))


def assert_codes_close(
    ours: torch.Tensor,
    ref: torch.Tensor,
    pre: torch.Tensor | None = None,
    theta: torch.Tensor | None = None,
    k: int | None = None,
) -> None:
    """Codes agree to TOL; near a jump (|pre − θ| < MARGIN) or a top-k tie the entry is skipped."""
    ours, ref = ours.double(), ref.double()
    keep = torch.ones_like(ref, dtype=torch.bool)
    if pre is not None and theta is not None:
        keep &= (pre.double() - theta.double()).abs() > MARGIN
    if k is not None:
        assert pre is not None
        top = pre.double().topk(k + 1, dim=-1).values
        clear = (top[:, k - 1] - top[:, k]) > MARGIN
        assert clear.float().mean() > 0.9, "too many near-ties to test on"
        keep &= clear[:, None]
        same = (ours[clear] != 0) == (ref[clear] != 0)
        assert bool(same.all()), "top-k index sets differ"
    assert keep.float().mean() > 0.9
    diff = (ours - ref).abs()[keep]
    assert float(diff.max()) < TOL, f"codes differ by {float(diff.max()):.3g}"


def assert_close(
    ours: torch.Tensor, ref: torch.Tensor, what: str = "reconstructions", rows: torch.Tensor | None = None
) -> None:
    diff = (ours.double() - ref.double()).abs()
    if rows is not None:
        diff = diff[rows]
    assert float(diff.max()) < TOL, f"{what} differ by {float(diff.max()):.3g}"


def clear_rows(pre: torch.Tensor, theta: torch.Tensor | None = None, k: int | None = None) -> torch.Tensor:
    """Rows without a near-jump or near-tie in the reference (for comparing reconstructions)."""
    ok = torch.ones(pre.shape[0], dtype=torch.bool)
    if theta is not None:
        ok &= ((pre.double() - theta.double()).abs() > MARGIN).all(dim=1)
    if k is not None:
        top = pre.double().topk(k + 1, dim=-1).values
        ok &= (top[:, k - 1] - top[:, k]) > MARGIN
    assert ok.float().mean() > 0.5
    return ok
