"""Find images and decode them robustly: stable ids, EXIF orientation, every Pillow mode.

`load_image` returns an RGB image or raises `BadImage` with a one-line reason; callers
skip and record such files, never abort. Transparency is composited over white so that
transparent pixels do not turn into arbitrary colours.

Not handled here: model preprocessing (resize / crop / normalise), done by the encoder.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .configs import DEFAULT_MAX_PIXELS

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
)


class BadImage(ValueError):
    """A file that cannot be used as an image; the message is the reason shown to users."""


@dataclass(frozen=True)
class ImageRef:
    """One image file: its path relative to the root (the stable part of its id) and on disk."""

    rel_path: str
    abs_path: str


def list_images(source: str | Path) -> tuple[Path, list[ImageRef]]:
    """A folder (walked recursively, by extension) or a list file (one path per line,
    relative to the list's folder or absolute). Returns (root, refs sorted by relative path)."""
    source = Path(source)
    if source.is_dir():
        root = source.resolve()
        refs = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                    p = Path(dirpath) / name
                    refs.append(ImageRef(p.relative_to(root).as_posix(), str(p)))
    elif source.is_file():
        root = source.resolve().parent
        refs = []
        for line in source.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line)
            p = p if p.is_absolute() else root / p
            try:
                rel = p.resolve().relative_to(root).as_posix()
            except ValueError:
                rel = str(p)
            refs.append(ImageRef(rel, str(p)))
    else:
        raise FileNotFoundError(f"--images {source}: no such folder or list file")
    refs.sort(key=lambda r: r.rel_path)
    seen: set[str] = set()
    unique = [r for r in refs if not (r.rel_path in seen or seen.add(r.rel_path))]
    if not unique:
        raise ValueError(f"--images {source}: no image files found (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return root, unique


def image_id(rel_path: str, data: bytes) -> str:
    """Stable id: relative path + the first 12 hex digits of the content's SHA-256."""
    return f"{rel_path}#{hashlib.sha256(data).hexdigest()[:12]}"


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0  # 16-bit range to 8-bit
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode == "P":
        return im.convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _bomb_message(exc: BaseException, max_pixels: int) -> str:
    """PIL's decompression-bomb refusal in our words (the declared pixel count when PIL gives it)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    declared = f"{int(found.group(1))} pixels" if found else "its declared size"
    return f"too large: {declared} exceeds the cap of {max_pixels} (refused before decoding)"


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Bytes -> RGB image (first frame, EXIF orientation applied), or `BadImage`."""
    if not data:
        raise BadImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise BadImage(f"too large: {w}x{h} pixels exceeds the cap of {max_pixels}")
            if w == 0 or h == 0:
                raise BadImage(f"zero-sized image ({w}x{h})")
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(_bomb_message(exc, max_pixels)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImage(f"unreadable or truncated: {exc}") from None


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, bytes]:
    """Read and decode a file; returns (RGB image, raw bytes) or raises `BadImage`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BadImage(f"cannot read file: {exc.strerror or exc}") from None
    return decode_image(data, max_pixels), data


def path_inside(root: str | Path, rel_path: str) -> Path | None:
    """`root / rel_path` if it resolves to a file inside `root` (no `..`, absolute paths or
    symlinks leaving it), else None: how readers of an atlas open its images."""
    base = Path(root).resolve()
    p = (base / rel_path).resolve()
    return p if p.is_relative_to(base) and p.is_file() else None
