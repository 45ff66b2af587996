"""The atlas folder's identity and header: format name and version, the SAE hash, and the
one reader of `manifest.json` (every consumer — the app, `link`, the demo — goes through
`read_manifest`, which enforces the format and version). See precompute/ATLAS.md.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sae_core.files import check_format, sha256_file
from sae_core.io import CFG_FILE, WEIGHTS_FILE

ATLAS_FORMAT = "clipsae-atlas"
ATLAS_VERSION = 2
"""2: value-band samples are `band_ids.npy` / `band_values.npy` (were `quantile_*`), the
manifest says `top_images` (was `k`)."""
MIN_ATLAS_VERSION = 2
MANIFEST = "manifest.json"


def sae_hash(sae_dir: Path) -> str:
    """SHA-256 over cfg.json and the weights: what the app checks the manifest against."""
    h = hashlib.sha256()
    for name in (CFG_FILE, WEIGHTS_FILE):
        h.update(sha256_file(Path(sae_dir) / name).encode())
    return h.hexdigest()


def read_manifest(atlas: str | Path) -> dict[str, Any]:
    """The checked manifest of an atlas folder, or a one-line error naming the fix."""
    path = Path(atlas) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{atlas} is not an atlas: {MANIFEST} is missing (build one with clipsae atlas)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rebuild the atlas with clipsae atlas") from None
    return check_format(meta, ATLAS_FORMAT, ATLAS_VERSION, path, "atlas manifest", min_version=MIN_ATLAS_VERSION,
                        upgrade_hint="rebuild it with the same `clipsae atlas` command")
