"""Caption-keyword interpretation of latents (seed 001's recipe), `clipsae interpret`:

    clipsae interpret atlas/                                  # every latent, BLIP from the HF cache
    clipsae interpret atlas/ --latents 300 --captioner DIR    # the 300 most frequent latents
    clipsae interpret atlas/ --latents 0-299 --captioner tiny # a random tiny BLIP (a demo)

For each latent: caption up to `--images` (8) distinct top images (distinct content: the
hash part of the image id), lower-case the captions, keep words of at least 3 letters that
are not stop-words, and rank them by the number of captions they occur in (then by total
occurrences, then by first appearance). The 5 best make the sentence "This feature
activates on images containing: w1, w2, w3, w4, w5."; when no word is shared by at least
2 captions (or no image could be captioned, e.g. a dead latent) the sentence is "no clear
activating pattern".

Writes `interpretations.json` (read by the app) and `interpretations.csv` into the atlas,
each atomically; a later run on other latents with the same captioner adds to them (and
reuses the captions of images it already captioned). Format: precompute/ATLAS.md.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sae_core.files import atomic_write_text, check_format
from sae_core.progress import Progress

from .atlas_format import read_manifest
from .captioner import Captioner, load_captioner
from .configs import InterpretConfig
from .images import BadImage, load_image, path_inside
from .selection import most_frequent_first, parse_latents

log = logging.getLogger(__name__)

INTERPRETATIONS_FORMAT = "clipsae-interpretations"
INTERPRETATIONS_VERSION = 1
JSON_FILE = "interpretations.json"
CSV_FILE = "interpretations.csv"
NO_PATTERN = "no clear activating pattern"
SENTENCE = "This feature activates on images containing: {}."
N_KEYWORDS = 5
MIN_LETTERS = 3
MIN_SHARED = 2
"""A word must occur in at least this many captions to count as a pattern."""
STOP_WORDS = frozenset(
    """
a an the and or nor but so yet if then than as of at by for from in into onto on off out over under up down
to with without within through across along around about above below behind beside besides between beyond
near next against among toward towards upon via per while during before after since until
i me my mine we us our ours you your yours he him his she her hers it its they them their theirs
this that these those there here who whom whose which what when where why how
is are was were be been being am do does did doing done has have had having will would shall should
can could may might must not no yes all any both each every few more most other some such only own same
too very just also again once one two three four many much lot lots something someone somebody thing things
""".split()
) | frozenset({"arafed", "araffe", "arafe", "araf", "arafly"})
"""Function words, plus the non-words BLIP-base is known to emit ("arafed", "araffe")."""


# ---------------------------------------------------------------------------- the recipe
def caption_words(caption: str) -> list[str]:
    """The caption's content words: lower-case letters only, at least 3, no stop-words."""
    return [w for w in re.findall(r"[a-z]+", caption.lower()) if len(w) >= MIN_LETTERS and w not in STOP_WORDS]


def keywords(captions: list[str], n: int = N_KEYWORDS) -> list[tuple[str, int]]:
    """The n best words with the number of captions each occurs in; ties: more occurrences,
    then first appearance."""
    in_captions: Counter[str] = Counter()
    total: Counter[str] = Counter()
    first: dict[str, int] = {}
    for caption in captions:
        words = caption_words(caption)
        in_captions.update(set(words))
        total.update(words)
        for w in words:
            first.setdefault(w, len(first))
    ranked = sorted(in_captions, key=lambda w: (-in_captions[w], -total[w], first[w]))
    return [(w, in_captions[w]) for w in ranked[:n]]


def sentence(words: list[tuple[str, int]]) -> str:
    """Seed 001's sentence, or NO_PATTERN when no word is shared by MIN_SHARED captions."""
    if not words or words[0][1] < MIN_SHARED:
        return NO_PATTERN
    return SENTENCE.format(", ".join(w for w, _ in words))


