"""Assemble and launch the app (`clipsae serve`, `clipsae demo`).

    clipsae serve --atlas atlas/ --steer-atlas katlas/            # real Kandinsky if cached/local
    clipsae serve --atlas atlas/ --steer-atlas katlas/ --tiny-kandinsky

Binds 127.0.0.1 unless --host says otherwise; never opens a public share link; analytics
off. Images reach the browser as rendered thumbnails through Gradio's own cache: no
path on disk is served directly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from sae_core.io import load_sae
from sae_core.device import resolve_device

from .atlas import Atlas
from .inspect_image import Inspector
from .kandinsky import DECODER_ID, PRIOR_ID, kandinsky_available, load_pipelines, make_tiny_pipelines
from .steer import Steerer
from .ui import MAX_UPLOAD, Handlers, build_ui

log = logging.getLogger(__name__)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def make_handlers(atlas: str | Path, steer_atlas: str | Path | None = None, prior: str = PRIOR_ID,
                  decoder: str = DECODER_ID, tiny_kandinsky: bool = False, device: str = "auto",
                  images_root: str | Path | None = None) -> tuple[Handlers, str]:
    """Open everything once; returns the handlers and the banner text shown on top of the app.
    `images_root` overrides where both atlases' image paths are resolved (default: as recorded)."""
    dev = str(resolve_device(device))
    a = Atlas(atlas, images_root=images_root)
    notes = []
    if a.manifest["has_images"] and a.images_root is None:
        notes.append("The atlas's images were not found (neither the recorded images root nor one beside the atlas): "
                     "thumbnails are placeholders; pass --images-root.")
    if a.manifest.get("random_weights"):
        notes.append("⚠️ **The CLIP encoder of this atlas has RANDOM weights** (no pretrained weights were available): "
                     "features reflect image statistics, not learned concepts.")
    inspector = None
    try:
        inspector = Inspector(a, device=dev)
    except (ValueError, FileNotFoundError) as exc:
        notes.append(f"Inspect is unavailable: {exc}")
    steerer = None
    satlas = None
    if steer_atlas:
        satlas = Atlas(steer_atlas, images_root=images_root)
        sae = load_sae(satlas.path / "sae", device=dev)
        pipes = None
        if tiny_kandinsky:
            pipes = make_tiny_pipelines(device=dev)
        elif kandinsky_available(prior, decoder):
            pipes = load_pipelines(prior, decoder, device=dev, dtype=torch.float16 if dev == "cuda" else torch.float32)
        else:
            notes.append(f"Steering is unavailable: Kandinsky 2.2 ({prior}, {decoder}) is neither a local folder nor "
                         "in the Hugging Face cache.")
        if pipes is not None:
            try:
                steerer = Steerer(pipes, sae, device=dev)
            except ValueError as exc:
                notes.append(f"Steering is unavailable: {exc}")
            if pipes.tiny:
                notes.append("Steering uses **tiny random Kandinsky components** (a demo of the mechanics, not of images).")
            if dev == "cpu":
                notes.append("Generation runs on the CPU: expect seconds to minutes per image.")
    return Handlers(a, steerer=steerer, steer_atlas=satlas, inspector=inspector, notices=notes), "\n\n".join(notes)


def serve(atlas: str | Path, steer_atlas: str | Path | None = None, host: str = "127.0.0.1", port: int = 7860,
          share: bool = False, prevent_thread_lock: bool = False, **kwargs):
    """Build the UI and launch it; returns the Blocks (running in the background if prevent_thread_lock)."""
    handlers, banner = make_handlers(atlas, steer_atlas, **kwargs)
    return launch(build_ui(handlers, banner), host, port, share=share, prevent_thread_lock=prevent_thread_lock)


def launch(demo, host: str = "127.0.0.1", port: int = 7860, share: bool = False, prevent_thread_lock: bool = False):
    """Launch the Blocks with the app's safety settings: the given interface only (127.0.0.1 by
    default), no share link unless asked, uploads capped at MAX_UPLOAD, analytics off (env above)."""
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD, show_error=True,
                prevent_thread_lock=prevent_thread_lock, quiet=True)
    return demo
