"""Inspect-tab handlers (no gradio): an uploaded or dataset image's latents, its per-patch
heat map (with a colour scale and the latent it shows), the latents of one clicked patch,
and seed 003's gradient heat maps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from evaluation.heatmap import heat_overlay

from .handlers_browse import caption, link
from .inputs import finite_number, read_upload, whole_number
from .inspect_image import Inspector, patch_latents
from .render import centre_square, overlay, with_colour_bar

if TYPE_CHECKING:
    from .atlas import Atlas
    from .render import RenderCache

HEAT_SIZE = 336
"""The heat map's image side in pixels (the colour scale goes underneath)."""
MAX_TEXT = 300
PATCH_LATENTS = 10


def mark_patch(heat: Image.Image, grid: int, x: float, y: float) -> Image.Image:
    """The heat map with the patch under pixel (x, y) of its top HEAT_SIZE square outlined."""
    out = heat.convert("RGB").copy()
    if grid <= 0 or not (0 <= x < HEAT_SIZE and 0 <= y < HEAT_SIZE):
        return out
    side = HEAT_SIZE / grid
    col, row = int(x / side), int(y / side)
    box = [col * side, row * side, (col + 1) * side - 1, (row + 1) * side - 1]
    draw = ImageDraw.Draw(out)
    draw.rectangle(box, outline=(0, 0, 0), width=3)
    draw.rectangle([box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1], outline=(255, 255, 255), width=1)
    return out


CAPTION_ROOM = 30
"""White pixels under each gradient heat map: the gallery lays its caption over the image's
bottom edge, which would hide the colour scale's top value."""


def _caption_room(image: Image.Image) -> Image.Image:
    out = Image.new("RGB", (image.width, image.height + CAPTION_ROOM), (255, 255, 255))
    out.paste(image, (0, 0))
    return out


def _why_still(latent: int, factor: float, change: float) -> str:
    """Why a heat map barely moved ("" when it moved): scale 1, or a latent not active here."""
    if change >= 5e-4:
        return ""
    if factor == 1:
        return " Scale 1 leaves the latent as it is, so nothing changes."
    return (
        f" Latent {latent} is not active on this image (or barely), so scaling it changes almost nothing: "
        "pick a latent from Inspect's table, which lists the ones active here."
    )


