"""What every evaluation command shares: SAEs from folders (sweeps expanded), the CLIP model
their cfg.json names (overridable), and preprocessed image batches with bad images skipped."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from precompute.hub_ids import CLIP_MODEL, CLIP_PRETRAINED
from precompute.encoders import EncoderSpec, load_encoder, spec_from_metadata
from precompute.images import BadImage
from sae_core import io
from sae_core.evaluate import describe
from sae_core.progress import Progress
from sae_core.sae import SparseAutoencoder
from sae_core.device import resolve_device

from .configs import ModelChoice
from .datasets import LabelledImages
from .splice import SplicedClip

log = logging.getLogger(__name__)


@dataclass
class NamedSAE:
    name: str
    path: Path
    sae: SparseAutoencoder

    def describe(self) -> dict[str, object]:
        d = describe(self.sae, self.name)
        return {"sae": self.name, "arch": d["Arch"], "sparsity": d["Sparsity"], "d_sae": self.sae.cfg.d_sae}


def load_saes(paths: list[str], device: torch.device) -> list[NamedSAE]:
    """Every SAE under each path (a folder of SAEs is a sweep), in eval mode, without gradients."""
    found = []
    for p in paths:
        root = Path(p)
        for d in io.find_sae_dirs(root):
            sae = io.load_sae(d, device=device).eval().requires_grad_(False)
            found.append(NamedSAE(d.name if d != root else root.name, d, sae))
    if not found:
        raise FileNotFoundError(f"no SAE (cfg.json + sae_weights.safetensors) under {', '.join(paths)}")
    return found


def encoder_metadata(saes: list[NamedSAE], choice: ModelChoice) -> dict:
    """The encoder provenance the SAEs' cfg.json records (model, weights, hook, tokens), with
    the flags overriding; the SAEs must agree on hook and width."""
    meta = dict(saes[0].sae.cfg.metadata)
    for s in saes[1:]:
        if s.sae.cfg.metadata.get("hook_name") != meta.get("hook_name") or s.sae.cfg.d_in != saes[0].sae.cfg.d_in:
            raise ValueError(
                f"SAEs {saes[0].name} and {s.name} read different hooks or widths; evaluate them separately"
            )
    if choice.model:
        meta.update(model_name=choice.model, model_config_path=None)
    if choice.pretrained:
        meta["pretrained"] = choice.pretrained
    if choice.hook:
        meta["hook_name"] = choice.hook
    if choice.tokens:
        meta["tokens"] = choice.tokens
    if "model_name" not in meta:
        meta.update(model_name=CLIP_MODEL, pretrained=meta.get("pretrained", CLIP_PRETRAINED))
        log.warning(
            "the SAE's cfg.json names no model; assuming %s %s (override with --model)", CLIP_MODEL, meta["pretrained"]
        )
    meta.setdefault("hook_name", "embed")
    return meta


def load_clip(saes: list[NamedSAE], choice: ModelChoice) -> SplicedClip:
    """The OpenCLIP model the SAEs were trained on (from their cfg.json), flags overriding."""
    meta = encoder_metadata(saes, choice)
    spec: EncoderSpec = spec_from_metadata(meta)
    tokens = meta.get("tokens", "cls") if spec.hook != "embed" else "cls"
    spec = replace(spec, tokens="cls")  # the encoder's own capture hooks are not used here
    encoder = load_encoder(spec, resolve_device(choice.device))
    clip = SplicedClip(encoder, spec.hook, tokens)  # type: ignore[arg-type]
    width = (
        int(encoder.module.visual.output_dim) if spec.hook == "embed" else int(encoder.module.visual.transformer.width)
    )
    for s in saes:
        if s.sae.cfg.d_in != width:
            raise ValueError(
                f"SAE {s.name} reads {s.sae.cfg.d_in}-d inputs but {spec.model} at {spec.hook} is "
                f"{width}-d; pass the matching --model / --hook"
            )
        s.sae.to(clip.device)
    return clip


def setup(sae_paths: str | list[str] | tuple[str, ...], choice: ModelChoice) -> tuple[list[NamedSAE], SplicedClip]:
    """The SAEs under `sae_paths` and the CLIP model they read (`load_saes` + `load_clip`)."""
    paths = [sae_paths] if isinstance(sae_paths, str) else list(sae_paths)
    saes = load_saes(paths, resolve_device(choice.device))
    return saes, load_clip(saes, choice)


def image_batches(
    data: LabelledImages, preprocess, batch_size: int, desc: str, failures: list[str]
) -> Iterator[tuple[torch.Tensor, np.ndarray, np.ndarray]]:
    """(pixels [B,3,H,W], labels [B], dataset indices [B]) in order; the next batch is decoded
    in a thread while the model runs. Unreadable images are skipped and listed in `failures`."""

    def prepare(start: int):
        tensors, keep = [], []
        for i in range(start, min(len(data), start + batch_size)):
            try:
                tensors.append(preprocess(data.image(i)))
                keep.append(i)
            except (BadImage, OSError) as exc:
                failures.append(f"{data.paths[i] if data.paths else i}: {exc}")
                log.warning("skipping image %s: %s", data.paths[i] if data.paths else i, exc)
        idx = np.asarray(keep, dtype=np.int64)
        return (torch.stack(tensors) if tensors else None), data.labels[idx], idx

    bar = Progress(len(data), desc, unit="img")
    with ThreadPoolExecutor(1) as pool:
        starts = list(range(0, len(data), batch_size))
        pending = pool.submit(prepare, starts[0]) if starts else None
        for j in range(len(starts)):
            pixels, labels, idx = pending.result()  # type: ignore[union-attr]
            pending = pool.submit(prepare, starts[j + 1]) if j + 1 < len(starts) else None
            bar.update(min(batch_size, len(data) - starts[j]))
            if pixels is not None:
                yield pixels, labels, idx
    bar.close()
