"""Build the atlas the app browses (`clipsae atlas`, or `torchrun -m precompute.atlas`).

    clipsae atlas --acts cache/ --sae saes/l1_0.01 --out atlas/
    clipsae atlas --acts acts.npy --sae sae/ --out atlas/          # no images: top-k + stats only
    torchrun --nproc_per_node=2 -m precompute.atlas --acts cache/ --sae sae/ --out atlas/

For every latent: the top-k images (exact, every architecture), their patch masks,
frequency / mean / max, a 50-bin histogram and value-band samples, a label (embed-space
SAEs), the sparse codes of every image, the encoder's description, plus faiss indexes of
images (by embedding) and latents (by decoder direction): everything the app and `link`
need, so neither reopens the activation cache. Under torchrun each rank takes a contiguous
share of the images (and of the latents for the masks); the merged result is the atlas one
process builds, bit for bit. The folder is built under a temporary name and swapped in,
with `manifest.json` written last, so an interrupted build leaves the previous atlas
intact. See precompute/ATLAS.md.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from sae_core.data import ActivationSource
from sae_core.device import resolve_device
from sae_core.files import atomic_write_dir
from sae_core.io import load_sae

from .atlas_format import read_manifest
from .atlas_stats import Distribution, merge_distribution, merge_topk_states, pass_distribution, pass_topk, stats_sample
from .atlas_write import AtlasInputs, Shares, write_atlas
from .codes import CodesPart, CodesWriter
from .configs import AtlasConfig
from .masks import PatchReader, patch_masks
from .neighbours import block_rows, nearest_latents, unit_directions
from .ranks import Ranks, ranks_from_env
from .topk import finalize_topk

log = logging.getLogger(__name__)


def open_inputs(cfg: AtlasConfig, ranks: Ranks) -> AtlasInputs:
    """The cache, the SAE and the token layout, checked against each other."""
    acts = Path(cfg.acts)
    source = ActivationSource(acts)
    sae = load_sae(cfg.sae, device=ranks.device)
    if sae.cfg.d_in != source.d:
        raise ValueError(f"SAE d_in={sae.cfg.d_in} but {acts} has width {source.d}")
    meta = source.metadata
    t = int(meta.get("tokens_per_image", 1))
    token_indices = meta.get("token_indices", [0])
    return AtlasInputs(
        cfg=cfg,
        source=source,
        sae=sae,
        meta=meta,
        tokens_per_image=t,
        cls_pos=token_indices.index(0) if 0 in token_indices else None,
        n_images=source.n_rows // t,
        device=ranks.device,
    )


def staging_dir(out: str | Path) -> Path:
    """Where ranks leave their parts (codes, masks, neighbours) for rank 0: beside the atlas."""
    out = Path(out)
    return out.parent / f".{out.name}.parts"


def compute_shares(inp: AtlasInputs, ranks: Ranks, staging: Path) -> Shares:
    """Every rank: pass 1 over its images (codes to `staging`), the merged top-k, pass 2 over
    its codes, and the merged distribution."""
    cfg, sae = inp.cfg, inp.sae
    # float32 activations [F, b·T] plus a same-sized temporary of the encoder
    block_images = max(1, int(cfg.block_mb * 2**20) // (4 * sae.cfg.d_sae * inp.tokens_per_image * 2))
    b0, b1 = ranks.split(-(-inp.n_images // block_images))  # whole blocks: a GEMM's bits depend on its shape
    lo, hi = min(inp.n_images, b0 * block_images), min(inp.n_images, b1 * block_images)
    writer = CodesWriter(staging, ranks.rank, lo, hi)
    try:
        state = pass_topk(
            sae,
            inp.source,
            cfg.top_images,
            inp.tokens_per_image,
            block_images,
            cfg.score,
            inp.cls_pos,
            ranks.device,
            lo=lo,
            hi=hi,
            codes=writer,
            max_codes_gb=cfg.max_codes_gb,
        )
    finally:
        writer.close()
    vals, ids = merge_topk_states(list(zip(ranks.all_gather(state[0]), ranks.all_gather(state[1]))))
    max_activation = vals[:, 0].clamp_min(0).cpu().numpy().astype(np.float32)
    in_sample, priority = stats_sample(inp.n_images, cfg.stats_images, cfg.seed)
    d = pass_distribution(CodesPart.open(staging, ranks.rank, lo), max_activation, in_sample, priority, ranks.device)
    gathered = [ranks.all_gather(t) for t in (d.histogram, d.band_priority, d.band_ids, d.band_values)]
    d = merge_distribution([Distribution(*parts) for parts in zip(*gathered)])
    n_stats = inp.n_images if in_sample is None else int(in_sample.sum())
    return Shares(vals, ids, d, n_stats)


def compute_masks(inp: AtlasInputs, ranks: Ranks, topk_ids_sorted: np.ndarray, staging: Path, notes: list[str]) -> bool:
    """Every rank: the patch masks of its share of the latents, saved to `staging`."""
    if not inp.cfg.masks or not inp.meta:
        return False
    try:
        reader = PatchReader(Path(inp.cfg.acts), inp.meta)
    except ValueError as exc:
        notes.append(f"no patch masks: {exc}")
        return False
    l0, l1 = ranks.split(len(topk_ids_sorted))
    masks, scale = patch_masks(inp.sae, reader, topk_ids_sorted[l0:l1], device=ranks.device, first_latent=l0)
    np.save(staging / f"masks_part{ranks.rank:05d}.npy", masks)
    np.save(staging / f"mask_scale_part{ranks.rank:05d}.npy", scale)
    return True


def compute_neighbours(inp: AtlasInputs, ranks: Ranks, staging: Path) -> None:
    """Every rank: the nearest latents of its share of the (fixed) row blocks, saved to `staging`."""
    if not inp.cfg.neighbours:
        return
    directions = unit_directions(inp.sae)
    per_block = block_rows(len(directions), inp.cfg.block_mb)
    b0, b1 = ranks.split(-(-len(directions) // per_block))
    cos, ids = nearest_latents(directions, inp.cfg.neighbours, range(b0, b1), per_block)
    np.save(staging / f"neighbour_cos_part{ranks.rank:05d}.npy", cos)
    np.save(staging / f"neighbour_ids_part{ranks.rank:05d}.npy", ids)


def build_atlas(cfg: AtlasConfig, ranks: Ranks | None = None) -> dict[str, Any] | None:
    """Compute everything, then write the atlas folder atomically (rank 0); returns the
    manifest on rank 0, None on the other ranks."""
    ranks = ranks or Ranks(device=resolve_device(cfg.device))
    inp = open_inputs(cfg, ranks)
    staging = staging_dir(cfg.out)
    if ranks.main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    ranks.barrier()
    try:
        shares = compute_shares(inp, ranks, staging)
        notes: list[str] = (
            []
            if inp.meta
            else ["no images: --acts is a plain matrix, so masks, image indexes and image files are skipped"]
        )
        _, sorted_ids = finalize_topk(shares.topk_values, shares.topk_ids)
        has_masks = compute_masks(inp, ranks, sorted_ids.cpu().numpy(), staging, notes)
        compute_neighbours(inp, ranks, staging)
        ranks.barrier()  # every part is on disk
        if ranks.main:
            atomic_write_dir(cfg.out, lambda tmp: write_atlas(tmp, inp, shares, staging, ranks.world, has_masks, notes))
    finally:  # no barrier here: after a failure the other ranks are stopped by torchrun, not waited for
        if ranks.main:
            shutil.rmtree(staging, ignore_errors=True)
    if not ranks.main:
        return None
    manifest = read_manifest(cfg.out)
    log.info(
        "atlas: %d latents x top-%d over %d images -> %s (%d dead)%s",
        manifest["d_sae"],
        cfg.top_images,
        manifest["n_images"],
        cfg.out,
        manifest["n_dead"],
        "".join(f"; {n}" for n in manifest["notes"]),
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    """`torchrun -m precompute.atlas …` (or plain `python -m precompute.atlas …`): the flags of `clipsae atlas`."""
    from sae_core.cliargs import add_config_flags, config_from_args, run_reporting

    p = argparse.ArgumentParser(prog="precompute.atlas", description=__doc__.splitlines()[0])
    add_config_flags(p, AtlasConfig)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def run() -> int:
        cfg = config_from_args(AtlasConfig, args)
        with ranks_from_env(cfg.device) as ranks:
            m = build_atlas(cfg, ranks)
        if m is not None:
            print(summary_line(m, cfg.out))
        return 0

    return run_reporting("precompute.atlas", run)


def summary_line(m: dict[str, Any], out: str) -> str:
    """The one line `clipsae atlas` prints."""
    return f"atlas: {m['d_sae']} latents, top-{m['top_images']} of {m['n_images']} images, {m['n_dead']} dead -> {out}"


if __name__ == "__main__":
    sys.exit(main())
