"""An OpenCLIP model with a switchable splice at one hook: the hooked activation is replaced
(by an SAE reconstruction, zeros or an edited reconstruction) and the forward continues.

    clip = SplicedClip(encoder, hook="blocks.9.resid_post", tokens="all")
    emb = clip.encode(pixels)                              # the untouched model
    emb = clip.encode(pixels, reconstruct(sae))            # SAE reconstruction spliced in
    emb = clip.encode(pixels, zero_ablate)                 # zero ablation
    emb = clip.encode(pixels, edit(sae, [Edit(5, "multiply", 0.0)]))

Only the token positions the SAE was trained on (`tokens`: cls, spatial or all) are
replaced; the other positions and every other layer are left as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from precompute.encoders import Encoder, Tokens, batch_first, hook_module, token_indices
from sae_core.edit import Edit, apply_edits
from sae_core.metrics import MetricsAccumulator
from sae_core.sae import SparseAutoencoder

SpliceFn = Callable[[Tensor], Tensor]
"""Maps the hooked activations [B, T, D] (the selected tokens) to their replacement."""


class SplicedClip:
    """An OpenCLIP model (from `precompute.encoders.load_encoder`) evaluated with or without a splice."""

    def __init__(self, encoder: Encoder, hook: str, tokens: Tokens = "cls"):
        if encoder.spec.is_kandinsky:
            raise ValueError(
                "evaluation needs an OpenCLIP model (image and text towers); "
                "the Kandinsky prior encoder has no text tower here"
            )
        self.encoder = encoder
        self.model = encoder.module
        self.preprocess = encoder.preprocess
        self.hook, self.tokens = hook, tokens
        self.target = hook_module(self.model, hook)
        visual = self.model.visual
        n_tokens = visual.grid_size[0] * visual.grid_size[1] + 1
        self.grid = tuple(int(g) for g in visual.grid_size)
        self.token_index = token_indices(tokens, n_tokens)
        self.device = next(self.model.parameters()).device
        self.model.requires_grad_(False)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())

    @contextmanager
    def spliced(self, fn: SpliceFn | None) -> Iterator[None]:
        """Within the block, the hook's output passes through `fn` (None: no splice)."""
        if fn is None:
            yield
            return
        transformer = self.model.visual.transformer

        def replace(module, inputs, output):
            if self.hook == "embed":
                return fn(output[:, None, :])[:, 0, :]
            acts = batch_first(output, transformer)
            new = acts.clone()
            new[:, self.token_index] = fn(acts[:, self.token_index]).to(acts.dtype)
            return batch_first(new, transformer)

        handle = self.target.register_forward_hook(replace)
        try:
            yield
        finally:
            handle.remove()

    def encode(self, pixels: Tensor, fn: SpliceFn | None = None) -> Tensor:
        """Image embeddings [B, d] (not normalised), with `fn` spliced in at the hook."""
        with self.spliced(fn):
            return self.model.encode_image(pixels.to(self.device)).float()

    @torch.no_grad()
    def encode_variants(self, pixels: Tensor, fns: list[SpliceFn | None]) -> list[Tensor]:
        """`encode(pixels, fn)` for each fn. At the `embed` hook the image tower runs once and
        each fn maps its output (the same numbers as a spliced forward, at 1/len(fns) the cost)."""
        if self.hook != "embed":
            return [self.encode(pixels, fn) for fn in fns]
        emb = self.encode(pixels)
        return [emb if fn is None else fn(emb[:, None, :])[:, 0, :].float() for fn in fns]

    @torch.no_grad()
    def text_classifier(self, classnames: list[str], templates: list[str], batch_size: int = 256) -> Tensor:
        """[C, d]: per class, the normalised mean of the normalised template embeddings."""
        rows = []
        for name in classnames:
            mean = self.encoder.text_embeddings([t.format(name) for t in templates], batch_size).mean(dim=0)
            rows.append(torch.nn.functional.normalize(mean, dim=0))
        return torch.stack(rows)

    @torch.no_grad()
    def text_embedding(self, text: str) -> Tensor:
        """The normalised text embedding [d] of one prompt."""
        return self.text_classifier([text], ["{}"])[0]


def on_rows(fn: Callable[[Tensor], Tensor]) -> SpliceFn:
    """Lift a row function [N, D] -> [N, D] to the token layout [B, T, D]."""

    def apply(acts: Tensor) -> Tensor:
        b, t, d = acts.shape
        return fn(acts.reshape(b * t, d).float()).reshape(b, t, d)

    return apply


def reconstruct(sae: SparseAutoencoder, stats: MetricsAccumulator | None = None) -> SpliceFn:
    """Replace the activations by the SAE's reconstruction; optionally accumulate its metrics."""
    sae.eval()

    def fn(x: Tensor) -> Tensor:
        out = sae(x)
        if stats is not None:
            stats.update(out.x_norm_bd, out.x_hat_norm_bd, out.f_bs)
        return out.x_hat_bd

    return on_rows(fn)


def zero_ablate(acts: Tensor) -> Tensor:
    """Replace the activations by zeros (the CE-recovered floor)."""
    return torch.zeros_like(acts)


def edit(sae: SparseAutoencoder, edits: list[Edit]) -> SpliceFn:
    """Apply latent edits in delta form (the SAE error term kept): no edits = identity, bit-exact."""
    sae.eval()
    return on_rows(lambda x: apply_edits(sae, x, edits))
