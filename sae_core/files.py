"""File helpers every stage shares: atomic writers, content hashes, format headers.

Every writer builds the file (or folder) under a temporary name in the same folder,
flushes it to disk (fsync) and renames it into place, so a crash or a full disk never
leaves half a file where a reader would find it. One family, one behaviour:

    atomic_write_bytes(path, data)       atomic_write_text(path, text)
    atomic_save_npy(path, array)         atomic_write_with(path, write)   # write(tmp) by a library
    atomic_write_dir(path, fill)         # fill(tmp_folder), then swap the folder in

Not handled here: what the files mean (the format pages: sae_core/FORMAT.md,
precompute/FORMAT.md, precompute/ATLAS.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def atomic_write_with(path: str | Path, write: Callable[[Path], object], sync: bool = True) -> Path:
    """Call `write(tmp)` to produce the file at a temporary path beside `path` (for writers
    that want a file name: PIL, matplotlib, safetensors), fsync it, rename it into place.

    `sync=False` is for caches that can be rebuilt (rendered thumbnails): the file is still
    renamed into place whole, so no reader sees half of it, but a crash may lose it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if sync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically (temporary file, fsync, rename)."""
    return atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically (temporary file, fsync, rename)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    """`np.save` atomically (temporary file, fsync, rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    return atomic_write_with(path, write)


def atomic_write_dir(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder in a temporary sibling with `fill(tmp)`, fsync its files, then swap it
    in; a crash leaves the previous folder intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        fill(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_file(f)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_format(
    meta: dict[str, Any],
    name: str,
    max_version: int,
    where: str | Path,
    what: str,
    min_version: int = 1,
    upgrade_hint: str = "",
) -> dict[str, Any]:
    """Refuse a JSON header of another format, or of a version this code does not read.

    `format_version` must be present and in [min_version, max_version]; `upgrade_hint`
    says what to run for a version that is too old."""
    if not isinstance(meta, dict) or meta.get("format") != name:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{where} is not a clipsae {what} (format {found!r}, expected {name!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{where} has no valid format_version ({version!r}); it was not written by clipsae")
    if version > max_version:
        raise ValueError(
            f"{where} has format_version {version}; this clipsae reads {what} versions "
            f"{min_version}..{max_version}: upgrade clipsae"
        )
    if version < min_version:
        hint = f": {upgrade_hint}" if upgrade_hint else ""
        raise ValueError(
            f"{where} has format_version {version}, older than this clipsae reads ({min_version}..{max_version}){hint}"
        )
    return meta


def read_safetensors(path: str | Path) -> dict[str, Any]:
    """Every tensor of a .safetensors file (torch tensors, on the CPU). A file that is not
    safetensors (a pickle renamed, a truncated copy) is refused with a one-line ValueError
    naming it, never unpickled."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SafetensorError as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None
