"""Browse-tab handlers (no gradio): a latent's page, the landing latent, previous/next,
search, deep links, and "Steer this" (which value to steer a latent with, and why)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .atlas import Atlas, LatentPage
from .collage import cached_collage
from .scores_view import score_data, score_line

if TYPE_CHECKING:
    from .icons import IconStore
    from .inspect_image import Inspector
    from .render import RenderCache
    from .steer import Steerer

N_SHOWN_LINKS = 8
CAPTION_NAME = 22
"""Gallery captions: the value first, then at most this many characters of the file name."""


@dataclass
class PageView:
    """Everything the Browse tab shows for one latent."""

    sae: str
    latent: int
    header: str
    gallery: list[tuple[str, str]]
    histogram: str
    bands: list[tuple[str, str]]
    data: dict[str, Any]
    linked: list[str]
    """'97 (r=0.62)' for each live steering latent linked to a CLIP latent."""
    steerable: bool
    """'Steer this' has something to steer on this page."""
    icon: str | None
    """The latent's feature icon when already made (steering latents only)."""


@dataclass(frozen=True)
class SteerSuggestion:
    """What 'Steer this' puts in a Steer slot, and the sentence that says so."""

    latent: int
    mode: str
    value: float
    origin: tuple[str, int] | None
    """(atlas, latent) of the CLIP latent it was linked from, for the causal check."""
    message: str


def link(atlas: Atlas, latent: int, text: str | None = None) -> str:
    """A Markdown link that opens the latent's page in place (the app's script intercepts it)."""
    return f"[{text or latent}](?sae={quote(atlas.name)}&latent={latent})"


def caption(value: float, path: str | None, index: int) -> str:
    """'0.0529 · astronaut_orig' — the value first so it is never cut off."""
    name = Path(path).stem if path else f"image {index}"
    return f"{value:.3g} · {name[:CAPTION_NAME]}"


