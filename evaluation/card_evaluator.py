"""The evaluator of the monosemanticity score: another encoder than the SAE's, whose unit image
embeddings say how alike two images are. `--evaluator` names one of

- an activation cache of the same images made by `clipsae embed` with another model (rows
  matched by image id: the relative path and a hash of the file's bytes);
- a transformers vision model: a local folder (`save_pretrained`) or a hub id in the Hugging
  Face cache, e.g. DINOv2 (`facebook/dinov2-base`: the layer-normed CLS token, `pooler_output`),
  a CLIPVisionModelWithProjection (`image_embeds`) or a CLIPModel (its image features);
- an OpenCLIP model name or local config `.json`, with `--evaluator-pretrained` naming its
  weights (a tag, a checkpoint file, or `none`), through the loader `clipsae embed` uses.

The held-out images are read from the cache's images root; unreadable ones are left out of
the MS (and listed). Embeddings are kept in OUT/evaluator_embeddings.npy and reused by a
later run with the same evaluator and the same images.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from precompute.encoders import EncoderSpec, load_encoder
from sae_core.data import ActivationSource
from sae_core.files import atomic_save_npy, atomic_write_text

from .card_mono import unit_rows
from .card_pass import HeldOut
from .common import image_batches
from .datasets import LabelledImages

log = logging.getLogger(__name__)

CACHE_FILE = "evaluator_embeddings"


@dataclass
class Embeddings:
    """Unit embeddings of the held-out images (rows of images not embedded are zero)."""

    vectors: np.ndarray  # [N, E] float32
    present: np.ndarray  # [N] bool
    description: str
    failures: list[str]


def same_encoder(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two provenance records (cache metadata, an SAE cfg's metadata) name the same
    weights: model, pretrained tag or file, and the seed of random weights."""

    def key(m: dict[str, Any]) -> tuple:
        model = Path(str(m.get("model_config_path") or m.get("model_name", ""))).stem
        seed = m.get("seed", 0) if str(m.get("pretrained")) == "none" else None
        return model, str(m.get("pretrained")), m.get("weights_sha256"), seed

    return bool(a.get("model_name")) and key(a) == key(b)


def _from_cache(folder: Path, held: HeldOut, sae_meta: dict[str, Any]) -> Embeddings:
    other = ActivationSource(folder)
    meta = other.metadata
    if same_encoder(meta, sae_meta):
        raise ValueError(
            f"--evaluator {folder} holds activations of the SAE's own encoder ({meta.get('model_name')}); "
            "the MS needs another encoder (e.g. DINOv2 or another CLIP)"
        )
    table = [json.loads(line)["id"] for line in (folder / "images.jsonl").read_text().splitlines() if line]
    t = int(meta.get("tokens_per_image", 1))
    pos = list(meta.get("token_indices", [0])).index(0) if t > 1 else 0
    where = {image_id: i for i, image_id in enumerate(table)}
    found = np.array([where.get(i, -1) for i in held.image_ids], dtype=np.int64)
    present = found >= 0
    vectors = np.zeros((held.n_images, other.d), dtype=np.float32)
    if present.any():
        order = np.argsort(found[present])
        rows = found[present][order] * t + pos
        picked = np.empty((int(present.sum()), other.d), dtype=np.float32)
        picked[order] = other.take(rows)
        vectors[present] = unit_rows(picked)
    model = Path(str(meta.get("model_name"))).name
    desc = f"{model} ({meta.get('pretrained')}, {meta.get('hook_name')}; cache {folder.name})"
    missing = [f"{held.image_paths[i]}: not in {folder}" for i in np.flatnonzero(~present)]
    return Embeddings(vectors, present, desc, missing)


