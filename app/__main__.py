"""`python -m app`: the app as a module-level `demo` (Gradio's convention), launched only
under __main__, so the module can be imported by tests and by `gradio app/__main__.py`
(reload mode while editing the UI).

    CLIPSAE_ATLAS=atlas/ CLIPSAE_STEER_ATLAS=katlas/ python -m app
    python -m app                     # the demo's atlases from demo_cache/ (clipsae demo --no-serve)

Environment: CLIPSAE_ATLAS, CLIPSAE_STEER_ATLAS, CLIPSAE_TINY_KANDINSKY=1, CLIPSAE_DEMO_CACHE
(default demo_cache), CLIPSAE_DEVICE (auto), CLIPSAE_HOST (127.0.0.1), CLIPSAE_PORT (7860).
`clipsae serve` is the same app with flags.
"""

from __future__ import annotations

import os

from app.demo import read_demo_info
from app.server import launch, make_handlers
from app.ui import build_ui


def atlases_from_env() -> tuple[str, str | None, bool]:
    """(atlas, steering atlas or None, tiny Kandinsky) from the environment, else the built demo."""
    atlas = os.environ.get("CLIPSAE_ATLAS")
    if atlas:
        return atlas, os.environ.get("CLIPSAE_STEER_ATLAS") or None, os.environ.get("CLIPSAE_TINY_KANDINSKY") == "1"
    root = os.environ.get("CLIPSAE_DEMO_CACHE", "demo_cache")
    d = read_demo_info(root)
    if d is None:
        raise SystemExit(
            f"set CLIPSAE_ATLAS (and CLIPSAE_STEER_ATLAS), or build the demo first: "
            f"clipsae demo --no-serve --cache-dir {root}"
        )
    return d["clip_atlas"], d["kandinsky_atlas"], d["kandinsky"] == "tiny"


_atlas, _steer_atlas, _tiny = atlases_from_env()
handlers, banner = make_handlers(
    _atlas, _steer_atlas, tiny_kandinsky=_tiny, device=os.environ.get("CLIPSAE_DEVICE", "auto")
)
demo = build_ui(handlers, banner)

if __name__ == "__main__":
    launch(demo, os.environ.get("CLIPSAE_HOST", "127.0.0.1"), int(os.environ.get("CLIPSAE_PORT", "7860")))
