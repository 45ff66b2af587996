"""Link two atlases over the same images (`clipsae link ATLAS_A ATLAS_B`, or under torchrun):
for each latent of A, the `top_links` latents of B whose image scores correlate most with
it (Pearson, over the shared images), and the reverse. Typically A is a CLIP atlas and B
the Kandinsky-prior atlas of the same images, so a feature found while browsing can be
steered.

    clipsae link atlas/ katlas/
    torchrun --nproc_per_node=2 -m precompute.link atlas/ katlas/     # ranks share A's latents

Everything comes from the two atlas folders (their sparse codes and image tables): no
activation cache is reopened and no SAE re-encodes anything. Images are matched by id
(relative path + content hash); two atlases built from plain matrices are matched by row
when they have the same number of rows. The correlations are exact (precompute/
coactivation.py), computed a chunk of A's latents at a time within `budget_mb`.
Results go to `links/` inside each atlas, named by the other atlas's SAE hash:
`<sha256>.ids.npy`, `<sha256>.corr.npy` [F, top] (−1 / 0 where a latent has fewer
defined correlations) and `<sha256>.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_core.device import resolve_device
from sae_core.files import atomic_save_npy, atomic_write_text
from sae_core.progress import Progress

from .atlas_format import read_manifest
from .codes import Codes
from .configs import LinkConfig
from .coactivation import BYTES_PER_PAIR, Backend, Side, chunk_links, chunks, make_side, merge_links, pair_counts
from .ranks import Ranks, ranks_from_env

log = logging.getLogger(__name__)
LINKS_DIR = "links"


class AtlasSide:
    """One atlas as `link` sees it: manifest, image ids and codes (no cache, no SAE)."""

    def __init__(self, atlas: str | Path):
        self.path = Path(atlas)
        self.manifest = read_manifest(self.path)
        self.codes = Codes(self.path)
        self.n = int(self.manifest["n_images"])
        self.n_latents = int(self.manifest["d_sae"])
        images = self.path / "images.jsonl"
        self.ids = [json.loads(line)["id"] for line in images.read_text().splitlines()] if images.exists() else None

    @property
    def identity(self) -> str:
        return self.manifest["sae_sha256"]


def shared_images(a: AtlasSide, b: AtlasSide) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the images both atlases hold, in A's order: (in A, in B)."""
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


