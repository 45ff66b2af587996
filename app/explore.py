"""Inspect's in-place exploration (no gradio): for the inspected image and one latent chosen
in Inspect's table or a patch's list, that latent's heat map on the image beside its top
atlas images, without leaving the tab. The image's patch activations are kept for the last
few images (keyed by their bytes), so choosing latent after latent encodes the image once.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .handlers_browse import caption, link
from .inputs import menu_latent
from .render import centre_square, overlay, with_colour_bar

if TYPE_CHECKING:
    from .atlas import Atlas
    from .inspect_image import Inspector
    from .render import RenderCache

EXPLORE_SIZE = 288
KEEP = 8
"""Images whose patch activations are kept (per server)."""


class Explorer:
    """The last few inspected images' activations, for redrawing one latent at a time."""

    def __init__(self) -> None:
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def activations(self, inspector: Inspector, image: Image.Image) -> dict[str, Any]:
        """`Inspector.run` of the image, from the cache when this image was seen lately."""
        key = hashlib.sha256(image.tobytes() + str(image.size).encode()).hexdigest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        res = inspector.run(image)
        with self._lock:
            self._cache[key] = res
            while len(self._cache) > KEEP:
                self._cache.popitem(last=False)
        return res


class ExploreHandlers:
    """Mixed into `app.handlers.Handlers`."""

    atlas: Atlas
    inspector: Inspector | None
    render: RenderCache
    explorer: Explorer

    def explore(
        self, image: Any, latent: Any, dataset_image: Any = None
    ) -> tuple[str, Image.Image | None, list[tuple[str, str]]]:
        """(header Markdown, the latent's heat map on the image with a colour scale, its top
        atlas images with their patch masks) for a latent chosen inside Inspect."""
        if latent in (None, ""):
            raise ValueError("choose a latent in Inspect's table or in a patch's list")
        a = self.atlas
        chosen = a.check_latent(menu_latent(latent))
        picture, _ = self._input_image(image, dataset_image)  # type: ignore[attr-defined]
        res = self.explorer.activations(self.inspector, picture)  # type: ignore[arg-type]
        value = float(res["scores"][chosen])
        heat = None
        if res["patches"] is not None:
            vals = np.maximum(res["patches"][:, chosen], 0)
            vmax = float(vals.max())
            base = centre_square(picture.convert("RGB")).resize((EXPLORE_SIZE, EXPLORE_SIZE), Image.BICUBIC)
            label = f"latent {chosen} on this image" if vmax > 0 else f"latent {chosen} fires on no patch here"
            heat = with_colour_bar(overlay(base, vals, vmax or 1.0), vmax or 1.0, label)
        page = a.page(chosen)
        gallery = [
            (
                self.render.overlay(page.latent, slot, t["image"], t["mask"], page.mask_scale),
                caption(t["value"], t["path"], t["image"]),
            )
            for slot, t in enumerate(page.top[:8])
        ]
        label = f" — {', '.join(a.short_label(chosen))}" if a.short_label(chosen) else ""
        where = (f"**{value:.3g}** on this image" if value > 0 else "does not fire on this image") + (
            f" (its max over the atlas: {page.max_activation:.3g})" if not page.dead else " (dead in the atlas)"
        )
        header = (
            f"### Exploring latent {chosen}{label}\nIts activation: {where}. Left: where it fires on this "
            f"image; right: its top atlas images. {link(a, chosen, 'Open its page in Browse ↗')}"
        )
        side = self.text_side_line(a, chosen) if hasattr(self, "text_side_line") else ""
        return header + (f"\n\n{side}" if side else ""), heat, gallery


def latent_choices(data: dict | None, patch: list | None = None) -> list[str]:
    """'12 (0.53)' for each latent of Inspect's table, then those of a clicked patch not in it."""
    out: list[str] = []
    seen: set[int] = set()
    for i, v in list((data or {}).get("top") or []) + list(patch or []):
        if int(i) not in seen:
            seen.add(int(i))
            out.append(f"{int(i)} ({float(v):.3g})")
    return out


def patch_at(data: dict | None, x: float, y: float, size: int) -> list:
    """The [latent, value] pairs of the patch under pixel (x, y) of a size × size heat map."""
    if not data or not data.get("grid") or not (0 <= x < size and 0 <= y < size):
        return []
    grid = int(data["grid"])
    return data["patch_latents"][int(y / size * grid) * grid + int(x / size * grid)]
