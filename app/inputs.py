"""User input checked at the boundary (no gradio): uploads decoded by our own decoder, whole
numbers that are never truncated, finite numbers. Every message names the problem in one
line and never a path on the server."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PIL import Image

from precompute.images import DEFAULT_MAX_PIXELS, BadImage, decode_image

MAX_UPLOAD_MB = 20
"""Uploads over this size are refused by the server (HTTP 413) and by `read_upload`."""
MAX_UPLOAD = f"{MAX_UPLOAD_MB}mb"
UPLOAD_MAX_PIXELS = DEFAULT_MAX_PIXELS
"""The pixel cap of every upload, in every tab (decompression bombs)."""
MAX_SEED = 2**63 - 1


def read_upload(upload: str | Path | bytes | Image.Image | None, what: str = "the upload") -> Image.Image | None:
    """An uploaded image decoded by OUR decoder (`precompute.images.decode_image`: EXIF
    orientation, 16-bit, CMYK, palette, first frame, pixel cap) from a file path (what the
    upload components hand over), bytes, or an image already decoded; None stays None.
    Messages name the problem, never a path on the server."""
    if upload is None or (isinstance(upload, str) and not upload):
        return None
    if isinstance(upload, Image.Image):
        w, h = upload.size
        if w * h > UPLOAD_MAX_PIXELS:
            raise BadImage(f"{what} is too large: {w}x{h} pixels exceeds the cap of {UPLOAD_MAX_PIXELS}")
        return upload.convert("RGB")
    if isinstance(upload, (str, Path)):
        path = Path(upload)
        try:
            if path.stat().st_size > MAX_UPLOAD_MB * 2**20:
                raise BadImage(f"{what} is larger than {MAX_UPLOAD_MB} MB")
            upload = path.read_bytes()
        except OSError:
            raise BadImage(f"{what} could not be read; upload it again") from None
    try:
        return decode_image(bytes(upload), max_pixels=UPLOAD_MAX_PIXELS)
    except BadImage as exc:
        raise BadImage(f"{what} cannot be used: {exc}") from None


def menu_latent(value: Any) -> Any:
    """The latent id of a menu entry ("12 (0.53)" → "12"; the menus of Inspect's explore panel
    show the value after the id); anything that is not a non-empty string is returned as is,
    for `latent_id` to check."""
    return value.split()[0] if isinstance(value, str) and value.strip() else value


def whole_number(value: Any, name: str, lo: int, hi: int) -> int:
    """A whole number in [lo, hi] from a number or numeric text; a ValueError otherwise
    (never truncated: 2.5 is refused, not read as 2)."""
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number from {lo} to {hi}; got {value!r}") from None
    if not math.isfinite(number) or not number.is_integer() or not lo <= number <= hi:
        raise ValueError(f"{name} must be a whole number from {lo} to {hi}; got {value!r}")
    return int(number)


def finite_number(value: Any, name: str) -> float:
    """A finite float from a number or numeric text; a ValueError otherwise."""
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return number
