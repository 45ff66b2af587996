"""Read-only access to an atlas folder for the app: memory-mapped arrays, no recomputation,
no gradio. Opening costs the same whatever the number of images (arrays are mapped, the
image table is read lazily).

Refuses a folder without manifest.json, of another format or a newer version, or whose
SAE copy does not match the manifest's hash.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from precompute.atlas_format import read_manifest, sae_hash
from precompute.indexes import FlatIndex
from precompute.interpret import NO_PATTERN, read_interpretations
from sae_core.edit import latent_id

log = logging.getLogger(__name__)


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

    def __init__(self, path: str | Path, verify_sae: bool = True):
        self.path = Path(path)
        m = read_manifest(self.path)
        if verify_sae and sae_hash(self.path / "sae") != m["sae_sha256"]:
            raise ValueError(f"{self.path}/sae does not match the manifest's SAE hash; rebuild the atlas")
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
        self.labels = json.loads((self.path / "labels.json").read_text()) if m["labels"] else None
        self.latent_index = FlatIndex.read(self.path / "latents.faiss")
        self.image_index = FlatIndex.read(self.path / "images.faiss") if m["image_index"] else None
        self.images_root = Path(m["images_root"]) if m.get("images_root") else None

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def image_paths(self) -> list[str]:
        """Relative image paths by image index (read on first use)."""
        if not self.manifest["has_images"]:
            return []
        return [json.loads(line)["path"] for line in (self.path / "images.jsonl").read_text().splitlines()]

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
        return list(self.labels[latent]["words"]) if self.labels else []

    def neighbours(self, latent: int, n: int = 8) -> list[tuple[int, float]]:
        vec = self.latent_index.index.reconstruct(latent)
        cos, ids = self.latent_index.search(vec, n + 1)
        return [(int(i), float(c)) for i, c in zip(ids[0], cos[0]) if i != latent and i >= 0][:n]

    def links(self, latent: int) -> dict[str, list[tuple[int, float]]]:
        out = {}
        for meta in sorted((self.path / "links").glob("*.json")) if (self.path / "links").exists() else []:
            name = meta.name[: -len(".json")]
            ids = np.load(meta.with_name(f"{name}.ids.npy"), mmap_mode="r")[latent]
            corr = np.load(meta.with_name(f"{name}.corr.npy"), mmap_mode="r")[latent]
            out[name] = [(int(i), float(c)) for i, c in zip(ids, corr)]
        return out

    def page(self, latent: Any) -> LatentPage:
        s = self.check_latent(latent)
        top = []
        for slot, (img, val) in enumerate(zip(self.topk_ids[s], self.topk_values[s])):
            if img < 0:
                continue
            mask = self.masks[s, slot].astype(np.float32).tolist() if self.masks is not None else None
            path = self.image_paths[img] if self.image_paths else None
            top.append({"image": int(img), "path": path, "value": float(val), "mask": mask})
        bands = [[{"image": int(i), "path": self.image_paths[i] if self.image_paths else None, "value": float(v)}
                      for i, v in zip(self.band_ids[s, b], self.band_values[s, b]) if i >= 0]
                     for b in range(self.band_ids.shape[1])]
        return LatentPage(
            latent=s, label=self.label(s), frequency=float(self.frequency[s]),
            mean_activation=float(self.mean_activation[s]), max_activation=float(self.max_activation[s]),
            dead=bool(self.frequency[s] == 0), top=top,
            mask_scale=float(self.mask_scale[s]) if self.mask_scale is not None else 0.0,
            histogram=[int(c) for c in self.histogram[s]], histogram_max=float(self.max_activation[s]),
            bands=bands, neighbours=self.neighbours(s), links=self.links(s))

    def ranked(self, by: str = "frequency", n: int = 100, descending: bool = True) -> list[int]:
        """Latent ids sorted by frequency or max activation."""
        key = {"frequency": self.frequency, "max_activation": self.max_activation}[by]
        order = np.argsort(-np.asarray(key) if descending else np.asarray(key), kind="stable")
        return [int(i) for i in order[:n]]

    def search_labels(self, text: str, n: int = 20) -> list[int]:
        """Latents whose label words contain the text (case-insensitive), best-ranked word first."""
        text = text.strip().lower()
        if not text or not self.labels:
            return []
        hits = [(rank, s) for s, lab in enumerate(self.labels) for rank, w in enumerate(lab["words"]) if text in w.lower()]
        return [s for _, s in sorted(hits)[:n]]

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

    # ------------------------------------------------------------------ navigation helpers (the app)
    # Landing choice, previous/next and search over latents that fire; read-only like the rest.

    @cached_property
    def live(self) -> np.ndarray:
        """Ids of the latents that fire on at least one image, ascending."""
        return np.flatnonzero(np.asarray(self.frequency) > 0)

    def landing_latent(self) -> int:
        """An interesting live latent to open first: labelled ones first when labels exist, then
        the largest frequency × max activation among latents firing on at most half the
        images (those firing on nearly every image say little); 0 if none fires."""
        live = self.live
        if live.size == 0:
            return 0
        freq, top = np.asarray(self.frequency)[live], np.asarray(self.max_activation)[live]
        score = freq * top
        score = np.where(freq <= 0.5, score, score * 1e-3)  # keep them as a fallback only
        if self.labels:
            score = score + np.array([score.max() * (len(self.labels[i]["words"]) > 0) for i in live])
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
        return [i for i in self.ranked(by, self.n_latents) if self.frequency[i] > 0][:n]

    def search_live(self, text: str, n: int = 20) -> list[int]:
        """`search_labels` without the dead latents."""
        return [i for i in self.search_labels(text, self.n_latents) if self.frequency[i] > 0][:n]

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
