"""Collages of latents (seed 001's figures), `clipsae collage`, and the app's download:

    clipsae collage atlas/ --latents 12,40,7 --out collages/
    clipsae collage atlas/ --top 20 --out collages/         # the 20 most frequent latents

One PNG per latent: a caption strip (latent, frequency, mean and max activation, its label
and its interpretation, and what the encoder or captioner were when they had random
weights) above its top images in a grid, each with its patch mask (one colour scale per
latent, as on the latent page) and a line with its rank, value and file name.
The app offers the same image on each latent page (rendered once, cached).
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from precompute.selection import most_frequent_first, parse_latents
from sae_core.files import atomic_write_with

from .atlas import Atlas
from .configs import CollageConfig
from .render import RenderCache, open_thumb, overlay

log = logging.getLogger(__name__)

MARGIN = 16
GAP = 8
TEXT = (20, 20, 20)
MUTED = (90, 90, 90)
WARN = (170, 40, 0)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _strip_lines(atlas: Atlas, latent: int) -> list[tuple[str, tuple[int, int, int], int]]:
    """(text, colour, size) lines of the caption strip."""
    m = atlas.manifest
    freq, n = float(atlas.frequency[latent]), int(m["n_images"])
    stats = (
        (
            f" · mean {float(atlas.mean_activation[latent]):.4g} (non-zero) · max "
            f"{float(atlas.max_activation[latent]):.4g}"
        )
        if freq > 0
        else " · dead (never fires)"
    )
    lines = [
        (f"Latent {latent}", TEXT, 26),
        (f"fires on {freq:.2%} of {n} images ({round(freq * n)}){stats}", TEXT, 18),
    ]
    if atlas.label(latent):
        lines.append((f"label: {', '.join(atlas.label(latent))}", TEXT, 18))
    sentence = atlas.interpretation(latent)
    if sentence:
        lines.append((sentence, TEXT, 18))
        if atlas.interpretations.random_weights:
            lines.append(("(captions by a tiny BLIP with random weights: not meaningful)", WARN, 15))
    if m.get("random_weights"):
        lines.append((f"{m.get('model_name')} had RANDOM weights: features reflect image statistics", WARN, 15))
    lines.append((f"{m.get('model_name') or 'activations'} · {m.get('hook_name') or ''} · {atlas.name}", MUTED, 14))
    return lines


def render_collage(atlas: Atlas, latent: int, columns: int = 4, tile: int = 224, masks: bool = True) -> Image.Image:
    """The collage of one latent as an RGB image."""
    page = atlas.page(latent)
    width = 2 * MARGIN + columns * tile + (columns - 1) * GAP
    wrap = max(30, int(width / 9.5))
    strip = [
        (part, colour, size)
        for text, colour, size in _strip_lines(atlas, page.latent)
        for part in textwrap.wrap(text, wrap if size <= 18 else wrap * 18 // size) or [""]
    ]
    strip_h = MARGIN + sum(size + 6 for _, _, size in strip) + MARGIN // 2
    label_h = 22
    n = len(page.top)
    rows = -(-n // columns)
    height = strip_h + (rows * (tile + label_h + GAP) if n else 30) + MARGIN
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = MARGIN
    for text, colour, size in strip:
        draw.text((MARGIN, y), text, fill=colour, font=_font(size))
        y += size + 6
    if n == 0:
        draw.text((MARGIN, strip_h), "no image activates this latent", fill=MUTED, font=_font(18))
    small = _font(14)
    for slot, t in enumerate(page.top):
        r, c = divmod(slot, columns)
        x0, y0 = MARGIN + c * (tile + GAP), strip_h + r * (tile + label_h + GAP)
        im = open_thumb(atlas.image_path(t["image"]), tile)
        if masks:
            im = overlay(im, t["mask"], page.mask_scale)
        canvas.paste(im, (x0, y0))
        name = Path(str(t["path"] or t["image"])).name
        text = f"#{slot + 1} · {t['value']:.3g} · {name}"
        while small.getlength(text) > tile and len(name) > 4:
            name = name[: len(name) - 2]
            text = f"#{slot + 1} · {t['value']:.3g} · {name}…"
        draw.text((x0, y0 + tile + 3), text, fill=TEXT, font=small)
    return canvas


def write_collage(atlas: Atlas, latent: int, path: str | Path, **kwargs) -> Path:
    """Render and write one collage PNG atomically."""
    im = render_collage(atlas, latent, **kwargs)
    return atomic_write_with(path, lambda tmp: im.save(tmp, format="PNG"))


def cached_collage(atlas: Atlas, render: RenderCache, latent: int) -> str:
    """The app's download: the latent's collage PNG in the render cache (rendered once)."""
    s = atlas.check_latent(latent)
    path = render.root / f"collage_{s}.png"
    if not path.exists():
        write_collage(atlas, s, path)
    return str(path)


def collage_main(cfg: CollageConfig) -> list[Path]:
    """Write one PNG per chosen latent into cfg.out; returns the paths."""
    atlas = Atlas(cfg.atlas, images_root=cfg.images_root or None)
    selection = parse_latents(cfg.latents if cfg.latents is not None else str(cfg.top))
    latents = selection.resolve(atlas.n_latents, most_frequent_first(atlas.frequency))
    out = Path(cfg.out)
    paths = [
        write_collage(atlas, s, out / f"latent_{s}.png", columns=cfg.columns, tile=cfg.tile, masks=cfg.masks)
        for s in latents
    ]
    log.info("collage: %d PNGs -> %s", len(paths), out)
    return paths
