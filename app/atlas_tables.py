"""The lazy tables behind `app.atlas.Atlas` (the image table read by byte offset, the labels
read from their arrays) and the check of an atlas's SAE copy."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from precompute.atlas_format import sae_hash


class ImageTable(Sequence):
    """images.jsonl as a sequence of relative paths, read line by line through byte offsets
    (found with one vectorised scan of the mapped file): no per-image Python objects."""

    def __init__(self, path: Path):
        self.path = path
        self._data = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
        ends = np.flatnonzero(self._data == ord("\n"))
        if len(self._data) and (not len(ends) or ends[-1] != len(self._data) - 1):
            ends = np.append(ends, len(self._data))
        self._starts = np.concatenate([[0], ends[:-1] + 1]) if len(ends) else np.zeros(0, np.int64)
        self._ends = ends

    def __len__(self) -> int:
        return len(self._ends)

    def record(self, index: int) -> dict[str, str]:
        """Line `index` as {"id", "path"}."""
        return json.loads(bytes(self._data[self._starts[index] : self._ends[index]]))

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self.record(index % len(self))["path"]


def check_sae(sae_dir: Path, expected: str) -> None:
    """Refuse an SAE copy whose hash is not the manifest's. Hashing 1.7 GB of weights takes
    seconds, so a match is remembered (in the temp folder) by the files' size, mtime and inode:
    a restart on unchanged files skips the hash; any change to them re-hashes."""
    import hashlib
    import tempfile

    stats = [
        (f.stat().st_size, f.stat().st_mtime_ns, f.stat().st_ino) for f in sorted(sae_dir.iterdir()) if f.is_file()
    ]
    key = hashlib.sha256(json.dumps([str(sae_dir.resolve()), expected, stats]).encode()).hexdigest()[:32]
    memo = Path(tempfile.gettempdir()) / "clipsae-verified" / key
    if memo.is_file():
        return
    if sae_hash(sae_dir) != expected:
        raise ValueError(f"{sae_dir} does not match the manifest's SAE hash; rebuild the atlas")
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.touch()
    except OSError:  # a read-only temp folder: hash again next time
        pass


class LabelTable(Sequence):
    """The labels as `labels[latent] == {"words": [...], "scores": [...]}` (read from the
    label arrays on access)."""

    def __init__(self, words: np.ndarray, scores: np.ndarray, vocab: list[str]):
        self.words, self.scores, self.vocab = words, scores, vocab

    def __len__(self) -> int:
        return len(self.words)

    def __getitem__(self, latent):  # type: ignore[override]
        return {
            "words": [self.vocab[int(w)] for w in self.words[latent]],
            "scores": [round(float(c), 4) for c in self.scores[latent]],
        }