class InspectHandlers:
    """Mixed into `app.handlers.Handlers`, which provides the atlas, encoder and caches."""

    atlas: Atlas
    inspector: Inspector | None
    render: RenderCache

    def _input_image(self, image: Any, dataset_image: Any) -> tuple[Image.Image, str]:
        """The upload (decoded by our decoder), or dataset image number `dataset_image` ("#N"
        too, as captions write it); and a note when both were given (the upload is used)."""
        if self.inspector is None:
            raise ValueError("inspecting images needs the atlas's encoder, which is not available for this atlas")
        if isinstance(dataset_image, str):
            dataset_image = dataset_image.strip().removeprefix("#").strip()
        decoded = read_upload(image)
        if decoded is not None and dataset_image not in (None, ""):
            given = str(dataset_image)[:20]
            return decoded, (
                f"Both an upload and dataset image {given} were given: the upload is inspected "
                "(clear it to inspect the dataset image)."
            )
        if decoded is None and dataset_image not in (None, ""):
            n = len(self.atlas.image_paths)
            if n == 0:
                raise ValueError("this atlas has no image table, so there are no dataset images to pick")
            index = whole_number(dataset_image, "the dataset image", 0, n - 1)
            path = self.atlas.image_path(index)
            if path is None:
                raise ValueError(f"dataset image {index} is not available on this server")
            decoded = read_upload(path, what=f"dataset image {index}")
        if decoded is None:
            raise ValueError("upload an image (or give a dataset image index) first")
        return decoded, ""

    def inspect(
        self, image: Any, latent: Any = None, dataset_image: Any = None
    ) -> tuple[str, Image.Image | None, list, list, dict]:
        """An image's most active latents (each a link to its page), a heat map of one latent
        over its patches with a colour scale, each latent's best dataset image, the nearest
        dataset images, and the numbers (including each patch's top latents for patch clicks)."""
        image, note = self._input_image(image, dataset_image)
        res = self.inspector.run(image)  # type: ignore[union-attr]
        top = res["top"]
        a = self.atlas
        rows = [f"| {link(a, s)} | {v:.4g} | {', '.join(a.short_label(s))} |" for s, v in top]
        table = ("| latent | activation | label |\n|---|---|---|\n" + "\n".join(rows)) if rows else "No latent fires."
        chosen = a.check_latent(latent) if latent not in (None, "") else _most_active_on_patches(top, res["patches"])
        heat, grid, per_patch = None, 0, []
        if chosen is not None and res["patches"] is not None:
            vals = np.maximum(res["patches"][:, chosen], 0)
            vmax = float(vals.max())
            base = centre_square(image.convert("RGB")).resize((HEAT_SIZE, HEAT_SIZE), Image.BICUBIC)
            label = (
                f"latent {chosen}: activation per patch"
                if vmax > 0
                else f"latent {chosen} fires on no patch (only on the whole image)"
            )
            heat = with_colour_bar(overlay(base, vals, vmax or 1.0), vmax or 1.0, label)
            grid = int(round(np.sqrt(res["patches"].shape[0])))
            per_patch = [
                [
                    [int(i), float(v)]
                    for i, v in patch_latents(
                        res["patches"], (p % grid + 0.5) / grid, (p // grid + 0.5) / grid, PATCH_LATENTS
                    )[1]
                ]
                for p in range(grid * grid)
            ]
        if chosen is not None:
            which = (
                "chosen"
                if latent not in (None, "")
                else ("the most active" if not top or chosen == top[0][0] else "the most active that fires on a patch")
            )
            table = (
                f"Heat map: **latent {link(a, chosen)}** ({which}), its activation on each patch of the "
                "model's centre crop"
                + (" — click a patch to list the latents active there." if heat is not None else ".")
                + "\n\n"
                + table
            )
        near = [
            (self.render.thumb(i), f"#{i} · " + caption(c, a.image_paths[i] if a.image_paths else None, i))
            for i, c in self.inspector.nearest_images(res["embedding"])
        ]  # type: ignore[union-attr]
        examples = [
            (self.render.thumb(int(a.topk_ids[s, 0])), f"{v:.3g} · latent {s}")
            for s, v in top
            if a.topk_ids[s, 0] >= 0 and a.image_paths
        ]
        data = {"top": top, "latent": chosen, "grid": grid, "patch_latents": per_patch}
        if note:
            table = f"> ⚠️ {note}\n\n{table}"
        return table, heat, examples, near, data

    def patch_view(self, data: dict | None, x: float, y: float) -> str:
        """The latents active on the patch under pixel (x, y) of the heat map, each a link."""
        if not data or not data.get("grid"):
            return "Inspect an image first (patch latents need an atlas with patch tokens)."
        if not (0 <= x < HEAT_SIZE and 0 <= y < HEAT_SIZE):
            return "Click on the image, not on its colour scale."
        grid = int(data["grid"])
        col, row = int(x / HEAT_SIZE * grid), int(y / HEAT_SIZE * grid)
        found = data["patch_latents"][row * grid + col]
        if not found:
            return f"No latent fires on patch (row {row + 1}, column {col + 1})."
        return f"Latents active on patch (row {row + 1}, column {col + 1}) of {grid}×{grid}: " + " · ".join(
            f"{link(self.atlas, i)} {v:.3g}" for i, v in found
        )

    def heatmap(
        self, image: Any, text: str, latent: Any, scale: Any = 0.0, dataset_image: Any = None
    ) -> tuple[list, str]:
        """Gradient heat maps of cos(image, text): as is, with `latent` × `scale`, and the difference."""
        image, note = self._input_image(image, dataset_image)
        if latent in (None, ""):
            raise ValueError("name the latent to remove or scale (run Inspect to see the active ones)")
        chosen = self.atlas.check_latent(latent)
        factor = finite_number(scale, "the scale")
        text = (text or "").strip()
        if len(text) > MAX_TEXT:
            raise ValueError(f"the text is {len(text)} characters long; keep it under {MAX_TEXT}")
        res = self.inspector.gradient_heatmaps(image, text, chosen, factor)  # type: ignore[union-attr]
        vmax = float(max(res.base.max(), res.edited.max()))
        dmax = float(np.abs(res.difference).max())
        short = text if len(text) <= 40 else text[:39] + "…"
        label = "saliency (gradient x input, shared scale)"
        shown = [
            (with_colour_bar(heat_overlay(image, res.base, vmax), vmax, label, max_alpha=0.65), f"as is: “{short}”"),
            (
                with_colour_bar(heat_overlay(image, res.edited, vmax), vmax, label, max_alpha=0.65),
                f"latent {chosen} × {factor:g}",
            ),
            (
                with_colour_bar(
                    heat_overlay(image, res.difference, signed=True),
                    dmax or 1.0,
                    "edited - as is (red: more, blue: less)",
                    signed=True,
                    max_alpha=0.65,
                ),
                "difference",
            ),
        ]
        change = float(np.abs(res.difference).sum() / max(float(np.abs(res.base).sum()), 1e-12))
        md = (
            f"Similarity {res.sim_base:.4f} → **{res.sim_edited:.4f}** with latent {chosen} × {factor:g} "
            f"(spliced back in at `{self.inspector.meta['hook_name']}`, SAE error kept). "  # type: ignore[union-attr]
            f"Heat moved: Σ|Δ| / Σ = {change:.3f}." + _why_still(chosen, factor, change)
        )
        shown = [(_caption_room(im), cap) for im, cap in shown]
        return shown, (f"> ⚠️ {note}\n\n{md}" if note else md)


def _most_active_on_patches(top: list, patches: np.ndarray | None) -> int | None:
    """The latent Inspect's heat map opens on: the most active one that fires on some patch
    (one that fires on the whole image only would draw a blank map), else the most active."""
    if not top:
        return None
    if patches is not None:
        for s, _ in top:
            if float(patches[:, s].max()) > 0:
                return int(s)
    return int(top[0][0])
