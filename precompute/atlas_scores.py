"""Per-latent quality scores inside an atlas (`ATLAS/scores/`, atlas format 4): written by
`clipsae eval card --atlas ATLAS`, read by the app. One writer and one reader here, so the
evaluation layer (which computes the scores) and the app (which shows them) share the layout.

    scores/monosemanticity.npy  [F] float32   MS under another encoder (NaN: not scored)
    scores/morans_i.npy         [F] float32   mean Moran's I over the images that count (NaN: not scored)
    scores/label_auc.npy        [F] float32   AUC of the latent's label text ranking its images (NaN: no label)
    scores/scores.json          written last: format, version, the SAE hash, which arrays exist, how
                                they were computed, and the SAE's whole card (card.json)

A latent is "monosemantic" when its MS is at least halfway from the evaluator's baseline
(the mean similarity of two random images, which is what a latent firing on everything scores)
to 1 (identical images), and "localised" when its Moran's I is at least LOCALISED_MORANS_I.
Both rules live here only: the card's fractions and the app's filters use them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sae_core.files import atomic_save_npy, atomic_write_text, check_format

from .atlas_format import ArrayField

SCORES_DIR = "scores"
SCORES_FILE = "scores.json"
SCORES_FORMAT = "clipsae-latent-scores"
SCORES_VERSION = 1
SCORE_ARRAYS: tuple[ArrayField, ...] = (
    ArrayField(f"{SCORES_DIR}/monosemanticity.npy", "float32", ("F",)),
    ArrayField(f"{SCORES_DIR}/morans_i.npy", "float32", ("F",)),
    ArrayField(f"{SCORES_DIR}/label_auc.npy", "float32", ("F",)),
)
"""The per-latent arrays a scores folder may hold (each optional; scores.json lists those present)."""
SCORE_NAMES = tuple(Path(f.name).stem for f in SCORE_ARRAYS)

MONOSEMANTIC_MARGIN = 0.5
"""Monosemantic: MS ≥ baseline + MONOSEMANTIC_MARGIN · (1 − baseline)."""
LOCALISED_MORANS_I = 0.3
"""Localised: Moran's I ≥ this (clearly positive spatial autocorrelation; random placement scores ≈ 0)."""


def monosemantic_threshold(baseline: float) -> float:
    """The MS at and above which a latent counts as monosemantic under an evaluator whose two
    random images have mean similarity `baseline`."""
    return float(baseline + MONOSEMANTIC_MARGIN * (1.0 - baseline))


@dataclass(frozen=True)
class LatentScores:
    """An atlas's scores as the app reads them: each array [F] float32 (memory-mapped) or None."""

    monosemanticity: np.ndarray | None
    morans_i: np.ndarray | None
    label_auc: np.ndarray | None
    meta: dict[str, Any]
    """scores.json: how the scores were made (evaluator, thresholds, the card)."""

    @property
    def monosemantic_above(self) -> float | None:
        """The MS threshold of "monosemantic" (None without MS)."""
        base = self.meta.get("ms_baseline")
        return monosemantic_threshold(base) if self.monosemanticity is not None and base is not None else None

    def monosemantic(self) -> np.ndarray | None:
        """[F] bool: the monosemantic latents (None without MS)."""
        t = self.monosemantic_above
        return None if t is None else np.nan_to_num(np.asarray(self.monosemanticity), nan=-np.inf) >= t

    def localised(self) -> np.ndarray | None:
        """[F] bool: the localised latents (None without Moran's I)."""
        if self.morans_i is None:
            return None
        return np.nan_to_num(np.asarray(self.morans_i), nan=-np.inf) >= LOCALISED_MORANS_I

    @property
    def card(self) -> dict[str, Any] | None:
        """The SAE's card (card.json as written next to these scores), or None."""
        return self.meta.get("card")


def write_scores(
    atlas: str | Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> Path:
    """Write `arrays` (name -> [F] values; names from SCORE_NAMES) into ATLAS/scores/, each
    atomically, remove stale arrays of an earlier run, then scores.json (the file readers key on)."""
    folder = Path(atlas) / SCORES_DIR
    folder.mkdir(exist_ok=True)
    (folder / SCORES_FILE).unlink(missing_ok=True)  # readers see no scores while the arrays change
    f = int(manifest["d_sae"])
    for name, values in arrays.items():
        if name not in SCORE_NAMES:
            raise ValueError(f"unknown score {name!r}; known: {', '.join(SCORE_NAMES)}")
        a = np.asarray(values, dtype=np.float32)
        if a.shape != (f,):
            raise ValueError(f"score {name} has shape {a.shape}; the atlas has {f} latents")
        atomic_save_npy(folder / f"{name}.npy", a)
    for name in SCORE_NAMES:
        if name not in arrays:
            (folder / f"{name}.npy").unlink(missing_ok=True)
    doc = {
        "format": SCORES_FORMAT,
        "format_version": SCORES_VERSION,
        "sae_sha256": manifest["sae_sha256"],
        "d_sae": f,
        "scores": [n for n in SCORE_NAMES if n in arrays],
        **meta,
    }
    return atomic_write_text(folder / SCORES_FILE, json.dumps(doc, indent=1, allow_nan=False))


def read_scores(atlas: str | Path, manifest: dict[str, Any]) -> LatentScores | None:
    """The atlas's scores (arrays memory-mapped), or None when it has none (an atlas older than
    format 4, or one never scored). A file of another format or version, or one made for another
    SAE than the atlas's, is refused with a ValueError naming the fix."""
    path = Path(atlas) / SCORES_DIR / SCORES_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); run clipsae eval card --atlas again") from None
    check_format(
        doc,
        SCORES_FORMAT,
        SCORES_VERSION,
        path,
        "latent scores file",
        upgrade_hint="run clipsae eval card --atlas again",
    )
    if doc.get("sae_sha256") != manifest["sae_sha256"]:
        raise ValueError(f"{path} was made for another SAE than this atlas's; run clipsae eval card --atlas again")
    found: dict[str, np.ndarray | None] = {}
    for name in SCORE_NAMES:
        file = path.parent / f"{name}.npy"
        a = np.load(file, mmap_mode="r") if name in doc.get("scores", []) else None
        if a is not None and a.shape != (int(manifest["d_sae"]),):
            raise ValueError(f"{file} has shape {a.shape}; the atlas has {manifest['d_sae']} latents")
        found[name] = a
    return LatentScores(found["monosemanticity"], found["morans_i"], found["label_auc"], doc)
