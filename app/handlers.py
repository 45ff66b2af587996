"""Everything the UI calls: plain Python in, plain Python out (no gradio).

`Handlers` holds what the server opened once (atlases, encoder, Kandinsky, caches); its
methods come from one mixin per tab (`handlers_browse`, `handlers_inspect`,
`handlers_steer`). They raise ValueError / `BadImage` with a one-line message for bad
input; `app.ui_common.guard` turns those into messages in the browser. The public ones are the
API (`latent_page`, `search`, `inspect`, `heatmap`, `steer`, `steer_strip`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .atlas import Atlas
from .explore import ExploreHandlers, Explorer
from .handlers_browse import BrowseHandlers
from .handlers_inspect import InspectHandlers
from .handlers_steer import SteerHandlers
from .steer_grid import GridHandlers
from .icons import IconStore
from .inspect_image import Inspector
from .render import RenderCache
from .steer import Steerer
from .text_side import TextSideHandlers, TextSideStore
from .timing import Timings


@dataclass
class Handlers(BrowseHandlers, InspectHandlers, SteerHandlers, GridHandlers, TextSideHandlers, ExploreHandlers):
    """What the server opened once, and every handler of the UI and the API."""

    atlas: Atlas
    steerer: Steerer | None = None
    steer_atlas: Atlas | None = None
    inspector: Inspector | None = None
    notices: list[str] = field(default_factory=list)
    render: RenderCache | None = None
    timings: Timings | None = None
    icons: IconStore | None = None
    explorer: Explorer = field(default_factory=Explorer)

    def __post_init__(self) -> None:
        if self.render is None:
            self.render = RenderCache(self.atlas)
        self.browsable: dict[str, tuple[Atlas, RenderCache]] = {self.atlas.name: (self.atlas, self.render)}
        if self.steer_atlas is not None and self.steer_atlas.name not in self.browsable:
            self.browsable[self.steer_atlas.name] = (self.steer_atlas, RenderCache(self.steer_atlas))
        self.text_sides: dict[str, TextSideStore] = {}
        self.start_text_side(self.atlas, self.inspector, self.render.root)  # app.text_side: in the background

    def pick(self, sae: str | None) -> tuple[Atlas, RenderCache]:
        """The browsable atlas named `sae` (default: the main one)."""
        if not sae:
            return self.browsable[self.atlas.name]
        if sae not in self.browsable:
            raise ValueError(f"unknown SAE {str(sae)[:80]!r}; this app serves {', '.join(self.browsable)}")
        return self.browsable[sae]

    def atlas_named(self, link_key: str) -> Atlas | None:
        """The served atlas a link table points to (links are keyed by the other atlas's SAE
        hash, atlas format 3), or None if that atlas is not served here."""
        for atlas, _ in self.browsable.values():
            if link_key == atlas.identity:
                return atlas
        return None
