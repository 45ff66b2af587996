"""Steering Kandinsky 2.2 with SAE latents of its prior's image-embedding space (no gradio).

    x  = prior(prompt, seed)          the image embedding Kandinsky conditions on
    f  = sae.encode(x)                latents
    f' = edit(f)                      multiply / set a latent, or leave f and add a direction
    x' = x + s·(f' − f) @ W_dec [+ Σ v·s·W_dec[i] for "add"]

This delta form (sae_core.edit) equals dec(f') + (x − dec(f)) — the SAE's error term is
kept — and is bit-exact when nothing changes (f' − f is exactly zero), so multipliers of
1.0 give back the unsteered image for the same seed. `s` undoes the SAE's input normalisation.
Starting embeddings are cached — prior outputs per (prompt, negative prompt, seed, steps),
uploaded images by content — and so are decoded originals, so moving a slider re-runs the
decoder once. Every pipeline call checks its job's cancel flag at each step (`app.jobs`).
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from sae_core.edit import Edit, apply_edits, validate_edits
from sae_core.sae import SparseAutoencoder

from .jobs import FairQueue, Job, in_generation_thread
from .kandinsky import KandinskyPipes

RESOLUTIONS = (64, 128, 256, 384, 512, 640, 768, 1024)
MAX_STEPS = 200
DEFAULT_GUIDANCE = 4.0
"""The decoder's classifier-free guidance scale unless asked otherwise (Kandinsky 2.2's default)."""
MAX_GUIDANCE = 30.0


def parse_edits(text: str) -> list[tuple[int, float]]:
    """'12:2.5, 40:0' -> [(12, 2.5), (40, 0.0)]; a clear ValueError for anything else
    (latent ids are checked against the SAE later, by `validate_edits`)."""
    out = []
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if ":" not in part:
            raise ValueError(f"write edits as latent:value pairs, e.g. 12:2.5, 40:0; got {part!r}")
        lat, val = (p.strip() for p in part.split(":", 1))
        try:
            latent, value = float(lat), float(val)
        except ValueError:
            raise ValueError(f"write edits as latent:value pairs with numbers; got {part!r}") from None
        if not latent.is_integer():
            raise ValueError(f"a latent id is a whole number; got {lat!r} in {part!r}")
        out.append((int(latent), value))
    return out


@torch.no_grad()
def steer_embedding(sae: SparseAutoencoder, x_bd: torch.Tensor, edits: list[Edit]) -> torch.Tensor:
    """Apply the edits to embeddings x [B, d] in delta form (see the module docstring)."""
    sae.eval()
    return apply_edits(sae, x_bd, edits)


@dataclass
class Generation:
    """One steering run: the embeddings before and after the edits, and the images."""

    x: torch.Tensor
    """The starting embedding [1, d] (prior output or uploaded image's)."""
    x_steered: torch.Tensor
    """After the edits [1, d]."""
    negative: torch.Tensor
    original: Image.Image | None
    steered: Image.Image


def _step_callback(
    job: Job, label: str, steps: int, done: float, parts: float, lock: threading.RLock | None = None
) -> Callable:
    """diffusers' `callback_on_step_end`: stop on the job's cancel flag, report the step, and
    let a new job of another session run first (`Job.step_boundary`): while paused, the
    pipeline's call state is saved and `lock` released (`_suspend_pipe`)."""

    def on_step_end(pipe, i: int, t, callback_kwargs: dict) -> dict:
        if i + 1 < steps:  # checks the cancel flag, then perhaps pauses
            job.step_boundary(lambda: _suspend_pipe(pipe, lock))
        else:
            job.check()
        job.progress((done + (i + 1) / steps) / parts, f"{label}: step {i + 1}/{steps}")
        return callback_kwargs

    return on_step_end


def _suspend_pipe(pipe, lock: threading.RLock | None) -> Callable[[bool], None]:
    """Save what another call of the same pipeline would overwrite (its scheduler's state and
    the pipeline's per-call attributes), release `lock`; the returned function re-takes the
    lock and, resuming (True), puts the saved state back."""
    attrs = {k: v for k, v in vars(pipe).items() if k.startswith("_") and not k.startswith("__")}
    scheduler = copy.deepcopy(pipe.scheduler.__dict__)
    if lock is not None:
        lock.release()

    def resume(restore: bool) -> None:
        if lock is not None:
            lock.acquire()
        if restore:
            vars(pipe).update(attrs)
            pipe.scheduler.__dict__.clear()
            pipe.scheduler.__dict__.update(scheduler)

    return resume


class Steerer:
    """Holds the pipelines and the steering SAE. One `FairQueue` orders generations between
    users; a lock around each pipeline call keeps the shared pipelines single-threaded."""

    def __init__(self, pipes: KandinskyPipes, sae: SparseAutoencoder, device: str = "cpu", cache_size: int = 64):
        if sae.cfg.d_in != pipes.embed_dim:
            raise ValueError(
                f"the steering SAE reads {sae.cfg.d_in}-d inputs but the Kandinsky prior's embeddings are "
                f"{pipes.embed_dim}-d; train it on `clipsae embed --model kandinsky-2-2-prior` activations"
            )
        self.pipes, self.sae, self.device = pipes, sae.to(device).eval(), device
        self._cache: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._originals: OrderedDict[tuple, Image.Image] = OrderedDict()
        self._cache_size = cache_size
        self.prior_calls = 0
        self.decoder_calls = 0
        self.lock = threading.RLock()
        self.queue = FairQueue()

    # ---------------------------------------------------------------- starting embeddings
    def prior_embeds(
        self, prompt: str, seed: int, steps: int, negative_prompt: str = "", job: Job | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image_embeds, negative_image_embeds) [1, d], cached per (prompt, negative, seed, steps)."""
        return self._cached(
            self.start_key(prompt, seed, steps, negative_prompt),
            lambda: self._run_prior(prompt.strip(), seed, steps, negative_prompt, job or Job()),
        )

    def _run_prior(
        self, prompt: str, seed: int, steps: int, negative_prompt: str, job: Job
    ) -> tuple[torch.Tensor, torch.Tensor]:
        job.check()

        def run():
            with self.lock:
                return self.pipes.prior(
                    prompt,
                    negative_prompt=negative_prompt or None,
                    num_inference_steps=int(steps),
                    generator=torch.Generator().manual_seed(int(seed)),
                    callback_on_step_end=_step_callback(job, "prior", int(steps), 0, 1, self.lock),
                )

        out = in_generation_thread(run)
        self.prior_calls += 1
        return out.image_embeds.detach(), out.negative_image_embeds.detach()

    def start_key(
        self, prompt: str, seed: int, prior_steps: int, negative_prompt: str = "", image: Image.Image | None = None
    ) -> tuple:
        """The cache key of a starting embedding (refuses an empty prompt without an image)."""
        if image is not None:
            image = image.convert("RGB")
            return ("image", hashlib.sha256(image.tobytes()).hexdigest(), image.size)
        prompt = (prompt or "").strip()
        if not prompt:
            raise ValueError("the prompt is empty; describe an image (for example: a red horse on a beach)")
        return ("prompt", prompt, negative_prompt, int(seed), int(prior_steps))

    def start_embeds(
        self,
        prompt: str,
        seed: int,
        prior_steps: int,
        negative_prompt: str = "",
        image: Image.Image | None = None,
        job: Job | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedding steering starts from: the uploaded image's if given, else the prompt's
        prior output. Both are cached, so asking again (the next slider move) costs nothing."""
        if image is None:
            return self.prior_embeds(prompt, seed, prior_steps, negative_prompt, job=job)
        image = image.convert("RGB")
        return self._cached(self.start_key(prompt, seed, prior_steps, image=image), lambda: self.image_embeds(image))

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
        """Embedding of an image by the prior's own image encoder (+ the zero-image negative)."""
        prior = self.pipes.prior
        pixels = prior.image_processor(images=[image.convert("RGB")], return_tensors="pt").pixel_values
        pixels = pixels.to(device=prior.image_encoder.device, dtype=prior.image_encoder.dtype)
        with self.lock:
            emb = prior.image_encoder(pixels).image_embeds
            neg = prior.image_encoder(torch.zeros_like(pixels)).image_embeds
        return emb, neg

    def neutral_embedding(self) -> torch.Tensor:
        """The prior's embedding of an all-zero image [1, d]: its default negative, and the
        neutral base of feature icons."""
        return self._cached(("neutral",), lambda: self.image_embeds(Image.new("RGB", (64, 64))))[1]

    # ---------------------------------------------------------------- decoding
    def decode(
        self,
        embeds: torch.Tensor,
        negative: torch.Tensor,
        seed: int,
        steps: int,
        size: int,
        job: Job | None = None,
        label: str = "decoder",
        done: float = 0.0,
        parts: float = 1.0,
        guidance: float = DEFAULT_GUIDANCE,
    ) -> Image.Image:
        """One image from an embedding; stops at the next step once `job` is cancelled.
        `guidance` is the decoder's classifier-free guidance scale (1: none)."""
        check_generation(steps, size)
        job = job or Job()
        job.check()

        def run():
            with self.lock:
                return self.pipes.decoder(
                    image_embeds=embeds,
                    negative_image_embeds=negative,
                    height=int(size),
                    width=int(size),
                    num_inference_steps=int(steps),
                    guidance_scale=float(guidance),
                    generator=torch.Generator().manual_seed(int(seed)),
                    callback_on_step_end=_step_callback(job, label, int(steps), done, parts, self.lock),
                )

        out = in_generation_thread(run)  # lower CPU priority, half the cores: browsing stays fast
        self.decoder_calls += 1
        return out.images[0]

    def generate(
        self,
        prompt: str,
        edits: list[Edit],
        seed: int = 0,
        steps: int = 25,
        size: int = 512,
        prior_steps: int = 25,
        negative_prompt: str = "",
        image: Image.Image | None = None,
        with_original: bool = True,
        job: Job | None = None,
        guidance: float = DEFAULT_GUIDANCE,
    ) -> Generation:
        """The steered image (and the original, decoded once per start/seed/steps/size/guidance and cached)."""
        edits = validate_edits(edits, self.sae.cfg.d_sae) or list(edits)
        check_generation(steps, size)
        job = job or Job()
        key = self.start_key(prompt, seed, prior_steps, negative_prompt, image)
        x, neg = self.start_embeds(prompt, seed, prior_steps, negative_prompt, image, job=job)
        x_steered = steer_embedding(self.sae, x.to(self.device), edits).to(x.dtype)
        original = None
        okey = (key, int(seed), int(steps), int(size), float(guidance))
        parts = 2.0 if with_original and okey not in self._originals else 1.0
        if with_original:
            original = self._originals.get(okey)
            if original is not None:
                self._originals.move_to_end(okey)
            else:
                original = self.decode(x, neg, seed, steps, size, job, "original", 0.0, parts, guidance)
                self._originals[okey] = original
                if len(self._originals) > 16:
                    self._originals.popitem(last=False)
        steered = self.decode(x_steered, neg, seed, steps, size, job, "steered", parts - 1.0, parts, guidance)
        return Generation(x=x, x_steered=x_steered, negative=neg, original=original, steered=steered)

    def steer(
        self,
        prompt: str,
        edits: list[Edit],
        seed: int = 0,
        steps: int = 25,
        size: int = 512,
        prior_steps: int = 25,
        negative_prompt: str = "",
        image: Image.Image | None = None,
        with_original: bool = True,
        job: Job | None = None,
    ) -> tuple[Image.Image | None, Image.Image]:
        """(original, steered) images for the same seed; the original is None if not asked for."""
        g = self.generate(prompt, edits, seed, steps, size, prior_steps, negative_prompt, image, with_original, job)
        return g.original, g.steered

    # ---------------------------------------------------------------- reading latents
    @torch.no_grad()
    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """SAE activations [F] of one embedding [1, d]."""
        return self.sae.encode(x.float().to(self.device))[0]

    @torch.no_grad()
    def active_latents(self, x: torch.Tensor, n: int = 20) -> list[tuple[int, float]]:
        """The n most active latents of an embedding, as (latent, activation)."""
        f = self.latents(x)
        vals, idx = f.topk(min(n, f.numel()))
        return [(int(i), float(v)) for v, i in zip(vals, idx) if v > 0]


def check_generation(steps: int, size: int) -> None:
    """Refuse unknown resolutions and step counts out of range (ValueError)."""
    if int(size) not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))}; got {size!r}")
    if not 1 <= int(steps) <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}; got {steps!r}")
