"""Label quality: does a latent's label, read by CLIP, pick out the images the latent fires on?

A latent's label is the keywords of its interpretation (`clipsae interpret`) when it has a
clear pattern, else its vocabulary label words (atlases of `embed`-space SAEs). Its text
embedding is the normalised mean of CLIP's unit text embeddings of "a photo of a {word}" over
those words (the template of the vocabulary labels), by the text tower of the atlas's encoder.
Each held-out image is scored by the cosine of its CLIP image embedding with that text; the
label AUC is the ROC AUC of that score separating the images the latent fires on (score > 0)
from those it does not (ties count one half): 1 = the label ranks every firing image first,
0.5 = chance. Image embeddings: the held-out rows themselves for `embed` caches, else the
encoder's embeddings of the held-out images. Every firing image is used; the non-firing ones
are a seeded sample of at most `max_negatives` images (all of them when there are fewer).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from precompute.atlas_format import ENCODER_FILE, LABEL_VOCAB
from precompute.encoders import Encoder, load_encoder, spec_from_metadata
from precompute.interpret import NO_PATTERN, read_interpretations
from precompute.labels import TEMPLATE
from sae_core.progress import Progress

from .card_mono import unit_rows
from .card_pass import HeldOut

CHUNK = 1024


def atlas_labels(atlas: Path, manifest: dict[str, Any]) -> tuple[dict[int, list[str]], str]:
    """Per latent its label words (interpretation keywords first, else vocabulary words), and
    where they came from ("" when the atlas has neither)."""
    words: dict[int, list[str]] = {}
    sources = []
    if manifest.get("labels"):
        vocab = json.loads((atlas / LABEL_VOCAB).read_text())
        ids = np.load(atlas / "label_words.npy", mmap_mode="r")
        words = {s: [vocab[int(w)] for w in row if w >= 0] for s, row in enumerate(np.asarray(ids))}
        sources.append("vocabulary labels")
    doc = read_interpretations(atlas, manifest)
    if doc is not None:
        n = 0
        for row in doc["latents"]:
            if row["interpretation"] != NO_PATTERN and row["keywords"]:
                words[int(row["latent"])] = [w for w, _ in row["keywords"]]
                n += 1
        if n:
            sources.insert(0, "interpretation keywords")
    return {s: w for s, w in words.items() if w}, " and ".join(sources)


def atlas_encoder(atlas: Path, device) -> Encoder:
    """The atlas's encoder at `embed` (its text tower and image embeddings), from encoder.json."""
    path = atlas / ENCODER_FILE
    if not path.is_file():
        raise ValueError(f"{atlas} has no {ENCODER_FILE} (built from a plain matrix): no text encoder is known")
    enc = json.loads(path.read_text())
    if enc.get("model_config_path") and not Path(enc["model_config_path"]).is_absolute():
        enc["model_config_path"] = str((atlas / enc["model_config_path"]).resolve())
    spec = replace(spec_from_metadata(enc), hook="embed", tokens="cls", patch_tokens=False)
    if spec.is_kandinsky:
        raise ValueError("the Kandinsky prior's image encoder has no text tower: label quality needs an OpenCLIP atlas")
    return load_encoder(spec, device)


def label_texts(encoder: Encoder, words: dict[int, list[str]], n_latents: int) -> np.ndarray:
    """[F, D] unit label embeddings (NaN rows for latents without a label)."""
    vocab = sorted({w for ws in words.values() for w in ws})
    emb = encoder.text_embeddings([TEMPLATE.format(w) for w in vocab]).cpu().numpy().astype(np.float64)
    at = {w: i for i, w in enumerate(vocab)}
    out = np.full((n_latents, emb.shape[1]), np.nan, dtype=np.float32)
    for s, ws in words.items():
        out[s] = unit_rows(emb[[at[w] for w in ws]].mean(axis=0, keepdims=True))[0]
    return out


def heldout_image_embeddings(held: HeldOut, encoder: Encoder, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(unit CLIP image embeddings [N, D], present [N]): the rows of an `embed` cache, else the
    encoder's embeddings of the held-out images."""
    if held.meta.get("hook_name") == "embed" and held.tokens_per_image == 1:
        return unit_rows(held.source.read(0, held.n_images)), np.ones(held.n_images, dtype=bool)
    from .card_evaluator import embed_images

    vectors, present, _ = embed_images(
        held,
        encoder.preprocess,
        lambda px: encoder.encode(px)[0][:, 0],
        batch_size,
        "label quality: CLIP image embeddings",
    )
    return vectors, present


def label_auc(
    codes: sp.csr_matrix, images: np.ndarray, texts: np.ndarray, max_negatives: int = 10_000, seed: int = 0
) -> np.ndarray:
    """[F] ROC AUC of each labelled latent (NaN without a label, or when it fires on no image or
    on every image) from image scores [N, F], unit image embeddings [N, D], label embeddings [F, D]."""
    csc = sp.csc_matrix(codes)
    csc.sort_indices()
    n, f = csc.shape
    sample = (
        np.arange(n)
        if n <= max_negatives
        else np.sort(np.random.default_rng(seed).choice(n, size=max_negatives, replace=False))
    )
    # float64 products rounded to float32: equal images get equal scores whichever kernel computed them
    pool, texts64 = images[sample].astype(np.float64), texts.astype(np.float64)
    labelled = np.flatnonzero(~np.isnan(texts[:, 0]))
    auc = np.full(f, np.nan)
    bar = Progress(len(labelled), "label quality", unit="latents")
    for a in range(0, len(labelled), CHUNK):
        chunk = labelled[a : a + CHUNK]
        pool_scores = (pool @ texts64[chunk].T).astype(np.float32)  # [M, c]
        for j, s in enumerate(chunk):
            pos = csc.indices[csc.indptr[s] : csc.indptr[s + 1]]
            if pos.size == 0 or pos.size == n:
                continue
            hit = np.searchsorted(pos, sample)
            is_pos = (hit < pos.size) & (pos[np.minimum(hit, pos.size - 1)] == sample)
            neg = np.sort(pool_scores[~is_pos, j])
            if neg.size == 0:
                continue
            p = (images[pos].astype(np.float64) @ texts64[s]).astype(np.float32)
            below = np.searchsorted(neg, p, side="left")
            ties = np.searchsorted(neg, p, side="right") - below
            auc[s] = (below.sum() + 0.5 * ties.sum()) / (pos.size * neg.size)
        bar.update(len(chunk))
    bar.close()
    return auc
