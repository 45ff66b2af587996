"""Labels for latents of SAEs on the CLIP `embed` space: the vocabulary words whose CLIP
text embeddings ("a photo of a {word}") have the highest cosine with the latent's decoder
direction (DN-CBM style). Meaningless for layer hooks, whose space is not the text space.

The text tower is the one the activations came from: same OpenCLIP model and weights
(tag, local file, or the same random seed).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_core.sae import SparseAutoencoder

from .encoders import load_encoder, spec_from_metadata

DEFAULT_VOCAB = Path(__file__).with_name("vocab") / "visual_concepts.txt"
TEMPLATE = "a photo of a {}"
TOP_WORDS = 5


def read_vocab(path: str | Path | None = None) -> list[str]:
    path = Path(path) if path else DEFAULT_VOCAB
    if not path.exists():
        raise ValueError(f"vocabulary file {path} not found")
    words = [w.strip() for w in path.read_text().splitlines() if w.strip() and not w.startswith("#")]
    if not words:
        raise ValueError(f"vocabulary file {path} is empty")
    return words


def text_embeddings(
    meta: dict[str, Any], words: list[str], device: torch.device | str = "cpu", batch: int = 256
) -> np.ndarray:
    """Unit-norm CLIP text embeddings [len(words), d] of TEMPLATE.format(word), by the text tower
    of the model the activations came from (`Encoder.text_embeddings`)."""
    spec = replace(spec_from_metadata(meta), hook="embed", tokens="cls", patch_tokens=False)
    encoder = load_encoder(spec, device)
    return encoder.text_embeddings([TEMPLATE.format(w) for w in words], batch).cpu().numpy()


def top_words(directions_sd: np.ndarray, text_vd: np.ndarray, words: list[str], n: int = TOP_WORDS) -> list[dict]:
    """Per latent: the n words of highest cosine with its direction, with the cosines."""
    dirs = directions_sd / np.linalg.norm(directions_sd, axis=1, keepdims=True).clip(1e-12)
    cos = dirs @ text_vd.T
    idx = np.argsort(-cos, axis=1)[:, :n]
    return [
        {"words": [words[j] for j in row], "scores": [round(float(cos[i, j]), 4) for j in row]}
        for i, row in enumerate(idx)
    ]


def label_latents(
    sae: SparseAutoencoder,
    meta: dict[str, Any],
    vocab_path: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> list[dict]:
    if "model_name" not in meta:
        raise ValueError("the activations carry no model name (a plain .npy), so no text encoder is known")
    words = read_vocab(vocab_path)
    text = text_embeddings(meta, words, device)
    if text.shape[1] != sae.cfg.d_in:
        raise ValueError(f"text embeddings are {text.shape[1]}-d but the SAE reads {sae.cfg.d_in}-d inputs")
    return top_words(sae.W_dec.detach().cpu().numpy(), text, words)
