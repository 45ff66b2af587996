"""Pure image helpers for the UI: patch-mask overlays and placeholders (no gradio)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from precompute.images import BadImage, load_image
from sae_core.files import atomic_write_with

log = logging.getLogger(__name__)
THUMB = 224
_POOL = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)), thread_name_prefix="clipsae-render")


def placeholder(text: str = "image unavailable", size: int = THUMB) -> Image.Image:
    im = Image.new("RGB", (size, size), (235, 235, 235))
    ImageDraw.Draw(im).text((10, size // 2 - 6), text, fill=(90, 90, 90))
    return im


def open_thumb(path: Path | None, size: int = THUMB) -> Image.Image:
    """A square centre-cropped thumbnail, or a placeholder (with a log line) if the file is
    missing or unreadable: a broken image never breaks a page."""
    if path is None:
        return placeholder("no image file", size)
    try:
        im, _ = load_image(path)
    except BadImage as exc:
        log.warning("cannot show %s: %s", path, exc)
        return placeholder("unreadable image", size)
    w, h = im.size
    side = min(w, h)
    im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    return im.resize((size, size), Image.BICUBIC)


def overlay(image: Image.Image, values_p: list[float] | np.ndarray | None, scale: float,
            color: tuple[int, int, int] = (255, 40, 0)) -> Image.Image:
    """Tint each patch with opacity value / scale (one scale per latent); darken inactive patches."""
    if values_p is None or scale <= 0:
        return image
    v = np.asarray(values_p, dtype=np.float32)
    grid = int(round(np.sqrt(v.size)))
    if grid * grid != v.size:
        return image
    alpha = np.clip(v.reshape(grid, grid) / scale, 0, 1)
    a = Image.fromarray((alpha * 255).astype(np.uint8), "L").resize(image.size, Image.NEAREST)
    tint = Image.new("RGB", image.size, color)
    dark = Image.blend(image, Image.new("RGB", image.size, (0, 0, 0)), 0.35)
    base = Image.composite(image, dark, a.point(lambda p: 255 if p > 0 else 0))
    return Image.composite(tint, base, a.point(lambda p: int(p * 0.55)))


class RenderCache:
    """Thumbnails and overlays rendered once to small JPEG files and reused by path, so a
    latent page costs file lookups instead of decoding, resizing and re-encoding images.

    Lives in the temp dir (which Gradio serves from by default), one folder per atlas.
    """

    def __init__(self, atlas, root: Path | None = None, size: int = 160):
        import hashlib
        import tempfile

        # the atlas's content hash (its manifest hashes every file) and the images root in use:
        # a rebuild in place or another --images-root never meets an old render
        root_used = str(atlas.images_root.resolve()) if atlas.images_root is not None else ""
        key = hashlib.sha256(f"{atlas.content_hash}:{root_used}".encode()).hexdigest()[:16]
        self.root = Path(root or tempfile.gettempdir()) / f"clipsae-render-{key}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.atlas, self.size = atlas, size

    def _write(self, path: Path, im: Image.Image) -> str:
        # never half a file; not fsynced: a render is rebuilt in milliseconds, while an fsync per
        # thumbnail was over half of a latent page's time (36 renders on a first view)
        atomic_write_with(path, lambda tmp: im.save(tmp, "JPEG", quality=85), sync=False)
        return str(path)

    def thumb(self, index: int, size: int | None = None) -> str:
        size = size or self.size
        path = self.root / f"img_{index}_{size}.jpg"
        if path.exists():
            return str(path)
        return self._write(path, open_thumb(self.atlas.image_path(index), size))

    def overlay(self, latent: int, slot: int, index: int, mask, scale: float) -> str:
        path = self.root / f"lat_{latent}_{slot}_{index}.jpg"
        if path.exists():
            return str(path)
        base = Image.open(self.thumb(index)).convert("RGB")
        return self._write(path, overlay(base, mask, scale))

    def parallel(self, jobs: list[tuple[Callable[..., str], tuple]]) -> list[str]:
        """Run render calls [(self.thumb or self.overlay, args), …] on a few threads, results in
        order: decoding, resizing and encoding release the GIL, so a page's first view (36
        renders) takes about a core's share instead of all of them in turn."""
        return list(_POOL.map(lambda job: job[0](*job[1]), jobs))
