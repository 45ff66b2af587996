"""Images -> a sharded, resumable activation cache (`clipsae embed`).

    clipsae embed --images photos/ --out cache/                       # ViT-B-32 embed (seed 001)
    clipsae embed --images photos/ --out cache/ --hook blocks.9.resid_post --tokens all
    clipsae embed --images photos/ --out kcache/ --model kandinsky-2-2-prior
    torchrun --nproc_per_node=4 -m precompute.embed --images photos/ --out cache/

Images are sorted by relative path and cut into shards of `shard_size` images. A shard
is the unit of work, of atomic writing and of resuming: a killed run re-done with the
same command skips the finished shards and ends with the same files as an uninterrupted
run. Batches never cross shard boundaries, so results do not depend on where a run was
interrupted, nor on how many ranks shared the work (rank r takes shards r, r+W, ...).
`metadata.json` is written last, once every shard is done. See precompute/FORMAT.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sae_core.files import atomic_save_npy, atomic_write_text
from sae_core.progress import Progress
from sae_core.data import CACHE_FORMAT, CACHE_VERSION
from sae_core.device import resolve_device
from sae_core.errors import BadActivations, Incomplete

from .configs import EmbedConfig
from .encoders import Encoder, load_encoder
from .images import BadImage, ImageRef, image_id, list_images, load_image
from .ranks import Ranks

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"


# ---------------------------------------------------------------- decoding workers
class _Images(Dataset):
    def __init__(self, refs: list[ImageRef], preprocess: Any, max_pixels: int):
        self.refs, self.preprocess, self.max_pixels = refs, preprocess, max_pixels

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None, str | None]:
        ref = self.refs[i]
        try:
            image, data = load_image(ref.abs_path, self.max_pixels)
            return i, self.preprocess(image), image_id(ref.rel_path, data), None
        except BadImage as exc:
            return i, None, None, str(exc)
        except Exception as exc:  # a preprocessing failure is this image's problem, not the run's
            return i, None, None, f"preprocessing failed: {type(exc).__name__}: {exc}"


def _collate(items: list) -> list:
    return items


# ---------------------------------------------------------------- shards
def shard_name(i: int) -> str:
    return f"{i:06d}"


def shard_done(out: Path, i: int) -> bool:
    return (out / SHARDS_DIR / f"shard_{shard_name(i)}.json").exists()


def _write_shard(
    out: Path, i: int, acts: np.ndarray, patches: np.ndarray | None, images: list[dict], failures: list[dict]
) -> None:
    """Data files first, the shard's JSON (its completion marker) last."""
    d = out / SHARDS_DIR
    name = shard_name(i)
    atomic_save_npy(d / f"acts_{name}.npy", acts)
    if patches is not None:
        atomic_save_npy(d / f"patches_{name}.npy", patches)
    atomic_write_text(d / f"images_{name}.jsonl", "".join(json.dumps(r) + "\n" for r in images))
    atomic_write_text(d / f"failures_{name}.jsonl", "".join(json.dumps(r) + "\n" for r in failures))
    marker = {"shard": i, "rows": int(acts.shape[0]), "images": len(images), "failed": len(failures)}
    atomic_write_text(d / f"shard_{name}.json", json.dumps(marker))


# ---------------------------------------------------------------- settings / resume
def settings_of(cfg: EmbedConfig, refs: list[ImageRef], device: torch.device) -> dict[str, Any]:
    """What must not change between a run and its resume (workers may)."""
    listing = hashlib.sha256("\n".join(r.rel_path for r in refs).encode()).hexdigest()
    d = asdict(cfg)
    d.pop("workers")
    d.pop("out")
    d["device"] = device.type
    d["n_images"] = len(refs)
    d["listing_sha256"] = listing
    return json.loads(json.dumps(d))


def check_or_write_settings(out: Path, settings: dict[str, Any]) -> None:
    path = out / "settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            diff = ", ".join(
                f"{k}: {old.get(k)!r} -> {settings.get(k)!r}"
                for k in sorted(old.keys() | settings.keys())
                if old.get(k) != settings.get(k)
            )
            raise ValueError(
                f"{out} holds a cache started with other settings ({diff}). "
                "Resume with the original command, or write to a new --out."
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / SHARDS_DIR).mkdir(exist_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=2))


