"""The text side of a latent (no gradio): for SAEs on the CLIP `embed` space, the vocabulary
words ("a photo of a {word}", as the atlas's labels) and texts (the atlas's interpretation
sentences) whose CLIP text embeddings have the highest and the lowest cosine with the
latent's decoder direction.

Computed once per atlas, never per request: the vocabulary is embedded by the atlas's own
text tower and every latent's top and bottom entries are ranked in one pass, in a
low-priority background thread started when the server opens, a batch at a time so that
Inspect's requests interleave (ViT-B-32's text tower took 332 s for the 2,123 words on two
shared cores at a load average of 13: `benchmarks/bench_text_side.py`); both are cached on
disk beside the rendered thumbnails (keyed by the atlas's content hash and the
vocabulary), so a restart reads them back. A page asks for one row of the tables.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from precompute.labels import TEMPLATE, read_vocab

if TYPE_CHECKING:
    from .atlas import Atlas
    from .inspect_image import Inspector

log = logging.getLogger(__name__)

N_SIDE = 8
"""Entries kept per latent and side (top and bottom)."""
N_SHOWN = 6
"""Entries shown on a page per side."""
NICE = 15
"""Priority (Unix nice) of the background computation's thread: pages come first."""
BATCH = 64
"""Prompts embedded per hold of the encoder's lock."""
CHUNK = 2048
"""Latents ranked per matrix product (bounds memory at CHUNK × vocabulary floats)."""


