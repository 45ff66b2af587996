"""Steering Kandinsky 2.2 with SAE latents of its prior's image-embedding space (no gradio).

    x  = prior(prompt, seed)          the image embedding Kandinsky conditions on
    f  = sae.encode(x)                latents
    f' = edit(f)                      multiply / set a latent, or leave f and add a direction
    x' = x + s·(f' − f) @ W_dec [+ Σ v·s·W_dec[i] for "add"]

This delta form (sae_core.edit) equals dec(f') + (x − dec(f)) — the SAE's error term is
kept — and is bit-exact when nothing changes (f' − f is exactly zero), so multipliers of
1.0 give back the unsteered image for the same seed. `s` undoes the SAE's input normalisation.
Starting embeddings are cached — prior outputs per (prompt, negative prompt, seed, steps),
uploaded images by content — so moving a slider re-runs only the decoder.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import torch
from PIL import Image

from sae_core.edit import Edit, apply_edits, validate_edits
from sae_core.sae import SparseAutoencoder

from .kandinsky import KandinskyPipes

RESOLUTIONS = (64, 128, 256, 384, 512, 640, 768, 1024)


@torch.no_grad()
def steer_embedding(sae: SparseAutoencoder, x_bd: torch.Tensor, edits: list[Edit]) -> torch.Tensor:
    """Apply the edits to embeddings x [B, d] in delta form (see the module docstring)."""
    sae.eval()
    return apply_edits(sae, x_bd, edits)


class Steerer:
    """Holds the pipelines and the steering SAE; one lock serialises generation."""

    def __init__(self, pipes: KandinskyPipes, sae: SparseAutoencoder, device: str = "cpu", cache_size: int = 64):
        if sae.cfg.d_in != pipes.embed_dim:
            raise ValueError(f"the steering SAE reads {sae.cfg.d_in}-d inputs but the Kandinsky prior's embeddings are "
                             f"{pipes.embed_dim}-d; train it on `clipsae embed --model kandinsky-2-2-prior` activations")
        self.pipes, self.sae, self.device = pipes, sae.to(device).eval(), device
        self._cache: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._cache_size = cache_size
        self.prior_calls = 0
        self.lock = threading.Lock()

    def prior_embeds(self, prompt: str, seed: int, steps: int, negative_prompt: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """(image_embeds, negative_image_embeds) [1, d], cached per (prompt, negative, seed, steps)."""
        prompt = (prompt or "").strip()
        if not prompt:
            raise ValueError("the prompt is empty; describe an image (for example: a red horse on a beach)")
        def run_prior() -> tuple[torch.Tensor, torch.Tensor]:
            out = self.pipes.prior(prompt, negative_prompt=negative_prompt or None, num_inference_steps=int(steps),
                                   generator=torch.Generator().manual_seed(int(seed)))
            self.prior_calls += 1
            return out.image_embeds.detach(), out.negative_image_embeds.detach()

        return self._cached(("prompt", prompt, negative_prompt, int(seed), int(steps)), run_prior)

    def start_embeds(self, prompt: str, seed: int, prior_steps: int, negative_prompt: str = "",
                     image: Image.Image | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedding steering starts from: the uploaded image's if given, else the prompt's
        prior output. Both are cached, so asking again (the next slider move) costs nothing."""
        if image is None:
            return self.prior_embeds(prompt, seed, prior_steps, negative_prompt)
        image = image.convert("RGB")
        key = ("image", hashlib.sha256(image.tobytes()).hexdigest(), image.size)
        return self._cached(key, lambda: self.image_embeds(image))

    def _cached(self, key: tuple, compute) -> tuple[torch.Tensor, torch.Tensor]:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = compute()
        self._cache[key] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return value

    @torch.no_grad()
    def image_embeds(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding of an uploaded image by the prior's own image encoder (+ the zero-image negative)."""
        prior = self.pipes.prior
        pixels = prior.image_processor(images=[image.convert("RGB")], return_tensors="pt").pixel_values
        pixels = pixels.to(device=prior.image_encoder.device, dtype=prior.image_encoder.dtype)
        emb = prior.image_encoder(pixels).image_embeds
        neg = prior.image_encoder(torch.zeros_like(pixels)).image_embeds
        return emb, neg

    def decode(self, embeds: torch.Tensor, negative: torch.Tensor, seed: int, steps: int, size: int) -> Image.Image:
        if int(size) not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))}; got {size!r}")
        if not 1 <= int(steps) <= 200:
            raise ValueError(f"steps must be between 1 and 200; got {steps!r}")
        with self.lock:
            out = self.pipes.decoder(image_embeds=embeds, negative_image_embeds=negative, height=int(size),
                                     width=int(size), num_inference_steps=int(steps),
                                     generator=torch.Generator().manual_seed(int(seed)))
        return out.images[0]

    def steer(self, prompt: str, edits: list[Edit], seed: int = 0, steps: int = 25, size: int = 512,
              prior_steps: int = 25, negative_prompt: str = "", image: Image.Image | None = None,
              with_original: bool = True) -> tuple[Image.Image | None, Image.Image]:
        """(original, steered) images for the same seed; the original is None if not asked for."""
        validate_edits(edits, self.sae.cfg.d_sae)
        x, neg = self.start_embeds(prompt, seed, prior_steps, negative_prompt, image)
        x_steered = steer_embedding(self.sae, x.to(self.device), edits)
        original = self.decode(x, neg, seed, steps, size) if with_original else None
        return original, self.decode(x_steered, neg, seed, steps, size)

    @torch.no_grad()
    def active_latents(self, x: torch.Tensor, n: int = 20) -> list[tuple[int, float]]:
        """The n most active latents of an embedding, as (latent, activation)."""
        f = self.sae.encode(x.float().to(self.device))[0]
        vals, idx = f.topk(min(n, f.numel()))
        return [(int(i), float(v)) for v, i in zip(vals, idx) if v > 0]
