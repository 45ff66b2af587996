"""The `--latents` grammar shared by `clipsae interpret`, `clipsae collage`, `clipsae icons`
and `clipsae eval segment`: one flag, one meaning everywhere.

    --latents 300          a count: the 300 first latents of the command's ranking
                           (interpret, collage, icons: the most frequent; eval segment: the
                           most active on each class)
    --latents 12,40,7      these latents, in this order
    --latents 7,           one latent (the trailing comma makes it a list)
    --latents 0-299        a range, both ends included (mixable: 3,10-12,40)
    (absent)               the command's default (interpret: every latent)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatentSelection:
    """A parsed `--latents`: either a count or explicit ids (never both)."""

    count: int | None = None
    ids: tuple[int, ...] | None = None

    def resolve(self, n_latents: int, ranking: Sequence[int] | np.ndarray | None = None) -> list[int]:
        """The chosen latent ids: explicit ids (checked against 0..n_latents−1), or the first
        `count` of `ranking` (default: ids in order)."""
        if self.ids is not None:
            bad = [i for i in self.ids if not 0 <= i < n_latents]
            if bad:
                raise ValueError(
                    f"--latents: {', '.join(map(str, bad[:5]))} out of range; this SAE has latents 0..{n_latents - 1}"
                )
            return list(self.ids)
        order = np.arange(n_latents) if ranking is None else np.asarray(ranking)
        count = n_latents if self.count is None else self.count
        return [int(i) for i in order[:count]]


def parse_latents(text: str | None) -> LatentSelection:
    """Parse `--latents` (see the module docstring); a ValueError names the flag and the forms."""
    text = (text or "").strip()
    if not text:
        return LatentSelection()
    forms = "write N (a count), a,b,c (ids), a-b (a range) or a, (one id)"
    if "," not in text and "-" not in text:
        try:
            count = int(text)
        except ValueError:
            raise ValueError(f"--latents {text!r}: {forms}") from None
        if count <= 0:
            raise ValueError(f"--latents {text!r}: a count must be positive; {forms}")
        return LatentSelection(count=count)
    ids: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if lo > hi or lo < 0:
                    raise ValueError
                ids.extend(range(lo, hi + 1))
            else:
                ids.append(int(part))
        except ValueError:
            raise ValueError(f"--latents {text!r}: {part!r} is not a latent id or range; {forms}") from None
    if not ids:
        raise ValueError(f"--latents {text!r}: no latent ids; {forms}")
    return LatentSelection(ids=tuple(dict.fromkeys(ids)))


def most_frequent_first(frequency: np.ndarray) -> np.ndarray:
    """Latent ids by decreasing frequency (ties by id): the ranking of `interpret` and `collage`,
    and the app's default latent list."""
    return np.argsort(-np.asarray(frequency, dtype=np.float64), kind="stable")