def distinct_top_images(topk_ids: np.ndarray, image_ids: list[str], n: int) -> list[int]:
    """Up to n of a latent's top images, best first, skipping empty slots and images whose
    content (the hash part of the id) was already taken."""
    chosen, seen = [], set()
    for i in (int(v) for v in topk_ids):
        if i < 0 or i >= len(image_ids):
            continue
        content = image_ids[i].rsplit("#", 1)[-1]
        if content in seen:
            continue
        seen.add(content)
        chosen.append(i)
        if len(chosen) == n:
            break
    return chosen


# ---------------------------------------------------------------------------- the files
def read_interpretations(atlas: str | Path, manifest: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The checked interpretations of an atlas (None if it has none): format and version are
    enforced, and a file made for another SAE than the atlas's is refused."""
    path = Path(atlas) / JSON_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); run clipsae interpret again") from None
    check_format(
        doc,
        INTERPRETATIONS_FORMAT,
        INTERPRETATIONS_VERSION,
        path,
        "interpretations file",
        upgrade_hint="run clipsae interpret again",
    )
    manifest = manifest or read_manifest(atlas)
    if doc.get("sae_sha256") != manifest["sae_sha256"]:
        raise ValueError(f"{path} was made for another SAE than this atlas's; run clipsae interpret {atlas} again")
    return doc


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["latent", "interpretation", "keywords", "captions", "image_ids"])
    for r in rows:
        w.writerow(
            [
                r["latent"],
                r["interpretation"],
                "; ".join(f"{k} ({c})" for k, c in r["keywords"]),
                " | ".join(r["captions"]),
                " ".join(r["image_ids"]),
            ]
        )
    return buf.getvalue()


def write_interpretations(atlas: str | Path, doc: dict[str, Any]) -> None:
    """interpretations.csv, then interpretations.json (the file readers check), each atomically."""
    doc["latents"].sort(key=lambda r: r["latent"])
    atomic_write_text(Path(atlas) / CSV_FILE, _csv(doc["latents"]))
    atomic_write_text(Path(atlas) / JSON_FILE, json.dumps(doc, indent=1, ensure_ascii=False))


# ---------------------------------------------------------------------------- the run
class AtlasImages:
    """An atlas's image table and top images, read-only (no app, no cache)."""

    def __init__(self, atlas: str | Path, images_root: str | None = None):
        self.path = Path(atlas)
        self.manifest = read_manifest(self.path)
        if not self.manifest["has_images"]:
            raise ValueError(f"{atlas} has no image table (it was built from a plain matrix): nothing to caption")
        root = images_root or self.manifest.get("images_root")
        if not root or not Path(root).is_dir():
            raise FileNotFoundError(f"the atlas's images are not at {root!r}; pass --images-root DIR")
        self.root = Path(root)
        table = [json.loads(line) for line in (self.path / "images.jsonl").read_text().splitlines() if line]
        self.ids = [t["id"] for t in table]
        self.rel_paths = [t["path"] for t in table]
        self.topk_ids = np.load(self.path / "topk_ids.npy", mmap_mode="r")
        self.frequency = np.load(self.path / "frequency.npy", mmap_mode="r")

    def load(self, index: int):
        path = path_inside(self.root, self.rel_paths[index])
        if path is None:
            raise BadImage(f"missing, or outside the images root {self.root}")
        return load_image(path)[0]


def _caption_all(
    images: AtlasImages,
    wanted: list[int],
    captioner: Captioner,
    batch_size: int,
    known: dict[str, str],
    skipped: dict[str, str],
) -> None:
    """Caption every wanted image index not yet in `known` (keyed by image id), in batches."""
    todo = sorted(i for i in set(wanted) if images.ids[i] not in known and images.ids[i] not in skipped)
    bar = Progress(len(todo), "interpret: captions", unit="img")
    for start in range(0, len(todo), batch_size):
        batch, pics = [], []
        for i in todo[start : start + batch_size]:
            try:
                pics.append(images.load(i))
                batch.append(i)
            except BadImage as exc:
                skipped[images.ids[i]] = str(exc)
                log.warning("interpret: skipping %s: %s", images.rel_paths[i], exc)
        for i, text in zip(batch, captioner.caption(pics)):
            known[images.ids[i]] = text
        bar.update(len(todo[start : start + batch_size]))
    bar.close()