def _gather_rows(ranks: Ranks, rows: torch.Tensor, n_total: int) -> torch.Tensor:
    """Every rank's consecutive rows (shares of `ranks.split`), joined in rank order."""
    width = -(-n_total // ranks.world)
    padded = torch.zeros((width, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: len(rows)] = rows
    parts = ranks.all_gather(padded)
    return torch.cat(
        [p[: hi - lo] for p, (lo, hi) in zip(parts, (ranks.split(n_total, r) for r in range(ranks.world)))]
    )


def correlate(
    a: Side, b: Side, n: int, top_ab: int, top_ba: int, budget_mb: float, ranks: Ranks, backend: Backend = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A→B values [F_A, top], ids, B→A values [F_B, top], ids), every rank taking a share of A's latents."""
    at = a.csr.T.tocsr()  # [F_A, n]: each latent of A over the images
    lo, hi = ranks.split(a.n_latents)
    counts = pair_counts(at, b)
    plan = chunks(counts, lo, hi, max(1, int(budget_mb * 2**20) // BYTES_PER_PAIR))
    dev = ranks.device
    ab_v = torch.full((hi - lo, top_ab), float("-inf"), dtype=torch.float64, device=dev)
    ab_i = torch.full((hi - lo, top_ab), -1, dtype=torch.int64, device=dev)
    ba = (
        torch.full((b.n_latents, top_ba), float("-inf"), dtype=torch.float64, device=dev),
        torch.full((b.n_latents, top_ba), -1, dtype=torch.int64, device=dev),
    )
    bar = Progress(int(counts[lo:hi].sum()), "link", unit="pair")
    for a0, a1 in plan:
        v, i, bv, bi = chunk_links(n, a, b, at[a0:a1], (a0, a1), top_ab, top_ba, dev, backend)
        ab_v[a0 - lo : a1 - lo], ab_i[a0 - lo : a1 - lo] = v, i
        ba = merge_links([ba, (bv, bi)], top_ba)
        bar.update(int(counts[a0:a1].sum()))
    bar.close()
    ab_v, ab_i = _gather_rows(ranks, ab_v, a.n_latents), _gather_rows(ranks, ab_i, a.n_latents)
    ba = merge_links(list(zip(ranks.all_gather(ba[0]), ranks.all_gather(ba[1]))), top_ba)
    return ab_v, ab_i, ba[0], ba[1]


def link(
    atlas_a: str | Path,
    atlas_b: str | Path,
    top: int = 5,
    budget_mb: float = 1024,
    device: str = "auto",
    ranks: Ranks | None = None,
    backend: Backend = "auto",
) -> dict[str, Any] | None:
    """Compute and store the links both ways; returns a summary (None on ranks other than 0)."""
    ranks = ranks or Ranks(device=resolve_device(device))
    a, b = AtlasSide(atlas_a), AtlasSide(atlas_b)
    ia, ib = shared_images(a, b)
    n = len(ia)
    side_a = make_side(a.codes.csr(a.n_latents, ia), ranks.device)
    side_b = make_side(b.codes.csr(b.n_latents, ib), ranks.device)
    top_ab, top_ba = min(top, b.n_latents), min(top, a.n_latents)
    ab_v, ab_i, ba_v, ba_i = correlate(side_a, side_b, n, top_ab, top_ba, budget_mb, ranks, backend)
    if not ranks.main:
        return None
    _store(a.path, b, ab_i, ab_v, n)
    _store(b.path, a, ba_i, ba_v, n)
    log.info(
        "linked %s (%d latents) <-> %s (%d latents) over %d shared images", a.path, a.n_latents, b.path, b.n_latents, n
    )
    return {"shared_images": n, "a": str(a.path), "b": str(b.path), "top": top}


def _store(atlas: Path, other: AtlasSide, ids: torch.Tensor, corr: torch.Tensor, n_shared: int) -> None:
    """links/<other's SAE hash>.{ids,corr}.npy, then the .json that makes them visible."""
    d = atlas / LINKS_DIR
    d.mkdir(exist_ok=True)
    ids_np = ids.cpu().numpy()
    corr_np = np.where(ids_np >= 0, corr.cpu().numpy(), 0).astype(np.float32)
    name = other.identity
    atomic_save_npy(d / f"{name}.ids.npy", ids_np)
    atomic_save_npy(d / f"{name}.corr.npy", corr_np)
    atomic_write_text(
        d / f"{name}.json",
        json.dumps(
            {
                "other_sae_sha256": other.identity,
                "other_name": other.path.resolve().name,
                "other_atlas": str(other.path.resolve()),
                "other_model": other.manifest.get("model_name"),
                "other_cache_sha256": other.manifest.get("cache_sha256"),
                "shared_images": n_shared,
                "top": int(ids_np.shape[1]),
                "measure": "Pearson correlation of image scores over the shared images (exact, from the sparse codes)",
            },
            indent=2,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """`torchrun -m precompute.link A B …` (or `python -m precompute.link`): the flags of `clipsae link`."""
    from sae_core.cliargs import add_config_flags, config_from_args, run_reporting

    p = argparse.ArgumentParser(prog="precompute.link", description=__doc__.splitlines()[0])
    add_config_flags(p, LinkConfig)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def run() -> int:
        cfg = config_from_args(LinkConfig, args)
        with ranks_from_env(cfg.device) as ranks:
            r = link(cfg.atlas_a, cfg.atlas_b, top=cfg.top_links, budget_mb=cfg.budget_mb, ranks=ranks)
        if r is not None:
            print(summary_line(r))
        return 0

    return run_reporting("precompute.link", run)


def summary_line(r: dict[str, Any]) -> str:
    """The one line `clipsae link` prints."""
    return f"linked {r['a']} <-> {r['b']} over {r['shared_images']} shared images (top {r['top']})"


if __name__ == "__main__":
    sys.exit(main())