class _Preprocess:
    """A transformers image processor as a PIL -> tensor callable."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


def _transformers_model(source: str, device: torch.device) -> tuple[Any, Callable, str]:
    from transformers import AutoImageProcessor, AutoModel

    try:
        model = AutoModel.from_pretrained(source).to(device).eval()
        processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"could not load the evaluator {source!r} with transformers: {exc}. Without network "
            "access, pass a local folder (save_pretrained) or a model in the Hugging Face cache"
        ) from None

    def embed(pixels: torch.Tensor) -> torch.Tensor:
        if hasattr(model, "get_image_features"):
            out = model.get_image_features(pixel_values=pixels)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        out = model(pixel_values=pixels)
        for name in ("image_embeds", "pooler_output"):
            if getattr(out, name, None) is not None:
                return getattr(out, name)
        return out.last_hidden_state[:, 0]

    return _Preprocess(processor), embed, f"{type(model).__name__} ({source})"


def _open_clip_model(
    model: str, pretrained: str | None, device: torch.device, sae_meta: dict[str, Any]
) -> tuple[Any, Callable, str]:
    if pretrained is None:
        raise ValueError(
            f"--evaluator {model} is an OpenCLIP model: name its weights with --evaluator-pretrained "
            "(a tag such as laion2b_s34b_b88k, a checkpoint file, or none for random weights)"
        )
    encoder = load_encoder(EncoderSpec(model=model, pretrained=pretrained), device)
    if same_encoder(encoder.metadata, sae_meta):
        raise ValueError(
            f"--evaluator {model} {pretrained} is the SAE's own encoder; the MS needs another "
            "encoder (e.g. DINOv2 or another CLIP)"
        )
    return encoder.preprocess, lambda pixels: encoder.encode(pixels)[0][:, 0], f"OpenCLIP {model} ({pretrained})"


def is_transformers(spec: str) -> bool:
    """A local transformers folder, or a hub id (`owner/name`) that is not a local path."""
    path = Path(spec)
    if path.is_dir():
        return (path / "config.json").is_file()
    return "/" in spec and not spec.endswith(".json") and not path.exists()


def embed_images(
    held: HeldOut, preprocess: Callable, embed: Callable, batch_size: int, desc: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(unit embeddings [N, E] with zero rows where unreadable, present [N], failures) of the
    held-out images, read from the cache's images root."""
    if not held.image_paths or not held.images_root:
        raise ValueError(f"{held.source.path} has no image table, so its images cannot be embedded")
    root = Path(held.images_root)
    data = LabelledImages(
        "held-out",
        "imagefolder",
        [""],
        np.zeros(held.n_images, dtype=np.int64),
        paths=[root / p for p in held.image_paths],
    )
    failures: list[str] = []
    chunks: list[tuple[np.ndarray, np.ndarray]] = []
    with torch.inference_mode():
        for pixels, _, idx in image_batches(data, preprocess, batch_size, desc, failures):
            chunks.append((idx, unit_rows(embed(pixels).float().cpu().numpy())))
    if not chunks:
        raise ValueError(f"none of the {held.n_images} held-out images under {root} could be read")
    width = chunks[0][1].shape[1]
    vectors = np.zeros((held.n_images, width), dtype=np.float32)
    present = np.zeros(held.n_images, dtype=bool)
    for idx, v in chunks:
        vectors[idx], present[idx] = v, True
    return vectors, present, failures


def evaluator_embeddings(
    spec: str,
    pretrained: str | None,
    held: HeldOut,
    sae_meta: dict[str, Any],
    batch_size: int,
    device: torch.device,
    out: Path,
) -> Embeddings:
    """The evaluator's unit embeddings of the held-out images (see the module docstring)."""
    if not held.image_ids:
        raise ValueError(
            f"--evaluator needs the held-out images: {held.source.path} has no image table "
            "(a plain .npy); pass an activation cache"
        )
    folder = Path(spec)
    if folder.is_dir() and (folder / "metadata.json").is_file():
        return _from_cache(folder, held, sae_meta)
    key = hashlib.sha256(json.dumps([spec, pretrained, held.image_ids]).encode()).hexdigest()
    cached = out / f"{CACHE_FILE}.json"
    if cached.is_file() and json.loads(cached.read_text()).get("key") == key:
        info = json.loads(cached.read_text())
        vectors = np.load(out / f"{CACHE_FILE}.npy")
        log.info("reusing the evaluator embeddings in %s", out / f"{CACHE_FILE}.npy")
        return Embeddings(vectors, np.asarray(info["present"], dtype=bool), info["description"], info["failures"])
    if is_transformers(spec):
        preprocess, embed, desc = _transformers_model(spec, device)
    else:
        preprocess, embed, desc = _open_clip_model(spec, pretrained, device, sae_meta)
    vectors, present, failures = embed_images(held, preprocess, embed, batch_size, f"evaluator {desc}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(out / f"{CACHE_FILE}.npy", vectors)
    atomic_write_text(
        cached, json.dumps({"key": key, "description": desc, "present": present.tolist(), "failures": failures})
    )
    return Embeddings(vectors, present, desc, failures)
