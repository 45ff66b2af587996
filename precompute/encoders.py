"""Image encoders whose activations we cache: OpenCLIP ViTs (any hook) and the image
encoder of the Kandinsky 2.2 prior (the 1280-d space Kandinsky conditions on).

Hooks (OpenCLIP):
- `embed`                 the projected image embedding, exactly `model.encode_image`
- `blocks.L.resid_post`   output of residual block L            [B, T, width]
- `blocks.L.mlp_out`      the MLP branch as added to the stream  [B, T, width]
- `blocks.L.attn_out`     the attention branch as added          [B, T, width]
Token 0 is CLS; `tokens` picks cls (token 0), spatial (1..T-1) or all. For `embed`,
`patch_tokens=True` also returns the patch tokens mapped into the embedding space,
`ln_post(tokens) @ proj` (exact for the CLS token, which is the embedding itself).

Weights: an OpenCLIP pretrained tag (resolved by OpenCLIP: Hugging Face hub or its
cache), a local checkpoint file, or `none` for random weights fixed by `seed`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from sae_core.files import sha256_file
from sae_core.interop.hooks import canonical_hook

from .configs import KANDINSKY_ALIASES, EncoderSpec, Tokens
from .hub_ids import KANDINSKY_PRIOR

_HOOK_RE = re.compile(r"^blocks\.(\d+)\.(resid_post|mlp_out|attn_out)$")


_ARMED = "_armed"


class _StopForward(Exception):
    """Raised from a hook to skip the layers after the one we need."""


@dataclass
class Encoder:
    """A loaded encoder: `preprocess` (PIL -> tensor, picklable) and `encode` (batch -> rows)."""

    spec: EncoderSpec
    module: nn.Module
    preprocess: Any
    dim: int
    token_indices: list[int]
    n_patches: int
    metadata: dict[str, Any] = field(default_factory=dict)
    _capture: dict[str, torch.Tensor] = field(default_factory=dict)
    _tokenizer: Any = field(default=None, repr=False)

    @property
    def tokens_per_image(self) -> int:
        return len(self.token_indices)

    @torch.inference_mode()
    def encode(self, pixels_bchw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows [B, tokens_per_image, dim] and, with patch_tokens, patches [B, n_patches, dim]."""
        device = next(self.module.parameters()).device
        pixels = pixels_bchw.to(device, non_blocking=True)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else _null()
        with autocast:
            return self._encode(pixels)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Unit-norm CLIP text embeddings [len(texts), d], float32 on the model's device: the one
        place text is embedded (vocabulary labels, text -> latent search, zero-shot classifiers,
        heat maps). No gradient, but usable as a constant in a graph (not an inference tensor)."""
        import open_clip

        if self.spec.is_kandinsky or not hasattr(self.module, "encode_text"):
            raise ValueError(f"{self.spec.model} has no text tower; text embeddings need an OpenCLIP model")
        if self._tokenizer is None:  # once: open_clip logs three INFO lines per get_tokenizer call
            self._tokenizer = open_clip.get_tokenizer(self.metadata["model_name"])
        tokenizer = self._tokenizer
        device = next(self.module.parameters()).device
        parts = [
            self.module.encode_text(tokenizer(texts[i : i + batch_size]).to(device)).float()
            for i in range(0, len(texts), batch_size)
        ]
        return torch.nn.functional.normalize(torch.cat(parts), dim=-1)

    def _encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.spec.is_kandinsky:
            return self.module(pixel_values=pixels).image_embeds.float()[:, None, :], None
        self._capture.clear()
        self._capture[_ARMED] = True  # the capture hooks act only inside encode(): the module
        try:  # stays a plain model for everything else (evaluation, heat maps)
            return self._encode_clip(pixels)
        finally:
            self._capture.clear()

    def _encode_clip(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.spec.hook == "embed":
            emb = self.module.encode_image(pixels).float()
            patches = None
            if self.spec.patch_tokens:
                visual = self.module.visual
                tokens = self._capture["last"]
                patches = (visual.ln_post(tokens[:, 1:]) @ visual.proj).float()
            return emb[:, None, :], patches
        try:
            self.module.encode_image(pixels)
        except _StopForward:
            pass
        acts = self._capture["hook"].float()
        return acts[:, self.token_indices], None


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def token_indices(tokens: Tokens, n_tokens: int) -> list[int]:
    """Token positions of a selection: cls (0), spatial (1..T-1) or all (0..T-1)."""
    return {"cls": [0], "spatial": list(range(1, n_tokens)), "all": list(range(n_tokens))}[tokens]


def hook_module(model: nn.Module, hook: str) -> nn.Module:
    """The sub-module of an OpenCLIP model whose output is the activation `hook` names:
    `visual` for embed, else the block (resid_post), its ls_2 (mlp_out) or ls_1 (attn_out)."""
    if hook == "embed":
        return model.visual
    m = _HOOK_RE.match(canonical_hook(hook) or hook)
    if not m:
        raise ValueError(f"hook must be embed or blocks.L.{{resid_post|mlp_out|attn_out}}; got {hook!r}")
    blocks = model.visual.transformer.resblocks
    layer, site = int(m.group(1)), m.group(2)
    if layer >= len(blocks):
        raise ValueError(f"hook {hook}: the model has {len(blocks)} blocks (0..{len(blocks) - 1})")
    block = blocks[layer]
    return {"resid_post": block, "mlp_out": block.ls_2, "attn_out": block.ls_1}[site]


def batch_first(out: torch.Tensor, transformer: nn.Module) -> torch.Tensor:
    """Token activations as [B, T, D] whatever the transformer's layout (the transpose is its own inverse)."""
    return out if getattr(transformer, "batch_first", True) else out.transpose(0, 1)


