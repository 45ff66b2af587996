"""Read-only access to an atlas folder for the app: memory-mapped arrays, no recomputation,
no gradio. Opening and every page cost the same whatever the number of latents and images:
arrays are mapped, the faiss indexes are read on first use, the image table is read by
byte offset, labels are arrays, nearest latents are a stored table, and the latent list is
sorted once.

An atlas is self-contained (precompute/ATLAS.md): image paths are relative to an images
root — `images_root` given here (`serve --images-root`), else the root recorded relative to
the atlas folder, else the absolute one recorded at build time, whichever exists — and
Inspect's encoder is described by the atlas's own `encoder.json`.

Refuses a folder without manifest.json, of another format or a newer version, or whose
SAE copy does not match the manifest's hash.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from precompute.atlas_format import ENCODER_FILE, LABEL_VOCAB, content_hash, read_manifest
from precompute.atlas_scores import LatentScores, read_scores
from precompute.indexes import FlatIndex
from precompute.interpret import NO_PATTERN, read_interpretations
from sae_core.edit import latent_id

from .atlas_tables import ImageTable, LabelTable, check_sae

log = logging.getLogger(__name__)

LINKS_DIR = "links"

DENSE_FREQUENCY = 0.1
"""A latent firing on at least this fraction of the images is "dense" (the Overview's colour, the
landing page's rule)."""


@dataclass
class LatentPage:
    """Everything the Browse tab shows for one latent."""

    latent: int
    label: list[str]
    frequency: float
    mean_activation: float
    max_activation: float
    dead: bool
    top: list[dict[str, Any]]  # {"image": index, "path", "value", "mask": [P] or None}
    mask_scale: float
    histogram: list[int]
    histogram_max: float
    bands: list[list[dict[str, Any]]]  # 5 bands × up to 4 {"image", "path", "value"}
    neighbours: list[tuple[int, float]]
    links: dict[str, list[tuple[int, float]]]


class Atlas:
    """One atlas, opened read-only."""

    def __init__(self, path: str | Path, verify_sae: bool = True, images_root: str | Path | None = None):
        self.path = Path(path)
        m = read_manifest(self.path)
        if verify_sae:
            check_sae(self.path / "sae", m["sae_sha256"])
        self.manifest = m
        self.n_latents = int(m["d_sae"])
        load = lambda name: np.load(self.path / name, mmap_mode="r")  # noqa: E731
        self.topk_ids = load("topk_ids.npy")
        self.topk_values = load("topk_values.npy")
        self.frequency = load("frequency.npy")
        self.mean_activation = load("mean_activation.npy")
        self.max_activation = load("max_activation.npy")
        self.histogram = load("histogram.npy")
        self.band_ids = load("band_ids.npy")
        self.band_values = load("band_values.npy")
        self.masks = load("masks.npy") if m["masks"] else None
        self.mask_scale = load("mask_scale.npy") if m["masks"] else None
        self.label_words = load("label_words.npy") if m["labels"] else None
        self.neighbour_ids = load("neighbour_ids.npy") if m.get("neighbours") else None
        self.neighbour_cos = load("neighbour_cos.npy") if m.get("neighbours") else None
        self.images_root = self._find_images_root(images_root)
        self._orders: dict[str, np.ndarray] = {}

    def _find_images_root(self, override: str | Path | None) -> Path | None:
        """The override, else the recorded root relative to this folder, else the recorded
        absolute root: the first that exists (None when no image folder is found)."""
        if override is not None:
            if not Path(override).is_dir():
                raise FileNotFoundError(f"--images-root {override} is not a folder")
            return Path(override)
        m = self.manifest
        candidates = [self.path / m["images_root_relative"]] if m.get("images_root_relative") else []
        candidates += [Path(m["images_root"])] if m.get("images_root") else []
        return next((c for c in candidates if c.is_dir()), None)

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def latent_index(self) -> FlatIndex:
        """Unit decoder directions (text -> latents; nearest latents without the table), read on first use."""
        return FlatIndex.read(self.path / "latents.faiss")

    @cached_property
    def image_index(self) -> FlatIndex | None:
        """Unit image embeddings (Inspect's nearest images), read on first use; None without."""
        return FlatIndex.read(self.path / "images.faiss") if self.manifest["image_index"] else None

    @property
    def identity(self) -> str:
        """The SAE hash: what other atlases' links are keyed by."""
        return self.manifest["sae_sha256"]

    @cached_property
    def content_hash(self) -> str:
        """SHA-256 of the manifest (which hashes every file): changes with any rebuild that changes content."""
        return content_hash(self.path)

    @cached_property
    def encoder(self) -> dict[str, Any] | None:
        """The encoder's description (encoder.json), its local config resolved inside the atlas;
        None for an atlas built from a plain matrix."""
        path = self.path / ENCODER_FILE
        if not self.manifest.get("encoder") or not path.is_file():
            return None
        enc = json.loads(path.read_text())
        if enc.get("model_config_path") and not Path(enc["model_config_path"]).is_absolute():
            enc["model_config_path"] = str((self.path / enc["model_config_path"]).resolve())
        return enc

    @cached_property
    def image_paths(self) -> Sequence[str]:
        """Relative image paths by image index (a lazy table; empty without images)."""
        if not self.manifest["has_images"]:
            return []
        return ImageTable(self.path / "images.jsonl")

    @cached_property
    def _vocab(self) -> list[str]:
        return json.loads((self.path / LABEL_VOCAB).read_text()) if self.label_words is not None else []

    @cached_property
    def labels(self) -> LabelTable | None:
        """Every latent's label ({"words", "scores"}), or None for an atlas without labels."""
        if self.label_words is None:
            return None
        return LabelTable(self.label_words, np.load(self.path / "label_scores.npy", mmap_mode="r"), self._vocab)

    def check_latent(self, latent: Any) -> int:
        """The latent id as an int, or a ValueError saying what is allowed (`sae_core.edit.latent_id`)."""
        return latent_id(latent, self.n_latents, text=True)

    def image_path(self, index: int) -> Path | None:
        """Absolute path of an image, only if it lies inside the images root (no escapes)."""
        if self.images_root is None or not 0 <= index < len(self.image_paths):
            return None
        root = self.images_root.resolve()
        p = (root / self.image_paths[index]).resolve()
        return p if p.is_relative_to(root) and p.is_file() else None

    def label(self, latent: int) -> list[str]:
        """The label's words (empty without labels)."""
        return self.labels[latent]["words"] if self.labels is not None else []

    def neighbours(self, latent: int, n: int = 8) -> list[tuple[int, float]]:
        """The n latents of nearest decoder direction (cosine): a row of the atlas's table, or a
        search of latents.faiss when the table is absent or shorter than n."""
        if self.neighbour_ids is not None and n <= self.neighbour_ids.shape[1]:
            return [(int(i), float(c)) for i, c in zip(self.neighbour_ids[latent, :n], self.neighbour_cos[latent, :n])]
        vec = self.latent_index.index.reconstruct(latent)
        cos, ids = self.latent_index.search(vec, n + 1)
        return [(int(i), float(c)) for i, c in zip(ids[0], cos[0]) if i != latent and i >= 0][:n]

    @cached_property
    def _link_tables(self) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
        """Per linked atlas, by its SAE hash: (its name when linked, ids [F, top], corr [F, top])."""
        folder = self.path / LINKS_DIR
        tables = {}
        for meta_path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            meta = json.loads(meta_path.read_text())
            stem = meta_path.name[: -len(".json")]
            tables[meta.get("other_sae_sha256", stem)] = (
                meta.get("other_name", stem[:12]),
                np.load(folder / f"{stem}.ids.npy", mmap_mode="r"),
                np.load(folder / f"{stem}.corr.npy", mmap_mode="r"),
            )
        return tables

    @property
    def link_names(self) -> dict[str, str]:
        """The linked atlases: SAE hash -> the folder name it had when linked (for display)."""
        return {identity: name for identity, (name, _, _) in self._link_tables.items()}

    def links(self, latent: int) -> dict[str, list[tuple[int, float]]]:
        """Per linked atlas (keyed by its SAE hash, whatever its folder is called now), the
        latents of it that co-activate with this one, best first."""
        return {identity: self._pairs(ids, corr, latent) for identity, (_, ids, corr) in self._link_tables.items()}

    def links_to(self, other: "Atlas", latent: int) -> list[tuple[int, float]]:
        """The latents of `other` that co-activate with this latent; empty when never linked."""
        table = self._link_tables.get(other.identity)
        return self._pairs(table[1], table[2], latent) if table else []

    @staticmethod
    def _pairs(ids: np.ndarray, corr: np.ndarray, latent: int) -> list[tuple[int, float]]:
        return [(int(i), float(c)) for i, c in zip(ids[latent], corr[latent]) if i >= 0]

    def page(self, latent: Any) -> LatentPage:
        s = self.check_latent(latent)
        paths = self.image_paths
        top = []
        for slot, (img, val) in enumerate(zip(self.topk_ids[s], self.topk_values[s])):
            if img < 0:
                continue
            mask = self.masks[s, slot].astype(np.float32).tolist() if self.masks is not None else None
            top.append({"image": int(img), "path": paths[img] if paths else None, "value": float(val), "mask": mask})
        bands = [
            [
                {"image": int(i), "path": paths[i] if paths else None, "value": float(v)}
                for i, v in zip(self.band_ids[s, b], self.band_values[s, b])
                if i >= 0
            ]
            for b in range(self.band_ids.shape[1])
        ]
        return LatentPage(
            latent=s,
            label=self.label(s),
            frequency=float(self.frequency[s]),
            mean_activation=float(self.mean_activation[s]),
            max_activation=float(self.max_activation[s]),
            dead=bool(self.frequency[s] == 0),
            top=top,
            mask_scale=float(self.mask_scale[s]) if self.mask_scale is not None else 0.0,
            histogram=[int(c) for c in self.histogram[s]],
            histogram_max=float(self.max_activation[s]),
            bands=bands,
            neighbours=self.neighbours(s),
            links=self.links(s),
        )

    def ranked(self, by: str = "frequency", n: int = 100, descending: bool = True) -> list[int]:
        """Latent ids sorted by frequency or max activation (each order is computed once)."""
        key = {"frequency": self.frequency, "max_activation": self.max_activation}[by]
        name = f"{by}:{descending}"
        if name not in self._orders:
            self._orders[name] = np.argsort(-np.asarray(key) if descending else np.asarray(key), kind="stable")
        return [int(i) for i in self._orders[name][:n]]

    def search_labels(self, text: str, n: int = 20) -> list[int]:
        """Latents whose label words contain the text (case-insensitive), best-ranked word first."""
        text = text.strip().lower()
        if not text or self.label_words is None:
            return []
        hits = np.flatnonzero([text in w.lower() for w in self._vocab])
        if not hits.size:
            return []
        match = np.isin(self.label_words, hits)  # [F, 5]
        found = np.flatnonzero(match.any(axis=1))
        rank = match[found].argmax(axis=1)  # the best-ranked matching word of each latent
        return [int(s) for s in found[np.lexsort((found, rank))][:n]]

    # ------------------------------------------------------------ interpretations (`clipsae interpret`)
    @cached_property
    def interpretations(self) -> Interpretations:
        """The latents' caption-keyword sentences (read on first use). A missing file gives none;
        an unreadable or stale one is logged and ignored, so the app still serves."""
        try:
            doc = read_interpretations(self.path, self.manifest)
        except ValueError as exc:
            log.warning("ignoring the interpretations of %s: %s", self.path, exc)
            return Interpretations({}, "", False, str(exc))
        if doc is None:
            return Interpretations({}, "", False, "")
        rows = {int(r["latent"]): r for r in doc["latents"]}
        return Interpretations(rows, doc["captioner_description"], bool(doc["captioner_random_weights"]), "")

    def interpretation(self, latent: int) -> str:
        """The latent's sentence ("This feature activates on images containing: …"), or "" when it
        was not interpreted or none of its images was captioned (a dead latent)."""
        row = self.interpretations.rows.get(int(latent))
        return row["interpretation"] if row and row["captions"] else ""

    def interpretation_words(self, latent: int) -> list[str]:
        """The keywords of the latent's sentence (none when it has no clear pattern)."""
        row = self.interpretations.rows.get(int(latent))
        return [w for w, _ in row["keywords"]] if row and row["interpretation"] != NO_PATTERN else []

    def short_label(self, latent: int, n: int = 3) -> list[str]:
        """Up to n words naming the latent wherever it is listed: its label words, else the
        keywords of its interpretation."""
        return self.label(latent)[:n] or self.interpretation_words(latent)[:n]

    def search_interpretations(self, text: str, n: int = 20) -> list[int]:
        """Latents whose sentence contains the text (case-insensitive), those whose best keywords
        match first; sentences without a clear pattern never match."""
        text = text.strip().lower()
        if not text:
            return []
        hits = []
        for s, row in self.interpretations.rows.items():
            if row["interpretation"] == NO_PATTERN or text not in row["interpretation"].lower():
                continue
            ranks = [r for r, (w, _) in enumerate(row["keywords"]) if text in w]
            hits.append((ranks[0] if ranks else len(row["keywords"]), s))
        return [s for _, s in sorted(hits)[:n]]

    @cached_property
    def latent_scores(self) -> LatentScores | None:
        """Per-latent quality scores and the SAE's card (scores/, `clipsae eval card --atlas`), read
        on first use; None without. An unreadable or stale file is logged and ignored."""
        try:
            return read_scores(self.path, self.manifest)
        except (ValueError, OSError) as exc:
            log.warning("ignoring the scores of %s: %s", self.path, exc)
            return None

    # ------------------------------------------------------------------ navigation helpers (the app)
    # Landing choice, previous/next and search over latents that fire; read-only like the rest.

    @cached_property
    def live(self) -> np.ndarray:
        """Ids of the latents that fire on at least one image, ascending."""
        return np.flatnonzero(np.asarray(self.frequency) > 0)

    def landing_latent(self) -> int:
        """An interesting live latent to open first: labelled ones first when labels exist, then
        the largest frequency × max activation among the latents that are not dense (firing on
        fewer than DENSE_FREQUENCY of the images: dense ones say little, and their top images are
        tinted all over); 0 if none fires."""
        live = self.live
        if live.size == 0:
            return 0
        freq, top = np.asarray(self.frequency)[live], np.asarray(self.max_activation)[live]
        score = freq * top
        score = np.where(freq < DENSE_FREQUENCY, score, score * 1e-3)  # dense: a fallback only
        if self.label_words is not None:  # vectorised: a list over 163,840 latents took ~0.5 s
            score = score + score.max() * (np.asarray(self.label_words)[live] >= 0).any(axis=1)
        return int(live[int(np.argmax(score))])

    def step_latent(self, latent: int, step: int) -> int:
        """The next (step=+1) or previous (−1) live latent after `latent`, wrapping around."""
        live = self.live
        if live.size == 0:
            return int(latent)
        pos = int(np.searchsorted(live, latent, side="right" if step > 0 else "left"))
        return int(live[pos % live.size] if step > 0 else live[(pos - 1) % live.size])

    def live_ranked(self, by: str = "frequency", n: int = 100) -> list[int]:
        """The n live latents with the largest frequency or max activation."""
        self.ranked(by, 0)  # the order, computed once
        order = self._orders[f"{by}:True"]
        return [int(i) for i in order[np.asarray(self.frequency)[order] > 0][:n]]

    def search_live(self, text: str, n: int = 20) -> list[int]:
        """`search_labels` without the dead latents."""
        found = np.asarray(self.search_labels(text, self.n_latents), dtype=np.int64)
        return [int(i) for i in found[np.asarray(self.frequency)[found] > 0][:n]]

    @cached_property
    def typical_max(self) -> float:
        """The median max activation of the live latents (a scale for latents without one)."""
        live = self.live
        return float(np.median(np.asarray(self.max_activation)[live])) if live.size else 1.0


@dataclass(frozen=True)
class Interpretations:
    """interpretations.json as the app uses it."""

    rows: dict[int, dict[str, Any]]
    captioner: str
    """How the captions were made (e.g. "BLIP Salesforce/blip-image-captioning-base")."""
    random_weights: bool
    """The captioner had random weights (the sentences are not meaningful; the UI says so)."""
    problem: str
    """Why a file present was ignored ("" when fine)."""