class BrowseHandlers:
    """Mixed into `app.handlers.Handlers`, which provides the atlases and caches."""

    atlas: Atlas
    steer_atlas: Atlas | None
    steerer: Steerer | None
    inspector: Inspector | None
    icons: IconStore | None
    browsable: dict[str, tuple[Atlas, RenderCache]]

    # ---------------------------------------------------------------- the page
    def latent_page(self, latent: Any, sae: str = "") -> tuple[str, list, str, list, dict]:
        """A latent's page: header (Markdown), top images with patch masks, histogram (PNG),
        value-band samples (5 bands × 4, highest first) and the numbers as a dict."""
        v = self.page_view(sae, latent)
        return v.header, v.gallery, v.histogram, v.bands, v.data

    def page_view(
        self, sae: str | None, latent: Any, log_counts: bool = False, notice: str = "", masks: bool = True
    ) -> PageView:
        """The whole Browse page of one latent (the API's `latent_page` is a subset); `masks`
        False shows the top images without their patch tint."""
        atlas, render = self.pick(sae)  # type: ignore[attr-defined]
        page = atlas.page(latent)
        # a first view renders ~36 thumbnails and overlays: on a few threads (later views find the files)
        render.parallel(
            [
                (render.overlay, (page.latent, slot, t["image"], t["mask"], page.mask_scale))
                if masks
                else (render.thumb, (t["image"],))
                for slot, t in enumerate(page.top)
            ]
            + [(render.thumb, (q["image"], 96)) for band in page.bands for q in band]
        )
        gallery = [
            (
                render.overlay(page.latent, slot, t["image"], t["mask"], page.mask_scale)
                if masks
                else render.thumb(t["image"]),
                caption(t["value"], t["path"], t["image"]),
            )
            for slot, t in enumerate(page.top)
        ]
        linked = self.linked_choices(page.latent, atlas.name)
        is_steering = self.steer_atlas is not None and atlas is self.steer_atlas
        steerable = self.steerer is not None and (is_steering and not page.dead or bool(linked))
        icon = self.icons.lookup(page.latent) if is_steering and self.icons is not None and not page.dead else None
        data = self._data(atlas, page) | {"text_side": self.text_side(page.latent, atlas.name)}  # type: ignore[attr-defined]
        return PageView(
            sae=atlas.name,
            latent=page.latent,
            header=self._header(atlas, page, notice),
            gallery=gallery,
            histogram=render.histogram(page.latent, page.histogram, page.histogram_max, log_counts),
            bands=[] if page.dead else self._bands(page, render),
            data=data,
            linked=linked,
            steerable=steerable,
            icon=str(icon) if icon else None,
        )

    def _header(self, atlas: Atlas, page: LatentPage, notice: str = "") -> str:
        role = " (steering SAE)" if atlas is self.steer_atlas else ""
        label = f" — {', '.join(page.label)}" if page.label else ""
        n = atlas.manifest["n_images"]
        lines = [f"> ⚠️ {notice}"] if notice else []
        lines.append(f"## Latent {page.latent}{label}\n**{atlas.name}**{role} · {atlas.n_latents} latents")
        sentence = atlas.interpretation(page.latent)  # clipsae interpret
        if sentence:
            note = " (captions by a tiny random BLIP: not meaningful)" if atlas.interpretations.random_weights else ""
            lines.append(f"*{sentence}*{note}")
        if page.dead:
            lines.append(f"**Dead**: fires on none of the {n} images, so it has no top images, histogram or bands.")
        else:
            lines.append(
                f"Fires on **{page.frequency:.1%}** of the {n} images · when it fires: mean "
                f"**{page.mean_activation:.3g}**, max **{page.max_activation:.3g}** "
                "(SAE latent activations; the mean is over the images where it fires)"
            )
        if score_line(atlas, page.latent):  # clipsae eval card --atlas
            lines.append(score_line(atlas, page.latent))
        if self.text_side_line(atlas, page.latent):  # type: ignore[attr-defined]  # app.text_side
            lines.append(self.text_side_line(atlas, page.latent))  # type: ignore[attr-defined]
        if page.neighbours:
            lines.append(
                "**Nearest latents** (cosine of decoder directions): "
                + " · ".join(f"{link(atlas, j)} {c:.2f}" for j, c in page.neighbours[:N_SHOWN_LINKS])
            )
        for key, linked in page.links.items():
            other = self.atlas_named(key)  # type: ignore[attr-defined]
            live = [(j, c) for j, c in linked if c > 0 and (other is None or other.frequency[j] > 0)]
            if not live:
                continue
            what = "steering latents" if other is not None and other is self.steer_atlas else "latents"
            name = other.name if other is not None else atlas.link_names.get(key, key[:12])
            items = " · ".join(f"{link(other, j) if other is not None else j} r={c:.2f}" for j, c in live)
            lines.append(f"**Co-activates with {name} {what}** (Pearson r over images): {items}")
        return "\n\n".join(lines)

    def _bands(self, page: LatentPage, render: RenderCache) -> list[tuple[str, str]]:
        """4 images per band, highest band first; empty places get a placeholder so rows align."""
        out = []
        n_bands = len(page.bands)
        for b in reversed(range(n_bands)):
            lo, hi = b / n_bands * page.max_activation, (b + 1) / n_bands * page.max_activation
            band = sorted(page.bands[b], key=lambda q: -q["value"])  # highest first, as the bands are
            for k in range(4):
                if k < len(band):
                    q = band[k]
                    out.append((render.thumb(q["image"], 96), f"{caption(q['value'], q['path'], q['image'])}"))
                else:
                    out.append((render.blank("no image in this band", 96), f"band {b + 1}: {lo:.2g} to {hi:.2g}"))
        return out

    @staticmethod
    def _data(atlas: Atlas, page: LatentPage) -> dict[str, Any]:
        # "image_path", not "path": gradio_client would take a dict with "path" for a file to fetch
        return {
            "sae": atlas.name,
            "latent": page.latent,
            "label": page.label,
            "frequency": page.frequency,
            "mean_activation": page.mean_activation,
            "max_activation": page.max_activation,
            "dead": page.dead,
            "top": [{"image": t["image"], "image_path": t["path"], "value": t["value"]} for t in page.top],
            "bands": [
                [{"image": q["image"], "image_path": q["path"], "value": q["value"]} for q in band]
                for band in page.bands
            ],
            "neighbours": page.neighbours,
            "links": page.links,
            "interpretation": atlas.interpretation(page.latent),
            "scores": score_data(atlas, page.latent),
        }

    def collage(self, latent: Any, sae: str = "") -> str:
        """The latent's collage PNG (top images, masks, caption strip), as `clipsae collage` writes it."""
        return cached_collage(*self.pick(sae), latent)  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- where to go
    def landing(self, sae: str | None = None) -> tuple[str, int]:
        """(atlas name, an interesting live latent) to open first."""
        atlas, _ = self.pick(sae)  # type: ignore[attr-defined]
        return atlas.name, atlas.landing_latent()

    def step(self, sae: str | None, latent: Any, direction: int) -> int:
        """The next (+1) or previous (−1) live latent."""
        atlas, _ = self.pick(sae)  # type: ignore[attr-defined]
        try:
            current = atlas.check_latent(latent)
        except ValueError:
            current = atlas.landing_latent()
        return atlas.step_latent(current, direction)

    def random_latent(self, sae: str = "") -> int:
        """A random live latent."""
        atlas, _ = self.pick(sae)  # type: ignore[attr-defined]
        return int(random.choice(atlas.live)) if atlas.live.size else 0

    def deep_link(self, query: dict[str, str]) -> tuple[str, int, str]:
        """(atlas, latent, notice) for ?sae=NAME&latent=N; a bad value opens the landing latent
        with a notice saying what was wrong."""
        notice = ""
        sae = query.get("sae") or self.atlas.name
        if sae not in self.browsable:
            notice = f"the link names an unknown SAE {sae[:60]!r} (this app serves {', '.join(self.browsable)})"
            sae = self.atlas.name
        atlas, _ = self.pick(sae)  # type: ignore[attr-defined]
        raw = query.get("latent")
        if raw in (None, ""):
            return sae, atlas.landing_latent(), notice
        try:
            return sae, atlas.check_latent(raw), notice
        except ValueError as exc:
            notice = (notice + "; " if notice else "") + f"the link's latent {raw[:40]!r} is not valid ({exc})"
            return sae, atlas.landing_latent(), notice + "; showing an interesting latent instead"

    # ---------------------------------------------------------------- search
    def search(self, text: str, sae: str = "") -> list[list[Any]]:
        """Live latents whose label contains the text, then (embed-space CLIP SAEs) the live
        latents nearest its CLIP text embedding; empty text lists the most frequent live latents.
        Rows: latent, label, fires on (% of images), max activation."""
        atlas, _ = self.pick(sae)  # type: ignore[attr-defined]
        text = (text or "").strip()[:200]
        if not text:
            ids = atlas.live_ranked("frequency", 50)
        else:
            ids = atlas.search_live(text)
            ids += [i for i in atlas.search_interpretations(text) if i not in ids and atlas.frequency[i] > 0]
            ids += [
                i
                for i in self.text_side_search(atlas, text)  # type: ignore[attr-defined]
                if i not in ids and atlas.frequency[i] > 0
            ]
            if atlas is self.atlas and self.inspector is not None:
                ids += [
                    i for i, _ in self.inspector.text_to_latents(text, 40) if i not in ids and atlas.frequency[i] > 0
                ]
        return [
            [
                i,
                ", ".join(atlas.short_label(i)) or self.text_side_words(atlas, i),  # type: ignore[attr-defined]
                round(100 * float(atlas.frequency[i]), 1),
                float(f"{float(atlas.max_activation[i]):.3g}"),
            ]
            for i in ids
        ]

    def search_hint(self, sae: str | None = None) -> str:
        """What the search box searches in this atlas."""
        atlas, _ = self.pick(sae)  # type: ignore[attr-defined]
        text_search = atlas is self.atlas and self.inspector is not None and self.inspector.meta["hook_name"] == "embed"
        ways = (
            (["label words"] if atlas.labels else [])
            + (["interpretations"] if atlas.interpretations.rows else [])
            + (["text (CLIP text embedding → nearest latent directions)"] if text_search else [])
        )
        if not ways:
            return "Latents (this atlas has no labels or text search: the most frequent live latents)"
        return f"Search by {' or '.join(ways)}; empty: the most frequent live latents"

    # ---------------------------------------------------------------- steer this
    def linked_choices(self, latent: Any, sae: str = "") -> list[str]:
        """'j (r=0.62)' for each live steering latent linked to this CLIP latent (else empty)."""
        atlas, _ = self.pick(sae)  # type: ignore[attr-defined]
        if self.steer_atlas is None or atlas is self.steer_atlas:
            return []
        try:
            s = atlas.check_latent(latent)
        except ValueError:
            return []
        out = []
        for key, linked in atlas.links(s).items():
            if self.atlas_named(key) is self.steer_atlas:  # type: ignore[attr-defined]
                out += [f"{j} (r={c:.2f})" for j, c in linked if self.steer_atlas.frequency[j] > 0 and c > 0]
        return out

    def steer_this(self, sae: str | None, latent: Any, choice: str | None = None) -> SteerSuggestion:
        """The edit 'Steer this' proposes: the steering latent (this page's, or the linked one
        chosen on a CLIP page) set to its highest activation over the atlas's images, which
        changes the image whether or not the prompt already uses the latent."""
        if self.steerer is None or self.steer_atlas is None:
            raise ValueError("steering is not available: the Kandinsky 2.2 models or the steering SAE are not loaded")
        atlas, _ = self.pick(sae)  # type: ignore[attr-defined]
        s = atlas.check_latent(latent)
        k = self.steer_atlas
        origin = None
        if atlas is k:
            j = s
        else:
            if not choice:
                raise ValueError(
                    f"latent {s} of {atlas.name} has no linked steering latent that fires "
                    "(links come from `clipsae link`); open a steering latent's page to steer it"
                )
            j, origin = k.check_latent(str(choice).split()[0]), (atlas.name, s)
        top = float(f"{float(k.max_activation[j]):.3g}")
        if top <= 0:
            raise ValueError(
                f"steering latent {j} never fires on the atlas's images, so it has no natural "
                "strength; choose a live one"
            )
        best = int(k.topk_ids[j, 0])
        where = f" (on {Path(k.image_paths[best]).name})" if best >= 0 and k.image_paths else ""
        why = f", linked from {atlas.name} latent {s}" if origin else ""
        message = (
            f"Latent {j}{why}: **set to {top:.3g}**, its highest activation over the "
            f"{k.manifest['n_images']} images of {k.name}{where}. If the prompt does not use it, this adds "
            "its direction at that strength. Press Generate."
        )
        return SteerSuggestion(latent=j, mode="set", value=top, origin=origin, message=message)

    def slot_scale(self, latent: Any, mode: str) -> tuple[float, float, float, float, str]:
        """(minimum, maximum, step, suggested value, label) of a Steer slot's slider for a
        steering latent: multipliers are unitless; set/add values follow the latent's
        activation scale (its highest activation over the atlas's images)."""
        if mode == "multiply":
            return -4.0, 8.0, 0.05, 2.0, "multiplier"
        k, top, label = self.steer_atlas, 0.0, "value"
        if k is not None and str(latent or "").strip():
            try:
                top = float(k.max_activation[k.check_latent(latent)])
                label = (
                    f"value (its max over the atlas ≈ {top:.3g})" if top > 0 else "value (a dead latent: typical scale)"
                )
            except ValueError:
                label = f"value (⚠️ not a latent of {k.name}: 0..{k.n_latents - 1})"
        if top <= 0:
            top = k.typical_max if k is not None else 1.0
        hi = float(f"{3 * top:.3g}")
        return 0.0 if mode == "set" else -hi, hi, float(f"{top / 200:.2g}"), float(f"{top:.3g}"), label

    def live_count(self, sae: str | None = None) -> str:
        atlas, _ = self.pick(sae)  # type: ignore[attr-defined]
        return f"{atlas.live.size} of {atlas.n_latents} latents fire"