def _previous(cfg: InterpretConfig, manifest: dict[str, Any], captioner: Captioner) -> dict[str, Any] | None:
    """The existing file, if this run may add to it (same SAE, captioner and recipe)."""
    try:
        doc = read_interpretations(cfg.atlas, manifest)
    except ValueError as exc:
        log.warning("interpret: replacing %s (%s)", JSON_FILE, exc)
        return None
    same = doc is not None and all(doc.get(k) == v for k, v in _recipe(cfg, captioner).items())
    if doc is not None and not same:
        log.warning("interpret: %s was made with another captioner or recipe; it is replaced", JSON_FILE)
    return doc if same else None


def _recipe(cfg: InterpretConfig, captioner: Captioner) -> dict[str, Any]:
    return {
        "captioner": cfg.captioner,
        "captioner_random_weights": captioner.tiny,
        "seed": cfg.seed if captioner.tiny else None,
        "images_per_latent": cfg.images,
        "caption_tokens": cfg.caption_tokens,
        "keywords_per_latent": N_KEYWORDS,
        "min_letters": MIN_LETTERS,
        "min_shared": MIN_SHARED,
    }


@dataclass
class InterpretResult:
    doc: dict[str, Any]
    """The whole interpretations.json document (this run's latents and earlier ones)."""
    latents: list[int]
    """The latents of this run."""
    seconds: float
    """Wall time of this run, loading the captioner included."""


def interpret(
    cfg: InterpretConfig, captioner: Captioner | None = None, captions: dict[str, str] | None = None
) -> InterpretResult:
    """Interpret the chosen latents and write the files (adding to earlier runs of the same recipe).

    `captions`: captions this captioner already made, by image id (e.g. for another atlas of
    the same images); used, and updated in place with the new ones."""
    t0 = time.perf_counter()
    images = AtlasImages(cfg.atlas, cfg.images_root)
    n_latents = int(images.manifest["d_sae"])
    latents = parse_latents(cfg.latents).resolve(n_latents, most_frequent_first(images.frequency))
    captioner = captioner or load_captioner(cfg.captioner, cfg.device, cfg.seed, cfg.caption_tokens)
    old = _previous(cfg, images.manifest, captioner)
    known = captions if captions is not None else {}
    known.update({i: c for r in (old or {}).get("latents", []) for i, c in zip(r["image_ids"], r["captions"])})
    skipped: dict[str, str] = {}
    chosen = {s: distinct_top_images(images.topk_ids[s], images.ids, cfg.images) for s in latents}
    _caption_all(images, [i for ids in chosen.values() for i in ids], captioner, cfg.batch_size, known, skipped)
    rows = {r["latent"]: r for r in (old or {}).get("latents", [])}
    for s, ids in chosen.items():
        ids = [i for i in ids if images.ids[i] in known]
        texts = [known[images.ids[i]] for i in ids]
        words = keywords(texts)
        rows[s] = {
            "latent": s,
            "interpretation": sentence(words),
            "keywords": [[w, c] for w, c in words],
            "captions": texts,
            "images": ids,
            "image_ids": [images.ids[i] for i in ids],
        }
    doc = {
        "format": INTERPRETATIONS_FORMAT,
        "format_version": INTERPRETATIONS_VERSION,
        "sae_sha256": images.manifest["sae_sha256"],
        **_recipe(cfg, captioner),
        "captioner_description": captioner.description,
        "d_sae": n_latents,
        "skipped_images": [{"id": k, "reason": v} for k, v in sorted(skipped.items())],
        "latents": list(rows.values()),
    }
    write_interpretations(cfg.atlas, doc)
    seconds = time.perf_counter() - t0
    log.info("interpret: %d latents in %.1f s with %s", len(latents), seconds, captioner.description)
    return InterpretResult(doc, latents, seconds)
