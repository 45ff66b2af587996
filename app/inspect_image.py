"""Inspect an uploaded image with the atlas's own encoder and SAE (no gradio): its most
active latents, a per-patch map for one latent, the nearest dataset images, and gradient
heat maps of its similarity to a text with a latent removed or scaled (seed 003)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
from PIL import Image

from evaluation.heatmap import HeatmapComparison, compare, scale_latents
from evaluation.splice import SplicedClip
from precompute.encoders import load_encoder, spec_from_metadata
from sae_core.io import load_sae

from .atlas import Atlas


def patch_latents(patches_pf: np.ndarray, x: float, y: float, n: int = 10) -> tuple[int, list[tuple[int, float]]]:
    """The patch under relative position (x, y) in [0, 1)² of a square patch grid, and its n
    most active latents as (latent, value), strongest first (PatchSAE's patch click)."""
    grid = int(round(np.sqrt(patches_pf.shape[0])))
    if grid * grid != patches_pf.shape[0]:
        raise ValueError(f"the patch activations ({patches_pf.shape[0]} patches) do not form a square grid")
    col = min(max(int(x * grid), 0), grid - 1)
    row = min(max(int(y * grid), 0), grid - 1)
    p = row * grid + col
    vals = patches_pf[p]
    cand = np.argpartition(-vals, n)[:n] if vals.size > n else np.arange(vals.size)
    order = cand[np.argsort(-vals[cand], kind="stable")]
    return p, [(int(i), float(vals[i])) for i in order if vals[i] > 0]


class Inspector:
    """Encoder + SAE of one atlas, loaded once."""

    def __init__(self, atlas: Atlas, device: str = "cpu"):
        meta = atlas.encoder  # the atlas's own encoder.json: the activation cache is never reopened
        if meta is None:
            raise ValueError(
                "the atlas was built from a plain matrix: no encoder is recorded, so images cannot be inspected"
            )
        self.meta = meta
        self.encoder = load_encoder(spec_from_metadata(meta, patch_tokens=True), device)
        self.sae = load_sae(atlas.path / "sae", device=device)
        self.atlas = atlas
        self.lock = threading.Lock()
        self._clip: SplicedClip | None = None

    @torch.inference_mode()
    def run(self, image: Image.Image, n: int = 20) -> dict[str, Any]:
        """{"top": [(latent, value)], "scores": [F] (max over the image's tokens),
        "patches": [P, F] array or None, "embedding": [d]}."""
        x = self.encoder.preprocess(image.convert("RGB"))[None]
        with self.lock:
            rows, patches = self.encoder.encode(x)
            f_t = self.sae.encode(rows[0])  # [T, F]
            score = f_t.amax(dim=0)
            patch_f = None
            if patches is not None:
                patch_f = self.sae.encode(patches[0]).cpu().numpy()
            elif rows.shape[1] > 1:
                spatial = [i for i, t in enumerate(self.encoder.token_indices) if t >= 1]
                patch_f = f_t[spatial].cpu().numpy() if spatial else None
        vals, idx = score.topk(min(n, score.numel()))
        top = [(int(i), float(v)) for v, i in zip(vals, idx) if v > 0]
        return {
            "top": top,
            "scores": score.float().cpu().numpy(),
            "patches": patch_f,
            "embedding": rows[0, 0].cpu().numpy(),
        }

    @torch.inference_mode()
    def text_to_latents(self, text: str, n: int = 20) -> list[tuple[int, float]]:
        """Latents whose decoder direction is nearest the CLIP text embedding of `text`
        (meaningful for SAEs on the CLIP `embed` space, where text and images share a space)."""
        if self.meta["hook_name"] != "embed" or not hasattr(self.encoder.module, "encode_text"):
            return []
        with self.lock:
            emb = self.encoder.text_embeddings([text]).cpu().numpy()
        cos, ids = self.atlas.latent_index.search(emb, n)
        return [(int(i), float(c)) for i, c in zip(ids[0], cos[0]) if i >= 0]

    def nearest_images(self, embedding: np.ndarray, n: int = 8) -> list[tuple[int, float]]:
        if self.atlas.image_index is None:
            return []
        cos, ids = self.atlas.image_index.search(embedding, n)
        return [(int(i), float(c)) for i, c in zip(ids[0], cos[0]) if i >= 0]

    @property
    def can_explain(self) -> bool:
        """Gradient heat maps need an OpenCLIP model (image and text towers)."""
        return not self.encoder.spec.is_kandinsky and hasattr(self.encoder.module, "encode_text")

    def gradient_heatmaps(self, image: Image.Image, text: str, latent: int, scale: float) -> HeatmapComparison:
        """Saliency of cos(image, text) over the patches, as is and with `latent` × `scale`
        spliced back in at the SAE's hook (0 removes it)."""
        if not self.can_explain:
            raise ValueError("gradient heat maps need an OpenCLIP atlas (image and text towers)")
        text = (text or "").strip()
        if not text:
            raise ValueError("give a text to compare the image with (for example: a photo of a dog)")
        edits = scale_latents([latent], scale)
        with self.lock:
            if self._clip is None:
                tokens = self.meta.get("tokens", "cls") if self.meta["hook_name"] != "embed" else "cls"
                self._clip = SplicedClip(self.encoder, self.meta["hook_name"], tokens)
            clip = self._clip
            pixels = self.encoder.preprocess(image.convert("RGB"))[None].to(clip.device)
            return compare(clip, self.sae, pixels, clip.text_embedding(text), edits)
