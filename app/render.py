"""Pure image helpers for the UI (no gradio): patch-mask overlays, colour scales for every
heat map, the activation histogram, placeholders, display upscaling, and the render cache."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from precompute.images import BadImage, load_image
from sae_core.files import atomic_write_with

log = logging.getLogger(__name__)
THUMB = 224
_POOL = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)), thread_name_prefix="clipsae-render")
TINT = (255, 40, 0)
"""Positive activations (patch masks and heat maps)."""
NEGATIVE_TINT = (20, 90, 255)
"""Negative values of signed maps (heat-map differences)."""
MASK_ALPHA = 0.55
"""Opacity of a patch at the colour scale's maximum (`overlay`)."""


_FOLD = str.maketrans(
    {
        "×": "x",
        "−": "-",
        "–": "-",
        "—": "-",
        "→": "->",
        "Σ": "sum ",
        "Δ": "d",
        "“": '"',
        "”": '"',
        "‘": "'",
        "’": "'",
        "≥": ">=",
        "≤": "<=",
    }
)


def drawable(text: str) -> str:
    """Text the bundled PIL font can draw: symbols it has no glyph for (×, −, →, …) in ASCII,
    so server-drawn labels never show missing-glyph boxes."""
    return text.translate(_FOLD)


def placeholder(text: str = "image unavailable", size: int = THUMB) -> Image.Image:
    """A grey tile with the text centred, wrapped to the tile."""
    im = Image.new("RGB", (size, size), (235, 235, 235))
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=max(9, size // 9))
    lines, line = [], ""
    for word in drawable(text).split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > size - 8:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    step = int(font.size * 1.35)
    y = size / 2 - step * len(lines) / 2
    for k, line in enumerate(lines):
        draw.text(((size - draw.textlength(line, font=font)) / 2, y + k * step), line, fill=(90, 90, 90), font=font)
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
    return centre_square(im).resize((size, size), Image.BICUBIC)


def centre_square(im: Image.Image) -> Image.Image:
    """The centred square crop: what the encoders see (resize the short side, crop the centre)."""
    w, h = im.size
    side = min(w, h)
    return im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))


def overlay(
    image: Image.Image, values_p: list[float] | np.ndarray | None, scale: float, color: tuple[int, int, int] = TINT
) -> Image.Image:
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
    return Image.composite(tint, base, a.point(lambda p: int(p * MASK_ALPHA)))


def _font(size: int = 13) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def colour_bar(
    width: int, vmax: float, label: str, signed: bool = False, max_alpha: float = MASK_ALPHA, height: int = 44
) -> Image.Image:
    """A horizontal colour scale: the tint at each opacity over mid-grey, 0 → vmax (or
    −vmax → vmax for signed maps), with end and middle ticks and a label saying what it measures."""
    bar = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(bar)
    x0, x1, y0, y1 = 8, width - 8, 4, 18
    lo = -vmax if signed else 0.0
    for x in range(x0, x1):
        v = lo + (x - x0) / max(x1 - x0 - 1, 1) * (vmax - lo)
        a = min(abs(v) / vmax, 1.0) * max_alpha if vmax > 0 else 0.0
        c = TINT if v >= 0 else NEGATIVE_TINT
        draw.line([(x, y0), (x, y1)], fill=tuple(int(128 * (1 - a) + ch * a) for ch in c))
    font = _font(12)
    ticks = (lo, (lo + vmax) / 2, vmax)
    for k, v in enumerate(ticks):
        text = f"{v:.3g}"
        w = draw.textlength(text, font=font)
        x = (x0, (x0 + x1) / 2 - w / 2, x1 - w)[k]
        draw.text((x, y1 + 2), text, fill=(40, 40, 40), font=font)
    label = drawable(label)
    w = draw.textlength(label, font=font)
    draw.text(((width - w) / 2, y1 + 14) if w < width - 120 else (x0, y1 + 14), label, fill=(40, 40, 40), font=font)
    return bar


def with_colour_bar(
    image: Image.Image, vmax: float, label: str, signed: bool = False, max_alpha: float = MASK_ALPHA
) -> Image.Image:
    """The image with its colour scale underneath."""
    bar = colour_bar(image.width, vmax, label, signed, max_alpha, height=48)
    out = Image.new("RGB", (image.width, image.height + bar.height), (255, 255, 255))
    out.paste(image.convert("RGB"), (0, 0))
    out.paste(bar, (0, image.height))
    return out