def remove_stale_temporaries(out: Path) -> None:
    """Delete the temporary files (`.NAME.*.tmp`) a killed run left behind; finished files
    are only ever renamed into place, so these are never part of the cache."""
    for folder in (out, out / SHARDS_DIR):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- the run
def _shard_batches(n_images: int, shard_size: int, batch_size: int, shards: list[int]) -> list[list[int]]:
    batches = []
    for s in shards:
        lo, hi = s * shard_size, min(n_images, (s + 1) * shard_size)
        batches.extend(list(range(b, min(hi, b + batch_size))) for b in range(lo, hi, batch_size))
    return batches


MAX_WORKER_RESTARTS = 3
"""A dead decode worker restarts the unfinished shards (finished ones are on disk) this often."""


def run_embed(cfg: EmbedConfig, ranks: Ranks | None = None) -> dict[str, Any] | None:
    """Extract the shards of this rank (default: the single process on `cfg.device`); rank 0
    then writes `metadata.json`. Returns the metadata (rank 0) or None. Several ranks come
    from `ranks_from_env` (torchrun), which gives each its device."""
    ranks = ranks or Ranks(device=resolve_device(cfg.device))
    out = Path(cfg.out)
    root, refs = list_images(cfg.images)
    device = ranks.device
    settings = settings_of(cfg, refs, device)
    if ranks.main:
        check_or_write_settings(out, settings)
        remove_stale_temporaries(out)  # a killed run's half-written files (no rank is writing yet)
    ranks.barrier()
    if not ranks.main:
        check_or_write_settings(out, settings)
    n_shards = -(-len(refs) // cfg.shard_size)
    mine = [s for s in range(n_shards) if s % ranks.world == ranks.rank and not shard_done(out, s)]
    done_before = sum(shard_done(out, s) for s in range(n_shards))
    if done_before:
        log.info("resuming: %d of %d shards already done", done_before, n_shards)
    if mine:
        encoder = load_encoder(cfg.encoder, device)
        if encoder.metadata.get("random_weights"):
            log.warning(
                "%s has RANDOM weights (--pretrained none, seed %d): activations are not meaningful",
                cfg.encoder.model,
                cfg.encoder.seed,
            )
        encoder_meta = {
            **encoder.metadata,
            "dim": encoder.dim,
            "token_indices": encoder.token_indices,
            "n_patches": encoder.n_patches,
        }
        atomic_write_text(out / "encoder.json", json.dumps(encoder_meta, indent=2))
        for attempt in range(MAX_WORKER_RESTARTS + 1):
            try:
                _extract(cfg, refs, encoder, mine, out)
                break
            except (RuntimeError, ConnectionError, EOFError) as exc:  # a decode worker died (OOM killer, SIGKILL)
                if not worker_died(exc) or attempt == MAX_WORKER_RESTARTS:
                    raise
                mine = [s for s in mine if not shard_done(out, s)]
                log.warning(
                    "a decode worker died (%s); restarting the workers for the %d unfinished shards", exc, len(mine)
                )
    ranks.barrier()
    if not ranks.main:
        return None
    return finalize(out, cfg, root, n_shards)


def worker_died(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) says a DataLoader worker died: torch's
    RuntimeError, or the broken pipe the main process met first while reading from it."""
    seen: BaseException | None = exc
    while seen is not None:
        if "DataLoader worker" in str(seen) or isinstance(seen, (ConnectionResetError, BrokenPipeError, EOFError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _extract(cfg: EmbedConfig, refs: list[ImageRef], encoder: Encoder, shards: list[int], out: Path) -> None:
    dataset = _Images(refs, encoder.preprocess, cfg.max_pixels)
    batches = _shard_batches(len(refs), cfg.shard_size, cfg.batch_size, shards)
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=cfg.workers,
        collate_fn=_collate,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if cfg.workers else None,
        persistent_workers=False,
    )
    total = sum(min(len(refs), (s + 1) * cfg.shard_size) - s * cfg.shard_size for s in shards)
    bar = Progress(total, "embed", unit="img", logger=log)
    batches_it = iter(loader)
    try:
        _consume(batches_it, cfg, refs, encoder, out, bar)
    finally:
        # Stop the workers (and unregister them from torch's SIGCHLD handler) before anything
        # else runs: otherwise a dead worker's error can fire again while the caller retries.
        shutdown = getattr(batches_it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        bar.close()


def _consume(
    batches_it: Any, cfg: EmbedConfig, refs: list[ImageRef], encoder: Encoder, out: Path, bar: Progress
) -> None:
    """Encode the decoded batches and write each shard as soon as it is complete."""
    dtype = np.dtype(cfg.dtype)
    current, acts_parts, patch_parts, images, failures = None, [], [], [], []
    n_failed = 0

    def flush() -> None:
        acts = np.concatenate(acts_parts) if acts_parts else np.zeros((0, encoder.dim), dtype)
        patches = None
        if cfg.encoder.patch_tokens:
            patches = (
                np.concatenate(patch_parts) if patch_parts else np.zeros((0, encoder.n_patches, encoder.dim), dtype)
            )
        _write_shard(out, current, acts, patches, images, failures)

    for batch in batches_it:
        shard = batch[0][0] // cfg.shard_size
        if current is not None and shard != current:
            flush()
            acts_parts, patch_parts, images, failures = [], [], [], []
        current = shard
        ok = [(i, x, iid) for i, x, iid, err in batch if err is None]
        for i, _, _, err in batch:
            if err is not None:
                failures.append({"path": refs[i].rel_path, "reason": err})
                log.debug("skipped %s: %s", refs[i].rel_path, err)
        n_failed += len(batch) - len(ok)
        if ok:
            rows, patches = encoder.encode(torch.stack([x for _, x, _ in ok]))
            if not torch.isfinite(rows).all():
                raise BadActivations("the model produced NaN/inf activations; check the weights and --dtype")
            acts_parts.append(rows.reshape(-1, encoder.dim).cpu().numpy().astype(dtype))
            if patches is not None:
                patch_parts.append(patches.cpu().numpy().astype(dtype))
            images.extend({"id": iid, "path": refs[i].rel_path} for i, _, iid in ok)
        bar.update(len(batch))
        bar.set_postfix(skipped=n_failed)
    if current is not None:
        flush()


def finalize(out: Path, cfg: EmbedConfig, root: Path, n_shards: int) -> dict[str, Any]:
    """Once every shard is done: merge the row table and failures, write metadata.json last."""
    missing = [s for s in range(n_shards) if not shard_done(out, s)]
    if missing:
        raise Incomplete(f"{len(missing)} shards are not done (first: {missing[0]}); run the same command again")
    enc = json.loads((out / "encoder.json").read_text())
    shards, all_images, all_failures = [], [], []
    for s in range(n_shards):
        name = shard_name(s)
        marker = json.loads((out / SHARDS_DIR / f"shard_{name}.json").read_text())
        entry = {"file": f"{SHARDS_DIR}/acts_{name}.npy", "rows": marker["rows"], "images": marker["images"]}
        if cfg.encoder.patch_tokens:
            entry["patches"] = f"{SHARDS_DIR}/patches_{name}.npy"
        shards.append(entry)
        all_images.extend((out / SHARDS_DIR / f"images_{name}.jsonl").read_text().splitlines())
        all_failures.extend((out / SHARDS_DIR / f"failures_{name}.jsonl").read_text().splitlines())
    atomic_write_text(out / "images.jsonl", "".join(line + "\n" for line in all_images))
    atomic_write_text(out / "failures.jsonl", "".join(line + "\n" for line in all_failures))
    n_rows = sum(s["rows"] for s in shards)
    meta = {
        "format": CACHE_FORMAT,
        "format_version": CACHE_VERSION,
        **{k: enc[k] for k in ("model_name", "pretrained", "hook_name", "tokens", "image_size", "preprocessing")},
        **{k: enc[k] for k in ("weights_sha256", "random_weights", "seed", "model_config_path") if k in enc},
        "dim": enc["dim"],
        "dtype": cfg.dtype,
        "token_indices": enc["token_indices"],
        "tokens_per_image": len(enc["token_indices"]),
        "patch_tokens": cfg.encoder.patch_tokens,
        "n_patches": enc["n_patches"] if cfg.encoder.patch_tokens else 0,
        "n_images": len(all_images),
        "n_failed": len(all_failures),
        "n_rows": n_rows,
        "images_root": str(root),
        "shard_size": cfg.shard_size,
        "shards": shards,
    }
    atomic_write_text(out / "metadata.json", json.dumps(meta, indent=2))
    log.info(
        "embedded %d images (%d rows of %d) into %s; %d skipped%s",
        len(all_images),
        n_rows,
        enc["dim"],
        out,
        len(all_failures),
        f" (reasons in {out / 'failures.jsonl'})" if all_failures else "",
    )
    return meta