def _load_open_clip(spec: EncoderSpec, device: torch.device) -> Encoder:
    import open_clip

    name = spec.model
    config_path = None
    if name.endswith(".json") and Path(name).is_file():
        config_path = str(Path(name).resolve())
        open_clip.add_model_config(name)  # a local model config, registered under its file stem
        name = Path(name).stem
    if name not in open_clip.list_models():
        raise ValueError(f"unknown OpenCLIP model {spec.model!r}; see open_clip.list_models() or pass a config .json")
    meta: dict[str, Any] = {"model_name": name, "pretrained": spec.pretrained}
    if config_path:
        meta["model_config_path"] = config_path
    try:
        if spec.pretrained == "none":
            torch.manual_seed(spec.seed)
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
            meta["random_weights"] = True
            meta["seed"] = spec.seed
        else:
            if os.path.isfile(spec.pretrained):
                meta["weights_sha256"] = sha256_file(spec.pretrained)
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=spec.pretrained)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ValueError(
            f"could not load pretrained weights {spec.pretrained!r} for {name}: {exc}. "
            "Without network access, pass a local checkpoint with --pretrained PATH "
            "(or have it in the Hugging Face cache), or --pretrained none for random weights."
        ) from None
    model = model.to(device).eval()
    visual = model.visual
    transformer = visual.transformer
    n_tokens = visual.grid_size[0] * visual.grid_size[1] + 1
    enc = Encoder(spec, model, preprocess, dim=0, token_indices=[0], n_patches=n_tokens - 1, metadata=meta)
    capture = enc._capture
    if spec.hook == "embed":
        enc.dim = int(model.visual.output_dim)
        if spec.patch_tokens:
            last = transformer.resblocks[-1]

            def keep_last(module, inputs, output):
                if capture.get(_ARMED):
                    capture["last"] = batch_first(output, transformer)

            last.register_forward_hook(keep_last)
    else:
        target = hook_module(model, spec.hook)
        site = spec.hook.rsplit(".", 1)[1]
        block = transformer.resblocks[int(spec.hook.split(".")[1])]

        def hook(module, inputs, output):
            if not capture.get(_ARMED):
                return
            capture["hook"] = batch_first(output, transformer)
            if site != "attn_out":  # attn_out's block still has to finish; later ones are skipped
                raise _StopForward

        target.register_forward_hook(hook)
        if site == "attn_out":

            def stop(module, inputs, output):
                if capture.get(_ARMED):
                    raise _StopForward

            block.register_forward_hook(stop)
        enc.dim = int(transformer.width)
        enc.token_indices = token_indices(spec.tokens, n_tokens)
    meta.update(
        {
            "hook_name": spec.hook,
            "tokens": spec.tokens,
            "image_size": int(visual.image_size[0]),
            "preprocessing": repr(preprocess),
        }
    )
    return enc


class _HFPreprocess:
    """CLIPImageProcessor as a picklable PIL -> tensor callable (for decode workers)."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


def _load_kandinsky_prior(spec: EncoderSpec, device: torch.device) -> Encoder:
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    if spec.hook != "embed":
        raise ValueError("the Kandinsky prior encoder has one hook: embed (its 1280-d image_embeds)")
    source = KANDINSKY_PRIOR if spec.model in KANDINSKY_ALIASES else spec.model
    try:
        model = CLIPVisionModelWithProjection.from_pretrained(source, subfolder="image_encoder")
        processor = CLIPImageProcessor.from_pretrained(source, subfolder="image_processor")
    except OSError as exc:
        raise ValueError(
            f"could not load the Kandinsky 2.2 prior image encoder from {source!r}: {exc}. "
            "Without network access, pass a local diffusers folder (with image_encoder/ and "
            "image_processor/) as --model, or have it in the Hugging Face cache."
        ) from None
    model = model.to(device).eval()
    meta = {
        "model_name": source,
        "pretrained": "diffusers",
        "hook_name": "embed",
        "tokens": "cls",
        "image_size": int(model.config.image_size),
        "preprocessing": processor.to_json_string(),
    }
    return Encoder(
        spec,
        model,
        _HFPreprocess(processor),
        dim=int(model.config.projection_dim),
        token_indices=[0],
        n_patches=0,
        metadata=meta,
    )


def spec_from_metadata(meta: dict[str, Any], patch_tokens: bool = False) -> EncoderSpec:
    """The EncoderSpec that reproduces an activation cache's (or an SAE cfg's) provenance:
    model (or its local config file), weights, hook, tokens and the seed of random weights."""
    if "model_name" not in meta or "hook_name" not in meta:
        raise ValueError(
            "no encoder is recorded (model_name / hook_name missing); name it with --model, --pretrained and --hook"
        )
    hook = meta["hook_name"]
    kandinsky = str(meta["model_name"]).startswith("kandinsky") or meta.get("pretrained") == "diffusers"
    return EncoderSpec(
        model=meta.get("model_config_path") or meta["model_name"],
        pretrained=str(meta.get("pretrained", "none")),
        hook=hook,
        tokens=meta.get("tokens", "cls") if hook != "embed" else "cls",
        patch_tokens=patch_tokens and hook == "embed" and not kandinsky,
        seed=int(meta.get("seed", 0)),
    )


def load_encoder(spec: EncoderSpec, device: torch.device | str = "cpu") -> Encoder:
    """Load the model named by `spec` on `device`, with its hook installed."""
    device = torch.device(device)
    if spec.is_kandinsky:
        return _load_kandinsky_prior(spec, device)
    return _load_open_clip(spec, device)