def for_display(image: Image.Image, min_side: int = 256) -> Image.Image:
    """Small generated images upscaled by a whole factor (nearest neighbour, pixels stay
    visible) so 64 px results are not thumbnails; larger ones unchanged."""
    factor = -(-min_side // max(min(image.size), 1))
    if factor <= 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def nice_ticks(top: float, n: int = 5) -> list[float]:
    """About n round tick values (1, 2 or 5 × 10^k apart) from 0 to at most `top`."""
    if top <= 0:
        return [0.0]
    raw = top / n
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [float(f"{k * step:.6g}") for k in range(int(top / step + 1e-9) + 1)]


def histogram_png(
    path: Path,
    counts: list[int] | np.ndarray,
    max_value: float,
    log_counts: bool = False,
    width: int = 640,
    height: int = 250,
    title: str = "Activation histogram",
) -> Path:
    """The activation histogram of one latent as a PNG: one bar per bin over (0, max], a few
    round ticks on each axis, counts on a linear or log scale. Drawn with PIL (a few ms;
    matplotlib took ~0.2 s per page)."""
    counts = np.asarray(counts, dtype=np.float64)
    im = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    font, ink = _font(12), (40, 40, 40)
    left, right, top, bottom = 54, width - 14, 30, height - 42
    # the title is drawn here, and the page shows no block label over the image: a label
    # overlaid at the top left would hide the top tick (issue 22, point 7)
    draw.text(((width - draw.textlength(title, font=_font(13))) / 2, 6), title, fill=ink, font=_font(13))
    if counts.sum() <= 0 or max_value <= 0:
        draw.text((width / 2 - 90, height / 2 - 8), "never fires: no histogram", fill=ink, font=font)
        atomic_write_with(path, lambda tmp: im.save(tmp, "PNG"))
        return path
    cmax = float(counts.max())
    scale = (lambda c: np.log10(1 + c) / np.log10(1 + cmax)) if log_counts else (lambda c: c / cmax)
    yticks = [10.0**k for k in range(int(np.log10(cmax)) + 1)] if log_counts else nice_ticks(cmax, 4)
    for t in yticks:
        y = bottom - scale(t) * (bottom - top)
        draw.line([(left - 4, y), (right, y)], fill=(232, 232, 232))
        label = f"{t:g}"
        draw.text((left - 8 - draw.textlength(label, font=font), y - 7), label, fill=ink, font=font)
    n = counts.size
    for i, c in enumerate(counts):
        if c > 0:
            x0, x1 = left + i / n * (right - left), left + (i + 1) / n * (right - left)
            draw.rectangle([x0, bottom - scale(c) * (bottom - top), max(x1 - 1, x0), bottom], fill=(232, 85, 58))
    draw.line([(left, bottom), (right, bottom)], fill=ink)
    for t in nice_ticks(max_value, 5):
        x = left + t / max_value * (right - left)
        draw.line([(x, bottom), (x, bottom + 4)], fill=ink)
        label = f"{t:g}"
        draw.text((x - draw.textlength(label, font=font) / 2, bottom + 6), label, fill=ink, font=font)
    xlabel = "activation (images where it fires)"
    draw.text(((left + right - draw.textlength(xlabel, font=font)) / 2, bottom + 22), xlabel, fill=ink, font=font)
    ylabel = "images (log scale)" if log_counts else "images"
    tag = Image.new("RGB", (int(draw.textlength(ylabel, font=font)) + 4, 16), (255, 255, 255))
    ImageDraw.Draw(tag).text((2, 1), ylabel, fill=ink, font=font)
    tag = tag.rotate(90, expand=True)
    im.paste(tag, (2, int((top + bottom - tag.height) / 2)))
    atomic_write_with(path, lambda tmp: im.save(tmp, "PNG"))
    return path


RENDER_PREFIX = "clipsae-render-"
RENDER_VERSION = 1
"""Part of a render folder's name: bump it whenever a drawing changes, so that no browser keeps
an old drawing under a name it was told never changes (app/file_cache.py)."""


class RenderCache:
    """Thumbnails and overlays rendered once to small JPEG files and reused by path, so a
    latent page costs file lookups instead of decoding, resizing and re-encoding images.

    Lives in the temp dir, one folder per atlas, which app.ui makes a Gradio static path (its
    files are served where they lie, with a cache-forever lifetime: app/file_cache.py).
    """

    def __init__(self, atlas, root: Path | None = None, size: int = 160):
        import tempfile

        # the atlas's content hash (its manifest hashes every file) and the images root in use:
        # a rebuild in place or another --images-root never meets an old render
        root_used = str(atlas.images_root.resolve()) if atlas.images_root is not None else ""
        key = hashlib.sha256(f"{RENDER_VERSION}:{atlas.content_hash}:{root_used}".encode()).hexdigest()[:16]
        self.root = Path(root or tempfile.gettempdir()) / f"{RENDER_PREFIX}{key}"
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

    def blank(self, text: str, size: int | None = None) -> str:
        """A placeholder tile (e.g. an empty value band), rendered once per text and size."""
        size = size or self.size
        key = hashlib.sha256(text.encode()).hexdigest()[:12]
        path = self.root / f"blank_{key}_{size}.jpg"
        return str(path) if path.exists() else self._write(path, placeholder(text, size))

    def histogram(self, latent: int, counts: list[int], max_value: float, log_counts: bool = False) -> str:
        """The latent's histogram PNG, rendered once per (latent, axis)."""
        path = self.root / f"hist2_{latent}_{'log' if log_counts else 'lin'}.png"  # 2: titled
        return str(path if path.exists() else histogram_png(path, counts, max_value, log_counts))