@dataclass
class TextSide:
    """Every latent's nearest (top) and farthest (bottom) vocabulary entries by cosine."""

    entries: list[str]
    """The words, then the texts."""
    n_words: int
    top_ids: np.ndarray  # [F, n] int32, highest cosine first
    top_cos: np.ndarray  # [F, n] float32
    bottom_ids: np.ndarray  # [F, n] int32, lowest cosine first
    bottom_cos: np.ndarray  # [F, n] float32

    def of(self, latent: int, n: int = N_SIDE) -> dict[str, list[dict[str, Any]]]:
        """{"top": [...], "bottom": [...]}, each entry {"text", "kind" ("word" or "text"), "cos"}."""

        def side(ids: np.ndarray, cos: np.ndarray) -> list[dict[str, Any]]:
            return [
                {
                    "text": self.entries[int(j)],
                    "kind": "word" if j < self.n_words else "text",
                    "cos": round(float(c), 4),
                }
                for j, c in zip(ids[latent, :n], cos[latent, :n])
            ]

        return {"top": side(self.top_ids, self.top_cos), "bottom": side(self.bottom_ids, self.bottom_cos)}

    def markdown(self, latent: int, n: int = N_SHOWN) -> str:
        """One Markdown paragraph: the nearest and the farthest entries with their cosines."""
        d = self.of(latent, n)

        def items(side: list[dict[str, Any]]) -> str:
            return " · ".join(
                (f"{e['text']}" if e["kind"] == "word" else f"“{_short(e['text'])}”") + f" {e['cos']:.2f}" for e in side
            )

        return (
            f"**Text side** (cosine of CLIP text embeddings with the decoder direction): nearest "
            f"{items(d['top'])}; farthest {items(d['bottom'])}"
        )

    def search(self, text: str, n: int = 3) -> list[int]:
        """Latents with `text` (lower case) in one of their n nearest entries, best cosine first."""
        text = text.strip().lower()
        if not text:
            return []
        hit = np.array([text in e.lower() for e in self.entries])
        rows = np.nonzero(hit[self.top_ids[:, :n]].any(axis=1))[0]
        return [int(i) for i in rows[np.argsort(-self.top_cos[rows, 0], kind="stable")]]


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def rank_sides(
    directions_fd: np.ndarray, text_vd: np.ndarray, n: int = N_SIDE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(top ids, top cosines, bottom ids, bottom cosines), each [F, n]: per latent, the rows of
    `text_vd` (unit vectors) of highest and of lowest cosine with its direction."""
    dirs = directions_fd / np.linalg.norm(directions_fd, axis=1, keepdims=True).clip(1e-12)
    n = min(n, text_vd.shape[0])
    out = [np.zeros((len(dirs), n), dtype=t) for t in (np.int32, np.float32, np.int32, np.float32)]
    for s in range(0, len(dirs), CHUNK):
        cos = dirs[s : s + CHUNK] @ text_vd.T  # [c, V]
        for k, sign in ((0, -1.0), (2, 1.0)):
            part = np.argpartition(sign * cos, n - 1, axis=1)[:, :n]
            vals = np.take_along_axis(cos, part, axis=1)
            order = np.argsort(sign * vals, axis=1, kind="stable")
            out[k][s : s + CHUNK] = np.take_along_axis(part, order, axis=1)
            out[k + 1][s : s + CHUNK] = np.take_along_axis(vals, order, axis=1)
    return out[0], out[1], out[2], out[3]


def vocabulary(atlas: Atlas) -> tuple[list[str], list[str]]:
    """(words, texts): the atlas's label vocabulary (else the default one) and its
    interpretation sentences (distinct, in latent order)."""
    words = list(atlas._vocab) or list(dict.fromkeys(read_vocab()))
    texts = list(
        dict.fromkeys(atlas.interpretation(s) for s in sorted(atlas.interpretations.rows) if atlas.interpretation(s))
    )
    return words, texts


def available(atlas: Atlas, inspector: Inspector | None) -> bool:
    """A text side exists for this atlas: an `embed` SAE whose encoder has a text tower."""
    return (
        inspector is not None
        and inspector.atlas is atlas
        and inspector.meta.get("hook_name") == "embed"
        and hasattr(inspector.encoder.module, "encode_text")
        and not inspector.encoder.spec.is_kandinsky
    )


def compute(atlas: Atlas, inspector: Inspector, cache: Path | None = None) -> TextSide:
    """The text side of every latent of `atlas`, read from `cache` when already computed there."""
    words, texts = vocabulary(atlas)
    entries = words + texts
    key = hashlib.sha256(json.dumps([atlas.content_hash, TEMPLATE, entries]).encode()).hexdigest()[:16]
    path = cache / f"text_side_{key}.npz" if cache is not None else None
    if path is not None and path.is_file():
        z = np.load(path)
        return TextSide(entries, len(words), z["top_ids"], z["top_cos"], z["bottom_ids"], z["bottom_cos"])
    prompts = [TEMPLATE.format(w) for w in words] + texts
    parts = []
    for i in range(0, len(prompts), BATCH):  # the encoder's lock is released between batches
        with inspector.lock:
            parts.append(inspector.encoder.text_embeddings(prompts[i : i + BATCH]).cpu().numpy())
    emb = np.concatenate(parts)
    dirs = inspector.sae.W_dec.detach().float().cpu().numpy()
    tables = rank_sides(dirs, emb)
    if path is not None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, top_ids=tables[0], top_cos=tables[1], bottom_ids=tables[2], bottom_cos=tables[3])
        tmp.replace(path)
    return TextSide(entries, len(words), *tables)


class TextSideStore:
    """The text side of one atlas, computed in a background thread once the server opens."""

    def __init__(self, atlas: Atlas, inspector: Inspector, cache: Path | None = None):
        self.atlas, self._side, self.error = atlas, None, ""
        self._thread = threading.Thread(
            target=self._run, args=(inspector, cache), daemon=True, name=f"text-side-{atlas.name}"
        )
        self._thread.start()

    def _run(self, inspector: Inspector, cache: Path | None) -> None:
        try:  # below browsing: this thread, and the torch worker threads it starts, run at low priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        except (AttributeError, OSError):  # not Linux, or not allowed
            pass
        try:
            self._side = compute(self.atlas, inspector, cache)
        except Exception as exc:  # shown on pages as one line; the server keeps running
            log.exception("the text side of %s failed", self.atlas.name)
            self.error = f"{type(exc).__name__}: {exc}"[:200]

    def get(self, wait: float = 0.0) -> TextSide | None:
        """The text side, or None while it is being computed (or if it failed)."""
        if wait:
            self._thread.join(wait)
        return self._side

    def status(self) -> str:
        """A line for pages while there is no text side yet."""
        if self.error:
            return f"**Text side** unavailable ({self.error})"
        return "**Text side**: being computed (the vocabulary's CLIP text embeddings, once per atlas)…"


class TextSideHandlers:
    """Mixed into `app.handlers.Handlers`: the text-side line of a page, its data, and search."""

    text_sides: dict[str, TextSideStore]

    def start_text_side(self, atlas: Atlas, inspector: Inspector | None, cache: Path | None) -> None:
        """Begin computing the atlas's text side when it has one (an `embed` SAE with a text tower)."""
        if available(atlas, inspector):
            self.text_sides[atlas.name] = TextSideStore(atlas, inspector, cache)  # type: ignore[arg-type]

    def text_side(self, latent: Any, sae: str = "", n: int = N_SIDE, wait: float = 0.0) -> dict[str, Any]:
        """{"top": [...], "bottom": [...]} of a latent ({} without a text side or while computing)."""
        atlas, _ = self.pick(sae)  # type: ignore[attr-defined]
        store = self.text_sides.get(atlas.name)
        side = store.get(wait) if store is not None else None
        return side.of(atlas.check_latent(latent), n) if side is not None else {}

    def text_side_line(self, atlas: Atlas, latent: int) -> str:
        """The page's Markdown line ('' for an atlas without a text side)."""
        store = self.text_sides.get(atlas.name)
        if store is None:
            return ""
        side = store.get()
        return side.markdown(latent) if side is not None else store.status()

    def text_side_words(self, atlas: Atlas, latent: int, n: int = 3) -> str:
        """'≈ word, word, word': the nearest text-side words, for lists of unlabelled latents."""
        store = self.text_sides.get(atlas.name)
        side = store.get() if store is not None else None
        if side is None:
            return ""
        return "≈ " + ", ".join(
            e["text"] if e["kind"] == "word" else f"“{_short(e['text'], 30)}”" for e in side.of(latent, n)["top"]
        )

    def text_side_search(self, atlas: Atlas, text: str) -> list[int]:
        """Latents with the text among their nearest text-side entries."""
        store = self.text_sides.get(atlas.name)
        side = store.get() if store is not None else None
        return side.search(text) if side is not None else []
